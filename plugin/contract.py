"""The contract between locrob and its plugins: the types the hooks pass and return.

A plugin imports this module (and :mod:`locrob.hookspecs`, which only names the hooks), never
a runner: the evaluation and training runners depend on the contract, not the other way round.
Of locrob it imports only the two leaf modules every layer shares, :mod:`locrob.errors` and
:mod:`locrob.jsonable` (and, for type checkers alone, :class:`~locrob.data.images.ImageData`,
whose module imports nothing of ours but the errors).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

from locrob.errors import LocrobError, check
from locrob.jsonable import jsonable

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

    from locrob.data.images import ImageData

T_contra = TypeVar("T_contra", contravariant=True)

DEFAULT_DATA_DIR = Path("data")


OBSERVER = "__locrob_observer__"


def observer(hook: Callable[..., None]) -> Callable[..., None]:
    """Mark a forward hook that only watches: it returns None and changes no tensor (a
    defense recording activations for its loss). The certified bound reads the model's
    layers, not its hooks, and refuses a model with any hook not so marked."""
    setattr(hook, OBSERVER, True)
    return hook


def split_setting(settings: Mapping[str, Any]) -> str | None:
    """The split a metric chose for itself (its ``split`` setting), if it has one."""
    own = settings.get("split")
    return own if isinstance(own, str) else None


@dataclass
class EvaluationContext:
    """Settings shared by every metric of one evaluation run.

    The metric measures the first ``max_examples`` images of ``split`` (all where None), in
    batches of ``batch_size`` on ``device``; its random draws derive from ``seed``.
    ``data_dir`` is the run's data folder (``--data-dir``): metrics that read files of their
    own (CIFAR-10-C) look there unless an option of theirs names another folder. A run split
    over a torch.distributed group gives a shardable metric its ``rank`` of ``world_size``
    (:mod:`locrob.distributed`); every other metric runs with rank 0 of 1.
    """

    device: torch.device
    split: str = "test"
    batch_size: int = 256
    max_examples: int | None = None
    seed: int = 0
    data_dir: Path = DEFAULT_DATA_DIR
    rank: int = 0
    world_size: int = 1

    def examples(
        self, data: ImageData, split: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``max_examples`` images and labels of ``split`` (the run's where None)."""
        x, y = data.split(split or self.split)
        if self.max_examples is not None:
            x, y = x[: self.max_examples], y[: self.max_examples]
        return x, y


@dataclass
class TrainConfig:
    """Optimization settings (defaults: the authors' recipe scaled to the embedded data)."""

    epochs: int = 10
    batch_size: int = 100
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_drop: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train", f"epochs must be at least 1, got {self.epochs}")
        check(
            self.batch_size >= 1, "train", f"batch size must be at least 1, got {self.batch_size}"
        )
        check(self.lr > 0, "train", f"learning rate must be positive, got {self.lr}")
        check(0 <= self.momentum < 1, "train", f"momentum must be in [0, 1), got {self.momentum}")
        check(
            self.weight_decay >= 0, "train", f"weight decay must be >= 0, got {self.weight_decay}"
        )
        check(0 < self.lr_drop <= 1, "train", f"lr_drop must be in (0, 1], got {self.lr_drop}")

    @classmethod
    def authors(cls, seed: int = 0) -> TrainConfig:
        """The Laplacian-networks authors' CIFAR-10 recipe: 100 epochs at 0.1, then 0.001."""
        return cls(epochs=100, batch_size=100, lr=0.1, seed=seed)

    @property
    def drop_epoch(self) -> int:
        """The epoch at which the learning rate is multiplied by ``lr_drop``."""
        return self.epochs // 2 if self.epochs > 1 else self.epochs


@dataclass
class TrainingContext:
    """What the lifecycle hooks see of the run; ``epoch`` and ``step`` advance as it goes."""

    config: TrainConfig
    device: torch.device
    num_classes: int
    epoch: int = 0
    step: int = 0


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


Labelled = list[tuple[str, MetricResult]]
"""Several models' results of one metric, each with the model's label, in report order."""


@dataclass(frozen=True)
class Presentation:
    """How reports show one metric: a figure and a Markdown table of several models' results.

    Registered under the metric's name; either part may be None (no figure, no table).
    """

    figure: Callable[[Labelled], Figure] | None = None
    table: Callable[[Labelled], str] | None = None


class ModelSource(Protocol):
    """Builds a model from the part of a spec after the colon (``checkpoint:<path>``)."""

    def __call__(self, arg: str | None = None, **options: Any) -> nn.Module: ...


class DatasetSource(Protocol):
    """Loads a data set from the part of a spec after the colon (``npz:<path>``)."""

    def __call__(self, arg: str | None, *, data_dir: Path, download: bool) -> ImageData: ...


class Register(Protocol[T_contra]):
    """The callback a registration hook receives: ``register(name, obj)`` adds ``obj`` to one
    registry under ``name`` (:mod:`locrob.hookspecs` names one per registry)."""

    def __call__(self, name: str, obj: T_contra, /) -> None: ...
