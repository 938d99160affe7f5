"""Baselines of GEM/MER: online SGD ("single"), independent nets, task-specific input layers, EWC.

Each follows the reference code (reference-gem-mer.md section 5.1); the comments name its quirks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Context, Learner
from .memory import RngSwitch
from .model import ce_grads, mlp, mlp_layers, sgd_step


@dataclass(frozen=True)
class LrHparams(Learner.Hparams, RngSwitch):
    """lr, and the run's compat.rng: these baselines consume no RNG while training, as the reference code."""


class Online(Learner):
    """Plain SGD on the stream (GEM `single.py`, MER `online.py`).

    Every SGD step here and in the other baselines is `model.ce_grads` + `model.sgd_step`: bitwise
    zero_grad, cross_entropy(...).backward() and torch.optim.SGD's step, without autograd's overhead.
    """

    Hparams = LrHparams

    def __init__(self, ctx: Context, hp: Learner.Hparams) -> None:
        super().__init__(ctx, hp)
        self.net = self.build_net()
        self.layers = mlp_layers(self.net)
        self.params = list(self.net.parameters())

    def observe(self, x, t, y):
        sgd_step(self.params, ce_grads(self.layers, x, y), self.hp.lr)


class Independent(Learner):
    """One MLP per task, hidden width int(n_hiddens / T) (5 for T=20, 1 for T=100), as the reference.

    With `finetune`, net t starts from net t-1's weights at its first batch, i.e. after the boundary
    evaluation, so R[t-1, t] is net t's untouched initialisation and FWT is exactly 0.
    """

    @dataclass(frozen=True)
    class Hparams(RngSwitch):
        lr: float
        finetune: bool = True

    def __init__(self, ctx: Context, hp: Hparams) -> None:
        super().__init__(ctx, hp)
        width = max(1, ctx.n_hiddens // ctx.n_tasks)
        self.nets = nn.ModuleList(mlp([ctx.n_inputs] + [width] * ctx.n_layers + [ctx.n_outputs], init=ctx.init)
                                  for _ in range(ctx.n_tasks))
        self.old_task = -1

    def forward(self, x, t):
        return self.nets[t](x)

    def eval_mlp(self, t):
        return mlp_layers(self.nets[t])

    def observe(self, x, t, y):
        if self.hp.finetune and t > 0 and t != self.old_task:
            self.nets[t].load_state_dict(self.nets[self.old_task].state_dict())
        self.old_task = t
        sgd_step(list(self.nets[t].parameters()), ce_grads(mlp_layers(self.nets[t]), x, y), self.hp.lr)


class TaskInput(Learner):
    """A task-specific input layer, then one fewer shared hidden layer (GEM `multimodal`, MER `taskinput`).

    Uses PyTorch's default Linear initialisation with zero biases, as the reference does.
    """

    Hparams = LrHparams

    def __init__(self, ctx: Context, hp: Learner.Hparams) -> None:
        super().__init__(ctx, hp)
        nh = ctx.n_hiddens
        self.inputs = nn.ModuleList(nn.Linear(ctx.n_inputs, nh) for _ in range(ctx.n_tasks))
        self.shared = mlp([nh] * ctx.n_layers + [ctx.n_outputs], xavier=False)
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.zeros_(layer.bias)

    def forward(self, x, t):
        return self.shared(F.relu(self.inputs[t](x)))

    def eval_mlp(self, t):
        shared = mlp_layers(self.shared)
        return [self.inputs[t], *shared] if shared else None

    def observe(self, x, t, y):
        layers = self.eval_mlp(t)
        sgd_step([p for lin in layers for p in (lin.weight, lin.bias)], ce_grads(layers, x, y), self.hp.lr)


class EWC(Learner):
    """Elastic Weight Consolidation as in GEM/MER `ewc.py`.

    Fisher = squared gradient of ONE batch-mean loss over the first `n_memories` examples of the finished
    task, computed at the first batch of the next task; one (F, theta*) pair per past task; penalty
    lambda * sum_k F_k * (theta - theta*_k)^2 without the usual 1/2.

    The per-task sum is kept as two running sums, A = sum_k F_k and B = sum_k F_k theta*_k, so the penalty
    A theta^2 - 2 B theta (plus a constant) has the reference's gradient at O(1) instead of O(tasks) cost
    per step (the reference loops over every past task and parameter: 13 ex/s at T=100).
    """

    @dataclass(frozen=True)
    class Hparams(RngSwitch):
        lr: float
        n_memories: int
        memory_strength: float

    def __init__(self, ctx: Context, hp: Hparams) -> None:
        super().__init__(ctx, hp)
        self.net = self.build_net()
        self.layers = mlp_layers(self.net)
        self.params = list(self.net.parameters())
        self.current_task = 0
        self.mem_x = self.mem_y = None
        self.fisher_sum: list[torch.Tensor] | None = None   # A
        self.anchor_sum: list[torch.Tensor] | None = None   # B

    def _consolidate(self) -> None:
        fisher = [g.pow(2) for g in ce_grads(self.layers, self.mem_x, self.mem_y)]
        anchor = [f * p.detach() for f, p in zip(fisher, self.net.parameters())]
        if self.fisher_sum is None:
            self.fisher_sum, self.anchor_sum = fisher, anchor
        else:
            self.fisher_sum = [a + f for a, f in zip(self.fisher_sum, fisher)]
            self.anchor_sum = [b + fa for b, fa in zip(self.anchor_sum, anchor)]

    def penalty(self) -> torch.Tensor:
        """lambda * sum_k F_k (theta - theta*_k)^2, up to a constant in theta (the loss term; tests' oracle)."""
        total = sum(((a * p - 2 * b) * p).sum() for p, a, b in zip(self.net.parameters(), self.fisher_sum, self.anchor_sum))
        return self.hp.memory_strength * total

    @torch.no_grad()
    def add_penalty_grad(self, grads: list[torch.Tensor]) -> None:
        """Add the penalty's gradient to grads without an autograd graph: the same ops autograd runs for
        `penalty()` (lam*(a*p - 2b) + (lam*p)*a), so the step is bitwise the same (tests/test_baselines.py)."""
        for g, p, a, b in zip(grads, self.net.parameters(), self.fisher_sum, self.anchor_sum):
            lam = torch.full_like(p, self.hp.memory_strength)
            g.add_(lam * (a * p - 2 * b) + (lam * p) * a)

    def observe(self, x, t, y):
        if t != self.current_task:
            self._consolidate()
            self.current_task = t
            self.mem_x = self.mem_y = None
        if self.mem_x is None:
            self.mem_x, self.mem_y = x.detach().clone(), y.detach().clone()
        elif self.mem_x.size(0) < self.hp.n_memories:
            self.mem_x = torch.cat([self.mem_x, x.detach()])[: self.hp.n_memories]
            self.mem_y = torch.cat([self.mem_y, y.detach()])[: self.hp.n_memories]
        grads = ce_grads(self.layers, x, y)
        if self.fisher_sum is not None:
            self.add_penalty_grad(grads)
        sgd_step(self.params, grads, self.hp.lr)
