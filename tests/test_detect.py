"""Detectors: box geometry, NMS, tiles and merging, YOLO letterbox/decode (synthetic), real SSDLite and YOLO."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon import detect
from daemon.config import (
    MotFileDetectorConfig,
    RuntimeConfig,
    SSDLiteDetectorConfig,
    YoloDetectorConfig,
)
from daemon.detect import (
    SSDLiteDetector,
    YoloOnnxDetector,
    box_iou,
    clip_and_filter,
    cut_by_tile_edge,
    decode_yolo,
    letterbox,
    merge_passes,
    nms,
    pass_windows,
    tile_grid,
    unletterbox,
)
from daemon.errors import ModelError
from daemon.models import preset_status
from daemon.types import Detections, Frame

CPU = RuntimeConfig(providers=("CPUExecutionProvider",))


def _f32(rows: Any) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


# ----------------------------------------------------------------------------------------- geometry / NMS


def test_box_iou_values() -> None:
    a = _f32([[0, 0, 10, 10]])
    b = _f32([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]], rtol=1e-6)
    assert box_iou(a, _f32([])).shape == (1, 0)


def test_nms_keeps_best_of_each_cluster_in_score_order() -> None:
    xyxy = _f32([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10], [100, 0, 110, 10]])
    scores = np.array([0.5, 0.9, 0.7, 0.3, 0.1], np.float32)
    keep = nms(xyxy, scores, 0.5)
    assert keep.tolist() == [1, 2, 4]
    assert nms(_f32([]), np.zeros(0, np.float32), 0.5).tolist() == []


def test_nms_threshold_is_exclusive() -> None:
    xyxy = _f32([[0, 0, 10, 10], [5, 0, 15, 10]])  # IoU 1/3
    scores = np.array([0.9, 0.8], np.float32)
    assert len(nms(xyxy, scores, 1 / 3 + 1e-6)) == 2
    assert len(nms(xyxy, scores, 0.3)) == 1


def test_clip_and_filter_drops_small_low_and_nan_boxes() -> None:
    xyxy = _f32([[-5, -5, 20, 30], [10, 10, 13, 40], [0, 0, 50, 50], [np.nan, 0, 10, 10], [90, 90, 130, 130]])
    scores = np.array([0.9, 0.9, 0.05, 0.9, 0.9], np.float32)
    d = clip_and_filter(xyxy, scores, 100, 100, score_threshold=0.1, min_box_px=6)
    np.testing.assert_allclose(d.xyxy, [[0, 0, 20, 30], [90, 90, 100, 100]])
    assert d.scores.dtype == np.float32


# ----------------------------------------------------------------------------------------- tiles


@pytest.mark.parametrize(("cols", "rows", "overlap"), [(2, 1, 0.2), (3, 2, 0.2), (4, 3, 0.5), (2, 2, 0.0)])
def test_tile_grid_covers_the_frame_with_equal_overlapping_tiles(
    cols: int, rows: int, overlap: float
) -> None:
    w, h = 768, 576
    t = tile_grid(w, h, cols, rows, overlap)
    assert t.shape == (cols * rows, 4)
    sizes = {(int(x1 - x0), int(y1 - y0)) for x0, y0, x1, y1 in t}
    assert len(sizes) == 1
    tw, _ = sizes.pop()
    assert t[:, 0].min() == 0 and t[:, 1].min() == 0 and t[:, 2].max() == w and t[:, 3].max() == h
    xs = sorted({int(x) for x in t[:, 0]})
    if cols > 1:
        ov = (xs[0] + tw - xs[1]) / tw
        assert ov == pytest.approx(overlap, abs=0.02)
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in t:
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_tile_grid_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="bad tile grid"):
        tile_grid(100, 100, 0, 1, 0.2)


def test_pass_windows() -> None:
    full = SSDLiteDetectorConfig(tiles=(1, 1))
    assert pass_windows(768, 576, full).tolist() == [[0, 0, 768, 576]]
    two = pass_windows(768, 576, SSDLiteDetectorConfig(tiles=(2, 1)))
    assert two.shape == (3, 4) and two[0].tolist() == [0, 0, 768, 576]
    assert pass_windows(768, 576, SSDLiteDetectorConfig(tiles=(2, 1), full_frame=False)).shape == (2, 4)


def test_cut_by_interior_tile_edge_only() -> None:
    w, h = 200, 100
    windows = np.array([[0, 0, 120, 100], [0, 0, 120, 100], [80, 0, 200, 100], [0, 0, 200, 100]], np.intp)
    boxes = _f32([[100, 10, 120, 60], [0, 10, 30, 60], [80, 10, 95, 60], [180, 10, 200, 60]])
    # box 0 touches the left tile's right edge (interior); box 1 the frame border; box 2 the right tile's left
    # edge (interior); box 3 is in the full-frame pass, which has no interior edges
    assert cut_by_tile_edge(boxes, windows, w, h).tolist() == [True, False, True, False]


def test_merge_drops_a_cut_box_when_another_pass_saw_the_person_whole() -> None:
    whole = [90, 10, 130, 90]  # full frame, lower score
    cut = [90, 10, 120, 90]  # left tile cut it at x=120, higher score; IoU with whole = 0.75
    other = [10, 10, 40, 90]
    xyxy = _f32([whole, cut, other])
    scores = np.array([0.5, 0.9, 0.8], np.float32)
    pass_ids = np.array([0, 1, 1], np.intp)
    cut_mask = np.array([False, True, False])
    kept = merge_passes(xyxy, scores, pass_ids, cut_mask, iou_threshold=0.8)
    assert sorted(kept.tolist()) == [0, 2]
    plain = merge_passes(xyxy, scores, pass_ids, np.zeros(3, bool), iou_threshold=0.8)
    assert sorted(plain.tolist()) == [0, 1, 2]  # without the cut rule both copies survive NMS at 0.8


def test_merge_keeps_a_cut_box_nobody_else_saw() -> None:
    xyxy = _f32([[90, 10, 120, 90], [10, 10, 40, 90]])
    kept = merge_passes(
        xyxy, np.array([0.9, 0.8], np.float32), np.array([1, 1]), np.array([True, False]), 0.5
    )
    assert sorted(kept.tolist()) == [0, 1]


# ----------------------------------------------------------------------------------------- YOLO decode


def test_letterbox_and_back() -> None:
    img = np.zeros((576, 768, 3), np.uint8)
    canvas, scale, pad = letterbox(img, 640)
    assert canvas.shape == (640, 640, 3)
    assert scale == pytest.approx(640 / 768) and pad == (0.0, 80.0)
    assert canvas[0, 0].tolist() == [114, 114, 114] and canvas[320, 320].tolist() == [0, 0, 0]
    frame_box = _f32([[100, 200, 160, 360]])
    on_canvas = frame_box * scale + np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
    np.testing.assert_allclose(unletterbox(on_canvas, scale, pad), frame_box, atol=1e-3)


def _head(
    nc: int, cands: list[tuple[float, float, float, float, dict[int, float]]], n: int = 50
) -> np.ndarray:
    out = np.zeros((1, 4 + nc, n), np.float32)
    for i, (cx, cy, w, h, cls) in enumerate(cands):
        out[0, :4, i] = (cx, cy, w, h)
        for c, s in cls.items():
            out[0, 4 + c, i] = s
    return out


def test_decode_fall_model_takes_best_person_class() -> None:
    out = _head(2, [(100, 100, 20, 40, {0: 0.2, 1: 0.7}), (300, 300, 10, 10, {0: 0.1, 1: 0.05})])
    xyxy, scores = decode_yolo(out, (0, 1), 0.25)
    np.testing.assert_allclose(xyxy, [[90, 80, 110, 120]])
    np.testing.assert_allclose(scores, [0.7])
    _, only_normal = decode_yolo(out, (0,), 0.15)
    np.testing.assert_allclose(only_normal, [0.2])


def test_decode_coco_ignores_other_classes() -> None:
    out = _head(80, [(50, 50, 10, 20, {0: 0.9}), (200, 200, 30, 30, {2: 0.95, 0: 0.1})], n=100)
    xyxy, scores = decode_yolo(out, (0,), 0.25)
    np.testing.assert_allclose(xyxy, [[45, 40, 55, 60]])
    assert scores.tolist() == pytest.approx([0.9])
    with pytest.raises(ModelError, match="output shape"):
        decode_yolo(out[0, 0], (0,), 0.25)
    with pytest.raises(ModelError, match="classes"):
        decode_yolo(_head(2, []), (0, 5), 0.25)


def _constant_yolo_onnx(path: Path, head: np.ndarray, size: int) -> Path:
    """A graph that ignores its image and always outputs ``head`` (tests the detector around the model)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=1),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Reshape", ["z", "shape"], ["z3"]),
        helper.make_node("Add", ["head", "z3"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(head, "head"),
        numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "zero"),
        numpy_helper.from_array(np.array([1, 1, 1], np.int64), "shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(head.shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_yolo_detector_end_to_end_on_a_synthetic_graph(tmp_path: Path) -> None:
    # two overlapping candidates for one person, one small person, one car; frame 768x576 -> scale 5/6, pad y 80
    head = _head(
        80,
        [
            (320, 320, 60, 120, {0: 0.9}),
            (322, 321, 60, 118, {0: 0.8}),
            (100, 200, 3, 6, {0: 0.9}),
            (500, 400, 80, 40, {2: 0.9}),
        ],
    )
    model = _constant_yolo_onnx(tmp_path / "coco.onnx", head, 640)
    det = YoloOnnxDetector(YoloDetectorConfig(model=str(model), min_box_px=6), CPU, tmp_path)
    d = det.detect(Frame(0, 0.0, np.zeros((576, 768, 3), np.uint8)))
    assert len(d) == 1
    s = 768 / 640
    np.testing.assert_allclose(d.xyxy[0], [290 * s, (260 - 80) * s, 350 * s, (380 - 80) * s], rtol=1e-4)
    assert d.scores[0] == pytest.approx(0.9)
    with pytest.raises(ModelError, match="fixed 640x640 input"):
        YoloOnnxDetector(YoloDetectorConfig(model=str(model), imgsz=320), CPU, tmp_path)
    with pytest.raises(ModelError, match="classes"):
        YoloOnnxDetector(YoloDetectorConfig(model=str(model), person_classes=(90,)), CPU, tmp_path)


def test_a_yolo_detector_on_another_graph_names_the_model(
    tmp_path: Path, ssdlite_model: Path, mobilenet_model: Path
) -> None:
    # Regression: `detector: {type: yolo, model: ssdlite-mobilenetv2-pedestrian}` loaded, then the first frame
    # ended in onnxruntime's INVALID_ARGUMENT traceback (a uint8 NHWC graph fed float NCHW), and the embedder
    # preset as a YOLO model stopped at the first frame with "YOLO output has -3 classes".
    for model in (ssdlite_model, mobilenet_model):
        with pytest.raises(ModelError, match=rf"^{re.escape(str(model))} is not a YOLO detection graph: "):
            YoloOnnxDetector(YoloDetectorConfig(model=str(model)), CPU, tmp_path)


# ----------------------------------------------------------------------------------------- factory / cache


def test_constructors_never_fetch(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="reid-daemon models fetch ssdlite-mobilenetv2-pedestrian"):
        SSDLiteDetector(SSDLiteDetectorConfig(), CPU, tmp_path)
    with pytest.raises(ModelError, match="reid-daemon models fetch yolov8s-person"):
        detect.build_detector(YoloDetectorConfig(), CPU, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_detectors_reject_a_bad_frame(tmp_path: Path) -> None:
    model = _constant_yolo_onnx(tmp_path / "coco.onnx", _head(80, []), 640)
    det = YoloOnnxDetector(YoloDetectorConfig(model=str(model)), CPU, tmp_path)
    for bad in (
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
    ):
        with pytest.raises(ValueError, match="frame 7"):
            det.detect(Frame(7, 0.0, bad))
    assert len(det.detect(Frame(0, 0.0, np.zeros((10, 10, 3), np.uint8)))) == 0


def test_build_detector_dispatches_replay_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    class _Replay:
        def detect(self, frame: Frame) -> Detections:
            return Detections.empty()

    def build(cfg: object) -> _Replay:
        seen.append(cfg)
        return _Replay()

    fake = types.ModuleType("daemon.replay_detect")
    fake.build_replay_detector = build  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "daemon.replay_detect", fake)
    cfg = MotFileDetectorConfig(path=tmp_path / "det.txt")
    det = detect.build_detector(cfg, CPU, tmp_path)
    assert isinstance(det, _Replay) and seen == [cfg]


# ----------------------------------------------------------------------------------------- real models + clip


def _need(model_cache: Path, name: str) -> None:
    if preset_status(name, model_cache).state != "ready":
        pytest.skip(f"model {name} not fetched; run reid-daemon models fetch {name}")


@pytest.fixture(scope="session")
def pets_frames() -> dict[int, np.ndarray]:
    import cv2
    from _data import require_pets09_video

    cap = cv2.VideoCapture(str(require_pets09_video()))
    frames: dict[int, np.ndarray] = {}
    for i in range(41):
        ok, img = cap.read()
        if not ok:
            break
        if i % 8 == 0:
            frames[i] = img
    cap.release()
    return frames


@pytest.fixture(scope="session")
def pets_gt() -> dict[int, np.ndarray]:
    from _data import require_pets09_gt

    rows = np.loadtxt(require_pets09_gt(), delimiter=",")
    rows = rows[rows[:, 6] > 0]
    out = {}
    for f in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == f]
        out[f - 1] = np.column_stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]]).astype(
            np.float32
        )
    return out


