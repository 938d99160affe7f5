"""The run record: one JSON per run, everything the analysis needs and everything needed to redo the run."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from analysis.metrics import CONVENTIONS, accuracy_matrix, all_metrics
from data_prep.atomic import write_json

from .protocol import EvalLog

SCHEMA_VERSION = 2  # 2: spec carries stream_def, the protocol sizes it reduced, the resolved device
ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("torch", "numpy", "quadprog", "snakemake"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return platform.processor() or None


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "host": socket.gethostname(), "torch_threads": torch.get_num_threads(),
            # the instruction set torch's CPU kernels dispatch to (AVX2, AVX512, ...; ATEN_CPU_CAPABILITY caps
            # it): kernels of another width add in another order, so the same seed can end a few images apart
            "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            # numpy's OpenBLAS (GEM's float64 QP) picks its kernels by CPU too, unless this pins them
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "auto"),
            # which GPU slot tools/gpu_slot.py gave this run (None when it ran outside the wrapper)
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpu_slot": os.environ.get("CLREPRO_GPU_SLOT")}
    if device.type == "cuda":
        info["gpu_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def build(spec: dict, log: EvalLog, timing: dict, method_info: dict, stream_manifest: dict,
          device: torch.device) -> dict:
    b, R = accuracy_matrix(log.task, log.acc)
    return {
        "schema_version": SCHEMA_VERSION,
        "spec": spec,
        "stream": {"dataset": stream_manifest["dataset"], "stream_seed": stream_manifest["stream_seed"],
                   "task_params": stream_manifest["task_params"], "sha256": stream_manifest["sha256"],
                   "mnist_manifest_sha256": stream_manifest["mnist_manifest_sha256"]},
        "eval_log": {"task": log.task, "examples_seen": log.examples_seen, "acc": log.acc,
                     **({"first_batches": log.first_batches} if log.first_batches else {})},
        "b": b.tolist(),
        "R": R.tolist(),
        "metrics": all_metrics(R, b, log.first_batches or None),
        "metric_conventions": CONVENTIONS,
        "timing": timing,
        "method_info": method_info,
        "env": {**versions(), **device_info(device), "git": git_commit()},
    }


def write(path: str | Path, record: dict) -> None:
    write_json(path, record)
