"""Examples/s of every registered method, and the projected wall time of the full paper grid on this machine.

    python -m bench.bench_methods [--tasks 3] [--samples 100] [--parallel 2] [--methods ...]

Each method trains on the first `--tasks` tasks of the real Rotations stream (`--samples` examples per task,
the MER protocol: batch size 1, its hyper-parameters at memory 500 and 5120, evaluation every 100 examples
on the full 10k test set of every task seen by the stream) on CPU and, where CUDA is available, on GPU.
The learner is built for the full 20-task stream (memory split, heads), only the stream is cut short.

The projection prices every cell of the paper grid (3 datasets x methods x memories 5120/500/200 where the
protocol has them x 5 seeds) as  T*n / train_rate + n_evaluations * T * eval_cost_per_task,  with 1000
(Many Permutations: 200) examples per task, n_evaluations counted from the protocol's rule (201 for
every stream), memory 200 priced at the memory-500 rate, and `--parallel` jobs at once (default: the CPU
count). Per-example cost of GEM-like methods grows with the number of tasks seen, so a short bench
under-prices them on Many Permutations (100 tasks); the printout says so.

Methods whose module does not import (still being written) are skipped with a note.

`--before` also runs every cell with the frozen code the current evaluator and training steps replaced
(bench/eval_before.py, bench/train_before.py; methods without a frozen step keep theirs), interleaved with
the current code, and prints both projections: the speed-up of the whole grid, measured in one run.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_prep.streams import TaskStream  # noqa: E402
from methods import device as devices  # noqa: E402
from methods import protocol, registry  # noqa: E402
from methods.base import Context  # noqa: E402
from methods.config import grid, prepare, resolve_run, uses_memory  # noqa: E402

PAPER = {"datasets": ["rotations", "permutations", "many_permutations"], "methods": list(registry.METHODS),
         "memories": [5120, 500, 200], "seeds": [0, 1, 2, 3, 4], "device": "cpu"}


def count_evaluations(n_tasks: int, n_per_task: int, batch_size: int, log_every: int) -> int:
    """Evaluations protocol.run makes: before every log_every-th batch or a task switch, and once at the end."""
    count, batch_i = 1, 0
    for _ in range(n_tasks):
        for b0 in range(0, n_per_task, batch_size):
            count += batch_i % log_every == 0 or b0 == 0
            batch_i += 1
    return count


def importable(name: str) -> str | None:
    """None if the method's class loads, else the reason it does not (yet)."""
    try:
        registry.get(name)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready": report it, bench the rest
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
    return None


@contextlib.contextmanager
def frozen_code():
    """The evaluator and the training steps swapped for the frozen copies they replaced, while inside."""
    from bench import eval_before, train_before

    evaluator, get = protocol.Evaluator, registry.get
    protocol.Evaluator = lambda stream, n_test, device, drop_last, subset="first": eval_before.Evaluator(
        stream, n_test, device, drop_last)
    registry.get = lambda name: train_before.BEFORE.get(name) or get(name)
    try:
        yield
    finally:
        protocol.Evaluator, registry.get = evaluator, get


def bench_one(config: dict, stream: TaskStream, n_full_tasks: int, method: str, memory: int,
              device: torch.device) -> dict:
    spec = resolve_run(config, "rotations", method, memory, 0)
    protocol.seed_everything(0)
    schedule = protocol.make_schedule(stream.n_tasks, len(stream.train_labels), spec["samples_per_task"])
    ctx = Context(n_inputs=stream.maps.shape[1], n_outputs=10, n_tasks=n_full_tasks, n_layers=spec["model"]["n_layers"],
                  n_hiddens=spec["model"]["n_hiddens"], memory=memory, batch_size=spec["batch_size"],
                  samples_per_task=spec["samples_per_task"], device=device)
    learner = registry.build(method, ctx, spec["hparams"])
    t0 = time.perf_counter()
    _, timing = protocol.run(learner, stream, schedule, spec, device, progress=io.StringIO())
    assert timing["n_evaluations"] == count_evaluations(stream.n_tasks, spec["samples_per_task"],
                                                        spec["batch_size"], spec["log_every"])
    return {"train_ex_s": timing["examples_per_s"],
            "eval_s_per_task": timing["eval_s"] / timing["n_evaluations"] / stream.n_tasks,
            "wall_s": time.perf_counter() - t0}


