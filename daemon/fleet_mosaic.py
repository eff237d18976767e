"""``fleet.mp4``: the cameras of a fleet replay side by side, in step on the fleet clock.

Each camera's ``annotated.mp4`` (global ids drawn, one colour per id on every camera) becomes one tile of a grid;
a camera whose run rotated its files (``output.rotate_mb``, ``output.live_rotate_s``) has one video per file, played
one after the other in the tile. A camera's frame is at fleet time ``clock_offset_s`` + its time in the video (from
the video's first frame: a gap the video holds its frame through, ``mp4_timing.hold_gaps``, counts as it lasted;
daemon/fleet.py, ``FleetClock``), moved by when its first frame was seen where the cameras' identity tables record it
(live cameras started at different moments: ``placements``); a later video of a camera follows the one before it,
unless its table puts its first frame more than a frame away from there (a live stream that was away): there it
starts where its table says. The mosaic runs at the fastest camera's rate (its videos' grid, not their average
rate over such gaps) and shows, at each of its instants, every
camera's latest frame: a slower camera's frame stays up until its next one, and a camera that has not started yet,
has ended or has no video then shows a dark tile saying so. A banner gives the time in seconds since the fleet's
first frame (``start_s``: the earliest camera's), the time base of the fleet report (daemon/fleet_report.py) where
it covers these runs only, so a time it names can be looked up here (report.md says where the video's 0.0 s is
otherwise). The videos are read as a stream, two frames per camera held at a time (the one up, the next with its
time), so memory does not grow with their length.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from daemon.embedding import temp_name
from daemon.mp4_timing import frame_rate
from daemon.outputs import outlined_text
from daemon.types import ImageBGR

log = logging.getLogger(__name__)

BANNER_PX = 28
MAX_WIDTH = 1920  # a mosaic of many cameras gets smaller tiles rather than a wider video
_DARK = 24


@dataclass(frozen=True)
class Tile:
    """One camera's place in the mosaic: its annotated video and where its frames sit on the fleet clock; ``more``:
    its later videos (rotated files), oldest first, each with where its table puts its first frame on that clock
    (None: not recorded)."""

    name: str
    video: Path
    offset_s: float = 0.0
    more: tuple[tuple[Path, float | None], ...] = ()


def grid(n: int) -> tuple[int, int]:
    """(columns, rows) for ``n`` tiles: one row up to three, then a near-square grid."""
    if n <= 0:
        raise ValueError("a mosaic needs at least one tile")
    cols = n if n <= 3 else math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def cell_size(
    sizes: list[tuple[int, int]], cols: int, height: int, max_width: int = MAX_WIDTH
) -> tuple[int, int]:
    """(width, height) of one grid cell: ``height`` tall (less when ``cols`` cells would be wider than
    ``max_width``) and wide enough for the widest view (sizes are (width, height)); both even, as the encoder's
    chroma planes are half size."""
    aspect = max(w / h for w, h in sizes)
    h = 2 * math.floor(min(height, max_width / (cols * aspect)) / 2)
    return 2 * math.ceil(h * aspect / 2), h


def placements(offsets: dict[str, float], first_frames: dict[str, float | None]) -> dict[str, float]:
    """Where each camera's first video starts on the mosaic's clock. Its ``source.clock_offset_s`` (``offsets``),
    moved by how much later than the others its first frame was seen, where every camera's identity table records
    that (``first_frames``, fleet times: live cameras started at different moments); the offsets alone where one
    does not. On a replay a camera's first frame is at the fleet's epoch plus its offset (a file's frames are timed
    from its first, whatever time its container starts at), so the move is 0 and the placement its offset,
    exactly: the move is taken to the millisecond, as the tables record times."""
    firsts = {n: first_frames.get(n) for n in offsets}
    if not firsts or any(t is None for t in firsts.values()):
        return dict(offsets)
    late = {n: t - offsets[n] for n, t in firsts.items() if t is not None}
    least = min(late.values())
    return {n: offsets[n] + round(late[n] - least, 3) for n in offsets}


def camera_tile(name: str, videos: list[tuple[Path, float | None]], at: float, first: float | None) -> Tile:
    """Camera ``name``'s tile: its ``videos`` of the run (``fleet_report.run_videos``: oldest first, each with
    the fleet time of its first frame where recorded), the run's first frame, at fleet time ``first`` (None: not
    recorded), placed at ``at`` on the mosaic's clock (``placements``)."""

    def where(t: float | None) -> float | None:
        return None if t is None or first is None else at + round(t - first, 3)

    (video, t), *more = videos
    start = where(t)
    return Tile(name, video, at if start is None else start, tuple((v, where(u)) for v, u in more))


