"""Baselines of GEM/MER: online SGD ("single"), independent nets, task-specific input layers, EWC.

Each follows the reference code (reference-gem-mer.md section 5.1); the comments name its quirks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from data_prep.errors import ClreproError

from .base import Context, Learner
from .hparams import choice
from .memory import RngSwitch
from .model import ce_grads, init_mlp, mlp, mlp_layers, sgd_step


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

    Uses PyTorch's default Linear initialisation with zero biases, as the reference does, unless the protocol
    names an initialisation (`model.init`), which then applies to every layer as for the other methods.
    """

    Hparams = LrHparams

    def __init__(self, ctx: Context, hp: Learner.Hparams) -> None:
        super().__init__(ctx, hp)
        nh = ctx.n_hiddens
        self.inputs = nn.ModuleList(nn.Linear(ctx.n_inputs, nh) for _ in range(ctx.n_tasks))
        self.shared = mlp([nh] * ctx.n_layers + [ctx.n_outputs], xavier=False)
        if ctx.init is not None:
            init_mlp(self, ctx.init)
        else:
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


# How EWC estimates the Fisher diagonal (hyper-parameter `fisher`):
# task_batch: GEM/MER ewc.py, the squared gradient of one batch-mean loss over the first n_memories examples of
#   the finished task; one (F, theta*) pair per past task, all kept.
# running: A-GEM's TF1 EWC (model/model.py create_fisher_ops, task_updates): the squared batch-mean gradient
#   of every training step, summed over `fisher_update_after` steps and folded into an exponential moving
#   average (decay `fisher_ema_decay`) that runs on across tasks; at a task's end F = that average, min-max
#   normalised over all parameters, and (F, theta*) REPLACES the previous pair (one anchor, the last task).
#   (The normalisation makes F's scale, hence the d / n factor of each fold, irrelevant; decay d is not.)
FISHERS = ("task_batch", "running")
MINMAX_EPS = 1e-32  # A-GEM model.py EPSILON in (F - min) / (max - min + EPSILON)


