"""The per-frame core of a camera: detect -> choose boxes to embed -> embed -> track. No I/O here."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from daemon.track import BotSortTracker, TrackerUpdate
from daemon.types import Detections, Detector, Embedder, FloatArray, Frame, StageTimes


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Everything one frame produced. ``embeddings`` rows align with ``detections`` (zero rows: not embedded)."""

    frame: Frame
    detections: Detections
    embeddings: FloatArray | None
    update: TrackerUpdate


class Pipeline:
    """Detector + embedder + tracker for one camera, timing each stage."""

    def __init__(self, detector: Detector, embedder: Embedder | None, tracker: BotSortTracker) -> None:
        self.detector = detector
        self.embedder = embedder
        self.tracker = tracker
        self.times = StageTimes()

    def step(self, frame: Frame) -> FrameResult:
        t0 = time.perf_counter()
        dets = self.detector.detect(frame)
        t1 = time.perf_counter()
        embs = self._embed(frame, dets)
        t2 = time.perf_counter()
        update = self.tracker.update(dets, embs, frame.image)
        t3 = time.perf_counter()
        self.times.detect += t1 - t0
        self.times.embed += t2 - t1
        self.times.track += t3 - t2
        self.times.detected_boxes += len(dets)
        return FrameResult(frame, dets, embs, update)

    def _embed(self, frame: Frame, dets: Detections) -> FloatArray | None:
        if self.embedder is None:
            return None
        embs = np.zeros((len(dets), self.embedder.dim), np.float32)
        need = self.tracker.plan_embeddings(dets)
        if need.any():
            embs[need] = self.embedder.embed(frame.image, dets.xyxy[need])
            self.times.embedded_boxes += int(need.sum())
        return embs