def _recall(dets: Detections, gt: np.ndarray) -> float:
    if len(dets) == 0:
        return 0.0
    return float((box_iou(gt, dets.xyxy).max(axis=1) >= 0.5).mean())


def test_ssdlite_finds_the_people_on_frame_0(model_cache: Path, pets_frames: Any, pets_gt: Any) -> None:
    _need(model_cache, "ssdlite-mobilenetv2-pedestrian")
    gt = pets_gt[0]  # three people to consider on frame 0
    full = SSDLiteDetector(SSDLiteDetectorConfig(tiles=(1, 1), score_threshold=0.3), CPU, model_cache)
    d = full.detect(Frame(0, 0.0, pets_frames[0]))
    assert len(d) >= 2 and _recall(d, gt) >= 2 / 3 - 1e-6
    assert (d.scores >= 0.3).all() and d.xyxy.dtype == np.float32 and d.scores.dtype == np.float32
    assert (d.xyxy >= 0).all() and (d.xyxy[:, 2] <= 768).all() and (d.xyxy[:, 3] <= 576).all()
    tiled = SSDLiteDetector(SSDLiteDetectorConfig(tiles=(3, 2), score_threshold=0.3), CPU, model_cache)
    assert _recall(tiled.detect(Frame(0, 0.0, pets_frames[0])), gt) == 1.0  # the small third person too


