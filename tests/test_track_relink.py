"""The relinker: a new track taking back a lost track's id by appearance, within reach and time. Hand-built
detections; looks are exact unit vectors (E1 and LOOK_25 are exactly 0.25 apart)."""

from typing import Any

import numpy as np

from daemon.config import EmbedderConfig, TrackerConfig
from daemon.track import BotSortTracker
from daemon.types import Detections

IMG = np.zeros((480, 640, 3), np.uint8)
P = (100.0, 100.0, 140.0, 200.0)  # centre (120, 150), 100 high
E1 = np.array([1, 0, 0, 0, 0], np.float32)
E2 = np.array([0, 1, 0, 0, 0], np.float32)
LOOK_25 = np.array([0.75, 0.5, 0.25, 0.25, 0.25], np.float32)
Box = tuple[float, float, float, float]


def _tracker(**cfg: Any) -> BotSortTracker:
    return BotSortTracker("cam", TrackerConfig(**cfg), EmbedderConfig(policy="all"), use_embeddings=True)


def _step(t: BotSortTracker, seen: list[tuple[Box, np.ndarray]]) -> dict[Box, int]:
    """One frame; the public id of each box reported on it."""
    boxes = [b for b, _ in seen]
    d = Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32))
    emb = np.stack([f for _, f in seen]) if seen else np.zeros((0, 5), np.float32)
    u = t.update(d, emb, IMG)
    return {boxes[tr.det_index]: tr.track_id for tr in u.tracks}


def _back_after(
    t: BotSortTracker, first: Box, look: np.ndarray, back: Box, back_look: np.ndarray, gap: int
) -> int:
    """``first`` seen on frames 1-4, nobody until the new track at ``back`` is reported: on frame 4 + gap (it
    is born the frame before). Its id."""
    for _ in range(4):
        assert _step(t, [(first, look)]) == {first: 1}
    for _ in range(gap - 2):
        _step(t, [])
    assert _step(t, [(back, back_look)]) == {}
    return _step(t, [(back, back_look)])[back]


def test_reach_is_speed_times_gap_plus_one_height_inclusive_and_counts_both_axes() -> None:
    """relink_max_speed 0.25 over 4 frames: (0.25 * 4 + 1) * 100 = 200 px. A centre 120 right and 160 down is
    exactly 200 away (taken back); one more pixel down is not."""
    for back, expected in [((220.0, 260.0, 260.0, 360.0), 1), ((220.0, 261.0, 260.0, 361.0), 2)]:
        t = _tracker(relink_max_speed=0.25)
        assert _back_after(t, P, E1, back, E1, gap=4) == expected, back


def test_reach_counts_in_the_larger_height() -> None:
    """Someone walking towards the camera: lost 50 px high, back 100 px high, 150 px away after 4 frames at
    0.25 heights a frame: within (0.25 * 4 + 1) * 100, not within the same in 50 px heights."""
    small = (100.0, 100.0, 120.0, 150.0)  # centre (110, 125)
    t = _tracker(relink_max_speed=0.25)
    assert _back_after(t, small, E1, (180.0, 195.0, 220.0, 295.0), E1, gap=4) == 1  # centre (200, 245)


def test_a_track_lost_exactly_relink_window_frames_ago_is_taken_back() -> None:
    far = (300.0, 100.0, 340.0, 200.0)
    for window, expected in [(4, 1), (3, 2)]:
        t = _tracker(relink_window=window)
        assert _back_after(t, P, E1, far, E1, gap=4) == expected, window


def test_a_look_exactly_relink_thresh_away_is_taken_back() -> None:
    far = (300.0, 100.0, 340.0, 200.0)
    for thresh, expected in [(0.25, 1), (0.24, 2)]:
        t = _tracker(relink_thresh=thresh)
        assert _back_after(t, P, E1, far, LOOK_25, gap=4) == expected, thresh


def test_the_closest_look_among_lost_tracks_takes_the_id() -> None:
    """Two people lost at once, both within reach and relink_thresh of the newcomer: the closer look wins."""
    a_box, b_box, back = P, (300.0, 100.0, 340.0, 200.0), (200.0, 250.0, 240.0, 350.0)
    near_a = np.array([1.2, 1.0, 0, 0, 0], np.float32) / np.float32(np.hypot(1.2, 1.0))
    near_b = np.array([1.0, 1.2, 0, 0, 0], np.float32) / np.float32(np.hypot(1.2, 1.0))
    for look, expected in [(near_a, 1), (near_b, 2)]:
        t = _tracker(relink_thresh=0.5)
        for _ in range(4):
            assert _step(t, [(a_box, E1), (b_box, E2)]) == {a_box: 1, b_box: 2}
        _step(t, [])
        _step(t, [(back, look)])
        assert _step(t, [(back, look)]) == {back: expected}


def test_a_lost_id_found_again_on_the_frame_a_look_alike_is_confirmed_is_not_given_twice() -> None:
    """1 is missed on frames 5-6 and found again in place on frame 7, the frame a look-alike elsewhere (born on
    frame 6) is confirmed: the look-alike cannot take 1, which is on screen."""
    other = (300.0, 100.0, 340.0, 200.0)
    t = _tracker()
    for _ in range(4):
        _step(t, [(P, E1)])
    _step(t, [])
    _step(t, [(other, E1)])
    assert _step(t, [(P, E1), (other, E1)]) == {P: 1, other: 2}


def test_a_lost_track_whose_id_was_taken_back_cannot_come_back_as_a_second_holder() -> None:
    """After the newcomer took 1 back, someone at the lost track's old place is a new person, not 1 again."""
    far = (300.0, 100.0, 340.0, 200.0)
    t = _tracker()
    assert _back_after(t, P, E1, far, E1, gap=4) == 1
    for _ in range(3):
        ids = _step(t, [(far, E1), (P, E2)])
        assert ids[far] == 1
        assert ids.get(P, 2) == 2


def test_two_look_alikes_confirmed_on_one_frame_do_not_both_take_a_lost_id() -> None:
    left, right = (220.0, 100.0, 260.0, 200.0), (300.0, 100.0, 340.0, 200.0)
    t = _tracker()
    for _ in range(4):
        _step(t, [(P, E1)])
    _step(t, [])
    _step(t, [(left, E1), (right, E1)])
    assert sorted(_step(t, [(left, E1), (right, E1)]).values()) == [1, 2]
    assert t.relinked == 1
