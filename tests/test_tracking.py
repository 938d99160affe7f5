"""MLflow as a view of the run records: a small real grid (the real trainer on real MNIST, online + ewc, 2 seeds,
3 rotation tasks of 30 examples, 200 test images, an evaluation every 10 examples) imported into a temporary
SQLite store and read back with MlflowClient: params, tags and metrics equal the records' (metrics recomputed
with analysis.metrics), one history point per evaluation with the examples seen as the step, re-imports add
nothing and a changed record replaces its run. Last, `./clrepro reproduce mlflow` end to end in a fresh copy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from analysis import tracking
from analysis.metrics import all_metrics
from methods.config import ROOT, record_path
from tests.conftest import SHARED_MNIST
from tests.test_workflow_data import clean_copy

METHODS = ("online", "ewc")
SEEDS = (0, 1)
LOG_EVERY = 10


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("grid")


@pytest.fixture
def grid(run_train, grid_root) -> list[Path]:
    """The grid's records at their workflow paths (results/runs/...) under a temp root; trained once per module."""
    paths = sorted(grid_root.rglob("*.json"))
    if not paths:
        for method in METHODS:
            for seed in SEEDS:
                tmp = grid_root / f"{method}{seed}.part"
                rec, _ = run_train(method, n_tasks=3, samples=30, n_test=200, seed=seed,
                                   overrides={"log_every": LOG_EVERY}, out=tmp)
                dest = grid_root / record_path(rec["spec"])
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp.rename(dest)
        paths = sorted(grid_root.rglob("*.json"))
    assert len(paths) == len(METHODS) * len(SEEDS)
    return paths


