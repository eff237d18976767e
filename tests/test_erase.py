"""Erasing a forgotten global id from a camera's files: by the running worker (its files open), and by
``reid-daemon forget`` for cameras that are not running (their files closed), with the fleet report again."""

import contextlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from _unreadable import unreadable_file

from daemon.camera_lock import lock_file
from daemon.cli import main
from daemon.config import CameraConfig, OutputConfig, SourceConfig
from daemon.erase import erase_camera, erase_global_rows, erase_stopped_camera, zero_embedding_rows
from daemon.fleet_report import build_report
from daemon.identity import FrameIdentities, IdentityAssignment
from daemon.motio import read_results
from daemon.pipeline import FrameResult
from daemon.runner import worker_running
from daemon.track import TrackerUpdate
from daemon.types import Detections, Frame, Track
from daemon.worker import CameraOutputs

KEY = "0123456789abcdef0123456789abcdef"


def _frame(
    outputs: CameraOutputs,
    index: int,
    ids: dict[int, int | None],
    changed: set[int] | None = None,
    labels: dict[int, str] | None = None,
) -> None:
    """One frame: track t at its own place, embedded, with global id ids[t] (None: pending) and the name
    ``labels[t]`` where given; the tracks in ``changed`` (default: every one with an id) got that id on this
    frame."""
    image = np.zeros((48, 64, 3), np.uint8)
    n = len(ids)
    boxes = np.array([[10.0 * t, 2, 10.0 * t + 8, 22] for t in ids], np.float32)
    dets = Detections(boxes, np.full(n, 0.9, np.float32))
    tracks = [
        Track("cam", t, tuple(float(v) for v in boxes[i]), 0.9, i, embedded=True)  # type: ignore[arg-type]
        for i, t in enumerate(ids)
    ]
    changed = set(ids) if changed is None else changed
    vecs = np.stack([np.full(3, t + index / 100, np.float32) for t in ids])
    assigned = tuple(
        IdentityAssignment(
            "cam",
            t,
            g,
            (labels or {}).get(t),
            0.9,
            "fleet" if g else "pending",
            g is not None and t in changed,
        )
        for t, g in ids.items()
    )
    result = FrameResult(Frame(index, index / 10, image), dets, vecs, TrackerUpdate(tracks, []))
    outputs.write(result, "", FrameIdentities(assigned, ()), fleet_time=100.0 + index)


def _events(folder: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (folder / "events.jsonl").read_text().splitlines()]


def _outputs(tmp_path: Path) -> CameraOutputs:
    cam = CameraConfig(source=SourceConfig(uri="x.mp4"), output=OutputConfig(dir=tmp_path, progress=False))
    return CameraOutputs("cam", cam, 10.0, dim=3, fleet=True)


def test_a_running_worker_erases_a_forgotten_id_from_its_files_and_goes_on_writing(tmp_path: Path) -> None:
    """`forget 7` took person 7 out of Valkey and the workers' memory, but the camera's events.jsonl,
    embeddings.npy, identities.jsonl and global.txt kept who 7 was, where, and their embeddings."""
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: None, 2: None})  # pending: who they are is not known yet
    _frame(outputs, 1, {1: 7, 2: 8})
    _frame(outputs, 2, {1: 7, 2: 8}, changed=set())
    erased = outputs.forget([7], 3, 103.0)
    _frame(outputs, 3, {1: 9, 2: 8}, changed={1})  # the track goes on, as someone new
    outputs.close()
    folder = tmp_path / "cam"

    events = _events(folder)
    assert all(e.get("global_id") != 7 for e in events)
    person = [e for e in events if e["track_id"] == 1 and e["frame"] < 3]
    assert len(person) == 3 and all(e["forgotten"] and e["embedding"] is None for e in person)
    assert all(e["box"] for e in person)  # the track itself stays, under the camera's own id
    other = [e for e in events if e["track_id"] == 2]
    assert len(other) == 4 and not any(e.get("forgotten") for e in other)
    after = [e for e in events if e["frame"] == 3]  # written after the rewrite: nothing lost
    assert {(e["track_id"], e["global_id"]) for e in after} == {(1, 9), (2, 8)}
    rows = np.load(folder / "embeddings.npy")
    assert rows.shape == (8, 3)
    kept = [e["embedding"]["row"] for e in other]  # type: ignore[index]
    assert np.all(rows[kept] > 1.9)
    assert np.count_nonzero(np.abs(rows).sum(axis=1) == 0) == 3  # person 7's three rows
    assert erased.embeddings == 3 and erased.event_lines == 3

    ident = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [x["global_id"] for x in ident if x["event"] == "identity"] == [8, 9]
    assert [x["global_id"] for x in ident if x["event"] == "forgotten"] == [7]
    assert set(json.loads((folder / "identities.json").read_text())["identities"]) == {"8", "9"}
    res = read_results(folder / "cam.global.txt")
    assert sorted(set(res.track_id.tolist())) == [8, 9] and int((res.track_id == 8).sum()) == 4


def test_erase_reaches_the_earlier_folders_of_a_camera(tmp_path: Path) -> None:
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: None})
    _frame(outputs, 1, {1: 7})
    outputs.close()
    folder = tmp_path / "cam"
    earlier = folder / "earlier-20260101T000000Z"
    earlier.mkdir()
    for f in folder.iterdir():
        if f.is_file():
            f.rename(earlier / f.name)
    outputs = _outputs(tmp_path)
    _frame(outputs, 2, {1: 7}, changed=set())
    outputs.close()

    erased = erase_camera(folder, [7])
    assert erased.embeddings == 3 and erased.identity_lines == 1 and erased.global_rows == 3
    for f in (folder, earlier):
        assert all(e["global_id"] is None for e in _events(f))
        assert not np.load(f / "embeddings.npy").any()
        assert not (f / "cam.global.txt").read_text()
    assert erase_camera(folder, [7]).total == 0  # nothing left of 7: a second erase changes nothing


def test_erase_keeps_lines_it_cannot_read_and_rows_of_other_ids(tmp_path: Path) -> None:
    mot = tmp_path / "a.global.txt"
    mot.write_text("1,7,1,2,3,4,0.9,-1,-1,-1\n1,17,1,2,3,4,0.9,-1,-1,-1\n2,70,1,2,3,4,0.9,-1,-1,-1\n2,7,1")
    assert erase_global_rows(mot, {7}).changed == 2
    assert mot.read_text().splitlines() == ["1,17,1,2,3,4,0.9,-1,-1,-1", "2,70,1,2,3,4,0.9,-1,-1,-1"]
    npy = tmp_path / "e.npy"
    np.save(npy, np.ones((2, 3), np.float32))
    assert zero_embedding_rows(npy, [1, 5, -1]) == 1  # a row past the end (a torn file) is skipped
    assert np.load(npy).tolist() == [[1, 1, 1], [0, 0, 0]]


def test_an_embedding_file_cut_before_its_header_is_left_alone(tmp_path: Path) -> None:
    """A worker killed before its first flush leaves an empty embeddings.npy: np.load's ValueError came out
    of forget as a traceback."""
    empty = tmp_path / "embeddings.npy"
    empty.write_bytes(b"")
    assert zero_embedding_rows(empty, [0, 1]) == 0
    empty.write_bytes(b"\x93NUMPY\x01\x00")  # cut inside the header
    assert zero_embedding_rows(empty, [0]) == 0


