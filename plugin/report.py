"""Evaluation reports: versioned JSON (written atomically) and Markdown tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from locrob.atomic import write_text
from locrob.errors import LocrobError
from locrob.metrics.base import MetricResult, split_setting

SCHEMA = "locrob-report"
# 2: each metric's result records the split it measured (version 1 had only the report's)
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Report:
    """One model evaluated on one data set by several metrics.

    ``split`` is the evaluation's split; a metric that measured another one (``local-robustness``
    and ``separation`` measure the training set by default) records it in its result.
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
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in reports:
        values = [_cell(v) if (v := summary_value(r, m, k)) is not None else "" for m, k in columns]
        row = [r.label, str(r.dataset.get("name", "")), split_cell(r), str(r.n_examples), *values]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
