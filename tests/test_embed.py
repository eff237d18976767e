"""Embedders: crop clipping, L2 / NaN guards, batching and flip averaging (synthetic graph), real models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.config import EmbedderConfig, RuntimeConfig
from daemon.embed import (
    BoxmotEmbedder,
    OnnxEmbedder,
    build_embedder,
    crop_boxes,
    crop_windows,
    crops_to_blob,
    grey_world,
    l2_normalize,
    limit_detail,
    prepare_crops,
    standardise_luminance,
)
from daemon.errors import ModelError
from daemon.models import preset_status
from daemon.types import Embedder

CPU = RuntimeConfig(providers=("CPUExecutionProvider",))


# ----------------------------------------------------------------------------------------- pure logic


def test_l2_normalize_rows_nan_and_zero() -> None:
    f = np.array([[3, 4, 0], [np.nan, 1, 0], [0, 0, 0], [np.inf, np.nan, -np.inf]], np.float32)
    before = f.copy()
    out = l2_normalize(f)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[0], [0.6, 0.8, 0.0])
    np.testing.assert_allclose(out[1], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(out[2], np.full(3, 1 / np.sqrt(3)), rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(f), np.isnan(before))  # the caller's array is untouched
    assert l2_normalize(np.zeros((0, 5))).shape == (0, 5)


@pytest.mark.parametrize(
    "box",
    [
        [10, 10, 50, 80],  # inside
        [-20, -20, 30, 30],  # partly outside
        [500, 500, 600, 600],  # wholly outside (beyond the bottom-right)
        [-50, -50, -10, -10],  # wholly outside (before the top-left)
        [40, 40, 40, 40],  # zero area
        [60, 70, 20, 10],  # inverted corners
        [np.nan, 5, 20, np.inf],  # non-finite
        [99.7, 79.2, 99.9, 79.9],  # sub-pixel at the far corner
    ],
)
def test_crop_windows_always_give_a_pixel_inside(box: list[float]) -> None:
    w, h = 100, 80
    ((x0, y0, x1, y1),) = crop_windows(np.array([box]), w, h)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


def test_crop_windows_keep_whole_pixels_of_a_normal_box() -> None:
    assert crop_windows(np.array([[10.4, 20.6, 30.2, 40.9]]), 100, 100).tolist() == [[10, 20, 31, 41]]
    assert crop_windows(np.zeros((0, 4)), 10, 10).shape == (0, 4)
    with pytest.raises(ValueError, match="empty"):
        crop_windows(np.zeros((1, 4)), 0, 10)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        crop_windows(np.zeros((2, 5)), 10, 10)


def test_crop_boxes_and_blob_keep_bgr_values() -> None:
    img = np.zeros((60, 80, 3), np.uint8)
    img[:, :40] = (255, 0, 0)  # blue (BGR) left half
    img[:, 40:] = (0, 0, 255)  # red right half
    crops = crop_boxes(img, np.array([[0, 0, 40, 60], [40, 0, 80, 60], [79, 59, 79, 59]], np.float32))
    assert [c.shape for c in crops] == [(60, 40, 3), (60, 40, 3), (1, 1, 3)]
    blob = crops_to_blob(crops, (16, 8))
    assert blob.shape == (3, 3, 16, 8) and blob.dtype == np.float32
    assert blob[0, :, 0, 0].tolist() == [255, 0, 0] and blob[1, :, 0, 0].tolist() == [0, 0, 255]
    with pytest.raises(ValueError, match="HxWx3"):
        crop_boxes(np.zeros((10, 10), np.uint8), np.zeros((1, 4)))


# ----------------------------------------------------------------------------------------- synthetic ONNX


def _left_half_mean_onnx(path: Path, hw: tuple[int, int] | None) -> Path:
    """Features = per-channel mean of the left half of the crop (not mirror-invariant), plus a constant 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w = hw if hw is not None else ("h", "w")
    half = (hw[1] // 2) if hw is not None else 4
    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["left"]),
        helper.make_node("ReduceMean", ["left", "hw_axes"], ["m"], keepdims=0),
        helper.make_node("Concat", ["m", "ones"], ["pre"], axis=1),
        helper.make_node("Mul", ["pre", "one"], ["features"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([half], np.int64), "ends"),
        numpy_helper.from_array(np.array([3], np.int64), "axes"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"),
        numpy_helper.from_array(np.ones((1, 1), np.float32), "one"),
    ]
    # a (N, 1) column of ones built from the batch: mean of the input times 0 plus 1
    nodes[2:2] = [
        helper.make_node("ReduceMean", ["images", "all_axes"], ["any"], keepdims=0),
        helper.make_node("Mul", ["any", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "one_vec"], ["ones_flat"]),
        helper.make_node("Unsqueeze", ["ones_flat", "ax1"], ["ones"]),
    ]
    inits += [
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "all_axes"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
        numpy_helper.from_array(np.ones(1, np.float32), "one_vec"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
    ]
    graph = helper.make_graph(
        nodes,
        "left_half_mean",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, h, w])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def toy_model(tmp_path: Path) -> Path:
    return _left_half_mean_onnx(tmp_path / "toy.onnx", (8, 8))


def _blue_red(h: int = 40, w: int = 40) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 0, 0)
    img[:, w // 2 :] = (0, 0, 200)
    return img


def test_onnx_embedder_batches_and_normalises(toy_model: Path, tmp_path: Path) -> None:
    emb = OnnxEmbedder(EmbedderConfig(model=str(toy_model), input_size=(8, 8), batch_size=2), CPU, tmp_path)
    assert isinstance(emb, Embedder) and emb.dim == 4
    img = np.zeros((100, 120, 3), np.uint8)
    img[:, :60] = (200, 0, 0)
    img[:, 60:] = (0, 0, 200)
    boxes = np.array(
        [[0, 0, 50, 90], [70, 0, 110, 90], [-10, -10, -5, -5], [np.nan, 0, 1, 1], [60, 60, 60, 60]],
        np.float32,
    )
    f = emb.embed(img, boxes)
    assert f.shape == (5, 4) and f.dtype == np.float32 and np.isfinite(f).all()
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    blue, red = f[0], f[1]
    np.testing.assert_allclose(blue, np.array([200, 0, 0, 1]) / np.hypot(200, 1), rtol=1e-5)
    np.testing.assert_allclose(red, np.array([0, 0, 200, 1]) / np.hypot(200, 1), rtol=1e-5)
    assert emb.embed(img, np.zeros((0, 4), np.float32)).shape == (0, 4)
    assert emb.embed_crops([]).shape == (0, 4)


def test_onnx_embedder_flip_average_uses_the_mirror(toy_model: Path, tmp_path: Path) -> None:
    crop = _blue_red()
    plain = OnnxEmbedder(EmbedderConfig(model=str(toy_model), input_size=(8, 8)), CPU, tmp_path)
    flip = OnnxEmbedder(
        EmbedderConfig(model=str(toy_model), input_size=(8, 8), flip_average=True), CPU, tmp_path
    )
    a, b = plain.embed_crops([crop])[0], flip.embed_crops([crop])[0]
    mirrored = plain.embed_crops([crop[:, ::-1]])[0]
    np.testing.assert_allclose(b, l2_normalize((a + mirrored)[None])[0], rtol=1e-5)
    assert a[2] == 0 and b[0] > 0 and b[2] > 0  # the mirror brought the red half in


def test_a_graph_without_one_vector_per_crop_is_no_embedder(model_cache: Path, tmp_path: Path) -> None:
    # Regression: the detector preset as an embedder (`embed photo.jpg --model yolov8s-person`) said to set
    # input_size: [640, 640]; done, it "embedded" each crop as its flattened (6, 8400) detection head: 50400-d
    # rows that matched nothing, with no word of warning.
    status = preset_status("yolov8s-person", model_cache)
    if status.state != "ready":
        pytest.skip("yolov8s-person is not fetched (reid-daemon models fetch yolov8s-person)")
    for size in (
        (640, 640),
        (256, 128),
    ):  # at the embedder's own input size it was told to set [640, 640] first
        cfg = EmbedderConfig(model=str(status.path), input_size=size)
        with pytest.raises(ModelError, match=r"is not an embedding graph: its output \[1, 6, 8400\]"):
            OnnxEmbedder(cfg, CPU, tmp_path)


def test_onnx_embedder_size_checks(toy_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"takes 8x8 crops.*input_size: \[8, 8\]"):
        OnnxEmbedder(EmbedderConfig(model=str(toy_model), input_size=(16, 8)), CPU, tmp_path)
    free = _left_half_mean_onnx(tmp_path / "free.onnx", None)
    emb = OnnxEmbedder(EmbedderConfig(model=str(free), input_size=(16, 8)), CPU, tmp_path)
    assert emb.embed_crops([_blue_red()]).shape == (1, 4)
    pt = tmp_path / "reid.pt"
    pt.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"embedder\.type: boxmot"):
        OnnxEmbedder(EmbedderConfig(model=str(pt)), CPU, tmp_path)


