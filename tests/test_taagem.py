"""TA-A-GEM: the clustering memory's invariants on a real MNIST stream, its assignment rules, and the A-GEM step."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_prep.errors import ClreproError
from methods import registry
from methods.base import Context
from methods.clustering_memory import ClusteringMemory
from methods.projection import agem_project
from methods.taagem import TALRScheduler


def real_inputs(stream, task: int, n: int, seed: int = 0):
    idx = np.random.default_rng(seed).choice(len(stream.train_labels), n, replace=False)
    x = torch.from_numpy(stream.task_images("train", task, idx)).float() / 255.0
    return x, torch.from_numpy(stream.train_labels[idx]).long()


def assert_means_exact(mem: ClusteringMemory):
    for p in range(mem.n_pools):
        for c in range(mem.n_clusters[p]):
            torch.testing.assert_close(mem.means[p, c], mem.members(p, c).mean(0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("opening", ["singleton", "below_q"])
def test_memory_bounds_classes_and_means_on_real_stream(make_stream, opening):
    """3 rotation tasks x 800 real images through a Q=4, P=3 memory: checked after every insertion."""
    stream = make_stream("rotations", n_tasks=3)
    mem = ClusteringMemory(784, num_pools=10, clusters_per_pool=4, samples_per_cluster=3, opening=opening)
    seen = set()
    for t in range(3):
        x, y = real_inputs(stream, t, 800, seed=t)
        for i in range(len(y)):
            mem.add(x[i], int(y[i]))
            seen.add(int(y[i]))
            sizes = mem.pool_sizes()
            assert max(sizes) <= 4 * 3
            assert all(n <= 3 for row in mem.size for n in row)
            assert all(k <= 4 for k in mem.n_clusters)
            assert all(sizes[mem.pool_of[label]] > 0 for label in seen)
            if i % 100 == 0:
                assert_means_exact(mem)
    assert len(mem) == sum(mem.pool_sizes()) <= mem.bound == 120
    assert mem.n_clusters == [4] * 10       # ~240 samples per class open every pool's Q clusters
    assert mem.evicted > 0
    assert_means_exact(mem)
    # stored labels are the pool's class
    xs, ys = mem.sample(len(mem))
    assert len(xs) == len(mem) and sorted(set(ys.tolist())) == sorted(seen)


def test_fifo_evicts_the_oldest():
    """Tiny synthetic 2-d data (the rule is about order, not images)."""
    mem = ClusteringMemory(2, num_pools=1, clusters_per_pool=1, samples_per_cluster=3)
    pts = [torch.tensor([float(i), 0.0]) for i in range(5)]
    for z in pts:
        mem.add(z, 7)
    assert mem.members(0, 0)[:, 0].tolist() == [2.0, 3.0, 4.0]
    assert mem.evicted == 2
    torch.testing.assert_close(mem.means[0, 0], torch.tensor([3.0, 0.0]))


def test_furthest_eviction_keeps_the_newcomer():
    mem = ClusteringMemory(1, num_pools=1, clusters_per_pool=1, samples_per_cluster=3, eviction="furthest")
    for v in [0.0, 1.0, 50.0, 2.0]:
        mem.add(torch.tensor([v]), 0)
    assert sorted(mem.members(0, 0)[:, 0].tolist()) == [0.0, 1.0, 2.0]


def test_singleton_rule_moves_the_old_singleton_and_keeps_far_sample():
    """Synthetic 2-d points chosen so each branch of the singleton rule fires."""
    mem = ClusteringMemory(2, num_pools=1, clusters_per_pool=3, samples_per_cluster=3)
    mem.add(torch.tensor([0.0, 0.0]), 0)       # A = {(0,0)}
    mem.add(torch.tensor([1.0, 0.0]), 0)       # one cluster, Q > 1 -> B = {(1,0)}
    mem.add(torch.tensor([100.0, 0.0]), 0)     # nearest B singleton; d(z,B)=99 > d(s,A)=1 -> s joins A
    assert mem.n_clusters[0] == 2
    assert sorted(mem.members(0, 0)[:, 0].tolist()) == [0.0, 1.0]
    assert mem.members(0, 1)[:, 0].tolist() == [100.0]
    mem.add(torch.tensor([100.0, 1.0]), 0)     # nearest singleton {(100,0)}, d=1 < d(s, A)=99.5 -> new
    assert mem.n_clusters[0] == 3
    mem.add(torch.tensor([0.5, 0.5]), 0)       # nearest A has 2 members -> joins A
    assert mem.size[0][:3] == [3, 1, 1]
    assert_means_exact(mem)


def test_reference_sample_is_pool_balanced_without_replacement():
    """Synthetic 1-d values: pool 0 holds 30 samples, pool 1 only 3; draws split about evenly between pools."""
    mem = ClusteringMemory(1, num_pools=2, clusters_per_pool=10, samples_per_cluster=3)
    for v in range(200):
        mem.add(torch.tensor([float(v)]), 0)
    for v in range(3):
        mem.add(torch.tensor([1000.0 + v]), 1)
    assert mem.pool_sizes()[1] == 3
    torch.manual_seed(0)
    from_pool1 = 0
    for _ in range(400):
        x, y = mem.sample(4)
        assert len(set(x[:, 0].tolist())) == 4                       # no repeats within a draw
        assert torch.equal(y, torch.where(x[:, 0] >= 1000, 1, 0))    # labels follow the pool
        from_pool1 += int((y == 1).sum())
    assert 0.35 < from_pool1 / 1600 < 0.65


def test_memory_refuses_zero_clusters():
    with pytest.raises(ClreproError, match="clusters_per_pool"):
        ClusteringMemory(784, num_pools=10, clusters_per_pool=0, samples_per_cluster=3)


def ctx(memory: int) -> Context:
    return Context(n_inputs=784, n_outputs=10, n_tasks=2, n_layers=2, n_hiddens=100, memory=memory,
                   batch_size=1, samples_per_task=100, device=torch.device("cpu"))


def test_q_from_budget_and_info():
    learner = registry.build("taagem", ctx(500), {"lr": 0.01})
    info = learner.info()
    assert (info["Q_clusters_per_pool"], info["P_samples_per_cluster"], info["num_pools"]) == (16, 3, 10)
    assert info["samples_bound"] == 480 <= 500
    explicit = registry.build("taagem", ctx(500), {"lr": 0.01, "clusters_per_pool": 2}).info()
    assert explicit["samples_bound"] == 60


def test_agem_step_never_opposes_the_reference_gradient(make_stream):
    """Real MNIST: fill the memory on task 0, then on task 1 the applied update g~ has <g~, g_ref> >= 0,
    equals agem_project(g, g_ref) computed independently, and some steps really are projected."""
    torch.manual_seed(0)
    stream = make_stream("rotations", n_tasks=2)
    lr = 0.05
    learner = registry.build("taagem", ctx(500), {"lr": lr, "sample_size": 32})
    x0, y0 = real_inputs(stream, 0, 300, seed=1)
    for i in range(300):
        learner.observe(x0[i:i + 1], 0, y0[i:i + 1])
    x1, y1 = real_inputs(stream, 1, 60, seed=2)
    params = list(learner.net.parameters())
    projected = 0
    for i in range(60):
        torch.manual_seed(100 + i)
        xr, yr = learner.memory.sample(32)
        g_ref = grad_of(learner, xr, yr)
        g = grad_of(learner, x1[i:i + 1], y1[i:i + 1])
        expected, was_projected = agem_project(g, g_ref)
        before = torch.cat([p.detach().reshape(-1).clone() for p in params])
        torch.manual_seed(100 + i)
        learner.observe(x1[i:i + 1], 1, y1[i:i + 1])
        after = torch.cat([p.detach().reshape(-1) for p in params])
        g_tilde = (before - after) / lr
        assert torch.dot(g_tilde, g_ref) >= -1e-4 * g_ref.norm() * g_tilde.norm()
        torch.testing.assert_close(g_tilde, expected, rtol=1e-3, atol=1e-4)
        projected += was_projected
    assert projected > 0
    assert learner.info()["projections"] >= projected


def grad_of(learner, x, y) -> torch.Tensor:
    learner.net.zero_grad()
    torch.nn.functional.cross_entropy(learner.net(x), y).backward()
    return torch.cat([p.grad.reshape(-1).clone() for p in learner.net.parameters()])


def test_ta_scheduler_decays_floors_and_resets():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = TALRScheduler(opt, patience=5, decay=0.5, min_lr=0.01, jump=1.0)
    sched.step(1.0)
    for _ in range(5):
        sched.step(1.0)                      # stale for 5 steps: not yet > patience
    assert sched.lr == 0.1
    sched.step(1.0)                          # 6th stale step -> decay
    assert sched.lr == 0.05
    for _ in range(20):
        sched.step(1.0)
    assert sched.lr == 0.01                  # floor
    for _ in range(6):
        sched.step(3.0)                      # > best + 1 for more than 5 steps -> reset to lr0
    assert sched.lr == 0.1 and sched.best == 3.0 and sched.resets == 1


def test_below_q_opening_fills_every_pool_to_q_clusters():
    """Tiny synthetic 1-d data: with "below_q" each of a class's first Q samples opens a cluster (the
    reimplementation's first version); with "singleton" close samples end up sharing one and evicting."""
    pts = [0.0, 0.1, 5.0, 0.05, 0.02]
    filled = ClusteringMemory(1, num_pools=1, clusters_per_pool=4, samples_per_cluster=3, opening="below_q")
    lazy = ClusteringMemory(1, num_pools=1, clusters_per_pool=4, samples_per_cluster=3)
    for v in pts:
        filled.add(torch.tensor([v]), 0)
        lazy.add(torch.tensor([v]), 0)
    # singleton: 5.0 is far from {0.1}, so 0.1 moves into {0.0}; 0.05 and 0.02 then join that cluster,
    # which overflows P=3 and evicts 0.0
    assert lazy.n_clusters == [2] and len(lazy) == 4 and lazy.evicted == 1
    assert sorted(lazy.members(0, 0).flatten().tolist()) == pytest.approx([0.02, 0.05, 0.1])
    # below_q: four singletons, then 0.02 joins its nearest, {0.0}; nothing is evicted
    assert filled.n_clusters == [4] and len(filled) == 5 and filled.evicted == 0
    assert sorted(filled.members(0, 0).flatten().tolist()) == pytest.approx([0.0, 0.02])
    assert_means_exact(filled)
    with pytest.raises(ClreproError, match="opening"):
        ClusteringMemory(1, num_pools=1, clusters_per_pool=4, samples_per_cluster=3, opening="eager")
