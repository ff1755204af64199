"""``locrob sweep``: a leaderboard's grid, models × metrics × variants (sets of metric options),
one job per cell through submitit.

submitit's ``AutoExecutor`` submits the jobs: a SLURM job array on a cluster, local
processes elsewhere (``cluster="local"``), or the calling process (``"debug"``, which opens
the debugger on a failure: for debugging a job, not for a sweep). A cell whose
report already exists with the same data, settings and metric settings is skipped, so a sweep
resumes after a crash or a preemption; a failed cell is recorded in ``failures.json`` and the
others go on. The sweep ends with the leaderboard over every report of the sweep.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from locrob.atomic import write_text
from locrob.errors import LocrobError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib


@dataclass
class Variant:
    """One set of metric options, over the sweep's own (per metric, key by key): a cell for
    every model, its report in a folder of its own, its name beside the model's in tables."""

    name: str
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Sweep:
    """A grid: every model evaluated with every metric (with ``options[metric]``), once per
    variant where there are ``variants``, else once."""

    models: list[str]
    metrics: list[str]
    out: Path
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)
    dataset: str = "digits"
    split: str = "test"
    max_examples: int | None = None
    batch_size: int = 256
    seed: int = 0
    device: str | None = None
    data_dir: str | None = None
    sort: str | None = None  # the leaderboard's column; None: the first metric's first value
    gpus_per_job: int = 1

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if not self.models or not self.metrics:
            raise LocrobError("a sweep needs at least one model and one metric")
        if len(set(self.models)) != len(self.models):
            raise LocrobError(f"a model is listed twice in the sweep: {self.models}")
        if self.gpus_per_job < 1:
            raise LocrobError(f"gpus_per_job must be at least 1, got {self.gpus_per_job}")
        try:  # a sweep file's [[variants]] tables
            self.variants = [v if isinstance(v, Variant) else Variant(**v) for v in self.variants]
        except TypeError as err:
            raise LocrobError(f"a variant needs a name and options only: {err}") from None
        folders = [_safe(v.name) for v in self.variants]
        if len(set(folders)) != len(folders) or "" in folders:
            raise LocrobError(
                f"variants need distinct, non-empty names: {[v.name for v in self.variants]}"
            )


