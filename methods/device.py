"""Choosing the torch device from the config's `device` value."""
from __future__ import annotations

import os

import torch

from data_prep.errors import ClreproError


def resolve(request: str) -> torch.device:
    if request not in ("auto", "cpu", "cuda"):
        raise ClreproError(f"device must be auto, cpu or cuda, not {request!r}")
    if request == "cpu" or (request == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ClreproError("device: cuda was asked for but no CUDA GPU is visible "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                           "set device: auto or device: cpu in the config")
    return torch.device("cuda")


def make_deterministic(device: torch.device, threads: int) -> None:
    """Same config, seed and device give the same numbers: deterministic kernels, fixed thread count."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # = use_deterministic_algorithms(True) minus its import of torch._inductor's config (2.6 s per job here),
    # which only tells the compiler, and nothing here is compiled
    torch.set_deterministic_debug_mode("error")
    torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
