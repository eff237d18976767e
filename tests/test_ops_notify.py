"""systemd notifications over a real unix datagram socket, liveness rules, and the watchdog on a hung worker."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ops import FakeSource, NotifySocket, looped_settings, notify_socket, wait_until

from daemon.config import with_overrides
from daemon.ops.liveness import Liveness
from daemon.ops.notify import Notifier, one_line, socket_address, watchdog_period
from daemon.ops.service import Operations
from daemon.types import Detections, Frame
from daemon.worker import CameraWorker


@pytest.fixture
def notify_path(tmp_path: Path) -> Iterator[tuple[str, NotifySocket]]:
    with notify_socket(tmp_path) as pair:
        yield pair


# ------------------------------------------------------------------------------------------ protocol


def test_notifier_sends_datagrams_to_a_path_socket(notify_path: tuple[str, NotifySocket]) -> None:
    path, fake = notify_path
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2500000"}
    n = Notifier(env, unset=True)
    assert n.enabled and n.watchdog_s == 2.5
    assert env == {}  # removed so that child processes cannot notify for us
    assert n.ready("running:\nlobby") and n.watchdog() and n.stopping("bye")
    fake.wait_for("STOPPING")
    assert [m for _, m in fake.messages] == [
        {"READY": "1", "STATUS": "running: lobby"},  # one line
        {"WATCHDOG": "1"},
        {"STOPPING": "1", "STATUS": "bye"},
    ]
    n.close()


def test_notifier_abstract_namespace_socket() -> None:
    name = f"reid-test-{os.getpid()}-{time.monotonic_ns()}"
    fake = NotifySocket("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.status("hello")
        fake.wait_for("STATUS")
        assert fake.values("STATUS") == ["hello"]
    finally:
        fake.close()


def test_notifier_without_systemd_does_nothing_and_a_dead_socket_never_raises(tmp_path: Path) -> None:
    assert not Notifier({}).enabled and not Notifier({}).ready("x")
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert gone.enabled and not gone.watchdog() and not gone.watchdog()  # logged once, not raised


def test_addresses_and_watchdog_period_parsing() -> None:
    assert socket_address("@sd") == "\0sd" and socket_address("/run/n.sock") == "/run/n.sock"
    assert socket_address("") is None and socket_address("relative.sock") is None
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "0"}) is None and watchdog_period({"WATCHDOG_USEC": "x"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid())}) == 0.001
    assert watchdog_period({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert len(one_line("x" * 1000)) == 400


# ------------------------------------------------------------------------------------------ liveness


def test_liveness_tells_a_hung_loop_from_one_waiting_for_its_source() -> None:
    now = [0.0]
    live = Liveness(clock=lambda: now[0])
    src = FakeSource()
    assert not live.stalled(5.0)  # nothing attached yet: starting up is not a hang
    live.attach(src)
    now[0] = 4.0
    assert not live.stalled(5.0)
    now[0] = 6.0
    assert live.stalled(5.0)  # connected, no progress for 6 s
    src.connected, src.queued = False, 0
    assert not live.stalled(5.0)  # the stream is down and the loop starves: waiting, not hung
    src.queued = 3
    assert live.stalled(5.0)  # frames wait and nothing takes them: hung, even while the stream flaps
    live.beat()
    assert not live.stalled(5.0) and live.frames == 1


# ------------------------------------------------------------------------------------------ watchdog


class HangingDetector:
    """Ground-truth detections, until frame ``hang_at`` blocks in ``detect`` until ``release`` is set."""

    def __init__(self, inner: object, hang_at: int) -> None:
        self.inner = inner
        self.hang_at = hang_at
        self.calls = 0
        self.hung_at = 0.0
        self.release = threading.Event()

    def detect(self, frame: Frame) -> Detections:
        self.calls += 1
        if self.calls == self.hang_at:
            self.hung_at = time.monotonic()
            self.release.wait(30)
        return self.inner.detect(frame)  # type: ignore[attr-defined, no-any-return]


def test_status_says_why_a_starting_worker_waits_for_its_live_source(
    tmp_path: Path, notify_path: tuple[str, NotifySocket]
) -> None:
    """A camera not up yet (source.startup_wait_s): STATUS (systemctl status) said 'loading models and
    opening the source' for minutes; it now says which source could not be opened, and when it is tried again."""
    import socket

    path, fake = notify_path
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"rtsp://127.0.0.1:{s.getsockname()[1]}/cam"
    settings = with_overrides(
        looped_settings(tmp_path),
        "door",
        {
            "source.uri": url,
            "source.open_timeout_s": 0.5,
            "source.startup_wait_s": 60.0,
            "source.loop": False,
        },
    )
    with Operations(settings, "door", notifier=Notifier({"NOTIFY_SOCKET": path})) as ops:
        worker = CameraWorker(settings, "door", observers=[ops])
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("waiting for" in x for x in fake.values("STATUS")):
            time.sleep(0.05)
        problems = ops.health.report().problems
        worker.stop()
        runner.join(10)
    waiting = [x for x in fake.values("STATUS") if "waiting for" in x]
    assert waiting and waiting[0].startswith("starting: waiting for the source: ") and url in waiting[0]
    assert "trying again in" in waiting[0] and problems[0].startswith("starting: waiting for the source: ")


