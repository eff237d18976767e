"""Adapting the embedding to a site without labels: a small projection head on the frozen embedder.

``reid-daemon adapt`` trains a head with a supervised-contrastive (SupCon, Khosla et al. 2020) loss on
features of the frozen ONNX embedder, extracted once and cached, from two kinds of data:

* a **labelled reference folder**: one image per file, the file name is the label, read as ``reid-daemon
  enroll`` reads it (``daemon.enroll``, with the config's ``enroll`` naming; hidden files left out). Images of
  one label are positives; different labels are negatives.
* a site's own **recorded video with no labels**: our detector and tracker run over it (or a MOT results
  file is read beside the video) and each track becomes a pseudo-identity. Boxes are sampled every
  ``sample_every`` frames, at most ``max_per_track`` per track (reservoir sampling, so a long track is
  sampled evenly), skipping boxes that are small, low-scoring, or covered by another box (a crop that may
  hold two people). Appearance re-linking is switched off for mining and a track seen again after a gap of
  more than ``max_gap`` frames starts a new pseudo-identity, so an id switch across an occlusion cannot
  merge two people into one label.

**Co-occurrence decides the negatives.** Two tracks reported on the same frame are certainly different
people. Two tracks that never share a frame may well be one person (a track broken by an occlusion, someone
who leaves and returns), so they must not be pushed apart. Each tracklet batch is built around a *clique*:
the set of tracks alive together on one frame (every pair of them co-occurs). ``cliques_per_batch`` cliques
are merged into one batch, and the loss takes a pair as a negative only when the two tracks co-occur
somewhere in the video; pairs of unknown relation are left out of the loss altogether (neither positive nor
negative). Tracks that never co-occur with any other trainable track give no negatives and are not used.
Reference batches and tracklet batches are kept apart (a reference label and a track may be the same
person); with both, each step adds the two losses.

The head (numpy at run time, no torch)::

    c = x - mean                       # x: the embedder's L2-normalised feature (input_dim)
    z = c @ w0 + relu(c @ w1 + b1) @ w2 + b2
    y = z / |z|                        # output_dim, L2-normalised

``mean`` is the mean training feature, ``w0`` starts as the top ``dim`` principal directions of the training
features and the MLP branch starts at zero, so training starts from a centred PCA projection. It is saved
as an ``.npz`` of float32 arrays plus a JSON ``meta`` string (format tag and version, base model name and
sha256, input and output dims, crop size, training summary, date), read with ``allow_pickle=False``.
``EmbedderConfig.head`` applies it inside the embedder; a head made for another model is a ModelError.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from daemon.boxes import box_area, box_intersection
from daemon.config import EnrollConfig
from daemon.embed import crop_boxes
from daemon.embedding import (
    LEFTOVER_AGE_S,
    atomic_write,
    npz_start_problem,
    output_file_problem,
    read_image,
    remove_leftovers,
)
from daemon.enroll import reference_files
from daemon.errors import ConfigError, DataError, ModelError
from daemon.tempdirs import EARLIER_RELEASE, Leftovers, remove_old_files
from daemon.types import FloatArray, ImageBGR

if TYPE_CHECKING:
    import torch

    from daemon.config import Settings
    from daemon.motio import MotTracks

logger = logging.getLogger(__name__)

IntArray = NDArray[np.int64]
HEAD_FORMAT: Final = "reid-daemon-head"
HEAD_VERSION: Final = 1
HEAD_ARRAYS: Final = ("mean", "w0", "w1", "b1", "w2", "b2")
CACHE_VERSION: Final = 1
MINING_FIELDS: Final = (
    "sample_every",
    "max_per_track",
    "min_track_samples",
    "max_samples",
    "max_gap",
    "min_height",
    "min_score",
    "max_covered",
    "seed",
    "augment",
)


class AdaptConfig(BaseModel):
    """Mining, batching and training settings of ``reid-daemon adapt`` (the single source of their defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dim: int = Field(128, ge=4, le=4096, description="Output dimension of the head.")
    hidden: int = Field(512, ge=4, le=8192, description="Hidden width of the head's residual MLP branch.")
    steps: int = Field(400, ge=1, le=1_000_000, description="Optimiser steps.")
    lr: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW weight decay.")
    temperature: float = Field(0.1, gt=0, le=10, description="SupCon temperature.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on the input features while training.")
    samples_per_track: int = Field(
        8, ge=2, le=256, description="Features drawn per identity (track or label) in a batch."
    )
    tracks_per_batch: int = Field(
        32, ge=2, le=1024, description="Most identities in a batch (a random subset beyond it)."
    )
    cliques_per_batch: int = Field(
        4, ge=1, le=64, description="Co-occurrence cliques merged into one tracklet batch."
    )
    sample_every: int = Field(3, ge=1, le=10_000, description="Frames between two samples of one track.")
    max_per_track: int = Field(32, ge=2, le=10_000, description="Samples kept per track (reservoir).")
    min_track_samples: int = Field(
        4, ge=2, le=10_000, description="A track with fewer samples is not a training identity."
    )
    max_samples: int = Field(
        20_000,
        ge=10,
        le=2_000_000,
        description="Mining stops once this many features are held (memory): each sampled crop's and its "
        "augmented copies'.",
    )
    max_gap: int = Field(
        10, ge=0, le=100_000, description="A track seen again after a longer gap (frames) is a new identity."
    )
    min_height: float = Field(48.0, ge=0, le=10_000, description="Skip boxes shorter than this (px).")
    min_score: float = Field(0.4, ge=0, le=1, description="Skip boxes scoring below this.")
    max_covered: float = Field(
        0.15, ge=0, le=1, description="Skip a box when another box covers more than this fraction of it."
    )
    seed: int = Field(0, ge=0, description="Seed of sampling, initialisation and training.")
    augment: int = Field(
        0,
        ge=0,
        le=16,
        description="Augmented copies of every sampled crop (camera-like changes: gamma, colour cast, "
        "down-scaling, blur, JPEG, box jitter) embedded as extra positives of its track, so the head learns "
        "what differs between cameras is not identity; 0 = off.",
    )


# ================================================================================================ the head


@dataclass(frozen=True, slots=True)
class BaseModelInfo:
    """The frozen embedder a head belongs to."""

    name: str
    sha256: str
    input_dim: int
    input_size: tuple[int, int]
    flip_average: bool


def _l2(features: NDArray[Any]) -> FloatArray:
    f = np.asarray(features, dtype=np.float32)
    n = np.linalg.norm(f, axis=1, keepdims=True)
    out: FloatArray = (f / np.maximum(n, 1e-12)).astype(np.float32)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class ProjectionHead:
    """A trained head (float32 arrays) and its metadata; ``apply`` maps (N, input_dim) -> (N, output_dim)."""

    mean: FloatArray
    w0: FloatArray
    w1: FloatArray
    b1: FloatArray
    w2: FloatArray
    b2: FloatArray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = _shape_problem(self)
        if problem:
            raise ValueError(f"inconsistent head: {problem}")

    @staticmethod
    def from_arrays(arrays: dict[str, FloatArray], meta: dict[str, Any] | None = None) -> ProjectionHead:
        """A head from a dict holding ``HEAD_ARRAYS``."""
        a = {k: np.asarray(arrays[k], np.float32) for k in HEAD_ARRAYS}
        return ProjectionHead(a["mean"], a["w0"], a["w1"], a["b1"], a["w2"], a["b2"], dict(meta or {}))

    @property
    def input_dim(self) -> int:
        return int(self.w0.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.w0.shape[1])

    def apply(self, features: NDArray[Any]) -> FloatArray:
        """The head's L2-normalised output for (N, input_dim) features (a new array)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"head takes (N, {self.input_dim}) features, got shape {x.shape}")
        c = x - self.mean
        z = c @ self.w0 + np.maximum(c @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        return _l2(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0))

    def check_base(self, path: Path, base: BaseModelInfo) -> None:
        """ModelError naming ``path`` unless the head was trained on features of ``base``."""
        m = self.meta
        if base.input_dim != self.input_dim:
            raise ModelError(
                f"head {path} takes {self.input_dim}-d features (model {m.get('base_model')!r}) but embedder "
                f"model {base.name!r} gives {base.input_dim}-d ones"
            )
        if m.get("base_sha256") and m["base_sha256"] != base.sha256:
            raise ModelError(
                f"head {path} was trained on model {m.get('base_model')!r} (sha256 {m['base_sha256'][:12]}…), "
                f"not on embedder model {base.name!r} (sha256 {base.sha256[:12]}…): run `reid-daemon adapt` "
                "with this model"
            )
        size = m.get("input_size")
        if size is not None and tuple(size) != tuple(base.input_size):
            raise ModelError(
                f"head {path} was trained on {size[0]}x{size[1]} crops but embedder.input_size is "
                f"{base.input_size[0]}x{base.input_size[1]}"
            )
        if m.get("flip_average") is not None and bool(m["flip_average"]) != base.flip_average:
            logger.warning("head %s was trained with flip_average=%s", path, m["flip_average"])


def _shape_problem(h: ProjectionHead) -> str | None:
    if h.w0.ndim != 2 or h.w1.ndim != 2 or h.w2.ndim != 2:
        return "w0, w1 and w2 must be matrices"
    d, out = h.w0.shape
    hidden = h.w1.shape[1]
    expected = {
        "mean": (d,),
        "w1": (d, hidden),
        "b1": (hidden,),
        "w2": (hidden, out),
        "b2": (out,),
    }
    for name, shape in expected.items():
        if getattr(h, name).shape != shape:
            return f"{name} has shape {getattr(h, name).shape}, expected {shape} (w0 is {h.w0.shape})"
    if d < 1 or out < 1:
        return f"w0 has an empty shape {h.w0.shape}"
    return None


def save_head(head: ProjectionHead, path: Path) -> Path:
    """Write ``head`` to ``path`` (.npz, atomically: a temp file in the same folder, then rename)."""
    path = Path(path)
    meta = dict(head.meta, format=HEAD_FORMAT, version=HEAD_VERSION)
    meta.update(input_dim=head.input_dim, output_dim=head.output_dim, hidden=int(head.w1.shape[1]))
    arrays: dict[str, NDArray[Any]] = {k: np.asarray(getattr(head, k), np.float32) for k in HEAD_ARRAYS}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]


def load_head(path: Path) -> ProjectionHead:
    """Read a head written by ``save_head``; ModelError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"head file not found: {path}")
    try:
        problem = npz_start_problem(path)
        if problem is not None:
            raise ModelError(f"{path} is not a readable head .npz: {problem}")
        with np.load(path, allow_pickle=False) as z:
            data = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ModelError(f"{path} is not a readable head .npz: {e}") from e
    meta = _head_meta(path, data)
    missing = [k for k in HEAD_ARRAYS if k not in data]
    if missing:
        raise ModelError(f"head {path} lacks arrays {missing}")
    arrays = {k: data[k].astype(np.float32) for k in HEAD_ARRAYS}
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise ModelError(f"head {path} holds NaN or infinite weights")
    try:
        head = ProjectionHead.from_arrays(arrays, meta)
    except ValueError as e:
        raise ModelError(f"head {path}: {e}") from e
    if meta.get("input_dim") != head.input_dim or meta.get("output_dim") != head.output_dim:
        raise ModelError(f"head {path}: meta dims disagree with the weights {head.w0.shape}")
    return head


