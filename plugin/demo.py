"""``locrob demo``: the paper's study end to end, on the embedded digits by default.

Trains the six models the paper compares (Vanilla, Parseval, Laplacian, Parseval+Laplacian,
L2NN, PGD adversarial training), evaluates each with the built-in metrics (clean, Gaussian
noise over SNR, the 15 corruptions, PGD, α_lim curves), runs the separation analysis of the
data, and writes ``report.md`` (a Table 2 analogue), ``report.json`` and the figures of
Figs. 1-5. Trained models are kept under ``DIR/models`` and reused by a rerun.
``examples/reproduce_cifar10.py`` runs the same study at the paper's scale on CIFAR-10.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from locrob import markdown, plugins
from locrob.atomic import write_text
from locrob.contract import MetricResult, TrainConfig
from locrob.data.images import ImageData
from locrob.errors import LocrobError
from locrob.evaluation import evaluate
from locrob.metrics.adversarial import AdversarialAccuracy, attack_label
from locrob.metrics.corruptions import relative_mce
from locrob.metrics.local_robustness import alpha_key, alpha_side
from locrob.metrics.noise import accuracy_key
from locrob.pair_distances import Separation, separation
from locrob.presentation import labelled_results, save_figure
from locrob.presentation.paper import sigmoid_figure
from locrob.presentation.separation import lipschitz_figure, robustness_figure
from locrob.report import Report
from locrob.sources import load_dataset
from locrob.training import train

# the paper's methods: (architecture, defenses); L2NN has its own architecture
RUNS = {
    "vanilla": ("small-cnn", []),
    "parseval": ("small-cnn", ["parseval"]),
    "laplacian": ("small-cnn", ["laplacian"]),
    "parseval+laplacian": ("small-cnn", ["parseval", "laplacian"]),
    "l2nn": ("l2nn", ["l2nn"]),
    "pgd": ("small-cnn", ["pgd"]),
}
PGD_LINF = {"attack": "PGD", "eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "random_start": True}
PGD_COLUMN = attack_label(PGD_LINF)  # the adversarial metric's own name for it
FIGURES = {
    "local-robustness": "fig5-alpha-lim.png",
    "noise": "fig4-noise.png",
    "corruptions": "corruptions-heatmap.png",
}


@dataclass
class DemoConfig:
    """How big the demo runs (the defaults take a few minutes on 2 CPU cores)."""

    dataset: str = "digits"
    data_dir: str | None = None
    architecture: str = "small-cnn"  # for every run but L2NN, which has its own
    epochs: int = 10
    lr: float = TrainConfig.lr
    defense_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[str] = field(default_factory=lambda: list(RUNS))
    max_examples: int | None = None  # test images evaluated (None: all)
    alpha_points: int = 50
    alpha_draws: int = 100
    alpha_radii: list[float] = field(default_factory=lambda: [0.125 * k for k in range(1, 15)])
    corruption_severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    corruption_source: str = "generate"  # or "cifar10-c": the published files in data_dir
    # each model is trained and evaluated once per seed; the table gives mean ± std over them
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])

    def metrics(self) -> tuple[list[Any], dict[str, dict[str, Any]]]:
        """The metrics evaluated on every model, and their options."""
        options = {
            "local-robustness": {
                "max_examples": self.alpha_points,
                "n_draws": self.alpha_draws,
                "radii": self.alpha_radii,
                "at": [0.25, 0.5, 1.0],
                "bound": True,  # Fig. 5's band: the certified upper side
            },
            "corruptions": {
                "severities": self.corruption_severities,
                "source": self.corruption_source,
                "data_dir": self.data_dir or "data",
            },
        }
        metrics = ["clean", "noise", "corruptions", AdversarialAccuracy(attacks=[PGD_LINF])]
        return [*metrics, "local-robustness"], options


def trained_model(
    name: str, data: ImageData, config: DemoConfig, seed: int, out: Path, device: str | None
) -> nn.Module:
    """The model of run ``name`` trained from ``seed``: reused from ``out/model.pt`` when that
    run is complete."""
    architecture, defenses = RUNS[name]
    if architecture == "small-cnn":
        architecture = config.architecture
    settings = TrainConfig(epochs=config.epochs, lr=config.lr, seed=seed)
    options = {d: config.defense_options[d] for d in defenses if d in config.defense_options}
    run = {"defenses": defenses, "defense_options": options, "config": settings, "out": out}
    if (out / "model.pt").is_file():
        try:
            return train(architecture, data, **run, resume=True, device=device).model
        except LocrobError:  # saved with other settings: train again
            pass
    return train(architecture, data, **run, device=device).model


def sigmoid_curve() -> tuple[list[float], list[float]]:
    """Fig. 2's data: radii and α_lim(σ, r) of the sigmoid over R = {-10, 10}."""
    from locrob.alpha.estimate import alpha_lim

    radii = torch.linspace(0.25, 30, 120, dtype=torch.float64).tolist()
    points = torch.tensor([-10.0, 10.0], dtype=torch.float64).view(2, 1, 1, 1)
    curve = alpha_lim(
        lambda x: torch.sigmoid(x.flatten(1)),
        points,
        radii,
        n_draws=16,
        output="logits",
        clamp=None,
        device="cpu",
    ).curve
    return radii, curve.tolist()


