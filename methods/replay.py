"""Experience replay as in the MER paper: Algorithm 4 (ER) and Algorithm 5 (ER with task balancing).

Reference: MER `model/eralg4.py`, `eralg5.py` (reference-gem-mer.md section 5.2). Every incoming
example is processed on its own: draw k-1 items from the reservoir memory (methods/memory.py), append
the current example LAST, take one SGD step on the batch loss, then offer the example to the memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .base import Context, Learner
from .memory import ReservoirMemory, RngSwitch


@dataclass(frozen=True)
class ReplaySwitches(RngSwitch):
    """Reference quirks shared by every replay method (defaults = reference behaviour; docs/replay.md)."""

    REFERENCE_RNG: ClassVar[dict] = {"reservoir_randint": "inclusive", "replay_draw": "with_replacement"}
    reservoir_randint: str = "inclusive"      # or "vitter"
    replay_draw: str = "with_replacement"     # or "without_replacement"


class ReplayLearner(Learner):
    """A single-head MLP plus the reservoir memory."""

    def __init__(self, ctx: Context, hp) -> None:
        super().__init__(ctx, hp)
        self.net = self.build_net().to(ctx.device)
        self.memory = ReservoirMemory(ctx.memory, ctx.n_inputs, ctx.device,
                                      randint=hp.reservoir_randint, draw=hp.replay_draw, rng_mode=hp.rng)

    def replay_batch(self, x: torch.Tensor, y: torch.Tensor, current_first: bool):
        """Current example plus min(k-1, stored) replayed items: (x, y, task ids, memory indices)."""
        idx = self.memory.draw_indices(int(self.hp.replay_batch_size))
        m = torch.tensor(idx, dtype=torch.long, device=x.device)
        mx, my, mt = self.memory.x[m], self.memory.y[m], self.memory.t[m]
        parts = [(x[None], y[None]), (mx, my)]
        if not current_first:
            parts.reverse()
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), mt, idx

    def info(self) -> dict:
        return self.memory.info()


class ERAlg4(ReplayLearner):
    """One SGD step on the mean cross-entropy of [k-1 replayed, current] (`eralg4.py`)."""

    @dataclass(frozen=True)
    class Hparams(ReplaySwitches):
        lr: float = 0.1
        replay_batch_size: int = 20     # k-1 (reference default 20)

    def __init__(self, ctx: Context, hp: Hparams) -> None:
        super().__init__(ctx, hp)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr)

    def batch_loss(self, logits, by, t, mem_t):  # noqa: ARG002 - task ids unused by Alg. 4
        return F.cross_entropy(logits, by)

    def example_loss(self, x: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        """The loss of one stream example's step: draw the replayed items, score [replayed..., current]."""
        bx, by, mem_t, _ = self.replay_batch(x, y, current_first=False)
        return self.batch_loss(self.net(bx), by, t, mem_t)

    def observe(self, x, t, y):
        for i in range(x.shape[0]):
            self.opt.zero_grad()
            self.example_loss(x[i], y[i], t).backward()
            self.opt.step()
            self.memory.add(x[i], y[i], t)


def task_balanced_loss(logits: torch.Tensor, y: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Sum over the task ids present of the mean cross-entropy of that task's items (Alg. 5)."""
    ce = F.cross_entropy(logits, y, reduction="none")
    # Items sharing each item's task (k <= ~100, so k^2 is nothing; bincount has no deterministic CUDA kernel).
    same_task = (tasks[:, None] == tasks[None, :]).sum(1)
    return (ce / same_task.to(ce.dtype)).sum()


class ERAlg5(ERAlg4):
    """Alg. 4's draw, but the loss sums per-task mean losses (`eralg5.py`); task ids only balance.

    "fast": one forward over [replayed..., current] and `task_balanced_loss`, the same sum in another order.
    rng "reference": the reference's own computation, so that a run stays on its evaluation log over a whole
    stream (a single forward drifted from it by a test image within 400 examples): one forward per task
    group, groups in order of first appearance with the current task first, the current example first in its
    group and the drawn items in draw order, and the loss summed group by group from 0.0.
    """

    def batch_loss(self, logits, by, t, mem_t):
        tasks = torch.cat([mem_t, torch.tensor([t], dtype=torch.long, device=mem_t.device)])
        return task_balanced_loss(logits, by, tasks)

    def example_loss(self, x, y, t):
        if self.hp.rng != "reference":
            return super().example_loss(x, y, t)
        idx = self.memory.draw_indices(int(self.hp.replay_batch_size))
        groups: dict[int, list[int]] = {t: []}
        for j, task in zip(idx, self.memory.t[idx].tolist()):
            groups.setdefault(task, []).append(j)
        loss = 0.0
        for task, slots in groups.items():
            m = torch.tensor(slots, dtype=torch.long, device=x.device)
            gx, gy = self.memory.x[m], self.memory.y[m]
            if task == t:
                gx, gy = torch.cat([x[None], gx]), torch.cat([y[None], gy])
            loss += F.cross_entropy(self.net(gx), gy)
        return loss
