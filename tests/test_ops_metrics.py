"""/metrics and /health over real HTTP from a running worker; health verdicts; JSON logs."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _ops import FakeSource, NotifySocket, looped_settings, notify_socket, wait_until
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from daemon import bridge as bridge_module
from daemon.bridge import Bridge, BridgeStats, FleetMessage, Rejections
from daemon.clocks import MAX_READ_ROUND_TRIP_S
from daemon.config import BridgeConfig, OpsConfig, load_settings
from daemon.errors import ConfigError, ModelError
from daemon.fleet import FleetLink
from daemon.fleet_wire import encode_message, with_fields
from daemon.identity import IdentityAssignment, IdentityStats
from daemon.ops import metrics as metrics_module
from daemon.ops.health import Health
from daemon.ops.http import OpsServer, bind_address
from daemon.ops.liveness import Liveness
from daemon.ops.logs import JsonFormatter, setup_logging
from daemon.ops.metrics import FPS_SLICES, CameraMetrics, FrameRate
from daemon.ops.notify import Notifier
from daemon.ops.probe import ValkeyProbe
from daemon.ops.service import Operations
from daemon.types import StageTimes
from daemon.valkey_server import EmbeddedValkey
from daemon.worker import CameraWorker


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted({"camera": "door", **labels}.items())))]


def bridge_stats(connected: bool = True, backlog: int = 0) -> BridgeStats:
    """A BridgeStats with every counter 0."""
    rejected = Rejections(**{f.name: 0 for f in fields(Rejections)})
    given = {"connected": connected, "subscribed": connected, "backlog": backlog, "rejected": rejected}
    given["last_error"], given["lagging"], given["leading"] = "", {}, {}
    return BridgeStats(**{f.name: given.get(f.name, 0) for f in fields(BridgeStats)})


def frames_counted(ops: Operations) -> float:
    """reid_frames_total as the worker's metrics count it now (0 before its first frame)."""
    return samples(ops.metrics.render().decode()).get(("reid_frames_total", (("camera", "door"),)), 0.0)


@pytest.fixture
def notify_path(tmp_path: Path) -> Iterator[tuple[str, NotifySocket]]:
    with notify_socket(tmp_path) as pair:
        yield pair


def test_running_worker_serves_metrics_and_health(tmp_path: Path) -> None:
    settings = looped_settings(tmp_path, http=True, port=0)
    with Operations(settings, "door", notifier=Notifier({})) as ops:
        assert ops.server is not None
        base = ops.server.url
        status, body = get(base + "/health")
        assert status == 503 and json.loads(body)["problems"] == [
            "starting: loading models and opening the source"
        ]
        worker = CameraWorker(settings, "door", observers=[ops])
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        # 10 FPS replay: 10 frames a second once it runs, its start as long as a loaded host takes
        wait_until(lambda: frames_counted(ops) >= 10, 30.0, "10 frames counted")
        status, body = get(base + "/health")
        health = json.loads(body)
        metrics = samples(get(base + "/metrics")[1].decode())
        worker.stop()
        runner.join(10)
        after_stop = get(base + "/health")
        assert get(base + "/nothing")[0] == 404
    assert status == 200 and health["status"] == "ok" and health["problems"] == [] and health["frames"] >= 10
    frames = value(metrics, "reid_frames_total")
    assert frames >= 10 and value(metrics, "reid_loop_seconds_count") == frames
    assert value(metrics, "reid_stage_seconds_count", stage="detect") == frames - 1  # deltas from frame 2 on
    assert value(metrics, "reid_stage_seconds_count", stage="decode") == frames - 1
    assert 2 <= value(metrics, "reid_fps") <= 15  # paced at 10 FPS (less on a busy machine)
    assert value(metrics, "reid_source_connected") == 1 and 1 <= value(metrics, "reid_tracks_alive") <= 4
    assert value(metrics, "reid_source_frames_decoded_total") >= frames
    assert value(metrics, "reid_source_frames_dropped_total") == 0
    assert after_stop[0] == 503 and json.loads(after_stop[1])["problems"] == ["stopped"]


def test_undecodable_frames_of_a_damaged_file_are_a_metric_equal_to_the_summarys_count(
    tmp_path: Path,
) -> None:
    """Frames the source could not decode and passed over (a damaged video's, a folder's corrupt images) were
    counted in summary.json's source_stats.frames_skipped and the summary line only: no metric said a camera's
    recording or stream was damaged. reid_source_frames_undecodable_total counts them, from the same count."""
    from test_sources import _blank_frames, _mjpeg_avi

    video = tmp_path / "damaged.avi"
    video.write_bytes(_blank_frames(_mjpeg_avi(video, 6), {2, 4}))  # two frames' JPEG data lost
    settings = looped_settings(tmp_path)
    cam = settings.cameras["door"]
    update = {
        "source": cam.source.model_copy(update={"uri": str(video), "loop": False}),
        "output": cam.output.model_copy(update={"summary": True}),
    }
    settings = settings.model_copy(update={"cameras": {"door": cam.model_copy(update=update)}})
    with Operations(settings, "door", notifier=Notifier({})) as ops:
        before = samples(ops.metrics.render().decode())
        CameraWorker(settings, "door", observers=[ops]).run()
        after = samples(ops.metrics.render().decode())
    summary = json.loads((tmp_path / "runs" / "door" / "summary.json").read_text())
    assert summary["source_stats"]["frames_skipped"] == 2 and summary["frames"] == 4
    assert value(before, "reid_source_frames_undecodable_total") == 0  # there from the start
    assert value(after, "reid_source_frames_undecodable_total") == summary["source_stats"]["frames_skipped"]


