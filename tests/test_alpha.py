"""alpha_lim estimators against ground truths: closed forms, fp64 references, invariants."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import (
    NEEDS_CUDA,
    check_reported_perturbations,
    linear_model,
    one_thread,
    points,
)
from torch import nn

import locrob
from locrob.alpha.sampling import complement_largest
from locrob.alpha.settings import PRESETS, authors_radii, resolve
from locrob.errors import LocrobError

LINEAR = {"output": "logits", "clamp": None, "device": "cpu"}


def test_linear_map_sampling_stays_below_sigma_max():
    model, sigma = linear_model()
    result = locrob.alpha_lim(model, points(), [0.1, 1.0, 10.0], n_draws=300, **LINEAR)
    assert torch.all(result.curve <= sigma * (1 + 1e-9))
    # in 16 dimensions random directions find a good part of it; not so at image size (below)
    assert result.curve[-1] > 0.6 * sigma


def test_random_directions_find_a_tenth_of_sigma_max_at_image_size():
    # 3072 inputs, as CIFAR-10's images. A random unit direction u has E||Wu||^2 = ||W||_F^2 / n,
    # so sampled ratios stay near ||W||_F / sqrt(n), about a tenth of sigma_max for 10 outputs;
    # the search reaches sigma_max. (README, "How tight the lower bounds are".)
    model, sigma = linear_model(out=10, inp=3072)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampled = locrob.alpha_lim(model, x, [1.0], n_draws=100, **LINEAR)
    rms = torch.linalg.matrix_norm(model[1].weight.detach()).item() / math.sqrt(3072)
    assert rms < float(sampled.curve[-1]) < 0.15 * sigma
    searched = locrob.alpha_lim(model, x, [1.0], method="search", n_draws=10, **LINEAR)
    assert float(searched.curve[-1]) >= 0.99 * sigma


DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]


@pytest.mark.parametrize("device", DEVICES)
def test_linear_map_search_reaches_sigma_max(device):
    model, sigma = linear_model()
    result = locrob.alpha_lim(
        model,
        points(),
        [0.1, 1.0, 10.0],
        method="search",
        n_draws=20,
        **{**LINEAR, "device": device},
    )
    assert torch.all(result.curve >= 0.99 * sigma)
    assert torch.all(result.curve <= sigma * (1 + 1e-9))


def test_linear_map_linf_is_below_the_operator_norm():
    model, _ = linear_model()
    inf_norm = model[1].weight.detach().abs().sum(dim=1).max().item()  # ||W||_inf->inf
    result = locrob.alpha_lim(
        model, points(), [0.5], norm="inf", method="search", n_draws=50, **LINEAR
    )
    assert result.curve[0] <= inf_norm * (1 + 1e-9)
    assert result.curve[0] >= 0.95 * inf_norm  # the sign pattern of the top row is found


class Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("fp64", torch.zeros((), dtype=torch.float64))  # run in fp64

    def forward(self, x):
        return torch.sigmoid(x.flatten(1))


def sigmoid_reference(r: float) -> float:
    """sup over 0 < |e| <= r of |s(a+e) - s(a)| / |e| for a in {-10, 10}, on a fine fp64 grid."""
    e = torch.linspace(-r, r, 400_001, dtype=torch.float64)
    e = e[e.abs() > 1e-9]
    ratios = []
    for a in (-10.0, 10.0):
        a = torch.tensor(a, dtype=torch.float64)
        ratios.append(((torch.sigmoid(a + e) - torch.sigmoid(a)).abs() / e.abs()).max().item())
    return max(ratios)


def test_sigmoid_of_fig2_matches_its_closed_form():
    radii = torch.linspace(0.25, 30, 120).tolist()
    x = torch.tensor([-10.0, 10.0], dtype=torch.float64).view(2, 1, 1, 1)
    result = locrob.alpha_lim(Sigmoid(), x, radii, n_draws=16, **LINEAR)
    reference = torch.tensor([sigmoid_reference(r) for r in radii])
    assert torch.allclose(result.curve.float(), reference.float(), rtol=0.01, atol=1e-7)
    # almost 0 for small r, a sharp rise around r = 10 (paper, Fig. 2)
    assert result.alpha_at(1.0) < 1e-3 and result.alpha_at(12.0) > 0.05


class NearestNeighbour(nn.Module):
    """One-hot label of the nearest stored point."""

    def __init__(self, stored, labels, classes):
        super().__init__()
        self.register_buffer("stored", stored.flatten(1))
        self.labels, self.classes = labels, classes

    def forward(self, x):
        nearest = torch.cdist(x.flatten(1), self.stored).argmin(dim=1)
        return nn.functional.one_hot(self.labels[nearest], self.classes).double()


def test_nearest_neighbour_is_zero_below_half_the_distinct_class_distance():
    stored = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.4]], dtype=torch.float64).view(
        3, 1, 1, 2
    )
    labels = torch.tensor([0, 1, 0])
    model = NearestNeighbour(stored, labels, 2)
    # distinct-class distances: 1 and sqrt(1.16); Eq. 2 gives alpha = 0 below 1/2
    radii = [0.1, 0.3, 0.45, 0.499, 0.6]
    result = locrob.alpha_lim(model, stored, radii, n_draws=2000, **LINEAR)
    assert torch.all(result.curve[:4] == 0)
    # past 1/2, a step of 0.6 towards the other class flips the one-hot output: sqrt(2) / 0.6
    assert result.curve[4].item() == pytest.approx(math.sqrt(2) / 0.6)


@pytest.fixture(scope="module")
def cnn_points(trained, digits):
    return trained.model, digits.train_x[:6]


def test_curve_is_the_running_max_of_the_per_point_maxima(cnn_points):
    model, x = cnn_points
    result = locrob.alpha_lim(model, x, [0.5, 1.0, 2.0, 4.0], n_draws=30, device="cpu")
    assert torch.equal(result.per_radius, result.per_point.amax(dim=1))
    assert torch.equal(result.curve, torch.cummax(result.per_radius, 0).values)
    assert torch.all(result.curve[1:] >= result.curve[:-1])
    k = 2
    assert result.per_point[k, result.argmax_point[k]] == result.per_radius[k]


@pytest.mark.parametrize(("directions", "chunk"), [("shared", None), ("fresh", 7), ("shared", 7)])
def test_reported_perturbation_attains_the_reported_ratio(cnn_points, directions, chunk):
    model, x = cnn_points
    result = locrob.alpha_lim(
        model, x, [1.0, 2.0], n_draws=30, directions=directions, chunk_size=chunk, device="cpu"
    )
    check_reported_perturbations(model, x, result)


def test_scaling_the_function_scales_alpha(cnn_points):
    model, x = cnn_points
    scaled = nn.Sequential(model, Scale(3.0))
    a = locrob.alpha_lim(model, x, [0.5, 2.0], output="logits", n_draws=20, device="cpu")
    b = locrob.alpha_lim(scaled, x, [0.5, 2.0], output="logits", n_draws=20, device="cpu")
    assert torch.allclose(b.curve, 3.0 * a.curve, rtol=1e-5)


class Scale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return self.c * x


class Identity(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def test_clamping_uses_the_effective_perturbation():
    # F(x) = x: the ratio is exactly 1 if the denominator is clamp(x+e) - x. With the nominal
    # e it would fall below 1 wherever clamping cut the step (half the directions at x = 1).
    x = torch.ones(4, 3, 4, 4)
    result = locrob.alpha_lim(Identity(), x, [0.1, 1.0], output="logits", n_draws=50, device="cpu")
    assert torch.allclose(result.per_point, torch.ones_like(result.per_point), atol=1e-6)
    assert torch.all(result.perturbation <= 0)  # nothing can go above 1
    nominal = locrob.alpha_lim(
        Identity(), x, [1.0], output="logits", n_draws=50, clamp=None, device="cpu"
    )
    assert torch.allclose(nominal.per_point, torch.ones(1, 4), atol=1e-6)


def test_nominal_denominator_divides_by_the_radius():
    # F(x) = x at the box's corner x = 0: clamping keeps the positive part e+ of e, so the
    # effective ratio is exactly 1 and the nominal one is ||e+|| / r, which the reported
    # perturbation (the effective clamp(x+e) - x = e+) gives in closed form.
    x = torch.zeros(4, 3, 4, 4)
    options = {"output": "logits", "n_draws": 50, "device": "cpu"}
    effective = locrob.alpha_lim(Identity(), x, [0.1, 1.0], **options)
    assert torch.allclose(effective.per_point, torch.ones_like(effective.per_point), atol=1e-6)
    nominal = locrob.alpha_lim(Identity(), x, [0.1, 1.0], denominator="nominal", **options)
    expected = nominal.perturbation.flatten(1).norm(dim=1) / nominal.radii.float()
    assert torch.allclose(nominal.per_radius, expected, rtol=1e-5)
    assert torch.all(nominal.per_point < 0.95) and torch.all(nominal.per_point > 0.5)
    # the search climbs towards e in the positive orthant, where the nominal ratio is 1
    search = locrob.alpha_lim(
        Identity(), x, [1.0], denominator="nominal", method="search", **options
    )
    assert 0.99 < float(search.curve[0]) <= 1 + 1e-6
    # without a box, both denominators are ||e|| = r
    free = {**options, "clamp": None}
    assert torch.allclose(
        locrob.alpha_lim(Identity(), x, [0.5], denominator="nominal", **free).per_point,
        locrob.alpha_lim(Identity(), x, [0.5], **free).per_point,
        atol=1e-6,
    )


def test_small_radii_agree_between_fp32_and_fp64(cnn_points):
    model, x = cnn_points
    model64 = locrob.load_model("small-cnn", num_classes=10).double()
    model64.load_state_dict(model.state_dict())
    radii = [1e-3, 1e-2, 1e-1]
    a = locrob.alpha_lim(model, x, radii, n_draws=20, device="cpu")
    b = locrob.alpha_lim(model64, x, radii, n_draws=20, device="cpu")
    assert b.curve.dtype == torch.float64
    # fp32 ratios carry F's rounding noise over r; how much depends on the CPU's kernels
    allowed = 1e-2 * b.curve + 4 * a.extra["noise_floor"] / torch.tensor(radii).double()
    assert torch.all((a.curve.double() - b.curve).abs() <= allowed)


def test_bf16_forward_keeps_fp32_differences():
    # bf16 rounds the outputs (8-bit mantissa); at a large radius the differences dwarf that
    # rounding, and they are taken in fp32, so the two runs agree closely.
    model, _ = linear_model()
    model = model.float()
    x = points().float()
    kwargs = {"output": "logits", "clamp": None, "n_draws": 30, "device": "cpu"}
    a = locrob.alpha_lim(model, x, [10.0], **kwargs)
    b = locrob.alpha_lim(model, x, [10.0], forward_dtype="bfloat16", **kwargs)
    assert b.curve.dtype == torch.float32
    assert torch.allclose(a.curve, b.curve, rtol=0.02)


def test_softmax_differences_keep_their_precision():
    # Logits far apart: p is 1 - 1e-6 for the top class. The largest coordinate's difference
    # is taken from the others, so fp32 matches an fp64 reference.
    z = torch.tensor([[14.0, 0.0, 0.5]])
    z_moved = z + torch.tensor([[0.0, 1e-3, -2e-3]])
    diff32 = z_moved.softmax(1) - z.softmax(1)
    ref = z_moved.double().softmax(1) - z.double().softmax(1)
    fixed = complement_largest(diff32, z.argmax(dim=1, keepdim=True))
    assert torch.allclose(fixed.double(), ref, rtol=1e-3, atol=0)
    assert not torch.allclose(diff32.double(), ref, rtol=1e-2, atol=0)  # the naive one is off


def test_same_seed_same_result_other_seed_other_result(cnn_points):
    model, x = cnn_points
    run = lambda seed: locrob.alpha_lim(model, x, [0.5, 1.0], n_draws=10, seed=seed, device="cpu")  # noqa: E731
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.per_point, b.per_point) and torch.equal(a.perturbation, b.perturbation)
    assert not torch.equal(a.per_point, c.per_point)


def test_draws_do_not_depend_on_the_chunk_size(cnn_points):
    model, x = cnn_points

    def run(chunk):
        return locrob.alpha_lim(
            model, x, [0.5, 1.0], n_draws=10, directions="fresh", chunk_size=chunk, device="cpu"
        )

    a, b, c = run(7), run(60), run(1)  # 1: one radius per forward pass
    # the same directions; only fp32 convolution at other batch sizes differs (~1e-5)
    for other in (b, c):
        assert torch.allclose(a.per_point, other.per_point, rtol=1e-4)
        assert torch.equal(a.argmax_point, other.argmax_point)
        assert torch.equal(a.perturbation, other.perturbation)


def test_the_tuners_chunks_are_part_of_the_run_not_sampled_twice():
    """Timing the chunk sizes samples the run's first pairs, which the run then keeps: the
    model sees as many images as with a fixed chunk, and the maxima are the same ones."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 5))
    model = model.double()
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(len(o)))
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run(**chunk):
        seen.clear()
        result = locrob.alpha_lim(model, x, [0.25, 0.5, 1.0], n_draws=100, device="cpu", **chunk)
        return result, sum(seen)

    tuned, tuned_images = run()
    assert {15, 63} <= set(seen)  # chunks of 5 and of 21 pairs x 3 radii were timed
    fixed, fixed_images = run(chunk_size=tuned.settings["chunk_size"])
    assert tuned_images == fixed_images  # thrown away and sampled again, they would count twice
    assert fixed_images >= 8 * 100 * 3
    # the same directions at each pair (fp64: batch sizes change the last bits only)
    assert torch.allclose(tuned.per_point, fixed.per_point, rtol=1e-12)
    assert torch.equal(tuned.argmax_point, fixed.argmax_point)
    assert torch.equal(tuned.perturbation, fixed.perturbation)


