"""The evaluation runner, the clean metric and the report writers."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import locrob
from locrob import markdown
from locrob.errors import LocrobError
from locrob.report import SCHEMA_VERSION


class Fixed(nn.Module):
    """Predicts class ``pixel[0,0,0] * 255 mod 3``: a classifier whose answers are known."""

    def forward(self, x):
        cls = (x[:, 0, 0, 0] * 255).round().long() % 3
        return nn.functional.one_hot(cls, 3).float()


def _data():
    x = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 3, 4, 4).contiguous()
    y = torch.tensor([0, 1, 2, 0, 0, 0, 1, 1, 2, 2, 2, 2])  # predictions are 0,1,2,0,1,2,...
    return locrob.ImageData("tiny", x, y, x, y, classes=["a", "b", "c"])


def test_clean_accuracy_is_exact_on_a_known_classifier():
    report = locrob.evaluate(Fixed(), _data(), ["clean"], batch_size=5)
    result = report.metrics["clean"]
    # correct at indices 0,1,2,3,7,8,11 -> 7 of 12
    assert result.summary == {"accuracy": pytest.approx(7 / 12)}
    assert result.details["n_correct"] == 7
    assert result.details["per_class_accuracy"] == pytest.approx(
        {"a": 2 / 4, "b": 2 / 3, "c": 3 / 5}
    )


def test_max_examples_takes_the_first_n():
    report = locrob.evaluate(Fixed(), _data(), ["clean"], max_examples=4)
    assert report.n_examples == 4
    assert report.metrics["clean"].summary["accuracy"] == 1.0


def test_clean_accuracy_matches_a_direct_computation(trained, digits):
    report = locrob.evaluate(trained.model, digits, ["clean"])
    with torch.no_grad():
        direct = (
            trained.model(digits.test_x.float() / 255).argmax(1).eq(digits.test_y).float().mean()
        )
    assert report.metrics["clean"].summary["accuracy"] == pytest.approx(float(direct))
    assert report.metrics["clean"].summary["accuracy"] == pytest.approx(
        trained.history[-1]["test_accuracy"]
    )


def test_report_roundtrip_and_markdown(trained, tmp_path):
    report = locrob.evaluate(f"checkpoint:{trained.checkpoint}", "digits", ["clean"])
    assert report.model["name"] == "small-cnn (vanilla)"
    assert report.model["trained_on"] == "digits"
    path = report.save(tmp_path)
    data = json.loads(path.read_text())
    assert data["schema"] == "locrob-report" and data["schema_version"] == SCHEMA_VERSION
    again = locrob.load_report(tmp_path)
    assert again.to_dict() == report.to_dict()
    table = (tmp_path / "report.md").read_text().splitlines()
    assert table[0] == "| model | dataset | split | n | clean accuracy |"
    acc = report.metrics["clean"].summary["accuracy"]
    assert table[2] == f"| small-cnn (vanilla) | digits | test | 360 | {acc:.4g} |"
    assert not list(tmp_path.glob(".*tmp"))


def test_markdown_table_joins_reports_with_different_metrics():
    a = locrob.evaluate(Fixed(), _data(), ["clean"], name="A")
    b = locrob.evaluate(Fixed(), _data(), ["clean"], name="B")
    b.metrics["clean"].summary["extra"] = 0.5
    lines = locrob.markdown_table([a, b]).splitlines()
    assert lines[0].endswith("| clean accuracy | clean extra |")
    assert lines[2].startswith("| A |") and lines[2].endswith("|  |")
    assert lines[3].endswith("| 0.5 |")


def test_markdown_table_escapes_a_pipe_inside_a_cell():
    text = markdown.table(["name", "why"], [["fog", "TypeError: int | None expected"]])
    row = text.splitlines()[2]
    assert row == "| fog | TypeError: int \\| None expected |"
    assert len(re.split(r"(?<!\\)\|", row)) == len(re.split(r"\|", text.splitlines()[0]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"schema": "other"}', "not a locrob report"),
        ('{"schema": "locrob-report", "schema_version": 99}', "schema version 99"),
    ],
)
def test_bad_reports(tmp_path, text, message):
    (tmp_path / "report.json").write_text(text)
    with pytest.raises(LocrobError, match=message):
        locrob.load_report(tmp_path)


def test_bad_evaluation_requests():
    with pytest.raises(LocrobError, match="max_examples must be at least 1"):
        locrob.evaluate(Fixed(), _data(), max_examples=0)
    with pytest.raises(LocrobError, match="unknown split 'valid'"):
        locrob.evaluate(Fixed(), _data(), split="valid")
    with pytest.raises(LocrobError, match="metric 'clean' has no option steps"):
        locrob.evaluate(Fixed(), _data(), metric_options={"clean": {"steps": 3}})
    with pytest.raises(LocrobError, match="a metric is listed twice"):
        locrob.evaluate(Fixed(), _data(), ["clean", "clean"])


def test_an_untrained_architecture_is_built_for_the_data():
    x = torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8)
    data = locrob.ImageData("gray", x, torch.arange(10) % 4, x, torch.arange(10) % 4)
    torch.manual_seed(3)
    report = locrob.evaluate("small-cnn", data, ["clean"], device="cpu")
    torch.manual_seed(3)
    same = locrob.load_model("small-cnn", num_classes=4, in_channels=1, image_size=16)
    with torch.no_grad():
        direct = same(x.float() / 255).argmax(1).eq(data.test_y).float().mean()
    assert report.model["spec"] == "small-cnn"
    assert report.metrics["clean"].summary["accuracy"] == pytest.approx(float(direct))


def test_arrays_are_accepted_and_the_model_mode_is_restored():
    model = Fixed().train()
    x, y = _data().test_x, _data().test_y
    report = locrob.evaluate(model, (x.float() / 255, y), ["clean"])
    assert report.metrics["clean"].summary["accuracy"] == pytest.approx(7 / 12)
    assert model.training
    with pytest.raises(LocrobError, match=r"data must be an ImageData, a dataset name or \(images"):
        locrob.evaluate(model, [x, y])


def test_metric_results_are_made_json_ready():
    result = locrob.MetricResult(
        "m",
        {"a": np.float32(0.5), "b": float("nan"), "c": torch.tensor(2)},
        {"curve": (np.arange(3), torch.ones(2))},
    )
    assert result.summary == {"a": 0.5, "b": None, "c": 2}
    assert result.details == {"curve": [[0, 1, 2], [1.0, 1.0]]}
    with pytest.raises(LocrobError, match="dict keys must be strings"):
        locrob.MetricResult("m", {"a": 1.0}, {"per_class": {1: 0.5}})
    with pytest.raises(LocrobError, match="summary values must be numbers; 'a' is not"):
        locrob.MetricResult("m", {"a": "high"})
    with pytest.raises(LocrobError, match="object is not JSON-able"):
        locrob.MetricResult("m", {}, {"thing": object()})


def test_a_metric_with_a_misspelled_or_unmarked_hook_is_refused():
    @dataclass
    class Misspelled(locrob.Metric):
        name = "misspelled"

        @locrob.hookimpl
        def mesure(self, model, data, context):
            return self.result({})

    @dataclass
    class Unmarked(locrob.Metric):
        name = "unmarked"

        def measure(self, model, data, context):
            return self.result({})

    with pytest.raises(LocrobError, match="unknown hook 'mesure'"):
        locrob.evaluate(Fixed(), _data(), [Misspelled()])
    with pytest.raises(LocrobError, match="metric 'unmarked' implements none of the hooks measure"):
        locrob.evaluate(Fixed(), _data(), [Unmarked()])


def test_class_count_comes_from_the_class_names():
    x = torch.zeros(4, 3, 4, 4, dtype=torch.uint8)
    y = torch.tensor([0, 1, 0, 1])
    assert locrob.ImageData("d", x, y, x, y, classes=["a", "b", "c"]).num_classes == 3
    with pytest.raises(LocrobError, match="label 1 is out of range for 1 classes"):
        locrob.ImageData("d", x, y, x, y, classes=["a"])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Conv2d(1, 3, 1), "fails on tiny images of shape"),
        (nn.Flatten(0), "one row of class scores per image: 2 images gave"),
        (nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), "scores 2 classes but tiny has 3"),
    ],
    ids=["channels", "rows", "classes"],
)
def test_models_that_do_not_fit_the_data(model, message):
    with pytest.raises(LocrobError, match=message):
        locrob.evaluate(model, _data(), ["clean"])


def _split_report() -> locrob.Report:
    """clean on the test split; local-robustness on its default (train) and separation on test,
    both by their own ``split`` setting."""
    options = {
        "local-robustness": {"max_examples": 4, "n_draws": 4, "radii": [0.1], "at": [0.1]},
        "separation": {"split": "test"},
    }
    return locrob.evaluate(
        Fixed(), _data(), ["clean", "local-robustness", "separation"], metric_options=options
    )


def test_each_metric_records_the_split_it_measured_through_a_round_trip(tmp_path):
    report = _split_report()
    expected = {"clean": "test", "local-robustness": "train", "separation": "test"}
    assert {name: r.split for name, r in report.metrics.items()} == expected
    path = report.save(tmp_path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2
    assert {name: m["split"] for name, m in data["metrics"].items()} == expected
    again = locrob.load_report(tmp_path)
    assert {name: r.split for name, r in again.metrics.items()} == expected
    assert again.to_dict() == report.to_dict()
    row = (tmp_path / "report.md").read_text().splitlines()[2]
    assert "| test: clean, separation; train: local-robustness |" in row


def test_a_version_1_report_loads_with_each_metric_split_from_its_settings(tmp_path):
    # Version 1 recorded the report's split only; a metric's split setting was in its settings.
    data = _split_report().to_dict()
    data["schema_version"] = 1
    for result in data["metrics"].values():
        del result["split"]
    (tmp_path / "report.json").write_text(json.dumps(data))
    report = locrob.load_report(tmp_path)
    assert [report.split_of(name) for name in report.metrics] == ["test", "train", "test"]
    assert report.to_dict()["schema_version"] == SCHEMA_VERSION == 2


@dataclass
class Blackout(locrob.metrics.base.PerturbationMetric):
    """Blacks out each image with probability ``p`` (image 0 predicts class 0 for Fixed)."""

    name = "blackout"
    p: float = 0.5

    def cells(self):
        return [("blackout", 0), ("blackout", 1)]

    def perturb(self, x, cell, streams):
        dark = streams.rand(()) < self.p
        return torch.where(dark.view(-1, 1, 1, 1), torch.zeros_like(x), x)


def test_a_perturbation_metric_counts_per_image_draws_at_any_batch_size():
    """The base's count, against the same draws made image by image from the streams."""
    from locrob.streams import Streams

    data = _data()
    x, y = data.test_x.float() / 255, data.test_y
    expected = []
    for cell in Blackout().cells():
        dark = [bool(Streams.for_images(7, [i], "cpu", *cell).rand(())[0] < 0.5) for i in range(12)]
        predictions = [0 if d else i % 3 for i, d in enumerate(dark)]
        expected.append(sum(int(p == t) for p, t in zip(predictions, y.tolist(), strict=True)))
    context = locrob.EvaluationContext(torch.device("cpu"), seed=7)
    for size in (1, 5, 12):
        context.batch_size = size
        counts = Blackout().count(Fixed(), data, context)
        assert (counts.n, counts.clean, counts.correct) == (
            12,
            int(Fixed()(x).argmax(1).eq(y).sum()),
            expected,
        )
