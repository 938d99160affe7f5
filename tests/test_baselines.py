"""Baselines against the reference's definitions: independent widths and FWT, task-input sizes, EWC's penalty."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from methods import registry
from methods.base import Context


def ctx(n_tasks=20, **kw):
    base = dict(n_inputs=784, n_outputs=10, n_tasks=n_tasks, n_layers=2, n_hiddens=100, memory=0, batch_size=1,
                samples_per_task=10, device=torch.device("cpu"))
    return Context(**{**base, **kw})


def test_independent_widths_follow_the_reference():
    assert registry.build("independent", ctx(20), {"lr": 0.1}).nets[0][0].out_features == 5
    assert registry.build("independent", ctx(100), {"lr": 0.1}).nets[0][0].out_features == 1


def test_taskinput_parameter_count_matches_gem_multimodal():
    learner = registry.build("taskinput", ctx(20), {"lr": 0.1})
    assert sum(p.numel() for p in learner.parameters()) == 1_581_110  # reference-gem-mer.md 5.1


def test_online_step_is_plain_sgd():
    torch.manual_seed(0)
    learner = registry.build("online", ctx(), {"lr": 0.5})
    x, y = torch.rand(4, 784), torch.tensor([1, 2, 3, 4])
    before = [p.detach().clone() for p in learner.net.parameters()]
    loss = F.cross_entropy(learner.net(x), y)
    grads = torch.autograd.grad(loss, list(learner.net.parameters()))
    learner.observe(x, 0, y)
    for p, p0, g in zip(learner.net.parameters(), before, grads):
        torch.testing.assert_close(p, p0 - 0.5 * g)


def test_ewc_running_sums_give_the_reference_gradient():
    """Synthetic tensors (math only): grad of A t^2 - 2 B t equals grad of sum_k lambda F_k (t - t*_k)^2."""
    torch.manual_seed(1)
    learner = registry.build("ewc", ctx(n_tasks=4), {"lr": 0.1, "n_memories": 5, "memory_strength": 3.0})
    params = [p.detach().clone().requires_grad_(True) for p in learner.net.parameters()]
    fishers = [[torch.rand_like(p) for p in params] for _ in range(3)]
    anchors = [[torch.randn_like(p) for p in params] for _ in range(3)]
    learner.fisher_sum = [sum(f[i] for f in fishers) for i in range(len(params))]
    learner.anchor_sum = [sum(f[i] * a[i] for f, a in zip(fishers, anchors)) for i in range(len(params))]
    learner.net.zero_grad()
    learner.penalty().backward()
    reference = sum(3.0 * (f[i] * (params[i] - a[i]).pow(2)).sum() for f, a in zip(fishers, anchors)
                    for i in range(len(params)))
    for p, g in zip(learner.net.parameters(), torch.autograd.grad(reference, params)):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)


def test_ewc_fisher_is_the_squared_batch_mean_gradient():
    torch.manual_seed(2)
    learner = registry.build("ewc", ctx(n_tasks=2), {"lr": 0.0, "n_memories": 3, "memory_strength": 1.0})
    xs, ys = torch.rand(4, 784), torch.tensor([0, 1, 2, 3])
    for i in range(4):
        learner.observe(xs[i:i + 1], 0, ys[i:i + 1])
    assert learner.mem_x.shape[0] == 3  # the FIRST n_memories examples of the task
    loss = F.cross_entropy(learner.net(xs[:3]), ys[:3])
    grads = torch.autograd.grad(loss, list(learner.net.parameters()))
    learner.observe(torch.rand(1, 784), 1, torch.tensor([5]))  # task switch -> consolidation
    for a, g in zip(learner.fisher_sum, grads):
        torch.testing.assert_close(a, g.pow(2))


def test_independent_finetune_gives_zero_forward_transfer(run_train):
    rec, _ = run_train("independent", n_tasks=3, samples=30, hparams={"lr": 0.05})
    R, b = np.array(rec["R"]), np.array(rec["b"])
    for t in range(1, 3):
        assert R[t - 1, t] == b[t]  # net t is untouched until its first batch
    assert rec["metrics"]["FWT"]["paper"] == 0.0


def test_ewc_graph_free_penalty_step_is_bitwise_the_autograd_step(make_stream):
    """EWC adds its penalty's gradient without autograd (faster); on real MNIST batches, 2 tasks, 30 steps,
    the parameters stay bitwise equal to the steps `loss = CE + penalty(); loss.backward()` would take."""
    stream = make_stream("permutations", n_tasks=2)
    x = torch.from_numpy(stream.task_images("train", 1, np.arange(300))).float() / 255
    y = torch.from_numpy(stream.train_labels[:300])
    for width in (100, 256):
        torch.manual_seed(3)
        fast = registry.build("ewc", ctx(n_tasks=2, n_hiddens=width), {"lr": 0.03, "n_memories": 50,
                                                                         "memory_strength": 10.0})
        slow = registry.build("ewc", ctx(n_tasks=2, n_hiddens=width), {"lr": 0.03, "n_memories": 50,
                                                                         "memory_strength": 10.0})
        slow.load_state_dict(fast.state_dict())
        for i in range(0, 100, 10):          # task 0: fills the Fisher memory
            fast.observe(x[i:i + 10], 0, y[i:i + 10])
            slow.observe(x[i:i + 10], 0, y[i:i + 10])
        fast.observe(x[100:110], 1, y[100:110])  # task switch: consolidation, then penalised steps
        slow.observe(x[100:110], 1, y[100:110])
        for i in range(110, 300, 10):
            fast.observe(x[i:i + 10], 1, y[i:i + 10])
            slow.opt.zero_grad()                 # the autograd formulation, step by step
            (F.cross_entropy(slow.net(x[i:i + 10]), y[i:i + 10]) + slow.penalty()).backward()
            slow.opt.step()
        for a, b in zip(fast.parameters(), slow.parameters()):
            assert torch.equal(a, b)
