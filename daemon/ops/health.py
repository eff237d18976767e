"""What is wrong with a camera worker right now, in words: the body of ``/health`` and systemd's STATUS line.

``Health.report()`` gives an HTTP status (200 when nothing is wrong, else 503) and a JSON document listing the
problems, each a short sentence starting with what is wrong:

* ``starting: loading models and opening the source`` (before the first frame can be read)
* ``starting: waiting for the camera folder's lock, held by <holder>, which writes <folder> ...`` (a ``forget``
  or ``fleet`` writing the camera's folder; ``camera_lock.WRITER_WAIT_S`` at most)
* ``starting: waiting for the source: <why>; trying again in N s`` (a live source not up yet, within
  ``source.startup_wait_s``)
* ``starting: waiting for the fleet's Valkey at <url>: catching up ...`` (fleet mode: joining the fleet, for up
  to ``fleet.ready_timeout_s`` when Valkey does not answer)
* ``model missing: <error>`` (the worker is about to exit non-zero; see the runner)
* ``source down: <last error>`` (a live stream reconnecting, a file that failed)
* ``valkey down: <why>`` (fleet mode: the bridge has no connection, or the last PING failed)
* ``stalled: no frame processed for N s while frames wait`` (hung inference; the watchdog acts on the same)
* ``source silent: connected, but no frame for N s ...`` (a stream that stopped sending without failing, for
  longer than ops.stall_after_s and not yet source.read_timeout_s, after which it is ``source down``)
* ``forget not done: global ids [...] are still in its files: cannot read <file>: <why>`` (fleet mode: a forget
  the camera's files could not take yet; the worker tries again)
* ``stopping: <why>`` (a stop was asked for: the worker finishes its frame, flushes and exits)
* ``stopped`` (the worker has finished or is shutting down)

The document also gives the frames processed, the seconds since the last one (``idle_s``) and since the process
started (``uptime_s``: a worker restarted by systemd starts again from 0, however long the service has been up).

In fleet mode the document also names the peer cameras whose clocks lag this host's by more than
identity.claim_ttl_s and were heard from within it (``lagging_peers``: camera -> seconds, from
``BridgeStats.lagging``), and those whose clocks lead it by more than bridge.max_clock_skew_s (``leading_peers``,
from ``BridgeStats.leading``): not a problem of this worker (its status stays ok), nor of the ids (what cameras
say to the fleet is on the fleet's clock), but the times in those cameras' files are off.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daemon.bridge import BridgeStats
from daemon.ops.liveness import Liveness, WatchedSource

Phase = Literal["starting", "running", "stopping", "stopped", "failed"]
_IMPORTED = time.monotonic()  # where the process's start cannot be read: the closest this module knows


def process_age_s() -> float:
    """Seconds since this process started: its start in clock ticks after boot (``/proc/self/stat``, field 22)
    against the time since boot (``/proc/uptime``); where those cannot be read, since this module was imported."""
    try:
        stat = Path("/proc/self/stat").read_bytes()  # pid (command) state ...: the command may hold anything
        ticks = int(stat.rsplit(b")", 1)[1].split()[19])  # the fields after the command start at the 3rd
        since_boot = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
        return max(since_boot - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


@dataclass(frozen=True, slots=True)
class Report:
    """One health verdict: ``ok`` and the problems in words."""

    ok: bool
    problems: tuple[str, ...]
    body: dict[str, Any]

    @property
    def http_status(self) -> int:
        return 200 if self.ok else 503

    def summary(self) -> str:
        """One line: 'ok' or the problems joined."""
        return "ok" if self.ok else "; ".join(self.problems)


def _phase_problem(phase: Phase, failure: str, waiting: str, stopping: str) -> str | None:
    """What a worker that is not running says of itself (None: it runs, its problems are its parts')."""
    if phase == "starting":
        if waiting:
            return f"starting: waiting for {waiting}"
        return "starting: loading models and opening the source"
    if phase == "failed":
        return failure
    if phase == "stopping":
        return f"stopping: {stopping}"
    if phase == "stopped":
        return "stopped"
    return None


class Health:
    """Collects the worker's phase, its source, its bridge and the loop's liveness into a :class:`Report`."""

    def __init__(self, camera: str, liveness: Liveness, stall_after_s: float) -> None:
        self.camera = camera
        self.liveness = liveness
        self.stall_after_s = stall_after_s
        self._lock = threading.Lock()
        self._phase: Phase = "starting"
        self._failure = ""
        self._stopping = ""  # why the worker stops (a signal), from the request to the end
        self._waiting = ""  # what the start waits for, and why (the source, the fleet's Valkey)
        self._source: WatchedSource | None = None
        self._bridge: Callable[[], BridgeStats] | None = None
        self._unerased: Callable[[], str | None] | None = None  # a forget the camera's files could not take
        self._valkey_error: str | None = None  # from the probe: None = fine or not probed
        self._started = time.monotonic() - process_age_s()  # the process's start, on the monotonic clock

    def running(
        self,
        source: WatchedSource,
        bridge: Callable[[], BridgeStats] | None = None,
        unerased: Callable[[], str | None] | None = None,
    ) -> None:
        """Running on ``source``; ``bridge`` gives the fleet link's stats, ``unerased`` what keeps a forget from
        the camera's files (None: nothing)."""
        with self._lock:
            self._source, self._bridge, self._unerased = source, bridge, unerased
            if self._phase == "starting":  # not a stop asked for while it started
                self._phase = "running"

    def waiting(self, what: str) -> None:
        """The start waits for ``what`` (``the source: <why it could not be opened yet>``, ``the fleet's Valkey
        at <url>: ...``)."""
        with self._lock:
            self._waiting = what

    def stopping(self, why: str) -> None:
        """A stop was asked for (``why``): the worker finishes its frame, flushes and exits; its closed source
        and bridge are no fault of the camera's."""
        with self._lock:
            if self._phase in ("starting", "running"):
                self._phase, self._stopping = "stopping", why

    def stopped(self) -> None:
        with self._lock:
            if self._phase != "failed":
                self._phase = "stopped"

    def failed(self, problem: str) -> None:
        with self._lock:
            self._phase, self._failure = "failed", problem

    def valkey_probe(self, error: str | None) -> None:
        """The latest probe result: None when Valkey answered."""
        with self._lock:
            self._valkey_error = error

    def problems(self) -> list[str]:
        with self._lock:
            phase, failure, source, bridge, probe, waiting, stopping = (
                self._phase,
                self._failure,
                self._source,
                self._bridge,
                self._valkey_error,
                self._waiting,
                self._stopping,
            )
        said = _phase_problem(phase, failure, waiting, stopping)
        if said is not None:
            return [said]
        out: list[str] = []
        if source is not None:
            stats = source.stats
            if not stats.connected:
                out.append(f"source down: {stats.last_error or 'not connected'}")
        if bridge is not None:
            out.extend(_valkey_problem(bridge(), probe))
        if self.liveness.stalled(self.stall_after_s):
            out.append(_stalled(source, self.liveness.idle_s()))
        unerased = self._unerased() if self._unerased is not None else None
        if unerased:
            out.append(f"forget not done: {unerased}")
        return out

    def report(self) -> Report:
        problems = tuple(self.problems())
        body: dict[str, Any] = {
            "camera": self.camera,
            "status": "ok" if not problems else "failing",
            "phase": self._phase,
            "problems": list(problems),
            "frames": self.liveness.frames,
            "idle_s": round(self.liveness.idle_s(), 3),
            "uptime_s": round(time.monotonic() - self._started, 3),
        }
        with self._lock:
            bridge = self._bridge
        if bridge is not None:  # peers whose clocks lag: theirs to fix, so not a problem of this worker's
            stats = bridge()
            body["lagging_peers"], body["leading_peers"] = stats.lagging, stats.leading
        return Report(not problems, problems, body)


def _stalled(source: WatchedSource | None, idle_s: float) -> str:
    """No progress for too long: a hung loop when frames wait for it; with none waiting (the source is connected,
    or the loop would be waiting for it), a camera that stopped sending without failing."""
    if source is not None and source.queued == 0:
        return (
            f"source silent: connected, but no frame for {idle_s:.0f} s (a live stream is reconnected after "
            "source.read_timeout_s)"
        )
    return f"stalled: no frame processed for {idle_s:.0f} s while frames wait"


def _valkey_problem(stats: BridgeStats, probe_error: str | None) -> list[str]:
    if not stats.connected:  # with why: a wrong password or a full server is not a server that is down
        reason = probe_error or stats.last_error  # a full Valkey answers PING; only the bridge's writes fail
        why = f": {reason}" if reason else ""
        return [f"valkey down: the bridge has no connection ({stats.backlog} messages waiting){why}"]
    if probe_error is not None:
        return [f"valkey down: {probe_error}"]
    return []
