"""The Snakemake workflow from a clean copy of the repository: streams, lint, bad input, no half-written files."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, SHARED_MNIST
from tests.test_streams import GOLDEN_MAPS_SHA256


def clean_copy(dest: Path) -> Path:
    """The tracked files only, as a fresh clone would have them (plus uncommitted edits of tracked files)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env_path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True, text=True,
                          env={"PATH": env_path, "HOME": str(Path.home())})
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = clean_copy(tmp_path_factory.mktemp("clone"))
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    config["mnist"] = {"source_dir": str(SHARED_MNIST), "download": False}
    config["datasets"] = list(GOLDEN_MAPS_SHA256)   # all three MER streams (the default grid leaves one out)
    (repo / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return repo


@pytest.mark.slow
def test_streams_target_builds_golden_streams_with_two_cores(repo):
    snakemake(repo, "--cores", "2", "streams")
    for dataset, digest in GOLDEN_MAPS_SHA256.items():
        manifest = json.loads((repo / "data" / "streams" / dataset / "manifest.json").read_text())
        assert manifest["sha256"]["maps.npy"] == digest
    assert "Nothing to be done" in snakemake(repo, "--cores", "2", "streams").stdout + \
        snakemake(repo, "--cores", "2", "streams").stderr


@pytest.mark.slow
def test_lint_is_clean(repo):
    proc = snakemake(repo, "--lint", check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


@pytest.mark.slow
def test_corrupt_mnist_fails_clearly_and_leaves_nothing(repo, tmp_path):
    bad = tmp_path / "mnist"
    bad.mkdir()
    for f in SHARED_MNIST.glob("*.gz"):
        shutil.copy(f, bad / f.name)
    name = "train-labels-idx1-ubyte"
    data = bytearray(gzip.decompress((bad / f"{name}.gz").read_bytes()))
    data[100] ^= 0xFF
    (bad / f"{name}.gz").write_bytes(gzip.compress(bytes(data)))
    work = clean_copy(tmp_path / "clone")
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    config["mnist"] = {"source_dir": str(bad), "download": False}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(work, "--cores", "1", "streams", check=False)
    assert proc.returncode != 0
    log = (work / "logs" / "data" / "mnist.log").read_text().strip().splitlines()
    assert log[-1].startswith("error: MNIST file") and "corrupt" in log[-1] and "replace it" in log[-1]
    leftovers = [p for p in (work / "data").rglob("*") if p.is_file()] if (work / "data").exists() else []
    assert leftovers == []


@pytest.mark.slow
def test_bad_config_fails_at_parse_time_with_one_line(repo):
    proc = snakemake(repo, "-n", "--config", "device=tpu", check=False)
    assert proc.returncode != 0
    assert "invalid config at device: 'tpu' is not one of" in proc.stdout + proc.stderr
