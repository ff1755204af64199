"""The Triton kernel of the uint8 L-inf separation histogram, run on the CPU by Triton's
interpreter: exact against brute force, and the same Separation as the other kernels."""

from __future__ import annotations

import os
from importlib.util import find_spec

import pytest
import torch
from conftest import run_in_triton_interpreter, sm90_kernels

from locrob import linf_triton
from locrob.pair_distances import separation, triton_block


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
    assert linf_triton.usable(torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    # odd sizes (masked block edges), more features than a step, bytes 0 and 255; random
    # labels (blocks of mixed classes) and sorted ones (blocks of one class, some the same
    # class on both sides: nothing to count there); both forms where the rows are words
    for n_a, n_b, features, classes, diagonal, ordered in [
        (37, 37, 28, 4, True, False),
        (20, 33, 7, 3, False, False),
        (17, 17, 4, 2, True, False),
        (56, 56, 20, 3, True, True),
        (50, 61, 20, 4, False, True),
        (40, 40, 19, 3, True, True),
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
        if ordered:
            la, lb = la.sort().values, lb.sort().values
        blocks = linf_triton.candidates(features, torch.device("cpu"))
        assert [b.packed for b in blocks] == [False, True][: 1 + (features % 4 == 0)]
        expected = _brute(a, b, la, lb, classes, diagonal)
        for block in blocks:
            out = torch.zeros(classes * classes * 256, dtype=torch.long)
            linf_triton.add_tile(a, b, la, lb, classes, out, diagonal, block)
            assert torch.equal(out, expected), (n_a, n_b, features, block)
    x = torch.randint(0, 256, (70, 1, 5, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (70,), generator=g)
    choice = triton_block(torch.device("cpu"), 128, 40)
    assert choice is not None and choice.block == linf_triton.INTERPRETER_BLOCKS[0]
    found = separation(x, y, tile=32)  # one tile of 70 rows: its diagonal blocks and the rest
    os.environ["LOCROB_TRITON"] = "0"
    os.environ["LOCROB_COMPILE"] = "0"  # the reference through torch.cdist, with no build
    assert triton_block(torch.device("cpu"), 128, 40) is None
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
    assert triton_block(torch.device("cpu"), 64, 35) is None
    monkeypatch.setenv("LOCROB_TRITON", "0")
    assert triton_block(torch.device("cuda"), 64, 35) is None


def test_the_fastest_exact_shape_runs_and_the_others_are_named(monkeypatch):
    """Shape selection, with stand-in kernels on the CPU: a shape that counts wrong, fails to
    build or fails on the run's tile is left out with a warning, and the faster of the exact
    ones is taken."""
    import time

    from locrob import pair_distances

    fast, slow, wrong, broken, large = (linf_triton.Block(8, 8, s) for s in (1, 2, 3, 4, 5))

    def stand_in(a, b, la, lb, classes, out, diagonal, block):
        if block == broken:
            raise RuntimeError("cannot build")
        if block == large and len(a) == 32:  # builds, and is exact on the smaller probes
            raise MemoryError
        if block == slow:
            time.sleep(0.01)
        keep = pair_distances._distinct(la, lb, diagonal)
        levels = (a[:, None].int() - b[None].int()).abs().amax(-1)[keep].long()
        out += pair_distances._by_class_pair(levels + (block == wrong), la, lb, keep, classes)

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # timed as on a GPU
    monkeypatch.setattr(linf_triton, "usable", lambda device: True)
    shapes = (slow, wrong, large, fast, broken)
    monkeypatch.setattr(linf_triton, "candidates", lambda features, device: shapes)
    monkeypatch.setattr(linf_triton, "add_tile", stand_in)
    monkeypatch.setattr(pair_distances, "_blocks", {})
    with pytest.warns(UserWarning) as caught:
        choice = triton_block(torch.device("cpu"), 32, 40)
    (message,) = (str(w.message) for w in caught)
    assert (
        f"{wrong} (wrong histogram), {broken} (RuntimeError), {large} (MemoryError on 32 rows)"
        in message
    )
    assert "using the other kernels" not in message
    assert choice is not None and choice.block == fast
    assert set(choice.rates) == {str(fast), str(slow)}
    assert choice.rates[str(fast)] > choice.rates[str(slow)]
    assert triton_block(torch.device("cpu"), 32, 40) is choice  # chosen once per tile shape
    monkeypatch.setattr(linf_triton, "candidates", lambda features, device: (wrong, broken))
    with pytest.warns(UserWarning, match="using the other kernels"):
        assert triton_block(torch.device("cpu"), 64, 40) is None


def test_every_cuda_shape_builds_for_sm90_without_spilling():
    """Each candidate shape compiles for an H100/H200 with its pairs in registers (nothing
    spilled), and the packed form's inner loop issues the DPX add-and-max exactly once per
    pair and pair of 16-bit lanes (4 per pair and word): PTX a GPU would reject, or a layout
    that repeats work, fails here without one."""
    kernels = sm90_kernels()
    rows = kernels.separation_rows(3072)
    assert [r.shape for r in rows] == [str(b) for b in linf_triton.CUDA_BLOCKS]
    for row, block in zip(rows, linf_triton.CUDA_BLOCKS, strict=True):
        assert row.spilled == 0 and sum(row.loop.values()) > 0, row
        pairs_per_thread = block.rows_a * block.rows_b // (32 * block.warps)
        expected = 4 * pairs_per_thread * block.unroll if block.packed else 0
        assert row.loop[kernels.PACKED_OP] == expected, row


def test_the_packed_shapes_are_tried_only_where_their_instructions_exist(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    gpu = torch.device("cuda")
    plain = [b for b in linf_triton.CUDA_BLOCKS if not b.packed]
    cases = [((9, 0), 3072, True), ((8, 0), 3072, False), ((9, 0), 3070, False)]
    for capability, features, packed in cases:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        blocks = linf_triton.candidates(features, gpu)
        assert [b for b in blocks if not b.packed] == plain
        assert any(b.packed for b in blocks) == packed, (capability, features)


def test_a_group_takes_the_triton_kernel_only_where_every_rank_can(monkeypatch):
    """The ranks split the tiles by index, so they must tile alike: where one rank cannot run
    the Triton kernel (4096-row tiles), none does (the torch kernels' tiles)."""
    from dataclasses import dataclass

    from locrob import pair_distances
    from locrob.distributed import Shard

    @dataclass(frozen=True)
    class Pair(Shard):  # rank 0 of a group of two, whose other rank adds ``other``
        other: int = 0

        def sum(self, tensor):
            return tensor.add_(self.other)

    choice = pair_distances.BlockChoice(linf_triton.Block(16, 16, 4), {})
    monkeypatch.setattr(pair_distances, "triton_block", lambda *args: choice)
    plan = pair_distances.linf_plan(torch.device("cpu"), 5000, 512, 40, Pair(0, 2, other=1))
    assert (plan.triton, plan.tile) == (choice, 4096)
    plan = pair_distances.linf_plan(torch.device("cpu"), 5000, 512, 40, Pair(0, 2, other=0))
    assert (plan.triton, plan.tile) == (None, 512)
