"""Each paper's own table, regenerated from run records, every cell beside its published value.

analysis/published.csv is data: one row per published number, with the paper, the protocol of ours that
reproduces its setting (`our_protocol`), the method's name there and ours, metric, convention, value, its
published spread (`published_std`, `published_n` runs), the source, and `known_cause`, the named reference
quirk or protocol detail that explains a value outside our interval ("" = none known yet).

A published number is compared only with runs of `our_protocol`; runs of any other protocol are never set
beside it. The check is a 95% interval from our seeds (Student t, n - 1 degrees of freedom, s = our sample
std): for a single published run, where one more run of ours would fall (s * sqrt(1 + 1/n)); for a
published mean over m seeds, where the difference of two means stays (s * sqrt(1/n + 1/m)). Training times
(metric `train_s`) are compared as ratios to the paper's baseline method, since 2017 seconds do not transfer.

Layouts (`LAYOUTS`): gem2017 -> GEM Figure 1 / Appendix B (ACC, BWT, FWT averaged over T) and Table 1
(training seconds); agem2019 -> A-GEM Table 4 (A_T in %, F_T, LCA_10) and Table 7 (time ratios);
mer2019 -> MER's RA / LA / BTI per stream across memory sizes (no published table was reachable).

  python -m analysis.published --summary summary.csv --published analysis/published.csv --protocol gem2017 \
      --md X.md --tex X.tex --csv X.csv
"""
from __future__ import annotations

import argparse
import math
import sys

import pandas as pd
from scipy import stats

from data_prep.atomic import write_text
from data_prep.errors import one_line_errors

from .records import NO_CONVENTION
from .tables import sizes_note, to_latex, write_csv

TIME = "train_s"
# protocol -> (title, metrics shown, the paper's baseline for time ratios, A_T-style percent metrics)
LAYOUTS = {
    "gem2017": {"title": "GEM (Lopez-Paz & Ranzato 2017): Figure 1 / Appendix B and Table 1",
                "metrics": ["ACC", "BWT", "FWT"], "baseline": "single", "percent": []},
    "agem2019": {"title": "A-GEM (Chaudhry et al. 2019): Table 4 (A_T %, F_T, LCA_10) and Table 7",
                 "metrics": ["ACC", "FGT", "LCA10"], "baseline": "VAN", "percent": ["ACC"]},
}
MER_METRICS = {"RA": ("ACC", NO_CONVENTION), "LA": ("LA", NO_CONVENTION), "BTI": ("BWT", "code")}


def interval_half_width(std: float, n: int, published_n: int) -> float:
    """Half-width of the 95% interval our n seeds give for a published value from published_n runs."""
    if n < 2 or pd.isna(std):
        return float("nan")
    t = stats.t.ppf(0.975, n - 1)
    return float(t * std * math.sqrt(1.0 / n + (1.0 if published_n <= 1 else 1.0 / published_n)))


def _ours(summary: pd.DataFrame, pub) -> pd.DataFrame:
    return summary[(summary["protocol"] == pub.our_protocol) & (summary["dataset"] == pub.dataset)
                   & (summary["method"] == pub.our_method) & (summary["metric"] == pub.metric)
                   & summary["convention"].isin([pub.convention, NO_CONVENTION])]