def test_failed_tries_to_open_a_camera_at_start_count_as_reconnect_failures(tmp_path: Path) -> None:
    """reid_source_reconnect_failures_total counts the tries to open a live stream that failed; those made while
    a camera that was not up yet was waited for at start (source.startup_wait_s, minutes of them) were in no
    metric: the counter was not there until the stream opened, and then it left them out."""
    from test_sources import RtspServer

    settings = looped_settings(tmp_path, http=True, port=0)
    server = RtspServer(tmp_path / "clip.mp4")
    server.start()  # here, so a missing GStreamer skips; down until started again on its port below
    server.stop()
    cam = settings.cameras["door"]
    source = cam.source.model_copy(
        update={"uri": server.url, "loop": False, "startup_wait_s": 30.0, "reconnect_max_s": 0.3}
    )
    settings = settings.model_copy(update={"cameras": {"door": cam.model_copy(update={"source": source})}})
    with Operations(settings, "door", notifier=Notifier({})) as ops:
        assert ops.server is not None
        url = ops.server.url

        def failures() -> float:
            return samples(get(url + "/metrics")[1].decode()).get(
                ("reid_source_reconnect_failures_total", (("camera", "door"),)), 0.0
            )

        worker = CameraWorker(settings, "door", observers=[ops])
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        try:  # the camera comes up once the tries while it is waited for are seen counted, and one more
            wait_until(lambda: failures() >= 2, 20.0, "two failed tries while the camera is waited for")
            waiting = failures()
            wait_until(lambda: failures() > waiting, 20.0, "a failed try more, the camera still down")
            server.start()
            wait_until(lambda: ops.liveness.frames >= 3, 30.0, "3 frames once the camera is up")
            running = samples(get(url + "/metrics")[1].decode())
        finally:
            worker.stop()
            runner.join(10)
            server.stop()
    assert waiting >= 2  # while the camera is waited for
    assert value(running, "reid_source_connected") == 1
    assert value(running, "reid_source_reconnect_failures_total") > waiting  # the tries after it too


def test_health_says_why_a_starting_worker_waits_for_its_source() -> None:
    """While a live camera was not up yet (source.startup_wait_s, up to minutes), /health and systemd's STATUS
    said only 'loading models and opening the source'; why was in the journal alone."""
    from daemon.ops.health import Health
    from daemon.ops.liveness import Liveness

    health = Health("door", Liveness(), 30.0)
    health.waiting("the source: cannot open stream rtsp://cam/s; trying again in 2.0 s")
    assert health.report().problems == (
        "starting: waiting for the source: cannot open stream rtsp://cam/s; trying again in 2.0 s",
    )


def test_uptime_counts_from_the_process_start_not_from_the_ops_server(tmp_path: Path) -> None:
    """/health's uptime_s counted from when the ops server started (after the imports and the config's load),
    not from the process's start. A process 1.5 s old when its Health is made says it is at least that old."""
    import subprocess
    import sys

    script = (
        "import time; time.sleep(1.5)\n"
        "from daemon.ops.health import Health\nfrom daemon.ops.liveness import Liveness\n"
        "print(Health('door', Liveness(), 30.0).report().body['uptime_s'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert 1.5 <= float(done.stdout) < 30.0, done.stdout


def test_health_says_valkey_is_full_not_just_down() -> None:
    """A Valkey at maxmemory with noeviction (deploy/valkey.conf) answers PING but refuses every write: /health
    said "the bridge has no connection" without why, as if the server were gone."""
    with EmbeddedValkey() as server:
        cfg = BridgeConfig(url=server.url, signing_key={"value": "k" * 16}, reconnect_max_s=0.2)
        with Bridge(cfg, "door", receive=False) as bridge:
            server.client().config_set("maxmemory", "1")  # noeviction is the default policy
            bridge.publish(FleetMessage("hello", "door", timestamp=time.time()))
            assert not bridge.flush(2.0)
            health = Health("door", Liveness(), stall_after_s=5.0)
            health.running(FakeSource(connected=True), lambda: bridge.stats)
            health.valkey_probe(None)  # PING still works on a full server
            problems = health.problems()
    assert len(problems) == 1 and problems[0].startswith("valkey down: the bridge has no connection")
    assert "maxmemory" in problems[0], problems


def test_bridge_reconnects_count_connections_lost_not_each_try_while_valkey_is_away() -> None:
    """reid_bridge_reconnects_total ('Valkey connections lost') counted every failed try to reach Valkey: 174
    for one 25 s outage of a fleet worker's Valkey (sender and receiver each trying every 0.5 s). It counts the
    working connections lost; the tries that failed while away are reid_bridge_reconnect_failures_total."""
    with EmbeddedValkey() as server:
        cfg = BridgeConfig(
            url=server.url, signing_key={"value": "k" * 16}, reconnect_initial_s=0.05, reconnect_max_s=0.05
        )
        with Bridge(cfg, "door") as bridge:
            m = CameraMetrics("door", OpsConfig())
            m.attach(bridge=lambda: bridge.stats)
            assert bridge.wait_ready(5)
            bridge.publish(FleetMessage("hello", "door", timestamp=time.time()))
            assert bridge.flush(5)
            server.kill()
            bridge.publish(FleetMessage("hello", "door", timestamp=time.time()))  # the sender finds out
            time.sleep(1.0)  # away for 1 s: some 20 tries a side, 0.05 s apart
            server.start()
            assert bridge.flush(5) and bridge.wait_ready(5)
            s = samples(m.render().decode())
    assert value(s, "reid_bridge_reconnects_total") == 2  # the sender's connection and the receiver's
    assert value(s, "reid_bridge_reconnect_failures_total") >= 10
    assert ("reid_bridge_messages_total", (("camera", "door"), ("event", "reconnect_failures"))) not in s


class _HostClock:
    """The ``time`` module as a host sees it whose wall clock is ``ahead`` seconds ahead of the Valkey server's."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def time(self) -> float:
        return time.time() + self.ahead

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_fleet_messages_age_is_taken_on_the_fleets_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches carry their send time on the fleet's clock (Valkey's time, as the sender's bridge read it);
    reid_bridge_message_age_seconds took the receipt time from this host's wall clock, so on a host whose clock
    had stepped an hour forward every message was an hour old. The receipt time is the fleet's clock too."""
    from test_fleet import DIM, _settings

    with EmbeddedValkey() as server:
        settings = _settings(tmp_path, server.url, ("door", "b"))
        fleet = FleetLink(settings, "door", DIM).start(live=True)  # type: ignore[arg-type]
        try:
            with Operations(settings, "door", notifier=Notifier({})) as ops:  # type: ignore[arg-type]
                source = FakeSource(connected=True)
                source.name, source.live = "door", True  # type: ignore[attr-defined]
                worker = SimpleNamespace(fleet=fleet, cam=fleet.settings.cameras["door"], unerased=0)
                ops.started(worker, source)  # type: ignore[arg-type]
                stepped = _HostClock(3600.0)
                monkeypatch.setattr(bridge_module, "time", stepped)
                monkeypatch.setattr(metrics_module, "time", stepped)
                began = time.monotonic()
                with Bridge(fleet.settings.bridge, "b", receive=False) as peer:  # its hello
                    assert peer.flush(5)
                    deadline = time.monotonic() + 30  # a wait's limit, not a bound: the age is judged below
                    while time.monotonic() < deadline:
                        s = samples(ops.metrics.render().decode())
                        if s.get(("reid_bridge_message_age_seconds_count", (("camera", "door"),)), 0) >= 1:
                            break  # (no sample until the first message is received)
                        time.sleep(0.05)
                    heard = time.monotonic()
        finally:
            fleet.close()
    assert value(s, "reid_bridge_message_age_seconds_count") == 1
    # sent and received between the two readings (a late thread widens them, never fails it), on two fleet
    # clocks each up to half of MAX_READ_ROUND_TRIP_S off Valkey's; the host's step is an hour
    age = value(s, "reid_bridge_message_age_seconds_sum")
    assert age <= heard - began + MAX_READ_ROUND_TRIP_S, (age, heard - began)


def _median_bucket(s: dict[Any, float], name: str) -> float:
    """The upper bound of the bucket holding the median of histogram ``name`` (as histogram_quantile finds it)."""
    buckets = sorted((float(dict(labels)["le"]), v) for (n, labels), v in s.items() if n == f"{name}_bucket")
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= total / 2)


