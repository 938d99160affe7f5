"""TA-A-GEM's task-agnostic episodic memory (Lamers et al. 2023): per-class pools of small clusters.

One pool per class label (at most `num_pools`), at most Q clusters per pool, at most P samples per cluster
(anchors-systems.md section 2.6). A new sample z of class y goes to pool y:
  0. `opening="below_q"` only: fewer than Q clusters in the pool -> new cluster {z};
  1. pool empty, or exactly one cluster while Q > 1          -> new cluster {z};
  2. else nearest cluster c* (Euclidean distance to the cluster means, raw input space);
     if |c*| > 1                                               -> z joins c*;
  3. c* is a singleton {s}: let c' be s's nearest OTHER cluster;
     if d(z, c*) > d(s, c')  -> s moves into c' and c* becomes {z} (a far sample keeps its own mode);
     elif fewer than Q clusters                               -> new cluster {z};
     else                                                     -> z joins c*;
  4. a cluster that exceeds P evicts one member: the oldest ("fifo", default), the one furthest from the
     mean other than the newest ("furthest"), or a random one ("random").
`opening` picks when clusters open. "singleton" (default) is the stored reimplementation's current
rule (em_tools/clustering_mechs.py): step 0 is skipped, so a cluster opens only when the nearest one is a
singleton; pools then keep far fewer than Q clusters and the store stays well below its bound, a FIFO of
recent samples. "below_q" is that repository's first version (ta-clustering/clustering_gemini.py):
open a cluster for every sample until the pool has Q, so the store fills to Q * P and keeps early modes.
The paper text is not available here to say which one it describes.

Cluster means are recomputed from their (at most P) members after every change, so they always equal
the mean of the members exactly (no drift from running updates).

Everything lives in fixed-size tensors [pools, Q, P, D] with a validity mask, so distances and reference
sampling are single vectorised operations; only the per-sample control flow above is Python.
"""
from __future__ import annotations

import torch

from data_prep.errors import ClreproError

EVICTIONS = ("fifo", "furthest", "random")
OPENINGS = ("singleton", "below_q")


def check_sizes(num_pools: int, clusters_per_pool: int, samples_per_cluster: int) -> None:
    if min(num_pools, clusters_per_pool, samples_per_cluster) < 1:
        raise ClreproError(f"clustering memory needs num_pools, Q and P >= 1 (got {num_pools}, "
                           f"{clusters_per_pool}, {samples_per_cluster}); raise the memory budget or set "
                           f"clusters_per_pool")


