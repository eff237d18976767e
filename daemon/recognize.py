"""Check a gallery, recognise people against it, and search images or a video for one person.

* ``verify(gallery)``: leave-one-out over every reference. Each row is matched against all OTHER rows: it
  self-matches when its best match carries its own label. A copy of the row under its own label (the same
  image enrolled twice) is left out too, and counted: matching it would check nothing. Per reference: best
  correct and best wrong similarity and their ``margin``; per label: the self-match rate (a label with one
  image cannot be checked: ``rate`` None); overall rate; the most confusable label pairs (highest
  cross-label similarity); a threshold that would separate correct from wrong matches when one exists; and
  plain advice.
  Cost O(N^2 D) in blocks of bounded memory: meant for reference galleries, not millions of rows.
* ``recognize(...)``: embed an image (whole, given boxes, or detected people) and return the gallery's top-k
  matches at or above the threshold for each crop.
* ``search(...)``: run the detector over a folder of images or a video, embed every person and keep the
  best hits (similarity to the query >= threshold), best first (of equal ones the earlier found, kept first
  when the limit is reached), with the image path or frame index and box;
  ``out`` writes one annotated crop per hit and ``hits.json``, listed in ``SEARCH_MANIFEST``; what an earlier
  search wrote there (and no other file) is removed first.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import math
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

from daemon.config import RecognitionConfig
from daemon.embed import embedder_signature
from daemon.embedding import (
    Box,
    CropRef,
    EmbeddingResult,
    EmbedOptions,
    StageClock,
    StrPath,
    Timings,
    embed,
    is_image_file,
    is_utf8,
    iter_frames,
)
from daemon.errors import DataError
from daemon.gallery import Gallery, Match, clamp_similarity, meets
from daemon.outputs import outlined_text
from daemon.sources import is_text_file
from daemon.types import Detector, Embedder, FloatArray, Frame, ImageBGR

logger = logging.getLogger(__name__)

BLOCK_ELEMENTS: Final = 1 << 22
"""verify computes similarities in row blocks of at most this many values (16 MiB of float32)."""
MAX_ADVICE_ITEMS: Final = 5
"""Advice lists at most this many references or pairs per kind of problem."""
LOW_RATE: Final = 0.5
"""Below this self-match rate verify blames the embedder as a whole rather than single references."""
COPY_SIMILARITY: Final = 0.9999
"""Two rows of one label at least this similar are one image enrolled twice (``enroll --append`` of a folder
already in the gallery): verify leaves such copies out of each other's check, which they would pass trivially."""
_RECOGNITION: Final = RecognitionConfig()
"""The defaults of SearchOptions and recognize: the config's, never a second set."""


# ---------------------------------------------------------------------------------------------- verify


@dataclass(frozen=True, slots=True)
class ReferenceCheck:
    """Leave-one-out result of gallery row ``index``.

    ``self_match`` is None when no other row has the label (cannot be checked). ``best_*`` is the best match
    among the other rows; ``best_correct`` / ``best_wrong`` the best of the same / other labels (None when
    there is none; ``wrong_label`` says whose); ``margin`` = best_correct - best_wrong. ``copies``: rows of
    its label that are this image again (left out of the check).
    """

    index: int
    label: str
    self_match: bool | None
    best_label: str | None
    best_similarity: float | None
    best_correct: float | None
    best_wrong: float | None
    wrong_label: str | None
    copies: int = 0

    @property
    def margin(self) -> float | None:
        if self.best_correct is None or self.best_wrong is None:
            return None
        return self.best_correct - self.best_wrong


@dataclass(frozen=True, slots=True)
class LabelCheck:
    """Per label: ``references`` rows, ``checked`` (0 for a single image), ``matched`` self-matches."""

    label: str
    references: int
    checked: int
    matched: int
    worst_margin: float | None

    @property
    def rate(self) -> float | None:
        return self.matched / self.checked if self.checked else None


@dataclass(frozen=True, slots=True)
class ConfusablePair:
    """Two labels and their most similar pair of references (rows ``index_a``, ``index_b``)."""

    label_a: str
    label_b: str
    similarity: float
    index_a: int
    index_b: int


