"""Resolve model and dataset specs (``NAME`` or ``NAME:ARG``) through the registries."""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from locrob import plugins
from locrob.data.images import ImageData
from locrob.errors import LocrobError


def split_spec(spec: str) -> tuple[str, str | None]:
    """Split a spec into name and argument.

    ``"checkpoint:a.pt"`` -> ``("checkpoint", "a.pt")``; ``"digits"`` -> ``("digits", None)``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LocrobError(
            f"a spec must be a non-empty string like 'NAME' or 'NAME:ARG', got {spec!r}"
        )
    name, sep, arg = spec.strip().partition(":")
    return name, (arg if sep else None)


def load_model(spec: str, **options: object) -> nn.Module:
    """Build or load a model: ``small-cnn``, ``preact-resnet18``, ``checkpoint:<path>``, ...

    ``options`` go to the source (``num_classes=10`` for an architecture, say).
    The model is returned in eval mode.
    """
    name, arg = split_spec(spec)
    model = plugins.registries().model_sources.get(name)(arg, **options)
    if not isinstance(model, nn.Module):
        raise LocrobError(
            f"model source '{name}' returned {type(model).__name__}, not an nn.Module"
        )
    return model.eval()


def as_module(model: object) -> object:
    """What locrob measures for a model a caller passes: an ART classifier becomes the module
    that computes it (through the ART adapter); anything else is returned as is."""
    if type(model).__module__.split(".")[0] != "art":  # no import of ART or its adapter
        return model
    from locrob.adapters.art import art_module

    return art_module(model)


def load_dataset(
    spec: str, *, data_dir: str | Path | None = None, download: bool = False
) -> ImageData:
    """Load a data set: ``digits`` (embedded), ``cifar10``, ``cifar100``, ``npz:<path>``, ..."""
    name, arg = split_spec(spec)
    data = plugins.registries().dataset_sources.get(name)(arg, data_dir=data_dir, download=download)
    if not isinstance(data, ImageData):
        raise LocrobError(f"dataset source '{name}' returned {type(data).__name__}, not ImageData")
    return data


def data_options(spec: str, data: ImageData, *, download: bool = False) -> dict[str, Any]:
    """Shape options derived from ``data`` (classes, channels, size) that the source accepts,
    and ``download=True`` when asked for and the source takes it (``robustbench:`` weights).

    Architectures advertise their keyword options in ``parameters``; other sources
    (checkpoints) carry their own shapes and get none.
    """
    source = plugins.registries().model_sources.get(split_spec(spec)[0])
    accepted = getattr(source, "parameters", ())
    c, h, _ = data.image_shape
    derived = {"num_classes": data.num_classes, "in_channels": c, "image_size": h}
    options: dict[str, Any] = {k: v for k, v in derived.items() if k in accepted}
    if download and "download" in inspect.signature(source).parameters:
        options["download"] = True
    return options


def warn_if_untrained(info: dict[str, Any]) -> None:
    """A ``UserWarning`` when the model that :func:`model_info` described has random weights."""
    if info.get("weights") == "random":
        warnings.warn(
            f"model '{info['spec']}' is an untrained architecture (random weights); to evaluate "
            "a trained one, train it (`locrob train`) and give checkpoint:<path>",
            UserWarning,
            stacklevel=3,  # the caller of evaluate
        )


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes; read once per version of the file (size and mtime), as
    ``locrob evaluate`` asks before the run and again in it."""
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_info(spec: str) -> dict[str, Any]:
    """What a report records about a model spec: for a checkpoint, how it was made; for a bare
    architecture (``small-cnn``), that its weights are random."""
    from locrob.models.architectures import Architecture
    from locrob.models.checkpoint import read_checkpoint

    name, arg = split_spec(spec)
    if isinstance(plugins.registries().model_sources.get(name), Architecture):
        return {"spec": spec, "name": spec, "weights": "random"}
    if name != "checkpoint" or not arg:
        return {"spec": spec, "name": spec}
    config, _ = read_checkpoint(arg)
    defenses = [d["name"] for d in config.get("defenses", [])]
    return {
        "spec": spec,
        "name": f"{config['source']} ({'+'.join(defenses) or 'vanilla'})",
        "sha256": file_sha256(arg),  # the weights themselves: a retrained file is another model
        "source": config["source"],
        "defenses": config.get("defenses", []),
        "trained_on": config.get("dataset"),
        "train": config.get("train", {}),
    }
