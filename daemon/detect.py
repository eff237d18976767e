"""Person detectors: SSDLite (full frame + overlapping tiles, one batched call) and Ultralytics YOLO ONNX.

Every backend returns ``Detections`` in frame pixels; the class is always "person". Models come from the cache
through ``daemon.models`` (never downloaded here); sessions through ``daemon.onnx_runtime``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from daemon import models
from daemon.boxes import box_area, box_intersection, box_iou
from daemon.config import (
    DetectorConfig,
    RuntimeConfig,
    SSDLiteDetectorConfig,
    YoloDetectorConfig,
)
from daemon.errors import ModelError
from daemon.onnx_runtime import create_session
from daemon.types import Detections, Detector, FloatArray, Frame, ImageBGR

logger = logging.getLogger(__name__)

IntArray = NDArray[np.intp]

SSD_SIZE = 300
SSD_INPUT = "image_tensor:0"
SSD_OUTPUTS = ("num_detections:0", "detection_scores:0", "detection_boxes:0", "detection_classes:0")
# A tile box whose edge lies within this fraction of the tile size from an interior tile edge is "cut".
CUT_MARGIN_FRAC = 0.02
# A cut box is dropped when an uncut box of another pass covers at least this fraction of its area.
CUT_COVER_FRAC = 0.6
YOLO_PAD_VALUE = 114
YOLO_MAX_CANDIDATES = 3000


# ---------------------------------------------------------------------------------------- box geometry


def nms(xyxy: FloatArray, scores: FloatArray, iou_threshold: float) -> IntArray:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first.

    A box is suppressed by a higher-scoring kept box when their IoU is above ``iou_threshold``.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        if rest.size == 0:
            break
        iou = box_iou(xyxy[best : best + 1], xyxy[rest])[0]
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def finite_boxes(xyxy: FloatArray, scores: FloatArray) -> NDArray[np.bool_]:
    """Rows whose coordinates and score are all finite."""
    return np.asarray(np.isfinite(xyxy).all(axis=1) & np.isfinite(scores), dtype=bool)


def clip_boxes(xyxy: FloatArray, width: int, height: int) -> FloatArray:
    """Boxes clipped to the frame (a new array)."""
    limits = np.asarray([width, height, width, height], dtype=np.float32)
    return np.clip(np.nan_to_num(xyxy, nan=0.0), 0.0, limits).astype(np.float32).reshape(-1, 4)


def keep_mask(
    xyxy: FloatArray, scores: FloatArray, width: int, height: int, score_threshold: float, min_box_px: int
) -> NDArray[np.bool_]:
    """Finite rows scoring >= the threshold whose clipped box is >= min_box_px (and > 0) wide and high."""
    wh = clip_boxes(xyxy, width, height)
    wh = wh[:, 2:4] - wh[:, 0:2]
    big = (wh >= max(float(min_box_px), 1e-3)).all(axis=1)
    return np.asarray(finite_boxes(xyxy, scores) & (np.nan_to_num(scores, nan=-1.0) >= score_threshold) & big)


def clip_and_filter(
    xyxy: FloatArray, scores: FloatArray, width: int, height: int, score_threshold: float, min_box_px: int
) -> Detections:
    """Clip boxes to the frame and keep the rows ``keep_mask`` accepts."""
    keep = keep_mask(xyxy, scores, width, height, score_threshold, min_box_px)
    return Detections(clip_boxes(xyxy[keep], width, height), scores[keep].astype(np.float32))


# ----------------------------------------------------------------------------------------------- tiles


def tile_grid(width: int, height: int, cols: int, rows: int, overlap: float) -> IntArray:
    """(cols*rows, 4) windows x0,y0,x1,y1 covering the frame, neighbours overlapping by ``overlap`` of a tile.

    Tiles are equal-sized, the first touches the left/top border and the last the right/bottom border.
    """
    if cols < 1 or rows < 1 or not 0 <= overlap < 1:
        raise ValueError(f"bad tile grid {cols}x{rows} with overlap {overlap}")
    xs = _tile_starts(width, cols, overlap)
    ys = _tile_starts(height, rows, overlap)
    return np.asarray([(x0, y0, x0 + xs[1], y0 + ys[1]) for y0 in ys[0] for x0 in xs[0]], dtype=np.intp)


def _tile_starts(length: int, n: int, overlap: float) -> tuple[list[int], int]:
    """Start offsets of ``n`` tiles along one axis and the tile length."""
    size = min(length, int(np.ceil(length / (n - (n - 1) * overlap))))
    if n == 1:
        return [0], size
    step = (length - size) / (n - 1)
    return [round(i * step) for i in range(n)], size


def pass_windows(width: int, height: int, cfg: SSDLiteDetectorConfig) -> IntArray:
    """The windows the SSD runs on: the full frame (if configured) then the tiles (if more than one)."""
    full = np.asarray([[0, 0, width, height]], dtype=np.intp)
    cols, rows = cfg.tiles
    if cols * rows == 1:
        return full
    tiles = tile_grid(width, height, cols, rows, cfg.tile_overlap)
    return np.concatenate([full, tiles]) if cfg.full_frame else tiles


def cut_by_tile_edge(
    xyxy: FloatArray, windows: IntArray, width: int, height: int, margin_frac: float = CUT_MARGIN_FRAC
) -> NDArray[np.bool_]:
    """Whether each box (found in its window) touches an edge of that window that lies inside the frame."""
    w = windows.astype(np.float32)
    mx = margin_frac * (w[:, 2] - w[:, 0])
    my = margin_frac * (w[:, 3] - w[:, 1])
    left = (w[:, 0] > 0) & (xyxy[:, 0] - w[:, 0] <= mx)
    top = (w[:, 1] > 0) & (xyxy[:, 1] - w[:, 1] <= my)
    right = (w[:, 2] < width) & (w[:, 2] - xyxy[:, 2] <= mx)
    bottom = (w[:, 3] < height) & (w[:, 3] - xyxy[:, 3] <= my)
    return np.asarray(left | top | right | bottom, dtype=bool)


def merge_passes(
    xyxy: FloatArray,
    scores: FloatArray,
    pass_ids: IntArray,
    cut: NDArray[np.bool_],
    iou_threshold: float,
    cover_frac: float = CUT_COVER_FRAC,
) -> IntArray:
    """Indices of the boxes kept after merging all passes.

    A box cut by an interior tile edge is dropped when an uncut box of another pass covers most of it (the
    neighbouring tile or the full frame saw the person whole); the rest go through NMS together.
    """
    drop = np.zeros(len(scores), dtype=bool)
    cut_idx = np.flatnonzero(cut)
    whole_idx = np.flatnonzero(~cut)
    if cut_idx.size and whole_idx.size:
        inter = box_intersection(xyxy[cut_idx], xyxy[whole_idx])
        cover = inter / np.maximum(box_area(xyxy[cut_idx])[:, None], 1e-6)
        other_pass = pass_ids[cut_idx][:, None] != pass_ids[whole_idx][None, :]
        drop[cut_idx] = ((cover >= cover_frac) & other_pass).any(axis=1)
    kept = np.flatnonzero(~drop)
    return kept[nms(xyxy[kept], scores[kept], iou_threshold)]


# --------------------------------------------------------------------------------------------- SSDLite


def checked_image(frame: Frame) -> ImageBGR:
    """The frame's image; ValueError naming the frame unless it is a non-empty HxWx3 uint8 array."""
    image = frame.image
    if image.ndim != 3 or image.shape[2] != 3 or image.size == 0 or image.dtype != np.uint8:
        raise ValueError(
            f"frame {frame.index}: expected a non-empty HxWx3 uint8 BGR image, got {image.dtype} {image.shape}"
        )
    return image


