"""How reports are shown: each metric's figure and Markdown table, drawn from its results.

The computation modules and the metric classes draw nothing: a presentation plugin registers,
under a metric's name, a :class:`locrob.contract.Presentation` (``register_presentations``),
and this module draws every metric of some reports that has one (one line per model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from locrob import plugins
from locrob.atomic import atomic_path, write_text
from locrob.report import Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported where drawn: it costs 0.2 s

    from locrob.contract import Labelled


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    return Path(path)


def labelled_results(reports: Sequence[Report]) -> dict[str, Labelled]:
    """Metric name -> (model label, result) of every report that has it, for the metrics with a
    registered presentation."""
    presentations = plugins.registries().presentations
    names = dict.fromkeys(name for report in reports for name in report.metrics)
    return {
        name: [(r.label, r.metrics[name]) for r in reports if name in r.metrics]
        for name in names
        if name in presentations
    }


def save_plots(
    reports: Sequence[Report], out_dir: str | Path, replaces: Sequence[str] = ()
) -> list[Path]:
    """One PNG per metric whose presentation has a figure, with every report that has it on the
    same figure.

    ``replaces`` names figures locrob wrote into ``out_dir`` before: those not drawn again are
    deleted, except those of the reports' metrics that have no registered presentation now
    (still theirs: their plugin may not be installed). Returns the figures written and those
    kept.
    """
    presentations = plugins.registries().presentations
    written = []
    for name, labelled in labelled_results(reports).items():
        figure = presentations.get(name).figure
        if figure is not None:
            written.append(save_figure(figure(labelled), Path(out_dir) / f"{name}.png"))
    undrawable = {f"{name}.png" for report in reports for name in report.metrics} - {
        f"{name}.png" for name in presentations
    }
    kept = []
    for figure in set(replaces) - {path.name for path in written}:
        path = Path(out_dir) / figure
        if path.name != figure or path.suffix != ".png":  # a hand-edited report: touch nothing
            continue
        if figure not in undrawable:
            path.unlink(missing_ok=True)
        elif path.exists():
            kept.append(path)
    return written + sorted(kept)


def save_tables(reports: Sequence[Report], out_dir: str | Path) -> list[Path]:
    """One Markdown file per metric whose presentation has a table (``corruptions.md``:
    Table 2)."""
    presentations = plugins.registries().presentations
    written = []
    for name, labelled in labelled_results(reports).items():
        table = presentations.get(name).table
        if table is not None:
            path = Path(out_dir) / f"{name}.md"
            write_text(path, table(labelled))
            written.append(path)
    return written
