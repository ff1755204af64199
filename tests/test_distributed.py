"""One evaluation split over a torch.distributed group: the same numbers at any world size.

The groups are real: gloo on the loopback address, one spawned process per rank, each bounded
in time. Every rank writes the report it computed; all must equal the single-process one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import one_thread

import locrob
from locrob.distributed import SINGLE, Shard, current, free_port
from locrob.pair_distances import separation

SECONDS = 240
NORMS = ("inf", "l2")  # a whole group's run; past it the test fails instead of hanging
METRICS = {
    "clean": {},
    "noise": {"snr_db": [10, 0, -10], "repeats": 2},
    "corruptions": {
        "corruptions": ["gaussian_noise", "impulse_noise", "glass_blur", "fog", "contrast"],
        "severities": [1, 5],
    },
    "separation": {"max_examples": 40, "norm": "l2"},
    "adversarial": {
        "attacks": [{"attack": "PGD", "eps": 0.03, "alpha": 0.01, "steps": 2}],
        "block": 8,
    },
    # a fixed chunk: the tuned one is timed, so each run could pick another
    "local-robustness": {
        "max_examples": 6,
        "n_draws": 10,
        "radii": [0.1, 0.5],
        "at": [0.5],
        "chunk_size": 8,
        "method": "search",
    },
}
if importlib.util.find_spec("art") is not None:  # ART's scores, where ART is installed
    METRICS |= {"clever": {"max_examples": 5, "nb_batches": 2, "batch_size": 4}}
    METRICS |= {"loss-sensitivity": {}}


@dataclass
class Fragile(locrob.Metric):
    """A third-party metric that does not declare itself shardable."""

    name = "fragile"

    @locrob.hookimpl
    def measure(self, model, data, context):
        right = self.correct(model, data, context)
        return self.result({"accuracy": float(right.float().mean())}, n=len(right))


OPTIONS = {"num_classes": 10, "in_channels": 3, "image_size": 32}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)  # random weights, the same on every rank
    return locrob.load_model("small-cnn", **OPTIONS)


def _evaluate(batch_size: int) -> dict:
    """The report of one process, on one thread as each rank runs: a gradient's last bits
    depend on how many threads summed it (seen on an AMD EPYC, in ART's CLEVER scores)."""
    with one_thread():
        report = locrob.evaluate(
            _model(),
            "digits",
            [*METRICS, Fragile()],
            metric_options=METRICS,
            max_examples=45,
            batch_size=batch_size,
            device="cpu",
            seed=4,
        )
    found = {name: result.to_dict() for name, result in report.metrics.items()}
    found["local-robustness"]["details"].pop("seconds")  # the only timing in the report
    return found | {"world_size": report.settings["world_size"]}


def _separation(shard: Shard) -> dict:
    """Both kinds of separation histogram (exact L-inf on uint8, binned L2) in small tiles, so
    that every rank has several."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (90, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 4, (90,), generator=g)
    kinds = {norm: separation(x, y, norm, tile=16, device="cpu", shard=shard) for norm in NORMS}
    return {norm: [r.counts.tolist(), r.pair_counts.tolist()] for norm, r in kinds.items()}


def _layerwise(shard: Shard) -> dict:
    """Layer-wise alpha of a small chain, searched, in chunks small enough that every rank
    has sampling chunks and search starts of each stage."""
    torch.manual_seed(1)
    chain = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )
    x = torch.rand(5, 12, generator=torch.Generator().manual_seed(2))
    found = locrob.layerwise_alpha(
        chain, x, [0.1, 0.4], n_draws=8, chunk_size=6, method="search", seed=3, shard=shard
    )
    return found.to_dict()


def _rank(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        assert current() == Shard(rank, world_size)
        found = _evaluate(batch_size=7)
        found["pairs"] = _separation(current())
        found["layerwise"] = _layerwise(current())
        Path(out, f"rank-{rank}.json").write_text(json.dumps(found))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run_group(world_size: int, out: Path) -> list[dict]:
    context = mp.start_processes(
        _rank,
        (world_size, free_port(), str(out)),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + SECONDS
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"a group of {world_size} did not finish in {SECONDS} s")
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(world_size)]


@pytest.fixture(scope="module")
def single() -> dict:
    return _evaluate(batch_size=7) | {
        "pairs": _separation(SINGLE),
        "layerwise": _layerwise(SINGLE),
    }


@pytest.mark.parametrize("world_size", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_every_rank_reports_what_one_process_measures(world_size, single, tmp_path):
    reports = _run_group(world_size, tmp_path)
    for found in reports:
        assert found.pop("world_size") == world_size
        assert found == {k: v for k, v in single.items() if k != "world_size"}
    assert single["world_size"] == 1
    # the perturbations did change predictions: equal numbers are not all-or-nothing ones
    accuracy = single["noise"]["details"]["accuracy"]
    assert len(set(accuracy)) > 1


def test_the_numbers_do_not_depend_on_the_batch_size(single):
    """Counts are integers and draws are seeded per image: equal at any batch size. A sum of
    floats (ART's loss sensitivity, summed per batch) differs by rounding only."""
    other = _evaluate(batch_size=45)
    sensitivities = [
        found.pop("loss-sensitivity", {"summary": {"loss_sensitivity": 0.0}})["summary"]
        for found in (other, {**single})
    ]
    assert sensitivities[0]["loss_sensitivity"] == pytest.approx(
        sensitivities[1]["loss_sensitivity"], rel=1e-6
    )
    expected = {
        k: v for k, v in single.items() if k not in ("pairs", "layerwise", "loss-sensitivity")
    }
    assert other == expected


def test_a_shard_tiles_the_indices_and_sums_alone_as_the_identity():
    for world_size in (1, 2, 3, 7):
        parts = [Shard(rank, world_size).indices(10) for rank in range(world_size)]
        assert [i for part in parts for i in part] == list(range(10))
    t = torch.arange(3)
    assert SINGLE.sum(t) is t and current() == SINGLE  # no group here


@pytest.fixture
def cli_run(tmp_path, locrob_cli):
    """``locrob evaluate`` arguments on a checkpoint, and the report of one process."""
    checkpoint = tmp_path / "model.pt"
    locrob.save_checkpoint(checkpoint, _model(), "small-cnn", OPTIONS)
    args = ["evaluate", "--model", f"checkpoint:{checkpoint}", "--metrics", "clean,noise"]
    args += ["--max-examples", "30", "--batch-size", "8", "-o", "noise.snr_db=[0]"]
    code, _, err = locrob_cli(*args, "--out", str(tmp_path / "one"))
    assert code == 0, err
    return args, locrob.load_report(tmp_path / "one")


def _same_metrics(one: locrob.Report, two: locrob.Report) -> bool:
    return {k: r.to_dict() for k, r in one.metrics.items()} == {
        k: r.to_dict() for k, r in two.metrics.items()
    }


def _torchrun(args: list[str], out: Path) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [*launch, "-m", "locrob", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=SECONDS,
        env={**os.environ, "OMP_NUM_THREADS": "1", "LOCROB_PROGRESS": "0"},
    )


def test_torchrun_splits_the_cli_evaluation_and_rank_0_writes_the_report(tmp_path, cli_run):
    """``torchrun --standalone --nproc_per_node=2 -m locrob evaluate``: the same report (the
    refusals and failures of the same command run in the fault group below)."""
    args, one = cli_run
    done = _torchrun(args, tmp_path / "two")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("report:") == 1  # rank 0 alone writes and prints
    two = locrob.load_report(tmp_path / "two")
    assert two.settings["world_size"] == 2 and one.settings["world_size"] == 1
    assert _same_metrics(one, two)


@dataclass
class Faulty(locrob.Metric):
    """Sums a tally over the group, but rank 1 fails before its part: it raises, or it is
    killed (``kill``: no error raised)."""

    name = "faulty"
    shardable = True
    kill: bool = False

    @locrob.hookimpl
    def measure(self, model, data, context):
        if context.rank == 1:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise locrob.LocrobError("disk full")
        return self.result({"n": float(self.shard(context).sum(torch.ones(1)))})


@dataclass
class Slow(locrob.Metric):
    """A third-party metric, not shardable, that takes longer than the group's timeout."""

    name = "slow"

    @locrob.hookimpl
    def measure(self, model, data, context):
        time.sleep(4)
        return self.result({"n": 1.0})


class FaultMetrics:
    """The two metrics above by name, as an installed plugin registers its own."""

    @locrob.hookimpl
    def register_metrics(self, register):
        register("faulty", Faulty)
        register("slow", Slow)


FAULT_RANKS = 3
# ``locrob evaluate`` (the command's function, --out given) in a fresh group per case; rank 1
# gets the arguments of the case's second dict, the others its first; killed: the last case
DIFFER = {
    "untrained": ({"model": "small-cnn"}, {}),  # random weights, drawn anew on each rank
    "data": ({"dataset": "npz:{tmp}/a/digits.npz"}, {"dataset": "npz:{tmp}/b/digits.npz"}),
    "seed": ({}, {"seed": 1}),
    "n_examples": ({}, {"max_examples": 9}),
    "option": ({"option": ["noise.snr_db=[0]"]}, {"option": ["noise.snr_db=[10]"]}),
}
FAULTS = {
    "raises": ({"metrics": "faulty"}, {}),
    "slow": ({"metrics": "slow", "timeout_s": 2}, {}),
    **{case: ({"metrics": "noise", **same}, other) for case, (same, other) in DIFFER.items()},
    "killed": ({"metrics": "faulty", "option": ["faulty.kill=true"]}, {}),
}


def _fault_rank(rank: int, ports: list[int], tmp: str) -> None:
    """Each case of :data:`FAULTS` on this rank: its error message and warnings, written
    after every case (a killed rank leaves the ones before)."""
    from locrob import cli, plugins

    torch.set_num_threads(1)
    plugins.host.register(FaultMetrics(), name="fault-metrics")
    found = {}
    for (case, (common, odd)), port in zip(FAULTS.items(), ports, strict=True):
        args = {"model": f"checkpoint:{tmp}/model.pt", "max_examples": 8, "batch_size": 8}
        args |= common | (odd if rank == 1 else {})
        timeout = timedelta(seconds=args.pop("timeout_s", 60))
        args = {k: v.format(tmp=tmp) if isinstance(v, str) else v for k, v in args.items()}
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=FAULT_RANKS,
            timeout=timeout,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                cli.evaluate(**args, out=Path(tmp, case), device="cpu")
                message = "no error"
            except Exception as err:
                message = f"{type(err).__name__}: {err}"
            finally:
                if dist.is_initialized():
                    dist.destroy_process_group()
        found[case] = {"message": message, "warnings": [str(w.message) for w in caught]}
        Path(tmp, f"rank-{rank}.json").write_text(json.dumps(found))


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> tuple[Path, list[int | None], list[dict]]:
    """The fault cases run once by one group of three spawned processes: the folder, the
    exit codes and what each rank saw. Every process must have stopped within 120 s (the
    ones alive past it are killed and the tests fail: a rank waited for a failed one)."""
    tmp = tmp_path_factory.mktemp("faults")
    locrob.save_checkpoint(tmp / "model.pt", _model(), "small-cnn", OPTIONS)
    digits = locrob.load_dataset("digits")
    for name, flipped in (("a", 0), ("b", 1)):  # the same name and shape, one pixel apart
        test_x = digits.test_x[:20].clone()
        test_x[0, 0, 0, 0] ^= flipped
        (tmp / name).mkdir()
        arrays = {"x_train": digits.train_x[:20], "y_train": digits.train_y[:20]}
        arrays |= {"x_test": test_x, "y_test": digits.test_y[:20]}
        np.savez(tmp / name / "digits.npz", classes=digits.classes, **arrays)
    ports: set[int] = set()
    while len(ports) < len(FAULTS):
        ports.add(free_port())
    context = mp.start_processes(
        _fault_rank,
        (sorted(ports), str(tmp)),
        nprocs=FAULT_RANKS,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120
    while any(process.is_alive() for process in context.processes):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a rank waited for a failed one past 120 s")
        time.sleep(0.2)
    seen = [json.loads((tmp / f"rank-{r}.json").read_text()) for r in range(FAULT_RANKS)]
    return tmp, [process.exitcode for process in context.processes], seen


@pytest.mark.slow  # the fault cases' spawned group of 3
def test_a_failing_rank_stops_every_rank_with_its_cause(faults):
    tmp, _, seen = faults
    assert seen[1]["raises"]["message"] == "LocrobError: disk full"
    for rank in (0, 2):
        assert seen[rank]["raises"]["message"] == (
            f"LocrobError: rank 1: LocrobError: disk full (rank {rank} stopped with it)"
        )
    assert not (tmp / "raises" / "report.json").exists()


@pytest.mark.slow  # the fault cases' spawned group of 3
def test_a_killed_rank_is_named_by_the_others(faults):
    """Rank 1 of 3 dies without a word: the others stop in bounded time; rank 0 names it."""
    tmp, codes, seen = faults
    assert codes == [0, -signal.SIGKILL, 0]
    assert "killed" not in seen[1]
    rank_0 = seen[0]["killed"]["message"]
    assert rank_0.startswith("LocrobError: rank(s) 1 stopped without an error"), rank_0
    assert seen[2]["killed"]["message"].startswith("LocrobError: ")
    assert not (tmp / "killed" / "report.json").exists()


@pytest.mark.slow  # the fault cases' spawned group of 3
@pytest.mark.parametrize("case", DIFFER)
def test_ranks_of_other_inputs_are_refused_at_start_naming_what_differs(faults, case):
    """Another model, other data (the same name and shape, one pixel apart) or other
    settings on rank 1: every rank refuses before measuring, naming the differing fields."""
    tmp, _, seen = faults
    fields = {
        "untrained": "model.weights",
        "data": "data.arrays",
        "seed": "seed",
        "n_examples": "n_examples",
        "option": "metrics.noise.snr_db",
    }[case]
    # an untrained architecture is drawn anew on rank 2 too; otherwise rank 1 alone differs
    ranks = [1, 2] if case == "untrained" else [1]
    named = "; ".join(f"rank {r} differs in {fields}" for r in ranks)
    refusal = (
        f"rank(s) {', '.join(map(str, ranks))} hold another model, data or settings than "
        f"rank 0 ({named}); "
    )
    for rank in range(FAULT_RANKS):
        assert refusal in seen[rank][case]["message"], seen[rank][case]["message"]
    assert not (tmp / case / "report.json").exists()


@pytest.mark.slow  # the fault cases' spawned group of 3
def test_the_ranks_wait_for_rank_0_alone_past_the_backends_timeout(faults):
    """They wait in the store, not in a collective that would give up after 2 s here; rank 0
    alone warns that the metric is not shardable, and writes the report."""
    tmp, _, seen = faults
    assert [seen[rank]["slow"]["message"] for rank in range(FAULT_RANKS)] == ["no error"] * 3
    alone = [[w for w in seen[rank]["slow"]["warnings"] if "shardable" in w] for rank in (0, 1, 2)]
    assert alone == [
        [
            "metric 'slow' does not declare itself shardable: it runs on rank 0 alone while 2 "
            "other process(es) wait"
        ],
        [],
        [],
    ]
    assert locrob.load_report(tmp / "slow").settings["world_size"] == 3


def test_srun_tasks_form_the_group_from_slurm_variables(tmp_path, cli_run):
    """Two ``srun`` tasks (SLURM_PROCID / SLURM_NTASKS, the rendezvous exported): one group."""
    args, one = cli_run
    port = str(free_port())
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "locrob", *args, "--out", str(tmp_path / "two")],
            env={
                **{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")},
                "SLURM_NTASKS": "2",
                "SLURM_PROCID": str(rank),
                "SLURM_LOCALID": str(rank),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "OMP_NUM_THREADS": "1",
                "LOCROB_PROGRESS": "0",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [task.communicate(timeout=SECONDS) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], [err[-1000:] for _, err in outputs]
    assert "report:" in outputs[0][0] and "report:" not in outputs[1][0]
    two = locrob.load_report(tmp_path / "two")
    assert two.settings["world_size"] == 2 and _same_metrics(one, two)


def test_launch_environment_reads_torchrun_then_slurm():
    from locrob.distributed import launch_environment

    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3", "SLURM_NTASKS": "2"}
    assert launch_environment(torchrun)["WORLD_SIZE"] == "8"  # torchrun's own, first
    slurm = {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}
    with pytest.raises(locrob.LocrobError, match="export MASTER_ADDR"):
        launch_environment(slurm)
    env = launch_environment({**slurm, "MASTER_ADDR": "node1", "MASTER_PORT": "29500"})
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("2", "4", "0")
    assert launch_environment({"SLURM_NTASKS": "1"}).get("WORLD_SIZE") is None
