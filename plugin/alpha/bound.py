"""A certified upper bound on alpha_lim(F, r): the local Lipschitz constant over each region.

For a point x and a radius r the region is the ball ||e|| <= r around x, inside the clamp
box. Every ratio ||F(x+e) - F(x)|| / ||e|| with x+e in the region is at most the largest
operator norm of F's Jacobian over the region (the mean value inequality along the segment,
which stays in the convex region; dividing by the nominal r instead of the effective ||e||
only lowers the ratio). That norm is bounded in three passes:

1. the region as a box (the ball's bounding box, clipped to the clamp box) carried forward
   through the network by interval arithmetic, every pre-activation getting an interval; in
   L2, the first affine layers also get the exact ball's interval (the point's value plus
   r times each row's norm), and the tighter of the two is kept; past them, where a
   nonlinearity is undecided, the interval is tightened by linear relaxation
   (:mod:`locrob.alpha.bound_linear`) when that is affordable and can pay;
2. the Jacobian carried backward from the output as an interval matrix: the output
   function's Jacobian over the logits' intervals (softmax: from the intervals of the
   probabilities), times each layer's exact linear map, times each nonlinearity's interval
   of derivatives;
3. the norm of that interval matrix, ||centre|| + ||radius|| (exact for a point interval).

Every step rounds outward (:mod:`locrob.alpha.interval`) and runs in float64 by default. The
global bound, the product of the layers' operator norms (sums where branches merge), is
computed alongside; each value reported is the smaller of the two, both being upper bounds.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from locrob.alpha.bound_graph import Graph, input_lipschitz, trace
from locrob.alpha.bound_linear import SUMMARY, Relaxed, relax
from locrob.alpha.bound_rules import Linear, Merge
from locrob.alpha.bound_window import WindowHull, window_hulls
from locrob.alpha.interval import Interval, gamma, matrix_norm_bound, reach, unit_roundoff
from locrob.alpha.settings import AlphaSettings
from locrob.errors import LocrobError
from locrob.runtime import progress

INF = float("inf")
PAYS = 10.0  # the linear pass runs where the interval pass's bound is within this x the global


@dataclass
class UpperBounds:
    """Per radius and point, the certified upper bound (the smaller of the local and the
    global one); the global bound alone; and how the bounds were made."""

    per_point: torch.Tensor  # (R, N)
    local: torch.Tensor  # (R, N), before the minimum with the global bound
    global_bound: float
    dtype: torch.dtype
    kind: str  # "local", or why the global bound stands alone
    pre_activations: str = SUMMARY  # how the intervals before each nonlinearity were made


def upper_bounds(
    model: nn.Module,
    points: torch.Tensor,
    settings: AlphaSettings,
    dtype: torch.dtype = torch.float64,
    batch: int = 8,
    memory_bytes: int = 2**31,
    skip_past_global: bool = True,
    linear: bool = True,
) -> UpperBounds:
    """Certified upper bounds on every ratio around each of ``points`` at each of the
    settings' radii, computed in ``dtype``, up to ``batch`` regions at a time within
    ``memory_bytes``; where one region's Jacobian interval would not fit, the global bound.
    With ``skip_past_global``, a point whose local bound reached the global one at a radius
    is not bounded locally at larger radii (``local`` is inf there). With ``linear``, the
    pre-activation intervals are tightened by linear relaxation where that is affordable and
    the interval pass's bound is within ``PAYS`` times the global one."""
    if callable(settings.output):
        raise LocrobError("the bound takes output='softmax' or 'logits', not a function")
    x, graph, outputs = _traced(model, points, dtype)
    global_bound = _global(graph, settings, outputs)
    local = torch.full((len(settings.radii), len(x)), math.inf, dtype=dtype)
    # the Jacobian interval of a region holds outputs x (the widest node's) numbers, in
    # about eight tensors of its size at once
    per_region = 8 * outputs * graph.widest * torch.finfo(dtype).bits // 8
    alone = _global_alone(graph, outputs, per_region, memory_bytes)
    if alone is not None:
        return UpperBounds(local.clamp_max(global_bound), local, global_bound, dtype, alone)
    batch = max(1, min(batch, memory_bytes // per_region))
    record = Relaxed() if linear else None
    _fill_local(local, graph, x, settings, global_bound, batch, skip_past_global, record)
    said = SUMMARY if record is None else record.describe()
    return UpperBounds(local.clamp_max(global_bound), local, global_bound, dtype, "local", said)


def _traced(
    model: nn.Module, points: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, Graph, int]:
    """The points in ``dtype``, the graph of a copy of the model in it, and its output count."""
    x = points.to(dtype)
    model = copy.deepcopy(model).to(x.device, dtype).eval()  # the caller's stays as it is
    with torch.no_grad():
        graph = trace(model, x[:1])
        outputs = model(x[:1])[0].numel()
    return x, graph, outputs


def _global_alone(graph: Graph, outputs: int, per_region: int, memory_bytes: int) -> str | None:
    """Why the global bound stands alone (an affine model, or a region's Jacobian interval
    over the memory budget), or None where the regions are bounded locally."""
    if all(isinstance(step.rule, (Linear, Merge)) for step in graph.steps):
        # an affine map's Jacobian is the same everywhere: its operator norm, bounded layer by
        # layer (exact for one dense layer or a scaling)
        return "affine: its operator norm (the Jacobian is the same everywhere)"
    if per_region > memory_bytes:
        return (
            f"global only: a region's Jacobian interval needs {per_region / 2**30:.1f} GiB "
            f"({outputs} outputs x {graph.widest} of the widest layer), over the budget"
        )
    return None


def _fill_local(
    local: torch.Tensor,
    graph: Graph,
    x: torch.Tensor,
    settings: AlphaSettings,
    global_bound: float,
    batch: int,
    skip_past_global: bool,
    record: Relaxed | None,
) -> None:
    """Fill ``local`` (radii x points) with the regions' local bounds, radius by radius from
    the smallest, ``batch`` regions at a time."""
    radii = torch.tensor(settings.radii, dtype=x.dtype, device=x.device)
    at = _at_points(graph, x, settings, batch) if settings.output == "softmax" else None
    bar = progress(total=len(radii) * len(x), desc="alpha_lim bound", unit="region")
    hulls = window_hulls(graph)  # found once: each builds its canvas once
    open_points = torch.arange(len(x), device=x.device)
    for k in sorted(range(len(radii)), key=lambda k: float(radii[k])):
        for lo in range(0, len(open_points), batch):
            idx = open_points[lo : lo + batch]
            with torch.no_grad():
                here = None if at is None else at[idx]
                r = radii[k].expand(len(idx))
                found = _tightened(graph, hulls, x[idx], r, settings, here, global_bound, record)
                local[k, idx.cpu()] = found.cpu()
        bar.update(len(x))
        if skip_past_global:
            # a larger region's intervals hold a smaller one's, so its local bound is (all but
            # always) larger: once a point's reaches the global bound, its larger radii take
            # the global one, which holds everywhere, without the work
            open_points = open_points[(local[k, open_points.cpu()] < global_bound).to(x.device)]
    bar.close()


def _tightened(
    graph: Graph,
    hulls: dict[torch.fx.Node, WindowHull],
    x: torch.Tensor,
    r: torch.Tensor,
    settings: AlphaSettings,
    at: Interval | None,
    global_bound: float,
    record: Relaxed | None,
) -> torch.Tensor:
    """The interval pass's local bound of each region of the batch, tightened by the linear
    pass (with ``record``) where it is within ``PAYS`` times the global bound."""
    found = _local(graph, hulls, x, r, settings, at, PAYS * global_bound)
    if record is None:
        return found
    # the linear pass costs far more than the interval one: it is run where it can make the
    # local bound useful, not beyond
    near = found < PAYS * global_bound
    record.far += int((~near).sum())
    if near.any():
        here = None if at is None else at[near]
        tight = _local(graph, hulls, x[near], r[near], settings, here, PAYS * global_bound, record)
        found[near] = torch.minimum(found[near], tight)
    return found


def _global(graph: Graph, settings: AlphaSettings, outputs: int) -> float:
    """The product bound: the network's Lipschitz constant in the input norm, times the
    output function's (softmax: 1/2 in L2 and in Linf), times the change of norm."""
    p, q = settings.p_in, settings.p_out
    lip = input_lipschitz(graph, p) * (0.5 if settings.output == "softmax" else 1.0)
    # ||v||_q <= ||v||_p for q = Linf; ||v||_2 <= sqrt(n) ||v||_inf
    change = math.sqrt(outputs) if (p, q) == (INF, 2.0) else 1.0
    return lip * change * (1 + 1e-12)  # each factor carries its own margin already


def _region(x: torch.Tensor, r: torch.Tensor, settings: AlphaSettings) -> Interval:
    """The box around each point that holds its ball of radius r, inside the clamp box."""
    r = r.view(-1, *[1] * (x.ndim - 1))
    lo, hi = x - r, x + r
    if settings.clamp is not None:
        lo, hi = lo.clamp(*settings.clamp), hi.clamp(*settings.clamp)
    return Interval.between(torch.minimum(lo, x), torch.maximum(hi, x))


def _at_points(graph: Graph, x: torch.Tensor, settings: AlphaSettings, batch: int) -> Interval:
    """An enclosure of the logits at each point (its rounding included), once per point."""
    parts = []
    for lo in range(0, len(x), batch):
        chunk = x[lo : lo + batch]
        parts.append(_forward(graph, chunk, chunk.new_zeros(len(chunk)), settings)[graph.output])
    return Interval(torch.cat([p.center for p in parts]), torch.cat([p.radius for p in parts]))


def _local(
    graph: Graph,
    hulls: dict[torch.fx.Node, WindowHull],
    x: torch.Tensor,
    r: torch.Tensor,
    settings: AlphaSettings,
    at: Interval | None,
    useful: float,
    record: Relaxed | None = None,
) -> torch.Tensor:
    """The local bound of each (point, radius) region of the batch (``hulls``: the graph's
    :func:`~locrob.alpha.bound_window.window_hulls`; ``at``: the logits at the points, for
    the softmax; ``useful``: where a second softmax pass may pay)."""
    values = _forward(graph, x, r, settings, record)
    return jacobian_bound(graph, hulls, values, r, settings, at, useful)


def jacobian_bound(
    graph: Graph,
    hulls: dict[torch.fx.Node, WindowHull],
    values: dict[torch.fx.Node, Interval],
    r: torch.Tensor,
    settings: AlphaSettings,
    at: Interval | None,
    useful: float = math.inf,
) -> torch.Tensor:
    """The bound from every node's interval over the regions (``values``; ``hulls``: the
    graph's max pools pulled back at once): the logits' Jacobian over them, times the output
    function's Jacobian over the logits' range, in the settings' operator norm; (B,). The
    softmax's second pass runs where a region's first bound is under ``useful``."""
    logits = values[graph.output]
    b, shape = logits.center.shape[0], logits.center.shape[1:]
    if settings.output == "softmax" and len(shape) != 1:
        raise LocrobError(f"output='softmax' needs outputs of shape (n, classes), not {shape}")
    k = shape.numel()
    eye = torch.eye(k).to(logits.center).expand(b, k, k).reshape(b, k, *shape)
    jacobian = _backward(graph, values, Interval.point(eye.clone()), hulls).exact(_rows)
    if settings.output != "softmax":
        return matrix_norm_bound(jacobian, settings.p_in, settings.p_out)
    softmax = _softmax_jacobian(_logit_range(at, r, jacobian, logits, settings))
    found = matrix_norm_bound(softmax @ jacobian, settings.p_in, settings.p_out)
    if not (found < useful).any():
        return found
    # the softmax's Jacobian as the seed meets the layers' exact maps before any interval
    # widens it, which keeps more of their cancellations (as a rule: both products hold)
    seeded = _backward(graph, values, softmax.reshape(b, k, *shape), hulls).exact(_rows)
    return torch.minimum(found, matrix_norm_bound(seeded, settings.p_in, settings.p_out))


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(B, K, *input shape) -> (B, K, n): Jacobian rows as matrix rows."""
    return t.flatten(2)


def _logit_range(
    at: Interval, r: torch.Tensor, jacobian: Interval, logits: Interval, settings: AlphaSettings
) -> Interval:
    """The logits over the region, tightened by the mean value theorem: logit k moves by at
    most r times its Jacobian row's dual norm, from its value at the point (``at``)."""
    moved = reach(jacobian, r, settings.p_in)
    return logits.intersect(at.lower - moved, at.upper + moved)


def _forward(
    graph: Graph,
    x: torch.Tensor,
    r: torch.Tensor,
    settings: AlphaSettings,
    record: Relaxed | None = None,
) -> dict[torch.fx.Node, Interval]:
    """Every node's interval over the regions. In L2, along the affine layers from the
    input, each node's rows' norms (``rows``) and value at the point (``at``) too; past
    them, with a ``record``, tightened by linear relaxation (:mod:`locrob.alpha.bound_linear`)."""
    values = {graph.placeholder: _region(x, r, settings)}
    l2 = settings.p_in == 2
    rows = {graph.placeholder: torch.ones_like(x[:1])} if l2 else {}
    at = {graph.placeholder: Interval.point(x)}
    diagonal = {graph.placeholder: True}
    for step in graph.steps:
        out = step.rule.forward(step.read(values))
        affine = isinstance(step.rule, (Linear, Merge))
        if l2 and affine and all(a in rows for a in step.inputs):
            row = step.rule.ball(
                [rows[a] for a in step.inputs], all(diagonal[a] for a in step.inputs)
            )
            if row is not None:
                point = step.rule.forward([at[a] for a in step.inputs])
                reach = row * r.view(-1, *[1] * (row.ndim - 1)) * (1 + gamma(4, x.dtype))
                out = out.intersect(point.lower - reach, point.upper + reach)
                rows[step.node], at[step.node] = row, point
                diagonal[step.node] = (
                    isinstance(step.rule, Linear)
                    and step.rule.diagonal
                    and all(diagonal[a] for a in step.inputs)
                )
        values[step.node] = out
        if record is not None and step.node not in rows:  # the ball's are exact already
            values[step.node] = relax(graph, values, step.node, x, r, settings, record)
    return values


def _softmax_jacobian(logits: Interval) -> Interval:
    """The softmax's Jacobian over the logits' box, (B, K, K)."""
    k = logits.center.shape[1]
    p_lo, p_hi = _probabilities(logits.lower, logits.upper)
    # d p_i / d z_i = p_i (1 - p_i): concave, largest at 1/2; d p_i / d z_j = -p_i p_j
    ends = torch.stack([p_lo * (1 - p_lo), p_hi * (1 - p_hi)])
    straddles = (p_lo <= 0.5) & (p_hi >= 0.5)
    diag_lo = ends.amin(0)
    diag_hi = torch.where(straddles, 0.25, ends.amax(0))
    lower = -(p_hi.unsqueeze(2) * p_hi.unsqueeze(1))
    upper = -(p_lo.unsqueeze(2) * p_lo.unsqueeze(1))
    eye = torch.eye(k, dtype=torch.bool, device=lower.device)
    lower = torch.where(eye, torch.diag_embed(diag_lo), lower)
    upper = torch.where(eye, torch.diag_embed(diag_hi), upper)
    u = unit_roundoff(lower.dtype)
    return Interval.between(lower - 8 * u, upper + 8 * u)


def _probabilities(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each softmax probability's range over the logits' box: smallest with its own logit
    low and the others high, largest the other way round; rounded outward."""
    k = lo.shape[1]
    eye = torch.eye(k, dtype=torch.bool, device=lo.device)
    low_own = torch.where(eye, lo.unsqueeze(1), hi.unsqueeze(1))  # row i: lo_i, hi_j
    high_own = torch.where(eye, hi.unsqueeze(1), lo.unsqueeze(1))
    u = unit_roundoff(lo.dtype)
    lse_lo, lse_hi = torch.logsumexp(low_own, dim=2), torch.logsumexp(high_own, dim=2)
    # the exponent's absolute error grows with the logits' size; exp turns it relative
    slack_lo = 32 * k * u + 8 * u * (lo.abs() + lse_lo.abs())
    slack_hi = 32 * k * u + 8 * u * (hi.abs() + lse_hi.abs())
    p_lo = (lo - lse_lo).exp() * (1 - slack_lo)
    p_hi = (hi - lse_hi).exp() * (1 + slack_hi)
    return p_lo.clamp(0, 1), p_hi.clamp(0, 1)


def _backward(
    graph: Graph,
    values: dict[torch.fx.Node, Interval],
    adjoint: Interval,
    hulls: dict[torch.fx.Node, WindowHull],
) -> Interval:
    """The output function's Jacobian rows carried back to the input, node by node, and past
    each max pool in ``hulls`` to its convolution's input at once."""
    jumps = {
        node: (hull.source, functools.partial(hull.pull, values=values))
        for node, hull in hulls.items()
    }
    found = graph.pull_back(
        graph.output,
        adjoint,
        lambda step, rows: step.rule.backward(rows, step.read(values)),
        jumps,
    )
    if found is None:  # the output does not depend on the input
        b, k = adjoint.center.shape[:2]
        zeros = torch.zeros(b, k, *values[graph.placeholder].center.shape[1:])
        return Interval.point(zeros.to(adjoint.center))
    return found
