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
from .hparams import choice
from .memory import DRAW_MODES, RANDINT_MODES, ReservoirMemory, RngSwitch
from .model import ce_grads, mlp_layers, sgd_step


@dataclass(frozen=True)
class ReplaySwitches(RngSwitch):
    """Reference quirks shared by every replay method (defaults = reference behaviour; docs/replay.md)."""

    REFERENCE_RNG: ClassVar[dict] = {"reservoir_randint": "inclusive", "replay_draw": "with_replacement"}
    reservoir_randint: str = choice("inclusive", RANDINT_MODES)
    replay_draw: str = choice("with_replacement", DRAW_MODES)


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
    """One SGD step on the mean cross-entropy of [k-1 replayed, current] (`eralg4.py`).

    The step is `model.ce_grads` + `model.sgd_step`: bitwise autograd and torch.optim.SGD, without their
    per-step overhead (tests/test_mer.py).
    """

    @dataclass(frozen=True)
    class Hparams(ReplaySwitches):
        lr: float = 0.1
        replay_batch_size: int = 20     # k-1 (reference default 20)

    def __init__(self, ctx: Context, hp: Hparams) -> None:
        super().__init__(ctx, hp)
        self.layers = mlp_layers(self.net)
        self.params = list(self.net.parameters())

    def item_weights(self, t: int, mem_t: torch.Tensor) -> torch.Tensor | None:  # noqa: ARG002 - Alg. 4: none
        """Each batch item's factor on its cross-entropy in the summed loss; None: the batch mean."""
        return None

    def example_step(self, x: torch.Tensor, y: torch.Tensor, t: int) -> None:
        """One stream example's step: draw the replayed items, descend on [replayed..., current]."""
        bx, by, mem_t, _ = self.replay_batch(x, y, current_first=False)
        sgd_step(self.params, ce_grads(self.layers, bx, by, self.item_weights(t, mem_t)), self.hp.lr)

    def observe(self, x, t, y):
        for i in range(x.shape[0]):
            self.example_step(x[i], y[i], t)
            self.memory.add(x[i], y[i], t)


def task_balanced_weights(tasks: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1 / (number of items sharing each item's task): Alg. 5's factor on each item's cross-entropy.

    k <= ~100, so the k^2 comparison is nothing; bincount has no deterministic CUDA kernel.
    """
    same_task = (tasks[:, None] == tasks[None, :]).sum(1)
    return 1.0 / same_task.to(dtype)


def task_balanced_loss(logits: torch.Tensor, y: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Sum over the task ids present of the mean cross-entropy of that task's items (Alg. 5)."""
    return (F.cross_entropy(logits, y, reduction="none") * task_balanced_weights(tasks, logits.dtype)).sum()


class ERAlg5(ERAlg4):
    """Alg. 4's draw, but the loss sums per-task mean losses (`eralg5.py`); task ids only balance.

    "fast": one forward over [replayed..., current] and the gradient of `task_balanced_loss`, the same sum in
    another order.
    rng "reference": the reference's own computation, so that a run stays on its evaluation log over a whole
    stream (a single forward drifted from it by a test image within 400 examples): one forward per task
    group, groups in order of first appearance with the current task first, the current example first in its
    group and the drawn items in draw order, and the loss summed group by group from 0.0.
    """

    def item_weights(self, t, mem_t):
        return task_balanced_weights(torch.cat([mem_t, torch.tensor([t], dtype=torch.long, device=mem_t.device)]))

    def example_step(self, x, y, t):
        if self.hp.rng != "reference":
            return super().example_step(x, y, t)
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
        self.net.zero_grad()
        loss.backward()        # autograd here: its accumulation order over the groups is the reference's
        sgd_step(self.params, [p.grad for p in self.params], self.hp.lr)
