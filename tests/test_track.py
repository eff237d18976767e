import itertools

import numpy as np
import pytest

from daemon.config import _UNUSED_SAID as said
from daemon.config import EmbedderConfig, TrackerConfig
from daemon.track import BotSortTracker
from daemon.types import Detections

IMG = np.zeros((480, 640, 3), np.uint8)


def _dets(*boxes: tuple[float, float, float, float], score: float = 0.9) -> Detections:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    return Detections(xyxy, np.full(len(xyxy), score, np.float32))


def _unit(rng: np.random.Generator, d: int = 16) -> np.ndarray:
    v = rng.normal(size=d).astype(np.float32)
    return v / np.linalg.norm(v)


def test_ids_are_stable_and_start_at_one() -> None:
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(), use_embeddings=False)
    ids = []
    for f in range(20):
        u = t.update(
            _dets((100 + 2 * f, 100, 140 + 2 * f, 200), (400 - 2 * f, 100, 440 - 2 * f, 200)), None, IMG
        )
        ids.append(sorted(tr.track_id for tr in u.tracks))
    assert ids[0] == [1, 2]
    assert all(i == [1, 2] for i in ids)
    assert u.tracks[0].key.startswith("cam/")


def test_ids_can_go_on_from_a_given_number() -> None:
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(), use_embeddings=False)
    t.number_from(13)
    u = t.update(_dets((100, 100, 140, 200), (400, 100, 440, 200)), None, IMG)
    assert sorted(tr.track_id for tr in u.tracks) == [13, 14]
    t.number_from(5)  # never back: an id once given is not given again
    for _ in range(3):  # a track that appears later is confirmed on its second frame
        u = t.update(_dets((100, 100, 140, 200), (400, 100, 440, 200), (250, 300, 290, 400)), None, IMG)
    assert sorted(tr.track_id for tr in u.tracks) == [13, 14, 15]


def test_ended_tracks_are_reported_once_after_buffer() -> None:
    cfg = TrackerConfig(track_buffer=5)
    t = BotSortTracker("cam", cfg, EmbedderConfig(), use_embeddings=False)
    for _ in range(3):
        t.update(_dets((100, 100, 140, 200)), None, IMG)
    ended: list[int] = []
    for _ in range(20):
        ended += t.update(Detections.empty(), None, IMG).ended
    assert ended == [1]
    assert t.finish() == []


def test_finish_ends_everything_alive() -> None:
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(), use_embeddings=False)
    t.update(_dets((10, 10, 50, 100), (200, 10, 240, 100)), None, IMG)
    assert t.finish() == [1, 2]


def test_plan_embeddings_policy() -> None:
    rng = np.random.default_rng(0)
    emb_cfg = EmbedderConfig(policy="needed", refresh_every=5)
    t = BotSortTracker("cam", TrackerConfig(), emb_cfg, use_embeddings=True)
    d = _dets((100, 100, 140, 200), (400, 100, 440, 200))
    first = t.plan_embeddings(d)
    assert first.tolist() == [True, True]  # nothing tracked yet: every box is new
    t.update(d, np.stack([_unit(rng), _unit(rng)]), IMG)
    plans = []
    for _ in range(6):
        need = t.plan_embeddings(d)
        plans.append(need.tolist())
        emb = np.zeros((2, 16), np.float32)
        emb[need] = np.stack([_unit(rng) for _ in range(int(need.sum()))]) if need.any() else emb[need]
        t.update(d, emb, IMG)
    assert plans[0] == [False, False]  # confidently tracked, fresh embedding: skip
    assert [True, True] in plans  # refreshed within refresh_every frames
    # a new person appears: only that box is embedded
    d3 = _dets((100, 100, 140, 200), (400, 100, 440, 200), (250, 300, 290, 400))
    assert t.plan_embeddings(d3).tolist()[2] is True
    # low-score boxes never need an embedding (BoT-SORT uses appearance only in the first association)
    low = Detections(d3.xyxy, np.array([0.9, 0.9, 0.2], np.float32))
    assert t.plan_embeddings(low).tolist()[2] is False


def test_policy_all_embeds_every_confident_box() -> None:
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(policy="all"), use_embeddings=True)
    d = _dets((100, 100, 140, 200), (120, 100, 160, 200))
    t.update(d, np.ones((2, 4), np.float32), IMG)
    assert t.plan_embeddings(d).tolist() == [True, True]


def test_overlapping_boxes_are_ambiguous() -> None:
    rng = np.random.default_rng(1)
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(refresh_every=1000), use_embeddings=True)
    d = _dets((100, 100, 140, 200), (300, 100, 340, 200))
    t.update(d, np.stack([_unit(rng), _unit(rng)]), IMG)
    close = _dets((100, 100, 140, 200), (125, 100, 165, 200))
    assert t.plan_embeddings(close).tolist() == [True, True]


