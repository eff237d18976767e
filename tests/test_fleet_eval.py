"""Fleet scoring: global-id metrics over cameras laid end to end, merges, splits, cross-camera consistency."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from daemon.evaluate import MotMetrics
from daemon.fleet_eval import (
    Bound,
    CameraRun,
    FleetMetrics,
    TimedTruth,
    concatenate,
    evaluate_fleet,
    matches,
    merge_sources,
    merge_split_counts,
    perfect_ids,
    seen_at_once,
)
from daemon.motio import MotGroundTruth, MotTracks


def _walk(people: list[int], frames: int, x0: float = 0.0) -> MotGroundTruth:
    rows = [
        (f + 1, p, x0 + 60 * i + f, 50.0, 30.0, 60.0) for f in range(frames) for i, p in enumerate(people)
    ]
    a = np.asarray(rows)
    return MotGroundTruth(
        a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2:6], np.ones(len(a), bool)
    )


def _as_results(gt: MotGroundTruth, ids: dict[int, int]) -> MotTracks:
    tid = np.asarray([ids[int(p)] for p in gt.track_id], np.int64)
    return MotTracks(gt.frame.copy(), tid, gt.xywh.copy(), np.ones(len(gt)))


def _runs(ids_a: dict[int, int], ids_b: dict[int, int]) -> dict[str, CameraRun]:
    a, b = _walk([1, 2], 20), _walk([1, 2], 20, x0=100)
    return {
        "a": CameraRun(a, None, _as_results(a, ids_a), 20),
        "b": CameraRun(b, None, _as_results(b, ids_b), 20),
    }


def test_one_global_id_per_person_everywhere_is_perfect() -> None:
    m = evaluate_fleet(_runs({1: 10, 2: 11}, {1: 10, 2: 11}))
    assert pytest.approx(100.0) == m.global_metrics.IDF1
    assert m.false_merge_pct == 0 and m.merged_ids == 0 and m.split_people == 0
    assert m.people_on_several_cameras == 2 and m.cross_camera_consistency == 1.0
    assert set(m.per_camera) == {"a", "b"} and pytest.approx(100.0) == m.per_camera["a"].IDF1


def test_new_ids_on_the_second_camera_are_splits_and_cost_global_idf1() -> None:
    m = evaluate_fleet(_runs({1: 10, 2: 11}, {1: 20, 2: 21}))
    assert pytest.approx(100.0) == m.per_camera["b"].IDF1  # tracking within the camera is fine
    assert pytest.approx(50.0) == m.global_metrics.IDF1
    assert m.split_people == 2 and m.cross_camera_consistency == 0.0 and m.false_merge_pct == 0


def test_the_text_says_when_nobody_was_seen_on_several_cameras() -> None:
    # Regression: it said "100% of 0 people seen on several cameras keep one global id".
    a = _walk([1, 2], 20)
    m = evaluate_fleet({"a": CameraRun(a, None, _as_results(a, {1: 10, 2: 11}), 20)})
    assert m.people_on_several_cameras == 0 and m.cross_camera_consistency is None  # not measurable
    assert "nobody was seen on several cameras" in m.text() and "of 0 people" not in m.text()
    # Regression: the dict (fleet_metrics.json) gave 1.0 there, as if every such person kept one id
    assert m.as_dict()["cross_camera_consistency"] is None
    assert "2 people seen on several cameras keep" in evaluate_fleet(_runs({1: 1, 2: 2}, {1: 1, 2: 2})).text()


def test_two_people_under_one_id_are_a_merge() -> None:
    m = evaluate_fleet(_runs({1: 10, 2: 11}, {1: 12, 2: 10}))  # on b, person 2 takes person 1's id
    assert m.merged_ids == 1
    assert m.false_merge_pct == pytest.approx(
        100 * 20 / 80
    )  # person 2's 20 boxes on b sit under person 1's id
    assert m.global_metrics.IDF1 < 100


def test_an_ignored_person_under_another_person_s_id_is_no_merge() -> None:
    # Person 1 (considered) in frames 1-10, then person 2, a consider=0 row, in frames 11-20, both under id 10.
    # Ignored rows are matched by nobody: no false merge, no merged id, and the box on person 2 is removed as a
    # distractor's (no false positive) in the global scores too, as in the camera's.
    a = _walk([1], 20)
    ignored = a.frame > 10
    gt = MotGroundTruth(a.frame, np.where(ignored, 2, 1).astype(np.int64), a.xywh, ~ignored)
    run = CameraRun(gt, None, _as_results(a, {1: 10}), 20)
    assert matches(gt, run.global_ids) == [(f, 1, 10) for f in range(1, 11)]
    m = evaluate_fleet({"a": run}, min_support=5)
    assert (m.matched_boxes, m.false_merge_pct, m.merged_ids, m.split_people) == (10, 0.0, 0, 0)
    assert (m.global_metrics.TP, m.global_metrics.FP, m.global_metrics.Dets) == (10, 0, 10)
    assert m.per_camera["a"].FP == 0


def test_a_box_the_scores_drop_on_an_ignored_row_is_no_match_of_the_merges() -> None:
    # Person 1 (considered) at x = f in frames 1-20, beside an ignored row (consider=0) 2 px to the right in
    # frames 11-20. Id 10 is on person 1 in frames 1-10; id 20 sits exactly on the ignored row in 11-20. Its box
    # overlaps person 1 at IoU 160 / 240 = 0.67 too, but the distractor rule matches it to the ignored row
    # (IoU 1): the scores drop it (no TP, no FP, person 1 a miss). The merges drop it by the same rule, so
    # person 1 is not under id 20 (no split) and the merges' matched boxes are the scores' TP.
    person = _walk([1], 20)
    late = person.frame > 10
    ignored = MotGroundTruth(
        person.frame[late], np.full(10, 2, np.int64), person.xywh[late] + [2.0, 0, 0, 0], np.zeros(10, bool)
    )
    gt = MotGroundTruth(
        np.concatenate([person.frame, ignored.frame]),
        np.concatenate([person.track_id, ignored.track_id]),
        np.concatenate([person.xywh, ignored.xywh]),
        np.concatenate([person.consider, ignored.consider]),
    )
    pred = MotTracks(
        np.concatenate([person.frame[~late], ignored.frame]),
        np.repeat(np.asarray([10, 20], np.int64), 10),
        np.concatenate([person.xywh[~late], ignored.xywh]),
        np.ones(20),
    )
    assert matches(gt, pred) == [(f, 1, 10) for f in range(1, 11)]
    m = evaluate_fleet({"a": CameraRun(gt, pred, pred, 20)}, min_support=5)
    cam, g = m.per_camera["a"], m.global_metrics
    assert (cam.TP, cam.FP, cam.FN, g.TP, g.FP, g.FN) == (10, 0, 10, 10, 0, 10)
    assert (m.matched_boxes, m.split_people, m.false_merge_pct) == (10, 0, 0.0)


def test_the_support_threshold_counts_exactly_min_support_boxes() -> None:
    # Exactly min_support boxes count: person 1 under id 5 on a and id 6 on b (a split, seen on two cameras,
    # not consistent), person 2 and 3 under id 7 on a (a merge of 10 of 20 boxes: 10 wrong ones).
    pairs = {"a": [(1, 5)] * 10 + [(2, 7)] * 10 + [(3, 7)] * 10, "b": [(1, 6)] * 10}
    matched, pct, merged, split, several, consistency = merge_split_counts(pairs, min_support=10)
    assert (matched, merged, split, several, consistency) == (40, 1, 1, 1, 0.0)
    assert pct == pytest.approx(100 * 10 / 40)
    # one box fewer on b: person 1 is no longer seen there (nor split); the merge on a stays
    pairs["b"] = [(1, 6)] * 9
    assert merge_split_counts(pairs, min_support=10)[2:] == (1, 0, 0, None)


def test_a_person_seen_on_one_camera_only_keeps_the_consistency_of_nobody() -> None:
    # A few boxes (under min_support) on a second camera do not make a person seen there; with nobody seen on
    # two cameras the consistency is None (not measurable), as the text says "nobody was seen ...".
    pairs = {"a": [(1, 5)] * 12, "b": [(1, 6)] * 3}
    assert merge_split_counts(pairs, min_support=10)[2:] == (0, 0, 0, None)


def test_evaluate_fleet_leaves_out_flickers_under_ten_boxes_by_default() -> None:
    # on b, person 1 is under id 20 for 3 frames (a flicker), else id 10: no split at the default min_support
    # of 10; with min_support 3 it is one
    runs = _runs({1: 10, 2: 11}, {1: 10, 2: 11})
    b = runs["b"]
    ids = np.where((b.gt.track_id == 1) & (b.gt.frame <= 3), 20, b.global_ids.track_id).astype(np.int64)
    runs["b"] = CameraRun(b.gt, None, MotTracks(b.gt.frame, ids, b.gt.xywh, np.ones(len(ids))), 20)
    assert evaluate_fleet(runs).split_people == 0
    assert evaluate_fleet(runs, min_support=3).split_people == 1


def test_the_per_camera_scores_are_the_camera_s_own_tracks() -> None:
    # Camera tracks clean (one per person), but the fleet changed person 1's global id mid-view on b: the
    # camera's tracking is perfect, the switch is the global ids' (IDSW 1 there).
    runs = _with_local(_runs({1: 10, 2: 11}, {1: 10, 2: 11}), {"a": {1: 1, 2: 2}, "b": {1: 1, 2: 2}})
    b = runs["b"]
    ids = np.where((b.gt.track_id == 1) & (b.gt.frame > 10), 30, b.global_ids.track_id).astype(np.int64)
    runs["b"] = CameraRun(b.gt, b.local, MotTracks(b.gt.frame, ids, b.gt.xywh, np.ones(len(ids))), 20)
    m = evaluate_fleet(runs)
    assert pytest.approx(100.0) == m.per_camera["b"].IDF1 and m.per_camera["b"].IDSW == 0
    assert m.global_metrics.IDSW == 1 and m.global_metrics.IDF1 < 100


def test_concatenate_shifts_frames_past_earlier_cameras() -> None:
    gt, pred, frames = concatenate(_runs({1: 1, 2: 2}, {1: 1, 2: 2}))
    assert frames == 40 and gt.frame.min() == 1 and gt.frame.max() == 40 and pred.frame.max() == 40


def test_concatenate_keeps_a_classed_gt_s_distractors() -> None:
    """Laid end to end, a MOT17 gt's car (not scored, a box on it a false positive) stays apart from the other
    camera's ignored row (a distractor, as every row not considered is in a MOT15 gt)."""
    mot17 = MotGroundTruth(
        np.array([1, 1]), np.array([1, 4]), np.ones((2, 4)), np.array([True, False]), np.zeros(2, bool)
    )
    mot15 = MotGroundTruth(np.array([1]), np.array([2]), np.ones((1, 4)), np.array([False]))
    runs = {n: CameraRun(g, None, MotTracks.empty(), 3) for n, g in (("a", mot17), ("b", mot15))}
    gt, _, _ = concatenate(runs)
    assert gt.frame.tolist() == [1, 1, 4] and gt.distractors().tolist() == [False, False, True]


