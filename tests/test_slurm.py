"""profiles/slurm for real: a single-node SLURM cluster (tests/slurm/setup_local_slurm.sh, two fake GPUs)
runs a small real grid through sbatch, and its run records must equal those of the same grid run locally.

Needs root; installs slurmctld/slurmd/munge/slurm-client with apt-get when they are missing (Debian/Ubuntu).
Skipped, with the reason, where SLURM cannot be had; CLREPRO_SLURM_TEST=0 skips it outright.
Real MNIST, Rotations cut to 3 tasks of 40 examples and 300 test images, online + ewc, 2 seeds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "tests" / "slurm" / "setup_local_slurm.sh"
GRID = [(m, mem, s) for m, mem in (("online", 0), ("ewc", 0)) for s in (0, 1)]

pytestmark = pytest.mark.skipif(os.environ.get("CLREPRO_SLURM_TEST") == "0", reason="CLREPRO_SLURM_TEST=0")


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    try:
        res = subprocess.run(["bash", str(SETUP), "start", str(state), "--install"], capture_output=True, text=True,
                             timeout=1200)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SETUP), "stop", str(state)], timeout=120)
        pytest.skip("setting up SLURM took over 20 minutes (apt-get without network?)")
    if res.returncode == 3:
        pytest.skip(res.stderr.strip().splitlines()[-1])
    assert res.returncode == 0, res.stderr
    env = dict(os.environ)
    for line in res.stdout.splitlines():  # export SLURM_CONF=...; export PATH=DIR/bin:$PATH
        key, value = line.removeprefix("export ").split("=", 1)
        env[key] = value.replace("$PATH", os.environ["PATH"])
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SETUP), "stop", str(state)], timeout=120)


def write_config(path: Path, mnist_source: Path) -> Path:
    path.write_text(json.dumps({
        "protocol": str(ROOT / "config/protocols/mer2019.yaml"),
        "mnist": {"source_dir": str(mnist_source)},
        "streams": {"rotations": {"kind": "rotation", "n_tasks": 3}},
        "device": "cpu",  # a fake GPU id could name a real GPU on a GPU machine
        "datasets": ["rotations"], "methods": ["online", "ewc"], "memories": [500], "seeds": [0, 1],
        "overrides": {"samples_per_task": {"rotations": 40}, "test_examples_per_task": {"rotations": 300},
                      "log_every": 20},
    }))
    return path


def snakemake(workdir: Path, config: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    # the jobs run `python -m ...` from the workdir: this interpreter first on PATH, the code on PYTHONPATH
    env = {**env, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(config), *args, "runs"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def records(workdir: Path) -> dict:
    return {(m, s): json.loads(next((workdir / f"results/runs/mer2019/rotations/{m}/mem{mem}/seed{s}").glob("*.json"))
                               .read_text()) for m, mem, s in GRID}


def test_slurm_grid_equals_local_grid(slurm_env, shared_mnist, tmp_path):
    config = write_config(tmp_path / "grid.json", shared_mnist)
    on_slurm = snakemake(tmp_path / "slurm", config, slurm_env,
                         "--workflow-profile", str(ROOT / "profiles/slurm"), "--jobs", "4",
                         "--slurm-no-account", "--slurm-status-command", "squeue", "--slurm-keep-successful-logs",
                         "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5")
    assert on_slurm.returncode == 0, on_slurm.stderr[-4000:]
    local = snakemake(tmp_path / "local", config, {**os.environ, "CUDA_VISIBLE_DEVICES": ""}, "--cores", "2")
    assert local.returncode == 0, local.stderr[-4000:]

    # every training job went through sbatch (one SLURM log per job, kept by --slurm-keep-successful-logs)
    assert len(list((tmp_path / "slurm/.snakemake/slurm_logs/rule_train").rglob("*.log"))) == len(GRID)
    remote, here = records(tmp_path / "slurm"), records(tmp_path / "local")
    for key in here:
        assert remote[key]["R"] == here[key]["R"], key
        assert remote[key]["eval_log"] == here[key]["eval_log"], key
        # SLURM handed each job one of the two fake GPUs; gpu_slot took that id (auto) and torch fell back to CPU
        env = remote[key]["env"]
        assert env["cuda_visible_devices"] in ("0", "1") and env["gpu_slot"] == f"gpu{env['cuda_visible_devices']}-0"
        assert env["device"] == "cpu"
        assert here[key]["env"]["gpu_slot"] == "cpu"
