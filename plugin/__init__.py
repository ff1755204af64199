"""locrob: local robustness (alpha_lim), corruption robustness and defenses, as plugins.

The public API is a handful of guessable functions::

    import locrob
    data = locrob.load_dataset("digits")
    run = locrob.train("small-cnn", data, config=locrob.TrainConfig(epochs=3))
    report = locrob.evaluate(run.model, data, metrics=["clean"])
    foggy = locrob.corrupt(data.test_x[:8].float() / 255, "fog", severity=3)

Plugins implement the hooks of :mod:`locrob.hookspecs`, marked with :data:`locrob.hookimpl`,
and take the types those hooks pass from :mod:`locrob.contract`. The runners (``evaluate``,
``train``, ``TrainResult``) load on first use, so a plugin that imports the contract, or
``locrob`` itself, never loads them.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("locrob")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from locrob.alpha.bounds import AlphaBounds, alpha_bounds
from locrob.alpha.estimate import alpha_lim
from locrob.alpha.layerwise import LayerwiseResult, layerwise_alpha
from locrob.alpha.result import AlphaResult
from locrob.contract import (
    EvaluationContext,
    MetricResult,
    Presentation,
    TrainConfig,
    TrainingContext,
)
from locrob.corruptions import Corruption, corrupt
from locrob.data.images import ImageData
from locrob.defenses.base import Defense
from locrob.errors import LocrobError
from locrob.hookspecs import hookimpl
from locrob.metrics.base import Metric
from locrob.models.checkpoint import load_checkpoint, save_checkpoint
from locrob.pair_distances import Separation, separation
from locrob.plugins import registries
from locrob.report import Report, load_report, markdown_table
from locrob.sources import load_dataset, load_model

if TYPE_CHECKING:
    from locrob.evaluation import evaluate
    from locrob.training import TrainResult, train

# public names whose modules load on first access (PEP 562): name -> module
_LAZY = {
    "evaluate": "locrob.evaluation",
    "train": "locrob.training",
    "TrainResult": "locrob.training",
}


def __getattr__(name: str) -> Any:
    """Import a runner's public name on first access and keep it."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the runners' among them before they load."""
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AlphaBounds",
    "AlphaResult",
    "Corruption",
    "Defense",
    "EvaluationContext",
    "ImageData",
    "LayerwiseResult",
    "LocrobError",
    "Metric",
    "MetricResult",
    "Presentation",
    "Report",
    "Separation",
    "TrainConfig",
    "TrainResult",
    "TrainingContext",
    "__version__",
    "alpha_bounds",
    "alpha_lim",
    "corrupt",
    "evaluate",
    "hookimpl",
    "layerwise_alpha",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "load_report",
    "markdown_table",
    "registries",
    "save_checkpoint",
    "separation",
    "train",
]
