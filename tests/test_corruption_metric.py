"""The ``corruptions`` metric: bookkeeping, mCE and Table 2's relative mCE, CIFAR-10-C files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Lookup, subset, write_cifar10c

import locrob
from locrob.corruptions import corrupt
from locrob.metrics.corruptions import CorruptionAccuracy, mce, relative_mce
from locrob.streams import Streams

# Table 2 of the paper: CIFAR-10 test error in percent, clean / corrupted, and relative mCE
TABLE_2 = {
    "V": (11.9, 31.6, 100),
    "P": (10.2, 30.5, 103),
    "L": (13.2, 31.3, 92),
    "PGD": (12.8, 18.8, 30),
    "L2NN": (20.9, 28.5, 39),
}


def result(clean_error: float, errors: dict[str, list[float]]) -> locrob.MetricResult:
    """A corruptions result with the given errors (for closed-form checks)."""
    cells = [e for row in errors.values() for e in row]
    return locrob.MetricResult(
        "corruptions",
        {"clean_error": clean_error, "corruption_error": sum(cells) / len(cells)},
        {
            "corruptions": list(errors),
            "severities": list(range(1, len(next(iter(errors.values()))) + 1)),
            "accuracy": [[1 - e for e in row] for row in errors.values()],
        },
    )


def test_relative_mce_reproduces_table_2_from_its_error_columns():
    vanilla = result(TABLE_2["V"][0] / 100, {"all": [TABLE_2["V"][1] / 100]})
    for clean, corrupted, expected in TABLE_2.values():
        method = result(clean / 100, {"all": [corrupted / 100]})
        assert round(relative_mce(method, vanilla)) == expected


def test_mce_normalizes_each_corruption_by_the_baseline():
    base = result(0.1, {"fog": [0.2, 0.4], "snow": [0.1, 0.1]})
    ours = result(0.1, {"fog": [0.1, 0.2], "snow": [0.3, 0.3]})
    # fog: 0.3 / 0.6 = 0.5, snow: 0.6 / 0.2 = 3; mean 1.75
    assert mce(ours, base) == pytest.approx(175)
    assert mce(base, base) == pytest.approx(100)
    with pytest.raises(locrob.LocrobError, match="same corruptions and severities"):
        mce(result(0.1, {"frost": [0.1, 0.1]}), base)


class Brightness(torch.nn.Module):
    """Class = how many tenths of the image's mean brightness: an easy, reproducible model."""

    def forward(self, x):
        level = (x.mean(dim=(1, 2, 3)) * 10).clamp(0, 9.999).floor().long()
        return torch.nn.functional.one_hot(level, 10).float()


@pytest.fixture
def levels():
    """Grey images at 10 brightness levels, labelled by level, as an ImageData."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 4)
    base = (labels[:, None, None, None] + 0.5) / 10 * 255
    images = np.clip(base + rng.normal(0, 8, (40, 3, 8, 8)), 0, 255).astype(np.uint8)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return locrob.ImageData("levels", x, y, x, y)


def test_results_do_not_depend_on_the_batch_size(levels):
    """Each image's draws are addressed by its index: batching changes no number."""
    metric = CorruptionAccuracy(corruptions=["impulse_noise", "glass_blur", "fog"], severities=[5])

    def run(size: int, seed: int = 1) -> dict:
        report = locrob.evaluate(
            Brightness(), levels, [metric], batch_size=size, seed=seed, device="cpu"
        )
        return report.metrics["corruptions"].details

    assert run(1) == run(7) == run(40)
    assert run(7) != run(7, seed=2)  # the draws do decide predictions here


def test_accuracy_per_cell_is_the_model_on_the_seeded_corruptions(levels):
    names, severities = ["contrast", "gaussian_noise"], [1, 5]
    report = locrob.evaluate(
        Brightness(),
        levels,
        [CorruptionAccuracy(corruptions=names, severities=severities)],
        batch_size=16,
        seed=3,
        device="cpu",
    )
    res = report.metrics["corruptions"]
    x, y = levels.test_x.float() / 255, levels.test_y
    for c, name in enumerate(names):
        for s, severity in enumerate(severities):
            # image i under (name, severity) draws from the stream of (seed, i, name, severity)
            streams = Streams.for_images(3, range(40), "cpu", name, severity)
            batch = corrupt(x, name, severity, seed=streams)
            correct = int(Brightness()(batch).argmax(1).eq(y).sum())
            assert res.details["accuracy"][c][s] == correct / 40
    assert res.summary["clean_error"] == 0
    cells = [a for row in res.details["accuracy"] for a in row]
    assert res.summary["corruption_error"] == pytest.approx(1 - sum(cells) / 4)
    # contrast keeps each channel's mean, so this model is immune to it
    assert res.details["accuracy"][0] == [1.0, 1.0]


