import threading

import numpy as np
import pytest

from daemon.config import EmbedderConfig, TrackerConfig
from daemon.pipeline import FrameResult, Pipeline
from daemon.track import BotSortTracker
from daemon.types import Detections, Frame

IMG = np.zeros((240, 320, 3), np.uint8)


class WalkingPeople:
    """A fake detector: two people walking right; optionally fails at a given frame."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at

    def detect(self, frame: Frame) -> Detections:
        if frame.index == self.fail_at:
            raise RuntimeError(f"detector broke on frame {frame.index}")
        x = 10.0 + 3 * frame.index
        return Detections(
            np.array([[x, 20, x + 30, 90], [x, 120, x + 30, 190]], np.float32), np.full(2, 0.9, np.float32)
        )


class ColourEmbedder:
    dim = 4

    def embed(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        v = np.stack([np.array([1.0, y1 / 200, 0.5, 0.1], np.float32) for _, y1, _, _ in xyxy])
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _pipeline(
    fail_at: int | None = None, workers: int = 1, detector: WalkingPeople | None = None
) -> Pipeline:
    tracker = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(), use_embeddings=True)
    return Pipeline(detector or WalkingPeople(fail_at), ColourEmbedder(), tracker, detect_workers=workers)


def _frames(n: int) -> list[Frame]:
    return [Frame(i, i / 10, IMG) for i in range(n)]


def _ids(results: list) -> list[list[tuple[int, int]]]:
    return [[(t.track_id, t.det_index) for t in r.update.tracks] for r in results]


def test_detect_ahead_gives_the_same_results_as_in_order() -> None:
    a = list(_pipeline().stream(_frames(30), overlap=False))
    b = list(_pipeline().stream(_frames(30), overlap=True))
    assert _ids(a) == _ids(b)
    assert [r.frame.index for r in b] == list(range(30))
    assert all(len(r.update.tracks) == 2 for r in b)


class SlowPeople(WalkingPeople):
    """WalkingPeople whose later frames finish first, recording how many detections ran at once."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(fail_at)
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def detect(self, frame: Frame) -> Detections:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            threading.Event().wait(0.004 * (frame.index % 3 == 0))  # every third frame is slow
            return super().detect(frame)
        finally:
            with self._lock:
                self.running -= 1


def test_several_detect_workers_run_at_once_and_hand_results_on_in_order() -> None:
    a = list(_pipeline().stream(_frames(40), overlap=False))
    det = SlowPeople()
    p = _pipeline(workers=3, detector=det)
    b = list(p.stream(_frames(40), overlap=True))
    assert [r.frame.index for r in b] == list(range(40))
    assert _ids(a) == _ids(b)
    assert [r.detections.xyxy.tolist() for r in a] == [r.detections.xyxy.tolist() for r in b]
    assert det.most_at_once >= 2
    assert p.times.detected_boxes == 80


def test_several_detect_workers_pass_a_failure_on_after_the_frames_before_it() -> None:
    p = _pipeline(workers=3, detector=SlowPeople(fail_at=7))
    seen = []
    with pytest.raises(RuntimeError, match="frame 7"):
        for r in p.stream(_frames(30), overlap=True):
            seen.append(r.frame.index)
    assert seen == list(range(7))


def test_stage_times_and_counts() -> None:
    p = _pipeline()
    list(p.stream(_frames(10)))
    assert p.times.detected_boxes == 20
    assert 2 <= p.times.embedded_boxes < 20  # 'needed' policy: new tracks and refreshes only
    assert p.times.detect > 0 and p.times.track > 0


def test_detector_failure_reaches_the_consumer() -> None:
    p = _pipeline(fail_at=5)
    seen = []
    with pytest.raises(RuntimeError, match="frame 5"):
        for r in p.stream(_frames(20), overlap=True):
            seen.append(r.frame.index)
    assert seen == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("workers", [1, 3])
def test_stopping_early_ends_the_detect_thread(workers: int) -> None:
    p = _pipeline(workers=workers)
    before = threading.active_count()
    gen = p.stream(_frames(1000), overlap=True)
    for r in gen:
        if r.frame.index == 3:
            break
    gen.close()
    assert threading.active_count() == before


class CountingPeople(WalkingPeople):
    """WalkingPeople that records which frames it was asked to detect."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def detect(self, frame: Frame) -> Detections:
        self.calls.append(frame.index)
        return super().detect(frame)


def _every(n: int, overlap: bool = True, frames: int = 30) -> tuple[list, CountingPeople]:
    det = CountingPeople()
    cfg = TrackerConfig(detect_every=n)
    tracker = BotSortTracker("cam", cfg, EmbedderConfig(), use_embeddings=True)
    return list(Pipeline(det, ColourEmbedder(), tracker).stream(_frames(frames), overlap=overlap)), det


def _x1(result: FrameResult, track_id: int) -> float:
    return next(t.xyxy[0] for t in result.update.tracks if t.track_id == track_id)


def _boxes(results: list) -> list[list[tuple]]:
    return [[(t.track_id, t.xyxy, t.det_index, t.embedded) for t in r.update.tracks] for r in results]


def test_detect_every_1_is_todays_behaviour() -> None:
    before = list(_pipeline().stream(_frames(30), overlap=True))
    after, det = _every(1)
    assert det.calls == list(range(30))
    assert _boxes(after) == _boxes(before)


def test_detect_every_2_detects_every_other_frame_and_tracks_every_frame() -> None:
    for overlap in (False, True):
        results, det = _every(2, overlap=overlap)
        assert det.calls == list(range(0, 30, 2))
        assert [r.frame.index for r in results] == list(range(30))
        assert all(sorted(t.track_id for t in r.update.tracks) == [1, 2] for r in results[2:])
        for r in results[1::2]:  # predicted frames: no detection, no embedding
            assert len(r.detections) == 0 and r.embeddings is None
            assert all(t.det_index == -1 and not t.embedded for t in r.update.tracks)
        for i in range(3, 29, 2):  # a predicted box lies between the detected ones either side
            for tid in (1, 2):
                x = {k: _x1(results[k], tid) for k in (i - 1, i, i + 1)}
                assert x[i - 1] < x[i] < x[i + 1]
                assert abs(x[i] - (x[i - 1] + x[i + 1]) / 2) < 2.0
        assert _boxes(results) == _boxes(_every(2, overlap=not overlap)[0])


class FrameLooks(ColourEmbedder):
    """An embedder that must know the frame (as the ground-truth one): the look encodes the frame index."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        raise AssertionError("a frame embedder is given the frame index")

    def embed_at(self, index: int, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        self.calls.append(index)
        v = np.tile(np.array([1.0, index, 0.0, 0.0], np.float32), (len(xyxy), 1))
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_an_embedder_that_needs_the_frame_index_is_given_it() -> None:
    looks = FrameLooks()
    tracker = BotSortTracker("cam", TrackerConfig(), EmbedderConfig(), use_embeddings=True)
    results = list(Pipeline(WalkingPeople(), looks, tracker).stream(_frames(5), overlap=False))
    assert looks.calls and set(looks.calls) <= set(range(5)) and looks.calls[0] == 0
    first = results[0].embeddings
    assert first is not None and np.allclose(first[:, 0], 1.0)  # frame 0's look
