"""``l2nn``: training an L2-nonexpansive network (Qian & Wegman, ICLR 2019).

The nonexpansive layers are the architecture (``--model l2nn``, :mod:`locrob.models.l2nn`);
this defense checks that the model is built of them only, and adds a margin-encouraging loss.
The authors' training code is not public; the loss chosen here is a hinge on the logit
margin, ``weight * mean(relu(margin - (z_y - max_{j != y} z_j)))``: since the network is
1-Lipschitz in L2, a logit margin m certifies robustness to L2 perturbations of norm
m / sqrt(2). The defaults (margin 0.1, weight 0.1) suit the small logits of a nonexpansive
network; on digits a margin of 1, or a weight of 1, stopped it from training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from locrob.defenses.base import Defense
from locrob.errors import LocrobError, check
from locrob.hookspecs import RegisterDefense, hookimpl
from locrob.models.l2nn import L2NN_LAYERS


def margin_hinge(logits: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """mean(relu(margin - (z_y - max_{j != y} z_j)))."""
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return F.relu(margin - (true - others)).mean()


@dataclass
class L2NNTraining(Defense):
    """Margin loss for an all-nonexpansive network."""

    name = "l2nn"
    margin: float = 0.1
    weight: float = 0.1

    def __post_init__(self) -> None:
        check(self.margin > 0, self.name, f"margin must be > 0, got {self.margin}")
        check(self.weight >= 0, self.name, f"weight must be >= 0, got {self.weight}")

    @hookimpl
    def prepare_model(self, model: nn.Module) -> None:
        leaves = [m for m in model.modules() if not list(m.children())]
        others = sorted({type(m).__name__ for m in leaves if not isinstance(m, L2NN_LAYERS)})
        if others:
            raise LocrobError(
                f"l2nn needs a network of nonexpansive layers (--model l2nn); this one has "
                f"{', '.join(others)}, which can expand distances"
            )

    @hookimpl
    def loss_terms(self, y: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"margin": self.weight * margin_hinge(logits, y, self.margin)}


@hookimpl
def register_defenses(register: RegisterDefense) -> None:
    register("l2nn", L2NNTraining)
