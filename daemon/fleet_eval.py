"""Fleet-level scoring: per-camera tracking metrics and cross-camera (global) identity metrics.

* Per camera: HOTA / IDF1 / MOTA of its camera-scoped track ids (``daemon.evaluate``).
* Global: the cameras' sequences laid end to end as one sequence (camera i's frames shifted past camera i-1's),
  scored with the GLOBAL ids as track ids and the ground truth's person ids (which are the fleet-wide identities
  in a scenario built by ``daemon.scenario``). A person keeps one id across cameras only if the fleet resolved
  them to one global id, so global IDF1 and HOTA measure cross-camera identity as well as tracking; they match
  ids over the whole sequence, so the order the cameras are laid in does not change them. The CLEAR scores
  (MOTA, MOTP, IDSW, FP, FN, TP, MT/PT/ML, Frag) are instead each camera's sequence scored with the global ids
  and summed, as a benchmark sums its sequences' (``evaluate.with_clear_of_sequences``): laid end to end, an id
  switch would be counted between the last frame of one camera and the first of the next, which depends on
  the order the cameras are laid in, and no order is the true one (cameras run side by side in time). IDSW then
  counts the times a person's global id changed within one camera's view (a tracker's switch carried into the
  ids, or the resolver changing a track's id); a person given another id on another camera costs IDF1, HOTA's
  association and shows in the splits and the consistency below. MT/PT/ML count each camera's trajectory of a
  person (so they can add up to more than GT_IDs, the people of the whole fleet).
* Merges and splits, from per-frame one-to-one matches (Hungarian on IoU >= 0.5) of ground-truth boxes to
  global-id boxes, on the boxes the scores take (considered gt rows; a box the distractor rule gives an ignored
  row is no one's match):
  - ``false_merge_pct``: of all matched boxes, the share whose global id mostly belongs to ANOTHER person;
  - ``merges_by`` (with the cameras' own tracks): that share split into the boxes a camera track carried from
    another person (the trackers' id switches) and those on tracks given another person's id (the resolver);
  - ``merged_ids``: global ids carrying at least ``min_support`` boxes of two or more people;
  - ``split_people``: people carrying at least ``min_support`` boxes under two or more global ids;
  - ``cross_camera_consistency``: of the people seen (``min_support`` boxes) on two or more cameras, the share
    whose majority global id is the same on every camera; None (null in fleet_metrics.json) when nobody was
    seen on two cameras (not measurable, which a perfect 1.0 would hide).
* Bounds, when the cameras' own track ids are given: the same scores for two resolvers run on the very same camera
  tracks, to tell the trackers' errors from the resolver's:
  - ``unmatched``: no cross-camera matching at all (each camera track its own global id);
  - ``perfect``: each camera track given the person it mostly follows. Its false merges are the trackers' id
    switches (a track that passes from one person to another), which no resolver giving whole tracks one id can
    undo; its IDF1 is the most such a resolver can reach. The daemon's resolver can beat it on merges where it
    moves a switched track to another id (a camera that sees the person go elsewhere rules the id out).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daemon.evaluate import (
    MotMetrics,
    evaluate,
    frame_boxes,
    frames_scored,
    iou_matches,
    with_clear_of_sequences,
)
from daemon.motio import IntArray, MotGroundTruth, MotTracks, rows_by_frame

# In the bounds, camera i's own track ids become (i + 1)·2^40 + id: clear of persons' ids and of each other's.
_ID_SPACE = 1 << 40


@dataclass(frozen=True)
class CameraRun:
    """One camera's ground truth and results (camera-scoped and global ids) over ``frames`` frames, of which
    the camera ran every ``stride``-th (``source.stride``: frames 1, 1 + stride, ...)."""

    gt: MotGroundTruth
    local: MotTracks | None
    global_ids: MotTracks
    frames: int
    stride: int = 1

    def scored(self) -> CameraRun:
        """Only the rows of the frames the camera ran: 1..``frames`` (laid end to end, a later row would land on
        the next camera's frames; a camera alone leaves it out, as ``daemon.evaluate`` does), every
        ``stride``-th (the frames in between were not run: their people are not misses)."""
        return CameraRun(
            self.gt.select(self._ran(self.gt.frame)),
            self.local.select(self._ran(self.local.frame)) if self.local is not None else None,
            self.global_ids.select(self._ran(self.global_ids.frame)),
            self.frames,
            self.stride,
        )

    def _ran(self, frame: IntArray) -> NDArray[np.bool_]:
        ran: NDArray[np.bool_] = (frame <= self.frames) & ((frame - 1) % self.stride == 0)
        return ran


@dataclass(frozen=True)
class Bound:
    """Global-id IDF1 and false merges a given resolver would score on the cameras' own tracks."""

    IDF1: float
    false_merge_pct: float

    def as_dict(self) -> dict[str, float]:
        return {"IDF1": self.IDF1, "false_merge_pct": self.false_merge_pct}


@dataclass(frozen=True)
class FleetMetrics:
    per_camera: dict[str, MotMetrics]
    global_metrics: MotMetrics
    matched_boxes: int
    false_merge_pct: float
    merged_ids: int
    split_people: int
    people_on_several_cameras: int
    cross_camera_consistency: float | None  # None: nobody seen on two cameras
    unmatched: Bound | None = None
    perfect: Bound | None = None
    merges_by: tuple[float, float] | None = None  # (trackers', resolver's) % of matched boxes; merge_sources

    def as_dict(self) -> dict[str, Any]:
        bounds = {k: b.as_dict() for k, b in (("unmatched", self.unmatched), ("perfect", self.perfect)) if b}
        return {
            "per_camera": {k: v.as_dict() for k, v in self.per_camera.items()},
            "global": self.global_metrics.as_dict(),
            "matched_boxes": self.matched_boxes,
            "false_merge_pct": self.false_merge_pct,
            "merged_ids": self.merged_ids,
            "split_people": self.split_people,
            "people_on_several_cameras": self.people_on_several_cameras,
            "cross_camera_consistency": self.cross_camera_consistency,
            "bounds": bounds,
            "false_merge_pct_by": (
                {"trackers": self.merges_by[0], "resolver": self.merges_by[1]} if self.merges_by else {}
            ),
        }

    def text(self) -> str:
        g = self.global_metrics
        lines = [f"camera {k}: {v.summary()}" for k, v in self.per_camera.items()]
        lines.append(
            f"global ids: HOTA {g.HOTA:.1f} IDF1 {g.IDF1:.1f} MOTA {g.MOTA:.1f} IDSW {g.IDSW} (MOTA and IDSW "
            "summed over the cameras: a switch is counted within a camera's view)"
        )
        several, share = self.people_on_several_cameras, self.cross_camera_consistency
        consistency = (
            f"{share:.0%} of {counted(several, 'person', 'people')} seen on several "
            f"cameras {'keeps' if several == 1 else 'keep'} one global id"
            if share is not None
            else "nobody was seen on several cameras"
        )
        boxes = counted(self.matched_boxes, "matched box", "matched boxes")
        lines.append(
            f"false merges {self.false_merge_pct:.2f}% of {boxes}; "
            f"{counted(self.merged_ids, 'merged global id')}, "
            f"{counted(self.split_people, 'split person', 'split people')}; {consistency}"
        )
        if self.merges_by:
            lines.append(
                f"of the false merges: {self.merges_by[0]:.2f}% on boxes a camera track carried over from "
                f"another person (trackers' id switches), {self.merges_by[1]:.2f}% on tracks given another "
                "person's id (the resolver)"
            )
        if self.unmatched and self.perfect:
            lines.append(
                f"same camera tracks, no cross-camera matching: IDF1 {self.unmatched.IDF1:.1f}, false merges "
                f"{self.unmatched.false_merge_pct:.2f}%; perfect whole-track resolver: IDF1 "
                f"{self.perfect.IDF1:.1f}, false merges {self.perfect.false_merge_pct:.2f}% "
                "(its merges are the trackers' id switches)"
            )
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class TimedTruth:
    """A camera's ground truth on the fleet clock: its MOT frame k at ``offset_s + (k - 1) / fps``."""

    gt: MotGroundTruth
    fps: float
    offset_s: float

    def times(self, frames: IntArray) -> NDArray[np.float64]:
        return self.offset_s + (frames - 1) / self.fps


def seen_at_once(a: TimedTruth, b: TimedTruth) -> tuple[int, int, int] | None:
    """(gt id, a's frame, b's frame) of the lowest id that both truths show (rows to be scored) at one moment:
    frames within half the shorter frame interval of each other; None where none is. Cameras whose views do not
    overlap never see one person at once, so such an id means two people, one on each (a truth numbered per
    camera), or views that overlap after all."""
    tolerance = 0.5 / max(a.fps, b.fps)
    ga, gb = a.gt.considered(), b.gt.considered()
    for pid in np.intersect1d(ga.track_id, gb.track_id):
        fa, fb = np.sort(ga.frame[ga.track_id == pid]), np.sort(gb.frame[gb.track_id == pid])
        ta, tb = a.times(fa), b.times(fb)
        after = np.clip(np.searchsorted(ta, tb), 0, len(ta) - 1)
        before = np.clip(after - 1, 0, len(ta) - 1)
        nearest = np.where(np.abs(ta[before] - tb) <= np.abs(ta[after] - tb), before, after)
        close = np.abs(ta[nearest] - tb) < tolerance
        if close.any():
            j = int(np.argmax(close))
            return int(pid), int(fa[nearest[j]]), int(fb[j])
    return None


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun that agrees with it ('1 person', '2 people'; ``many`` defaults to ``one`` + 's'), for
    the fleet's texts (these scores, the report)."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def concatenate(runs: dict[str, CameraRun]) -> tuple[MotGroundTruth, MotTracks, int]:
    """All cameras as one sequence: each camera's frames shifted past the previous cameras' frames."""
    gts: list[MotGroundTruth] = []
    preds: list[MotTracks] = []
    offset = 0
    for run in runs.values():
        g, p = run.gt, run.global_ids
        gts.append(MotGroundTruth(g.frame + offset, g.track_id, g.xywh, g.consider, g.distractor))
        preds.append(MotTracks(p.frame + offset, p.track_id, p.xywh, p.conf))
        offset += run.frames
    gt = MotGroundTruth.joined(gts)
    pred = MotTracks(
        np.concatenate([p.frame for p in preds]),
        np.concatenate([p.track_id for p in preds]),
        np.concatenate([p.xywh for p in preds]),
        np.concatenate([p.conf for p in preds]),
    )
    return gt, pred, offset


def matches(gt: MotGroundTruth, pred: MotTracks) -> list[tuple[int, int, int]]:
    """(frame, person id, predicted id) of every one-to-one IoU >= 0.5 match, frame by frame, of the boxes the
    per-camera scores take (``evaluate.frame_boxes``: considered gt only, and no predicted box the distractor
    rule gave an ignored row): ``evaluate.iou_matches``, the scores' IoU and threshold rule (pairs under it out
    before the assignment: poor ones never outweigh one good one). CLEAR's matches of a frame can be fewer: it
    keeps a person's match of the frame before where it can, even where that leaves another out."""
    pred_rows = rows_by_frame(pred.frame)
    found: list[tuple[int, int, int]] = []
    for frame, g_rows in rows_by_frame(gt.frame).items():
        p_rows = pred_rows.get(frame)
        if p_rows is None:
            continue
        boxes = frame_boxes(gt, pred, g_rows, p_rows)
        r, c = iou_matches(boxes.similarity)
        for i, j in zip(r, c, strict=True):
            found.append(
                (int(frame), int(gt.track_id[boxes.gt_rows[i]]), int(pred.track_id[boxes.pred_rows[j]]))
            )
    return found


def matched_pairs(gt: MotGroundTruth, pred: MotTracks) -> list[tuple[int, int]]:
    """(person id, predicted id) of every match (see ``matches``)."""
    return [(person, pid) for _, person, pid in matches(gt, pred)]


def _supported(counter: Counter[int], min_support: int) -> list[int]:
    return [k for k, n in counter.items() if n >= min_support]


MergeSplit = tuple[int, float, int, int, int, float | None]  # what merge_split_counts returns


def merge_split_counts(pairs_by_camera: dict[str, list[tuple[int, int]]], min_support: int) -> MergeSplit:
    """(matched, false_merge_pct, merged_ids, split_people, people on several cameras, consistency: None
    where that is 0 people)."""
    people_of: dict[int, Counter[int]] = defaultdict(Counter)  # global id -> person -> boxes
    ids_of: dict[int, Counter[int]] = defaultdict(Counter)  # person -> global id -> boxes
    per_camera_ids: dict[int, dict[str, Counter[int]]] = defaultdict(lambda: defaultdict(Counter))
    for cam, pairs in pairs_by_camera.items():
        for person, gid in pairs:
            people_of[gid][person] += 1
            ids_of[person][gid] += 1
            per_camera_ids[person][cam][gid] += 1
    matched = sum(len(p) for p in pairs_by_camera.values())
    wrong = sum(sum(c.values()) - max(c.values()) for c in people_of.values())
    merged = sum(1 for c in people_of.values() if len(_supported(c, min_support)) >= 2)
    split = sum(1 for c in ids_of.values() if len(_supported(c, min_support)) >= 2)
    several = consistent = 0
    for cams in per_camera_ids.values():
        seen = {cam: c.most_common(1)[0][0] for cam, c in cams.items() if sum(c.values()) >= min_support}
        if len(seen) >= 2:
            several += 1
            consistent += len(set(seen.values())) == 1
    pct = 100.0 * wrong / matched if matched else 0.0
    return matched, pct, merged, split, several, consistent / several if several else None


def _with_ids(tracks: MotTracks, ids: IntArray) -> MotTracks:
    return MotTracks(tracks.frame, ids, tracks.xywh, tracks.conf)


def _laid_end_to_end(runs: dict[str, CameraRun]) -> MotMetrics:
    gt, pred, frames = concatenate(runs)
    return evaluate(gt, pred, frames, warn_mismatch=False)


def global_scores(runs: dict[str, CameraRun]) -> MotMetrics:
    """The global ids' scores (see the module doc): identity and HOTA over the cameras laid end to end, CLEAR
    summed over the cameras scored one by one; neither depends on the order of ``runs``."""
    laid = _laid_end_to_end(runs)
    summed = with_clear_of_sequences(laid, [(run.gt, run.global_ids, run.frames) for run in runs.values()])
    return replace(summed, Frames=sum(frames_scored(run.frames, run.stride) for run in runs.values()))


def _merge_split(runs: dict[str, CameraRun], min_support: int) -> MergeSplit:
    pairs = {name: matched_pairs(run.gt, run.global_ids) for name, run in runs.items()}
    return merge_split_counts(pairs, min_support)


def _bound(runs: dict[str, CameraRun], min_support: int) -> Bound:
    _, false_merge_pct, *_ = _merge_split(runs, min_support)
    return Bound(_laid_end_to_end(runs).IDF1, false_merge_pct)


def _unique_per_camera(local: MotTracks, index: int) -> IntArray:
    """Camera tracks as global ids no other camera (and no person id) uses."""
    return np.asarray(local.track_id, np.int64) + (index + 1) * _ID_SPACE


def perfect_ids(gt: MotGroundTruth, local: MotTracks, index: int) -> IntArray:
    """Each camera track's rows given the person the track mostly follows (the best a resolver of whole tracks
    can do). A track that follows nobody keeps an id of its own, and so does the second of two tracks that
    follow the same person in one frame (a frame holds each id once)."""
    follows: dict[int, Counter[int]] = defaultdict(Counter)
    for person, track in matched_pairs(gt, local):
        follows[track][person] += 1
    own = _unique_per_camera(local, index)
    ids = np.array(
        [
            follows[int(t)].most_common(1)[0][0] if int(t) in follows else o
            for t, o in zip(local.track_id, own, strict=True)
        ],
        np.int64,
    )
    taken: set[tuple[int, int]] = set()
    for row, (frame, gid) in enumerate(zip(local.frame.tolist(), ids.tolist(), strict=True)):
        if (frame, gid) in taken:
            ids[row] = own[row]
        taken.add((frame, int(ids[row])))
    return ids


def track_bounds(runs: dict[str, CameraRun], min_support: int = 10) -> tuple[Bound, Bound] | None:
    """(no cross-camera matching, perfect resolver) on the cameras' own tracks; None without them."""
    unmatched, perfect = {}, {}
    for index, (name, run) in enumerate(runs.items()):
        local = run.local
        if local is None:
            return None
        unmatched[name] = CameraRun(
            run.gt, local, _with_ids(local, _unique_per_camera(local, index)), run.frames, run.stride
        )
        perfect[name] = CameraRun(
            run.gt, local, _with_ids(local, perfect_ids(run.gt, local, index)), run.frames, run.stride
        )
    return _bound(unmatched, min_support), _bound(perfect, min_support)


def merge_sources(runs: dict[str, CameraRun]) -> tuple[float, float] | None:
    """The false merges split by who made them, each in % of the matched boxes: (the trackers', the
    resolver's); None without the cameras' own tracks. A box under a global id that mostly belongs to another
    person is the tracker's error when its camera track mostly follows someone else too (an id switch carried
    it there), the resolver's when the track follows this person and was given another person's id (a wrong
    cross-camera match, or one the resolver carried on from a switched track)."""
    rows: list[tuple[int, int, tuple[str, int] | None]] = []  # (person, global id, camera track)
    follows: dict[tuple[str, int], Counter[int]] = defaultdict(Counter)
    for name, run in runs.items():
        if run.local is None:
            return None
        track_at: dict[tuple[int, int], tuple[str, int]] = {}
        for frame, person, tid in matches(run.gt, run.local):
            follows[(name, tid)][person] += 1
            track_at[(frame, person)] = (name, tid)
        rows.extend((p, g, track_at.get((f, p))) for f, p, g in matches(run.gt, run.global_ids))
    people_of: dict[int, Counter[int]] = defaultdict(Counter)
    for person, gid, _ in rows:
        people_of[gid][person] += 1
    owner = {gid: c.most_common(1)[0][0] for gid, c in people_of.items()}
    tracker = resolver = 0
    for person, gid, track in rows:
        if person == owner[gid]:
            continue
        if track is not None and follows[track].most_common(1)[0][0] != person:
            tracker += 1
        else:
            resolver += 1
    n = len(rows)
    return (100.0 * tracker / n, 100.0 * resolver / n) if n else (0.0, 0.0)


def evaluate_fleet(runs: dict[str, CameraRun], min_support: int = 10) -> FleetMetrics:
    """Score a fleet run (see the module doc) on each camera's ``CameraRun.scored`` rows."""
    runs = {name: run.scored() for name, run in runs.items()}
    per_camera = {
        name: evaluate(
            run.gt,
            run.local if run.local is not None else run.global_ids,
            run.frames,
            stride=run.stride,
            warn_mismatch=False,
        )
        for name, run in runs.items()
    }
    global_metrics = global_scores(runs)
    matched, pct, merged, split, several, consistency = _merge_split(runs, min_support)
    unmatched, perfect = track_bounds(runs, min_support) or (None, None)
    return FleetMetrics(
        per_camera,
        global_metrics,
        matched,
        pct,
        merged,
        split,
        several,
        consistency,
        unmatched,
        perfect,
        merge_sources(runs),
    )
