"""Checkpoints: weights plus the settings that made them, loaded without unpickling code.

The file is a ``torch.save`` dict of tensors and one JSON string, read back with
``torch.load(weights_only=True)``, so a checkpoint from elsewhere cannot run code on load.
The model is rebuilt from its source name and options, then the weights are loaded strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from locrob.atomic import atomic_path
from locrob.defenses.lifecycle import replay_defenses
from locrob.errors import LocrobError
from locrob.hookspecs import RegisterModelSource, hookimpl
from locrob.jsonable import jsonable

FORMAT = "locrob-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    source: str,
    options: dict[str, Any],
    training_state: dict[str, Any] | None = None,
    **info: Any,
) -> Path:
    """Write ``model``'s weights with how to rebuild it (``source``, ``options``) and ``info``.

    ``info`` (dataset, defenses, training settings, history) must be JSON-able;
    ``training_state`` (optimizer state, random states, epoch) is what resuming needs.
    The write is atomic: a temporary file renamed into place.
    """
    from locrob import __version__

    if source == "checkpoint" or not isinstance(options, dict):
        raise LocrobError("a checkpoint records an architecture name and its options dict")
    config = {"source": source, "options": options, "locrob_version": __version__, **info}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(jsonable(config, "checkpoint info"), allow_nan=False),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if training_state is not None:
        payload["training_state"] = training_state
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checkpoint's config and state dict, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise LocrobError(
            f"checkpoint not found: '{path}'; create one with `locrob train --out DIR`"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise LocrobError(
            f"'{path}' is not a readable checkpoint ({type(err).__name__}); it may be truncated "
            "or not made by locrob: re-create it with `locrob train`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LocrobError(f"'{path}' is not a locrob checkpoint; create one with `locrob train`")
    if payload.get("format_version") != FORMAT_VERSION:
        raise LocrobError(
            f"'{path}' has checkpoint format version {payload.get('format_version')}; "
            f"this locrob reads version {FORMAT_VERSION}"
        )
    try:
        config = json.loads(payload["config"])
        state = payload["state_dict"]
    except (KeyError, TypeError, json.JSONDecodeError):
        config, state = None, None
    well_formed = (
        isinstance(config, dict)
        and isinstance(config.get("source"), str)
        and config["source"] != "checkpoint"  # a checkpoint never points at another one
        and isinstance(config.get("options", {}), dict)
        and isinstance(state, dict)
        and all(isinstance(v, torch.Tensor) for v in state.values())
    )
    if not well_formed:
        raise LocrobError(f"'{path}' is a damaged locrob checkpoint (bad config or weights)")
    return config, state


def read_training_state(path: str | Path) -> dict[str, Any] | None:
    """The training state saved with a checkpoint (None when there is none)."""
    read_checkpoint(path)  # the same checks and errors
    return torch.load(Path(path), map_location="cpu", weights_only=True).get("training_state")


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at ``path``; returns the model (eval mode) and its config."""
    from locrob.sources import load_model

    config, state = read_checkpoint(path)
    model = load_model(config["source"], **config.get("options", {}))
    replay_defenses(model, config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        # torch's first line is a header; the next one says what differs
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise LocrobError(
            f"'{path}' does not match its model '{config['source']}': {detail}"
        ) from None
    return model.eval(), config


def checkpoint_source(arg: str | None = None, **_: object) -> nn.Module:
    """Model source ``checkpoint:<path>``."""
    if not arg:
        raise LocrobError("use checkpoint:<path>, e.g. checkpoint:runs/digits/model.pt")
    return load_checkpoint(arg)[0]


@hookimpl
def register_model_sources(register: RegisterModelSource) -> None:
    register("checkpoint", checkpoint_source)
