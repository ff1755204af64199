"""RobustBench: the import shim, its model zoo as a model source, its CIFAR-10-C loader.

Its traps, handled here: ``robustbench`` 1.1.1 imports ``autoattack``, but its dependency
installs that module as ``pyautoattack`` (:func:`import_robustbench` aliases it once, before
the import); ``load_model`` downloads from Google Drive when the checkpoint file is missing,
which offline is a ``ConnectionError`` (checked first here, naming the file to place);
``benchmark(threat_model="corruptions")`` crashes on CIFAR-10 and writes ``model_info/`` into
the working directory, so :func:`benchmark_alongside` evaluates corruptions through
``load_cifar10c`` and locrob's ``corruptions`` metric instead; and its Linf / L2 branch calls
AutoAttack with arguments the installed ``pyautoattack`` dropped, so its steps run here.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from locrob.atomic import no_empty_dirs_left
from locrob.errors import LocrobError
from locrob.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from locrob.report import Report

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


def benchmark_alongside(
    model: nn.Module,
    metrics: Sequence[Any] = ("clean", "local-robustness"),
    *,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    eps: float | None = 8 / 255,
    n_examples: int = 100,
    data_dir: str | Path = "data",
    batch_size: int = 100,
    device: str | torch.device | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    name: str | None = None,
    download: bool = False,
) -> Report:
    """RobustBench's own evaluation and locrob's metrics on the same model and examples.

    The examples are RobustBench's: the first ``n_examples`` test images its loader returns
    from ``data_dir`` (CIFAR files absent there are an error, unless ``download=True``). For
    ``Linf`` / ``L2``, clean and AutoAttack (standard) accuracy at ``eps``,
    as RobustBench's ``benchmark`` measures them; for ``corruptions`` locrob's ``corruptions``
    metric reads the CIFAR-10-C files through ``load_cifar10c`` (RobustBench's own path crashes
    on CIFAR-10). One report holds both, with RobustBench's ``ModelInfo`` fields under
    ``report.model["robustbench"]``.
    """
    from locrob.data.cifar import cifar_split
    from locrob.data.images import ImageData
    from locrob.evaluation import evaluate
    from locrob.metrics.base import MetricResult
    from locrob.runtime import resolve_device
    from locrob.sources import as_module

    enums = import_robustbench("robustbench.model_zoo.enums")
    data_mod = import_robustbench("robustbench.data")
    try:
        bench_ds, threat = enums.BenchmarkDataset(dataset), enums.ThreatModel(threat_model)
    except ValueError as err:
        raise LocrobError(
            f"RobustBench benchmarks no {dataset}/{threat_model} ({err}); data sets: "
            f"{', '.join(d.value for d in enums.BenchmarkDataset)}; threat models: Linf, L2, "
            "corruptions"
        ) from None
    model, dev = as_module(model), resolve_device(device)
    if dataset in ("cifar10", "cifar100"):  # RobustBench's loader would always download
        cifar_split(dataset, data_dir, train=False, download=download)
    x, y = data_mod.load_clean_dataset(
        bench_ds, n_examples, str(data_dir), data_mod.PREPROCESSINGS[None]
    )
    images = (x * 255).round().to(torch.uint8)  # ToTensor of 8-bit images: exact
    data = ImageData(dataset, images, y.long(), images, y.long())
    metrics, options = list(metrics), dict(metric_options or {})
    details: dict[str, Any] = {"threat_model": threat.value, "n_examples": len(y)}
    if threat in (enums.ThreatModel.Linf, enums.ThreatModel.L2):
        if eps is None:
            raise LocrobError(f"the {threat.value} benchmark needs eps")
        clean, robust = _autoattack(model, x, y, threat.value, eps, batch_size, dev, seed)
        summary = {"clean_accuracy": clean, "autoattack_accuracy": robust}
        details.update(eps=eps, attack="AutoAttack (standard)")
    else:
        if "corruptions" not in metrics:
            metrics.append("corruptions")
        options["corruptions"] = {"source": f"{dataset}-c", **options.get("corruptions", {})}
        summary = {}
    report = evaluate(
        model,
        data,
        metrics,
        metric_options=options,
        batch_size=batch_size,
        device=dev,
        seed=seed,
        name=name,
        data_dir=data_dir,
    )
    if not summary:  # corruptions: the clean and corrupted accuracy locrob measured
        result = report.metrics["corruptions"].summary
        summary = {
            "clean_accuracy": 1 - result["clean_error"],
            "corruptions_accuracy": result["accuracy"],
        }
    report.metrics["robustbench"] = MetricResult("robustbench", summary, details)
    info_cls = import_robustbench("robustbench.utils").ModelInfo
    fields = [f.name for f in dataclasses.fields(info_cls)]
    info = {
        "name": report.model.get("name"),
        "dataset": dataset,
        "architecture": type(model).__name__,
        "eps": eps if "autoattack_accuracy" in summary else None,
        "clean_acc": round(100 * summary["clean_accuracy"], 2),
        "autoattack_acc": f"{100 * summary['autoattack_accuracy']:.2f}"
        if "autoattack_accuracy" in summary
        else None,
        "corruptions_acc": f"{100 * summary['corruptions_accuracy']:.2f}"
        if "corruptions_accuracy" in summary
        else None,
        "number_forward_passes": 1,
    }
    report.model["robustbench"] = {k: info.get(k) for k in fields}
    return report


def _autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> tuple[float, float]:
    """The Linf / L2 branch of RobustBench's ``benchmark``: its ``clean_accuracy`` before and
    after AutoAttack (standard). ``benchmark`` itself passes ``log_path`` and ``bs``, which the
    installed AutoAttack (``pyautoattack``) no longer accepts, so the same steps run here."""
    from locrob.runtime import eval_mode, on_device

    utils = import_robustbench("robustbench.utils")
    attack_cls = import_robustbench("autoattack").AutoAttack
    with on_device(model, device), eval_mode(model):
        clean = utils.clean_accuracy(model, x, y, batch_size=batch_size, device=device)
        adversary = attack_cls(
            model, norm=norm, eps=eps, version="standard", device=device, seed=seed
        )
        x_adv, _ = adversary.run_standard_evaluation(
            x.to(device), y.to(device), batch_size=batch_size
        )
        robust = utils.clean_accuracy(model, x_adv, y, batch_size=batch_size, device=device)
    return float(clean), float(robust)


@hookimpl
def register_model_sources(register: Register) -> None:
    register("robustbench", load_zoo_model)
