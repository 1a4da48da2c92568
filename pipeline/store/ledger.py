"""The completion ledger of a feature store: which write units exist, who is writing them, which are done.

A write unit is one Zarr shard along N (a few hundred images), so two writers never touch the same file.
Files under `<store>/ledger/`:
    plan/unit-000012.json   rows the unit holds: start row, image ids, views, input group (written once)
    claims/unit-000012      O_EXCL claim of a writer (host, pid); removed once the unit is done
    done/unit-000012.json   written (atomically) only after the unit's data is flushed: the truth for readers
    plan.lock               O_EXCL lock held while units are planned and the arrays resized
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from pipeline.errors import StoreError

LEDGER_DIR = "ledger"


@dataclass(frozen=True)
class Unit:
    """One write unit: rows [start, start + len(image_ids)) of every array."""

    index: int
    start: int
    image_ids: list[str]
    views: list[int]
    group: str = ""  # the input the rows come from (a shard file, or a manifest block)
    sources: list[str] = field(default_factory=list)  # per-row image path for manifest inputs

    @property
    def stop(self) -> int:
        return self.start + len(self.image_ids)

    @property
    def name(self) -> str:
        return f"unit-{self.index:06d}"


class Ledger:
    """Plan, claim and done markers of one store."""

    def __init__(self, store_path: str | Path) -> None:
        self.root = Path(store_path) / LEDGER_DIR
        self.plan_dir, self.claims_dir, self.done_dir = self.root / "plan", self.root / "claims", self.root / "done"

    def ensure(self) -> None:
        for d in (self.plan_dir, self.claims_dir, self.done_dir):
            d.mkdir(parents=True, exist_ok=True)

    # ---- planning -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def planning_lock(self, timeout_s: float = 120.0) -> Iterator[None]:
        """Exclusive lock for planning units and resizing arrays; waits for another planner, then refuses."""
        self.ensure()
        lock = self.root / "plan.lock"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                if _stale(lock):
                    lock.unlink(missing_ok=True)
                    continue
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"feature store {self.root.parent} is locked by another `chex embed` ({_owner_text(lock)}); "
                        f"wait for it to finish, or delete {lock} if that process is gone"
                    ) from None
                time.sleep(0.2)
        try:
            os.write(fd, _owner_bytes())
            os.close(fd)
            yield
        finally:
            lock.unlink(missing_ok=True)

    def units(self) -> list[Unit]:
        """Every planned unit, by index."""
        if not self.plan_dir.is_dir():
            return []
        return [self._read_unit(p) for p in sorted(self.plan_dir.glob("unit-*.json"))]

    def add_unit(self, unit: Unit) -> None:
        _atomic_json(self.plan_dir / f"{unit.name}.json", asdict(unit))

    # ---- claims ---------------------------------------------------------------------------------------------
    def claim(self, unit: Unit, owner_pid: int | None = None) -> bool:
        """True if this process (or `owner_pid`) now owns `unit`: a fresh claim, or one left by a dead process."""
        path = self.claims_dir / unit.name
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if _stale(path):
                    path.unlink(missing_ok=True)
                    continue
                return False
            os.write(fd, _owner_bytes(owner_pid))
            os.close(fd)
            # Another writer may have finished the unit since it was planned (its claim goes only after the
            # done marker): never redo, and so never rewrite under readers, a finished unit.
            if (self.done_dir / f"{unit.name}.json").is_file():
                path.unlink(missing_ok=True)
                return False
            return True
        return False

    def release(self, unit: Unit, only_pid: int | None = None) -> None:
        """Drop the claim on `unit` (only if `only_pid` owns it, when given)."""
        path = self.claims_dir / unit.name
        if only_pid is not None:
            try:
                if json.loads(path.read_text()).get("pid") != only_pid:
                    return
            except (OSError, ValueError):
                return
        path.unlink(missing_ok=True)

    # ---- completion -----------------------------------------------------------------------------------------
    def mark_done(self, unit: Unit, seconds: float) -> None:
        """Record `unit` as complete; call only after its data is flushed to disk."""
        marker = {"unit": unit.index, "rows": len(unit.image_ids), "seconds": round(seconds, 3), "time": time.time()}
        marker |= {"host": socket.gethostname(), "pid": os.getpid()}
        _atomic_json(self.done_dir / f"{unit.name}.json", marker)
        self.release(unit)

    def done_indices(self) -> set[int]:
        if not self.done_dir.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in self.done_dir.glob("unit-*.json")}

    def _read_unit(self, path: Path) -> Unit:
        try:
            return Unit(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise StoreError(f"ledger file {path} is unreadable ({exc}); the store may be damaged") from exc


def _owner_bytes(pid: int | None = None) -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": pid or os.getpid(), "time": time.time()}).encode()


def _owner_text(path: Path) -> str:
    try:
        owner = json.loads(path.read_text())
        return f"host {owner['host']}, pid {owner['pid']}"
    except (OSError, ValueError, KeyError):
        return "owner unknown"


def _stale(path: Path) -> bool:
    """A lock/claim whose owner process is gone (only decidable for owners on this host)."""
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        # written between O_EXCL create and the owner bytes; treat as live unless old
        return time.time() - path.stat().st_mtime > 60
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    try:
        return not (isinstance(pid, int) and pid > 0 and psutil.pid_exists(pid))
    except (OverflowError, ValueError):
        return True


def _atomic_json(target: Path, data: object) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # e.g. disk full: leave no half-written marker behind
        raise
