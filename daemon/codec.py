"""One binary format for embeddings, in files (``.rdg`` galleries) and on the wire (fleet messages).

A blob is a fixed 40-byte little-endian header, a payload (optionally zlib-compressed) and, when signed, a
32-byte HMAC-SHA256 tag::

    offset size  field
    0      4     magic b"RDGE"
    4      2     format version (u16), currently 1
    6      1     dtype code (u8): 1 float32, 2 float16, 3 int8 with a float32 scale per vector
    7      1     flags (u8): bit0 labels, bit1 track ids, bit2 timestamps, bit3 meta JSON, bit4 zlib,
                 bit5 HMAC-SHA256 tag appended; the other bits must be 0
    8      4     dim D (u32), 1 <= D <= MAX_DIM
    12     4     count N (u32), 0 <= N <= MAX_COUNT
    16     8     stored payload length in bytes (u64), as it lies in the blob (compressed or not)
    24     8     raw payload length in bytes (u64), after decompression
    32     4     CRC32 of the stored payload followed by header bytes 0..31 (u32)
    36     4     reserved, 0
    40     ...   stored payload
    end-32 32    HMAC-SHA256(key, stored payload + the 40 header bytes), only when flag bit5 is set

(The checksum and the tag take the payload first so that ``write`` can stream it and fill the header last.)

The raw payload is a sequence of sections, each present only when its flag (or dtype) says so::

    int8 only   N x f32     per-vector scale s: value = int8 * s
    vectors     N x D       float32, float16 or int8 (row-major)
    labels      N x u16     UTF-8 byte length of each label, then the concatenated UTF-8 bytes
    track ids   N x i64
    timestamps  N x f64     seconds
    meta        u32 length, then a UTF-8 JSON object of at most MAX_META_BYTES

Decoding checks, in order: length, magic, version, header fields and bounds, total length, the HMAC tag when a
key is given (a key rejects an unsigned blob), the CRC, the decompressed length, and that the sections fill
the raw payload exactly. Nothing is allocated from header values alone: sizes are checked against the bytes
actually present, decompression stops at the declared raw length, and ``max_bytes`` bounds the raw payload.
Without a key a signed blob is accepted (its tag is not checked; the CRC still is).
"""

from __future__ import annotations

import hmac
import io
import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daemon.errors import DataError
from daemon.types import FloatArray

Dtype = Literal["float32", "float16", "int8"]

MAGIC = b"RDGE"
VERSION = 1
HEADER = struct.Struct("<4sHBBIIQQII")
HEADER_SIZE = HEADER.size  # 40
TAG_SIZE = 32
MAX_DIM = 16_384
MAX_COUNT = 50_000_000
MAX_META_BYTES = 1 << 20  # what a message may carry; a gallery file passes a larger bound (its row sources)
MAX_META_FIELD = (1 << 32) - 1  # what the u32 length of the meta section can say
MAX_LABEL_BYTES = 0xFFFF
DEFAULT_MAX_BYTES = 1 << 30  # raw payload bound of decode(); a gallery file load passes a larger one

_DTYPE_CODES: dict[str, int] = {"float32": 1, "float16": 2, "int8": 3}
_CODE_DTYPES = {v: k for k, v in _DTYPE_CODES.items()}
_ITEM_SIZE = {"float32": 4, "float16": 2, "int8": 1}
F_LABELS, F_TRACKS, F_TIMES, F_META, F_ZLIB, F_SIGNED = 1, 2, 4, 8, 16, 32
_KNOWN_FLAGS = F_LABELS | F_TRACKS | F_TIMES | F_META | F_ZLIB | F_SIGNED


class CodecError(DataError):
    """A blob is not a valid embedding message: what is wrong is in the message."""


