"""The ART adapter: classifiers both ways, α_lim on ART models, CLEVER and loss sensitivity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier
from conftest import subset
from torch import nn

import locrob
from locrob.adapters.art import to_art
from locrob.models.normalize import Normalize

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def smooth_net(outputs: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.Tanh(), nn.Linear(32, outputs))


def test_alpha_lim_of_an_art_classifier_is_that_of_the_raw_model():
    net, x = smooth_net(), torch.rand(6, 3, 8, 8)
    plain = to_art(net, (3, 8, 8), 10)
    options = dict(n_draws=40, output="logits", device="cpu", seed=1)
    raw = locrob.alpha_lim(net, x, [0.1, 0.5], **options)
    wrapped = locrob.alpha_lim(plain, x, [0.1, 0.5], **options)
    assert torch.equal(raw.curve, wrapped.curve)
    # ART's own standardisation applied differentiably = a model normalizing inside
    standardised = PyTorchClassifier(
        model=net,
        loss=nn.CrossEntropyLoss(),
        input_shape=(3, 8, 8),
        nb_classes=10,
        clip_values=(0, 1),
        preprocessing=(np.array(MEAN)[:, None, None], np.array(STD)[:, None, None]),
    )
    inside = nn.Sequential(Normalize(MEAN, STD), net)
    for method in ("sample", "search"):
        a = locrob.alpha_lim(inside, x, [0.1, 0.5], method=method, **options)
        b = locrob.alpha_lim(standardised, x, [0.1, 0.5], method=method, **options)
        assert torch.allclose(a.curve, b.curve, rtol=1e-5), method


def test_evaluate_takes_an_art_classifier(trained, digits):
    small = subset(digits, 10, 60)
    classifier = to_art(trained.model, (3, 32, 32), 10)
    via_art = locrob.evaluate(classifier, small, ["clean"], device="cpu")
    raw = locrob.evaluate(trained.model, small, ["clean"], device="cpu")
    assert via_art.metrics["clean"].summary == raw.metrics["clean"].summary


def test_loss_sensitivity_is_the_mean_input_gradient_norm(trained, digits):
    small = subset(digits, 10, 40)
    report = locrob.evaluate(
        trained.model, small, ["loss-sensitivity"], batch_size=16, device="cpu"
    )
    x = (small.test_x.float() / 255).requires_grad_()
    loss = nn.functional.cross_entropy(trained.model.eval()(x), small.test_y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    expected = float(grad.flatten(1).norm(dim=1).mean())
    got = report.metrics["loss-sensitivity"].summary["loss_sensitivity"]
    assert got == pytest.approx(expected, rel=1e-4)


def test_alpha_search_at_a_small_radius_finds_the_largest_gradient_and_clever_sits_beside():
    # one smooth output: alpha_lim(f, r) -> max ||grad f|| over the points as r -> 0
    net, x = smooth_net(outputs=1, seed=2), torch.rand(20, 3, 8, 8)
    x.requires_grad_()
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    largest = float(grad.flatten(1).norm(dim=1).max())
    result = locrob.alpha_lim(
        net,
        x.detach(),
        [1e-3],
        method="search",
        output="logits",
        clamp=None,
        n_draws=20,
        device="cpu",
        seed=0,
    )
    assert float(result.curve[0]) == pytest.approx(largest, rel=0.05)
    assert float(result.curve[0]) <= largest * 1.05  # a lower bound of the ball's supremum
    # CLEVER on a two-class version of the same function, reported beside alpha_lim
    two = nn.Sequential(net, nn.Linear(1, 2))
    data = locrob.ImageData(
        "pts",
        (x.detach() * 255).to(torch.uint8),
        torch.zeros(20).long(),
        (x.detach() * 255).to(torch.uint8),
        torch.zeros(20).long(),
    )
    data.classes = ["a", "b"]
    report = locrob.evaluate(
        two,
        data,
        ["clever"],
        device="cpu",
        metric_options={
            "clever": {"max_examples": 3, "nb_batches": 5, "batch_size": 10, "radius": 5.0}
        },
    )
    scores = torch.tensor(report.metrics["clever"].details["scores"], dtype=torch.float64)
    # CLEVER: the class margin over the largest margin gradient norm it estimates in the ball;
    # this function is nearly linear, so that is about the margin over its gradient norm at x
    points = (data.test_x[:3].float() / 255).requires_grad_()
    logits = two(points)
    margin = logits[:, 0] - logits[:, 1]
    (grad,) = torch.autograd.grad(margin.sum(), points)
    first_order = (margin.abs() / grad.flatten(1).norm(dim=1)).detach().double()
    assert torch.allclose(scores, first_order, rtol=0.1)


def test_clever_settings_are_checked():
    with pytest.raises(locrob.LocrobError, match="norm must be 1, 2 or inf"):
        locrob.registries().metrics.get("clever").create(norm=3)
    with pytest.raises(locrob.LocrobError, match="radius must be positive"):
        locrob.registries().metrics.get("clever").create(radius=0)
