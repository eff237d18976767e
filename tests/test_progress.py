"""daemon/progress.py: a bar moved by (done, total) callbacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.progress import progress_bar

ROOT = Path(__file__).resolve().parents[1]


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


def test_work_that_fails_before_its_first_step_prints_no_empty_bar(tmp_path: Path) -> None:
    """`scenario build` of a video it cannot read printed 'building pets09-2cam-overlap: 0frame [00:00,
    ?frame/s]' before the error, the bar drawn when the work began rather than when it first moved."""
    missing = tmp_path / "missing.mp4"
    args = ["scenario", "build", "pets09-2cam-overlap", "--video", str(missing), "--out", str(tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode != 0 and f"video file not found: {missing}" in done.stderr
    assert "building" not in done.stderr and "frame/s" not in done.stderr, done.stderr