def _head_meta(path: Path, data: dict[str, NDArray[Any]]) -> dict[str, Any]:
    if "meta" not in data or data["meta"].dtype.kind != "U":
        raise ModelError(f"head {path} has no meta record (not written by `reid-daemon adapt`)")
    try:
        meta = json.loads(str(data["meta"]))
    except json.JSONDecodeError as e:
        raise ModelError(f"head {path}: meta is not JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT:
        raise ModelError(f"head {path}: not a {HEAD_FORMAT} file")
    if meta.get("version") != HEAD_VERSION:
        raise ModelError(
            f"head {path}: format version {meta.get('version')}, this program reads {HEAD_VERSION}"
        )
    return meta


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ================================================================================================ data


@dataclass(frozen=True, slots=True, eq=False)
class LabelledFeatures:
    """Training features with integer ``labels`` (0..L-1) and the ``names`` of the labels."""

    features: FloatArray
    labels: IntArray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.labels.shape != (len(self.features),):
            raise ValueError(f"features {self.features.shape} and labels {self.labels.shape} disagree")


@dataclass(frozen=True, slots=True, eq=False)
class Tracklets:
    """Features of tracks used as pseudo-identities: ``labels`` 0..L-1, sampling ``frames``, co-occurrence.

    ``cooccur[a, b]`` is True when tracks a and b were reported on one frame (certainly different people);
    ``cliques`` are the distinct sets of at least two tracks seen together on a frame.
    """

    features: FloatArray
    labels: IntArray
    frames: IntArray
    track_ids: IntArray
    cooccur: NDArray[np.bool_]
    cliques: tuple[IntArray, ...]
    frames_read: int

    @property
    def num_tracks(self) -> int:
        return int(self.cooccur.shape[0])

    def summary(self) -> dict[str, Any]:
        return {
            "samples": len(self.labels),
            "tracks": self.num_tracks,
            "cliques": len(self.cliques),
            "frames_read": self.frames_read,
            "co_occurring_pairs": int(np.triu(self.cooccur, 1).sum()),
        }


class CropEmbedder(Protocol):
    """The frozen embedder as adapt uses it (``OnnxEmbedder``)."""

    @property
    def dim(self) -> int: ...

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray: ...

    def embed_crops(self, crops: Sequence[ImageBGR]) -> FloatArray: ...


# ------------------------------------------------------------------------------------------ reference folder


def list_reference(folder: Path, naming: EnrollConfig | None = None) -> tuple[list[Path], list[str]]:
    """Image files of ``folder`` and their labels, as ``reid-daemon enroll`` reads them (``naming``: the
    config's ``enroll`` section; hidden files left out); the files left out are logged. DataError when no
    image gives a label."""
    names, skipped = reference_files(folder, naming or EnrollConfig())
    for s in skipped:
        logger.warning("skipped reference %s: %s", s.path, s.reason)
    if not names:
        raise DataError(
            f"reference folder {folder} holds no image whose name gives a label ([SET-]name[--VARIANT].jpg)"
        )
    return [n.path for n in names], [n.label for n in names]


def reference_features(
    paths: Sequence[Path], labels: Sequence[str], embedder: CropEmbedder, *, progress: bool = True
) -> LabelledFeatures:
    """Embed labelled images (whole image = one person crop); unreadable files are skipped with a warning."""
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    feats: list[FloatArray] = []
    kept: list[str] = []
    for path, label in tqdm(list(zip(paths, labels, strict=True)), desc="reference", disable=not progress):
        if not label:
            logger.warning("skipped reference %s (empty label)", path)
            continue
        try:
            image = read_image(path)
        except DataError as e:  # unreadable, or refused by OpenCV (more pixels than it allows)
            logger.warning("skipped reference %s (%s)", path, e)
            continue
        feats.append(embedder.embed_crops([np.asarray(image, np.uint8)])[0])
        kept.append(label)
    if not feats:
        raise DataError("no readable reference image")
    names = tuple(sorted(set(kept)))
    index = {n: i for i, n in enumerate(names)}
    return LabelledFeatures(np.stack(feats), np.array([index[k] for k in kept], np.int64), names)


# ------------------------------------------------------------------------------------------ tracklet mining


@dataclass(frozen=True, slots=True, eq=False)
class FrameTracks:
    """One frame for mining: every box on it, and the tracks reported on it.

    ``boxes``/``scores``: all person boxes of the frame (N); ``track_ids`` (M) with ``box_index`` into
    ``boxes`` (-1: the track has no observed box on this frame); ``embeddings``: optional (N, D) raw features
    already computed for the boxes (all-zero rows: none).
    """

    index: int
    boxes: FloatArray
    scores: FloatArray
    track_ids: IntArray
    box_index: IntArray
    embeddings: FloatArray | None = None


def covered_fraction(boxes: FloatArray) -> FloatArray:
    """For each box, the largest fraction of its area covered by one other box of the set."""
    if len(boxes) < 2:
        return np.zeros(len(boxes), np.float32)
    inter = box_intersection(boxes, boxes)
    np.fill_diagonal(inter, 0.0)
    out: FloatArray = (inter.max(axis=1) / np.maximum(box_area(boxes), 1e-6)).astype(np.float32)
    return out


def eligible_boxes(boxes: FloatArray, scores: FloatArray, cfg: AdaptConfig) -> NDArray[np.bool_]:
    """Boxes fit to sample: tall enough, scoring enough, not covered by another box (one person only)."""
    height = boxes[:, 3] - boxes[:, 1]
    ok = (height >= cfg.min_height) & (scores >= cfg.min_score) & np.isfinite(boxes).all(axis=1)
    return np.asarray(ok & (covered_fraction(boxes) <= cfg.max_covered), dtype=bool)


# Camera-like changes drawn for each augmented copy: what differs between two cameras' views of one person.
AUG_GAMMA: Final = (0.7, 1.45)  # exponent range (brightness response)
AUG_GAIN: Final = (0.8, 1.2)  # per-channel gain range (colour cast, white balance)
AUG_SCALE: Final = (0.45, 1.0)  # crop down-scaling (a smaller, softer person)
AUG_BLUR: Final = (0.0, 1.5)  # Gaussian sigma in crop pixels, half of the copies
AUG_JPEG: Final = (30, 90)  # JPEG quality, half of the copies
AUG_JITTER: Final = 0.05  # box corners moved by up to this fraction of the box size


def augment_crop(image: ImageBGR, box: NDArray[Any], rng: np.random.Generator) -> ImageBGR:
    """One camera-like variant of the crop of ``box`` (x0, y0, x1, y1) in ``image`` (a new array).

    The box is jittered, then the crop gets a gamma and per-channel gains, a random down-scaling and, each
    with probability 1/2, a Gaussian blur and a JPEG round trip.
    """
    b = np.asarray(box, np.float64).reshape(1, 4)
    size = np.array([b[0, 2] - b[0, 0], b[0, 3] - b[0, 1]] * 2)
    b = b + rng.uniform(-AUG_JITTER, AUG_JITTER, 4) * np.abs(size)
    crop = crop_boxes(image, b)[0].astype(np.float32) / 255.0
    crop = crop ** rng.uniform(*AUG_GAMMA) * rng.uniform(*AUG_GAIN, 3).astype(np.float32)
    out = np.clip(crop * 255.0 + 0.5, 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    f = rng.uniform(*AUG_SCALE)
    out = cv2.resize(out, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(*AUG_BLUR) + 1e-3)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*AUG_JPEG))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(out, dtype=np.uint8)


