"""DGR: the VAE generator on real MNIST, frozen snapshots, hard replay labels, any batch size."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_prep.errors import ClreproError
from methods import registry
from methods.base import Context
from methods.dgr import FlatAdam, VAE


def real_inputs(stream, task: int, n: int, seed: int = 0):
    idx = np.random.default_rng(seed).choice(len(stream.train_labels), n, replace=False)
    x = torch.from_numpy(stream.task_images("train", task, idx)).float() / 255.0
    return x, torch.from_numpy(stream.train_labels[idx]).long()


def ctx(batch_size: int = 1) -> Context:
    return Context(n_inputs=784, n_outputs=10, n_tasks=3, n_layers=2, n_hiddens=100, memory=0,
                   batch_size=batch_size, samples_per_task=100, device=torch.device("cpu"))


def test_vae_samples_have_input_shape_and_range():
    torch.manual_seed(0)
    vae = VAE(784, hidden=64, latent=8)
    x = vae.sample(17)
    assert x.shape == (17, 784)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_vae_reconstruction_loss_falls_on_real_mnist(make_stream):
    """300 Adam steps, batch 32, on real MNIST: the mean BCE of the last 30 steps is well below the first 30."""
    torch.manual_seed(0)
    x, _ = real_inputs(make_stream("permutations", n_tasks=1), 0, 2000, seed=0)
    vae = VAE(784, hidden=128, latent=16)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    rec_losses = []
    for step in range(300):
        batch = x[torch.randint(len(x), (32,))]
        opt.zero_grad()
        loss, rec = vae.loss(batch)
        loss.backward()
        opt.step()
        rec_losses.append(rec.item())
    first, last = np.mean(rec_losses[:30]), np.mean(rec_losses[-30:])
    assert last < 0.6 * first, (first, last)
    assert 0 < last < 784 * np.log(2)        # better than predicting 0.5 for every pixel


def test_snapshots_are_frozen_copies(make_stream):
    torch.manual_seed(0)
    stream = make_stream("rotations", n_tasks=2)
    learner = registry.build("dgr", ctx(), {"lr": 0.05, "replay_batch_size": 8, "vae_hidden": 64,
                                            "latent_dim": 8})
    x0, y0 = real_inputs(stream, 0, 20, seed=1)
    x1, y1 = real_inputs(stream, 1, 20, seed=2)
    for i in range(20):
        learner.observe(x0[i:i + 1], 0, y0[i:i + 1])
    assert learner.prev_solver is None and learner.prev_generator is None
    learner.observe(x1[:1], 1, y1[:1])                       # task switch -> snapshot, then one step
    snap_solver = [p.clone() for p in learner.prev_solver.parameters()]
    snap_gen = [p.clone() for p in learner.prev_generator.parameters()]
    live_before = [p.detach().clone() for p in learner.net.parameters()]
    for i in range(1, 20):
        learner.observe(x1[i:i + 1], 1, y1[i:i + 1])
    assert any(not torch.equal(a, b.detach()) for a, b in zip(live_before, learner.net.parameters()))
    for a, b in zip(snap_solver, learner.prev_solver.parameters()):
        assert torch.equal(a, b) and not b.requires_grad
    for a, b in zip(snap_gen, learner.prev_generator.parameters()):
        assert torch.equal(a, b) and not b.requires_grad
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(learner.net.parameters(), learner.prev_solver.parameters()))
    # replay is scored against the frozen solver: its hard argmax by default
    torch.manual_seed(3)
    xr, old_logits = learner.replay()
    assert xr.shape == (8, 784) and torch.equal(old_logits, learner.prev_solver(xr))
    logits = learner.net(xr)
    torch.testing.assert_close(learner.replay_loss(logits, old_logits),
                               F.cross_entropy(logits, old_logits.argmax(1)))


def test_soft_replay_targets_are_temperature_distillation():
    """DGR+distill: T^2 * CE(softmax(old/T), log_softmax(new/T)), smallest where new logits equal old."""
    learner = registry.build("dgr", ctx(1), {"lr": 0.1, "replay_targets": "soft", "distill_temperature": 2.0})
    old = torch.tensor([[2.0, 0.0, -1.0] + [0.0] * 7])
    new = torch.tensor([[0.5, 0.5, 0.0] + [0.0] * 7])
    p = torch.softmax(old / 2, 1)
    expected = -(p * torch.log_softmax(new / 2, 1)).sum() * 4
    torch.testing.assert_close(learner.replay_loss(new, old), expected)
    # the loss is smallest when the live logits match the old ones (KL = 0); sharper (more one-hot) is worse
    shifted = old + torch.randn(1, 10, generator=torch.Generator().manual_seed(0)) * 0.5
    assert learner.replay_loss(old, old) < learner.replay_loss(shifted, old)
    assert learner.replay_loss(old, old) < learner.replay_loss(old * 3, old)
    with pytest.raises(ClreproError, match="replay_targets"):
        registry.build("dgr", ctx(1), {"lr": 0.1, "replay_targets": "argmax"})


@pytest.mark.parametrize("batch_size", [1, 10])
def test_any_batch_size_and_replay_ratio(make_stream, batch_size):
    torch.manual_seed(0)
    stream = make_stream("rotations", n_tasks=3)
    learner = registry.build("dgr", ctx(batch_size), {"lr": 0.05, "replay_batch_size": 4, "vae_hidden": 32,
                                                      "latent_dim": 4, "replay_ratio": None,
                                                      "generator_steps_per_batch": 2})
    for t in range(3):
        x, y = real_inputs(stream, t, 3 * batch_size, seed=t)
        for b in range(0, len(y), batch_size):
            learner.observe(x[b:b + batch_size], t, y[b:b + batch_size])
        assert learner.ratio() == pytest.approx(1.0 / (t + 1))
    info = learner.info()
    assert info["samples_stored"] == 0 and info["tasks_seen"] == 3
    assert info["generator_params"] == sum(p.numel() for p in learner.generator.parameters())
    assert len(learner.gen_losses) == 3 * 3


def test_generator_flat_adam_is_bitwise_the_per_tensor_loop(make_stream):
    """The generator's Adam runs over one flat buffer (FlatAdam); 30 real DGR steps over a task switch give the
    very same generator and solver as torch's default Adam: per-tensor loop, gradients set to None and
    allocated afresh by each backward."""
    stream = make_stream("rotations", n_tasks=2)
    runs = []
    for flat in (True, False):
        torch.manual_seed(0)
        learner = registry.build("dgr", ctx(), {"lr": 0.01, "generator_steps_per_batch": 2})
        params = list(learner.generator.parameters())
        assert isinstance(learner.gen_opt, FlatAdam)
        assert learner.gen_opt.param.numel() == sum(p.numel() for p in params)
        # every layer is a view of the one buffer the optimiser updates
        assert all(p.untyped_storage().data_ptr() == learner.gen_opt.param.untyped_storage().data_ptr()
                   for p in params)
        if not flat:
            learner.gen_opt = torch.optim.Adam(params, lr=learner.hp.vae_lr, foreach=False)
        start = torch.cat([p.detach().reshape(-1) for p in params])
        for t in range(2):
            x, y = real_inputs(stream, t, 15, seed=t)
            for i in range(15):
                learner.observe(x[i:i + 1], t, y[i:i + 1])
        generator = torch.cat([p.detach().reshape(-1) for p in learner.generator.parameters()])
        assert not torch.equal(generator, start)   # the module's layers did move
        runs.append(torch.cat([generator] + [p.detach().reshape(-1) for p in learner.net.parameters()]))
    assert torch.equal(runs[0], runs[1])
