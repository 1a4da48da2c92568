"""One way to write a file that others read: a temporary name beside the target, fsync, rename.

Readers therefore see either the old file or the whole new one, never a half-written one. Temporary files are
named `.<name>.<pid>.chex-tmp`; `clean_stray_temps(folder)` removes those a killed writer left behind.
CSV files written for people (`write_csv_atomic`, `csv_cell`) carry no cell a spreadsheet would run as a formula.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP_SUFFIX = ".chex-tmp"


def temp_path(target: Path) -> Path:
    """The temporary name used while `target` is being written (unique per process)."""
    return target.with_name(f".{target.name}.{os.getpid()}{TEMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)` to fill a temporary file, fsync it and rename it onto `target`."""
    target = Path(target)
    tmp = temp_path(target)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return target


# A spreadsheet runs a cell that starts with one of these as a formula (CSV / formula injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """`value` for a CSV a person opens: text starting with = + - @ (or a tab / carriage return) gets a leading
    apostrophe, so a spreadsheet shows it as text instead of running it; numbers, and text that is a plain number
    ("-0.5"), are kept as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _is_number(value):
        return "'" + value
    return value


def write_csv_atomic(target: str | Path, frame) -> Path:
    """Atomically write the pandas `frame` (index dropped) as CSV, its text cells and column names through
    `csv_cell`; numeric columns are written unchanged."""
    safe = frame.reset_index(drop=True).rename(columns=lambda c: csv_cell(str(c)))
    for column in safe.columns:
        if safe[column].dtype.kind not in "biufcmM":  # text, categories, objects
            safe[column] = safe[column].astype(object).map(csv_cell)
    return write_atomic(target, lambda tmp: safe.to_csv(tmp, index=False))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    """Atomically replace `target` with `data`."""
    return write_atomic(target, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Atomically replace `target` with `text` (UTF-8)."""
    return write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Fill a temporary folder inside the `with` block, then swap it in for `target` (old one removed)."""
    target = Path(target)
    tmp = temp_path(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.{os.getpid()}.old{TEMP_SUFFIX}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)


def clean_stray_temps(folder: str | Path) -> list[Path]:
    """Remove temporary files and folders left in `folder` (not recursive) by killed writers; return them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
