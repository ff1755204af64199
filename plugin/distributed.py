"""Evaluation split over the processes of a torch.distributed group, by index range.

Nothing here starts processes or moves bytes of its own: ``torchrun`` (or ``srun``, or a
caller's ``init_process_group``) makes the group, and the sums go through
``torch.distributed.all_reduce`` (NCCL on GPUs, gloo on CPUs). Without an initialized group
every function is the single-process identity, so plain use needs nothing of this.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from locrob.errors import LocrobError
from locrob.runtime import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place in the group: ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    def indices(self, n: int) -> range:
        """This rank's contiguous part of ``range(n)``; the parts of all ranks tile it."""
        return range(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def blocks(self, n: int, size: int) -> range:
        """This rank's part of ``range(n)`` in whole blocks of ``size`` (each starting at a
        multiple of ``size``): every block is computed as one process would compute it, at any
        world size, so even floating-point results do not depend on the number of ranks."""
        part = self.indices(-(-n // size))
        return range(part.start * size, min(n, part.stop * size))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place (every rank gets the total)."""
        if self.world_size > 1:
            collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
        return tensor

    def whole(self, part: torch.Tensor, n: int, start: int, dim: int = 0) -> torch.Tensor:
        """Every rank's ``part`` put in its place: ``part`` lies at ``start`` along ``dim``
        of a tensor of size ``n`` there, zeros elsewhere, summed over the ranks (exact: each
        place has one rank's value and the others' zeros)."""
        shape = list(part.shape)
        shape[dim] = n
        out = part.new_zeros(shape)
        out.narrow(dim, start, part.shape[dim]).copy_(part)
        return self.sum(out)

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``'s elementwise maximum over the ranks, in place."""
        if self.world_size > 1:
            collective(dist.all_reduce, tensor, op=dist.ReduceOp.MAX)
        return tensor


SINGLE = Shard()


class CollectiveBroke(LocrobError):
    """A collective operation failed: most often another rank has left the group."""


def collective(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, a ``torch.distributed`` collective, with its failure raised
    as :class:`CollectiveBroke` (gloo and NCCL raise a bare ``RuntimeError`` when a peer is
    gone), so that :func:`failures_named` can tell it from a rank's own error."""
    try:
        return call(*args, **kwargs)
    except RuntimeError as err:
        raise CollectiveBroke(str(err).splitlines()[0]) from err


def free_port() -> int:
    """A free TCP port on the loopback address, for the rendezvous of a group of local
    processes (the tests, ``locrob bench distributed``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def current() -> Shard:
    """The shard of this process: its rank and the group's size, or the single process."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return SINGLE


RANK_ZERO_WAIT = timedelta(days=7)  # a metric on rank 0 alone may take hours (AutoAttack)
READ_WAIT_S = 60.0  # how long rank 0 waits for the others to have read what it sent


def from_rank_zero(work: Callable[[], T]) -> T:
    """``work()`` run on rank 0 alone and its value sent to every rank; an error on rank 0
    is raised on every rank (so none waits for a value that will not come).

    The other ranks wait in the group's store, not in a collective: a collective would give
    up at the backend's timeout (10 min for NCCL), and rank 0's work may take hours. They stop
    at once if rank 0 goes, since the store goes with it (or the launcher stops them); rank 0
    waits until they have read what it sent, as the store may leave with it.
    """
    shard = current()
    if shard.world_size == 1:
        return work()
    store = _store()
    # this rank's n-th call in this group's store: the same n on every rank, fresh per group
    key = f"locrob/rank0/{collective(store.add, f'locrob/rank0-calls/{shard.rank}', 1)}"
    if shard.rank == 0:
        try:
            value = work()
        except Exception as err:
            _send(store, key, ("error", f"{type(err).__name__}: {err}"), shard)
            raise
        _send(store, key, ("value", value), shard)
        return value
    collective(store.wait, [key], RANK_ZERO_WAIT)
    kind, value = pickle.loads(collective(store.get, key))
    collective(store.add, f"{key}/read", 1)
    if kind == "error":
        raise LocrobError(f"rank 0 failed: {value}")
    return value


def _send(store: Any, key: str, sent: tuple[str, Any], shard: Shard) -> None:
    """Rank 0's value (or error) into the store, then a bounded wait for every reader."""
    collective(store.set, key, pickle.dumps(sent))
    deadline = time.monotonic() + READ_WAIT_S
    while collective(store.add, f"{key}/read", 0) < shard.world_size - 1:
        if time.monotonic() > deadline:  # a reader is gone: its launcher reports it
            return
        time.sleep(0.01)


def launch_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The rank, world size and local rank a launcher set: ``torchrun``'s variables, or
    else, one process per task under ``srun``, SLURM's (``SLURM_PROCID``, ``SLURM_NTASKS``,
    ``SLURM_LOCALID``; the rendezvous ``MASTER_ADDR`` / ``MASTER_PORT`` must be exported,
    as the README's SLURM example does)."""
    if "WORLD_SIZE" in environ:
        return dict(environ)
    if int(environ.get("SLURM_NTASKS", "1")) > 1:
        if "MASTER_ADDR" not in environ or "MASTER_PORT" not in environ:
            raise LocrobError(
                "under srun, export MASTER_ADDR (the first node) and MASTER_PORT for the "
                "group's rendezvous; see README, 'Several processes'"
            )
        return {
            **environ,
            "RANK": environ["SLURM_PROCID"],
            "WORLD_SIZE": environ["SLURM_NTASKS"],
            "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        }
    return dict(environ)


@contextmanager
def launched_group(device: str | torch.device | None) -> Iterator[str | torch.device | None]:
    """Join, for the block, the group a launcher started (``torchrun`` or ``srun``: see
    :func:`launch_environment`), unless there is none or it is already joined; yields
    the device this rank measures on: its own GPU (``cuda:LOCAL_RANK``, over NCCL) where the
    run is on CUDA, else the same device (over gloo). The group is left at the end, once every
    rank is there (a process that exits with a live gloo group may abort)."""
    env = launch_environment(os.environ)
    if int(env.get("WORLD_SIZE", "1")) <= 1 or current().world_size > 1:
        yield device
        return
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(env.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]), init_method="env://"
    )
    try:
        yield dev
        collective(dist.barrier)
    finally:
        if dist.is_initialized():  # a failed rank has left already (failures_named)
            dist.destroy_process_group()


def check_same(what: str, fingerprint: Mapping[str, Any]) -> None:
    """Refuse a group whose ranks hold different ``what``: their sums would mix measurements
    of different things. ``fingerprint`` is small and JSON-able (digests stand for weights and
    arrays); the error names each differing rank and the fields, dotted, in which it differs."""
    shard = current()
    if shard.world_size == 1:
        return
    gathered: list[Any] = [None] * shard.world_size
    collective(dist.all_gather_object, gathered, _flat(fingerprint))
    mine = gathered[0]
    differ: dict[int, list[str]] = {}
    for rank, theirs in enumerate(gathered):
        fields = sorted(k for k in theirs.keys() | mine.keys() if theirs.get(k) != mine.get(k))
        if fields:
            differ[rank] = fields
    if differ:
        detail = "; ".join(f"rank {r} differs in {', '.join(f)}" for r, f in differ.items())
        raise LocrobError(
            f"rank(s) {', '.join(map(str, differ))} hold another {what} than rank 0 ({detail}); "
            "every rank must evaluate the same model on the same data with the same settings "
            "(an untrained architecture is drawn at random on each rank: give a checkpoint)"
        )


def _flat(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one, keyed by dotted paths (``metrics.noise.snr_db``)."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, Mapping):
            flat |= _flat(item, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = item
    return flat


ERROR_KEY = "locrob/error"
ANSWER_KEY = "locrob/answered/{}"
GRACE_S = 5.0  # how long the survivors of a lost rank wait for each other's answer


@contextmanager
def failures_named(shard: Shard) -> Iterator[None]:
    """Make a rank's failure every rank's clear error, at once.

    A rank that raises inside the block writes ``rank R: cause`` into the group's store and
    leaves the group (which cannot serve again: the others wait in a collective), so that
    their collective breaks now rather than at the backend's timeout; a rank whose collective
    breaks raises the recorded cause instead of the transport's message. Where nothing is
    recorded, a rank stopped without a word (a signal, the out-of-memory killer, a lost node):
    the survivors answer a roll call in the store for a few seconds and name the ranks that
    did not answer.
    """
    if shard.world_size == 1:
        yield
        return
    try:
        yield
    except Exception as err:
        recorded = _read_error()
        if recorded is not None and not recorded.startswith(f"rank {shard.rank}:"):
            raise LocrobError(f"{recorded} (rank {shard.rank} stopped with it)") from None
        if isinstance(err, CollectiveBroke) and recorded is None:
            raise LocrobError(_roll_call(shard, str(err))) from None
        _write_error(f"rank {shard.rank}: {type(err).__name__}: {err}")
        if dist.is_initialized():
            dist.destroy_process_group()
        raise


def _roll_call(shard: Shard, transport: str) -> str:
    """The message of a survivor of a broken collective: a recorded cause if one comes, else
    the ranks that did not answer within ``GRACE_S`` (those still busy elsewhere included)."""
    try:
        store = _store()
        store.set(ANSWER_KEY.format(shard.rank), "1")
        # leaving breaks the collectives the others may still wait in, so they answer too;
        # the store lives on while referenced here
        dist.destroy_process_group()
        deadline = time.monotonic() + GRACE_S
        while True:
            answered = [r for r in range(shard.world_size) if store.check([ANSWER_KEY.format(r)])]
            recorded = _read_error()
            if recorded is not None or len(answered) == shard.world_size:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    except Exception:  # the store is gone with the process that held it
        return (
            "another rank stopped without an error and the group's store went with it (rank 0, "
            "or the launcher, holds it): see the launcher's log; the transport said: "
            f"{transport}"
        )
    if recorded is not None:
        return f"{recorded} (rank {shard.rank} stopped with it)"
    silent = [str(r) for r in range(shard.world_size) if r not in answered]
    if not silent:  # every rank is here: the collective itself failed
        return f"a collective failed on every rank: {transport}"
    return (
        f"rank(s) {', '.join(silent)} stopped without an error (killed by a signal, out of "
        f"memory, or its node lost; or still busy {GRACE_S:g} s later): see the launcher's log; "
        f"the transport said: {transport}"
    )


def _store() -> Any:
    # the rendezvous store every group has; torch has no public accessor for the default one
    return dist.distributed_c10d._get_default_store()


def _write_error(message: str) -> None:
    # the store may have gone with a failed rank 0: the error propagates all the same
    with suppress(Exception):
        _store().set(ERROR_KEY, message)


def _read_error() -> str | None:
    try:
        store = _store()
        return store.get(ERROR_KEY).decode() if store.check([ERROR_KEY]) else None
    except Exception:
        return None