def test_baseline_and_vanilla_reports_give_mce_and_relative_mce(levels, tmp_path):
    metric = {"corruptions": ["fog", "brightness"], "severities": [3, 5]}
    vanilla = locrob.evaluate(
        Brightness(), levels, ["corruptions"], metric_options={"corruptions": metric}, device="cpu"
    )
    vanilla.save(tmp_path / "v")
    again = locrob.evaluate(
        Brightness(),
        levels,
        ["corruptions"],
        device="cpu",
        metric_options={
            "corruptions": {
                **metric,
                "baseline": str(tmp_path / "v"),
                "vanilla": str(tmp_path / "v"),
            }
        },
    )
    assert again.metrics["corruptions"].summary["mCE"] == pytest.approx(100)
    assert again.metrics["corruptions"].summary["relative_mCE"] == pytest.approx(100)
    clean = locrob.evaluate(Brightness(), levels, ["clean"], device="cpu")
    clean.save(tmp_path / "c")
    with pytest.raises(locrob.LocrobError, match="no 'corruptions' result"):
        locrob.evaluate(
            Brightness(),
            levels,
            ["corruptions"],
            device="cpu",
            metric_options={"corruptions": {"vanilla": str(tmp_path / "c")}},
        )


def _save_corruptions_report(path, clean_error: float, errors: dict[str, list[float]]) -> str:
    report = locrob.Report(
        model={"name": "reference"},
        dataset={"name": "tiny"},
        split="test",
        n_examples=8,
        metrics={"corruptions": result(clean_error, errors)},
    )
    report.save(path)
    return str(path)


def test_mce_and_relative_mce_against_other_models_reports(tmp_path):
    # A model right on the 8 clean images only (labels 0-7, class 9 elsewhere): every
    # corrupted image differs from its clean one, so its error is 1 in every cell, 0 clean.
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 3, 8, 8), dtype=np.uint8))
    data = locrob.ImageData("tiny", x, torch.arange(8), x, torch.arange(8))
    model = Lookup(x.float() / 255, torch.arange(8))
    # baseline errors at severities 1 and 2: fog sums to 0.8, gaussian_noise to 1.0
    baseline = {"gaussian_noise": [0.5, 0.5], "fog": [0.2, 0.6]}
    # vanilla: 10 % clean error, 50 % corrupted: corruption adds 40 points
    vanilla = {"fog": [0.4, 0.6], "gaussian_noise": [0.5, 0.5]}
    options = {
        "corruptions": ["fog", "gaussian_noise"],
        "severities": [1, 2],
        "baseline": _save_corruptions_report(tmp_path / "b", 0.2, baseline),
        "vanilla": _save_corruptions_report(tmp_path / "v", 0.1, vanilla),
    }
    report = locrob.evaluate(
        model, data, ["corruptions"], metric_options={"corruptions": options}, device="cpu"
    )
    summary = report.metrics["corruptions"].summary
    assert report.metrics["corruptions"].details["accuracy"] == [[0.0, 0.0], [0.0, 0.0]]
    assert summary["clean_error"] == 0 and summary["corruption_error"] == 1
    # mCE = mean over corruptions of (2 / baseline sum): fog 2 / 0.8, noise 2 / 1.0
    assert summary["mCE"] == pytest.approx(100 * (2 / 0.8 + 2 / 1.0) / 2)  # 225
    # relative mCE = 100 (1 - 0) / (0.5 - 0.1)
    assert summary["relative_mCE"] == pytest.approx(250)


