"""``locrob bench alpha``: the sampling estimator's perturbed images per second under each preset
(the default settings, ``paper``, ``authors-code``), against (a) the same model's plain batched
inference at the same batch size and in the same form (compiled and channels-last where the
estimator is), the ceiling of any sampling estimator, and (b) the authors' own loop
(``r_alpha.py``) transcribed here and run with the preset's own points, draws, radii and noise,
on the module as given (contiguous weights, torch's default precision: on a GPU, TF32
convolutions where the estimator in float32 runs IEEE fp32); with the model's FLOPs per image,
the estimator's TFLOP/s and, on a GPU whose peak is known, the share of its dense bf16 peak.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from locrob import markdown
from locrob.alpha.estimate import alpha_lim
from locrob.alpha.forward import ChunkForward, channels_last, channels_last_pays, compiles
from locrob.alpha.sampling import forward_batch
from locrob.alpha.settings import FORWARD_DTYPES, PRESETS, AlphaSettings, resolve
from locrob.runtime import autocast, best_rate, resolve_device
from locrob.sources import load_dataset, load_model

ALPHA_MODELS = ("linear", "small-cnn", "preact-resnet18")
ALPHA_PRESETS = (None, *PRESETS)
# (points, draws, radii) that take a few seconds per measurement on 2 CPU cores: each preset
# keeps its radii and its points where the model is fast enough, with fewer draws, but at least
# two per point, so that F(x) at the points (both loops) and the estimator's noise floor weigh
# in a run about as little as in the preset's full one.
CPU_SIZES = {
    "linear": {None: (100, 40, 5), "paper": (100, 20, 30), "authors-code": (1000, 1, 30)},
    "small-cnn": {None: (100, 40, 5), "paper": (100, 4, 30), "authors-code": (1000, 1, 30)},
    "preact-resnet18": {None: (8, 16, 4), "paper": (16, 2, 30), "authors-code": (32, 2, 30)},
}
DEFAULT_SIZE = (16, 16, 4)
# passes of plain inference before it is timed: torch.compile's CUDA graphs run the first
# call plainly, record the second and replay from the third
WARM_UP_PASSES = 3


# Dense bf16 tensor-core peaks in FLOP/s from the vendors' data sheets, by a part of the
# device's name (the first that matches: "H100 PCIe" before "H100", "A100" before "A10").
BF16_PEAKS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10", 125e12),
)


def bench_network(name: str) -> nn.Module:
    """A model by name; ``linear`` is one linear layer on CIFAR-sized images, where
    generating directions costs more than the forward pass; ``wrn-28-10`` is RobustBench's
    WideResNet-28-10 (its zoo's ``Standard``, the architecture of most CIFAR-10 entries)."""
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    if name == "wrn-28-10":
        from locrob.adapters.robustbench import zoo_architecture

        return zoo_architecture("cifar10/Linf/Standard")
    return load_model(name)


def flops_per_image(model: nn.Module, x1: torch.Tensor) -> float:
    """Floating-point operations of one forward pass of one image (torch's counter: 2 per
    multiply-add of the convolutions and matrix products)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x1)
    return float(counter.get_total_flops())


def bf16_peak(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s, where :data:`BF16_PEAKS` knows it."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for part, peak in BF16_PEAKS if part in name), None)


@dataclass
class AlphaBench:
    """One model's figures under one preset (images = perturbed inputs evaluated)."""

    model: str
    preset: str
    device: str
    forward_dtype: str
    noise: str
    directions: str
    points: int
    draws: int
    radii: int
    batch: int  # images per forward pass
    engine_ips: float
    inference_ips: float
    authors_ips: float  # their loop, numpy noise
    authors_torch_ips: float  # their loop, noise drawn by torch on the device
    authors_draws: int  # per point and radius in their loop's timed runs (the rate is per image)
    compiled: bool  # the estimator's forward pass (and the inference beside it) compiled
    flops: float  # per image
    peak: float | None  # the device's dense bf16 FLOP/s, where known
    clever_s_per_point: float | None = None  # ART's clever_u, where measured

    @property
    def tflops(self) -> float:
        """The estimator's forward passes' TFLOP/s."""
        return self.engine_ips * self.flops / 1e12

    @property
    def peak_share(self) -> float | None:
        """The estimator's FLOP/s over the device's bf16 peak (for a half-precision forward)."""
        if self.peak is None or self.forward_dtype == "float32":
            return None
        return self.tflops * 1e12 / self.peak

    @property
    def alpha_s_per_point(self) -> float:
        """Seconds of the estimator per point (all its draws at all its radii)."""
        return self.draws * self.radii / self.engine_ips

    @property
    def ratio(self) -> float:
        return self.engine_ips / self.inference_ips

    @property
    def speedup(self) -> float:
        """Over the authors' loop as they wrote it."""
        return self.engine_ips / self.authors_ips

    @property
    def speedup_torch(self) -> float:
        """Over the authors' loop with torch's generator: the loop structure alone."""
        return self.engine_ips / self.authors_torch_ips

    def to_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "ratio": self.ratio,
            "speedup": self.speedup,
            "speedup_torch": self.speedup_torch,
            "alpha_s_per_point": self.alpha_s_per_point,
            "tflops": self.tflops,
            "peak_share": self.peak_share,
        }


