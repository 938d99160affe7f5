"""analysis/metrics.py against small matrices whose metrics were computed by hand (no training needed:
this is arithmetic, so tiny hand-made R, b and evaluation logs are the right data)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import metrics

# R[i, j]: accuracy on task j after training task i; R[1, 0] > R[0, 0] so forgetting != -BWT.
R = np.array([[0.90, 0.10, 0.20],
              [0.95, 0.80, 0.30],
              [0.60, 0.50, 0.95]])
B = np.array([0.10, 0.15, 0.05])

# By hand, T = 3:
#   ACC = (0.60 + 0.50 + 0.95) / 3              = 2.05 / 3
#   LA  = (0.90 + 0.80 + 0.95) / 3              = 2.65 / 3
#   BWT sum = (0.60 - 0.90) + (0.50 - 0.80)     = -0.6  -> paper -0.6 / 2, code -0.6 / 3
#   FWT sum = (0.10 - 0.15) + (0.30 - 0.05)     =  0.2  -> paper  0.2 / 2, code  0.2 / 3
#   FGT sum = (0.95 - 0.60) + (0.80 - 0.50)     =  0.65 -> paper 0.65 / 2, code 0.65 / 3
HAND = {"ACC": 2.05 / 3, "LA": 2.65 / 3,
        "BWT": {"paper": -0.3, "code": -0.2},
        "FWT": {"paper": 0.1, "code": 0.2 / 3},
        "FGT": {"paper": 0.325, "code": 0.65 / 3}}


def test_acc_and_la_by_hand():
    assert metrics.acc(R) == pytest.approx(HAND["ACC"])
    assert metrics.learning_accuracy(R) == pytest.approx(HAND["LA"])


@pytest.mark.parametrize("name, fn", [("BWT", lambda: metrics.bwt(R)), ("FWT", lambda: metrics.fwt(R, B)),
                                      ("FGT", lambda: metrics.forgetting(R))])
def test_transfer_and_forgetting_both_conventions_by_hand(name, fn):
    got = fn()
    assert set(got) == {"paper", "code"}
    assert got["paper"] == pytest.approx(HAND[name]["paper"])
    assert got["code"] == pytest.approx(HAND[name]["code"])


def test_code_convention_is_the_reference_means_over_all_T_entries():
    """GEM metrics.py: bwt = R[T-1] - diag (last entry 0), fwt[0] = 0; .mean() over T entries. By hand:
    bwt vector (-0.30, -0.30, 0.00) -> -0.2; fwt vector (0, -0.05, 0.25) -> 0.0667; and BWT_code = ACC - LA."""
    assert metrics.bwt(R)["code"] == pytest.approx((-0.30 - 0.30 + 0.00) / 3)
    assert metrics.fwt(R, B)["code"] == pytest.approx((0.0 - 0.05 + 0.25) / 3)
    assert metrics.bwt(R)["code"] == pytest.approx(HAND["ACC"] - HAND["LA"])


def test_all_metrics_collects_everything():
    got = metrics.all_metrics(R.tolist(), B.tolist())
    assert got["ACC"] == pytest.approx(HAND["ACC"])
    assert got["LA"] == pytest.approx(HAND["LA"])
    for name in ("BWT", "FWT", "FGT"):
        assert got[name] == pytest.approx(HAND[name])


def test_one_task_has_no_paper_denominator():
    got = metrics.all_metrics([[0.7]], [0.1])
    assert got["ACC"] == pytest.approx(0.7) and got["LA"] == pytest.approx(0.7)
    for name in ("BWT", "FWT", "FGT"):
        assert math.isnan(got[name]["paper"]) and got[name]["code"] == 0.0


def test_accuracy_matrix_from_small_evaluation_log():
    """Row t of R = the last evaluation labelled t; b = the first evaluation (random init)."""
    task = [0, 0, 0, 1, 1, 1, 2, 2]
    acc = [[0.10, 0.11, 0.12],   # 0: before any update -> b
           [0.50, 0.12, 0.10],   # 1
           [0.90, 0.10, 0.20],   # 2: end of task 0 -> R[0]
           [0.93, 0.50, 0.25],   # 3
           [0.94, 0.70, 0.28],   # 4
           [0.95, 0.80, 0.30],   # 5: end of task 1 -> R[1]
           [0.70, 0.60, 0.90],   # 6
           [0.60, 0.50, 0.95]]   # 7: final -> R[2]
    b, got = metrics.accuracy_matrix(task, acc)
    np.testing.assert_array_equal(b, [0.10, 0.11, 0.12])
    np.testing.assert_array_equal(got, R)


def test_agem_metrics_by_hand():
    """A-GEM's A_T and F_T on R above (T = 3), and LCA on a hand-made Z (2 tasks, beta = 2).

    A_T = ACC = 2.05 / 3. F_T: task 0's best before the end is max(0.90, 0.95) = 0.95 (R[1, 0] > R[0, 0],
    so max-based forgetting differs from -BWT), task 1's is 0.80: ((0.95 - 0.60) + (0.80 - 0.50)) / 2 = 0.325.
    Z = [[0.1, 0.4, 0.7], [0.2, 0.5, 0.6]]: Z_0 = 0.15, Z_1 = 0.45, Z_2 = 0.65 -> LCA_2 = 1.25 / 3.
    """
    assert metrics.average_accuracy(R) == pytest.approx(2.05 / 3, abs=1e-12)
    assert metrics.max_forgetting(R) == pytest.approx(0.325, abs=1e-12)
    assert metrics.max_forgetting(R) != pytest.approx(-metrics.bwt(R)["paper"])
    Z = [[0.1, 0.4, 0.7], [0.2, 0.5, 0.6]]
    assert metrics.lca(Z) == pytest.approx(1.25 / 3, abs=1e-12)
    assert metrics.lca([[0.3], [0.5]]) == pytest.approx(0.4)   # beta = 0: Z_0 alone
    assert metrics.all_metrics(R, B, Z)["LCA2"] == pytest.approx(1.25 / 3, abs=1e-12)
    assert "LCA2" not in metrics.all_metrics(R, B)
    with pytest.raises(ValueError, match="T x"):
        metrics.lca([0.1, 0.2])