@dataclass(slots=True)
class _TrackState:
    label: int
    last_seen: int
    last_sample: int = -(10**9)
    offered: int = 0


class TrackletMiner:
    """Turns per-frame tracks into sampled features with pseudo-labels and co-occurrence (bounded memory).

    Feed frames in order with ``add``; ``full`` turns True once ``max_samples`` features are held.
    """

    def __init__(self, cfg: AdaptConfig, embedder: CropEmbedder) -> None:
        self.cfg = cfg
        self.embedder = embedder
        self._rng = np.random.default_rng(cfg.seed)
        self._live: dict[int, _TrackState] = {}
        self._next_label = 0
        # label -> (features of the crop and its augmented copies (1 + augment, D), frame, track)
        self._store: dict[int, list[tuple[FloatArray, int, int]]] = {}
        self._held = 0
        self._cliques: set[tuple[int, ...]] = set()
        self.frames_read = 0

    @property
    def full(self) -> bool:
        return self._held >= self.cfg.max_samples

    def add(self, image: ImageBGR, ft: FrameTracks) -> None:
        """Record one frame's co-occurrence and sample its eligible track boxes."""
        self.frames_read += 1
        states = [self._state(int(t), ft.index) for t in ft.track_ids]
        labels = {st.label for st in states}
        if len(labels) >= 2:
            self._cliques.add(tuple(sorted(labels)))
        picks = self._picks(ft, states)
        if picks:
            feats = self._features(image, ft, [box for _, _, box, _ in picks])
            for (label, slot, _, track), f in zip(picks, feats, strict=True):
                self._put(label, slot, (f, ft.index, track))
        self._forget(ft.index)

    def _picks(self, ft: FrameTracks, states: list[_TrackState]) -> list[tuple[int, int, int, int]]:
        """(label, slot, box index, track id) of the boxes to sample on this frame."""
        eligible = eligible_boxes(ft.boxes, ft.scores, self.cfg) if len(ft.boxes) else np.zeros(0, bool)
        picks = []
        for st, b, t in zip(states, ft.box_index, ft.track_ids, strict=True):
            if not (0 <= b < len(eligible) and eligible[b] and self._due(st, ft.index)):
                continue
            slot = self._slot(st)
            if slot is not None:
                picks.append((st.label, slot, int(b), int(t)))
        return picks

    def _state(self, track_id: int, frame: int) -> _TrackState:
        """The track's state; a new pseudo-identity when it is new or was gone more than ``max_gap`` frames."""
        st = self._live.get(track_id)
        if st is None or frame - st.last_seen > self.cfg.max_gap:
            st = _TrackState(self._next_label, frame)
            self._next_label += 1
            self._live[track_id] = st
        st.last_seen = frame
        return st

    def _due(self, st: _TrackState, frame: int) -> bool:
        if frame - st.last_sample < self.cfg.sample_every:
            return False
        st.last_sample = frame
        st.offered += 1
        return True

    def _slot(self, st: _TrackState) -> int | None:
        """Where a new sample goes: appended (index = count held), a reservoir slot to replace, or nowhere."""
        held = len(self._store.get(st.label, []))
        if held < self.cfg.max_per_track:
            return None if self.full else held
        j = int(self._rng.integers(st.offered))
        return j if j < self.cfg.max_per_track else None

    def _put(self, label: int, slot: int, item: tuple[FloatArray, int, int]) -> None:
        items = self._store.setdefault(label, [])
        if slot == len(items):
            items.append(item)
            self._held += len(item[0])  # the crop's feature and its augmented copies': each is held
        else:
            items[slot] = item

    def _features(self, image: ImageBGR, ft: FrameTracks, rows: list[int]) -> FloatArray:
        """(n, 1 + augment, D): each picked box's feature, then those of its augmented copies."""
        idx = np.asarray(rows, np.intp)
        out = np.zeros((len(idx), self.embedder.dim), np.float32)
        have = np.zeros(len(idx), bool)
        if ft.embeddings is not None:
            out[:] = ft.embeddings[idx]
            have = np.any(out != 0, axis=1)
        if not have.all():
            out[~have] = self.embedder.embed(image, ft.boxes[idx[~have]])
        k = self.cfg.augment
        if not k:
            return out[:, None, :]
        crops = [augment_crop(image, box, self._rng) for box in ft.boxes[idx] for _ in range(k)]
        aug = self.embedder.embed_crops(crops).reshape(len(idx), k, -1)
        return np.concatenate([out[:, None, :], aug], axis=1)

    def _forget(self, frame: int) -> None:
        """Drop the state of tracks gone longer than ``max_gap`` (they would get a new label anyway)."""
        stale = [t for t, s in self._live.items() if frame - s.last_seen > self.cfg.max_gap]
        for t in stale:
            del self._live[t]

    def result(self) -> Tracklets:
        """The trainable tracks (at least ``min_track_samples`` samples), relabelled 0..L-1."""
        keep = sorted(k for k, v in self._store.items() if len(v) >= self.cfg.min_track_samples)
        remap = {old: new for new, old in enumerate(keep)}
        items = [(remap[k], it) for k in keep for it in self._store[k]]
        dim = self.embedder.dim
        copies = [len(it[0]) for _, it in items]
        feats = np.concatenate([it[0] for _, it in items]) if items else np.zeros((0, dim), np.float32)
        labels = np.repeat(np.array([lab for lab, _ in items], np.int64), copies)
        frames = np.repeat(np.array([it[1] for _, it in items], np.int64), copies)
        tracks = np.repeat(np.array([it[2] for _, it in items], np.int64), copies)
        cliques = _remap_cliques(self._cliques, remap)
        return Tracklets(
            feats, labels, frames, tracks, cooccurrence(cliques, len(keep)), cliques, self.frames_read
        )


