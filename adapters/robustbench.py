"""RobustBench: the import shim and its CIFAR-10-C / CIFAR-100-C loader.

``robustbench`` 1.1.1 imports ``autoattack``, but its dependency installs that module as
``pyautoattack``; :func:`import_robustbench` aliases it once, here, before the import.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import torch

from locrob.errors import LocrobError

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
    source: str, corruption: str, severity: int, data_dir: str | Path, n_examples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_examples`` images (uint8 NCHW) and labels of one corruption and severity.

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
    x, y = loader(n_examples, severity, str(data_dir), shuffle=False, corruptions=[corruption])
    return (x * 255).round().to(torch.uint8), y.long()
