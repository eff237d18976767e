"""Appearance embedders: person boxes of a frame -> (N, D) L2-normalised float32 vectors.

``OnnxEmbedder`` runs an ONNX feature network (the MobileNetV2 preset takes float32 BGR 0..255 NCHW with its
normalisation inside the graph), optionally on crops colour-normalised and detail-limited first
(``EmbedderConfig.colour_norm`` / ``detail_height``: cameras of different colour, resolution and sharpness then
look more alike); ``BoxmotEmbedder`` wraps BoxMOT's ReID runtime for a BoxMOT weights file.
Both clip boxes to the image (a degenerate box still gets a vector), batch the crops and guard NaN.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

from daemon import models
from daemon.config import EmbedderConfig, RuntimeConfig
from daemon.errors import ModelError
from daemon.gallery import CROPS, HEAD
from daemon.onnx_runtime import create_session
from daemon.types import Embedder, FloatArray, ImageBGR

if TYPE_CHECKING:
    from daemon.adapt import ProjectionHead

logger = logging.getLogger(__name__)

IntArray = NDArray[np.intp]
NORM_EPS = 1e-12


def l2_normalize(features: NDArray[Any]) -> FloatArray:
    """Row-wise L2 normalisation to float32 (a new array); non-finite values count as 0.

    A row with no finite signal at all becomes the uniform unit vector, so the output is always unit length.
    """
    f = np.nan_to_num(np.asarray(features, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if f.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {f.shape}")
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    bad = norms[:, 0] <= NORM_EPS
    out: FloatArray = (f / np.where(norms > NORM_EPS, norms, 1.0)).astype(np.float32)
    if bad.any() and f.shape[1]:
        logger.warning(
            "%d embedding(s) had no finite signal; replaced by the uniform unit vector", int(bad.sum())
        )
        out[bad] = np.float32(1.0 / np.sqrt(f.shape[1]))
    return out


def crop_windows(xyxy: NDArray[Any], width: int, height: int) -> IntArray:
    """Integer crop windows x0,y0,x1,y1 inside a width x height image, each at least 1x1 pixel.

    Corners are sorted, non-finite coordinates are treated as the image border, and a box outside the image
    or of zero area becomes the nearest 1-pixel window, so every box gets a crop.
    """
    if width < 1 or height < 1:
        raise ValueError(f"cannot crop from an empty {width}x{height} image")
    b = np.asarray(xyxy, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) x0,y0,x1,y1, got shape {b.shape}")
    b = np.nan_to_num(b, nan=0.0, posinf=float(max(width, height)), neginf=0.0)
    x_lo, x_hi = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    y_lo, y_hi = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    x0 = np.clip(np.floor(x_lo), 0, width - 1)
    y0 = np.clip(np.floor(y_lo), 0, height - 1)
    x1 = np.clip(np.ceil(x_hi), x0 + 1, width)
    y1 = np.clip(np.ceil(y_hi), y0 + 1, height)
    return np.column_stack([x0, y0, x1, y1]).astype(np.intp)


def check_image(image: NDArray[Any]) -> None:
    """ValueError unless ``image`` is a non-empty HxWx3 uint8 array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected a non-empty HxWx3 BGR image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 BGR image, got {image.dtype}")


def crop_boxes(image: ImageBGR, xyxy: NDArray[Any]) -> list[ImageBGR]:
    """The crops of every box (views into ``image``), clipped as ``crop_windows`` does."""
    check_image(image)
    h, w = image.shape[:2]
    return [image[y0:y1, x0:x1] for x0, y0, x1, y1 in crop_windows(xyxy, w, h)]


def crops_to_blob(crops: Sequence[ImageBGR], input_hw: tuple[int, int]) -> FloatArray:
    """BGR crops -> float32 (N, 3, H, W) BGR 0..255 at the network's input size."""
    h, w = input_hw
    batch = np.empty((len(crops), h, w, 3), dtype=np.uint8)
    for i, crop in enumerate(crops):
        check_image(crop)
        batch[i] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    blob: FloatArray = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    return blob


