"""GEM's two `compat.rng` layouts in lockstep: where their parameters first differ and how the difference grows.

GEM draws nothing; `rng: reference` only lays the past-task gradients out as the reference does, so the two modes
compute the same step in another summation order. Over whole streams `fast` stays on the reference's log in some
cells and leaves it in others (docs/gem.md). This runs both modes side by side on the same examples (no
evaluations) and prints, per block of steps, the largest parameter difference and on how many steps the modes
decided differently (one projected and the other did not, or their QP bound other constraints), which tells a
rounding difference that grows by itself from a flipped decision.

  python bench/gem_layouts.py --work DIR [--mnist DIR] [--dataset permutations] [--memory 500] [--seed 0]
      [--steps 3000] [--memory-strength G] [--block 250]

--work is reference_agreement.py's scratch directory (MNIST and the stream are built there once; no export).
--memory-strength overrides the protocol's value for the cell (e.g. 0.0 against the protocol's 1.0).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.reference_agreement import clrepro_spec, prepare_stream  # noqa: E402


def build(spec: dict, stream, strength: float | None):
    """(learner, its hparams, the schedule): methods/train.py's build_run, so the same run as a record's."""
    from methods.train import build_run

    hp = dict(spec["hparams"], **({} if strength is None else {"memory_strength": strength}))
    learner, schedule = build_run({**spec, "hparams": hp}, stream, torch.device("cpu"))
    learner.train()
    return learner, hp, schedule


def flat_params(learner) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in learner.net.parameters()])


def main(argv=None) -> int:
    from data_prep.streams import TaskStream
    from methods import device as devices
    from methods import gem, protocol

    p = argparse.ArgumentParser(prog="python bench/gem_layouts.py")
    p.add_argument("--work", required=True)
    p.add_argument("--mnist", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--dataset", default="permutations", choices=["rotations", "permutations"])
    p.add_argument("--memory", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-tasks", type=int, default=20)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--memory-strength", type=float)
    p.add_argument("--block", type=int, default=250)
    args = p.parse_args(argv)

    devices.make_deterministic(torch.device("cpu"), 1)
    stream_dir, mnist_dir = prepare_stream(Path(args.work), args.mnist, args.dataset, args.n_tasks, 0)
    stream = TaskStream.load(stream_dir, mnist_dir)
    runs = {}
    for rng in ("reference", "fast"):
        spec = clrepro_spec(args.dataset, args.n_tasks, "gem", args.memory, args.seed, args.samples, 2000, 100, rng)
        runs[rng] = build(spec, stream, args.memory_strength)
    print(f"{args.dataset} memory {args.memory} seed {args.seed}: hparams {runs['fast'][1]}")
    schedule = runs["fast"][2]
    data = protocol.task_inputs(stream, schedule, torch.device("cpu"))

    duals = []   # each projection's dual solution, recorded around the module's own gem_project

    def recording_project(*a, **kw):
        res = project(*a, **kw)
        duals.append(res.v)
        return res

    project, gem.gem_project = gem.gem_project, recording_project
    strength = runs["fast"][1]["memory_strength"]
    step, first_diff, first_flip, worst, flips = 0, None, None, 0.0, 0
    for t in range(stream.n_tasks):
        x_all, y_all = data[t]
        xs, ys = x_all[schedule.order[t]], y_all[schedule.order[t]]
        for i in range(len(xs)):
            decisions = []   # per mode: projected?, and which duals sit above the bound γ (by more than rounding)
            for learner, _, _ in runs.values():
                duals.clear()
                learner.observe(xs[i:i + 1], t, ys[i:i + 1])
                decisions.append(tuple(tuple(v > strength + 1e-9) for v in duals))
            diff = float((flat_params(runs["reference"][0]) - flat_params(runs["fast"][0])).abs().max())
            if diff > 0 and first_diff is None:
                first_diff = step
                print(f"first difference at step {step} (task {t}, example {i}): {diff:.2g}")
            if decisions[0] != decisions[1]:
                flips += 1
                if first_flip is None:
                    first_flip = step
                    print(f"first step where the modes decide differently (project or not, or which duals are "
                          f"above the bound): {step} (task {t})")
            worst = max(worst, diff)
            step += 1
            if step % args.block == 0:
                print(f"steps {step - args.block}-{step - 1}: largest parameter difference {worst:.1e}, "
                      f"{flips} steps decided differently")
                worst, flips = 0.0, 0
            if step >= args.steps:
                return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
