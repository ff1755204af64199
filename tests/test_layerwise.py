"""Layer-wise robustness (Definition 2, Proposition 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import locrob
from locrob.errors import LocrobError

NO_CLAMP = {"output": "logits", "clamp": None, "device": "cpu"}


def two_linear_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12, bias=False), nn.Linear(12, 8, bias=False))
    model = model.double()
    sigmas = [torch.linalg.matrix_norm(model[i].weight.detach(), 2).item() for i in (1, 2)]
    product = torch.linalg.matrix_norm((model[2].weight @ model[1].weight).detach(), 2).item()
    return model, sigmas, product


def test_linear_layers_give_their_spectral_norms_and_proposition_1_holds():
    model, (s1, s2), s12 = two_linear_layers()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    radii = [0.5, 1.0]
    result = locrob.layerwise_alpha(model, x, radii, method="search", n_draws=10, **NO_CLAMP)
    assert result.layers == ["0", "1", "2"]
    assert torch.allclose(result.per_layer[0], torch.ones(2, dtype=torch.float64))  # Flatten
    assert torch.all(result.per_layer[1] >= 0.99 * s1) and torch.all(
        result.per_layer[1] <= s1 * (1 + 1e-9)
    )
    assert torch.all(result.per_layer[2] >= 0.99 * s2) and torch.all(
        result.per_layer[2] <= s2 * (1 + 1e-9)
    )
    # radii propagate: layer l is perturbed by r * prod of the previous alphas
    assert torch.allclose(
        result.layer_radii[2], torch.tensor(radii, dtype=torch.float64) * result.per_layer[1]
    )
    assert torch.allclose(result.composed, result.per_layer.prod(dim=0))
    # Proposition 1: the end-to-end value never exceeds the composed bound
    assert torch.all(result.end_to_end.curve <= result.composed * (1 + 1e-6))
    assert torch.all(result.end_to_end.curve >= 0.99 * s12)
    assert not bool(result.hypothesis_holds.any()) or s1 <= 1


def test_small_cnn_stages_have_their_exact_constants(trained, digits):
    result = locrob.layerwise_alpha(
        trained.model, digits.train_x[:4], [0.5, 1.0], n_draws=5, device="cpu"
    )
    assert len(result.layers) == len(trained.model)
    # Normalize with std 0.5 scales by exactly 2; Flatten changes nothing
    assert torch.allclose(
        result.per_layer[0], torch.full((2,), 2.0, dtype=torch.float64), rtol=1e-5
    )
    flatten = result.layers.index("9")
    assert torch.allclose(result.per_layer[flatten], torch.ones(2, dtype=torch.float64), rtol=1e-5)
    data = result.to_dict()
    assert set(data) >= {"per_layer", "composed", "end_to_end", "layer_radii", "all_at_most_one"}


def test_preact_resnet18_residual_blocks_compose():
    model = locrob.load_model("preact-resnet18")
    x = torch.rand(2, 3, 32, 32)
    result = locrob.layerwise_alpha(model, x, [0.5], n_draws=1, device="cpu")
    assert result.layers[2:10] == [f"blocks.{i}" for i in range(8)]
    assert result.per_layer.shape == (13, 1)
    assert torch.all(result.per_layer > 0)


def test_layers_that_do_not_chain_are_refused(trained, digits):
    with pytest.raises(
        LocrobError, match="do not compose the model: '3' does not receive the output of '1'"
    ):
        locrob.layerwise_alpha(
            trained.model, digits.train_x[:2], [0.5], layers=["0", "1", "3"], device="cpu"
        )
    with pytest.raises(LocrobError, match="no submodule named nope"):
        locrob.layerwise_alpha(
            trained.model, digits.train_x[:2], [0.5], layers=["nope"], device="cpu"
        )


def test_mixed_norms_keep_proposition_1():
    # inner layers are measured in the input norm (their output is the next layer's input);
    # only the last uses output_norm, so the product still bounds the end-to-end value
    model, _, _ = two_linear_layers()
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    result = locrob.layerwise_alpha(
        model, x, [1.0], method="search", n_draws=10, output_norm="inf", **NO_CLAMP
    )
    assert torch.all(result.end_to_end.curve <= result.composed * (1 + 1e-6))


def test_preset_and_dtype_reach_every_stage():
    model, _, _ = two_linear_layers()
    x = torch.rand(3, 1, 4, 4)  # fp32 images for an fp64 model
    result = locrob.layerwise_alpha(model, x, [0.5], preset="authors-code", n_draws=2, device="cpu")
    settings = result.end_to_end.settings
    assert settings["noise"] == "uniform" and settings["directions"] == "fresh"
    assert settings["n_draws"] == 2 and result.end_to_end.curve.dtype == torch.float64


def test_a_model_without_known_layers_asks_for_them():
    class Opaque(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    with pytest.raises(LocrobError, match="pass layers="):
        locrob.layerwise_alpha(Opaque(), torch.rand(2, 3, 4, 4), [0.5], device="cpu")


def test_printing_shows_each_row_and_how_to_read_composed_and_end_to_end():
    model, _, _ = two_linear_layers()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    result = locrob.layerwise_alpha(model, x, [0.5, 1.0], n_draws=2, **NO_CLAMP)
    lines = str(result).splitlines()
    assert lines[0].split() == ["r", "0.5", "1"]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[1:-1]}
    assert list(rows) == [*result.layers, "composed", "end_to_end"]
    assert rows["composed"] == pytest.approx(result.composed.tolist(), rel=1e-3)
    assert rows["end_to_end"] == pytest.approx(result.end_to_end.curve.tolist(), rel=1e-3)
    assert "neither bounds the other" in lines[-1]
