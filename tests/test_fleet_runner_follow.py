"""`reid-daemon fleet` following its YAML while it runs (fleet_runner._Follow), and what its workers say of it.

Real processes on a real RTSP stream (tests/rtsp_server.py) or real recordings, as in test_fleet's follow tests;
every wait is for an event (a log line, a file, an exit), none a fixed sleep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from _ops import wait_until
from _video import make_video
from test_fleet import _live_camera

from daemon.config import load_settings
from daemon.fleet import FLEET_FOLLOWS_ENV, FLEET_PID_ENV
from daemon.fleet_runner import child_environment
from daemon.outputs import json_object
from daemon.valkey_server import EmbeddedValkey

ROOT = Path(__file__).resolve().parents[1]
REMOVED = "this camera is no longer in the config"


def _messages(log: Path) -> list[str]:
    """The messages of a worker's or a fleet's JSON log."""
    lines = log.read_text().splitlines() if log.is_file() else []
    return [json.loads(line)["message"] for line in lines if line.startswith("{")]


def _said(log: Path, part: str) -> list[str]:
    return [m for m in _messages(log) if part in m]


def _run(config: Path, camera: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "daemon", "--log-format", "json", "run", "--config", str(config)]
    with log.open("wb") as fh:
        return subprocess.Popen(
            [*cmd, "--camera", camera, "--no-progress"], cwd=ROOT, env=env, stdout=fh, stderr=fh
        )


def test_a_worker_taken_out_of_its_config_says_who_stops_it(tmp_path: Path) -> None:
    """A live worker whose camera was taken out of its YAML said 'stop its worker (systemctl disable --now
    reid-daemon@X)' however it ran, advice that is wrong under `reid-daemon fleet`, which stops it itself. Two
    real workers on one stream and one Valkey, both taken out of the YAML: `svc`, run as a service runs it, gives
    the systemctl advice; `flt`, run with the environment the fleet gives its workers (its pid, following its
    YAML), says that the fleet stops it, and nothing of systemctl."""
    from test_sources import RtspServer

    clip = make_video(tmp_path / "stream.mp4", frames=600, fps=10.0, people=1, size=(160, 120))
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    server = RtspServer(clip.path)
    server.start()
    valkey = EmbeddedValkey("tcp").start()
    runs, path = tmp_path / "runs", tmp_path / "fleet.yaml"

    def write(names: list[str]) -> None:
        cams = {n: _live_camera(server.url, gt, runs) for n in names}
        cfg = {
            "fleet": {"enabled": True},
            "bridge": {"url": valkey.url, "allow_unsigned": True},
            "cameras": cams,
        }
        path.with_suffix(".new").write_text(yaml.safe_dump(cfg))
        path.with_suffix(".new").replace(path)

    write(["svc", "flt", "other"])
    plain = {k: v for k, v in os.environ.items() if k not in (FLEET_PID_ENV, FLEET_FOLLOWS_ENV)}
    fleet_env = child_environment(load_settings(path), valkey.url, 0.0, follows=True)
    logs = {"svc": tmp_path / "svc.log", "flt": tmp_path / "flt.log"}
    procs = []
    try:
        procs.append(_run(path, "svc", logs["svc"], plain))
        procs.append(_run(path, "flt", logs["flt"], fleet_env))
        for name in logs:
            wait_until(lambda n=name: _said(logs[n], "joined fleet"), 120, f"{name} joined", 0.2)  # type: ignore[misc]
        write(["other"])
        for name in logs:
            wait_until(lambda n=name: _said(logs[n], REMOVED), 60, f"{name} said it was taken out", 0.2)  # type: ignore[misc]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(30) for proc in procs] == [0, 0]
    finally:
        for proc in procs:
            proc.kill()
        server.stop()
        valkey.close()
    (svc,), (flt,) = _said(logs["svc"], REMOVED), _said(logs["flt"], REMOVED)
    assert svc.endswith("stop its worker (systemctl disable --now reid-daemon@svc)"), svc
    assert f"the `reid-daemon fleet` that runs it (pid {os.getpid()}) stops its worker" in flt, flt
    assert "systemctl" not in flt, flt
    assert json_object(runs / "flt" / "status.json")["state"] == "done"


def test_the_fleet_tells_its_workers_it_runs_them_and_whether_it_follows_its_yaml(tmp_path: Path) -> None:
    """What `reid-daemon fleet` puts in its workers' environment for fleet.removal_advice: its pid, and whether
    it stops the worker of a camera taken out of its YAML (a run of --cameras or a lockstep replay does not)."""
    from daemon.fleet import removal_advice

    clip = make_video(tmp_path / "clip.mp4", frames=3, size=(64, 48), people=1)
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"a": {"source": {"uri": str(clip.path)}}}}))
    settings = load_settings(path)
    follows = child_environment(settings, "redis://127.0.0.1:1", 0.0, follows=True)
    fixed = child_environment(settings, "redis://127.0.0.1:1", 0.0)
    assert follows[FLEET_PID_ENV] == fixed[FLEET_PID_ENV] == str(os.getpid())
    assert (follows[FLEET_FOLLOWS_ENV], fixed[FLEET_FOLLOWS_ENV]) == ("1", "0")
    assert "(--cameras): stop that fleet" in removal_advice("a", fixed)