def test_status_says_a_starting_fleet_worker_waits_for_its_valkey(
    tmp_path: Path, notify_path: tuple[str, NotifySocket]
) -> None:
    """A fleet worker catches up with the fleet's Valkey before READY=1, for up to fleet.ready_timeout_s when
    Valkey does not answer; meanwhile /health and STATUS (systemctl status) said 'loading models and opening the
    source', both long done. They now say what the start waits for."""
    import socket

    from daemon.config import Settings

    path, fake = notify_path
    with socket.socket() as s:  # a port nobody listens on: Valkey is down
        s.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{s.getsockname()[1]}"
    data = looped_settings(tmp_path).model_dump(mode="python")
    data["fleet"] |= {"enabled": True, "ready_timeout_s": 4.0}
    data["bridge"] |= {"url": url, "allow_unsigned": True}
    data["cameras"]["door"]["embedder"] = {"type": "ground-truth", "truth": {"path": tmp_path / "gt.txt"}}
    settings = Settings.model_validate(data)
    with Operations(settings, "door", notifier=Notifier({"NOTIFY_SOCKET": path})) as ops:
        worker = CameraWorker(settings, "door", observers=[ops])
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("Valkey" in x for x in fake.values("STATUS")):
            time.sleep(0.05)
        problems = ops.health.report().problems
        worker.stop()
        runner.join(10)
    said = [x for x in fake.values("STATUS") if "Valkey" in x]
    assert said and said[0].startswith("starting: waiting for the fleet's Valkey at " + url), fake.values(
        "STATUS"
    )
    assert "fleet.ready_timeout_s" in said[0]
    assert problems == (said[0],)


STALLED = "stalled: no frame processed"


def _read(fake: NotifySocket) -> list[dict[str, str]]:
    """The messages read so far, in the order read (one sender socket's: the order it sent them)."""
    return [m for _, m in list(fake.messages)]


def _stalled(fake: NotifySocket) -> list[int]:
    """Where, in the order read, the supervisor's STATUS= say the loop is stalled."""
    return [i for i, m in enumerate(_read(fake)) if m.get("STATUS", "").startswith(STALLED)]