def test_support_threshold_ignores_flickers() -> None:
    pairs = {"a": [(1, 5)] * 30 + [(1, 6)] * 3, "b": [(1, 5)] * 12}
    matched, pct, merged, split, several, consistent = merge_split_counts(pairs, min_support=10)
    assert (matched, merged, split, several, consistent) == (45, 0, 0, 2 - 1, 1.0)
    assert pct == 0.0


def _with_local(runs: dict[str, CameraRun], local: dict[str, dict[int, int]]) -> dict[str, CameraRun]:
    return {
        name: CameraRun(run.gt, _as_results(run.gt, local[name]), run.global_ids, run.frames)
        for name, run in runs.items()
    }


def test_bounds_need_the_cameras_own_tracks() -> None:
    m = evaluate_fleet(_runs({1: 10, 2: 11}, {1: 10, 2: 11}))
    assert m.unmatched is None and m.perfect is None and m.as_dict()["bounds"] == {}


def test_bounds_score_no_matching_and_a_perfect_resolver_on_the_same_tracks() -> None:
    # clean camera tracks (one per person per camera), but the fleet gave b new ids: the resolver's fault
    runs = _with_local(_runs({1: 10, 2: 11}, {1: 20, 2: 21}), {"a": {1: 1, 2: 2}, "b": {1: 1, 2: 2}})
    m = evaluate_fleet(runs)
    assert m.unmatched is not None and m.perfect is not None
    assert pytest.approx(50.0) == m.unmatched.IDF1 and m.unmatched.false_merge_pct == 0
    assert pytest.approx(100.0) == m.perfect.IDF1 and m.perfect.false_merge_pct == 0
    assert "perfect whole-track resolver: IDF1 100.0" in m.text()
    assert m.as_dict()["bounds"]["unmatched"]["IDF1"] == pytest.approx(50.0)


