"""Progress without a terminal: start/end lines and a line every interval (issue 16, item 6)."""

from __future__ import annotations

import time

from rich.progress import Progress

from pipeline.progress import LineProgress, make_progress, progress_bar


def test_without_a_terminal_progress_is_plain_lines(monkeypatch, capsys):
    monkeypatch.delenv("CHEX_PROGRESS", raising=False)
    monkeypatch.setenv("CHEX_PROGRESS_INTERVAL", "0.05")
    with progress_bar("embed toy", total=4) as advance:  # pytest's stdout is not a terminal
        advance()
        time.sleep(0.2)  # no progress for a while: the heartbeat still speaks
        advance(3)
    lines = capsys.readouterr().err.splitlines()
    assert "start: embed toy (4 steps)" in lines[0]
    assert any("embed toy: 1/4 (25%)" in line and "left" in line for line in lines)
    assert "done: embed toy (4 steps in" in lines[-1]
    assert sum("done:" in line for line in lines) == 1


def test_a_terminal_gets_the_rich_bar_and_disabled_stays_silent(monkeypatch, capsys):
    monkeypatch.setenv("CHEX_PROGRESS", "bar")
    assert isinstance(make_progress(True), Progress)
    monkeypatch.setenv("CHEX_PROGRESS", "lines")
    assert isinstance(make_progress(True), LineProgress)
    with progress_bar("quiet", total=2, enabled=False) as advance:
        advance(2)
    assert capsys.readouterr().err == ""
