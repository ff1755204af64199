"""``locrob bench train``: each defense's training-step time as a ratio to vanilla."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from locrob import markdown
from locrob.runtime import resolve_device, synchronize
from locrob.sources import load_dataset

TRAIN_TARGETS = {"vanilla": "", "parseval": "<= 1.3x", "laplacian": "<= 1.5x", "pgd": "~ steps + 1"}


@dataclass
class TrainBench:
    """Milliseconds per training step with one defense, and the ratio to vanilla."""

    defense: str
    ms_per_step: float
    ratio: float = 1.0


def bench_train(
    defenses: Sequence[str] = ("parseval", "laplacian", "pgd"),
    model: str = "small-cnn",
    steps: int = 20,
    batch: int = 100,
    rounds: int = 2,
    device: str | None = None,
) -> list[TrainBench]:
    """Step time of each defense alone against vanilla, on the same batch of digits, measured
    in alternating rounds (best of ``rounds``) through the trainer's own ``train_step``."""
    from locrob.contract import TrainConfig, TrainingContext
    from locrob.defenses.lifecycle import lifecycle, make_defenses
    from locrob.training import build_architecture, train_step

    dev = resolve_device(device)
    data = load_dataset("digits")
    x = (data.train_x[:batch].float() / 255).to(dev)
    y = data.train_y[:batch].to(dev)
    names = ["vanilla", *defenses]
    best = dict.fromkeys(names, float("inf"))
    for _ in range(rounds):
        for name in names:
            torch.manual_seed(0)
            net, _ = build_architecture(model, data, None)
            net.to(dev).train()
            pm = lifecycle(make_defenses([] if name == "vanilla" else [name]))
            context = TrainingContext(TrainConfig(), dev, data.num_classes)
            pm.hook.prepare_model(model=net, context=context)
            optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            for _ in range(2):  # warm-up
                train_step(net, x, y, pm, optimizer, context)
            synchronize(dev)
            start = time.perf_counter()
            for _ in range(steps):
                train_step(net, x, y, pm, optimizer, context)
            synchronize(dev)
            best[name] = min(best[name], (time.perf_counter() - start) / steps * 1000)
    return [TrainBench(n, best[n], best[n] / best["vanilla"]) for n in names]


def train_table(rows: Sequence[TrainBench]) -> str:
    """A Markdown table of step times and ratios to vanilla, with the targets."""
    cells = (
        [r.defense, f"{r.ms_per_step:.1f}", f"{r.ratio:.2f}", TRAIN_TARGETS.get(r.defense, "")]
        for r in rows
    )
    return markdown.table(["defense", "ms per step", "x vanilla", "target"], cells)
