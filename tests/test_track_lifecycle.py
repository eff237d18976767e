"""A track's life in BotSortTracker: when it is reported, how predicted frames count, what is embedded, what
memory it leaves behind. Hand-built detections; embeddings as unit vectors."""

from typing import Any

import cv2
import numpy as np

from daemon.config import EmbedderConfig, TrackerConfig
from daemon.track import BotSortTracker
from daemon.types import Detections

IMG = np.zeros((480, 640, 3), np.uint8)
HOME = (100.0, 100.0, 140.0, 200.0)


def _dets(*boxes: tuple[float, float, float, float]) -> Detections:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    return Detections(xyxy, np.full(len(xyxy), 0.9, np.float32))


def _unit(rng: np.random.Generator, d: int = 8) -> np.ndarray:
    v = rng.normal(size=d).astype(np.float32)
    return v / np.linalg.norm(v)


def test_min_hits_reports_a_track_from_its_nth_detected_frame_and_on_predicted_frames_after() -> None:
    t = BotSortTracker("cam", TrackerConfig(min_hits=3), EmbedderConfig(), use_embeddings=False)
    reported = []
    for step in ("update", "update", "predict", "update", "predict", "update"):
        u = t.update(_dets(HOME), None, IMG) if step == "update" else t.predict()
        reported.append([tr.track_id for tr in u.tracks])
    assert reported == [[], [], [], [1], [1], [1]]


def _lost_frames_until_ended(cfg: TrackerConfig, predict_every_other: bool) -> int:
    t = BotSortTracker("cam", cfg, EmbedderConfig(), use_embeddings=False)
    for _ in range(3):
        t.update(_dets(HOME), None, IMG)
    for lost in range(1, 10 * cfg.track_buffer):
        predicted = predict_every_other and lost % 2 == 0
        if (t.predict() if predicted else t.update(Detections.empty(), None, IMG)).ended:
            return lost
    raise AssertionError("the lost track never ended")


def test_a_lost_track_ends_on_the_same_frame_whether_the_frames_between_were_detected_or_predicted() -> None:
    """track_buffer counts delivered frames: with detect_every 2 a lost track ends on the frame it would have
    ended on with every frame detected, whether that frame is a detected or a predicted one (a removal on a
    predicted frame was said a frame early: buffer 5 ended after 6 lost frames, not 7)."""
    for buffer in (4, 5):
        cfg = TrackerConfig(track_buffer=buffer)
        assert _lost_frames_until_ended(cfg, True) == _lost_frames_until_ended(cfg, False) == buffer + 2


def test_a_lost_track_keeps_moving_on_predicted_frames_and_is_found_where_the_walker_is() -> None:
    """A walker (10 px a frame, 40 px wide) is missed by the detector for 5 detection frames under detect_every
    2: the lost track goes on moving on the predicted frames too, so it is found again 11 frames later, 110 px on
    (had it stood still on the 5 predicted frames it would be 50 px behind, clear of the walker's box)."""
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(), use_embeddings=False)

    def box(f: int) -> tuple[float, float, float, float]:
        return (20.0 + 10 * f, 100.0, 60.0 + 10 * f, 200.0)

    ids = []
    for f in range(40):
        dets = Detections.empty() if 24 <= f < 34 else _dets(box(f))  # missed on frames 24-33
        u = t.predict() if f % 2 else t.update(dets, None, IMG)
        ids.append([tr.track_id for tr in u.tracks])
    assert ids[34:] == [[1]] * 6
    assert t.finish() == [1]


def test_a_track_just_born_and_one_coming_back_are_embedded() -> None:
    """`needed` embeds a box of a track seen once (its second frame: the unconfirmed stage uses looks) and a box
    where a lost track comes back (recovering), however fresh their last embedding."""
    rng = np.random.default_rng(0)
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(refresh_every=1000), use_embeddings=True)
    other = (400.0, 100.0, 440.0, 200.0)
    a, b = _unit(rng), _unit(rng)
    for _ in range(3):
        t.update(_dets(HOME), a[None], IMG)
    assert t.plan_embeddings(_dets(HOME)).tolist() == [False]
    t.update(_dets(HOME, other), np.stack([a, b]), IMG)  # `other` seen once: not confirmed yet
    assert t.plan_embeddings(_dets(HOME, other)).tolist() == [False, True]
    t.update(Detections.empty(), np.zeros((0, 8), np.float32), IMG)  # both lost
    assert t.plan_embeddings(_dets(HOME)).tolist() == [True]


