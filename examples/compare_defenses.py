"""Train each defense with its defaults on a data set and compare clean and PGD accuracy.

    python examples/compare_defenses.py                # digits, small-cnn, 10 epochs each
    python examples/compare_defenses.py --epochs 20 --device cuda

PGD: L-inf, eps 8/255, step 2/255, 10 steps, random start, through the ``adversarial``
metric (torchattacks), on the test split. L2NN trains its own architecture (``--model l2nn``),
the others small-cnn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import locrob
from locrob.cli import errors_as_messages
from locrob.demo import PGD_COLUMN, PGD_LINF, RUNS
from locrob.metrics.adversarial import AdversarialAccuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="digits", help="data set spec: digits, cifar10, npz:<path>, ..."
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=locrob.TrainConfig.epochs,
        help="training epochs per defense (default: %(default)s)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)"
    )
    args = parser.parse_args(argv)

    data = locrob.load_dataset(args.data)
    config = locrob.TrainConfig(epochs=args.epochs)
    print("| defense | model | train (s) | clean | PGD 8/255 |")
    print("|---|---|---|---|---|")
    for name, (model, defenses) in RUNS.items():
        result = locrob.train(model, data, defenses=defenses, config=config, device=args.device)
        metrics = ["clean", AdversarialAccuracy(attacks=[PGD_LINF])]
        report = locrob.evaluate(result.model, data, metrics, batch_size=500, device=args.device)
        clean = report.metrics["clean"].summary["accuracy"]
        robust = report.metrics["adversarial"].summary[PGD_COLUMN]
        print(
            f"| {name} | {model} | {result.seconds:.1f} | {100 * clean:.1f} % "
            f"| {100 * robust:.1f} % |",
            flush=True,
        )


if __name__ == "__main__":
    with errors_as_messages(Path(__file__).name):
        main()
