"""The one progress reporter: a bar for a person at a terminal, else timed lines to the caller's log."""

from __future__ import annotations

import pytest

from bertbuild import progress
from bertbuild.progress import Progress


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)


def test_lines_count_a_resumed_start_and_carry_the_figures(every_update):
    lines: list[str] = []
    with Progress(100, "fine-tuning", unit="step", noun="steps", log=lines.append, bar=False, initial=40) as p:
        p.update(10, loss="2.5000", lr="1.000e-05")
        p.update(50, loss="2.0000", lr="0.000e+00")  # reaches the total: no line for that
    (line,) = lines
    assert line.startswith("fine-tuning: 50/100 steps (50 %), about ")
    assert line.endswith(" min left, loss 2.5000, lr 1.000e-05")


def test_unknown_total_and_no_log(every_update):
    lines: list[str] = []
    with Progress(None, "model.zip", unit="B", log=lines.append, bar=False) as p:
        p.update(5)
    assert lines == ["model.zip: 5 B"]
    with Progress(10, "quiet", bar=False) as p:
        p.update(5)  # no log given: nothing to write to, and no error


def test_no_line_before_the_interval(monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 3600.0)
    lines: list[str] = []
    with Progress(10, "scoring", log=lines.append, bar=False) as p:
        p.update(5)
    assert lines == []


def test_a_bar_replaces_the_lines(every_update, capsys):
    lines: list[str] = []
    with Progress(4, "scoring", unit="seq", log=lines.append, bar=True) as p:
        p.update(2, loss="1.5")
    err = capsys.readouterr().err
    assert "scoring" in err and "seq" in err and "loss=1.5" in err
    assert lines == []

