"""Shared fixtures: real MNIST from ../shared/data/mnist, prepared once per test session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


# The frozen evaluation logs under tests/data were recorded with torch's AVX2 CPU kernels. Where a CPU also
# has AVX-512, torch picks those by default, and they add in another order: a bitwise log then differs by a
# rounding (the MER torch engine's, seen on an AMD EPYC with AVX-512). Pin the kernel width, for this process
# (set before torch and numpy are imported) and every job the tests launch; the record's env.cpu_capability
# says it. numpy's OpenBLAS (GEM's float64 QP) dispatches by CPU too: pin its AVX2 (Haswell) kernels alike.
if _has_avx2():
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

SHARED_MNIST = Path(os.environ.get("CLREPRO_MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists() and not (SHARED_MNIST / "train-images-idx3-ubyte").exists():
        pytest.fail(f"real MNIST not found in {SHARED_MNIST}; set CLREPRO_MNIST_DIR to the four IDX files")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def mnist_dir(shared_mnist, tmp_path_factory) -> Path:
    """Verified MNIST arrays (data_prep output) in a session temp dir."""
    from data_prep import mnist

    out = tmp_path_factory.mktemp("mnist")
    arrays, _ = mnist.acquire(str(shared_mnist), out / "download")
    mnist.write(arrays, out)
    return out


@pytest.fixture(scope="session")
def make_stream(mnist_dir, tmp_path_factory):
    """Build (and cache) a stream: make_stream('rotations', n_tasks=20) -> TaskStream."""
    from data_prep.streams import DEFAULT_STREAMS, StreamDef, TaskStream, write_stream

    cache = {}

    def build(dataset: str, n_tasks: int | None = None, stream_seed: int = 0):
        base = DEFAULT_STREAMS[dataset]
        sdef = StreamDef(base.kind, n_tasks or base.n_tasks, base.min_deg, base.max_deg)
        key = (dataset, sdef, stream_seed)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"stream_{dataset}")
            write_stream(out, dataset, sdef, stream_seed, mnist_dir / "manifest.json")
            cache[key] = TaskStream.load(out, mnist_dir)
        return cache[key]

    return build


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def run_train(make_stream, mnist_dir, tmp_path):
    """Run `python -m methods.train` on a small real stream; returns (record dict, completed process).

    run_train("online", dataset="rotations", n_tasks=3, samples=50, n_test=500, seed=0, **spec_changes)
    """
    import json
    import subprocess

    from methods.config import ROOT, prepare, resolve_run

    def run(method, dataset="rotations", n_tasks=3, samples=50, n_test=500, seed=0, memory=0,
            out=None, hparams=None, check=True, **changes):
        stream = make_stream(dataset, n_tasks=n_tasks)
        config = prepare({
            "datasets": [dataset], "methods": [method], "memories": [memory or 500], "seeds": [seed],
            "device": "cpu", "mnist": {"source_dir": str(SHARED_MNIST)},
            "streams": {dataset: {"kind": stream.manifest["transform"], "n_tasks": n_tasks}},
            "overrides": {"samples_per_task": {dataset: samples}, "test_examples_per_task": {dataset: n_test},
                          **changes.pop("overrides", {})},
            "hparams": {method: hparams or {}},
            **changes,
        })
        spec = resolve_run(config, dataset, method, memory, seed)
        out = out or tmp_path / f"{method}_{dataset}_{seed}.json"
        proc = subprocess.run([sys.executable, "-m", "methods.train", "--spec", json.dumps(spec), "--stream",
                               str(stream.path), "--mnist", str(mnist_dir), "--out", str(out)],
                              cwd=ROOT, capture_output=True, text=True)
        if check:
            assert proc.returncode == 0, proc.stderr[-3000:]
        record = json.loads(out.read_text()) if out.exists() else None
        return record, proc

    return run
