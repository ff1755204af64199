"""Reports on disk: file modes, the environment they record, merging, and loading several."""

from __future__ import annotations

import json
import os

import pytest
import torch

import locrob
from locrob.atomic import write_text
from locrob.errors import LocrobError
from locrob.presentation import save_plots
from locrob.report import (
    environment_differences,
    load_report,
    load_reports,
    merge_saved,
    saved_report,
)


def _report(name: str = "a", seed: int = 0, **metrics: dict[str, float]) -> locrob.Report:
    return locrob.Report(
        model={"spec": name, "name": name},
        dataset={"name": "digits"},
        split="test",
        n_examples=10,
        metrics={m: locrob.MetricResult(m, s) for m, s in metrics.items()},
        settings={"seed": seed},
    )


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_outputs_get_the_mode_a_plain_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        written = write_text(tmp_path / "written.txt", "x")
        with open(tmp_path / "opened.txt", "w") as f:
            f.write("x")
        report = _report(clean={"accuracy": 1.0}).save(tmp_path / "run")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert (tmp_path / "opened.txt").stat().st_mode & 0o777 == expected
    assert written.stat().st_mode & 0o777 == expected
    assert report.stat().st_mode & 0o777 == expected


def test_an_evaluation_records_its_environment(digits):
    data = locrob.ImageData("small", digits.train_x[:8], digits.train_y[:8], *digits.split("test"))
    report = locrob.evaluate(torch.nn.Flatten(), data, max_examples=5, device="cpu")
    env = report.environment
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["python"].count(".") == 2 and env["numpy"] and env["device"]
    assert report.locrob_version == locrob.__version__
    loaded = locrob.Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert loaded.environment == env


def test_a_report_from_before_the_environment_loads(tmp_path):
    data = _report(clean={"accuracy": 0.5}).to_dict()
    del data["environment"], data["figures"]
    (tmp_path / "report.json").write_text(json.dumps(data))
    old = load_report(tmp_path)
    assert old.environment == {} and old.figures == []
    new = _report(clean={"accuracy": 0.5})
    new.environment = {"torch": "9.9", "threads": 4}
    assert environment_differences([("old", old), ("new", new)]) == []  # nothing to compare


def test_environment_differences_name_the_reports_and_values():
    a, b, c = _report("a"), _report("b"), _report("c")
    a.environment = {"torch": "2.4.0", "device": "cpu X", "threads": 8}
    b.environment = {"torch": "2.5.1", "device": "cpu X", "threads": 8}
    c.environment = {"torch": "2.5.1", "device": "cpu X", "threads": 2}
    c.locrob_version = "0.0.1"
    assert environment_differences([("runs/a", a), ("runs/b", b), ("runs/c", c)]) == [
        f"the reports were measured with different locrob: {a.locrob_version} (runs/a, runs/b); "
        "0.0.1 (runs/c)",
        "the reports were measured with different torch: 2.4.0 (runs/a); 2.5.1 (runs/b, runs/c)",
        "the reports were measured with different threads: 8 (runs/a, runs/b); 2 (runs/c)",
    ]


def test_folders_without_a_report_are_skipped_and_none_left_is_an_error(tmp_path):
    _report(clean={"accuracy": 1.0}).save(tmp_path / "a")
    (tmp_path / "compare").mkdir()
    loaded, skipped = load_reports([tmp_path / "a", tmp_path / "compare"])
    assert [path for path, _ in loaded] == [tmp_path / "a"] and skipped == [tmp_path / "compare"]
    with pytest.raises(LocrobError, match=r"no report.json in .*compare; write one with"):
        load_reports([tmp_path / "compare"])
    with pytest.raises(LocrobError, match="report not found"):  # a mistyped file stays an error
        load_reports([tmp_path / "a", tmp_path / "nope.json"])


def test_a_new_run_replaces_its_metrics_and_keeps_the_others(tmp_path):
    old = _report(clean={"accuracy": 0.5}, noise={"auc": 1.0})
    old.figures = ["noise.png"]
    old.save(tmp_path)
    new = _report(clean={"accuracy": 0.9}, adversarial={"PGD": 0.1})
    merged = merge_saved(saved_report(tmp_path), new, tmp_path)
    assert list(merged.metrics) == ["clean", "noise", "adversarial"]
    assert merged.metrics["clean"].summary == {"accuracy": 0.9}
    assert merged.metrics["noise"].summary == {"auc": 1.0} and merged.figures == ["noise.png"]
    assert merge_saved(saved_report(tmp_path / "empty"), new, tmp_path / "empty") is new


@pytest.mark.parametrize(
    ("other", "differs"),
    [(_report("b"), "model label"), (_report("a", seed=1), "seed")],
)
def test_a_report_of_another_model_or_seed_is_not_merged(tmp_path, other, differs):
    _report("a", clean={"accuracy": 0.5}).save(tmp_path)
    with pytest.raises(
        LocrobError, match=rf"is a report of a on digits .* {differs}.*another --out"
    ):
        merge_saved(saved_report(tmp_path), other, tmp_path)


def test_save_plots_deletes_only_the_figures_it_wrote_that_are_gone(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("noise.png", "gone.png", "mine.png", "unknown-metric.png", "../x.png"):
        (out / name).write_bytes(b"png")
    report = _report(clean={"accuracy": 1.0})
    report.metrics["unknown-metric"] = locrob.MetricResult("unknown-metric", {"x": 1.0})
    figures = ["noise.png", "gone.png", "unknown-metric.png", "../x.png"]  # as report.json says
    kept = save_plots([report], out, replaces=figures)
    # a figure of a metric whose plugin is not installed is still its figure
    assert kept == [out / "unknown-metric.png"]
    assert sorted(p.name for p in out.iterdir()) == ["mine.png", "unknown-metric.png"]
    assert (tmp_path / "x.png").is_file()  # only names inside the folder are locrob's


def test_rewriting_a_file_keeps_its_mode_as_a_plain_open_does(tmp_path):
    for path in (tmp_path / "opened.txt", tmp_path / "written.txt"):
        path.write_text("x")
        path.chmod(0o600)
    with open(tmp_path / "opened.txt", "w") as f:
        f.write("y")
    write_text(tmp_path / "written.txt", "y")
    assert (tmp_path / "opened.txt").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "written.txt").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "written.txt").read_text() == "y"
