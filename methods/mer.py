"""Meta-Experience Replay (Riemer et al., ICLR 2019): Algorithms 1, 6 and 7 of the MER code.

Reference: MER `model/meralg1.py`, `meralg6.py`, `meralg7.py` (reference-gem-mer.md section 5.2, pitfalls
16-18). Per incoming example: draw a batch of the current example plus k-1 reservoir items, take one
plain SGD step per item in order, then move the weights only part of the way (Reptile):
theta <- w0 + c * (theta - w0). The memory gets the example after the update.

Speed without changing the math: the parameters live in ONE flat vector (the net's parameters are
views into it), so a Reptile snapshot/interpolation is two vector ops instead of deepcopy(state_dict);
the k single-example steps run in methods/mlp_sgd.py (a C loop on CPU, hand-written tensor ops
elsewhere). bench/mer_eager.py keeps the reference-style autograd + deepcopy version of the same
algorithms; tests/test_mer.py checks both give the same parameters.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Context
from .hparams import choice
from .mlp_sgd import ENGINES, flatten_mlp, make_engine
from .replay import ReplayLearner, ReplaySwitches


@dataclass(frozen=True)
class MERSwitches(ReplaySwitches):
    engine: str = choice("auto", ENGINES)   # single-example SGD engine (same math; see mlp_sgd.py)


class MERLearner(ReplayLearner):
    def __init__(self, ctx: Context, hp) -> None:
        super().__init__(ctx, hp)
        self.flat = flatten_mlp(self.net)
        self.saved = {}
        self.engine = make_engine(self.flat, ctx.mlp_sizes(), hp.engine)
        self.counts = {"sgd_steps": 0, "reptile_updates": 0}   # a dict: nn.Module.__setattr__ is slow
        k = int(hp.replay_batch_size) + 1
        self._bx = torch.empty(k, ctx.n_inputs, device=ctx.device)
        self._by = torch.empty(k, dtype=torch.long, device=ctx.device)

    def mer_batch(self, x: torch.Tensor, y: torch.Tensor, current_first: bool):
        """The current example plus min(k-1, stored) replayed items, gathered into preallocated buffers."""
        idx = self.memory.draw_indices(int(self.hp.replay_batch_size))
        n = len(idx) + 1
        bx, by = self._bx[:n], self._by[:n]
        cur, rest = (0, slice(1, n)) if current_first else (n - 1, slice(0, n - 1))
        bx[cur].copy_(x)
        by[cur].copy_(y)
        if idx:
            m = torch.tensor(idx, dtype=torch.long, device=x.device)
            torch.index_select(self.memory.x, 0, m, out=bx[rest])
            torch.index_select(self.memory.y, 0, m, out=by[rest])
        return bx, by

    # Three primitives; bench/mer_eager.py overrides them with the reference's deepcopy + autograd code.
    def snapshot(self, slot: str) -> None:
        buf = self.saved.get(slot)
        if buf is None:
            self.saved[slot] = self.flat.clone()
        else:
            buf.copy_(self.flat)

    def interpolate(self, slot: str, coef: float) -> None:
        """theta <- w + coef * (theta - w), w the snapshot in `slot` (reference: before + (after - before) * coef)."""
        self.engine.reptile(self.saved[slot], coef)
        self.counts["reptile_updates"] += 1

    def sgd_sequence(self, bx: torch.Tensor, by: torch.Tensor, scale: torch.Tensor | None = None) -> None:
        self.engine.sgd_sequence(bx, by, self.hp.lr, scale)
        self.counts["sgd_steps"] += bx.shape[0]

    def info(self) -> dict:
        return {**super().info(), "engine": getattr(self.engine, "name", "eager"), **self.counts}


class MERAlg1(MERLearner):
    """Within-batch Reptile (beta) after each of s batches, across-batch Reptile (gamma) per example;
    current example FIRST in each batch (`meralg1.py`)."""

    @dataclass(frozen=True)
    class Hparams(MERSwitches):
        lr: float = 0.1
        beta: float = 1.0
        gamma: float = 1.0
        replay_batch_size: int = 20      # k-1
        batches_per_example: int = 1     # s of Alg. 1

    def observe(self, x, t, y):
        for i in range(x.shape[0]):
            self.snapshot("before")
            for _ in range(int(self.hp.batches_per_example)):
                self.snapshot("w0")
                bx, by = self.mer_batch(x[i], y[i], current_first=True)
                self.sgd_sequence(bx, by)
                self.interpolate("w0", self.hp.beta)
            self.interpolate("before", self.hp.gamma)
            self.memory.add(x[i], y[i], t)


class MERAlg6(MERLearner):
    """One Reptile (gamma) per batch, current example LAST (`meralg6.py`). The reference draws one
    unused batch per example first (`meralg6_extra_draw`, kept by default for its RNG consumption)."""

    @dataclass(frozen=True)
    class Hparams(MERSwitches):
        REFERENCE_RNG: ClassVar[dict] = {**MERSwitches.REFERENCE_RNG, "meralg6_extra_draw": True}
        lr: float = 0.1
        gamma: float = 1.0
        replay_batch_size: int = 20
        batches_per_example: int = 1     # never set in mer_examples.sh
        meralg6_extra_draw: bool = True

    def observe(self, x, t, y):
        for i in range(x.shape[0]):
            if self.hp.meralg6_extra_draw:
                self.memory.draw_indices(int(self.hp.replay_batch_size))
            for _ in range(int(self.hp.batches_per_example)):
                self.snapshot("w0")
                bx, by = self.mer_batch(x[i], y[i], current_first=False)
                self.sgd_sequence(bx, by)
                self.interpolate("w0", self.hp.gamma)
            self.memory.add(x[i], y[i], t)


class MERAlg7(MERLearner):
    """One batch with the current example at a random position and its loss times `s`, then one Reptile
    (gamma); the very first example of the stream is only stored (`meralg7.py`, `if age > 1`)."""

    @dataclass(frozen=True)
    class Hparams(MERSwitches):
        lr: float = 0.1
        gamma: float = 1.0
        replay_batch_size: int = 20
        s: float = 1.0                   # current-example loss multiplier (not Alg. 1's s)

    def observe(self, x, t, y):
        for i in range(x.shape[0]):
            if self.memory.age > 0:
                self.snapshot("w0")
                bx, by = self.mer_batch(x[i], y[i], current_first=True)
                perm = list(range(bx.shape[0]))
                random.shuffle(perm)
                scale = torch.ones(len(perm))
                scale[perm.index(0)] = self.hp.s
                p = torch.tensor(perm, dtype=torch.long, device=bx.device)
                self.sgd_sequence(bx[p], by[p], scale.to(bx.device))
                self.interpolate("w0", self.hp.gamma)
            self.memory.add(x[i], y[i], t)
