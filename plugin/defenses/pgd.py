"""``pgd``: PGD adversarial training (Madry et al.) through the torchattacks adapter.

Each training batch is replaced by its PGD adversarial examples (eps = 8/255, step 2/255,
10 steps, random start, L-inf by default). As in torchattacks, the examples are generated
with the model in eval mode and the mode is restored for the update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from locrob.contract import TrainingContext
from locrob.defenses.base import Defense
from locrob.errors import check
from locrob.hookspecs import RegisterDefense, hookimpl


@dataclass
class PGDTraining(Defense):
    """Train on PGD adversarial examples of each batch."""

    name = "pgd"
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10
    norm: str = "inf"
    random_start: bool = True

    def __post_init__(self) -> None:
        check(self.eps >= 0, self.name, f"eps must be >= 0, got {self.eps}")
        check(self.step > 0, self.name, f"step must be > 0, got {self.step}")
        check(
            self.steps >= 1,
            self.name,
            f"steps must be an integer >= 1, got {self.steps}",
        )
        check(
            self.norm in ("inf", "l2"), self.name, f"norm must be 'inf' or 'l2', got {self.norm!r}"
        )

    @hookimpl
    def transform_batch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: TrainingContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from locrob.adapters.torchattacks import pgd, run_attack

        # Built per batch, never cached: a torchattacks attack binds the model and reads its
        # device when built, so a cached one would attack a stale model once this defense
        # trains another model or the model moves; building costs a few attribute
        # assignments against the `steps` forward and backward passes of the attack.
        attack = pgd(model, self.eps, self.step, self.steps, self.norm, self.random_start)
        return run_attack(attack, x, y).detach(), y


@hookimpl
def register_defenses(register: RegisterDefense) -> None:
    register("pgd", PGDTraining)
