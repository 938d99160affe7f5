"""Evaluation seconds per MER-protocol run: the Evaluator as of d29a111 (bench/eval_before.py) against today's.

    cpuslot python -m bench.bench_eval [--datasets rotations permutations] [--evals 3] [--threads 1]

Per stream (20 tasks x 10k test images) and method, in ONE process: the learner trains on `--samples`
batch-1 examples per task with the MER protocol's hyper-parameters (memory 500), which also times its
training rate; then `--evals` evaluations by the old and by the current Evaluator, interleaved so that a busy
machine slows both alike, in process CPU seconds (the fastest of each). Printed: seconds per evaluation and
per run (x 201, the protocol's evaluation count), their ratio, evaluation's projected share of a full run
(20 x 1000 training examples at the measured rate), and how many of the T x N predictions the two disagree
on (the fused path sums in another order). Then the fused path's GFLOP per CPU second against a plain float32
GEMM's on the same threads. Prints figures only: nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_methods import PAPER, count_evaluations  # noqa: E402
from bench.eval_before import Evaluator as EvaluatorBefore  # noqa: E402
from data_prep import mnist  # noqa: E402
from data_prep.streams import DEFAULT_STREAMS, TaskStream, write_stream  # noqa: E402
from methods import protocol, registry  # noqa: E402
from methods.base import Context  # noqa: E402
from methods.config import prepare, resolve_run, uses_memory  # noqa: E402

CPU = torch.device("cpu")
METHODS = ["online", "taskinput", "independent", "ewc", "gem", "eralg4", "meralg1"]
N_TEST = 10000


def load_stream(dataset: str, mnist_source: Path, scratch: Path) -> TaskStream:
    """The workflow's stream where data/streams has it, else the same stream (seed 0) built in `scratch`."""
    built = ROOT / "data/streams" / dataset
    if (built / "manifest.json").exists():
        return TaskStream.load(built, ROOT / "data/mnist")
    if not (scratch / "mnist/manifest.json").exists():
        arrays, _ = mnist.acquire(str(mnist_source), scratch / "download", allow_download=False)
        mnist.write(arrays, scratch / "mnist")
    write_stream(scratch / dataset, dataset, DEFAULT_STREAMS[dataset], 0, scratch / "mnist/manifest.json")
    return TaskStream.load(scratch / dataset, scratch / "mnist")


def trained(config: dict, stream: TaskStream, dataset: str, method: str, samples: int):
    """The method after `samples` batch-1 examples of every task, and its training examples per CPU second."""
    memory = 500 if uses_memory(config["_protocol"], method) else 0
    spec = resolve_run(config, dataset, method, memory, 0)
    protocol.seed_everything(0)
    schedule = protocol.make_schedule(stream.n_tasks, len(stream.train_labels), samples)
    ctx = Context(stream.maps.shape[1], 10, stream.n_tasks, spec["model"]["n_layers"], spec["model"]["n_hiddens"],
                  memory, 1, samples, CPU)
    learner = registry.build(method, ctx, spec["hparams"])
    data = protocol.task_inputs(stream, schedule, CPU)
    t0 = time.process_time()
    for t, (x, y) in enumerate(data):
        for i in range(len(y)):
            learner.observe(x[i: i + 1], t, y[i: i + 1])
        learner.end_task(t, x, y)
    return learner, stream.n_tasks * samples / (time.process_time() - t0)


