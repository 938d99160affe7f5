"""Each paper under its own protocol, end to end through `./clrepro reproduce`: the shipped grids plan 5 seeds of
every cell at the protocol's sizes, and a reduced real-MNIST run of each protocol (layered on the shipped grid
with `base:`) writes records that name their protocol and the paper's own table beside the published values.
"""
from __future__ import annotations

import json

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
    assert agem["hparams"]["agem"]["all"] == {"sample_size": 256, "memory_fill": "task_end_per_class"}


@pytest.mark.slow
@pytest.mark.parametrize("grid,n_train", [("gem2017", 2 * 5 * 5), ("agem2019", 4 * 5)])
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


REDUCED = {
    "gem2017": {"base": "config/gem2017.yaml", "datasets": ["permutations"], "methods": ["online", "gem"],
                "streams": {"permutations": {"kind": "permutation", "n_tasks": 3}},
                "hparams": {"gem": {"patterns_per_experience": 20}}},
    "agem2019": {"base": "config/agem2019.yaml", "methods": ["online", "agem"],
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
    assert job_stats(proc)["train"] == 4
    recs = [json.loads(p.read_text()) for p in (repo / "results" / "runs").rglob("*.json")]
    assert len(recs) == 4 and {r["spec"]["protocol"] for r in recs} == {protocol}
    assert all(str(p.relative_to(repo)).startswith(f"results/runs/{protocol}/")
               for p in (repo / "results" / "runs").rglob("*.json"))
    table = pd.read_csv(repo / "results" / "tables" / f"paper_{protocol}.csv")
    ran = table[table["n_seeds"] > 0]
    assert set(ran["our_method"]) == {"online", "gem" if protocol == "gem2017" else "agem"}
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
