"""``locrob bench``: speed measured side by side in one run, reported as ratios.

``train``: each defense's training-step time as a ratio to vanilla.

``separation``: pairs per second of the tiled distance histogram against a full
``torch.cdist`` matrix and plain broadcasting, on the same images.

``corruptions``: corrupted images per second of the 15 corruptions at severities 1-5 on a batch
of 32x32 images, under both presets, against the ``imagecorruptions`` package (one image at a
time, ImageNet-C's parameters) on the corruptions that run there.

``alpha``: the sampling estimator's perturbed images per second under each preset (the
default settings, ``paper``, ``authors-code``), against (a) the same model's plain batched
inference at the same batch size, the ceiling of any sampling estimator, and (b) the authors'
own loop (``r_alpha.py``) transcribed here and run with the preset's own points, draws, radii
and noise.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from locrob.alpha.estimate import alpha_lim
from locrob.alpha.settings import FORWARD_DTYPES, PRESETS, resolve
from locrob.errors import LocrobError
from locrob.runtime import autocast, resolve_device, synchronize
from locrob.sources import load_dataset, load_model

ALPHA_MODELS = ("linear", "small-cnn", "preact-resnet18")
ALPHA_PRESETS = (None, *PRESETS)
# (points, draws, radii) that take a few seconds per measurement on 2 CPU cores: each preset
# keeps its radii and its points where the model is fast enough, with fewer draws.
CPU_SIZES = {
    "linear": {None: (100, 40, 5), "paper": (100, 20, 30), "authors-code": (1000, 2, 30)},
    "small-cnn": {None: (100, 40, 5), "paper": (100, 4, 30), "authors-code": (1000, 1, 30)},
    "preact-resnet18": {None: (8, 16, 4), "paper": (16, 1, 30), "authors-code": (32, 1, 30)},
}
DEFAULT_SIZE = (16, 16, 4)


def bench_network(name: str) -> nn.Module:
    """A model by name; ``linear`` is one linear layer on CIFAR-sized images, where
    generating directions costs more than the forward pass."""
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    return load_model(name)


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
    chunk: int
    engine_ips: float
    inference_ips: float
    authors_ips: float  # their loop, numpy noise
    authors_torch_ips: float  # their loop, noise drawn by torch on the device
    clever_s_per_point: float | None = None  # ART's clever_u, where measured

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
        }


def _best_rate(run: Callable[[], int], device: torch.device, repeats: int = 2) -> float:
    """Images per second of ``run`` (which returns its image count), best of ``repeats``."""
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        images = run()
        synchronize(device)
        best = max(best, images / (time.perf_counter() - start))
    return best


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
) -> AlphaBench:
    """The figures of one architecture (random weights: speed does not depend on them)."""
    torch.manual_seed(0)
    model = bench_network(name).to(dev).eval()
    if sizes is None and dev.type == "cpu":
        sizes = CPU_SIZES.get(name, {}).get(preset, DEFAULT_SIZE)
    n, draws, n_radii = sizes or (None, None, None)
    sized = {k: v for k, v in {"n_points": n, "n_draws": draws}.items() if v is not None}
    settings = resolve(preset, None, forward_dtype=forward_dtype, **sized)
    radii = settings.radii[-n_radii:] if n_radii is not None else settings.radii
    n, draws = settings.n_points or 100, settings.n_draws
    x = (images[torch.arange(n) % len(images)].float() / 255).to(dev)
    options = {k: v for k, v in settings.describe().items() if k not in ("radii", "clamp")}
    chunks = []

    def engine() -> int:
        result = alpha_lim(model, x, radii, device=dev, **options)
        chunks.append(result.settings["chunk_size"])
        return result.evaluations

    engine()  # warm-up, and the chunk the estimator picks for this model
    chunk = chunks[-1]
    batch = x[torch.arange(chunk, device=dev) % n]
    dtype = FORWARD_DTYPES[forward_dtype]
    total = n * draws * len(radii)

    @torch.no_grad()
    def inference() -> int:
        done = 0
        with autocast(dev, dtype):
            while done < total:
                model(batch)
                done += chunk
        return done

    def authors(rng: str) -> Callable[[], int]:
        return lambda: authors_loop(model, x, radii, draws, settings.noise, rng)[0]

    inference()  # warm-up (cuDNN autotuning, allocator)
    # interleaved, best of two each, so that a change in the machine's load reaches all alike
    runs = {"engine": engine, "inference": inference}
    runs.update({"numpy": authors("numpy"), "torch": authors("torch")})
    rates = dict.fromkeys(runs, 0.0)
    for _ in range(2):
        for key, run in runs.items():
            rates[key] = max(rates[key], _best_rate(run, dev, repeats=1))
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
        chunk,
        rates["engine"],
        rates["inference"],
        rates["numpy"],
        rates["torch"],
        clever,
    )


# ART's clever_u settings timed beside alpha_lim: its documented example sizes
CLEVER = {"nb_batches": 10, "batch_size": 50, "radius": 2.0, "norm": 2}


def clever_seconds(model: nn.Module, x: torch.Tensor, dev: torch.device) -> float | None:
    """Seconds per point of ART's ``clever_u`` on ``model`` (None without ART installed)."""
    try:
        from art.metrics import clever_u

        from locrob.adapters.art import to_art
    except ImportError:
        return None
    classifier = to_art(model, tuple(x.shape[1:]), 10, dev)
    points = x.float().cpu().numpy()
    start = time.perf_counter()
    for point in points:
        clever_u(classifier, point, **CLEVER, verbose=False)
    return (time.perf_counter() - start) / len(points)


