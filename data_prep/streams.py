"""Task streams as pixel maps over the base MNIST images.

Both a permutation and a nearest-neighbour rotation (PIL `rotate`, no expand, black fill) send every output
pixel to one input pixel or to the fill value, so a task is fully described by a 784-entry index map into
the image padded with one zero pixel (index 784 = fill). A stream is therefore tiny (T x 784 int16) and
lossless, and train and test images of a task are transformed by the very same map.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path, sha256_file, write_json
from .errors import ClreproError

SIDE = 28
N_PIXELS = SIDE * SIDE
FILL = N_PIXELS  # index of the zero pixel appended to every flattened image
KINDS = ("rotation", "permutation")


@dataclass(frozen=True)
class StreamDef:
    kind: str
    n_tasks: int
    min_deg: float = 0.0
    max_deg: float = 180.0


# The GEM/MER streams (reference-gem-mer.md section 2): 20 rotation bins over [0, 180), 20 and 100 permutations.
DEFAULT_STREAMS = {
    "rotations": StreamDef("rotation", 20, 0.0, 180.0),
    "permutations": StreamDef("permutation", 20),
    "many_permutations": StreamDef("permutation", 100),
}


def stream_rng(dataset: str, stream_seed: int) -> np.random.Generator:
    """A generator owned by (dataset, stream seed), independent of training seeds and of other streams."""
    return np.random.default_rng(np.random.SeedSequence([stream_seed, zlib.crc32(dataset.encode())]))


def rotation_angles(n_tasks: int, rng: np.random.Generator, min_deg: float, max_deg: float) -> np.ndarray:
    """Task t's angle is uniform in the t-th of n equal bins of [min, max), as GEM's mnist_rotations.py."""
    lo = min_deg + np.arange(n_tasks) / n_tasks * (max_deg - min_deg)
    hi = min_deg + (np.arange(n_tasks) + 1) / n_tasks * (max_deg - min_deg)
    return lo + rng.random(n_tasks) * (hi - lo)


def rotation_map(angle: float) -> np.ndarray:
    """Index map of PIL's counter-clockwise nearest rotation of a 28x28 image, found by rotating pixel ids."""
    from PIL import Image

    ids = np.arange(1, N_PIXELS + 1, dtype=np.int32).reshape(SIDE, SIDE)  # 0 is reserved for the fill
    rotated = Image.fromarray(ids, mode="I").rotate(float(angle), resample=Image.NEAREST, expand=False, fillcolor=0)
    out = np.asarray(rotated, dtype=np.int64).reshape(-1) - 1
    out[out < 0] = FILL
    return out.astype(np.int16)


def permutation_maps(n_tasks: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.permutation(N_PIXELS) for _ in range(n_tasks)]).astype(np.int16)


def build_maps(dataset: str, sdef: StreamDef, stream_seed: int) -> tuple[np.ndarray, list]:
    """Return (maps [T, 784] int16, per-task parameters) for a stream definition. Pure."""
    rng = stream_rng(dataset, stream_seed)
    if sdef.kind == "rotation":
        angles = rotation_angles(sdef.n_tasks, rng, sdef.min_deg, sdef.max_deg)
        return np.stack([rotation_map(a) for a in angles]), [float(a) for a in angles]
    if sdef.kind == "permutation":
        maps = permutation_maps(sdef.n_tasks, rng)
        return maps, ["permutation"] * sdef.n_tasks
    raise ClreproError(f"unknown stream kind {sdef.kind!r}; use one of {KINDS}")


def apply_map(images: np.ndarray, pixel_map: np.ndarray) -> np.ndarray:
    """Transform flattened uint8 images [N, 784] with one task's map."""
    padded = np.concatenate([images, np.zeros((images.shape[0], 1), images.dtype)], axis=1)
    return padded[:, pixel_map]


def write_stream(out_dir: Path, dataset: str, sdef: StreamDef, stream_seed: int, mnist_manifest: Path) -> Path:
    maps, params = build_maps(dataset, sdef, stream_seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    maps_path = out_dir / "maps.npy"
    with atomic_path(maps_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, maps, allow_pickle=False)
    manifest = {
        "kind": "stream", "dataset": dataset, "transform": sdef.kind, "n_tasks": sdef.n_tasks,
        "min_deg": sdef.min_deg, "max_deg": sdef.max_deg, "stream_seed": stream_seed, "task_params": params,
        "sha256": {"maps.npy": sha256_file(maps_path)}, "mnist_manifest_sha256": sha256_file(mnist_manifest),
    }
    path = out_dir / "manifest.json"
    write_json(path, manifest)
    return path


def verify_manifest(manifest_path: Path) -> dict:
    """Check every file listed in a manifest against its sha256; return the manifest."""
    manifest_path = Path(manifest_path)
    if not manifest_path.exists():
        raise ClreproError(f"{manifest_path} is missing; build it with `snakemake --cores 1 streams`")
    manifest = json.loads(manifest_path.read_text())
    for name, digest in manifest["sha256"].items():
        path = manifest_path.parent / name
        if not path.exists() or sha256_file(path) != digest:
            raise ClreproError(f"{path} does not match its manifest (missing or modified); delete "
                               f"{manifest_path.parent} and rebuild it with snakemake")
    return manifest


@dataclass
class TaskStream:
    """A verified stream: base MNIST images (flattened uint8) plus one pixel map per task."""

    dataset: str
    manifest: dict
    maps: np.ndarray
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    path: Path | None = None

    @property
    def n_tasks(self) -> int:
        return self.maps.shape[0]

    @classmethod
    def load(cls, stream_dir: Path, mnist_dir: Path) -> "TaskStream":
        stream_dir, mnist_dir = Path(stream_dir), Path(mnist_dir)
        manifest = verify_manifest(stream_dir / "manifest.json")
        verify_manifest(mnist_dir / "manifest.json")
        if sha256_file(mnist_dir / "manifest.json") != manifest["mnist_manifest_sha256"]:
            raise ClreproError(f"{stream_dir} was built from other MNIST data than {mnist_dir}; rebuild the stream")
        arrays = {k: np.load(mnist_dir / f"{k}.npy") for k in
                  ("train_images", "train_labels", "test_images", "test_labels")}
        return cls(manifest["dataset"], manifest, np.load(stream_dir / "maps.npy").astype(np.int64),
                   arrays["train_images"].reshape(-1, N_PIXELS), arrays["train_labels"].astype(np.int64),
                   arrays["test_images"].reshape(-1, N_PIXELS), arrays["test_labels"].astype(np.int64), stream_dir)

    def task_images(self, split: str, task: int, index: np.ndarray | None = None) -> np.ndarray:
        images = self.train_images if split == "train" else self.test_images
        if index is not None:
            images = images[index]
        return apply_map(images, self.maps[task])
