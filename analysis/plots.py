"""Forgetting plots (seaborn on the Agg backend), written as PNG and PDF with byte-identical reruns.

  heatmap  mean accuracy matrix R (over seeds) of every method of one dataset, one panel per (method, memory)
  curves   accuracy on a few tasks over the stream (from the evaluation logs), mean line and ± 1 std band
           over seeds, one panel per (method, memory); dotted lines mark task switches
  memory   final ACC vs total memory size, one panel per dataset: methods with memory as lines (± std),
           memory-free methods as horizontal reference lines

  python -m analysis.plots heatmap --matrix matrix_long.csv --dataset D --png X.png --pdf X.pdf
  python -m analysis.plots curves --evals eval_long.csv --dataset D --png X.png --pdf X.pdf
  python -m analysis.plots memory --summary summary.csv --png X.png --pdf X.pdf
"""
from __future__ import annotations

import argparse
import math
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from seaborn.utils import relative_luminance  # noqa: E402

from data_prep.atomic import atomic_path  # noqa: E402
from data_prep.errors import ClreproError, one_line_errors  # noqa: E402

from .records import NO_CONVENTION  # noqa: E402

# No timestamps or version strings in the files, so reruns on unchanged inputs give identical bytes.
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None}}
DPI = 120
ANNOTATE_UP_TO = 10  # write the numbers into heatmap cells only for small matrices
MAX_SWITCH_LINES = 20  # mark task switches on the curves only for streams this short


def _label(method: str, memory) -> str:
    return f"{method} (mem {int(memory)})" if int(memory) else method


def _configs(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """(method, memory) panels in first-seen order (= config order when the rule passes records in order)."""
    return list(dict.fromkeys(zip(frame["method"], frame["memory"].astype(int))))


def _grid(n: int, width: float, height: float, max_cols: int = 4):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def _only(frame: pd.DataFrame, dataset: str, what: str) -> pd.DataFrame:
    sub = frame[frame["dataset"] == dataset]
    if sub.empty:
        raise ClreproError(f"no {what} rows for dataset {dataset!r}; is it in the config's `datasets`?")
    return sub


def save(fig, png: str, pdf: str) -> None:
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=METADATA[fmt], bbox_inches="tight")
    plt.close(fig)


def heatmap(matrix: pd.DataFrame, dataset: str):
    """Mean R over seeds; rows = trained task, columns = evaluated task (upper triangle: before training).

    Drawn with imshow: seaborn's heatmap redraws the whole figure once per panel (to size its annotations),
    which made this plot's 13 panels cost 10-15 s, the longest job of the analysis.
    """
    sub = _only(matrix, dataset, "accuracy-matrix")
    configs = _configs(sub)
    T = int(sub["n_tasks"].max())
    annot = T <= ANNOTATE_UP_TO
    size = 3.2 if annot else 4.0
    step = 1 if annot else math.ceil(T / 5)  # every task for small matrices, else about 5 labels
    cmap = plt.get_cmap("viridis")
    fig, axes = _grid(len(configs), size, size)
    n_cols = min(len(configs), 4)
    for k, (ax, (method, memory)) in enumerate(zip(axes, configs)):
        one = sub[(sub["method"] == method) & (sub["memory"] == memory)]
        R = one.pivot_table(index="trained_task", columns="eval_task", values="acc", aggfunc="mean")
        values = R.to_numpy()
        n_seeds = one["seed"].nunique()
        ax.imshow(values, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect="equal")
        ax.grid(False)
        ax.set_xticks(range(0, R.shape[1], step), R.columns[::step])
        ax.set_yticks(range(0, R.shape[0], step), R.index[::step], rotation=90, va="center")
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if annot:  # dark text on light cells, light on dark (seaborn heatmap's own rule)
            for (i, j), v in np.ndenumerate(values):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color=".15" if relative_luminance(cmap(v)) > 0.408 else "w")
        ax.set_title(f"{_label(method, memory)}, {n_seeds} seed{'s' * (n_seeds > 1)}", fontsize=9)
        ax.set_xlabel("evaluated task j")
        ax.set_ylabel("after training task i" if k % n_cols == 0 else "")
    fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap=cmap), ax=list(axes),
                 shrink=0.8, label="test accuracy R[i, j]")
    top = max(ax.get_position().y1 for ax in axes)  # just above the panels, not the figure's empty top band
    fig.suptitle(f"{dataset}: mean accuracy matrix R", y=top + 0.35 / fig.get_figheight())
    return fig


