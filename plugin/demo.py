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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from locrob import plugins
from locrob.atomic import write_text
from locrob.data.images import ImageData
from locrob.errors import LocrobError
from locrob.evaluation import evaluate
from locrob.metrics.adversarial import AdversarialAccuracy
from locrob.metrics.corruptions import relative_mce
from locrob.pair_distances import lipschitz_figure, robustness_figure, separation
from locrob.plots import labelled_results, save_figure
from locrob.report import Report
from locrob.sources import load_dataset
from locrob.training import TrainConfig, train

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
PGD_COLUMN = "PGD@0.03137"
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
    seed: int = 0

    def metrics(self) -> tuple[list[Any], dict[str, dict[str, Any]]]:
        """The metrics evaluated on every model, and their options."""
        options = {
            "local-robustness": {
                "n_points": self.alpha_points,
                "n_draws": self.alpha_draws,
                "radii": self.alpha_radii,
                "at": [0.25, 0.5, 1.0],
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
    name: str, data: ImageData, config: DemoConfig, out: Path, device: str | None
) -> nn.Module:
    """The model of run ``name``: reused from ``out/model.pt`` when that run is complete."""
    architecture, defenses = RUNS[name]
    if architecture == "small-cnn":
        architecture = config.architecture
    settings = TrainConfig(epochs=config.epochs, lr=config.lr, seed=config.seed)
    options = {d: config.defense_options[d] for d in defenses if d in config.defense_options}
    run = {"defenses": defenses, "defense_options": options, "config": settings, "out": out}
    if (out / "model.pt").is_file():
        try:
            return train(architecture, data, **run, resume=True, device=device).model
        except LocrobError:  # saved with other settings: train again
            pass
    return train(architecture, data, **run, device=device).model


def sigmoid_figure() -> Figure:
    """Fig. 2: α_lim(σ, r) of the sigmoid over R = {-10, 10}, and a mediator-hyperplane
    classifier that is 0-robust up to half the distance between its two points."""
    from matplotlib.figure import Figure

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
    fig = Figure(figsize=(9.0, 3.4))
    left, right = fig.subplots(1, 2)
    left.plot(radii, curve.tolist())
    left.set_xlabel("r")
    left.set_ylabel("α_lim(σ, r)")
    left.set_title("sigmoid, R = {-10, 10} (paper, Fig. 2 left)", fontsize=9)
    left.grid(alpha=0.3)
    grid = torch.linspace(-0.5, 1.5, 801)
    right.plot(grid, (grid > 0.5).float(), label="F: mediator hyperplane at 1/2")
    right.plot([0, 1], [0, 1], "o", color="black", label="training points 0 and 1")
    for point in (0.0, 1.0):
        right.axvspan(point - 0.5, point + 0.5, alpha=0.08, color="tab:green")
    right.set_title("α_lim(F, 1/2) = 0, yet F is not Lipschitz (Fig. 2 right)", fontsize=9)
    right.set_xlabel("x")
    right.legend(fontsize=7)
    return fig


def table(reports: list[Report]) -> str:
    """The Table 2 analogue: errors in percent, relative mCE against the first model."""
    vanilla = reports[0].metrics["corruptions"]
    lines = [
        "| model | clean error | corrupted error | relative mCE | PGD 8/255 accuracy "
        "| noise accuracy at 0 dB | α_lim at r = 0.5 | α_lim at r = 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        m = report.metrics
        corr, alpha = m["corruptions"].summary, m["local-robustness"].summary
        noise = m["noise"].summary.get("accuracy@0dB")
        try:
            relative = f"{relative_mce(m['corruptions'], vanilla):.0f}"
        except LocrobError:  # vanilla lost nothing to corruption: no reference to divide by
            relative = "n/a"
        lines.append(
            f"| {report.label} | {100 * corr['clean_error']:.1f} "
            f"| {100 * corr['corruption_error']:.1f} | {relative} "
            f"| {100 * m['adversarial'].summary[PGD_COLUMN]:.1f} "
            f"| {'' if noise is None else f'{100 * noise:.1f}'} "
            f"| {alpha['alpha@0.5']:.3g} | {alpha['alpha@1']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def run_demo(
    out: str | Path, config: DemoConfig | None = None, device: str | None = None
) -> list[Path]:
    """Run the whole study into ``out``; returns the files written."""
    config = config or DemoConfig()
    unknown = sorted(set(config.runs) - set(RUNS))
    if unknown:
        raise LocrobError(f"unknown demo run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    if config.runs[0] != "vanilla":
        raise LocrobError("the demo's first run must be 'vanilla': Table 2 is relative to it")
    out = Path(out)
    data = load_dataset(config.dataset, data_dir=config.data_dir)
    metrics, options = config.metrics()
    reports = []
    for name in config.runs:
        model = trained_model(name, data, config, out / "models" / name, device)
        report = evaluate(
            model,
            data,
            metrics,
            metric_options=options,
            name=name,
            max_examples=config.max_examples,
            device=device,
            seed=config.seed,
        )
        report.save(out / "reports" / name)
        reports.append(report)

    registry = plugins.registries().metrics
    written = [save_figure(sigmoid_figure(), out / "fig2-sigmoid.png")]
    for metric, labelled in labelled_results(reports).items():
        if metric in FIGURES:
            written.append(save_figure(registry.get(metric).plot(labelled), out / FIGURES[metric]))
    x, y = data.split("train")
    sep = separation(x, y, "inf", device=device)
    written.append(save_figure(lipschitz_figure([(data.name, sep)]), out / "fig1-separation.png"))
    written.append(
        save_figure(robustness_figure(data.name, sep), out / "fig3-separation-robustness.png")
    )
    markdown = "\n".join(
        [
            f"# locrob demo: the paper's study on {data.name}",
            "",
            f"{len(reports)} models, {config.epochs} epochs each; {reports[0].n_examples} test "
            "images. Errors and accuracies in percent; relative mCE = 100 (corrupted - clean) / "
            "(the same for vanilla), Table 2's formula.",
            "",
            table(reports),
            f"Distinct-class training pairs: {sep.n_pairs}; the closest pair is "
            f"{sep.min_distance():.3g} apart in L∞ (pixels in [0, 1]).",
            "",
            "Figures: " + ", ".join(p.name for p in written),
            "",
        ]
    )
    written.append(write_text(out / "report.md", markdown))
    summary = {
        "schema": "locrob-demo",
        "config": asdict(config),
        "models": {r.label: r.to_dict() for r in reports},
        "separation": sep.to_dict(),
    }
    written.append(write_text(out / "report.json", json.dumps(summary, indent=2) + "\n"))
    return written
