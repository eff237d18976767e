"""daemon/fleet_who.py and `reid-daemon who`: the fleet's identities and where they are, from Valkey."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from daemon import fleet_who
from daemon.bridge import Bridge
from daemon.cli import main
from daemon.config import BridgeConfig, SecretSource, load_settings
from daemon.fleet import FleetLink
from daemon.fleet_store import FleetKeys
from daemon.fleet_who import Gathered, Sightings, gather, sightings, watch, who_text
from daemon.fleet_wire import FleetMessage
from daemon.identity import ProfileUpdate
from daemon.valkey_server import EmbeddedValkey

KEY = "who-test-fleet-key-0123456789abcdef"
T0 = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tables' times are in this host's time zone: UTC here, whatever the machine's."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _profile(cam: str, track: int, gid: int | None, t: float, **kw: object) -> FleetMessage:
    vec = np.zeros((1, 8), dtype=np.float32)
    vec[0, track % 8] = 1.0
    return FleetMessage("profile", cam, track_id=track, global_id=gid, timestamp=t, embeddings=vec, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- pure part


def test_one_row_per_identity_latest_first_with_each_camera_latest_sighting() -> None:
    msgs = [
        _profile("door", 3, 7, T0 + 1.0),
        _profile("door", 3, 7, T0 + 4.0, ended=True),
        _profile("lobby", 9, 7, T0 + 9.0, label="alice", position=(2.0, 3.5)),
        _profile("lobby", 9, 7, T0 + 8.0),  # older, arrived later: does not win
        _profile("lobby", 5, 12, T0 + 2.0),
        _profile("lobby", 6, None, T0 + 10.0),  # not resolved yet: no identity to show
    ]
    rows = sightings(msgs)
    assert [(r.global_id, r.label, r.last_seen) for r in rows] == [
        (7, "alice", T0 + 9.0),
        (12, None, T0 + 2.0),
    ]
    lobby, door = rows[0].cameras
    assert (lobby.camera, lobby.track_id, lobby.position, lobby.ended) == ("lobby", 9, (2.0, 3.5), False)
    assert (door.camera, door.track_id, door.timestamp, door.ended) == ("door", 3, T0 + 4.0, True)
    text = who_text(rows, T0 + 70.0, "site-a")
    assert "2 identities on door, lobby" in text
    assert "G7 alice" in text and "lobby track 9 08:00:08–08:00:09, 61 s ago at (2.0, 3.5)" in text
    assert "door track 3 08:00:01–08:00:04, 66 s ago (track ended)" in text
    assert json.loads(json.dumps([r.as_dict() for r in rows]))[0]["cameras"][0]["position"] == [2.0, 3.5]


def test_a_track_whose_latest_word_has_no_identity_shows_its_old_one_as_over() -> None:
    """Its spell as id 4 stays (who was seen where and when), said to be over, not shown as the track now."""
    rows = sightings(
        [_profile("a", 1, 4, T0), _profile("a", 1, None, T0 + 1.0), _profile("b", 2, 4, T0 - 5.0)]
    )
    assert [(r.global_id, [(c.camera, c.moved_on) for c in r.cameras]) for r in rows] == [
        (4, [("a", True), ("b", False)])
    ]
    text = who_text(rows, T0 + 9.0, "f")
    assert (
        "a track 1 08:00:00, 9 s ago (track no longer on this id)\n    b track 2 07:59:55, 14 s ago" in text
    )


def test_a_track_that_changes_ids_keeps_both_spells_and_the_earlier_says_it_is_over() -> None:
    """Regression: ``who`` kept one record per camera and track, so a track that went on as another identity
    (lost and back as someone else, a switch, a merge) took its earlier spell with it: G12 was no longer shown
    on door track 7 at all. Each (camera, track, identity) spell is kept; the earlier one says the track went
    on as G30, and a forget of either id leaves the other's spell (never naming the forgotten one)."""
    msgs = [
        _profile("door", 7, 12, T0 + 1.0),
        _profile("door", 7, 12, T0 + 5.0),
        _profile("door", 7, 30, T0 + 20.0),
        _profile("door", 7, 30, T0 + 25.0),
        _profile("door", 7, 12, T0 + 4.0),  # older news of the first spell, arrived late: changes nothing
    ]
    rows = sightings(msgs)
    assert [(r.global_id, r.last_seen) for r in rows] == [(30, T0 + 25.0), (12, T0 + 5.0)]
    now, then = rows[0].cameras[0], rows[1].cameras[0]
    assert (now.track_id, now.went_on_as, now.moved_on) == (7, None, False)
    assert (then.track_id, then.timestamp, then.went_on_as, then.moved_on) == (7, T0 + 5.0, 30, True)
    text = who_text(rows, T0 + 30.0, "site-a")
    assert "G30" in text and "door track 7 08:00:20–08:00:25, 5 s ago\n" in text + "\n"
    assert "door track 7 08:00:01–08:00:05, 25 s ago (track went on as G30)" in text
    assert json.loads(json.dumps([r.as_dict() for r in rows]))[1]["cameras"][0]["went_on_as"] == 30
    for gone, kept in ((12, 30), (30, 12)):
        left = sightings([*msgs, FleetMessage("forget", "ops", global_id=gone)])
        assert [(r.global_id, [c.track_id for c in r.cameras]) for r in left] == [(kept, [7])]
        assert f"G{gone}" not in who_text(left, T0 + 30.0, "site-a")
    assert "door track 7 08:00:01–08:00:05, 25 s ago (track no longer on this id)" in who_text(
        left, T0 + 30.0, "site-a"
    )


def test_a_track_that_flips_ids_again_and_again_keeps_a_bounded_number_of_spells() -> None:
    acc = Sightings()
    for k in range(3 * fleet_who.MAX_SPELLS_PER_TRACK):
        acc.add(_profile("door", 7, 100 + k, T0 + k))
    rows = acc.rows()
    assert len(rows) == fleet_who.MAX_SPELLS_PER_TRACK
    assert rows[0].global_id == 100 + 3 * fleet_who.MAX_SPELLS_PER_TRACK - 1  # the latest spells stay


def test_old_tracks_are_pruned_so_a_long_watch_stays_bounded() -> None:
    acc = Sightings()
    for m in (_profile("a", 1, 4, T0), _profile("a", 2, 5, T0 + 100.0), _profile("b", 3, 4, T0 + 50.0)):
        acc.add(m)
    acc.prune(T0 + 10.0)
    assert [(r.global_id, [c.camera for c in r.cameras]) for r in acc.rows()] == [(5, ["a"]), (4, ["b"])]


