"""Hook specifications: the contract between locrob and its plugins.

The types the hooks pass and return live in :mod:`locrob.contract`; this module names the
hooks and imports nothing that runs them. Three families:

* :class:`RegistrationSpec` — called once, when the plugins load, to fill the registries of
  metrics, defenses, model sources, dataset sources, corruptions and presentations (each
  ``register_X`` fills the registry ``X``). A plugin module (the target of an entry point in
  the ``locrob`` group) implements any of these.
* :class:`TrainingSpec` — implemented by :class:`locrob.Defense` objects. The trainer
  registers every defense active in a run on that run's plugin manager and calls these hooks;
  combining defenses is activating several of them, which is why training needs a manager:
  several defenses implement the same lifecycle hook and each call reaches all of them.
* :class:`EvaluationSpec` — implemented by :class:`locrob.Metric` objects. A metric has one
  hook, so evaluation fans out through no manager: the runner calls each metric's ``measure``
  itself, one at a time in the order asked, so that a failure names its metric and each
  metric's work can be timed (and split over processes) on its own. The run's metrics are
  still checked against this spec by a pluggy manager, exactly as defenses are, so a
  misspelled or unmarked hook is an error rather than a metric that silently measures nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import pluggy

from locrob.contract import DatasetSource, ModelSource, Presentation, Register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from locrob.contract import EvaluationContext, MetricResult, TrainingContext
    from locrob.corruptions.base import Corruption
    from locrob.data.images import ImageData
    from locrob.defenses.base import Defense
    from locrob.metrics.base import Metric

PROJECT = "locrob"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# the callback each registration hook receives, one per registry
RegisterMetric: TypeAlias = Register["type[Metric]"]
RegisterDefense: TypeAlias = Register["type[Defense]"]
RegisterModelSource: TypeAlias = Register[ModelSource]
RegisterDatasetSource: TypeAlias = Register[DatasetSource]
RegisterCorruption: TypeAlias = Register["Corruption"]
RegisterPresentation: TypeAlias = Register[Presentation]


class RegistrationSpec:
    """Hooks that fill the registries. Each receives a ``register(name, obj)`` callback."""

    @hookspec
    def register_metrics(self, register: RegisterMetric) -> None:
        """Register metric classes: ``register("clean", CleanAccuracy)``.

        A metric class subclasses :class:`locrob.Metric`; its constructor's keyword
        arguments are the metric's settings.
        """

    @hookspec
    def register_defenses(self, register: RegisterDefense) -> None:
        """Register defense classes: ``register("parseval", Parseval)``.

        A defense class subclasses :class:`locrob.Defense`; its constructor's keyword
        arguments are the defense's parameters.
        """

    @hookspec
    def register_model_sources(self, register: RegisterModelSource) -> None:
        """Register model sources, resolved from specs ``NAME`` or ``NAME:ARG``.

        ``register("small-cnn", source)`` where ``source(arg, **options) -> nn.Module``;
        ``arg`` is the part after the colon (``checkpoint:<path>``) or ``None``.
        """

    @hookspec
    def register_dataset_sources(self, register: RegisterDatasetSource) -> None:
        """Register dataset sources, resolved from specs ``NAME`` or ``NAME:ARG``.

        ``register("cifar10", source)`` where
        ``source(arg, *, data_dir, download) -> ImageData``.
        """

    @hookspec
    def register_corruptions(self, register: RegisterCorruption) -> None:
        """Register corruptions: ``register("fog", Corruption("fog", apply, params))``.

        A :class:`locrob.corruptions.Corruption` pairs ``apply(images, parameters, generator)``
        with its parameters per preset (``cifar``, ``imagenet``, ...) and severity 1-5; the
        base class checks the images and severity and seeds the generator.
        """

    @hookspec
    def register_presentations(self, register: RegisterPresentation) -> None:
        """Register how reports show a metric, under the metric's name:
        ``register("noise", Presentation(figure=accuracy_against_snr))``.

        A :class:`locrob.contract.Presentation` holds a figure and a Markdown table of several
        models' results; ``locrob evaluate --out`` and ``locrob plot`` draw them.
        """


class TrainingSpec:
    """The training lifecycle, called by the trainer for every active defense."""

    @hookspec
    def prepare_model(self, model: nn.Module, context: TrainingContext) -> None:
        """Change the model in place before the optimizer is built (layers, merges, hooks)."""

    @hookspec
    def transform_batch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, context: TrainingContext
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Return a replacement training batch (adversarial examples), or None.

        At most one active defense may implement this hook; the trainer refuses a
        combination with two, since their order would silently decide the result.
        """

    @hookspec
    def loss_terms(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        logits: torch.Tensor,
        context: TrainingContext,
    ) -> dict[str, torch.Tensor] | None:
        """Return named scalar loss terms to add to the cross-entropy (already weighted)."""

    @hookspec
    def after_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, context: TrainingContext
    ) -> None:
        """Act on the weights after each optimizer step (retractions, projections)."""

    @hookspec
    def on_epoch_end(
        self, model: nn.Module, stats: dict[str, Any], context: TrainingContext
    ) -> None:
        """Observe (or add to) the epoch's statistics before they are recorded."""


class EvaluationSpec:
    """Evaluation: each active metric measures the model on the data."""

    @hookspec
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        """Measure the model on ``context.split`` of ``data`` (or on the metric's own ``split``
        setting, where it has one) and return a typed result."""