def _remap_cliques(cliques: Iterable[tuple[int, ...]], remap: dict[int, int]) -> tuple[IntArray, ...]:
    out = {tuple(sorted(remap[x] for x in c if x in remap)) for c in cliques}
    return tuple(np.array(c, np.int64) for c in sorted(out) if len(c) >= 2)


def merge_tracklets(parts: Sequence[Tracklets]) -> Tracklets:
    """Tracklets of several cameras as one training set: labels and cliques offset per part.

    Co-occurrence stays within a part: two tracks of different cameras are of unknown relation (one person may
    walk from one view into the other), so they are neither positives nor negatives of each other.
    """
    if not parts:
        raise ValueError("no tracklets to merge")
    offsets = np.cumsum([0] + [t.num_tracks for t in parts])
    cliques = tuple(c + off for t, off in zip(parts, offsets, strict=False) for c in t.cliques)
    return Tracklets(
        np.concatenate([t.features for t in parts]),
        np.concatenate([t.labels + off for t, off in zip(parts, offsets, strict=False)]),
        np.concatenate([t.frames for t in parts]),
        np.concatenate([t.track_ids for t in parts]),
        cooccurrence(cliques, int(offsets[-1])),
        cliques,
        sum(t.frames_read for t in parts),
    )


def cooccurrence(cliques: Sequence[IntArray], n: int) -> NDArray[np.bool_]:
    """(n, n) symmetric matrix: True where two labels share a clique (the diagonal stays False)."""
    m = np.zeros((n, n), bool)
    for c in cliques:
        m[np.ix_(c, c)] = True
    np.fill_diagonal(m, False)
    return m