def test_build_embedder(tmp_path: Path, toy_model: Path) -> None:
    assert build_embedder(EmbedderConfig(type="none"), CPU, tmp_path) is None
    assert isinstance(
        build_embedder(EmbedderConfig(model=str(toy_model), input_size=(8, 8)), CPU, tmp_path), OnnxEmbedder
    )
    with pytest.raises(ModelError, match="reid-daemon models fetch mobilenetv2-imagenet"):
        build_embedder(EmbedderConfig(), CPU, tmp_path)
    with pytest.raises(ModelError, match=r"fetch-boxmot osnet_x0_25_msmt17\.pt"):
        build_embedder(EmbedderConfig(type="boxmot", model="osnet_x0_25_msmt17.pt"), CPU, tmp_path)


# ----------------------------------------------------------------------------------------- BoxMOT backend


@pytest.fixture(scope="session")
def random_osnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised OSNet x0.25 saved under a name BoxMOT recognises (no download involved)."""
    import torch
    from boxmot.reid.core.registry import ReIDModelRegistry

    torch.manual_seed(0)
    net = ReIDModelRegistry.build_model("osnet_x0_25", None, num_classes=10, pretrained=False, use_gpu=False)
    path = tmp_path_factory.mktemp("boxmot") / "osnet_x0_25_random.pt"
    torch.save(net.state_dict(), path)
    return Path(path)


def test_boxmot_embedder_wraps_boxmot_reid(random_osnet: Path, tmp_path: Path) -> None:
    cfg = EmbedderConfig(type="boxmot", model=str(random_osnet), batch_size=2)
    emb = BoxmotEmbedder(cfg, CPU, tmp_path)
    assert emb.dim == 512 and emb.input_size == (256, 128)
    img = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    boxes = np.array(
        [[0, 0, 50, 100], [10, 10, 10, 10], [290, 190, 400, 400], [np.nan, 1, 5, 5], [20, 30, 80, 150]]
    )
    f = emb.embed(img, boxes.astype(np.float32))
    assert f.shape == (5, 512) and np.isfinite(f).all()
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    crops = emb.embed_crops([img[0:100, 0:50], img[30:150, 20:80]])
    np.testing.assert_allclose(crops, f[[0, 4]], atol=1e-4)  # a crop embeds like its box
    flip = BoxmotEmbedder(cfg.model_copy(update={"flip_average": True}), CPU, tmp_path).embed(img, boxes[:1])
    assert flip.shape == (1, 512) and not np.allclose(flip, f[:1])


# ----------------------------------------------------------------------------------------- real model + clip


@pytest.fixture(scope="session")
def pets_samples() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, consider=1 boxes, ids) of frames 0, 40, ..., 400 of the shared clip."""
    import cv2
    from _data import require_pets09_gt, require_pets09_video

    video, gt = require_pets09_video(), require_pets09_gt()
    rows = np.loadtxt(gt, delimiter=",")
    rows = rows[rows[:, 6] > 0]
    cap = cv2.VideoCapture(str(video))
    out = []
    for i in range(401):
        ok, img = cap.read()
        if not ok:
            break
        if i % 40:
            continue
        r = rows[rows[:, 0] == i + 1]
        boxes = np.column_stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]]).astype(np.float32)
        out.append((img, boxes, r[:, 1].astype(int)))
    cap.release()
    return out


