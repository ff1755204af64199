"""Midpoint-radius interval arithmetic with rounding accounted for: the enclosures the
certified upper bound on alpha_lim is made of.

An :class:`Interval` holds every tensor ``t`` with ``|t - center| <= radius`` elementwise.
Each operation returns an interval that encloses the exact result of the operation on every
member, including the floating-point error of computing it: a dot product of ``n`` terms is
off by at most ``gamma(n) * sum |a_i b_i|`` (the standard model of floating-point
arithmetic, Higham, *Accuracy and Stability of Numerical Algorithms*, Sec. 3.1), and the
radius grows by that much. No library does this for torch tensors (the interval packages
for Python are scalar or numpy-only and know nothing of convolutions), hence this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

LinearMap = Callable[[torch.Tensor], torch.Tensor]


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the machine epsilon: the largest relative error of one rounded operation."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """The error factor of ``n`` rounded operations in sequence, doubled for safety (sums may
    be reordered, and the radius's own arithmetic rounds too)."""
    nu = 2 * (n + 2) * unit_roundoff(dtype)
    return nu / (1 - nu)


@dataclass
class Interval:
    """The tensors within ``radius`` of ``center``, elementwise (``radius >= 0``)."""

    center: torch.Tensor
    radius: torch.Tensor

    @classmethod
    def point(cls, t: torch.Tensor) -> Interval:
        return cls(t, torch.zeros_like(t))

    @classmethod
    def between(cls, lower: torch.Tensor, upper: torch.Tensor) -> Interval:
        """The interval [lower, upper], its midpoint and radius rounded outward."""
        center = (lower + upper) / 2
        radius = (upper - lower) / 2
        return cls(center, widen(radius, center, 4))

    @property
    def lower(self) -> torch.Tensor:
        return self.center - self.radius * (1 + 4 * unit_roundoff(self.center.dtype))

    @property
    def upper(self) -> torch.Tensor:
        return self.center + self.radius * (1 + 4 * unit_roundoff(self.center.dtype))

    def linear(self, apply: LinearMap, apply_abs: LinearMap, fan_in: int) -> Interval:
        """The image under a linear map ``A`` (``apply``) with ``|A|`` (``apply_abs``, the map
        with every coefficient's absolute value) and at most ``fan_in`` terms per output."""
        g = gamma(fan_in, self.center.dtype)
        center = apply(self.center)
        radius = apply_abs(self.radius + g * self.center.abs()) * (1 + g)
        return Interval(center, radius)

    def shift(self, bias: torch.Tensor) -> Interval:
        """``self + bias`` for an exact tensor ``bias`` (broadcast)."""
        center = self.center + bias
        return Interval(center, widen(self.radius, center, 1))

    def __add__(self, other: Interval) -> Interval:
        center = self.center + other.center
        return Interval(center, widen(self.radius + other.radius, center, 2))

    def __neg__(self) -> Interval:
        return Interval(-self.center, self.radius)

    def __sub__(self, other: Interval) -> Interval:
        return self + (-other)

    def scale(self, factor: float | torch.Tensor) -> Interval:
        """``self * factor`` for an exact factor (a number or a broadcast tensor)."""
        center = self.center * factor
        size = abs(factor) if isinstance(factor, float) else factor.abs()
        radius = self.radius * size
        return Interval(center, widen(radius, center, 1))

    def times(self, other: Interval) -> Interval:
        """The elementwise product (broadcast), by Rump's midpoint-radius formula: exact when
        both radii are zero."""
        center = self.center * other.center
        radius = (
            self.center.abs() * other.radius
            + self.radius * other.center.abs()
            + self.radius * other.radius
        )
        return Interval(center, widen(radius, center, 4))

    def __matmul__(self, other: Interval) -> Interval:
        """The product of (batches of) interval matrices, midpoint-radius (Rump): exact when
        both radii are zero."""
        a, b = self, other
        center = a.center @ b.center
        radius = a.center.abs() @ b.radius + a.radius @ (b.center.abs() + b.radius)
        g = gamma(a.center.shape[-1] + 2, center.dtype)
        return Interval(center, radius * (1 + g) + g * (a.center.abs() @ b.center.abs()))

    def intersect(self, lower: torch.Tensor, upper: torch.Tensor) -> Interval:
        """The part of ``self`` within [lower, upper] (both valid enclosures of one set)."""
        return Interval.between(torch.maximum(self.lower, lower), torch.minimum(self.upper, upper))

    def reshape(self, *shape: int) -> Interval:
        return self.exact(lambda t: t.reshape(*shape))

    def exact(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Interval:
        """``fn`` applied to centre and radius alike: for maps that need no rounding and keep
        radii nonnegative (reshapes, indexing, repeats, zero padding, 0/1 masks)."""
        return Interval(fn(self.center), fn(self.radius))

    def __getitem__(self, index: object) -> Interval:
        return self.exact(lambda t: t[index])


def widen(radius: torch.Tensor, center: torch.Tensor, ops: int) -> torch.Tensor:
    """``radius`` grown by the rounding of ``ops`` elementwise operations that made ``center``
    and ``radius``."""
    g = gamma(ops, center.dtype)
    return radius * (1 + g) + g * center.abs()


def reach(rows: Interval, r: torch.Tensor, p: float) -> torch.Tensor:
    """The most each row of ``rows`` (B, K, n) can move a dot product with a step of
    ``||e||_p <= r`` (one r per batch entry): r times the row's dual norm (Hoelder), bounded by
    ``||centre|| + ||radius||``, rounding included; (B, K)."""
    dual = 2.0 if p == 2 else 1.0
    norms = torch.linalg.vector_norm(rows.center, ord=dual, dim=2) + torch.linalg.vector_norm(
        rows.radius, ord=dual, dim=2
    )
    return norms * r.view(-1, 1) * (1 + gamma(rows.center.shape[2], r.dtype))


SVD_LIMIT = 256  # above this many rows and columns, the spectral norm is bounded, not computed


def matrix_norm_bound(m: Interval, p_in: float, p_out: float) -> torch.Tensor:
    """An upper bound on the ``p_in -> p_out`` operator norm of every matrix in ``m``, a batch of
    interval matrices (B, rows, columns): ``||center|| + || radius ||``, which holds since
    ``||A|| <= ||center|| + || |A - center| || <= ||center|| + ||radius||`` for these norms
    (each is monotone on nonnegative matrices), and is exact when the radius is zero for
    L2 -> L2 (the spectral norm; for matrices with more than ``SVD_LIMIT`` rows and columns,
    Hoelder's bound), Linf -> Linf (the largest row sum) and L2 -> Linf (the largest row norm);
    for Linf -> L2 the norm of the row sums is an upper bound."""
    return _operator_norm(m.center, p_in, p_out) + _operator_norm(m.radius, p_in, p_out)


def _operator_norm(a: torch.Tensor, p_in: float, p_out: float) -> torch.Tensor:
    inf = float("inf")
    columns = a.shape[-1]
    g = gamma(columns, a.dtype)
    if p_in == 2 and p_out == 2:
        if min(a.shape[-2:]) > SVD_LIMIT:
            # sqrt(||A||_1 ||A||_inf) >= ||A||_2 (Hoelder), exact for a diagonal, a pooling's
            # disjoint rows, a permutation; an SVD of a wide square matrix costs seconds
            rows = a.abs().sum(dim=-1).amax(dim=-1)
            cols = a.abs().sum(dim=-2).amax(dim=-1)
            return (rows * cols).sqrt() * (1 + gamma(max(a.shape[-2:]), a.dtype))
        # the SVD's error is a small multiple of u * ||A|| (backward stable): a wide margin
        return torch.linalg.matrix_norm(a, ord=2) * (1 + 64 * columns * unit_roundoff(a.dtype))
    if p_in == inf and p_out == inf:
        return a.abs().sum(dim=-1).amax(dim=-1) * (1 + g)
    if p_in == 2 and p_out == inf:
        return torch.linalg.vector_norm(a, dim=-1).amax(dim=-1) * (1 + g)
    return torch.linalg.vector_norm(a.abs().sum(dim=-1), dim=-1) * (1 + g)  # Linf -> L2
