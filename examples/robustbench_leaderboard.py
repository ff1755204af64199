"""RobustBench zoo models evaluated alongside RobustBench itself, ranked in one leaderboard.

    python examples/robustbench_leaderboard.py --model-dir models --data-dir data \\
        --out runs/zoo Wong2020Fast Ding2020MMA Andriushchenko2020Understanding

Each model is loaded through the ``robustbench:`` model source (checkpoints in
``models/cifar10/Linf/<name>.pt``; ``--download`` lets RobustBench fetch missing ones), then
:func:`locrob.adapters.benchmark.benchmark_alongside` measures RobustBench's clean and
AutoAttack accuracy and locrob's metrics on the same first ``--max-examples`` test images.
``leaderboard.md`` and ``leaderboard.html`` rank them by AutoAttack accuracy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import locrob
from locrob.adapters.benchmark import benchmark_alongside
from locrob.atomic import write_text
from locrob.cli import errors_as_messages
from locrob.leaderboard import leaderboard_html, leaderboard_markdown

# small CIFAR-10 Linf entries of the zoo (5.8 M to 11 M weights)
DEFAULT_MODELS = ["Ding2020MMA", "Wong2020Fast", "Andriushchenko2020Understanding"]
SORT = "robustbench autoattack_accuracy"


def main(argv: list[str] | None = None) -> list[locrob.Report]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models",
        nargs="*",
        default=DEFAULT_MODELS,
        help=f"CIFAR-10 zoo model names (default: {' '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--threat-model", default="Linf", choices=["Linf", "L2"], help="the zoo's threat model"
    )
    parser.add_argument(
        "--eps", type=float, default=8 / 255, help="AutoAttack's radius (default: 8/255)"
    )
    parser.add_argument(
        "--max-examples", type=int, default=100, help="first test images used (default: 100)"
    )
    parser.add_argument(
        "--metrics",
        default="clean,local-robustness",
        help="comma-separated locrob metrics (default: %(default)s)",
    )
    parser.add_argument(
        "--model-dir",
        default="models",
        help="folder holding cifar10/<threat model>/<name>.pt (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default="data",
        help="folder holding cifar-10-batches-py/ (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default="runs/zoo", help="folder for the reports and the leaderboard"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)"
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let RobustBench fetch missing checkpoints and torchvision CIFAR-10",
    )
    args = parser.parse_args(argv)

    out, reports = Path(args.out), []
    for name in args.models:
        spec = f"robustbench:cifar10/{args.threat_model}/{name}"
        model = locrob.load_model(spec, model_dir=args.model_dir, download=args.download)
        report = benchmark_alongside(
            model,
            args.metrics.split(","),
            threat_model=args.threat_model,
            eps=args.eps,
            max_examples=args.max_examples,
            data_dir=args.data_dir,
            device=args.device,
            name=name,
            download=args.download,
        )
        report.model["spec"] = spec
        report.save(out / name)
        reports.append(report)
    table = leaderboard_markdown(reports, SORT)
    write_text(out / "leaderboard.md", table)
    write_text(out / "leaderboard.html", leaderboard_html(reports, SORT))
    print(table, end="")
    return reports


if __name__ == "__main__":
    with errors_as_messages(Path(__file__).name):
        main()
