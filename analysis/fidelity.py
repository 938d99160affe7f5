"""How far a cut-down grid's numbers lie from the full protocol's: the default grid's promise, checked.

`config/config.yaml` cuts only what is cheap to cut (test images, evaluation cadence, seeds, memory sizes) and
claims every method's ACC within 0.03 of its full-protocol value; `config/default_full.yaml` is that value
(full protocol, 3 seeds). This reads the records both grids name (no training) and prints, per cell, the
short grid's mean next to the full grid's mean ± std and their difference.

  python -m analysis.fidelity --short config/config.yaml --full config/default_full.yaml [--tol 0.03]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from data_prep.errors import ClreproError, one_line_errors
from methods.config import ROOT, grid_record_paths, prepare, resolve_device, workflow_config

from .records import NO_CONVENTION, load, tidy
from .tables import cell

CELL = ["dataset", "method", "memory"]


def grid_records(configfile: str | Path, root: Path = ROOT, device: str | None = None) -> list[dict]:
    """The records a grid config names, as `./clrepro reproduce --configfile FILE` would write them.

    The device is part of a record's key: `auto` resolves as on this machine unless `device` names the one
    the runs were made on (records made on a GPU or a cluster)."""
    config = prepare(workflow_config([configfile], root=root))
    config["_device"] = device or resolve_device(config, local=True)
    paths = [root / p for p in grid_record_paths(config)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise ClreproError(f"{len(missing)} of {len(paths)} runs of {configfile} (device {config['_device']}) have "
                           f"no record (first: {missing[0].relative_to(root)}); run ./clrepro reproduce runs "
                           f"--configfile {configfile}, or pass --device if they were made on another device")
    return [load(p) for p in paths]


def compare(short: pd.DataFrame, full: pd.DataFrame, metric: str = "ACC", tol: float = 0.03,
            convention: str = "paper") -> pd.DataFrame:
    """Per (dataset, method, memory) of the short grid: each grid's mean, std, seeds, the difference of means
    (short - full) and whether it is within `tol`; a cell the full grid lacks has NaN there and is not within.
    BWT/FWT/FGT are read in one denominator `convention` (ACC and LA have none). Pure: frames in, frame out."""
    def summary(frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame[(frame["metric"] == metric) & frame["convention"].isin([convention, NO_CONVENTION])]
        return rows.groupby(CELL, sort=False)["value"].agg(mean="mean", std="std", n="count").reset_index()

    both = summary(short).merge(summary(full), on=CELL, how="left", suffixes=("_short", "_full"))
    both["n_full"] = both["n_full"].fillna(0).astype(int)
    both["diff"] = both["mean_short"] - both["mean_full"]
    both["within"] = both["diff"].abs() <= tol   # NaN (no full run) compares False
    return both


def to_markdown(table: pd.DataFrame, metric: str, tol: float) -> str:
    lines = [f"| dataset | method | memory | {metric} short grid | {metric} full protocol | difference "
             f"| within {tol} |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        if r.n_full == 0:
            lines.append(f"| {r.dataset} | {r.method} | {r.memory} | {cell(r.mean_short, r.std_short, r.n_short)} "
                         f"(n={r.n_short}) | no run | | **no** |")
            continue
        lines.append(f"| {r.dataset} | {r.method} | {r.memory} | {cell(r.mean_short, r.std_short, r.n_short)} "
                     f"(n={r.n_short}) | {cell(r.mean_full, r.std_full, r.n_full)} (n={r.n_full}) | "
                     f"{r.diff:+.3f} | {'yes' if r.within else '**no**'} |")
    inside, unmatched = int(table["within"].sum()), int((table["n_full"] == 0).sum())
    tail = f"; {unmatched} with no full-protocol run." if unmatched else "."
    lines.append(f"\n{inside} of {len(table)} cells within {tol}; largest |difference| "
                 f"{table['diff'].abs().max():.3f}{tail}")
    return "\n".join(lines)


@one_line_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", default="config/config.yaml", help="the cut-down grid config")
    parser.add_argument("--full", default="config/default_full.yaml", help="the same cells at full protocol size")
    parser.add_argument("--metric", default="ACC")
    parser.add_argument("--tol", type=float, default=0.03)
    parser.add_argument("--convention", default="paper", choices=["paper", "code"],
                        help="BWT/FWT/FGT denominator (T-1 or T)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="the device the runs were made on (default: "
                        "this machine's, as `device: auto` resolves here)")
    args = parser.parse_args(argv)
    table = compare(tidy(grid_records(args.short, device=args.device)),
                    tidy(grid_records(args.full, device=args.device)), args.metric, args.tol, args.convention)
    if not (table["n_full"] > 0).any():
        raise ClreproError(f"{args.short} and {args.full} share no (dataset, method, memory) cell")
    print(to_markdown(table, args.metric, args.tol))
    return 0 if table["within"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