@dataclass(frozen=True, eq=False)
class EmbeddingBatch:
    """N embeddings of dimension D with optional per-row labels, track ids, timestamps and free metadata.

    ``embeddings`` is (N, D) float32 (converted on construction, never normalised); the optional arrays have
    N entries. Arrays are made read-only copies so a batch cannot change after it was built.
    """

    embeddings: FloatArray
    labels: tuple[str, ...] | None = None
    track_ids: NDArray[np.int64] | None = None
    timestamps: NDArray[np.float64] | None = None
    meta: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        emb = _owned_float32(self.embeddings)
        if emb.ndim != 2 or emb.shape[1] < 1:
            raise ValueError(f"embeddings must be (N, D) with D >= 1, got shape {emb.shape}")
        if not all_finite(emb):
            raise ValueError("embeddings hold NaN or infinite values")
        object.__setattr__(self, "embeddings", emb)
        n = emb.shape[0]
        if self.labels is not None:
            labels = tuple(self.labels)
            _check_labels(labels, n)
            object.__setattr__(self, "labels", labels)
        if self.track_ids is not None:
            object.__setattr__(self, "track_ids", _column(self.track_ids, np.int64, n, "track_ids"))
        if self.timestamps is not None:
            ts = _column(self.timestamps, np.float64, n, "timestamps")
            if not np.isfinite(ts).all():
                raise ValueError("timestamps hold NaN or infinite values")
            object.__setattr__(self, "timestamps", ts)
        if self.meta is not None and not isinstance(self.meta, dict):
            raise ValueError(f"meta must be a dict (a JSON object), got {type(self.meta).__name__}")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def _frozen(a: NDArray[Any]) -> NDArray[Any]:
    a.flags.writeable = False
    return a


def _owned_float32(values: ArrayLike) -> FloatArray:
    """A read-only float32 array: a read-only C-contiguous float32 input is taken as it is, else copied."""
    if (
        isinstance(values, np.ndarray)
        and values.dtype == np.float32
        and values.flags.c_contiguous
        and not values.flags.writeable
    ):
        return values
    return _frozen(np.array(values, dtype=np.float32))


def all_finite(a: NDArray[Any], chunk: int = 1 << 20) -> bool:
    """``np.isfinite(a).all()`` in row blocks of about ``chunk`` values (no full-size temporary)."""
    if a.ndim < 2 or a.size <= chunk:
        return bool(np.isfinite(a).all())
    step = max(1, chunk // max(1, a.shape[1]))
    return all(bool(np.isfinite(a[i : i + step]).all()) for i in range(0, a.shape[0], step))


def _column(values: ArrayLike, dtype: type[np.generic], n: int, name: str) -> NDArray[Any]:
    arr = np.array(values, dtype=dtype)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return _frozen(arr)


def _check_labels(labels: Sequence[object], n: int) -> None:
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} embeddings")
    for i, label in enumerate(labels):
        check_label(label, i)


def check_label(label: object, i: int) -> None:
    """ValueError naming label ``i`` unless it is a str of at most MAX_LABEL_BYTES in UTF-8."""
    if not isinstance(label, str):
        raise ValueError(f"label {i} must be a str, got {type(label).__name__}")
    try:
        size = len(label.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise ValueError(f"label {i} cannot be encoded as UTF-8: {e}") from e
    if size > MAX_LABEL_BYTES:
        raise ValueError(f"label {i} is {size} UTF-8 bytes; at most {MAX_LABEL_BYTES}")


# ---------------------------------------------------------------------------------------------- encode


def encode(
    batch: EmbeddingBatch, dtype: Dtype = "float32", compress: bool = False, key: bytes | None = None
) -> bytes:
    """``batch`` as one blob: vectors stored as ``dtype``, zlib-compressed if asked, HMAC-signed with ``key``."""
    buf = io.BytesIO()
    write(buf, batch, dtype, compress, key)
    return buf.getvalue()


def write(
    fp: BinaryIO,
    batch: EmbeddingBatch,
    dtype: Dtype = "float32",
    compress: bool = False,
    key: bytes | None = None,
    *,
    max_meta_bytes: int = MAX_META_BYTES,
) -> int:
    """Stream the blob of ``batch`` into a seekable binary file at its position; returns the bytes written.

    The payload goes out in blocks (no full-size copy of a large gallery); the header is written last.
    ValueError when the meta JSON takes more than ``max_meta_bytes`` (at most MAX_META_FIELD).
    """
    if dtype not in _DTYPE_CODES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPE_CODES)}, got {dtype!r}")
    n, d = batch.embeddings.shape
    if d > MAX_DIM or n > MAX_COUNT:
        raise ValueError(f"a blob holds at most {MAX_COUNT} vectors of at most {MAX_DIM} dims, got {n}x{d}")
    if key is not None and not key:
        raise ValueError("the signing key is empty")
    flags = _flags(batch) | (F_ZLIB if compress else 0) | (F_SIGNED if key is not None else 0)
    start = fp.tell()
    fp.write(bytes(HEADER_SIZE))
    sink = _Sink(fp, compress, key)
    for chunk in _payload_chunks(batch, dtype, min(max_meta_bytes, MAX_META_FIELD)):
        sink.feed(chunk)
    sink.close()
    head = HEADER.pack(MAGIC, VERSION, _DTYPE_CODES[dtype], flags, d, n, sink.stored_len, sink.raw_len, 0, 0)
    head = head[:32] + struct.pack("<II", zlib.crc32(head[:32], sink.crc), 0)
    if sink.mac is not None:
        sink.mac.update(head)
        fp.write(sink.mac.digest())
    end = fp.tell()
    fp.seek(start)
    fp.write(head)
    fp.seek(end)
    return end - start


