"""What you ask for is what runs, and nothing finished is ever lost: real `./clrepro reproduce` runs on a small
real grid (Rotations cut to 2 tasks of 20 real MNIST examples, online + ewc, 2 seeds) in a fresh copy of the
repository, exactly as a user types them.

Every case leaves the copy as it found it (all four records and every table built), so the cases can run in
any order after the module fixture's first build.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import SHARED_MNIST
from tests.test_workflow_data import clean_copy

pytestmark = pytest.mark.slow

SMALL = {
    "mnist": {"source_dir": str(SHARED_MNIST.resolve()), "download": False},
    "streams": {"rotations": {"kind": "rotation", "n_tasks": 2}},
    "datasets": ["rotations"], "methods": ["online", "ewc"], "memories": [500], "seeds": [0, 1],
    "device": "auto",
    "overrides": {"samples_per_task": {"rotations": 20}, "test_examples_per_task": {"rotations": 100},
                  "log_every": 10},
}


def clrepro(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`./clrepro reproduce ARGS` as a user runs it; no GPU visible, so `device: auto` means the CPU."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAKEMAKE", "PYTEST"))}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(["./clrepro", "reproduce", *args], cwd=repo, capture_output=True, text=True, env=env,
                          timeout=900)
    if check:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc


def job_stats(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Snakemake's 'Job stats' table (rule -> jobs); {} when nothing was to be done."""
    out = proc.stdout + proc.stderr
    if "Job stats:" not in out:
        return {}
    block = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def records(repo: Path) -> dict[str, str]:
    return digests(repo / "results" / "runs")


def outputs(repo: Path) -> dict[str, str]:
    """Every aggregate, table and plot."""
    return digests(repo / "results" / "tables") | digests(repo / "results" / "plots")


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


def planned_specs(proc: subprocess.CompletedProcess) -> list[dict]:
    """The resolved spec of every planned training job, from `-p` (the shell command passes it as --spec)."""
    return [json.loads(m) for m in re.findall(r"--spec '(\{.*?\})' --stream", proc.stdout + proc.stderr)]


def planned_priorities(proc: subprocess.CompletedProcess) -> dict[str, set[int]]:
    """method -> the `priority:` values of its planned training jobs (Snakemake prints it under the wildcards)."""
    found: dict[str, set[int]] = {}
    for method, value in re.findall(r"method=(\w+),.*\n\s+priority: (\d+)", proc.stdout + proc.stderr):
        found.setdefault(method, set()).add(int(value))
    return found


def small_records(repo: Path) -> list[Path]:
    """The four records small.yaml names (other cases leave records of other configs beside them)."""
    from methods.config import grid_record_paths, prepare, workflow_config

    config = prepare(workflow_config([repo / "small.yaml"], root=repo))
    config["_device"] = "cpu"
    return sorted(repo / p for p in grid_record_paths(config))


def write(repo: Path, name: str, config: dict) -> str:
    (repo / name).write_text(yaml.safe_dump(config))
    return name


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = clean_copy(tmp_path_factory.mktemp("trust"))
    write(repo, "small.yaml", SMALL)
    first = clrepro(repo, "--configfile", "small.yaml")
    assert job_stats(first)["train"] == 4
    assert len(records(repo)) == 4 and outputs(repo)
    return repo


