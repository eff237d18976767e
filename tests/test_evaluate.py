"""Tracking metrics: hand-derived counts, consider=0 rows, TrackEval's own loader, py-motmetrics figures."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trackeval
from _data import require_pets09_gt

from daemon.cli import main
from daemon.errors import DataError
from daemon.evaluate import MotMetrics, evaluate, with_clear_of_sequences
from daemon.motio import (
    MotGroundTruth,
    MotTracks,
    read_ground_truth,
    read_results,
    write_ground_truth,
    write_results,
)

# -------------------------------------------------------------------------------- a hand-built case
# Boxes are 10x20 at y=0 and far apart along x, so every IoU is 1 (same place) or 0.
A_X, B_X, FP1_X, FP2_X, IGNORED_X = 0.0, 100.0, 200.0, 300.0, 400.0


def _gt(rows: list[tuple[int, int, float, int]]) -> MotGroundTruth:
    a = np.array(rows, dtype=float).reshape(-1, 4)
    xywh = np.stack([a[:, 2], np.zeros(len(a)), np.full(len(a), 10.0), np.full(len(a), 20.0)], axis=1)
    return MotGroundTruth(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), xywh, a[:, 3] == 1)


def _pred(rows: list[tuple[int, int, float]]) -> MotTracks:
    a = np.array(rows, dtype=float).reshape(-1, 3)
    xywh = np.stack([a[:, 2], np.zeros(len(a)), np.full(len(a), 10.0), np.full(len(a), 20.0)], axis=1)
    return MotTracks(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), xywh, np.ones(len(a)))


def _hand_case() -> tuple[MotGroundTruth, MotTracks]:
    # gt: persons A (id 1) and B (id 2) in frames 1-4 (8 boxes); an ignored person (id 3, consider=0)
    # in frame 1.
    gt = _gt(
        [(f, 1, A_X, 1) for f in range(1, 5)] + [(f, 2, B_X, 1) for f in range(1, 5)] + [(1, 3, IGNORED_X, 0)]
    )
    pred = _pred(
        [
            *[
                (1, 1, A_X),
                (2, 1, A_X),
                (3, 3, A_X),
                (4, 3, A_X),
            ],  # A: track 1, then track 3 -> one ID switch
            *[(1, 2, B_X), (2, 2, B_X), (3, 2, B_X)],  # B: missed in frame 4 -> one FN
            *[(2, 4, FP1_X), (4, 5, FP2_X)],  # two false positives
            (1, 6, IGNORED_X),  # on the ignored person
        ]
    )
    return gt, pred


def test_hand_built_case_with_distractor_rule() -> None:
    m = evaluate(*_hand_case())
    # The box on the ignored person is removed. TP = 4 (A) + 3 (B) = 7, FN = 1, FP = 2, IDSW = 1.
    assert (m.TP, m.FN, m.FP, m.IDSW) == (7, 1, 2, 1)
    # MOTA = 1 - (FN + FP + IDSW) / GT = 1 - (1 + 2 + 1) / 8 = 0.5
    assert pytest.approx(50.0) == m.MOTA
    # Identity matching: B<->2 (3 frames), A<->1 or A<->3 (2 frames): IDTP = 5 of 8 gt and 9 predicted boxes.
    # IDF1 = 2*5 / (8 + 9) = 10/17, IDP = 5/9, IDR = 5/8.
    assert pytest.approx(100 * 10 / 17) == m.IDF1
    assert pytest.approx(100 * 5 / 9) == m.IDP
    assert pytest.approx(100 * 5 / 8) == m.IDR
    # Every match has IoU 1, so all 19 HOTA thresholds agree. DetA = TP / (TP + FN + FP) = 7/10.
    # AssA: the 2+2 matches of A score 2/(4+2-2) = 0.5 each, the 3 of B score 3/(4+3-3) = 0.75:
    # (4*0.5 + 3*0.75)/7 = 4.25/7, and HOTA = sqrt(DetA * AssA) = sqrt(0.425).
    assert m.DetA == pytest.approx(70.0)
    assert m.AssA == pytest.approx(100 * 4.25 / 7)
    assert pytest.approx(100 * math.sqrt(0.425)) == m.HOTA
    assert pytest.approx(100.0) == m.MOTP
    # A is matched in 4/4 frames (mostly tracked: > 80 %), B in 3/4 (partially tracked).
    assert (m.MT, m.PT, m.ML) == (1, 1, 0)
    assert (m.GT_IDs, m.IDs, m.GT_Dets, m.Dets, m.Frames) == (2, 5, 8, 9, 4)


def test_hand_built_case_with_mot15_rule() -> None:
    m = evaluate(*_hand_case(), distractors=False)
    # The ignored row is simply dropped: the box on it is a third false positive.
    assert (m.TP, m.FN, m.FP, m.IDSW) == (7, 1, 3, 1)
    assert pytest.approx(100 * (1 - (1 + 3 + 1) / 8)) == m.MOTA  # 37.5
    assert pytest.approx(100 * 10 / 18) == m.IDF1  # 2*5 / (8 + 10)
    assert pytest.approx(50.0) == m.IDP  # 5/10
    assert (m.GT_IDs, m.IDs) == (2, 6)


def test_box_overlapping_an_ignored_row_too_little_is_a_false_positive() -> None:
    gt = _gt([(1, 1, A_X, 1), (1, 2, IGNORED_X, 0)])
    # IoU with the ignored box: overlap 4x20 over union 16x20 = 0.25 < 0.5 -> not removed.
    pred = _pred([(1, 1, A_X), (1, 2, IGNORED_X + 6)])
    m = evaluate(gt, pred)
    assert (m.TP, m.FP, m.FN) == (1, 1, 0)


def _half_height(x: float) -> tuple[float, float, float, float]:
    """The top half of a gt box at ``x``: IoU with it exactly 0.5 (10x10 inside 10x20)."""
    return (x, 0.0, 10.0, 10.0)


def _boxes(frames: list[int], ids: list[int], xywh: list[tuple[float, float, float, float]]) -> MotTracks:
    return MotTracks(np.asarray(frames), np.asarray(ids), np.asarray(xywh), np.ones(len(frames)))


def test_a_box_at_exactly_the_iou_threshold_matches_and_is_removed_on_an_ignored_row() -> None:
    # IoU >= 0.5 (TrackEval's rule), so exactly 0.5 is a match: a true positive on person 1, and on the ignored
    # row a distractor match, removed (not a false positive).
    gt = _gt([(1, 1, A_X, 1), (1, 2, IGNORED_X, 0)])
    pred = _boxes([1, 1], [1, 2], [_half_height(A_X), _half_height(IGNORED_X)])
    m = evaluate(gt, pred)
    assert (m.TP, m.FP, m.FN, m.Dets) == (1, 0, 0, 1)
    assert pytest.approx(50.0) == m.MOTP


def test_a_box_on_an_ignored_row_alone_in_its_frame_is_removed() -> None:
    # Frame 2 holds the ignored row and nothing else considered: the box on it is still a distractor's.
    gt = _gt([(1, 1, A_X, 1), (2, 1, A_X, 1), (2, 2, IGNORED_X, 0), (3, 2, IGNORED_X, 0)])
    pred = _pred([(1, 1, A_X), (2, 1, A_X), (2, 2, IGNORED_X), (3, 2, IGNORED_X)])
    m = evaluate(gt, pred)
    assert (m.TP, m.FP, m.FN, m.Dets, m.IDs) == (2, 0, 0, 2, 1)
    assert evaluate(gt, pred, distractors=False).FP == 2


def test_clear_of_sequences_takes_the_distractor_rule_and_sums_the_counts() -> None:
    gt, pred = _hand_case()
    for distractors in (True, False):
        m = evaluate(gt, pred, distractors=distractors)
        # one sequence: the same CLEAR fields as the sequence scored alone, under the same rule
        assert with_clear_of_sequences(m, [(gt, pred, 4)], distractors=distractors) == m
    # twice the same sequence: counts doubled (FP 2 + 2 under the default rule, the ignored box removed), the
    # ratios unchanged, and A's switch counted in each (2), not between them
    m = evaluate(gt, pred)
    both = with_clear_of_sequences(m, [(gt, pred, 4), (gt, pred, 4)])
    assert (both.TP, both.FP, both.FN, both.IDSW, both.MT, both.PT) == (14, 4, 2, 2, 2, 2)
    assert pytest.approx(50.0) == both.MOTA


def test_identical_results_score_100() -> None:
    gt, _ = _hand_case()
    m = evaluate(gt, MotTracks(gt.frame, gt.track_id, gt.xywh, np.ones(len(gt))))
    for value in (m.HOTA, m.DetA, m.AssA, m.IDF1, m.IDP, m.IDR, m.MOTA, m.MOTP):
        assert value == pytest.approx(100.0)
    assert (m.IDSW, m.FP, m.FN) == (0, 0, 0)


def test_empty_results_score_zero_and_miss_everything() -> None:
    gt, _ = _hand_case()
    m = evaluate(gt, MotTracks.empty())
    assert (m.HOTA, m.IDF1, m.MOTA, m.FN, m.FP, m.ML) == (0.0, 0.0, 0.0, 8, 0, 2)
    assert (m.GT_IDs, m.IDs, m.GT_Dets, m.Dets) == (2, 0, 8, 0)  # no predicted identity at all


def test_num_frames_scores_only_the_frames_seen() -> None:
    gt, pred = _hand_case()
    m = evaluate(gt, pred, num_frames=2)
    # Frames 1-2: gt 4 boxes, all tracked; one FP (frame 2), the box on the ignored row removed.
    assert (m.Frames, m.GT_Dets, m.TP, m.FP, m.FN, m.IDSW) == (2, 4, 4, 1, 0, 0)
    none = evaluate(gt, pred, num_frames=0)  # a run stopped before its first frame: nothing scored
    assert (none.Frames, none.GT_Dets, none.Dets, none.TP, none.FP, none.FN) == (0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="num_frames"):
        evaluate(gt, pred, num_frames=-1)


def test_a_strided_run_is_scored_on_frames_1_1_plus_stride_and_so_on() -> None:
    gt, pred = _hand_case()
    m = evaluate(gt, pred, stride=2)
    # Frames 1 and 3 only: A under track 1 then 3 (one switch), B under 2, the box on the ignored row removed;
    # the false positives of frames 2 and 4 and B's miss in frame 4 are on frames the run did not process.
    assert (m.TP, m.FP, m.FN, m.IDSW, m.GT_Dets, m.Dets) == (4, 0, 0, 1, 4, 4)
    assert (m.Frames, m.Stride) == (2, 2) and pytest.approx(75.0) == m.MOTA
    ran = pred.select((pred.frame - 1) % 2 == 0)  # what a run with source.stride 2 writes: the same scores
    assert evaluate(gt, ran, stride=2) == m
    with pytest.raises(ValueError, match="stride"):
        evaluate(gt, pred, stride=0)


def test_a_results_row_far_past_the_ground_truth_is_scored_at_once(tmp_path: Path) -> None:
    """A results file with one row at frame 10**9 (a typo, a time stamp taken for a frame) made eval build 10**9
    empty frames, minutes and gigabytes each 10**7 (200,000 took 18 s and 360 MB): killed here by a 2 GB
    address-space limit. The frames that hold no row are left out of the scoring (they count for nothing in
    any metric) and counted in Frames; the scores are those of the same row moved next to the others."""
    gt, pred = _hand_case()
    far = MotTracks.joined(
        [pred, MotTracks(np.array([10**9]), np.array([9]), np.array([[0.0, 0, 10, 20]]), np.ones(1))]
    )
    near = MotTracks.joined(
        [pred, MotTracks(np.array([5]), np.array([9]), np.array([[0.0, 0, 10, 20]]), np.ones(1))]
    )
    write_ground_truth(tmp_path / "gt.txt", gt)
    write_results(tmp_path / "res.txt", far)
    script = (
        "import resource, json, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30));"
        "from daemon.evaluate import evaluate;"
        "print(json.dumps(evaluate(sys.argv[1], sys.argv[2]).as_dict()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "gt.txt"), str(tmp_path / "res.txt")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    scored = json.loads(done.stdout)
    assert scored["Frames"] == 10**9 and scored["FP"] == 3
    assert scored == evaluate(gt, near).as_dict() | {"Frames": 10**9}
    assert evaluate(gt, far) == replace(evaluate(gt, near), Frames=10**9)
    assert evaluate(gt, far, num_frames=4) == evaluate(gt, pred)  # rows past num_frames left out, as before


def test_paths_arrays_and_records_give_the_same_numbers(tmp_path: Path) -> None:
    gt, pred = _hand_case()
    write_ground_truth(tmp_path / "gt.txt", gt)
    write_results(tmp_path / "res.txt", pred)
    gt_array = np.column_stack([gt.frame, gt.track_id, gt.xywh, gt.consider.astype(float)])
    pred_array = np.column_stack([pred.frame, pred.track_id, pred.xywh, pred.conf])
    expected = evaluate(gt, pred)
    assert evaluate(tmp_path / "gt.txt", str(tmp_path / "res.txt")) == expected
    assert evaluate(gt_array, pred_array) == expected


def test_bad_inputs_raise_data_error(tmp_path: Path) -> None:
    gt, _ = _hand_case()
    (tmp_path / "res.txt").write_text("1,1,0,0,10,20\n")
    with pytest.raises(DataError, match=r"res\.txt, line 1"):
        evaluate(gt, tmp_path / "res.txt")
    twice = MotTracks(np.array([1, 1]), np.array([5, 5]), np.ones((2, 4)), np.ones(2))
    with pytest.raises(DataError, match="results: id 5 appears more than once in frame 1"):
        evaluate(gt, twice)
    gt_twice = MotGroundTruth(np.array([3, 3]), np.array([2, 2]), np.ones((2, 4)), np.ones(2, bool))
    with pytest.raises(DataError, match="ground truth: id 2 appears more than once in frame 3"):
        evaluate(gt_twice, MotTracks.empty())


def test_results_of_another_sequence_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    gt, pred = _hand_case()
    with caplog.at_level(logging.WARNING, logger="daemon.evaluate"):
        evaluate(gt, pred)
        assert caplog.text == ""  # a plain run: nothing to say
        later = MotTracks(pred.frame + 10, pred.track_id, pred.xywh, pred.conf)
        evaluate(gt, later)  # was scored silently: HOTA 0 and nothing to say why
    assert "the results run to frame 14, the ground truth ends at frame 4" in caplog.text
    assert "none of the 10 result boxes overlaps a ground-truth box" in caplog.text
    assert "same sequence?" in caplog.text


def test_nothing_to_compare_is_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    # No results at all (a camera that saw nobody), or ground truth with nobody in it: neither is a sign of
    # another sequence's results, whatever frame the other side runs to.
    gt, pred = _hand_case()
    with caplog.at_level(logging.WARNING, logger="daemon.evaluate"):
        evaluate(gt, MotTracks.empty())
        nobody = gt.select(gt.frame < 0)
        assert evaluate(nobody, pred).FP == 10  # every box is a false positive, but nothing to warn of
    assert caplog.text == ""


def test_as_dict_and_summary() -> None:
    m = evaluate(*_hand_case())
    d = m.as_dict()
    assert d["MOTA"] == m.MOTA and d["IDSW"] == 1 and d["GT_IDs"] == 2 and d["Frames"] == 4
    assert set(d) >= {"HOTA", "DetA", "AssA", "IDF1", "IDP", "IDR", "MOTP", "FP", "FN", "MT", "ML", "IDs"}
    # every figure in its place (the values of test_hand_built_case_with_distractor_rule, rounded)
    assert m.summary() == (
        "HOTA 65.19 (DetA 70.00 AssA 60.71) | IDF1 58.82 (IDP 55.56 IDR 62.50) | MOTA 50.00 MOTP 100.00 | "
        "IDSW 1 FP 2 FN 1 | MT 1 PT 1 ML 0 | IDs 5 (gt 2) | 4 frames"
    )
    with pytest.raises(AttributeError):
        m.MOTA = 0.0  # type: ignore[misc]


# -------------------------------------------------------------------------------- TrackEval's loader
# The reference: TrackEval's own Evaluator reading a MOTChallenge folder tree through MotChallenge2DBox.
# MOT17 rule: consider=0 rows are written with class 8 (distractor). MOT15 rule: no preprocessing.


def _trackeval_reference(folder: Path, gt: MotGroundTruth, pred: MotTracks, benchmark: str) -> dict[str, Any]:
    lines = (
        f"{f},{i},{','.join(repr(float(v)) for v in b)},{int(c)},{1 if c else 8},1\n"
        for f, i, b, c in zip(gt.frame, gt.track_id, gt.xywh, gt.consider, strict=True)
    )
    return _trackeval_of_gt_file(folder, "".join(lines), int(gt.frame.max()), pred, benchmark)


def _trackeval_of_gt_file(
    folder: Path, gt_text: str, frames: int, pred: MotTracks | str, benchmark: str
) -> dict[str, Any]:
    (folder / "gt" / "seq" / "gt").mkdir(parents=True)
    (folder / "trackers" / "t" / "data").mkdir(parents=True)
    (folder / "gt" / "seq" / "gt" / "gt.txt").write_text(gt_text, encoding="utf-8")
    with open(folder / "trackers" / "t" / "data" / "seq.txt", "w", encoding="utf-8") as fh:
        if isinstance(pred, str):  # a results file's text as it is
            fh.write(pred)
        else:
            for f, i, b, s in zip(pred.frame, pred.track_id, pred.xywh, pred.conf, strict=True):
                fh.write(f"{f},{i},{','.join(repr(float(v)) for v in b)},{float(s)!r},-1,-1,-1\n")
    quiet = {"PRINT_CONFIG": False}
    evaluator = trackeval.Evaluator(
        {
            **quiet,
            "PRINT_RESULTS": False,
            "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "LOG_ON_ERROR": None,
        }
    )
    dataset = trackeval.datasets.MotChallenge2DBox(
        {
            **quiet,
            "GT_FOLDER": str(folder / "gt"),
            "TRACKERS_FOLDER": str(folder / "trackers"),
            "SKIP_SPLIT_FOL": True,
            "SEQ_INFO": {"seq": frames},
            "BENCHMARK": benchmark,
        }
    )
    metrics = [
        trackeval.metrics.HOTA(),
        trackeval.metrics.CLEAR(dict(quiet)),
        trackeval.metrics.Identity(dict(quiet)),
    ]
    res, _ = evaluator.evaluate([dataset], metrics)
    r = res["MotChallenge2DBox"]["t"]["seq"]["pedestrian"]
    hota, clear, ident, count = r["HOTA"], r["CLEAR"], r["Identity"], r["Count"]
    return {
        "HOTA": 100 * np.mean(hota["HOTA"]),
        "DetA": 100 * np.mean(hota["DetA"]),
        "AssA": 100 * np.mean(hota["AssA"]),
        "IDF1": 100 * ident["IDF1"],
        "IDP": 100 * ident["IDP"],
        "IDR": 100 * ident["IDR"],
        "MOTA": 100 * clear["MOTA"],
        "MOTP": 100 * clear["MOTP"],
        **{k: clear[k] for k in ("IDSW", "MT", "PT", "ML", "Frag")},
        "FP": clear["CLR_FP"],
        "FN": clear["CLR_FN"],
        "TP": clear["CLR_TP"],
        **{k: count[k] for k in ("GT_IDs", "IDs", "GT_Dets", "Dets")},
    }


def _assert_same(ours: MotMetrics, reference: dict[str, Any]) -> None:
    d = ours.as_dict()
    for key, value in reference.items():
        assert d[key] == pytest.approx(float(value), abs=1e-9), key


@pytest.mark.parametrize(("benchmark", "distractors"), [("MOT17", True), ("MOT15", False)])
def test_matches_trackeval_evaluator_on_hand_case(tmp_path: Path, benchmark: str, distractors: bool) -> None:
    gt, pred = _hand_case()
    _assert_same(
        evaluate(gt, pred, distractors=distractors), _trackeval_reference(tmp_path, gt, pred, benchmark)
    )


# -------------------------------------------------------------------------------- the real clip


def _perturbed_pets_results(gt: MotGroundTruth) -> MotTracks:
    """Deterministic damage to the PETS09 considered gt: misses, misplaced boxes, an id swap, a fragment,
    a false track, and boxes on every consider=0 row."""
    c = gt.considered()
    order = np.lexsort((c.track_id, c.frame))
    frame, ids, xywh = c.frame[order], c.track_id[order].copy(), c.xywh[order].copy()
    rows = np.arange(len(frame))
    keep = rows % 9 != 4  # misses
    shifted = rows % 13 == 6  # moved right by 60 % of the width: IoU 0.25, one FP + one FN
    xywh[shifted, 0] += 0.6 * xywh[shifted, 2]
    uniq, counts = np.unique(ids, return_counts=True)
    a, b, third = uniq[np.argsort(-counts, kind="stable")[:3]]
    late = frame >= 400  # the two longest tracks swap ids from frame 400 on
    ia, ib = late & (ids == a), late & (ids == b)
    ids[ia], ids[ib] = b, a
    ids[(ids == third) & (frame >= 200) & (frame < 260)] += 100  # a fragment with its own id
    fp_frames = np.arange(10, 796, 10)  # a false track in a corner every 10th frame
    ignored = gt.select(~gt.consider)
    return MotTracks(
        np.concatenate([frame[keep], fp_frames, ignored.frame]),
        np.concatenate([ids[keep], np.full(len(fp_frames), 999), 500 + ignored.track_id]),
        np.concatenate([xywh[keep], np.tile([700.0, 20.0, 30.0, 70.0], (len(fp_frames), 1)), ignored.xywh]),
        np.ones(len(frame[keep]) + len(fp_frames) + len(ignored)),
    )


@pytest.mark.shared_data
def test_real_gt_against_itself_scores_100() -> None:
    gt = read_ground_truth(require_pets09_gt())
    # every row as a result (its world x in column 8 left out: TrackEval would take it for a class); the
    # consider=0 rows are removed as distractors
    m = evaluate(gt, MotTracks(gt.frame, gt.track_id, gt.xywh, np.ones(len(gt))))
    assert pytest.approx([100.0, 100.0, 100.0]) == [m.HOTA, m.IDF1, m.MOTA]
    assert (m.IDSW, m.FP, m.FN, m.GT_IDs, m.GT_Dets, m.Frames) == (0, 0, 0, 19, 4476, 795)


@pytest.mark.shared_data
def test_real_gt_agrees_with_py_motmetrics() -> None:
    gt = read_ground_truth(require_pets09_gt())
    m = evaluate(gt, _perturbed_pets_results(gt), distractors=False)
    # py-motmetrics 1.4.0 (numpy 1.26) on the same rows: loadtxt(fmt="mot15-2D", min_confidence=1) for the gt,
    # compare_to_groundtruth(..., "iou", distth=0.5), motchallenge_metrics. Its MOTP is 1 - IoU.
    assert pytest.approx(73.42673403766652, abs=1e-9) == m.IDF1
    assert pytest.approx(75.54347826086957, abs=1e-9) == m.IDP
    assert pytest.approx(71.42537980339589, abs=1e-9) == m.IDR
    assert pytest.approx(69.4816800714924, abs=1e-9) == m.MOTA
    assert pytest.approx(100 * (1 - 0.00013171385107320352), abs=1e-9) == m.MOTP
    assert (m.FP, m.FN, m.IDSW) == (558, 802, 6)
    assert (m.MT, m.PT, m.ML) == (14, 5, 0)
    # The default (MOT17) rule removes the 174 boxes put on consider=0 rows instead of counting them as FP.
    d = evaluate(gt, _perturbed_pets_results(gt))
    assert (d.FP, d.FN, d.IDSW, d.Dets) == (558 - 174, 802, 6, m.Dets - 174)


@pytest.mark.shared_data
@pytest.mark.parametrize(("benchmark", "distractors"), [("MOT17", True), ("MOT15", False)])
def test_real_gt_matches_trackeval_evaluator(tmp_path: Path, benchmark: str, distractors: bool) -> None:
    gt = read_ground_truth(require_pets09_gt())
    pred = _perturbed_pets_results(gt)
    _assert_same(
        evaluate(gt, pred, distractors=distractors), _trackeval_reference(tmp_path, gt, pred, benchmark)
    )


# -------------------------------------------------------------------------------- MOT16/17/20 classes
# frame,id,x,y,w,h,consider,class,visibility: TrackEval scores pedestrians (class 1) with consider=1 only,
# removes the boxes on person on vehicle (2), static person (7), distractor (8) and reflection (12), and counts a
# box on anything else (a pedestrian marked consider=0, a car: class 3) as a false positive.
MOT17_CASE = (
    "".join(f"{f},1,{A_X},0,10,20,1,1,1\n" for f in (1, 2, 3))  # a pedestrian, scored
    + "1,2,100,0,10,20,0,1,0.1\n"  # a pedestrian marked consider=0: not scored, a box on it is an FP
    + "1,3,200,0,10,20,1,7,1\n2,3,200,0,10,20,0,7,1\n"  # a static person: a box on it is removed
    + "1,4,300,0,10,20,0,3,1\n"  # a car: a box on it is an FP
    + "2,5,400,0,10,20,0,12,1\n3,6,500,0,10,20,1,2,1\n"  # a reflection and a person on a vehicle: removed
)


def _mot17_case_results() -> MotTracks:
    on_others = [
        (1, 12, 100.0),
        (1, 13, 200.0),
        (2, 13, 200.0),
        (1, 14, 300.0),
        (2, 15, 400.0),
        (3, 16, 500.0),
    ]
    return _pred([(f, 1, A_X) for f in (1, 2, 3)] + on_others)


def test_mot17_classes_are_scored_as_trackeval_scores_them(tmp_path: Path) -> None:
    """A MOT16/17/20 gt's classes were not read: its static people and people on vehicles with consider=1 were
    scored as pedestrians (a box on them a TP, none a miss), and a box on a car or on a pedestrian marked
    consider=0 was removed with the distractors' (TrackEval counts it a false positive)."""
    gt_file = tmp_path / "gt.txt"
    gt_file.write_text(MOT17_CASE)
    m = evaluate(gt_file, _mot17_case_results())
    assert (m.GT_Dets, m.GT_IDs, m.TP, m.FN, m.FP, m.Dets) == (3, 1, 3, 0, 2, 5)
    _assert_same(m, _trackeval_of_gt_file(tmp_path / "te", MOT17_CASE, 3, _mot17_case_results(), "MOT17"))


