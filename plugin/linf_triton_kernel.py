"""The Triton kernel of :mod:`locrob.linf_triton` (a module of its own: Triton resolves a
kernel's helpers among its module's globals, and importing Triton costs time that only a run
that takes the kernel should pay)."""

import triton
import triton.language as tl


@triton.jit
def add_max(lanes, x, y, EMULATED: tl.constexpr):
    """max(lanes, x + y) in each 16-bit lane of the words (no lane reaches 512, so none
    carries into the next): one DPX instruction, VIADDMNMX.U16x2, on sm_90."""
    if EMULATED:  # the interpreter runs no PTX: the same lane arithmetic in plain words
        t = x + y
        return tl.maximum(lanes & 0xFFFF, t & 0xFFFF) | (tl.maximum(lanes >> 16, t >> 16) << 16)
    else:
        return tl.inline_asm_elementwise(
            "{ .reg .b32 t; add.u16x2 t, $2, $3; max.u16x2 $0, $1, t; }",
            "=r,r,r,r",
            [lanes, x, y],
            dtype=tl.int32,
            is_pure=True,
            pack=1,
        )


# one build for every tile: Triton would otherwise build a variant per value of 1 and per
# divisibility by 16 of these (the last tile's rows, the diagonal flag), some of them mid-run
@triton.jit(do_not_specialize=["n_a", "n_b", "classes", "diagonal"])
def histogram(
    a_ptr,
    b_ptr,
    la_ptr,
    lb_ptr,
    out_ptr,
    n_a,
    n_b,
    width,
    classes,
    diagonal,
    BA: tl.constexpr,
    BB: tl.constexpr,
    UNROLL: tl.constexpr,
    PACKED: tl.constexpr,
    EMULATED: tl.constexpr,
):
    """Adds the distinct-class pairs of a BA-row block of ``a`` and a BB-row block of ``b``
    (program (pa, pb)) to ``out`` at (lower class, higher class, L-inf distance): rows of
    ``width`` bytes, or ``width`` 4-byte words when ``PACKED``; ``diagonal``: ``a`` and ``b``
    are the same rows, and only pairs j > i count."""
    pa, pb = tl.program_id(0), tl.program_id(1)
    ra = pa * BA + tl.arange(0, BA)
    rb = pb * BB + tl.arange(0, BB)
    a_labels = tl.load(la_ptr + ra, mask=ra < n_a, other=0)
    b_labels = tl.load(lb_ptr + rb, mask=rb < n_b, other=0)
    a_low = tl.min(tl.where(ra < n_a, a_labels, classes), axis=0)
    a_high = tl.max(tl.where(ra < n_a, a_labels, -1), axis=0)
    b_low = tl.min(tl.where(rb < n_b, b_labels, classes), axis=0)
    b_high = tl.max(tl.where(rb < n_b, b_labels, -1), axis=0)
    one_pair = (a_low == a_high) & (b_low == b_high)
    # a diagonal tile keeps the pairs j > i: blocks wholly below it have nothing to do
    live = (diagonal == 0) | (pb * BB + BB > pa * BA)
    if live & ~(one_pair & (a_low == b_low)):
        # The pairs as (BA/8, BB/4, 8, 4): Triton spreads a warp's lanes over the last two
        # axes, so each thread holds BA/8 rows by BB/4 columns (a tile of its own, several
        # pairs per word it reads) rather than one column of a whole block of rows.
        i = pa * BA + (
            tl.arange(0, BA // 8)[:, None, None, None] * 8 + tl.arange(0, 8)[None, None, :, None]
        )
        j = pb * BB + (
            tl.arange(0, BB // 4)[None, :, None, None] * 4 + tl.arange(0, 4)[None, None, None, :]
        )
        # rows past the end read the last row (their pairs are not kept): unmasked loads;
        # offsets in 64 bits, as a tile of 4096 rows of 512 KiB passes 2^31 bytes
        a_row = a_ptr + tl.minimum(i, n_a - 1).to(tl.int64) * width
        b_row = b_ptr + tl.minimum(j, n_b - 1).to(tl.int64) * width
        if PACKED:  # 32-bit words, two 16-bit lanes of even bytes and two of odd ones
            lanes = tl.zeros((BA // 8, BB // 4, 8, 4), dtype=tl.int32)
            for k0 in range(0, width, UNROLL):
                for kk in tl.static_range(UNROLL):
                    wa = tl.load(a_row + k0 + kk, mask=k0 + kk < width, other=0)
                    wb = tl.load(b_row + k0 + kk, mask=k0 + kk < width, other=0)
                    a_even, a_odd = wa & 0x00FF00FF, (wa >> 8) & 0x00FF00FF
                    b_even, b_odd = wb & 0x00FF00FF, (wb >> 8) & 0x00FF00FF
                    # lanes = max(lanes, 256 + a - b, 256 + b - a), byte by byte
                    lanes = add_max(lanes, a_even, 0x01000100 - b_even, EMULATED)
                    lanes = add_max(lanes, a_odd, 0x01000100 - b_odd, EMULATED)
                    lanes = add_max(lanes, b_even, 0x01000100 - a_even, EMULATED)
                    lanes = add_max(lanes, b_odd, 0x01000100 - a_odd, EMULATED)
            largest = tl.maximum(lanes & 0xFFFF, lanes >> 16) - 256
        else:  # one byte per 32-bit lane
            largest = tl.zeros((BA // 8, BB // 4, 8, 4), dtype=tl.int32)
            for k0 in range(0, width, UNROLL):
                for kk in tl.static_range(UNROLL):
                    a = tl.load(a_row + k0 + kk, mask=k0 + kk < width, other=0).to(tl.int32)
                    b = tl.load(b_row + k0 + kk, mask=k0 + kk < width, other=0).to(tl.int32)
                    # |a - b| = max(a - b, b - a), negations per row, not per pair
                    largest = tl.maximum(largest, a + (0 - b))
                    largest = tl.maximum(largest, b + (0 - a))
        la = tl.load(la_ptr + i, mask=i < n_a, other=0)
        lb = tl.load(lb_ptr + j, mask=j < n_b, other=0)
        keep = (i < n_a) & (j < n_b) & (la != lb) & ((diagonal == 0) | (j > i))
        if one_pair:  # one class pair: its histogram here, then 256 adds at most
            counts = tl.histogram(
                tl.reshape(largest, (BA * BB,)), 256, mask=tl.reshape(keep, (BA * BB,))
            )
            row = tl.minimum(a_low, b_low) * classes + tl.maximum(a_low, b_low)
            bins = tl.arange(0, 256)
            tl.atomic_add(out_ptr + row * 256 + bins, counts.to(tl.int64), mask=counts > 0)
        else:
            where = (tl.minimum(la, lb) * classes + tl.maximum(la, lb)) * 256 + largest
            ones = tl.full((BA // 8, BB // 4, 8, 4), 1, tl.int64)
            tl.atomic_add(out_ptr + where, ones, mask=keep)
