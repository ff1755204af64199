"""A model read as a graph of supported operations (``torch.fx``), each with its interval rule.

The model is traced symbolically; modules the rules know stay whole (a convolution, a batch
norm, our residual merges), the others are traced through, so functional steps in a forward
pass (``F.relu``, ``x + shortcut``, ``out.view(...)``) are seen too. Anything without a rule is
refused, naming it: a bound that skipped an operation would be silently wrong.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn.utils import parametrize

from locrob.alpha.bound_rules import (
    Kernel,
    Linear,
    Merge,
    Pool,
    Rule,
    TwoSided,
    leaky_relu,
    relu,
    sigmoid,
    tanh,
)
from locrob.alpha.interval import Interval
from locrob.alpha.stages import traced
from locrob.contract import OBSERVER
from locrob.errors import LocrobError
from locrob.models.l2nn import Center, NonexpansiveConv2d, NonexpansiveLinear, TwoSidedReLU
from locrob.models.merges import ConvexMerge, Sum
from locrob.models.normalize import Normalize

# where rows go past a chain at once, and how they get there (bound_window's hulls)
Jump = tuple[torch.fx.Node, Callable[[Interval], Interval]]
DIAGONAL_FAN = 4  # a per-channel scale computed from its parameters: a few roundings


@dataclass
class Step:
    """One node of the graph: its rule and the nodes whose tensors it takes."""

    node: torch.fx.Node
    rule: Rule
    inputs: list[torch.fx.Node]

    def read(self, values: dict[torch.fx.Node, Interval]) -> list[Interval]:
        """The step's inputs' intervals."""
        return [values[a] for a in self.inputs]


@dataclass
class Graph:
    """The traced model: its input node, its steps in order and its output node."""

    placeholder: torch.fx.Node
    steps: list[Step]
    output: torch.fx.Node

    @property
    def widest(self) -> int:
        """The most numbers one example holds at a node."""
        return max(_shape(n)[1:].numel() for n in [self.placeholder, *(s.node for s in self.steps)])

    def undecided(self, node: torch.fx.Node, value: Interval) -> torch.Tensor | None:
        """Where a nonlinearity reading ``node`` has an undecided derivative over ``value``
        (a mask of its shape); None if no rule reading it can be."""
        masks = [step.rule.undecided(value) for step in self.steps if node in step.inputs]
        masks = [m for m in masks if m is not None]
        return None if not masks else torch.stack(masks).any(0)

    def pull_back(
        self,
        node: torch.fx.Node,
        seed: Interval,
        through: Callable[[Step, Interval], list[Interval]],
        jumps: Mapping[torch.fx.Node, Jump] | None = None,
    ) -> Interval | None:
        """Rows attached to ``node`` (``seed``, (B, K, *shape)) carried back to the input, step
        by step (``through``: a step's rows to its inputs' rows), summed where branches
        meet; None where the node does not depend on the input. A step in ``jumps`` sends
        its rows straight to an earlier node, past nodes that nothing else reads."""
        rows = {node: seed}
        for step in reversed(self.steps):
            here = rows.pop(step.node, None)
            if here is None:
                continue
            jump = (jumps or {}).get(step.node)
            if jump is not None:
                parts = [(jump[0], jump[1](here))]
            else:
                parts = zip(step.inputs, through(step, here), strict=True)
            for source, part in parts:
                rows[source] = rows[source] + part if source in rows else part
        return rows.get(self.placeholder)


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight the module's forward pass uses (a parametrization's or a rescaled one)."""
    if hasattr(module, "effective_weight"):
        return module.effective_weight().detach()
    return module.weight.detach()


def _base(module: nn.Module) -> type:
    """The module's class, seen through a parametrization's generated subclass."""
    kind = type(module)
    return kind.__bases__[0] if parametrize.is_parametrized(module) else kind


def _spectral(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.double(), ord=2)) * (1 + 1e-12)


def _dense(m: nn.Linear) -> Rule:
    w = _weight(m)
    bias = m.bias.detach() if m.bias is not None else None
    return Linear(
        lambda t: F.linear(t, w),
        lambda t: F.linear(t, w.abs()),
        bias,
        w.shape[1],
        w.shape[0],
        lambda p: _spectral(w) if p == 2 else float(w.abs().sum(dim=1).max()) * (1 + 1e-12),
        apply_sq=lambda t: F.linear(t, w.square()),
        transposed=(lambda t: t @ w, lambda t: t @ w.abs()),
    )