def test_the_valkey_round_trip_histogram_resolves_a_loopback_ping() -> None:
    """reid_bridge_rtt_seconds took ops.latency_buckets, from 1 ms: every PING to a Valkey on the same host or
    LAN (30-50 us on loopback here) fell in the first bucket, so its quantiles read 0.5-1 ms whatever the round
    trip was. Its buckets (and the message age's) run from 25 us to 10 s."""
    m = CameraMetrics("door", OpsConfig())
    with EmbeddedValkey() as server:
        cfg = BridgeConfig(url=server.url, allow_unsigned=True)
        probe = ValkeyProbe(cfg, server.url, None, 60.0, lambda *_: None)
        rtts = [probe.ping()[0] for _ in range(30)]
    for rtt in rtts:
        m.valkey_ping(rtt)
        m.message_received(sent_at=1000.0, received_at=1000.0 + 4.0)  # a live message 4 s old
    s = samples(m.render().decode())
    median = sorted(r for r in rtts if r is not None)[len(rtts) // 2]
    assert median <= _median_bucket(s, "reid_bridge_rtt_seconds") <= 2.5 * max(median, 1e-5), median
    assert _median_bucket(s, "reid_bridge_message_age_seconds") == 5.0  # seconds resolved too
    bounds = OpsConfig().bridge_buckets
    assert bounds[0] <= 25e-6 and bounds[-1] >= 10.0 and len(bounds) <= 20


def test_the_stage_histograms_resolve_sub_millisecond_stages() -> None:
    """ops.latency_buckets began at 1 ms: on a PETS09 replay writing a frame's rows took 0.2-0.9 ms (median),
    fleet resolution 0.5-10 ms, embedding a frame with no box to embed 0.3-0.5 ms, so every such frame fell in
    the first bucket and the quantiles said nothing of them. A 0.2 ms stage lands in a sub-ms bucket; the
    buckets still reach 10 s (detection on a busy host took up to 2 s), in at most 20 bounds."""
    m = CameraMetrics("door", OpsConfig())
    m.frame(StageTimes(), 0.0, 0.3, [])  # the totals the next frame's are taken from
    m.frame(StageTimes(track=0.0002, output=0.0004, detect=0.3), 0.0, 0.0002, [])
    s = samples(m.render().decode())

    def count(name: str, le: str, **labels: str) -> float:
        return value(s, f"{name}_bucket", le=le, **labels)

    assert count("reid_stage_seconds", "0.00025", stage="track") == 1
    assert count("reid_stage_seconds", "0.00025", stage="output") == 0
    assert count("reid_stage_seconds", "0.0005", stage="output") == 1
    assert count("reid_loop_seconds", "0.00025") == 1
    assert count("reid_stage_seconds", "0.25", stage="detect") == 0
    assert count("reid_stage_seconds", "0.5", stage="detect") == 1
    bounds = OpsConfig().latency_buckets
    assert bounds[0] <= 1e-4 and bounds[-1] >= 10.0 and len(bounds) <= 20


def test_the_message_age_histogram_takes_live_messages_not_those_caught_up(tmp_path: Path) -> None:
    """reid_bridge_message_age_seconds observed every message received, those a catch-up or resync read from the
    streams too: after each Valkey outage or lost subscription the messages caught up, as old as the outage by
    design, filled its top buckets and an alert on its quantile fired. It takes the messages heard live on
    pub/sub; those caught up are reid_bridge_messages_total{event="caught_up"}, as before."""
    from test_fleet import DIM, _settings

    def counted(ops: Operations) -> tuple[float, float]:
        s = samples(ops.metrics.render().decode())
        age = s.get(("reid_bridge_message_age_seconds_count", (("camera", "door"),)), 0.0)
        return age, value(s, "reid_bridge_messages_total", event="caught_up")

    with EmbeddedValkey() as server:
        settings: Any = _settings(tmp_path, server.url, ("door", "b"))
        slow = settings.bridge.model_copy(update={"reconnect_initial_s": 1.5, "reconnect_max_s": 1.5})
        settings = settings.model_copy(update={"bridge": slow})
        fleet = FleetLink(settings, "door", DIM).start(live=True)
        try:
            with Operations(settings, "door", notifier=Notifier({})) as ops:
                source = FakeSource(connected=True)
                source.name, source.live = "door", True  # type: ignore[attr-defined]
                worker = SimpleNamespace(fleet=fleet, cam=settings.cameras["door"], unerased=0)
                ops.started(worker, source)  # type: ignore[arg-type]
                with Bridge(settings.bridge, "b", receive=False) as peer:  # its hello, live
                    assert peer.flush(5)
                    wait_until(lambda: counted(ops)[0] == 1, 10.0, "the peer's hello heard live")
                    live = counted(ops)
                    server.client().client_kill_filter(_type="pubsub")  # door's subscription drops
                    wait_until(lambda: fleet.bridge.stats.reconnects == 1, 10.0, "door finds it lost")
                    for _ in range(3):  # while door is away (1.5 s): caught up once it is back
                        peer.publish(FleetMessage("hello", "b", timestamp=time.time()))
                    assert peer.flush(5)
                    wait_until(lambda: counted(ops)[1] == live[1] + 3, 10.0, "the three caught up")
                    assert fleet.bridge.wait_ready(5)
                    caught_up = counted(ops)
                    peer.publish(FleetMessage("hello", "b", timestamp=time.time()))
                    assert peer.flush(5)
                    wait_until(lambda: counted(ops)[0] > caught_up[0], 10.0, "a live one after")
                    after = counted(ops)
        finally:
            fleet.close()
    assert live[0] == 1 and caught_up == (1, live[1] + 3)  # the caught-up ones not taken
    assert after == (2, live[1] + 3)
    hello = FleetMessage("hello", "b", timestamp=1.0)  # the receiving side's mark, not on the wire
    assert encode_message(with_fields(hello, caught_up=True), None) == encode_message(hello, None)


def test_the_valkey_probe_counts_a_refused_ping_as_an_answer() -> None:
    """An ACL user with just the rights the bridge uses (no PING): the bridge worked, yet /health said
    "valkey down: PING failed: ... no permissions to run the 'ping' command" for as long as it ran."""
    with EmbeddedValkey() as server:
        server.client().execute_command(
            "ACL",
            "SETUSER",
            "cam",
            "on",
            ">pw",
            "~reid:*",
            "&reid:*",
            "+@read",
            "+@write",
            "+@pubsub",
            "+time",
        )
        cfg = BridgeConfig(url=server.url, username="cam", password={"value": "pw"}, allow_unsigned=True)
        rtt, error = ValkeyProbe(cfg, server.url, b"pw", 60.0, lambda *_: None).ping()
        wrong, refused = ValkeyProbe(cfg, server.url, b"wrong", 60.0, lambda *_: None).ping()
    assert error is None and rtt is not None and rtt >= 0
    assert wrong is None and refused is not None and "password" in refused  # a wrong password still fails


def test_health_names_what_is_wrong() -> None:
    now = [0.0]
    live = Liveness(clock=lambda: now[0])
    health = Health("door", live, stall_after_s=5.0)
    src = FakeSource(connected=True)
    bridge = [bridge_stats()]
    health.running(src, lambda: bridge[0])
    live.attach(src)
    assert health.report().http_status == 200
    bridge[0] = replace(bridge_stats(), lagging={"lobby": 14.5})  # a peer's clock lags: named, not failing
    assert health.report().http_status == 200 and health.report().body["lagging_peers"] == {"lobby": 14.5}
    bridge[0] = replace(bridge_stats(), leading={"gate": 8.5})  # one's leads: alike
    assert health.report().http_status == 200 and health.report().body["leading_peers"] == {"gate": 8.5}
    src_stats = src.stats
    src.connected = False
    assert health.problems() == ["source down: not connected"]
    src.connected = True
    bridge[0] = bridge_stats(connected=False, backlog=7)
    assert health.problems() == ["valkey down: the bridge has no connection (7 messages waiting)"]
    health.valkey_probe("PING failed: invalid username-password pair or user is disabled.")
    assert health.problems() == [  # why, when the PING knows: a wrong password is not a server that is down
        "valkey down: the bridge has no connection (7 messages waiting): PING failed: invalid username-password "
        "pair or user is disabled."
    ]
    bridge[0] = bridge_stats()
    health.valkey_probe("PING failed: Connection refused")
    assert health.problems() == ["valkey down: PING failed: Connection refused"]
    health.valkey_probe(None)
    src.queued = 4
    now[0] = 6.0
    report = health.report()
    assert report.problems == ("stalled: no frame processed for 6 s while frames wait",)
    assert report.http_status == 503 and report.body["status"] == "failing"
    health.failed("model missing: ssdlite")
    assert health.problems() == ["model missing: ssdlite"] and src_stats.connected


def test_a_silent_stream_is_not_said_to_stall_the_worker_while_frames_wait() -> None:
    """A connected RTSP camera that stopped sending (its server SIGSTOPped) with ops.stall_after_s 1 under its
    source.read_timeout_s 6 made /health say 'stalled: no frame processed for 5 s while frames wait' for 5 s,
    reid_source_queue_depth 0 all along: a hung worker to restart, where the camera had gone quiet. With no
    frame waiting, it says the source is silent (still 503), until the read timeout makes it 'source down'."""
    now = [0.0]
    live = Liveness(clock=lambda: now[0])
    health = Health("door", live, stall_after_s=1.0)
    src = FakeSource(connected=True, queued=0)
    health.running(src)
    live.attach(src)
    now[0] = 5.0
    report = health.report()
    assert report.problems == (
        "source silent: connected, but no frame for 5 s (a live stream is reconnected after "
        "source.read_timeout_s)",
    )
    assert report.http_status == 503
    src.queued = 2  # frames wait and none is taken: the loop is hung
    assert health.problems() == ["stalled: no frame processed for 5 s while frames wait"]


def test_model_missing_is_reported_in_health_and_status(
    tmp_path: Path, notify_path: tuple[str, NotifySocket]
) -> None:
    path, fake = notify_path
    settings = looped_settings(tmp_path, http=True, port=0)
    with (
        pytest.raises(ModelError),
        Operations(settings, "door", notifier=Notifier({"NOTIFY_SOCKET": path})) as ops,
    ):
        assert ops.server is not None
        url = ops.server.url
        raise ModelError("model 'ssdlite-mobilenetv2-pedestrian' is not in the cache")
    problem = "model missing: model 'ssdlite-mobilenetv2-pedestrian' is not in the cache"
    assert ops.health.problems() == [problem]
    fake.wait_for("STATUS")
    deadline = time.monotonic() + 5
    while problem not in fake.values("STATUS") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert problem in fake.values("STATUS")  # what `systemctl status` shows after the exit
    with pytest.raises(urllib.error.URLError):  # the process is on its way out: the endpoint is closed
        urllib.request.urlopen(url + "/health", timeout=2)


def test_head_requests_get_the_status_and_headers_of_get() -> None:
    """Health checkers that probe with HEAD (load balancers, uptime monitors) got 501 Unsupported method."""
    live = Liveness()
    health = Health("door", live, stall_after_s=5.0)
    server = OpsServer(
        "127.0.0.1", 0, lambda _accept: (b"reid_frames_total 1\n", "text/plain"), health.report, "door", 8
    ).start()
    try:
        answers = {}
        for path in ("/health", "/metrics", "/nothing"):
            req = urllib.request.Request(server.url + path, method="HEAD")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    answers[path] = (r.status, r.headers["Content-Length"], r.read())
            except urllib.error.HTTPError as e:
                answers[path] = (e.code, e.headers["Content-Length"], e.read())
    finally:
        server.close()
    assert answers["/health"][0] == 503 and answers["/health"][2] == b""  # still starting
    assert answers["/metrics"] == (200, "20", b"") and answers["/nothing"][0] == 404


def test_metrics_answer_in_the_format_the_scraper_asks_for(tmp_path: Path) -> None:
    """/metrics ignored the Accept header: Prometheus, which asks for OpenMetrics first, got the classic text
    labelled 'version=1.0.0' (prometheus_client's label for text it writes when asked for that version), where
    each counter's and histogram's creation time is a gauge series of its own (reid_frames_created,
    reid_stage_seconds_created{stage} ...). It answers OpenMetrics when asked, else the classic text as 0.0.4."""
    settings = looped_settings(tmp_path, http=True, port=0)
    with Operations(settings, "door", notifier=Notifier({})) as ops:
        assert ops.server is not None
        url = ops.server.url + "/metrics"
        prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        answers = {}
        for accept in (prometheus, None):
            req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
            with urllib.request.urlopen(req, timeout=5) as r:
                answers[accept] = (r.headers["Content-Type"], r.read().decode())
    content_type, body = answers[prometheus]
    assert content_type.startswith("application/openmetrics-text; version=1.0.0") and body.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(body)}
    assert families["reid_frames"].type == "counter" and "reid_frames_created" not in families
    assert {"reid_frames_created", "reid_stage_seconds_created"} <= {
        s.name for f in families.values() for s in f.samples
    }
    content_type, body = answers[None]
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
    assert "reid_frames_total" in samples and "reid_stage_seconds_bucket" in samples
    # the classic text has no place for a creation time: prometheus_client wrote each as a gauge series of its
    # own (reid_frames_created, reid_stage_seconds_created{stage} ...), one more series per counter and
    # histogram child for every scraper that does not ask for OpenMetrics
    assert sorted(n for n in samples if n.endswith("_created")) == []


