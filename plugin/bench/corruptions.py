"""``locrob bench corruptions``: corrupted images per second of the 15 corruptions at severities
1-5 on a batch of 32x32 images (the ``cifar`` preset) and on a batch of images of the
``imagenet`` preset's size (32x32 by default, 224x224 as ImageNet-C's), against the
``imagecorruptions`` package (one image at a time, ImageNet-C's parameters) on the corruptions
that run there; on a GPU, against the CPU in the same run (on as many of the images as asked).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from locrob import markdown
from locrob.errors import LocrobError
from locrob.runtime import best_rate, resolve_device


@dataclass
class CorruptionBench:
    """One corruption's rates (corrupted images per second over severities 1-5)."""

    corruption: str
    cifar_ips: float
    imagenet_ips: float
    reference_ips: float | None  # imagecorruptions; None where it fails or was not run
    reference_error: str = ""
    cpu_cifar_ips: float | None = None  # the same on the CPU, when the device is not one
    cpu_imagenet_ips: float | None = None

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
    imagenet_images: int | None = None,
    imagenet_size: int = 32,
    cpu_images: int | None = None,
    on_row: Callable[[CorruptionBench], None] | None = None,
) -> list[CorruptionBench]:
    """Each corruption's rates: locrob on a batch of ``images`` 32x32 images (``cifar`` preset)
    and of ``imagenet_images`` (default: as many) ``imagenet_size``-pixel ones (``imagenet``
    preset), on ``device`` and, when that is not the CPU, on the CPU too, on the first
    ``cpu_images`` of each batch (default: all); imagecorruptions image by image on
    ``reference_images`` of the latter (0: not run). ``on_row`` receives each row as it is
    measured (a long run's rows are not lost to its end)."""
    from locrob.corruptions import NAMES

    reference = _import_imagecorruptions() if reference_images > 0 else None
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(0)
    cifar = torch.randint(0, 256, (images, 3, 32, 32), generator=generator, dtype=torch.uint8)
    shape = (imagenet_images or images, 3, imagenet_size, imagenet_size)
    imagenet = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    hwc = imagenet[:reference_images].permute(0, 2, 3, 1).numpy()
    batches = {"cifar": cifar.float() / 255, "imagenet": imagenet.float() / 255}
    cpu_batches = {preset: batch[:cpu_images] for preset, batch in batches.items()}
    rows = []
    for name in names or NAMES:

        def theirs(name: str = name) -> int:
            np.random.seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for severity in range(1, 6):
                    for image in hwc:
                        reference(image, corruption_name=name, severity=severity)
            return 5 * len(hwc)

        here = _rates(name, batches, dev)
        on_cpu = _rates(name, cpu_batches, torch.device("cpu")) if dev.type != "cpu" else {}
        cpu = {"cpu_cifar_ips": on_cpu.get("cifar"), "cpu_imagenet_ips": on_cpu.get("imagenet")}
        baseline, error = None, ""
        try:
            if reference is not None:
                baseline = best_rate(theirs, torch.device("cpu"), 1)
        except Exception as err:  # the baseline's own crashes are part of the finding
            error = type(err).__name__
        rows.append(CorruptionBench(name, here["cifar"], here["imagenet"], baseline, error, **cpu))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def _rates(name: str, batches: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Corrupted images per second of ``name`` at severities 1-5 on each preset's batch."""
    from locrob.corruptions import corrupt

    rates = {}
    for preset, batch in batches.items():
        x = batch.to(device)

        def ours(preset: str = preset, x: torch.Tensor = x) -> int:
            for severity in range(1, 6):
                corrupt(x, name, severity, preset=preset, seed=severity)
            return 5 * len(x)

        ours()  # warm-up: caches the operator matrices and textures
        rates[preset] = best_rate(ours, device)
    return rates


def corruption_table(rows: Sequence[CorruptionBench]) -> str:
    """A Markdown table of rates per corruption, with the overall rates and speed-up."""

    def overall(rates: Sequence[float]) -> float:  # images per second over the whole sweep
        return len(rates) / sum(1 / rate for rate in rates)

    cpu = all(r.cpu_cifar_ips is not None for r in rows) and bool(rows)
    seconds = sum(1 / r.cifar_ips for r in rows)  # one image of each, at all severities
    cells = [_cells(r, seconds, cpu) for r in rows]
    cifar, imagenet = overall([r.cifar_ips for r in rows]), overall([r.imagenet_ips for r in rows])
    total = [f"all {len(rows)}", f"{cifar:,.0f}", f"{imagenet:,.0f}", "100 %"]
    if cpu:
        on_cpu = overall([r.cpu_cifar_ips for r in rows])
        total += [f"{on_cpu:,.0f}", f"{overall([r.cpu_imagenet_ips for r in rows]):,.0f}"]
        total.append(f"{cifar / on_cpu:.1f}x")
    cells.append([*total, "-", "-"])
    ran = [r for r in rows if r.reference_ips]
    if ran:
        ours = overall([r.imagenet_ips for r in ran])
        theirs = overall([r.reference_ips for r in ran])
        name = f"the {len(ran)} that run in imagecorruptions"
        blanks = ["-"] * (3 if cpu else 0)
        cells.append(
            [name, "-", f"{ours:,.0f}", "-", *blanks, f"{theirs:,.0f}", f"{ours / theirs:.1f}x"]
        )
    header = [
        "corruption",
        "locrob cifar (img/s)",
        "locrob imagenet (img/s)",
        "share of the cifar sweep",
        *(["cpu cifar (img/s)", "cpu imagenet (img/s)", "cifar: device / cpu"] if cpu else []),
        "imagecorruptions (img/s)",
        "speed-up",
    ]
    return markdown.table(header, cells)


def _cells(r: CorruptionBench, seconds: float, cpu: bool) -> list[str]:
    """One corruption's row: its rates, its share of the cifar sweep's ``seconds``, the CPU's
    rates (``cpu``) and the baseline's."""
    cells = [
        r.corruption,
        f"{r.cifar_ips:,.0f}",
        f"{r.imagenet_ips:,.0f}",
        f"{100 / r.cifar_ips / seconds:.0f} %",
    ]
    if cpu:
        cells += [f"{r.cpu_cifar_ips:,.0f}", f"{r.cpu_imagenet_ips:,.0f}"]
        cells.append(f"{r.cifar_ips / r.cpu_cifar_ips:.1f}x")
    if r.reference_ips:
        cells.append(f"{r.reference_ips:,.0f}")
    else:
        cells.append(f"fails ({r.reference_error})" if r.reference_error else "not run")
    cells.append(f"{r.speedup:.1f}x" if r.speedup else "-")
    return cells
