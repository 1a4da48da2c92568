"""One writer per folder: a second `run_probe` of the same run refuses, naming the holder; a dead owner's lock (or
unit claim) is taken over by exactly one of several processes entering together."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from pipeline.errors import ChexError


def test_a_second_probe_of_the_same_run_refuses_naming_the_holder(tmp_path):
    from pipeline.probe import ProbeConfig, run_probe
    from pipeline.probe.protocol import run_folder
    from tests.pipeline.probe.conftest import make_workspace as make_probe_workspace

    ws = make_probe_workspace(tmp_path / "ws")
    backbone = next((ws.root / "features").iterdir()).name
    config = ProbeConfig(lrs=(1e-2,), epochs=1, n_resamples=10)
    folder = run_folder(ws, "toy", backbone, "linear", config).root
    folder.mkdir(parents=True)
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "time": time.time()}  # a live process
    (folder / ".chex-lock").write_text(json.dumps(holder))
    with pytest.raises(ChexError, match=rf"pid {os.getppid()}"):
        run_probe(ws, "toy", "linear", config=config, progress=False)
    assert not (folder / "results.parquet").exists()

    holder["pid"] = 2**22 + 11  # a dead process on this host: its lock is taken over, the run goes ahead
    (folder / ".chex-lock").write_text(json.dumps(holder))
    summary = run_probe(ws, "toy", "linear", config=config, progress=False)
    assert (summary.folder / "results.parquet").is_file() and not (folder / ".chex-lock").exists()


# ---- take-over of a dead owner's lock by several processes at once (issue 26, item 6) ---------------------------
# Each trial: a lock or claim left by a dead process on this host, then N processes released together by a barrier.
# The old take-over (read owner, unlink, create) let a late process unlink the fresh lock of an early one.

DEAD_PID = 2**22 + 11  # above Linux's largest pid: never a live process


def _dead_owner() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": DEAD_PID, "time": time.time() - 5})


def _slow_liveness_check() -> None:
    """Make this (forked) process's "is the owner alive?" check take a few milliseconds, as on a loaded machine or
    a network file system: the window between judging a lock stale and removing it, where the race lives."""
    import random

    import psutil

    real = psutil.pid_exists
    rng = random.Random(os.getpid())

    def slow(pid: int) -> bool:
        time.sleep(rng.uniform(0.0, 0.02))
        return real(pid)

    psutil.pid_exists = slow


def _hold_folder_lock(folder, holders, barrier, results) -> None:
    from pipeline.locks import folder_lock

    barrier.wait()
    with folder_lock(folder, "test folder", wait_s=60):
        marker = holders / str(os.getpid())
        marker.touch()
        others = len(os.listdir(holders)) - 1  # anyone else inside at the same time?
        time.sleep(0.05)
        others = max(others, len(os.listdir(holders)) - 1)
        marker.unlink()
    results.put(others)


def _claim_unit(store, barrier, results) -> None:
    from pipeline.store.ledger import Ledger, Unit

    barrier.wait()
    results.put(Ledger(store).claim(Unit(0, 0, ["a"], [0])))


def _hold_planning_lock(store, holders, barrier, results) -> None:
    from pipeline.store.ledger import Ledger

    barrier.wait()
    with Ledger(store).planning_lock(timeout_s=60):
        marker = holders / str(os.getpid())
        marker.touch()
        others = len(os.listdir(holders)) - 1
        time.sleep(0.05)
        others = max(others, len(os.listdir(holders)) - 1)
        marker.unlink()
    results.put(others)


def _slowed(target, *args) -> None:
    _slow_liveness_check()
    target(*args)


def _race(target, args, n: int) -> list:
    import multiprocessing

    context = multiprocessing.get_context("fork")  # a forked child starts in milliseconds: a real race
    barrier, results = context.Barrier(n), context.Queue()
    procs = [context.Process(target=_slowed, args=(target, *args, barrier, results)) for _ in range(n)]
    for proc in procs:
        proc.start()
    values = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return values


@pytest.mark.parametrize("trial", range(4))
def test_a_dead_owners_folder_lock_is_taken_over_by_exactly_one_process_at_a_time(tmp_path, trial):
    folder, holders = tmp_path / "run", tmp_path / "holders"
    folder.mkdir()
    holders.mkdir()
    (folder / ".chex-lock").write_text(_dead_owner())
    overlaps = _race(_hold_folder_lock, (folder, holders), n=4)
    assert overlaps == [0, 0, 0, 0], f"two holders at once: {overlaps}"
    assert not (folder / ".chex-lock").exists()


@pytest.mark.parametrize("trial", range(4))
def test_a_dead_writers_unit_claim_goes_to_exactly_one_process(tmp_path, trial):
    from pipeline.store.ledger import Ledger

    ledger = Ledger(tmp_path / "store")
    ledger.ensure()
    (ledger.claims_dir / "unit-000000").write_text(_dead_owner())
    claimed = _race(_claim_unit, (tmp_path / "store",), n=4)
    assert sorted(claimed) == [False, False, False, True], claimed


@pytest.mark.parametrize("trial", range(3))
def test_a_dead_planners_lock_is_taken_over_by_one_process_at_a_time(tmp_path, trial):
    from pipeline.store.ledger import Ledger

    ledger = Ledger(tmp_path / "store")
    ledger.ensure()
    holders = tmp_path / "holders"
    holders.mkdir()
    (ledger.root / "plan.lock").write_text(_dead_owner())
    overlaps = _race(_hold_planning_lock, (tmp_path / "store", holders), n=4)
    assert overlaps == [0, 0, 0, 0], f"two planners at once: {overlaps}"
