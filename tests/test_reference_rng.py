"""compat.rng: `reference` reproduces the reference code's runs, the default `fast` is unchanged.

The frozen numbers (tests/data/, numbers only) come from two runs on the same small real stream (Rotations,
3 tasks x 100 examples, 500 test images of which 499 are scored, evaluation every 50 examples, memory 200,
seed 0):

- reference_rng.json: the unmodified official main.py (mattriemer/MER@4b7b9c9; gem from
  facebookresearch/GradientEpisodicMemory@34c6b8e) on clrepro's exported stream, its random calls logged
  (`python bench/reference_agreement.py freeze`): evaluation log, replay draws, reservoir slots, Alg. 7's
  batch orders (sha256 and first entries);
- rng_fast_golden.json: clrepro itself before compat.rng existed (the commit is in the file).

Runs go through methods.train.main in-process (the spec resolved by methods.config, as Snakemake passes it),
with ReservoirMemory's draws and slots and Alg. 7's shuffles recorded by wrapping them.
"""
from __future__ import annotations

import copy
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.reference_agreement import SAME_IN_BOTH_MODES
from data_prep.errors import ClreproError
from methods import registry, train
from methods.base import Context
from methods.config import load_config, prepare, resolve_run, spec_key
from methods.gem import TaskRingMemory
from methods.memory import ReservoirMemory

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
REFERENCE = json.loads((DATA / "reference_rng.json").read_text())
FAST = json.loads((DATA / "rng_fast_golden.json").read_text())
SETUP = REFERENCE["setup"]
REPLAY = ["eralg4", "eralg5", "meralg1", "meralg6", "meralg7"]
NO_RNG = ["online", "independent", "taskinput", "ewc", "gem"]   # consume no RNG while training
FLOAT32 = 1e-6   # the reference stores count / n as float32 (error ~3e-8); one test image is 1 / 500 = 2e-3


def sha(value) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()


def spec_for(method: str, memory: int, rng: str | None = None, hparams: dict | None = None) -> dict:
    d = SETUP["dataset"]
    config = prepare({
        "datasets": [d], "methods": [method], "memories": [memory or 500], "seeds": [SETUP["seed"]], "device": "cpu",
        "stream_seed": SETUP["stream_seed"], "streams": {d: {"kind": "rotation", "n_tasks": SETUP["n_tasks"]}},
        "overrides": {"samples_per_task": {d: SETUP["samples_per_task"]},
                      "test_examples_per_task": {d: SETUP["n_test"]}, "log_every": SETUP["log_every"]},
        "compat": {"eval_drop_last_test_example": True, **({"rng": rng} if rng else {})},
        "hparams": {method: hparams or {}}})
    return resolve_run(config, d, method, memory, SETUP["seed"])


@pytest.fixture
def run_logged(make_stream, mnist_dir, tmp_path, monkeypatch):
    """Train one cell in-process; returns (record, draws, slots, perms)."""
    stream = make_stream(SETUP["dataset"], n_tasks=SETUP["n_tasks"], stream_seed=SETUP["stream_seed"])

    def run(method, memory, rng=None, hparams=None):
        draws, slots, perms = [], [], []
        draw, slot = ReservoirMemory.draw_indices, ReservoirMemory.slot

        def logged_draw(self, n):
            idx = draw(self, n)
            if idx:
                draws.append(list(idx))
            return idx

        def logged_slot(self):
            full = self.size >= self.capacity
            p = slot(self)
            if full:
                slots.append(p)
            return p

        monkeypatch.setattr(ReservoirMemory, "draw_indices", logged_draw)
        monkeypatch.setattr(ReservoirMemory, "slot", logged_slot)
        monkeypatch.setattr("methods.mer.random", _Alg7Shuffles(perms))
        spec = spec_for(method, memory, rng, hparams)
        out = tmp_path / f"{method}_{rng}.json"
        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        try:
            assert train.main(["--spec", json.dumps(spec), "--stream", str(stream.path), "--mnist", str(mnist_dir),
                               "--out", str(out)]) == 0
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
        return json.loads(out.read_text()), draws, slots, perms

    return run


