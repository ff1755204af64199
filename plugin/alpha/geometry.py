"""Norms, random directions and projections on batches of flattened perturbations."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from locrob.errors import LocrobError
from locrob.runtime import mix_seed

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


def row_norms(t: torch.Tensor, p: float, lead: int = 1) -> torch.Tensor:
    """The ``p``-norm over all but the first ``lead`` axes of ``t``."""
    flat = t.reshape(*t.shape[:lead], -1)
    return flat.abs().amax(dim=-1) if p == float("inf") else torch.linalg.vector_norm(flat, dim=-1)


def normalize(d: torch.Tensor, p: float) -> torch.Tensor:
    """Scale each row of ``d`` to ``p``-norm 1, in place."""
    scale = row_norms(d, p).clamp_min_(1e-30)
    return d.div_(scale.view(-1, *([1] * (d.ndim - 1))))


class Draws:
    """Random unit directions addressed by (slot, index): the same direction for the same
    address whatever the chunking, memory budget or batch order.

    Indices are grouped in blocks; each block is drawn from a generator seeded by
    (seed, slot, block), so a chunk generates only the blocks it touches. Blocks are 16 draws
    on a CPU (chunks there are small) and 256 on a GPU (fewer kernel launches), so results are
    reproducible per device type.
    """

    def __init__(
        self, seed: int, shape: tuple[int, ...], p: float, noise: str, device: torch.device
    ) -> None:
        self.seed, self.shape, self.p, self.noise, self.device = seed, shape, p, noise, device
        self.block = 256 if device.type == "cuda" else 16
        self.generator = torch.Generator(device)
        # the blocks of the previous call, per slot: consecutive chunks often share a block
        self._recent: dict[int, dict[int, torch.Tensor]] = {}

    def _fill(self, out: torch.Tensor, slot: int, block: int) -> None:
        self.generator.manual_seed(mix_seed(self.seed, slot, block))
        if self.noise == "gaussian":
            out.normal_(generator=self.generator)
        else:
            out.uniform_(-1.0, 1.0, generator=self.generator)

    def _blocks(self, slot: int, blocks: Sequence[int], keep: bool) -> dict[int, torch.Tensor]:
        """The normalized blocks of ``slot``, generating only those not kept from last time."""
        recent = self._recent.get(slot, {})
        missing = [b for b in blocks if b not in recent]
        found = {b: recent[b] for b in blocks if b in recent}
        if missing:
            size = self.block
            raw = torch.empty(len(missing) * size, *self.shape, device=self.device)
            for j, b in enumerate(missing):
                self._fill(raw[j * size : (j + 1) * size], slot, b)
            normalize(raw, self.p)
            found.update({b: raw[j * size : (j + 1) * size] for j, b in enumerate(missing)})
        if keep:
            self._recent[slot] = found
        return found

    def get(self, slot: int, start: int, stop: int) -> torch.Tensor:
        """Directions for indices ``start..stop-1`` of ``slot``."""
        first, last = start // self.block, (stop - 1) // self.block
        found = self._blocks(slot, range(first, last + 1), keep=True)
        rows = torch.cat([found[b] for b in range(first, last + 1)])
        offset = first * self.block
        return rows[start - offset : stop - offset]

    def at(self, slots: Sequence[int], indices: Sequence[int]) -> torch.Tensor:
        """The directions at the addresses ``(slots[j], indices[j])``, one row each."""
        rows = []
        for slot, index in zip(slots, indices, strict=True):
            block = self._blocks(slot, [index // self.block], keep=False)[index // self.block]
            rows.append(block[index % self.block])
        return torch.stack(rows)


def to_sphere(eps: torch.Tensor, p: float, radius: float) -> torch.Tensor:
    """Rescale each row of ``eps`` to ``p``-norm exactly ``radius``."""
    scale = radius / row_norms(eps, p).clamp_min(1e-30)
    return eps * scale.view(-1, *([1] * (eps.ndim - 1)))


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