def curves(evals: pd.DataFrame, dataset: str):
    """Accuracy of the logged tasks against examples seen; band = ± 1 sample std over seeds."""
    sub = _only(evals, dataset, "evaluation-log").copy()
    configs = _configs(sub)
    sub["task"] = "task " + sub["eval_task"].astype(str)
    order = [f"task {t}" for t in sorted(sub["eval_task"].unique())]
    palette = dict(zip(order, sns.color_palette("viridis", len(order))))
    fig, axes = _grid(len(configs), 4.2, 3.0)
    for k, (ax, (method, memory)) in enumerate(zip(axes, configs)):
        one = sub[(sub["method"] == method) & (sub["memory"] == memory)]
        sns.lineplot(data=one, x="examples_seen", y="acc", hue="task", hue_order=order, palette=palette,
                     estimator="mean", errorbar="sd", ax=ax, legend=k == len(configs) - 1, linewidth=1.2)
        T, per_task = int(one["n_tasks"].iloc[0]), int(one["samples_per_task"].iloc[0])
        for x in (per_task * np.arange(1, T) if T <= MAX_SWITCH_LINES else []):
            ax.axvline(x, color="0.7", linestyle=":", linewidth=0.8)
        n_seeds = one["seed"].nunique()
        ax.set_title(f"{_label(method, memory)}, {n_seeds} seed{'s' * (n_seeds > 1)}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("examples seen")
        ax.set_ylabel("test accuracy")
    if len(axes):
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False, title=None)
    fig.suptitle(f"{dataset}: accuracy over the stream (dotted: task switches, up to 20 tasks)", y=1.02)
    fig.tight_layout()
    return fig


def memory(summary: pd.DataFrame):
    """Final ACC vs memory; mean ± std over seeds. Memory-free methods are dashed horizontal lines."""
    acc = summary[(summary["metric"] == "ACC") & (summary["convention"] == NO_CONVENTION)]
    datasets = list(dict.fromkeys(acc["dataset"]))
    methods = list(dict.fromkeys(acc["method"]))
    colors = dict(zip(methods, sns.color_palette("tab10" if len(methods) <= 10 else "husl", len(methods))))
    mems = sorted(m for m in acc["memory"].unique() if m > 0)
    fig, axes = _grid(len(datasets), 4.5, 3.4)
    for ax, dataset in zip(axes, datasets):
        one = acc[acc["dataset"] == dataset]
        for method in methods:
            m = one[one["method"] == method].sort_values("memory")
            if m.empty:
                continue
            std = m["std"].fillna(0).to_numpy()
            if (m["memory"] > 0).any():
                ax.errorbar(m["memory"], m["mean"], yerr=std, marker="o", capsize=3, color=colors[method],
                            label=method)
            else:
                mean = float(m["mean"].iloc[0])
                ax.axhline(mean, color=colors[method], linestyle="--", linewidth=1, label=f"{method} (no memory)")
                if std[0] > 0:
                    ax.axhspan(mean - std[0], mean + std[0], color=colors[method], alpha=0.15, linewidth=0)
        if mems:
            ax.set_xscale("log")
            ax.set_xticks(mems, [str(int(m)) for m in mems])
            ax.minorticks_off()
        else:
            ax.set_xticks([])
        ax.set_ylim(0, 1)
        ax.set_title(dataset, fontsize=10)
        ax.set_xlabel("total memory (examples)")
        ax.set_ylabel("final ACC")
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="upper left", bbox_to_anchor=(1.0, 0.95),
               frameon=False, fontsize=8)
    fig.suptitle("final ACC vs memory size (mean ± std over seeds)", y=1.02)
    fig.tight_layout()
    return fig


