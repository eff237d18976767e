"""daemon/codec.py: round trips (hypothesis) and every way a blob can be wrong."""

from __future__ import annotations

import argparse
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _data import load_benchmark, require_pets09
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from daemon import codec
from daemon.codec import CodecError, EmbeddingBatch, decode, encode
from daemon.errors import DataError

KEY = b"fleet-shared-secret"


def batch(n: int = 4, d: int = 8, seed: int = 0, **kw: Any) -> EmbeddingBatch:
    rng = np.random.default_rng(seed)
    return EmbeddingBatch(rng.standard_normal((n, d)).astype(np.float32), **kw)


def full_batch(n: int = 3, d: int = 6) -> EmbeddingBatch:
    return batch(
        n,
        d,
        labels=tuple(f"person-{i}-é" for i in range(n)),
        track_ids=np.arange(n, dtype=np.int64) * 10**12,
        timestamps=np.linspace(0.0, 1.5, n),
        meta={"camera": "lobby", "v": 1},
    )


def reseal(blob: bytes | bytearray) -> bytes:
    """Recompute the CRC of a hand-edited unsigned blob, so a test reaches the check behind it."""
    b = bytearray(blob)
    stored_len = struct.unpack_from("<Q", b, 16)[0]
    stored = bytes(b[codec.HEADER_SIZE : codec.HEADER_SIZE + stored_len])
    struct.pack_into("<I", b, 32, zlib.crc32(bytes(b[:32]), zlib.crc32(stored)))
    return bytes(b)


def raw_blob(payload: bytes, *, dtype: int = 1, flags: int = 0, dim: int = 2, count: int = 1) -> bytes:
    """A hand-made unsigned, uncompressed blob with a correct CRC (for payload-level error paths)."""
    head = codec.HEADER.pack(
        codec.MAGIC, codec.VERSION, dtype, flags, dim, count, len(payload), len(payload), 0, 0
    )
    return reseal(head + payload)


# ---------------------------------------------------------------------------------------------- round trips

finite32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)
labels_st = st.text(min_size=0, max_size=12)
meta_st = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.none(), st.booleans(), st.integers(-(10**9), 10**9), st.text(max_size=10)),
    max_size=4,
)


@st.composite
def batches(draw: st.DrawFn) -> EmbeddingBatch:
    n = draw(st.integers(0, 12))
    d = draw(st.integers(1, 24))
    values = draw(st.lists(finite32, min_size=n * d, max_size=n * d))
    emb = np.asarray(values, dtype=np.float32).reshape(n, d)
    labels = tuple(draw(st.lists(labels_st, min_size=n, max_size=n))) if draw(st.booleans()) else None
    tracks = (
        np.asarray(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), dtype=np.int64)
        if draw(st.booleans())
        else None
    )
    times = (
        np.asarray(draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=n, max_size=n)))
        if draw(st.booleans())
        else None
    )
    meta = draw(meta_st) if draw(st.booleans()) else None
    return EmbeddingBatch(emb, labels, tracks, times, meta)


def assert_same_metadata(a: EmbeddingBatch, b: EmbeddingBatch) -> None:
    assert a.labels == b.labels
    assert a.meta == b.meta
    for x, y in ((a.track_ids, b.track_ids), (a.timestamps, b.timestamps)):
        assert (x is None) == (y is None)
        if x is not None and y is not None:
            np.testing.assert_array_equal(x, y)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    b=batches(),
    dtype=st.sampled_from(["float32", "float16", "int8"]),
    compress=st.booleans(),
    signed=st.booleans(),
)
def test_round_trip(b: EmbeddingBatch, dtype: codec.Dtype, compress: bool, signed: bool) -> None:
    key = KEY if signed else None
    out = decode(encode(b, dtype, compress, key), key)
    assert out.embeddings.shape == b.embeddings.shape
    assert out.embeddings.dtype == np.float32
    assert_same_metadata(out, b)
    if dtype == "float32":
        np.testing.assert_array_equal(out.embeddings, b.embeddings)
    elif dtype == "float16":
        np.testing.assert_allclose(out.embeddings, b.embeddings, rtol=1e-3, atol=1e-4)
    else:
        # symmetric int8: error at most half a step, a step being max|row| / 127
        step = np.abs(b.embeddings).max(axis=1, keepdims=True) / 127 if b.embeddings.size else 0
        assert np.all(np.abs(out.embeddings - b.embeddings) <= step * 0.5 + 1e-6 * (1 + step))


