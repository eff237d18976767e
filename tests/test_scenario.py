"""Multi-camera scenarios built from one video: frames, timing, pictures and ground truth per camera."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from _data import require_pets09
from _unreadable import unreadable_file
from _video import make_video

from daemon.config import Settings, load_settings
from daemon.errors import DataError, SourceError
from daemon.identity.site import SiteMap
from daemon.motio import MotGroundTruth, read_ground_truth, write_ground_truth
from daemon.scenario import (
    PRESETS,
    ScenarioConfig,
    ViewConfig,
    build,
    camera_frames,
    load_scenario,
    photometric,
    view_ground_truth,
)


def _gt(rows: list[tuple[int, int, float, float, float, float]]) -> MotGroundTruth:
    a = np.asarray(rows, dtype=np.float64)
    return MotGroundTruth(
        a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2:6], np.ones(len(a), bool)
    )


def test_view_ground_truth_moves_scales_clips_and_ignores_the_barely_visible() -> None:
    gt = _gt(
        [(1, 7, 100, 50, 20, 40), (1, 8, 190, 50, 20, 40), (1, 9, 300, 50, 20, 40), (2, 7, 110, 50, 20, 40)]
    )
    view = ViewConfig(name="v", region=(100, 0, 200, 100), scale=2.0)
    out = view_ground_truth(gt, view, frames=2)
    assert out.frame.tolist() == [1, 1, 2]
    assert out.track_id.tolist() == [7, 8, 7]  # person 9 is outside the region
    assert out.xywh[0].tolist() == [0, 100, 40, 80]
    assert out.xywh[1].tolist() == [180, 100, 20, 80]  # clipped at x=200: half visible
    assert out.consider.tolist() == [True, True, True]
    narrow = view_ground_truth(gt, view.model_copy(update={"min_visible": 0.6}), frames=2)
    assert narrow.consider.tolist() == [True, False, True]


def test_view_ground_truth_keeps_the_classes_distractors(tmp_path: Path) -> None:
    """A MOT17 gt's distractors (a static person) and its rows neither scored nor distractors (a car) are kept
    apart in a view, and a pedestrian the view shows too little of becomes an ignored region (a distractor), as
    every row not considered is in a gt without classes."""
    src = tmp_path / "gt.txt"
    src.write_text(
        "1,7,100,50,20,40,1,1,1\n1,8,190,50,20,40,1,1,1\n1,9,120,50,20,40,0,7,1\n1,4,140,50,20,40,0,3,1\n"
    )
    view = ViewConfig(name="v", region=(100, 0, 200, 100), min_visible=0.6)
    out = view_ground_truth(read_ground_truth(src), view, frames=1)
    assert out.track_id.tolist() == [7, 8, 9, 4]
    assert out.consider.tolist() == [True, False, False, False]
    assert out.distractors().tolist() == [False, True, True, False]
    assert view_ground_truth(_gt([(1, 7, 190, 50, 20, 40)]), view, frames=1).distractor is None


def test_delay_and_step_map_camera_frames_to_source_frames() -> None:
    view = ViewConfig(name="v", region=(0, 0, 100, 100), step=2, delay=3)
    assert [view.source_frame(k) for k in range(5)] == [-3, -1, 1, 3, 5]
    assert camera_frames(view, source_frames=10) == 7  # source frames -3..9 by 2: last is 9
    gt = _gt([(f + 1, 1, 10, 10, 20, 20) for f in range(10)])
    out = view_ground_truth(gt, view, frames=7)
    assert out.frame.tolist() == [3, 4, 5, 6, 7]  # camera frame 2 shows source frame 1 (MOT frame 2)


def test_photometric_changes_are_deterministic_and_do_what_they_say() -> None:
    image = np.full((40, 40, 3), 128, np.uint8)
    dark = photometric(image, ViewConfig(name="v", region=(0, 0, 40, 40), gamma=2.0))
    assert dark.mean() < 80
    warm = photometric(image, ViewConfig(name="v", region=(0, 0, 40, 40), gains=(0.5, 1.0, 1.5)))
    assert warm[..., 0].mean() < 70 and warm[..., 2].mean() > 180
    view = ViewConfig(name="v", region=(0, 0, 40, 40), blur=1.5, jpeg_quality=30)
    assert np.array_equal(photometric(image, view), photometric(image, view))


def test_build_writes_videos_ground_truth_and_a_fleet_config(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "src.mp4", frames=20, size=(320, 240), people=3)
    gt_path = clip.write_mot_gt(tmp_path / "gt.txt")
    scenario = ScenarioConfig(
        name="t",
        views=(
            ViewConfig(name="left", region=(0, 0, 200, 240)),
            ViewConfig(name="right", region=(120, 0, 320, 240), delay=4, step=2, scale=0.5, gamma=1.5),
        ),
    )
    files = build(clip.path, gt_path, scenario, tmp_path / "out")
    for name, frames, size in (("left", 20, (200, 240)), ("right", 12, (100, 120))):
        cap = cv2.VideoCapture(str(files.videos[name]))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
        ok, first = cap.read()
        cap.release()
        assert ok and (first.shape[1], first.shape[0]) == size
        gt = read_ground_truth(files.ground_truth[name])
        assert gt.frame.max() <= frames and len(gt) > 0
    cap = cv2.VideoCapture(str(files.videos["right"]))
    assert cap.read()[1].mean() < 5  # the delayed camera opens on black
    cap.release()
    desc = json.loads(files.description.read_text())
    assert desc["cameras"]["right"]["frames"] == 12 and desc["source"]["frames"] == 20
    fleet = load_settings(files.fleet_config)
    assert set(fleet.cameras) == {"left", "right"}
    assert fleet.cameras["right"].tracker.frame_rate is None  # times nothing (track_buffer is in frames)
    # each view is placed on the source's pixels (the site plan) and its lag is on its clock
    right = fleet.cameras["right"]
    assert right.site is not None and right.source.clock_offset_s == pytest.approx(-4 / 7)
    feet = SiteMap(right.site).feet(np.array([[40, 20, 60, 100]], np.float32))  # output px, 0.5x scale
    np.testing.assert_allclose(feet[0], [120 + 50 * 2, 100 * 2], atol=1e-4)
    # the cameras replay in lockstep, as fast as they can
    for settings in (fleet, load_settings(files.folder / "fleet.gt-boxes.yaml")):
        assert settings.fleet.lockstep and settings.fleet.replay_speed is None
    # the same two with looks made from the ground truth (a ReID-quality embedder), beside the others' runs
    for name, detector, runs in (
        ("fleet.true-looks.yaml", "ssdlite", "runs-true-looks"),
        ("fleet.gt-boxes.true-looks.yaml", "ground-truth", "runs-gt-boxes-true-looks"),
    ):
        looks = load_settings(files.folder / name)
        for cam in ("left", "right"):
            c = looks.cameras[cam]
            assert c.embedder.type == "ground-truth" and c.embedder.truth is not None
            assert c.embedder.truth.path == files.ground_truth[cam].resolve()
            assert c.detector.type == detector and c.output.dir == (files.folder / runs).resolve()
        assert looks.identity.fleet_threshold == 0.6 and looks.fleet.lockstep
    short = build(clip.path, gt_path, scenario, tmp_path / "short", max_frames=6)
    assert json.loads(short.description.read_text())["cameras"]["left"]["frames"] == 6


def test_a_video_of_another_frame_rate_is_replayed_at_its_own_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scenario build` on a 25 fps video (README: "with any other video") wrote the cameras at the presets'
    7 fps without a word: the replay ran 3.6x slow, with the trackers and the fleet clock set for 7 fps."""
    from daemon.cli import main

    clip = make_video(tmp_path / "src.mp4", frames=6, size=(320, 240), fps=25.0, people=1)
    spec = tmp_path / "two.yaml"
    views = [
        {"name": "a", "region": [0, 0, 160, 240]},
        {"name": "b", "region": [160, 0, 320, 240], "step": 2},
    ]
    spec.write_text(yaml.safe_dump({"name": "two", "views": views}))
    args = ["scenario", "build", str(spec), "--video", str(clip.path), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "default")]) == 0
    said = capsys.readouterr().out
    assert "its container says 25 fps" in said  # the 7 fps it used is said, not silent
    assert "build again with --fps 25" in said  # the notice told any video it was PETS09's mistake
    assert main([*args, "--out", str(tmp_path / "own"), "--fps", "25"]) == 0
    assert "container says" not in capsys.readouterr().out
    for cam, fps in (("a", 25.0), ("b", 12.5)):
        cap = cv2.VideoCapture(str(tmp_path / "own" / f"{cam}.mp4"))
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps)
        cap.release()
    assert set(load_settings(tmp_path / "own" / "fleet.yaml").cameras) == {"a", "b"}  # a valid fleet config
    assert main([*args, "--out", str(tmp_path / "bad"), "--fps", "0"]) == 2  # bad usage
    assert "frame rate 0: Input should be greater than 0" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "nan"), "--fps", "nan"]) == 2
    assert "frame rate nan: Input should be a finite number" in capsys.readouterr().err  # not "<= 240"


