"""The reading side of daemon/mp4_timing.py on hand-built boxes: which of an MP4 track's frames a player shows, from
its edit list (versions 0 and 1, several segments, an empty edit), its time-to-sample and composition-offset tables
and its time scales; 64-bit box sizes; what it refuses (a fragmented file, a damaged table) rather than guess."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from daemon import mp4_timing
from daemon.mp4_timing import (
    Edit,
    Mp4LayoutError,
    TrackTiming,
    presentation_times,
    sample_offsets,
    shown_before_first,
    shown_frames,
    shown_samples,
    skipped_leading,
    track_timing,
    video_track,
)

MOVIE, TRACK = (
    1000,
    10240,
)  # time scales: FFmpeg's movie scale, its track scale at 10 fps (1024 ticks a frame)


def box(kind: bytes, *payload: bytes, large: bool = False) -> bytes:
    body = b"".join(payload)
    if large:  # a 64-bit size
        return struct.pack(">I4sQ", 1, kind, 16 + len(body)) + body
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full(kind: bytes, version: int, body: bytes, large: bool = False) -> bytes:
    return box(kind, struct.pack(">B3x", version) + body, large=large)


def header(kind: bytes, scale: int, version: int = 0) -> bytes:
    """An mvhd or mdhd: times, its scale and a duration (version 1: 64-bit times and duration)."""
    if version == 1:
        return full(kind, 1, struct.pack(">QQIQ", 0, 0, scale, 0) + bytes(80 if kind == b"mvhd" else 4))
    return full(kind, 0, struct.pack(">IIII", 0, 0, scale, 0) + bytes(80 if kind == b"mvhd" else 4))


def elst(edits: list[tuple[int, int]], version: int = 0) -> bytes:
    fmt = ">QqhH" if version == 1 else ">IihH"
    rows = b"".join(struct.pack(fmt, duration, media, 1, 0) for media, duration in edits)
    return box(b"edts", full(b"elst", version, struct.pack(">I", len(edits)) + rows))


def runs(kind: bytes, table: list[tuple[int, int]], version: int = 0) -> bytes:
    fmt = ">Ii" if kind == b"ctts" else ">II"
    return full(kind, version, struct.pack(">I", len(table)) + b"".join(struct.pack(fmt, *r) for r in table))


def sample_entry(kind: bytes = b"avc1", length_size: int = 4) -> bytes:
    """A sample description with one visual entry (its 78 bytes of fields, then hvcC for HEVC)."""
    config = (
        box(b"hvcC", bytes(21) + bytes([0xFC | (length_size - 1)]) + bytes(1)) if kind == b"hvc1" else b""
    )
    return full(b"stsd", 0, struct.pack(">I", 1) + box(kind, bytes(78), config))


def sample_table(
    sizes: list[int],
    chunks: list[int],
    per_chunk: list[tuple[int, int]],
    wide: bool = False,
    fixed: int = 0,
) -> bytes:
    """stsz (sizes; ``fixed``: every one of ``len(sizes)`` samples that size, no table), stsc ((first chunk,
    samples per chunk) runs) and stco, or co64 where ``wide``."""
    table = b"" if fixed else b"".join(struct.pack(">I", n) for n in sizes)
    stsz = full(b"stsz", 0, struct.pack(">II", fixed, len(sizes)) + table)
    stsc = full(
        b"stsc",
        0,
        struct.pack(">I", len(per_chunk)) + b"".join(struct.pack(">III", *r, 1) for r in per_chunk),
    )
    fmt, kind = (">Q", b"co64") if wide else (">I", b"stco")
    stco = full(kind, 0, struct.pack(">I", len(chunks)) + b"".join(struct.pack(fmt, c) for c in chunks))
    return stsz + stsc + stco


def trak(
    handler: bytes = b"vide",
    edits: bytes = b"",
    stts: list[tuple[int, int]] | None = None,
    ctts: list[tuple[int, int]] | None = None,
    mdhd_version: int = 0,
    large: bool = False,
    samples: bytes = b"",
    entry: bytes | None = None,
    ctts_version: int = 0,
    stts_box: bytes | None = None,
) -> bytes:
    stbl = box(
        b"stbl",
        sample_entry() if entry is None else entry,
        runs(b"stts", stts or [(20, 1024)]) if stts_box is None else stts_box,
        runs(b"ctts", ctts, ctts_version) if ctts else b"",
        samples,
    )
    hdlr = full(b"hdlr", 0, struct.pack(">I4s12x", 0, handler) + b"\0")
    mdia = box(b"mdia", header(b"mdhd", TRACK, mdhd_version), hdlr, box(b"minf", stbl))
    return box(b"trak", full(b"tkhd", 0, bytes(80)), edits, mdia, large=large)


def moov(*traks: bytes, mvhd_version: int = 0, extra: bytes = b"") -> bytes:
    return box(b"moov", header(b"mvhd", MOVIE, mvhd_version), *traks, extra)


def timing(data: bytes) -> TrackTiming:
    return track_timing(data, video_track(data))


def _no_time_scale(kind: bytes) -> bytes:
    """An index whose mvhd or mdhd (version 0) gives a time scale of 0."""
    data = bytearray(moov(trak()))
    at = data.index(kind) + 4 + 12  # past its kind, version and flags, creation and modification times
    struct.pack_into(">I", data, at, 0)
    return bytes(data)


# B-frames as FFmpeg writes them: I P B B, each frame decoded one frame early or shown two later
B_FRAMES = [(1, 2048), (1, 5120), (1, 2048), (1, 0), (1, 1024)] * 4


def test_presentation_times_are_decoding_times_plus_composition_offsets() -> None:
    t = timing(moov(trak(stts=[(5, 1024)], ctts=B_FRAMES[:5])))
    assert presentation_times(t).tolist() == [2048, 6144, 4096, 3072, 5120]


def test_a_track_without_an_edit_list_shows_every_frame() -> None:
    t = timing(moov(trak(ctts=B_FRAMES)))
    assert t.edits is None and int(shown_samples(t).sum()) == 20


@pytest.mark.parametrize("version", [0, 1])
def test_an_edit_shows_the_frames_whose_times_fall_in_its_media_range(version: int) -> None:
    """One segment from media time 7680 (between frames 5 and 6, the B-frame delay of 2048 counted), 1.45 s long
    (14848 track ticks): frames 6-19 shown, as the stream-copy cut of FFmpeg's, in either elst version, with
    64-bit headers too."""
    edits = elst([(7680, 1450)], version)
    t = timing(moov(trak(edits=edits, ctts=B_FRAMES, mdhd_version=version), mvhd_version=version))
    assert t.edits == (Edit(7680, 1450),) and (t.movie_scale, t.scale) == (MOVIE, TRACK)
    shown = shown_samples(t)
    assert sorted(presentation_times(t)[shown].tolist()) == [2048 + 1024 * k for k in range(6, 20)]


def test_an_empty_edit_delays_and_several_segments_add_up() -> None:
    """An empty edit (media time -1: 0.5 s of nothing, a start delay) shows no frame; two segments show frames
    2-4 and 10-11."""
    edits = elst([(-1, 500), (2048 + 2 * 1024, 300), (2048 + 10 * 1024, 200)])
    t = timing(moov(trak(edits=edits, ctts=B_FRAMES)))
    shown = presentation_times(t)[shown_samples(t)]
    assert sorted(shown.tolist()) == [2048 + 1024 * k for k in (2, 3, 4, 10, 11)]


def test_only_an_empty_edit_shows_nothing() -> None:
    assert int(shown_samples(timing(moov(trak(edits=elst([(-1, 500)]))))).sum()) == 0


def test_the_video_track_is_found_behind_others_and_in_a_64_bit_box() -> None:
    sound = trak(handler=b"soun", stts=[(7, 1024)])
    t = timing(moov(sound, trak(stts=[(12, 1024)], large=True)))
    assert int(shown_samples(t).sum()) == 12


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (moov(trak(), extra=box(b"mvex", b"")), "fragmented"),
        (moov(trak(handler=b"soun")), "no video tracks"),
        (moov(trak(), trak()), "2 video tracks"),
        (moov(trak(edits=elst([(0, 0)]))), "duration 0"),
        (moov(trak(edits=elst([(0, 1 << 63)], version=1))), "past 64-bit times"),
        # 1000 ms are 10240 track ticks: the edit ends at 2**63, one past the last 64-bit time
        (moov(trak(edits=elst([((1 << 63) - 10240, 1000)], version=1))), "an edit to 9223372036854775808"),
        (moov(trak(edits=elst([(-1, 1)] * 257))), "257 segments"),
        (moov(trak(ctts=[(25, 1024)])), "composition offsets for 25 samples"),
        (moov(trak(stts=[(0xFFFFFFFF, 1024)])), "4294967295 samples"),  # not 32 GiB of times
        (moov(trak())[:-9], "does not fit"),
        # two time-to-sample runs announced, one and a half held (the box cut within its last row)
        (moov(trak(stts_box=full(b"stts", 0, struct.pack(">IIII", 2, 20, 1024, 5)))), "a table of 2 entries"),
        (_no_time_scale(b"mvhd"), "a time scale of 0"),
        (_no_time_scale(b"mdhd"), "a time scale of 0"),
    ],
    ids=[
        "fragmented",
        "no-video",
        "two-videos",
        "edit-of-0",
        "edit-too-long",
        "edit-to-2**63",
        "edits-too-many",
        "ctts-too-long",
        "too-many",
        "cut-short",
        "stts-cut-in-a-row",
        "movie-scale-0",
        "track-scale-0",
    ],
)
def test_tables_that_cannot_be_read_so_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(Mp4LayoutError, match=why):
        shown_samples(timing(data))


def test_an_edit_list_counting_more_entries_than_it_holds_is_refused() -> None:
    data = bytearray(moov(trak(edits=elst([(2048, 2000)]))))
    at = data.index(b"elst") + 8
    struct.pack_into(">I", data, at, 1000)
    with pytest.raises(Mp4LayoutError, match="a table of 1000 entries"):
        timing(bytes(data))


@pytest.mark.parametrize(
    ("at", "fmt", "value", "why"),
    [
        (8, ">h", 0, "at 2048 played at rate 0"),  # a dwell: one frame held
        (10, ">H", 0x8000, "at 2048 played at rate 1.5"),  # rate 1 and a half (16.16 fixed point)
        (4, ">i", -2, "an edit at -2 played at rate 1"),  # below -1 (an empty edit): no media time
    ],
    ids=["dwell", "rate-fraction", "media-time-below-minus-1"],
)
def test_an_edit_played_at_another_rate_or_from_no_media_time_is_refused(
    at: int, fmt: str, value: int, why: str
) -> None:
    """``at``: bytes into the segment (version 0: duration, media time, rate, rate fraction)."""
    data = bytearray(moov(trak(edits=elst([(2048, 2000)]))))
    segment = data.index(b"elst") + 4 + 4 + 4  # past its kind, version and flags, count
    struct.pack_into(fmt, data, segment + at, value)
    with pytest.raises(Mp4LayoutError, match=why):
        timing(bytes(data))


def test_an_edit_list_of_as_many_segments_as_are_counted_is_counted() -> None:
    """256 segments (``_MAX_EDITS``), empty edits: counted, nothing shown; 257 are refused (above)."""
    assert int(shown_samples(timing(moov(trak(edits=elst([(-1, 1)] * 256))))).sum()) == 0


def test_an_edit_list_of_no_segments_shows_every_frame() -> None:
    """An elst with no entries edits nothing (FFmpeg reads it as no edit list): the 20 frames shown."""
    t = timing(moov(trak(edits=elst([]))))
    assert t.edits == () and int(shown_samples(t).sum()) == 20


def test_an_edits_duration_is_brought_to_the_tracks_time_scale_rounded() -> None:
    """Frames every 1024 track ticks (0, 1024, ...): a segment from 994 lasting 3 ms (30.72 ticks: 31, rounded)
    ends at 1025 and shows frame 1 (at 1024); floored (30) it would end at 1024 and show none."""
    t = timing(moov(trak(edits=elst([(994, 3)]))))
    assert np.flatnonzero(shown_samples(t)).tolist() == [1]


def test_an_empty_edit_in_a_32_bit_list_is_not_read_as_a_media_time() -> None:
    """Media time -1 (0xFFFFFFFF in a version-0 elst) is an empty edit, not 2**32 - 1: frame 1 of a track timed
    there (durations of 2**32 - 1 ticks) is not shown by it."""
    t = timing(moov(trak(edits=elst([(-1, 500)]), stts=[(2, 0xFFFFFFFF)])))
    assert t.edits == (Edit(-1, 500),) and int(shown_samples(t).sum()) == 0


def test_durations_are_read_unsigned_and_composition_offsets_signed() -> None:
    """stts durations up to 2**32 - 1 ticks (unsigned); version-1 ctts offsets below 0 (as FFmpeg writes B-frames
    without an edit list's delay: the I frame shown as decoded, the B-frames earlier)."""
    long = timing(moov(trak(stts=[(3, 0xFFFFFFFF)])))
    assert presentation_times(long).tolist() == [0, 0xFFFFFFFF, 2 * 0xFFFFFFFF]
    negative = timing(moov(trak(stts=[(4, 1024)], ctts=[(1, 0), (1, 2048), (2, -1024)], ctts_version=1)))
    assert presentation_times(negative).tolist() == [0, 3072, 1024, 2048]


def test_the_sample_count_limit_is_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A track of exactly ``_MAX_SAMPLES`` samples is counted; one more is refused (the limit brought down to
    20 here: the real one is 2**23)."""
    monkeypatch.setattr(mp4_timing, "_MAX_SAMPLES", 20)
    assert int(shown_samples(timing(moov(trak(stts=[(20, 1024)])))).sum()) == 20
    with pytest.raises(Mp4LayoutError, match="21 samples"):
        shown_samples(timing(moov(trak(stts=[(21, 1024)]))))


@pytest.mark.parametrize("first", [True, False], ids=["index-first", "index-last"])
def test_a_files_shown_frames_are_read_from_its_index_with_64_bit_sizes(tmp_path: Path, first: bool) -> None:
    """The index found first or last among the file's boxes, after a 64-bit-sized mdat, itself 64-bit-sized."""
    index = box(b"moov", *_payload(moov(trak(edits=elst([(7680, 1450)]), ctts=B_FRAMES))), large=True)
    media = box(b"mdat", bytes(64), large=True)
    boxes = [box(b"ftyp", b"isom"), index, media] if first else [box(b"ftyp", b"isom"), media, index]
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"".join(boxes))
    assert shown_frames(path) == 14