def test_same_person_is_closer_than_different_people(model_cache: Path, pets_samples: Any) -> None:
    if preset_status("mobilenetv2-imagenet", model_cache).state != "ready":
        pytest.skip(
            "model mobilenetv2-imagenet not fetched; run reid-daemon models fetch mobilenetv2-imagenet"
        )
    emb = OnnxEmbedder(EmbedderConfig(), CPU, model_cache)
    assert emb.dim == 1280
    feats, ids, frames = [], [], []
    for k, (img, boxes, pid) in enumerate(pets_samples):
        feats.append(emb.embed(img, boxes))
        ids.extend(pid.tolist())
        frames.extend([k] * len(pid))
    f = np.concatenate(feats)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    sim = f @ f.T
    same_id = np.equal.outer(ids, ids)
    other_frame = ~np.equal.outer(frames, frames)
    same, diff = sim[same_id & other_frame], sim[~same_id]
    assert len(same) > 20 and len(diff) > 100
    assert same.mean() > diff.mean() + 0.05
    # batching must not change the result
    one = OnnxEmbedder(EmbedderConfig(batch_size=1), CPU, model_cache)
    img, boxes, _ = pets_samples[0]
    np.testing.assert_allclose(one.embed(img, boxes), emb.embed(img, boxes), atol=1e-4)