def test_a_preset_fits_a_video_of_another_size(tmp_path: Path) -> None:
    """The presets' regions are PETS09-S2L1 pixels (768x576): on a smaller video (README: "with any other
    video") build failed with "region ... is outside the 640x360 source", and on a larger one the cameras saw
    only its top-left 768x576 corner. The regions are now scaled to the video, ground truth and site with them."""
    clip = make_video(tmp_path / "src.mp4", frames=4, size=(640, 360), people=2)
    gt_path = clip.write_mot_gt(tmp_path / "gt.txt")
    files = build(clip.path, gt_path, PRESETS["pets09-3cam-handover"], tmp_path / "out")
    for name, width in (("a", 213), ("b", round(214 * 0.8)), ("c", 213)):
        cap = cv2.VideoCapture(str(files.videos[name]))
        ok, first = cap.read()
        cap.release()
        assert ok and first.shape[1] == pytest.approx(width, abs=1)
        assert first.shape[0] == (288 if name == "b" else 360)
    desc = json.loads(files.description.read_text())
    regions = [v["region"] for v in desc["scenario"]["views"]]
    assert regions == [[0, 0, 213, 360], [213, 0, 427, 360], [427, 0, 640, 360]]
    gt = {name: read_ground_truth(path) for name, path in files.ground_truth.items()}
    people = {int(i) for g in gt.values() for i in np.unique(g.track_id[g.consider])}
    assert people == {b.id for frame in clip.truth for b in frame}  # everyone is on some camera
    fleet = load_settings(files.fleet_config)
    site = fleet.cameras["c"].site
    assert site is not None  # camera c's right edge is the video's right edge on the site plan
    np.testing.assert_allclose(SiteMap(site).feet(np.array([[203, 0, 213, 360]], np.float32))[0], [635, 360])
    assert fleet.identity.site_radius == pytest.approx(
        30.0 * (640 * 360 / (768 * 576)) ** 0.5
    )  # smaller people


