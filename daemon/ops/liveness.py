"""Is the worker's main loop alive? Progress beats, and the difference between hung and waiting for a source.

The main loop beats once per frame. A loop that has not beaten for a while is one of two things:

* **waiting for its source**: no frame is buffered and the source is not connected (a stream that is down and
  reconnecting with backoff, or a file that has ended). Restarting the process would not help; this is alive.
* **hung**: frames are waiting in the source buffer, or the source is connected, and still nothing was done
  (inference stuck in a native call, a deadlock). This is what the systemd watchdog is for.

A hung loop behind a flapping stream is still caught: while the loop is stuck, the decoder fills the buffer
(the detect-ahead queue is small), so ``queued > 0``. A connected stream that stops sending without failing
looks hung until its ``read_timeout_s`` turns it into a reconnect: keep the watchdog period above it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from daemon.sources import SourceStats


class WatchedSource(Protocol):
    """What liveness reads from a frame source (``FrameSource`` has both)."""

    @property
    def stats(self) -> SourceStats: ...

    @property
    def queued(self) -> int: ...


class Liveness:
    """When the main loop last made progress, and whether a long pause means it is hung. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self._frames = 0
        self._source: WatchedSource | None = None

    def attach(self, source: WatchedSource) -> None:
        """The loop starts reading ``source`` now."""
        with self._lock:
            self._source = source
            self._last = self._clock()

    def beat(self) -> None:
        """One more frame done."""
        with self._lock:
            self._last = self._clock()
            self._frames += 1

    @property
    def frames(self) -> int:
        return self._frames

    def idle_s(self) -> float:
        """Seconds since the last frame (or since the source was attached)."""
        with self._lock:
            return self._clock() - self._last

    def waiting_for_source(self) -> bool:
        """No frame buffered and the source not connected: the loop waits for a reconnect or has reached the end."""
        with self._lock:
            src = self._source
        return src is not None and src.queued == 0 and not src.stats.connected

    def stalled(self, limit_s: float) -> bool:
        """True when the loop has not progressed for more than ``limit_s`` and is not waiting for its source."""
        with self._lock:
            attached = self._source is not None
        return attached and self.idle_s() > limit_s and not self.waiting_for_source()
