"""`reid-daemon forget` hears from the running cameras: real workers (processes) on a real Valkey say, signed,
that they erased the id from their files, or why not yet, and the command prints it per camera."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _unreadable import unreadable_file
from _video import make_video

from daemon.bridge import Bridge
from daemon.cli import main
from daemon.config import load_settings
from daemon.erase_ack import UntrustedAck, decode_ack, decode_applied, erase_ack
from daemon.fleet_store import FleetKeys
from daemon.runner import worker_running
from daemon.valkey_server import EmbeddedValkey

ROOT = Path(__file__).resolve().parents[1]
KEY = "f" * 32


@pytest.fixture
def valkey() -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey("tcp") as server:
        yield server


def _fleet(tmp_path: Path, url: str) -> Path:
    """Two cameras replaying a synthetic clip in real time (true boxes and looks) on ``url``'s Valkey."""
    clip = make_video(tmp_path / "clip.mp4", frames=600, size=(160, 120), fps=10.0, people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    camera = {
        "source": {"uri": str(clip.path)},
        "detector": {"type": "ground-truth", "path": str(gt)},
        "embedder": {"type": "ground-truth", "truth": {"path": str(gt)}},
        "output": {"dir": str(tmp_path / "runs"), "progress": False, "video": False},
    }
    cfg = {
        "bridge": {"url": url, "signing_key": {"value": KEY}},
        "fleet": {"enabled": True, "replay_speed": 1.0},
        "identity": {"min_observations": 2, "new_min_observations": 2},
        "cameras": {"a": camera, "b": camera},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(
    config: Path, camera: str, tmp_path: Path, retry_s: float | None = None
) -> subprocess.Popen[bytes]:
    """A worker process of ``camera``; ``retry_s``: its first wait before trying a forget its files refused
    again (daemon.worker.FORGET_RETRY_S, 1 s), to have it waiting while a test sends a forget."""
    args = ["run", "--config", str(config), "--camera", camera, "--no-progress"]
    cmd = [sys.executable, "-m", "daemon", *args]
    if retry_s is not None:
        code = (
            "import sys, daemon.worker as w; from daemon.cli import main; "
            f"w.FORGET_RETRY_S = {retry_s!r}; sys.exit(main({args!r}))"
        )
        cmd = [sys.executable, "-c", code]
    log = (tmp_path / f"{camera}.log").open("wb")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)


def _until(what: str, ok: object, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_forget_says_which_running_cameras_erased_the_id_and_which_have_not_yet(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running camera's erase was said only in its own log and on its /health: `forget` returned as if done
    while a camera could not erase the person from its files. Each running camera now says so through Valkey,
    and `forget` waits for them: one that erased it is named erased, one whose files refuse it pending, with the
    file and why, and the exit status is 1 until every camera erased it."""
    config = _fleet(tmp_path, valkey.url)
    earlier = tmp_path / "runs" / "b" / "earlier-20260101T000000Z"
    earlier.mkdir(parents=True)
    blocked = unreadable_file(earlier / "events.jsonl")
    workers = [_start(config, c, tmp_path) for c in ("a", "b")]
    try:
        settings = load_settings(config)
        with Bridge(settings.bridge, "test", receive=False) as bridge:
            _until("a global id", lambda: (bridge.last_global_id() or 0) >= 1)
        _until("both workers running", lambda: all(worker_running(tmp_path / "runs" / c) for c in "ab"))
        capsys.readouterr()

        assert main(["-q", "forget", "1", "--config", str(config), "--wait", "8"]) == 1
        out, err = capsys.readouterr()
        assert "  a: erased by its running worker: " in out, out + err
        assert (
            f"  b: pending: its worker has not erased it yet: cannot read {blocked}: Input/output error"
            in err
        )
        assert "run forget again to hear from it" in err

        blocked.unlink()
        blocked.write_text("")  # mended: b's next try erases it
        assert main(["-q", "forget", "1", "--config", str(config), "--wait", "70"]) == 0
        out, err = capsys.readouterr()
        assert "  a: erased by its running worker: " in out and "  b: erased by its running worker: " in out
        assert not err, err
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    for c in "ab":
        events = (tmp_path / "runs" / c / "events.jsonl").read_text().splitlines()
        assert not [e for e in map(json.loads, events) if e.get("global_id") == 1], c


def test_a_worker_waiting_to_try_its_files_again_says_at_once_that_a_forget_sent_meanwhile_is_pending(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running worker whose files refused a forget waits before it tries them again (1 s, doubling up to a
    minute) and said nothing meanwhile: a forget sent then (run again, or of another id) heard nothing, and
    `forget` printed that the worker did not say within --wait, though the worker knew which file it was stuck
    on (its /health said it). It says at once that the forget is pending, with the file and why."""
    config = _fleet(tmp_path, valkey.url)
    earlier = tmp_path / "runs" / "b" / "earlier-20260101T000000Z"
    earlier.mkdir(parents=True)
    blocked = unreadable_file(earlier / "events.jsonl")
    worker = _start(config, "b", tmp_path, retry_s=120.0)  # its next try long after this test's forgets
    try:
        settings = load_settings(config)
        with Bridge(settings.bridge, "test", receive=False) as bridge:
            _until("a global id", lambda: (bridge.last_global_id() or 0) >= 1)
        _until("the worker running", lambda: worker_running(tmp_path / "runs" / "b"))
        stuck = f"  b: pending: its worker has not erased it yet: cannot read {blocked}: Input/output error"
        for wait in ("8", "3"):  # the first meets the file; the second comes while the worker waits
            capsys.readouterr()
            assert main(["-q", "forget", "1", "--config", str(config), "--wait", wait]) == 1
            err = capsys.readouterr().err
            assert f"{stuck}; it tries again; run forget again to hear from it" in err, (wait, err)
    finally:
        worker.terminate()
        worker.wait(30)


def test_a_word_in_valkey_not_signed_for_that_camera_and_id_with_the_fleet_key_is_not_taken() -> None:
    """What a camera says is signed over the fleet, the id, the camera and the word: a copy under another
    camera or id, another key's, an unsigned one and a damaged one are each refused, naming why."""
    key, other = b"k" * 32, b"o" * 32
    ack = erase_ack("a", 7, "erased", "no file held it", 1000.5)
    raw = ack.encode("fleet", key)
    assert decode_ack(raw, "fleet", "a", 7, (other, key), False) == ack  # an accepted key of a rotation too
    for camera, gid, fleet, keys in (
        ("b", 7, "fleet", (key,)),
        ("a", 8, "fleet", (key,)),
        ("a", 7, "x", (key,)),
    ):
        with pytest.raises(UntrustedAck, match="signature is not the fleet key's"):
            decode_ack(raw, fleet, camera, gid, keys, False)
    with pytest.raises(UntrustedAck, match="signature is not the fleet key's"):
        decode_ack(ack.encode("fleet", other), "fleet", "a", 7, (key,), False)
    with pytest.raises(UntrustedAck, match="unsigned"):
        decode_ack(ack.encode("fleet", None), "fleet", "a", 7, (key,), False)
    assert decode_ack(ack.encode("fleet", None), "fleet", "a", 7, (), True) == ack  # allow_unsigned
    with pytest.raises(UntrustedAck, match="not a word this daemon writes"):
        decode_ack(b"erased", "fleet", "a", 7, (key,), False)


_LAGGING_WORKER = """
import sys, time
import daemon.fleet


class _Lagging:
    def time(self):
        return time.time() - 60.0

    def __getattr__(self, name):
        return getattr(time, name)


daemon.fleet.time = _Lagging()
from daemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_running_camera_whose_clock_lags_is_heard_to_have_erased_the_id(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """A camera said it erased the id with its host's wall clock, and forget took only what was said after it
    sent the forget by its own host's (less bridge.max_clock_skew_s): a camera whose clock lagged more than that
    (here 60 s, injected into its worker) was never heard to have erased it, and forget asked, again and again,
    to be run again. Both go by the fleet's clock, Valkey's time."""
    config = _fleet(tmp_path, valkey.url)
    cfg = yaml.safe_load(config.read_text())
    del cfg["cameras"]["b"]  # not run here: forget would wait for its word too
    config.write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable,
        "-c",
        _LAGGING_WORKER,
        "run",
        "--config",
        str(config),
        "--camera",
        "a",
        "--no-progress",
    ]
    log = (tmp_path / "a.log").open("wb")
    worker = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=log
    )
    try:
        settings = load_settings(config)
        with Bridge(settings.bridge, "test", receive=False) as bridge:
            _until("a global id", lambda: (bridge.last_global_id() or 0) >= 1)
        _until("the worker running", lambda: worker_running(tmp_path / "runs" / "a"))
        capsys.readouterr()
        assert main(["-q", "forget", "1", "--config", str(config), "--wait", "15"]) == 0
        out, err = capsys.readouterr()
        assert "  a: erased by its running worker: " in out, out + err
    finally:
        worker.terminate()
        worker.wait(30)


def _live_camera(tmp_path: Path, url: str, stream: str, gt: Path) -> Path:
    """One live camera, ``door``, on the RTSP stream ``stream`` (true boxes and looks, quick to reconnect), in a
    fleet on ``url``'s Valkey."""
    camera = {
        "source": {
            "uri": stream,
            "open_timeout_s": 2,
            "read_timeout_s": 1,
            "reconnect_initial_s": 0.1,
            "reconnect_max_s": 0.5,
        },
        "detector": {"type": "ground-truth", "path": str(gt)},
        "embedder": {"type": "ground-truth", "truth": {"path": str(gt)}},
        "output": {"dir": str(tmp_path / "runs"), "progress": False, "video": False},
    }
    cfg = {
        "bridge": {"url": url, "signing_key": {"value": KEY}},
        "fleet": {"enabled": True},
        "identity": {"min_observations": 2, "new_min_observations": 2},
        "cameras": {"door": camera},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _large_earlier_run(camera_dir: Path, gid: int, lines: int) -> Path:
    """An earlier-* folder of ``camera_dir`` whose events.jsonl holds ``lines`` events of another person and, at
    its end, a few of ``gid``'s: seconds to read (about 190 bytes a line). Returns the file."""
    folder = camera_dir / "earlier-20260101T000000Z"
    folder.mkdir(parents=True)

    def event(track: int, global_id: int) -> str:
        rec = {
            "v": 1,
            "event": "track.updated",
            "camera": "door",
            "track_id": track,
            "key": f"door/{track}",
            "frame": 1,
            "ts": 0.1,
            "box": [1, 2, 3, 4],
            "score": 0.9,
            "global_id": global_id,
            "label": None,
            "embedding": None,
        }
        return json.dumps(rec, separators=(",", ":")) + "\n"

    path = folder / "events.jsonl"
    path.write_text(event(2, gid + 1000) * lines + event(1, gid) * 5)
    return path


def _holds(events: Path, gid: int) -> bool:
    return f'"global_id":{gid},' in events.read_text()


def _forgotten_lines(camera_dir: Path, gid: int) -> int:
    """The ``forgotten`` lines of ``gid`` in the identities.jsonl of ``camera_dir`` and its earlier-* folders."""
    found = 0
    for path in camera_dir.glob("**/identities.jsonl"):
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        found += sum(1 for x in lines if x["event"] == "forgotten" and x["global_id"] == gid)
    return found


def test_a_stop_during_a_long_erase_exits_at_once_and_the_next_start_erases_the_rest(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running worker erased a forgotten id from its files (here its idle thread, the live stream down) with
    no deadline, holding the camera's files: SIGTERM during a long erase (large earlier-* folders) waited for it
    to end, past the unit's TimeoutStopSec (10 s) on a large enough folder, where systemd's SIGKILL ended the run
    without its summary.json. The stop ends the erase at the line it reads: the worker exits 0 at once with its
    summary written, the id waits in forget-pending.json, and the next start erases it first."""
    from test_sources import RtspServer

    clip = make_video(tmp_path / "stream.mp4", frames=750, size=(160, 120), fps=25.0, people=2)
    server = RtspServer(clip.path)
    server.start()
    config = _live_camera(tmp_path, valkey.url, server.url, clip.write_mot_gt(tmp_path / "gt.txt"))
    camera_dir = tmp_path / "runs" / "door"
    events = _large_earlier_run(camera_dir, 1, 300_000)  # seconds to erase (7 s on a loaded 2-core machine)
    pending = camera_dir / "forget-pending.json"
    worker = _start(config, "door", tmp_path)
    try:
        settings = load_settings(config)
        with Bridge(settings.bridge, "test", receive=False) as bridge:
            _until("a global id", lambda: (bridge.last_global_id() or 0) >= 1)
        _until("the worker running", lambda: worker_running(camera_dir))
        server.stop()  # the stream is down: the worker's idle thread erases
        time.sleep(1.5)  # the frames the decoder held are written (read_timeout_s is 1 s)
        assert main(["-q", "forget", "1", "--config", str(config), "--wait", "0"]) == 1  # not erased yet
        _until("the erase begun", pending.is_file, 30)  # written as each erase begins
        worker.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        code = worker.wait(30)
        took = time.monotonic() - stopping
    finally:
        worker.kill()
        worker.wait(30)
    print(f"\nSIGTERM during a long erase: the worker exited {took:.2f} s after")
    log = (tmp_path / "door.log").read_text()
    assert code == 0 and took < 5.0, (code, took, log[-3000:])
    assert "cut short by the stop" in log, log[-3000:]
    assert json.loads((camera_dir / "summary.json").read_text())["frames"] > 0
    assert json.loads(pending.read_text())["ids"] == [1]  # still waiting
    assert _holds(events, 1)

    server.start()  # the same port
    worker = _start(config, "door", tmp_path)
    try:
        _until("the next start's erase", lambda: not pending.exists(), 90)
        _until("the worker running", lambda: worker_running(camera_dir))
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
        server.stop()
    assert "left by an earlier run's stop" in (tmp_path / "door.log").read_text()
    assert not _holds(events, 1) and _holds(events, 1001)
    assert _forgotten_lines(camera_dir, 1) == 1


def _applied_upto(valkey: EmbeddedValkey, camera: str) -> str | None:
    """The entry of the fleet's stored forgets up to which ``camera`` marked them applied (None: no mark)."""
    raw = valkey.client().hget(FleetKeys("default").forgets_applied, camera)
    return None if raw is None else decode_applied(raw, "default", camera, (KEY.encode(),), False)


def _last_stored_forget(valkey: EmbeddedValkey) -> str:
    entries = valkey.client().xrevrange(FleetKeys("default").forgets, count=1)
    return entries[0][0].decode()


def test_a_forget_while_a_camera_s_worker_starts_leaves_its_files_to_it(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker writes status.json 'running' only once it has joined the fleet: `forget` judged a starting one
    stopped and rewrote its files while it put the earlier run aside and removed temporary files (a rewrite
    landing after the move recreated an old run's data in the new run's folder). A camera of this host is
    running while its worker holds its folder's lock, taken before it writes anything there: forget leaves its
    files to it (pending until it says), and erases the stopped camera's holding that camera's lock."""
    from _camlock import camera_lock_held

    config = _fleet(tmp_path, valkey.url)
    with Bridge(load_settings(config).bridge, "test", receive=False) as bridge:
        gid = bridge.allocate_global_id()
    starting, stopped = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    events = {c: _large_earlier_run(c, gid, 10) for c in (starting, stopped)}
    for c in (
        starting,
        stopped,
    ):  # the earlier run's, as a starting worker leaves it until it joins the fleet
        (c / "status.json").write_text(json.dumps({"v": 1, "camera": c.name, "state": "done", "frames": 1}))
    with camera_lock_held(starting, "a"):  # a worker starting: its lock taken, nothing written yet
        assert main(["-q", "forget", str(gid), "--config", str(config), "--wait", "0.5"]) == 1
        out, err = capsys.readouterr()
        assert "  a: pending: its worker did not say it erased it within 0.5 s (--wait)" in err, out + err
        assert _holds(events[starting], gid) and not (starting / "forget-pending.json").exists()
        assert "  b: erased: " in out and not _holds(events[stopped], gid)


def test_forget_lets_go_of_a_stopped_camera_s_lock_once_its_files_are_erased_before_it_waits(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """`forget` held a stopped camera's lock from its first look until it erased its files, which it did only
    after waiting (--wait, up to 600 s) for the running cameras' word: that camera's worker, started meanwhile,
    waited as long, telling systemd nothing. It erases the stopped cameras' files, each lock let go once they
    are, before it waits: while it waits for a silent running camera (a helper holding its lock as its worker),
    the stopped one's lock is free (a helper takes it at once); the running one, stopping during the wait
    without a word, is still erased here after, its lock taken then."""
    from _camlock import camera_lock_held

    from daemon.camera_lock import lock_file
    from daemon.gallery import lock_holder

    config = _fleet(tmp_path, valkey.url)
    with Bridge(load_settings(config).bridge, "test", receive=False) as bridge:
        gid = bridge.allocate_global_id()
    running, stopped = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    events = {c: _large_earlier_run(c, gid, 10) for c in (running, stopped)}
    config.chmod(0o600)  # no warning of its signing key on stderr
    cmd = [sys.executable, "-m", "daemon", "-q", "forget", str(gid), "--config", str(config), "--wait", "60"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with camera_lock_held(running, "a") as worker:
        forget = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            _until(
                "the stopped camera erased and its lock free",
                lambda: not _holds(events[stopped], gid) and not lock_holder(lock_file(stopped))[0],
                30,
            )
            t0 = time.monotonic()
            with camera_lock_held(stopped, "b"):  # its worker starting: it has the lock at once
                took_s = time.monotonic() - t0
                assert forget.poll() is None  # still waiting for a's word
            assert _holds(events[running], gid)
            assert worker.stdin is not None
            worker.stdin.close()  # a stops without a word: its lock lets go as it ends
            worker.wait(10)
            out, err = forget.communicate(timeout=60)
        finally:
            if forget.poll() is None:
                forget.kill()
                forget.wait()
    assert forget.returncode == 0, out + err
    assert "  a: erased: " in out and "  b: erased: " in out and not err, out + err
    assert not _holds(events[running], gid) and not _holds(events[stopped], gid)
    assert took_s < 5, took_s  # a python helper's start; the forget waits 60 s


def test_forget_waits_for_the_word_of_a_camera_whose_folder_is_on_another_host(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """`forget` said nothing at all of a config camera whose folder is not on this host (another host's in a
    multi-host fleet), and exited 0 as if it had erased the id. It waits for its word as for a running
    camera's: pending (on stderr, exit 1) with why while none comes, erased by its running worker once one
    (here on another folder root, as on another host) says so."""
    config = _fleet(tmp_path, valkey.url)
    cfg = yaml.safe_load(config.read_text())
    cfg["cameras"] = {"c": cfg["cameras"]["a"]}
    config.write_text(yaml.safe_dump(cfg))  # this host's view: c's folder would be runs/c, never made here
    cfg["cameras"]["c"]["output"]["dir"] = str(tmp_path / "host-b")
    other = tmp_path / "host-b.yaml"
    other.write_text(yaml.safe_dump(cfg))
    settings = load_settings(config)
    with Bridge(settings.bridge, "test", receive=False) as bridge:
        gid = bridge.allocate_global_id()

    assert main(["-q", "forget", str(gid), "--config", str(config), "--wait", "0.5"]) == 1
    out, err = capsys.readouterr()
    folder = tmp_path / "runs" / "c"
    assert (
        f"  c: pending: its folder {folder} is not on this host, and no word came from its worker within 0.5 s "
        "(--wait): its worker erases the id when it next runs (the fleet keeps the forget 2592000 s, "
        "bridge.forget_keep_s); run forget again to hear from it" in err
    ), out + err
    assert not folder.exists()

    worker = _start(other, "c", tmp_path)
    try:
        events = tmp_path / "host-b" / "c" / "events.jsonl"
        _until("an id of its own in its files", lambda: events.is_file() and _holds(events, gid + 1), 60)
        capsys.readouterr()
        assert main(["-q", "forget", str(gid + 1), "--config", str(config), "--wait", "20"]) == 0
        out, err = capsys.readouterr()
        assert "  c: erased by its running worker: " in out and not err, out + err
        assert not _holds(events, gid + 1)
    finally:
        worker.terminate()
        worker.wait(30)
    assert not folder.exists()


def test_a_forget_sent_while_a_camera_s_worker_was_down_is_erased_by_its_next_start(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forget sent while a camera's worker was down (here its status.json says it runs on another host, as a
    crash there leaves it) reached only the running workers: `forget` said the camera was pending, "the forget
    reaches it through Valkey", but a starting worker took the cameras' track state, not the forgets, and its
    files kept the person for good. The fleet keeps the forgets (signed); the next start erases the id from its
    files (an earlier run's, put aside), says it erased it, and marks how far it applied them, so the start after
    does not erase them again."""
    from test_sources import RtspServer

    clip = make_video(tmp_path / "stream.mp4", frames=750, size=(160, 120), fps=25.0, people=2)
    server = RtspServer(clip.path)
    server.start()
    config = _live_camera(tmp_path, valkey.url, server.url, clip.write_mot_gt(tmp_path / "gt.txt"))
    camera_dir = tmp_path / "runs" / "door"
    settings = load_settings(config)
    try:
        worker = _start(config, "door", tmp_path)
        try:
            _until("the worker running", lambda: worker_running(camera_dir))  # from its lock on: starting
            events = camera_dir / "events.jsonl"
            _until("id 1 in its files", lambda: events.is_file() and _holds(events, 1), 30)
        finally:
            worker.terminate()
            assert worker.wait(30) == 0
        status = json.loads((camera_dir / "status.json").read_text())
        (camera_dir / "status.json").write_text(
            json.dumps(status | {"state": "running", "host": "elsewhere"})
        )
        capsys.readouterr()
        assert main(["-q", "forget", "1", "--config", str(config), "--wait", "1"]) == 1
        assert "  door: pending: its worker did not say it erased it within 1 s" in capsys.readouterr().err
        assert _holds(camera_dir / "events.jsonl", 1)  # its worker is down: nothing erased it
        (camera_dir / "status.json").write_text(json.dumps(status))  # the host's worker is started again

        worker = _start(config, "door", tmp_path)
        try:
            _until("the worker running", lambda: worker_running(camera_dir))
            with Bridge(settings.bridge, "test", receive=False) as bridge:
                _until("its word", lambda: "door" in bridge.erase_acks(1), 30)
                said = bridge.erase_acks(1)["door"]
            assert not isinstance(said, UntrustedAck) and said.state == "erased", said
            assert not any(_holds(p, 1) for p in camera_dir.glob("**/events.jsonl"))
            assert _forgotten_lines(camera_dir, 1) == 1
            assert "forgot global ids [1]" in (tmp_path / "door.log").read_text()
            capsys.readouterr()
            assert (
                main(["-q", "forget", "1", "--config", str(config), "--wait", "20"]) == 0
            )  # again: harmless
            assert "  door: erased by its running worker: " in capsys.readouterr().out
            last = _last_stored_forget(valkey)
            _until("its mark past both forgets", lambda: _applied_upto(valkey, "door") == last, 30)
        finally:
            worker.terminate()
            assert worker.wait(30) == 0

        worker = _start(config, "door", tmp_path)
        try:
            _until("the worker running", lambda: worker_running(camera_dir))
            time.sleep(3)  # its erase thread looks every second
        finally:
            worker.terminate()
            assert worker.wait(30) == 0
    finally:
        server.stop()
    log = (tmp_path / "door.log").read_text()
    assert "forgot global ids" not in log, log[-3000:]  # applied: not again
    assert _forgotten_lines(camera_dir, 1) >= 1