def test_ssdlite_tiles_batched_equal_looped_and_raise_recall(
    model_cache: Path, pets_frames: Any, pets_gt: Any
) -> None:
    _need(model_cache, "ssdlite-mobilenetv2-pedestrian")
    full = SSDLiteDetector(SSDLiteDetectorConfig(tiles=(1, 1), score_threshold=0.2), CPU, model_cache)
    tiled = SSDLiteDetector(SSDLiteDetectorConfig(tiles=(2, 1), score_threshold=0.2), CPU, model_cache)
    assert tiled.batched, "the converted SSD graph takes a batch: passes should run in one call"
    r_full, r_tiled = [], []
    for i, img in pets_frames.items():
        frame = Frame(i, 0.0, img)
        batched = tiled.detect(frame)
        tiled.batched = False
        looped = tiled.detect(frame)
        tiled.batched = True
        np.testing.assert_allclose(batched.xyxy, looped.xyxy, atol=1e-3)
        r_full.append(_recall(full.detect(frame), pets_gt[i]))
        r_tiled.append(_recall(batched, pets_gt[i]))
    assert np.mean(r_tiled) > np.mean(r_full)


def test_yolo_preset_finds_people_on_frame_0(model_cache: Path, pets_frames: Any, pets_gt: Any) -> None:
    _need(model_cache, "yolov8s-person")
    det = YoloOnnxDetector(YoloDetectorConfig(person_classes=(0, 1)), CPU, model_cache)
    d = det.detect(Frame(0, 0.0, pets_frames[0]))
    assert _recall(d, pets_gt[0]) >= 0.5


