"""Fleet mode: FleetLink (resolver + bridge on a real Valkey), its outputs, and `reid-daemon fleet` end to end."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from _ops import health, metrics, wait_until
from _procs import daemon_json
from _video import make_image_folder, make_video

from daemon import fleet_runner
from daemon.bridge import Bridge, FleetMessage
from daemon.cli import main
from daemon.clocks import monotonic_reading
from daemon.config import BridgeConfig, IdentityConfig, SecretSource, Settings, load_settings
from daemon.embedding import LEFTOVER_AGE_S
from daemon.errors import ConfigError, DataError
from daemon.fleet import (
    CONFIG_CHECK_S,
    FAINT_AFTER,
    IDLE_EXPIRY_S,
    MAX_SPANS,
    FleetClock,
    FleetLink,
    GlobalMotWriter,
    IdentityLog,
    faint_warning_due,
    sighting_gap_s,
    to_message,
    to_update,
)
from daemon.fleet_runner import forget, report_fleet, run_fleet
from daemon.identity import IdentityAssignment, ProfileUpdate
from daemon.motio import read_results
from daemon.outputs import camera_files, earlier_folders, json_object
from daemon.pipeline import FrameResult
from daemon.track import TrackerUpdate
from daemon.types import Detections, Frame, Track
from daemon.valkey_server import EmbeddedValkey, free_port
from daemon.worker import paced

DIM = 32
KEY = "k" * 32
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------- pure parts


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_profile_updates_survive_the_wire_and_keepalives_get_the_width_back() -> None:
    ex = _unit(np.random.default_rng(0).normal(size=(3, DIM)))
    u = ProfileUpdate("a", 4, 17, 100.5, 0.7, ex, label="alice", since=99.0)
    back = to_update(to_message(u), DIM)
    assert back is not None
    assert (back.camera, back.track_id, back.global_id, back.label, back.since) == ("a", 4, 17, "alice", 99.0)
    np.testing.assert_allclose(back.exemplars, ex, atol=1e-6)
    keepalive = to_update(
        FleetMessage("profile", "a", track_id=4, global_id=17, timestamp=101.0, quality=0.5), DIM
    )
    assert keepalive is not None and keepalive.exemplars.shape == (0, DIM)
    assert to_update(FleetMessage("hello", "a"), DIM) is None


def _track(tid: int, x: float) -> Track:
    return Track("a", tid, (x, 10.0, x + 20.0, 60.0), 0.9, 0)


def _assigned(tid: int, gid: int | None) -> IdentityAssignment:
    return IdentityAssignment("a", tid, gid, None, 0.9, "fleet" if gid else "pending", gid is not None)


def test_global_mot_writer_backfills_pending_rows_but_never_shows_an_id_twice_on_a_frame(
    tmp_path: Path,
) -> None:
    w = GlobalMotWriter(tmp_path / "g.txt")
    w.write(1, [_track(1, 0), _track(2, 50)], (_assigned(1, 7), _assigned(2, None)))
    w.write(2, [_track(1, 0), _track(2, 50)], (_assigned(1, 7), _assigned(2, None)))
    w.write(3, [_track(2, 50)], (_assigned(2, 7),))  # track 1 ended; track 2 turns out to be 7 as well
    w.write(4, [_track(3, 90)], (_assigned(3, None),))
    w.ended([3])  # never resolved
    w.close()
    res = read_results(tmp_path / "g.txt")  # the reader rejects an id twice in one frame
    assert sorted(zip(res.frame.tolist(), res.track_id.tolist(), strict=True)) == [(1, 7), (2, 7), (3, 7)]
    assert w.conflicting_rows == 2 and w.unresolved_rows == 1


def test_a_track_that_switched_people_does_not_get_its_new_id_on_the_boxes_before(tmp_path: Path) -> None:
    w = GlobalMotWriter(tmp_path / "g.txt")
    w.write(1, [_track(4, 0)], (_assigned(4, None),))  # pending: person A, never resolved
    w.write(2, [_track(4, 0)], (_assigned(4, None),))
    switched = IdentityAssignment("a", 4, None, None, 0.0, "pending", False, switched=True)
    w.write(3, [_track(4, 0)], (switched,))  # the tracker carried track 4 onto person B here
    w.write(4, [_track(4, 0)], (_assigned(4, 9),))  # B's id
    w.close()
    res = read_results(tmp_path / "g.txt")
    assert sorted(zip(res.frame.tolist(), res.track_id.tolist(), strict=True)) == [(3, 9), (4, 9)]
    assert w.unresolved_rows == 2


def test_identity_log_writes_changes_and_a_table(tmp_path: Path) -> None:
    log = IdentityLog(tmp_path, "a", gap_s=1.0)
    log.frame(0, 10.0, (_assigned(1, 5),))
    log.frame(1, 11.0, (IdentityAssignment("a", 1, 5, None, 0.9, "fleet", False),))
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "identities.jsonl").read_text().splitlines()]
    assert [(x["track_id"], x["global_id"]) for x in lines] == [(1, 5)]
    table = json.loads((tmp_path / "identities.json").read_text())["identities"]
    assert table["5"]["frames"] == 2 and table["5"]["first_seen"] == 10.0 and table["5"]["last_seen"] == 11.0


def test_identity_log_records_the_fleet_time_of_its_first_frame(tmp_path: Path) -> None:
    # Regression: the table held sightings only, so the fleet report counted time from the first sighting while
    # fleet.mp4 counts from the fleet's first frame; the first frame's time (nobody on it here) is recorded.
    log = IdentityLog(tmp_path, "a", gap_s=1.0)
    log.frame(0, 8.0, ())
    log.frame(1, 9.0, (_assigned(1, 5),))
    log.close()
    doc = json.loads((tmp_path / "identities.json").read_text())
    assert doc["first_frame_time"] == 8.0 and doc["identities"]["5"]["first_seen"] == 9.0


def test_identity_log_unnames_only_the_labels_the_gallery_dropped(tmp_path: Path) -> None:
    """The camera's gallery dropped bob: identities.json stops naming bob's id at once (rewritten then), alice
    stays named, and a frame that drops nothing unnames nobody."""
    log = IdentityLog(tmp_path, "a", gap_s=1.0, refresh_s=1e9)

    def table() -> dict[str, str | None]:
        doc = json.loads((tmp_path / "identities.json").read_text())["identities"]
        return {gid: row["label"] for gid, row in doc.items()}

    named = IdentityAssignment("a", 1, 5, "alice", 0.9, "gallery", True)
    log.frame(0, 10.0, (named, IdentityAssignment("a", 2, 6, "bob", 0.9, "gallery", True)))
    log.unname(["carl"])  # held by no id here: nothing to write
    assert not (tmp_path / "identities.json").exists()
    log.unname([])
    log.unname(["bob"])
    assert table() == {"5": "alice", "6": None}
    log.unname([])
    log.close()
    assert table() == {"5": "alice", "6": None}


def test_identity_log_drops_a_forgotten_id_from_its_table(tmp_path: Path) -> None:
    """A running worker kept a forgotten id (and its label) in identities.json, rewriting it every minute, so
    a later report still showed the person the fleet had erased."""
    log = IdentityLog(tmp_path, "a", gap_s=1.0)
    log.frame(0, 10.0, (_assigned(1, 5), _assigned(2, 6)))
    log.forget([5, 99], 3, 13.0)  # 99: never seen here, nothing to say
    assert sorted(json.loads((tmp_path / "identities.json").read_text())["identities"]) == ["6"]
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "identities.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["identity", "identity", "forgotten"]
    assert lines[-1] | {"v": 0} == {
        "v": 0,
        "event": "forgotten",
        "camera": "a",
        "frame": 3,
        "ts": 13.0,
        "global_id": 5,
    }
    assert sorted(json.loads((tmp_path / "identities.json").read_text())["identities"]) == ["6"]


def test_identity_log_refreshes_its_table_while_the_camera_runs(tmp_path: Path) -> None:
    """A running (or killed) worker's identities can be reported on: the table is rewritten every refresh_s."""
    now = [0.0]
    log = IdentityLog(tmp_path, "a", gap_s=1.0, refresh_s=60.0, clock=lambda: now[0])
    log.frame(0, 10.0, (_assigned(1, 5),))
    assert not (tmp_path / "identities.json").exists()  # not yet due
    now[0] = 61.0
    log.frame(1, 11.0, (_assigned(2, 6),))
    table = json.loads((tmp_path / "identities.json").read_text())["identities"]
    assert sorted(table) == ["5", "6"]
    assert len((tmp_path / "identities.jsonl").read_text().splitlines()) == 2  # the log is flushed with it
    log.frame(2, 12.0, (_assigned(3, 7),))
    assert sorted(json.loads((tmp_path / "identities.json").read_text())["identities"]) == ["5", "6"]
    log.close()
    assert sorted(json.loads((tmp_path / "identities.json").read_text())["identities"]) == ["5", "6", "7"]


def test_identity_log_splits_an_ids_sightings_where_it_was_gone_longer_than_the_tracker_waits(
    tmp_path: Path,
) -> None:
    """identities.json held only an id's first and last sighting, so the report's timeline drew one bar from the
    first to the last, across a minute in which the person was nowhere near the camera."""
    fps = 10.0
    log = IdentityLog(tmp_path, "a", gap_s=sighting_gap_s(3.0, fps))
    seen_at = [*range(0, 20), *range(45, 60), *range(600, 610)]  # frames: a 2.5 s absence bridged, 54 s not
    for f in seen_at:
        log.frame(f, 100.0 + f / fps, (_assigned(1, 5),))
    log.close()
    row = json.loads((tmp_path / "identities.json").read_text())["identities"]["5"]
    assert row["spans"] == [[100.0, 105.9], [160.0, 160.9]]
    assert (row["first_seen"], row["last_seen"], row["frames"]) == (100.0, 160.9, 45)
    assert (
        sighting_gap_s(3.0, fps=0.25) == 6.0
    )  # a camera slower than the gap: consecutive frames stay one span


def test_identity_log_counts_a_tracks_sightings_from_before_its_id_was_decided(tmp_path: Path) -> None:
    """identities.json started an id at the frame its track was decided, while <camera>.global.txt writes the
    rows it held back from the track's first frame: the report said a person was first seen 2.57 s in, with 3
    frames, where the file had them from 0.14 s with 16 rows. Held sightings now count for the id they get; a
    track that switched people or ended without an id gives them to nobody."""
    log = IdentityLog(tmp_path, "a", gap_s=1.0)
    for t in (10.0, 10.5, 11.0):
        log.frame(0, t, (_assigned(1, None), _assigned(2, None), _assigned(3, None)))
    log.frame(0, 11.5, (_assigned(1, 5), _assigned(3, 7)))  # 1 and 3 decided
    log.frame(0, 30.0, (_assigned(4, None),))
    log.frame(0, 30.5, (_assigned(4, 5),))  # 5 again, on another track
    log.frame(0, 31.0, (IdentityAssignment("a", 2, 8, None, 0.9, "fleet", True, switched=True),))
    log.ended([3])
    log.frame(0, 32.0, (_assigned(9, None),))
    log.ended([9])
    log.frame(0, 33.0, (_assigned(9, 6),))  # track ids are not reused; a stale hold would show here
    log.close()
    table = json.loads((tmp_path / "identities.json").read_text())["identities"]
    assert (table["5"]["first_seen"], table["5"]["frames"]) == (10.0, 6)
    assert table["5"]["spans"] == [[10.0, 11.5], [30.0, 30.5]]
    assert (table["7"]["first_seen"], table["7"]["frames"]) == (10.0, 4)
    assert (table["8"]["first_seen"], table["8"]["frames"]) == (31.0, 1)  # its held past was someone else
    assert (table["6"]["first_seen"], table["6"]["frames"]) == (33.0, 1)


def test_identity_log_places_a_late_decided_tracks_sightings_among_the_spans(tmp_path: Path) -> None:
    log = IdentityLog(tmp_path, "a", gap_s=1.0)
    log.frame(0, 20.0, (_assigned(1, 5),))
    log.frame(0, 10.0, (_assigned(2, None),))  # fleet times from a track held back, decided later
    log.frame(0, 20.4, (_assigned(1, 5), _assigned(2, 5)))
    log.close()
    row = json.loads((tmp_path / "identities.json").read_text())["identities"]["5"]
    assert row["spans"] == [[10.0, 10.0], [20.0, 20.4]] and row["first_seen"] == 10.0


def test_identity_log_keeps_a_bounded_number_of_spans_joining_the_closest(tmp_path: Path) -> None:
    log = IdentityLog(tmp_path, "a", gap_s=1.0)
    starts = [10.0 * i for i in range(MAX_SPANS)] + [
        10.0 * MAX_SPANS - 5.0
    ]  # the last absence is the shortest
    for t in starts:
        log.frame(0, t, (_assigned(1, 5),))
        log.frame(0, t + 2.0, (_assigned(1, 5),))
    log.close()
    spans = json.loads((tmp_path / "identities.json").read_text())["identities"]["5"]["spans"]
    assert len(spans) == MAX_SPANS
    assert spans[-1] == [10.0 * (MAX_SPANS - 1), 10.0 * MAX_SPANS - 3.0] and spans[0] == [0.0, 2.0]


def test_replays_are_placed_on_the_shared_epoch_and_paced() -> None:
    clock = FleetClock(1000.0, media=True)
    assert clock.time_of(Frame(3, 0.3, np.zeros((2, 2, 3), np.uint8))) == pytest.approx(1000.3)
    frames = [Frame(i, i * 0.1, np.zeros((2, 2, 3), np.uint8)) for i in range(6)]
    stop = _AskedWaits()
    t0 = time.monotonic()
    assert len(list(paced(frames, 2.0, stop))) == 6  # 0.5 s of media at 2x: 0.25 s
    assert time.monotonic() - t0 >= 0.2  # paced, not as fast as they come
    # not slower than 2x: no wait is for more than the 0.05 s a frame's 0.1 s of media takes at 2x (0.1 s at
    # 1x), whatever the host's load (a late frame asks for less or none, never more); the elapsed time is no measure
    assert all(asked <= 0.05 + 1e-6 for asked in stop.asked), stop.asked


class _AskedWaits(threading.Event):
    """A stop event that keeps the timeout of each wait asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.asked.append(math.inf if timeout is None else timeout)
        return super().wait(timeout)


# --------------------------------------------------------------------------- FleetLink on a real Valkey


@pytest.fixture
def valkey() -> object:
    server = EmbeddedValkey("tcp").start()
    yield server
    server.close()


def _settings(tmp_path: Path, url: str, cams: tuple[str, ...] = ("a", "b"), **identity: float) -> object:
    """A fleet of ``cams`` on ``url``; ``identity``: identity settings beside the tests' own."""
    data = {
        "fleet": {"enabled": True, "clock": "wall"},
        "bridge": {"url": url, "signing_key": {"value": KEY}, "reconnect_max_s": 0.5},
        "identity": {
            "min_observations": 2,
            "new_min_observations": 2,
            "allow_overlapping_views": True,
            "decision_interval_s": 0,  # frames come 20 ms apart here: each is a look, as these tests count them
        }
        | identity,
        "cameras": {c: {"source": {"uri": str(tmp_path / f"{c}.mp4")}} for c in cams},
    }
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_settings(p)


PEOPLE = _unit(np.random.default_rng(7).normal(size=(3, DIM)))


def _frame_result(
    cam: str, index: int, people: list[int], rng: np.random.Generator, at: float | None = None
) -> FrameResult:
    """Frame ``index`` of ``cam`` showing ``people`` (track 10 + p each), stamped ``at`` (None: now)."""
    tracks = [
        Track(cam, 10 + p, (40.0 + 120 * p, 50.0, 100.0 + 120 * p, 230.0), 0.9, i, True)
        for i, p in enumerate(people)
    ]
    emb = _unit(PEOPLE[people] + 0.05 * rng.normal(size=(len(people), DIM)))
    frame = Frame(index, time.time() if at is None else at, np.zeros((300, 400, 3), np.uint8))
    dets = Detections(np.array([t.xyxy for t in tracks], np.float32), np.full(len(tracks), 0.9, np.float32))
    return FrameResult(frame, dets, emb, TrackerUpdate(tracks, []))


def _run(link: FleetLink, cam: str, frames: int, people: list[int], seed: int) -> dict[int, int | None]:
    rng = np.random.default_rng(seed)
    out: dict[int, int | None] = {}
    for i in range(frames):
        ids = link.update(_frame_result(cam, i, people, rng))
        out = {a.track_id - 10: a.global_id for a in ids.assignments}
        time.sleep(0.02)
    return out


