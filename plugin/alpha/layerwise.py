"""Layer-wise robustness (paper Definition 2, Proposition 1), on any module via forward hooks.

The model is read as a chain of stages f_1, ..., f_L: named submodules whose outputs feed the
next stage's input, up to a reshape, or, for a model that names none, the top-level stages
found by tracing it (:mod:`locrob.alpha.stages`). For stage l, alpha_l is estimated over the
stage's own inputs F^{l-1}(R), recorded on the clean pass, at radius r * prod_{m<l} alpha_m.
Proposition 1 then bounds alpha_lim(F, r) by prod_l alpha_l. Each alpha_l is itself a
lower-bound estimate, so the composed value is Proposition 1's bound evaluated at estimates:
reported beside the end-to-end estimate for comparison, not as a certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from locrob.alpha.estimate import alpha_lim, as_points, model_dtype
from locrob.alpha.result import AlphaResult
from locrob.alpha.settings import OUTPUTS, AlphaSettings, resolve
from locrob.alpha.stages import split_stages
from locrob.distributed import SINGLE, Shard
from locrob.errors import LocrobError
from locrob.runtime import eval_mode, on_device, resolve_device


def stage_names(model: nn.Module, layers: Sequence[str] | None) -> list[str] | None:
    """The stages' names: ``layers`` if given, else the model's ``layer_names()``, else a
    Sequential's children; None where the model is to be split by tracing it."""
    if layers is not None:
        names = list(layers)
    elif hasattr(model, "layer_names"):
        names = list(model.layer_names())
    elif isinstance(model, nn.Sequential):
        names = [name for name, _ in model.named_children()]
    else:
        return None
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing or not names:
        raise LocrobError(f"no submodule named {', '.join(missing) or '(none given)'}")
    return names


@torch.no_grad()
def record_stage_inputs(
    model: nn.Module, names: list[str], x: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each stage's input on the clean pass, after checking that the stages compose the model."""
    modules = dict(model.named_modules())
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_: nn.Module, args: tuple, out: torch.Tensor) -> None:
            inputs.setdefault(name, args[0].detach())
            outputs.setdefault(name, out.detach())

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        final = model(x)
    finally:
        for handle in handles:
            handle.remove()
    chain = [x, *(outputs[n] for n in names)]
    received = [*(inputs.get(n) for n in names), final]
    for i, (sent, got) in enumerate(zip(chain, received, strict=True)):
        before = "the input" if i == 0 else f"the output of '{names[i - 1]}'"
        after = "the model's output" if i == len(names) else f"'{names[i]}'"
        if (
            got is None
            or sent.numel() != got.numel()
            or not torch.allclose(
                sent.reshape(len(x), -1), got.reshape(len(x), -1), rtol=1e-4, atol=1e-5
            )
        ):
            raise LocrobError(
                f"the layers do not compose the model: {after} does not receive {before}; "
                "pass layers=[...] naming a chain of submodules"
            )
    return [inputs[n] for n in names], final


@torch.no_grad()
def traced_stages(
    model: nn.Module, x: torch.Tensor
) -> tuple[list[str], list[nn.Module], list[torch.Tensor]]:
    """The stages of a model split by tracing (:mod:`locrob.alpha.stages`), and each one's
    input on the clean pass, after checking that they compose the model."""
    stages = split_stages(model)
    inputs, y = [], x
    for _, stage in stages:
        inputs.append(y)
        y = stage(y)
    final = model(x)
    if y.shape != final.shape or not torch.allclose(y, final, rtol=1e-4, atol=1e-5):
        raise LocrobError(
            f"the traced stages of {type(model).__name__} do not compose it; pass layers=[...]"
        )
    return [name for name, _ in stages], [stage for _, stage in stages], inputs


@dataclass
class LayerwiseUpper:
    """The certified side: each alpha_l's upper bound at radius r * prod of the earlier upper
    bounds, their product (a certified bound on alpha_lim(F, r), by composition), and the
    end-to-end certified bound."""

    layer_radii: torch.Tensor  # (L, R)
    per_layer: torch.Tensor  # (L, R)
    composed: torch.Tensor  # (R,)
    end_to_end: AlphaResult

    def to_dict(self) -> dict[str, Any]:
        return {
            "bound": "certified upper bounds of each alpha_l; composed = their product",
            "layer_radii": self.layer_radii.tolist(),
            "per_layer": self.per_layer.tolist(),
            "composed": self.composed.tolist(),
            "end_to_end": self.end_to_end.curve.tolist(),
        }