def bench_alpha(
    models: Sequence[str] = ALPHA_MODELS,
    device: str | None = None,
    presets: Sequence[str | None] = ALPHA_PRESETS,
    forward_dtype: str = "float32",
    sizes: tuple[int, int, int] | None = None,
    clever_points: int = 1,
) -> list[AlphaBench]:
    """Measure each model under each preset (``None``: the default settings); ``sizes`` =
    (points, draws, radii) overrides the preset's counts, which a CPU scales down by default.

    ``clever_points`` points also time ART's ``clever_u`` (0 skips it), once per model.
    """
    dev = resolve_device(device)
    images = load_dataset("digits").train_x
    return [
        bench_model(name, dev, images, preset, forward_dtype, sizes, clever_points if i == 0 else 0)
        for name in models
        for i, preset in enumerate(presets)
    ]


def alpha_table(rows: Sequence[AlphaBench]) -> str:
    """A Markdown table of the figures."""
    lines = [
        "| model | preset | noise, directions | device | forward | points x draws x radii | "
        "chunk | estimator img/s | inference img/s | ratio | authors' loop img/s (numpy / torch "
        "noise) | speed-up (numpy / torch noise) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.preset} | {r.noise}, {r.directions} | {r.device} | "
            f"{r.forward_dtype} | {r.points} x {r.draws} x {r.radii} | {r.chunk} | "
            f"{r.engine_ips:,.0f} | {r.inference_ips:,.0f} | {r.ratio:.2f} | "
            f"{r.authors_ips:,.0f} / {r.authors_torch_ips:,.0f} | "
            f"{r.speedup:.2f}x / {r.speedup_torch:.2f}x |"
        )
    timed = [r for r in rows if r.clever_s_per_point is not None]
    if timed:
        lines += [
            "",
            "| model | alpha_lim s/point (draws x radii) | ART clever_u s/point "
            f"({CLEVER['nb_batches']} x {CLEVER['batch_size']} gradients) | clever_u / alpha_lim |",
            "|---|---|---|---|",
        ]
        for r in timed:
            clever, alpha = r.clever_s_per_point, r.alpha_s_per_point
            lines.append(
                f"| {r.model} | {alpha:.4f} ({r.draws} x {r.radii}) | {clever:.4f} "
                f"| {clever / alpha:.1f}x |"
            )
    return "\n".join(lines) + "\n"


@dataclass
class SeparationBench:
    """Unordered image pairs per second of one method, and its largest buffer."""

    method: str
    images: int
    pairs_per_s: float
    largest_buffer_mb: float
    # locrob's rows: each kernel's pairs/s on the probe tile that chose the one timed
    probe: dict[str, float] = field(default_factory=dict)


