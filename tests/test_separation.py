"""The separation analysis against brute-force N x N computations."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import brute, random_set

import locrob
from locrob import cli
from locrob.errors import LocrobError
from locrob.pair_distances import separation


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tile", [1, 7, 1000])
def test_uint8_linf_histogram_is_exactly_the_brute_force_one(seed, tile):
    x, y = random_set(seed=seed)
    result = separation(x, y, "inf", tile=tile, device="cpu")
    d, _, _ = brute(x, y, "inf")
    assert result.exact and result.resolution == 0
    assert torch.equal(result.counts, torch.bincount(torch.round(d * 255).long(), minlength=256))
    assert result.min_distance() == pytest.approx(float(d.min()))


def test_each_unordered_distinct_class_pair_is_counted_once():
    x, y = random_set(n=40, classes=4, seed=3)
    sizes = torch.bincount(y).tolist()
    expected = sum(sizes[a] * sizes[b] for a in range(4) for b in range(a + 1, 4))
    result = separation(x, y, tile=6, device="cpu")
    assert result.n_pairs == expected
    # the per-class-pair breakdown adds up, and matches brute force pair by pair
    _d, yi, yj = brute(x, y, "inf")
    for a in range(4):
        for b in range(a + 1, 4):
            brute_pairs = int((((yi == a) & (yj == b)) | ((yi == b) & (yj == a))).sum())
            assert int(result.pair_counts[a, b].sum()) == brute_pairs
    assert int(result.pair_counts.sum()) == expected
    assert int(result.pair_counts.tril().sum()) == 0


def test_order_of_the_data_does_not_matter():
    x, y = random_set(seed=4)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(9))
    a = separation(x, y, tile=8, device="cpu")
    b = separation(x[order], y[order], tile=8, device="cpu")
    assert torch.equal(a.counts, b.counts) and torch.equal(a.pair_counts, b.pair_counts)


def test_float_images_agree_with_uint8_within_the_resolution():
    x, y = random_set(seed=5)
    exact = separation(x, y, "inf", device="cpu")
    binned = separation(x.float() / 255, y, "inf", device="cpu")
    assert not binned.exact and binned.resolution == pytest.approx(1 / 65536)
    for level in (10, 100, 200, 250):
        t = (level + 0.5) / 255  # between grey levels: both must count the same pairs
        assert binned.count_below(t) == exact.count_below(t)


def test_l2_counts_bracket_the_brute_force_ones():
    x, y = random_set(seed=6)
    result = separation(x, y, "l2", device="cpu")
    d, _, _ = brute(x, y, "l2")
    w = result.resolution
    assert w == pytest.approx(math.sqrt(48) / 65536)
    for t in (1.0, 2.0, 2.5, 3.0):
        assert int((d < t - w).sum()) <= result.count_below(t) <= int((d < t).sum())
    assert result.n_pairs == len(d)


def test_curves_follow_their_definitions():
    x, y = random_set(seed=7)
    result = separation(x, y, device="cpu")
    d, _, _ = brute(x, y, "inf")
    alphas = [0.5, 1.0, 1.5, 3.0, 10.0]
    fig1 = result.lipschitz_curve(alphas)
    assert fig1 == pytest.approx([float((d < 1.0 / a).double().mean()) for a in alphas])
    assert all(b <= a for a, b in itertools.pairwise(fig1))  # drops as alpha grows
    ds = [0.3, 0.6]
    fig3 = result.robustness_curves(alphas, ds)
    for row, dd in zip(fig3, ds, strict=True):
        assert row == pytest.approx([float((d < min(dd, 1.0 / a)).double().mean()) for a in alphas])
        assert row[0] == pytest.approx(float((d < dd).double().mean()))  # the flat part


def test_l2_uses_the_one_hot_distance_sqrt2():
    x = torch.zeros(2, 1, 1, 1)
    x[1] = 1.0
    result = separation(x, torch.tensor([0, 1]), "l2", device="cpu")
    # one pair at distance 1: incompatible with alpha-Lipschitz iff 1 < sqrt(2) / alpha
    assert result.lipschitz_curve([1.4, 1.42]) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (
            torch.zeros(4, 3, 2, 2, dtype=torch.uint8),
            torch.tensor([0, 1, 0]),
            r"one integer per image \(4\)",
        ),
        (
            torch.zeros(4, 3, 2, 2, dtype=torch.uint8),
            torch.zeros(4, dtype=torch.long),
            "a single class",
        ),
        (torch.zeros(0, 3, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), "no images"),
        (torch.full((2, 3, 2, 2), float("nan")), torch.tensor([0, 1]), "NaN"),
    ],
    ids=["lengths", "single-class", "empty", "nan"],
)
def test_bad_input(x, y, message):
    with pytest.raises(LocrobError, match=message):
        separation(x, y, device="cpu")


def test_digits_from_the_metric_and_the_command(trained, digits, tmp_path, monkeypatch, capsys):
    report = locrob.evaluate(
        trained.model, digits, ["separation"], metric_options={"separation": {"max_examples": 200}}
    )
    result = report.metrics["separation"]
    direct = separation(digits.train_x[:200], digits.train_y[:200], device="cpu")
    assert result.summary["min_distance"] == pytest.approx(direct.min_distance())
    assert result.summary["incompatible@1"] == pytest.approx(direct.lipschitz_curve([1.0])[0])
    assert result.details["n_pairs"] == direct.n_pairs

    monkeypatch.setattr(
        sys, "argv", ["locrob", "separation", "--max-examples", "200", "--out", str(tmp_path)]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    assert f"| digits | 200 | {direct.n_pairs} |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "separation.json").read_text())
    assert saved["digits"]["histogram"] == direct.counts.tolist()
    for name in ("separation-lipschitz.png", "separation-robustness-digits.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_separation_plot_redraws_from_a_report(trained, digits):
    options = {"separation": {"max_examples": 100, "norm": "l2"}}
    report = locrob.evaluate(trained.model, digits, ["separation"], metric_options=options)
    presentation = locrob.registries().presentations.get("separation")
    fig = presentation.figure([("digits", report.metrics["separation"])])
    direct = separation(digits.train_x[:100], digits.train_y[:100], "l2", device="cpu")
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == pytest.approx(direct.lipschitz_curve())
    table = presentation.table([("digits", report.metrics["separation"])]).splitlines()
    assert table[0].endswith("| exact | incompatible at alpha = 1, 2, 4, 10 |")
    row = f"| digits | 100 | {direct.n_pairs} | {direct.min_distance():.4g} | no (resolution "
    assert table[2].startswith(row)
    curve = ", ".join(f"{v:.4g}" for v in direct.lipschitz_curve([1.0, 2.0, 4.0, 10.0]))
    assert table[2].endswith(f" | {curve} |")
    assert np.isfinite(report.metrics["separation"].summary["min_distance"])


def test_compiled_and_fallback_kernels_are_both_exact(monkeypatch):
    from locrob import pair_distances

    x, y = random_set(n=70, seed=11)
    d, _, _ = brute(x, y, "inf")
    expected = torch.bincount(torch.round(d * 255).long(), minlength=256)
    counts = {}
    for name, kernel in [
        ("compiled", pair_distances._compiled_kernel()),
        ("cdist", pair_distances._linf_levels_cdist),
    ]:  # each kernel put in place of the probe's choice
        choice = pair_distances.KernelChoice(name, kernel, {})
        monkeypatch.setattr(pair_distances, "_choices", {("cpu", 16, x[0].numel()): choice})
        counts[name] = separation(x, y, tile=16, device="cpu").counts
    assert torch.equal(counts["compiled"], expected) and torch.equal(counts["cdist"], expected)


def test_the_chosen_kernel_is_the_faster_on_the_probe(monkeypatch):
    from locrob import pair_distances

    monkeypatch.setattr(pair_distances, "_choices", {})
    shape = (256, 3 * 32 * 32)  # a CIFAR-sized tile
    choice = pair_distances.linf_kernel(torch.device("cpu"), *shape)
    assert set(choice.rates) == {"compiled", "cdist"}
    assert pair_distances.linf_kernel(torch.device("cpu"), *shape) is choice  # probed once
    # timed again here, side by side: the kernel kept is not the slower one (beyond 2x noise)
    a, b = next(pair_distances._probes(*shape, torch.device("cpu")))
    kernels = {"compiled": choice.kernel, "cdist": pair_distances._linf_levels_cdist}
    if choice.name == "cdist":
        kernels["compiled"] = pair_distances._compiled_kernel()
    for kernel in kernels.values():
        kernel(a, b)  # built (or warm) before it is timed
    rates = {name: pair_distances.pairs_per_s(kernel, a, b) for name, kernel in kernels.items()}
    assert rates[choice.name] >= 0.5 * max(rates.values()), (choice.name, rates)


def test_a_slower_compiled_kernel_loses_to_cdist(monkeypatch):
    from locrob import pair_distances

    def slow(a, b):  # exact, but far slower than torch.cdist
        time.sleep(0.05)
        return pair_distances._linf_levels_cdist(a, b)

    monkeypatch.setattr(pair_distances, "_choices", {})
    monkeypatch.setattr(pair_distances, "_compiled_kernel", lambda: slow)
    choice = pair_distances.linf_kernel(torch.device("cpu"), 16, 64)
    assert choice.name == "cdist" and choice.rates["compiled"] < choice.rates["cdist"]


def test_an_inexact_or_failing_compiled_kernel_is_never_chosen(monkeypatch):
    from locrob import pair_distances

    exact = pair_distances._linf_levels_cdist

    def off_by_one(a, b):
        return exact(a, b) + 1

    def one_lane_of_8_dropped(a, b):  # the kind of fault a vectorizer makes
        kept = torch.arange(a.shape[1]) % 8 != 5
        return exact(a[:, kept], b[:, kept])

    def tail_dropped(a, b):
        return exact(a[:, :-3], b[:, :-3])

    for wrong in (off_by_one, one_lane_of_8_dropped, tail_dropped):
        for rows, features in [(16, 64), (64, 3072)]:
            monkeypatch.setattr(pair_distances, "_choices", {})
            monkeypatch.setattr(pair_distances, "_compiled_kernel", lambda wrong=wrong: wrong)
            choice = pair_distances.linf_kernel(torch.device("cpu"), rows, features)
            assert choice.rates.keys() == {"cdist"}, (wrong.__name__, rows, features)

    def broken(a, b):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(pair_distances, "_choices", {})
    monkeypatch.setattr(pair_distances, "_compiled_kernel", lambda: broken)
    with pytest.warns(UserWarning, match="torch.compile is unavailable"):
        assert pair_distances.linf_kernel(torch.device("cpu"), 16, 64).name == "cdist"


@pytest.mark.skipif(
    "avx2" not in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else True,
    reason="needs an x86 CPU with AVX2",
)
def test_exact_where_the_compiler_vectorizes_for_avx2_only():
    # torch 2.14's inductor, vectorizing for AVX2 alone, builds a fused kernel that gets
    # 3072-byte rows wrong; the probe must see it and the histogram stay exact
    code = (
        "import torch; from locrob.pair_distances import separation\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randint(0, 256, (300, 3, 32, 32), generator=g, dtype=torch.uint8)\n"
        "y = torch.randint(0, 4, (300,), generator=g)\n"
        "f = x.flatten(1).int(); d = (f[:, None] - f[None]).abs().amax(-1)\n"
        "keep = (y[:, None] != y[None]) & torch.ones(300, 300, dtype=torch.bool).triu(1)\n"
        "expected = torch.bincount(d[keep], minlength=256)\n"
        "assert torch.equal(separation(x, y, tile=128, device='cpu').counts, expected)\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "LOCROB_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_past_the_compilers_build_limit_the_kernel_is_cdist_not_an_eager_loop(monkeypatch):
    # beyond torch's builds per function the fused kernel would run eagerly, holding
    # rows x rows x features int32 in memory; the probe must fall back to torch.cdist instead
    from locrob import pair_distances

    torch._dynamo.reset()
    monkeypatch.setattr(pair_distances, "KERNEL_BUILDS", 1)
    monkeypatch.setattr(pair_distances, "_choices", {})
    assert "compiled" in pair_distances.linf_kernel(torch.device("cpu"), 8, 16).rates
    with pytest.warns(UserWarning, match=r"torch.compile is unavailable \(FailOnRecompile"):
        choice = pair_distances.linf_kernel(torch.device("cpu"), 8, 32)
    assert choice.rates.keys() == {"cdist"}
