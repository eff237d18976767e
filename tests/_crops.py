"""Real person crops cut from the PETS09-S2L1 ground truth, written as a reference folder for gallery tests.

``write_reference_crops(dest)`` picks the identities seen most often, and for each a few ground-truth boxes
(consider=1, at least ``min_height`` pixels tall, fully inside the frame, overlapping no other box) from
frames spread evenly over the person's visible span, so one person's crops differ in pose and place. They are
written as ``person_07--1.jpg``, ``person_07--2.jpg`` ... (label "person 07", variants 1, 2 ...).
``write_frames(dest, indices)`` writes whole video frames (for search tests). Both skip the calling test with
a reason when the shared data is absent. Import as ``from _crops import write_reference_crops``.

``png_declaring(w, h)`` is a PNG of a few dozen bytes whose header declares w x h pixels (decompression bombs).
``MeanColour`` / ``BatchedMeanColour`` (a toy embedder) and ``FixedDetector`` stand in for the models in
tests of pure logic.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from _data import require_pets09
from numpy.typing import NDArray

from daemon.boxes import box_iou
from daemon.motio import read_ground_truth, xywh_to_xyxy
from daemon.types import Detections, FloatArray, Frame, ImageBGR

FRAME_W, FRAME_H = 768, 576


@dataclass(frozen=True)
class GtCrop:
    """One ground-truth box: person ``track_id`` on 0-based video ``frame``, ``xyxy`` pixels."""

    track_id: int
    frame: int
    xyxy: tuple[float, float, float, float]

    def name(self, variant: int) -> str:
        return f"person_{self.track_id:02d}--{variant}.jpg"


def _isolated(xyxy: NDArray[np.float32], frames: NDArray[np.int64], max_overlap: float) -> NDArray[np.bool_]:
    keep = np.ones(len(xyxy), dtype=bool)
    for f in np.unique(frames):
        rows = np.flatnonzero(frames == f)
        if len(rows) < 2:
            continue
        iou = box_iou(xyxy[rows], xyxy[rows])
        np.fill_diagonal(iou, 0.0)
        keep[rows] = iou.max(axis=1) <= max_overlap
    return keep


def select_crops(
    gt_path: Path,
    identities: int = 8,
    per_identity: int = 3,
    min_height: float = 60.0,
    max_overlap: float = 0.0,
) -> list[GtCrop]:
    """Clean ground-truth boxes: ``per_identity`` frames spread over each of the ``identities`` best-seen people."""
    gt = read_ground_truth(gt_path)
    xyxy = xywh_to_xyxy(gt.xywh)
    inside = (xyxy[:, 0] >= 0) & (xyxy[:, 1] >= 0) & (xyxy[:, 2] <= FRAME_W) & (xyxy[:, 3] <= FRAME_H)
    good = gt.consider & inside & (gt.xywh[:, 3] >= min_height) & _isolated(xyxy, gt.frame, max_overlap)
    ids, counts = np.unique(gt.track_id[good], return_counts=True)
    chosen = sorted(int(i) for i in ids[np.argsort(-counts, kind="stable")][:identities])
    crops: list[GtCrop] = []
    for pid in chosen:
        rows = np.flatnonzero(good & (gt.track_id == pid))
        rows = rows[np.argsort(gt.frame[rows], kind="stable")]
        if len(rows) < per_identity:
            continue
        for r in rows[np.linspace(0, len(rows) - 1, per_identity).round().astype(int)]:
            x0, y0, x1, y1 = (float(v) for v in xyxy[r])
            crops.append(GtCrop(pid, int(gt.frame[r]) - 1, (x0, y0, x1, y1)))
    return crops


def read_video_frames(video: Path, indices: set[int]) -> dict[int, NDArray[np.uint8]]:
    """The requested 0-based frames of ``video``, read in one sequential pass."""
    cap = cv2.VideoCapture(str(video))
    out: dict[int, NDArray[np.uint8]] = {}
    index = 0
    last = max(indices, default=-1)
    while index <= last:
        ok, image = cap.read()
        if not ok:
            break
        if index in indices:
            out[index] = np.asarray(image, dtype=np.uint8)
        index += 1
    cap.release()
    missing = indices - set(out)
    if missing:
        raise RuntimeError(f"{video}: could not read frames {sorted(missing)[:5]}")
    return out


def write_reference_crops(
    dest: Path, identities: int = 8, per_identity: int = 3, min_height: float = 60.0
) -> list[Path]:
    """Write ``person_<id>--<k>.jpg`` crops into ``dest``; the written paths, sorted. Skips without the data."""
    pets = require_pets09()
    crops = select_crops(pets / "gt" / "gt.txt", identities, per_identity, min_height)
    frames = read_video_frames(pets / "vtest.avi", {c.frame for c in crops})
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    variant: dict[int, int] = {}
    for c in crops:
        variant[c.track_id] = variant.get(c.track_id, 0) + 1
        x0, y0, x1, y1 = (round(v) for v in c.xyxy)
        path = dest / c.name(variant[c.track_id])
        if not cv2.imwrite(str(path), frames[c.frame][y0:y1, x0:x1]):
            raise RuntimeError(f"cannot write {path}")
        written.append(path)
    return sorted(written)


def write_frames(dest: Path, indices: list[int]) -> list[Path]:
    """Write whole 0-based video frames as ``frame_<index>.jpg`` into ``dest``. Skips without the data."""
    pets = require_pets09()
    frames = read_video_frames(pets / "vtest.avi", set(indices))
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in sorted(frames):
        path = dest / f"frame_{i:04d}.jpg"
        cv2.imwrite(str(path), frames[i])
        paths.append(path)
    return paths


def crop_of(frame_index: int, track_id: int) -> tuple[NDArray[np.uint8], tuple[float, float, float, float]]:
    """The ground-truth crop of one person on one 0-based frame, and its box. Skips without the data."""
    pets = require_pets09()
    gt = read_ground_truth(pets / "gt" / "gt.txt")
    rows = np.flatnonzero((gt.frame == frame_index + 1) & (gt.track_id == track_id))
    if len(rows) != 1:
        raise LookupError(f"person {track_id} is not in the ground truth of frame {frame_index}")
    x0, y0, x1, y1 = (float(v) for v in xywh_to_xyxy(gt.xywh[rows])[0])
    image = read_video_frames(pets / "vtest.avi", {frame_index})[frame_index]
    crop = image[max(0, round(y0)) : round(y1), max(0, round(x0)) : round(x1)].copy()
    return crop, (x0, y0, x1, y1)


# ---------------------------------------------------------------------------------------------- toys


class MeanColour:
    """A toy embedder: the mean B, G, R of each crop plus a constant, L2-normalised (only ``embed``)."""

    dim = 4

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray:
        rows = []
        for x0, y0, x1, y1 in np.asarray(xyxy, dtype=int):
            crop = image[max(0, y0) : max(y0 + 1, y1), max(0, x0) : max(x0 + 1, x1)].reshape(-1, 3)
            rows.append([*crop.mean(axis=0), 10.0])
        f = np.asarray(rows, dtype=np.float32).reshape(-1, 4)
        out: FloatArray = f / np.linalg.norm(f, axis=1, keepdims=True)
        return out


class BatchedMeanColour(MeanColour):
    """The same, with the batched ``embed_crops`` the built-in embedders have; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def embed_crops(self, crops: Sequence[ImageBGR]) -> FloatArray:
        self.calls += 1
        return np.concatenate(
            [self.embed(c, np.asarray([[0, 0, c.shape[1], c.shape[0]]])) for c in crops]
        ).reshape(-1, 4)


class FixedDetector:
    """Returns the same boxes on every frame; counts frames."""

    def __init__(self, xyxy: list[list[float]], scores: list[float]) -> None:
        self.dets = Detections(np.asarray(xyxy, np.float32).reshape(-1, 4), np.asarray(scores, np.float32))
        self.frames: list[int] = []

    def detect(self, frame: Frame) -> Detections:
        self.frames.append(frame.index)
        return self.dets


def png_declaring(width: int, height: int, pixel_data: bool = False) -> bytes:
    """A PNG of a few dozen bytes whose header declares ``width`` x ``height`` (RGB, 8 bit); the pixel data is
    absent, or with ``pixel_data`` a kilobyte of zeros (too few for the size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(bytes(1000))) if pixel_data else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")