def test_a_request_for_an_absolute_url_is_answered_as_its_path() -> None:
    """'GET http://host:port/health HTTP/1.1' (the absolute form, which HTTP/1.1 servers must accept, sent by a
    checker going through a proxy) got 404 'not found: try /metrics or /health'."""
    health = Health("door", Liveness(), stall_after_s=5.0)
    server = OpsServer(
        "127.0.0.1", 0, lambda _a: (b"reid_fps 1\n", "text/plain"), health.report, "door", 8
    ).start()
    try:
        answers = []
        for target in (f"{server.url}/health", f"{server.url}/metrics?x=1", f"{server.url}/nothing"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                answers.append(s.makefile("rb").readline().split()[1])
    finally:
        server.close()
    assert answers == [b"503", b"200", b"404"]  # /health: still starting


def test_a_client_that_sends_nothing_is_dropped_and_does_not_hold_a_thread() -> None:
    """A connection to /metrics that never sent its request (a stuck scraper, a port scanner) held a server
    thread forever: enough of them use up the unit's TasksMax, and the worker can start no thread."""
    live = Liveness()
    health = Health("door", live, stall_after_s=5.0)
    server = OpsServer(
        "127.0.0.1", 0, lambda _accept: (b"reid_frames_total 1\n", "text/plain"), health.report, "door", 8
    ).start()
    try:
        idle = socket.create_connection(("127.0.0.1", server.port))
        idle.settimeout(15.0)
        t0 = time.monotonic()
        try:
            assert idle.recv(1) == b""  # closed by the server
        except TimeoutError:
            pytest.fail("the server kept an idle connection open for 15 s")
        finally:
            idle.close()
        assert time.monotonic() - t0 < 10.0
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:  # others are served as before
            assert r.status == 200
    finally:
        server.close()


def test_connections_over_max_connections_are_refused_and_hold_no_thread() -> None:
    """Each connection took a server thread, however many: 300 idle ones (a port scan, a stuck scraper that
    reconnects; each held for REQUEST_TIMEOUT_S) took a worker's process from 4 threads to 304, over the unit's
    TasksMax=256, where the worker can start no thread. Over ops.max_connections, a connection is answered 503
    at once and closed, on no thread of its own; a slot freed serves again."""
    health = Health("door", Liveness(), stall_after_s=5.0)
    server = OpsServer("127.0.0.1", 0, lambda _a: (b"reid_fps 1\n", "text/plain"), health.report, "door", 4)
    server.start()
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(4)]
    try:
        wait_until(lambda: threading.active_count() >= before + 4, 5, "a thread per idle connection")
        for _ in range(20):  # one after the other, well within the idle ones' REQUEST_TIMEOUT_S
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                answer = s.makefile("rb").read()
            assert answer.startswith(b"HTTP/1.1 503") and b"ops.max_connections" in answer
            assert threading.active_count() <= before + 4
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: threading.active_count() <= before, 5, "their threads ended")
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
            assert r.status == 200
    finally:
        server.close()


