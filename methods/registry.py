"""The one registry of methods: name (as used in configs and paths) -> implementing class."""
from __future__ import annotations

import dataclasses
import importlib

from data_prep.errors import ClreproError

from .base import Context, Learner
from .hparams import check_values

# Modules are imported on first use so that looking up one method never imports the others.
METHODS = {
    "online": "methods.baselines:Online",
    "independent": "methods.baselines:Independent",
    "taskinput": "methods.baselines:TaskInput",
    "ewc": "methods.baselines:EWC",
    "gem": "methods.gem:GEM",
    "agem": "methods.gem:AGEM",
    "eralg4": "methods.replay:ERAlg4",
    "eralg5": "methods.replay:ERAlg5",
    "meralg1": "methods.mer:MERAlg1",
    "meralg6": "methods.mer:MERAlg6",
    "meralg7": "methods.mer:MERAlg7",
    "dgr": "methods.dgr:DGR",
    "taagem": "methods.taagem:TAAGEM",
}


def get(name: str) -> type[Learner]:
    if name not in METHODS:
        raise ClreproError(f"unknown method {name!r}; use one of {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_hparams(name: str, values: dict):
    cls = get(name).Hparams
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ClreproError(f"unknown hyper-parameter(s) {unknown} for method {name}; known: {sorted(known)}")
    missing = sorted(f.name for f in dataclasses.fields(cls)
                     if f.name not in values and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ClreproError(f"method {name} needs hyper-parameter(s) {missing}; set them in the protocol file")
    check_values(name, cls, values)
    return cls(**values)


def check_cell(name: str, values: dict, memory: int, n_tasks: int) -> None:
    """The hyper-parameters' names, types and values, and whether this cell's memory can hold what they need."""
    get(name).check_memory(make_hparams(name, values), memory, n_tasks)


def build(name: str, ctx: Context, hparams: dict) -> Learner:
    return get(name)(ctx, make_hparams(name, hparams)).to(ctx.device)