def test_shipped_paper_grid_plans_exactly_its_own_sizes(tmp_path):
    """The README's paper-grid command: 395 jobs, every one at the protocol's full sizes (no default merged in)."""
    repo = clean_copy(tmp_path / "clone")
    proc = clrepro(repo, "-n", "-p", "--configfile", "config/paper.yaml")
    specs = planned_specs(proc)
    assert len(specs) == job_stats(proc)["train"] == 395
    full = {"rotations": 1000, "permutations": 1000, "many_permutations": 200}
    for spec in specs:
        assert spec["samples_per_task"] == full[spec["dataset"]], spec["dataset"]
        assert spec["test_examples_per_task"] == 10000 and spec["log_every"] == 100 and spec["batch_size"] == 1
        assert spec["reduced"] == {} and spec["protocol"] == "mer2019"
    # a user config layered on purpose on the paper grid keeps its sizes...
    write(repo, "one_seed.yaml", {"base": "config/paper.yaml", "seeds": [0]})
    specs = planned_specs(clrepro(repo, "-n", "-p", "--configfile", "one_seed.yaml"))
    assert len(specs) == 79 and all(s["reduced"] == {} for s in specs)
    # ...and `overrides: {}` on top of the reduced default grid really clears its reductions
    write(repo, "full_default.yaml", {"base": "config/config.yaml", "overrides": {}})
    specs = planned_specs(clrepro(repo, "-n", "-p", "--configfile", "full_default.yaml"))
    assert specs and all(s["reduced"] == {} and s["test_examples_per_task"] == 10000 for s in specs)
    # the default grid (no --configfile): every method on full-size Rotations and Permutations, memory 500,
    # seed 0, only test images and cadence cut, and it says so in every spec
    proc = clrepro(repo, "-n", "-p")
    specs = planned_specs(proc)
    assert len(specs) == 26 and {s["dataset"] for s in specs} == {"rotations", "permutations"}
    for spec in specs:
        assert spec["samples_per_task"] == 1000 and spec["n_tasks"] == 20 and spec["seed"] == 0
        assert spec["memory"] in (0, 500) and spec["test_examples_per_task"] == 2000
        assert spec["reduced"] == {"test_examples_per_task": 10000, "log_every": 100}
    # longest jobs first: DGR and GEM start before the short ones (else one of them runs alone at the end)
    priority = {m: max(v) for m, v in planned_priorities(proc).items()}
    assert len(priority) == 13
    assert min(priority["dgr"], priority["gem"]) > max(priority[m] for m in priority if m not in ("dgr", "gem"))
    # the README's way to add Many Permutations to it
    specs = planned_specs(clrepro(repo, "-n", "-p", "--config", "datasets=[rotations,permutations,many_permutations]"))
    assert len(specs) == 39 and {s["samples_per_task"] for s in specs if s["dataset"] == "many_permutations"} == {200}
    # lists of numbers on the command line (Snakemake hands nested values over as strings)
    specs = planned_specs(clrepro(repo, "-n", "-p", "--config", "seeds=[0,1]", "memories=[200]"))
    assert len(specs) == 52 and {s["seed"] for s in specs} == {0, 1}
    assert {s["memory"] for s in specs} == {0, 200}
    # what the default is checked against: the same cells at full size, 3 seeds, only the cadence cut
    specs = planned_specs(clrepro(repo, "-n", "-p", "--configfile", "config/default_full.yaml"))
    assert len(specs) == 78 and all(s["reduced"] == {"log_every": 100} and s["test_examples_per_task"] == 10000
                                    for s in specs)


def test_cuda_without_gpu_fails_at_parse_time_with_one_line_and_keeps_everything(repo):
    before_records, before_outputs = records(repo), outputs(repo)
    proc = clrepro(repo, "--configfile", "small.yaml", "--config", "device=cuda", check=False)
    assert proc.returncode == 1
    assert last_line(proc).startswith("error: device: cuda was asked for but this machine has no visible GPU")
    assert "set device: auto or device: cpu" in last_line(proc)
    assert (proc.stdout + proc.stderr).count("device: cuda was asked for") == 1
    assert job_stats(proc) == {}  # nothing was planned, let alone run
    assert records(repo) == before_records and outputs(repo) == before_outputs


