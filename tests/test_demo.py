"""``locrob demo`` end to end in a tiny configuration."""

from __future__ import annotations

import json

import pytest
import torch

import locrob
from locrob.demo import DemoConfig, run_demo

TINY = DemoConfig(
    epochs=1,
    runs=["vanilla", "parseval", "pgd"],
    max_examples=24,
    alpha_points=4,
    alpha_draws=4,
    alpha_radii=[0.5, 1.0],
    corruption_severities=[1, 5],
)
FIGURES = [
    "fig1-separation.png",
    "fig2-sigmoid.png",
    "fig3-separation-robustness.png",
    "fig4-noise.png",
    "fig5-alpha-lim.png",
    "corruptions-heatmap.png",
]


def test_demo_writes_table_2_figures_and_reuses_its_models(tmp_path):
    written = run_demo(tmp_path, TINY, device="cpu")
    names = {p.name for p in written}
    assert set(FIGURES) | {"report.md", "report.json"} == names
    for figure in FIGURES:
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| vanilla", "| parseval", "| pgd"]
    assert rows[1].split(" | ")[3] == "100"  # vanilla's relative mCE is 100 by definition
    summary = json.loads((tmp_path / "report.json").read_text())
    assert list(summary["models"]) == ["vanilla", "parseval", "pgd"]
    vanilla = summary["models"]["vanilla"]["metrics"]
    assert set(vanilla) == {"clean", "noise", "corruptions", "adversarial", "local-robustness"}
    # every distinct-class pair of the training split: (N^2 - sum of class sizes^2) / 2
    sizes = torch.bincount(locrob.load_dataset("digits").train_y)
    assert summary["separation"]["n_pairs"] == (sizes.sum() ** 2 - (sizes**2).sum()) // 2
    # a rerun reuses the trained models and reproduces the same table
    checkpoint = tmp_path / "models" / "pgd" / "model.pt"
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
    code, out, _ = locrob_cli("demo", "--out", str(tmp_path), "--seed", "3", "--epochs", "2")
    assert code == 0 and out == "table\n"
    assert (seen[0].seed, seen[0].epochs) == (3, 2)
