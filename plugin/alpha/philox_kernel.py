"""The Philox perturbation kernel of :mod:`locrob.alpha.philox` (a module of its own: Triton
resolves a kernel's helpers among its module's globals, and importing Triton costs time that
only a run that draws with it should pay)."""

import triton
import triton.language as tl


@triton.jit
def draw(seed, offsets, GAUSSIAN: tl.constexpr):
    if GAUSSIAN:
        return tl.randn(seed, offsets)
    return tl.rand(seed, offsets) * 2.0 - 1.0


# one build for every chunk: Triton would otherwise build a variant per value of 1 and per
# divisibility by 16 of these, which change from chunk to chunk (some builds inside the
# chunk tuner's timing)
@triton.jit(do_not_specialize=["first", "n_draws", "columns", "first_column", "rows"])
def perturb(
    x_ptr,
    radii_ptr,
    out_ptr,
    denominator_ptr,
    seed,
    first,
    n_draws,
    columns,
    first_column,
    width,
    features,
    rows,
    lo,
    hi,
    MOVE: tl.constexpr,
    CLAMP: tl.constexpr,
    LINF: tl.constexpr,
    GAUSSIAN: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # ROWS rows of the output per program, BLOCK of their elements per step
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    valid = row < rows
    pair = first + row // columns
    column = first_column + row % columns
    address = (pair.to(tl.int64) * width + tl.where(width > 1, column, 0)) * features
    lanes = tl.arange(0, BLOCK)
    size = tl.zeros((ROWS, BLOCK), dtype=tl.float32)
    for start in range(0, features, BLOCK):
        at = start + lanes
        z = draw(seed, address[:, None] + at[None, :], GAUSSIAN)
        z = tl.where(at[None, :] < features, z, 0.0)
        size = tl.maximum(size, tl.abs(z)) if LINF else size + z * z
    norm = tl.max(size, axis=1) if LINF else tl.sqrt(tl.sum(size, axis=1))
    scale = 1.0 / tl.maximum(norm, 1e-30)
    if MOVE:
        scale = scale * tl.load(radii_ptr + column, mask=valid, other=0.0)
    point = (pair // n_draws).to(tl.int64) * features
    moved_size = tl.zeros((ROWS, BLOCK), dtype=tl.float32)
    for start in range(0, features, BLOCK):
        at = start + lanes
        inside = valid[:, None] & (at[None, :] < features)
        step = draw(seed, address[:, None] + at[None, :], GAUSSIAN) * scale[:, None]
        if MOVE:
            x = tl.load(x_ptr + point[:, None] + at[None, :], mask=inside, other=0.0)
            moved = x + step
            if CLAMP:
                moved = tl.minimum(tl.maximum(moved, lo), hi)
            delta = tl.where(inside, moved - x, 0.0)
            moved_size = (
                tl.maximum(moved_size, tl.abs(delta)) if LINF else moved_size + delta * delta
            )
            step = moved
        tl.store(out_ptr + row.to(tl.int64)[:, None] * features + at[None, :], step, mask=inside)
    if MOVE:
        if LINF:
            tl.store(denominator_ptr + row, tl.max(moved_size, axis=1), mask=valid)
        else:
            tl.store(denominator_ptr + row, tl.sqrt(tl.sum(moved_size, axis=1)), mask=valid)
