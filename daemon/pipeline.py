"""The per-frame core of a camera: detect -> choose boxes to embed -> embed -> track. No file or network I/O.

``Pipeline.stream`` can run detection of the next frames on worker threads while the current frame is embedded
and tracked: onnxruntime releases the GIL, so the detector uses the cores that the single-threaded Python of
the tracker leaves idle. With several detection workers, consecutive frames are detected at the same time
(each call single-threaded is cheaper in total than one call spread over the cores) and handed on in order.
Results are identical either way (detection is a pure function of the frame).
With ``tracker.detect_every`` N > 1 only every Nth delivered frame is detected and embedded; on the others the
tracker steps its Kalman filters and reports the confirmed tracks at their predicted boxes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from daemon.track import BotSortTracker, TrackerUpdate
from daemon.types import Detections, Detector, Embedder, FloatArray, Frame, FrameEmbedder, StageTimes


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Everything one frame produced. ``embeddings`` rows align with ``detections`` (zero rows: not embedded)."""

    frame: Frame
    detections: Detections
    embeddings: FloatArray | None
    update: TrackerUpdate


class Pipeline:
    """Detector + embedder + tracker for one camera, timing each stage."""

    def __init__(
        self, detector: Detector, embedder: Embedder | None, tracker: BotSortTracker, detect_workers: int = 1
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.tracker = tracker
        self.detect_workers = detect_workers
        self.times = StageTimes()
        self._times_lock = threading.Lock()
        self.detect_every = tracker.cfg.detect_every
        self._delivered = 0  # frames handed to detection so far (decides which ones are detected)

    def step(self, frame: Frame) -> FrameResult:
        """Process one frame synchronously."""
        return self._after_detection(frame, self._detect_due(frame))

    def stream(self, frames: Iterable[Frame], overlap: bool = True) -> Iterator[FrameResult]:
        """Process frames in order; with ``overlap`` the detector runs ahead on its own thread."""
        if not overlap:
            for frame in frames:
                yield self.step(frame)
            return
        ahead = _DetectAhead(self, frames, self.detect_workers)
        try:
            for frame, dets in ahead:
                yield self._after_detection(frame, dets)
        finally:
            ahead.close()

    def _detect(self, frame: Frame) -> Detections:
        t0 = time.perf_counter()
        dets = self.detector.detect(frame)
        with self._times_lock:  # several detection workers may finish at once
            self.times.detect += time.perf_counter() - t0
            self.times.detected_boxes += len(dets)
        return dets

    def _due(self) -> bool:
        """Whether the next delivered frame is a detection frame (every ``detect_every``-th, the first included)."""
        n = self._delivered
        self._delivered += 1
        return n % self.detect_every == 0

    def _detect_due(self, frame: Frame) -> Detections | None:
        """Detections of the frame when it is due for detection; None on the others."""
        return self._detect(frame) if self._due() else None

    def _after_detection(self, frame: Frame, dets: Detections | None) -> FrameResult:
        if dets is None:  # not a detection frame: tracks move by their Kalman prediction alone
            t0 = time.perf_counter()
            update = self.tracker.predict()
            self.times.track += time.perf_counter() - t0
            return FrameResult(frame, Detections.empty(), None, update)
        t1 = time.perf_counter()
        embs = self._embed(frame, dets)
        t2 = time.perf_counter()
        update = self.tracker.update(dets, embs, frame.image)
        t3 = time.perf_counter()
        self.times.embed += t2 - t1
        self.times.track += t3 - t2
        return FrameResult(frame, dets, embs, update)

    def _embed(self, frame: Frame, dets: Detections) -> FloatArray | None:
        if self.embedder is None:
            return None
        embs = np.zeros((len(dets), self.embedder.dim), np.float32)
        need = self.tracker.plan_embeddings(dets)
        if need.any():
            if isinstance(self.embedder, FrameEmbedder):
                embs[need] = self.embedder.embed_at(frame.clip_index, frame.image, dets.xyxy[need])
            else:
                embs[need] = self.embedder.embed(frame.image, dets.xyxy[need])
            self.times.embedded_boxes += int(need.sum())
        return embs


_Pending = Future[Detections] | None  # None: not a detection frame
_Item = tuple[Frame, _Pending] | BaseException | None  # None: the frames are over


class _DetectAhead:
    """Detects ``frames`` on ``workers`` threads ahead of the consumer, handing (frame, detections) over in order.

    A reader thread pulls frames, submits the due ones to a thread pool and queues the futures; the queue bound
    keeps at most ``workers + 1`` frames in flight. An exception (a source or model failure) is re-raised in the
    consumer; ``close`` stops the reader even when it is blocked on a full queue.
    """

    def __init__(self, pipeline: Pipeline, frames: Iterable[Frame], workers: int = 1) -> None:
        self._pipeline = pipeline
        self._frames = frames
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detect")
        self._q: queue.Queue[_Item] = queue.Queue(maxsize=workers + 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="detect-ahead", daemon=True)
        self._thread.start()

    def _put(self, item: _Item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _submit(self, frame: Frame) -> _Pending:
        if not self._pipeline._due():
            return None
        return self._pool.submit(self._pipeline._detect, frame)

    def _run(self) -> None:
        try:
            for frame in self._frames:
                if not self._put((frame, self._submit(frame))):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(e)
            return
        self._put(None)

    def __iter__(self) -> Iterator[tuple[Frame, Detections | None]]:
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            frame, pending = item
            yield frame, None if pending is None else pending.result()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._pool.shutdown(wait=True, cancel_futures=True)
