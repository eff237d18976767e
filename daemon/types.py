"""Typed records passed between the stages, and the small protocols each stage implements."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
ImageBGR = NDArray[np.uint8]
Position = tuple[float, float]
"""A point on the site plan (site units), or a velocity there (site units per second)."""


def finite_pair(value: object, name: str) -> Position:
    """``value`` (two numbers in a tuple or list) as a :data:`Position`; ValueError naming ``name`` otherwise."""
    pair = tuple(value) if isinstance(value, tuple | list) else ()
    if len(pair) != 2 or not all(
        isinstance(v, int | float | np.floating) and not isinstance(v, bool) and math.isfinite(v)
        for v in pair
    ):
        raise ValueError(f"{name} must be two finite numbers, got {value!r}")
    return float(pair[0]), float(pair[1])


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``index`` is its 0-based position in the source (a stride leaves gaps; a looped file's
    passes number on); ``pass_start`` the index its pass began at (0 but in a looped file); ``monotonic`` a live
    source's reading of a monotonic clock taken with its wall-clock ``timestamp`` (what tells a clock step from
    time passing; None for files and folders, whose timestamps are positions in them); seconds."""

    index: int
    timestamp: float
    image: ImageBGR
    source: str = ""
    pass_start: int = 0
    monotonic: float | None = None

    @property
    def clip_index(self) -> int:
        """The frame's 0-based position in its file (the index within the current pass of a looped file): what
        files about the clip (a det.txt, ground truth) number it by."""
        return self.index - self.pass_start


@dataclass(frozen=True, slots=True)
class Detections:
    """Person boxes of one frame: ``xyxy`` (N, 4) float32 pixels and ``scores`` (N,) float32."""

    xyxy: FloatArray
    scores: FloatArray

    def __post_init__(self) -> None:
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must be (N, 4), got {self.xyxy.shape}")
        if self.scores.shape != (self.xyxy.shape[0],):
            raise ValueError(f"scores must be ({self.xyxy.shape[0]},), got {self.scores.shape}")

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def select(self, keep: NDArray[np.bool_] | NDArray[np.intp]) -> Detections:
        return Detections(self.xyxy[keep], self.scores[keep])


@dataclass(frozen=True, slots=True)
class Track:
    """A confirmed track on one frame. ``track_id`` is camera-scoped; ``key`` is ``"<camera>/<id>"``."""

    camera: str
    track_id: int
    xyxy: tuple[float, float, float, float]
    score: float
    det_index: int
    embedded: bool = False

    @property
    def key(self) -> str:
        return f"{self.camera}/{self.track_id}"


@dataclass(slots=True)
class StageTimes:
    """Accumulated seconds per pipeline stage (decoding is timed by the source, in its stats)."""

    detect: float = 0.0
    embed: float = 0.0
    track: float = 0.0
    output: float = 0.0
    fleet: float = 0.0  # identity resolution and publishing (fleet mode)
    embedded_boxes: int = 0
    detected_boxes: int = 0


@runtime_checkable
class Detector(Protocol):
    """Finds people in a frame."""

    def detect(self, frame: Frame) -> Detections: ...


@runtime_checkable
class Embedder(Protocol):
    """Appearance encoder: boxes of a frame -> (N, D) L2-normalised float32."""

    @property
    def dim(self) -> int: ...

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray: ...


@runtime_checkable
class FrameEmbedder(Protocol):
    """An embedder that must know which frame of the source the boxes are on (daemon/oracle_embed.py)."""

    def embed_at(self, index: int, image: ImageBGR, xyxy: FloatArray) -> FloatArray: ...
