"""Aggregation, paper-style tables, the published comparison and the plots.

Real run records (two short runs on real MNIST) check that table cells equal metrics recomputed by hand from
R and b. The flag logic, error paths and plots use small hand-made records: they test bookkeeping, not
learning, and hand-made values make every expected number obvious.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import aggregate, plots, published, records, tables
from data_prep.errors import ClreproError
from methods.config import load_config, resolve_run


def fake_record(dataset, method, memory, seed, R, b, protocol="mer2019", samples=10):
    """A record whose eval_log is consistent with R and b: b, then (middle, end) evaluations per task."""
    R, b = np.asarray(R, float), np.asarray(b, float)
    T = len(b)
    task, seen, acc = [0], [0], [b.tolist()]
    for t in range(T):
        task += [t, t]
        seen += [t * samples + samples // 2, (t + 1) * samples]
        acc += [((R[t] + (b if t == 0 else R[t - 1])) / 2).tolist(), R[t].tolist()]
    return {"spec": {"dataset": dataset, "method": method, "memory": memory, "seed": seed, "protocol": protocol,
                     "n_tasks": T, "samples_per_task": samples, "test_examples_per_task": 100, "log_every": 5,
                     "batch_size": 1, "reduced": {"samples_per_task": 1000}},
            "eval_log": {"task": task, "examples_seen": seen, "acc": acc},
            "R": R.tolist(), "b": b.tolist(), "metrics": {"ACC": 0.123456},  # deliberately wrong
            "timing": {"examples_per_s": 100.0, "train_s": 1.0}}


def hand_metrics(R, b):
    """The four table metrics written out directly (independent of analysis.metrics)."""
    R, b = np.asarray(R, float), np.asarray(b, float)
    T = len(b)
    bwt_sum = sum(R[T - 1, i] - R[i, i] for i in range(T - 1))
    fwt_sum = sum(R[i - 1, i] - b[i] for i in range(1, T))
    return {("ACC", "-"): R[T - 1].mean(), ("LA", "-"): np.trace(R) / T,
            ("BWT", "paper"): bwt_sum / (T - 1), ("BWT", "code"): bwt_sum / T,
            ("FWT", "paper"): fwt_sum / (T - 1), ("FWT", "code"): fwt_sum / T}


R1 = [[0.9, 0.1, 0.2], [0.7, 0.8, 0.3], [0.6, 0.5, 0.95]]
R2 = [[0.8, 0.2, 0.1], [0.6, 0.9, 0.2], [0.5, 0.7, 0.85]]
B = [0.1, 0.15, 0.05]


@pytest.fixture(scope="module")
def real_records(tmp_path_factory, make_stream, mnist_dir):
    """Two real runs (online, 3 rotation tasks, 50 examples each, 200 test images per task)."""
    import subprocess
    import sys

    from methods.config import ROOT, prepare, resolve_run
    from tests.conftest import SHARED_MNIST

    stream = make_stream("rotations", n_tasks=3)
    config = prepare({"datasets": ["rotations"], "methods": ["online"], "memories": [500], "seeds": [0, 1],
                      "device": "cpu", "mnist": {"source_dir": str(SHARED_MNIST)},
                      "streams": {"rotations": {"kind": "rotation", "n_tasks": 3}},
                      "overrides": {"samples_per_task": {"rotations": 50},
                                    "test_examples_per_task": {"rotations": 200}, "log_every": 10},
                      "hparams": {"online": {"lr": 0.1}}})
    out = tmp_path_factory.mktemp("real_runs")
    paths = []
    for seed in (0, 1):
        spec = resolve_run(config, "rotations", "online", 0, seed)
        path = out / f"seed{seed}.json"
        subprocess.run([sys.executable, "-m", "methods.train", "--spec", json.dumps(spec), "--stream",
                        str(stream.path), "--mnist", str(mnist_dir), "--out", str(path)],
                       cwd=ROOT, check=True, capture_output=True)
        paths.append(path)
    return paths


def test_tables_from_real_records_equal_hand_recomputed_metrics(real_records, tmp_path):
    recs = [json.loads(p.read_text()) for p in real_records]
    t = tmp_path
    aggregate.main(["--out", str(t / "runs.csv"), "--matrix", str(t / "m.csv"), "--evals", str(t / "e.csv"),
                    *map(str, real_records)])
    tables.main(["summary", "--runs", str(t / "runs.csv"), "--out", str(t / "summary.csv")])
    summary = pd.read_csv(t / "summary.csv")
    per_seed = [hand_metrics(r["R"], r["b"]) for r in recs]
    assert per_seed[0][("ACC", "-")] != per_seed[1][("ACC", "-")]  # two seeds really differ
    for (metric, conv), _ in per_seed[0].items():
        vals = np.array([m[(metric, conv)] for m in per_seed])
        row = summary[(summary.metric == metric) & (summary.convention == conv)].iloc[0]
        assert row["mean"] == pytest.approx(vals.mean(), abs=1e-9)
        assert row["std"] == pytest.approx(vals.std(ddof=1), abs=1e-9)
        assert row["n_seeds"] == 2 and row["seeds"] == "0 1"
    for conv in ("paper", "code"):
        tables.main(["main", "--summary", str(t / "summary.csv"), "--convention", conv, "--md", str(t / f"{conv}.md"),
                     "--tex", str(t / f"{conv}.tex"), "--csv", str(t / f"{conv}.csv")])
        csv = pd.read_csv(t / f"{conv}.csv", dtype=str)
        assert csv["convention"].tolist() == [conv]
        for metric in ("ACC", "BWT", "FWT", "LA"):
            key = (metric, "-" if metric in ("ACC", "LA") else conv)
            vals = np.array([m[key] for m in per_seed])
            assert csv[f"rotations {metric}"].iloc[0] == f"{vals.mean():.3f} ± {vals.std(ddof=1):.3f}"
        assert csv["rotations n"].iloc[0] == "2"
        md = (t / f"{conv}.md").read_text()
        assert f"Convention `{conv}`" in md and "| online" in md and "### rotations" in md and "| ACC " in md
        tex = (t / f"{conv}.tex").read_text()
        assert r"\toprule" in tex and r"\bottomrule" in tex and f"Convention {conv}" in tex and r"$\pm$" in tex
    # the curves keep the real evaluation log
    evals = pd.read_csv(t / "e.csv")
    log = recs[0]["eval_log"]
    first = evals[(evals.seed == 0) & (evals.eval_task == 0)]
    assert first["acc"].tolist() == pytest.approx([row[0] for row in log["acc"]])
    assert first["examples_seen"].tolist() == log["examples_seen"]


def test_metrics_are_recomputed_never_read_from_the_file():
    rec = fake_record("rotations", "online", 0, 0, R1, B)
    long = records.tidy([rec])
    acc = long[(long.metric == "ACC")]["value"].item()
    assert acc == pytest.approx(np.mean(R1[-1])) and acc != 0.123456
    assert any("ACC[-]: stored 0.123456" in m for m in records.stored_mismatches([rec]))
    conventions = set(long["convention"])
    assert conventions == {"paper", "code", "-"}


def test_corrupt_records_are_refused(tmp_path):
    rec = fake_record("rotations", "online", 0, 0, R1, B)
    rec["R"][2][0] = 0.99  # no longer the matrix of its own evaluation log
    (tmp_path / "bad.json").write_text(json.dumps(rec))
    with pytest.raises(ClreproError, match="differ from the matrix rebuilt"):
        records.load(tmp_path / "bad.json")
    rec = fake_record("rotations", "online", 0, 0, R1, B)
    rec["spec"]["n_tasks"] = 4
    with pytest.raises(ClreproError, match="expected"):
        records.check(rec)
    (tmp_path / "trunc.json").write_text("{")
    with pytest.raises(ClreproError, match="cannot read"):
        records.load(tmp_path / "trunc.json")


def test_single_seed_cells_print_the_mean_only():
    summary = tables.summarize(records.tidy([fake_record("rotations", "gem", 500, 0, R1, B)]))
    table = tables.main_table(summary, "paper")
    assert table.loc[("gem", 500), ("rotations", "ACC")] == f"{np.mean(R1[-1]):.3f}"
    assert table.loc[("gem", 500), ("rotations", "n")] == "1"
    with pytest.raises(ValueError, match="unknown convention"):
        tables.main_table(summary, "percent")


def _summary(rows, protocol="gem2017"):
    base = {"protocol": protocol, "n_tasks": 20, "samples_per_task": 1000, "test_examples_per_task": 10000,
            "log_every": 100, "batch_size": 10, "reduced": "-", "seeds": "0"}
    return pd.DataFrame([base | r for r in rows])


def test_published_check_is_a_95_percent_interval_and_only_for_the_matching_protocol():
    from scipy import stats

    pub = pd.read_csv("analysis/published.csv")
    t4 = stats.t.ppf(0.975, 4)
    # a single published run (GEM, seed 0): half-width t * s * sqrt(1 + 1/n); n = 5, s = 0.01 -> 2.7764 * 0.01 * 1.0954 = 0.030414
    half = t4 * 0.01 * (1 + 1 / 5) ** 0.5
    assert half == pytest.approx(0.030414, abs=1e-6)
    rows = [
        {"dataset": "permutations", "method": "online", "memory": 0, "metric": "ACC", "convention": "-",
         "mean": 0.602 + half - 1e-4, "std": 0.01, "n_seeds": 5},          # just inside
        {"dataset": "rotations", "method": "online", "memory": 0, "metric": "ACC", "convention": "-",
         "mean": 0.531 + half + 1e-4, "std": 0.01, "n_seeds": 5},          # just outside
        {"dataset": "permutations", "method": "ewc", "memory": 0, "metric": "ACC", "convention": "-",
         "mean": 0.619, "std": float("nan"), "n_seeds": 1},                # one seed: no interval
        # BWT under the code convention (published = averaged over T); the paper-convention row is ignored
        {"dataset": "permutations", "method": "online", "memory": 0, "metric": "BWT", "convention": "code",
         "mean": -0.190, "std": 0.010, "n_seeds": 2},
        {"dataset": "permutations", "method": "online", "memory": 0, "metric": "BWT", "convention": "paper",
         "mean": -0.5, "std": 0.0, "n_seeds": 2},
        {"dataset": "permutations", "method": "online", "memory": 0, "metric": "train_s", "convention": "-",
         "mean": 4.0, "std": 0.1, "n_seeds": 5},
        {"dataset": "permutations", "method": "gem", "memory": 5120, "metric": "train_s", "convention": "-",
         "mean": 20.0, "std": 0.1, "n_seeds": 5},
    ]
    cmp = published.compare(_summary(rows), pub, "gem2017").set_index(["dataset", "our_method", "metric"])
    assert cmp.loc[("permutations", "online", "ACC"), "verdict"] == "inside 95%"
    assert cmp.loc[("rotations", "online", "ACC"), "verdict"] == "outside: unexplained"
    assert cmp.loc[("permutations", "ewc", "ACC"), "verdict"] == "n=1: no interval"
    bwt = cmp.loc[[("permutations", "online", "BWT")]]
    assert len(bwt) == 1 and bwt["ours_mean"].item() == -0.190
    assert cmp.loc[("rotations", "gem", "ACC"), "verdict"] == "not run"
    gem_time = cmp.loc[("permutations", "gem", "train_s")]
    assert gem_time["ours_ratio"] == pytest.approx(5.0) and gem_time["published_ratio"] == pytest.approx(77 / 11)
    # runs of another protocol are never compared with a published number
    other = published.compare(_summary(rows, protocol="mer2019"), pub, "gem2017")
    assert (other["verdict"] == "not run").all()
    # a published mean over 5 seeds (A-GEM): difference of means, t * s * sqrt(1/n + 1/m)
    agem = _summary([{"dataset": "permutations", "method": "agem", "memory": 4250, "metric": "ACC",
                      "convention": "-", "mean": 0.891 + 0.9 * t4 * 0.01 * (2 / 5) ** 0.5, "std": 0.01,
                      "n_seeds": 5}], protocol="agem2019")
    row = published.compare(agem, pub, "agem2019").set_index(["our_method", "metric"]).loc[("agem", "ACC")]
    assert row["verdict"] == "inside 95%"
    shown = published.display(published.compare(agem, pub, "agem2019"), "agem2019")
    assert shown.loc[("permutations", "agem ↔ A-GEM"), ("ACC", "paper")] == "89.1 ± 0.1"


def test_published_numbers_are_the_papers_values():
    pub = pd.read_csv("analysis/published.csv")
    gem = pub[pub["paper"] == "GEM 2017"].set_index(["dataset", "published_method", "metric"])
    assert gem.loc[("permutations", "GEM", "ACC"), "value"] == 0.826
    assert gem.loc[("rotations", "EWC", "FWT"), "value"] == 0.552
    assert gem.loc[("rotations", "single", "BWT"), "value"] == -0.090
    assert gem.loc[("rotations", "GEM", "train_s"), "value"] == 135
    assert (gem["our_protocol"] == "gem2017").all() and (gem["published_n"] == 1).all()
    for m in ("ACC", "BWT", "FWT"):
        assert len(gem.xs(m, level="metric")) == 8 and (gem.xs(m, level="metric")["convention"] == "code").all()
    agem = pub[pub["paper"] == "A-GEM 2019"].set_index(["published_method", "metric"])
    assert agem.loc[("A-GEM", "ACC"), "value"] == 0.891 and agem.loc[("VAN", "FGT"), "value"] == 0.51
    assert agem.loc[("GEM", "LCA10"), "value"] == 0.23 and agem.loc[("A-GEM", "train_s"), "value"] == 477
    assert (agem["our_protocol"] == "agem2019").all()
    mapping = dict(zip(pub["published_method"], pub["our_method"]))
    assert mapping == {"single": "online", "EWC": "ewc", "multimodal": "taskinput", "GEM": "gem",
                       "independent": "independent", "VAN": "online", "A-GEM": "agem"}


def test_mer_table_is_ra_la_bti_across_memories():
    rows = []
    for mem, ra in ((5120, 0.9), (500, 0.8)):
        rows += [{"dataset": "rotations", "method": "meralg1", "memory": mem, "metric": "ACC", "convention": "-",
                  "mean": ra, "std": 0.01, "n_seeds": 2},
                 {"dataset": "rotations", "method": "meralg1", "memory": mem, "metric": "LA", "convention": "-",
                  "mean": 0.85, "std": 0.01, "n_seeds": 2},
                 {"dataset": "rotations", "method": "meralg1", "memory": mem, "metric": "BWT", "convention": "code",
                  "mean": ra - 0.85, "std": 0.01, "n_seeds": 2},
                 {"dataset": "rotations", "method": "meralg1", "memory": mem, "metric": "BWT", "convention": "paper",
                  "mean": 9.0, "std": 0.01, "n_seeds": 2}]
    table = published.mer_table(_summary(rows, protocol="mer2019"))
    assert list(table.columns) == [(5120, "RA"), (5120, "LA"), (5120, "BTI"), (500, "RA"), (500, "LA"), (500, "BTI")]
    assert table.loc[("rotations", "meralg1"), (500, "BTI")] == "-0.050 ± 0.010"


def plot_inputs():
    recs = []
    for seed, R in enumerate((R1, R2)):
        recs.append(fake_record("rotations", "online", 0, seed, R, B))
        for mem, shift in ((200, 0.0), (500, 0.02)):
            recs.append(fake_record("rotations", "gem", mem, seed, np.clip(np.asarray(R) + shift, 0, 1), B))
    return (records.matrix_long(recs), records.eval_long(recs, max_tasks=2),
            tables.summarize(records.tidy(recs)))


@pytest.mark.parametrize("kind", ["heatmap", "curves", "memory"])
def test_plots_are_written_and_byte_identical(kind, tmp_path):
    matrix, evals, summary = plot_inputs()
    draw = {"heatmap": lambda: plots.heatmap(matrix, "rotations"), "curves": lambda: plots.curves(evals, "rotations"),
            "memory": lambda: plots.memory(summary)}[kind]
    digests = []
    for k in range(2):
        png, pdf = tmp_path / f"{k}.png", tmp_path / f"{k}.pdf"
        fig = draw()
        assert len(fig.axes) >= (3 if kind != "memory" else 1)
        plots.save(fig, str(png), str(pdf))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
        digests.append((png.read_bytes(), pdf.read_bytes()))
    assert digests[0] == digests[1]


def test_heatmap_shows_the_seed_mean_of_R():
    matrix, _, _ = plot_inputs()
    fig = plots.heatmap(matrix, "rotations")
    texts = [t.get_text() for t in fig.axes[0].texts]  # first panel: online, annotated
    expected = [f"{v:.2f}" for v in ((np.asarray(R1) + np.asarray(R2)) / 2).ravel()]
    assert texts == expected
    with pytest.raises(ClreproError, match="no accuracy-matrix rows"):
        plots.heatmap(matrix, "permutations")


def test_curve_tasks_keep_first_and_last():
    assert records.curve_tasks(3, 5) == [0, 1, 2]
    assert records.curve_tasks(100, 5) == [0, 25, 50, 74, 99]
    evals = records.eval_long([fake_record("rotations", "online", 0, 0, R1, B)], max_tasks=2)
    assert sorted(evals["eval_task"].unique()) == [0, 2]


def test_readme_results_section_is_generated_from_the_snapshot_tables():
    """No hand-typed numbers: README's results section equals what analysis.readme renders from docs/results."""
    from analysis import readme

    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    body = text.split(readme.BEGIN, 1)[1].split(readme.END, 1)[0].strip()
    names = re.findall(r"^#### `(\w+\.md)`$", body, re.M)
    assert names, "the README's results section names no table"
    assert body == readme.render([root / "docs" / "results" / n for n in names]).strip()


