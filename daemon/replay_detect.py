"""Detectors that replay boxes from files, so trackers are compared on identical detections.

* :class:`MotFileDetector` replays a MOTChallenge det.txt: the boxes of MOT frame ``frame.clip_index + 1``
  scoring at least the threshold.
* :class:`GroundTruthDetector` replays the considered rows of a gt.txt (consider=1; pedestrians of a MOT17 one)
  with controlled noise: gaussian jitter of centre and size, random misses and Poisson-many false boxes of
  person-like sizes.
  The noise of a frame is drawn from a generator seeded with ``(seed, frame.clip_index)`` only, so it is the
  same whatever order or subset of frames is asked for.
* :func:`write_detections` records any detector over a source into a det.txt that MotFileDetector replays.

A replay detector ignores the image apart from its size (where false boxes may appear). Frame.clip_index is
the frame's position in the file, so a source with ``stride`` > 1 still lines up with the file's frames, and
each pass of a looped file gets the file's boxes again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from daemon.config import GroundTruthDetectorConfig, MotFileDetectorConfig
from daemon.errors import DataError
from daemon.motio import (
    F64Array,
    MotDetections,
    MotGroundTruth,
    MotWriter,
    StrPath,
    read_detections,
    read_ground_truth,
    rows_by_frame,
    xywh_to_xyxy,
)
from daemon.types import Detections, Detector, Frame

TRUE_SCORE_RANGE: Final = (0.5, 1.0)
"""Scores of replayed true boxes are drawn uniformly from this half-open range."""
FALSE_SCORE_RANGE: Final = (0.1, 0.6)
"""Scores of invented false boxes are drawn uniformly from this half-open range."""
MIN_BOX_PX: Final = 1.0
"""Jittered boxes are kept at least this wide and tall."""
_NOISE_STREAM: Final = 0x6774  # separates this generator's streams from other users of the same seed

log = logging.getLogger(__name__)


def _read_only(a: NDArray[np.float32]) -> NDArray[np.float32]:
    a.flags.writeable = False
    return a


def _frame_table(frame: NDArray[np.int64], xywh: F64Array, score: F64Array) -> dict[int, Detections]:
    """Detections of each MOT frame, converted once and read-only (every replay hands out the same arrays)."""
    return {
        f: Detections(_read_only(xywh_to_xyxy(xywh[rows])), _read_only(score[rows].astype(np.float32)))
        for f, rows in rows_by_frame(frame).items()
    }


def has_size(xywh: F64Array) -> NDArray[np.bool_]:
    """Which boxes have a width and a height as the tracker reads them (float32 corners)."""
    xyxy = xywh_to_xyxy(xywh)
    sized: NDArray[np.bool_] = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return sized


def _sized(frame: NDArray[np.int64], xywh: F64Array, source: str) -> NDArray[np.bool_]:
    """Which boxes have a width and a height as the tracker reads them (float32 corners: BoxMOT refuses x2 <= x1,
    which a width of 0 gives, or a box so far out that its corners are one float32); those that have none are
    counted in one warning naming ``source``."""
    sized = has_size(xywh)
    if not sized.all():
        log.warning(
            "%s: %d box(es) of no width or height (as the tracker reads them, float32) left out, the first on MOT "
            "frame %d",
            source,
            int((~sized).sum()),
            int(frame[~sized][0]),
        )
    return sized


class MotFileDetector:
    """Replays the boxes of a det.txt: MOT frame ``frame.clip_index + 1``, scores >= ``score_threshold``; boxes
    of no width or height are left out (``_sized``)."""

    def __init__(
        self, detections: MotDetections, score_threshold: float = 0.0, source: str = "<detections>"
    ) -> None:
        kept = detections.select(detections.score >= score_threshold)
        kept = kept.select(_sized(kept.frame, kept.xywh, source))
        self._frames = _frame_table(kept.frame, kept.xywh, kept.score)
        self.num_boxes = len(kept)

    @classmethod
    def from_config(cls, cfg: MotFileDetectorConfig) -> MotFileDetector:
        return cls(read_detections(cfg.path), cfg.score_threshold, str(cfg.path))

    def detect(self, frame: Frame) -> Detections:
        found = self._frames.get(frame.clip_index + 1)
        return found if found is not None else Detections.empty()


@dataclass(frozen=True, slots=True)
class NoiseModel:
    """How a GroundTruthDetector spoils the truth (see GroundTruthDetectorConfig for the meaning)."""

    jitter: float = 0.0
    drop_rate: float = 0.0
    false_positive_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.jitter >= 0 and 0 <= self.drop_rate <= 1 and self.false_positive_rate >= 0):
            raise ValueError(f"invalid noise model {self}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @staticmethod
    def from_config(cfg: GroundTruthDetectorConfig) -> NoiseModel:
        return NoiseModel(cfg.jitter, cfg.drop_rate, cfg.false_positive_rate, cfg.seed)


def _jitter(xywh: F64Array, noise: F64Array, jitter: float) -> F64Array:
    """Move centre and size by ``noise * jitter * (w, h)``; with jitter 0 the boxes come back unchanged."""
    size = xywh[:, 2:]
    d_centre = noise[:, :2] * jitter * size
    new_size = np.maximum(size + noise[:, 2:] * jitter * size, MIN_BOX_PX) if jitter > 0 else size
    top_left = xywh[:, :2] + d_centre + (size - new_size) / 2
    return np.concatenate([top_left, new_size], axis=1)


def _frame_extent(frame: Frame, fallback: tuple[float, float]) -> tuple[float, float]:
    """(width, height) where false boxes may appear: the image, or the gt's extent for an empty image."""
    if frame.image.ndim >= 2 and frame.image.shape[0] > 0 and frame.image.shape[1] > 0:
        return float(frame.image.shape[1]), float(frame.image.shape[0])
    return fallback