# ------------------------------------------------------------------------------------------ frame sources


def pipeline_frames(
    settings: Settings, camera: str, *, progress: bool = True
) -> Iterator[tuple[ImageBGR, FrameTracks]]:
    """Run the camera's detector + tracker (appearance re-linking off, no head) over its source."""
    from daemon.config import with_overrides
    from daemon.sources import open_source
    from daemon.worker import build_pipeline

    settings = with_overrides(settings, camera, {"tracker.relink_window": 0, "embedder.head": None})
    name, cam = settings.camera(camera)
    pipeline = build_pipeline(settings, name, cam)
    with open_source(cam.source, name=name) as src:
        bar = tqdm(total=src.frame_count, unit="frame", desc=f"tracklets {name}", disable=not progress)
        with bar:
            for r in pipeline.stream(src, overlap=settings.runtime.detect_ahead):
                ids = np.array([t.track_id for t in r.update.tracks], np.int64)
                box_index = np.array([t.det_index for t in r.update.tracks], np.int64)
                d = r.detections
                yield (
                    r.frame.image,
                    FrameTracks(r.frame.index, d.xyxy, d.scores, ids, box_index, r.embeddings),
                )
                bar.update(1)


def mot_file_frames(
    video: Path, tracks: MotTracks, *, max_frames: int = 0, progress: bool = True
) -> Iterator[tuple[ImageBGR, FrameTracks]]:
    """Frames of ``video`` with the tracks of a MOT results file (1-based frames; conf used as the score)."""
    from daemon.config import SourceConfig
    from daemon.motio import rows_by_frame, xywh_to_xyxy
    from daemon.sources import open_source

    by_frame = rows_by_frame(tracks.frame)
    cfg = SourceConfig(uri=str(video), kind="file", max_frames=max_frames)
    with open_source(cfg) as src:
        for frame in tqdm(src, total=src.frame_count, unit="frame", desc="tracklets", disable=not progress):
            rows = by_frame.get(frame.index + 1, np.zeros(0, np.intp))
            boxes = xywh_to_xyxy(tracks.xywh[rows])
            ft = FrameTracks(
                frame.index,
                boxes,
                tracks.conf[rows].astype(np.float32),
                tracks.track_id[rows].astype(np.int64),
                np.arange(len(rows), dtype=np.int64),
            )
            yield frame.image, ft


def mine_tracklets(
    frames: Iterable[tuple[ImageBGR, FrameTracks]], embedder: CropEmbedder, cfg: AdaptConfig
) -> Tracklets:
    """Sample features of every track in ``frames`` (stops early once ``max_samples`` are held)."""
    miner = TrackletMiner(cfg, embedder)
    for image, ft in frames:
        miner.add(image, ft)
        if miner.full:
            logger.warning("tracklet mining stopped at frame %d: %d features held", ft.index, cfg.max_samples)
            break
    return miner.result()


# ------------------------------------------------------------------------------------------ feature cache


def cache_key(**parts: Any) -> str:
    """A short stable hash of JSON-able ``parts`` (what the cached features depend on)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_identity(path: Path) -> dict[str, Any]:
    """Path, size and modification time of a file (a changed file misses the cache)."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def source_identity(path: Path | None) -> dict[str, Any] | None:
    """What a tracklet cache of the source read at ``path`` (``sources.local_path``) is keyed on: a video
    file's ``file_identity``, an image folder's path and its images' names, sizes and modification times (an
    image added, removed or replaced misses the cache); None for a stream, a webcam or a remote file, whose
    frames are others at each run, so that nothing of theirs is cached."""
    from daemon.sources import list_images

    if path is None:
        return None
    if path.is_file():
        return file_identity(path)
    if not path.is_dir():
        return None
    images = []
    for image in list_images(path):
        st = image.stat()
        images.append([image.name, st.st_size, st.st_mtime_ns])
    return {"path": str(path.resolve()), "images": cache_key(images=images)}


def save_tracklets(t: Tracklets, path: Path) -> None:
    """Cache mined tracklets as an .npz (cliques padded with -1), written whole or not at all (``atomic_write``:
    a temporary file of its own beside it, so two runs writing one cache at once do not mix theirs)."""
    width = max((len(c) for c in t.cliques), default=0)
    padded = np.full((len(t.cliques), width), -1, np.int64)
    for i, c in enumerate(t.cliques):
        padded[i, : len(c)] = c

    def write(fh: BinaryIO) -> None:
        np.savez(
            fh,
            version=np.int64(CACHE_VERSION),
            features=t.features,
            labels=t.labels,
            frames=t.frames,
            track_ids=t.track_ids,
            cliques=padded,
            num_tracks=np.int64(t.num_tracks),
            frames_read=np.int64(t.frames_read),
        )

    atomic_write(path, write)


def load_tracklets(path: Path) -> Tracklets | None:
    """Cached tracklets, or None (with a warning) when the file is unreadable or of another version."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION:
                return None
            cliques = tuple(row[row >= 0] for row in z["cliques"])
            n = int(z["num_tracks"])
            return Tracklets(
                z["features"].astype(np.float32),
                z["labels"],
                z["frames"],
                z["track_ids"],
                cooccurrence(cliques, n),
                cliques,
                int(z["frames_read"]),
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a copy cut short, a bad disk
        logger.warning("ignoring unreadable feature cache %s: %s", path, e)
        return None


_CACHE_FILE = re.compile(r"tracklets-[0-9a-f]{20}\.npz")  # collect_tracklets's names


def remove_cache_leftovers(folder: Path) -> Leftovers:
    """The temporary files of tracklet caches (``tracklets-<key>.npz``) that adapt runs killed while they wrote
    them left in the cache ``folder`` (``atomic_write``'s), removed once ``LEFTOVER_AGE_S`` old: no lock is
    taken, and another adapt run may be writing one now (seconds); nothing else there."""
    before = time.time() - LEFTOVER_AGE_S
    return remove_leftovers(folder, lambda target: _CACHE_FILE.fullmatch(target) is not None, before=before)


_OLD_CACHE_TEMP = re.compile(r"tracklets-[0-9a-f]{20}\.tmp\.npz")  # save_tracklets's one name before 90a64e0


def remove_old_cache_temporaries(folder: Path) -> Leftovers:
    """The temporary files earlier releases wrote every tracklet cache through (``tracklets-<key>.tmp.npz``, one
    fixed name, no lock), left in the cache ``folder`` by a run killed while it wrote one, removed once a day
    old (``tempdirs.remove_old_files``: an older release's run may be writing one now); nothing else there."""
    return remove_old_files(folder, _OLD_CACHE_TEMP.fullmatch)


def cached_tracklets(path: Path | None, make: Any) -> Tracklets:
    """``make()``'s tracklets, read from / written to ``path`` when given (the leftovers of killed writers in its
    folder removed first: ``remove_cache_leftovers``, and earlier releases': ``remove_old_cache_temporaries``)."""
    if path is not None:
        removed = remove_cache_leftovers(path.parent)
        if removed.files:
            logger.info("%s", removed.left_in(path.parent))
        old = remove_old_cache_temporaries(path.parent)
        if old.files:
            logger.info("%s", old.left_in(path.parent, EARLIER_RELEASE))
    if path is not None and path.is_file():
        hit = load_tracklets(path)
        if hit is not None:
            logger.info("tracklet features from cache %s", path)
            return hit
    result: Tracklets = make()
    if path is not None:
        try:
            save_tracklets(result, path)
        except OSError as e:  # the cache spares the next run its mining; this run goes on without it
            logger.warning(
                "cannot write the tracklet cache %s: %s; going on without it (--cache-dir, --no-cache)",
                path,
                e.strerror or e,
            )
    return result


# ================================================================================================ batches


def _rows_by_label(labels: IntArray) -> list[NDArray[np.intp]]:
    n = int(labels.max()) + 1 if len(labels) else 0
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n)]


