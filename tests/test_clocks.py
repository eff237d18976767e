"""The fleet's clock (daemon/clocks.py): pure logic, the server's time given by a function."""

from __future__ import annotations

import time

import pytest

from daemon.clocks import MAX_READ_ROUND_TRIP_S, SharedClock


def _slow(value: float) -> float:
    """A TIME whose round trip takes longer than MAX_READ_ROUND_TRIP_S."""
    time.sleep(MAX_READ_ROUND_TRIP_S + 0.1)
    return value


def test_the_fleets_clock_goes_on_from_the_servers_time_by_the_monotonic_clock() -> None:
    """Before any reading it is the host's wall clock; after one, the server's time then plus the time since."""
    clock = SharedClock(every_s=0.2)
    assert clock.now() == pytest.approx(time.time(), abs=0.01) and clock.due()
    clock.read(lambda: 1000.0)
    assert not clock.due() and clock.round_trip_s < 0.05
    time.sleep(0.25)
    assert clock.now() == pytest.approx(1000.25, abs=0.05) and clock.due()
    clock.read(lambda: 5000.0)  # the server's clock stepped: taken at once
    assert clock.now() == pytest.approx(5000.0, abs=0.05)


def test_a_reading_slower_than_the_round_trip_bound_replaces_none() -> None:
    """A reading is taken for the middle of its round trip, so it may be off by half of it: one slower than
    MAX_READ_ROUND_TRIP_S keeps the reading in use (and is tried again ``every_s`` later), but is taken when
    there is none yet."""
    clock = SharedClock(every_s=0.2)
    clock.read(lambda: _slow(1000.0))
    assert clock.now() == pytest.approx(1000.0 + (MAX_READ_ROUND_TRIP_S + 0.1) / 2, abs=0.05)
    assert clock.round_trip_s > MAX_READ_ROUND_TRIP_S
    clock.read(lambda: 2000.0)
    taken = time.monotonic()
    clock.read(lambda: _slow(9000.0))
    assert clock.now() == pytest.approx(2000.0 + time.monotonic() - taken, abs=0.05)
    assert not clock.due() and clock.round_trip_s < 0.05