def test_appearance_recovers_identity_after_crossing() -> None:
    """Two people swap sides while hidden; appearance (not motion) must keep their ids.

    Each comes back near the other's last place (IoU 0.43 with it) and clear of their own: their own track costs
    0 by look (proximity_thresh 1.0 lets looks reach anywhere), the other's 0.57 by overlap, so the swap is the
    cheaper assignment by far. (Coming back exactly on the other's last box would cost 0 by overlap too: the
    min fusion has no preference there, and an assignment between equal costs is not a test of appearance.)
    """
    rng = np.random.default_rng(2)
    a, b = _unit(rng), _unit(rng)
    cfg = TrackerConfig(track_buffer=30, proximity_thresh=1.0, appearance_thresh=0.25)
    t = BotSortTracker("cam", cfg, EmbedderConfig(policy="all"), use_embeddings=True)
    left, right = (100, 100, 140, 200), (300, 100, 340, 200)
    for _ in range(5):
        u = t.update(_dets(left, right), np.stack([a, b]), IMG)
    ids = {tr.det_index: tr.track_id for tr in u.tracks}
    for _ in range(3):
        t.update(Detections.empty(), np.zeros((0, 16), np.float32), IMG)
    near_left, near_right = (116, 100, 156, 200), (284, 100, 324, 200)
    u = t.update(_dets(near_left, near_right), np.stack([b, a]), IMG)
    swapped = {tr.det_index: tr.track_id for tr in u.tracks}
    assert swapped == {0: ids[1], 1: ids[0]}


def test_memory_stays_bounded_over_many_short_tracks() -> None:
    t = BotSortTracker("cam", TrackerConfig(track_buffer=3), EmbedderConfig(), use_embeddings=False)
    rng = np.random.default_rng(3)
    for f in range(600):
        x = float(rng.integers(0, 600))
        y = float(rng.integers(0, 400))
        t.update(_dets((x, y, x + 30, y + 60)) if f % 4 else Detections.empty(), None, IMG)
    assert len(t._hits) < 20
    assert len(t._bm.removed_stracks) <= 64
    assert len(t._bm.lost_stracks) < 20


def _run(
    t: BotSortTracker, frames: list[tuple[list[tuple[float, float, float, float]], list[np.ndarray]]]
) -> list:
    out = []
    for boxes, feats in frames:
        d = _dets(*boxes) if boxes else Detections.empty()
        emb = np.stack(feats) if feats else np.zeros((0, 16), np.float32)
        out.append(t.update(d, emb, IMG))
    return out


def test_relink_takes_back_a_lost_id_after_a_jump() -> None:
    """A person vanishes and reappears farther than IoU can bridge: appearance gives the old id back."""
    rng = np.random.default_rng(4)
    a = _unit(rng)
    cfg = TrackerConfig(track_buffer=10, relink_window=50)
    t = BotSortTracker("cam", cfg, EmbedderConfig(policy="all"), use_embeddings=True)
    before = _run(t, [([(100, 100, 140, 200)], [a])] * 4)
    gone = _run(t, [([], [])] * 5)
    back = _run(t, [([(200, 110, 240, 210)], [a])] * 3)
    assert before[-1].tracks[0].track_id == 1
    assert not any(u.tracks for u in gone)
    assert not back[0].tracks  # a new track is confirmed on its second frame (BoT-SORT)
    assert [u.tracks[0].track_id for u in back[1:]] == [1, 1]
    assert t.relinked == 1


def test_relink_refuses_other_looks_far_places_and_old_tracks() -> None:
    rng = np.random.default_rng(5)
    a, b = _unit(rng), _unit(rng)
    for feat, box, gap, window in [
        (b, (200, 110, 240, 210), 5, 50),  # different appearance
        (a, (600, 110, 640, 210), 1, 50),  # too far to have walked there in 1 + buffer frames
        (a, (200, 110, 240, 210), 40, 20),  # lost longer than the window
    ]:
        cfg = TrackerConfig(track_buffer=3, relink_window=window, relink_max_speed=0.2)
        t = BotSortTracker("cam", cfg, EmbedderConfig(policy="all"), use_embeddings=True)
        _run(t, [([(100, 100, 140, 200)], [a])] * 4)
        _run(t, [([], [])] * gap)
        back = _run(t, [([box], [feat])] * 2)
        assert back[-1].tracks[0].track_id == 2, (feat is a, box, gap)
        assert t.relinked == 0


def test_relink_never_gives_a_visible_id_twice() -> None:
    """Two look-alikes: while the first is on screen, the second cannot take its id (one id, one place)."""
    rng = np.random.default_rng(6)
    a = _unit(rng)
    cfg = TrackerConfig(track_buffer=30, relink_window=100)
    t = BotSortTracker("cam", cfg, EmbedderConfig(policy="all"), use_embeddings=True)
    _run(t, [([(100, 100, 140, 200)], [a])] * 4)
    ups = _run(t, [([(100, 100, 140, 200), (300, 100, 340, 200)], [a, a])] * 4)
    for u in ups:
        ids = [tr.track_id for tr in u.tracks]
        assert len(ids) == len(set(ids))


