"""The GEM/MER training protocol: one pass over the task stream with periodic evaluation on every task.

Follows `Continuum` and `life_experience` of the reference main.py (reference-gem-mer.md section 3):
per task a seeded random subset of the 60k training images, shuffled; batches never span tasks;
evaluate on all tasks before batch i if i % log_every == 0 or the task changed, and once at the end.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from data_prep.errors import ClreproError
from data_prep.streams import TaskStream

from .base import Learner


@dataclass
class Schedule:
    """The training examples of each task, in the order they are seen."""

    order: list[torch.Tensor]     # per task: indices into that task's training tensor, shuffled
    subsets: list[torch.Tensor]   # per task: indices into the 60k MNIST training images


def seed_everything(seed: int) -> None:
    """Seed the three RNGs the reference seeds (torch, numpy, Python), in its order."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def make_schedule(n_tasks: int, n_train: int, samples_per_task: int, pools: list[np.ndarray] | None = None,
                  task_images: str = "independent") -> Schedule:
    """Each task's training subset and its order.

    `pools`: per task, the training images it may use (TaskStream.task_split; None = all n_train, a pixel-map
    stream). "independent" consumes the global RNGs as the reference Continuum: T torch.randperm (one per
    task, over its pool), then T random.shuffle. "disjoint": ONE torch.randperm of the n_train images, dealt
    out by disjoint_subsets, then the same T random.shuffle. A task takes min(samples_per_task, available).
    """
    pools = pools if pools is not None else [np.arange(n_train)] * n_tasks
    if task_images not in TASK_IMAGES:
        raise ClreproError(f"unknown task_images {task_images!r}; use one of {', '.join(TASK_IMAGES)}")
    available = TASK_IMAGES[task_images](pools, n_train)
    subsets = [torch.from_numpy(a[: _take(samples_per_task, len(a))]) for a in available]
    order = []
    for subset in subsets:
        items = list(range(len(subset)))
        random.shuffle(items)
        order.append(torch.tensor(items, dtype=torch.long))
    return Schedule(order, subsets)


def _take(samples_per_task: int, n: int) -> int:
    return min(samples_per_task, n) if samples_per_task > 0 else n


def independent_subsets(pools: list[np.ndarray], n_train: int) -> list[np.ndarray]:  # noqa: ARG001
    """Each task its own random order of its pool: one torch.randperm per task (the reference's draws)."""
    return [pool[torch.randperm(len(pool)).numpy()] for pool in pools]


def disjoint_subsets(pools: list[np.ndarray], n_train: int) -> list[np.ndarray]:
    """One permutation of the training images; the tasks that share a pool cut it, in permutation order, into
    equal consecutive chunks (pixel-map streams: 60,000 / 5 tasks = 12,000 each), and tasks with pools of
    their own (a class split) keep all of theirs. No image is in two tasks, as long as pools are either the
    same or disjoint (every stream kind's are)."""
    perm = torch.randperm(n_train).numpy()
    rank = np.empty(n_train, dtype=np.int64)
    rank[perm] = np.arange(n_train)
    sharing: dict[bytes, list[int]] = {}
    for t, pool in enumerate(pools):
        sharing.setdefault(pool.tobytes(), []).append(t)
    out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(pools)
    for tasks in sharing.values():
        pool = pools[tasks[0]]
        ordered = pool[np.argsort(rank[pool], kind="stable")]
        size = len(ordered) // len(tasks)
        for k, t in enumerate(tasks):
            out[t] = ordered[k * size: (k + 1) * size]
    return out


# protocol option task_images -> (per-task pools, n_train) -> per task its available images, in draw order
TASK_IMAGES = {"independent": independent_subsets, "disjoint": disjoint_subsets}


@dataclass
class EvalLog:
    task: list[int] = field(default_factory=list)           # result_t: label of each evaluation
    examples_seen: list[int] = field(default_factory=list)  # training examples seen before it
    acc: list[list[float]] = field(default_factory=list)    # result_a: accuracy on every task
    # A-GEM's LCA: per task k, its own test accuracy after 0, 1, ..., beta batches of task k (empty if beta = 0)
    first_batches: list[list[float]] = field(default_factory=list)


