"""Train each defense with its defaults on a data set and compare clean and PGD accuracy.

    python examples/compare_defenses.py                # digits, small-cnn, 10 epochs each
    python examples/compare_defenses.py --epochs 20 --device cuda

PGD: L-inf, eps 8/255, step 2/255, 10 steps, through locrob's torchattacks adapter, on the
test split. L2NN trains its own architecture (``--model l2nn``), the others small-cnn.
"""

from __future__ import annotations

import argparse

import torch

import locrob
from locrob.adapters.torchattacks import pgd, run_attack
from locrob.data.images import batches
from locrob.runtime import eval_mode, resolve_device

RUNS = {
    "vanilla": ("small-cnn", []),
    "parseval": ("small-cnn", ["parseval"]),
    "laplacian": ("small-cnn", ["laplacian"]),
    "parseval+laplacian": ("small-cnn", ["parseval", "laplacian"]),
    "l2nn": ("l2nn", ["l2nn"]),
    "pgd": ("small-cnn", ["pgd"]),
}


def accuracies(model: torch.nn.Module, data: locrob.ImageData, device: torch.device) -> tuple:
    """Clean and PGD accuracy on the test split."""
    attack = pgd(model, 8 / 255, 2 / 255, 10, "inf")
    clean = robust = 0
    x_test, y_test = data.split("test")
    with eval_mode(model):
        for x, y in batches(x_test, y_test, 500, device):
            with torch.no_grad():
                clean += int(model(x).argmax(1).eq(y).sum())
            adversarial = run_attack(attack, x, y)
            with torch.no_grad():
                robust += int(model(adversarial).argmax(1).eq(y).sum())
    return clean / len(y_test), robust / len(y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=locrob.TrainConfig.epochs)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    data = locrob.load_dataset(args.data)
    device = resolve_device(args.device)
    config = locrob.TrainConfig(epochs=args.epochs)
    print("| defense | model | train (s) | clean | PGD 8/255 |")
    print("|---|---|---|---|---|")
    for name, (model, defenses) in RUNS.items():
        result = locrob.train(model, data, defenses=defenses, config=config, device=device)
        clean, robust = accuracies(result.model, data, device)
        print(
            f"| {name} | {model} | {result.seconds:.1f} | {100 * clean:.1f} % "
            f"| {100 * robust:.1f} % |",
            flush=True,
        )


if __name__ == "__main__":
    main()
