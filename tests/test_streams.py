"""Task streams: rotation direction and PIL equivalence, true permutations, determinism, manifests."""
from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep import streams
from data_prep.errors import ClreproError
from data_prep.streams import FILL, DEFAULT_STREAMS, apply_map, rotation_map

# sha256 of maps.npy for stream seed 0. A change means the streams changed (numpy's Generator, PIL's
# rotation or our code): published results would no longer be comparable, so this must fail loudly.
GOLDEN_MAPS_SHA256 = {
    "rotations": "cfd748c1ccf70d1a8e82a2015e19116bf56ef33a6bd80839e29d2d87f53a2335",
    "permutations": "4f2416f6d258c7afdba4a18918a975c3f9de97855d0ff86f495c143fccc6cefe",
    "many_permutations": "7ef818d19bbad943bd60ed01a1d108e7dd64f972e73ec83bda046b925274e481",
}


def test_rotation_is_counter_clockwise():
    """A pixel right of the centre lands above it after +90 degrees (counter-clockwise on screen)."""
    image = np.zeros((1, 784), np.uint8)
    image[0, 14 * 28 + 24] = 255  # row 14, column 24: right of the centre (13.5, 13.5)
    out = apply_map(image, rotation_map(90.0)).reshape(28, 28)
    row, col = map(int, np.argwhere(out == 255)[0])
    assert col in (13, 14) and row < 10, (row, col)


@pytest.mark.parametrize("angle", [9.7, 33.3, 90.0, 147.25])
def test_rotated_digit_centroid_turns_by_the_angle(angle):
    """An off-centre blob's centroid turns by `angle` counter-clockwise around the image centre."""
    image = np.zeros((28, 28), np.uint8)
    image[4:8, 18:22] = 200
    out = apply_map(image.reshape(1, -1), rotation_map(angle)).reshape(28, 28)

    def polar_angle(img):
        rows, cols = np.nonzero(img)
        # y axis pointing up, origin at the pixel-grid centre
        return math.degrees(math.atan2(13.5 - rows.mean(), cols.mean() - 13.5))

    turned = (polar_angle(out) - polar_angle(image)) % 360
    assert abs(turned - angle) < 3.0


def test_rotation_map_equals_pil_rotate_on_real_digits(mnist_dir):
    images = np.load(mnist_dir / "test_images.npy")[:200]
    for angle in (3.0, 47.5, 123.4, 179.9):
        pixel_map = rotation_map(angle)
        ours = apply_map(images.reshape(len(images), -1), pixel_map)
        pil = np.stack([np.asarray(Image.fromarray(img, mode="L").rotate(angle)) for img in images]).reshape(len(images), -1)
        np.testing.assert_array_equal(ours, pil)


def test_rotation_angles_follow_the_gem_bins():
    angles = streams.rotation_angles(20, np.random.default_rng(0), 0.0, 180.0)
    lo = np.arange(20) * 9.0
    assert np.all(angles >= lo) and np.all(angles < lo + 9.0)


def test_permutations_are_true_permutations_and_applied_alike(make_stream):
    stream = make_stream("permutations", n_tasks=5)
    assert len({m.tobytes() for m in stream.maps}) == 5
    for t in range(stream.n_tasks):
        assert np.array_equal(np.sort(stream.maps[t]), np.arange(784))
        np.testing.assert_array_equal(stream.task_images("test", t)[:50], stream.test_images[:50][:, stream.maps[t]])
        idx = np.array([3, 17, 59999])
        np.testing.assert_array_equal(stream.task_images("train", t, idx), stream.train_images[idx][:, stream.maps[t]])


def test_no_fill_index_in_permutations_but_in_rotation_corners():
    perm = streams.permutation_maps(3, np.random.default_rng(1))
    assert not np.any(perm == FILL)
    assert np.any(rotation_map(45.0) == FILL)  # corners are cropped with black fill (expand=False)


def test_streams_are_deterministic_and_match_golden_hashes(mnist_dir, tmp_path):
    for dataset, sdef in DEFAULT_STREAMS.items():
        a = streams.write_stream(tmp_path / "a" / dataset, dataset, sdef, 0, mnist_dir / "manifest.json")
        b = streams.write_stream(tmp_path / "b" / dataset, dataset, sdef, 0, mnist_dir / "manifest.json")
        assert a.read_bytes() == b.read_bytes()
        assert json.loads(a.read_text())["sha256"]["maps.npy"] == GOLDEN_MAPS_SHA256[dataset]


def test_stream_build_does_not_depend_on_thread_count(mnist_dir, tmp_path):
    outs = []
    for threads in ("1", "2"):
        out = tmp_path / f"t{threads}"
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, "-m", "data_prep", "stream", "--dataset", "rotations", "--kind", "rotation",
                        "--n-tasks", "20", "--stream-seed", "0", "--mnist", str(mnist_dir), "--out", str(out)],
                       check=True, env=env, cwd=streams.__file__.rsplit("/data_prep", 1)[0])
        outs.append(hashlib.sha256((out / "maps.npy").read_bytes()).hexdigest())
    assert outs[0] == outs[1] == GOLDEN_MAPS_SHA256["rotations"]


def test_stream_seed_changes_the_stream_and_is_recorded(mnist_dir, tmp_path):
    sdef = DEFAULT_STREAMS["rotations"]
    m0 = json.loads(streams.write_stream(tmp_path / "s0", "rotations", sdef, 0, mnist_dir / "manifest.json").read_text())
    m1 = json.loads(streams.write_stream(tmp_path / "s1", "rotations", sdef, 1, mnist_dir / "manifest.json").read_text())
    assert m0["stream_seed"] == 0 and m1["stream_seed"] == 1
    assert m0["task_params"] != m1["task_params"]


def test_modified_stream_is_rejected_before_use(make_stream, mnist_dir, tmp_path):
    sdef = DEFAULT_STREAMS["permutations"]
    streams.write_stream(tmp_path, "permutations", sdef, 0, mnist_dir / "manifest.json")
    maps = np.load(tmp_path / "maps.npy")
    maps[0, [0, 1]] = maps[0, [1, 0]]
    np.save(tmp_path / "maps.npy", maps)
    with pytest.raises(ClreproError, match="does not match its manifest"):
        streams.TaskStream.load(tmp_path, mnist_dir)


def test_reference_export_format(make_stream):
    from data_prep.export_reference import to_reference

    stream = make_stream("rotations", n_tasks=2)
    tasks_tr, tasks_te = to_reference(stream)
    assert len(tasks_tr) == len(tasks_te) == 2
    angle, x, y = tasks_te[1]
    assert angle == stream.manifest["task_params"][1]
    assert tuple(x.shape) == (10000, 784) and str(x.dtype) == "torch.float32" and float(x.max()) <= 1.0
    assert np.array_equal(x[:5].numpy(), stream.task_images("test", 1)[:5] / np.float32(255.0))
    assert str(y.dtype) == "torch.int64" and tuple(tasks_tr[0][1].shape) == (60000, 784)
