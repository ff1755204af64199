"""``locrob sweep``: models × metrics through submitit, resumable, failures recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import locrob
from locrob.errors import LocrobError
from locrob.sweep import Sweep, cell_dir, cell_settings, cells, is_done, load_sweep, run_sweep

pytest.importorskip("submitit")

OPTIONS = {"num_classes": 10, "in_channels": 3, "image_size": 32}


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "a.pt"
    locrob.save_checkpoint(path, locrob.load_model("small-cnn", **OPTIONS), "small-cnn", OPTIONS)
    return path


def _grid(tmp_path, checkpoint, snr=0) -> Sweep:
    return Sweep(
        models=[f"checkpoint:{checkpoint}", f"checkpoint:{tmp_path / 'missing.pt'}"],
        metrics=["clean", "noise"],
        out=tmp_path / "sweep",
        options={"noise": {"snr_db": [snr]}},
        max_examples=30,
    )


def test_each_model_is_a_job_failures_are_recorded_and_a_rerun_resumes(tmp_path, checkpoint):
    grid = _grid(tmp_path, checkpoint)
    good, missing = grid.models
    first = run_sweep(grid, cluster="local", timeout_min=5)
    assert first.ran == [good] and first.skipped == []
    assert "checkpoint not found" in first.failed[missing]
    assert json.loads((grid.out / "failures.json").read_text()) == first.failed
    report = locrob.load_report(cell_dir(grid, good))
    assert set(report.metrics) == {"clean", "noise"} and report.n_examples == 30
    # the same report as one evaluation in this process
    direct = locrob.evaluate(
        f"checkpoint:{checkpoint}",
        "digits",
        ["clean", "noise"],
        metric_options=grid.options,
        max_examples=30,
    )
    assert report.metrics["noise"].summary == direct.metrics["noise"].summary
    lines = first.leaderboard.read_text().splitlines()
    assert lines[0].startswith("| rank | model |") and len(lines) == 3  # header, rule, one row
    # a rerun: the done cell is skipped, the failed one tried again
    again = run_sweep(grid, cluster="local", timeout_min=5)
    assert again.skipped == [good] and again.ran == []
    assert "checkpoint not found" in again.failed[missing]
    # other settings: the cell is not done any more
    changed = _grid(tmp_path, checkpoint, snr=10)
    assert is_done(grid, good) and not is_done(changed, good)


def test_the_command_reads_the_file_and_exits_1_on_failures(tmp_path, checkpoint, locrob_cli):
    file = tmp_path / "grid.toml"
    file.write_text(
        f'models = ["checkpoint:{checkpoint}", "checkpoint:{tmp_path / "nope.pt"}"]\n'
        'metrics = ["clean"]\nout = "board"\nmax_examples = 20\n'
    )
    code, out, err = locrob_cli("sweep", str(file), "--cluster", "local")
    assert code == 1
    assert "ran: 1, skipped (done before): 0" in out
    assert f"leaderboard: {tmp_path / 'board' / 'leaderboard.md'}" in out
    assert "nope.pt: LocrobError: checkpoint not found" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'models = ["a"]\nmetrics = ["clean"]\nout = "o"\ncolour = 1\n',
            "unknown keys \\['colour'\\]",
        ),
        ('models = ["a"]\nmetrics = ["clean"]\n', "needs an 'out' folder"),
        ('models = ["a", "a"]\nmetrics = ["clean"]\nout = "o"\n', "listed twice"),
        ('models = []\nmetrics = ["clean"]\nout = "o"\n', "at least one model"),
        ('metrics = ["clean"]\nout = "o"\n', "models"),
        ("models = [\n", "cannot read the sweep file"),
        (
            'models = ["a"]\nmetrics = ["clean"]\nout = "o"\n[[variants]]\nname = "a b"\n'
            '[[variants]]\nname = "a_b"\n',
            "variants need distinct, non-empty names",
        ),
        (
            'models = ["a"]\nmetrics = ["clean"]\nout = "o"\n[[variants]]\nseed = 1\n',
            "a variant needs a name and options only",
        ),
    ],
)
def test_bad_sweep_files_are_refused(tmp_path, text, message):
    file = tmp_path / "grid.toml"
    file.write_text(text)
    with pytest.raises(LocrobError, match=message):
        load_sweep(file)


def test_out_is_relative_to_the_file_unless_given(tmp_path):
    file = tmp_path / "grids" / "grid.toml"
    file.parent.mkdir()
    file.write_text('models = ["a"]\nmetrics = ["clean"]\nout = "o"\n')
    assert load_sweep(file).out == tmp_path / "grids" / "o"
    assert load_sweep(file, out=tmp_path / "x").out == tmp_path / "x"


@pytest.mark.slow
def test_a_job_of_several_tasks_is_one_group_and_reports_what_one_process_measures(
    tmp_path, checkpoint
):
    """``gpus_per_job = 2`` (here on the CPU): each model is one job of two tasks that form a
    torch.distributed group through submitit's environment; rank 0 writes the report."""
    one, two = (
        Sweep(
            models=[f"checkpoint:{checkpoint}"],
            metrics=["clean", "noise"],
            out=tmp_path / name,
            options={"noise": {"snr_db": [0]}},
            max_examples=30,
            device="cpu",
            gpus_per_job=tasks,
        )
        for name, tasks in (("one", 1), ("two", 2))
    )
    for grid in (one, two):
        assert run_sweep(grid, cluster="local", timeout_min=5).failed == {}
    reports = [locrob.load_report(cell_dir(grid, grid.models[0])) for grid in (one, two)]
    assert [r.settings["world_size"] for r in reports] == [1, 2]
    assert [{k: m.to_dict() for k, m in r.metrics.items()} for r in reports[:1]] == [
        {k: m.to_dict() for k, m in reports[1].metrics.items()}
    ]