@dataclass(frozen=True)
class VerifyReport:
    """Leave-one-out verification of a gallery (see the module doc)."""

    references: tuple[ReferenceCheck, ...]
    labels: tuple[LabelCheck, ...]
    pairs: tuple[ConfusablePair, ...]
    threshold: float
    margin_warn: float
    advice: tuple[str, ...] = field(default=())

    @property
    def checked(self) -> int:
        return sum(1 for r in self.references if r.self_match is not None)

    @property
    def matched(self) -> int:
        return sum(1 for r in self.references if r.self_match)

    @property
    def rate(self) -> float | None:
        """Self-match rate over the references that can be checked (None when none can)."""
        return self.matched / self.checked if self.checked else None

    @property
    def suggested_threshold(self) -> float | None:
        """Midway between the highest wrong and the lowest correct best match, where the gallery, comparing as
        it does (``gallery.meets``), would not match that wrong one at it."""
        correct = [r.best_correct for r in self.references if r.best_correct is not None]
        wrong = [r.best_wrong for r in self.references if r.best_wrong is not None]
        if not correct or not wrong:
            return None
        midway = (max(wrong) + min(correct)) / 2
        return None if meets(max(wrong), midway) else midway

    def as_dict(self) -> dict[str, Any]:
        return {
            "references": len(self.references),
            "labels": len(self.labels),
            "checked": self.checked,
            "matched": self.matched,
            "rate": self.rate,
            "threshold": self.threshold,
            "suggested_threshold": self.suggested_threshold,
            "per_label": [
                {
                    "label": lc.label,
                    "references": lc.references,
                    "checked": lc.checked,
                    "matched": lc.matched,
                    "rate": lc.rate,
                    "worst_margin": lc.worst_margin,
                }
                for lc in self.labels
            ],
            "per_reference": [
                {
                    "index": r.index,
                    "label": r.label,
                    "self_match": r.self_match,
                    "best_label": r.best_label,
                    "best_similarity": r.best_similarity,
                    "best_correct": r.best_correct,
                    "best_wrong": r.best_wrong,
                    "wrong_label": r.wrong_label,
                    "margin": r.margin,
                    "copies": r.copies,
                }
                for r in self.references
            ],
            "confusable_pairs": [
                {"a": p.label_a, "b": p.label_b, "similarity": p.similarity, "rows": [p.index_a, p.index_b]}
                for p in self.pairs
            ],
            "advice": list(self.advice),
        }

    def text(self) -> str:
        rate = "n/a" if self.rate is None else f"{self.rate:.1%}"
        lines = [
            f"{len(self.references)} references of {len(self.labels)} labels; self-match {self.matched}/"
            f"{self.checked} ({rate}); gallery threshold {self.threshold:.3f}",
            f"{'label':24s} {'refs':>4s} {'self-match':>10s} {'worst margin':>12s}",
        ]
        for lc in self.labels:
            r = "single" if lc.rate is None else f"{lc.matched}/{lc.checked}"
            m = "-" if lc.worst_margin is None else f"{lc.worst_margin:+.3f}"
            lines.append(f"{lc.label[:24]:24s} {lc.references:4d} {r:>10s} {m:>12s}")
        if self.pairs:
            lines.append("most confusable label pairs:")
            lines += [f"  {p.label_a} / {p.label_b}: {p.similarity:.3f}" for p in self.pairs]
        if self.suggested_threshold is not None:
            lines.append(
                f"a threshold of {self.suggested_threshold:.3f} separates every correct from every wrong match"
            )
        lines += [f"advice: {a}" for a in self.advice]
        return "\n".join(lines)


