"""Reference architectures and checkpoints."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch import nn

import locrob
from locrob.errors import LocrobError
from locrob.models.architectures import CIFAR10_MEAN, CIFAR10_STD


def test_small_cnn_shapes_and_sequential_form():
    model = locrob.load_model("small-cnn", num_classes=7)
    assert isinstance(model, nn.Sequential)
    assert model(torch.rand(5, 3, 32, 32)).shape == (5, 7)
    assert not model.training


def test_preact_resnet18_matches_the_published_parameter_count():
    # Hand count of the authors' PreActResNet18 (the same as the widely used CIFAR
    # PreActResNet18): stem 1,728; blocks 147,968 + 229,760 + 295,424 + 918,272
    # + 1,180,672 + 3,671,552 + 4,720,640; linear 5,130.
    model = locrob.load_model("preact-resnet18")
    assert sum(p.numel() for p in model.parameters()) == 11_171_146
    # 2 ReLUs per block and the final one, each an nn.ReLU module that hooks can reach
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 17
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_preact_resnet18_normalizes_inside_with_the_authors_constants():
    model = locrob.load_model("preact-resnet18")
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(x), (x - mean) / std)
    assert CIFAR10_STD == (0.2023, 0.1994, 0.2010)


def test_preact_projection_shortcut_starts_from_the_first_relu():
    block = locrob.load_model("preact-resnet18").blocks[2]
    seen = {}
    block.relu1.register_forward_hook(lambda m, i, o: seen.update(relu1=o))
    block.shortcut.register_forward_hook(lambda m, i, o: seen.update(input=i[0]))
    block(torch.randn(1, 64, 8, 8))
    assert seen["input"] is seen["relu1"]


def test_architecture_options_are_checked():
    with pytest.raises(LocrobError, match="bad options for model 'small-cnn'"):
        locrob.load_model("small-cnn", depth=3)
    with pytest.raises(LocrobError, match="takes no ':x' argument"):
        locrob.load_model("small-cnn:x")


def _save(tmp_path):
    torch.manual_seed(0)
    model = locrob.load_model("small-cnn", num_classes=4)
    path = locrob.save_checkpoint(
        tmp_path / "m.pt", model, "small-cnn", {"num_classes": 4}, dataset="digits", defenses=[]
    )
    return model, path


def test_checkpoint_roundtrip(tmp_path):
    model, path = _save(tmp_path)
    loaded, config = locrob.load_checkpoint(path)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    assert config["source"] == "small-cnn" and config["options"] == {"num_classes": 4}
    assert config["dataset"] == "digits"
    assert torch.equal(locrob.load_model(f"checkpoint:{path}")(x), model(x))
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_checkpoint_loads_with_weights_only(tmp_path):
    _, path = _save(tmp_path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "locrob-checkpoint"


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda good: good[: len(good) // 2], "not a readable checkpoint"),
        (lambda good: b"garbage" * 10, "not a readable checkpoint"),
        (lambda good: pickle.dumps(_Exploit()), "not a readable checkpoint"),
        (lambda good: _torch_bytes({"weights": torch.zeros(2)}), "not a locrob checkpoint"),
    ],
    ids=["truncated", "garbage", "pickled-code", "foreign"],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_checkpoints_are_refused(tmp_path, content, message, capsys):
    _, path = _save(tmp_path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content(path.read_bytes()))
    with pytest.raises(LocrobError, match=message):
        locrob.load_checkpoint(bad)
    assert "code ran" not in capsys.readouterr().out


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_checkpoint_that_does_not_fit_its_model(tmp_path):
    model = locrob.load_model("small-cnn", num_classes=4)
    path = locrob.save_checkpoint(tmp_path / "m.pt", model, "small-cnn", {"num_classes": 5})
    with pytest.raises(LocrobError, match=r"does not match its model 'small-cnn': size mismatch"):
        locrob.load_checkpoint(path)


@pytest.mark.parametrize(
    "config",
    [
        '{"source": "checkpoint", "options": {}}',
        '{"options": {}}',
        '{"source": "small-cnn", "options": [1]}',
        "[1, 2]",
    ],
    ids=["points-at-a-checkpoint", "no-source", "options-not-a-dict", "not-a-dict"],
)
def test_damaged_checkpoint_configs(tmp_path, config):
    path = tmp_path / "m.pt"
    torch.save(
        {"format": "locrob-checkpoint", "format_version": 1, "config": config, "state_dict": {}},
        path,
    )
    with pytest.raises(LocrobError, match="damaged locrob checkpoint"):
        locrob.load_checkpoint(path)


def test_training_starts_from_an_architecture_only(tmp_path, digits):
    _, path = _save(tmp_path)
    with pytest.raises(LocrobError, match="train builds an architecture by name, not 'checkpoint:"):
        locrob.train(f"checkpoint:{path}", digits)
    with pytest.raises(
        LocrobError, match=r"train builds an architecture by name \(like 'small-cnn'\), got Linear"
    ):
        locrob.train(torch.nn.Linear(2, 2), digits)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(LocrobError, match=r"checkpoint not found.*locrob train"):
        locrob.load_model(f"checkpoint:{tmp_path / 'none.pt'}")
