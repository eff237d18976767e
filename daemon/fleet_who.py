"""Who is where: the fleet's identities and the cameras that see them now, read from the fleet's Valkey.

For an operator of a running fleet (`reid-daemon who`), where the cameras run on several hosts and their files
are out of reach. A short-lived observer bridge takes what Valkey keeps (the latest profile of every track
still within ``bridge.state_ttl_s``, verified with the fleet key like any peer's) and listens to the live
channel for ``listen_s`` so that tracks in view now show their latest time, place and end. The folding of
those messages into one row per identity (:class:`Sightings`) is pure; only :func:`gather` does I/O.

Each row holds every sighting of its identity that the stored state holds, per camera: each camera track's
spell on it, from when the track took the id to its latest word, so a person who walked past a camera at 10:00
and again at 10:20 (two tracks) shows both, most recent first; what is shown of them is bounded per camera
(``DEFAULT_SIGHTINGS``, ``who --sightings``), saying how many earlier ones are not.

A track that goes on as another identity (lost and back as someone else, a switch, a merge) keeps its earlier
spell: each (camera, track, identity) is kept apart, the earlier marked with the id the track went on as, so
both are shown, each under its own identity (at most ``MAX_SPELLS_PER_TRACK`` per track, the latest). Valkey
keeps only each track's latest word, so its camera says there the ids the track held before
(``FleetMessage.earlier``: each until it went on as another), and a ``who`` started after the change shows
those spells too; one listening across the change has heard them as they were.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

from daemon.bridge import Bridge
from daemon.config import Settings
from daemon.fleet_wire import MAX_EARLIER, FleetMessage

_MAX_FORGOTTEN = 10_000  # forget messages remembered by a long watch
MAX_SPELLS_PER_TRACK = MAX_EARLIER + 1  # identities kept per camera track (those it went on from), the latest
DEFAULT_SIGHTINGS = 5  # sightings shown per identity and camera, most recent first (`who --sightings`)


@dataclass(frozen=True)
class CameraSighting:
    """One spell of a camera track on one identity: from ``since`` (when the track took the id, as its camera
    says; its first word heard where it does not say) to ``timestamp`` (the latest word of it), whether the track
    is over, and where; ``moved_on``: the track went on as another identity since (``went_on_as``; None: as none
    yet, or as one forgotten)."""

    camera: str
    track_id: int
    timestamp: float
    ended: bool
    position: tuple[float, float] | None
    moved_on: bool = False
    went_on_as: int | None = None
    since: float | None = None  # None: as ``timestamp``

    @property
    def start(self) -> float:
        """When the spell began (never after its latest word)."""
        return self.timestamp if self.since is None else min(self.since, self.timestamp)


@dataclass(frozen=True)
class CameraVisits:
    """Every sighting of one identity on one camera that the stored state holds, most recent first."""

    camera: str
    sightings: tuple[CameraSighting, ...]


@dataclass(frozen=True)
class IdentitySighting:
    """One global identity: its label, when it was last seen anywhere, and every sighting of it on each camera
    (``visits``: the cameras by their latest sighting, most recent first)."""

    global_id: int
    label: str | None
    last_seen: float
    visits: tuple[CameraVisits, ...]

    @property
    def cameras(self) -> tuple[CameraSighting, ...]:
        """Each camera's latest sighting, most recent first."""
        return tuple(v.sightings[0] for v in self.visits)

    def as_dict(self, per_camera: int = DEFAULT_SIGHTINGS) -> dict[str, object]:
        """For JSON (a position is a pair): each camera's latest sighting as ``cameras`` (its fields, ``since``
        with them), and under it its ``earlier`` sightings there, most recent first, up to ``per_camera`` in all
        with the latest; ``earlier_not_shown``: how many more the stored state holds."""
        cams = []
        for v in self.visits:
            shown = v.sightings[: max(per_camera, 1)]
            cams.append(
                {
                    **_sighting_dict(shown[0]),
                    "earlier": [_sighting_dict(c) for c in shown[1:]],
                    "earlier_not_shown": len(v.sightings) - len(shown),
                }
            )
        return {
            "global_id": self.global_id,
            "label": self.label,
            "last_seen": self.last_seen,
            "cameras": cams,
        }


def _sighting_dict(c: CameraSighting) -> dict[str, object]:
    return {**asdict(c), "since": c.start}


Spell = tuple[str | None, CameraSighting]  # one identity's label and latest sighting on one camera track


