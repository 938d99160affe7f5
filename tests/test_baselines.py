"""Baselines against the reference's definitions: independent widths and FWT, task-input sizes, EWC's penalty
and A-GEM's running Fisher, and the protocols' initialisations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from methods import registry
from methods.base import Context
from methods.config import PROTOCOL_SCHEMA, ROOT, ClreproError, load_yaml, validate


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


def mnist_batches(make_stream, n=300):
    stream = make_stream("permutations", n_tasks=2)
    x = torch.from_numpy(stream.task_images("train", 1, np.arange(n))).float() / 255
    return x, torch.from_numpy(stream.train_labels[:n]).long()


def test_ce_grads_is_bitwise_what_backward_leaves_in_grad(make_stream):
    """model.ce_grads replaces autograd in every SGD-family step, on the claim that it runs the kernels autograd
    runs: real MNIST, the widths the methods use (100; 256 of A-GEM's protocol; Independent's 5), depths 1-3,
    batch sizes 1 (MER protocol), 10 (GEM's), 21 (ER's replay batch), mean and item-weighted (Alg. 5) losses."""
    from methods.model import ce_grads, mlp, mlp_layers

    x, y = mnist_batches(make_stream)
    torch.manual_seed(0)
    checked = 0
    for sizes in ([784, 100, 100, 10], [784, 256, 256, 10], [784, 5, 5, 10], [784, 10], [784, 50, 40, 30, 10]):
        net = mlp(sizes)
        for bs in (1, 10, 21):
            for start in (0, 100, 250):
                xb, yb = x[start:start + bs], y[start:start + bs]
                w = torch.rand(bs) + 0.5
                for weights in (None, w):
                    ce = F.cross_entropy(net(xb), yb, reduction="mean" if weights is None else "none")
                    want = torch.autograd.grad(ce if weights is None else (ce * weights).sum(), list(net.parameters()))
                    got = ce_grads(mlp_layers(net), xb, yb, weights)
                    assert [g.shape for g in got] == [g.shape for g in want]
                    assert all(torch.equal(a, b) for a, b in zip(got, want)), (sizes, bs, start, weights is None)
                    checked += 1
    assert checked == 5 * 3 * 3 * 2


def test_baseline_steps_are_bitwise_autograd_and_torch_sgd(make_stream):
    """Online, Independent (per-task nets, fine-tuned at a switch) and TaskInput (task-t input layer) step on
    real MNIST over a task switch exactly as zero_grad, cross_entropy(...).backward(), SGD.step would."""
    x, y = mnist_batches(make_stream)
    for method, bs in (("online", 1), ("online", 10), ("independent", 1), ("taskinput", 10)):
        torch.manual_seed(5)
        fast = registry.build(method, ctx(n_tasks=2), {"lr": 0.05})
        slow = registry.build(method, ctx(n_tasks=2), {"lr": 0.05})
        slow.load_state_dict(fast.state_dict())
        opt = torch.optim.SGD(slow.parameters(), lr=0.05)
        moved = [p.detach().clone() for p in fast.parameters()]
        for i in range(0, 200, bs):
            t = int(i >= 100)
            fast.observe(x[i:i + bs], t, y[i:i + bs])
            if method == "independent" and i == 100:
                slow.nets[1].load_state_dict(slow.nets[0].state_dict())
            opt.zero_grad()
            F.cross_entropy(slow(x[i:i + bs], t), y[i:i + bs]).backward()
            opt.step()
        for a, b in zip(fast.parameters(), slow.parameters()):
            assert torch.equal(a, b), method
        assert sum(not torch.equal(a, b) for a, b in zip(fast.parameters(), moved)) >= 4, method


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
        opt = torch.optim.SGD(slow.net.parameters(), lr=0.03)
        for i in range(0, 100, 10):          # task 0: fills the Fisher memory
            fast.observe(x[i:i + 10], 0, y[i:i + 10])
            slow.observe(x[i:i + 10], 0, y[i:i + 10])
        fast.observe(x[100:110], 1, y[100:110])  # task switch: consolidation, then penalised steps
        slow.observe(x[100:110], 1, y[100:110])
        for i in range(110, 300, 10):
            fast.observe(x[i:i + 10], 1, y[i:i + 10])
            opt.zero_grad()                      # the autograd formulation, step by step
            (F.cross_entropy(slow.net(x[i:i + 10]), y[i:i + 10]) + slow.penalty()).backward()
            opt.step()
        for a, b in zip(fast.parameters(), slow.parameters()):
            assert torch.equal(a, b)


def test_ewc_rng_reference_takes_the_reference_step_bit_for_bit(make_stream):
    """Under compat.rng: reference, EWC steps as GEM/MER `ewc.py` computes it (Fisher at the task switch
    from the first n_memories examples, then CE plus reg * F * (p - theta*)^2 added per past task and
    parameter, one backward, optim.SGD): on real MNIST, 3 permuted tasks of 60 single examples, the
    parameters equal that code written out here, bitwise. The default running sums are the same math in
    another rounding (the reason for the switch: that rounding left the reference's log on whole streams)."""
    stream = make_stream("permutations", n_tasks=3)
    idx = np.arange(60)
    xs = [torch.from_numpy(stream.task_images("train", t, idx)).float() / 255 for t in range(3)]
    y = torch.from_numpy(stream.train_labels[idx])
    hp = {"lr": 0.01, "n_memories": 10, "memory_strength": 10.0}
    torch.manual_seed(0)
    ref_mode = registry.build("ewc", ctx(n_tasks=3), {**hp, "rng": "reference"})
    fast = registry.build("ewc", ctx(n_tasks=3), hp)
    fast.load_state_dict(ref_mode.state_dict())
    net = registry.build("online", ctx(n_tasks=3), {"lr": 0.01}).net
    net.load_state_dict(ref_mode.net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    fisher, optpar, memx, memy = {}, {}, None, None
    for t in range(3):
        for i in range(60):
            x, yi = xs[t][i:i + 1], y[i:i + 1]
            ref_mode.observe(x, t, yi)
            fast.observe(x, t, yi)
            if t != len(fisher):                     # ewc.py's observe, written out
                net.zero_grad()
                F.cross_entropy(net(memx), memy).backward()
                fisher[t - 1] = [p.grad.data.clone().pow(2) for p in net.parameters()]
                optpar[t - 1] = [p.data.clone() for p in net.parameters()]
                memx = memy = None
            if memx is None:
                memx, memy = x.clone(), yi.clone()
            elif memx.size(0) < 10:
                memx, memy = torch.cat((memx, x)), torch.cat((memy, yi))
            net.zero_grad()
            loss = F.cross_entropy(net(x), yi)
            for tt in range(t):
                for k, p in enumerate(net.parameters()):
                    term = 10.0 * fisher[tt][k]
                    term = term * (p - optpar[tt][k]).pow(2)
                    loss += term.sum()
            loss.backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ref_mode.net.parameters(), net.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(fast.net.parameters(), net.parameters()))
    assert max((a - b).abs().max().item() for a, b in zip(fast.net.parameters(), net.parameters())) < 1e-4


def test_protocol_init_truncated_normal_is_agem_tf_initialisation():
    """model.init truncated_normal (A-GEM's TF1 weight_variable/bias_variable): every weight of every learner
    built from the context inside two std, with the truncated normal's spread (std 0.1 -> 0.0880), biases 0.1;
    absent, the GEM Glorot-uniform layers with zero biases."""
    torch.manual_seed(0)
    init = {"name": "truncated_normal", "std": 0.1, "bias": 0.1}
    hparams = {"online": {}, "gem": {"memory_strength": 0.5}, "agem": {}, "independent": {}, "taskinput": {},
               "ewc": {"memory_strength": 10, "n_memories": 10}}
    for method, hp in hparams.items():
        learner = registry.build(method, ctx(n_hiddens=256, memory=40, init=init), {"lr": 0.1, **hp})
        layers = [m for m in learner.modules() if isinstance(m, torch.nn.Linear)]
        w = torch.cat([m.weight.reshape(-1) for m in layers])
        assert w.abs().max() <= 0.2 and abs(w.std().item() - 0.0880) < 0.002, method
        assert all(torch.equal(m.bias, torch.full_like(m.bias, 0.1)) for m in layers), method
    first = registry.build("online", ctx(n_hiddens=256), {"lr": 0.1}).net[0]
    bound = (6 / (784 + 256)) ** 0.5
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.95 * bound
    assert not first.bias.any()


def test_protocol_init_errors_are_one_line_at_parse_time():
    base = load_yaml(ROOT / "config" / "protocols" / "agem2019.yaml")
    for init, needle in [({"name": "he_normal"}, "model/init/name"),
                         ({"name": "xavier_uniform", "std": 0.1}, "model/init"),
                         ({"name": "truncated_normal", "std": -1}, "model/init/std")]:
        with pytest.raises(ClreproError, match=needle) as exc:
            validate({**base, "model": {**base["model"], "init": init}}, PROTOCOL_SCHEMA, "agem2019")
        assert "\n" not in str(exc.value)


def test_ewc_running_fisher_follows_agem_tf_equations(make_stream):
    """fisher: running against A-GEM's TF1 EWC written out with autograd on real MNIST (3 permuted tasks,
    batch 10, update_after 4 so windows straddle the tasks' 13 steps): per step, every 4th step folds the
    window into running = 0.1 running + 0.9/4 window and empties it, then adds the squared CE gradient; at a
    task's end F = running, min-max normalised over all parameters, replaces the single anchor (w*, F); the
    step's gradient is CE + 10 * sum F (w - w*)^2. Parameters agree to float rounding after 39 steps."""
    stream = make_stream("permutations", n_tasks=3)
    n, d, lam, lr, bs = 4, 0.9, 10.0, 0.03, 10
    hp = {"lr": lr, "memory_strength": lam, "fisher": "running", "fisher_update_after": n, "fisher_ema_decay": d}
    torch.manual_seed(5)
    learner = registry.build("ewc", ctx(n_tasks=3, n_hiddens=64, init={"name": "truncated_normal", "std": 0.1,
                                                                       "bias": 0.1}), hp)
    w = [p.detach().clone().requires_grad_(True) for p in learner.net.parameters()]
    net = lambda x: torch.relu(torch.relu(x @ w[0].T + w[1]) @ w[2].T + w[3]) @ w[4].T + w[5]  # noqa: E731
    tmp, running = [torch.zeros_like(p) for p in w], [torch.zeros_like(p) for p in w]
    star = fisher = None
    for t in range(3):
        x = torch.from_numpy(stream.task_images("train", t, np.arange(130))).float() / 255
        y = torch.from_numpy(stream.train_labels[:130])
        if t > 0:  # task_updates: get_fisher_at_minima, normalize, reset tmp; weights_store (star = w)
            lo, hi = min(f.min() for f in running), max(f.max() for f in running)
            fisher = [(f - lo) / (hi - lo + 1e-32) for f in running]
            star = [p.detach().clone() for p in w]
            tmp = [torch.zeros_like(p) for p in w]
        for it in range(13):
            xb, yb = x[it * bs:(it + 1) * bs], y[it * bs:(it + 1) * bs]
            learner.observe(xb, t, yb)
            ce = F.cross_entropy(net(xb), yb)
            ders = torch.autograd.grad(ce, w, retain_graph=True)
            if (it + 1) % n == 0:
                running = [(1 - d) * r + (1.0 / n) * d * m for r, m in zip(running, tmp)]
                tmp = [torch.zeros_like(p) for p in w]
            tmp = [m + g.pow(2) for m, g in zip(tmp, ders)]
            reg = sum((f * (p - s).pow(2)).sum() for p, s, f in zip(w, star, fisher)) if star else 0.0
            grads = torch.autograd.grad(ce + lam * reg, w)
            with torch.no_grad():
                for p, g in zip(w, grads):
                    p -= lr * g
        if t == 1:
            assert min(f.min() for f in learner.fisher_sum) == 0 and max(f.max() for f in learner.fisher_sum) == 1
            for a, f in zip(learner.fisher_sum, fisher):
                torch.testing.assert_close(a, f)
    moved = sum((a.detach() - b).abs().max().item() for a, b in zip(learner.net.parameters(), star))
    assert moved > 1e-3  # the steps did move the weights, so the comparison below compares something
    for a, b in zip(learner.net.parameters(), w):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_ewc_fisher_choice_errors_are_one_line():
    for hp, needle in [({"fisher": "diag"}, "fisher must be one of"),
                       ({"fisher": "task_batch"}, "needs n_memories"),
                       ({"fisher": "running", "fisher_ema_decay": 0.0}, "fisher_ema_decay")]:
        with pytest.raises(ClreproError, match=needle) as exc:
            registry.build("ewc", ctx(n_tasks=2), {"lr": 0.1, "memory_strength": 1.0, **hp})
        assert "\n" not in str(exc.value)
