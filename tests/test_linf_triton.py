"""The Triton kernel of the uint8 L-inf separation histogram, run on the CPU by Triton's
interpreter: exact against brute force, and the same Separation as the other kernels."""

from __future__ import annotations

import os
from importlib.util import find_spec

import pytest
import torch
from conftest import run_in_triton_interpreter

from locrob.pair_distances import separation, triton_exact


def _brute(a, b, la, lb, classes, diagonal):
    """Counts at (lower class, higher class, distance) of every distinct-class pair."""
    levels = (a[:, None, :].int() - b[None, :, :].int()).abs().amax(-1)
    out = torch.zeros(classes * classes * 256, dtype=torch.long)
    for i in range(len(a)):
        for j in range(len(b)):
            if (not diagonal or j > i) and la[i] != lb[j]:
                low, high = sorted((int(la[i]), int(lb[j])))
                out[(low * classes + high) * 256 + levels[i, j]] += 1
    return out


def check_in_interpreter() -> None:
    """Run with TRITON_INTERPRET=1 set before anything imports Triton (its interpreter replaces
    triton.language's own functions only then)."""
    from locrob import linf_triton

    assert linf_triton.usable(torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    # odd sizes (masked block edges), more features than a slice, bytes 0 and 255
    for n_a, n_b, features, classes, diagonal in [
        (37, 37, 50, 4, True),
        (20, 33, 7, 3, False),
        (17, 17, 3, 2, True),
    ]:
        a = torch.randint(0, 256, (n_a, features), dtype=torch.uint8, generator=g)
        a[0, -1], a[-1, 0] = 0, 255
        b = (
            a
            if diagonal
            else torch.randint(0, 256, (n_b, features), dtype=torch.uint8, generator=g)
        )
        la = torch.randint(0, classes, (n_a,), generator=g)
        lb = la if diagonal else torch.randint(0, classes, (n_b,), generator=g)
        out = torch.zeros(classes * classes * 256, dtype=torch.long)
        linf_triton.add_tile(a, b, la, lb, classes, out, diagonal)
        assert torch.equal(out, _brute(a, b, la, lb, classes, diagonal)), (n_a, n_b, diagonal)
    x = torch.randint(0, 256, (70, 1, 5, 7), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (70,), generator=g)
    assert triton_exact(torch.device("cpu"), 35)
    found = separation(x, y, tile=32)  # one tile of 70 rows: its diagonal blocks and the rest
    os.environ["LOCROB_TRITON"] = "0"
    assert not triton_exact(torch.device("cpu"), 35)
    reference = separation(x, y, tile=32)
    assert torch.equal(found.counts, reference.counts)
    assert torch.equal(found.pair_counts, reference.pair_counts)
    assert found.n_pairs == int((y[:, None] != y[None, :]).triu(1).sum())


@pytest.mark.skipif(find_spec("triton") is None, reason="Triton is not installed")
def test_the_triton_kernel_is_exact_in_the_interpreter():
    run_in_triton_interpreter("test_linf_triton", "check_in_interpreter")


def test_without_a_device_for_it_the_other_kernels_measure(monkeypatch):
    """On a CPU without the interpreter the Triton kernel is not taken (nor built)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not triton_exact(torch.device("cpu"), 35)
    monkeypatch.setenv("LOCROB_TRITON", "0")
    assert not triton_exact(torch.device("cuda"), 35)
