"""One writer per folder: a lock file holding its owner (host, pid, time), created whole (`create_owned`).

A second process that wants the folder waits up to `wait_s`, then refuses with a message naming the holder.
A lock whose owner is a dead process on this host is taken over at once; one held from another host is taken
over only when older than `stale_s` (its owner cannot be checked from here).

Taking over is atomic (`remove_abandoned`): several processes may find the same dead owner's lock at once, and
only one may remove it; a late one must never remove the fresh lock of the process that already took over. Each
holds an flock on the lock file's inode while it checks that the path still names that inode and that its owner
is still gone, and only then unlinks it. The dead owner held no flock, so the checks cannot deadlock, and the
inode cannot be reused while the checker holds it open. The ledger's unit claims and planning lock use the same.

A lock file is never visible without its owner: it is written under a temporary name and hard-linked into place
(exclusive, like O_EXCL). A process killed between an O_EXCL create and its write used to leave an empty lock that
looked like one being written, so the next run skipped that unit and ended "complete". An empty or unreadable lock
file is therefore garbage, taken over at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

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
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    while not create_owned(path, json.dumps(me).encode()):
        if remove_abandoned(path, lambda p: _abandoned(p, _owner(p), stale_s)):
            continue
        if time.monotonic() >= deadline:
            raise LockedError(
                f"{what} {folder} is being written by another chex process ({_describe(_owner(path))}); wait for "
                f"it to finish, or delete {path} if that process is gone"
            ) from None
        time.sleep(0.2)
    try:
        yield path
    finally:
        if _owner(path).get("pid") == me["pid"] and _owner(path).get("host") == me["host"]:
            path.unlink(missing_ok=True)


def create_owned(path: Path, owner: bytes) -> bool:
    """Create `path` holding `owner` in one step; False if it already exists. Never visible empty or half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o644)  # readable like an O_CREAT file: another user's chex must see the owner
            os.write(fd, owner)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (FAT, some SMB): exclusive create, then write, with the old window
            return _create_then_write(path, owner)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _create_then_write(path: Path, owner: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        os.write(fd, owner)
    finally:
        os.close(fd)
    return True


def remove_abandoned(path: Path, abandoned: Callable[[Path], bool]) -> bool:
    """Remove the lock or claim file `path` if `abandoned(path)` holds, atomically among processes doing the same.

    True: the caller may try to create it again (removed here, or already gone or replaced by another process);
    False: it is held by a live owner.
    """
    try:
        fd = _open_for_lock(path)
    except FileNotFoundError:
        return True
    try:
        _flock(fd, path)
        try:
            here, held = os.stat(path), os.fstat(fd)
        except FileNotFoundError:
            return True
        if (here.st_ino, here.st_dev) != (held.st_ino, held.st_dev):
            return True  # another process took it over meanwhile: look at the new one
        if not abandoned(path):
            return False
        log.warning("taking over %s, left by %s", path, _describe(_owner(path)))
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)  # releases the flock


def _open_for_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR)  # an exclusive flock on NFS needs a writable descriptor
    except FileNotFoundError:
        raise
    except OSError:  # not ours to write, or a read-only file system: a local flock works on a read-only one
        return os.open(path, os.O_RDONLY)


def _flock(fd: int, path: Path) -> None:
    if fcntl is None:  # no flock on this platform: the take-over is then not guarded against a racing one
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        log.warning("%s: cannot flock (%s); taking over a dead owner's lock is not guarded against a race", path, exc)


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
    if not owner:  # locks are created whole (`create_owned`): an empty or unreadable one is garbage
        return True
    if owner.get("host") == socket.gethostname():
        return owner_gone(owner)
    return age > stale_s


PID_REUSE_SLACK_S = 2.0  # process start times are read from /proc in clock ticks, against the boot time


def owner_gone(owner: dict) -> bool:
    """Whether the process named by `owner` ({"host", "pid", "time"}), on this host, no longer runs (False elsewhere:
    another host's processes cannot be seen). A pid now held by a process that started after the owner wrote its
    lock was reused: the owner is gone."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        started = psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, OverflowError, ValueError):
        return True
    except psutil.Error:  # e.g. access denied: it runs
        return False
    written = owner.get("time")
    return isinstance(written, int | float) and started > written + PID_REUSE_SLACK_S
