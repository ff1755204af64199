"""``locrob bench corruptions``: corrupted images per second of the 15 corruptions at severities
1-5 on a batch of 32x32 images, under both presets, against the ``imagecorruptions`` package
(one image at a time, ImageNet-C's parameters) on the corruptions that run there.
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
            best_rate(lambda: ours("cifar"), dev),
            best_rate(lambda: ours("imagenet"), dev),
        )
        try:
            rows.append(CorruptionBench(name, cifar, imagenet, best_rate(theirs, dev, 1)))
        except Exception as err:  # the baseline's own crashes are part of the finding
            rows.append(CorruptionBench(name, cifar, imagenet, None, type(err).__name__))
    return rows


def corruption_table(rows: Sequence[CorruptionBench]) -> str:
    """A Markdown table of rates per corruption, with the overall rates and speed-up."""

    def overall(rates: Sequence[float]) -> float:  # images per second over the whole sweep
        return len(rates) / sum(1 / rate for rate in rates)

    cells = [
        [
            r.corruption,
            f"{r.cifar_ips:,.0f}",
            f"{r.imagenet_ips:,.0f}",
            f"{r.reference_ips:,.0f}" if r.reference_ips else f"fails ({r.reference_error})",
            f"{r.speedup:.1f}x" if r.speedup else "-",
        ]
        for r in rows
    ]
    cifar, imagenet = overall([r.cifar_ips for r in rows]), overall([r.imagenet_ips for r in rows])
    cells.append([f"all {len(rows)}", f"{cifar:,.0f}", f"{imagenet:,.0f}", "-", "-"])
    ran = [r for r in rows if r.reference_ips]
    if ran:
        ours = overall([r.imagenet_ips for r in ran])
        theirs = overall([r.reference_ips for r in ran])
        name = f"the {len(ran)} that run in imagecorruptions"
        cells.append([name, "-", f"{ours:,.0f}", f"{theirs:,.0f}", f"{ours / theirs:.1f}x"])
    header = [
        "corruption",
        "locrob cifar (img/s)",
        "locrob imagenet (img/s)",
        "imagecorruptions (img/s)",
        "speed-up",
    ]
    return markdown.table(header, cells)
