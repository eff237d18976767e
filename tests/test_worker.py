"""The camera worker end to end on a synthetic video (no shared data needed), and on the real clip."""

import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from _video import make_video

from daemon.camera_lock import CAMERA_LOCK
from daemon.config import (
    CameraConfig,
    EmbedderConfig,
    GroundTruthDetectorConfig,
    OutputConfig,
    Settings,
    SourceConfig,
    TrackerConfig,
    single_camera_settings,
)
from daemon.erase import PendingForgets
from daemon.errors import ConfigError, DaemonError, SourceError
from daemon.evaluate import evaluate
from daemon.identity import FrameIdentities, IdentityAssignment
from daemon.outputs import EmbeddingFile, earlier_folders, mp4_problem, video_segments
from daemon.pipeline import FrameResult
from daemon.runner import StatusFile
from daemon.track import TrackerUpdate
from daemon.types import Detections, Frame, Track
from daemon.worker import CameraOutputs, CameraWorker, open_outputs


def _settings(tmp_path: Path, video: Path, gt: Path, embedder: EmbedderConfig, **det: float) -> object:
    cam = CameraConfig(
        source=SourceConfig(uri=str(video)),
        detector=GroundTruthDetectorConfig(path=gt, **det),
        embedder=embedder,
        tracker=TrackerConfig(),
        output=OutputConfig(dir=tmp_path / "runs", video=True, progress=False),
    )
    return single_camera_settings(cam, name="synth")


def test_replay_writes_every_output_and_tracks_perfectly(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=40, size=(320, 240), people=3)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    settings = _settings(tmp_path, clip.path, gt, EmbedderConfig(type="none"))
    summary = CameraWorker(settings, "synth").run()  # type: ignore[arg-type]

    assert summary.frames == 40
    assert summary.tracks == 3
    out = tmp_path / "runs" / "synth"
    metrics = evaluate(gt, out / "synth.txt")
    assert pytest.approx(100.0) == metrics.IDF1
    assert pytest.approx(100.0) == metrics.MOTA

    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    started = [e for e in events if e["event"] == "track.started"]
    ended = [e for e in events if e["event"] == "track.ended"]
    assert len(started) == 3 and len(ended) == 3
    assert {e["last_frame"] for e in ended} == {39}

    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
    cap.release()
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 40 and set(s["stage_ms_per_frame"]) >= {"decode", "detect", "embed", "track"}
    assert s["source"] == str(clip.path)  # was the camera's name ("synth"), not what it read


def test_an_annotated_video_of_a_strided_source_plays_at_the_source_s_pace(tmp_path: Path) -> None:
    """With source.stride 3 the annotated video kept the source's 10 fps for every 3rd frame: it played 3x too
    fast, and the fleet mosaic (which places annotated frame i at i / fps) showed the camera out of step."""
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(320, 240), fps=10.0, people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cam = CameraConfig(
        source=SourceConfig(uri=str(clip.path), stride=3),
        detector=GroundTruthDetectorConfig(path=gt),
        embedder=EmbedderConfig(type="none"),
        output=OutputConfig(dir=tmp_path / "runs", video=True, progress=False),
    )
    summary = CameraWorker(single_camera_settings(cam, name="synth"), "synth").run()
    assert summary.frames == 10
    cap = cv2.VideoCapture(str(tmp_path / "runs" / "synth" / "annotated.mp4"))
    frames, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert frames == 10 and frames / fps == pytest.approx(3.0, abs=0.05)  # the clip's 3 seconds


def test_a_camera_never_writes_over_its_own_source(tmp_path: Path) -> None:
    """Given back its own annotated video as its source (runs/synth/annotated.mp4, output.dir runs), the worker
    opened the file for writing while reading it: the video was cut, and the run saw 17 of its 50 frames."""
    clip = make_video(tmp_path / "runs" / "synth" / "annotated.mp4", frames=10, size=(320, 240), people=1)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    before = clip.path.read_bytes()
    for uri in (str(clip.path), f"file://{tmp_path}/runs/./synth/annotated.mp4"):
        cam = CameraConfig(
            source=SourceConfig(uri=uri),
            detector=GroundTruthDetectorConfig(path=gt),
            embedder=EmbedderConfig(type="none"),
            output=OutputConfig(dir=tmp_path / "runs", video=True, progress=False),
        )
        with pytest.raises(
            ConfigError, match=r"cameras\.synth\.source\.uri: .*annotated\.mp4 is a file the camera"
        ):
            CameraWorker(single_camera_settings(cam, name="synth"), "synth").run()
    assert clip.path.read_bytes() == before


def test_noisy_detections_with_real_embedder(tmp_path: Path, mobilenet_model: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=60, size=(320, 240), people=3)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    settings = _settings(
        tmp_path, clip.path, gt, EmbedderConfig(model=str(mobilenet_model)), jitter=0.03, drop_rate=0.1
    )
    summary = CameraWorker(settings, "synth").run()  # type: ignore[arg-type]
    assert 0 < summary.embedded_boxes < summary.detections  # the 'needed' policy skips some boxes
    out = tmp_path / "runs" / "synth"
    emb = np.load(out / "embeddings.npy")
    assert emb.shape[1] == 1280
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert evaluate(gt, out / "synth.txt").IDF1 > 85.0


def test_embeddings_and_events_are_on_disk_after_each_frame_while_the_run_goes_on(tmp_path: Path) -> None:
    """embeddings.npy said (0, D) until the run ended, so a reader (or a killed worker) lost every row."""
    cam = CameraConfig(source=SourceConfig(uri="x.mp4"), output=OutputConfig(dir=tmp_path, progress=False))
    outputs = CameraOutputs("cam", cam, 10.0, dim=3)
    image = np.zeros((48, 64, 3), np.uint8)
    dets = Detections(np.array([[1, 2, 11, 22]], np.float32), np.array([0.9], np.float32))
    for i in range(2):
        tracks = [Track("cam", 1, (1.0, 2.0, 11.0, 22.0), 0.9, 0, embedded=True)]
        vec = np.eye(3, dtype=np.float32)[i : i + 1]
        outputs.write(FrameResult(Frame(i, i / 10, image), dets, vec, TrackerUpdate(tracks, [])), "")
        rows = np.load(tmp_path / "cam" / "embeddings.npy", mmap_mode="r")
        events = [json.loads(x) for x in (tmp_path / "cam" / "events.jsonl").read_text().splitlines()]
        assert rows.shape == (i + 1, 3) and len(events) == i + 1
        np.testing.assert_array_equal(rows[events[-1]["embedding"]["row"]], vec[0])
    outputs.close()


def _write_one_frame(outputs: CameraOutputs, value: float) -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    dets = Detections(np.array([[1, 2, 11, 22]], np.float32), np.array([0.9], np.float32))
    tracks = [Track("cam", 1, (1.0, 2.0, 11.0, 22.0), 0.9, 0, embedded=True)]
    vec = np.full((1, 3), value, np.float32)
    outputs.write(FrameResult(Frame(0, 0.0, image), dets, vec, TrackerUpdate(tracks, [])), "")
    outputs.close()


def test_a_live_camera_started_again_keeps_its_earlier_runs_files(tmp_path: Path) -> None:
    """A service restarted (a crash, an upgrade, a reboot) truncated events.jsonl and the rest: the live
    stream's earlier events were lost for good. A recording run again still overwrites its own."""
    cam = CameraConfig(
        source=SourceConfig(uri="rtsp://cam/s"), output=OutputConfig(dir=tmp_path, progress=False)
    )
    _write_one_frame(open_outputs("cam", cam, 10.0, 3, fleet=False, live=True), 1.0)
    _write_one_frame(open_outputs("cam", cam, 10.0, 3, fleet=False, live=True), 2.0)
    [earlier] = [d for d in (tmp_path / "cam").iterdir() if d.is_dir()]
    assert earlier.name.startswith("earlier-")
    event = json.loads((earlier / "events.jsonl").read_text().splitlines()[0])
    rows = np.load(earlier / event["embedding"]["file"])  # the references still hold
    assert (
        rows[event["embedding"]["row"]][0] == 1.0
        and np.load(tmp_path / "cam" / "embeddings.npy")[0][0] == 2.0
    )
    _write_one_frame(open_outputs("cam", cam, 10.0, 3, fleet=False, live=False), 3.0)  # a replay: overwritten
    assert len([d for d in (tmp_path / "cam").iterdir() if d.is_dir()]) == 1
    assert np.load(tmp_path / "cam" / "embeddings.npy")[0][0] == 3.0


