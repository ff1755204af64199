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
from locrob.metrics.base import MetricResult

SCHEMA = "locrob-report"
SCHEMA_VERSION = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Report:
    """One model evaluated on one data set by several metrics."""

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
            "metrics": {name: r.to_dict() for name, r in self.metrics.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise LocrobError("not a locrob report (no 'schema': 'locrob-report' field)")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise LocrobError(
                f"report schema version {data.get('schema_version')} is not {SCHEMA_VERSION}, "
                "the version this locrob reads"
            )
        return cls(
            model=data["model"],
            dataset=data["dataset"],
            split=data["split"],
            n_examples=data["n_examples"],
            metrics={k: MetricResult.from_dict(k, v) for k, v in data["metrics"].items()},
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


def markdown_table(reports: Sequence[Report]) -> str:
    """One row per report, one column per metric summary value (``clean accuracy``, ...)."""
    columns = summary_columns(reports)
    header = ["model", "dataset", "split", "n", *[f"{m} {k}" for m, k in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in reports:
        values = [_cell(v) if (v := summary_value(r, m, k)) is not None else "" for m, k in columns]
        row = [r.label, str(r.dataset.get("name", "")), r.split, str(r.n_examples), *values]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