class _Scan:
    """Blockwise leave-one-out statistics of a gallery's rows."""

    def __init__(self, emb: FloatArray, label_ids: NDArray[np.intp], n_labels: int, top: int) -> None:
        self.emb, self.ids, self.n_labels, self.top = emb, label_ids, n_labels, top
        n = len(emb)
        self.order = np.argsort(label_ids, kind="stable")
        sorted_ids = label_ids[self.order]
        self.starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        self.best = np.full(n, -1, np.intp)
        self.best_sim = np.full(n, -np.inf, np.float32)
        self.correct = np.full(n, -np.inf, np.float32)
        self.wrong = np.full(n, -np.inf, np.float32)
        self.wrong_idx = np.full(n, -1, np.intp)
        self.copies = np.zeros(n, np.intp)
        self.pairs: dict[tuple[int, int], float] = {}

    def run(self) -> None:
        n = len(self.emb)
        block = max(1, BLOCK_ELEMENTS // max(n, 1))
        for b0 in range(0, n, block):
            self._block(b0, min(n, b0 + block))

    def _block(self, b0: int, b1: int) -> None:
        rows = np.arange(b1 - b0)
        s = self.emb[b0:b1] @ self.emb.T
        s[rows, np.arange(b0, b1)] = -np.inf
        own = self.ids[b0:b1]
        same = self.ids[None, :] == own[:, None]
        copy = same & (s >= COPY_SIMILARITY)
        self.copies[b0:b1] = copy.sum(axis=1)
        s[copy] = -np.inf
        self.best[b0:b1] = np.argmax(s, axis=1)
        self.best_sim[b0:b1] = s[rows, self.best[b0:b1]]
        self.correct[b0:b1] = np.where(same, s, -np.inf).max(axis=1)
        wrong = np.where(same, -np.inf, s)
        self.wrong_idx[b0:b1] = np.argmax(wrong, axis=1)
        self.wrong[b0:b1] = wrong[rows, self.wrong_idx[b0:b1]]
        if self.top and self.n_labels > 1:
            self._pairs(np.maximum.reduceat(wrong[:, self.order], self.starts, axis=1), own)

    def _pairs(self, per_label: NDArray[np.float32], own: NDArray[np.intp]) -> None:
        k = min(self.top, self.n_labels - 1)
        cand = np.argpartition(-per_label, k - 1, axis=1)[:, :k]
        for r, labels in enumerate(cand):
            for b in labels:
                v = float(per_label[r, b])
                if math.isfinite(v):
                    key = (min(int(own[r]), int(b)), max(int(own[r]), int(b)))
                    self.pairs[key] = max(v, self.pairs.get(key, -math.inf))


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def verify(gallery: Gallery, *, config: RecognitionConfig | None = None) -> VerifyReport:
    """Leave-one-out verification of every reference (see the module doc); DataError on an empty gallery."""
    cfg = config or RecognitionConfig()
    if len(gallery) == 0:
        raise DataError(gallery.of_file("the gallery is empty: enrol references first"))
    labels = list(gallery.labels)
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    ids = np.asarray([index[x] for x in labels], dtype=np.intp)
    emb = np.asarray(gallery.embeddings, dtype=np.float32)
    top = max(cfg.confusable_pairs, MAX_ADVICE_ITEMS)  # the advice names pairs however few the report lists
    scan = _Scan(emb, ids, len(names), top)
    scan.run()
    refs = tuple(_reference(i, labels, scan) for i in range(len(labels)))
    per_label = tuple(_label_check(name, [r for r in refs if r.label == name]) for name in names)
    pairs = _top_pairs(scan, emb, ids, names, top)
    shown = pairs[: cfg.confusable_pairs]
    report = VerifyReport(refs, per_label, shown, float(gallery.threshold), cfg.margin_warn)
    return replace(report, advice=advise(report, pairs))


def _reference(i: int, labels: Sequence[str], scan: _Scan) -> ReferenceCheck:
    correct = _finite(float(scan.correct[i]))
    wrong = _finite(float(scan.wrong[i]))
    best_sim = _finite(float(scan.best_sim[i]))  # None: no other row (but copies) to match
    best = -1 if best_sim is None else int(scan.best[i])
    return ReferenceCheck(
        index=i,
        label=labels[i],
        self_match=None if correct is None else labels[best] == labels[i],
        best_label=None if best < 0 else labels[best],
        best_similarity=best_sim,
        best_correct=correct,
        best_wrong=wrong,
        wrong_label=None if wrong is None else labels[int(scan.wrong_idx[i])],
        copies=int(scan.copies[i]),
    )


def _label_check(label: str, refs: Sequence[ReferenceCheck]) -> LabelCheck:
    checked = [r for r in refs if r.self_match is not None]
    margins = [m for r in refs if (m := r.margin) is not None]
    return LabelCheck(
        label, len(refs), len(checked), sum(1 for r in checked if r.self_match), min(margins, default=None)
    )


def _top_pairs(
    scan: _Scan, emb: FloatArray, ids: NDArray[np.intp], names: Sequence[str], top: int
) -> tuple[ConfusablePair, ...]:
    best = sorted(scan.pairs.items(), key=lambda kv: -kv[1])[:top]
    out = []
    for (a, b), sim in best:
        ra, rb = np.flatnonzero(ids == a), np.flatnonzero(ids == b)
        s = emb[ra] @ emb[rb].T
        i, j = np.unravel_index(int(np.argmax(s)), s.shape)
        out.append(ConfusablePair(names[a], names[b], float(sim), int(ra[i]), int(rb[j])))
    return tuple(out)


def advise(report: VerifyReport, pairs: Sequence[ConfusablePair] | None = None) -> tuple[str, ...]:
    """Plain advice from a verification: what is wrong with the references and what to do about it. ``pairs``:
    the most similar label pairs, best first, the threshold advice draws on (default: those the report lists,
    which ``confusable_pairs`` may cut shorter than the advice names)."""
    advice = [
        *_advise_copies(report),
        *_advise_singles(report),
        *_advise_failures(report),
        *_advise_margins(report),
        *_advise_threshold(report, report.pairs if pairs is None else pairs),
    ]
    if not advice and report.checked:
        worst = min((m for r in report.references if (m := r.margin) is not None), default=None)
        tail = "" if worst is None else f", worst margin {worst:+.3f}"
        advice.append(f"every checked reference matches its own label{tail}: the gallery looks sound")
    return tuple(advice)


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(repr(x) for x in items[:MAX_ADVICE_ITEMS])
    return shown + (f" and {len(items) - MAX_ADVICE_ITEMS} more" if len(items) > MAX_ADVICE_ITEMS else "")


def _advise_copies(report: VerifyReport) -> list[str]:
    copied = [r for r in report.references if r.copies]
    if not copied:
        return []
    labels = sorted({r.label for r in copied})
    return [
        f"{len(copied)} reference(s) of {_names(labels)} are the same image as another of their label (enrolled "
        "twice, e.g. enroll --append of a folder already in the gallery): copies are left out of each other's "
        "check; enrol the folder afresh (enroll --replace, not --append)"
    ]


def _advise_singles(report: VerifyReport) -> list[str]:
    singles = [lc.label for lc in report.labels if lc.checked == 0]
    if not singles:
        return []
    return [
        f"{len(singles)} label(s) have a single reference ({_names(singles)}) and cannot self-match: add a "
        "second, different photo of each (another day, angle or camera)"
    ]


def _advise_failures(report: VerifyReport) -> list[str]:
    failed = [r for r in report.references if r.self_match is False]
    rate = report.rate
    if rate is not None and rate < LOW_RATE:
        return [
            f"only {rate:.0%} of the references self-match ({len(failed)} are closer to another label): the "
            "embedder does not tell these people apart; use ReID-trained weights (embedder.type: boxmot) or "
            "adapt the head to this site (reid-daemon adapt)"
        ]
    out = [
        f"reference row {r.index} of {r.label!r} is closer to {r.best_label!r} ({r.best_similarity:.3f}) than to "
        f"its own label ({r.best_correct:.3f}): check the file is the right person, or replace it with a clearer "
        "photo"
        for r in failed[:MAX_ADVICE_ITEMS]
    ]
    if len(failed) > MAX_ADVICE_ITEMS:
        out.append(
            f"... and {len(failed) - MAX_ADVICE_ITEMS} more references closer to another label (--json)"
        )
    return out


def _advise_margins(report: VerifyReport) -> list[str]:
    seen: dict[tuple[str, str], float] = {}
    for r in report.references:
        m = r.margin
        if m is not None and 0 <= m < report.margin_warn and r.wrong_label is not None:
            key = (min(r.label, r.wrong_label), max(r.label, r.wrong_label))
            seen[key] = min(m, seen.get(key, math.inf))
    worst = sorted(seen.items(), key=lambda kv: kv[1])[:MAX_ADVICE_ITEMS]
    return [
        f"margin < {report.margin_warn:g} between {a!r} and {b!r} ({m:+.3f}): these two are near-duplicates to "
        "the embedder; add more varied references or adapt the head (reid-daemon adapt)"
        for (a, b), m in worst
    ]


def _advise_threshold(report: VerifyReport, pairs: Sequence[ConfusablePair]) -> list[str]:
    t = report.threshold  # compared as the gallery compares (``gallery.meets``: within SIMILARITY_TOL)
    low = sorted(
        {r.label for r in report.references if r.best_correct is not None and not meets(r.best_correct, t)}
    )
    high = [p for p in pairs if meets(p.similarity, t)]
    out = []
    if low:
        out.append(
            f"{_names(low)}: some references match their own label only below the threshold {t:.3f}, so a new "
            "photo may go unrecognised; add references or lower the threshold"
        )
    if high:
        named = ", ".join(f"{p.label_a!r}/{p.label_b!r} {p.similarity:.3f}" for p in high[:MAX_ADVICE_ITEMS])
        out.append(
            f"different labels reach the threshold {t:.3f} ({named}): a query may match the wrong person"
        )
    suggested = report.suggested_threshold
    if (low or high) and suggested is not None:
        out.append(f"a threshold of {suggested:.3f} would separate every correct from every wrong match here")
    return out


# ---------------------------------------------------------------------------------------------- recognise


@dataclass(frozen=True, slots=True)
class Recognition:
    """The gallery's matches (best first, >= threshold, at most k) for one query crop."""

    crop: CropRef
    matches: tuple[Match, ...]
    duration_ms: float

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None


@dataclass(frozen=True)
class RecognizeReport:
    """One :class:`Recognition` per query crop, the k and threshold used, and the query images in which the
    detector found no person (``no_person``: they have no crop, so no recognition)."""

    recognitions: tuple[Recognition, ...]
    k: int
    threshold: float
    embed_ms: float
    no_person: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "threshold": self.threshold,
            "embed_ms": self.embed_ms,
            "queries": [
                {
                    **r.crop.as_dict(),
                    "search_ms": r.duration_ms,
                    "matches": [
                        {"label": m.label, "similarity": m.similarity, "row": m.index} for m in r.matches
                    ],
                }
                for r in self.recognitions
            ],
            "no_person": list(self.no_person),
        }

    def text(self) -> str:
        lines = []
        for r in self.recognitions:
            box = ",".join(f"{v:.0f}" for v in r.crop.box)
            where = f"{r.crop.source or '<image>'} [{box}]"
            if not r.matches:
                lines.append(f"{where}: no match >= {self.threshold:.3f}")
                continue
            found = ", ".join(f"{m.label} {m.similarity:.3f}" for m in r.matches)
            lines.append(f"{where}: {found}")
        lines += [f"{source or '<image>'}: no person detected" for source in self.no_person]
        return "\n".join(lines) if lines else "no query crop (no person detected)"


