"""MNIST acquisition: a local directory of the four IDX files first, torchvision's download second.

Every file is checked against the MD5 of its *decompressed* content, because mirrors re-gzip the files
(so the .gz checksums differ) while the IDX payload is canonical.
"""
from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

from .atomic import atomic_path, sha256_file, write_json
from .errors import ClreproError

# Canonical MD5 of the uncompressed IDX files (LeCun et al.; same as ../shared/data/mnist/README.md).
IDX_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Output arrays, in the order the manifest lists them.
ARRAYS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx_bytes(directory: Path, name: str) -> bytes:
    """Return the decompressed bytes of `name` from `directory` (plain or .gz), verified by MD5."""
    plain, gz = directory / name, directory / f"{name}.gz"
    if plain.exists():
        data, path = plain.read_bytes(), plain
    elif gz.exists():
        try:
            data, path = gzip.decompress(gz.read_bytes()), gz
        except (OSError, EOFError) as exc:
            raise ClreproError(f"MNIST file {gz} is not valid gzip ({exc}); replace it with a fresh copy "
                               f"or delete it so it can be downloaded") from None
    else:
        raise FileNotFoundError(plain)
    md5 = hashlib.md5(data).hexdigest()
    if md5 != IDX_MD5[name]:
        raise ClreproError(f"MNIST file {path} is corrupt (MD5 of content {md5}, expected {IDX_MD5[name]}); "
                           f"replace it with a fresh copy of the original file")
    return data


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an IDX payload (uint8 element type only, as all MNIST files are)."""
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ClreproError("not an IDX uint8 file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def load_from_directory(directory: Path) -> dict[str, np.ndarray]:
    return {key: parse_idx(read_idx_bytes(directory, name)) for key, name in ARRAYS.items()}


def download(cache: Path) -> Path:
    """Download MNIST with torchvision (official mirrors) and return the directory of raw IDX files."""
    from torchvision.datasets import MNIST  # imported lazily: only needed where a network exists

    MNIST(str(cache), train=True, download=True)
    MNIST(str(cache), train=False, download=True)
    return cache / "MNIST" / "raw"


def acquire(source_dir: str | None, cache: Path, allow_download: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """Load verified MNIST arrays, trying `source_dir` then a download; return (arrays, source description)."""
    if source_dir:
        directory = Path(source_dir)
        if directory.is_dir():
            try:
                return load_from_directory(directory), str(directory.resolve())
            except FileNotFoundError as exc:
                print(f"[mnist] {exc.filename} missing in {directory}; trying the download", file=sys.stderr)
        else:
            print(f"[mnist] source directory {directory} does not exist; trying the download", file=sys.stderr)
    if not allow_download:
        raise ClreproError(f"MNIST is not available in mnist.source_dir={source_dir!r} and downloading is off; "
                           f"put the four IDX files (gzipped or not) there or set mnist.download: true")
    try:
        raw = download(cache)
    except Exception as exc:  # noqa: BLE001 - any network failure gets the same advice
        raise ClreproError(
            f"MNIST is not available: no complete copy in mnist.source_dir={source_dir!r} and the download failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"put the four IDX files (gzipped or not) in a directory and set mnist.source_dir to it") from None
    try:
        return load_from_directory(raw), "torchvision download"
    except FileNotFoundError as exc:
        raise ClreproError(f"downloaded MNIST is incomplete ({exc.filename} missing); delete {cache} and retry") from None


def check_shapes(arrays: dict[str, np.ndarray]) -> None:
    expected = {"train_images": (60000, 28, 28), "train_labels": (60000,),
                "test_images": (10000, 28, 28), "test_labels": (10000,)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise ClreproError(f"MNIST {key} has shape {arrays[key].shape}, expected {shape}")


def write(arrays: dict[str, np.ndarray], out_dir: Path) -> Path:
    """Write the arrays as .npy files plus a sha256 manifest (written last, so it marks completeness).

    The manifest holds content hashes only (no paths or times), so it is byte-identical across machines.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for key in ARRAYS:
        target = out_dir / f"{key}.npy"
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arrays[key], allow_pickle=False)
        files[f"{key}.npy"] = sha256_file(target)
    manifest = out_dir / "manifest.json"
    write_json(manifest, {"kind": "mnist", "idx_md5": IDX_MD5, "sha256": files})
    return manifest