@torch.no_grad()
def authors_loop(
    model: nn.Module,
    x: torch.Tensor,
    radii: Sequence[float],
    draws: int,
    noise: str = "uniform",
    rng: str = "numpy",
    seed: int = 0,
) -> tuple[int, float]:
    """The authors' ``get_alpha_l2_norm`` (``r_alpha.py``), transcribed for the benchmark.

    For each radius, ``draws`` times: noise of the points' shape (uniform in [-1, 1] as
    theirs, or Gaussian for the paper's text), rescaled to L2 norm ``min(norm, r)``, x + noise
    clamped to [0, 1], one fp32 forward pass of all points, the softmax difference over the
    effective perturbation, and its max brought to the host; the best value carries over to
    the next radius. ``rng="numpy"`` draws the noise as they do (numpy's legacy generator,
    then a copy to the device); ``"torch"`` draws it with torch on the points' device, the
    same loop with a faster generator. Returns the images evaluated and the running best.
    """
    legacy = np.random.RandomState(seed)  # the stream behind their np.random.uniform
    generator = torch.Generator(x.device).manual_seed(seed)

    def draw() -> torch.Tensor:
        if rng == "torch":
            eps = torch.empty_like(x)
            if noise == "uniform":
                return eps.uniform_(-1, 1, generator=generator)
            return eps.normal_(generator=generator)
        if noise == "uniform":
            raw = legacy.uniform(-1, 1, x.shape)
        else:
            raw = legacy.standard_normal(x.shape)
        return torch.from_numpy(raw.astype(np.float32)).to(x.device)

    n = len(x)
    clean = model(x).softmax(dim=1)
    best = 0.0
    for r in radii:
        for _ in range(draws):
            eps = draw()
            norm = eps.view(n, -1).norm(dim=1).clamp_min(1e-12)
            eps = eps * torch.clamp(r / norm, max=1.0).view(-1, *[1] * (x.ndim - 1))
            moved = (x + eps).clamp(0, 1)
            diff = (model(moved).softmax(dim=1) - clean).view(n, -1).norm(dim=1)
            best = max(best, (diff / (moved - x).view(n, -1).norm(dim=1)).max().item())
    return n * draws * len(radii), best