class Sightings:
    """Folds the fleet's messages, as they come, into the latest word of each camera track on each identity it
    held (its spells, at most ``MAX_SPELLS_PER_TRACK``, the latest): what is kept per spell is a few fields, not
    its embeddings, so a large fleet's stored state fits. Thread-safe (the bridge's receiver thread adds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (camera, track) -> global id (None: a word with none) -> its spell
        self._tracks: dict[tuple[str, int], dict[int | None, Spell]] = {}
        self._forgotten: OrderedDict[int, None] = OrderedDict()  # least recently forgotten first

    def add(self, m: FleetMessage) -> None:
        with self._lock:
            if m.kind == "forget" and m.global_id is not None:
                self._forgotten[m.global_id] = None
                self._forgotten.move_to_end(m.global_id)
            elif m.kind == "profile":
                spells = self._tracks.setdefault((m.camera, m.track_id), {})
                for e in m.earlier:  # what its camera says the track was before (heard here or not)
                    said = CameraSighting(m.camera, m.track_id, e.until, False, None, True, since=e.since)
                    _said_before(spells, e.global_id, said)
                old = spells.get(m.global_id)
                if old is None or m.timestamp >= old[1].timestamp:
                    since = m.since if m.since is not None else _first_heard(old, m.timestamp)
                    if (
                        old is not None
                    ):  # a track back on an id it held (12, 30, 12): on it from its first start
                        since = min(since, old[1].start)
                    seen = CameraSighting(m.camera, m.track_id, m.timestamp, m.ended, m.position, since=since)
                    spells[m.global_id] = (m.label, seen)
                elif m.since is None and m.timestamp < old[1].start:  # an earlier word, late: begun by then
                    spells[m.global_id] = (old[0], replace(old[1], since=m.timestamp))
                while len(spells) > MAX_SPELLS_PER_TRACK:
                    del spells[min(spells, key=lambda g: spells[g][1].timestamp)]

    def forgotten(self) -> frozenset[int]:
        """The ids forgotten (``reid-daemon forget``) that this has heard of, the stored ones included."""
        with self._lock:
            return frozenset(self._forgotten)

    def prune(self, before: float) -> None:
        """Forget spells whose latest word is older than ``before`` (a long watch stays bounded)."""
        with self._lock:
            for key, spells in list(self._tracks.items()):
                kept = {g: s for g, s in spells.items() if s[1].timestamp >= before}
                if kept:
                    self._tracks[key] = kept
                else:
                    del self._tracks[key]
            while len(self._forgotten) > _MAX_FORGOTTEN:  # the oldest: their tracks are long pruned
                self._forgotten.popitem(last=False)

    def rows(self) -> list[IdentitySighting]:
        """One row per global identity, most recently seen first. A word without an identity (not resolved yet,
        or resolved afresh) and a forgotten identity are left out; a spell a track went on from says so."""
        with self._lock:
            per_id: dict[int, list[Spell]] = {}
            for spells in self._tracks.values():
                for gid, (label, seen) in _marked(spells, self._forgotten):
                    if gid is not None and gid not in self._forgotten:
                        per_id.setdefault(gid, []).append((label, seen))
        rows = [_row(gid, seen) for gid, seen in per_id.items()]
        return sorted(rows, key=lambda r: (-r.last_seen, r.global_id))


def _first_heard(old: Spell | None, timestamp: float) -> float:
    """A spell's start where its word does not say it (a sender of before ``since``): its first word heard."""
    return timestamp if old is None else min(old[1].start, timestamp)


def _said_before(spells: dict[int | None, Spell], gid: int, seen: CameraSighting) -> None:
    """Keep ``seen``, what a track's camera says of its spell on ``gid`` (carried by a later word), unless a word
    of that spell as late is kept (heard live, with its label and place)."""
    old = spells.get(gid)
    if old is None or seen.timestamp > old[1].timestamp:
        spells[gid] = (None if old is None else old[0], seen)


def _marked(spells: dict[int | None, Spell], forgotten: Container[int]) -> Iterator[tuple[int | None, Spell]]:
    """A track's spells, each one but its latest marked with the identity the track went on as: the next
    spell's (None where it has none, or it was forgotten: a forgotten id is named nowhere). A spell its camera
    said was over ends when the next began: a word of the track on its own id at that time is its latest."""
    order = sorted(
        spells, key=lambda g: (spells[g][1].timestamp, not spells[g][1].moved_on)
    )  # live wins a tie
    for i, gid in enumerate(order):
        label, seen = spells[gid]
        if i == len(order) - 1:
            yield gid, (label, seen)
            continue
        after = order[i + 1]
        then = None if after is None or after in forgotten else after
        yield gid, (label, replace(seen, moved_on=True, went_on_as=then))


