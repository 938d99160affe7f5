"""The reference network: an MLP with Glorot-uniform weights and zero biases (GEM model/common.py)."""
from __future__ import annotations

import torch
from torch import nn


def xavier_init(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def mlp(sizes: list[int], xavier: bool = True) -> nn.Sequential:
    """Linear layers of `sizes` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    if xavier:
        xavier_init(net)
    return net


def mlp_layers(net: nn.Module) -> list[nn.Linear] | None:
    """net's Linear layers if net is exactly Linear (ReLU Linear)* as mlp() builds it, else None.

    Lets the evaluator compute such a net with its own matmuls (methods/protocol.py) while refusing anything
    else (other activations, dropout, Linear subclasses) rather than computing it wrongly.
    """
    mods = list(net) if type(net) is nn.Sequential else []
    if len(mods) % 2 == 0:
        return None
    if all(type(m) is nn.Linear for m in mods[::2]) and all(type(m) is nn.ReLU for m in mods[1::2]):
        return mods[::2]
    return None


def flat_grad(params) -> torch.Tensor:
    """All parameter gradients as one vector (zeros where a parameter has none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def assign_flat_grad(params, flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n