def test_a_worker_is_running_only_while_it_holds_its_folder_s_lock(tmp_path: Path) -> None:
    """A worker killed with SIGKILL leaves status.json saying running: forget would never erase its files. A
    worker of this host is running while it holds its folder's lock (a killed one's went with it); status.json
    says so of another host's only."""
    import signal

    from _camlock import camera_lock_held

    status = tmp_path / "status.json"
    assert not worker_running(tmp_path)
    status.write_text(json.dumps({"state": "running", "pid": os.getpid(), "host": os.uname().nodename}))
    assert not worker_running(tmp_path)  # no lock held: a worker killed while its pid was reused
    with camera_lock_held(tmp_path, "cam") as worker:
        assert worker_running(tmp_path)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert not worker_running(tmp_path)
    with camera_lock_held(tmp_path, "cam", "reid-daemon forget"):
        assert not worker_running(tmp_path)  # a forget erasing the stopped camera's files
    status.write_text(json.dumps({"state": "running", "pid": 2**22 + 7, "host": "elsewhere"}))
    assert worker_running(tmp_path)  # another host's: cannot tell, taken as running
    status.write_text(json.dumps({"state": "done", "pid": os.getpid()}))
    assert not worker_running(tmp_path)


def _fleet_config(tmp_path: Path) -> Path:
    cameras = {
        n: {"source": {"uri": "x.mp4"}, "output": {"dir": str(tmp_path / "runs")}} for n in ("cam", "b")
    }
    cfg = {"bridge": {"signing_key": {"value": KEY}}, "fleet": {"enabled": True}, "cameras": cameras}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_forget_without_a_shared_valkey_erases_a_finished_fleets_files_and_report(
    tmp_path: Path, capsys: object
) -> None:
    """A fleet run on its embedded Valkey (the demo) ends with it: `forget` refused (no bridge.url), so the
    person stayed in every file and in the fleet report."""
    config = _fleet_config(tmp_path)
    runs = tmp_path / "runs"
    outputs = _outputs(runs)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    build_report({"cam": runs / "cam"}, runs)
    (runs / "fleet_metrics.txt").write_text("global IDF1 90.0\n")
    assert "| 7 |" in (runs / "report.md").read_text() or '"7"' in (runs / "report.json").read_text()

    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert (
        "erased from the cameras' files only" in out
        and "cam: erased: 1 identity lines, 1 global-id rows" in out
    )
    assert "b: " not in out  # a camera that left no folder is not named
    report = json.loads((runs / "report.json").read_text())
    assert set(report["people"]) == {"8"}
    report_md = (runs / "report.md").read_text()
    assert "global IDF1 90.0" in report_md  # the run's scores are kept, said to be the run's
    assert "from before global id 7 was forgotten" in report_md
    assert all(e["global_id"] != 7 for e in _events(runs / "cam"))
    # as a running worker does, the camera's log says when the id was forgotten (it had no such line)
    lines = [json.loads(x) for x in (runs / "cam" / "identities.jsonl").read_text().splitlines()]
    assert [(x["event"], x["global_id"]) for x in lines] == [("identity", 8), ("forgotten", 7)]


def test_forget_without_a_shared_valkey_refuses_while_a_camera_runs(tmp_path: Path, capsys: object) -> None:
    config = _fleet_config(tmp_path)
    outputs = _outputs(tmp_path / "runs")
    _frame(outputs, 0, {1: 7})
    outputs.close()
    from _camlock import camera_lock_held

    with camera_lock_held(tmp_path / "runs" / "cam", "cam"):
        assert main(["-q", "forget", "7", "--config", str(config)]) == 2
    assert "cameras cam are running" in capsys.readouterr().err  # type: ignore[attr-defined]
    assert any(e["global_id"] == 7 for e in _events(tmp_path / "runs" / "cam"))  # nothing touched


SERVICE_UID = 61240  # a uid of no one here, as a unit's DynamicUser= is


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user takes root")
def test_forget_run_as_root_leaves_the_files_it_rewrites_to_the_service_s_user(tmp_path: Path) -> None:
    """deploy/README runs `forget` as root over the folders of the units' DynamicUser: each file it rewrote became
    root's, at the file's mode (0640 under the unit's UMask=0027), so the service could no longer read it: a later
    forget reaching the camera's worker stayed 'forget not done: ... Permission denied' on /health for good. A
    file replaced keeps its owner, group and mode."""
    config = _fleet_config(tmp_path)
    runs = tmp_path / "runs"
    outputs = _outputs(runs)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    camera = runs / "cam"
    lock_file(camera).touch()  # a worker takes its folder's lock before it writes there
    for path in [camera, *camera.rglob("*")]:
        os.chown(path, SERVICE_UID, SERVICE_UID)
        os.chmod(path, 0o750 if path.is_dir() else 0o640)
    before = {p.name: p.stat() for p in camera.iterdir()}

    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    assert all(e["global_id"] != 7 for e in _events(camera))  # the files were rewritten
    after = {p.name: p.stat() for p in camera.iterdir()}
    assert set(after) == set(before)
    owners = {name: (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)) for name, s in after.items()}
    assert owners == {name: (SERVICE_UID, SERVICE_UID, 0o640) for name in before}, owners
    assert any(after[n].st_ino != before[n].st_ino for n in after)  # some were replaced, not written in place


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user takes root")
def test_a_lock_file_forget_as_root_makes_in_a_service_s_folder_is_the_service_s(tmp_path: Path) -> None:
    """`forget` run as root over a camera folder that held no lock file (a folder of a release before the
    lock, or copied in) made it root's, 0644: the camera's worker, the unit's DynamicUser, could then not open it
    to take its lock, and exited 2 ('cannot open the lock file ...: Permission denied'), not restarted. A lock
    file root makes in a folder of another user is that user's."""
    config = _fleet_config(tmp_path)
    outputs = _outputs(tmp_path / "runs")
    _frame(outputs, 0, {1: 7})
    outputs.close()
    camera = tmp_path / "runs" / "cam"
    for path in [tmp_path / "runs", camera, *camera.rglob("*")]:
        os.chown(path, SERVICE_UID, SERVICE_UID)
    assert not lock_file(camera).exists()

    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    made = lock_file(camera).stat()
    assert (made.st_uid, made.st_gid) == (SERVICE_UID, SERVICE_UID)
    assert made.st_mode & 0o600 == 0o600  # its owner, the worker, may open it to write its name in


def _keep_as_earlier(folder: Path, stamp: str) -> Path:
    """Move a camera's files into an ``earlier-*`` folder, as a restarted live camera does."""
    earlier = folder / f"earlier-{stamp}"
    earlier.mkdir()
    for f in folder.iterdir():
        if f.is_file():
            f.rename(earlier / f.name)
    return earlier


def test_erase_leaves_another_run_of_the_same_track_id_alone(tmp_path: Path) -> None:
    """A restarted camera can number a track as an earlier run did (a track still pending when it stopped is
    not in Valkey, nor is any after bridge.state_ttl_s). The pending events of a track id that ever carried
    the forgotten id were erased in every run: `forget 7` took the embeddings of person 9, seen later under
    the same track id, and kept none of the run where the id carried 7 pending."""
    folder = tmp_path / "cam"
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: None})  # track 2: still pending when the camera stopped
    outputs.close()
    earlier = _keep_as_earlier(folder, "20260101T000000Z")
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: None, 2: None})  # the new run's tracks 1 and 2: other people, pending
    _frame(outputs, 1, {1: 9, 2: 7})
    outputs.close()

    erased = erase_camera(folder, [7])
    assert erased.event_lines == 3 and erased.embeddings == 3
    before = {e["track_id"]: e for e in _events(earlier)}
    assert before[1]["forgotten"] and not before[2].get("forgotten")  # run 1's track 2 was nobody known
    now = _events(folder)
    assert not any(e.get("forgotten") for e in now if e["track_id"] == 1)  # person 9's, before and after
    assert [e.get("forgotten", False) for e in now if e["track_id"] == 2] == [True, True]
    assert np.load(earlier / "embeddings.npy").any(axis=1).tolist() == [False, True]
    assert np.load(folder / "embeddings.npy").any(axis=1).tolist() == [True, False, True, False]