def test_embedder_benchmark_runs(model_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Smoke test of benchmarks/embedder_bench.py on a few frames: it runs and prints its tables."""
    from _data import clip_args, load_benchmark

    if preset_status("mobilenetv2-imagenet", model_cache).state != "ready":
        pytest.skip(
            "model mobilenetv2-imagenet not fetched; run reid-daemon models fetch mobilenetv2-imagenet"
        )
    module = load_benchmark("embedder_bench")
    args = clip_args(model_cache)
    args += ["--stride", "100", "--speed-crops", "4", "--repeats", "1", "--batches", "1", "2"]
    assert module.main(args) == 0
    out = capsys.readouterr().out
    assert "224x224" in out and "batch   2" in out and "AUC" in out


# ----------------------------------------------------------------------------------------- crop preparation


def test_grey_world_removes_a_colour_cast() -> None:
    rng = np.random.default_rng(0)
    crop = rng.integers(40, 200, (60, 30, 3)).astype(np.uint8)
    cast = np.clip(crop * np.array([1.2, 1.0, 0.8]), 0, 255).astype(np.uint8)  # bluer, less red (BGR)
    a, b = grey_world(crop), grey_world(cast)
    assert a.dtype == np.uint8 and a.shape == crop.shape
    means = b.reshape(-1, 3).mean(axis=0)
    assert np.ptp(means) < 1.5  # channels balanced
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.5  # the cast is gone
    assert not np.shares_memory(a, crop)


def test_luminance_standardisation_removes_gamma_and_brightness() -> None:
    rng = np.random.default_rng(1)
    crop = rng.integers(30, 220, (64, 32, 3)).astype(np.uint8)
    darker = np.clip(255.0 * (crop / 255.0) ** 1.4 * 0.8, 0, 255).astype(np.uint8)
    a, b = standardise_luminance(crop), standardise_luminance(darker)
    raw_gap = np.abs(crop.astype(int) - darker.astype(int)).mean()
    assert np.abs(a.astype(int) - b.astype(int)).mean() < raw_gap / 3
    flat = np.full((10, 5, 3), 90, np.uint8)  # no spread at all: no division by zero
    assert np.isfinite(standardise_luminance(flat).astype(float)).all()


def test_limit_detail_shrinks_only_tall_crops_and_keeps_the_aspect() -> None:
    tall = np.zeros((120, 40, 3), np.uint8)
    assert limit_detail(tall, 60).shape == (60, 20, 3)
    assert limit_detail(tall, 0) is tall and limit_detail(tall, 200) is tall
    assert limit_detail(np.zeros((300, 1, 3), np.uint8), 30).shape == (30, 1, 3)  # never 0 wide


def test_prepare_crops_is_a_no_op_by_default_and_rejects_bad_crops() -> None:
    crops = [np.zeros((20, 10, 3), np.uint8)]
    assert prepare_crops(crops, EmbedderConfig()) is crops
    with pytest.raises(ValueError, match="HxWx3"):
        prepare_crops([np.zeros((20, 10), np.uint8)], EmbedderConfig(detail_height=8))


def test_embedder_with_grey_world_sees_through_a_colour_cast(toy_model: Path, tmp_path: Path) -> None:
    crop = np.zeros((40, 40, 3), np.uint8)
    crop[:, :20] = (60, 120, 180)
    crop[:, 20:] = (180, 120, 60)
    cast = np.clip(crop * np.array([1.25, 1.0, 0.8]), 0, 255).astype(np.uint8)
    base = {"model": str(toy_model), "input_size": (8, 8)}
    plain = OnnxEmbedder(EmbedderConfig(**base), CPU, tmp_path)
    norm = OnnxEmbedder(EmbedderConfig(**base, colour_norm="grey_world"), CPU, tmp_path)
    gap = lambda e: float(np.abs(e.embed_crops([crop])[0] - e.embed_crops([cast])[0]).max())  # noqa: E731
    assert gap(norm) < gap(plain) / 4


def test_crop_preparation_needs_the_onnx_embedder() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="onnx"):
        EmbedderConfig(type="boxmot", model="x.pt", colour_norm="grey_world")
    with pytest.raises(ValidationError, match="onnx"):
        EmbedderConfig(type="boxmot", model="x.pt", detail_height=64)
    with pytest.raises(ValidationError):
        EmbedderConfig(colour_norm="sepia")


@pytest.mark.parametrize("size", ["256", "256x", "0x128", "axb"])
def test_embedder_bench_names_a_bad_size(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    """'256' read 'invalid parse_size value'; '0x128' was a pydantic traceback after the crops were embedded."""
    from _data import load_benchmark

    with pytest.raises(SystemExit) as e:
        load_benchmark("embedder_bench").main(["--sizes", "256x128", size])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert f"argument --sizes: expected HEIGHTxWIDTH in pixels (e.g. 256x128), not {size!r}" in err


@pytest.mark.parametrize("cut", [0, 6, 100_000])
def test_a_model_file_that_is_no_onnx_graph_is_one_line_naming_it(
    tmp_path: Path, mobilenet_model: Path, cut: int
) -> None:
    """An empty .onnx (a download that never started) was refused with onnxruntime's message over two lines,
    its C++ source file and the signature of a constructor among them; a cut or foreign one with
    'INVALID_PROTOBUF : ... Protobuf parsing failed.'. Either is one line saying what the file is not."""
    from daemon.onnx_runtime import create_session

    path = tmp_path / "model.onnx"
    path.write_bytes(b"hello\n" if cut == 6 else mobilenet_model.read_bytes()[:cut])
    with pytest.raises(ModelError) as e:
        create_session(path, RuntimeConfig())
    assert str(e.value) == f"onnxruntime cannot load {path}: not an ONNX model, or cut short"
