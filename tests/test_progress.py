"""daemon/progress.py: a bar moved by (done, total) callbacks."""

from __future__ import annotations

import pytest

from daemon.progress import progress_bar


def test_the_callback_moves_the_bar_to_done_of_total(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("work", "frame", True) as step:
        step(3, 10)
        step(7, 10)
    err = capsys.readouterr().err
    assert "work" in err and "7/10" in err


def test_a_hidden_bar_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("work", "frame", False) as step:
        step(5, 10)
    assert capsys.readouterr().err == ""