def test_a_connection_whose_thread_could_not_start_frees_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """At TasksMax a connection's thread cannot start (RuntimeError): its slot is freed, so that, threads again
    to be had, the server serves again rather than answering 503 for good (mutation audit: keeping the slot
    survived every test)."""
    health = Health("door", Liveness(), stall_after_s=5.0)
    server = OpsServer("127.0.0.1", 0, lambda _a: (b"reid_fps 1\n", "text/plain"), health.report, "door", 1)
    server.start()
    start = threading.Thread.start
    failed: list[str] = []

    def no_thread(thread: threading.Thread) -> None:
        if not failed and "process_request" in str(getattr(thread, "_target", "")):
            failed.append(thread.name)
            raise RuntimeError("can't start new thread")
        start(thread)

    try:
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            s.makefile("rb").read()
        wait_until(lambda: bool(failed), 5, "a connection whose thread did not start")
        monkeypatch.setattr(threading.Thread, "start", start)
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
            assert r.status == 200
    finally:
        server.close()


def test_port_in_use_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = looped_settings(tmp_path, http=True, port=port)
        with pytest.raises(ConfigError, match=r"127\.0\.0\.1:\d+ .*ops\.camera_ports"):
            Operations(settings, "door", notifier=Notifier({})).start()


@pytest.mark.parametrize(("written", "bound"), [("[::1]", "::1"), ("[::]", "::"), ("::1", "::1")])
def test_an_ipv6_host_written_in_brackets_is_served_on(tmp_path: Path, written: str, bound: str) -> None:
    """ops.host "[::1]", an IPv6 address written as in a URL, was refused at start: 'cannot serve /metrics and
    /health on [::1]:0 (Name or service not known)', exit 2. It is the address in the brackets."""
    assert OpsConfig(host=written).host == bound
    settings = looped_settings(tmp_path, http=True, port=0, host=written)
    with Operations(settings, "door", notifier=Notifier({})) as ops:
        assert ops.server is not None
        status, _ = get(f"http://[::1]:{ops.server.port}/health")
        assert ops.server.url == f"http://[{bound}]:{ops.server.port}"
    assert status == 503  # starting


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("127.0.0.1:9100", "holds a port"),
        ("[::1]:9100", "holds a port"),
        ("http://127.0.0.1", "not a URL"),
        ("*", "0.0.0.0"),
        ("[localhost]", "brackets hold an IPv6 address"),
        ("[127.0.0.1]", "brackets hold an IPv6 address"),  # an IPv4 address goes bare
        ("[::1", "not an IP address nor a host name"),  # brackets are a pair or none
        ("::1]", "not an IP address nor a host name"),
        ("cam host", "not an IP address nor a host name"),
    ],
)
def test_a_host_that_is_no_address_is_a_config_error_naming_ops_host(
    tmp_path: Path, written: str, said: str
) -> None:
    """A host:port, a URL, '*' or a name with a space in ops.host passed `config check` and failed only at
    start, as 'Name or service not known' for whatever was written."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"cameras:\n  door:\n    source: {{uri: clip.mp4}}\nops: {{host: {json.dumps(written)}}}\n"
    )
    with pytest.raises(ConfigError, match=r"ops\.host: Value error, .*" + re.escape(said)):
        load_settings(cfg)


def test_a_host_is_taken_without_the_white_space_around_it() -> None:
    """ops.host and serve.host as people write them, quoted with a space around (" [::1] "): the address."""
    from daemon.config import ServeConfig

    assert OpsConfig(host=" [::1] ").host == "::1" and OpsConfig(host="\t127.0.0.1 ").host == "127.0.0.1"
    assert ServeConfig(host=" localhost ").host == "localhost"


def test_a_host_name_not_resolved_is_a_config_error_naming_ops_host() -> None:
    """A name that does not resolve was blamed on 'ops.host and the camera's port'."""
    health = Health("door", Liveness(), stall_after_s=5.0)
    with pytest.raises(ConfigError, match=r"on nowhere\.invalid:0 .*; ops\.host is neither .* resolves$"):
        OpsServer("nowhere.invalid", 0, lambda _a: (b"", "text/plain"), health.report, "camera door", 8)


