"""Replay detectors: det.txt replay, seeded ground-truth noise, and recording any detector to a det.txt."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _data import require_pets09_gt

from daemon.config import EmbedderConfig, GroundTruthDetectorConfig, MotFileDetectorConfig, TrackerConfig
from daemon.errors import DataError
from daemon.motio import MotGroundTruth, read_detections, read_ground_truth, xywh_to_xyxy
from daemon.replay_detect import (
    FALSE_SCORE_RANGE,
    TRUE_SCORE_RANGE,
    GroundTruthDetector,
    NoiseModel,
    build_replay_detector,
    write_detections,
)
from daemon.track import BotSortTracker
from daemon.types import Detections, Detector, Frame

WIDTH, HEIGHT = 768, 576
_IMAGE = np.zeros((HEIGHT, WIDTH, 3), np.uint8)


def _frame(index: int) -> Frame:
    return Frame(index=index, timestamp=index / 10, image=_IMAGE)


def _frames(n: int) -> list[Frame]:
    return [_frame(i) for i in range(n)]


def _small_gt() -> MotGroundTruth:
    return MotGroundTruth(
        frame=np.array([1, 1, 2, 3, 3], dtype=np.int64),
        track_id=np.array([1, 2, 1, 1, 2], dtype=np.int64),
        xywh=np.array(
            [[10, 20, 30, 60], [200, 50, 25, 70], [12, 21, 30, 60], [14, 22, 31, 61], [5, 5, 9, 9]], float
        ),
        consider=np.array([True, True, True, True, False]),
    )


def _same(a: Detections, b: Detections) -> bool:
    return np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.scores, b.scores)


# -------------------------------------------------------------------------------- det.txt replay


def test_det_file_replays_frame_index_plus_one_above_threshold(tmp_path: Path) -> None:
    det = tmp_path / "det.txt"
    det.write_text(
        "1,-1,10,20,30,40,0.9,-1,-1,-1\n1,-1,50,60,10,10,0.2,-1,-1,-1\n3,-1,1,2,3,4,0.5,-1,-1,-1\n"
    )
    detector = build_replay_detector(MotFileDetectorConfig(path=det, score_threshold=0.5))
    assert isinstance(detector, Detector)
    first = detector.detect(_frame(0))  # MOT frame 1
    np.testing.assert_array_equal(first.xyxy, [[10, 20, 40, 60]])
    np.testing.assert_allclose(first.scores, [0.9])
    assert len(detector.detect(_frame(1))) == 0  # MOT frame 2 has no rows
    np.testing.assert_array_equal(detector.detect(_frame(2)).xyxy, [[1, 2, 4, 6]])  # score 0.5 >= 0.5 is kept
    assert len(build_replay_detector(MotFileDetectorConfig(path=det)).detect(_frame(0))) == 2


def test_a_replayed_box_of_no_width_or_height_is_left_out_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A det.txt or gt.txt row of width 0 (some detectors write them), or one so far out that its corners are one
    float32, reached the tracker, whose BoxMOT boxes refuse x2 <= x1: `run` stopped with a traceback
    ('Boxes.values must satisfy x2 > x1 and y2 > y1'), the camera failed. Such boxes are left out, counted in
    one warning naming the file; the others are replayed as before, and the tracker takes them."""
    rows = "1,-1,10,20,30,40,0.9\n1,-1,50,60,0,40,0.9\n1,-1,1e30,60,20,40,0.9\n2,-1,5,6,7,0,0.8\n"
    det, gt = tmp_path / "det.txt", tmp_path / "gt.txt"
    det.write_text(rows)
    gt.write_text("1,1,10,20,30,40,1,1,1\n1,2,50,60,0,40,1,1,1\n1,3,1e30,60,20,40,1,1,1\n2,4,5,6,7,0,1,1,1\n")
    tracker = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(), use_embeddings=False)
    for cfg, path in ((MotFileDetectorConfig(path=det), det), (GroundTruthDetectorConfig(path=gt), gt)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="daemon.replay_detect"):
            detector = build_replay_detector(cfg)
        assert [r.getMessage() for r in caplog.records] == [
            f"{path}: 3 box(es) of no width or height (as the tracker reads them, float32) left out, the "
            "first on MOT frame 1"
        ]
        first, second = detector.detect(_frame(0)), detector.detect(_frame(1))
        np.testing.assert_array_equal(first.xyxy, [[10, 20, 40, 60]])
        assert len(second) == 0
        tracker.update(first, None, _IMAGE)
        tracker.update(second, None, _IMAGE)


