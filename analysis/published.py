"""Our numbers beside the published GEM-paper ones (analysis/published.csv), with disagreements flagged.

published.csv is data: one row per (dataset, published method, metric) with the value, its convention
(GEM's BWT/FWT are averaged over T, i.e. our `code` convention), the protocol it was produced under
(GEM: batch 10, 1000 examples per task, 20 tasks, seed 0, one run) and its source. `our_method` maps the
paper's names to ours (single -> online, multimodal -> taskinput, EWC -> ewc, GEM -> gem).

A cell is flagged when |ours - published| exceeds our seed spread (sample std over seeds); with one seed
there is no spread, so the documented absolute tolerance `--abs-tol` (default 0.02 = 2 accuracy points)
is used instead. Differences of protocol (e.g. our mer2019 runs: batch 1, fewer examples) are shown, not
corrected: a flag says "not the published number", not "wrong".

  python -m analysis.published --summary summary.csv --published analysis/published.csv --md X --tex X --csv X
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from data_prep.errors import one_line_errors

from .records import NO_CONVENTION
from .tables import to_latex, write_csv, write_text

DEFAULT_ABS_TOL = 0.02
FLAG_MARK = "*"


def compare(summary: pd.DataFrame, published: pd.DataFrame, abs_tol: float = DEFAULT_ABS_TOL) -> pd.DataFrame:
    """One row per (published cell, our memory size); `flag` True where the difference exceeds the tolerance."""
    rows = []
    for pub in published.itertuples(index=False):
        ours = summary[(summary["dataset"] == pub.dataset) & (summary["method"] == pub.our_method)
                       & (summary["metric"] == pub.metric)
                       & summary["convention"].isin([pub.convention, NO_CONVENTION])]
        base = {"dataset": pub.dataset, "published_method": pub.published_method, "our_method": pub.our_method,
                "metric": pub.metric, "convention": pub.convention, "published": pub.value,
                "published_memory": pub.memory, "published_protocol": pub.protocol, "source": pub.source}
        if ours.empty:
            rows.append(base | {"our_memory": pd.NA, "our_protocol": pd.NA, "our_n_tasks": pd.NA,
                                "our_samples_per_task": pd.NA, "ours_mean": float("nan"),
                                "ours_std": float("nan"), "n_seeds": 0, "diff": float("nan"),
                                "tolerance": float("nan"), "tolerance_kind": "", "flag": False, "status": "not run"})
            continue
        for o in ours.itertuples(index=False):
            diff = o.mean - pub.value
            if o.n_seeds >= 2:
                tol, kind = o.std, "seed std"
            else:
                tol, kind = abs_tol, "absolute (1 seed)"
            flag = bool(abs(diff) > tol)
            rows.append(base | {"our_memory": o.memory, "our_protocol": o.protocol, "our_n_tasks": o.n_tasks,
                                "our_samples_per_task": o.samples_per_task, "ours_mean": o.mean,
                                "ours_std": o.std, "n_seeds": int(o.n_seeds), "diff": diff, "tolerance": tol,
                                "tolerance_kind": kind, "flag": flag, "status": "FLAG" if flag else "ok"})
    return pd.DataFrame(rows)


def display(comparison: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Rows (dataset, ours <-> paper, memory ours / paper), columns (metric, ours | paper | diff)."""
    frame = comparison.copy()
    frame["method"] = frame["our_method"] + " ↔ " + frame["published_method"]
    frame["memory"] = [f"{'-' if pd.isna(m) else int(m)} / {int(p)}"
                       for m, p in zip(frame["our_memory"], frame["published_memory"])]

    def ours(r):
        if r.status == "not run":
            return "not run"
        if r.n_seeds < 2:
            return f"{r.ours_mean:.{digits}f} (n=1)"
        return f"{r.ours_mean:.{digits}f} ± {r.ours_std:.{digits}f} (n={r.n_seeds})"

    def delta(r):
        if r.status == "not run":
            return ""
        return f"{r.diff:+.{digits}f}{FLAG_MARK if r.flag else ''}"

    frame["ours"] = [ours(r) for r in frame.itertuples(index=False)]
    frame["paper"] = [f"{v:.{digits}f}" for v in frame["published"]]
    frame["diff"] = [delta(r) for r in frame.itertuples(index=False)]
    metrics = list(dict.fromkeys(frame["metric"]))
    rows = list(dict.fromkeys(zip(frame["dataset"], frame["method"], frame["memory"])))
    wide = frame.pivot(index=["dataset", "method", "memory"], columns="metric", values=["ours", "paper", "diff"])
    wide = wide.swaplevel(0, 1, axis=1)
    cols = pd.MultiIndex.from_tuples([(m, k) for m in metrics for k in ("ours", "paper", "diff")],
                                     names=["metric", ""])
    index = pd.MultiIndex.from_tuples(rows, names=["dataset", "method (ours ↔ paper)", "memory (ours / paper)"])
    return wide.reindex(index=index, columns=cols).fillna("")


def caption(comparison: pd.DataFrame, abs_tol: float) -> str:
    conv = ", ".join(sorted(set(comparison["convention"])))
    ran = comparison.dropna(subset=["our_protocol"]).drop_duplicates(["our_protocol", "dataset"])
    protos = "; ".join(f"{r.dataset}: {r.our_protocol}, {int(r.our_n_tasks)} tasks, {int(r.our_samples_per_task)} "
                       f"examples per task" for r in ran.itertuples()) or "none"
    return (f"Ours beside the GEM paper (Lopez-Paz & Ranzato 2017, Appendix B; seed 0, one run, GEM protocol: "
            f"batch 10, 1000 examples per task, 20 tasks). Convention `{conv}`: BWT and FWT divided by T, as "
            f"published. Ours: mean ± sample std over n seeds ({protos}). diff = ours - paper; "
            f"{FLAG_MARK} = |diff| exceeds our seed std (one seed: exceeds {abs_tol:g}).")


@one_line_errors
def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m analysis.published")
    p.add_argument("--summary", required=True)
    p.add_argument("--published", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--tex", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--abs-tol", type=float, default=DEFAULT_ABS_TOL)
    args = p.parse_args(argv)
    comparison = compare(pd.read_csv(args.summary), pd.read_csv(args.published), args.abs_tol)
    title = caption(comparison, args.abs_tol)
    table = display(comparison)
    flat = table.copy()
    flat.columns = [" ".join(c).strip() for c in flat.columns]
    write_text(args.md, f"**{title}**\n\n{flat.reset_index().to_markdown(index=False, disable_numparse=True)}\n")
    write_text(args.tex, to_latex(table, title, "tab:published").replace("↔", r"$\leftrightarrow$"))
    write_csv(comparison, args.csv)
    n_flag = int(comparison["flag"].sum())
    print(f"[published] {len(comparison)} cells compared, {n_flag} flagged -> {args.md}")


if __name__ == "__main__":
    sys.exit(main())