def copy_grid(grid: list[Path], grid_root: Path, dest: Path) -> list[Path]:
    """A private copy (for the tests that change a record)."""
    out = []
    for path in grid:
        target = dest / path.relative_to(grid_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        out.append(target)
    return out


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A freshly created MLflow SQLite database (creating one runs MLflow's migrations: seconds), made once."""
    db = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(empty_store, tmp_path) -> str:
    """A private empty store for one test."""
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy2(empty_store, db)
    return f"sqlite:///{db}"


def leaves(spec: dict, prefix: str = "") -> dict:
    """Every value of the nested spec under its dotted name (an empty dict is a value of its own)."""
    out = {}
    for key, value in spec.items():
        if isinstance(value, dict) and value:
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def active_runs(client: MlflowClient) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000)


def test_import_matches_the_records(grid, store, tmp_path):
    summary = tracking.import_records(grid, store)
    print(f"imported {len(grid)} records in {summary['seconds']} s")
    assert (summary["new"], summary["replaced"], summary["unchanged"]) == (len(grid), 0, 0)
    client = MlflowClient(store)
    assert len(active_runs(client)) == len(grid)
    for path in grid:
        rec = json.loads(path.read_text())
        spec, log = rec["spec"], rec["eval_log"]
        run = client.get_run(summary["runs"][tracking.record_id(path)])
        assert run.info.status == "FINISHED"
        assert client.get_experiment(run.info.experiment_id).name == spec["protocol"]

        # params: the resolved spec, flattened, every value as written (JSON for non-strings)
        params = run.data.params
        expected = leaves(spec)
        assert set(params) == set(expected)
        for key, value in expected.items():
            assert (params[key] if isinstance(value, str) else json.loads(params[key])) == value, key
        assert json.loads(params["hparams.lr"]) == spec["hparams"]["lr"]
        assert params["method"] == spec["method"] and json.loads(params["seed"]) == spec["seed"]

        # tags: provenance and the record's content hash
        tags = run.data.tags
        assert tags["clrepro.record_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert tags["clrepro.record_path"] == str(path.resolve())
        for name, digest in rec["stream"]["sha256"].items():
            assert tags[f"clrepro.stream.sha256.{name}"] == digest
        assert tags["clrepro.stream.mnist_manifest_sha256"] == rec["stream"]["mnist_manifest_sha256"]
        assert tags["clrepro.git.commit"] == rec["env"]["git"]["commit"]
        assert tags["clrepro.device"] == rec["env"]["device"] == "cpu"

        # final metrics: recomputed from R and b, under both conventions
        fresh = all_metrics(rec["R"], rec["b"])
        metrics = run.data.metrics
        for name, value in fresh.items():
            for conv, v in (value.items() if isinstance(value, dict) else [(None, value)]):
                key = name if conv is None else f"{name}.{conv}"
                assert metrics[key] == pytest.approx(v, abs=1e-12, nan_ok=True), key
        assert {"ACC", "LA", "BWT.paper", "BWT.code", "FWT.paper", "FWT.code"} <= set(metrics)
        assert metrics["examples_per_s"] == pytest.approx(rec["timing"]["examples_per_s"], abs=1e-9)

        # one point per evaluation, stepped by the examples seen
        acc = np.asarray(log["acc"])
        steps = log["examples_seen"]
        assert len(steps) == spec["n_tasks"] * spec["samples_per_task"] // LOG_EVERY + 1  # 0, 10, ..., 90
        for j in range(spec["n_tasks"]):
            hist = client.get_metric_history(run.info.run_id, f"acc/task_{j}")
            assert len(hist) == len(steps)
            assert [m.step for m in sorted(hist, key=lambda m: m.timestamp)] == steps
            by_step = {m.step: m.value for m in hist}
            assert [by_step[s] for s in steps] == pytest.approx(acc[:, j].tolist(), abs=1e-12)
        mean = sorted(client.get_metric_history(run.info.run_id, "acc/mean"), key=lambda m: m.timestamp)
        assert [m.step for m in mean] == steps
        assert [m.value for m in mean] == pytest.approx(acc.mean(axis=1).tolist(), abs=1e-12)
        assert mean[-1].value == pytest.approx(fresh["ACC"], abs=1e-12)
        seen = sorted(client.get_metric_history(run.info.run_id, "acc/mean_seen"), key=lambda m: m.timestamp)
        assert [m.value for m in seen] == pytest.approx(
            [acc[i, : t + 1].mean() for i, t in enumerate(log["task"])], abs=1e-12)

        # the record itself is the run's artifact
        local = client.download_artifacts(run.info.run_id, path.name, str(tmp_path / run.info.run_id))
        assert Path(local).read_bytes() == path.read_bytes()


def test_reimport_adds_nothing(grid, store):
    first = tracking.import_records(grid, store)
    second = tracking.import_records(grid, store)
    assert (second["new"], second["replaced"], second["unchanged"]) == (0, 0, len(grid))
    assert second["runs"] == first["runs"]
    client = MlflowClient(store)
    runs = active_runs(client)
    assert len(runs) == len(grid)
    exps = [e.experiment_id for e in client.search_experiments()]
    assert len(client.search_runs(exps, run_view_type=ViewType.ALL, max_results=1000)) == len(grid)
    assert len({r.data.tags["clrepro.record_sha256"] for r in runs}) == len(grid)


def test_changed_record_replaces_its_run(grid, grid_root, store, tmp_path):
    paths = copy_grid(grid, grid_root, tmp_path / "copy")
    first = tracking.import_records(paths, store)
    changed = paths[0]
    rec = json.loads(changed.read_text())
    rec["timing"]["train_s"] += 1.5  # as a rerun of the same spec would: same path, new content
    changed.write_text(json.dumps(rec))
    second = tracking.import_records(paths, store)
    assert (second["new"], second["replaced"], second["unchanged"]) == (0, 1, len(paths) - 1)
    rid = tracking.record_id(changed)
    client = MlflowClient(store)
    old, new = client.get_run(first["runs"][rid]), client.get_run(second["runs"][rid])
    assert old.info.run_id != new.info.run_id
    assert old.info.lifecycle_stage == "deleted" and new.info.lifecycle_stage == "active"
    assert new.data.tags["clrepro.record_sha256"] == hashlib.sha256(changed.read_bytes()).hexdigest()
    assert new.data.metrics["train_s"] == pytest.approx(rec["timing"]["train_s"], abs=1e-12)
    runs = active_runs(client)
    assert len(runs) == len(paths)
    assert sorted(r.data.tags["clrepro.record_path"] for r in runs) == sorted(map(tracking.record_id, paths))
    for path in paths[1:]:
        assert second["runs"][tracking.record_id(path)] == first["runs"][tracking.record_id(path)]


def test_half_written_run_is_replaced(grid, store):
    """A run without the content-hash tag (an import killed midway) is never taken for a complete one."""
    importer = tracking.Importer(store)
    client = importer.client
    exp_id = importer.experiment(json.loads(grid[0].read_text())["spec"]["protocol"])
    partial = client.create_run(exp_id, tags={tracking.PATH_TAG: tracking.record_id(grid[0])}).info.run_id
    summary = tracking.import_records(grid[:1], store)
    assert summary["replaced"] == 1
    assert client.get_run(partial).info.lifecycle_stage == "deleted"
    assert len(active_runs(client)) == 1


def test_cli_summary_and_one_line_errors(grid, store, tmp_path):
    out = tmp_path / "imported.json"
    proc = subprocess.run([sys.executable, "-m", "analysis.tracking", "--store", store, "--out", str(out),
                           *map(str, grid)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(grid)} new, 0 replaced, 0 unchanged" in proc.stdout
    summary = json.loads(out.read_text())
    assert summary["records"] == summary["new"] == len(grid) and len(summary["runs"]) == len(grid)

    bad = tmp_path / "bad.json"
    rec = json.loads(grid[0].read_text())
    rec["R"][0][0] += 0.5  # no longer the matrix of its own evaluation log
    bad.write_text(json.dumps(rec))
    proc = subprocess.run([sys.executable, "-m", "analysis.tracking", "--store", store, str(grid[1]), str(bad)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "bad.json" in proc.stderr
    assert len(active_runs(MlflowClient(store))) == len(grid)  # nothing imported from a refused batch


@pytest.mark.slow
def test_reproduce_mlflow_end_to_end(tmp_path):
    """`./clrepro reproduce mlflow` in a fresh copy: tiny grid trained and imported; a forced rerun adds nothing."""
    repo = clean_copy(tmp_path / "clone")
    (repo / "small.yaml").write_text(json.dumps({
        "mnist": {"source_dir": str(SHARED_MNIST.resolve()), "download": False},
        "streams": {"rotations": {"kind": "rotation", "n_tasks": 2}},
        "datasets": ["rotations"], "methods": ["online", "ewc"], "memories": [500], "seeds": [0],
        "device": "cpu",
        "overrides": {"samples_per_task": {"rotations": 20}, "test_examples_per_task": {"rotations": 100},
                      "log_every": 10},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAKEMAKE", "PYTEST"))}
    env["CUDA_VISIBLE_DEVICES"] = ""

    def reproduce(*args):
        proc = subprocess.run(["./clrepro", "reproduce", "mlflow", "--configfile", "small.yaml", *args], cwd=repo,
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        return json.loads((repo / "results" / "mlflow" / "imported.json").read_text())

    first = reproduce()
    records = sorted(p.relative_to(repo).as_posix() for p in (repo / "results" / "runs").rglob("*.json"))
    assert len(records) == 2 and sorted(first["runs"]) == records and first["new"] == 2
    assert not (repo / "results" / "tables").exists()  # only what `mlflow` needs ran, no tables
    again = reproduce("--forcerun", "mlflow")
    assert (again["new"], again["replaced"], again["unchanged"]) == (0, 0, 2) and again["runs"] == first["runs"]
    client = MlflowClient(f"sqlite:///{repo / 'results' / 'mlflow' / 'mlflow.db'}")
    runs = active_runs(client)
    assert sorted(r.data.tags["clrepro.record_path"] for r in runs) == records
