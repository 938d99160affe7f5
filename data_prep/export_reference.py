"""Export a stream in the GEM/MER on-disk format so the reference scripts can read our streams.

Format (GEM data/mnist_*.py): torch.save([tasks_tr, tasks_te]), each a list of T entries
[task_param, X float32 [N, 784] in [0, 1], Y int64 [N]], with the full 60k / 10k split per task.
The task parameter is the rotation angle, or the permutation indices (GEM stored only a string).
A class split fits the format too (each entry holds its own N): a task's entry is the images of its classes
with their task labels, and its parameter the list of its classes. Note that the reference main.py sizes
its output layer from the largest label in the file (2 outputs for a split into pairs, where clrepro keeps
the 10 of MNIST).
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
        for split in ("train", "test"):
            index, labels = stream.task_split(split, t)
            x = torch.from_numpy(stream.task_images(split, t, index)).float().div_(255.0)
            tasks[split].append([param, x, torch.from_numpy(labels)])
    return [tasks["train"], tasks["test"]]


def export(stream: TaskStream, out: Path) -> None:
    with atomic_path(out) as tmp:
        torch.save(to_reference(stream), tmp)
