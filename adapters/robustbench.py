"""RobustBench: the import shim, its model zoo as a model source, its CIFAR-10-C loader.

Its traps, handled here: ``robustbench`` 1.1.1 imports ``autoattack``, but its dependency
installs that module as ``pyautoattack`` (:func:`import_robustbench` aliases it once, before
the import); ``load_model`` downloads from Google Drive when the checkpoint file is missing,
which offline is a ``ConnectionError`` (checked first here, naming the file to place);
its ``benchmark`` has traps of its own, handled in :mod:`locrob.adapters.benchmark`.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from locrob.atomic import no_empty_dirs_left
from locrob.errors import LocrobError
from locrob.hookspecs import RegisterModelSource, hookimpl

MODEL_DIR_ENV = "LOCROB_MODEL_DIR"

# source name -> (folder RobustBench expects under data_dir, Zenodo record, archive)
CORRUPTED_CIFAR = {
    "cifar10-c": ("CIFAR-10-C", "2535967", "CIFAR-10-C.tar"),
    "cifar100-c": ("CIFAR-100-C", "3555552", "CIFAR-100-C.tar"),
}


def import_robustbench(module: str = "robustbench") -> ModuleType:
    """Import ``module`` (a robustbench module) with ``autoattack`` aliased to ``pyautoattack``."""
    if "autoattack" not in sys.modules:
        try:
            pyautoattack = importlib.import_module("pyautoattack")
            sys.modules["autoattack"] = pyautoattack
            sys.modules["autoattack.state"] = importlib.import_module("pyautoattack.state")
        except ImportError:
            pass  # an installation with the original autoattack package imports as is
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise LocrobError(
            f"RobustBench is needed here but cannot be imported ({err}); install it with: "
            "pip install 'locrob[robustbench]'"
        ) from None


def corrupted_cifar_files(source: str, corruption: str, data_dir: str | Path) -> list[Path]:
    """The ``.npy`` files RobustBench reads for one corruption of ``source``."""
    folder = Path(data_dir) / CORRUPTED_CIFAR[source][0]
    return [folder / f"{corruption}.npy", folder / "labels.npy"]


def load_corrupted_cifar(
    source: str, corruption: str, severity: int, data_dir: str | Path, max_examples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``max_examples`` images (uint8 NCHW) and labels of one corruption and severity.

    Read by RobustBench's ``load_cifar10c`` / ``load_cifar100c`` from
    ``data_dir/CIFAR-10-C/<corruption>.npy``; missing files are an error naming them and
    where to get them, before RobustBench would try to download.
    """
    if source not in CORRUPTED_CIFAR:
        raise LocrobError(
            f"unknown corrupted data set '{source}'; known: {', '.join(CORRUPTED_CIFAR)}"
        )
    folder, record, archive = CORRUPTED_CIFAR[source]
    missing = [
        str(p) for p in corrupted_cifar_files(source, corruption, data_dir) if not p.is_file()
    ]
    if missing:
        raise LocrobError(
            f"{source} files missing: {', '.join(missing)}; download {archive} from "
            f"https://zenodo.org/record/{record} and extract it into {data_dir} "
            f"(it holds {folder}/<corruption>.npy and {folder}/labels.npy)"
        )
    data = import_robustbench("robustbench.data")
    loader = data.load_cifar10c if source == "cifar10-c" else data.load_cifar100c
    x, y = loader(max_examples, severity, str(data_dir), shuffle=False, corruptions=[corruption])
    return (x * 255).round().to(torch.uint8), y.long()


def parse_zoo_spec(arg: str | None) -> tuple[str, str, str]:
    """``[dataset/][threat_model/]name`` -> (dataset, threat model, name); cifar10 and Linf
    by default, as RobustBench's own ``load_model``."""
    parts = (arg or "").split("/")
    if not parts[-1] or len(parts) > 3:
        raise LocrobError(
            "a RobustBench model spec is robustbench:[DATASET/][THREAT_MODEL/]NAME, like "
            f"robustbench:cifar10/Linf/Wong2020Fast; got 'robustbench:{arg or ''}'"
        )
    defaults = ["cifar10", "Linf"]
    dataset, threat = (defaults[: 3 - len(parts)] + parts[:-1])[-2:]
    return dataset, threat, parts[-1]


