"""`reid-daemon fleet` following its YAML while it runs (fleet_runner._Follow), and what its workers say of it.

Real processes on a real RTSP stream (tests/rtsp_server.py) or real recordings, as in test_fleet's follow tests;
every wait is for an event (a log line, a file, an exit), none a fixed sleep."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml
from _ops import wait_until
from _procs import daemon_json
from _video import SyntheticClip, make_video
from test_fleet import _live_camera

from daemon.config import Settings, load_settings
from daemon.fleet import FLEET_FOLLOWS_ENV, FLEET_PID_ENV, STARTED_AGAIN_ENV
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


def _saying(log: Path, part: str) -> Callable[[], bool]:
    return lambda: bool(_said(log, part))


def _run(config: Path, camera: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = daemon_json("run", "--config", str(config))
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
            wait_until(_saying(logs[name], "joined fleet"), 120, f"{name} joined", 0.2)
        write(["other"])
        for name in logs:
            wait_until(_saying(logs[name], REMOVED), 60, f"{name} said it was taken out", 0.2)
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


def _fake_worker(go: Path) -> subprocess.Popen[bytes]:
    """A camera's worker for _Follow's tests (test_fleet's _SLOW_TO_STOP): on SIGTERM it exits 0 once ``go`` is
    there; returned once it catches SIGTERM."""
    from test_fleet import _SLOW_TO_STOP

    proc = subprocess.Popen([sys.executable, "-c", _SLOW_TO_STOP, str(go)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


def test_a_camera_whose_settings_change_is_started_again_with_them_once_its_worker_has_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`reid-daemon fleet` followed only its YAML's camera list: a running camera's own settings edited there
    (its detector, its source) changed nothing and nothing was said. _Follow with real processes for workers:
    a's detector changed stops a's worker and starts it again with the new settings once it has exited, not
    before (two in one folder would write over each other), its first worker counted exit 0; a change of
    ground_truth alone, which the worker does not read, is taken for the scores with no restart; a change that
    cannot be used (a video that is not there) is said once and a's worker runs on; a shared setting changed is
    said once, naming its key, as taking a restart of the fleet, and said back when it is undone."""
    from daemon import fleet_runner

    clip = make_video(tmp_path / "clip.mp4", frames=3, size=(64, 48), people=1)
    gt, gt2 = clip.write_mot_gt(tmp_path / "gt.txt"), clip.write_mot_gt(tmp_path / "gt2.txt")
    go, path = tmp_path / "go", tmp_path / "fleet.yaml"
    started: list[tuple[str, Settings]] = []
    restarted: list[list[str]] = []  # the keys each start was told changed (none for a first start)

    def write(a: dict[str, object], retention_s: float = 30.0) -> None:
        out = {"dir": str(tmp_path / "runs")}
        cams = {"a": {"source": {"uri": str(clip.path)}, "output": out, **a}}
        cams["b"] = {"source": {"uri": str(clip.path)}, "output": out}
        cfg = {"fleet": {"enabled": True}, "bridge": {"allow_unsigned": True}, "cameras": cams}
        cfg["identity"] = {"retention_s": retention_s}
        path.with_suffix(".new").write_text(yaml.safe_dump(cfg))
        path.with_suffix(".new").replace(path)

    def start(now: Settings, name: str, changed: Sequence[str] = ()) -> fleet_runner.CameraProcess:
        started.append((name, now))
        restarted.append(list(changed))
        return fleet_runner.CameraProcess(
            name, _fake_worker(go), tmp_path / "status.json", tmp_path / "log", None
        )

    def take() -> None:  # the file is taken once unchanged for a poll; exits are acted on as _watch does
        for _ in range(2):
            follow.tick(cams, stops, exits)
            exits.running(cams)

    write({})
    follow = fleet_runner._Follow(path, load_settings(path), start)
    cams = [start(load_settings(path), "a"), start(load_settings(path), "b")]
    stops, exits = fleet_runner._Stops(), fleet_runner._Exits(None, lambda: False)
    tuned = {"detector": {"score_threshold": 0.3}}
    try:
        with caplog.at_level(logging.INFO, logger="daemon.fleet_runner"):
            take()
            assert len(cams) == 2 and not caplog.text  # nothing changed
            write(tuned)
            take()
            take()
            assert [c.name for c in cams] == ["a", "b"] and cams[
                0
            ].proc.poll() is None  # a's worker still stops
            said = f"camera a's settings changed in {path} (cameras.a.detector.score_threshold): stopping its worker"
            assert said in caplog.text
            go.touch()
            cams[0].proc.wait(30)
            take()
            assert [c.name for c in cams] == ["a", "b", "a"] and cams[2].proc.poll() is None
            assert started[-1][1].cameras["a"].detector.score_threshold == 0.3
            assert f"camera a was started again with its settings in {path}" in caplog.text
            assert "camera a has stopped (to start again with its new settings)" in caplog.text
            write({**tuned, "ground_truth": str(gt2)})  # not read by the worker
            take()
            assert len(cams) == 3 and follow.ran["a"].ground_truth == gt2
            assert "cameras.a.ground_truth taken for the run's scores" in caplog.text
            write({**tuned, "ground_truth": str(gt2), "source": {"uri": str(tmp_path / "missing.mp4")}})
            take()
            write(
                {**tuned, "ground_truth": str(gt2), "source": {"uri": str(tmp_path / "missing.mp4")}},
                retention_s=60.0,
            )
            take()
            assert len(cams) == 3 and cams[2].proc.poll() is None  # runs on as it was
            assert caplog.text.count("camera a's settings changed") == 2  # the detector's, the source's once
            assert (
                "(cameras.a.source.uri) but are not taken" in caplog.text
                and "video file not found" in caplog.text
            )
            write({**tuned, "ground_truth": str(gt)}, retention_s=60.0)  # a's ground truth again, once more
            take()
            assert caplog.text.count("identity.retention_s changed") == 1
            assert (
                f"{path}: identity.retention_s changed: the workers running keep what they started"
                in caplog.text
            )
            write({**tuned, "ground_truth": str(gt)})
            take()
            assert "the settings the cameras share are back as the fleet started with them" in caplog.text
            assert len(cams) == 3
    finally:
        go.touch()
        stops.ask(cams)
        for c in cams:
            c.proc.wait(30)
    assert exits.codes(cams) == {"a": 0, "b": 0}
    assert follow.ran["a"].detector.score_threshold == 0.3 and follow.ran["a"].ground_truth == gt
    assert [n for n, _ in started] == ["a", "b", "a"]
    assert restarted == [[], [], ["cameras.a.detector.score_threshold"]]  # told to the worker started again


def test_a_recording_whose_source_changes_mid_run_is_replayed_from_then_and_reported_so(
    tmp_path: Path,
) -> None:
    """A real `reid-daemon fleet` replaying recording r at its pace: r's source (and its ground truth) changed in
    the YAML mid-run was not taken, r replaying its first video to the end. Now r's worker is stopped and started
    again on the new video, which the report takes: its first frame placed after the edit (not at the fleet's
    start, as if the new video had run from there), its frames the new video's, scored against the new ground
    truth; the fleet exits 0, nothing counted failed."""
    first = make_video(tmp_path / "first.mp4", frames=300, fps=10.0, people=1, size=(160, 120))
    second = make_video(tmp_path / "second.mp4", frames=20, fps=10.0, people=2, size=(160, 120), seed=3)
    gts = {v: v.write_mot_gt(tmp_path / f"{v.path.stem}-gt.txt") for v in (first, second)}
    runs, path = tmp_path / "runs", tmp_path / "fleet.yaml"

    def write(clip: SyntheticClip) -> None:
        cam = {**_live_camera(str(clip.path), gts[clip], runs), "ground_truth": str(gts[clip])}
        cfg = {"fleet": {"enabled": True, "replay_speed": 1.0}, "bridge": {"allow_unsigned": True}}
        path.with_suffix(".new").write_text(yaml.safe_dump({**cfg, "cameras": {"r": cam}}))
        path.with_suffix(".new").replace(path)

    write(first)
    said = tmp_path / "fleet.log"
    cmd = daemon_json("fleet", "--config", str(path), "--no-progress")
    with said.open("wb") as err:
        fleet = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
    try:
        status = runs / "r" / "status.json"
        wait_until(
            lambda: int(json_object(status).get("frames", 0)) > 0, 120, "r replaying its first video", 0.2
        )
        edited = time.time()
        write(second)
        fleet.communicate(timeout=120)
    finally:
        fleet.kill()
    log = said.read_text()
    assert fleet.returncode == 0, log[-3000:]
    messages = _messages(said)
    keys = (
        "cameras.r.detector.path, cameras.r.embedder.truth.path, cameras.r.ground_truth, cameras.r.source.uri"
    )
    changed = (
        f"camera r's settings changed in {path} ({keys}): stopping its worker to start it again with them"
    )
    assert changed in messages, messages
    assert any(m.startswith(f"camera r was started again with its settings in {path}") for m in messages), (
        messages
    )
    assert not any("exited with" in m for m in messages), messages
    assert json_object(runs / "r" / "identities.json")["first_frame_time"] >= edited
    assert json_object(runs / "r" / "summary.json")["frames"] == 20
    scores = json_object(runs / "fleet_metrics.json")
    assert scores["per_camera"]["r"]["IDF1"] > 90, scores
    again = json_object(runs / "report.json")["started_again"]  # the report says r was started again
    assert again["r"]["keys"] == keys.split(", ") and again["r"]["first_frame_time"] >= edited, again
    assert "what it saw before is not in the report" in (runs / "report.md").read_text(encoding="utf-8")


def test_a_fleet_started_with_started_again_in_its_environment_does_not_pass_it_to_its_first_workers(
    tmp_path: Path,
) -> None:
    """`reid-daemon fleet` gave its first workers its own environment, STARTED_AGAIN_ENV included where its
    user had exported it (or a fleet was started from inside a worker started again): each first worker's
    status.json, and the report, then said it had been started again with those keys, a restart that never
    happened (and the report's 'what it saw before is not in the report'). A real fleet of two recordings run
    with it set: neither worker's status.json names a restart, the report names none."""
    clip = make_video(tmp_path / "clip.mp4", frames=5, fps=10.0, people=1, size=(64, 48))
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    runs, path = tmp_path / "runs", tmp_path / "fleet.yaml"
    cams = {name: _live_camera(str(clip.path), gt, runs) for name in ("a", "b")}
    cfg = {"fleet": {"enabled": True}, "bridge": {"allow_unsigned": True}, "cameras": cams}
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, STARTED_AGAIN_ENV: "cameras.a.source.uri,cameras.b.detector.path"}
    cmd = daemon_json("fleet", "--config", str(path), "--no-progress")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("a", "b"):
        status = json_object(runs / name / "status.json")
        assert status["state"] == "done" and "started_again" not in status, status
    assert json_object(runs / "report.json")["started_again"] == {}
    assert "Started again" not in (runs / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("fleet_pid", [None, "1"], ids=["no-fleet", "another-parent"])
def test_a_worker_not_started_by_its_fleet_does_not_take_started_again_from_its_environment(
    tmp_path: Path, fleet_pid: str | None
) -> None:
    """A worker took STARTED_AGAIN_ENV from its environment however it was started: `reid-daemon run` by hand
    in a shell where it was exported, or with a fleet worker's environment copied (its FLEET_PID_ENV naming a
    fleet that is not its parent), wrote a restart that never happened into status.json, which a report over
    its folder then names. Only a worker whose parent is the fleet its environment names takes it (a fleet's
    own restart is tested above, and by test_a_recording_whose_source_changes_mid_run_...)."""
    clip = make_video(tmp_path / "clip.mp4", frames=5, fps=10.0, people=1, size=(64, 48))
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    runs, path = tmp_path / "runs", tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"a": _live_camera(str(clip.path), gt, runs)}}))
    env = {k: v for k, v in os.environ.items() if k not in (FLEET_PID_ENV, FLEET_FOLLOWS_ENV)}
    env[STARTED_AGAIN_ENV] = "cameras.a.source.uri"
    if fleet_pid is not None:
        env[FLEET_PID_ENV] = fleet_pid
    cmd = [*daemon_json("run", "--config", str(path)), "--camera", "a", "--no-progress"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    status = json_object(runs / "a" / "status.json")
    assert status["state"] == "done" and "started_again" not in status, status