def grey_world(crop: ImageBGR) -> ImageBGR:
    """``crop`` with each colour channel scaled to the mean of the three channel means (a new array)."""
    f = crop.astype(np.float32)
    means = f.reshape(-1, 3).mean(axis=0) + 1e-3
    out: ImageBGR = np.clip(f * (means.mean() / means) + 0.5, 0, 255).astype(np.uint8)
    return out


LUMA_MEAN: Final = 128.0  # target lightness mean of 'luminance' normalisation (L of OpenCV's 8-bit Lab)
LUMA_STD: Final = 50.0  # target lightness spread


def standardise_luminance(crop: ImageBGR) -> ImageBGR:
    """``crop`` with the Lab lightness channel moved to mean LUMA_MEAN and spread LUMA_STD (a new array)."""
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).astype(np.float32)
    lum = lab[..., 0]
    lab[..., 0] = (lum - lum.mean()) * (LUMA_STD / (float(lum.std()) + 1e-3)) + LUMA_MEAN
    out: ImageBGR = cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)
    return out


def limit_detail(crop: ImageBGR, height: int) -> ImageBGR:
    """``crop`` shrunk to ``height`` rows (area average, aspect kept) when taller; else itself."""
    h, w = crop.shape[:2]
    if height <= 0 or h <= height:
        return crop
    width = max(1, round(w * height / h))
    out: ImageBGR = np.asarray(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA), np.uint8)
    return out


def prepare_crops(crops: Sequence[ImageBGR], cfg: EmbedderConfig) -> Sequence[ImageBGR]:
    """The crops as the network should see them: colour-normalised and detail-limited per ``cfg``."""
    if cfg.colour_norm == "none" and not cfg.detail_height:
        return crops
    out = []
    for crop in crops:
        check_image(crop)
        c = limit_detail(crop, cfg.detail_height)
        if cfg.colour_norm == "grey_world":
            c = grey_world(c)
        elif cfg.colour_norm == "luminance":
            c = standardise_luminance(c)
        out.append(c)
    return out


