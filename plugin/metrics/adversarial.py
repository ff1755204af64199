"""``adversarial``: accuracy under torchattacks attacks, any attack by name with its options.

Each entry of ``attacks`` is ``{"attack": "<torchattacks class>", **its keyword arguments}``
(an optional ``"label"`` names its column). The defaults are PGD in L-inf (8/255, step 2/255)
and in L2 (0.5, step 0.1), 10 steps each with a random start. ``worst_case`` counts an
example as robust only if every attack fails on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from locrob.contract import EvaluationContext, MetricResult
from locrob.data.images import ImageData
from locrob.errors import check
from locrob.hookspecs import RegisterMetric, hookimpl
from locrob.metrics.base import Metric, correct_predictions
from locrob.runtime import mix_seed

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
    attacks: list[dict[str, Any]] = field(
        default_factory=lambda: [dict(a) for a in DEFAULT_ATTACKS]
    )

    def __post_init__(self) -> None:
        check(len(self.attacks) > 0, self.name, "attacks needs at least one attack")
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
        from locrob.adapters.torchattacks import make_attack, run_attack

        robust: torch.Tensor | None = None
        accuracy = {}
        for k, spec in enumerate(self.attacks):
            options = {key: value for key, value in spec.items() if key not in ("attack", "label")}
            # built here, once the model is on its device: torchattacks reads it at construction
            attack = make_attack(model, spec["attack"], **options)
            # torchattacks draws its random starts for a whole batch from the global stream, so
            # these cannot be addressed by image index: seeded per attack instead (each attack's
            # result does not depend on the others), and the stream restored afterwards
            with torch.random.fork_rng(devices=_cuda_devices(context.device)):
                torch.manual_seed(mix_seed(context.seed, k))
                attacked = (
                    (run_attack(attack, b.x, b.y), b.y)
                    for b in self.batches(data, context, desc=attack_label(spec))
                )
                correct = correct_predictions(model, attacked)
            robust = correct if robust is None else robust & correct
            accuracy[attack_label(spec)] = int(correct.sum()) / len(correct)
        assert robust is not None  # at least one attack: checked in __post_init__
        return self.result(
            {**accuracy, "worst_case": int(robust.sum()) / len(robust)},
            attacks=[dict(spec) for spec in self.attacks],
            n=len(robust),
        )


def _cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@hookimpl
def register_metrics(register: RegisterMetric) -> None:
    register("adversarial", AdversarialAccuracy)
