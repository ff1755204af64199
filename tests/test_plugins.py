"""The plugin host: entry-point loading, the allow-list, registries, and a third-party plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import PLUGIN_PACKAGE, THIRD_PARTY

import locrob
from locrob import hookspecs, plugins
from locrob.errors import LocrobError

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomllib joined the standard library in 3.11; tomli is its backport (the test extra)
    import tomli as tomllib


def test_builtins_load_through_the_entry_point_group():
    infos = {info.name: info for info in plugins.host.plugins()}
    for name in (
        "clean",
        "local-robustness",
        "digits",
        "cifar",
        "npz",
        "architectures",
        "checkpoint",
    ):
        assert infos[name].distribution == "locrob"
        assert infos[name].version == locrob.__version__
    assert infos["clean"].hooks == ("register_metrics",)
    reg = locrob.registries()
    assert reg.metrics.names() == [
        "adversarial",
        "clean",
        "clever",
        "corruptions",
        "local-robustness",
        "loss-sensitivity",
        "noise",
        "separation",
    ]
    assert {"small-cnn", "preact-resnet18", "checkpoint"} <= set(reg.model_sources.names())
    assert {"digits", "cifar10", "cifar100", "npz"} <= set(reg.dataset_sources.names())


def test_hookimpl_is_exported_from_the_package_root():
    assert locrob.hookimpl is hookspecs.hookimpl
    assert locrob.hookimpl.project_name == "locrob"


def test_plugins_load_once_and_lazily(monkeypatch):
    calls = []
    real = plugins.metadata.entry_points

    def counting(**kwargs):
        if kwargs.get("group") == "locrob":  # other libraries read their own groups
            calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(plugins.metadata, "entry_points", counting)
    plugins.reload()
    assert calls == [] and plugins.host.pm.list_name_plugin() == []
    first = locrob.registries()
    assert locrob.registries() is first
    plugins.host.load()
    locrob.load_dataset("digits")
    assert calls == [{"group": "locrob"}]


def test_allow_list_limits_what_loads(monkeypatch):
    monkeypatch.setenv("LOCROB_PLUGINS", "digits, clean")
    plugins.reload()
    assert {info.name for info in plugins.host.plugins()} == {"digits", "clean"}
    with pytest.raises(LocrobError, match="unknown model source 'small-cnn'; known: none"):
        locrob.load_model("small-cnn")


def test_empty_allow_list_loads_nothing(monkeypatch):
    monkeypatch.setenv("LOCROB_PLUGINS", "")
    plugins.reload()
    assert plugins.host.plugins() == []


def test_allow_list_naming_an_absent_plugin_is_an_error(monkeypatch):
    monkeypatch.setenv("LOCROB_PLUGINS", "clean,no-such-plugin")
    plugins.reload()
    with pytest.raises(LocrobError, match=r"no-such-plugin.*installed:.*clean"):
        locrob.registries()


@pytest.mark.parametrize("name", ["locrob-example", "locrob_example", "Locrob.Example"])
def test_allow_list_accepts_a_distribution_name(monkeypatch, third_party, name):
    monkeypatch.setenv("LOCROB_PLUGINS", name)
    plugins.reload()
    assert [info.name for info in plugins.host.plugins()] == ["example"]


def _fake_distribution(root, dist, entry, module, source):
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[locrob]\n{entry} = {module}\n")
    (root / f"{module}.py").write_text(source)


def test_a_broken_plugin_is_one_clear_error(monkeypatch, tmp_path):
    _fake_distribution(
        tmp_path, "broken", "broken", "broken_mod", "raise ImportError('no torch 9')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        LocrobError, match=r"plugin 'broken' from broken failed to load.*LOCROB_PLUGINS"
    ):
        locrob.registries()


def test_a_plugin_taking_a_builtin_name_is_refused(monkeypatch, tmp_path):
    _fake_distribution(tmp_path, "impostor", "clean", "impostor_mod", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LocrobError, match="two installed plugins are named 'clean'"):
        locrob.registries()


def test_duplicate_names_are_refused():
    class Twin:
        @locrob.hookimpl
        def register_metrics(self, register):
            register("clean", object)

    plugins.host.register(Twin(), name="twin")
    with pytest.raises(LocrobError, match="metric 'clean' is registered twice"):
        locrob.registries()


def test_unknown_names_list_the_known_ones():
    with pytest.raises(
        LocrobError, match=r"unknown dataset 'mnist'; known: cifar10, cifar100, digits, npz"
    ):
        locrob.load_dataset("mnist")
    with pytest.raises(LocrobError, match="unknown metric 'nope'; known: adversarial, clean"):
        locrob.evaluate(torch.nn.Flatten(), "digits", ["nope"])


def test_third_party_plugin_registers_by_entry_point_alone(third_party, digits, trained):
    infos = {info.name: info for info in plugins.host.plugins()}
    assert infos["example"].distribution == "locrob-example"
    assert infos["example"].version == "0.1.0"
    assert infos["example"].hooks == ("register_defenses", "register_metrics")
    reg = locrob.registries()
    assert "mean-confidence" in reg.metrics
    assert "input-noise" in reg.defenses

    report = locrob.evaluate(trained.model, digits, ["clean", "mean-confidence"])
    with torch.no_grad():
        x = digits.test_x.float() / 255
        expected = trained.model(x).softmax(1).amax(1).mean()
    assert report.metrics["mean-confidence"].summary["mean"] == pytest.approx(
        float(expected), abs=1e-6
    )


def test_third_party_plugin_through_the_cli(third_party, trained, tmp_path):
    path = os.pathsep.join([str(third_party), str(PLUGIN_PACKAGE)])
    env = {**os.environ, "PYTHONPATH": path, "LOCROB_PROGRESS": "0"}
    listing = subprocess.run(
        [sys.executable, "-m", "locrob", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "example  [locrob-example 0.1.0]  hooks: register_defenses, register_metrics" in listing
    assert (
        "metrics: adversarial, clean, clever, corruptions, local-robustness, loss-sensitivity, "
        "mean-confidence, noise, separation" in listing
    )
    assert "defenses: input-noise" in listing

    out = tmp_path / "eval"
    cmd = [
        sys.executable,
        "-m",
        "locrob",
        "evaluate",
        "--model",
        f"checkpoint:{trained.checkpoint}",
    ]
    cmd += ["--metrics", "clean,mean-confidence", "--out", str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "mean-confidence mean" in result.stdout
    report = json.loads((out / "report.json").read_text())
    with torch.no_grad():
        x = locrob.load_dataset("digits").test_x.float() / 255
        expected = float(trained.model(x).softmax(1).amax(1).mean())
    assert report["metrics"]["mean-confidence"]["summary"]["mean"] == pytest.approx(
        expected, abs=1e-5
    )


def test_the_example_plugin_declares_the_entry_point_its_dist_info_records():
    project = tomllib.loads((PLUGIN_PACKAGE / "pyproject.toml").read_text())["project"]
    recorded = (THIRD_PARTY / "locrob_example-0.1.0.dist-info" / "entry_points.txt").read_text()
    assert project["name"] == "locrob-example" and project["version"] == "0.1.0"
    for name, target in project["entry-points"]["locrob"].items():
        assert f"{name} = {target}" in recorded
