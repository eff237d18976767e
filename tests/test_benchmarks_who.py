"""Smoke test of benchmarks/who_bench.py: a tiny run stores tracks and `who` finds every one of them."""

from __future__ import annotations

import subprocess
import sys

from _data import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "who_bench.py"


def test_who_bench_smoke() -> None:
    cmd = [sys.executable, str(SCRIPT), "--cameras", "3", "--tracks", "7", "--dim", "16", "--repeats", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("stored 21 tracks on 3 cameras")
    assert sum(line.startswith("who: 21 identities in ") for line in lines) == 2
    assert lines[-1].startswith("peak RSS ")
