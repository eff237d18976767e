"""One camera's identity resolver: which person each track is, fleet-wide. Pure: no I/O, no clock, no sockets.

Per frame (``update``), for the camera's reported tracks:

1. **Observe.** A track's embedding of this frame (the row ``det_index`` of the frame's embeddings; a zero
   row means "not embedded") is offered to its :class:`TrackProfile` with the box's quality
   (daemon/identity/quality.py), at most one per track per ``decision_interval_s`` (the others not observed, so
   the counts below last as long at any frame rate). Only tracks with a new accepted observation (or that just
   lost their id) are *decided* this frame; the others keep their identity.
2. **Match, in order**, as one-to-one assignments over the tracks being decided (Hungarian, maximising the
   total similarity above the threshold): (a) named identities of the local gallery, (b) the fleet's
   identities (remote tracks received through ``ingest_remote`` and this camera's own past tracks; a track
   is never compared with its own exemplars, though the record of its earlier run that this resolver ended, a
   track the tracker reports again after it timed out here, is one of those past tracks, and one that takes
   that record's id back keeps its exemplars, within exemplars_per_track (``TrackProfile.resume``); an
   identity known only from the other tracks of the frame is someone else; a best match closer than
   ``fleet_distinct_margin`` to the runner-up counts as no match),
   (c) a new global id from the injected allocator, only for a track with ``new_min_observations``
   observations and a best quality of ``new_min_quality``; otherwise it stays ``pending``.
3. **Guards.** Ids held by the other tracks of the frame are excluded, so two co-visible tracks never share
   an id (after a label merge or a lost track's return, the track that took the id first keeps it). An id
   claimed by another camera is excluded while that claim is live (unless the views overlap), and until the
   minimum travel time from there has passed (daemon/identity/travel.py); when two far-apart cameras took
   one id at the same moment, the one that took it later releases it as soon as it hears of the other.
   Hysteresis: a track's current identity gets ``hysteresis_margin`` added, and a challenger must win
   ``hysteresis_count`` consecutive decisions before the identity changes (when holding tracks keep their
   ids, the rest are re-assigned around them, and their new offers pass the hysteresis too).
   With site positions (daemon/identity/site.py), an identity last seen too far from where the track is now,
   or from where it first appeared, is ruled out; one seen near gains up to ``site_weight``; one the
   positions say nothing for needs ``look_only_threshold``.
4. **Publish** a :class:`ProfileUpdate` when a track's identity is decided or changes, when its exemplars
   changed (at most every ``publish_interval_s``), as a keep-alive every half ``claim_ttl_s`` while it is
   seen (no exemplars), as ended once it walked out of view ``lost_after_s`` ago (last seen at the frame's
   edge; again when found), and when it ends.

Timestamps are seconds on one clock the whole fleet shares (live: Valkey's time at each frame, as the fleet
link reads it, daemon/fleet.py; a replay's media time; in tests often the wall clock); the resolver's clock is
the latest frame time it was given (a frame stamped earlier, after the clock stepped back, is taken at that
time): updates are stamped with it and claims are judged by it. Intervals
of the camera's own (between two updates of a track, keep-alives, lost_after_s, velocities) are measured on
the frame times with every step back taken out, so that they keep their pace while the wall clock catches up
with the resolver's; in a replay (frame times never go back) both are the frame time.
``track_timeout_s`` runs on a third clock, the frame clock, which goes on only while frames come: a gap
between two frames counts as ``max_frame_gap_s`` at most. The timeout stands in for a tracker end that never
came, and the tracker counts frames: through a stalled stream, or a wall clock stepped forward, it keeps its
tracks, so they keep their ids here too (timed out by the gap, they came back as new tracks, pending, and their
own earlier records, under the same key, were never candidates: new ids). ``retention_s`` counts real elapsed
time, a promise to the people seen: a live source gives each frame a monotonic reading taken with its stamp
(``update``'s ``monotonic``), and where the stamps ran on by more or less than it between two frames, the
difference is a clock step, which FleetStore.lag takes out (a wall clock stepped forward by an hour is no hour
without people; a stream stalled overnight is a night; a stand after a step back counts). Without readings
(a replay) the frame times are real time (lag 0). While no frames come (a live stream down), the worker calls
``expire_idle`` with a reading now and then, so that retention_s holds then too, and a peer's update comes with
a reading (``ingest_remote``): it is judged at the last frame's time plus the real time since. What the fleet is
told (keep-alives, tracks gone out of view) stays on the interval clock, which the gap does advance: peers' claims
lapsed meanwhile.
The local gallery may be replaced between frames (``set_gallery``: the camera's gallery.path changed): a label
it no longer holds is given to nobody from then on, the identity it named keeping its global id, unnamed.
Thread-safe (one lock), so a bridge thread may call ``ingest_remote`` while the camera loop calls ``update``.
Exceptions of the allocator propagate (the track stays pending and is decided again on its next observation).
"""

from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, cast

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from daemon.config import CameraEdge, IdentityConfig
from daemon.errors import ConfigError, DaemonError, DataError
from daemon.gallery import Gallery
from daemon.identity.fleet import Contribution, FleetStore, Key
from daemon.identity.profile import TrackProfile
from daemon.identity.quality import QualityParams, at_border, box_qualities, overlap_fractions
from daemon.identity.records import (
    FrameIdentities,
    IdentityAssignment,
    IdentityStats,
    ProfileUpdate,
    Source,
)
from daemon.identity.site import closeness, velocity
from daemon.identity.travel import TravelModel
from daemon.types import FloatArray, Position, Track

Allocator = Callable[[], int]
"""Returns a fresh global id, unique fleet-wide (Valkey ``INCR`` in production, a counter in tests)."""


class AllocatorUnavailable(DaemonError):
    """Raised by an allocator that cannot hand out a global id now (the fleet store is away): the track stays
    ``pending`` and the decision is retried on a later frame."""


_EPS = 1e-9
_VELOCITY_WINDOW_S = 1.0  # a track's site velocity is its mean over this long
_SAME_SPOT = 0.5  # site.closeness from which two sightings at about one time are one person standing there
_TRAIL = 64  # positions kept per track for it (bounded even at high frame rates)
_SWITCH_EXEMPLARS = 3  # exemplars a track needs before a look can be judged unlike it (switch_similarity)
# frames exactly decision_interval_s apart (10 fps at 0.1 s, their times rounded in floating point after a large
# epoch) still get a slot each
_SLOT_SLACK = 1e-3
MAX_WITHDRAWN_LABELS = (
    10_000  # labels the gallery dropped that peers' updates are stripped of (the oldest go)
)


@dataclass(frozen=True, slots=True)
class _Proposal:
    """What a decision offers a track: an id (None: allocate one), a label, the raw similarity, the source."""

    gid: int | None
    label: str | None
    score: float
    source: Source

    @property
    def key(self) -> tuple[object, ...]:
        if self.gid is not None:
            return ("id", self.gid)
        if self.label is not None:
            return ("label", self.label)
        return (self.source,)


_PENDING = _Proposal(None, None, 0.0, "pending")
_NEW = _Proposal(None, None, 0.0, "new")


