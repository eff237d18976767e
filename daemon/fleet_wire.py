"""Fleet messages and their wire format: signed batches of the project codec (daemon/codec.py).

A :class:`FleetMessage` is what a camera tells the fleet: ``profile`` (a track's exemplar embeddings, quality,
capture time, global id and label when resolved), ``forget`` (erase a global id everywhere), ``hello`` (a
worker started) or ``progress`` (lockstep replays, daemon/lockstep.py: the camera has sent everything from
before ``ts``; ``e`` = it has finished; a reader older than this kind rejects its batch as malformed, so
lockstep is for fleets of one version). A bridge sends its queued messages as *batches*: one codec blob
holding every message's exemplar rows, one after the other (float16 or float32), and a meta JSON object::

    {"v": 1, "camera": C, "sender": S, "sent": t, "items": [{"k": kind, "t": track id, "g": global id | null,
     "l": label | null, "ts": capture time, "q": quality, "n": sequence number, "r": rows, "e": ended,
     "s": since | null, "p": [x, y] (optional), "w": [vx, vy] (optional), "h": [[g, since, until], ...]
     (optional)}, ...]}

``p`` (where the track was on the site plan at ``ts``) and ``w`` (its velocity there) are optional: readers of
the first version ignore them and a message without them has none, so cameras with and without sites mix
during an upgrade. So is ``"h": [[global id, since, until], ...]``, the global ids the track held before its
present one (:class:`EarlierSpell`, at most ``MAX_EARLIER``, oldest first): Valkey keeps a track's latest
profile only, and it is what tells ``reid-daemon who`` started later where the track was under those ids.
``sent`` is on the fleet's clock (Valkey's time as the sender read it, daemon/clocks.py); an optional
``"wall"`` beside it is the sender's own wall clock then (what tells a peer whose clock lags; a batch without
it, from an older sender, has ``sent`` on that clock).

signed as a whole with HMAC-SHA256 (the codec's tag). One blob per batch instead of one per message divides
the fixed cost of encoding, signing, decoding and storing by the batch size (measured in
benchmarks/bridge_bench.py). ``decode_batch`` never raises anything but :class:`MessageRejected`, whose
``reason`` is one of unsigned, forged, malformed, oversized, stale, future, version.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast, get_args

import numpy as np

from daemon import codec
from daemon.config import LABEL_MAX_BYTES
from daemon.errors import DataError
from daemon.types import FloatArray, Position, finite_pair

WIRE_VERSION = 1
MAX_ITEMS = 10_000  # messages in one batch (a publish_batch bound, with room)
MAX_SENDER_CHARS = 64
# the largest global id, track id or sequence number (int64: the resolver's arrays hold them)
MAX_ID = 2**63 - 1
MAX_EARLIER = 15  # earlier spells one profile carries (the latest): with its present one, who's 16 per track
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,200}$")

MessageKind = Literal["profile", "forget", "hello", "progress"]
RejectReason = Literal["unsigned", "forged", "malformed", "oversized", "stale", "future", "version"]
KINDS: tuple[str, ...] = get_args(MessageKind)
REASONS: tuple[str, ...] = get_args(RejectReason)


class MessageRejected(DataError):
    """A received blob is not an acceptable fleet batch; ``reason`` says why (one of RejectReason)."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


