"""The RobustBench adapter: zoo models from local checkpoints, clear errors offline."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
import torch
from conftest import Lookup, one_robust_one_fragile, write_cifar10c

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


def test_a_failed_download_gives_the_same_clear_error(tmp_path, monkeypatch):
    utils = import_robustbench("robustbench.utils")

    def offline(*args, **kwargs):
        raise ConnectionError("no route to drive.google.com")

    monkeypatch.setattr(utils, "download_gdrive_new", offline)
    with pytest.raises(
        locrob.LocrobError,
        match=r"checkpoint missing: .*Wong2020Fast\.pt, and downloading it failed \(Connection",
    ):
        locrob.load_model("robustbench:Wong2020Fast", model_dir=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []  # the cifar10/Linf/ RobustBench made is removed


def test_evaluate_download_reaches_the_model_source(locrob_cli, tmp_path, monkeypatch):
    utils = import_robustbench("robustbench.utils")
    fetched = []

    def offline(gdrive_id, path):
        fetched.append(path)
        raise ConnectionError("no route to drive.google.com")

    monkeypatch.setattr(utils, "download_gdrive_new", offline)
    monkeypatch.setenv("LOCROB_MODEL_DIR", str(tmp_path / "models"))
    args = ["evaluate", "--model", "robustbench:Wong2020Fast", "--out", str(tmp_path / "o")]
    code, _, err = locrob_cli(*args)
    assert code == 2 and "pass --download (locrob evaluate" in err and not fetched
    code, _, err = locrob_cli(*args, "--download")
    assert code == 2 and len(fetched) == 1
    assert err.strip().splitlines()[-1].startswith("locrob: error: RobustBench checkpoint")
    assert "downloading it failed (ConnectionError)" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_cifar10c_files_are_an_error_that_creates_nothing(tmp_path):
    from locrob.adapters.robustbench import load_corrupted_cifar

    root = tmp_path / "data"
    with pytest.raises(
        locrob.LocrobError, match=r"cifar10-c files missing: .*CIFAR-10-C/fog\.npy.*zenodo"
    ):
        load_corrupted_cifar("cifar10-c", "fog", 1, root, 10)
    assert list(tmp_path.iterdir()) == []


def test_benchmark_alongside_without_cifar_files_is_an_error_that_creates_nothing(
    tmp_path, monkeypatch
):
    from locrob.adapters.benchmark import Benchmark, benchmark_alongside

    monkeypatch.chdir(tmp_path)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
    with pytest.raises(locrob.LocrobError, match=r"expected data/cifar-10-batches-py/"):
        benchmark_alongside(model, ["clean"], device="cpu")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(locrob.LocrobError, match=r"could not download cifar10 into data"):
        benchmark_alongside(model, ["clean"], device="cpu", download=True)
    with pytest.raises(locrob.LocrobError, match=r"benchmarks no mnist/Linf .*data sets: cifar10"):
        benchmark_alongside(model, ["clean"], Benchmark("mnist"), device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_benchmark_alongside_runs_autoattack_and_locrob_on_the_same_examples(
    fake_cifar10, tmp_path, monkeypatch
):
    from locrob.adapters.benchmark import Benchmark, benchmark_alongside

    root, expected = fake_cifar10
    x = torch.from_numpy(expected["test"][0].reshape(-1, 3, 32, 32)).float() / 255
    y = torch.as_tensor(expected["test"][1])
    # right on 2 of the 6 images, robustly on 1 of them: AutoAttack must break exactly one
    model = one_robust_one_fragile(x, y, 8 / 255)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    report = benchmark_alongside(
        model,
        ["clean"],
        Benchmark(eps=8 / 255, max_examples=6),
        data_dir=root,
        batch_size=6,
        device="cpu",
        name="gray",
    )
    rb = report.metrics["robustbench"]
    assert rb.summary == {
        "clean_accuracy": pytest.approx(2 / 6),
        "autoattack_accuracy": pytest.approx(1 / 6),
    }
    assert report.metrics["clean"].summary["accuracy"] == pytest.approx(2 / 6)
    assert report.n_examples == 6
    info = report.model["robustbench"]
    assert info["clean_acc"] == 33.33 and info["autoattack_acc"] == "16.67"
    assert info["eps"] == 8 / 255 and info["name"] == "gray"
    assert list(cwd.iterdir()) == []  # nothing written into the working directory
    report.save(tmp_path / "out")
    again = locrob.load_report(tmp_path / "out")
    assert again.model["robustbench"] == info


def test_benchmark_alongside_takes_corruptions_through_load_cifar10c(
    fake_cifar10, tmp_path, monkeypatch
):
    from locrob.adapters.benchmark import Benchmark, benchmark_alongside

    root, expected = fake_cifar10
    written, labels = write_cifar10c(root, ["fog"], n_written=6)
    rb_eval = import_robustbench("robustbench.eval")
    monkeypatch.setattr(rb_eval, "benchmark", lambda *a, **k: pytest.fail("crashing path used"))
    monkeypatch.setattr(
        rb_eval, "corruptions_evaluation", lambda *a, **k: pytest.fail("crashing path used")
    )
    # right on every clean image (labels 0 to 5) and on the first 3 of the 6 fog images; the
    # others are labelled below 9, so class 9 is wrong on them
    x = torch.from_numpy(expected["test"][0]).float() / 255
    fog = torch.from_numpy(written["fog", 1][:3]).permute(0, 3, 1, 2).float() / 255
    keys = torch.cat([x, fog])
    model = Lookup(
        keys, torch.cat([torch.from_numpy(expected["test"][1]), torch.from_numpy(labels[:3])])
    )
    report = benchmark_alongside(
        model,
        ["clean"],
        Benchmark(threat_model="corruptions", max_examples=6),
        data_dir=root,
        device="cpu",
        metric_options={"corruptions": {"corruptions": ["fog"], "severities": [1]}},
    )
    corr = report.metrics["corruptions"]
    assert corr.settings["source"] == "cifar10-c"
    assert corr.details["accuracy"] == [[0.5]]
    assert report.metrics["robustbench"].summary == {
        "clean_accuracy": 1.0,
        "corruptions_accuracy": 0.5,
    }
    assert report.model["robustbench"]["corruptions_acc"] == "50.00"
    assert report.model["robustbench"]["clean_acc"] == 100.0
