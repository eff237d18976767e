"""An embedder for evaluation only: looks made from the ground truth, as a ReID model of known quality would give.

Each true person of a MOTChallenge ground truth gets one fixed random direction in ``ORACLE_DIM`` dimensions.
A box gets a noisy look of the person it covers (the ground-truth box of its frame it overlaps most, at IoU
0.5 or more): the person's direction plus Gaussian noise scaled so that two looks of one person have a cosine
of ``similarity`` on average, while two people's looks are near 0 apart. A box that covers nobody gets a look
of nobody. Everything is seeded by (seed, frame), so a run repeats exactly.

What it is for: with ``embedder.type: ground-truth`` the fleet's identity resolution can be measured as if the
cameras ran a ReID-trained embedder of a chosen quality (none can be fetched offline), which tells how much of
the gap to an accuracy aim is the embedder's and how much the trackers' and the resolver's. It needs the frame
index, so it works inside a camera pipeline only (``embed_at``); ``embed`` refuses with a clear error.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from daemon.boxes import box_iou
from daemon.errors import DataError
from daemon.motio import MotGroundTruth, read_ground_truth, rows_by_frame, xywh_to_xyxy
from daemon.types import FloatArray, ImageBGR

ORACLE_DIM = 128
MATCH_IOU = 0.5
_PERSON_STREAM = 1
_LOOK_STREAM = 2


def noise_scale(similarity: float) -> float:
    """The noise that puts two looks of one person ``similarity`` apart on average: a look is the direction plus
    noise of expected norm sigma, so cos(look, direction) ~ 1 / sqrt(1 + sigma^2) and two looks ~ 1 / (1 + sigma^2)."""
    if not 0 < similarity < 1:
        raise ValueError(f"similarity must be between 0 and 1, not {similarity}")
    return math.sqrt(1 / similarity - 1)


class GroundTruthEmbedder:
    """Looks of the true people (see the module docstring)."""

    def __init__(self, gt: MotGroundTruth, similarity: float, seed: int = 0) -> None:
        considered = gt.considered()
        self._boxes = {
            f: (xywh_to_xyxy(considered.xywh[rows]).astype(np.float32), considered.track_id[rows])
            for f, rows in rows_by_frame(considered.frame).items()
        }
        self._sigma = noise_scale(similarity)
        self._seed = seed

    @classmethod
    def from_file(cls, path: str, similarity: float, seed: int = 0) -> GroundTruthEmbedder:
        return cls(read_ground_truth(path), similarity, seed)

    @property
    def dim(self) -> int:
        return ORACLE_DIM

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray:
        raise DataError(
            "the ground-truth embedder needs to know which frame the boxes are on: it works inside a camera "
            "pipeline only (reid-daemon run / fleet)"
        )

    def embed_at(self, index: int, image: ImageBGR, xyxy: FloatArray) -> FloatArray:
        """Looks of the boxes ``xyxy`` of frame ``index`` (0-based; ground-truth frame ``index + 1``)."""
        people = self.people(index + 1, xyxy)
        if not people:
            return np.zeros((0, ORACLE_DIM), np.float32)
        rng = np.random.default_rng([self._seed, _LOOK_STREAM, index])
        noise = rng.standard_normal((len(people), ORACLE_DIM)) / math.sqrt(ORACLE_DIM)
        nobody = rng.standard_normal((len(people), ORACLE_DIM))
        base = np.stack([self._direction(p) if p >= 0 else _unit(nobody[i]) for i, p in enumerate(people)])
        looks = base + self._sigma * noise
        out: FloatArray = (looks / np.linalg.norm(looks, axis=1, keepdims=True)).astype(np.float32)
        return out

    def people(self, mot_frame: int, xyxy: FloatArray) -> list[int]:
        """The true person each box covers (IoU >= MATCH_IOU with their box on that frame), else -1."""
        if len(xyxy) == 0:
            return []
        boxes, ids = self._boxes.get(mot_frame, (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
        if len(boxes) == 0:
            return [-1] * len(xyxy)
        iou = box_iou(np.asarray(xyxy, np.float32), boxes)
        best = iou.argmax(axis=1)
        return [int(ids[j]) if iou[i, j] >= MATCH_IOU else -1 for i, j in enumerate(best)]

    def _direction(self, person: int) -> NDArray[np.float64]:
        return _unit(np.random.default_rng([self._seed, _PERSON_STREAM, person]).standard_normal(ORACLE_DIM))


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(v / np.linalg.norm(v), np.float64)