class _Alg7Shuffles:
    """Stands in for the `random` module inside methods/mer.py: Alg. 7's batch-order shuffle is the global
    random.shuffle, recorded here (the reservoir's draws go through ReservoirMemory, not this module)."""

    def __init__(self, perms: list) -> None:
        self.perms = perms

    def shuffle(self, x) -> None:
        random.shuffle(x)
        self.perms.append(list(x))

    def __getattr__(self, name):
        return getattr(random, name)


def assert_log_equal(record: dict, frozen: dict, tol: float) -> None:
    log = record["eval_log"]
    assert log["task"] == frozen["task"]
    diff = np.abs(np.array(log["acc"]) - np.array(frozen["acc"]))
    assert diff.max() <= tol, f"evaluation log differs by up to {diff.max():.2e} (entries {np.argwhere(diff > tol).tolist()})"


def assert_calls_equal(calls: list, frozen: dict, what: str) -> None:
    assert len(calls) == frozen["n"], f"{what}: {len(calls)} calls, the reference made {frozen['n']}"
    assert calls[: len(frozen["first"])] == frozen["first"], f"{what}: the first calls differ from the reference's"
    assert sha(calls) == frozen["sha256"], f"{what}: same count and start as the reference, but the sequence differs"


# ---- rng: reference reproduces the reference code --------------------------------------------------------

@pytest.mark.parametrize("method,engine", [(m, e) for m in REPLAY for e in
                                            (["c", "torch"] if m.startswith("meralg") else [None])])
def test_reference_rng_reproduces_the_reference_run(run_logged, method, engine):
    """Same replay draws, same reservoir slots, same Alg. 7 batch orders, same evaluation log (to float32)."""
    frozen = REFERENCE["runs"][method]
    record, draws, slots, perms = run_logged(method, frozen["memory"], "reference", {"engine": engine} if engine else None)
    assert record["spec"]["compat"]["rng"] == "reference" and record["spec"]["hparams"]["rng"] == "reference"
    assert frozen["draws"]["n"] > 200 and frozen["slots"]["n"] == 100      # the memory filled and was replaced into
    assert_calls_equal(draws, frozen["draws"], "replay draws")
    assert_calls_equal(slots, frozen["slots"], "reservoir slots")
    assert_calls_equal(perms, frozen["perms"], "Alg. 7 batch orders")
    assert_log_equal(record, frozen, FLOAT32)


@pytest.mark.parametrize("method", NO_RNG)
def test_methods_without_training_rng_already_match_the_reference(run_logged, method):
    """online, independent, taskinput, EWC and GEM consume no RNG while training, as the reference: the default
    already reproduces the reference's log on this short stream, and rng: reference is the very same run
    (GEM's and EWC's reference modes also take the reference's memory layout and penalty loop, docs/gem.md:
    over a whole stream only that mode stays on the reference's log, so bench/reference_agreement.py runs both
    modes for them and the test asserts the two identical only for the others)."""
    frozen = REFERENCE["runs"][method]
    logs = {}
    for rng in (None, "reference"):
        record, draws, slots, perms = run_logged(method, frozen["memory"], rng)
        assert draws == slots == perms == []
        assert_log_equal(record, frozen, FLOAT32)
        logs[rng] = record["eval_log"]["acc"]
    if method in SAME_IN_BOTH_MODES:   # the agreement script runs these once for both modes
        assert logs[None] == logs["reference"]


def test_the_default_fast_draws_are_not_the_references(run_logged):
    """The test above can fail: fast draws the same distribution from another random stream."""
    frozen = REFERENCE["runs"]["eralg4"]
    record, draws, slots, _ = run_logged("eralg4", frozen["memory"])
    assert len(draws) == frozen["draws"]["n"] and sha(draws) != frozen["draws"]["sha256"]
    assert slots[:5] != frozen["slots"]["first"][:5]      # the reservoir's randint meets another RNG state
    diff = np.abs(np.array(record["eval_log"]["acc"]) - np.array(frozen["acc"]))
    assert diff.max() > 10 * (1 / SETUP["n_test"])


