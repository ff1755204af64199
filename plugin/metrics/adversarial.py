"""``adversarial``: accuracy under torchattacks attacks, any attack by name with its options.

Each entry of ``attacks`` is ``{"attack": "<torchattacks class>", **its keyword arguments}``
(an optional ``"label"`` names its column). The defaults are PGD in L-inf (8/255, step 2/255)
and in L2 (0.5, step 0.1), 10 steps each with a random start. ``worst_case`` counts an
example as robust only if every attack fails on it.

torchattacks draws the random start of a whole call from torch's global stream, so a draw
cannot be addressed image by image: the images are attacked in blocks of ``block`` by index,
each block's stream seeded by (seed, attack, first index). The numbers then depend on
``block`` but not on the batch size or on how many processes share the work (each rank
attacks whole blocks).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from locrob.contract import EvaluationContext, MetricResult
from locrob.data.images import ImageData, batches
from locrob.errors import check
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import Metric, correct_predictions
from locrob.runtime import mix_seed, progress

DEFAULT_ATTACKS = (
    {"attack": "PGD", "eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "random_start": True},
    {"attack": "PGDL2", "eps": 0.5, "alpha": 0.1, "steps": 10, "random_start": True},
)


def attack_label(spec: dict[str, Any]) -> str:
    """A column name for an attack: its ``label``, or its class and ``eps`` (``PGD@0.03137``)."""
    if "label" in spec:
        return str(spec["label"])
    eps = spec.get("eps")
    return spec["attack"] if eps is None else f"{spec['attack']}@{eps:.4g}"


@dataclass
class AdversarialAccuracy(Metric):
    """Top-1 accuracy on the adversarial examples of each attack, and over all of them."""

    name = "adversarial"
    shardable = True  # whole blocks of images to each rank
    attacks: list[dict[str, Any]] = field(
        default_factory=lambda: [dict(a) for a in DEFAULT_ATTACKS]
    )
    block: int = 128  # images per attack call, each block's random start seeded by its index

    def __post_init__(self) -> None:
        check(len(self.attacks) > 0, self.name, "attacks needs at least one attack")
        check(self.block >= 1, self.name, f"block must be an integer >= 1, got {self.block}")
        for spec in self.attacks:
            check(
                isinstance(spec.get("attack"), str),
                self.name,
                f'each attack is {{"attack": "<torchattacks class>", ...options}}, got {spec!r}',
            )
        labels = [attack_label(spec) for spec in self.attacks]
        check(
            len(set(labels)) == len(labels),
            self.name,
            f"two attacks share a label ({labels}); give each a distinct 'label'",
        )

    @hookimpl
    def measure(
        self, model: nn.Module, data: ImageData, context: EvaluationContext
    ) -> MetricResult:
        from locrob.adapters.torchattacks import make_attack

        x, y = self.examples(data, context)
        shard = self.shard(context)
        mine = shard.blocks(len(y), self.block)
        lo, hi = mine.start, mine.stop
        counts = torch.zeros(len(self.attacks) + 1, dtype=torch.int64, device=context.device)
        robust = torch.ones(hi - lo, dtype=torch.bool, device=context.device)
        for k, spec in enumerate(self.attacks):
            options = {key: value for key, value in spec.items() if key not in ("attack", "label")}
            # built here, once the model is on its device: torchattacks reads it at construction
            attack = make_attack(model, spec["attack"], **options)
            correct = self._attacked(model, attack, x[lo:hi], y[lo:hi], lo, k, context)
            robust &= correct
            counts[k] = correct.sum()
        counts[-1] = robust.sum()
        *hits, worst = shard.sum(counts).tolist()
        labels = [attack_label(spec) for spec in self.attacks]
        return self.result(
            {
                **{label: h / len(y) for label, h in zip(labels, hits, strict=True)},
                "worst_case": worst / len(y),
            },
            attacks=[dict(spec) for spec in self.attacks],
            n=len(y),
        )

    def _attacked(
        self,
        model: nn.Module,
        attack: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        first: int,
        k: int,
        context: EvaluationContext,
    ) -> torch.Tensor:
        """Whether the model still classifies each image right under attack ``k``, attacked
        block by block from ``first``; each block's random start seeded by its index."""
        from locrob.adapters.torchattacks import run_attack

        def attacked() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            blocks = batches(x, y, self.block, context.device)
            desc = attack_label(self.attacks[k])
            for b, (xb, yb) in enumerate(
                progress(blocks, total=-(-len(y) // self.block), desc=desc)
            ):
                torch.manual_seed(mix_seed(context.seed, k, first + b * self.block))
                yield run_attack(attack, xb, yb), yb

        # torchattacks draws a random start for a whole call from the global stream: forked
        # here (the caller's stream is restored afterwards) and seeded per block of images
        with torch.random.fork_rng(devices=_cuda_devices(context.device)):
            return correct_predictions(model, attacked(), context.device)


def _cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("adversarial", AdversarialAccuracy)
