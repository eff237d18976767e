"""benchmarks/soak.py's warm-up: the one given is the one growth is measured after (its runs are in
test_ops_soak_bench.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _data import load_benchmark


def test_the_warm_up_given_is_the_one_growth_is_measured_after(tmp_path: Path) -> None:
    """write_outputs cut --warmup-min to a third of the run without a word: --minutes 12 --warmup-min 6 measured
    growth from minute 4, while a 5-minute retention's stores were still filling, and soak.json said 4."""
    soak = load_benchmark("soak")
    args = soak.parse_args(["--minutes", "12", "--warmup-min", "6", "--out", str(tmp_path)])
    rows = [{"minute": float(m), "soak-a_rss_mib": 100.0 + min(m, 6)} for m in range(13)]  # full at minute 6
    report = soak.write_outputs(args, rows, {})
    assert report["warmup_min"] == 6
    assert report["growth"]["soak-a_rss_mib"]["growth_pct"] == 0.0


@pytest.mark.parametrize(("minutes", "warmup"), [("60", 10.0), ("15", 5.0), ("5", 5 / 3)])
def test_the_default_warm_up_is_ten_minutes_or_a_third_of_a_shorter_run(minutes: str, warmup: float) -> None:
    """RESULTS.md's runs: the hour (10 min), and the 5-minute config-watch run, which gave no --warmup-min."""
    assert load_benchmark("soak").parse_args(["--minutes", minutes]).warmup_min == pytest.approx(warmup)


def test_a_warm_up_as_long_as_the_run_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        load_benchmark("soak").parse_args(["--minutes", "5", "--warmup-min", "5"])
    assert e.value.code == 2
    assert (
        "--warmup-min 5 leaves nothing to measure: it must be shorter than --minutes 5"
        in capsys.readouterr().err
    )
