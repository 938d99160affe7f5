"""MNIST acquisition on the real files: checksums, parsing, corrupt and missing data, the download path."""
from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from data_prep import mnist
from data_prep.errors import ClreproError


def test_real_mnist_parses_with_canonical_label_counts(mnist_dir):
    train = np.load(mnist_dir / "train_labels.npy")
    test = np.load(mnist_dir / "test_labels.npy")
    # Label counts from ../shared/data/mnist/README.md (an independent sanity check of parsing).
    assert np.bincount(train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    images = np.load(mnist_dir / "train_images.npy")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8 and images.max() == 255


def test_uncompressed_files_are_accepted(shared_mnist, tmp_path):
    for name in mnist.IDX_MD5:
        (tmp_path / name).write_bytes(gzip.decompress((shared_mnist / f"{name}.gz").read_bytes()))
    arrays = mnist.load_from_directory(tmp_path)
    assert arrays["test_images"].shape == (10000, 28, 28)


@pytest.mark.parametrize("compressed", [True, False])
def test_one_corrupt_byte_is_a_one_line_error(shared_mnist, tmp_path, compressed):
    for name in mnist.IDX_MD5:
        shutil.copy(shared_mnist / f"{name}.gz", tmp_path / f"{name}.gz")
    name = "t10k-labels-idx1-ubyte"
    data = bytearray(gzip.decompress((tmp_path / f"{name}.gz").read_bytes()))
    data[5000] ^= 0x01
    (tmp_path / f"{name}.gz").unlink()
    if compressed:
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(bytes(data)))
    else:
        (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(ClreproError, match="corrupt.*MD5") as err:
        mnist.acquire(str(tmp_path), tmp_path / "dl", allow_download=False)
    assert "\n" not in str(err.value) and "replace it" in str(err.value)


def test_missing_files_without_download_name_the_fix(tmp_path):
    with pytest.raises(ClreproError, match="mnist.download: true"):
        mnist.acquire(str(tmp_path / "nowhere"), tmp_path / "dl", allow_download=False)


def test_download_path_is_verified(shared_mnist, tmp_path, monkeypatch):
    """Stand-in for torchvision's downloader (no network here): it lays out the raw files as torchvision does."""
    calls = []

    def fake_download(cache):
        raw = cache / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name in mnist.IDX_MD5:
            (raw / name).write_bytes(gzip.decompress((shared_mnist / f"{name}.gz").read_bytes()))
        calls.append(cache)
        return raw

    monkeypatch.setattr(mnist, "download", fake_download)
    arrays, source = mnist.acquire(None, tmp_path / "dl")
    assert calls and source == "torchvision download"
    assert arrays["train_labels"].shape == (60000,)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def no_network(cache):
        raise OSError("Name or service not known")

    monkeypatch.setattr(mnist, "download", no_network)
    with pytest.raises(ClreproError, match="download failed.*source_dir"):
        mnist.acquire(str(tmp_path / "missing"), tmp_path / "dl")


def test_manifest_is_content_only_and_reproducible(mnist_dir, tmp_path):
    arrays = {k: np.load(mnist_dir / f"{k}.npy") for k in mnist.ARRAYS}
    mnist.write(arrays, tmp_path)
    assert (tmp_path / "manifest.json").read_bytes() == (mnist_dir / "manifest.json").read_bytes()
