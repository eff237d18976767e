"""A camera worker's link to the fleet: identity resolution (pure core) wired to the Valkey bridge (I/O edge).

Per frame the worker hands its tracks here; :class:`FleetLink` puts the frame on the fleet clock, lets the
:class:`~daemon.identity.IdentityResolver` decide each track's global id (local gallery first, then the fleet's
identities), publishes the resulting profile updates through the :class:`~daemon.bridge.Bridge`, and feeds
what other cameras publish back into the resolver (on the bridge's receiver thread, as it arrives; in a
lockstep replay, ``fleet.lockstep``, on the worker's thread before each frame, see daemon/lockstep.py).

Fleet clock
    Every camera's timestamps must be on one clock. A live frame is put on the fleet's clock (Valkey's time,
    as the bridge reads it, at the monotonic reading the source took with the frame's wall-clock stamp): a
    host whose wall clock stepped, or runs off, still says when it saw someone as its peers count time (its
    files, events' ``ts`` and the annotated video, keep the host's wall clock). A replayed file
    carries its position in the recording, so it is placed at ``fleet.epoch + position``: every camera of one
    replay shares the epoch (``reid-daemon fleet`` sets it), and cameras replayed at different speeds still
    agree on when a person was where.

Global ids
    Allocated atomically in Valkey, a few at a time (:class:`IdPool`), so a short outage does not hold back new
    identities; when Valkey is away and the pool is empty, a track simply stays ``pending`` and is decided on a
    later frame. Tracking itself never waits for Valkey.

Retention while no frames come
    The resolver expires identities (``identity.retention_s``) as it resolves a frame; a live camera's worker
    waits on its source while the stream is down (retrying for as long as it runs), and meanwhile the peers'
    updates go on arriving. So a live camera's link also has a thread hand the resolver a monotonic reading every
    ``IDLE_EXPIRY_S`` (``IdentityResolver.expire_idle``): what is due expires within that of retention_s, frames
    or none. It ends no track and publishes nothing. A replay has none (its frames' times are real time). An
    exception ends the thread and is raised by the link's next ``update`` or ``check_idle`` (the worker's own
    thread between frames calls it), so the camera's run ends with it rather than going on without expiry.
    The same thread reads the worker's config file again when it changes (``ConfigWatch``, every
    ``CONFIG_CHECK_S``) and takes its camera list (``take_cameras``): the bridge takes the batches of a camera
    added to a running fleet, catching up on what it stored before (refused until then), and refuses a removed
    one's, and the resolver takes ``identity.adjacency`` (its edges name the cameras), without a restart. A
    file that does not validate is logged, naming it, and the cameras are kept. A worker whose own camera was
    taken out says who stops it (``removal_advice``): the user (a service), or the ``reid-daemon fleet`` that
    runs it, which tells it so in its environment.
    It reads ``gallery.path`` again too when the file changes (``GalleryWatch``, every ``GALLERY_CHECK_S``;
    ``enroll --append``, ``unenroll`` and ``serve`` replace it whole, by a rename, so it is read without the
    gallery's lock and never half written), checked as at start (``_load_gallery``), and hands it to the
    resolver (``take_gallery``): a label added is matched from then on; a label removed is given to no track
    any more (those holding it keep their global ids, unnamed, and the camera's files stop naming it). A file
    gone, unreadable or of another embedder is logged, naming gallery.path, and the gallery kept. Not in
    lockstep: a replay in lockstep keeps the gallery it started with, so that it repeats exactly.
    Forgotten ids wait here for the camera's files (``take_forgotten``), which a live camera's worker erases
    every second, frames or none, as well as on each frame (daemon/worker.py); each id once, at most
    ``MAX_PENDING_FORGETS``. Those sent while the worker was not running come as it catches up (the fleet keeps
    them: daemon/bridge.py); once the worker has said it erased every id it was given (``say_of_forgets``), or
    has none left, the link marks how far it applied the stored ones (``mark_applied``), so its next start takes
    only those sent since.

Identity head
    ``identity.head`` (a projection head from ``reid-daemon adapt``) maps each embedding row to the space the
    resolver matches in, for identity only: the tracker keeps the embedder's raw rows.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from daemon.adapt import ProjectionHead, load_head
from daemon.bridge import Bridge, BridgeError, FleetMessage
from daemon.clocks import SharedClock, monotonic_reading
from daemon.config import Settings, load_settings, looked_for, redact
from daemon.embedding import atomic_write
from daemon.erase_ack import AckState, erase_ack
from daemon.errors import ConfigError, DataError
from daemon.fleet_wire import MAX_EARLIER, EarlierSpell
from daemon.gallery import Gallery
from daemon.identity import (
    AllocatorUnavailable,
    FrameIdentities,
    IdentityAssignment,
    IdentityResolver,
    ProfileUpdate,
)
from daemon.identity.site import SiteMap
from daemon.lockstep import Lockstep
from daemon.motio import MotWriter
from daemon.pipeline import FrameResult
from daemon.types import FloatArray, Frame, Track

log = logging.getLogger(__name__)

IDENTITY_SCHEMA_VERSION = 1
STOP_FLUSH_S = 1.0
"""How long a stopping worker waits for its fleet backlog to be written to Valkey (all of it, at once, where
Valkey is up; the whole of this where it is away, in case it comes back): part of the unit's TimeoutStopSec."""
MAX_PENDING_ROWS = 300  # rows a pending track may hold back before its global id is known (then dropped)
MAX_PENDING_TRACKS = 2_000
MAX_REPORTED_IDS = 100_000  # identities a camera keeps in its end-of-run report (least recently seen go)
IDENTITY_TABLE_REFRESH_S = 60.0  # identities.json is rewritten this often while a camera runs
MAX_SPANS = 16  # sighting spans an identity keeps per camera table (over it, the two closest are joined)
IDLE_EXPIRY_S = (
    1.0  # a live camera's resolver expires what is due this often between frames too (a stream down)
)
MAX_PENDING_FORGETS = 10_000  # forgotten ids waiting for the camera's files (the oldest dropped, logged)
CONFIG_CHECK_S = 2.0  # a live camera's link looks this often whether its config file changed (its cameras)
GALLERY_CHECK_S = 2.0  # and whether its gallery.path changed (enroll --append, unenroll, serve)
MAX_LISTED_LABELS = 20  # labels a gallery change's log line names (then how many more)
MAX_SPELL_TRACKS = 10_000  # tracks whose earlier global ids a link keeps (the least recently published go)
MAX_WIDTH_WARNED = 1_000  # peers a camera remembers warning of for another embedding width (the oldest go)


# ------------------------------------------------------------------------------------- wire conversion