class OnnxEmbedder:
    """An ONNX feature network over person crops; batched, optional flip averaging, L2-normalised output."""

    def __init__(self, cfg: EmbedderConfig, runtime: RuntimeConfig, cache_dir: Path) -> None:
        self.cfg = cfg
        path = models.resolve(cfg.model, cache_dir)
        if path.suffix.lower() != ".onnx":
            raise ModelError(f"{path} is not an .onnx file; BoxMOT ReID weights need embedder.type: boxmot")
        self.session = create_session(path, runtime)
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        self._dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.model_path = path
        self._check_output()  # a detector given as the embedder is that, whatever its input size
        self._check_input(path, inp.shape)
        self._dim = self._find_dim()
        self.head = None if cfg.head is None else load_checked_head(Path(cfg.head), cfg, path, self._dim)

    @functools.cached_property
    def signature(self) -> str:
        """What makes these embeddings: the model file and head by content, and the crop settings (see
        ``embedder_signature``)."""
        head = None if self.cfg.head is None else Path(self.cfg.head)
        return signature_of(self.model_path, head) + crop_settings(self.cfg, self.cfg.input_size)

    def _check_input(self, path: Path, shape: list[Any]) -> None:
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ModelError(f"{path}: expected an (N, 3, H, W) input, got {shape}")
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int) and (h, w) != tuple(self.cfg.input_size):
            raise ModelError(
                f"{path} takes {h}x{w} crops but embedder.input_size is {tuple(self.cfg.input_size)}; "
                f"set input_size: [{h}, {w}]"
            )

    def _check_output(self) -> None:
        shape = self.session.get_outputs()[0].shape
        if len(shape) < 2 or any(isinstance(d, int) and d != 1 for d in shape[2:]):  # (N, D) or (N, D, 1, 1)
            raise ModelError(
                f"{self.model_path} is not an embedding graph: its output {shape} is not one vector per crop, "
                "(N, D) (a detector? set embedder.model to an embedder preset or ReID model)"
            )

    def _find_dim(self) -> int:
        shape = self.session.get_outputs()[0].shape
        dim = shape[1] if len(shape) > 2 else shape[-1]
        if isinstance(dim, int) and dim > 0:
            return dim
        probe = np.zeros((1, 3, *self.cfg.input_size), dtype=self._dtype)
        return int(np.prod(self.session.run(None, {self._input: probe})[0].shape[1:]))

    @property
    def dim(self) -> int:
        """Output dimension: the head's when ``embedder.head`` is set, else the model's."""
        return self._dim if self.head is None else self.head.output_dim

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray:
        """One L2-normalised row per box of ``xyxy`` (N, 4) in ``image`` pixels."""
        return self.embed_crops(crop_boxes(image, xyxy))

    def embed_crops(self, crops: Sequence[ImageBGR]) -> FloatArray:
        """One L2-normalised row per BGR crop (any sizes, each at least 1x1); through the head when set."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        bs = self.cfg.batch_size
        crops = prepare_crops(crops, self.cfg)
        parts = [
            self._features(crops_to_blob(crops[i : i + bs], self.cfg.input_size))
            for i in range(0, len(crops), bs)
        ]
        feats = l2_normalize(np.concatenate(parts))
        return feats if self.head is None else self.head.apply(feats)

    def _features(self, blob: FloatArray) -> FloatArray:
        feats = self._run(blob)
        if self.cfg.flip_average:
            feats = l2_normalize(feats) + l2_normalize(self._run(np.ascontiguousarray(blob[..., ::-1])))
        return feats

    def _run(self, blob: FloatArray) -> FloatArray:
        out = self.session.run(None, {self._input: blob.astype(self._dtype, copy=False)})[0]
        feats: FloatArray = np.asarray(out, dtype=np.float32).reshape(len(blob), -1)
        return feats


class BoxmotEmbedder:
    """BoxMOT's ReID runtime (``boxmot.reid.core.runtime.ReID``) for a weights file, behind our interface.

    The weights must be a file (or a zoo name fetched before with ``fetch_boxmot``): nothing is downloaded.
    BoxMOT picks the crop size and normalisation from the weights; its ONNX backend makes its own session.
    """

    def __init__(self, cfg: EmbedderConfig, runtime: RuntimeConfig, cache_dir: Path) -> None:
        self.cfg = cfg
        path = models.resolve_boxmot_weights(cfg.model, cache_dir)
        self.model_path = path
        from boxmot.reid.core.runtime import ReID

        device = boxmot_device(runtime)
        try:
            self._backend: Any = ReID(weights=path, device=device, half=False).model
        except Exception as e:  # BoxMOT raises many types for unreadable or unknown weights
            raise ModelError(f"BoxMOT cannot load ReID weights {path}: {e}") from e
        shape = tuple(getattr(self._backend, "input_shape", cfg.input_size))
        self.input_size: tuple[int, int] = (int(shape[0]), int(shape[1]))
        probe = np.zeros((self.input_size[0], self.input_size[1], 3), dtype=np.uint8)
        self._dim = int(self._features(probe, np.asarray([[0, 0, probe.shape[1], probe.shape[0]]])).shape[1])
        logger.info("BoxMOT ReID %s on %s: %dx%d crops, %d-d", path.name, device, *self.input_size, self._dim)

    @property
    def dim(self) -> int:
        return self._dim

    @functools.cached_property
    def signature(self) -> str:
        """What makes these embeddings: the weights file by content, and the crop settings (see
        ``embedder_signature``)."""
        return signature_of(self.model_path, None) + crop_settings(self.cfg, self.input_size)

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray:
        check_image(image)
        if len(xyxy) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        h, w = image.shape[:2]
        boxes = crop_windows(xyxy, w, h).astype(np.float32)
        bs = self.cfg.batch_size
        parts = [self._features(image, boxes[i : i + bs]) for i in range(0, len(boxes), bs)]
        feats = np.concatenate(parts)
        if self.cfg.flip_average:
            mirrored = np.ascontiguousarray(image[:, ::-1])
            mboxes = np.column_stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]])
            flipped = np.concatenate(
                [self._features(mirrored, mboxes[i : i + bs]) for i in range(0, len(boxes), bs)]
            )
            feats = l2_normalize(feats) + l2_normalize(flipped)
        return l2_normalize(feats)

    def embed_crops(self, crops: Sequence[ImageBGR]) -> FloatArray:
        """Crops resized to the model's input size and laid side by side, then embedded like boxes."""
        if len(crops) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        h, w = self.input_size
        resized = []
        for crop in crops:
            check_image(crop)
            resized.append(cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR))
        strip: ImageBGR = np.ascontiguousarray(np.concatenate(resized, axis=1), dtype=np.uint8)
        boxes = np.asarray([[i * w, 0, (i + 1) * w, h] for i in range(len(crops))], dtype=np.float32)
        return self.embed(strip, boxes)

    def _features(self, image: ImageBGR, boxes: NDArray[Any]) -> FloatArray:
        feats = np.asarray(self._backend.get_features(boxes, image), dtype=np.float32)
        return feats.reshape(len(boxes), -1)


