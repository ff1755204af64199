"""The benchmark runs and reports consistent figures (speed targets are not unit-tested)."""

from __future__ import annotations

import sys

import pytest
import torch

from locrob import cli
from locrob.bench import alpha_table, authors_loop, bench_alpha


def test_bench_alpha_figures_are_consistent():
    (row,) = bench_alpha(["small-cnn"], device="cpu", sizes=(4, 3, 2))
    assert (row.points, row.draws, row.radii) == (4, 3, 2)
    assert row.engine_ips > 0 and row.inference_ips > 0 and row.authors_ips > 0
    assert row.ratio == pytest.approx(row.engine_ips / row.inference_ips)
    assert row.speedup == pytest.approx(row.engine_ips / row.authors_ips)
    table = alpha_table([row]).splitlines()
    assert table[0].startswith("| model | device |") and table[2].startswith("| small-cnn | cpu |")
    # ART's clever_u timed on the same model and points, per point, beside alpha_lim's time
    assert row.alpha_s_per_point == pytest.approx(3 * 2 / row.engine_ips)
    assert row.clever_s_per_point > 0
    assert table[-1].startswith("| small-cnn | ") and table[-1].endswith("x |")
    assert "ART clever_u s/point (10 x 50 gradients)" in table[-3]


def test_authors_loop_counts_every_forward():
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x.flatten(1)[:, :3]

    images = authors_loop(Counting(), torch.rand(5, 3, 4, 4), [0.1, 0.2], draws=3)
    assert images == 5 * 3 * 2
    assert calls == [5] * (1 + 3 * 2)  # F(x) once, then one forward of all points per draw


def test_bench_command(monkeypatch, capsys, tmp_path):
    argv = ["locrob", "bench", "alpha", "--model", "small-cnn", "--device", "cpu", "--points", "2"]
    monkeypatch.setattr(
        sys, "argv", [*argv, "--draws", "2", "--radii", "1", "--out", str(tmp_path)]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    assert "| small-cnn | cpu | float32 | 2 x 2 x 1 |" in capsys.readouterr().out
    assert (tmp_path / "bench-alpha.json").is_file()
    monkeypatch.setattr(sys, "argv", [*argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert "give --points, --draws and --radii together" in capsys.readouterr().err


def test_bench_separation_checks_its_baselines_and_reports_rates(locrob_cli):
    from locrob.bench import bench_separation, separation_table

    rows = bench_separation(n=120, baseline_n=60, device="cpu", tile=32)
    assert [r.method for r in rows] == [
        "locrob tiles",
        "locrob tiles",
        "torch.cdist, full matrix",
        "broadcasting, 16-row tiles",
    ]
    assert [r.images for r in rows] == [120, 60, 60, 60]
    assert all(r.pairs_per_s > 0 for r in rows)
    assert rows[2].largest_buffer_mb == pytest.approx(60 * 60 * 4 / 2**20)
    assert rows[0].largest_buffer_mb == pytest.approx(32 * 32 * 8 / 2**20)
    table = separation_table(rows).splitlines()
    assert table[4].startswith("| torch.cdist, full matrix | 60 |")
    code, out, _ = locrob_cli("bench", "separation", "--images", "50", "--baseline-images", "20")
    assert code == 0 and "| broadcasting, 16-row tiles | 20 |" in out


def test_bench_train_times_each_defense_against_vanilla(locrob_cli):
    from locrob.bench import bench_train, train_table

    rows = bench_train(["parseval", "pgd"], steps=2, batch=20, rounds=1, device="cpu")
    assert [r.defense for r in rows] == ["vanilla", "parseval", "pgd"]
    assert rows[0].ratio == 1.0 and all(r.ms_per_step > 0 for r in rows)
    assert rows[2].ratio == pytest.approx(rows[2].ms_per_step / rows[0].ms_per_step)
    assert "| pgd |" in train_table(rows)
    code, out, _ = locrob_cli("bench", "train", "--defense", "parseval", "--steps", "1")
    assert code == 0 and "| parseval |" in out


def test_bench_corruptions_times_both_and_reports_the_baseline_failures(locrob_cli):
    from locrob.bench import bench_corruptions, corruption_table

    rows = bench_corruptions(images=16, reference_images=2, device="cpu", names=["contrast", "fog"])
    assert [r.corruption for r in rows] == ["contrast", "fog"]
    contrast, fog = rows
    assert contrast.cifar_ips > 0 and contrast.imagenet_ips > 0 and contrast.reference_ips > 0
    assert contrast.speedup == contrast.imagenet_ips / contrast.reference_ips
    # imagecorruptions 1.1.2's fog uses np.float_, gone in numpy 2
    assert fog.reference_ips is None and fog.reference_error == "AttributeError"
    table = corruption_table(rows)
    assert "| fog |" in table and "fails (AttributeError)" in table
    assert "| the 1 that run in imagecorruptions |" in table
    code, out, _ = locrob_cli(
        "bench",
        "corruptions",
        "--images",
        "8",
        "--reference-images",
        "1",
        "--corruption",
        "brightness",
        "--device",
        "cpu",
    )
    assert code == 0 and "| brightness |" in out
