"""How BoT-SORT's association treats scores, overlaps and looks: hand-built detections, one rule a test.

Looks are exact unit vectors so that cosine distances sit exactly on a threshold: E1 and each LOOK_AT[d] are
``d`` apart (1 - 0.75 = 0.25, 1 - 0.5 = 0.5), E2 is 1.0 from E1.
"""

from typing import Any

import numpy as np

from daemon.config import EmbedderConfig, TrackerConfig
from daemon.track import BotSortTracker
from daemon.types import Detections

IMG = np.zeros((480, 640, 3), np.uint8)
HOME = (100.0, 100.0, 140.0, 200.0)
NEAR = (116.0, 100.0, 156.0, 200.0)  # IoU 24/56 = 0.43 with HOME: IoU distance 0.57
EDGE = (121.0, 100.0, 161.0, 200.0)  # IoU 19/61 = 0.31 with HOME: IoU distance 0.69, within proximity_thresh
E1 = np.array([1, 0, 0, 0, 0], np.float32)
E2 = np.array([0, 1, 0, 0, 0], np.float32)
LOOK_AT = {
    0.25: np.array([0.75, 0.5, 0.25, 0.25, 0.25], np.float32),
    0.5: np.array([0.5, 0.5, 0.5, 0.5, 0.0], np.float32),
}
NO_LOOK = np.zeros(5, np.float32)


def _dets(boxes: list[tuple[float, float, float, float]], scores: list[float]) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32))


def _tracker(use_embeddings: bool = True, **cfg: Any) -> BotSortTracker:
    return BotSortTracker("cam", TrackerConfig(**cfg), EmbedderConfig(policy="all"), use_embeddings)


def _ids(
    t: BotSortTracker, boxes: list, scores: list[float], looks: list[np.ndarray] | None = None
) -> list[int]:
    emb = None if looks is None else np.stack(looks)
    u = t.update(_dets(boxes, scores), emb, IMG)
    return [tr.track_id for tr in sorted(u.tracks, key=lambda tr: tr.det_index)]


def _settled(t: BotSortTracker, look: np.ndarray | None = E1, frames: int = 4) -> None:
    """One person standing at HOME, confirmed as id 1."""
    for _ in range(frames):
        assert _ids(t, [HOME], [0.9], None if look is None else [look]) == [1]


def test_a_look_exactly_appearance_thresh_away_holds_a_track_geometry_alone_would_not() -> None:
    """NEAR is too far from HOME for match_thresh 0.55 on overlap alone (0.57), within proximity_thresh (0.7):
    only appearance can keep the id, and it may from up to appearance_thresh (0.25 here, inclusive) only."""
    for look, held in [(LOOK_AT[0.25], True), (LOOK_AT[0.5], False), (E2, False)]:
        t = _tracker(match_thresh=0.55)
        _settled(t)
        assert _ids(t, [NEAR], [0.9], [look]) == ([1] if held else []), look  # [] : 1 lost, a new track born
        assert _ids(t, [NEAR], [0.9], [look]) == ([1] if held else [2]), look


def test_appearance_thresh_is_the_configured_one() -> None:
    t = _tracker(match_thresh=0.55, appearance_thresh=0.5)
    _settled(t)
    assert _ids(t, [NEAR], [0.9], [LOOK_AT[0.5]]) == [1]


def test_appearance_cannot_reach_past_proximity_thresh() -> None:
    """The same look does not hold a track whose box is further than proximity_thresh from the detection."""
    t = _tracker(match_thresh=0.55, proximity_thresh=0.5, relink_window=0)
    _settled(t)
    assert _ids(t, [NEAR], [0.9], [E1]) == []
    assert _ids(t, [NEAR], [0.9], [E1]) == [2]


def test_a_box_not_embedded_on_a_frame_is_matched_on_overlap_alone() -> None:
    """With the `needed` policy most boxes carry no embedding (a zero row): such a box keeps its track where it
    overlaps enough, and no missing look makes it match where it does not."""
    for box in (NEAR, EDGE):  # IoU distance 0.57, 0.69 < match_thresh 0.8: the look's absence costs nothing
        t = _tracker()
        _settled(t)
        assert _ids(t, [box], [0.9], [NO_LOOK]) == [1], box
    t = _tracker(match_thresh=0.55)
    _settled(t)
    _ids(t, [NEAR], [0.9], [NO_LOOK])
    assert _ids(t, [NEAR], [0.9], [NO_LOOK]) == [2]


def test_a_reid_tracker_given_no_embeddings_tracks_on_overlap() -> None:
    """update(..., None) on a tracker that uses embeddings: nothing was embedded, tracks go on by motion."""
    t = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(policy="needed", refresh_every=100), True)
    for _ in range(3):
        assert _ids(t, [HOME, (300, 100, 340, 200)], [0.9, 0.9], None) == [1, 2]
    assert t.plan_embeddings(_dets([HOME], [0.9])).tolist() == [True]  # never embedded: due now


