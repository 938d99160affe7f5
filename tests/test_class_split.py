"""TA-A-GEM's task streams on real MNIST: the class split (tasks of class subsets, labels rewritten), evenly
spread rotations, disjoint task images, and the evaluator and LCA scorer on a class split against a plain
per-task loop. Bad splits are one-line errors at config validation."""
from __future__ import annotations

import copy
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from data_prep import streams
from data_prep.errors import ClreproError
from data_prep.streams import StreamDef, TaskStream, rotation_map, stream_def, write_stream
from methods import protocol, registry
from methods.base import Context
from methods.baselines import Online
from methods.config import ROOT, prepare

PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
SPLIT = {"kind": "class_split", "n_tasks": 5, "classes_per_task": 2}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def build(mnist_dir, tmp_path_factory):
    """write_stream + TaskStream.load of a config `streams:` entry (cached per entry)."""
    cache = {}

    def make(entry: dict, dataset: str = "ta_class_split") -> TaskStream:
        key = json.dumps([dataset, entry], sort_keys=True)
        if key not in cache:
            out = tmp_path_factory.mktemp(dataset)
            write_stream(out, dataset, stream_def(dataset, entry), 0, mnist_dir / "manifest.json")
            cache[key] = TaskStream.load(out, mnist_dir)
        return cache[key]

    return make


def test_class_split_stream_is_identity_maps_plus_classes_checksummed(build, mnist_dir, tmp_path):
    stream = build(SPLIT)
    m = stream.manifest
    assert m["transform"] == "class_split" and m["classes"] == [list(p) for p in PAIRS] == m["task_params"]
    assert stream.n_tasks == 5 and (stream.maps == np.arange(784)).all()
    np.testing.assert_array_equal(stream.task_images("test", 2, np.arange(7)), stream.test_images[:7])
    # deterministic bytes, and verified before use like every stream
    again = write_stream(tmp_path / "again", "ta_class_split", stream_def("x", SPLIT), 0, mnist_dir / "manifest.json")
    assert again.read_bytes() == (stream.path / "manifest.json").read_bytes()
    np.save(tmp_path / "again" / "maps.npy", np.tile(np.arange(784, dtype=np.int16)[::-1], (5, 1)))
    with pytest.raises(ClreproError, match="does not match its manifest"):
        TaskStream.load(tmp_path / "again", mnist_dir)
    assert StreamDef.from_manifest(m).spec() == {"kind": "class_split", "n_tasks": 5, "min_deg": 0.0,
                                                 "max_deg": 180.0, "classes": [list(p) for p in PAIRS]}


@pytest.mark.parametrize("split", ["train", "test"])
def test_each_task_holds_only_its_classes_relabelled(build, split):
    stream = build(SPLIT)
    labels = stream.train_labels if split == "train" else stream.test_labels
    seen = []
    for t, classes in enumerate(PAIRS):
        index, task_labels = stream.task_split(split, t)
        assert set(np.unique(labels[index])) == set(classes)
        assert len(index) == np.isin(labels, classes).sum()
        np.testing.assert_array_equal(task_labels, np.searchsorted(classes, labels[index]))   # 2k -> 0, 2k+1 -> 1
        np.testing.assert_array_equal(task_labels, labels[index] % 2)                         # the TA-A-GEM rule
        np.testing.assert_array_equal(stream.task_labels(split, t, index), task_labels)
        seen.append(index)
    every = np.concatenate(seen)
    assert len(every) == len(np.unique(every)) == len(labels)   # each image in exactly one task


def test_explicit_splits_label_by_position_and_match_classes_per_task(build):
    listed = stream_def("s", {"kind": "class_split", "n_tasks": 5, "splits": [list(p) for p in PAIRS]})
    assert listed == stream_def("s", SPLIT)
    stream = build({"kind": "class_split", "n_tasks": 2, "splits": [[9, 3, 5, 7, 1], [0, 8, 2, 6, 4]]})
    index, task_labels = stream.task_split("train", 0)
    assert set(np.unique(stream.train_labels[index])) == {1, 3, 5, 7, 9}
    assert dict(zip(stream.train_labels[index].tolist(), task_labels.tolist())) == {9: 0, 3: 1, 5: 2, 7: 3, 1: 4}