def test_a_live_camera_started_again_numbers_its_tracks_after_its_earlier_runs(tmp_path: Path) -> None:
    """A restarted live camera numbered its tracks after those the fleet's Valkey held state of only: tracks
    still pending when it stopped (in no Valkey), and every track of a camera outside a fleet, got their ids
    again, so the earlier run's events and this run's held one key (`cam/1`) for two people; and after a start
    that failed before its first frame (its files, holding no track, the newest), ids went from 1 again."""
    cam = CameraConfig(
        source=SourceConfig(uri="rtsp://cam/s"), output=OutputConfig(dir=tmp_path, progress=False)
    )
    first = open_outputs("cam", cam, 10.0, 3, fleet=False, live=True)
    assert first.earlier_tracks == 0
    image = np.zeros((48, 64, 3), np.uint8)
    dets = Detections(np.array([[1, 2, 11, 22]], np.float32), np.array([0.9], np.float32))
    tracks = [Track("cam", 41, (1.0, 2.0, 11.0, 22.0), 0.9, 0)]
    first.write(FrameResult(Frame(0, 0.0, image), dets, None, TrackerUpdate(tracks, [])), "")
    first.close()
    again = open_outputs("cam", cam, 10.0, 3, fleet=False, live=True)
    assert again.earlier_tracks == 41
    again.close()  # a start that failed before its first frame: its files hold no track
    assert open_outputs("cam", cam, 10.0, 3, fleet=False, live=True).earlier_tracks == 41  # not from 1 again
    replay = CameraConfig(source=SourceConfig(uri="x.mp4"), output=OutputConfig(dir=tmp_path, progress=False))
    assert open_outputs("cam", replay, 10.0, 3, fleet=False, live=False).earlier_tracks == 0  # from 1
    # the worker takes the later of the fleet's first id and the earlier run's last one + 1
    clip = make_video(tmp_path / "clip.mp4", frames=2, size=(320, 240), people=2)
    settings = _settings(
        tmp_path, clip.path, clip.write_mot_gt(tmp_path / "gt.txt"), EmbedderConfig(type="none")
    )
    worker = CameraWorker(settings, "synth")  # type: ignore[arg-type]
    worker._number_tracks(5, 41)
    boxes = Detections(
        np.array([[10, 10, 50, 110], [200, 10, 240, 110]], np.float32), np.full(2, 0.9, np.float32)
    )
    update = worker.pipeline.tracker.update(boxes, None, np.zeros((240, 320, 3), np.uint8))
    assert sorted(t.track_id for t in update.tracks) == [42, 43]


def test_a_live_start_removes_the_empty_earlier_folders_of_older_releases_and_keeps_only_recorded_runs(
    tmp_path: Path,
) -> None:
    """Releases before the empty-run check moved a failed start's empty files into an earlier-* folder (and an
    empty folder may be left by hand); a start left them, and output.keep_earlier counted them, so a recorded
    run older than them was deleted while they stayed. A start removes every earlier-* folder that is empty or
    holds only a start's camera files of no frame (its status at 0 frames); one holding a frame, a file that is
    not the camera's, or a rotation's files (no status) of a day that saw nobody, stays."""
    folder = tmp_path / "cam"
    cam = CameraConfig(
        source=SourceConfig(uri="rtsp://cam/s"),
        output=OutputConfig(dir=tmp_path, progress=False, keep_earlier=4),
    )
    _write_one_frame(open_outputs("cam", cam, 10.0, 3, fleet=False, live=True), 1.0)
    recorded = folder / "earlier-20250101T000000Z"
    recorded.mkdir()
    for f in folder.iterdir():
        if f.is_file():
            f.rename(recorded / f.name)
    (folder / "earlier-20250102T000000Z").mkdir()  # empty
    for stamp, extra in (("20250103T000000Z", None), ("20250104T000000Z", "notes.txt")):
        failed = folder / f"earlier-{stamp}"  # what an older release's failed start left
        failed.mkdir()
        EmbeddingFile(failed / "embeddings.npy", 3).close()
        for log in ("cam.txt", "events.jsonl"):
            (failed / log).write_text("")
        (failed / "status.json").write_text('{"v": 1, "state": "failed", "frames": 0}')
        if extra:
            (failed / extra).write_text("the user's")
    rotated = folder / "earlier-20250105T000000Z"  # a rotation's files (no status) of a day that saw nobody
    rotated.mkdir()
    EmbeddingFile(rotated / "embeddings.npy", 3).close()
    for log in ("cam.txt", "events.jsonl"):
        (rotated / log).write_text("")
    _write_one_frame(open_outputs("cam", cam, 10.0, 3, fleet=False, live=True), 2.0)
    _write_one_frame(open_outputs("cam", cam, 10.0, 3, fleet=False, live=True), 3.0)
    names = [d.name for d in earlier_folders(folder)]
    assert names[:3] == ["earlier-20250101T000000Z", "earlier-20250104T000000Z", rotated.name]
    assert len(names) == 4
    assert np.load(recorded / "embeddings.npy")[0][0] == 1.0  # the recorded run, kept
    assert np.load(folder / names[3] / "embeddings.npy")[0][0] == 2.0
    assert (folder / names[1] / "notes.txt").read_text() == "the user's"


def test_a_recording_run_again_leaves_none_of_the_earlier_runs_files_it_does_not_write(
    tmp_path: Path,
) -> None:
    """A replay run again with the annotated video off (--no-video) or the MOT file off left the earlier run's
    annotated.mp4 / cam.txt beside this run's summary.json, to be taken for this run's (eval, --report-only)."""
    clip = make_video(tmp_path / "clip.mp4", frames=12, size=(160, 120), people=1)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")

    def run(source: Path = clip.path, **output: object) -> Path:
        cam = CameraConfig(
            source=SourceConfig(uri=str(source)),
            detector=GroundTruthDetectorConfig(path=gt),
            embedder=EmbedderConfig(type="none"),
            output=OutputConfig.model_validate({"dir": tmp_path / "runs", "progress": False, **output}),
        )
        CameraWorker(single_camera_settings(cam, name="cam"), "cam").run()
        return tmp_path / "runs" / "cam"

    out = run(video=True, video_segment_s=1)  # 12 frames at 10 fps: two segments
    assert {"annotated.mp4", "annotated-001.mp4", "cam.txt", "events.jsonl", "summary.json"} <= {
        p.name for p in out.iterdir()
    }
    with pytest.raises(ConfigError, match=r"annotated-001\.mp4 is a file the camera writes"):
        run(source=out / "annotated-001.mp4", video=True)  # a later segment is the camera's too
    out = run(video=False, mot=False, events=False)
    assert sorted(p.name for p in out.iterdir()) == [CAMERA_LOCK, "summary.json"]


def test_a_later_segment_left_without_the_first_is_still_the_camera_s(tmp_path: Path) -> None:
    """Regression: the camera's files listed the annotated video's later segments as those after the first
    (annotated.mp4), so where that was gone (an operator removing the oldest hour of video to free the disk)
    annotated-001.mp4 was no file of the camera's: a recording run again left it beside its own files (taken
    for this run's second segment), a live camera's restart did not move it aside, and a run could replay it as
    its source and write over it."""
    clip = make_video(tmp_path / "clip.mp4", frames=24, size=(160, 120), people=1)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")

    def camera(source: Path = clip.path, **output: object) -> CameraConfig:
        return CameraConfig(
            source=SourceConfig(uri=str(source)),
            detector=GroundTruthDetectorConfig(path=gt),
            embedder=EmbedderConfig(type="none"),
            output=OutputConfig.model_validate({"dir": tmp_path / "runs", "progress": False, **output}),
        )

    def run(**output: object) -> Path:
        CameraWorker(single_camera_settings(camera(**output), name="cam"), "cam").run()
        return tmp_path / "runs" / "cam"

    out = run(video=True, video_segment_s=1)  # 24 frames at 10 fps: three segments
    (out / "annotated.mp4").unlink()
    assert [p.name for p in video_segments(out)] == ["annotated-001.mp4", "annotated-002.mp4"]
    with pytest.raises(ConfigError, match=r"annotated-001\.mp4 is a file the camera writes"):
        CameraWorker(single_camera_settings(camera(source=out / "annotated-001.mp4"), name="cam"), "cam")
    out = run(video=False, mot=False, events=False)
    assert sorted(p.name for p in out.iterdir()) == [CAMERA_LOCK, "summary.json"]


def _frame_counts(videos: list[Path]) -> list[int]:
    """Each video's frames, as a player reads them (not its header's count)."""
    counts = []
    for video in videos:
        assert mp4_problem(video) is None, video
        cap = cv2.VideoCapture(str(video))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        counts.append(n)
    return counts


def test_a_live_camera_s_annotated_video_is_cut_into_closed_playable_segments(tmp_path: Path) -> None:
    """OpenCV's mp4 writer holds every frame's index entry in memory until it closes the file (~74 bytes a
    frame), and the annotated video was one file per output.live_rotate_s (a day: ~160 MB a camera at 25 FPS),
    unplayable until it closed. It is cut into files of output.video_segment_s, each closed as the next begins;
    a rotation takes them all into its earlier-* folder, and the fleet's readers take them in order."""
    from daemon.cli import _camera_written
    from daemon.fleet_report import run_videos

    output = {"dir": tmp_path, "progress": False, "video": True, "video_segment_s": 1, "live_rotate_s": 3}
    cam = CameraConfig(source=SourceConfig(uri="rtsp://cam/s"), output=OutputConfig.model_validate(output))
    outputs = open_outputs("cam", cam, 10.0, 3, fleet=False, live=True)
    folder = tmp_path / "cam"
    image = np.zeros((48, 64, 3), np.uint8)
    for i in range(35):  # 10 fps: a segment every 10 frames; a rotation at 3 s (frame 30, written before it)
        update = TrackerUpdate([Track("cam", 1, (1.0, 2.0, 11.0, 22.0), 0.9, -1)], [])
        outputs.write(FrameResult(Frame(i, 100 + i / 10, image), Detections.empty(), None, update), "")
        if i == 24:  # the run goes on: the first two segments are closed and play
            assert _frame_counts(video_segments(folder)[:2]) == [10, 10]
    outputs.close()
    [earlier] = earlier_folders(folder)
    assert [p.name for p in video_segments(earlier)] == [
        "annotated.mp4",
        "annotated-001.mp4",
        "annotated-002.mp4",
        "annotated-003.mp4",
    ]
    assert _frame_counts(video_segments(earlier)) == [10, 10, 10, 1]
    assert _frame_counts(video_segments(folder)) == [4]
    assert [v for v, _ in run_videos(folder)] == [*video_segments(earlier), *video_segments(folder)]
    assert _camera_written("cam", earlier) == "annotated.mp4 and 3 more segments"  # fleet's last lines