def to_message(u: ProfileUpdate, earlier: tuple[EarlierSpell, ...] = ()) -> FleetMessage:
    """The fleet message that carries resolver update ``u`` (and the ids its track held before, ``earlier``)."""
    return FleetMessage(
        "profile",
        u.camera,
        track_id=u.track_id,
        global_id=u.global_id,
        label=u.label,
        timestamp=u.timestamp,
        quality=u.quality,
        embeddings=u.exemplars,
        ended=u.ended,
        since=u.since,
        position=u.position,
        velocity=u.velocity,
        earlier=earlier,
    )


def to_update(m: FleetMessage, dim: int) -> ProfileUpdate | None:
    """The resolver update a received ``profile`` message carries; None for messages without one.

    A keep-alive carries no rows (its width on the wire is meaningless), so it is given ``dim`` columns.
    DataError when the message's fields do not make a valid update (the caller counts and drops it).
    """
    if m.kind != "profile" or m.global_id is None:
        return None
    rows = m.embeddings if len(m.embeddings) else np.zeros((0, dim), np.float32)
    return ProfileUpdate(
        camera=m.camera,
        track_id=m.track_id,
        global_id=m.global_id,
        timestamp=m.timestamp,
        quality=m.quality,
        exemplars=rows.astype(np.float32, copy=False),
        label=m.label,
        ended=m.ended,
        since=math.nan if m.since is None else m.since,
        position=m.position,
        velocity=m.velocity,
    )


# ------------------------------------------------------------------------------------------- pieces


@dataclass
class _Held:
    """A track's present global id as published (None: forgotten since), since when, its latest word, and the
    ids it held before (by when it gave them up)."""

    global_id: int | None
    since: float
    last: float
    earlier: OrderedDict[int, EarlierSpell] = field(default_factory=OrderedDict)


class TrackSpells:
    """The global ids each of a camera's tracks held before its present one, as its published updates show them:
    what each profile carries (``FleetMessage.earlier``), so that ``reid-daemon who``, which finds only a track's
    latest profile in Valkey, shows where the track was under those ids too. A track back on an id it held
    (12, 30, 12) keeps that id's earlier spell among them, from its first start: ``who`` shows the id from
    then, not from its return alone. At most MAX_EARLIER per track (the
    latest) and MAX_SPELL_TRACKS tracks (a lost track may come back, so an ended one is kept until it is the
    least recently published). A forgotten id is dropped from them (``forget``). Thread-safe: forgets come on
    the bridge's receiver thread."""

    def __init__(self, max_tracks: int = MAX_SPELL_TRACKS) -> None:
        self._lock = threading.Lock()
        self._max_tracks = max_tracks
        self._tracks: OrderedDict[int, _Held] = OrderedDict()

    def note(self, u: ProfileUpdate) -> tuple[EarlierSpell, ...]:
        """Take update ``u`` (about to be published); the ids its track held before, oldest first."""
        with self._lock:
            held = self._tracks.pop(u.track_id, None) or _Held(u.global_id, u.since, u.timestamp)
            if held.global_id != u.global_id:
                if held.global_id is not None:  # given up when the track took its new id
                    until = max(held.last, min(u.since, u.timestamp))
                    before = held.earlier.pop(
                        held.global_id, None
                    )  # it held that id before too: from then on
                    since = held.since if before is None else min(before.since, held.since)
                    held.earlier[held.global_id] = EarlierSpell(held.global_id, since, until)
                held.global_id, held.since = u.global_id, u.since
            held.last = max(held.last, u.timestamp)
            while len(held.earlier) > MAX_EARLIER:
                held.earlier.popitem(last=False)
            self._tracks[u.track_id] = held
            while len(self._tracks) > self._max_tracks:
                self._tracks.popitem(last=False)
            return tuple(held.earlier.values())

    def forget(self, global_id: int) -> None:
        """``global_id`` was forgotten: no track's spells name it any more, nor will."""
        with self._lock:
            for held in self._tracks.values():
                held.earlier.pop(global_id, None)
                if held.global_id == global_id:
                    held.global_id = None


class IdPool:
    """Global ids taken from Valkey ``block`` at a time; :class:`AllocatorUnavailable` when none can be had.

    ``known`` gives the largest global id this worker has seen. A Valkey that came back empty (restarted
    without persistence) counts from 1 again; an id at or below ``known`` is then skipped and the counter is
    raised past it (``allocate_global_ids(floor=...)``), so ids already held by the fleet are never handed out
    twice.
    """

    def __init__(self, bridge: Bridge, block: int = 4, known: Callable[[], int] = lambda: 0) -> None:
        self.bridge = bridge
        self.block = block
        self.known = known
        self.restarts_seen = 0
        self._ids: list[int] = []
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            floor = self.known()
            self._ids = [i for i in self._ids if i > floor]
            if not self._ids:
                self._ids = self._take(0)
                if self._ids[0] <= floor:
                    self.restarts_seen += 1
                    log.warning(
                        "global id counter in Valkey is behind the fleet (%d <= %d): raised past it",
                        self._ids[0],
                        floor,
                    )
                    self._ids = self._take(floor)
            return self._ids.pop(0)

    def _take(self, floor: int) -> list[int]:
        try:
            return list(self.bridge.allocate_global_ids(self.block, floor=floor))
        except BridgeError as e:
            raise AllocatorUnavailable(str(e)) from e


@dataclass(frozen=True, slots=True)
class FleetClock:
    """Maps a frame to fleet time: ``epoch + position`` for replays; for live sources the fleet's shared clock
    (Valkey's time, daemon/clocks.py) at the monotonic reading the frame was taken with, so that a host whose
    wall clock stepped still tells its peers when it saw someone (its own timestamp, the host's wall clock,
    where there is no reading or no shared clock yet)."""

    epoch: float
    media: bool
    offset: float = 0.0  # the camera's source.clock_offset_s
    shared: SharedClock | None = None  # the bridge's reading of the fleet's clock

    def time_of(self, frame: Frame) -> float:
        if self.media:
            return self.epoch + frame.timestamp + self.offset
        shared = None
        if self.shared is not None and frame.monotonic is not None:
            shared = self.shared.at(frame.monotonic)
        return (frame.timestamp if shared is None else shared) + self.offset

    def now(self) -> float:
        """A live camera's fleet time now, between frames."""
        return (time.time() if self.shared is None else self.shared.now()) + self.offset


def fleet_clock(
    settings: Settings, live: bool, started: float, offset: float = 0.0, shared: SharedClock | None = None
) -> FleetClock:
    """The fleet clock of a worker; ``offset``: its camera's ``source.clock_offset_s``; ``shared``: its bridge's
    reading of the fleet's clock, which a live camera's frames are put on."""
    cfg = settings.fleet
    media = cfg.clock == "media" or (cfg.clock == "auto" and not live)
    epoch = cfg.epoch if cfg.epoch is not None else started
    return FleetClock(epoch if media else 0.0, media, offset, shared)


