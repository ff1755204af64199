"""The outcome of an alpha_lim estimate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AlphaResult:
    """An alpha_lim curve over radii: a **lower bound** on the true alpha_lim from sampling or
    search (``bound == "lower"``), or a certified **upper bound** (``method="bound"``).

    ``curve[k]`` is the running maximum of ``per_radius`` up to ``radii[k]`` (alpha_lim at r is a
    supremum over ||e|| < r, so it never decreases). ``per_point[k, i]`` is point i's own
    maximum ratio at ``radii[k]``; ``argmax_point[k]`` and ``perturbation[k]`` say where
    ``per_radius[k]`` was attained (the effective perturbation, after clamping).
    ``extra["noise_floor"]`` is the measured floating-point noise of F, and
    ``extra["noise_limited_radii"]`` the radii whose values sit within 100x of it. An upper
    bound has no perturbation (``perturbation`` is empty): it holds for all of them.
    """

    radii: torch.Tensor
    curve: torch.Tensor
    per_radius: torch.Tensor
    per_point: torch.Tensor
    argmax_point: torch.Tensor
    perturbation: torch.Tensor
    settings: dict[str, Any]
    method: str = "sample"
    sampling_curve: torch.Tensor | None = None
    evaluations: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    bound: str = "lower"

    def alpha_at(self, r: float) -> float:
        """The curve at the largest radius <= ``r`` (0 below the smallest radius)."""
        k = int(
            torch.searchsorted(
                self.radii, torch.tensor(float(r), dtype=self.radii.dtype), right=True
            )
        )
        return 0.0 if k == 0 else float(self.curve[k - 1])

    def auc(self) -> float:
        """Area under the curve over the radius range (trapezoidal rule)."""
        if len(self.radii) < 2:
            return 0.0
        return float(torch.trapezoid(self.curve.double(), self.radii.double()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (per-point values and perturbations are left out)."""
        data = {
            "bound": self.bound,
            "method": self.method,
            "radii": self.radii.tolist(),
            "curve": self.curve.tolist(),
            "per_radius": self.per_radius.tolist(),
            "argmax_point": self.argmax_point.tolist(),
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "settings": self.settings,
        }
        if self.sampling_curve is not None:
            data["sampling_curve"] = self.sampling_curve.tolist()
        return {**data, **self.extra}


def running_max(values: torch.Tensor) -> torch.Tensor:
    """Cumulative maximum along the first axis."""
    return torch.cummax(values, dim=0).values
