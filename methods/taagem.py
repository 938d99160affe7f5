"""TA-A-GEM (Lamers et al., ICCV-W 2023): A-GEM's projection with a task-agnostic clustering memory.

The method never looks at the task id: the memory is filled from the stream (`sampling_rate` samples per
batch, after the update, interleaved with training) and the reference batch is drawn from ALL stored
samples, current task included (methods/clustering_memory.py). Memory budget of the grid cell:
Q = memory // (P * num_pools) clusters per pool unless `clusters_per_pool` is given, so the store never
exceeds Q * P * num_pools <= memory samples.

Deviations from the only stored implementation (a third-party reimplementation, anchors-systems.md 2.6),
which we follow the paper's description over: samples are written during training, right after the step
on their batch (not in a second pass after each epoch); a projection failure raises instead of silently
taking an unprojected step; the reference batch size is a hyper-parameter (`sample_size`) instead of
len(batch), because the MER protocol's batch of 1 would give a one-sample reference gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Context, Learner
from .clustering_memory import EVICTIONS, OPENINGS, ClusteringMemory, check_sizes
from .hparams import choice
from .model import assign_flat_grad, flat_grad
from .projection import agem_project


class TALRScheduler:
    """The TA learning-rate scheduler (anchors 2.6), stepped on every batch loss.

    No relative improvement of 1e-4 over the best loss for more than `patience` steps -> lr *= decay
    (floored at min_lr); loss above best + jump for more than `patience` consecutive steps (a task switch
    seen from the loss alone) -> lr back to its initial value, best <- current loss.
    """

    def __init__(self, opt: torch.optim.Optimizer, patience: int = 5, decay: float = 0.9999,
                 min_lr: float = 1e-5, jump: float = 1.0, rel_improvement: float = 1e-4) -> None:
        self.opt, self.patience, self.decay, self.min_lr, self.jump = opt, patience, decay, min_lr, jump
        self.rel = rel_improvement
        self.lr0 = opt.param_groups[0]["lr"]
        self.best = float("inf")
        self.stale = self.high = 0
        self.resets = 0

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def _set(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def step(self, loss: float) -> None:
        if loss > self.best + self.jump:
            self.high += 1
            if self.high > self.patience:
                self._set(self.lr0)
                self.best, self.stale, self.high = loss, 0, 0
                self.resets += 1
                return
        else:
            self.high = 0
        if loss < self.best * (1 - self.rel):
            self.best, self.stale = loss, 0
        else:
            self.stale += 1
            if self.stale > self.patience:
                self._set(max(self.lr * self.decay, self.min_lr))


class TAAGEM(Learner):
    @dataclass(frozen=True)
    class Hparams:
        lr: float
        sample_size: int = 10                 # reference batch (the paper's batch size; see module doc)
        samples_per_cluster: int = 3          # P, "as per paper"
        num_pools: int = 10                   # one per MNIST class
        clusters_per_pool: int | None = None  # Q; None = memory // (P * num_pools)
        sampling_rate: int = 1                # samples written to memory per batch
        eviction: str = choice("fifo", EVICTIONS)
        cluster_opening: str = choice("singleton", OPENINGS)   # methods/clustering_memory.py
        lr_scheduler: bool = False            # TA scheduler; off: with batch 1 it reacts to one example's loss
        sched_patience: int = 5
        sched_decay: float = 0.9999
        sched_min_lr: float = 1e-5
        sched_jump: float = 1.0

    @staticmethod
    def clusters_per_pool(hp: Hparams, memory: int) -> int:
        """Q: set, or as many clusters of P samples as the memory holds over the pools."""
        return hp.clusters_per_pool if hp.clusters_per_pool is not None else \
            memory // (hp.samples_per_cluster * hp.num_pools)

    @classmethod
    def check_memory(cls, hp: Hparams, memory: int, n_tasks: int) -> None:
        check_sizes(hp.num_pools, cls.clusters_per_pool(hp, memory), hp.samples_per_cluster)

    def __init__(self, ctx: Context, hp: Hparams) -> None:
        super().__init__(ctx, hp)
        self.net = self.build_net()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr)
        q = self.clusters_per_pool(hp, ctx.memory)
        self.memory = ClusteringMemory(ctx.n_inputs, hp.num_pools, q, hp.samples_per_cluster, hp.eviction,
                                       ctx.device, opening=hp.cluster_opening)
        self.sched = TALRScheduler(self.opt, hp.sched_patience, hp.sched_decay, hp.sched_min_lr,
                                   hp.sched_jump) if hp.lr_scheduler else None
        self.params = list(self.net.parameters())
        self.n_steps = self.n_projected = 0

    def _grad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.opt.zero_grad()
        loss = F.cross_entropy(self.net(x), y)
        loss.backward()
        return flat_grad(self.params), loss.detach()

    def observe(self, x, t, y):  # noqa: ARG002 - task agnostic: t is never used
        self.n_steps += 1
        if len(self.memory):
            xr, yr = self.memory.sample(self.hp.sample_size)
            g_ref, _ = self._grad(xr, yr)
            g, loss = self._grad(x, y)
            g, projected = agem_project(g, g_ref)
            self.n_projected += int(projected)
            assign_flat_grad(self.params, g)
        else:
            _, loss = self._grad(x, y)
        self.opt.step()
        if self.sched is not None:
            self.sched.step(float(loss))   # the scheduler's only host sync
        pick = torch.randperm(len(y))[: self.hp.sampling_rate]
        for i in pick.tolist():
            self.memory.add(x[i], int(y[i]))

    def info(self) -> dict:
        m = self.memory
        out = {"Q_clusters_per_pool": m.Q, "P_samples_per_cluster": m.P, "num_pools": m.n_pools,
               "pools_used": len(m.pool_of), "samples_stored": len(m), "samples_bound": m.bound,
               "samples_per_pool": m.pool_sizes(), "evicted": m.evicted, "dropped_no_pool": m.dropped,
               "steps": self.n_steps, "projections": self.n_projected, "eviction": m.eviction,
               "cluster_opening": m.opening, "clusters_per_pool_used": list(m.n_clusters)}
        if self.sched is not None:
            out.update(final_lr=self.sched.lr, lr_resets=self.sched.resets)
        return out
