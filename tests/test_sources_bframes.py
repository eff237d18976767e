"""Recorded footage as cameras and NVRs write it: H.264 and HEVC with B-frames (decoded out of display order), a
non-zero start time, an edit list, a variable frame rate, a file cut short. Read through the daemon's file source
(what ``reid-daemon run`` reads), frame N must be the N-th frame shown (ground truth is numbered so), timed at
its presentation time from the first frame shown. The clips are encoded at test time with imageio-ffmpeg's FFmpeg
(libx264, libx265), each frame showing its number in squares that survive the codec."""

from __future__ import annotations

import itertools
import json
import logging
import re
import select
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from _video import Shown, encode_numbered, frame_number, shown_frames
from test_sources import _blank_frames, _mjpeg_avi  # an MJPEG AVI and its frames' data lost

from daemon.cli import main
from daemon.config import SourceConfig
from daemon.errors import SourceError
from daemon.scenario import ScenarioConfig, ViewConfig, build
from daemon.sources import open_source
from daemon.types import Frame

imageio_ffmpeg = pytest.importorskip(
    "imageio_ffmpeg", reason="imageio-ffmpeg (the dev extra) ships the FFmpeg with libx264/libx265 these need"
)

FRAMES, FPS = 20, 10.0
SYSTEM_PYTHON = Path("/usr/bin/python3")
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
# three B-frames between references, forced (x264 and x265 would choose P-frames for so simple a picture)
H264 = ["-c:v", "libx264", "-x264-params", "bframes=3:b-adapt=0:b-pyramid=normal", "-g", "10"]
HEVC = ["-c:v", "libx265", "-x265-params", "bframes=3:b-adapt=0:log-level=error", "-g", "10"]
YUV = ["-pix_fmt", "yuv420p"]


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def read_all(path: Path, **source: object) -> tuple[list[Frame], int | None]:
    """Every frame the daemon's file source delivers, and the count it announced."""
    with open_source(SourceConfig(uri=str(path), **source)) as src:  # type: ignore[arg-type]
        return list(src), src.frame_count


def numbers(frames: list[Frame]) -> list[int]:
    return [frame_number(f.image) for f in frames]


def with_b_frames(shown: list[Shown]) -> list[Shown]:
    """The frames, once the clip is checked to hold B-frames (the encoder did as asked)."""
    assert sum(s.kind == "B" for s in shown) >= 5, [s.kind for s in shown]
    return shown


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("h264.mp4", H264),
        ("h264.mkv", H264),
        ("hevc.mp4", HEVC),
        ("hevc.mkv", HEVC),
        ("h264-from-5s.mp4", [*H264, "-output_ts_offset", "5"]),
        ("h264-from-5s.mkv", [*H264, "-output_ts_offset", "5"]),
        ("hevc-from-5s.mkv", [*HEVC, "-output_ts_offset", "5"]),
        ("h264-no-edit-list.mp4", [*H264, "-use_editlist", "0"]),  # shown from 0.2 s: the B-frames' delay
        ("h264.ts", H264),  # MPEG-TS, as NVRs record: shown from 1.4 s
        ("h264-from-100s.ts", [*H264, "-output_ts_offset", "100"]),
    ],
)
def test_b_frames_are_delivered_once_each_in_display_order_at_their_times(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, args: list[str]
) -> None:
    """Each frame once, in the order shown, frame N the N-th shown, timed at its presentation time counted from the
    first frame shown (``source.clock_offset_s`` places a recording on the fleet clock: a start of 5 s in the
    container, an MPEG-TS's 1.4 s, an mp4's B-frame delay without an edit list, do not move it), the count the
    source announces is the count delivered, and nothing is warned. (The MKVs from 5 s: b9c64e6.)"""
    video = encode_numbered(ffmpeg, tmp_path / name, [*args, *YUV], FRAMES, FPS)
    shown = with_b_frames(shown_frames(ffmpeg, video))
    start = shown[0].pts_s
    assert [s.pts_s for s in shown] == pytest.approx([start + i / FPS for i in range(FRAMES)])
    assert "from-" not in name or start >= float(name.split("from-")[1].split("s")[0])
    with caplog.at_level(logging.WARNING, logger="daemon"):
        frames, count = read_all(video)
    assert count == FRAMES and not caplog.text, caplog.text
    assert [f.index for f in frames] == list(range(FRAMES))
    assert numbers(frames) == list(range(FRAMES))
    assert [f.timestamp for f in frames] == pytest.approx([s.pts_s - start for s in shown], abs=0.5 / FPS)


