"""The certified bound's Jacobian step on its own, to say where the gap between the two sides
of alpha_lim comes from.

The bound takes each node's interval over the region (interval propagation, then linear
relaxation) and bounds the Jacobian from those intervals. Fed instead each node's range over
points of the region that move it most (the point moved by r along each watched neuron's
gradient, both ways, and along random directions), the same Jacobian step gives what it
would give if the intervals were that tight. Those ranges lie inside the true ones, so with
exact intervals the step gives at least about this much: what remains of the gap is the
Jacobian step's own (the hull of tied max-pool windows, the interval matrix's norm), the
rest is the intervals'.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.fx
from torch import nn

from locrob.alpha.bound import jacobian_bound
from locrob.alpha.bound_graph import Graph, trace
from locrob.alpha.bound_rules import Elementwise, Linear, Merge
from locrob.alpha.bound_window import window_hulls
from locrob.alpha.interval import Interval
from locrob.alpha.settings import AlphaSettings

ROWS = 256  # gradients taken, or points run, at once


def reached_floor(
    model: nn.Module, x: torch.Tensor, r: float, settings: AlphaSettings, draws: int = 256
) -> float:
    """The Jacobian step's bound at one point ``x`` (1, *shape) and radius ``r`` from the
    ranges that points of its region reach, in float64."""
    x = x.double()
    model = copy.deepcopy(model).double().eval()
    graph = trace(model, x)
    ranges = reached_ranges(graph, model, x, r, settings, draws)
    with torch.no_grad():
        at = Interval.point(model(x))
    radius = torch.tensor([r], dtype=torch.float64)
    return float(jacobian_bound(graph, window_hulls(graph), ranges, radius, settings, at)[0])


def reached_ranges(
    graph: Graph,
    model: nn.Module,
    x: torch.Tensor,
    r: float,
    settings: AlphaSettings,
    draws: int,
) -> dict[torch.fx.Node, Interval]:
    """Every node's range over the point and the points r away from it along each watched
    neuron's gradient (the inputs of nonlinearities but activations', and the output), both
    ways, and along ``draws`` random directions; in the clamp box."""
    values = _recorder(graph, model)
    kept = {graph.placeholder, *(s.node for s in graph.steps)}
    lo: dict[torch.fx.Node, torch.Tensor] = {}
    hi: dict[torch.fx.Node, torch.Tensor] = {}

    def reach(directions: torch.Tensor) -> None:
        """Widen every node's range by its values at x + r * each direction's unit."""
        if settings.p_in == 2:
            norms = directions.norm(dim=1, keepdim=True)
            units = directions / norms.clamp_min(torch.finfo(x.dtype).tiny)
        else:
            units = directions.sign()
        z = x + r * units.view(-1, *x.shape[1:])
        if settings.clamp is not None:
            z = z.clamp(*settings.clamp)
        with torch.no_grad():
            for node, value in values(z).items():
                if node in kept:
                    low, high = value.amin(0, keepdim=True), value.amax(0, keepdim=True)
                    lo[node] = torch.minimum(lo[node], low) if node in lo else low
                    hi[node] = torch.maximum(hi[node], high) if node in hi else high

    reach(torch.zeros_like(x).flatten(1))  # the point itself (a zero direction stays put)
    generator = torch.Generator().manual_seed(0)
    reach(torch.randn(draws, x[0].numel(), generator=generator, dtype=x.dtype))
    # an activation's output moves with its input: the input's gradients serve for both
    activated = {s.node for s in graph.steps if isinstance(s.rule, Elementwise)}
    watched = {
        a
        for s in graph.steps
        if not isinstance(s.rule, (Linear, Merge))
        for a in s.inputs
        if a not in activated
    }
    for node in [*watched, graph.output]:
        for rows in _gradients(lambda t, n=node: values(t)[n].flatten(1), x):
            reach(rows)
            reach(-rows)
    return {node: Interval.between(lo[node], hi[node]) for node in lo}


class _Recorder(torch.fx.Interpreter):
    """Runs the traced graph and keeps every node's tensor (its own class, not one made per
    call: a class made in a function is freed only by the cycle collector, and with it every
    tensor it kept)."""

    def run_node(self, n: torch.fx.Node) -> object:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.seen[n] = out
        return out


def _recorder(graph: Graph, model: nn.Module):
    """A function from inputs to every node's value (the placeholder's included)."""
    module = torch.fx.GraphModule(model, graph.placeholder.graph)

    def values(z: torch.Tensor) -> dict[torch.fx.Node, torch.Tensor]:
        recorder = _Recorder(module)
        recorder.seen = {}
        recorder.run(z)
        return recorder.seen

    return values


def _gradients(f, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """The gradients of the outputs of ``f`` (a batch to (B, n)) at ``x``, ``ROWS`` at a time
    as rows (ROWS, inputs): copies of ``x``, each copy's own output differentiated."""
    with torch.no_grad():
        n = f(x).shape[1]
    for i in range(0, n, ROWS):
        rows = torch.arange(i, min(i + ROWS, n))
        z = x.expand(len(rows), *x.shape[1:]).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(z)[torch.arange(len(rows)), rows].sum(), z)
        yield grad.flatten(1)