def test_replayed_arrays_cannot_be_changed_by_a_consumer(tmp_path: Path) -> None:
    det = tmp_path / "det.txt"
    det.write_text("1,-1,10,20,30,40,0.9\n")
    boxes = build_replay_detector(MotFileDetectorConfig(path=det)).detect(_frame(0))
    with pytest.raises(ValueError, match="read-only"):
        boxes.xyxy[0, 0] = 0


def test_bad_det_file_raises_data_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "det.txt"
    bad.write_text("1,-1,10,20,30,40,0.9\n2,-1,10,20,-30,40,0.9\n")
    with pytest.raises(DataError, match=r"det\.txt, line 2: negative"):
        build_replay_detector(MotFileDetectorConfig(path=bad))
    with pytest.raises(DataError, match=r"missing\.txt: file not found"):
        build_replay_detector(MotFileDetectorConfig(path=tmp_path / "missing.txt"))
    with pytest.raises(DataError, match=r"gt\.txt: file not found"):
        build_replay_detector(GroundTruthDetectorConfig(path=tmp_path / "gt.txt"))


# -------------------------------------------------------------------------------- ground truth


def test_noiseless_ground_truth_is_reproduced_exactly() -> None:
    gt = _small_gt()
    detector = GroundTruthDetector(gt, NoiseModel())
    first = detector.detect(_frame(0))
    np.testing.assert_array_equal(first.xyxy, xywh_to_xyxy(gt.xywh[:2]))
    third = detector.detect(_frame(2))
    np.testing.assert_array_equal(third.xyxy, xywh_to_xyxy(gt.xywh[3:4]))  # the consider=0 row is left out
    assert len(detector.detect(_frame(10))) == 0
    scores = np.concatenate([first.scores, third.scores])
    assert ((scores >= TRUE_SCORE_RANGE[0]) & (scores < TRUE_SCORE_RANGE[1])).all()


@pytest.mark.shared_data
def test_noiseless_real_ground_truth_is_reproduced_exactly(tmp_path: Path) -> None:
    path = require_pets09_gt()
    gt = read_ground_truth(path).considered()
    detector = build_replay_detector(GroundTruthDetectorConfig(path=path))
    # Recorded to a det.txt, it holds exactly the considered gt boxes, frame by frame.
    write_detections(detector, _frames(795), tmp_path / "det.txt")
    replayed = read_detections(tmp_path / "det.txt")
    order = np.lexsort((gt.xywh[:, 1], gt.xywh[:, 0], gt.frame))
    back = np.lexsort((replayed.xywh[:, 1], replayed.xywh[:, 0], replayed.frame))
    np.testing.assert_array_equal(replayed.frame[back], gt.frame[order])
    np.testing.assert_allclose(replayed.xywh[back], gt.xywh[order], atol=5e-4)
    for i in (0, 100, 794):  # and in memory, bit for bit
        rows = gt.frame == i + 1
        np.testing.assert_array_equal(detector.detect(_frame(i)).xyxy, xywh_to_xyxy(gt.xywh[rows]))


def test_same_seed_same_boxes_whatever_the_call_order() -> None:
    noise = NoiseModel(jitter=0.1, drop_rate=0.3, false_positive_rate=1.5, seed=7)
    forward = [GroundTruthDetector(_small_gt(), noise).detect(f) for f in _frames(6)]
    one = GroundTruthDetector(_small_gt(), noise)
    backward = [one.detect(f) for f in reversed(_frames(6))][::-1]
    repeated = [one.detect(f) for f in _frames(6)]
    for a, b, c in zip(forward, backward, repeated, strict=True):
        assert _same(a, b) and _same(a, c)
    other = [
        GroundTruthDetector(_small_gt(), NoiseModel(0.1, 0.3, 1.5, seed=8)).detect(f) for f in _frames(6)
    ]
    assert not all(_same(a, b) for a, b in zip(forward, other, strict=True))


