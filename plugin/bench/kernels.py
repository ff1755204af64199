"""``locrob bench kernels``: the Triton kernels built for a GPU that need not be here.

Each kernel is compiled for an sm_90 device (H100/H200) by Triton and the ptxas and nvdisasm
that ship with it, and read statically: registers and spilled bytes per thread (ptxas), and
the instructions the longest loop holds (the SASS between a backward branch and its target)
per unit of work. Static, so it runs on any machine with Triton; it says how
much work each candidate shape asks of the device, not how fast the device does it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locrob import markdown
from locrob.errors import LocrobError

ARCH = 90  # H100 / H200
PACKED_OP = "VIADDMNMX.U16x2"  # sm_90's DPX add-and-max on two 16-bit lanes


@dataclass(frozen=True)
class Build:
    """One kernel compiled for ``sm_<ARCH>``: its PTX and SASS, and what ptxas reports."""

    ptx: str
    sass: str
    registers: int  # per thread
    spilled: int  # bytes spilled to local memory and loaded back, per thread

    def inner_loop(self) -> Counter[str]:
        """Opcodes of the SASS in the longest loop (a backward branch to its label), each
        instruction of its body counted once, a branch it never takes too: exact for a
        straight-line loop, an upper bound otherwise; empty without a loop."""
        lines = self.sass.splitlines()
        labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
        spans = [
            (labels[m.group(1)], i)
            for i, line in enumerate(lines)
            if (m := _BRANCH.search(line)) and labels.get(m.group(1), i) < i
        ]
        if not spans:
            return Counter()
        start, stop = max(spans, key=lambda span: span[1] - span[0])
        body = lines[start : stop + 1]  # the back edge too
        return Counter(m.group(1) for line in body if (m := _OPCODE.search(line)))


_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
# any form of branch: BRA, BRA.U, BRA.DIV, with a uniform predicate as an operand or not
_BRANCH = re.compile(r"\bBRA(?:\.\w+)*\s+(?:!?U?P[T\d]+\s*,\s*)?`\((\.L_x_\d+)\)")
_OPCODE = re.compile(r"\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Za-z0-9_]+)*)")


def toolchain() -> Path:
    """The folder of Triton's CUDA tools (ptxas, nvdisasm); an error where it is missing."""
    try:
        import triton
    except ImportError as err:
        raise LocrobError("bench kernels needs Triton (pip install triton)") from err
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    if not all((tools / name).exists() for name in ("ptxas", "nvdisasm")):
        raise LocrobError(f"bench kernels: no ptxas and nvdisasm under {tools}")
    return tools


def build(kernel: Any, signature: dict[str, str], constants: dict[str, Any], warps: int) -> Build:
    """``kernel`` (a Triton JIT function) compiled for ``sm_<ARCH>`` with ``warps`` warps:
    ``signature`` types its runtime parameters (``"*u8"``, ``"i32"``, ...), ``constants``
    gives its ``tl.constexpr`` ones."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    tools = toolchain()
    names = kernel.arg_names  # every parameter, in order, the constants among them
    source = ASTSource(
        kernel,
        {name: signature.get(name, "constexpr") for name in names},
        constexprs={(names.index(name),): value for name, value in constants.items()},
    )
    target = GPUTarget("cuda", ARCH, 32)
    built = triton.compile(source, target=target, options={"num_warps": warps})
    with tempfile.TemporaryDirectory() as folder:
        ptx, cubin = Path(folder, "kernel.ptx"), Path(folder, "kernel.cubin")
        ptx.write_text(built.asm["ptx"])
        cubin.write_bytes(built.asm["cubin"])
        # ptxas's own report of the same PTX: registers, and spills apart from the stack
        log = _run(tools / "ptxas", f"-arch=sm_{ARCH}a", "-v", str(ptx), "-o", os.devnull).stderr
        sass = _run(tools / "nvdisasm", "-c", str(cubin)).stdout
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if registers is None or spills is None:
        raise LocrobError(f"bench kernels: ptxas printed no register report:\n{log}")
    return Build(built.asm["ptx"], sass, int(registers[1]), int(spills[1]) + int(spills[2]))


def _run(*command: Any) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, check=True)


@dataclass
class KernelRow:
    """One kernel and shape: its registers, spills, inner loop and work per loop pass."""

    kernel: str
    shape: str
    registers: int
    spilled: int
    loop: Counter[str]
    work: float  # units of work (pair-bytes, elements) one thread does per loop pass
    unit: str

    @property
    def per_unit(self) -> float:
        return sum(self.loop.values()) / self.work


def separation_rows(features: int = 3072) -> list[KernelRow]:
    """Every candidate shape of the separation kernel (rows of ``features`` bytes): its
    loop's instructions per pair-byte, and the DPX add-and-max among them (packed form)."""
    from locrob import linf_triton, linf_triton_kernel

    scalars = dict.fromkeys(("n_a", "n_b", "width", "classes", "diagonal"), "i32")
    rows = []
    for block in linf_triton.sm90_candidates(features):
        side = "*i32" if block.packed else "*u8"  # the packed form reads 4-byte words
        pointers = {"a_ptr": side, "b_ptr": side, "la_ptr": "*i32", "lb_ptr": "*i32"}
        constants = {
            "BA": block.rows_a,
            "BB": block.rows_b,
            "UNROLL": block.unroll,
            "PACKED": block.packed,
            "EMULATED": False,
        }
        built = build(
            linf_triton_kernel.histogram,
            {**pointers, "out_ptr": "*i64", **scalars},
            constants,
            block.warps,
        )
        bytes_per_column = 4 if block.packed else 1
        work = block.rows_a * block.rows_b * block.unroll * bytes_per_column / (32 * block.warps)
        rows.append(
            KernelRow(
                "separation",
                str(block),
                built.registers,
                built.spilled,
                built.inner_loop(),
                work,
                "pair-byte",
            )
        )
    return rows


