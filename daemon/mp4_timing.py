"""Gaps in an annotated video's time table: the frame before a gap is held on screen for as long as the gap lasted.

OpenCV's writer times every frame alike (one rate), so a source that was away (a stream down for minutes, a file's
long pause) would either be filled with copies of the frame before, unbounded, or jump: everything after it then
plays early by the gap. ``hold_gaps`` lengthens, in the finished file, the duration of the frame before each gap
(the MP4 time-to-sample table, ``stts``), and the durations the headers give with it, so players, and the fleet
mosaic reading each frame's time, show every frame after the gap at its real time; the frames are not touched.

The edited index is written as a new ``moov`` box at the end of the file, and only then is the old one turned into
a ``free`` box (one 4-byte write): a process killed between the two leaves the file as it was, playable.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

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
