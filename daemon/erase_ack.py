"""A running camera's word, through Valkey, on a forget: its files erased, or not yet and why.

``reid-daemon forget`` sends the forget and waits (``bridge.forget_wait_s``, ``--wait``) for each running camera it
knows of to say what it did; a worker says it once its files and memory are clean of the id (``erased``), or
when its files could not take the erase (``pending``, with the file and why). The word is one field per camera
in a hash per forgotten id (``FleetKeys.erased``), which expires ``bridge.forget_ack_ttl_s`` after the last word:
bounded by the fleet's cameras, gone by itself. It is signed with the fleet key (HMAC-SHA256 over the fleet, the
id, the camera and what it says), so a word another id's, another camera's or another fleet's cannot stand in,
nor one written by a client without the key; one sent before this forget began is not taken either.

A camera also marks, signed alike, how far it applied the forgets the fleet keeps for workers that were not
running (``encode_applied``; daemon/bridge.py, "Forgets sent while a worker was not running").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

MAX_DETAIL_CHARS = (
    500  # of what a camera says it erased, or why it could not: a few lines of the command's output
)
AckState = Literal["erased", "pending"]


@dataclass(frozen=True, slots=True)
class EraseAck:
    """What a camera said of its forget of ``global_id`` at ``sent_at`` (the fleet's clock, daemon/clocks.py):
    ``erased`` (``detail``: what its files held) or ``pending`` (``detail``: why not yet)."""

    camera: str
    global_id: int
    state: AckState
    detail: str
    sent_at: float

    def _signed_text(self, fleet: str) -> bytes:
        fields = [fleet, str(self.global_id), self.camera, self.state, self.detail, repr(self.sent_at)]
        return json.dumps(fields, separators=(",", ":")).encode("utf-8")

    def encode(self, fleet: str, key: bytes | None) -> bytes:
        """The hash value of this word: JSON, with its signature (empty with no fleet key: allow_unsigned)."""
        sig = "" if key is None else hmac.new(key, self._signed_text(fleet), hashlib.sha256).hexdigest()
        doc = {"state": self.state, "detail": self.detail, "sent_at": self.sent_at, "sig": sig}
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def erase_ack(camera: str, global_id: int, state: AckState, detail: str, sent_at: float) -> EraseAck:
    """An EraseAck with ``detail`` cut to MAX_DETAIL_CHARS."""
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
    return EraseAck(camera, global_id, state, detail, sent_at)


class UntrustedAck(ValueError):
    """A word in Valkey that is not one a camera of this fleet signed for this id (or that cannot be read)."""


def decode_ack(
    raw: bytes, fleet: str, camera: str, global_id: int, keys: tuple[bytes, ...], allow_unsigned: bool
) -> EraseAck:
    """The EraseAck that ``raw`` (``camera``'s field of ``global_id``'s hash) holds, its signature checked
    against ``keys`` (the fleet key and bridge.accept_keys); UntrustedAck, saying why, when it is not one."""
    try:
        doc = json.loads(raw)
        ack = erase_ack(camera, global_id, doc["state"], doc["detail"], doc["sent_at"])
        sig = doc["sig"]
    except (ValueError, KeyError, TypeError) as e:
        raise UntrustedAck("not a word this daemon writes") from e
    if ack.state not in ("erased", "pending") or not isinstance(sig, str) or type(ack.sent_at) is not float:
        raise UntrustedAck("not a word this daemon writes")
    if not sig:
        if allow_unsigned:
            return ack
        raise UntrustedAck("unsigned, and bridge.allow_unsigned is off")
    text = ack._signed_text(fleet)
    for key in keys:
        if hmac.compare_digest(sig, hmac.new(key, text, hashlib.sha256).hexdigest()):
            return ack
    raise UntrustedAck("its signature is not the fleet key's")


def _mark_text(fleet: str, camera: str, upto: str) -> bytes:
    return json.dumps(["forgets-applied", fleet, camera, upto], separators=(",", ":")).encode("utf-8")


def encode_applied(fleet: str, camera: str, upto: str, key: bytes | None) -> bytes:
    """A camera's mark that it applied every forget the fleet stored up to entry ``upto`` of its forgets stream
    (``FleetKeys.forgets_applied``): JSON, signed over the fleet, the camera and the entry (empty signature with
    no fleet key: allow_unsigned)."""
    sig = "" if key is None else hmac.new(key, _mark_text(fleet, camera, upto), hashlib.sha256).hexdigest()
    return json.dumps({"upto": upto, "sig": sig}, separators=(",", ":")).encode("utf-8")


def decode_applied(raw: bytes, fleet: str, camera: str, keys: tuple[bytes, ...], allow_unsigned: bool) -> str:
    """The entry ``camera``'s mark ``raw`` says it applied the stored forgets up to, its signature checked
    against ``keys`` (as ``decode_ack``); UntrustedAck, saying why, when it is not one."""
    try:
        doc = json.loads(raw)
        upto, sig = doc["upto"], doc["sig"]
    except (ValueError, KeyError, TypeError) as e:
        raise UntrustedAck("not a mark this daemon writes") from e
    if not isinstance(upto, str) or not isinstance(sig, str):
        raise UntrustedAck("not a mark this daemon writes")
    if not sig:
        if allow_unsigned:
            return upto
        raise UntrustedAck("unsigned, and bridge.allow_unsigned is off")
    text = _mark_text(fleet, camera, upto)
    for key in keys:
        if hmac.compare_digest(sig, hmac.new(key, text, hashlib.sha256).hexdigest()):
            return upto
    raise UntrustedAck("its signature is not the fleet key's")