def philox_rows(features: int = 3072) -> list[KernelRow]:
    """The Philox perturbation kernel on points of ``features`` elements, Gaussian and
    uniform, moving and clamping: its loop's instructions per element drawn."""
    from locrob.alpha import philox, philox_kernel

    signature = {
        **dict.fromkeys(("x_ptr", "radii_ptr", "out_ptr", "denominator_ptr"), "*fp32"),
        "seed": "i64",
        **dict.fromkeys(
            ("first", "n_draws", "columns", "first_column", "width", "features", "rows"), "i32"
        ),
        "lo": "fp32",
        "hi": "fp32",
    }
    rows_per_program, block = philox._blocks(features, interpreter=False)
    rows = []
    for noise in ("gaussian", "uniform"):
        constants = {
            "MOVE": True,
            "CLAMP": True,
            "LINF": False,
            "GAUSSIAN": noise == "gaussian",
            "ROWS": rows_per_program,
            "BLOCK": block,
        }
        built = build(philox_kernel.perturb, signature, constants, philox.WARPS)
        rows.append(
            KernelRow(
                "philox",
                f"{noise}, L2, move + clamp, {rows_per_program}x{block}",
                built.registers,
                built.spilled,
                built.inner_loop(),
                rows_per_program * block / (32 * philox.WARPS),
                "element and pass",
            )
        )
    return rows


BENCHES: dict[str, Callable[[int], list[KernelRow]]] = {
    "separation": separation_rows,
    "philox": philox_rows,
}


def bench_kernels(kernels: Sequence[str] = tuple(BENCHES), features: int = 3072) -> list[KernelRow]:
    """Each named kernel's rows (``separation``, ``philox``) at ``features`` per row."""
    unknown = sorted(set(kernels) - set(BENCHES))
    if unknown:
        raise LocrobError(f"no kernel named {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    return [row for name in kernels for row in BENCHES[name](features)]


def kernels_table(rows: Sequence[KernelRow]) -> str:
    """A Markdown table after a line naming the target and the Triton version."""
    import triton

    header = [
        "kernel",
        "shape",
        "registers",
        "spilled bytes",
        "loop instructions",
        "per unit",
        f"{PACKED_OP} per unit",
        "most issued",
    ]
    cells = (
        [
            r.kernel,
            r.shape,
            r.registers,
            r.spilled,
            sum(r.loop.values()),
            f"{r.per_unit:.2f} per {r.unit}",
            f"{r.loop[PACKED_OP] / r.work:.2f}",
            ", ".join(f"{op} {n}" for op, n in r.loop.most_common(4)),
        ]
        for r in rows
    )
    line = f"sm_{ARCH} (H100/H200), Triton {triton.__version__}; static: ptxas and SASS, no timing"
    return line + "\n\n" + markdown.table(header, cells)