def test_a_track_that_switches_people_is_a_merge_no_whole_track_resolver_undoes() -> None:
    a = _walk([1, 2], 20)
    # camera a's track 7 follows person 1 for 14 frames, then person 2 for 6 (an id switch); track 8 the rest
    local_ids = np.where(a.frame <= 14, np.where(a.track_id == 1, 7, 8), np.where(a.track_id == 2, 7, 8))
    local = MotTracks(a.frame.copy(), local_ids.astype(np.int64), a.xywh.copy(), np.ones(len(a)))
    runs = {"a": CameraRun(a, local, _as_results(a, {1: 10, 2: 11}), 20)}
    m = evaluate_fleet(runs)
    assert m.perfect is not None and m.unmatched is not None
    assert m.perfect.false_merge_pct == pytest.approx(
        100 * 12 / 40
    )  # 6 frames x 2 tracks on the wrong person
    assert m.unmatched.false_merge_pct == pytest.approx(m.perfect.false_merge_pct)
    assert m.false_merge_pct == 0  # the global ids given here followed the people through the switch


def test_perfect_ids_keep_one_row_per_id_and_frame() -> None:
    a = _walk([1, 2], 10)
    # track 3: person 1 in frames 1-6, person 2 in 7-10; track 4: person 2 in 1-2, person 1 in 7-10; track 5:
    # person 2 in 3-6. Tracks 3 and 4 both mostly follow person 1 and share frames 1-2 and 7-10.
    who = {
        (f, p): (3 if f <= 6 else 4) if p == 1 else (4 if f <= 2 else 5 if f <= 6 else 3)
        for f in range(1, 11)
        for p in (1, 2)
    }
    local_ids = np.asarray(
        [who[(int(f), int(p))] for f, p in zip(a.frame, a.track_id, strict=True)], np.int64
    )
    local = MotTracks(a.frame.copy(), local_ids, a.xywh.copy(), np.ones(len(a)))
    ids = perfect_ids(a, local, index=0)
    assert len(set(zip(a.frame.tolist(), ids.tolist(), strict=True))) == len(ids)  # no id twice in a frame
    on_person_1 = ids[a.track_id == 1]
    assert (on_person_1 == 1).all()  # the first row of the frame keeps the person: here always person 1's box
    assert (
        ids[(a.track_id == 2) & (a.frame != 3) & (a.frame != 4) & (a.frame != 5) & (a.frame != 6)] > 2
    ).all()
    # the same tracks on the second camera: the same people's ids, but ids of their own no other camera holds
    # (else two cameras' unrelated tracks would be one id in the bound)
    second = perfect_ids(a, local, index=1)
    assert ((second <= 2) == (ids <= 2)).all() and (second[ids <= 2] == ids[ids <= 2]).all()
    assert not set(ids[ids > 2].tolist()) & set(second[second > 2].tolist())


