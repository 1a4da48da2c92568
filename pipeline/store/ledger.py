"""The completion ledger of a feature store: which write units exist, who is writing them, which are done.

A write unit is one Zarr shard along N (a few hundred images), so two writers never touch the same file.
Files under `<store>/ledger/`:
    plan/unit-000012.json   rows the unit holds: start row, image ids, views, input group, data set and each row's
                            content key (the decoded pixels' sha256; "" when unknown) (written once)
    claims/unit-000012      exclusive claim of a writer (host, pid, time), created whole (`pipeline.locks.
                            create_owned`); its mtime is the writer's heartbeat;
                            removed once the unit is done
    done/unit-000012.json   written (atomically) only after the unit's data is flushed: the truth for readers;
                            lists the files the unit wrote with size and sha256 (`pipeline.store.integrity`)
    quarantine/unit-000012.json  images of the unit that could not be read ({image_id: [path, reason]}); their
                            rows are written empty (view -1) and hidden from readers
    damaged/unit-000012.json  a done marker taken back because the unit's files were found damaged (with the
                            problems); the unit is pending again, and the next `chex embed` rewrites it
    shared/<dataset>.json   ids of rows embedded for another data set that this data set reads too, because their
                            pixels were found identical (`chex embed` verified them; pipeline/store/content.py)
    plan.lock               exclusive lock (created whole) held while units are planned and the arrays resized

Taking over a claim: a claim whose owner is a dead process on this host is taken over at once; any claim
(from any host) whose heartbeat is older than CLAIM_TIMEOUT_S (env CHEX_CLAIM_TIMEOUT_S, default 15 min) is
taken over too, so a writer killed on another machine never blocks a unit for ever. The take-over (of claims and
of plan.lock) is atomic, `pipeline.locks.remove_abandoned`: of several writers finding the same dead claim, one
gets the unit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.errors import StoreError
from pipeline.locks import create_owned, owner_gone, remove_abandoned

log = logging.getLogger(__name__)

LEDGER_DIR = "ledger"
CLAIM_TIMEOUT_S = 900.0


def claim_timeout_s() -> float:
    """Seconds without a heartbeat after which any claim counts as abandoned."""
    try:
        return float(os.environ.get("CHEX_CLAIM_TIMEOUT_S", CLAIM_TIMEOUT_S))
    except ValueError:
        return CLAIM_TIMEOUT_S


@dataclass(frozen=True)
class Unit:
    """One write unit: rows [start, start + len(image_ids)) of every array."""

    index: int
    start: int
    image_ids: list[str]
    views: list[int]
    group: str = ""  # the input the rows come from (a shard file, or a manifest block)
    sources: list[str] = field(default_factory=list)  # per-row image path for manifest inputs
    dataset: str = ""  # the data set the rows were embedded for ("": older plans, see `unit_dataset`)
    contents: list[str] = field(default_factory=list)  # per-row content key; [] or "": unknown (older inputs)

    @property
    def stop(self) -> int:
        return self.start + len(self.image_ids)

    @property
    def name(self) -> str:
        return f"unit-{self.index:06d}"


def unit_dataset(unit: Unit) -> str:
    """The data set a unit's rows were embedded for: recorded, else read from its input group (`manifest:<name>`
    or a shard `shards/<name>/<name>-NNNNNN.tar`, as plans written before the field have it); "" when unknown."""
    if unit.dataset:
        return unit.dataset
    if unit.group.startswith("manifest:"):
        return unit.group.removeprefix("manifest:")
    if unit.group.endswith(".tar"):
        return Path(unit.group).parent.name
    return ""


class Ledger:
    """Plan, claim and done markers of one store."""

    def __init__(self, store_path: str | Path) -> None:
        self.root = Path(store_path) / LEDGER_DIR
        self.plan_dir, self.claims_dir, self.done_dir = self.root / "plan", self.root / "claims", self.root / "done"
        self.damaged_dir = self.root / "damaged"

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
        while not create_owned(lock, _owner_bytes()):
            if remove_abandoned(lock, _stale):
                continue
            if time.monotonic() > deadline:
                raise StoreError(
                    f"feature store {self.root.parent} is locked by another `chex embed` ({_owner_text(lock)}); "
                    f"wait for it to finish, or delete {lock} if that process is gone"
                ) from None
            time.sleep(0.2)
        try:
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
            if not create_owned(path, _owner_bytes(owner_pid)):
                if remove_abandoned(path, lambda p: _stale(p) or _abandoned(p)):
                    continue
                return False
            # Another writer may have finished the unit since it was planned (its claim goes only after the
            # done marker): never redo, and so never rewrite under readers, a finished unit.
            if (self.done_dir / f"{unit.name}.json").is_file():
                path.unlink(missing_ok=True)
                return False
            return True
        return False

    def heartbeat(self, units: Iterable[Unit], pid: int | None = None) -> None:
        """Tell other writers the claims of `units` held by `pid` (default: this process) are alive."""
        pid = pid or os.getpid()
        for unit in units:
            path = self.claims_dir / unit.name
            with contextlib.suppress(OSError, ValueError):
                if json.loads(path.read_text()).get("pid") == pid:
                    os.utime(path)

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
    def mark_done(self, unit: Unit, seconds: float, files: dict | None = None) -> None:
        """Record `unit` as complete with the `files` it wrote; call only after its data is flushed to disk."""
        marker = {"unit": unit.index, "rows": len(unit.image_ids), "seconds": round(seconds, 3), "time": time.time()}
        marker |= {"host": socket.gethostname(), "pid": os.getpid()}
        if files is not None:
            marker["files"] = files
        _atomic_json(self.done_dir / f"{unit.name}.json", marker)
        self.release(unit)

    def done_indices(self) -> set[int]:
        if not self.done_dir.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in self.done_dir.glob("unit-*.json")}

    def done_record(self, index: int) -> dict:
        """The done marker of unit `index` ({} when absent or unreadable)."""
        try:
            return json.loads((self.done_dir / f"unit-{index:06d}.json").read_text())
        except (OSError, ValueError):
            return {}

    def quarantine(self, unit: Unit, image_id: str, path: str, reason: str) -> None:
        """Note that `image_id` of `unit` could not be read; its row is written empty and stays hidden."""
        entries = self.quarantined(unit)
        entries[image_id] = [path, reason]
        _atomic_json(self.root / "quarantine" / f"{unit.name}.json", entries)

    def quarantined(self, unit: Unit) -> dict[str, list[str]]:
        """{image_id: [path, reason]} of the unit's unreadable images."""
        try:
            return json.loads((self.root / "quarantine" / f"{unit.name}.json").read_text())
        except (OSError, ValueError):
            return {}

    def add_shared(self, dataset: str, image_ids: Iterable[str]) -> None:
        """Record that `dataset` reads these ids' rows, embedded for another data set from identical pixels."""
        have = self.shared(dataset)
        new = have | set(image_ids)
        if new != have:
            _atomic_json(self.root / "shared" / f"{dataset}.json", {"image_ids": sorted(new)})

    def shared(self, dataset: str) -> set[str]:
        """Ids whose rows (embedded for another data set) `dataset` reads: pixels verified identical."""
        try:
            return set(json.loads((self.root / "shared" / f"{dataset}.json").read_text())["image_ids"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    def mark_damaged(self, unit: Unit, problems: list[str]) -> None:
        """Take back the done marker of a damaged unit (kept under damaged/ with the problems), so it is pending
        again and the next `chex embed` rewrites it."""
        record = self.done_record(unit.index) | {"problems": problems, "found": time.time()}
        _atomic_json(self.damaged_dir / f"{unit.name}.json", record)
        (self.done_dir / f"{unit.name}.json").unlink(missing_ok=True)

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


def _abandoned(path: Path) -> bool:
    """A claim whose heartbeat (mtime) is older than the claim timeout, whatever host holds it."""
    try:
        return time.time() - path.stat().st_mtime > claim_timeout_s()
    except FileNotFoundError:
        return False


def _stale(path: Path) -> bool:
    """A lock/claim whose owner process is gone (only decidable for owners on this host)."""
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # claims are created whole (`pipeline.locks.create_owned`): an unreadable one is garbage
    return not isinstance(owner, dict) or owner_gone(owner)


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