def test_drop_rate_does_not_move_the_jitter_of_kept_boxes() -> None:
    gt = _small_gt()
    full = GroundTruthDetector(gt, NoiseModel(jitter=0.2, seed=3))
    thin = GroundTruthDetector(gt, NoiseModel(jitter=0.2, drop_rate=0.5, seed=3))
    survivors = 0
    for frame in _frames(3):
        kept_all = full.detect(frame).xyxy
        for box in thin.detect(frame).xyxy:  # each survivor is one of the undropped boxes, unchanged
            assert any(np.array_equal(box, b) for b in kept_all)
            survivors += 1
    assert 0 < survivors < 4


def test_false_boxes_need_some_gt_sizes() -> None:
    empty = MotGroundTruth(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, bool))
    with pytest.raises(DataError, match="no considered gt boxes"):
        GroundTruthDetector(empty, NoiseModel(false_positive_rate=1.0), "empty.txt")
    assert len(GroundTruthDetector(empty, NoiseModel()).detect(_frame(0))) == 0


def test_false_boxes_fall_back_to_the_gt_extent_without_an_image() -> None:
    detector = GroundTruthDetector(_small_gt(), NoiseModel(false_positive_rate=5.0, seed=1))
    blank = Frame(index=4, timestamp=0.0, image=np.zeros((0, 0, 3), np.uint8))
    boxes = detector.detect(blank).xyxy
    assert len(boxes) > 0
    assert (boxes[:, 2] <= 225 + 1e-3).all() and (boxes[:, 3] <= 120 + 1e-3).all()  # far corner of the gt


def test_invalid_noise_models_are_refused() -> None:
    cases: list[dict[str, Any]] = [
        {"jitter": -0.1},
        {"drop_rate": 1.5},
        {"false_positive_rate": float("nan")},
        {"seed": -1},
    ]
    for bad in cases:
        with pytest.raises(ValueError):
            NoiseModel(**bad)


def _pets_run(**noise: float) -> tuple[list[Detections], list[Detections]]:
    """Every frame of PETS09 through a noisy and a noiseless ground-truth detector."""
    path = require_pets09_gt()
    noisy = build_replay_detector(GroundTruthDetectorConfig(path=path, seed=11, **noise))
    clean = build_replay_detector(GroundTruthDetectorConfig(path=path))
    frames = _frames(795)
    return [noisy.detect(f) for f in frames], [clean.detect(f) for f in frames]


@pytest.mark.shared_data
def test_observed_drop_rate_on_the_real_ground_truth() -> None:
    noisy, clean = _pets_run(drop_rate=0.3)
    kept, total = sum(len(d) for d in noisy), sum(len(d) for d in clean)
    assert total == 4476  # considered boxes
    # Binomial(4476, 0.7): the sd of the observed drop rate is 0.0068; allow 3 sd.
    assert abs(1 - kept / total - 0.3) < 0.021


@pytest.mark.shared_data
def test_false_boxes_on_the_real_ground_truth() -> None:
    noisy, clean = _pets_run(false_positive_rate=2.0)
    gt_sizes = read_ground_truth(require_pets09_gt()).considered().xywh[:, 2:]
    count = 0
    for out, truth in zip(noisy, clean, strict=True):
        assert _same(out.select(np.arange(len(truth))), Detections(truth.xyxy, out.scores[: len(truth)]))
        fake = out.select(np.arange(len(truth), len(out)))  # false boxes follow the true ones
        count += len(fake)
        assert (fake.xyxy[:, :2] >= 0).all() and (fake.xyxy[:, 2:] <= np.array([WIDTH, HEIGHT]) + 1e-3).all()
        for size in fake.xyxy[:, 2:] - fake.xyxy[:, :2]:  # a person size copied from the gt (float32 sums)
            assert np.abs(gt_sizes - size).max(axis=1).min() < 1e-3
        assert ((fake.scores >= FALSE_SCORE_RANGE[0]) & (fake.scores < FALSE_SCORE_RANGE[1])).all()
    # Poisson(2) per frame over 795 frames: the sd of the mean is 0.05; allow 3 sd.
    assert abs(count / 795 - 2.0) < 0.15