def test_the_perfect_bound_s_own_ids_never_take_a_person_s_id() -> None:
    # Camera a (the first camera): person 1 followed by track 5 over 10 frames; a false track with the camera id
    # 1 (a person's id too) beside it in frames 1-5, its rows first. The perfect resolver gives track 5 person
    # 1's id and keeps the false track under an id of its own, which is no person's: person 1 is under one id.
    a = _walk([1], 10)
    false_rows = [(f, 1, 400.0, 50.0, 30.0, 60.0) for f in range(1, 6)]
    real_rows = [(int(f), 5, *map(float, b)) for f, b in zip(a.frame, a.xywh, strict=True)]
    rows = np.asarray(sorted(false_rows + real_rows, key=lambda r: (r[0], r[1])))
    local = MotTracks(
        rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 2:6], np.ones(len(rows))
    )
    ids = perfect_ids(a, local, index=0)
    assert set(ids[local.track_id == 5].tolist()) == {1}
    assert 1 not in set(ids[local.track_id == 1].tolist())
    m = evaluate_fleet({"a": CameraRun(a, local, local, 10)})
    assert m.perfect is not None and pytest.approx(100 * 2 * 10 / (10 + 15)) == m.perfect.IDF1


def _switching_track(frames: int = 20, at: int = 14) -> tuple[MotGroundTruth, MotTracks]:
    """Camera tracks over people 1 and 2: track 7 follows person 1 up to frame ``at``, then person 2."""
    a = _walk([1, 2], frames)
    ids = np.where(a.frame <= at, np.where(a.track_id == 1, 7, 8), np.where(a.track_id == 2, 7, 8))
    return a, MotTracks(a.frame.copy(), ids.astype(np.int64), a.xywh.copy(), np.ones(len(a)))


