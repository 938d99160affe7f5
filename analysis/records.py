"""Reading run records (the only input of every analysis step)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .metrics import all_metrics

KEYS = ("dataset", "method", "memory", "seed")


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def tidy(records: list[dict]) -> pd.DataFrame:
    """One row per (run, metric, convention); metrics recomputed from R and b, never trusted from the file."""
    rows = []
    for rec in records:
        spec = rec["spec"]
        key = {k: spec[k] for k in KEYS} | {"protocol": spec["protocol"], "n_tasks": spec["n_tasks"],
                                          "samples_per_task": spec["samples_per_task"]}
        for metric, value in all_metrics(rec["R"], rec["b"]).items():
            if isinstance(value, dict):
                rows += [key | {"metric": metric, "convention": conv, "value": v} for conv, v in value.items()]
            else:
                rows.append(key | {"metric": metric, "convention": "-", "value": value})
        rows.append(key | {"metric": "examples_per_s", "convention": "-", "value": rec["timing"]["examples_per_s"]})
        rows.append(key | {"metric": "train_s", "convention": "-", "value": rec["timing"]["train_s"]})
    return pd.DataFrame(rows)
