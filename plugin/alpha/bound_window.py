"""Max pooling over an activation of a convolution, its Jacobian pulled back in one step.

Where a window's inputs may tie for its maximum over the region, the pool's derivative is a
convex combination of one-hot rows: the window's output follows one input at a time, never
several at once. Taken step by step, the interval Jacobian gives each possible maximum a
derivative in [0, 1] of its own, so a window of four tied inputs passes four rows at once:
on digits, whose flat backgrounds tie most windows exactly, that makes the bound four times
the Jacobian's largest norm even as r -> 0. Through the convolution that made the window's
inputs, their rows are the same filter at shifted places, and the convex hull of those rows,
enclosed elementwise, keeps what the step-by-step product loses: each element lies between
the smallest and the largest of the candidates' rows there, not in their sum. So the chain

    convolution -> per-channel scalings (batch norm) -> monotone activation -> max pool

is pulled back from the pool's output to the convolution's input at once, where nothing else
reads its intermediate nodes: for each window, the elementwise hull of its possible maxima's
rows (each the activation's derivative interval times the filter placed at its input), times
the window's adjoint, summed over windows by ``fold``. The enclosure holds by Clarke's mean
value theorem: the generalized Jacobian of a maximum is the convex hull of the gradients of
the pieces that can attain it. No library bounds Jacobians of max pooling this way (interval
and linear-relaxation tools relax the pool alone), hence this module.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F

from locrob.alpha.bound_graph import Graph, Step
from locrob.alpha.bound_rules import Elementwise, Kernel, Linear, Pool, outward
from locrob.alpha.interval import Interval, gamma

LIMIT = 2**24  # numbers of one region's hull (windows x a window's rows); beyond, step by step


@dataclass
class WindowHull:
    """The chain ending at one max pool, pulled back from its output to ``source``."""

    source: torch.fx.Node  # the convolution's input
    pre: torch.fx.Node  # the activation's input
    post: torch.fx.Node  # the activation's output, the pool's input
    activation: Elementwise
    pool: Pool
    kernel: Kernel  # the convolution with the scalings after it folded into its weight
    folds: int  # scalings folded (their products round)

    def pull(self, adjoint: Interval, values: dict[torch.fx.Node, Interval]) -> Interval:
        """The rows ``adjoint`` (B, K, *pool output) at the pool's output, as rows at the
        convolution's input (B, K, *source)."""
        h, w = adjoint.center.shape[-2:]
        pre = values[self.pre]
        low, high = outward(*self.activation.derivative(pre.lower, pre.upper))
        candidate = self.pool.candidates(values[self.post])
        hull = self._hull(*(_windows(t, h, w, self.pool.k) for t in (low, high, candidate)))
        # per window place: the adjoint's K rows (K x C) times the hulls' rows (C x E)
        rows = adjoint.exact(lambda t: t.permute(0, 3, 4, 1, 2)) @ hull.exact(
            lambda t: t.permute(0, 2, 3, 1, 4)
        )  # (B, h, w, K, E)
        return self._fold(rows, values[self.source].center.shape[1:])

    def _hull(self, low: torch.Tensor, high: torch.Tensor, candidate: torch.Tensor) -> Interval:
        """Each window's hull of its possible maxima's rows, (B, C, h, w, E): an input's row is
        its derivative in [low, high] times the filter placed at the input's offset."""
        canvas = self.canvas  # (P, C, E)
        # d * v over d in [low, high] is smallest at low * v where v >= 0, high * v where not
        # (one of the two products is zero: the sum rounds as one product)
        positive, negative = canvas.clamp_min(0), canvas.clamp_max(0)
        lo = hi = None
        for o in range(canvas.shape[0]):
            up, down = (
                part[o].view(1, -1, 1, 1, canvas.shape[-1]) for part in (positive, negative)
            )
            d_lo, d_hi, maybe = (t[..., o, None] for t in (low, high, candidate))
            small = (d_lo * up).addcmul_(d_hi, down).masked_fill_(~maybe, math.inf)
            big = (d_hi * up).addcmul_(d_lo, down).masked_fill_(~maybe, -math.inf)
            lo = small if lo is None else torch.minimum(lo, small, out=lo)
            hi = big if hi is None else torch.maximum(hi, big, out=hi)
        # the folded weight's rounding (a factor and its conversion per scaling), the products'
        g = gamma(2 * self.folds + 2, canvas.dtype)
        return Interval.between(lo - g * lo.abs(), hi + g * hi.abs())

    @functools.cached_property
    def canvas(self) -> torch.Tensor:
        """The filter of each output channel placed at each offset of a window, on the patch
        of input a window reads: (P, C, in * kh' * kw') with P = k * k offsets."""
        weight, (sy, sx) = self.kernel.weight, self.kernel.stride
        out, cin, kh, kw = weight.shape
        p = self.pool.k
        canvas = weight.new_zeros(p * p, out, cin, (p - 1) * sy + kh, (p - 1) * sx + kw)
        for oy in range(p):
            for ox in range(p):
                canvas[oy * p + ox, :, :, oy * sy : oy * sy + kh, ox * sx : ox * sx + kw] = weight
        return canvas.flatten(2)

    def _fold(self, rows: Interval, shape: torch.Size) -> Interval:
        """Each window's patch rows summed onto the convolution's input, (B, K, *shape)."""
        b, h, w, k, e = rows.center.shape
        patch, stride, blocks = self._blocks(shape)
        grid = rows.exact(
            lambda t: F.pad(t.permute(0, 3, 4, 1, 2), (0, blocks[1] - w, 0, blocks[0] - h))
        ).reshape(b * k, e, blocks[0] * blocks[1])
        overlap = math.ceil(patch[0] / stride[0]) * math.ceil(patch[1] / stride[1])

        def fold(t: torch.Tensor) -> torch.Tensor:
            return F.fold(t, tuple(shape[-2:]), patch, padding=self.kernel.padding, stride=stride)

        return grid.linear(fold, fold, overlap).reshape(b, k, *shape)

    def _blocks(
        self, shape: torch.Size
    ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """A window's patch of the convolution's input (height, width), the step between
        windows' patches, and how many patches the padded input holds (``fold`` wants them
        all; those past the pool's windows are zero)."""
        (sy, sx), (py, px), p = self.kernel.stride, self.kernel.padding, self.pool.k
        kh, kw = self.kernel.weight.shape[-2:]
        patch, stride = ((p - 1) * sy + kh, (p - 1) * sx + kw), (p * sy, p * sx)
        blocks = tuple(
            (n + 2 * pad - size) // step + 1
            for n, pad, size, step in zip(shape[-2:], (py, px), patch, stride, strict=True)
        )
        return patch, stride, blocks


def _windows(t: torch.Tensor, h: int, w: int, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w, p * p): each of the h x w windows' inputs (the rows and
    columns past the last whole window dropped, as the pool drops them)."""
    b, c = t.shape[:2]
    t = t[..., : h * p, : w * p].reshape(b, c, h, p, w, p)
    return t.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w, p * p)


def window_hulls(graph: Graph) -> dict[torch.fx.Node, WindowHull]:
    """The max pools of ``graph`` whose chain back to a convolution can be pulled back at once,
    by the pool's node."""
    made = {step.node: step for step in graph.steps}
    readers = Counter(a for step in graph.steps for a in step.inputs)
    readers[graph.output] += 1
    found = {}
    for step in graph.steps:
        hull = _chain(step, made, readers)
        if hull is not None:
            found[step.node] = hull
    return found


