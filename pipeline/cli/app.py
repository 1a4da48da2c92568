"""The typer application and the pieces every command shares (workspace option, error handling)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from pipeline.errors import ChexError, disk_full_as_error
from pipeline.workspace import WORKSPACE_ENV, Workspace, resolve_workspace

app = typer.Typer(
    name="chex",
    help="chex: chest X-ray foundation-model evaluation. Embed once, probe many.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

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

F = TypeVar("F", bound=Callable[..., Any])


def chex_command(func: F) -> F:
    """Run a command body, printing a ChexError as a one-line message (exit code 2, no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with disk_full_as_error("the output folder", "this command's outputs"):  # a net under every stage
                return func(*args, **kwargs)
        except ChexError as exc:
            console.print(f"[bold red]error:[/] {user_message(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


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
