"""``locrob.alpha_bounds``: alpha_lim from both sides, a lower and a certified upper curve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from locrob.alpha.estimate import alpha_lim
from locrob.alpha.result import AlphaResult
from locrob.distributed import SINGLE, Shard
from locrob.errors import LocrobError


@dataclass
class AlphaBounds:
    """alpha_lim(F, r) between two curves: ``lower`` is attained (by the perturbation it
    reports), ``upper`` holds for every perturbation of the region (certified)."""

    lower: AlphaResult
    upper: AlphaResult

    @property
    def gap(self) -> torch.Tensor:
        """upper / lower per radius: 1 where the interval is closed (inf where lower is 0)."""
        return self.upper.curve.double() / self.lower.curve.double()

    def alpha_at(self, r: float) -> tuple[float, float]:
        """The interval (lower, upper) at the largest radius <= ``r``."""
        return self.lower.alpha_at(r), self.upper.alpha_at(r)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lower": self.lower.to_dict(),
            "upper": self.upper.to_dict(),
            "gap": self.gap.tolist(),
        }

    def __str__(self) -> str:
        rows = ["r            lower        upper    upper/lower"]
        for r, lo, hi, gap in zip(
            self.lower.radii.tolist(),
            self.lower.curve.tolist(),
            self.upper.curve.tolist(),
            self.gap.tolist(),
            strict=True,
        ):
            rows.append(f"{r:<10.4g} {lo:>10.4g} {hi:>12.4g} {gap:>14.4g}")
        return "\n".join(rows)


def alpha_bounds(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    radii: Sequence[float] | None = None,
    *,
    lower: str = "search",
    preset: str | None = None,
    device: str | torch.device | None = None,
    shard: Shard = SINGLE,
    **options: Any,
) -> AlphaBounds:
    """alpha_lim over the points ``x`` from both sides: the ``lower`` estimator's curve
    (``"search"`` or ``"sample"``) and the certified upper bound (``method="bound"``), with
    the same settings (:func:`locrob.alpha_lim`'s ``options``)."""
    if lower not in ("search", "sample"):
        raise LocrobError(f"lower must be 'search' or 'sample', not {lower!r}")
    if "method" in options:
        raise LocrobError("alpha_bounds runs both methods: give lower=, not method=")
    common = {"preset": preset, "device": device, "shard": shard, **options}
    return AlphaBounds(
        alpha_lim(model, x, radii, method=lower, **common),
        alpha_lim(model, x, radii, method="bound", **common),
    )
