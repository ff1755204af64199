"""``laplacian``: Laplacian networks (Lassance et al. 2018), after the authors' ``gsp.py``.

At every ReLU output l of a training batch: flatten the activations, row-normalize them,
W = N N^T (cosine similarity, full graph), L = diag(W 1) - W, and the smoothness of the class
indicator Y (one-hot labels) is s_l = trace(Y^T L^m Y). The loss term is the mean over
consecutive ReLUs of |s_l - s_{l-1}|, weighted by gamma^m: it keeps the distances between
examples of distinct classes from changing abruptly across layers.

The default is gamma = 0.001, m = 2; the authors used gamma = 0.01 for PreActResNet18 (17 ReLUs)
at batch 100, and that is what to pass to reproduce their runs. The term grows like B^(m+1)
with the batch size B, and on a network with few ReLUs the mean spreads the whole drop of
smoothness from input to output over few differences: with their gamma, small-cnn (3 ReLUs)
collapses to chance on digits, while gamma = 0.001 trains to 97.8 % (10 epochs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from locrob.contract import TrainingContext, observer
from locrob.defenses.base import Defense
from locrob.errors import LocrobError, check
from locrob.hookspecs import RegisterDefense, hookimpl

EPS = 1e-12  # F.normalize's floor on a row norm


def cosine_graphs(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The cosine-similarity matrices (layers, B, B) of each layer's flattened batch.

    Taken from the Gram matrix A A^T, divided by the outer product of its diagonal's square
    roots: one matrix product per layer, with no normalized copy of the activations (and none
    of its backward). Norms are clamped at ``EPS`` as in ``F.normalize``, which also keeps the
    square root's gradient finite for an all-zero row.
    """
    grams = torch.stack([out.flatten(1) @ out.flatten(1).T for out in outputs])
    norms = grams.diagonal(dim1=1, dim2=2).clamp_min(EPS**2).sqrt()
    return grams / (norms[:, :, None] * norms[:, None, :])


def smoothness(graphs: torch.Tensor, labels: torch.Tensor, classes: int, m: int) -> torch.Tensor:
    """trace(Y^T L^m Y) for each graph of ``graphs`` (..., B, B), L = diag(W 1) - W."""
    degrees = graphs.sum(dim=-1, keepdim=True)
    y = F.one_hot(labels, classes).to(graphs.dtype)
    z = y
    for _ in range(m):
        z = degrees * z - graphs @ z  # L z without forming L
    return (y * z).sum(dim=(-2, -1))


@dataclass
class Laplacian(Defense):
    """Penalize changes of class-indicator smoothness between consecutive ReLU layers."""

    name = "laplacian"
    gamma: float = 0.001
    m: int = 2
    _outputs: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        check(self.gamma > 0, self.name, f"gamma must be > 0, got {self.gamma}")
        check(
            self.m >= 1,
            self.name,
            f"m must be an integer >= 1, got {self.m}",
        )

    @observer
    def _record(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if module.training:  # training batches only, not evaluation nor attack generation
            self._outputs.append(out)

    @observer
    def _clear(self, module: nn.Module, args: tuple) -> None:
        self._outputs.clear()  # one forward pass at a time: nothing piles up outside training

    @hookimpl
    def prepare_model(self, model: nn.Module) -> None:
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        if len(relus) < 2:
            raise LocrobError(
                f"laplacian needs at least two nn.ReLU modules in the model, found {len(relus)}"
            )
        model.register_forward_pre_hook(self._clear)
        for relu in relus:
            relu.register_forward_hook(self._record)

    @hookimpl
    def loss_terms(self, y: torch.Tensor, context: TrainingContext) -> dict[str, torch.Tensor]:
        s = smoothness(cosine_graphs(self._outputs), y, context.num_classes, self.m)
        self._outputs.clear()
        return {"laplacian": self.gamma**self.m * s.diff().abs().mean()}


@hookimpl
def register_defenses(register: RegisterDefense) -> None:
    register("laplacian", Laplacian)
