"""``local-robustness``: the alpha_lim(F, r) curve of the paper (Definition 1, Fig. 5).

Measured on the first ``n_points`` images of ``split`` (the training set by default: the
paper's domain R is the training examples). The curve is stored in the report; the summary
gives alpha at chosen radii, the largest value and the area under the curve, all lower bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from locrob.alpha.estimate import alpha_lim
from locrob.alpha.settings import PRESETS
from locrob.configurable import check
from locrob.data.images import SPLITS, ImageData
from locrob.evaluation import EvaluationContext
from locrob.hookspecs import Register, hookimpl
from locrob.metrics.base import Metric, MetricResult, line_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported where drawn: it costs 0.2 s

DEFAULT_POINTS = 100


@dataclass
class LocalRobustness(Metric):
    """alpha_lim(F, r) over radii; ``None`` settings come from ``preset`` or the defaults."""

    name = "local-robustness"
    preset: str | None = None
    radii: list[float] | None = None
    norm: str | float = "l2"  # "l2", "inf", or 2
    output: str = "softmax"
    method: str = "sample"
    n_points: int | None = None
    n_draws: int | None = None
    noise: str | None = None
    directions: str | None = None
    clamp: tuple[float, float] | None = (0.0, 1.0)  # null: no box
    denominator: str = "effective"
    forward_dtype: str = "float32"
    split: str = "train"
    at: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])

    def __post_init__(self) -> None:
        check(self.split in SPLITS, self.name, f"split must be one of {', '.join(SPLITS)}")
        check(
            self.preset is None or self.preset in PRESETS,
            self.name,
            f"unknown preset {self.preset!r}",
        )

    def options(self) -> dict[str, Any]:
        """The settings given, for the estimator; without a preset, 100 points by default."""
        n_points = self.n_points if self.n_points is not None or self.preset else DEFAULT_POINTS
        given = {
            "norm": self.norm,
            "output": self.output,
            "method": self.method,
            "n_points": n_points,
            "n_draws": self.n_draws,
            "noise": self.noise,
            "directions": self.directions,
            "forward_dtype": self.forward_dtype,
        }
        given = {k: v for k, v in given.items() if v is not None}
        return {**given, "clamp": self.clamp, "denominator": self.denominator}

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        x, _ = data.split(self.split)
        result = alpha_lim(
            model,
            x,
            self.radii,
            preset=self.preset,
            device=context.device,
            seed=context.seed,
            **self.options(),
        )
        summary = {f"alpha@{r:g}": result.alpha_at(r) for r in self.at}
        summary.update(alpha_max=float(result.curve[-1]), auc=result.auc())
        return self.result(summary, **result.to_dict())

    @classmethod
    def plot(cls, results: list[tuple[str, MetricResult]]) -> Figure:
        """alpha_lim against r, one line per model, as in the paper's Fig. 5."""
        first = results[0][1].details
        settings = first.get("settings", {})
        return line_figure(
            results,
            "radii",
            "curve",
            xlabel="radius r",
            ylabel=r"$\alpha_{lim}(F, r)$ (lower bound)",
            title=f"local robustness: {settings.get('norm', '')} norm, "
            f"{first.get('method', '')}, {settings.get('n_points', '')} points x "
            f"{settings.get('n_draws', '')} draws",
            linewidth=1.8,
        )


@hookimpl
def register_metrics(register: Register) -> None:
    register("local-robustness", LocalRobustness)
