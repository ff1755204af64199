"""torchattacks, wrapped once: attacks by name, with the input range checked.

Its traps, handled here: torchattacks does not check that inputs lie in [0, 1] (normalized
inputs are silently clamped), it reads the model's device when the attack is built, and it
switches the model to eval mode during the attack (restoring it afterwards).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from locrob.data.images import check_images
from locrob.errors import LocrobError

ATTACKS = {("pgd", "inf"): "PGD", ("pgd", "l2"): "PGDL2"}


def make_attack(model: nn.Module, name: str, **kwargs: Any) -> Any:
    """A torchattacks attack by class name (``"PGD"``, ``"PGDL2"``, ``"FGSM"``, ...) on ``model``.

    Build it once the model is on its device: torchattacks reads the device here.
    """
    import torchattacks

    cls = getattr(torchattacks, name, None)
    if not isinstance(cls, type) or not issubclass(cls, torchattacks.attack.Attack):
        known = sorted(
            n
            for n in dir(torchattacks)
            if isinstance(getattr(torchattacks, n), type)
            and issubclass(getattr(torchattacks, n), torchattacks.attack.Attack)
            and n not in ("Attack", "MultiAttack", "VANILA")
        )
        raise LocrobError(f"unknown torchattacks attack '{name}'; known: {', '.join(known)}")
    try:
        return cls(model, **kwargs)
    except TypeError as err:
        raise LocrobError(f"bad options for torchattacks.{name}: {err}") from None


def pgd(
    model: nn.Module, eps: float, step: float, steps: int, norm: str, random_start: bool = True
) -> Any:
    """Projected gradient descent (Madry et al.) in L-inf or L2, from torchattacks."""
    return make_attack(
        model, ATTACKS[("pgd", norm)], eps=eps, alpha=step, steps=steps, random_start=random_start
    )


def run_attack(attack: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Adversarial images for (x, y), after checking the range torchattacks assumes."""
    return attack(check_images(x, "attack inputs", uint8=False), y)