class EWC(Learner):
    """Elastic Weight Consolidation as in GEM/MER `ewc.py` (fisher: task_batch) or A-GEM's TF1 code
    (fisher: running), see FISHERS.

    The penalty is lambda * sum_k F_k * (theta - theta*_k)^2 without the usual 1/2 in both codes. The sum is
    kept as two running sums, A = sum_k F_k and B = sum_k F_k theta*_k, so the penalty A theta^2 - 2 B theta
    (plus a constant) has the reference's gradient at O(1) instead of O(tasks) cost per step (the GEM
    reference loops over every past task and parameter: 13 ex/s at T=100); `running` keeps one pair, A = F.
    Under `rng: reference` (task_batch) the step is the reference's own loop instead: its rounding, which
    the running sums do not have, is what a run needs to stay on the reference's evaluation log where the
    stiff penalty amplifies last-bit differences (docs/gem.md, `compat.rng`).
    """

    @dataclass(frozen=True)
    class Hparams(RngSwitch):
        lr: float
        memory_strength: float
        n_memories: int = 0
        fisher: str = choice("task_batch", FISHERS)
        fisher_update_after: int = 10
        fisher_ema_decay: float = 0.9

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.fisher == "task_batch" and self.n_memories < 1:
                raise ClreproError("ewc with fisher: task_batch needs n_memories >= 1 (the examples its Fisher "
                                   "is computed on); set it in the protocol file")
            if self.fisher_update_after < 1 or not 0.0 < self.fisher_ema_decay <= 1.0:
                raise ClreproError(f"ewc needs fisher_update_after >= 1 and 0 < fisher_ema_decay <= 1, got "
                                   f"{self.fisher_update_after} and {self.fisher_ema_decay}")

    def __init__(self, ctx: Context, hp: Hparams) -> None:
        super().__init__(ctx, hp)
        self.net = self.build_net()
        self.layers = mlp_layers(self.net)
        self.params = list(self.net.parameters())
        self.current_task = 0
        self.mem_x = self.mem_y = None
        self.fisher_sum: list[torch.Tensor] | None = None   # A
        self.anchor_sum: list[torch.Tensor] | None = None   # B
        self.reference_loop = hp.rng == "reference" and hp.fisher == "task_batch"
        self.per_task: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []   # (F_k, theta*_k), that loop's
        if hp.fisher == "running":
            self.step_in_task = 0
            self.window = [torch.zeros_like(p) for p in self.params]    # A-GEM's tmp_fisher_vars
            self.running = [torch.zeros_like(p) for p in self.params]   # A-GEM's running_fisher_vars

    def _consolidate(self) -> None:
        if self.hp.fisher == "running":
            lo = torch.stack([f.min() for f in self.running]).min()
            hi = torch.stack([f.max() for f in self.running]).max()
            fisher = [(f - lo) / (hi - lo + MINMAX_EPS) for f in self.running]
            self.fisher_sum = fisher
            self.anchor_sum = [f * p.detach() for f, p in zip(fisher, self.params)]
            for w in self.window:
                w.zero_()
            self.step_in_task = 0
            return
        fisher = [g.pow(2) for g in ce_grads(self.layers, self.mem_x, self.mem_y)]
        if self.reference_loop:
            self.per_task.append((fisher, [p.detach().clone() for p in self.params]))
            return
        anchor = [f * p.detach() for f, p in zip(fisher, self.net.parameters())]
        if self.fisher_sum is None:
            self.fisher_sum, self.anchor_sum = fisher, anchor
        else:
            self.fisher_sum = [a + f for a, f in zip(self.fisher_sum, fisher)]
            self.anchor_sum = [b + fa for b, fa in zip(self.anchor_sum, anchor)]

    @torch.no_grad()
    def _track_fisher(self, grads: list[torch.Tensor]) -> None:
        """A-GEM's per-step order: every fisher_update_after-th step first folds the window into the average
        (running = (1 - d) running + d / n * window) and empties it, then adds this step's squared gradient."""
        n, d = self.hp.fisher_update_after, self.hp.fisher_ema_decay
        if (self.step_in_task + 1) % n == 0:
            for r, w in zip(self.running, self.window):
                r.mul_(1 - d).add_(w, alpha=d / n)
                w.zero_()
        for w, g in zip(self.window, grads):
            w.addcmul_(g, g)
        self.step_in_task += 1

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

    def reference_grads(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """`ewc.py`'s gradient as it computes it: the loss is CE plus, per past task and parameter in order,
        reg * F * (p - theta*)^2 summed and added one term at a time, and one autograd backward (O(tasks))."""
        loss = F.cross_entropy(self.net(x), y)
        for fisher, anchor in self.per_task:
            for p, f, a in zip(self.params, fisher, anchor):
                term = self.hp.memory_strength * f
                term = term * (p - a).pow(2)
                loss += term.sum()
        return list(torch.autograd.grad(loss, self.params))

    def observe(self, x, t, y):
        if t != self.current_task:
            self._consolidate()
            self.current_task = t
            self.mem_x = self.mem_y = None
        if self.hp.fisher == "task_batch":
            if self.mem_x is None:
                self.mem_x, self.mem_y = x.detach().clone(), y.detach().clone()
            elif self.mem_x.size(0) < self.hp.n_memories:
                self.mem_x = torch.cat([self.mem_x, x.detach()])[: self.hp.n_memories]
                self.mem_y = torch.cat([self.mem_y, y.detach()])[: self.hp.n_memories]
        if self.reference_loop and self.per_task:
            sgd_step(self.params, self.reference_grads(x, y), self.hp.lr)
            return
        grads = ce_grads(self.layers, x, y)
        if self.hp.fisher == "running":
            self._track_fisher(grads)
        if self.fisher_sum is not None:
            self.add_penalty_grad(grads)
        sgd_step(self.params, grads, self.hp.lr)
