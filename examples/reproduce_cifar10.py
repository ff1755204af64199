"""The paper's study at full scale on CIFAR-10: PreActResNet18, the authors' recipe, all six
methods, CIFAR-10-C, α_lim with the paper's protocol. A GPU run; hours on one.

    python examples/reproduce_cifar10.py --data-dir data --out runs/cifar10 --device cuda

``data/cifar-10-batches-py/`` is torchvision's CIFAR-10 (``--download`` fetches it);
``data/CIFAR-10-C/`` holds the published corruption files (https://zenodo.org/record/2535967);
without them the 15 corruptions are generated with the ``cifar`` preset. Settings:
``TrainConfig.authors()`` (100 epochs, SGD lr 0.1 dropped x0.01 at epoch 50, batch 100, no
augmentation), the Laplacian's gamma 0.01 (the authors'), α_lim on 100 training points x 1000
Gaussian draws at r = 1.75 k / 30, k = 1..30 (the paper's text). Rerunning reuses the trained
models in ``OUT/models``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import locrob
from locrob.cli import errors_as_messages
from locrob.demo import RUNS, DemoConfig, run_demo


def config(args: argparse.Namespace) -> DemoConfig:
    """The paper's protocol, with the sizes the command line asks for."""
    authors = locrob.TrainConfig.authors()
    files = Path(args.data_dir) / "CIFAR-10-C"
    return DemoConfig(
        dataset="cifar10",
        data_dir=args.data_dir,
        architecture="preact-resnet18",
        epochs=args.epochs,
        lr=authors.lr,
        defense_options={"laplacian": {"gamma": 0.01}},
        runs=args.runs,
        max_examples=args.max_examples,
        alpha_points=args.alpha_points,
        alpha_draws=args.alpha_draws,
        alpha_radii=[1.75 * k / 30 for k in range(1, 31)],
        corruption_source="cifar10-c" if files.is_dir() else "generate",
        seeds=args.seeds,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default="data",
        help="folder holding cifar-10-batches-py/ and, optionally, CIFAR-10-C/",
    )
    parser.add_argument(
        "--out", default="runs/cifar10", help="folder for the models, reports and figures"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=locrob.TrainConfig.authors().epochs,
        help="training epochs per model (default: the authors' %(default)s)",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        default=list(RUNS),
        choices=list(RUNS),
        metavar="RUN",
        help=f"the models to train and compare, vanilla first: {', '.join(RUNS)} (default: all)",
    )
    parser.add_argument(
        "--max-examples", type=int, default=None, help="test images evaluated (default: all)"
    )
    parser.add_argument(
        "--alpha-points",
        type=int,
        default=100,
        help="training points alpha_lim is measured on (default: %(default)s)",
    )
    parser.add_argument(
        "--alpha-draws",
        type=int,
        default=1000,
        help="Gaussian draws per point and radius (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        metavar="SEED",
        help="train and evaluate each model from these seeds; the table gives mean ± std "
        "over them (default: %(default)s; the digits demo uses 0 1 2)",
    )
    parser.add_argument("--download", action="store_true", help="let torchvision fetch CIFAR-10")
    args = parser.parse_args(argv)
    if args.download:
        locrob.load_dataset("cifar10", data_dir=args.data_dir, download=True)
    run_demo(args.out, config(args), args.device)
    print((Path(args.out) / "report.md").read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    with errors_as_messages(Path(__file__).name):
        main()
