"""Who is where: the fleet's identities and the cameras that see them now, read from the fleet's Valkey.

For an operator of a running fleet (`reid-daemon who`), where the cameras run on several hosts and their files
are out of reach. A short-lived observer bridge takes what Valkey keeps (the latest profile of every track
still within ``bridge.state_ttl_s``, verified with the fleet key like any peer's) and listens to the live
channel for ``listen_s`` so that tracks in view now show their latest time, place and end. The folding of
those messages into one row per identity (:class:`Sightings`) is pure; only :func:`gather` does I/O.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from daemon.bridge import Bridge
from daemon.config import Settings
from daemon.fleet_wire import FleetMessage

_MAX_FORGOTTEN = 10_000  # forget messages remembered by a long watch


@dataclass(frozen=True)
class CameraSighting:
    """The latest a camera said of one identity: its track, when, whether the track is over, and where."""

    camera: str
    track_id: int
    timestamp: float
    ended: bool
    position: tuple[float, float] | None


@dataclass(frozen=True)
class IdentitySighting:
    """One global identity: its label, when it was last seen anywhere, and each camera's latest sighting."""

    global_id: int
    label: str | None
    last_seen: float
    cameras: tuple[CameraSighting, ...]  # most recent first

    def as_dict(self) -> dict[str, object]:
        """For JSON (a position is a pair)."""
        return {**asdict(self), "cameras": [asdict(c) for c in self.cameras]}


class Sightings:
    """Folds the fleet's messages, as they come, into the latest word of each camera's track: what is kept
    per track is a few fields, not its embeddings, so a large fleet's stored state fits. Thread-safe (the
    bridge's receiver thread adds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, int], tuple[int | None, str | None, CameraSighting]] = {}
        self._forgotten: OrderedDict[int, None] = OrderedDict()  # least recently forgotten first

    def add(self, m: FleetMessage) -> None:
        with self._lock:
            if m.kind == "forget" and m.global_id is not None:
                self._forgotten[m.global_id] = None
                self._forgotten.move_to_end(m.global_id)
            elif m.kind == "profile":
                key = (m.camera, m.track_id)
                old = self._latest.get(key)
                if old is None or m.timestamp >= old[2].timestamp:
                    seen = CameraSighting(m.camera, m.track_id, m.timestamp, m.ended, m.position)
                    self._latest[key] = (m.global_id, m.label, seen)

    def prune(self, before: float) -> None:
        """Forget tracks whose latest word is older than ``before`` (a long watch stays bounded)."""
        with self._lock:
            self._latest = {k: v for k, v in self._latest.items() if v[2].timestamp >= before}
            while len(self._forgotten) > _MAX_FORGOTTEN:  # the oldest: their tracks are long pruned
                self._forgotten.popitem(last=False)

    def rows(self) -> list[IdentitySighting]:
        """One row per global identity, most recently seen first. A track whose latest word has no identity
        (not resolved yet, or resolved afresh) and a forgotten identity are left out."""
        with self._lock:
            per_id: dict[int, list[tuple[str | None, CameraSighting]]] = {}
            for gid, label, seen in self._latest.values():
                if gid is not None and gid not in self._forgotten:
                    per_id.setdefault(gid, []).append((label, seen))
        rows = [_row(gid, seen) for gid, seen in per_id.items()]
        return sorted(rows, key=lambda r: (-r.last_seen, r.global_id))


def sightings(messages: Iterable[FleetMessage]) -> list[IdentitySighting]:
    """:class:`Sightings` of these messages, as rows."""
    acc = Sightings()
    for m in messages:
        acc.add(m)
    return acc.rows()


def _row(gid: int, seen: list[tuple[str | None, CameraSighting]]) -> IdentitySighting:
    """The identity's latest sighting on each camera (most recent first) and the latest label any gave."""
    by_camera: dict[str, tuple[str | None, CameraSighting]] = {}
    for label, c in seen:
        if c.camera not in by_camera or c.timestamp >= by_camera[c.camera][1].timestamp:
            by_camera[c.camera] = (label, c)
    ordered = sorted(by_camera.values(), key=lambda lc: (-lc[1].timestamp, lc[1].camera))
    label = next((lab for lab, _ in ordered if lab), None)
    return IdentitySighting(gid, label, ordered[0][1].timestamp, tuple(c for _, c in ordered))


def who_text(rows: list[IdentitySighting], now: float, fleet: str) -> str:
    """A table for people: one line per identity, its cameras with the track, age and state."""
    if not rows:
        return f"fleet {fleet!r}: nobody seen within the stored state"
    cams = sorted({c.camera for r in rows for c in r.cameras})
    lines = [f"fleet {fleet!r}: {len(rows)} identit{'y' if len(rows) == 1 else 'ies'} on {', '.join(cams)}"]
    for r in rows:
        name = f"G{r.global_id}" + (f" {r.label}" if r.label else "")
        where = "; ".join(
            f"{c.camera} track {c.track_id} {_ago(now - c.timestamp)}{' (track ended)' if c.ended else ''}"
            + (f" at ({c.position[0]:.1f}, {c.position[1]:.1f})" if c.position is not None else "")
            for c in r.cameras
        )
        lines.append(f"  {name:<16} {where}")
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    s = max(seconds, 0.0)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


@dataclass(frozen=True)
class Gathered:
    """One row per identity, and how many messages were rejected, by reason (forged: another fleet key?)."""

    rows: list[IdentitySighting]
    rejected: dict[str, int]


@contextmanager
def _observing(settings: Settings, timeout_s: float) -> Iterator[tuple[Bridge, Sightings]]:
    """An observer bridge on the fleet's Valkey, caught up, folding what it hears into :class:`Sightings`."""
    settings.bridge.shared_url("who")  # ConfigError when unset
    acc = Sightings()
    with Bridge(settings.bridge, "who-cli", on_message=acc.add, observe=True) as bridge:
        if not bridge.wait_ready(timeout_s):
            raise bridge.unreachable(timeout_s)
        yield bridge, acc


def _now(bridge: Bridge, acc: Sightings) -> Gathered:
    counts = asdict(bridge.stats.rejected)
    return Gathered(acc.rows(), {why: n for why, n in counts.items() if n})


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
            acc.prune(time.time() - settings.bridge.state_ttl_s)
            show(_now(bridge, acc))
            shown += 1
            if rounds is None or shown < rounds:
                time.sleep(every_s)