def test_sizes_per_dtype_and_compression() -> None:
    b = batch(100, 512)
    sizes = {dt: len(encode(b, dt)) for dt in ("float32", "float16", "int8")}
    assert sizes["float32"] == codec.HEADER_SIZE + 100 * 512 * 4
    assert sizes["float16"] == codec.HEADER_SIZE + 100 * 512 * 2
    assert sizes["int8"] == codec.HEADER_SIZE + 100 * (512 + 4)
    zeros = EmbeddingBatch(np.zeros((100, 512), np.float32))
    assert len(encode(zeros, compress=True)) < sizes["float32"] // 50


def test_signed_blob_is_larger_by_the_tag_and_decodes_without_key() -> None:
    b = full_batch()
    plain, signed = encode(b), encode(b, key=KEY)
    assert len(signed) == len(plain) + codec.TAG_SIZE
    assert codec.read_header(signed).signed and not codec.read_header(plain).signed
    assert_same_metadata(decode(signed), b)  # without a key the tag is not checked


def test_write_streams_at_the_file_position() -> None:
    b = full_batch()
    buf = io.BytesIO(b"prefix")
    buf.seek(0, io.SEEK_END)
    size = codec.write(buf, b, "int8", compress=True, key=KEY)
    data = buf.getvalue()
    assert data[:6] == b"prefix" and len(data) == 6 + size
    assert data[6:] == encode(b, "int8", compress=True, key=KEY)


def test_the_largest_values_pass_and_one_more_is_refused() -> None:
    """MAX_DIM dims, a label of MAX_LABEL_BYTES and float16's largest value are inside the bounds, both ways."""
    wide = EmbeddingBatch(np.ones((1, codec.MAX_DIM), np.float32))
    assert decode(encode(wide)).dim == codec.MAX_DIM
    with pytest.raises(ValueError, match="at most 16384 dims, got 1x16385"):
        encode(EmbeddingBatch(np.ones((1, codec.MAX_DIM + 1), np.float32)))
    label = "x" * codec.MAX_LABEL_BYTES
    assert decode(encode(batch(1, 2, labels=(label,)))).labels == (label,)
    edge = EmbeddingBatch(np.full((1, 2), 65504.0, np.float32))
    np.testing.assert_array_equal(decode(encode(edge, "float16")).embeddings, edge.embeddings)


def test_meta_of_exactly_the_limit_passes_both_ways() -> None:
    b = batch(meta={"x": "y" * 12})  # {"x":"yyyyyyyyyyyy"}: 20 bytes of JSON
    buf = io.BytesIO()
    codec.write(buf, b, max_meta_bytes=20)
    assert decode(buf.getvalue(), max_meta_bytes=20).meta == b.meta
    with pytest.raises(ValueError, match="meta JSON is 20 bytes; at most 19"):
        codec.write(io.BytesIO(), b, max_meta_bytes=19)
    with pytest.raises(CodecError, match="meta JSON of 20 bytes exceeds the limit of 19"):
        decode(buf.getvalue(), max_meta_bytes=19)


def test_batch_is_read_only_and_copied() -> None:
    src = np.ones((2, 3), dtype=np.float32)
    b = EmbeddingBatch(src)
    src[0, 0] = 5
    assert b.embeddings[0, 0] == 1
    with pytest.raises(ValueError):
        b.embeddings[0, 0] = 2


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"embeddings": np.zeros((2,), np.float32)}, "must be \\(N, D\\)"),
        ({"embeddings": np.zeros((2, 0), np.float32)}, "D >= 1, got shape \\(2, 0\\)"),
        ({"embeddings": np.array([[np.nan, 1.0]])}, "NaN or infinite"),
        ({"embeddings": np.ones((2, 2)), "labels": ("a",)}, "1 entries for 2"),
        ({"embeddings": np.ones((2, 2)), "labels": ("a", 3)}, "must be a str"),
        ({"embeddings": np.ones((1, 2)), "labels": ("x" * 70_000,)}, "at most 65535"),
        ({"embeddings": np.ones((1, 2)), "labels": ("é" * 32_768,)}, "65536 UTF-8 bytes"),  # bytes, not chars
        ({"embeddings": np.ones((1, 2)), "labels": ("\ud800",)}, "UTF-8"),
        ({"embeddings": np.ones((2, 2)), "track_ids": [1]}, "track_ids must have shape"),
        ({"embeddings": np.ones((1, 2)), "timestamps": [np.inf]}, "timestamps hold NaN"),
        ({"embeddings": np.ones((1, 2)), "meta": [1]}, "meta must be a dict"),
    ],
)
def test_batch_validation(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddingBatch(**kw)


def test_encode_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="dtype must be one of"):
        encode(batch(), "float64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key is empty"):
        encode(batch(), key=b"")
    with pytest.raises(ValueError, match="float16 range"):
        encode(EmbeddingBatch(np.full((1, 2), 1e6, np.float32)), "float16")
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode(batch(meta={"x": object()}))
    with pytest.raises(ValueError, match="meta JSON is"):
        encode(batch(meta={"x": "y" * (codec.MAX_META_BYTES + 1)}))


