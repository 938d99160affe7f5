"""The fast Evaluator (methods/protocol.py) scores as the straightforward evaluations it replaced.

Real MNIST streams (Rotations, whose pixel maps repeat source pixels and use the zero pad, and
Permutations), cut to 3 tasks and 2,000 test images so the file runs in seconds. Learners that expose
their MLP (Learner.eval_mlp) take the fused all-task GEMM, which sums in another order: its predictions
must equal a plain per-task loop's except at float ties of the loop's logits. Other learners take the
per-task path, bit-identical to the original evaluator.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from bench.protocol_before import UInt8Evaluator, reference_run
from methods import protocol, registry
from methods.base import Context
from methods.baselines import Online
from methods.model import mlp, mlp_layers

N_TEST = 2000
CPU = torch.device("cpu")
TIE = 1e-4   # top-2 logit gap below which another summation order may pick the other class

# Every learner family the fused path covers: shared MLP (online, ewc, gem, replay, MER with its flat
# parameter vector), task-specific first layers (taskinput), one narrow net per task (independent).
FUSED_METHODS = [
    ("online", {"lr": 0.05}, 0),
    ("taskinput", {"lr": 0.2}, 0),
    ("independent", {"lr": 0.2}, 0),
    ("ewc", {"lr": 0.05, "n_memories": 10, "memory_strength": 10.0}, 0),
    ("gem", {"lr": 0.05, "memory_strength": 0.5}, 60),
    ("eralg4", {"lr": 0.05, "replay_batch_size": 5}, 50),
    ("meralg1", {"lr": 0.05, "replay_batch_size": 5}, 50),
]


def reference_accuracy(stream, learner, n_test, drop_last):
    """Straightforward: numpy apply_map per task, image-major float inputs, a plain count (as main.py)."""
    n_scored = n_test - 1 if drop_last else n_test
    accs = []
    with torch.no_grad():
        for t in range(stream.n_tasks):
            x = torch.from_numpy(stream.task_images("test", t, np.arange(n_scored))).float() / 255.0
            pred = learner(x, t).argmax(1).numpy()
            accs.append(float((pred == stream.test_labels[:n_scored]).sum()) / n_test)
    return accs


def plain_logits(stream, learner, n_scored):
    """A plain per-task loop: image-major inputs from numpy apply_map, learner(x, t) (T x N x classes)."""
    was_training = learner.training
    learner.eval()
    with torch.no_grad():
        logits = torch.stack([learner(torch.from_numpy(stream.task_images("test", t, np.arange(n_scored))).float()
                                      / 255.0, t) for t in range(stream.n_tasks)])
    learner.train(was_training)
    return logits


def flips_at_ties(pred, logits):
    """Where the predictions differ from the logits' argmax (T x N), asserting each is a float tie."""
    top2 = logits.topk(2, dim=2).values
    flipped = pred != logits.argmax(2)
    assert (top2[..., 0] - top2[..., 1])[flipped].lt(TIE).all()   # disagreements only at float ties
    return flipped


class Mirrored(Online):
    """Online's net on the pixels in reverse order: a forward that is NOT the MLP on the input."""

    def forward(self, x, t):
        return self.net(x.flip(1))


def trained_learner(stream, method="online", hparams=None, memory=0):
    torch.manual_seed(0)
    ctx = Context(784, 10, stream.n_tasks, 2, 100, memory, 1, 60, torch.device("cpu"))
    learner = registry.build(method, ctx, hparams or {"lr": 0.05})
    gen = torch.Generator().manual_seed(1)
    for t in range(stream.n_tasks):
        idx = torch.randperm(len(stream.train_labels), generator=gen)[:60].numpy()
        x = torch.from_numpy(stream.task_images("train", t, idx)).float() / 255.0
        y = torch.from_numpy(stream.train_labels[idx])
        for i in range(0, 60, 10):
            learner.observe(x[i:i + 10], t, y[i:i + 10])
    return learner


