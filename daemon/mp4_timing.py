"""Gaps in an annotated video's time table: the frame before a gap is held on screen for as long as the gap lasted.

OpenCV's writer times every frame alike (one rate), so a source that was away (a stream down for minutes, a file's
long pause) would either be filled with copies of the frame before, unbounded, or jump: everything after it then
plays early by the gap. ``hold_gaps`` lengthens, in the finished file, the duration of the frame before each gap
(the MP4 time-to-sample table, ``stts``), and the durations the headers give with it, so players, and the fleet
mosaic reading each frame's time, show every frame after the gap at its real time; the frames are not touched.

The edited index is written as a new ``moov`` box at the end of the file, and only then is the old one turned into
a ``free`` box (one 4-byte write): a process killed between the two leaves the file as it was, playable.

The reading side (``shown_frames``, read-only) counts the frames a file's video track shows from its own tables:
OpenCV counts every frame the file holds, and a file cut by stream copy holds frames its edit list hides.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

_TRACK_TABLE = (b"trak", b"mdia", b"minf", b"stbl", b"stts")  # where a track's time table is, inside moov


class Mp4LayoutError(ValueError):
    """A file whose layout the editor does not take (not what OpenCV's FFmpeg writer gives)."""


def _boxes(data: bytes | bytearray, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(kind, offset, size) of the boxes from ``start`` to ``end`` (32-bit sizes: inside an index)."""
    out, pos = [], start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size < 8 or pos + size > end:
            raise Mp4LayoutError(f"a {kind!r} box of {size} bytes at {pos} does not fit")
        out.append((kind, pos, size))
        pos += size
    return out


def _child(data: bytearray, parent: int, kind: bytes) -> int:
    """Offset of the first ``kind`` box inside the box at ``parent``."""
    size = struct.unpack(">I", data[parent : parent + 4])[0]
    for found, pos, _ in _boxes(data, parent + 8, parent + size):
        if found == kind:
            return pos
    raise Mp4LayoutError(f"no {kind!r} box")


def _last_top_box(f: os.PathLike[str] | str) -> tuple[bytes, int, int]:
    """(kind, offset, size) of a file's last top-level box."""
    with open(f, "rb") as fh:
        end = os.fstat(fh.fileno()).st_size
        pos, last = 0, (b"", 0, 0)
        while pos < end:
            fh.seek(pos)
            head = fh.read(16)
            if len(head) < 8:
                raise Mp4LayoutError(f"{end - pos} stray bytes at its end")
            size, kind = struct.unpack(">I4s", head[:8])
            if size == 1:
                size = struct.unpack(">Q", head[8:16])[0]
            elif size == 0:
                size = end - pos
            if size < 8:
                raise Mp4LayoutError(f"a {kind!r} box of {size} bytes at {pos}")
            last, pos = (kind, pos, size), pos + size
    return last


def _add_duration(data: bytearray, box: int, at_v0: int, at_v1: int, extra: int) -> None:
    """Add ``extra`` to the duration field of a full box (at ``at_v0`` bytes in for version 0, ``at_v1`` for 1)."""
    if data[box + 8] == 0:
        value = struct.unpack(">I", data[box + at_v0 : box + at_v0 + 4])[0] + extra
        if value >= 1 << 32:
            raise Mp4LayoutError("the duration passes a 32-bit header's")
        struct.pack_into(">I", data, box + at_v0, value)
    else:
        value = struct.unpack(">Q", data[box + at_v1 : box + at_v1 + 8])[0] + extra
        struct.pack_into(">Q", data, box + at_v1, value)


def _stretched(runs: list[tuple[int, int]], gaps: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Time-to-sample runs (count, duration) with sample ``k - 1``'s duration lengthened by ``ticks`` for each
    ``(k, ticks)`` of ``gaps`` (k ascending, 1 <= k <= the sample count)."""
    durations: list[tuple[int, int]] = []  # (first sample, duration) of each run
    first = 0
    for count, duration in runs:
        durations.append((first, duration))
        first += count
    total, out, pending = first, [], dict(gaps)
    starts = [s for s, _ in durations] + [total]
    for (begin, duration), end in zip(durations, starts[1:], strict=True):
        cut = begin
        for k in sorted(g for g in pending if begin < g <= end):
            if k - 1 > cut:
                out.append((k - 1 - cut, duration))
            out.append((1, duration + pending[k]))
            cut = k
        if end > cut:
            out.append((end - cut, duration))
    return out


def hold_gaps(path: Path, gaps: Sequence[tuple[int, float]]) -> None:
    """In the finished MP4 at ``path`` (one video track, its index last, as OpenCV writes it), hold frame ``k - 1``
    on screen ``seconds`` longer for each ``(k, seconds)`` of ``gaps`` (k ascending, 1 to the frame count: the
    last frame is held through a gap after it, where the next file of a cut video begins).
    Mp4LayoutError when the file is not laid out so; OSError when it cannot be read or written."""
    kind, moov_at, moov_size = _last_top_box(path)
    if kind != b"moov":
        raise Mp4LayoutError(f"the index is not the file's last box ({kind!r} is)")
    with open(path, "rb") as f:
        f.seek(moov_at)
        data = bytearray(f.read(moov_size))
    chain = [0]
    for part in _TRACK_TABLE:
        chain.append(_child(data, chain[-1], part))
    stts = chain.pop()
    trak, mdia = chain[1], chain[2]
    mdhd, mvhd = _child(data, mdia, b"mdhd"), _child(data, 0, b"mvhd")
    scale = struct.unpack(">I", data[mdhd + (28 if data[mdhd + 8] else 20) :][:4])[0]
    movie_scale = struct.unpack(">I", data[mvhd + (28 if data[mvhd + 8] else 20) :][:4])[0]
    n_runs = struct.unpack(">I", data[stts + 12 : stts + 16])[0]
    runs = [struct.unpack(">II", data[stts + 16 + 8 * i : stts + 24 + 8 * i]) for i in range(n_runs)]
    frames = sum(c for c, _ in runs)
    ticks = [(k, round(s * scale)) for k, s in gaps if 0 < k <= frames and s > 0]
    if not ticks:
        return
    table = _stretched(runs, ticks)
    old_size = struct.unpack(">I", data[stts : stts + 4])[0]
    new = struct.pack(">I4sII", 16 + 8 * len(table), b"stts", 0, len(table))
    new += b"".join(struct.pack(">II", *run) for run in table)
    data[stts : stts + old_size] = new
    for box in chain:  # moov, trak, mdia, minf, stbl hold it: each grows by as much
        struct.pack_into(">I", data, box, struct.unpack(">I", data[box : box + 4])[0] + len(new) - old_size)
    extra = sum(t for _, t in ticks)
    extra_movie = round(extra * movie_scale / scale)
    _add_duration(data, mdhd, 24, 32, extra)
    _add_duration(data, mvhd, 24, 32, extra_movie)
    _add_duration(data, _child(data, trak, b"tkhd"), 28, 36, extra_movie)
    _stretch_edit(data, trak, extra_movie)
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        try:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        except OSError:
            f.truncate(end)  # a full disk: the file as it was
            raise
        f.seek(moov_at + 4)
        f.write(b"free")  # the old index: from here on the new one, at the end, is read


def _stretch_edit(data: bytearray, trak: int, extra: int) -> None:
    """Lengthen the track's edit list (one segment: the whole track, as FFmpeg writes it) by ``extra``."""
    try:
        edts = _child(data, trak, b"edts")
    except Mp4LayoutError:
        return  # no edit list: the track plays as its table says
    elst = _child(data, edts, b"elst")
    if struct.unpack(">I", data[elst + 12 : elst + 16])[0] != 1:
        raise Mp4LayoutError("an edit list of several segments")
    _add_duration(data, elst, 16, 16, extra)


def frame_rate(path: Path) -> float | None:
    """The rate most of an MP4's frames are timed at (its track's time scale over the duration the most frames
    have): an annotated video's grid, which its container's average rate is not where ``hold_gaps`` held gaps in
    it. None where the file is not laid out as OpenCV writes it, or cannot be read."""
    try:
        return _grid_rate(path)
    except (OSError, ValueError, struct.error):
        return None


def _grid_rate(path: Path) -> float | None:
    kind, at, size = _last_top_box(path)
    if kind != b"moov":
        return None
    with open(path, "rb") as f:
        f.seek(at)
        data = bytearray(f.read(size))
    mdia = _child(data, _child(data, 0, b"trak"), b"mdia")
    stts = _child(data, _child(data, _child(data, mdia, b"minf"), b"stbl"), b"stts")
    mdhd = _child(data, mdia, b"mdhd")
    scale = struct.unpack(">I", data[mdhd + (28 if data[mdhd + 8] else 20) :][:4])[0]
    n_runs = struct.unpack(">I", data[stts + 12 : stts + 16])[0]
    by_duration: dict[int, int] = {}
    for i in range(n_runs):
        count, duration = struct.unpack(">II", data[stts + 16 + 8 * i : stts + 24 + 8 * i])
        by_duration[duration] = by_duration.get(duration, 0) + count
    duration = max(by_duration, key=lambda d: by_duration[d], default=0)
    return scale / duration if duration > 0 and scale > 0 else None


# ------------------------------------------------------------------ reading: the frames a file shows (read-only)

_MAX_INDEX_BYTES = 64 << 20  # a larger index (days of video) is not read: OpenCV's count stands
# nor one of more samples (nearly 4 days at 25 fps): each takes some 60 bytes while counted
_MAX_SAMPLES = 1 << 23
_MAX_EDITS = 256  # an edit list of more segments is not counted here (an editor's makes a few: one per cut)


@dataclass(frozen=True, slots=True)
class Edit:
    """One segment of a track's edit list: the track's media from ``media_time`` (its own time scale; -1: an empty
    edit, nothing shown: a start delay) played for ``duration`` (the movie's time scale)."""

    media_time: int
    duration: int


@dataclass(frozen=True, slots=True)
class TrackTiming:
    """A video track's timing tables: its samples (frames, in decoding order) take ``durations`` (time-to-sample
    runs, rows ``(count, ticks)``, ``stts``) and are shown ``offsets`` after their decoding times (composition
    offsets, rows ``(count, ticks)``, ``ctts``: B-frames), in the track's time scale; ``edits`` (None: no edit list)
    say which of its media times are shown, their durations in the movie's time scale."""

    movie_scale: int
    scale: int
    durations: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    edits: tuple[Edit, ...] | None


def _walk(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(kind, payload offset, end) of the boxes from ``start`` to ``end``: 64-bit sizes (1) and a last box running
    to the end (0) too. Mp4LayoutError where one does not fit."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            size, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise Mp4LayoutError(f"a {kind!r} box of {size} bytes at {pos} does not fit")
        yield kind, pos + head, pos + size
        pos += size


def _inside(data: bytes, box: tuple[int, int], kind: bytes) -> tuple[int, int] | None:
    """(payload offset, end) of the first ``kind`` box in the payload ``box`` spans; None where there is none."""
    for found, at, end in _walk(data, *box):
        if found == kind:
            return at, end
    return None


def _needed(data: bytes, box: tuple[int, int], kind: bytes) -> tuple[int, int]:
    found = _inside(data, box, kind)
    if found is None:
        raise Mp4LayoutError(f"no {kind!r} box")
    return found


def _field(fmt: str, data: bytes, box: tuple[int, int], offset: int) -> tuple[Any, ...]:
    """The fields ``fmt`` at ``offset`` bytes into a box's payload; Mp4LayoutError where they pass its end."""
    at = box[0] + offset
    if at + struct.calcsize(fmt) > box[1]:
        raise Mp4LayoutError(f"a box of {box[1] - box[0]} bytes read at {offset}")
    return struct.unpack_from(fmt, data, at)


def _time_scale(data: bytes, box: tuple[int, int]) -> int:
    """The time scale of an ``mvhd`` or ``mdhd`` (version 0: 32-bit times before it, 1: 64-bit)."""
    version = _field(">B", data, box, 0)[0]
    scale: int = _field(">I", data, box, 20 if version == 1 else 12)[0]
    if scale <= 0:
        raise Mp4LayoutError("a time scale of 0")
    return scale


def _entries(data: bytes, box: tuple[int, int], size: int, head: int = 4) -> tuple[int, int]:
    """(offset of the first, count) of a full box's table of ``size``-byte entries, its count at ``head`` bytes in;
    Mp4LayoutError where the table does not fit in the box."""
    at, end = box
    count: int = _field(">I", data, box, head)[0]
    if at + head + 4 + count * size > end:
        raise Mp4LayoutError(f"a table of {count} entries in a box of {end - at} bytes")
    return at + head + 4, count


def _runs(data: bytes, box: tuple[int, int], signed: bool) -> npt.NDArray[np.int64]:
    """The ``(count, value)`` rows of an ``stts`` or ``ctts`` (composition offsets read signed, as FFmpeg does)."""
    first, count = _entries(data, box, 8)
    rows = np.frombuffer(data, np.dtype([("n", ">u4"), ("v", ">i4" if signed else ">u4")]), count, first)
    return np.stack([rows["n"].astype(np.int64), rows["v"].astype(np.int64)], axis=1).reshape(count, 2)


def _edits(data: bytes, box: tuple[int, int]) -> tuple[Edit, ...]:
    """An ``elst``'s segments (version 0: 32-bit fields, 1: 64-bit); Mp4LayoutError for a rate other than 1 (a
    segment held on one frame, or played faster), which is not counted here."""
    version = _field(">B", data, box, 0)[0]
    size, fmt = (20, ">QqhH") if version == 1 else (12, ">IihH")
    first, count = _entries(data, box, size)
    if count > _MAX_EDITS:
        raise Mp4LayoutError(f"an edit list of {count} segments")
    edits = []
    for i in range(count):
        duration, media_time, rate, fraction = struct.unpack_from(fmt, data, first + size * i)
        if (rate, fraction) != (1, 0) or media_time < -1:
            raise Mp4LayoutError(f"an edit at {media_time} played at rate {rate + fraction / 65536:g}")
        edits.append(Edit(media_time, duration))
    return tuple(edits)


def _handler(data: bytes, trak: tuple[int, int]) -> bytes:
    hdlr = _inside(data, _needed(data, trak, b"mdia"), b"hdlr")
    return bytes(_field(">4s", data, hdlr, 8)[0]) if hdlr is not None else b""


def video_track(moov: bytes) -> tuple[int, int]:
    """(payload offset, end) of the video track (the ``trak`` whose handler is ``vide``) in a ``moov`` box's bytes;
    Mp4LayoutError where it has none or several (which one OpenCV reads is FFmpeg's choice), or is a fragmented
    file's (its samples are in ``moof`` boxes)."""
    whole = (8, len(moov))
    if _inside(moov, whole, b"mvex") is not None:
        raise Mp4LayoutError("a fragmented file (its frames are indexed in moof boxes)")
    found = [(at, end) for kind, at, end in _walk(moov, *whole) if kind == b"trak"]
    video = [trak for trak in found if _handler(moov, trak) == b"vide"]
    if len(video) != 1:
        raise Mp4LayoutError(f"{len(video) or 'no'} video tracks")
    return video[0]


def track_timing(moov: bytes, trak: tuple[int, int]) -> TrackTiming:
    """The timing tables of the track at ``trak`` (``video_track``) in a ``moov`` box's bytes."""
    mdia = _needed(moov, trak, b"mdia")
    stbl = _needed(moov, _needed(moov, mdia, b"minf"), b"stbl")
    ctts = _inside(moov, stbl, b"ctts")
    edts = _inside(moov, trak, b"edts")
    elst = _inside(moov, edts, b"elst") if edts is not None else None
    return TrackTiming(
        movie_scale=_time_scale(moov, _needed(moov, (8, len(moov)), b"mvhd")),
        scale=_time_scale(moov, _needed(moov, mdia, b"mdhd")),
        durations=_runs(moov, _needed(moov, stbl, b"stts"), signed=False),
        offsets=_runs(moov, ctts, signed=True) if ctts is not None else np.zeros((0, 2), np.int64),
        edits=_edits(moov, elst) if elst is not None else None,
    )


def presentation_times(timing: TrackTiming) -> npt.NDArray[np.int64]:
    """Each sample's presentation time (its decoding time plus its composition offset), in decoding order, in the
    track's time scale. Mp4LayoutError where the offsets are given for more samples than there are, or there are
    more than ``_MAX_SAMPLES``."""
    samples, offset_samples = int(timing.durations[:, 0].sum()), int(timing.offsets[:, 0].sum())
    if samples > _MAX_SAMPLES:
        raise Mp4LayoutError(f"{samples} samples")
    if offset_samples > samples:
        raise Mp4LayoutError(f"composition offsets for {offset_samples} samples, {samples} timed")
    ticks = np.repeat(timing.durations[:, 1], timing.durations[:, 0])
    decoded = np.concatenate(([0], np.cumsum(ticks)[:-1])) if ticks.size else ticks
    offsets = np.repeat(timing.offsets[:, 1], timing.offsets[:, 0])
    decoded[: offsets.size] += offsets  # samples beyond the table are shown as decoded (FFmpeg's reading)
    return decoded


def shown_samples(timing: TrackTiming) -> npt.NDArray[np.bool_]:
    """Which samples a player shows (FFmpeg's reading of an edit list): with no edit list, all; else those whose
    presentation time falls inside a segment's media range ``[media_time, media_time + duration)`` (its duration
    brought to the track's time scale); an empty edit (a start delay) shows none. Mp4LayoutError where a segment
    lasts 0 (read as 'to the end' by some, 'nothing' by others: not counted here) or past 64-bit times."""
    times = presentation_times(timing)
    if not timing.edits:
        return np.ones(times.size, np.bool_)
    shown = np.zeros(times.size, np.bool_)
    for edit in timing.edits:
        if edit.media_time == -1:
            continue
        if edit.duration == 0:
            raise Mp4LayoutError("an edit of duration 0")
        end = edit.media_time + (edit.duration * timing.scale + timing.movie_scale // 2) // timing.movie_scale
        if end >= 1 << 63:
            raise Mp4LayoutError(f"an edit to {end}, past 64-bit times")
        shown |= (times >= edit.media_time) & (times < end)
    return shown


def _index(path: Path) -> bytes:
    """The bytes of a file's ``moov`` box (wherever it is among the top-level boxes: first or last), with an 8-byte
    header; Mp4LayoutError where it has none, or one larger than ``_MAX_INDEX_BYTES``."""
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= end:
            f.seek(pos)
            head = f.read(16)
            size, kind = struct.unpack(">I4s", head[:8])
            large = size == 1
            if large:
                size = struct.unpack(">Q", head[8:16])[0]
            elif size == 0:
                size = end - pos
            if size < (16 if large else 8):
                raise Mp4LayoutError(f"a {kind!r} box of {size} bytes at {pos}")
            if kind == b"moov":
                if size > _MAX_INDEX_BYTES or pos + size > end:
                    raise Mp4LayoutError(f"an index of {size} bytes at {pos} (the file has {end})")
                f.seek(pos + (16 if large else 8))
                payload = f.read(size - (16 if large else 8))
                return struct.pack(">I4s", 8 + len(payload), b"moov") + payload
            pos += size
    raise Mp4LayoutError("no moov box")


def shown_frames(path: Path) -> int:
    """The frames an MP4 or MOV file's video track shows, by its own tables (``shown_samples``): a file cut by
    stream copy holds frames from the key frame before its cut that its edit list hides, which OpenCV counts; an
    H.264 or HEVC one cut at an open GOP's key frame also holds pictures its decoder cannot show
    (``shown_before_first``, ``skipped_leading``).
    Mp4LayoutError (a ValueError) where its index cannot be read so (a fragmented file, one damaged), OSError
    where the file cannot be read, struct.error where a table is cut short."""
    moov = _index(path)
    trak = video_track(moov)
    timing = track_timing(moov, trak)
    shown = shown_samples(timing)
    shown[[i for i in _skipped_samples(path, moov, trak, presentation_times(timing)) if i < shown.size]] = (
        False
    )
    return int(shown.sum())


# HEVC: a stream that starts at a CRA or BLA picture (a cut at an open GOP's key frame) cannot show the RASL pictures
# after it (decoded after it, shown before it, referring to frames cut off): FFmpeg's decoder drops them
_HEVC_ENTRIES = frozenset({b"hvc1", b"hev1"})
_HEVC_CRA_BLA = frozenset({16, 17, 18, 21})  # BLA_W_LP, BLA_W_RADL, BLA_N_LP, CRA_NUT
_HEVC_RASL = frozenset({8, 9})  # RASL_N, RASL_R
# RADL and RASL: they come right after their key frame, in decoding order
_HEVC_LEADING = frozenset({6, 7, 8, 9})
# H.264: a stream that starts at an I picture that is not IDR (an open GOP's) cannot show the B-frames after it that
# are shown before it (they refer to frames cut off); after an IDR picture there are none
_AVC_ENTRIES = frozenset({b"avc1", b"avc3"})
_MAX_LEADING = 64  # samples looked at after the first (leading pictures are one group of B-frames: a few)


def skipped_leading(first_types: Sequence[int]) -> list[int]:
    """The samples (decoding order) a decoder drops at the start of an HEVC stream whose samples' first picture
    NAL unit types are ``first_types``: where the first is a CRA or BLA picture, the RASL pictures right after it."""
    if not first_types or first_types[0] not in _HEVC_CRA_BLA:
        return []
    skipped = []
    for i, kind in enumerate(first_types[1:], start=1):
        if kind not in _HEVC_LEADING:
            break
        if kind in _HEVC_RASL:
            skipped.append(i)
    return skipped


def sample_offsets(moov: bytes, stbl: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """(file offset, size) of a track's first ``n`` samples (fewer where it has fewer), from its sample table
    (``stbl``: sizes ``stsz``, samples per chunk ``stsc``, chunk offsets ``stco``, or ``co64`` past 4 GiB)."""
    stsz = _needed(moov, stbl, b"stsz")
    fixed, total = _field(">II", moov, stsz, 4)
    if fixed == 0:
        first_size, total = _entries(moov, stsz, 4, head=8)
        sizes = [struct.unpack_from(">I", moov, first_size + 4 * i)[0] for i in range(min(n, total))]
    else:
        sizes = [fixed] * min(n, total)
    chunks = _chunk_offsets(moov, stbl, n)  # n samples are in the first n chunks at most
    first_run, runs = _entries(moov, _needed(moov, stbl, b"stsc"), 12)
    # runs start at increasing chunks: those after the (n + 1)-th start past the first n chunks
    per_chunk = [struct.unpack_from(">II", moov, first_run + 12 * i) for i in range(min(runs, n + 1))]
    out: list[tuple[int, int]] = []
    for r, (first_chunk, count) in enumerate(per_chunk):
        last_chunk = per_chunk[r + 1][0] - 1 if r + 1 < len(per_chunk) else len(chunks)
        for chunk in range(first_chunk, last_chunk + 1):
            if not 1 <= chunk <= len(chunks):
                raise Mp4LayoutError(f"samples in chunk {chunk} of {len(chunks)}")
            pos = chunks[chunk - 1]
            for _ in range(count):
                if len(out) == len(sizes):
                    return out
                out.append((pos, sizes[len(out)]))
                pos += out[-1][1]
    return out


def _chunk_offsets(moov: bytes, stbl: tuple[int, int], n: int) -> list[int]:
    """The file offsets of a track's first ``n`` chunks (fewer where it has fewer): ``stco`` (32-bit) or ``co64``
    (64-bit)."""
    stco = _inside(moov, stbl, b"stco")
    if stco is not None:
        first, count = _entries(moov, stco, 4)
        return [struct.unpack_from(">I", moov, first + 4 * i)[0] for i in range(min(n, count))]
    first, count = _entries(moov, _needed(moov, stbl, b"co64"), 8)
    return [struct.unpack_from(">Q", moov, first + 8 * i)[0] for i in range(min(n, count))]


def _sample_entry(moov: bytes, stbl: tuple[int, int]) -> tuple[bytes, int, int]:
    """(kind, payload offset, end) of a track's first sample description (``avc1``, ``hvc1``...)."""
    stsd = _needed(moov, stbl, b"stsd")
    entry = next(_walk(moov, stsd[0] + 8, stsd[1]), None)
    if entry is None:
        raise Mp4LayoutError("no sample description")
    return entry


def _hevc_length_size(moov: bytes, entry: tuple[bytes, int, int]) -> int:
    """The size of the NAL unit lengths of an HEVC track (its ``hvcC``)."""
    hvcc = _needed(moov, (entry[1] + 78, entry[2]), b"hvcC")  # after the visual sample entry's 78 bytes
    return int(_field(">B", moov, hvcc, 21)[0] & 3) + 1


def shown_before_first(times: npt.NDArray[np.int64]) -> list[int]:
    """The samples right after the first in decoding order (``times``: their presentation times) that are shown
    before it: what an H.264 stream starting at an open GOP's I picture cannot show."""
    leading = []
    for i in range(1, min(times.size, _MAX_LEADING + 1)):
        if times[i] >= times[0]:
            break
        leading.append(i)
    return leading


def _picture_type(f: BinaryIO, offset: int, size: int, length_size: int) -> int:
    """The NAL unit type of a sample's first picture (VCL) NAL unit, past parameter sets and SEI; -1: none."""
    pos, end = offset, offset + size
    while pos + length_size + 2 <= end:
        f.seek(pos)
        head = f.read(length_size + 2)
        if len(head) < length_size + 2:
            break
        kind = (head[length_size] >> 1) & 0x3F
        if kind < 32:
            return kind
        pos += length_size + int.from_bytes(head[:length_size], "big")
    return -1


def _skipped_samples(
    path: Path, moov: bytes, trak: tuple[int, int], times: npt.NDArray[np.int64]
) -> list[int]:
    """The samples of the track at ``trak`` (presented at ``times``) a decoder starting at its first sample drops:
    H.264's leading B-frames (``shown_before_first``), HEVC's RASL pictures (``skipped_leading``); other codecs'
    are not looked into."""
    stbl = _needed(moov, _needed(moov, _needed(moov, trak, b"mdia"), b"minf"), b"stbl")
    entry = _sample_entry(moov, stbl)
    if entry[0] in _AVC_ENTRIES:
        return shown_before_first(times)
    if entry[0] not in _HEVC_ENTRIES:
        return []
    length_size = _hevc_length_size(moov, entry)
    samples = sample_offsets(moov, stbl, _MAX_LEADING + 1)
    with open(path, "rb") as f:
        types = [_picture_type(f, at, size, length_size) for at, size in samples]
    return skipped_leading(types)