def check_dims(gallery: Gallery, dim: int, what: str) -> None:
    """DataError, naming the gallery's file, unless ``what`` (vectors of width ``dim``) is of its width."""
    if gallery.dim != dim:
        raise DataError(
            gallery.of_file(
                f"the gallery holds {gallery.dim}-d embeddings but {what} is {dim}-d: use the model the gallery "
                "was enrolled with"
            )
        )


def check_embedder(gallery: Gallery, embedder: Embedder, what: str) -> None:
    """DataError, naming the gallery's file, unless ``embedder``'s vectors can go with ``gallery``'s: the same
    width and, where both say, the same model and head (two models of one width would match nonsense without
    an error)."""
    check_dims(gallery, embedder.dim, what)
    try:
        gallery.check_embedder(embedder_signature(embedder), what)
    except DataError as e:
        raise DataError(gallery.of_file(str(e))) from e


def recognize_embeddings(
    result: EmbeddingResult, gallery: Gallery, *, k: int, threshold: float | None = None
) -> RecognizeReport:
    """Search ``gallery`` for every row of an embedding result."""
    check_dims(gallery, result.dim, "the query")
    found = gallery.search_batch(result.embeddings, k=k, threshold=threshold) if len(result) else []
    recs = tuple(Recognition(c, r.matches, r.duration_ms) for c, r in zip(result.crops, found, strict=True))
    t = float(gallery.threshold if threshold is None else threshold)
    return RecognizeReport(recs, k, t, result.meta.timings.total_ms)


