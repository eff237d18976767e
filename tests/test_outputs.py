import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from _video import make_video, retime_mp4

from daemon.cli import main
from daemon.outputs import (
    MAX_VIDEO_SIDE,
    SPACE_CHECK_EVERY,
    AnnotatedVideo,
    EmbeddingFile,
    EventLog,
    RunSummary,
    camera_files,
    draw_tracks,
    drop_empty_run,
    earlier_folders,
    keep_earlier_run,
    mp4_problem,
    video_segment,
)
from daemon.types import Track


def test_embedding_file_is_a_valid_npy_at_every_flush(tmp_path: Path) -> None:
    p = tmp_path / "e.npy"
    f = EmbeddingFile(p, 4)
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert [f.append(r) for r in rows] == [0, 1, 2]
    f.flush()
    np.testing.assert_array_equal(np.load(p, mmap_mode="r"), rows)
    f.append(np.ones(4, np.float32))
    f.close()
    back = np.load(p, allow_pickle=False)
    assert back.shape == (4, 4) and back.dtype == np.float32
    with pytest.raises(ValueError, match="5 values"):
        EmbeddingFile(tmp_path / "x.npy", 4).append(np.zeros(5, np.float32))


def _track(tid: int, det: int, embedded: bool = False) -> Track:
    return Track("cam", tid, (10.0 * tid, 0.0, 10.0 * tid + 5, 20.0), 0.9, det, embedded)


def test_event_log_lifecycle(tmp_path: Path) -> None:
    emb = EmbeddingFile(tmp_path / "e.npy", 3)
    log = EventLog(tmp_path / "ev.jsonl", "cam", every=5, embeddings=emb)
    vecs = np.eye(3, dtype=np.float32)
    log.frame(0, 0.0, [_track(1, 0, True), _track(2, 1)], vecs)
    for i in range(1, 7):
        log.frame(i, i / 10, [_track(1, 0, i == 3)], vecs)
    log.ended([1, 2, 99], 7, 0.7)
    log.close()
    emb.close()
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    kinds = [(e["event"], e["track_id"], e["frame"]) for e in events]
    assert kinds == [
        ("track.started", 1, 0),
        ("track.started", 2, 0),
        ("track.updated", 1, 3),  # new embedding
        ("track.ended", 1, 7),
        ("track.ended", 2, 7),
    ]
    assert all(e["v"] == 1 and e["camera"] == "cam" for e in events)
    assert events[0]["embedding"] == {"file": "e.npy", "row": 0, "dim": 3}
    assert events[1]["embedding"] is None
    assert events[3]["first_frame"] == 0 and events[3]["last_frame"] == 6 and events[3]["frames"] == 7
    stored = np.load(tmp_path / "e.npy")
    np.testing.assert_array_equal(stored[events[2]["embedding"]["row"]], vecs[0])
    assert log.counts == {"track.started": 2, "track.updated": 1, "track.ended": 2}


def test_periodic_updates_without_embeddings(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "ev.jsonl", "cam", every=4, embeddings=None)
    for i in range(10):
        log.frame(i, 0.0, [_track(1, 0)], None)
    log.close()
    assert log.counts["track.updated"] == 2  # frames 4 and 8


def test_track_labels_are_legible_and_neighbouring_ids_differ_in_colour() -> None:
    """Labels were drawn in the box's random colour with no background (a dark slate 'G5' on a grey road), and
    two neighbouring tracks could get nearly the same magenta."""
    from daemon.outputs import _colour

    grey = np.full((120, 160, 3), 110, np.uint8)
    out = draw_tracks(grey, [_track(5, 40)], "")
    x1, y1 = round(_track(5, 40).xyxy[0]), round(_track(5, 40).xyxy[1])
    patch = out[max(y1 - 18, 0) : max(y1, 18), x1 : x1 + 14].reshape(-1, 3).astype(int)  # the label's box
    lum = patch @ np.array([0.114, 0.587, 0.299])
    assert lum.max() - lum.min() > 120  # ink against its box, whatever the scene
    hues = [
        cv2.cvtColor(np.array([[_colour(i)]], np.uint8), cv2.COLOR_BGR2HSV)[0, 0, 0] for i in range(1, 30)
    ]
    gaps = [min(abs(int(a) - int(b)), 180 - abs(int(a) - int(b))) for a, b in itertools.pairwise(hues)]
    assert min(gaps) >= 30  # ids that start together (neighbours) are far apart on the colour wheel