def _wait(cond: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _newest_batch(link: FleetLink, valkey: EmbeddedValkey) -> str:
    """The stream id of the newest batch ``link``'s camera has stored in Valkey (its messages carry it as heard)."""
    newest = valkey.client().xrevrange(link.bridge.keys.log(link.camera), "+", "-", count=1)
    return str(newest[0][0].decode())


def test_two_workers_agree_on_global_ids_and_a_late_joiner_catches_up(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    settings = _settings(tmp_path, valkey.url, ("a", "b", "c"))
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]
    try:
        ids_a = _run(a, "a", 6, [0, 1, 2], seed=1)
        assert None not in ids_a.values() and len(set(ids_a.values())) == 3
        assert _wait(lambda: b.resolver.stats().identities >= 3)
        ids_b = _run(b, "b", 6, [2, 0], seed=2)
        assert ids_b == {2: ids_a[2], 0: ids_a[0]}
        a.bridge.flush(2.0)
        b.bridge.flush(2.0)
        late = FleetLink(settings, "c", DIM).start(live=True)  # type: ignore[arg-type]
        try:
            assert late.resolver.stats().identities >= 3  # from the stored state, before any live message
            assert _run(late, "c", 6, [1], seed=3) == {1: ids_a[1]}
        finally:
            late.close()
    finally:
        a.close()
        b.close()


def test_a_peer_whose_embedder_gives_another_width_is_logged_naming_it_once(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera of the fleet switched to another embedder alone (its own embedder section, a rolling upgrade)
    sends profiles of another width, which every other camera rejects: counted in summary.json's identity
    stats (remote_rejected dim) and nowhere else, so the fleet stopped matching across cameras without a word.
    The receiving camera logs it, naming the peer and both widths, once while the peer's width stays wrong."""
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    sender = Bridge(BridgeConfig(url=valkey.url, signing_key=SecretSource(value=KEY)), "b").start()
    try:
        with caplog.at_level(logging.WARNING, logger="daemon.fleet"):
            for track in (1, 2, 3):
                rows = _unit(np.random.default_rng(track).normal(size=(2, 16)))
                sender.publish(FleetMessage("profile", "b", track, 7, None, time.time(), 0.5, rows))
            assert _wait(lambda: a.resolver.stats().remote_rejected.get("dim") == 3)
        said = [r.getMessage() for r in caplog.records if "16-d" in r.getMessage()]
        assert said == [
            f"a: camera b sends 16-d embeddings, this camera's embedder gives {DIM}-d: its profiles are rejected, "
            "so no one it sees is matched here (the cameras of a fleet need one embedder: camera_defaults.embedder)"
        ]
    finally:
        sender.close()
        a.close()


def test_a_restarted_live_camera_numbers_its_tracks_after_its_earlier_runs(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """A live camera's worker started again numbered its tracks from 1, and stored state and the other
    cameras key a track by (camera, id): its new track 10 replaced the earlier run's track 10, another
    person, in `who`, and other cameras moved that person's looks onto the new track's id."""
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    try:
        assert a.first_track_id == 1  # nothing stored yet
        _run(a, "a", 6, [0, 1, 2], seed=1)  # tracks 10, 11 and 12
        assert a.bridge.flush(2.0)
    finally:
        a.close()
    again = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    replay = FleetLink(settings, "a", DIM).start(live=False)  # type: ignore[arg-type]
    try:
        assert again.first_track_id == 13
        assert replay.first_track_id == 1  # a replay numbers its own tracks, as its ground truth does
    finally:
        again.close()
        replay.close()


def test_a_live_camera_tells_its_wall_clock_stepping_from_its_stream_stalling(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """The worker hands the resolver each live frame's monotonic reading with its stamp, so that
    identity.retention_s (1 h) counts real time: the wall clock stepped forward by 2 h between two frames a second
    apart expires no one, and the stream stalled for 2 h expires the person seen before it (who was kept, the stall
    counting max_frame_gap_s, 2 s)."""
    settings = _settings(tmp_path, valkey.url, ("a",))
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    rng, t0, m0, hours = np.random.default_rng(3), time.time(), monotonic_reading(), 7200.0

    def update(i: int, ahead: float, stalled: float, ended: tuple[int, ...] = ()) -> None:
        """Frame ``i``: person 0 on the first six, then no one; read ``i`` s (and the stall) after the start, on
        the clock the link reads between frames too (its readings then are earlier: they expire nothing here)."""
        r = _frame_result("a", i, [0], rng, at=t0 + i + ahead + stalled)
        frame = dataclasses.replace(r.frame, monotonic=m0 + i + stalled)
        if i >= 6:
            r = FrameResult(r.frame, Detections.empty(), None, TrackerUpdate([], list(ended)))
        a.update(dataclasses.replace(r, frame=frame))

    try:
        for i in range(6):
            update(i, 0.0, 0.0)
        update(6, 0.0, 0.0, ended=(10,))  # the tracker ended the track
        assert a.resolver.stats().identities == 1
        update(7, hours, 0.0)  # the wall clock stepped
        assert a.resolver.stats().identities == 1
        update(8, hours, hours)  # the stream stalled
        assert a.resolver.stats().identities == 0 and a.resolver.stats().expired_identities == 1
    finally:
        a.close()


@pytest.mark.parametrize("step_s", [3600.0, -3600.0])
def test_a_live_camera_whose_wall_clock_stepped_stamps_its_claims_on_the_fleets_clock(
    tmp_path: Path, valkey: EmbeddedValkey, step_s: float
) -> None:
    """Regression: a live camera put its frames on the fleet clock by its host's wall clock, so once that clock
    stepped its claims came to its peers that far off: an hour in the future (held an hour past claim_ttl_s) or
    an hour old (lapsed as they came). Its frames' fleet times are on the fleet's clock (Valkey's time, as its
    bridge reads it, carried on by the monotonic reading each frame is taken with): camera a's host stepped an
    hour either way, its profile is stamped within a second of the server's time as read before and after, and
    its claim counts at b on b's frame 0.5 s after a's and has lapsed 1.2 s after it (claim_ttl_s, 1 s), b's
    frames put on the fleet's clock by b's reading of it."""
    settings = _settings(tmp_path, valkey.url, claim_ttl_s=1.0)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]
    heard: list[FleetMessage] = []
    b.listeners.append(heard.append)
    rng = np.random.default_rng(11)

    def live(r: FrameResult, wall: float) -> FrameResult:
        """``r`` as a live source gives it on a host whose wall clock reads ``wall`` now."""
        return dataclasses.replace(
            r, frame=dataclasses.replace(r.frame, timestamp=wall, monotonic=monotonic_reading())
        )

    frames: list[tuple[float, float]] = []  # a's frames: (the time a put it at, its monotonic reading)

    def claimed_at_b(after_s: float) -> bool:
        """Whether a's claim counts at b on b's frame read ``after_s`` after a read the frame of its latest
        profile, on b's reading of the fleet's clock (its host's wall clock not stepped): not as late as b's
        receiver, on a loaded host, got to the profile."""
        latest = max(m.timestamp for m in heard if m.kind == "profile" and m.global_id == gid)
        _, reading = min(frames, key=lambda f: abs(f[0] - latest))
        seen = _frame_result("b", 0, [1], rng)
        frame = dataclasses.replace(seen.frame, timestamp=time.time(), monotonic=reading + after_s)
        r = FrameResult(frame, Detections.empty(), None, TrackerUpdate([], []))
        b.update(r)
        now = b.clock.time_of(r.frame)
        return any(b.resolver.store.is_live(c, now) for c in b.resolver.store.claims(gid))

    def server_time() -> float:
        sec, usec = valkey.client().time()
        return int(sec) + int(usec) / 1e6

    try:
        before = server_time()
        for i in range(3):
            r = live(_frame_result("a", i, [0], rng), time.time() + step_s)
            a.update(r)
            assert r.frame.monotonic is not None
            frames.append((a.clock.time_of(r.frame), r.frame.monotonic))
        assert a.bridge.flush(5.0)
        newest = _newest_batch(a, valkey)  # b has heard all a says
        assert _wait(lambda: any(m.stream_id == newest for m in heard), timeout=10.0)
        after = server_time()
        profile = next(m for m in heard if m.kind == "profile" and m.global_id is not None)
        gid = profile.global_id
        assert before - 1.0 < profile.timestamp < after + 1.0, (before, profile.timestamp, after)
        assert claimed_at_b(0.5)
        assert not claimed_at_b(1.2)  # a says nothing more for longer than claim_ttl_s
    finally:
        a.close()
        b.close()


def test_a_peers_update_while_the_stream_is_down_is_judged_when_it_comes(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """The link hands the resolver a monotonic reading with each peer's update (``ingest_remote``), so that
    between frames (a live stream down) it is judged at the time it comes, not at the last frame's: a profile
    stamped 0.2 s after camera a's last frame, taken 4 s ago (its stream down since), retention_s 3 s, is too
    old to take, however late it comes (it was taken, and held until the next idle expiry); one stamped as it
    is sent is taken (if it comes within retention_s: time enough on a loaded host)."""
    settings = _settings(tmp_path, valkey.url, retention_s=3.0, claim_ttl_s=0.5)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]

    def profile(track: int, at: float) -> FleetMessage:
        return FleetMessage("profile", "b", track, 90 + track, None, at, 0.9, PEOPLE[:1])

    try:
        r, down_s = _frame_result("a", 0, [0], np.random.default_rng(5)), 4.0
        frame = dataclasses.replace(
            r.frame, timestamp=time.time() - down_s, monotonic=monotonic_reading() - down_s
        )
        a.update(dataclasses.replace(r, frame=frame))  # a's last frame, read 4 s ago
        b.bridge.publish(profile(1, a.clock.time_of(frame) + 0.2))
        assert _wait(lambda: a.resolver.stats().remote_rejected == {"stale": 1})
        b.bridge.publish(profile(2, time.time()))
        assert _wait(lambda: a.resolver.stats().remote_accepted == 1)
        assert list(a.resolver.store.identities) == [92]
    finally:
        a.close()
        b.close()


def test_a_live_camera_whose_stream_is_down_expires_what_it_holds_on_time(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """A live camera's stream goes down: its worker waits on the source (retrying for as long as it runs), so its
    link resolves no frame, while a peer goes on. Expiry ran only as a frame was resolved: the person this camera
    saw, and the one its peer saw and ended, were kept with their exemplars for as long as the stream stayed down,
    past identity.retention_s (4 s here: what the peer's updates of the person it still sees may be late by). The
    link hands the resolver a monotonic reading every second between frames: both go retention_s after they
    were last seen (not before), while the person the peer still sees, heard of all along, is kept."""
    retention = 4.0
    settings = _settings(tmp_path, valkey.url, retention_s=retention, claim_ttl_s=1.0)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]
    rng = np.random.default_rng(4)

    def frame_of_a(i: int, ended: tuple[int, ...] = ()) -> float:
        """A live frame of camera a, stamped and read now (person 0; no one when a track ``ended``); its reading."""
        r, reading = _frame_result("a", i, [0], rng), monotonic_reading()
        r = dataclasses.replace(r, frame=dataclasses.replace(r.frame, monotonic=reading))
        if ended:
            r = FrameResult(r.frame, Detections.empty(), None, TrackerUpdate([], list(ended)))
        a.update(r)
        return reading

    try:
        for i in range(6):
            seen = frame_of_a(i)  # person 0, last seen here
            b.update(_frame_result("b", i, [1, 2], rng))
            time.sleep(0.02)
        frame_of_a(6, ended=(10,))  # a's last frame: then its stream is down
        r = _frame_result("b", 6, [2], rng)
        b.update(FrameResult(r.frame, r.detections, r.embeddings, TrackerUpdate(r.update.tracks, [11])))
        assert _wait(lambda: a.resolver.stats().identities == 3)
        kept = b.resolver.assignment(12)
        assert kept is not None and kept.global_id in a.resolver.store
        # (seconds since person 0 was last seen just before and just after a read of the identities a holds,
        # what it held): held then was held at 'before', gone then was gone at 'after', however late this
        # thread reads (a loaded host)
        held: list[tuple[float, float, int]] = []
        for i in range(7, 107):  # the peer still sees person 2, ten frames a second
            b.update(_frame_result("b", i, [2], rng))
            before = monotonic_reading() - seen
            n = a.resolver.stats().identities
            held.append((before, monotonic_reading() - seen, n))
            if n == 1:
                break
            time.sleep(0.1)
        assert all(n == 3 for _, after, n in held if after < retention - 0.1)  # not before retention_s
        assert held[-1][2] == 1, held[-1]
        last_held = max(before for before, _, n in held if n == 3)
        assert last_held < retention + IDLE_EXPIRY_S + 2.0, (
            held
        )  # within IDLE_EXPIRY_S of it (2 s: a loaded host)
        assert kept.global_id in a.resolver.store
        assert a.resolver.stats().expired_identities == 2 and a.resolver.stats().live_tracks == 0
    finally:
        a.close()
        b.close()


def test_a_live_camera_s_idle_expiry_that_fails_is_handed_to_its_frame_loop(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """The thread that expires a live camera's identities between frames died of an exception with a traceback on
    stderr alone, and the camera went on without retention_s between frames, no error anywhere it is watched
    (its run, /health). The failure is kept and raised by the link's next use (``update``, ``check_idle``)."""
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    tried: list[float] = []

    def broken(monotonic: float) -> None:
        tried.append(monotonic)
        raise RuntimeError("a bug in the expiry")

    a.resolver.expire_idle = broken  # type: ignore[method-assign]
    try:
        thread = a._idle_expiry
        assert thread is not None and _wait(lambda: len(tried) >= 1)
        # its call came back with the error: the thread keeps it as it ends, which a loaded host may put off
        assert _wait(lambda: not thread.is_alive())
        with pytest.raises(RuntimeError, match="a bug in the expiry"):
            a.check_idle()
        with pytest.raises(RuntimeError, match="a bug in the expiry"):
            a.update(_frame_result("a", 0, [0], np.random.default_rng(0)))
        assert len(tried) == 1  # the thread ended with it
    finally:
        a.close()


def test_forget_erases_an_identity_at_every_worker(tmp_path: Path, valkey: EmbeddedValkey) -> None:
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]
    try:
        gid = _run(a, "a", 6, [0], seed=1)[0]
        assert gid is not None
        assert _wait(lambda: gid in b.resolver.store)
        forget(settings, gid, 5.0)  # type: ignore[arg-type]
        assert _wait(lambda: gid not in b.resolver.store and gid not in a.resolver.store)
        assert b.forgets_received == 1 and a.resolver.stats().forgotten == 1
        assert a.take_forgotten() == [gid] == b.take_forgotten()  # for the cameras' identity tables
        assert a.take_forgotten() == []
    finally:
        a.close()
        b.close()


def test_the_forgotten_ids_waiting_for_a_camera_s_files_are_bounded(
    tmp_path: Path, valkey: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ids a worker had yet to erase from its files were a list said to be bounded because the worker took
    it every frame: while no frame came (a stream down), every forget received, and each repeat of one, made it
    longer, for as long as the stream stayed down. It holds each id once, and at most MAX_PENDING_FORGETS: the
    oldest over it go, logged with what to do."""
    from daemon import fleet as fleet_module

    monkeypatch.setattr(fleet_module, "MAX_PENDING_FORGETS", 3)
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.ERROR, logger="daemon.fleet"):
            for gid in (1, 2, 3, 4, 5, 5, 5):
                b.forget(gid)
            assert _wait(lambda: a.forgets_received == 7)
        assert a.take_forgotten() == [3, 4, 5] and a.take_forgotten() == []
        dropped = [
            r.getMessage()
            for r in caplog.records
            if "is not erased from the camera's files" in r.getMessage()
        ]
        assert len(dropped) == 4  # 1 and 2 at each of the two links
        assert "a: global id 1 " in " ".join(dropped) and "reid-daemon forget 1" in " ".join(dropped)
        a.forget_later([3, 4])  # the camera's files refused them: first again, before those forgotten since
        b.forget(6)
        b.forget(7)
        assert _wait(lambda: a.forgets_received == 9)
        assert a.take_forgotten() == [4, 6, 7]  # 3, the oldest, over the bound
    finally:
        a.close()
        b.close()


def _handed_out(settings: object, n: int) -> None:
    """The fleet hands out ``n`` global ids (forget refuses one never handed out)."""
    with Bridge(settings.bridge, "test", receive=False) as bridge:  # type: ignore[attr-defined]
        bridge.allocate_global_ids(n)


def test_a_worker_that_was_not_running_when_a_forget_was_sent_takes_it_when_it_starts_once(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """A forget sent while a camera's worker was not running (stopped, crashed, on another host) never reached it:
    a starting worker took the cameras' track state, not the forgets, so its files kept the person. It takes the
    forgets the fleet stored, as it catches up; once its worker said it erased them (its files and memory clean)
    it marks how far it applied them, and its next start takes none of them again, nor one it heard live."""
    settings = _settings(tmp_path, valkey.url)
    fast = settings.model_copy(  # type: ignore[attr-defined]
        update={"bridge": settings.bridge.model_copy(update={"resync_s": 0.2})}  # type: ignore[attr-defined]
    )
    _handed_out(settings, 10)
    forget(settings, 5, 5.0)  # type: ignore[arg-type]
    a = FleetLink(fast, "a", DIM).start(live=True)
    try:
        assert a.forgets_received == 1  # in the catch-up, before start returned
        assert a.take_forgotten() == [5]  # for the camera's files
    finally:
        a.close()  # stopped before its files were erased: the next start takes it again
    a = FleetLink(fast, "a", DIM).start(live=True)
    try:
        assert a.forgets_received == 1 and a.take_forgotten() == [5]
        a.say_of_forgets([5], "erased", "1 identity lines erased")
        assert a.bridge.flush(5.0)
    finally:
        a.close()
    a = FleetLink(fast, "a", DIM).start(live=True)
    try:
        assert a.forgets_received == 0  # applied: not again
        forget(settings, 6, 5.0)  # type: ignore[arg-type]
        assert _wait(lambda: a.forgets_received == 1) and a.take_forgotten() == [6]
        a.say_of_forgets([6], "erased", "nothing held it")
        read = a.bridge.stored_forgets_read
        assert _wait(lambda: a.bridge.stored_forgets_read != read)  # the resync read the stored copy
        a.mark_applied()  # as the worker does while nothing waits
        assert a.bridge.flush(5.0)
    finally:
        a.close()
    b = FleetLink(fast, "b", DIM).start(live=True)  # another camera: its own mark
    again = FleetLink(fast, "a", DIM).start(live=True)
    try:
        assert again.forgets_received == 0
        assert b.forgets_received == 2 and b.take_forgotten() == [5, 6]
    finally:
        again.close()
        b.close()


def test_a_stored_forget_that_is_not_signed_with_the_fleet_key_is_not_applied(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """A starting worker applies only the stored forgets signed with a key it takes, from a camera it takes
    (or `forget`), sent within bridge.forget_keep_s: one signed with another key, an unsigned one and one older
    than that are refused (the first two counted as live batches are); a mark of how far it applied them that
    is not signed with the fleet key is not taken (all are applied again)."""
    from daemon.bridge import FORGET_CAMERA, FleetKeys
    from daemon.erase_ack import encode_applied
    from daemon.fleet_wire import encode_batch

    settings = _settings(tmp_path, valkey.url)
    keys = FleetKeys(settings.bridge.fleet)  # type: ignore[attr-defined]
    now = time.time()

    def stored(gid: int, key: bytes | None, sent_at: float = now) -> None:
        msg = FleetMessage(
            "forget", FORGET_CAMERA, global_id=gid, timestamp=sent_at, sender="x" * 32, seq=gid
        )
        blob = encode_batch([msg], key, sent_at=sent_at)
        valkey.client().xadd(keys.forgets, {"g": str(gid), "m": blob})

    stored(7, b"o" * 32)
    stored(8, None)
    stored(9, KEY.encode(), now - 31 * 86_400)  # bridge.forget_keep_s is 30 days
    stored(10, KEY.encode())
    forged_mark = encode_applied(settings.bridge.fleet, "a", f"{int(now * 1000) + 10**6}-0", b"o" * 32)  # type: ignore[attr-defined]
    valkey.client().hset(keys.forgets_applied, "a", forged_mark)
    with caplog.at_level(logging.WARNING, logger="daemon.bridge"):
        a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    try:
        assert a.forgets_received == 1 and a.take_forgotten() == [10]
        rejected = a.bridge.stats.rejected
        assert rejected.forged == 1 and rejected.unsigned == 1 and rejected.total == 2
    finally:
        a.close()
    assert "is not taken (its signature is not the fleet key's)" in caplog.text, caplog.text


def test_a_worker_whose_connection_dropped_takes_a_stored_forget_its_streams_no_longer_hold(
    tmp_path: Path, valkey: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker reconnecting replays the cameras' streams from where it stopped; a forget it did not hear live
    and that is no longer in `forget`'s stream (trimmed, expired) never reached it. Its catch-up after the
    reconnection takes it from the forgets the fleet keeps (resync off here: the reconnection alone brings it)."""
    from daemon.bridge import FORGET_CAMERA, FleetKeys
    from daemon.fleet_wire import encode_batch

    settings = _settings(tmp_path, valkey.url)
    quiet = settings.model_copy(  # type: ignore[attr-defined]
        update={"bridge": settings.bridge.model_copy(update={"resync_s": 0})}  # type: ignore[attr-defined]
    )
    caught = _catch_ups(monkeypatch)
    a = FleetLink(quiet, "a", DIM).start(live=True)
    try:
        assert len(caught) == 1  # the start's
        now = time.time()
        msg = FleetMessage("forget", FORGET_CAMERA, global_id=4, timestamp=now, sender="y" * 32, seq=1)
        blob = encode_batch([msg], KEY.encode(), sent_at=now)  # kept, never heard live, in no camera's stream
        kept = valkey.client().xadd(FleetKeys(quiet.bridge.fleet).forgets, {"g": "4", "m": blob}).decode()
        assert a.forgets_received == 0
        assert valkey.client().client_kill_filter(_type="pubsub") >= 1
        assert _wait(lambda: len(caught) == 2, 10.0)  # the reconnection's catch-up is done
        # it read the stored forget, and nothing had read it before it (no resync): it began where the start's
        # catch-up ended, whatever time passed in between
        assert caught[1] == (caught[0][1], kept), (caught, kept)
        assert a.forgets_received == 1 and a.take_forgotten() == [4]
    finally:
        a.close()


def _catch_ups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, str | None]]:
    """The stored forgets read (``Bridge.stored_forgets_read``) as each catch-up of a bridge began and as it
    ended, in order, from now on."""
    done: list[tuple[str | None, str | None]] = []
    catch_up = Bridge._catch_up

    def recorded(self: Bridge, client: object) -> None:
        began = self.stored_forgets_read
        catch_up(self, client)
        done.append((began, self.stored_forgets_read))

    monkeypatch.setattr(Bridge, "_catch_up", recorded)
    return done


def test_the_forget_command_says_whether_anything_stored_held_the_id(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """`forget` of an id nobody ever had (a typo in an erasure request) said "its stored state erased"."""
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    try:
        gid = _run(a, "a", 6, [0], seed=1)[0]
        assert gid is not None and a.bridge.flush(5.0)
        config = str(tmp_path / "fleet.yaml")
        unused = a.bridge.allocate_global_id()  # handed out, never given to anyone
        capsys.readouterr()
        # 1: the cameras' folders are not here, and no worker says it erased it (pending)
        assert main(["-q", "forget", str(unused), "--config", config, "--wait", "0"]) == 1
        unknown = capsys.readouterr().out
        assert main(["-q", "forget", str(gid), "--config", config, "--wait", "0"]) == 1
        known = capsys.readouterr().out
        # an id the fleet never handed out (a typo) is refused: every worker would raise its id floor past it
        assert main(["-q", "forget", str(unused + 10**6), "--config", config]) == 2
        assert f"global id {unused + 10**6} was never handed out" in capsys.readouterr().err
        assert a.bridge.allocate_global_id() == unused + 1
    finally:
        a.close()
    assert "nothing stored in Valkey held it" in unknown and "erased" not in unknown, unknown
    assert "stored entries holding it erased" in known, known


def test_tracking_goes_on_while_valkey_is_away_and_ids_come_when_it_returns(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    try:
        valkey.kill()
        ids = _run(a, "a", 5, [0, 1], seed=1)  # no exception: the decisions wait
        assert ids == {0: None, 1: None}
        assert a.resolver.stats().allocations_put_off > 0
        valkey.start()
        assert _wait(lambda: None not in _run(a, "a", 1, [0, 1], seed=2).values(), timeout=10)
    finally:
        a.close()


def test_a_fleet_worker_without_a_shared_url_is_told_it_is_alone(tmp_path: Path, caplog: object) -> None:
    settings = _settings(tmp_path, "redis://127.0.0.1:1")
    data = settings.model_dump(mode="python")  # type: ignore[attr-defined]
    data["bridge"]["url"] = None
    data["bridge"]["signing_key"] = {"value": KEY}
    from daemon.config import Settings

    alone = Settings.model_validate(data)
    import logging

    with caplog.at_level(logging.WARNING):  # type: ignore[attr-defined]
        FleetLink(alone, "a", DIM)
    assert "no other camera will see it" in caplog.text  # type: ignore[attr-defined]


def test_a_replay_worker_alone_on_its_own_valkey_waits_for_no_lockstep_peer(tmp_path: Path) -> None:
    """`reid-daemon run --config fleet.yaml --camera a` on a scenario's fleet.yaml (lockstep on, no bridge.url)
    started its own embedded Valkey, which no other camera can reach, and then waited lockstep_timeout_s (60 s)
    on its first frame for camera b's marker, which could never come."""
    data = _settings(tmp_path, "redis://127.0.0.1:1").model_dump(mode="python")  # type: ignore[attr-defined]
    data["bridge"].update(url=None, signing_key={"value": KEY})
    timeout_s = 30.0  # what a worker waiting for b waits on its first frame
    data["fleet"].update(clock="media", epoch=1.8e9, lockstep=True, lockstep_timeout_s=timeout_s)
    link = FleetLink(Settings.model_validate(data), "a", DIM).start(live=False)
    try:
        t0 = time.monotonic()
        link.update(_frame_result("a", 0, [0], np.random.default_rng(0), at=0.0))
        waited = time.monotonic() - t0
    finally:
        link.close()
    # half of lockstep_timeout_s: a loaded host has seconds for the frame, a wait for b takes all of it
    assert waited < timeout_s / 2, (
        f"the first frame waited {waited:.1f} s for a peer that cannot reach this Valkey"
    )


@pytest.mark.parametrize("epoch", [None, 1.8e9])
def test_a_replay_worker_without_a_shared_epoch_says_so(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture, epoch: float | None
) -> None:
    """Cameras of a replay run as separate `reid-daemon run` processes each took their own start as the epoch:
    started 6 s apart, two overlapping views put one moment 6 s apart and gave one person two ids, silently."""
    data = _settings(tmp_path, valkey.url).model_dump(mode="python")  # type: ignore[attr-defined]
    data["fleet"].update(clock="media", epoch=epoch)
    with caplog.at_level(logging.WARNING):
        FleetLink(Settings.model_validate(data), "a", DIM).start(live=False).close()
    assert ("fleet.epoch" in caplog.text) == (epoch is None), caplog.text


# ---------------------------------------------------------------------- `reid-daemon fleet` end to end


def test_fleet_command_runs_cameras_as_processes_and_they_agree(
    tmp_path: Path, mobilenet_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two cameras replaying the same synthetic clip (true boxes, real embedder, real processes and Valkey):
    each person gets one global id, the same on both cameras; the report and outputs are written."""
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(320, 240), people=3)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cam = {
        "source": {"uri": str(clip.path)},
        "detector": {"type": "ground-truth", "path": str(gt)},
        "embedder": {"policy": "all"},
        "output": {"dir": str(tmp_path / "runs"), "video": True, "progress": False},
    }
    cfg = {
        "models_dir": str(mobilenet_model.parent.parent),
        "fleet": {"enabled": True, "lockstep": True},  # in step, and the same ids on every run
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "identity": {"allow_overlapping_views": True},
        "cameras": {"left": cam, "right": cam},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = run_fleet(path, progress=False)
    assert run.ok, run.exit_codes
    gids = {}
    for name in ("left", "right"):
        res = read_results(tmp_path / "runs" / name / f"{name}.global.txt")
        local = read_results(tmp_path / "runs" / name / f"{name}.txt")
        assert len(res.frame) > 0.8 * len(local.frame)  # nearly every box has its global id
        gids[name] = set(res.track_id.tolist())
        assert (tmp_path / "runs" / name / "annotated.mp4").stat().st_size > 0
    assert len(gids["left"]) == 3 and gids["left"] == gids["right"]
    assert run.report["seen_on_several_cameras"] == 3
    assert (run.report_dir / "timeline.png").stat().st_size > 0
    assert "| global id |" in (run.report_dir / "report.md").read_text()
    # both cameras side by side, in step: one mosaic frame per frame of the two 30-frame replays
    assert run.mosaic == run.report_dir / "fleet.mp4"
    cap = cv2.VideoCapture(str(run.mosaic))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 2 * 320 * 480 // 240  # 320x240 views, 480 px high tiles
    cap.release()
    # the same report again from what the cameras left, without running them
    again = report_fleet(path, progress=False, report_dir=tmp_path / "again")
    assert again.report == run.report and again.mosaic == tmp_path / "again" / "fleet.mp4" and again.ok
    capsys.readouterr()
    assert main(["fleet", "--config", str(path), "--report-only", "--no-progress"]) == 0
    assert "3 identities over cameras left, right; 3 seen on two or more cameras" in capsys.readouterr().out


def test_a_stopped_fleet_kills_a_camera_that_ignores_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C / SIGTERM of `reid-daemon fleet` with a hung worker: the worker is killed after the grace period,
    instead of the fleet waiting for it forever (a second Ctrl-C did nothing either)."""
    monkeypatch.setattr(fleet_runner, "STOP_GRACE_S", 1.0)
    monkeypatch.setattr(fleet_runner, "POLL_S", 0.1)
    hung = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", hung], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # SIGTERM is ignored from here
        cam = fleet_runner.CameraProcess("a", proc, tmp_path / "status.json", tmp_path / "worker.log", None)
        watcher = threading.Thread(
            target=fleet_runner._watch,
            args=([cam], False, lambda: True, fleet_runner._Exits(None, lambda: True)),
        )
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="daemon.fleet_runner"):
            watcher.start()
            watcher.join(10.0)
        assert not watcher.is_alive() and time.monotonic() - t0 < 5.0
        assert proc.wait(1.0) == -signal.SIGKILL
        assert "camera a has not stopped 1 s after SIGTERM: killing it" in caplog.text
    finally:
        proc.kill()
        proc.wait()


def test_a_camera_the_fleets_own_stop_ended_before_it_caught_signals_has_not_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C of `reid-daemon fleet` while its workers still load their models: they die of the forwarded
    SIGTERM (no handler yet), which was reported as 'camera workers failed: {'a': -15}' with exit 1."""
    stopping = [False]
    exits = fleet_runner._Exits(None, lambda: stopping[0])
    assert exits.code(-signal.SIGTERM) == -signal.SIGTERM  # nobody asked it to stop: a failure
    stopping[0] = True
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"]
    )  # the default SIGTERM action
    cam = fleet_runner.CameraProcess("a", proc, tmp_path / "status.json", tmp_path / "worker.log", None)
    with caplog.at_level(logging.ERROR, logger="daemon.fleet_runner"):
        fleet_runner._watch([cam], False, lambda: True, exits)
    assert exits.code(proc.wait(5.0)) == 0 and proc.returncode == -signal.SIGTERM
    assert "exited with" not in caplog.text
    assert exits.code(130) == 0  # a Ctrl-C that reached the worker too: its KeyboardInterrupt exit
    assert (
        exits.code(1) == 1 and exits.code(-signal.SIGKILL) == -signal.SIGKILL
    )  # real failures stay failures


# `reid-daemon fleet` signalled while it starts: from inside its config's read (``load_settings``, as fleet_runner
# calls it) or the import of fleet_runner, so the signal always lands there.
_FLEET_SIGNALLED_WHILE_STARTING = """
import os, signal, sys

def signal_now(*_args):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))

class SignalOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "daemon.fleet_runner":
            signal_now()
        return None

if sys.argv[3] == "import":
    sys.meta_path.insert(0, SignalOnImport())
else:
    from daemon import fleet_runner, config
    fleet_runner.load_settings = lambda path: (signal_now(), config.load_settings(path))[1]
from daemon.cli import entry
entry(["--log-format", "json", "fleet", "--config", sys.argv[2], "--no-progress"])
"""


@pytest.mark.parametrize(
    ("sig", "where"),
    [("SIGTERM", "config"), ("SIGINT", "config"), ("SIGHUP", "config"), ("SIGTERM", "import")],
)
def test_a_signal_while_the_fleet_reads_its_config_stops_it_cleanly(
    tmp_path: Path, sig: str, where: str
) -> None:
    """`reid-daemon fleet` set its stop handlers only once it had read its config and ground truths, made the
    cameras' folders and started Valkey: a stop signal before (seconds on a loaded machine) killed it (SIGTERM:
    exit -15, SIGHUP: -1, nothing logged) or ended it in a KeyboardInterrupt (SIGINT, 130). It is held from the
    command's first line, as `run` holds it: exit 0, logged, no camera started, nothing written."""
    clip = make_video(tmp_path / "clip.mp4", frames=5, size=(64, 48), people=1)
    cfg = {
        "fleet": {"enabled": True},
        "bridge": {"allow_unsigned": True},
        "camera_defaults": {"output": {"dir": str(tmp_path / "runs")}, "embedder": {"type": "none"}},
        "cameras": {"a": {"source": {"uri": str(clip.path)}}},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-c", _FLEET_SIGNALLED_WHILE_STARTING, sig, str(path), where]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    said = [json.loads(line)["message"] for line in proc.stderr.splitlines()]  # JSON lines only
    assert said == [f"fleet: {sig} received while starting, stopping: no camera started"], said
    assert proc.stdout == "" and not (tmp_path / "runs").exists()  # no report, no camera folder


def test_a_report_of_cameras_that_left_no_outputs_says_which(tmp_path: Path, capsys: object) -> None:
    cam = {"source": {"uri": "x.mp4"}, "output": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"a": cam, "b": cam}}))
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "identities.json").write_text("{}")
    assert main(["fleet", "--config", str(path), "--report-only"]) == 1  # a data error, not a config error
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert (
        "camera b has left no fleet outputs" in err
        and str(tmp_path / "runs" / "b" / "identities.json") in err
    )
    # a camera running now that has not written its table yet (its first minute) was told to enable the fleet
    from _camlock import camera_lock_held

    status = {"state": "running", "pid": os.getpid(), "host": socket.gethostname()}
    (tmp_path / "runs" / "b").mkdir()
    (tmp_path / "runs" / "b" / "status.json").write_text(json.dumps(status))
    with camera_lock_held(tmp_path / "runs" / "b", "b"):  # its worker holds its folder's lock
        assert main(["fleet", "--config", str(path), "--report-only"]) == 1
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "camera b is running and has not written" in err and "fleet.enabled" not in err


