"""Gradient projections shared by GEM, A-GEM and TA-A-GEM."""
from __future__ import annotations

import torch


def agem_project(g: torch.Tensor, g_ref: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A-GEM (Chaudhry et al. 2019, eq. 11): if g.g_ref < 0, g - (g.g_ref / g_ref.g_ref) g_ref, else g.

    Returns (projected gradient, whether a projection happened).
    """
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g, False
    return g - (dot / torch.dot(g_ref, g_ref)) * g_ref, True
