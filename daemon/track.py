"""BoT-SORT with ReID behind a small interface: detections + embeddings in, typed tracks out.

The tracker is BoxMOT's ``BotSort``; it never loads a model here. Embeddings are an input. With the
``needed`` policy only some boxes carry an embedding on a given frame (new, recovering, ambiguous or due for a
refresh); the rest are matched on motion alone. BoxMOT's BotSort assumes every high-score box has a feature,
so a thin subclass lets a box without one (an all-zero row) fall back to IoU in the association costs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from boxmot import BotSort
from boxmot.structures import Boxes
from boxmot.structures import Detections as BmDetections
from boxmot.trackers.box.botsort.track import STrack, TrackState
from boxmot.trackers.common.association.matching import fuse_score
from numpy.typing import NDArray

from daemon.boxes import box_iou
from daemon.config import EmbedderConfig, TrackerConfig
from daemon.types import Detections, FloatArray, Track

_REMOVED_BUFFER = 64  # removed tracks BoxMOT keeps for duplicate suppression (bounded)
# BoxMOT keeps a lost track for int(frame_rate / 30 * track_buffer) frames; at this rate that is track_buffer
# exactly (any other rate loses a frame to float rounding: 7 fps and 60 gave 59).
_BOXMOT_BASE_RATE = 30


def _sparse_embedding_distance(tracks: list[STrack], detections: list[STrack]) -> NDArray[np.float64]:
    """Cosine distance where both sides have a feature; 1.0 (no appearance evidence) elsewhere."""
    cost = np.ones((len(tracks), len(detections)), np.float64)
    ti = [i for i, t in enumerate(tracks) if t.smooth_feat is not None]
    di = [j for j, d in enumerate(detections) if d.curr_feat is not None]
    if ti and di:
        tf = np.stack([tracks[i].smooth_feat for i in ti]).astype(np.float32)
        df = np.stack([detections[j].curr_feat for j in di]).astype(np.float32)
        tf /= np.maximum(np.linalg.norm(tf, axis=1, keepdims=True), 1e-12)
        df /= np.maximum(np.linalg.norm(df, axis=1, keepdims=True), 1e-12)
        cost[np.ix_(ti, di)] = np.clip(1.0 - tf @ df.T, 0.0, 2.0)
    return cost


class _SparseReidBotSort(BotSort):  # type: ignore[misc]
    """BotSort that accepts boxes without an embedding (all-zero rows) on a frame."""

    lost_stracks: list[STrack]

    def _split_detections(self, dets: Any, embs: Any) -> tuple[Any, Any, Any, Any]:
        """First association: score >= track_high_thresh; second: track_low_thresh < score < track_high_thresh.

        BoxMOT's split takes score > track_high_thresh for the first, so a box scored exactly the threshold went
        to neither and was dropped (a tracked person lost for that frame; plan_embeddings embedded it for nothing).
        """
        batch = self._make_detection_batch(dets, embs=embs)
        high = batch.confs >= self.track_high_thresh
        first = batch.select(high)
        second = batch.select(~high & (batch.confs > self.track_low_thresh))
        dtype = dets.dtype
        return (
            batch.as_indexed_detections(dtype=dtype),
            first.as_indexed_detections(dtype=dtype),
            first,
            second.as_indexed_detections(dtype=dtype),
        )

    def _create_detections(self, dets_first: Any, features_high: Any) -> list[STrack]:
        out = []
        for det, feat in zip(dets_first, features_high, strict=True):
            has_feat = self.use_embeddings and bool(np.any(feat))
            out.append(
                STrack(
                    det,
                    feat if has_feat else None,
                    id_allocator=self.id_allocator,
                    max_obs=self.max_obs,
                    is_obb=self.is_obb,
                )
            )
        return out

    def _appearance_cost(self, tracks: Any, detections: Any, scale: float, fuse: bool) -> Any:
        geometry = self.association_distance(tracks, detections)
        far = geometry > self.proximity_thresh
        if fuse:
            geometry = fuse_score(geometry, detections)
        if not self.use_embeddings:
            return geometry
        emb = _sparse_embedding_distance(tracks, detections) / scale
        emb[emb > self.appearance_thresh] = 1.0
        emb[far] = 1.0
        return np.minimum(geometry, emb)

    def _first_association_cost(self, tracks: Any, detections: Any) -> Any:
        return self._appearance_cost(tracks, detections, 1.0, self.fuse_first_associate)

    def _unconfirmed_association_cost(self, tracks: Any, detections: Any) -> Any:
        return self._appearance_cost(tracks, detections, self.unconfirmed_emb_scale, True)

    def predict_only(self) -> list[STrack]:
        """Advance one frame without detections: step every Kalman filter, associate nothing.

        BotSort's own update with no boxes would mark every tracked track lost and remove the unconfirmed ones
        (so no new track could ever be confirmed when detection skips frames). Here tracks keep their state;
        lost ones still expire after the buffer, counted in frames, and on the same frame as with every frame
        detected: BotSort's update leaves a track it removes among the lost ones until the next frame, and so
        does this. Returns the confirmed tracked tracks.
        """
        self.frame_count += 1
        self.lost_stracks = [t for t in self.lost_stracks if t.state != TrackState.Removed]
        pool = [*self.active_tracks, *self.lost_stracks]
        if pool:
            STrack.multi_predict(pool, dt=self._prediction_dt)
        removed: list[STrack] = []
        self._update_track_states(removed)
        self.removed_stracks.extend(removed)
        return [t for t in self.active_tracks if t.is_activated]


@dataclass(frozen=True, slots=True)
class TrackerUpdate:
    """What one frame did: the confirmed tracks and the ids that ended (removed) on it."""

    tracks: list[Track]
    ended: list[int]


class BotSortTracker:
    """Camera-scoped BoT-SORT: ``plan_embeddings`` -> embed the chosen boxes -> ``update``."""

    def __init__(
        self, camera: str, cfg: TrackerConfig, embed_cfg: EmbedderConfig, use_embeddings: bool
    ) -> None:
        self.camera = camera
        self.cfg = cfg
        self.embed_cfg = embed_cfg
        self.use_embeddings = use_embeddings
        self._last_embedded: dict[int, int] = {}
        self._hits: dict[int, int] = {}
        self.reset()

    def _make(self) -> _SparseReidBotSort:
        c = self.cfg
        with _quiet_boxmot():
            return _SparseReidBotSort(
                track_high_thresh=c.track_high_thresh,
                track_low_thresh=c.track_low_thresh,
                new_track_thresh=c.new_track_thresh,
                track_buffer=c.track_buffer,
                match_thresh=c.match_thresh,
                proximity_thresh=c.proximity_thresh,
                appearance_thresh=c.appearance_thresh,
                use_cmc=c.cmc_method != "none",
                cmc_method=c.cmc_method if c.cmc_method != "none" else "ecc",
                frame_rate=_BOXMOT_BASE_RATE,
                fuse_first_associate=c.fuse_first_associate,
                use_embeddings=self.use_embeddings,
                removed_stracks_buffer=_REMOVED_BUFFER,
                reid_model=_RefusingReid(),
            )

    def reset(self) -> None:
        """Forget every track and start a fresh BoxMOT tracker (also the initial state)."""
        self._frame = 0
        self._last_embedded.clear()
        self._hits.clear()
        self._ids = _IdMap()
        self._relinker = Relinker(self.cfg)
        self.relinked = 0
        self._bm = self._make()

    def plan_embeddings(self, dets: Detections) -> NDArray[np.bool_]:
        """Which boxes need an appearance embedding on this frame (a boolean mask over ``dets``)."""
        if not self.use_embeddings:
            return np.zeros(len(dets), bool)
        eligible = dets.scores >= self.cfg.track_high_thresh
        if self.embed_cfg.policy == "all" or not eligible.any():
            return eligible
        tracked = [t for t in self._bm.active_tracks if t.is_activated]
        if not tracked:
            return eligible
        t_boxes = np.stack([np.asarray(t.xyxy, np.float32) for t in tracked])
        ids = [self._ids.get(int(t.id)) for t in tracked]
        return eligible & self._needs_embedding(dets.xyxy, t_boxes, ids)

    def _needs_embedding(
        self, d_boxes: FloatArray, t_boxes: FloatArray, t_ids: list[int]
    ) -> NDArray[np.bool_]:
        amb = self.embed_cfg.ambiguity_iou
        iou_dt = box_iou(d_boxes, t_boxes)
        iou_dd = box_iou(d_boxes, d_boxes)
        np.fill_diagonal(iou_dd, 0.0)
        best = iou_dt.argmax(axis=1)
        best_iou = iou_dt.max(axis=1)
        second = np.sort(iou_dt, axis=1)[:, -2] if iou_dt.shape[1] > 1 else np.zeros(len(d_boxes), np.float32)
        stale = np.array(
            [
                self._frame - self._last_embedded.get(t_ids[k], -(10**9)) >= self.embed_cfg.refresh_every
                for k in best
            ]
        )
        unmatched = best_iou < 0.5
        ambiguous = (second > amb) | (iou_dd.max(axis=1, initial=0.0) > amb)
        return np.asarray(unmatched | ambiguous | stale, dtype=bool)

    def update(
        self, dets: Detections, embeddings: FloatArray | None, image: NDArray[np.uint8]
    ) -> TrackerUpdate:
        """Advance one frame. ``embeddings`` is (N, D) aligned with ``dets``; all-zero rows mean 'not embedded'."""
        self._frame += 1
        n = len(dets)
        emb = embeddings
        if self.use_embeddings and emb is None:
            emb = np.zeros((n, 1), np.float32)
        bm_dets = BmDetections(
            geometry=Boxes(torch.from_numpy(np.array(dets.xyxy, np.float32))),
            scores=torch.from_numpy(np.array(dets.scores, np.float32)),
            class_ids=torch.zeros(n, dtype=torch.int64),
            sample_id=f"{self.camera}:{self._frame}",
            embeddings=None if emb is None else torch.from_numpy(np.ascontiguousarray(emb, np.float32)),
        )
        out = self._bm.update(bm_dets, image)
        self._assign_ids(out.track_ids.numpy(), out.geometry.values.numpy())
        return TrackerUpdate(self._records(out, emb), self._collect_ended())

    def predict(self) -> TrackerUpdate:
        """Advance one frame with no detection run on it (``detect_every`` > 1).

        Every track's Kalman filter steps once; the confirmed tracks are reported at their predicted boxes
        (``det_index`` -1, not embedded). Nothing is associated, started or lost on such a frame.
        """
        self._frame += 1
        tracks: list[Track] = []
        for t in self._bm.predict_only():
            bm_id = int(t.id)
            if not self._ids.known(bm_id):
                continue
            tid = self._ids.get(bm_id)
            if self._hits.get(tid, 0) >= self.cfg.min_hits:
                tracks.append(self._report(tid, t.xyxy, float(getattr(t, "conf", 1.0)), -1, False))
        return TrackerUpdate(tracks, self._collect_ended())

    def _report(self, tid: int, box: Any, score: float, det_index: int, embedded: bool) -> Track:
        """A reported track record; the relinker remembers where (and when) the id was last seen."""
        b = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        self._relinker.seen(tid, b, self._frame)
        return Track(self.camera, tid, b, score, det_index, embedded)

    def _assign_ids(self, bm_ids: NDArray[np.int64], boxes: FloatArray) -> None:
        """Give each newly reported BoxMOT track a public id: a lost track's, when appearance says so."""
        by_id = {int(t.id): t for t in self._bm.active_tracks}
        # ids already on screen this frame (a lost track BoxMOT found again) cannot be taken back
        visible = {self._ids.get(int(b)) for b in bm_ids if self._ids.known(int(b))}
        for bm_id, box in zip(bm_ids, boxes, strict=True):
            if self._ids.known(int(bm_id)):
                continue
            track = by_id.get(int(bm_id))
            feat = None if track is None else track.smooth_feat
            old = self._relinker.match(feat, box, self._frame, visible) if feat is not None else None
            if old is None:
                self._ids.new(int(bm_id))
                continue
            self._ids.bind(int(bm_id), old.public_id)
            self._drop_lost(old.bm_id)
            self.relinked += 1

    def _drop_lost(self, bm_id: int) -> None:
        """Retire a lost BoxMOT track whose id was taken back, so it cannot be found again as a duplicate."""
        keep = []
        for t in self._bm.lost_stracks:
            if int(t.id) == bm_id:
                t.mark_removed()
                self._bm.removed_stracks.append(t)
            else:
                keep.append(t)
        self._bm.lost_stracks = keep

    def _records(self, out: Any, emb: FloatArray | None) -> list[Track]:
        xyxy = out.geometry.values.numpy()
        ids = out.track_ids.numpy()
        scores = out.scores.numpy()
        det_idx = out.detection_indices.numpy()
        tracks: list[Track] = []
        for box, bm_id, score, di in zip(xyxy, ids, scores, det_idx, strict=True):
            tid, di = self._ids.get(int(bm_id)), int(di)
            embedded = emb is not None and 0 <= di < len(emb) and bool(np.any(emb[di]))
            if embedded:
                self._last_embedded[tid] = self._frame
            self._hits[tid] = self._hits.get(tid, 0) + 1
            if self._hits[tid] >= self.cfg.min_hits:
                tracks.append(self._report(tid, box, float(score), di, embedded))
        return tracks

    def _collect_ended(self) -> list[int]:
        lost = {int(t.id): t for t in self._bm.lost_stracks}
        live_bm = {int(t.id) for t in self._bm.active_tracks} | set(lost)
        for bm_id, track in lost.items():
            if self._ids.known(bm_id) and track.smooth_feat is not None:
                self._relinker.lost(self._ids.get(bm_id), bm_id, track.smooth_feat)
        for bm_id in self._ids.forget_except(live_bm):
            self._relinker.removed(bm_id)
        live = {self._ids.get(b) for b in live_bm if self._ids.known(b)}
        ended = sorted(set(self._hits) - live)
        for tid in ended:
            self._hits.pop(tid, None)
            self._last_embedded.pop(tid, None)
        self._relinker.expire(self._frame)
        return ended

    def number_from(self, first: int) -> None:
        """New tracks get ids from ``first`` on (when higher than the next one): a live camera restarted goes
        on after the ids its earlier run left in the fleet, which would otherwise be taken for this run's."""
        self._ids.number_from(first)

    def finish(self) -> list[int]:
        """End every remaining track (stream over)."""
        ended = sorted(self._hits)
        self._hits.clear()
        self._last_embedded.clear()
        return ended