# A live camera's annotated video written for 100,000 frames (over an hour at 25 FPS) with segments of 40 s
# (1,000 frames): the process's resident memory at frame 20,000 and at the end.
LONG_LIVE_RUN = """
import sys
from pathlib import Path
import numpy as np
from daemon.config import CameraConfig, OutputConfig, SourceConfig
from daemon.pipeline import FrameResult
from daemon.track import TrackerUpdate
from daemon.types import Detections, Frame
from daemon.worker import open_outputs

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

output = OutputConfig(dir=Path(sys.argv[1]), progress=False, video=True, mot=False, events=False,
                      video_segment_s=40)
cam = CameraConfig(source=SourceConfig(uri="rtsp://cam/s"), output=output)
outputs = open_outputs("cam", cam, 25.0, None, fleet=False, live=True)
image = np.zeros((16, 16, 3), np.uint8)
update = TrackerUpdate([], [])
for i in range(100_000):
    outputs.write(FrameResult(Frame(i, i / 25, image), Detections.empty(), None, update), "")
    if i == 20_000:
        early = rss()
print(rss() - early)
outputs.close()
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident memory from /proc")
def test_a_long_live_run_s_annotated_video_keeps_its_memory_bounded(tmp_path: Path) -> None:
    """Written as one file, the 80,000 frames after frame 20,000 held ~6 MB more of the writer's index."""
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    out = subprocess.run(
        [sys.executable, "-c", LONG_LIVE_RUN, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    grown = int(out.stdout.split()[-1])
    assert grown < 1_500_000, f"{grown / 1e6:.1f} MB more"
    segments = video_segments(tmp_path / "cam")
    assert len(segments) == 100
    assert _frame_counts(segments[-2:]) == [1000, 1000]


def test_output_files_rotate_at_a_size_and_keep_a_bounded_number(tmp_path: Path) -> None:
    """A camera run as a service wrote events.jsonl (and the rest) for as long as it ran, without a bound:
    the disk filled. With output.rotate_mb the files start afresh at that size, the full ones move to an
    earlier-* folder, and output.keep_earlier bounds how many of those stay."""
    clip = make_video(tmp_path / "clip.mp4", frames=120, size=(320, 240), people=3)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")

    def run(**output: object) -> tuple[Path, dict[str, int]]:
        cam = CameraConfig(
            source=SourceConfig(uri=str(clip.path)),
            detector=GroundTruthDetectorConfig(path=gt),
            embedder=EmbedderConfig(type="none"),
            output=OutputConfig.model_validate({"dir": tmp_path / "runs", "progress": False, **output}),
        )
        summary = CameraWorker(single_camera_settings(cam, name="synth"), "synth").run()
        return tmp_path / "runs" / "synth", summary.events

    out, counts = run(rotate_mb=0.004)  # ~4 kB: the 120 frames' events and MOT rows hold ~20 kB
    segments = [*earlier_folders(out), out]
    assert len(segments) >= 3
    events = [json.loads(x) for d in segments for x in (d / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("track.started") == kinds.count("track.ended") == 3  # no second start after a rotation
    assert {k: kinds.count(k) for k in counts} == counts  # summary.json counts the whole run
    frames = [
        int(line.split(",")[0]) for d in segments for line in (d / "synth.txt").read_text().splitlines()
    ]
    assert frames == sorted(frames) and set(frames) == set(range(1, 121))  # every frame once, in order
    assert all((d / "synth.txt").stat().st_size < 0.004 * 2**20 + 3_000 for d in segments)

    for d in segments[:-1]:
        shutil.rmtree(d)
    out, _ = run(rotate_mb=0.004, keep_earlier=1)
    assert len([d for d in out.iterdir() if d.name.startswith("earlier-")]) == 1


def test_a_run_that_ends_as_its_files_reach_rotate_mb_leaves_no_empty_files(tmp_path: Path) -> None:
    """The files were rotated right after the frame that took them past output.rotate_mb, so a run ending on
    that frame moved all it wrote to an earlier-* folder and left new, empty ones in the camera's folder (an
    empty synth.txt beside the summary). They rotate as the next frame comes: the last files keep the last
    frame, and every folder holds frames."""
    clip = make_video(tmp_path / "clip.mp4", frames=120, size=(320, 240), people=3)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cam = CameraConfig(
        source=SourceConfig(uri=str(clip.path), max_frames=100),  # a look at the size every 25 frames
        detector=GroundTruthDetectorConfig(path=gt),
        embedder=EmbedderConfig(type="none"),
        output=OutputConfig(dir=tmp_path / "runs", progress=False, rotate_mb=0.002),  # passed at each look
    )
    summary = CameraWorker(single_camera_settings(cam, name="synth"), "synth").run()
    out = tmp_path / "runs" / "synth"
    rows = [(d / "synth.txt").read_text().splitlines() for d in [*earlier_folders(out), out]]
    assert all(rows) and int(rows[-1][-1].split(",")[0]) == 100
    assert summary.last_frame == 99 and len(rows) == 4  # rotated after frames 25, 50 and 75
    assert [int(r.split(",")[0]) for d in rows for r in d] == sorted(
        int(r.split(",")[0]) for d in rows for r in d
    )
    assert sum(len(d) for d in rows) == 300  # three people on each of the 100 frames, each row once


def test_a_live_camera_s_files_rotate_by_default_and_a_replay_s_do_not(tmp_path: Path) -> None:
    """Only output.rotate_mb, off by default, ever closed a camera's files, and until it does the annotated video's
    index (~70 bytes a frame) and the identity table grow in memory: a live camera left at the defaults grew for
    as long as it ran (months). A live source now starts new files every output.live_rotate_s (a day) of its
    frames' times; a replay's files are not rotated by it."""

    def run(live: bool) -> list[Path]:
        folder = tmp_path / ("live" if live else "replay")
        cam = CameraConfig(
            source=SourceConfig(uri="rtsp://cam/s" if live else "x.mp4"),
            output=OutputConfig(dir=folder, progress=False, video=True),  # the defaults otherwise
        )
        outputs = CameraOutputs("cam", cam, 10.0, dim=3, fleet=True, live=live)
        image = np.zeros((48, 64, 3), np.uint8)
        dets = Detections(np.array([[1, 2, 11, 22]], np.float32), np.array([0.9], np.float32))
        tracks = [Track("cam", 1, (1.0, 2.0, 11.0, 22.0), 0.9, 0)]
        for i, ts in enumerate(1.7e9 + np.arange(0.0, 108_000.0, 7200.0)):  # every 2 hours for 30 hours
            outputs.write(FrameResult(Frame(i, float(ts), image), dets, None, TrackerUpdate(tracks, [])), "")
        outputs.close()
        return [*earlier_folders(folder / "cam"), folder / "cam"]

    def frames(folder: Path) -> int:
        cap = cv2.VideoCapture(str(folder / "annotated.mp4"))
        try:
            return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()

    live = run(live=True)
    assert len(live) == 2  # the first day's files (frames at 0 .. 24 h), then the rest
    assert [frames(d) for d in live] == [13, 2]
    assert all((d / "events.jsonl").is_file() and (d / "identities.json").is_file() for d in live)
    replay = run(live=False)
    assert len(replay) == 1 and frames(replay[0]) == 15


def test_the_schema_names_the_files_a_worker_writes(tmp_path: Path) -> None:
    """`config schema` said embeddings.npz; the worker writes embeddings.npy."""
    cam = CameraConfig(source=SourceConfig(uri="x.mp4"), output=OutputConfig(dir=tmp_path, progress=False))
    outputs = CameraOutputs("cam", cam, 10.0, dim=3)
    outputs.close()
    for key in ("mot", "events", "embeddings", "summary"):
        name = Path(outputs.paths[key]).name.replace("cam.txt", "<camera>.txt")
        assert name in (OutputConfig.model_fields[key].description or ""), key


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to stand for a full disk")
def test_a_full_disk_is_one_error_and_the_other_files_are_still_closed(tmp_path: Path) -> None:
    """A write failing mid-run (ENOSPC) was an OSError traceback, and the failing close stopped the others
    (the annotated video was left without its index, unreadable)."""
    cam = CameraConfig(
        source=SourceConfig(uri="x.mp4"), output=OutputConfig(dir=tmp_path, progress=False, video=True)
    )
    outputs = CameraOutputs("cam", cam, 10.0, dim=3)
    image = np.zeros((48, 64, 3), np.uint8)
    dets = Detections(np.array([[1, 2, 11, 22]], np.float32), np.array([0.9], np.float32))
    tracks = [Track("cam", 1, (1.0, 2.0, 11.0, 22.0), 0.9, 0, embedded=True)]

    def result(i: int) -> FrameResult:
        return FrameResult(
            Frame(i, i / 10, image), dets, np.eye(3, dtype=np.float32)[:1], TrackerUpdate(tracks, [])
        )

    for i in range(3):
        outputs.write(result(i), "")
    assert outputs.mot is not None and outputs.events is not None
    outputs.mot._fh.close()
    outputs.mot._fh = open("/dev/full", "w")  # noqa: SIM115 - every flush fails with ENOSPC
    with pytest.raises(DaemonError, match=f"cannot write the outputs in {tmp_path / 'cam'}: No space left"):
        outputs.write(result(3), "")
    with pytest.raises(DaemonError, match="No space left"):
        outputs.close()
    assert outputs.events._fh.closed
    cap = cv2.VideoCapture(str(tmp_path / "cam" / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3  # finalised: the frames written before the failure
    cap.release()


def test_a_status_file_that_cannot_be_written_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """status.json is advisory; on a full disk its OSError came out of the worker's `finally` as a traceback that
    replaced the error naming the problem."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    worker = SimpleNamespace(name="cam", folder=blocker / "cam", fleet=None)
    status = StatusFile()
    status.started(worker, None)  # type: ignore[arg-type]
    status.stopped(worker, None)  # type: ignore[arg-type]
    assert caplog.text.count("cam: cannot write") == 1


def test_a_run_that_failed_before_its_source_opened_says_why_only_in_a_folder_that_is_there(
    tmp_path: Path,
) -> None:
    """A camera alone (`reid-daemon run`) that fails at start leaves no folder behind; in its folder (made by a
    fleet, or an earlier run's) status.json says it failed and why, on one line."""
    cam = CameraConfig(source=SourceConfig(uri="x.mp4"), output=OutputConfig(dir=tmp_path, progress=False))
    settings = single_camera_settings(cam, name="cam")
    StatusFile().failed(settings, "cam", SourceError("video file not found:\n x.mp4"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "cam").mkdir()
    StatusFile().failed(settings, "cam", ValueError("a bug"))
    doc = json.loads((tmp_path / "cam" / "status.json").read_text())
    assert doc["state"] == "failed" and doc["error"] == "ValueError: a bug" and doc["frames"] == 0
    StatusFile().failed(settings, "cam", SourceError("video file not found:\n x.mp4"))
    assert (
        json.loads((tmp_path / "cam" / "status.json").read_text())["error"] == "video file not found: x.mp4"
    )


def _failing_start(tmp_path: Path, uri: str) -> tuple[int, Path]:
    """`reid-daemon run` of camera door on ``uri`` (a source that cannot be opened), no models: its exit code and
    the camera's folder."""
    import yaml

    from daemon.cli import main

    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,40,1,-1,-1,-1\n")
    cam = {
        "source": {"uri": uri, "open_timeout_s": 1},
        "detector": {"type": "ground-truth", "path": str(gt)},
        "embedder": {"type": "none"},
        "output": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    path = tmp_path / "door.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"door": cam}}))
    return main(["-q", "run", "--config", str(path), "--no-progress"]), tmp_path / "runs" / "door"


def _recorded_run(folder: Path, live: bool) -> dict[str, object]:
    """Files of an earlier run of camera door that recorded a frame, and the status.json it ended with."""
    uri = "rtsp://cam/s" if live else "x.mp4"
    cam = CameraConfig(source=SourceConfig(uri=uri), output=OutputConfig(dir=folder.parent, progress=False))
    _write_one_frame(open_outputs("door", cam, 10.0, 3, fleet=False, live=live), 1.0)
    status = {
        "v": 1,
        "camera": "door",
        "state": "done",
        "frames": 1,
        "fps": 9.5,
        "tracks": 0,
        "identities": None,
    }
    (folder / "status.json").write_text(json.dumps(status))
    return status


def test_a_start_that_fails_before_its_outputs_open_keeps_the_earlier_run_s_status(tmp_path: Path) -> None:
    """A live camera's start that failed before its outputs opened (its stream down) wrote status.json 'failed'
    over the one the earlier run ended with, whose files stayed beside it: that run's final status was lost, and
    its files read as a failed run's. The earlier run's files go into their earlier-* folder with their status,
    as the start would have put them, and the failure is written beside them; a start failing again leaves no
    empty folder. A recording's earlier run (replaced by its next run) keeps its status, the error in the log."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"rtsp://127.0.0.1:{s.getsockname()[1]}/cam"
    folder = tmp_path / "runs" / "door"
    done = _recorded_run(folder, live=True)
    for _ in range(2):
        code, _ = _failing_start(tmp_path, url)
        assert code == 1
        [earlier] = earlier_folders(folder)  # the recorded run, once
        assert json.loads((earlier / "status.json").read_text()) == done
        assert (earlier / "events.jsonl").read_text().count("track.started") == 1
        status = json.loads((folder / "status.json").read_text())
        assert status["state"] == "failed" and "127.0.0.1" in status["error"] and status["frames"] == 0
        assert sorted(f.name for f in folder.iterdir() if f.is_file()) == [CAMERA_LOCK, "status.json"]
    shutil.rmtree(folder)
    done = _recorded_run(folder, live=False)
    events = (folder / "events.jsonl").read_text()
    assert _failing_start(tmp_path, str(tmp_path / "missing.mp4"))[0] == 1
    assert json.loads((folder / "status.json").read_text()) == done and earlier_folders(folder) == []
    assert (folder / "events.jsonl").read_text() == events


def _waiting_door(tmp_path: Path) -> list[str]:
    """The command of a worker of camera door (under tmp_path/runs) whose RTSP stream is on a port nobody
    listens on: it waits for it (startup_wait_s 120) until stopped."""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"rtsp://127.0.0.1:{s.getsockname()[1]}/cam"
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,40,1,-1,-1,-1\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "cameras:\n  door:\n"
        f"    source: {{uri: '{url}', open_timeout_s: 1, reconnect_initial_s: 0.2, reconnect_max_s: 0.5, "
        "startup_wait_s: 120}\n"
        f"    detector: {{type: ground-truth, path: {gt}}}\n    embedder: {{type: none}}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, progress: false}}\n"
    )
    return [sys.executable, "-m", "daemon", "run", "--config", str(cfg), "--no-progress"]


def test_a_second_worker_of_a_camera_is_refused_naming_the_one_writing_its_folder(tmp_path: Path) -> None:
    """Nothing stopped two workers of one camera on one host (a misspelt unit, a `run` beside the service) from
    writing one folder: the second put the first one's files aside and wrote over them. A worker holds its
    folder's lock from before it writes there; a second one exits 2 (a configuration error: systemd does not
    restart it), naming the folder and the first one's pid, and touches nothing: the running worker's files
    stay, no status 'failed' is written over its status."""
    import signal
    import socket
    import subprocess

    folder = tmp_path / "runs" / "door"
    _recorded_run(folder, live=True)
    running = {"v": 1, "camera": "door", "state": "running", "frames": 1, "host": socket.gethostname()}
    (folder / "status.json").write_text(json.dumps(running))
    cmd = _waiting_door(tmp_path)  # the first worker waits for its stream
    root = Path(__file__).resolve().parents[1]
    first = subprocess.Popen(cmd, cwd=root, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stderr is not None
        seen: list[str] = []
        deadline = time.monotonic() + 60  # a loaded machine takes a while to import the worker
        while time.monotonic() < deadline and not any("trying again in" in x for x in seen):
            seen.append(first.stderr.readline())  # waiting for its stream: its lock is held by then
            assert seen[-1] or first.poll() is None, "".join(seen)
        moved = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}  # the first one's start
        second = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"its folder {folder} is being written by another worker, pid {first.pid} (" in second.stderr
        assert "reid-daemon run --camera door" in second.stderr and CAMERA_LOCK in second.stderr
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == moved
        assert first.poll() is None  # the first runs on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)
    assert first.returncode == 0


def test_a_text_file_as_the_source_is_refused_before_the_models_load(tmp_path: Path) -> None:
    """`run --source gt.txt` loaded both models (seconds) before it said the file was no video."""
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,40,1,-1,-1,-1\n")
    cam = CameraConfig(
        source=SourceConfig(uri=str(gt)), detector={"type": "ssdlite", "model": str(tmp_path / "absent.onnx")}
    )
    with pytest.raises(SourceError, match="is a text file, not a video"):  # not the missing model's error
        CameraWorker(single_camera_settings(cam, name="cam"), "cam")


def test_status_json_names_its_version_and_the_worker_process(tmp_path: Path) -> None:
    """status.json said 'running' with nothing to tell a live worker from one killed with SIGKILL (forget
    erases a stopped camera's files, never a running one's), and carried no version."""
    import os
    import socket

    status = StatusFile()
    worker = SimpleNamespace(name="cam", folder=tmp_path / "cam", fleet=None)
    status.started(worker, None)  # type: ignore[arg-type]
    doc = json.loads((tmp_path / "cam" / "status.json").read_text())
    assert doc["v"] == 1 and doc["state"] == "running"
    assert doc["pid"] == os.getpid() and doc["host"] == socket.gethostname()


def test_a_worker_stopped_while_its_camera_is_not_up_yet_ends_cleanly(tmp_path: Path) -> None:
    """`run` with source.startup_wait_s on a stream that is down: it waits (logging each try) instead of
    failing, and SIGTERM meanwhile ends it with exit 0 rather than an error systemd would restart."""
    import signal
    import subprocess
    import time

    cmd = _waiting_door(tmp_path)
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 60  # a loaded machine takes a while to import the worker
    while time.monotonic() < deadline and not any("trying again in" in x for x in seen):
        seen.append(proc.stderr.readline())  # waiting: it logs each try, so this does not block for long
        if not seen[-1] and proc.poll() is not None:
            break  # it ended: the assertion below says so
    assert proc.poll() is None  # still waiting for the camera, not failed
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    err = "".join(seen) + err
    assert proc.returncode == 0, err
    assert "trying again in" in err and "source.startup_wait_s" in err
    assert "stopped before the source could be opened" in err


class _ForgetWhileStopping:
    """Stops the worker on frame ``at``, and then the fleet forgets the first global id it gave: as a forget
    that reaches a worker being stopped (systemctl stop) after its last frame."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.gid: int | None = None

    def waiting(self, worker: CameraWorker, reason: str) -> None:
        pass

    def started(self, worker: CameraWorker, source: object) -> None:
        pass

    def frame(self, worker: CameraWorker, result: FrameResult, loop_s: float) -> None:
        if result.frame.index == self.at and worker.fleet is not None:
            assert 1 in worker.fleet.resolver.store  # a fresh fleet's first id
            self.gid = 1
            worker.stop()
            worker.fleet.forget(self.gid)

    def stopped(self, worker: CameraWorker, summary: object) -> None:
        pass


def _fleet_of_one(tmp_path: Path) -> Settings:
    """A one-camera fleet (embedded Valkey, unsigned) on a synthetic clip of two people, true boxes and looks."""
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(320, 240), people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cam = CameraConfig(
        source=SourceConfig(uri=str(clip.path)),
        detector=GroundTruthDetectorConfig(path=gt),
        embedder=EmbedderConfig(type="ground-truth", truth={"path": gt}),  # type: ignore[arg-type]
        tracker=TrackerConfig(),
        output=OutputConfig(dir=tmp_path / "runs", progress=False),
    )
    settings = single_camera_settings(
        cam,
        name="synth",
        fleet={"enabled": True},
        bridge={"allow_unsigned": True},
        identity={"min_observations": 2, "new_min_observations": 2},
    )
    return settings


def test_a_forget_that_reaches_a_stopping_worker_is_erased_from_its_files(tmp_path: Path) -> None:
    """The worker erased forgotten ids from its files only on its next frame: a forget received while it was
    stopping (after its last frame, or while its bridge closed) was never applied, and its identities.json,
    written on the way out, still held the person, as did events.jsonl and the global MOT file."""
    settings = _fleet_of_one(tmp_path)
    observer = _ForgetWhileStopping(at=20)
    CameraWorker(settings, "synth", observers=[observer]).run()
    assert observer.gid is not None
    out = tmp_path / "runs" / "synth"
    table = json.loads((out / "identities.json").read_text())["identities"]
    assert table and str(observer.gid) not in table
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e.get("global_id") == observer.gid]
    logged = [json.loads(x) for x in (out / "identities.jsonl").read_text().splitlines()]
    assert [x["global_id"] for x in logged if x["event"] == "forgotten"] == [observer.gid]
    assert f",{observer.gid}," not in (out / "synth.global.txt").read_text()


def test_a_forget_arriving_while_a_frame_is_resolved_leaves_nothing_of_the_id(tmp_path: Path) -> None:
    """The worker took the forgotten ids after resolving a frame: a forget that arrived (on the bridge's thread)
    while the frame was resolved was erased from the files first, and then the frame was written with the id
    it had just been given, back in events.jsonl, identities.json and the global MOT file."""
    settings = _fleet_of_one(tmp_path)
    worker = CameraWorker(settings, "synth")  # type: ignore[arg-type]
    link = worker.fleet
    assert link is not None
    resolve = link.update
    forgot: list[int] = []

    def update_then_forget(r: FrameResult) -> object:
        who = resolve(r)
        given = [a.global_id for a in who.assignments if a.global_id is not None]
        if (
            given and not forgot and r.frame.index >= 10
        ):  # the forget arrives just after this frame was resolved
            forgot.append(given[0])
            link.forget(given[0])
        return who

    link.update = update_then_forget  # type: ignore[method-assign]
    worker.run()
    assert forgot
    out = tmp_path / "runs" / "synth"
    assert str(forgot[0]) not in json.loads((out / "identities.json").read_text())["identities"]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e.get("global_id") == forgot[0]]
    rows = [line.split(",") for line in (out / "synth.global.txt").read_text().splitlines()]
    assert rows and all(int(float(r[1])) != forgot[0] for r in rows)


def test_failed_restarts_of_a_live_camera_never_push_its_recorded_runs_out(tmp_path: Path) -> None:
    """A live camera whose Valkey refuses its password fails (exit 2) after opening its outputs, leaving empty
    files; each start moved the last one's into an earlier-* folder, which output.keep_earlier counts, so a
    service restarted again and again deleted every run that recorded something within minutes. Real restarts
    (`reid-daemon run`, a real RTSP stream and Valkey): a run that recorded no frame takes no earlier-* place."""
    import yaml
    from test_sources import RtspServer

    from daemon.cli import main
    from daemon.valkey_server import EmbeddedValkey

    clip = make_video(tmp_path / "stream.mp4", frames=150, fps=25.0, people=3)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    server = RtspServer(clip.path)
    server.start()

    def run(valkey: EmbeddedValkey, password: str) -> int:
        cam = {
            "source": {"uri": server.url, "max_frames": 10},
            "detector": {"type": "ground-truth", "path": str(gt)},
            "embedder": {"type": "ground-truth", "truth": {"path": str(gt)}},
            "output": {"dir": str(tmp_path / "runs"), "progress": False, "keep_earlier": 2},
        }
        cfg = {
            "fleet": {"enabled": True},
            "bridge": {
                "url": valkey.url,
                "password": {"value": password},
                "signing_key": {"value": "k" * 32},
            },
            "cameras": {"door": cam},
        }
        path = tmp_path / "fleet.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return main(["-q", "run", "--config", str(path), "--no-progress"])

    try:
        with EmbeddedValkey("tcp") as valkey:
            valkey.client().config_set("requirepass", "right")
            assert run(valkey, "right") == 0  # a run that records 10 frames
            assert [run(valkey, "wrong") for _ in range(3)] == [2, 2, 2]  # the password changed on the server
    finally:
        server.stop()
    folder = tmp_path / "runs" / "door"
    kept = earlier_folders(folder)  # the recorded run, and no empty one beside it
    assert len(kept) == 1, [sorted(f.name for f in d.iterdir()) for d in kept]
    earlier = kept[0]
    assert json.loads((earlier / "summary.json").read_text())["frames"] == 10
    assert (earlier / "events.jsonl").read_text().count("track.started") == 3
    assert json.loads((folder / "status.json").read_text())["state"] == "failed"  # the last start's files


class _ForgetOnAnUnreadableFile:
    """On frame ``at`` the fleet forgets its first global id while an ``earlier-*`` folder's events.jsonl cannot
    be read (``blocked``); on frame ``mend`` that file is readable again."""

    def __init__(self, blocked: Path, at: int, mend: int) -> None:
        self.blocked, self.at, self.mend = blocked, at, mend
        self.health: list[str | None] = []
        self.pending: list[list[int]] = []  # per frame, the ids forget-pending.json holds

    def waiting(self, worker: CameraWorker, reason: str) -> None:
        pass

    def started(self, worker: CameraWorker, source: object) -> None:
        pass

    def frame(self, worker: CameraWorker, result: FrameResult, loop_s: float) -> None:
        assert worker.fleet is not None
        if result.frame.index == self.at:
            assert 1 in worker.fleet.resolver.store  # a fresh fleet's first id
            worker.fleet.forget(1)
        elif result.frame.index == self.mend:
            self.blocked.unlink()
            self.blocked.write_text("")
        self.health.append(worker.unerased)
        self.pending.append(PendingForgets(self.blocked.parent.parent).read()[0])

    def stopped(self, worker: CameraWorker, summary: object) -> None:
        pass


def test_a_running_worker_that_cannot_read_a_file_during_a_forget_goes_on_and_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera file the running worker could not read (an I/O error) while it erased a forgotten id ended the
    camera's run with 'cannot write the outputs in <folder>', the person still in its files. It is logged,
    naming the file, the camera goes on, and the erase is tried again until it is done."""
    from _unreadable import unreadable_file

    import daemon.worker as worker_module

    monkeypatch.setattr(worker_module, "FORGET_RETRY_S", 0.0)  # each frame tries again
    settings = _fleet_of_one(tmp_path)
    earlier = tmp_path / "runs" / "synth" / "earlier-20260101T000000Z"
    earlier.mkdir(parents=True)
    blocked = unreadable_file(earlier / "events.jsonl")
    observer = _ForgetOnAnUnreadableFile(blocked, at=20, mend=24)
    with caplog.at_level("INFO", logger="daemon.worker"):
        summary = CameraWorker(settings, "synth", observers=[observer]).run()  # type: ignore[arg-type]

    assert summary.frames == 30
    failed = [r.getMessage() for r in caplog.records if "forget not done" in r.getMessage()]
    assert failed and f"cannot read {blocked}: Input/output error" in failed[0], failed
    assert "global ids [1] are still in its files" in failed[0]
    assert observer.health[21] is not None and f"cannot read {blocked}" in observer.health[21]
    done = [r.getMessage() for r in caplog.records if "forgot global ids [1]" in r.getMessage()]
    assert len(failed) == 4 and len(done) == 1  # frames 21 to 24 failed; 25, after the mend, erased it
    assert observer.health[20] is None and observer.health[25] is None
    assert observer.pending[20] == [] and observer.pending[21:25] == [[1]] * 4 and observer.pending[25] == []
    assert not (tmp_path / "runs" / "synth" / "forget-pending.json").exists()
    out = tmp_path / "runs" / "synth"
    assert "1" not in json.loads((out / "identities.json").read_text())["identities"]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e.get("global_id") == 1] and any(e.get("forgotten") for e in events)
    assert all(int(float(r.split(",")[1])) != 1 for r in (out / "synth.global.txt").read_text().splitlines())


MANY = range(1000, 1500)  # global ids an earlier run of the camera gave, all forgotten while it stops


def _earlier_runs_of_many(camera_dir: Path, runs: int) -> list[Path]:
    """``runs`` earlier-* folders in ``camera_dir``, each written by a camera whose tracks had the ids MANY."""
    folders = []
    for k in range(runs):
        folder = camera_dir / f"earlier-2026010{k + 1}T000000Z"
        cam = CameraConfig(
            source=SourceConfig(uri="x.mp4"), output=OutputConfig(dir=camera_dir / "_made", progress=False)
        )
        outputs = CameraOutputs("synth", cam, 10.0, dim=3, fleet=True)
        tracks = list(range(1, len(MANY) + 1))
        boxes = np.array([[1.0, 2, 9, 22]] * len(tracks), np.float32)
        for index in range(2):
            dets = Detections(boxes, np.full(len(tracks), 0.9, np.float32))
            found = [
                Track("synth", t, (1.0, 2.0, 9.0, 22.0), 0.9, i, embedded=True) for i, t in enumerate(tracks)
            ]
            assigned = tuple(
                IdentityAssignment("synth", t, g, None, 0.9, "fleet", index == 0)
                for t, g in zip(tracks, MANY, strict=True)
            )
            image = np.zeros((48, 64, 3), np.uint8)
            vecs = np.ones((len(tracks), 3), np.float32)
            result = FrameResult(Frame(index, index / 10, image), dets, vecs, TrackerUpdate(found, []))
            outputs.write(result, "", FrameIdentities(assigned, ()), fleet_time=100.0 + index)
        outputs.close()
        (camera_dir / "_made" / "synth").rename(folder)
        (camera_dir / "_made").rmdir()
        folders.append(folder)
    return folders


class _ForgetManyAtTheEnd:
    """On frame ``at`` the fleet's link is handed the ids MANY to erase later (as ids a camera file refused
    for a while pile up), and the worker is stopped: they are erased as it stops."""

    def __init__(self, at: int) -> None:
        self.at = at

    def waiting(self, worker: CameraWorker, reason: str) -> None:
        pass

    def started(self, worker: CameraWorker, source: object) -> None:
        pass

    def frame(self, worker: CameraWorker, result: FrameResult, loop_s: float) -> None:
        if result.frame.index == self.at and worker.fleet is not None:
            worker.stop()
            worker.fleet.forget_later(list(MANY))

    def stopped(self, worker: CameraWorker, summary: object) -> None:
        pass


def _reads_of_events(monkeypatch: pytest.MonkeyPatch) -> dict[Path, int]:
    """How many times the erase reads each events.jsonl from here on (``erase.text_lines``, still reading)."""
    import daemon.erase as erase_module

    reads: dict[Path, int] = {}
    read = erase_module.text_lines

    def counted(path: Path):  # type: ignore[no-untyped-def]
        reads[path] = reads.get(path, 0) + 1
        return read(path)

    monkeypatch.setattr(erase_module, "text_lines", counted)
    return reads


def test_a_stopping_worker_erases_many_pending_forgets_in_one_pass_over_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stopping worker erased the forgotten ids still pending one at a time, each a whole erase of every
    file in every earlier-* folder: 500 ids over 3 earlier runs read each events.jsonl 1,000 times (a stop far
    past the unit's TimeoutStopSec with up to MAX_PENDING_FORGETS ids), one log line per id. All are erased
    in one pass over each file, each id held there still given its ``forgotten`` line, one line logged."""
    settings = _fleet_of_one(tmp_path)
    camera_dir = tmp_path / "runs" / "synth"
    earlier = _earlier_runs_of_many(camera_dir, 3)
    reads = _reads_of_events(monkeypatch)
    with caplog.at_level("INFO", logger="daemon.worker"):
        CameraWorker(settings, "synth", observers=[_ForgetManyAtTheEnd(at=5)]).run()  # type: ignore[arg-type]

    assert all(reads.get(f / "events.jsonl", 0) <= 2 for f in earlier), (
        reads
    )  # a pass for pending lines, one erase
    for folder in earlier:
        events = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]
        assert len(events) >= 2 * len(MANY) and not [e for e in events if e.get("global_id") is not None]
        assert not json.loads((folder / "identities.json").read_text())["identities"]
        assert not (folder / "synth.global.txt").read_text().strip()
        assert not np.load(folder / "embeddings.npy").any()
    logged = [json.loads(x) for x in (earlier[-1] / "identities.jsonl").read_text().splitlines()]
    assert [x["event"] for x in logged] == []  # no identity line left; forgotten lines go to the camera's own
    own = [json.loads(x) for x in (camera_dir / "identities.jsonl").read_text().splitlines()]
    assert [x["global_id"] for x in own if x["event"] == "forgotten"] == list(MANY)
    stopping = [r.getMessage() for r in caplog.records if "while stopping" in r.getMessage()]
    assert len(stopping) == 1 and "500 global ids" in stopping[0], stopping


def test_a_stopping_worker_that_cannot_read_a_file_says_so_once_for_all_its_pending_forgets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stopping worker that could not read a camera file logged an error for each pending id (up to
    MAX_PENDING_FORGETS lines, each having read every file before it again); one line names the file and how
    many ids are left in the files, and which."""
    from _unreadable import unreadable_file

    settings = _fleet_of_one(tmp_path)
    camera_dir = tmp_path / "runs" / "synth"
    earlier = _earlier_runs_of_many(camera_dir, 2)
    blocked = earlier[0] / "events.jsonl"
    blocked.unlink()
    unreadable_file(blocked)
    with caplog.at_level("INFO", logger="daemon.worker"):
        CameraWorker(settings, "synth", observers=[_ForgetManyAtTheEnd(at=5)]).run()  # type: ignore[arg-type]

    failed = [r.getMessage() for r in caplog.records if "forget not done" in r.getMessage()]
    assert len(failed) == 1, failed[:3]
    assert f"cannot read {blocked}: Input/output error" in failed[0]
    assert f"500 global ids wait in {camera_dir / 'forget-pending.json'}" in failed[0]
    assert len(failed[0]) < 1000  # not every id: a journald line is at most 48 KB
    assert json.loads((camera_dir / "forget-pending.json").read_text())["ids"] == list(MANY)


def _earlier_ids(folders: list[Path]) -> set[int]:
    """The global ids the events of ``folders`` still hold."""
    found: set[int] = set()
    for folder in folders:
        events = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]
        found |= {e["global_id"] for e in events if e.get("global_id") is not None}
    return found


def test_a_stop_out_of_time_leaves_its_pending_forgets_in_a_file_the_next_start_erases_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stopping worker erased every pending forgotten id before it exited, however long that took: with
    rotate_mb 100 x keep_earlier 30, ~3 GB of events.jsonl read and rewritten, far past the unit's
    TimeoutStopSec (10 s), and SIGKILLed there the ids were lost; its error named every id (up to 10,000, ~60 KB,
    cut by journald). Past STOP_ERASE_S it stops, the ids left in forget-pending.json, one short line logged,
    and the next start erases them first."""
    import daemon.worker as worker_module

    settings = _fleet_of_one(tmp_path)
    camera_dir = tmp_path / "runs" / "synth"
    earlier = _earlier_runs_of_many(camera_dir, 3)
    monkeypatch.setattr(worker_module, "STOP_ERASE_S", 0.0, raising=False)  # no time at all to erase
    with caplog.at_level("INFO", logger="daemon.worker"):
        CameraWorker(settings, "synth", observers=[_ForgetManyAtTheEnd(at=5)]).run()  # type: ignore[arg-type]

    pending = camera_dir / "forget-pending.json"
    assert pending.is_file()
    assert json.loads(pending.read_text())["ids"] == list(MANY)
    assert _earlier_ids(earlier) == set(MANY)  # not erased yet
    said = [r.getMessage() for r in caplog.records if "while stopping" in r.getMessage()]
    assert len(said) == 1 and f"500 global ids wait in {pending}" in said[0] and len(said[0]) < 1000, said

    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level("INFO", logger="daemon.worker"):
        CameraWorker(settings, "synth").run()
    assert not pending.exists()
    assert _earlier_ids(earlier) == set()
    for folder in earlier:
        assert not json.loads((folder / "identities.json").read_text())["identities"]
        assert not np.load(folder / "embeddings.npy").any()
    said = [r.getMessage() for r in caplog.records if "left by an earlier run's stop" in r.getMessage()]
    assert len(said) == 1 and "500 global ids" in said[0] and len(said[0]) < 1000, said


class _Killed(BaseException):
    """A SIGKILL: nothing after it runs."""


def test_a_worker_killed_while_it_erases_its_pending_forgets_loses_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed (systemd's SIGKILL past TimeoutStopSec) while it erased the ids forgotten as it stopped
    lost those it had not erased yet: they were in its memory alone. They are in forget-pending.json before the
    erase begins; killed after its first folder, the next start erases them all."""
    import daemon.erase as erase_module

    settings = _fleet_of_one(tmp_path)
    camera_dir = tmp_path / "runs" / "synth"
    earlier = _earlier_runs_of_many(camera_dir, 3)
    erase_folder = erase_module.erase_folder
    calls: list[Path] = []

    def killed_after_one(
        folder: Path, gids: set[int], pending: set[int], erased: object, deadline: float | None = None
    ) -> None:
        if calls:
            raise _Killed
        calls.append(folder)
        erase_folder(folder, gids, pending, erased, deadline)

    monkeypatch.setattr(erase_module, "erase_folder", killed_after_one)
    with pytest.raises(_Killed):
        CameraWorker(settings, "synth", observers=[_ForgetManyAtTheEnd(at=5)]).run()  # type: ignore[arg-type]
    assert calls == [earlier[0]]  # oldest first
    assert _earlier_ids(earlier[1:]) == set(MANY)

    monkeypatch.undo()
    CameraWorker(settings, "synth").run()
    assert _earlier_ids(earlier) == set()
    assert not (camera_dir / "forget-pending.json").exists()


class _KilledAt(_ForgetOnAnUnreadableFile):
    """As its parent, and killed (a SIGKILL: nothing after it runs) on frame ``kill``."""

    def __init__(self, blocked: Path, at: int, kill: int) -> None:
        super().__init__(blocked, at, mend=-1)
        self.kill = kill

    def frame(self, worker: CameraWorker, result: FrameResult, loop_s: float) -> None:
        super().frame(worker, result, loop_s)
        if result.frame.index == self.kill:
            raise _Killed


def test_a_running_worker_killed_while_a_forget_waits_on_a_file_loses_no_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids a running worker could not erase from its files (a file it could not read) waited in its memory
    alone until it stopped: SIGKILLed meanwhile, they were lost, the person in its files for good. They are
    in forget-pending.json as soon as they wait, erased from there once the file can be read."""
    from _unreadable import unreadable_file

    import daemon.worker as worker_module

    monkeypatch.setattr(worker_module, "FORGET_RETRY_S", 0.0)
    settings = _fleet_of_one(tmp_path)
    camera_dir = tmp_path / "runs" / "synth"
    earlier = camera_dir / "earlier-20260101T000000Z"
    earlier.mkdir(parents=True)
    blocked = unreadable_file(earlier / "events.jsonl")
    with pytest.raises(_Killed):
        CameraWorker(settings, "synth", observers=[_KilledAt(blocked, at=20, kill=22)]).run()  # type: ignore[arg-type]
    pending = PendingForgets(camera_dir)
    assert pending.read() == ([1], set())
    assert any(e.get("global_id") == 1 for e in _run_events(camera_dir))

    blocked.unlink()
    blocked.write_text("")
    pending.erase("synth", time.time())  # as the next start, or `forget` on the stopped camera, does
    assert not pending.path.exists()
    assert not any(e.get("global_id") == 1 for e in _run_events(camera_dir))


def _run_events(camera_dir: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (camera_dir / "events.jsonl").read_text().splitlines()]


def test_an_id_a_running_worker_deferred_gets_one_forgotten_line_once_erased(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running worker writes an id's ``forgotten`` line in identities.jsonl as it forgets it; where the erase
    of its files then had to wait (a file it could not read) and was done later from forget-pending.json (the
    next start, `forget` on the stopped camera, its own stop), that erase found the id's identity lines and
    wrote a second ``forgotten`` line: the log said the person was forgotten twice. The line is written once."""
    from _unreadable import unreadable_file

    import daemon.worker as worker_module

    monkeypatch.setattr(worker_module, "FORGET_RETRY_S", 0.0)
    settings = _fleet_of_one(tmp_path)
    camera_dir = tmp_path / "runs" / "synth"
    earlier = camera_dir / "earlier-20260101T000000Z"
    earlier.mkdir(parents=True)
    blocked = unreadable_file(earlier / "events.jsonl")
    with pytest.raises(_Killed):
        CameraWorker(settings, "synth", observers=[_KilledAt(blocked, at=20, kill=22)]).run()  # type: ignore[arg-type]
    blocked.unlink()
    blocked.write_text("")
    erased = PendingForgets(camera_dir).erase("synth", time.time())

    assert 1 in erased.held and erased.identity_lines > 0  # its identity lines were still there
    logged = [json.loads(x) for x in (camera_dir / "identities.jsonl").read_text().splitlines()]
    # the running worker's line alone, on the frame after the forget
    assert [(x["event"], x["frame"]) for x in logged if x["global_id"] == 1] == [("forgotten", 21)]


def _earlier_runs_holding(camera_dir: Path, gid: int, runs: int) -> list[Path]:
    """``runs`` earlier-* folders in ``camera_dir``, each written by a camera whose one track had ``gid``."""
    folders = []
    for k in range(runs):
        folder = camera_dir / f"earlier-2026010{k + 1}T000000Z"
        cam = CameraConfig(
            source=SourceConfig(uri="x.mp4"), output=OutputConfig(dir=camera_dir / "_made", progress=False)
        )
        outputs = CameraOutputs("synth", cam, 10.0, dim=3, fleet=True)
        image = np.zeros((48, 64, 3), np.uint8)
        for index in range(2):
            dets = Detections(np.array([[1.0, 2, 9, 22]], np.float32), np.full(1, 0.9, np.float32))
            found = [Track("synth", 1, (1.0, 2.0, 9.0, 22.0), 0.9, 0, embedded=True)]
            assigned = (IdentityAssignment("synth", 1, gid, None, 0.9, "fleet", index == 0),)
            result = FrameResult(
                Frame(index, index / 10, image), dets, np.ones((1, 3), np.float32), TrackerUpdate(found, [])
            )
            outputs.write(result, "", FrameIdentities(assigned, ()), fleet_time=100.0 + index)
        outputs.close()
        (camera_dir / "_made" / "synth").rename(folder)
        (camera_dir / "_made").rmdir()
        folders.append(folder)
    return folders


class _ForgetAt:
    """On frame ``at`` the fleet forgets ``gid``."""

    def __init__(self, gid: int, at: int) -> None:
        self.gid, self.at = gid, at

    def waiting(self, worker: CameraWorker, reason: str) -> None:
        pass

    def started(self, worker: CameraWorker, source: object) -> None:
        pass

    def frame(self, worker: CameraWorker, result: FrameResult, loop_s: float) -> None:
        if result.frame.index == self.at and worker.fleet is not None:
            worker.fleet.forget(self.gid)

    def stopped(self, worker: CameraWorker, summary: object) -> None:
        pass


def test_a_running_worker_killed_while_it_erases_a_forgotten_id_loses_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running worker erased a forgotten id with the id in its memory alone: killed while it did (a unit's
    SIGKILL past TimeoutStopSec while a long erase of its earlier folders ran), the folders not reached yet kept
    the person for good, with no note of them, and those it had rewritten no ``forgotten`` line. The id is in
    forget-pending.json before the erase begins, with the ids its rewritten files held: the next start (here
    as it does, from that file) erases the rest and writes the line."""
    import daemon.erase as erase_module

    settings = _fleet_of_one(tmp_path)
    camera_dir = tmp_path / "runs" / "synth"
    earlier = _earlier_runs_holding(camera_dir, 555, 2)  # an earlier run's person, not this run's
    erase_folder = erase_module.erase_folder
    calls: list[Path] = []

    def killed_after_one(
        folder: Path, gids: set[int], pending: set[int], erased: object, deadline: float | None = None
    ) -> None:
        if calls:
            raise _Killed
        calls.append(folder)
        erase_folder(folder, gids, pending, erased, deadline)  # type: ignore[arg-type]

    monkeypatch.setattr(erase_module, "erase_folder", killed_after_one)
    with pytest.raises(_Killed):
        CameraWorker(settings, "synth", observers=[_ForgetAt(555, at=10)]).run()  # type: ignore[arg-type]
    monkeypatch.undo()
    assert calls == [earlier[0]] and _earlier_ids(earlier) == {555}  # the newer one not reached
    pending = PendingForgets(camera_dir)
    assert pending.read() == ([555], {555})

    pending.erase("synth", 1234.0)
    assert _earlier_ids(earlier) == set() and not pending.path.exists()
    logged = [json.loads(x) for x in (camera_dir / "identities.jsonl").read_text().splitlines()]
    assert [(x["global_id"], x["frame"]) for x in logged if x["event"] == "forgotten"] == [(555, None)]


def test_a_rotated_run_whose_first_files_were_deleted_is_scored_from_where_its_files_begin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: eval scored a run that output.rotate_mb split across earlier-* folders on the rows of the
    folders left, against every frame of the ground truth from frame 1; where output.keep_earlier had deleted
    the folders of its first files, every frame of those was a miss (here FN 50 of 100, IDF1 66.7, for a
    tracker that missed nothing), with no word of it. Each set of files records the frame it begins at
    (run.json's first_frame), and the run is scored from the oldest left, saying so."""
    from daemon.cli import main

    clip = make_video(tmp_path / "clip.mp4", frames=100, size=(160, 120), people=1)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    output = {"dir": tmp_path / "runs", "progress": False, "rotate_mb": 0.001, "keep_earlier": 1}
    cam = CameraConfig(
        source=SourceConfig(uri=str(clip.path)),
        detector=GroundTruthDetectorConfig(path=gt),
        embedder=EmbedderConfig(type="none"),
        output=OutputConfig.model_validate(output),
    )
    CameraWorker(single_camera_settings(cam, name="cam"), "cam").run()
    folder = tmp_path / "runs" / "cam"
    scores = tmp_path / "scores.json"
    with caplog.at_level("WARNING", logger="daemon.outputs"):
        assert (
            main(["eval", "--gt", str(gt), "--results", str(folder / "cam.txt"), "--json", str(scores)]) == 0
        )
    assert "frames 1..50 of its run were in files deleted since (output.keep_earlier)" in caplog.text
    metrics = json.loads(scores.read_text(encoding="utf-8"))
    assert (metrics["FN"], metrics["IDF1"]) == (0, 100.0), metrics
    [kept] = earlier_folders(folder)  # files of 25 frames: the first two sets deleted
    assert json.loads((kept / "run.json").read_text(encoding="utf-8"))["first_frame"] == 50


def _reading(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open (Linux: /proc/<pid>/fd)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(Path(os.readlink(fd)) == path for fd in fds.iterdir())
    except OSError:  # a descriptor closed meanwhile, or the process ended
        return False


def test_a_stop_during_the_start_s_erase_of_pending_forgets_exits_at_once_leaving_them_pending(
    tmp_path: Path,
) -> None:
    """A start erases first the forgotten ids an earlier run's stop left in forget-pending.json, with no deadline:
    SIGTERM meanwhile (large earlier-* folders take minutes) waited for the whole erase, past the unit's
    TimeoutStopSec (10 s) on a large enough folder, where systemd's SIGKILL ended it. The stop ends that erase at
    the line it reads: the worker exits 0 at once, the ids still waiting, and the start after erases them."""
    import signal
    import subprocess
    import sys

    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(160, 120), people=1)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"cameras:\n  door:\n    source: {{uri: '{clip.path}'}}\n"
        f"    detector: {{type: ground-truth, path: {gt}}}\n    embedder: {{type: none}}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, progress: false, video: false}}\n"
    )
    camera_dir = tmp_path / "runs" / "door"
    earlier = camera_dir / "earlier-20260101T000000Z"
    earlier.mkdir(parents=True)
    line = json.dumps({"v": 1, "event": "track.updated", "track_id": 2, "global_id": 8, "x": "." * 120})
    gone = json.dumps({"v": 1, "event": "track.updated", "track_id": 1, "global_id": 7})
    events = earlier / "events.jsonl"
    events.write_text(
        (line + "\n") * 300_000 + gone + "\n"
    )  # seconds to read (7 s on a loaded 2-core machine)
    pending = PendingForgets(camera_dir)
    pending.add([7])

    cmd = [sys.executable, "-m", "daemon", "run", "--config", str(cfg), "--no-progress"]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=root, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60  # a loaded machine takes a while to import the worker
        while not _reading(proc.pid, events) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _reading(proc.pid, events), "the start did not get to its erase"
        proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - stopping
    finally:
        proc.kill()
        proc.wait(30)
    print(f"\nSIGTERM during the start's erase: the worker exited {took:.2f} s after")
    assert proc.returncode == 0 and took < 5.0, (took, err[-3000:])
    assert "cut short by this one's" in err, err[-3000:]
    assert pending.read() == ([7], set())
    assert '"global_id": 7' in events.read_text()

    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "left by an earlier run's stop" in done.stderr
    assert not pending.path.exists()
    assert '"global_id": 7' not in events.read_text()


def test_a_stop_during_an_erase_between_frames_ends_it_and_leaves_the_id_pending(tmp_path: Path) -> None:
    """A running worker erases a forgotten id from its files between two frames (on its frame loop), with no
    deadline: a stop then (SIGTERM) waited for the whole erase of large earlier-* folders. The stop ends it at the
    line it reads: the run ends at once with its summary written, the id waiting in forget-pending.json."""
    import threading

    settings = _fleet_of_one(tmp_path)
    camera_dir = tmp_path / "runs" / "synth"
    [earlier] = _earlier_runs_holding(camera_dir, 555, 1)
    filler = json.dumps({"v": 1, "event": "track.updated", "track_id": 2, "global_id": 8, "x": "." * 120})
    with open(earlier / "events.jsonl", "a") as f:
        f.write((filler + "\n") * 300_000)  # seconds to read
    pending = PendingForgets(camera_dir)
    worker = CameraWorker(settings, "synth", observers=[_ForgetAt(555, at=10)])  # type: ignore[arg-type]
    stopped: list[float] = []

    def stop_once_the_erase_began() -> None:
        while not pending.path.exists():  # written as each erase begins
            time.sleep(0.01)
        stopped.append(time.monotonic())
        worker.stop()

    stopper = threading.Thread(target=stop_once_the_erase_began, daemon=True)
    stopper.start()
    summary = worker.run()
    took = time.monotonic() - stopped[0]
    assert took < 5.0, took
    assert 0 < summary.frames < 30 and (camera_dir / "summary.json").is_file()
    assert pending.read()[0] == [555]
    assert 555 in _earlier_ids([earlier])  # not erased yet: the next start does


def _temp_of(folder: Path, name: str, age_s: float, size: int = 100) -> Path:
    """A temporary file of ``name`` in ``folder`` as ``atomic_write`` names it, last written ``age_s`` ago."""
    import uuid

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.{uuid.uuid4().hex[:12]}.tmp"
    path.write_bytes(b"t" * size)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_a_start_removes_the_temporary_files_killed_writers_left_in_the_camera_s_folders(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker (or a forget) killed between writing a file and renaming it (SIGKILL past TimeoutStopSec, the
    watchdog's, a power cut) left its hidden temporary file there for good: status.json, written every second,
    most often; restarts piled them up. The start removes, holding the folder's lock (every writer of those
    files holds it: none is a live writer's), those of every file the camera or a forget writes there, whatever
    their age, nothing else."""
    import logging

    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(320, 240), people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    settings = _settings(tmp_path, clip.path, gt, EmbedderConfig(type="none"))
    camera_dir = tmp_path / "runs" / "synth"
    earlier = camera_dir / "earlier-20240101T000000Z"
    old = 3600.0
    gone = [
        _temp_of(camera_dir, "status.json", 0.0),  # young: a killed worker's all the same
        _temp_of(camera_dir, "summary.json", 1.0),
        _temp_of(camera_dir, "run.json", 1.0),
        _temp_of(camera_dir, "events.jsonl", old),
        _temp_of(camera_dir, "forget-pending.json", old),
        _temp_of(earlier, "events.jsonl", old),
        _temp_of(earlier, "synth.global.txt", old),
        _temp_of(
            camera_dir, "identities.json", 1.0
        ),  # young: no forget writes it while the worker holds the lock
        _temp_of(earlier, "events.jsonl", 1.0),
    ]
    kept = [
        _temp_of(camera_dir, "notes.json", old),  # not a file the camera writes
        _temp_of(tmp_path / "runs", "report.json", old),  # not in the camera's folders
        _temp_of(camera_dir / "mine", "events.jsonl", old),  # nor in a folder of the user's
    ]
    caplog.set_level(logging.INFO, logger="daemon.worker")
    summary = CameraWorker(settings, "synth").run()  # type: ignore[arg-type]
    assert summary.frames == 10
    assert [p for p in gone if p.exists()] == [] and all(p.exists() for p in kept)
    said = f"synth: removed 9 temporary files (900 bytes) left in {camera_dir} by a writer killed"
    assert said in caplog.text, caplog.text


def test_a_start_waits_for_a_forget_writing_the_camera_s_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A forget erasing a stopped camera's earlier folder while its worker started (a starting worker did not
    look running yet) wrote there as the start put files aside and removed temporary files: a forget holds the
    folder's lock while it writes, and the start waits for it (logged) before it writes anything; the forget's
    file is renamed whole, and the run goes on."""
    import logging
    import subprocess
    import sys
    import threading

    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(320, 240), people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    settings = _settings(tmp_path, clip.path, gt, EmbedderConfig(type="none"))
    camera_dir = tmp_path / "runs" / "synth"
    events = camera_dir / "earlier-20240101T000000Z" / "events.jsonl"
    events.parent.mkdir(parents=True)
    (camera_dir / "synth.txt").write_text(
        "1,1,10,10,20,40,1,-1,-1,-1\n"
    )  # the earlier run's: the start removes it
    script = (
        "import pathlib, sys\nfrom daemon.embedding import atomic_write\n"
        "from daemon.camera_lock import writer_locked\n"
        "def write(fh):\n    fh.write(b'{}\\n')\n    fh.flush()\n    print('writing', flush=True)\n"
        "    sys.stdin.readline()\n    fh.write(b'{}\\n')\n"
        f"with writer_locked(pathlib.Path({str(camera_dir)!r}), 'synth', 'reid-daemon forget'):\n"
        f"    atomic_write(pathlib.Path({str(events)!r}), write)\n    print('written', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    caplog.set_level(logging.INFO)
    ran: list[int] = []
    worker = CameraWorker(settings, "synth")  # type: ignore[arg-type]
    start = threading.Thread(target=lambda: ran.append(worker.run().frames))
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline() == "writing\n"
        (tmp,) = events.parent.glob(".events.jsonl.*.tmp")
        start.start()
        deadline = time.monotonic() + 60
        while "another process is writing camera synth's folder" not in caplog.text:
            assert time.monotonic() < deadline and start.is_alive(), caplog.text
            time.sleep(0.05)
        assert tmp.exists() and (camera_dir / "synth.txt").exists()  # nothing written while it waits
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "written\n"
        assert events.read_text() == "{}\n{}\n" and not tmp.exists()
        assert start.is_alive()  # the forget holds the lock still
        writer.stdin.write("\n")
        writer.stdin.flush()
        start.join(60)
        assert ran == [10]
    finally:
        writer.kill()
        writer.wait(timeout=10)
        start.join(60)
    assert events.read_text() == "{}\n{}\n"
    assert "1,1,10,10" not in (camera_dir / "synth.txt").read_text()  # this run's