def recognize(
    embedder: Embedder,
    gallery: Gallery,
    query: ImageBGR | StrPath | Sequence[StrPath],
    *,
    k: int | None = None,
    threshold: float | None = None,
    boxes: NDArray[Any] | None = None,
    options: EmbedOptions | None = None,
) -> RecognizeReport:
    """Embed ``query`` (an image or crop, image files; ``boxes`` or ``options.detector`` pick the people) and
    return the gallery's top-``k`` matches at or above ``threshold`` (default: the gallery's) per crop; DataError
    naming the gallery's file when it is empty."""
    check_embedder(gallery, embedder, "the embedder's output")
    if len(gallery) == 0:  # every query would be 'no match', as if no one enrolled were in it
        raise DataError(gallery.of_file("the gallery is empty: enrol references first (reid-daemon enroll)"))
    if not isinstance(query, np.ndarray):
        refuse_videos(_query_sources(query), gallery.file)
    result = embed(embedder, query, boxes=boxes, options=options)
    report = recognize_embeddings(result, gallery, k=k or _RECOGNITION.top_k, threshold=threshold)
    seen = {c.source for c in result.crops}
    return replace(report, no_person=tuple(s for s in _query_sources(query) if s not in seen))


def refuse_videos(paths: Sequence[StrPath], gallery: StrPath | None) -> None:
    """DataError when a query of ``recognize`` is a video: it takes images, and read_image would only say that it
    cannot decode one (embed, given one video alone, would take some of its frames). The error names the
    commands that take a video (``search``, ``run``), with the ``gallery`` file where there is one."""
    for video in (Path(p) for p in paths):
        if _is_video(video):
            raise DataError(
                f"{video} is a video: recognize takes images (crops, or photos with --detect). To find the "
                f"gallery's people in it: reid-daemon search {video} --gallery {gallery or 'GALLERY'} --label "
                f"NAME; to track everyone in it: reid-daemon run --source {video}"
            )


def _is_video(path: Path) -> bool:
    """A file that is no image (by its name or its bytes) and that OpenCV plays, a frame at least (a text file
    plays too, as its characters: not a video here)."""
    if not path.is_file() or is_image_file(path) or not is_utf8(path):  # OpenCV cannot be given such a name
        return False
    if cv2.haveImageReader(str(path)) or is_text_file(path):
        return False
    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened() and cap.grab())
    finally:
        cap.release()


def _query_sources(query: ImageBGR | StrPath | Sequence[StrPath]) -> list[str]:
    """The source name each query image's crops carry ("" for an image in memory)."""
    if isinstance(query, np.ndarray):
        return [""]
    if isinstance(query, str | PathLike):
        return [str(query)]
    return [str(q) for q in query]


# ---------------------------------------------------------------------------------------------- search


@dataclass(frozen=True, slots=True)
class Hit:
    """A person found by ``search``: image ``source`` and video ``frame`` (-1 for an image), ``box``
    x0,y0,x1,y1, detector ``score``, ``similarity`` to the query (best over the query rows)."""

    source: str
    frame: int
    box: Box
    score: float
    similarity: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frame": self.frame,
            "box": list(self.box),
            "score": self.score,
            "similarity": self.similarity,
        }


