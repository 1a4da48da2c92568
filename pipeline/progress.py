"""Progress display shared by the stages: rich bars on a terminal, plain timestamped lines otherwise.

Without a terminal (`chex demo > log 2>&1`, a batch job) a live bar shows nothing until the end, so
`make_progress` returns a `LineProgress` instead: it writes a line when a task starts and ends, and a
progress line every `CHEX_PROGRESS_INTERVAL` seconds (default 30), also while a task makes no progress.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
_console = Console(stderr=True)
INTERVAL_ENV = "CHEX_PROGRESS_INTERVAL"


def line_mode() -> bool:
    """True when stdout or stderr is not a terminal (or CHEX_PROGRESS=lines): progress goes out as lines."""
    forced = os.environ.get("CHEX_PROGRESS", "").lower()
    if forced in ("lines", "bar"):
        return forced == "lines"
    return not (_isatty(sys.stdout) and _isatty(sys.stderr))


def note(text: str) -> None:
    """A timestamped line on stderr in line mode (a stage starting or ending); nothing on a terminal."""
    if line_mode():
        _write(text)


def make_progress(enabled: bool = True) -> Progress | LineProgress:
    """A rich Progress with the columns every chex stage uses, or a LineProgress without a terminal."""
    if enabled and line_mode():
        return LineProgress(float(os.environ.get(INTERVAL_ENV, 30)))
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        _TimeLeftColumn(),
        console=_console,
        disable=not enabled,
        transient=False,
    )


class _TimeLeftColumn(TimeRemainingColumn):
    """rich's time-left column, blank for a task added with eta=False."""

    def render(self, task: Any) -> Any:
        if task.fields.get("eta", True) is False:
            return ""
        return super().render(task)


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    started: float
    finished: bool = False
    eta: bool = True


class LineProgress:
    """The part of rich's Progress API chex uses, written as plain lines (start, every `interval` s, end)."""

    def __init__(self, interval: float = 30.0) -> None:
        self.interval = interval
        self._tasks: list[_Task] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LineProgress:
        self._thread = threading.Thread(target=self._heartbeat, name="chex-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for task in self._tasks:
                self._finish(task)

    def add_task(
        self, description: str, total: float | None = None, completed: float = 0, eta: bool = True, **_: Any
    ) -> int:
        """`eta=False` for steps of unequal length (a command's stages), where a time-left guess misleads."""
        with self._lock:
            self._tasks.append(_Task(description, total, completed, time.perf_counter(), eta=eta))
            _write(f"start: {description}" + (f" ({_count(total)} steps)" if total else ""))
            return len(self._tasks) - 1

    def update(
        self,
        task_id: int,
        *,
        description: str | None = None,
        completed: float | None = None,
        advance: float | None = None,
        total: float | None = None,
        **_: Any,
    ) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if description is not None:
                task.description = description
            if total is not None:
                task.total = total
            if completed is not None:
                task.completed = completed
            if advance:
                task.completed += advance
            if task.total and task.completed >= task.total:
                self._finish(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _finish(self, task: _Task) -> None:
        if not task.finished:
            task.finished = True
            _write(f"done: {task.description} ({_count(task.completed)} steps in {_clock(task)})")

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for task in self._tasks:
                    if not task.finished:
                        _write(_status(task))


def _status(task: _Task) -> str:
    elapsed = time.perf_counter() - task.started
    if not task.total:
        return f"{task.description}: {_count(task.completed)} steps, {_clock(task)} elapsed"
    share = task.completed / task.total
    eta = f", about {_duration(elapsed * (1 - share) / share)} left" if share > 0 and task.eta else ""
    return (
        f"{task.description}: {_count(task.completed)}/{_count(task.total)} ({100 * share:.0f}%), "
        f"{_clock(task)} elapsed{eta}"
    )


def _clock(task: _Task) -> str:
    return _duration(time.perf_counter() - task.started)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _count(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "?"


def _write(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[callable]:
    """Context manager yielding `advance(n=1)` for a single bar."""
    with make_progress(enabled) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total, enabled) as advance:
        for item in items:
            yield item
            advance()
