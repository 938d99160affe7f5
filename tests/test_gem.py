"""GEM and A-GEM as learners: memory fill, fast past-task gradients, the projection inside a step, loud QP
failures, A-GEM's reference sample, and a real-MNIST run through the registry and the protocol loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from data_prep.errors import ClreproError
from methods import gem as gem_mod
from methods import protocol, registry
from methods.base import Context
from methods.gem import TaskRingMemory
from methods.model import flat_grad


def ctx(n_tasks=4, memory=40, batch_size=1, samples=100, n_hiddens=20):
    return Context(n_inputs=784, n_outputs=10, n_tasks=n_tasks, n_layers=2, n_hiddens=n_hiddens,
                   memory=memory, batch_size=batch_size, samples_per_task=samples, device=torch.device("cpu"))


def real_task(stream, task: int, n: int, seed: int = 0):
    idx = np.random.default_rng(seed).choice(len(stream.train_labels), n, replace=False)
    x = torch.from_numpy(stream.task_images("train", task, idx)).float() / 255.0
    return x, torch.from_numpy(stream.train_labels[idx]).long()


def loop_grads(net, xs, ys):
    """The reference's per-task loop: zero_grad, mean CE on the whole row, backward, flatten."""
    out = []
    for x, y in zip(xs, ys):
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        out.append(flat_grad(net.parameters()))
    net.zero_grad()
    return torch.stack(out)


# ---- memory ---------------------------------------------------------------------------------------------

def test_ring_memory_holds_the_last_n_of_each_task_with_batch_1():
    """Scalar 'images' = example ids, so the content of each row can be read off exactly."""
    n = 5
    mem = TaskRingMemory(3, n, 1, torch.device("cpu"))
    lengths = [12, 7, 9]
    next_id = 0
    ids = []
    for t, m in enumerate(lengths):
        ids.append(list(range(next_id, next_id + m)))
        for i in ids[t]:
            mem.add(torch.tensor([[float(i)]]), torch.tensor([i % 10]), t)
        next_id += m
    for t in range(3):
        assert sorted(mem.x[t, :, 0].long().tolist()) == ids[t][-n:]
        assert mem.y[t].tolist() == [int(v) % 10 for v in mem.x[t, :, 0].tolist()]
    # the counter is shared and not reset: task 1 started writing where task 0 stopped (12 % 5 = 2)
    assert mem.x[1, 2, 0].item() == ids[1][0] + 5        # slot 2 was written twice within task 1 (ids 12, 17)
    assert mem.cnt == (12 + 7 + 9) % n
    assert mem.filled() == [5, 5, 5]


def test_ring_memory_drops_the_batch_tail_at_the_wrap_as_the_reference():
    mem = TaskRingMemory(1, 25, 1, torch.device("cpu"))
    for b in range(3):                                       # 3 batches of 10: 10 + 10 + 5 stored, 5 dropped
        x = torch.arange(10 * b, 10 * b + 10, dtype=torch.float32)[:, None]
        mem.add(x, torch.zeros(10, dtype=torch.long), 0)
    assert mem.x[0, :, 0].tolist() == list(range(25)) and mem.cnt == 0
    mem.add(torch.arange(30, 40, dtype=torch.float32)[:, None], torch.zeros(10, dtype=torch.long), 0)
    assert mem.x[0, :10, 0].tolist() == list(range(30, 40))


def test_patterns_per_experience_is_total_memory_split_over_tasks():
    learner = registry.build("gem", ctx(n_tasks=20, memory=5120), {"lr": 0.01, "memory_strength": 1.0})
    assert learner.n_memories == 256 and learner.memory.x.shape == (20, 256, 784)
    agem = registry.build("agem", ctx(n_tasks=20, memory=500), {"lr": 0.01})
    assert agem.n_memories == 25
    with pytest.raises(ClreproError, match="memory >= 20"):
        registry.build("gem", ctx(n_tasks=20, memory=0), {"lr": 0.01, "memory_strength": 1.0})


# ---- fast gradients -------------------------------------------------------------------------------------

