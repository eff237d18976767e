"""Smoke test of benchmarks/who_bench.py: a tiny run stores tracks and `who` finds every one of them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _data import REPO_ROOT, load_benchmark

SCRIPT = REPO_ROOT / "benchmarks" / "who_bench.py"


def test_who_bench_smoke() -> None:
    cmd = [sys.executable, str(SCRIPT), "--cameras", "3", "--tracks", "7", "--dim", "16", "--repeats", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("stored 21 tracks on 3 cameras")
    assert sum(line.startswith("who: 21 identities in ") for line in lines) == 2
    assert lines[-1].startswith("peak RSS ")


def test_peak_rss_is_labelled_in_the_unit_it_is_in(capsys: pytest.CaptureFixture[str]) -> None:
    """ru_maxrss is KiB on Linux, and the line printed it divided by 1024 as 'MB': MiB, 4.9 % more than MB."""
    import resource

    assert (
        load_benchmark("who_bench").main(["--cameras", "1", "--tracks", "2", "--dim", "8", "--repeats", "1"])
        == 0
    )
    last = capsys.readouterr().out.splitlines()[-1]
    mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert last.startswith("peak RSS ") and last.endswith(" MiB"), last
    assert abs(float(last.split()[2]) - mib) <= 1  # the same figure, truly labelled


@pytest.mark.parametrize("flag", ["--cameras", "--tracks", "--k", "--dim", "--repeats"])
def test_counts_below_one_are_usage_errors(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--k 0 stored profiles with no exemplars and ended in 'expected 21 identities ..., got 0'; --repeats 0
    timed nothing; both after starting Valkey and storing every track."""
    with pytest.raises(SystemExit) as e:
        load_benchmark("who_bench").main([flag, "0"])
    assert e.value.code == 2 and f"{flag} must be 1 or more" in capsys.readouterr().err
