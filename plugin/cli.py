"""The ``locrob`` command line."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from locrob.atomic import write_text
from locrob.errors import LocrobError

if TYPE_CHECKING:
    from locrob.report import Report

# click's base exception, from the click typer runs on (recent typer vendors its own copy)
CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    help="Local robustness, corruption robustness and defenses for image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OptionList = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="A plugin setting NAME.KEY=VALUE (VALUE read as JSON, else as text); repeatable.",
    ),
]
Device = Annotated[
    str | None, typer.Option(help="cpu, cuda or cuda:N (default: CUDA when present).")
]
DataDir = Annotated[Path | None, typer.Option(help="Where cifar10/cifar100 files live.")]
Download = Annotated[
    bool, typer.Option(help="Let torchvision download CIFAR files into --data-dir.")
]


def comma_list(text: str) -> list[str]:
    """``"clean, noise,"`` -> ``["clean", "noise"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["pgd.eps=0.03", "pgd.norm=L2"]`` -> ``{"pgd": {"eps": 0.03, "norm": "L2"}}``.

    Values are read as JSON, else kept as text; the plugin then checks them against its option
    types (``radii=0.5`` becomes ``[0.5]``, ``corruptions=fog`` becomes ``["fog"]``).
    """
    parsed: dict[str, dict[str, Any]] = {}
    for item in items or []:
        target, eq, raw = item.partition("=")
        plugin, dot, key = target.partition(".")
        if not (eq and dot and plugin and key):
            raise LocrobError(
                f"--option wants NAME.KEY=VALUE (like clean.batch_size=128), got '{item}'"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parsed.setdefault(plugin, {})[key] = value
    return parsed


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Directory for model.pt and train.json.")],
    model: Annotated[str, typer.Option(help="Architecture to train.")] = "small-cnn",
    dataset: Annotated[str, typer.Option(help="Data set spec.")] = "digits",
    defense: Annotated[
        list[str] | None, typer.Option(help="Activate a defense; repeat to combine.")
    ] = None,
    option: OptionList = None,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs (default 10); the learning rate drops at half.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Training batch size (default 100).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Initial learning rate (default 0.05; the authors' 0.1).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialization and shuffling.")] = 0,
    device: Device = None,
    data_dir: DataDir = None,
    download: Download = False,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
) -> None:
    """Train a model (no defense: the vanilla baseline) and save a checkpoint."""
    from locrob.contract import TrainConfig
    from locrob.sources import load_dataset
    from locrob.training import train as run_training

    data = load_dataset(dataset, data_dir=data_dir, download=download)
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
    config = TrainConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})
    result = run_training(
        model,
        data,
        defenses=defense or [],
        defense_options=parse_options(option),
        config=config,
        device=device,
        out=out,
        resume=resume,
    )
    last = result.history[-1]
    typer.echo(
        f"trained {model} on {dataset} in {result.seconds:.1f}s: train accuracy "
        f"{last['train_accuracy']:.4f}, test accuracy {last['test_accuracy']:.4f}"
    )
    typer.echo(f"checkpoint: {result.checkpoint}")


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Model spec: checkpoint:<path>, an architecture, ...")],
    out: Annotated[Path, typer.Option(help="Directory for report.json and report.md.")],
    dataset: Annotated[str, typer.Option(help="Data set spec.")] = "digits",
    metrics: Annotated[str, typer.Option(help="Comma-separated metric names.")] = "clean",
    option: OptionList = None,
    split: Annotated[str, typer.Option(help="train or test.")] = "test",
    max_examples: Annotated[int | None, typer.Option(help="Use the first N examples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed for metrics that draw noise.")] = 0,
    name: Annotated[str | None, typer.Option(help="The model's label in tables.")] = None,
    device: Device = None,
    data_dir: DataDir = None,
    download: Annotated[
        bool,
        typer.Option(
            help="Let torchvision download CIFAR files into --data-dir, and a model source "
            "that can (robustbench:) fetch missing weights."
        ),
    ] = False,
) -> None:
    """Evaluate a model with metric plugins; write a JSON report and a Markdown table."""
    from locrob import distributed
    from locrob.contract import EvaluationContext
    from locrob.evaluation import evaluate as run_evaluation
    from locrob.evaluation import planned_report
    from locrob.report import check_same_subject, identity, saved_report
    from locrob.runtime import resolve_device
    from locrob.sources import load_dataset

    with distributed.launched_group(device) as device:  # under torchrun: one rank of a group
        data = load_dataset(dataset, data_dir=data_dir, download=download)
        saved = saved_report(out)  # checked before the run, so that a refusal wastes no measuring
        if saved is not None:
            context = EvaluationContext(
                resolve_device(device), split, batch_size, max_examples, seed
            )
            check_same_subject(saved, out, **identity(planned_report(model, data, context, name)))
        report = run_evaluation(
            model,
            data,
            comma_list(metrics),
            metric_options=parse_options(option),
            split=split,
            max_examples=max_examples,
            batch_size=batch_size,
            device=device,
            seed=seed,
            name=name,
            data_dir=data_dir,
            download=download,
        )
        if distributed.current().rank == 0:  # every rank holds the report; rank 0 writes it
            _write_evaluation(saved, report, out)


def _write_evaluation(saved: Report | None, report: Report, out: Path) -> None:
    """Save the report into ``out`` with its figures; print its table and the files' paths."""
    from locrob.presentation import save_plots
    from locrob.report import markdown_table, merge_saved

    # metrics measured before into --out stay, and its figures are redrawn from the whole report
    report = merge_saved(saved, report, out)
    figures = save_plots([report], out, replaces=report.figures)
    report.figures = [figure.name for figure in figures]
    path = report.save(out)
    typer.echo(markdown_table([report]), nl=False)
    typer.echo(f"report: {path}")
    for figure in figures:
        typer.echo(f"figure: {figure}")


def compared_reports(paths: list[Path]) -> list[Report]:
    """The reports to compare: folders without one are skipped, and each environment field in
    which the reports differ is a warning, one line each on stderr."""
    from locrob.report import environment_differences, load_reports

    loaded, skipped = load_reports(paths)
    if skipped:
        names = ", ".join(map(str, skipped))
        typer.echo(f"locrob: skipped the folder(s) without a report.json: {names}", err=True)
    for difference in environment_differences(loaded):
        typer.echo(f"locrob: warning: {difference}", err=True)
    return [report for _, report in loaded]


@app.command()
def plot(
    reports: Annotated[list[Path], typer.Argument(help="report.json files or their directories.")],
    out: Annotated[Path, typer.Option(help="Directory for the figures and the joint table.")],
) -> None:
    """Draw several reports on shared figures (one per metric) and join their tables.

    Metrics with a table of their own write it too (corruptions.md: Table 2, measured
    against the first report).
    """
    from locrob.presentation import save_plots, save_tables
    from locrob.report import markdown_table

    loaded = compared_reports(reports)
    table = markdown_table(loaded)
    write_text(out / "reports.md", table)
    typer.echo(table, nl=False)
    for path in save_tables(loaded, out):
        typer.echo(f"\n{path.read_text(encoding='utf-8')}", nl=False)
        typer.echo(f"table: {path}")
    for figure in save_plots(loaded, out):
        typer.echo(f"figure: {figure}")


@app.command()
def leaderboard(
    reports: Annotated[list[Path], typer.Argument(help="report.json files or their directories.")],
    sort: Annotated[str, typer.Option(help="The column to rank by, like 'clean accuracy'.")],
    out: Annotated[Path, typer.Option(help="Directory for leaderboard.md and leaderboard.html.")],
    ascending: Annotated[bool, typer.Option(help="Rank lower values first (errors).")] = False,
) -> None:
    """Rank any number of reports by one column; write Markdown and HTML, RobustBench-style."""
    from locrob.leaderboard import leaderboard_html, leaderboard_markdown

    loaded = compared_reports(reports)
    table = leaderboard_markdown(loaded, sort, ascending)
    write_text(out / "leaderboard.md", table)
    write_text(out / "leaderboard.html", leaderboard_html(loaded, sort, ascending))
    typer.echo(table, nl=False)
    typer.echo(f"leaderboard: {out / 'leaderboard.md'}, {out / 'leaderboard.html'}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the models, reports and figures.")],
    epochs: Annotated[int, typer.Option(help="Training epochs per model.")] = 10,
    run: Annotated[
        list[str] | None, typer.Option(help="Runs to include (default: all six; vanilla first).")
    ] = None,
    max_examples: Annotated[
        int | None, typer.Option(help="Evaluate the first N test images.")
    ] = None,
    seed: Annotated[
        list[int] | None,
        typer.Option(
            help="Seeds to train and evaluate each model from; repeat for several (default: "
            "0, 1 and 2). The table gives mean ± std over them."
        ),
    ] = None,
    device: Device = None,
) -> None:
    """The paper's study on digits: six models, Table 2 and Figs. 1-5, in one command."""
    from locrob.demo import DemoConfig, run_demo

    config = DemoConfig(epochs=epochs, max_examples=max_examples)
    if run:
        config.runs = list(run)
    if seed:
        config.seeds = list(seed)
    written = run_demo(out, config, device)
    typer.echo((out / "report.md").read_text(encoding="utf-8"), nl=False)
    for path in written:
        typer.echo(f"wrote: {path}")