def test_ops_config_ports_and_buckets() -> None:
    cfg = OpsConfig(port=9400, camera_ports={"lobby": 9401})
    assert (cfg.port_for("lobby"), cfg.port_for("door")) == (9401, 9400)
    with pytest.raises(ValueError, match="strictly increasing"):
        OpsConfig(latency_buckets=(0.1, 0.1))
    with pytest.raises(ValueError, match="bridge_buckets must be positive"):
        OpsConfig(bridge_buckets=(0.1, 0.01))
    with pytest.raises(ValueError):
        OpsConfig(camera_ports={"lobby": 70000})


def test_bridge_identity_and_decision_metrics() -> None:
    m = CameraMetrics("door", OpsConfig())
    table = {
        1: IdentityAssignment("door", 1, 7, "ann", 0.91, "gallery", True),
        2: IdentityAssignment("door", 2, None, None, 0.0, "pending", False),
    }
    b = replace(bridge_stats(), published=5, received=3, rejected=replace(bridge_stats().rejected, forged=2))
    b = replace(b, lagging={"lobby": 14.5}, leading={"gate": 8.5})
    m.attach(source=FakeSource(), bridge=lambda: b, assignment=table.get)
    m.frame(StageTimes(), 0.0, 0.01, [1, 2])
    m.frame(StageTimes(detect=0.02), 0.005, 0.03, [1, 2])  # same decisions: counted once
    table[2] = IdentityAssignment("door", 2, 8, None, 0.0, "new", True)
    m.frame(StageTimes(detect=0.05), 0.010, 0.03, [2])
    m.valkey_ping(0.0004)
    m.message_received(sent_at=time.time() - 0.02)
    s = samples(m.render().decode())
    assert value(s, "reid_identity_decisions_total", source="gallery") == 1
    assert value(s, "reid_identity_decisions_total", source="new") == 1
    assert value(s, "reid_identity_similarity_count", source="gallery") == 1
    assert value(s, "reid_identity_similarity_sum", source="gallery") == pytest.approx(0.91)
    assert value(s, "reid_stage_seconds_sum", stage="detect") == pytest.approx(0.05)
    assert value(s, "reid_bridge_messages_total", event="published") == 5
    assert value(s, "reid_bridge_messages_total", event="received") == 3
    assert value(s, "reid_bridge_rejected_total", reason="forged") == 2
    assert value(s, "reid_bridge_peer_lag_seconds", peer="lobby") == 14.5
    assert value(s, "reid_bridge_peer_lag_seconds", peer="gate") == -8.5  # its clock leads
    assert value(s, "reid_bridge_connected") == 1 and value(s, "reid_bridge_valkey_up") == 1
    assert (
        value(s, "reid_bridge_rtt_seconds_count") == 1
        and value(s, "reid_bridge_message_age_seconds_count") == 1
    )


def test_the_bridge_messages_help_says_what_its_events_count() -> None:
    """reid_bridge_messages_total's HELP said 'Fleet messages (embeddings) by what happened to them', but hellos
    and forgets carry no embedding, received counts caught_up and recovered again, and two of its events count
    no message: own (this worker's batches come back, skipped undecoded) and erased (stream entries and track
    states a forget deleted)."""
    m = CameraMetrics("door", OpsConfig())
    m.attach(bridge=bridge_stats)
    (family,) = [
        f for f in text_string_to_metric_families(m.render().decode()) if f.name == "reid_bridge_messages"
    ]
    events = {s.labels["event"] for s in family.samples}
    assert {"own", "erased", "caught_up", "recovered"} <= events
    assert "embeddings" not in family.documentation
    for said in (
        "own: this worker's own batches",
        "erased: not messages",
        "of those received",
    ):
        assert said in family.documentation, family.documentation


def test_the_identity_metrics_help_says_what_each_counts() -> None:
    """The resolver's metrics were helped by their field names: 'Identity resolver: ended observed.',
    '... forgotten.', '... contributions held now.', nothing an operator writing an alert could read. Each now
    says what it counts (and the setting that bounds it); a new IdentityStats field needs its own."""
    m = CameraMetrics("door", OpsConfig())
    identity = IdentityStats(**{f.name: 0 for f in fields(IdentityStats)} | {"remote_rejected": {"x": 1}})
    m.attach(identity=lambda: identity)
    docs = {f.name: f.documentation for f in text_string_to_metric_families(m.render().decode())}
    for field in [f.name for f in fields(IdentityStats) if f.name != "remote_rejected"]:
        doc = docs[f"reid_identity_{field}"]
        assert not doc.startswith("Identity resolver:") and len(doc.split()) >= 6, (field, doc)
    assert "identity.retention_s" in docs["reid_identity_expired_identities"]