@dataclass(slots=True)
class _Local:
    """A live track of this camera."""

    track_id: int
    profile: TrackProfile
    last_seen: float  # on the resolver's clock (stamped on updates)
    seen_tick: float  # the same sighting on the interval clock (how long ago: lost_after_s)
    seen_frame: float  # the same sighting on the frame clock (how long ago: track_timeout_s)
    seen_real: float = math.nan  # the same sighting in real time (less FleetStore.lag: retention_s)
    gid: int | None = None
    label: str | None = None
    source: Source = "pending"
    similarity: float = 0.0
    since: float = 0.0  # when it took gid
    challenger: tuple[object, ...] | None = None
    wins: int = 0  # consecutive decisions the challenger won
    forced: bool = False  # lost its id to another track of the frame: decide again
    ruled_out: bool = False  # its id was ruled out on the last decision (claimed elsewhere, seen too far off)
    dirty: bool = False  # exemplars changed since the last publish
    announce: bool = False  # identity changed since the last publish
    store_dirty: bool = False  # exemplars changed since the fleet store last took them
    stored: int | None = None  # the id the fleet store holds this track's contribution under
    last_published: float = -math.inf  # on the interval clock
    reported: tuple[int | None, str | None] = (None, None)
    pos: Position | None = None  # where on the site plan, at pos_t (cameras with a site)
    pos_t: float = -math.inf
    # (time on the interval clock, x, y) of its latest site positions
    trail: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=_TRAIL))
    vel: Position | None = None  # over the trail's last _VELOCITY_WINDOW_S
    first_pos: Position | None = None  # where on the site plan it was first seen, at first_pos_t
    first_pos_t: float = -math.inf
    lost: bool = False  # announced to the fleet as out of sight (lost_after_s)
    at_edge: bool = False  # its last box came within half its width of the frame's edge (about to leave)
    contested: tuple[int, float] | None = None  # (its id, since when that id has been seen too far away)
    overlapped: float = 0.0  # the largest share of its box another box of the frame covers (hold_overlap)
    odd: list[tuple[FloatArray, float]] = field(default_factory=list)  # looks in a row unlike its exemplars
    first_look: float = math.nan  # when it took its first look, on the interval clock (its slots start there)
    look_slot: int = -1  # the decision_interval_s slot of its latest look
    switched: bool = False  # restarted on this frame after switching people (reported once)
    # its key holds the record of its own earlier run, which this resolver ended (timed out while the tracker kept
    # it, or the max_live_tracks cap), until it takes an id: that record is a candidate like any of this camera's
    # past tracks, held to every guard as they are, not rows of its own (a track that switched people starts
    # again too, but its earlier record is someone else: not set for it)
    earlier: bool = False

    def holds(self, p: _Proposal) -> bool:
        if p.gid is not None:
            return p.gid == self.gid
        return p.label is not None and p.label == self.label

    def reset(self) -> None:
        self.gid, self.label, self.source, self.similarity = None, None, "pending", 0.0
        self.challenger, self.wins = None, 0