@app.command()
def plugins() -> None:
    """List the loaded plugins (name, version, hooks) and what they registered; a name that
    several plugins register is marked with them (every other command refuses it)."""
    from locrob.plugins import host

    for info in host.plugins():
        version = f" {info.version}" if info.version else ""
        typer.echo(f"{info.name}  [{info.distribution}{version}]  hooks: {', '.join(info.hooks)}")
    reg = host.registrations()
    typer.echo("")
    for _, registry in reg.each():
        clashes = registry.clashes()
        names = [
            f"{name} (CLASH: {host.owners(clashes[name])})" if name in clashes else name
            for name in registry.names()
        ]
        typer.echo(f"{registry.label}: {', '.join(names) or '(none)'}")


@app.command()
def separation(
    out: Annotated[Path, typer.Option(help="Directory for separation.json and the figures.")],
    dataset: Annotated[
        list[str] | None, typer.Option(help="Data set spec; repeat to compare.")
    ] = None,
    norm: Annotated[str, typer.Option(help="inf or l2.")] = "inf",
    split: Annotated[str, typer.Option(help="train or test.")] = "train",
    max_examples: Annotated[int | None, typer.Option(help="Use the first N images.")] = None,
    device: Device = None,
    data_dir: DataDir = None,
    download: Download = False,
) -> None:
    """Distinct-class pair distances of data sets and the curves of the paper's Figs. 1 and 3."""
    from locrob.contract import EvaluationContext
    from locrob.evaluation import make_metrics
    from locrob.pair_distances import Separation
    from locrob.plugins import registries
    from locrob.presentation import save_figure
    from locrob.presentation.separation import robustness_figure
    from locrob.runtime import resolve_device
    from locrob.sources import load_dataset

    # the `separation` metric measures each data set: its default alphas are the table's
    options = {"norm": norm, "split": split, "max_examples": max_examples}
    (metric,) = make_metrics(["separation"], {"separation": options})
    context = EvaluationContext(resolve_device(device))
    results = []
    for spec in dataset or ["digits"]:
        data = load_dataset(spec, data_dir=data_dir, download=download)
        results.append((spec, metric.measure(None, data, context)))  # the model is not used
    report = {spec: result.details for spec, result in results}
    write_text(out / "separation.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    presentation = registries().presentations.get("separation")
    typer.echo(presentation.table(results), nl=False)
    figures = [save_figure(presentation.figure(results), out / "separation-lipschitz.png")]
    for spec, result in results:
        name = spec.replace(":", "_").replace("/", "_")
        fig = robustness_figure(spec, Separation.from_dict(result.details))
        figures.append(save_figure(fig, out / f"separation-robustness-{name}.png"))
    for figure in figures:
        typer.echo(f"figure: {figure}")


@app.command()
def sweep(
    file: Annotated[
        Path | None,
        typer.Argument(help="The sweep's TOML file (models, metrics, out...), if any."),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model specs (instead of the file's).")
    ] = None,
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated metric names (instead of the file's).")
    ] = None,
    option: OptionList = None,
    dataset: Annotated[str | None, typer.Option(help="Data set spec (default: digits).")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Use the first N examples.")] = None,
    device: Device = None,
    data_dir: DataDir = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder of the sweep (overrides the file's).")
    ] = None,
    gpus_per_job: Annotated[
        int | None, typer.Option(help="GPUs per model: one group of that many tasks per job.")
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(help="submitit executor: slurm, local (default: slurm where present)."),
    ] = None,
    timeout_min: Annotated[int, typer.Option(help="Time limit of each job, in minutes.")] = 60,
    partition: Annotated[str | None, typer.Option(help="SLURM partition.")] = None,
) -> None:
    """Evaluate every model of a grid with every metric, one job per model (submitit), skip
    the cells already done, and write the leaderboard over all reports. The grid comes from
    FILE, from the options, or from both (the options win)."""
    from locrob.sweep import load_sweep, run_sweep

    grid = load_sweep(
        file,
        models=comma_list(models) if models else None,
        metrics=comma_list(metrics) if metrics else None,
        options=parse_options(option),
        dataset=dataset,
        max_examples=max_examples,
        device=device,
        data_dir=str(data_dir) if data_dir is not None else None,
        out=out,
        gpus_per_job=gpus_per_job,
    )
    extra = {"slurm_partition": partition} if partition else {}
    result = run_sweep(grid, cluster=cluster, timeout_min=timeout_min, **extra)
    typer.echo(f"ran: {len(result.ran)}, skipped (done before): {len(result.skipped)}")
    for model, cause in result.failed.items():
        typer.echo(f"locrob: failed: {model}: {cause}", err=True)
    if result.leaderboard is not None:
        typer.echo(f"leaderboard: {result.leaderboard}")
    if result.failed:
        raise typer.Exit(1)


bench_app = typer.Typer(help="Speed measured side by side in one run, reported as ratios.")
app.add_typer(bench_app, name="bench")


@bench_app.command("alpha")
def bench_alpha(
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="Architectures to measure (default: linear, small-cnn, preact-resnet18)."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Only this preset (default, paper, authors-code); by default every preset. "
            "Full size on a GPU, scaled down on a CPU; --points, --draws and --radii override."
        ),
    ] = None,
    forward_dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    compile: Annotated[
        str,
        typer.Option(
            help="torch.compile of the forward pass: auto (GPU runs of 1 M images or more), "
            "on, off; the plain inference beside it alike."
        ),
    ] = "auto",
    points: Annotated[int | None, typer.Option(help="Points (with --draws and --radii).")] = None,
    draws: Annotated[int | None, typer.Option(help="Draws per point and radius.")] = None,
    radii: Annotated[int | None, typer.Option(help="Number of radii.")] = None,
    clever_points: Annotated[
        int, typer.Option(help="Points to time ART's clever_u on, beside alpha_lim (0: skip).")
    ] = 1,
    authors_draws: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Draws per point and radius of the authors' loop's timed runs (default: as "
            "--draws; its images/s do not depend on them).",
        ),
    ] = None,
    device: Device = None,
    out: Annotated[Path | None, typer.Option(help="Also write the figures as JSON here.")] = None,
) -> None:
    """alpha_lim estimator throughput vs plain inference, the authors' loop and ART's CLEVER."""
    from locrob.bench.alpha import ALPHA_MODELS, ALPHA_PRESETS, alpha_table
    from locrob.bench.alpha import bench_alpha as run_bench

    given = (points, draws, radii)
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise LocrobError("give --points, --draws and --radii together")
    sizes = (points, draws, radii) if points is not None else None
    presets = ALPHA_PRESETS if preset is None else [None if preset == "default" else preset]
    rows = run_bench(
        model or ALPHA_MODELS,
        device,
        presets,
        forward_dtype,
        sizes,
        clever_points=clever_points,
        compile=compile,
        authors_draws=authors_draws,
        # as it goes: a run cut short keeps them
        report=lambda line: typer.echo(line, err=True),
    )
    typer.echo(alpha_table(rows), nl=False)
    if out is not None:
        write_text(
            out / "bench-alpha.json", json.dumps([r.to_dict() for r in rows], indent=2) + "\n"
        )