def compare(summary: pd.DataFrame, published: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """One row per published number of `protocol` (and per memory size of ours): ours, interval, verdict."""
    rows = []
    for pub in published[published["our_protocol"] == protocol].itertuples(index=False):
        base = {"paper": pub.paper, "dataset": pub.dataset, "published_method": pub.published_method,
                "our_method": pub.our_method, "metric": pub.metric, "convention": pub.convention,
                "published": pub.value, "published_std": pub.published_std, "published_n": int(pub.published_n),
                "published_memory": pub.memory, "source": pub.source}
        ours = _ours(summary, pub)
        if ours.empty:
            rows.append(base | {"our_memory": pd.NA, "ours_mean": float("nan"), "ours_std": float("nan"),
                                "n_seeds": 0, "half_width": float("nan"), "inside": pd.NA, "verdict": "not run"})
            continue
        for o in ours.itertuples(index=False):
            half = interval_half_width(o.std, int(o.n_seeds), int(pub.published_n))
            if pub.metric == TIME:
                inside, verdict = pd.NA, "time: compared as ratio"
            elif math.isnan(half):
                inside, verdict = pd.NA, f"n={int(o.n_seeds)}: no interval"
            else:
                inside = bool(abs(o.mean - pub.value) <= half)
                cause = pub.known_cause if isinstance(pub.known_cause, str) and pub.known_cause else "unexplained"
                verdict = "inside 95%" if inside else f"outside: {cause}"
            rows.append(base | {"our_memory": o.memory, "ours_mean": o.mean, "ours_std": o.std,
                                "n_seeds": int(o.n_seeds), "half_width": half, "inside": inside, "verdict": verdict})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["ours_ratio"], out["published_ratio"] = _time_ratios(out, LAYOUTS.get(protocol, {}).get("baseline"))
    return out


def _time_ratios(cmp: pd.DataFrame, baseline: str | None) -> tuple[pd.Series, pd.Series]:
    """train_s as a ratio to the baseline method's, per dataset, for ours and the paper's."""
    ours, theirs = pd.Series(float("nan"), index=cmp.index), pd.Series(float("nan"), index=cmp.index)
    times = cmp[cmp["metric"] == TIME]
    for dataset, group in times.groupby("dataset"):
        base = group[group["published_method"] == baseline]
        if base.empty:
            continue
        ours[group.index] = group["ours_mean"] / base["ours_mean"].iloc[0]
        theirs[group.index] = group["published"] / base["published"].iloc[0]
    return ours, theirs


def _fmt(value: float, digits: int, percent: bool) -> str:
    if pd.isna(value):
        return ""
    return f"{100 * value:.1f}" if percent else f"{value:.{digits}f}"


def display(cmp: pd.DataFrame, protocol: str, digits: int = 3) -> pd.DataFrame:
    """Rows (dataset, ours <-> paper), columns per metric: ours | paper | check; time as seconds and ratios."""
    layout = LAYOUTS[protocol]
    frame = cmp.copy()
    frame["method"] = frame["our_method"] + " ↔ " + frame["published_method"]
    cells = []
    for r in frame.itertuples(index=False):
        pct = r.metric in layout["percent"]
        if r.metric == TIME:
            ours = "" if pd.isna(r.ours_mean) else f"{r.ours_mean:.1f} s (×{r.ours_ratio:.2f})"
            paper = f"{r.published:g} s (×{r.published_ratio:.2f})" if not pd.isna(r.published_ratio) else f"{r.published:g} s"
            cells.append((r.dataset, r.method, "time", ours, paper, ""))
            continue
        if r.verdict == "not run":
            ours = "not run"
        else:
            spread = "" if pd.isna(r.ours_std) else " ± " + _fmt(r.ours_std, digits, pct)
            ours = f"{_fmt(r.ours_mean, digits, pct)}{spread} (n={r.n_seeds})"
        paper = _fmt(r.published, digits, pct)
        if not pd.isna(r.published_std) and r.published_std != "":
            paper += " ± " + _fmt(float(r.published_std), digits, pct)
        cells.append((r.dataset, r.method, r.metric, ours, paper, r.verdict))
    long = pd.DataFrame(cells, columns=["dataset", "method", "metric", "ours", "paper", "check"])
    metrics = [m for m in layout["metrics"] + ["time"] if m in set(long["metric"])]
    rows = list(dict.fromkeys(zip(long["dataset"], long["method"])))
    wide = long.pivot_table(index=["dataset", "method"], columns="metric", values=["ours", "paper", "check"],
                            aggfunc="first").swaplevel(0, 1, axis=1)
    cols = [(m, k) for m in metrics for k in ("ours", "paper", "check") if (m, k) in wide.columns]
    index = pd.MultiIndex.from_tuples(rows, names=["dataset", "method (ours ↔ paper)"])
    return wide.reindex(index=index, columns=pd.MultiIndex.from_tuples(cols, names=["metric", ""])).fillna("")


def mer_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """MER's layout: per stream, methods x memory sizes, RA / LA / BTI (BTI averaged over T, as MER's code)."""
    sub = summary[summary["protocol"] == "mer2019"]
    rows = {}
    for (dataset, method, memory), group in sub.groupby(["dataset", "method", "memory"], sort=False):
        for name, (metric, conv) in MER_METRICS.items():
            hit = group[(group["metric"] == metric) & (group["convention"] == conv)]
            if not hit.empty:
                h = hit.iloc[0]
                spread = "" if pd.isna(h["std"]) else f" ± {h['std']:.{digits}f}"
                rows.setdefault((dataset, method), {})[(int(memory), name)] = f"{h['mean']:.{digits}f}{spread}"
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if frame.empty:
        return frame
    frame.index.names = ["dataset", "method"]
    memories = sorted({m for m, _ in frame.columns}, reverse=True)
    cols = [(m, n) for m in memories for n in MER_METRICS if (m, n) in frame.columns]
    return frame.reindex(columns=pd.MultiIndex.from_tuples(cols, names=["memory", ""])).fillna("")


def caption(protocol: str, summary: pd.DataFrame) -> str:
    sizes = sizes_note(summary[summary["protocol"] == protocol]) if (summary["protocol"] == protocol).any() else ""
    if protocol == "mer2019":
        return ("MER (Riemer et al. 2019) layout: RA = final average accuracy, LA = mean accuracy right after "
                "learning each task, BTI = mean of (final - just learned), averaged over T as MER's code. No "
                f"published MER table was reachable; none is compared. Mean ± sample std over seeds. {sizes}")
    if protocol not in LAYOUTS:
        return f"Protocol {protocol}: no published table to compare with. {sizes}"
    return (f"{LAYOUTS[protocol]['title']}, ours under the same protocol ({protocol}) beside the published "
            "values. BWT/FWT averaged over T, F_T over T-1, as published. Ours: mean ± sample std (n seeds). "
            "check: whether the published value lies in our 95% interval (a single published run: where one "
            "more run of ours would fall; a published mean: difference of means), else the named cause, or "
            f"'unexplained'. Times: seconds and the ratio to the paper's baseline method. {sizes}")


@one_line_errors
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.published")
    p.add_argument("--summary", required=True)
    p.add_argument("--published", required=True)
    p.add_argument("--protocol", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--tex", required=True)
    p.add_argument("--csv", required=True)
    args = p.parse_args(argv)
    summary = pd.read_csv(args.summary)
    title = caption(args.protocol, summary)
    if args.protocol in LAYOUTS:
        comparison = compare(summary, pd.read_csv(args.published), args.protocol)
        table = display(comparison, args.protocol)
        write_csv(comparison, args.csv)
    else:
        table = mer_table(summary) if args.protocol == "mer2019" else pd.DataFrame()
        write_csv(table.reset_index() if not table.empty else table, args.csv)
    flat = table.copy()
    flat.columns = [" ".join(str(c) for c in col).strip() for col in flat.columns]
    body = flat.reset_index().to_markdown(index=False, disable_numparse=True) if not flat.empty else "(no runs)"
    write_text(args.md, f"**{title}**\n\n{body}\n")
    tex = to_latex(table, title, f"tab:paper_{args.protocol}") if not table.empty else f"% {title}\n"
    write_text(args.tex, tex.replace("↔", r"$\leftrightarrow$"))
    print(f"[published] {args.protocol}: {len(table)} rows -> {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
