"""fleet.mp4: the cameras side by side, in step on the fleet clock (daemon/fleet_mosaic.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from _ops import wait_until

from daemon.embedding import LEFTOVER_AGE_S
from daemon.fleet_mosaic import BANNER_PX, Tile, cell_size, grid, write_mosaic
from daemon.fleet_report import remove_report_leftovers
from daemon.fleet_runner import report_fleet, run_fleet
from daemon.mp4_timing import frame_rate
from daemon.outputs import AnnotatedVideo
from daemon.tempdirs import Leftovers


def _grey_video(path: Path, fps: float, levels: list[int], size: tuple[int, int] = (64, 48)) -> Path:
    """A video whose frame i is uniformly grey at ``levels[i]``: a tile's brightness tells which frame it shows."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    for level in levels:
        writer.write(np.full((size[1], size[0], 3), level, np.uint8))
    writer.release()
    return path


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, image = cap.read()
        if not ok:
            return out
        out.append(image)


def test_grid_keeps_up_to_three_cameras_in_a_row_then_goes_square() -> None:
    assert [grid(n) for n in (1, 2, 3, 4, 5, 7, 9)] == [
        (1, 1),
        (2, 1),
        (3, 1),
        (2, 2),
        (3, 2),
        (3, 3),
        (3, 3),
    ]
    with pytest.raises(ValueError):
        grid(0)


def test_cells_fit_the_widest_view_at_even_sizes_and_many_cameras_get_smaller_ones() -> None:
    assert cell_size([(320, 240)], 2, 480) == (640, 480)
    assert cell_size([(256, 576), (256, 576), (256, 576)], 3, 480) == (214, 480)  # 213.3 up to even
    assert cell_size([(640, 480)] * 16, 4, 480) == (480, 360)  # 4 x 640 would pass 1920 px
    assert cell_size([(640, 480), (256, 576)], 2, 481) == (640, 480)  # the wider view sets the width


