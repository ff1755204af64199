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
        "robustbench",
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


def _loaded(monkeypatch, value: str) -> set[str]:
    monkeypatch.setenv("LOCROB_PLUGINS", value)
    plugins.reload()
    return {info.name for info in plugins.host.plugins()}


def test_an_entry_point_name_decides_before_its_distribution(monkeypatch):
    assert _loaded(monkeypatch, "-locrob, digits, clean") == {"digits", "clean"}
    with pytest.raises(LocrobError, match="unknown model source 'small-cnn'; known: none"):
        locrob.load_model("small-cnn")
    assert _loaded(monkeypatch, "-locrob") == set()


def test_builtins_stay_on_beside_named_plugins_unless_left_out(monkeypatch, third_party):
    builtins = _loaded(monkeypatch, "") - {"example"}  # an empty value: the built-ins alone
    assert "clean" in builtins and "example" not in _loaded(monkeypatch, "")
    assert _loaded(monkeypatch, "example") == builtins | {"example"}
    assert _loaded(monkeypatch, "locrob-example,-clean") == builtins - {"clean"} | {"example"}
    assert _loaded(monkeypatch, "-example") == builtins  # only -NAME: everything else
    assert _loaded(monkeypatch, "-clean") == builtins - {"clean"} | {"example"}
    assert _loaded(monkeypatch, "-locrob,example") == {"example"}


def test_naming_and_leaving_out_one_plugin_is_an_error(monkeypatch):
    monkeypatch.setenv("LOCROB_PLUGINS", "clean,-clean")
    plugins.reload()
    with pytest.raises(LocrobError, match="both names and leaves out clean"):
        locrob.registries()


@pytest.mark.parametrize("value", ["clean,-no-such-plugin", "no-such-plugin"])
def test_allow_list_naming_an_absent_plugin_is_an_error(monkeypatch, value):
    monkeypatch.setenv("LOCROB_PLUGINS", value)
    plugins.reload()
    with pytest.raises(LocrobError, match=r"no-such-plugin.*installed:.*clean"):
        locrob.registries()


def test_allow_list_with_a_bare_minus_is_an_error(monkeypatch):
    monkeypatch.setenv("LOCROB_PLUGINS", "clean,-")
    plugins.reload()
    with pytest.raises(LocrobError, match="'-' without a name"):
        locrob.registries()


@pytest.mark.parametrize("name", ["locrob-example", "locrob_example", "Locrob.Example"])
def test_allow_list_accepts_a_distribution_name(monkeypatch, third_party, name):
    monkeypatch.setenv("LOCROB_PLUGINS", f"-locrob,{name}")
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


class Registers:
    """A plugin object registering the metric ``name``, as an installed plugin would."""

    def __init__(self, name: str) -> None:
        self.name = name

    @locrob.hookimpl
    def register_metrics(self, register):
        register(self.name, object)


def installed(plugin: object, name: str) -> None:
    """Add ``plugin`` as entry-point loading would (no check at registration, unlike
    :meth:`PluginHost.register`), so that a clash shows where installed plugins meet."""
    plugins.host.load()
    plugins.host.pm.register(plugin, name=name)
    plugins.host._registries = None


def test_registering_a_clashing_plugin_by_hand_is_refused_and_undone():
    with pytest.raises(LocrobError, match=r"cannot register plugin 'twin': metric 'clean' is"):
        plugins.host.register(Registers("clean"), name="twin")
    assert not plugins.host.pm.has_plugin("twin")
    assert "clean" in locrob.registries().metrics  # every command still works


def test_a_name_two_plugins_register_is_refused_naming_both(monkeypatch, third_party):
    installed(Registers("mean-confidence"), name="twin")
    with pytest.raises(
        LocrobError,
        match=r"metric 'mean-confidence' is registered by plugin 'example' \(locrob-example "
        r"0\.1\.0\) and plugin 'twin' \(registered at run time\); .*LOCROB_PLUGINS=-NAME",
    ):
        locrob.registries()
    monkeypatch.setenv("LOCROB_PLUGINS", "-example")  # leaving one out resolves it
    plugins.reload()
    installed(Registers("mean-confidence"), name="twin")
    assert "mean-confidence" in locrob.registries().metrics


def test_a_builtin_name_registered_again_is_refused():
    installed(Registers("clean"), name="twin")
    with pytest.raises(
        LocrobError, match=r"metric 'clean' is registered by plugin 'clean' \(locrob"
    ):
        locrob.registries()


def test_locrob_plugins_lists_everything_with_the_clash_marked(locrob_cli):
    installed(Registers("shared"), name="first")
    installed(Registers("shared"), name="second")
    code, out, _ = locrob_cli("plugins")
    assert code == 0
    assert "first  [(registered at run time)]  hooks: register_metrics" in out
    assert "second  [(registered at run time)]" in out
    assert (
        "clean, clever, corruptions, local-robustness, loss-sensitivity, noise, robustbench, "
        "separation, "
        "shared (CLASH: plugin 'first' (registered at run time) and plugin 'second' "
        "(registered at run time))\n" in out
    )
    code, _, err = locrob_cli("evaluate", "--model", "small-cnn", "--out", "unused")
    assert code == 2 and "metric 'shared' is registered by plugin 'first'" in err


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
        "mean-confidence, noise, robustbench, separation" in listing
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