def assign(scores: NDArray[np.float64], threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs maximising the total of ``score - threshold`` over pairs at or above
    the threshold (-inf or NaN: forbidden). Pairs below the threshold are never made."""
    if scores.size == 0:
        return []
    gain = scores - threshold + _EPS
    gain = np.where(gain > 0, gain, 0.0)
    if not gain.any():
        return []
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if gain[r, c] > 0]


class IdentityResolver:
    """Resolves the tracks of one camera to gallery names and fleet-wide global ids (see the module doc)."""

    def __init__(
        self,
        camera: str,
        dim: int,
        allocate: Allocator,
        cfg: IdentityConfig | None = None,
        gallery: Gallery | None = None,
    ) -> None:
        if not isinstance(camera, str) or not camera:
            raise ConfigError(f"identity resolver: camera must be a non-empty name, got {camera!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"identity resolver: dim must be a positive integer, got {dim!r}")
        if gallery is not None and gallery.dim != dim:
            raise ConfigError(f"identity resolver: the gallery holds {gallery.dim}-d embeddings, not {dim}-d")
        self.camera = camera
        self.dim = dim
        self.cfg = cfg or IdentityConfig()
        self.gallery = gallery
        self.store = FleetStore(dim, self.cfg)
        self.travel = TravelModel(self.cfg.adjacency, self.cfg.allow_overlapping_views)
        self._quality = QualityParams.from_config(self.cfg)
        self._allocate_fn = allocate
        self._tracks: OrderedDict[int, _Local] = OrderedDict()  # least recently seen first
        self._pending: list[ProfileUpdate] = []  # ends found between frames (timeouts, caps)
        self._now = -math.inf
        self._frame_t = -math.inf  # the last frame time given
        self._stepped = 0.0  # how far frame times went back in all (wall clock steps back)
        self._tick = -math.inf  # the interval clock: the last frame time + _stepped
        self._frame_clock = 0.0  # runs only while frames come: each gap counts max_frame_gap_s at most
        self._reading = math.nan  # the last frame's monotonic reading (NaN: none)
        self._read_at = math.nan  # the resolver's clock at that reading
        self._lock = threading.RLock()
        self._allocations = 0
        self._accepted = 0
        self._rejected: Counter[str] = Counter()
        self._forgotten = 0
        self._unallocated = 0  # decisions put off because the allocator was unavailable
        self._switches = 0  # tracks that switched people (switch_similarity)
        self.ended_observed = 0  # tracks ended with new_min_observations observations and no id
        self.ended_too_faint = 0  # of them, those whose best quality stayed under new_min_quality
        self.faint_best = 0.0  # the best quality of the last of those
        self._visible: set[Key] = set()  # this camera's tracks on the frame being resolved
        # labels the gallery held and dropped (set_gallery) and holds no more: not taken from peers' updates
        self._withdrawn: OrderedDict[str, None] = OrderedDict()
        self._unnamed: OrderedDict[str, None] = OrderedDict()  # dropped since the last update (it says them)

    # ------------------------------------------------------------------------------------------ public

    def update(
        self,
        now: float,
        tracks: Sequence[Track],
        embeddings: FloatArray | None,
        frame_size: tuple[int, int],
        ended: Sequence[int] = (),
        positions: FloatArray | None = None,
        monotonic: float | None = None,
    ) -> FrameIdentities:
        """Resolve one frame's ``tracks``; ``embeddings`` rows align with the detections (``det_index``).

        ``frame_size`` is ``(width, height)`` in pixels; ``ended`` the track ids the tracker ended on this
        frame (the same as calling ``end_track`` for each); ``positions`` (N, 2), one row per track, where each
        stands on the site plan (NaN rows: unknown; None: the camera has no site); ``monotonic`` a reading of a
        monotonic clock taken with ``now`` (a live source; None: a replay, whose frame times are real time), so
        that retention_s counts real time through a wall clock's steps. Returns an assignment per track, in
        order, and the updates to publish.
        """
        now = _finite(now, "now")
        real = None if monotonic is None else _finite(monotonic, "monotonic")
        _check_frame_size(frame_size)
        rows = self._embedding_rows(tracks, embeddings)
        where = _positions(positions, len(tracks), self.camera)
        with self._lock:
            now = self._advance(now, real)
            xyxy = np.asarray([t.xyxy for t in tracks], dtype=np.float32).reshape(-1, 4)
            scores = np.asarray([t.score for t in tracks], dtype=np.float32)
            quality = box_qualities(xyxy, scores, frame_size, self._quality)
            edge = at_border(xyxy, frame_size, 0.5 * (xyxy[:, 2] - xyxy[:, 0]))  # a step from leaving
            overlap = overlap_fractions(xyxy)
            observed = [
                self._observe(t, rows[i], float(quality[i]), now, where[i], bool(edge[i]), float(overlap[i]))
                for i, t in enumerate(tracks)
            ]
            frame = [local for local, _ in observed]
            self._visible = {(self.camera, lo.track_id) for lo in frame}
            self._settle_conflicts(frame, now)
            deciding = [lo for lo, seen in observed if (seen or lo.forced) and self._ready(lo)]
            if deciding:
                self._decide(deciding, frame, now)
            for lo in frame:
                self._sync_store(lo, now)
            assignments = tuple(self._assignment(lo) for lo in frame)
            updates, self._pending = self._pending, []
            updates.extend(self._announce_lost())
            updates.extend(u for lo in frame if (u := self._publish(lo, now)) is not None)
            updates.extend(u for tid in ended if (u := self._end(tid)) is not None)
            unnamed, self._unnamed = tuple(self._unnamed), OrderedDict()
            return FrameIdentities(assignments, tuple(updates), unnamed)

    def end_track(self, track_id: int, timestamp: float) -> ProfileUpdate | None:
        """The tracker ended ``track_id`` at ``timestamp``; the update to publish (None without an id).

        The published timestamp is the track's last sighting, the time the travel constraints count from.
        """
        timestamp = _finite(timestamp, "timestamp")
        with self._lock:
            self._now = max(self._now, timestamp)
            return self._end(track_id)

    def set_adjacency(self, edges: Sequence[CameraEdge]) -> None:
        """Judge travel between cameras by ``edges`` from now on (``identity.adjacency`` of a config changed while
        the worker runs: an added camera's edges); ConfigError when two join the same cameras."""
        travel = TravelModel(edges, self.cfg.allow_overlapping_views)
        with self._lock:
            self.travel = travel

    def set_gallery(self, gallery: Gallery | None) -> tuple[str, ...]:
        """Match named identities against ``gallery`` from now on (the camera's gallery.path changed while it
        runs); the labels it dropped, sorted. A label added is matched from the next decision on. A label dropped
        is given to no track any more: the identity it named keeps its global id, unnamed (``unbind_label``), as
        do this camera's live tracks that held it, announced to the fleet anew without it on this frame (the next
        ``update`` also says which labels went, ``FrameIdentities.unnamed``); a peer's update that still carries
        it (its camera has not taken the change yet, or its gallery still holds it) is taken without it, until a
        gallery of this camera holds it again. ConfigError for a gallery of another width."""
        if gallery is not None and gallery.dim != self.dim:
            raise ConfigError(
                f"identity resolver: the gallery holds {gallery.dim}-d embeddings, not {self.dim}-d"
            )
        after = set(gallery.unique_labels) if gallery is not None else set()
        with self._lock:
            before = set(self.gallery.unique_labels) if self.gallery is not None else set()
            self.gallery = gallery
            gone = sorted(before - after)
            for label in after:
                self._withdrawn.pop(label, None)
                self._unnamed.pop(label, None)
            for label in gone:
                self._unname(label)
            return tuple(gone)

    def _unname(self, label: str) -> None:
        """No one is ``label`` any more: off the fleet's identity it named, and off this camera's live tracks
        (they keep their ids, and are announced anew); peers' updates are stripped of it from now on."""
        for seen in (self._withdrawn, self._unnamed):
            seen[label] = None
            seen.move_to_end(label)
            while len(seen) > MAX_WITHDRAWN_LABELS:
                seen.popitem(last=False)
        self.store.unbind_label(label)
        for lo in self._tracks.values():
            if lo.challenger == ("label", label):
                lo.challenger, lo.wins = None, 0
            if lo.label == label:
                lo.label, lo.announce = None, True
                if lo.source == "gallery":  # the id it holds is the fleet's, now nobody's name
                    lo.source = "fleet"

    def expire_idle(self, monotonic: float) -> None:
        """Between frames (a live stream down, its worker waiting on it): drop what ``retention_s`` of real time
        has passed by, ``monotonic`` being a reading, taken now, of the clock the frames' readings come from (the
        real time since the last frame's reading is added to that frame's time). Nothing else moves: no track is
        ended (track_timeout_s counts the frames the tracker counts), the resolver's clock stands, nothing is
        published. Without a reading on the last frame (a replay, whose frame times are real time; no frame yet)
        there is no telling how long it has been: nothing is done."""
        real = _finite(monotonic, "monotonic")
        with self._lock:
            if math.isfinite(self._reading):
                self.store.expire(self._since_last_frame(real))

    def _since_last_frame(self, real: float) -> float:
        """The last frame's time plus the real time since its reading, ``real`` a reading now (the caller holds
        the lock and knows the last frame had a reading)."""
        return self._read_at + max(real - self._reading, 0.0)

    def ingest_remote(self, update: ProfileUpdate, monotonic: float | None = None) -> bool:
        """Take another camera's :class:`ProfileUpdate`; False (and counted by reason) when rejected.

        ``monotonic``: a reading taken as it arrives, of the clock the frames' readings come from, so that
        between frames (a live stream down) it is judged (too old to take, which claims have lapsed) at the last
        frame's time plus the real time since, not at the last frame's; None, or no reading on the last frame
        (a replay): at the resolver's clock."""
        if not isinstance(update, ProfileUpdate):
            with self._lock:
                self._rejected["type"] += 1
            return False
        real = None if monotonic is None else _finite(monotonic, "monotonic")
        with self._lock:
            now = self._now
            if real is not None and math.isfinite(self._reading):
                now = max(now, self._since_last_frame(real))
            reason = self._reject_reason(update, now)
            if reason is not None:
                self._rejected[reason] += 1
                return False
            gid = self.store.canonical(update.global_id)
            c = Contribution(
                update.key,
                gid,
                update.since,
                update.timestamp,
                update.quality,
                None if update.label in self._withdrawn else update.label,
                update.ended,
                False,
                update.position,
                update.timestamp if update.position is not None else math.nan,
                update.velocity,
            )
            exemplars = update.exemplars if len(update.exemplars) else None
            self._apply_merges(self.store.record(c, exemplars, now))
            self._accepted += 1
            return True

    def forget(self, global_id: int) -> bool:
        """Erase global id ``global_id`` everywhere here: exemplars, claims, label, and the profiles of live
        tracks holding it (they start over and get a new id). Late messages about it are rejected. That id alone,
        whatever label merges this camera saw (see FleetStore.forget), so every camera erases the same."""
        with self._lock:
            gid = int(global_id)
            found = self.store.forget(gid, self._now)
            for lo in self._tracks.values():
                if gid in (lo.gid, lo.stored):
                    lo.reset()
                    lo.profile.clear()
                    lo.stored, lo.dirty, lo.announce, lo.store_dirty = None, False, False, False
                    found = True
            self._forgotten += int(found)
            return found

    def assignment(self, track_id: int) -> IdentityAssignment | None:
        """The current identity of a live track (``changed`` False), or None for an unknown track."""
        with self._lock:
            lo = self._tracks.get(track_id)
            if lo is None:
                return None
            return IdentityAssignment(
                self.camera, lo.track_id, lo.gid, lo.label, lo.similarity, lo.source, False
            )

    def stats(self) -> IdentityStats:
        with self._lock:
            s = self.store
            return IdentityStats(
                identities=len(s.identities),
                exemplar_rows=s.bank.n,
                contributions=len(s.contributions),
                live_tracks=len(self._tracks),
                allocations=self._allocations,
                remote_accepted=self._accepted,
                remote_rejected=dict(self._rejected),
                expired_identities=s.expired,
                evicted_identities=s.evicted,
                dropped_contributions=s.dropped,
                forgotten=self._forgotten,
                label_merges=s.merges,
                allocations_put_off=self._unallocated,
                switches=self._switches,
                ended_observed=self.ended_observed,
                ended_too_faint=self.ended_too_faint,
            )

    # ------------------------------------------------------------------------------------- observing

    def _embedding_rows(
        self, tracks: Sequence[Track], embeddings: FloatArray | None
    ) -> list[FloatArray | None]:
        ids = [t.track_id for t in tracks]
        if len(set(ids)) != len(ids):
            raise DataError(
                f"identity resolver ({self.camera}): a track id appears twice in one frame: {ids}"
            )
        if len(ids) > self.cfg.max_live_tracks:
            raise DataError(
                f"identity resolver ({self.camera}): {len(ids)} tracks on one frame, more than "
                f"identity.max_live_tracks ({self.cfg.max_live_tracks})"
            )
        if embeddings is None:
            return [None] * len(tracks)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise DataError(
                f"identity resolver ({self.camera}): embeddings must be (N, {self.dim}), got {emb.shape}"
            )
        return [_row(emb, t.det_index) for t in tracks]

    def _advance(self, now: float, real: float | None) -> float:
        """Move the resolver's clock to ``now`` (never back: a wall clock stepped back leaves it standing until it
        has caught up), the interval clock on by the time since the last frame (nothing for a step back) and the
        frame clock by that time up to max_frame_gap_s, count a clock step against the monotonic reading ``real``,
        expire and time out what is due; the resolver's clock."""
        gap = now - self._frame_t if math.isfinite(self._frame_t) else 0.0
        if gap < 0:
            self._stepped -= gap
        self._frame_t = now
        self._tick = now + self._stepped
        self._frame_clock += min(max(gap, 0.0), self.cfg.max_frame_gap_s)
        self._now = max(self._now, now)
        self._count_step(real)
        self.store.expire(self._now)
        horizon = self._frame_clock - self.cfg.track_timeout_s
        while self._tracks:
            tid, lo = next(iter(self._tracks.items()))
            if lo.seen_frame >= horizon:
                break
            if (u := self._end(tid)) is not None:
                self._pending.append(u)
        return self._now

    def _count_step(self, real: float | None) -> None:
        """Where the resolver's clock ran on by more (a wall clock stepped forward) or less (stepped back: it
        stands) than the monotonic clock since the last reading, the difference is a clock step: FleetStore.lag
        takes it, so that retention counts real time. No step is counted across a frame without a reading."""
        if real is not None and math.isfinite(self._reading):
            self.store.lag += (self._now - self._read_at) - max(real - self._reading, 0.0)
        self._reading, self._read_at = (real, self._now) if real is not None else (math.nan, math.nan)

    def _observe(
        self,
        t: Track,
        emb: FloatArray | None,
        quality: float,
        now: float,
        pos: Position | None,
        at_edge: bool = False,
        overlapped: float = 0.0,
    ) -> tuple[_Local, bool]:
        lo = self._tracks.get(t.track_id)
        if lo is None:
            lo = self._new_local(t.track_id, now)
            earlier = self.store.contributions.get((self.camera, t.track_id))
            lo.earlier = earlier is not None and earlier.local and earlier.ended
        emb = self._take_look(lo, emb, quality)
        look = self._look(lo, emb, quality, overlapped)
        if look == "switched":
            lo = self._restart(lo, now)
        self._tracks.move_to_end(t.track_id)
        lo.last_seen, lo.seen_tick, lo.seen_frame = max(lo.last_seen, now), self._tick, self._frame_clock
        lo.seen_real = now - self.store.lag
        lo.at_edge, lo.overlapped = at_edge, overlapped
        if lo.lost:  # the tracker found it again: the fleet hears it is back
            lo.lost, lo.announce = False, True
        if pos is not None:
            lo.pos, lo.pos_t = pos, now
            if lo.first_pos is None:
                lo.first_pos, lo.first_pos_t = pos, now
            lo.trail.append((self._tick, pos[0], pos[1]))
            while lo.trail[0][0] < self._tick - _VELOCITY_WINDOW_S:
                lo.trail.popleft()
            lo.vel = velocity(lo.trail)
        if emb is None or look != "like" or (lo.gid is not None and self._crossing(lo)):
            # a crop unlike the track, or showing some of the person crossing it, is not taken into it
            return lo, False
        before = lo.profile.observations
        if lo.profile.offer(emb, quality):
            lo.dirty = lo.store_dirty = True
        return lo, lo.profile.observations > before

    def _take_look(self, lo: _Local, emb: FloatArray | None, quality: float) -> FloatArray | None:
        """``emb`` when it is the track's first look in its slot of decision_interval_s (slots on the interval
        clock, from the track's first look on), else None: not observed, so the counts of looks and decisions
        last as long at any frame rate. A look below min_exemplar_quality counts as nothing and takes no slot."""
        interval = self.cfg.decision_interval_s
        if emb is None or interval <= 0 or not quality >= lo.profile.min_quality:
            return emb
        if math.isnan(lo.first_look):
            lo.first_look = self._tick
        slot = math.floor((self._tick - lo.first_look) / interval + _SLOT_SLACK)
        if slot <= lo.look_slot:
            return None
        lo.look_slot = slot
        return emb

    def _look(
        self, lo: _Local, emb: FloatArray | None, quality: float, overlapped: float
    ) -> Literal["like", "odd", "switched"]:
        """How a new look compares with the track's exemplars (``switch_similarity``): like them, unlike them
        (held back; counted), or the last of ``switch_looks`` unlike ones in a row (the track switched people).
        Crossings, low-quality crops and tracks with few exemplars are not judged."""
        c = self.cfg
        if (
            emb is None
            or c.switch_similarity <= 0
            or overlapped > c.hold_overlap
            or not quality >= lo.profile.min_quality
            or len(lo.profile) < _SWITCH_EXEMPLARS
        ):
            return "like"
        if float(np.max(lo.profile.exemplars @ emb)) >= c.switch_similarity:
            lo.odd.clear()
            return "like"
        lo.odd.append((np.array(emb, dtype=np.float32), quality))
        return "switched" if len(lo.odd) >= c.switch_looks else "odd"

    def _restart(self, lo: _Local, now: float) -> _Local:
        """The track switched people: what it was so far ends (published as an ended track under its id), and
        it starts again from the unlike looks, pending."""
        if (u := self._end(lo.track_id)) is not None:
            self._pending.append(u)
        fresh = self._new_local(lo.track_id, now)
        for emb, quality in lo.odd:
            fresh.profile.offer(emb, quality)
        fresh.dirty = fresh.store_dirty = True
        fresh.switched = True
        fresh.first_look, fresh.look_slot = lo.first_look, lo.look_slot  # its slots go on
        fresh.reported = lo.reported  # a change of id is reported against what the track showed before
        self._switches += 1
        return fresh

    def _crossing(self, lo: _Local) -> bool:
        """Whether the track's box shares more than hold_overlap of its area with another box of the frame."""
        return lo.overlapped > self.cfg.hold_overlap

    def _new_local(self, track_id: int, now: float) -> _Local:
        while len(self._tracks) >= self.cfg.max_live_tracks:
            oldest = next(iter(self._tracks))
            if (u := self._end(oldest)) is not None:
                self._pending.append(u)
        c = self.cfg
        lo = _Local(
            track_id,
            TrackProfile(self.dim, c.exemplars_per_track, c.min_exemplar_quality, c.replace_quality_margin),
            now,
            self._tick,
            self._frame_clock,
        )
        self._tracks[track_id] = lo
        return lo

    def _settle_conflicts(self, frame: list[_Local], now: float) -> None:
        """Release ids held twice: by co-visible tracks (after a label merge, or a lost track's return) or by
        a far-away camera's live track at the same time (two cameras decided at once). The track that took
        the id first keeps it; the other is decided again on this frame."""
        holders: dict[int, list[_Local]] = {}
        for lo in frame:
            if lo.gid is not None:
                lo.gid = self.store.canonical(lo.gid)
                lo.label = lo.label or self.store.label_of(lo.gid)  # a name the fleet learned meanwhile
                holders.setdefault(lo.gid, []).append(lo)
        for gid, group in holders.items():
            group.sort(key=lambda x: (x.since, x.track_id))
            for i, lo in enumerate(group):
                if i > 0 or self._blocked(gid, lo, now):
                    lo.reset()
                    lo.forced = True

    def _ready(self, lo: _Local) -> bool:
        return lo.profile.observations >= self.cfg.min_observations and len(lo.profile) > 0

    def _confident(self, lo: _Local) -> bool:
        p = lo.profile
        return p.observations >= self.cfg.new_min_observations and p.best_quality >= self.cfg.new_min_quality

    # -------------------------------------------------------------------------------------- deciding

    def _decide(self, deciding: list[_Local], frame: list[_Local], now: float) -> None:
        """Offer each deciding track an identity and apply the offers hysteresis lets through. When tracks that
        keep their ids were offered to others, those others are offered again around them, and the new offer
        passes the hysteresis too (a track is not switched to an id that won no decision, nor given a new id
        that keep_held_ids withholds, because the id that won was kept by another track)."""
        deciding_ids = {lo.track_id for lo in deciding}
        reserved = {lo.gid for lo in frame if lo.track_id not in deciding_ids and lo.gid is not None}
        movers = deciding
        while True:
            props = self._propose(movers, reserved, now)
            moving = [lo for lo in movers if not self._hold(lo, props[lo.track_id])]
            ids = {lo.track_id for lo in moving}
            kept = {lo.gid for lo in movers if lo.track_id not in ids and lo.gid is not None}
            if len(moving) == len(movers) or not any(props[lo.track_id].gid in kept for lo in moving):
                break
            reserved |= kept  # holders keep their ids; the rest fit around them
            movers = moving
        for lo in moving:
            self._apply(lo, props[lo.track_id], now)
        for lo in deciding:
            lo.forced = False

    def _hold(self, lo: _Local, p: _Proposal) -> bool:
        """Hysteresis: whether ``lo`` keeps its current identity against proposal ``p``."""
        if lo.gid is None:
            return False
        if lo.holds(p) and not (lo.label is None and p.label is not None):
            lo.challenger, lo.wins, lo.similarity = None, 0, p.score
            return True
        # another identity, or the track's own id named (a gallery label that adopted it): a change to be won
        if p.source == "pending" or (p.source == "new" and self.cfg.keep_held_ids and not lo.ruled_out):
            # no identity won this decision (not confident enough for a new id; or no longer matching the id's
            # other tracks, which is not evidence of another person): the track keeps its id, and a
            # challenger's run of wins is broken, since its wins must be consecutive decisions
            lo.challenger, lo.wins = None, 0
            return True
        if self._crossing(lo) and not lo.ruled_out:
            return True  # neither where it stands nor its look can tell it from the person it crosses now
        if p.key == lo.challenger:
            lo.wins += 1
        else:
            lo.challenger, lo.wins = p.key, 1
        return lo.wins < self.cfg.hysteresis_count

    def _propose(self, tracks: list[_Local], reserved: set[int], now: float) -> dict[int, _Proposal]:
        props: dict[int, _Proposal] = {}
        taken = set(reserved)
        rest = tracks
        if self.gallery is not None and len(self.gallery):
            named = self._gallery_stage(rest, taken, now)
            named.update(self._adopt(named, rest, taken, now))
            props.update(named)
            taken |= {p.gid for p in named.values() if p.gid is not None}
            rest = [lo for lo in rest if lo.track_id not in named]
        props.update(self._fleet_stage(rest, taken, now))
        for lo in rest:
            if lo.track_id not in props:
                props[lo.track_id] = _NEW if self._confident(lo) else _PENDING
        return props

    def _gallery_stage(self, tracks: list[_Local], taken: set[int], now: float) -> dict[int, _Proposal]:
        gallery = self.gallery
        if gallery is None or not tracks:
            return {}
        threshold = gallery.threshold if self.cfg.gallery_threshold is None else self.cfg.gallery_threshold
        best = self._gallery_scores(gallery, tracks)
        labels = sorted(set().union(*best))
        scores = np.full((len(tracks), len(labels)), -np.inf)
        for i, lo in enumerate(tracks):
            for j, label in enumerate(labels):
                s = best[i].get(label)
                gid = self.store.gid_of_label(label)
                if s is None or (gid is not None and (gid in taken or self._blocked(gid, lo, now))):
                    continue
                scores[i, j] = s + (self.cfg.hysteresis_margin if label == lo.label else 0.0)
        return {
            tracks[i].track_id: _Proposal(
                self.store.gid_of_label(labels[j]), labels[j], best[i][labels[j]], "gallery"
            )
            for i, j in assign(scores, threshold)
        }

    def _adopt(
        self, named: dict[int, _Proposal], tracks: list[_Local], taken: set[int], now: float
    ) -> dict[int, _Proposal]:
        """Names first seen here take the fleet id their track matches, when it has no name yet (no split)."""
        fresh = [lo for lo in tracks if lo.track_id in named and named[lo.track_id].gid is None]
        found = self._fleet_stage(fresh, taken, now, unnamed_only=True)
        return {tid: replace(named[tid], gid=p.gid) for tid, p in found.items()}

    def _gallery_scores(self, gallery: Gallery, tracks: list[_Local]) -> list[dict[str, float]]:
        """Per track: {label: best similarity over its exemplars and the label's gallery rows}."""
        queries = [lo.profile.exemplars for lo in tracks]
        results = gallery.search_batch(
            np.concatenate(queries), k=min(self.cfg.gallery_k, len(gallery)), threshold=-1.0
        )
        out: list[dict[str, float]] = []
        start = 0
        for q in queries:
            best: dict[str, float] = {}
            for r in results[start : start + len(q)]:
                for m in r.matches:
                    best[m.label] = max(best.get(m.label, -math.inf), m.similarity)
            start += len(q)
            out.append(best)
        return out

    def _fleet_stage(
        self, tracks: list[_Local], taken: set[int], now: float, unnamed_only: bool = False
    ) -> dict[int, _Proposal]:
        if not tracks:
            return {}
        c = self.cfg
        floor = c.fleet_threshold - c.hysteresis_margin - c.transition_bonus
        if c.site_horizon_s > 0 and any(lo.pos is not None for lo in tracks):
            floor = min(floor, c.site_min_similarity)  # where a track stands may lift a weaker look
        keys: list[Key] = [(self.camera, lo.track_id) for lo in tracks]
        own = [None if lo.earlier else key for lo, key in zip(tracks, keys, strict=True)]
        raw = self.store.scores(
            [lo.profile.exemplars for lo in tracks], own, c.match_score, c.top_exemplars, floor
        )
        if unnamed_only:
            raw = [{g: v for g, v in r.items() if self.store.label_of(g) is None} for r in raw]
        cands = [
            self._candidates(lo, key, r, taken, now) for lo, key, r in zip(tracks, keys, raw, strict=True)
        ]
        if unnamed_only:  # _candidates adds the track's own id where only its own rows speak: it may be named
            cands = [{g: v for g, v in c.items() if self.store.label_of(g) is None} for c in cands]
        gids = sorted(set().union(*cands))
        scores = np.full((len(tracks), len(gids)), -np.inf)
        for i, cand in enumerate(cands):
            for j, g in enumerate(gids):
                if g in cand:
                    scores[i, j] = cand[g][1]
        return {
            tracks[i].track_id: _Proposal(
                gids[j], self.store.label_of(gids[j]), cands[i][gids[j]][0], "fleet"
            )
            for i, j in assign(scores, c.fleet_threshold)
        }

    def _candidates(
        self, lo: _Local, key: Key, raw: dict[int, float], taken: set[int], now: float
    ) -> dict[int, tuple[float, float]]:
        """{id: (similarity, similarity with the hysteresis and transition bonuses)} of one track."""
        raw = dict(raw)
        if self._only_own_rows(lo, key, raw):  # nothing but the track itself speaks for or against it
            raw[cast(int, lo.gid)] = self.cfg.fleet_threshold
        margin = self.cfg.hysteresis_margin
        out: dict[int, tuple[float, float]] = {}
        gates = {g: self._gate(g, lo, taken, now) for g in (*raw, lo.gid) if g is not None}
        lo.ruled_out = lo.gid is not None and gates[lo.gid][0]
        weak: set[int] = set()  # the positions say nothing for them: a look alone must be near certain
        solo = lo.gid is not None and all(c.key == key for c in self.store.claims(lo.gid))
        for g, s in raw.items():
            ruled_out, near = gates[g]
            if ruled_out or (solo and self._later_twin(g, lo, now)) or self._only_covisible_rows(g, lo):
                continue
            unsupported = lo.pos is not None and (near is None or near <= 0)
            if g != lo.gid and unsupported and s < self.cfg.look_only_threshold:
                weak.add(g)
            bonus = self._transition_bonus(g, now) + (margin if g == lo.gid else 0.0)
            bonus += self.cfg.site_weight * near if near is not None else 0.0
            out[g] = (s, s + bonus)
        # a weak look cannot be taken, but it still competes: when it is the best, or within the ratio test's
        # margin of the best, nobody is named (the track keeps its id, or waits for better evidence)
        kept = _distinct(out, lo.gid, self.cfg.fleet_distinct_margin)
        if weak and kept and max(kept, key=lambda g: kept[g][1]) in weak:
            return {g: v for g, v in kept.items() if g == lo.gid}
        return {g: v for g, v in kept.items() if g not in weak}

    def _gate(self, gid: int, lo: _Local, taken: set[int], now: float) -> tuple[bool, float | None]:
        """(whether ``lo`` may not hold ``gid`` now, the site closeness when it may). Ruled out: another track
        holds it, a far camera claims it, or it was seen elsewhere too recently to be here."""
        if gid in taken or self._blocked(gid, lo, now):
            return True, None
        near = self._site_closeness(gid, lo)
        return near is not None and near < 0, near

    def _later_twin(self, gid: int, lo: _Local, now: float) -> bool:
        """For a track whose own id is its alone: whether ``gid`` too was taken by one live track alone, and
        later: two cameras that gave one person new ids at once. The later (since, id) gives way, so both
        settle on the earlier id instead of swapping ids with each other on every decision. (A track that has
        ended cannot come over: its id stays a candidate.)"""
        mine = cast(int, lo.gid)
        theirs = list(self.store.claims(gid))
        if len(theirs) != 1 or theirs[0].local or not self.store.is_live(theirs[0], now):
            return False
        return (theirs[0].since, gid) > (lo.since, mine)

    def _only_covisible_rows(self, gid: int, lo: _Local) -> bool:
        """Whether every exemplar row of ``gid`` comes from tracks of this camera seen on this frame (``lo``
        aside): those are other people, so their look is no evidence that ``lo`` is ``gid`` (two look-alikes
        side by side would otherwise take each other's new ids, and swap them on every decision)."""
        others = self._visible - {(self.camera, lo.track_id)} if lo.earlier else self._visible
        return gid != lo.gid and not self.store.has_rows_beyond(gid, others)

    def _only_own_rows(self, lo: _Local, key: Key, raw: dict[int, float]) -> bool:
        """The track's current id is known but holds no exemplars except the track's own."""
        g = lo.gid
        return g is not None and g not in raw and g in self.store and not self.store.has_foreign_rows(g, key)

    def _blocked(self, gid: int, lo: _Local, now: float) -> bool:
        """Whether another camera's claim on ``gid`` forbids this track from taking (or keeping) it now.

        A live claim on a camera whose view does not overlap this one blocks it, unless this track holds the
        id and took it first; an ended or lapsed one blocks a track that does not hold it until the minimum
        travel time from the last sighting it may stand for has passed (a track that walked out of view is
        announced as ended after lost_after_s).
        """
        mine = (lo.since, self.camera) if lo.gid == gid else None
        for c in self.store.claims(gid):
            if c.camera == self.camera or self.travel.overlapping(c.camera, self.camera):
                continue
            if self.store.is_live(c, now):
                if mine is None or (c.since, c.camera) < mine:
                    return True
            elif mine is None and now - self._last_sighting(c) < self.travel.min_travel(
                c.camera, self.camera
            ):
                return True
        return False

    def _last_sighting(self, c: Contribution) -> float:
        """The latest another camera's track may have been seen: an ended one's update carries its last
        sighting; one whose claim lapsed (hidden in mid-view, its tracker still holding it) was last heard of at
        ``c.last`` but re-announces itself only every half claim_ttl_s while seen, so it may have been seen
        until then."""
        return c.last if c.ended else c.last + self.cfg.claim_ttl_s / 2

    def _site_closeness(self, gid: int, lo: _Local) -> float | None:
        """Where ``gid`` was last seen on the site plan against where ``lo`` is (site.closeness: 1 = same
        spot, below 0 = too far to be one person; this camera's own sightings count only below 0); None when
        the positions say nothing (unknown, further apart in time than site_horizon_s, or the track holds the
        id and took it before the one seen elsewhere)."""
        c = self.cfg
        if lo.pos is None or c.site_horizon_s <= 0:
            return None
        seen = [  # a track on the same frame of this camera is another person, not evidence
            k
            for k in self.store.claims(gid)
            if k.key not in self._visible
            and k.pos is not None
            and abs(lo.pos_t - k.pos_t) <= c.site_horizon_s
        ]
        latest = max(seen, key=lambda k: k.pos_t, default=None)
        near = -math.inf if latest is None else min(self._fit(lo, latest), self._fit_start(lo, latest))
        if gid == lo.gid:
            self._note_contest(lo, gid, latest is not None and near < 0)
        if latest is None:
            return None
        if near < 0:
            if gid == lo.gid and self._explained(latest, lo):
                return None  # the far sighting is one of this camera's other people, as the other camera sees them
            if gid == lo.gid and lo.since <= latest.since and not self._stands_with(lo, gid):
                return None  # this track took the id first: the other sighting gives it up
            return near
        # Only other cameras speak for an identity: a new track near where one of this camera's tracks ended is
        # the tracker's call (it had motion and appearance and kept them apart); those sightings rule out only.
        other = max((k for k in seen if k.camera != self.camera), key=lambda k: k.pos_t, default=None)
        return 0.0 if other is None else max(0.0, self._fit(lo, other))

    def _note_contest(self, lo: _Local, gid: int, contested: bool) -> None:
        """Remember since when the track's own id ``gid`` has been seen too far away (None once it is not)."""
        if not contested:
            lo.contested = None
        elif lo.contested is None or lo.contested[0] != gid:
            lo.contested = (gid, self._now)

    def _held_before_contest(self, since: float, lo: _Local) -> bool:
        """Whether an id taken at ``since`` was held before the track's own id came into dispute (with two
        position intervals to spare): a track that took its id after the dispute began, e.g. one the tracker
        started for the person another track switched away from, explains nothing."""
        slack = 2 * self.cfg.position_interval_s
        return lo.contested is not None and since <= lo.contested[1] - slack

    def _stands_with(self, lo: _Local, gid: int) -> bool:
        """Whether another camera sees someone right where ``lo`` stands now under an id other than ``gid``
        that it held before the dispute over ``gid`` began: then ``lo`` is that person (its tracker switched
        people, say at the edge of its view), and taking ``gid`` first no longer lets it keep ``gid`` against a
        far sighting of it."""
        return any(
            c.camera != self.camera
            and c.gid != gid
            and self._held_before_contest(c.since, lo)
            and self._same_spot(lo, c)
            for c in self.store.contributions.values()
        )

    def _explained(self, k: Contribution, lo: _Local) -> bool:
        """Whether sighting ``k`` (another camera's) stands where another visible track of this camera stands,
        one that held its id before the dispute began: it is that track's person as the other camera sees
        them, not evidence about ``lo``."""
        if k.camera == self.camera:
            return False
        others = (self._tracks.get(key[1]) for key in self._visible)
        return any(
            o is not None
            and o is not lo
            and o.gid is not None
            and o.pos_t == self._now
            and self._held_before_contest(o.since, lo)
            and self._same_spot(o, k)
            for o in others
        )

    def _same_spot(self, lo: _Local, k: Contribution) -> bool:
        """Sighting ``k`` is live, recent (within two position intervals of ``lo``'s) and where ``lo`` is."""
        if (
            lo.pos is None
            or k.pos is None
            or k.ended
            or abs(lo.pos_t - k.pos_t) > 2 * self.cfg.position_interval_s
        ):
            return False
        return self._fit(lo, k) >= _SAME_SPOT

    def _fit_start(self, lo: _Local, k: Contribution) -> float:
        """site.closeness of where ``lo`` was first seen to sighting ``k``, without a prediction: one person
        must have been at both, so a track that walked towards an old sighting is not let in by the time
        that passed meanwhile."""
        c = self.cfg
        start, there = cast(Position, lo.first_pos), cast(Position, k.pos)
        return closeness(start, lo.first_pos_t, there, k.pos_t, c.site_radius, c.site_speed)

    def _fit(self, lo: _Local, k: Contribution) -> float:
        """site.closeness of track ``lo`` to sighting ``k`` (both with a position)."""
        c = self.cfg
        here, there = cast(Position, lo.pos), cast(Position, k.pos)
        return closeness(here, lo.pos_t, there, k.pos_t, c.site_radius, c.site_speed, k.vel)

    def _transition_bonus(self, gid: int, now: float) -> float:
        if not self.cfg.transition_bonus or not self.travel.has_graph:
            return 0.0
        for c in self.store.claims(gid):
            if c.camera != self.camera and self.travel.in_window(c.camera, self.camera, now - c.last):
                return self.cfg.transition_bonus
        return 0.0

    def _apply(self, lo: _Local, p: _Proposal, now: float) -> None:
        if p.source == "pending":
            return
        if p.gid is not None:
            gid = p.gid
        else:
            try:
                gid = self._allocate()
            except AllocatorUnavailable:
                self._unallocated += 1
                return
        label = p.label if p.label is not None else self.store.label_of(gid)
        if gid != lo.gid:
            lo.since = now
        if (gid, label) != (lo.gid, lo.label):
            lo.announce = True
        lo.gid, lo.label, lo.source, lo.similarity = gid, label, p.source, p.score
        lo.challenger, lo.wins = None, 0

    def _allocate(self) -> int:
        gid = self._allocate_fn()
        if isinstance(gid, bool) or not isinstance(gid, int | np.integer) or gid < 0:
            raise DataError(f"identity allocator returned {gid!r}, not a non-negative integer")
        gid = int(gid)
        if gid in self.store or self.store.is_forgotten(gid) or gid in self.store.aliases:
            raise DataError(f"identity allocator returned global id {gid}, which is already in use")
        self._allocations += 1
        return gid

    # ------------------------------------------------------------------------------------ bookkeeping

    def _contribution(self, lo: _Local, last: float, ended: bool) -> Contribution:
        gid = lo.gid if lo.gid is not None else -1
        quality = min(1.0, lo.profile.best_quality)
        return Contribution(
            (self.camera, lo.track_id),
            gid,
            lo.since,
            last,
            quality,
            lo.label,
            ended,
            True,
            lo.pos,
            lo.pos_t,
            lo.vel,
            lo.seen_real,  # not from ``last``: while a wall clock stepped back stands, sightings go on
        )

    def _sync_store(self, lo: _Local, now: float) -> None:
        key = (self.camera, lo.track_id)
        if lo.gid is None:
            if lo.stored is not None:
                self.store.drop(key)
                lo.stored = None
            return
        known = self.store.contributions.get(key)
        # a name taken or lost with the id kept (the same look again changes no exemplar) is news for the store
        if lo.stored != lo.gid or lo.store_dirty or known is None or known.label != lo.label:
            if lo.earlier:
                self._resume(lo, key)
            lo.stored, lo.store_dirty, lo.earlier = lo.gid, False, False
            merges = self.store.record(
                self._contribution(lo, now, False), lo.profile.exemplars.copy(), now, lo.profile.qualities
            )
            self._apply_merges(merges)
        else:
            fresh = lo.pos_t == now
            self.store.touch(key, now, lo.pos if fresh else None, lo.vel if fresh else None)

    def _resume(self, lo: _Local, key: Key) -> None:
        """``lo`` took back the id of its earlier record (it came back after this resolver ended it): the store
        keeps one record per track and id (under another id it would keep the earlier apart), which ``lo``'s
        would replace, so that record's exemplars join ``lo``'s profile first, by the profile's own rule (within
        exemplars_per_track, the most redundant go)."""
        earlier = self.store.contributions.get(key)
        if earlier is None or self.store.canonical(earlier.gid) != lo.gid:
            return
        vecs, qualities = self.store.bank.of(key)
        if len(vecs):
            lo.profile.resume(vecs, qualities)
            lo.dirty = True

    def _apply_merges(self, merges: list[tuple[int, int]]) -> None:
        for gone, keep in merges:
            for lo in self._tracks.values():
                if lo.gid == gone:
                    lo.gid, lo.label, lo.announce = keep, self.store.label_of(keep), True
                if lo.stored == gone:
                    lo.stored = keep

    def _assignment(self, lo: _Local) -> IdentityAssignment:
        current = (lo.gid, lo.label)
        changed, lo.reported = current != lo.reported, current
        switched, lo.switched = lo.switched, False
        similarity = lo.similarity if lo.source in ("gallery", "fleet") else 0.0
        return IdentityAssignment(
            self.camera, lo.track_id, lo.gid, lo.label, similarity, lo.source, changed, switched
        )

    def _announce_lost(self) -> list[ProfileUpdate]:
        """Updates telling the fleet which of this camera's tracks walked out of view ``lost_after_s`` ago
        (last seen at the frame's edge; published as ended, with their exemplars, at their last sighting, so
        their claims stop blocking far cameras; a track found again is announced again). A track lost in mid-view
        is hidden or missed by the detector, not gone: its claim stands until claim_ttl_s."""
        after = self.cfg.lost_after_s
        if after <= 0:
            return []
        out: list[ProfileUpdate] = []
        for lo in self._tracks.values():  # least recently seen first
            if lo.seen_tick > self._tick - after:
                break
            if not lo.lost and lo.gid is not None and lo.at_edge:
                lo.lost = True
                out.append(self._profile_update(lo, lo.last_seen, full=True, ended=True))
        return out

    def _publish(self, lo: _Local, now: float) -> ProfileUpdate | None:
        """The update of ``lo`` due on this frame (stamped ``now``), if any; how long since the last one is
        measured on the interval clock, so a wall clock stepped back does not hold updates back."""
        if lo.gid is None:
            return None
        since_last = self._tick - lo.last_published
        due = lo.dirty and since_last >= self.cfg.publish_interval_s
        moved = lo.pos_t == now and since_last >= self.cfg.position_interval_s
        if not (lo.announce or due or moved or since_last >= self.cfg.claim_ttl_s / 2):
            return None
        update = self._profile_update(lo, now, full=lo.announce or lo.dirty, ended=False)
        lo.last_published, lo.announce, lo.dirty = self._tick, False, False
        return update

    def _profile_update(self, lo: _Local, timestamp: float, full: bool, ended: bool) -> ProfileUpdate:
        gid = lo.gid if lo.gid is not None else -1
        exemplars = lo.profile.exemplars.copy() if full else np.zeros((0, self.dim), dtype=np.float32)
        quality = min(1.0, lo.profile.best_quality)
        position = lo.pos if lo.pos_t == timestamp else None  # only where it was at the update's time
        return ProfileUpdate(
            self.camera,
            lo.track_id,
            gid,
            timestamp,
            quality,
            exemplars,
            lo.label,
            ended,
            since=lo.since,
            position=position,
            velocity=lo.vel if position is not None else None,
        )

    def _end(self, track_id: int) -> ProfileUpdate | None:
        lo = self._tracks.pop(track_id, None)
        if lo is None:
            return None
        key = (self.camera, lo.track_id)
        if lo.gid is None:
            if lo.stored is not None:
                self.store.drop(key)
            self._count_unidentified(lo.profile)
            return None
        exemplars = lo.profile.exemplars.copy() if lo.store_dirty or lo.stored != lo.gid else None
        contribution = self._contribution(lo, lo.last_seen, True)
        self._apply_merges(self.store.record(contribution, exemplars, self._now, lo.profile.qualities))
        # with its exemplars: the fleet's stored state keeps a track's latest profile that carries rows (a row-less
        # update only renews it), so an end without them left the track alive there for `who` and late joiners
        return self._profile_update(lo, lo.last_seen, full=True, ended=True)

    def _count_unidentified(self, p: TrackProfile) -> None:
        """A track ended without a global id: counted when it was seen often enough for a new one, and as too
        faint when its quality alone kept it from one (what tells a camera whose people all look too small)."""
        if p.observations < self.cfg.new_min_observations:
            return
        self.ended_observed += 1
        if p.best_quality < self.cfg.new_min_quality:
            self.ended_too_faint += 1
            self.faint_best = p.best_quality

    def _reject_reason(self, u: ProfileUpdate, now: float) -> str | None:
        if u.camera == self.camera:
            return "own_camera"
        if u.dim != self.dim:
            return "dim"
        gid = self.store.canonical(u.global_id)
        if self.store.is_forgotten(u.global_id) or self.store.is_forgotten(gid):
            return "forgotten"
        if u.timestamp < now - self.cfg.retention_s:
            return "stale"
        known = self.store.contributions.get(u.key)
        if known is not None and u.timestamp < known.last:
            return "out_of_order"
        return None


def _distinct(
    cands: dict[int, tuple[float, float]], current: int | None, margin: float
) -> dict[int, tuple[float, float]]:
    """Ratio test: when the best two candidates are closer than ``margin``, the evidence names nobody; only
    the current id (if any) stays a candidate, so an ambiguous look makes a new id rather than a merge."""
    if margin <= 0 or len(cands) < 2:
        return cands
    first, second = sorted((v[1] for v in cands.values()), reverse=True)[:2]
    if first - second >= margin:
        return cands
    return {g: v for g, v in cands.items() if g == current}


def _finite(v: float, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.floating) or not math.isfinite(v):
        raise DataError(f"identity resolver: {name} must be a finite number of seconds, got {v!r}")
    return float(v)


def _check_frame_size(size: tuple[int, int]) -> None:
    if len(size) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in size):
        raise DataError(f"identity resolver: frame_size must be (width, height) > 0, got {size!r}")


def _positions(positions: FloatArray | None, n: int, camera: str) -> list[Position | None]:
    """Per track: its site position, or None (no site, or a NaN row)."""
    if positions is None:
        return [None] * n
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (n, 2):
        raise DataError(f"identity resolver ({camera}): positions must be ({n}, 2), got {pos.shape}")
    return [(float(p[0]), float(p[1])) if np.isfinite(p).all() else None for p in pos]


def _row(emb: FloatArray, index: int) -> FloatArray | None:
    """Row ``index`` of ``emb`` L2-normalised, or None: no detection, a zero row (not embedded), NaN/inf."""
    if index < 0 or index >= len(emb):
        return None
    v = emb[index]
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm < 1e-6:
        return None
    out: FloatArray = (v / norm).astype(np.float32)
    return out