class Evaluator:
    """Scores a learner on every task's test set, transformed on the device once per evaluation.

    Under the MER protocol evaluation dominates a CPU run (201 evaluations x T tasks x 10k images). The test
    images are kept as float32 in [0, 1], pixel-major (785 x N, row 784 the zero fill pixel), converted once.

    A learner whose eval forward is a plain MLP (Learner.eval_mlp) is scored for all tasks at once. Task t's
    input is pixels[map_t], so its first layer W1 x_t equals W1_t x with W1_t = W1's columns summed into the
    pixel each one reads (index_add_ over map_t): folding the maps into the weights moves 784 x H weights per
    task instead of 784 x N pixels, and the T folded layers side by side make ONE large GEMM (N images x all
    tasks' hidden units), run in image chunks whose activations stay in cache for the layers above.
    Zero pixels add nothing, so on the CPU the images are grouped by the pixels they use (support_groups)
    and each group's GEMM runs over those pixels only: a third fewer FLOPs on MNIST. This sums the same
    products in another order, so logits can differ in the last bits from the per-task matmul;
    docs/scale.md counts the argmax flips (tests/test_evaluation.py bounds them).

    Other learners get the per-task path: one row gather of the pixel-major images into a reused buffer,
    whose transposed view feeds the learner directly.

    Which images count for which task, and with which label, is data (task_test_sets): every task predicts
    every scored image, and `targets` (T x N) holds each task's label of each image, -1 where the image is not
    one of the task's (a class split: the other tasks' classes). On a pixel-map stream every row is the
    labels, so the scores are bitwise those of comparing with the labels directly.
    """

    def __init__(self, stream: TaskStream, n_test: int, device: torch.device, drop_last: bool,
                 subset: str = "first") -> None:
        sets = task_test_sets(stream, n_test, drop_last, subset)
        scored = np.unique(np.concatenate([index for index, _, _ in sets]))   # every task's scored images
        self.n_scored, self.n_test = len(scored), n_test
        targets = np.full((len(sets), len(scored)), -1, dtype=np.int64)
        for t, (index, labels, _) in enumerate(sets):
            targets[t, np.searchsorted(scored, index)] = labels
        self.targets = torch.from_numpy(targets).to(device)
        self.denominators = torch.tensor([n for _, _, n in sets], dtype=torch.float64, device=device)
        images = torch.from_numpy(stream.test_images[scored])
        padded = torch.cat([images, torch.zeros(images.shape[0], 1, dtype=torch.uint8)], 1)
        self.pixels = padded.t().contiguous().to(device).float().div_(255.0)
        self.maps = torch.from_numpy(stream.maps).to(device)
        self.n_tasks = stream.n_tasks
        self._buffer = torch.empty(self.maps.shape[1], self.n_scored, device=device)
        used = self.pixels.any(1).nonzero().squeeze(1)
        row = torch.full((self.pixels.shape[0],), len(used), dtype=torch.long, device=device)
        row[used] = torch.arange(len(used), device=device)
        self._rows = row[self.maps]   # T x 784: each input's row of the folded weights (K: a discarded row)
        self._folded, self._n_used = torch.empty(0, device=device), len(used)
        images = self.pixels[used].t()   # N x K image-major, the K pixels used by some image
        # on a GPU the FLOPs are cheap and each group costs kernel launches: one group there
        groups = support_groups(images, 32 if device.type == "cpu" else 1)
        self._groups = [(pixels, images[idx][:, pixels].contiguous()) for idx, pixels in groups]
        self._ungroup = torch.cat([idx for idx, _ in groups]).argsort()   # group order -> image order

    def test_inputs(self, task: int) -> torch.Tensor:
        """Task `task`'s inputs of every scored image (N x 784, a fresh tensor)."""
        return self.pixels.index_select(0, self.maps[task]).t()

    @torch.no_grad()
    def __call__(self, learner: Learner) -> list[float]:
        correct = (self.predictions(learner) == self.targets).sum(1)
        return (correct.double() / self.denominators).tolist()

    @torch.no_grad()
    def predictions(self, learner: Learner) -> torch.Tensor:
        """The learner's predicted class of every scored test image of every task (T x N), in eval mode."""
        was_training = learner.training
        learner.eval()
        layers = self._task_mlps(learner)
        pred = self._fused(layers) if layers else self._per_task(learner)
        learner.train(was_training)
        return pred

    def _per_task(self, learner: Learner) -> torch.Tensor:
        preds = []
        for t in range(self.n_tasks):
            x = torch.index_select(self.pixels, 0, self.maps[t], out=self._buffer).t()
            preds.append(learner(x, t).argmax(1))
        return torch.stack(preds)

    def _task_mlps(self, learner: Learner) -> list[list[nn.Linear]] | None:
        """Every task's MLP layers if the learner exposes them (eval_mlp) and they stack, else None."""
        eval_mlp = getattr(learner, "eval_mlp", None)
        layers = [eval_mlp(t) for t in range(self.n_tasks)] if eval_mlp else [None]
        if any(not ls for ls in layers):
            return None
        shapes = {tuple(layer.weight.shape for layer in ls) for ls in layers}
        plain = all(layer.bias is not None and layer.weight.dtype == self.pixels.dtype for ls in layers for layer in ls)
        return layers if plain and len(shapes) == 1 and layers[0][0].in_features == self.maps.shape[1] else None

    def _fold(self, firsts: list[nn.Linear], rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tasks' first layers with their pixel maps (rows) folded in: K x (tasks * H) weights and biases."""
        shape = torch.Size((self._n_used + 1, len(firsts), firsts[0].out_features))
        if self._folded.numel() < shape.numel():
            self._folded = self.pixels.new_empty(shape.numel())
        w = self._folded[: shape.numel()].view(shape).zero_()
        for t, layer in enumerate(firsts):
            w[:, t].index_add_(0, rows[t], layer.weight.t())
        return w[: self._n_used].view(self._n_used, -1), torch.cat([layer.bias for layer in firsts])

    def _chunk(self, width: int) -> int:
        """Images per GEMM: ~2 MB of activations on the CPU (they stay in cache across layers), more elsewhere."""
        budget = 2 ** 19 if self.pixels.device.type == "cpu" else 2 ** 26
        return max(1, min(self.n_scored, budget // width))

    def _fused(self, layers: list[list[nn.Linear]]) -> torch.Tensor:
        """Predictions (T x N) in blocks of tasks whose folded weights stay cache-sized (20 of width 100):
        with all 100 tasks of Many Permutations at once, every image chunk would stream them from memory."""
        block = max(1, 2 ** 11 // layers[0][0].out_features)
        return torch.cat([self._fused_block(layers[t: t + block], self._rows[t: t + block])
                          for t in range(0, self.n_tasks, block)])

    def _fused_block(self, layers: list[list[nn.Linear]], rows: torch.Tensor) -> torch.Tensor:
        w1, b1 = self._fold([ls[0] for ls in layers], rows)
        tail = [_stacked(depth) for depth in zip(*(ls[1:] for ls in layers))]
        pred = torch.empty(self.n_scored, len(layers), dtype=torch.long, device=w1.device)
        step, done = self._chunk(w1.shape[1]), 0
        for pixels, images in self._groups:
            w = w1.index_select(0, pixels)
            for i in range(0, len(images), step):
                x = images[i: i + step]
                h = torch.addmm(b1, x, w).view(len(x), len(layers), -1)
                for weight, bias in tail:
                    h = _linear(h.relu_(), weight, bias)
                torch.argmax(h, 2, out=pred[done: done + len(x)])
                done += len(x)
        return pred[self._ungroup].t()


def support_groups(images: torch.Tensor, n_groups: int, iters: int = 10) -> list[tuple[torch.Tensor, ...]]:
    """Images (N x K) grouped by the pixels they use: per group (its image indices, the pixels any of them uses).

    A group's first-layer GEMM needs only its own used pixels: k-means on the images' nonzero masks makes
    groups of similar support (MNIST, 32 groups: ~440 of 668 pixels against ~150 per digit). Deterministic,
    and starts from evenly spaced images rather than drawing from the RNGs, which belong to training.
    """
    mask = (images > 0).to(images.dtype)
    n_groups = min(n_groups, len(mask))
    assign = torch.zeros(len(mask), dtype=torch.long, device=mask.device)
    centres = mask[torch.linspace(0, len(mask) - 1, n_groups, device=mask.device).long()]
    for _ in range(iters if n_groups > 1 else 0):
        assign = (centres.square().sum(1) - 2 * mask @ centres.t()).argmin(1)   # nearest centre
        counts = mask.new_zeros(n_groups).index_add_(0, assign, mask.new_ones(len(mask)))
        sums = torch.zeros_like(centres).index_add_(0, assign, mask)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    groups = [(assign == g).nonzero().squeeze(1) for g in range(n_groups)]
    return [(idx, mask[idx].any(0).nonzero().squeeze(1)) for idx in groups if len(idx)]


def _stacked(depth: tuple[nn.Linear, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer depth of every task's MLP: the layer's (weight, bias) if all tasks share it, else stacked."""
    if all(layer is depth[0] for layer in depth):
        return depth[0].weight, depth[0].bias
    return torch.stack([layer.weight for layer in depth]), torch.stack([layer.bias for layer in depth])


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A layer on activations h (n x T x in): one GEMM for a shared layer, one per task (bmm) otherwise."""
    n, n_tasks, _ = h.shape
    if weight.dim() == 2:
        return torch.addmm(bias, h.reshape(n * n_tasks, -1), weight.t()).view(n, n_tasks, -1)
    return torch.baddbmm(bias.unsqueeze(1), h.transpose(0, 1), weight.transpose(1, 2)).transpose(0, 1)


TEST_SUBSETS = ("first", "spread")


def test_subset(n_available: int, n: int, how: str = "first") -> np.ndarray:
    """Which n of a task's n_available test images to score: "first" (the reference's slice, and every
    record made before the option existed) or "spread" (every (n_available/n)-th, no RNG). MNIST's test set is
    not in random order: on the default grid the first 2,000 images scored 0.02-0.05 lower than all 10,000 for
    every method (docs/analysis.md), so a cut-down test set must be spread to estimate the full one."""
    if how not in TEST_SUBSETS:
        raise ClreproError(f"unknown test_subset {how!r}; use one of {', '.join(TEST_SUBSETS)}")
    if how == "first" or n >= n_available:
        return np.arange(min(n, n_available))
    return np.arange(n) * n_available // n


def task_test_sets(stream: TaskStream, n_test: int, drop_last: bool,
                   subset: str = "first") -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per task: (its scored test images, their task labels, the count its accuracy divides by).

    A task's test images are n_test of its own (all 10,000 on a pixel-map stream, the images of its classes
    on a class split), chosen by `test_subset`, so n_test caps each task and the accuracy is correct / that
    count. Reference quirk (drop_last): main.py scores x[0 : N-1] but divides by N.
    """
    sets = []
    for t in range(stream.n_tasks):
        index, labels = stream.task_split("test", t)
        n = min(n_test, len(index))
        k = n - 1 if drop_last else n
        pick = test_subset(len(index), n, subset)[:k]
        sets.append((index[pick], labels[pick], n))
    return sets


def task_inputs(stream: TaskStream, schedule: Schedule,
                device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every task's training subset, transformed once and kept on the device as float in [0, 1], with the
    labels as the task sees them (a class split's remapped ones)."""
    data = []
    for t, subset in enumerate(schedule.subsets):
        idx = subset.numpy()
        x = torch.from_numpy(stream.task_images("train", t, idx)).to(device).float().div_(255.0)
        y = torch.from_numpy(stream.task_labels("train", t, idx)).to(device)
        data.append((x, y))
    return data


class TaskScorer:
    """One task's test accuracy, for the evaluations after each of a task's first batches (A-GEM's LCA).

    Kept apart from Evaluator: it scores only the current task, from its own test inputs (task_test_sets).
    """

    def __init__(self, stream: TaskStream, n_test: int, device: torch.device, drop_last: bool,
                 subset: str = "first") -> None:
        self.stream, self.device = stream, device
        self.sets = task_test_sets(stream, n_test, drop_last, subset)
        self.task, self.x, self.y, self.n = -1, None, None, 0

    @torch.no_grad()
    def __call__(self, learner: Learner, t: int) -> float:
        if t != self.task:
            index, labels, self.n = self.sets[t]
            images = self.stream.task_images("test", t, index)
            self.task, self.x = t, torch.from_numpy(images).to(self.device).float().div_(255.0)
            self.y = torch.from_numpy(labels).to(self.device)
        was_training = learner.training
        learner.eval()
        correct = (learner(self.x, t).argmax(1) == self.y).sum()
        learner.train(was_training)
        return float(correct.double() / self.n)


def _clock(seconds: float) -> str:
    """h:mm:ss, readable at a glance in a job log."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run(learner: Learner, stream: TaskStream, schedule: Schedule, spec: dict, device: torch.device,
        progress=sys.stderr) -> tuple[EvalLog, dict]:
    """Train `learner` over the stream; return the evaluation log and timings."""
    subset = spec.get("test_subset", "first")   # absent in every record made before the option
    evaluate = Evaluator(stream, spec["test_examples_per_task"], device,
                         spec["compat"]["eval_drop_last_test_example"], subset)
    data = task_inputs(stream, schedule, device)
    bs, log_every, n_tasks = spec["batch_size"], spec["log_every"], stream.n_tasks
    beta = spec.get("lca_batches", 0)
    score_task = TaskScorer(stream, spec["test_examples_per_task"], device,
                            spec["compat"]["eval_drop_last_test_example"], subset) if beta else None
    log = EvalLog()
    eval_s, train_s, per_task_s = 0.0, 0.0, []
    seen, batch_i, current = 0, 0, -1
    start = time.perf_counter()

    def record(label: int) -> None:
        nonlocal eval_s
        t0 = time.perf_counter()
        log.acc.append(evaluate(learner))
        log.task.append(label)
        log.examples_seen.append(seen)
        eval_s += time.perf_counter() - t0

    learner.train()
    for t in range(n_tasks):
        x_all, y_all = data[t]
        order = schedule.order[t].to(device)
        # the task's examples in schedule order, gathered once: each batch is then a slice (a view), the
        # same rows the per-batch gather x_all[order[b0:b0+bs]] gave, without two index kernels per step
        x_task, y_task = x_all[order], y_all[order]
        n = len(order)
        task_t0 = time.perf_counter()
        task_eval_before = eval_s
        for b0 in range(0, n, bs):
            if batch_i % log_every == 0 or t != current:
                record(current if current >= 0 else t)
                current = t
            if beta and b0 == 0:
                log.first_batches.append([log.acc[-1][t]])   # Z_0: task t's accuracy before its first batch
            learner.observe(x_task[b0: b0 + bs], t, y_task[b0: b0 + bs])
            seen += min(bs, n - b0)
            batch_i += 1
            if beta and b0 // bs < beta:
                t0 = time.perf_counter()
                log.first_batches[-1].append(score_task(learner, t))
                eval_s += time.perf_counter() - t0
        learner.end_task(t, x_task, y_task)
        task_eval = eval_s - task_eval_before
        task_train = time.perf_counter() - task_t0 - task_eval
        train_s += task_train
        per_task_s.append(task_train)
        elapsed = time.perf_counter() - start
        eta = elapsed / (t + 1) * (n_tasks - t - 1)
        print(f"[train] task {t + 1}/{n_tasks}: {n} examples, training {task_train:.1f}s "
              f"({n / max(task_train, 1e-9):.0f} ex/s), evaluating {task_eval:.1f}s; "
              f"elapsed {_clock(elapsed)}, ETA {_clock(eta)}", file=progress, flush=True)
    record(current)
    timing = {"wall_s": time.perf_counter() - start, "train_s": train_s, "eval_s": eval_s,
              "per_task_train_s": per_task_s, "examples": seen,
              "examples_per_s": seen / train_s if train_s > 0 else None, "n_evaluations": len(log.task)}
    return log, timing
