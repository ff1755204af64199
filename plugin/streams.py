"""One random stream per image: draws addressed by the image's index, not by its batch.

Image ``i`` of a data set gets a generator seeded by ``mix_seed(seed, i, *key)`` (``key`` names
the draw: the SNR, the corruption and severity), so the noise or corruption an image receives
does not depend on the batch size, on which images share its batch, or on which process
measures it. torch has no counter-based random numbers per tensor row, so each row is drawn
from its own small generator and the rows are stacked; the draws are a small part of a
corruption's or a model's work.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence

import torch

from locrob.runtime import mix_seed


def key_int(part: int | float | str) -> int:
    """A draw's name part as an integer: itself, a float's IEEE-754 bits, a string's hash
    (BLAKE2b: the same in every process, unlike Python's salted ``hash``)."""
    if isinstance(part, bool) or not isinstance(part, (int, float, str)):
        raise TypeError(f"a draw is named by ints, floats and strings, not {part!r}")
    if isinstance(part, int):
        return part
    if isinstance(part, float):
        return struct.unpack("<q", struct.pack("<d", part))[0]
    return int.from_bytes(hashlib.blake2b(part.encode(), digest_size=8).digest(), "little")


class Streams:
    """Per-image generators on one device; every draw has one row per image."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]

    @classmethod
    def for_images(
        cls,
        seed: int,
        indices: Iterable[int],
        device: torch.device | str,
        *key: int | float | str,
    ) -> Streams:
        """The streams of the images at ``indices`` for the draw named by ``key``."""
        ints = [key_int(part) for part in key]
        return cls([mix_seed(seed, i, *ints) for i in indices], device)

    @classmethod
    def from_generator(cls, generator: torch.Generator, n: int) -> Streams:
        """``n`` streams seeded from one generator (a caller that holds a single stream)."""
        seeds = torch.randint(2**62, (n,), generator=generator, device=generator.device)
        return cls(seeds.tolist(), generator.device)

    def __len__(self) -> int:
        return len(self.generators)

    def _each(
        self,
        shape: Sequence[int],
        dtype: torch.dtype,
        fill: Callable[[torch.Tensor, torch.Generator], object],
    ) -> torch.Tensor:
        """A ``(n, *shape)`` tensor whose row ``i`` is filled by ``fill(row, generator_i)``."""
        out = torch.empty((len(self), *shape), dtype=dtype, device=self.device)
        for row, generator in zip(out, self.generators, strict=True):
            fill(row, generator)
        return out

    def rand(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform [0, 1) draws of shape ``(n, *shape)``."""
        return self._each(shape, dtype, lambda row, g: row.uniform_(generator=g))

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal draws of shape ``(n, *shape)``."""
        return self._each(shape, dtype, lambda row, g: row.normal_(generator=g))

    def randint(self, low: int, high: int, shape: Sequence[int]) -> torch.Tensor:
        """Integers in [low, high) of shape ``(n, *shape)``."""
        return self._each(shape, torch.int64, lambda row, g: row.random_(low, high, generator=g))

    def uniform(self, shape: Sequence[int], low: float, high: float) -> torch.Tensor:
        """Uniform draws in [low, high) of shape ``(n, *shape)``, in float64."""
        return low + (high - low) * self.rand(shape, torch.float64)

    def poisson(self, rates: torch.Tensor) -> torch.Tensor:
        """Poisson draws with the given rates, row ``i`` from image ``i``'s stream."""
        return torch.stack(
            [torch.poisson(r, generator=g) for r, g in zip(rates, self.generators, strict=True)]
        )
