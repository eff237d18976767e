"""``reid-daemon run`` as systemd runs it: a real process, a fake NOTIFY_SOCKET, SIGTERM, JSON logs, a missing model."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from _ops import NotifySocket, notify_socket, wait_until
from _procs import daemon_json
from _video import make_video

from daemon.valkey_server import free_port

ROOT = Path(__file__).resolve().parents[1]
STOP_BUDGET_S = 2.0  # the limit between SIGTERM and exit
WATCHDOG_S = 3.0  # the period systemd gives (WATCHDOG_USEC): the worker sends WATCHDOG=1 every third of it
START_TIMEOUT_S = 90.0  # imports and model loading on a busy 2-core machine


def start_worker(
    cfg: Path, notify: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    environ = dict(os.environ, NOTIFY_SOCKET=notify, WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)), **(env or {}))
    cmd = daemon_json(*extra, "run", "--config", str(cfg))
    return subprocess.Popen(
        [*cmd, "--no-progress"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def write_config(tmp_path: Path, port: int, detector: str) -> Path:
    clip = make_video(tmp_path / "clip.mp4", frames=40, fps=10.0, people=2, size=(160, 120))
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    det = f"{{type: ground-truth, path: {gt}}}" if detector == "gt" else "{type: ssdlite}"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"ops: {{port: {port}}}\nfleet: {{replay_speed: 1.0}}\ncameras:\n  door:\n"
        f"    source: {{uri: {clip.path}, loop: true}}\n    detector: {det}\n    embedder: {{type: none}}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, progress: false}}\n"
    )
    return cfg


def health(port: int) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return dict(json.load(r))
    except urllib.error.HTTPError as e:
        return dict(json.load(e))


def _stop_timed(proc: subprocess.Popen[str]) -> tuple[int, float]:
    """SIGTERM to ``proc``; its exit code and the seconds it took to exit."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(10)
    return code, time.monotonic() - t0


def test_notify_ready_watchdog_and_sigterm_exit_within_two_seconds(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port, "gt")
    with notify_socket(tmp_path) as (path, fake):
        proc = start_worker(cfg, path)
        try:
            ready = fake.wait_for("READY", timeout=START_TIMEOUT_S)
            assert health(port)["status"] == "ok"
            wait_until(
                lambda: len([t for t in fake.times("WATCHDOG") if t > ready]) >= 3 and _frames(port) > 10,
                30.0,
                "3 WATCHDOG=1 after READY and 10 frames",
            )
            fed = fake.times("WATCHDOG")
            code, stop_s = _stop_timed(proc)
        finally:
            proc.kill()
        out, err = proc.communicate()
        _check_notifications(fake, fed)
    print(f"SIGTERM to exit: {stop_s:.2f} s")
    assert code == 0 and stop_s < STOP_BUDGET_S, err[-2000:]
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("SIGTERM received" in rec["message"] for rec in logs)  # JSON lines on stderr
    assert all({"ts", "level", "logger", "message"} <= set(rec) for rec in logs)
    summary = json.loads((tmp_path / "runs" / "door" / "summary.json").read_text())
    events = (tmp_path / "runs" / "door" / "events.jsonl").read_text().splitlines()
    assert summary["frames"] > 10 and "[door]" in out
    assert json.loads(events[-1])["event"] == "track.ended"  # flushed and closed on the way out


def test_sighup_stops_cleanly_like_sigterm(tmp_path: Path) -> None:
    """A closed terminal or an ssh session that drops sends SIGHUP: it killed the worker at once (exit 129),
    with events, the fleet backlog and summary.json never written."""
    port = free_port()
    cfg = write_config(tmp_path, port, "gt")
    with notify_socket(tmp_path) as (path, fake):
        proc = start_worker(cfg, path)
        try:
            fake.wait_for("READY", timeout=START_TIMEOUT_S)
            time.sleep(1.0)
            proc.send_signal(signal.SIGHUP)
            code = proc.wait(10)
        finally:
            proc.kill()
        _, err = proc.communicate()
    assert code == 0 and "SIGHUP received" in err, err[-2000:]
    assert json.loads((tmp_path / "runs" / "door" / "summary.json").read_text())["frames"] > 0


def _frames(port: int) -> int:
    return int(str(health(port).get("frames", 0)))


def _check_notifications(fake: NotifySocket, fed: list[float]) -> None:
    """WATCHDOG=1 is sent every third of the period (1 s): systemd wants one within each period, which leaves
    two late ticks (a loaded host) before it would kill the worker. Each gap from READY on is under a period."""
    ready = fake.times("READY")[0]
    after = [ready, *(t for t in fed if t > ready)]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert len(gaps) >= 3 and max(gaps) < WATCHDOG_S, gaps
    assert fake.values("STATUS")[0].startswith("starting")
    assert fake.wait_for("STOPPING") > ready  # read on the fake socket's thread: may land after the exit


