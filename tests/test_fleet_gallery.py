"""A running fleet camera follows its gallery file (gallery.path): a real worker process, a real embedder, and
``reid-daemon enroll`` / ``unenroll`` run on the file while it runs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from _ops import wait_until
from _procs import daemon_json
from _video import SyntheticClip, make_video

from daemon.cli import main
from daemon.config import Settings
from daemon.errors import ConfigError
from daemon.fleet import (
    GALLERY_CHECK_S,
    IDLE_EXPIRY_S,
    MAX_LISTED_LABELS,
    FleetLink,
    GalleryWatch,
    file_state,
    gallery_size,
    listed,
)
from daemon.gallery import Gallery
from daemon.outputs import json_object
from daemon.valkey_server import EmbeddedValkey

ROOT = Path(__file__).resolve().parents[1]
NAME = "person one"  # person 1 of the clip, enrolled from crops of it


def _lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` written so far (none before it is there; a line being written is left out)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _write_crops(clip: SyntheticClip, person: int, dest: Path, frames: range) -> Path:
    """Crops of ``person`` cut from the clip's decoded frames ``frames``, as enroll's reference folder."""
    dest.mkdir(parents=True)
    cap = cv2.VideoCapture(str(clip.path))
    try:
        for index in range(frames.stop):
            ok, image = cap.read()
            assert ok, f"frame {index} of {clip.path}"
            if index in frames:
                (box,) = [b for b in clip.truth[index] if b.id == person]
                x1, y1, x2, y2 = box.xyxy
                cv2.imwrite(str(dest / f"{NAME.replace(' ', '_')}--{index}.jpg"), image[y1:y2, x1:x2])
    finally:
        cap.release()
    return dest


def _config(tmp_path: Path, clip: SyntheticClip, model: Path, gallery: Path) -> Path:
    """One camera replaying the clip at its own pace, with its true boxes, the real embedder, its own Valkey."""
    camera = {
        "source": {"uri": str(clip.path)},
        "detector": {"type": "ground-truth", "path": str(clip.write_mot_gt(tmp_path / "gt.txt"))},
        "embedder": {"model": str(model)},
        "output": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    data = {
        "fleet": {"enabled": True, "replay_speed": 1.0},
        "bridge": {"allow_unsigned": True},
        "identity": {"min_observations": 2, "new_min_observations": 2},
        "runtime": {"providers": ["CPUExecutionProvider"], "intra_op_threads": 1},
        "gallery": {"path": str(gallery)},
        "cameras": {"hall": camera},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_running_camera_stops_naming_a_person_unenrolled_from_its_gallery_and_names_them_enrolled_again(
    tmp_path: Path, mobilenet_model: Path
) -> None:
    """A fleet camera read its gallery.path once, at start: a person unenrolled (someone who left, a wrong
    enrolment, a request for erasure) was named on every frame until the worker was restarted. A real worker
    replays a clip whose person 1 is enrolled from crops of it; once its files name them, ``unenroll`` removes
    them from the file. The worker's own files show the name given before the change, and never after it: the
    track keeps its global id, unnamed (identities.jsonl says so on the frame it changed, identities.json no
    longer names the id), within seconds of the unenroll; the log says what changed. ``enroll --append`` of
    the crops then names the live track again, with its id (it stayed unnamed to its end: the name's proposal
    adopted its own id, which counted as holding it)."""
    clip = make_video(tmp_path / "clip.mp4", frames=900, size=(320, 240), fps=10.0, people=2)
    gallery = tmp_path / "people.npz"
    cfg = _config(tmp_path, clip, mobilenet_model, gallery)
    refs = _write_crops(clip, 1, tmp_path / "refs", range(0, 60, 10))
    enroll = ["enroll", str(refs), "--gallery", str(gallery), "--config", str(cfg), "--threshold", "0.8"]
    assert main([*enroll, "--no-progress"]) == 0
    folder = tmp_path / "runs" / "hall"
    events, identities = folder / "events.jsonl", folder / "identities.jsonl"
    said = tmp_path / "worker.log"
    with said.open("wb") as fh:
        cmd = [*daemon_json("run", "--config", str(cfg), "--camera", "hall"), "--no-progress"]
        worker = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=fh, stderr=fh)
    try:
        named_on = lambda: [e for e in _lines(events) if e.get("label") == NAME]  # noqa: E731
        wait_until(lambda: len(named_on()) >= 20, 120, f"{NAME} named on 20 frames")
        (gid,) = {e["global_id"] for e in named_on()}
        assert main(["unenroll", NAME, "--gallery", str(gallery)]) == 0
        unenrolled = max(e["frame"] for e in _lines(events))  # the last frame written before it
        print(f"\n{NAME} unenrolled after frame {unenrolled}")

        def unnamed() -> list[dict[str, Any]]:  # events.jsonl is flushed on every frame
            return [e for e in _lines(events) if e["frame"] > unenrolled and e.get("label") is None]

        wait_until(lambda: any(e.get("global_id") == gid for e in unnamed()), 60, f"{NAME} unnamed")
        changed = min(e["frame"] for e in unnamed() if e.get("global_id") == gid)  # its first event since
        wait_until(lambda: max(e["frame"] for e in _lines(events)) > changed + 50, 60, "50 frames more")
        table = json_object(folder / "identities.json")["identities"]  # rewritten as the name went
        assert str(gid) in table and table[str(gid)]["label"] is None, table
        assert main([*enroll, "--append", "--no-progress"]) == 0  # enrolled again: named again
        appended = max(e["frame"] for e in _lines(events))
        wait_until(lambda: max(e["frame"] for e in named_on()) > appended, 60, f"{NAME} named again")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, said.read_text()[-3000:]
    finally:
        worker.kill()
    log = said.read_text()
    named = [e for e in _lines(events) if e.get("label") == NAME]
    assert {e["global_id"] for e in named} == {gid}
    renamed = min(e["frame"] for e in named if e["frame"] > changed)
    assert min(e["frame"] for e in named) < unenrolled - 10  # given before the change ...
    assert max(e["frame"] for e in named if e["frame"] < renamed) < changed, log[-3000:]  # ... not after it
    assert changed - unenrolled <= 10 * 10, (changed, unenrolled)  # within 10 s of frames (checked every 2 s)
    between = [e for e in _lines(events) if changed <= e["frame"] < renamed and e.get("global_id") == gid]
    assert len(between) >= 5 and all(e["label"] is None for e in between)  # the same person, the same id
    assert appended < renamed <= appended + 10 * 10, (appended, renamed)  # enrolled again: named again
    line = [r for r in _lines(identities) if unenrolled < r["frame"] <= changed and r["global_id"] == gid]
    assert len(line) == 1 and (line[0]["label"], line[0]["source"]) == (None, "fleet"), line
    again = [r for r in _lines(identities) if r["frame"] > changed and r["global_id"] == gid]
    assert [(r["label"], r["source"]) for r in again] == [(NAME, "gallery")], again
    assert appended < again[0]["frame"] <= renamed, (appended, again, renamed)
    assert f"labels added: none; removed: '{NAME}'" in log, log[-3000:]
    assert "now no entries (before: 6 entries of 1 label)" in log, log[-3000:]
    assert f"now 6 entries of 1 label (before: no entries); labels added: '{NAME}'; removed: none" in log


# ------------------------------------------------------------------ FleetLink on a real Valkey, arrays for looks

DIM = 32
KEY = "k" * 32
MINE = "mine.onnx sha256:0123456789abcdef; crops 256x128, flip"
OTHER = "other.onnx sha256:fedcba9876543210; crops 256x128, flip"


@pytest.fixture
def valkey() -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey("tcp").start()
    yield server
    server.close()


def _people(path: Path, signature: str = MINE, dim: int = DIM, **enrolled: int) -> Path:
    """Save a gallery of ``enrolled`` (name: which of LOOKS) made by ``signature`` at ``path``, by a rename."""
    gallery = Gallery(dim)
    gallery.made_by(signature)
    for name, look in enrolled.items():
        gallery.add(name, np.eye(dim, dtype=np.float32)[look])
    return gallery.save(path)


def _link_settings(tmp_path: Path, url: str, gallery: Path, lockstep: bool = False) -> Settings:
    data = {
        "fleet": {"enabled": True, "clock": "wall", "lockstep": lockstep},
        "bridge": {"url": url, "signing_key": {"value": KEY}, "reconnect_max_s": 0.5},
        "identity": {"min_observations": 2, "new_min_observations": 2},
        "gallery": {"path": str(gallery)},
        "cameras": {c: {"source": {"uri": str(tmp_path / f"{c}.mp4")}} for c in ("a", "b")},
    }
    return Settings.model_validate(data)


def _said(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], bool]:
    return lambda: any(text in r.getMessage() for r in caplog.records)


def test_a_gallery_file_that_cannot_be_taken_is_logged_naming_it_and_the_camera_keeps_its_gallery(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """The file a running camera follows may be replaced by one it cannot use: cut short or not a gallery, gone,
    enrolled with another model, of another width. Each is logged as an error naming gallery.path and the file,
    once, and the camera keeps matching the gallery it had; a good file after them is taken."""
    path = _people(tmp_path / "people.rdg", alice=0, bob=1)
    link = FleetLink(_link_settings(tmp_path, valkey.url, path), "a", DIM, signature=MINE).start(live=True)
    held = link.gallery
    assert held is not None and held.unique_labels == ["alice", "bob"]
    kept = "the camera keeps the gallery it had (2 entries of 2 labels)"
    try:
        with caplog.at_level(logging.INFO, logger="daemon.fleet"):
            cut = tmp_path / "cut.rdg"
            cut.write_bytes(path.read_bytes()[:40])
            cut.replace(path)
            wait_until(_said(caplog, f"gallery.path: {path}: truncated"), 10, "the cut file logged")
            path.unlink()
            wait_until(_said(caplog, f"gallery.path: local gallery file not found: {path}"), 10, "gone")
            _people(path, OTHER, alice=0)
            wait_until(
                _said(caplog, f"gallery.path: {path}: the gallery was enrolled with other.onnx"), 10, "model"
            )
            _people(path, MINE, dim=8, alice=0)
            wait_until(_said(caplog, f"gallery.path: {path} holds 8-d embeddings"), 10, "width")
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 4 and all(kept in r.getMessage() for r in errors), caplog.text
            assert link.gallery is held and link.resolver.gallery is held
            _people(path, MINE, alice=0, carl=2)
            wait_until(_said(caplog, "labels added: 'carl'; removed: 'bob'"), 10, "the good file taken")
        assert link.gallery is not None and link.gallery.unique_labels == ["alice", "carl"]
        assert link.resolver.gallery is link.gallery
    finally:
        link.close()


def test_a_relative_gallery_path_not_found_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A camera's relative gallery.path is taken from the worker's working directory (a unit's, not the config's
    folder): its error said only 'gallery.path: local gallery file not found: people.rdg'."""
    monkeypatch.chdir(tmp_path)
    settings = _link_settings(tmp_path, "redis://127.0.0.1:1", Path("people.rdg"))
    with pytest.raises(ConfigError) as e:
        FleetLink(settings, "a", DIM, signature=MINE)
    assert str(e.value) == (
        f"gallery.path: local gallery file not found: people.rdg (looked for at {tmp_path / 'people.rdg'}: a "
        "relative path is taken from the working directory)"
    )