BASE = {"datasets": ["s"], "methods": ["online"], "memories": [100], "seeds": [0], "device": "cpu"}


@pytest.mark.parametrize("entry,fragments", [
    ({"kind": "class_split", "n_tasks": 4, "classes_per_task": 3},
     ["streams.s: classes_per_task 3 does not divide the 10 MNIST classes", "use one of [1, 2, 5, 10]"]),
    ({"kind": "class_split", "n_tasks": 4, "classes_per_task": 2},
     ["classes_per_task 2 makes 5 tasks but n_tasks is 4", "set n_tasks: 5"]),
    ({"kind": "class_split", "n_tasks": 5, "splits": [[0, 1], [1, 2], [3, 4], [5, 6], [7, 8, 9]]},
     ["class 1 is in task 0 and task 1 of splits", "put every class in one task only"]),
    ({"kind": "class_split", "n_tasks": 4, "splits": [[0, 1], [2, 3], [4, 5], [6, 7]]},
     ["classes [8, 9] are in no task of splits", "add them to a task"]),
    ({"kind": "class_split", "n_tasks": 3, "splits": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]},
     ["splits lists 2 tasks but n_tasks is 3", "set n_tasks: 2"]),
    ({"kind": "class_split", "n_tasks": 2, "splits": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], []]},
     ["task 1 of splits has no classes"]),
    ({"kind": "class_split", "n_tasks": 5, "splits": [[0, 0], [1, 2, 3], [4, 5], [6, 7], [8, 9]]},
     ["class 0 is listed twice in task 0 of splits", "list each class once"]),
    ({"kind": "class_split", "n_tasks": 5},
     ["exactly one of classes_per_task (e.g. 2) or splits", "got neither"]),
    ({"kind": "class_split", "n_tasks": 5, "classes_per_task": 2, "splits": [[0, 1]]},
     ["got classes_per_task and splits"]),
    ({"kind": "rotation", "n_tasks": 5, "classes_per_task": 2},
     ["`classes_per_task` applies to class_split streams only", "set kind: class_split"]),
    ({"kind": "permutation", "n_tasks": 5, "angles": "even"},
     ["`angles` applies to rotation streams only"]),
    ({"kind": "class_split", "n_tasks": 5, "splits": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 10]]},
     ["invalid config at streams/s/splits/4/1"]),
])
def test_bad_stream_options_are_one_line_errors_at_validation(entry, fragments):
    config = copy.deepcopy({**BASE, "streams": {"s": entry}})
    with pytest.raises(ClreproError) as err:
        prepare(config)
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_stream_cli_builds_the_same_class_split_and_rejects_bad_ones(build, mnist_dir, tmp_path):
    """What the stream rule runs: the class list travels as JSON (StreamDef.extra_args)."""
    sdef = stream_def("ta_class_split", SPLIT)
    args = [sys.executable, "-m", "data_prep", "stream", "--dataset", "ta_class_split", "--kind", "class_split",
            "--n-tasks", "5", "--stream-seed", "0", "--mnist", str(mnist_dir)]
    subprocess.run(args + sdef.extra_args() + ["--out", str(tmp_path / "cli")], cwd=ROOT, check=True,
                   capture_output=True)
    assert (tmp_path / "cli" / "manifest.json").read_bytes() == (build(SPLIT).path / "manifest.json").read_bytes()
    bad = subprocess.run(args + ["--classes", "[[0,1],[1,2]]", "--out", str(tmp_path / "bad")], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "error: streams.ta_class_split: splits lists 2 tasks but n_tasks is 5; set n_tasks: 2"]
    assert not (tmp_path / "bad" / "manifest.json").exists()
    typo = subprocess.run(args + ["--classes", "[[0,1],[2,3]", "--out", str(tmp_path / "bad")], cwd=ROOT,
                          capture_output=True, text=True)
    assert typo.returncode == 1 and typo.stderr.strip().splitlines() == [
        "error: --classes '[[0,1],[2,3]' is not JSON; give the classes of each task, e.g. "
        "'[[0,1],[2,3],[4,5],[6,7],[8,9]]'"]