def test_readme_splice_replaces_only_the_marked_section(tmp_path):
    from analysis import readme

    doc = f"intro\n{readme.BEGIN}\nold numbers\n{readme.END}\noutro\n"
    out = readme.splice(doc, "new table")
    assert out == f"intro\n{readme.BEGIN}\nnew table\n{readme.END}\noutro\n"
    assert readme.splice(out, "new table") == out
    with pytest.raises(ClreproError, match="markers"):
        readme.splice("no markers here", "x")


def test_fidelity_compares_cut_down_grid_with_full_protocol():
    """analysis.fidelity: per cell, short-grid mean vs full-protocol mean of final ACC, difference and flag.
    Hand-made 2-task records whose ACC (mean of R's last row) is obvious."""
    from analysis import fidelity

    def run(method, seed, last_row):
        return fake_record("rotations", method, 500, seed, [[0.9, 0.1], last_row], [0.1, 0.1])

    short = records.tidy([run("gem", 0, [0.80, 0.80]), run("eralg4", 0, [0.70, 0.70]), run("ewc", 0, [0.6, 0.6])])
    full = records.tidy([run("gem", s, [v, v]) for s, v in enumerate([0.78, 0.80, 0.82])]
                        + [run("eralg4", s, [v, v]) for s, v in enumerate([0.64, 0.66])]
                        + [run("online", 0, [0.5, 0.5])])   # not in the short grid: left out
    table = fidelity.compare(short, full, tol=0.03).set_index("method")
    assert list(table.index) == ["gem", "eralg4", "ewc"]   # every short-grid cell; online (full only) is not
    assert table.loc["ewc", "n_full"] == 0 and not table.loc["ewc", "within"]   # never checked = not within
    assert table.loc["gem", "mean_full"] == pytest.approx(0.80) and table.loc["gem", "n_full"] == 3
    assert table.loc["gem", "diff"] == pytest.approx(0.0) and table.loc["gem", "within"]
    assert table.loc["eralg4", "diff"] == pytest.approx(0.05) and not table.loc["eralg4", "within"]
    text = fidelity.to_markdown(table.reset_index(), "ACC", 0.03)
    assert "| rotations | eralg4 | 500 | 0.700 (n=1) | 0.650 ± 0.014 (n=2) | +0.050 | **no** |" in text
    assert "1 of 3 cells within 0.03" in text and "1 with no full-protocol run" in text
    assert "| rotations | ewc | 500 | 0.600 (n=1) | no run | | **no** |" in text
    # BWT exists in two conventions: one is read, seeds are not double-counted
    bwt = fidelity.compare(short, full, "BWT", convention="code").set_index("method")
    assert bwt.loc["gem", "n_full"] == 3   # (R[1,0] - R[0,0]) / T with T = 2: (v - 0.9) / 2
    assert bwt.loc["gem", "mean_full"] == pytest.approx(((0.78 + 0.80 + 0.82) / 3 - 0.9) / 2)