def test_a_report_of_several_cameras_that_left_no_outputs_names_every_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `fleet --report-only` over folders b and c, both empty, named b alone ("camera b has left no
    fleet outputs"), so an operator who mended b was refused again for c; every such camera is named, at once."""
    cam = {"source": {"uri": "x.mp4"}, "output": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"a": cam, "b": cam, "c": cam}}))
    for name in ("a", "b", "c"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    (tmp_path / "runs" / "a" / "identities.json").write_text('{"v": 1, "identities": {}}')
    assert main(["fleet", "--config", str(path), "--report-only", "--no-progress"]) == 1
    err = capsys.readouterr().err
    for name in ("b", "c"):
        assert (
            f"camera {name} has left no fleet outputs: {tmp_path / 'runs' / name / 'identities.json'}" in err
        )
    assert "camera a" not in err and not (tmp_path / "runs" / "report.md").exists()


def test_a_report_of_a_fleet_whose_camera_failed_at_start_names_it_with_its_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fleet --report-only` refused a fleet with a camera that failed at start ('camera b has left no fleet
    outputs ... run it with fleet.enabled'), though its status.json said it failed and why (as a fleet run writes
    it): the other cameras are reported, and the failed one is named with its error, in report.md and on the
    terminal, as a fleet run's report names it; one killed before its first table likewise."""
    cam = {"source": {"uri": "x.mp4"}, "output": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"a": cam, "b": cam, "c": cam}}))
    row = {"label": None, "first_seen": 1.0, "last_seen": 2.0, "frames": 3, "tracks": [1]}
    for name in ("a", "b", "c"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    table = {"v": 1, "camera": "a", "first_frame_time": 0.5, "identities": {"4": row}}
    (tmp_path / "runs" / "a" / "identities.json").write_text(json.dumps(table))
    failed = {"v": 1, "camera": "b", "state": "failed", "frames": 0, "error": "video file not found: b.mp4"}
    (tmp_path / "runs" / "b" / "status.json").write_text(json.dumps(failed))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    killed = {
        "v": 1,
        "camera": "c",
        "state": "running",
        "frames": 0,
        "pid": gone.pid,
        "host": socket.gethostname(),
    }
    (tmp_path / "runs" / "c" / "status.json").write_text(json.dumps(killed))
    assert main(["fleet", "--config", str(path), "--report-only", "--no-progress"]) == 0
    out = capsys.readouterr().out
    said = "camera b failed: `video file not found: b.mp4`; camera c was stopped without finishing (killed)"
    assert "1 identity over cameras a, b, c" in out and f"Not a whole run: {said}" in out
    report = json.loads((tmp_path / "runs" / "report.json").read_text())
    assert report["unfinished"] == {"b": "failed", "c": "killed"} and list(report["people"]) == ["4"]
    assert f"**Not a whole run:** {said}" in (tmp_path / "runs" / "report.md").read_text()
    (tmp_path / "runs" / "b" / "status.json").write_text(json.dumps({**failed, "state": "done"}))
    assert main(["fleet", "--config", str(path), "--report-only"]) == 1  # done, and no table: still refused
    assert "camera b has left no fleet outputs" in capsys.readouterr().err


def test_the_fleet_command_names_only_the_report_files_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nobody seen: report.md is written and timeline.png is not, so the command does not name it."""
    cam = {"source": {"uri": "x.mp4"}, "output": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"a": cam}}))
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "identities.json").write_text(json.dumps({"v": 1, "identities": {}}))
    assert main(["-q", "fleet", "--config", str(path), "--report-only", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"  report: {tmp_path / 'runs' / 'report.md'}\n" in out and "timeline.png" not in out
    assert not (tmp_path / "runs" / "timeline.png").exists()


def test_fleet_command_without_a_key_says_what_to_set(tmp_path: Path, capsys: object) -> None:
    cfg = {"fleet": {"enabled": True}, "cameras": {"a": {"source": {"uri": "x.mp4"}}}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fleet", "--config", str(path), "--no-progress"]) == 2
    assert "bridge.signing_key" in capsys.readouterr().err  # type: ignore[attr-defined]


def test_forget_while_a_camera_runs_takes_the_person_out_of_the_fleet_report(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fleet report (report.json, report.md, timeline.png) was made again only when no camera ran: a forget
    while the cameras ran (a live fleet always does) left the person in it, and said nothing of it."""
    from daemon.fleet_report import build_report

    runs = tmp_path / "runs"
    cams = {
        c: {"source": {"uri": "rtsp://127.0.0.1:9/cam"}, "output": {"dir": str(runs)}} for c in ("a", "b")
    }
    cfg = {"fleet": {"enabled": True}, "bridge": {"url": valkey.url, "signing_key": {"value": KEY}}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg | {"cameras": cams}))
    with Bridge(load_settings(path).bridge, "x", receive=False) as b:
        gid, other = b.allocate_global_id(), b.allocate_global_id()
    seen = {"label": None, "first_seen": 1.0, "last_seen": 2.0, "frames": 3, "tracks": [1]}
    (runs / "a").mkdir(parents=True)
    table = {"v": 1, "camera": "a", "identities": {str(gid): seen, str(other): seen}}
    (runs / "a" / "identities.json").write_text(json.dumps(table))
    build_report({"a": runs / "a"}, runs)
    from _camlock import camera_lock_held

    status = {"state": "running", "pid": os.getpid(), "host": socket.gethostname()}
    (runs / "a" / "status.json").write_text(json.dumps(status))  # its worker erases its own files

    with camera_lock_held(runs / "a", "a"):
        assert main(["-q", "forget", str(gid), "--config", str(path), "--wait", "0.5"]) == 1
    out, err = capsys.readouterr()
    assert f"fleet report made again without it: {runs / 'report.md'}" in out
    # no worker there to say it erased the id: pending, and the exit status says it is not done
    assert "  a: pending: its worker did not say it erased it within 0.5 s (--wait)" in err, err
    report = json.loads((runs / "report.json").read_text())
    assert set(report["people"]) == {str(other)} and report["identities"] == 1
    assert f"| {gid} |" not in (runs / "report.md").read_text()
    assert f"| {other} |" in (runs / "report.md").read_text()


def test_forget_command_without_the_fleet_url_says_only_files_were_erased(
    tmp_path: Path, capsys: object
) -> None:
    cfg = {"bridge": {"signing_key": {"value": KEY}}, "cameras": {"a": {"source": {"uri": "x.mp4"}}}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["forget", "3", "--config", str(path)]) == 0
    assert "no shared Valkey (bridge.url unset)" in capsys.readouterr().out  # type: ignore[attr-defined]


def test_a_password_in_the_valkey_url_never_shows_in_logs_or_errors(
    tmp_path: Path,
    valkey: EmbeddedValkey,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """redis://:PASSWORD@host: the worker's "joined fleet" line (the journal) and the "could not reach Valkey"
    errors of forget / who show the URL with *** for the password."""
    valkey.client().config_set("requirepass", "hunter2-secret")
    port = valkey.url.rsplit(":", 1)[1]
    settings = _settings(tmp_path, f"redis://:hunter2-secret@127.0.0.1:{port}")
    with caplog.at_level(logging.INFO, logger="daemon"):
        link = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
        link.close()
    assert f"joined fleet 'default' at redis://:***@127.0.0.1:{port}" in caplog.text
    path = tmp_path / "fleet.yaml"
    data = yaml.safe_load(path.read_text())
    data["bridge"]["url"] = "redis://:hunter2-secret@127.0.0.1:1"
    path.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["-q", "forget", "3", "--config", str(path), "--timeout", "0.5"]) == 1
    assert main(["-q", "who", "--config", str(path), "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.count("could not reach Valkey at redis://:***@127.0.0.1:1 within 0.5 s") == 2
    assert "hunter2" not in caplog.text + err


def test_forget_command_refuses_an_id_or_timeout_that_cannot_be(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """Global ids start at 1: `forget 0` (or a negative id) was a ValueError traceback, and `--timeout -1` said
    Valkey could not be reached; both are usage errors (exit 2) now."""
    path = tmp_path / "fleet.yaml"
    cfg = {
        "bridge": {"url": valkey.url, "signing_key": {"value": KEY}},
        "cameras": {"a": {"source": {"uri": "x"}}},
    }
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    said = "forget: the global id must be >= 1, --timeout > 0 seconds and --wait 0 to 600 seconds"
    for argv in (
        ["0"],
        ["--", "-3"],
        ["3", "--timeout", "-1"],
        ["3", "--timeout", "0"],
        ["3", "--wait", "-1"],
    ):
        assert main(["-q", "forget", "--config", str(path), *argv]) == 2, argv
        assert said in capsys.readouterr().err
    # accepted: a's folder is not on this host, and no word came from it (pending, exit 1)
    assert main(["-q", "forget", "3", "--config", str(path), "--wait", "0"]) == 1
    assert "  a: pending: its folder " in capsys.readouterr().err


def test_bridge_messages_from_unknown_keys_never_reach_the_resolver(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    bad_cfg = BridgeConfig(url=valkey.url, signing_key=SecretSource(value="x" * 32))  # type: ignore[arg-type]
    try:
        with Bridge(bad_cfg, "intruder", receive=False) as intruder:
            intruder.publish(
                FleetMessage(
                    "profile", "intruder", 1, 999, timestamp=time.time(), quality=0.9, embeddings=PEOPLE[:1]
                )
            )
            intruder.flush(2.0)
        assert _wait(lambda: a.bridge.stats.rejected.total >= 1)
        assert 999 not in a.resolver.store
    finally:
        a.close()


def test_a_worker_refuses_batches_of_a_camera_its_config_does_not_list(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch signed with the fleet key from a camera the worker's config does not list (a worker started with a
    misspelt --camera, or one left running for a camera taken out of the config) was taken like any camera's,
    its people given fleet ids. It is refused, live and in a catch-up, counted as rejected 'unlisted' and logged
    naming the camera; the listed cameras' and `forget`'s are taken, and bridge.accept_unlisted takes any."""
    settings = _settings(tmp_path, valkey.url)  # cameras a and b
    open_to_any = settings.model_copy(  # type: ignore[attr-defined]
        update={"bridge": settings.bridge.model_copy(update={"accept_unlisted": True})}  # type: ignore[attr-defined]
    )

    def profile(cam: str, gid: int, person: int) -> FleetMessage:
        return FleetMessage(
            "profile", cam, 1, gid, timestamp=time.time(), quality=0.9, embeddings=PEOPLE[person : person + 1]
        )

    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    try:
        with (
            caplog.at_level(logging.WARNING, logger="daemon.bridge"),
            Bridge(settings.bridge, "b-typo", receive=False) as stray,  # type: ignore[attr-defined]
            Bridge(settings.bridge, "b", receive=False) as b,  # type: ignore[attr-defined]
        ):
            assert stray.flush(2.0)  # its hello alone: queued with the profile, one batch may hold both
            stray.publish(profile("b-typo", 998, 0))
            b.publish(profile("b", 997, 1))
            assert stray.flush(2.0) and b.flush(2.0)
            assert _wait(lambda: 997 in a.resolver.store)
            assert _wait(lambda: a.bridge.stats.rejected.unlisted == 2)  # the stray's hello and profile
        assert 998 not in a.resolver.store and a.bridge.stats.rejected.total == 2
        assert "rejected a unlisted message: camera 'b-typo'" in caplog.text, caplog.text
        forget(settings, 997, 5.0)  # type: ignore[arg-type]
        assert _wait(lambda: a.forgets_received == 1)
    finally:
        a.close()
    late = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    anyone = FleetLink(open_to_any, "a", DIM).start(live=True)
    try:
        assert late.bridge.stats.rejected.unlisted == 1  # the stray's profile, in the stored state
        assert 998 not in late.resolver.store
        assert 998 in anyone.resolver.store and anyone.bridge.stats.rejected.total == 0
    finally:
        late.close()
        anyone.close()


def test_a_live_worker_takes_the_cameras_its_config_file_lists_when_it_changes(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera added to a running fleet's YAML was refused ('unlisted') by every worker until it was restarted,
    and what it sent meanwhile was lost to them. A live worker reads its config file again when it changes: the
    added camera's batches are taken, those it stored before caught up; a file that does not validate is logged
    naming it and the cameras kept; a camera removed is refused again."""

    def profile(gid: int, person: int) -> FleetMessage:
        return FleetMessage(
            "profile", "c", 1, gid, timestamp=time.time(), quality=0.9, embeddings=PEOPLE[person : person + 1]
        )

    settings = _settings(tmp_path, valkey.url)  # cameras a and b
    cfg = tmp_path / "fleet.yaml"
    listed = yaml.safe_load(cfg.read_text())
    a = FleetLink(settings, "a", DIM, config_path=cfg).start(live=True)  # type: ignore[arg-type]
    try:
        with (
            caplog.at_level(logging.INFO, logger="daemon"),
            Bridge(settings.bridge, "c", receive=False) as c,  # type: ignore[attr-defined]
        ):
            assert c.flush(2.0) and _wait(lambda: a.bridge.stats.rejected.unlisted == 1)  # its hello
            c.publish(profile(501, 0))  # before c is listed: refused, but stored
            assert c.flush(2.0) and _wait(lambda: a.bridge.stats.rejected.unlisted == 2)
            assert 501 not in a.resolver.store and a.bridge.stats.caught_up == 0
            listed["cameras"]["c"] = {"source": {"uri": str(tmp_path / "c.mp4")}}
            cfg.write_text(yaml.safe_dump(listed))
            assert _wait(lambda: 501 in a.resolver.store, 10.0), caplog.text  # caught up from Valkey
            assert a.cameras == {"a", "b", "c"} and a.bridge.stats.caught_up >= 1
            assert "added: c; removed: none" in caplog.text

            cfg.write_text("cameras: {a: {source: {uri: 3.mp4, fps: -1}}}\n")  # does not validate
            assert _wait(lambda: f"config file {cfg} changed but cannot be taken" in caplog.text, 10.0)
            c.publish(profile(502, 1))
            assert _wait(lambda: 502 in a.resolver.store), caplog.text  # c is still taken
            assert a.cameras == {"a", "b", "c"}

            del listed["cameras"]["c"]
            cfg.write_text(yaml.safe_dump(listed))
            assert _wait(lambda: a.cameras == {"a", "b"}, 10.0), caplog.text
            unlisted = a.bridge.stats.rejected.unlisted
            c.publish(profile(503, 2))
            assert c.flush(2.0)
            assert _wait(lambda: a.bridge.stats.rejected.unlisted == unlisted + 1)
        assert 503 not in a.resolver.store
    finally:
        a.close()


@pytest.mark.parametrize("lockstep", [False, True])
def test_a_replay_out_of_lockstep_takes_the_cameras_its_config_file_lists_when_it_changes(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture, lockstep: bool
) -> None:
    """`reid-daemon fleet` follows its YAML for a paced replay (not lockstep) as for live cameras, starting the
    cameras added to it, but only a live worker read its config file again: the replays running refused the
    added camera's batches ('unlisted') to their end. A replay out of lockstep takes the camera list as a live
    worker does; one in lockstep keeps the cameras it started with, as the fleet does."""
    settings = _settings(tmp_path, valkey.url)  # cameras a and b
    cfg = tmp_path / "fleet.yaml"
    listed = yaml.safe_load(cfg.read_text())
    listed["fleet"]["lockstep"] = lockstep
    cfg.write_text(yaml.safe_dump(listed))
    settings = load_settings(cfg)
    a = FleetLink(settings, "a", DIM, config_path=cfg).start(live=False)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.INFO, logger="daemon"):
            listed["cameras"]["c"] = {"source": {"uri": str(tmp_path / "c.mp4")}}
            cfg.write_text(yaml.safe_dump(listed))
            if lockstep:  # a followed file is read within CONFIG_CHECK_S: twice that, and c starts sending
                time.sleep(2 * CONFIG_CHECK_S + IDLE_EXPIRY_S)
            else:
                assert _wait(lambda: a.cameras == {"a", "b", "c"}, 10.0), caplog.text
            with Bridge(settings.bridge, "c", receive=False) as c:  # type: ignore[attr-defined]
                assert c.flush(2.0)  # its hello, in a batch of its own
                c.publish(
                    FleetMessage(
                        "profile", "c", 1, 701, timestamp=time.time(), quality=0.9, embeddings=PEOPLE[:1]
                    )
                )
                assert c.flush(2.0)
                if lockstep:
                    assert _wait(lambda: a.bridge.stats.rejected.unlisted == 2)  # c's hello and profile
                    assert a.cameras == {"a", "b"} and "added: c" not in caplog.text
                else:
                    assert _wait(lambda: 701 in a.resolver.store), a.bridge.stats
                    assert a.bridge.stats.rejected.unlisted == 0 and "added: c; removed: none" in caplog.text
    finally:
        a.close()


def test_a_camera_added_to_the_config_gets_what_it_stored_before_the_worker_started(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera added to a running worker's config is caught up from its stored state. But a starting receiver
    raises each sender's sequence number to the highest of the batches stored just before it subscribed (so a
    captured one replayed is a duplicate), an unlisted camera's too: what the added camera stored before the
    worker started was then dropped as duplicates, its people never taken. Now only the listed cameras' are."""
    settings = _settings(tmp_path, valkey.url)  # cameras a and b
    cfg = tmp_path / "fleet.yaml"
    listed = yaml.safe_load(cfg.read_text())
    with Bridge(settings.bridge, "c", receive=False) as c:  # type: ignore[attr-defined]
        c.publish(
            FleetMessage("profile", "c", 1, 601, timestamp=time.time(), quality=0.9, embeddings=PEOPLE[:1])
        )
        assert c.flush(2.0)
    a = FleetLink(settings, "a", DIM, config_path=cfg).start(live=True)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.INFO, logger="daemon"):
            assert a.bridge.stats.rejected.unlisted == 1  # its profile, in the stored state
            listed["cameras"]["c"] = {"source": {"uri": str(tmp_path / "c.mp4")}}
            cfg.write_text(yaml.safe_dump(listed))
            assert _wait(lambda: a.cameras == {"a", "b", "c"}, 10.0), caplog.text
            assert _wait(lambda: 601 in a.resolver.store), a.bridge.stats
            assert a.bridge.stats.duplicates == 0
    finally:
        a.close()


def test_a_live_worker_takes_the_adjacency_of_cameras_added_to_its_config_file(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera added to a running fleet comes with its edges in identity.adjacency (they name it). The worker took
    the camera list alone, so it judged the new camera by the old graph: here, with overlapping views allowed
    and no edge, a person seen at c a moment ago was taken at a at once, where the edge says a walk from c
    takes at least 30 s. The worker takes the edges with the cameras."""
    settings = _settings(tmp_path, valkey.url)  # cameras a and b, overlapping views allowed, no edges
    cfg = tmp_path / "fleet.yaml"
    listed = yaml.safe_load(cfg.read_text())
    listed["cameras"]["c"] = {"source": {"uri": str(tmp_path / "c.mp4")}}
    listed["identity"]["adjacency"] = [{"a": "a", "b": "c", "min_s": 30, "max_s": 120}]
    a = FleetLink(settings, "a", DIM, config_path=cfg).start(live=True)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.INFO, logger="daemon.fleet"):
            cfg.write_text(yaml.safe_dump(listed))
            assert _wait(
                lambda: "identity.adjacency taken from the config: a-c 30-120 s" in caplog.text, 10.0
            )
        assert a.cameras == {"a", "b", "c"} and a.resolver.travel.min_travel("c", "a") == 30
        with Bridge(settings.bridge, "c", receive=False) as c:  # type: ignore[attr-defined]
            seen = FleetMessage(
                "profile", "c", 1, 601, timestamp=time.time(), quality=0.9, embeddings=PEOPLE[0:1]
            )
            c.publish(seen)
            assert c.flush(2.0) and _wait(lambda: 601 in a.resolver.store)
        ids = _run(a, "a", 8, [0], seed=3)
        assert ids[0] is not None and ids[0] != 601  # seen at c a moment ago: not the one walking in at a
    finally:
        a.close()


def _live_camera(url: str, gt: Path, out: Path) -> dict[str, object]:
    """A live camera on the RTSP stream ``url`` whose people are ``gt``'s (true boxes, looks a ReID model that
    tells people apart well would give)."""
    return {
        "source": {"uri": url, "open_timeout_s": 5, "read_timeout_s": 2, "reconnect_max_s": 0.5},
        "detector": {"type": "ground-truth", "path": str(gt)},
        "embedder": {"type": "ground-truth", "truth": {"path": str(gt), "similarity": 0.95}},
        "output": {"dir": str(out), "progress": False},
    }


def _worker(cfg: Path, camera: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = daemon_json("run", "--config", str(cfg), "--camera", camera)
    env = dict(os.environ, REID_TEST_FLEET_KEY=KEY)
    with log.open("wb") as fh:
        return subprocess.Popen([*cmd, "--no-progress"], cwd=ROOT, env=env, stdout=fh, stderr=fh)


def _gids(folder: Path) -> set[int]:
    """The global ids a camera's identities.jsonl gave its tracks."""
    path = folder / "identities.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {rec["global_id"] for rec in map(json.loads, lines) if rec.get("global_id") is not None}


def test_a_camera_added_to_a_running_fleet_has_its_identities_taken_without_a_restart(tmp_path: Path) -> None:
    """Two live workers on a real Valkey, as two hosts run them. `yard` is added to the fleet: its host's YAML
    lists it and its worker starts, seeing person 1; `door`'s worker runs on, its YAML listing door alone, and
    refuses yard's batches ('unlisted'). door's YAML is then given yard, as deploy/README says, and door's worker
    is not restarted. It took yard's batches only after a restart, so when person 1 walked into door's view
    later, door gave them a new global id. door's worker reads its YAML again, catches up on what yard sent
    before, and door gives person 1 yard's id."""
    from test_sources import RtspServer

    # door's frame (10 fps) where person 1 first shows: after yard is up and door's YAML lists it
    walks_in = 300
    clip = make_video(tmp_path / "stream.mp4", frames=420, fps=10.0, people=2, size=(160, 120))
    truth = clip.write_mot_gt(tmp_path / "all.txt").read_text().splitlines()
    door_gt, yard_gt = tmp_path / "door-gt.txt", tmp_path / "yard-gt.txt"
    people = [r.split(",") for r in truth]
    door_gt.write_text("".join(f"{','.join(r)}\n" for r in people if r[1] == "2" or int(r[0]) > walks_in))
    yard_gt.write_text("".join(f"{','.join(r)}\n" for r in people if r[1] == "1"))
    server = RtspServer(clip.path)
    server.start()
    valkey = EmbeddedValkey("tcp").start()
    ports = {"door": free_port(), "yard": free_port()}
    runs = tmp_path / "runs"

    def config(cams: dict[str, Path], port: int) -> dict[str, object]:
        return {
            "ops": {"port": port},
            "fleet": {"enabled": True},
            "bridge": {"url": valkey.url, "signing_key": {"env": "REID_TEST_FLEET_KEY"}},
            "identity": {"min_observations": 2, "new_min_observations": 2, "allow_overlapping_views": True},
            "cameras": {name: _live_camera(server.url, gt, runs) for name, gt in cams.items()},
        }

    door_cfg, yard_cfg = tmp_path / "door-host.yaml", tmp_path / "yard-host.yaml"
    door_cfg.write_text(yaml.safe_dump(config({"door": door_gt}, ports["door"])))
    yard_cfg.write_text(yaml.safe_dump(config({"door": door_gt, "yard": yard_gt}, ports["yard"])))
    procs = []
    try:
        procs.append(_worker(door_cfg, "door", tmp_path / "door.log"))
        wait_until(lambda: health(ports["door"]).get("status") == "ok", 120, "door running")
        procs.append(_worker(yard_cfg, "yard", tmp_path / "yard.log"))
        wait_until(lambda: health(ports["yard"]).get("status") == "ok", 120, "yard running")
        decided = "reid_identity_decisions_total{source=new}"
        wait_until(lambda: metrics(ports["yard"]).get(decided, 0) > 0, 120, "yard giving person 1 an id", 0.5)
        wait_until(
            lambda: metrics(ports["door"]).get("reid_bridge_rejected_total{reason=unlisted}", 0) > 0,
            20,
            "door refusing yard",
        )
        door_cfg.write_text(yaml.safe_dump(config({"door": door_gt, "yard": yard_gt}, ports["door"])))
        frames = health(ports["door"])["frames"]
        print(f"\ndoor's YAML listed yard at door's frame {frames}; person 1 walks in at {walks_in}")
        assert frames < walks_in - 50, (
            f"door reached frame {frames} before its YAML listed yard: too slow a machine"
        )
        wait_until(lambda: health(ports["door"])["frames"] > walks_in + 30, 120, "person 1 at door")
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(20) for proc in procs] == [0, 0]
    finally:
        for proc in procs:
            proc.kill()
        server.stop()
        valkey.close()
    yard_ids, door_ids = _gids(runs / "yard"), _gids(runs / "door")
    log = (tmp_path / "door.log").read_text()
    assert len(yard_ids) == 1 and len(door_ids) == 2, (yard_ids, door_ids, log[-3000:])
    assert yard_ids < door_ids, (yard_ids, door_ids, log[-3000:])  # person 1 has yard's id at door too
    assert "added: yard; removed: none" in log and "camera yard is listed now: caught up" in log


def _frames(folder: Path) -> int:
    """The frames a camera's status.json says its worker has read (0 before it writes one)."""
    return int(json_object(folder / "status.json").get("frames", 0))


def test_a_live_fleet_starts_the_cameras_added_to_its_yaml_and_stops_those_taken_out(tmp_path: Path) -> None:
    """`reid-daemon fleet` on live cameras started the cameras its YAML listed when it started, and those only:
    one added later got no worker until the whole fleet was restarted, one taken out kept running. Real processes
    on a real RTSP stream: b added starts and writes its folder; c, added with a video that is not there, is
    logged and not started; a file that does not validate is logged and changes nothing; a taken out stops
    (exit 0: not a failure) while b runs on; the fleet's stop then ends b, exit 0, both in the report. d, a
    recording added with b, is replayed from when it joined (it was placed at the fleet's start, in the past)."""
    from test_sources import RtspServer

    clip = make_video(tmp_path / "stream.mp4", frames=600, fps=10.0, people=2, size=(160, 120))
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    server = RtspServer(clip.path)
    server.start()
    runs = tmp_path / "runs"
    path = tmp_path / "fleet.yaml"

    def write(cams: dict[str, object]) -> None:
        cfg = {"fleet": {"enabled": True}, "bridge": {"allow_unsigned": True}, "cameras": cams}
        tmp = path.with_suffix(".new")
        tmp.write_text(yaml.safe_dump(cfg))
        tmp.replace(path)  # moved into place, as a deployment does

    live = _live_camera(server.url, gt, runs)
    write({"a": live})
    said = tmp_path / "fleet.log"
    cmd = daemon_json("fleet", "--config", str(path), "--no-progress")
    with said.open("wb") as err:
        fleet = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
    try:
        wait_until(lambda: _frames(runs / "a") > 0, 120, "camera a reading its stream", 0.2)
        missing = {**live, "source": {"uri": str(tmp_path / "missing.mp4")}}
        recording = make_video(tmp_path / "d.mp4", frames=8, fps=10.0, people=1, size=(160, 120))
        replay = _live_camera(str(recording.path), recording.write_mot_gt(tmp_path / "d-gt.txt"), runs)
        joined = time.time()
        write({"a": live, "b": live, "c": missing, "d": replay})
        wait_until(lambda: _frames(runs / "b") > 0, 120, "camera b, added, reading its stream", 0.2)
        assert "camera c, added to" in said.read_text() and "video file not found" in said.read_text()
        assert not (runs / "c").exists()
        write({"a": live, "b": {**live, "unknown_setting": 1}})  # does not validate: nothing changes
        wait_until(lambda: "changed but cannot be taken" in said.read_text(), 30, "the bad file logged", 0.2)
        write({"b": live})
        wait_until(lambda: "camera a has stopped" in said.read_text(), 60, "camera a stopped", 0.2)
        wait_until(
            lambda: json_object(runs / "d" / "status.json").get("state") == "done", 60, "d replayed", 0.2
        )
        assert json_object(runs / "d" / "identities.json")["first_frame_time"] >= joined
        assert json_object(runs / "a" / "status.json")["state"] == "done"
        at = _frames(runs / "b")
        wait_until(lambda: _frames(runs / "b") > at + 5, 60, "camera b running on", 0.2)
        assert fleet.poll() is None
        fleet.send_signal(signal.SIGTERM)
        out, _ = fleet.communicate(timeout=60)
    finally:
        fleet.kill()
        server.stop()
    log = said.read_text()
    assert fleet.returncode == 0, log[-3000:]
    messages = [json.loads(line)["message"] for line in log.splitlines() if line.startswith("{")]
    assert f"camera b was added to {path}" in " ".join(messages), messages
    assert f"camera a is no longer in {path}: stopping its worker" in messages, messages
    assert "config file" in " ".join(messages) and "the fleet keeps the cameras it runs" in log
    assert not any("exited with" in m for m in messages), messages
    text = out.decode()
    assert f"  a: {runs / 'a'}" in text and f"  b: {runs / 'b'}" in text, text  # both in the report
    assert json_object(runs / "b" / "status.json")["state"] == "done"


# A camera's worker for _Follow's test: on SIGTERM it exits 0 once the file argv[1] is there (a worker whose stop
# takes a while), until then it runs on; it says 'up' once it catches SIGTERM.
_SLOW_TO_STOP = """
import os, signal, sys, time
asked = []
signal.signal(signal.SIGTERM, lambda *_: asked.append(1))
print("up", flush=True)
while not (asked and os.path.exists(sys.argv[1])):
    time.sleep(0.05)
"""


def test_a_camera_put_back_before_its_worker_stopped_starts_once_it_has_and_a_refused_one_when_mended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The fleet's following of its YAML (fleet_runner._Follow, with real processes for workers): a camera taken
    out and put back while its worker still stops gets its new worker once the earlier one has exited (two in
    one folder would write over each other), both counted exit 0; an added camera that cannot be used is said
    once, not at every poll, and started once its settings are mended."""
    clip = make_video(tmp_path / "clip.mp4", frames=3, size=(64, 48), people=1)
    go = tmp_path / "go"
    path = tmp_path / "fleet.yaml"

    def write(cams: dict[str, str]) -> None:
        out = {"dir": str(tmp_path / "runs")}
        cfg = {"fleet": {"enabled": True}, "bridge": {"allow_unsigned": True}}
        cfg["cameras"] = {n: {"source": {"uri": uri}, "output": out} for n, uri in cams.items()}
        path.with_suffix(".new").write_text(yaml.safe_dump(cfg))
        path.with_suffix(".new").replace(path)

    def start(_now: Settings, name: str, _changed: Sequence[str] = ()) -> fleet_runner.CameraProcess:
        proc = subprocess.Popen([sys.executable, "-c", _SLOW_TO_STOP, str(go)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # SIGTERM is caught from here
        return fleet_runner.CameraProcess(name, proc, tmp_path / "status.json", tmp_path / "log", None)

    def take() -> None:  # the file is taken once unchanged for a poll
        for _ in range(2):
            follow.tick(cams, stops, exits)

    write({"a": str(clip.path), "b": str(clip.path)})
    follow = fleet_runner._Follow(path, load_settings(path), start)
    cams = [start(load_settings(path), "a"), start(load_settings(path), "b")]
    stops, exits = fleet_runner._Stops(), fleet_runner._Exits(None, lambda: False)
    try:
        take()
        assert len(cams) == 2  # nothing changed
        write({"b": str(clip.path)})
        take()
        write({"a": str(clip.path), "b": str(clip.path), "c": str(tmp_path / "missing.mp4")})
        with caplog.at_level(logging.ERROR, logger="daemon.fleet_runner"):
            take()
            take()
        assert [c.name for c in cams] == ["a", "b"] and cams[0].proc.poll() is None  # a's worker still stops
        assert caplog.text.count("camera c, added to") == 1 and "video file not found" in caplog.text
        go.touch()
        cams[0].proc.wait(30)
        take()
        assert [c.name for c in cams] == ["a", "b", "a"] and cams[2].proc.poll() is None
        write({"a": str(clip.path), "b": str(clip.path), "c": str(clip.path)})  # mended
        take()
        assert [c.name for c in cams] == ["a", "b", "a", "c"]
    finally:
        go.touch()
        stops.ask(cams)
        for c in cams:
            c.proc.wait(30)
    assert exits.codes(cams) == {"a": 0, "b": 0, "c": 0}
    assert (tmp_path / "runs" / "c").is_dir() and not (tmp_path / "runs" / "missing").exists()
    assert list(follow.ran) == ["a", "b", "c"]


def test_identity_config_reaches_the_resolver(tmp_path: Path, valkey: EmbeddedValkey) -> None:
    settings = _settings(tmp_path, valkey.url)
    link = FleetLink(settings, "a", DIM)  # type: ignore[arg-type]
    assert isinstance(link.resolver.cfg, IdentityConfig) and link.resolver.cfg.min_observations == 2


def test_a_local_gallery_names_the_people_it_knows(tmp_path: Path, valkey: EmbeddedValkey) -> None:
    from daemon.gallery import Gallery

    gallery = Gallery(DIM, threshold=0.7)
    rng = np.random.default_rng(5)
    for _ in range(4):
        gallery.add("alice", _unit(PEOPLE[0] + 0.05 * rng.normal(size=DIM)))
    path = gallery.save(tmp_path / "known.rdg")
    data = _settings(tmp_path, valkey.url).model_dump(mode="python")  # type: ignore[attr-defined]
    data["gallery"]["path"] = path
    data["bridge"]["signing_key"] = {"value": KEY}
    from daemon.config import Settings

    link = FleetLink(Settings.model_validate(data), "a", DIM).start(live=True)
    try:
        rng = np.random.default_rng(1)
        for i in range(6):
            ids = link.update(_frame_result("a", i, [0, 1], rng))
        by_person = {a.track_id - 10: a for a in ids.assignments}
        assert by_person[0].label == "alice" and by_person[0].source == "gallery"
        assert by_person[1].label is None and by_person[1].global_id != by_person[0].global_id
    finally:
        link.close()


def test_a_gallery_of_another_width_is_refused_by_name(tmp_path: Path) -> None:
    from daemon.errors import ConfigError
    from daemon.gallery import Gallery

    path = Gallery(8).save(tmp_path / "other.rdg")
    data = _settings(tmp_path, "redis://127.0.0.1:1").model_dump(mode="python")  # type: ignore[attr-defined]
    data["gallery"]["path"] = path
    data["bridge"]["signing_key"] = {"value": KEY}
    from daemon.config import Settings

    with pytest.raises(ConfigError, match=r"gallery\.path"):
        FleetLink(Settings.model_validate(data), "a", DIM)


def test_a_gallery_enrolled_with_another_model_or_crops_is_refused_by_name(tmp_path: Path) -> None:
    # Regression: a fleet camera checked its gallery.path by width only, so a gallery enrolled with another
    # model of the same width, or with --flip / colour_norm where the camera has none, named people by
    # nonsense matches without a word, where recognize, search and serve refuse it.
    from daemon.errors import ConfigError
    from daemon.gallery import Gallery

    gallery = Gallery(DIM)
    gallery.made_by("mine.onnx sha256:0123456789abcdef; crops 256x128, flip")
    gallery.add("alice", _unit(PEOPLE[0]))
    path = gallery.save(tmp_path / "known.rdg")
    data = _settings(tmp_path, "redis://127.0.0.1:1").model_dump(mode="python")  # type: ignore[attr-defined]
    data["gallery"]["path"] = path
    data["bridge"]["signing_key"] = {"value": KEY}
    from daemon.config import Settings

    settings = Settings.model_validate(data)
    for other in (
        "other.onnx sha256:fedcba9876543210; crops 256x128, flip",
        "mine.onnx sha256:0123456789abcdef; crops 256x128",
    ):
        with pytest.raises(ConfigError, match=r"gallery\.path: .*enrolled with mine\.onnx"):
            FleetLink(settings, "a", DIM, signature=other)  # type: ignore[arg-type]
    from daemon.fleet import _load_gallery

    same = "renamed.onnx sha256:0123456789abcdef; crops 256x128, flip"  # a model file renamed is the same
    loaded = _load_gallery(settings, DIM, same)
    assert loaded is not None and loaded.labels == ["alice"]


def test_a_gallery_path_that_cannot_be_loaded_is_a_config_error_naming_it(tmp_path: Path) -> None:
    # Regression: a corrupt gallery.path (cut short, overwritten) stopped the camera with a DataError (exit 1),
    # which systemd restarts on, over and over, and the message did not say which setting named the file; a
    # folder there was 'not found'. Like a gallery of another width or model, it is a ConfigError (exit 2).
    from daemon.config import Settings
    from daemon.errors import ConfigError
    from daemon.fleet import _load_gallery
    from daemon.gallery import Gallery

    data = _settings(tmp_path, "redis://127.0.0.1:1").model_dump(mode="python")  # type: ignore[attr-defined]
    cut = Gallery(DIM).save(tmp_path / "cut.rdg")
    cut.write_bytes(cut.read_bytes()[:20])
    (tmp_path / "folder.rdg").mkdir()
    for path, problem in ((cut, "truncated"), (tmp_path / "folder.rdg", "is a folder, not a gallery file")):
        data["gallery"]["path"] = path
        with pytest.raises(ConfigError, match=rf"^gallery\.path: {path}:? {problem}"):
            _load_gallery(Settings.model_validate(data), DIM, None)


# ----------------------------------------------------------------------------------------- identity head


def _identity_head(d: int = DIM, out: int = 8) -> object:
    from daemon.adapt import AdaptConfig, ProjectionHead, init_head_arrays

    rng = np.random.default_rng(0)
    arrays = init_head_arrays(_unit(rng.normal(size=(64, d))).astype(np.float32), AdaptConfig(dim=out), rng)
    return ProjectionHead.from_arrays(arrays, {"base_model": "toy"})


def test_identity_rows_map_embedded_rows_and_keep_not_embedded_ones_zero() -> None:
    from daemon.fleet import identity_rows

    head = _identity_head()
    emb = np.zeros((3, DIM), np.float32)
    emb[[0, 2]] = PEOPLE[:2]
    out = identity_rows(head, emb)  # type: ignore[arg-type]
    assert out is not None and out.shape == (3, 8) and out.dtype == np.float32
    assert not out[1].any()  # "not embedded" stays a zero row (head(0) would not be zero)
    np.testing.assert_allclose(out[[0, 2]], head.apply(PEOPLE[:2]), atol=1e-6)  # type: ignore[attr-defined]
    assert identity_rows(head, None) is None  # type: ignore[arg-type]


def test_an_identity_head_changes_the_resolver_width_and_is_checked(tmp_path: Path) -> None:
    from daemon.errors import ConfigError

    settings = _settings(tmp_path, "redis://127.0.0.1:1")
    link = FleetLink(settings, "a", DIM, head=_identity_head())  # type: ignore[arg-type]
    assert link.resolver.dim == 8
    with pytest.raises(ConfigError, match=r"identity\.head takes 16-d.*32-d"):
        FleetLink(settings, "a", DIM, head=_identity_head(d=16))  # type: ignore[arg-type]


def test_identity_head_is_loaded_by_path_and_checked_against_the_model(tmp_path: Path) -> None:
    from daemon.adapt import save_head
    from daemon.errors import ModelError
    from daemon.fleet import load_identity_head

    settings = _settings(tmp_path, "redis://127.0.0.1:1")
    assert load_identity_head(settings, None) is None  # type: ignore[arg-type]
    path = save_head(_identity_head(), tmp_path / "id-head.npz")  # type: ignore[arg-type]
    data = settings.model_dump(mode="python")  # type: ignore[attr-defined]
    data["identity"]["head"] = path
    data["bridge"]["signing_key"] = {"value": KEY}
    from daemon.config import Settings

    with_head = Settings.model_validate(data)
    head = load_identity_head(with_head, object())
    assert head is not None and head.output_dim == 8
    data["identity"]["head"] = tmp_path / "missing.npz"
    with pytest.raises(ModelError, match=r"missing\.npz"):
        load_identity_head(Settings.model_validate(data), object())


def _head_for(model: Path, path: Path, seed: int) -> Path:
    """A 16-d projection head fitting ``model`` (mobilenetv2-imagenet's 1280-d output), its weights from ``seed``."""
    from daemon.adapt import AdaptConfig, ProjectionHead, file_sha256, init_head_arrays, save_head

    rng = np.random.default_rng(seed)
    arrays = init_head_arrays(_unit(rng.normal(size=(64, 1280))).astype(np.float32), AdaptConfig(dim=16), rng)
    meta = {"base_model": "mobilenetv2-imagenet", "base_sha256": file_sha256(model), "input_size": [256, 128]}
    return save_head(ProjectionHead.from_arrays(arrays, meta), path)


def test_a_gallery_enrolled_with_another_identity_head_is_refused_naming_both(
    tmp_path: Path, mobilenet_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: with identity.head a camera checked its gallery.path by width only, so a gallery enrolled
    # with another head of the same width (an earlier `adapt` run's) named people by nonsense matches without
    # a word. The camera's vectors are now signed with the head's file, as an embedder with that head signs
    # the gallery's; a gallery that records no embedder at all is used with one warning.
    from daemon.config import CameraConfig, EmbedderConfig, GroundTruthDetectorConfig, RuntimeConfig
    from daemon.embed import OnnxEmbedder
    from daemon.gallery import Gallery
    from daemon.worker import CameraWorker

    clip = make_video(tmp_path / "clip.mp4", frames=2, size=(160, 120), people=1)
    heads = [_head_for(mobilenet_model, tmp_path / f"{name}.npz", seed) for seed, name in enumerate("AB")]
    cpu = RuntimeConfig(providers=("CPUExecutionProvider",), intra_op_threads=1)
    enrolled_with_a = OnnxEmbedder(EmbedderConfig(model=str(mobilenet_model), head=heads[0]), cpu, tmp_path)
    gallery = Gallery(16)
    gallery.made_by(enrolled_with_a.signature)
    gallery.add("alice", enrolled_with_a.embed_crops([np.full((128, 64, 3), 90, np.uint8)])[0])
    unrecorded = Gallery(16)
    unrecorded.add("alice", gallery.embeddings[0])
    paths = [gallery.save(tmp_path / "people.rdg"), unrecorded.save(tmp_path / "old.rdg")]

    def camera(head: Path, gallery_path: Path) -> Settings:
        cam = CameraConfig.model_validate(
            {
                "source": {"uri": str(clip.path)},
                "detector": GroundTruthDetectorConfig(path=clip.write_mot_gt(tmp_path / "gt.txt")),
                "embedder": {"model": str(mobilenet_model)},
                "output": {"dir": tmp_path / "runs", "progress": False},
            }
        )
        data = {
            "fleet": {"enabled": True, "clock": "wall"},
            "bridge": {"url": "redis://127.0.0.1:1", "signing_key": {"value": KEY}},
            "identity": {"head": head},
            "gallery": {"path": gallery_path},
            "runtime": cpu,
            "cameras": {"a": cam},
        }
        return Settings.model_validate(data)

    with pytest.raises(
        ConfigError, match=r"gallery\.path: .*people\.rdg.*head A\.npz sha256.*head B\.npz sha256"
    ):
        CameraWorker(camera(heads[1], paths[0]), "a")
    worker = CameraWorker(camera(heads[0], paths[0]), "a")
    assert worker.fleet is not None and worker.fleet.gallery is not None
    assert worker.fleet.gallery.labels == ["alice"]
    worker.fleet.close()
    caplog.clear()
    worker = CameraWorker(camera(heads[1], paths[1]), "a")
    assert worker.fleet is not None and worker.fleet.gallery is not None
    worker.fleet.close()
    said = [r.getMessage() for r in caplog.records if "does not record the model" in r.getMessage()]
    assert len(said) == 1 and "old.rdg" in said[0] and "B.npz" in said[0], caplog.text


def test_ids_are_never_handed_out_twice_after_valkey_comes_back_empty(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """A Valkey restarted without persistence counts from 1 again; the worker raises the counter past the
    ids it knows instead of reusing one (which would merge two people)."""
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]
    try:
        first = _run(a, "a", 6, [0, 1], seed=1)
        assert None not in first.values()
        assert _wait(lambda: b.resolver.stats().identities >= 2)
        valkey.kill()
        valkey.start()  # empty: the counter is gone
        second = _run(b, "b", 6, [2], seed=2)  # b knows a's ids only from messages
        assert _wait(lambda: None not in _run(a, "a", 1, [0, 1, 2], seed=3).values(), timeout=10)
        later = _run(a, "a", 1, [0, 1, 2], seed=4)
        assert second[2] is not None and second[2] not in (first[0], first[1])
        assert len(set(later.values())) == 3
    finally:
        a.close()
        b.close()


def test_listeners_hear_every_fleet_message(tmp_path: Path, valkey: EmbeddedValkey) -> None:
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]
    heard: list[FleetMessage] = []
    b.listeners.append(heard.append)
    try:
        _run(a, "a", 6, [0], seed=1)
        assert _wait(lambda: any(m.kind == "profile" and m.sent_at > 0 for m in heard))
    finally:
        a.close()
        b.close()


def test_a_camera_whose_wall_clock_steps_back_keeps_publishing_and_its_peers_take_it(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """A live camera's frames are stamped with its wall clock, and NTP stepped it back 30 s. Its resolver's
    clock stood still until the wall clock caught up, and the camera published nothing but new decisions
    meanwhile (no exemplar updates, no keep-alives). Over a real Valkey, frames every 0.5 s: the peer hears a
    profile of the camera's person at least every claim_ttl_s / 2 through 12 s after the step, and rejects none."""
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]
    heard: list[tuple[float, FleetMessage]] = []
    b.listeners.append(lambda m: heard.append((time.monotonic(), m)))
    rng = np.random.default_rng(1)
    start = time.time() - 10.0
    try:
        for i in range(6):
            a.update(_frame_result(a.camera, i, [0], rng, at=start + 0.5 * i))
        assert a.resolver.assignment(10) is not None and a.bridge.flush(2.0)
        # b has heard what a sent before the step, up to its newest batch: under load its receiver lags, and a
        # message of before it heard after it was counted as sent after it
        newest = _newest_batch(a, valkey)
        assert _wait(lambda: any(m.stream_id == newest for _, m in heard), timeout=10.0)
        stepped = time.monotonic()
        for i in range(24):  # 12 s of frames, all stamped before the camera's latest frame time
            a.update(_frame_result(a.camera, 6 + i, [0], rng, at=start - 30.0 + 0.5 * i))
            time.sleep(0.01)
        assert a.bridge.flush(2.0)
        due = 12 / (settings.identity.claim_ttl_s / 2)  # type: ignore[attr-defined]
        _wait(lambda: len([m for t, m in heard if t > stepped and m.camera == "a"]) >= due)
        after = [m for t, m in heard if t > stepped and m.kind == "profile" and m.camera == "a"]
        assert len(after) >= due, len(after)
        assert any(len(m.embeddings) for m in after)  # its new looks too, not keep-alives alone
        assert min(m.timestamp for m in after) >= start + 2.5  # stamped on the resolver's clock: never back
        assert b.resolver.stats().remote_rejected == {} and b.remote_invalid == 0
    finally:
        a.close()
        b.close()


def test_a_live_camera_whose_stream_stalls_keeps_its_peoples_ids(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """A live camera's stream stalls for 40 s (over identity.track_timeout_s, 30 s) and comes back with the same
    people, the tracker's tracks as they were. Every track was ended as timed out on the first frame after the
    stall and given a new global id. Over a real Valkey: the ids stay, and the peer hears them again at once."""
    settings = _settings(tmp_path, valkey.url)
    a = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    b = FleetLink(settings, "b", DIM).start(live=True)  # type: ignore[arg-type]
    heard: list[FleetMessage] = []
    b.listeners.append(heard.append)
    rng = np.random.default_rng(1)
    start = time.time() - 45.0
    try:
        before = [a.update(_frame_result("a", i, [0, 1], rng, at=start + 0.5 * i)) for i in range(6)][-1]
        first = {x.track_id: x.global_id for x in before.assignments}
        assert None not in first.values() and a.bridge.flush(2.0)
        newest = _newest_batch(a, valkey)  # all before the stall heard, up to it: what comes next is after it
        assert _wait(lambda: any(m.stream_id == newest for m in heard), timeout=10.0)
        stalled = len(heard)
        after = [
            a.update(_frame_result("a", 6 + i, [0, 1], rng, at=start + 42.5 + 0.5 * i)) for i in range(4)
        ]
        assert all({x.track_id: x.global_id for x in f.assignments} == first for f in after)
        assert not [u for f in after for u in f.updates if u.ended] and a.bridge.flush(2.0)
        _wait(lambda: {m.track_id for m in heard[stalled:] if m.kind == "profile"} == set(first))
        back = [m for m in heard[stalled:] if m.kind == "profile"]
        assert {(m.track_id, m.global_id) for m in back} == set(first.items()) and not any(
            m.ended for m in back
        )
        assert a.resolver.stats().allocations == 2 and b.resolver.stats().remote_rejected == {}
    finally:
        a.close()
        b.close()


def _true_box_camera(video: Path, gt: Path, out: Path) -> dict[str, object]:
    """A camera replaying ``video`` on its true boxes, embedding every box, no annotated video."""
    return {
        "source": {"uri": str(video)},
        "detector": {"type": "ground-truth", "path": str(gt)},
        "embedder": {"policy": "all"},
        "output": {"dir": str(out), "video": False, "progress": False},
    }


def _grouping(path: Path) -> list[tuple[tuple[int, float, float], ...]]:
    """A global.txt's boxes (frame, x, y) grouped by global id, without the id numbers (which depend on the
    order in which processes allocated them)."""
    res = read_results(path)
    groups: dict[int, list[tuple[int, float, float]]] = {}
    for f, (x, y), g in zip(res.frame.tolist(), res.xywh[:, :2].tolist(), res.track_id.tolist(), strict=True):
        groups.setdefault(g, []).append((f, round(x, 1), round(y, 1)))
    return sorted(tuple(sorted(v)) for v in groups.values())


def test_lockstep_replays_agree_unpaced_and_give_the_same_ids_on_every_run(
    tmp_path: Path, mobilenet_model: Path
) -> None:
    """Two camera processes replaying as fast as they can (no pacing) in lockstep: each person gets one global id
    shared by both cameras, and a second run groups every box exactly as the first did."""
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(320, 240), people=3)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    outputs = []
    for run_no in range(2):
        out = tmp_path / f"runs{run_no}"
        cam = _true_box_camera(clip.path, gt, out)
        cfg = {
            "models_dir": str(mobilenet_model.parent.parent),
            "fleet": {"enabled": True, "lockstep": True},
            "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
            "identity": {"allow_overlapping_views": True},
            "cameras": {"left": cam, "right": cam},
        }
        path = tmp_path / f"fleet{run_no}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        run = run_fleet(path, progress=False)
        assert run.ok, run.exit_codes
        gids = {
            name: set(read_results(out / name / f"{name}.global.txt").track_id.tolist())
            for name in ("left", "right")
        }
        assert len(gids["left"]) == 3 and gids["left"] == gids["right"]
        for name in ("left", "right"):  # every frame went through the barrier, and nobody was left out
            lockstep = json.loads((out / name / "summary.json").read_text())["fleet"]["lockstep"]
            assert lockstep["steps"] == 30 and lockstep["left_out"] == [] and lockstep["dropped"] == 0
        outputs.append({name: _grouping(out / name / f"{name}.global.txt") for name in ("left", "right")})
    assert outputs[0] == outputs[1]


def test_a_lockstep_replay_goes_on_at_once_when_a_camera_cannot_start(
    tmp_path: Path, mobilenet_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera whose video cannot be read fails at start and sends no marker: the fleet says so at once, naming
    the file, and tells the other camera not to wait for it (it used to wait out lockstep_timeout_s, 60 s)."""
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(320, 240), people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.path.read_bytes()[:2000])
    out = tmp_path / "runs"
    cfg = {
        "models_dir": str(mobilenet_model.parent.parent),
        "fleet": {"enabled": True, "lockstep": True, "lockstep_timeout_s": 60},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "cameras": {"left": _true_box_camera(clip.path, gt, out), "right": _true_box_camera(broken, gt, out)},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.WARNING, logger="daemon.fleet_runner"):
        run = run_fleet(path, progress=False)
    assert run.exit_codes == {"left": 0, "right": 1}
    assert "camera right exited with 1" in caplog.text  # its first 2000 bytes: an mp4 without its index
    assert "broken.mp4 (right): the MP4/MOV file is truncated or unfinished" in caplog.text
    lockstep = json.loads((out / "left" / "summary.json").read_text())["fleet"]["lockstep"]
    assert lockstep["steps"] == 30 and lockstep["left_out"] == []  # told, not timed out
    assert lockstep["waited_s"] < 30


def test_a_fleet_run_leaves_no_temporary_valkey_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded Valkey of `reid-daemon fleet` is removed with its folder (reid-valkey-*, its log) at the end
    of the run; each run used to leave one in the temporary directory."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    cam = {"source": {"uri": str(tmp_path / "missing.mp4")}, "embedder": {"type": "none"}}
    cfg = {
        "fleet": {"enabled": True},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "camera_defaults": {"output": {"dir": str(tmp_path / "runs")}},
        "cameras": {"a": cam},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO, logger="daemon.fleet_runner"):
        run = run_fleet(path, progress=False)
    assert run.exit_codes == {"a": 2} and "embedded Valkey for this fleet" in caplog.text  # source not found
    assert list(temp.glob("reid-valkey-*")) == []


def test_a_camera_folder_that_cannot_be_made_stops_the_fleet_before_any_camera_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A camera whose output.dir could not be made (a file on the way, a folder the user may not write) ended
    `reid-daemon fleet` in a NotADirectoryError / PermissionError traceback, with the cameras before it already
    started; it is one line naming the setting and the folder (exit 2), and no camera starts."""
    blocker = tmp_path / "runs-b"
    blocker.write_text("not a folder\n")
    cam = {"source": {"uri": str(tmp_path / "never-read.mp4")}, "embedder": {"type": "none"}}
    cfg = {
        "fleet": {"enabled": True},
        "bridge": {"allow_unsigned": True},
        "cameras": {
            "a": {**cam, "output": {"dir": str(tmp_path / "runs")}},
            "b": {**cam, "output": {"dir": str(blocker)}},
        },
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fleet", "--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cameras.b.output.dir: cannot write {blocker / 'b'}: Not a directory\n", err
    assert not (tmp_path / "runs" / "a" / "worker.log").exists()  # camera a was never started
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize(
    ("failure", "code", "error"),
    [
        ("video", 1, "video file not found"),  # once its models are loaded
        ("config", 2, "fleet.enabled needs an appearance embedder"),  # as its worker is built
    ],
)
def test_a_camera_that_fails_at_start_is_not_reported_with_an_earlier_runs_outputs(
    tmp_path: Path, mobilenet_model: Path, failure: str, code: int, error: str
) -> None:
    """A worker that fails before it writes anything (its video is missing; or its config: no embedder in a
    fleet), or is killed before its first identity table, left the earlier run's identities.json and
    annotated.mp4 in its folder, and the fleet's report and fleet.mp4 showed that run's people as this one's."""
    out = tmp_path / "runs"
    (out / "a").mkdir(parents=True)
    row = {"label": None, "first_seen": 1.0, "last_seen": 2.0, "frames": 5, "tracks": [1]}
    table = {"v": 1, "camera": "a", "identities": {"7": row}}
    (out / "a" / "identities.json").write_text(json.dumps(table))
    (out / "a" / "annotated.mp4").write_bytes(b"an earlier run's video")
    (out / "a" / "a.global.txt").write_text("1,7,10,10,20,40,1,-1,-1,-1\n")  # would be scored as this run's
    (out / "a" / "identities.jsonl").write_text("{}\n")
    report_dir = fleet_runner._common_parent([out / "a"])
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "timeline.png").write_bytes(b"an earlier run's picture")
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,40,1,-1,-1,-1\n")
    video = tmp_path / "missing.mp4"
    if failure == "config":  # a video it could read: only the config stops it
        video = make_video(tmp_path / "clip.mp4", frames=5, size=(160, 120), people=1)
    cam = _true_box_camera(video, gt, out)
    if failure == "config":
        cam["embedder"] = {"type": "none"}
    cfg = {
        "models_dir": str(mobilenet_model.parent.parent),
        "fleet": {"enabled": True},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "cameras": {"a": cam},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = run_fleet(path, progress=False)
    assert run.exit_codes == {"a": code} and run.report["identities"] == 0
    assert error in run.report["errors"]["a"]  # what it failed of, not something before it
    left = [f for f in camera_files("a") if (out / "a" / f).exists()]
    assert (
        left == ["status.json"] and json.loads((out / "a" / "status.json").read_text())["state"] == "failed"
    )
    assert (
        run.report_dir == report_dir and not (report_dir / "timeline.png").exists()
    )  # nobody seen: no picture


def test_the_report_names_a_camera_that_failed_before_its_source_opened_and_why(
    tmp_path: Path, mobilenet_model: Path
) -> None:
    # Regression: a worker that failed before its source opened (a: its video is missing, once its models are
    # loaded; b: its config has no embedder for the fleet) wrote no status.json, so report.md, read after the run,
    # did not name it: only the terminal's error said it failed, and why.
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,40,1,-1,-1,-1\n")
    out = tmp_path / "runs"
    missing = _true_box_camera(tmp_path / "missing.mp4", gt, out)
    cfg = {
        "models_dir": str(mobilenet_model.parent.parent),
        "fleet": {"enabled": True},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "cameras": {"a": missing, "b": {**missing, "embedder": {"type": "none"}}},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = run_fleet(path, progress=False)
    assert run.exit_codes == {"a": 1, "b": 2}
    status = json.loads((out / "a" / "status.json").read_text())
    assert status["state"] == "failed" and status["frames"] == 0
    assert "video file not found" in status["error"] and "missing.mp4" in status["error"]
    assert run.report["unfinished"] == {"a": "failed", "b": "failed"}
    assert "needs an appearance embedder" in run.report["errors"]["b"]
    md = (run.report_dir / "report.md").read_text()
    said = (
        f"**Not a whole run:** camera a failed: `{status['error']}`; camera b failed: `cameras.b.embedder: "
    )
    assert said in md


