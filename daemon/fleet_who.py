"""Who is where: the fleet's identities and the cameras that see them now, read from the fleet's Valkey.

For an operator of a running fleet (`reid-daemon who`), where the cameras run on several hosts and their files
are out of reach. A short-lived observer bridge takes what Valkey keeps (the latest profile of every track
still within ``bridge.state_ttl_s``, verified with the fleet key like any peer's) and listens to the live
channel for ``listen_s`` so that tracks in view now show their latest time, place and end. The folding of
those messages into one row per identity (:func:`sightings`) is pure; only :func:`gather` does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from daemon.bridge import Bridge
from daemon.config import Settings
from daemon.errors import ConfigError, DaemonError
from daemon.fleet_wire import FleetMessage


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
        return {
            "global_id": self.global_id,
            "label": self.label,
            "last_seen": self.last_seen,
            "cameras": [
                {
                    "camera": c.camera,
                    "track_id": c.track_id,
                    "timestamp": c.timestamp,
                    "ended": c.ended,
                    "position": list(c.position) if c.position is not None else None,
                }
                for c in self.cameras
            ],
        }


def sightings(messages: Iterable[FleetMessage]) -> list[IdentitySighting]:
    """One row per global identity from the fleet's profile messages (most recently seen first). Per camera
    the latest message wins; a forget in the same messages removes its identity; unresolved tracks are left
    out (they have no identity yet)."""
    latest: dict[tuple[str, int], FleetMessage] = {}
    forgotten: set[int] = set()
    for m in messages:
        if m.kind == "forget" and m.global_id is not None:
            forgotten.add(m.global_id)
        elif m.kind == "profile" and m.global_id is not None:
            key = (m.camera, m.track_id)
            if key not in latest or m.timestamp >= latest[key].timestamp:
                latest[key] = m
    per_id: dict[int, dict[str, FleetMessage]] = {}
    for (camera, _), m in latest.items():
        gid = m.global_id
        if gid is None or gid in forgotten:
            continue
        seen = per_id.setdefault(gid, {})
        if camera not in seen or m.timestamp >= seen[camera].timestamp:
            seen[camera] = m
    rows = [_row(gid, seen) for gid, seen in per_id.items()]
    return sorted(rows, key=lambda r: (-r.last_seen, r.global_id))


def _row(gid: int, seen: dict[str, FleetMessage]) -> IdentitySighting:
    ms = sorted(seen.values(), key=lambda m: (-m.timestamp, m.camera))
    label = next((m.label for m in ms if m.label), None)
    cams = tuple(CameraSighting(m.camera, m.track_id, m.timestamp, m.ended, m.position) for m in ms)
    return IdentitySighting(gid, label, ms[0].timestamp, cams)


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
    """The verified messages, and how many others were rejected, by reason (forged: another fleet key?)."""

    messages: list[FleetMessage]
    rejected: dict[str, int]


def gather(settings: Settings, listen_s: float = 2.0, timeout_s: float = 5.0) -> Gathered:
    """What the fleet's Valkey keeps and what its cameras publish for ``listen_s`` more (verified messages)."""
    if settings.bridge.url is None:
        raise ConfigError(
            "who needs bridge.url: the fleet's Valkey (an embedded server lives only as long as its fleet run)"
        )
    with Bridge(settings.bridge, "who-cli") as bridge:
        if not bridge.wait_ready(timeout_s):
            raise DaemonError(f"could not reach Valkey at {settings.bridge.url} within {timeout_s} s")
        messages = bridge.drain()
        end = time.monotonic() + listen_s
        while (left := end - time.monotonic()) > 0:
            m = bridge.receive(timeout=left)
            if m is not None:
                messages.append(m)
        counts = asdict(bridge.stats.rejected)
        rejected = {why: n for why, n in counts.items() if n}
    return Gathered(messages, rejected)
