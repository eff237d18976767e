"""The RTSP server under a real worker process is killed and restarted: the worker stays up, says "source down"
on /health, keeps feeding the systemd watchdog while it waits (a down stream is not a hung worker), and resumes
within 2 s of the server's return; a fleet camera's worker expires what it saw on time meanwhile. Uses
GStreamer's RTSP server from Debian (skips with the install line when it is missing), the helper of
tests/test_sources.py. Figures are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _ops import health, notify_socket, wait_until
from _video import make_video
from test_sources import RtspServer

from daemon.config import (
    CameraConfig,
    EmbedderConfig,
    GroundTruthDetectorConfig,
    OutputConfig,
    Settings,
    SourceConfig,
    TrackerConfig,
    single_camera_settings,
)
from daemon.outputs import RunSummary
from daemon.pipeline import FrameResult
from daemon.sources import FrameSource
from daemon.valkey_server import free_port
from daemon.worker import CameraWorker

ROOT = Path(__file__).resolve().parents[1]
RESUME_BUDGET_S = 2.0  # the limit between the server's return and frames flowing again
DOWN_S = 4.0  # longer than the watchdog period below: it must keep being fed meanwhile
WATCHDOG_S = 2.0
pytestmark = pytest.mark.faults


def config(tmp_path: Path, url: str, port: int, gt: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"ops: {{port: {port}}}\ncameras:\n  door:\n"
        f"    source: {{uri: '{url}', open_timeout_s: 2, read_timeout_s: 1, reconnect_initial_s: 0.1, "
        "reconnect_max_s: 0.5}\n"
        f"    detector: {{type: ground-truth, path: {gt}}}\n    embedder: {{type: none}}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, progress: false}}\n"
    )
    return cfg


def frames(port: int) -> int:
    return int(health(port).get("frames", -1))


def test_rtsp_server_killed_and_restarted_worker_resumes_within_2s(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "stream.mp4", frames=750, fps=25.0, people=3)  # 30 s: no end of stream here
    server = RtspServer(clip.path)
    server.start()
    port = free_port()
    cfg = config(tmp_path, server.url, port, clip.write_mot_gt(tmp_path / "gt.txt"))
    with notify_socket(tmp_path) as (notify, fake):
        env = dict(os.environ, NOTIFY_SOCKET=notify, WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)))
        cmd = [sys.executable, "-m", "daemon", "run", "--config", str(cfg), "--no-progress"]
        log = (tmp_path / "worker.log").open("wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            fake.wait_for("READY", timeout=120)
            wait_until(lambda: frames(port) > 25, 30, "frames flowing")
            server.stop()  # SIGKILL: connections drop
            t_down = wait_until(
                lambda: any(p.startswith("source down") for p in health(port).get("problems", [])),
                10,
                "source down",
            )
            time.sleep(DOWN_S)
            assert proc.poll() is None
            fed_while_down = [t for t in fake.times("WATCHDOG") if t > t_down + WATCHDOG_S]
            server.start()  # same port
            t_back = time.monotonic()
            count = frames(port)
            t_resumed = wait_until(lambda: frames(port) > count, 10, "frames again")
            t_ok = wait_until(lambda: health(port).get("status") == "ok", 10, "healthy again")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
        finally:
            proc.kill()
            log.close()
            server.stop()
    print(
        f"\nRTSP server down {DOWN_S:.0f} s: worker resumed {t_resumed - t_back:.2f} s after the server's return "
        f"(healthy after {t_ok - t_back:.2f} s); {len(fed_while_down)} watchdog pings while waiting"
    )
    assert t_resumed - t_back <= RESUME_BUDGET_S
    assert len(fed_while_down) >= 2  # the watchdog was fed although no frame came for DOWN_S > its period
    assert code == 0


class _Identities:
    """Observer of a fleet worker: the identities its resolver held after each frame."""

    def __init__(self) -> None:
        self.after_frames: list[int] = []

    def waiting(self, worker: CameraWorker, reason: str) -> None:
        pass

    def started(self, worker: CameraWorker, source: FrameSource) -> None:
        pass

    def frame(self, worker: CameraWorker, result: FrameResult, loop_s: float) -> None:
        assert worker.fleet is not None
        self.after_frames.append(worker.fleet.resolver.stats().identities)

    def stopped(self, worker: CameraWorker, summary: RunSummary | None) -> None:
        pass


def _stop_worker(worker: CameraWorker, running: threading.Thread, server: RtspServer) -> None:
    """Stop ``worker`` (run on ``running``) and then ``server``: a worker stops after a frame, so a server that was
    down is started again to give it one."""
    worker.stop()
    if server.proc is None:
        server.start()
    running.join(20)
    server.stop()


def test_a_fleet_camera_whose_stream_is_down_expires_what_it_saw_on_time(tmp_path: Path) -> None:
    """A live fleet camera's stream goes down and stays down: its worker waits on the source, retrying (for as long
    as it runs, by default), and resolved no frame, and the resolver expired identities only as it resolved one:
    the person whose track ended before, exemplars and all, was kept for as long as the stream stayed down, past
    identity.retention_s (6 s here), a promise to the people seen. Now they go on time while no frame comes, and
    the track the tracker keeps through the stall stays (its identity too)."""
    clip = make_video(tmp_path / "stream.mp4", frames=750, fps=25.0, people=2)  # 30 s: no end of stream here
    truth = clip.write_mot_gt(tmp_path / "all.txt").read_text().splitlines()
    # person 1 on the first 40 frames only (its track ends while frames come), person 2 all along
    gt = tmp_path / "gt.txt"
    gt.write_text("\n".join(r for r in truth if r.split(",")[1] == "2" or int(r.split(",")[0]) <= 40) + "\n")
    server = RtspServer(clip.path)
    server.start()
    cam = CameraConfig(
        source=SourceConfig(
            uri=server.url, open_timeout_s=2, read_timeout_s=1, reconnect_initial_s=0.1, reconnect_max_s=0.5
        ),
        detector=GroundTruthDetectorConfig(path=gt),
        embedder=EmbedderConfig(type="ground-truth", truth={"path": gt}),  # type: ignore[arg-type]
        tracker=TrackerConfig(track_buffer=10),
        output=OutputConfig(dir=tmp_path / "runs", progress=False),
    )
    settings = single_camera_settings(
        cam,
        name="door",
        fleet={"enabled": True},
        bridge={"allow_unsigned": True},
        identity={"min_observations": 2, "new_min_observations": 2, "retention_s": 6.0},
    )
    seen = _Identities()
    worker = CameraWorker(settings, "door", observers=[seen])
    assert worker.fleet is not None
    resolver = worker.fleet.resolver
    ran: list[RunSummary] = []
    running = threading.Thread(target=lambda: ran.append(worker.run()), daemon=True)
    running.start()
    try:
        wait_until(
            lambda: (resolver.stats().identities, resolver.stats().live_tracks) == (2, 1), 60, "a track ended"
        )
        server.stop()  # SIGKILL: the stream is down
        wait_until(lambda: resolver.stats().identities == 1, 15, "the ended track's identity expired")
        assert seen.after_frames[-1] == 2  # the last frame resolved still held it: no frame expired it
        s = resolver.stats()
        assert s.expired_identities == 1 and s.live_tracks == 1 and s.exemplar_rows > 0  # the track kept
        server.start()  # same port: frames again, so that the worker can stop after one
        frames = len(seen.after_frames)
        wait_until(lambda: len(seen.after_frames) > frames, 15, "frames again")
    finally:
        _stop_worker(worker, running, server)
    assert not running.is_alive() and ran and ran[0].frames == len(seen.after_frames)


def _held(folder: Path, gid: int) -> list[str]:
    """The camera files in ``folder`` that still name global id ``gid``."""
    events = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]
    path = folder / "identities.json"  # written every minute while the camera runs, and on a forget
    table = json.loads(path.read_text())["identities"] if path.is_file() else {}
    rows = [r.split(",") for r in (folder / "door.global.txt").read_text().splitlines()]
    held = {
        "events.jsonl": any(e.get("global_id") == gid for e in events),
        "identities.json": str(gid) in table,
        "door.global.txt": any(int(float(r[1])) == gid for r in rows),
    }
    return [name for name, there in held.items() if there]


def _fleet_camera(tmp_path: Path, url: str, gt: Path) -> Settings:
    """A fleet of one live camera, ``door``, on the RTSP stream ``url`` whose people are ``gt``'s (ground-truth
    boxes and looks), quick to reconnect."""
    cam = CameraConfig(
        source=SourceConfig(
            uri=url, open_timeout_s=2, read_timeout_s=1, reconnect_initial_s=0.1, reconnect_max_s=0.5
        ),
        detector=GroundTruthDetectorConfig(path=gt),
        embedder=EmbedderConfig(type="ground-truth", truth={"path": gt}),  # type: ignore[arg-type]
        output=OutputConfig(dir=tmp_path / "runs", progress=False),
    )
    return single_camera_settings(
        cam,
        name="door",
        fleet={"enabled": True},
        bridge={"allow_unsigned": True},
        identity={"min_observations": 2, "new_min_observations": 2},
    )


def test_a_fleet_camera_whose_stream_is_down_erases_a_forgotten_person_from_its_files(tmp_path: Path) -> None:
    """`reid-daemon forget 1` while a live camera's stream was down: its worker erased person 1 from its files
    only on its next frame, so they stayed in events.jsonl, identities.json and the global MOT file for as long
    as the stream stayed down (possibly for good), and the forgotten ids waiting for that frame piled up. They
    are erased within a second or so, frames or none."""
    clip = make_video(tmp_path / "stream.mp4", frames=750, fps=25.0, people=2)  # 30 s: no end of stream here
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    server = RtspServer(clip.path)
    server.start()
    settings = _fleet_camera(tmp_path, server.url, gt)
    seen = _Identities()
    worker = CameraWorker(settings, "door", observers=[seen])
    assert worker.fleet is not None
    resolver = worker.fleet.resolver
    folder = tmp_path / "runs" / "door"
    ran: list[RunSummary] = []
    running = threading.Thread(target=lambda: ran.append(worker.run()), daemon=True)
    running.start()
    try:
        wait_until(lambda: resolver.stats().identities == 2 and len(seen.after_frames) > 30, 60, "two people")
        server.stop()  # SIGKILL: the stream is down
        gid = 1  # a fresh fleet's first id
        assert gid in resolver.store
        time.sleep(1.5)  # the frames the decoder held are written (read_timeout_s is 1 s)
        frames = len(seen.after_frames)
        worker.fleet.forget(gid)  # as `reid-daemon forget` reaches it through Valkey
        t_sent = time.monotonic()
        t_erased = wait_until(lambda: not _held(folder, gid), 10, f"global id {gid} out of the files")
        assert len(seen.after_frames) == frames  # no frame came meanwhile: the stream is still down
        events = [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]
        assert any(e.get("forgotten") for e in events)
        logged = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
        assert [x["global_id"] for x in logged if x["event"] == "forgotten"] == [gid]
        server.start()  # same port: frames again, so that the worker can stop after one
        wait_until(lambda: len(seen.after_frames) > frames, 15, "frames again")
    finally:
        _stop_worker(worker, running, server)
    print(f"\nforget with the stream down: erased from the camera's files {t_erased - t_sent:.2f} s after it")
    assert not running.is_alive() and ran
    assert t_erased - t_sent <= 3.0


@pytest.mark.parametrize("failing", ["erase", "expiry"])
def test_a_fleet_camera_whose_idle_thread_fails_ends_its_run_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A live fleet camera's threads that work while its stream is down (erasing forgotten people from its files,
    expiring identities) died of an unexpected exception with a traceback on stderr alone: the worker went on
    waiting for its stream with neither done any more, nothing on /health, the run never failing. The error is
    handed to the run, which ends with it at once, frames or none (a service then restarts it)."""
    import daemon.worker as worker_module

    clip = make_video(tmp_path / "stream.mp4", frames=750, fps=25.0, people=2)  # 30 s: no end of stream here
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    server = RtspServer(clip.path)
    server.start()
    seen = _Identities()
    worker = CameraWorker(_fleet_camera(tmp_path, server.url, gt), "door", observers=[seen])
    assert worker.fleet is not None
    resolver = worker.fleet.resolver
    ended: list[BaseException | None] = []

    def run() -> None:
        try:
            worker.run()
        except Exception as e:
            ended.append(e)
        else:
            ended.append(None)

    running = threading.Thread(target=run, daemon=True)
    running.start()
    bug = RuntimeError(f"a bug in the {failing}")

    def broken(*args: object) -> None:
        raise bug

    try:
        wait_until(lambda: resolver.stats().identities == 2 and len(seen.after_frames) > 30, 60, "two people")
        server.stop()  # SIGKILL: the stream is down
        time.sleep(1.5)  # the frames the decoder held are written (read_timeout_s is 1 s)
        frames = len(seen.after_frames)
        if failing == "erase":
            monkeypatch.setattr(worker_module, "erase_camera", broken)
            worker.fleet.forget(1)  # a fresh fleet's first id
        else:
            monkeypatch.setattr(resolver, "expire_idle", broken)
        wait_until(lambda: bool(ended), 10, "the run ended")
        assert ended == [bug] and len(seen.after_frames) == frames  # with the error, no frame meanwhile
    finally:
        if not ended:
            worker.stop()
            server.start()  # the worker stops after a frame: let one come
        running.join(20)
        server.stop()
    assert not running.is_alive()