class SSDLiteDetector:
    """SSDLite-MobileNetV2 (ONNX with NMS inside) on the full frame plus a grid of overlapping tiles.

    All passes are resized to 300x300 and, when the graph accepts a batch, run in one onnxruntime call.
    ``batched`` (found at start) and ``merge_cut_boxes`` (drop tile boxes cut by an interior tile edge when
    another pass saw the person whole; on by default, measured better) may be switched for comparisons.
    """

    def __init__(self, cfg: SSDLiteDetectorConfig, runtime: RuntimeConfig, cache_dir: Path) -> None:
        self.cfg = cfg
        path = models.resolve(cfg.model, cache_dir)
        self.session = create_session(path, runtime)
        self._check_graph(path)
        self._windows: dict[tuple[int, int], IntArray] = {}
        self.batched = self._probe_batch(path)
        self.merge_cut_boxes = True

    def _check_graph(self, path: Path) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if SSD_INPUT not in inputs or inputs[SSD_INPUT].type != "tensor(uint8)":
            raise ModelError(
                f"{path} is not an SSD graph: it needs a uint8 input {SSD_INPUT!r}, has {list(inputs)}"
            )
        missing = [o for o in SSD_OUTPUTS if o not in outputs]
        if missing:
            raise ModelError(f"{path} lacks the SSD outputs {missing} (it has {sorted(outputs)})")

    def _probe_batch(self, path: Path) -> bool:
        """Whether the graph runs a batch of two; also warms the session up."""
        dim0 = self.session.get_inputs()[0].shape[0]
        if isinstance(dim0, int) and dim0 == 1:
            logger.info("%s takes one image per call: passes run one after another", path.name)
            return False
        try:
            self._run(np.zeros((2, SSD_SIZE, SSD_SIZE, 3), np.uint8))
        except Exception as e:  # onnxruntime raises several unrelated types for shape errors
            logger.warning("%s rejects a batch (%s): passes run one after another", path.name, e)
            return False
        return True

    def _run(self, batch: NDArray[np.uint8]) -> list[NDArray[Any]]:
        outs = self.session.run(list(SSD_OUTPUTS), {SSD_INPUT: batch})
        return [np.asarray(o) for o in outs]

    def windows(self, width: int, height: int) -> IntArray:
        key = (width, height)
        if key not in self._windows:
            self._windows[key] = pass_windows(width, height, self.cfg)
        return self._windows[key]

    def detect(self, frame: Frame) -> Detections:
        image = checked_image(frame)
        height, width = image.shape[:2]
        windows = self.windows(width, height)
        num, scores, boxes = self.infer(image, windows)
        return self.postprocess(num, scores, boxes, windows, width, height)

    def postprocess(
        self,
        num: FloatArray,
        scores: FloatArray,
        boxes: FloatArray,
        windows: IntArray,
        width: int,
        height: int,
    ) -> Detections:
        """Raw outputs of ``infer`` -> merged, filtered detections in frame pixels."""
        xyxy, sc, pass_ids = self._to_frame(num, scores, boxes, windows)
        keep = keep_mask(xyxy, sc, width, height, self.cfg.score_threshold, 0)
        dets = Detections(clip_boxes(xyxy[keep], width, height), sc[keep])
        return self._merge(dets, pass_ids[keep], windows, width, height)

    def _merge(
        self, dets: Detections, pass_ids: IntArray, windows: IntArray, width: int, height: int
    ) -> Detections:
        if len(windows) > 1 and len(dets):
            if self.merge_cut_boxes:
                cut = cut_by_tile_edge(dets.xyxy, windows[pass_ids], width, height)
            else:
                cut = np.zeros(len(dets), dtype=bool)
            dets = dets.select(merge_passes(dets.xyxy, dets.scores, pass_ids, cut, self.cfg.nms_iou))
        wh = dets.xyxy[:, 2:4] - dets.xyxy[:, 0:2]
        return dets.select(np.asarray((wh >= self.cfg.min_box_px).all(axis=1), dtype=bool))

    def infer(self, image: ImageBGR, windows: IntArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Run the SSD on every window: num (P,), scores (P, K), boxes (P, K, 4) normalised y0,x0,y1,x1."""
        crops = [cv2.resize(image[y0:y1, x0:x1], (SSD_SIZE, SSD_SIZE)) for x0, y0, x1, y1 in windows]
        # the graph was trained on RGB
        batch: NDArray[np.uint8] = np.ascontiguousarray(np.stack(crops)[..., ::-1], dtype=np.uint8)
        if self.batched:
            num, scores, boxes, _ = self._run(batch)
        else:
            parts = [self._run(batch[i : i + 1]) for i in range(len(batch))]
            num, scores, boxes = (np.concatenate([p[k] for p in parts]) for k in range(3))
        return num.astype(np.float32), scores.astype(np.float32), boxes.astype(np.float32)

    @staticmethod
    def _to_frame(
        num: FloatArray, scores: FloatArray, boxes: FloatArray, windows: IntArray
    ) -> tuple[FloatArray, FloatArray, IntArray]:
        """Valid boxes of all passes in frame pixels, with their scores and pass index."""
        k = np.arange(scores.shape[1])[None, :]
        valid = k < np.nan_to_num(num, nan=0.0)[:, None]
        pass_ids = np.broadcast_to(np.arange(len(windows))[:, None], valid.shape)[valid]
        w = windows[pass_ids].astype(np.float32)
        b = boxes[valid]
        sx, sy = w[:, 2] - w[:, 0], w[:, 3] - w[:, 1]
        xyxy = np.column_stack(
            [w[:, 0] + b[:, 1] * sx, w[:, 1] + b[:, 0] * sy, w[:, 0] + b[:, 3] * sx, w[:, 1] + b[:, 2] * sy]
        ).astype(np.float32)
        return xyxy.reshape(-1, 4), scores[valid].astype(np.float32), pass_ids.astype(np.intp)


# ------------------------------------------------------------------------------------------------ YOLO


def letterbox(image: ImageBGR, size: int) -> tuple[ImageBGR, float, tuple[float, float]]:
    """Resize keeping the aspect ratio into a grey size x size canvas; returns (canvas, scale, pad).

    A frame point p maps to ``p * scale + pad`` on the canvas.
    """
    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.full((size, size, 3), YOLO_PAD_VALUE, dtype=np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py : py + nh, px : px + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, scale, (float(px), float(py))


def decode_yolo(
    output: NDArray[Any], person_classes: tuple[int, ...], score_threshold: float
) -> tuple[FloatArray, FloatArray]:
    """Ultralytics detect head output (1, 4+nc, N), without NMS -> canvas xyxy and person scores.

    The score of a candidate is its best score over ``person_classes``; rows below the threshold are dropped.
    """
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 3 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 2:
        raise ModelError(f"unexpected YOLO output shape {np.shape(output)}; expected (1, 4+classes, N)")
    nc = out.shape[0] - 4
    if nc < 1 or max(person_classes) >= nc:
        raise ModelError(f"YOLO output has {nc} classes; person_classes {person_classes} do not fit")
    scores = out[[4 + c for c in person_classes]].max(axis=0)
    keep = np.flatnonzero(scores >= score_threshold)
    if keep.size > YOLO_MAX_CANDIDATES:
        keep = keep[np.argsort(-scores[keep])[:YOLO_MAX_CANDIDATES]]
    cx, cy, bw, bh = out[0, keep], out[1, keep], out[2, keep], out[3, keep]
    xyxy = np.column_stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]).astype(np.float32)
    return xyxy.reshape(-1, 4), scores[keep].astype(np.float32)


def unletterbox(xyxy: FloatArray, scale: float, pad: tuple[float, float]) -> FloatArray:
    """Canvas boxes back to frame pixels (inverse of ``letterbox``)."""
    offset = np.asarray([pad[0], pad[1], pad[0], pad[1]], dtype=np.float32)
    return ((xyxy - offset) / scale).astype(np.float32)


class YoloOnnxDetector:
    """Ultralytics-format YOLO (no NMS in the graph) through onnxruntime: letterbox, decode, NMS, map back."""

    def __init__(self, cfg: YoloDetectorConfig, runtime: RuntimeConfig, cache_dir: Path) -> None:
        self.cfg = cfg
        path = models.resolve_yolo(cfg.model, cache_dir, cfg.imgsz)
        self.session = create_session(path, runtime)
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        self._dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self._check_graph(path, inp.type, inp.shape)
        self._check_shapes(path, inp.shape)
        self._log_classes(path)

    def _check_graph(self, path: Path, input_type: str, shape: list[Any]) -> None:
        """ModelError for a graph that is no Ultralytics detect head (a preset of another kind, an SSD graph):
        it would fail at the first frame, with onnxruntime's message or a nonsense class count."""
        out_shape = self.session.get_outputs()[0].shape
        image_in = (
            input_type in ("tensor(float)", "tensor(float16)") and len(shape) == 4 and shape[1] in (3, "3")
        )
        if not image_in or len(out_shape) != 3:
            raise ModelError(
                f"{path} is not a YOLO detection graph: it needs a float (N, 3, H, W) input and a "
                f"(N, 4+classes, boxes) output, has a {input_type} {shape} input and a {out_shape} output"
            )

    def _check_shapes(self, path: Path, shape: list[Any]) -> None:
        if len(shape) != 4:
            raise ModelError(f"{path}: expected an NCHW image input, got shape {shape}")
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int) and (h, w) != (self.cfg.imgsz, self.cfg.imgsz):
            raise ModelError(
                f"{path} has a fixed {h}x{w} input but detector.imgsz is {self.cfg.imgsz}; set imgsz: {h}"
            )
        out_shape = self.session.get_outputs()[0].shape
        rows = [d for d in out_shape[1:] if isinstance(d, int)]
        nc = min(rows) - 4 if rows else None
        self.person_classes = person_classes_for(self.cfg.person_classes, nc)
        if nc is not None and nc <= max(self.person_classes):
            raise ModelError(f"{path} outputs {nc} classes; person_classes {self.person_classes} do not fit")

    def _log_classes(self, path: Path) -> None:
        names = self.session.get_modelmeta().custom_metadata_map.get("names", "")
        logger.info("%s: person classes %s of %s", path.name, self.person_classes, names or "(no names)")
        if "'Fall'" in names and 1 not in self.person_classes:
            logger.warning(
                "%s has a 'Fall' class (a fallen person): set detector.person_classes: [0, 1]", path.name
            )

    def detect(self, frame: Frame) -> Detections:
        image = checked_image(frame)
        canvas, scale, pad = letterbox(image, self.cfg.imgsz)
        blob = canvas[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) * np.float32(1 / 255)
        output = self.session.run(None, {self._input: np.ascontiguousarray(blob, dtype=self._dtype)})[0]
        xyxy, scores = decode_yolo(output, self.person_classes, self.cfg.score_threshold)
        ok = finite_boxes(xyxy, scores)
        xyxy, scores = xyxy[ok], scores[ok]
        keep = nms(xyxy, scores, self.cfg.nms_iou)
        boxes = unletterbox(xyxy[keep], scale, pad)
        h, w = image.shape[:2]
        return clip_and_filter(boxes, scores[keep], w, h, self.cfg.score_threshold, self.cfg.min_box_px)