def test_the_mosaic_shows_each_camera_at_its_own_rate_and_start(tmp_path: Path) -> None:
    fast = _grey_video(tmp_path / "fast.mp4", 10.0, [12 * i for i in range(20)])  # 0-2 s
    slow = _grey_video(tmp_path / "slow.mp4", 5.0, [200 - 20 * i for i in range(6)])  # starts 1 s late, 5 fps
    out = write_mosaic([Tile("fast", fast), Tile("slow", slow, offset_s=1.0)], tmp_path / "fleet.mp4", 96)
    assert out == tmp_path / "fleet.mp4"
    frames = _frames(out)
    assert len(frames) == 22  # 0 .. 2.2 s at the faster rate
    assert frames[0].shape == (BANNER_PX + 96, 2 * 128, 3)

    # the top of a tile, away from its texts; mp4v written twice shifts grey levels by up to ~7
    def level(frame: np.ndarray, col: int) -> float:
        return float(frame[BANNER_PX + 4 : BANNER_PX + 30, col * 128 + 70 : col * 128 + 120].mean())

    for k, frame in enumerate(frames):
        want_fast = 12 * k if k < 20 else 24  # then a dark "ended" tile
        want_slow = 24 if k < 10 else 200 - 20 * ((k - 10) // 2)
        assert level(frame, 0) == pytest.approx(want_fast, abs=8), k
        assert level(frame, 1) == pytest.approx(want_slow, abs=8), k


def test_a_camera_s_frames_are_placed_by_their_times_across_a_gap_in_its_video(tmp_path: Path) -> None:
    # Regression: a tile showed a camera's frame i at i / its video's rate, so after a gap its annotated.mp4 holds
    # in its time table (a live stream away 19 s) the camera's frames came 19 s early, beside the other cameras'
    # frames of 19 s before; and the video's rate, its average over the gap (1 fps), set where every frame went.
    # Each frame is now shown from its own time in the video, and the mosaic runs at the cameras' own rate.
    away = AnnotatedVideo(tmp_path / "away.mp4", 10.0)
    for k, ts in enumerate([i / 10 for i in range(10)] + [20.0 + i / 10 for i in range(10)]):
        away.write(np.full((48, 64, 3), 20 + 10 * k, np.uint8), [], "", ts=ts)
    away.close()
    steady = _grey_video(tmp_path / "steady.mp4", 10.0, [200] * 210)  # 0-21 s
    out = write_mosaic(
        [Tile("away", tmp_path / "away.mp4"), Tile("steady", steady)], tmp_path / "fleet.mp4", 96
    )
    assert out is not None
    tops = [float(f[BANNER_PX + 4 : BANNER_PX + 30, 70:120].mean()) for f in _frames(out)]
    assert len(tops) == 210  # 0 .. 21 s at 10 fps
    want = [20 + 10 * min(k, 9) if k < 200 else 20 + 10 * (k - 190) for k in range(210)]
    assert tops == pytest.approx(want, abs=8)
    alone = write_mosaic([Tile("away", tmp_path / "away.mp4")], tmp_path / "alone.mp4", 96)
    assert alone is not None and len(_frames(alone)) == 210  # at 10 fps, not its average rate (1 fps)
    assert frame_rate(tmp_path / "away.mp4") == pytest.approx(10.0)
    for damaged in (b"\x00\x00\x00\x10moov\x00\x00\x00\x08trak", b"\x00\x00\x00\x08moov\x00\x00"):
        (tmp_path / "damaged.mp4").write_bytes(damaged)
        assert frame_rate(tmp_path / "damaged.mp4") is None  # the container's rate is taken then


def test_the_mosaic_starts_at_the_fleets_first_frame_when_a_camera_left_no_video(tmp_path: Path) -> None:
    # The fleet report counts from the fleet's first frame; a camera that started 1 s before the others and
    # wrote no video made the mosaic (and its banner's count) start 1 s later than the report's 0.
    video = _grey_video(tmp_path / "v.mp4", 10.0, [200] * 10)  # 0-1 s
    out = write_mosaic([Tile("a", video), Tile("b", video)], tmp_path / "fleet.mp4", 96, start_s=-1.0)
    assert out is not None
    frames = _frames(out)
    assert len(frames) == 20  # -1 .. 1 s
    tops = [float(f[BANNER_PX + 4 : BANNER_PX + 30, 70:120].mean()) for f in frames]
    assert max(tops[:10]) < 40 and min(tops[10:]) > 190  # "not started" until the fleet's 1.0 s


def test_an_unreadable_camera_video_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = _grey_video(tmp_path / "good.mp4", 10.0, [100] * 5)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with caplog.at_level(logging.WARNING, logger="daemon.fleet_mosaic"):
        out = write_mosaic([Tile("good", good), Tile("bad", bad)], tmp_path / "fleet.mp4", 96)
    assert out is not None and len(_frames(out)) == 5
    assert "camera bad left out" in caplog.text and "bad.mp4: not a readable video" in caplog.text
    assert write_mosaic([Tile("bad", bad)], tmp_path / "none.mp4") is None


EPOCH = 1_800_000_000.0  # a fleet time, as the tables record it


def _fleet_outputs(tmp_path: Path, offsets: dict[str, float], first_frames: dict[str, float] | None) -> Path:
    """A fleet config whose cameras left a 2 s grey annotated.mp4 (10 fps) and an identity table (recording
    ``first_frames`` when given); its cameras' ``source.clock_offset_s`` are ``offsets``."""
    out = tmp_path / "runs"
    for cam in offsets:
        (out / cam).mkdir(parents=True)
        _grey_video(out / cam / "annotated.mp4", 10.0, [200] * 20)
        doc = {"v": 1, "camera": cam, "identities": {}}
        if first_frames is not None:
            doc["first_frame_time"] = first_frames[cam]
        (out / cam / "identities.json").write_text(json.dumps(doc), encoding="utf-8")
    cams = {
        c: {"source": {"uri": str(tmp_path / f"{c}.mp4"), "clock_offset_s": o}} for c, o in offsets.items()
    }
    cfg = {"fleet": {"enabled": True}, "camera_defaults": {"output": {"dir": str(out)}}, "cameras": cams}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _tops(video: Path, col: int) -> list[float]:
    return [
        float(f[BANNER_PX + 4 : BANNER_PX + 30, col * 640 + 70 : col * 640 + 120].mean())
        for f in _frames(video)
    ]


def test_live_cameras_started_at_different_moments_are_placed_by_their_first_frames(tmp_path: Path) -> None:
    # Regression: the tiles were placed at the cameras' clock offsets only, 0 for live cameras, so a camera
    # started 1 s after the other showed its first frame beside the other's first, 1 s out of step. Each
    # camera's table records the fleet time of its first frame; the tiles are placed by it.
    path = _fleet_outputs(tmp_path, {"a": 0.0, "b": 0.0}, {"a": EPOCH + 0.5, "b": EPOCH + 1.5})
    run = report_fleet(path, progress=False)
    assert run.mosaic is not None
    a, b = _tops(run.mosaic, 0), _tops(run.mosaic, 1)
    assert len(a) == 30  # 0 .. 3 s: b's 2 s start 1 s after a's
    assert min(a[:20]) > 180 and max(a[20:]) < 40  # a from 0 to 2 s, then "ended"
    assert max(b[:10]) < 40 and min(b[10:]) > 180  # b "not started" until 1 s


def test_a_replay_is_placed_by_its_first_frames_as_by_its_clock_offsets(tmp_path: Path) -> None:
    # On a replay a camera's first frame is at the fleet's epoch plus its clock offset: placed by either, the
    # mosaic is the same, frame for frame (an offset finer than the tables' millisecond included).
    offsets = {"a": 0.0, "b": 1.0, "c": 0.3004}
    by_offsets = report_fleet(_fleet_outputs(tmp_path / "offsets", offsets, None), progress=False)
    firsts = {c: round(EPOCH + o, 3) for c, o in offsets.items()}
    by_firsts = report_fleet(_fleet_outputs(tmp_path / "firsts", offsets, firsts), progress=False)
    assert by_offsets.mosaic is not None and by_firsts.mosaic is not None
    old, new = _frames(by_offsets.mosaic), _frames(by_firsts.mosaic)
    assert len(old) == len(new) == 30
    assert all(np.array_equal(x, y) for x, y in zip(old, new, strict=True))
    b = _tops(by_firsts.mosaic, 1)
    assert max(b[:10]) < 40 and min(b[10:]) > 180  # b from 1 s


def _grey_mkv_starting_at(path: Path, levels: list[int], size: tuple[int, int], start_ms: int) -> Path:
    """``_grey_video`` as a Matroska file whose timestamps start at ``start_ms`` (< 256), as a recording cut from a
    stream does: the cluster's timecode, written as 0 by FFmpeg's muxer, is set to it."""
    _grey_video(path, 10.0, levels, size)
    data = bytearray(path.read_bytes())
    cluster = data.find(bytes.fromhex("1f43b675"))
    timecode = data.find(bytes.fromhex("e78100"), cluster)  # Timecode element: 1 byte, 0
    assert cluster > 0 and 0 < timecode - cluster < 32, "not the layout this helper patches"
    data[timecode + 2] = start_ms
    path.write_bytes(bytes(data))
    return path


def _rotating_fleet(tmp_path: Path, sources: dict[str, Path]) -> Path:
    """A fleet config replaying ``sources`` (40 frames each, one person in the top-left corner, found and told
    apart by their ground truth), writing videos and rotating its files once, after frame 25."""
    for name in sources:
        rows = [f"{i + 1},1,4,4,20,40,1,1,1" for i in range(40)]
        (tmp_path / f"{name}.gt.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cams = {
        name: {
            "source": {"uri": str(src)},
            "detector": {"type": "ground-truth", "path": str(tmp_path / f"{name}.gt.txt")},
            "embedder": {"type": "ground-truth", "truth": {"path": str(tmp_path / f"{name}.gt.txt")}},
        }
        for name, src in sources.items()
    }
    output = {"dir": str(tmp_path / "runs"), "video": True, "progress": False, "rotate_mb": 0.001}
    cfg = {
        "fleet": {"enabled": True, "lockstep": True},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "identity": {"allow_overlapping_views": True},
        "camera_defaults": {"output": output},
        "cameras": cams,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_a_camera_s_rotated_files_are_all_in_the_mosaic_in_step(tmp_path: Path) -> None:
    # Regression: fleet.mp4 showed each camera's latest files only, so after output.rotate_mb started new ones
    # (here after frame 25 of 40), the mosaic played the last 15 frames from the fleet's 0.0 s: 15 frames where the
    # replay had 40, out of step with the report. Every file of the run is played now, one after the other.
    # Camera b reads a Matroska copy whose timestamps start 0.2 s into its container: frames are timed from
    # the video's start (OpenCV's positions), so its tile is not moved by it.
    levels = [10 + 6 * i for i in range(40)]  # frame i's grey level tells which frame a tile shows
    sources = {
        "a": _grey_video(tmp_path / "a.mp4", 10.0, levels, size=(160, 120)),
        "b": _grey_mkv_starting_at(tmp_path / "b.mkv", levels, (160, 120), 200),
    }
    run = run_fleet(_rotating_fleet(tmp_path, sources), progress=False)
    assert run.ok and run.mosaic is not None, run.exit_codes
    for name in sources:
        assert len(list((tmp_path / "runs" / name).glob("earlier-*/annotated.mp4"))) == 1  # rotated once
    frames = _frames(run.mosaic)
    assert len(frames) == 40
    cell_w = frames[0].shape[1] // 2

    def level(frame: np.ndarray, col: int) -> float:  # right of the box, below the caption, above the name
        top = BANNER_PX + frame.shape[0] // 3
        return float(frame[top : top + 40, col * cell_w + cell_w // 2 : (col + 1) * cell_w - 8].mean())

    a, b = [level(f, 0) for f in frames], [level(f, 1) for f in frames]
    assert all(abs(x - y) <= 3 for x, y in zip(a, b, strict=True)), (a, b)  # the same frame side by side
    assert all(3 <= y - x <= 9 for x, y in pairwise(a)), a  # frame after frame, none twice
    assert a[0] == pytest.approx(levels[0], abs=12) and a[-1] == pytest.approx(levels[-1], abs=12)  # ~mp4v x3


def test_a_replay_run_again_reports_and_shows_its_own_rotated_files_only(tmp_path: Path) -> None:
    # Regression: a replay run again into the same folder replaced its files but not the earlier-* folders its
    # first run had rotated into (user data, not deleted on a guess), and the report and fleet.mp4 took them for
    # the second run's: 25 frames of the first run, then the second's 40 (65 frames a camera where it had 40).
    # Each run records its id in its tables and status.json; the report and the mosaic take this run's only.
    levels = [10 + 6 * i for i in range(40)]
    sources = {n: _grey_video(tmp_path / f"{n}.mp4", 10.0, levels, size=(160, 120)) for n in ("a", "b")}
    path = _rotating_fleet(tmp_path, sources)
    for _ in range(2):
        run = run_fleet(path, progress=False)
        assert run.ok and run.mosaic is not None, run.exit_codes
    cam = tmp_path / "runs" / "a"
    assert len(list(cam.glob("earlier-*/annotated.mp4"))) == 2  # the first run's is kept
    assert len(_frames(run.mosaic)) == 40
    (person,) = run.report["people"].values()
    assert [c["frames"] for c in person["cameras"].values()] == [40, 40]
    again = report_fleet(path, progress=False)  # --report-only reads the same
    assert again.report["people"] == run.report["people"] and again.mosaic is not None
    assert len(_frames(again.mosaic)) == 40


def test_a_later_video_follows_the_one_before_unless_its_table_puts_it_more_than_a_frame_away(
    tmp_path: Path,
) -> None:
    first = _grey_video(tmp_path / "1.mp4", 10.0, [100] * 10)  # 0-1 s
    then = _grey_video(tmp_path / "2.mp4", 10.0, [200] * 10)
    near = write_mosaic([Tile("a", first, 0.0, ((then, 1.04),))], tmp_path / "near.mp4", 96)
    assert near is not None
    tops = [float(f[BANNER_PX + 4 : BANNER_PX + 30, 70:120].mean()) for f in _frames(near)]
    assert len(tops) == 20 and max(tops[:10]) < 110 < 190 < min(tops[10:])  # right after: the table's ms off
    away = write_mosaic([Tile("a", first, 0.0, ((then, 2.0),))], tmp_path / "away.mp4", 96)
    assert away is not None
    tops = [float(f[BANNER_PX + 4 : BANNER_PX + 30, 70:120].mean()) for f in _frames(away)]
    assert len(tops) == 30 and max(tops[10:20]) < 40 < 190 < min(tops[20:])  # a live stream away for 1 s


_HELD_MOSAIC = """
import sys, time
from pathlib import Path
from daemon.fleet_mosaic import Tile, write_mosaic

a, b, out, held = (Path(p) for p in sys.argv[1:5])

def progress(done, total):  # halfway through the video, then held until killed
    if done == total // 2:
        held.touch()
        time.sleep(600)

write_mosaic([Tile("a", a), Tile("b", b, offset_s=0.5)], out, 96, progress=progress)
"""


def test_a_fleet_killed_while_it_writes_the_mosaic_leaves_the_video_whole(tmp_path: Path) -> None:
    """Regression: fleet.mp4 was written in place (cv2.VideoWriter on its name), so a fleet killed while it
    wrote the mosaic left a cut video (no index: unreadable) under that name, which the fleet's summary and
    README point to. It is written through .fleet.mp4.<12 hex>.tmp.mp4 and renamed once complete (the
    earlier video stays meanwhile); the next fleet removes that leftover as it does the report's."""
    a = _grey_video(tmp_path / "a.mp4", 10.0, [12 * i for i in range(20)])
    b = _grey_video(tmp_path / "b.mp4", 10.0, [200 - 8 * i for i in range(20)])
    out = tmp_path / "runs"
    out.mkdir()
    earlier = write_mosaic([Tile("a", a), Tile("b", b)], out / "fleet.mp4", 96)
    assert earlier is not None
    video = earlier.read_bytes()
    held = tmp_path / "held"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-c", _HELD_MOSAIC, str(a), str(b), str(earlier), str(held)]
    proc = subprocess.Popen(cmd, env=env)
    try:
        wait_until(lambda: held.exists() or proc.poll() is not None, 60.0, "the mosaic half written")
        assert held.exists(), "the mosaic ended before it was half written"
    finally:
        proc.kill()
        proc.wait()
    assert earlier.read_bytes() == video  # before: a cut video in its place
    assert len(_frames(earlier)) == 20
    (left,) = [p for p in out.iterdir() if p.name != "fleet.mp4"]
    assert left.name.startswith(".fleet.mp4.") and left.name.endswith(".tmp.mp4")
    assert remove_report_leftovers(out) == Leftovers()  # a young one: its writer may live
    size = left.stat().st_size
    os.utime(left, (time.time() - LEFTOVER_AGE_S - 60,) * 2)
    assert remove_report_leftovers(out) == Leftovers(1, size)
    assert [p.name for p in out.iterdir()] == ["fleet.mp4"]
