"""Clocks that a wall clock's steps do not move: a monotonic reading, and the fleet's shared clock.

The fleet's clock
    Bridges stamp their batches with when they were sent and judge their peers' by it (bridge.max_age_s,
    bridge.max_clock_skew_s). On each host's own wall clock, one host's clock stepped (an NTP correction, a VM
    resumed, a hand) made every peer's batch stale or from the future there, and its own at every peer, with
    no telling whose clock was wrong. The fleet shares one Valkey, so it shares that server's clock: a bridge
    reads it (TIME) now and then, with the round trip, and carries it on in between by this host's monotonic
    clock. A step of the host's wall clock moves nothing; a step of the server's clock, or the monotonic
    clock's drift, is taken up at the next reading (every ``SHARED_CLOCK_READ_S``), the same for every host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

SHARED_CLOCK_READ_S = 10.0  # a bridge reads the server's time again this often
MAX_READ_ROUND_TRIP_S = 0.5  # a reading slower than this (its error is up to half of it) replaces none


def monotonic_reading() -> float:
    """A monotonic clock that counts the time the system was suspended too, where it has one (Linux): real time
    passing, which a wall clock stepped by NTP or by hand is not. A live frame's ``Frame.monotonic`` is read
    from it; so are the readings the fleet link gives the resolver between frames (``expire_idle``), and the
    fleet's clock between two readings of the server's time (``SharedClock``)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class SharedClock:
    """The fleet's clock (see the module docstring): the server's time at the last reading plus the monotonic
    time since. Before the first reading it is this host's wall clock. Read and taken from any thread (a
    reading replaces one immutable pair)."""

    def __init__(self, every_s: float = SHARED_CLOCK_READ_S) -> None:
        self.every_s = every_s
        self._anchor: tuple[float, float] | None = (
            None  # (the server's time, the monotonic reading it matches)
        )
        self._tried = -math.inf  # the monotonic reading of the last try, taken or not
        self.round_trip_s = math.nan  # of the reading in use

    def now(self) -> float:
        """The fleet's time now (s since the epoch)."""
        anchor = self._anchor
        if anchor is None:
            return time.time()
        server, at = anchor
        return server + (monotonic_reading() - at)

    def at(self, reading: float) -> float | None:
        """The fleet's time at ``reading``, one taken on ``monotonic_reading``'s clock (a live frame's); None
        before the first reading of the server's time."""
        anchor = self._anchor
        if anchor is None:
            return None
        server, at = anchor
        return server + (reading - at)

    def due(self) -> bool:
        """Whether the server's time should be read again (never read, or ``every_s`` since the last try)."""
        return monotonic_reading() - self._tried >= self.every_s

    def read(self, server_time: Callable[[], float]) -> None:
        """Read the server's time with ``server_time`` (a TIME command, in s): it was the server's time somewhere
        within the round trip, so it is taken for its middle, at most half the round trip off. A reading slower
        than MAX_READ_ROUND_TRIP_S keeps the one in use (if any). The command's errors propagate."""
        before = monotonic_reading()
        server = server_time()
        after = monotonic_reading()
        self._tried = after
        if self._anchor is None or after - before <= MAX_READ_ROUND_TRIP_S:
            self._anchor = (server, (before + after) / 2)
            self.round_trip_s = after - before