def _payload(data: bytes) -> tuple[bytes]:
    return (data[8:],)


def _to_the_end(data: bytes) -> bytes:
    """A box with its size 0: it runs to the end of what holds it."""
    return struct.pack(">I", 0) + data[4:]


def test_a_box_of_size_0_runs_to_the_end_of_the_file_or_box_holding_it(tmp_path: Path) -> None:
    """The index last with size 0 (to the end of the file), its video track last with size 0 (to the end of the
    index): 12 frames, as FFmpeg reads them."""
    index = moov(trak(handler=b"soun", stts=[(7, 1024)]), _to_the_end(trak(stts=[(12, 1024)])))
    assert int(shown_samples(timing(index)).sum()) == 12
    path = tmp_path / "clip.mp4"
    path.write_bytes(box(b"ftyp", b"isom") + box(b"mdat", bytes(64)) + _to_the_end(index))
    assert shown_frames(path) == 12


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("cut", r"an index of \d+ bytes at 24 \(the file has \d+\)"),
        ("short-64-bit-box", "a b'free' box of 12 bytes at 12"),
    ],
    ids=["index-cut-short", "short-64-bit-box"],
)
def test_a_file_whose_top_level_boxes_do_not_fit_is_refused(tmp_path: Path, damage: str, why: str) -> None:
    """Its index (last) cut short by 10 bytes; a box with a 64-bit size of 12, less than its own 16-byte header
    (before the index)."""
    head, index = box(b"ftyp", b"isom") + box(b"mdat", bytes(4)), moov(trak())
    if damage == "cut":
        data = head + index[:-10]
    else:
        data = box(b"ftyp", b"isom") + struct.pack(">I4sQ", 1, b"free", 12) + index
    path = tmp_path / "damaged.mp4"
    path.write_bytes(data)
    with pytest.raises(Mp4LayoutError, match=why):
        shown_frames(path)