@bench_app.command("separation")
def bench_separation(
    images: Annotated[int, typer.Option(help="Random 3x32x32 uint8 images for locrob.")] = 10_000,
    baseline_images: Annotated[
        int, typer.Option(help="Images for the baselines (N^2 memory).")
    ] = 1500,
    device: Device = None,
    out: Annotated[Path | None, typer.Option(help="Also write the figures as JSON here.")] = None,
) -> None:
    """L-inf separation analysis: pairs per second against cdist and broadcasting baselines."""
    from dataclasses import asdict

    from locrob.bench.separation import bench_separation as run_bench
    from locrob.bench.separation import separation_table

    rows = run_bench(images, baseline_images, device)
    typer.echo(separation_table(rows), nl=False)
    if out is not None:
        write_text(
            out / "bench-separation.json", json.dumps([asdict(r) for r in rows], indent=2) + "\n"
        )


@bench_app.command("corruptions")
def bench_corruptions(
    images: Annotated[int, typer.Option(help="Batch of random 3x32x32 images for locrob.")] = 1000,
    reference_images: Annotated[
        int, typer.Option(min=0, help="Images for imagecorruptions (one at a time; 0: skip it).")
    ] = 40,
    corruption: Annotated[
        list[str] | None, typer.Option(help="Corruptions to time (default: all 15).")
    ] = None,
    device: Device = None,
    out: Annotated[Path | None, typer.Option(help="Also write the figures as JSON here.")] = None,
    imagenet_images: Annotated[
        int | None, typer.Option(help="Images for the imagenet preset (default: --images).")
    ] = None,
    imagenet_size: Annotated[
        int, typer.Option(help="Their height and width (224: ImageNet-C's).")
    ] = 32,
    cpu_imagenet_images: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="On a GPU, the CPU's imagenet rates on this many of those images (default: "
            "all; the cifar batch runs whole, as a small one would sit in the CPU's caches).",
        ),
    ] = None,
) -> None:
    """Corrupted images per second, all severities, against the imagecorruptions package (and,
    on a GPU, against the CPU). Each corruption's rates go to stderr as they are measured, and
    to the JSON (rewritten after each), so a run cut short keeps what it measured."""
    from dataclasses import asdict

    from locrob.bench.corruptions import CorruptionBench, corruption_table
    from locrob.bench.corruptions import bench_corruptions as run_bench

    done: list[CorruptionBench] = []

    def measured(row: CorruptionBench) -> None:
        done.append(row)
        if not row.error:  # a failure has said so already
            rates = f"{row.cifar_ips:,.0f} img/s (cifar), {row.imagenet_ips:,.0f} (imagenet)"
            typer.echo(f"{row.corruption}: {rates}", err=True)
        if out is not None:
            data = [{**asdict(r), "speedup": r.speedup} for r in done]
            write_text(out / "bench-corruptions.json", json.dumps(data, indent=2) + "\n")

    rows = run_bench(
        images,
        reference_images,
        device,
        corruption,
        imagenet_images=imagenet_images,
        imagenet_size=imagenet_size,
        cpu_imagenet_images=cpu_imagenet_images,
        on_row=measured,
    )
    typer.echo(corruption_table(rows), nl=False)


