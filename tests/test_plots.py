"""Figures read well with six models: legends hide no data, titles do not collide, labels and
scales say what is drawn. Results are made by hand: no model is trained or evaluated."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from locrob.contract import MetricResult
from locrob.corruptions import NAMES
from locrob.demo import sigmoid_curve
from locrob.pair_distances import Separation
from locrob.presentation import corruptions, local_robustness, noise
from locrob.presentation.paper import sigmoid_figure
from locrob.presentation.separation import robustness_figure

MODELS = ["vanilla", "parseval", "laplacian", "parseval+laplacian", "l2nn", "pgd"]


def curves(x: str, y: str, xs: list[float], **details) -> list[tuple[str, MetricResult]]:
    """Six models' curves filling the axes: flat ones at every height and one diagonal, so a
    legend anywhere inside the axes would cover one of them."""
    top = len(MODELS) - 1
    ys = [[k / top] * len(xs) for k in range(top)]
    ys.append([i / (len(xs) - 1) for i in range(len(xs))])
    return [
        (label, MetricResult("m", {}, {x: xs, y: curve, **details}))
        for label, curve in zip(MODELS, ys, strict=True)
    ]


def assert_legend_hides_no_line(fig) -> None:
    fig.draw_without_rendering()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    named = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert len(ax.get_legend().get_texts()) == len(named)  # a band's dashed edge is unnamed
    for line in ax.get_lines():
        assert not legend.overlaps(line.get_window_extent()), line.get_label()
    assert fig.bbox.contains(legend.x1, legend.y1), "the legend falls off the figure"


@pytest.mark.parametrize(
    "figure",
    [
        lambda: local_robustness.figure(
            curves("radii", "curve", [0.25, 0.5, 1.0, 2.0], method="sample", settings={})
        ),
        lambda: noise.figure(curves("snr_db", "accuracy", [40.0, 20.0, 0.0, -10.0])),
    ],
    ids=["fig5-local-robustness", "fig4-noise"],
)
def test_line_figure_legends_hide_no_line_with_six_models(figure):
    assert_legend_hides_no_line(figure())


def corruption_results() -> list[tuple[str, MetricResult]]:
    generator = torch.Generator().manual_seed(0)
    results = []
    for label in MODELS:
        accuracy = torch.rand(len(NAMES), 5, generator=generator, dtype=torch.float64)
        summary = {"clean_error": 0.125, "corruption_error": 0.5, "accuracy": 0.5}
        details = {"corruptions": NAMES, "severities": [1, 2, 3, 4, 5], "accuracy": accuracy}
        results.append((label, MetricResult("corruptions", summary, details)))
    return results


def test_heat_map_colour_bar_is_in_the_percent_of_its_cells_and_titles_do_not_collide():
    results = corruption_results()
    fig = corruptions.figure(results)
    fig.draw_without_rendering()
    panels = fig.axes[: len(results)]
    for ax, (_, result) in zip(panels, results, strict=True):
        image = ax.get_images()[0]
        low, high = image.get_clim()
        cells = np.asarray(image.get_array(), dtype=np.float64)
        assert (low, high) == (0, 100)
        expected = 100 * (1 - np.array(result.details["accuracy"]))
        assert cells == pytest.approx(expected)
        shown = np.array([float(t.get_text()) for t in ax.texts]).reshape(cells.shape)
        assert shown == pytest.approx(cells, abs=0.5)  # the colour is the number shown
    colour_bar = panels[-1].get_images()[0].colorbar  # drawn for the last panel, shared by all
    assert (colour_bar.vmin, colour_bar.vmax) == (0, 100)
    assert "%" in colour_bar.ax.get_ylabel()
    titles = [ax.title.get_window_extent() for ax in panels]
    for a, b in itertools.pairwise(titles):
        assert not a.overlaps(b)


def test_all_zero_separation_curves_say_no_pair_is_closer():
    counts = torch.zeros(256, dtype=torch.long)
    counts[102] = 7  # every distinct-class pair 0.4 apart (L-inf, grey level 102)
    result = Separation("inf", True, 1.0, counts, torch.zeros(0), ["0", "1"], 8)
    fig = robustness_figure("toy", result, ds=[0.1, 0.3, 0.5])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["d = 0.1 (no pair closer)", "d = 0.3 (no pair closer)", "d = 0.5"]
    assert_legend_hides_no_line(fig)


def test_fig_2_right_panel_names_its_axis_and_its_shading():
    fig = sigmoid_figure(*sigmoid_curve())
    right = fig.axes[1]
    assert right.get_ylabel() == "F(x)"
    entries = [t.get_text() for t in right.get_legend().get_texts()]
    assert any("radius r = 1/2" in entry for entry in entries)


def test_fig5_shades_each_models_certified_band_in_its_own_colour_on_a_log_scale():
    xs = [0.25, 0.5, 1.0, 2.0]
    results = curves("radii", "curve", xs, method="sample", settings={})
    for k, (_, result) in enumerate(results[:2]):  # two of the six carry the upper side
        result.details["curve"] = [0.1 * (k + 1)] * len(xs)
        result.details["upper"] = {"radii": xs, "curve": [10.0 * (k + 1)] * len(xs)}
    fig = local_robustness.figure(results)
    ax = fig.axes[0]
    bands = ax.collections
    assert len(bands) == 2 and ax.get_yscale() == "log"
    colours = {line.get_label(): line.get_color() for line in ax.get_lines()}
    for (label, result), band in zip(results[:2], bands, strict=True):
        top = band.get_paths()[0].vertices[:, 1]
        assert top.max() == pytest.approx(result.details["upper"]["curve"][0])
        assert top.min() == pytest.approx(result.details["curve"][0])
        assert np.allclose(band.get_facecolor()[0][:3], matplotlib_rgb(colours[label]))
    assert "certified upper (dashed)" in ax.get_ylabel()
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in dashed] == [
        result.details["upper"]["curve"] for _, result in results[:2]
    ]
    assert_legend_hides_no_line(fig)


def matplotlib_rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)