COLUMNS = [
    "clean error",
    "corrupted error",
    "relative mCE",
    "PGD 8/255 accuracy",
    "noise accuracy at 0 dB",
    "α_lim at r = 0.5",
    "α_lim at r = 1",
]


def row(report: Report, vanilla: Report) -> dict[str, float | None]:
    """One model's Table 2 values (errors and accuracies in percent), relative mCE against
    ``vanilla`` trained from the same seed; None where a value does not exist."""
    m = report.metrics
    corr, alpha = m["corruptions"].summary, m["local-robustness"].summary
    noise = m["noise"].summary.get(accuracy_key(0))
    try:
        relative: float | None = relative_mce(m["corruptions"], vanilla.metrics["corruptions"])
    except LocrobError:  # vanilla lost nothing to corruption: no reference to divide by
        relative = None
    values = [
        100 * corr["clean_error"],
        100 * corr["corruption_error"],
        relative,
        100 * m["adversarial"].summary[PGD_COLUMN],
        None if noise is None else 100 * noise,
        alpha[alpha_key(0.5)],
        alpha[alpha_key(1)],
    ]
    return dict(zip(COLUMNS, values, strict=True))


def spread(values: list[float | None]) -> dict[str, Any] | None:
    """Mean and sample standard deviation over seeds (std 0 for one seed); None if any is."""
    if any(v is None for v in values):
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def summarize(runs: dict[str, list[Report]]) -> dict[str, dict[str, dict[str, Any] | None]]:
    """Per model and column, the mean ± std over seeds of :func:`row` (seed k's model against
    vanilla's seed k)."""
    summary = {}
    for name, reports in runs.items():
        rows = [row(r, v) for r, v in zip(reports, runs["vanilla"], strict=True)]
        summary[name] = {column: spread([r[column] for r in rows]) for column in COLUMNS}
    return summary


def seeds_note(seeds: list[int]) -> str:
    """How to read the table's cells for these seeds."""
    if len(seeds) == 1:
        return (
            f"One seed ({seeds[0]}): no spread measured, so no difference in the table is "
            "known to be more than seed noise; give several seeds to measure it."
        )
    return (
        f"Each model trained and evaluated from seeds {', '.join(map(str, seeds))}; each cell "
        "is the mean ± the standard deviation over them (n - 1 in the denominator). A "
        "difference between two models smaller than their two standard deviations added is "
        "not a finding. The figures show the means."
    )


def table(summary: dict[str, dict[str, dict[str, Any] | None]]) -> str:
    """The Table 2 analogue as Markdown: mean ± std over seeds per cell."""

    def cell(value: dict[str, Any] | None, column: str) -> str:
        if value is None:
            return "n/a"
        digits = 4 if column.startswith("α_lim") else 0 if column == "relative mCE" else 1
        mean, std = (f"{value[k]:.{digits}f}" for k in ("mean", "std"))
        return mean if len(value["values"]) == 1 else f"{mean} ± {std}"

    rows = [[name, *(cell(columns[c], c) for c in COLUMNS)] for name, columns in summary.items()]
    return markdown.table(["model", *COLUMNS], rows)


def mean_result(results: list[MetricResult]) -> MetricResult:
    """The seeds' results of one metric averaged number by number (summary and details,
    lists element by element), for the figures; a number equal at every seed, and anything
    not a number, is the first seed's."""

    def mean(values: list[Any]) -> Any:
        first = values[0]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            # the same at every seed (a count, a size): kept as it is
            return first if all(v == first for v in values) else sum(values) / len(values)
        if not all(type(v) is type(first) for v in values):
            return first
        if isinstance(first, dict) and all(v.keys() == first.keys() for v in values):
            return {k: mean([v[k] for v in values]) for k in first}
        if isinstance(first, list) and all(len(v) == len(first) for v in values):
            return [mean(list(items)) for items in zip(*values, strict=True)]
        return first

    first = results[0]
    return MetricResult(
        first.name,
        mean([r.summary for r in results]),
        mean([r.details for r in results]),
        first.settings,
        first.split,
    )


def run_demo(
    out: str | Path, config: DemoConfig | None = None, device: str | None = None
) -> list[Path]:
    """Run the whole study into ``out``; returns the files written."""
    config = config or DemoConfig()
    _check(config)
    out = Path(out)
    data = load_dataset(config.dataset, data_dir=config.data_dir)
    runs = _run_all(out, data, config, device)
    x, y = data.split("train")
    sep = separation(x, y, "inf", device=device)
    reports = [_mean_report(group) for group in runs.values()]
    written = _figures(out, data, reports, sep)
    summary = summarize(runs)
    written.append(
        write_text(out / "report.md", _markdown(data, config, reports, summary, sep, written))
    )
    record = {
        "schema": "locrob-demo",
        "schema_version": 2,
        "config": asdict(config),
        "table": summary,
        "models": {
            name: {str(seed): r.to_dict() for seed, r in zip(config.seeds, group, strict=True)}
            for name, group in runs.items()
        },
        "separation": sep.to_dict(),
    }
    written.append(write_text(out / "report.json", json.dumps(record, indent=2) + "\n"))
    return written


