"""The fast Evaluator (methods/protocol.py) scores exactly as the straightforward evaluations it replaced.

Real MNIST streams (Rotations, whose pixel maps repeat source pixels and use the zero pad, and
Permutations), cut to 3 tasks and 2,000 test images so the file runs in seconds.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from bench.protocol_before import UInt8Evaluator, reference_run
from methods import protocol, registry
from methods.base import Context

N_TEST = 2000


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


def trained_learner(stream, method="online", hparams=None):
    torch.manual_seed(0)
    ctx = Context(784, 10, stream.n_tasks, 2, 100, 0, 1, 60, torch.device("cpu"))
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
def test_scores_equal_previous_and_reference(make_stream, dataset, drop_last):
    stream = make_stream(dataset, n_tasks=3)
    learner = trained_learner(stream)
    fast = protocol.Evaluator(stream, N_TEST, torch.device("cpu"), drop_last)(learner)
    assert fast == UInt8Evaluator(stream, N_TEST, torch.device("cpu"), drop_last)(learner)
    assert fast == pytest.approx(reference_accuracy(stream, learner, N_TEST, drop_last), abs=1.5 / N_TEST)
    assert len(set(fast)) > 1 and max(fast) > 0.2  # a trained model (chance is 0.1), different per task
    assert learner.training  # evaluation restores train mode


def test_inputs_are_the_mapped_images(make_stream):
    stream = make_stream("rotations", n_tasks=3)
    ev = protocol.Evaluator(stream, N_TEST, torch.device("cpu"), False)
    for t in range(3):
        expected = torch.from_numpy(stream.task_images("test", t, np.arange(N_TEST))).float().div_(255.0)
        assert torch.equal(ev.test_inputs(t), expected)


def test_reused_buffer_does_not_leak_between_tasks(make_stream):
    """Task-specific heads see their own task's inputs even though the gather buffer is shared."""
    stream = make_stream("rotations", n_tasks=3)
    learner = trained_learner(stream, "taskinput", {"lr": 0.05})
    ev = protocol.Evaluator(stream, N_TEST, torch.device("cpu"), False)
    first, second = ev(learner), ev(learner)
    assert first == second == UInt8Evaluator(stream, N_TEST, torch.device("cpu"), False)(learner)


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