class _Sink:
    """Writes payload blocks (compressed or not) and keeps the lengths, the CRC32 and the HMAC up to date."""

    def __init__(self, fp: BinaryIO, compress: bool, key: bytes | None) -> None:
        self.fp = fp
        self.zip = zlib.compressobj(6) if compress else None
        self.mac = hmac.new(key, digestmod="sha256") if key is not None else None
        self.crc = 0
        self.raw_len = 0
        self.stored_len = 0

    def feed(self, chunk: bytes | memoryview) -> None:
        self.raw_len += len(chunk)
        self._out(self.zip.compress(chunk) if self.zip is not None else chunk)

    def close(self) -> None:
        if self.zip is not None:
            self._out(self.zip.flush())

    def _out(self, data: bytes | memoryview) -> None:
        if not len(data):
            return
        self.fp.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.stored_len += len(data)
        if self.mac is not None:
            self.mac.update(data)


def _flags(batch: EmbeddingBatch) -> int:
    flags = F_LABELS if batch.labels is not None else 0
    flags |= F_TRACKS if batch.track_ids is not None else 0
    flags |= F_TIMES if batch.timestamps is not None else 0
    return flags | (F_META if batch.meta is not None else 0)


def _row_blocks(a: NDArray[Any], values: int = 1 << 22) -> Iterator[NDArray[Any]]:
    step = max(1, values // max(1, a.shape[1]))
    for i in range(0, a.shape[0], step):
        yield a[i : i + step]


def _payload_chunks(batch: EmbeddingBatch, dtype: str, max_meta: int) -> Iterator[bytes | memoryview]:
    emb = batch.embeddings
    if dtype == "float16" and emb.size and float(np.abs(emb).max()) > float(np.finfo(np.float16).max):
        raise ValueError("embeddings exceed the float16 range (65504); use float32 or int8")
    if dtype == "int8":
        scales = [quantize_int8(b)[0] for b in _row_blocks(emb)]
        yield np.concatenate(scales).astype("<f4").tobytes() if scales else b""
    for block in _row_blocks(emb):
        if dtype == "int8":
            yield quantize_int8(block)[1].tobytes()
        else:
            yield np.ascontiguousarray(block, dtype="<f4" if dtype == "float32" else "<f2").data.cast("B")
    if batch.labels is not None:
        encoded = [s.encode("utf-8") for s in batch.labels]
        yield np.array([len(b) for b in encoded], dtype="<u2").tobytes()
        yield b"".join(encoded)
    if batch.track_ids is not None:
        yield batch.track_ids.astype("<i8").tobytes()
    if batch.timestamps is not None:
        yield batch.timestamps.astype("<f8").tobytes()
    if batch.meta is not None:
        yield _meta_bytes(batch.meta, max_meta)


def quantize_int8(emb: FloatArray) -> tuple[FloatArray, NDArray[np.int8]]:
    """Symmetric per-row int8: scale = max|x| / 127, code = round(x / scale); a zero row gets scale 0."""
    peak = np.abs(emb).max(axis=1) if emb.size else np.zeros((emb.shape[0],), np.float32)
    scales = (peak / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    codes = np.clip(np.rint(emb / safe[:, None]), -127, 127).astype(np.int8)
    return scales, codes


def _meta_bytes(meta: dict[str, Any], limit: int) -> bytes:
    try:
        text = json.dumps(meta, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta is not JSON-serialisable: {e}") from e
    body = text.encode("utf-8")
    if len(body) > limit:
        raise ValueError(f"meta JSON is {len(body)} bytes; at most {limit}")
    return struct.pack("<I", len(body)) + body


# ---------------------------------------------------------------------------------------------- decode


@dataclass(frozen=True)
class Header:
    """The fixed header of a blob, as read (``dtype`` already mapped to its name)."""

    version: int
    dtype: str
    flags: int
    dim: int
    count: int
    stored_len: int
    raw_len: int
    crc: int

    @property
    def signed(self) -> bool:
        return bool(self.flags & F_SIGNED)


def read_header(blob: bytes | bytearray | memoryview, max_bytes: int = DEFAULT_MAX_BYTES) -> Header:
    """Parse and check the header of ``blob`` (magic, version, dtype, flags, bounds); CodecError if bad."""
    if len(blob) < HEADER_SIZE:
        if len(blob) >= 4 and bytes(blob[:4]) != MAGIC:
            raise CodecError(f"bad magic {bytes(blob[:4])!r}: not an embedding blob (expected {MAGIC!r})")
        raise CodecError(f"truncated: {len(blob)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, code, flags, dim, count, stored_len, raw_len, crc, reserved = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CodecError(f"bad magic {magic!r}: not an embedding blob (expected {MAGIC!r})")
    if version != VERSION:
        raise CodecError(f"unsupported format version {version} (this reader knows version {VERSION})")
    if code not in _CODE_DTYPES:
        raise CodecError(f"unknown dtype code {code} (known: {_CODE_DTYPES})")
    if flags & ~_KNOWN_FLAGS or reserved:
        raise CodecError(f"unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x} or reserved field {reserved} set")
    h = Header(version, _CODE_DTYPES[code], flags, dim, count, stored_len, raw_len, crc)
    _check_sizes(h, max_bytes)
    return h


def _check_sizes(h: Header, max_bytes: int) -> None:
    if not 1 <= h.dim <= MAX_DIM:
        raise CodecError(f"dim {h.dim} is outside 1..{MAX_DIM}")
    if h.count > MAX_COUNT:
        raise CodecError(f"count {h.count} exceeds the limit of {MAX_COUNT} vectors")
    if h.raw_len > max_bytes:
        raise CodecError(f"raw payload of {h.raw_len} bytes exceeds the limit of {max_bytes} bytes")
    if not h.flags & F_ZLIB and h.stored_len != h.raw_len:
        raise CodecError(
            f"count/dim inconsistent: uncompressed payload {h.stored_len} != raw {h.raw_len} bytes"
        )
    if h.raw_len < _fixed_size(h):
        raise CodecError(
            f"count/dim inconsistent: {h.count}x{h.dim} {h.dtype} needs at least {_fixed_size(h)} payload "
            f"bytes, header says {h.raw_len}"
        )


def _fixed_size(h: Header) -> int:
    """Bytes of the sections whose size N, D and the flags fix (all but label text and meta body)."""
    n = h.count
    size = n * h.dim * _ITEM_SIZE[h.dtype] + (4 * n if h.dtype == "int8" else 0)
    size += (2 * n if h.flags & F_LABELS else 0) + (8 * n if h.flags & F_TRACKS else 0)
    size += (8 * n if h.flags & F_TIMES else 0) + (4 if h.flags & F_META else 0)
    return size


def decode(
    blob: bytes | bytearray | memoryview,
    key: bytes | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_meta_bytes: int = MAX_META_BYTES,
) -> EmbeddingBatch:
    """The batch in ``blob``; with ``key`` the blob must carry a valid HMAC-SHA256 tag. CodecError if bad
    (a meta JSON over ``max_meta_bytes`` among them)."""
    view = memoryview(blob).cast("B")
    h = read_header(view, max_bytes)
    expected = HEADER_SIZE + h.stored_len + (TAG_SIZE if h.signed else 0)
    if len(view) < expected:
        raise CodecError(f"truncated: {len(view)} bytes, the header announces {expected}")
    if len(view) > expected:
        raise CodecError(f"{len(view) - expected} unexpected trailing bytes after the announced {expected}")
    stored = view[HEADER_SIZE : HEADER_SIZE + h.stored_len]
    _check_signature(view, h, key)
    crc = zlib.crc32(view[:32], zlib.crc32(stored))
    if crc != h.crc:
        raise CodecError(f"checksum mismatch: CRC32 0x{crc:08x}, header says 0x{h.crc:08x} (corrupt data)")
    raw = _decompress(stored, h) if h.flags & F_ZLIB else stored
    return _parse_payload(raw, h, max_meta_bytes)


def _check_signature(view: memoryview, h: Header, key: bytes | None) -> None:
    if key is None:
        return
    if not h.signed:
        raise CodecError("bad signature: the blob is not signed but a key was given (unsigned data refused)")
    body_end = HEADER_SIZE + h.stored_len
    mac = hmac.new(key, view[HEADER_SIZE:body_end], "sha256")
    mac.update(view[:HEADER_SIZE])
    tag = mac.digest()
    if not hmac.compare_digest(tag, bytes(view[body_end:])):
        raise CodecError("bad signature: HMAC-SHA256 tag does not match (wrong key or tampered data)")


def _decompress(stored: memoryview, h: Header) -> bytes:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(stored, h.raw_len)
    except zlib.error as e:
        raise CodecError(f"corrupt zlib payload: {e}") from e
    if len(raw) != h.raw_len or d.unconsumed_tail or not d.eof:
        raise CodecError(
            f"decompressed payload is not the announced {h.raw_len} bytes (got {len(raw)}"
            f"{', more follows' if d.unconsumed_tail or not d.eof else ''})"
        )
    return raw


class _Reader:
    """Sequential section reader over the raw payload; every read is bounds-checked."""

    def __init__(self, raw: bytes | memoryview, h: Header) -> None:
        self.raw, self.h, self.pos = raw, h, 0

    def take(self, size: int, what: str) -> bytes | memoryview:
        if self.pos + size > len(self.raw):
            raise CodecError(
                f"count/dim inconsistent: {what} needs {size} bytes at offset {self.pos}, payload has "
                f"{len(self.raw)}"
            )
        out = self.raw[self.pos : self.pos + size]
        self.pos += size
        return out

    def array(self, dtype: str, count: int, what: str) -> NDArray[Any]:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(item * count, what), dtype=dtype)


def _parse_payload(raw: bytes | memoryview, h: Header, max_meta: int) -> EmbeddingBatch:
    r = _Reader(raw, h)
    emb = _read_vectors(r, h)
    labels = _read_labels(r, h.count) if h.flags & F_LABELS else None
    tracks = r.array("<i8", h.count, "track ids").astype(np.int64) if h.flags & F_TRACKS else None
    times = r.array("<f8", h.count, "timestamps").astype(np.float64) if h.flags & F_TIMES else None
    meta = _read_meta(r, max_meta) if h.flags & F_META else None
    if r.pos != len(raw):
        raise CodecError(
            f"count/dim inconsistent: {len(raw) - r.pos} payload bytes left over after the sections"
        )
    try:
        return EmbeddingBatch(emb, labels, tracks, times, meta)
    except ValueError as e:
        raise CodecError(f"invalid content: {e}") from e


def _read_vectors(r: _Reader, h: Header) -> FloatArray:
    n, d = h.count, h.dim
    if h.dtype == "int8":
        scales = r.array("<f4", n, "int8 scales").astype(np.float32)
        if not (np.isfinite(scales).all() and (scales >= 0).all()):
            raise CodecError("invalid content: int8 scales must be finite and >= 0")
        codes = r.array("i1", n * d, "int8 vectors").reshape(n, d)
        out: FloatArray = codes.astype(np.float32)
        out *= scales[:, None]
        return _frozen(out)
    src = "<f4" if h.dtype == "float32" else "<f2"
    vec: FloatArray = r.array(src, n * d, f"{h.dtype} vectors").reshape(n, d).astype(np.float32)
    return _frozen(vec)


def _read_labels(r: _Reader, n: int) -> tuple[str, ...]:
    lengths = r.array("<u2", n, "label lengths").astype(np.int64)
    text = bytes(r.take(int(lengths.sum()), "label text"))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    try:
        return tuple(text[s:e].decode("utf-8") for s, e in zip(starts.tolist(), ends.tolist(), strict=True))
    except UnicodeDecodeError as e:
        raise CodecError(f"invalid content: a label is not valid UTF-8 ({e})") from e


def _read_meta(r: _Reader, limit: int) -> dict[str, Any]:
    (size,) = struct.unpack("<I", r.take(4, "meta length"))
    if size > limit:
        raise CodecError(f"meta JSON of {size} bytes exceeds the limit of {limit}")
    body = bytes(r.take(size, "meta JSON"))
    try:
        meta = json.loads(body.decode("utf-8"))
    # ValueError: bad JSON, or an integer of more digits than Python converts (sys.int_max_str_digits);
    # RecursionError: nested too deep
    except (ValueError, RecursionError) as e:
        raise CodecError(f"invalid content: meta is not UTF-8 JSON ({e})") from e
    if not isinstance(meta, dict):
        raise CodecError(f"invalid content: meta must be a JSON object, got {type(meta).__name__}")
    return meta
