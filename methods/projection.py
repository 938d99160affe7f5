"""Gradient projections shared by GEM, A-GEM and TA-A-GEM (pure functions: no model, no state)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import quadprog
import torch

MARGIN_MODES = ("lower_bound", "additive")


def agem_project(g: torch.Tensor, g_ref: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A-GEM (Chaudhry et al. 2019, eq. 11): if g.g_ref < 0, g - (g.g_ref / g_ref.g_ref) g_ref, else g.

    Returns (projected gradient, whether a projection happened).
    """
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g, False
    return g - (dot / torch.dot(g_ref, g_ref)) * g_ref, True


class QPError(RuntimeError):
    """quadprog could not solve GEM's dual QP; carries the Gram matrix's condition number for the message."""

    def __init__(self, reason: str, condition: float, n_constraints: int) -> None:
        super().__init__(f"{reason} ({n_constraints} constraints, Gram matrix condition number {condition:.3g})")
        self.reason, self.condition, self.n_constraints = reason, condition, n_constraints


@dataclass(frozen=True)
class QPResult:
    g_tilde: torch.Tensor   # projected gradient, dtype and device of the input g
    v: np.ndarray           # dual solution (one entry per constraint), after the margin is applied
    condition: float        # condition number of the ridged Gram matrix the solver saw


def gem_project(g: torch.Tensor, G: torch.Tensor, margin: float = 0.0, ridge: float = 1e-3,
                margin_mode: str = "lower_bound") -> QPResult:
    """GEM's projection (`project2cone2` of facebookresearch/GradientEpisodicMemory@34c6b8e, model/gem.py:70-90).

    g: current gradient [P]; G: past-task gradients, one per row [k, P]. In float64 solves the dual
        min_v 1/2 v'(G G')v + g'G'v   s.t.  v >= b
    with quadprog (P = sym(G G') + ridge I, q = -G g, C = I) and returns g~ = G'v + g.
    margin_mode "lower_bound" (the reference code, which produced the published numbers): b = margin.
    margin_mode "additive" (the paper's text, "gamma is added to v*"): b = 0, then v = v* + margin.
    With margin 0 and a small ridge, g~ is the closest vector to g with G g~ >= 0.
    Raises QPError (never returns g silently) when quadprog fails, e.g. on a singular Gram matrix
    without ridge or on non-finite gradients.
    """
    if margin_mode not in MARGIN_MODES:
        raise ValueError(f"margin_mode must be one of {MARGIN_MODES}, not {margin_mode!r}")
    # The reference's own numpy calls, in its order: with G laid out as the reference lays it out (a
    # transposed view of a [P, k] matrix, methods/gem.py under rng "reference") every product is its product.
    M = G.detach().double().cpu().numpy()
    gv = g.detach().double().cpu().numpy()
    k = M.shape[0]
    gram = np.dot(M, M.transpose())
    P = 0.5 * (gram + gram.transpose()) + np.eye(k) * ridge
    q = np.dot(M, gv) * -1
    lower = margin if margin_mode == "lower_bound" else 0.0
    b = np.full(k, lower, dtype=np.float64)
    condition = _condition(P)
    try:
        if not (np.isfinite(P).all() and np.isfinite(q).all()):
            raise ValueError("non-finite gradients (NaN or inf)")
        v = quadprog.solve_qp(P, q, np.eye(k), b)[0]
    except ValueError as exc:
        raise QPError(f"quadprog.solve_qp failed: {exc}", condition, k) from exc
    if margin_mode == "additive":
        v = v + margin
    g_tilde = np.dot(v, M) + gv
    return QPResult(torch.from_numpy(g_tilde).to(dtype=g.dtype, device=g.device), v, condition)


def _condition(P: np.ndarray) -> float:
    try:
        return float(np.linalg.cond(P))
    except np.linalg.LinAlgError:
        return float("inf")