def _conv(m: nn.Conv2d, shape: torch.Size) -> Rule:
    if m.padding_mode != "zeros":
        raise LocrobError(f"the bound takes zero-padded convolutions, not {m}")
    w = _weight(m)
    bias = m.bias.detach().view(1, -1, 1, 1) if m.bias is not None else None

    def conv(kernel: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda t: F.conv2d(t, kernel, None, m.stride, m.padding, m.dilation, m.groups)

    # the transposed convolution back onto the input's size: the rows or columns a stride
    # leaves over are given back as output padding
    stride, padding, dilation = _pair(m.stride), _pair(m.padding), _pair(m.dilation)
    extra = []
    for size, k, s, p, d in zip(shape[-2:], w.shape[-2:], stride, padding, dilation, strict=True):
        out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        extra.append(size - ((out - 1) * s - 2 * p + d * (k - 1) + 1))

    def transposed(kernel: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda t: F.conv_transpose2d(
            t, kernel, None, stride, padding, tuple(extra), m.groups, dilation
        )

    rows = float(w.abs().sum(dim=(1, 2, 3)).max())  # the largest row sum, ||A||_inf
    # the largest column sum, ||A||_1: an input meets each kernel tap of each output channel
    # at most once (fewer with a stride), so at most this much
    # (summed over every output channel, its group's and the others': more, never less)
    columns = float(w.abs().sum(dim=(0, 2, 3)).max())

    def norm(p: float) -> float:
        # L2: the circular convolution's norm, else sqrt(||A||_1 ||A||_inf) (Hoelder), both
        # >= ||A||_2; Linf: the largest row sum
        if p != 2:
            return rows * (1 + 1e-12)
        holder = (columns * rows) ** 0.5 * (1 + 1e-12)
        if _pair(m.dilation) != (1, 1) or m.groups != 1:
            return holder
        return min(holder, circular_norm(w, shape[-2:]))

    plain = dilation == (1, 1) and m.groups == 1
    return Linear(
        conv(w),
        conv(w.abs()),
        bias,
        w.shape[1] * w.shape[2] * w.shape[3],
        w.shape[0] * w.shape[2] * w.shape[3],
        norm,
        apply_sq=conv(w.square()),
        transposed=(transposed(w), transposed(w.abs())),
        kernel=Kernel(w, stride, padding) if plain else None,
    )


def circular_norm(w: torch.Tensor, size: Sequence[int]) -> float:
    """An upper bound on the L2 norm of the zero-padded convolution by ``w`` on inputs of
    ``size``: the norm of the circular convolution on a torus large enough that no wrapped
    term reaches a kept output (the padded one is a restriction of it, and a stride only
    drops outputs), which is the largest singular value over the torus's frequencies of the
    kernel's Fourier transform (Sedghi, Gupta & Long, ICLR 2019). Computed in float64 with a
    margin for its rounding."""
    # a kernel one tap wide has the same transform at every frequency along that axis
    torus = [n + k - 1 if k > 1 else 1 for n, k in zip(size, w.shape[-2:], strict=True)]
    # a real kernel's transform at -f is the conjugate of that at f (same singular values):
    # the half spectrum has every norm
    spectrum = torch.fft.rfft2(w.double(), s=torus)  # (out, in, *half the torus)
    a = spectrum.flatten(2).permute(2, 0, 1).contiguous()  # contiguous: a far faster matmul
    # ||A||^2 is the largest eigenvalue of the smaller Gram matrix; its forming and the
    # eigensolver err by about n^2 u ||A||^2, far within the margin
    gram = a @ a.mH if a.shape[-2] <= a.shape[-1] else a.mH @ a
    return largest_eigenvalue(gram) ** 0.5 * (1 + 1e-8)


def largest_eigenvalue(gram: torch.Tensor) -> float:
    """The largest eigenvalue over a batch of Hermitian positive semidefinite float64 matrices
    (n x n), or a number above it by at most a relative 1e-8.

    Only a few matrices get an eigensolver, the slow part: those a few power iterations rank
    highest give t; every other one is shown to have no eigenvalue above t by a Cholesky
    factorization of t I - G, several times cheaper. One that completes in floating point
    makes t I - G + E positive semidefinite with |E| <= gamma_(n+1) |R^H| |R| (Demmel 1989;
    Higham, Accuracy and Stability, Thm 10.5), so ||E|| <= gamma_(n+1) trace(t I - G) <=
    (n + 1) n u' t, u' <= 4u for complex arithmetic, and forming t I - G adds u t: every
    eigenvalue of G is below t (1 + 4 (n + 1)^2 u). A matrix whose factorization fails (power
    iteration ranked it too low) gets the eigensolver too.
    """
    n = gram.shape[-1]
    seed = torch.Generator(device=gram.device).manual_seed(0)
    v = torch.randn((*gram.shape[:-1], 1), dtype=gram.dtype, device=gram.device, generator=seed)
    for _ in range(16):
        v = gram @ v
        v = v / v.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    rayleigh = (v.mH @ gram @ v).real.flatten()
    top = rayleigh.topk(min(4, len(rayleigh))).indices
    t = float(torch.linalg.eigvalsh(gram[top])[..., -1].max().clamp_min(0)) * (1 + 1e-8)
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    failed = torch.linalg.cholesky_ex(t * eye - gram).info != 0
    largest = t * (1 + 4 * (n + 1) ** 2 * torch.finfo(torch.float64).eps)
    if failed.any():
        largest = max(largest, float(torch.linalg.eigvalsh(gram[failed])[..., -1].max()))
    return largest


def _diagonal(scale: float | torch.Tensor, bias: float | torch.Tensor | None = None) -> Rule:
    """``x * scale + bias`` with numbers or tensors (per channel, broadcast): a batch norm,
    a normalization, a shift or a scale in a forward pass, the identity."""
    size = abs(scale) if isinstance(scale, float) else scale.abs()
    biggest = size if isinstance(size, float) else float(size.max())
    return Linear(
        lambda t: t * scale,
        lambda t: t * size,
        bias,
        DIAGONAL_FAN,
        DIAGONAL_FAN,
        lambda p: biggest * (1 + 1e-12),
        diagonal=True,
        channel_scale=_per_channel(scale),
    )


def _per_channel(scale: float | torch.Tensor) -> torch.Tensor | None:
    """The factors of a scaling that is one number per channel of an image (channels second:
    a number, or a tensor of shape (1, C, 1, 1) or (C, 1, 1)); None for any other."""
    if isinstance(scale, float):
        return torch.tensor(scale, dtype=torch.float64)
    shape = scale.shape
    if scale.dim() in (3, 4) and shape[-2:] == (1, 1) and shape[:-3].numel() == 1:
        return scale.reshape(-1)
    return None


def _batch_norm(m: nn.modules.batchnorm._BatchNorm, shape: torch.Size) -> Rule:
    if m.training or m.running_mean is None:
        raise LocrobError(
            f"the bound needs batch norms in eval mode with running statistics: {m} is not"
        )
    scale = (m.running_var.detach() + m.eps).rsqrt()
    if m.weight is not None:
        scale = scale * m.weight.detach()
    bias = -m.running_mean.detach() * scale
    if m.bias is not None:
        bias = bias + m.bias.detach()
    view = (1, -1, *[1] * (len(shape) - 2))  # channels second, whatever follows them
    return _diagonal(scale.view(view), bias.view(view))


def _normalize(m: Normalize) -> Rule:
    scale = 1 / m.std.detach()
    return _diagonal(scale, -m.mean.detach() * scale)


def _average(kernel: tuple[int, int], pool: Callable[[torch.Tensor], torch.Tensor]) -> Rule:
    """Averages over non-overlapping windows of ``kernel``."""
    count = kernel[0] * kernel[1]
    return Linear(
        pool,
        pool,
        None,
        count,
        1,
        lambda p: (count**-0.5 if p == 2 else 1.0) * (1 + 1e-12),
        apply_sq=lambda t: pool(t) / count,
    )


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _avg_pool(
    kernel: int | tuple,
    stride: int | tuple | None,
    padding: int | tuple,
    ceil_mode: bool = False,
    divisor_override: int | None = None,
) -> Rule:
    k = _pair(kernel)
    if _pair(stride if stride is not None else kernel) != k or _pair(padding) != (0, 0):
        raise LocrobError("the bound takes average pooling with stride = kernel and no padding")
    if ceil_mode or divisor_override is not None:
        raise LocrobError("the bound takes average pooling without ceil_mode or divisor_override")
    return _average(k, lambda t: F.avg_pool2d(t, k))


def _leaky(m: nn.LeakyReLU) -> Rule:
    if m.negative_slope < 0:  # then not monotone: the forward rule would not hold
        raise LocrobError(f"the bound takes leaky ReLUs with a slope >= 0, not {m}")
    return leaky_relu(m.negative_slope)


def _adaptive(output: int | tuple, shape: torch.Size) -> Rule:
    h, w = shape[-2:]
    oh, ow = _pair(output)
    if h % oh or w % ow:
        raise LocrobError(
            f"the bound takes adaptive pooling to a divisor of the size, not {oh}x{ow}"
        )
    k = (h // oh, w // ow)
    return _average(k, lambda t: F.avg_pool2d(t, k))


def _max_pool(m: nn.MaxPool2d) -> Rule:
    k = _pair(m.kernel_size)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size)
    if k[0] != k[1] or stride != k or _pair(m.padding) != (0, 0) or _pair(m.dilation) != (1, 1):
        raise LocrobError(f"the bound takes square pooling with stride = kernel, not {m}")
    if m.ceil_mode:
        raise LocrobError(f"the bound takes pooling without ceil_mode, not {m}")
    return Pool(k[0], "max")


def _lp_pool(m: nn.LPPool2d) -> Rule:
    k = _pair(m.kernel_size)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size)
    if float(m.norm_type) != 2 or k[0] != k[1] or stride != k or m.ceil_mode:
        raise LocrobError(f"the bound takes L2 pooling with stride = kernel, not {m}")
    return Pool(k[0], "l2")


def _reshape(shape: torch.Size) -> Rule:
    out = tuple(shape[1:])
    view = Linear(
        lambda t: t.reshape(t.shape[0], *out),
        lambda t: t.reshape(t.shape[0], *out),
        None,
        1,
        1,
        lambda p: 1.0,
        diagonal=True,
    )
    return view


MODULE_RULES: dict[type, Callable[[nn.Module, torch.Size, torch.Size], Rule]] = {
    nn.Linear: lambda m, i, o: _dense(m),
    NonexpansiveLinear: lambda m, i, o: _dense(m),
    nn.Conv2d: lambda m, i, o: _conv(m, i),
    NonexpansiveConv2d: lambda m, i, o: _conv(m, i),
    nn.BatchNorm1d: lambda m, i, o: _batch_norm(m, i),
    nn.BatchNorm2d: lambda m, i, o: _batch_norm(m, i),
    Normalize: lambda m, i, o: _normalize(m),
    Center: lambda m, i, o: _diagonal(1.0, -0.5),
    nn.ReLU: lambda m, i, o: relu(),
    nn.LeakyReLU: lambda m, i, o: _leaky(m),
    nn.Sigmoid: lambda m, i, o: sigmoid(),
    nn.Tanh: lambda m, i, o: tanh(),
    TwoSidedReLU: lambda m, i, o: TwoSided(),
    nn.MaxPool2d: lambda m, i, o: _max_pool(m),
    nn.LPPool2d: lambda m, i, o: _lp_pool(m),
    nn.AvgPool2d: lambda m, i, o: _avg_pool(
        m.kernel_size, m.stride, m.padding, m.ceil_mode, m.divisor_override
    ),
    nn.AdaptiveAvgPool2d: lambda m, i, o: _adaptive(m.output_size, i),
    nn.Flatten: lambda m, i, o: _reshape(o),
    nn.Identity: lambda m, i, o: _diagonal(1.0),
    nn.Dropout: lambda m, i, o: _diagonal(1.0),
    Sum: lambda m, i, o: Merge((1.0, 1.0)),
    ConvexMerge: lambda m, i, o: Merge(tuple(float(w) for w in m.weight.detach())),
}
ADDS = (operator.add, torch.add, operator.iadd)
ELEMENTWISE = {F.relu: relu, torch.relu: relu, torch.sigmoid: sigmoid, torch.tanh: tanh}


class _Tracer(torch.fx.Tracer):
    """Keeps every module with a rule, and torch.nn's, whole; traces through the others."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # torch.nn's own modules stay whole too, so that one without a rule is named as such
        return _base(m) in MODULE_RULES or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, example: torch.Tensor) -> Graph:
    """The graph of ``model`` with a rule per node, from one example's shapes; a LocrobError
    names the first operation without a rule."""
    if _Tracer().is_leaf_module(model, ""):  # the root is traced through: wrap it whole
        model = nn.Sequential(model)
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        raise LocrobError("the bound cannot see what global module hooks do: remove them")
    _check_hooks(model)
    graph, placeholder = traced(_Tracer(), model, "the bound cannot read the model")
    module = torch.fx.GraphModule(model, graph)
    # two examples: a reshape that mixes them (x.view(-1)) shows in the batch size
    ShapeProp(module).propagate(torch.cat([example[:1], example[:1]]))
    steps, output = [], None
    modules = dict(model.named_modules())
    for node in graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            output = node.args[0]
            continue
        meta = node.meta.get("tensor_meta")
        if node.op == "get_attr" or not isinstance(meta, TensorMetadata):
            continue  # a constant (read by the rule that uses it), a size (only feeds a reshape)
        if meta.shape[:1] != (2,):
            raise LocrobError(f"'{node.format_node()}' mixes the examples of a batch")
        _check_in_place(node, modules)
        inputs = _tensor_inputs(node, modules)
        try:
            rule = _rule(node, modules, inputs)
        except LocrobError:
            raise
        except Exception as err:  # an argument form no rule expects
            raise LocrobError(f"the bound cannot read '{node.format_node()}' ({err})") from None
        steps.append(Step(node, rule, inputs))
    if not isinstance(output, torch.fx.Node):
        raise LocrobError("the bound takes models that return one tensor")
    return Graph(placeholder, steps, output)


def _check_hooks(model: nn.Module) -> None:
    """Refuse a module with a forward hook that may change what it computes: the trace reads
    the layers, not the hooks. Hooks marked :func:`locrob.contract.observer` only watch."""
    for name, module in model.named_modules():
        hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
        if any(not getattr(hook, OBSERVER, False) for hook in hooks):
            raise LocrobError(
                f"module '{name or type(module).__name__}' has forward hooks: the bound reads "
                "only the layers' computation (mark a hook that only watches with "
                "locrob.contract.observer)"
            )


def _tensor_inputs(node: torch.fx.Node, modules: dict[str, nn.Module]) -> list[torch.fx.Node]:
    """The node's tensor inputs in the order of its callee's parameters (a keyword call of a
    merge must not swap its weights)."""
    if node.op == "call_module":
        bound = inspect.signature(modules[node.target].forward).bind(*node.args, **node.kwargs)
        given = list(bound.arguments.values())
    else:
        given = [*node.args, *node.kwargs.values()]
    return [a for a in given if isinstance(a, torch.fx.Node) and _is_tensor(a)]


def _check_in_place(node: torch.fx.Node, modules: dict[str, nn.Module]) -> None:
    """Refuse a leaf module whose call is not its class's (hooks, an instance's own forward),
    and an operation that overwrites a tensor another node also reads."""
    in_place = node.target in (operator.iadd,) or node.kwargs.get("inplace", False)
    if node.op == "call_method" and isinstance(node.target, str) and node.target.endswith("_"):
        in_place = True
    if node.op == "call_module":
        module = modules[node.target]
        if "forward" in vars(module):
            raise LocrobError(
                f"module '{node.target}' has its own forward: the bound reads only its class's "
                "computation"
            )
        in_place = in_place or bool(getattr(module, "inplace", False))
    changed = next((a for a in node.args if isinstance(a, torch.fx.Node)), None)
    if in_place and changed is not None and len(changed.users) > 1:
        raise LocrobError(
            f"'{node.format_node()}' overwrites a tensor that another operation also reads"
        )


def _shape(node: torch.fx.Node) -> torch.Size:
    return node.meta["tensor_meta"].shape


def _is_tensor(node: torch.fx.Node) -> bool:
    """Whether the node is a value the bound follows (not a constant, not a size)."""
    return node.op == "placeholder" or (
        node.op != "get_attr" and isinstance(node.meta.get("tensor_meta"), TensorMetadata)
    )


def _rule(node: torch.fx.Node, modules: dict[str, nn.Module], inputs: list) -> Rule:
    shape_in = _shape(inputs[0]) if inputs else None
    shape_out = node.meta["tensor_meta"].shape
    if node.op == "call_module":
        module = modules[node.target]
        make = MODULE_RULES.get(_base(module))
        if make is not None and not (isinstance(module, nn.Dropout) and module.training):
            return make(module, shape_in, shape_out)
        raise LocrobError(
            f"the bound has no rule for module '{node.target}' ({type(module).__name__}); "
            "supported: " + ", ".join(sorted(k.__name__ for k in MODULE_RULES))
        )
    target = node.target
    if (
        node.op == "call_function"
        and target in ADDS
        and len(inputs) == 2
        and not node.kwargs
        and all(isinstance(a, torch.fx.Node) for a in node.args[:2])
    ):
        return Merge((1.0, 1.0))
    if node.op == "call_function" and target in ARITHMETIC and len(inputs) == 1:
        return _arithmetic(node, modules, inputs[0])
    if node.op == "call_function" and target in ELEMENTWISE:
        return ELEMENTWISE[target]()
    if node.op == "call_method" and target in ("relu", "sigmoid", "tanh"):
        return {"relu": relu, "sigmoid": sigmoid, "tanh": tanh}[target]()
    if (node.op == "call_function" and target is torch.flatten) or (
        node.op == "call_method" and target in ("view", "reshape", "flatten")
    ):
        return _reshape(shape_out)
    if node.op == "call_function" and target is F.avg_pool2d:
        names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
        given = {**dict(zip(names, node.args, strict=False)), **node.kwargs}
        if len(node.args) > len(names):
            given["divisor_override"] = node.args[len(names)]
        return _avg_pool(
            given["kernel_size"],
            given.get("stride"),
            given.get("padding", 0),
            given.get("ceil_mode", False),
            given.get("divisor_override"),
        )
    if node.op == "call_function" and target is F.adaptive_avg_pool2d:
        return _adaptive(node.kwargs.get("output_size", node.args[-1]), shape_in)
    if node.op == "call_function" and target is F.dropout:
        training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
        if not training:  # F.dropout's default is training=True: dropping, not a function
            return _diagonal(1.0)
    raise LocrobError(f"the bound has no rule for '{node.format_node()}'")


ARITHMETIC = {
    operator.add: "add",
    torch.add: "add",
    operator.sub: "sub",
    torch.sub: "sub",
    operator.mul: "mul",
    torch.mul: "mul",
    operator.truediv: "div",
    torch.div: "div",
}


def _arithmetic(node: torch.fx.Node, modules: dict[str, nn.Module], x: torch.fx.Node) -> Rule:
    """One tensor and a constant (a number, or a tensor the model holds): a shift or a scale,
    as an input normalization ``(x - mean) / std`` written in a forward pass is."""
    if node.kwargs or len(node.args) != 2:
        raise LocrobError(f"the bound has no rule for '{node.format_node()}'")
    first, second = node.args
    other = second if first is x else first
    if isinstance(other, torch.fx.Node):
        if other.op != "get_attr":
            raise LocrobError(f"the bound has no rule for '{node.format_node()}'")
        value = _constant(modules, str(other.target))
    elif isinstance(other, (int, float)) and not isinstance(other, bool):
        value = float(other)
    else:
        raise LocrobError(f"the bound has no rule for '{node.format_node()}'")
    kind = ARITHMETIC[node.target]
    if kind == "add":
        return _diagonal(1.0, value)
    if kind == "sub":  # x - c, or c - x
        return _diagonal(1.0, -value) if first is x else _diagonal(-1.0, value)
    if kind == "mul":
        return _diagonal(value)
    if first is x:  # x / c, as x * (1 / c) with the reciprocal in float64 (its rounding is
        # within the scale's margin; in float32 it would not be)
        return _diagonal(1 / value if isinstance(value, float) else value.double().reciprocal())
    raise LocrobError(f"the bound has no rule for '{node.format_node()}' (a division by x)")


def _constant(modules: dict[str, nn.Module], target: str) -> torch.Tensor:
    owner, _, attr = target.rpartition(".")
    return getattr(modules[owner], attr).detach()


def input_lipschitz(graph: Graph, p: float) -> float:
    """The global bound of the model: Lipschitz constants composed node by node (products
    along a chain, sums where branches merge)."""
    lips = {graph.placeholder: 1.0}
    for step in graph.steps:
        lips[step.node] = step.rule.lipschitz(p, [lips[a] for a in step.inputs])
    return lips[graph.output]