def test_a_replay_in_lockstep_keeps_the_gallery_it_started_with(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """A replay in lockstep gives the same ids on every run: it keeps the gallery it started with, as it keeps
    its cameras (a file changed during it would name people at whatever frame the check fell on); out of
    lockstep a replay follows the file as a live camera does."""
    for lockstep in (True, False):
        path = _people(tmp_path / f"people-{lockstep}.rdg", alice=0, bob=1)
        settings = _link_settings(tmp_path, valkey.url, path, lockstep=lockstep)
        link = FleetLink(settings, "a", DIM, signature=MINE).start(live=False)
        try:
            with caplog.at_level(logging.INFO, logger="daemon.fleet"):
                _people(path, alice=0)
                if lockstep:
                    time.sleep(2 * GALLERY_CHECK_S + IDLE_EXPIRY_S)
                    assert link.resolver.gallery is not None
                    assert link.resolver.gallery.unique_labels == ["alice", "bob"]
                else:
                    wait_until(_said(caplog, "removed: 'bob'"), 10, "the replay out of lockstep following")
        finally:
            link.close()


def test_the_gallery_watch_reads_a_file_replaced_by_a_rename_once_even_at_the_same_time_and_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """GalleryWatch.changed on real files: nothing while the file is as last read; a file replaced by a rename
    (every writer saves so) is read once, even where its modification time and size are the old one's (a new
    inode); a file that cannot be taken is logged once, not on every check."""
    path = _people(tmp_path / "people.rdg", alice=0, bob=1)
    settings = _link_settings(tmp_path, "redis://127.0.0.1:6379", path)
    watch = GalleryWatch(settings, "a", DIM, MINE, file_state(path))
    held = Gallery.load(path)
    assert watch.changed(held) is None and watch.changed(held) is None  # as read
    was = path.stat()
    fresh = _people(tmp_path / "new.rdg", alice=0, cat=1)  # the same size: two rows, names of one length
    os.utime(fresh, ns=(was.st_atime_ns, was.st_mtime_ns))
    assert fresh.stat().st_size == was.st_size
    fresh.replace(path)
    taken = watch.changed(held)
    assert taken is not None and taken.unique_labels == ["alice", "cat"]
    assert watch.changed(taken) is None
    with caplog.at_level(logging.INFO, logger="daemon.fleet"):
        path.write_bytes(b"not a gallery")
        assert watch.changed(taken) is None and watch.changed(taken) is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"gallery.path: {path}" in errors[0], errors


def test_a_gallery_change_is_logged_with_its_sizes_and_at_most_max_listed_labels() -> None:
    names = [f"p{i:02d}" for i in range(MAX_LISTED_LABELS + 1)]
    assert listed([]) == "none" and listed(names[:1]) == "'p00'"
    assert listed(names[:MAX_LISTED_LABELS]) == ", ".join(repr(n) for n in names[:MAX_LISTED_LABELS])
    assert listed(names) == ", ".join(repr(n) for n in names[:MAX_LISTED_LABELS]) + " and 1 more"
    one, two = Gallery(DIM), Gallery(DIM)
    one.add("alice", np.eye(DIM, dtype=np.float32)[0])
    two.add_many(["alice", "bob"], np.eye(DIM, dtype=np.float32)[:2])
    assert (gallery_size(None), gallery_size(Gallery(DIM))) == ("no entries", "no entries")
    assert (gallery_size(one), gallery_size(two)) == ("1 entry of 1 label", "2 entries of 2 labels")


def test_the_gallery_watch_does_not_warn_again_of_a_file_it_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A gallery that records its model but not its crop settings is warned of once; the file saved again (an
    enroll --append) is the same gallery: the watch takes it without the warning."""
    model_only = MINE.partition(";")[0]
    path = _people(tmp_path / "people.rdg", model_only, alice=0)
    watch = GalleryWatch(_link_settings(tmp_path, "redis://127.0.0.1:6379", path), "a", DIM, MINE, None)
    with caplog.at_level(logging.WARNING, logger="daemon.gallery"):
        held = watch.changed(None)
        assert held is not None
        _people(path, model_only, alice=0, bob=1)
        taken = watch.changed(held)
    assert taken is not None and taken.unique_labels == ["alice", "bob"]
    said = [r.getMessage() for r in caplog.records if "does not record the crop settings" in r.getMessage()]
    assert len(said) == 1, said
