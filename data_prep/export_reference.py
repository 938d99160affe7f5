"""Export a stream in the GEM/MER on-disk format so the reference scripts can read our streams.

Format (GEM data/mnist_*.py): torch.save([tasks_tr, tasks_te]), each a list of T entries
[task_param, X float32 [N, 784] in [0, 1], Y int64 [N]], with the full 60k / 10k split per task.
The task parameter is the rotation angle, or the permutation indices (GEM stored only a string).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .atomic import atomic_path
from .streams import TaskStream


def to_reference(stream: TaskStream) -> list:
    tasks = {"train": [], "test": []}
    for t in range(stream.n_tasks):
        param = stream.manifest["task_params"][t]
        if param == "permutation":
            param = torch.from_numpy(stream.maps[t].copy())
        for split, labels in (("train", stream.train_labels), ("test", stream.test_labels)):
            x = torch.from_numpy(stream.task_images(split, t)).float().div_(255.0)
            tasks[split].append([param, x, torch.from_numpy(labels.copy())])
    return [tasks["train"], tasks["test"]]


def export(stream: TaskStream, out: Path) -> None:
    with atomic_path(out) as tmp:
        torch.save(to_reference(stream), tmp)
