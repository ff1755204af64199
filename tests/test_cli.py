"""The command line: the main job, and a one-line error for each kind of bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest


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
    from locrob.training import TrainConfig

    command = typer.main.get_command(app).commands["train"]
    helps = {p.name: p.help for p in command.params}
    defaults = TrainConfig()
    for name in ("epochs", "batch_size", "lr"):
        assert f"(default {getattr(defaults, name)}" in helps[name]