def sighting_gap_s(configured: float, fps: float) -> float:
    """The longest absence within one sighting span of ``identities.json``: ``output.sighting_gap_s``, and at
    least a frame and a half at the ``fps`` frames are delivered, so that consecutive frames of a slow camera are
    one span whatever the clock's rounding."""
    return max(configured, 1.5 / fps)


@dataclass(slots=True)
class _Seen:
    label: str | None
    first: float
    last: float
    frames: int = 0
    tracks: set[int] = field(default_factory=set)
    spans: list[float] = field(default_factory=list)  # start, end, start, end ... of the sighting spans

    def seen(self, now: float, gap_s: float) -> None:
        """A sighting at ``now``: the last span goes on to it, or a new span starts after an absence longer than
        ``gap_s``; over ``MAX_SPANS``, the two spans with the shortest absence between them are joined. A sighting
        from before the last span (a track's rows held back until its id was known) goes into its place."""
        if self.spans and now < self.spans[-2]:
            self._insert(now, gap_s)
        elif self.spans and now - self.spans[-1] <= gap_s:
            self.spans[-1] = max(self.spans[-1], now)
        else:
            self.spans += [now, now]
        if len(self.spans) > 2 * MAX_SPANS:
            gaps = [self.spans[i + 1] - self.spans[i] for i in range(1, len(self.spans) - 1, 2)]
            i = 1 + 2 * gaps.index(min(gaps))
            del self.spans[i : i + 2]

    def _insert(self, now: float, gap_s: float) -> None:
        """``now`` into the sorted spans, then spans that now touch (an absence of ``gap_s`` or less) joined."""
        joined = merge_spans([*zip(self.spans[::2], self.spans[1::2], strict=True), (now, now)], gap_s)
        self.spans = [t for pair in joined for t in pair]


def merge_spans(spans: Iterable[Sequence[float]], gap_s: float) -> list[list[float]]:
    """[start, end] spans, sorted, with those that overlap or lie no more than ``gap_s`` apart joined."""
    out: list[list[float]] = []
    for start, end in sorted((float(a), float(b)) for a, b in spans):
        if out and start - out[-1][1] <= gap_s:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def forgotten_line(camera: str, global_id: int, frame: int | None, now: float) -> str:
    """The ``identities.jsonl`` line saying ``global_id`` was forgotten at fleet time ``now`` (``frame`` None:
    the camera was not running then)."""
    rec = {"v": IDENTITY_SCHEMA_VERSION, "event": "forgotten", "camera": camera, "frame": frame}
    return json.dumps(rec | {"ts": round(now, 3), "global_id": global_id}, separators=(",", ":")) + "\n"


