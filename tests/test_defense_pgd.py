"""PGD adversarial training through the torchattacks adapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import subset

import locrob
from locrob.adapters.torchattacks import make_attack, run_attack
from locrob.contract import TrainConfig, TrainingContext
from locrob.defenses.pgd import PGDTraining
from locrob.errors import LocrobError


def _context():
    return TrainingContext(TrainConfig(), torch.device("cpu"), 10)


@pytest.mark.parametrize(("norm", "eps"), [("inf", 8 / 255), ("l2", 0.5)])
def test_adversarial_batches_stay_in_the_ball_and_the_box_and_raise_the_loss(
    trained, digits, norm, eps
):
    model = trained.model
    x = digits.test_x[:64].float() / 255
    y = digits.test_y[:64]
    defense = PGDTraining(eps=eps, step=eps / 4, steps=10, norm=norm)
    torch.manual_seed(0)
    adv, labels = defense.transform_batch(model=model, x=x, y=y, context=_context())
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "inf" else delta.norm(dim=1)
    assert torch.all(size <= eps + 1e-5)
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(labels, y)
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y) + 0.1
    assert not model.training  # torchattacks gave the model its mode back


def test_pgd_training_by_name_records_the_defense(digits, tmp_path):
    data = subset(digits, 200)
    run = locrob.train(
        "small-cnn",
        data,
        defenses=["pgd"],
        defense_options={"pgd": {"steps": 2}},
        config=TrainConfig(epochs=1, batch_size=100),
        device="cpu",
        out=tmp_path,
    )
    assert run.defenses == [
        {
            "name": "pgd",
            "settings": {
                "eps": 8 / 255,
                "step": 2 / 255,
                "steps": 2,
                "norm": "inf",
                "random_start": True,
            },
        }
    ]
    _, config = locrob.load_checkpoint(tmp_path / "model.pt")
    assert config["defenses"][0]["name"] == "pgd"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eps": -0.1}, "eps must be >= 0"),
        ({"step": 0}, "step must be > 0"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"norm": "l1"}, "norm must be 'inf' or 'l2'"),
    ],
)
def test_bad_pgd_parameters(options, message):
    with pytest.raises(LocrobError, match=message):
        PGDTraining.create(**options)


def test_attacks_refuse_inputs_outside_the_unit_range(trained):
    attack = make_attack(trained.model, "FGSM", eps=0.1)
    with pytest.raises(LocrobError, match=r"must lie in \[0, 1\]"):
        run_attack(attack, torch.full((2, 3, 32, 32), 2.0), torch.tensor([0, 1]))
    with pytest.raises(LocrobError, match="unknown torchattacks attack 'PDG'"):
        make_attack(trained.model, "PDG")


def test_one_pgd_defense_trains_a_second_model_against_that_model(digits):
    # The second model starts from other weights (another seed) than the first: attacking the
    # first instead would give it other adversarial batches, hence other trained weights.
    data = subset(digits, 100, 10)
    shared = PGDTraining(steps=2)

    def run(defense: PGDTraining, seed: int) -> dict[str, torch.Tensor]:
        config = TrainConfig(epochs=1, batch_size=50, seed=seed)
        result = locrob.train("small-cnn", data, defenses=[defense], config=config, device="cpu")
        return result.model.state_dict()

    run(shared, seed=1)
    second = run(shared, seed=0)
    alone = run(PGDTraining(steps=2), seed=0)
    assert all(torch.equal(second[k], alone[k]) for k in alone)