def test_even_angles_are_spread_without_a_draw(build):
    entry = {"kind": "rotation", "n_tasks": 5, "min_deg": 0, "max_deg": 180, "angles": "even"}
    stream = build(entry, "ta_rotations")
    assert stream.manifest["task_params"] == [0.0, 36.0, 72.0, 108.0, 144.0] and stream.manifest["angles"] == "even"
    for t, angle in enumerate(stream.manifest["task_params"]):
        np.testing.assert_array_equal(stream.maps[t], rotation_map(angle))
    assert (stream.maps[0] == np.arange(784)).all()   # 0 degrees: the identity
    other_seed = streams.build_maps("b", stream_def("b", entry), 7)[1]
    assert streams.build_maps("a", stream_def("a", entry), 1)[1] == other_seed   # no draw: seed-free
    assert streams.even_angles(4, None, 10.0, 90.0).tolist() == [10.0, 30.0, 50.0, 70.0]
    # the default stays GEM's binned draw, and says nothing new in its spec
    binned = stream_def("r", {"kind": "rotation", "n_tasks": 5})
    assert binned.angles == "binned" and "angles" not in binned.spec() and binned.extra_args() == []


def old_make_schedule(n_tasks, n_train, samples_per_task):
    """methods.protocol.make_schedule before task_images existed (as of f57f81c), verbatim."""
    n = min(samples_per_task, n_train) if samples_per_task > 0 else n_train
    subsets = [torch.randperm(n_train)[:n] for _ in range(n_tasks)]
    order = []
    for _ in range(n_tasks):
        items = list(range(n))
        random.shuffle(items)
        order.append(torch.tensor(items, dtype=torch.long))
    return protocol.Schedule(order, subsets)


def test_independent_task_images_draw_exactly_as_before():
    protocol.seed_everything(11)
    new = protocol.make_schedule(4, 60000, 300)
    after_new = (torch.randint(1 << 30, (1,)).item(), random.random())
    protocol.seed_everything(11)
    old = old_make_schedule(4, 60000, 300)
    after_old = (torch.randint(1 << 30, (1,)).item(), random.random())
    assert after_new == after_old   # the same RNG consumption
    for t in range(4):
        assert torch.equal(new.subsets[t], old.subsets[t]) and torch.equal(new.order[t], old.order[t])


def test_disjoint_task_images_are_one_permutation_in_chunks():
    protocol.seed_everything(5)
    a = protocol.make_schedule(5, 60000, 60000, task_images="disjoint")
    protocol.seed_everything(5)
    perm = torch.randperm(60000)
    assert [len(s) for s in a.subsets] == [12000] * 5
    assert torch.equal(torch.cat(a.subsets), perm)          # one draw, cut into five chunks: no image twice
    assert [sorted(o.tolist()) for o in a.order] == [list(range(12000))] * 5
    protocol.seed_everything(5)
    b = protocol.make_schedule(5, 60000, 60000, task_images="disjoint")
    assert all(torch.equal(x, y) for x, y in zip(a.subsets, b.subsets))   # deterministic
    protocol.seed_everything(5)
    small = protocol.make_schedule(5, 60000, 100, task_images="disjoint")
    assert all(torch.equal(s, c[:100]) for s, c in zip(small.subsets, a.subsets))   # a cap takes a chunk's head
    with pytest.raises(ClreproError, match="unknown task_images 'shared'"):
        protocol.make_schedule(2, 100, 10, task_images="shared")


@pytest.mark.parametrize("task_images", ["independent", "disjoint"])
def test_class_split_tasks_draw_only_their_own_images(build, task_images):
    stream = build(SPLIT)
    pools = [stream.task_split("train", t)[0] for t in range(5)]
    protocol.seed_everything(0)
    schedule = protocol.make_schedule(5, 60000, 60000, pools, task_images)
    for t, subset in enumerate(schedule.subsets):
        assert sorted(subset.tolist()) == pools[t].tolist()       # all of its classes' images, nothing else
    capped = protocol.make_schedule(5, 60000, 50, pools, task_images)
    data = protocol.task_inputs(stream, capped, CPU)
    for t, (subset, (x, y)) in enumerate(zip(capped.subsets, data)):
        assert len(subset) == 50 and set(stream.train_labels[subset.numpy()]) <= set(PAIRS[t])
        assert set(y.tolist()) <= {0, 1}
        np.testing.assert_array_equal(y.numpy(), stream.train_labels[subset.numpy()] % 2)
        assert torch.equal(x, torch.from_numpy(stream.train_images[subset.numpy()]).float() / 255.0)


