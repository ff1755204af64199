"""The uint8 L-inf distance histogram of a tile of image pairs as one Triton kernel.

Each program takes a block of rows from each side, walks their bytes a slice at a time,
keeps each pair's largest absolute difference in registers and, at the end, adds each
distinct-class pair to its class pair's 256-bin histogram with an atomic add: no distance
matrix is written anywhere, only the C x C x 256 counts. Runs where Triton can run it: on a
CUDA device, or anywhere under Triton's interpreter (``TRITON_INTERPRET=1``, for tests). No
library computes this histogram (``torch.cdist`` writes every distance to memory and works in
floats), hence the kernel.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from importlib.util import find_spec

import torch

BINS = 256  # one per grey level of distance
# block shapes (rows of a, rows of b, bytes per step) and warps that the autotuner times on a
# GPU at the first tile of each feature count; the interpreter takes small fixed blocks
CUDA_BLOCKS = (
    (32, 32, 8, 4),
    (64, 32, 8, 4),
    (64, 64, 4, 8),
    (64, 64, 8, 8),
    (128, 64, 4, 8),
    (16, 16, 32, 4),
)
INTERPRETER_BLOCKS = (16, 16, 16)


def interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter (on the CPU), as its knob says."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def usable(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: Triton installed, and a CUDA device or the
    interpreter; ``LOCROB_TRITON=0`` turns it off."""
    if os.environ.get("LOCROB_TRITON", "1") in ("0", "false", "no", "off"):
        return False
    return find_spec("triton") is not None and (device.type == "cuda" or interpreted())


@functools.cache
def _kernel(interpreter: bool) -> Callable:
    """The jitted kernel, built on first use (Triton picks the interpreter when it builds)."""
    import triton
    import triton.language as tl

    @triton.jit
    def histogram(
        a_ptr,
        b_ptr,
        la_ptr,
        lb_ptr,
        out_ptr,
        n_a,
        n_b,
        features,
        classes,
        diagonal,
        BA: tl.constexpr,
        BB: tl.constexpr,
        BF: tl.constexpr,
    ):
        pa, pb = tl.program_id(0), tl.program_id(1)
        ra = pa * BA + tl.arange(0, BA)
        rb = pb * BB + tl.arange(0, BB)
        largest = tl.zeros((BA, BB), dtype=tl.int32)
        # a diagonal tile keeps the pairs j > i: blocks wholly below it have nothing to do
        if (diagonal == 0) | (pb * BB + BB > pa * BA):
            for f0 in range(0, features, BF):
                cols = f0 + tl.arange(0, BF)
                a = tl.load(
                    a_ptr + ra[:, None] * features + cols[None, :],
                    mask=(ra[:, None] < n_a) & (cols[None, :] < features),
                    other=0,
                ).to(tl.int32)
                b = tl.load(
                    b_ptr + rb[:, None] * features + cols[None, :],
                    mask=(rb[:, None] < n_b) & (cols[None, :] < features),
                    other=0,
                ).to(tl.int32)
                gap = tl.abs(a[:, None, :] - b[None, :, :])
                largest = tl.maximum(largest, tl.max(gap, axis=2))
            la = tl.load(la_ptr + ra, mask=ra < n_a, other=0)
            lb = tl.load(lb_ptr + rb, mask=rb < n_b, other=0)
            keep = (ra[:, None] < n_a) & (rb[None, :] < n_b) & (la[:, None] != lb[None, :])
            keep = keep & ((diagonal == 0) | (rb[None, :] > ra[:, None]))
            low = tl.minimum(la[:, None], lb[None, :])
            high = tl.maximum(la[:, None], lb[None, :])
            where = (low * classes + high) * 256 + largest
            tl.atomic_add(out_ptr + where, tl.full((BA, BB), 1, tl.int64), mask=keep)

    if interpreter:
        return histogram
    configs = [
        triton.Config({"BA": ba, "BB": bb, "BF": bf}, num_warps=warps)
        for ba, bb, bf, warps in CUDA_BLOCKS
    ]
    # each timing run adds to the counts: restored after each, so only the real call counts
    return triton.autotune(configs, key=["features"], restore_value=["out_ptr"])(histogram)


def add_tile(
    a: torch.Tensor,
    b: torch.Tensor,
    labels_a: torch.Tensor,
    labels_b: torch.Tensor,
    classes: int,
    out: torch.Tensor,
    diagonal: bool,
) -> None:
    """Adds the distinct-class pairs of rows ``a`` x rows ``b`` (uint8, (n, features), on one
    device; labels 0..classes-1) to ``out``, the (classes * classes * 256,) int64 counts at
    (lower class, higher class, distance in grey levels); on a ``diagonal`` tile (``a`` and
    ``b`` the same rows) each unordered pair once."""
    interpreter = interpreted()
    import triton

    # the interpreter runs each program in numpy: small blocks keep its arrays small
    ba, bb, bf = INTERPRETER_BLOCKS
    blocks = {"BA": ba, "BB": bb, "BF": bf} if interpreter else {}

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(len(a), meta["BA"]), triton.cdiv(len(b), meta["BB"])

    _kernel(interpreter)[grid](
        a.contiguous(),
        b.contiguous(),
        labels_a.to(torch.int32).contiguous(),
        labels_b.to(torch.int32).contiguous(),
        out,
        len(a),
        len(b),
        a.shape[1],
        classes,
        int(diagonal),
        **blocks,
    )