class ClusteringMemory:
    def __init__(self, n_inputs: int, num_pools: int, clusters_per_pool: int, samples_per_cluster: int,
                 eviction: str = "fifo", device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None, opening: str = "singleton") -> None:
        if eviction not in EVICTIONS:
            raise ClreproError(f"unknown eviction {eviction!r}; use one of {', '.join(EVICTIONS)}")
        if opening not in OPENINGS:
            raise ClreproError(f"unknown cluster opening rule {opening!r}; use one of {', '.join(OPENINGS)}")
        check_sizes(num_pools, clusters_per_pool, samples_per_cluster)
        self.n_pools, self.Q, self.P, self.eviction = num_pools, clusters_per_pool, samples_per_cluster, eviction
        self.opening = opening
        self.device = torch.device(device)
        self.gen = generator
        shape = (num_pools, clusters_per_pool, samples_per_cluster)
        self.x = torch.zeros(*shape, n_inputs, device=self.device)
        self.age = torch.full(shape, -1, dtype=torch.long, device=self.device)   # insertion stamp; -1 = empty
        self.means = torch.zeros(num_pools, clusters_per_pool, n_inputs, device=self.device)
        self.size = [[0] * clusters_per_pool for _ in range(num_pools)]        # members per cluster
        self.n_clusters = [0] * num_pools
        self.pool_of: dict[int, int] = {}                                     # class label -> pool
        self.labels = torch.full((num_pools,), -1, dtype=torch.long, device=self.device)
        self.clock = 0
        self.dropped = 0          # samples whose label found no free pool
        self.evicted = 0

    # ------------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        return int((self.age >= 0).sum())

    @property
    def bound(self) -> int:
        return self.n_pools * self.Q * self.P

    def pool_sizes(self) -> list[int]:
        return [sum(s) for s in self.size]

    def members(self, pool: int, cluster: int) -> torch.Tensor:
        return self.x[pool, cluster, : self.size[pool][cluster]]

    def _refresh_mean(self, p: int, c: int) -> None:
        n = self.size[p][c]
        self.means[p, c] = self.x[p, c, :n].mean(0) if n else 0.0

    def _pool(self, label: int) -> int | None:
        if label not in self.pool_of:
            if len(self.pool_of) >= self.n_pools:
                return None
            self.pool_of[label] = len(self.pool_of)
            self.labels[self.pool_of[label]] = label
        return self.pool_of[label]

    # ------------------------------------------------------------------ cluster edits
    def _new_cluster(self, p: int, z: torch.Tensor, stamp: int) -> None:
        c = self.n_clusters[p]
        self.n_clusters[p] += 1
        self.x[p, c, 0] = z
        self.age[p, c, 0] = stamp
        self.size[p][c] = 1
        self._refresh_mean(p, c)

    def _join(self, p: int, c: int, z: torch.Tensor, stamp: int) -> None:
        """Append z to cluster c (slot P is virtual: overflow evicts one member first)."""
        n = self.size[p][c]
        if n < self.P:
            self.x[p, c, n] = z
            self.age[p, c, n] = stamp
            self.size[p][c] = n + 1
        else:
            victim = self._victim(p, c, z, stamp)
            if victim is not None:       # None: the newcomer itself is evicted
                self._remove(p, c, victim)
                self.x[p, c, self.P - 1] = z
                self.age[p, c, self.P - 1] = stamp
                self.size[p][c] = self.P
            self.evicted += 1
        self._refresh_mean(p, c)

    def _victim(self, p: int, c: int, z: torch.Tensor, stamp: int) -> int | None:
        """Index (among the P members) of the member to evict when z arrives at a full cluster, or None
        to drop z itself (FIFO when z is a moved singleton older than every member; "random")."""
        if self.eviction == "fifo":
            i = int(self.age[p, c].argmin())
            return None if stamp < int(self.age[p, c, i]) else i
        if self.eviction == "random":
            # the P+1 candidates include z; index P means "drop z"
            k = int(torch.randint(self.P + 1, (1,), generator=self.gen))
            return None if k == self.P else k
        mean = (self.x[p, c].sum(0) + z) / (self.P + 1)
        return int((self.x[p, c] - mean).norm(dim=1).argmax())   # furthest, the newcomer excluded

    def _remove(self, p: int, c: int, i: int) -> None:
        """Delete member i, keeping members contiguous (order of insertion is kept via `age`)."""
        n = self.size[p][c]
        if i < n - 1:
            self.x[p, c, i: n - 1] = self.x[p, c, i + 1: n].clone()
            self.age[p, c, i: n - 1] = self.age[p, c, i + 1: n].clone()
        self.age[p, c, n - 1] = -1
        self.size[p][c] = n - 1

    # ------------------------------------------------------------------ public API
    def add(self, z: torch.Tensor, label: int) -> None:
        """Insert one sample (1-D tensor of n_inputs) of class `label` by the rules in the module doc."""
        p = self._pool(int(label))
        if p is None:
            self.dropped += 1
            return
        z = z.detach().to(self.device, torch.float32)
        stamp = self.clock
        self.clock += 1
        k = self.n_clusters[p]
        if k == 0 or (k == 1 and self.Q > 1) or (self.opening == "below_q" and k < self.Q):
            self._new_cluster(p, z, stamp)
            return
        d = (self.means[p, :k] - z).norm(dim=1)
        c = int(d.argmin())
        if self.size[p][c] > 1 or k == 1:
            self._join(p, c, z, stamp)
            return
        s, s_age = self.x[p, c, 0].clone(), int(self.age[p, c, 0])
        ds = (self.means[p, :k] - s).norm(dim=1)
        ds[c] = float("inf")
        c2 = int(ds.argmin())
        if d[c] > ds[c2]:
            self._join(p, c2, s, s_age)          # s keeps its age: FIFO still sees it as old
            self.x[p, c, 0] = z
            self.age[p, c, 0] = stamp
            self._refresh_mean(p, c)
        elif k < self.Q:
            self._new_cluster(p, z, stamp)
        else:
            self._join(p, c, z, stamp)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n stored samples without replacement, pool-balanced: each non-empty pool equally likely, members
        uniform within a pool (all of them if fewer than n are stored)."""
        valid = self.age >= 0                                              # [pools, Q, P]
        per_pool = valid.flatten(1).sum(1)                                 # [pools]
        n_pools = int((per_pool > 0).sum())
        if n_pools == 0:
            raise ClreproError("cannot sample an empty clustering memory")
        w = valid.float() / per_pool.clamp(min=1).view(-1, 1, 1).float()
        total = int(valid.sum())
        if n >= total:
            idx = valid.flatten().nonzero().squeeze(1)
        else:
            idx = torch.multinomial(w.flatten(), n, replacement=False, generator=generator)
        pool_idx = idx // (self.Q * self.P)
        return self.x.flatten(0, 2)[idx], self.labels[pool_idx]