@pytest.fixture
def one_thread():
    """Training jobs run with a fixed thread count (1); with more, BLAS may split a product differently."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("slots,n_hiddens", [(25, 100), (30, 20), (4, 100)])
def test_past_task_grads_are_bitwise_the_per_task_loop(make_stream, one_thread, slots, n_hiddens):
    """The reference computes each past task's gradient with its own backward; the batched hand-written
    backward gives the same floats, bit for bit (one thread, as a training job), on real images with trained
    (not initial) weights. 25 slots x 100 hidden units is the MER protocol at memory 500."""
    stream = make_stream("permutations", n_tasks=6)
    learner = registry.build("gem", ctx(n_tasks=6, memory=6 * slots, n_hiddens=n_hiddens),
                             {"lr": 0.01, "memory_strength": 0.5})
    for t in range(5):
        x, y = real_task(stream, t, slots, seed=t)
        for i in range(slots):
            learner.memory.add(x[i:i + 1], y[i:i + 1], t)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in learner.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = loop_grads(learner.net, learner.memory.x[:5], learner.memory.y[:5])
    for tasks in ([0], [0, 1, 2, 3, 4], [4, 0, 2]):          # prefix rows (a view) and an index list
        assert torch.equal(learner.past_task_grads(tasks), ref[tasks])


def test_vmap_path_for_other_nets_matches_the_loop(make_stream):
    """A net that is not the plain MLP, or rows of 1-3 slots, take the torch.func.vmap path: the loop's
    numbers within 1e-7."""
    stream = make_stream("permutations", n_tasks=4)
    for slots, other_net in ((30, True), (2, False)):
        learner = registry.build("gem", ctx(n_tasks=4, memory=4 * slots), {"lr": 0.01, "memory_strength": 0.5})
        if other_net:
            learner._layers = None
        for t in range(3):
            x, y = real_task(stream, t, slots, seed=t)
            for i in range(slots):
                learner.memory.add(x[i:i + 1], y[i:i + 1], t)
        ref = loop_grads(learner.net, learner.memory.x[:3], learner.memory.y[:3])
        torch.testing.assert_close(learner.past_task_grads([0, 1, 2]), ref, rtol=0, atol=1e-7)
        torch.testing.assert_close(learner.past_task_grads([2, 0]), ref[[2, 0]], rtol=0, atol=1e-7)


def test_partly_written_rows_use_only_written_slots(make_stream):
    """Documented deviation: fewer examples than slots -> mean over the written slots (reference: garbage)."""
    stream = make_stream("rotations", n_tasks=3)
    learner = registry.build("gem", ctx(n_tasks=3, memory=3 * 20), {"lr": 0.01, "memory_strength": 0.5})
    x, y = real_task(stream, 0, 20)
    for i in range(7):
        learner.memory.add(x[i:i + 1], y[i:i + 1], 0)
    learner.memory.cnt = 0
    for i in range(20):
        learner.memory.add(x[i:i + 1], y[i:i + 1], 1)
    fast = learner.past_task_grads([0, 1])
    ref = loop_grads(learner.net, [x[:7], x[:20]], [y[:7], y[:20]])
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-7)


# ---- one GEM step ---------------------------------------------------------------------------------------

def two_task_learner(stream, margin, lr=0.05, **hparams):
    learner = registry.build("gem", ctx(n_tasks=3, memory=3 * 40),
                             {"lr": lr, "memory_strength": margin, "qp_ridge": 1e-9, **hparams})
    x0, y0 = real_task(stream, 0, 40, seed=1)
    for i in range(40):
        learner.observe(x0[i:i + 1], 0, y0[i:i + 1])
    x1, y1 = real_task(stream, 1, 40, seed=2)
    for i in range(40):
        learner.observe(x1[i:i + 1], 1, y1[i:i + 1])
    return learner


def violating_step(learner, stream):
    """Observe the first of 200 real task-2 examples whose gradient violates a constraint; returns the memory
    gradients G, the batch gradient g and the direction the SGD step took ((before - after) / lr)."""
    x2, y2 = real_task(stream, 2, 200, seed=3)
    for i in range(200):
        x, y = x2[i:i + 1], y2[i:i + 1]
        G = loop_grads(learner.net, learner.memory.x[:2], learner.memory.y[:2])
        learner.net.zero_grad()
        F.cross_entropy(learner.net(x), y).backward()
        g = flat_grad(learner.net.parameters()).clone()
        if (G @ g < 0).any():
            break
    else:
        pytest.fail("no violating example among 200")
    before = torch.cat([p.detach().reshape(-1) for p in learner.net.parameters()]).clone()
    calls = learner.qp_calls
    learner.observe(x, 2, y)
    after = torch.cat([p.detach().reshape(-1) for p in learner.net.parameters()])
    assert learner.qp_calls == calls + 1 and learner.projections == learner.qp_calls
    return G.double(), g.double(), ((before - after) / learner.hp.lr).double()


def test_gem_step_applies_the_exact_projection(make_stream):
    """A violated step must use the QP answer: the projection of g onto {z : G z >= 0}."""
    stream = make_stream("rotations", n_tasks=3)
    Gd, gd, g_tilde = violating_step(two_task_learner(stream, margin=0.0), stream)
    assert (Gd @ g_tilde >= -1e-4 * gd.norm() * Gd.norm(dim=1)).all()          # constraints hold (float32 step)
    v, _ = nnls(Gd.numpy().T, -gd.numpy())                                     # independent solver
    expected = gd.numpy() + Gd.numpy().T @ v
    np.testing.assert_allclose(g_tilde.numpy(), expected, atol=2e-4 * np.abs(expected).max())


def test_agem_tf_gem_step_descends_along_the_past_task_gradients_alone(make_stream):
    """`projected: zero` (A-GEM's TF GEM projects its never-written current-task row of G): a violated step is
    G'v with v = argmin 1/2 |G'v|^2 s.t. v >= margin, whatever g was. Solved independently: v = margin + u,
    u = NNLS(G', -margin G'1)."""
    stream = make_stream("rotations", n_tasks=3)
    learner = two_task_learner(stream, margin=0.5, projected="zero")
    Gd, gd, step = violating_step(learner, stream)
    M = Gd.numpy().T
    u, _ = nnls(M, -0.5 * M.sum(1))
    expected = M @ (0.5 + u)
    np.testing.assert_allclose(step.numpy(), expected, atol=2e-4 * np.abs(expected).max())
    assert np.abs(step.numpy() - gd.numpy() - expected).max() > 1e-2 * np.abs(expected).max()   # g is not in it
    assert learner.info()["projected"] == "zero"


def test_gem_step_without_violation_is_plain_sgd_and_calls_no_qp(make_stream, monkeypatch):
    """Task 1 repeats task 0's only example: g_0 = g, so <g, g_0> > 0 and no QP may be called."""
    stream = make_stream("permutations", n_tasks=2)
    learner = registry.build("gem", ctx(n_tasks=2, memory=2), {"lr": 0.1, "memory_strength": 0.0})
    x, y = real_task(stream, 0, 1)
    learner.observe(x, 0, y)
    monkeypatch.setattr(gem_mod, "gem_project", lambda *a, **k: pytest.fail("QP called without a violation"))
    net_copy = registry.build("online", ctx(n_tasks=2), {"lr": 0.1})
    net_copy.net.load_state_dict(learner.net.state_dict())
    learner.observe(x, 1, y)
    net_copy.observe(x, 1, y)
    for p, q in zip(learner.net.parameters(), net_copy.net.parameters()):
        assert torch.equal(p, q)
    assert learner.checks == 1 and learner.qp_calls == 0


def test_qp_failure_is_loud_and_names_step_task_and_condition(make_stream, monkeypatch):
    stream = make_stream("rotations", n_tasks=3)
    learner = two_task_learner(stream, margin=0.5)

    def broken(*args, **kwargs):
        raise ValueError("matrix G is not positive definite")

    monkeypatch.setattr("methods.projection.quadprog.solve_qp", broken)
    x2, y2 = real_task(stream, 2, 300, seed=4)
    with pytest.raises(ClreproError) as err:
        for i in range(300):          # margin 0.5 with 2 constraints: a violation comes quickly
            learner.observe(x2[i:i + 1], 2, y2[i:i + 1])
    msg = str(err.value)
    assert f"step {learner.steps}" in msg and "task 2" in msg and "condition number" in msg
    assert "not positive definite" in msg and "qp_ridge" in msg


def test_nan_gradient_raises_instead_of_skipping(make_stream):
    stream = make_stream("rotations", n_tasks=3)
    learner = two_task_learner(stream, margin=0.5)
    x, y = real_task(stream, 2, 1, seed=5)
    with torch.no_grad():
        learner.net[0].weight[0, 0] = float("nan")
    with pytest.raises(ClreproError, match=r"step 81 \(task 2.*non-finite.*condition number (nan|inf)"):
        learner.observe(x, 2, y)


# ---- A-GEM ----------------------------------------------------------------------------------------------

def test_agem_reference_sample_is_past_tasks_only_without_replacement():
    """Synthetic ids as pixels: 3 tasks x 30 slots, current task 2; every id encodes (task, slot)."""
    learner = registry.build("agem", ctx(n_tasks=3, memory=90), {"lr": 0.01, "sample_size": 50})
    for t in range(3):
        for i in range(30):
            learner.memory.add(torch.full((1, 784), 100.0 * t + i), torch.tensor([i % 10]), t)
    torch.manual_seed(0)
    x, y = learner.reference_sample([0, 1])
    ids = x[:, 0].tolist()
    assert len(ids) == 50 and len(set(ids)) == 50 and all(v < 200 for v in ids)
    x, _ = learner.reference_sample([0])                      # fewer than sample_size available: all of them
    assert sorted(x[:, 0].tolist()) == [float(i) for i in range(30)]


def test_agem_step_matches_closed_form(make_stream):
    stream = make_stream("permutations", n_tasks=2)
    learner = registry.build("agem", ctx(n_tasks=2, memory=2 * 30), {"lr": 0.1, "sample_size": 30})
    x0, y0 = real_task(stream, 0, 30, seed=1)
    for i in range(30):
        learner.observe(x0[i:i + 1], 0, y0[i:i + 1])
    x1, y1 = real_task(stream, 1, 100, seed=2)
    for i in range(100):
        x, y = x1[i:i + 1], y1[i:i + 1]
        g_ref = loop_grads(learner.net, [learner.memory.x[0]], [learner.memory.y[0]])[0]  # whole row = sample
        learner.net.zero_grad()
        F.cross_entropy(learner.net(x), y).backward()
        g = flat_grad(learner.net.parameters()).clone()
        before = torch.cat([p.detach().reshape(-1) for p in learner.net.parameters()]).clone()
        n_proj = learner.projections
        learner.observe(x, 1, y)
        step = (before - torch.cat([p.detach().reshape(-1) for p in learner.net.parameters()])) / 0.1
        dot = float(g @ g_ref)
        expected = g - dot / float(g_ref @ g_ref) * g_ref if dot < 0 else g
        torch.testing.assert_close(step, expected, rtol=1e-3, atol=1e-5)
        assert learner.projections == n_proj + (dot < 0)
        if dot < 0:
            assert abs(float(step @ g_ref)) < 1e-3 * float(g.norm() * g_ref.norm())
    assert 0 < learner.projections < 100


# ---- real MNIST through the registry and the protocol loop ----------------------------------------------

@pytest.mark.parametrize("method,hparams", [("gem", {"lr": 0.05, "memory_strength": 0.5}),
                                            ("agem", {"lr": 0.05, "sample_size": 32})])
def test_real_mnist_smoke_records_projections(make_stream, method, hparams):
    stream = make_stream("rotations", n_tasks=3)
    protocol.seed_everything(0)
    schedule = protocol.make_schedule(3, len(stream.train_labels), 60)
    c = Context(784, 10, 3, 2, 100, memory=60, batch_size=1, samples_per_task=60, device=torch.device("cpu"))
    learner = registry.build(method, c, hparams)
    spec = {"test_examples_per_task": 300, "compat": {"eval_drop_last_test_example": False},
            "batch_size": 1, "log_every": 1000}
    log, timing = protocol.run(learner, stream, schedule, spec, torch.device("cpu"), progress=None)
    info = learner.info()
    assert info["steps"] == 180 and info["constraint_checks"] == 120
    assert info["memory_filled_per_task"] == [20, 20, 20]
    assert 0 < info["projections"] <= 120
    if method == "gem":
        assert info["qp_calls"] == info["projections"] and info["max_gram_condition"] > 1
    assert len(log.task) == 4 and all(np.isfinite(a).all() for a in log.acc)
    assert np.mean(log.acc[-1]) > 0.2                      # it learned something (chance is 0.1)


def test_task_end_fill_takes_each_class_equally_at_random_from_the_task():
    """A-GEM's memory: n // classes examples of every class, drawn from the task's data, row complete."""
    torch.manual_seed(0)
    y = torch.arange(10).repeat_interleave(30)           # 300 examples, 30 per class
    x = torch.arange(300, dtype=torch.float32)[:, None].repeat(1, 4)   # row i identifies example i
    mem = TaskRingMemory(n_tasks=2, n=50, n_inputs=4, device=torch.device("cpu"))
    mem.fill_task(x, y, 1, n_classes=10)
    assert mem.filled() == [0, 50]
    stored = mem.x[1, :, 0].long()
    assert torch.equal(y[stored], mem.y[1])                # labels travel with their examples
    assert torch.bincount(mem.y[1], minlength=10).tolist() == [5] * 10
    assert stored.unique().numel() == 50                    # without replacement
    assert stored.tolist() != sorted(stored.tolist())       # drawn at random, not the first of each class
    short = TaskRingMemory(n_tasks=1, n=12, n_inputs=4, device=torch.device("cpu"))
    short.fill_task(x[:25], y[:25], 0, n_classes=10)        # classes 0 (20 ex.) and 1 (5 ex.) only
    assert short.filled() == [12] and short.x[0, :, 0].long().unique().numel() == 12