def test_cameras_left_out_by_cameras_are_not_waited_for(
    tmp_path: Path, mobilenet_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`fleet --cameras b` of a lockstep YAML with cameras a and b: b waited lockstep_timeout_s (60 s) for a's
    markers, which no worker of this run would send, and the 5 s replay took 66 s. The run keeps its cameras:
    its YAML is not followed (said)."""
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(320, 240), people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    out = tmp_path / "runs"
    cfg = {
        "models_dir": str(mobilenet_model.parent.parent),
        "fleet": {"enabled": True, "lockstep": True, "lockstep_timeout_s": 60},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "cameras": {
            "left": _true_box_camera(clip.path, gt, out),
            "right": _true_box_camera(clip.path, gt, out),
        },
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO, logger="daemon.fleet_runner"):
        run = run_fleet(path, ["right"], progress=False)
    assert run.exit_codes == {"right": 0}
    assert f"a lockstep replay runs the cameras it started with: {path} is not followed" in caplog.text
    lockstep = json.loads((out / "right" / "summary.json").read_text())["fleet"]["lockstep"]
    assert lockstep["steps"] == 30 and lockstep["left_out"] == []  # told, not timed out
    assert lockstep["waited_s"] < 30


def test_a_report_that_cannot_be_scored_says_why_and_drops_an_earlier_runs_scores(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A scenario folder with one camera's ground truth gone was reported without scores and without a word, and
    the fleet_metrics.json / .txt of an earlier scored run stayed beside the new report as if they were its."""
    out = tmp_path / "runs"
    table = {"label": None, "first_seen": 1.0, "last_seen": 2.0, "frames": 3, "tracks": [1]}
    for cam in ("a", "b"):
        (out / cam).mkdir(parents=True)
        (out / cam / "identities.json").write_text(
            json.dumps({"v": 1, "camera": cam, "identities": {"1": table}})
        )
        for name in (f"{cam}.txt", f"{cam}.global.txt"):
            (out / cam / name).write_text("1,1,10,10,20,40,1,-1,-1,-1\n")
    (tmp_path / "scenario.json").write_text("{}")
    (tmp_path / "a.gt.txt").write_text("1,1,10,10,20,40,1,1,1\n")  # b.gt.txt is missing
    (out / "fleet_metrics.json").write_text("{}")
    (out / "fleet_metrics.txt").write_text("global ids: IDF1 94.3 (an earlier run)\n")
    cams = {c: {"source": {"uri": str(tmp_path / f"{c}.mp4")}} for c in ("a", "b")}
    cfg = {
        "fleet": {"enabled": True, "mosaic": False},
        "camera_defaults": {"output": {"dir": str(out)}},
        "cameras": cams,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.WARNING, logger="daemon.fleet_runner"):
        run = report_fleet(path, progress=False)
    assert run.metrics is None and run.report["identities"] == 1
    assert f"not scored: the scenario's ground truth {tmp_path / 'b.gt.txt'} is missing" in caplog.text
    assert not (out / "fleet_metrics.json").exists() and not (out / "fleet_metrics.txt").exists()


def test_looks_from_the_ground_truth_run_through_the_fleet(tmp_path: Path) -> None:
    """Embedder type 'ground-truth' end to end (worker processes, bridge, resolver; no model): each person of the
    clip gets one global id, the same on both cameras, and the looks' width reaches the fleet."""
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(320, 240), people=3)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    out = tmp_path / "runs"
    cam = _true_box_camera(clip.path, gt, out)
    cam["embedder"] = {
        "type": "ground-truth",
        "policy": "all",
        "truth": {"path": str(gt), "similarity": 0.75},
    }
    cfg = {
        "fleet": {"enabled": True, "lockstep": True},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "identity": {"allow_overlapping_views": True, "fleet_threshold": 0.6, "look_only_threshold": 0.7},
        "cameras": {"left": cam, "right": cam},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = run_fleet(path, progress=False)
    assert run.ok, run.exit_codes
    gids = {n: set(read_results(out / n / f"{n}.global.txt").track_id.tolist()) for n in ("left", "right")}
    assert len(gids["left"]) == 3 and gids["left"] == gids["right"]
    assert np.load(out / "left" / "embeddings.npy").shape[1] == 128


@pytest.mark.parametrize(("transport", "url"), [("unix", "unix:///"), ("tcp", "redis://127.0.0.1:")])
def test_the_fleet_s_embedded_valkey_listens_on_bridge_embedded_transport(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, transport: str, url: str
) -> None:
    """`reid-daemon fleet` started its embedded Valkey on a TCP port whatever bridge.embedded_transport said
    (default unix: a socket in a folder only this user may enter, not a port any local user may connect to); it
    listens where the setting says, and the cameras resolve one another's people through it."""
    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(160, 120), people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    out = tmp_path / "runs"
    cam = _true_box_camera(clip.path, gt, out)
    cam["embedder"] = {"type": "ground-truth", "policy": "all", "truth": {"path": str(gt)}}
    cfg = {
        "fleet": {"enabled": True, "lockstep": True, "mosaic": False},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}, "embedded_transport": transport},
        "identity": {"allow_overlapping_views": True, "fleet_threshold": 0.6, "look_only_threshold": 0.7},
        "cameras": {"left": cam, "right": cam},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO, logger="daemon.fleet_runner"):
        run = run_fleet(path, progress=False)
    assert run.ok, run.exit_codes
    assert f"embedded Valkey for this fleet at {url}" in caplog.text
    gids = {n: set(read_results(out / n / f"{n}.global.txt").track_id.tolist()) for n in ("left", "right")}
    assert len(gids["left"]) == 2 and gids["left"] == gids["right"]


