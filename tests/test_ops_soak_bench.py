"""Smoke test of benchmarks/soak.py: a few seconds of two fleet workers on a synthetic clip, every output written."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from _data import REPO_ROOT, load_benchmark, require_pets09_gt, require_pets09_video
from _video import make_video
from test_sources import RtspServer

from daemon.motio import read_ground_truth, read_results, write_ground_truth

SCRIPT = REPO_ROOT / "benchmarks" / "soak.py"


def test_soak_smoke(tmp_path: Path, mobilenet_model: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=40, fps=10.0, people=3, size=(320, 240))
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    out = tmp_path / "soak"
    cmd = [sys.executable, str(SCRIPT), "--minutes", "0.15", "--sample-s", "3", "--warmup-min", "0.05"]
    cmd += ["--video", str(clip.path), "--gt", str(gt), "--stride", "1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert len(rows) >= 3
    assert all(float(r["soak-a_rss_mib"]) > 50 and int(r["soak-b_fds"]) > 3 for r in rows)
    assert all(int(r["soak-a_threads"]) > 1 and int(r["soak-b_threads"]) > 1 for r in rows)
    assert float(rows[-1]["soak-a_frames"]) > float(rows[0]["soak-a_frames"])  # the workers were working
    report = json.loads((out / "soak.json").read_text())
    assert set(report["growth"]) >= {"soak-a_rss_mib", "soak-b_fds", "soak-a_threads", "valkey_used_mib"}
    assert all(s["exit_code"] == 0 and s["stop_s"] < 5 for s in report["stop"].values())
    assert (out / "soak.png").stat().st_size > 10_000 and "growth after warm-up" in done.stdout


def _pets09_start(tmp_path: Path, frames: int) -> tuple[Path, Path]:
    """The first ``frames`` frames of PETS09-S2L1 as a clip (at its container's 10 fps) and their ground truth."""
    cap = cv2.VideoCapture(str(require_pets09_video()))
    clip = tmp_path / "pets-start.avi"
    writer: cv2.VideoWriter | None = None
    for _ in range(frames):
        ok, image = cap.read()
        assert ok
        if writer is None:
            size = (image.shape[1], image.shape[0])
            writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, size)
        writer.write(image)
    cap.release()
    assert writer is not None
    writer.release()
    gt = read_ground_truth(require_pets09_gt())
    gt_path = tmp_path / "pets-start-gt.txt"
    write_ground_truth(gt_path, gt.select(gt.frame <= frames))
    return clip, gt_path


