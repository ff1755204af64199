"""``locrob bench distributed``: one evaluation on 1 process and on N processes of this
machine, side by side in one run: the speed-up, the parallel efficiency and the bytes the
reductions move.

Each process is a rank of a group on the loopback address with one CPU thread: on the CPU a
gloo group, so N ranks use N cores; on CUDA an NCCL group, one rank per visible GPU
(``cuda:RANK``). The 1-process figure is the same code in a group of one. Every rank measures
a warm-up run first (compiled kernels, caches), then the timed one between two barriers; the
time is rank 0's. The bytes are those handed to ``all_reduce`` by one rank (the tallies, not
the group's rendezvous or the digest check).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from locrob import markdown
from locrob.distributed import free_port
from locrob.errors import LocrobError

# per metric: its options, and the examples evaluated (digits; small-cnn of random weights)
CASES: dict[str, tuple[dict[str, Any], int]] = {
    "local-robustness": (
        {"max_examples": 24, "n_draws": 100, "radii": [0.1, 0.25, 0.5, 1.0], "chunk_size": 64},
        360,
    ),
    # all 15 corruptions at three severities on the 360 test images
    "corruptions": ({"severities": [1, 3, 5]}, 360),
    "separation": ({"max_examples": 1400}, 360),
}
TARGET = 1.6  # speed-up on 2 ranks of 2 cores


@dataclass
class DistributedBench:
    """One metric's seconds on 1 and on ``ranks`` processes, and what the reductions moved."""

    metric: str
    ranks: int
    one: float
    many: float
    reduced_bytes: int

    @property
    def speedup(self) -> float:
        return self.one / self.many

    @property
    def efficiency(self) -> float:
        return self.speedup / self.ranks


def _worker(
    rank: int,
    world_size: int,
    port: int,
    device: str,
    metric: str,
    case: tuple[dict[str, Any], int],
    out: str,
) -> None:
    import locrob

    torch.set_num_threads(1)
    measured_on = torch.device(device, rank) if device == "cuda" else torch.device(device)
    if device == "cuda":
        torch.cuda.set_device(measured_on)  # the barriers' device too
    dist.init_process_group(
        "nccl" if device == "cuda" else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
    )
    reduced = [0]
    all_reduce = dist.all_reduce

    def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        reduced[0] += tensor.numel() * tensor.element_size()
        return all_reduce(tensor, *args, **kwargs)

    try:
        torch.manual_seed(0)
        model = locrob.load_model("small-cnn", num_classes=10, in_channels=3, image_size=32)
        options, examples = case

        def run() -> None:
            locrob.evaluate(
                model,
                "digits",
                [metric],
                metric_options={metric: options},
                max_examples=examples,
                device=measured_on,
            )

        run()  # warm-up: compiled kernels, caches, the tuned sizes
        dist.all_reduce = counted  # the timed run's tallies only
        dist.barrier()
        start = time.perf_counter()
        run()
        dist.barrier()
        seconds = time.perf_counter() - start
        dist.all_reduce = all_reduce
        if rank == 0:
            Path(out).write_text(json.dumps({"seconds": seconds, "bytes": reduced[0]}))
    finally:
        dist.all_reduce = all_reduce
        dist.destroy_process_group()


def _time(
    metric: str, case: tuple[dict[str, Any], int], world_size: int, device: str
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rank0.json"
        args = (world_size, free_port(), device, metric, case, str(out))
        mp.start_processes(_worker, args, nprocs=world_size, start_method="spawn")
        return json.loads(out.read_text())


def world_size(device: str, ranks: int | None = None) -> int:
    """The split run's number of ranks: ``ranks`` (default 2) on the CPU; on CUDA one per
    visible GPU (``ranks`` of them where given), refused where fewer than 2 are visible."""
    if device not in ("cpu", "cuda"):
        raise LocrobError(f"bench distributed runs on cpu or cuda, got '{device}'")
    if device == "cuda":
        visible = torch.cuda.device_count()
        if visible < 2:
            raise LocrobError(
                f"bench distributed --device cuda runs one rank per GPU and needs at least 2 "
                f"visible GPUs; {visible} visible"
            )
        if ranks is not None and ranks > visible:
            raise LocrobError(f"--ranks {ranks} needs as many visible GPUs; {visible} visible")
        ranks = visible if ranks is None else ranks
    ranks = 2 if ranks is None else ranks
    if ranks < 2:
        raise LocrobError(f"--ranks must be at least 2, got {ranks}")
    return ranks


def bench_distributed(
    metrics: Sequence[str] = tuple(CASES),
    ranks: int | None = None,
    cases: dict[str, tuple[dict[str, Any], int]] = CASES,
    device: str = "cpu",
) -> list[DistributedBench]:
    """Each metric evaluated on 1 process and on :func:`world_size` processes of this machine
    (CPU cores, or GPUs with ``device="cuda"``), with its options and number of examples from
    ``cases``."""
    ranks = world_size(device, ranks)
    rows = []
    for metric in metrics:
        one, many = (_time(metric, cases[metric], n, device) for n in (1, ranks))
        rows.append(DistributedBench(metric, ranks, one["seconds"], many["seconds"], many["bytes"]))
    return rows


def distributed_table(rows: Sequence[DistributedBench]) -> str:
    """The Markdown table ``locrob bench distributed`` prints."""
    header = [
        "metric",
        "1 process (s)",
        f"{rows[0].ranks} processes (s)" if rows else "N processes (s)",
        "speed-up",
        "efficiency",
        "bytes reduced per rank",
        "target",
    ]
    cells = [
        [
            r.metric,
            f"{r.one:.2f}",
            f"{r.many:.2f}",
            f"{r.speedup:.2f}x",
            f"{r.efficiency:.0%}",
            r.reduced_bytes,
            f">= {TARGET}x on 2" if r.metric in ("local-robustness", "corruptions") else "",
        ]
        for r in rows
    ]
    return markdown.table(header, cells)