def boxmot_device(runtime: RuntimeConfig) -> str:
    """'cuda:0' when the runtime asks for CUDA first and torch sees a GPU, else 'cpu'."""
    wants_cuda = bool(runtime.providers) and runtime.providers[0] == "CUDAExecutionProvider"
    if not wants_cuda:
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def load_checked_head(head: Path, cfg: EmbedderConfig, model_path: Path, model_dim: int) -> ProjectionHead:
    """The projection head of ``embedder.head``; ModelError naming the file unless it fits this model."""
    from daemon.adapt import BaseModelInfo, file_sha256, load_head

    loaded = load_head(head)
    base = BaseModelInfo(cfg.model, file_sha256(model_path), model_dim, cfg.input_size, cfg.flip_average)
    loaded.check_base(head, base)
    logger.info("projection head %s: %d -> %d-d", head, loaded.input_dim, loaded.output_dim)
    return loaded


def signature_of(model: Path, head: Path | None) -> str:
    """``<model file> sha256:<16 hex>``, and ``+ head <file> sha256:<16 hex>`` with a projection head."""
    from daemon.adapt import file_sha256

    sig = f"{model.name} sha256:{file_sha256(model)[:16]}"
    return sig if head is None else sig + _head_part(head)


def _head_part(head: Path) -> str:
    from daemon.adapt import file_sha256

    return f"{HEAD}{head.name} sha256:{file_sha256(head)[:16]}"


def signature_through(signature: str | None, head: Path) -> str | None:
    """``signature`` (``embedder_signature``) of vectors mapped through the projection head file ``head`` as
    well, as an embedder with ``embedder.head: head`` signs its own (a fleet's ``identity.head``: the space the
    resolver and its gallery match in); None when ``signature`` is."""
    if signature is None:
        return None
    files, crops, settings = signature.partition(CROPS)
    return files + _head_part(head) + crops + settings


def crop_settings(cfg: EmbedderConfig, input_size: Sequence[int]) -> str:
    """``; crops 256x128[, flip][, colour_norm X][, detail_height N]``: the settings besides the files that
    change the vectors (one crop's two vectors, with and without luminance normalisation, were 0.88 apart:
    as far as two people's)."""
    parts = [f"{input_size[0]}x{input_size[1]}"]
    parts += ["flip"] if cfg.flip_average else []
    parts += [] if cfg.colour_norm == "none" else [f"colour_norm {cfg.colour_norm}"]
    parts += [f"detail_height {cfg.detail_height}"] if cfg.detail_height else []
    return CROPS + ", ".join(parts)


def embedder_signature(embedder: object) -> str | None:
    """What made an embedder's vectors (its model and head files, by content, and its crop settings), which a
    gallery records so that it is never searched with another model's vectors of the same width, or the same
    model's on crops prepared otherwise; None when the embedder cannot say (a ground-truth or test
    embedder)."""
    sig = getattr(embedder, "signature", None)
    return sig if isinstance(sig, str) else None


def build_embedder(cfg: EmbedderConfig, runtime: RuntimeConfig, cache_dir: Path) -> Embedder | None:
    """The embedder a config asks for, or None for type 'none'."""
    if cfg.type == "none":
        return None
    if cfg.type == "boxmot":
        return BoxmotEmbedder(cfg, runtime, cache_dir)
    if cfg.truth is not None:
        from daemon.oracle_embed import GroundTruthEmbedder

        t = cfg.truth
        return GroundTruthEmbedder.from_file(str(t.path), t.similarity, t.seed)
    return OnnxEmbedder(cfg, runtime, cache_dir)