@dataclass(frozen=True)
class SearchReport:
    """The best hits (best first), what was scanned, skipped images, written files, timings."""

    hits: tuple[Hit, ...]
    target: Path
    scanned: int
    people: int
    threshold: float
    limit: int
    skipped: tuple[tuple[str, str], ...]
    written: tuple[Path, ...]
    timings: Timings

    @property
    def duration_ms(self) -> float:
        return self.timings.total_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": str(self.target),
            "scanned": self.scanned,
            "people": self.people,
            "threshold": self.threshold,
            "limit": self.limit,
            "timings_ms": self.timings.as_dict(),
            "hits": [h.as_dict() for h in self.hits],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "written": [str(p) for p in self.written],
        }

    def text(self) -> str:
        t, n = self.timings, max(1, self.scanned)
        lines = [
            f"{len(self.hits)} hit(s) >= {self.threshold:.3f} among {self.people} people in {self.scanned} "
            f"images or frames of {self.target}",
            f"{t.total_ms / 1000:.1f} s: read {t.read_ms / n:.0f}, detect {t.detect_ms / n:.0f}, embed "
            f"{t.embed_ms / n:.0f} ms per image or frame",
        ]
        for rank, h in enumerate(self.hits, 1):
            where = h.source if h.frame < 0 else f"frame {h.frame}"
            box = ",".join(f"{v:.0f}" for v in h.box)
            lines.append(f"{rank:4d}. {h.similarity:.3f}  {where}  box {box}  (det {h.score:.2f})")
        lines += [f"skipped {p}: {r}" for p, r in self.skipped]
        if self.written:
            lines.append(f"wrote {len(self.written)} file(s) into {self.written[0].parent}")
        return "\n".join(lines)


@dataclass(frozen=True)
class SearchOptions:
    """``search`` settings: threshold and hit limit, video stride, sub-folders, progress, output folder; the
    stride and the context of the hits' crops default to ``RecognitionConfig``'s (``video_every``,
    ``crop_context``)."""

    threshold: float
    limit: int
    every: int = _RECOGNITION.video_every
    max_frames: int = 0
    recursive: bool = False
    progress: bool = False
    out: Path | None = None
    crop_context: float = _RECOGNITION.crop_context


class _Best:
    """The ``limit`` best hits seen so far, each with a context crop for ``out`` (bounded memory); of equal
    hits the earlier found is kept and ranked first. The heap's bottom is the worst hit, the latest of equals."""

    def __init__(self, limit: int, keep_crops: bool, context: float) -> None:
        self.limit, self.keep_crops, self.context = limit, keep_crops, context
        self.heap: list[tuple[float, int, Hit, ImageBGR | None, Box]] = []
        self.counter = itertools.count()

    def offer(self, hit: Hit, image: ImageBGR) -> None:
        if len(self.heap) >= self.limit and hit.similarity <= self.heap[0][0]:
            return
        crop, rel = context_crop(image, hit.box, self.context) if self.keep_crops else (None, hit.box)
        item = (hit.similarity, -next(self.counter), hit, crop, rel)
        if len(self.heap) < self.limit:
            heapq.heappush(self.heap, item)
        else:
            heapq.heapreplace(self.heap, item)

    def ranked(self) -> list[tuple[Hit, ImageBGR | None, Box]]:
        return [(h, c, r) for _, _, h, c, r in sorted(self.heap, key=lambda t: (-t[0], -t[1]))]


