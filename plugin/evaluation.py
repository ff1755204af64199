"""The evaluation runner: activates metrics on a run-scoped plugin manager and collects a report."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy
import torch
from torch import nn

from locrob import hookspecs, plugins
from locrob.data.images import ImageData, batches, to_float
from locrob.errors import LocrobError
from locrob.metrics.base import Metric
from locrob.report import Report
from locrob.runtime import progress, resolve_device
from locrob.sources import data_options, load_dataset, load_model, model_info


@dataclass
class EvaluationContext:
    """Settings shared by every metric of one evaluation run."""

    device: torch.device
    split: str = "test"
    batch_size: int = 256
    max_examples: int | None = None
    seed: int = 0

    def examples(self, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels measured: the first ``max_examples`` of ``split``."""
        x, y = data.split(self.split)
        if self.max_examples is not None:
            x, y = x[: self.max_examples], y[: self.max_examples]
        return x, y

    def batches(
        self, data: ImageData, desc: str = ""
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The examples as float batches in [0, 1] on the device, with a progress bar."""
        x, y = self.examples(data)
        n_batches = -(-len(y) // self.batch_size)
        yield from progress(batches(x, y, self.batch_size, self.device), total=n_batches, desc=desc)

    def generator(self) -> torch.Generator:
        """A fresh generator seeded from ``seed``, on the device (for metrics that draw noise)."""
        return torch.Generator(self.device).manual_seed(self.seed)


@dataclass
class MetricRequest:
    """A metric by name with its options (``MetricRequest("clean")``)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def make_metrics(
    metrics: Sequence[str | Metric | MetricRequest],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Metric]:
    """Instantiate metrics from names (with ``options[name]``), requests or ready instances."""
    options = options or {}
    registry = plugins.registries().metrics
    made: list[Metric] = []
    for item in metrics:
        if isinstance(item, Metric):
            made.append(item)
            continue
        request = item if isinstance(item, MetricRequest) else MetricRequest(item)
        cls = registry.get(request.name)
        made.append(cls.create(**{**options.get(request.name, {}), **request.options}))
    unused = sorted(set(options) - {m.name for m in made})
    if unused:
        raise LocrobError(f"options given for metrics not evaluated: {', '.join(unused)}")
    names = [m.name for m in made]
    if len(set(names)) != len(names):
        raise LocrobError(f"a metric is listed twice: {', '.join(names)}")
    return made


@torch.no_grad()
def check_model(model: nn.Module, data: ImageData, context: EvaluationContext) -> None:
    """Run the model on two examples so a mismatch is one clear error, not a torch trace."""
    x = to_float(context.examples(data)[0][:2], context.device)
    try:
        out = model(x)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise LocrobError(
            f"the model fails on {data.name} images of shape {tuple(x.shape[1:])}: {first}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise LocrobError(
            f"the model must return one row of class scores per image: {len(x)} images gave {shape}"
        )
    if out.shape[1] < data.num_classes:
        raise LocrobError(
            f"the model scores {out.shape[1]} classes but {data.name} has {data.num_classes}"
        )


def evaluate(
    model: nn.Module | str,
    data: ImageData | str = "digits",
    metrics: Sequence[str | Metric | MetricRequest] = ("clean",),
    *,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    split: str = "test",
    max_examples: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Report:
    """Measure ``model`` on ``data`` with each metric and return one :class:`Report`.

    ``model`` is an ``nn.Module`` taking images in [0, 1], or a spec for
    :func:`locrob.load_model`; ``data`` an :class:`ImageData` or a spec for
    :func:`locrob.load_dataset`. ``name`` labels the model in tables and plots.
    """
    if isinstance(data, str):
        data = load_dataset(data)
    info = {"spec": type(model).__name__, "name": type(model).__name__}
    if isinstance(model, str):
        info = model_info(model)
        model = load_model(model, **data_options(model, data))
    if max_examples is not None and max_examples < 1:
        raise LocrobError(f"max_examples must be at least 1, got {max_examples}")
    if batch_size < 1:
        raise LocrobError(f"batch_size must be at least 1, got {batch_size}")
    context = EvaluationContext(resolve_device(device), split, batch_size, max_examples, seed)
    n_examples = len(context.examples(data)[1])
    active = make_metrics(metrics, metric_options)

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.EvaluationSpec)
    for metric in active:
        pm.register(metric, name=metric.name)

    model = model.to(context.device).eval()
    check_model(model, data, context)
    start = time.perf_counter()
    results = {r.name: r for r in pm.hook.measure(model=model, data=data, context=context)}
    missing = [m.name for m in active if m.name not in results]
    if missing:
        raise LocrobError(f"metric(s) {', '.join(missing)} returned no result under their own name")
    return Report(
        model={**info, "name": name or info["name"]},
        dataset=data.describe(),
        split=split,
        n_examples=n_examples,
        metrics={m.name: results[m.name] for m in active},
        settings={"batch_size": batch_size, "seed": seed, "device": str(context.device)},
        seconds=round(time.perf_counter() - start, 3),
    )
