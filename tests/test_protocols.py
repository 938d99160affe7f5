"""Each paper under its own protocol, end to end through `./clrepro reproduce`: the shipped grids plan 5 seeds of
every cell at the protocol's sizes, and a reduced real-MNIST run of each protocol (layered on the shipped grid
with `base:`) writes records that name their protocol and the paper's own table beside the published values.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from methods.config import ROOT, load_config, validate, PROTOCOL_SCHEMA, load_yaml
from tests.conftest import SHARED_MNIST
from tests.test_workflow_data import clean_copy
from tests.test_workflow_trust import clrepro, job_stats, planned_specs, write

PROTOCOLS = sorted(p.stem for p in (ROOT / "config" / "protocols").glob("*.yaml") if p.stem != "schema")


@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_files_validate(name):
    protocol = validate(load_yaml(ROOT / "config" / "protocols" / f"{name}.yaml"), PROTOCOL_SCHEMA, name)
    assert protocol["name"] == name


def test_gem_and_agem_protocols_are_the_published_settings():
    gem = load_config(ROOT / "config" / "gem2017.yaml")["_protocol"]
    assert gem["batch_size"] == 10 and gem["log_every"] == 100 and gem["samples_per_task"]["rotations"] == 1000
    assert gem["hparams"]["gem"]["rotations"]["by_memory"][5120] == {"lr": 0.1, "memory_strength": 0.5}
    assert gem["hparams"]["ewc"]["rotations"] == {"lr": 0.01, "n_memories": 1000, "memory_strength": 1000}
    agem = load_config(ROOT / "config" / "agem2019.yaml")["_protocol"]
    assert agem["skip_tasks"] == 3 and agem["lca_batches"] == 10 and agem["model"]["n_hiddens"] == 256
    assert agem["samples_per_task"]["permutations"] == 60000 and agem["batch_size"] == 10
    assert agem["model"]["init"] == {"name": "truncated_normal", "std": 0.1, "bias": 0.1}  # A-GEM's TF1 init
    assert agem["hparams"]["agem"]["all"] == {"sample_size": 256, "memory_fill": "task_end_per_class"}
    assert agem["hparams"]["gem"]["all"] == {"qp_ridge": 0.001, "margin_mode": "lower_bound",
                                             "memory_fill": "task_end_per_class"}
    assert agem["hparams"]["ewc"]["permutations"] == {"lr": 0.03, "memory_strength": 10, "fisher": "running",
                                                      "fisher_update_after": 10, "fisher_ema_decay": 0.9}


def test_taagem2023_protocol_is_the_stored_setting():
    """published-numbers.md section 5 and the TA-A-GEM README: batch 10, lr 1e-3, TA scheduler at the
    README's constants, P = 3, Q x pools = 10 x 10 (50 x 2 on class split): a bound of 300 = the memory."""
    import inspect

    from methods.config import resolve_run
    from methods.registry import make_hparams
    from methods.taagem import TALRScheduler

    config = load_config(ROOT / "config" / "taagem2023.yaml")
    protocol = config["_protocol"]
    assert protocol["batch_size"] == 10 and protocol["task_images"] == "disjoint"
    assert protocol["model"] == {"n_layers": 2, "n_hiddens": 200} and protocol["test_examples_per_task"] == 10000
    sched = {p.name: p.default for p in inspect.signature(TALRScheduler).parameters.values()}
    assert (sched["decay"], sched["min_lr"], sched["patience"], sched["rel_improvement"], sched["jump"]) == \
        (0.9999, 1e-5, 5, 1e-4, 1.0)
    bounds = {}
    for dataset in config["datasets"]:
        spec = resolve_run(config, dataset, "taagem", 300, 0)
        hp = make_hparams("taagem", spec["hparams"])
        assert hp.lr == 1e-3 and hp.lr_scheduler and hp.samples_per_cluster == 3 and hp.sampling_rate == 1
        assert (hp.sched_decay, hp.sched_min_lr, hp.sched_patience, hp.sched_jump) == \
            (sched["decay"], sched["min_lr"], sched["patience"], sched["jump"])
        q, pools = hp.clusters_per_pool, hp.num_pools
        bounds[dataset] = (q, pools, q * hp.samples_per_cluster * pools)
        for method in ("online", "agem"):
            other = resolve_run(config, dataset, method, 300 if method == "agem" else 0, 0)["hparams"]
            assert other["lr"] == 1e-3 and not any("sched" in k for k in other)   # the TA scheduler is TA-A-GEM's
            make_hparams(method, other)   # and the values are the method's own
    assert bounds == {"ta_permutations": (10, 10, 300), "ta_rotations": (10, 10, 300), "ta_class_split": (50, 2, 300)}
    assert config["streams"]["ta_rotations"]["angles"] == "even"
    assert config["streams"]["ta_class_split"] == {"kind": "class_split", "n_tasks": 5, "classes_per_task": 2,
                                                   "min_deg": 0, "max_deg": 180}


