"""Lockstep replays: every camera of a replayed fleet decides frame time t on what the others said before t.

Without it, when a replayed camera hears of another camera's track depends on the two processes' speeds and
the machine's load, so two runs of one replay give different global ids. In lockstep each worker, before it
resolves the frame at fleet time ``t``:

1. publishes a ``progress`` marker at ``t``: everything it sent before the marker is from before ``t``
   (and, once it has decided ``t`` and published the result, FleetLink sends one just past ``t``, so the
   cameras named after it need not wait for its next frame);
2. waits until every peer has got that far: a peer whose name sorts after this camera's must have published a
   marker at or past ``t``, one whose name sorts before it a marker past ``t`` (it has decided ``t`` too).
   A peer that has finished is not waited for, nor one that has sent no marker for ``timeout_s`` (a crashed
   worker, or a live camera, which sends none): it is left out from then on, with a warning, so it stalls
   nobody for long (``reid-daemon fleet`` marks a camera whose worker failed as finished at once:
   daemon/fleet_runner.py);
3. takes in, in a fixed order (capture time, then camera, then as sent), exactly what each peer sent before
   the marker that let it go on.

So on one frame time the cameras decide one after another in name order, each seeing what the ones before it
decided: two cameras that first see a person on the same frame do not both give them a new id. The first
camera by name never waits for a marker past its own time and the slowest one never waits at all, so the
fleet cannot deadlock. Markers travel on the bridge's ordered channel behind the messages they close
(daemon/bridge.py), so a marker seen means the messages before it are in.

Replays only: a live camera cannot wait for its peers (FleetLink ignores lockstep there). Memory is bounded:
a peer runs at most one step ahead of the slowest camera it waits for, and each peer's queue holds at most
``max_queued`` messages (FleetLink: ``bridge.inbox_size``; the oldest go first, counted in ``dropped`` and
warned of once: only a peer that has left this camera out runs that far ahead).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from daemon.fleet_wire import FleetMessage

log = logging.getLogger(__name__)

DONE = math.inf  # the progress of a peer that has finished: it will send nothing more
WAIT_SLICE_S = 0.05  # how often a waiting step looks at the clock (timeouts, interruption)
REMARK_S = 0.5  # how often a waiting camera publishes its marker again
NOTE_AFTER_S = 5.0  # a step that has waited this long says which cameras it waits for (once)


@dataclass(slots=True)
class _Peer:
    """What one peer camera sent that this camera has not taken in yet, and how far it has got."""

    queue: deque[FleetMessage]
    progress: float = -math.inf
    heard: float = 0.0  # monotonic time of its last progress marker (or of the start)
    left_out: bool = False


@dataclass(slots=True)
class LockstepStats:
    steps: int = 0
    waited_s: float = 0.0
    dropped: int = 0  # messages dropped from a full peer queue
    left_out: list[str] = field(default_factory=list)  # the peers left out at least once, each named once


class Lockstep:
    """The barrier and the per-peer queues of one camera (see the module docstring). Thread-safe: ``offer``
    runs on the bridge's receiver thread, ``step`` on the worker's main thread."""

    def __init__(
        self,
        camera: str,
        peers: Iterable[str],
        timeout_s: float,
        max_queued: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera = camera
        self.timeout_s = timeout_s
        self.max_queued = max_queued
        self._clock = clock
        now = clock()
        self._peers = {p: _Peer(deque(), heard=now) for p in sorted(set(peers) - {camera})}
        self._cond = threading.Condition()
        self._interrupted = False
        self.stats = LockstepStats()

    @property
    def peers(self) -> list[str]:
        return list(self._peers)

    def offer(self, m: FleetMessage) -> bool:
        """Queue a received message of a peer; False for a message this barrier does not hold back (from a
        camera outside the fleet's list, or this camera's own, or a ``hello``: a start-up greeting stamped
        with the wall clock, not with fleet time, which a peer hears or not depending on who subscribed
        first, so it must not be part of what a step releases)."""
        peer = self._peers.get(m.camera)
        if peer is None or m.kind == "hello":
            return False
        with self._cond:
            # a peer that has finished: a later marker (the fleet repeats a failed camera's) says nothing new
            if m.kind == "progress" and peer.progress == DONE:
                return True
            if peer.left_out and m.kind == "progress":
                log.warning("%s: camera %s is back; lockstep waits for it again", self.camera, m.camera)
                peer.left_out = False
            if len(peer.queue) >= self.max_queued:
                peer.queue.popleft()
                if not self.stats.dropped:
                    log.warning(
                        "%s: lockstep queue of camera %s is full: its oldest messages go",
                        self.camera,
                        m.camera,
                    )
                self.stats.dropped += 1
            peer.queue.append(m)
            if m.kind == "progress":
                peer.progress = max(peer.progress, _progress_of(m))
                peer.heard = self._clock()
            self._cond.notify_all()
        return True

    def step(self, t: float, mark: Callable[[], object] | None = None) -> list[FleetMessage]:
        """Wait until every peer has got far enough for this camera to decide ``t`` (or is left out), then
        return, in a fixed order, what the peers sent before that.

        ``mark`` publishes this camera's marker at ``t``: called first, and again every ``REMARK_S`` while
        waiting, since pub/sub drops what is sent before a peer has subscribed (a worker still starting): a
        marker lost so would otherwise hold up every camera until the timeout. (Without ``mark`` the caller
        has published it.)
        """
        start = self._clock()
        marked, noted = -math.inf, False
        while True:
            if mark is not None and self._clock() - marked >= REMARK_S:
                mark()
                marked = self._clock()
            with self._cond:
                behind = self._behind(t)
                if self._interrupted or not behind:
                    released = [
                        m for name, p in self._peers.items() for m in _release(p, t, name < self.camera)
                    ]
                    break
                if not noted and self._clock() - start >= NOTE_AFTER_S:
                    noted = True
                    log.info(
                        "%s: lockstep: waiting for camera(s) %s (a camera that sends no marker for %.0f s is "
                        "left out)",
                        self.camera,
                        ", ".join(behind),
                        self.timeout_s,
                    )
                self._cond.wait(WAIT_SLICE_S)
        self.stats.steps += 1
        self.stats.waited_s += self._clock() - start
        released.sort(key=lambda m: (m.timestamp, m.camera))  # stable: a camera's messages stay as sent
        return [m for m in released if m.kind != "progress"]

    def _behind(self, t: float) -> list[str]:
        """The peers still waited for that have not got far enough for ``t`` (none: ready); leaves out (and
        warns about) the ones behind that have sent no marker for ``timeout_s``. Call under the lock."""
        now = self._clock()
        behind: list[str] = []
        for name, p in self._peers.items():
            if p.left_out or self._past(name, p, t):
                continue
            if now - p.heard > self.timeout_s:
                p.left_out = True
                if name not in self.stats.left_out:  # once, however often (bounded by the peers)
                    self.stats.left_out.append(name)
                log.warning(
                    "%s: camera %s has not moved on for %.0f s: lockstep goes on without it",
                    self.camera,
                    name,
                    self.timeout_s,
                )
            else:
                behind.append(name)
        return behind

    def _past(self, name: str, peer: _Peer, t: float) -> bool:
        """Whether ``peer`` has got far enough for this camera to decide ``t``."""
        return _far_enough(peer.progress, t, name < self.camera)

    def interrupt(self) -> None:
        """Stop waiting, now and from now on (the worker is stopping)."""
        with self._cond:
            self._interrupted = True
            self._cond.notify_all()


def _far_enough(progress: float, t: float, first: bool) -> bool:
    """Whether a peer at ``progress`` lets a camera decide ``t``: past ``t`` when the peer decides before it on
    one frame time (``first``: its name sorts first), else at ``t``."""
    return progress > t if first else progress >= t


def _release(peer: _Peer, t: float, first: bool) -> list[FleetMessage]:
    """Pop what ``peer`` sent before the marker that lets this camera decide ``t``; all of it when the peer
    is left out."""
    out: list[FleetMessage] = []
    q = peer.queue
    while q:
        m = q[0]
        if not peer.left_out and m.kind == "progress" and _far_enough(_progress_of(m), t, first):
            break
        out.append(q.popleft())
    return out


def _progress_of(marker: FleetMessage) -> float:
    return DONE if marker.ended else marker.timestamp