def test_a_long_watch_bounds_the_forgotten_ids_without_showing_a_recent_one_again() -> None:
    """Regression: a long ``who --watch`` bounded the forgotten ids it remembers by clearing them all once
    they passed 10 000, the one just forgotten too, so a person forgotten a moment before showed again on the
    next refresh, from the tracks the watch still held (until state_ttl_s). The oldest go first now."""
    acc = Sightings()
    acc.add(_profile("a", 1, 20_000, T0 + 100.0))
    for gid in range(1, fleet_who._MAX_FORGOTTEN + 1):
        acc.add(FleetMessage("forget", "ops", global_id=gid))
    acc.add(FleetMessage("forget", "ops", global_id=20_000))
    acc.prune(T0)
    assert acc.rows() == []
    assert len(acc._forgotten) <= fleet_who._MAX_FORGOTTEN


def test_a_forgotten_identity_is_not_shown_and_nobody_says_so() -> None:
    msgs = [_profile("a", 1, 4, T0), FleetMessage("forget", "ops", global_id=4)]
    assert sightings(msgs) == []
    assert "nobody seen" in who_text([], T0, "f")


# ----------------------------------------------------------------------------- on a real Valkey


@pytest.fixture
def valkey() -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey("tcp") as server:
        yield server


def _fleet_yaml(tmp_path: Path, url: str | None) -> Path:
    data = {
        "bridge": {"url": url, "signing_key": {"value": KEY}, "reconnect_max_s": 0.5},
        "cameras": {c: {"source": {"uri": str(tmp_path / f"{c}.mp4")}} for c in ("door", "lobby")},
    }
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_who_reads_what_the_cameras_left_in_valkey_and_what_they_say_live(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _fleet_yaml(tmp_path, valkey.url)
    settings = load_settings(path)
    now = time.time()
    with Bridge(settings.bridge, "door", receive=False) as door:  # sent before anyone asked: stored state
        door.publish(_profile("door", 3, 7, now - 20.0, label="alice"))
        door.publish(_profile("door", 4, 9, now - 15.0))
        assert door.flush(5.0)
    with Bridge(settings.bridge, "lobby", receive=False) as lobby:
        lobby.publish(_profile("lobby", 1, 7, now - 1.0, position=(4.0, 1.0)))
        assert lobby.flush(5.0)
        rows = gather(settings, listen_s=0.2, timeout_s=5.0).rows
    assert [(r.global_id, [(c.camera, c.track_id) for c in r.cameras]) for r in rows] == [
        (7, [("lobby", 1), ("door", 3)]),
        (9, [("door", 4)]),
    ]
    assert rows[0].label == "alice"
    assert main(["-q", "who", "--config", str(path), "--listen", "0.2", "--json", "--id", "9"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["global_id"] for d in doc] == [9] and doc[0]["cameras"][0]["camera"] == "door"
    assert main(["-q", "who", "--config", str(path), "--listen", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "G7 alice" in out and "lobby track 1" in out and "door track 3" in out
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--id", "99"]) == 1
    assert "global id 99: not seen" in capsys.readouterr().err


def test_a_track_the_resolver_ended_shows_as_ended_in_the_stored_state(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    # Regression: an end published without rows (nothing new since the last exemplars) only renewed the stored
    # profile, so after a replay `who` and a late-joining camera saw every such track as still alive.
    from _identity import Counter

    from daemon.config import IdentityConfig
    from daemon.fleet import to_message
    from daemon.identity import IdentityResolver
    from daemon.types import Track

    settings = load_settings(_fleet_yaml(tmp_path, valkey.url))
    res = IdentityResolver("door", 8, Counter(), IdentityConfig(publish_interval_s=1.0))
    look = np.eye(8, dtype=np.float32)[:1]
    now = time.time()
    updates = []
    for k in range(60):  # 6 s: embedded for 2 s, then seen without new looks (nothing new to publish)
        rows = look if k < 20 else np.zeros((1, 8), np.float32)
        track = Track("door", 1, (40.0, 100.0, 120.0, 300.0), 0.9, 0)
        updates += res.update(now + k / 10, [track], rows, (1280, 720)).updates
    end = res.end_track(1, now + 6.0)
    assert end is not None
    with Bridge(settings.bridge, "door", receive=False) as door:
        for u in [*updates, end]:
            door.publish(to_message(u))
        assert door.flush(5.0)
    rows_seen = gather(settings, listen_s=0.0, timeout_s=5.0).rows
    assert [(c.track_id, c.ended) for r in rows_seen for c in r.cameras] == [(1, True)]


def test_who_rejects_messages_signed_with_another_key_and_says_so(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _fleet_yaml(tmp_path, valkey.url)
    settings = load_settings(path)
    other = BridgeConfig(url=valkey.url, signing_key=SecretSource(value="x" * 32))  # type: ignore[arg-type]
    with Bridge(other, "intruder", receive=False) as intruder:
        intruder.publish(_profile("intruder", 1, 5, time.time()))
        assert intruder.flush(5.0)
        got = gather(settings, listen_s=0.2, timeout_s=5.0)
    assert got.rows == [] and got.rejected.get("forged", 0) >= 1
    assert main(["-q", "who", "--config", str(path), "--listen", "0"]) == 0
    captured = capsys.readouterr()
    assert "nobody seen" in captured.out
    assert "forged (is bridge.signing_key the fleet's key?)" in captured.err


def test_who_and_forget_with_wrong_valkey_credentials_say_why_they_could_not_reach_it(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Valkey with ACL users: a wrong password, or a user without the commands the fleet uses, is named in the
    error of who / forget (it only said 'could not reach Valkey', as if the server were down)."""
    admin = valkey.client()
    admin.execute_command(
        "ACL", "SETUSER", "viewer", "on", ">viewer-pass", "~*", "&*", "+@read", "+subscribe"
    )
    admin.execute_command("ACL", "SETUSER", "default", "on", ">admin-pass")
    path = _fleet_yaml(tmp_path, valkey.url)
    data = yaml.safe_load(path.read_text())
    data["bridge"]["password"] = {"value": "not-the-password"}
    path.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    # a refusal is a configuration error, exit 2, as a worker's is (it was exit 1, as if Valkey were down)
    assert main(["-q", "who", "--config", str(path), "--timeout", "0.5"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"error: bridge: Valkey at {valkey.url} refused this client (who-cli): ")
    assert "password" in err and "check bridge.username, bridge.password" in err
    data["bridge"].update(username="viewer", password={"value": "viewer-pass"})
    path.write_text(yaml.safe_dump(data))
    assert main(["-q", "forget", "3", "--config", str(path), "--timeout", "0.5"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "refused this client (forget-cli)" in err
    # its first write (clearing earlier acknowledgements) or its sender's first command (reading the fleet's
    # clock), whichever Valkey refused first
    assert re.search(r"User viewer has no permissions to run the '(del|time)' command", err), err


def test_who_runs_with_a_read_only_valkey_user_and_writes_nothing(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """`who` announced itself, registered as a camera, made its own stream key and pruned stored state (a
    script): it needed write and scripting rights, so an operator's read-only ACL user could not run it."""
    path = _fleet_yaml(tmp_path, valkey.url)
    with Bridge(load_settings(path).bridge, "door", receive=False) as door:
        door.publish(_profile("door", 3, 7, time.time() - 5.0, label="alice"))
        assert door.flush(5.0)
    admin = valkey.client()
    keys_before = sorted(admin.keys("*"))
    admin.execute_command(
        "ACL", "SETUSER", "viewer", "on", ">viewer-pass", "~*", "&*", "+@read", "+@pubsub", "+time"
    )
    data = yaml.safe_load(path.read_text())
    data["bridge"].update(username="viewer", password={"value": "viewer-pass"})
    path.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["-q", "who", "--config", str(path), "--listen", "0.2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(d["global_id"], d["label"]) for d in doc] == [(7, "alice")]
    assert sorted(admin.keys("*")) == keys_before  # nothing written: no stream of its own
    assert admin.zrange(FleetKeys("default").cameras, 0, -1) == [b"door"]  # not registered as a camera


def test_who_needs_the_fleet_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["who", "--config", str(_fleet_yaml(tmp_path, None))]) == 2
    assert "who needs bridge.url" in capsys.readouterr().err


def test_who_shows_every_stored_track_even_beyond_the_bridge_inbox(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    path = _fleet_yaml(tmp_path, valkey.url)
    data = yaml.safe_load(path.read_text())
    data["bridge"]["inbox_size"] = 2  # messages are folded as they arrive, not queued
    path.write_text(yaml.safe_dump(data))
    settings = load_settings(path)
    now = time.time()
    with Bridge(settings.bridge, "door", receive=False) as door:
        for track in range(1, 7):
            door.publish(_profile("door", track, 100 + track, now - 10.0 + track))
        assert door.flush(5.0)
    rows = gather(settings, listen_s=0.0, timeout_s=5.0).rows
    assert [r.global_id for r in rows] == [106, 105, 104, 103, 102, 101]


def test_watch_keeps_listening_and_shows_what_came_since(tmp_path: Path, valkey: EmbeddedValkey) -> None:
    settings = load_settings(_fleet_yaml(tmp_path, valkey.url))
    lobby = Bridge(settings.bridge, "lobby", receive=False).start()
    shown: list[list[int]] = []

    def show(got: Gathered) -> None:
        shown.append([r.global_id for r in got.rows])
        if len(shown) == 1:  # someone new comes into view between two showings
            lobby.publish(_profile("lobby", 1, 31, time.time()))
            assert lobby.flush(5.0)

    try:
        watch(settings, 1.0, show, 5.0, rounds=2)
    finally:
        lobby.close()
    assert shown == [[], [31]]


def test_watch_from_the_command_line_prints_a_json_line_each_time(
    tmp_path: Path,
    valkey: EmbeddedValkey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import daemon.fleet_who as who

    path = _fleet_yaml(tmp_path, valkey.url)
    settings = load_settings(path)
    with Bridge(settings.bridge, "door", receive=False) as door:
        door.publish(_profile("door", 2, 8, time.time()))
        assert door.flush(5.0)
    real = who.watch
    monkeypatch.setattr(who, "watch", lambda *a, **kw: real(*a, **kw, rounds=2))  # stop after two showings
    assert main(["-q", "who", "--config", str(path), "--watch", "0.2", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(json.loads(x)[0]["global_id"] == 8 for x in lines)


def test_watch_listens_for_listen_s_before_its_first_showing(
    tmp_path: Path, valkey: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`who --watch 5 --listen 3` showed its first table at once: --listen was ignored with --watch, so the
    first table missed who the live cameras were reporting. The camera reports once the watch has caught up
    with what Valkey keeps (so only listening hears it), its bridge already started: the report has the 2 s
    of listening to come."""
    import threading

    settings = load_settings(_fleet_yaml(tmp_path, valkey.url))
    shown: list[list[int]] = []
    caught_up = threading.Event()
    wait_ready = Bridge.wait_ready

    def noted(self: Bridge, timeout: float) -> bool:
        ready = wait_ready(self, timeout)
        if ready and self.camera == "who-cli":
            caught_up.set()
        return ready

    monkeypatch.setattr(Bridge, "wait_ready", noted)
    lobby = Bridge(settings.bridge, "lobby", receive=False).start()

    def a_camera_reports_soon() -> None:
        if caught_up.wait(30):
            lobby.publish(_profile("lobby", 1, 41, time.time()))
            assert lobby.flush(5.0)

    reporter = threading.Thread(target=a_camera_reports_soon)
    reporter.start()
    try:
        watch(
            settings,
            1.0,
            lambda got: shown.append([r.global_id for r in got.rows]),
            5.0,
            rounds=1,
            listen_s=2.0,
        )
    finally:
        caught_up.set()
        reporter.join()
        lobby.close()
    assert shown == [[41]]


def test_a_watch_across_a_tracks_change_of_id_shows_both_spells(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """On a real Valkey: track 7 is G12 when the watch starts (stored state), then goes on as G30 (live)."""
    settings = load_settings(_fleet_yaml(tmp_path, valkey.url))
    door = Bridge(settings.bridge, "door", receive=False).start()
    door.publish(_profile("door", 7, 12, time.time() - 2.0))
    assert door.flush(5.0)
    shown: list[list[tuple[int, bool, int | None]]] = []

    def show(got: Gathered) -> None:
        shown.append([(r.global_id, r.cameras[0].moved_on, r.cameras[0].went_on_as) for r in got.rows])
        if len(shown) == 1:
            door.publish(_profile("door", 7, 30, time.time()))
            assert door.flush(5.0)

    try:
        watch(settings, 1.0, show, 5.0, rounds=2)
    finally:
        door.close()
    assert shown == [[(12, False, None)], [(30, False, None), (12, True, 30)]]


def _update(track: int, gid: int, t: float, since: float, ended: bool = False) -> ProfileUpdate:
    look = np.eye(8, dtype=np.float32)[[track % 8]]
    return ProfileUpdate("door", track, gid, t, 0.9, look, ended=ended, since=since)


def test_who_started_after_a_track_changed_ids_shows_its_earlier_spell_too(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """Regression: Valkey keeps a track's latest profile only, so `who` started after door track 7 went on from
    G12 to G30 showed G30 alone: where G12 was, and when, was lost from its answer (seen on a replay of the
    three-camera handover: b track 23 was G85 then G89, and G85's row had no b track 23). The camera's link
    says in each profile the ids the track held before, so G12 is shown on door track 7 until it went on as
    G30 (its since). A forget of G12 takes it out of what Valkey keeps, and of what the link says after."""
    settings = load_settings(_fleet_yaml(tmp_path, valkey.url))
    now = time.time()
    with Bridge(settings.bridge, "door", receive=False) as bridge:
        link = FleetLink(settings, "door", 8, bridge=bridge)
        link._publish((_update(7, 12, now - 20, now - 20), _update(7, 12, now - 15, now - 20)))
        assert bridge.flush(5.0)  # G30's batches hold no profile of G12's
        link._publish((_update(7, 30, now - 10, now - 11), _update(7, 30, now - 5, now - 11, ended=True)))
        assert bridge.flush(5.0)
        rows = gather(settings, listen_s=0.0, timeout_s=5.0).rows
        assert [
            (r.global_id, [(c.camera, c.track_id, c.moved_on, c.went_on_as) for c in r.cameras]) for r in rows
        ] == [
            (30, [("door", 7, False, None)]),
            (12, [("door", 7, True, 30)]),
        ]
        assert rows[1].last_seen == pytest.approx(now - 11)
        assert re.search(
            r"door track 7 \S+–\S+, 11 s ago \(track went on as G30\)", who_text(rows, now, "default")
        )
        blobs = FleetKeys("default").camera_keys("door")[3]
        assert b"[12," in b"".join(valkey.client().hvals(blobs))  # G30's stored profile says G12 before it
        with Bridge(settings.bridge, "ops", receive=False) as ops:
            ops.forget(12)
            assert ops.flush(5.0)
        assert b"[12," not in b"".join(
            valkey.client().hvals(blobs)
        )  # G30's profile kept, re-signed without it
        link.spells.forget(12)
        assert [r.global_id for r in gather(settings, listen_s=0.0, timeout_s=5.0).rows] == [30]
        link._publish((_update(7, 31, now - 2, now - 2),))  # goes on again: G30 before, G12 named nowhere
        assert bridge.flush(5.0)
    rows = gather(settings, listen_s=0.0, timeout_s=5.0).rows
    assert {r.global_id: r.cameras[0].went_on_as for r in rows} == {31: None, 30: 31}
    assert b"[12," not in b"".join(valkey.client().hvals(blobs))  # the link no longer says it


def _assert_h_malformed(msg: FleetMessage, h: object, key: bytes) -> None:
    """A signed batch of ``msg`` whose "h" is ``h`` is rejected as malformed, not raising."""
    from daemon import codec
    from daemon.fleet_wire import WIRE_VERSION, MessageRejected, _item_meta, decode_batch

    meta = {
        "v": WIRE_VERSION,
        "camera": "door",
        "sender": "",
        "sent": T0,
        "items": [{**_item_meta(msg), "h": h}],
    }
    blob = codec.encode(codec.EmbeddingBatch(msg.embeddings, meta=meta), key=key)
    with pytest.raises(MessageRejected, match="malformed"):
        decode_batch(blob, key, 1 << 20)


def test_a_profile_carries_its_tracks_earlier_ids_on_the_wire_within_its_size_bound() -> None:
    """The earlier spells go out as 'h' and come back as sent; a sender packs batches by item_meta_bytes, which
    must not fall short of them; a malformed or overlong 'h' rejects the batch as malformed, not raising."""
    from daemon.fleet_wire import (
        MAX_EARLIER,
        EarlierSpell,
        decode_batch,
        encode_batch,
        item_meta_bytes,
    )

    key = KEY.encode()
    spells = tuple(EarlierSpell(10**18 + k, -1.2345678901234567e-300, T0 + k) for k in range(MAX_EARLIER))
    msg = _profile("door", 7, 30, T0 + 99.0, earlier=spells)
    back = decode_batch(encode_batch([msg], key), key, 1 << 20).messages[0]
    assert back.earlier == spells
    alone = encode_batch([_profile("door", 7, 30, T0 + 99.0)], key)
    assert item_meta_bytes(msg) - item_meta_bytes(_profile("door", 7, 30, T0)) >= len(
        encode_batch([msg], key)
    ) - len(alone)
    assert decode_batch(alone, key, 1 << 20).messages[0].earlier == ()  # a sender of before: none
    with pytest.raises(ValueError, match="at most 15"):
        _profile("door", 7, 30, T0, earlier=(*spells, EarlierSpell(1, T0, T0)))
    with pytest.raises(ValueError, match="finite"):
        EarlierSpell(1, float("nan"), T0)

    for bad in ([[1, T0]], [[0, T0, T0]], [["1", T0, T0]], "x", [[1, T0, T0]] * (MAX_EARLIER + 1)):
        _assert_h_malformed(msg, bad, key)


def test_a_link_says_a_tracks_earlier_ids_bounded_and_never_a_forgotten_one() -> None:
    from daemon.fleet import TrackSpells
    from daemon.fleet_wire import MAX_EARLIER

    spells = TrackSpells(max_tracks=2)
    assert spells.note(_update(7, 12, T0, T0)) == ()
    assert spells.note(_update(7, 12, T0 + 5, T0)) == ()
    (e,) = spells.note(_update(7, 30, T0 + 9, T0 + 8))
    assert (e.global_id, e.since, e.until) == (12, T0, T0 + 8)  # until the track took G30
    back = spells.note(_update(7, 12, T0 + 12, T0 + 12))  # back on G12: its first spell is still said
    assert [(x.global_id, x.since, x.until) for x in back] == [(12, T0, T0 + 8), (30, T0 + 8, T0 + 12)]
    spells.forget(12)
    assert [x.global_id for x in spells.note(_update(7, 40, T0 + 15, T0 + 15))] == [30]  # G12: not said
    for k in range(2 * MAX_EARLIER):
        earlier = spells.note(_update(7, 100 + k, T0 + 20 + k, T0 + 20 + k))
    assert len(earlier) == MAX_EARLIER and earlier[-1].global_id == 100 + 2 * MAX_EARLIER - 2  # the latest
    spells.note(_update(8, 50, T0, T0))
    spells.note(_update(9, 51, T0, T0))  # a third track: track 7, the least recently published, goes
    assert spells.note(_update(7, 60, T0 + 99, T0 + 99)) == ()


def test_a_track_back_on_an_id_it_held_is_shown_on_it_from_its_first_start() -> None:
    """Regression: a track that went G12, G30, then back to G12 (a look-alike won it for a moment, the
    documented hysteresis flip of a brief hide) was shown on G12 from its return alone, by a ``who`` watching
    and by one started after: the link dropped G12's first spell when the track came back to it. It keeps it
    (merged with the next spell on G12 when the track leaves again), and ``who`` shows G12 from its first start,
    with the G30 spell between, and then G12 again, as the camera saw them."""
    from daemon.fleet import TrackSpells

    spells = TrackSpells()
    updates = [
        (12, T0, T0),
        (12, T0 + 5, T0),
        (30, T0 + 9, T0 + 8),
        (12, T0 + 12, T0 + 12),
        (12, T0 + 14, T0 + 12),
    ]
    said = [spells.note(_update(7, g, t, since)) for g, t, since in updates]
    latest = _profile("door", 7, 12, T0 + 14, since=T0 + 12, earlier=said[-1])
    watched = [
        _profile("door", 7, g, t, since=since, earlier=e)
        for (g, t, since), e in zip(updates, said, strict=True)
    ]
    for msgs in ([latest], watched):  # started after (Valkey's latest profile), and watching all along
        rows = {r.global_id: r for r in sightings(msgs)}
        g12, g30 = rows[12].cameras[0], rows[30].cameras[0]
        assert (g12.start, g12.timestamp, g12.moved_on) == (T0, T0 + 14, False), g12
        assert (g30.start, g30.timestamp, g30.went_on_as) == (T0 + 8, T0 + 12, 12), g30
    left = spells.note(
        _update(7, 40, T0 + 20, T0 + 20)
    )  # and away again: one G12 spell, from its first start
    assert [(x.global_id, x.since, x.until) for x in left] == [(30, T0 + 8, T0 + 12), (12, T0, T0 + 20)]


def test_what_a_camera_says_of_an_earlier_spell_keeps_what_was_heard_of_it_live() -> None:
    """G12 heard live as alice on door track 7: the track's later word says G12 lasted until it took G30 at
    T0 + 10, which is kept with alice's name; a later word saying less (until T0 + 3) changes nothing."""
    from daemon.fleet_wire import EarlierSpell

    acc = Sightings()
    acc.add(_profile("door", 7, 12, T0 + 5.0, label="alice", position=(1.0, 2.0)))
    acc.add(_profile("lobby", 2, 12, T0 + 1.0))
    acc.add(_profile("door", 7, 30, T0 + 20.0, earlier=(EarlierSpell(12, T0, T0 + 3.0),)))
    g12 = next(r for r in acc.rows() if r.global_id == 12)
    assert (g12.label, g12.cameras[0].timestamp, g12.cameras[0].position) == ("alice", T0 + 5.0, (1.0, 2.0))
    acc.add(_profile("door", 7, 30, T0 + 21.0, earlier=(EarlierSpell(12, T0, T0 + 10.0),)))
    g12 = next(r for r in acc.rows() if r.global_id == 12)
    door = g12.cameras[0]
    assert (g12.label, door.timestamp, door.moved_on, door.went_on_as) == ("alice", T0 + 10.0, True, 30)
    assert [c.camera for c in g12.cameras] == ["door", "lobby"]


def test_who_counts_ago_on_the_fleets_clock_not_this_hosts(
    tmp_path: Path,
    valkey: EmbeddedValkey,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: a sighting's time is on the fleet's clock (Valkey's), but `who` counted 'ago' from this host's
    wall clock, so run on an operator's machine whose clock is 2 h ahead it said a person seen 20 s ago was seen
    '2.0 h ago' (and one behind, '0 s ago' for everyone); a watch pruned by it too, so such a host dropped every
    track (or kept them past state_ttl_s). Both count on the fleet's clock, as the bridge reads it."""
    path = _fleet_yaml(tmp_path, valkey.url)
    settings = load_settings(path)
    server_now = valkey.client().time()
    seen_at = server_now[0] + server_now[1] / 1e6 - 20.0
    with Bridge(settings.bridge, "door", receive=False) as door:
        door.publish(_profile("door", 3, 7, seen_at))
        assert door.flush(5.0)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7200.0)  # this host's clock, 2 h ahead of the fleet's
    capsys.readouterr()
    assert main(["-q", "who", "--config", str(path), "--listen", "0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"door track 3 \S+, 2[0-2] s ago", out), out
    shown: list[list[int]] = []
    watch(settings, 0.1, lambda got: shown.append([r.global_id for r in got.rows]), 5.0, rounds=1)
    assert shown == [[7]]  # not pruned as 2 h old


def test_who_asked_for_an_id_not_seen_says_that_id_not_that_the_fleet_saw_nobody(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `who --id 99` on a fleet that saw G7 printed "fleet 'default': nobody seen within the stored
    state", as if the fleet had seen no one, when only 99 was not seen (and a --watch of it said so each time);
    it says G99 is not among the identity the stored state holds, and the exit status is still 1."""
    path = _fleet_yaml(tmp_path, valkey.url)
    with Bridge(load_settings(path).bridge, "door", receive=False) as door:
        door.publish(_profile("door", 3, 7, time.time() - 5.0))
        assert door.flush(5.0)
    capsys.readouterr()
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--id", "99"]) == 1
    out = capsys.readouterr().out
    assert out == "fleet 'default': G99 not seen within the stored state (1 identity is)\n"
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--id", "7"]) == 0
    assert "G7" in capsys.readouterr().out


def test_who_names_the_fleets_cameras_that_saw_nobody(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: the fleet is door and lobby, and only door has seen anyone within the stored state: `who`
    said "1 identity on door" and nothing of lobby, so an operator asking who is on lobby could not tell a
    camera that saw nobody from one left out; it names the config's cameras that saw nobody."""
    path = _fleet_yaml(tmp_path, valkey.url)
    with Bridge(load_settings(path).bridge, "door", receive=False) as door:
        door.publish(_profile("door", 3, 7, time.time() - 5.0))
        assert door.flush(5.0)
    capsys.readouterr()
    assert main(["-q", "who", "--config", str(path), "--listen", "0"]) == 0
    assert (
        capsys.readouterr().out.splitlines()[0]
        == "fleet 'default': 1 identity on door; nobody seen on lobby; times UTC (UTC+0000)"
    )
    assert (
        who_text([], T0, "f", cameras=("door", "lobby")) == "fleet 'f': nobody seen within the stored state"
    )


def test_a_link_dates_each_earlier_spell_by_its_own_words_and_keeps_its_latest_tracks() -> None:
    """What TrackSpells says of a spell, at its edges: it ends no earlier than its track's latest word on that
    id (a word that comes stamped before an earlier one changes nothing of it), nor later than the word that
    went on as the next; each spell starts at its own since; at max_tracks the track least recently published
    goes, not the first one seen. Kills the mutants: until taken as the next id's since alone, the track's
    last word taken as the latest one noted, the since of a new spell not taken, the tracks kept in the order
    they came (never moved on a new word)."""
    from daemon.fleet import TrackSpells

    spells = TrackSpells(max_tracks=2)
    spells.note(_update(7, 12, T0 + 9, T0))
    spells.note(_update(7, 12, T0 + 5, T0))  # stamped before the previous word: its spell lasted to T0 + 9
    (e,) = spells.note(_update(7, 30, T0 + 10, T0 + 7))  # G30 taken at T0 + 7, before G12's last word
    assert (e.global_id, e.since, e.until) == (12, T0, T0 + 9)
    first, e = spells.note(_update(7, 12, T0 + 20, T0 + 15))  # back on G12: G30's spell from its own since
    assert (e.global_id, e.since, e.until) == (30, T0 + 7, T0 + 15)
    assert (first.global_id, first.since, first.until) == (12, T0, T0 + 9)  # G12's first spell, still said
    spells.note(_update(8, 40, T0 + 1, T0 + 1))
    (e,) = spells.note(_update(8, 41, T0 + 2, T0 + 6))  # a since past its word's time: until the word
    assert (e.global_id, e.until) == (40, T0 + 2)
    spells.note(_update(7, 12, T0 + 21, T0 + 20))  # track 7 published after track 8
    spells.note(_update(9, 50, T0 + 22, T0 + 22))  # a third: track 8 goes, not 7
    assert [x.global_id for x in spells.note(_update(7, 60, T0 + 23, T0 + 23))] == [30, 12]
    assert spells.note(_update(8, 70, T0 + 24, T0 + 24)) == ()


def test_a_camera_says_no_earlier_spell_of_an_id_forgotten_here_or_elsewhere(
    tmp_path: Path, valkey: EmbeddedValkey
) -> None:
    """On a real Valkey: door track 7 went from G12 to G30 and track 8 from G20 to G21; G12 is forgotten on this
    camera's link (forget), G20 by a forget heard from the fleet. The next ids the tracks take are published
    without either: who shows G30 and G21 before them, and neither G12 nor G20. Kills the mutants: the link's
    forget, or its taking of a forget heard, leaving the tracks' spells as they were."""
    settings = load_settings(_fleet_yaml(tmp_path, valkey.url))
    now = time.time()
    with Bridge(settings.bridge, "door", receive=False) as bridge:
        link = FleetLink(settings, "door", 8, bridge=bridge)
        link._publish((_update(7, 12, now - 20, now - 20), _update(8, 20, now - 20, now - 20)))
        link._publish((_update(7, 30, now - 10, now - 10), _update(8, 21, now - 10, now - 10)))
        assert bridge.flush(5.0)
        link.forget(12)
        link._take(FleetMessage("forget", "lobby", global_id=20, timestamp=now - 5))
        link._publish((_update(7, 31, now - 2, now - 2), _update(8, 22, now - 2, now - 2)))
        assert bridge.flush(5.0)
    rows = gather(settings, listen_s=0.0, timeout_s=5.0).rows
    assert {(r.global_id, r.cameras[0].track_id, r.cameras[0].went_on_as) for r in rows} == {
        (31, 7, None),
        (30, 7, 31),
        (22, 8, None),
        (21, 8, 22),
    }
    blobs = FleetKeys("default").camera_keys("door")[3]
    stored = b"".join(valkey.client().hvals(blobs))
    assert b"[12," not in stored and b"[20," not in stored


def test_an_earlier_spell_is_refused_for_any_field_not_a_number_it_can_be() -> None:
    """Each field of an earlier spell is checked: an until of NaN or infinity, a global id of true (a bool is an
    int to Python), a since or until of a string; on the wire a true or a string is a malformed batch. Kills
    the mutants: until not checked for finiteness, a bool taken as global id 1."""
    from daemon.fleet_wire import EarlierSpell

    for bad in ((1, T0, float("inf")), (1, T0, float("nan")), (True, T0, T0), (1, "T0", T0)):
        with pytest.raises(ValueError, match="earlier spell's"):
            EarlierSpell(*bad)  # type: ignore[arg-type]
    key = KEY.encode()
    msg = _profile("door", 7, 30, T0)
    for h in ([[True, T0, T0]], [[1, T0, "T0"]]):  # the codec writes no NaN nor infinity
        _assert_h_malformed(msg, h, key)


def test_a_second_forget_finds_a_batch_the_first_re_signed(tmp_path: Path, valkey: EmbeddedValkey) -> None:
    """On a real Valkey: door track 7 was G12, G30, then G40 (its stored profile says both before it). A forget
    of G12 re-signs that batch without it; its gid list must still name G30, so a later forget of G30 finds it
    and Valkey holds neither. Kills the mutant: the re-signed batch's gid list made of its present ids alone."""
    settings = load_settings(_fleet_yaml(tmp_path, valkey.url))
    now = time.time()
    with Bridge(settings.bridge, "door", receive=False) as bridge:
        link = FleetLink(settings, "door", 8, bridge=bridge)
        for gid, t in ((12, now - 30), (30, now - 20), (40, now - 10)):
            link._publish((_update(7, gid, t, t),))
            assert bridge.flush(5.0)
    blobs = FleetKeys("default").camera_keys("door")[3]
    assert b"[30," in b"".join(valkey.client().hvals(blobs))
    with Bridge(settings.bridge, "ops", receive=False) as ops:
        for gid in (12, 30):
            ops.forget(gid)
            assert ops.flush(5.0)
    stored = b"".join(valkey.client().hvals(blobs))
    assert b"[12," not in stored and b"[30," not in stored
    assert [r.global_id for r in gather(settings, listen_s=0.0, timeout_s=5.0).rows] == [40]


def test_a_live_word_as_late_as_what_a_later_word_says_is_kept_and_spells_stay_bounded() -> None:
    """G12 heard live on door track 7 at T0 + 10 as alice at (1, 2); the track's later word says G12 lasted until
    T0 + 10 too: the live word, with its place, is kept. A word bringing 15 earlier spells at once onto a track
    that holds 16 leaves it the latest 16 (MAX_SPELLS_PER_TRACK), not one fewer than it had plus the new. Kills
    the mutants: a said spell taking a live word's place on a tie, the bound trimming one spell a word."""
    from daemon.fleet_who import MAX_SPELLS_PER_TRACK
    from daemon.fleet_wire import MAX_EARLIER, EarlierSpell

    acc = Sightings()
    acc.add(_profile("door", 7, 12, T0 + 10.0, label="alice", position=(1.0, 2.0)))
    acc.add(_profile("door", 7, 30, T0 + 20.0, earlier=(EarlierSpell(12, T0, T0 + 10.0),)))
    door = next(r for r in acc.rows() if r.global_id == 12).cameras[0]
    assert (door.timestamp, door.position, door.went_on_as) == (T0 + 10.0, (1.0, 2.0), 30)
    for first in (100, 200):
        said = tuple(EarlierSpell(first + k, T0 + first + k, T0 + first + k + 1) for k in range(MAX_EARLIER))
        acc.add(_profile("door", 7, first + 50, T0 + first + 60.0, earlier=said))
    ids = sorted(r.global_id for r in acc.rows())
    assert ids == [*range(200, 200 + MAX_EARLIER), 250] and len(ids) == MAX_SPELLS_PER_TRACK


def test_who_shows_every_visit_of_an_identity_to_a_camera_newest_first_and_bounded(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `who` showed one sighting per camera for each identity, the latest: G12 walked past the door
    at 10:00 (track 3) and again at 10:20 (track 8), and only 10:20 was shown; what a security user asks ("when
    was G12 at the door") lost the first visit, which Valkey still held. On a real Valkey: every visit is shown,
    each with its span (from when the track took the id), most recent first, in the table, the JSON and a watch;
    --sightings bounds them per camera and the table says how many earlier are not shown."""
    path = _fleet_yaml(tmp_path, valkey.url)
    settings = load_settings(path)
    server = valkey.client().time()
    now = server[0] + server[1] / 1e6
    visits = ((3, now - 1200.0, now - 1170.0), (5, now - 600.0, now - 590.0), (8, now - 60.0, now - 50.0))
    with Bridge(settings.bridge, "door", receive=False) as door:
        for track, since, until in visits:
            door.publish(_profile("door", track, 12, since, since=since))
            door.publish(_profile("door", track, 12, until, since=since, ended=True))
        assert door.flush(5.0)
    with Bridge(settings.bridge, "lobby", receive=False) as lobby:
        lobby.publish(_profile("lobby", 1, 12, now - 30.0, since=now - 40.0))
        assert lobby.flush(5.0)
    (row,) = gather(settings, listen_s=0.0, timeout_s=5.0).rows
    assert [(v.camera, [(c.track_id, c.start, c.timestamp) for c in v.sightings]) for v in row.visits] == [
        ("lobby", [(1, now - 40.0, now - 30.0)]),
        ("door", [(t, since, until) for t, since, until in reversed(visits)]),
    ]
    capsys.readouterr()
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--sightings", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    clock = [time.strftime("%H:%M:%S", time.localtime(round(t))) for v in visits for t in v[1:]]
    assert lines[1:] == [
        "  G12",
        f"    lobby track 1 {time.strftime('%H:%M:%S', time.localtime(round(now - 40.0)))}–"
        f"{time.strftime('%H:%M:%S', time.localtime(round(now - 30.0)))}, 30 s ago",
        f"    door track 8 {clock[4]}–{clock[5]}, 50 s ago (track ended)",
        f"    door track 5 {clock[2]}–{clock[3]}, 10 min ago (track ended)",
        "    door: 1 earlier sighting not shown (--sightings 3 shows them)",
    ]
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--json", "--id", "12"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    lobby, entry = doc["cameras"]
    assert (entry["camera"], entry["track_id"], entry["since"], entry["timestamp"]) == (
        "door",
        8,
        *visits[2][1:],
    )
    assert [(e["track_id"], e["since"], e["timestamp"], e["ended"]) for e in entry["earlier"]] == [
        (5, *visits[1][1:], True),
        (3, *visits[0][1:], True),
    ]
    assert entry["earlier_not_shown"] == 0 and lobby["earlier"] == [] and lobby["earlier_not_shown"] == 0
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--json", "--sightings", "1"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert [(c["track_id"], c["earlier"], c["earlier_not_shown"]) for c in doc["cameras"]] == [
        (1, [], 0),
        (8, [], 2),
    ]
    shown: list[list[int]] = []
    watch(
        settings, 0.1, lambda got: shown.append([c.track_id for c in got.rows[0].visits[1].sightings]), 5.0, 1
    )
    assert shown == [[8, 5, 3]]


def test_a_sighting_is_dated_where_it_is_not_today_and_the_zone_is_named() -> None:
    """A span that began the day before `now` carries its date, an end on another day than its start its own;
    a word without ``since`` (a sender of before it) spans from the first word heard, even one heard late; the
    help names the default number of sightings the code uses."""
    midnight = 1_800_057_600.0  # 2027-01-16 00:00:00 UTC
    rows = sightings(
        [
            _profile("door", 1, 5, midnight - 30.0, since=midnight - 60.0),
            _profile("door", 1, 5, midnight + 30.0, since=midnight - 60.0, ended=True),
            _profile("lobby", 2, 5, midnight + 50.0),
            _profile("lobby", 2, 5, midnight + 40.0),  # older, came late: the spell began by then
        ]
    )
    text = who_text(rows, midnight + 3600.0, "f")
    assert text.splitlines()[0] == "fleet 'f': 1 identity on door, lobby; times UTC (UTC+0000)"
    assert "    lobby track 2 00:00:40–00:00:50, 59 min ago" in text
    assert "    door track 1 2027-01-15 23:59:00–2027-01-16 00:00:30, 60 min ago (track ended)" in text
    assert f"(default {fleet_who.DEFAULT_SIGHTINGS}:" in " ".join(_who_help().split())


def _who_help() -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["who", "--help"])
    return out.getvalue()


def test_a_label_with_control_characters_is_shown_escaped_on_its_own_line() -> None:
    """Regression: a label is any string up to 255 bytes (gallery, wire), and `who` printed it raw: one holding a
    newline and a terminal escape ("eve\\x1b[2J\\n  G99 mallory") cleared an operator's screen and added a row
    of an identity nobody saw. Control characters are shown as their escapes; JSON keeps the label as it is."""
    label = "eve\x1b[2J\n  G99 mallory"
    rows = sightings([_profile("door", 1, 5, T0, label=label)])
    lines = who_text(rows, T0 + 1.0, "f").splitlines()
    assert lines[1] == "  G5 eve\\x1b[2J\\n  G99 mallory" and len(lines) == 3
    assert "\x1b" not in who_text(rows, T0 + 1.0, "f")
    assert json.loads(json.dumps(rows[0].as_dict()))["label"] == label


def test_who_by_id_names_the_other_ids_of_its_name_and_by_name_shows_them_all(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: two identities of one name (the door's camera merged G5 into G3 by the name 'jane doe', but
    G5's ended track stays in Valkey under G5; the lobby never merged them) were told apart with nothing
    linking them: `who --id 3` showed G3's visits alone, and a security user asking where jane doe was missed
    G5's. `who --id 3` names G5 as also named so and how to see both; `--name` shows every identity of the name
    (text, JSON); a name nobody bears is said not seen, exit status 1."""
    path = _fleet_yaml(tmp_path, valkey.url)
    settings = load_settings(path)
    now = time.time()
    with Bridge(settings.bridge, "door", receive=False) as door:
        door.publish(_profile("door", 1, 5, now - 300.0, label="jane doe", ended=True))
        door.publish(_profile("door", 2, 3, now - 20.0, label="jane doe"))
        door.publish(_profile("door", 4, 9, now - 10.0, label="bob"))
        assert door.flush(5.0)
    capsys.readouterr()
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--id", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "  G3 jane doe" and "G5" not in "\n".join(out[:-1])
    assert out[-1] == "  also named jane doe: G5 (--name 'jane doe' shows them all)"
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--name", "jane doe"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fleet 'default': 2 identities on door;") and "G9" not in out
    assert [line for line in out.splitlines() if line.startswith("  G")] == ["  G3 jane doe", "  G5 jane doe"]
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--name", "jane doe", "--json"]) == 0
    assert [d["global_id"] for d in json.loads(capsys.readouterr().out)] == [3, 5]
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--name", "eve"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "fleet 'default': 'eve' not seen within the stored state (3 identities are)\n"
    assert "'eve': not seen" in captured.err


def test_who_asked_for_a_forgotten_id_says_it_was_forgotten_not_unseen(
    tmp_path: Path, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: after `reid-daemon forget 12`, `who --id 12` said "G12 not seen within the stored state", as
    of someone the fleet never saw, though the fleet keeps word of the forget (bridge.forget_keep_s, 30 days).
    `who` reads the stored forgets too (a read-only user can) and says G12 was forgotten; an id never seen is
    still said not seen, and the other identities are shown as before."""
    path = _fleet_yaml(tmp_path, valkey.url)
    settings = load_settings(path)
    with Bridge(settings.bridge, "door", receive=False) as door:
        door.publish(_profile("door", 3, 12, time.time() - 5.0))
        door.publish(_profile("door", 4, 7, time.time() - 5.0))
        assert door.flush(5.0)
    with Bridge(settings.bridge, "ops", receive=False) as ops:
        ops.forget(12)
        assert ops.flush(5.0)
    capsys.readouterr()
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--id", "12"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "fleet 'default': G12 was forgotten (reid-daemon forget): nothing of it is kept\n"
    assert captured.err.endswith("global id 12: forgotten\n")
    assert main(["-q", "who", "--config", str(path), "--listen", "0", "--id", "13"]) == 1
    assert "G13 not seen within the stored state (1 identity is)" in capsys.readouterr().out
    got = gather(settings, listen_s=0.0, timeout_s=5.0)
    assert [r.global_id for r in got.rows] == [7] and 12 in got.forgotten


def test_each_earlier_spell_of_a_track_says_the_id_it_went_on_as_next_not_the_latest() -> None:
    """Regression: door track 7 was G1, then G2, then G3, and `who` said G1's spell "went on as G3" (every
    earlier spell named the track's latest id), so following a person from id to id skipped G2, and with G2
    forgotten it still named G3 for G1. Each spell names the id that came next; a forgotten next is named
    nowhere ("no longer on this id")."""
    msgs = [_profile("door", 7, g, T0 + 10.0 * k, since=T0 + 10.0 * k) for k, g in enumerate((1, 2, 3))]
    rows = {r.global_id: r.cameras[0] for r in sightings(msgs)}
    assert {g: (c.moved_on, c.went_on_as) for g, c in rows.items()} == {
        3: (False, None),
        2: (True, 3),
        1: (True, 2),
    }
    rows = {r.global_id: r.cameras[0] for r in sightings([*msgs, FleetMessage("forget", "ops", global_id=2)])}
    assert {g: (c.moved_on, c.went_on_as) for g, c in rows.items()} == {3: (False, None), 1: (True, None)}
    assert "door track 7 08:00:00, 30 s ago (track went on as G2)" in who_text(
        sightings(msgs), T0 + 30.0, "f"
    )


@pytest.mark.parametrize("bad", ["0", "-3", "x"])
def test_who_refuses_an_id_that_no_identity_can_have(
    tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `who --id 0` and `--id -3` were taken and answered "G-3 not seen within the stored state", as if
    such an id could have been seen; global ids count from 1. They are usage errors now, naming the problem."""
    with pytest.raises(SystemExit) as stop:
        main(["who", "--config", str(_fleet_yaml(tmp_path, "redis://127.0.0.1:1")), "--id", bad])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --id:" in err and ("must be 1 or more" in err or "not a whole number" in err)
