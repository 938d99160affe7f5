"""The GEM/MER training protocol: one pass over the task stream with periodic evaluation on every task.

Follows `Continuum` and `life_experience` of the reference main.py (reference-gem-mer.md section 3):
per task a seeded random subset of the 60k training images, shuffled; batches never span tasks;
evaluate on all tasks before batch i if i % log_every == 0 or the task changed, and once at the end.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from data_prep.streams import TaskStream

from .base import Learner


@dataclass
class Schedule:
    """The training examples of each task, in the order they are seen."""

    order: list[torch.Tensor]     # per task: indices into that task's training tensor, shuffled
    subsets: list[torch.Tensor]   # per task: indices into the 60k MNIST training images


def seed_everything(seed: int) -> None:
    """Seed the three RNGs the reference seeds (torch, numpy, Python), in its order."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def make_schedule(n_tasks: int, n_train: int, samples_per_task: int) -> Schedule:
    """Consumes the global RNGs as the reference Continuum: T torch.randperm, then T random.shuffle."""
    n = min(samples_per_task, n_train) if samples_per_task > 0 else n_train
    subsets = [torch.randperm(n_train)[:n] for _ in range(n_tasks)]
    order = []
    for _ in range(n_tasks):
        items = list(range(n))
        random.shuffle(items)
        order.append(torch.tensor(items, dtype=torch.long))
    return Schedule(order, subsets)


@dataclass
class EvalLog:
    task: list[int] = field(default_factory=list)           # result_t: label of each evaluation
    examples_seen: list[int] = field(default_factory=list)  # training examples seen before it
    acc: list[list[float]] = field(default_factory=list)    # result_a: accuracy on every task


class Evaluator:
    """Scores a learner on every task's test set, transforming the uint8 test images on the device.

    Images are kept pixel-major (785 x N): selecting a task's pixels is then a row gather, about 50x faster
    than gathering columns of the image-major layout, and the transposed view feeds the matmul directly.
    """

    def __init__(self, stream: TaskStream, n_test: int, device: torch.device, drop_last: bool) -> None:
        # Reference quirk: main.py scores x[0 : N-1] (9,999 images) but divides by N.
        self.n_scored = n_test - 1 if drop_last else n_test
        self.n_test = n_test
        images = torch.from_numpy(stream.test_images[: self.n_scored])
        padded = torch.cat([images, torch.zeros(images.shape[0], 1, dtype=torch.uint8)], 1)
        self.pixels = padded.t().contiguous().to(device)
        self.labels = torch.from_numpy(stream.test_labels[: self.n_scored]).to(device)
        self.maps = torch.from_numpy(stream.maps).to(device)
        self.n_tasks = stream.n_tasks

    def test_inputs(self, task: int) -> torch.Tensor:
        return self.pixels.index_select(0, self.maps[task]).float().div_(255.0).t()

    @torch.no_grad()
    def __call__(self, learner: Learner) -> list[float]:
        was_training = learner.training
        learner.eval()
        correct = torch.stack([(learner(self.test_inputs(t), t).argmax(1) == self.labels).sum()
                               for t in range(self.n_tasks)])
        learner.train(was_training)
        return (correct.double() / self.n_test).tolist()


def task_inputs(stream: TaskStream, schedule: Schedule, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every task's training subset, transformed once and kept on the device as float in [0, 1]."""
    data = []
    for t, subset in enumerate(schedule.subsets):
        idx = subset.numpy()
        x = torch.from_numpy(stream.task_images("train", t, idx)).to(device).float().div_(255.0)
        y = torch.from_numpy(stream.train_labels[idx]).to(device)
        data.append((x, y))
    return data


def run(learner: Learner, stream: TaskStream, schedule: Schedule, spec: dict, device: torch.device,
        progress=sys.stderr) -> tuple[EvalLog, dict]:
    """Train `learner` over the stream; return the evaluation log and timings."""
    evaluate = Evaluator(stream, spec["test_examples_per_task"], device,
                         spec["compat"]["eval_drop_last_test_example"])
    data = task_inputs(stream, schedule, device)
    bs, log_every, n_tasks = spec["batch_size"], spec["log_every"], stream.n_tasks
    log = EvalLog()
    eval_s, train_s, per_task_s = 0.0, 0.0, []
    seen, batch_i, current = 0, 0, -1
    start = time.perf_counter()

    def record(label: int) -> None:
        nonlocal eval_s
        t0 = time.perf_counter()
        log.acc.append(evaluate(learner))
        log.task.append(label)
        log.examples_seen.append(seen)
        eval_s += time.perf_counter() - t0

    learner.train()
    for t in range(n_tasks):
        x_all, y_all = data[t]
        order = schedule.order[t].to(device)
        task_t0 = time.perf_counter()
        task_eval_before = eval_s
        for b0 in range(0, len(order), bs):
            if batch_i % log_every == 0 or t != current:
                record(current if current >= 0 else t)
                current = t
            idx = order[b0: b0 + bs]
            learner.observe(x_all[idx], t, y_all[idx])
            seen += len(idx)
            batch_i += 1
        task_train = time.perf_counter() - task_t0 - (eval_s - task_eval_before)
        train_s += task_train
        per_task_s.append(task_train)
        elapsed = time.perf_counter() - start
        eta = elapsed / (t + 1) * (n_tasks - t - 1)
        print(f"[train] task {t + 1}/{n_tasks} done: {len(order)} examples in {task_train:.2f}s "
              f"({len(order) / max(task_train, 1e-9):.0f} ex/s), elapsed {elapsed:.1f}s, ETA {eta:.1f}s",
              file=progress, flush=True)
    record(current)
    timing = {"wall_s": time.perf_counter() - start, "train_s": train_s, "eval_s": eval_s,
              "per_task_train_s": per_task_s, "examples": seen,
              "examples_per_s": seen / train_s if train_s > 0 else None, "n_evaluations": len(log.task)}
    return log, timing
