"""Fleet scoring: global-id metrics over cameras laid end to end, merges, splits, cross-camera consistency."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.fleet_eval import CameraRun, concatenate, evaluate_fleet, merge_split_counts
from daemon.motio import MotGroundTruth, MotTracks


def _walk(people: list[int], frames: int, x0: float = 0.0) -> MotGroundTruth:
    rows = [(f + 1, p, x0 + 60 * i + f, 50.0, 30.0, 60.0) for f in range(frames) for i, p in enumerate(people)]
    a = np.asarray(rows)
    return MotGroundTruth(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2:6], np.ones(len(a), bool))


def _as_results(gt: MotGroundTruth, ids: dict[int, int]) -> MotTracks:
    tid = np.asarray([ids[int(p)] for p in gt.track_id], np.int64)
    return MotTracks(gt.frame.copy(), tid, gt.xywh.copy(), np.ones(len(gt)))


def _runs(ids_a: dict[int, int], ids_b: dict[int, int]) -> dict[str, CameraRun]:
    a, b = _walk([1, 2], 20), _walk([1, 2], 20, x0=100)
    return {"a": CameraRun(a, None, _as_results(a, ids_a), 20), "b": CameraRun(b, None, _as_results(b, ids_b), 20)}


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


def test_two_people_under_one_id_are_a_merge() -> None:
    m = evaluate_fleet(_runs({1: 10, 2: 11}, {1: 12, 2: 10}))  # on b, person 2 takes person 1's id
    assert m.merged_ids == 1
    assert m.false_merge_pct == pytest.approx(100 * 20 / 80)  # person 2's 20 boxes on b sit under person 1's id
    assert m.global_metrics.IDF1 < 100


def test_concatenate_shifts_frames_past_earlier_cameras() -> None:
    gt, pred, frames = concatenate(_runs({1: 1, 2: 2}, {1: 1, 2: 2}))
    assert frames == 40 and gt.frame.min() == 1 and gt.frame.max() == 40 and pred.frame.max() == 40


def test_support_threshold_ignores_flickers() -> None:
    pairs = {"a": [(1, 5)] * 30 + [(1, 6)] * 3, "b": [(1, 5)] * 12}
    matched, pct, merged, split, several, consistent = merge_split_counts(pairs, min_support=10)
    assert (matched, merged, split, several, consistent) == (45, 0, 0, 2 - 1, 1.0)
    assert pct == 0.0
