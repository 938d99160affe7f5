"""Fast sequential single-example SGD for the MLP: the inner loop of MER, without autograd.

MER does up to 1,010 single-example SGD steps per stream example (Alg. 1, k=101, s=10). Autograd plus
optim.SGD costs ~0.5 ms a step on CPU; this module gives two engines with the same math (tested against
autograd in tests/test_mer.py):

- `CEngine` (CPU): the whole k-step loop in one call of a small C function (methods/mlp_sgd.c), compiled
  once with the system C compiler (methods/kernels.py) and loaded with ctypes.
- `TorchEngine` (any device, the fallback when no C compiler is found): a hand-written forward/backward
  in ~16 tensor ops per step, no autograd.

Both update a flat float32 parameter vector in place, laid out by `flatten_mlp`.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch
import torch.nn.functional as F

from . import kernels

SOURCE = Path(__file__).with_name("mlp_sgd.c")
_lib = None


def _compile() -> ctypes.CDLL | None:
    global _lib
    if _lib is None:
        _lib = lib = kernels.load(SOURCE)
        if lib is not None:
            lib.mlp_sgd_sequence.restype = None
            lib.mlp_sgd_sequence.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float,
                                             ctypes.c_void_p]
            lib.reptile.restype = None
            lib.reptile.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float]
    return _lib


class CEngine:
    name = "c"

    def __init__(self, flat: torch.Tensor, sizes: list[int]) -> None:
        if flat.device.type != "cpu" or flat.dtype != torch.float32 or not flat.is_contiguous():
            raise ValueError("CEngine needs a contiguous float32 CPU parameter vector")
        self.lib = _compile()
        if self.lib is None:
            raise RuntimeError("no C compiler")
        self.flat = flat
        self.L = len(sizes) - 1
        self.sizes = torch.tensor(sizes, dtype=torch.int64)
        self.work = torch.empty(2 * sum(sizes[1:]), dtype=torch.float32)

    def sgd_sequence(self, x: torch.Tensor, y: torch.Tensor, lr: float, scale: torch.Tensor | None = None) -> None:
        """One SGD step on each row of x (with its label y and loss multiplier scale), in order."""
        x = x.contiguous()
        y = y.contiguous()
        if scale is not None:
            scale = scale.to(torch.float32).contiguous()
        self.lib.mlp_sgd_sequence(self.flat.data_ptr(), self.L, self.sizes.data_ptr(), x.data_ptr(), y.data_ptr(),
                                  None if scale is None else scale.data_ptr(), x.shape[0], lr,
                                  self.work.data_ptr())

    def reptile(self, w: torch.Tensor, coef: float) -> None:
        """flat <- w + (flat - w) * coef in one pass."""
        self.lib.reptile(self.flat.data_ptr(), w.data_ptr(), self.flat.numel(), coef)


class TorchEngine:
    name = "torch"

    def __init__(self, flat: torch.Tensor, sizes: list[int]) -> None:
        self.flat = flat
        self.layers = []
        off = 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            w = flat[off: off + n_in * n_out].view(n_in, n_out)   # input-major (see layout())
            off += n_in * n_out
            b = flat[off: off + n_out]
            off += n_out
            self.layers.append((w, b))

    def reptile(self, w: torch.Tensor, coef: float) -> None:
        self.flat.sub_(w).mul_(coef).add_(w)

    @torch.no_grad()
    def sgd_sequence(self, x: torch.Tensor, y: torch.Tensor, lr: float, scale: torch.Tensor | None = None) -> None:
        onehot = F.one_hot(y, self.layers[-1][0].shape[1]).to(x.dtype)
        if scale is not None:
            scale = scale.to(x.dtype)
        relu_grad = torch.ops.aten.threshold_backward
        for e in range(x.shape[0]):
            acts = [x[e]]
            for i, (w, b) in enumerate(self.layers):
                h = torch.addmv(b, w.t(), acts[-1])
                acts.append(h.relu_() if i < len(self.layers) - 1 else h)
            g = torch.softmax(acts[-1], 0).sub_(onehot[e])
            if scale is not None:
                g.mul_(scale[e])
            deltas = [g]
            for i in range(len(self.layers) - 1, 0, -1):
                deltas.append(relu_grad(torch.mv(self.layers[i][0], deltas[-1]), acts[i], 0))
            deltas.reverse()
            for (w, b), d, a in zip(self.layers, deltas, acts[:-1]):
                w.addr_(a, d, alpha=-lr)
                b.add_(d, alpha=-lr)


def flatten_mlp(net: torch.nn.Module) -> torch.Tensor:
    """Move the MLP's parameters into one flat vector and make them views of it; return the vector.

    Per Linear layer: the weight stored input-major ([in, out], so `layer.weight` becomes a transposed
    view), then the bias. The module computes exactly as before; snapshots and Reptile steps become
    single vector operations and the engines get contiguous rows per input unit.
    """
    layers = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    parts = []
    for layer in layers:
        parts += [layer.weight.detach().t().reshape(-1), layer.bias.detach().reshape(-1)]
    flat = torch.cat(parts).contiguous()
    off = 0
    for layer in layers:
        n_out, n_in = layer.weight.shape
        layer.weight.data = flat[off: off + n_in * n_out].view(n_in, n_out).t()
        off += n_in * n_out
        layer.bias.data = flat[off: off + n_out]
        off += n_out
    return flat


ENGINES = ("auto", "c", "torch")


def make_engine(flat: torch.Tensor, sizes: list[int], kind: str = "auto"):
    """kind: auto (C on CPU when a compiler is found, else torch), c, or torch."""
    if kind == "torch" or (kind == "auto" and flat.device.type != "cpu"):
        return TorchEngine(flat, sizes)
    try:
        return CEngine(flat, sizes)
    except (RuntimeError, ValueError, OSError):
        if kind == "c":
            raise
        return TorchEngine(flat, sizes)
