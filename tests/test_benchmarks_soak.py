"""benchmarks/soak.py's warm-up: the one given is the one growth is measured after; the live soak's command in
RESULTS.md, and the options of mp4v_copy.py, which makes its clip (their runs are in test_ops_soak_bench.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from _data import REPO_ROOT, load_benchmark


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


def _live_soak_block() -> str:
    text = (REPO_ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    (block,) = [b for b in blocks if "tests/rtsp_server.py" in b]
    return block.replace("\\\n", " ")


def test_the_live_soak_says_how_its_clip_was_made() -> None:
    """RESULTS.md's live soak served 'pets.mp4: vtest.avi as mp4v, 10 fps' with no command making it, and gave
    its workers' settings for soak-b as '...the same four for soak-b...': it could not be run again from there.
    The clip the server serves and soak.py's --video are made by a command of the same block, and every
    environment setting names both cameras."""
    lines = [shlex.split(line.split(" # ")[0]) for line in _live_soak_block().splitlines()]
    served = next(
        words[words.index("tests/rtsp_server.py") + 1] for words in lines if "tests/rtsp_server.py" in words
    )
    made = [words[-1] for words in lines if any(w.endswith("benchmarks/mp4v_copy.py") for w in words)]
    assert made == [served]
    soak = next(words for words in lines if any(w.endswith("benchmarks/soak.py") for w in words))
    assert soak[soak.index("--video") + 1] == served
    settings = {w.partition("=")[0] for w in soak if w.startswith("REID_CAMERAS__")}
    assert settings == {
        f"REID_CAMERAS__{cam}__{key}"
        for cam in ("soak-a", "soak-b")
        for key in ("SOURCE__URI", "SOURCE__LOOP", "OUTPUT__VIDEO", "OUTPUT__VIDEO_SEGMENT_S")
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fps", "0", "x.mp4"], "--fps must be above 0 and at most 1000, not 0.0"),
        (["--fps", "nan", "x.mp4"], "--fps must be above 0 and at most 1000, not nan"),
        (["x.avi"], "x.avi: the copy is an mp4 file: give a name ending in .mp4"),
    ],
)
def test_mp4v_copy_refuses_what_it_cannot_write(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        load_benchmark("mp4v_copy").main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_mp4v_copy_of_a_missing_clip_names_it_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out" / "pets.mp4"
    with pytest.raises(SystemExit, match=r"mp4v_copy: --video .*nope\.avi not found; the shared data folder"):
        load_benchmark("mp4v_copy").main(["--video", str(tmp_path / "nope.avi"), str(out)])
    assert not out.parent.exists()
