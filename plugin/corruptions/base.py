"""What every corruption shares: its parameter table, the input checks, the random streams.

A corruption is one function of (images, parameters, streams) and a table of parameters per
preset and severity. The base owns validation, dtype handling and seeding, so each corruption
module holds only its own math, the way each torchattacks attack does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from locrob.data.images import check_images
from locrob.errors import LocrobError
from locrob.streams import Streams

SEVERITIES = (1, 2, 3, 4, 5)
PRESETS = ("cifar", "imagenet")

Apply = Callable[[torch.Tensor, Any, Streams], torch.Tensor]


def check_severity(severity: object, owner: str = "corruption") -> int:
    """``severity`` as an int in 1..5, or a clear error."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise LocrobError(f"{owner}: severity must be an integer from 1 to 5, got {severity!r}")
    return severity


def make_streams(
    seed: int | Streams | torch.Generator | None, n: int, device: torch.device
) -> Streams:
    """One stream per image on ``device``: given, from a generator, or seeded from an int
    (0 where None) by image index, for reproducibility."""
    if isinstance(seed, Streams):
        if len(seed) != n or seed.device.type != device.type:
            raise LocrobError(
                f"corruption: the {len(seed)} streams on {seed.device} do not fit {n} images "
                f"on {device}"
            )
        return seed
    if isinstance(seed, torch.Generator):
        if seed.device.type != device.type:
            raise LocrobError(
                f"corruption: the generator is on {seed.device} but the images are on {device}"
            )
        return Streams.from_generator(seed, n)
    return Streams.for_images(0 if seed is None else int(seed), range(n), device)


@dataclass(frozen=True)
class Corruption:
    """A named corruption with parameters for each preset and severity.

    ``apply(images, parameters, streams)`` gets float32 (or float64) NCHW images in [0, 1]
    with 1 or 3 channels, ``parameters = params[preset][severity - 1]`` and one random stream
    per image (:class:`~locrob.streams.Streams`: ``streams.rand(shape)`` draws ``(n, *shape)``,
    row ``i`` from image ``i``'s stream), and returns images of the same shape in [0, 1].
    Register one from a plugin::

        @locrob.hookimpl
        def register_corruptions(register):
            register("invert", Corruption("invert", lambda x, p, s: p * (1 - x) + (1 - p) * x,
                                          {"cifar": (0.2, 0.4, 0.6, 0.8, 1.0)}))
    """

    name: str
    apply: Apply
    params: Mapping[str, Sequence[Any]]

    def __post_init__(self) -> None:
        for preset, table in self.params.items():
            if len(table) != len(SEVERITIES):
                raise LocrobError(
                    f"corruption '{self.name}': preset '{preset}' needs 5 parameter sets (one "
                    f"per severity), got {len(table)}"
                )

    def parameters(self, severity: int, preset: str = "cifar") -> Any:
        """The parameters used at ``severity`` under ``preset``."""
        check_severity(severity, f"corruption '{self.name}'")
        if preset not in self.params:
            raise LocrobError(
                f"corruption '{self.name}' has no preset '{preset}'; its presets: "
                f"{', '.join(self.params)}"
            )
        return self.params[preset][severity - 1]

    def __call__(
        self,
        images: torch.Tensor,
        severity: int,
        *,
        preset: str = "cifar",
        seed: int | Streams | torch.Generator | None = None,
    ) -> torch.Tensor:
        """Corrupt a batch at ``severity`` (1-5); ``seed`` fixes the draws: per-image
        :class:`~locrob.streams.Streams`, an int (image ``i`` of the batch gets the stream of
        index ``i``), or a generator that seeds the images' streams."""
        owner = f"corruption '{self.name}'"
        params = self.parameters(severity, preset)
        check_images(images, f"{owner}: images", uint8=False, empty=True)
        streams = make_streams(seed, len(images), images.device)
        work = images if images.dtype == torch.float64 else images.float()
        out = self.apply(work, params, streams)
        return out.clamp(0, 1).to(images.dtype)
