"""RobustBench's ``benchmark`` beside locrob's metrics, on the same model and examples.

Its traps, handled here: ``benchmark(threat_model="corruptions")`` crashes on CIFAR-10 and
writes ``model_info/`` into the working directory, so :func:`benchmark_alongside` evaluates
corruptions through ``load_cifar10c`` and locrob's ``corruptions`` metric instead; and its
Linf / L2 branch calls AutoAttack with arguments the installed ``pyautoattack`` dropped, so its
steps run here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from locrob.adapters.robustbench import import_robustbench
from locrob.errors import LocrobError

if TYPE_CHECKING:
    from locrob.data.images import ImageData
    from locrob.report import Report


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """Which of RobustBench's benchmarks: its data set and threat model (``Linf``, ``L2`` or
    ``corruptions``), the attacks' ``eps``, and how many of its first test images."""

    dataset: str = "cifar10"
    threat_model: str = "Linf"
    eps: float | None = 8 / 255
    max_examples: int = 100


def benchmark_alongside(
    model: nn.Module,
    metrics: Sequence[Any] = ("clean", "local-robustness"),
    benchmark: Benchmark = Benchmark(),
    *,
    data_dir: str | Path = "data",
    batch_size: int = 100,
    device: str | torch.device | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    name: str | None = None,
    download: bool = False,
) -> Report:
    """RobustBench's own evaluation and locrob's metrics on the same model and examples;
    the keywords are :func:`locrob.evaluate`'s.

    The examples are RobustBench's: the first ``benchmark.max_examples`` test images its loader
    returns from ``data_dir`` (CIFAR files absent there are an error, unless ``download=True``).
    For ``Linf`` / ``L2``, clean and AutoAttack (standard) accuracy at ``eps``,
    as RobustBench's ``benchmark`` measures them; for ``corruptions`` locrob's ``corruptions``
    metric reads the CIFAR-10-C files through ``load_cifar10c`` (RobustBench's own path crashes
    on CIFAR-10). One report holds both, with RobustBench's ``ModelInfo`` fields under
    ``report.model["robustbench"]``.
    """
    from locrob.contract import MetricResult
    from locrob.evaluation import evaluate
    from locrob.runtime import resolve_device
    from locrob.sources import as_module

    dataset, eps = benchmark.dataset, benchmark.eps
    bench_ds, threat = _benchmark_ids(dataset, benchmark.threat_model)
    model, dev = as_module(model), resolve_device(device)
    data = _benchmark_examples(dataset, bench_ds, benchmark.max_examples, data_dir, download)
    metrics, options = _metrics(metrics, metric_options, threat, dataset, eps)
    report = evaluate(
        model,
        data,
        metrics,
        metric_options=options,
        batch_size=batch_size,
        device=dev,
        seed=seed,
        name=name,
        data_dir=data_dir,
    )
    if threat not in ATTACKED_THREATS:
        details = {"threat_model": threat, "n_examples": len(data.test_y)}
        summary = _corruptions_accuracy(report)
        report.metrics["robustbench"] = MetricResult("robustbench", summary, details)
    summary = report.metrics["robustbench"].summary
    report.model["robustbench"] = _model_info(report, model, dataset, eps, summary)
    return report


ATTACKED_THREATS = ("Linf", "L2")  # RobustBench measures these with AutoAttack


def _benchmark_ids(dataset: str, threat_model: str) -> tuple[Any, str]:
    """RobustBench's ``BenchmarkDataset`` and threat model name for the names given, checked."""
    enums = import_robustbench("robustbench.model_zoo.enums")
    try:
        bench_ds, threat = enums.BenchmarkDataset(dataset), enums.ThreatModel(threat_model)
    except ValueError as err:
        raise LocrobError(
            f"RobustBench benchmarks no {dataset}/{threat_model} ({err}); data sets: "
            f"{', '.join(d.value for d in enums.BenchmarkDataset)}; threat models: Linf, L2, "
            "corruptions"
        ) from None
    return bench_ds, threat.value


