"""The one interface every method implements, and the context the protocol hands it."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .model import mlp, mlp_layers


@dataclass(frozen=True)
class Context:
    """Facts about the run a method may need; hyper-parameters live in the method's own `Hparams`."""

    n_inputs: int
    n_outputs: int
    n_tasks: int
    n_layers: int
    n_hiddens: int
    memory: int            # total episodic memory of this grid cell (0 for memory-free methods)
    batch_size: int
    samples_per_task: int
    device: torch.device
    init: dict | None = None  # the protocol's model.init (None = GEM's Glorot uniform), see model.init_mlp

    def mlp_sizes(self) -> list[int]:
        return [self.n_inputs] + [self.n_hiddens] * self.n_layers + [self.n_outputs]


class Learner(nn.Module):
    """A continual learner: sees each batch once, with its task id, and predicts for any task.

    Subclasses define a nested dataclass `Hparams` (names as in the reference code), `observe` and,
    unless they use the default single MLP `self.net`, `forward`.
    """

    @dataclass(frozen=True)
    class Hparams:
        lr: float

    def __init__(self, ctx: Context, hp) -> None:
        super().__init__()
        self.ctx = ctx
        self.hp = hp

    @classmethod
    def check_memory(cls, hp, memory: int, n_tasks: int) -> None:
        """Raise one line if this grid cell's memory cannot hold what the method needs (checked at parse time,
        methods.config.check_hparams, so a too-small memory stops the workflow instead of failing its jobs)."""

    def build_net(self) -> nn.Module:
        return mlp(self.ctx.mlp_sizes(), init=self.ctx.init)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:  # noqa: ARG002 - single head ignores t
        return self.net(x)

    def observe(self, x: torch.Tensor, t: int, y: torch.Tensor) -> None:
        raise NotImplementedError

    def eval_mlp(self, t: int) -> list[nn.Linear] | None:
        """The Linear layers (ReLU between them) of an MLP computing exactly `self(x, t)`, or None.

        Opt-in for the evaluator's fused path (methods/protocol.py), which folds each task's pixel map into
        the first layer and scores all tasks in one GEMM. The default covers the default forward, self.net(x);
        a subclass that overrides forward gets the plain per-task evaluation unless it overrides this too.
        """
        if type(self).forward is not Learner.forward or not isinstance(getattr(self, "net", None), nn.Module):
            return None
        return mlp_layers(self.net)

    def end_task(self, t: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Called once after task t's last batch with the task's training data (x, y), before the next task.

        For protocols that act at task boundaries (A-GEM fills its episodic memory here); a no-op by default.
        """

    def info(self) -> dict:
        """Method-specific facts for the run record (e.g. samples stored, projections made)."""
        return {}