def test_merges_are_split_between_the_trackers_switches_and_the_resolver() -> None:
    a, local_a = _switching_track()
    b = _walk([1, 2], 20, x0=100)
    local_b = _as_results(b, {1: 1, 2: 2})
    # camera a: each track keeps one global id through the switch (the tracker's error carried on);
    # camera b: clean tracks, but person 2 is given person 1's id (the resolver's error)
    global_a = MotTracks(local_a.frame, np.where(local_a.track_id == 7, 10, 11), local_a.xywh, local_a.conf)
    runs = {
        "a": CameraRun(a, local_a, global_a, 20),
        "b": CameraRun(b, local_b, _as_results(b, {1: 10, 2: 10 + 100}), 20),
    }
    by = merge_sources(runs)
    assert by is not None
    trackers, resolver = by
    # id 10 mostly follows person 1 (14 + 20 + 6 boxes of person 1 against 6 of person 2 on a); id 11 is
    # person 2's (14) over person 1's 6: 12 boxes of 80 on switched tracks, none by the resolver here
    assert trackers == pytest.approx(100 * 12 / 80) and resolver == 0.0
    m = evaluate_fleet(runs)
    assert m.false_merge_pct == pytest.approx(trackers + resolver)
    assert m.merges_by == by and "trackers' id switches" in m.text()
    # camera b instead sees person 2 alone for 5 frames, on a clean track given id 10 (person 1's)
    b2 = _walk([2], 5, x0=100)
    runs["b"] = CameraRun(b2, _as_results(b2, {2: 1}), _as_results(b2, {2: 10}), 5)
    m = evaluate_fleet(runs)
    assert m.merges_by is not None
    assert m.merges_by == pytest.approx((100 * 12 / 45, 100 * 5 / 45))
    assert m.false_merge_pct == pytest.approx(sum(m.merges_by))
    assert m.as_dict()["false_merge_pct_by"]["resolver"] == pytest.approx(100 * 5 / 45)


def test_a_merged_box_no_camera_track_holds_is_the_resolver_s() -> None:
    # On camera a, person 2's boxes of frames 1-4 are under person 1's id 10, and no camera track is on them
    # there (the camera's tracks start at frame 5): no tracker's switch carried them, so they count as the
    # resolver's (4 of 40 boxes), none as the trackers'.
    a = _walk([1, 2], 20)
    local = _as_results(a, {1: 1, 2: 2}).select(a.frame > 4)
    global_ids = np.where((a.track_id == 2) & (a.frame <= 4), 10, np.where(a.track_id == 1, 10, 11))
    runs = {
        "a": CameraRun(a, local, MotTracks(a.frame, global_ids.astype(np.int64), a.xywh, np.ones(40)), 20)
    }
    assert merge_sources(runs) == pytest.approx((0.0, 100 * 4 / 40))


def test_a_fleet_that_matched_nobody_has_no_false_merges() -> None:
    # every box far from everyone: nothing matched, so no share of false merges (not 100 %), by nobody
    a = _walk([1, 2], 5)
    away = MotTracks(a.frame, a.track_id, a.xywh + np.array([500.0, 0.0, 0.0, 0.0]), np.ones(len(a)))
    m = evaluate_fleet({"a": CameraRun(a, away, away, 5)})
    assert (m.matched_boxes, m.false_merge_pct, m.merges_by) == (0, 0.0, (0.0, 0.0))
    assert m.perfect is not None and m.perfect.false_merge_pct == 0.0


def test_merge_sources_need_the_cameras_own_tracks() -> None:
    assert merge_sources(_runs({1: 10, 2: 11}, {1: 10, 2: 11})) is None
    assert evaluate_fleet(_runs({1: 10, 2: 11}, {1: 10, 2: 11})).as_dict()["false_merge_pct_by"] == {}


def test_rows_past_a_cameras_frames_are_not_scored_on_the_next_camera() -> None:
    # Regression: laid end to end, camera a's rows past its 20 frames landed on camera b's first frames and
    # were scored there (a false positive on b, here on b's person under a's id); a camera alone left them out.
    runs = _runs({1: 10, 2: 11}, {1: 10, 2: 11})
    a = runs["a"]
    stray = MotTracks(np.array([22]), np.array([10]), np.array([[102.0, 50.0, 30.0, 60.0]]), np.ones(1))
    late = MotTracks(
        np.concatenate([a.global_ids.frame, stray.frame]),
        np.concatenate([a.global_ids.track_id, stray.track_id]),
        np.concatenate([a.global_ids.xywh, stray.xywh]),
        np.concatenate([a.global_ids.conf, stray.conf]),
    )
    runs["a"] = CameraRun(a.gt, None, late, a.frames)
    m = evaluate_fleet(runs)
    assert pytest.approx(100.0) == m.per_camera["a"].IDF1
    assert pytest.approx(100.0) == m.global_metrics.IDF1 and m.global_metrics.FP == 0
    assert m.false_merge_pct == 0


