"""``local-robustness``: the alpha_lim(F, r) curve of the paper (Definition 1, Fig. 5).

Measured on the first ``max_examples`` images of ``split`` (the training set by default: the
paper's domain R is the training examples). The curve is stored in the report; the summary
gives alpha at chosen radii, the largest value and the area under the curve, all lower bounds;
with ``bound=True`` also the certified upper bound at the same radii and the gap upper / lower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from locrob.alpha.estimate import alpha_lim
from locrob.alpha.settings import PRESETS
from locrob.contract import EvaluationContext
from locrob.data.images import SPLITS, ImageData
from locrob.errors import check
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import Metric, MetricResult

DEFAULT_POINTS = 100
# the summary's values at a radius: the sampled lower value, the certified upper bound, and
# upper over lower
SIDES = ("alpha", "alpha_upper", "alpha_gap")


def alpha_key(r: float, side: str = "alpha") -> str:
    """The summary key of ``side`` (one of :data:`SIDES`) at radius ``r``: ``alpha@0.5``."""
    return f"{side}@{r:g}"


def alpha_side(key: str) -> tuple[str, float] | None:
    """The side and radius a summary key names (:func:`alpha_key` undone), or None for a key
    of another kind."""
    side, _, r = key.partition("@")
    try:
        radius = float(r)
    except ValueError:
        return None
    return (side, radius) if side in SIDES and alpha_key(radius, side) == key else None


@dataclass
class LocalRobustness(Metric):
    """alpha_lim(F, r) over radii; ``None`` settings come from ``preset`` or the defaults.

    ``preset`` is ``"paper"`` (the paper's 100 points x 1000 Gaussian draws) or
    ``"authors-code"`` (the authors' ``r_alpha.py``: 1000 points x 100 uniform draws); in both,
    the radii, norms, clamp and denominator are ``r_alpha.py``'s, which the paper does not state
    (:func:`locrob.alpha.settings.resolve` says where each comes from).
    """

    name = "local-robustness"
    shardable = True  # the sampling's (point, draw) pairs split over the ranks
    preset: str | None = None
    radii: list[float] | None = None
    norm: str | float = "l2"  # "l2", "inf", or 2
    output: str = "softmax"
    method: str = "sample"
    max_examples: int | None = None
    n_draws: int | None = None
    noise: str | None = None
    directions: str | None = None
    clamp: tuple[float, float] | None = (0.0, 1.0)  # null: no box
    denominator: str = "effective"
    forward_dtype: str = "float32"
    compile: str = "auto"  # torch.compile of the forward pass: "on", "off", or on long GPU runs
    # images per forward pass; None: the fastest, timed (fp32 rounding may then differ by run)
    chunk_size: int | None = None
    split: str = "train"
    at: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    bound: bool = False  # also the certified upper bound: alpha_upper@r, alpha_gap@r

    def __post_init__(self) -> None:
        check(self.split in SPLITS, self.name, f"split must be one of {', '.join(SPLITS)}")
        check(
            self.preset is None or self.preset in PRESETS,
            self.name,
            f"unknown preset {self.preset!r}",
        )

    def options(self) -> dict[str, Any]:
        """The settings given, for the estimator; without a preset, 100 points by default."""
        max_examples = self.max_examples
        if max_examples is None and not self.preset:
            max_examples = DEFAULT_POINTS
        given = {
            "norm": self.norm,
            "output": self.output,
            "method": self.method,
            "max_examples": max_examples,
            "n_draws": self.n_draws,
            "noise": self.noise,
            "directions": self.directions,
            "forward_dtype": self.forward_dtype,
            "compile": self.compile,
            "chunk_size": self.chunk_size,
        }
        given = {k: v for k, v in given.items() if v is not None}
        return {**given, "clamp": self.clamp, "denominator": self.denominator}

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        x, _ = data.split(self.split)
        common = {
            "preset": self.preset,
            "device": context.device,
            "seed": context.seed,
            "shard": self.shard(context),
            **self.options(),
        }
        result = alpha_lim(model, x, self.radii, **common)
        summary = {alpha_key(r): result.alpha_at(r) for r in self.at}
        summary.update(alpha_max=float(result.curve[-1]), auc=result.auc())
        details = result.to_dict()
        if self.bound:
            upper = alpha_lim(model, x, self.radii, **{**common, "method": "bound"})
            for r in self.at:
                high, low = upper.alpha_at(r), result.alpha_at(r)
                summary[alpha_key(r, "alpha_upper")] = high
                summary[alpha_key(r, "alpha_gap")] = high / low if low > 0 else float("inf")
            details["upper"] = upper.to_dict()
        return self.result(summary, **details)


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("local-robustness", LocalRobustness)