def sightings(messages: Iterable[FleetMessage]) -> list[IdentitySighting]:
    """:class:`Sightings` of these messages, as rows."""
    acc = Sightings()
    for m in messages:
        acc.add(m)
    return acc.rows()


def _row(gid: int, seen: list[tuple[str | None, CameraSighting]]) -> IdentitySighting:
    """Every sighting of the identity, per camera (most recent first, the cameras by their latest), and the
    latest label any gave."""
    seen = sorted(seen, key=lambda lc: (-lc[1].timestamp, -lc[1].start, lc[1].camera, lc[1].track_id))
    per_camera: dict[str, list[CameraSighting]] = {}
    for _, c in seen:
        per_camera.setdefault(c.camera, []).append(c)
    visits = tuple(CameraVisits(cam, tuple(cs)) for cam, cs in per_camera.items())
    label = next((lab for lab, _ in seen if lab), None)
    return IdentitySighting(gid, label, seen[0][1].timestamp, visits)


def select(
    rows: list[IdentitySighting], only: int | None = None, name: str | None = None
) -> list[IdentitySighting]:
    """The rows asked for: of global id ``only`` and named ``name`` (each: any when None)."""
    return [r for r in rows if only in (None, r.global_id) and name in (None, r.label)]


def who_text(
    rows: list[IdentitySighting],
    now: float,
    fleet: str,
    only: int | None = None,
    cameras: Iterable[str] = (),
    per_camera: int = DEFAULT_SIGHTINGS,
    name: str | None = None,
    forgotten: Container[int] = (),
) -> str:
    """A table for people: a line per identity, then one per sighting of it on each camera (track, from when to
    when in this host's time zone, how long ago, state, place), most recent first, at most ``per_camera`` a
    camera and a line saying how many earlier are not shown; ``only``, ``name``: the identity asked for, or the
    identities of that name (:func:`select`; none: said not seen, and how many others were; an identity asked
    for whose name others bear too, as identities merged by name on some camera do, names them; one in
    ``forgotten`` is said to be forgotten);
    ``cameras``: the fleet's, those that saw nobody named in the first line."""
    asked = " ".join(
        [*([f"G{only}"] if only is not None else []), *([repr(name)] if name is not None else [])]
    )
    mine = select(rows, only, name)
    if only is not None and only in forgotten:
        return f"fleet {fleet!r}: G{only} was forgotten (reid-daemon forget): nothing of it is kept"
    if asked and not mine:
        others = f"{len(rows)} identit{'y is' if len(rows) == 1 else 'ies are'}" if rows else "nobody is"
        return f"fleet {fleet!r}: {_printable(asked)} not seen within the stored state ({others})"
    if not mine:
        return f"fleet {fleet!r}: nobody seen within the stored state"
    lines = [_headline(mine, now, fleet, () if asked else cameras)]
    for r in mine:
        lines += _identity_lines(r, now, per_camera)
    if only is not None and name is None:
        lines += _namesakes(rows, mine[0])
    return "\n".join(lines)


def _headline(rows: list[IdentitySighting], now: float, fleet: str, cameras: Iterable[str]) -> str:
    """How many identities on which cameras, the ``cameras`` that saw nobody, and the times' zone."""
    cams = sorted({v.camera for r in rows for v in r.visits})
    silent = [c for c in cameras if c not in cams]
    nobody = f"; nobody seen on {', '.join(silent)}" if silent else ""
    n = len(rows)
    return (
        f"fleet {fleet!r}: {n} identit{'y' if n == 1 else 'ies'} on {', '.join(cams)}{nobody}; {_zone(now)}"
    )


def _identity_lines(r: IdentitySighting, now: float, per_camera: int) -> list[str]:
    """The identity's line, and its sightings' (at most ``per_camera`` a camera, then how many are not shown)."""
    lines = [f"  G{r.global_id}" + (f" {_printable(r.label)}" if r.label else "")]
    shown = max(per_camera, 1)
    for v in r.visits:
        lines += [f"    {_sighting_text(c, now)}" for c in v.sightings[:shown]]
        hidden = len(v.sightings) - shown
        if hidden > 0:
            lines.append(
                f"    {v.camera}: {hidden} earlier sighting{'s' if hidden > 1 else ''} not shown "
                f"(--sightings {len(v.sightings)} shows them)"
            )
    return lines