def test_the_index_size_limit_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index of exactly ``_MAX_INDEX_BYTES`` is read; one a byte larger is refused (the limit brought down to
    the size of this one here: the real one is 64 MiB)."""
    path = tmp_path / "clip.mp4"
    index = moov(trak())
    path.write_bytes(box(b"ftyp", b"isom") + index)
    monkeypatch.setattr(mp4_timing, "_MAX_INDEX_BYTES", len(index))
    assert shown_frames(path) == 20
    monkeypatch.setattr(mp4_timing, "_MAX_INDEX_BYTES", len(index) - 1)
    with pytest.raises(Mp4LayoutError, match=f"an index of {len(index)} bytes at 12"):
        shown_frames(path)


def test_a_file_without_an_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "killed.mp4"
    path.write_bytes(box(b"ftyp", b"isom") + box(b"mdat", bytes(64)))
    with pytest.raises(Mp4LayoutError, match="no moov box"):
        shown_frames(path)


@pytest.mark.parametrize(
    ("types", "skipped"),
    [
        ([21, 9, 8, 8, 1, 1], [1, 2, 3]),  # a CRA first: the RASL pictures after it
        ([16, 8, 1], [1]),  # a BLA first
        ([21, 7, 9, 1, 8], [2]),  # a RADL picture decodes; a RASL after a trailing picture is not the CRA's
        ([21, 6, 8, 1], [2]),  # RADL_N too is a leading picture: the RASL after it is still the CRA's
        ([19, 6, 1], []),  # an IDR: no RASL pictures
        ([1, 8, 8], []),  # no key frame first: not counted here
        ([], []),
    ],
    ids=["cra", "bla", "radl-then-later", "radl-n-then-rasl", "idr", "no-key-frame", "empty"],
)
def test_an_hevc_stream_starting_at_a_cra_drops_its_rasl_pictures(
    types: list[int], skipped: list[int]
) -> None:
    assert skipped_leading(types) == skipped


@pytest.mark.parametrize(
    ("times", "leading"),
    [
        (
            [5120, 3072, 2048, 4096, 9216, 7168],
            [1, 2, 3],
        ),  # an open GOP's I picture first: its B-frames before it
        ([2048, 6144, 4096, 3072, 5120], []),  # an IDR picture first: none shown before it
        ([5120, 3072, 9216, 4096], [1]),  # only those right after it: not one after a picture shown later
        ([1000, *range(70)], list(range(1, 65))),  # 64 looked at, at most (_MAX_LEADING)
        ([0], []),
    ],
    ids=["open-gop", "idr", "not-after-a-later-one", "at-most-64", "one-sample"],
)
def test_the_b_frames_shown_before_an_h264_streams_first_picture_are_not_shown(
    times: list[int], leading: list[int]
) -> None:
    assert shown_before_first(np.array(times, np.int64)) == leading


@pytest.mark.parametrize("wide", [False, True], ids=["stco", "co64"])
def test_sample_offsets_follow_chunks_and_their_sizes(wide: bool) -> None:
    """Two samples in chunk 1, two in chunk 2 (the first run goes on), one in chunk 3, past 4 GiB in a co64."""
    far = 1 << 33 if wide else 9000
    table = sample_table([10, 20, 30, 40, 50], [1000, 5000, far], [(1, 2), (3, 1)], wide=wide)
    data = moov(trak(samples=table))
    stbl = _stbl(data)
    assert sample_offsets(data, stbl, 9) == [(1000, 10), (1010, 20), (5000, 30), (5030, 40), (far, 50)]
    assert sample_offsets(data, stbl, 3) == [(1000, 10), (1010, 20), (5000, 30)]


def test_sample_offsets_change_samples_per_chunk_where_the_next_run_begins() -> None:
    """One sample in chunk 1, then three a chunk from chunk 2: chunk 2 holds samples 2-4 (not one, as chunk 1)."""
    data = moov(trak(samples=sample_table([1, 2, 3, 4], [1000, 2000], [(1, 1), (2, 3)])))
    assert sample_offsets(data, _stbl(data), 9) == [(1000, 1), (2000, 2), (2002, 3), (2005, 4)]


@pytest.mark.parametrize("fixed", [0, 100], ids=["size-table", "one-size"])
def test_sample_offsets_give_no_more_samples_than_the_track_has(fixed: int) -> None:
    """Three samples (each of 100 bytes: a table of sizes, or one size for all) in one chunk that stsc says holds
    five: three offsets, not five."""
    table = sample_table([100, 100, 100], [1000], [(1, 5)], fixed=fixed)
    data = moov(trak(stts=[(3, 1024)], samples=table))
    assert sample_offsets(data, _stbl(data), 9) == [(1000, 100), (1100, 100), (1200, 100)]


def _stbl(data: bytes) -> tuple[int, int]:
    at = data.index(b"stbl") + 4
    return at, at - 8 + struct.unpack(">I", data[at - 8 : at - 4])[0]


def nal(kind: int, length_size: int, body: bytes = bytes(5)) -> bytes:
    unit = bytes([kind << 1, 1]) + body
    return len(unit).to_bytes(length_size, "big") + unit


def test_a_file_whose_rasl_pictures_are_bare_nal_headers_is_counted_without_them(tmp_path: Path) -> None:
    """A CRA and three RASL samples each of one NAL unit with no payload (its 2-byte header ends the sample), then
    four trailing ones: five shown."""
    frames = [nal(21, 4, b""), *(nal(8, 4, b"") for _ in range(3)), *(nal(1, 4, b"") for _ in range(4))]
    head = box(b"ftyp", b"isom") + struct.pack(">I4s", 8 + sum(map(len, frames)), b"mdat")
    table = sample_table([len(f) for f in frames], [len(head)], [(1, 8)])
    index = moov(trak(stts=[(8, 1024)], samples=table, entry=sample_entry(b"hvc1", 4)))
    path = tmp_path / "cut.mp4"
    path.write_bytes(head + b"".join(frames) + index)
    assert shown_frames(path) == 5


@pytest.mark.parametrize(("entry", "shown"), [(b"avc1", 2), (b"avc3", 2), (b"mp4v", 4)])
def test_an_h264_file_starting_at_an_open_gops_i_picture_is_counted_without_its_leading_b_frames(
    tmp_path: Path, entry: bytes, shown: int
) -> None:
    """Four samples shown at 4096, 1024, 2048, 7168: the first, an I picture, after the two B-frames that
    follow it (an open GOP's, cut before): two shown, in either H.264 sample entry (parameter sets in it, avc1, or
    in the stream, avc3); another codec's are not looked into: four."""
    trk = trak(stts=[(4, 1024)], ctts=[(1, 4096), (2, 0), (1, 4096)], entry=sample_entry(entry))
    path = tmp_path / "cut.mp4"
    path.write_bytes(box(b"ftyp", b"isom") + box(b"mdat", bytes(8)) + moov(trk))
    assert shown_frames(path) == shown


@pytest.mark.parametrize(("entry", "shown"), [(b"hvc1", 5), (b"avc1", 8)])
@pytest.mark.parametrize("length_size", [2, 4])
def test_a_file_starting_at_a_cra_is_counted_without_its_rasl_pictures(
    tmp_path: Path, entry: bytes, shown: int, length_size: int
) -> None:
    """Eight HEVC samples: a CRA (after a parameter set and an SEI), three RASL pictures, four trailing ones: five
    shown (a decoder drops the three). The same bytes described as H.264 are not looked into: eight."""
    first = nal(32, length_size, bytes(30)) + nal(39, length_size, bytes(300)) + nal(21, length_size)
    frames = [first, *(nal(8, length_size) for _ in range(3)), *(nal(1, length_size) for _ in range(4))]
    head = box(b"ftyp", b"isom") + struct.pack(">I4s", 8 + sum(map(len, frames)), b"mdat")
    table = sample_table([len(f) for f in frames], [len(head)], [(1, 8)])
    description = sample_entry(entry, length_size)
    index = moov(trak(stts=[(8, 1024)], samples=table, entry=description))
    path = tmp_path / "cut.mp4"
    path.write_bytes(head + b"".join(frames) + index)
    assert shown_frames(path) == shown