def test_a_track_lost_for_a_few_frames_is_not_a_new_decision_when_it_comes_back() -> None:
    """reid_identity_decisions_total counted a track again each time it came back after frames without it (lost
    by the tracker, kept by the resolver, its identity unchanged): two fleet workers on a looped clip counted 39
    decisions for 3 tracks and 3 allocations, one per track per loop, and as many similarities."""
    m = CameraMetrics("door", OpsConfig())
    table = {
        1: IdentityAssignment("door", 1, 7, None, 0.0, "new", True),
        2: IdentityAssignment("door", 2, 8, None, 0.8, "fleet", True),
    }
    m.attach(assignment=table.get)
    for ids in ([1, 2], [], [1], [1, 2], [2]):  # both lost for a frame, then 2 again: still the resolver's
        m.frame(StageTimes(), 0.0, 0.01, ids)
    s = samples(m.render().decode())
    assert value(s, "reid_identity_decisions_total", source="new") == 1
    assert value(s, "reid_identity_decisions_total", source="fleet") == 1
    assert value(s, "reid_identity_similarity_count", source="fleet") == 1
    table[1] = IdentityAssignment("door", 1, 9, None, 0.7, "fleet", True)  # decided again while it was lost
    del table[2]  # ended: the resolver dropped it, so the metrics drop it too (bounded)
    m.frame(StageTimes(), 0.0, 0.01, [1])
    assert value(samples(m.render().decode()), "reid_identity_decisions_total", source="fleet") == 2
    assert set(m._identities) == {1}


def test_source_connected_is_0_before_the_source_is_open() -> None:
    """A starting worker exported no reid_source_connected at all (only reid_fps) until its source opened, so
    an alert on reid_source_connected == 0 never fired for a camera down when its worker started, waited for
    (source.startup_wait_s, 240 s in the example) and restarted again and again."""
    m = CameraMetrics("door", OpsConfig())
    assert value(samples(m.render().decode()), "reid_source_connected") == 0
    m.attach(source=FakeSource(connected=True))
    assert value(samples(m.render().decode()), "reid_source_connected") == 1


def test_a_starting_worker_exports_its_frame_series_at_0() -> None:
    """reid_frames_total, reid_tracks_alive, reid_loop_seconds and reid_stage_seconds were not there until the
    first frame, nor reid_identity_decisions_total{source} until the first such decision: a worker that never
    got its first frame (a camera waited for at start, source.startup_wait_s, restarted again and again) had
    no reid_frames_total, so an alert on increase(reid_frames_total[5m]) == 0 never fired for it."""
    m = CameraMetrics("door", OpsConfig())
    s = samples(m.render().decode())
    assert value(s, "reid_frames_total") == 0 and value(s, "reid_tracks_alive") == 0
    assert value(s, "reid_loop_seconds_count") == 0
    for stage in ("decode", "detect", "embed", "track", "output", "fleet"):
        assert value(s, "reid_stage_seconds_count", stage=stage) == 0
    m.attach(assignment=lambda track_id: None)  # fleet mode: identity decisions
    s = samples(m.render().decode())
    for source in ("gallery", "fleet", "new"):
        assert value(s, "reid_identity_decisions_total", source=source) == 0
    for source in ("gallery", "fleet"):
        assert value(s, "reid_identity_similarity_count", source=source) == 0


def test_the_fps_gauge_counts_every_frame_of_a_long_window_in_bounded_memory() -> None:
    """The gauge kept the time of each frame, at most 10,000 of them: a window holding more (30 FPS over
    ops.fps_window_s 600 is 18,000 frames) lost the oldest and reported 16.7 FPS for 30."""
    long = FrameRate(600.0)
    for i in range(18_001):  # 30 FPS for the whole 600 s window
        long.add(1000.0 + i / 30)
    assert long.rate(1600.0) == pytest.approx(30.0, rel=0.001)
    assert len(long._slices) <= FPS_SLICES  # memory bounded by the window's slices, not by the frame rate
    rate = FrameRate(5.0)
    for i in range(100):  # 20 FPS for 5 s
        rate.add(1000.0 + i / 20)
    assert rate.rate(1005.0) == pytest.approx(20.0, rel=0.01)
    for i in range(1, 26):  # 10 FPS for 2.5 s more
        rate.add(1005.0 + i / 10)
    assert rate.rate(1007.5) == pytest.approx(
        75 / 5.0, rel=0.02
    )  # half the 20 FPS frames have left the window


def test_the_fps_gauge_reads_the_true_rate_before_a_whole_window_has_passed() -> None:
    """reid_fps divided the frames of its window by the whole ops.fps_window_s from the first frame on: a worker
    at 20 FPS read 4 FPS a second after its start, 12 after three, and 20 only once a whole window (5 s) of
    frames was in. Until a window has passed since the first frame, it is the frames over the time since the
    first."""
    rate = FrameRate(5.0)
    assert rate.rate(999.0) == 0.0  # no frame yet
    rate.add(1000.0)
    assert rate.rate(1000.0) == 0.0  # one frame: no rate yet
    for i in range(1, 21):  # 20 FPS for 1 s
        rate.add(1000.0 + i / 20)
    assert rate.rate(1001.0) == pytest.approx(20.0)
    assert rate.rate(1001.5) == pytest.approx(20 / 1.5)  # a pause (no outage): its true rate since the first
    for i in range(31, 100):  # 20 FPS again from 1001.55
        rate.add(1000.0 + i / 20)
    assert rate.rate(1004.99) == pytest.approx(89 / 4.99)  # 90 frames, 89 intervals since the first
    rate.add(1005.0)  # the window is whole from 1005 on
    assert rate.rate(1006.0) == pytest.approx(70 / 5.0, rel=0.01)  # the frames of the last 5 s over 5 s
    m = CameraMetrics("door", OpsConfig())  # on the clock: 20 frames 0.05 s apart
    for _ in range(20):
        m.frame(StageTimes(), 0.0, 0.0, [])
        time.sleep(0.05)
    assert 10.0 <= value(samples(m.render().decode()), "reid_fps") <= 21.0  # 20 FPS (less on a busy host)


