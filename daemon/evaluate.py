"""Tracking metrics of one sequence (HOTA, CLEAR MOT, identity), computed by TrackEval's metric classes.

The ground truth and the results are turned into the per-frame data TrackEval's ``MotChallenge2DBox``
loader hands its metrics (box IoU similarities, ids relabelled to 0..n-1), in memory, with no folder tree:

* gt rows with consider=0 are ignored. With ``distractors=True`` (the default, the MOT16/17/20 rule of
  ``MotChallenge2DBox.get_preprocessed_seq_data``) predicted boxes are first matched to *all* gt boxes of
  their frame (Hungarian on IoU, matches need IoU >= 0.5) and those matched to a distractor row are removed,
  so they count neither as true nor as false positives. With ``distractors=False`` (TrackEval's MOT15 rule,
  also py-motmetrics') ignored rows are simply dropped and boxes on them are false positives.
  A gt in the MOT16/17/20 layout has classes, and TrackEval's rule is followed (``daemon.motio``): pedestrians
  with consider=1 are scored, the distractor classes (2, 7, 8, 12) shield the boxes on them, and a box on
  another class (a car) is a false positive. TrackEval scores the MOT20 benchmark with class 6 (non-motorised
  vehicle) a distractor too: ``mot20=True`` (``reid-daemon eval --benchmark``, which takes a MOT20 sequence's
  gt for one: ``daemon.motio.mot20_sequence``). A MOT15 gt has none: every consider=0 row is a distractor.
* TP matches need IoU >= 0.5 (CLEAR, Identity); HOTA averages over IoU thresholds 0.05..0.95.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment  # no scipy stubs here
from trackeval.datasets import MotChallenge2DBox
from trackeval.metrics import CLEAR, HOTA, Count, Identity

from daemon.errors import DataError
from daemon.motio import (
    F64Array,
    IntArray,
    MotGroundTruth,
    MotTracks,
    ground_truth_from_array,
    read_ground_truth,
    read_results,
    results_from_array,
    rows_by_frame,
)

log = logging.getLogger(__name__)

IOU_THRESHOLD: Final = 0.5
"""IoU a predicted box needs with a gt box to be a match (CLEAR, Identity, distractor removal)."""
_EPS: Final = float(np.finfo(float).eps)

GroundTruthInput = MotGroundTruth | str | os.PathLike[str] | NDArray[Any]
ResultsInput = MotTracks | str | os.PathLike[str] | NDArray[Any]


@dataclass(frozen=True, slots=True)
class MotMetrics:
    """Metrics of one sequence, named as the benchmarks and TrackEval print them.

    Scores are percentages (0-100): HOTA, DetA, AssA (means over the 19 HOTA IoU thresholds), IDF1, IDP,
    IDR, MOTA, MOTP (mean IoU of the matches). Counts: IDSW, FP, FN, TP, MT/PT/ML (gt ids tracked over
    80 % / 20-80 % / under 20 % of their frames), Frag, GT_IDs and IDs (gt and predicted identities),
    GT_Dets and Dets (gt and predicted boxes scored), Frames (the frames scored: those the run processed) and
    Stride (1 in how many frames was scored: a run with ``source.stride`` skipped the others).
    """

    HOTA: float
    DetA: float
    AssA: float
    IDF1: float
    IDP: float
    IDR: float
    MOTA: float
    MOTP: float
    IDSW: int
    FP: int
    FN: int
    TP: int
    MT: int
    PT: int
    ML: int
    Frag: int
    GT_IDs: int
    IDs: int
    GT_Dets: int
    Dets: int
    Frames: int
    Stride: int = 1

    def as_dict(self) -> dict[str, float | int]:
        """Every metric by name (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def summary(self) -> str:
        """One line for logs and reports."""
        return (
            f"HOTA {self.HOTA:.2f} (DetA {self.DetA:.2f} AssA {self.AssA:.2f}) | "
            f"IDF1 {self.IDF1:.2f} (IDP {self.IDP:.2f} IDR {self.IDR:.2f}) | "
            f"MOTA {self.MOTA:.2f} MOTP {self.MOTP:.2f} | IDSW {self.IDSW} FP {self.FP} FN {self.FN} | "
            f"MT {self.MT} PT {self.PT} ML {self.ML} | IDs {self.IDs} (gt {self.GT_IDs}) | "
            f"{self.Frames} frames"
            + (f" (1 in {self.Stride}: source.stride {self.Stride})" if self.Stride > 1 else "")
        )


def _load_gt(src: GroundTruthInput, mot20: bool) -> MotGroundTruth:
    if isinstance(src, MotGroundTruth):
        if mot20:
            raise ValueError(
                "mot20 is a rule of reading the gt: read it with read_ground_truth(path, mot20=True)"
            )
        return src
    if isinstance(src, np.ndarray):
        gt, name = ground_truth_from_array(src, mot20=mot20), "<ground-truth array>"
    else:
        gt, name = read_ground_truth(src, mot20=mot20), str(src)
    warn_if_nobody_to_score(gt, name)
    return gt


def warn_if_nobody_to_score(gt: MotGroundTruth, name: str) -> None:
    """A warning naming ``name`` (the file) when ``gt`` holds no one to score: empty, or every row ignored
    (consider=0, or not a pedestrian), so that every result box is a false positive and HOTA, IDF1 and MOTA say
    nothing of the tracking. Not the mismatch warning (``sequence_mismatch``): a gt with nobody in it is no sign
    of another sequence's results; a record passed in (a fleet camera's truth cut from a scenario, which may
    rightly show no one) is the caller's to judge."""
    if gt.consider.any():
        return
    log.warning(
        "%s: no one to score in this ground truth (%d rows, none %s): every result box counts as a false "
        "positive, and HOTA, IDF1 and MOTA say nothing of the tracking; is it the right file?",
        name,
        len(gt),
        "a pedestrian (class 1) with consider=1" if gt.distractor is not None else "with consider=1",
    )


def _load_results(src: ResultsInput) -> MotTracks:
    if isinstance(src, MotTracks):
        return src
    if isinstance(src, np.ndarray):
        return results_from_array(src)
    return read_results(src)


def _check_unique_ids(frame: IntArray, ids: IntArray, what: str) -> None:
    if len(frame) == 0:
        return
    pairs, counts = np.unique(np.stack([frame, ids], axis=1), axis=0, return_counts=True)
    if counts.max() > 1:
        f, i = pairs[int(np.argmax(counts > 1))]
        raise DataError(f"{what}: id {i} appears more than once in frame {f}")


def box_ious(gt_xywh: F64Array, pred_xywh: F64Array) -> F64Array:
    """(N, M) IoU of gt and predicted top-left/size boxes: TrackEval's own, in float64, the one
    MotChallenge2DBox._calculate_similarities uses (and the fleet's merges match on)."""
    ious: F64Array = MotChallenge2DBox._calculate_box_ious(gt_xywh, pred_xywh, box_format="xywh")
    return ious


def iou_matches(similarity: F64Array) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(rows, columns) of the one-to-one matches of ``similarity`` (gt x predicted IoU): the Hungarian over the
    pairs of IoU >= IOU_THRESHOLD, those under it out before the assignment, as MotChallenge2DBox's
    preprocessing matches (and TrackEval's CLEAR, which puts the person's match of the frame before first)."""
    scores = similarity.copy()
    scores[scores < IOU_THRESHOLD - _EPS] = 0
    rows, cols = linear_sum_assignment(-scores)
    matched = scores[rows, cols] > _EPS
    return rows[matched], cols[matched]


def _distractor_matches(similarity: F64Array, distractor: NDArray[np.bool_]) -> NDArray[np.intp]:
    """Columns of predicted boxes matched to a distractor gt row (as MotChallenge2DBox preprocessing)."""
    rows, cols = iou_matches(similarity)
    removed: NDArray[np.intp] = cols[distractor[rows]]
    return removed


@dataclass(frozen=True, slots=True)
class FrameBoxes:
    """One frame's boxes as the scores take them: its considered gt rows, its predicted rows left once the
    distractor rule (``distractors``) removed those on ignored rows, and their IoU (gt x predicted)."""

    gt_rows: NDArray[np.intp]
    pred_rows: NDArray[np.intp]
    similarity: F64Array


def frame_boxes(
    gt: MotGroundTruth,
    pred: MotTracks,
    gt_rows: NDArray[np.intp],
    pred_rows: NDArray[np.intp],
    distractors: bool = True,
) -> FrameBoxes:
    """The rows ``gt_rows`` and ``pred_rows`` of one frame that are scored (see the module docstring): the one
    rule of the scores and of the fleet's merges (``fleet_eval.matches``)."""
    similarity = box_ious(gt.xywh[gt_rows], pred.xywh[pred_rows])
    consider, distractor = gt.consider[gt_rows], gt.distractors()[gt_rows]
    keep_pred = np.ones(len(pred_rows), dtype=bool)
    if distractors and len(gt_rows) > 0 and len(pred_rows) > 0 and distractor.any():
        keep_pred[_distractor_matches(similarity, distractor)] = False
    return FrameBoxes(gt_rows[consider], pred_rows[keep_pred], similarity[consider][:, keep_pred])


def _relabel(ids_per_frame: list[IntArray]) -> tuple[list[IntArray], int]:
    """Ids mapped to 0..n-1 over the whole sequence, as TrackEval's metrics index arrays with them."""
    unique = np.unique(np.concatenate([np.zeros(0, np.int64), *ids_per_frame]))
    return [np.searchsorted(unique, ids).astype(int) for ids in ids_per_frame], len(unique)


_NO_ROWS: Final = np.zeros(0, dtype=np.intp)


def _sequence_data(gt: MotGroundTruth, pred: MotTracks, num_frames: int, distractors: bool) -> dict[str, Any]:
    """The ``data`` dict TrackEval's metrics take, as MotChallenge2DBox.get_preprocessed_seq_data makes it, of
    the frames 1..``num_frames`` that hold a row: a frame of none adds nothing to any of their counts (CLEAR's
    and HOTA's, Identity's; ``Frames`` is counted apart), and a results row at frame 10**9 would otherwise cost
    10**9 empty frames of time and memory."""
    gt_by_frame, pred_by_frame = rows_by_frame(gt.frame), rows_by_frame(pred.frame)
    with_rows = sorted(f for f in gt_by_frame.keys() | pred_by_frame.keys() if 1 <= f <= num_frames)
    frames = [
        frame_boxes(gt, pred, gt_by_frame.get(f, _NO_ROWS), pred_by_frame.get(f, _NO_ROWS), distractors)
        for f in with_rows
    ]
    gt_ids, num_gt_ids = _relabel([gt.track_id[fb.gt_rows] for fb in frames])
    pred_ids, num_pred_ids = _relabel([pred.track_id[fb.pred_rows] for fb in frames])
    return {
        "seq": "sequence",
        "num_timesteps": len(frames),
        "gt_ids": gt_ids,
        "tracker_ids": pred_ids,
        "similarity_scores": [fb.similarity for fb in frames],
        "num_gt_ids": num_gt_ids,
        "num_tracker_ids": num_pred_ids,
        "num_gt_dets": sum(len(ids) for ids in gt_ids),
        "num_tracker_dets": sum(len(ids) for ids in pred_ids),
    }


def _metric_config() -> dict[str, Any]:
    return {"THRESHOLD": IOU_THRESHOLD, "PRINT_CONFIG": False}


def _run_trackeval(data: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for metric in (HOTA(), CLEAR(_metric_config()), Identity(_metric_config()), Count()):
        res.update(metric.eval_sequence(data))
    return res


def _pct(value: Any) -> float:
    return 100.0 * float(np.mean(value))


def _clear_fields(res: dict[str, Any]) -> dict[str, Any]:
    """The MotMetrics fields that TrackEval's CLEAR metric gives, from its results."""
    return {
        "MOTA": _pct(res["MOTA"]),
        "MOTP": _pct(res["MOTP"]),
        "IDSW": int(res["IDSW"]),
        "FP": int(res["CLR_FP"]),
        "FN": int(res["CLR_FN"]),
        "TP": int(res["CLR_TP"]),
        "MT": int(res["MT"]),
        "PT": int(res["PT"]),
        "ML": int(res["ML"]),
        "Frag": int(res["Frag"]),
    }


def _to_metrics(res: dict[str, Any], frames: int, stride: int) -> MotMetrics:
    return MotMetrics(
        HOTA=_pct(res["HOTA"]),
        DetA=_pct(res["DetA"]),
        AssA=_pct(res["AssA"]),
        IDF1=_pct(res["IDF1"]),
        IDP=_pct(res["IDP"]),
        IDR=_pct(res["IDR"]),
        **_clear_fields(res),
        GT_IDs=int(res["GT_IDs"]),
        IDs=int(res["IDs"]),
        GT_Dets=int(res["GT_Dets"]),
        Dets=int(res["Dets"]),
        Frames=frames,
        Stride=stride,
    )


def evaluate(
    gt_path_or_array: GroundTruthInput,
    results_path_or_array: ResultsInput,
    num_frames: int | None = None,
    *,
    distractors: bool = True,
    mot20: bool = False,
    stride: int = 1,
    warn_mismatch: bool = True,
) -> MotMetrics:
    """Score tracker results against ground truth over MOT frames ``1..num_frames``.

    Either input is a MOT file path, an (N, 7..10) array in the file's column layout, or a record read
    with :mod:`daemon.motio`. ``num_frames`` defaults to the last frame in either input; rows of later
    frames are left out (a run stopped early is scored on the frames it saw). ``stride`` > 1 scores only
    frames 1, 1 + stride, ... (a run with ``source.stride`` saw only those; ``Frames`` counts only those).
    ``distractors`` chooses how boxes on distractor gt rows count (consider=0 rows of a MOT15 gt; see the
    module docstring); ``mot20`` reads a gt path or array with TrackEval's MOT20 rule (class 6, non-motorised
    vehicle, a distractor too; a record comes read already: ValueError).
    ``warn_mismatch`` logs a warning for
    results that look like another sequence's (``sequence_mismatch``); off where the ground truth was made for
    these very results (a fleet scenario's cameras). Malformed input raises DataError.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    gt = _load_gt(gt_path_or_array, mot20)
    pred = _load_results(results_path_or_array)
    if stride > 1:
        gt, pred = gt.select((gt.frame - 1) % stride == 0), pred.select((pred.frame - 1) % stride == 0)
    _check_unique_ids(gt.frame, gt.track_id, "ground truth")
    _check_unique_ids(pred.frame, pred.track_id, "results")
    if num_frames is None:
        num_frames = int(max(gt.frame.max(initial=0), pred.frame.max(initial=0)))
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    data = _sequence_data(gt, pred, num_frames, distractors)
    metrics = _to_metrics(_run_trackeval(data), frames_scored(num_frames, stride), stride)
    for problem in sequence_mismatch(gt, pred, metrics) if warn_mismatch else []:
        log.warning("%s: are the results and the ground truth of the same sequence?", problem)
    return metrics


def with_clear_of_sequences(
    metrics: MotMetrics, sequences: list[tuple[MotGroundTruth, MotTracks, int]], *, distractors: bool = True
) -> MotMetrics:
    """``metrics`` with its CLEAR fields (MOTA, MOTP, IDSW, FP, FN, TP, MT, PT, ML, Frag) replaced by those of
    ``sequences`` (ground truth, results, frames 1..n; inputs ``evaluate`` has checked) each scored on its own
    and combined as TrackEval combines a benchmark's sequences: counts summed, MOTA and MOTP from the sums. An
    id switch is then counted within a sequence only, never between the end of one and the start of the next;
    MT, PT and ML count each sequence's trajectory of a person."""
    clear = CLEAR(_metric_config())
    each = {
        str(i): clear.eval_sequence(_sequence_data(gt, pred, frames, distractors))
        for i, (gt, pred, frames) in enumerate(sequences)
    }
    return replace(metrics, **_clear_fields(clear.combine_sequences(each)))


def frames_scored(num_frames: int, stride: int) -> int:
    """How many of the frames 1..``num_frames`` a run with ``source.stride`` ``stride`` processed: 1, 1 + stride, ..."""
    return len(range(1, num_frames + 1, stride))


def sequence_mismatch(gt: MotGroundTruth, pred: MotTracks, metrics: MotMetrics) -> list[str]:
    """Signs that results were scored against another sequence's ground truth (empty when none)."""
    problems = []
    gt_last, pred_last = int(gt.frame.max(initial=0)), int(pred.frame.max(initial=0))
    if gt_last and pred_last > gt_last:
        problems.append(f"the results run to frame {pred_last}, the ground truth ends at frame {gt_last}")
    if metrics.TP == 0 and metrics.Dets and metrics.GT_Dets:
        problems.append(
            f"none of the {metrics.Dets} result boxes overlaps a ground-truth box (IoU >= {IOU_THRESHOLD})"
        )
    return problems
