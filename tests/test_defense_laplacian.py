"""Laplacian networks: the smoothness term against a hand computation, and its gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_reloads, numpy_smoothness, subset
from torch import nn

import locrob
from locrob.contract import TrainConfig, TrainingContext
from locrob.defenses.laplacian import Laplacian, cosine_graphs, smoothness
from locrob.errors import LocrobError


@pytest.mark.parametrize("m", [1, 2, 3])
def test_smoothness_matches_the_hand_computation(m):
    a = np.array([[1.0, 0.0, 2.0], [0.5, 1.0, 0.0], [0.0, 3.0, 1.0], [2.0, 2.0, 0.5]])
    labels = np.array([0, 0, 1, 2])
    got = smoothness(cosine_graphs([torch.tensor(a)]), torch.tensor(labels), 3, m)
    assert got.shape == (1,) and got.item() == pytest.approx(numpy_smoothness(a, labels, 3, m))


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6),
        nn.ReLU(),
        nn.Linear(6, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
        nn.ReLU(),
        nn.Linear(3, 2),
    )


def test_loss_term_is_the_weighted_mean_change_and_reaches_the_weights():
    model = small_net()
    defense = Laplacian(gamma=0.1, m=2)
    context = TrainingContext(TrainConfig(), torch.device("cpu"), 2)
    defense.prepare_model(model=model)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    hidden = []
    h = x
    with torch.no_grad():  # the reference pass, in eval mode so the defense records nothing
        model.eval()
        for layer in model:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                hidden.append(h.numpy().astype(np.float64))
    model.train()
    model(x)  # the training forward pass the defense records
    s = [numpy_smoothness(a, y.numpy(), 2, 2) for a in hidden]
    expected = 0.1**2 * np.mean([abs(s[1] - s[0]), abs(s[2] - s[1])])
    term = defense.loss_terms(y=y, context=context)["laplacian"]
    assert term.item() == pytest.approx(expected, rel=1e-5)
    term.backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_evaluation_forwards_record_nothing():
    model = small_net()
    defense = Laplacian()
    defense.prepare_model(model=model)
    model.eval()
    with torch.no_grad():
        model(torch.randn(3, 4))
    assert defense._outputs == []
    model.train()
    model(torch.randn(3, 4))
    model(torch.randn(3, 4))  # a new forward pass starts a new record
    assert len(defense._outputs) == 3


def test_parseval_and_laplacian_combine_by_activation(digits, tmp_path):
    data = subset(digits, 200, 40)
    run = locrob.train(
        "small-cnn",
        data,
        defenses=["parseval", "laplacian"],
        config=TrainConfig(epochs=2, batch_size=100, lr=0.01),
        device="cpu",
        out=tmp_path,
    )
    assert [d["name"] for d in run.defenses] == ["parseval", "laplacian"]
    assert all(h["laplacian"] > 0 for h in run.history)
    assert any(hasattr(m, "parametrizations") for m in run.model.modules())
    assert_reloads(run.model, tmp_path / "model.pt", digits)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"gamma": 0}, "gamma must be > 0"), ({"m": 0}, "m must be an integer >= 1")],
)
def test_bad_laplacian_parameters(options, message):
    with pytest.raises(LocrobError, match=message):
        Laplacian.create(**options)


def test_a_model_with_one_relu_is_refused():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(LocrobError, match=r"at least two nn\.ReLU modules"):
        Laplacian().prepare_model(model=model)


def test_divergence_is_reported_not_returned(digits):
    from dataclasses import dataclass

    @dataclass
    class Poison(locrob.Defense):
        name = "poison"

        @locrob.hookimpl
        def after_step(self, model, optimizer, context):
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    data = subset(digits, 100, 20)
    with pytest.raises(
        LocrobError, match="training diverged in epoch 1: the weights hold NaN or Inf"
    ):
        locrob.train(
            "small-cnn",
            data,
            defenses=[Poison()],
            config=TrainConfig(epochs=1, batch_size=100),
            device="cpu",
        )


def test_gram_form_has_the_value_and_gradient_of_normalized_rows():
    # Reference: the authors' order of operations (row-normalize, then N N^T), fp64 autograd;
    # one all-zero row (a dead example) must keep every gradient finite.
    a = torch.rand(6, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a[3] = 0
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    y = torch.nn.functional.one_hot(labels, 3).double()

    def reference(x):
        n = torch.nn.functional.normalize(x, dim=1)
        w = n @ n.T
        lap = torch.diag(w.sum(1)) - w
        return torch.trace(y.T @ lap @ lap @ y)

    ours = a.clone().requires_grad_(True)
    theirs = a.clone().requires_grad_(True)
    got = smoothness(cosine_graphs([ours]), labels, 3, 2)[0]
    expected = reference(theirs)
    got.backward()
    expected.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.isfinite(ours.grad).all()
    assert torch.allclose(ours.grad, theirs.grad, rtol=1e-9, atol=1e-12)
