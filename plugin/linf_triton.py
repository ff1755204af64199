"""The uint8 L-inf distance histogram of a tile of image pairs as one Triton kernel
(:mod:`locrob.linf_triton_kernel`): its launch shapes, and where it runs.

Each program takes a block of rows from each side, walks their bytes a step at a time and
keeps each pair's largest absolute difference in registers; no distance matrix is written
anywhere, only the C x C x 256 counts. The rows come sorted by class (:mod:`locrob.pair_distances`
sorts them), so most blocks hold one class each: a block pair of one class has no
distinct-class pair and skips all work, and a pair of two classes adds one 256-bin histogram,
built in the program, to its class pair's counts (256 atomic adds where a mixed block adds
one per pair). The ``packed`` shapes read 4-byte words, split each into two words of two
16-bit lanes (even and odd bytes) and keep the running maximum with sm_90's DPX add-and-max
(``add.u16x2`` + ``max.u16x2``, one ``VIADDMNMX.U16x2``): one instruction per pair-byte.

Runs where Triton can run it: on a CUDA device, or anywhere under Triton's interpreter
(``TRITON_INTERPRET=1``, for tests; it cannot run PTX, so the packed shapes' add-and-max runs
there as the same lane arithmetic in plain words). No library computes this histogram
(``torch.cdist`` writes every distance to memory and works in floats), hence the kernel.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec

import torch

BINS = 256  # one per grey level of distance


@dataclass(frozen=True)
class Block:
    """One launch shape: rows of each side per program, columns per unrolled step (bytes, or
    4-byte words when ``packed``), warps, and whether the bytes go four to a register through
    the 16-bit-lane DPX instructions (``packed``: CUDA sm_90 or newer, rows of a multiple of 4
    bytes)."""

    rows_a: int
    rows_b: int
    unroll: int
    warps: int = 4
    packed: bool = False

    def __str__(self) -> str:
        form = "packed" if self.packed else "bytes"
        return f"{self.rows_a}x{self.rows_b}x{self.unroll} {form}, {self.warps} warps"


# the shapes timed on a GPU at first use of each tile shape (pair_distances.triton_block):
# those that sm_90's register file holds without spilling (ptxas, Triton 3.8)
CUDA_BLOCKS = (
    Block(64, 64, 8),
    Block(128, 128, 8, 8),
    Block(64, 64, 4, packed=True),
    Block(128, 64, 4, 8, packed=True),
    Block(128, 128, 4, 8, packed=True),
    Block(128, 128, 8, 8, packed=True),
)
# the interpreter runs each program in numpy: small blocks keep its arrays small; it runs
# the packed form with the lane arithmetic in plain words (it cannot run PTX)
INTERPRETER_BLOCKS = (Block(16, 16, 4), Block(16, 16, 2, packed=True))


def interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter (on the CPU), as its knob says."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def usable(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: Triton installed, and a CUDA device or the
    interpreter; ``LOCROB_TRITON=0`` turns it off."""
    if os.environ.get("LOCROB_TRITON", "1") in ("0", "false", "no", "off"):
        return False
    return find_spec("triton") is not None and (device.type == "cuda" or interpreted())


def candidates(features: int, device: torch.device | None = None) -> tuple[Block, ...]:
    """The launch shapes worth timing where the kernel runs now, for rows of ``features``
    bytes: the packed ones only on rows of 4-byte words, and where their DPX instructions
    exist (sm_90 or newer; ``device`` None: as on sm_90) or in the interpreter."""
    if interpreted():
        return _fitting(INTERPRETER_BLOCKS, features, dpx=True)
    dpx = device is None or torch.cuda.get_device_capability(device) >= (9, 0)
    return _fitting(CUDA_BLOCKS, features, dpx)


def sm90_candidates(features: int) -> tuple[Block, ...]:
    """The shapes an H100/H200 times for rows of ``features`` bytes, wherever this runs."""
    return _fitting(CUDA_BLOCKS, features, dpx=True)


def _fitting(blocks: tuple[Block, ...], features: int, dpx: bool) -> tuple[Block, ...]:
    return tuple(b for b in blocks if not b.packed or (dpx and features % 4 == 0))


def _kernel() -> Callable:
    """The jitted kernel, imported on first use (Triton picks the interpreter when it builds)."""
    from locrob.linf_triton_kernel import histogram

    return histogram


def add_tile(
    a: torch.Tensor,
    b: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    classes: int,
    out: torch.Tensor,
    diagonal: bool,
    block: Block,
) -> None:
    """Adds the distinct-class pairs of rows ``a`` x rows ``b`` (uint8, (n, features), on one
    device; labels 0..classes-1) to ``out``, the (classes * classes * 256,) int64 counts at
    (lower class, higher class, distance in grey levels); on a ``diagonal`` tile (``a`` and
    ``b`` the same rows) each unordered pair once. Exact in any row order; fastest with the
    rows sorted by class."""
    grid = (-(-len(a) // block.rows_a), -(-len(b) // block.rows_b))
    a, b = a.contiguous(), b.contiguous()
    if block.packed:  # the same bytes, read four at a time
        a, b = a.view(torch.int32), b.view(torch.int32)
    _kernel()[grid](
        a,
        b,
        labels_a.to(torch.int32).contiguous(),
        labels_b.to(torch.int32).contiguous(),
        out,
        len(a),
        len(b),
        a.shape[1],
        classes,
        int(diagonal),
        BA=block.rows_a,
        BB=block.rows_b,
        UNROLL=block.unroll,
        PACKED=block.packed,
        EMULATED=interpreted(),
        num_warps=block.warps,
    )