def test_a_camera_s_own_rows_past_its_frames_are_not_scored_in_the_bounds() -> None:
    # As for the global ids: camera a's own track with a row at frame 22, past its 20 frames, would land on
    # camera b's person 1 in the bounds laid end to end (a false positive there).
    runs = _with_local(_runs({1: 10, 2: 11}, {1: 10, 2: 11}), {"a": {1: 1, 2: 2}, "b": {1: 1, 2: 2}})
    a = runs["a"]
    assert a.local is not None
    late = MotTracks(
        np.concatenate([a.local.frame, [22]]),
        np.concatenate([a.local.track_id, [1]]),
        np.concatenate([a.local.xywh, [[102.0, 50.0, 30.0, 60.0]]]),
        np.ones(len(a.local) + 1),
    )
    runs["a"] = CameraRun(a.gt, late, a.global_ids, a.frames)
    m = evaluate_fleet(runs)
    assert m.perfect is not None and m.unmatched is not None
    assert pytest.approx(100.0) == m.perfect.IDF1 and pytest.approx(50.0) == m.unmatched.IDF1
    assert pytest.approx(100.0) == m.per_camera["a"].IDF1


def test_a_camera_whose_last_frames_are_empty_counts_them() -> None:
    # Camera b ran 20 frames; its people and tracks end at frame 15: still 20 frames scored (not the last frame
    # holding a row), and 40 for the fleet.
    runs = _runs({1: 10, 2: 11}, {1: 10, 2: 11})
    b = runs["b"]
    runs["b"] = CameraRun(
        b.gt.select(b.gt.frame <= 15), None, b.global_ids.select(b.global_ids.frame <= 15), 20
    )
    m = evaluate_fleet(runs)
    assert m.per_camera["b"].Frames == 20 and m.global_metrics.Frames == 40


def test_a_strided_camera_is_scored_on_the_frames_it_ran() -> None:
    # Regression: a camera run with source.stride 2 was charged a miss for every person on the frames it never
    # ran (camera IDF1 and MOTA about halved, global IDF1 down with them), where `reid-daemon eval` skips them.
    runs = _with_local(_runs({1: 10, 2: 11}, {1: 10, 2: 11}), {"a": {1: 1, 2: 2}, "b": {1: 1, 2: 2}})
    b = runs["b"]
    ran = b.global_ids.select((b.global_ids.frame - 1) % 2 == 0)  # frames 1, 3, 5, ...
    local = b.local.select((b.local.frame - 1) % 2 == 0) if b.local is not None else None
    runs["b"] = CameraRun(b.gt, local, ran, b.frames, stride=2)
    m = evaluate_fleet(runs)
    assert pytest.approx(100.0) == m.per_camera["b"].IDF1 and m.per_camera["b"].FN == 0
    assert pytest.approx(100.0) == m.global_metrics.IDF1 and m.global_metrics.GT_Dets == 40 + 20
    assert m.unmatched is not None and m.perfect is not None and pytest.approx(100.0) == m.perfect.IDF1
    assert pytest.approx(100 * 2 * 40 / 120) == m.unmatched.IDF1  # b's own ids are misses of its 20 boxes


def test_matches_take_a_pair_at_exactly_the_iou_threshold() -> None:
    # IoU >= 0.5 is a match, as in the per-camera scores: the top half of person 1's box (IoU exactly 0.5)
    gt = MotGroundTruth(np.array([1]), np.array([1]), np.array([[0.0, 0.0, 30.0, 60.0]]), np.ones(1, bool))
    pred = MotTracks(np.array([1]), np.array([7]), np.array([[0.0, 0.0, 30.0, 30.0]]), np.ones(1))
    assert matches(gt, pred) == [(1, 1, 7)]
    assert evaluate_fleet({"a": CameraRun(gt, None, pred, 1)}).per_camera["a"].TP == 1


def test_matches_judge_the_iou_as_the_per_camera_scores_do() -> None:
    # Regression: the merges matched on float32 boxes and IoU, the per-camera scores on TrackEval's float64 IoU,
    # so a pair just under 0.5 (here 0.49999999995: a box 1e-9 short of half the person's height) was a match
    # of the merges (in float32 the box is exactly half: IoU 0.5) and a miss and a false positive of the scores.
    gt = MotGroundTruth(np.array([1]), np.array([1]), np.array([[0.0, 0.0, 30.0, 60.0]]), np.ones(1, bool))
    pred = MotTracks(np.array([1]), np.array([7]), np.array([[0.0, 0.0, 30.0, 30.0 - 1e-9]]), np.ones(1))
    m = evaluate_fleet({"a": CameraRun(gt, None, pred, 1)})
    assert (m.per_camera["a"].TP, m.per_camera["a"].FP) == (0, 1)
    assert matches(gt, pred) == [] and m.matched_boxes == 0