@pytest.mark.slow
@pytest.mark.parametrize("grid,n_train", [("gem2017", 2 * 5 * 5), ("agem2019", 4 * 5), ("taagem2023", 3 * 3 * 5)])
def test_shipped_protocol_grids_plan_five_seeds_of_every_cell(tmp_path, grid, n_train):
    repo = clean_copy(tmp_path / "clone")
    proc = clrepro(repo, "-n", "-p", "--configfile", f"config/{grid}.yaml")
    specs = planned_specs(proc)
    assert job_stats(proc)["train"] == len(specs) == n_train
    cells = {(s["dataset"], s["method"], s["memory"]) for s in specs}
    for cell in cells:
        assert sorted(s["seed"] for s in specs if (s["dataset"], s["method"], s["memory"]) == cell) == [0, 1, 2, 3, 4]
    assert all(s["protocol"] == grid and s["reduced"] == {} for s in specs)
    if grid == "agem2019":
        assert all(s["n_tasks"] == 17 and s["samples_per_task"] == 60000 for s in specs)
    if grid == "taagem2023":   # 5 disjoint chunks of 12,000; a class-split task: all images of its classes
        full = {"ta_permutations": 12000, "ta_rotations": 12000, "ta_class_split": 60000}
        assert all(s["samples_per_task"] == full[s["dataset"]] and s["task_images"] == "disjoint"
                   and s["n_tasks"] == 5 and s["test_examples_per_task"] == 10000 and s["batch_size"] == 10
                   for s in specs)
        assert {s["memory"] for s in specs if s["method"] != "online"} == {300}
        assert {s["dataset"]: s["stream_def"].get("classes") for s in specs}["ta_class_split"] == \
            [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


REDUCED = {
    "gem2017": {"base": "config/gem2017.yaml", "datasets": ["permutations"], "methods": ["online", "gem"],
                "streams": {"permutations": {"kind": "permutation", "n_tasks": 3}},
                "hparams": {"gem": {"patterns_per_experience": 20}}},
    "agem2019": {"base": "config/agem2019.yaml", "methods": ["online", "ewc", "agem"],
                 "streams": {"permutations": {"kind": "permutation", "n_tasks": 5}},
                 "hparams": {"agem": {"patterns_per_experience": 20}}},
}


@pytest.mark.slow
@pytest.mark.parametrize("protocol", sorted(REDUCED))
def test_reduced_real_run_of_each_protocol_writes_its_paper_table(tmp_path, protocol):
    repo = clean_copy(tmp_path / "clone")
    config = {**REDUCED[protocol], "seeds": [0, 1], "device": "cpu",
              "mnist": {"source_dir": str(SHARED_MNIST.resolve()), "download": False},
              "overrides": {"samples_per_task": {"permutations": 100},
                            "test_examples_per_task": {"permutations": 200}}}
    proc = clrepro(repo, "--configfile", write(repo, "small.yaml", config))
    n_runs = 2 * len(REDUCED[protocol]["methods"])
    assert job_stats(proc)["train"] == n_runs
    recs = [json.loads(p.read_text()) for p in (repo / "results" / "runs").rglob("*.json")]
    assert len(recs) == n_runs and {r["spec"]["protocol"] for r in recs} == {protocol}
    assert all(str(p.relative_to(repo)).startswith(f"results/runs/{protocol}/")
               for p in (repo / "results" / "runs").rglob("*.json"))
    table = pd.read_csv(repo / "results" / "tables" / f"paper_{protocol}.csv")
    ran = table[table["n_seeds"] > 0]
    assert set(ran["our_method"]) == set(REDUCED[protocol]["methods"])
    assert ran["verdict"].str.match(r"inside 95%|outside: |time: ").all()
    md = (repo / "results" / "tables" / f"paper_{protocol}.md").read_text()
    assert "REDUCED from the protocol" in md
    if protocol == "agem2019":
        agem = next(r for r in recs if r["spec"]["method"] == "agem")
        assert agem["spec"]["n_tasks"] == 2 and len(agem["R"]) == 2            # 5 tasks, the first 3 skipped
        assert [len(z) for z in agem["eval_log"]["first_batches"]] == [11, 11]  # Z_0 .. Z_10 per task
        assert 0 <= agem["metrics"]["LCA10"] <= 1 and "LCA10" in set(table["metric"])
        assert agem["method_info"]["memory_filled_per_task"] == [20, 20]         # filled at each task's end
        assert agem["stream"]["task_params"] == ["permutation"] * 2
        ewc = next(r for r in recs if r["spec"]["method"] == "ewc")           # A-GEM's own EWC and TF init
        assert ewc["spec"]["hparams"]["fisher"] == "running" and ewc["spec"]["model"]["init"]["std"] == 0.1


@pytest.mark.slow
def test_reduced_real_run_of_taagem2023_end_to_end(tmp_path):
    """config/taagem2023.yaml cut to TA-A-GEM, one seed, 60 examples per task and 200 test images: the three
    streams built by the workflow (the class split's classes and labels, the even angles), the records and
    the tables. (A-GEM and online take the same code paths; the shipped grid's plan is checked above.)"""
    repo = clean_copy(tmp_path / "clone")
    datasets = ("ta_permutations", "ta_rotations", "ta_class_split")
    config = {"base": "config/taagem2023.yaml", "methods": ["taagem"], "seeds": [0], "device": "cpu",
              "mnist": {"source_dir": str(SHARED_MNIST.resolve()), "download": False},
              "overrides": {"samples_per_task": {d: 60 for d in datasets},
                            "test_examples_per_task": {d: 200 for d in datasets}}}
    proc = clrepro(repo, "--configfile", write(repo, "small.yaml", config))
    assert job_stats(proc)["train"] == 3 and job_stats(proc)["stream"] == 3
    recs = {r["spec"]["dataset"]: r
            for r in (json.loads(p.read_text()) for p in (repo / "results" / "runs").rglob("*.json"))}
    assert sorted(recs) == sorted(datasets) and {r["spec"]["protocol"] for r in recs.values()} == {"taagem2023"}
    for rec in recs.values():
        assert len(rec["R"]) == 5 and len(rec["eval_log"]["task"]) == 6   # task ends only, plus the baseline
        assert rec["timing"]["examples"] == 5 * 60 and rec["spec"]["task_images"] == "disjoint"
        info = rec["method_info"]
        assert info["samples_bound"] == 300 and 0 < info["samples_stored"] <= 300 and "final_lr" in info
    split = recs["ta_class_split"]
    assert split["stream"]["task_params"] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert split["method_info"]["num_pools"] == split["method_info"]["pools_used"] == 2   # labels 0/1 only
    acc = np.array(split["eval_log"]["acc"]) * 200      # each task scored on 200 images of its own classes
    np.testing.assert_allclose(acc, np.round(acc), atol=1e-9)
    assert recs["ta_rotations"]["stream"]["task_params"] == [0.0, 36.0, 72.0, 108.0, 144.0]
    assert "no published table" in (repo / "results" / "tables" / "paper_taagem2023.md").read_text()
    assert "ta_class_split" in (repo / "results" / "tables" / "main_paper.md").read_text()