# ---------------------------------------------------------------------------------------------- bad blobs


def test_codec_error_is_a_data_error() -> None:
    assert issubclass(CodecError, DataError)


@pytest.mark.parametrize(
    "foreign",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        b"PK\x03\x04" + bytes(100),
        b'{"format": "reid-daemon-gallery"}',
        b"RD",
    ],
)
def test_foreign_data(foreign: bytes) -> None:
    with pytest.raises(CodecError, match=r"bad magic|truncated"):
        decode(foreign)


@pytest.mark.parametrize("version", [0, 2])
def test_unsupported_version(version: int) -> None:
    """Any version but this reader's is refused, an older one (0) as a newer one."""
    blob = bytearray(encode(batch()))
    struct.pack_into("<H", blob, 4, version)
    with pytest.raises(CodecError, match=f"unsupported format version {version}"):
        decode(reseal(blob))


@pytest.mark.parametrize(
    ("offset", "value", "message"), [(6, 9, "unknown dtype code 9"), (7, 0x80, "unknown flag")]
)
def test_unknown_dtype_or_flag(offset: int, value: int, message: str) -> None:
    blob = bytearray(encode(batch()))
    blob[offset] = value
    with pytest.raises(CodecError, match=message):
        decode(reseal(blob))


def test_every_truncation_is_reported() -> None:
    blob = encode(full_batch(), "int8", compress=True)
    for cut in range(len(blob)):
        with pytest.raises(CodecError, match=r"truncated|bad magic"):
            decode(blob[:cut])


def test_trailing_bytes() -> None:
    with pytest.raises(CodecError, match="trailing bytes"):
        decode(encode(batch()) + b"\0")


@pytest.mark.parametrize("compress", [False, True])
def test_every_flipped_byte_is_detected(compress: bool) -> None:
    blob = encode(full_batch(), "float16", compress=compress)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(CodecError):
            decode(bytes(bad))


def test_flipped_byte_of_a_signed_blob_fails_the_signature() -> None:
    blob = encode(full_batch(), key=KEY)
    for i in range(codec.HEADER_SIZE, len(blob)):  # payload and tag: the header has its own checks
        bad = bytearray(blob)
        bad[i] ^= 0x40
        with pytest.raises(CodecError, match="bad signature"):
            decode(bytes(bad), KEY)


def test_checksum_mismatch_message() -> None:
    blob = bytearray(encode(batch()))
    blob[-1] ^= 0xFF
    with pytest.raises(CodecError, match="checksum mismatch"):
        decode(bytes(blob))


def test_wrong_key_and_unsigned_blob_refused_with_a_key() -> None:
    b = full_batch()
    with pytest.raises(CodecError, match="bad signature: HMAC"):
        decode(encode(b, key=KEY), b"another key")
    with pytest.raises(CodecError, match="not signed"):
        decode(encode(b), KEY)


def test_resealed_tampering_is_caught_by_the_signature() -> None:
    """An attacker who fixes the CRC after editing the payload still fails the HMAC."""
    blob = bytearray(encode(batch(2, 4), key=KEY))
    blob[codec.HEADER_SIZE] ^= 0x10
    with pytest.raises(CodecError, match="bad signature"):
        decode(reseal(blob), KEY)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (8, codec.MAX_DIM + 1, "dim .* is outside"),
        (8, 0, "dim 0 is outside"),
        (12, codec.MAX_COUNT + 1, "exceeds the limit"),
    ],
)
def test_hostile_header_bounds(field: int, value: int, message: str) -> None:
    blob = bytearray(encode(batch()))
    struct.pack_into("<I", blob, field, value)
    with pytest.raises(CodecError, match=message):
        decode(reseal(blob))


def header_only(dim: int, count: int, raw_len: int) -> bytes:
    """The 40 header bytes of an unsigned, uncompressed float32 blob (read_header reads nothing more)."""
    return codec.HEADER.pack(codec.MAGIC, codec.VERSION, 1, 0, dim, count, raw_len, raw_len, 0, 0)


