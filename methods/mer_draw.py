"""MER's replay draw under `compat.rng: reference`, in C on the Python RNG's own state.

The reference's `getBatch` reshuffles the whole memory list before every replayed item, so a Python loop
costs O(memory) interpreter work per item: at memory 5120 one shuffle takes ~0.8 ms, and a meralg1 run makes
2e7 of them (hours). `getbatch` does the same random calls in C (methods/mer_draw.c) on a copy of the
`random.Random` state and writes the advanced state back, so the draws and every later use of the RNG are
the reference's. Without a C compiler, or if the kernel ever disagrees with `random.shuffle` (checked once
per process on a few seeded draws), it falls back to the Python loop: slower, the same draws.
"""
from __future__ import annotations

import ctypes
import random
import sys
from pathlib import Path

import numpy as np

from . import kernels

SOURCE = Path(__file__).with_name("mer_draw.c")
_lib: ctypes.CDLL | None = None
_checked = False


def getbatch_python(rng: random.Random, size: int, n: int) -> list[int]:
    """The reference's loop: one list per batch, reshuffled whole before each item (the shuffles compound)."""
    order = list(range(size))
    drawn = []
    for j in range(n):
        rng.shuffle(order)
        drawn.append(order[j])
    return drawn


def getbatch_c(lib: ctypes.CDLL, rng: random.Random, size: int, n: int) -> list[int]:
    version, internal, gauss = rng.getstate()
    mt = np.array(internal[:-1], dtype=np.uint32)
    index = ctypes.c_int32(internal[-1])
    order = np.empty(size, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    lib.mer_getbatch(mt.ctypes.data, ctypes.byref(index), size, n, order.ctypes.data, out.ctypes.data)
    rng.setstate((version, (*mt.tolist(), index.value), gauss))
    return out.tolist()


def getbatch(rng: random.Random, size: int, n: int) -> list[int]:
    """n slot indices out of `size` (n <= size), drawn as the reference's getBatch draws them from `rng`."""
    lib = _kernel()
    if lib is None:
        return getbatch_python(rng, size, n)
    return getbatch_c(lib, rng, size, n)


def _kernel() -> ctypes.CDLL | None:
    global _lib, _checked
    if not _checked:
        _checked = True
        lib = kernels.load(SOURCE)
        if lib is not None:
            lib.mer_getbatch.restype = None
            lib.mer_getbatch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
            if _agrees_with_python(lib):
                _lib = lib
            else:
                print("[mer_draw] the C draw disagrees with this Python's random.shuffle; using the Python loop",
                      file=sys.stderr)
    return _lib


def _agrees_with_python(lib: ctypes.CDLL) -> bool:
    for seed, size, n in ((0, 2, 2), (1, 37, 5), (2, 700, 3)):
        a, b = random.Random(seed), random.Random(seed)
        if getbatch_c(lib, a, size, n) != getbatch_python(b, size, n) or a.getstate() != b.getstate():
            return False
    return True