def test_erase_follows_a_pending_track_across_a_rotation(tmp_path: Path) -> None:
    """output.rotate_mb moved a pending track's first events to an earlier-* folder; the fleet gave it the id
    in the new files, which go on without a second track.started."""
    cam = CameraConfig(
        source=SourceConfig(uri="x.mp4"), output=OutputConfig(dir=tmp_path, progress=False, rotate_mb=1e-6)
    )
    outputs = CameraOutputs("cam", cam, 10.0, dim=3, fleet=True)
    for i in range(25):  # the files are checked for size every 25 frames
        _frame(outputs, i, {1: None})
    _frame(outputs, 25, {1: 7})
    outputs.close()
    folder = tmp_path / "cam"
    (earlier,) = folder.glob("earlier-*")

    erased = erase_camera(folder, [7])
    assert erased.event_lines == 26 and erased.embeddings == 26
    assert all(e["forgotten"] for f in (earlier, folder) for e in _events(f))


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """Inside, ``folder`` is one its files cannot be replaced in (chattr +i for root, whom modes do not stop);
    the test is skipped where that cannot be done, and the folder made writable again after."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only here (chattr)")
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


def test_forget_that_cannot_write_a_cameras_files_says_so_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`forget` run by a user who cannot write a stopped camera's folder (not root, as deploy/README asks) ended
    in a PermissionError traceback, after the forget had gone to the fleet: nothing said which camera kept it."""
    config = _fleet_config(tmp_path)
    outputs = _outputs(tmp_path / "runs")
    _frame(outputs, 0, {1: 7})
    outputs.close()
    folder = tmp_path / "runs" / "cam"
    with _read_only(folder):
        assert main(["-q", "forget", "7", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "cam: not erased from its files: cannot write" in err and str(folder) in err, err
    assert "Traceback" not in err
    assert main(["-q", "forget", "7", "--config", str(config)]) == 0  # again, once it can: done
    assert all(e["global_id"] != 7 for e in _events(folder))


@pytest.mark.parametrize("name", ["identities.jsonl", "identities.json", "events.jsonl", "embeddings.npy"])
def test_forget_that_cannot_read_a_cameras_file_says_it_cannot_read_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A camera file `forget` could not read (an I/O error) was reported as 'cannot write' it, with 'run forget
    again as a user who can write them': advice that mends nothing for a file no user can read."""
    config = _fleet_config(tmp_path)
    outputs = _outputs(tmp_path / "runs")
    _frame(outputs, 0, {1: 7})
    outputs.close()
    path = tmp_path / "runs" / "cam" / name
    path.unlink()
    unreadable_file(path)
    assert main(["-q", "forget", "7", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"cam: not erased from its files: cannot read {path}: Input/output error;" in err, err
    assert "write" not in err and "Traceback" not in err, err


def test_forget_erases_a_camera_that_stopped_while_the_forget_was_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A camera still running when `forget` looked, stopped before the forget reached it (its bridge closed):
    neither it nor the command erased its files. The command looks again once the forget is sent. Its worker
    (a helper process holding the folder's lock) ends as forget begins to wait for the running cameras."""
    from _camlock import camera_lock_held

    from daemon import fleet_runner
    from daemon.valkey_server import EmbeddedValkey

    with EmbeddedValkey("tcp") as server:
        config = _fleet_config(tmp_path)
        doc = yaml.safe_load(config.read_text())
        doc["bridge"]["url"] = server.url
        del doc["cameras"]["b"]
        config.write_text(yaml.safe_dump(doc))
        server.client().set("reid:{default}:gid", 10)  # ids 1..10 were handed out
        outputs = _outputs(tmp_path / "runs")
        _frame(outputs, 0, {1: 7})
        outputs.close()
        with camera_lock_held(tmp_path / "runs" / "cam", "cam") as worker:
            wait = fleet_runner._Heard.wait
            running: list[dict[str, Path]] = []

            def stop_then_wait(
                heard: fleet_runner._Heard, wait_s: float
            ) -> tuple[dict[str, str], dict[str, str]]:
                running.append(dict(heard.running))
                assert worker.stdin is not None
                worker.stdin.close()  # it lets go of the lock and ends
                worker.wait(10)
                return wait(heard, wait_s)

            monkeypatch.setattr(fleet_runner._Heard, "wait", stop_then_wait)
            assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    assert running == [{"cam": tmp_path / "runs" / "cam"}]  # running at the first look
    assert "cam: erased: 1 identity lines" in capsys.readouterr().out
    assert all(e["global_id"] != 7 for e in _events(tmp_path / "runs" / "cam"))


def test_erase_reads_a_camera_s_folders_in_the_order_they_were_written(tmp_path: Path) -> None:
    # Regression: the tenth folder rotated into within one second is earlier-<time>-10, which sorted before -2
    # by name, so erase read it before the ninth: a track pending in the ninth (who it was before the fleet
    # knew) and given the forgotten id in the tenth kept its events and embeddings after `forget`.
    folder = tmp_path / "cam"
    stamp = "earlier-20270115T080000Z"
    rotated = [folder / stamp, *(folder / f"{stamp}-{n}" for n in range(2, 11))]
    for d in [*rotated, folder]:
        d.mkdir(parents=True, exist_ok=True)
        (d / "events.jsonl").write_text("", encoding="utf-8")
    pending = {
        "event": "track.update",
        "track_id": 1,
        "global_id": None,
        "embedding": {"file": "e", "row": 0},
    }
    (rotated[-2] / "events.jsonl").write_text(json.dumps(pending) + "\n", encoding="utf-8")
    named = pending | {"global_id": 7, "label": None}
    (rotated[-1] / "events.jsonl").write_text(json.dumps(named) + "\n", encoding="utf-8")

    erased = erase_camera(folder, [7])
    assert erased.event_lines == 2
    assert [e.get("forgotten") for d in rotated[-2:] for e in _events(d)] == [True, True]


def test_forget_on_a_damaged_events_file_erases_the_rest_and_names_the_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A byte of events.jsonl damaged (not UTF-8: a bad sector, a torn write) ended `forget` in a
    UnicodeDecodeError traceback, erasing nothing of the camera. Its other lines are erased as any others, the
    damaged one is kept byte for byte, and the output names the file and the line."""
    config = _fleet_config(tmp_path)
    outputs = _outputs(tmp_path / "runs")
    _frame(outputs, 0, {1: 7, 2: 8})
    _frame(outputs, 1, {1: 7, 2: 8}, changed=set())
    outputs.close()
    folder = tmp_path / "runs" / "cam"
    path = folder / "events.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = lines[1].replace(b'"cam"', b'"c\xffm"', 1)  # an event of person 8, one byte wrong
    assert damaged != lines[1]
    path.write_bytes(b"".join([lines[0], damaged, *lines[2:]]))
    table = folder / "identities.json"
    table.write_bytes(table.read_bytes().replace(b'"cam"', b'"c\xe9m"', 1))  # a stray Latin-1 byte

    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"{path}: 1 line not UTF-8 text (line 2), kept as it was" in captured.out, captured.out
    after = path.read_bytes().splitlines(keepends=True)
    assert len(after) == len(lines) and after[1] == damaged  # nothing lost, the damaged line as it was
    events = [json.loads(x) for i, x in enumerate(after) if i != 1]
    assert not any(e["global_id"] == 7 for e in events)
    assert sum(bool(e.get("forgotten")) for e in events) == 2
    assert [e["global_id"] for e in events if not e.get("forgotten")] == [8]
    assert set(json.loads(table.read_bytes().decode("utf-8", "surrogateescape"))["identities"]) == {"8"}


def _files_of(camera_dir: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(camera_dir)): f.read_bytes() for f in sorted(camera_dir.rglob("*")) if f.is_file()
    }


def test_erasing_many_ids_at_once_leaves_what_erasing_them_one_by_one_leaves(tmp_path: Path) -> None:
    """A stopping worker's pending forgets are erased together (one pass over each file, not one per id):
    its files, each id's ``forgotten`` line included, are as erasing them one by one left them. Erased
    together, an id held nowhere got a ``forgotten`` line as soon as another id of the same erase was held."""
    folder = tmp_path / "cam"
    for run, stamp in enumerate(["20260101T000000Z", "20260102T000000Z"]):
        outputs = _outputs(tmp_path)
        _frame(outputs, 0, {1: None, 2: None, 3: 20 + run})  # tracks 1 and 2 pending first
        _frame(outputs, 1, {1: 7, 2: None, 3: 20 + run}, changed={1})
        _frame(outputs, 2, {1: 8, 2: 9, 3: 20 + run}, changed={1, 2})  # track 1's id changed
        outputs.close()
        _keep_as_earlier(folder, stamp)
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: None, 4: 7})
    _frame(outputs, 1, {1: 9, 4: 7}, changed={1})
    outputs.close()
    forgotten = [7, 9, 20, 555, 8, 21]  # 555: in none of its files
    apart, together = tmp_path / "apart", tmp_path / "together"
    shutil.copytree(folder, apart / "cam")
    shutil.copytree(folder, together / "cam")

    for gid in forgotten:
        erase_stopped_camera(apart / "cam", "cam", [gid], 1234.5)
    erased = erase_stopped_camera(together / "cam", "cam", forgotten, 1234.5)

    assert erased.total and _files_of(together / "cam") == _files_of(apart / "cam")
    logged = [json.loads(x) for x in (together / "cam" / "identities.jsonl").read_text().splitlines()]
    assert [x["global_id"] for x in logged if x["event"] == "forgotten"] == [7, 9, 20, 8, 21]  # not 555


class _Killed(BaseException):
    """A SIGKILL: nothing after it runs."""


@pytest.mark.parametrize("kill_at", ["events.jsonl", "embeddings.npy"])
def test_an_erase_killed_between_its_events_and_their_embeddings_ends_the_same_done_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_at: str
) -> None:
    """An erase rewrote events.jsonl (its embedding references dropped) before it zeroed those rows in
    embeddings.npy: killed between the two, the rows stayed for good, as the erase done again found no event
    that referenced them. Killed at either step, the erase done again leaves every row of the id zeroed."""
    import daemon.erase as erase_module

    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: None, 2: 8})
    _frame(outputs, 1, {1: 7, 2: 8})
    outputs.close()
    folder = tmp_path / "cam"
    write = erase_module.atomic_write

    def killed_writing(path: Path, data: bytes) -> None:
        if path.name == kill_at:
            raise _Killed
        write(path, data)

    def killed_zeroing(path: Path, rows: object) -> int:
        raise _Killed

    monkeypatch.setattr(erase_module, "atomic_write", killed_writing)
    if kill_at == "embeddings.npy":
        monkeypatch.setattr(erase_module, "zero_embedding_rows", killed_zeroing)
    with pytest.raises(_Killed):
        erase_stopped_camera(folder, "cam", [7], 200.0)
    monkeypatch.undo()

    erase_stopped_camera(folder, "cam", [7], 200.0)
    table = np.load(folder / "embeddings.npy")
    assert table.shape[0] == 4
    events = _events(folder)
    assert all(e["global_id"] != 7 for e in events)
    kept = {e["embedding"]["row"] for e in events if isinstance(e.get("embedding"), dict)}  # type: ignore[index]
    assert kept and all(table[r].any() for r in kept)  # id 8's rows stay
    assert not np.delete(table, sorted(kept), axis=0).any()  # id 7's, and track 1's from before it, zeroed


def _earlier_runs_of_7_and_8_the_newer_unreadable(root: Path) -> tuple[Path, bytes]:
    """Camera ``cam`` under ``root`` with two earlier runs (ids 7, then 8) and a current one (8); the newer
    earlier folder's identities.jsonl, erased after the one that holds 7, made unreadable. Returns that file and
    what it held, to put back."""
    from _unreadable import unreadable_file

    folder = root / "cam"
    for stamp, gid in (("20260101T000000Z", 7), ("20260102T000000Z", 8)):
        outputs = _outputs(root)
        _frame(outputs, 0, {1: gid})
        outputs.close()
        earlier = _keep_as_earlier(folder, stamp)
    outputs = _outputs(root)
    _frame(outputs, 0, {1: 8})
    outputs.close()
    blocked = earlier / "identities.jsonl"
    kept = blocked.read_bytes()
    blocked.unlink()
    unreadable_file(blocked)
    return blocked, kept


def test_an_erase_of_pending_ids_that_fails_partway_keeps_the_ids_its_rewritten_files_held(
    tmp_path: Path,
) -> None:
    """An erase of the ids in forget-pending.json that met a file it could not read, after it had rewritten
    the files of an earlier folder, kept the ids waiting but not which of them those files held: the erase done
    again found the id in no file, and wrote no ``forgotten`` line for it. They are kept in ``held``."""

    from daemon.erase import PendingForgets, UnreadableFile

    folder = tmp_path / "cam"
    blocked, kept = _earlier_runs_of_7_and_8_the_newer_unreadable(tmp_path)
    pending = PendingForgets(folder)
    pending.add([7])

    with pytest.raises(UnreadableFile):
        pending.erase("cam", 200.0)
    assert all(e["global_id"] != 7 for e in _events(folder / "earlier-20260101T000000Z"))  # erased there
    assert pending.read() == ([7], {7})

    blocked.unlink()
    blocked.write_bytes(kept)
    erased = pending.erase("cam", 300.0)
    assert not erased.left and not pending.path.exists()
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [x for x in lines if x["event"] == "forgotten"] == [
        {"v": 1, "event": "forgotten", "camera": "cam", "global_id": 7, "frame": None, "ts": 300.0}
    ]


def test_forget_on_a_stopped_camera_with_ids_pending_says_which_it_erased_were_pending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`forget` on a stopped camera whose last stop left ids in its forget-pending.json erases them too, in
    the same pass, and reported what it erased as this forget's alone: a user read 2 identity lines erased for
    one person. It says how many of the ids erased were pending, and those are erased and leave the file."""
    from daemon.erase import PendingForgets

    config = _fleet_config(tmp_path)
    runs = tmp_path / "runs"
    outputs = _outputs(runs)
    _frame(outputs, 0, {1: 7, 2: 9, 3: 8})
    outputs.close()
    pending = PendingForgets(runs / "cam")
    pending.add([9])

    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "cam: erased: 2 identity lines" in out
    assert "with 1 global id its last stop left in forget-pending.json" in out, out
    assert not pending.path.exists()
    assert {e["global_id"] for e in _events(runs / "cam")} == {8, None}
    lines = [json.loads(x) for x in (runs / "cam" / "identities.jsonl").read_text().splitlines()]
    assert [(x["event"], x["global_id"]) for x in lines] == [
        ("identity", 8),
        ("forgotten", 9),
        ("forgotten", 7),
    ]


def test_forget_on_a_stopped_camera_that_fails_partway_keeps_the_ids_its_rewritten_files_held(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`forget` on a stopped camera with no forget-pending.json that met a file it could not read, after it
    had rewritten the files of an earlier folder, kept nothing of which ids those files held: `forget` run again
    found the id in no file, and wrote no ``forgotten`` line for it. It is kept in forget-pending.json's ``held``,
    as a running worker's and a pending erase's are, and the forget run again writes the line."""

    from daemon.erase import PendingForgets

    config = _fleet_config(tmp_path)
    folder = tmp_path / "runs" / "cam"
    blocked, kept = _earlier_runs_of_7_and_8_the_newer_unreadable(tmp_path / "runs")

    assert main(["-q", "forget", "7", "--config", str(config)]) == 1
    assert "cam: not erased from its files" in capsys.readouterr().err
    assert all(e["global_id"] != 7 for e in _events(folder / "earlier-20260101T000000Z"))  # erased there
    pending = PendingForgets(folder)
    assert pending.read() == ([7], {7})

    blocked.unlink()
    blocked.write_bytes(kept)
    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    assert not pending.path.exists()
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [(x["event"], x["global_id"]) for x in lines if x["event"] == "forgotten"] == [("forgotten", 7)]


def test_an_erase_with_a_deadline_stops_inside_one_large_folder(tmp_path: Path) -> None:
    """A stopping worker's erase (STOP_ERASE_S, under the unit's TimeoutStopSec) looked at its deadline only
    between folders, so one folder whose events.jsonl takes seconds to read ran past it by all that time (and
    the unit's SIGKILL came). It is looked at line by line: the erase stops soon after its deadline, leaving
    the folder as it was (a file is written whole or not at all), and says it is left."""
    import time

    folder = tmp_path / "cam"
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    line = json.dumps(
        {"v": 1, "event": "track.seen", "frame": 1, "track_id": 2, "global_id": 8, "x": "." * 60}
    )
    with open(folder / "events.jsonl", "a") as f:
        f.write((line + "\n") * 400_000)
    before = _files_of(folder)

    started = time.monotonic()
    erased = erase_camera(folder, [7], deadline=started + 0.2)
    took = time.monotonic() - started

    # it stopped inside the one folder (left), long before a whole read; the bound is loose for loaded machines
    assert erased.left and took < 5.0, took
    assert _files_of(folder) == before


class _Killed(BaseException):
    """A SIGKILL (or a power cut): nothing after it runs."""


def test_forget_on_a_stopped_camera_killed_partway_still_writes_the_forgotten_line_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`forget` on a stopped camera with no forget-pending.json kept which ids the files it had rewritten held
    only when it met an OSError after them: killed (or interrupted) after an earlier folder's files were
    rewritten, nothing said the id had been there, and `forget` run again found it in no file and wrote no
    ``forgotten`` line for it. The ids a file holds are kept in forget-pending.json before the file is replaced."""
    import daemon.erase as erase_module

    config = _fleet_config(tmp_path)
    folder = tmp_path / "runs" / "cam"
    for stamp, gid in (("20260101T000000Z", 7), ("20260102T000000Z", 8)):
        outputs = _outputs(tmp_path / "runs")
        _frame(outputs, 0, {1: gid})
        outputs.close()
        _keep_as_earlier(folder, stamp)
    outputs = _outputs(tmp_path / "runs")
    _frame(outputs, 0, {1: 8})
    outputs.close()
    erase_folder = erase_module.erase_folder
    done: list[Path] = []

    def killed_after_one(folder: Path, *args: object) -> None:
        if done:
            raise _Killed
        done.append(folder)
        erase_folder(folder, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(erase_module, "erase_folder", killed_after_one)
    with pytest.raises(_Killed):
        main(["-q", "forget", "7", "--config", str(config)])
    monkeypatch.undo()
    assert done == [folder / "earlier-20260101T000000Z"]
    assert all(e["global_id"] != 7 for e in _events(done[0]))  # erased there, the rest not yet

    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [(x["event"], x["global_id"]) for x in lines if x["event"] == "forgotten"] == [("forgotten", 7)]
    assert not (folder / "forget-pending.json").exists()


def _earlier_run_with_a_table(root: Path, table: str) -> Path:
    """Camera ``cam`` under ``root``: an earlier run of ids 7 and 8, whose identities.json is ``table``, and a
    current one to come. Returns the table's path."""
    folder = root / "cam"
    outputs = _outputs(root)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    earlier = _keep_as_earlier(folder, "20260101T000000Z")
    (earlier / "identities.json").write_text(table)
    return earlier / "identities.json"


WRONG_TABLES = [
    '{"v": 1, "identities": [{"7": {}}]}',
    '{"v": 1, "identities": ["7"]}',
    '{"v": 1, "identities": "7"}',
    '{"v": 1, "identities": 7}',
    '[{"identities": {"7": {}}}]',
    '{"v": 1}',
    '{"v": 1, "identities": {"7": {',
]


@pytest.mark.parametrize("table", WRONG_TABLES)
def test_forget_past_an_identity_table_of_the_wrong_shape_erases_the_rest_and_says_it_is_not_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str
) -> None:
    """An identities.json that was valid JSON but whose "identities" was a list (a string, a number, or the
    document not an object) ended `forget` in an AttributeError or TypeError traceback, the camera's newer files
    not erased; one that was not JSON at all was passed over, and the camera said erased though the table may
    hold the person. The table is named and left as it was, the camera's other files are erased, and the id is
    not erased there (exit 1), kept in forget-pending.json; forget run again once it is mended finishes it."""
    from daemon.erase import PendingForgets

    config = _fleet_config(tmp_path)
    folder = tmp_path / "runs" / "cam"
    bad = _earlier_run_with_a_table(tmp_path / "runs", table)
    outputs = _outputs(tmp_path / "runs")
    _frame(outputs, 0, {1: 7})
    outputs.close()

    assert main(["-q", "forget", "7", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"cam: not erased from its files: cannot erase {bad}: not an identity table: " in err, err
    assert "mend it or move it away, then run forget again" in err and "Traceback" not in err, err
    assert bad.read_text() == table
    for f in (bad.parent, folder):  # the other files, the newer folder's too, erased
        assert all(e["global_id"] != 7 for e in _events(f)), f
    assert PendingForgets(folder).read() == ([7], {7})

    bad.write_text(json.dumps({"v": 1, "identities": {"7": {}, "8": {}}}))  # mended
    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    assert set(json.loads(bad.read_text())["identities"]) == {"8"}
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [x["global_id"] for x in lines if x["event"] == "forgotten"] == [7]
    assert not PendingForgets(folder).path.exists()


def test_a_running_worker_past_an_identity_table_of_the_wrong_shape_erases_the_rest_and_raises(
    tmp_path: Path,
) -> None:
    """A running worker's erase crashed on such a table (an AttributeError its retry loop does not take for a
    file it cannot erase). It erases its other files and raises NotATable, an OSError naming the file: the id
    is pending, said with the file, and tried again."""
    from daemon.erase import NotATable, erase_problem

    bad = _earlier_run_with_a_table(tmp_path, WRONG_TABLES[0])
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7})
    with pytest.raises(NotATable) as caught:
        outputs.forget([7], 0, 101.0)
    _frame(outputs, 1, {1: 8}, changed={1})
    outputs.close()
    assert erase_problem(caught.value, tmp_path).startswith(f"cannot erase {bad}: not an identity table: ")
    for f in (bad.parent, tmp_path / "cam"):
        assert all(e["global_id"] != 7 for e in _events(f)), f
    assert bad.read_text() == WRONG_TABLES[0]


def test_forget_that_cannot_keep_its_note_in_forget_pending_json_rewrites_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`forget` on a stopped camera whose own folder could not be written (forget-pending.json not made there),
    its earlier folders writable, went on without its note: it erased the id from an earlier folder, then met a
    file it could not read, and `forget` run again, once both were mended, found the id in no file and wrote no
    ``forgotten`` line for it. Without its note it rewrites nothing: the camera is named, with forget-pending.json
    and why, and forget run again erases the id and writes the line."""
    config = _fleet_config(tmp_path)
    folder = tmp_path / "runs" / "cam"
    blocked, kept = _earlier_runs_of_7_and_8_the_newer_unreadable(tmp_path / "runs")
    holder = folder / "earlier-20260101T000000Z"
    before = _files_of(holder)
    with _read_only(folder):
        assert main(["-q", "forget", "7", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"cam: not erased from its files: cannot write {folder / 'forget-pending.json'}: " in err, err
    assert _files_of(holder) == before  # nothing rewritten without the note

    blocked.unlink()
    blocked.write_bytes(kept)
    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    assert all(e["global_id"] != 7 for e in _events(holder))
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [(x["event"], x["global_id"]) for x in lines if x["event"] == "forgotten"] == [("forgotten", 7)]
    assert not (folder / "forget-pending.json").exists()


@pytest.mark.parametrize("path", ["running", "stopped"])
def test_an_id_only_an_earlier_run_held_gets_its_forgotten_line_from_a_running_worker_as_when_stopped(
    tmp_path: Path, path: str
) -> None:
    """A running worker wrote a ``forgotten`` line only for the ids its own run had seen, while `forget` on the
    stopped camera wrote one for each id its files held, an earlier run's too: an auditor reading identities.jsonl
    saw person 7's data erased from an earlier run's folder with no word of it, or with one, by whether the
    camera ran. Both write the line wherever the id's data was erased (a line, row or table entry of any of its
    folders: an id only an earlier run's identities.json held too), and none for an id no file held."""
    folder = tmp_path / "cam"
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    earlier = _keep_as_earlier(folder, "20260101T000000Z")
    table = json.loads((earlier / "identities.json").read_text())
    table["identities"]["9"] = table["identities"]["8"]  # 9: in its table alone
    (earlier / "identities.json").write_text(json.dumps(table))
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 8})
    if path == "running":
        erased = outputs.forget([7, 9, 555], 0, 101.0)
        _frame(outputs, 1, {1: 8}, changed=set())
        outputs.close()
    else:
        outputs.close()
        erased = erase_stopped_camera(folder, "cam", [7, 9, 555], 101.0)
    frame = 0 if path == "running" else None

    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [(x["global_id"], x["frame"]) for x in lines if x["event"] == "forgotten"] == [
        (7, frame),
        (9, frame),
    ]
    assert erased.held == {7, 9}
    assert set(json.loads((earlier / "identities.json").read_text())["identities"]) == {"8"}
    assert all(e["global_id"] != 7 for e in _events(earlier))


def _held_by(camera_dir: Path, gid: int) -> list[str]:
    """Where a camera's folders still hold ``gid`` (its boxes under it, its embedding, its table entry or
    label): each file and line, or table entry, named; what a privacy officer checks after a forget. The
    ``forgotten`` lines that say when it was forgotten are not the person's data."""
    found: list[str] = []
    for f in sorted(camera_dir.rglob("*")):
        if f.name.endswith(".jsonl"):
            for n, line in enumerate(f.read_text().splitlines()):
                rec = json.loads(line)
                if rec.get("global_id") == gid and rec.get("event") != "forgotten":
                    found.append(f"{f}:{n + 1}")
        elif f.name == "identities.json" and str(gid) in json.loads(f.read_text())["identities"]:
            found.append(f"{f}: table entry")
        elif f.name.endswith(".global.txt"):
            rows = [r.split(",") for r in f.read_text().splitlines()]
            found += [f"{f}:{n + 1}" for n, r in enumerate(rows) if int(float(r[1])) == gid]
    return found


def _inject_7(earlier: Path, name: str) -> None:
    """Make ``earlier``'s file ``name`` (and no other there) hold person 7 beside the 8 the run wrote."""
    path = earlier / name
    if name == "identities.json":
        table = json.loads(path.read_text())
        table["identities"]["7"] = table["identities"]["8"]
        path.write_text(json.dumps(table))
        return
    lines = path.read_text().splitlines(keepends=True)
    if name.endswith(".global.txt"):
        path.write_text("".join([*lines, lines[-1].replace(",8,", ",7,", 1)]))
        return
    of_8 = next(x for x in lines if json.loads(x).get("global_id") == 8)
    path.write_text("".join([*lines, json.dumps(json.loads(of_8) | {"global_id": 7}) + "\n"]))


@pytest.mark.parametrize("name", ["identities.jsonl", "identities.json", "events.jsonl", "cam.global.txt"])
def test_forget_killed_as_it_replaces_the_only_file_holding_the_id_writes_its_line_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Each file an erase replaces keeps the ids it held in forget-pending.json first (``Erased.keep``), so a
    forget killed just after replacing it leaves a note that the id was there, and forget run again writes its
    ``forgotten`` line though no file holds the id any more. Each kind of file alone holds person 7 here, in an
    earlier folder; the tests before had identities.jsonl hold the id with the others, so a file that replaced
    itself without the note (the table, the global rows, the events), or with it after the replace, passed.
    Kills: erase_table's, erase_global_rows' and erase_events' keep dropped; erase_table's keep after its write."""
    import daemon.erase as erase_module

    config = _fleet_config(tmp_path)
    runs = tmp_path / "runs"
    folder = runs / "cam"
    outputs = _outputs(runs)
    _frame(outputs, 0, {1: None, 2: 8})
    _frame(outputs, 1, {1: 9, 2: 8})
    outputs.close()
    earlier = _keep_as_earlier(folder, "20260101T000000Z")
    _inject_7(earlier, name)
    outputs = _outputs(runs)
    _frame(outputs, 0, {2: 8})
    outputs.close()
    assert _held_by(folder, 7) == [
        f"{earlier / name}: table entry" if name == "identities.json" else _held_by(earlier, 7)[0]
    ]
    write = erase_module.atomic_write

    def killed_once_written(path: Path, data: bytes) -> None:
        write(path, data)
        if path == earlier / name:
            raise _Killed

    monkeypatch.setattr(erase_module, "atomic_write", killed_once_written)
    with pytest.raises(_Killed):
        main(["-q", "forget", "7", "--config", str(config)])
    monkeypatch.undo()
    assert _held_by(folder, 7) == []  # erased there, and nowhere else did it hold 7

    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [(x["event"], x["global_id"]) for x in lines if x["event"] == "forgotten"] == [("forgotten", 7)]
    assert not (folder / "forget-pending.json").exists()
    assert _held_by(earlier, 8) and _held_by(earlier, 9)  # the others stay


@pytest.mark.parametrize("where", ["same file", "newer folder"])
def test_an_id_seen_again_after_its_forgotten_line_gets_a_new_one_once_erased(
    tmp_path: Path, where: str
) -> None:
    """An id whose forgotten line is the last word on it gets no second one (a running worker wrote it, its
    erase deferred): but where identity lines of the id came after that line (the id seen again, in the same
    identities.jsonl or a newer folder's), what was erased now is said by none, so a new one is written. Kills:
    an identity line not taking back the id's ``said`` (in erase_identity_lines), a newer folder's identity
    lines not taking back an older folder's (in erase_folder)."""
    from daemon.fleet import forgotten_line

    folder = tmp_path / "cam"
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    log = folder / "identities.jsonl"
    of_7 = next(x for x in log.read_text().splitlines(keepends=True) if json.loads(x)["global_id"] == 7)
    with open(log, "a") as f:
        f.write(forgotten_line("cam", 7, 0, 100.5))
        if where == "same file":
            f.write(of_7)
    if where == "newer folder":
        _keep_as_earlier(folder, "20260101T000000Z")
        outputs = _outputs(tmp_path)
        _frame(outputs, 1, {1: 7, 2: 8})
        outputs.close()

    erase_stopped_camera(folder, "cam", [7, 8], 300.0)
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [(x["global_id"], x["ts"]) for x in lines if x["event"] == "forgotten"][-2:] == [
        (7, 300.0),
        (8, 300.0),
    ]
    assert _held_by(folder, 7) == [] and _held_by(folder, 8) == []


@pytest.mark.parametrize("path", ["running", "stopped"])
def test_a_forgotten_person_s_name_is_in_no_file_of_the_camera_after_the_erase(
    tmp_path: Path, path: str
) -> None:
    """A named person (a gallery label, or one the fleet learned) has the name in their events, identity lines
    and table entry; no test had a label, so an erase that took the global id and the embedding out of the
    events but left the name passed. After the erase no file of the camera holds the name, in any folder; the
    other person keeps theirs. Kills: erase_events leaving ``label`` as it was."""
    folder = tmp_path / "cam"
    names = {1: "Alice Example", 2: "Bob Other"}
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: 8}, labels=names)
    _frame(outputs, 1, {1: 7, 2: 8}, changed=set(), labels=names)
    outputs.close()
    earlier = _keep_as_earlier(folder, "20260101T000000Z")
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: 8}, labels=names)
    if path == "running":
        outputs.forget([7], 0, 101.0)
        _frame(outputs, 1, {2: 8}, changed=set(), labels=names)
        outputs.close()
    else:
        outputs.close()
        erase_stopped_camera(folder, "cam", [7], 101.0)

    files = [f for f in folder.rglob("*") if f.is_file()]
    assert [str(f) for f in files if b"Alice" in f.read_bytes()] == []
    for f in (earlier, folder):
        assert any(e.get("label") == "Bob Other" for e in _events(f))
        assert b"Bob Other" in (f / "identities.jsonl").read_bytes()
        assert b"Bob Other" in (f / "identities.json").read_bytes()
    assert _held_by(folder, 7) == []


def _torn(line: bytes, at: bytes) -> bytes:
    """``line`` cut just after ``at`` (its first): a line a kill (or a power cut) tore as it was written."""
    return line[: line.index(at) + len(at)]


def test_forget_erases_a_person_from_lines_a_kill_tore_as_it_wrote_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker killed (SIGKILL, a power cut) as it wrote leaves a torn last line in events.jsonl and
    identities.jsonl, which a restart moves into an earlier-* folder. The erase read only whole records and kept
    any other line as it was, so a torn line of the person, which holds their global id and their name (and an
    event's embedding row), stayed after `forget`. Such a line naming the id is dropped, its row zeroed; torn
    lines of others are kept as they were."""
    config = _fleet_config(tmp_path)
    runs = tmp_path / "runs"
    folder = runs / "cam"
    outputs = _outputs(runs)
    _frame(outputs, 0, {1: 7, 2: 8}, labels={1: "Alice Example", 2: "Bob Other"})
    outputs.close()
    events, log = folder / "events.jsonl", folder / "identities.jsonl"
    of_7, of_8 = (
        next(x for x in events.read_bytes().splitlines() if b'"global_id":%d' % g in x) for g in (7, 8)
    )
    row_7 = json.loads(of_7)["embedding"]["row"]
    (ident_7,) = (x for x in log.read_bytes().splitlines() if b'"global_id":7' in x)
    with open(events, "ab") as f:  # the frame's events again, torn after person 7's embedding row
        f.write(of_8 + b"\n" + _torn(of_7, b'"row":%d' % row_7))
    with open(log, "ab") as f:
        f.write(_torn(ident_7, b"Alice"))
    earlier = _keep_as_earlier(folder, "20260101T000000Z")
    outputs = _outputs(runs)
    _frame(outputs, 0, {2: 8}, labels={2: "Bob Other"})
    outputs.close()

    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    lines_of_7 = [
        f"{f}: {x!r}"
        for f in folder.rglob("*")
        if f.is_file()
        for x in f.read_bytes().splitlines()
        if b"Alice" in x or (b'"global_id":7' in x and b'"event":"forgotten"' not in x)
    ]
    assert lines_of_7 == []
    assert not np.load(earlier / "embeddings.npy")[row_7].any()
    assert (earlier / "events.jsonl").read_bytes().splitlines()[-1] == of_8  # the others' lines kept
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [(x["event"], x["global_id"]) for x in lines] == [("identity", 8), ("forgotten", 7)]


def test_forget_writes_its_forgotten_line_on_a_line_of_its_own_after_a_torn_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stopped camera's identities.jsonl that ends with a line a kill tore (of another person) got the
    ``forgotten`` line appended to it, on the same line: neither read as a record, so the word that the id was
    erased was lost to every reader (and the erase after, not seeing it, wrote it again). It goes on a line of
    its own; the torn line stays as it was."""
    config = _fleet_config(tmp_path)
    folder = tmp_path / "runs" / "cam"
    outputs = _outputs(tmp_path / "runs")
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    log = folder / "identities.jsonl"
    (of_8,) = (x for x in log.read_bytes().splitlines() if b'"global_id":8' in x)
    torn = _torn(of_8, b'"label"')
    with open(log, "ab") as f:
        f.write(torn)

    assert main(["-q", "forget", "7", "--config", str(config)]) == 0
    lines = log.read_bytes().splitlines()
    assert lines[-2] == torn
    last = json.loads(lines[-1])
    assert (last["event"], last["global_id"], last["frame"]) == ("forgotten", 7, None)


@pytest.mark.parametrize("ended", [True, False])
def test_erase_leaves_another_run_s_pending_track_alone_when_the_id_comes_with_its_track_s_start(
    tmp_path: Path, ended: bool
) -> None:
    """The events a track had pending before a ``track.started`` of the same track id are another life's (a
    restarted camera can number a track as an earlier run did); the erase kept them only where the new life
    started pending: one that started with the forgotten id already took the earlier run's pending events, and
    zeroed their embeddings, someone the fleet never knew, and a ``track.ended`` between did not stop it. Both
    begin or end a life: the other person's events and embeddings stay."""
    folder = tmp_path / "cam"
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {2: None})
    _frame(outputs, 1, {2: None})
    if ended:
        outputs.finish([2], 2, 0.2)
    outputs.close()
    earlier = _keep_as_earlier(folder, "20260101T000000Z")
    before = _files_of(earlier)
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {2: 7})  # the new run's track 2: person 7 from its first frame
    outputs.close()

    erased = erase_camera(folder, [7])
    assert erased.event_lines == 1 and erased.embeddings == 1
    assert _files_of(earlier) == before
    assert [e.get("forgotten") for e in _events(folder)] == [True]