def test_gt_boxes_reach_every_pass_of_the_looped_clip(tmp_path: Path, mobilenet_model: Path) -> None:
    """--gt gave boxes on the first pass only: the looped clip's frame numbers go on past the ground truth's.
    Replay detectors now look boxes up by the frame's place in its pass (Frame.clip_index)."""
    frames = 20  # 2 s a pass at real-time pace: the soak below loops it about six times
    clip, gt = _pets09_start(tmp_path, frames)
    boxes = len(read_ground_truth(gt))  # 64: three people
    out = tmp_path / "soak"
    cmd = [sys.executable, str(SCRIPT), "--minutes", "0.2", "--sample-s", "4", "--warmup-min", "0.05"]
    cmd += ["--video", str(clip), "--gt", str(gt), "--stride", "1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for camera in ("soak-a", "soak-b"):
        tracked = read_results(out / "runs" / camera / f"{camera}.txt")
        passes = np.bincount((tracked.frame - 1) // frames)
        assert len(passes) >= 4 and (passes[:3] >= boxes // 2).all(), f"{camera}: rows per pass {passes}"


def test_growth_compares_the_first_and_last_samples_apart_on_a_short_soak() -> None:
    growth = load_benchmark("soak").growth
    rss = [100.0, 101.0, 102.0, 104.0]
    rows = [{"minute": float(m), "rss": v} for m, v in enumerate(rss)]
    g = growth(rows, "rss", 1.0)  # three samples after warm-up: the edges may not be the same samples
    assert (g["base"], g["end"], g["growth_pct"]) == (101.0, 104.0, 2.97)
    rows = [{"minute": float(m), "rss": 100.0 + m} for m in range(8)]
    g = growth(rows, "rss", 0.0)  # enough samples: the median of three at each end
    assert (g["base"], g["end"]) == (101.0, 106.0)


def test_a_missing_clip_is_named_before_anything_starts(tmp_path: Path) -> None:
    soak = load_benchmark("soak")
    out = tmp_path / "soak"
    with pytest.raises(SystemExit, match=r"soak: --video .*nope\.avi not found"):
        soak.main(["--video", str(tmp_path / "nope.avi"), "--out", str(out)])
    clip = tmp_path / "clip.avi"
    clip.write_bytes(b"")
    with pytest.raises(SystemExit, match=r"soak: --gt .*gt\.txt not found"):
        soak.main(["--video", str(clip), "--gt", str(tmp_path / "gt.txt"), "--out", str(out)])
    assert not out.exists()


def test_a_worker_that_exits_at_start_names_its_log(tmp_path: Path) -> None:
    soak = load_benchmark("soak")
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(SystemExit, match=r"exited at start: \{'soak-a': 3\}; see .*soak-a\.log"):
        soak.wait_ready({"soak-a": dead}, {"soak-a": 1}, tmp_path)


@pytest.mark.parametrize(
    "args", [["--sample-s", "0"], ["--minutes", "0"], ["--speed", "-1"], ["--stride", "0"]]
)
def test_bad_options_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--sample-s 0 sampled in a tight loop for the whole soak; the others started Valkey and the workers."""
    with pytest.raises(SystemExit) as e:
        load_benchmark("soak").parse_args(args)
    assert e.value.code == 2 and f"{args[0]} must be above 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--minutes", "nan"], "--minutes must be above 0"),
        (["--warmup-min", "-1"], "--warmup-min must be 0 or more"),
        (["--stride", "101"], "--stride: Input should be less than or equal to 100"),
        (["--speed", "5000"], "--speed: Input should be less than or equal to 1000"),
        (["--retention-s", "0.3"], "--retention-s: Input should be greater than or equal to 1"),
    ],
)
def test_options_the_workers_would_refuse_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--minutes nan took one sample and reported it as a soak, --warmup-min -1 was taken; the others started
    Valkey and two workers that exited at once with a config error, the soak saying only 'see soak-a.log'."""
    with pytest.raises(SystemExit) as e:
        load_benchmark("soak").parse_args(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_the_live_soaks_clip_is_vtest_as_mp4v_and_serves_over_rtsp(tmp_path: Path) -> None:
    """RESULTS.md's live soak served 'pets.mp4: vtest.avi as mp4v, 10 fps' that no command made. mp4v_copy.py
    makes it: every one of the 795 frames at 768x576 and 10 fps, which tests/rtsp_server.py serves as it is
    (its first frame over RTSP is the copy's first)."""
    video = require_pets09_video()
    out = tmp_path / "runs" / "pets.mp4"
    assert load_benchmark("mp4v_copy").main(["--video", str(video), str(out)]) == 0
    copy = cv2.VideoCapture(str(out))
    fourcc = int(copy.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
    shape = [copy.get(p) for p in (cv2.CAP_PROP_FPS, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT)]
    assert (fourcc, shape) == (b"FMP4", [10.0, 768.0, 576.0])  # FFmpeg's name of MPEG-4 Part 2 (mp4v)
    frames = []
    while (got := copy.read())[0]:
        frames.append(got[1])
    copy.release()
    assert len(frames) == 795
    server = RtspServer(out)
    server.start()
    try:
        stream = cv2.VideoCapture(server.url, cv2.CAP_FFMPEG)
        ok, first = stream.read()
        stream.release()
    finally:
        server.stop()
    assert ok and np.array_equal(first, frames[0])


def test_a_soak_run_from_another_folder_takes_its_paths_from_there(
    tmp_path: Path, mobilenet_model: Path
) -> None:
    """The workers run in the repository's root, and soak.py handed them --video, --gt and --out's config and
    output folder as given: run from another folder with relative paths, both workers exited at once with
    'config file not found: soak/soak.yaml' (exit 2). Relative paths are the caller's folder's."""
    clip = make_video(tmp_path / "clip.mp4", frames=40, fps=10.0, people=3, size=(320, 240))
    clip.write_mot_gt(tmp_path / "gt.txt")
    cmd = [sys.executable, str(SCRIPT), "--minutes", "0.1", "--sample-s", "3", "--warmup-min", "0.05"]
    cmd += ["--video", "clip.mp4", "--gt", "gt.txt", "--stride", "1", "--out", "soak"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "soak" / "samples.csv").is_file()
    assert read_results(tmp_path / "soak" / "runs" / "soak-a" / "soak-a.txt").frame.size > 0
