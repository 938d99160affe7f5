"""Shared fixtures: real MNIST from ../shared/data/mnist, prepared once per test session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