def _chain(pool: Step, made: dict[torch.fx.Node, Step], readers: Counter) -> WindowHull | None:
    """The hull for ``pool`` if it reads an activation of scalings of a convolution, each
    read by nothing else; else None."""
    if not isinstance(pool.rule, Pool) or pool.rule.kind != "max":
        return None
    activation = made.get(pool.inputs[0])
    if activation is None or not isinstance(activation.rule, Elementwise):
        return None
    scale, folds, node = None, 0, activation.inputs[0]
    while True:
        step = made.get(node)
        if step is None or readers[node] != 1 or not isinstance(step.rule, Linear):
            return None
        if step.rule.kernel is not None:
            break
        if step.rule.channel_scale is None:
            return None
        scale = step.rule.channel_scale if scale is None else scale * step.rule.channel_scale
        folds, node = folds + 1, step.inputs[0]
    kernel = step.rule.kernel
    weight = kernel.weight
    if scale is not None:
        weight = weight * scale.to(weight).view(-1, *[1] * (weight.dim() - 1))
    hull = WindowHull(
        step.inputs[0],
        activation.inputs[0],
        activation.node,
        activation.rule,
        pool.rule,
        Kernel(weight, kernel.stride, kernel.padding),
        folds,
    )
    windows = pool.node.meta["tensor_meta"].shape[1:]
    patch, _, blocks = hull._blocks(step.inputs[0].meta["tensor_meta"].shape)
    size = windows.numel() * weight.shape[1] * patch[0] * patch[1]
    if (
        readers[activation.node] != 1
        or size > LIMIT
        or any(n < have for n, have in zip(blocks, windows[-2:], strict=True))
    ):
        return None
    return hull
