"""Evaluation reports: versioned JSON (written atomically) and Markdown tables."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locrob import markdown
from locrob.atomic import write_text
from locrob.contract import MetricResult, split_setting
from locrob.errors import LocrobError

if TYPE_CHECKING:
    import torch

SCHEMA = "locrob-report"
# 2: each metric's result records the split it measured (version 1 had only the report's)
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
# what a run measured on, compared across reports; older reports record only locrob's version
ENVIRONMENT_FIELDS = ("locrob", "python", "torch", "numpy", "device", "threads")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Report:
    """One model evaluated on one data set by several metrics.

    ``split`` is the evaluation's split; a metric that measured another one (``local-robustness``
    and ``separation`` measure the training set by default) records it in its result.
    ``environment`` holds the versions, device and threads the run measured on
    (:func:`environment`); ``figures`` the figure files locrob wrote beside the saved report.
    """

    model: dict[str, Any]
    dataset: dict[str, Any]
    split: str
    n_examples: int
    metrics: dict[str, MetricResult]
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    created: str = field(default_factory=_now)
    locrob_version: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.locrob_version:
            from locrob import __version__

            self.locrob_version = __version__

    @property
    def label(self) -> str:
        """How the model is named in tables and plots."""
        return str(self.model.get("name") or self.model.get("spec", "model"))

    def split_of(self, metric: str) -> str:
        """The split ``metric`` measured: the one its result records, else the report's."""
        return self.metrics[metric].split or self.split

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "locrob_version": self.locrob_version,
            "created": self.created,
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "n_examples": self.n_examples,
            "settings": self.settings,
            "seconds": self.seconds,
            "environment": self.environment,
            "figures": self.figures,
            "metrics": {
                name: {**r.to_dict(), "split": self.split_of(name)}
                for name, r in self.metrics.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise LocrobError("not a locrob report (no 'schema': 'locrob-report' field)")
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise LocrobError(
                f"report schema version {version} is not one this locrob reads "
                f"({', '.join(map(str, READABLE_VERSIONS))})"
            )
        metrics = {k: MetricResult.from_dict(k, v) for k, v in data["metrics"].items()}
        if version == 1:
            _splits_from_settings(metrics)
        return cls(
            model=data["model"],
            dataset=data["dataset"],
            split=data["split"],
            n_examples=data["n_examples"],
            metrics=metrics,
            settings=data.get("settings", {}),
            seconds=data.get("seconds", 0.0),
            created=data["created"],
            locrob_version=data["locrob_version"],
            environment=data.get("environment", {}),
            figures=data.get("figures", []),
        )

    def save(self, out_dir: str | Path) -> Path:
        """Write ``report.json`` and ``report.md`` into ``out_dir``; returns the JSON path."""
        out = Path(out_dir)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        path = write_text(out / "report.json", text + "\n")
        write_text(out / "report.md", markdown_table([self]))
        return path


def _splits_from_settings(metrics: dict[str, MetricResult]) -> None:
    """Give version-1 results the split they measured: a metric with a ``split`` setting
    measured that one (its settings were recorded), the others the report's."""
    for result in metrics.values():
        result.split = split_setting(result.settings)


def load_report(path: str | Path) -> Report:
    """Read a report written by :meth:`Report.save` (a ``report.json`` or its directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LocrobError(
            f"report not found: '{path}'; write one with `locrob evaluate --out`"
        ) from None
    except json.JSONDecodeError as err:
        raise LocrobError(f"'{path}' is not valid JSON ({err.msg} at line {err.lineno})") from None
    try:
        return Report.from_dict(data)
    except LocrobError as err:
        raise LocrobError(f"'{path}': {err}") from None
    except (KeyError, TypeError, AttributeError) as err:
        raise LocrobError(
            f"'{path}' is a damaged locrob report ({type(err).__name__}: {err})"
        ) from None


def load_reports(paths: Sequence[str | Path]) -> tuple[list[tuple[Path, Report]], list[Path]]:
    """The reports at ``paths`` (``report.json`` files or their folders), each with its path, and
    the folders skipped for holding no report (``runs/*`` includes ``locrob plot``'s output)."""
    loaded, skipped = [], []
    for path in map(Path, paths):
        if path.is_dir() and not (path / "report.json").exists():
            skipped.append(path)
        else:
            loaded.append((path, load_report(path)))
    if not loaded:
        where = ", ".join(map(str, skipped)) or "no path given"
        raise LocrobError(f"no report.json in {where}; write one with `locrob evaluate --out`")
    return loaded, skipped


def saved_report(out_dir: str | Path) -> Report | None:
    """The report saved in ``out_dir``, or None where there is none."""
    path = Path(out_dir) / "report.json"
    return load_report(path) if path.exists() else None


# how a refusal names the identity fields that differ
_IDENTITY_WORDS = {
    "spec": "model",
    "name": "model label",
    "model": "model (its checkpoint's weights, or how it was made)",
    "dataset": "data set",
    "n_examples": "examples",
    "environment": "environment (versions, device or threads)",
    "locrob_version": "locrob version",
}


def identity(report: Report) -> dict[str, Any]:
    """What makes two reports measure the same: model, data, split, examples and seed, and
    what they were measured with (a report records one environment for all its metrics)."""
    return {
        "spec": report.model.get("spec"),
        "name": report.model.get("name"),
        "model": {k: v for k, v in report.model.items() if k != "name"},  # the label apart
        "dataset": report.dataset,
        "split": report.split,
        "n_examples": report.n_examples,
        "seed": report.settings.get("seed"),
        "environment": report.environment,
        "locrob_version": report.locrob_version,
    }


def check_same_subject(saved: Report, out_dir: str | Path, **expected: Any) -> None:
    """Refuse a run whose ``expected`` :func:`identity` fields differ from the report saved in
    ``out_dir``: its metrics cannot join that report."""
    saved_identity = identity(saved)
    differ = dict.fromkeys(
        _IDENTITY_WORDS.get(k, k) for k, v in expected.items() if saved_identity[k] != v
    )
    if differ:
        raise LocrobError(
            f"'{Path(out_dir) / 'report.json'}' is a report of {saved.label} on "
            f"{saved.dataset.get('name', '?')} ({saved.split}, {saved.n_examples} examples, "
            f"seed {saved_identity['seed']}), and this run differs in its {', '.join(differ)}; "
            "give another --out, or delete that report"
        )


def merge_saved(saved: Report | None, report: Report, out_dir: str | Path) -> Report:
    """``report`` with the metrics of ``saved`` (the report in ``out_dir``) it did not measure
    again, and the figures written for ``saved``; settings, seconds and environment are this
    run's. A report of another model or data is refused."""
    if saved is None:
        return report
    check_same_subject(saved, out_dir, **identity(report))
    metrics = {**saved.metrics, **report.metrics}
    return dataclasses.replace(report, metrics=metrics, figures=saved.figures)


def environment(device: torch.device) -> dict[str, Any]:
    """The versions, the device's name and the CPU threads a run measures with."""
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": _device_name(device),
        "threads": torch.get_num_threads(),
    }


def _device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "cpu"


def environment_differences(reports: Sequence[tuple[str | Path, Report]]) -> list[str]:
    """A sentence per :data:`ENVIRONMENT_FIELDS` field in which the named reports differ
    (a report that does not record a field is left out of its comparison)."""
    sentences = []
    for key in ENVIRONMENT_FIELDS:
        by_value: dict[str, list[str]] = {}
        for where, report in reports:
            recorded = {"locrob": report.locrob_version, **report.environment}
            if key in recorded:
                by_value.setdefault(str(recorded[key]), []).append(str(where))
        if len(by_value) > 1:
            values = "; ".join(f"{v} ({', '.join(names)})" for v, names in by_value.items())
            sentences.append(f"the reports were measured with different {key}: {values}")
    return sentences


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_columns(reports: Sequence[Report]) -> list[tuple[str, str]]:
    """Every (metric, summary key) of the reports, in first-seen order."""
    columns: list[tuple[str, str]] = []
    for report in reports:
        for name, result in report.metrics.items():
            for key in result.summary:
                if (name, key) not in columns:
                    columns.append((name, key))
    return columns


def summary_value(report: Report, metric: str, key: str) -> float | None:
    """One summary value of a report, or None where the report does not have it."""
    result = report.metrics.get(metric)
    return None if result is None else result.summary.get(key)


def split_cell(report: Report) -> str:
    """The split measured, or each split with its metrics: ``test: clean; train: separation``."""
    metrics_by_split: dict[str, list[str]] = {}
    for name in report.metrics:
        metrics_by_split.setdefault(report.split_of(name), []).append(name)
    if len(metrics_by_split) <= 1:
        return next(iter(metrics_by_split), report.split)
    return "; ".join(f"{split}: {', '.join(names)}" for split, names in metrics_by_split.items())


def markdown_table(reports: Sequence[Report]) -> str:
    """One row per report, one column per metric summary value (``clean accuracy``, ...)."""
    columns = summary_columns(reports)
    header = ["model", "dataset", "split", "n", *[f"{m} {k}" for m, k in columns]]
    rows = []
    for r in reports:
        values = [_cell(v) if (v := summary_value(r, m, k)) is not None else "" for m, k in columns]
        rows.append([r.label, str(r.dataset.get("name", "")), split_cell(r), r.n_examples, *values])
    return markdown.table(header, rows)