# a frame whose time is this close after an instant is shown at it (rates that divide each other)
_EPS_S = 1e-6


@dataclass(frozen=True)
class _Clip:
    """One video of a tile: where it starts on the mosaic's clock, its rate (its frames' grid), how long it plays
    (its last frame's time included) and its frames' size."""

    video: Path
    start: float
    fps: float
    length_s: float
    size: tuple[int, int]

    @property
    def end(self) -> float:
        return self.start + self.length_s

    def plays_at(self, t: float) -> bool:
        """Whether one of the clip's frames is up at ``t`` (its first has come, its last has not had its time)."""
        return -_EPS_S <= t - self.start < self.length_s - _EPS_S


def _clip(video: Path, start: float) -> _Clip:
    """``video`` as a clip starting at ``start`` (its header read); OSError when it is not a readable video. Its
    length is its frame count over the container's rate, an average that counts held gaps in; its rate is that
    of its time table's grid where the file has one (``mp4_timing.frame_rate``)."""
    cap = cv2.VideoCapture(str(video))
    try:
        average = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not cap.isOpened() or not 0 < average <= 1000 or count <= 0:
            raise OSError(f"{video}: not a readable video")
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()
    fps = frame_rate(video)
    fps = fps if fps is not None and 0 < fps <= 1000 else float(average)
    return _Clip(video, start, fps, count / average, size)


def _clips(tile: Tile) -> list[_Clip]:
    """A tile's videos as clips on the mosaic's clock: the first at ``offset_s``, each later one right after the one
    before, or where its table puts it when that is more than a frame away (a later video that cannot be read is
    left out with a warning). OSError when the first cannot be read."""
    clips = [_clip(tile.video, tile.offset_s)]
    for video, recorded in tile.more:
        last = clips[-1]
        start = last.end if recorded is None or abs(recorded - last.end) <= 1 / last.fps else recorded
        try:
            clips.append(_clip(video, start))
        except OSError as e:
            log.warning("mosaic: camera %s: a video left out: %s", tile.name, e)
    return clips