def test_agem2019_snapshot_is_what_its_committed_records_render_to(tmp_path):
    """docs/gem.md and the README say docs/results/paper_agem2019.md was written from the run records kept in
    docs/results/runs/agem2019/: the same three analysis steps the workflow runs, applied to those records,
    write that file again byte for byte (and the records are the protocol's, one per method and seed)."""
    root = Path(__file__).resolve().parent.parent
    recs = sorted((root / "docs" / "results" / "runs" / "agem2019").rglob("*.json"))
    specs = [json.loads(p.read_text())["spec"] for p in recs]
    assert {s["protocol"] for s in specs} == {"agem2019"} and not any(s["reduced"] for s in specs)
    assert len({(s["method"], s["seed"]) for s in specs}) == len(recs) >= 15
    config = load_config(root / "config" / "agem2019.yaml")     # and runs of the protocol as it stands now
    config["_device"] = "cpu"
    for path, spec in zip(recs, specs):
        assert spec == resolve_run(config, spec["dataset"], spec["method"], spec["memory"], spec["seed"]), path
    aggregate.main(["--out", str(tmp_path / "runs.csv"), *map(str, recs)])
    tables.main(["summary", "--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "summary.csv")])
    published.main(["--summary", str(tmp_path / "summary.csv"), "--published", str(root / "analysis" / "published.csv"),
                    "--protocol", "agem2019", "--md", str(tmp_path / "t.md"), "--tex", str(tmp_path / "t.tex"),
                    "--csv", str(tmp_path / "t.csv")])
    assert (tmp_path / "t.md").read_text() == (root / "docs" / "results" / "paper_agem2019.md").read_text()
