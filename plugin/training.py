"""The trainer. Every active defense is registered on the run's plugin manager and the trainer
calls the lifecycle hooks (:class:`locrob.hookspecs.TrainingSpec`) at fixed points, so a
combination of defenses is nothing more than several registered plugins.

Defaults follow the Laplacian-networks authors' CIFAR-10 runs (SGD with momentum 0.9, weight
decay 5e-4, batch 100, the learning rate multiplied by 0.01 at half the epochs; they rebuilt the
optimizer at the drop, here a step schedule keeps the momentum), scaled down to the embedded
data: 10 epochs instead of 100, and a learning rate of 0.05 instead of 0.1, at which PGD
training on digits stalls near 24 % accuracy. ``TrainConfig.authors()`` is their recipe.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import torch
import torch.nn.functional as F
from torch import nn

from locrob import plugins
from locrob.atomic import write_text
from locrob.contract import TrainConfig, TrainingContext
from locrob.data.images import ImageData, batches
from locrob.defenses.base import Defense
from locrob.defenses.lifecycle import lifecycle, make_defenses
from locrob.errors import LocrobError
from locrob.jsonable import jsonable
from locrob.metrics.base import correct_predictions, top1_hits
from locrob.models.architectures import Architecture
from locrob.models.checkpoint import read_checkpoint, read_training_state, save_checkpoint
from locrob.models.probe import check_model
from locrob.runtime import eval_mode, progress, resolve_device
from locrob.sources import data_options, load_dataset, load_model, split_spec


@dataclass
class TrainResult:
    """The trained model (eval mode), its per-epoch history, and where it was saved."""

    model: nn.Module
    history: list[dict[str, Any]]
    defenses: list[dict[str, Any]]
    checkpoint: Path | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def build_architecture(
    spec: str, data: ImageData, model_options: Mapping[str, Any] | None
) -> tuple[nn.Module, dict[str, Any]]:
    """The untrained architecture named ``spec``, shaped for ``data``, and its options."""
    if not isinstance(spec, str):
        raise LocrobError(
            f"train builds an architecture by name (like 'small-cnn'), got {type(spec).__name__}"
        )
    sources = plugins.registries().model_sources
    name, arg = split_spec(spec)
    if arg is not None or not isinstance(sources.get(name), Architecture):
        known = [n for n in sources.names() if isinstance(sources.get(n), Architecture)]
        raise LocrobError(
            f"train builds an architecture by name, not '{spec}'; known: {', '.join(known)}"
        )
    options = {**data_options(spec, data), **(model_options or {})}
    return load_model(spec, **options), options


def collect_loss_terms(parts: Sequence[dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor]:
    """Merge the defenses' named loss terms; two terms under one name are an error, not a loss."""
    terms: dict[str, torch.Tensor] = {}
    for part in parts:
        for name, value in (part or {}).items():
            if name in terms or name in ("loss", "cross_entropy"):
                raise LocrobError(
                    f"two loss terms are named '{name}'; each defense must name its terms uniquely"
                )
            terms[name] = value
    return terms


