"""Retrieval evaluation of an embedder: mAP and CMC (rank-k) on a query/gallery split of ground-truth crops.

Metrics (``evaluate``), per query, over the gallery minus its junk:

* the gallery is ranked by cosine similarity to the query (descending; ties keep gallery order);
* junk = gallery crops of the query's identity within ``junk_frames`` frames of the query (near-duplicates
  of the query, like Market-1501's same-camera junk rule); they are removed from the ranking;
* AP = the mean, over the query's remaining true matches, of the precision at the rank of each match
  (non-interpolated, as torchreid computes it); CMC rank-k = 1 when a true match is among the first k;
* a query with no true match left after the junk rule is skipped (counted in ``skipped``);
  mAP and CMC are means over the scored queries.

Split from MOTChallenge ground truth (``build_split``), over 0-based frames ``[start, end)``:

1. rows kept: consider=1, box height >= ``min_height`` px;
2. the range is cut into time segments of ``segment`` frames; rows in even segments (0, 2, 4, ...) are
   query candidates, rows in odd segments are gallery candidates, so a query and its gallery matches always
   come from different time segments;
3. queries: candidates on every ``query_stride``-th frame of the range; gallery: candidates on every
   ``gallery_stride``-th frame (strides are counted from ``start``);
4. at scoring time, the junk rule above also drops gallery matches near a segment edge that lie within
   ``junk_frames`` of a query on the other side of the edge.

Identities seen only in gallery segments act as distractors. ``adapt_bench.py`` uses this on PETS09-S2L1
with the head trained on frames before ``start`` only (see benchmarks/RESULTS.md for the numbers).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from daemon.config import SourceConfig
from daemon.errors import DataError
from daemon.motio import MotGroundTruth, xywh_to_xyxy
from daemon.sources import open_source
from daemon.types import FloatArray, ImageBGR

IntArray = NDArray[np.int64]
_QUERY_CHUNK = 256  # queries scored per matrix product (bounds memory to chunk x gallery)


class SplitConfig(BaseModel):
    """How a query/gallery split is cut from ground truth (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int = Field(400, ge=0, description="First 0-based frame of the evaluated part.")
    end: int = Field(0, ge=0, description="End (exclusive) of the evaluated part; 0 = the last gt frame.")
    segment: int = Field(
        50, ge=1, le=100_000, description="Length of the alternating query/gallery time segments (frames)."
    )
    query_stride: int = Field(5, ge=1, le=10_000, description="Take queries on every Nth frame.")
    gallery_stride: int = Field(5, ge=1, le=10_000, description="Take gallery crops on every Nth frame.")
    min_height: float = Field(50.0, ge=0, le=10_000, description="Skip boxes shorter than this (px).")
    junk_frames: int = Field(
        25, ge=0, le=100_000, description="Same-identity gallery crops this close to a query are ignored."
    )

    @model_validator(mode="after")
    def _range(self) -> SplitConfig:
        if self.end and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start}), or 0")
        return self


@dataclass(frozen=True, slots=True)
class CropSet:
    """Boxes to embed: 0-based ``frames``, identity ``ids`` and ``xyxy`` pixels (float32), row-aligned."""

    frames: IntArray
    ids: IntArray
    xyxy: FloatArray

    def __post_init__(self) -> None:
        n = len(self.frames)
        if self.ids.shape != (n,) or self.xyxy.shape != (n, 4):
            raise ValueError(
                f"CropSet rows disagree: {n} frames, ids {self.ids.shape}, xyxy {self.xyxy.shape}"
            )

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True, slots=True)
class RetrievalSplit:
    """Query and gallery crops, and the junk window used when scoring them."""

    query: CropSet
    gallery: CropSet
    junk_frames: int

    def describe(self) -> str:
        q, g = self.query, self.gallery
        return (
            f"{len(q)} queries of {len(np.unique(q.ids))} identities, {len(g)} gallery crops of "
            f"{len(np.unique(g.ids))} identities (frames {_span(q.frames, g.frames)}; junk: same identity "
            f"within ±{self.junk_frames} frames)"
        )


def _span(a: IntArray, b: IntArray) -> str:
    both = np.concatenate([a, b])
    return f"{int(both.min())}-{int(both.max())}" if len(both) else "none"