class _Reader:
    """Frames of one tile's videos read forward on demand (times never go back); one video open at a time."""

    def __init__(self, tile: Tile) -> None:
        self.tile = tile
        self.clips = _clips(tile)
        self.fps = max(c.fps for c in self.clips)
        self.size = self.clips[0].size
        self._at = -1  # the clip open, its capture, the frame held and the one after it with its time
        self._cap: cv2.VideoCapture | None = None
        self._image: ImageBGR | None = None
        self._next: tuple[float, ImageBGR] | None = None
        self._first_s = 0.0  # the clip's first frame's position in its container

    @property
    def start_s(self) -> float:
        return self.clips[0].start

    @property
    def end_s(self) -> float:
        return max(c.end for c in self.clips)

    def image(self, t: float) -> ImageBGR | None:
        """The frame shown at ``t``: the latest of the latest clip started by then; None outside every clip."""
        for n in range(len(self.clips) - 1, max(self._at, 0) - 1, -1):
            clip = self.clips[n]
            if clip.plays_at(t):
                return self._frame(n, t - clip.start)
            if t >= clip.start:
                return None  # after this clip's end, before the next one's start
        return None

    def _frame(self, n: int, at_s: float) -> ImageBGR | None:
        """Clip ``n``'s latest frame whose time in it is not after ``at_s`` (read forward from the one held)."""
        if n != self._at or self._cap is None:
            self.close()
            self._cap = cv2.VideoCapture(str(self.clips[n].video))
            self._at, self._image = n, None
            self._next = self._read()
            self._first_s = self._next[0] if self._next is not None else 0.0
        while self._next is not None and self._next[0] - self._first_s <= at_s + _EPS_S:
            self._image = self._next[1]
            self._next = self._read()
        return self._image if self._image is not None or self._next is None else self._next[1]

    def _read(self) -> tuple[float, ImageBGR] | None:
        """The open clip's next frame and its position (s); None at its end (one shorter than its header said:
        the last frame read stays up)."""
        assert self._cap is not None
        if not self._cap.grab():
            return None
        at_s = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        ok, image = self._cap.retrieve()
        return (at_s, np.asarray(image, dtype=np.uint8)) if ok else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def write_mosaic(
    tiles: list[Tile],
    out: Path,
    tile_height: int = 480,
    progress: Callable[[int, int], None] | None = None,
    start_s: float | None = None,
) -> Path | None:
    """Write the mosaic of ``tiles`` to ``out`` (mp4v), whole or not at all: through ``temp_video``'s file,
    renamed to ``out`` once complete and synced (a writer killed meanwhile leaves that file, not a cut video
    under ``out``'s name); None when no tile's video can be read (each unreadable one is left out with a
    warning). ``progress(done, total)`` is called after each mosaic frame. ``start_s``: the fleet's first frame
    on the tiles' clock, where the mosaic and its banner's count begin (default: the earliest tile's; earlier
    when a camera of the fleet left no video)."""
    readers = _open(tiles)
    if not readers:
        return None
    tmp = temp_video(out)
    try:
        _write_frames(readers, tmp, tile_height, progress, start_s)
        _fsync(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for r in readers:
            r.close()
    return out


def temp_video(out: Path) -> Path:
    """Where the video for ``out`` is written before it takes that name: ``atomic_write``'s temporary name with
    the video's suffix after it (OpenCV picks the container by the name), ``.fleet.mp4.<12 hex>.tmp.mp4``."""
    return temp_name(out, out.suffix)


def _write_frames(
    readers: list[_Reader],
    path: Path,
    tile_height: int,
    progress: Callable[[int, int], None] | None,
    start_s: float | None,
) -> None:
    cols, rows = grid(len(readers))
    cell_w, tile_height = cell_size([r.size for r in readers], cols, tile_height)
    fps = max(r.fps for r in readers)
    start = min(r.start_s for r in readers)
    start = start if start_s is None else min(start, start_s)
    total = math.ceil((max(r.end_s for r in readers) - start) * fps)
    size = (cols * cell_w, BANNER_PX + rows * tile_height)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise OSError(f"cannot write video {path}")
    try:
        for k in range(total):
            t = start + k / fps
            writer.write(_compose(readers, t, t - start, (cols, cell_w, tile_height), size))
            if progress is not None:
                progress(k + 1, total)
    finally:
        writer.release()


def _fsync(path: Path) -> None:
    """Make ``path``'s data durable before it is renamed (a power cut then leaves a whole video or none)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open(tiles: list[Tile]) -> list[_Reader]:
    readers = []
    for tile in tiles:
        try:
            readers.append(_Reader(tile))
        except OSError as e:
            log.warning("mosaic: camera %s left out: %s", tile.name, e)
    return readers


def _compose(
    readers: list[_Reader], t: float, since_start: float, cells: tuple[int, int, int], size: tuple[int, int]
) -> ImageBGR:
    cols, cell_w, cell_h = cells
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    outlined_text(canvas, f"{since_start:7.2f} s since the fleet's first frame", (8, BANNER_PX - 8), 0.6)
    for n, r in enumerate(readers):
        x, y = (n % cols) * cell_w, BANNER_PX + (n // cols) * cell_h
        canvas[y : y + cell_h, x : x + cell_w] = _cell(r, t, cell_w, cell_h)
    return canvas


def _cell(r: _Reader, t: float, cell_w: int, cell_h: int) -> ImageBGR:
    """One camera's tile at fleet time ``t``, fitted into the cell (aspect kept), its name at the bottom."""
    cell = np.full((cell_h, cell_w, 3), _DARK, np.uint8)
    image = r.image(t)
    if image is None:
        state = "not started" if t < r.start_s else "ended" if t >= r.end_s else "no video"
        outlined_text(cell, f"{r.tile.name}: {state}", (8, cell_h // 2), 0.6)
        return cell
    w = min(cell_w, round(image.shape[1] * cell_h / image.shape[0]))
    cell[:, :w] = cv2.resize(image, (w, cell_h), interpolation=cv2.INTER_AREA)
    outlined_text(cell, r.tile.name, (8, cell_h - 10), 0.7)
    return cell