def test_a_ground_truth_of_the_video_at_another_size_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A gt annotated at 640x360 given with the video resized to 320x180 was cut into the views as it was,
    without a word: the cameras' truths showed people where there were none (the right-hand view's people all
    past the frame). Boxes wholly outside the source's frames are warned about, naming the file and the first."""
    clip = make_video(tmp_path / "src.mp4", frames=4, size=(320, 180), people=3)
    gt = read_ground_truth(clip.write_mot_gt(tmp_path / "small-gt.txt"))
    big = MotGroundTruth(gt.frame, gt.track_id, gt.xywh * 2, gt.consider)
    write_ground_truth(tmp_path / "big-gt.txt", big)
    outside = (big.xywh[:, 0] >= 320) | (big.xywh[:, 1] >= 180)
    assert outside.any()
    first = int(np.flatnonzero(outside)[0])
    build(clip.path, tmp_path / "big-gt.txt", PRESETS["pets09-2cam-overlap"], tmp_path / "out")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(
        f"{int(outside.sum())} of {len(big)} boxes of {tmp_path / 'big-gt.txt'} lie wholly outside the video's "
        f"320x180 frames (the first: frame {int(big.frame[first])}, id {int(big.track_id[first])}): is it the "
        "ground truth of the video at another size?"
    )
    caplog.clear()
    build(clip.path, tmp_path / "small-gt.txt", PRESETS["pets09-2cam-overlap"], tmp_path / "out")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # its own truth: nothing said


def test_build_never_writes_over_its_own_source(tmp_path: Path) -> None:
    """A source video named like a camera's (a.mp4) in the --out folder was opened for writing before it was
    read: the user's video was cut to 258 bytes and the build failed with 'frame 0 could not be decoded'."""
    clip = make_video(tmp_path / "a.mp4", frames=3, size=(320, 240))
    gt = clip.write_mot_gt(tmp_path / "b.gt.txt")
    before = clip.path.read_bytes(), gt.read_bytes()
    two = ScenarioConfig(
        name="t",
        views=(
            ViewConfig(name="a", region=(0, 0, 160, 240)),
            ViewConfig(name="b", region=(160, 0, 320, 240)),
        ),
    )
    with pytest.raises(DataError, match=r"would write over its source .*a\.mp4"):
        build(clip.path, None, two, tmp_path)
    with pytest.raises(DataError, match=r"would write over its source .*b\.gt\.txt"):
        build(make_video(tmp_path / "src.mp4", frames=3).path, gt, two, tmp_path / "sub" / "..")
    assert (clip.path.read_bytes(), gt.read_bytes()) == before


def test_bad_scenarios_and_sources_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        ViewConfig(name="v", region=(0, 0, 8, 100))
    with pytest.raises(ValueError, match="repeat"):
        ScenarioConfig(name="x", views=(ViewConfig(name="a", region=(0, 0, 50, 50)),) * 2)
    with pytest.raises(DataError, match="no scenario preset or file"):
        load_scenario("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"name": "x", "views": [{"name": "a", "region": [0, 0, 50, 50], "zoom": 2}]})
    )
    with pytest.raises(DataError, match="zoom"):
        load_scenario(str(bad))
    (tmp_path / "gt.txt").write_text("1,1,10,10,20,20,1,1,1\n")
    with pytest.raises(SourceError, match="video file not found"):
        build(tmp_path / "missing.mp4", tmp_path / "gt.txt", PRESETS["pets09-2cam-overlap"], tmp_path / "o")
    clip = make_video(tmp_path / "small.mp4", frames=3, size=(320, 240))
    wide = ScenarioConfig(name="w", views=(ViewConfig(name="a", region=(0, 0, 400, 240)),))
    with pytest.raises(DataError, match="outside"):
        build(clip.path, tmp_path / "gt.txt", wide, tmp_path / "o")
    with pytest.raises(DataError, match="max_frames must be >= 0"):  # was built from the whole source
        build(clip.path, None, PRESETS["pets09-2cam-overlap"], tmp_path / "neg", max_frames=-5)
    assert not (tmp_path / "neg").exists()


def test_a_scenario_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    """A scenario file the user may not read ended in an OSError traceback, and a folder given as the file was
    'no scenario preset or file', for a path that is there."""
    unreadable = unreadable_file(tmp_path / "mine.yaml")
    with pytest.raises(
        DataError, match=rf"^{unreadable}: cannot read the scenario file: Input/output error$"
    ):
        load_scenario(str(unreadable))
    (tmp_path / "views").mkdir()
    with pytest.raises(DataError, match=rf"^{tmp_path / 'views'} is a folder, not a scenario file$"):
        load_scenario(str(tmp_path / "views"))
    (tmp_path / "latin.yaml").write_bytes(b"\xff\xfe")  # read, not UTF-8: still named as not a scenario
    with pytest.raises(DataError, match=r"latin\.yaml: not a valid scenario: 'utf-8' codec"):
        load_scenario(str(tmp_path / "latin.yaml"))


