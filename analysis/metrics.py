"""Continual-learning metrics as pure functions of the accuracy matrix R and the random-init baseline b.

R[i, j] = test accuracy on task j after training on task i (0-indexed, T x T); b[j] = accuracy of the
randomly initialised network on task j. Sums over T-1 terms are reported with both denominators:
`paper` divides by T-1 (GEM paper eqs. 2-4, Chaudhry et al.), `code` divides by T (GEM/MER metrics.py,
whose published BWT/FWT are therefore (T-1)/T times the paper-formula values).
"""
from __future__ import annotations

import numpy as np

CONVENTIONS = {"paper": "divide by T-1 (paper equations)", "code": "divide by T (GEM/MER metrics.py)"}


def accuracy_matrix(result_t, result_a) -> tuple[np.ndarray, np.ndarray]:
    """(b, R) from an evaluation log as GEM's `confusion_matrix`: R row t = last evaluation labelled t."""
    result_t = np.asarray(result_t)
    result_a = np.asarray(result_a, dtype=float)
    changes = [i for i in range(1, len(result_t)) if result_t[i] != result_t[i - 1]]
    rows = np.array(changes + [len(result_t)]) - 1
    return result_a[0].copy(), result_a[rows]


def _both(total: float, n_tasks: int) -> dict[str, float]:
    return {"paper": total / (n_tasks - 1) if n_tasks > 1 else float("nan"), "code": total / n_tasks}


def acc(R: np.ndarray) -> float:
    """Average final accuracy over all tasks."""
    return float(np.mean(R[-1]))


def learning_accuracy(R: np.ndarray) -> float:
    """LA: mean accuracy on each task right after learning it (mean of the diagonal)."""
    return float(np.mean(np.diag(R)))


def bwt(R: np.ndarray) -> dict[str, float]:
    """Backward transfer: sum over i < T-1 of R[T-1, i] - R[i, i]."""
    T = R.shape[0]
    return _both(float(np.sum(R[-1, : T - 1] - np.diag(R)[: T - 1])), T)


def fwt(R: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Forward transfer: sum over i >= 1 of R[i-1, i] - b[i]."""
    T = R.shape[0]
    return _both(float(np.sum(np.array([R[i - 1, i] - b[i] for i in range(1, T)]))) if T > 1 else 0.0, T)


def forgetting(R: np.ndarray) -> dict[str, float]:
    """Chaudhry et al. (2018): sum over j < T-1 of max_{l < T-1} R[l, j] - R[T-1, j]."""
    T = R.shape[0]
    if T < 2:
        return _both(0.0, T)
    best = np.max(R[: T - 1, : T - 1], axis=0)
    return _both(float(np.sum(best - R[-1, : T - 1])), T)


def average_accuracy(R: np.ndarray) -> float:
    """A-GEM's A_T = (1/T) sum_j a_{T,j}: the accuracy after the last task, averaged over tasks (= ACC)."""
    return acc(R)


def max_forgetting(R: np.ndarray) -> float:
    """A-GEM's F_T = 1/(T-1) sum_{j<T} max_{l<T} (a_{l,j} - a_{T,j}) (= FGT, paper convention)."""
    return forgetting(R)["paper"]


def lca(first_batches) -> float:
    """A-GEM's LCA_beta = 1/(beta+1) sum_{b=0..beta} Z_b, Z_b = (1/T) sum_k a_{k,b,k}.

    `first_batches[k][b]` = accuracy on task k after b mini-batches of task k (b = 0..beta), so LCA_beta is
    the mean of that T x (beta+1) matrix; beta = its width - 1.
    """
    Z = np.asarray(first_batches, dtype=float)
    if Z.ndim != 2 or Z.shape[1] < 1:
        raise ValueError(f"first_batches must be a T x (beta+1) matrix, got shape {Z.shape}")
    return float(Z.mean(axis=0).mean())


def all_metrics(R, b, first_batches=None) -> dict:
    """Every metric; transfer and forgetting under both conventions; LCA where the log has first batches."""
    R, b = np.asarray(R, dtype=float), np.asarray(b, dtype=float)
    out = {"ACC": acc(R), "LA": learning_accuracy(R), "BWT": bwt(R), "FWT": fwt(R, b), "FGT": forgetting(R)}
    if first_batches:
        out[f"LCA{len(first_batches[0]) - 1}"] = lca(first_batches)
    return out