def test_the_fleet_puts_a_live_camera_s_earlier_run_aside_rather_than_deleting_it(tmp_path: Path) -> None:
    """`reid-daemon fleet` deleted every camera's earlier files before starting it, so that none would be read as
    this run's: a recording's run makes them again, but a live camera's events, identities and embeddings were
    lost for good, where its worker's own start keeps them in an earlier-* folder. The fleet puts a live
    camera's there too (status and all); a recording's are still removed."""
    out = tmp_path / "runs"
    cams = {"door": {"source": {"uri": "rtsp://cam.local/s"}}, "hall": {"source": {"uri": "hall.mp4"}}}
    cfg = {"camera_defaults": {"output": {"dir": str(out)}}, "cameras": cams}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(cfg))
    settings = load_settings(tmp_path / "fleet.yaml")
    recorded = {
        "events.jsonl": '{"v": 1, "event": "track.started", "track_id": 3}\n',
        "status.json": json.dumps({"v": 1, "state": "done", "frames": 12}),
        "run.json": json.dumps({"v": 1, "run": "r1", "live": True}),
    }
    for name in cams:
        (out / name).mkdir(parents=True)
        for f, text in recorded.items():
            (out / name / f).write_text(text)
    for name in cams:
        fleet_runner._ready_camera_dir(settings, name)
    [kept] = earlier_folders(out / "door")
    assert {f: (kept / f).read_text() for f in recorded} == recorded
    for name in cams:
        assert [f for f in camera_files(name) if (out / name / f).exists()] == []
    assert earlier_folders(out / "hall") == []