def _check(config: DemoConfig) -> None:
    """Refuse runs the demo does not know, a first run other than vanilla, repeated seeds."""
    unknown = sorted(set(config.runs) - set(RUNS))
    if unknown:
        raise LocrobError(f"unknown demo run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    if config.runs[0] != "vanilla":
        raise LocrobError("the demo's first run must be 'vanilla': Table 2 is relative to it")
    if not config.seeds or len(set(config.seeds)) != len(config.seeds):
        raise LocrobError(f"the demo needs one or more distinct seeds, got {config.seeds}")


def _run_all(
    out: Path, data: ImageData, config: DemoConfig, device: str | None
) -> dict[str, list[Report]]:
    """Every run at every seed trained (or reused) and evaluated; its report saved."""
    metrics, options = config.metrics()
    runs: dict[str, list[Report]] = {}
    for name in config.runs:
        for seed in config.seeds:
            where = f"{name}/seed-{seed}"
            model = trained_model(name, data, config, seed, out / "models" / where, device)
            report = evaluate(
                model,
                data,
                metrics,
                metric_options=options,
                name=name,
                max_examples=config.max_examples,
                device=device,
                seed=seed,
            )
            report.save(out / "reports" / where)
            runs.setdefault(name, []).append(report)
    return runs


def _mean_report(group: list[Report]) -> Report:
    """One model's report with each metric averaged over the seeds (what the figures show)."""
    names = list(group[0].metrics)
    return replace(group[0], metrics={m: mean_result([g.metrics[m] for g in group]) for m in names})


def _figures(out: Path, data: ImageData, reports: list[Report], sep: Separation) -> list[Path]:
    """Figs. 1-5 and the corruption heat map."""
    presentations = plugins.registries().presentations
    written = [save_figure(sigmoid_figure(*sigmoid_curve()), out / "fig2-sigmoid.png")]
    for metric, labelled in labelled_results(reports).items():
        if metric in FIGURES:
            fig = presentations.get(metric).figure(labelled)
            written.append(save_figure(fig, out / FIGURES[metric]))
    written.append(save_figure(lipschitz_figure([(data.name, sep)]), out / "fig1-separation.png"))
    written.append(
        save_figure(robustness_figure(data.name, sep), out / "fig3-separation-robustness.png")
    )
    return written


def _markdown(
    data: ImageData,
    config: DemoConfig,
    reports: list[Report],
    summary: dict[str, dict[str, dict[str, Any] | None]],
    sep: Separation,
    figures: list[Path],
) -> str:
    """``report.md``: the setting, Table 2 over the seeds, the data's separation, the figures."""
    return "\n".join(
        [
            f"# locrob demo: the paper's study on {data.name}",
            "",
            f"{len(reports)} models, {config.epochs} epochs each; {reports[0].n_examples} test "
            f"images. {seeds_note(config.seeds)} Errors and accuracies in percent; relative "
            "mCE = 100 (corrupted - clean) / (the same for vanilla of the same seed), Table 2's "
            "formula.",
            "",
            table(summary),
            f"Distinct-class training pairs: {sep.n_pairs}; the closest pair is "
            f"{sep.min_distance():.3g} apart in L∞ (pixels in [0, 1]).",
            "",
            _band_note(reports),
            "",
            "Figures: " + ", ".join(p.name for p in figures),
            "",
        ]
    )


def _band_note(reports: list[Report]) -> str:
    """What Fig. 5's band reaches: each model's certified upper bound at the largest radius
    of the summary, beside the sampled lower value, and whether it is the global bound."""
    results = [(r.label, r.metrics["local-robustness"]) for r in reports]
    sides = filter(None, map(alpha_side, results[0][1].summary))
    at = max(r for side, r in sides if side == "alpha_upper")
    cells = ", ".join(
        f"{name} {m.summary[alpha_key(at)]:.3g}–{m.summary[alpha_key(at, 'alpha_upper')]:.3g}"
        for name, m in results
    )
    upper = [m.details["upper"] for _, m in results]
    globals_only = all(u["curve"][0] >= u["global_bound"] * (1 - 1e-9) for u in upper)
    return (
        f"α_lim at r = {at:g} from both sides (sampled lower value – certified upper bound, "
        f"Fig. 5's line and band): {cells}."
        + (
            " At these radii every upper curve is the product of the layers' norms (the local"
            " bound is larger; README, 'Both sides')."
            if globals_only
            else ""
        )
    )