def _draw(rows: NDArray[np.intp], k: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """``k`` rows of one identity: without replacement when it has enough, else with."""
    return rng.choice(rows, size=k, replace=len(rows) < k)


class BatchSampler:
    """Identity-balanced batches (P identities x K samples) from labelled features or tracklets.

    ``clique_batch`` takes the identities of ``cliques_per_batch`` random co-occurrence cliques; the
    returned ``valid`` mask says which pairs the loss may use (same identity, or known to co-occur).
    ``labelled_batch`` takes P random labels; every pair is valid (distinct labels are distinct people).
    """

    def __init__(self, labels: IntArray, cfg: AdaptConfig, rng: np.random.Generator) -> None:
        self.labels = labels
        self.cfg = cfg
        self.rng = rng
        self.rows = _rows_by_label(labels)

    def _take(self, identities: NDArray[np.int64]) -> tuple[NDArray[np.intp], IntArray]:
        k = self.cfg.samples_per_track
        if len(identities) > self.cfg.tracks_per_batch:
            identities = self.rng.choice(identities, size=self.cfg.tracks_per_batch, replace=False)
        idx = np.concatenate([_draw(self.rows[int(i)], k, self.rng) for i in identities])
        return idx, self.labels[idx]

    def labelled_batch(self) -> tuple[NDArray[np.intp], IntArray]:
        ids = np.arange(len(self.rows), dtype=np.int64)
        return self._take(ids)

    def clique_batch(
        self, cliques: Sequence[IntArray], cooccur: NDArray[np.bool_]
    ) -> tuple[NDArray[np.intp], IntArray, NDArray[np.bool_]]:
        picks = self.rng.choice(
            len(cliques), size=min(self.cfg.cliques_per_batch, len(cliques)), replace=False
        )
        ids = np.unique(np.concatenate([cliques[int(i)] for i in picks]))
        idx, labels = self._take(ids)
        return idx, labels, valid_pairs(labels, cooccur)


def valid_pairs(labels: IntArray, cooccur: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(B, B): True where the loss may use a pair: same identity, or two identities known to co-occur."""
    same = labels[:, None] == labels[None, :]
    return np.asarray(same | cooccur[np.ix_(labels, labels)], dtype=bool)


# ================================================================================================ training


def supcon_loss(
    z: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) on L2-normalised ``z`` (B, D).

    For anchor i: positives are the other rows of its label; the softmax runs over every other row j with
    ``valid[i, j]`` (all rows when ``valid`` is None). Anchors without a positive, or without any valid
    non-positive, are left out; the result is the mean over the remaining anchors (0 when none).
    """
    import torch

    b = z.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=z.device)
    valid_m = torch.ones_like(eye) if valid is None else valid.bool()
    valid_m = valid_m & ~eye
    pos = (labels[:, None] == labels[None, :]) & ~eye & valid_m
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(~valid_m, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos.sum(dim=1)
    has_neg = (valid_m & ~pos).any(dim=1)
    use = (n_pos > 0) & has_neg
    if not bool(use.any()):
        return z.sum() * 0.0
    mean_log_prob_pos = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1) / n_pos.clamp(min=1)
    return -(mean_log_prob_pos[use]).mean()


def dim_problem(cfg: AdaptConfig, input_dim: int) -> str | None:
    """Why a head of ``cfg.dim`` outputs cannot be trained on ``input_dim``-d features (None: it can): its
    linear branch starts as their principal directions, of which there are ``input_dim`` at most."""
    if cfg.dim <= input_dim:
        return None
    return f"a head projects the embedder's {input_dim}-d features to {input_dim} dimensions at most"


def init_head_arrays(
    features: FloatArray, cfg: AdaptConfig, rng: np.random.Generator
) -> dict[str, FloatArray]:
    """Starting weights: mean of ``features``, top-``dim`` principal directions as w0, a zero MLP branch."""
    d = features.shape[1]
    mean = features.mean(axis=0).astype(np.float32)
    # right singular vectors of the centred data = principal directions, strongest first
    _, _, vt = np.linalg.svd(features - mean, full_matrices=False)
    w0 = vt[: cfg.dim].T
    if w0.shape[1] < cfg.dim:  # fewer features than dims: fill with random orthogonal directions
        extra = np.linalg.qr(rng.standard_normal((d, cfg.dim)))[0][:, w0.shape[1] :]
        w0 = np.concatenate([w0, extra], axis=1)
    w1 = rng.standard_normal((d, cfg.hidden)) * np.sqrt(2.0 / d)
    return {
        "mean": mean,
        "w0": w0.astype(np.float32),
        "w1": w1.astype(np.float32),
        "b1": np.zeros(cfg.hidden, np.float32),
        "w2": np.zeros((cfg.hidden, cfg.dim), np.float32),
        "b2": np.zeros(cfg.dim, np.float32),
    }


def _torch_head(arrays: dict[str, FloatArray], dropout: float) -> Any:
    import torch

    def param(name: str, grad: bool = True) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.from_numpy(arrays[name].copy()), requires_grad=grad)

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mean = param("mean", grad=False)
            self.w0, self.w1, self.b1 = param("w0"), param("w1"), param("b1")
            self.w2, self.b2 = param("w2"), param("b2")
            self.drop = torch.nn.Dropout(dropout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = self.drop(x - self.mean)
            z = c @ self.w0 + torch.relu(c @ self.w1 + self.b1) @ self.w2 + self.b2
            return torch.nn.functional.normalize(z, dim=1)

    return Head()


@dataclass(frozen=True, slots=True)
class TrainReport:
    """What training did: steps, the loss at the start and end (means over 10 % of the steps), seconds."""

    steps: int
    loss_start: float
    loss_end: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "loss_start": round(self.loss_start, 4),
            "loss_end": round(self.loss_end, 4),
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True, slots=True)
class _Source:
    """One training source: features, a batch sampler, and (tracklets only) the co-occurrence cliques."""

    features: FloatArray
    sampler: BatchSampler
    cliques: tuple[IntArray, ...] | None = None
    cooccur: NDArray[np.bool_] | None = None

    def batch(self) -> tuple[NDArray[np.intp], IntArray, NDArray[np.bool_] | None]:
        if self.cliques is None or self.cooccur is None:
            idx, labels = self.sampler.labelled_batch()
            return idx, labels, None
        return self.sampler.clique_batch(self.cliques, self.cooccur)