def test_the_fleet_leaves_the_folder_of_a_camera_whose_worker_runs_already(tmp_path: Path) -> None:
    """`reid-daemon fleet` put a live camera's files aside before starting it, whoever was writing them: a
    worker of that camera running already (a unit beside the fleet) had its files moved under it. The fleet
    readies the folder holding its lock, and refuses, naming the worker, where one holds it."""
    from _camlock import camera_lock_held

    out = tmp_path / "runs"
    cfg = {"cameras": {"door": {"source": {"uri": "rtsp://cam.local/s"}, "output": {"dir": str(out)}}}}
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(cfg))
    settings = load_settings(tmp_path / "fleet.yaml")
    (out / "door").mkdir(parents=True)
    (out / "door" / "events.jsonl").write_text('{"v": 1, "event": "track.started", "track_id": 3}\n')
    with camera_lock_held(out / "door", "door") as worker:
        with pytest.raises(ConfigError, match=f"being written by another worker, pid {worker.pid} "):
            fleet_runner._ready_camera_dir(settings, "door")
        assert (out / "door" / "events.jsonl").is_file() and earlier_folders(out / "door") == []
    fleet_runner._ready_camera_dir(settings, "door")  # its worker stopped: put aside
    assert len(earlier_folders(out / "door")) == 1


