"""The evaluation runner: checks the metrics against their hook spec, calls each in turn and
collects one report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from locrob import distributed, hookspecs, plugins
from locrob.configurable import instantiate
from locrob.contract import DEFAULT_DATA_DIR, EvaluationContext, MetricResult
from locrob.data.images import ImageData
from locrob.errors import LocrobError
from locrob.metrics.base import Metric
from locrob.models.probe import check_model
from locrob.report import Report, environment
from locrob.runtime import eval_mode, on_device, resolve_device
from locrob.sources import (
    as_module,
    data_options,
    load_dataset,
    load_model,
    model_info,
    warn_if_untrained,
)


def make_metrics(
    metrics: Sequence[str | Metric], options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Metric]:
    """Instantiate metrics from names (with ``options[name]``) or ready instances."""
    if not metrics:
        raise LocrobError("no metric requested; name at least one (like 'clean')")
    return instantiate(metrics, options, plugins.registries().metrics, Metric)


def as_data(
    data: ImageData | str | tuple[Any, Any], data_dir: str | Path | None = None
) -> ImageData:
    """An :class:`ImageData` from itself, a dataset spec (its files under ``data_dir``), or
    ``(images, labels)``.

    ``(images, labels)`` becomes a data set whose train and test splits are both those arrays.
    """
    if isinstance(data, ImageData):
        return data
    if isinstance(data, str):
        return load_dataset(data, data_dir=data_dir)
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        return ImageData("arrays", x, y, x, y)
    raise LocrobError(
        f"data must be an ImageData, a dataset name or (images, labels), got {type(data).__name__}"
    )


def measure(
    metric: Metric, model: nn.Module, data: ImageData, context: EvaluationContext
) -> MetricResult:
    """One metric's result. In a run split over processes, a shardable metric measures on
    every rank (its tallies summed); any other measures on rank 0 alone, with a warning, and
    its result (or its error) is sent to the other ranks."""
    if context.world_size > 1 and not metric.shardable:
        if context.rank == 0:
            warnings.warn(
                f"metric '{metric.name}' does not declare itself shardable: it runs on rank 0 "
                f"alone while {context.world_size - 1} other process(es) wait",
                stacklevel=2,
            )
        single = dataclasses.replace(context, rank=0, world_size=1)
        return distributed.from_rank_zero(lambda: measure(metric, model, data, single))
    result = metric.measure(model=model, data=data, context=context)
    if not isinstance(result, MetricResult) or result.name != metric.name:
        raise LocrobError(
            f"metric '{metric.name}' returned no result under its own name "
            "(use self.result(summary, **details))"
        )
    if result.split is None:  # a metric that recorded its split itself knows it best
        result.split = metric.measured_split(context)
    return result


def _sha256(tensors: Sequence[torch.Tensor]) -> str:
    """The SHA-256 of the tensors' bytes, in order."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _fingerprint(
    model: nn.Module, data: ImageData, planned: Report, metrics: Sequence[Metric]
) -> dict[str, Any]:
    """What a run measures, for the ranks of a group to compare: digests of the weights and
    of the data's arrays (the same name and shape may hold other images), the plan's data and
    settings, and each metric's settings."""
    plan = {
        "model": {**planned.model, "weights": _sha256(list(model.state_dict().values()))},
        "data": {
            **planned.dataset,
            "arrays": _sha256([data.train_x, data.train_y, data.test_x, data.test_y]),
        },
        "split": planned.split,
        "n_examples": planned.n_examples,
        # not the device: each rank has its own
        **{k: v for k, v in planned.settings.items() if k != "device"},
        "metrics": {m.name: m.settings() for m in metrics},
    }
    return json.loads(json.dumps(plan, default=str))


def planned_report(
    model: nn.Module | str, data: ImageData, context: EvaluationContext, name: str | None = None
) -> Report:
    """A run's report before it measures (no metrics yet): the model (a spec's
    :func:`~locrob.sources.model_info`, else its class), the data and examples, the settings
    and the environment. What makes a report comparable is known here, before any work."""
    info = {"spec": type(model).__name__, "name": type(model).__name__}
    if isinstance(model, str):
        info = model_info(model)
    return Report(
        model={**info, "name": name or info["name"]},
        dataset=data.describe(),
        split=context.split,
        n_examples=len(context.examples(data)[1]),
        metrics={},
        settings={
            "batch_size": context.batch_size,
            "seed": context.seed,
            "device": str(context.device),
            "world_size": context.world_size,
        },
        environment=environment(context.device),
    )


def evaluate(
    model: nn.Module | str,
    data: ImageData | str | tuple[Any, Any] = "digits",
    metrics: Sequence[str | Metric] = ("clean",),
    *,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    split: str = "test",
    max_examples: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    name: str | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
) -> Report:
    """Measure ``model`` on ``data`` with each metric and return one :class:`Report`.

    ``model`` is an ``nn.Module`` taking images in [0, 1], an ART PyTorch classifier, or a spec for
    :func:`locrob.load_model`; ``data`` an :class:`ImageData`, a spec for
    :func:`locrob.load_dataset`, or ``(images, labels)``. ``name`` labels the model in tables
    and plots. The model is moved to ``device`` and left there, in its original mode.
    ``data_dir`` is where a data set spec's files are, and where metrics reading files of
    their own find them (default ``data``).
    ``download`` lets a model source that can fetch missing weights (``robustbench:``) do so.
    """
    data = as_data(data, data_dir)
    shard = distributed.current()
    context = _context(shard, split, max_examples, batch_size, device, seed, data_dir)
    planned = planned_report(model, data, context, name)
    if isinstance(model, str):
        model = load_model(model, **data_options(model, data, download=download))
    model = as_module(model)
    active = make_metrics(metrics, metric_options)

    plugins.run_manager(hookspecs.EvaluationSpec, active)  # the check: hookspecs.py says why
    if context.world_size > 1:
        with distributed.failures_named(shard):
            fingerprint = _fingerprint(model, data, planned, active)
            distributed.check_same("model, data or settings", fingerprint)

    results, seconds = _measured(model, data, active, context, shard)
    warn_if_untrained(planned.model)  # after the run, beside its results (or not if it fails)
    return dataclasses.replace(planned, metrics=results, seconds=seconds)


def _context(
    shard: distributed.Shard,
    split: str,
    max_examples: int | None,
    batch_size: int,
    device: str | torch.device | None,
    seed: int,
    data_dir: str | Path | None,
) -> EvaluationContext:
    """The run's settings, checked, with this process's place in its group."""
    if max_examples is not None and max_examples < 1:
        raise LocrobError(f"max_examples must be at least 1, got {max_examples}")
    if batch_size < 1:
        raise LocrobError(f"batch_size must be at least 1, got {batch_size}")
    return EvaluationContext(
        resolve_device(device),
        split,
        batch_size,
        max_examples,
        seed,
        Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR,
        shard.rank,
        shard.world_size,
    )


def _measured(
    model: nn.Module,
    data: ImageData,
    active: Sequence[Metric],
    context: EvaluationContext,
    shard: distributed.Shard,
) -> tuple[dict[str, MetricResult], float]:
    """Each metric's result, the model checked first on the device in eval mode, and the
    seconds from the check's end."""
    with on_device(model, context.device), eval_mode(model):
        check_model(model, context.examples(data)[0], data.num_classes, data.name, context.device)
        start = time.perf_counter()
        with distributed.failures_named(shard):
            results = {metric.name: measure(metric, model, data, context) for metric in active}
    return results, round(time.perf_counter() - start, 3)
