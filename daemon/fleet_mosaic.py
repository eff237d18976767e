"""``fleet.mp4``: the cameras of a fleet replay side by side, in step on the fleet clock.

Each camera's ``annotated.mp4`` (global ids drawn, one colour per id on every camera) becomes one tile of a grid.
A camera's frame ``i`` is at fleet time ``clock_offset_s + i / fps`` (daemon/fleet.py, ``FleetClock``), moved
by when its first frame was seen where the cameras' identity tables record it (live cameras started at different
moments: ``placements``); the mosaic runs at the fastest camera's rate and shows, at each of its instants, every
camera's latest frame: a slower camera's frame stays up until its next one, and a camera that has not started yet
or has ended shows a dark tile saying so. A banner gives the time in seconds since the fleet's first frame
(``start_s``: the earliest camera's), the time base of the fleet report (daemon/fleet_report.py) where it covers
these files only, so a time it names can be looked up here (report.md says where the video's 0.0 s is otherwise).
The videos are read as a stream, one frame per camera held at a time, so memory does not grow with their length.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from daemon.outputs import outlined_text
from daemon.types import ImageBGR

log = logging.getLogger(__name__)

BANNER_PX = 28
MAX_WIDTH = 1920  # a mosaic of many cameras gets smaller tiles rather than a wider video
_DARK = 24


@dataclass(frozen=True)
class Tile:
    """One camera's place in the mosaic: its annotated video and where its frames sit on the fleet clock."""

    name: str
    video: Path
    offset_s: float = 0.0


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


def placements(offsets: dict[str, float], first_frames: dict[str, float] | None) -> dict[str, float]:
    """Where each camera's video starts on the mosaic's clock. Its ``source.clock_offset_s`` (``offsets``), moved
    by how much later than the others its first frame was seen, where every camera's identity table records
    that (``first_frames``, fleet times: live cameras started at different moments); the offsets alone where one
    does not. On a replay a camera's first frame is at the fleet's epoch plus its offset, so the move is 0 and
    the placement its offset, exactly: the move is taken to the millisecond, as the tables record times."""
    if first_frames is None or set(first_frames) != set(offsets):
        return dict(offsets)
    late = {n: first_frames[n] - offsets[n] for n in offsets}
    least = min(late.values())
    return {n: offsets[n] + round(late[n] - least, 3) for n in offsets}


def frame_at(t: float, offset_s: float, fps: float, count: int) -> int | None:
    """Index of the frame a camera shows at fleet time ``t`` (its latest frame not after ``t``); None before
    its first frame or after its last one has had its time."""
    i = math.floor((t - offset_s) * fps + 1e-6)
    return i if 0 <= i < count else None


class _Reader:
    """Frames of one video read forward on demand (indices never go back)."""

    def __init__(self, tile: Tile) -> None:
        self.tile = tile
        self._cap = cv2.VideoCapture(str(tile.video))
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not self._cap.isOpened() or not 0 < fps <= 1000 or count <= 0:
            self._cap.release()
            raise OSError(f"{tile.video}: not a readable video")
        self.fps, self.count = float(fps), count
        self.size = (
            int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        self._index = -1
        self._image: ImageBGR | None = None

    @property
    def end_s(self) -> float:
        return self.tile.offset_s + self.count / self.fps

    def at(self, index: int) -> ImageBGR | None:
        while self._index < index:
            ok, image = self._cap.read()
            if not ok:  # shorter than its header said: keep the last frame
                self.count = self._index + 1
                break
            self._index += 1
            self._image = np.asarray(image, dtype=np.uint8)
        return self._image

    def close(self) -> None:
        self._cap.release()


def write_mosaic(
    tiles: list[Tile],
    out: Path,
    tile_height: int = 480,
    progress: Callable[[int, int], None] | None = None,
    start_s: float | None = None,
) -> Path | None:
    """Write the mosaic of ``tiles`` to ``out`` (mp4v); None when no tile's video can be read (each unreadable
    one is left out with a warning). ``progress(done, total)`` is called after each mosaic frame. ``start_s``:
    the fleet's first frame on the tiles' clock, where the mosaic and its banner's count begin (default: the
    earliest tile's; earlier when a camera of the fleet left no video)."""
    readers = _open(tiles)
    if not readers:
        return None
    try:
        cols, rows = grid(len(readers))
        cell_w, tile_height = cell_size([r.size for r in readers], cols, tile_height)
        fps = max(r.fps for r in readers)
        start = min(r.tile.offset_s for r in readers)
        start = start if start_s is None else min(start, start_s)
        total = math.ceil((max(r.end_s for r in readers) - start) * fps)
        size = (cols * cell_w, BANNER_PX + rows * tile_height)
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise OSError(f"cannot write video {out}")
        try:
            for k in range(total):
                t = start + k / fps
                writer.write(_compose(readers, t, t - start, (cols, cell_w, tile_height), size))
                if progress is not None:
                    progress(k + 1, total)
        finally:
            writer.release()
    finally:
        for r in readers:
            r.close()
    return out


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
    i = frame_at(t, r.tile.offset_s, r.fps, r.count)
    image = r.at(i) if i is not None else None
    if image is None:
        state = "not started" if t < r.tile.offset_s else "ended"
        outlined_text(cell, f"{r.tile.name}: {state}", (8, cell_h // 2), 0.6)
        return cell
    w = min(cell_w, round(image.shape[1] * cell_h / image.shape[0]))
    cell[:, :w] = cv2.resize(image, (w, cell_h), interpolation=cv2.INTER_AREA)
    outlined_text(cell, r.tile.name, (8, cell_h - 10), 0.7)
    return cell