# -------------------------------------------------------------------------------- MOT20's class 6
# TrackEval's MOT20 benchmark takes non-motorised vehicles (class 6) for distractors too; MOT16/17 do not.
MOT20_CASE = (
    "".join(f"{f},1,{A_X},0,10,20,1,1,1\n" for f in (1, 2, 3))  # a pedestrian, scored
    + "1,7,600,0,10,20,0,6,1\n2,7,600,0,10,20,0,6,1\n"  # a non-motorised vehicle: an FP, removed for MOT20
    + "1,4,300,0,10,20,0,3,1\n"  # a car: an FP for either
)
MOT20_RESULTS = (
    "".join(
        f"{f},{i},{x},0,10,20,1,-1,-1,-1\n"
        for f, i, x in [(1, 1, A_X), (2, 1, A_X), (3, 1, A_X), (1, 17, 600.0)]
    )
    + "2,17,600,0,10,20,1,-1,-1,-1\n1,14,300,0,10,20,1,-1,-1,-1\n"
)


@pytest.mark.parametrize(("mot20", "benchmark", "fp"), [(False, "MOT17", 3), (True, "MOT20", 1)])
def test_a_box_on_a_non_motorised_vehicle_is_removed_by_the_mot20_rule_only(
    tmp_path: Path, mot20: bool, benchmark: str, fp: int
) -> None:
    """evaluate had no MOT20 rule: boxes on class 6 were false positives where TrackEval's MOT20 removes them."""
    gt_file, results = tmp_path / "gt.txt", tmp_path / "results.txt"
    gt_file.write_text(MOT20_CASE)
    results.write_text(MOT20_RESULTS)
    m = evaluate(gt_file, results, mot20=mot20)
    assert (m.GT_Dets, m.TP, m.FN, m.FP, m.Dets) == (3, 3, 0, fp, 3 + fp)
    reference = _trackeval_of_gt_file(tmp_path / "te", MOT20_CASE, 3, read_results(results), benchmark)
    _assert_same(m, reference)
    assert reference["FP"] == fp  # TrackEval itself tells the two benchmarks apart so
    with pytest.raises(ValueError, match="read it with read_ground_truth"):  # a record is read already
        evaluate(read_ground_truth(gt_file), results, mot20=True)


