"""Valkey killed for 30 s under two real fleet workers: no crash, /health says so, the backlog stays bounded, and
what was kept is delivered once Valkey is back (the bridge-level exactness is in test_bridge.py).

Two ``reid-daemon run`` processes in fleet mode replay a synthetic clip in a loop at 10 FPS (ground-truth
boxes, the MobileNetV2 embedder) on one Valkey (TCP). Valkey is SIGKILLed, left dead for 30 s, and started
again on the same port, empty (no persistence), like a crashed server. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ops import health, metrics, wait_until
from _procs import daemon_json
from _video import make_video

from daemon.valkey_server import EmbeddedValkey, free_port

ROOT = Path(__file__).resolve().parents[1]
OUTAGE_S = 30.0
BACKLOG = 5  # messages kept while Valkey is away (a worker publishes ~12 in 30 s here)
CAMERAS = ("cam-a", "cam-b")
START_TIMEOUT_S = 120.0
pytestmark = pytest.mark.faults


def fleet_yaml(tmp_path: Path, url: str, ports: dict[str, int], model: Path) -> Path:
    clip = make_video(tmp_path / "clip.mp4", frames=60, fps=10.0, people=3, size=(320, 240))
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cams = "".join(
        f"  {c}:\n    source: {{uri: {clip.path}, loop: true}}\n"
        f"    detector: {{type: ground-truth, path: {gt}}}\n    embedder: {{model: {model}}}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, progress: false, embeddings: false}}\n"
        for c in CAMERAS
    )
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text(
        "runtime: {intra_op_threads: 1}\n"
        "fleet: {enabled: true, replay_speed: 1.0}\n"
        f"bridge: {{url: '{url}', signing_key: {{env: FAULT_KEY}}, backlog_size: {BACKLOG}, "
        "reconnect_max_s: 0.5}\n"
        f"ops: {{camera_ports: {ports}, valkey_probe_s: 1.0}}\n"
        f"cameras:\n{cams}"
    )
    return cfg


@pytest.fixture
def fleet(
    tmp_path: Path, mobilenet_model: Path
) -> Iterator[tuple[EmbeddedValkey, dict[str, int], dict[str, subprocess.Popen[bytes]]]]:
    ports = {c: free_port() for c in CAMERAS}
    with EmbeddedValkey("tcp") as server:
        cfg = fleet_yaml(tmp_path, server.url, ports, mobilenet_model)
        env = dict(os.environ, FAULT_KEY="k" * 32)
        procs = {}
        for c in CAMERAS:
            log = (tmp_path / f"{c}.log").open("wb")
            cmd = daemon_json("run", "--config", str(cfg), "--camera", c)
            procs[c] = subprocess.Popen([*cmd, "--no-progress"], cwd=ROOT, env=env, stdout=log, stderr=log)
            log.close()
        try:
            yield server, ports, procs
        finally:
            for p in procs.values():
                p.kill()
                p.wait()


def alive(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    dead = {c: p.poll() for c, p in procs.items() if p.poll() is not None}
    assert not dead, f"worker(s) exited: {dead}"


def test_valkey_down_30s_no_crash_bounded_backlog_delivered_after(
    fleet: tuple[EmbeddedValkey, dict[str, int], dict[str, subprocess.Popen[bytes]]],
) -> None:
    server, ports, procs = fleet
    a, b = ports["cam-a"], ports["cam-b"]
    wait_until(
        lambda: all(health(p).get("status") == "ok" for p in ports.values()), START_TIMEOUT_S, "both ok"
    )
    for p in ports.values():  # tracking, publishing and hearing the other camera
        wait_until(lambda p=p: metrics(p).get("reid_frames_total", 0) > 20, START_TIMEOUT_S, "frames")
        wait_until(lambda p=p: metrics(p)["reid_bridge_messages_total{event=received}"] > 1, 30, "messages")

    before = metrics(a)
    server.kill()
    t_kill = time.monotonic()
    wait_until(
        lambda: any(s.startswith("valkey down") for s in health(a).get("problems", [])), 10, "a reports it"
    )
    worst_backlog = 0
    while time.monotonic() - t_kill < OUTAGE_S:
        alive(procs)
        worst_backlog = max(worst_backlog, int(metrics(a).get("reid_bridge_backlog", 0)))
        time.sleep(1.0)
    during = metrics(a)
    frames_during = during["reid_frames_total"] - before["reid_frames_total"]
    received_b = metrics(b)["reid_bridge_messages_total{event=received}"]

    server.start()  # same port, empty
    t_back = time.monotonic()
    t_sent = wait_until(lambda: metrics(a).get("reid_bridge_backlog") == 0, 20, "a's backlog written")
    t_ok = wait_until(
        lambda: all(health(p).get("status") == "ok" for p in ports.values()), 20, "both ok again"
    )
    wait_until(
        lambda: metrics(b)["reid_bridge_messages_total{event=received}"] > received_b, 20, "b hears a again"
    )
    after = metrics(a)
    alive(procs)

    published = (
        during["reid_bridge_messages_total{event=published}"]
        - before["reid_bridge_messages_total{event=published}"]
    )
    dropped = (
        during["reid_bridge_messages_total{event=dropped}"]
        - before["reid_bridge_messages_total{event=dropped}"]
    )
    sent_after = (
        after["reid_bridge_messages_total{event=sent}"] - during["reid_bridge_messages_total{event=sent}"]
    )
    print(
        f"\noutage {OUTAGE_S:.0f} s: a processed {frames_during:.0f} frames, published {published:.0f}, kept "
        f"{during['reid_bridge_backlog']:.0f} (bound {BACKLOG}), dropped {dropped:.0f}; back: backlog written in "
        f"{t_sent - t_back:.2f} s, both healthy in {t_ok - t_back:.2f} s"
    )
    assert frames_during > 0.5 * 10 * OUTAGE_S  # tracking went on at ~10 FPS without Valkey
    assert worst_backlog <= BACKLOG and during["reid_bridge_backlog"] == BACKLOG
    assert published > BACKLOG and dropped >= published - BACKLOG  # the oldest went, counted
    assert sent_after >= BACKLOG  # what was kept was written once Valkey returned
    assert t_ok - t_back < 10.0
    lost = after["reid_bridge_reconnects_total"] - before["reid_bridge_reconnects_total"]
    tries = after["reid_bridge_reconnect_failures_total"] - before["reid_bridge_reconnect_failures_total"]
    assert lost == 2 and tries >= 10  # the sender's and the receiver's connection, not each try while away

    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    assert [p.wait(10) for p in procs.values()] == [0, 0]