def test_header_bounds_are_inclusive_and_checked_before_the_payload() -> None:
    """read_header (what the fleet checks before decoding) takes MAX_COUNT vectors and a raw payload of exactly
    max_bytes, refuses one more of either, and refuses a raw length too short for count x dim."""
    size = codec.MAX_COUNT * 4
    h = codec.read_header(header_only(1, codec.MAX_COUNT, size), max_bytes=size)
    assert (h.dim, h.count, h.raw_len) == (1, codec.MAX_COUNT, size)
    with pytest.raises(CodecError, match="count 50000001 exceeds the limit of 50000000"):
        codec.read_header(header_only(1, codec.MAX_COUNT + 1, size + 4), max_bytes=size + 4)
    with pytest.raises(CodecError, match=f"raw payload of {size} bytes exceeds the limit of {size - 1}"):
        codec.read_header(header_only(1, codec.MAX_COUNT, size), max_bytes=size - 1)
    assert codec.read_header(header_only(codec.MAX_DIM, 1, 4 * codec.MAX_DIM)).dim == codec.MAX_DIM
    with pytest.raises(CodecError, match="5x8 float32 needs at least 160 payload bytes, header says 128"):
        codec.read_header(header_only(8, 5, 128))


def test_uncompressed_payload_length_must_be_the_raw_length() -> None:
    """An uncompressed blob whose raw length understates its payload would slip past max_bytes."""
    blob = bytearray(encode(full_batch()))
    raw_len = struct.unpack_from("<Q", blob, 24)[0]
    struct.pack_into("<Q", blob, 24, raw_len - 1)
    with pytest.raises(CodecError, match=f"uncompressed payload {raw_len} != raw {raw_len - 1} bytes"):
        decode(reseal(blob), max_bytes=raw_len - 1)


def test_the_signature_covers_the_header() -> None:
    """Reading 4x8 vectors as 8x4 (same payload) with the CRC resealed fails the HMAC: the tag covers the header."""
    blob = bytearray(encode(batch(4, 8), key=KEY))
    struct.pack_into("<II", blob, 8, 4, 8)
    assert decode(reseal(blob)).embeddings.shape == (8, 4)  # a valid blob otherwise
    with pytest.raises(CodecError, match="bad signature: HMAC"):
        decode(reseal(blob), KEY)


def test_a_zlib_stream_cut_before_its_end_is_refused() -> None:
    """All the data is there but the stream's end (its Adler-32) is not: an incomplete write."""
    raw = np.ones(2, "<f4").tobytes()
    stored = zlib.compress(raw)[:-4]
    head = codec.HEADER.pack(codec.MAGIC, codec.VERSION, 1, codec.F_ZLIB, 2, 1, len(stored), len(raw), 0, 0)
    with pytest.raises(
        CodecError, match="decompressed payload is not the announced 8 bytes \\(got 8, more follows"
    ):
        decode(reseal(head + stored))


def test_count_dim_inconsistent_with_payload() -> None:
    blob = bytearray(encode(batch(4, 8)))
    struct.pack_into("<I", blob, 12, 5)  # one vector more than the payload holds
    with pytest.raises(CodecError, match="count/dim inconsistent"):
        decode(reseal(blob))
    with pytest.raises(CodecError, match="left over"):
        decode(raw_blob(bytes(8 + 4), dim=2, count=1))  # 4 bytes too many


def test_raw_size_limit_and_zip_bomb() -> None:
    big = EmbeddingBatch(np.zeros((2000, 512), np.float32))
    blob = encode(big, compress=True)
    assert len(blob) < 20_000
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode(blob, max_bytes=1 << 20)
    # a compressed payload that inflates past its announced raw length is cut off, not inflated whole
    bomb = bytearray(blob)
    struct.pack_into("<I", bomb, 12, 10)
    struct.pack_into("<Q", bomb, 24, 10 * 512 * 4)
    with pytest.raises(CodecError, match="decompressed payload is not"):
        decode(reseal(bomb))


def test_corrupt_zlib_stream() -> None:
    stored = b"not zlib at all"
    head = codec.HEADER.pack(codec.MAGIC, codec.VERSION, 1, codec.F_ZLIB, 2, 1, len(stored), 8, 0, 0)
    with pytest.raises(CodecError, match="corrupt zlib"):
        decode(reseal(head + stored))