def test_plot_command_writes_table_2_and_the_heat_map(trained, digits, tmp_path, locrob_cli):
    small = subset(digits, 10, 30)
    options = {"corruptions": {"corruptions": ["fog", "contrast"], "severities": [1, 5]}}
    for name in ("vanilla", "other"):
        report = locrob.evaluate(
            trained.model,
            small,
            ["corruptions"],
            metric_options=options,
            device="cpu",
            name=name,
            seed=len(name),
        )
        report.save(tmp_path / name)
    code, out, _ = locrob_cli(
        "plot", str(tmp_path / "vanilla"), str(tmp_path / "other"), "--out", str(tmp_path / "joint")
    )
    assert code == 0, out
    table = (tmp_path / "joint" / "corruptions.md").read_text()
    assert "| model | clean error | corrupted error | mCE vs vanilla |" in table
    assert "| vanilla |" in table and "| 100.0 | 100.0 |" in table.splitlines()[2]
    assert (tmp_path / "joint" / "corruptions.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"corruptions": ["rain"]}, "unknown corruption 'rain'"),
        ({"severities": [0, 3]}, "integers from 1 to 5"),
        ({"preset": "mnist"}, "preset must be one of"),
        ({"source": "imagenet-c"}, "source must be one of"),
        ({"corruptions": ["fog", "fog"]}, "listed twice"),
    ],
)
def test_bad_settings_are_refused(options, message):
    with pytest.raises(locrob.LocrobError, match=message):
        CorruptionAccuracy.create(**options)


@pytest.mark.parametrize(
    ("source", "folder"), [("cifar10-c", "CIFAR-10-C"), ("cifar100-c", "CIFAR-100-C")]
)
def test_corrupted_cifar_files_are_read_through_robustbench(tmp_path, source, folder):
    from locrob.adapters.robustbench import load_corrupted_cifar

    written, labels = write_cifar10c(tmp_path, ["fog"], folder=folder)
    for severity in (1, 4):
        x, y = load_corrupted_cifar(source, "fog", severity, tmp_path, 8)
        assert x.dtype == torch.uint8 and x.shape == (8, 3, 32, 32)
        assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), written["fog", severity])
        assert np.array_equal(y.numpy(), labels)


def test_missing_cifar10c_files_are_named_with_where_to_get_them(tmp_path):
    from locrob.adapters.robustbench import load_corrupted_cifar

    with pytest.raises(locrob.LocrobError, match=r"CIFAR-10-C/snow.npy.*zenodo.org/record/2535967"):
        load_corrupted_cifar("cifar10-c", "snow", 1, tmp_path, 8)


def test_metric_on_cifar10c_files_scores_the_files_images(tmp_path, fake_cifar10):
    root, expected = fake_cifar10
    written, labels = write_cifar10c(tmp_path / "c", ["fog", "snow"], n_written=6)
    data = locrob.load_dataset("cifar10", data_dir=root)

    # right on the CIFAR-10-C images of fog severity 2; class 9 (always wrong) elsewhere
    fog_2 = torch.from_numpy(written["fog", 2]).permute(0, 3, 1, 2).float() / 255
    model = Lookup(fog_2, torch.from_numpy(labels))
    metric = CorruptionAccuracy(
        corruptions=["fog", "snow"],
        severities=[1, 2],
        source="cifar10-c",
        data_dir=str(tmp_path / "c"),
    )
    res = locrob.evaluate(model, data, [metric], device="cpu").metrics["corruptions"]
    assert res.details["accuracy"] == [[0.0, 1.0], [0.0, 0.0]]
    assert res.details["n"] == len(expected["test"][1])
    digits = locrob.load_dataset("digits")
    with pytest.raises(locrob.LocrobError, match="evaluate on --dataset cifar10"):
        locrob.evaluate(model, digits, [metric], device="cpu")
    with pytest.raises(locrob.LocrobError, match=r"--split test .*\(train\)"):
        locrob.evaluate(model, data, [metric], device="cpu", split="train")


@pytest.mark.filterwarnings("ignore:model 'small-cnn' is an untrained architecture")
def test_cifar10c_files_follow_the_runs_data_dir(tmp_path, fake_cifar10, locrob_cli, monkeypatch):
    root, expected = fake_cifar10
    write_cifar10c(root, ["fog"], n_written=6)  # beside cifar-10-batches-py/
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no data/CIFAR-10-C/ here: only --data-dir can find them
    args = [
        *("evaluate", "--model", "small-cnn", "--dataset", "cifar10", "--metrics", "corruptions"),
        *("--data-dir", str(root), "--out", str(tmp_path / "run")),
        *("-o", "corruptions.source=cifar10-c", "-o", "corruptions.corruptions=fog"),
        *("-o", "corruptions.severities=2"),
    ]
    code, _, err = locrob_cli(*args)
    assert code == 0, err
    report = locrob.load_report(tmp_path / "run")
    assert report.metrics["corruptions"].details["n"] == len(expected["test"][1])
    # the metric's own data_dir option still wins over the run's
    code, _, err = locrob_cli(*args, "-o", f"corruptions.data_dir={tmp_path / 'other'}")
    assert code == 2 and f"{tmp_path / 'other' / 'CIFAR-10-C' / 'fog.npy'}" in err
