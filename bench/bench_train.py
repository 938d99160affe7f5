"""Training steps, current against the frozen autograd steps they replaced (bench/train_before.py), in one run.

    python -m bench.bench_train [--tasks 4] [--samples 250] [--reps 3] [--methods ...] [--threads 1]

Each cell trains a method from the same initial weights and RNG state twice per repetition, once with the
frozen step and once with the current one, interleaved, on the first `--tasks` tasks of the real Rotations
stream (`--samples` examples each) under its protocol's batch size and hyper-parameters (MER protocol: batch 1,
memory 500; GEM protocol: batch 10, 256 memories per task). It times the `observe` calls only (process CPU
seconds, fastest repetition; evaluation is benched by bench/bench_eval.py), checks that both end with bitwise
the same weights, and prints examples/s before and after and their ratio. It never asserts a time.
bench/reference_speed.py times the current steps against the reference code itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_before import BEFORE  # noqa: E402
from data_prep.streams import TaskStream  # noqa: E402
from methods import device as devices  # noqa: E402
from methods import protocol, registry  # noqa: E402
from methods.base import Context  # noqa: E402
from methods.config import prepare, resolve_run  # noqa: E402

CELLS = [("mer2019", m, 500) for m in ("online", "independent", "taskinput", "ewc", "gem", "agem", "eralg4", "eralg5")]
CELLS += [("gem2017", m, 5120) for m in ("online", "ewc", "gem")]


def build_pair(proto: str, method: str, memory: int, n_full_tasks: int, samples: int, n_inputs: int):
    config = prepare({"protocol": f"config/protocols/{proto}.yaml", "datasets": ["rotations"], "methods": [method],
                      "memories": [memory], "seeds": [0], "device": "cpu",
                      "overrides": {"samples_per_task": {"rotations": samples}}})
    spec = resolve_run(config, "rotations", method, memory, 0)
    ctx = Context(n_inputs=n_inputs, n_outputs=10, n_tasks=n_full_tasks, n_layers=spec["model"]["n_layers"],
                  n_hiddens=spec["model"]["n_hiddens"], memory=memory, batch_size=spec["batch_size"],
                  samples_per_task=samples, device=torch.device("cpu"))
    hp = registry.make_hparams(method, spec["hparams"])
    protocol.seed_everything(0)
    after = registry.get(method)(ctx, hp)
    before = BEFORE[method](ctx, hp)
    before.load_state_dict(after.state_dict())
    return spec, before, after


def train(learner, data, bs: int) -> float:
    """CPU seconds spent in observe/end_task over the given tasks, from RNG state seed 0."""
    protocol.seed_everything(0)
    spent = 0.0
    for t, (x, y) in enumerate(data):
        t0 = time.process_time()
        for b0 in range(0, len(y), bs):
            learner.observe(x[b0:b0 + bs], t, y[b0:b0 + bs])
        learner.end_task(t, x, y)
        spent += time.process_time() - t0
    return spent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_train", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=4, help="Rotations tasks to train on (default 4)")
    p.add_argument("--samples", type=int, default=250, help="examples per task (default 250)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions; the fastest counts (default 3)")
    p.add_argument("--methods", nargs="+", default=None, help="default: every cell with a frozen step")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the workflow gives each job 1)")
    p.add_argument("--stream", default=str(ROOT / "data/streams/rotations"))
    p.add_argument("--mnist", default=str(ROOT / "data/mnist"))
    args = p.parse_args(argv)
    devices.make_deterministic(torch.device("cpu"), args.threads)
    full = TaskStream.load(Path(args.stream), Path(args.mnist))
    stream = dataclasses.replace(full, maps=full.maps[: args.tasks])
    print(f"bench_train: Rotations, {args.tasks} of {full.n_tasks} tasks x {args.samples} examples, torch "
          f"{torch.__version__} ({torch.backends.cpu.get_cpu_capability()} kernels), {args.threads} thread(s), "
          f"{os.cpu_count()} CPUs; observe() CPU s, fastest of {args.reps} interleaved")
    print(f"{'protocol':9s} {'method':12s} {'memory':>6s} {'batch':>5s} {'before ex/s':>11s} {'after ex/s':>10s} "
          f"{'ratio':>6s} {'bitwise':>7s}")
    for proto, method, memory in CELLS:
        if args.methods and method not in args.methods:
            continue
        cell = (proto, method, memory, full.n_tasks, args.samples, full.maps.shape[1])
        spec, _, first = build_pair(*cell)
        protocol.seed_everything(0)
        schedule = protocol.make_schedule(stream.n_tasks, len(stream.train_labels), args.samples)
        data = [(x[o], y[o]) for (x, y), o in zip(protocol.task_inputs(stream, schedule, torch.device("cpu")),
                                                  schedule.order)]
        init = first.state_dict()
        times, final = {"before": [], "after": []}, {}
        for _ in range(args.reps):
            pair = dict(zip(("before", "after"), build_pair(*cell)[1:]))
            for name, learner in pair.items():
                learner.load_state_dict(init)
                times[name].append(train(learner, data, spec["batch_size"]))
                final[name] = learner.state_dict()
        same = all(torch.equal(a, b) for a, b in zip(final["before"].values(), final["after"].values()))
        moved = any(not torch.equal(a, b) for a, b in zip(final["after"].values(), init.values()))
        n = args.tasks * args.samples
        rb, ra = n / min(times["before"]), n / min(times["after"])
        print(f"{proto:9s} {method:12s} {memory:6d} {spec['batch_size']:5d} {rb:11.0f} {ra:10.0f} {ra / rb:5.2f}x "
              f"{'yes' if same and moved else 'NO':>7s}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