def bench_model(
    name: str,
    dev: torch.device,
    images: torch.Tensor,
    preset: str | None,
    forward_dtype: str,
    sizes: tuple[int, int, int] | None,
    clever_points: int = 0,
    compile: str = "auto",
    authors_draws: int | None = None,
    report: Callable[[str], None] | None = None,
) -> AlphaBench:
    """The figures of one architecture (random weights: speed does not depend on them); the
    authors' loop is timed on ``authors_draws`` draws per point and radius (default: the
    preset's). ``report`` receives a line per stage as it ends (the warm-up, each run timed)."""
    said = report or (lambda line: None)
    label = f"{name} {preset or 'default'}"
    torch.manual_seed(0)
    model = bench_network(name).to(dev).eval()
    settings, radii = _sized(name, dev, preset, forward_dtype, sizes, compile)
    n, draws = settings.max_examples or 100, settings.n_draws
    authors_draws = authors_draws or draws
    x = (images[torch.arange(n) % len(images)].float() / 255).to(dev)
    options = {k: v for k, v in settings.describe().items() if k not in ("radii", "clamp")}
    chunks = []

    def engine() -> int:
        result = alpha_lim(model, x, radii, device=dev, **options)
        chunks.append(result.settings["chunk_size"])
        return result.evaluations

    as_given = copy.deepcopy(model)  # the authors' loop takes the module as it is given

    def authors(rng: str) -> Callable[[], int]:
        return lambda: authors_loop(as_given, x, radii, authors_draws, settings.noise, rng)[0]

    # the weights in channels-last memory once for every run (each run would otherwise
    # convert them again, at new addresses, and its CUDA graphs be captured again)
    with channels_last(model, channels_last_pays(model, dev, x)):
        start = time.perf_counter()
        engine()  # warm-up, and the chunk the estimator picks for this model
        said(f"{label}: warm-up (compilation, the chunk) {time.perf_counter() - start:.1f} s")
        total = n * draws * len(radii)
        size = forward_batch(n * draws, len(radii), chunks[-1])
        compiled = compiles(settings.compile, dev, total)
        inference = _inference(model, x, size, compiled, FORWARD_DTYPES[forward_dtype])
        # warm-up: compilation, cuDNN's autotuning, the allocator and the CUDA graphs'
        # recording, which the first few passes of the one shape do
        inference(WARM_UP_PASSES * size)
        runs = {"engine": engine, "inference": lambda: inference(total)}
        runs |= {"authors numpy": authors("numpy"), "authors torch": authors("torch")}
        rates = _interleaved(runs, dev, lambda key, rate: said(f"{label}: {key} {rate:,.0f} img/s"))
    clever = clever_seconds(model, x[:clever_points], dev) if clever_points else None
    return AlphaBench(
        name,
        preset or "default",
        str(dev),
        forward_dtype,
        settings.noise,
        settings.directions,
        n,
        draws,
        len(radii),
        size,
        rates["engine"],
        rates["inference"],
        rates["authors numpy"],
        rates["authors torch"],
        authors_draws,
        compiled,
        flops_per_image(model, x[:1]),
        bf16_peak(dev),
        clever,
    )


def _sized(
    name: str,
    dev: torch.device,
    preset: str | None,
    forward_dtype: str,
    sizes: tuple[int, int, int] | None,
    compile: str,
) -> tuple[AlphaSettings, list[float]]:
    """The preset's settings at the sizes measured (a CPU's defaults, or ``sizes``), and the
    radii kept (the largest ``sizes[2]``)."""
    if sizes is None and dev.type == "cpu":
        sizes = CPU_SIZES.get(name, {}).get(preset, DEFAULT_SIZE)
    n, draws, n_radii = sizes or (None, None, None)
    sized = {k: v for k, v in {"max_examples": n, "n_draws": draws}.items() if v is not None}
    settings = resolve(preset, None, forward_dtype=forward_dtype, compile=compile, **sized)
    return settings, settings.radii[-n_radii:] if n_radii is not None else settings.radii


def _interleaved(
    runs: dict[str, Callable[[], int]],
    dev: torch.device,
    measured: Callable[[str, float], None],
) -> dict[str, float]:
    """Each run's units per second, the best of two, the runs interleaved so that a change in
    the machine's load reaches them all alike; ``measured`` receives each rate as it comes."""
    rates = dict.fromkeys(runs, 0.0)
    for _ in range(2):
        for key, run in runs.items():
            rate = best_rate(run, dev, repeats=1)
            measured(key, rate)
            rates[key] = max(rates[key], rate)
    return rates


def _inference(
    model: nn.Module,
    x: torch.Tensor,
    size: int,
    compiled: bool,
    dtype: torch.dtype | None,
) -> Callable[[int], int]:
    """Plain inference of a given number of images in the estimator's form: its ``size``
    images per forward pass, compiled and channels-last where it is."""
    dev = x.device
    layout = channels_last_pays(model, dev, x)
    form = ChunkForward(model, size, compiled, layout) if compiled or layout else model
    batch = x[torch.arange(size, device=dev) % len(x)]

    @torch.no_grad()
    def inference(total: int) -> int:
        done = 0
        with autocast(dev, dtype), channels_last(model, layout):
            while done < total:
                form(batch)
                done += size
        return done

    return inference


