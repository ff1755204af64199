"""L2-nonexpansive networks: every layer, and the whole network, is 1-Lipschitz in L2."""

from __future__ import annotations

import pytest
import torch
from conftest import BOUND, operator_norm, subset
from torch import nn

import locrob
from locrob.contract import TrainConfig
from locrob.defenses.l2nn import L2NNTraining, margin_hinge
from locrob.errors import LocrobError
from locrob.models.l2nn import NonexpansiveConv2d, NonexpansiveLinear, TwoSidedReLU


def searched_alpha(module: nn.Module, x: torch.Tensor, radii: list[float]) -> torch.Tensor:
    """alpha_lim of ``module`` around ``x`` by gradient-ascent search (logits, no clamp)."""
    result = locrob.alpha_lim(
        module, x, radii, method="search", n_draws=10, output="logits", clamp=None, device="cpu"
    )
    return result.curve


def model(scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(0)
    net = locrob.load_model("l2nn", width=8).double()
    if scale != 1.0:  # large weights: the rescaling must then bring each map back to norm <= 1
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(scale)
    return net


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_every_linear_map_has_operator_norm_at_most_one(scale):
    net = model(scale)
    shapes = {1: (1, 3, 32, 32), 4: (1, 16, 16, 16), 7: (1, 32, 8, 8), 11: (1, 512)}
    for index, shape in shapes.items():
        layer = net[index]
        assert isinstance(layer, (NonexpansiveConv2d, NonexpansiveLinear))
        assert operator_norm(layer, shape) <= BOUND


@pytest.mark.parametrize(
    ("layer", "shape"),
    [(TwoSidedReLU(), (6, 4, 8, 8)), (nn.LPPool2d(2, 2), (6, 4, 8, 8))],
    ids=["two-sided-relu", "l2-pooling"],
)
def test_nonlinear_layers_are_nonexpansive_by_search(layer, shape):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    layer.register_buffer("fp64", torch.zeros((), dtype=torch.float64))
    curve = searched_alpha(layer, x, [0.01, 0.5, 2.0])
    assert torch.all(curve <= BOUND)
    assert curve[-1] > 0.5  # the search does find slopes near 1


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_the_whole_network_is_nonexpansive_by_search(scale, digits):
    x = digits.train_x[:6].double() / 255
    assert torch.all(searched_alpha(model(scale), x, [0.05, 0.5, 2.0]) <= BOUND)


def test_margin_hinge_is_the_hand_computed_value():
    logits = torch.tensor([[2.0, 1.95, 0.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 2])
    # margins: 2 - 1.95 = 0.05 -> hinge 0.05; 1 - 3 = -2 -> hinge 2.1
    assert margin_hinge(logits, y, 0.1).item() == pytest.approx((0.05 + 2.1) / 2)


def test_l2nn_trains_with_the_defense_and_stays_nonexpansive(digits):
    run = locrob.train(
        "l2nn",
        subset(digits, 200, 40),
        defenses=["l2nn"],
        model_options={"width": 8},
        config=TrainConfig(epochs=2, batch_size=50),
        device="cpu",
    )
    # A barely trained nonexpansive network's logit gaps are small, so the hinge stays near its
    # margin 0.1 and the term near weight x margin = 0.01; it enters the loss.
    for h in run.history:
        assert 0.005 < h["margin"] < 0.05
        assert h["loss"] == pytest.approx(h["cross_entropy"] + h["margin"])
    net = run.model.double()
    assert operator_norm(net[1], (1, 3, 32, 32)) <= BOUND


def test_the_defense_refuses_expansive_layers():
    with pytest.raises(
        LocrobError, match=r"l2nn needs a network of nonexpansive layers.*BatchNorm2d"
    ):
        L2NNTraining().prepare_model(model=locrob.load_model("small-cnn"))


@pytest.mark.parametrize(
    ("options", "message"),
    [({"margin": 0}, "margin must be > 0"), ({"weight": -1}, "weight must be >= 0")],
)
def test_bad_l2nn_parameters(options, message):
    with pytest.raises(LocrobError, match=message):
        L2NNTraining.create(**options)
