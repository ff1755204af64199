"""Parseval networks: the retraction, the kernel scaling and the convex merges."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import assert_reloads, subset
from torch import nn

import locrob
from locrob.contract import TrainConfig
from locrob.defenses.parseval import Parseval, retract
from locrob.errors import LocrobError
from locrob.models.merges import ConvexMerge, project_to_simplex


def test_retraction_maps_each_singular_value_by_its_cubic():
    # W <- (1 + b) W - b W W^T W acts on singular values as s -> (1 + b) s - b s^3
    torch.manual_seed(0)
    w = torch.randn(6, 10, dtype=torch.float64) * 0.4
    before = torch.linalg.svdvals(w)
    retract(w, 0.1)
    after = torch.linalg.svdvals(w)
    assert torch.allclose(after, torch.sort(1.1 * before - 0.1 * before**3, descending=True).values)


def test_repeated_retraction_brings_w_wt_towards_identity():
    torch.manual_seed(1)
    w = torch.randn(8, 20) * 0.3
    gaps = []
    for _ in range(60):
        gaps.append(torch.linalg.matrix_norm(w @ w.T - torch.eye(8)).item())
        retract(w, 0.05)
    assert all(b < a for a, b in itertools.pairwise(gaps))
    assert gaps[-1] < 0.2 * gaps[0]


def test_row_sampling_retracts_only_the_sampled_rows():
    torch.manual_seed(2)
    w = torch.randn(6, 10)
    original = w.clone()
    rows = torch.tensor([1, 4])
    retract(w, 0.1, rows)
    assert torch.equal(w[[0, 2, 3, 5]], original[[0, 2, 3, 5]])
    assert not torch.equal(w[rows], original[rows])


@pytest.mark.parametrize(
    ("v", "expected"),
    [
        ([0.6, 0.6], [0.5, 0.5]),
        ([2.0, 0.0], [1.0, 0.0]),
        ([0.3, 0.2], [0.55, 0.45]),
        ([-1.0, 0.5], [0.0, 1.0]),
    ],
)
def test_simplex_projection(v, expected):
    assert project_to_simplex(torch.tensor(v)).tolist() == pytest.approx(expected)


def test_batched_simplex_projection_matches_the_kkt_solution():
    # The projection is max(v - theta, 0) with theta fixed by sum = 1: found here by bisection.
    v = torch.randn(50, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2
    low, high = v.min(1).values - 1, v.max(1).values
    for _ in range(200):
        theta = (low + high) / 2
        over = (v - theta[:, None]).clamp(min=0).sum(1) > 1
        low, high = torch.where(over, theta, low), torch.where(over, high, theta)
    expected = (v - ((low + high) / 2)[:, None]).clamp(min=0)
    assert torch.allclose(project_to_simplex(v), expected, atol=1e-12)
    assert torch.equal(project_to_simplex(v)[7], project_to_simplex(v[7]))


def tiny_preact():
    torch.manual_seed(0)
    return locrob.load_model("preact-resnet18", planes=4, num_classes=10)


def test_prepare_scales_kernels_and_makes_merges_convex():
    model = tiny_preact()
    conv = model.blocks[2].conv1
    weight = conv.weight.detach().clone()
    Parseval().prepare_model(model=model)
    assert torch.allclose(conv.weight, weight / math.sqrt(2 * 9 + 1))
    shortcut = model.blocks[2].shortcut
    assert torch.allclose(shortcut.weight, shortcut.parametrizations.weight.original / math.sqrt(3))
    assert all(isinstance(b.merge, ConvexMerge) for b in model.blocks)


def test_training_keeps_merges_on_the_simplex_and_weights_near_parseval(digits, tmp_path):
    data = subset(digits, 200, 50)
    config = TrainConfig(epochs=1, batch_size=50, lr=0.05)
    kwargs = {"model_options": {"planes": 4}, "config": config, "device": "cpu"}
    run = locrob.train("preact-resnet18", data, defenses=["parseval"], out=tmp_path, **kwargs)
    vanilla = locrob.train("preact-resnet18", data, **kwargs)
    merges = [b.merge.weight.detach() for b in run.model.blocks]
    for w in merges:
        assert torch.all(w >= 0) and w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert any(not torch.allclose(w, torch.full((2,), 0.5)) for w in merges)  # they did learn

    def gap(model):
        w = model.linear.weight.detach()
        return torch.linalg.matrix_norm(w @ w.T - torch.eye(len(w))).item()

    assert gap(run.model) < gap(vanilla.model)
    # the checkpoint rebuilds the parametrizations and merges before loading
    assert_reloads(run.model, tmp_path / "model.pt", digits)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"beta": 0}, "beta must be > 0"), ({"rows": 1.5}, r"rows must be a fraction in \(0, 1\]")],
)
def test_bad_parseval_parameters(options, message):
    with pytest.raises(LocrobError, match=message):
        Parseval.create(**options)


def test_small_cnn_has_no_merges_but_gets_the_retraction(digits):
    data = subset(digits, 100, 20)
    run = locrob.train(
        "small-cnn",
        data,
        defenses=[Parseval(rows=0.5)],
        config=TrainConfig(epochs=1, batch_size=50),
        device="cpu",
    )
    assert not any(isinstance(m, ConvexMerge) for m in run.model.modules())
    assert any(
        isinstance(m, nn.Conv2d) and hasattr(m, "parametrizations") for m in run.model.modules()
    )