class GroundTruthDetector:
    """Considered gt boxes of MOT frame ``frame.index + 1``, jittered, thinned and padded with false boxes.

    Per frame, in a fixed order: a drop draw, four jitter normals and a score per true box, then the
    false-box count, sizes (copied from random gt boxes), places (uniform inside the image) and scores.
    All draws are made whatever the settings, so raising ``drop_rate`` drops more boxes without moving
    the jitter of the others. True boxes come first, then false ones.
    """

    def __init__(self, gt: MotGroundTruth, noise: NoiseModel, source: str = "<ground truth>") -> None:
        considered = gt.considered()
        considered = considered.select(_sized(considered.frame, considered.xywh, source))
        self.noise = noise
        self._frames = {f: considered.xywh[rows] for f, rows in rows_by_frame(considered.frame).items()}
        self._sizes = considered.xywh[:, 2:].copy()
        if noise.false_positive_rate > 0 and len(self._sizes) == 0:
            raise DataError(f"{source}: no considered gt boxes to take false-box sizes from")
        far = considered.xywh[:, :2] + considered.xywh[:, 2:]
        self._extent = (float(far[:, 0].max(initial=1.0)), float(far[:, 1].max(initial=1.0)))

    @classmethod
    def from_config(cls, cfg: GroundTruthDetectorConfig) -> GroundTruthDetector:
        return cls(read_ground_truth(cfg.path), NoiseModel.from_config(cfg), str(cfg.path))

    def rng(self, frame_index: int) -> np.random.Generator:
        """The generator of one frame, a function of (seed, frame index) alone."""
        return np.random.default_rng([self.noise.seed, _NOISE_STREAM, frame_index])

    def _true_boxes(self, rng: np.random.Generator, xywh: F64Array) -> tuple[F64Array, F64Array]:
        n = len(xywh)
        kept = rng.random(n) >= self.noise.drop_rate
        normals = rng.standard_normal((n, 4))
        scores = rng.uniform(*TRUE_SCORE_RANGE, size=n)
        return _jitter(xywh, normals, self.noise.jitter)[kept], scores[kept]

    def _false_boxes(
        self, rng: np.random.Generator, extent: tuple[float, float]
    ) -> tuple[F64Array, F64Array]:
        k = int(rng.poisson(self.noise.false_positive_rate))
        if k == 0 or len(self._sizes) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        sizes = self._sizes[rng.integers(0, len(self._sizes), size=k)]
        room = np.maximum(np.asarray(extent) - sizes, 0.0)
        top_left = rng.random((k, 2)) * room
        scores = rng.uniform(*FALSE_SCORE_RANGE, size=k)
        return np.concatenate([top_left, sizes], axis=1), scores

    def detect(self, frame: Frame) -> Detections:
        rng = self.rng(frame.clip_index)
        true_xywh, true_scores = self._true_boxes(
            rng, self._frames.get(frame.clip_index + 1, np.zeros((0, 4)))
        )
        false_xywh, false_scores = self._false_boxes(rng, _frame_extent(frame, self._extent))
        xywh = np.concatenate([true_xywh, false_xywh])
        scores = np.concatenate([true_scores, false_scores]).astype(np.float32)
        return Detections(xywh_to_xyxy(xywh), scores)


def build_replay_detector(cfg: MotFileDetectorConfig | GroundTruthDetectorConfig) -> Detector:
    """The replay detector a config asks for; a missing or malformed file raises DataError naming it."""
    if isinstance(cfg, MotFileDetectorConfig):
        return MotFileDetector.from_config(cfg)
    return GroundTruthDetector.from_config(cfg)


def write_detections(detector: Detector, frames: Iterable[Frame], path: StrPath) -> int:
    """Run ``detector`` over ``frames`` and record every box in a det.txt; return the number of frames."""
    count = 0
    with MotWriter(path) as out:
        for frame in frames:
            out.write_detections(frame.index + 1, detector.detect(frame))
            count += 1
    return count