def _namesakes(rows: list[IdentitySighting], mine: IdentitySighting) -> list[str]:
    """A line naming the other identities of ``mine``'s name (a camera that merged them by name counts them as
    one person, their sightings apart), and how to show them all."""
    if not mine.label:
        return []
    others = [f"G{r.global_id}" for r in rows if r.label == mine.label and r.global_id != mine.global_id]
    if not others:
        return []
    name = _printable(mine.label)
    return [f"  also named {name}: {', '.join(others)} (--name {shlex.quote(name)} shows them all)"]


def _sighting_text(c: CameraSighting, now: float) -> str:
    """'door track 7 10:00:01–10:00:30, 22 min ago (track ended) at (x, y)'."""
    at = f" at ({c.position[0]:.1f}, {c.position[1]:.1f})" if c.position is not None else ""
    return f"{c.camera} track {c.track_id} {_span(c.start, c.timestamp, now)}, {_ago(now - c.timestamp)}{_state(c)}{at}"


def _span(start: float, end: float, now: float) -> str:
    """From–to in this host's time zone: the start dated where it is not on now's day, the end where it is not
    on the start's; one time where they are the same second."""
    first = _clock(start, now)
    if round(end) == round(start):
        return first
    return f"{first}–{_clock(end, start)}"


def _clock(t: float, after: float) -> str:
    """``t`` as local HH:MM:SS, dated (YYYY-MM-DD) where its day is not ``after``'s."""
    local = time.localtime(round(t))
    same_day = local[:3] == time.localtime(round(after))[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", local)


def _zone(now: float) -> str:
    """Which time zone the table's times are in (this host's; TZ=UTC for UTC)."""
    return "times " + time.strftime("%Z (UTC%z)", time.localtime(round(now)))


def _printable(text: str) -> str:
    """A label as it can be shown on one line: a control character (a newline, a terminal escape) written as its
    escape, so a name cannot forge rows of the table or clear the screen."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _state(c: CameraSighting) -> str:
    """What became of the track: ended, or went on as another identity (or as none, or one forgotten)."""
    if c.moved_on:
        return (
            f" (track went on as G{c.went_on_as})"
            if c.went_on_as is not None
            else " (track no longer on this id)"
        )
    return " (track ended)" if c.ended else ""


def _ago(seconds: float) -> str:
    s = max(seconds, 0.0)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


@dataclass(frozen=True)
class Gathered:
    """One row per identity, how many messages were rejected, by reason (forged: another fleet key?), the
    fleet's time then (what the sightings' times are on, Valkey's, as the bridge reads it: not this host's), and
    the ids forgotten that the fleet keeps word of (``bridge.forget_keep_s``) or that were heard."""

    rows: list[IdentitySighting]
    rejected: dict[str, int]
    now: float
    forgotten: frozenset[int] = frozenset()


@contextmanager
def _observing(settings: Settings, timeout_s: float) -> Iterator[tuple[Bridge, Sightings]]:
    """An observer bridge on the fleet's Valkey, caught up, folding what it hears into :class:`Sightings`."""
    settings.bridge.shared_url("who")  # ConfigError when unset
    acc = Sightings()
    with Bridge(settings.bridge, "who-cli", on_message=acc.add, observe=True, stored_forgets=True) as bridge:
        if not bridge.wait_ready(timeout_s):
            raise bridge.unreachable(timeout_s)
        yield bridge, acc


def _now(bridge: Bridge, acc: Sightings) -> Gathered:
    counts = asdict(bridge.stats.rejected)
    rejected = {why: n for why, n in counts.items() if n}
    return Gathered(acc.rows(), rejected, bridge.clock.now(), acc.forgotten())


def gather(settings: Settings, listen_s: float, timeout_s: float) -> Gathered:
    """What the fleet's Valkey keeps and what its cameras publish for ``listen_s`` more (verified messages)."""
    with _observing(settings, timeout_s) as (bridge, acc):
        time.sleep(listen_s)
        return _now(bridge, acc)


def watch(
    settings: Settings,
    every_s: float,
    show: Callable[[Gathered], object],
    timeout_s: float,
    rounds: int | None = None,
    listen_s: float = 0.0,
) -> None:
    """Show who is where every ``every_s`` seconds (``rounds`` times; None: until interrupted), the first time
    after listening ``listen_s`` seconds, from one observer bridge that keeps listening; tracks older than
    ``bridge.state_ttl_s`` are dropped, as Valkey drops them."""
    with _observing(settings, timeout_s) as (bridge, acc):
        time.sleep(listen_s)
        shown = 0
        while rounds is None or shown < rounds:
            acc.prune(bridge.clock.now() - settings.bridge.state_ttl_s)  # the sightings' clock
            show(_now(bridge, acc))
            shown += 1
            if rounds is None or shown < rounds:
                time.sleep(every_s)