@bench_app.command("train")
def bench_train(
    defense: Annotated[
        list[str] | None, typer.Option(help="Defenses to time (default: all built-in).")
    ] = None,
    model: Annotated[str, typer.Option(help="Architecture.")] = "small-cnn",
    steps: Annotated[int, typer.Option(help="Timed steps per defense and round.")] = 20,
    device: Device = None,
) -> None:
    """Training-step time of each defense as a ratio to vanilla, measured side by side."""
    from locrob.bench.train import bench_train as run_bench
    from locrob.bench.train import train_table

    rows = run_bench(defense or ["parseval", "laplacian", "pgd"], model, steps, device=device)
    typer.echo(train_table(rows), nl=False)


@bench_app.command("bound")
def bench_bound(
    points: Annotated[int, typer.Option(help="Digits training images bounded.")] = 10,
    draws: Annotated[int, typer.Option(help="Sampling draws per point and radius.")] = 100,
) -> None:
    """The certified upper bound's seconds per point against sampling and search, and its
    tightness per radius (upper / lower, and the global bound's margin over it)."""
    from locrob.bench.bound import bench_bound as run_bench
    from locrob.bench.bound import bound_table

    typer.echo(bound_table(run_bench(points, draws)), nl=False)


@bench_app.command("kernels")
def bench_kernels(
    kernel: Annotated[
        list[str] | None, typer.Option(help="separation or philox; repeatable (default: both).")
    ] = None,
    features: Annotated[int, typer.Option(help="Bytes (elements) per image row.")] = 3072,
) -> None:
    """The Triton kernels built for an H100/H200 (sm_90) without one: registers, spills and
    the inner loop's instructions per unit of work, from ptxas and the SASS (static)."""
    from locrob.bench.kernels import BENCHES, kernels_table
    from locrob.bench.kernels import bench_kernels as run_bench

    typer.echo(kernels_table(run_bench(kernel or tuple(BENCHES), features)), nl=False)