def train_step(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    pm: pluggy.PluginManager,
    optimizer: torch.optim.Optimizer,
    context: TrainingContext,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One optimizer step with every lifecycle hook: the batch transform, the loss terms, the
    update and ``after_step``. Returns the logits, the labels trained on and the loss parts."""
    replaced = pm.hook.transform_batch(model=net, x=x, y=y, context=context)
    if replaced:
        x, y = replaced[0]
    logits = net(x)
    ce = F.cross_entropy(logits, y)
    terms = collect_loss_terms(
        pm.hook.loss_terms(model=net, x=x, y=y, logits=logits, context=context)
    )
    loss = ce + sum(terms.values())
    if not torch.isfinite(loss):
        raise LocrobError(
            f"training diverged at epoch {context.epoch + 1}, step {context.step} "
            f"(loss {float(loss)}); lower the learning rate"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    pm.hook.after_step(model=net, optimizer=optimizer, context=context)
    return logits, y, {"loss": loss, "cross_entropy": ce, **terms}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on uint8/float images."""
    with eval_mode(model):
        right = correct_predictions(model, batches(x, y, 500, device), device)
    return int(right.sum()) / len(right)


def train(
    model: str = "small-cnn",
    data: ImageData | str = "digits",
    *,
    defenses: Sequence[str | Defense] = (),
    defense_options: Mapping[str, Mapping[str, Any]] | None = None,
    config: TrainConfig | None = None,
    model_options: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    out: str | Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train the architecture ``model`` on ``data`` with the given defenses active.

    With ``out``, writes ``out/model.pt`` after every epoch (a checkpoint that records the
    defenses, the settings and what resuming needs) and ``out/train.json`` (settings and
    per-epoch history). ``resume=True`` continues the interrupted run saved in ``out`` (same
    model, data, defenses and settings) exactly where it stopped.
    """
    if resume and out is None:
        raise LocrobError("resume needs the run's directory: pass out=DIR (--out DIR)")
    if out is not None and not resume and (Path(out) / "report.json").exists():
        raise LocrobError(
            f"'{Path(out) / 'report.json'}' describes the model trained there before; training "
            "again would leave it describing other weights: give another --out, or delete it"
        )
    config = config or TrainConfig()
    dataset_spec = data if isinstance(data, str) else data.name
    if isinstance(data, str):
        data = load_dataset(data)
    active = make_defenses(defenses, defense_options)
    pm = lifecycle(active)
    dev = resolve_device(device)
    # Seed a forked RNG so that training is reproducible without reseeding the caller's.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(config.seed)
        run = _start(model, data, dataset_spec, active, pm, config, model_options, dev)
        if resume:
            _resume(run, Path(out) / "model.pt", model, len(data.train_y))
        start = time.perf_counter()
        _epochs(run, model, data, Path(out) if out is not None else None)
        return _finish(run, model, round(time.perf_counter() - start, 3), out)


@dataclass
class _Run:
    """One training run's state, shared by its steps."""

    net: nn.Module
    options: dict[str, Any]
    pm: pluggy.PluginManager
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator
    context: TrainingContext
    info: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    first_epoch: int = 0


def _start(
    model: str,
    data: ImageData,
    dataset_spec: str,
    active: list[Defense],
    pm: pluggy.PluginManager,
    config: TrainConfig,
    model_options: Mapping[str, Any] | None,
    dev: torch.device,
) -> _Run:
    """The architecture built and prepared by the defenses, its optimizer and the run's record."""
    net, options = build_architecture(model, data, model_options)
    net.to(dev)
    context = TrainingContext(config, dev, data.num_classes)
    pm.hook.prepare_model(model=net, context=context)
    net.to(dev)
    check_model(net, data.train_x, data.num_classes, data.name, dev)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    info = {
        "dataset": dataset_spec,
        "device": str(dev),
        "defenses": [d.describe() for d in active],
        "train": asdict(config),
    }
    shuffle = torch.Generator().manual_seed(config.seed)
    return _Run(net, options, pm, optimizer, shuffle, context, info)


def _resume(run: _Run, path: Path, model: str, n_train: int) -> None:
    """Continue the run saved at ``path``: its weights, optimizer, random states and history."""
    epochs, run.history = restore(
        path, model, run.info, run.net, run.optimizer, run.shuffle, run.context.device
    )
    run.first_epoch = epochs
    run.context.step = epochs * -(-n_train // run.context.config.batch_size)


def _epochs(run: _Run, model: str, data: ImageData, out: Path | None) -> None:
    """The remaining epochs, each recorded (and saved to ``out``) as it ends."""
    config = run.context.config
    n_batches = -(-len(data.train_y) // config.batch_size)
    bar = progress(
        total=config.epochs * n_batches,
        initial=run.first_epoch * n_batches,
        desc=f"train {model}",
        leave=True,
    )
    for epoch in range(run.first_epoch, config.epochs):
        run.context.epoch = epoch
        for group in run.optimizer.param_groups:  # a stateless step schedule: nothing to restore
            group["lr"] = config.lr * (config.lr_drop if epoch >= config.drop_epoch else 1.0)
        stats = _epoch(run, data, bar)
        run.pm.hook.on_epoch_end(model=run.net, stats=stats, context=run.context)
        run.history.append(jsonable(stats, f"epoch {epoch + 1} statistics"))
        if out is not None:
            _save(run, model, out / "model.pt")
    bar.close()


def _epoch(run: _Run, data: ImageData, bar: Any) -> dict[str, Any]:
    """One pass over the shuffled training set; the epoch's statistics."""
    net, context, dev = run.net, run.context, run.context.device
    x_train, y_train = data.split("train")
    net.train()
    totals: dict[str, float] = {}
    seen = 0
    correct = torch.zeros((), dtype=torch.long, device=dev)  # read once, after the epoch
    order = torch.randperm(len(y_train), generator=run.shuffle)
    for x, y in batches(x_train, y_train, context.config.batch_size, dev, order):
        logits, y, parts = train_step(net, x, y, run.pm, run.optimizer, context)
        seen += len(y)
        correct += top1_hits(logits.detach(), y).sum()
        for name, value in parts.items():
            totals[name] = totals.get(name, 0.0) + float(value.detach()) * len(y)
        context.step += 1
        bar.update(1)
        bar.set_postfix(epoch=context.epoch + 1, loss=f"{totals['loss'] / seen:.3f}")
    if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
        raise LocrobError(
            f"training diverged in epoch {context.epoch + 1}: the weights hold NaN or Inf "
            f"(last loss {totals['loss'] / seen:.4g}); lower the learning rate or the "
            "defenses' weights"
        )
    return {
        "epoch": context.epoch + 1,
        "lr": run.optimizer.param_groups[0]["lr"],
        **{k: v / seen for k, v in totals.items()},
        "train_accuracy": int(correct) / seen,
        "test_accuracy": accuracy(net, *data.split("test"), dev),
    }


def _save(run: _Run, model: str, path: Path) -> None:
    """The checkpoint after an epoch, with what resuming needs."""
    dev = run.context.device
    state = {
        "epoch": run.context.epoch + 1,
        "optimizer": run.optimizer.state_dict(),
        "shuffle": run.shuffle.get_state(),
        "rng": torch.get_rng_state(),
        **({"cuda_rng": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {}),
    }
    run.info["history"] = run.history
    save_checkpoint(path, run.net, model, run.options, state, **run.info)


def _finish(run: _Run, model: str, seconds: float, out: str | Path | None) -> TrainResult:
    """The result (the model in eval mode), and ``train.json`` beside the checkpoint."""
    run.net.eval()
    info = {**run.info, "history": run.history, "seconds": seconds}
    result = TrainResult(run.net, run.history, run.info["defenses"], None, seconds, info)
    if out is not None:  # model.pt was written after the last epoch
        result.checkpoint = Path(out) / "model.pt"
        write_text(Path(out) / "train.json", json.dumps({"model": model, **info}, indent=2) + "\n")
    return result


def restore(
    path: Path,
    model: str,
    info: Mapping[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    device: torch.device,
) -> tuple[int, list[dict[str, Any]]]:
    """Load the run saved at ``path`` into ``net``, ``optimizer`` and the random states, after
    checking it is the same run; returns the epochs done and their history."""
    config, weights = read_checkpoint(path)
    state = read_training_state(path)
    if state is None:
        raise LocrobError(f"'{path}' holds no training state to resume from")
    differences = [
        name
        for name, saved, now in (
            ("model", config.get("source"), model),
            ("dataset", config.get("dataset"), info["dataset"]),
            ("defenses", config.get("defenses"), info["defenses"]),
            ("training settings", config.get("train"), info["train"]),
        )
        if saved != now
    ]
    if differences:
        raise LocrobError(
            f"cannot resume from '{path}': its {', '.join(differences)} differ from this run's"
        )
    net.load_state_dict(weights)
    optimizer.load_state_dict(state["optimizer"])
    shuffle.set_state(state["shuffle"])
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return int(state["epoch"]), list(config.get("history", []))
