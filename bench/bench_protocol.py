"""Before/after timings of the protocol's hot spots (evaluation, per-step batch selection), interleaved so
that a busy machine slows both sides alike.

    cpuslot python -m bench.bench_protocol [--dataset rotations] [--repeats 5]

Evaluation: one full MER-protocol evaluation (all T tasks x 10k test images) of an MLP, with the original
uint8 evaluator (bench/protocol_before.py) and the current methods.protocol.Evaluator; their scores must
agree up to float-order argmax flips (at most 3 of 10,000 per task). Loop: 1000 batch-size-1 steps of online
SGD with the per-step index gather vs the pre-gathered slices. Prints best-of-N seconds of process CPU time
(single-threaded, so a busy machine that preempts us does not inflate it) and the projected evaluation cost
of one Rotations run (201 evaluations).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench.protocol_before import UInt8Evaluator
from data_prep.streams import TaskStream
from methods import protocol, registry
from methods.base import Context

ROOT = Path(__file__).resolve().parent.parent


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_protocol")
    p.add_argument("--dataset", default="rotations")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    stream = TaskStream.load(ROOT / "data/streams" / args.dataset, ROOT / "data/mnist")
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    ctx = Context(784, 10, stream.n_tasks, 2, 100, 0, 1, 1000, cpu)
    learner = registry.build("online", ctx, {"lr": 0.01})
    before, after = UInt8Evaluator(stream, 10000, cpu, False), protocol.Evaluator(stream, 10000, cpu, False)
    # the fused evaluator sums in another order: an exact logit tie can flip one argmax (docs/scale.md)
    worst = max(abs(a - b) for a, b in zip(before(learner), after(learner)))
    if worst > 3 / 10000:
        raise SystemExit(f"scores differ by {worst:.4f} on some task: more than float-order flips")
    print(f"scores: largest per-task difference {worst:.4f} (float-order argmax flips; 0 = identical)")
    t_before = t_after = float("inf")
    for _ in range(args.repeats):  # interleaved
        t_before = min(t_before, best_of(lambda: before(learner), 1))
        t_after = min(t_after, best_of(lambda: after(learner), 1))
    T = stream.n_tasks
    print(f"evaluation, {args.dataset} ({T} tasks x 10000 images), best of {args.repeats}, CPU s, {args.threads} thread(s):")
    print(f"  before {t_before:.3f} s ({1000 * t_before / T:.1f} ms/task)   after {t_after:.3f} s "
          f"({1000 * t_after / T:.1f} ms/task)   speed-up x{t_before / t_after:.2f}")
    print(f"  per MER-protocol run (201 evaluations): before {201 * t_before:.0f} s, after {201 * t_after:.0f} s")

    x_all, y_all = torch.rand(1000, 784), torch.randint(0, 10, (1000,))
    order = torch.randperm(1000)

    def gather_steps():
        for b0 in range(1000):
            idx = order[b0: b0 + 1]
            learner.observe(x_all[idx], 0, y_all[idx])

    def slice_steps():
        xs, ys = x_all[order], y_all[order]
        for b0 in range(1000):
            learner.observe(xs[b0: b0 + 1], 0, ys[b0: b0 + 1])

    g = s = float("inf")
    for _ in range(args.repeats):
        g = min(g, best_of(gather_steps, 1))
        s = min(s, best_of(slice_steps, 1))
    print(f"training loop, 1000 online steps at batch size 1: per-step gather {g:.3f} s ({1000 / g:.0f} ex/s), "
          f"pre-gathered slices {s:.3f} s ({1000 / s:.0f} ex/s), speed-up x{g / s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