def test_a_variable_rate_recording_with_frames_left_out_keeps_its_times_and_numbers(
    ffmpeg: str, tmp_path: Path
) -> None:
    """An H.264 file with B-frames whose frames 5-9 were never written (a camera that records on motion, an
    encoder dropping frames, -fps_mode vfr): frame 5 delivered is the 6th shown (source frame 10), timed at 1.0 s,
    the gap kept, and the source counts the 15 frames the file holds. Test-only: it held."""
    drop = ["-vf", r"select=not(between(n\,5\,9))", "-fps_mode", "vfr"]
    video = encode_numbered(ffmpeg, tmp_path / "vfr.mp4", [*H264, *drop, *YUV], FRAMES, FPS)
    shown = with_b_frames(shown_frames(ffmpeg, video))
    kept = [*range(5), *range(10, FRAMES)]
    assert [s.pts_s for s in shown] == pytest.approx([i / FPS for i in kept])
    frames, count = read_all(video)
    assert (count, [f.index for f in frames]) == (len(kept), list(range(len(kept))))
    assert numbers(frames) == kept
    assert [f.timestamp for f in frames] == pytest.approx([s.pts_s for s in shown], abs=0.5 / FPS)


def test_a_recording_cut_by_stream_copy_starts_at_its_cut(ffmpeg: str, tmp_path: Path) -> None:
    """A recording cut at 0.55 s without re-encoding (ffmpeg -ss 0.55 -c copy: what an NVR export does) keeps the
    frames from the key frame before the cut and an edit list that hides them: the first frame delivered is the
    first shown (source frame 6), timed at 0, and each after it once, in order. Test-only: it held."""
    whole = encode_numbered(ffmpeg, tmp_path / "whole.mp4", [*H264, "-g", "8", *YUV], FRAMES, FPS)
    cut = tmp_path / "cut.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-ss", "0.55", "-i", str(whole), "-c", "copy", str(cut)], check=True
    )
    shown = shown_frames(ffmpeg, cut)
    frames, _ = read_all(cut)
    assert numbers(frames) == list(range(6, FRAMES)) and len(shown) == len(frames)
    assert [f.index for f in frames] == list(range(len(shown)))
    assert [f.timestamp for f in frames] == pytest.approx(
        [s.pts_s - shown[0].pts_s for s in shown], abs=0.5 / FPS
    )