@pytest.mark.parametrize("directions", ["fresh", "shared"])
def test_search_is_never_below_sampling(cnn_points, directions):
    model, x = cnn_points
    result = locrob.alpha_lim(
        model,
        x,
        [0.25, 1.0],
        method="search",
        n_draws=10,
        search_steps=5,
        search_restarts=2,
        directions=directions,
        device="cpu",
    )
    sampled = locrob.alpha_lim(
        model, x, [0.25, 1.0], n_draws=10, directions=directions, device="cpu"
    )
    assert torch.all(result.per_point >= sampled.per_point)
    assert torch.equal(result.sampling_curve, sampled.curve)
    assert torch.all(result.curve >= sampled.curve) and torch.any(result.curve > sampled.curve)


def test_presets_and_overrides():
    assert PRESETS["paper"]["max_examples"] == 100 and PRESETS["paper"]["n_draws"] == 1000
    assert (
        PRESETS["authors-code"]["noise"] == "uniform"
        and PRESETS["authors-code"]["max_examples"] == 1000
    )
    assert authors_radii()[0] == pytest.approx(1.75 / 30) and authors_radii()[-1] == pytest.approx(
        1.75
    )
    model, _ = linear_model()
    result = locrob.alpha_lim(model, points(3), preset="authors-code", n_draws=2, **LINEAR)
    assert result.settings["n_draws"] == 2 and result.settings["noise"] == "uniform"
    assert len(result.radii) == 30 and result.settings["max_examples"] == 3
    # what the paper leaves open, both presets take from the authors' code
    for preset in PRESETS:
        settings = resolve(preset, None)
        assert (settings.clamp, settings.denominator) == ((0.0, 1.0), "effective")
        assert (settings.norm, settings.output) == ("l2", "softmax")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radii": [0.5, 0.0]}, "positive finite"),
        ({"radii": [1.0, 0.5]}, "strictly increasing"),
        ({"radii": [0.5], "norm": "l1"}, "unknown norm"),
        ({"radii": [0.5], "preset": "fig9"}, "unknown preset 'fig9'"),
        ({"radii": [0.5], "n_draws": 0}, "n_draws must be an integer >= 1, got 0"),
        ({"radii": [0.5], "n_draws": 2.5}, "n_draws must be an integer >= 1, got 2.5"),
        ({"radii": ["a"]}, "radii must be a list of numbers"),
        ({"radii": [0.5], "clamp": (0,)}, "clamp must be .low, high. or None"),
        ({"radii": [0.5], "output": "probits"}, "unknown output 'probits'"),
        ({"radii": [0.5], "denominator": "r"}, "unknown denominator 'r'"),
        ({"radii": [0.5], "draws": 3}, "unknown alpha_lim setting draws"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(LocrobError, match=message):
        locrob.alpha_lim(Identity(), torch.rand(2, 3, 4, 4), **kwargs)


def test_points_outside_the_clamp_range():
    with pytest.raises(LocrobError, match=r"outside the clamp range \[0.0, 1.0\]"):
        locrob.alpha_lim(Identity(), torch.rand(2, 3, 4, 4) * 2 - 0.5, [0.5])


class NaNAt(nn.Module):
    """Returns NaN for the point whose first pixel is 0.5 (index 2), else the pixels."""

    def forward(self, x):
        out = x.flatten(1).clone()
        out[(x.flatten(1)[:, 0] - 0.5).abs() < 1e-6] = float("nan")
        return out


def test_nan_output_names_the_point():
    x = torch.zeros(4, 1, 2, 2)
    x[2, 0, 0, 0] = 0.5
    with pytest.raises(LocrobError, match=r"NaN or Inf at point 2 \(unperturbed\)"):
        locrob.alpha_lim(NaNAt(), x, [0.1], output="logits", device="cpu")


class NaNWhenMoved(nn.Module):
    def forward(self, x):
        out = x.flatten(1).clone()
        out[x.flatten(1)[:, 0] > 0.2] = float("inf")
        return out


def test_inf_output_under_perturbation_names_point_and_radius():
    x = torch.full((3, 1, 2, 2), 0.1)
    x[1] = 0.19
    with pytest.raises(LocrobError, match=r"NaN or Inf at point 1 \(radius 0.05\)"):
        locrob.alpha_lim(NaNWhenMoved(), x, [0.05], output="logits", n_draws=50, device="cpu")


def test_outputs_must_be_one_row_per_input():
    message = r"one row of outputs per input, shape \(n, ...\): 2 inputs gave \(96,\)"
    with pytest.raises(LocrobError, match=message):
        locrob.alpha_lim(
            nn.Flatten(0), torch.rand(2, 3, 4, 4), [0.5], output="logits", device="cpu"
        )
    one_number = nn.Sequential(nn.Flatten(), nn.Linear(48, 1), nn.Flatten(0))
    with pytest.raises(LocrobError, match=r"2 inputs gave \(2,\)"):
        locrob.alpha_lim(one_number, torch.rand(2, 3, 4, 4), [0.5], device="cpu")


def test_each_submodule_gets_its_own_mode_back(cnn_points):
    model, x = cnn_points
    assert not model.training
    wrapper = nn.Sequential(model, Scale(1.0))  # a new container starts in train mode
    locrob.alpha_lim(wrapper, x, [0.5], n_draws=2, device="cpu")
    assert wrapper.training and not model.training
    locrob.evaluate(wrapper, locrob.load_dataset("digits"), ["clean"], max_examples=4)
    assert wrapper.training and not model.training


def test_a_callable_output_is_applied_to_the_model_output(cnn_points):
    model, x = cnn_points
    a = locrob.alpha_lim(model, x, [0.5, 1.0], output="logits", n_draws=5, device="cpu")
    b = locrob.alpha_lim(model, x, [0.5, 1.0], output=lambda z: -2 * z, n_draws=5, device="cpu")
    assert torch.allclose(b.curve, 2 * a.curve, rtol=1e-5)
    assert b.settings["output"] == "<lambda>"


def test_seeds_give_unrelated_draws():
    from locrob.alpha.geometry import Draws

    cpu = torch.device("cpu")
    draws = [Draws(seed, (8,), 2.0, "gaussian", cpu).get(0, 4) for seed in (-1, -2, 0, 1)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(draws[i], draws[j])


@pytest.mark.parametrize("width", [1, 3, 30])
def test_draws_are_addressed_not_chunked_or_threaded(width):
    from locrob.alpha.geometry import Draws

    def draws():
        return Draws(7, (3, 4, 4), 2.0, "uniform", torch.device("cpu"), width)

    whole = draws().get(0, 70)
    assert whole.shape == (70, width, 3, 4, 4)
    assert torch.allclose(whole.flatten(2).norm(dim=2), torch.ones(70, width))
    pieces = draws()
    assert torch.equal(torch.cat([pieces.get(a, b) for a, b in [(0, 5), (5, 6), (6, 70)]]), whole)
    with one_thread():  # units drawn one after another instead of in worker threads
        assert torch.equal(draws().get(0, 70), whole)
    picked = draws().at([0, 69, 33], [0, width - 1, width // 2])
    assert torch.equal(picked, whole[[0, 69, 33], [0, width - 1, width // 2]])


def test_search_at_a_tiny_radius_stays_below_the_true_value():
    # softmax is 1-Lipschitz in L2, so alpha <= sigma_max(W) for softmax(W x). In fp32 at
    # r = 1e-4, a search free to shrink e would report rounding noise as slope.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8, bias=False))
    with torch.no_grad():
        model[1].weight.mul_(0.05)
    bound = torch.linalg.matrix_norm(model[1].weight.detach(), 2).item()
    x = torch.rand(6, 1, 4, 4)
    result = locrob.alpha_lim(model, x, [1e-4, 1e-2], method="search", n_draws=10, device="cpu")
    assert torch.all(result.curve <= bound * 1.02)
    assert torch.all(result.perturbation.flatten(1).norm(dim=1) >= 0.99 * result.radii)


def test_radii_at_the_noise_floor_are_flagged(cnn_points):
    model, x = cnn_points
    with pytest.warns(UserWarning, match="within 100x the floating-point noise"):
        result = locrob.alpha_lim(model, x, [1e-7, 1.0], n_draws=5, device="cpu")
    assert result.extra["noise_floor"] >= 0
    assert result.extra["noise_limited_radii"] == [1e-7]
    assert result.to_dict()["noise_limited_radii"] == [1e-7]
