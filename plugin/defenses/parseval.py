"""``parseval``: Parseval networks (Cisse et al. 2017), as the Laplacian-networks authors ran them.

* After every optimizer step, each conv/linear weight reshaped to (out, -1) is pulled towards
  a Parseval tight frame: W <- (1 + beta) W - beta W W^T W, on all rows or on a random
  fraction ``rows`` of them (Cisse et al. sample rows to save time). Batch norm is untouched.
* Conv kernels are scaled by 1 / sqrt(2 k_h k_w + 1) in the forward pass (the authors'
  ``Parseval_Conv2d``), here as a ``torch.nn.utils.parametrize`` parametrization; the
  retraction acts on the underlying weight, as in their code.
* Residual merges become convex combinations (0.5 / 0.5 at first), projected back onto the
  simplex after every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from locrob.contract import TrainingContext
from locrob.defenses.base import Defense
from locrob.errors import check
from locrob.hookspecs import RegisterDefense, hookimpl
from locrob.models.merges import ConvexMerge, Sum, project_to_simplex
from locrob.runtime import mix_seed


class KernelScale(nn.Module):
    """The parametrization ``weight -> weight * scale``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.scale


def retract(w: torch.Tensor, beta: float, rows: torch.Tensor | None = None) -> None:
    """One Parseval step on the rows of the 2-D ``w`` (all, or the ``rows`` given), in place."""
    part = w if rows is None else w[rows]
    updated = torch.addmm(part, part @ part.T, part, beta=1 + beta, alpha=-beta)
    if rows is None:
        w.copy_(updated)
    else:
        w[rows] = updated


@dataclass
class Parseval(Defense):
    """Parseval retraction, kernel scaling and convex residual merges."""

    name = "parseval"
    beta: float = 0.01
    rows: float = 1.0
    kernel_scaling: bool = True
    convex_merges: bool = True
    _weights: list = field(default_factory=list, init=False, repr=False)
    _merges: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        check(self.beta > 0, self.name, f"beta must be > 0, got {self.beta}")
        check(0 < self.rows <= 1, self.name, f"rows must be a fraction in (0, 1], got {self.rows}")

    @hookimpl
    def prepare_model(self, model: nn.Module) -> None:
        for module in list(model.modules()):
            if self.kernel_scaling and isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                scale = KernelScale(1 / math.sqrt(2 * kh * kw + 1))
                parametrize.register_parametrization(module, "weight", scale)
            if self.convex_merges and isinstance(getattr(module, "merge", None), Sum):
                module.merge = ConvexMerge()
        self._merges = [m for m in model.modules() if isinstance(m, ConvexMerge)]
        self._weights = [
            p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith("merge.weight")
        ]

    @hookimpl
    @torch.no_grad()
    def after_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, context: TrainingContext
    ) -> None:
        # rows drawn from (seed, step) alone: a resumed run samples the same rows
        generator = torch.Generator().manual_seed(mix_seed(context.config.seed, context.step))
        for weight in self._weights:
            w = weight.view(weight.shape[0], -1)
            rows = None
            if self.rows < 1:
                count = max(1, math.ceil(self.rows * len(w)))
                rows = torch.randperm(len(w), generator=generator)[:count].to(w.device)
            retract(w, self.beta, rows)
        if self._merges:  # all merges in one projection: a few kernels, whatever the depth
            weights = [merge.weight for merge in self._merges]
            projected = project_to_simplex(torch.stack(weights))
            for weight, row in zip(weights, projected, strict=True):
                weight.copy_(row)


@hookimpl
def register_defenses(register: RegisterDefense) -> None:
    register("parseval", Parseval)
