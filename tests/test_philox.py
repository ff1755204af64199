"""The Philox kernel that draws the sampling's directions inside the perturbation step, run on
the CPU by Triton's interpreter: unit directions, uniform on the sphere, addressed by
(pair, column) whatever the chunking, and the moved points and denominators the torch path
computes from the same directions."""

from __future__ import annotations

from importlib.util import find_spec

import pytest
import torch
from conftest import PHILOX_FEATURES as D
from conftest import PHILOX_SHAPE as SHAPE
from conftest import (
    check_philox_directions,
    check_philox_moves,
    run_in_triton_interpreter,
    sm90_kernels,
)


def check_alpha_lim() -> None:
    """The sampling on the fused path: the same maxima at any chunking, and each reported
    perturbation attains its ratio when evaluated directly."""
    from conftest import check_reported_perturbations
    from torch import nn

    import locrob
    from locrob.alpha import philox

    assert philox.fused(torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 5), nn.Tanh(), nn.Linear(5, 4))
    x = torch.randint(0, 256, (4, *SHAPE), generator=torch.Generator().manual_seed(2))
    x = x.to(torch.uint8)

    def run(chunk, **options):
        return locrob.alpha_lim(
            model, x, [0.25, 1.0, 3.0], n_draws=4, chunk_size=chunk, device="cpu", **options
        )

    for options in ({"directions": "fresh"}, {"directions": "shared", "norm": "inf"}):
        a, b = run(5, **options), run(40, **options)
        assert torch.allclose(a.per_point, b.per_point, rtol=1e-5)
        assert torch.equal(a.perturbation, b.perturbation)
        if options["directions"] == "fresh":
            check_reported_perturbations(model, x, a)
    searched = run(40, method="search", search_steps=1, search_restarts=2)
    assert torch.all(searched.per_point >= run(40).per_point)


def check_all() -> None:
    check_philox_directions()
    check_philox_moves()
    check_alpha_lim()


@pytest.mark.skipif(find_spec("triton") is None, reason="Triton is not installed")
def test_the_philox_kernel_in_the_interpreter():
    """The checks above in one interpreter process (each pays for importing torch and
    Triton)."""
    run_in_triton_interpreter("test_philox", "check_all")


def test_without_triton_to_run_it_the_sampling_draws_with_torch(monkeypatch):
    from locrob.alpha import philox

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not philox.fused(torch.device("cpu"), torch.float32)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not philox.fused(torch.device("cpu"), torch.float64)  # fp64: torch's path
    monkeypatch.setenv("LOCROB_FUSED", "0")
    assert not philox.fused(torch.device("cpu"), torch.float32)


def test_the_kernel_builds_for_sm90_without_spilling():
    """On CIFAR-sized points (3072 elements: one row of 1024 a step), the kernel compiles for
    an H100/H200 and keeps its rows in registers, Gaussian and uniform: PTX a GPU would
    reject fails here, without one."""
    kernels = sm90_kernels()
    rows = kernels.philox_rows(3072)
    assert [r.shape.split(",")[0] for r in rows] == ["gaussian", "uniform"]
    assert all(r.spilled == 0 and r.registers < 128 for r in rows), rows
    assert all(sum(r.loop.values()) > 0 for r in rows), rows  # a loop was found and read