def test_the_fps_gauge_reads_the_current_rate_after_an_outage() -> None:
    """reid_fps was the frames of the last ops.fps_window_s over the window, an outage in it included: a camera
    back at its full 10 FPS after a 20 s outage read 6.7 FPS five seconds later (window 60 s), and below 10 for
    a whole window. No frame for longer than 4 intervals at the rate before (and than 2 s) is an outage: it
    reads 0 while it lasts, and after it the frames since its end over the time since."""
    rate = FrameRate(60.0)
    t = 1000.0
    for i in range(600):  # 10 FPS for 60 s
        rate.add(t + i / 10)
    t += 59.9
    assert rate.rate(t + 0.1) == pytest.approx(10.0, rel=0.01)
    assert rate.rate(t + 1.9) > 9.0  # a 1.9 s hiccup (a slow frame on a busy host) is no outage
    assert rate.rate(t + 2.5) == 0.0  # down: nothing for 25 intervals
    assert rate.rate(t + 19.9) == 0.0
    t += 20.0  # back at 10 FPS after 20 s
    for i in range(51):
        rate.add(t + i / 10)
    assert rate.rate(t + 5.0) == pytest.approx(10.0, rel=0.01)  # not 400 frames / 60 s = 6.7
    for i in range(51, 600):
        rate.add(t + i / 10)
    assert rate.rate(t + 60.0) == pytest.approx(10.0, rel=0.01)  # a whole window since: its frames over it


def test_a_slow_source_s_frames_are_no_outage() -> None:
    """One frame every 2 s (a time-lapse folder, source.stride): the gaps between frames are no outage, the
    gauge reads 0.5 between frames; 4 intervals (8 s) without one is."""
    rate = FrameRate(10.0)
    for i in range(10):
        rate.add(1000.0 + 2 * i)
    assert rate.rate(1019.0) == pytest.approx(0.5, rel=0.01)
    assert rate.rate(1025.0) == pytest.approx(0.2)  # 2 frames in the last 10 s: the window trails
    assert rate.rate(1026.5) == 0.0
    rate.add(1030.0)  # back: one frame is no rate yet; the next gives it
    assert rate.rate(1030.5) == 0.0
    rate.add(1032.0)
    assert rate.rate(1032.0) == pytest.approx(0.5)


def test_a_source_slower_than_the_shortest_outage_reads_its_rate_from_its_second_frame() -> None:
    """One frame every 3 s, more than FPS_GAP_MIN_S: the gap before the second frame has no rate to be measured
    by, so it is no outage; the gauge reads 1/3, not 0 (mutation audit: judging that first gap by FPS_GAP_MIN_S
    restarted the run at every frame, the gauge 0 for good)."""
    rate = FrameRate(30.0)
    for i in range(5):
        rate.add(1000.0 + 3 * i)
    assert rate.rate(1012.0) == pytest.approx(1 / 3)  # 4 intervals in 12 s


def test_two_frames_at_one_instant_then_none_is_an_outage_after_the_shortest() -> None:
    """Two frames stamped at the same instant give no rate (0 s between them): the gap after them that is an
    outage is FPS_GAP_MIN_S, not none (mutation audit: an unbounded gap read 0.2 fps 5 s into the silence)."""
    rate = FrameRate(30.0)
    rate.add(1000.0)
    rate.add(1000.0)
    assert rate.rate(1001.5) == pytest.approx(1 / 1.5)
    assert rate.rate(1005.0) == 0.0


def test_deploy_readme_names_every_metric_a_fleet_worker_exports_and_no_other() -> None:
    """deploy/README's list of metrics, which operators write their alerts from, left out
    reid_bridge_message_age_seconds, reid_bridge_valkey_up, reid_bridge_subscribed,
    reid_source_frames_decoded_total and reid_source_loops_total. Every family a fleet worker exports is named
    (reid_identity_* stands for the resolver's), and every name there is exported."""
    text = (Path(__file__).parents[1] / "deploy" / "README.md").read_text()
    listed = text[text.index("Metrics (label `camera`)") :]
    listed = listed[: listed.index("\n* **")]
    named = set(re.findall(r"`(reid_[a-z_]+)[`{]", listed))
    m = CameraMetrics("door", OpsConfig())
    b = replace(bridge_stats(), lagging={"lobby": 14.5})
    identity = IdentityStats(**{f.name: 0 for f in fields(IdentityStats)} | {"remote_rejected": {"x": 1}})
    m.attach(source=FakeSource(), bridge=lambda: b, identity=lambda: identity, assignment=lambda _t: None)
    m.valkey_ping(0.001)
    m.message_received(1.0, 2.0)
    exported = {
        f.name + ("_total" if f.type == "counter" else "")
        for f in text_string_to_metric_families(m.render().decode())
        if not f.name.endswith("_created")
    }
    resolvers = {n for n in exported if n.startswith("reid_identity_") and n not in named}
    assert sorted(exported - resolvers - named) == [] and "reid_identity_*" in listed
    assert sorted(named - exported) == []


# ------------------------------------------------------------------------------------------ logs


def test_json_log_lines() -> None:
    record = logging.LogRecord(
        "daemon.x", logging.WARNING, __file__, 1, "camera %s: %s", ("door", "down"), None
    )
    record.camera = "door"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(record))
    assert doc["message"] == "camera door: down" and doc["level"] == "WARNING" and doc["logger"] == "daemon.x"
    assert doc["camera"] == "door" and "RuntimeError: boom" in doc["exc"] and doc["ts"].endswith("+00:00")


def test_setup_logging_json_on_a_fresh_root(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    stream = io.StringIO()
    setup_logging(logging.INFO, "json", stream)
    logging.getLogger("daemon.test").info("hello %d", 3)
    assert json.loads(stream.getvalue().splitlines()[-1])["message"] == "hello 3"


def test_health_names_a_forget_the_camera_s_files_could_not_take() -> None:
    """A running worker that could not erase a forgotten id from its files (a file it cannot read) goes on and
    tries again: /health says so, naming the file, until it is done."""
    health = Health("door", Liveness(), stall_after_s=5.0)
    unerased: list[str | None] = [
        "global ids [42] are still in its files: cannot read /x/events.jsonl: I/O error"
    ]
    health.running(FakeSource(connected=True), None, lambda: unerased[0])
    assert health.problems() == [
        "forget not done: global ids [42] are still in its files: cannot read /x/events.jsonl: I/O error"
    ]
    unerased[0] = None
    assert health.report().http_status == 200


def test_a_host_name_binds_its_ipv4_address_before_its_ipv6_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name binds its first IPv4 address (as before IPv6 was taken), else its first IPv6 one, whatever order
    the resolver gives them in (no name here resolves to both, so the resolver's answer is given)."""
    v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 9400, 0, 0))
    v6b = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1", 9400, 0, 0))
    v4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 9400))
    answers = {"both": [v6, v4], "six": [v6, v6b]}
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *_a, **_k: list(answers[host]))
    assert bind_address("both", 9400) == (socket.AF_INET, ("127.0.0.1", 9400))
    assert bind_address("six", 9400) == (socket.AF_INET6, ("::1", 9400, 0, 0))