def test_an_erase_with_a_deadline_stops_inside_a_large_global_id_file(tmp_path: Path) -> None:
    """The deadline is looked at line by line in each file rewritten, not only as the events are read first
    for who tracks were before their id (``pending_lines``): a <camera>.global.txt (a row per frame and
    track, a camera's largest file) of 400k rows was read and rewritten whole past the deadline, the erase
    then said done. Kills: rewrite_lines without its check."""
    import time

    folder = tmp_path / "cam"
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    with open(folder / "cam.global.txt", "a") as f:
        f.write("".join(f"{n},{7 + n % 2},1,2,3,4,0.9,-1,-1,-1\n" for n in range(400_000)))
    rows = (folder / "cam.global.txt").read_bytes()

    started = time.monotonic()
    erased = erase_camera(folder, [7], deadline=started + 0.2)
    took = time.monotonic() - started

    assert erased.left and took < 5.0, took  # the bound is loose for loaded machines
    assert (folder / "cam.global.txt").read_bytes() == rows  # left as it was (the small files before, erased)


def test_an_erase_cut_short_by_its_deadline_writes_no_forgotten_line_until_it_is_done(tmp_path: Path) -> None:
    """A stopping worker's erase that its deadline cut short writes no ``forgotten`` line yet, though an
    earlier folder it erased held the id: the id is in the camera's own folder still, and the line says when it
    was erased. The erase done again writes it, once. Kills: the line written for an erase left (``left``)."""
    import time

    from daemon.erase import PendingForgets

    folder = tmp_path / "cam"
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    earlier = _keep_as_earlier(folder, "20260101T000000Z")
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    with open(
        folder / "cam.global.txt", "a"
    ) as f:  # the camera's own folder, erased last, too large for 0.2 s
        f.write("".join(f"{n},{7 + n % 2},1,2,3,4,0.9,-1,-1,-1\n" for n in range(400_000)))
    pending = PendingForgets(folder)
    pending.add([7])

    erased = pending.erase("cam", 200.0, deadline=time.monotonic() + 0.2)
    assert erased.left and _held_by(earlier, 7) == [] and _held_by(folder, 7)
    assert b'"forgotten"' not in (folder / "identities.jsonl").read_bytes()
    assert pending.read() == ([7], {7})

    erased = pending.erase("cam", 300.0)
    assert not erased.left and _held_by(folder, 7) == [] and not pending.path.exists()
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [(x["event"], x["global_id"], x["ts"]) for x in lines if x["event"] == "forgotten"] == [
        ("forgotten", 7, 300.0)
    ]


