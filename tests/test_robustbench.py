"""The RobustBench adapter: zoo models from local checkpoints, clear errors offline."""

from __future__ import annotations

import pytest
import torch

import locrob
from locrob.adapters.robustbench import import_robustbench, parse_zoo_spec, zoo_checkpoint

NAME = "Hendrycks2020AugMix_WRN"  # a small zoo entry (2.2 M weights), CIFAR-10 corruptions


def test_specs_default_to_cifar10_linf():
    assert parse_zoo_spec("Wong2020Fast") == ("cifar10", "Linf", "Wong2020Fast")
    assert parse_zoo_spec("L2/Rice2020Overfitting") == ("cifar10", "L2", "Rice2020Overfitting")
    assert parse_zoo_spec(f"cifar10/corruptions/{NAME}") == ("cifar10", "corruptions", NAME)
    for bad in (None, "", "a/b/c/d", "Linf/"):
        with pytest.raises(locrob.LocrobError, match="robustbench:\\[DATASET/\\]"):
            parse_zoo_spec(bad)


def test_a_zoo_architecture_with_a_local_checkpoint_loads_through_the_model_source(tmp_path):
    zoo = import_robustbench("robustbench.model_zoo")
    enums = import_robustbench("robustbench.model_zoo.enums")
    entry = zoo.model_dicts[enums.BenchmarkDataset("cifar10")][enums.ThreatModel("corruptions")]
    torch.manual_seed(0)
    original = entry[NAME]["model"]().eval()
    path = zoo_checkpoint(tmp_path, "cifar10", "corruptions", NAME)
    path.parent.mkdir(parents=True)
    # the layout RobustBench's checkpoints use: a state dict under 'state_dict', 'module.' keys
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, path)
    model = locrob.load_model(f"robustbench:cifar10/corruptions/{NAME}", model_dir=tmp_path)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-6)
    assert not model.training


def test_the_model_dir_comes_from_the_environment_too(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCROB_MODEL_DIR", str(tmp_path / "zoo"))
    expected = tmp_path / "zoo" / "cifar10" / "corruptions" / f"{NAME}.pt"
    with pytest.raises(locrob.LocrobError, match=f"checkpoint missing: {expected}; place"):
        locrob.load_model(f"robustbench:cifar10/corruptions/{NAME}")


def test_missing_and_unknown_models_are_clear_errors(tmp_path):
    with pytest.raises(
        locrob.LocrobError,
        match=r"checkpoint missing: .*cifar10/Linf/Wong2020Fast.pt; place Wong2020Fast.pt there",
    ):
        locrob.load_model("robustbench:Wong2020Fast", model_dir=tmp_path)
    with pytest.raises(locrob.LocrobError, match="did you mean Wong2020Fast"):
        locrob.load_model("robustbench:Wong2020Fas", model_dir=tmp_path)
    with pytest.raises(locrob.LocrobError, match="no cifar10/Linfinity models"):
        locrob.load_model("robustbench:Linfinity/Wong2020Fast", model_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing downloaded or created
