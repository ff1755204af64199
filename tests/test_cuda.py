"""The same ground truths on a CUDA device: skipped where none is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    BOUND,
    NEEDS_CUDA,
    brute,
    check_philox_directions,
    check_philox_moves,
    check_reported_perturbations,
    linear_model,
    numpy_smoothness,
    operator_norm,
    points,
    random_set,
    smooth_images,
    subset,
)

import locrob
from locrob.contract import TrainConfig, TrainingContext
from locrob.defenses.laplacian import cosine_graphs, smoothness
from locrob.defenses.pgd import PGDTraining
from locrob.pair_distances import separation

pytestmark = NEEDS_CUDA
CUDA = torch.device("cuda")
ON_CUDA = {"output": "logits", "clamp": None, "device": "cuda"}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_forward_on_cuda_agrees_at_a_large_radius(dtype):
    model, sigma = linear_model()
    model, x = model.float(), points().float()
    full = locrob.alpha_lim(model, x, [10.0], n_draws=30, **ON_CUDA)
    half = locrob.alpha_lim(model, x, [10.0], n_draws=30, forward_dtype=dtype, **ON_CUDA)
    assert half.curve.dtype == torch.float32
    assert torch.allclose(full.curve, half.curve, rtol=0.02)
    assert float(full.curve[0]) <= sigma * (1 + 1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compiled_channels_last_sampling_on_cuda_finds_what_the_eager_model_finds(
    trained, digits, dtype
):
    """torch.compile's CUDA-graph build of the chunk's shape, in channels-last memory: the
    same directions give the same maxima as the model run as it is (to the precision's
    rounding), and the perturbations found attain their ratios on the CPU."""
    model, x = trained.model, digits.train_x[:8]
    options = {"n_draws": 50, "device": "cuda", "forward_dtype": dtype, "chunk_size": 96}
    plain = locrob.alpha_lim(model, x, [0.5, 1.0, 2.0], compile="off", **options)
    fast = locrob.alpha_lim(model, x, [0.5, 1.0, 2.0], compile="on", **options)
    tolerance = 1e-4 if dtype == "float32" else 0.05
    assert torch.allclose(fast.per_point, plain.per_point, rtol=tolerance)
    assert next(model.parameters()).is_contiguous()  # given back as it was lent
    if dtype == "float32":
        check_reported_perturbations(model, x, fast)


def test_the_philox_kernel_on_cuda_draws_unit_directions_and_moves_as_torch_would():
    pytest.importorskip("triton")
    check_philox_directions("cuda")
    check_philox_moves("cuda")


@pytest.mark.parametrize("method", ["sample", "search"])
def test_perturbation_found_on_cuda_attains_its_ratio_on_cpu(trained, digits, method):
    # The bound certified on the GPU is re-checked on the CPU from the reported perturbation.
    model, x = trained.model, digits.train_x[:8]
    result = locrob.alpha_lim(model, x, [1.0, 2.0], n_draws=30, method=method, device="cuda")
    check_reported_perturbations(model, x, result)


def test_separation_on_cuda_by_the_triton_kernel_is_exactly_the_brute_force_one():
    """Taken wherever Triton is installed and passes its probes: two tiles, of 4096 rows and
    fewer (off the diagonal too), of 8-byte rows (distances of every size; two words each in
    the packed form)."""
    pytest.importorskip("triton")
    from locrob import pair_distances

    x, y = random_set(n=5000, classes=4, seed=5, shape=(1, 2, 4))
    assert pair_distances.linf_plan(CUDA, len(x), 64, x[0].numel()).triton is not None
    flat = x.flatten(1).double()
    d = torch.cdist(flat, flat, p=float("inf"))  # integer levels: exact in fp64
    i, j = torch.triu_indices(len(x), len(x), 1)
    keep = y[i] != y[j]
    result = separation(x, y, "inf", tile=64, device="cuda")
    assert torch.equal(result.counts.cpu(), torch.bincount(d[i, j][keep].long(), minlength=256))


@pytest.mark.parametrize("name", ["compiled", "cdist"])
def test_separation_on_cuda_is_exactly_the_brute_force_one(monkeypatch, name):
    from locrob import pair_distances

    x, y = random_set(n=300, classes=4, seed=5)
    monkeypatch.setenv("LOCROB_TRITON", "0")
    kernel = {
        "compiled": pair_distances._compiled_kernel(),
        "cdist": pair_distances._linf_levels_cdist,
    }
    choice = pair_distances.KernelChoice(name, kernel[name], {})  # not the probe's choice
    monkeypatch.setattr(pair_distances, "_choices", {("cuda", 64, x[0].numel()): choice})
    d, _, _ = brute(x, y, "inf")
    result = separation(x, y, "inf", tile=64, device="cuda")
    expected = torch.bincount(torch.round(d * 255).long(), minlength=256)
    assert torch.equal(result.counts.cpu(), expected)


def test_laplacian_term_on_cuda_matches_fp64_numpy():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(100, 512, generator=g)
    labels = torch.randint(0, 10, (100,), generator=g)
    got = smoothness(cosine_graphs([a.to(CUDA)]), labels.to(CUDA), 10, 2).item()
    expected = numpy_smoothness(a.double().numpy(), labels.numpy(), 10, 2)
    assert got == pytest.approx(expected, rel=1e-3)  # fp32 (or tf32) Gram on the GPU


def test_pgd_batches_on_cuda_stay_in_the_ball_and_the_box(trained, digits):
    model = trained.model.to(CUDA)
    try:
        x = (digits.test_x[:64].float() / 255).to(CUDA)
        y = digits.test_y[:64].to(CUDA)
        context = TrainingContext(TrainConfig(), CUDA, 10)
        adv, _ = PGDTraining().transform_batch(model=model, x=x, y=y, context=context)
        assert adv.device.type == "cuda"
        assert float((adv - x).abs().amax()) <= 8 / 255 + 1e-5
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    finally:
        trained.model.to("cpu")


def test_combined_defenses_train_on_cuda_and_reload_on_cpu(digits, tmp_path):
    run = locrob.train(
        "small-cnn",
        subset(digits, 300),
        defenses=["parseval", "laplacian"],
        config=TrainConfig(epochs=2),
        device="cuda",
        out=tmp_path,
    )
    assert all(np.isfinite(h["loss"]) for h in run.history)
    assert run.history[-1]["laplacian"] > 0
    reloaded, _ = locrob.load_checkpoint(run.checkpoint)
    x = digits.test_x[:32].float() / 255
    with torch.no_grad():
        expected = run.model.cpu()(x)
        assert torch.allclose(reloaded(x), expected, atol=1e-4)


def test_l2nn_layers_are_nonexpansive_after_training_on_cuda(digits):
    run = locrob.train(
        "l2nn",
        subset(digits, 200),
        defenses=["l2nn"],
        config=TrainConfig(epochs=1),
        model_options={"width": 8},
        device="cuda",
    )
    net = run.model.cpu().double()
    shapes = {1: (1, 3, 32, 32), 4: (1, 16, 16, 16), 7: (1, 32, 8, 8), 11: (1, 512)}
    for index, shape in shapes.items():
        assert operator_norm(net[index], shape) <= BOUND


def test_a_callers_model_is_lent_to_the_gpu_and_given_back(trained, digits):
    locrob.evaluate(trained.model, digits, ["clean"], device="cuda", max_examples=50)
    locrob.alpha_lim(trained.model, digits.train_x[:4], [1.0], n_draws=4, device="cuda")
    locrob.layerwise_alpha(trained.model, digits.train_x[:4], [1.0], n_draws=4, device="cuda")
    assert {p.device.type for p in trained.model.state_dict().values()} == {"cpu"}


# corruptions whose output does not depend on the random stream
DETERMINISTIC = (
    "defocus_blur",
    "zoom_blur",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
)


@pytest.mark.parametrize("preset", ["cifar", "imagenet"])
def test_corruptions_on_cuda_match_the_cpu_or_their_statistics(preset):
    from locrob.corruptions import NAMES, corrupt

    x = smooth_images(64)
    for name in NAMES:
        for severity in (1, 5):
            gpu = corrupt(x.to(CUDA), name, severity, preset=preset, seed=3)
            assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
            assert torch.equal(gpu, corrupt(x.to(CUDA), name, severity, preset=preset, seed=3))
            cpu = corrupt(x, name, severity, preset=preset, seed=3)
            if name == "jpeg_compression":  # nvJPEG where within 40 dB of libjpeg, or libjpeg
                mse = float((gpu.cpu().double() - cpu.double()).square().flatten(1).mean(1).max())
                assert mse == 0 or 10 * np.log10(1 / mse) >= 40, name
            elif name in DETERMINISTIC:
                assert torch.allclose(gpu.cpu(), cpu, atol=2e-5), name
            else:  # other random streams: the same distortion on average
                moved = [float((out.cpu() - x).abs().mean()) for out in (gpu, cpu)]
                assert moved[0] == pytest.approx(moved[1], rel=0.15, abs=2e-3), (name, moved)


def test_bench_corruptions_on_cuda_times_the_cpu_in_the_same_run(monkeypatch):
    from locrob.bench import corruptions

    monkeypatch.setattr(corruptions, "_import_imagecorruptions", lambda: lambda image, **_: image)
    rows = corruptions.bench_corruptions(
        images=64,
        reference_images=1,
        device="cuda",
        names=["contrast", "jpeg_compression", "glass_blur"],
        imagenet_images=4,
        imagenet_size=224,
    )
    assert [r.error for r in rows if r.error] == []
    assert all(r.cpu_cifar_ips > 0 and r.cpu_imagenet_ips > 0 for r in rows)
    assert "cifar: device / cpu" in corruptions.corruption_table(rows)
