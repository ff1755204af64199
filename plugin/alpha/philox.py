"""Random directions from a counter-based generator, drawn inside the perturbation's kernel.

The sampling's step for one chunk is: draw noise, normalize it, move the points by r along
it, clamp to the box, and take the effective perturbation's norm. In torch that is a chain of
kernels with the directions written to memory and read back several times. Here it is one
Triton kernel: each program takes one (pair, radius) row, draws its noise from Philox (the
counter-based generator of cuRAND and Triton, Salmon et al. 2011) addressed by (seed, row,
element), so that nothing but the moved image and its denominator is ever written; the noise
is drawn twice (once for its norm, once to move the point) rather than stored, since drawing
costs less than a round trip through memory. No library fuses these steps, hence the kernel.

A direction is addressed by (seed, stream, pair, column) as :class:`locrob.alpha.geometry.Draws`
addresses its own, so a chunk's directions do not depend on the chunking; the numbers differ
from torch's generator's (directions are reproducible per generator, as per device type).
Runs where Triton runs: a CUDA device, or anywhere under its interpreter (for tests).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import torch

from locrob.alpha.geometry import Draws
from locrob.linf_triton import interpreted, usable
from locrob.runtime import mix_seed

BLOCK = 1024  # elements of a row per step (the interpreter: smaller arrays)
WARPS = 4  # per program: 8 of a 1024-element step's elements to each thread


def fused(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the sampling draws its directions in the kernel: fp32 on a device Triton runs
    on (``LOCROB_FUSED=0`` turns it off)."""
    off = os.environ.get("LOCROB_FUSED", "1") in ("0", "false", "no", "off")
    return not off and dtype == torch.float32 and usable(device)


@functools.cache
def _kernel() -> Callable:
    """The jitted kernel, imported (and so Triton) on first use."""
    from locrob.alpha.philox_kernel import perturb

    return perturb


class PhiloxDraws(Draws):
    """Unit directions addressed by (index, column), drawn by the Philox kernel: a
    :class:`locrob.alpha.geometry.Draws` whose numbers come from the kernel, with
    :meth:`perturbed`, which moves points along them without writing the directions anywhere."""

    @staticmethod
    def unit_size(device: torch.device, width: int) -> int:
        """Every index drawn on its own: no group to share."""
        return 1

    @property
    def features(self) -> int:
        return int(torch.Size(self.shape).numel())

    @property
    def _philox_seed(self) -> int:
        return mix_seed(self.seed, self.stream) & (2**63 - 1)

    def get(self, start: int, stop: int) -> torch.Tensor:
        """Directions of indices ``start..stop-1``: shape (stop - start, width, *shape)."""
        out = torch.empty(stop - start, self.width, *self.shape, device=self.device)
        self._launch(out, start, stop - start, self.width, 0, move=None)
        return out

    def at(self, indices: Sequence[int], columns: Sequence[int]) -> torch.Tensor:
        """The directions at the addresses ``(indices[j], columns[j])``, one row each."""
        rows = [self.get(i, i + 1)[0, c] for i, c in zip(indices, columns, strict=True)]
        return torch.stack(rows)

    def perturbed(
        self,
        x: torch.Tensor,
        first: int,
        pairs: int,
        n_draws: int,
        radii: torch.Tensor,
        first_column: int,
        columns: int,
        clamp: tuple[float, float] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """clamp(x[pair // n_draws] + r_k d(pair, k)) for pairs ``first..first+pairs-1`` and
        radii ``first_column..first_column+columns-1`` (pair-major rows), and the p-norm of
        each row's effective perturbation: shapes (pairs, columns, *shape) and (pairs,
        columns). ``x`` are all the points, fp32; ``radii`` all the radii."""
        out = torch.empty(pairs, columns, *self.shape, device=self.device)
        denominator = torch.empty(pairs, columns, device=self.device)
        # the kernel reads each point as one run of memory (a copy only of strided points)
        move = (x.contiguous(), radii, denominator, n_draws, clamp)
        self._launch(out, first, pairs, columns, first_column, move)
        return out, denominator

    def _launch(
        self,
        out: torch.Tensor,
        first: int,
        pairs: int,
        columns: int,
        first_column: int,
        move: tuple | None,
    ) -> None:
        x, radii, denominator, n_draws, clamp = move or (out, out, out, 1, None)
        lo, hi = clamp if clamp is not None else (0.0, 0.0)
        rows, (rows_per_program, block) = pairs * columns, _blocks(self.features)
        _kernel()[(-(-rows // rows_per_program),)](
            x,
            radii,
            out,
            denominator,
            self._philox_seed,
            first,
            n_draws,
            columns,
            first_column,
            self.width,
            self.features,
            rows,
            float(lo),
            float(hi),
            MOVE=move is not None,
            CLAMP=clamp is not None,
            LINF=self.p == float("inf"),
            GAUSSIAN=self.noise == "gaussian",
            ROWS=rows_per_program,
            BLOCK=block,
            num_warps=WARPS,
        )


def _blocks(features: int, interpreter: bool | None = None) -> tuple[int, int]:
    """Rows per program and elements per step: on a GPU, one row of up to 1024 elements per
    step (an image's row fills the block); a small image several rows per program, so that a
    program still has a block's work; in the interpreter (``interpreter`` None: where Triton
    runs now), which runs each program in numpy, many rows at once (fewer programs)."""
    if interpreted() if interpreter is None else interpreter:
        return 32, 64
    block = min(BLOCK, max(16, 1 << (features - 1).bit_length()))
    return max(1, BLOCK // block), block