# ---- rng: fast (the default) is what it was ---------------------------------------------------------------

@pytest.mark.parametrize("i", range(len(FAST["runs"])), ids=[f"{r['method']}-{r['hparams'].get('engine', '')}"
                                                             for r in FAST["runs"]])
def test_fast_rng_is_unchanged(run_logged, i):
    """Bitwise: the same draws, slots and evaluation log as before compat.rng existed."""
    golden = FAST["runs"][i]
    record, draws, slots, _ = run_logged(golden["method"], golden["memory"], None, golden["hparams"] or None)
    assert "rng" not in record["spec"]["compat"] and "rng" not in record["spec"]["hparams"]
    assert (sum(map(len, draws)), sha(draws)) == (golden["n_draws"], golden["draws_sha256"])
    assert (len(slots), sha(slots)) == (golden["n_slots"], golden["slots_sha256"])
    assert record["eval_log"]["task"] == golden["task"]
    assert record["eval_log"]["acc"] == golden["acc"]


# ---- the switch: config, spec, errors ---------------------------------------------------------------------

def test_fast_is_absent_from_the_spec_so_existing_records_keep_their_keys():
    config = load_config(ROOT / "config" / "config.yaml")
    explicit = copy.deepcopy(config)
    explicit["compat"]["rng"] = "fast"
    for method, memory in [("eralg4", 500), ("meralg6", 500), ("gem", 500), ("online", 0)]:
        spec = resolve_run(config, "rotations", method, memory, 0)
        assert "rng" not in spec["compat"] and "rng" not in spec["hparams"]
        assert resolve_run(explicit, "rotations", method, memory, 0) == spec


def test_reference_reaches_every_gem_mer_method_as_its_rng_hparam():
    config = load_config(ROOT / "config" / "config.yaml")
    fast = {m: spec_key(resolve_run(config, "rotations", m, 500 if registry.get(m).__module__ != "methods.baselines"
                                    else 0, 0)) for m in REPLAY + NO_RNG + ["agem"]}
    config["compat"]["rng"] = "reference"
    for method in REPLAY + NO_RNG + ["agem"]:
        memory = 0 if registry.get(method).__module__ == "methods.baselines" else 500
        spec = resolve_run(config, "rotations", method, memory, 0)
        assert spec["compat"]["rng"] == spec["hparams"]["rng"] == "reference"
        assert spec_key(spec) != fast[method]                      # a new record, beside the fast one
        assert registry.make_hparams(method, spec["hparams"]).rng == "reference"


@pytest.mark.parametrize("method", ["dgr", "taagem"])
def test_methods_without_a_reference_code_refuse_reference_rng_at_resolve_time(method):
    config = load_config(ROOT / "config" / "config.yaml")
    config["compat"]["rng"] = "reference"
    memory = 0 if method == "dgr" else 500
    with pytest.raises(ClreproError, match=f"compat.rng: reference .* {method} has no such reference"):
        resolve_run(config, "rotations", method, memory, 0)


@pytest.mark.parametrize("method,override,name", [
    ("eralg4", {"replay_draw": "without_replacement"}, "replay_draw"),
    ("meralg1", {"reservoir_randint": "vitter"}, "reservoir_randint"),
    ("meralg6", {"meralg6_extra_draw": False}, "meralg6_extra_draw"),
])
def test_reference_rng_refuses_quirk_switches_that_change_the_draws(method, override, name):
    config = load_config(ROOT / "config" / "config.yaml")
    config["compat"]["rng"] = "reference"
    config["hparams"] = {method: override}
    with pytest.raises(ClreproError, match=f"compat.rng: reference .* need {name}"):
        resolve_run(config, "rotations", method, 500, 0)
    config["compat"].pop("rng")
    resolve_run(config, "rotations", method, 500, 0)              # fine under fast