def person_classes_for(configured: tuple[int, ...] | None, num_classes: int | None) -> tuple[int, ...]:
    """The class ids scored as a person: as configured, else class 0 of a multi-class model, else all."""
    if configured is not None:
        if not configured:
            raise ModelError("detector.person_classes is empty: name at least one class id")
        return configured
    if num_classes is not None and num_classes <= 2:
        return tuple(range(num_classes))
    return (0,)


# --------------------------------------------------------------------------------------------- factory


def build_detector(cfg: DetectorConfig, runtime: RuntimeConfig, cache_dir: Path) -> Detector:
    """The detector a config asks for; replayed boxes (mot-file / ground-truth) come from replay_detect."""
    if isinstance(cfg, SSDLiteDetectorConfig):
        return SSDLiteDetector(cfg, runtime, cache_dir)
    if isinstance(cfg, YoloDetectorConfig):
        return YoloOnnxDetector(cfg, runtime, cache_dir)
    from daemon.replay_detect import build_replay_detector

    return build_replay_detector(cfg)


__all__ = [
    "SSDLiteDetector",
    "YoloOnnxDetector",
    "box_iou",
    "build_detector",
    "decode_yolo",
    "letterbox",
    "merge_passes",
    "nms",
    "pass_windows",
    "tile_grid",
    "unletterbox",
]
