"""Models cut into stages by tracing: the stages compose the model exactly, on the
architectures of RobustBench's CIFAR-10 zoo, and both sides of Proposition 1 run on them."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import locrob
from locrob.alpha.layerwise import traced_stages
from locrob.alpha.stages import split_stages
from locrob.errors import LocrobError

# one zoo entry per architecture family that builds in a second on a CPU (random weights):
# WideResNet, DM-WideResNet, PreActResNet (two codebases), ResNet, ResNeXt, and nets that
# normalize their input in the forward pass
ZOO = [
    ("Linf", "Carmon2019Unlabeled"),
    ("Linf", "Gowal2020Uncovering_28_10_extra"),
    ("Linf", "Andriushchenko2020Understanding"),
    ("Linf", "Rebuffi2021Fixing_R18_ddpm"),
    ("Linf", "Sehwag2021Proxy_R18"),
    ("Linf", "Dai2021Parameterizing"),
    ("Linf", "Ding2020MMA"),
    ("corruptions", "Hendrycks2020AugMix_ResNeXt"),
    ("corruptions", "Hendrycks2020AugMix_WRN"),
]


def _zoo(threat: str, name: str) -> nn.Module:
    from locrob.adapters.robustbench import import_robustbench

    try:
        zoo = import_robustbench("robustbench.model_zoo")
    except LocrobError:
        pytest.skip("RobustBench is not installed (the robustbench extra)")
    enums = import_robustbench("robustbench.model_zoo.enums")
    entries = zoo.model_dicts[enums.BenchmarkDataset("cifar10")][enums.ThreatModel(threat)]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return entries[name]["model"]().eval()


@pytest.mark.parametrize(("threat", "name"), ZOO, ids=[n for _, n in ZOO])
def test_the_stages_of_a_zoo_architecture_compose_it_exactly(threat, name):
    model = _zoo(threat, name)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    stages = split_stages(model)
    assert len(stages) >= 4
    y = x
    with torch.no_grad():
        for _, stage in stages:
            y = stage(y)
        assert torch.equal(y, model(x))  # the same operations in the same order: bit for bit
    names, modules, inputs = traced_stages(model, x)
    assert names == [n for n, _ in stages] and len(inputs) == len(modules)


def test_both_sides_of_proposition_1_run_on_a_zoo_network_that_names_no_layers():
    model = _zoo("corruptions", "Hendrycks2020AugMix_WRN").double()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = locrob.layerwise_alpha(model, x, [1e-3], n_draws=4, bound=True, output="logits")
    assert found.layers[0] == "sub+truediv"  # the normalization, carried by the first stage
    assert (found.upper.composed >= found.end_to_end.curve).all()
    assert (found.upper.end_to_end.curve >= found.end_to_end.curve).all()


def test_a_model_without_a_single_tensor_between_its_parts_is_refused():
    class TwoPaths(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.b(x) + self.a(x)  # both read the input: no cut between them

    with pytest.raises(LocrobError, match="no point of its forward pass"):
        split_stages(TwoPaths())

    class Branching(nn.Module):
        def forward(self, x):
            return F.relu(x) if x.sum() > 0 else x

    with pytest.raises(LocrobError, match=r"torch\.fx cannot trace Branching"):
        split_stages(Branching())
