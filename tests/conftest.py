"""Shared fixtures: progress bars off, the digits data set, a clean plugin host per test."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import locrob
from locrob import plugins

# the example plugin's package, and the .dist-info pip would write when installing it
PLUGIN_PACKAGE = Path(__file__).parents[1] / "examples" / "third_party_plugin"
THIRD_PARTY = Path(__file__).parent / "third_party"
os.environ["LOCROB_PROGRESS"] = "0"  # before any fixture, session-scoped ones included


@pytest.fixture(autouse=True)
def _quiet_and_isolated(monkeypatch):
    """No progress bars; every test starts and ends with a freshly loaded plugin host."""
    monkeypatch.setenv("LOCROB_PROGRESS", "0")
    monkeypatch.delenv("LOCROB_PLUGINS", raising=False)
    plugins.reload()
    yield
    plugins.reload()


@pytest.fixture(scope="session")
def digits() -> locrob.ImageData:
    return locrob.load_dataset("digits")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, digits):
    """A small-cnn trained 6 epochs on digits, saved as a checkpoint."""
    out = tmp_path_factory.mktemp("run")
    config = locrob.TrainConfig(epochs=6)
    return locrob.train("small-cnn", digits, config=config, out=out, device="cpu")


@pytest.fixture
def locrob_cli(monkeypatch, capsys):
    """Run ``locrob ARGS`` in-process through the console entry point: (exit code, out, err)."""
    from locrob import cli

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["locrob", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exit_:
            code = exit_.code or 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


def subset(data: locrob.ImageData, n_train: int, n_test: int | None = None) -> locrob.ImageData:
    """The first images of each split, as a small data set."""
    n_test = len(data.test_y) if n_test is None else n_test
    return locrob.ImageData(
        "small",
        data.train_x[:n_train],
        data.train_y[:n_train],
        data.test_x[:n_test],
        data.test_y[:n_test],
    )


def assert_reloads(model: torch.nn.Module, path: Path, data: locrob.ImageData) -> None:
    """The checkpoint at ``path`` rebuilds ``model``: the same outputs on a few test images."""
    loaded, _ = locrob.load_checkpoint(path)
    x = data.test_x[:4].float() / 255
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


class Lookup(torch.nn.Module):
    """Right exactly on the stored images (their stored labels), class 9 everywhere else."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keys", images.flatten(1))
        self.register_buffer("onehot", torch.nn.functional.one_hot(labels.long(), 10).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = ((x.flatten(1)[:, None] - self.keys[None]).abs().amax(2) < 1e-6).float()
        never = torch.nn.functional.one_hot(torch.tensor(9), 10).float()
        return torch.where(hit.any(1, keepdim=True), hit @ self.onehot, never)


class TopLeftGray(torch.nn.Module):
    """A linear classifier of one number: the gray level (channel mean) of the top-left pixel.

    An L-inf perturbation of size eps moves that number by at most eps, so an answer whose
    gray level lies more than eps from the decision threshold survives every attack.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[:, :, 0, 0].mean(1, keepdim=True))


def one_robust_one_fragile(images: torch.Tensor, labels: torch.Tensor, eps: float) -> TopLeftGray:
    """A :class:`TopLeftGray` right on two of ``images`` (floats in [0, 1]) only, one robust.

    It gives the darkest image's label below a threshold and the brightest's above it, set
    eps / 4 below the brightest, so the darkest lies more than eps from it (checked) and keeps
    its answer under attack, while darkening the brightest's pixel by eps (its largest channel
    holds at least eps, so its gray level drops by eps / 3 at least) flips its answer. With
    distinct labels, every other image is wrong: clean accuracy 2 / n, robust accuracy 1 / n.
    """
    gray = images[:, :, 0, 0].mean(1).double()
    dark, bright = int(gray.argmin()), int(gray.argmax())
    threshold = float(gray[bright]) - eps / 4
    assert threshold - float(gray[dark]) > eps and float(gray[bright]) >= eps, "images unfit"
    gain = 10.0  # small enough that softmax does not saturate near the threshold
    model = TopLeftGray()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.fill_(-1.0)  # the other classes: below both named ones for every input
        for label, sign in ((int(labels[dark]), -1.0), (int(labels[bright]), 1.0)):
            model.fc.weight[label, 0] = sign * gain
            model.fc.bias[label] = -sign * gain * threshold
    return model.eval()


@pytest.fixture
def third_party(monkeypatch):
    """Put the example plugin's package and its .dist-info on sys.path, as pip would."""
    monkeypatch.syspath_prepend(str(PLUGIN_PACKAGE))
    monkeypatch.syspath_prepend(str(THIRD_PARTY))
    yield THIRD_PARTY
    sys.modules.pop("locrob_example", None)


def _pickle(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """A tiny CIFAR-10 in torchvision's python-version layout (pickled batches of flat rows).

    The checksums torchvision verifies are set to the fake files' own md5 sums, so the real
    integrity check runs and passes. Returns (root, {split: (images NCHW uint8, labels)}).
    """
    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(0)
    folder = tmp_path / CIFAR10.base_folder
    folder.mkdir()
    expected: dict[str, tuple[np.ndarray, np.ndarray]] = {"train": ([], []), "test": ([], [])}
    train_list = []
    for i in range(1, 6):
        rows = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=4).tolist()
        name = f"data_batch_{i}"
        _pickle(folder / name, {"batch_label": name, "data": rows, "labels": labels})
        train_list.append([name, _md5(folder / name)])
        expected["train"][0].append(rows)
        expected["train"][1].extend(labels)
    rows = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
    labels = list(range(6))
    _pickle(folder / "test_batch", {"batch_label": "test", "data": rows, "labels": labels})
    expected["test"][0].append(rows)
    expected["test"][1].extend(labels)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    _pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    monkeypatch.setattr(CIFAR10, "train_list", train_list)
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    arrays = {
        split: (np.concatenate(rows).reshape(-1, 3, 32, 32), np.array(labels))
        for split, (rows, labels) in expected.items()
    }
    return tmp_path, arrays
