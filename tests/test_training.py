"""The trainer: reproducibility, the schedule, and the lifecycle hooks every defense rides on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch

import locrob
from locrob import hookimpl
from locrob.errors import LocrobError

FAST = locrob.TrainConfig(epochs=2, batch_size=200)


def _subset(digits, n=400):
    return locrob.ImageData(
        "digits-small", digits.train_x[:n], digits.train_y[:n], digits.test_x, digits.test_y
    )


def test_vanilla_training_learns_digits(trained):
    last = trained.history[-1]
    assert last["test_accuracy"] > 0.9
    assert last["loss"] == pytest.approx(last["cross_entropy"])  # no defense, no extra term


def test_same_seed_same_weights_other_seed_other_weights(digits):
    # on the CPU: cuDNN's convolution gradients are not bit-reproducible by default
    data = _subset(digits)
    a = locrob.train("small-cnn", data, config=FAST, device="cpu").model.state_dict()
    b = locrob.train("small-cnn", data, config=FAST, device="cpu").model.state_dict()
    other = locrob.TrainConfig(epochs=2, batch_size=200, seed=1)
    c = locrob.train("small-cnn", data, config=other, device="cpu")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c.model.state_dict()[k]) for k in a)


def test_learning_rate_drops_by_lr_drop_at_half(digits):
    config = locrob.TrainConfig(epochs=4, batch_size=200, lr=0.05, lr_drop=0.1)
    history = locrob.train("small-cnn", _subset(digits), config=config).history
    assert [h["lr"] for h in history] == pytest.approx([0.05, 0.05, 0.005, 0.005])


@dataclass
class Recorder(locrob.Defense):
    """Counts every lifecycle call and adds a constant loss term."""

    name = "recorder"
    term: float = 0.25
    calls: dict = field(default_factory=dict, init=False)
    order: list = field(default_factory=list, init=False)

    def _count(self, hook):
        self.calls[hook] = self.calls.get(hook, 0) + 1
        self.order.append(hook)

    @hookimpl
    def prepare_model(self, model, context):
        self._count("prepare_model")

    @hookimpl
    def loss_terms(self, model, x, y, logits, context):
        self._count("loss_terms")
        return {"recorder": torch.tensor(self.term, device=logits.device)}

    @hookimpl
    def after_step(self, model, optimizer, context):
        self._count("after_step")

    @hookimpl
    def on_epoch_end(self, model, stats, context):
        self._count("on_epoch_end")
        stats["recorded_epoch"] = context.epoch


@dataclass
class Blank(locrob.Defense):
    """Replaces every training image with black: the model can learn nothing but the prior."""

    name = "blank"

    @hookimpl
    def transform_batch(self, model, x, y, context):
        return torch.zeros_like(x), y


def test_lifecycle_hooks_are_called_at_their_points(digits):
    recorder = Recorder()
    run = locrob.train("small-cnn", _subset(digits), defenses=[recorder], config=FAST)
    steps = FAST.epochs * 2  # 400 images / batch 200
    assert recorder.calls == {
        "prepare_model": 1,
        "loss_terms": steps,
        "after_step": steps,
        "on_epoch_end": FAST.epochs,
    }
    for h in run.history:
        assert h["loss"] == pytest.approx(h["cross_entropy"] + 0.25, abs=1e-5)
        assert h["recorder"] == pytest.approx(0.25)
    assert [h["recorded_epoch"] for h in run.history] == [0, 1]
    epoch = ["loss_terms", "after_step"] * 2 + ["on_epoch_end"]
    assert recorder.order == ["prepare_model", *epoch, *epoch]
    assert run.defenses == [{"name": "recorder", "settings": {"term": 0.25}}]


def test_transform_batch_replaces_what_the_model_trains_on(digits):
    data = _subset(digits)
    run = locrob.train("small-cnn", data, defenses=[Blank()], config=locrob.TrainConfig(epochs=3))
    # trained on black images only: predictions are constant, so accuracy is one class share
    assert run.history[-1]["test_accuracy"] < 0.2


def test_two_defenses_combine_by_activation(digits):
    recorder = Recorder(term=0.5)
    run = locrob.train("small-cnn", _subset(digits), defenses=[recorder, Blank()], config=FAST)
    assert recorder.calls["after_step"] == 4
    assert run.history[-1]["loss"] == pytest.approx(
        run.history[-1]["cross_entropy"] + 0.5, abs=1e-5
    )
    assert [d["name"] for d in run.defenses] == ["recorder", "blank"]


def test_two_batch_transforms_are_refused(digits):
    @dataclass
    class OtherBlank(Blank):
        name = "other-blank"

    with pytest.raises(LocrobError, match="blank and other-blank both replace the training batch"):
        locrob.train("small-cnn", _subset(digits), defenses=[Blank(), OtherBlank()], config=FAST)


def test_defenses_by_name_with_options(third_party, digits, tmp_path):
    run = locrob.train(
        "small-cnn",
        _subset(digits),
        defenses=["input-noise"],
        defense_options={"input-noise": {"sigma": 0.05}},
        config=FAST,
        out=tmp_path,
    )
    assert run.defenses == [{"name": "input-noise", "settings": {"sigma": 0.05}}]
    _, config = locrob.load_checkpoint(tmp_path / "model.pt")
    assert config["defenses"] == run.defenses
    assert config["train"]["epochs"] == 2
    saved = json.loads((tmp_path / "train.json").read_text())
    assert saved["model"] == "small-cnn" and len(saved["history"]) == 2


def test_bad_defense_requests(third_party, digits):
    data = _subset(digits)
    with pytest.raises(LocrobError, match=r"unknown defense 'fortress'; known: input-noise, .*pgd"):
        locrob.train("small-cnn", data, defenses=["fortress"], config=FAST)
    with pytest.raises(
        LocrobError, match="defense 'input-noise' has no option beta; its options: sigma"
    ):
        locrob.train(
            "small-cnn",
            data,
            defenses=["input-noise"],
            defense_options={"input-noise": {"beta": 1}},
        )
    with pytest.raises(LocrobError, match="sigma must be >= 0"):
        locrob.train(
            "small-cnn",
            data,
            defenses=["input-noise"],
            defense_options={"input-noise": {"sigma": -1}},
        )
    with pytest.raises(LocrobError, match="options given for defenses not requested: input-noise"):
        locrob.train("small-cnn", data, defense_options={"input-noise": {"sigma": 0.1}})


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"lr": -0.1}, "learning rate must be positive"),
    ],
)
def test_bad_train_settings(setting, message):
    with pytest.raises(LocrobError, match=message):
        locrob.TrainConfig(**setting)


def test_two_loss_terms_with_one_name_are_refused(digits):
    @dataclass
    class Other(Recorder):
        name = "other-recorder"

    with pytest.raises(LocrobError, match="two loss terms are named 'recorder'"):
        locrob.train("small-cnn", _subset(digits), defenses=[Recorder(), Other()], config=FAST)


def test_a_defense_with_a_misspelled_hook_is_refused(digits):
    @dataclass
    class Typo(locrob.Defense):
        name = "typo"

        @hookimpl
        def after_steps(self, model, optimizer, context):
            pass

    with pytest.raises(LocrobError, match="unknown hook 'after_steps'"):
        locrob.train("small-cnn", _subset(digits), defenses=[Typo()], config=FAST)


def test_training_leaves_the_callers_random_state_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    locrob.train("small-cnn", _subset(digits), config=FAST)
    assert torch.equal(torch.rand(3), expected)


def test_epoch_statistics_are_made_json_ready(digits):
    @dataclass
    class Adds(locrob.Defense):
        name = "adds"

        @hookimpl
        def on_epoch_end(self, model, stats, context):
            stats["norm"] = torch.tensor(1.5)

    run = locrob.train("small-cnn", _subset(digits), defenses=[Adds()], config=FAST)
    assert run.history[-1]["norm"] == 1.5 and isinstance(run.history[-1]["norm"], float)
    json.dumps(run.history, allow_nan=False)


@pytest.mark.parametrize("defenses", [[], ["pgd"]], ids=["vanilla", "pgd"])
def test_resuming_gives_exactly_the_uninterrupted_run(digits, tmp_path, monkeypatch, defenses):
    from locrob import training

    data = _subset(digits)
    config = locrob.TrainConfig(epochs=4, batch_size=200)
    common = {"defenses": defenses, "defense_options": {"pgd": {"steps": 1}} if defenses else None}
    straight = locrob.train("small-cnn", data, config=config, device="cpu", **common)

    real, calls = training.accuracy, []

    def interrupted(*args):  # the run dies while evaluating its third epoch
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(training, "accuracy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        locrob.train("small-cnn", data, config=config, out=tmp_path, device="cpu", **common)
    monkeypatch.setattr(training, "accuracy", real)
    resumed = locrob.train(
        "small-cnn", data, config=config, out=tmp_path, resume=True, device="cpu", **common
    )
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in straight.history]
    assert [h["test_accuracy"] for h in resumed.history] == [
        h["test_accuracy"] for h in straight.history
    ]


def test_resume_refuses_another_run(digits, tmp_path):
    data = _subset(digits)
    locrob.train("small-cnn", data, config=FAST, out=tmp_path, device="cpu")
    other = locrob.TrainConfig(epochs=4, batch_size=200, lr=0.05)
    with pytest.raises(LocrobError, match=r"cannot resume from .*: its training settings differ"):
        locrob.train("small-cnn", data, config=other, out=tmp_path, resume=True, device="cpu")
    with pytest.raises(LocrobError, match="resume needs the run's directory"):
        locrob.train("small-cnn", data, config=FAST, resume=True)
    with pytest.raises(LocrobError, match="checkpoint not found"):
        locrob.train("small-cnn", data, config=FAST, out=tmp_path / "none", resume=True)


def test_resume_from_the_command_line(locrob_cli, tmp_path):
    assert locrob_cli("train", "--epochs", "2", "--out", str(tmp_path))[0] == 0
    code, out, _ = locrob_cli("train", "--epochs", "2", "--resume", "--out", str(tmp_path))
    assert code == 0 and "trained small-cnn" in out
    assert len(json.loads((tmp_path / "train.json").read_text())["history"]) == 2


def test_authors_recipe_is_their_cifar10_schedule():
    # cifar10.py in cadurosar/laplacian_networks: 50 epochs at 0.1, then 50 at 0.001.
    config = locrob.TrainConfig.authors()
    assert (config.epochs, config.batch_size, config.lr, config.drop_epoch) == (100, 100, 0.1, 50)
    assert config.lr * config.lr_drop == pytest.approx(0.001)
    assert (config.momentum, config.weight_decay) == (0.9, 5e-4)
