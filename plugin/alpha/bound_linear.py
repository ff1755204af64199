"""Tighter pre-activation intervals by linear relaxation, substituted back to the input
(CROWN: Zhang et al., "Efficient Neural Network Robustness Certification with General
Activation Functions", NeurIPS 2018).

For a node feeding a nonlinearity, each undecided neuron z (a ReLU whose sign the interval
pass left open) is bounded by a linear function of the model's input: starting from ``z``
itself, every step back replaces a linear function of a step's output by one of its inputs
(exact through affine maps; through a nonlinearity, a line above or below it over its
interval, :meth:`Rule.substitute`), and the function reached at the input is maximized over
the region (its box, and in L2 its ball). Unlike the interval pass, the cancellations
between paths survive, so the bounds are much tighter past the first layers. Coefficients
are intervals and every step rounds outward, as in the interval pass. The maintained
implementation (auto_LiRPA) has no release that installs with current torch, and it does not
account for rounding: hence this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from locrob.alpha.bound_graph import Graph, Step
from locrob.alpha.bound_rules import total
from locrob.alpha.interval import Interval, reach
from locrob.alpha.settings import AlphaSettings

CHUNK = 2**26  # numbers carried back at once (rows x the nodes' sizes): about 1 GiB live
BUDGET = 2**28  # numbers carried back per region and node; beyond, the interval pass stands
SUMMARY = "interval bound propagation; in L2 the first affine layers over the exact ball"


@dataclass
class Relaxed:
    """Which nodes the back-substitution tightened, and which it left for being too costly."""

    tightened: set[str] = field(default_factory=set)
    over_budget: set[str] = field(default_factory=set)
    far: int = 0  # regions not tried: their interval bound was far above the global one

    def describe(self) -> str:
        """How the pre-activation intervals were made, in words."""
        said = SUMMARY
        if self.tightened:
            said += f"; linear relaxation (CROWN) at {len(self.tightened)} nodes"
        if self.over_budget:
            said += f"; {len(self.over_budget)} nodes over the work budget left to intervals"
        if self.far:
            said += f"; {self.far} regions far above the global bound not relaxed"
        return said


def relax(
    graph: Graph,
    values: dict[torch.fx.Node, Interval],
    node: torch.fx.Node,
    x: torch.Tensor,
    r: torch.Tensor,
    settings: AlphaSettings,
    record: Relaxed,
) -> Interval:
    """``node``'s interval, tightened where a nonlinearity it feeds is undecided (and at the
    logits, whose range the softmax's Jacobian needs) if the work is within the budget."""
    found = values[node]
    if node is graph.output and settings.output == "softmax":
        rows = torch.ones_like(found.center, dtype=torch.bool)
    else:
        rows = graph.undecided(node, found)
    if rows is None or not rows.any():
        return found
    if work(graph, node, 2 * int(rows.flatten(1).sum(1).max())) > BUDGET:
        record.over_budget.add(node.name)
        return found
    record.tightened.add(node.name)
    return tightened(graph, values, node, rows, x, r, settings)


def work(graph: Graph, node: torch.fx.Node, rows: int) -> int:
    """The numbers carried back for ``rows`` of ``node`` in one region: its rows times every
    earlier node's size (and the input's)."""
    sizes = [_size(graph.placeholder)]
    for step in graph.steps:
        sizes.append(_size(step.node))
        if step.node is node:
            break
    return rows * sum(sizes)


def _size(node: torch.fx.Node) -> int:
    return node.meta["tensor_meta"].shape[1:].numel()


def tightened(
    graph: Graph,
    values: dict[torch.fx.Node, Interval],
    node: torch.fx.Node,
    rows: torch.Tensor,
    x: torch.Tensor,
    r: torch.Tensor,
    settings: AlphaSettings,
) -> Interval:
    """``node``'s interval with its elements in ``rows`` (a mask of the node's shape, one per
    region) bounded by back-substitution too, for the regions around ``x`` of radii ``r``."""
    found = values[node]
    b, shape = len(x), found.center.shape[1:]
    chosen = rows.flatten(1)
    counts = chosen.sum(1)
    # each region's chosen positions first; the rest pad its rows (their results are dropped)
    order = torch.argsort(chosen.to(torch.uint8), dim=1, descending=True, stable=True)
    order = order[:, : int(counts.max())]
    kept = torch.arange(order.shape[1], device=x.device) < counts.unsqueeze(1)
    lower, upper = found.lower.flatten(1).clone(), found.upper.flatten(1).clone()
    chunk = max(1, CHUNK // work(graph, node, 2 * b))
    for lo in range(0, order.shape[1], chunk):
        where, ok = order[:, lo : lo + chunk], kept[:, lo : lo + chunk]
        m = where.shape[1]
        seed = x.new_zeros(b, 2 * m, shape.numel())
        one = ok.unsqueeze(2).to(x.dtype)
        seed[:, :m].scatter_(2, where.unsqueeze(2), one)  # z, and -z for its lower end
        seed[:, m:].scatter_(2, where.unsqueeze(2), -one)
        start = Interval.point(seed.view(b, 2 * m, *shape))
        coefficients, constant = _substituted(graph, values, node, start)
        best = _largest(coefficients, constant, values[graph.placeholder], x, r, settings)
        inf = torch.full_like(best[:, :m], float("inf"))
        upper.scatter_reduce_(1, where, torch.where(ok, best[:, :m], inf), reduce="amin")
        lower.scatter_reduce_(1, where, torch.where(ok, -best[:, m:], -inf), reduce="amax")
    return Interval.between(lower.view(b, *shape), upper.view(b, *shape))


def _substituted(
    graph: Graph, values: dict[torch.fx.Node, Interval], node: torch.fx.Node, start: Interval
) -> tuple[Interval | None, Interval]:
    """``start``'s rows of ``node`` as coefficients on the input and a constant."""
    constants: list[Interval] = []

    def through(step: Step, lam: Interval) -> list[Interval]:
        coefficients, constant = step.rule.substitute(lam, step.read(values))
        constants.append(constant)
        return coefficients

    coefficients = graph.pull_back(node, start, through)
    return coefficients, sum(constants[1:], constants[0])


def _largest(
    coefficients: Interval | None,
    constant: Interval,
    box: Interval,
    x: torch.Tensor,
    r: torch.Tensor,
    settings: AlphaSettings,
) -> torch.Tensor:
    """An upper bound of ``coefficients . input + constant`` over each region: the box's, and
    in L2 the ball's (its value at the point plus r times the coefficients' norm), the
    smaller of the two."""
    if coefficients is None:
        return constant.upper
    b, k = coefficients.center.shape[:2]
    flat = coefficients.reshape(b, k, -1)
    best = total(flat.times(box.exact(lambda t: t.flatten(1).unsqueeze(1)))).upper
    if settings.p_in == 2:
        at = total(flat.times(Interval.point(x.flatten(1).unsqueeze(1))))
        moved = reach(flat, r, 2.0)
        best = torch.minimum(best, (at + Interval(torch.zeros_like(moved), moved)).upper)
    return (Interval.point(best) + constant).upper