def _eval_fp(gt: Path, results: Path, *options: str) -> int:
    scores = gt.parent / "scores.json"
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(scores), *options]) == 0
    fp: int = json.loads(scores.read_text())["FP"]
    return fp


def test_eval_scores_a_mot20_sequence_by_the_mot20_rule(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`reid-daemon eval` had no way to know the benchmark: a MOT20 sequence's boxes on class 6 were false
    positives. --benchmark says it, and by default a gt in a MOT20-<n> folder (MOTChallenge's layout) is one."""
    results = tmp_path / "results.txt"
    results.write_text(MOT20_RESULTS)
    mot20, other = tmp_path / "MOT20-train" / "MOT20-01" / "gt", tmp_path / "MOT17-02" / "gt"
    for folder in (mot20, other):
        folder.mkdir(parents=True)
        (folder / "gt.txt").write_text(MOT20_CASE)
    with caplog.at_level(logging.INFO, logger="daemon"):
        assert _eval_fp(mot20 / "gt.txt", results) == 1
    assert "MOT20 sequence's ground truth: read by TrackEval's MOT20 rule" in caplog.text
    assert "(--benchmark mot17 for the MOT16/17 rule)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="daemon"):
        assert _eval_fp(other / "gt.txt", results) == 3
    assert "MOT20" not in caplog.text
    assert _eval_fp(mot20 / "gt.txt", results, "--benchmark", "mot17") == 3
    assert _eval_fp(other / "gt.txt", results, "--benchmark", "mot20") == 1
    assert _eval_fp(other / "gt.txt", results, "--benchmark", "mot16") == 3


def test_eval_refuses_the_mot20_rule_for_a_gt_without_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A MOT15 gt (10 columns) has no class 6 to shield: --benchmark mot20 would change nothing, said so."""
    gt, results = tmp_path / "gt.txt", tmp_path / "results.txt"
    gt.write_text("1,1,0,0,10,20,1,-1,-1,-1\n")
    results.write_text("1,1,0,0,10,20,1,-1,-1,-1\n")
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--benchmark", "mot20"]) == 2
    assert (
        f"--benchmark mot20 sets how the classes of a gt count, but {gt} has none" in capsys.readouterr().err
    )
    assert _eval_fp(gt, results, "--benchmark", "mot17") == 0


@pytest.mark.parametrize("benchmark", ["MOT17", "MOT15"])
def test_eval_refuses_results_of_a_class_above_1_as_trackeval_does(
    tmp_path: Path, benchmark: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A results row with class 3 (a car, column 8) was scored as a pedestrian; TrackEval refuses such results
    for every benchmark (MOT15's included), and so does eval, naming the file, the line and the class."""
    gt_text = "1,1,0,0,10,20,1,1,1\n1,2,50,0,10,20,1,1,1\n"
    results_text = "1,1,0,0,10,20,1,-1,-1,-1\n1,2,50,0,10,20,1,3,-1,-1\n"
    with pytest.raises(trackeval.utils.TrackEvalException, match=r"Non pedestrian class \(3\)"):
        _trackeval_of_gt_file(tmp_path / "te", gt_text, 1, results_text, benchmark)
    gt, results = tmp_path / "gt.txt", tmp_path / "results.txt"
    gt.write_text(gt_text)
    results.write_text(results_text)
    assert main(["eval", "--gt", str(gt), "--results", str(results)]) == 1  # a DataError
    assert f"{results}, line 2: class 3 (column 8)" in capsys.readouterr().err


def test_a_ground_truth_file_with_nobody_to_score_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty gt.txt (a failed conversion, the wrong file), or one whose rows are all ignored, scored every box
    a false positive and HOTA 0 without a word. The mismatch warning rightly keeps quiet (nothing to compare is
    no sign of another sequence: test_nothing_to_compare_is_not_warned_about); the file is now named once."""
    results = tmp_path / "results.txt"
    results.write_text("1,1,0,0,10,20,1,-1,-1,-1\n")
    empty, ignored = tmp_path / "empty.txt", tmp_path / "ignored.txt"
    empty.write_text("")
    ignored.write_text("1,1,0,0,10,20,0,-1,-1,-1\n")
    for gt, rows, fp in ((empty, 0, 1), (ignored, 1, 0)):  # the box on the ignored row is removed
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="daemon"):
            assert fp == evaluate(gt, results).FP
            assert main(["eval", "--gt", str(gt), "--results", str(results)]) == 0
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 2, said  # once by evaluate, once by eval
        for message in said:
            assert message.startswith(f"{gt}: no one to score in this ground truth ({rows} rows"), message
        assert "same sequence?" not in caplog.text
