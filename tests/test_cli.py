"""The command line: the main job, and a one-line error for each kind of bad input."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

import locrob


def test_train_then_evaluate(locrob_cli, tmp_path):
    code, out, _ = locrob_cli("train", "--epochs", "2", "--out", str(tmp_path))
    assert code == 0 and "checkpoint:" in out
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "train.json").is_file()
    spec = f"checkpoint:{tmp_path / 'model.pt'}"
    code, out, _ = locrob_cli("evaluate", "--model", spec, "--out", str(tmp_path))
    assert code == 0
    assert "| model | dataset | split | n | clean accuracy |" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert f"{report['metrics']['clean']['summary']['accuracy']:.4g}" in out


def test_version_and_plugins(locrob_cli):
    code, out, _ = locrob_cli("--version")
    assert code == 0 and out.startswith("locrob ")
    code, out, _ = locrob_cli("plugins")
    assert code == 0
    assert "clean  [locrob" in out and "metrics: adversarial, clean" in out


def _bad_npz(tmp_path, scale):
    path = tmp_path / "bad.npz"
    x = np.full((4, 3, 8, 8), 2.0 * scale, np.float32)
    y = np.zeros(4, np.int64)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    return f"npz:{path}"


def _corrupt_checkpoint(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x80\x02not really a checkpoint")
    return f"checkpoint:{path}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "resnet9000"],
            r"unknown model source 'resnet9000'; known: checkpoint, .*preact-resnet18",
        ),
        (["--model", "small-cnn", "--dataset", "mnist"], "unknown dataset 'mnist'; known: cifar10"),
        (
            ["--model", "small-cnn", "--metrics", "clean,fgsm"],
            "unknown metric 'fgsm'; known: adversarial, clean",
        ),
        (
            ["--model", "small-cnn", "--dataset", "cifar10", "--data-dir", "{tmp}"],
            "cifar-10-batches-py/",
        ),
        (["--model", "small-cnn", "--dataset", "{npz}"], r"must lie in \[0, 1\]"),
        (["--model", "{ckpt}"], "not a readable checkpoint"),
        (["--model", "small-cnn", "--option", "clean"], "--option wants NAME.KEY=VALUE"),
        (["--model", "small-cnn", "--device", "tpu"], "unknown device 'tpu'"),
    ],
    ids=["model", "dataset", "metric", "cifar-files", "range", "checkpoint", "option", "device"],
)
def test_bad_input_gives_one_line(locrob_cli, tmp_path, args, message):
    fill = {
        "tmp": str(tmp_path),
        "npz": _bad_npz(tmp_path, 1),
        "ckpt": _corrupt_checkpoint(tmp_path),
    }
    args = [a.format(**fill) for a in args]
    code, _, err = locrob_cli("evaluate", *args, "--out", str(tmp_path / "o"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("locrob: error: ")
    assert re.search(message, lines[0])
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--epochs", "abc", "--out", "x"], "Invalid value for '--epochs'"),
        (["evaluate", "--out", "x"], "Missing option '--model'"),
        (["bogus"], "No such command 'bogus'"),
        (
            ["evaluate", "--model", "small-cnn", "--metrics", ",", "--out", "x"],
            "no metric requested",
        ),
    ],
)
def test_usage_mistakes_give_one_line(locrob_cli, args, message):
    code, _, err = locrob_cli(*args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_unknown_defense_gives_one_line(locrob_cli, tmp_path):
    args = ["train", "--defense", "fortress", "--out", str(tmp_path)]
    code, _, err = locrob_cli(*args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert re.match(r"locrob: error: unknown defense 'fortress'; known: .*pgd", err.strip())


def test_train_help_states_the_trainers_defaults():
    # The command leaves unset options to TrainConfig; its help must still tell the truth.
    import typer

    from locrob.cli import app
    from locrob.contract import TrainConfig

    command = typer.main.get_command(app).commands["train"]
    helps = {p.name: p.help for p in command.params}
    defaults = TrainConfig()
    for name in ("epochs", "batch_size", "lr"):
        assert f"(default {getattr(defaults, name)}" in helps[name]


def test_plain_locrob_prints_the_help_without_an_error(locrob_cli):
    code, out, err = locrob_cli()
    assert code == 0
    assert "Usage:" in out and "evaluate" in out
    assert err == ""


UNTRAINED = "ignore:model 'small-cnn' is an untrained architecture"


@pytest.mark.filterwarnings(UNTRAINED)
def test_evaluate_merges_into_the_report_in_out_and_redraws_its_figures(locrob_cli, tmp_path):
    run = ["evaluate", "--model", "small-cnn", "--max-examples", "20", "--out", str(tmp_path)]
    code, _, err = locrob_cli(*run, "--metrics", "clean")
    assert code == 0, err
    code, out, err = locrob_cli(*run, "--metrics", "noise", "-o", "noise.snr_db=[10,0]")
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["metrics"]) == ["clean", "noise"] and report["figures"] == ["noise.png"]
    assert "clean accuracy" in out and f"figure: {tmp_path / 'noise.png'}" in out
    # a figure locrob wrote whose metric is gone (a report edited by hand) goes; the user's stays
    del report["metrics"]["noise"]
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "mine.png").write_bytes(b"png")
    code, _, err = locrob_cli(*run, "--metrics", "clean")
    assert code == 0, err
    assert not (tmp_path / "noise.png").exists() and (tmp_path / "mine.png").exists()
    assert json.loads((tmp_path / "report.json").read_text())["figures"] == []


@pytest.mark.filterwarnings(UNTRAINED)
def test_evaluate_refuses_to_merge_a_report_of_another_model_or_data(
    locrob_cli, tmp_path, monkeypatch
):
    run = ["evaluate", "--model", "small-cnn", "--out", str(tmp_path)]
    assert locrob_cli(*run, "--max-examples", "20")[0] == 0
    saved = json.loads((tmp_path / "report.json").read_text())
    saved["environment"]["torch"] = "0.0"  # as if measured with another torch
    (tmp_path / "other-torch").mkdir()
    (tmp_path / "other-torch" / "report.json").write_text(json.dumps(saved))
    before = (tmp_path / "report.json").read_text()

    def measured(*args, **kwargs):
        raise AssertionError("refused only after measuring")

    monkeypatch.setattr("locrob.evaluation.evaluate", measured)  # refusals come first
    for args, differ in [
        (["--max-examples", "20", "--seed", "1"], "seed"),
        (["--max-examples", "20", "--name", "other"], "model label"),
        (["--max-examples", "10"], "examples"),
        (
            ["--max-examples", "20", "--out", str(tmp_path / "other-torch")],
            r"environment \(versions, device or threads\)",
        ),
    ]:
        code, _, err = locrob_cli(*run, *args)
        assert code == 2
        assert re.match(
            rf"locrob: error: '.*report.json' is a report of small-cnn on digits \(test, 20 "
            rf"examples, seed 0\), and this run differs in its {differ}; give another --out",
            err,
        )
    assert (tmp_path / "report.json").read_text() == before


def test_an_untrained_architecture_is_evaluated_with_a_warning(locrob_cli, tmp_path, digits):
    untrained = r"model 'small-cnn' is an untrained architecture \(random weights\)"
    with pytest.warns(UserWarning, match=untrained):
        report = locrob.evaluate("small-cnn", digits, max_examples=5, device="cpu")
    assert report.model["weights"] == "random"
    run = ["evaluate", "--model", "small-cnn", "--max-examples", "5", "--out", str(tmp_path)]
    code, _, err = locrob_cli(*run)
    assert code == 0
    assert re.search(f"^locrob: warning: {untrained}", err, re.M)  # one line, no source file
    assert "UserWarning" not in err and "warn(" not in err
    model = locrob.load_model("small-cnn", num_classes=10)
    path = locrob.save_checkpoint(tmp_path / "m.pt", model, "small-cnn", {"num_classes": 10})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        locrob.evaluate(f"checkpoint:{path}", digits, max_examples=5, device="cpu")
    assert not [w for w in caught if "untrained" in str(w.message)]


def test_a_report_is_never_left_describing_other_weights(locrob_cli, tmp_path, digits):
    # training again into a folder with a report is refused; a checkpoint file replaced by
    # other weights is another model, so its metrics do not join the report of the first
    run = ["train", "--epochs", "1", "--out", str(tmp_path / "v")]
    assert locrob_cli(*run)[0] == 0
    spec = f"checkpoint:{tmp_path / 'v' / 'model.pt'}"
    evaluate = ["evaluate", "--model", spec, "--max-examples", "5", "--out", str(tmp_path / "v")]
    assert locrob_cli(*evaluate)[0] == 0
    code, _, err = locrob_cli(*run)
    assert code == 2 and "describes the model trained there before" in err
    other = locrob.load_model("small-cnn", num_classes=10)
    locrob.save_checkpoint(tmp_path / "v" / "model.pt", other, "small-cnn", {"num_classes": 10})
    code, _, err = locrob_cli(*evaluate)
    assert code == 2 and "differs in its model (its checkpoint's weights" in err