def test_forget_pending_json_keeps_the_newest_ids_past_its_bound_and_takes_only_whole_numbers(
    tmp_path: Path,
) -> None:
    """forget-pending.json holds at most MAX_PENDING_FORGETS ids, the newest (as the worker's memory keeps
    them: the oldest were logged as they went), and reads only a list of whole numbers: a hand edit or damage
    that made an id ``true`` would have erased person 1. No test had either. Kills: the oldest kept, and
    isinstance taking a bool for an id."""
    from daemon.erase import PendingForgets, UnreadableFile
    from daemon.fleet import MAX_PENDING_FORGETS

    pending = PendingForgets(tmp_path)
    ids = list(range(1, MAX_PENDING_FORGETS + 3))
    assert pending.add(ids) == ids[2:]
    assert pending.read() == (ids[2:], set())
    pending.path.write_text(json.dumps({"ids": [5, True], "held": []}))
    with pytest.raises(UnreadableFile, match="not a list of pending forgotten ids"):
        pending.read()


@pytest.mark.parametrize("name", ["events.jsonl", "identities.json"])
def test_an_erase_that_cannot_write_a_file_whole_leaves_it_as_it_was(tmp_path: Path, name: str) -> None:
    """Each file is rewritten through a temporary file then renamed, so a write that fails partway (a disk
    that fills; here a file-size limit, EFBIG) leaves the file as it was, the other people's events with it:
    the tests before checked that only by replacing atomic_write itself. Kills: the rewrite, and the table,
    written in place (the file cut at the limit, the rest of its people lost)."""
    import resource
    import sys

    import daemon

    folder = tmp_path / "cam"
    outputs = _outputs(tmp_path)
    _frame(outputs, 0, {1: 7, 2: 8})
    outputs.close()
    if name == "events.jsonl":
        line = json.dumps(
            {"v": 1, "event": "track.seen", "frame": 1, "track_id": 2, "global_id": 8, "x": "." * 60}
        )
        with open(folder / name, "a") as f:
            f.write((line + "\n") * 20_000)
    else:
        table = json.loads((folder / name).read_text())
        table["identities"] |= {str(g): table["identities"]["8"] for g in range(1000, 21_000)}
        (folder / name).write_text(json.dumps(table, indent=1))
    before = (folder / name).read_bytes()
    assert len(before) > 2**21  # twice the limit

    def limited() -> None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    code = "import sys, pathlib, daemon.erase as e; e.erase_stopped_camera(pathlib.Path(sys.argv[1]), 'cam', [7], 1.0)"
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        env={**os.environ, "PYTHONPATH": str(Path(daemon.__file__).parents[1])},
        preexec_fn=limited,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "File too large" in done.stderr, done.stderr
    assert (folder / name).read_bytes() == before
    assert [f.name for f in folder.iterdir() if f.name.endswith(".tmp")] == []


