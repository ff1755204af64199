"""``separation``'s figure and table, and the curves of the paper's Figs. 1 and 3 for any
:class:`~locrob.pair_distances.Separation`: the fraction of distinct-class pairs that no
alpha-Lipschitz (Fig. 1) or alpha-robust (Fig. 3) function can separate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from locrob import markdown
from locrob.contract import Presentation
from locrob.hookspecs import RegisterPresentation, hookimpl
from locrob.pair_distances import DEFAULT_ALPHAS, DEFAULT_DS, Separation
from locrob.presentation.lines import lines_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported where drawn: it costs 0.2 s

    from locrob.contract import Labelled, MetricResult


def _curve_figure(lines: Sequence[tuple[str, list[float]]], xlabel: str, title: str) -> Figure:
    """Incompatible fraction against alpha (log scale), one line per (label, curve)."""
    fig = lines_figure(
        [(label, DEFAULT_ALPHAS, curve) for label, curve in lines],
        xlabel=xlabel,
        ylabel="fraction of distinct-class pairs incompatible",
        title=title,
        linewidth=1.8,
    )
    fig.axes[0].set_xscale("log")
    return fig


def lipschitz_figure(results: Sequence[tuple[str, Separation]]) -> Figure:
    """Fig. 1: fraction of distinct-class pairs incompatible with alpha-Lipschitz, per data set."""
    lines = [(label, result.lipschitz_curve()) for label, result in results]
    title = f"one-hot labels, {results[0][1].norm} norm (paper, Fig. 1)"
    return _curve_figure(lines, r"Lipschitz constant $\alpha$", title)


def robustness_figure(label: str, result: Separation, ds: Sequence[float] = DEFAULT_DS) -> Figure:
    """Fig. 3: fraction of pairs incompatible with alpha-robustness, one curve per d ~ 2r."""
    curves = result.robustness_curves(DEFAULT_ALPHAS, ds)
    # a curve is all zero when no distinct-class pair is closer than d: such curves coincide
    # on the axis, so their labels say why
    lines = [
        (f"d = {d:g}" + ("" if any(curve) else " (no pair closer)"), curve)
        for d, curve in zip(ds, curves, strict=True)
    ]
    title = f"{label}: {result.norm} norm, pairs closer than d (paper, Fig. 3)"
    return _curve_figure(lines, r"$\alpha$", title)


def figure(results: Labelled) -> Figure:
    """Fig. 1 with one line per report's data set."""
    return lipschitz_figure([(label, Separation.from_dict(r.details)) for label, r in results])


def _alphas(result: MetricResult) -> list[float]:
    """The alphas the metric summarized (its ``alphas`` setting, else its summary's columns)."""
    alphas = result.settings.get("alphas")
    if alphas is None:
        prefix = "incompatible@"
        alphas = [float(k.removeprefix(prefix)) for k in result.summary if k.startswith(prefix)]
    return [float(a) for a in alphas]


def table(results: Labelled) -> str:
    """Each data set's images, distinct-class pairs and closest pair, and the fraction of its
    pairs incompatible with an alpha-Lipschitz F at the first result's alphas."""
    alphas = _alphas(results[0][1])
    header = [
        "data set",
        "images",
        "distinct-class pairs",
        "min distance",
        "exact",
        f"incompatible at alpha = {', '.join(f'{a:g}' for a in alphas)}",
    ]
    rows = []
    for label, result in results:
        details = result.details
        curve = Separation.from_dict(details).lipschitz_curve(alphas)
        exact = "yes" if details["exact"] else f"no (resolution {details['resolution']:.2g})"
        rows.append(
            [
                label,
                details["n_images"],
                details["n_pairs"],
                f"{details['min_distance']:.4g}",
                exact,
                ", ".join(f"{v:.4g}" for v in curve),
            ]
        )
    return markdown.table(header, rows)


@hookimpl
def register_presentations(register: RegisterPresentation) -> None:
    register("separation", Presentation(figure=figure, table=table))