def test_detector_sweep_benchmark_runs(model_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Smoke test of benchmarks/detector_sweep.py on a few frames: it runs and prints its tables."""
    from _data import clip_args, load_benchmark

    _need(model_cache, "ssdlite-mobilenetv2-pedestrian")
    module = load_benchmark("detector_sweep")
    args = clip_args(model_cache)
    args += ["--stride", "200", "--timing-frames", "2", "--repeats", "1"]
    assert module.main(args) == 0
    out = capsys.readouterr().out
    assert "full+3x2     cut-drop      0.3" in out and "batched" in out and "looped" in out


def test_benchmark_clip_gt_is_read_with_its_errors_named(tmp_path: Path) -> None:
    """detector_sweep / embedder_bench read --gt with numpy: a missing file was a FileNotFoundError traceback and
    a six-column one 'IndexError: index 6 is out of bounds'."""
    from _data import load_benchmark

    pets_clip = load_benchmark("pets_clip")
    with pytest.raises(SystemExit, match=r"error: .*nope\.txt: file not found"):
        pets_clip.load_gt(tmp_path / "nope.txt")
    six = tmp_path / "gt6.txt"
    six.write_text("1,1,10,10,20,40\n")
    with pytest.raises(
        SystemExit, match=r"gt6\.txt, line 1: expected 7 to 10 comma-separated columns, got 6"
    ):
        pets_clip.load_gt(six)
    good = tmp_path / "gt.txt"
    good.write_text("2,5,10,10,20,40,1,-1,-1,-1\n2,6,50,10,20,40,0,-1,-1,-1\n1,5,12,10,20,40,1,-1,-1,-1\n")
    gt = pets_clip.load_gt(good)
    assert list(gt) == [0, 1] and gt[1].ids.tolist() == [5, 6] and gt[1].consider.tolist() == [True, False]
    np.testing.assert_array_equal(gt[1].xyxy[1], np.array([50, 10, 70, 50], np.float32))


@pytest.mark.parametrize("script", ["detector_sweep", "embedder_bench"])
@pytest.mark.parametrize(
    ("threads", "bound"), [("-1", "greater than or equal to 0"), ("999", "less than or equal")]
)
def test_benchmark_threads_out_of_range_are_usage_errors(
    script: str, threads: str, bound: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--threads outside RuntimeConfig's range was a pydantic traceback."""
    from _data import load_benchmark

    with pytest.raises(SystemExit) as e:
        load_benchmark(script).main(["--threads", threads])
    assert e.value.code == 2 and f"--threads: Input should be {bound}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("script", "skip", "preset"),
    [
        ("detector_sweep", "--skip-latency", "ssdlite-mobilenetv2-pedestrian"),
        ("embedder_bench", "--skip-speed", "mobilenetv2-imagenet"),
    ],
)
def test_benchmark_without_its_model_names_the_fetch(
    tmp_path: Path, script: str, skip: str, preset: str
) -> None:
    """A model absent from --models-dir was a _AbsentError traceback."""
    from _data import clip_args, load_benchmark

    args = [*clip_args(tmp_path), "--max-frames", "1", "--stride", "50", skip]
    fetch = f"fetch it once with: reid-daemon models fetch {preset} --models-dir {tmp_path}"
    with pytest.raises(SystemExit, match=rf"^error: model preset '{preset}' is not in .*{re.escape(fetch)}$"):
        load_benchmark(script).main(args)


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("codec_bench", ["--stride", "0"]),
        ("codec_bench", ["--inner", "0"]),
        ("detector_sweep", ["--repeats", "0"]),
        ("embedder_bench", ["--batches", "8", "0"]),
        ("embedder_bench", ["--speed-crops", "-1"]),
        ("detector_sweep", ["--timing-frames", "0"]),
        ("detector_sweep", ["--timing-frames", "-3"]),
        ("embedder_bench", ["--near", "0"]),
    ],
)
def test_benchmark_counts_below_one_are_usage_errors(
    script: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A stride, repeat count, batch or number of calls of 0 ended in a ZeroDivisionError or StatisticsError
    traceback after the models loaded; --timing-frames 0 timed every frame of the clip (read_frames' 0 is all),
    -3 ended in an IndexError; --near 0 (no pair is 0 frames apart) printed nan."""
    from _data import load_benchmark

    with pytest.raises(SystemExit) as e:
        load_benchmark(script).main(args)
    assert e.value.code == 2
    assert f"argument {args[0]}: must be 1 or more, not {args[-1]}" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["detector_sweep", "embedder_bench"])
def test_benchmark_negative_max_frames_is_a_usage_error(
    script: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-frames -1 read no frame: detector_sweep printed a table of zeros, embedder_bench ended in 'need at
    least one array to concatenate'."""
    from _data import load_benchmark

    with pytest.raises(SystemExit) as e:
        load_benchmark(script).main(["--max-frames", "-1"])
    assert e.value.code == 2
    assert "argument --max-frames: must be 0 (no limit) or more frames, not -1" in capsys.readouterr().err


def test_person_classes_default_follows_the_model() -> None:
    from daemon.detect import person_classes_for

    assert person_classes_for(None, 80) == (0,)  # COCO: class 0 is person
    assert person_classes_for(None, 2) == (0, 1)  # person-only model (normal, fallen)
    assert person_classes_for(None, 1) == (0,)
    assert person_classes_for(None, None) == (0,)  # unknown shape: the COCO convention
    assert person_classes_for((3,), 80) == (3,)
    with pytest.raises(ModelError, match="empty"):
        person_classes_for((), 80)