def test_a_running_worker_s_retry_writes_the_line_for_an_id_its_failed_try_erased(tmp_path: Path) -> None:
    """A running worker's erase that failed partway (a file it could not read) after rewriting an earlier
    folder that alone held the id keeps that in forget-pending.json's ``held``; its retry, once the file is
    mended, finds the id in no file, and writes its ``forgotten`` line from that note (``held``), as a stopped
    camera's erase does. No test had a running worker's retry find nothing. Kills: CameraOutputs.forget
    without ``held``."""
    from daemon.erase import PendingForgets, UnreadableFile

    folder = tmp_path / "cam"
    blocked, kept = _earlier_runs_of_7_and_8_the_newer_unreadable(tmp_path)
    outputs = _outputs(tmp_path)  # the camera runs again: person 8
    _frame(outputs, 0, {1: 8})
    pending = PendingForgets(folder)
    for index in (0, 1):  # as the worker's _erase_forgotten: noted first, then erased, the held note with it
        waiting = pending.add([7])
        _, held = pending.read()
        if index == 0:
            with pytest.raises(UnreadableFile):
                outputs.forget([7], index, 100.0 + index, held, pending.keeper(waiting, held))
            blocked.unlink()
            blocked.write_bytes(kept)
        else:
            assert held == {7}
            erased = outputs.forget([7], index, 100.0 + index, held, pending.keeper(waiting, held))
    outputs.close()

    assert erased.total == 0 and _held_by(folder, 7) == []
    lines = [json.loads(x) for x in (folder / "identities.jsonl").read_text().splitlines()]
    assert [(x["global_id"], x["frame"]) for x in lines if x["event"] == "forgotten"] == [(7, 1)]
