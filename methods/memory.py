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

`rng_mode` (the run's `compat.rng`, reaching the methods as the `rng` hyper-parameter of `RngSwitch`) says how
the draws consume that RNG. `"fast"`: one `random.randrange(size)` per replayed item. `"reference"`: exactly
the reference's calls, so a seed gives the reference's draws: per replay batch a fresh
`order = list(range(size))`, then for item j `random.shuffle(order)` and `order[j]` (O(size) per item; done
in C on the same RNG state by methods/mer_draw.py). The reservoir's `random.randint(0, age)` is already the
reference's call.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import torch

from data_prep.errors import ClreproError

from . import mer_draw
from .hparams import choice

RANDINT_MODES = ("inclusive", "vitter")
DRAW_MODES = ("with_replacement", "without_replacement")
RNG_MODES = ("fast", "reference")


@dataclass(frozen=True, kw_only=True)
class RngSwitch:
    """The run's `compat.rng` as a hyper-parameter of every method with a GEM/MER reference code.

    methods.config.resolve_run copies `compat.rng` into the hyper-parameters (absent = "fast"); a method that
    consumes no RNG while training behaves the same under both (online, independent, taskinput), or takes the
    reference's float arithmetic under "reference" (GEM's layout, EWC's penalty loop). `REFERENCE_RNG` names
    hyper-parameter values the reference's RNG calls require: under "reference" any other value is an error.
    """

    REFERENCE_RNG: ClassVar[dict] = {}
    rng: str = choice("fast", RNG_MODES)

    def __post_init__(self) -> None:
        if self.rng == "reference":
            for name, value in self.REFERENCE_RNG.items():
                if getattr(self, name) != value:
                    raise ClreproError(f"compat.rng: reference reproduces the reference code's random draws, which "
                                       f"need {name}: {value!r}, not {getattr(self, name)!r}; drop that "
                                       f"hyper-parameter override or use compat.rng: fast")


class ReservoirMemory:
    def __init__(self, capacity: int, n_inputs: int, device: torch.device,
                 randint: str = "inclusive", draw: str = "with_replacement", rng=random,
                 rng_mode: str = "fast") -> None:
        if capacity < 1:
            raise ClreproError(f"replay methods need a memory of at least 1 example, got {capacity}; "
                               "set a positive memory in the config grid")
        if randint not in RANDINT_MODES:
            raise ClreproError(f"reservoir_randint must be one of {RANDINT_MODES}, not {randint!r}")
        if draw not in DRAW_MODES:
            raise ClreproError(f"replay_draw must be one of {DRAW_MODES}, not {draw!r}")
        if rng_mode not in RNG_MODES:
            raise ClreproError(f"compat.rng must be one of {RNG_MODES}, not {rng_mode!r}")
        if rng_mode == "reference" and (randint, draw) != ("inclusive", "with_replacement"):
            raise ClreproError(f"compat.rng: reference reproduces the reference code's draws, which need "
                               f"reservoir_randint 'inclusive' and replay_draw 'with_replacement', not "
                               f"{randint!r} and {draw!r}")
        self.capacity = capacity
        self.randint, self.draw_mode, self.rng, self.rng_mode = randint, draw, rng, rng_mode
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
        if self.rng_mode == "reference":
            return mer_draw.getbatch(self.rng, self.size, n)
        if self.draw_mode == "with_replacement":
            return [self.rng.randrange(self.size) for _ in range(n)]
        return self.rng.sample(range(self.size), n)

    def info(self) -> dict:
        return {"memory_capacity": self.capacity, "memory_filled": self.size,
                "examples_offered": self.age, "memory_replacements": self.replaced}
