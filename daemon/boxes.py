"""Box geometry on (N, 4) float32 xyxy arrays, shared by the detectors and the tracker."""

from __future__ import annotations

import numpy as np

from daemon.types import FloatArray


def box_area(xyxy: FloatArray) -> FloatArray:
    """Areas of (N, 4) boxes (0 for inverted boxes)."""
    wh = np.clip(xyxy[:, 2:4] - xyxy[:, 0:2], 0.0, None)
    area: FloatArray = (wh[:, 0] * wh[:, 1]).astype(np.float32)
    return area


def box_intersection(a: FloatArray, b: FloatArray) -> FloatArray:
    """(N, M) intersection areas between two box sets."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter: FloatArray = (wh[..., 0] * wh[..., 1]).astype(np.float32)
    return inter


def box_iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """(N, M) IoU between two box sets; 0 where the union is empty."""
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)
