"""``locrob bench corruptions``: corrupted images per second of the 15 corruptions at severities
1-5 on a batch of 32x32 images (the ``cifar`` preset) and on a batch of images of the
``imagenet`` preset's size (32x32 by default, 224x224 as ImageNet-C's), against the
``imagecorruptions`` package (one image at a time, ImageNet-C's parameters) on the corruptions
that run there; on a GPU, against the CPU in the same run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from locrob import markdown
from locrob.errors import LocrobError, summary
from locrob.runtime import best_rate, resolve_device


@dataclass
class CorruptionBench:
    """One corruption's rates (corrupted images per second over severities 1-5), and the
    batches they were measured on."""

    corruption: str
    cifar_ips: float | None  # None where locrob's corruption fails (``error``)
    imagenet_ips: float | None
    reference_ips: float | None  # imagecorruptions; None where it fails or was not run
    reference_error: str = ""
    cpu_cifar_ips: float | None = None  # the same on the CPU, when the device is not one
    cpu_imagenet_ips: float | None = None
    error: str = ""  # why locrob's corruption failed here, if it did
    images: int = 0  # the cifar batch
    imagenet_images: int = 0
    imagenet_size: int = 0
    cpu_imagenet_images: int | None = None  # of the imagenet batch, on the CPU
    reference_images: int = 0

    @property
    def speedup(self) -> float | None:
        """Our rate over imagecorruptions' at the same (ImageNet-C) parameters."""
        if self.reference_ips is None or self.imagenet_ips is None:
            return None
        return self.imagenet_ips / self.reference_ips


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
    cpu_imagenet_images: int | None = None,
    on_row: Callable[[CorruptionBench], None] | None = None,
) -> list[CorruptionBench]:
    """Each corruption's rates: locrob on a batch of ``images`` 32x32 images (``cifar`` preset)
    and of ``imagenet_images`` (default: as many) ``imagenet_size``-pixel ones (``imagenet``
    preset), on ``device`` and, when that is not the CPU, on the CPU too (there on the first
    ``cpu_imagenet_images`` of the latter, default all); imagecorruptions image by image on
    ``reference_images`` of the latter (0: not run). A corruption that fails is a row that
    says why, and the others are measured; ``on_row`` receives each row as it is measured (a
    long run's rows are not lost to its end)."""
    from locrob.corruptions import NAMES

    reference = _import_imagecorruptions() if reference_images > 0 else None
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(0)
    cifar = torch.randint(0, 256, (images, 3, 32, 32), generator=generator, dtype=torch.uint8)
    shape = (imagenet_images or images, 3, imagenet_size, imagenet_size)
    imagenet = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    hwc = imagenet[:reference_images].permute(0, 2, 3, 1).numpy()
    batches = {"cifar": cifar.float() / 255, "imagenet": imagenet.float() / 255}
    # the CPU on the whole cifar batch: a few hundred 32x32 images fit in its caches, and
    # their rate would overstate its pace on a data set's worth
    on_cpu = dev.type != "cpu"
    cpu_batches = {**batches, "imagenet": batches["imagenet"][:cpu_imagenet_images]}
    sizes = {
        "images": images,
        "imagenet_images": shape[0],
        "imagenet_size": imagenet_size,
        "cpu_imagenet_images": len(cpu_batches["imagenet"]) if on_cpu else None,
        "reference_images": len(hwc),
    }
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

        try:
            here = _rates(name, batches, dev)
            cpu = _rates(name, cpu_batches, torch.device("cpu")) if on_cpu else {}
        except Exception as err:  # one corruption's failure (a missing file, a device fault)
            row = CorruptionBench(name, None, None, None, error=summary(err), **sizes)
            warnings.warn(f"bench corruptions: {name} fails ({row.error})", stacklevel=2)
        else:
            baseline, error = None, ""
            try:
                if reference is not None:
                    baseline = best_rate(theirs, torch.device("cpu"), 1)
            except Exception as err:  # the baseline's own crashes are part of the finding
                error = summary(err)
            row = CorruptionBench(
                name,
                here["cifar"],
                here["imagenet"],
                baseline,
                error,
                cpu.get("cifar"),
                cpu.get("imagenet"),
                **sizes,
            )
        rows.append(row)
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
    """A Markdown table of rates per corruption, with the overall rates and speed-up (over
    the corruptions measured: one that fails says why on its row)."""

    def overall(rates: Sequence[float]) -> float:  # images per second over the whole sweep
        return len(rates) / sum(1 / rate for rate in rates)

    measured = [r for r in rows if not r.error]
    cpu = bool(measured) and all(r.cpu_cifar_ips is not None for r in measured)
    seconds = sum(1 / r.cifar_ips for r in measured)  # one image of each, at all severities
    cells = [_cells(r, seconds, cpu) for r in rows]
    if measured:
        cifar = overall([r.cifar_ips for r in measured])
        imagenet = overall([r.imagenet_ips for r in measured])
        label = (
            f"all {len(rows)}" if len(measured) == len(rows) else f"the {len(measured)} measured"
        )
        total = [label, f"{cifar:,.0f}", f"{imagenet:,.0f}", "100 %"]
        if cpu:
            on_cpu = overall([r.cpu_cifar_ips for r in measured])
            total += [f"{on_cpu:,.0f}", f"{overall([r.cpu_imagenet_ips for r in measured]):,.0f}"]
            total.append(f"{cifar / on_cpu:.1f}x")
        cells.append([*total, "-", "-"])
    ran = [r for r in measured if r.reference_ips]
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
        *(["cpu cifar (img/s)", _cpu_imagenet(measured), "cifar: device / cpu"] if cpu else []),
        "imagecorruptions (img/s)",
        "speed-up",
    ]
    return markdown.table(header, cells)


def _cpu_imagenet(rows: Sequence[CorruptionBench]) -> str:
    """The CPU's imagenet column, naming how many images it ran on where that is fewer."""
    fewer = {
        r.cpu_imagenet_images
        for r in rows
        if r.cpu_imagenet_images is not None and r.cpu_imagenet_images < r.imagenet_images
    }
    return (
        f"cpu imagenet (img/s, {fewer.pop()} images)" if len(fewer) == 1 else "cpu imagenet (img/s)"
    )


def _cells(r: CorruptionBench, seconds: float, cpu: bool) -> list[str]:
    """One corruption's row: its rates, its share of the cifar sweep's ``seconds``, the CPU's
    rates (``cpu``) and the baseline's; or why it fails."""
    if r.error:
        return [r.corruption, f"fails ({r.error})", *["-"] * (4 + 3 * cpu)]
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