def test_schema_accepts_only_fast_and_reference():
    base = {"datasets": ["rotations"], "methods": ["eralg4"], "memories": [500], "seeds": [0]}
    for value in ("fast", "reference"):
        prepare({**copy.deepcopy(base), "compat": {"rng": value}})
    with pytest.raises(ClreproError, match="invalid config at compat/rng"):
        prepare({**base, "compat": {"rng": "exact"}})


def test_reference_draw_is_the_reference_getbatch_loop():
    """Per batch a fresh list of slots, shuffled whole before each item, item j = order[j]."""
    mem = ReservoirMemory(7, 1, torch.device("cpu"), rng=random.Random(3), rng_mode="reference")
    for j in range(7):
        mem.add(torch.tensor([float(j)]), torch.tensor(j), 0)
    rng, expected = random.Random(3), []
    for _ in range(4):
        order = list(range(7))
        for j in range(5):
            rng.shuffle(order)
            expected.append(order[j])
    assert [i for _ in range(4) for i in mem.draw_indices(5)] == expected
    assert mem.draw_indices(20) and len(mem.draw_indices(20)) == 7    # never more items than stored


# ---- A-GEM: the A-GEM reference's own calls --------------------------------------------------------------

def agem(rng: str, n_tasks=3, memory=90, sample_size=50):
    c = Context(784, 10, n_tasks, 2, 100, memory=memory, batch_size=1, samples_per_task=30, device=torch.device("cpu"))
    return registry.build("agem", c, {"lr": 0.01, "sample_size": sample_size, "rng": rng})


def test_agem_reference_sample_is_numpy_choice_without_replacement():
    learner = agem("reference")
    for t in range(3):
        for i in range(30):
            learner.memory.add(torch.full((1, 784), 100.0 * t + i), torch.tensor([i % 10]), t)
    np.random.seed(5)
    torch.manual_seed(0)
    torch_state = torch.get_rng_state()
    x, _ = learner.reference_sample([0, 1])
    np.random.seed(5)
    picks = np.random.choice(60, 50, replace=False)                  # agem fc_permute_mnist.py's call
    assert x[:, 0].tolist() == [float(100 * (k // 30) + k % 30) for k in picks]
    assert torch.equal(torch.get_rng_state(), torch_state)            # torch's RNG untouched
    state = np.random.get_state()[1].copy()
    x, _ = learner.reference_sample([0])                              # at most sample_size: all, in order
    assert x[:, 0].tolist() == [float(i) for i in range(30)]
    assert np.array_equal(np.random.get_state()[1], state)            # no draw at all, as the reference


def test_agem_reference_fill_is_the_per_class_ring_with_carried_counters():
    """Per class c a block of n // classes slots, example -> slot c * P + count[c], count never reset; so the
    last P examples of each class stay, at positions that depend on the earlier tasks' counts."""
    mem = TaskRingMemory(n_tasks=2, n=4, n_inputs=1, device=torch.device("cpu"))
    state = torch.get_rng_state()
    x0, y0 = torch.tensor([[10.], [11.], [12.], [13.]]), torch.tensor([0, 0, 0, 1])
    mem.fill_task(x0, y0, 0, n_classes=2, rng="reference")
    # class 0: 10 -> 0, 11 -> 1, 12 -> 0 (count 1); class 1: 13 -> 2 (count 1); slot 3 never written
    assert mem.x[0, :, 0].tolist()[:3] == [12., 11., 13.] and mem.written[0].tolist() == [True, True, True, False]
    x1, y1 = torch.tensor([[20.], [21.], [22.]]), torch.tensor([1, 1, 0])
    mem.fill_task(x1, y1, 1, n_classes=2, rng="reference")
    # class 1 goes on from count 1: 20 -> 3, 21 -> 2; class 0 from count 1: 22 -> 1
    assert mem.x[1, 1:, 0].tolist() == [22., 21., 20.] and mem.written[1].tolist() == [False, True, True, True]
    assert mem.y[1, 1:].tolist() == [0, 1, 1]
    assert torch.equal(torch.get_rng_state(), state)
