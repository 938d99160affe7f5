"""The reservoir memory shared by ER and MER (methods/memory.py): sampling law, draws, update order."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from scipy import stats

from data_prep.errors import ClreproError
from methods.base import Context
from methods.memory import ReservoirMemory
from methods import registry

M, N, STREAMS = 5, 20, 6000


def inclusion_counts(randint: str, seed: int = 0) -> np.ndarray:
    """How often each of N stream positions ends in a size-M reservoir, over STREAMS streams."""
    rng = random.Random(seed)
    counts = np.zeros(N)
    for _ in range(STREAMS):
        mem = ReservoirMemory(M, 1, torch.device("cpu"), randint=randint, rng=rng)
        held = [None] * M
        for j in range(N):
            p = mem.slot()
            if p is not None:
                held[p] = j
        counts[held] += 1
    return counts


def expected_probability(randint: str) -> np.ndarray:
    """Exact inclusion probabilities. Vitter: M/N for every item. Reference (randint(0, age) inclusive):
    item j (1-based) > M is kept w.p. M/(j+1) and then survives step i w.p. i/(i+1), so M/(N+1); the first
    M items only face the survival product, (M+1)/(N+1)."""
    if randint == "vitter":
        return np.full(N, M / N)
    return np.array([(M + 1) / (N + 1)] * M + [M / (N + 1)] * (N - M))


def chi2_pvalue(counts: np.ndarray, prob: np.ndarray) -> float:
    expected = prob * STREAMS
    return float(stats.chi2.sf(((counts - expected) ** 2 / expected).sum(), df=N - 1))


@pytest.mark.parametrize("randint,other", [("inclusive", "vitter"), ("vitter", "inclusive")])
def test_inclusion_probabilities(randint, other):
    counts = inclusion_counts(randint)
    assert counts.sum() == M * STREAMS
    assert chi2_pvalue(counts, expected_probability(randint)) > 1e-3
    # The test has the power to tell the two laws apart: the other mode's law is rejected.
    assert chi2_pvalue(counts, expected_probability(other)) < 1e-6


def test_draws_with_and_without_replacement():
    rng = random.Random(1)
    with_rep = ReservoirMemory(10, 1, torch.device("cpu"), rng=rng)
    without = ReservoirMemory(10, 1, torch.device("cpu"), draw="without_replacement", rng=rng)
    for mem in (with_rep, without):
        for j in range(10):
            mem.add(torch.tensor([float(j)]), torch.tensor(j), 0)
    draws = [with_rep.draw_indices(10) for _ in range(50)]
    assert any(len(set(d)) < 10 for d in draws)            # P(no repeat in 50 draws) = (10!/10^10)^50
    assert all(0 <= i < 10 for d in draws for i in d)
    for _ in range(50):
        d = without.draw_indices(8)
        assert len(d) == 8 and len(set(d)) == 8
    assert sorted(without.draw_indices(25)) == list(range(10))   # never more than is stored


@pytest.mark.parametrize("size,n", [(0, 0), (1, 1), (2, 2), (3, 3), (200, 25), (500, 10), (5120, 99),
                                    (2**16 + 3, 2)])
def test_reference_draw_in_c_is_python_random_shuffle(size, n):
    """Under rng: reference the draw runs in C (methods/mer_draw.c) on the Python RNG's state: the same
    indices and the same state afterwards as the reference's loop, across MT19937's 624-word refills and
    bounds from 2 up past 2^16 (where randbelow rejects often: 2^16 + 3 has bit_length 17). The loop is
    `getbatch_python` (MER's getBatch over random.shuffle); the C path is in turn pinned to the unmodified
    reference's draws by tests/test_reference_rng.py, so both paths are the reference's."""
    from methods import mer_draw
    assert mer_draw._kernel() is not None, "no C compiler: the C draw is not under test"
    for seed in (0, 1, 12345):
        ours, ref = random.Random(seed), random.Random(seed)
        ours.random()                       # start mid-block, not at a fresh seed's index
        ref.random()
        got = mer_draw.getbatch_c(mer_draw._kernel(), ours, size, n)
        assert got == mer_draw.getbatch_python(ref, size, n)
        assert ours.getstate() == ref.getstate()
        assert ours.random() == ref.random()


def test_reference_draw_without_the_kernel_is_the_same_loop(monkeypatch):
    from methods import mer_draw
    monkeypatch.setattr(mer_draw, "_kernel", lambda: None)
    mem = ReservoirMemory(50, 1, torch.device("cpu"), rng=random.Random(3), rng_mode="reference")
    for j in range(50):
        mem.add(torch.tensor([float(j)]), torch.tensor(j), 0)
    ref = random.Random(3)
    assert mem.draw_indices(7) == mer_draw.getbatch_python(ref, 50, 7)
    assert mem.rng.getstate() == ref.getstate()


def test_add_stores_example_label_and_task():
    mem = ReservoirMemory(3, 2, torch.device("cpu"), rng=random.Random(0))
    for j in range(3):
        mem.add(torch.tensor([j, -j], dtype=torch.float32), torch.tensor(j + 5), 7 + j)
    assert mem.x.tolist() == [[0, 0], [1, -1], [2, -2]]
    assert mem.y.tolist() == [5, 6, 7] and mem.t.tolist() == [7, 8, 9]
    assert mem.size == 3 and mem.age == 3


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"randint": "exclusive"}, {"draw": "stratified"}])
def test_bad_settings_name_the_fix(kwargs):
    args = {"capacity": 4, "n_inputs": 1, "device": torch.device("cpu"), **kwargs}
    with pytest.raises(ClreproError):
        ReservoirMemory(**args)


@pytest.mark.parametrize("method,hparams", [
    ("eralg4", {"lr": 0.1, "replay_batch_size": 3}),
    ("meralg1", {"lr": 0.1, "beta": 0.5, "gamma": 1.0, "replay_batch_size": 3, "batches_per_example": 2}),
    ("meralg6", {"lr": 0.1, "gamma": 0.5, "replay_batch_size": 3}),
    ("meralg7", {"lr": 0.1, "gamma": 0.5, "replay_batch_size": 3, "s": 2.0}),
])
def test_memory_updated_after_the_step(make_stream, method, hparams):
    """The current example is offered to the memory only after its update: no batch contains a memory
    copy of the example being learned, and the first example trains alone (MER Alg. 7 skips it)."""
    stream = make_stream("rotations", n_tasks=2)
    x = torch.from_numpy(stream.task_images("train", 0, np.arange(12))).float() / 255
    y = torch.from_numpy(stream.train_labels[:12])
    ctx = Context(784, 10, 2, 2, 100, 6, 1, 12, torch.device("cpu"))
    random.seed(0)
    torch.manual_seed(0)
    learner = registry.build(method, ctx, hparams)
    events = []
    draw = learner.memory.draw_indices
    learner.memory.draw_indices = lambda n: events.append(("draw", learner.memory.size)) or draw(n)
    add = learner.memory.add
    learner.memory.add = lambda *a: events.append(("add", learner.memory.size)) or add(*a)
    for i in range(12):
        before = learner.memory.size
        learner.observe(x[i:i + 1], 0, y[i:i + 1])
        assert learner.memory.size == min(before + 1, 6)
        assert bool((learner.memory.x == x[i]).all(1).any()) or learner.memory.size == 6
    adds = [k for k, e in enumerate(events) if e[0] == "add"]
    assert len(adds) == 12
    # every draw of example i sees only examples 0..i-1
    for i, k in enumerate(adds):
        prev = adds[i - 1] if i else -1
        assert all(e == ("draw", min(i, 6)) for e in events[prev + 1:k])
