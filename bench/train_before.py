"""The SGD-family training steps as they were before `model.ce_grads` (commit e764263), kept verbatim as the
baseline bench/bench_train.py times the current steps against: each class is the current learner with its
old autograd + torch.optim.SGD step put back (`observe` and what only it used), nothing else changed."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods import baselines, gem, replay
from methods.model import assign_flat_grad, flat_grad


class Online(baselines.Online):
    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr)

    def observe(self, x, t, y):
        self.opt.zero_grad()
        F.cross_entropy(self.net(x), y).backward()
        self.opt.step()


class Independent(baselines.Independent):
    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.opts = [torch.optim.SGD(net.parameters(), lr=hp.lr) for net in self.nets]

    def observe(self, x, t, y):
        if self.hp.finetune and t > 0 and t != self.old_task:
            self.nets[t].load_state_dict(self.nets[self.old_task].state_dict())
        self.old_task = t
        self.opts[t].zero_grad()
        F.cross_entropy(self.nets[t](x), y).backward()
        self.opts[t].step()


class TaskInput(baselines.TaskInput):
    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.opt = torch.optim.SGD(self.parameters(), lr=hp.lr)

    def observe(self, x, t, y):
        self.opt.zero_grad()
        F.cross_entropy(self(x, t), y).backward()
        self.opt.step()


class EWC(baselines.EWC):
    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr)

    def _consolidate(self) -> None:
        self.opt.zero_grad()
        F.cross_entropy(self.net(self.mem_x), self.mem_y).backward()
        fisher = [p.grad.detach().pow(2) for p in self.net.parameters()]
        anchor = [f * p.detach() for f, p in zip(fisher, self.net.parameters())]
        if self.fisher_sum is None:
            self.fisher_sum, self.anchor_sum = fisher, anchor
        else:
            self.fisher_sum = [a + f for a, f in zip(self.fisher_sum, fisher)]
            self.anchor_sum = [b + fa for b, fa in zip(self.anchor_sum, anchor)]

    def observe(self, x, t, y):
        if t != self.current_task:
            self._consolidate()
            self.current_task = t
            self.mem_x = self.mem_y = None
        if self.mem_x is None:
            self.mem_x, self.mem_y = x.detach().clone(), y.detach().clone()
        elif self.mem_x.size(0) < self.hp.n_memories:
            self.mem_x = torch.cat([self.mem_x, x.detach()])[: self.hp.n_memories]
            self.mem_y = torch.cat([self.mem_y, y.detach()])[: self.hp.n_memories]
        self.opt.zero_grad()
        F.cross_entropy(self.net(x), y).backward()
        if self.fisher_sum is not None:
            with torch.no_grad():
                for p, a, b in zip(self.net.parameters(), self.fisher_sum, self.anchor_sum):
                    lam = torch.full_like(p, self.hp.memory_strength)
                    p.grad.add_(lam * (a * p - 2 * b) + (lam * p) * a)
        self.opt.step()


def task_balanced_loss(logits, y, tasks):
    ce = F.cross_entropy(logits, y, reduction="none")
    same_task = (tasks[:, None] == tasks[None, :]).sum(1)
    return (ce / same_task.to(ce.dtype)).sum()


class ERAlg4(replay.ERAlg4):
    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr)

    def batch_loss(self, logits, by, t, mem_t):  # noqa: ARG002
        return F.cross_entropy(logits, by)

    def observe(self, x, t, y):
        for i in range(x.shape[0]):
            self.opt.zero_grad()
            bx, by, mem_t, _ = self.replay_batch(x[i], y[i], current_first=False)
            self.batch_loss(self.net(bx), by, t, mem_t).backward()
            self.opt.step()
            self.memory.add(x[i], y[i], t)


class ERAlg5(ERAlg4):
    """The fast (default) path only: the bench runs rng "fast"."""

    def batch_loss(self, logits, by, t, mem_t):
        tasks = torch.cat([mem_t, torch.tensor([t], dtype=torch.long, device=mem_t.device)])
        return task_balanced_loss(logits, by, tasks)


class GEM(gem.GEM):
    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr)

    def observe(self, x, t, y):
        past = self.remember(x, t, y)
        G = self.past_task_grads(past) if past else None
        self.opt.zero_grad()
        F.cross_entropy(self.net(x), y).backward()
        if G is not None:
            self.checks += 1
            params = list(self.net.parameters())
            g = flat_grad(params)
            if self.hp.rng == "reference":
                G = G.t().contiguous()
                dotp = torch.mm(g.view(1, -1), G).view(-1)
                G = G.t()
            else:
                dotp = G @ g
            if bool((~(dotp >= 0)).any()):
                assign_flat_grad(params, self._project(g, G, t, past))
        self.opt.step()


class AGEM(gem.AGEM):
    def __init__(self, ctx, hp):
        super().__init__(ctx, hp)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=hp.lr)

    def observe(self, x, t, y):
        past = self.remember(x, t, y)
        params = list(self.net.parameters())
        g_ref = None
        if past:
            mx, my = self.reference_sample(past)
            self.opt.zero_grad()
            F.cross_entropy(self.net(mx), my).backward()
            g_ref = flat_grad(params)
        self.opt.zero_grad()
        F.cross_entropy(self.net(x), y).backward()
        if g_ref is not None:
            self.checks += 1
            g, projected = gem.agem_project(flat_grad(params), g_ref)
            if projected:
                self.projections += 1
                assign_flat_grad(params, g)
        self.opt.step()


BEFORE = {"online": Online, "independent": Independent, "taskinput": TaskInput, "ewc": EWC,
          "eralg4": ERAlg4, "eralg5": ERAlg5, "gem": GEM, "agem": AGEM}