def zoo_checkpoint(model_dir: str | Path, dataset: str, threat: str, name: str) -> Path:
    """Where RobustBench's ``load_model`` reads (or would download) the checkpoint."""
    return Path(model_dir) / dataset / threat / f"{name}.pt"


def load_zoo_model(
    arg: str | None,
    *,
    model_dir: str | Path | None = None,
    download: bool = False,
    **_: object,
) -> nn.Module:
    """A RobustBench model zoo entry with its weights, through ``robustbench.utils.load_model``.

    ``model_dir`` (or ``$LOCROB_MODEL_DIR``, else ``models``) holds
    ``<dataset>/<threat_model>/<name>.pt`` as RobustBench lays it out; a missing checkpoint is
    an error naming that file, unless ``download=True`` lets RobustBench fetch it (a failed
    fetch is an error too, and leaves no empty folders). The model takes images in [0, 1]
    (normalization is inside it).
    """
    dataset, threat, name = parse_zoo_spec(arg)
    entries = _zoo_entries(dataset, threat, name)
    model_dir = Path(model_dir or os.environ.get(MODEL_DIR_ENV) or "models")
    utils = import_robustbench("robustbench.utils")
    timm_name = f"{name.lower().replace('-', '_')}_{dataset}_{threat.lower()}"
    if utils.timm.is_model(timm_name):  # RobustBench serves these through timm's hub
        try:
            return utils.load_model(
                name, model_dir=str(model_dir), dataset=dataset, threat_model=threat
            )
        except Exception as err:  # offline: whatever the hub client raises
            raise LocrobError(
                f"RobustBench model '{name}' comes from the Hugging Face hub as timm model "
                f"'{timm_name}' and could not be fetched ({type(err).__name__}); put it in the "
                "hub cache on a machine with internet access"
            ) from None
    path = zoo_checkpoint(model_dir, dataset, threat, name)
    place = (
        f"place {name}.pt there (Google Drive id {entries[name].get('gdrive_id')}) or point "
        f"model_dir / ${MODEL_DIR_ENV} to the folder holding {dataset}/{threat}/"
    )
    load = {"model_dir": str(model_dir), "dataset": dataset, "threat_model": threat}
    if path.is_file():
        return utils.load_model(name, **load)
    if not download:
        raise LocrobError(
            f"RobustBench checkpoint missing: {path}; {place}, or let RobustBench download it: "
            "pass --download (locrob evaluate, the example scripts) or download=True (Python)"
        )
    try:
        with no_empty_dirs_left(path.parent):
            return utils.load_model(name, **load)
    except Exception as err:  # gdown's and requests' errors alike
        if path.is_file():  # fetched, then failed to load: not a download problem
            raise
        raise LocrobError(
            f"RobustBench checkpoint missing: {path}, and downloading it failed "
            f"({type(err).__name__}); {place}"
        ) from err


def zoo_architecture(arg: str) -> nn.Module:
    """A RobustBench model zoo entry's architecture as RobustBench builds it, with its initial
    weights (for timing: speed does not depend on the weights); ``arg`` as for
    :func:`load_zoo_model`, e.g. ``cifar10/Linf/Standard`` (WideResNet-28-10)."""
    dataset, threat, name = parse_zoo_spec(arg)
    return _zoo_entries(dataset, threat, name)[name]["model"]()


def _zoo_entries(dataset: str, threat: str, name: str) -> dict:
    """The zoo's entries of ``dataset`` and ``threat``, checked to hold ``name``."""
    zoo = import_robustbench("robustbench.model_zoo")
    enums = import_robustbench("robustbench.model_zoo.enums")
    try:
        entries = zoo.model_dicts[enums.BenchmarkDataset(dataset)][enums.ThreatModel(threat)]
    except (ValueError, KeyError):
        datasets = ", ".join(d.value for d in zoo.model_dicts)
        raise LocrobError(
            f"RobustBench has no {dataset}/{threat} models; data sets: {datasets}; threat "
            "models: Linf, L2, corruptions"
        ) from None
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LocrobError(
            f"RobustBench has no {dataset}/{threat} model '{name}' ({len(entries)} there){hint}"
        )
    return entries


@hookimpl
def register_model_sources(register: RegisterModelSource) -> None:
    register("robustbench", load_zoo_model)
