"""The ``noise`` metric (Fig. 4): exact per-image SNR, Gaussian noise, clamping, accuracy."""

from __future__ import annotations

import math

import pytest
import torch

import locrob
from locrob.errors import LocrobError
from locrob.metrics.noise import GaussianNoise, add_noise_at_snr, image_norms
from locrob.streams import Streams


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def streams(x, seed=0):
    """One stream per image of ``x``, as the metric gives them."""
    return Streams.for_images(seed, range(len(x)), "cpu")


@pytest.mark.parametrize("snr", [30.0, 40.0, 60.0])
def test_each_image_gets_exactly_the_asked_snr_when_clamping_does_not_bind(snr):
    x = 0.3 + 0.4 * torch.rand(5, 3, 32, 32, generator=generator(1), dtype=torch.float64)
    noisy = add_noise_at_snr(x, snr, streams(x))
    assert noisy.min() > 0 and noisy.max() < 1  # the check below needs no clamping
    measured = 20 * torch.log10(image_norms(x) / image_norms(noisy - x))
    assert torch.allclose(measured, torch.full((5,), snr, dtype=torch.float64), atol=1e-9)


def test_noise_is_standard_gaussian_up_to_its_scale():
    x = torch.full((1, 3, 200, 200), 0.5, dtype=torch.float64)
    noise = add_noise_at_snr(x, 60.0, streams(x)) - x  # 0.1 % of the norm: never clamped
    z = (noise / noise.std()).flatten()
    assert abs(float(z.mean())) < 0.02
    assert float((z**4).mean()) == pytest.approx(3.0, abs=0.1)  # Gaussian kurtosis
    assert float((z.abs() < 1).double().mean()) == pytest.approx(
        math.erf(1 / math.sqrt(2)), abs=0.01
    )


def test_clamping_keeps_range_dtype_and_zero_images():
    x = torch.rand(4, 1, 8, 8, generator=generator(2))
    x[2] = 0
    noisy = add_noise_at_snr(x, 0.0, streams(x))
    assert noisy.dtype == x.dtype and noisy.min() >= 0 and noisy.max() <= 1
    assert torch.equal(noisy[2], x[2])  # no signal, no defined SNR: left alone
    assert not torch.equal(noisy[0], x[0])


def test_metric_accuracy_falls_with_the_snr_and_matches_clean_at_high_snr(trained, digits):
    metric = GaussianNoise(snr_db=[200, 20, 0, -20])
    report = locrob.evaluate(trained.model, digits, [metric, "clean"], device="cpu")
    result = report.metrics["noise"]
    clean = report.metrics["clean"].summary["accuracy"]
    acc = result.details["accuracy"]
    assert result.details["clean_accuracy"] == pytest.approx(clean)
    assert acc[0] == pytest.approx(clean)  # 1e-10 of the signal changes no prediction
    assert acc[3] < 0.5 * clean  # noise 10x the signal's norm
    assert acc[0] >= acc[2] >= acc[3]
    assert result.summary["accuracy@20dB"] == acc[1]
    after = result.details["mean_snr_after_clamp"]
    assert after[1] >= 20 - 1e-6  # clamping only removes noise
    assert result.details["n"] == len(digits.test_y)


def test_metric_is_reproducible_from_its_seed(trained, digits):
    def run(seed):
        metric = GaussianNoise(snr_db=[5], repeats=2)
        report = locrob.evaluate(trained.model, digits, [metric], device="cpu", seed=seed)
        return report.metrics["noise"].details["accuracy"][0]

    assert run(0) == run(0)
    assert {run(s) for s in range(4)} != {run(0)}


def test_metric_does_not_depend_on_the_batch_size(trained, digits):
    """Each image's noise is addressed by its index: batching changes no number."""
    metric = GaussianNoise(snr_db=[5, 0], repeats=2)
    runs = [
        locrob.evaluate(trained.model, digits, [metric], device="cpu", batch_size=size)
        for size in (13, 64, 500)
    ]
    details = [run.metrics["noise"].details for run in runs]
    assert details[0] == details[1] == details[2]


def test_noise_is_registered_by_name():
    assert "noise" in locrob.registries().metrics


def test_plot_draws_one_line_per_model(trained, digits):
    report = locrob.evaluate(trained.model, digits, [GaussianNoise(snr_db=[30, 10])], device="cpu")
    figure = locrob.registries().presentations.get("noise").figure
    fig = figure([("a", report.metrics["noise"]), ("b", report.metrics["noise"])])
    assert len(fig.axes[0].lines) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"snr_db": []}, "at least one value"),
        ({"snr_db": [10, float("nan")]}, "finite numbers"),
        ({"repeats": 0}, "repeats must be an integer >= 1"),
    ],
)
def test_bad_settings(options, message):
    with pytest.raises(LocrobError, match=message):
        GaussianNoise(**options)
