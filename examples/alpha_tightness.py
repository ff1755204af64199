"""How tight are alpha_lim's lower bounds? Sampling and search against the truth where known.

For a linear map F(x) = Wx (no clamp, L2) alpha_lim = sigma_max(W) at every radius. Random
directions find only about sqrt(rank / dimension) of it: a good part in 16 dimensions, about
a tenth at CIFAR's 3072. The search (projected gradient ascent) reaches it. For a trained
small-cnn the truth is unknown; the table shows how far apart the two lower bounds are.

    python examples/alpha_tightness.py            # the README's table (about a minute)
    python examples/alpha_tightness.py --quick    # small sizes, for a smoke test
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import locrob
from locrob.cli import errors_as_messages


def linear_map(inputs: int, outputs: int, seed: int = 0) -> tuple[nn.Module, float]:
    """A random linear map on 1 x 1 x inputs images, in fp64, and its sigma_max."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(inputs, outputs, bias=False)).double()
    return model, float(torch.linalg.matrix_norm(model[1].weight.detach(), 2))


def row(
    name: str,
    estimate: Callable[..., locrob.AlphaResult],
    draws: list[int],
    truth: float | None,
) -> list[str]:
    """One table row: sampling at each draw count, then the search; as fractions of the truth."""
    values = [float(estimate(method="sample", n_draws=n).curve[-1]) for n in draws]
    values.append(float(estimate(method="search", n_draws=draws[0]).curve[-1]))

    def cell(v: float) -> str:
        return f"{v:.4g}" if truth is None else f"{v:.4g} ({v / truth:.0%})"

    return [name, "unknown" if truth is None else f"{truth:.4g}", *map(cell, values)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and 1 training epoch (a smoke test)"
    )
    args = parser.parse_args(argv)
    draws = [10, 30] if args.quick else [100, 1000]
    n_points = 4 if args.quick else 20
    rows = []
    for inputs in (16, 3 * 32 * 32):
        model, sigma = linear_map(inputs, 10)
        x = torch.randn(n_points, 1, 1, inputs, dtype=torch.float64)

        def linear(model=model, x=x, **options):
            return locrob.alpha_lim(
                model, x, [1.0], output="logits", clamp=None, device="cpu", **options
            )

        rows.append(row(f"linear map, {inputs} -> 10", linear, draws, sigma))
    data = locrob.load_dataset("digits")
    config = locrob.TrainConfig(epochs=1 if args.quick else 4, seed=0)
    cnn = locrob.train("small-cnn", data, config=config).model.eval()
    for r in (0.5, 1.0):

        def small_cnn(r=r, **options):
            return locrob.alpha_lim(cnn, data.train_x[:n_points], [r], device="cpu", **options)

        rows.append(row(f"small-cnn on digits, softmax, r = {r:g}", small_cnn, draws, None))
    header = ["F", "alpha_lim", *[f"sampling, {n} draws" for n in draws], "search"]
    print(f"{n_points} points; alpha_lim at one radius; (fraction of the truth)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    with errors_as_messages(Path(__file__).name):
        main()
