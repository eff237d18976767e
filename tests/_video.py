"""Synthetic test videos with known ground truth.

Solid, widely spaced colours on a mid-grey textured background: every value survives mp4v compression, so a
test can check detection and tracking against the boxes this module returns. People walk in separate
horizontal lanes and bounce off the frame edges, so boxes never overlap (identity switches are the tracker's
fault, not the clip's).
"""

from __future__ import annotations

import itertools
import re
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

# BGR, saturated and far apart from each other and from the grey background (~96-160).
PERSON_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 255),  # red
    (0, 255, 0),  # green
    (255, 0, 0),  # blue
    (0, 255, 255),  # yellow
    (255, 0, 255),  # magenta
    (255, 255, 0),  # cyan
    (255, 255, 255),  # white
    (0, 0, 0),  # black
)


@dataclass(frozen=True, slots=True)
class GtBox:
    """One person on one frame; ``frame`` is 0-based, the box is top-left x, y and size in pixels."""

    frame: int
    id: int
    x: int
    y: int
    w: int
    h: int

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.w, self.y + self.h


@dataclass(frozen=True, slots=True)
class SyntheticClip:
    """What a factory wrote: the file (or folder), its rate and size, and the boxes of every frame."""

    path: Path
    fps: float
    size: tuple[int, int]
    truth: tuple[tuple[GtBox, ...], ...]
    seed: int = 0

    @property
    def frames(self) -> int:
        return len(self.truth)

    def colour(self, person_id: int) -> tuple[int, int, int]:
        """BGR colour of a person (ids are 1-based)."""
        return PERSON_COLOURS[(person_id - 1) % len(PERSON_COLOURS)]

    def render(self, frame: int) -> NDArray[np.uint8]:
        """The frame exactly as it was written, before compression."""
        return render(_background(self.size, self.seed), self.truth[frame])

    def write_mot_gt(self, path: Path) -> Path:
        """Write the truth as MOTChallenge gt.txt (1-based frames; consider=1, class=1, visibility=1)."""
        rows = [
            f"{b.frame + 1},{b.id},{b.x},{b.y},{b.w},{b.h},1,1,1.0" for boxes in self.truth for b in boxes
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return path


def _background(size: tuple[int, int], seed: int) -> NDArray[np.uint8]:
    """A static texture: a soft checkerboard plus mild fixed noise, all inside grey values 96-160."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    checker = (((xx // 16) + (yy // 16)) % 2).astype(np.int16) * 24
    noise = np.random.default_rng(seed).integers(-8, 9, size=(h, w), dtype=np.int16)
    grey = np.clip(112 + checker + noise, 96, 160).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _tracks(frames: int, size: tuple[int, int], people: int, seed: int) -> tuple[tuple[GtBox, ...], ...]:
    """Lane-bound, edge-bouncing trajectories: deterministic from the seed."""
    w, h = size
    rng = np.random.default_rng(seed)
    lane = h / max(people, 1)
    box_h = max(12, int(min(0.35 * h, 0.85 * lane)))
    box_w = max(6, int(0.4 * box_h))
    span = max(1, w - box_w)
    starts = rng.integers(0, span, size=people)
    speeds = rng.choice(np.array([-1, 1]), size=people) * rng.integers(2, 6, size=people)
    out: list[tuple[GtBox, ...]] = []
    for f in range(frames):
        boxes = []
        for p in range(people):
            travelled = int(starts[p] + speeds[p] * f) % (2 * span)
            x = travelled if travelled < span else 2 * span - travelled  # bounce
            y = int(p * lane + (lane - box_h) / 2)
            boxes.append(GtBox(f, p + 1, x, max(0, y), box_w, box_h))
        out.append(tuple(boxes))
    return tuple(out)


def render(background: NDArray[np.uint8], boxes: Sequence[GtBox]) -> NDArray[np.uint8]:
    """Draw the boxes of one frame on a copy of the background."""
    img = background.copy()
    for b in boxes:
        colour = PERSON_COLOURS[(b.id - 1) % len(PERSON_COLOURS)]
        img[b.y : b.y + b.h, b.x : b.x + b.w] = colour
    return img


def make_video(
    path: Path | str,
    frames: int = 30,
    size: tuple[int, int] = (320, 240),
    fps: float = 10.0,
    people: int = 3,
    seed: int = 0,
) -> SyntheticClip:
    """Write an mp4v video of ``people`` moving rectangles and return its ground truth."""
    if not 1 <= people <= len(PERSON_COLOURS) or frames < 1:
        raise ValueError(f"need 1..{len(PERSON_COLOURS)} people and at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    truth = _tracks(frames, size, people, seed)
    background = _background(size, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path}")
    try:
        for boxes in truth:
            writer.write(render(background, boxes))
    finally:
        writer.release()
    return SyntheticClip(path, fps, size, truth, seed)


def make_image_folder(
    path: Path | str,
    frames: int = 12,
    size: tuple[int, int] = (160, 120),
    people: int = 2,
    ext: str = "png",
    seed: int = 0,
    fps: float = 10.0,
) -> SyntheticClip:
    """Write frames as ``frame_1.<ext>``, ``frame_2.<ext>``, ... (not zero-padded: checks natural sorting).

    ``fps`` is only recorded in the returned clip; a folder source takes its rate from the config.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    truth = _tracks(frames, size, people, seed)
    background = _background(size, seed)
    for i, boxes in enumerate(truth):
        if not cv2.imwrite(str(path / f"frame_{i + 1}.{ext}"), render(background, boxes)):
            raise RuntimeError(f"cv2.imwrite cannot write {ext} files")
    return SyntheticClip(path, fps, size, truth, seed)


def shows_people(image: NDArray[np.uint8], clip: SyntheticClip, frame: int, tolerance: int = 60) -> bool:
    """True when every person of ``frame`` shows its colour at the centre of its box in ``image``."""
    for b in clip.truth[frame]:
        got = image[b.y + b.h // 2, b.x + b.w // 2].astype(np.int16)
        if np.abs(got - np.array(clip.colour(b.id), np.int16)).max() > tolerance:
            return False
    return True


@lru_cache(maxsize=8)
def _small_frames(clip: SyntheticClip) -> NDArray[np.int16]:
    """Every frame of the clip as written, at half size: the reference stack of ``match_frame``."""
    background = _background(clip.size, clip.seed)
    half = (clip.size[0] // 2, clip.size[1] // 2)
    return np.stack(
        [cv2.resize(render(background, boxes), half, interpolation=cv2.INTER_AREA) for boxes in clip.truth]
    ).astype(np.int16)


def match_frame(image: NDArray[np.uint8], clip: SyntheticClip) -> int:
    """Index of the clip frame that a decoded ``image`` looks most like: checks frame order after decoding."""
    reference = _small_frames(clip)
    small = cv2.resize(image, (reference.shape[2], reference.shape[1]), interpolation=cv2.INTER_AREA)
    errors = np.abs(reference - small.astype(np.int16)).mean(axis=(1, 2, 3))
    return int(np.argmin(errors))


_MP4_PARENTS = (b"moov", b"trak", b"mdia", b"minf", b"stbl")  # the boxes around a video track's time table


def _mp4_box(data: bytearray, kind: bytes, start: int, end: int) -> tuple[int, int]:
    """(offset, size) of the first ``kind`` box among the boxes from ``start`` to ``end``."""
    pos = start
    while pos < end:
        size, found = struct.unpack(">I4s", data[pos : pos + 8])
        if found == kind:
            return pos, size
        pos += size
    raise ValueError(f"no {kind!r} box: not the layout OpenCV's mp4v writer gives")


def retime_mp4(path: Path, times_s: Sequence[float]) -> Path:
    """Give the frames of an mp4v video written by OpenCV (one track, its index at the end) the presentation times
    ``times_s`` (seconds from the first, increasing): a variable-frame-rate file, as phones and NVRs that skip still
    or lost frames record. Its time table (``stts``) is replaced and the durations of its headers follow; the frames
    stay as they are. FFmpeg then gives the average rate as the file's rate."""
    data = bytearray(path.read_bytes())
    chain, start, end = [], 0, len(data)
    for kind in _MP4_PARENTS:
        pos, size = _mp4_box(data, kind, start, end)
        chain.append(pos)
        start, end = pos + 8, pos + size
    moov, trak, mdia = chain[:3]
    mdhd, _ = _mp4_box(data, b"mdhd", mdia + 8, len(data))
    scale = struct.unpack(">I", data[mdhd + 20 : mdhd + 24])[0]
    stts, old = _mp4_box(data, b"stts", start, end)
    count, last = struct.unpack(">II", data[stts + 16 : stts + 24])
    if count != len(times_s) or data[mdhd + 8] != 0:
        raise ValueError(f"{path}: {count} frames, {len(times_s)} times given (or a 64-bit header)")
    ticks = [round(t * scale) for t in times_s]
    runs: list[list[int]] = []
    for delta in [b - a for a, b in itertools.pairwise(ticks)] + [last]:
        if runs and runs[-1][1] == delta:
            runs[-1][0] += 1
        else:
            runs.append([1, delta])
    table = struct.pack(">I4sII", 16 + 8 * len(runs), b"stts", 0, len(runs))
    table += b"".join(struct.pack(">II", *run) for run in runs)
    data[stts : stts + old] = table
    for pos in chain:  # the index is the file's last box: the frames' offsets do not move
        struct.pack_into(">I", data, pos, struct.unpack(">I", data[pos : pos + 4])[0] + len(table) - old)
    struct.pack_into(">I", data, mdhd + 24, ticks[-1] + last)
    mvhd, _ = _mp4_box(data, b"mvhd", moov + 8, len(data))
    movie = round((ticks[-1] + last) * struct.unpack(">I", data[mvhd + 20 : mvhd + 24])[0] / scale)
    struct.pack_into(">I", data, mvhd + 24, movie)
    tkhd, _ = _mp4_box(data, b"tkhd", trak + 8, len(data))
    struct.pack_into(">I", data, tkhd + 28, movie)
    edts, _ = _mp4_box(data, b"edts", trak + 8, len(data))
    struct.pack_into(">I", data, edts + 24, movie)  # its edit list's one segment
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------------------ H.264 / HEVC through FFmpeg

NUMBER_BITS = 8  # a numbered frame shows its number as this many black or white squares along its top


def numbered_frame(number: int, size: tuple[int, int] = (320, 240)) -> NDArray[np.uint8]:
    """A frame that shows ``number`` (0-255) in squares (``frame_number`` reads it back after any codec), a red
    box moving right by 7 px a frame and a band of noise along its bottom moving 3 px a frame (so that frames are
    large, a file cut at a share of its bytes is cut mid-stream, and motion makes B-frames worth coding)."""
    w, h = size
    side = w // NUMBER_BITS
    img = np.full((h, w, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (h // 6, w, 3), dtype=np.uint8)
    img[h - h // 6 :] = np.roll(noise, 3 * number, axis=1)
    x = (number * 7) % (w - side)
    img[h // 2 - side : h // 2 + side, x : x + side] = (0, 0, 255)
    for bit in range(NUMBER_BITS):
        img[:side, bit * side : (bit + 1) * side] = 255 if number >> bit & 1 else 0
    return img


def frame_number(image: NDArray[np.uint8]) -> int:
    """The number a ``numbered_frame`` shows, read from the middle of its squares."""
    side = image.shape[1] // NUMBER_BITS
    q = side // 4
    bits = [image[q : side - q, b * side + q : (b + 1) * side - q].mean() > 128 for b in range(NUMBER_BITS)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def encode_numbered(
    ffmpeg: str, path: Path, args: Sequence[str], frames: int = 20, fps: float = 10.0
) -> Path:
    """Encode ``frames`` numbered frames (0, 1, ...) at ``fps`` with FFmpeg (``ffmpeg``: its executable) and the
    output ``args`` (codec, B-frames, filters, container flags) into ``path``."""
    size = (320, 240)
    cmd = [ffmpeg, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{size[0]}x{size[1]}"]
    cmd += ["-r", f"{fps:g}", "-i", "-", *args, str(path)]
    raw = b"".join(numbered_frame(i, size).tobytes() for i in range(frames))
    subprocess.run(cmd, input=raw, check=True, capture_output=True, timeout=60)
    return path


@dataclass(frozen=True, slots=True)
class Shown:
    """A frame as FFmpeg itself decodes and shows it: its presentation time (the file's own, ``-copyts``) and
    picture type (I, P or B, as coded)."""

    pts_s: float
    kind: str


def shown_frames(ffmpeg: str, path: Path) -> list[Shown]:
    """The frames of a video in display order, as FFmpeg's own decoder gives them (its showinfo filter)."""
    cmd = [ffmpeg, "-hide_banner", "-copyts", "-i", str(path), "-vf", "showinfo", "-f", "null", "-"]
    err = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stderr
    return [
        Shown(float(m.group(1)), m.group(2))
        for m in re.finditer(r"\bpts_time:\s*(-?[\d.]+).*?\btype:([IPB])", err)
    ]
