"""``locrob bench bound``: the certified upper bound's cost per point against sampling and
search, and its tightness (upper / lower) per radius, in one run."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from locrob import markdown
from locrob.alpha.bound import upper_bounds
from locrob.alpha.bounds import alpha_bounds
from locrob.alpha.estimate import alpha_lim, as_points
from locrob.alpha.result import running_max
from locrob.alpha.settings import resolve
from locrob.bench.bound_floor import reached_floor
from locrob.sources import load_dataset

RADII = (1e-4, 1e-3, 1e-2, 0.05, 0.25, 1.0)
TARGETS = {1e-3: "<= 1.5", 0.05: "<= 10"}  # on the trained small-cnn
TARGETED = "small-cnn"


@dataclass
class BoundBench:
    """One model: seconds per point of each method, and per radius the lower (search) and
    upper curves with the global product bound."""

    model: str
    points: int
    seconds_per_point: dict[str, float]
    radii: list[float]
    lower: list[float]
    upper: list[float]
    intervals: list[float]  # the upper bound without the linear pass
    global_bound: float
    # at the targets' radii, the bound from the ranges points of the lower side's region
    # reach (the Jacobian step's own share of the gap: bench/bound_floor.py)
    floor: dict[float, float]


def _models() -> dict[str, nn.Module]:
    """The digits small-cnn trained for 10 epochs (seconds), and PreActResNet18 with random
    weights (the bound's cost does not depend on the weights)."""
    from locrob.contract import TrainConfig
    from locrob.sources import load_model
    from locrob.training import train

    trained = train("small-cnn", "digits", config=TrainConfig(epochs=10)).model
    torch.manual_seed(0)
    resnet = load_model("preact-resnet18", num_classes=10, in_channels=3)
    return {"small-cnn (trained, digits)": trained, "preact-resnet18 (random)": resnet}


def bench_bound(
    points: int = 10, draws: int = 100, radii: Sequence[float] = RADII
) -> list[BoundBench]:
    """Each model on the first ``points`` digits training images (L2, softmax): the bound, the
    sampling at ``draws`` draws and the search, timed on the same points and radii; and the
    bound without its linear pass (intervals only)."""
    data = load_dataset("digits")
    x = data.train_x[:points]
    settings = resolve(None, list(radii))
    rows = []
    for name, model in _models().items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # noise-floor notes at the smallest radius
            both = alpha_bounds(model.eval(), x, list(radii), n_draws=draws, device="cpu")
            sampled = alpha_lim(model, x, list(radii), n_draws=draws, device="cpu")
        start = time.perf_counter()
        intervals = upper_bounds(model, as_points(x, settings), settings, linear=False)
        seconds = {
            "bound": both.upper.seconds / points,
            "intervals only": (time.perf_counter() - start) / points,
            f"sample ({draws} draws)": sampled.seconds / points,
            "search": both.lower.seconds / points,
        }
        floor = {}
        if name.startswith(TARGETED):
            for radius in set(TARGETS) & set(radii):
                k = list(radii).index(radius)
                # where the lower side's best ratio is: the model's most sensitive region
                worst = int(both.lower.per_point[k].argmax())
                one = as_points(x[worst : worst + 1], settings)
                floor[radius] = reached_floor(model, one, radius, settings)
        rows.append(
            BoundBench(
                name,
                points,
                seconds,
                list(radii),
                both.lower.curve.tolist(),
                both.upper.curve.tolist(),
                running_max(intervals.per_point.amax(dim=1)).tolist(),
                both.upper.extra["global_bound"],
                floor,
            )
        )
    return rows


def bound_table(rows: Sequence[BoundBench]) -> str:
    """Two Markdown tables: cost per point, then tightness per radius ("reached ranges": the
    bound from the ranges that points of the lower side's region reach, over the lower side:
    what the Jacobian step leaves of the gap with exact pre-activation intervals, about)."""
    methods = list(rows[0].seconds_per_point) if rows else []
    cost = markdown.table(
        ["model", *(f"{m} s/point" for m in methods), "bound / sampling"],
        (
            [
                r.model,
                *(f"{r.seconds_per_point[m]:.3g}" for m in methods),
                f"{r.seconds_per_point['bound'] / r.seconds_per_point[methods[2]]:.2f}x",
            ]
            for r in rows
        ),
    )
    tight = markdown.table(
        [
            "model",
            "r",
            "lower (search)",
            "upper",
            "upper / lower",
            "intervals only / lower",
            "global / upper",
            "reached ranges / lower",
            "target",
        ],
        (
            [
                r.model,
                f"{radius:g}",
                f"{low:.4g}",
                f"{high:.4g}",
                f"{high / low:.3g}",
                f"{plain / low:.3g}",
                f"{r.global_bound / high:.3g}",
                f"{r.floor[radius] / low:.3g}" if radius in r.floor else "",
                TARGETS.get(radius, "") if r.model.startswith(TARGETED) else "",
            ]
            for r in rows
            for radius, low, high, plain in zip(r.radii, r.lower, r.upper, r.intervals, strict=True)
        ),
    )
    return cost + "\n" + tight