def _distinct_histogram(d: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.bincount(torch.round(d[keep]).long(), minlength=256)


def bench_separation(
    n: int = 10_000, baseline_n: int = 1500, device: str | None = None, tile: int = 512
) -> list[SeparationBench]:
    """The L-inf analysis of ``n`` random 3x32x32 uint8 images, and two baselines on the
    first ``baseline_n``: one full ``torch.cdist`` matrix, and plain broadcasting in row tiles.
    All three produce the same exact histogram (checked)."""
    from locrob.pair_distances import linf_kernel, separation, tile_rows

    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    features = 3 * 32 * 32
    rows = []

    def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
        synchronize(dev)
        start = time.perf_counter()
        out = fn()
        synchronize(dev)
        return out, time.perf_counter() - start

    def pairs(m: int) -> int:
        return m * (m - 1) // 2

    # each size's kernel probed (and built) outside the timing
    choices = {m: linf_kernel(dev, tile_rows(m, tile), features) for m in (n, baseline_n)}
    buffer = tile**2 * 8 / 2**20

    def locrob_row(m: int, seconds: float) -> SeparationBench:
        method = f"locrob tiles, {choices[m].name} kernel"
        return SeparationBench(method, m, pairs(m) / seconds, buffer, choices[m].rates)

    _, seconds = timed(lambda: separation(x, y, "inf", tile=tile, device=dev).counts)
    rows.append(locrob_row(n, seconds))
    xs = x[:baseline_n].flatten(1).to(dev, torch.float32)
    ys = y[:baseline_n].to(dev)
    upper = torch.ones(baseline_n, baseline_n, dtype=torch.bool, device=dev).triu(1)
    keep = upper & (ys[:, None] != ys[None])
    subset = (x[:baseline_n], y[:baseline_n])
    reference, seconds = timed(lambda: separation(*subset, "inf", tile=tile, device=dev).counts)
    rows.append(locrob_row(baseline_n, seconds))

    full, seconds = timed(lambda: _distinct_histogram(torch.cdist(xs, xs, p=float("inf")), keep))
    rows.append(
        SeparationBench(
            "torch.cdist, full matrix",
            baseline_n,
            pairs(baseline_n) / seconds,
            baseline_n**2 * 4 / 2**20,
        )
    )

    def broadcast() -> torch.Tensor:
        out = torch.empty(baseline_n, baseline_n, device=dev)
        step = 16
        for i in range(0, baseline_n, step):
            out[i : i + step] = (xs[i : i + step, None] - xs[None]).abs().amax(-1)
        return _distinct_histogram(out, keep)

    brute, seconds = timed(broadcast)
    buffer = 16 * baseline_n * features * 4 + baseline_n**2 * 4
    rows.append(
        SeparationBench(
            "broadcasting, 16-row tiles", baseline_n, pairs(baseline_n) / seconds, buffer / 2**20
        )
    )
    if not (torch.equal(full.cpu(), reference.cpu()) and torch.equal(brute.cpu(), reference.cpu())):
        raise LocrobError("the baselines disagree with the tiled histogram")
    return rows


def separation_table(rows: Sequence[SeparationBench]) -> str:
    """A Markdown table, with each rate as a multiple of the best baseline's, after a line
    naming the torch version and the kernel the probe chose (with both kernels' probe rates)."""
    best = max(r.pairs_per_s for r in rows if not r.probe)
    probe = next(r.probe for r in rows if r.probe)
    rates = ", ".join(f"{name} {rate / 1e6:.2f} M" for name, rate in probe.items())
    lines = [
        f"torch {torch.__version__}; kernel chosen on the probe tile (pairs/s): {rates}",
        "",
        "| method | images | pairs/s | vs best baseline | largest buffer (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.images:,} | {r.pairs_per_s:,.0f} | {r.pairs_per_s / best:.2f}x | "
            f"{r.largest_buffer_mb:,.1f} |"
        )
    return "\n".join(lines) + "\n"


TRAIN_TARGETS = {"vanilla": "", "parseval": "<= 1.3x", "laplacian": "<= 1.5x", "pgd": "~ steps + 1"}


@dataclass
class TrainBench:
    """Milliseconds per training step with one defense, and the ratio to vanilla."""

    defense: str
    ms_per_step: float
    ratio: float = 1.0


def bench_train(
    defenses: Sequence[str] = ("parseval", "laplacian", "pgd"),
    model: str = "small-cnn",
    steps: int = 20,
    batch: int = 100,
    rounds: int = 2,
    device: str | None = None,
) -> list[TrainBench]:
    """Step time of each defense alone against vanilla, on the same batch of digits, measured
    in alternating rounds (best of ``rounds``) through the trainer's own ``train_step``."""
    from locrob.training import (
        TrainConfig,
        TrainingContext,
        build_architecture,
        lifecycle,
        make_defenses,
        train_step,
    )

    dev = resolve_device(device)
    data = load_dataset("digits")
    x = (data.train_x[:batch].float() / 255).to(dev)
    y = data.train_y[:batch].to(dev)
    names = ["vanilla", *defenses]
    best = dict.fromkeys(names, float("inf"))
    for _ in range(rounds):
        for name in names:
            torch.manual_seed(0)
            net, _ = build_architecture(model, data, None)
            net.to(dev).train()
            pm = lifecycle(make_defenses([] if name == "vanilla" else [name]))
            context = TrainingContext(TrainConfig(), dev, data.num_classes)
            pm.hook.prepare_model(model=net, context=context)
            optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            for _ in range(2):  # warm-up
                train_step(net, x, y, pm, optimizer, context)
            synchronize(dev)
            start = time.perf_counter()
            for _ in range(steps):
                train_step(net, x, y, pm, optimizer, context)
            synchronize(dev)
            best[name] = min(best[name], (time.perf_counter() - start) / steps * 1000)
    return [TrainBench(n, best[n], best[n] / best["vanilla"]) for n in names]


def train_table(rows: Sequence[TrainBench]) -> str:
    """A Markdown table of step times and ratios to vanilla, with the targets."""
    lines = ["| defense | ms per step | x vanilla | target |", "|---|---|---|---|"]
    for r in rows:
        target = TRAIN_TARGETS.get(r.defense, "")
        lines.append(f"| {r.defense} | {r.ms_per_step:.1f} | {r.ratio:.2f} | {target} |")
    return "\n".join(lines) + "\n"


@dataclass
class CorruptionBench:
    """One corruption's rates (corrupted images per second over severities 1-5)."""

    corruption: str
    cifar_ips: float
    imagenet_ips: float
    reference_ips: float | None  # imagecorruptions; None where it fails
    reference_error: str = ""

    @property
    def speedup(self) -> float | None:
        """Our rate over imagecorruptions' at the same (ImageNet-C) parameters."""
        return None if self.reference_ips is None else self.imagenet_ips / self.reference_ips


def _import_imagecorruptions() -> Callable[..., np.ndarray]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pkg_resources and scipy deprecation warnings
            from imagecorruptions import corrupt
    except ImportError as err:
        raise LocrobError(
            f"the baseline imagecorruptions cannot be imported ({err}); install it with: "
            "pip install 'locrob[corruptions]'"
        ) from None
    return corrupt


def bench_corruptions(
    images: int = 1000,
    reference_images: int = 40,
    device: str | torch.device | None = None,
    names: Sequence[str] | None = None,
) -> list[CorruptionBench]:
    """Each corruption's rates: locrob on a batch of ``images`` (both presets) and
    imagecorruptions image by image on ``reference_images`` of them."""
    from locrob.corruptions import NAMES, corrupt

    reference = _import_imagecorruptions()
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, 32, 32), generator=generator, dtype=torch.uint8)
    x = (pixels.float() / 255).to(dev)
    hwc = pixels[:reference_images].permute(0, 2, 3, 1).numpy()
    rows = []
    for name in names or NAMES:

        def ours(preset: str, name: str = name) -> int:
            for severity in range(1, 6):
                corrupt(x, name, severity, preset=preset, seed=severity)
            return 5 * images

        def theirs(name: str = name) -> int:
            np.random.seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for severity in range(1, 6):
                    for image in hwc:
                        reference(image, corruption_name=name, severity=severity)
            return 5 * len(hwc)

        ours("cifar")  # warm-up: caches the operator matrices and textures
        cifar, imagenet = (
            _best_rate(lambda: ours("cifar"), dev),
            _best_rate(lambda: ours("imagenet"), dev),
        )
        try:
            rows.append(CorruptionBench(name, cifar, imagenet, _best_rate(theirs, dev, 1)))
        except Exception as err:  # the baseline's own crashes are part of the finding
            rows.append(CorruptionBench(name, cifar, imagenet, None, type(err).__name__))
    return rows