def load_sweep(path: str | Path | None = None, **overrides: Any) -> Sweep:
    """A :class:`Sweep` from a TOML file (its keys are the fields; ``out`` relative to the
    file's folder), with ``overrides`` (not None) on top: ``options`` merged per metric, the
    others replacing the file's. Without a file, the overrides are the whole grid."""
    data: dict[str, Any] = {}
    where = f"the sweep file '{path}'" if path is not None else "the sweep"
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise LocrobError(f"cannot read {where}: {err}") from None
        if "out" in data:  # relative to the sweep file, like every path a config holds
            data["out"] = path.parent / data["out"]
    known = {f.name for f in fields(Sweep)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LocrobError(f"{where} has unknown keys {unknown}; known: {sorted(known)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    for metric, options in given.pop("options", {}).items():
        data.setdefault("options", {})[metric] = {
            **data.get("options", {}).get(metric, {}),
            **options,
        }
    data.update(given)
    if "out" not in data:
        raise LocrobError(f"{where} needs an 'out' folder (or --out)")
    try:
        return Sweep(**data)
    except TypeError as err:  # a required key missing
        raise LocrobError(f"{where}: {err}") from None


def _safe(name: str) -> str:
    """``name`` with every character a folder name should not hold made ``_``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


def cells(sweep: Sweep) -> list[tuple[str, Variant | None]]:
    """The grid's cells: each model with each variant (with ``None`` where there are none)."""
    return [(model, variant) for model in sweep.models for variant in sweep.variants or [None]]


def cell_label(model: str, variant: Variant | None = None) -> str:
    """How a cell is named in what the sweep reports: the model spec, and the variant's name."""
    return model if variant is None else f"{model} [{variant.name}]"


def cell_dir(sweep: Sweep, model: str, variant: Variant | None = None) -> Path:
    """The folder of one cell's report: the model spec, then the variant's name, each with
    every other character made safe."""
    folder = sweep.out / "reports" / _safe(model)
    return folder if variant is None else folder / _safe(variant.name)


def cell_options(sweep: Sweep, variant: Variant | None = None) -> dict[str, dict[str, Any]]:
    """The metric options of a cell: the variant's over the sweep's, key by key."""
    extra = variant.options if variant is not None else {}
    metrics = dict.fromkeys([*sweep.options, *extra])
    return {m: {**sweep.options.get(m, {}), **extra.get(m, {})} for m in metrics}


def cell_settings(sweep: Sweep, model: str, variant: Variant | None = None) -> dict[str, Any]:
    """What decides a cell's report: the model, the data, the evaluation's settings and each
    metric's settings (recorded beside the report as ``cell.json``)."""
    from locrob.evaluation import make_metrics

    metrics = make_metrics(sweep.metrics, cell_options(sweep, variant))
    return {
        "model": model,
        **({} if variant is None else {"variant": variant.name}),
        "dataset": sweep.dataset,
        "split": sweep.split,
        "max_examples": sweep.max_examples,
        "batch_size": sweep.batch_size,
        "seed": sweep.seed,
        "metrics": {m.name: m.settings() for m in metrics},
    }


def is_done(sweep: Sweep, model: str, variant: Variant | None = None) -> bool:
    """Whether the cell's report exists, made with this sweep's settings."""
    folder = cell_dir(sweep, model, variant)
    if not (folder / "report.json").is_file() or not (folder / "cell.json").is_file():
        return False
    try:
        recorded = json.loads((folder / "cell.json").read_text())
    except json.JSONDecodeError:
        return False
    return recorded == json.loads(json.dumps(cell_settings(sweep, model, variant)))


def run_cell(sweep: Sweep, model: str, variant: Variant | None = None) -> str:
    """One job: evaluate ``model`` with the sweep's metrics (and the variant's options) and
    save its report; returns its path. With ``gpus_per_job`` > 1 the job's tasks form one
    group (submitit's environment)."""
    from locrob import distributed
    from locrob.evaluation import evaluate
    from locrob.sources import model_info

    if sweep.gpus_per_job > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export()
    name = None if variant is None else f"{model_info(model)['name']} [{variant.name}]"
    with distributed.launched_group(sweep.device) as device:
        report = evaluate(
            model,
            sweep.dataset,
            sweep.metrics,
            metric_options=cell_options(sweep, variant),
            split=sweep.split,
            max_examples=sweep.max_examples,
            batch_size=sweep.batch_size,
            device=device,
            seed=sweep.seed,
            name=name,
            data_dir=sweep.data_dir,
        )
        if distributed.current().rank != 0:
            return ""
        folder = cell_dir(sweep, model, variant)
        path = report.save(folder)
        settings = cell_settings(sweep, model, variant)
        write_text(folder / "cell.json", json.dumps(settings, indent=2) + "\n")
        return str(path)


@dataclass
class SweepResult:
    """What a sweep did: cells run, skipped (done before) and failed (with their error), each
    by its :func:`cell_label`."""

    ran: list[str]
    skipped: list[str]
    failed: dict[str, str]
    leaderboard: Path | None


def run_sweep(
    sweep: Sweep, cluster: str | None = None, timeout_min: int = 60, **parameters: Any
) -> SweepResult:
    """Submit one job per cell whose report is missing (a job array on SLURM), wait for
    them, record the failures and write the leaderboard over every report of the sweep.

    ``cluster``: ``None`` (SLURM where there is one, local processes elsewhere), ``"local"``
    or ``"debug"`` (in this process, the debugger on a failure); ``parameters`` go to the
    executor
    (``slurm_partition=...``).
    """
    try:
        import submitit
    except ImportError:
        raise LocrobError(
            "locrob sweep submits through submitit: pip install 'locrob[cluster]'"
        ) from None
    todo = [cell for cell in cells(sweep) if not is_done(sweep, *cell)]
    skipped = [cell_label(*cell) for cell in cells(sweep) if cell not in todo]
    failed: dict[str, str] = {}
    if todo:
        executor = submitit.AutoExecutor(folder=sweep.out / "jobs", cluster=cluster)
        executor.update_parameters(
            name="locrob-sweep",
            timeout_min=timeout_min,
            gpus_per_node=_gpus(sweep, executor.cluster),
            tasks_per_node=sweep.gpus_per_job,
            **parameters,
        )
        models = [model for model, _ in todo]
        variants = [variant for _, variant in todo]
        jobs = executor.map_array(run_cell, [sweep] * len(todo), models, variants)
        for cell, job in zip(todo, jobs, strict=True):
            try:
                job.results()  # one per task: a job of gpus_per_job tasks has several
            except Exception as err:  # one cell's failure must not stop the others
                failed[cell_label(*cell)] = _cause(err)
    write_text(sweep.out / "failures.json", json.dumps(failed, indent=2) + "\n")
    write_text(sweep.out / "sweep.json", json.dumps(asdict(sweep), indent=2, default=str) + "\n")
    ran = [cell_label(*cell) for cell in todo if cell_label(*cell) not in failed]
    return SweepResult(ran, skipped, failed, _leaderboard(sweep))


def _gpus(sweep: Sweep, cluster: str) -> int:
    """GPUs per job: one per task, unless the sweep runs on another device, or on the default
    device where the jobs run on this machine and it has no GPU (a SLURM login node without
    GPUs says nothing of the nodes the jobs get)."""
    if sweep.device is not None and not sweep.device.startswith("cuda"):
        return 0
    if sweep.device is None and cluster != "slurm":
        import torch

        return sweep.gpus_per_job if torch.cuda.is_available() else 0
    return sweep.gpus_per_job


def _cause(err: Exception) -> str:
    """The cause of a job's failure: submitit wraps it in the job's traceback and log paths;
    the exception's own line is the last ``Name: message`` line of that traceback."""
    raised = re.findall(r"^([\w.]*(?:Error|Exception|Exit)\w*: .*)$", str(err), re.MULTILINE)
    if raised:
        name, _, message = raised[-1].partition(": ")
        return f"{name.rsplit('.', 1)[-1]}: {message}"
    return f"{type(err).__name__}: {err}"


def _leaderboard(sweep: Sweep) -> Path | None:
    """``leaderboard.md`` over the sweep's reports, sorted by ``sort`` (by default the first
    metric's first summary value)."""
    from locrob.leaderboard import leaderboard_markdown
    from locrob.report import load_reports, summary_columns

    folders = [cell_dir(sweep, *cell) for cell in cells(sweep)]
    done = [f for f in folders if (f / "report.json").is_file()]
    if not done:
        return None
    reports = [report for _, report in load_reports(done)[0]]
    columns = summary_columns(reports)
    first = next((c for m in sweep.metrics for c in columns if c[0] == m), columns[0])
    sort = sweep.sort or f"{first[0]} {first[1]}"
    return write_text(sweep.out / "leaderboard.md", leaderboard_markdown(reports, sort))