def test_the_fleet_s_progress_totals_are_the_frames_each_camera_will_deliver(tmp_path: Path) -> None:
    """The fleet counted a camera's frames as min(count, max_frames) // stride, where the source delivers
    ceil(count / stride) frames and then stops at max_frames: its bar ended short or never reached its total
    (25 frames at stride 3: 8 of 9; max_frames 5 at stride 3: 1 of 5), and a looped file showed a total."""
    clip = make_video(tmp_path / "clip.mp4", frames=25, size=(64, 48), people=1)

    def total(**source: object) -> int | None:
        cfg = {"cameras": {"a": {"source": {"uri": str(clip.path), **source}, "embedder": {"type": "none"}}}}
        (tmp_path / "f.yaml").write_text(yaml.safe_dump(cfg))
        return fleet_runner._frame_total(load_settings(tmp_path / "f.yaml"), "a")

    assert total() == 25
    assert total(stride=3) == 9
    assert total(stride=3, max_frames=5) == 5
    assert total(loop=True) is None
    assert total(loop=True, max_frames=40) == 40


def test_a_camera_reading_a_file_uri_has_a_progress_total(tmp_path: Path) -> None:
    """A file:// source was looked up as a path named 'file:///...': the camera's bar had no total."""
    clip = make_video(tmp_path / "my clip.mp4", frames=5, size=(64, 48), people=1)
    uri = "file://" + str(clip.path).replace(" ", "%20")
    cfg = {"cameras": {"a": {"source": {"uri": uri}, "embedder": {"type": "none"}}}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(cfg))
    assert fleet_runner._frame_total(load_settings(tmp_path / "f.yaml"), "a") == 5


def test_a_camera_reading_a_folder_of_images_has_a_progress_total(tmp_path: Path) -> None:
    """A camera replaying a folder of stills had no total on the fleet's bar (only files were counted), where
    ``reid-daemon run`` shows it; its total is the images the folder source delivers (stride and max_frames)."""
    folder = make_image_folder(tmp_path / "stills", frames=7, size=(64, 48), people=1).path
    (folder / "notes.txt").write_text("not an image")

    def total(**source: object) -> int | None:
        cfg = {"cameras": {"a": {"source": {"uri": str(folder), **source}, "embedder": {"type": "none"}}}}
        (tmp_path / "f.yaml").write_text(yaml.safe_dump(cfg))
        return fleet_runner._frame_total(load_settings(tmp_path / "f.yaml"), "a")

    assert total() == 7
    assert total(stride=3) == 3
    assert total(max_frames=2) == 2


def test_a_fleet_never_removes_a_camera_s_source(tmp_path: Path) -> None:
    """A camera given its own earlier annotated video as its source (runs/a/annotated.mp4): the fleet removes
    an earlier run's files before a camera starts, so it deleted the video and the camera failed on it."""
    clip = make_video(tmp_path / "runs" / "a" / "annotated.mp4", frames=3, size=(64, 48), people=1)
    cfg = {
        "fleet": {"enabled": True},
        "bridge": {"allow_unsigned": True},
        "cameras": {"a": {"source": {"uri": str(clip.path)}, "output": {"dir": str(tmp_path / "runs")}}},
    }
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"cameras\.a\.source\.uri: .*annotated\.mp4 is a file the camera"):
        run_fleet(tmp_path / "f.yaml", progress=False)
    assert clip.path.is_file()


def test_fleet_workers_log_as_the_global_options_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`reid-daemon --log-format json fleet ...` (or -q, -v) logged JSON itself, but its camera workers wrote
    plain text at INFO into their worker.log: the options were not passed on to them."""
    from daemon.cli import main

    clip = make_video(tmp_path / "clip.mp4", frames=5, size=(160, 120), people=1)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cam = {
        "source": {"uri": str(clip.path)},
        "detector": {"type": "ground-truth", "path": str(gt)},
        "embedder": {"type": "ground-truth", "truth": {"path": str(gt)}},  # looks without a model
        "output": {"dir": str(tmp_path / "runs"), "progress": False},
    }
    cfg = {"fleet": {"enabled": True}, "bridge": {"allow_unsigned": True}, "cameras": {"a": cam}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["-q", "--log-format", "json", "fleet", "--config", str(path), "--no-progress"]) == 0
    lines = (tmp_path / "runs" / "a" / "worker.log").read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    # -q quiets the fleet's console, not worker.log (a failed camera is diagnosed from it)
    assert logged and "INFO" in {r["level"] for r in logged} <= {"INFO", "WARNING"}
    assert not [line for line in lines if " INFO daemon" in line]  # no plain-text log line


def test_a_fleet_of_ones_own_recordings_is_scored_on_the_ground_truth_its_config_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A researcher's own cameras (a config written by hand, no scenario folder) could not be scored at all:
    fleet_metrics.json was written only beside a scenario.json. ``cameras.<name>.ground_truth`` names each
    camera's gt.txt, in its own video's frame numbers (here the right camera's recording starts 10 frames
    later, placed on the fleet clock by its clock_offset_s), and the run is scored on them."""
    clip = make_video(tmp_path / "left.mp4", frames=30, size=(320, 240), people=3)
    gt = clip.write_mot_gt(tmp_path / "left.gt.txt")
    late = tmp_path / "right.mp4"  # the same scene from 10 frames on, its truth renumbered from 1
    writer = cv2.VideoWriter(str(late), cv2.VideoWriter.fourcc(*"mp4v"), clip.fps, clip.size)
    for f in range(10, clip.frames):
        writer.write(clip.render(f))
    writer.release()
    right_gt = tmp_path / "right.gt.txt"
    right_gt.write_text(
        "".join(f"{b.frame - 9},{b.id},{b.x},{b.y},{b.w},{b.h},1,1,1\n" for f in clip.truth[10:] for b in f)
    )
    out = tmp_path / "runs"
    cams: dict[str, dict[str, object]] = {}
    for name, video, truth in (("left", clip.path, gt), ("right", late, right_gt)):
        cams[name] = _true_box_camera(video, truth, out)
        cams[name]["embedder"] = {
            "type": "ground-truth",
            "policy": "all",
            "truth": {"path": str(truth), "similarity": 0.75},
        }
        cams[name]["ground_truth"] = str(truth)
    cams["right"]["source"] = {"uri": str(late), "clock_offset_s": 1.0}
    cfg = {
        "fleet": {"enabled": True, "lockstep": True, "mosaic": False},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "identity": {"allow_overlapping_views": True, "fleet_threshold": 0.6, "look_only_threshold": 0.7},
        "cameras": cams,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = run_fleet(path, progress=False)
    assert run.ok, run.exit_codes
    assert run.metrics is not None
    written = json.loads((out / "fleet_metrics.json").read_text(encoding="utf-8"))
    assert written == run.metrics
    assert written["per_camera"]["right"]["IDF1"] == pytest.approx(100.0)
    assert written["global"]["IDF1"] == pytest.approx(100.0) and written["false_merge_pct"] == 0.0
    assert written["people_on_several_cameras"] == 3 and written["cross_camera_consistency"] == 1.0
    assert "global ids: HOTA" in (out / "report.md").read_text(encoding="utf-8")

    # A camera whose ground_truth is not there: not scored, a warning names it and the setting.
    cams["left"]["ground_truth"] = str(tmp_path / "missing.txt")
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.WARNING, logger="daemon.fleet_runner"):
        again = report_fleet(path, progress=False)
    assert again.metrics is None and not (out / "fleet_metrics.json").exists()
    assert f"{tmp_path / 'missing.txt'} (cameras.left.ground_truth) is missing" in caplog.text