def test_the_grid_can_come_from_the_command_line_over_a_file_with_variants(
    tmp_path, checkpoint, locrob_cli
):
    """The command line over a file of two variants of the noise metric's options: a cell
    each, its options the variant's over the sweep's (the file's, then -o's), in a folder of
    its own, named in the leaderboard, resumed one by one."""
    file = tmp_path / "grid.toml"
    file.write_text(
        'models = ["a"]\nmetrics = ["noise"]\nout = "o"\n[options.noise]\nrepeats = 2\n'
        '[[variants]]\nname = "high snr"\noptions = { noise = { snr_db = [20] } }\n'
        '[[variants]]\nname = "low"\n[variants.options.noise]\nsnr_db = [0]\nrepeats = 1\n'
    )
    args = ["sweep", str(file), "--models", f"checkpoint:{checkpoint}", "--metrics", "clean,noise"]
    args += ["-o", "noise.repeats=3", "--max-examples", "12", "--out", str(tmp_path / "cli")]
    code, out, err = locrob_cli(*args, "--cluster", "local")
    assert code == 0, err
    assert "ran: 2, skipped (done before): 0" in out
    grid = load_sweep(
        file,
        models=[f"checkpoint:{checkpoint}"],
        metrics=["clean", "noise"],
        options={"noise": {"repeats": 3}},
        max_examples=12,
        out=tmp_path / "cli",
    )
    assert grid.options == {"noise": {"repeats": 3}}
    high, low = grid.variants
    folders = [cell_dir(grid, grid.models[0], variant) for variant in (high, low)]
    assert [folder.name for folder in folders] == ["high_snr", "low"]
    reports = [locrob.load_report(folder) for folder in folders]
    assert [r.metrics["noise"].settings for r in reports] == [
        {"snr_db": [20], "repeats": 3},
        {"snr_db": [0], "repeats": 1},
    ]
    assert [r.n_examples for r in reports] == [12, 12]
    board = (tmp_path / "cli" / "leaderboard.md").read_text()
    assert "| small-cnn (vanilla) [high snr] |" in board
    assert "| small-cnn (vanilla) [low] |" in board
    # another option in one variant redoes that cell alone
    low.options["noise"]["snr_db"] = [5]
    assert [is_done(grid, grid.models[0], variant) for variant in (high, low)] == [True, False]
    merged = load_sweep(file, models=["b"], options={"noise": {"snr_db": [5]}}).options
    assert merged == {"noise": {"repeats": 2, "snr_db": [5]}}  # per metric, key by key
    with pytest.raises(LocrobError, match="needs an 'out' folder"):
        load_sweep(None, models=["b"], metrics=["clean"])


def test_jobs_ask_for_a_gpu_per_task_unless_the_sweep_runs_elsewhere(tmp_path):
    from locrob.sweep import _gpus

    def grid(device, tasks=4):
        return Sweep(["a"], ["clean"], tmp_path, device=device, gpus_per_job=tasks)

    assert _gpus(grid("cpu"), "slurm") == 0
    assert _gpus(grid("cuda"), "slurm") == 4 and _gpus(grid("cuda:0", 2), "local") == 2
    assert _gpus(grid(None), "slurm") == 4  # a login node's lack of GPUs says nothing
    assert _gpus(grid(None), "local") == (4 if torch.cuda.is_available() else 0)


def test_the_readme_sweep_files_are_grids_whose_options_the_metrics_take(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Sweeps") : readme.index("### Measured speed")]
    grids = []
    for i, text in enumerate(re.findall(r"```toml\n(.*?)```", section, flags=re.S)):
        (tmp_path / f"{i}.toml").write_text(text)
        grids.append(load_sweep(tmp_path / f"{i}.toml"))
    assert [[cell_dir(g, *c).relative_to(g.out).as_posix() for c in cells(g)] for g in grids] == [
        ["reports/checkpoint_runs_v_model.pt", "reports/checkpoint_runs_other_model.pt"],
        ["reports/checkpoint_runs_v_model.pt/high", "reports/checkpoint_runs_v_model.pt/low"],
    ]
    high, low = (cell_settings(grids[1], *cell)["metrics"]["noise"] for cell in cells(grids[1]))
    assert high == {"snr_db": [30, 20], "repeats": 2} and low == {"snr_db": [0, -10], "repeats": 2}