def trained(stream, n=200):
    """Online (10 outputs) trained on 200 relabelled images of each task: a model that is right per task
    well above chance, and differs between tasks."""
    torch.manual_seed(0)
    learner = registry.build("online", Context(784, 10, stream.n_tasks, 2, 50, 0, 10, n, CPU), {"lr": 0.1})
    for t in range(stream.n_tasks):
        index, labels = stream.task_split("train", t)
        x = torch.from_numpy(stream.task_images("train", t, index[:n])).float() / 255.0
        y = torch.from_numpy(labels[:n])
        for i in range(0, n, 10):
            learner.observe(x[i:i + 10], t, y[i:i + 10])
    return learner


def loop_scores(stream, learner, n_test, drop_last):
    """Straightforward: per task, its first n test images (its classes only), its labels, correct / n."""
    learner.eval()
    out = []
    with torch.no_grad():
        for t, classes in enumerate(PAIRS):
            index = np.flatnonzero(np.isin(stream.test_labels, classes))[:n_test]
            scored = index[:-1] if drop_last else index
            x = torch.from_numpy(stream.test_images[scored]).float() / 255.0
            y = np.searchsorted(classes, stream.test_labels[scored])
            out.append(float((learner(x, t).argmax(1).numpy() == y).sum()) / len(index))
    learner.train()
    return out


class Mirrored(Online):
    """A forward that is not the plain MLP: the evaluator's per-task path."""

    def forward(self, x, t):
        return self.net(x.flip(1))


@pytest.mark.parametrize("n_test,drop_last", [(10000, False), (500, False), (300, True)])
def test_evaluator_and_lca_scorer_on_a_class_split_equal_a_per_task_loop(build, n_test, drop_last):
    stream = build(SPLIT)
    learner = trained(stream)
    mirrored = Mirrored(learner.ctx, learner.hp)
    mirrored.load_state_dict(learner.state_dict())
    ev = protocol.Evaluator(stream, n_test, CPU, drop_last)
    # the per-task path: bitwise the loop
    assert ev._task_mlps(mirrored) is None
    assert ev(mirrored) == loop_scores(stream, mirrored, n_test, drop_last)
    # the fused path (one GEMM for all tasks, another summation order): equal up to float ties of the logits
    assert ev._task_mlps(learner) is not None
    fused, loop = ev(learner), loop_scores(stream, learner, n_test, drop_last)
    assert fused == pytest.approx(loop, abs=2.0 / min(n_test, 1874))
    assert max(loop) > 0.8 and len(set(loop)) > 1   # a trained model (chance is 0.5), different per task
    scorer = protocol.TaskScorer(stream, n_test, CPU, drop_last)
    assert [scorer(mirrored, t) for t in range(5)] == loop_scores(stream, mirrored, n_test, drop_last)
    counts = [len(np.flatnonzero(np.isin(stream.test_labels, c))) for c in PAIRS]
    assert ev.denominators.tolist() == [min(n_test, c) for c in counts]


def test_reference_export_of_a_class_split(build):
    from data_prep.export_reference import to_reference

    stream = build(SPLIT)
    tasks_tr, tasks_te = to_reference(stream)
    for t, classes in enumerate(PAIRS):
        for data, labels, images in ((tasks_tr, stream.train_labels, stream.train_images),
                                     (tasks_te, stream.test_labels, stream.test_images)):
            param, x, y = data[t]
            index = np.flatnonzero(np.isin(labels, classes))
            assert param == list(classes) and tuple(x.shape) == (len(index), 784)
            assert torch.equal(y, torch.from_numpy(labels[index] % 2))
            assert torch.equal(x[:3], torch.from_numpy(images[index[:3]]).float() / 255.0)