def overview(runs: pd.DataFrame):
    """The one-page summary: final ACC and BWT (paper convention, T-1) per method, one column per stream.

    Bars: mean over seeds; black ticks: ± 1 sample std (none with one seed). Methods with several memory
    sizes get one bar per size. Read in ten seconds: higher ACC is better, BWT near 0 means no forgetting.
    """
    rows = [("ACC", NO_CONVENTION, "final ACC (accuracy, 0-1)"), ("BWT", "paper", "BWT (accuracy change, T-1)")]
    datasets = list(dict.fromkeys(runs["dataset"]))
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.6 * len(datasets), 6.4), squeeze=False)
    runs = runs.assign(run=[_label(m, mem) for m, mem in zip(runs["method"], runs["memory"])])
    order = list(dict.fromkeys(runs["run"]))
    palette = dict(zip(order, sns.color_palette("tab20" if len(order) > 10 else "tab10", len(order))))
    for col, dataset in enumerate(datasets):
        for row, (metric, conv, label) in enumerate(rows):
            ax = axes[row, col]
            one = runs[(runs["dataset"] == dataset) & (runs["metric"] == metric) & (runs["convention"] == conv)]
            present = [o for o in order if o in set(one["run"])]
            sns.barplot(data=one, y="run", x="value", hue="run", order=present, hue_order=present, palette=palette,
                        estimator="mean", errorbar="sd", err_kws={"linewidth": 1.2}, ax=ax, legend=False)
            ax.set_ylabel("")
            ax.set_xlabel(label)
            if metric == "ACC":
                ax.set_xlim(0, 1)
                ax.set_title(f"{dataset} ({int(one['n_tasks'].iloc[0])} tasks)" if len(one) else dataset,
                             fontsize=11)
            else:
                ax.axvline(0, color="0.3", linewidth=0.8)
            if col:
                ax.set_yticklabels([])
    n_seeds = runs.groupby(["dataset", "method", "memory"])["seed"].nunique()
    seeds = f"{n_seeds.min()}" if n_seeds.min() == n_seeds.max() else f"{n_seeds.min()}-{n_seeds.max()}"
    protocol = ", ".join(sorted(set(runs["protocol"].astype(str))))
    fig.suptitle(f"clrepro summary ({protocol}): mean over {seeds} seed(s), ticks = ± 1 std", y=1.0)
    fig.tight_layout()
    return fig


@one_line_errors
def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m analysis.plots")
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("heatmap")
    h.add_argument("--matrix", required=True)
    h.add_argument("--dataset", required=True)
    h.set_defaults(draw=lambda a: heatmap(pd.read_csv(a.matrix), a.dataset))
    c = sub.add_parser("curves")
    c.add_argument("--evals", required=True)
    c.add_argument("--dataset", required=True)
    c.set_defaults(draw=lambda a: curves(pd.read_csv(a.evals), a.dataset))
    o = sub.add_parser("overview")
    o.add_argument("--runs", required=True)
    o.set_defaults(draw=lambda a: overview(pd.read_csv(a.runs)))
    m = sub.add_parser("memory")
    m.add_argument("--summary", required=True)
    m.set_defaults(draw=lambda a: memory(pd.read_csv(a.summary)))
    for q in (h, c, o, m):
        q.add_argument("--png", required=True)
        q.add_argument("--pdf", required=True)
    args = p.parse_args(argv)
    sns.set_theme(style="whitegrid", context="paper")
    save(args.draw(args), args.png, args.pdf)
    print(f"[plots] {args.cmd} -> {args.png}, {args.pdf}")


if __name__ == "__main__":
    sys.exit(main())
