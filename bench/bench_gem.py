"""GEM's per-step cost: past-task gradients by the reference's per-task loop, by one torch.func.vmap over
tasks (clrepro before), and by the batched hand-written backward GEM now uses (`model.per_task_ce_grads`).

    python -m bench.bench_gem [--tasks 19] [--slots 256] [--repeats 10]

Real MNIST Rotations images fill `--tasks` memory rows of `--slots` examples (the MER protocol at memory 5120
has 19 past tasks x 256 slots at its last task, 25 at memory 500); prints ms per step for the three ways,
whether each equals the loop bit for bit, one QP projection's cost, and the batched way's GFLOP/s beside this
core's rate on one large float32 GEMM: how far from the machine's limit GEM's step is. One thread, as a job.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_prep.streams import TaskStream  # noqa: E402
from methods import gem as gem_module  # noqa: E402
from methods import registry  # noqa: E402
from methods.base import Context  # noqa: E402
from methods.model import flat_grad  # noqa: E402
from methods.projection import gem_project  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - t0) / repeats * 1e3, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=19)
    p.add_argument("--slots", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--stream", default=str(ROOT / "data/streams/rotations"))
    p.add_argument("--mnist", default=str(ROOT / "data/mnist"))
    args = p.parse_args()
    torch.set_num_threads(1)   # (methods.train also pins BLAS threads; set OPENBLAS_NUM_THREADS=1 here)
    torch.manual_seed(0)
    stream = TaskStream.load(Path(args.stream), Path(args.mnist))
    ctx = Context(784, 10, stream.n_tasks, 2, 100, memory=args.slots * stream.n_tasks, batch_size=1,
                  samples_per_task=1000, device=torch.device("cpu"))
    gem = registry.build("gem", ctx, {"lr": 0.01, "memory_strength": 1.0})
    for t in range(args.tasks):
        idx = torch.randperm(len(stream.train_labels))[: args.slots].numpy()
        x = torch.from_numpy(stream.task_images("train", t, idx)).float() / 255.0
        gem.memory.add(x, torch.from_numpy(stream.train_labels[idx]).long(), t)
    with torch.no_grad():   # weights away from the initialisation, as after some training
        for p in gem.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tasks = list(range(args.tasks))

    def loop():
        rows = []
        for k in tasks:
            gem.net.zero_grad()
            F.cross_entropy(gem.net(gem.memory.x[k]), gem.memory.y[k]).backward()
            rows.append(flat_grad(gem.net.parameters()))
        return torch.stack(rows)

    ms_loop, ref = timed(loop, args.repeats)
    min_slots = gem_module.BATCHED_MIN_SLOTS   # GEM's vmap path (rows of 1-3 slots): the code before
    gem_module.BATCHED_MIN_SLOTS = args.slots + 1
    ms_vmap, vmapped = timed(lambda: gem.past_task_grads(tasks), args.repeats)
    gem_module.BATCHED_MIN_SLOTS = min_slots
    ms_fast, fast = timed(lambda: gem.past_task_grads(tasks), args.repeats)
    g = -fast.mean(0) + 0.1 * torch.randn_like(fast[0])
    ms_qp, _ = timed(lambda: gem_project(g, fast, 1.0, 1e-3), args.repeats)
    print(f"past-task grads, {args.tasks} tasks x {args.slots} slots, 1 thread: per-task loop {ms_loop:.1f} ms; "
          f"vmap {ms_vmap:.1f} ms (x{ms_loop / ms_vmap:.2f}, bitwise {torch.equal(vmapped, ref)}, max |diff| "
          f"{float((vmapped - ref).abs().max()):.1e}); batched backward {ms_fast:.1f} ms (x{ms_loop / ms_fast:.2f}, "
          f"bitwise {torch.equal(fast, ref)})")
    print(f"QP projection (quadprog, {args.tasks} constraints, float64 incl. Gram matrix): {ms_qp:.2f} ms")
    sizes = ctx.mlp_sizes()
    macs = sum(a * b for a, b in zip(sizes, sizes[1:]))
    # per memory example: forward, weight gradients, and input gradients of every layer but the first
    flop = 2 * (3 * macs - sizes[0] * sizes[1]) * args.tasks * args.slots
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    ms_gemm, _ = timed(lambda: a @ b, max(3, args.repeats))
    print(f"batched backward: {flop / ms_fast / 1e6:.1f} GFLOP/s; one 2048^3 float32 GEMM on this core: "
          f"{2 * 2048 ** 3 / ms_gemm / 1e6:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