def test_presets_on_the_real_clip(tmp_path: Path) -> None:
    pets = require_pets09()
    scenario = load_scenario("pets09-2cam-overlap")
    files = build(pets / "vtest.avi", pets / "gt" / "gt.txt", scenario, tmp_path, max_frames=30)
    desc = json.loads(files.description.read_text())
    a, b = desc["cameras"]["a"], desc["cameras"]["b"]
    assert a["frames"] == b["frames"] == 30
    assert set(a["people"]) & set(b["people"])  # the overlap: someone is on both cameras


def test_the_grid_preset_sees_people_on_several_cameras_at_once(tmp_path: Path) -> None:
    pets = require_pets09()
    scenario = load_scenario("pets09-4cam-grid")
    files = build(pets / "vtest.avi", pets / "gt" / "gt.txt", scenario, tmp_path, max_frames=60)
    cams = json.loads(files.description.read_text())["cameras"]
    assert sorted(cams) == ["a", "b", "c", "d"]
    assert cams["d"]["frames"] == 30 and cams["c"]["frames"] == 60 + 7  # half rate; 1 s of black first
    people = {name: set(c["people"]) for name, c in cams.items()}
    assert people["a"] & people["b"] and people["b"] & people["d"]  # neighbours overlap
    fleet = yaml.safe_load(files.fleet_config.read_text())
    edges = {(e["a"], e["b"]) for e in fleet["identity"]["adjacency"]}
    assert edges == {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")}
    settings = load_settings(files.fleet_config)
    assert settings.cameras["c"].source.clock_offset_s == -1.0
    assert settings.cameras["b"].detector.tiles == (1, 1)


def test_scenario_fleet_configs_leave_re_linking_to_the_identity_resolver(tmp_path: Path) -> None:
    from daemon.scenario import _fleet_config

    scenario = load_scenario("pets09-3cam-handover")
    videos = {v.name: tmp_path / f"{v.name}.mp4" for v in scenario.views}
    cfg = _fleet_config(scenario, videos, tmp_path)
    cameras = Settings(**cfg).cameras  # what the cameras share is written once, under camera_defaults
    assert {c.tracker.relink_window for c in cameras.values()} == {0}
    assert "relink_window" not in str(cfg["cameras"])
    assert cfg["identity"]["fleet_threshold"] == 0.85 and cfg["identity"]["fleet_distinct_margin"] == 0.08


def test_a_build_without_ground_truth_leaves_no_earlier_truth_behind(tmp_path: Path) -> None:
    """A folder built again without --gt (another video, no ground truth) kept the earlier build's <camera>.gt.txt
    and fleet.gt-boxes*.yaml / fleet.true-looks.yaml: `reid-daemon fleet` scored the new video's run against the
    old video's truth (scenario.json and the .gt.txt files beside fleet.yaml), and the true-box configs replayed
    the old boxes over the new videos."""
    clip = make_video(tmp_path / "src.mp4", frames=4, size=(320, 240), people=2)
    gt_path = clip.write_mot_gt(tmp_path / "gt.txt")
    two = ScenarioConfig(
        name="t",
        views=(
            ViewConfig(name="a", region=(0, 0, 160, 240)),
            ViewConfig(name="b", region=(160, 0, 320, 240)),
        ),
    )
    out = tmp_path / "out"
    build(clip.path, gt_path, two, out)
    assert (out / "a.gt.txt").is_file() and (out / "fleet.gt-boxes.yaml").is_file()
    other = make_video(tmp_path / "other.mp4", frames=3, size=(320, 240), people=1, seed=1)
    files = build(other.path, None, two, out)
    assert files.ground_truth == {}
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "fleet.yaml", "scenario.json"]
    assert gt_path.is_file()  # the source's truth is never touched