def test_finish_ends_each_track_once() -> None:
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(), use_embeddings=False)
    t.update(_dets(HOME, (300, 100, 340, 200)), None, IMG)
    assert t.finish() == [1, 2]
    assert t.finish() == []


def test_memory_of_ended_tracks_stays_bounded_with_looks_and_relinking() -> None:
    """150 people, each seen 3 frames with a look of their own, then gone: every per-track table stays small."""
    cfg = TrackerConfig(track_buffer=3, relink_window=10)
    t = BotSortTracker("cam", cfg, EmbedderConfig(policy="all"), use_embeddings=True)
    rng = np.random.default_rng(3)
    for _ in range(150):
        x, y, look = float(rng.integers(0, 560)), float(rng.integers(0, 360)), _unit(rng)
        seen = [t.update(_dets((x, y, x + 40, y + 100)), look[None], IMG).tracks for _ in range(3)]
        assert seen[-1], "reported, so embedded and remembered"
        t.update(Detections.empty(), np.zeros((0, 8), np.float32), IMG)
    sizes = {
        "hits": len(t._hits),
        "last_embedded": len(t._last_embedded),
        "ids": len(t._ids._map),
        "relinker_last": len(t._relinker._last),
        "relinker_lost": len(t._relinker._lost),
    }
    assert max(sizes.values()) < 20, sizes


def test_a_fixed_camera_does_not_move_tracks_when_the_image_moves() -> None:
    """cmc_method 'none': the picture shifting (lights, a flag) does not warp the tracks' boxes."""
    rng = np.random.default_rng(4)
    blurred = cv2.GaussianBlur(rng.integers(0, 255, (480, 700), dtype=np.uint8), (0, 0), 6)
    texture = np.dstack([cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)] * 3)  # ECC follows this pan
    t = BotSortTracker("cam", TrackerConfig(cmc_method="none"), EmbedderConfig(), use_embeddings=False)
    for f in range(6):
        image = np.ascontiguousarray(texture[:, 12 * f : 12 * f + 640])
        u = t.update(_dets(HOME), None, image)
        assert [tr.track_id for tr in u.tracks] == [1]
        assert np.allclose(u.tracks[0].xyxy, HOME, atol=0.5)


def _settled_plan_tracker(*boxes: tuple[float, float, float, float], **embed: Any) -> BotSortTracker:
    """Tracks at ``boxes``, just embedded (refresh_every 1000: never stale here)."""
    rng = np.random.default_rng(1)
    t = BotSortTracker(
        "cam", TrackerConfig(), EmbedderConfig(refresh_every=1000, **embed), use_embeddings=True
    )
    looks = np.stack([_unit(rng) for _ in boxes])
    for _ in range(3):
        u = t.update(_dets(*boxes), looks, IMG)
    assert sorted(tr.track_id for tr in u.tracks) == list(range(1, len(boxes) + 1))
    return t


def test_a_box_overlapping_its_track_by_less_than_half_is_embedded() -> None:
    """IoU with the best tracked box under 0.5: maybe someone new or someone recovering, so embedded; from 0.5
    on (the box's top half, 2000 / 4000, exactly) it is that track's."""
    t = _settled_plan_tracker(HOME)
    for box, needed in [
        ((100.0, 100.0, 140.0, 140.0), True),  # IoU 0.4
        ((100.0, 100.0, 140.0, 150.0), False),  # 0.5
        ((100.0, 100.0, 140.0, 160.0), False),  # 0.6
    ]:
        assert t.plan_embeddings(_dets(box)).tolist() == [needed], box


def test_a_box_is_ambiguous_above_ambiguity_iou_with_a_second_track_or_another_box() -> None:
    """Tracks at HOME and 24 px right of it overlap by IoU exactly 0.25 (16 / 64): with ambiguity_iou 0.25
    their own boxes are not ambiguous (neither the second track nor the other box is above it); a box on HOME
    alone beside a track 20 px right of it (IoU 0.33) is, for the second track alone."""
    beside = (124.0, 100.0, 164.0, 200.0)
    t = _settled_plan_tracker(HOME, beside, ambiguity_iou=0.25)
    assert t.plan_embeddings(_dets(HOME, beside)).tolist() == [False, False]
    closer = (120.0, 100.0, 160.0, 200.0)
    t = _settled_plan_tracker(HOME, closer, ambiguity_iou=0.25)
    assert t.plan_embeddings(_dets(HOME)).tolist() == [True]