def cpu_seconds(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def interleaved(before, after, learner, repeats: int) -> tuple[float, float]:
    """Fastest of `repeats` evaluations by each, alternating, so that load from other jobs hits both."""
    t_before = t_after = float("inf")
    for _ in range(repeats):
        t_before = min(t_before, cpu_seconds(lambda: before(learner)))
        t_after = min(t_after, cpu_seconds(lambda: after(learner)))
    return t_before, t_after


def flipped(before: EvaluatorBefore, after: protocol.Evaluator, learner) -> int:
    """Predictions (of T x N) on which the old per-task forward and the current evaluator disagree."""
    learner.eval()
    with torch.no_grad():
        old = torch.stack([learner(before.test_inputs(t), t).argmax(1) for t in range(before.n_tasks)])
    learner.train()
    return int((old != after.predictions(learner)).sum())


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """A plain n^3 float32 GEMM: this machine's matmul rate, GFLOP per CPU second (fastest of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n ** 3 / min(cpu_seconds(lambda: a @ b) for _ in range(repeats)) / 1e9


def fused_gflops(ev: protocol.Evaluator, learner, repeats: int = 5) -> tuple[float, float]:
    """(executed, dense-equivalent) GFLOP per CPU second of one fused evaluation: executed counts the first
    layer over each image group's used pixels, dense-equivalent the per-task 784-input matmuls it replaces."""
    sizes = [(layer.in_features, layer.out_features) for layer in learner.eval_mlp(0)]
    tail = sum(i * o for i, o in sizes[1:])
    n_tasks, width = ev.n_tasks, sizes[0][1]
    executed = 2 * n_tasks * (sum(x.numel() for _, x in ev._groups) * width + ev.n_scored * tail)
    dense = 2 * n_tasks * ev.n_scored * (sizes[0][0] * width + tail)
    best = min(cpu_seconds(lambda: ev(learner)) for _ in range(repeats))
    return executed / best / 1e9, dense / best / 1e9


def bench_stream(config, stream, dataset, methods, args, gemm: float) -> None:
    before = EvaluatorBefore(stream, N_TEST, CPU, False)
    after = protocol.Evaluator(stream, N_TEST, CPU, False)
    n_train = config["_protocol"]["samples_per_task"][dataset]
    n_eval = count_evaluations(stream.n_tasks, n_train, 1, config["_protocol"]["log_every"])
    n_scored = stream.n_tasks * after.n_scored
    print(f"\n{dataset}: {stream.n_tasks} tasks x {after.n_scored} test images; per run {n_eval} evaluations, "
          f"{stream.n_tasks} x {n_train} training examples; eval CPU s (fastest of {args.evals}), "
          f"{args.threads} thread(s)")
    print(f"  {'method':12s} {'before s/eval':>13s} {'after s/eval':>12s} {'before s/run':>12s} {'after s/run':>11s} "
          f"{'ratio':>6s} {'train s/run':>11s} {'eval share':>16s} {'flipped':>14s}")
    for method in methods:
        learner, rate = trained(config, stream, dataset, method, args.samples)
        t_before, t_after = interleaved(before, after, learner, args.evals)
        train_s = stream.n_tasks * n_train / rate
        share_before = n_eval * t_before / (n_eval * t_before + train_s)
        share_after = n_eval * t_after / (n_eval * t_after + train_s)
        path = "" if after._task_mlps(learner) else " (per-task path)"
        print(f"  {method:12s} {t_before:13.3f} {t_after:12.3f} {n_eval * t_before:12.0f} {n_eval * t_after:11.0f} "
              f"{t_before / t_after:5.2f}x {train_s:11.0f} {share_before:7.0%} -> {share_after:4.0%} "
              f"{flipped(before, after, learner):4d} / {n_scored}{path}")
    executed, dense = fused_gflops(after, trained(config, stream, dataset, "online", 10)[0])
    print(f"  fused evaluation, online MLP: {executed:.1f} GFLOP/CPU-s executed ({executed / gemm:.0%} of the plain "
          f"GEMM), {dense:.1f} dense-equivalent (the per-task 784-input matmuls it replaces)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_eval", description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["rotations", "permutations"])
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--samples", type=int, default=50, help="training examples per task before timing (default 50)")
    p.add_argument("--evals", type=int, default=3, help="timed evaluations per evaluator and method (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a training job has 1)")
    p.add_argument("--mnist", default=os.environ.get("CLREPRO_MNIST_DIR", str(ROOT.parent / "shared/data/mnist")),
                   help="MNIST IDX files, used when data/streams has not been built")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    config = prepare({**PAPER, "datasets": args.datasets, "methods": args.methods})
    gemm = gemm_gflops()
    print(f"bench_eval: torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs; "
          f"plain 2048^3 float32 GEMM: {gemm:.1f} GFLOP/CPU-s")
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as scratch:
        for dataset in args.datasets:
            stream = load_stream(dataset, Path(args.mnist), Path(scratch))
            bench_stream(config, stream, dataset, args.methods, args, gemm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