def test_missing_model_exits_non_zero_and_says_so_in_status(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port, "ssdlite")
    with notify_socket(tmp_path) as (path, fake):
        proc = start_worker(cfg, path, env={"REID_MODELS_DIR": str(tmp_path / "empty-cache")})
        code = proc.wait(START_TIMEOUT_S)
        _, err = proc.communicate()
        deadline = time.monotonic() + 5.0  # the last datagrams are read on the fake socket's thread
        while not any(s.startswith("model missing:") for s in fake.values("STATUS")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        statuses = fake.values("STATUS")
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    errors = [r["message"] for r in records if r["level"] == "ERROR"]  # --log-format json: the error too
    assert code == 1 and len(errors) == 1, err[-2000:]
    assert "ssdlite-mobilenetv2-pedestrian" in errors[0] and "Traceback" not in err
    assert any(s.startswith("model missing:") and "ssdlite-mobilenetv2-pedestrian" in s for s in statuses)
    assert not fake.times("READY")


def test_sigterm_while_catching_up_with_an_unreachable_valkey_stops_at_once(
    tmp_path: Path, mobilenet_model: Path
) -> None:
    """A starting worker waits up to fleet.ready_timeout_s to catch up with the fleet; with Valkey unreachable a
    SIGTERM then went unheard until the wait ended (10 s by default, the unit's TimeoutStopSec: systemd's
    SIGKILL), after which the worker sent READY=1 and processed a frame on its way out."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{s.getsockname()[1]}"
    cfg = write_config(tmp_path, free_port(), "gt")
    text = cfg.read_text().replace("embedder: {type: none}", "embedder: {type: onnx}")
    text = text.replace("fleet: {replay_speed: 1.0}", "fleet: {enabled: true, ready_timeout_s: 60}")
    cfg.write_text(text + f"bridge: {{url: '{url}', signing_key: {{value: {'k' * 32}}}}}\n")
    with notify_socket(tmp_path) as (path, fake):
        proc = start_worker(cfg, path)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
        reader.start()
        try:
            wait_until(
                lambda: any("reconnecting" in x for x in lines), START_TIMEOUT_S, "the bridge retrying"
            )
            code, stop_s = _stop_timed(proc)
        finally:
            proc.kill()
        reader.join(5)
        time.sleep(0.2)  # the last datagrams are read on the fake socket's thread
    err = "".join(lines)
    assert code == 0 and stop_s < STOP_BUDGET_S, err[-2000:]
    assert not fake.times("READY"), fake.messages  # never announced as started


# A worker process whose models load while a signal arrives (systemctl stop or restart, Ctrl-C, a closing ssh
# session during the seconds a start takes): the signal is sent from inside the model loading, so it always
# lands there.
_SIGNAL_WHILE_LOADING = """
import os, signal, sys
import daemon.worker as worker
from daemon.cli import main
load = worker.build_pipeline
def loading(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return load(*args, **kwargs)
worker.build_pipeline = loading
sys.exit(main(["--log-format", "json", "run", "--config", sys.argv[2], "--no-progress"]))
"""


def _stopped_while_starting(tmp_path: Path, script: str, sig: str) -> list[str]:
    """Run ``script`` (a worker that signals itself with ``sig`` while it starts) under a systemd notify socket;
    it must exit 0, log JSON lines only, say STOPPING=1 but never READY=1, and write nothing. Its log messages."""
    cfg = write_config(tmp_path, free_port(), "gt")
    with notify_socket(tmp_path) as (notify, fake):
        env = dict(os.environ, NOTIFY_SOCKET=notify)
        cmd = [sys.executable, "-c", script, sig, str(cfg)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        fake.wait_for("STOPPING", timeout=2)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    assert len(lines) == len(proc.stderr.splitlines())  # JSON only
    assert "READY" not in [k for _, m in fake.messages for k in m]
    assert not (tmp_path / "runs" / "door").exists()  # nothing opened, nothing written
    return [x["message"] for x in lines]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_while_the_models_load_stops_cleanly(tmp_path: Path, sig: str) -> None:
    """The stop signals were handled from the moment the worker was built: one that came while its models
    loaded killed it (SIGTERM, SIGHUP: exit by signal, no STOPPING=1, nothing in the journal) or printed a bare
    'interrupted' among the JSON lines (SIGINT, exit 130). It now stops as it does later: exit 0, logged."""
    said = _stopped_while_starting(tmp_path, _SIGNAL_WHILE_LOADING, sig)
    assert f"door: {sig} received, stopping" in " ".join(said)
    assert "door: stopped before the source could be opened" in said


# A worker process signalled during the seconds before the worker is built (the config read, the imports of
# torch and the models' code: 12 s on a loaded machine): the signal is sent from inside the import of the tracker's
# module (torch), so it always lands there.
_SIGNAL_WHILE_IMPORTING = """
import os, signal, sys

class SignalOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "daemon.track":
            os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        return None

sys.meta_path.insert(0, SignalOnImport())
from daemon.cli import entry
entry(["--log-format", "json", "run", "--config", sys.argv[2], "--no-progress"])
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_while_the_command_starts_stops_cleanly(tmp_path: Path, sig: str) -> None:
    """The stop signals were handled once the models began to load; one that came before, while the config was
    read and torch and the worker's code imported, killed it (SIGTERM: exit 143, SIGHUP: 129, nothing logged) or
    printed a bare 'interrupted' among the JSON lines (SIGINT, exit 130). It stops the start: exit 0, logged,
    STOPPING=1, no model loaded, nothing written."""
    said = _stopped_while_starting(tmp_path, _SIGNAL_WHILE_IMPORTING, sig)
    assert f"door: {sig} received while starting, stopping" in said
    assert "door: stopped before its models loaded" in said


# A worker whose start says every 0.5 s (not camera_lock.WAIT_SAY_EVERY_S, 10 s) that it waits for its folder's lock.
_SAYING_OFTEN = """
import sys
import daemon.camera_lock as camera_lock
from daemon.cli import main
camera_lock.WAIT_SAY_EVERY_S = 0.5
sys.exit(main(["--log-format", "json", "run", "--config", sys.argv[1], "--no-progress"]))
"""


def test_a_start_waiting_for_a_forget_holding_its_folder_s_lock_tells_systemd_and_extends_its_start(
    tmp_path: Path,
) -> None:
    """A worker starting while `forget` (or `fleet`) held its camera folder's lock waited for it (up to 900 s)
    telling systemd nothing: STATUS= said it loaded its models, and past TimeoutStartSec the unit killed it as a
    failed start. While it waits it says so (STATUS= naming the holder) with EXTEND_TIMEOUT_USEC, again and again,
    each past the time waited so far; the watchdog is fed meanwhile; READY=1 once the lock is let go."""
    from _camlock import camera_lock_held

    port = free_port()
    cfg = write_config(tmp_path, port, "gt")
    folder = tmp_path / "runs" / "door"
    with notify_socket(tmp_path) as (path, fake):
        env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)))
        with camera_lock_held(folder, "door", "reid-daemon forget") as forget:
            proc = subprocess.Popen(
                [sys.executable, "-c", _SAYING_OFTEN, str(cfg)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                first = fake.wait_for("EXTEND_TIMEOUT_USEC", timeout=START_TIMEOUT_S)
                wait_until(lambda: len(fake.times("EXTEND_TIMEOUT_USEC")) >= 4, 10, "4 EXTEND_TIMEOUT_USEC")
                assert f"waiting for the camera folder's lock, held by pid {forget.pid}" in str(health(port))
                let_go = time.monotonic()
            except BaseException:
                proc.kill()
                raise
        try:
            ready = fake.wait_for("READY", timeout=30)
            code, _ = _stop_timed(proc)
        finally:
            proc.kill()
        _, err = proc.communicate()
    assert code == 0, err[-2000:]
    from daemon.ops.service import LOCK_EXTEND_S

    extends = [(t, m) for t, m in fake.messages if "EXTEND_TIMEOUT_USEC" in m]
    for t, m in extends:
        assert m["STATUS"].startswith(
            f"starting: waiting for the camera folder's lock, held by pid {forget.pid} (reid-daemon forget, since "
        ), m
        assert str(folder) in m["STATUS"]
        assert int(m["EXTEND_TIMEOUT_USEC"]) >= (LOCK_EXTEND_S + t - first - 0.5) * 1e6, (t - first, m)
    assert max(t for t, _ in extends) <= let_go < ready
    fed = [t for t in fake.times("WATCHDOG") if first <= t <= let_go]
    gaps = [b - a for a, b in itertools.pairwise([first, *fed, let_go])]
    assert max(gaps) < WATCHDOG_S, gaps  # fed while it waits


def test_sigterm_while_waiting_for_a_forget_holding_its_folder_s_lock_stops_at_once(tmp_path: Path) -> None:
    """A stop (systemctl stop, a restart) while the start waited for a `forget` holding its camera folder's lock
    went unheard until the lock was let go (up to 900 s): systemd's SIGKILL after TimeoutStopSec. It stops at
    once, as a stop while the models load does: exit 0, STOPPING=1, never READY=1, the forget's lock untouched."""
    from _camlock import camera_lock_held

    from daemon.camera_lock import lock_file
    from daemon.gallery import lock_holder

    cfg = write_config(tmp_path, free_port(), "gt")
    folder = tmp_path / "runs" / "door"
    with notify_socket(tmp_path) as (path, fake):
        with camera_lock_held(folder, "door", "reid-daemon forget") as forget:
            proc = start_worker(cfg, path)
            try:
                fake.wait_for("EXTEND_TIMEOUT_USEC", timeout=START_TIMEOUT_S)  # it waits for the lock
                code, stop_s = _stop_timed(proc)
            finally:
                proc.kill()
            _, err = proc.communicate()
            held, holder = lock_holder(lock_file(folder))
            assert held and holder is not None and holder.pid == forget.pid
        fake.wait_for("STOPPING", timeout=2)
    assert code == 0 and stop_s < STOP_BUDGET_S, (stop_s, err[-2000:])
    assert "READY" not in [k for _, m in fake.messages for k in m]
    assert "door: stopped before the source could be opened" in err
    assert not (folder / "status.json").exists()