@bench_app.command("distributed")
def bench_distributed(
    metric: Annotated[
        list[str] | None,
        typer.Option(help="Metrics to time (default: local-robustness, corruptions, separation)."),
    ] = None,
    ranks: Annotated[
        int | None,
        typer.Option(help="Processes of the split run (default: 2 on cpu, every GPU on cuda)."),
    ] = None,
    device: Annotated[
        str, typer.Option(help="cpu (gloo, 1 thread a rank) or cuda (NCCL, 1 GPU a rank).")
    ] = "cpu",
) -> None:
    """One evaluation on 1 process and on N processes of this machine: speed-up, efficiency."""
    from locrob.bench.distributed import CASES, distributed_table
    from locrob.bench.distributed import bench_distributed as run_bench

    unknown = sorted(set(metric or []) - set(CASES))
    if unknown:
        raise LocrobError(f"no distributed benchmark for {unknown}; known: {', '.join(CASES)}")
    typer.echo(distributed_table(run_bench(metric or list(CASES), ranks, device=device)), nl=False)


def version_callback(value: bool) -> None:
    if value:
        from locrob import __version__

        typer.echo(f"locrob {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Local robustness, corruption robustness and defenses for image classifiers."""


@contextmanager
def errors_as_messages(prog: str) -> Iterator[None]:
    """Turn a :class:`LocrobError` raised inside into ``PROG: error: MESSAGE`` on stderr and
    exit status 2, as argparse reports a usage mistake: what ``locrob`` and the example
    scripts print instead of a traceback."""
    try:
        yield
    except LocrobError as err:
        typer.echo(f"{prog}: error: {err}", err=True)
        sys.exit(2)


def one_line_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    """Show a warning as ``locrob: warning: MESSAGE`` (no source file and line: a user of the
    command has nothing to do with them)."""
    typer.echo(f"locrob: warning: {message}", err=True)


def main() -> None:
    """Console entry point: a :class:`LocrobError` or a usage mistake becomes one line on
    stderr and exit status 2, a warning one line too; plain ``locrob`` prints the help."""
    try:
        with warnings.catch_warnings(), errors_as_messages("locrob"):
            warnings.showwarning = one_line_warning  # restored on the way out
            code = app(standalone_mode=False)
    except CLICK_ERROR as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # the help is its message (or printed)
            typer.echo(err.format_message(), nl=False)
            sys.exit(0)
        hint = " (see --help)" if err.exit_code == 2 else ""
        typer.echo(f"locrob: error: {err.format_message()}{hint}", err=True)
        sys.exit(err.exit_code)
    except typer.Abort:
        typer.echo("locrob: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