def test_matches_pair_only_boxes_that_overlap_enough() -> None:
    # Regression: the Hungarian ran on raw IoU and the pairs under 0.5 were dropped after, so two poor pairs
    # (0.43 + 0.38) outweighed one good one (0.6) and neither person was matched, where the per-camera scores
    # (TrackEval's rule: pairs under 0.5 are out before the assignment) matched person 1 to box 7.
    a, b = (0.0, 0.0, 20.0, 40.0), (14.0, 0.0, 20.0, 40.0)  # people 1 and 2, side by side
    x, y = (5.0, 0.0, 20.0, 40.0), (-8.0, 0.0, 20.0, 40.0)  # IoU: x-a 0.6, x-b 0.38, y-a 0.43, y-b 0
    gt = MotGroundTruth(np.array([1, 1]), np.array([1, 2]), np.array([a, b]), np.ones(2, bool))
    pred = MotTracks(np.array([1, 1]), np.array([7, 8]), np.array([x, y]), np.ones(2))
    assert matches(gt, pred) == [(1, 1, 7)]


def test_a_camera_whose_people_left_before_its_end_is_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression: with b's last person gone 5 frames before its end and a track kept, camera b's scores, the
    # global ones and each bound asked "the results run to frame 40, the ground truth ends at frame 35: are the
    # results and the ground truth of the same sequence?" (frames of the cameras laid end to end, no camera's),
    # though a scenario's ground truth is made for its very cameras.
    runs = _runs({1: 10, 2: 11}, {1: 10, 2: 11})
    b = runs["b"]
    runs["b"] = CameraRun(b.gt.select(b.gt.frame <= 15), None, b.global_ids, b.frames)
    with caplog.at_level(logging.WARNING, logger="daemon.evaluate"):
        m = evaluate_fleet(runs)
    assert m.global_metrics.FP == 10 and caplog.text == ""


def test_global_scores_do_not_depend_on_the_order_of_the_cameras() -> None:
    # Regression: global MOTA and IDSW came from the cameras laid end to end, so a person's id on the last frame
    # of one camera was compared with their id on the first frame of the next: b then a counted a switch (b ends
    # with id 20, a starts with 10) that a then b did not (a ends with 10, b starts with 10).
    a, b = _walk([1], 20), _walk([1], 20, x0=100)
    b_ids = np.where(b.frame <= 10, 10, 20).astype(np.int64)  # on b, person 1's id changes mid-view
    runs = {
        "a": CameraRun(a, None, _as_results(a, {1: 10}), 20),
        "b": CameraRun(b, None, MotTracks(b.frame.copy(), b_ids, b.xywh.copy(), np.ones(len(b))), 20),
    }
    forward, backward = evaluate_fleet(runs), evaluate_fleet({"b": runs["b"], "a": runs["a"]})
    assert forward.global_metrics.IDSW == backward.global_metrics.IDSW == 1  # the one switch, on b
    assert forward.global_metrics.as_dict() == pytest.approx(backward.global_metrics.as_dict())
    assert pytest.approx(100 * (40 - 1) / 40) == forward.global_metrics.MOTA
    assert "IDSW 1 (MOTA and IDSW summed over the cameras" in backward.text()


def test_a_strided_cameras_frames_are_the_frames_it_ran() -> None:
    # Regression: camera b, run with source.stride 2 over 20 frames, was said to have "20 frames" (and the fleet
    # 40), counting the 10 it skipped.
    runs = _runs({1: 10, 2: 11}, {1: 10, 2: 11})
    b = runs["b"]
    runs["b"] = CameraRun(b.gt, None, b.global_ids.select((b.global_ids.frame - 1) % 2 == 0), 20, stride=2)
    m = evaluate_fleet(runs)
    assert m.per_camera["b"].Frames == 10 and m.per_camera["a"].Frames == 20
    assert m.global_metrics.Frames == 30
    assert "| 10 frames (1 in 2: source.stride 2)" in m.text() and "| 20 frames\n" in m.text()


def test_the_text_s_counts_agree_with_their_nouns() -> None:
    # Regression: one person seen on both cameras read "100% of 1 people seen on several cameras keep one
    # global id", and the counts of merges and splits "0 merged global id(s), 0 split person(s)".
    a, b = _walk([1], 20), _walk([1], 20, x0=100)
    one = {
        "a": CameraRun(a, None, _as_results(a, {1: 10}), 20),
        "b": CameraRun(b, None, _as_results(b, {1: 10}), 20),
    }
    text = evaluate_fleet(one).text()
    assert "100% of 1 person seen on several cameras keeps one global id" in text
    assert "0 merged global ids, 0 split people;" in text
    text = evaluate_fleet(_runs({1: 10, 2: 11}, {1: 12, 2: 10})).text()  # on b, person 2 takes person 1's id
    assert (
        "1 merged global id, 2 split people;" in text and "of 2 people seen on several cameras keep" in text
    )
    assert (
        "0 merged global ids, 1 split person;" in evaluate_fleet(_runs({1: 10, 2: 11}, {1: 10, 2: 12})).text()
    )