# ART's clever_u settings timed beside alpha_lim: its documented example sizes
CLEVER = {"nb_batches": 10, "batch_size": 50, "radius": 2.0, "norm": 2}


def clever_seconds(model: nn.Module, x: torch.Tensor, dev: torch.device) -> float | None:
    """Seconds per point of ART's ``clever_u`` on ``model`` (None without ART installed)."""
    from locrob.adapters.art import clever_scores, to_art

    if importlib.util.find_spec("art") is None:
        return None
    classifier = to_art(model, tuple(x.shape[1:]), 10, dev)
    points = x.float().cpu().numpy()
    start = time.perf_counter()
    clever_scores(classifier, points, **CLEVER)
    return (time.perf_counter() - start) / len(points)


def bench_alpha(
    models: Sequence[str] = ALPHA_MODELS,
    device: str | None = None,
    presets: Sequence[str | None] = ALPHA_PRESETS,
    forward_dtype: str = "float32",
    sizes: tuple[int, int, int] | None = None,
    clever_points: int = 1,
    compile: str = "auto",
    authors_draws: int | None = None,
    report: Callable[[str], None] | None = None,
) -> list[AlphaBench]:
    """Measure each model under each preset (``None``: the default settings); ``sizes`` =
    (points, draws, radii) overrides the preset's counts, which a CPU scales down by default.

    ``clever_points`` points also time ART's ``clever_u`` (0 skips it), once per model;
    ``compile`` is the estimator's setting (``auto``, ``on``, ``off``); ``authors_draws``
    sizes the authors' loop's timed runs (default: each preset's draws). Its rate does not
    depend on them: each draw is one forward pass of the points, the same work every time
    (beside one pass at the points per run). ``report`` receives a line per stage as it ends.
    """
    dev = resolve_device(device)
    images = load_dataset("digits").train_x
    return [
        bench_model(
            name,
            dev,
            images,
            preset,
            forward_dtype,
            sizes,
            clever_points=clever_points if i == 0 else 0,
            compile=compile,
            authors_draws=authors_draws,
            report=report,
        )
        for name in models
        for i, preset in enumerate(presets)
    ]


def alpha_table(rows: Sequence[AlphaBench]) -> str:
    """A Markdown table of the figures, then one of ART's CLEVER beside α_lim where timed."""
    header = [
        "model",
        "preset",
        "noise, directions",
        "device",
        "forward",
        "points x draws x radii",
        "batch",
        "estimator img/s",
        "inference img/s",
        "ratio",
        "authors' loop img/s (numpy / torch noise)",
        "speed-up (numpy / torch noise)",
        "GFLOP/img, TFLOP/s (of bf16 peak)",
    ]
    table = markdown.table(
        header,
        (
            [
                r.model,
                r.preset,
                f"{r.noise}, {r.directions}",
                r.device,
                r.forward_dtype + (", compiled" if r.compiled else ""),
                f"{r.points} x {r.draws} x {r.radii}"
                + (f" (authors' draws: {r.authors_draws})" if r.authors_draws != r.draws else ""),
                r.batch,
                f"{r.engine_ips:,.0f}",
                f"{r.inference_ips:,.0f}",
                f"{r.ratio:.2f}",
                f"{r.authors_ips:,.0f} / {r.authors_torch_ips:,.0f}",
                f"{r.speedup:.2f}x / {r.speedup_torch:.2f}x",
                f"{r.flops / 1e9:.3g}, {r.tflops:.3g}"
                + (f" ({r.peak_share:.0%})" if r.peak_share is not None else ""),
            ]
            for r in rows
        ),
    )
    timed = [r for r in rows if r.clever_s_per_point is not None]
    if not timed:
        return table
    gradients = f"{CLEVER['nb_batches']} x {CLEVER['batch_size']} gradients"
    header = [
        "model",
        "alpha_lim s/point (draws x radii)",
        f"ART clever_u s/point ({gradients})",
        "clever_u / alpha_lim",
    ]
    clever = markdown.table(
        header,
        (
            [
                r.model,
                f"{r.alpha_s_per_point:.4f} ({r.draws} x {r.radii})",
                f"{r.clever_s_per_point:.4f}",
                f"{r.clever_s_per_point / r.alpha_s_per_point:.1f}x",
            ]
            for r in timed
        ),
    )
    return table + "\n" + clever