def build_split(gt: MotGroundTruth, cfg: SplitConfig) -> RetrievalSplit:
    """Query/gallery crops from ground truth, as the module docstring describes (pure; no image read)."""
    frame0 = gt.frame - 1
    end = cfg.end or int(frame0.max(initial=-1)) + 1
    offset = frame0 - cfg.start
    keep = gt.consider & (frame0 >= cfg.start) & (frame0 < end) & (gt.xywh[:, 3] >= cfg.min_height)
    even = (offset // cfg.segment) % 2 == 0
    query = keep & even & (offset % cfg.query_stride == 0)
    gallery = keep & ~even & (offset % cfg.gallery_stride == 0)
    return RetrievalSplit(_crops(gt, frame0, query), _crops(gt, frame0, gallery), cfg.junk_frames)


def _crops(gt: MotGroundTruth, frame0: IntArray, rows: NDArray[np.bool_]) -> CropSet:
    return CropSet(
        frame0[rows].astype(np.int64), gt.track_id[rows].astype(np.int64), xywh_to_xyxy(gt.xywh[rows])
    )


# ------------------------------------------------------------------------------------------------ metrics


@dataclass(frozen=True, slots=True)
class RetrievalScore:
    """mAP and CMC (``cmc[k-1]`` = rank-k accuracy) over ``queries`` scored queries, fractions in 0..1."""

    mean_ap: float
    cmc: NDArray[np.float64]
    queries: int
    skipped: int

    @property
    def rank1(self) -> float:
        return float(self.cmc[0]) if len(self.cmc) else float("nan")

    def rank(self, k: int) -> float:
        return float(self.cmc[min(k, len(self.cmc)) - 1]) if len(self.cmc) else float("nan")

    def text(self) -> str:
        return (
            f"mAP {100 * self.mean_ap:5.1f}  rank-1 {100 * self.rank1:5.1f}  rank-5 {100 * self.rank(5):5.1f}"
            f"  ({self.queries} queries, {self.skipped} without a match skipped)"
        )


def average_precision(matches: NDArray[np.bool_]) -> float:
    """AP of one ranked list (``matches[k]``: the k-th ranked item is a true match); nan with no match."""
    hits = np.flatnonzero(matches)
    if len(hits) == 0:
        return float("nan")
    return float((np.arange(1, len(hits) + 1) / (hits + 1)).mean())


def _check_features(name: str, feats: FloatArray, ids: IntArray, frames: IntArray) -> None:
    if feats.ndim != 2 or ids.shape != (len(feats),) or frames.shape != (len(feats),):
        raise ValueError(f"{name}: features {feats.shape}, ids {ids.shape}, frames {frames.shape} disagree")
    if not np.isfinite(feats).all():
        raise ValueError(f"{name}: features hold NaN or infinity")


@dataclass(frozen=True, slots=True)
class Embedded:
    """Features of a crop set: L2-normalised (N, D) ``features`` with their ``ids`` and 0-based ``frames``."""

    features: FloatArray
    ids: IntArray
    frames: IntArray


def evaluate(query: Embedded, gallery: Embedded, junk_frames: int, max_rank: int = 20) -> RetrievalScore:
    """mAP and CMC up to ``max_rank`` of ``query`` against ``gallery`` (see the module docstring)."""
    _check_features("query", query.features, query.ids, query.frames)
    _check_features("gallery", gallery.features, gallery.ids, gallery.frames)
    if query.features.shape[1] != gallery.features.shape[1]:
        raise ValueError(f"query dim {query.features.shape[1]} != gallery dim {gallery.features.shape[1]}")
    aps: list[float] = []
    first_hits: list[int] = []
    for lo in range(0, len(query.ids), _QUERY_CHUNK):
        sims = query.features[lo : lo + _QUERY_CHUNK] @ gallery.features.T
        for row, sim in enumerate(sims):
            q = lo + row
            matches = _ranked_matches(sim, query.ids[q], query.frames[q], gallery, junk_frames)
            if matches.any():
                aps.append(average_precision(matches))
                first_hits.append(int(np.argmax(matches)))
    hits = np.asarray(first_hits, dtype=np.int64)
    cmc = np.array([(hits < k).mean() if len(hits) else np.nan for k in range(1, max_rank + 1)])
    mean_ap = float(np.mean(aps)) if aps else float("nan")
    return RetrievalScore(mean_ap, cmc, len(aps), len(query.ids) - len(aps))


def _ranked_matches(
    sim: NDArray[np.float32], qid: np.int64, qframe: np.int64, gallery: Embedded, junk_frames: int
) -> NDArray[np.bool_]:
    same = gallery.ids == qid
    junk = same & (np.abs(gallery.frames - qframe) <= junk_frames)
    keep = np.flatnonzero(~junk)
    order = keep[np.argsort(-sim[keep], kind="stable")]
    return np.asarray(same[order], dtype=bool)


# ------------------------------------------------------------------------------------------------ features


class CropEmbedder(Protocol):
    """What ``embed_crop_sets`` needs: boxes of a frame -> (N, D) L2-normalised float32."""

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray: ...


def boxes_by_frame(frames: IntArray) -> dict[int, NDArray[np.intp]]:
    """Row indices of each 0-based frame."""
    order = np.argsort(frames, kind="stable")
    values, starts = np.unique(frames[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    return {int(f): order[s:e] for f, s, e in zip(values, starts, ends, strict=True)}


def embed_crop_sets(
    video: Path, sets: Sequence[CropSet], embedder: CropEmbedder, *, progress: bool = True
) -> list[FloatArray]:
    """Features of every crop of ``sets``, reading ``video`` once in order up to the last frame needed."""
    frames = np.concatenate([s.frames for s in sets]) if sets else np.zeros(0, np.int64)
    boxes = np.concatenate([s.xyxy for s in sets]) if sets else np.zeros((0, 4), np.float32)
    out: list[FloatArray] = [np.zeros((0, 0), np.float32)] * len(frames)
    wanted = boxes_by_frame(frames)
    if wanted:
        _embed_frames(video, wanted, boxes, embedder, out, progress)
    feats = np.stack(out) if out else np.zeros((0, 0), np.float32)
    bounds = np.cumsum([0, *(len(s) for s in sets)])
    return [feats[a:b] for a, b in itertools.pairwise(bounds)]


def _embed_frames(
    video: Path,
    wanted: dict[int, NDArray[np.intp]],
    boxes: FloatArray,
    embedder: CropEmbedder,
    out: list[FloatArray],
    progress: bool,
) -> None:
    last = max(wanted)
    cfg = SourceConfig(uri=str(video), kind="file", max_frames=last + 1)
    seen = 0
    with (
        open_source(cfg) as src,
        tqdm(total=len(wanted), unit="frame", desc="embed", disable=not progress) as bar,
    ):
        for frame in src:
            rows = wanted.get(frame.index)
            if rows is not None:
                for r, f in zip(rows, embedder.embed(frame.image, boxes[rows]), strict=True):
                    out[int(r)] = f
                seen += 1
                bar.update(1)
    if seen != len(wanted):
        raise DataError(f"{video}: ended before frame {last} (the ground truth has boxes there)")