class _IdMap:
    """BoxMOT track id -> public (camera-scoped) id. Public ids count from 1, as MOTChallenge files do."""

    def __init__(self) -> None:
        self._map: dict[int, int] = {}
        self._next = 1

    def known(self, bm_id: int) -> bool:
        return bm_id in self._map

    def get(self, bm_id: int) -> int:
        return self._map[bm_id]

    def number_from(self, first: int) -> None:
        self._next = max(self._next, first)

    def new(self, bm_id: int) -> int:
        self._map[bm_id] = self._next
        self._next += 1
        return self._map[bm_id]

    def bind(self, bm_id: int, public_id: int) -> None:
        self._map[bm_id] = public_id

    def forget_except(self, live: set[int]) -> list[int]:
        """Drop the BoxMOT ids no longer held by BoxMOT (bounded map); return them."""
        gone = [b for b in self._map if b not in live]
        for b in gone:
            del self._map[b]
        return gone


@dataclass(slots=True)
class _Lost:
    public_id: int
    bm_id: int
    feature: FloatArray
    box: tuple[float, float, float, float]
    frame: int


class Relinker:
    """Remembers recently lost tracks (appearance, last box, last frame) so a new track can take one back.

    BoT-SORT recovers a lost track only where its predicted box still overlaps the detection; a person who
    stops, turns or is hidden for a while comes back as a new track. A new track takes back the id of the
    lost track whose appearance is closest, if that is within ``relink_thresh`` and the lost track could
    have walked there in the time it was away. Bounded: entries older than ``relink_window`` are dropped.
    """

    def __init__(self, cfg: TrackerConfig) -> None:
        self.cfg = cfg
        self._last: dict[int, tuple[tuple[float, float, float, float], int]] = {}
        self._lost: dict[int, _Lost] = {}

    def seen(self, public_id: int, box: tuple[float, float, float, float], frame: int) -> None:
        self._last[public_id] = (box, frame)
        self._lost.pop(public_id, None)

    def lost(self, public_id: int, bm_id: int, feature: FloatArray) -> None:
        if self.cfg.relink_window == 0 or public_id not in self._last:
            return
        box, frame = self._last[public_id]
        f = np.asarray(feature, np.float32)
        self._lost[public_id] = _Lost(public_id, bm_id, f / max(float(np.linalg.norm(f)), 1e-12), box, frame)

    def removed(self, bm_id: int) -> None:
        """BoxMOT dropped this track: keep its memory (until it expires) but not its BoxMOT id."""
        for entry in self._lost.values():
            if entry.bm_id == bm_id:
                entry.bm_id = -1

    def expire(self, frame: int) -> None:
        horizon = frame - max(self.cfg.relink_window, 1)
        for pid in [p for p, (_, f) in self._last.items() if f < horizon]:
            del self._last[pid]
            self._lost.pop(pid, None)

    def match(self, feature: FloatArray, box: FloatArray, frame: int, visible: set[int]) -> _Lost | None:
        """The lost track a new track (``feature``, ``box``) most plausibly is, or None; consumes it.

        ``visible``: public ids on screen now, never candidates (one person, one place).
        """
        if not self._lost:
            return None
        f = np.asarray(feature, np.float32)
        f = f / max(float(np.linalg.norm(f)), 1e-12)
        best: _Lost | None = None
        best_d = self.cfg.relink_thresh
        for entry in self._lost.values():
            if entry.public_id in visible:
                continue
            d = 1.0 - float(entry.feature @ f)
            if d <= best_d and self._reachable(entry, box, frame):
                best, best_d = entry, d
        if best is not None:
            del self._lost[best.public_id]
        return best

    def _reachable(self, entry: _Lost, box: FloatArray, frame: int) -> bool:
        gap = frame - entry.frame
        if gap <= 0 or gap > self.cfg.relink_window:
            return False
        x1, y1, x2, y2 = entry.box
        height = max(y2 - y1, float(box[3] - box[1]), 1.0)
        dx = (box[0] + box[2]) / 2 - (x1 + x2) / 2
        dy = (box[1] + box[3]) / 2 - (y1 + y2) / 2
        return float(np.hypot(dx, dy)) <= (self.cfg.relink_max_speed * gap + 1.0) * height


@contextmanager
def _quiet_boxmot() -> Iterator[None]:
    """BoxMOT logs its settings at INFO on every tracker it builds; keep that out of the worker's output."""
    logger = logging.getLogger("boxmot")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _RefusingReid:
    """Given to BotSort so that it never builds (or downloads) a ReID model of its own."""

    def get_features(self, xyxy: Any, img: Any) -> Any:
        raise RuntimeError("reid-daemon passes embeddings to BotSort; it must not compute its own")
