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


def test_stages_of_unequal_length_get_no_time_left_guess(monkeypatch, capsys):
    """`chex demo`'s stage line once said "2/7 (29%), about 6m15s left" while one stage took minutes."""
    monkeypatch.setenv("CHEX_PROGRESS", "lines")
    with LineProgress(0.05) as progress:
        task = progress.add_task("chex demo", total=7, eta=False)
        progress.advance(task, 2)
        time.sleep(0.2)
    lines = [line for line in capsys.readouterr().err.splitlines() if "2/7" in line]
    assert lines and not any("left" in line for line in lines)
    monkeypatch.setenv("CHEX_PROGRESS", "bar")
    bar = make_progress(True)
    stages = bar.add_task("chex demo", total=7, eta=False)
    steps = bar.add_task("embed", total=7)
    bar.advance(stages, 2)
    bar.advance(steps, 2)
    time_left = bar.columns[-1]
    assert time_left.render(bar.tasks[stages]) == ""
    assert time_left.render(bar.tasks[steps]) != ""
