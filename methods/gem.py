"""GEM (Lopez-Paz & Ranzato, NIPS 2017) and A-GEM (Chaudhry et al., ICLR 2019) on a per-task episodic memory.

GEM follows facebookresearch/GradientEpisodicMemory@34c6b8e `model/gem.py` (reference-gem-mer.md 5.1):
- memory: `patterns_per_experience` slots per task (default: the grid's total memory // n_tasks, 5120 -> 256),
  written as a ring buffer whose counter is NOT reset between tasks, so with batch 1 a task's row holds its
  last n examples; with larger batches the items past the wrap are dropped, as in the reference;
- every step: the mean-CE gradient on each previous task's whole memory row, then the current gradient g;
  if any <g, g_k> < 0, g is replaced by the QP projection against ALL past tasks (`projection.gem_project`,
  quadprog in float64, `v >= memory_strength`, ridge `qp_ridge`), then one SGD step. `projected: zero`
  projects the zero vector instead of g, as A-GEM's TF GEM did (PROJECTED below).
Speed without changing the math: all past-task gradients come from one batched forward and a hand-written
backward (`model.per_task_ce_grads`), bitwise equal to the reference's per-task loop at one thread
(tests/test_gem.py), not k separate passes; a net other than the MLP, a partly written row, or rows of
fewer than 4 slots use one `torch.func.vmap` over tasks (equal to the loop within 1e-7, not bitwise).
Deviation, only when a task has fewer examples than its memory row (never in the scripted runs): the reference
would train on the row's uninitialised slots; here unwritten slots get weight 0 (loss = mean over written slots).

A-GEM follows the A-GEM reference (anchors-systems.md 2.2): the same per-task memory, one reference gradient
per step = mean CE on `sample_size` items drawn uniformly WITHOUT replacement from the written slots of the
previous tasks (the current task is never in the reference set), projected with `projection.agem_project`.

`rng` (the run's compat.rng; docs/gem.md): GEM consumes no RNG while training, as the reference. Under
"reference" it also lays its past-task gradients out as the reference does (the columns of a [P, k] matrix),
so that the float32 dot products and numpy's float64 Gram matrix, q and projected gradient sum in the
reference's order and a run stays on the reference's evaluation log over a whole stream; "fast" keeps the
[k, P] rows and saves that transposing copy every step (its roundings differ, so over a whole stream its
log drifts away from the reference's, to seed-noise size at the end).
A-GEM under "reference" makes facebookresearch/agem's own calls (fc_permute_mnist.py): the reference batch
is all available items in order if there are at most `sample_size`, else
`np.random.choice(available, sample_size, replace=False)` from numpy's global RNG; its task-end per-class fill
is A-GEM's RNG-free per-class ring (the last n // classes examples of each class, at ring positions whose
counters carry over between tasks). "fast" draws both with torch.randperm.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from data_prep.errors import ClreproError

from .base import Context, Learner
from .hparams import choice
from .memory import RngSwitch
from .model import ce_grads, flatten, mlp_layers, per_task_ce_grads, sgd_step
from .projection import MARGIN_MODES, QPError, agem_project, gem_project


MEMORY_FILLS = ("ring", "task_end_per_class")
# What GEM's QP projects when a constraint is violated: "gradient" (GEM: the batch gradient g, so the step is
# the closest vector to g that keeps every past-task loss from rising) or "zero" (facebookresearch/agem's TF
# GEM, cdce810..ae6ef74: its py_func projects row G[t], which no op writes while task t trains, i.e. zeros,
# so a violated step descends along G'v, v >= margin, the past-task gradients alone; measured in docs/gem.md,
# it does not give A-GEM's published GEM row).
PROJECTED = ("gradient", "zero")
# Rows of fewer slots go through vmap: the reference's per-task forward on 1-3 rows takes the BLAS library's
# small-matrix path, which the batched product cannot reproduce bit for bit (measured; tests/test_gem.py).
BATCHED_MIN_SLOTS = 4


class TaskRingMemory:
    """GEM's episodic memory: [n_tasks, n, ...] rows, one per task, filled by a ring buffer (gem.py:159-172)."""

    def __init__(self, n_tasks: int, n: int, n_inputs: int, device: torch.device) -> None:
        self.n = n
        self.x = torch.zeros(n_tasks, n, n_inputs, device=device)
        self.y = torch.zeros(n_tasks, n, dtype=torch.long, device=device)
        self.written = torch.zeros(n_tasks, n, dtype=torch.bool, device=device)
        self.cnt = 0   # shared by all tasks and never reset at a task switch (reference quirk)
        self.class_cnt: torch.Tensor | None = None   # A-GEM's per-class ring counters (rng reference fill)

    def add(self, x: torch.Tensor, y: torch.Tensor, t: int) -> None:
        end = min(self.cnt + y.size(0), self.n)
        eff = end - self.cnt                     # items beyond the wrap are dropped, as the reference
        self.x[t, self.cnt:end].copy_(x[:eff])
        self.y[t, self.cnt:end].copy_(y[:eff])
        self.written[t, self.cnt:end] = True
        self.cnt = 0 if end == self.n else end

    def fill_task(self, x: torch.Tensor, y: torch.Tensor, t: int, n_classes: int, rng: str = "fast") -> None:
        """A-GEM's fill: at the end of task t, n // n_classes random examples of each class (without
        replacement, torch RNG), then random others if a class is short; the row is then complete.
        rng "reference": A-GEM's own RNG-free fill instead (module doc), x and y in the order they were seen."""
        per_class = self.n // n_classes
        if rng == "reference":
            self._fill_task_ring(x, y, t, n_classes, per_class)
            return
        picks = []
        for c in range(n_classes):
            idx = (y == c).nonzero().squeeze(1)
            picks.append(idx[torch.randperm(idx.numel())[:per_class].to(idx.device)])
        chosen = torch.cat(picks)
        if chosen.numel() < self.n:
            rest = torch.ones(y.numel(), dtype=torch.bool, device=y.device)
            rest[chosen] = False
            others = rest.nonzero().squeeze(1)
            chosen = torch.cat([chosen, others[torch.randperm(others.numel())[: self.n - chosen.numel()]
                                               .to(others.device)]])
        k = chosen.numel()
        self.x[t, :k].copy_(x[chosen])
        self.y[t, :k].copy_(y[chosen])
        self.written[t, :k] = True

    def _fill_task_ring(self, x: torch.Tensor, y: torch.Tensor, t: int, n_classes: int, per_class: int) -> None:
        """agem fc_permute_mnist.py: every example of class c is written to slot c * per_class + count[c] of the
        task's block, count[c] = (count[c] + 1) % per_class, counters never reset; the last writes are kept."""
        if self.class_cnt is None:
            self.class_cnt = torch.zeros(n_classes, dtype=torch.long)
        for c in range(n_classes):
            idx = (y == c).nonzero().squeeze(1)
            m = idx.numel()
            first = max(0, m - per_class)            # earlier examples of the class are overwritten
            slots = c * per_class + (self.class_cnt[c] + torch.arange(first, m)) % per_class
            slots = slots.to(self.x.device)
            self.x[t, slots] = x[idx[first:]]
            self.y[t, slots] = y[idx[first:]]
            self.written[t, slots] = True
            self.class_cnt[c] = (self.class_cnt[c] + m) % per_class

    def rows(self, tasks: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x [k, n, D], y [k, n], written [k, n]) of the given tasks; a view when they are 0..k-1."""
        if tasks == list(range(len(tasks))):
            k = len(tasks)
            return self.x[:k], self.y[:k], self.written[:k]
        idx = torch.tensor(tasks, device=self.x.device)
        return self.x[idx], self.y[idx], self.written[idx]

    def filled(self) -> list[int]:
        return self.written.sum(1).tolist()


def patterns_per_task(memory: int, n_tasks: int, override: int | None, method: str) -> int:
    n = override if override is not None else memory // n_tasks
    if n < 1:
        raise ClreproError(f"{method} needs at least one memory slot per task, but memory {memory} over "
                           f"{n_tasks} tasks gives {n}; run it with memory >= {n_tasks}")
    return n


def _mean_ce(params, net, x, y):
    return F.cross_entropy(functional_call(net, params, (x,)), y)


def _masked_mean_ce(params, net, x, y, w):
    ce = F.cross_entropy(functional_call(net, params, (x,)), y, reduction="none")
    return (ce * w).sum() / w.sum()


class _PerTaskMemoryLearner(Learner):
    """What GEM and A-GEM share: the MLP with SGD, the per-task ring memory, and the tasks seen so far.

    Gradients are `model.ce_grads` and steps `model.sgd_step`: bitwise autograd's and torch.optim.SGD's.
    """

    NAME = ""   # the registry name, for messages

    def __init__(self, ctx: Context, hp) -> None:
        super().__init__(ctx, hp)
        self.net = self.build_net()
        self.layers = mlp_layers(self.net)
        self.params = list(self.net.parameters())
        self.n_memories = patterns_per_task(ctx.memory, ctx.n_tasks, hp.patterns_per_experience, self.NAME)
        self.memory = TaskRingMemory(ctx.n_tasks, self.n_memories, ctx.n_inputs, ctx.device)
        self.observed_tasks: list[int] = []
        self.old_task = -1
        self.steps = self.checks = self.projections = 0

    @classmethod
    def check_memory(cls, hp, memory: int, n_tasks: int) -> None:
        patterns_per_task(memory, n_tasks, hp.patterns_per_experience, cls.NAME)

    def remember(self, x: torch.Tensor, t: int, y: torch.Tensor) -> list[int]:
        """Store the batch in task t's memory row (before the step, as the reference); return the past tasks."""
        self.steps += 1
        if t != self.old_task:
            self.observed_tasks.append(t)
            self.old_task = t
        if self.hp.memory_fill == "ring":
            self.memory.add(x, y, t)
        return self.observed_tasks[:-1]

    def descend(self, grads: list[torch.Tensor], flat: torch.Tensor | None = None) -> None:
        """One SGD step along grads, or along `flat`, a projection of them concatenated."""
        if flat is not None:
            grads = [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)]
        sgd_step(self.params, grads, self.hp.lr)

    def end_task(self, t: int, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.hp.memory_fill == "task_end_per_class":
            self.memory.fill_task(x, y, t, self.ctx.n_outputs, self.hp.rng)

    def info(self) -> dict:
        return {"patterns_per_experience": self.n_memories, "memory_filled_per_task": self.memory.filled(),
                "steps": self.steps, "constraint_checks": self.checks, "projections": self.projections}


class GEM(_PerTaskMemoryLearner):
    """Gradient Episodic Memory, exact QP projection as the reference `project2cone2`."""

    NAME = "gem"

    @dataclass(frozen=True)
    class Hparams(RngSwitch):                  # rng "reference": the reference's memory layout (module doc)
        lr: float
        memory_strength: float                  # gamma: lower bound on the dual variables (reference)
        qp_ridge: float = 1e-3                  # eps*I added to the Gram matrix (GEM's PSD fix; MER's copy: 0)
        # "lower_bound": v >= gamma (code); "additive": v* + gamma (paper)
        margin_mode: str = choice("lower_bound", MARGIN_MODES)
        patterns_per_experience: int | None = None   # None: total memory // n_tasks
        # "ring": GEM's buffer; "task_end_per_class": A-GEM's fill
        memory_fill: str = choice("ring", MEMORY_FILLS)
        projected: str = choice("gradient", PROJECTED)     # what a violated step projects: "zero" = A-GEM's TF GEM

    def __init__(self, ctx: Context, hp: Hparams) -> None:
        super().__init__(ctx, hp)
        self.qp_calls = 0
        self.max_condition = 0.0
        self._grad_full = vmap(grad(_mean_ce), in_dims=(None, None, 0, 0))
        self._grad_masked = vmap(grad(_masked_mean_ce), in_dims=(None, None, 0, 0, 0))

    def past_task_grads(self, tasks: list[int]) -> torch.Tensor:
        """[k, P]: the mean-CE gradient on each given task's memory row, in `parameters()` order."""
        x, y, written = self.memory.rows(tasks)
        full = bool(written.all())
        if full and y.size(1) >= BATCHED_MIN_SLOTS:
            return per_task_ce_grads(self.layers, x, y)
        params = {name: p.detach() for name, p in self.net.named_parameters()}
        if full:
            grads = self._grad_full(params, self.net, x, y)
        else:
            grads = self._grad_masked(params, self.net, x, y, written.to(x.dtype))
        return torch.cat([grads[name].reshape(len(tasks), -1) for name, _ in self.net.named_parameters()], 1)

    def observe(self, x, t, y):
        past = self.remember(x, t, y)
        G = self.past_task_grads(past) if past else None
        grads = ce_grads(self.layers, x, y)
        g_tilde = None
        if G is not None:
            self.checks += 1
            g = flatten(grads)
            if self.hp.rng == "reference":
                # the reference's layout: its gradients are the columns of a [P, k] matrix, so its float32
                # dot products and numpy's float64 products sum in another order than on [k, P] rows
                G = G.t().contiguous()
                dotp = torch.mm(g.view(1, -1), G).view(-1)
                G = G.t()
            else:
                dotp = G @ g
            # `not >= 0` rather than `< 0`: a NaN dot product counts as violated, so it reaches the QP and
            # raises there instead of silently skipping the projection (the reference skips it).
            if bool((~(dotp >= 0)).any()):
                g_tilde = self._project(g, G, t, past)
        self.descend(grads, g_tilde)

    def _project(self, g: torch.Tensor, G: torch.Tensor, t: int, past: list[int]) -> torch.Tensor:
        self.qp_calls += 1
        if self.hp.projected == "zero":
            g = torch.zeros_like(g)
        try:
            res = gem_project(g, G, self.hp.memory_strength, self.hp.qp_ridge, self.hp.margin_mode)
        except QPError as exc:
            raise ClreproError(
                f"GEM QP failed at step {self.steps} (task {t}, constraints from past tasks {past}): {exc}; "
                f"qp_ridge={self.hp.qp_ridge:g} - raise qp_ridge (GEM uses 1e-3) or look for NaN/inf "
                f"gradients (lower lr)") from exc
        self.projections += 1
        self.max_condition = max(self.max_condition, res.condition)
        return res.g_tilde

    def info(self) -> dict:
        return {**super().info(), "qp_calls": self.qp_calls, "qp_failures": 0,
                "max_gram_condition": self.max_condition, "margin_mode": self.hp.margin_mode,
                "qp_ridge": self.hp.qp_ridge, "projected": self.hp.projected}


class AGEM(_PerTaskMemoryLearner):
    """Averaged GEM: one reference gradient from a sample of the past tasks' memory, closed-form projection."""

    NAME = "agem"

    @dataclass(frozen=True)
    class Hparams(RngSwitch):                  # rng: "reference" = A-GEM's own draw and fill (module doc)
        lr: float
        sample_size: int = 256                 # A-GEM's eps_mem_batch, drawn without replacement
        patterns_per_experience: int | None = None   # None: total memory // n_tasks
        # "ring": GEM's buffer; "task_end_per_class": A-GEM's fill
        memory_fill: str = choice("ring", MEMORY_FILLS)

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.sample_size < 1:
                raise ClreproError(f"agem sample_size must be >= 1, not {self.sample_size}")

    def __init__(self, ctx: Context, hp: Hparams) -> None:
        super().__init__(ctx, hp)

    def reference_sample(self, past: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """min(sample_size, available) written past-task items, uniformly without replacement (torch RNG;
        rng "reference": A-GEM's numpy draw, module doc)."""
        x, y, written = self.memory.rows(past)
        available = written.reshape(-1).nonzero().squeeze(1)   # gather only the drawn rows, not the memory
        n, k = available.numel(), self.hp.sample_size
        if self.hp.rng == "reference":
            order = torch.arange(n) if n <= k else torch.from_numpy(np.random.choice(n, k, replace=False))
        else:
            order = torch.randperm(n)[:k]
        pick = available[order.to(available.device)]
        return x.reshape(-1, x.size(-1))[pick], y.reshape(-1)[pick]

    def observe(self, x, t, y):
        past = self.remember(x, t, y)
        g_ref = None
        if past:
            mx, my = self.reference_sample(past)
            g_ref = flatten(ce_grads(self.layers, mx, my))
        grads = ce_grads(self.layers, x, y)
        g_tilde = None
        if g_ref is not None:
            self.checks += 1
            g, projected = agem_project(flatten(grads), g_ref)
            if projected:
                self.projections += 1
                g_tilde = g
        self.descend(grads, g_tilde)

    def info(self) -> dict:
        return {**super().info(), "sample_size": self.hp.sample_size}