def corruption_table(rows: Sequence[CorruptionBench]) -> str:
    """A Markdown table of rates per corruption, with the overall rates and speed-up."""
    lines = [
        "| corruption | locrob cifar (img/s) | locrob imagenet (img/s) "
        "| imagecorruptions (img/s) | speed-up |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        theirs = f"{r.reference_ips:,.0f}" if r.reference_ips else f"fails ({r.reference_error})"
        speedup = f"{r.speedup:.1f}x" if r.speedup else "-"
        lines.append(
            f"| {r.corruption} | {r.cifar_ips:,.0f} | {r.imagenet_ips:,.0f} | {theirs} "
            f"| {speedup} |"
        )
    ran = [r for r in rows if r.reference_ips]

    def overall(rates: Sequence[float]) -> float:  # images per second over the whole sweep
        return len(rates) / sum(1 / rate for rate in rates)

    lines.append(
        f"| all {len(rows)} | {overall([r.cifar_ips for r in rows]):,.0f} "
        f"| {overall([r.imagenet_ips for r in rows]):,.0f} | - | - |"
    )
    if ran:
        ours, theirs = (
            overall([r.imagenet_ips for r in ran]),
            overall([r.reference_ips for r in ran]),
        )
        lines.append(
            f"| the {len(ran)} that run in imagecorruptions | - | {ours:,.0f} | {theirs:,.0f} "
            f"| {ours / theirs:.1f}x |"
        )
    return "\n".join(lines) + "\n"
