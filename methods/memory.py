"""The one reservoir-sampled episodic memory of the replay methods (ER Alg. 4/5, MER Alg. 1/6/7).

Follows MER `model/eralg4.py` etc. (reference-gem-mer.md section 5.2, pitfall 16), with the reference's
quirks as switches that default to the reference behaviour:

- `randint="inclusive"`: once full, the age-th example (1-based, counting every example offered) goes to
  slot `random.randint(0, age)` if that is < capacity, i.e. it is kept with probability m/(age+1)
  (reference). `"vitter"` draws `random.randrange(age)`: probability m/age (Vitter's Algorithm R).
- `draw="with_replacement"`: every replayed item is an independent uniform index, as the reference's
  "reshuffle, take order[j]" loop (duplicates possible). `"without_replacement"` draws distinct items.

The caller adds the current example AFTER its parameter step (reference order), so an example is never
replayed in the step that first trains on it. All draws use Python's global `random`, which the protocol
seeds with the run seed, as the reference does; the stored examples live on the device as tensors.
"""
from __future__ import annotations

import random

import torch

from data_prep.errors import ClreproError

RANDINT_MODES = ("inclusive", "vitter")
DRAW_MODES = ("with_replacement", "without_replacement")


class ReservoirMemory:
    def __init__(self, capacity: int, n_inputs: int, device: torch.device,
                 randint: str = "inclusive", draw: str = "with_replacement", rng=random) -> None:
        if capacity < 1:
            raise ClreproError(f"replay methods need a memory of at least 1 example, got {capacity}; "
                               "set a positive memory in the config grid")
        if randint not in RANDINT_MODES:
            raise ClreproError(f"reservoir_randint must be one of {RANDINT_MODES}, not {randint!r}")
        if draw not in DRAW_MODES:
            raise ClreproError(f"replay_draw must be one of {DRAW_MODES}, not {draw!r}")
        self.capacity = capacity
        self.randint, self.draw_mode, self.rng = randint, draw, rng
        self.x = torch.zeros(capacity, n_inputs, device=device)
        self.y = torch.zeros(capacity, dtype=torch.long, device=device)
        self.t = torch.zeros(capacity, dtype=torch.long, device=device)
        self.size = 0      # slots filled
        self.age = 0       # examples offered so far (the reference's `age`)
        self.replaced = 0  # examples written over an older one

    def slot(self) -> int | None:
        """Count one more offered example and return the slot it goes to (None: not kept)."""
        self.age += 1
        if self.size < self.capacity:
            self.size += 1
            return self.size - 1
        p = self.rng.randint(0, self.age) if self.randint == "inclusive" else self.rng.randrange(self.age)
        if p < self.capacity:
            self.replaced += 1
            return p
        return None

    def add(self, x: torch.Tensor, y: torch.Tensor, t: int) -> None:
        """Offer one example (x [n_inputs], y scalar tensor) of task t."""
        p = self.slot()
        if p is not None:
            self.x[p].copy_(x)
            self.y[p].copy_(y)
            self.t[p] = t

    def draw_indices(self, n: int) -> list[int]:
        """min(n, size) slot indices, as the reference's replay draw."""
        n = min(n, self.size)
        if self.draw_mode == "with_replacement":
            return [self.rng.randrange(self.size) for _ in range(n)]
        return self.rng.sample(range(self.size), n)

    def info(self) -> dict:
        return {"memory_capacity": self.capacity, "memory_filled": self.size,
                "examples_offered": self.age, "memory_replacements": self.replaced}