def test_predict_steps_tracks_without_losing_or_dropping_them() -> None:
    """Detections on even frames only: a new track is still confirmed and keeps its id; boxes move between."""
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(), use_embeddings=False)
    xs: list[float] = []
    for f in range(20):
        if f % 2 == 0:
            u = t.update(_dets((100 + 4 * f, 100, 140 + 4 * f, 200)), None, IMG)
        else:
            u = t.predict()
            assert all(tr.det_index == -1 and not tr.embedded for tr in u.tracks)
        assert u.ended == []
        if f >= 2:
            assert [tr.track_id for tr in u.tracks] == [1]
            xs.append(u.tracks[0].xyxy[0])
    assert all(a < b for a, b in itertools.pairwise(xs))  # moving right on every frame
    assert abs(xs[-1] - (100 + 4 * 19)) < 4  # the prediction keeps up with the walk


def test_predicted_frames_count_towards_the_lost_buffer() -> None:
    cfg = TrackerConfig(track_buffer=5)
    t = BotSortTracker("cam", cfg, EmbedderConfig(), use_embeddings=False)
    for _ in range(3):
        t.update(_dets((100, 100, 140, 200)), None, IMG)
    ended: list[int] = []
    for f in range(20):
        ended += (t.predict() if f % 2 else t.update(Detections.empty(), None, IMG)).ended
    assert ended == [1]


def _frames_until_ended(cfg: TrackerConfig) -> int:
    t = BotSortTracker("cam", cfg, EmbedderConfig(), use_embeddings=False)
    for _ in range(3):
        t.update(_dets((100, 100, 140, 200)), None, IMG)
    for lost in range(1, 10 * cfg.track_buffer):
        if t.update(Detections.empty(), None, IMG).ended:
            return lost
    raise AssertionError("the lost track never ended")


def test_a_lost_track_is_kept_exactly_track_buffer_frames() -> None:
    """track_buffer is in frames: BoxMOT's int(frame_rate / 30 * buffer) used to lose one to float rounding
    (configs/pets09.yaml's 60 frames at frame_rate 7 kept 59)."""
    for buffer in (
        1,
        5,
        60,
    ):  # kept through `buffer` lost frames; BoxMOT drops it after one more, we say so next
        assert _frames_until_ended(TrackerConfig(track_buffer=buffer)) == buffer + 2


def test_tracker_frame_rate_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Older configs set tracker.frame_rate; it has no effect now and says so instead of failing to load."""
    said.clear()
    with caplog.at_level("WARNING"):
        cfg = TrackerConfig(frame_rate=7, track_buffer=60)
        TrackerConfig(frame_rate=7)  # a config is validated more than once: said once a process
    assert caplog.text.count("tracker.frame_rate (7) has no effect") == 1
    assert _frames_until_ended(cfg) == _frames_until_ended(TrackerConfig(track_buffer=60))


def _panned_world() -> tuple[np.ndarray, list[int]]:
    """A site of solid shapes (what sparse optical flow finds corners on) and a camera panning across it in
    jumps: still for five frames, then 70 px to the right (more than a 40 px wide person moves, so IoU is 0)."""
    import cv2

    rng = np.random.default_rng(3)
    world = np.full((800, 1400, 3), 90, np.uint8)
    for _ in range(400):
        x, y = int(rng.integers(0, 1400)), int(rng.integers(0, 800))
        w, h = int(rng.integers(10, 80)), int(rng.integers(10, 80))
        cv2.rectangle(world, (x, y), (x + w, y + h), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    pans = list(itertools.accumulate(70 if f % 6 == 0 else 0 for f in range(30)))
    return world, pans


@pytest.mark.parametrize(("method", "kept"), [("none", False), ("sof", True)])
def test_camera_motion_compensation_keeps_people_standing_still_while_the_camera_pans(
    method: str, kept: bool
) -> None:
    """tracker.cmc_method was passed to BoxMOT untested: two people standing still while the camera jumps sideways
    by more than their width. Without compensation each jump ends both tracks and starts two more; with it
    (sparse optical flow) the tracks are moved with the picture and keep their ids."""
    world, pans = _panned_world()
    t = BotSortTracker("cam", TrackerConfig(cmc_method=method), EmbedderConfig(), use_embeddings=False)
    seen: set[int] = set()
    for pan in pans:
        view = np.ascontiguousarray(world[100:580, pan : pan + 640])
        boxes = [(x - pan, y, x - pan + 40, y + 100) for x, y in ((500, 300), (600, 320))]
        seen |= {tr.track_id for tr in t.update(_dets(*boxes), None, view).tracks}
    assert (seen == {1, 2}) is kept, sorted(seen)
    assert len(seen) >= 2 * (1 + sum(b > a for a, b in itertools.pairwise(pans))) or kept  # two per jump


@pytest.mark.parametrize("method", ["ecc", "orb", "sift", "sof"])
def test_the_configured_camera_motion_compensation_is_the_one_boxmot_runs(method: str) -> None:
    t = BotSortTracker("cam", TrackerConfig(cmc_method=method), EmbedderConfig(), use_embeddings=False)
    assert type(t._bm.cmc).__name__.lower() == method
    off = BotSortTracker("cam", TrackerConfig(cmc_method="none"), EmbedderConfig(), use_embeddings=False)
    assert off._bm.cmc is None
