"""What every metric shares: the result type and the base class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from locrob.configurable import Configurable
from locrob.errors import LocrobError
from locrob.jsonable import jsonable

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def split_setting(settings: Mapping[str, Any]) -> str | None:
    """The split a metric chose for itself (its ``split`` setting), if it has one."""
    own = settings.get("split")
    return own if isinstance(own, str) else None


@dataclass
class MetricResult:
    """A metric's outcome.

    ``summary`` holds the scalars that tables and leaderboards show (``{"accuracy": 0.97}``);
    ``details`` holds anything else JSON-able (curves, per-class numbers). ``split`` is the
    split of the data set measured (``"train"`` or ``"test"``), recorded by the evaluation
    runner; ``None`` means the split of the report holding the result.
    """

    name: str
    summary: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    split: str | None = None

    def __post_init__(self) -> None:
        where = f"metric '{self.name}'"
        self.summary = jsonable(dict(self.summary), f"{where} summary")
        bad = [
            k for k, v in self.summary.items() if v is not None and not isinstance(v, (int, float))
        ]
        if bad:
            raise LocrobError(f"{where} summary values must be numbers; '{bad[0]}' is not")
        self.details = jsonable(dict(self.details), f"{where} details")
        self.settings = jsonable(dict(self.settings), f"{where} settings")

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "details": self.details,
            "settings": self.settings,
            "split": self.split,
        }

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> MetricResult:
        return cls(
            name,
            dict(data["summary"]),
            dict(data.get("details", {})),
            dict(data.get("settings", {})),
            data.get("split"),
        )


class Metric(Configurable):
    """Base of metric plugins.

    A subclass is a ``@dataclass`` whose fields are its settings, sets ``name``, and
    implements the evaluation hook::

        @hookimpl
        def measure(self, model, data, context) -> MetricResult: ...

    ``context.examples(data)`` gives the images and labels to measure on, and
    ``context.batches(data)`` iterates them as float batches on the device. A metric that
    measures a split of its own choosing instead (``local-robustness`` and ``separation``:
    the training set) names it in a ``split`` setting, which the runner records in its result.
    """

    kind: ClassVar[str] = "metric"

    def result(self, summary: dict[str, float], **details: Any) -> MetricResult:
        """A :class:`MetricResult` carrying this metric's name and settings."""
        return MetricResult(self.name, summary, details, self.settings())

    @classmethod
    def plot(cls, results: list[tuple[str, MetricResult]]) -> Figure | None:
        """A figure of several models' results (label, result), or None for no figure."""
        return None

    @classmethod
    def table(cls, results: list[tuple[str, MetricResult]]) -> str | None:
        """A Markdown table of several models' results (label, result), or None for none."""
        return None


def lines_figure(
    lines: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    **style: Any,
) -> Figure:
    """One line per (label, xs, ys), the legend outside the axes on the right."""
    from matplotlib.figure import Figure

    # outside the axes the legend can hide no line, however many models there are;
    # the constrained layout makes room for it
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for label, xs, ys in lines:
        ax.plot(xs, ys, label=label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig


def line_figure(
    results: list[tuple[str, MetricResult]],
    x: str,
    y: str,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    **style: Any,
) -> Figure:
    """One line per model (label, result) of ``details[y]`` against ``details[x]``."""
    lines = [(label, result.details[x], result.details[y]) for label, result in results]
    return lines_figure(lines, xlabel=xlabel, ylabel=ylabel, title=title, **style)
