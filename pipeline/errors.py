"""User-facing errors: the CLI prints these without a traceback and exits with code 2.

Bugs still raise ordinary exceptions; only conditions a user can cause (bad input, missing files,
wrong options) are `ChexError`s, and each message names the file/row/option and what to do.
"""

import contextlib
import errno
from collections.abc import Iterator


class ChexError(Exception):
    """Base of every error a user can cause and fix."""


class ConfigError(ChexError):
    """An option or configuration file is invalid."""


class ManifestError(ChexError):
    """A manifest or official label file is malformed (names the rows and columns at fault)."""


class ImageReadError(ChexError):
    """An image file cannot be decoded (truncated, empty, not an image, no pixel data)."""


class ShardError(ChexError):
    """A shard set or its index is missing or inconsistent."""


class CheckpointError(ChexError):
    """A checkpoint cannot be loaded safely or does not match the backbone it should build."""


class StoreError(ChexError):
    """A feature store is missing, incomplete, locked or from another backbone."""


class NotAvailableError(ChexError):
    """A stage or option that is not built yet."""


class PredictionsError(ChexError):
    """A predictions/survival table is malformed, or two runs to compare were not scored on the same images."""


class DiskFullError(ChexError):
    """The disk filled up while writing; finished work is kept, and the same command resumes after freeing space."""


@contextlib.contextmanager
def disk_full_as_error(path: object, what: str) -> Iterator[None]:
    """Turn 'no space left' / 'quota exceeded' while writing `what` under `path` into a DiskFullError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" at {exc.filename}" if exc.filename else ""
        raise DiskFullError(
            f"no space left on the disk holding {path} while writing {what} ({exc.strerror}{where}); free some space "
            "(or give another output folder) and rerun the same command: finished work is kept and not redone"
        ) from None