def _stream_copy_cut(ffmpeg: str, video: Path, out: Path, at_s: float = 0.55) -> Path:
    """``video`` cut at ``at_s`` without re-encoding, as an NVR export does (an edit list hides the frames from the
    key frame before the cut)."""
    cmd = [ffmpeg, "-v", "error", "-ss", f"{at_s:g}", "-i", str(video), "-c", "copy", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return out


def _opencv_count(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def test_a_recording_cut_by_stream_copy_counts_the_frames_it_shows(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An mp4 cut by stream copy keeps the frames from the key frame before the cut, hidden by its edit list: OpenCV
    counts them (20), so the replay of a whole file ended warning 'ended after 14 of 20 frames: read failed or the
    stream ended', its progress bar counted to 20. The frames shown are counted from the file's own tables (its
    edit list, time-to-sample and composition offsets): 14, every one delivered, nothing warned."""
    whole = encode_numbered(ffmpeg, tmp_path / "whole.mp4", [*H264, "-g", "8", *YUV], FRAMES, FPS)
    cut = _stream_copy_cut(ffmpeg, whole, tmp_path / "cut.mp4")
    assert _opencv_count(cut) == FRAMES  # the hidden frames are still in its tables
    with caplog.at_level(logging.WARNING, logger="daemon"):
        frames, count = read_all(cut)
        strided, strided_count = read_all(cut, stride=3)
    assert numbers(frames) == list(range(6, FRAMES)) and len(shown_frames(ffmpeg, cut)) == len(frames)
    assert count == len(frames) == 14 and not caplog.text, caplog.text
    assert strided_count == len(strided) == 5


def assert_timed_from_the_first_shown(frames: list[Frame], shown: list[Shown]) -> None:
    """The frames are timed from the first one delivered (0), at their presentation times' steps. A cut whose
    first frames its decoder drops (RASL pictures, open-GOP B-frames) had its first frame at 0.2 s: OpenCV's
    position counts from the dropped frames' times, so the recording sat 0.2 s late on the fleet clock."""
    assert [f.timestamp for f in frames] == pytest.approx(
        [s.pts_s - shown[0].pts_s for s in shown], abs=0.5 / FPS
    )


OPEN_GOP_H264 = ["-c:v", "libx264", "-x264-params", "bframes=3:b-adapt=0:open-gop=1"]


@pytest.mark.parametrize("codec", [HEVC, OPEN_GOP_H264], ids=["hevc", "open-gop-h264"])
def test_a_stream_copy_cut_of_an_open_gop_recording_counts_the_frames_its_decoder_shows(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, codec: list[str]
) -> None:
    """A recording with open GOPs cut by stream copy starts on a key frame that later frames may reach past: HEVC's
    (x265) CRA pictures, or x264's open-gop I pictures that are not IDR. The B-frames decoded after it but shown
    before it (HEVC's RASL pictures) refer to frames cut off, and FFmpeg's decoder drops them, two of them inside
    the edit list's range: its tables say 14 frames are shown (OpenCV: 15), 12 are; the replay warned 'read to its
    end, 12 frames where its container counts 14'. Counted as shown now: every frame FFmpeg shows delivered,
    nothing warned, timed from the first."""
    whole = encode_numbered(ffmpeg, tmp_path / "whole.mp4", [*codec, "-g", "8", *YUV], FRAMES, FPS)
    cut = _stream_copy_cut(ffmpeg, whole, tmp_path / "cut.mp4")
    shown = shown_frames(ffmpeg, cut)
    with caplog.at_level(logging.WARNING, logger="daemon"):
        frames, count = read_all(cut)
    assert numbers(frames) == list(range(FRAMES - len(shown), FRAMES)) and _opencv_count(cut) > len(shown)
    assert count == len(frames) == len(shown) < 14 and not caplog.text, caplog.text
    assert_timed_from_the_first_shown(frames, shown)


def test_reid_daemon_fleet_counts_a_stream_copy_cut_as_its_worker_does(ffmpeg: str, tmp_path: Path) -> None:
    """`reid-daemon fleet`'s progress bar of a camera replaying a stream-copy cut counted to OpenCV's 20 while
    its worker delivers the 14 frames shown (the worker's count came from the file's tables, the fleet's did
    not): the fleet counts the frames as the source does."""
    from daemon.config import load_settings
    from daemon.fleet_runner import _frame_total

    whole = encode_numbered(ffmpeg, tmp_path / "whole.mp4", [*H264, "-g", "8", *YUV], FRAMES, FPS)
    cut = _stream_copy_cut(ffmpeg, whole, tmp_path / "cut.mp4")
    assert _frame_total(load_settings(_run_config(tmp_path, cut)), "door") == 14


def test_reid_daemon_run_of_a_stream_copy_cut_ends_without_error(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`reid-daemon run` on an NVR-style stream-copy cut: its summary counts the 14 frames shown and keeps no error
    (before: last_error 'read failed or the stream ended', from 'ended after 14 of 20 frames')."""
    whole = encode_numbered(ffmpeg, tmp_path / "whole.mp4", [*H264, "-g", "8", *YUV], FRAMES, FPS)
    cut = _stream_copy_cut(ffmpeg, whole, tmp_path / "cut.mp4")
    with caplog.at_level(logging.WARNING, logger="daemon"):
        assert main(["run", "--config", str(_run_config(tmp_path, cut))]) == 0
    assert "ended after" not in caplog.text, caplog.text
    summary = json.loads((tmp_path / "runs" / "door" / "summary.json").read_text())
    assert summary["frames"] == 14 and summary["source_stats"]["last_error"] == ""


def test_a_scenario_built_from_a_stream_copy_cut_warns_nothing(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """scenario build announced the stream-copy cut as 20 frames and warned 'decodes to 14 frames, its container
    announces 20: cut short or damaged?' of a whole file; it counts as the run does now, and warns nothing."""
    whole = encode_numbered(ffmpeg, tmp_path / "whole.mp4", [*H264, "-g", "8", *YUV], FRAMES, FPS)
    cut = _stream_copy_cut(ffmpeg, whole, tmp_path / "cut.mp4")
    scenario = ScenarioConfig(name="c", views=(ViewConfig(name="whole", region=(0, 0, 320, 240)),))
    with caplog.at_level(logging.WARNING, logger="daemon"):
        files = build(cut, None, scenario, tmp_path / "out")
    assert not caplog.text, caplog.text
    with open_source(SourceConfig(uri=str(files.videos["whole"]))) as src:
        assert numbers(list(src)) == list(range(6, FRAMES))


def _with_edits(video: Path, out: Path, edits: list[tuple[int, int]]) -> Path:
    """``video`` (FFmpeg's mp4, its index last) with its video track's edit list replaced by ``edits``: (media time
    in the track's time scale, -1 for an empty edit; duration in the movie's), version 0."""
    data = bytearray(video.read_bytes())
    at = data.rindex(b"moov") - 4
    elst = data.index(b"elst", at) - 4
    old = struct.unpack(">I", data[elst : elst + 4])[0]
    table = struct.pack(">I4sII", 16 + 12 * len(edits), b"elst", 0, len(edits))
    table += b"".join(struct.pack(">IihH", duration, media, 1, 0) for media, duration in edits)
    data[elst : elst + old] = table
    for kind in (b"moov", b"trak", b"edts"):  # the boxes around it grow with it; the frames, before, stay put
        box = data.rindex(kind, at, elst) - 4
        struct.pack_into(">I", data, box, struct.unpack(">I", data[box : box + 4])[0] + len(table) - old)
    out.write_bytes(bytes(data))
    return out


def _track_scales(video: Path) -> tuple[int, int]:
    """(movie, track) time scales of an FFmpeg mp4 (version 0 headers)."""
    data = video.read_bytes()
    mvhd, mdhd = data.rindex(b"mvhd") - 4, data.rindex(b"mdhd") - 4
    return struct.unpack(">I", data[mvhd + 20 : mvhd + 24])[0], struct.unpack(
        ">I", data[mdhd + 20 : mdhd + 24]
    )[0]


def test_an_edit_list_with_a_start_delay_and_a_segment_counts_the_segment(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-made edit list: an empty edit (nothing shown for 0.5 s: a start delay) then source frames 4-13 (ten
    frames of the 20 the file holds). The count is the ten shown (OpenCV: 20), the frames delivered are those
    FFmpeg shows, nothing warned."""
    whole = encode_numbered(ffmpeg, tmp_path / "whole.mp4", [*H264, *YUV], FRAMES, FPS)
    movie, track = _track_scales(whole)
    first = _first_shown_ticks(whole)
    edits = [(-1, movie // 2), (first + 4 * track // int(FPS), 10 * movie // int(FPS))]
    video = _with_edits(whole, tmp_path / "edited.mp4", edits)
    assert len(shown_frames(ffmpeg, video)) == 10 and _opencv_count(video) == FRAMES
    with caplog.at_level(logging.WARNING, logger="daemon"):
        frames, count = read_all(video)
    assert numbers(frames) == list(range(4, 14)) and count == 10 and not caplog.text, caplog.text


def _first_shown_ticks(video: Path) -> int:
    """The media time FFmpeg's one edit starts the track at (its B-frame delay), in the track's time scale."""
    data = video.read_bytes()
    elst = data.rindex(b"elst") - 4
    return struct.unpack(">i", data[elst + 20 : elst + 24])[0]


def test_an_mp4_whose_tables_cannot_be_read_is_counted_as_before(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream-copy cut whose edit list says it holds 1000 entries where it holds one (FFmpeg reads the one): the
    count falls back to OpenCV's (20), said at debug, and every frame is still delivered: no exception."""
    whole = encode_numbered(ffmpeg, tmp_path / "whole.mp4", [*H264, "-g", "8", *YUV], FRAMES, FPS)
    cut = bytearray(_stream_copy_cut(ffmpeg, whole, tmp_path / "cut.mp4").read_bytes())
    elst = cut.rindex(b"elst") - 4
    struct.pack_into(">I", cut, elst + 12, 1000)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(cut))
    with caplog.at_level(logging.DEBUG, logger="daemon"):
        frames, count = read_all(damaged)
    assert numbers(frames) == list(range(6, FRAMES)) and count == FRAMES
    assert f"{damaged}: its frames are counted by OpenCV" in caplog.text


@pytest.mark.parametrize("codec", [H264, HEVC], ids=["h264", "hevc"])
def test_stride_and_max_frames_on_b_frames_keep_source_numbers(
    ffmpeg: str, tmp_path: Path, codec: list[str]
) -> None:
    """With B-frames decoded out of order, a stride of 3 delivers source frames 0, 3, 6, ... (the frames between
    are grabbed, not decoded to pictures) and max_frames stops after that many. Test-only: it held."""
    video = encode_numbered(ffmpeg, tmp_path / "clip.mp4", [*codec, *YUV], FRAMES, FPS)
    frames, count = read_all(video, stride=3)
    want = list(range(0, FRAMES, 3))
    assert count == len(want) and [f.index for f in frames] == want and numbers(frames) == want
    assert [f.timestamp for f in frames] == pytest.approx([i / FPS for i in want])
    frames, count = read_all(video, stride=3, max_frames=4)
    assert count == 4 and numbers(frames) == [0, 3, 6, 9]


def test_a_looped_b_frame_file_starts_again_at_its_first_shown_frame(ffmpeg: str, tmp_path: Path) -> None:
    """Looping reopens the file: every pass starts at the first frame shown (not the first decoded), indices and
    times go on across passes at the file's rate. Test-only: it held."""
    video = encode_numbered(ffmpeg, tmp_path / "loop.mkv", [*H264, *YUV], FRAMES, FPS)
    frames, _ = read_all(video, loop=True, max_frames=2 * FRAMES + 5)
    assert numbers(frames) == [*range(FRAMES), *range(FRAMES), *range(5)]
    assert [f.index for f in frames] == list(range(2 * FRAMES + 5))
    assert [f.timestamp for f in frames] == pytest.approx([i / FPS for i in range(2 * FRAMES + 5)])


def _cut_at(video: Path, share: float, out: Path) -> Path:
    data = video.read_bytes()
    out.write_bytes(data[: int(len(data) * share)])
    return out


def test_an_mp4_cut_short_without_its_index_is_refused_at_open(ffmpeg: str, tmp_path: Path) -> None:
    """A recording whose writer was killed (its index, written last, missing) cannot be read at all: open_source
    says so, naming the file and that it is unfinished, before any frame."""
    video = encode_numbered(ffmpeg, tmp_path / "whole.mp4", [*H264, *YUV], FRAMES, FPS)
    cut = _cut_at(video, 0.6, tmp_path / "killed.mp4")
    with pytest.raises(SourceError, match=rf"cannot open video file {cut}: the MP4/MOV file is truncated"):
        open_source(SourceConfig(uri=str(cut)))


def test_a_matroska_file_cut_short_ends_early_saying_so(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An MKV (no index needed) cut at 60% of its bytes: the frames before the cut are delivered, numbered as
    shown, and the replay ends with the warning a file cut short gives, not a hang or a traceback. Test-only: it
    held."""
    video = encode_numbered(ffmpeg, tmp_path / "whole.mkv", [*H264, *YUV], FRAMES, FPS)
    cut = _cut_at(video, 0.6, tmp_path / "cut.mkv")
    with caplog.at_level(logging.WARNING, logger="daemon"):
        frames, count = read_all(cut)
    assert count == FRAMES and 5 <= len(frames) < FRAMES
    assert numbers(frames) == [f.index for f in frames] == list(range(len(frames)))
    assert f"source {cut} ended after {len(frames)} of {FRAMES} frames" in caplog.text


@pytest.mark.parametrize(
    ("share", "fps"), [(0.3, FPS), (0.5, FPS), (0.7, FPS), (0.9, FPS), (0.3, 15.0), (0.75, 12.0)]
)
def test_an_mp4_cut_short_keeps_its_frame_numbers_to_the_cut(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, share: float, fps: float
) -> None:
    """An mp4 with its index first (-movflags +faststart: what a camera writes to stream it) cut short, with
    B-frames: at the cut FFmpeg's read fails once, the frames its decoder still held come after it, and those
    that referred to the data cut off are dropped without a failed read. The failed read was taken for one
    damaged frame passed over ('frame 13 could not be decoded: skipped') and the frames dropped silently were not
    seen, so the frames after were numbered one too high or too low (source frame 13 delivered as frame 14, 14 as
    13), off the ground truth. Now the frames after a failed read are numbered by their times: each frame delivered
    is numbered as shown, the frames FFmpeg itself cannot show are the ones passed over (named, each once, and no
    others), and the replay ends saying it ended early. At 15 and 12 fps the times from the failed read, in
    milliseconds, come to a whole number of frames only to within a rounding error (1.9999999999999996 for 2):
    rounded, not floored (those two cuts lose frames right where it matters)."""
    video = encode_numbered(
        ffmpeg, tmp_path / "whole.mp4", [*H264, *YUV, "-movflags", "+faststart"], FRAMES, fps
    )
    cut = _cut_at(video, share, tmp_path / "cut.mp4")
    shown = [round(s.pts_s * fps) for s in shown_frames(ffmpeg, cut)]
    with caplog.at_level(logging.WARNING, logger="daemon"):
        frames, count = read_all(cut)
    named = re.findall(rf"{re.escape(str(cut))}: (frames? [\d-]+) could not be decoded", caplog.text)
    with caplog.at_level(logging.WARNING, logger="daemon"):
        strided, _ = read_all(cut, stride=2)
    assert count == FRAMES and 2 <= len(frames) < FRAMES
    assert numbers(frames) == [f.index for f in frames] == shown
    assert [f.timestamp for f in frames] == pytest.approx([i / fps for i in shown])
    assert numbers(strided) == [f.index for f in strided] and len(strided) >= len(frames) // 2
    assert named == _named(sorted(set(range(shown[-1])) - set(shown)))
    assert f"source {cut} ended after {shown[-1] + 1} of {FRAMES} frames" in caplog.text


def _named(lost: list[int]) -> list[str]:
    """How the warnings name the frames ``lost`` (ascending): each run of them once, 'frame N' or 'frames N-M'."""
    runs: list[list[int]] = []
    for n in lost:
        if runs and runs[-1][-1] == n - 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return [f"frame {r[0]}" if len(r) == 1 else f"frames {r[0]}-{r[-1]}" for r in runs]


def test_a_scenario_built_from_a_b_frame_recording_shows_each_camera_its_source_frames(
    ffmpeg: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """scenario build reads its source video with OpenCV itself: an H.264 MKV with B-frames whose timestamps start at
    5 s (a segment of a longer recording) was announced as 70 frames (OpenCV: its duration from time 0 times its
    rate) and the build warned 'decodes to 20 frames, its container announces 70: cut short or damaged?' of a
    whole file. The count is taken as the run's is (``sources.counted_frames``): no warning; and each camera's
    frame k shows source frame k * step (every frame once, in display order)."""
    video = encode_numbered(
        ffmpeg, tmp_path / "seg.mkv", [*H264, *YUV, "-output_ts_offset", "5"], FRAMES, FPS
    )
    scenario = ScenarioConfig(
        name="b",
        views=(
            ViewConfig(name="whole", region=(0, 0, 320, 240)),
            ViewConfig(name="half", region=(0, 0, 320, 240), step=2),
        ),
    )
    with caplog.at_level(logging.WARNING, logger="daemon"):
        files = build(video, None, scenario, tmp_path / "out")
    assert not caplog.text, caplog.text
    for name, step in (("whole", 1), ("half", 2)):
        with open_source(SourceConfig(uri=str(files.videos[name]))) as src:
            assert numbers(list(src)) == list(range(0, FRAMES, step))


def _run_config(tmp_path: Path, video: Path) -> Path:
    """A one-camera run of ``video`` on true boxes (the red square of every frame), no embedder."""
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(f"{n + 1},1,{n * 7 % 280},80,40,80,1,1,1.0\n" for n in range(FRAMES)))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"cameras:\n  door:\n    source: {{uri: {video}}}\n    detector: {{type: ground-truth, path: {gt}}}\n"
        f"    embedder: {{type: none}}\n    output: {{dir: {tmp_path / 'runs'}, progress: false}}\n"
    )
    return cfg


def test_reid_daemon_run_replays_a_b_frame_recording_frame_for_frame(ffmpeg: str, tmp_path: Path) -> None:
    """`reid-daemon run` on an H.264 mp4 with B-frames starting at 5 s: its annotated video's frame k shows source
    frame k, its MOT rows are numbered 1-20, its events are timed from the first frame (frame 10 at 1.0 s) and its
    summary counts 20 frames, none skipped. Test-only: it held."""
    video = encode_numbered(
        ffmpeg, tmp_path / "rec.mp4", [*H264, *YUV, "-output_ts_offset", "5"], FRAMES, FPS
    )
    assert main(["run", "--config", str(_run_config(tmp_path, video)), "--video"]) == 0
    out = tmp_path / "runs" / "door"
    with open_source(SourceConfig(uri=str(out / "annotated.mp4"))) as src:
        assert numbers(list(src)) == list(range(FRAMES))
    rows = (out / "door.txt").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, FRAMES + 1))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert {e["frame"]: e["ts"] for e in events if "frame" in e}[10] == pytest.approx(1.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == FRAMES and summary["source_stats"]["frames_skipped"] == 0


def test_reid_daemon_run_of_a_recording_cut_short_keeps_the_frames_numbered_as_shown(
    ffmpeg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`reid-daemon run` on an H.264 mp4 with B-frames cut at 30% of its bytes ends (exit 0, as a replay that ended
    early does) with its MOT rows on the frames FFmpeg shows, numbered as shown, the frames it cannot show counted
    as skipped in the summary and its line."""
    whole = encode_numbered(
        ffmpeg, tmp_path / "whole.mp4", [*H264, *YUV, "-movflags", "+faststart"], FRAMES, FPS
    )
    cut = _cut_at(whole, 0.3, tmp_path / "cut.mp4")
    shown = [round(s.pts_s * FPS) for s in shown_frames(ffmpeg, cut)]
    assert main(["run", "--config", str(_run_config(tmp_path, cut))]) == 0
    out = tmp_path / "runs" / "door"
    assert [int(r.split(",")[0]) - 1 for r in (out / "door.txt").read_text().splitlines()] == shown
    stats = json.loads((out / "summary.json").read_text())["source_stats"]
    skipped = shown[-1] + 1 - len(shown)
    assert (stats["frames_delivered"], stats["frames_skipped"]) == (len(shown), skipped)
    assert f"{skipped} undecodable frames skipped" in capsys.readouterr().out


@pytest.fixture
def b_frame_stream(ffmpeg: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An RTSP URL serving a 2 s H.264 or HEVC mp4 with B-frames at 20 fps (tests/rtsp_server.py, GStreamer under
    Debian's python3, as test_sources' server: skipped where it is missing)."""
    codec = request.param
    video = encode_numbered(
        ffmpeg, tmp_path / "cam.mp4", [*{"h264": H264, "h265": HEVC}[codec], *YUV], 40, 20.0
    )
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} not found: the RTSP test server needs Debian's python3-gst-1.0")
    cmd = [str(SYSTEM_PYTHON), str(RTSP_SERVER), str(video), "--codec", codec, "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15.0)
        line = proc.stdout.readline().strip() if ready else ""
        if line.startswith("UNAVAILABLE"):
            pytest.skip(f"GstRtspServer unusable under {SYSTEM_PYTHON}: {line[12:]}")
        assert line.startswith("READY "), line
        yield f"rtsp://127.0.0.1:{line.split()[1]}/cam"
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.parametrize("b_frame_stream", ["h264", "h265"], indirect=True)
def test_an_rtsp_stream_with_b_frames_is_delivered_in_display_order(b_frame_stream: str) -> None:
    """A camera's H.264 or HEVC stream with B-frames (sent in decoding order over RTP): every frame arrives once, in
    the order shown, timed by the wall clock as it arrives. Test-only: it held.

    The take stops at the stream's end (or a failure) only once the frames queued before it are taken: the
    source's thread reads ahead of this one, so under load it met the end of the 40-frame stream, and said so
    in stats.last_error, with frames 38 and 39 still queued, and the take ended one or two frames short."""
    cfg = SourceConfig(uri=b_frame_stream, queue_size=64, reconnect_initial_s=5.0, read_timeout_s=2.0)
    got: list[Frame] = []
    with open_source(cfg) as src:
        for frame in src:
            got.append(frame)
            if len(got) == 40:
                break
            stats = src.stats  # before `queued`: the source's thread queues each frame before it fails
            if (stats.reconnects or stats.last_error) and not src.queued:
                break
    assert numbers(got) == list(range(40)) and [f.index for f in got] == list(range(40))
    stamps = [f.timestamp for f in got]
    assert all(b >= a for a, b in itertools.pairwise(stamps)) and stamps[-1] - stamps[0] < 10.0


def test_a_damaged_frame_of_a_file_with_no_plausible_rate_is_passed_over_by_its_failed_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An MJPEG AVI whose header says 5000 fps (no plausible rate: timed at folder_fps) with frame 2's data lost:
    its frames have no times to be numbered by after the failed read, so the failed grab counts the frame lost,
    as before the numbering by times: frames 0, 1, 3, 4, 5, frame 2 named (numbered by times at no rate, frames
    3-5 would have come as 2-4, frame 2 never named)."""
    video = tmp_path / "bogus-rate.avi"
    data = _mjpeg_avi(video, 6)
    strh = data.find(b"strh") + 8  # fccType, fccHandler, flags, priority, language, initial frames
    struct.pack_into("<II", data, strh + 20, 1, 5000)  # dwScale 1, dwRate 5000: 5000 fps
    video.write_bytes(_blank_frames(data, {2}))
    with caplog.at_level(logging.WARNING, logger="daemon"):
        frames, _ = read_all(video, folder_fps=8)
    assert [f.index for f in frames] == [round(float(f.image.mean()) / 40) for f in frames] == [0, 1, 3, 4, 5]
    assert f"{video}: frame 2 could not be decoded" in caplog.text
