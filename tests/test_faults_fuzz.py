"""Fuzzing the bridge's message decoder (hypothesis): whatever arrives, ``decode_batch`` returns a valid batch or
raises ``MessageRejected`` with a known reason; nothing else escapes (a crash there would kill the receiver).

Four sources of input: random bytes; valid signed batches mutated (bit flips, truncation, appended bytes,
spliced ranges), decoded with and without the key (without, a signed blob is accepted unchecked, so the
mutations reach the payload parser); validly signed blobs whose meta object is arbitrary JSON; and validly
signed blobs whose items mix valid fields with wrong types and out-of-range values.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import codec
from daemon.fleet_wire import REASONS, Batch, FleetMessage, MessageRejected, decode_batch, encode_batch

KEY = b"fleet-key-for-fuzzing-0123456789"
MAX_BYTES = 64 * 1024
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def check(blob: bytes, key: bytes | None) -> Batch | None:
    """Decode; the only acceptable outcomes are a well-formed batch or MessageRejected with a known reason."""
    try:
        batch = decode_batch(blob, key, MAX_BYTES)
    except MessageRejected as e:
        assert e.reason in REASONS
        return None
    assert batch.messages and all(isinstance(m, FleetMessage) for m in batch.messages)
    for m in batch.messages:
        assert m.embeddings.ndim == 2 and np.isfinite(m.embeddings).all()
        assert math.isfinite(m.timestamp) and math.isfinite(m.quality) and m.camera == batch.camera
    return batch


def valid_blob(n_msgs: int, rows: int, dim: int, seed: int, dtype: str) -> bytes:
    rng = np.random.default_rng(seed)
    msgs = [
        FleetMessage(
            "profile",
            "cam-a",
            track_id=i,
            global_id=i + 1,
            label=None if i % 2 else f"person {i}",
            timestamp=1000.0 + i,
            quality=0.5,
            embeddings=rng.standard_normal((rows, dim)).astype(np.float32),
            sender="s" * 32,
            seq=i + 1,
        )
        for i in range(n_msgs)
    ]
    return encode_batch(msgs, KEY, dtype, sent_at=1000.0)  # type: ignore[arg-type]


blobs = st.builds(
    valid_blob,
    n_msgs=st.integers(1, 4),
    rows=st.integers(0, 3),
    dim=st.integers(1, 16),
    seed=st.integers(0, 1000),
    dtype=st.sampled_from(["float16", "float32"]),
)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(blob: bytes) -> None:
    check(blob, KEY)
    check(blob, None)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    blob = bytearray(draw(blobs))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "append", "splice", "byte"]))
        pos = draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "flip" and blob:
            blob[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and blob:
            blob[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del blob[pos:]
        elif op == "append":
            blob += draw(st.binary(min_size=1, max_size=64))
        else:
            blob[pos:pos] = draw(st.binary(max_size=64))
    return bytes(blob)


@FUZZ
@given(mutated())
def test_mutated_valid_batches(blob: bytes) -> None:
    check(blob, None)  # unchecked signature: the mutation reaches the payload and meta parsers
    check(blob, KEY)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


def _hostile_meta_bytes(meta: dict[str, Any], limit: int) -> bytes:
    """Meta JSON as a hostile peer may write it: NaN and Infinity tokens included (our encoder refuses them,
    but ``json.loads`` on the receiving side accepts them)."""
    body = json.dumps(meta, allow_nan=True).encode("utf-8")
    return struct.pack("<I", len(body)) + body


def signed(meta: dict[str, Any], rows: int, dim: int) -> bytes:
    """A blob signed with the fleet key, so it passes the signature check and reaches the meta parser."""
    emb = np.ones((rows, dim), np.float32) / math.sqrt(dim)
    with mock.patch.object(codec, "_meta_bytes", _hostile_meta_bytes):
        return codec.encode(codec.EmbeddingBatch(emb, meta=meta), dtype="float16", key=KEY)


@FUZZ
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.integers(0, 3), st.integers(1, 8))
def test_signed_blobs_with_arbitrary_meta(meta: dict[str, Any], rows: int, dim: int) -> None:
    check(signed(meta, rows, dim), KEY)


item_fields = {
    "k": st.sampled_from(["profile", "forget", "hello", "bogus", ""]) | json_values,
    "t": st.integers(-5, 2**40) | json_values,
    "g": st.none() | st.integers(-3, 2**64) | json_values,
    "l": st.none() | st.text(max_size=10) | json_values,
    "ts": st.floats() | st.integers(-(2**70), 2**70) | json_values,
    "q": st.floats() | json_values,
    "n": st.integers(-3, 2**64) | json_values,
    "r": st.integers(-2, 4) | json_values,
    "e": st.booleans() | json_values,
    "s": st.none() | st.floats() | json_values,
}


@FUZZ
@given(
    st.lists(st.fixed_dictionaries({}, optional=item_fields), min_size=0, max_size=4),
    st.sampled_from([1, 2, "1", None, True]),
    st.text(max_size=80) | json_values,
    st.floats() | json_values,
    st.integers(0, 4),
)
def test_signed_blobs_with_hostile_items(
    items: list[Any], version: Any, sender: Any, sent: Any, rows: int
) -> None:
    meta = {"v": version, "camera": "cam-a", "sender": sender, "sent": sent, "items": items}
    check(signed(meta, rows, 4), KEY)


def test_a_signed_meta_holding_an_integer_of_5000_digits_is_rejected() -> None:
    """json.loads refuses an integer of more than 4300 digits (sys.int_max_str_digits) with a plain ValueError,
    which the codec did not take for bad JSON: it left decode_batch (and codec.decode, a gallery file's load)
    as a ValueError, out of the receiver's handling, from a blob carrying a valid signature."""
    body = b'{"v":1,"camera":"cam-a","sender":"s","sent":1,"items":[{"t":' + b"9" * 5000 + b"}]}"
    with mock.patch.object(codec, "_meta_bytes", lambda meta, limit: struct.pack("<I", len(body)) + body):
        blob = codec.encode(codec.EmbeddingBatch(np.ones((0, 4), np.float32), meta={}), key=KEY)
    assert check(blob, KEY) is None


def test_ids_past_int64_are_rejected_before_they_reach_the_resolver() -> None:
    """A signed profile whose global id, track id or earlier spell's id passed 2**63 - 1 was decoded, and the
    receiving camera's resolver then raised OverflowError putting it into its int64 arrays, out of its handling:
    the worker stopped. Such a batch is malformed; the largest id is taken and resolved."""
    from daemon.config import IdentityConfig
    from daemon.fleet import to_update
    from daemon.identity import IdentityResolver

    base = {
        "k": "profile",
        "t": 3,
        "g": 7,
        "l": None,
        "ts": 1000.0,
        "q": 0.9,
        "n": 0,
        "r": 1,
        "e": False,
        "s": None,
    }
    for bad in (
        {"g": 2**63},
        {"t": 2**63},
        {"t": -(2**63) - 1},
        {"n": 2**63},
        {"h": [[2**63, 990.0, 995.0]]},
    ):
        meta = {"v": 1, "camera": "cam-a", "sender": "s", "sent": 1000.0, "items": [base | bad]}
        assert check(signed(meta, 1, 4), KEY) is None, bad
    meta = {"v": 1, "camera": "cam-a", "sender": "s", "sent": 1000.0, "items": [base | {"g": 2**63 - 1}]}
    batch = check(signed(meta, 1, 4), KEY)
    assert batch is not None and batch.messages[0].global_id == 2**63 - 1
    resolver = IdentityResolver("cam-b", 4, lambda n=1: 1, IdentityConfig())
    assert resolver.ingest_remote(to_update(batch.messages[0], 4)) is True


def test_the_fuzzers_reach_acceptance() -> None:
    """The strategies are not all rejects: a valid blob decodes (with and without the key), a flipped one not."""
    blob = valid_blob(2, 2, 8, 0, "float16")
    assert check(blob, KEY) is not None and check(blob, None) is not None
    tampered = bytearray(blob)
    tampered[-40] ^= 1
    assert check(bytes(tampered), KEY) is None


@pytest.mark.parametrize(
    "label",
    [None, "", "jane", "Zoë Smith", "\x01\x02\x1f" * 20, '"\\' * 30, "漢字😀" * 25],
)
@pytest.mark.parametrize("placed", [False, True])
def test_the_senders_bound_on_a_messages_meta_holds_for_every_message(
    label: str | None, placed: bool
) -> None:
    """A sender packs batches by fleet_wire.item_meta_bytes, a bound taken without writing the JSON (writing it
    for every message published cost a fifth of the bridge's throughput); the bound must never be under the
    entry's real size, or a full batch comes out over bridge.max_message_bytes and is dropped. Every number at
    its longest, labels of control characters (\\uXXXX), quotes and 4-byte characters, places and velocities."""
    from daemon.fleet_wire import _item_meta, _json_bytes, item_meta_bytes

    long_float = -1.2345678901234567e-300
    msg = FleetMessage(
        kind="progress",
        camera="c" * 200,
        track_id=-(2**63),
        global_id=2**63 - 1,
        label=label,
        timestamp=long_float,
        quality=long_float,
        seq=2**63 - 1,
        since=long_float,
        embeddings=np.ones((3, 4), np.float32),
        position=(long_float, long_float) if placed else None,
        velocity=(long_float, long_float) if placed else None,
    )
    exact = _json_bytes(_item_meta(msg)) + 1
    assert exact <= item_meta_bytes(msg) <= exact + 6 * len(label or "") + 200