@dataclass
class LayerwiseResult:
    """Per-layer alpha_l, the composed bound prod alpha_l and the end-to-end estimate, per radius.

    All alpha values are lower-bound estimates (see the module docstring).
    """

    layers: list[str]
    radii: torch.Tensor  # (R,)
    layer_radii: torch.Tensor  # (L, R): r * prod of the previous alpha_l
    per_layer: torch.Tensor  # (L, R)
    composed: torch.Tensor  # (R,)
    end_to_end: AlphaResult
    upper: LayerwiseUpper | None = None  # with bound=True

    def __str__(self) -> str:
        """alpha_l per layer (rows) and radius r (columns), then composed and end_to_end, with
        a line on how to read those two."""
        width = max(len(name) for name in [*self.layers, "end_to_end"])

        def row(label: str, values: torch.Tensor) -> str:
            return f"{label:<{width}}" + "".join(f"  {float(v):>10.4g}" for v in values)

        lines = [
            row("r", self.radii),
            *(row(name, v) for name, v in zip(self.layers, self.per_layer, strict=True)),
            row("composed", self.composed),
            row("end_to_end", self.end_to_end.curve),
            "All are lower estimates. end_to_end: of alpha_lim(F, r), the network's. "
            "composed: of prod alpha_l, which bounds alpha_lim(F, r) from above when every "
            "alpha_l <= 1 (Proposition 1); neither bounds the other, so composed below "
            "end_to_end contradicts nothing.",
        ]
        if self.upper is not None:
            up = self.upper
            lines += [
                "certified upper bounds:",
                *(row(name, v) for name, v in zip(self.layers, up.per_layer, strict=True)),
                row("composed", up.composed),
                row("end_to_end", up.end_to_end.curve),
                "Both certified upper bounds hold for alpha_lim(F, r); the smaller is the better.",
            ]
        return "\n".join(lines)

    @property
    def hypothesis_holds(self) -> torch.Tensor:
        """Proposition 1's condition, every alpha_l <= 1, per radius."""
        return (self.per_layer <= 1).all(dim=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bound": "lower estimates of each alpha_l; composed = their product",
            "layers": self.layers,
            "radii": self.radii.tolist(),
            "layer_radii": self.layer_radii.tolist(),
            "per_layer": self.per_layer.tolist(),
            "composed": self.composed.tolist(),
            "end_to_end": self.end_to_end.curve.tolist(),
            "all_at_most_one": self.hypothesis_holds.tolist(),
            **({"upper": self.upper.to_dict()} if self.upper is not None else {}),
        }


def layerwise_alpha(
    model: nn.Module,
    x: torch.Tensor,
    radii: Sequence[float] | None = None,
    *,
    layers: Sequence[str] | None = None,
    preset: str | None = None,
    device: str | torch.device | None = None,
    shard: Shard = SINGLE,
    bound: bool = False,
    **options: Any,
) -> LayerwiseResult:
    """alpha_l for each layer at radius r * prod_{m<l} alpha_m, their product (Proposition 1)
    and the end-to-end alpha_lim, side by side. ``preset`` and ``options`` are those of
    :func:`alpha_lim` (each preset's provenance: :func:`locrob.alpha.settings.resolve`);
    the clamp applies to the first layer's input (the images) only. With ``bound=True`` the
    certified side too: each stage's upper bound over the ball its input can reach (radius r
    times the earlier stages' upper bounds), their product and the end-to-end bound. With the
    ``shard`` of a process group, each of the estimates is split over the ranks as
    :func:`alpha_lim` splits one, and every rank returns the whole result.
    """
    settings = resolve(preset, radii, **options)
    if callable(settings.output) or settings.output not in OUTPUTS:
        raise LocrobError("layerwise_alpha takes output='softmax' or 'logits'")
    dev = resolve_device(device)
    names = stage_names(model, layers)
    with on_device(model, dev):
        points = as_points(x, settings).to(dev, model_dtype(model))
        with eval_mode(model):
            if names is not None:
                stage_inputs, _ = record_stage_inputs(model, names, points)
                modules = [dict(model.named_modules())[name] for name in names]
            else:
                names, modules, stage_inputs = traced_stages(model, points)
        # every run uses the resolved settings (the preset included) on the points already chosen
        base = {**settings.describe(), "max_examples": None, "device": dev, "shard": shard}
        del base["radii"]
        chain = _Chain(modules, stage_inputs, settings, base)
        layer_radii, per_layer = chain.run(settings.method)
        end_to_end = alpha_lim(model, points, settings.radii, **base)
        upper = None
        if bound:
            upper_radii, per_layer_upper = chain.run("bound")
            whole = alpha_lim(model, points, settings.radii, **{**base, "method": "bound"})
            upper = LayerwiseUpper(upper_radii, per_layer_upper, per_layer_upper.prod(0), whole)
        radii_t = torch.tensor(settings.radii, dtype=torch.float64)
        return LayerwiseResult(
            names, radii_t, layer_radii, per_layer, per_layer.prod(dim=0), end_to_end, upper
        )


@dataclass
class _Chain:
    """The stages and their recorded inputs, estimated one after the other."""

    modules: list[nn.Module]
    inputs: list[torch.Tensor]
    settings: AlphaSettings
    base: dict[str, Any]

    def run(self, method: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Each stage's radii (r times the product of the earlier stages' values) and its
        alpha curve there, by ``method``."""
        settings = self.settings
        radii = torch.tensor(settings.radii, dtype=torch.float64)
        layer_radii = torch.zeros(len(self.modules), len(radii), dtype=torch.float64)
        per_layer = torch.zeros_like(layer_radii)
        scale = torch.ones_like(radii)
        for i, (module, y) in enumerate(zip(self.modules, self.inputs, strict=True)):
            layer_radii[i] = radii * scale
            positive = layer_radii[i] > 0  # a zero alpha upstream leaves nothing to perturb
            if bool(positive.any()):
                last = i == len(self.modules) - 1
                stage_options = {
                    **self.base,
                    "method": method,
                    "output": settings.output if last else "logits",
                    # inner stages measure their output in the input norm: it is the next radius
                    "output_norm": settings.output_norm if last else settings.norm,
                    "clamp": settings.clamp if i == 0 else None,
                }
                stage_radii = layer_radii[i][positive].tolist()
                # the stage's own module: the chunk tuner's cache, keyed by model, serves reruns
                result = alpha_lim(module, y, stage_radii, **stage_options)
                per_layer[i][positive] = result.curve.double()
            scale = scale * per_layer[i]
        return layer_radii, per_layer