def context_crop(image: ImageBGR, box: Box, context: float) -> tuple[ImageBGR, Box]:
    """A copy of ``box`` grown by ``context`` of its size on each side (clipped), and the box inside it."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * context, (y1 - y0) * context
    cx0, cy0 = int(max(0, math.floor(x0 - mx))), int(max(0, math.floor(y0 - my)))
    cx1, cy1 = int(min(w, math.ceil(x1 + mx))), int(min(h, math.ceil(y1 + my)))
    cx1, cy1 = max(cx1, cx0 + 1), max(cy1, cy0 + 1)
    crop = image[cy0:cy1, cx0:cx1].copy()
    return crop, (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)


def search(
    query: FloatArray,
    target: StrPath,
    embedder: Embedder,
    detector: Detector,
    options: SearchOptions,
) -> SearchReport:
    """Find every person in ``target`` (folder of images, one image, or a video) who matches ``query``.

    ``query`` is (Q, D) L2-normalised rows (one person's views); a person's similarity is the best over them.
    Unreadable images in a folder are skipped and reported; a missing target raises DataError.
    """
    clock = StageClock()
    q = _query_rows(query, embedder.dim)
    path = Path(target)
    if not path.exists():
        raise DataError(f"search target not found: {path}")
    video = not (path.is_dir() or is_image_file(path))
    if options.out is not None:
        check_out_folder(options.out)  # before the work, not after it
    best = _Best(options.limit, options.out is not None, options.crop_context)
    skipped: list[tuple[str, str]] = []
    scanned = people = 0
    frames = iter_frames(
        path,
        every=options.every,
        max_frames=options.max_frames,
        recursive=options.recursive,
        progress=options.progress,
        on_error=lambda p, reason: skipped.append((str(p), reason)),
    )
    with closing(frames):  # stops the video's decoding thread even when a frame fails
        while True:
            t = time.perf_counter()
            frame = next(frames, None)
            clock.add("read_ms", t)
            if frame is None:
                break
            scanned += 1
            people += _scan_frame(frame, q, embedder, detector, options.threshold, video, best, clock)
    ranked = best.ranked()
    written = write_hits(ranked, options.out) if options.out is not None else ()
    return SearchReport(
        tuple(h for h, _, _ in ranked),
        path,
        scanned,
        people,
        options.threshold,
        options.limit,
        tuple(skipped),
        written,
        clock.timings(),
    )


def _scan_frame(
    frame: Frame,
    q: FloatArray,
    embedder: Embedder,
    detector: Detector,
    threshold: float,
    video: bool,
    best: _Best,
    clock: StageClock,
) -> int:
    """Offer every detected person of ``frame`` matching ``q`` to ``best``; the number of people found."""
    t = time.perf_counter()
    dets = detector.detect(frame)
    t = clock.add("detect_ms", t)
    if len(dets) == 0:
        return 0
    sims = (embedder.embed(frame.image, dets.xyxy) @ q.T).max(axis=1)
    clock.add("embed_ms", t)
    for i, similarity in enumerate(sims.tolist()):  # Python floats: compared as the gallery compares
        if not meets(similarity, threshold):
            continue
        x0, y0, x1, y1 = (float(v) for v in dets.xyxy[i])
        hit = Hit(
            frame.source,
            frame.index if video else -1,
            (x0, y0, x1, y1),
            float(dets.scores[i]),
            clamp_similarity(similarity),
        )
        best.offer(hit, frame.image)
    return len(dets)


def _query_rows(query: FloatArray, dim: int) -> FloatArray:
    q = np.asarray(query, dtype=np.float32)
    q = q.reshape(1, -1) if q.ndim == 1 else q
    if q.ndim != 2 or q.shape[0] == 0:
        raise ValueError(f"the query must be (D,) or (Q, D) embeddings, got shape {q.shape}")
    if q.shape[1] != dim:
        raise DataError(f"the query embeddings are {q.shape[1]}-d but the embedder gives {dim}-d")
    if not np.isfinite(q).all():
        raise ValueError("the query embeddings hold NaN or infinite values")
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if (norms <= 0).any():
        raise ValueError("a query embedding is the zero vector")
    out: FloatArray = (q / norms).astype(np.float32)
    return out


HITS_INDEX: Final = "hits.json"
SEARCH_MANIFEST: Final = ".reid-daemon-search.json"
"""Written by ``search --out`` beside its crops and ``hits.json``: the name and SHA-256 of each file it wrote
there, so that the next search into the folder removes those files, where they are unchanged, and nothing else
(a user's file named like a crop stays)."""


def check_out_folder(out: Path) -> None:
    """DataError, before a search into ``out``, when ``hits.json`` there is not a search's (a file of the user's of
    that name, which the search would write over)."""
    index = out / HITS_INDEX
    if index.exists() and not (_ours(out, HITS_INDEX, _manifest(out)) or _old_index(index)):
        raise DataError(
            f"{index} was not written by a search (it is not listed in {SEARCH_MANIFEST}, nor a search's list of "
            "hits), and search --out writes its hits.json there: choose another folder, or move that file"
        )


def write_hits(ranked: Sequence[tuple[Hit, ImageBGR | None, Box]], out: Path) -> tuple[Path, ...]:
    """One annotated crop per hit (``001_0.912_frame000123.jpg``; ``..._2.jpg`` where a file of that name is
    there) and ``hits.json`` into ``out``, listed in ``SEARCH_MANIFEST``. The files an earlier search listed
    there, and unchanged since, are removed first (they would sit among these as if they were hits); no other."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot write the hits into {out}: {e}") from e
    check_out_folder(out)
    _remove_earlier(out)
    _say_earlier_version(out)
    written: list[Path] = []
    files: list[str | None] = []
    digests: dict[str, str] = {}
    for rank, (hit, crop, rel) in enumerate(ranked, 1):
        files.append(None)
        if crop is None:
            continue
        where = f"frame{hit.frame:06d}" if hit.frame >= 0 else _safe_stem(hit.source)
        path = _free_name(out, f"{rank:03d}_{hit.similarity:.3f}_{where}")
        digests[path.name] = _write_file(
            path, _jpeg(path, annotate(crop, rel, f"#{rank} {hit.similarity:.3f}"))
        )
        written.append(path)
        files[-1] = path.name
    index = out / HITS_INDEX
    pairs = enumerate(zip(ranked, files, strict=True), 1)
    doc = [{"rank": rank, **h.as_dict(), "file": f} for rank, ((h, _, _), f) in pairs]
    digests[HITS_INDEX] = _write_file(index, json.dumps(doc, indent=2).encode("utf-8"))
    manifest = {"v": 1, "files": digests}
    _write_file(out / SEARCH_MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
    return (*written, index)


def _remove_earlier(out: Path) -> None:
    """Remove the crops an earlier search listed in ``out``'s manifest, those unchanged since (a file the user
    replaced one with, or put under such a name, is the user's: left)."""
    earlier = _manifest(out)
    for name in sorted(earlier):
        if name != HITS_INDEX and _ours(out, name, earlier):
            try:
                (out / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise DataError(
                    f"cannot remove an earlier search's crop {out / name}: {e.strerror or e}"
                ) from e


def _say_earlier_version(out: Path) -> None:
    """Warn that the crops a search of a version before the manifest wrote into ``out`` stay, naming those its
    ``hits.json`` (about to be replaced, after which nothing lists them) names and ``out`` still holds: it
    recorded no digest of them, so a crop the user has replaced or edited since, under its name, cannot be told
    from the search's own, and none is removed (a user's own file never is)."""
    index = out / HITS_INDEX
    if _ours(out, HITS_INDEX, _manifest(out)) or not _old_index(index):
        return
    doc = json.loads(index.read_text(encoding="utf-8"))
    listed = {h.get("file") for h in doc}
    names = sorted(
        n for n in listed if isinstance(n, str) and n and n == Path(n).name and (out / n).is_file()
    )
    logger.warning(
        "%s holds the hits of a search of an earlier version, which listed no digest of its crops: %s stay "
        "(remove them by hand if they are not yours to keep); this search's crops are written beside them",
        out,
        ", ".join(names) if names else "its crops (its hits.json names none of them)",
    )


def _manifest(out: Path) -> dict[str, str]:
    """The files (name -> SHA-256) an earlier search wrote into ``out``; {} where it lists none (none there, or
    not readable as one: nothing is removed then)."""
    try:
        files = json.loads((out / SEARCH_MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}


def _ours(out: Path, name: str, listed: dict[str, str]) -> bool:
    """Whether ``out / name`` is a plain file a search wrote, as it wrote it (its SHA-256 the one ``listed``)."""
    if not name or name != Path(name).name or name.startswith(".") or name not in listed:
        return False
    path = out / name
    try:
        if not path.is_file() or path.is_symlink():
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() == listed[name]
    except OSError:
        return False


def _old_index(path: Path) -> bool:
    """Whether ``path`` is the hits.json of a search of a version before the manifest: a JSON list of hits, each
    an object with its rank and similarity."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, list) and all(
        isinstance(h, dict) and {"rank", "similarity"} <= h.keys() for h in doc
    )


def _free_name(out: Path, stem: str) -> Path:
    """``out / stem.jpg``, or ``stem_N.jpg`` (N = 2, 3, ...) where a file of that name is there: never over one."""
    path, n = out / f"{stem}.jpg", 1
    while path.exists() or path.is_symlink():
        n += 1
        path = out / f"{stem}_{n}.jpg"
    return path


def _jpeg(path: Path, image: ImageBGR) -> bytes:
    """``image`` encoded as JPEG by OpenCV (written by Python: cv2.imwrite kills the process, a segfault, on a
    path that is not UTF-8, an --out folder named in Latin-1)."""
    ok, jpeg = cv2.imencode(".jpg", image)
    if not ok:
        raise DataError(f"cannot write {path}: the image could not be encoded as JPEG")
    return bytes(jpeg.tobytes())


def _write_file(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path``; its SHA-256. DataError naming the file when it cannot be written."""
    try:
        path.write_bytes(data)
    except OSError as e:
        raise DataError(f"cannot write {path}: {e.strerror or e}") from e
    return hashlib.sha256(data).hexdigest()


def _safe_stem(source: str) -> str:
    stem = Path(source).stem or "image"
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)[:60]


def annotate(crop: ImageBGR, box: Box, caption: str) -> ImageBGR:
    """A copy of ``crop`` with ``box`` drawn and ``caption`` above it (upscaled when tiny, to stay legible)."""
    scale = max(1.0, 160.0 / max(1, crop.shape[0]))
    img = crop if scale == 1.0 else cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    img = np.array(img, dtype=np.uint8, order="C")
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 255, 0), 2)
    outlined_text(img, caption, (2, 14), 0.45, outline=3)
    out: ImageBGR = img
    return out


def query_embeddings(
    embedder: Embedder, images: Sequence[StrPath], options: EmbedOptions | None = None
) -> EmbeddingResult:
    """Embed query image files (whole images, or the largest person when ``options.detector`` is set)."""
    opts = options or EmbedOptions()
    result = embed(embedder, list(images), options=opts)
    if len(result) == 0:
        raise DataError(f"no person found in the query image(s) {', '.join(str(p) for p in images)}")
    return result


__all__ = [
    "ConfusablePair",
    "Hit",
    "LabelCheck",
    "Recognition",
    "RecognizeReport",
    "ReferenceCheck",
    "SearchOptions",
    "SearchReport",
    "VerifyReport",
    "advise",
    "query_embeddings",
    "recognize",
    "recognize_embeddings",
    "search",
    "verify",
]
