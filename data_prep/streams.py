"""Task streams as pixel maps over the base MNIST images, plus the classes each task holds.

Both a permutation and a nearest-neighbour rotation (PIL `rotate`, no expand, black fill) send every output
pixel to one input pixel or to the fill value, so a task is fully described by a 784-entry index map into
the image padded with one zero pixel (index 784 = fill). A stream is therefore tiny (T x 784 int16) and
lossless, and train and test images of a task are transformed by the very same map.

A class split (TA-A-GEM's domain-incremental split MNIST) is the other axis: identity maps, and each task
holds only the images of its classes, each label rewritten to its position in the task's class list
({2, 3} -> 0, 1). Both are one per-task table, `label_maps` (T x 10: the task label of each MNIST class,
-1 = not in the task); pixel-map streams have the identity in every row, so every consumer treats both
kinds alike (TaskStream.task_split).
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path, sha256_file, write_json
from .errors import ClreproError

SIDE = 28
N_PIXELS = SIDE * SIDE
FILL = N_PIXELS  # index of the zero pixel appended to every flattened image
N_CLASSES = 10


@dataclass(frozen=True)
class StreamDef:
    kind: str
    n_tasks: int
    min_deg: float = 0.0
    max_deg: float = 180.0
    angles: str = "binned"      # rotation: GEM's uniform draw in equal bins, or "even" (TA-A-GEM, no draw)
    classes: tuple[tuple[int, ...], ...] = ()   # class_split: each task's classes, in label order

    def spec(self) -> dict:
        """The definition as run specs and train.check_stream name it. Options at their default are left out,
        so the specs (and record keys) of the streams that predate them are unchanged."""
        out = {"kind": self.kind, "n_tasks": self.n_tasks, "min_deg": float(self.min_deg),
               "max_deg": float(self.max_deg)}
        if self.angles != "binned":
            out["angles"] = self.angles
        if self.classes:
            out["classes"] = [list(c) for c in self.classes]
        return out

    def extra_args(self) -> list[str]:
        """`python -m data_prep stream` arguments for the options beyond kind, tasks and degrees (none at
        their defaults, so the stream rule's command of an older stream is unchanged and nothing rebuilds)."""
        out = ["--angles", self.angles] if self.angles != "binned" else []
        return out + (["--classes", json.dumps(self.spec()["classes"], separators=(",", ":"))] if self.classes else [])

    @classmethod
    def from_manifest(cls, manifest: dict) -> "StreamDef":
        return cls(manifest["transform"], manifest["n_tasks"], float(manifest["min_deg"]), float(manifest["max_deg"]),
                   manifest.get("angles", "binned"), tuple(tuple(c) for c in manifest.get("classes", ())))


def stream_def(name: str, entry: dict) -> StreamDef:
    """A `streams:` entry of the config (schema-valid) as a StreamDef, its options checked against its kind.

    Every problem is one line naming the fix; called for every stream when the config is validated, so a bad
    split stops the workflow at parse time.
    """
    kind, n_tasks = entry["kind"], entry["n_tasks"]
    where = f"streams.{name}"
    if entry.get("angles", "binned") not in ANGLES:
        raise ClreproError(f"{where}: unknown angles {entry['angles']!r}; use one of {', '.join(ANGLES)}")
    if "angles" in entry and kind != "rotation":
        raise ClreproError(f"{where}: `angles` applies to rotation streams only; remove it or set kind: rotation")
    given = [k for k in ("classes_per_task", "splits") if k in entry]
    if kind != "class_split":
        if given:
            raise ClreproError(f"{where}: `{given[0]}` applies to class_split streams only; remove it or set "
                               f"kind: class_split")
        return StreamDef(kind, n_tasks, float(entry.get("min_deg", 0)), float(entry.get("max_deg", 180)),
                         entry.get("angles", "binned"))
    if len(given) != 1:
        raise ClreproError(f"{where}: a class_split stream takes exactly one of classes_per_task (e.g. 2) or splits "
                           f"(e.g. [[0, 1], [2, 3], ...]); got {' and '.join(given) or 'neither'}")
    classes = (contiguous_split(entry["classes_per_task"], n_tasks, where) if given == ["classes_per_task"]
               else checked_split(entry["splits"], n_tasks, where))
    return StreamDef(kind, n_tasks, float(entry.get("min_deg", 0)), float(entry.get("max_deg", 180)),
                     classes=classes)


def contiguous_split(per_task: int, n_tasks: int, where: str) -> tuple[tuple[int, ...], ...]:
    """0..9 cut into consecutive runs of `per_task` classes: 2 -> {0,1}, {2,3}, ..., {8,9}."""
    if per_task < 1 or N_CLASSES % per_task:
        divisors = [d for d in range(1, N_CLASSES + 1) if N_CLASSES % d == 0]
        raise ClreproError(f"{where}: classes_per_task {per_task} does not divide the {N_CLASSES} MNIST classes; use "
                           f"one of {divisors}, or list the tasks' classes under splits")
    if n_tasks != N_CLASSES // per_task:
        raise ClreproError(f"{where}: classes_per_task {per_task} makes {N_CLASSES // per_task} tasks but n_tasks is "
                           f"{n_tasks}; set n_tasks: {N_CLASSES // per_task}")
    return tuple(tuple(range(t * per_task, (t + 1) * per_task)) for t in range(n_tasks))


def checked_split(splits: list, n_tasks: int, where: str) -> tuple[tuple[int, ...], ...]:
    """An explicit split: every MNIST class in exactly one task, n_tasks tasks."""
    if len(splits) != n_tasks:
        raise ClreproError(f"{where}: splits lists {len(splits)} tasks but n_tasks is {n_tasks}; set n_tasks: "
                           f"{len(splits)}")
    seen: dict[int, int] = {}
    for t, task in enumerate(splits):
        if not task:
            raise ClreproError(f"{where}: task {t} of splits has no classes; give every task at least one class")
        for c in task:
            if not (isinstance(c, int) and 0 <= c < N_CLASSES):
                raise ClreproError(f"{where}: class {c!r} in task {t} of splits is not an MNIST class; use 0..9")
            if seen.get(c) == t:
                raise ClreproError(f"{where}: class {c} is listed twice in task {t} of splits; list each class once")
            if c in seen:
                raise ClreproError(f"{where}: class {c} is in task {seen[c]} and task {t} of splits; put every "
                                   f"class in one task only")
            seen[c] = t
    missing = sorted(set(range(N_CLASSES)) - set(seen))
    if missing:
        raise ClreproError(f"{where}: classes {missing} are in no task of splits; add them to a task (every MNIST "
                           f"class belongs to exactly one)")
    return tuple(tuple(task) for task in splits)


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


def even_angles(n_tasks: int, rng: np.random.Generator, min_deg: float, max_deg: float) -> np.ndarray:  # noqa: ARG001
    """Task t's angle is min + t (max - min) / n: spread evenly, no draw (TA-A-GEM's rotation tasks)."""
    return min_deg + np.arange(n_tasks) * ((max_deg - min_deg) / n_tasks)


ANGLES = {"binned": rotation_angles, "even": even_angles}


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


def _rotation(sdef: StreamDef, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    angles = ANGLES[sdef.angles](sdef.n_tasks, rng, sdef.min_deg, sdef.max_deg)
    return np.stack([rotation_map(a) for a in angles]), [float(a) for a in angles]


def _permutation(sdef: StreamDef, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    return permutation_maps(sdef.n_tasks, rng), ["permutation"] * sdef.n_tasks


def _class_split(sdef: StreamDef, rng: np.random.Generator) -> tuple[np.ndarray, list]:  # noqa: ARG001
    """Identity maps: the task is its classes (the manifest's `classes`), not a transform."""
    maps = np.tile(np.arange(N_PIXELS, dtype=np.int16), (sdef.n_tasks, 1))
    return maps, [list(c) for c in sdef.classes]


# stream kind -> (definition, its rng) -> (maps [T, 784] int16, per-task parameters)
KINDS = {"rotation": _rotation, "permutation": _permutation, "class_split": _class_split}


def build_maps(dataset: str, sdef: StreamDef, stream_seed: int) -> tuple[np.ndarray, list]:
    """Return (maps [T, 784] int16, per-task parameters) for a stream definition. Pure."""
    if sdef.kind not in KINDS:
        raise ClreproError(f"unknown stream kind {sdef.kind!r}; use one of {', '.join(KINDS)}")
    return KINDS[sdef.kind](sdef, stream_rng(dataset, stream_seed))


def label_maps(classes, n_tasks: int, n_classes: int = N_CLASSES) -> np.ndarray:
    """T x n_classes: the label class c has in task t (its position in the task's classes), -1 where c is not
    in the task. No classes (a pixel-map stream): every class keeps its own label in every task."""
    if not classes:
        return np.tile(np.arange(n_classes, dtype=np.int64), (n_tasks, 1))
    out = np.full((len(classes), n_classes), -1, dtype=np.int64)
    for t, task in enumerate(classes):
        out[t, list(task)] = np.arange(len(task))
    return out


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
        # the options beyond these only where set (StreamDef.spec), so older manifests stay byte-identical
        **{k: v for k, v in sdef.spec().items() if k in ("angles", "classes")},
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
    """A verified stream: base MNIST images (flattened uint8) plus one pixel map and one label map per task."""

    dataset: str
    manifest: dict
    maps: np.ndarray
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    path: Path | None = None
    # T x 10 (module doc); None = the identity in every task (a pixel-map stream)
    label_maps: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.label_maps is None:
            self.label_maps = label_maps((), self.maps.shape[0], int(self.train_labels.max()) + 1)

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
        maps = np.load(stream_dir / "maps.npy").astype(np.int64)
        return cls(manifest["dataset"], manifest, maps,
                   arrays["train_images"].reshape(-1, N_PIXELS), arrays["train_labels"].astype(np.int64),
                   arrays["test_images"].reshape(-1, N_PIXELS), arrays["test_labels"].astype(np.int64), stream_dir,
                   label_maps(manifest.get("classes", ()), len(maps)))

    def task_images(self, split: str, task: int, index: np.ndarray | None = None) -> np.ndarray:
        images = self.train_images if split == "train" else self.test_images
        if index is not None:
            images = images[index]
        return apply_map(images, self.maps[task])

    def task_labels(self, split: str, task: int, index: np.ndarray) -> np.ndarray:
        """The labels of images `index` as task `task` sees them (-1: the image is not in the task)."""
        labels = self.train_labels if split == "train" else self.test_labels
        return self.label_maps[task][labels[index]]

    def task_split(self, split: str, task: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices of the split's images in task `task`, ascending; their task labels). Every image, with its
        own label, on a pixel-map stream; the images of the task's classes, relabelled, on a class split."""
        labels = self.label_maps[task][self.train_labels if split == "train" else self.test_labels]
        index = np.flatnonzero(labels >= 0)
        return index, labels[index]