def _benchmark_examples(
    dataset: str, bench_ds: Any, max_examples: int, data_dir: str | Path, download: bool
) -> ImageData:
    """RobustBench's first test images and labels as ImageData (8-bit, exactly)."""
    from locrob.data.cifar import cifar_split
    from locrob.data.images import ImageData

    data_mod = import_robustbench("robustbench.data")
    if dataset in ("cifar10", "cifar100"):  # RobustBench's loader would always download
        cifar_split(dataset, data_dir, train=False, download=download)
    x, y = data_mod.load_clean_dataset(
        bench_ds, max_examples, str(data_dir), data_mod.PREPROCESSINGS[None]
    )
    images = (x * 255).round().to(torch.uint8)  # ToTensor of 8-bit images: exact
    return ImageData(dataset, images, y.long(), images, y.long())


def _metrics(
    metrics: Sequence[Any],
    metric_options: dict[str, dict[str, Any]] | None,
    threat: str,
    dataset: str,
    eps: float | None,
) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The metrics of the run and their options: RobustBench's own first (the ``robustbench``
    metric for Linf / L2; for corruptions, ``corruptions`` reading ``<dataset>-c``), then the
    ones asked for."""
    metrics, options = list(metrics), dict(metric_options or {})
    if threat in ATTACKED_THREATS:
        if eps is None:
            raise LocrobError(f"the {threat} benchmark needs eps")
        options["robustbench"] = {
            **options.get("robustbench", {}),
            "threat_model": threat,
            "eps": eps,
        }
        return (metrics if "robustbench" in metrics else ["robustbench", *metrics]), options
    if "corruptions" not in metrics:
        metrics.append("corruptions")
    options["corruptions"] = {"source": f"{dataset}-c", **options.get("corruptions", {})}
    return metrics, options


def _corruptions_accuracy(report: Report) -> dict[str, float]:
    """The clean and corrupted accuracy locrob's ``corruptions`` metric measured."""
    result = report.metrics["corruptions"].summary
    return {
        "clean_accuracy": 1 - result["clean_error"],
        "corruptions_accuracy": result["accuracy"],
    }


def _model_info(
    report: Report, model: nn.Module, dataset: str, eps: float | None, summary: dict[str, float]
) -> dict[str, Any]:
    """RobustBench's ``ModelInfo`` fields for the model, filled from the report."""
    info_cls = import_robustbench("robustbench.utils").ModelInfo
    fields = [f.name for f in dataclasses.fields(info_cls)]
    info = {
        "name": report.model.get("name"),
        "dataset": dataset,
        "architecture": type(model).__name__,
        "eps": eps if "autoattack_accuracy" in summary else None,
        "clean_acc": round(100 * summary["clean_accuracy"], 2),
        "autoattack_acc": f"{100 * summary['autoattack_accuracy']:.2f}"
        if "autoattack_accuracy" in summary
        else None,
        "corruptions_acc": f"{100 * summary['corruptions_accuracy']:.2f}"
        if "corruptions_accuracy" in summary
        else None,
        "number_forward_passes": 1,
    }
    return {k: info.get(k) for k in fields}


def autoattack_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> tuple[float, float]:
    """The Linf / L2 branch of RobustBench's ``benchmark``: its ``clean_accuracy`` before and
    after AutoAttack (standard). ``benchmark`` itself passes ``log_path`` and ``bs``, which the
    installed AutoAttack (``pyautoattack``) no longer accepts, so the same steps run here."""
    from locrob.runtime import eval_mode, on_device

    utils = import_robustbench("robustbench.utils")
    attack_cls = import_robustbench("autoattack").AutoAttack
    with on_device(model, device), eval_mode(model):
        clean = utils.clean_accuracy(model, x, y, batch_size=batch_size, device=device)
        adversary = attack_cls(
            model, norm=norm, eps=eps, version="standard", device=device, seed=seed
        )
        x_adv, _ = adversary.run_standard_evaluation(
            x.to(device), y.to(device), batch_size=batch_size
        )
        robust = utils.clean_accuracy(model, x_adv, y, batch_size=batch_size, device=device)
    return float(clean), float(robust)
