"""The ``adversarial`` metric: torchattacks attacks by name, seeded, on the evaluated examples."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from conftest import subset

import locrob
from locrob.metrics.adversarial import AdversarialAccuracy
from locrob.runtime import mix_seed


def test_pgd_through_the_metric_equals_a_direct_torchattacks_call(trained, digits):
    small = subset(digits, 10, 64)
    report = locrob.evaluate(
        trained.model,
        small,
        [AdversarialAccuracy(block=24)],
        batch_size=32,  # the attacks go by block, whatever the batch size
        seed=5,
        device="cpu",
    )
    res = report.metrics["adversarial"]
    model = trained.model.eval()
    x, y = small.test_x.float() / 255, small.test_y
    survived = torch.ones(64, dtype=torch.bool)
    for k, (cls, eps, step) in enumerate(
        [(torchattacks.PGD, 8 / 255, 2 / 255), (torchattacks.PGDL2, 0.5, 0.1)]
    ):
        attack = cls(model, eps=eps, alpha=step, steps=10, random_start=True)
        hits = []
        for i in range(0, 64, 24):  # blocks of 24 images, each seeded by its first index
            torch.manual_seed(mix_seed(5, k, i))
            hits.append(model(attack(x[i : i + 24], y[i : i + 24])).argmax(1).eq(y[i : i + 24]))
        hits = torch.cat(hits)
        assert res.summary[f"{cls.__name__}@{eps:.4g}"] == float(hits.float().mean())
        survived &= hits
    # worst case: the examples that both attacks leave right, not the lower of the two rates
    assert res.summary["worst_case"] == float(survived.float().mean())
    clean = locrob.evaluate(trained.model, small, ["clean"], device="cpu")
    assert res.summary["PGD@0.03137"] < clean.metrics["clean"].summary["accuracy"]


def test_a_zero_budget_attack_scores_the_clean_accuracy_and_the_rng_is_restored(trained, digits):
    small = subset(digits, 10, 50)
    metric = AdversarialAccuracy(
        attacks=[
            {"attack": "FGSM", "eps": 0.0},
            {"attack": "PGD", "eps": 0.0, "alpha": 0.01, "steps": 3, "label": "pgd0"},
        ]
    )
    state = torch.random.get_rng_state()
    report = locrob.evaluate(trained.model, small, [metric, "clean"], device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)
    clean = report.metrics["clean"].summary["accuracy"]
    assert report.metrics["adversarial"].summary == {
        "FGSM@0": clean,
        "pgd0": clean,
        "worst_case": clean,
    }


@pytest.mark.parametrize(
    ("attacks", "message"),
    [
        ([{"attack": "Nope"}], r"unknown torchattacks attack 'Nope'; known: .*PGD"),
        ([{"attack": "PGD", "epsilon": 0.1}], r"bad options for torchattacks.PGD"),
        (["PGD"], r"option 'attacks' expects a list of dicts"),
        ([{"eps": 0.1}], r"each attack is"),
        ([], r"at least one attack"),
        ([{"attack": "PGD", "eps": 0.1}, {"attack": "PGD", "eps": 0.1}], r"share a label"),
    ],
)
def test_bad_attack_specs_are_refused(trained, digits, attacks, message):
    with pytest.raises(locrob.LocrobError, match=message):
        metric = AdversarialAccuracy.create(attacks=attacks)
        locrob.evaluate(trained.model, subset(digits, 10, 8), [metric], device="cpu")
