"""GEM's QP projection and A-GEM's closed form as pure functions.

Tiny synthetic gradient matrices (float64, P = 40 coordinates): these tests are about the optimisation
problem, not about images. The independent references are scipy's NNLS on the dual (min ||G'v + g|| s.t.
v >= 0 is exactly GEM's dual) and SLSQP on the primal (min ||z - g||^2 s.t. G z >= 0).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, nnls

from methods.projection import QPError, agem_project, gem_project

P_DIM = 40


def violated_case(seed: int, k: int):
    """Random past-task rows G [k, P] and a g that violates at least one constraint."""
    rng = np.random.default_rng(seed)
    while True:
        G = rng.normal(size=(k, P_DIM))
        g = rng.normal(size=P_DIM)
        if (G @ g < 0).any():
            return torch.from_numpy(G), torch.from_numpy(g)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [1, 3, 7])
def test_projection_is_feasible_and_closest(seed, k):
    G, g = violated_case(seed, k)
    res = gem_project(g, G, margin=0.0, ridge=1e-12)
    gt, Gn, gn = res.g_tilde.numpy(), G.numpy(), g.numpy()
    slack = Gn @ gt
    assert (slack >= -1e-8).all()                       # every constraint <g~, g_k> >= 0
    # KKT: g~ = g + G'v, v >= 0, complementary slackness v_k <g~, g_k> = 0
    v = res.v
    np.testing.assert_allclose(gt, gn + Gn.T @ v, atol=1e-10)
    assert (v >= -1e-10).all()
    np.testing.assert_allclose(v * slack, 0.0, atol=1e-7)
    assert (v > 1e-6).any()                             # a violated input is actually moved
    # independent solver 1: NNLS on the dual
    v_nnls, _ = nnls(Gn.T, -gn)
    np.testing.assert_allclose(gt, gn + Gn.T @ v_nnls, atol=1e-6)
    # independent solver 2: SLSQP on the primal
    sol = minimize(lambda z: 0.5 * np.sum((z - gn) ** 2), gn, jac=lambda z: z - gn, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda z: Gn @ z, "jac": lambda z: Gn}],
                   options={"ftol": 1e-14, "maxiter": 500})
    assert sol.success
    np.testing.assert_allclose(gt, sol.x, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_no_violation_returns_input(seed):
    rng = np.random.default_rng(100 + seed)
    G, g = rng.normal(size=(4, P_DIM)), rng.normal(size=P_DIM)
    G *= np.sign(G @ g)[:, None]                          # flip rows so every <g, g_k> > 0
    assert (G @ g > 0).all()
    res = gem_project(torch.from_numpy(g), torch.from_numpy(G), margin=0.0, ridge=1e-12)
    np.testing.assert_allclose(res.g_tilde.numpy(), g, atol=1e-10)
    np.testing.assert_allclose(res.v, 0.0, atol=1e-10)


def test_float32_input_keeps_dtype_and_solves_in_float64():
    G, g = violated_case(3, 5)
    res = gem_project(g.float(), G.float(), margin=0.0, ridge=1e-9)
    assert res.g_tilde.dtype == torch.float32
    assert (G.float() @ res.g_tilde >= -1e-4).all()


@pytest.mark.parametrize("seed", range(4))
def test_lower_bound_margin_is_v_at_least_gamma(seed):
    """Reference semantics: min 1/2 ||G'v + g||^2 s.t. v >= gamma (substitute u = v - gamma >= 0 for NNLS)."""
    G, g = violated_case(20 + seed, 5)
    gamma = 0.5
    res = gem_project(g, G, margin=gamma, ridge=1e-12, margin_mode="lower_bound")
    assert (res.v >= gamma - 1e-9).all()
    Gn, gn = G.numpy(), g.numpy()
    u, _ = nnls(Gn.T, -(gn + gamma * Gn.T @ np.ones(5)))
    np.testing.assert_allclose(res.v, u + gamma, atol=1e-6)
    np.testing.assert_allclose(res.g_tilde.numpy(), gn + Gn.T @ (u + gamma), atol=1e-6)
    # a margin pushes even satisfied constraints: strictly more than the gamma = 0 projection
    base = gem_project(g, G, margin=0.0, ridge=1e-12).g_tilde.numpy()
    assert ((Gn @ res.g_tilde.numpy()) > (Gn @ base) - 1e-9).all()


def test_additive_margin_adds_gamma_to_the_unmargined_dual():
    G, g = violated_case(7, 4)
    v0 = gem_project(g, G, margin=0.0, ridge=1e-3).v
    res = gem_project(g, G, margin=0.3, ridge=1e-3, margin_mode="additive")
    np.testing.assert_allclose(res.v, v0 + 0.3, atol=1e-12)
    np.testing.assert_allclose(res.g_tilde.numpy(), g.numpy() + G.numpy().T @ (v0 + 0.3), atol=1e-10)
    with pytest.raises(ValueError, match="margin_mode"):
        gem_project(g, G, margin_mode="paper")


def test_ridge_is_what_the_solver_sees():
    """With two identical past-task rows the Gram matrix is singular: quadprog fails without ridge (GEM #2/#4)."""
    G, g = violated_case(5, 3)
    G = torch.cat([G, G[:1]])
    with pytest.raises(QPError, match="condition number") as err:
        gem_project(g, G, ridge=0.0)
    assert err.value.condition > 1e12 and err.value.n_constraints == 4
    res = gem_project(g, G, ridge=1e-3)                  # the fix: ridge 1e-3 as GEM@34c6b8e
    assert (G.numpy() @ res.g_tilde.numpy() >= -1e-2).all()


def test_nan_gradient_raises_not_skips():
    G, g = violated_case(1, 3)
    g[0] = float("nan")
    with pytest.raises(QPError, match="non-finite"):
        gem_project(g, G)


@pytest.mark.parametrize("seed", range(6))
def test_agem_closed_form(seed):
    gen = torch.Generator().manual_seed(seed)
    g, g_ref = torch.randn(P_DIM, generator=gen, dtype=torch.float64), torch.randn(P_DIM, generator=gen, dtype=torch.float64)
    out, projected = agem_project(g, g_ref)
    dot = float(g @ g_ref)
    if dot >= 0:
        assert not projected and torch.equal(out, g)
        g_ref = -g_ref
        out, projected = agem_project(g, g_ref)
        dot = -dot
    assert projected
    torch.testing.assert_close(out, g - dot / float(g_ref @ g_ref) * g_ref)
    assert abs(float(out @ g_ref)) < 1e-10                # projected onto the constraint's boundary
    # closest vector with <z, g_ref> >= 0: SLSQP agrees
    gn, rn = g.numpy(), g_ref.numpy()
    sol = minimize(lambda z: 0.5 * np.sum((z - gn) ** 2), gn, jac=lambda z: z - gn, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda z: z @ rn, "jac": lambda z: rn}])
    np.testing.assert_allclose(out.numpy(), sol.x, atol=1e-5)
