"""Norms, random directions and projections on batches of flattened perturbations."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

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
    """Random unit directions addressed by (index, column): the same direction for the same
    address whatever the chunking, memory budget, batch order or thread count.

    Each index holds ``width`` directions (one per radius when every radius draws its own,
    one shared by all radii otherwise). Consecutive indices are grouped in units of about 16
    directions on a CPU and 256 on a GPU (fewer kernel launches); a unit is drawn at once from a
    generator seeded by (seed, stream, unit), written straight into the chunk's buffer when
    the chunk covers it, so results are reproducible per device type. On a CPU the units of a
    chunk are drawn in parallel threads: random generation, not the model, bounds the cost of
    small models, and torch draws on one core per generator.
    """

    def __init__(
        self,
        seed: int,
        shape: tuple[int, ...],
        p: float,
        noise: str,
        device: torch.device,
        width: int = 1,
        stream: int = 0,
    ) -> None:
        self.seed, self.shape, self.p, self.noise, self.device = seed, shape, p, noise, device
        self.width, self.stream = width, stream
        self.unit = self.unit_size(device, width)
        self.generator = torch.Generator(device)
        # the last unit drawn on its own: consecutive chunks smaller than a unit share it
        self._last: tuple[int, torch.Tensor] | None = None

    @staticmethod
    def unit_size(device: torch.device, width: int) -> int:
        """Indices drawn at once: about 16 directions on a CPU and 256 on a GPU."""
        return max(1, (256 if device.type == "cuda" else 16) // width)

    def sibling(self, stream: int, width: int = 1) -> Draws:
        """Another stream of the same seed, shape and noise (unrelated directions)."""
        return type(self)(self.seed, self.shape, self.p, self.noise, self.device, width, stream)

    def _fill(self, out: torch.Tensor, unit: int, generator: torch.Generator) -> None:
        """Draw unit ``unit`` into ``out`` (unit, width, *shape) as unit directions (normalized
        at once, while the draws are still in this core's cache)."""
        generator.manual_seed(mix_seed(self.seed, self.stream, unit))
        if self.noise == "gaussian":
            out.normal_(generator=generator)
        else:
            out.uniform_(-1.0, 1.0, generator=generator)
        normalize(out.view(-1, *self.shape), self.p)

    def _fill_all(self, jobs: list[tuple[torch.Tensor, int]]) -> None:
        if len(jobs) > 1 and self.device.type == "cpu" and torch.get_num_threads() > 1:
            list(_pool().map(lambda job: self._fill(*job, _thread_generator()), jobs))
        else:
            for out, unit in jobs:
                self._fill(out, unit, self.generator)

    def _unit(self, unit: int) -> torch.Tensor:
        if self._last is None or self._last[0] != unit:
            out = torch.empty(self.unit, self.width, *self.shape, device=self.device)
            self._fill(out, unit, self.generator)
            self._last = (unit, out)
        return self._last[1]

    def get(self, start: int, stop: int) -> torch.Tensor:
        """Directions of indices ``start..stop-1``: shape (stop - start, width, *shape)."""
        size, first, last = self.unit, start // self.unit, (stop - 1) // self.unit
        if first == last:  # a view of one unit, no copy
            return self._unit(first)[start - first * size : stop - first * size]
        out = torch.empty(stop - start, self.width, *self.shape, device=self.device)
        whole = []
        for u in range(first, last + 1):
            lo, hi = max(start, u * size), min(stop, (u + 1) * size)
            if hi - lo == size:  # a whole unit: drawn in place
                whole.append((out[lo - start : hi - start], u))
            else:
                out[lo - start : hi - start] = self._unit(u)[lo - u * size : hi - u * size]
        self._fill_all(whole)
        return out

    def at(self, indices: Sequence[int], columns: Sequence[int]) -> torch.Tensor:
        """The directions at the addresses ``(indices[j], columns[j])``, one row each."""
        rows = [
            self._unit(index // self.unit)[index % self.unit, column]
            for index, column in zip(indices, columns, strict=True)
        ]
        return torch.stack(rows)


_threads = threading.local()
_pools: dict[int, ThreadPoolExecutor] = {}


def _thread_generator() -> torch.Generator:
    """A CPU generator per worker thread (each unit reseeds it)."""
    if not hasattr(_threads, "generator"):
        _threads.generator = torch.Generator()
    return _threads.generator


def _pool() -> ThreadPoolExecutor:
    """Worker threads for drawing on a CPU, one per torch thread, made once per count."""
    workers = torch.get_num_threads()
    if workers not in _pools:
        _pools[workers] = ThreadPoolExecutor(workers, "locrob-draws")
    return _pools[workers]


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
