"""A model cut into stages that compose it exactly, by tracing it (``torch.fx``).

The model is traced with its direct children kept whole, so the graph is the forward pass at
the top level: the children's calls and the functional steps between them (``F.relu``, a
pooling, ``out.view(...)``, an addition). The graph is cut where a single value is alive, that
is where the rest of the computation depends on the past through one tensor; each child
begins a stage, and the functional steps travel with the stage before them (or the first
one). Each stage is a ``GraphModule`` over the model's own submodules, so running them in turn
is the model's forward pass.
"""

from __future__ import annotations

import itertools

import torch
import torch.fx
from torch import nn

from locrob.errors import LocrobError


class _TopLevel(torch.fx.Tracer):
    """Keeps the model's direct children (and torch.nn's modules) whole."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return "." not in qualname or super().is_leaf_module(m, qualname)


def traced(
    tracer: torch.fx.Tracer, model: nn.Module, what: str
) -> tuple[torch.fx.Graph, torch.fx.Node]:
    """``model``'s graph by ``tracer`` and its one input; a LocrobError starting with
    ``what`` for a model that cannot be traced (data-dependent control flow, unsupported
    Python) or that takes several inputs."""
    try:
        graph = tracer.trace(model)
    except Exception as err:
        raise LocrobError(
            f"{what}: torch.fx cannot trace {type(model).__name__} ({type(err).__name__}: {err})"
        ) from None
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise LocrobError(f"{what}: {type(model).__name__} takes several inputs")
    return graph, placeholders[0]


def split_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's top-level stages, named after their children (and the functional steps
    they carry), each a module from one tensor to one tensor."""
    what = f"cannot split {type(model).__name__} into layers; pass layers=[...]"
    graph, placeholder = traced(_TopLevel(), model, what)
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    order = {n: i for i, n in enumerate(graph.nodes)}
    starts = [i for i, n in enumerate(nodes) if n.op == "call_module" and i > 0]
    cuts = [i for i in starts if _alive(nodes, i, order) == [nodes[i - 1]]]
    bounds = [0, *cuts, len(nodes)]
    stages = []
    for lo, hi in itertools.pairwise(bounds):
        part = nodes[lo:hi]
        source = placeholder if lo == 0 else nodes[lo - 1]
        stages.append((_name(part), _stage(model, graph, part, source)))
    (result,) = [n.args[0] for n in graph.nodes if n.op == "output"]
    if result is not nodes[-1]:
        raise LocrobError(f"cannot split {type(model).__name__}: its last step is not its output")
    if len(stages) < 2:
        raise LocrobError(
            f"cannot split {type(model).__name__}: no point of its forward pass where one tensor "
            "carries everything; pass layers=[...]"
        )
    return stages


def _alive(nodes: list[torch.fx.Node], i: int, order: dict) -> list[torch.fx.Node]:
    """The values made before ``nodes[i]`` (the input included) that it or a later node uses."""
    first = order[nodes[i]]
    made = {
        a
        for n in nodes[i:]
        for a in n.all_input_nodes
        if order[a] < first and a.op != "get_attr"  # a constant is not carried
    }
    return sorted(made, key=order.__getitem__)


def _name(part: list[torch.fx.Node]) -> str:
    """The stage's modules, then its functional steps; at most three of each, then a count."""

    def few(names: list[str]) -> list[str]:
        return names if len(names) <= 3 else [*names[:3], f"{len(names) - 3} more"]

    modules = few([str(n.target) for n in part if n.op == "call_module"])
    steps = few([n.name for n in part if n.op != "call_module"])
    return "+".join(modules + steps)


def _stage(
    model: nn.Module, graph: torch.fx.Graph, part: list[torch.fx.Node], source: torch.fx.Node
) -> nn.Module:
    """The nodes of ``part`` as a module of one input, ``source``'s value."""
    sub = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {source: sub.placeholder("x")}
    for node in graph.nodes:  # constants the part reads
        if node.op == "get_attr" and any(node in n.all_input_nodes for n in part):
            env[node] = sub.node_copy(node, env.__getitem__)
    for node in part:
        env[node] = sub.node_copy(node, env.__getitem__)
    sub.output(env[part[-1]])
    return torch.fx.GraphModule(model, sub)
