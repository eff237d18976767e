"""The fleet's clock (daemon/clocks.py): pure logic, the server's time given by a function."""

from __future__ import annotations

import time

from daemon.clocks import MAX_READ_ROUND_TRIP_S, SharedClock, monotonic_reading


def _slow(value: float) -> float:
    """A TIME whose round trip takes longer than MAX_READ_ROUND_TRIP_S."""
    time.sleep(MAX_READ_ROUND_TRIP_S + 0.1)
    return value


def test_the_fleets_clock_goes_on_from_the_servers_time_by_the_monotonic_clock() -> None:
    """Before any reading it is the host's wall clock; after one, the server's time then plus the time since.
    Each value is bracketed by readings of the clocks before and after it (a late thread widens the bracket, it
    never fails it)."""
    clock = SharedClock(every_s=0.2)
    before, now, after = time.time(), clock.now(), time.time()
    assert before <= now <= after and clock.due()
    read = _read(clock, 1000.0)
    assert not clock.due() and clock.round_trip_s <= read[1] - read[0]
    time.sleep(0.25)
    assert _since(clock, 1000.0, read) and clock.due()
    read = _read(clock, 5000.0)  # the server's clock stepped: taken at once
    assert _since(clock, 5000.0, read)


def _read(clock: SharedClock, server: float) -> tuple[float, float]:
    """Read ``server`` as the server's time; monotonic readings before and after the read."""
    before = monotonic_reading()
    clock.read(lambda: server)
    return before, monotonic_reading()


def _since(clock: SharedClock, server: float, read: tuple[float, float], half_trip: float = 0.0) -> bool:
    """``clock.now()`` is ``server`` plus the time since ``read`` (the readings around it), taken for the middle
    of a round trip of ``2 * half_trip`` s at least."""
    start, now, end = monotonic_reading(), clock.now(), monotonic_reading()
    low = server + start - (read[1] - half_trip)
    high = server + end - (read[0] + half_trip)
    return low - 1e-6 <= now <= high + 1e-6


def test_a_reading_slower_than_the_round_trip_bound_replaces_none() -> None:
    """A reading is taken for the middle of its round trip, so it may be off by half of it: one slower than
    MAX_READ_ROUND_TRIP_S keeps the reading in use (and is tried again ``every_s`` later), but is taken when
    there is none yet."""
    clock = SharedClock(every_s=0.2)
    before = monotonic_reading()
    clock.read(lambda: _slow(1000.0))
    read = (before, monotonic_reading())
    assert clock.round_trip_s > MAX_READ_ROUND_TRIP_S
    assert _since(clock, 1000.0, read, clock.round_trip_s / 2)  # the middle: half its round trip ago at least
    read = _read(clock, 2000.0)
    clock.read(lambda: _slow(9000.0))
    assert _since(clock, 2000.0, read)
    assert not clock.due() and clock.round_trip_s <= read[1] - read[0]