DEEP_JSON = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def payload_cases() -> list[tuple[bytes, int, int, str]]:
    vec = np.ones(2, "<f4").tobytes()
    return [
        (np.array([-1.0], "<f4").tobytes() + bytes(2), 3, 0, "int8 scales"),
        (vec + np.array([2], "<u2").tobytes() + b"\xff\xfe", 1, codec.F_LABELS, "not valid UTF-8"),
        (vec + struct.pack("<I", 2) + b"[]", 1, codec.F_META, "JSON object"),
        (vec + struct.pack("<I", 3) + b"{x}", 1, codec.F_META, "not UTF-8 JSON"),
        (vec + struct.pack("<I", codec.MAX_META_BYTES + 1), 1, codec.F_META, "meta JSON of"),
        (
            vec + struct.pack("<I", 200_006) + DEEP_JSON,
            1,
            codec.F_META,
            "not UTF-8 JSON",
        ),  # was RecursionError
        (vec + struct.pack("<I", 5006) + b'{"a":' + b"9" * 5000 + b"}", 1, codec.F_META, "not UTF-8 JSON"),
        (np.array([np.nan, 1], "<f4").tobytes(), 1, 0, "NaN or infinite"),
        (vec + np.array([np.inf], "<f8").tobytes(), 1, codec.F_TIMES, "timestamps hold NaN"),
    ]


@pytest.mark.parametrize(("payload", "dtype", "flags", "message"), payload_cases())
def test_invalid_payload_content(payload: bytes, dtype: int, flags: int, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(raw_blob(payload, dtype=dtype, flags=flags))


def test_quantize_int8_zero_row() -> None:
    scales, codes = codec.quantize_int8(np.zeros((1, 4), np.float32))
    assert scales[0] == 0 and not codes.any()
    out = decode(encode(EmbeddingBatch(np.zeros((1, 4), np.float32)), "int8")).embeddings
    np.testing.assert_array_equal(out, np.zeros((1, 4)))


def test_all_finite_in_blocks() -> None:
    a: NDArray[np.float32] = np.zeros((300, 10), np.float32)
    assert codec.all_finite(a, chunk=100)
    a[250, 3] = np.inf
    assert not codec.all_finite(a, chunk=100)


# ---------------------------------------------------------------------------------------------- benchmark


def test_codec_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("codec_bench")
    out = tmp_path / "codec.json"
    assert (
        bench.main(
            ["--skip-accuracy", "--repeats", "1", "--speed-vectors", "20", "--inner", "5", "--out", str(out)]
        )
        == 0
    )
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["sizes_512"]["float32"] == 2048 and doc["sizes_512"]["float16"] == 1024
    assert doc["sizes_512"]["int8"] == 512 + 4
    assert {(r["vectors"], r["dtype"], r["zlib"]) for r in doc["speed"]} == {
        (n, dt, z) for n in (1, 20) for dt in ("float32", "float16", "int8") for z in (False, True)
    }
    assert all(r["encode_ms"] > 0 and r["decode_ms"] > 0 for r in doc["speed"])
    assert "skipped: --skip-accuracy" in capsys.readouterr().out


@pytest.mark.shared_data
def test_codec_bench_accuracy_on_real_embeddings(tmp_path: Path, mobilenet_model: Path) -> None:
    pets = require_pets09()
    bench = load_benchmark("codec_bench")
    out = tmp_path / "codec.json"
    args = ["--video", str(pets / "vtest.avi"), "--gt", str(pets / "gt" / "gt.txt")]
    args += ["--models-dir", str(mobilenet_model.parents[1]), "--stride", "40", "--max-crops", "60"]
    assert (
        bench.main([*args, "--repeats", "1", "--speed-vectors", "5", "--inner", "2", "--out", str(out)]) == 0
    )
    acc = json.loads(out.read_text(encoding="utf-8"))["accuracy"]
    assert "skipped" not in acc, acc
    assert acc["crops"] == 60 and acc["dim"] == 1280 and acc["gallery"] + acc["queries"] <= 60
    f16, i8 = acc["results"]["float16"], acc["results"]["int8"]
    assert f16["mean_abs_dsim"] < i8["mean_abs_dsim"] < 0.01
    assert 0.9 <= i8["top5_agreement"] <= 1.0 and 0.0 <= i8["rank1_accuracy"] <= 1.0


def test_codec_bench_names_the_one_fetch_command_for_its_models_dir(tmp_path: Path) -> None:
    bench = load_benchmark("codec_bench")
    clip, gt = tmp_path / "clip.avi", tmp_path / "gt.txt"
    clip.write_bytes(b"")
    gt.write_text("")
    args = argparse.Namespace(video=clip, gt=gt, model="mobilenetv2-imagenet", models_dir=tmp_path / "models")
    reason = bench.real_embeddings(args)
    assert reason.startswith("model mobilenetv2-imagenet not available: ")
    # one fetch command, for the models dir given (a second one without --models-dir fetched elsewhere)
    assert reason.count("reid-daemon models fetch") == 1
    assert f"reid-daemon models fetch mobilenetv2-imagenet --models-dir {tmp_path / 'models'}" in reason
