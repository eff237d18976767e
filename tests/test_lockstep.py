"""Lockstep replays (daemon/lockstep.py): the barrier on its own (a settable clock, threads), then over a real
Valkey through two bridges (markers arrive behind the messages they close)."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from daemon.bridge import Bridge
from daemon.config import BridgeConfig
from daemon.fleet_wire import FleetMessage
from daemon.lockstep import Lockstep
from daemon.valkey_server import EmbeddedValkey


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def profile(camera: str, track: int, ts: float) -> FleetMessage:
    return FleetMessage(
        "profile", camera, track_id=track, global_id=track + 1, timestamp=ts, embeddings=np.ones((1, 4))
    )


def progress(camera: str, ts: float, done: bool = False) -> FleetMessage:
    return FleetMessage("progress", camera, timestamp=ts, ended=done)


def ids(msgs: list[FleetMessage]) -> list[tuple[str, int]]:
    return [(m.camera, m.track_id) for m in msgs]


def step_in_thread(ls: Lockstep, t: float) -> tuple[threading.Thread, list[list[FleetMessage]]]:
    out: list[list[FleetMessage]] = []
    th = threading.Thread(target=lambda: out.append(ls.step(t)), daemon=True)
    th.start()
    return th, out


def test_a_step_waits_for_every_peer_and_takes_only_what_they_sent_before_reaching_it() -> None:
    ls = Lockstep("a", ["a", "b", "c"], timeout_s=30)
    assert ls.peers == ["b", "c"]
    for m in (profile("b", 1, 0.9), progress("b", 1.0), profile("b", 2, 1.0), profile("c", 3, 0.5)):
        assert ls.offer(m)
    th, out = step_in_thread(ls, 1.0)
    th.join(0.3)
    assert th.is_alive()  # c has not reached 1.0
    ls.offer(profile("c", 4, 0.95))
    ls.offer(progress("c", 1.2))
    ls.offer(profile("c", 5, 1.2))
    th.join(2)
    assert not th.is_alive()
    # by capture time, then camera; b's track 2 and c's track 5 came after their markers: held for later
    assert ids(out[0]) == [("c", 3), ("b", 1), ("c", 4)]
    ls.offer(progress("b", 1.5))
    assert ids(ls.step(1.1)) == [("b", 2)]
    assert ls.step(1.2) == []  # c sent track 5 on its step at 1.2: a step past 1.2 takes it
    ls.offer(progress("c", 2.0))
    assert ids(ls.step(1.3)) == [("c", 5)]


def test_on_one_frame_time_cameras_decide_in_name_order_and_never_deadlock() -> None:
    """Each camera's step k: "a" takes what "b" decided on its step k - 1; "b" also takes what "a" decided on
    step k (so two cameras that first see a person on one frame do not both give them a new id)."""
    a, b = Lockstep("a", ["a", "b"], 30), Lockstep("b", ["a", "b"], 30)
    results: dict[str, list[list[tuple[str, int]]]] = {"a": [], "b": []}

    def run(me: Lockstep, other: Lockstep, name: str) -> None:
        for k in range(50):
            t = k * 0.1
            other.offer(progress(name, t))  # publish the marker, then wait
            results[name].append(ids(me.step(t)))
            other.offer(profile(name, k, t))  # what this step decided
        other.offer(progress(name, 99, done=True))

    threads = [threading.Thread(target=run, args=(a, b, "a")), threading.Thread(target=run, args=(b, a, "b"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert not any(th.is_alive() for th in threads)
    assert results["a"] == [[]] + [[("b", k)] for k in range(49)]
    assert results["b"] == [[("a", k)] for k in range(50)]


def test_a_camera_waits_for_the_cameras_named_before_it_to_decide_its_frame_time() -> None:
    ls = Lockstep("b", ["a", "b", "c"], timeout_s=30)
    ls.offer(progress("a", 1.0))
    ls.offer(progress("c", 1.0))
    th, out = step_in_thread(ls, 1.0)
    th.join(0.2)
    assert th.is_alive()  # a is at 1.0 but has not decided it yet; c only needs to be there
    ls.offer(profile("a", 1, 1.0))
    ls.offer(progress("a", 1.1))
    th.join(2)
    assert not th.is_alive() and ids(out[0]) == [("a", 1)]


def test_a_silent_peer_is_left_out_and_waited_for_again_when_it_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    ls = Lockstep("a", ["a", "b", "c"], timeout_s=5, clock=clock)
    ls.offer(progress("c", 10))
    ls.offer(profile("b", 1, 0.1))
    th, out = step_in_thread(ls, 1.0)
    th.join(0.2)
    assert th.is_alive()
    with caplog.at_level(logging.WARNING, logger="daemon.lockstep"):
        clock.t += 6  # b silent for longer than the timeout (c too, but c is past 1.0)
        th.join(2)
    assert not th.is_alive()
    assert ids(out[0]) == [("b", 1)]  # what a left-out peer sent is taken at once
    assert ls.stats.left_out == ["b"] and "camera b has not moved on for 5 s" in caplog.text
    assert ls.step(2.0) == []  # b is not waited for
    ls.offer(progress("b", 3.0))  # it is back
    ls.offer(profile("b", 2, 3.0))
    th, out = step_in_thread(ls, 4.0)
    th.join(0.2)
    assert th.is_alive()  # waits for b again
    ls.offer(progress("b", 4.0))
    th.join(2)
    assert ids(out[0]) == [("b", 2)]


def test_a_peer_left_out_again_and_again_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    """Regression: stats.left_out (summary.json's fleet.lockstep.left_out) took the peer's name each time it was
    left out, so a peer that kept falling silent and coming back (a looped replay, run for as long as it runs)
    grew the list by one name each time, without end. It names each camera left out once; the log says each
    time."""
    clock = Clock()
    ls = Lockstep("a", ["a", "b"], timeout_s=5, clock=clock)
    with caplog.at_level(logging.WARNING, logger="daemon.lockstep"):
        for k in range(50):
            t = 10.0 * k
            ls.offer(progress("b", t))  # back (or there at first)
            clock.t += 6  # then silent for longer than the timeout
            assert ls.step(t + 5) == []
    assert ls.stats.left_out == ["b"]
    assert caplog.text.count("camera b has not moved on for 5 s") == 50


def test_a_long_wait_says_which_cameras_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    """A replay camera started alone waited the whole lockstep timeout (60 s) without a word: it looked hung."""
    clock = Clock()
    ls = Lockstep("a", ["a", "b", "c"], timeout_s=60, clock=clock)
    ls.offer(progress("c", 10))
    with caplog.at_level(logging.INFO, logger="daemon.lockstep"):
        th, _ = step_in_thread(ls, 1.0)
        th.join(0.2)
        assert "waiting for" not in caplog.text  # a short wait is normal
        clock.t += 6
        deadline = time.monotonic() + 5  # the step looks at the clock every WAIT_SLICE_S
        while "waiting for" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        ls.offer(progress("b", 1.0))
        th.join(2)
    assert not th.is_alive()
    assert "a: lockstep: waiting for camera(s) b" in caplog.text and "60 s" in caplog.text, caplog.text


def test_a_waiting_camera_publishes_its_marker_again() -> None:
    """A marker sent before a peer had subscribed is lost (pub/sub): sent again, it cannot stall the fleet."""
    clock = Clock()
    marks: list[float] = []
    ls = Lockstep("a", ["a", "b"], timeout_s=30, clock=clock)
    th = threading.Thread(target=lambda: ls.step(1.0, mark=lambda: marks.append(clock.t)), daemon=True)
    th.start()
    th.join(0.2)
    assert th.is_alive() and marks == [100.0]
    clock.t += 0.6
    deadline = time.monotonic() + 5  # the step looks at the clock every WAIT_SLICE_S; a slow machine may lag
    while len(marks) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marks == [100.0, 100.6]
    ls.offer(progress("b", 1.0))
    th.join(2)
    assert not th.is_alive() and len(marks) == 2


def test_a_peer_that_talks_but_never_sends_markers_is_left_out() -> None:
    """A live camera in the YAML publishes profiles but no markers: it must not hold the replay up for ever."""
    clock = Clock()
    ls = Lockstep("a", ["a", "live"], timeout_s=5, clock=clock)
    th, out = step_in_thread(ls, 1.0)
    for k in range(3):
        th.join(0.1)
        assert th.is_alive()
        clock.t += 2
        ls.offer(profile("live", k, 0.0))
    th.join(2)
    assert not th.is_alive() and ls.stats.left_out == ["live"]
    assert [m.track_id for m in out[0]] == [0, 1, 2]


def test_a_finished_peer_is_not_waited_for_and_its_last_messages_are_taken() -> None:
    ls = Lockstep("a", ["a", "b"], timeout_s=30, max_queued=3)
    ls.offer(profile("b", 7, 5.0))
    ls.offer(progress("b", 5.0, done=True))
    assert ids(ls.step(1000.0)) == [("b", 7)]
    assert ls.step(2000.0) == []
    for _ in range(10):  # the fleet repeats a failed camera's "finished" marker: nothing piles up
        assert ls.offer(progress("b", 9.0, done=True))
    assert ls.stats.dropped == 0


def test_messages_of_cameras_outside_the_fleet_list_its_own_and_hellos_are_not_held() -> None:
    ls = Lockstep("a", ["a", "b"], timeout_s=30)
    assert not ls.offer(profile("a", 1, 0.0))
    assert not ls.offer(profile("cli", 1, 0.0))
    # a peer's start-up hello is heard or not depending on who subscribed first: never part of a step
    assert not ls.offer(FleetMessage("hello", "b", timestamp=5.0))
    assert ls.offer(profile("b", 1, 0.0))
    assert ls.offer(FleetMessage("forget", "b", global_id=3))
    ls.offer(progress("b", 1.0))
    assert ids(ls.step(0.5)) == [("b", 1), ("b", -1)]


def test_interrupt_ends_a_wait() -> None:
    ls = Lockstep("a", ["a", "b"], timeout_s=30)
    th, out = step_in_thread(ls, 1.0)
    th.join(0.2)
    assert th.is_alive()
    ls.interrupt()
    th.join(2)
    assert not th.is_alive() and out == [[]]


def test_a_peer_queue_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    ls = Lockstep("a", ["a", "b"], timeout_s=30, max_queued=3)
    with caplog.at_level(logging.WARNING, logger="daemon.lockstep"):
        for k in range(5):
            ls.offer(profile("b", k, 0.0))
        ls.offer(progress("b", 1.0))
    assert ls.stats.dropped == 3
    assert caplog.text.count("lockstep queue of camera b is full") == 1  # said once, not per message
    assert ids(ls.step(0.5)) == [("b", 3), ("b", 4)]  # the oldest went first; the marker took a slot too


def test_markers_travel_behind_the_profiles_they_close_over_valkey() -> None:
    """Through real bridges: what b's barrier releases at each step is exactly what a sent before it."""
    cfg = BridgeConfig(url=None, signing_key={"value": "fleet-key-for-tests-0123456789"})
    with EmbeddedValkey() as srv:
        cfg = cfg.model_copy(update={"url": srv.url})
        ls = Lockstep("b", ["a", "b"], timeout_s=30)
        with Bridge(cfg, "a") as a, Bridge(cfg, "b", on_message=lambda m: ls.offer(m)) as b:
            assert a.wait_ready(5) and b.wait_ready(5)
            for k in range(20):  # a runs ahead, as fast as it can
                a.publish(progress("a", float(k)))
                for j in range(3):
                    a.publish(profile("a", 10 * k + j, float(k)))
            a.publish(progress("a", 20.0, done=True))
            got = [ids(ls.step(float(k))) for k in range(21)]
    # a's name sorts first: b's step k takes what a decided on its step k too
    assert got == [[("a", 10 * k + j) for j in range(3)] for k in range(20)] + [[]]


def test_stats_count_steps_and_time_waited() -> None:
    clock = Clock()
    ls = Lockstep("a", ["a", "b"], timeout_s=30, clock=clock)
    ls.offer(progress("b", 1.0))
    ls.step(1.0)
    assert ls.stats.steps == 1 and ls.stats.waited_s == 0.0
    th, _ = step_in_thread(ls, 2.0)
    th.join(0.1)
    assert th.is_alive()
    clock.t += 0.5
    ls.offer(progress("b", 2.0))
    # released by b's marker: a step it does not release never returns (the clock stands still: no timeout),
    # so the join's limit only spares a thread a loaded host keeps waiting
    th.join(10)
    assert not th.is_alive()
    assert ls.stats.steps == 2 and ls.stats.waited_s == pytest.approx(0.5)
