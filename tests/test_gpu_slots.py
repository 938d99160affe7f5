"""GPU slot allocation (tools/gpu_slot.py) with simulated GPU ids: no GPU is needed, the wrapper only hands
out CUDA_VISIBLE_DEVICES values and lock files. Jobs are small Python commands that record the id they got
and when they ran; the assertions are about concurrency per id, so the numbers are tiny on purpose."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tools import gpu_slot

ROOT = Path(__file__).resolve().parent.parent

# A job: write {cvd, slot, start, end, pid} to argv[1] after sleeping argv[2] seconds.
JOB = textwrap.dedent("""
    import json, os, sys, time
    start = time.time(); time.sleep(float(sys.argv[2])); end = time.time()
    json.dump({"cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "slot": os.environ.get("CLREPRO_GPU_SLOT"),
               "start": start, "end": end, "pid": os.getpid()}, open(sys.argv[1], "w"))
""")


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "CLREPRO_GPU_SLOT")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def wrapped(lock_dir, gpus, k, *cmd, timeout=None):
    args = [sys.executable, "-m", "tools.gpu_slot", "--gpus", str(gpus), "--jobs-per-gpu", str(k),
            "--lock-dir", str(lock_dir), "--poll", "0.05"]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    return args + ["--", *cmd]


def max_concurrency(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda ev: (ev[0], ev[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def by_gpu(records: list[dict]) -> dict[str, list[tuple[float, float]]]:
    out = defaultdict(list)
    for r in records:
        out[r["cvd"]].append((r["start"], r["end"]))
    return out


def test_six_jobs_two_gpus_at_most_k_per_gpu(tmp_path):
    k = 2
    procs = [subprocess.Popen(wrapped(tmp_path / "locks", 2, k, sys.executable, "-c", JOB, str(tmp_path / f"job{i}.json"), "0.8"),
                              env=clean_env(), cwd=ROOT, stderr=subprocess.PIPE, text=True) for i in range(6)]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    records = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(6)]
    gpus = by_gpu(records)
    assert set(gpus) == {"0", "1"}                      # spread over both ids
    assert all(max_concurrency(iv) <= k for iv in gpus.values())
    assert max_concurrency([iv for ivs in gpus.values() for iv in ivs]) <= 2 * k
    assert all(r["slot"].startswith(f"gpu{r['cvd']}-") for r in records)  # slot and id agree


def test_first_jobs_spread_over_gpus_before_sharing(tmp_path):
    """Slots are tried GPU-major: with K=2, two jobs alone land on different GPUs, not both on GPU 0."""
    locks = tmp_path / "locks"
    holder = subprocess.Popen(wrapped(locks, 2, 2, sys.executable, "-c", "import time; time.sleep(30)"),
                              env=clean_env(), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert "CUDA_VISIBLE_DEVICES=0" in holder.stderr.readline()
        second = subprocess.run(wrapped(locks, 2, 2, "sh", "-c", "echo $CUDA_VISIBLE_DEVICES $CLREPRO_GPU_SLOT"),
                                env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.stdout.split() == ["1", "gpu1-0"]
    finally:
        holder.kill()
        holder.wait()


def test_slot_freed_after_sigkill(tmp_path):
    locks = tmp_path / "locks"
    marker = tmp_path / "started"
    holder = subprocess.Popen(wrapped(locks, 1, 1, sys.executable, "-c",
                                      f"import time; open({str(marker)!r}, 'w').close(); time.sleep(60)"),
                              env=clean_env(), cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not marker.exists():
        assert time.time() < deadline and holder.poll() is None, "holder did not start"
        time.sleep(0.05)
    # the slot is taken: a second job gives up after its timeout, with the reason
    busy = subprocess.run(wrapped(locks, 1, 1, "true", timeout=0.3), env=clean_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert busy.returncode != 0 and "no free slot" in busy.stderr
    # the lock file names the holder: the command itself (exec), not a wrapper process
    assert (locks / f"{gpu_slot.socket.gethostname().split('.')[0]}.gpu0-0.lock").read_text().split()[0] == str(holder.pid)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    after = subprocess.run(wrapped(locks, 1, 1, "sh", "-c", "echo $CLREPRO_GPU_SLOT", timeout=10),
                           env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert after.returncode == 0 and after.stdout.strip() == "gpu0-0"


def test_no_gpu_runs_on_cpu_and_hides_gpus(tmp_path):
    out = subprocess.run(wrapped(tmp_path, 0, 1, "sh", "-c", 'echo "[$CUDA_VISIBLE_DEVICES] $CLREPRO_GPU_SLOT"; exit 3'),
                         env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 3                        # the command's exit status comes through
    assert out.stdout.strip() == "[] cpu"
    assert not list(tmp_path.glob("*.lock"))


def test_gpu_ids_follow_inherited_cuda_visible_devices():
    assert gpu_slot.gpu_ids("auto", {"CUDA_VISIBLE_DEVICES": "3,5"}) == ["3", "5"]
    assert gpu_slot.gpu_ids("1", {"CUDA_VISIBLE_DEVICES": "3,5"}) == ["3"]
    assert gpu_slot.gpu_ids("2", {}) == ["0", "1"]
    assert gpu_slot.gpu_ids("auto", {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpu_slot.gpu_ids("auto", {"SLURM_JOB_ID": "7"}) == []  # SLURM gave this job no GPU
    assert gpu_slot.gpu_ids("auto", {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "1"}) == ["1"]
    with pytest.raises(SystemExit, match="allows only 2"):
        gpu_slot.gpu_ids("3", {"CUDA_VISIBLE_DEVICES": "3,5"})
    with pytest.raises(SystemExit, match="auto"):
        gpu_slot.gpu_ids("two", {})
    assert gpu_slot.slot_names(["0", "1"], 2) == [("gpu0-0", "0"), ("gpu1-0", "1"), ("gpu0-1", "0"), ("gpu1-1", "1")]


def test_print_resources():
    out = subprocess.run([sys.executable, "-m", "tools.gpu_slot", "--gpus", "3", "--jobs-per-gpu", "2", "--print-resources"],
                         env=clean_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "gpu=6"


SNAKEFILE = """
rule all:
    input: expand("out/{i}.json", i=range(4))

