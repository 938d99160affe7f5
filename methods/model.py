"""The reference network: an MLP with Glorot-uniform weights and zero biases (GEM model/common.py), or another
paper's initialisation where its protocol names one (`model.init`)."""
from __future__ import annotations

import torch
from torch import nn


def xavier_init(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def truncated_normal_init(module: nn.Module, std: float = 0.1, bias: float = 0.1) -> None:
    """A-GEM's TF1 network (model/model.py weight_variable / bias_variable): every weight from
    tf.truncated_normal_initializer(stddev=std), a normal redrawn outside two standard deviations, and every
    bias the constant `bias`. Weights are i.i.d., so TF's [in, out] layout and torch's [out, in] agree."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            nn.init.constant_(layer.bias, bias)


def init_mlp(net: nn.Module, init: dict | None) -> None:
    """Initialise net's Linear layers as the protocol's `model.init` says (None = GEM's Glorot uniform)."""
    spec = dict(init or {"name": "xavier_uniform"})
    name = spec.pop("name")
    if name == "xavier_uniform" and not spec:
        xavier_init(net)
    elif name == "truncated_normal":
        truncated_normal_init(net, **spec)
    else:  # the schema stops an unknown name at parse time; kept for direct callers
        raise ValueError(f"model.init {name!r} with {spec or 'no parameters'}: use xavier_uniform (no parameters) "
                         f"or truncated_normal (std, bias)")


def mlp(sizes: list[int], xavier: bool = True, init: dict | None = None) -> nn.Sequential:
    """Linear layers of `sizes` with ReLU between them (none after the last), initialised by `init`
    (protocol data, see init_mlp); xavier=False keeps torch's default initialisation."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    if xavier:
        init_mlp(net, init)
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


def flatten_parameters(module: nn.Module) -> nn.Parameter:
    """Re-home module's parameters as views of one flat Parameter, and their gradients as views of its .grad
    (zeroed, so backward adds into it in place).

    An optimiser over the flat Parameter then runs each of its elementwise ops once over all layers instead of
    once per tensor: the same operations on the same numbers, so bitwise the per-tensor update, only faster.
    """
    params = list(module.parameters())
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset:offset + n].view_as(p)
        p.grad = flat.grad[offset:offset + n].view_as(p)
        offset += n
    return flat


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The tensors as one vector, in order (the layout of a flat gradient)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def flat_grad(params) -> torch.Tensor:
    """All parameter gradients as one vector (zeros where a parameter has none)."""
    return flatten([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])


def assign_flat_grad(params, flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def _layer_inputs_and_logits(layers: list[nn.Linear], x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The MLP's forward as nn.Linear and ReLU compute it (addmm, relu): each layer's input, and the logits."""
    inputs, h = [x], x
    for i, lin in enumerate(layers):
        h = torch.addmm(lin.bias, h, lin.weight.t())
        if i < len(layers) - 1:
            h = torch.relu(h)
            inputs.append(h)
    return inputs, h


def _ce_logit_grad(logits: torch.Tensor, y: torch.Tensor, mean_over: int | None,
                   item_weights: torch.Tensor | None = None) -> torch.Tensor:
    """d loss / d logits through autograd's own log-softmax and NLL backward kernels: the cross-entropy summed
    over rows and divided by `mean_over` (a mean), or, with mean_over None, weighted by `item_weights`."""
    logp = torch.log_softmax(logits, 1)
    one = torch.ones((), dtype=logits.dtype, device=logits.device)
    if mean_over is None:
        d = torch.ops.aten.nll_loss_backward(item_weights, logp, y, None, 0, -100, one)
    else:
        total = torch.tensor(float(mean_over), dtype=logits.dtype, device=logits.device)
        d = torch.ops.aten.nll_loss_backward(one, logp, y, None, 1, -100, total)
    return torch.ops.aten._log_softmax_backward_data(d, logp, 1, logits.dtype)


@torch.no_grad()
def ce_grads(layers: list[nn.Linear], x: torch.Tensor, y: torch.Tensor,
             item_weights: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The gradient of F.cross_entropy(mlp(x), y) for the MLP whose Linear layers are given, in `parameters()`
    order (W1, b1, W2, b2, ...); with `item_weights` w, of (w * cross_entropy(..., reduction="none")).sum().

    Bitwise what `loss.backward()` leaves in .grad: the same kernels on the same layouts (addmm forward,
    log-softmax and NLL backward, threshold_backward, grad^T @ input for weights, a column sum for biases;
    tests/test_baselines.py), without building and walking autograd's graph, which at batch size 1 costs
    more than the arithmetic (bench/bench_train.py).
    """
    inputs, logits = _layer_inputs_and_logits(layers, x)
    d = _ce_logit_grad(logits, y, None if item_weights is not None else y.numel(), item_weights)
    grads: list[torch.Tensor] = []
    for i in range(len(layers) - 1, -1, -1):
        grads.append(d.sum(0))
        grads.append(d.t().mm(inputs[i]))
        if i > 0:
            d = torch.ops.aten.threshold_backward(d.mm(layers[i].weight), inputs[i], 0)
    return grads[::-1]


@torch.no_grad()
def sgd_step(params: list[torch.Tensor], grads: list[torch.Tensor], lr: float) -> None:
    """torch.optim.SGD's step without momentum or weight decay: p -= lr * g, the same add_ on each tensor
    (one foreach call dispatching them all)."""
    torch._foreach_add_(params, grads, alpha=-lr)


@torch.no_grad()
def per_task_ce_grads(layers: list[nn.Linear], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[k, P]: for each of k tasks, the gradient of the mean cross-entropy on its n examples x[t] [n, D],
    y[t] [n], in `parameters()` order, for the MLP whose Linear layers (`mlp_layers`) are given.

    One batched forward over all k*n examples and one hand-written backward calling the kernels autograd
    calls (log-softmax and NLL backward, threshold_backward, mm; bmm for the per-task weight gradients), so
    every row is bitwise the per-task `loss.backward()` loop of the GEM reference (tests/test_gem.py); faster
    than `torch.func.vmap` on the MER protocol's short rows, about as fast on long ones (bench/bench_gem.py).
    """
    k, n = y.shape
    inputs, logits = _layer_inputs_and_logits(layers, x.reshape(k * n, -1))
    d = _ce_logit_grad(logits, y.reshape(-1), n)     # each row's mean over its own task's n examples
    blocks: list[torch.Tensor] = []
    for i in range(len(layers) - 1, -1, -1):
        dk = d.view(k, n, -1)
        blocks.append(dk.sum(1))
        blocks.append(torch.bmm(dk.transpose(1, 2), inputs[i].view(k, n, -1)).view(k, -1))
        if i > 0:
            d = torch.ops.aten.threshold_backward(d.mm(layers[i].weight), inputs[i], 0)
    return torch.cat(blocks[::-1], 1)
