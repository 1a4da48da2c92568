"""One writer per folder: an O_EXCL lock file holding its owner (host, pid, time).

A second process that wants the folder waits up to `wait_s`, then refuses with a message naming the holder.
A lock whose owner is a dead process on this host is taken over at once; one held from another host is taken
over only when older than `stale_s` (its owner cannot be checked from here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil

from pipeline.errors import ChexError

log = logging.getLogger(__name__)

LOCK_FILE = ".chex-lock"
STALE_S = 24 * 3600.0


class LockedError(ChexError):
    """Another live chex process is writing the folder."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str, wait_s: float = 0.0, stale_s: float = STALE_S) -> Iterator[Path]:
    """Hold `<folder>/.chex-lock` for the `with` block; LockedError naming the holder if another process has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            owner = _owner(path)
            if _abandoned(path, owner, stale_s):
                log.warning("%s: taking over the lock left by %s", folder, _describe(owner))
                path.unlink(missing_ok=True)
                continue
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"{what} {folder} is being written by another chex process ({_describe(owner)}); wait for it "
                    f"to finish, or delete {path} if that process is gone"
                ) from None
            time.sleep(0.2)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    with os.fdopen(fd, "w") as handle:
        json.dump(me, handle)
    try:
        yield path
    finally:
        if _owner(path).get("pid") == me["pid"] and _owner(path).get("host") == me["host"]:
            path.unlink(missing_ok=True)


def _owner(path: Path) -> dict:
    try:
        owner = json.loads(path.read_text())
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "owner unknown"
    since = datetime.fromtimestamp(float(owner.get("time", 0)), UTC).isoformat(timespec="seconds")
    return f"host {owner.get('host')}, pid {owner.get('pid')}, since {since}"


def _abandoned(path: Path, owner: dict, stale_s: float) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if not owner:  # being written right now, or garbage: live unless old
        return age > 60
    if owner.get("host") == socket.gethostname():
        return owner_gone(owner)
    return age > stale_s


def owner_gone(owner: dict) -> bool:
    """Whether the process named by `owner` ({"host", "pid"}), on this host, no longer runs (False elsewhere:
    another host's processes cannot be seen)."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    try:
        return not (isinstance(pid, int) and pid > 0 and psutil.pid_exists(pid))
    except (OverflowError, ValueError):
        return True
