"""Run one command on one GPU slot: `python -m tools.gpu_slot --gpus N --jobs-per-gpu K --lock-dir DIR -- CMD...`

Snakemake core has no GPU-id logic (snakemake#281): `--resources gpu=N*K` only caps how many GPU jobs run at
once, not which GPU each one uses. This wrapper picks the GPU. Slot j of GPU g is the lock file
`DIR/<host>.gpu<g>-<j>.lock`; the wrapper takes a NON-BLOCKING `flock` on the first free slot (slots are tried
GPU-major, 0-0, 1-0, ..., 0-1, ..., so jobs spread over the GPUs first), sets `CUDA_VISIBLE_DEVICES=g`
before the child exists (CUDA reads it once, at initialisation), and then EXECs the command with the locked
descriptor inherited. The command's own process therefore holds the lock for its whole life, and the kernel
frees it when that process ends in any way, SIGKILL and OOM kill included: there is no stale-lock cleanup.
If every slot is taken it polls until one frees, so even a run without `--resources gpu=...` never puts
more than K jobs on one GPU (the surplus jobs wait).

GPU ids: `--gpus auto` counts them without importing torch: the ids in an inherited CUDA_VISIBLE_DEVICES
(a scheduler such as SLURM already chose them), else none inside a SLURM job, else `nvidia-smi -L`. With an
integer N and an inherited CUDA_VISIBLE_DEVICES the slots map onto its first N entries. With no GPU (N = 0)
the command runs on CPU, with CUDA_VISIBLE_DEVICES="" so that `device: auto` cannot pick a GPU by accident.

The child sees CLREPRO_GPU_SLOT (e.g. `gpu1-0`, or `cpu`), which the run record stores next to
CUDA_VISIBLE_DEVICES. `--print-resources` prints the matching Snakemake resource (`gpu=N*K`) and exits.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time

SLOT_ENV = "CLREPRO_GPU_SLOT"


def inherited_ids(env: dict) -> list[str] | None:
    """GPU ids a parent (scheduler or user) already restricted us to, or None when it did not."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "-1"]


def nvidia_smi_count() -> int:
    """Number of GPUs `nvidia-smi -L` lists; 0 where there is no driver (fast, no torch import)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def gpu_ids(request: str, env: dict) -> list[str]:
    """The GPU ids slots map onto, for `--gpus auto` or `--gpus N`."""
    inherited = inherited_ids(env)
    if request == "auto":
        if inherited is None and env.get("SLURM_JOB_ID"):
            return []  # a SLURM job given no GPU must not take the node's GPUs behind the scheduler's back
        return inherited if inherited is not None else [str(i) for i in range(nvidia_smi_count())]
    try:
        n = int(request)
    except ValueError:
        raise SystemExit(f"gpu_slot: --gpus must be 'auto' or a count >= 0, not {request!r}") from None
    if n < 0:
        raise SystemExit(f"gpu_slot: --gpus must be 'auto' or a count >= 0, not {request!r}")
    if inherited is None:
        return [str(i) for i in range(n)]
    if n > len(inherited):
        raise SystemExit(f"gpu_slot: --gpus {n} but CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} "
                         f"allows only {len(inherited)}; lower n_gpus or unset CUDA_VISIBLE_DEVICES")
    return inherited[:n]


def slot_names(ids: list[str], jobs_per_gpu: int) -> list[tuple[str, str]]:
    """(slot name, GPU id) pairs in the order they are tried: every GPU's first slot, then the second, ..."""
    return [(f"gpu{g}-{j}", g) for j in range(jobs_per_gpu) for g in ids]


def try_lock(path: str) -> int | None:
    """A descriptor holding an exclusive flock on `path`, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def acquire(lock_dir: str, ids: list[str], jobs_per_gpu: int, poll_s: float, timeout_s: float | None,
            log=sys.stderr) -> tuple[int, str, str]:
    """Block until a slot is free; return (locked fd, slot name, GPU id)."""
    os.makedirs(lock_dir, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    start, waited = time.monotonic(), False
    while True:
        for name, gpu in slot_names(ids, jobs_per_gpu):
            fd = try_lock(os.path.join(lock_dir, f"{host}.{name}.lock"))
            if fd is not None:
                return fd, name, gpu
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise SystemExit(f"gpu_slot: no free slot in {lock_dir} after {timeout_s:.0f}s "
                             f"({len(ids)} GPUs x {jobs_per_gpu} jobs each are busy)")
        if not waited:
            print(f"[gpu_slot] all {len(ids) * jobs_per_gpu} slots busy; waiting", file=log, flush=True)
            waited = True
        time.sleep(poll_s)


def parse(argv: list[str]):
    if "--" in argv:
        cut = argv.index("--")
        argv, cmd = argv[:cut], argv[cut + 1:]
    else:
        cmd = []
    p = argparse.ArgumentParser(prog="python -m tools.gpu_slot", description=__doc__.split("\n")[0])
    p.add_argument("--gpus", default="auto", help="number of GPUs, or auto (default)")
    p.add_argument("--jobs-per-gpu", type=int, default=1)
    p.add_argument("--lock-dir", default=".gpu_locks")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between tries while all slots are busy")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (default: never)")
    p.add_argument("--print-resources", action="store_true", help="print gpu=N*K for snakemake --resources")
    args = p.parse_args(argv)
    if args.jobs_per_gpu < 1:
        p.error("--jobs-per-gpu must be >= 1")
    if not cmd and not args.print_resources:
        p.error("give the command after --")
    return args, cmd


def main(argv: list[str] | None = None) -> int:
    args, cmd = parse(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    ids = gpu_ids(args.gpus, env)
    if args.print_resources:
        print(f"gpu={len(ids) * args.jobs_per_gpu}")
        return 0
    if not ids:
        env.update({"CUDA_VISIBLE_DEVICES": "", SLOT_ENV: "cpu"})
        print("[gpu_slot] no GPU: running on CPU", file=sys.stderr, flush=True)
    else:
        fd, name, gpu = acquire(args.lock_dir, ids, args.jobs_per_gpu, args.poll, args.timeout)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {' '.join(cmd)}\n".encode())  # who holds it: `cat DIR/*.lock`
        os.set_inheritable(fd, True)  # survives exec: the command itself holds the lock
        env.update({"CUDA_VISIBLE_DEVICES": gpu, SLOT_ENV: name})
        print(f"[gpu_slot] slot {name}: CUDA_VISIBLE_DEVICES={gpu} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as exc:
        print(f"gpu_slot: cannot run {cmd[0]!r}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