def test_a_ground_truth_that_cannot_be_read_stops_the_fleet_before_it_runs(tmp_path: Path) -> None:
    """A camera's ground truth that could not be read (0-based frames, as some converted datasets number them)
    was found only once every camera had run to its end: the fleet stopped with the error, made no fleet.mp4,
    and left an earlier run's fleet_metrics.json and .txt beside the new report as if they were its scores. It
    is read before any camera starts (exit 2, naming the setting and the line); a report made again on a file
    that went bad since drops the earlier scores and still makes the rest."""
    out = tmp_path / "runs"
    good, bad = tmp_path / "a.gt.txt", tmp_path / "b.gt.txt"
    good.write_text("1,1,10,10,20,40,1,1,1\n")
    bad.write_text("0,1,10,10,20,40,1,1,1\n")
    cams = {
        c: {"source": {"uri": str(tmp_path / f"{c}.mp4")}, "ground_truth": str(gt)}
        for c, gt in (("a", good), ("b", bad))
    }
    cfg = {
        "fleet": {"enabled": True, "mosaic": False},
        "bridge": {"allow_unsigned": True},
        "camera_defaults": {"output": {"dir": str(out)}},
        "cameras": cams,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"cameras\.b\.ground_truth: .*b\.gt\.txt, line 1: frame must be"):
        run_fleet(path, progress=False)
    assert not out.exists()  # no camera started

    table = {"label": None, "first_seen": 1.0, "last_seen": 2.0, "frames": 1, "tracks": [1]}
    for cam in ("a", "b"):
        (out / cam).mkdir(parents=True)
        (out / cam / "identities.json").write_text(
            json.dumps({"v": 1, "camera": cam, "identities": {"1": table}})
        )
        for name in (f"{cam}.txt", f"{cam}.global.txt"):
            (out / cam / name).write_text("1,1,10,10,20,40,1,-1,-1,-1\n")
    (out / "fleet_metrics.json").write_text("{}")
    (out / "fleet_metrics.txt").write_text("global ids: IDF1 94.3 (an earlier run)\n")
    with pytest.raises(DataError, match=r"b\.gt\.txt, line 1"):
        report_fleet(path, progress=False)
    assert not (out / "fleet_metrics.json").exists() and not (out / "fleet_metrics.txt").exists()
    assert (out / "report.json").is_file()


def test_the_fleet_command_names_the_scores_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scored run wrote fleet_metrics.json and .txt beside the report, but the command's last lines named
    report.md and timeline.png only, so a user looking for the scores' file was not told where it was."""
    out = tmp_path / "runs"
    table = {"label": None, "first_seen": 1.0, "last_seen": 2.0, "frames": 1, "tracks": [1]}
    cams = {}
    for cam in ("a", "b"):
        (out / cam).mkdir(parents=True)
        (out / cam / "identities.json").write_text(
            json.dumps({"v": 1, "camera": cam, "identities": {"1": table}})
        )
        for name in (f"{cam}.txt", f"{cam}.global.txt"):
            (out / cam / name).write_text("1,1,10,10,20,40,1,-1,-1,-1\n")
        (tmp_path / f"{cam}.gt.txt").write_text("1,7,10,10,20,40,1,1,1\n")
        cams[cam] = {"source": {"uri": f"{cam}.mp4"}, "ground_truth": str(tmp_path / f"{cam}.gt.txt")}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"camera_defaults": {"output": {"dir": str(out)}}, "cameras": cams}))
    assert main(["-q", "fleet", "--config", str(path), "--report-only", "--no-progress"]) == 0
    said = capsys.readouterr().out
    files = ", ".join(
        str(out / f) for f in ("report.md", "timeline.png", "fleet_metrics.json", "fleet_metrics.txt")
    )
    assert f"  report: {files}\n" in said and "global ids: HOTA 100.0 IDF1 100.0" in said


def test_a_ground_truth_made_for_the_video_at_another_size_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A researcher who resized a recording after annotating it (or gave the truth of the full-size video) got a
    run scored on boxes that lie outside the frames, every one a miss, without a word; the fleet says so before
    it starts, naming the setting, the file, the frame size and the first such box (a video and an image folder:
    the truth of one at twice the size is warned about, its own truth is not)."""
    video = make_video(tmp_path / "a.mp4", frames=5, size=(160, 120), people=2)
    folder = make_image_folder(tmp_path / "b", frames=5, size=(160, 120), people=2)
    own, doubled = tmp_path / "own.txt", tmp_path / "doubled.txt"
    video.write_mot_gt(own)
    doubled.write_text(
        "".join(
            f"{b.frame + 1},{b.id},{2 * b.x},{2 * b.y},{2 * b.w},{2 * b.h},1,1,1\n"
            for f in video.truth
            for b in f
        )
    )
    cams = {
        "a": {"source": {"uri": str(video.path)}, "ground_truth": str(doubled)},
        "b": {"source": {"uri": str(folder.path)}, "ground_truth": str(doubled)},
        "c": {"source": {"uri": str(video.path)}, "ground_truth": str(own)},
    }
    path = tmp_path / "fleet.yaml"  # one clip on every camera: views that overlap
    path.write_text(yaml.safe_dump({"identity": {"allow_overlapping_views": True}, "cameras": cams}))
    settings = load_settings(path)
    with caplog.at_level(logging.WARNING, logger="daemon.fleet_runner"):
        fleet_runner._check_truths(tmp_path, settings, ["a", "b", "c"])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and all("lie wholly outside the camera's 160x120 frames" in m for m in said), said
    assert said[0].startswith("cameras.a.ground_truth: ") and str(doubled) in said[0]
    assert said[1].startswith("cameras.b.ground_truth: ")


def test_a_camera_left_without_ground_truth_is_said_before_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two cameras of three given their ground_truth: the run could not be scored, and the fleet said so only
    after every camera had run to its end; it says so before they start, naming the camera left without."""
    video = make_video(tmp_path / "a.mp4", frames=5, size=(160, 120), people=2)
    gt = video.write_mot_gt(tmp_path / "gt.txt")
    cams = {n: {"source": {"uri": str(video.path)}, "ground_truth": str(gt)} for n in ("a", "b")}
    cams["c"] = {"source": {"uri": str(video.path)}}
    path = tmp_path / "fleet.yaml"  # one clip on every camera: views that overlap
    path.write_text(yaml.safe_dump({"identity": {"allow_overlapping_views": True}, "cameras": cams}))
    with caplog.at_level(logging.WARNING, logger="daemon.fleet_runner"):
        fleet_runner._check_truths(tmp_path, load_settings(path), ["a", "b", "c"])
        assert "this run will not be scored: camera(s) c have no ground_truth" in caplog.text
        caplog.clear()
        fleet_runner._check_truths(tmp_path, load_settings(path), ["a", "b"])  # --cameras a,b
    assert caplog.text == ""


def test_a_config_file_that_can_no_longer_be_reached_keeps_the_worker_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose user lost the right to enter its config's folder: reading the file again raised a
    PermissionError (Path.is_dir inside load_settings), which is no ConfigError, so it ended the worker's idle
    thread and then its run. It is logged, naming the file, and the worker keeps the cameras it had. (Tests run as
    root, whom permissions do not stop: the refusal is raised where the OS would raise it.)"""
    import daemon.fleet as fleet_module
    from daemon.fleet import ConfigWatch

    path = tmp_path / "fleet.yaml"
    path.write_text("cameras: {a: {source: {uri: x.mp4}}}\n", encoding="utf-8")
    watch = ConfigWatch(path, "a")

    def refused(_: Path) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(fleet_module, "load_settings", refused)
    with caplog.at_level(logging.ERROR, logger="daemon.fleet"):
        assert watch.changed() is None
    assert f"config file {path} changed but cannot be taken" in caplog.text
    assert "Permission denied" in caplog.text


@pytest.mark.parametrize(
    ("identity", "offset_s", "warned"),
    [
        ({}, 0.0, True),  # no edge, no overlap allowed: one id on both at once is two people
        ({"adjacency": [{"a": "a", "b": "b", "min_s": 2, "max_s": 10}]}, 0.0, True),
        (
            {"adjacency": [{"a": "a", "b": "b", "min_s": 0, "max_s": 10}]},
            0.0,
            False,
        ),  # an edge of 0 s: overlap
        ({"allow_overlapping_views": True}, 0.0, False),
        ({}, 10.0, False),  # b's clip began 10 s later: its frames are never a's moments
    ],
)
def test_ground_truths_numbered_per_camera_are_warned_about(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    identity: dict[str, object],
    offset_s: float,
    warned: bool,
) -> None:
    """Each camera's truth numbered on its own (person 1 of a is not person 1 of b) was scored as if its ids were
    the same people on every camera, without a word. Where the views do not overlap, one id on both at the same
    moment (on the fleet clock: source.clock_offset_s) cannot be one person: the fleet says so before it starts,
    naming both settings and files, the id and the frames."""
    video = make_video(tmp_path / "a.mp4", frames=10, size=(160, 120), people=2)
    boxes = [b for f in video.truth for b in f]
    truths = {c: tmp_path / f"{c}.gt.txt" for c in ("a", "b")}
    for cam, person in (("a", 1), ("b", 2)):  # each camera's own person, numbered 1 there
        truths[cam].write_text(
            "".join(f"{b.frame + 1},1,{b.x},{b.y},{b.w},{b.h},1,1,1\n" for b in boxes if b.id == person)
        )
    cams = {
        "a": {"source": {"uri": str(video.path)}, "ground_truth": str(truths["a"])},
        "b": {
            "source": {"uri": str(video.path), "clock_offset_s": offset_s},
            "ground_truth": str(truths["b"]),
        },
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"identity": identity, "cameras": cams}))
    with caplog.at_level(logging.WARNING, logger="daemon.fleet_runner"):
        fleet_runner._check_truths(tmp_path, load_settings(path), ["a", "b"])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == int(warned), said
    if warned:
        assert said[0].startswith(
            f"cameras.a.ground_truth ({truths['a']}) and cameras.b.ground_truth ({truths['b']})"
        )
        assert "show id 1 at the same moment (frame 1 of a, frame 1 of b)" in said[0]


def test_a_fleet_run_keeps_the_replay_epoch_its_config_gives(tmp_path: Path, mobilenet_model: Path) -> None:
    """`fleet.epoch` in a fleet's YAML (a researcher placing replays at the time the recordings were made) was
    replaced by the fleet's start time: `reid-daemon fleet` gave every worker its own REID_FLEET__EPOCH, which
    overrides the file. The config's epoch is kept; the fleet sets one only where none is given."""
    clip = make_video(tmp_path / "clip.mp4", frames=6, size=(160, 120), people=1)
    gt = tmp_path / "gt.txt"
    gt.write_text(
        "".join(f"{b.frame + 1},{b.id},{b.x},{b.y},{b.w},{b.h},1,-1,-1,-1\n" for (b,) in clip.truth)
    )
    epoch = 1_500_000_000.0  # July 2017
    cfg = {
        "models_dir": str(mobilenet_model.parent.parent),
        "fleet": {"enabled": True, "epoch": epoch},
        "bridge": {"signing_key": {"env": "REID_TEST_FLEET_KEY"}},
        "cameras": {"a": _true_box_camera(clip.path, gt, tmp_path / "runs")},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = run_fleet(path, progress=False)
    assert run.exit_codes == {"a": 0}
    table = json.loads((tmp_path / "runs" / "a" / "identities.json").read_text())
    assert table["first_frame_time"] == pytest.approx(epoch)
    assert [i["first_seen"] for i in table["identities"].values()] == [pytest.approx(epoch)]


def test_a_fleet_removes_the_leftovers_of_its_report_files_as_it_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a fleet (or a forget making its report again) killed while it wrote report.json, report.md,
    timeline.png, fleet_metrics.* or fleet.mp4 left the hidden temporary file (.report.json.<12 hex>.tmp) in
    the output root for good; a fleet, and `fleet --report-only`, removes those LEFTOVER_AGE_S old as it
    starts (a forget may be writing a young one now), logged; nothing else of that pattern there."""
    out = tmp_path / "runs"
    (out / "a").mkdir(parents=True)
    old = time.time() - LEFTOVER_AGE_S - 60

    def plant() -> tuple[list[Path], list[Path]]:
        names = ("report.json", "report.md", "timeline.png", "fleet_metrics.txt")
        gone = [out / f".{f}.0123456789ab.tmp" for f in names] + [out / ".fleet.mp4.0123456789ab.tmp.mp4"]
        kept = [out / ".report.json.ba9876543210.tmp", out / ".notes.txt.0123456789ab.tmp"]
        kept.append(out / "a" / ".report.json.0123456789ab.tmp")  # a camera's folder: its worker's
        for each in (*gone, *kept):
            each.write_bytes(b"x" * 10)
        for each in (*gone, *kept[1:]):
            os.utime(each, (old, old))
        return gone, kept

    cam = {"source": {"uri": str(tmp_path / "missing.mp4")}, "embedder": {"type": "none"}}
    cfg = {
        "fleet": {"enabled": True, "mosaic": False},
        "bridge": {"allow_unsigned": True},
        "camera_defaults": {"output": {"dir": str(out), "video": False, "progress": False}},
        "cameras": {"a": cam},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    said = (
        f"fleet: removed 5 temporary files (50 bytes) left in {out} by a writer killed before it renamed them"
    )
    for run in (lambda: run_fleet(path, progress=False), lambda: report_fleet(path, progress=False)):
        gone, kept = plant()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="daemon.fleet_runner"):
            assert run().report_dir == out
        assert [p for p in gone if p.exists()] == [] and all(p.exists() for p in kept)
        assert said in [r.getMessage() for r in caplog.records]
        for each in kept:
            each.unlink()


def test_a_camera_whose_people_all_look_too_small_for_a_global_id_says_so(
    tmp_path: Path, valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """People 30 px tall (quality 0.21 against quality_full_height_px 128, under new_min_quality 0.25): every
    track ended without a global id and the camera said nothing (a low-resolution camera, or one far from its
    scene, simply never took part in the fleet). It now warns at FAINT_AFTER such tracks, naming the settings,
    and not again until ten times as many."""
    settings = _settings(tmp_path, valkey.url)
    link = FleetLink(settings, "a", DIM).start(live=True)  # type: ignore[arg-type]
    rng = np.random.default_rng(2)
    caplog.set_level(logging.WARNING, logger="daemon.fleet")
    try:
        for n in range(FAINT_AFTER + 1):
            tid = 10 + n
            for i in range(3):
                track = Track("a", tid, (40.0, 50.0, 50.0, 80.0), 0.9, 0, True)
                emb = _unit(PEOPLE[[n % 3]] + 0.05 * rng.normal(size=(1, DIM)))
                frame = Frame(3 * n + i, time.time(), np.zeros((300, 400, 3), np.uint8))
                dets = Detections(np.array([track.xyxy], np.float32), np.full(1, 0.9, np.float32))
                ids = link.update(FrameResult(frame, dets, emb, TrackerUpdate([track], [])))
                assert ids.assignments[0].global_id is None
            frame = Frame(3 * n + 3, time.time(), np.zeros((300, 400, 3), np.uint8))
            empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
            link.update(FrameResult(frame, empty, np.zeros((0, DIM), np.float32), TrackerUpdate([], [tid])))
            said = [r.getMessage() for r in caplog.records if "new_min_quality" in r.getMessage()]
            assert len(said) == (0 if n + 1 < FAINT_AFTER else 1), (n, said)
    finally:
        link.close()
    assert said[0].startswith(
        f"a: {FAINT_AFTER} of {FAINT_AFTER} tracks seen long enough ended without a global id"
    )
    assert "quality_full_height_px (128 px)" in said[0]
    assert faint_warning_due(100, 40, 0) is False  # distant passers-by on a camera whose people get ids
    assert [faint_warning_due(n, n, 5) for n in (49, 50)] == [False, True]