@pytest.mark.shared_data
def test_jitter_on_the_real_ground_truth() -> None:
    noisy, clean = _pets_run(jitter=0.1)
    out = np.concatenate([d.xyxy for d in noisy]).astype(np.float64)
    truth = np.concatenate([d.xyxy for d in clean]).astype(np.float64)
    size = truth[:, 2:] - truth[:, :2]
    d_centre = ((out[:, :2] + out[:, 2:]) - (truth[:, :2] + truth[:, 2:])) / 2 / size
    d_size = (out[:, 2:] - out[:, :2]) / size - 1
    # centre and size move by N(0, (0.1 * size)^2); 4476 boxes give each sd within a few percent
    for sd in (*d_centre.std(axis=0), *d_size.std(axis=0)):
        assert sd == pytest.approx(0.1, rel=0.06)
    assert abs(d_centre.mean()) < 0.01


# -------------------------------------------------------------------------------- recording


def test_recorded_detections_replay_identically(tmp_path: Path) -> None:
    noisy = GroundTruthDetector(_small_gt(), NoiseModel(jitter=0.05, drop_rate=0.2, false_positive_rate=1.0))
    path = tmp_path / "rec" / "det.txt"
    assert write_detections(noisy, _frames(4), path) == 4
    replay = build_replay_detector(MotFileDetectorConfig(path=path))
    for frame in _frames(4):
        live, again = noisy.detect(frame), replay.detect(frame)
        np.testing.assert_allclose(again.xyxy, live.xyxy, atol=1e-3)
        np.testing.assert_allclose(again.scores, live.scores, rtol=1e-5)


def test_a_strided_source_lines_up_with_the_det_file(tmp_path: Path) -> None:
    """The module said a source with stride > 1 no longer lines up with a det.txt; frames carry their position
    in the source (0, 3, 6, ...), so each is given its own frame's boxes."""
    from _video import make_video

    from daemon.config import SourceConfig
    from daemon.sources import open_source

    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(160, 120), people=2)
    det = clip.write_mot_gt(tmp_path / "det.txt")
    replay = build_replay_detector(MotFileDetectorConfig(path=det))
    with open_source(SourceConfig(uri=str(clip.path), stride=3)) as src:
        for frame in src:
            truth = sorted(b.xyxy for b in clip.truth[frame.index])
            np.testing.assert_allclose(sorted(map(tuple, replay.detect(frame).xyxy)), truth)


def test_a_det_txt_that_gave_no_box_is_said_to_for_what_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A det.txt whose every box has no width (some detectors write them) is left out box by box, and the run's
    warning then asked whether the file is of this video, a wrong lead; each reason is said as it is: scores
    under the threshold, boxes of no size, or frames the run did not reach."""
    from types import SimpleNamespace

    from daemon.cli import _warn_unused_detections
    from daemon.config import MotFileDetectorConfig

    flat, late = tmp_path / "flat.txt", tmp_path / "late.txt"
    flat.write_text("".join(f"{f},-1,10,20,0,80,0.9\n" for f in (1, 2, 3)))
    late.write_text("".join(f"{f},-1,10,20,30,80,0.9\n" for f in (500, 501)))
    ran = SimpleNamespace(detections=0, frames=100)
    said = []
    for path, threshold in ((flat, 0.0), (flat, 0.95), (late, 0.0)):
        caplog.clear()
        _warn_unused_detections(MotFileDetectorConfig(path=path, score_threshold=threshold), ran)
        said.append([r.getMessage() for r in caplog.records])
    assert said[0] == [
        f"{flat}: none of its 3 boxes scoring >= detector.score_threshold has a width and a height"
    ]
    assert said[1] == [f"{flat}: none of its 3 boxes scores >= detector.score_threshold"]
    assert said[2] == [
        f"{late}: none of its 2 boxes is on the 100 frames run (its frames are 500-501): is it of this video?"
    ]