def test_draw_does_not_touch_input_and_video_is_readable(tmp_path: Path) -> None:
    img = np.zeros((120, 160, 3), np.uint8)
    out = draw_tracks(img, [_track(3, 0, True)], "cap")
    assert img.sum() == 0 and out.sum() > 0
    v = AnnotatedVideo(tmp_path / "a.mp4", 10.0)
    for _ in range(5):
        v.write(img, [_track(3, 0)], "x")
    v.close()
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_video_keeps_frames_of_another_size(tmp_path: Path) -> None:
    """A frame whose size differs from the first one's was dropped by the writer without an error."""
    v = AnnotatedVideo(tmp_path / "a.mp4", 10.0)
    for size in [(120, 160), (120, 160), (60, 80), (240, 320), (120, 160)]:
        v.write(np.full((*size, 3), 128, np.uint8), [_track(3, 0)], "x")
    v.close()
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    cap.release()


def test_a_video_of_odd_size_keeps_its_last_column_and_row(tmp_path: Path) -> None:
    """A 767x575 source gave a 766x574 annotated.mp4: the encoder needs even sides and cut the last column and
    row away; the frame is now padded with black to 768x576 instead."""
    v = AnnotatedVideo(tmp_path / "odd.mp4", 10.0)
    image = np.full((575, 767, 3), 40, np.uint8)
    image[:, -4:] = 250  # the right edge and the bottom edge are bright
    image[-4:, :] = 250
    for _ in range(3):
        v.write(image.copy(), [], "")
    v.close()
    cap = cv2.VideoCapture(str(tmp_path / "odd.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (576, 768, 3)
    assert frame[300, 765].mean() > 200 and frame[573, 300].mean() > 200  # still there
    assert frame[300, 767].mean() < 30  # the padding


def test_a_frame_past_mpeg4_s_largest_side_is_scaled_down_to_fit(tmp_path: Path) -> None:
    """8K footage (8192x4320 and wider: 360-degree and panoramic cameras) stopped the run at its first frame with
    'cannot write video': MPEG-4 Part 2 takes sides below 8192 px, and the writer refused to open. The video is
    now scaled down to fit, its aspect kept (a 8200x600 frame becomes 8190x600 or so: even sides)."""
    v = AnnotatedVideo(tmp_path / "wide.mp4", 10.0)
    image = np.full((600, 8200, 3), 40, np.uint8)
    image[:, -100:] = 250  # the right edge is bright: it must still be in the picture
    for _ in range(2):
        v.write(image.copy(), [], "")
    v.close()
    cap = cv2.VideoCapture(str(tmp_path / "wide.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape[1] <= MAX_VIDEO_SIDE and frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0
    assert abs(frame.shape[1] / frame.shape[0] - 8200 / 600) < 0.05
    assert frame[300, frame.shape[1] - 30].mean() > 200 and frame[300, 100].mean() < 80


@pytest.mark.parametrize("fps", [200 / 3, 118.9314, 29.97])
def test_a_frame_rate_mp4v_cannot_time_is_written_at_the_nearest_it_can(tmp_path: Path, fps: float) -> None:
    """A source at 200 fps read at stride 3 (66.667 fps), or a high-rate phone recording whose average rate is
    118.9314, stopped the run at its first frame with 'cannot write video': OpenCV writes the rate to the ms and
    MPEG-4's time base takes 65535 ticks a second at most. The video is written at the nearest rate it can be
    (to 0.01 fps), and a rate it can time is kept as it is."""
    v = AnnotatedVideo(tmp_path / "a.mp4", fps)
    for _ in range(3):
        v.write(np.full((48, 64, 3), 90, np.uint8), [], "")
    v.close()
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3 and abs(cap.get(cv2.CAP_PROP_FPS) - fps) < 0.006
    cap.release()


def test_summary_round_trip(tmp_path: Path) -> None:
    s = RunSummary("cam", "x.mp4", 10, 2.0, 5.0, {"detect": 1.0}, 20, 5, 3, {"track.started": 3})
    s.write(tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["fps"] == 5.0 and doc["v"] == 1  # versioned, as the events and identity files are
    assert "10 frames" in s.text()


def test_the_summary_line_of_a_run_without_frames_says_so() -> None:
    """A worker stopped before its first frame logged 'ms/frame: ;' (an empty list of stages)."""
    s = RunSummary("cam", "x.mp4", 0, 0.1, 0.0, {}, 0, 0, 0, {})
    assert "ms/frame: none (no frame);" in s.text()


def _noise_video(path: Path, frames: int) -> None:
    v = AnnotatedVideo(path, 10.0)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        v.write(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), [_track(1, 0)], "x")
    v.close()


def test_mp4_problem_tells_a_finished_video_from_a_cut_one(tmp_path: Path) -> None:
    _noise_video(tmp_path / "a.mp4", 5)
    assert mp4_problem(tmp_path / "a.mp4") is None
    data = (tmp_path / "a.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert "runs past the end" in (mp4_problem(tmp_path / "cut.mp4") or "")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert mp4_problem(tmp_path / "empty.mp4") == "no index (moov box)"
    assert "cannot read" in (mp4_problem(tmp_path / "missing.mp4") or "")


# Writes through AnnotatedVideo while the process may not grow a file past 200 kB: OpenCV's writes fail
# from there on (EFBIG, as ENOSPC on a full disk), which it only logs.
CAPPED = """
import resource, signal, sys
from pathlib import Path
import numpy as np
from daemon.outputs import AnnotatedVideo
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
v = AnnotatedVideo(Path(sys.argv[1]), 10.0)
rng = np.random.default_rng(0)
for _ in range(40):
    v.write(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), [], "x")
try:
    v.close()
except OSError as e:
    print("OSError:", e.strerror)
"""


def test_a_video_whose_writes_failed_is_an_error_at_close(tmp_path: Path) -> None:
    """OpenCV's writer only logs failed writes: annotated.mp4 was left without its index, unplayable, and
    the run ended as if all was well."""
    out = subprocess.run(
        [sys.executable, "-c", CAPPED, str(tmp_path / "a.mp4")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert f"OSError: {tmp_path / 'a.mp4'} was not finished" in out.stdout, out.stdout + out.stderr
    assert "is the disk full?" in out.stdout


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 400 kB tmpfs (needs the right to mount: root in a container, or skipped)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.skipif(not hasattr(os, "statvfs"), reason="statvfs is POSIX")
def test_a_full_disk_stops_the_video_mid_run(tiny_disk: Path) -> None:
    v = AnnotatedVideo(tiny_disk / "a.mp4", 10.0)
    rng = np.random.default_rng(0)
    with pytest.raises(OSError, match="no space left on the disk of") as e:
        for _ in range(10 * SPACE_CHECK_EVERY):  # ~23 kB per frame: full well before the last check
            v.write(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), [], "x")
    assert e.value.errno == 28  # ENOSPC
    with pytest.raises(OSError, match="was not finished"):
        v.close()


def test_a_live_streams_video_fills_dropped_frames_and_plays_in_real_time(tmp_path: Path) -> None:
    """A live stream drops frames when the worker is slow; the annotated video wrote only those it got at the
    stream's rate, so it played fast (10 s of a busy scene in 4 s) and the fleet mosaic put it out of step. A burst
    of frames (the network held them back) is not written ahead of real time either, and a wall clock stepped back
    starts the grid again rather than leaving every frame out until it has caught up."""
    v = AnnotatedVideo(tmp_path / "live.mp4", 10.0)
    img = np.zeros((48, 64, 3), np.uint8)
    for ts in (100.0, 100.1, 100.5, 100.6):  # frames 2-4 were dropped
        v.write(img, [], "x", ts=ts)
    v.write(img, [], "x", ts=160.6)  # the stream was away a minute: not filled (held in its time table)
    v.write(img, [], "x", ts=160.7)
    for ts in (160.72, 160.74, 160.8):  # a burst: the first two fall in slots filled already
        v.write(img, [], "x", ts=ts)
    for ts in (150.0, 150.1):  # the wall clock stepped back 10 s: the next slots, not left out
        v.write(img, [], "x", ts=ts)
    v.write(img, [], "x")  # no time: the next slot
    v.close()
    cap = cv2.VideoCapture(str(tmp_path / "live.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7 + 2 + 1 + 2 + 1
    cap.release()


def test_a_gap_the_video_does_not_fill_is_held_in_its_time_table(tmp_path: Path) -> None:
    """A live stream away for a minute (or a file's long pause) is not filled with copies of the frame before, and
    the video jumped: everything after the gap played a minute early, and fleet.mp4 showed it beside the other
    cameras' frames of a minute before. The frame before the gap is now held in the file's time table for as long
    as the gap lasted; the frames themselves are the same."""
    v = AnnotatedVideo(tmp_path / "live.mp4", 10.0)
    levels = [40, 80, 120, 160, 200]
    for ts, level in zip((100.0, 100.1, 160.2, 160.3, 300.0), levels, strict=True):
        v.write(np.full((48, 64, 3), level, np.uint8), [], "", ts=ts)
    v.close()
    assert mp4_problem(tmp_path / "live.mp4") is None
    cap = cv2.VideoCapture(str(tmp_path / "live.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5 / 200.1, rel=1e-3)  # the average: its length is right
    times, shown = [], []
    while cap.grab():
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
        shown.append(float(cap.retrieve()[1][10:40, 10:50].mean()))
    cap.release()
    assert times == pytest.approx([0.0, 0.1, 60.2, 60.3, 200.0], abs=1e-3)
    assert shown == pytest.approx(levels, abs=8)
    cut = AnnotatedVideo(tmp_path / "cut.mp4", 10.0, segment_frames=2)  # the gaps fall between its files
    for ts in (100.0, 100.1, 160.2, 160.3, 300.0):
        cut.write(np.full((48, 64, 3), 90, np.uint8), [], "", ts=ts)
    cut.close()
    lengths = []
    for n in range(cut.segments):
        cap = cv2.VideoCapture(str(video_segment(tmp_path / "cut.mp4", n)))
        lengths.append(cap.get(cv2.CAP_PROP_FRAME_COUNT) / cap.get(cv2.CAP_PROP_FPS))
        cap.release()
    assert lengths == pytest.approx([60.2, 139.8, 0.1], abs=1e-3)  # each file's last frame held: 0, 60.2, 200


def test_a_variable_rate_file_s_video_shows_each_frame_at_its_own_time(tmp_path: Path) -> None:
    """A 10 s phone recording with a 3 s gap (70 frames: 0-4.9 s and 8-9.9 s, 7 fps on average) gave an
    annotated.mp4 of its 70 frames at 7 fps, one after the other: frame 50, seen at 8.0 s, played at 7.1 s, and
    everything before the gap ran late, everything after it early. Each frame is now put on the video's 7 fps grid
    at its own time: the frame before the gap stays up through it, and of two frames that fall in one slot of the
    grid (the 10 fps parts) the first is kept."""
    clip = make_video(tmp_path / "vfr.mp4", frames=70, size=(160, 120), people=2)
    times = [i / 10 for i in range(50)] + [8.0 + i / 10 for i in range(20)]
    retime_mp4(clip.path, times)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"cameras:\n  phone:\n    source: {{uri: {clip.path}}}\n"
        f"    detector: {{type: ground-truth, path: {gt}}}\n    embedder: {{type: none}}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, progress: false, video: true}}\n",
        encoding="utf-8",
    )
    assert main(["run", "--config", str(cfg)]) == 0
    cap = cv2.VideoCapture(str(tmp_path / "runs" / "phone" / "annotated.mp4"))
    fps = cap.get(cv2.CAP_PROP_FPS)
    below = slice(30, None)  # below the caption, whose FPS figure differs from run to run
    truth = np.stack([clip.render(i)[below] for i in range(clip.frames)]).astype(np.int16)
    shown = []
    while (got := cap.read())[0]:
        shown.append(int(np.argmin(np.abs(truth - got[1][below].astype(np.int16)).mean(axis=(1, 2, 3)))))
    cap.release()
    assert fps == pytest.approx(7.0)
    slots: dict[int, int] = {}  # the grid's slot of each frame's time: the first frame in a slot is kept
    for i, t in enumerate(times):
        slots.setdefault(round(t * fps), i)
    expected = [slots[max(s for s in slots if s <= k)] for k in range(max(slots) + 1)]
    assert shown == expected
    assert set(shown[35:56]) == {48} and shown[56] == 50  # 5.0-7.9 s: the last frame before the gap held


def test_the_readme_table_of_a_run_lists_every_file_a_single_camera_writes() -> None:
    """status.json, written by every run (`reid-daemon fleet` reads it for its progress), was missing from the
    README's table of what a run writes, and the text said only a fleet camera writes it."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("A run writes into", 1)[1].split("\n\n", 2)[1]
    fleet_only = {"<camera>.global.txt", "identities.json", "identities.jsonl"}
    for name in sorted(set(camera_files("<camera>")) - fleet_only):
        assert f"| `{name}` |" in table, name


def test_the_readme_names_every_field_of_the_events_a_run_writes(tmp_path: Path) -> None:
    """The README's events.jsonl row spoke of a "timestamp" (the field is `ts`), "track id" (`track_id`), gave
    every event an embedding reference (track.ended has none, an update may hold null) and left out the fields
    of track.ended and a fleet's global_id and label: a reader of the file could not find them by those names."""
    from daemon.identity import IdentityAssignment

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `events.jsonl` |"))
    emb = EmbeddingFile(tmp_path / "e.npy", 3)
    log = EventLog(tmp_path / "ev.jsonl", "cam", every=5, embeddings=emb)
    named = [IdentityAssignment("cam", 1, 7, "jane", 0.9, "gallery", changed=True)]
    log.frame(0, 0.0, [_track(1, 0, True)], np.eye(3, dtype=np.float32), named)
    log.frame(1, 0.1, [_track(1, 0, True)], np.eye(3, dtype=np.float32))
    log.ended([1], 2, 0.2)
    log.close()
    emb.close()
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["track.started", "track.updated", "track.ended"]
    for e in events:
        assert f"`{e['event']}`" in row
        for name in e:
            assert f"`{name}`" in row or f'`"{name}": 1`' in row, (
                f"{e['event']}'s {name!r} is not in the README"
            )


def test_the_caption_is_legible_on_a_bright_scene_and_fits_a_narrow_frame() -> None:
    # It was plain white text: invisible on a bright scene, and on a 204 px wide camera its end ran off the frame.
    white = np.full((460, 204, 3), 255, np.uint8)
    out = draw_tracks(white, [], "b  frame 209  30.4 FPS")
    band = np.any(out[:32] != 255, axis=2)
    cols = np.flatnonzero(band.any(axis=0))
    assert cols.size > 0, "the caption does not show on white"
    assert cols.max() < white.shape[1] - 2, "the caption runs off the frame's right edge"


def test_more_than_nine_restarts_within_a_second_keep_the_newest_earlier_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the tenth folder kept within one second is earlier-<time>-10, which sorted before -2 by name,
    # so output.keep_earlier deleted the newest folders (the one just kept among them) and kept older ones.
    now = time.gmtime(1_800_000_000)
    monkeypatch.setattr("daemon.outputs.time.gmtime", lambda *_: now)
    folder = tmp_path / "cam"
    folder.mkdir()
    kept = []
    for run in range(1, 12):
        (folder / "events.jsonl").write_text(f"{run}\n", encoding="utf-8")
        kept.append(keep_earlier_run(folder, "cam", keep=3))
    names = [p.name for p in earlier_folders(folder)]
    assert names == [f"earlier-20270115T080000Z-{n}" for n in (9, 10, 11)]
    assert kept[-1] == folder / names[-1]
    assert [(p / "events.jsonl").read_text() for p in earlier_folders(folder)] == ["9\n", "10\n", "11\n"]


def test_only_a_run_whose_files_hold_no_frame_is_dropped_at_the_next_start(tmp_path: Path) -> None:
    """A start that failed before its first frame is removed rather than kept in earlier-*; anything that
    holds a record, or cannot be told from one, stays a run's data (a run that saw nobody with the video off
    leaves empty logs, but its status.json counts its frames)."""
    folder = tmp_path / "cam"

    def empty_run(name: str = "", text: str = "") -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        EmbeddingFile(folder / "embeddings.npy", 4).close()
        for log in ("cam.txt", "cam.global.txt", "events.jsonl", "identities.jsonl"):
            (folder / log).write_text("")
        (folder / "identities.json").write_text('{"v": 1, "first_frame_time": null, "identities": {}}')
        (folder / "status.json").write_text('{"v": 1, "state": "failed", "frames": 0}')
        (folder / "run.json").write_text('{"v": 1, "run": "x"}')
        if name:
            (folder / name).write_text(text)

    empty_run()
    assert drop_empty_run(folder, "cam") and list(folder.iterdir()) == []
    assert not drop_empty_run(folder, "cam")  # nothing there
    held = [
        ("status.json", '{"state": "running", "frames": 250}'),  # frames, nobody seen, the video off
        ("status.json", "{cut sh"),
        ("summary.json", '{"frames": 3}'),
        ("identities.json", '{"first_frame_time": 12.5, "identities": {}}'),
        ("events.jsonl", '{"event": "track.started"}\n'),
        ("cam.txt", "1,1,10,10,20,40,1,-1,-1,-1\n"),
        ("annotated.mp4", "x"),  # made at the first frame
    ]
    for name, text in held:
        empty_run(name, text)
        assert not drop_empty_run(folder, "cam"), (name, text)
        assert (folder / "run.json").exists()
    empty_run()
    with open(folder / "embeddings.npy", "ab") as f:
        f.write(b"\0" * 16)  # a row (its count not in the header yet)
    assert not drop_empty_run(folder, "cam")


def _ink_rows(out: np.ndarray, colour: int) -> int:
    """Rows of ``out`` (drawn on a plain ``colour`` frame) that anything was drawn on."""
    return int(np.any(out != colour, axis=(1, 2)).sum())


def test_labels_and_caption_grow_with_a_frame_taller_than_pets09_s() -> None:
    """Labels (font 0.5, 1 px strokes), boxes (2 px) and the caption (0.55) were as many pixels on 1920x1440
    footage as on PETS09-S2L1's 768x576: a third of its height there, unreadable once the video is seen at a
    screen's size, and in fleet.mp4, whose tiles are 480 px tall. They are drawn in proportion to the frame's
    height above 576 px; a frame up to that tall gets them as before, pixel for pixel."""
    track = Track("cam", 12, (100.0, 300.0, 140.0, 400.0), 0.9, 0, True)
    small = np.full((576, 768, 3), 110, np.uint8)
    before = draw_tracks(small, [track], "frame 300  14.9 FPS")
    tall = np.full((1440, 1920, 3), 110, np.uint8)
    tall_track = Track("cam", 12, (250.0, 750.0, 350.0, 1000.0), 0.9, 0, True)
    after = draw_tracks(tall, [tall_track], "frame 300  14.9 FPS")
    label = _ink_rows(before[:300], 110)  # the caption's rows and the label's, above the box
    assert _ink_rows(after[:750], 110) >= 2.2 * label  # 1440 / 576 = 2.5 times as tall
    box_side = np.any(after[760:990, 240:262] != 110, axis=2).any(axis=0).sum()
    assert box_side >= 4  # the box's side, 2.5 x 2 px
    # up to 576 px tall, drawn as before: font 0.5 and 1 px for the label, 0.55 for the caption
    (_, h), base = cv2.getTextSize("12*", cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    rows = 100 + np.flatnonzero(np.any(before[100:, 100:140] != 110, axis=2).any(axis=1))  # below the caption
    assert rows.min() == 300 - h - base - 2