@dataclass(frozen=True)
class EarlierSpell:
    """A global id a track held before its present one: from ``since`` (when it took it) to ``until`` (when it
    went on as another; seconds on the fleet's clock)."""

    global_id: int
    since: float
    until: float

    def __post_init__(self) -> None:
        gid = self.global_id
        if isinstance(gid, bool) or not isinstance(gid, int) or not 1 <= gid <= MAX_ID:
            raise ValueError(f"an earlier spell's global_id must be an int in [1, {MAX_ID}], got {gid!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"an earlier spell's {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))


def _no_vectors() -> FloatArray:
    return np.zeros((0, 1), np.float32)


@dataclass(frozen=True, eq=False)
class FleetMessage:
    """One message of the fleet.

    ``profile``: a track's exemplar embeddings (K, D) with its quality (higher is better), capture time
    ``timestamp`` (s), global id / label when resolved, ``since`` (when the track took that global id; None =
    ``timestamp``), ``earlier`` (the global ids it held before, at most ``MAX_EARLIER``, oldest first) and
    ``ended`` (the track is over); K = 0 is a keep-alive that renews the track without new
    exemplars (stored state keeps the last ones). ``forget``: erase ``global_id`` everywhere; ``hello``: a
    worker started; ``progress``: (lockstep replays) everything this camera sent before it is from before
    ``timestamp``, and ``ended`` = the camera has finished. ``sender``, ``seq`` and ``sent_at`` are set by
    the publishing bridge; ``stream_id`` is where the message's batch lies in its camera's stream (set on
    receipt; "" when unknown), ``caught_up`` whether it was read from the streams or the stored state (a
    catch-up, a resync: set on receipt; False for one heard live on pub/sub); neither is on the wire.
    Embeddings are kept as a read-only float32 array (copied unless they are one already).
    """

    kind: MessageKind
    camera: str
    track_id: int = -1
    global_id: int | None = None
    label: str | None = None
    timestamp: float = 0.0
    quality: float = 0.0
    embeddings: FloatArray = field(default_factory=_no_vectors)
    sent_at: float = 0.0
    sender: str = ""
    seq: int = 0
    stream_id: str = ""
    ended: bool = False
    since: float | None = None
    position: Position | None = None
    velocity: Position | None = None
    caught_up: bool = False
    earlier: tuple[EarlierSpell, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not NAME.match(self.camera):
            raise ValueError(f"camera must be 1-200 characters of [A-Za-z0-9_.@-], got {self.camera!r}")
        object.__setattr__(self, "embeddings", _exemplars(self.embeddings))
        for name in ("timestamp", "quality", "sent_at", "since"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        for name in ("position", "velocity"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, finite_pair(getattr(self, name), name))
        if self.kind == "forget" and self.global_id is None:
            raise ValueError("a forget message needs a global_id")
        _check_ids(self.global_id, self.track_id, self.seq)
        _check_earlier(self.earlier)


def _check_ids(global_id: int | None, track_id: int, seq: int) -> None:
    """ValueError unless the ids are in range: past MAX_ID the resolver's int64 arrays cannot hold them."""
    if global_id is not None and not 1 <= global_id <= MAX_ID:
        raise ValueError(f"global_id must be >= 1 (at most {MAX_ID}) or None, got {global_id}")
    if not -MAX_ID - 1 <= track_id <= MAX_ID:
        raise ValueError(f"track_id must be a 64-bit integer, got {track_id}")
    if not 0 <= seq <= MAX_ID:
        raise ValueError(f"seq must be >= 0 (at most {MAX_ID}), got {seq}")


def _check_earlier(earlier: object) -> None:
    """ValueError unless ``earlier`` is a tuple of at most MAX_EARLIER :class:`EarlierSpell`."""
    if not isinstance(earlier, tuple) or len(earlier) > MAX_EARLIER:
        raise ValueError(
            f"earlier must be a tuple of at most {MAX_EARLIER} earlier spells, got {earlier!r:.200}"
        )
    if not all(isinstance(e, EarlierSpell) for e in earlier):
        raise ValueError(f"earlier must hold EarlierSpell, got {earlier!r:.200}")


def _exemplars(values: Any) -> FloatArray:
    """``values`` as a read-only (K, D) float32 array (copied unless it is one already), checked."""
    emb = values
    if not (isinstance(emb, np.ndarray) and emb.dtype == np.float32 and not emb.flags.writeable):
        emb = np.array(emb, dtype=np.float32)
        emb.flags.writeable = False
    if emb.ndim != 2 or emb.shape[1] < 1:
        raise ValueError(f"embeddings must be (K, D) with D >= 1, got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings hold NaN or infinite values")
    return cast(FloatArray, emb)


_FIELD_NAMES = tuple(f.name for f in fields(FleetMessage))


def with_fields(msg: FleetMessage, **changes: Any) -> FleetMessage:
    """A copy of a validated ``msg`` with trusted ``changes`` (sender, seq, times, stream id), not re-checked."""
    out = object.__new__(FleetMessage)
    for name in _FIELD_NAMES:
        object.__setattr__(out, name, changes[name] if name in changes else getattr(msg, name))
    return out


# ------------------------------------------------------------------------------------------------ encode


def encode_batch(
    msgs: list[FleetMessage],
    key: bytes | None,
    dtype: Literal["float16", "float32"] = "float16",
    sent_at: float = 0.0,
    wall: float | None = None,
) -> bytes:
    """``msgs`` (one camera, one sender, one embedding dim) as one blob, signed when ``key`` is given; ``sent_at``
    on the fleet's clock, ``wall`` the sender's wall clock then (left out when None).

    ValueError when they cannot share a batch or the vectors exceed float16's range.
    """
    if not msgs:
        raise ValueError("a batch needs at least one message")
    first = msgs[0]
    dim = _batch_dim(msgs)
    if any(m.camera != first.camera or m.sender != first.sender for m in msgs):
        raise ValueError("the messages of one batch come from one camera and one sender")
    rows = [m.embeddings for m in msgs if m.embeddings.shape[0]]
    emb = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
    meta = {
        "v": WIRE_VERSION,
        "camera": first.camera,
        "sender": first.sender,
        "sent": sent_at,
        **({"wall": wall} if wall is not None else {}),
        "items": [_item_meta(m) for m in msgs],
    }
    return codec.encode(codec.EmbeddingBatch(emb, meta=meta), dtype=dtype, key=key)


def encode_message(
    msg: FleetMessage,
    key: bytes | None,
    dtype: Literal["float16", "float32"] = "float16",
    sent_at: float | None = None,
) -> bytes:
    """One message as a batch of one (``sent_at`` defaults to the message's own)."""
    return encode_batch([msg], key, dtype, msg.sent_at if sent_at is None else sent_at)


def _batch_dim(msgs: list[FleetMessage]) -> int:
    dims = {m.embeddings.shape[1] for m in msgs if m.embeddings.shape[0]}
    if len(dims) > 1:
        raise ValueError(f"the messages of one batch share one embedding dim, got {sorted(dims)}")
    return dims.pop() if dims else 1


_LONGEST_TIME = -1.2345678901234567e-300  # a float whose JSON text is as long as any (24 characters)


def _json_bytes(doc: object) -> int:
    """The bytes of ``doc`` in a batch's meta JSON (as the codec writes it)."""
    return len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


_LONGEST_INT = -(2**63)  # 20 characters, more than any id, sequence number or row count takes
_ITEM_FIXED = _json_bytes(
    {
        "k": max(KINDS, key=len),
        "t": _LONGEST_INT,
        "g": _LONGEST_INT,
        "l": None,
        "ts": _LONGEST_TIME,
        "q": _LONGEST_TIME,
        "n": _LONGEST_INT,
        "r": _LONGEST_INT,
        "e": False,
        "s": _LONGEST_TIME,
    }
)  # an entry with no label, place or velocity, every number at its longest
_SPELL_BYTES = _json_bytes([_LONGEST_INT, _LONGEST_TIME, _LONGEST_TIME]) + 1  # one earlier spell, its comma
_LABEL_CHAR_BYTES = 6  # the most one character of a label takes in the JSON: a control character's \uXXXX
_COORD_BYTES = len(str(_LONGEST_TIME)) + 1  # one coordinate of a place or velocity, and its comma


def item_meta_bytes(m: FleetMessage) -> int:
    """At most the bytes ``m``'s entry adds to a batch's meta JSON, its separating comma included (what a sender
    packs batches by: places, velocities and labels make it several hundred). A bound, not the JSON's length:
    it is taken for every message published, where writing the JSON twice cost a fifth of the bridge's
    throughput."""
    size = _ITEM_FIXED + 1
    if m.label:
        size += _LABEL_CHAR_BYTES * len(m.label) + 2  # its quotes, in place of null
    for coords in (m.position, m.velocity):
        if coords is not None:
            size += len(',"p":[]') + _COORD_BYTES * len(coords)
    if m.earlier:
        size += len(',"h":[]') + _SPELL_BYTES * len(m.earlier)
    return size


def batch_meta_bytes(camera: str, sender: str) -> int:
    """The most bytes a batch of ``camera``'s ``sender`` takes beside its items' entries and vectors: the meta
    JSON with its two send times at their longest, and its length field."""
    doc = {
        "v": WIRE_VERSION,
        "camera": camera,
        "sender": sender,
        "sent": _LONGEST_TIME,
        "wall": _LONGEST_TIME,
    }
    return _json_bytes({**doc, "items": []}) + 4


def _item_meta(m: FleetMessage) -> dict[str, Any]:
    return {
        "k": m.kind,
        "t": m.track_id,
        "g": m.global_id,
        "l": m.label,
        "ts": m.timestamp,
        "q": m.quality,
        "n": m.seq,
        "r": int(m.embeddings.shape[0]),
        "e": m.ended,
        "s": m.since,
        **({"p": list(m.position)} if m.position is not None else {}),
        **({"w": list(m.velocity)} if m.velocity is not None else {}),
        **({"h": [[e.global_id, e.since, e.until] for e in m.earlier]} if m.earlier else {}),
    }


# ------------------------------------------------------------------------------------------------ decode


@dataclass(frozen=True)
class Batch:
    """A decoded batch: who sent it, when (on the fleet's clock; ``wall``: on the sender's own, None when it did
    not say), and its messages (in sequence order as sent)."""

    camera: str
    sender: str
    sent_at: float
    messages: tuple[FleetMessage, ...]
    wall: float | None = None


def decode_batch(blob: bytes, key: bytes | None, max_bytes: int) -> Batch:
    """The batch in ``blob``; MessageRejected (with a reason) for anything unacceptable, never another error.

    With ``key`` the blob must be signed with it; without, a signed blob is accepted unchecked.
    """
    if len(blob) > max_bytes:
        raise MessageRejected("oversized", f"{len(blob)} bytes, the limit is {max_bytes}")
    try:
        header = codec.read_header(blob, max_bytes)
        if key is not None and not header.signed:
            raise MessageRejected("unsigned", "the message carries no signature")
        batch = codec.decode(blob, key, max_bytes=max_bytes)
    except codec.CodecError as e:
        raise MessageRejected(_codec_reason(str(e)), str(e)) from e
    try:
        return _batch_from(batch)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise MessageRejected("malformed", f"bad meta: {e}") from e


def decode_message(blob: bytes, key: bytes | None, max_bytes: int) -> FleetMessage:
    """The single message of a batch of one (MessageRejected 'malformed' when it holds another count)."""
    batch = decode_batch(blob, key, max_bytes)
    if len(batch.messages) != 1:
        raise MessageRejected("malformed", f"expected one message, the batch holds {len(batch.messages)}")
    return batch.messages[0]


def _codec_reason(text: str) -> RejectReason:
    # The codec's messages start with what is wrong (daemon/codec.py: decode and read_header).
    if text.startswith("bad signature"):
        return "forged"
    if text.startswith("unsupported format version"):
        return "version"
    if "exceeds the limit" in text:
        return "oversized"
    return "malformed"


def _batch_from(batch: codec.EmbeddingBatch) -> Batch:
    meta = batch.meta
    if meta is None:
        raise ValueError("no meta object")
    version = meta.get("v")
    if version != WIRE_VERSION or isinstance(version, bool):
        raise MessageRejected("version", f"wire version {version!r}; this reader knows {WIRE_VERSION}")
    camera, sender = _typed(meta, "camera", str), _typed(meta, "sender", str)
    sent = float(_typed(meta, "sent", (int, float)))
    if len(sender) > MAX_SENDER_CHARS:
        raise ValueError(f"sender id longer than {MAX_SENDER_CHARS} characters")
    items = _typed(meta, "items", list)
    if not 1 <= len(items) <= MAX_ITEMS:
        raise ValueError(f"a batch holds 1..{MAX_ITEMS} messages, got {len(items)}")
    rows = [_typed(item, "r", int) if isinstance(item, dict) else -1 for item in items]
    if min(rows) < 0 or sum(rows) != len(batch):
        raise ValueError(f"the items announce {sum(rows)} rows, the batch holds {len(batch)}")
    out, start = [], 0
    for item, n in zip(items, rows, strict=True):
        out.append(_message(item, camera, sender, sent, batch.embeddings[start : start + n]))
        start += n
    return Batch(camera, sender, sent, tuple(out), _wall(meta))


def _wall(meta: dict[str, Any]) -> float | None:
    """The sender's wall clock of a batch's meta (None: an older sender's, which has none)."""
    wall = _optional_float(meta, "wall") if "wall" in meta else None
    if wall is not None and not math.isfinite(wall):
        raise ValueError(f"wall must be finite, got {wall}")
    return wall


def _message(item: dict[str, Any], camera: str, sender: str, sent: float, emb: FloatArray) -> FleetMessage:
    return FleetMessage(
        kind=_typed(item, "k", str),
        camera=camera,
        track_id=_typed(item, "t", int),
        global_id=_typed(item, "g", int, optional=True),
        label=_label(item),
        timestamp=float(_typed(item, "ts", (int, float))),
        quality=float(_typed(item, "q", (int, float))),
        embeddings=emb,
        sent_at=sent,
        sender=sender,
        seq=_typed(item, "n", int),
        ended=_typed(item, "e", bool),
        since=_optional_float(item, "s"),
        position=None if item.get("p") is None else finite_pair(item["p"], "position"),
        velocity=None if item.get("w") is None else finite_pair(item["w"], "velocity"),
        earlier=_earlier(item.get("h")),
    )


def _label(item: dict[str, Any]) -> str | None:
    """An entry's label (None: none); ValueError for one of more than LABEL_MAX_BYTES, the most a camera's
    gallery label takes: a longer one, signed or not, is no label a camera sends."""
    label: str | None = _typed(item, "l", str, optional=True)
    size = 0 if label is None else len(label.encode("utf-8", "surrogatepass"))
    if size > LABEL_MAX_BYTES:
        raise ValueError(f"field 'l' is a label of {size} UTF-8 bytes, more than {LABEL_MAX_BYTES}")
    return label


def _earlier(value: object) -> tuple[EarlierSpell, ...]:
    """An entry's earlier spells (none where it has no ``h``, a sender's of before them); ValueError when they
    are not a list of at most MAX_EARLIER [global id, since, until]."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_EARLIER:
        raise ValueError(f"field 'h' must be a list of at most {MAX_EARLIER} earlier spells")
    if not all(isinstance(e, list) and len(e) == 3 for e in value):
        raise ValueError("field 'h' must hold [global id, since, until] triples")
    return tuple(EarlierSpell(*e) for e in value)


def _optional_float(item: dict[str, Any], name: str) -> float | None:
    value = _typed(item, name, (int, float), optional=True)
    return None if value is None else float(value)


def _typed(meta: dict[str, Any], name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    if name not in meta:
        raise KeyError(f"field {name!r} is missing")
    value = meta[name]
    if value is None and optional:
        return None
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise TypeError(f"field {name!r} has type {type(value).__name__}")
    return value


def freshness(sent_at: float, now: float, max_age_s: float, max_skew_s: float) -> RejectReason | None:
    """'stale' when sent more than ``max_age_s`` before ``now``, 'future' when more than ``max_skew_s`` after."""
    if sent_at > now + max_skew_s:
        return "future"
    if sent_at < now - max_age_s:
        return "stale"
    return None
