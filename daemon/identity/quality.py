"""How much an observation of a person is worth: a product of four documented terms, each in [0, 1].

``quality = size × confidence × (1 − occlusion) × truncation``

* **size** = ``min(1, box height / full_height_px)``: small people give blurry, unreliable crops.
* **confidence** = the detector score, clipped to [0, 1].
* **occlusion** = the fraction of the box covered by boxes *in front of it*: on a camera looking down at a
  floor, a box whose bottom edge is at least as low in the image is nearer the camera, so it hides this one;
  the intersections are summed and clipped to 1 (overlaps between occluders count twice: pessimistic).
  The nearer person's own crop is not penalised: the box behind covers only background of it.
* **truncation** = the fraction of the box inside the frame, times ``border_penalty`` when an edge lies
  within ``border_margin_px`` of the frame border (the person is probably cut by it).

Pure functions on arrays; no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from daemon.boxes import box_area, box_intersection
from daemon.config import IdentityConfig
from daemon.types import FloatArray


@dataclass(frozen=True, slots=True)
class QualityParams:
    """The quality function's settings (see IdentityConfig for meaning and bounds)."""

    full_height_px: float
    border_margin_px: float
    border_penalty: float

    @classmethod
    def from_config(cls, cfg: IdentityConfig) -> QualityParams:
        return cls(cfg.quality_full_height_px, cfg.border_margin_px, cfg.border_penalty)


def _shared(xyxy: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(N, N) intersection of each box with every other one (0 with itself), and (N,) box areas (never 0)."""
    inter = box_intersection(xyxy, xyxy)
    np.fill_diagonal(inter, 0.0)
    return inter, np.maximum(box_area(xyxy), 1e-6)


def occlusion_fractions(xyxy: FloatArray) -> FloatArray:
    """(N,) fraction of each box covered by the boxes in front of it (bottom edge at least as low)."""
    if len(xyxy) < 2:
        return np.zeros(len(xyxy), dtype=np.float32)
    inter, area = _shared(xyxy)
    in_front = xyxy[None, :, 3] >= xyxy[:, None, 3]  # [i, j]: box j is in front of box i
    out: FloatArray = np.clip((inter * in_front).sum(axis=1) / area, 0.0, 1.0).astype(np.float32)
    return out


def overlap_fractions(xyxy: FloatArray) -> FloatArray:
    """(N,) the largest fraction of each box's area that it shares with any one other box, in front or behind."""
    if len(xyxy) < 2:
        return np.zeros(len(xyxy), dtype=np.float32)
    inter, area = _shared(xyxy)
    out: FloatArray = np.clip(inter.max(axis=1) / area, 0.0, 1.0).astype(np.float32)
    return out


def at_border(xyxy: FloatArray, frame_size: tuple[int, int], margin: float | FloatArray) -> NDArray[np.bool_]:
    """(N,) whether each box comes within ``margin`` pixels (one value, or one per box) of the ``(width,
    height)`` frame's edge."""
    w, h = float(frame_size[0]), float(frame_size[1])
    x0, y0, x1, y1 = xyxy[:, 0], xyxy[:, 1], xyxy[:, 2], xyxy[:, 3]
    out: NDArray[np.bool_] = (x0 <= margin) | (y0 <= margin) | (x1 >= w - margin) | (y1 >= h - margin)
    return out


def truncation_factors(xyxy: FloatArray, frame_size: tuple[int, int], params: QualityParams) -> FloatArray:
    """(N,) fraction of each box inside the ``(width, height)`` frame, times the border penalty when cut."""
    w, h = float(frame_size[0]), float(frame_size[1])
    inside = np.stack(
        [
            np.clip(xyxy[:, 0], 0, w),
            np.clip(xyxy[:, 1], 0, h),
            np.clip(xyxy[:, 2], 0, w),
            np.clip(xyxy[:, 3], 0, h),
        ],
        axis=1,
    ).astype(np.float32)
    frac = box_area(inside) / np.maximum(box_area(xyxy), 1e-6)
    cut = at_border(xyxy, frame_size, params.border_margin_px)
    out: FloatArray = (np.clip(frac, 0.0, 1.0) * np.where(cut, params.border_penalty, 1.0)).astype(np.float32)
    return out


def box_qualities(
    xyxy: FloatArray, scores: FloatArray, frame_size: tuple[int, int], params: QualityParams
) -> FloatArray:
    """(N,) quality in [0, 1] of each box of one frame (see the module docstring for the terms)."""
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    if len(xyxy) == 0:
        return np.zeros(0, dtype=np.float32)
    size = np.clip((xyxy[:, 3] - xyxy[:, 1]) / params.full_height_px, 0.0, 1.0)
    conf = np.clip(np.asarray(scores, dtype=np.float32), 0.0, 1.0)
    q = size * conf * (1.0 - occlusion_fractions(xyxy)) * truncation_factors(xyxy, frame_size, params)
    out: FloatArray = np.nan_to_num(q, nan=0.0).astype(np.float32)
    return out