def test_one_odd_look_does_not_change_who_a_track_is() -> None:
    """Looks are smoothed over frames: after one embedding taken while someone else hid the person (E2), the
    track still goes by its own look (E1), so a box holding it stays 0.2 away, within appearance_thresh."""
    t = _tracker(match_thresh=0.55)
    _settled(t)
    assert _ids(t, [HOME], [0.9], [E2]) == [1]
    assert _ids(t, [NEAR], [0.9], [LOOK_AT[0.25]]) == [1]


def test_score_thresholds_decide_which_boxes_start_continue_or_are_ignored() -> None:
    """track_low_thresh < score < track_high_thresh: continues a track (second association) but never starts
    one; at or below track_low_thresh: ignored; a track starts from new_track_thresh (inclusive)."""
    cfg = {"track_high_thresh": 0.5, "track_low_thresh": 0.25, "new_track_thresh": 0.75}
    t = _tracker(False, **cfg)
    _settled(t, None)
    assert _ids(t, [HOME], [0.375]) == [1]
    assert _ids(t, [HOME], [0.125]) == []  # lost: a box below track_low_thresh is nobody
    assert _ids(t, [HOME], [0.9]) == [1]
    far = (400.0, 100.0, 440.0, 200.0)
    for score in (0.375, 0.625):  # above track_low_thresh, above track_high_thresh: neither starts a track
        t = _tracker(False, **cfg)
        for _ in range(3):
            assert _ids(t, [far], [score]) == []
    t = _tracker(False, **cfg)
    _ids(t, [far], [0.75])
    assert _ids(t, [far], [0.75]) == [1]


def test_a_box_scored_exactly_track_high_thresh_goes_to_the_first_association() -> None:
    """It continues its track as a confident box does (NEAR at IoU distance 0.57: within match_thresh 0.8, not
    within the low-score stage's 0.5), and is one that plan_embeddings embeds; it used to be dropped."""
    for score in (0.5, 0.625):
        t = _tracker(False, track_high_thresh=0.5)
        _settled(t, None)
        assert _ids(t, [NEAR], [score]) == [1], score
    t = BotSortTracker("cam", TrackerConfig(track_high_thresh=0.5), EmbedderConfig(), use_embeddings=True)
    assert t.plan_embeddings(_dets([HOME, NEAR], [0.5, 0.375])).tolist() == [True, False]


def test_a_low_score_box_must_overlap_more_than_a_confident_one() -> None:
    """The second (low-score) association asks an IoU distance under 0.5: NEAR's 0.57 passes for a confident
    box (match_thresh 0.8), not for a low-score one, which leaves the track lost."""
    t = _tracker(False)
    _settled(t, None)
    assert _ids(t, [NEAR], [0.3]) == []
    t = _tracker(False)
    _settled(t, None)
    assert _ids(t, [NEAR], [0.9]) == [1]


def test_match_thresh_is_the_configured_one() -> None:
    t = _tracker(False, match_thresh=0.5)
    _settled(t, None)
    assert _ids(t, [NEAR], [0.9]) == []


def test_fuse_first_associate_weighs_overlap_by_score() -> None:
    """Fused, NEAR at score 0.6 costs 1 - 0.43 * 0.6 = 0.74 (held under 0.8, lost under 0.7); unfused 0.57."""
    for fuse, thresh, expected in [(True, 0.8, [1]), (True, 0.7, []), (False, 0.7, [1])]:
        t = _tracker(False, match_thresh=thresh, fuse_first_associate=fuse)
        _settled(t, None)
        assert _ids(t, [NEAR], [0.6]) == expected, (fuse, thresh)


def _unconfirmed_at_home(look: np.ndarray) -> BotSortTracker:
    """A track born on frame 2 (so not confirmed at birth): 'anchor' far away holds frame 1."""
    t = _tracker()
    assert _ids(t, [(500.0, 300.0, 540.0, 400.0)], [0.9], [E2]) == [1]
    assert _ids(t, [(500.0, 300.0, 540.0, 400.0), HOME], [0.9, 0.9], [E2, look]) == [1]
    return t


def test_an_unconfirmed_track_is_confirmed_by_half_its_look_distance() -> None:
    """A track seen once is matched on its second frame by the score-fused overlap (NEAR at 0.6: 0.74, over the
    0.7 it needs) or by half its cosine distance under appearance_thresh: 0.5 away counts as 0.25, E2 does not."""
    anchor = (500.0, 300.0, 540.0, 400.0)
    for look, expected in [(LOOK_AT[0.5], [1, 2]), (E2, [1])]:
        t = _unconfirmed_at_home(E1)
        assert _ids(t, [anchor, NEAR], [0.9, 0.6], [E2, look]) == expected, look


def test_an_unconfirmed_track_without_a_look_on_its_second_frame_is_confirmed_on_overlap() -> None:
    t = _unconfirmed_at_home(E1)
    anchor = (500.0, 300.0, 540.0, 400.0)
    assert _ids(t, [anchor, HOME], [0.9, 0.9], [E2, NO_LOOK]) == [1, 2]