@pytest.mark.parametrize("overrides,expected", [
    (["hparams={online: {lrr: 0.1}}"], "error: unknown hyper-parameter(s) ['lrr'] for method online"),
    (["hparams={ewc: {fisher: diagonal}}"], "error: hyper-parameter ewc.fisher must be one of ['task_batch', "
                                            "'running'], not 'diagonal'"),
    (["hparams={online: {lr: fast}}"], "error: hyper-parameter online.lr must be a number, not 'fast'"),
    (["hparams={onlne: {lr: 0.1}}"], "error: invalid config at hparams: 'onlne' is not one of ['online'"),
    (["methods=[online,gem]", "memories=[200]", "streams={rotations: {kind: rotation, n_tasks: 201}}"],
     "error: gem needs at least one memory slot per task, but memory 200 over 201 tasks gives 0"),
])
def test_bad_hyper_parameter_or_memory_fails_at_parse_time_and_keeps_everything(repo, overrides, expected):
    """Not inside every job: the whole grid is checked before anything is planned, and nothing is touched."""
    before_records, before_outputs = records(repo), outputs(repo)
    proc = clrepro(repo, "--configfile", "small.yaml", "--config", *overrides, check=False)
    assert proc.returncode == 1
    assert last_line(proc).startswith(expected)
    assert (proc.stdout + proc.stderr).count("error:") == 1
    assert job_stats(proc) == {}
    assert records(repo) == before_records and outputs(repo) == before_outputs


def test_deleted_record_is_retrained_alone(repo):
    victim = small_records(repo)[0]
    others = {k: v for k, v in records(repo).items() if k != str(victim.relative_to(repo / "results" / "runs"))}
    old = json.loads(victim.read_text())
    victim.unlink()
    proc = clrepro(repo, "--configfile", "small.yaml")
    assert job_stats(proc)["train"] == 1
    new = json.loads(victim.read_text())
    assert new["R"] == old["R"] and new["eval_log"] == old["eval_log"]  # same config, seed, device: same numbers
    assert {k: v for k, v in records(repo).items() if k in others} == others


def test_finished_records_whose_data_is_gone_are_not_retrained(repo):
    """Records copied into a clone without data/ (or data deleted to save space): the data is rebuilt, only
    the missing record trains, and the finished ones stay byte for byte."""
    victim = small_records(repo)[0]
    others = {k: v for k, v in records(repo).items() if k != str(victim.relative_to(repo / "results" / "runs"))}
    old = json.loads(victim.read_text())
    shutil.rmtree(repo / "data")
    victim.unlink()
    stats = job_stats(clrepro(repo, "--configfile", "small.yaml"))
    assert stats["train"] == 1 and stats["mnist"] == 1 and stats["stream"] == 1, stats
    assert json.loads(victim.read_text())["R"] == old["R"]
    assert {k: v for k, v in records(repo).items() if k in others} == others
    # rebuilding the data on purpose retrains nothing either
    stats = job_stats(clrepro(repo, "--configfile", "small.yaml", "--forcerun", "mnist"))
    assert stats.get("mnist") == 1 and "train" not in stats, stats


def test_new_stream_seed_rebuilds_the_stream_and_trains_its_runs_and_going_back_trains_nothing(repo):
    """A stream_seed change rebuilds the stream in place AND trains every run on it (it once rebuilt the stream
    and trained nothing, reporting success); the first seed's records stay, and returning to it only rebuilds."""
    before = records(repo)
    other = write(repo, "seed1.yaml", {"base": "small.yaml", "stream_seed": 1})
    stats = job_stats(clrepro(repo, "runs", "--configfile", other))     # README: "only the training runs"
    assert stats["stream"] == 1 and stats["train"] == 4, stats
    after = records(repo)
    assert {k: after[k] for k in before} == before
    new = [json.loads((repo / "results" / "runs" / k).read_text()) for k in set(after) - set(before)]
    assert len(new) == 4 and {r["stream"]["stream_seed"] for r in new} == {1}
    old = json.loads(small_records(repo)[0].read_text())
    assert old["stream"]["stream_seed"] == 0 and new[0]["stream"]["sha256"] != old["stream"]["sha256"]
    stats = job_stats(clrepro(repo, "--configfile", "small.yaml"))
    assert stats.get("stream") == 1 and "train" not in stats, stats
    for k in set(after) - set(before):      # leave the copy as found (other cases count its records)
        (repo / "results" / "runs" / k).unlink()