def test_a_text_file_given_as_the_video_is_refused(tmp_path: Path) -> None:
    """--video gt.txt (the ground truth and the video swapped) built a scenario: FFmpeg renders a .txt file as a
    640x400 video of its characters (921 frames for PETS09's gt.txt), and every camera replayed that."""
    clip = make_video(tmp_path / "src.mp4", frames=12, size=(320, 240), people=2)
    gt_path = clip.write_mot_gt(tmp_path / "gt.txt")  # 24 rows: FFmpeg opens it (3 rows it does not)
    with pytest.raises(SourceError, match=r"gt\.txt is a text file, not a video"):
        build(gt_path, None, PRESETS["pets09-2cam-overlap"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_named_pipe_or_a_still_image_given_as_the_video_is_refused(tmp_path: Path) -> None:
    """--video on a named pipe (a recorder's output) hung the build for good: OpenCV opening it waits for a writer,
    and Ctrl-C cannot end that wait; a still image built a scenario of one frame. Both are refused before anything
    is opened, as run refuses them."""
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    done: list[BaseException] = []

    def attempt() -> None:
        try:
            build(fifo, None, PRESETS["pets09-2cam-overlap"], tmp_path / "out")
        except BaseException as e:  # handed to the test's thread
            done.append(e)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # free the hung open so that the thread ends
        with open(fifo, "wb"):
            pass
        t.join(10)
        pytest.fail("scenario build hung on a named pipe")
    assert isinstance(done[0], SourceError) and "not a regular file" in str(done[0]), done
    photo = tmp_path / "photo.mp4"
    assert cv2.imwrite(str(tmp_path / "p.jpg"), np.full((240, 320, 3), 90, np.uint8))
    photo.write_bytes((tmp_path / "p.jpg").read_bytes())
    with pytest.raises(SourceError, match=r"photo\.mp4 is a still image \(JPEG\), not a video"):
        build(photo, None, PRESETS["pets09-2cam-overlap"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_video_cut_short_is_said_to_be(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A source cut short (a copy that stopped) built a scenario of the frames it still decodes (11 of 30) without
    a word, where `run` on it warns: the replay and its scores then cover a part of the recording."""
    whole, cut = tmp_path / "whole.avi", tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 7, (320, 240))
    for i in range(30):
        writer.write(np.full((240, 320, 3), i * 8, np.uint8))
    writer.release()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    files = build(cut, None, PRESETS["pets09-2cam-overlap"], tmp_path / "out")
    frames = json.loads(files.description.read_text())["source"]["frames"]
    assert 0 < frames < 30
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning == f"{cut} decodes to {frames} frames, its container announces 30: cut short or damaged?"
    caplog.clear()
    build(whole, None, PRESETS["pets09-2cam-overlap"], tmp_path / "out")  # whole: no warning
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_an_out_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    """--out naming a file (or a folder under one, or somewhere the user cannot write) ended in a
    FileExistsError / NotADirectoryError traceback from mkdir."""
    clip = make_video(tmp_path / "src.mp4", frames=2, size=(320, 240), people=1)
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for out in (taken, taken / "sub"):
        with pytest.raises(DataError, match=rf"cannot make the output folder {out}: "):
            build(clip.path, None, PRESETS["pets09-2cam-overlap"], out)
    assert taken.read_text() == "not a folder"


def test_a_region_outside_the_video_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A view reaching past the video's edge was found while the first frame was written: the build failed after
    opening every camera's writer, leaving cut videos in --out (an earlier build's there destroyed)."""
    clip = make_video(tmp_path / "src.mp4", frames=2, size=(320, 240), people=1)
    views = (ViewConfig(name="a", region=(0, 0, 160, 240)), ViewConfig(name="b", region=(160, 0, 400, 240)))
    with pytest.raises(
        DataError, match=r"camera b: region \(160, 0, 400, 240\) is outside the 320x240 source"
    ):
        build(clip.path, None, ScenarioConfig(name="w", views=views), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_scenario_file_frame_size_is_checked(tmp_path: Path) -> None:
    """A scenario file's frame_size of 0 px ended the build in a ZeroDivisionError traceback (fit_to), a negative
    one in pydantic's 'Tuple should have at least 1 item', and regions drawn outside it were taken and scaled
    (region (0, 0, 2304, 1728) is outside the 768x576 source, for a file that says (0, 0, 300, 300))."""
    for size, problem in (
        ([0, 576], "frame_size 0x576 must be at least 16 px wide and high"),
        ([-768, 576], "frame_size -768x576 must be at least 16 px wide and high"),
        ([100, 100], r"camera a's region \(0, 0, 300, 300\) reaches past the frame_size 100x100"),
    ):
        spec = tmp_path / "s.yaml"
        spec.write_text(
            yaml.safe_dump(
                {"name": "s", "frame_size": size, "views": [{"name": "a", "region": [0, 0, 300, 300]}]}
            )
        )
        with pytest.raises(DataError, match=problem):
            load_scenario(str(spec))


def test_a_view_whose_picture_would_be_under_16_px_is_refused(tmp_path: Path) -> None:
    """'Output size = region size x scale', but a side under 16 px was raised to 16 alone: region 17x576 at
    scale 0.25 became a 16x144 picture, its people 4x squashed in height and not in width (the detector and
    the scores on a view unlike the one described). Such a view is refused, naming the picture's size."""
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump({"name": "s", "views": [{"name": "a", "region": [0, 0, 17, 576], "scale": 0.25}]})
    )
    with pytest.raises(
        DataError,
        match=r"views\.0: region \(0, 0, 17, 576\) at scale 0\.25 is a 4\.25x144 picture: its sides must",
    ):
        load_scenario(str(spec))
    assert ViewConfig(name="a", region=(0, 0, 64, 576), scale=0.25).output_size() == (16, 144)


def test_a_bad_scenario_file_is_one_line_per_problem(tmp_path: Path) -> None:
    """A scenario file's mistakes came as pydantic's dump: three lines each with the input echoed and a URL, and
    a spurious 'views: Tuple should have at least 1 item after validation, not 0' for a file with two views."""
    spec = tmp_path / "s.yaml"
    views = [
        {"name": "a", "region": [0, 0, 300, 300], "zoom": 2},
        {"name": "b", "region": [0, 0, 300, 300], "scale": 9},
    ]
    spec.write_text(yaml.safe_dump({"name": "s", "views": views}))
    with pytest.raises(DataError) as e:
        load_scenario(str(spec))
    assert str(e.value) == (
        f"{spec}: not a valid scenario: views.0.zoom: Extra inputs are not permitted; "
        "views.1.scale: Input should be less than or equal to 4"
    )
    spec.write_text("- a\n")
    with pytest.raises(DataError, match=r"not a valid scenario: Input should be a valid dictionary"):
        load_scenario(str(spec))
    view = {"name": "a", "region": [0, 0, 300, 300]}
    spec.write_text(yaml.safe_dump({"name": "s", "frame_size": [8, 8], "views": [view]}))
    with pytest.raises(
        DataError, match=r"valid scenario: frame_size 8x8 must be at least 16 px wide and high$"
    ):
        load_scenario(str(spec))


def test_a_preset_on_another_frame_rate_keeps_its_delays_in_seconds_and_says_what_changed() -> None:
    """With --fps 25 the handover's camera b ran 14 frames (0.56 s) late instead of its 2 s, and scenario.json
    still said "14 source frames (2 s)"; the grid's c likewise, and a video of another size kept PETS09's pixel
    numbers in the description."""
    from daemon.scenario import PRESETS, at_frame_rate, fit_to

    hand = at_frame_rate(PRESETS["pets09-3cam-handover"], 25.0)
    assert {v.name: v.delay for v in hand.views} == {"a": 0, "b": 50, "c": 0}  # 2 s at 25 fps
    assert "written for 7 fps, here 25 fps" in hand.description
    same = at_frame_rate(PRESETS["pets09-4cam-grid"], 7.0)
    assert same == PRESETS["pets09-4cam-grid"]  # PETS09's own rate: the published scenario, unchanged
    wide = fit_to(PRESETS["pets09-2cam-overlap"], (1280, 720))
    assert "drawn on 768x576, scaled to 1280x720" in wide.description


def test_a_view_of_odd_size_has_ground_truth_inside_its_picture(tmp_path: Path) -> None:
    """mp4v writes even sides only: a 101x61 view comes back 100x60. Its ground truth reached x = 101, a column
    the video does not have; it is clipped to the picture the video shows."""
    clip = make_video(tmp_path / "src.mp4", frames=3, size=(320, 240), people=1)
    gt_path = tmp_path / "gt.txt"  # one person whose box runs past the view's right and bottom edges
    gt_path.write_text("".join(f"{f},1,70,30,50,40,1,-1,-1,-1\n" for f in (1, 2, 3)))
    view = ViewConfig(name="odd", region=(0, 0, 101, 61), scale=2.0)  # 202x122: even, nothing cut
    odd = ViewConfig(name="odd", region=(0, 0, 101, 61))
    for v, size in ((view, (202, 122)), (odd, (100, 60))):
        files = build(clip.path, gt_path, ScenarioConfig(name="t", views=(v,)), tmp_path / f"out{size[0]}")
        cap = cv2.VideoCapture(str(files.videos["odd"]))
        ok, first = cap.read()
        cap.release()
        assert ok and (first.shape[1], first.shape[0]) == size
        gt = read_ground_truth(files.ground_truth["odd"])
        right, bottom = gt.xywh[:, 0] + gt.xywh[:, 2], gt.xywh[:, 1] + gt.xywh[:, 3]
        assert len(gt) and right.max() <= size[0] + 1e-6 and bottom.max() <= size[1] + 1e-6
        assert right.max() == pytest.approx(size[0]) and bottom.max() == pytest.approx(size[1])


def test_a_frame_rate_mp4v_cannot_time_is_written_to_the_hundredth(tmp_path: Path) -> None:
    """`scenario build --fps 133.334` (its step-2 view: 66.667 fps) stopped at its first camera with 'cannot write
    a.mp4 (mp4v)': OpenCV writes the rate to the ms and MPEG-4 takes 65535 ticks a second at most (mp4v_fps, as
    the annotated video). The videos are written at 133.33 and 66.67 fps; fleet.yaml gives the cameras their
    exact rates (source.fps), so the replay is timed as the source was; a rate mp4v can time is left alone."""
    from daemon.cli import main

    clip = make_video(tmp_path / "src.mp4", frames=6, size=(320, 240), fps=25.0, people=1)
    spec = tmp_path / "two.yaml"
    views = [
        {"name": "a", "region": [0, 0, 160, 240]},
        {"name": "b", "region": [160, 0, 320, 240], "step": 2},
    ]
    spec.write_text(yaml.safe_dump({"name": "two", "views": views}))
    args = ["scenario", "build", str(spec), "--video", str(clip.path), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "fast"), "--fps", "133.334"]) == 0
    fleet = load_settings(tmp_path / "fast" / "fleet.yaml")
    for cam, written, exact in (("a", 133.33, 133.334), ("b", 66.67, 66.667)):
        cap = cv2.VideoCapture(str(tmp_path / "fast" / f"{cam}.mp4"))
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(written, abs=1e-6)
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == (6 if cam == "a" else 3)
        cap.release()
        assert fleet.cameras[cam].source.fps == pytest.approx(exact)
    assert main([*args, "--out", str(tmp_path / "plain"), "--fps", "25"]) == 0
    assert all(
        c.source.fps is None for c in load_settings(tmp_path / "plain" / "fleet.yaml").cameras.values()
    )


def test_a_view_over_what_mp4v_encodes_is_scaled_down_with_its_ground_truth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A view with a side of 8192 px or more (8K footage, or a view at scale 4 as here: 8400x1208) stopped the
    build with 'cannot write a.mp4 (mp4v)': the encoder takes sides up to 8190 px, the limit the annotated video
    had. It is scaled down to fit (aspect kept: 8190x1178), and its ground truth and site plan with it."""
    source = tmp_path / "strip.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter.fourcc(*"mp4v"), 7.0, (2100, 302))
    for _ in range(3):
        writer.write(np.full((302, 2100, 3), 128, np.uint8))
    writer.release()
    gt_path = tmp_path / "gt.txt"  # one person inside the view, one running past its right edge
    gt_path.write_text(
        "".join(f"{f},1,1000,8,50,32,1,-1,-1,-1\n{f},2,2080,8,40,32,1,-1,-1,-1\n" for f in (1, 2, 3))
    )
    view = ViewConfig(name="a", region=(0, 0, 2100, 302), scale=4.0)
    with caplog.at_level("INFO", logger="daemon.scenario"):
        files = build(source, gt_path, ScenarioConfig(name="wide", views=(view,)), tmp_path / "out")
    assert "8400x1208 frames are written at 8190x1178" in caplog.text
    cap = cv2.VideoCapture(str(files.videos["a"]))
    ok, first = cap.read()
    cap.release()
    assert ok and first.shape[:2] == (1178, 8190)
    sx, sy = 8190 / 2100, 1178 / 302
    gt = read_ground_truth(files.ground_truth["a"])
    one, two = gt.xywh[gt.track_id == 1][0], gt.xywh[gt.track_id == 2][0]
    np.testing.assert_allclose(one, [1000 * sx, 8 * sy, 50 * sx, 32 * sy], rtol=1e-4)
    assert two[0] + two[2] == pytest.approx(8190)  # clipped at the picture's right edge
    camera = load_settings(files.fleet_config).cameras["a"]
    assert camera.site is not None  # the picture's right edge is the source's
    feet = SiteMap(camera.site).feet(np.array([[8180, 0, 8200, 1178]], np.float32))
    np.testing.assert_allclose(feet[0], [2100, 302], rtol=1e-4)


def test_a_folder_or_a_missing_file_given_as_the_video_is_named_so(tmp_path: Path) -> None:
    """`scenario build --video frames/` (a folder of images, as `run` takes) and a mistyped --video both said
    'cannot open the scenario source video', as a corrupt file does: neither that build takes one video file
    nor that the file is not there."""
    frames = tmp_path / "my frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:04d}.png"), np.full((48, 64, 3), 100, np.uint8))
    preset = PRESETS["pets09-2cam-overlap"]
    with pytest.raises(SourceError) as folder:
        build(frames, None, preset, tmp_path / "out")
    assert str(folder.value) == (
        f"{frames} is a folder of 3 images, not a video: scenario build cuts its cameras out of one video file; "
        f"join the images into one first (ffmpeg -framerate FPS -pattern_type glob -i '{frames}/*.png' "
        "video.mp4)"
    )
    with pytest.raises(
        SourceError, match=rf"^{tmp_path / 'empty'} is a folder, not a video: scenario build "
    ):
        (tmp_path / "empty").mkdir()
        build(tmp_path / "empty", None, preset, tmp_path / "out")
    with pytest.raises(SourceError, match=rf"^video file not found: {tmp_path / 'typo.mp4'}$"):
        build(tmp_path / "typo.mp4", None, preset, tmp_path / "out")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(
        SourceError, match=r"cannot open the scenario source video .*corrupt\.mp4: unreadable"
    ):
        build(corrupt, None, preset, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_mp4_cut_before_its_index_is_named_unfinished_by_scenario_build(tmp_path: Path) -> None:
    """A recording interrupted before its writer put its index ('moov', written last) was 'unreadable, corrupt or
    not a video OpenCV reads' to scenario build, where run says what it is (f4bdb5f): it says so here too."""
    data = make_video(tmp_path / "whole.mp4", frames=10).path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: data.rindex(b"moov") - 4])
    with pytest.raises(SourceError) as e:
        build(cut, None, PRESETS["pets09-2cam-overlap"], tmp_path / "out")
    said = str(e.value)
    assert said.startswith(f"cannot open the scenario source video {cut}: the MP4/MOV file is trunc"), said
    assert "with no index ('moov' box)" in said and "copy the whole file again" in said, said
    assert not (tmp_path / "out").exists()


def test_a_video_of_no_frames_is_named_so(tmp_path: Path) -> None:
    """A source video of 0 frames (an AVI a recorder stopped before its first frame) said 'no frame could be
    decoded', as a corrupt one would; it is said to hold no frames."""
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter.fourcc(*"MJPG"), 7.0, (64, 48)).release()
    with pytest.raises(
        SourceError, match=r"empty\.avi: the file holds no frames \(its container counts none\)$"
    ):
        build(empty, None, PRESETS["pets09-2cam-overlap"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_view_wider_than_eight_squares_gets_tiles_the_config_takes(tmp_path: Path) -> None:
    """A view more than 8.5 times as wide as high (a 1000x100 strip of a panorama) was cut into round(10) detector
    tiles across, and fleet.yaml was written with tiles [10, 1], which the config refuses (1 to 8): every fleet
    of the build failed to start. Tiles are as square as the bound allows (8 across)."""
    source = tmp_path / "strip.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter.fourcc(*"mp4v"), 7.0, (1000, 100))
    for _ in range(2):
        writer.write(np.full((100, 1000, 3), 128, np.uint8))
    writer.release()
    views = (ViewConfig(name="a", region=(0, 0, 1000, 100)), ViewConfig(name="b", region=(0, 0, 100, 100)))
    files = build(source, None, ScenarioConfig(name="strip", views=views), tmp_path / "out")
    cameras = load_settings(files.fleet_config).cameras
    assert cameras["a"].detector.tiles == (8, 1) and cameras["b"].detector.tiles == (1, 1)


@pytest.mark.parametrize(("sequence", "shielded"), [("MOT20-01", True), ("MOT17-02", False)])
def test_a_mot20_sequence_s_non_motorised_vehicles_stay_distractors_in_its_views(
    tmp_path: Path, sequence: str, shielded: bool
) -> None:
    """scenario build read its source gt by the MOT16/17 rule whatever the sequence: a MOT20 sequence's class-6
    rows (non-motorised vehicles, distractors in TrackEval's MOT20) were cut into the views as rows neither
    scored nor distractors, so a fleet on those views scored boxes on them as false positives. It reads them
    as `reid-daemon eval` does by default: by MOT20's rule for a MOT20 sequence's gt."""
    clip = make_video(tmp_path / "src.mp4", frames=6, size=(320, 240), people=2)
    gt_path = clip.write_mot_gt(tmp_path / "MOTX" / sequence / "gt" / "gt.txt")
    rows = gt_path.read_text(encoding="utf-8").splitlines()
    vehicle = rows[0].split(",")[1]  # the first person's rows become a non-motorised vehicle (class 6)
    gt_path.write_text(
        "".join(
            (r.replace(",1,1,1.0", ",0,6,1.0") if r.split(",")[1] == vehicle else r) + "\n" for r in rows
        ),
        encoding="utf-8",
    )
    two = ScenarioConfig(name="t", views=(ViewConfig(name="all", region=(0, 0, 320, 240)),))
    files = build(clip.path, gt_path, two, tmp_path / "out")
    view = read_ground_truth(files.ground_truth["all"])
    on_vehicle = view.track_id == int(vehicle)
    assert on_vehicle.any() and view.distractor is not None
    assert bool(view.distractor[on_vehicle].all()) is shielded
    assert not view.distractor[~on_vehicle].any()


def test_a_preset_on_a_smaller_video_lets_its_people_reach_a_new_id_s_quality(tmp_path: Path) -> None:
    """identity.quality_full_height_px (128) is in pixels: a box's size term is its height over it, and a track
    needs a best quality of new_min_quality (0.25) for a new global id. A preset built on PETS09-S2L1 at 320x240
    (its people ~31 px tall, their true boxes scored 0.5-1) left a quarter of its tracks without a global id on
    the true-box config (global IDF1 66 against 79 at 768x576). The presets' people are taken to scale with the
    frame, as the site settings are: the height counted as full is scaled by the frame's height."""
    from daemon.identity.quality import QualityParams, box_qualities

    handover = PRESETS["pets09-3cam-handover"]
    clip = make_video(tmp_path / "src.mp4", frames=2, size=(320, 240), people=1)
    files = build(clip.path, clip.write_mot_gt(tmp_path / "gt.txt"), handover, tmp_path / "small")
    for config in ("fleet.yaml", "fleet.gt-boxes.yaml"):
        cfg = load_settings(files.folder / config).identity
        assert cfg.quality_full_height_px == pytest.approx(128 * 240 / 576)
        # PETS09-S2L1's person 75 px tall of 576, here 31 px of 240, boxed at 0.75: worth a new id, as there
        box = np.array([[10, 100, 23, 131]], np.float32)
        quality = box_qualities(box, np.array([0.75]), (107, 240), QualityParams.from_config(cfg))
        assert quality[0] >= cfg.new_min_quality
    same = make_video(tmp_path / "pets.mp4", frames=2, size=(768, 576), people=1)
    pets = build(same.path, None, handover, tmp_path / "pets")
    assert load_settings(pets.fleet_config).identity.quality_full_height_px == 128  # PETS09-S2L1's own size


def test_a_video_too_small_for_a_preset_is_told_the_size_it_needs(tmp_path: Path) -> None:
    """A preset on a video too small for it said which scaled regions were under 16 px ('views.0: region (0, 0,
    13, 30) must be ... at least 16 px wide and high' on a 40x30 video), not how large a video it needs. It now
    says that too: the least width and height at which every view is 16 px a side or more at its scale."""
    clip = make_video(tmp_path / "tiny.mp4", frames=2, size=(40, 30), people=1)
    with pytest.raises(DataError, match=r"40x30 video: .*a video of at least 58x20 px \(this one is 40x30\)"):
        build(clip.path, None, PRESETS["pets09-3cam-handover"], tmp_path / "o")
    assert not (tmp_path / "o").exists()  # refused before anything is written
    short = make_video(tmp_path / "short.mp4", frames=2, size=(56, 20), people=1)
    with pytest.raises(DataError, match=r"at least 58x20 px \(this one is 56x20\)"):
        build(short.path, None, PRESETS["pets09-3cam-handover"], tmp_path / "o")
    fits = make_video(tmp_path / "fits.mp4", frames=2, size=(58, 20), people=1)
    files = build(fits.path, None, PRESETS["pets09-3cam-handover"], tmp_path / "fits")
    built = ScenarioConfig.model_validate(json.loads(files.description.read_text())["scenario"])
    assert min(min(v.scaled_size()) for v in built.views) == 16  # the least that fits: one view at 16 px
