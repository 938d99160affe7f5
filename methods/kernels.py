"""Small C kernels, compiled once with the system C compiler and loaded with ctypes.

A kernel is a C source beside this module; `load` compiles it into ~/.cache/clrepro/kernels/ (or
$CLREPRO_KERNEL_CACHE) under a name keyed by the source, the flags and the machine, so an edited source or
another CPU gets its own library, and a half-written library is never loaded (compiled to a temporary name,
then renamed). Without a compiler `load` returns None and the caller uses its Python/torch path.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("CLREPRO_KERNEL_CACHE", Path.home() / ".cache" / "clrepro" / "kernels"))
# No fast-math and no FMA contraction: the kernels' float arithmetic is the one written in their source.
FLAGS = ["-O3", "-fPIC", "-shared", "-fno-fast-math", "-ffp-contract=off", "-march=native"]
_loaded: dict[str, ctypes.CDLL | None] = {}


def load(source: Path) -> ctypes.CDLL | None:
    """The compiled library of `source` (cached per process), or None when it cannot be compiled."""
    if source.name in _loaded:
        return _loaded[source.name]
    _loaded[source.name] = lib = _build(source)
    return lib


def _build(source: Path) -> ctypes.CDLL | None:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    src = source.read_bytes()
    key = hashlib.sha256(src + " ".join(FLAGS).encode() + os.uname().machine.encode()).hexdigest()[:16]
    lib_path = CACHE / f"{source.stem}-{key}.so"
    if not lib_path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = lib_path.with_suffix(f".{os.getpid()}.tmp")
        res = subprocess.run([cc, *FLAGS, str(source), "-o", str(tmp), "-lm"], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"[kernels] {source.name} did not compile, using the Python/torch path: "
                  f"{res.stderr.strip()[:300]}", file=sys.stderr)
            return None
        os.replace(tmp, lib_path)
    return ctypes.CDLL(str(lib_path))
