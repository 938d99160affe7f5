"""The reference-style (slow) implementation of MER Alg. 1/6/7: autograd + optim.SGD per example and
deepcopy(state_dict) snapshots with dict arithmetic, as MER `model/meralg*.py` does.

Same control flow and RNG draws as methods/mer.py (it overrides only the three compute primitives), so
tests/test_mer.py can check that the fast engines give the same parameters, and bench/bench_mer.py
can time both.
"""
from __future__ import annotations

from copy import deepcopy

import torch
import torch.nn.functional as F

from methods.base import Context
from methods.mer import MERAlg1, MERAlg6, MERAlg7


class EagerPrimitives:
    def _eager_init(self) -> None:
        self.opt = torch.optim.SGD(self.net.parameters(), lr=self.hp.lr)
        self.saved = {}

    def snapshot(self, slot: str) -> None:
        self.saved[slot] = deepcopy(self.net.state_dict())

    def interpolate(self, slot: str, coef: float) -> None:
        before, after = self.saved[slot], self.net.state_dict()
        self.net.load_state_dict({name: before[name] + ((after[name] - before[name]) * coef) for name in before})
        self.counts["reptile_updates"] += 1

    def sgd_sequence(self, bx, by, scale=None) -> None:
        for e in range(bx.shape[0]):
            self.opt.zero_grad()
            loss = F.cross_entropy(self.net(bx[e:e + 1]), by[e:e + 1])
            if scale is not None:
                loss = loss * scale[e]
            loss.backward()
            self.opt.step()
        self.counts["sgd_steps"] += bx.shape[0]


def _eager(cls):
    class Eager(EagerPrimitives, cls):
        def __init__(self, ctx: Context, hp) -> None:
            cls.__init__(self, ctx, hp)
            self._eager_init()

    Eager.__name__ = Eager.__qualname__ = f"Eager{cls.__name__}"
    return Eager


EagerMERAlg1 = _eager(MERAlg1)
EagerMERAlg6 = _eager(MERAlg6)
EagerMERAlg7 = _eager(MERAlg7)
EAGER = {"meralg1": EagerMERAlg1, "meralg6": EagerMERAlg6, "meralg7": EagerMERAlg7}


def build_eager(name: str, ctx: Context, hparams: dict):
    from methods.registry import make_hparams
    return EAGER[name](ctx, make_hparams(name, hparams)).to(ctx.device)