def test_watchdog_fed_while_progressing_and_starved_when_the_loop_hangs(
    tmp_path: Path, notify_path: tuple[str, NotifySocket]
) -> None:
    """WATCHDOG=1 every third of the period while frames are done (systemd wants one within each period);
    once the loop has done none for a period while frames wait, none, and STATUS= says it is stalled (said
    again each second as the seconds grow: the supervisor still ticks); fed again once the loop goes on."""
    path, fake = notify_path
    period = 2.0
    settings = looped_settings(tmp_path)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(period * 1e6))})
    with Operations(settings, "door", notifier=notifier) as ops:
        worker = CameraWorker(settings, "door", observers=[ops])
        hang = HangingDetector(worker.pipeline.detector, hang_at=20)
        worker.pipeline.detector = hang  # type: ignore[assignment]
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        ready = fake.wait_for("READY", timeout=30)
        wait_until(lambda: len(_stalled(fake)) >= 4, 60, "4 STATUS= saying the loop is stalled")
        starved = _stalled(fake)  # from the supervisor's first stalled tick to its fourth: all while hung
        hang.release.set()
        wait_until(
            lambda: any("WATCHDOG" in m for m in _read(fake)[starved[-1] :]), 30, "WATCHDOG=1 once going on"
        )
        worker.stop()
        runner.join(10)
    assert not runner.is_alive()
    read = _read(fake)
    assert [m for m in read[starved[0] : starved[-1]] if "WATCHDOG" in m] == []  # systemd restarts it
    before = [t for t, m in list(fake.messages)[: starved[0]] if "WATCHDOG" in m and t >= ready]
    gaps = [b - a for a, b in itertools.pairwise([ready, *before])]
    assert len(gaps) >= 3 and max(gaps) < period, gaps  # three ticks a period: two may come late
    fake.wait_for("STOPPING")  # the datagram is read on the fake socket's thread: it may land after join()
    assert fake.values("STOPPING") == ["1"]


def test_watchdog_keeps_feeding_while_the_loop_waits_for_a_dead_source(
    tmp_path: Path, notify_path: tuple[str, NotifySocket]
) -> None:
    """A down stream: no frame, not connected, nothing queued: alive (the RTSP fault test does this for real);
    once frames wait and nothing takes them, hung."""
    path, fake = notify_path
    period = 0.6
    settings = looped_settings(tmp_path)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(period * 1e6))})
    src = FakeSource(connected=False, queued=0)
    with Operations(settings, "door", notifier=notifier) as ops:
        ops.liveness.attach(src)
        wait_until(lambda: ops.liveness.idle_s() > period, 10, "no frame for a period")
        fake.mark("idle")  # what is read after it was sent with no frame for more than a period
        wait_until(
            lambda: sum("WATCHDOG" in m for m in fake.after("MARK", "idle")) >= 4, 20, "4 WATCHDOG=1 idle"
        )
        src.queued = 2  # frames now wait and nobody takes them
        wait_until(lambda: len(_stalled(fake)) >= 3, 20, "3 STATUS= saying the loop is stalled")
        starved = _stalled(fake)
    read = _read(fake)
    assert [m for m in read[starved[0] : starved[-1]] if "WATCHDOG" in m] == []


def test_status_says_stopping_from_a_stop_request_on(
    tmp_path: Path, notify_path: tuple[str, NotifySocket]
) -> None:
    """A SIGTERM sent STOPPING=1 'stopping: door asked to stop', and the supervisor's next tick, its source now
    closed, said 'source down: not connected' (seen under a hand-run unit: `systemctl status` of a stopping
    service, and /health, showing a camera fault) until the worker's last 'stopping: N frames'. From the stop
    request on, STATUS= and /health say stopping. A 0.3 s watchdog period: the supervisor ticks each 0.1 s."""
    path, fake = notify_path
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"})
    with Operations(looped_settings(tmp_path), "door", notifier=notifier) as ops:
        source = FakeSource()
        ops.health.running(source)
        ops.liveness.beat()
        wait_until(lambda: any(s.startswith("ok: ") for s in fake.values("STATUS")), 5.0, "a status tick")
        ops.request_stop()
        wait_until(lambda: bool(fake.values("STOPPING")), 5.0, "STOPPING=1")
        source.connected = False  # as the stop closes it
        fake.mark("closed")
        wait_until(lambda: len(fake.after("MARK", "closed")) >= 3, 5.0, "three ticks after the close")
        report = ops.health.report()
    said = [m["STATUS"] for m in fake.after("STOPPING", "1") if "STATUS" in m]
    assert said and all(s == "stopping: door asked to stop" for s in said), said
    assert report.problems == ("stopping: door asked to stop",) and report.http_status == 503