def test_same_data_elsewhere_and_auto_vs_cpu_plan_nothing(repo, tmp_path):
    copy = tmp_path / "mnist_copy"
    shutil.copytree(SHARED_MNIST, copy)
    moved = write(repo, "moved.yaml", {**SMALL, "mnist": {"source_dir": str(copy), "download": False},
                                       "device": "cpu"})
    proc = clrepro(repo, "-n", "--configfile", moved)
    assert "Nothing to be done" in proc.stdout + proc.stderr, job_stats(proc)


def test_corrupt_then_restored_mnist_retrains_nothing(repo, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(SHARED_MNIST, bad)
    name = "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress((bad / name).read_bytes()))
    data[100] ^= 0xFF
    (bad / name).write_bytes(gzip.compress(bytes(data)))
    before = records(repo)
    corrupt = write(repo, "corrupt.yaml", {"base": "small.yaml", "mnist": {"source_dir": str(bad), "download": False}})
    proc = clrepro(repo, "--configfile", corrupt, "--forcerun", "mnist", check=False)
    assert proc.returncode != 0
    line = last_line(proc)
    assert line.startswith("error: MNIST file") and "is corrupt" in line and "replace it" in line, line
    assert records(repo) == before
    assert (repo / "data" / "mnist" / "manifest.json").exists()  # the verified data survived the failed job
    # back on the good copy, a record that is missing is the only training job
    victim = small_records(repo)[-1]
    victim.unlink()
    assert job_stats(clrepro(repo, "--configfile", "small.yaml"))["train"] == 1
    assert set(records(repo)) == set(before)


def test_malformed_record_changes_no_table_or_plot(repo):
    victim = small_records(repo)[1]
    before = outputs(repo)
    victim.write_text(victim.read_text()[:300])
    proc = clrepro(repo, "tables", "--configfile", "small.yaml", check=False)
    assert proc.returncode != 0
    line = last_line(proc)
    assert line.startswith("error: cannot read run record") and victim.name in line and "delete it" in line, line
    assert outputs(repo) == before
    victim.unlink()  # what the message says: delete it and rerun
    assert job_stats(clrepro(repo, "--configfile", "small.yaml"))["train"] == 1


def test_changed_spec_and_other_protocol_write_beside_and_going_back_reuses(repo):
    before = records(repo)
    changed = write(repo, "lr.yaml", {"base": "small.yaml", "hparams": {"online": {"lr": 0.01}}})
    assert job_stats(clrepro(repo, "--configfile", changed))["train"] == 2  # online x 2 seeds
    protocol = yaml.safe_load((repo / "config/protocols/mer2019.yaml").read_text())
    protocol["name"] = "other2019"
    (repo / "config/protocols/other2019.yaml").write_text(yaml.safe_dump(protocol))
    other = write(repo, "other.yaml", {"base": "small.yaml", "protocol": "config/protocols/other2019.yaml"})
    assert job_stats(clrepro(repo, "--configfile", other))["train"] == 4
    after = records(repo)
    assert {k: after[k] for k in before} == before  # nothing finished was replaced
    assert len(after) == 4 + 2 + 4
    assert sum(k.startswith("other2019/") for k in after) == 4
    # the tables show the current config's runs only
    table = (repo / "results/tables/main_paper.md").read_text()
    assert "protocol other2019" in table and "mer2019" not in table
    # going back to the first config trains nothing; only the analysis is redone
    proc = clrepro(repo, "--configfile", "small.yaml")
    assert "train" not in job_stats(proc)
    assert "protocol mer2019" in (repo / "results/tables/main_paper.md").read_text()


def test_until_runs_trains_without_analysis_and_forcerun_redoes_one_rule(repo):
    """The README rows `--until runs` (train, stop before the analysis) and `--forcerun heatmap`."""
    victim = small_records(repo)[0]
    victim.unlink()
    before = outputs(repo)
    proc = clrepro(repo, "--configfile", "small.yaml", "--until", "runs")
    assert job_stats(proc).get("train") == 1 and set(job_stats(proc)) <= {"train", "runs"}
    assert victim.exists() and outputs(repo) == before
    clrepro(repo, "--configfile", "small.yaml")   # the analysis catches up
    heatmaps = sorted((repo / "results" / "plots").glob("acc_matrix_*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in heatmaps}
    proc = clrepro(repo, "--configfile", "small.yaml", "--forcerun", "heatmap")
    stats = job_stats(proc)
    assert stats.get("heatmap") == 1 and "train" not in stats, stats
    assert all(p.stat().st_mtime_ns > stamps[p] for p in heatmaps)


def test_fidelity_command_reads_both_grids_records(repo):
    """The README's `./clrepro exec python -m analysis.fidelity`: the short grid against itself is within any
    tolerance; a grid whose runs were never made is one line naming the command that makes them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAKEMAKE", "PYTEST"))}
    env["CUDA_VISIBLE_DEVICES"] = ""

    def fidelity(*args):
        return subprocess.run(["./clrepro", "exec", "python", "-m", "analysis.fidelity", *args], cwd=repo,
                              capture_output=True, text=True, env=env, timeout=300)

    proc = fidelity("--short", "small.yaml", "--full", "small.yaml")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| rotations | online | 0 |" in proc.stdout and "2 of 2 cells within 0.03" in proc.stdout
    write(repo, "more_seeds.yaml", {"base": "small.yaml", "seeds": [0, 1, 7]})
    proc = fidelity("--short", "small.yaml", "--full", "more_seeds.yaml")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [last_line(proc)]
    assert last_line(proc).startswith("error: 2 of 6 runs of more_seeds.yaml (device cpu) have no record")
    assert "run ./clrepro reproduce runs --configfile more_seeds.yaml" in last_line(proc)


def test_table_caption_says_the_sizes_and_that_they_are_reduced(repo):
    table = (repo / "results/tables/main_paper.md").read_text()
    assert "2 tasks x 20 examples, 100 test images per task, batch 1, evaluation every 10 batches" in table
    assert "REDUCED from the protocol" in table and "samples_per_task=20 (protocol 1000)" in table
    rec = json.loads(next((repo / "results" / "runs").rglob("*.json")).read_text())
    assert rec["spec"]["reduced"] == {"samples_per_task": 1000, "test_examples_per_task": 10000, "log_every": 100}


@pytest.mark.parametrize("text,expected", [
    (None, "error: config file missing.yaml not found"),
    ("datasets: [rotations\nmethods: [online]\n", "error: bad.yaml:2:"),
    ("tables", "error: config file tables not found; if 'tables' is a target, put it before --configfile"),
])
def test_config_file_errors_are_one_line(tmp_path, text, expected):
    repo = clean_copy(tmp_path / "clone")
    name = "missing.yaml"
    if text == "tables":
        name = "tables"
    elif text is not None:
        name = "bad.yaml"
        (repo / name).write_text(text)
    proc = clrepro(repo, "-n", "--configfile", name, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [last_line(proc)] and last_line(proc).startswith(expected)


def test_smoke_grid_runs_every_method_end_to_end(tmp_path):
    """config/smoke.yaml, as shipped: all 13 methods x 3 short real streams, records, tables and the summary."""
    repo = clean_copy(tmp_path / "clone")
    smoke = yaml.safe_load((repo / "config/smoke.yaml").read_text())
    smoke["mnist"] = {"source_dir": str(SHARED_MNIST.resolve()), "download": False}
    write(repo, "config/smoke.yaml", smoke)
    proc = clrepro(repo, "--configfile", "config/smoke.yaml")
    assert job_stats(proc)["train"] == 39
    assert "clrepro: done (39 run records under results/runs/mer2019/)" in proc.stderr
    assert "results/plots/summary.png" in proc.stderr
    recs = [json.loads(p.read_text()) for p in (repo / "results/runs").rglob("*.json")]
    assert sorted({r["spec"]["method"] for r in recs}) == sorted(
        ["online", "independent", "taskinput", "ewc", "gem", "agem", "eralg4", "eralg5", "meralg1", "meralg6",
         "meralg7", "dgr", "taagem"])
    assert (repo / "results/plots/summary.png").read_bytes()[:4] == b"\x89PNG"
    md = (repo / "results/tables/main_paper.md").read_text()
    assert md.count("### ") == 3  # one table per stream
