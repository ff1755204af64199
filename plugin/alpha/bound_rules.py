"""How each supported operation acts on intervals: its outputs over a region (forward), the
Jacobian rows it passes back (backward), and its Lipschitz constant (the global bound).

Backward, an adjoint is an interval matrix of shape (B, K, *shape): K rows of the output
function's Jacobian, carried back to this node. Through a linear map ``A`` it becomes
``adjoint @ A`` (exact up to rounding); through an elementwise nonlinearity it is multiplied
by the interval of the nonlinearity's derivative over the region (ReLU: 0 or 1 where the
sign is fixed, [0, 1] where it is not). Every rule encloses the set of Jacobians of every
point of the region, so the product's norm bounds the local Lipschitz constant.

Substituted (the linear-relaxation pass, :mod:`locrob.alpha.bound_linear`), a rule takes
``lam``, interval coefficients of a linear function of its output, and returns coefficients
on its inputs and a constant with ``lam . out <= sum lam_in . in + constant`` everywhere in
the region: exact for an affine map, and for a nonlinearity by a line above it where a
coefficient is positive and one below it where it is negative (its linear relaxation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import vjp

from locrob.alpha.interval import Interval, LinearMap, gamma, unit_roundoff

INF = float("inf")


class Rule:
    """One operation of the traced model."""

    def forward(self, inputs: Sequence[Interval]) -> Interval:
        raise NotImplementedError

    def backward(self, adjoint: Interval, inputs: Sequence[Interval]) -> list[Interval]:
        raise NotImplementedError

    def lipschitz(self, p: float, inputs: Sequence[float]) -> float:
        """An upper bound on the operation's Lipschitz constant in the ``p``-norm, given
        those of its inputs (as functions of the model's input)."""
        raise NotImplementedError

    def undecided(self, x: Interval) -> torch.Tensor | None:
        """Where the derivative over ``x`` is not one number (the neurons a tighter interval
        of this input could decide); None for an operation that tightening does not serve."""
        return None

    def substitute(
        self, lam: Interval, inputs: Sequence[Interval]
    ) -> tuple[list[Interval], Interval]:
        """Coefficients on the inputs and a constant (an interval per row, (B, K)) that bound
        ``lam . output`` from above over the region (see the module's docstring)."""
        raise NotImplementedError

    def ball(self, rows: Sequence[torch.Tensor | None], diagonal: bool) -> torch.Tensor | None:
        """For an affine operation: the L2 norms of the rows of the linear map from the model's
        input to this output, given its input's (``diagonal`` when that map is diagonal,
        where the squared norms add exactly); None where unknown."""
        return None


def _transpose(apply: LinearMap, shape: torch.Size, like: torch.Tensor) -> LinearMap:
    """``v -> A^T v`` for the linear ``apply`` on inputs of ``shape`` (batch first)."""
    _, pull = vjp(apply, torch.zeros(shape, dtype=like.dtype, device=like.device))
    return lambda v: pull(v)[0]


def _rows(adjoint: Interval) -> tuple[int, int]:
    b, k = adjoint.center.shape[:2]
    return b, k


def total(t: Interval) -> Interval:
    """Each row's sum over a node's elements, (B, K, *shape) -> (B, K), rounding included."""
    n = t.center[0, 0].numel()
    return t.linear(_sum, _sum, n)


def _sum(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(2).sum(-1)


def _constant(lam: Interval, c: torch.Tensor | float | None) -> Interval:
    """``lam . c`` per row for a constant ``c`` broadcast over the node."""
    if c is None:
        return Interval.point(lam.center.new_zeros(lam.center.shape[:2]))
    full = torch.broadcast_to(torch.as_tensor(c).to(lam.center), (1, *lam.center.shape[2:]))
    return total(lam.scale(full))


def relaxed(
    lam: Interval,
    above: tuple[torch.Tensor, torch.Tensor],
    below: tuple[torch.Tensor, torch.Tensor],
    size: torch.Tensor,
) -> tuple[Interval, Interval]:
    """``lam . f(z)`` bounded from above, elementwise, by lines ``slope * z + intercept`` with
    ``below <= f <= above`` over the region (each (B, *shape)): the line above where the
    coefficient is surely positive, the one below where surely negative, and where its
    sign is unsure (rounding) the constant ``|lam| * size`` (``size >= |f|``)."""
    positive, negative = lam.lower >= 0, lam.upper <= 0

    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(positive, a.unsqueeze(1), torch.where(negative, b.unsqueeze(1), 0.0))

    slope, intercept = pick(above[0], below[0]), pick(above[1], below[1])
    unsure = ~(positive | negative)
    spill = torch.where(unsure, (lam.center.abs() + lam.radius) * size.unsqueeze(1), 0.0)
    spill = spill.flatten(2).sum(-1) * (1 + gamma(spill[0, 0].numel(), spill.dtype))
    constant = total(lam.scale(intercept)) + Interval(spill.new_zeros(spill.shape), spill)
    return lam.scale(slope), constant


@dataclass(frozen=True)
class Kernel:
    """A convolution's weight and geometry (dilation 1, one group): its rows, for a rule that
    reads them (:mod:`locrob.alpha.bound_window`)."""

    weight: torch.Tensor  # (out, in, kh, kw)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class Linear(Rule):
    """``y = A x + bias``: a convolution, a dense layer, a pooling average, a per-channel
    scaling (batch norm, normalization), a reshape."""

    apply: LinearMap
    apply_abs: LinearMap
    bias: torch.Tensor | float | None
    fan_in: int
    fan_out: int
    norm: Callable[[float], float]  # the operator norm of A in an L_p norm, bounded above
    apply_sq: LinearMap | None = None  # A with squared coefficients (exact L2 row norms)
    diagonal: bool = False  # A is diagonal up to a reshape (row norms scale exactly)
    # A^T and |A|^T where written directly (cheaper than through autograd)
    transposed: tuple[LinearMap, LinearMap] | None = None
    kernel: Kernel | None = None  # a convolution's, where its rows have a plain geometry
    channel_scale: torch.Tensor | None = None  # a scaling per channel: its factors, (C,) or ()

    def forward(self, inputs: Sequence[Interval]) -> Interval:
        (x,) = inputs
        y = x.linear(self.apply, self.apply_abs, self.fan_in)
        return y.shift(self.bias) if self.bias is not None else y

    def backward(self, adjoint: Interval, inputs: Sequence[Interval]) -> list[Interval]:
        (x,) = inputs
        b, k = _rows(adjoint)
        shape = torch.Size((b * k, *x.center.shape[1:]))
        flat = adjoint.reshape(b * k, *adjoint.center.shape[2:])
        transposed = self.transposed or (
            _transpose(self.apply, shape, x.center),
            _transpose(self.apply_abs, shape, x.center),
        )
        back = flat.linear(*transposed, self.fan_out)
        return [back.reshape(b, k, *x.center.shape[1:])]

    def lipschitz(self, p: float, inputs: Sequence[float]) -> float:
        return self.norm(p) * inputs[0]

    def substitute(
        self, lam: Interval, inputs: Sequence[Interval]
    ) -> tuple[list[Interval], Interval]:
        return self.backward(lam, inputs), _constant(lam, self.bias)

    def ball(self, rows: Sequence[torch.Tensor | None], diagonal: bool) -> torch.Tensor | None:
        (row,) = rows
        if row is None:
            return None
        grown = 1 + gamma(self.fan_in, row.dtype)  # the rounding of the sums below
        if self.diagonal or not diagonal or self.apply_sq is None:
            # |A| applied to the row norms: exact for a diagonal A, else the triangle inequality
            return self.apply_abs(row) * grown
        return self.apply_sq(row.square()).sqrt() * grown


@dataclass
class Elementwise(Rule):
    """A monotone nondecreasing elementwise function with a derivative in [low, high] over
    any interval (ReLU, leaky ReLU, sigmoid, tanh)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    slope: float  # the largest |derivative|: the Lipschitz constant
    kink: float | None = None  # max(z, kink * z) with 0 <= kink <= 1: convex, two pieces

    def forward(self, inputs: Sequence[Interval]) -> Interval:
        (x,) = inputs
        return Interval.between(*outward(self.fn(x.lower), self.fn(x.upper)))

    def undecided(self, x: Interval) -> torch.Tensor | None:
        low, high = self.derivative(x.lower, x.upper)
        return low < high

    def substitute(
        self, lam: Interval, inputs: Sequence[Interval]
    ) -> tuple[list[Interval], Interval]:
        (x,) = inputs
        lo, hi = x.lower, x.upper
        f_lo, f_hi = outward(self.fn(lo), self.fn(hi))
        size = torch.maximum(f_lo.abs(), f_hi.abs())
        above, below = self._lines(lo, hi, f_lo, f_hi)
        coefficients, constant = relaxed(lam, above, below, size)
        return [coefficients], constant

    def _lines(
        self, lo: torch.Tensor, hi: torch.Tensor, f_lo: torch.Tensor, f_hi: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Lines above and below the function over [lo, hi], as (slope, intercept)."""
        u, tiny = 16 * unit_roundoff(lo.dtype), torch.finfo(lo.dtype).tiny
        if self.kink is None:
            # the smallest derivative d: f(z) <= f(hi) - d (hi - z), f(z) >= f(lo) + d (z - lo)
            d, _ = outward(*self.derivative(lo, hi))
            d = d.clamp_min(0)
            up, down = f_hi - d * hi, f_lo - d * lo
            slack = u * (up.abs() + (d * hi).abs() + (d * lo).abs() + down.abs()) + tiny
            return (d, up + slack), (d, down - slack)
        a = self.kink
        undecided = (lo < 0) & (hi > 0)
        piece = torch.where(lo >= 0, 1.0, a).to(lo.dtype)
        # above: the chord from (lo, a lo) to (hi, hi); below: the piece with more room
        width = torch.where(undecided, hi - lo, 1.0)
        chord = torch.where(undecided, (hi - a * lo) / width, piece)
        through = torch.where(undecided, lo * (a - chord), 0.0)
        slack = u * (chord.abs() * (lo.abs() + hi.abs()) + lo.abs() + hi.abs()) + tiny
        below = torch.where(undecided, torch.where(hi > -lo, 1.0, a).to(lo.dtype), piece)
        return (chord, through + torch.where(undecided, slack, 0.0)), (below, torch.zeros_like(lo))

    def backward(self, adjoint: Interval, inputs: Sequence[Interval]) -> list[Interval]:
        (x,) = inputs
        low, high = outward(*self.derivative(x.lower, x.upper))
        return [adjoint.times(_per_row(Interval.between(low, high)))]

    def lipschitz(self, p: float, inputs: Sequence[float]) -> float:
        return self.slope * inputs[0]


def outward(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[low, high] widened by a few units of rounding: a library's exp or tanh is accurate
    to a few ulps, not exactly rounded."""
    slack = 16 * unit_roundoff(low.dtype)
    tiny = torch.finfo(low.dtype).tiny
    return low - slack * low.abs() - tiny, high + slack * high.abs() + tiny


def _per_row(d: Interval) -> Interval:
    """An interval over a node's elements, broadcast over the adjoint's K rows."""
    return d.exact(lambda t: t.unsqueeze(1))


def relu_derivative(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (lo >= 0).to(lo.dtype), (hi > 0).to(lo.dtype)


def leaky_derivative(slope: float) -> Callable:
    def derivative(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        one, leak = torch.ones_like(lo), torch.full_like(lo, slope)  # slope in lo's precision
        at_lo = torch.where(lo >= 0, one, leak)
        at_hi = torch.where(hi > 0, one, leak)
        return torch.minimum(at_lo, at_hi), torch.maximum(at_lo, at_hi)

    return derivative


def _bell(f: Callable[[torch.Tensor], torch.Tensor], peak: float) -> Callable:
    """The derivative range of a function whose derivative ``f`` is even and decreasing in
    |z| (sigmoid, tanh): smallest at the end farther from 0, ``peak`` where 0 is inside."""

    def derivative(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ends = torch.stack([f(lo), f(hi)])
        straddles = (lo <= 0) & (hi >= 0)
        return ends.amin(0), torch.where(straddles, peak, ends.amax(0))

    return derivative


def sigmoid() -> Elementwise:
    return Elementwise(torch.sigmoid, _bell(lambda t: t.sigmoid() * (-t).sigmoid(), 0.25), 0.25)


def tanh() -> Elementwise:
    # 1 / cosh^2, not 1 - tanh^2, which cancels to nothing far from 0
    return Elementwise(torch.tanh, _bell(lambda t: t.cosh().reciprocal().square(), 1.0), 1.0)


def relu() -> Elementwise:
    return Elementwise(torch.relu, relu_derivative, 1.0, kink=0.0)


def leaky_relu(slope: float) -> Elementwise:
    """A leaky ReLU with ``slope >= 0`` (a negative one is not monotone: the caller refuses it)."""
    return Elementwise(
        lambda t: F.leaky_relu(t, slope),
        leaky_derivative(slope),
        max(1.0, abs(slope)),
        kink=slope if slope <= 1 else None,
    )


@dataclass
class Pool(Rule):
    """Max pooling or L2 pooling over non-overlapping ``k`` x ``k`` windows (kernel = stride,
    no padding): each input belongs to one window, so its Jacobian is the window's adjoint
    times the input's own derivative interval."""

    k: int
    kind: str  # "max" or "l2"

    def forward(self, inputs: Sequence[Interval]) -> Interval:
        (x,) = inputs
        lo, hi = x.lower, x.upper
        if self.kind == "max":
            return Interval.between(F.max_pool2d(lo, self.k), F.max_pool2d(hi, self.k))
        nearest = torch.where((lo <= 0) & (hi >= 0), 0.0, torch.minimum(lo.abs(), hi.abs()))
        farthest = torch.maximum(lo.abs(), hi.abs())
        g = gamma(self.k * self.k + 2, lo.dtype)  # a window's sum of squares, its root
        return Interval.between(self._l2(nearest) * (1 - g), self._l2(farthest) * (1 + g))

    def _l2(self, t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t.square(), self.k).mul(self.k * self.k).sqrt()

    def backward(self, adjoint: Interval, inputs: Sequence[Interval]) -> list[Interval]:
        (x,) = inputs
        low, high = self._derivative(x)
        spread = adjoint.exact(lambda t: self._spread(t, x))
        return [spread.times(_per_row(Interval.between(low, high)))]

    def _spread(self, t: torch.Tensor, x: Interval) -> torch.Tensor:
        """Each window's value on its k x k inputs; inputs no window covers get zero."""
        out = t.repeat_interleave(self.k, dim=-2).repeat_interleave(self.k, dim=-1)
        h, w = x.center.shape[-2:]
        return F.pad(out, (0, w - out.shape[-1], 0, h - out.shape[-2]))

    def _derivative(self, x: Interval) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = x.lower, x.upper
        if self.kind == "max":
            # the only candidate of its window has derivative 1, others [0, 1]
            candidate = self.candidates(x)
            alone = self._spread(F.avg_pool2d(candidate.to(lo.dtype), self.k), x) * self.k**2
            return (candidate & (alone == 1)).to(lo.dtype), candidate.to(lo.dtype)
        # d ||window|| / d x_i = x_i / ||window||, in [-1, 1]; bounded by interval division
        window = self.forward([x])
        w_lo = self._spread(window.lower, x).clamp_min(0)
        w_hi = self._spread(window.upper, x)
        safe = w_lo > 0
        ratios = torch.stack([lo / w_lo, lo / w_hi, hi / w_lo, hi / w_hi]).nan_to_num(0.0)
        low = torch.where(safe, ratios.amin(0), torch.where(lo >= 0, 0.0, -1.0))
        high = torch.where(safe, ratios.amax(0), torch.where(hi <= 0, 0.0, 1.0))
        return low.clamp(-1, 1), high.clamp(-1, 1)

    def candidates(self, x: Interval) -> torch.Tensor:
        """Where an input may be its window's maximum somewhere in the region (max pooling):
        where its upper end reaches the window's largest lower end."""
        return x.upper >= self._spread(F.max_pool2d(x.lower, self.k), x)

    def substitute(
        self, lam: Interval, inputs: Sequence[Interval]
    ) -> tuple[list[Interval], Interval]:
        (x,) = inputs
        window = self.forward([x])
        size = torch.maximum(window.lower.abs(), window.upper.abs())
        zero = torch.zeros_like(window.center)
        if self.kind == "l2":  # constants: the window's norm between its interval's ends
            _, constant = relaxed(lam, (zero, window.upper), (zero, window.lower), size)
            nothing = lam.center.new_zeros(lam.center.shape[:2] + x.center.shape[1:])
            return [Interval.point(nothing)], constant
        # above: the window's only possible maximum where it has one, else its largest upper
        # end; below: the input with the largest lower end (the maximum is at least that)
        only, _ = self._derivative(x)
        alone = F.max_pool2d(only, self.k)
        coefficients, constant = relaxed(
            lam, (alone, window.upper * (1 - alone)), (torch.ones_like(alone), zero), size
        )
        positive = (lam.lower >= 0).to(lam.center)
        routes = ((positive, only), (1 - positive, self._first_largest(x.lower)))
        above, below = (
            coefficients.exact(lambda t, s=sign, m=mask: self._spread(t * s, x) * m.unsqueeze(1))
            for sign, mask in routes
        )
        return [above + below], constant

    def _first_largest(self, lo: torch.Tensor) -> torch.Tensor:
        """1 at one input per window with the window's largest lower end, 0 elsewhere."""
        _, where = F.max_pool2d(lo, self.k, return_indices=True)
        mask = torch.zeros_like(lo).flatten(2)
        mask.scatter_(2, where.flatten(2), 1.0)
        return mask.view_as(lo)

    def lipschitz(self, p: float, inputs: Sequence[float]) -> float:
        # a window's max is 1-Lipschitz in both norms; its L2 norm in L2, and k in Linf
        return (self.k if self.kind == "l2" and p == INF else 1.0) * inputs[0]


@dataclass
class TwoSided(Rule):
    """``concat(relu(x), relu(-x))`` along the channels."""

    def forward(self, inputs: Sequence[Interval]) -> Interval:
        (x,) = inputs
        lo, hi = x.lower, x.upper
        return Interval.between(
            torch.cat([lo.relu(), (-hi).relu()], dim=1), torch.cat([hi.relu(), (-lo).relu()], dim=1)
        )

    def backward(self, adjoint: Interval, inputs: Sequence[Interval]) -> list[Interval]:
        (x,) = inputs
        c = x.center.shape[1]
        lo, hi = x.lower, x.upper
        first, second = adjoint[:, :, :c], adjoint[:, :, c:]
        up = first.times(_per_row(Interval.between(*relu_derivative(lo, hi))))
        down = second.times(_per_row(Interval.between(*relu_derivative(-hi, -lo))))
        return [up - down]

    def undecided(self, x: Interval) -> torch.Tensor | None:
        return relu().undecided(x)

    def substitute(
        self, lam: Interval, inputs: Sequence[Interval]
    ) -> tuple[list[Interval], Interval]:
        (x,) = inputs
        c = x.center.shape[1]
        ([up], up_constant) = relu().substitute(lam[:, :, :c], [x])
        # relu(-x), a function of -x
        ([down], down_constant) = relu().substitute(lam[:, :, c:], [-x])
        return [up - down], up_constant + down_constant

    def lipschitz(self, p: float, inputs: Sequence[float]) -> float:
        return inputs[0]  # |relu(a) - relu(b)|^2 + |relu(-a) - relu(-b)|^2 <= |a - b|^2


@dataclass
class Merge(Rule):
    """``sum_i weights[i] * inputs[i]``: a residual addition (weights 1, 1) or a convex merge."""

    weights: Sequence[float]

    def forward(self, inputs: Sequence[Interval]) -> Interval:
        total = inputs[0].scale(self.weights[0])
        for w, x in zip(self.weights[1:], inputs[1:], strict=True):
            total = total + x.scale(w)
        return total

    def backward(self, adjoint: Interval, inputs: Sequence[Interval]) -> list[Interval]:
        return [adjoint.scale(w) for w in self.weights]

    def substitute(
        self, lam: Interval, inputs: Sequence[Interval]
    ) -> tuple[list[Interval], Interval]:
        return self.backward(lam, inputs), _constant(lam, None)

    def lipschitz(self, p: float, inputs: Sequence[float]) -> float:
        return sum(abs(w) * lip for w, lip in zip(self.weights, inputs, strict=True))

    def ball(self, rows: Sequence[torch.Tensor | None], diagonal: bool) -> torch.Tensor | None:
        if any(row is None for row in rows):
            return None
        total = sum(abs(w) * row for w, row in zip(self.weights, rows, strict=True))
        return total * (1 + gamma(2 * len(rows), total.dtype))
