"""README stays true: CI runs its test command verbatim, and its Python examples run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import locrob
from locrob import plugins

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomllib joined the standard library in 3.11; tomli is its backport (the test extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in _blocks("bash")[1]
    assert "pytest" in ci_command and ".[all,test]" in ci_command


def test_readme_main_job_command_names_real_commands():
    main_job = _blocks("bash")[0]
    assert "locrob demo --out" in main_job and "pip install -e '.[corruptions]'" in main_job


def test_command_line_examples_read_only_what_the_readme_made_before():
    (block,) = [b for b in _blocks("bash") if "locrob plugins" in b]
    before = README[: README.index(block)]
    made = set(re.findall(r'np\.savez\("([^"]+)"', before))  # mine.npz, by a Python block
    assert "source .venv/bin/activate" in block.splitlines()[0]
    for line in block.replace("\\\n", " ").splitlines():
        words = line.split("#")[0].split()
        read = [w.removeprefix("npz:") for w in words if w.startswith("npz:")]
        read += [str(Path(w[11:]).parent) for w in words if w.startswith("checkpoint:")]
        if words[:2] == ["locrob", "plot"]:
            read += words[2 : words.index("--out")]
        missing = [path for path in read if path not in made]
        assert not missing, f"'{line}' reads {missing}, which nothing before it makes"
        made.update(words[i + 1] for i, w in enumerate(words) if w == "--out")


def _plugin_block() -> str:
    (block,) = [b for b in _blocks("python") if "register_metrics" in b]
    return block


@pytest.mark.slow
def test_python_api_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples = [b for b in _blocks("python") if "register_metrics" not in b]
    assert len(examples) == 7
    for i, block in enumerate(examples):
        exec(compile(block, f"README-example-{i}", "exec"), {})
    assert (tmp_path / "runs" / "api" / "report.json").is_file()


def test_plugin_example_works_when_registered(trained, digits, third_party):
    # beside the installed example plugin: a reader who does both gets no clashing names
    module = types.ModuleType("my_plugin")
    exec(compile(_plugin_block(), "README-plugin", "exec"), module.__dict__)
    plugins.host.register(module, name="my-plugin")
    report = locrob.evaluate(trained.model, digits, ["clean", "max-softmax"])
    with torch.no_grad():
        expected = trained.model(digits.test_x.float() / 255).softmax(1).amax(1).mean()
    assert report.metrics["max-softmax"].summary["mean"] == pytest.approx(float(expected))
    presentation = plugins.registries().presentations.get("max-softmax")
    labelled = [("a", report.metrics["max-softmax"]), ("b", report.metrics["max-softmax"])]
    assert presentation.table(labelled).splitlines()[3] == f"| b | {float(expected):.3f} |"
    assert len(presentation.figure(labelled).axes[0].patches) == 2


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed; install the 'test' extra")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_every_subpackage_is_listed_for_installation():
    # Editable installs find unlisted subpackages; a wheel would silently drop them.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(["locrob", *init.parent.relative_to(ROOT / "plugin").parts])
        for init in (ROOT / "plugin").rglob("__init__.py")
    } | {"locrob.adapters"}
    assert on_disk == set(config["packages"])
