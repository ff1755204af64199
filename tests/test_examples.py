"""The example scripts run end to end on the fake CIFAR-10 files, in tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TopLeftGray, one_robust_one_fragile

import locrob
from locrob.adapters.robustbench import import_robustbench, zoo_checkpoint
from locrob.sweep import cell_dir, load_sweep, run_cell, run_sweep

EXAMPLES = Path(__file__).parents[1] / "examples"


def script(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / name), run_name="example")


@pytest.mark.slow
def test_reproduce_cifar10_runs_the_study_on_cifar10_with_preact_resnet18(fake_cifar10, tmp_path):
    root, expected = fake_cifar10
    out = tmp_path / "run"
    script("reproduce_cifar10.py")["main"](
        [
            "--data-dir",
            str(root),
            "--out",
            str(out),
            "--runs",
            "vanilla",
            "--epochs",
            "1",
            "--alpha-points",
            "2",
            "--alpha-draws",
            "2",
        ]
    )
    assert "study on cifar10" in (out / "report.md").read_text()
    summary = json.loads((out / "report.json").read_text())
    vanilla = summary["models"]["vanilla"]["0"]  # one seed, 0, by default
    assert vanilla["n_examples"] == len(expected["test"][1])
    assert vanilla["metrics"]["corruptions"]["settings"]["source"] == "generate"  # no C files
    assert summary["config"]["architecture"] == "preact-resnet18"
    assert summary["config"]["defense_options"] == {"laplacian": {"gamma": 0.01}}
    assert len(summary["config"]["alpha_radii"]) == 30
    checkpoint = torch.load(out / "models" / "vanilla" / "seed-0" / "model.pt", weights_only=True)
    assert json.loads(checkpoint["config"])["source"] == "preact-resnet18"


def test_the_robustbench_leaderboard_sweep_ranks_zoo_models_by_autoattack_accuracy(
    fake_cifar10, tmp_path, monkeypatch
):
    """The example sweep file, one zoo model, the job run in this process (a job in a process
    of its own would not see the test's stand-in architecture); then the sweep itself finds
    the cell done and writes the leaderboard."""
    pytest.importorskip("submitit")
    root, expected = fake_cifar10
    zoo = import_robustbench("robustbench.model_zoo")
    enums = import_robustbench("robustbench.model_zoo.enums")
    entries = zoo.model_dicts[enums.BenchmarkDataset("cifar10")][enums.ThreatModel("Linf")]
    # The zoo entry's architecture swapped for a one-pixel linear model (its checkpoint loads
    # the same way): AutoAttack keeps attacking what survives, seconds here instead of minutes
    # with a real zoo network. It is right on 2 of the 6 images, robustly on 1 of them.
    monkeypatch.setitem(entries["Ding2020MMA"], "model", TopLeftGray)
    x = torch.from_numpy(expected["test"][0]).float() / 255
    model = one_robust_one_fragile(x, torch.from_numpy(expected["test"][1]), 8 / 255)
    path = zoo_checkpoint(tmp_path / "models", "cifar10", "Linf", "Ding2020MMA")
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict()}, path)
    monkeypatch.setenv("LOCROB_MODEL_DIR", str(tmp_path / "models"))
    grid = load_sweep(
        EXAMPLES / "robustbench_leaderboard.toml",
        models=["robustbench:cifar10/Linf/Ding2020MMA"],
        metrics=["robustbench", "clean"],  # the file's local-robustness left out: seconds
        out=tmp_path / "zoo",
        data_dir=str(root),
        max_examples=6,
        device="cpu",
    )
    assert grid.options == {"robustbench": {"threat_model": "Linf", "eps": 8 / 255}}
    run_cell(grid, grid.models[0])
    result = run_sweep(grid, cluster="local")
    assert result.skipped == grid.models and result.failed == {}
    report = locrob.load_report(cell_dir(grid, grid.models[0]))
    assert report.metrics["robustbench"].summary == {
        "clean_accuracy": pytest.approx(2 / 6),
        "autoattack_accuracy": pytest.approx(1 / 6),
    }
    assert report.metrics["clean"].summary["accuracy"] == pytest.approx(2 / 6)
    board = result.leaderboard.read_text()
    row = "| 1 | robustbench:cifar10/Linf/Ding2020MMA | cifar10 | 6 | 0.3333 | 0.1667 | 0.3333 |"
    assert row in board


def test_the_sweep_file_says_which_zoo_checkpoint_is_missing(fake_cifar10, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCROB_MODEL_DIR", str(tmp_path / "models"))
    grid = load_sweep(
        EXAMPLES / "robustbench_leaderboard.toml",
        out=tmp_path / "zoo",
        data_dir=str(fake_cifar10[0]),
    )
    with pytest.raises(locrob.LocrobError, match=r"RobustBench checkpoint missing: .*Ding2020MMA"):
        run_cell(grid, grid.models[0])


def test_alpha_tightness_table_shows_sampling_far_below_sigma_max_at_image_size(capsys):
    script("alpha_tightness.py")["main"](["--quick"])
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| linear") or line.startswith("| small-cnn")
    }
    assert len(rows) == 4

    def percent(cell: str) -> int:  # "0.0598 (10%)" -> 10
        return int(cell.split("(")[1].rstrip("%) |"))

    small, large = rows["linear map, 16 -> 10"], rows["linear map, 3072 -> 10"]
    assert percent(small[2]) > 50 and percent(large[2]) < 20  # sampling: most vs a tenth
    assert percent(large[4]) >= 99  # the search reaches sigma_max


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("reproduce_cifar10.py", "cifar10 files not found: expected {tmp}/data/cifar-10-"),
    ],
)
def test_an_example_without_its_files_says_so_in_one_line(
    tmp_path, monkeypatch, capsys, name, message
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [name, "--data-dir", str(tmp_path / "data")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"{name}: error: {message.format(tmp=tmp_path)}")
    assert list(tmp_path.iterdir()) == []  # nothing created: no data/, no runs/


def gpu_figures(
    tmp_path: Path, budget: int, *steps: str, code: int = 0, expect: int = 0
) -> tuple[list[list[str]], str]:
    """Run examples/gpu_figures.sh, expecting its exit status ``expect``, with a stand-in
    ``python3`` that records its arguments and exits with ``code``: (each call's arguments,
    the log)."""
    stub = tmp_path / "bin" / "python3"
    stub.parent.mkdir(parents=True)
    stub.write_text(f'#!/usr/bin/env bash\nprintf \'%s\\0\' "$#" "$@" >> "$CALLS"\nexit {code}\n')
    stub.chmod(0o755)
    calls, out = tmp_path / "calls", tmp_path / "out"
    env = os.environ | {
        "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(calls),
        "LOCROB_GPU_BUDGET": str(budget),
    }
    script = str(EXAMPLES / "gpu_figures.sh")
    ran = subprocess.run(["bash", script, str(out), *steps], env=env, timeout=60)
    assert ran.returncode == expect
    fields = calls.read_text().split("\0")[:-1] if calls.exists() else []
    recorded = []
    while fields:
        count = int(fields.pop(0))
        recorded.append(fields[:count])
        del fields[:count]
    log = out / "log.txt"
    return recorded, log.read_text() if log.exists() else ""


def test_the_gpu_figures_script_runs_its_steps_in_order_with_arguments_that_parse(tmp_path):
    """examples/gpu_figures.sh runs where no test can (a GPU): each step it runs must call a
    benchmark with options that parse (types and bounds too), the CUDA tests, and log how
    each step ended."""
    import typer

    from locrob import cli

    calls, log = gpu_figures(tmp_path, 600)
    bench = typer.main.get_command(cli.app).commands["bench"].commands
    names = [call[3] if call[:3] == ["-m", "locrob", "bench"] else call[0] for call in calls]
    check = "examples/gpu_node_check.py"
    assert names == [check, "separation", "alpha", "-m", "corruptions", "alpha"]
    assert (EXAMPLES.parent / check).exists()
    for call in calls:
        if call[:3] == ["-m", "locrob", "bench"]:
            command = bench[call[3]]
            context = command.make_context(call[3], call[4:])  # raises on an unknown option
            assert context.params.get("device") == "cuda", call
            if call[3] == "alpha":
                assert context.params["authors_draws"] and context.params["clever_points"] == 0
    assert calls[3] == ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    assert (EXAMPLES.parent / calls[3][-1]).exists()
    with pytest.raises(typer.BadParameter):  # the check above can fail
        bench["alpha"].make_context("alpha", ["--authors-draws", "0"])
    folders = [call[call.index("--out") + 1] for call in calls if "--out" in call]
    assert len(folders) == len(set(folders)) == 4  # alpha's two JSON files apart
    for step in ("device", "separation", "alpha", "cuda-tests", "corruptions", "wrn"):
        assert f"== {step}: python3" in log and f"\n{step}: exit 0 in " in log, step


def node_check(*blocked: str) -> tuple[int, list[str]]:
    """Run examples/gpu_node_check.py in a fresh interpreter where importing any of the
    ``blocked`` modules fails, as on a node that lacks them: (exit status, lines printed)."""
    hide = f"import sys; sys.modules.update(dict.fromkeys({list(blocked)!r}))"
    run = f"{hide}; import runpy; runpy.run_path('examples/gpu_node_check.py', run_name='__main__')"
    ran = subprocess.run(
        [sys.executable, "-c", run],
        cwd=EXAMPLES.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return ran.returncode, ran.stdout.splitlines()


def test_the_node_check_imports_each_framework_and_names_what_a_requirement_lacks():
    """A framework that is installed but misses one of its own requirements (RobustBench
    without bs4, which gdown imports) is reported missing, naming the module; where every
    framework imports, the check passes only with a GPU."""
    for framework in ("triton", "torchattacks", "robustbench", "imagecorruptions"):
        if importlib.util.find_spec(framework) is None:
            pytest.skip(f"{framework} is not installed")
    code, lines = node_check()
    gpu = torch.cuda.is_available()
    assert code == (0 if gpu else 1)
    assert gpu or lines[-1] == "cuda: no CUDA device visible"
    assert any(re.fullmatch(r"robustbench [\d.]+: ok", line) for line in lines), lines
    code, lines = node_check("bs4", "torchattacks")
    assert code == 1
    assert [line.split(":")[0] for line in lines if "missing" in line] == [
        "torchattacks",
        "robustbench",
    ]
    missing = next(line for line in lines if line.startswith("robustbench: missing"))
    assert missing.startswith("robustbench: missing, for WideResNet-28-10") and "bs4" in missing


def test_the_gpu_figures_script_runs_the_steps_asked_and_says_how_each_ended(tmp_path):
    """Steps named run alone, a name it lacks is refused, steps without time left are
    skipped, and a step's end says when it ran out of time: a refusal exits with 2, a
    step that did not end well with 1."""
    calls, log = gpu_figures(tmp_path / "some", 600, "corruptions", "wrn")
    assert [call[3] for call in calls] == ["corruptions", "alpha"]
    assert "== separation" not in log and "\nwrn: exit 0 in " in log
    calls, log = gpu_figures(tmp_path / "typo", 600, "corruption", expect=2)
    assert calls == [] and log == ""
    calls, log = gpu_figures(tmp_path / "none", 20, "device", "alpha", expect=1)
    assert calls == [] and re.fullmatch(
        r"device: skipped, \d+ s left\nalpha: skipped, \d+ s left\n", log
    )
    calls, log = gpu_figures(tmp_path / "late", 600, "device", code=124, expect=1)
    assert "\ndevice: exit 124 (out of time) in " in log
    calls, log = gpu_figures(tmp_path / "killed", 600, "device", code=137, expect=1)
    assert "\ndevice: exit 137 in " in log  # killed long before its limit: not for time