def project(paper: dict, rates: dict, device: str, parallel: int, label: str = "") -> None:
    """Print the projected cost of the paper grid from the measured rates (method, memory) -> figures,
    with the protocol's evaluation schedule and with evaluation at task boundaries only (R unchanged)."""
    proto = paper["_protocol"]
    train, evals, boundary_evals = 0.0, 0.0, 0.0
    missing, per_dataset = set(), {}
    for cell in grid(paper):
        d, m, mem = cell["dataset"], cell["method"], cell["memory"]
        key = (m, 500 if mem == 200 else mem)
        if key not in rates:
            missing.add(m)
            continue
        T, n = paper["streams"][d]["n_tasks"], proto["samples_per_task"][d]
        n_eval = count_evaluations(T, n, proto["batch_size"], proto["log_every"])
        per_eval = T * rates[key]["eval_s_per_task"]
        tr, ev = T * n / rates[key]["train_ex_s"], n_eval * per_eval
        train, evals = train + tr, evals + ev
        boundary_evals += count_evaluations(T, n, proto["batch_size"], 10**9) * per_eval
        per_dataset[d] = per_dataset.get(d, 0.0) + tr + ev
    total = train + evals
    print(f"\nProjected paper grid on {device}{label} ({len(grid(paper))} runs; evaluation every {proto['log_every']} "
          f"examples on {proto['test_examples_per_task']} test images x T tasks):")
    for d, s in per_dataset.items():
        print(f"  {d:18s} {s / 3600:8.1f} job-hours")
    print(f"  total {total / 3600:.1f} job-hours (training {train / 3600:.1f} h, evaluation {evals / 3600:.1f} h); "
          f"wall time with {parallel} jobs at once: {total / parallel / 3600:.1f} h")
    short = train + boundary_evals
    print(f"  evaluating at task boundaries only (overrides.log_every: 1000000; R and every metric unchanged, "
          f"no learning curves): {short / 3600:.1f} job-hours, wall {short / parallel / 3600:.1f} h")
    if missing:
        print(f"  NOT priced (not importable or not benched): {', '.join(sorted(missing))}")
    print("  caveat: gem/agem/taagem cost per example grows with tasks seen; a short bench under-prices "
          "them, most on Many Permutations (100 tasks)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_methods", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=3, help="Rotations tasks to train on (default 3)")
    p.add_argument("--samples", type=int, default=100, help="examples per task (default 100)")
    p.add_argument("--memories", type=int, nargs="+", default=[500, 5120])
    p.add_argument("--methods", nargs="+", default=list(registry.METHODS))
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda where available")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job (the workflow uses 1)")
    p.add_argument("--parallel", type=int, default=os.cpu_count(), help="jobs at once, for the projection")
    p.add_argument("--stream", default=str(ROOT / "data/streams/rotations"))
    p.add_argument("--mnist", default=str(ROOT / "data/mnist"))
    p.add_argument("--before", action="store_true", help="also time the frozen evaluator and training steps")
    args = p.parse_args(argv)
    device_names = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    full = TaskStream.load(Path(args.stream), Path(args.mnist))
    stream = dataclasses.replace(full, maps=full.maps[: args.tasks])
    config = prepare({**PAPER, "methods": list(registry.METHODS), "datasets": ["rotations"],
                      "memories": args.memories, "overrides": {"samples_per_task": {"rotations": args.samples}}})
    paper = prepare(dict(PAPER))
    print(f"bench: Rotations, {args.tasks} of {full.n_tasks} tasks x {args.samples} examples, MER protocol "
          f"(batch 1, eval every {config['_protocol']['log_every']} on 10k test images/task), "
          f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs")
    for name in device_names:
        device = torch.device(name)
        devices.make_deterministic(device, args.threads)
        rates, before = {}, {}
        print(f"\n[{name}] {'method':12s} {'memory':>6s} {'train ex/s':>10s} {'eval ms/task':>12s} {'bench s':>8s}"
              + (f" {'before: train ex/s':>18s} {'eval ms/task':>12s}" if args.before else ""))
        for method in args.methods:
            why = importable(method)
            if why:
                print(f"[{name}] {method:12s} SKIPPED: does not import yet ({why})")
                continue
            memories = args.memories if uses_memory(config["_protocol"], method) else [0]
            for memory in memories:
                try:
                    if args.before:
                        with frozen_code():
                            before[(method, memory)] = bench_one(config, stream, full.n_tasks, method, memory, device)
                    r = bench_one(config, stream, full.n_tasks, method, memory, device)
                except Exception as exc:  # noqa: BLE001 - a half-written method must not stop the bench
                    print(f"[{name}] {method:12s} {memory:6d} FAILED: {type(exc).__name__}: {str(exc)[:100]}")
                    continue
                rates[(method, memory)] = r
                b = before.get((method, memory))
                print(f"[{name}] {method:12s} {memory:6d} {r['train_ex_s']:10.0f} {1000 * r['eval_s_per_task']:12.1f} "
                      f"{r['wall_s']:8.1f}" + (f" {b['train_ex_s']:18.0f} {1000 * b['eval_s_per_task']:12.1f}"
                                               if b else ""), flush=True)
        if args.before:
            project(paper, before, name, args.parallel, " with the frozen evaluator and training steps")
        project(paper, rates, name, args.parallel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