@pytest.mark.parametrize("dataset", ["rotations", "permutations"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_fallback_scores_equal_previous_and_reference(make_stream, dataset, drop_last):
    """A learner whose forward is not its MLP is scored by its own forward, exactly as the original evaluator."""
    stream = make_stream(dataset, n_tasks=3)
    plain = trained_learner(stream)
    learner = Mirrored(plain.ctx, plain.hp)
    learner.load_state_dict(plain.state_dict())
    ev = protocol.Evaluator(stream, N_TEST, CPU, drop_last)
    fast = ev(learner)
    assert ev._task_mlps(learner) is None
    assert fast == UInt8Evaluator(stream, N_TEST, CPU, drop_last)(learner)
    assert fast == pytest.approx(reference_accuracy(stream, learner, N_TEST, drop_last), abs=1.5 / N_TEST)
    assert fast != ev(plain)  # the same weights without the mirroring score differently
    assert learner.training  # evaluation restores train mode


@pytest.mark.parametrize("dataset,drop_last", [("rotations", False), ("permutations", True)])
@pytest.mark.parametrize("method,hparams,memory", FUSED_METHODS)
def test_fused_scores_as_plain_loop(make_stream, dataset, drop_last, method, hparams, memory):
    stream = make_stream(dataset, n_tasks=3)
    learner = trained_learner(stream, method, hparams, memory)
    ev = protocol.Evaluator(stream, N_TEST, CPU, drop_last)
    assert ev._task_mlps(learner) is not None  # the fused path, not the per-task fallback
    logits = plain_logits(stream, learner, ev.n_scored)
    flipped = flips_at_ties(ev.predictions(learner), logits)
    correct = (logits.argmax(2) == torch.from_numpy(stream.test_labels[: ev.n_scored])).sum(1)
    expected = (correct.double() / N_TEST).tolist()
    fast = ev(learner)
    for acc, want, n_flipped in zip(fast, expected, flipped.sum(1).tolist()):
        assert abs(acc - want) <= n_flipped / N_TEST + 1e-12
    assert len(set(fast)) > 1 and max(fast) > 0.15  # a trained model (chance is 0.1), different per task
    assert learner.training


@pytest.mark.parametrize("method", ["online", "taskinput"])
def test_fused_task_blocks(make_stream, method):
    """More tasks than one fused block (20 of width 100): each block folds its own tasks' maps and layers."""
    stream = make_stream("permutations", n_tasks=23)
    learner = trained_learner(stream, method, {"lr": 0.2})
    ev = protocol.Evaluator(stream, 500, CPU, False)
    logits = plain_logits(stream, learner, 500)
    flipped = flips_at_ties(ev.predictions(learner), logits)
    assert flipped.sum() <= 2 and logits.argmax(2)[20:].ne(logits.argmax(2)[:3]).any()


def test_mlp_layers_only_for_plain_mlps():
    assert [layer.out_features for layer in mlp_layers(mlp([784, 100, 100, 10]))] == [100, 100, 10]
    assert mlp_layers(nn.Sequential(nn.Linear(784, 10), nn.Tanh(), nn.Linear(10, 10))) is None
    assert mlp_layers(nn.Sequential(nn.Linear(784, 10), nn.ReLU(), nn.Dropout(), nn.Linear(10, 10))) is None
    assert mlp_layers(nn.Sequential(nn.Linear(784, 10), nn.ReLU())) is None
    assert mlp_layers(nn.Linear(784, 10)) is None


def test_inputs_are_the_mapped_images(make_stream):
    stream = make_stream("rotations", n_tasks=3)
    ev = protocol.Evaluator(stream, N_TEST, torch.device("cpu"), False)
    for t in range(3):
        expected = torch.from_numpy(stream.task_images("test", t, np.arange(N_TEST))).float().div_(255.0)
        assert torch.equal(ev.test_inputs(t), expected)


@pytest.mark.parametrize("dataset", ["rotations", "permutations"])
def test_deterministic_and_reused_buffers_do_not_leak(make_stream, dataset):
    """Same learner twice, and a fresh evaluator: bitwise the same; the reused folded-weight buffer then
    serves a differently shaped learner (one narrow net per task) and the first one again."""
    stream = make_stream(dataset, n_tasks=3)
    first, other = trained_learner(stream, "taskinput"), trained_learner(stream, "independent")
    ev = protocol.Evaluator(stream, N_TEST, CPU, False)
    pred = ev.predictions(first)
    assert torch.equal(pred, ev.predictions(first))
    assert torch.equal(pred, protocol.Evaluator(stream, N_TEST, CPU, False).predictions(first))
    assert ev(first) == ev(first)
    assert torch.equal(ev.predictions(other), protocol.Evaluator(stream, N_TEST, CPU, False).predictions(other))
    assert torch.equal(ev.predictions(first), pred)
    assert not torch.equal(pred, ev.predictions(other))


@pytest.mark.parametrize("method,hparams,batch_size", [
    ("online", {"lr": 0.01}, 1),
    ("ewc", {"lr": 0.01, "n_memories": 10, "memory_strength": 10.0}, 1),
    ("online", {"lr": 0.05}, 7),   # a last batch shorter than the others
])
def test_run_R_identical_to_original_loop(make_stream, method, hparams, batch_size):
    """A whole protocol run with a fixed seed gives the same evaluation log (hence R) as the original loop."""
    stream = make_stream("rotations", n_tasks=3)
    spec = {"test_examples_per_task": N_TEST, "compat": {"eval_drop_last_test_example": False},
            "batch_size": batch_size, "log_every": 20 // batch_size}

    def one(runner):
        protocol.seed_everything(3)
        schedule = protocol.make_schedule(3, len(stream.train_labels), 50)
        ctx = Context(784, 10, 3, 2, 100, 0, batch_size, 50, torch.device("cpu"))
        return runner(registry.build(method, ctx, hparams), schedule)

    fast, timing = one(lambda learner, schedule: protocol.run(learner, stream, schedule, spec, torch.device("cpu"),
                                                              progress=io.StringIO()))
    slow = one(lambda learner, schedule: reference_run(learner, stream, schedule, spec))
    assert fast.acc == slow.acc and fast.task == slow.task and fast.examples_seen == slow.examples_seen
    assert timing["examples"] == 150 and fast.examples_seen[-1] == 150
    assert len({tuple(a) for a in fast.acc}) > 3  # the model changed between evaluations


def test_spread_test_subset_is_evenly_spaced_and_first_is_unchanged(make_stream):
    """test_subset: `first` is the reference slice (every existing record), `spread` every (N/n)-th image."""
    from data_prep.errors import ClreproError

    stream = make_stream("rotations", n_tasks=2)
    assert protocol.test_subset(10000, 2000, "first").tolist() == list(range(2000))
    spread = protocol.test_subset(10000, 2000, "spread")
    assert spread.tolist() == list(range(0, 10000, 5))
    assert protocol.test_subset(1874, 1874, "spread").tolist() == list(range(1874))   # no cut: all, in order
    picked = protocol.test_subset(1874, 500, "spread")
    assert len(set(picked.tolist())) == 500 and picked.max() < 1874
    sets = protocol.task_test_sets(stream, 200, False, "spread")
    index, labels, n = sets[0]
    assert n == 200 and index.tolist() == list(range(0, 10000, 50))
    np.testing.assert_array_equal(labels, stream.test_labels[index])
    with pytest.raises(ClreproError, match="unknown test_subset 'middle'; use one of first, spread"):
        protocol.test_subset(10, 5, "middle")
