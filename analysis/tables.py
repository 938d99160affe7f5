"""Seed summaries and paper-style tables (Markdown, LaTeX, CSV), one table per metric convention.

Rows are methods with their memory size, columns datasets x metrics, cells "mean ± std" over seeds and a
per-dataset column `n` with the number of seeds. BWT and FWT depend on the convention (`paper`: divided
by T-1; `code`: divided by T, as GEM/MER's metrics.py); each table names its convention in its caption
(Markdown heading, LaTeX caption) and in a `convention` column (CSV).

  python -m analysis.tables summary --runs runs_long.csv --out summary.csv
  python -m analysis.tables main --summary summary.csv --convention paper --md X.md --tex X.tex --csv X.csv
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from data_prep.atomic import atomic_path, write_text
from data_prep.errors import one_line_errors

from .metrics import CONVENTIONS
from .records import FULL_SIZE, NO_CONVENTION, SIZES

TABLE_METRICS = ("ACC", "BWT", "FWT", "LA")
GROUP = ["dataset", "method", "memory", "protocol", *SIZES, "reduced", "metric", "convention"]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed) and the number of seeds per cell, in first-seen order."""
    grouped = runs.groupby(GROUP, sort=False, dropna=False)["value"]
    out = grouped.agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["seeds"] = grouped.apply(lambda v: " ".join(str(s) for s in sorted(runs.loc[v.index, "seed"]))).values
    return out


def for_convention(summary: pd.DataFrame, convention: str) -> pd.DataFrame:
    """The rows of one convention plus the convention-free metrics (ACC, LA)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; use one of {sorted(CONVENTIONS)}")
    return summary[summary["convention"].isin([convention, NO_CONVENTION])]


def cell(mean: float, std: float, n: int, digits: int = 3) -> str:
    """"mean ± std"; a single seed has no spread, so only the mean is printed (the n column says why)."""
    if pd.isna(mean):
        return ""
    if n < 2 or pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def main_table(summary: pd.DataFrame, convention: str, metrics=TABLE_METRICS, digits: int = 3) -> pd.DataFrame:
    """Display frame: index (method, memory), columns (dataset, metric | n), string cells."""
    sub = for_convention(summary, convention)
    sub = sub[sub["metric"].isin(metrics)].copy()
    sub["cell"] = [cell(m, s, n, digits) for m, s, n in zip(sub["mean"], sub["std"], sub["n_seeds"])]
    datasets = list(dict.fromkeys(sub["dataset"]))
    rows = list(dict.fromkeys(zip(sub["method"], sub["memory"])))
    wide = sub.pivot(index=["method", "memory"], columns=["dataset", "metric"], values="cell")
    seeds = sub.groupby(["method", "memory", "dataset"], sort=False)["n_seeds"].max().unstack("dataset")
    columns = []
    for d in datasets:
        for m in metrics:
            columns.append((d, m))
        columns.append((d, "n"))
        wide[(d, "n")] = seeds[d].map(lambda v: "" if pd.isna(v) else str(int(v)))
    out = wide.reindex(index=pd.MultiIndex.from_tuples(rows, names=["method", "memory"]),
                       columns=pd.MultiIndex.from_tuples(columns, names=["dataset", "metric"]))
    return out.fillna("")


def sizes_note(summary: pd.DataFrame) -> str:
    """The sizes every dataset's runs were made at, and what was reduced from the protocol (never hidden)."""
    parts = []
    cols = ["dataset", "protocol", *SIZES, "reduced"]
    for r in summary[cols].drop_duplicates().itertuples(index=False):
        text = (f"{r.dataset}: protocol {r.protocol}, {r.n_tasks} tasks x {r.samples_per_task} examples, "
                f"{r.test_examples_per_task} test images per task, batch {r.batch_size}, evaluation every "
                f"{r.log_every} batches")
        if isinstance(r.reduced, str) and r.reduced != FULL_SIZE:
            text += f", REDUCED from the protocol: {r.reduced}"
        parts.append(text)
    return "Sizes: " + "; ".join(parts) + "."


def caption(convention: str, summary: pd.DataFrame) -> str:
    return (f"Final metrics. Convention `{convention}`: BWT and FWT {CONVENTIONS[convention]}; ACC and LA "
            f"do not depend on it. Cells: mean ± sample std over seeds (one seed: mean only); n: number of seeds. "
            f"Memory: total episodic memory in examples (0: no memory). {sizes_note(summary)}")


def flat(table: pd.DataFrame) -> pd.DataFrame:
    """MultiIndex columns -> 'dataset metric' strings (to_markdown prints tuples otherwise)."""
    out = table.copy()
    out.columns = [" ".join(map(str, c)) for c in out.columns]
    return out.reset_index()


def to_markdown(table: pd.DataFrame, title: str) -> str:
    """One small table per stream (rows: method and memory; columns: the metrics and n), readable at a glance."""
    parts = [f"**{title}**\n"]
    for dataset in dict.fromkeys(table.columns.get_level_values("dataset")):
        sub = table[dataset]
        sub = sub[(sub != "").any(axis=1)]
        body = sub.reset_index().to_markdown(index=False, disable_numparse=True)
        parts.append(f"### {dataset}\n\n{body}\n")
    return "\n".join(parts)


def to_latex(table: pd.DataFrame, title: str, label: str) -> str:
    """booktabs LaTeX via Styler; names are escaped and ± becomes $\\pm$."""
    styler = table.style.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    styler = styler.format(escape="latex")
    tex = styler.to_latex(hrules=True, multicol_align="c", multirow_align="naive", position_float="centering",
                          caption=title.replace("`", "").replace("_", r"\_"), label=label)
    return tex.replace("±", r"$\pm$").replace("−", "-")


def write_csv(frame: pd.DataFrame, path: str) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")


def write_table(table: pd.DataFrame, title: str, label: str, convention: str, md: str, tex: str, csv: str) -> None:
    write_text(md, to_markdown(table, title))
    write_text(tex, to_latex(table, title, label))
    flat_table = flat(table)
    flat_table.insert(0, "convention", convention)
    write_csv(flat_table, csv)


@one_line_errors
def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m analysis.tables")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="tidy runs CSV -> mean/std/n per cell (all metrics, both conventions)")
    s.add_argument("--runs", required=True)
    s.add_argument("--out", required=True)
    m = sub.add_parser("main", help="summary CSV -> the paper-style table of one convention")
    m.add_argument("--summary", required=True)
    m.add_argument("--convention", required=True, choices=sorted(CONVENTIONS))
    m.add_argument("--md", required=True)
    m.add_argument("--tex", required=True)
    m.add_argument("--csv", required=True)
    m.add_argument("--digits", type=int, default=3)
    args = p.parse_args(argv)
    if args.cmd == "summary":
        summary = summarize(pd.read_csv(args.runs))
        write_csv(summary, args.out)
        print(f"[tables] {len(summary)} summary cells -> {args.out}")
    else:
        summary = pd.read_csv(args.summary)
        table = main_table(summary, args.convention, digits=args.digits)
        write_table(table, caption(args.convention, summary), f"tab:main_{args.convention}", args.convention,
                    args.md, args.tex, args.csv)
        print(f"[tables] {table.shape[0]} rows x {table.shape[1]} columns ({args.convention}) -> {args.md}")


if __name__ == "__main__":
    sys.exit(main())
