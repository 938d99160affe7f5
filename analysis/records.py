"""Reading run records (the only input of every analysis step) into long pandas tables."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.errors import ClreproError

from .metrics import accuracy_matrix, all_metrics

KEYS = ("dataset", "method", "memory", "seed")
# ACC and LA do not depend on the denominator convention; their rows carry this marker instead of a name.
NO_CONVENTION = "-"
FULL_SIZE = "-"  # the `reduced` column of a run made at its protocol's sizes


RERUN = "delete it and run ./clrepro reproduce, which retrains exactly that run"


def load(path: str | Path) -> dict:
    """One run record, checked: R must be T x T and equal the matrix rebuilt from its own evaluation log."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ClreproError(f"cannot read run record {path} ({err}); {RERUN}") from None
    check(rec, str(path))
    return rec


def check(rec: dict, where: str = "run record") -> None:
    """A corrupt or hand-edited record would silently shift every table, so refuse it."""
    try:
        R, b = np.asarray(rec["R"], dtype=float), np.asarray(rec["b"], dtype=float)
        T = rec["spec"]["n_tasks"]
        _key(rec)
        log = rec["eval_log"]
        if R.shape != (T, T) or b.shape != (T,):
            raise ClreproError(f"{where}: R is {R.shape} and b {b.shape}, expected ({T}, {T}) and ({T},) for "
                               f"n_tasks={T}; {RERUN}")
        b_log, R_log = accuracy_matrix(log["task"], log["acc"])
    except ClreproError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ClreproError(f"{where} is malformed ({type(err).__name__}: {err}); {RERUN}") from None
    if not (np.array_equal(R_log, R) and np.array_equal(b_log, b)):
        raise ClreproError(f"{where}: R/b differ from the matrix rebuilt from its eval_log; {RERUN}")


# The sizes a run was made at travel with every row, so no table can pass a reduced run off as a full one.
SIZES = ("n_tasks", "samples_per_task", "test_examples_per_task", "log_every", "batch_size")


def reduced_label(spec: dict) -> str:
    """FULL_SIZE for a run at its protocol's sizes, else e.g. 'samples_per_task=100 (protocol 1000); ...'."""
    changed = spec.get("reduced", {})
    return "; ".join(f"{k}={spec[k]} (protocol {v})" for k, v in sorted(changed.items())) or FULL_SIZE


def _key(rec: dict) -> dict:
    spec = rec["spec"]
    return ({k: spec[k] for k in KEYS} | {"protocol": spec["protocol"]} | {k: spec[k] for k in SIZES}
            | {"reduced": reduced_label(spec)})


def tidy(records: list[dict]) -> pd.DataFrame:
    """One row per (run, metric, convention); metrics recomputed from R and b, never trusted from the file.

    BWT, FWT and FGT appear twice, once per convention (`paper`: divided by T-1, `code`: divided by T);
    ACC and LA once, with convention `-` (they have no such choice).
    """
    rows = []
    for rec in records:
        key = _key(rec)
        for metric, value in all_metrics(rec["R"], rec["b"], rec["eval_log"].get("first_batches")).items():
            if isinstance(value, dict):
                rows += [key | {"metric": metric, "convention": conv, "value": v} for conv, v in value.items()]
            else:
                rows.append(key | {"metric": metric, "convention": NO_CONVENTION, "value": value})
        rows.append(key | {"metric": "examples_per_s", "convention": NO_CONVENTION,
                           "value": rec["timing"]["examples_per_s"]})
        rows.append(key | {"metric": "train_s", "convention": NO_CONVENTION, "value": rec["timing"]["train_s"]})
    return pd.DataFrame(rows)


def stored_mismatches(records: list[dict], tol: float = 1e-9) -> list[str]:
    """Runs whose stored `metrics` differ from the recomputed ones (reported, never used)."""
    out = []
    for rec in records:
        fresh = all_metrics(rec["R"], rec["b"], rec["eval_log"].get("first_batches"))
        stored = rec.get("metrics", {})
        for metric, value in fresh.items():
            values = value if isinstance(value, dict) else {NO_CONVENTION: value}
            old = stored.get(metric)
            olds = old if isinstance(old, dict) else {NO_CONVENTION: old}
            for conv, v in values.items():
                o = olds.get(conv)
                if o is None or not np.isclose(o, v, rtol=0, atol=tol, equal_nan=True):
                    key = _key(rec)
                    out.append(f"{key['dataset']}/{key['method']}/mem{key['memory']}/seed{key['seed']} "
                               f"{metric}[{conv}]: stored {o}, recomputed {v}")
    return out


def matrix_long(records: list[dict]) -> pd.DataFrame:
    """Every entry of every R: one row per (run, trained_task i, eval_task j) with acc = R[i, j]."""
    frames = []
    for rec in records:
        R = np.asarray(rec["R"], dtype=float)
        T = R.shape[0]
        i, j = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
        frame = pd.DataFrame({"trained_task": i.ravel(), "eval_task": j.ravel(), "acc": R.ravel()})
        for name, value in reversed(list(_key(rec).items())):
            frame.insert(0, name, value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def curve_tasks(n_tasks: int, max_tasks: int) -> list[int]:
    """At most `max_tasks` evenly spaced task ids, always the first and the last (curves stay readable)."""
    if n_tasks <= max_tasks:
        return list(range(n_tasks))
    return sorted({int(round(x)) for x in np.linspace(0, n_tasks - 1, max_tasks)})


def eval_long(records: list[dict], max_tasks: int = 5) -> pd.DataFrame:
    """The evaluation logs (accuracy over the stream) for the `curve_tasks` of each run.

    One row per (run, evaluation, eval_task): examples_seen, the task being trained (`current_task`) and acc.
    Only a few tasks are kept: a 100-task stream logs 10^5 accuracies per run.
    """
    frames = []
    for rec in records:
        log = rec["eval_log"]
        acc = np.asarray(log["acc"], dtype=float)
        tasks = curve_tasks(acc.shape[1], max_tasks)
        n = acc.shape[0]
        frame = pd.DataFrame({
            "evaluation": np.repeat(np.arange(n), len(tasks)),
            "examples_seen": np.repeat(np.asarray(log["examples_seen"]), len(tasks)),
            "current_task": np.repeat(np.asarray(log["task"]), len(tasks)),
            "eval_task": np.tile(tasks, n),
            "acc": acc[:, tasks].ravel(),
        })
        for name, value in reversed(list(_key(rec).items())):
            frame.insert(0, name, value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