rule job:
    output: "out/{i}.json"
    resources: gpu=1
    shell: "{PY} -m tools.gpu_slot --gpus 2 --lock-dir locks --poll 0.05 -- {PY} -c {JOB:q} {output} 1.0"
"""


def test_snakemake_resources_gpu2_uses_both_ids_one_job_each(tmp_path):
    """Through Snakemake: 4 GPU jobs, --cores 4 --resources gpu=2: two at a time, never two on one id."""
    (tmp_path / "Snakefile").write_text(f"PY = {sys.executable!r}\nJOB = {JOB!r}\n" + SNAKEFILE)
    env = clean_env()
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=2", "-d", str(tmp_path),
                          "-s", str(tmp_path / "Snakefile")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads((tmp_path / "out" / f"{i}.json").read_text()) for i in range(4)]
    gpus = by_gpu(records)
    assert set(gpus) == {"0", "1"}
    assert all(max_concurrency(iv) == 1 for iv in gpus.values())


def test_train_rule_runs_under_the_slot_wrapper(tmp_path):
    """Our Snakefile's train command goes through tools.gpu_slot with the config's gpu section."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("datasets: [rotations]\nmethods: [online]\nmemories: [500]\nseeds: [0]\n"
                   "gpu: {n_gpus: 2, jobs_per_gpu: 3, lock_dir: /tmp/x locks}\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--nolock", "--configfile", str(cfg),
                          "--forcerun", "train", "runs"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "-m tools.gpu_slot --gpus 2 --jobs-per-gpu 3 --lock-dir '/tmp/x locks' -- " in res.stdout + res.stderr
