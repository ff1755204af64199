"""Norms, random directions and projections on batches of flattened perturbations."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from locrob.errors import LocrobError

NORMS = {"2": 2.0, "l2": 2.0, "inf": float("inf"), "linf": float("inf")}
NOISES = ("gaussian", "uniform")


def parse_norm(norm: str | float | int) -> float:
    """``"l2"``, ``2``, ``"inf"`` or ``"linf"`` -> 2.0 or inf."""
    key = str(norm).lower().replace("∞", "inf")
    if key in NORMS:
        return NORMS[key]
    if isinstance(norm, (int, float)) and float(norm) in (2.0, float("inf")):
        return float(norm)
    raise LocrobError(f"unknown norm {norm!r}; use 'l2' or 'inf'")


def norm_name(p: float) -> str:
    return "l2" if p == 2.0 else "inf"


def row_norms(t: torch.Tensor, p: float) -> torch.Tensor:
    """The ``p``-norm of each row of ``t`` (rows = first axis, everything else flattened)."""
    flat = t.reshape(len(t), -1)
    return flat.abs().amax(dim=1) if p == float("inf") else torch.linalg.vector_norm(flat, dim=1)


def unit_directions(
    shape: tuple[int, ...], p: float, noise: str, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Random directions of ``p``-norm 1, one per row, from Gaussian or uniform [-1, 1] noise.

    Drawn in fp32 whatever the compute precision, so fp32 and fp64 runs see the same draws.
    """
    if noise == "gaussian":
        d = torch.randn(shape, generator=generator, device=device)
    else:
        d = torch.rand(shape, generator=generator, device=device).mul_(2).sub_(1)
    scale = row_norms(d, p).clamp_min_(1e-30)
    return d.div_(scale.view(-1, *([1] * (len(shape) - 1))))


class Draws:
    """Random unit directions addressed by (slot, index): the same direction for the same
    address whatever the chunking, device memory or batch order.

    Indices are grouped in blocks of ``BLOCK``; each block is drawn from a generator seeded by
    (seed, slot, block), so a chunk generates only the blocks it touches.
    """

    BLOCK = 16

    def __init__(
        self, seed: int, shape: tuple[int, ...], p: float, noise: str, device: torch.device
    ):
        self.seed, self.shape, self.p, self.noise, self.device = seed, shape, p, noise, device
        self.generator = torch.Generator(device)

    def _block(self, slot: int, block: int) -> torch.Tensor:
        # Python's hash of a tuple of ints is fixed across runs (no hash randomization)
        self.generator.manual_seed(hash((self.seed, slot, block)) & (2**63 - 1))
        shape = (self.BLOCK, *self.shape)
        return unit_directions(shape, self.p, self.noise, self.generator, self.device)

    def get(self, slot: int, start: int, stop: int) -> torch.Tensor:
        """Directions for indices ``start..stop-1`` of ``slot``."""
        first, last = start // self.BLOCK, (stop - 1) // self.BLOCK
        blocks = [self._block(slot, block) for block in range(first, last + 1)]
        offset = first * self.BLOCK
        return torch.cat(blocks)[start - offset : stop - offset]

    def at(self, slots: Sequence[int], indices: Sequence[int]) -> torch.Tensor:
        """The directions at the addresses ``(slots[j], indices[j])``, one row each."""
        blocks: dict[tuple[int, int], torch.Tensor] = {}
        rows = []
        for slot, index in zip(slots, indices, strict=True):
            key = (slot, index // self.BLOCK)
            if key not in blocks:
                blocks[key] = self._block(*key)
            rows.append(blocks[key][index % self.BLOCK])
        return torch.stack(rows)


def project(eps: torch.Tensor, p: float, radius: torch.Tensor | float) -> torch.Tensor:
    """Project each row of ``eps`` onto the ``p``-ball of ``radius`` (a scalar or one per row)."""
    r = torch.as_tensor(radius, dtype=eps.dtype, device=eps.device)
    view = (-1, *([1] * (eps.ndim - 1)))
    if r.ndim:
        r = r.view(view)
    if p == float("inf"):
        return torch.maximum(torch.minimum(eps, r), -r)
    norms = row_norms(eps, p).view(view)
    return eps * torch.clamp(r / norms.clamp_min(1e-30), max=1.0)