# A source on a real RTSP server that is killed once 5 frames came, and started again on the same port after
# two failed reconnections; the log goes to stdout, so what is left on the process's stderr (fd 2) is what
# bypassed it.
RECONNECT = """
import logging, sys, time
sys.path.insert(0, sys.argv[2])
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(message)s")
from pathlib import Path
from test_sources import RtspServer
from daemon.config import SourceConfig
from daemon.sources import open_source
server = RtspServer(Path(sys.argv[1]))
server.start()
cfg = SourceConfig(uri=server.url, open_timeout_s=2, read_timeout_s=1, reconnect_initial_s=0.2, reconnect_max_s=0.3)
src = open_source(cfg, name="door")
frames = iter(src)
for _ in range(5):
    next(frames)
server.stop()
while src.stats.reconnect_failures < 2:
    time.sleep(0.05)
server.start()
for _ in range(5):
    next(frames)
src.close()
server.stop()
print("DONE")
"""


def test_a_failed_reconnect_says_why_in_the_log_alone(tmp_path: Path) -> None:
    """Each failed reconnection printed two lines to stderr past the logging (FFmpeg's '[tcp @ 0x...] Connection
    to tcp://...:N?timeout=0 failed: Connection refused' and OpenCV's '[ WARN:0@2.0] global cap.cpp:212 open
    VIDEOIO(FFMPEG): backend is generally available but can't be used to capture by name'), unthrottled, in no
    log format, while the log line said 'refused, not found or not a stream'. The libraries are quiet unless the
    user set their levels, and the log line names the reason."""
    clip = make_video(tmp_path / "stream.mp4", frames=150, fps=25.0, people=3)
    probe = RtspServer(clip.path)  # skips here, naming what to install, where GStreamer's server is missing:
    probe.start()  # the script below starts its own, and a skip there would be its exit status 1
    probe.stop()

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
        done = subprocess.run(
            [sys.executable, "-c", RECONNECT, str(clip.path), str(ROOT / "tests")],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**clean, "PYTHONPATH": str(ROOT), **env},
        )
        assert done.returncode == 0 and "DONE" in done.stdout, done.stdout + done.stderr
        return done

    done = run()
    assert done.stderr == ""
    refused = [line for line in done.stdout.splitlines() if "cannot open stream" in line]
    assert refused, done.stdout
    assert all("connection refused" in line and "127.0.0.1:" in line for line in refused), refused
    assert "reconnected after" in done.stdout
    own = run(OPENCV_FFMPEG_LOGLEVEL="16")  # the user's own level is left alone: FFmpeg's errors shown
    assert "failed: Connection refused" in own.stdout + own.stderr  # (OpenCV prints them to stdout then)
