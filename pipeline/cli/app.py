"""The typer application and the pieces every command shares (workspace option, error handling)."""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from pipeline.errors import ChexError, ConfigError, disk_full_as_error
from pipeline.workspace import WORKSPACE_ENV, Workspace, resolve_workspace

app = typer.Typer(
    name="chex",
    help="chex: chest X-ray foundation-model evaluation. Embed once, probe many.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
LOG_WIDTH = 160  # tables written to a file or pipe: rich would cut them to 80 columns ("CXR-…", "0.55…")


def table_console(**options: Any) -> Console:
    """A console for the result tables: the terminal's width, or LOG_WIDTH when output is not a terminal and
    $COLUMNS does not say otherwise."""
    out = Console(**options)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = LOG_WIDTH
    return out


WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        envvar=WORKSPACE_ENV,
        help="Workspace folder (default ./chex-workspace).",
        show_default=False,
    ),
]

# One dialect for the stage commands: --root (image root), --out (what the command writes), --manifest,
# --dask ADDR, --quiet. Older spellings stay as hidden aliases (see `pick`).
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or progress lines.")]
NoProgressAlias = Annotated[bool, typer.Option("--no-progress", hidden=True)]
DaskOption = Annotated[
    str | None, typer.Option("--dask", help="Run on dask.distributed: a scheduler ADDRESS, or 'local'.")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log each step's details.")]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing --out file (never one of the workspace's own).")
]

F = TypeVar("F", bound=Callable[..., Any])


def pick(value: Any, alias: Any, name: str, alias_name: str) -> Any:
    """The value of an option given under its current name or its deprecated alias (not both)."""
    if alias is not None and alias is not False:
        if value is not None and value is not False:
            raise ConfigError(f"{alias_name} is the old spelling of {name}; pass only {name}")
        logging.getLogger("pipeline.cli").warning("%s is deprecated; use %s", alias_name, name)
        return alias
    return value


def chex_command(func: F) -> F:
    """Run a command body, printing a ChexError as a one-line message (exit code 2, no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with disk_full_as_error("the output folder", "this command's outputs"):  # a net under every stage
                return func(*args, **kwargs)
        except ChexError as exc:
            message = user_message(exc)
        except OSError as exc:
            message = not_writable_message(exc)
            if message is None:
                raise
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def not_writable_message(exc: OSError) -> str | None:
    """A one-line message for a read-only file system or a permission refused (None for other OS errors)."""
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.EROFS:
        return (
            f"cannot write{where}: the file system is read-only. chex writes its locks and outputs inside the "
            "workspace: copy the workspace to a writable place, or pass -w DIR"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where}; give yourself access to it (or pass -w DIR for a workspace you own)"
    return None


def user_message(exc: ChexError) -> str:
    """The error's own message. A DataLoader worker's error reaches the main process re-raised with the worker's
    traceback in its text ("Caught ... Original Traceback ..."): keep only the original message."""
    text = str(exc)
    marker = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    if "Original Traceback" in text and marker in text:
        text = text[text.rindex(marker) + len(marker) :].strip()
    return text


def workspace_from(option: Path | None) -> Workspace:
    return resolve_workspace(option)


def configure_logging(verbose: bool, quiet_level: int = logging.INFO) -> None:
    """chex's own messages at INFO (DEBUG with --verbose, `quiet_level` without); libraries' chatter stays out."""
    logging.basicConfig(level=logging.DEBUG if verbose else quiet_level, format="%(message)s")
    for noisy in ("fontTools", "matplotlib", "PIL", "distributed", "asyncio", "numcodecs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
