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

from locrob import hookspecs, plugins
from locrob.atomic import write_text
from locrob.configurable import check, instantiate
from locrob.data.images import ImageData, batches
from locrob.defenses.base import Defense
from locrob.errors import LocrobError
from locrob.jsonable import jsonable
from locrob.models.architectures import Architecture
from locrob.models.checkpoint import save_checkpoint
from locrob.models.probe import check_model
from locrob.runtime import eval_mode, progress, resolve_device
from locrob.sources import data_options, load_dataset, load_model, split_spec


@dataclass
class TrainConfig:
    """Optimization settings (defaults: the authors' recipe scaled to the embedded data)."""

    epochs: int = 10
    batch_size: int = 100
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_drop: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "train", f"epochs must be at least 1, got {self.epochs}")
        check(
            self.batch_size >= 1, "train", f"batch size must be at least 1, got {self.batch_size}"
        )
        check(self.lr > 0, "train", f"learning rate must be positive, got {self.lr}")
        check(0 <= self.momentum < 1, "train", f"momentum must be in [0, 1), got {self.momentum}")
        check(
            self.weight_decay >= 0, "train", f"weight decay must be >= 0, got {self.weight_decay}"
        )
        check(0 < self.lr_drop <= 1, "train", f"lr_drop must be in (0, 1], got {self.lr_drop}")

    @classmethod
    def authors(cls, seed: int = 0) -> TrainConfig:
        """The Laplacian-networks authors' CIFAR-10 recipe: 100 epochs at 0.1, then 0.001."""
        return cls(epochs=100, batch_size=100, lr=0.1, seed=seed)

    @property
    def drop_epoch(self) -> int:
        """The epoch at which the learning rate is multiplied by ``lr_drop``."""
        return self.epochs // 2 if self.epochs > 1 else self.epochs


@dataclass
class TrainingContext:
    """What the lifecycle hooks see of the run; ``epoch`` and ``step`` advance as it goes."""

    config: TrainConfig
    device: torch.device
    num_classes: int
    epoch: int = 0
    step: int = 0


@dataclass
class TrainResult:
    """The trained model (eval mode), its per-epoch history, and where it was saved."""

    model: nn.Module
    history: list[dict[str, Any]]
    defenses: list[dict[str, Any]]
    checkpoint: Path | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def make_defenses(
    defenses: Sequence[str | Defense], options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Defense]:
    """Instantiate defenses from names (with ``options[name]``) or ready instances."""
    return instantiate(defenses, options, plugins.registries().defenses, Defense)


def lifecycle(defenses: Sequence[Defense]) -> pluggy.PluginManager:
    """A plugin manager holding the active defenses, checked for conflicting hooks."""
    pm = plugins.run_manager(hookspecs.TrainingSpec, defenses)
    transformers = [impl.plugin_name for impl in pm.hook.transform_batch.get_hookimpls()]
    if len(transformers) > 1:
        raise LocrobError(
            f"defenses {' and '.join(transformers)} both replace the training batch; "
            "activate only one of them (their order would decide the result)"
        )
    return pm


def replay_defenses(model: nn.Module, config: Mapping[str, Any]) -> None:
    """Apply again the ``prepare_model`` of the defenses a checkpoint was trained with (they
    may have changed the architecture: parametrizations, merges), before its weights load."""
    recorded = config.get("defenses") or []
    if not recorded:
        return
    defenses = make_defenses(
        [d["name"] for d in recorded], {d["name"]: d.get("settings", {}) for d in recorded}
    )
    context = TrainingContext(
        TrainConfig(**config.get("train", {})),
        torch.device("cpu"),
        int(config.get("options", {}).get("num_classes", 0)),
    )
    lifecycle(defenses).hook.prepare_model(model=model, context=context)


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


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on uint8/float images."""
    with eval_mode(model):
        correct = sum(
            int(model(xb).argmax(1).eq(yb).sum()) for xb, yb in batches(x, y, 500, device)
        )
    return correct / len(y)


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
        return _train(
            model, data, dataset_spec, active, pm, config, model_options, dev, out, resume
        )


def _train(
    model: str,
    data: ImageData,
    dataset_spec: str,
    active: list[Defense],
    pm: pluggy.PluginManager,
    config: TrainConfig,
    model_options: Mapping[str, Any] | None,
    dev: torch.device,
    out: str | Path | None,
    resume: bool,
) -> TrainResult:
    net, options = build_architecture(model, data, model_options)
    net.to(dev)
    context = TrainingContext(config, dev, data.num_classes)
    pm.hook.prepare_model(model=net, context=context)
    net.to(dev)
    check_model(net, data.train_x, data.num_classes, data.name, dev)

    optimizer = torch.optim.SGD(
        net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    shuffle = torch.Generator().manual_seed(config.seed)
    x_train, y_train = data.split("train")
    x_test, y_test = data.split("test")
    n_batches = -(-len(y_train) // config.batch_size)
    described = [d.describe() for d in active]
    info = {
        "dataset": dataset_spec,
        "device": str(dev),
        "defenses": described,
        "train": asdict(config),
    }

    history: list[dict[str, Any]] = []
    first = 0
    if resume:
        first, history = restore(Path(out) / "model.pt", model, info, net, optimizer, shuffle, dev)
        context.step = first * n_batches
    start = time.perf_counter()
    bar = progress(
        total=config.epochs * n_batches,
        initial=first * n_batches,
        desc=f"train {model}",
        leave=True,
    )
    for epoch in range(first, config.epochs):
        context.epoch = epoch
        for group in optimizer.param_groups:  # a stateless step schedule: nothing to restore
            group["lr"] = config.lr * (config.lr_drop if epoch >= config.drop_epoch else 1.0)
        net.train()
        totals: dict[str, float] = {}
        seen = correct = 0
        order = torch.randperm(len(y_train), generator=shuffle)
        for x, y in batches(x_train, y_train, config.batch_size, dev, order):
            logits, y, parts = train_step(net, x, y, pm, optimizer, context)

            n = len(y)
            seen += n
            correct += int(logits.detach().argmax(1).eq(y).sum())
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) * n
            context.step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{totals['loss'] / seen:.3f}")
        stats = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            **{k: v / seen for k, v in totals.items()},
            "train_accuracy": correct / seen,
            "test_accuracy": accuracy(net, x_test, y_test, dev),
        }
        if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
            raise LocrobError(
                f"training diverged in epoch {epoch + 1}: the weights hold NaN or Inf "
                f"(last loss {totals['loss'] / seen:.4g}); lower the learning rate or the "
                "defenses' weights"
            )
        pm.hook.on_epoch_end(model=net, stats=stats, context=context)
        history.append(jsonable(stats, f"epoch {epoch + 1} statistics"))
        if out is not None:
            state = {
                "epoch": epoch + 1,
                "optimizer": optimizer.state_dict(),
                "shuffle": shuffle.get_state(),
                "rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {}),
            }
            info["history"] = history
            save_checkpoint(Path(out) / "model.pt", net, model, options, state, **info)
    bar.close()
    seconds = round(time.perf_counter() - start, 3)
    net.eval()
    info.update(history=history, seconds=seconds)
    result = TrainResult(net, history, described, None, seconds, info)
    if out is not None:  # model.pt was written after the last epoch
        out = Path(out)
        result.checkpoint = out / "model.pt"
        write_text(out / "train.json", json.dumps({"model": model, **info}, indent=2) + "\n")
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
    from locrob.models.checkpoint import read_checkpoint, read_training_state

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
