"""The benchmark runs and reports consistent figures (speed targets are not unit-tested)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import sm90_kernels

from locrob import cli
from locrob.alpha import forward
from locrob.bench import alpha, corruptions, separation, train
from locrob.errors import LocrobError


def test_bench_alpha_runs_each_preset_and_the_authors_loop_with_its_settings(monkeypatch):
    seen, original = [], alpha.authors_loop

    def recording(model, x, radii, draws, noise="uniform", rng="numpy", seed=0):
        seen.append((len(x), draws, len(radii), noise, rng))
        return original(model, x, radii, draws, noise, rng, seed)

    monkeypatch.setattr(alpha, "authors_loop", recording)
    presets = [None, "paper", "authors-code"]
    rows = alpha.bench_alpha(["linear"], "cpu", presets, sizes=(4, 3, 2), clever_points=0)
    assert [r.preset for r in rows] == ["default", "paper", "authors-code"]
    assert [(r.noise, r.directions) for r in rows] == [
        ("gaussian", "shared"),
        ("gaussian", "fresh"),
        ("uniform", "fresh"),
    ]
    # the authors' loop ran with each preset's noise, points, draws and radii, both generators
    assert {
        (4, 3, 2, noise, rng) for noise in ("gaussian", "uniform") for rng in ("numpy", "torch")
    } == set(seen)
    assert all(r.clever_s_per_point is None for r in rows)
    table = alpha.alpha_table(rows).splitlines()
    assert table[3].startswith("| linear | paper | gaussian, fresh | cpu | float32 | 4 x 3 x 2 |")
    # one multiply-add per weight of the 3072 x 10 layer; no compiled form and no peak on a CPU
    assert {(r.flops, r.compiled, r.peak_share) for r in rows} == {(2 * 3072 * 10, False, None)}


def test_bench_alpha_times_the_authors_loop_on_the_draws_asked(locrob_cli, monkeypatch, tmp_path):
    """--authors-draws sizes the authors' loop alone; the row and the table say so, and each
    stage's figure is on stderr as soon as it is measured."""
    seen, original = [], alpha.authors_loop

    def recording(model, x, radii, draws, noise="uniform", rng="numpy", seed=0):
        seen.append(draws)
        return original(model, x, radii, draws, noise, rng, seed)

    monkeypatch.setattr(alpha, "authors_loop", recording)
    code, out, err = locrob_cli(
        "bench", "alpha", "--model", "linear", "--preset", "paper", "--points", "4", "--draws",
        "3", "--radii", "2", "--authors-draws", "1", "--clever-points", "0", "--device", "cpu",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0 and set(seen) == {1} and len(seen) == 4  # 2 rounds x 2 generators
    (row,) = json.loads((tmp_path / "bench-alpha.json").read_text())
    assert (row["draws"], row["authors_draws"]) == (3, 1)
    assert "| 4 x 3 x 2 (authors' draws: 1) |" in out
    # each stage on stderr as it ends: a run cut short keeps them
    stages = [line.split(":")[1].split()[0] for line in err.splitlines()]
    assert stages == ["warm-up", *["engine", "inference", "authors", "authors"] * 2]
    assert err.startswith("linear paper: warm-up (compilation, the chunk) ")


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_the_bf16_peak_is_the_named_devices(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert alpha.bf16_peak(torch.device("cuda")) == peak
    assert alpha.bf16_peak(torch.device("cpu")) is None


def test_bench_alpha_times_clever_beside_alpha_lim():
    pytest.importorskip("art")
    (row,) = alpha.bench_alpha(["small-cnn"], "cpu", [None], sizes=(2, 2, 1), clever_points=1)
    assert row.clever_s_per_point > 0
    table = alpha.alpha_table([row]).splitlines()
    assert "ART clever_u s/point (10 x 50 gradients)" in table[-3]
    assert table[-1].startswith("| small-cnn | ") and table[-1].endswith("x |")


class Recording(torch.nn.Module):
    """Logits = the first 3 pixels; remembers every batch it sees."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return x.flatten(1)[:, :3]


@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_authors_loop_transcribes_r_alpha(noise):
    model, x = Recording(), torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    images, best = alpha.authors_loop(model, x, [0.1, 0.2], draws=3, noise=noise)
    assert images == 5 * 3 * 2
    # F(x) once, then one forward of all points per draw and radius
    assert [len(b) for b in model.inputs] == [5] * (1 + 3 * 2)
    # the first draw: numpy's legacy stream (their np.random.uniform), rescaled to norm r,
    # x + noise clamped to [0, 1]
    legacy = np.random.RandomState(0)
    raw = legacy.uniform(-1, 1, x.shape) if noise == "uniform" else legacy.standard_normal(x.shape)
    eps = torch.from_numpy(raw.astype(np.float32))
    eps = eps * (0.1 / eps.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    assert torch.allclose(model.inputs[1], (x + eps).clamp(0, 1), atol=1e-6)
    # the value: the largest softmax change over the effective perturbation, as a running max
    clean = x.flatten(1)
    ratios = []
    for moved in (b.flatten(1) for b in model.inputs[1:]):
        change = (moved[:, :3].softmax(1) - clean[:, :3].softmax(1)).norm(dim=1)
        ratios.append(float((change / (moved - clean).norm(dim=1)).max()))
    assert best == pytest.approx(max(ratios), rel=1e-6)


def test_bench_command(monkeypatch, capsys, tmp_path):
    argv = ["locrob", "bench", "alpha", "--model", "linear", "--device", "cpu", "--points", "2"]
    monkeypatch.setattr(
        sys,
        "argv",
        [
            *argv,
            "--draws",
            "2",
            "--radii",
            "1",
            "--preset",
            "paper",
            "--compile",
            "on",
            "--out",
            str(tmp_path),
        ],
    )
    monkeypatch.setattr(forward, "BACKEND", "eager")  # traced, no code built
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "| linear | paper | gaussian, fresh | cpu | float32, compiled | 2 x 2 x 1 |" in out
    assert "| linear | default |" not in out
    (row,) = json.loads((tmp_path / "bench-alpha.json").read_text())
    assert (row["preset"], row["compiled"]) == ("paper", True)
    monkeypatch.setattr(sys, "argv", [*argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert "give --points, --draws and --radii together" in capsys.readouterr().err


def test_bench_separation_checks_its_baselines_and_reports_rates(locrob_cli):
    rows = separation.bench_separation(n=120, baseline_n=20, device="cpu", tile=32)
    # each locrob row names the faster kernel on its own probe (32 and 32 rows here)
    chosen = [max(r.probe, key=r.probe.get) for r in rows[:2]]
    assert [r.method for r in rows] == [
        f"locrob tiles, {chosen[0]} kernel",
        f"locrob tiles, {chosen[1]} kernel",
        "torch.cdist, full matrix",
        "broadcasting, 16-row tiles",
    ]
    assert [r.images for r in rows] == [120, 20, 20, 20]
    assert [r.ours for r in rows] == [True, True, False, False]
    assert all(r.pairs_per_s > 0 for r in rows)
    table = separation.separation_table(rows).splitlines()
    assert (
        table[0]
        == f"torch {torch.__version__}; candidates timed on the tile that chose the kernel:"
    )
    for line, row in zip(table[1:3], rows, strict=False):  # each of locrob's rows, every rate
        assert line.startswith(f"- {row.images} images: ")
        assert all(f"{name}: " in line for name in row.probe) and "cdist: " in line
    assert table[8].startswith("| torch.cdist, full matrix | 20 |")
    code, out, _ = locrob_cli("bench", "separation", "--images", "50", "--baseline-images", "20")
    assert code == 0 and "| broadcasting, 16-row tiles | 20 |" in out


def test_bench_separation_refuses_baselines_that_disagree(monkeypatch):
    # a baseline histogram one pair short must stop the benchmark, not be timed
    exact = separation._distinct_histogram

    def one_short(d, keep):
        counts = exact(d, keep)
        counts[counts.nonzero()[0]] -= 1
        return counts

    monkeypatch.setattr(separation, "_distinct_histogram", one_short)
    with pytest.raises(LocrobError, match="the baselines disagree"):
        separation.bench_separation(n=40, baseline_n=30, device="cpu", tile=16)


def test_bench_train_times_each_defense_against_vanilla(locrob_cli):
    rows = train.bench_train(["parseval", "pgd"], steps=2, batch=20, rounds=1, device="cpu")
    assert [r.defense for r in rows] == ["vanilla", "parseval", "pgd"]
    assert rows[0].ratio == 1.0 and all(r.ms_per_step > 0 for r in rows)
    assert "| pgd |" in train.train_table(rows)
    code, out, _ = locrob_cli("bench", "train", "--defense", "parseval", "--steps", "1")
    assert code == 0 and "| parseval |" in out


def fake_imagecorruptions(image, corruption_name, severity):
    """A stand-in baseline: fog crashes (as imagecorruptions 1.1.2's does under numpy 2)."""
    if corruption_name == "fog":
        raise AttributeError("np.float_")
    return image


def test_bench_corruptions_times_both_and_reports_the_baseline_failures(locrob_cli, monkeypatch):
    monkeypatch.setattr(corruptions, "_import_imagecorruptions", lambda: fake_imagecorruptions)
    rows = corruptions.bench_corruptions(
        images=16, reference_images=2, device="cpu", names=["contrast", "fog"]
    )
    assert [r.corruption for r in rows] == ["contrast", "fog"]
    contrast, fog = rows
    assert contrast.cifar_ips > 0 and contrast.imagenet_ips > 0 and contrast.reference_ips > 0
    assert fog.reference_ips is None and fog.reference_error == "AttributeError: np.float_"
    table = corruptions.corruption_table(rows)
    assert "| fog |" in table and "fails (AttributeError: np.float_)" in table
    assert "| the 1 that run in imagecorruptions |" in table
    code, out, _ = locrob_cli(
        "bench", "corruptions", "--images", "8", "--reference-images", "1",
        "--corruption", "brightness", "--device", "cpu",
    )  # fmt: skip
    assert code == 0 and "| brightness |" in out


def test_bench_corruptions_times_the_imagenet_preset_at_its_size_and_tabulates_the_cpu(
    locrob_cli, monkeypatch
):
    """The imagenet preset's batch (and the baseline's images) at the size asked for; on a
    device, the CPU's rates beside it, the device's over the CPU's, and each corruption's share
    of the sweep's time (here from rows made by hand: the run needs a GPU)."""
    seen = []

    def baseline(image, corruption_name, severity):
        seen.append(image.shape)
        return image

    monkeypatch.setattr(corruptions, "_import_imagecorruptions", lambda: baseline)
    code, out, _ = locrob_cli(
        "bench", "corruptions", "--images", "4", "--reference-images", "1",
        "--imagenet-images", "2", "--imagenet-size", "48", "--corruption", "contrast",
    )  # fmt: skip
    assert code == 0 and "| contrast |" in out and "| 100 % |" in out
    assert set(seen) == {(48, 48, 3)}
    rows = [
        corruptions.CorruptionBench("a", 300.0, 30.0, 10.0, "", 100.0, 10.0),
        corruptions.CorruptionBench("b", 100.0, 10.0, None, "ValueError", 50.0, 5.0),
    ]
    table = corruptions.corruption_table(rows)
    assert "| a | 300 | 30 | 25 % | 100 | 10 | 3.0x | 10 | 3.0x |" in table
    assert "| b | 100 | 10 | 75 % | 50 | 5 | 2.0x | fails (ValueError) | - |" in table
    assert "| all 2 | 150 | 15 | 100 % | 67 | 7 | 2.2x | - | - |" in table


def test_bench_corruptions_times_the_cpu_on_the_images_asked_and_goes_on_past_a_failure(
    locrob_cli, monkeypatch, tmp_path
):
    """On a device, the CPU's imagenet rates come from the first --cpu-imagenet-images of that
    batch, its cifar ones and the device's from whole batches; --reference-images 0 never
    imports imagecorruptions; a corruption that fails is a row saying why, the next ones are
    measured, and each row is in the JSON as soon as it is measured."""
    seen, out = [], tmp_path / "out"

    def rates(name, batches, device):
        seen.append((name, device.type, {k: len(v) for k, v in batches.items()}))
        if name == "fog":
            written = json.loads((out / "bench-corruptions.json").read_text())
            assert [row["corruption"] for row in written] == ["contrast"]
            raise LocrobError("no fog here\nsecond line")
        return {"cifar": 200.0, "imagenet": 20.0}

    def no_baseline():
        raise AssertionError("imported")

    monkeypatch.setattr(corruptions, "_rates", rates)
    monkeypatch.setattr(corruptions, "_import_imagecorruptions", no_baseline)
    monkeypatch.setattr(corruptions, "resolve_device", lambda _: torch.device("meta"))
    code, table, err = locrob_cli(
        "bench", "corruptions", "--images", "6", "--imagenet-images", "5",
        "--cpu-imagenet-images", "2", "--reference-images", "0", "--corruption",
        "contrast", "--corruption", "fog", "--corruption", "snow", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    whole, cut = {"cifar": 6, "imagenet": 5}, {"cifar": 6, "imagenet": 2}
    assert seen == [
        ("contrast", "meta", whole),
        ("contrast", "cpu", cut),
        ("fog", "meta", whole),
        ("snow", "meta", whole),
        ("snow", "cpu", cut),
    ]
    assert "contrast: 200 img/s (cifar), 20 (imagenet)" in err
    assert "fog fails (LocrobError: no fog here)" in err
    rows = json.loads((out / "bench-corruptions.json").read_text())
    assert [row["corruption"] for row in rows] == ["contrast", "fog", "snow"]
    contrast, fog, _ = rows
    assert contrast["cpu_cifar_ips"] == 200.0 and contrast["reference_ips"] is None
    sizes = ("images", "imagenet_images", "cpu_imagenet_images", "reference_images")
    assert [contrast[k] for k in sizes] == [6, 5, 2, 0]
    assert fog["cifar_ips"] is None and fog["error"] == "LocrobError: no fog here"
    assert "| cpu imagenet (img/s, 2 images) |" in table
    assert "| fog | fails (LocrobError: no fog here) | - | - | - | - | - | - | - |" in table
    assert "| contrast | 200 | 20 | 50 % | 200 | 20 | 1.0x | not run | - |" in table
    assert "| the 2 measured | 200 | 20 | 100 % |" in table


def test_bench_corruptions_runs_the_real_imagecorruptions():
    pytest.importorskip("imagecorruptions")
    (row,) = corruptions.bench_corruptions(
        images=8, reference_images=1, device="cpu", names=["contrast"]
    )
    assert row.reference_ips > 0 and row.reference_error == ""


@pytest.mark.slow
def test_bench_distributed_times_one_and_two_processes_and_counts_the_reduced_bytes():
    from dataclasses import replace

    from locrob.bench import distributed

    case = ({"corruptions": ["contrast"], "severities": [1, 5]}, 16)
    (row,) = distributed.bench_distributed(["corruptions"], 2, {"corruptions": case})
    assert row.metric == "corruptions" and row.ranks == 2
    assert row.one > 0 and row.many > 0
    # the timed run's one reduction of int64 tallies: n, clean and one cell per corruption and
    # severity (1 x 2); the empty noise statistics add nothing
    assert row.reduced_bytes == 8 * (2 + 1 * 2)
    # the columns from known seconds: 3 s on 1 process, 2 s on 2 is 1.5x and 75 % of 2x
    table = distributed.distributed_table([replace(row, one=3.0, many=2.0)]).splitlines()
    assert table[0].startswith("| metric | 1 process (s) | 2 processes (s) | speed-up |")
    assert table[2] == "| corruptions | 3.00 | 2.00 | 1.50x | 75% | 32 | >= 1.6x on 2 |"


def test_bench_distributed_command_refuses_unknown_metrics(locrob_cli):
    code, _, err = locrob_cli("bench", "distributed", "--metric", "clean")
    assert code == 2 and "no distributed benchmark for ['clean']" in err


@pytest.mark.parametrize("visible", [0, 1])
def test_bench_distributed_on_cuda_refuses_fewer_than_two_gpus_in_one_line(
    monkeypatch, locrob_cli, visible
):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    code, out, err = locrob_cli("bench", "distributed", "--device", "cuda")
    assert (code, out) == (2, "")
    assert err == (
        "locrob: error: bench distributed --device cuda runs one rank per GPU and needs at "
        f"least 2 visible GPUs; {visible} visible\n"
    )


def test_bench_distributed_splits_over_every_visible_gpu_or_two_cpu_processes(monkeypatch):
    from locrob.bench.distributed import world_size

    assert world_size("cpu") == 2 and world_size("cpu", 3) == 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert world_size("cuda") == 4 and world_size("cuda", 3) == 3
    with pytest.raises(LocrobError, match="--ranks 5 needs as many visible GPUs; 4 visible"):
        world_size("cuda", 5)
    with pytest.raises(LocrobError, match="--ranks must be at least 2, got 1"):
        world_size("cpu", 1)
    with pytest.raises(LocrobError, match="runs on cpu or cuda, got 'mps'"):
        world_size("mps")


def test_bench_bound_times_the_three_methods_and_tabulates_the_tightness(monkeypatch):
    """A tiny run (one model, two points): the table has every method's cost and one row per
    radius, the upper side above the lower."""
    from torch import nn

    import locrob.bench.bound as bound

    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8), nn.ReLU(), nn.Linear(8, 10))
    monkeypatch.setattr(bound, "_models", lambda: {"small-cnn (tiny)": tiny})
    rows = bound.bench_bound(points=2, draws=4, radii=(0.01, 0.05))
    (row,) = rows
    assert set(row.seconds_per_point) == {"bound", "intervals only", "sample (4 draws)", "search"}
    assert all(high >= low for low, high in zip(row.lower, row.upper, strict=True))
    assert all(high <= plain for high, plain in zip(row.upper, row.intervals, strict=True))
    assert set(row.floor) == {0.05} and 0 < row.floor[0.05] <= row.upper[1]
    table = bound.bound_table(rows)
    assert "bound / sampling" in table and "| small-cnn (tiny) | 0.05 |" in table
    assert "<= 10" in table and "reached ranges / lower" in table


def test_the_jacobian_step_from_reached_ranges_lies_between_the_point_and_the_bound():
    """On a linear map it is sigma_max; on a CNN with tied max-pool windows it holds the
    Jacobian at the point (whose values the ranges hold) and stays under the certified bound
    (whose intervals hold the ranges)."""
    from torch import nn

    from locrob.alpha.bound import upper_bounds
    from locrob.alpha.settings import resolve
    from locrob.bench.bound_floor import reached_floor

    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).double()
    x = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    settings = resolve(None, [0.3], output="logits", clamp=None)
    sigma = float(torch.linalg.matrix_norm(linear[1].weight.detach(), 2))
    assert reached_floor(linear, x, 0.3, settings) == pytest.approx(sigma, rel=1e-9)

    cnn = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(48, 4),
    ).double()
    x = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    x[..., :4, :] = 1.0  # two flat halves: tied windows
    for r in (1e-3, 0.1):
        settings = resolve(None, [r])
        floor = reached_floor(cnn, x, r, settings)
        certified = float(upper_bounds(cnn, x, settings).local[0, 0])
        probabilities = lambda t: cnn(t).softmax(dim=1).flatten()  # noqa: E731
        at_point = torch.autograd.functional.jacobian(probabilities, x).reshape(4, -1)
        assert float(torch.linalg.matrix_norm(at_point, 2)) <= floor <= certified


def test_bench_kernels_reads_the_builds_for_sm90(locrob_cli):
    """The static reading of the Triton kernels: one row per candidate, from ptxas's report
    and the SASS, as the library reads them; an unknown kernel is refused. (Whether a build
    spills follows ptxas's version: test_philox holds the CIFAR-sized one to none.)"""
    kernels = sm90_kernels()
    code, out, _ = locrob_cli("bench", "kernels", "--kernel", "philox", "--features", "64")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("sm_90 (H100/H200), Triton ")
    rows = [line.split(" | ") for line in lines if line.startswith("| philox |")]
    assert [row[1].split(",")[0] for row in rows] == ["gaussian", "uniform"]
    built = kernels.philox_rows(64)
    assert [(int(row[2]), int(row[3])) for row in rows] == [(b.registers, b.spilled) for b in built]
    assert all(int(row[4]) == sum(b.loop.values()) > 0 for row, b in zip(rows, built, strict=True))
    with pytest.raises(LocrobError, match="no kernel named nope; known: separation, philox"):
        kernels.bench_kernels(["nope"])