class IdentityLog:
    """``identities.jsonl``: one line each time a track's identity changes, and ``identities.json`` (the fleet
    time of the first frame the camera wrote, ``first_frame_time``, from which the fleet report and fleet.mp4
    count; every global id this camera saw: label, first and last fleet time, frames, its local track ids, and
    its sighting spans, [start, end] pairs of fleet time split where the id was absent longer than ``gap_s``:
    ``sighting_gap_s``, which the table records too), written at the end and refreshed every ``refresh_s`` while
    the camera runs (atomically), so a report can be made of a running or killed worker too.

    Memory is bounded: the table keeps the ``MAX_REPORTED_IDS`` most recently seen identities, each with at most
    ``MAX_SPANS`` sighting spans.
    """

    def __init__(
        self,
        directory: Path,
        camera: str,
        *,
        gap_s: float,
        refresh_s: float = IDENTITY_TABLE_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera = camera
        self.gap_s = gap_s
        self.path = directory / "identities.jsonl"
        self.summary_path = directory / "identities.json"
        self._fh: IO[str] = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._seen: OrderedDict[int, _Seen] = OrderedDict()
        self._held: OrderedDict[int, list[float]] = OrderedDict()  # pending track -> fleet times it was seen
        self._refresh_s = refresh_s
        self._clock = clock
        self._written = clock()
        self.first_frame_time: float | None = None  # fleet time of the first frame, whoever was on it

    def frame(self, index: int, now: float, assignments: tuple[IdentityAssignment, ...]) -> None:
        self.first_frame_time = min(now, self.first_frame_time if self.first_frame_time is not None else now)
        for a in assignments:
            if a.switched:  # what it held was another person, who never got an id on this track
                self._held.pop(a.track_id, None)
            if a.global_id is None:
                self._hold(a.track_id, now)
                continue
            seen = self._seen.get(a.global_id)
            if seen is None:
                seen = _Seen(a.label, now, now)
                self._seen[a.global_id] = seen
                if len(self._seen) > MAX_REPORTED_IDS:
                    self._seen.popitem(last=False)
            else:
                self._seen.move_to_end(a.global_id)
            for t in [*self._held.pop(a.track_id, []), now]:
                seen.first, seen.last, seen.frames = min(seen.first, t), max(seen.last, t), seen.frames + 1
                seen.seen(t, self.gap_s)
            seen.label = a.label or seen.label
            if len(seen.tracks) < 64:
                seen.tracks.add(a.track_id)
            if a.changed:
                self._write(index, now, a)
        if self._clock() - self._written >= self._refresh_s:
            self._fh.flush()
            self._write_table()

    def _hold(self, track_id: int, now: float) -> None:
        """A sighting of a track whose id is pending: it counts for the id it gets (as ``<camera>.global.txt``
        writes the rows it held back), within the same bounds."""
        times = self._held.setdefault(track_id, [])
        self._held.move_to_end(track_id)
        if len(times) < MAX_PENDING_ROWS:
            times.append(now)
        while len(self._held) > MAX_PENDING_TRACKS:
            self._held.popitem(last=False)

    def ended(self, track_ids: list[int]) -> None:
        """Tracks that ended: what they held without ever getting an id is not anyone's sighting."""
        for tid in track_ids:
            self._held.pop(tid, None)

    def _write(self, index: int, now: float, a: IdentityAssignment) -> None:
        rec = {
            "v": IDENTITY_SCHEMA_VERSION,
            "event": "identity",
            "camera": self.camera,
            "frame": index,
            "ts": round(now, 3),
            "track_id": a.track_id,
            "global_id": a.global_id,
            "label": a.label,
            "source": a.source,
            "similarity": round(a.similarity, 4),
        }
        self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def unname(self, labels: Iterable[str]) -> None:
        """The camera's gallery no longer holds ``labels``: the identities the table gives one of them are
        unnamed (identities.json, rewritten now). Lines written before stay: the file is a log."""
        gone = set(labels)
        if not gone:  # the camera's every frame: its gallery seldom changes
            return
        unnamed = [s for s in self._seen.values() if s.label in gone]
        for s in unnamed:
            s.label = None
        if unnamed:
            self._write_table()

    def forget(self, global_ids: Iterable[int], index: int | None, now: float) -> None:
        """``global_ids`` were forgotten by the fleet: out of the table (identities.json, rewritten now), and a
        ``forgotten`` line in identities.jsonl (``index``: the last frame written, None before the first). Lines
        written before stay: the file is a log."""
        gone = [g for g in global_ids if self._seen.pop(g, None) is not None]
        self.write_forgotten(gone, index, now)
        if gone:
            self._write_table()

    def write_forgotten(self, global_ids: Iterable[int], index: int | None, now: float) -> None:
        """A ``forgotten`` line for each of ``global_ids`` (as ``forget``'s), flushed: the ids the camera's
        erase found in its files that this run did not see (an earlier run's, before a rotation)."""
        lines = [forgotten_line(self.camera, gid, index, now) for gid in global_ids]
        if lines:
            self._fh.writelines(lines)
            self._fh.flush()

    def flush(self) -> None:
        self._fh.flush()

    def reopen(self) -> None:
        """Go on appending to ``identities.jsonl`` after it was rewritten and replaced (``daemon.erase``)."""
        self._fh.close()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def table(self) -> dict[str, dict[str, Any]]:
        return {
            str(gid): {
                "label": s.label,
                "first_seen": round(s.first, 3),
                "last_seen": round(s.last, 3),
                "frames": s.frames,
                "tracks": sorted(s.tracks),
                "spans": [
                    [round(a, 3), round(b, 3)] for a, b in zip(s.spans[::2], s.spans[1::2], strict=True)
                ],
            }
            for gid, s in self._seen.items()
        }

    def _write_table(self) -> None:
        first = None if self.first_frame_time is None else round(self.first_frame_time, 3)
        doc = {
            "v": IDENTITY_SCHEMA_VERSION,
            "camera": self.camera,
            "first_frame_time": first,
            "sighting_gap_s": self.gap_s,
            "identities": self.table(),
        }
        atomic_write(self.summary_path, json.dumps(doc, indent=1).encode("utf-8"))
        self._written = self._clock()

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        self._write_table()


class GlobalMotWriter:
    """MOTChallenge rows with the GLOBAL id as the track id (``<camera>.global.txt``).

    A track's rows from before its global id was decided are held back (at most ``MAX_PENDING_ROWS`` per track)
    and written with the id once it is known: the file says who each box was as soon as the fleet knew. A
    held-back row is dropped where another track of this camera already showed that id on that frame (an id
    is never on two boxes of one frame). Rows of a track that ends without an id are dropped; both counted.
    """

    def __init__(self, path: Path) -> None:
        self.writer = MotWriter(path)
        self.path = path
        self._pending: OrderedDict[int, list[tuple[int, Track]]] = OrderedDict()
        self._shown: OrderedDict[int, set[int]] = (
            OrderedDict()
        )  # global id -> recent frames it was written on
        self._pruned_at = 0  # frame of the last pruning of _shown
        self.unresolved_rows = 0
        self.conflicting_rows = 0

    def write(self, mot_frame: int, tracks: list[Track], ids: tuple[IdentityAssignment, ...]) -> None:
        for t, a in zip(tracks, ids, strict=True):
            if a.switched:  # its held-back rows were another person, who never got an id on this track
                self.unresolved_rows += len(self._pending.pop(t.track_id, []))
            if a.global_id is None:
                rows = self._pending.setdefault(t.track_id, [])
                if len(rows) < MAX_PENDING_ROWS:
                    rows.append((mot_frame, t))
                else:
                    self.unresolved_rows += 1
                continue
            shown = self._shown.setdefault(a.global_id, set())
            self._shown.move_to_end(a.global_id)
            for f, old in self._pending.pop(t.track_id, []):
                if f in shown:
                    self.conflicting_rows += 1
                    continue
                self.writer.write_track(f, a.global_id, old.xyxy, old.score)
                shown.add(f)
            self.writer.write_track(mot_frame, a.global_id, t.xyxy, t.score)
            shown.add(mot_frame)
        while len(self._pending) > MAX_PENDING_TRACKS:
            _, rows = self._pending.popitem(last=False)
            self.unresolved_rows += len(rows)
        if mot_frame - self._pruned_at >= MAX_PENDING_ROWS:  # amortised: at most 2 horizons of frames kept
            self._pruned_at = mot_frame
            self._forget_old_frames(mot_frame - MAX_PENDING_ROWS - 1)

    def _forget_old_frames(self, before: int) -> None:
        """Bound memory: frames older than any held-back row can be, and ids not shown since, are dropped."""
        for gid in list(self._shown):
            frames = self._shown[gid]
            frames.difference_update([f for f in frames if f < before])
            if not frames:
                del self._shown[gid]

    def ended(self, track_ids: list[int]) -> None:
        for tid in track_ids:
            self.unresolved_rows += len(self._pending.pop(tid, []))

    def flush(self) -> None:
        self.writer.flush()

    def reopen(self) -> None:
        """Go on appending after the file was rewritten and replaced (``daemon.erase``)."""
        self.writer.reopen()

    def close(self) -> None:
        self.ended(list(self._pending))
        self.writer.close()


class ConfigWatch:
    """A running worker's config file, read again when it changes (its modification time, size or inode: an
    editor's or a deployment's rename too). ``changed`` gives the new settings; a file that cannot be read or
    no longer validates is logged as an error naming it (once per change) and gives None, so the worker keeps
    what it holds. Checked first whatever the file's state: it may have changed while the worker started."""

    def __init__(self, path: Path, camera: str, keeps: str = "the worker keeps the cameras it had") -> None:
        self.path = path
        self.camera = camera  # who reads it ("fleet": ``reid-daemon fleet``), and what it keeps meanwhile
        self.keeps = keeps
        self._seen: tuple[int, ...] | None = (-1,)  # the file's state when last read ((-1,): not read yet)

    def changed(self) -> Settings | None:
        state = file_state(self.path)
        if state == self._seen:  # None twice: still not there (said once)
            return None
        self._seen = state
        try:
            return load_settings(self.path)
        except (ConfigError, OSError) as e:  # OSError: a folder on its path the worker may no longer enter
            log.error(
                "%s: config file %s changed but cannot be taken: %s; %s",
                self.camera,
                self.path,
                e,
                self.keeps,
            )
            return None


class GalleryWatch:
    """A running camera's ``gallery.path``, read again when it changes (``file_state``: a file replaced by a
    rename, as every writer of a gallery saves it, has a new inode). ``changed`` gives the new gallery, checked as
    at start (``_load_gallery``: its width and embedder); a file gone, unreadable, corrupt or of another embedder
    is logged as an error naming gallery.path (once per change of the file) and gives None: the camera keeps the
    gallery it holds. Read without the gallery's lock (writers hold it to read, change and save the file): a
    rename replaces the file whole, so a read sees the old file or the new one, never half of one, and the
    camera needs no right to write in the gallery's folder (where the lock file is made)."""

    def __init__(
        self, settings: Settings, camera: str, dim: int, signature: str | None, seen: tuple[int, ...] | None
    ) -> None:
        self.settings = settings
        self.camera = camera
        self.dim = dim
        self.signature = signature
        if settings.gallery.path is None:
            raise ConfigError("gallery.path is not set: there is no gallery file to follow")
        self.path = Path(settings.gallery.path)
        self._seen = seen  # the file's state before it was last read

    def changed(self, held: Gallery | None) -> Gallery | None:
        """The gallery file as it is now where it changed since it was last read (None: unchanged, or it cannot
        be taken, logged); ``held``: the gallery the camera holds (its once-only warnings are not said again)."""
        state = file_state(self.path)
        if state == self._seen:
            return None
        self._seen = state
        try:
            return _load_gallery(self.settings, self.dim, self.signature, held)
        except ConfigError as e:  # names gallery.path and the file
            log.error(
                "%s: the gallery file changed but cannot be taken: %s; the camera keeps the gallery it had (%s)",
                self.camera,
                e,
                gallery_size(held),
            )
            return None


def gallery_size(gallery: Gallery | None) -> str:
    """``N entries of K labels`` ("no entries": none)."""
    if gallery is None or not len(gallery):
        return "no entries"
    n, k = len(gallery), len(gallery.unique_labels)
    return f"{n} entr{'ies' if n != 1 else 'y'} of {k} label{'s' if k != 1 else ''}"


def listed(labels: Sequence[str]) -> str:
    """``labels`` for a log line: the first ``MAX_LISTED_LABELS``, then how many more ("none": none)."""
    if not labels:
        return "none"
    more = len(labels) - MAX_LISTED_LABELS
    names = ", ".join(repr(label) for label in labels[:MAX_LISTED_LABELS])
    return names if more <= 0 else f"{names} and {more} more"


FLEET_PID_ENV = "REID_DAEMON_FLEET_PID"  # `reid-daemon fleet` gives its workers its pid in their environment
FLEET_FOLLOWS_ENV = (
    "REID_DAEMON_FLEET_FOLLOWS"  # and "1" there where it follows its YAML (fleet_runner._Follow)
)
STARTED_AGAIN_ENV = (  # and, to a worker it started again with new settings (fleet_runner._Follow), the
    "REID_DAEMON_STARTED_AGAIN"  # keys that changed, comma-joined: its status.json records them for the report
)


def removal_advice(camera: str, env: Mapping[str, str]) -> str:
    """What is to be done with the worker of ``camera``, taken out of its config, as it runs (``env``: its
    environment): a service's is stopped by the user; one that a ``reid-daemon fleet`` runs (``FLEET_PID_ENV``)
    is stopped by that fleet where it follows its YAML (``FLEET_FOLLOWS_ENV``), else (``--cameras``) runs until
    that fleet is stopped."""
    fleet = env.get(FLEET_PID_ENV)
    if not fleet:
        return f"stop its worker (systemctl disable --now reid-daemon@{camera})"
    if env.get(FLEET_FOLLOWS_ENV) == "1":
        return f"the `reid-daemon fleet` that runs it (pid {fleet}) stops its worker"
    return (
        f"the `reid-daemon fleet` that runs it (pid {fleet}) keeps the cameras it started with (--cameras): "
        "stop that fleet to stop its worker"
    )


def file_state(path: Path) -> tuple[int, ...] | None:
    """What tells a file's change: modification time, size, inode and device; None when it cannot be looked at
    (``load_settings`` then says why)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev


# ------------------------------------------------------------------------------------------- the link


class FleetLink:
    """One camera's membership in the fleet (see the module docstring). Thread-safe where it must be: remote
    messages arrive on the bridge's receiver thread, frames on the worker's main thread."""

    def __init__(
        self,
        settings: Settings,
        camera: str,
        dim: int,
        bridge: Bridge | None = None,
        head: ProjectionHead | None = None,
        signature: str | None = None,
        config_path: Path | None = None,
    ) -> None:
        if settings.bridge.url is None:
            log.warning(
                "%s: bridge.url is not set, so this worker starts its own embedded Valkey: no other camera "
                "will see it (run `reid-daemon fleet`, or point bridge.url at the fleet's Valkey)",
                camera,
            )
        self.settings = settings
        self.camera = camera
        if head is not None and head.input_dim != dim:
            raise ConfigError(
                f"identity.head takes {head.input_dim}-d embeddings but camera {camera}'s embedder gives {dim}-d"
            )
        self.head = head
        dim = dim if head is None else head.output_dim
        path = settings.gallery.path
        # the file's state before it is read: a change while it is read is taken on the first check
        seen = file_state(Path(path)) if path is not None else None
        self.gallery = _load_gallery(settings, dim, signature)
        self._gallery_watch = None if path is None else GalleryWatch(settings, camera, dim, signature, seen)
        self.bridge = bridge or Bridge(
            settings.bridge,
            camera,
            on_message=self._on_message,
            lag_warn_s=settings.identity.claim_ttl_s,
            peers=None if settings.bridge.accept_unlisted else settings.cameras,
            stored_forgets=True,
        )
        self.ids = IdPool(self.bridge, known=self._largest_known_id)
        self.resolver = IdentityResolver(camera, dim, self.ids, settings.identity, self.gallery)
        cam = settings.cameras.get(camera)
        self.site = SiteMap(cam.site, camera) if cam is not None and cam.site is not None else None
        self._clock_offset = cam.source.clock_offset_s if cam is not None else 0.0
        self.listeners: list[Callable[[FleetMessage], None]] = []  # e.g. metrics of message age
        self.spells = TrackSpells()  # the ids each track held before, which its profiles carry
        self._largest_id = 0
        self.clock = FleetClock(0.0, False)
        self.remote_invalid = 0
        self._other_widths: OrderedDict[str, int] = OrderedDict()  # peers warned of for another width: theirs
        self.forgets_received = 0
        self.lockstep: Lockstep | None = None
        self.cameras = frozenset(settings.cameras)  # the fleet's, as the config file says now (ConfigWatch)
        self.adjacency = settings.identity.adjacency  # and the edges between them
        self._watch = None if config_path is None else ConfigWatch(config_path, camera)
        self._started = False
        self._interrupted = False
        self.first_track_id = 1  # where this run numbers its tracks from (after an earlier run's, live)
        # ids forgotten since take_forgotten, oldest first, each once: the worker takes them on each frame and,
        # live, every second while none comes; bounded all the same (its files may refuse them a while)
        self._forgotten: OrderedDict[int, None] = OrderedDict()
        # ids whose forget came since take_heard (again or not): the worker, waiting to try its files again,
        # says of them at once that they are pending; bounded as _forgotten
        self._heard: OrderedDict[int, None] = OrderedDict()
        # ids take_forgotten handed out that the camera has not said it erased (nor handed back: forget_later)
        self._erasing: set[int] = set()
        self._applied_upto: str | None = None  # the last mark of the fleet's stored forgets said applied
        self._forgotten_lock = threading.Lock()
        self._idle_stop = threading.Event()
        self._idle_expiry: threading.Thread | None = None
        self._idle_failure: Exception | None = (
            None  # what ended the idle expiry thread (raised by check_idle)
        )
        self._faint_warned = 0  # tracks ended too faint for a global id when that was last said (0: never)

    def start(self, live: bool) -> FleetLink:
        """Connect the bridge and catch up with the fleet (waiting up to ``fleet.ready_timeout_s``)."""
        self.clock = fleet_clock(self.settings, live, time.time(), self._clock_offset, self.bridge.clock)
        cfg = self.settings.fleet
        if self.clock.media and cfg.epoch is None and len(self.settings.cameras) > 1:
            log.warning(
                "%s: replay with fleet.epoch unset: this worker's start is its media time 0, so cameras of the "
                "replay started as separate processes disagree on when things happened; give them one epoch "
                "(fleet.epoch, e.g. REID_FLEET__EPOCH=$(date +%%s)), as `reid-daemon fleet` does",
                self.camera,
            )
        if cfg.lockstep and live:
            log.warning(
                "%s: fleet.lockstep is for replays; a live camera cannot wait for its peers", self.camera
            )
        elif cfg.lockstep and self.settings.bridge.url is None:  # its own embedded Valkey: no peer reaches it
            log.info(
                "%s: fleet.lockstep: alone on its own Valkey, this worker waits for no camera", self.camera
            )
        elif cfg.lockstep:
            self.lockstep = Lockstep(
                self.camera, self.settings.cameras, cfg.lockstep_timeout_s, self.settings.bridge.inbox_size
            )
        self.bridge.start(wait_s=cfg.ready_timeout_s)
        self._started = True
        self.first_track_id = self._first_track_id() if live and not self._interrupted else 1
        # a replay's identities expire on its frames' times; its config file and gallery are followed unless it
        # is in lockstep (whose cameras are fixed from the start, as `reid-daemon fleet` keeps them, and whose
        # decisions must repeat exactly)
        watching = (self._watch is not None or self._gallery_watch is not None) and not cfg.lockstep
        if (live or watching) and self._idle_expiry is None:
            self._idle_stop.clear()
            self._idle_expiry = threading.Thread(
                target=self._expire_while_idle, args=(live,), name=f"idle-expiry:{self.camera}", daemon=True
            )
            self._idle_expiry.start()
        log.info(
            "%s: joined fleet %r at %s (%s clock)",
            self.camera,
            self.settings.bridge.fleet,
            redact(self.bridge.url),
            "media" if self.clock.media else "wall",
        )
        return self

    def _first_track_id(self) -> int:
        """The id after the highest one the fleet holds state of for this camera (an earlier run's)."""
        try:
            first = self.bridge.highest_track_id() + 1
        except BridgeError as e:
            log.warning("%s: %s; track ids start at 1 and may be taken for an earlier run's", self.camera, e)
            return 1
        if first > 1:
            log.info(
                "%s: the fleet holds tracks of an earlier run; track ids go on from %d", self.camera, first
            )
        return first

    def update(self, r: FrameResult) -> FrameIdentities:
        """Resolve one frame's tracks and publish what the fleet should learn from it."""
        self.check_idle()
        h, w = r.frame.image.shape[:2]
        now = self.clock.time_of(r.frame)
        if self.lockstep is not None:
            for m in self.lockstep.step(now, mark=lambda: self._mark(now)):
                self._take(m)
        rows = r.embeddings if self.head is None else identity_rows(self.head, r.embeddings)
        tracks = r.update.tracks
        where = None
        if self.site is not None:
            where = self.site.feet(np.asarray([t.xyxy for t in tracks], np.float32).reshape(-1, 4))
        ids = self.resolver.update(
            now, tracks, rows, (w, h), ended=r.update.ended, positions=where, monotonic=r.frame.monotonic
        )
        for a in ids.assignments:
            if a.global_id is not None and a.global_id > self._largest_id:
                self._largest_id = a.global_id
        self._publish(ids.updates)
        self._warn_faint()
        if self.lockstep is not None:  # decided: the peers need not wait for this camera's next frame
            self._mark(math.nextafter(now, math.inf))
        return ids

    def finish(self, ended: list[int], frame: Frame | None) -> None:
        """The worker stopped: end the tracks still open and publish their last profiles."""
        now = self.clock.time_of(frame) if frame is not None else self.clock.now()
        updates = [u for tid in ended if (u := self.resolver.end_track(tid, now)) is not None]
        self._publish(tuple(updates))
        self._warn_faint()
        if self.lockstep is not None:
            self._mark(now, ended=True)
            st = self.lockstep.stats
            log.info(
                "%s: lockstep: %d frames, %.1f s spent waiting for peers", self.camera, st.steps, st.waited_s
            )

    def _warn_faint(self) -> None:
        """Say so when most of this camera's tracks end without a global id because their quality never reached
        ``identity.new_min_quality``: its people look smaller (or dimmer) than the settings expect, and nothing
        else would tell (at FAINT_AFTER such tracks, then at each tenfold)."""
        r, cfg = self.resolver, self.settings.identity
        if not faint_warning_due(r.ended_observed, r.ended_too_faint, self._faint_warned):
            return
        self._faint_warned = r.ended_too_faint
        log.warning(
            "%s: %d of %d tracks seen long enough ended without a global id, their quality never reaching "
            "identity.new_min_quality %.2f (the last one's best: %.2f); quality is box height over "
            "identity.quality_full_height_px (%g px) times the detector's score, less occlusion: people smaller "
            "than that or detected with low scores; where they are small, set quality_full_height_px nearer "
            "their height in pixels",
            self.camera,
            r.ended_too_faint,
            r.ended_observed,
            cfg.new_min_quality,
            r.faint_best,
            cfg.quality_full_height_px,
        )

    def _mark(self, t: float, ended: bool = False) -> None:
        """Publish a lockstep progress marker: everything sent before it is from before ``t`` (``ended``: the
        camera has finished)."""
        self.bridge.publish(FleetMessage("progress", self.camera, timestamp=t, ended=ended))

    def interrupt(self) -> None:
        """The worker is stopping: the wait to catch up with the fleet (``start``) and a lockstep wait end now."""
        self._interrupted = True
        self.bridge.interrupt()
        if self.lockstep is not None:
            self.lockstep.interrupt()

    def forget(self, global_id: int) -> bool:
        """Erase ``global_id`` here and, through the bridge, everywhere."""
        found = self.resolver.forget(global_id)
        self.spells.forget(global_id)
        self.bridge.forget(global_id)
        self._note_forgotten(global_id)
        return found

    def _note_forgotten(self, global_id: int) -> None:
        with self._forgotten_lock:
            self._forgotten[global_id] = None
            self._bound_forgotten()
            self._heard[global_id] = None
            self._heard.move_to_end(global_id)
            while len(self._heard) > MAX_PENDING_FORGETS:
                self._heard.popitem(last=False)

    def forget_later(self, global_ids: list[int]) -> None:
        """``global_ids``, taken by ``take_forgotten``, are still in the camera's files: taken again next time,
        before those forgotten since."""
        with self._forgotten_lock:
            for gid in reversed(global_ids):
                self._forgotten[gid] = None
                self._forgotten.move_to_end(gid, last=False)
                self._erasing.discard(gid)
            self._bound_forgotten()

    def _bound_forgotten(self) -> None:
        """At most MAX_PENDING_FORGETS ids wait (the camera's files refused them a long while): the oldest go,
        each logged with what to do about it."""
        while len(self._forgotten) > MAX_PENDING_FORGETS:
            gid, _ = self._forgotten.popitem(last=False)
            log.error(
                "%s: global id %d is not erased from the camera's files: more than %d forgotten ids wait for "
                "them (see the errors before); run `reid-daemon forget %d` again once they can be written",
                self.camera,
                gid,
                MAX_PENDING_FORGETS,
                gid,
            )

    def say_of_forgets(self, global_ids: list[int], state: AckState, detail: str) -> None:
        """Tell ``reid-daemon forget``, through Valkey, what became of the forgets of ``global_ids`` here:
        ``erased`` from the camera's files and memory (``detail``: what its files held), or ``pending`` (why),
        stamped on the fleet's clock, which forget reads too (one host's clock lagging its own is nothing)."""
        now = self.bridge.clock.now()
        self.bridge.say_of_forgets(erase_ack(self.camera, gid, state, detail, now) for gid in global_ids)
        if state == "erased":
            with self._forgotten_lock:
                self._erasing.difference_update(global_ids)
            self.mark_applied()

    def mark_applied(self) -> None:
        """Mark, in Valkey, how far the camera applied the forgets the fleet stored (``Bridge.stored_forgets_read``)
        once every forget it was given is erased from its files and memory (none waits, none is being erased),
        so that its next start does not apply them again. Cheap: nothing is sent when the mark stands. Not with
        lockstep, which may hold a peer's forget back."""
        upto = self.bridge.stored_forgets_read  # first: what it read up to was given before it moved
        if upto is None or upto == self._applied_upto or self.lockstep is not None:
            return
        with self._forgotten_lock:
            if self._forgotten or self._erasing:
                return
        self._applied_upto = upto
        self.bridge.mark_forgets_applied(upto)

    def take_heard(self) -> list[int]:
        """The ids whose forget came since the last call, each once, a forget sent again included (one that
        ``take_forgotten`` keeps once): whom a worker waiting to try its files again tells it is not done."""
        with self._forgotten_lock:
            heard = list(self._heard)
            self._heard.clear()
        return heard

    def take_forgotten(self) -> list[int]:
        """The ids forgotten since the last call, oldest first (for the camera's files: ``IdentityLog.forget``)."""
        with self._forgotten_lock:
            taken = list(self._forgotten)
            self._forgotten.clear()
            self._erasing.update(taken)
        return taken

    def _expire_while_idle(self, live: bool) -> None:
        """A live camera's: let the resolver expire what is due every IDLE_EXPIRY_S, frames or none; and a live
        camera's or a replay's out of lockstep: take the cameras of its config file when it changed (every
        CONFIG_CHECK_S), and its gallery.path (every GALLERY_CHECK_S). An exception ends it, kept for
        ``check_idle``."""
        check_at = gallery_at = time.monotonic()
        try:
            while not self._idle_stop.wait(IDLE_EXPIRY_S):
                if live:
                    self.resolver.expire_idle(monotonic_reading())
                if self._watch is not None and time.monotonic() >= check_at:
                    check_at = time.monotonic() + CONFIG_CHECK_S
                    new = self._watch.changed()
                    if new is not None:
                        self.take_cameras(new)
                if self._gallery_watch is not None and time.monotonic() >= gallery_at:
                    gallery_at = time.monotonic() + GALLERY_CHECK_S
                    gallery = self._gallery_watch.changed(self.gallery)
                    if gallery is not None:
                        self.take_gallery(gallery)
        except Exception as e:  # raised in the camera's loop: a thread's traceback alone goes unseen
            self._idle_failure = e

    def take_gallery(self, gallery: Gallery) -> None:
        """The camera's gallery.path changed while it runs (read and checked: ``GalleryWatch``): the resolver
        matches ``gallery`` from now on (``IdentityResolver.set_gallery``: a label removed is given to no track
        any more, those added are matched), and the change is logged."""
        before = self.gallery
        held = set(before.unique_labels) if before is not None else set()
        removed = self.resolver.set_gallery(gallery)
        self.gallery = gallery
        added = sorted(set(gallery.unique_labels) - held)
        log.info(
            "%s: gallery.path %s changed: now %s (before: %s); labels added: %s; removed: %s%s",
            self.camera,
            self.settings.gallery.path,
            gallery_size(gallery),
            gallery_size(before),
            listed(added),
            listed(removed),
            " (given to no track from now on; those holding one keep their global id, unnamed)"
            if removed
            else "",
        )

    def take_cameras(self, settings: Settings) -> None:
        """The fleet's cameras are ``settings``' (its config file, changed while the worker runs): the bridge
        takes the batches of those added, caught up from what they stored before, and refuses those removed, and
        the resolver judges travel between them by its ``identity.adjacency`` (which names them). Nothing else of
        ``settings`` is taken (a restart takes it)."""
        self._take_camera_list(settings)
        edges = settings.identity.adjacency
        if edges != self.adjacency:
            self.adjacency = edges
            self.resolver.set_adjacency(edges)
            log.info(
                "%s: identity.adjacency taken from the config: %s",
                self.camera,
                "; ".join(f"{e.a}-{e.b} {e.min_s:g}-{e.max_s:g} s" for e in edges) or "no edges",
            )

    def _take_camera_list(self, settings: Settings) -> None:
        cameras = frozenset(settings.cameras)
        added, removed = sorted(cameras - self.cameras), sorted(self.cameras - cameras)
        if not added and not removed:
            return
        self.cameras = cameras
        if not self.settings.bridge.accept_unlisted:
            self.bridge.set_peers(cameras)
        log.info(
            "%s: the config's cameras are now %s (added: %s; removed: %s): the batches of those added are taken "
            "from now, caught up from Valkey, and those removed refused",
            self.camera,
            ", ".join(sorted(cameras)),
            ", ".join(added) or "none",
            ", ".join(removed) or "none",
        )
        if self.camera not in cameras:
            log.error(
                "%s: this camera is no longer in the config: the fleet's other workers refuse its batches; %s",
                self.camera,
                removal_advice(self.camera, os.environ),
            )

    def check_idle(self) -> None:
        """Raise the exception that ended the idle expiry thread, if one did: identities are no longer expired
        between frames, and the camera's run ends with it."""
        if self._idle_failure is not None:
            raise self._idle_failure

    def close(self, flush_s: float = STOP_FLUSH_S) -> None:
        self._idle_stop.set()
        thread, self._idle_expiry = self._idle_expiry, None
        if thread is not None:
            thread.join()
        if self._started:
            self.bridge.close(flush_s)
            self._started = False

    def _publish(self, updates: tuple[ProfileUpdate, ...]) -> None:
        for u in updates:
            try:
                self.bridge.publish(to_message(u, self.spells.note(u)))
            except ValueError as e:  # larger than max_message_bytes: a config mismatch, not a crash
                log.warning("%s: profile of track %d not published: %s", self.camera, u.track_id, e)

    def _largest_known_id(self) -> int:
        return self._largest_id

    def _on_message(self, m: FleetMessage) -> None:
        for listener in self.listeners:
            listener(m)
        if self.lockstep is None or not self.lockstep.offer(m):
            self._take(m)

    def _take(self, m: FleetMessage) -> None:
        """Act on a received message: forget an id, or hand a profile to the resolver."""
        if m.global_id is not None:
            self._largest_id = max(self._largest_id, m.global_id)
        if m.kind == "forget" and m.global_id is not None:
            self.forgets_received += 1
            self.resolver.forget(m.global_id)
            self.spells.forget(m.global_id)
            self._note_forgotten(m.global_id)
            return
        try:
            u = to_update(m, self.resolver.dim)
        except DataError as e:
            self.remote_invalid += 1
            log.debug("%s: invalid profile from %s dropped: %s", self.camera, m.camera, e)
            return
        if u is not None:
            self._say_width(u)
            self.resolver.ingest_remote(u, monotonic_reading())  # between frames: judged when it comes

    def _say_width(self, u: ProfileUpdate) -> None:
        """Warn, once while it lasts, that a peer's profiles are of another width than this camera's embedder
        gives (the resolver rejects them, counted by reason 'dim'): it names the peer and both widths."""
        dim = len(u.exemplars[0]) if len(u.exemplars) else self.resolver.dim  # a keep-alive carries no rows
        if dim == self.resolver.dim:
            self._other_widths.pop(u.camera, None)
            return
        if self._other_widths.get(u.camera) == dim:
            return
        self._other_widths[u.camera] = dim
        while len(self._other_widths) > MAX_WIDTH_WARNED:
            self._other_widths.popitem(last=False)
        log.warning(
            "%s: camera %s sends %d-d embeddings, this camera's embedder gives %d-d: its profiles are rejected, so no "
            "one it sees is matched here (the cameras of a fleet need one embedder: camera_defaults.embedder)",
            self.camera,
            u.camera,
            dim,
            self.resolver.dim,
        )


def identity_rows(head: ProjectionHead, embeddings: FloatArray | None) -> FloatArray | None:
    """The identity head's rows for a frame's embeddings; an all-zero row ("not embedded") stays all zero."""
    if embeddings is None:
        return None
    out = np.zeros((len(embeddings), head.output_dim), np.float32)
    embedded = np.any(embeddings != 0, axis=1)
    if embedded.any():
        out[embedded] = head.apply(embeddings[embedded])
    return out


def load_identity_head(settings: Settings, embedder: object) -> ProjectionHead | None:
    """``identity.head`` checked against the camera's embedder; None when not set. ModelError naming the file
    when it was trained for another model or crop size (an ONNX embedder without a head of its own is checked
    in full; otherwise the widths must agree)."""
    path = settings.identity.head
    if path is None:
        return None
    from daemon.embed import OnnxEmbedder, load_checked_head

    if isinstance(embedder, OnnxEmbedder) and embedder.head is None:
        return load_checked_head(Path(path), embedder.cfg, embedder.model_path, embedder.dim)
    return load_head(Path(path))


def _load_gallery(
    settings: Settings, dim: int, signature: str | None, earlier: Gallery | None = None
) -> Gallery | None:
    """``gallery.path`` loaded; ConfigError naming it when it is not there or cannot be read, its rows are not
    of ``dim`` or, where both say, were made by another embedder than ``signature``
    (daemon.embed.embedder_signature: model, head, crop settings). A restart does not mend any of these.
    ``earlier``: the gallery read from it before (its once-only warnings are not said again)."""
    path = settings.gallery.path
    if path is None:
        return None
    if not Path(path).exists():
        raise ConfigError(f"gallery.path: local gallery file not found: {path}{looked_for(Path(path))}")
    try:
        gallery = Gallery.load(path)
    except DataError as e:  # the message names the file
        raise ConfigError(f"gallery.path: {e}") from e
    if earlier is not None:
        gallery.warned_as(earlier)
    if gallery.dim != dim:
        raise ConfigError(
            f"gallery.path: {path} holds {gallery.dim}-d embeddings but the camera's embedder gives {dim}-d "
            "(enroll it with the same embedder)"
        )
    try:
        gallery.check_embedder(signature, "the camera's embedder")
    except DataError as e:
        raise ConfigError(f"gallery.path: {path}: {e}") from e
    return gallery


FAINT_AFTER = 5  # tracks ended too faint for a global id before a camera says so


def faint_warning_due(observed: int, faint: int, warned: int) -> bool:
    """Whether to warn that ``faint`` of the ``observed`` tracks ended too faint for a global id, having warned at
    ``warned`` of them (0: never): from FAINT_AFTER on, when they are at least half, and then at each tenfold (a
    camera whose people all look too small, not one whose distant passers-by do)."""
    if faint < FAINT_AFTER or 2 * faint < observed:
        return False
    return warned == 0 or faint >= 10 * warned
