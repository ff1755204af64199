"""Defenses made active: instantiated by name, checked as a combination, and replayed on a
loaded checkpoint (whose architecture they may have changed) before its weights load."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pluggy
import torch
from torch import nn

from locrob import hookspecs, plugins
from locrob.configurable import instantiate
from locrob.contract import TrainConfig, TrainingContext
from locrob.defenses.base import Defense
from locrob.errors import LocrobError


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