def _sources(
    tracklets: Tracklets | None,
    reference: LabelledFeatures | None,
    cfg: AdaptConfig,
    rng: np.random.Generator,
) -> list[_Source]:
    out: list[_Source] = []
    if tracklets is not None and tracklets.cliques:
        sampler = BatchSampler(tracklets.labels, cfg, rng)
        out.append(_Source(tracklets.features, sampler, tracklets.cliques, tracklets.cooccur))
    elif tracklets is not None:
        logger.warning("no two trainable tracks were ever seen together: tracklets give no negatives")
    lack = None if reference is None else _reference_lack(reference)
    if reference is not None and lack is None:
        out.append(_Source(reference.features, BatchSampler(reference.labels, cfg, rng)))
    elif lack is not None:
        logger.warning("the reference folder %s", lack)
    return out


def _reference_lack(reference: LabelledFeatures) -> str | None:
    """What keeps a labelled reference set from training (None: it has a positive pair and a negative)."""
    if len(reference.names) < 2:
        return "holds one label only: it gives no negatives"
    if np.bincount(reference.labels).max() < 2:
        return "has no label with two images: it gives no positives"
    return None


def train_head(
    tracklets: Tracklets | None,
    reference: LabelledFeatures | None,
    base: BaseModelInfo,
    cfg: AdaptConfig,
    *,
    progress: bool = True,
) -> tuple[ProjectionHead, TrainReport]:
    """Train a head on tracklets and/or a labelled reference set (seeded; see the module docstring)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster than several fighting over the cores
    try:
        return _train(tracklets, reference, base, cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    tracklets: Tracklets | None,
    reference: LabelledFeatures | None,
    base: BaseModelInfo,
    cfg: AdaptConfig,
    progress: bool,
) -> tuple[ProjectionHead, TrainReport]:
    import torch

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    sources = _sources(tracklets, reference, cfg, rng)
    if not sources:
        raise DataError(
            "nothing to train on: no co-occurring tracks and no reference folder with 2+ labels, one of them "
            "with 2+ images"
        )
    allf = np.concatenate([s.features for s in sources])
    problem = dim_problem(cfg, allf.shape[1])
    if problem is not None:
        raise DataError(f"dim {cfg.dim}: {problem}")
    head = _torch_head(init_head_arrays(allf, cfg, rng), cfg.dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    feats = [torch.from_numpy(np.ascontiguousarray(s.features)) for s in sources]
    losses: list[float] = []
    start = time.perf_counter()
    head.train()
    for _ in tqdm(range(cfg.steps), desc="train", unit="step", disable=not progress):
        loss = sum(
            (_source_loss(head, s, f, cfg) for s, f in zip(sources, feats, strict=True)), torch.zeros(())
        )
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    head.eval()
    report = _report(losses, time.perf_counter() - start)
    arrays = {k: getattr(head, k).detach().numpy().astype(np.float32) for k in HEAD_ARRAYS}
    meta = _meta(base, cfg, tracklets, reference, report)
    return ProjectionHead.from_arrays(arrays, meta), report


def _source_loss(head: Any, source: _Source, feats: torch.Tensor, cfg: AdaptConfig) -> torch.Tensor:
    import torch

    idx, labels, valid = source.batch()
    z = head(feats[torch.from_numpy(idx)])
    v = None if valid is None else torch.from_numpy(valid)
    loss: torch.Tensor = supcon_loss(z, torch.from_numpy(labels), v, cfg.temperature)
    return loss


def _report(losses: list[float], seconds: float) -> TrainReport:
    w = max(1, len(losses) // 10)
    return TrainReport(len(losses), float(np.mean(losses[:w])), float(np.mean(losses[-w:])), seconds)


def _meta(
    base: BaseModelInfo,
    cfg: AdaptConfig,
    tracklets: Tracklets | None,
    reference: LabelledFeatures | None,
    report: TrainReport,
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if tracklets is not None:
        data["tracklets"] = tracklets.summary()
    if reference is not None:
        data["reference"] = {"images": len(reference.labels), "labels": len(reference.names)}
    return {
        "base_model": base.name,
        "base_sha256": base.sha256,
        "input_size": list(base.input_size),
        "flip_average": base.flip_average,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "training": {"data": data, "report": report.as_dict(), "config": cfg.model_dump()},
    }


# ================================================================================================ command


@dataclass(frozen=True, slots=True)
class AdaptRequest:
    """What ``reid-daemon adapt`` was asked: where the data is and where the head goes."""

    out: Path
    reference: Path | None = None
    tracklets: bool = True
    tracks_file: Path | None = None
    max_frames: int = 0
    cache_dir: Path | None = None
    progress: bool = True
    # mine these cameras (one head for a fleet); empty: the one camera asked for
    cameras: tuple[str, ...] = ()
    naming: EnrollConfig = field(default_factory=EnrollConfig)  # how reference file names give labels


@dataclass(frozen=True, slots=True)
class AdaptResult:
    """The saved head and what went into it."""

    path: Path
    head: ProjectionHead
    report: TrainReport
    tracklets: Tracklets | None
    reference: LabelledFeatures | None

    def lines(self) -> list[str]:
        out = [f"head: {self.path} ({self.head.input_dim} -> {self.head.output_dim}-d)"]
        if self.tracklets is not None:
            s = self.tracklets.summary()
            out.append(
                f"tracklets: {s['samples']} samples of {s['tracks']} tracks, {s['cliques']} co-occurrence "
                f"cliques, {s['co_occurring_pairs']} co-occurring pairs, {s['frames_read']} frames read"
            )
        if self.reference is not None:
            out.append(
                f"reference: {len(self.reference.labels)} images of {len(self.reference.names)} labels"
            )
        r = self.report
        out.append(
            f"training: {r.steps} steps, loss {r.loss_start:.3f} -> {r.loss_end:.3f}, {r.seconds:.1f} s"
        )
        return out


def base_info(embedder: Any, name: str, model_path: Path) -> BaseModelInfo:
    """Identity of the frozen embedder (model file hash, dim, crop size) recorded in a head."""
    cfg = embedder.cfg
    return BaseModelInfo(
        name, file_sha256(model_path), int(embedder.dim), tuple(cfg.input_size), bool(cfg.flip_average)
    )


def run_adapt(settings: Settings, camera: str | None, req: AdaptRequest, cfg: AdaptConfig) -> AdaptResult:
    """Mine (or read from cache) the training features, train the head and save it."""
    from daemon.config import with_overrides
    from daemon.embed import OnnxEmbedder

    name, cam = settings.camera(camera)
    if cam.embedder.type != "onnx":
        raise ConfigError(
            f"adapt trains a head for embedder.type 'onnx', camera {name} has {cam.embedder.type!r}"
        )
    if not req.tracklets and req.reference is None:
        raise ConfigError("nothing to train on: give --reference FOLDER, or leave tracklet mining on")
    _check_out(req.out)
    ecfg = cam.embedder.model_copy(update={"head": None})
    embedder = OnnxEmbedder(ecfg, settings.runtime, settings.models_dir)
    base = base_info(embedder, ecfg.model, embedder.model_path)
    problem = dim_problem(cfg, base.input_dim)
    if problem is not None:  # before the mining: the head could not start from its features
        raise ConfigError(f"--dim {cfg.dim}: {problem} (embedder model {base.name!r})")
    reference = _reference(req, embedder)
    tracklets = None
    if req.tracklets:
        parts = []
        for cam_name in req.cameras or (name,):
            _check_same_embedder(settings, name, cam_name)
            if req.max_frames:
                settings = with_overrides(settings, cam_name, {"source.max_frames": req.max_frames})
            parts.append(
                collect_tracklets(
                    settings,
                    cam_name,
                    embedder,
                    base,
                    cfg,
                    tracks_file=req.tracks_file,
                    cache_dir=req.cache_dir,
                    progress=req.progress,
                )
            )
        tracklets = parts[0] if len(parts) == 1 else merge_tracklets(parts)
    head, report = train_head(tracklets, reference, base, cfg, progress=req.progress)
    try:
        path = save_head(head, req.out)
    except OSError as e:  # the disk filled up while it trained, say
        raise DataError(f"cannot save the head as {req.out}: {e.strerror or e}") from e
    return AdaptResult(path, head, report, tracklets, reference)


def _check_out(out: Path) -> None:
    """ConfigError naming ``--out`` when the head could not be written there, before minutes of mining and
    training: a folder, a file where its folder would be, a folder not writable."""
    problem = output_file_problem(out)
    if problem == "is a folder":
        raise ConfigError(f"--out {out} is a folder: give the head's file (.npz)")
    if problem is not None:
        raise ConfigError(f"--out {out}: {problem}")


_EMBEDDING_FIELDS: Final = ("type", "model", "input_size", "flip_average", "colour_norm", "detail_height")


def _check_same_embedder(settings: Settings, first: str, other: str) -> None:
    """DataError unless camera ``other`` embeds crops exactly as camera ``first`` does (one head for both)."""
    a = settings.cameras[first].embedder.model_dump(include=set(_EMBEDDING_FIELDS))
    b = settings.cameras[other].embedder.model_dump(include=set(_EMBEDDING_FIELDS))
    if a != b:
        diff = sorted(k for k in a if a[k] != b[k])
        raise DataError(
            f"cameras {first} and {other} embed differently ({', '.join(diff)}): one head cannot serve both"
        )


def _reference(req: AdaptRequest, embedder: CropEmbedder) -> LabelledFeatures | None:
    if req.reference is None:
        return None
    paths, labels = list_reference(req.reference, req.naming)
    return reference_features(paths, labels, embedder, progress=req.progress)


def collect_tracklets(
    settings: Settings,
    camera: str,
    embedder: CropEmbedder,
    base: BaseModelInfo,
    cfg: AdaptConfig,
    *,
    tracks_file: Path | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Tracklets:
    """Tracklet features of the camera's source (its ``max_frames`` and ``stride`` apply), cached.

    Tracks come from our detector and tracker, or from ``tracks_file`` (MOT results) read beside the video.
    The cache key covers the video (path, size, mtime; an image folder's images: ``source_identity``), the
    tracks file, the model hash and crop size, the detector and tracker settings, the frame limits and the
    mining fields of ``cfg``; a live or remote source is not cached.
    """
    from daemon.motio import read_results
    from daemon.sources import local_path

    cam = settings.cameras[camera]
    local = local_path(cam.source)
    video = local or Path(cam.source.uri)  # a file:// URI names the file it decodes to
    if tracks_file is not None and not Path(tracks_file).is_file():
        raise DataError(f"{tracks_file}: file not found")  # before its size and mtime go into the cache key
    source = source_identity(local)
    if source is None and cache_dir is not None:
        logger.info("%s: a live or remote source's tracklets are mined afresh, not cached", cam.source.uri)
        cache_dir = None
    key = cache_key(
        base=base.sha256,
        size=base.input_size,
        flip=base.flip_average,
        crops=cam.embedder.model_dump(include={"colour_norm", "detail_height"}),
        mining=cfg.model_dump(include=set(MINING_FIELDS)),
        video=source,
        tracks=file_identity(tracks_file) if tracks_file else None,
        detector=None if tracks_file else cam.detector.model_dump(mode="json"),
        tracker=None if tracks_file else cam.tracker.model_dump(mode="json"),
        max_frames=cam.source.max_frames,
        stride=cam.source.stride,
    )
    path = None if cache_dir is None else Path(cache_dir) / f"tracklets-{key}.npz"

    def make() -> Tracklets:
        if tracks_file is not None:
            results = read_results(tracks_file)
            frames = mot_file_frames(video, results, max_frames=cam.source.max_frames, progress=progress)
        else:
            frames = pipeline_frames(settings, camera, progress=progress)
        return mine_tracklets(frames, embedder, cfg)

    return cached_tracklets(path, make)
