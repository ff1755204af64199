"""``locrob demo`` end to end in a tiny configuration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import locrob
from locrob.demo import DemoConfig, run_demo

TINY = DemoConfig(
    epochs=1,
    # PGD training's own path with 2 attack steps instead of 10: a fifth of its passes
    defense_options={"pgd": {"steps": 2}},
    runs=["vanilla", "parseval", "pgd"],
    max_examples=24,
    alpha_points=4,
    alpha_draws=4,
    alpha_radii=[0.5, 1.0],
    corruption_severities=[1, 5],
    seeds=[0, 1],
)
FIGURES = [
    "fig1-separation.png",
    "fig2-sigmoid.png",
    "fig3-separation-robustness.png",
    "fig4-noise.png",
    "fig5-alpha-lim.png",
    "corruptions-heatmap.png",
]


@pytest.mark.slow
def test_demo_writes_table_2_figures_and_reuses_its_models(tmp_path):
    written = run_demo(tmp_path, TINY, device="cpu")
    names = {p.name for p in written}
    assert set(FIGURES) | {"report.md", "report.json"} == names
    for figure in FIGURES:
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| vanilla", "| parseval", "| pgd"]
    assert rows[1].split(" | ")[3] == "100 ± 0"  # vanilla's relative mCE is 100 at every seed
    summary = json.loads((tmp_path / "report.json").read_text())
    assert list(summary["models"]) == ["vanilla", "parseval", "pgd"]
    # Fig. 5's band: each model's alpha_lim from both sides, the upper side above the lower
    alpha = summary["models"]["vanilla"]["0"]["metrics"]["local-robustness"]["summary"]
    assert alpha["alpha_upper@1"] >= alpha["alpha@1"] > 0
    note = next(line for line in table.splitlines() if "from both sides" in line)
    assert all(f"{name} " in note for name in ("vanilla", "parseval", "pgd"))
    assert list(summary["models"]["pgd"]) == ["0", "1"]
    vanilla = summary["models"]["vanilla"]["0"]["metrics"]
    assert set(vanilla) == {"clean", "noise", "corruptions", "adversarial", "local-robustness"}
    # each cell: mean and sample std of the seeds' own values
    for seeds_ in (summary["models"]["parseval"],):
        errors = [
            100 * s["metrics"]["corruptions"]["summary"]["clean_error"] for s in seeds_.values()
        ]
        cell = summary["table"]["parseval"]["clean error"]
        assert cell["values"] == pytest.approx(errors)
        assert cell["mean"] == pytest.approx(np.mean(errors))
        assert cell["std"] == pytest.approx(np.std(errors, ddof=1))
        assert f"{cell['mean']:.1f} ± {cell['std']:.1f}" == rows[2].split(" | ")[1]
    # the seeds give distinct models (else the spread would be no measurement at all)
    first, second = (tmp_path / "models" / "pgd" / f"seed-{k}" / "model.pt" for k in (0, 1))
    weights = [torch.load(f, weights_only=True)["state_dict"] for f in (first, second)]
    assert any(not torch.equal(a, weights[1][k]) for k, a in weights[0].items())
    # every distinct-class pair of the training split: (N^2 - sum of class sizes^2) / 2
    sizes = torch.bincount(locrob.load_dataset("digits").train_y)
    assert summary["separation"]["n_pairs"] == (sizes.sum() ** 2 - (sizes**2).sum()) // 2
    # a rerun reuses the trained models and reproduces the same table
    checkpoint = tmp_path / "models" / "pgd" / "seed-1" / "model.pt"
    stamp = checkpoint.stat().st_mtime_ns
    run_demo(tmp_path, TINY, device="cpu")
    assert checkpoint.stat().st_mtime_ns == stamp
    assert (tmp_path / "report.md").read_text() == table


def test_demo_refuses_unknown_runs_and_a_missing_vanilla(tmp_path, locrob_cli):
    with pytest.raises(locrob.LocrobError, match="unknown demo run"):
        run_demo(tmp_path, DemoConfig(runs=["vanilla", "dropout"]))
    code, _, err = locrob_cli("demo", "--out", str(tmp_path), "--run", "pgd")
    assert code == 2 and "first run must be 'vanilla'" in err


def test_demo_command_passes_its_seed(tmp_path, locrob_cli, monkeypatch):
    seen = []

    def record(out, config, device=None):
        seen.append(config)
        (out / "report.md").parent.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text("table\n")
        return []

    monkeypatch.setattr("locrob.demo.run_demo", record)
    code, out, _ = locrob_cli(
        "demo", "--out", str(tmp_path), "--seed", "3", "--seed", "5", "--epochs", "2"
    )
    assert code == 0 and out == "table\n"
    assert (seen[0].seeds, seen[0].epochs) == ([3, 5], 2)
    locrob_cli("demo", "--out", str(tmp_path))
    assert seen[1].seeds == [0, 1, 2]


def test_mean_result_averages_numbers_and_keeps_the_rest():
    from locrob.contract import MetricResult
    from locrob.demo import mean_result

    a = MetricResult("m", {"acc": 0.5}, {"curve": [1.0, 2.0], "names": ["x"], "n": 3})
    b = MetricResult("m", {"acc": 1.0}, {"curve": [3.0, 6.0], "names": ["y"], "n": 5})
    mean = mean_result([a, b])
    assert mean.summary == {"acc": 0.75}
    assert mean.details == {"curve": [2.0, 4.0], "names": ["x"], "n": 4.0}
    c = MetricResult("m", {"acc": 0.5}, {"curve": [3.0, 2.0], "names": ["z"], "n": 3})
    same = mean_result([a, c])
    assert same.details["curve"] == [2.0, 2.0]
    assert same.details["n"] == 3 and isinstance(same.details["n"], int)  # equal: kept
    mixed = [MetricResult("m", {"loss": 0}, {}), MetricResult("m", {"loss": 0.5}, {})]
    assert mean_result(mixed).summary == {"loss": 0.25}  # an int and a float: both numbers


def test_demo_refuses_repeated_seeds(tmp_path):
    with pytest.raises(locrob.LocrobError, match="distinct seeds"):
        run_demo(tmp_path, DemoConfig(seeds=[1, 1]))
