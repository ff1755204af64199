"""The local-robustness metric plugin, its report entries and its figure."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import locrob
from locrob import cli
from locrob.errors import LocrobError

OPTIONS = {
    "local-robustness": {
        "max_examples": 8,
        "n_draws": 6,
        "radii": [0.25, 0.5, 1.0],
        "at": [0.5, 2.0],
    }
}


def test_metric_matches_a_direct_alpha_lim_call(trained, digits):
    report = locrob.evaluate(
        trained.model, digits, ["local-robustness"], metric_options=OPTIONS, device="cpu"
    )
    result = report.metrics["local-robustness"]
    direct = locrob.alpha_lim(
        trained.model, digits.train_x, [0.25, 0.5, 1.0], max_examples=8, n_draws=6, device="cpu"
    )
    assert result.details["curve"] == pytest.approx(direct.curve.tolist())
    assert result.details["bound"] == "lower"
    assert result.summary["alpha@0.5"] == pytest.approx(direct.alpha_at(0.5))
    assert result.summary["alpha@2"] == pytest.approx(
        float(direct.curve[-1])
    )  # past the last radius
    assert result.summary["auc"] == pytest.approx(direct.auc())
    assert result.details["settings"]["max_examples"] == 8 and result.settings["split"] == "train"


def test_the_plot_draws_one_line_per_model(trained, digits):
    a = locrob.evaluate(
        trained.model, digits, ["local-robustness"], metric_options=OPTIONS, name="a"
    )
    b = locrob.evaluate(
        trained.model, digits, ["local-robustness"], metric_options=OPTIONS, name="b", seed=1
    )
    figure = locrob.registries().presentations.get("local-robustness").figure
    fig = figure([(r.label, r.metrics["local-robustness"]) for r in (a, b)])
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert list(lines[1].get_ydata()) == pytest.approx(
        b.metrics["local-robustness"].details["curve"]
    )


def test_evaluate_and_plot_commands_write_figures(trained, tmp_path, monkeypatch, capsys):
    def run(*args):
        monkeypatch.setattr(sys, "argv", ["locrob", *args])
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        return exit_.value.code

    spec = f"checkpoint:{trained.checkpoint}"
    common = ["--metrics", "clean,local-robustness", "-o", "local-robustness.max_examples=4"]
    common += ["-o", "local-robustness.n_draws=3", "-o", "local-robustness.radii=[0.5,1.0]"]
    assert run("evaluate", "--model", spec, "--out", str(tmp_path / "a"), *common) == 0
    assert (
        run(
            "evaluate",
            "--model",
            spec,
            "--name",
            "again",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "b"),
            *common,
        )
        == 0
    )
    assert (tmp_path / "a" / "local-robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert len(report["metrics"]["local-robustness"]["details"]["curve"]) == 2
    capsys.readouterr()
    assert (
        run("plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "joint")) == 0
    )
    out = capsys.readouterr().out
    assert "| again |" in out and "local-robustness.png" in out
    assert (tmp_path / "joint" / "local-robustness.png").is_file()
    assert (tmp_path / "joint" / "reports.md").read_text().count("\n") == 4


def test_bad_metric_settings(trained, digits):
    with pytest.raises(LocrobError, match="unknown preset 'fig5'"):
        locrob.evaluate(
            trained.model,
            digits,
            ["local-robustness"],
            metric_options={"local-robustness": {"preset": "fig5"}},
        )
    with pytest.raises(LocrobError, match="radii must be strictly increasing"):
        locrob.evaluate(
            trained.model,
            digits,
            ["local-robustness"],
            metric_options={"local-robustness": {"radii": [1, 0.5]}},
        )


def test_preset_points_are_not_overridden(trained, digits):
    def run(options):
        report = locrob.evaluate(
            trained.model, digits, ["local-robustness"], metric_options=options
        )
        return report.metrics["local-robustness"].details["settings"]["max_examples"]

    small = {"n_draws": 1, "radii": [0.5]}
    assert run({"local-robustness": {"preset": "authors-code", **small}}) == 1000
    assert run({"local-robustness": small}) == 100


def test_preset_values_reach_the_estimator(trained, digits):
    options = {
        "local-robustness": {
            "preset": "authors-code",
            "max_examples": 2,
            "n_draws": 1,
            "radii": [0.5],
        }
    }
    report = locrob.evaluate(trained.model, digits, ["local-robustness"], metric_options=options)
    settings = report.metrics["local-robustness"].details["settings"]
    assert settings["noise"] == "uniform" and settings["directions"] == "fresh"
    assert torch.tensor(settings["radii"]).tolist() == [0.5]


@pytest.mark.parametrize(
    ("given", "clamp"), [({}, [0.0, 1.0]), ({"clamp": None, "denominator": "nominal"}, None)]
)
def test_the_ratio_options_reach_the_estimator(trained, digits, given, clamp):
    options = {"max_examples": 4, "n_draws": 3, "radii": [0.5, 1.0], **given}
    report = locrob.evaluate(
        trained.model, digits, ["local-robustness"], metric_options={"local-robustness": options}
    )
    result = report.metrics["local-robustness"].details
    assert result["settings"]["clamp"] == clamp
    assert result["settings"]["denominator"] == given.get("denominator", "effective")
    direct = locrob.alpha_lim(trained.model, digits.train_x, device="cpu", **options)
    assert result["curve"] == pytest.approx(direct.curve.tolist())