def test_the_text_and_the_dict_put_every_figure_in_its_place() -> None:
    # every figure distinct, so that one shown in another's place is seen
    cam = MotMetrics(
        HOTA=11.0,
        DetA=12.0,
        AssA=13.0,
        IDF1=14.0,
        IDP=15.0,
        IDR=16.0,
        MOTA=17.0,
        MOTP=18.0,
        IDSW=19,
        FP=20,
        FN=21,
        TP=22,
        MT=23,
        PT=24,
        ML=25,
        Frag=26,
        GT_IDs=27,
        IDs=28,
        GT_Dets=29,
        Dets=30,
        Frames=31,
    )
    glob = replace(cam, HOTA=41.0, IDF1=42.0, MOTA=43.0, IDSW=44)
    m = FleetMetrics(
        {"a": cam},
        glob,
        matched_boxes=500,
        false_merge_pct=6.5,
        merged_ids=3,
        split_people=4,
        people_on_several_cameras=5,
        cross_camera_consistency=0.6,
        unmatched=Bound(51.0, 7.25),
        perfect=Bound(97.0, 1.5),
        merges_by=(2.25, 4.25),
    )
    assert m.text() == "\n".join(
        [
            "camera a: HOTA 11.00 (DetA 12.00 AssA 13.00) | IDF1 14.00 (IDP 15.00 IDR 16.00) | MOTA 17.00 MOTP "
            "18.00 | IDSW 19 FP 20 FN 21 | MT 23 PT 24 ML 25 | IDs 28 (gt 27) | 31 frames",
            "global ids: HOTA 41.0 IDF1 42.0 MOTA 43.0 IDSW 44 (MOTA and IDSW summed over the cameras: a switch is "
            "counted within a camera's view)",
            "false merges 6.50% of 500 matched boxes; 3 merged global ids, 4 split people; 60% of 5 people seen on "
            "several cameras keep one global id",
            "of the false merges: 2.25% on boxes a camera track carried over from another person (trackers' id "
            "switches), 4.25% on tracks given another person's id (the resolver)",
            "same camera tracks, no cross-camera matching: IDF1 51.0, false merges 7.25%; perfect whole-track "
            "resolver: IDF1 97.0, false merges 1.50% (its merges are the trackers' id switches)",
        ]
    )
    d = m.as_dict()
    assert d["per_camera"] == {"a": cam.as_dict()} and d["global"] == glob.as_dict()
    assert {k: d[k] for k in ("matched_boxes", "false_merge_pct", "merged_ids", "split_people")} == {
        "matched_boxes": 500,
        "false_merge_pct": 6.5,
        "merged_ids": 3,
        "split_people": 4,
    }
    assert (d["people_on_several_cameras"], d["cross_camera_consistency"]) == (5, 0.6)
    assert d["bounds"] == {
        "unmatched": {"IDF1": 51.0, "false_merge_pct": 7.25},
        "perfect": {"IDF1": 97.0, "false_merge_pct": 1.5},
    }
    assert d["false_merge_pct_by"] == {"trackers": 2.25, "resolver": 4.25}


def _one_person(frames: list[int], pid: int = 1, consider: bool = True) -> MotGroundTruth:
    n = len(frames)
    return MotGroundTruth(np.array(frames), np.full(n, pid), np.ones((n, 4)), np.full(n, consider))


def test_seen_at_once_compares_frames_on_the_fleet_clock() -> None:
    """Frames are moments by each camera's rate and offset: a's frame 5 at 7 fps (0.571 s) is b's frame 3 at
    3.5 fps (0.571 s); b 1 s late (offset +1) meets a 7 frames later; within half the shorter frame interval."""
    a = TimedTruth(_one_person([5, 13]), 7.0, 0.0)
    assert seen_at_once(a, TimedTruth(_one_person([3]), 3.5, 0.0)) == (1, 5, 3)
    assert seen_at_once(a, TimedTruth(_one_person([1]), 3.5, 1.0)) is None  # 1 s: between a's two frames
    assert seen_at_once(a, TimedTruth(_one_person([1]), 3.5, 12 / 7)) == (1, 13, 1)
    assert seen_at_once(a, TimedTruth(_one_person([1]), 3.5, 12 / 7 + 0.07)) == (1, 13, 1)  # under 1/14 s
    assert seen_at_once(a, TimedTruth(_one_person([1]), 3.5, 12 / 7 + 0.072)) is None
    assert seen_at_once(a, TimedTruth(_one_person([3], pid=2), 3.5, 0.0)) is None  # another id
    assert seen_at_once(a, TimedTruth(_one_person([3], consider=False), 3.5, 0.0)) is None  # not to be scored
