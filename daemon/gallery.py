"""Labelled embedding gallery: several L2-normalised float32 vectors per label, top-k cosine search.

A pure in-memory core (no I/O except ``save`` / ``load``), safe to share between threads (one lock).

* Similarity is the dot product of normalised vectors, reported clamped to [-1, 1]; a match needs
  ``similarity >= threshold - SIMILARITY_TOL`` (``meets``: float32 rounding puts the cosine of an embedding
  with itself up to ~8 ulps either side of 1, so a threshold of 1.0 would otherwise miss the identical photo)
  and ``Match.distance`` is ``1 - similarity``. Inputs are validated (shape, NaN/inf, zero vector, empty label:
  ``ValueError`` naming the problem) and normalised on a copy, never in place.
* Rows: ``add`` appends, optionally with the ``source`` the row was made from (the reference image file
  ``serve`` kept for it), saved with the row; removing a row (eviction, ``remove``) moves the last row into
  the freed slot, so a row number is valid until the next change. ``Match.index`` is the row at search time.
* Per-label cap ``max_per_label``: when a label already holds that many rows, ``drop_oldest`` evicts its
  oldest row, ``drop_random`` a random one of its rows (seeded), and ``drop_latest`` rejects the new vector
  (``add`` then returns -1, ``add_many`` gives -1 for it).
* Search backend: ``exact`` is a matrix product + argpartition (BLAS held to ``blas_threads``); ``faiss`` is
  a FAISS index, ``auto`` switches to it from ``faiss_above`` rows (and back below half of that). The FAISS
  kind is ``pq`` (default: an exhaustive 4-bit product-quantisation fast scan whose best ``pq_candidates``
  are re-ranked with exact cosine; 1M x 512 rows: ~6 ms per query, recall@5 1.0, built in seconds) or
  ``hnsw`` (a graph: slow to build on 2 cores, and its recall fell to 0.8 at 1M clustered rows; see
  benchmarks/RESULTS.md). Neither deletes in place: a removed row becomes a tombstone that searches skip
  (HNSW filters it during the graph walk, PQ fetches extra candidates), and the index is rebuilt from the
  stored rows once ``rebuild_fraction`` of it is tombstones (PQ is also retrained when the gallery has grown
  4x). The index is brought up to date under the lock before every search, so no search sees a stale row;
  a query left with fewer than k live candidates is answered exactly. Every reported similarity is the exact
  cosine of the stored row.
* Files, chosen by suffix: ``.rdg`` (daemon/codec.py, gallery settings in the meta JSON), ``.npz``
  (``np.savez``, read with ``allow_pickle=False``) and ``.json``. Writes are atomic (temporary file in the
  same folder, fsync, rename); rows are written oldest first, so ages survive a round trip, with
  their sources when any row has one (a ``sources`` list beside the settings, one entry a row, null: none).
  A bad file gives ``DataError`` naming the file and the problem. A ``.json`` gallery records a sha256 of its
  content (``JSON_DIGEST``), checked when it is read, as the ``.rdg`` form's CRC32 is; one without it (written
  by hand, or by a version before it) is read unchecked.
* Several writers of one file (``serve``, ``enroll --append``): each read-modify-write holds the file's advisory
  lock (``locked``: ``.<name>.lock`` beside it; waited for a bounded time, the holder named past it), and
  ``latest`` reads the file again when another process wrote it since this copy read or wrote it (told by its
  inode, size and mtime), so no writer saves its copy over rows another added.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import socket
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import ValidationError

from daemon import codec
from daemon.config import GALLERY_SUFFIXES, LABEL_MAX_BYTES, GalleryConfig, looked_for
from daemon.embedding import atomic_write, npz_start_problem, read_only_problem
from daemon.errors import ConfigError, DataError, LockTimeout
from daemon.types import FloatArray

logger = logging.getLogger(__name__)

DropPolicy = Literal["drop_oldest", "drop_random", "drop_latest"]
IndexKind = Literal["auto", "exact", "faiss"]

FORMAT_TAG = "reid-daemon-gallery"
FORMAT_VERSION = 1
JSON_DIGEST = "sha256"  # the field of a .json gallery holding the checksum of the rest (_json_digest)
SUFFIXES = GALLERY_SUFFIXES
NORM_EPS = 1e-12
UNIT_TOL = 4e-7  # a row whose norm is this close to 1 counts as normalised already (float32 rounding)
SIMILARITY_TOL = 16 * 2.0**-24  # ~9.5e-7, 16 float32 ulps under 1: how far under a threshold a match may fall
_SIM_BLOCK = 1 << 24  # similarity values per block of a batched exact search (64 MiB of float32)
_LOAD_MAX_BYTES = 1 << 40  # raw payload bound when loading a gallery file (content is checked as it is read)
CROPS = "; crops "  # in an embedder signature, what comes before its crop settings (daemon.embed)
HEAD = " + head "  # in an embedder signature, what comes before a projection head's file and digest
_DEFAULTS = GalleryConfig()  # the constructor's defaults: the config's, never a second set


@dataclass(frozen=True)
class Match:
    """One gallery row that matched a query."""

    label: str
    similarity: float
    index: int  # row in the gallery at search time

    @property
    def distance(self) -> float:
        """Cosine distance, ``1 - similarity``."""
        return 1.0 - self.similarity


@dataclass(frozen=True)
class SearchResult:
    """Matches of one query, best first, only those ``>= threshold``, at most k."""

    matches: tuple[Match, ...]
    duration_ms: float

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None


OMP_WAIT_POLICY = "OMP_WAIT_POLICY"  # how FAISS's OpenMP threads wait for work, read as its runtime loads


def _import_faiss() -> Any:
    """FAISS, its OpenMP threads set to sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``) unless the user's
    environment says otherwise: spinning, OpenMP's default, took a 10k-row PQ build from ~2 s to ~55 s on two
    cores busy with other work (the embedder's threads beside it, benchmarks/RESULTS.md), as onnxruntime's
    spinning does, which ``runtime.allow_spinning`` turns off by default."""
    os.environ.setdefault(OMP_WAIT_POLICY, "PASSIVE")
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise ConfigError(f"gallery index 'faiss' needs the faiss-cpu package: {e}") from e
    return faiss


class _FaissIndex:
    """A FAISS index over gallery rows. An entry's id (node) is fixed when its vector is inserted; rows move
    (a removal fills its slot with the last row), so two maps link them.

    ``node_of_row[r]``: the node holding row r's vector (-1: not inserted yet); ``row_of_node[v]``: the row of
    node v (-1: deleted, a tombstone). Nodes are never removed from FAISS: a tombstone is left out of results
    and the index is rebuilt from the stored rows once ``rebuild_fraction`` of its nodes are tombstones.
    """

    def __init__(self, dim: int, cfg: GalleryConfig) -> None:
        self.faiss = _import_faiss()
        self.dim, self.cfg = dim, cfg
        self.index: Any = None
        self.node_of_row = np.full(0, -1, dtype=np.int64)
        self.row_of_node = np.full(0, -1, dtype=np.int64)
        self.alive = np.zeros(0, dtype=bool)
        self.tombstones = 0
        self.pending = 0
        self.builds = 0
        self.built_rows = 0

    @property
    def ntotal(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def appended(self, start: int, stop: int) -> None:
        """Rows ``start..stop-1`` were appended (inserted into the index at the next sync)."""
        self.node_of_row = _ensure(self.node_of_row, stop, -1)
        self.node_of_row[start:stop] = -1
        self.pending += stop - start

    def deleted(self, row: int, last: int) -> None:
        """Row ``row`` is gone and the last row ``last`` moves into its slot (when they differ)."""
        node = int(self.node_of_row[row])
        if node >= 0:
            self.row_of_node[node] = -1
            self.alive[node] = False
            self.tombstones += 1
            self._changed()
        else:
            self.pending -= 1
        if row != last:
            moved = int(self.node_of_row[last])
            self.node_of_row[row] = moved
            if moved >= 0:
                self.row_of_node[moved] = row
        self.node_of_row[last] = -1

    def sync(self, emb: FloatArray) -> None:
        """Bring the index up to date with the ``len(emb)`` rows: rebuild, or insert the pending rows."""
        if self.index is None or self._stale(len(emb)):
            self._rebuild(emb)
        elif self.pending:
            self._insert(emb, np.flatnonzero(self.node_of_row[: len(emb)] < 0))

    def _stale(self, rows: int) -> bool:
        return self.tombstones > self.cfg.rebuild_fraction * max(1, self.ntotal)

    def _rebuild(self, emb: FloatArray) -> None:
        t = time.perf_counter()
        self.index = self._new_index(emb)
        self.node_of_row = np.full(max(len(emb), len(self.node_of_row)), -1, dtype=np.int64)
        self.row_of_node = np.full(0, -1, dtype=np.int64)
        self.alive = np.zeros(0, dtype=bool)
        self.tombstones = 0
        self.builds += 1
        self.built_rows = len(emb)
        self._insert(emb, np.arange(len(emb)))
        if len(emb) >= 10_000:
            logger.info("built a FAISS index of %d rows in %.1f s", len(emb), time.perf_counter() - t)

    def _new_index(self, emb: FloatArray) -> Any:
        raise NotImplementedError

    def _insert(self, emb: FloatArray, rows: NDArray[np.intp]) -> None:
        base = self.ntotal
        if len(rows) == len(emb):  # every row (a build): no gathered copy of a large gallery
            self.index.add(np.ascontiguousarray(emb))
        elif len(rows):
            self.index.add(np.ascontiguousarray(emb[rows]))
        total = base + len(rows)
        self.row_of_node = _ensure(self.row_of_node, total, -1)
        self.alive = _ensure(self.alive, total, False)
        self.row_of_node[base:total] = rows
        self.alive[base:total] = True
        self.node_of_row[rows] = np.arange(base, total)
        self.pending = 0
        self._changed()

    def _changed(self) -> None:
        """Hook: the set of live nodes changed."""

    def search(self, queries: FloatArray, k: int) -> NDArray[np.int64]:
        """(B, k') candidate rows per query (k' >= k), -1 where none; the caller re-ranks them exactly."""
        raise NotImplementedError

    def _rows(self, nodes: NDArray[np.int64]) -> NDArray[np.int64]:
        rows: NDArray[np.int64] = np.where(nodes >= 0, self.row_of_node[np.maximum(nodes, 0)], -1)
        return rows

    def nbytes(self) -> int:
        return self.node_of_row.nbytes + self.row_of_node.nbytes + self.alive.nbytes


class _PQIndex(_FaissIndex):
    """Exhaustive 4-bit product-quantisation fast scan (``IndexPQFastScan``, inner product).

    Every code is scanned (no partition to miss), the best ``pq_candidates`` go back to the gallery, which
    re-ranks them with exact cosine. Tombstones are skipped by asking for more candidates (fast-scan takes no
    search-time filter). Below MIN_TRAIN rows a flat inner-product index stands in (PQ needs data to train).
    The quantiser is retrained at each rebuild, and a rebuild also happens once the gallery outgrows 4x the
    rows it was trained on.
    """

    MIN_TRAIN = 1024
    TRAIN_SAMPLE = 65_536

    def _stale(self, rows: int) -> bool:
        return super()._stale(rows) or rows > 4 * max(self.built_rows, self.MIN_TRAIN // 4)

    def _new_index(self, emb: FloatArray) -> Any:
        f = self.faiss
        if len(emb) < self.MIN_TRAIN:
            return f.IndexFlatIP(self.dim)
        m = max(d for d in range(1, min(self.cfg.pq_m, self.dim) + 1) if self.dim % d == 0)
        index = f.IndexPQFastScan(self.dim, m, 4, f.METRIC_INNER_PRODUCT)
        pick = np.random.default_rng(0).choice(len(emb), min(len(emb), self.TRAIN_SAMPLE), replace=False)
        index.train(np.ascontiguousarray(emb[np.sort(pick)]))
        return index

    def search(self, queries: FloatArray, k: int) -> NDArray[np.int64]:
        live = max(1, self.ntotal - self.tombstones)
        want = max(self.cfg.pq_candidates, k) * self.ntotal / live  # room for the tombstones among the hits
        _, nodes = self.index.search(np.ascontiguousarray(queries), min(self.ntotal, int(want) + 1))
        return self._rows(nodes)

    def nbytes(self) -> int:
        if self.index is None:
            return 0
        codes = self.index.codes.size() if hasattr(self.index, "codes") else 4 * self.dim * self.ntotal
        return int(codes) + super().nbytes()


class _HnswIndex(_FaissIndex):
    """HNSW graph (``IndexHNSWFlat``, inner product); tombstones are filtered during the graph search."""

    def __init__(self, dim: int, cfg: GalleryConfig) -> None:
        super().__init__(dim, cfg)
        self._bitmap: NDArray[np.uint8] | None = None
        self._selector: Any = None

    def _new_index(self, emb: FloatArray) -> Any:
        index = self.faiss.IndexHNSWFlat(self.dim, self.cfg.hnsw_m, self.faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.cfg.hnsw_ef_construction
        return index

    def _changed(self) -> None:
        self._selector = None

    def search(self, queries: FloatArray, k: int) -> NDArray[np.int64]:
        params = self.faiss.SearchParametersHNSW()
        params.efSearch = max(self.cfg.hnsw_ef_search, k)
        if self.tombstones:
            params.sel = self._filter()
        _, nodes = self.index.search(np.ascontiguousarray(queries), k, params=params)
        return self._rows(nodes)

    def _filter(self) -> Any:
        if self._selector is None:
            n = self.ntotal
            self._bitmap = np.packbits(self.alive[:n], bitorder="little")
            self._selector = self.faiss.IDSelectorBitmap(n, self.faiss.swig_ptr(self._bitmap))
        return self._selector

    def nbytes(self) -> int:
        """Vectors + graph links + the id maps (an estimate of what the index holds in memory)."""
        if self.index is None:
            return 0
        h = self.index.hnsw
        graph = 4 * int(h.neighbors.size()) + 4 * int(h.levels.size()) + 8 * int(h.offsets.size())
        return 4 * self.dim * self.ntotal + graph + super().nbytes()


def _ensure(a: NDArray[Any], size: int, fill: Any) -> NDArray[Any]:
    """``a`` grown (doubling) to hold at least ``size`` entries, new ones set to ``fill``."""
    if len(a) >= size:
        return a
    out = np.full(max(size, 2 * len(a), 64), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


class Gallery:
    """Labelled L2-normalised embeddings with top-k cosine search, per-label caps and persistence."""

    def __init__(
        self,
        dim: int,
        *,
        threshold: float = _DEFAULTS.threshold,
        max_per_label: int | None = _DEFAULTS.max_per_label,
        drop_policy: DropPolicy = _DEFAULTS.drop_policy,
        index: IndexKind = _DEFAULTS.index,
        faiss_above: int = _DEFAULTS.faiss_above,
        seed: int = _DEFAULTS.seed,
        tuning: GalleryConfig | None = None,
    ) -> None:
        """The arguments default to GalleryConfig's (``max_per_label=None``: no cap). ``tuning``: a GalleryConfig
        whose backend settings (faiss_kind, pq_*, hnsw_*, rebuild_fraction, blas_threads) are used; the arguments
        give the rest. Default: GalleryConfig's defaults."""
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= codec.MAX_DIM:
            raise ValueError(f"dim must be an integer in 1..{codec.MAX_DIM}, got {dim!r}")
        base = (tuning or GalleryConfig()).model_dump(exclude={"path"})
        given: dict[str, Any] = {"threshold": threshold, "max_per_label": max_per_label}
        given |= {"drop_policy": drop_policy, "index": index, "faiss_above": faiss_above, "seed": seed}
        try:
            self._cfg = GalleryConfig.model_validate(base | given)
        except ValidationError as e:
            raise ValueError(_validation_message(e)) from e
        self._dim = dim
        self._emb = np.empty((0, dim), dtype=np.float32)
        self._uid = np.empty(0, dtype=np.int64)
        self._labels: list[str] = []
        self._sources: list[str | None] = []  # row -> the file the row was made from, None: not known
        self._members: dict[str, set[int]] = {}
        self._n = 0
        self._next_uid = 0
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._faiss: _FaissIndex | None = None
        # what made the rows (daemon.embed.embedder_signature), saved with them; None: not known
        self.embedder: str | None = None
        self.file: Path | None = None  # the file ``load`` read it from
        self._seen: tuple[Path, FileStamp] | None = None  # the file as this copy last read or wrote it
        self._said_crops_unknown = False
        self._said_unrecorded = False
        if index == "faiss":
            _import_faiss()

    @classmethod
    def from_config(cls, cfg: GalleryConfig, dim: int) -> Gallery:
        """An empty gallery with the settings of ``cfg`` (``cfg.path`` is not loaded: use ``load``)."""
        return cls(
            dim,
            threshold=cfg.threshold,
            max_per_label=cfg.max_per_label,
            drop_policy=cfg.drop_policy,
            index=cfg.index,
            faiss_above=cfg.faiss_above,
            seed=cfg.seed,
            tuning=cfg,
        )

    # ------------------------------------------------------------------------------------------ properties

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def threshold(self) -> float:
        return self._cfg.threshold

    @property
    def config(self) -> GalleryConfig:
        """The gallery's settings as a GalleryConfig (``path`` unset)."""
        return self._cfg

    @property
    def labels(self) -> list[str]:
        """The label of every row, in row order."""
        with self._lock:
            return list(self._labels)

    @property
    def unique_labels(self) -> list[str]:
        with self._lock:
            return sorted(self._members)

    @property
    def embeddings(self) -> FloatArray:
        """(N, D) read-only view of the rows; later changes show through it (``.copy()`` to keep a snapshot)."""
        with self._lock:
            view = self._emb[: self._n]
            view.flags.writeable = False
            return view

    def sources(self, label: str) -> list[str]:
        """The known sources (``add``'s ``source``) of ``label``'s rows, in no particular order."""
        with self._lock:
            found = (self._sources[r] for r in self._members.get(label, ()))
            return [s for s in found if s is not None]

    def count(self, label: str) -> int:
        """Rows held for ``label``."""
        with self._lock:
            return len(self._members.get(label, ()))

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and label in self._members

    @property
    def backend(self) -> Literal["exact", "faiss"]:
        """The search backend the next search uses."""
        with self._lock:
            return "faiss" if self._wants_faiss() else "exact"

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held: ``vectors`` (our float32 rows, capacity) and ``index`` (the FAISS index and its maps)."""
        with self._lock:
            index = self._faiss.nbytes() if self._faiss is not None else 0
            return {"vectors": self._emb.nbytes + self._uid.nbytes, "index": index}

    # ---------------------------------------------------------------------------------------------- adding

    def add(self, label: str, embedding: ArrayLike, source: str | None = None) -> int:
        """Add one (D,) or (1, D) vector under ``label``; returns its row, or -1 when drop_latest rejected it.
        ``source``: what the row was made from (a file), kept with it (``sources``) and saved."""
        _check_label(label, 0)
        _check_source(source, 0)
        vec = self._prepare(embedding, "embedding")
        if vec.shape[0] != 1:
            raise ValueError(f"embedding must be (D,) or (1, D), got {vec.shape[0]} rows; use add_many")
        with self._lock:
            return -1 if self._add_one(label, vec[0], source) < 0 else self._n - 1

    def add_many(
        self, labels: Sequence[str], embeddings: ArrayLike, sources: Sequence[str | None] | None = None
    ) -> list[int]:
        """Add N (N, D) vectors with N labels (and N sources, or none), in order (caps apply row by row); rows,
        -1 for rejected ones.

        A row evicted later in the same call by its own label's cap also reports -1.
        """
        labels = list(labels)
        for i, label in enumerate(labels):
            _check_label(label, i)
        given: list[str | None] = [None] * len(labels) if sources is None else list(sources)
        if len(given) != len(labels):
            raise ValueError(f"{len(given)} sources for {len(labels)} labels")
        for i, source in enumerate(given):
            _check_source(source, i)
        vecs = self._prepare(embeddings, "embeddings")
        if len(labels) != len(vecs):
            raise ValueError(f"{len(labels)} labels for {len(vecs)} embeddings")
        if not labels:
            return []
        with self._lock:
            if self._fits_without_eviction(labels):
                first = self._append_block(labels, vecs, given)
                uids = np.arange(first, first + len(labels))
            else:
                rows = zip(labels, vecs, given, strict=True)
                uids = np.array([self._add_one(lb, v, src) for lb, v, src in rows])
            return self._rows_of_uids(uids)

    def _fits_without_eviction(self, labels: list[str]) -> bool:
        cap = self._cfg.max_per_label
        if cap is None:
            return True
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        return all(len(self._members.get(lb, ())) + c <= cap for lb, c in counts.items())

    def _add_one(self, label: str, vec: FloatArray, source: str | None) -> int:
        """Apply the cap, append at the end; the new uid, or -1 when rejected."""
        members = self._members.get(label)
        cap = self._cfg.max_per_label
        if cap is not None and members is not None and len(members) >= cap:
            if self._cfg.drop_policy == "drop_latest":
                return -1
            self._evict(label, self._victim(members))
        return self._append_block([label], vec[None, :], [source])

    def _victim(self, members: set[int]) -> int:
        rows = np.fromiter(members, dtype=np.int64, count=len(members))
        rows = rows[np.argsort(self._uid[rows], kind="stable")]  # oldest first
        if self._cfg.drop_policy == "drop_oldest":
            return int(rows[0])
        return int(rows[self._rng.integers(len(rows))])

    def _append_block(self, labels: list[str], vecs: FloatArray, sources: list[str | None]) -> int:
        """Append rows (no caps checked); returns the first new uid."""
        n, m = self._n, len(labels)
        self._grow(n + m)
        self._emb[n : n + m] = vecs
        first = self._next_uid
        self._uid[n : n + m] = np.arange(first, first + m)
        self._next_uid += m
        self._labels.extend(labels)
        self._sources.extend(sources)
        for row, label in enumerate(labels, start=n):
            self._members.setdefault(label, set()).add(row)
        if self._faiss is not None:
            self._faiss.appended(n, n + m)
        self._n = n + m
        return first

    def _grow(self, size: int) -> None:
        if size <= len(self._emb):
            return
        cap = max(size, 2 * len(self._emb), 64)
        emb = np.empty((cap, self._dim), dtype=np.float32)
        emb[: self._n] = self._emb[: self._n]
        self._emb = emb
        self._uid = _ensure(self._uid, cap, -1)

    def _rows_of_uids(self, uids: NDArray[np.int64]) -> list[int]:
        """Current rows of the given uids (new ones, all >= the smallest valid), -1 for gone or rejected."""
        valid = uids[uids >= 0]
        if not len(valid):
            return [-1] * len(uids)
        first = int(valid.min())
        lookup = np.full(self._next_uid - first, -1, dtype=np.int64)
        rows = np.flatnonzero(self._uid[: self._n] >= first)
        lookup[self._uid[rows] - first] = rows
        return [int(lookup[u - first]) if u >= 0 else -1 for u in uids.tolist()]

    # -------------------------------------------------------------------------------------------- removing

    def remove(self, label: str) -> int:
        """Remove every row of ``label``; returns how many were removed (0 for an unknown label)."""
        with self._lock:
            members = self._members.pop(label, None)
            if not members:
                return 0
            for row in sorted(members, reverse=True):  # descending: the tail row is never one of them
                self._delete_row(row)
            return len(members)

    def _evict(self, label: str, row: int) -> None:
        members = self._members[label]
        members.discard(row)
        if not members:
            del self._members[label]
        self._delete_row(row)

    def _delete_row(self, row: int) -> None:
        """Drop ``row`` (its label membership already updated) by moving the last row into its slot."""
        last = self._n - 1
        if self._faiss is not None:
            self._faiss.deleted(row, last)
        if row != last:
            self._emb[row] = self._emb[last]
            self._uid[row] = self._uid[last]
            moved = self._labels[last]
            self._labels[row] = moved
            self._sources[row] = self._sources[last]
            members = self._members[moved]
            members.discard(last)
            members.add(row)
        self._labels.pop()
        self._sources.pop()
        self._n = last

    # ------------------------------------------------------------------------------------------- searching

    def search(self, query: ArrayLike, k: int = 5, threshold: float | None = None) -> SearchResult:
        """Best matches of one (D,) or (1, D) query: at most ``k``, each with similarity >= threshold."""
        q = self._prepare(query, "query")
        if q.shape[0] != 1:
            raise ValueError(f"query must be (D,) or (1, D), got {q.shape[0]} rows; use search_batch")
        return self._search(q, k, threshold)[0]

    def search_batch(
        self, queries: ArrayLike, k: int = 5, threshold: float | None = None
    ) -> list[SearchResult]:
        """``search`` for each row of (B, D) ``queries``; each result's duration is the batch's mean share."""
        q = self._prepare(queries, "queries")
        return self._search(q, k, threshold)

    def _search(self, q: FloatArray, k: int, threshold: float | None) -> list[SearchResult]:
        start = time.perf_counter()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        thr = self._cfg.threshold if threshold is None else float(threshold)
        if not -1.0 <= thr <= 1.0:
            raise ValueError(f"threshold must be within [-1, 1], got {threshold!r}")
        with self._lock:
            if self._n == 0 or len(q) == 0:
                hits: list[list[Match]] = [[] for _ in range(len(q))]
            else:
                sims, rows = self._top_k(q, min(k, self._n))
                hits = [self._matches(s, r, thr) for s, r in zip(sims, rows, strict=True)]
        share = (time.perf_counter() - start) * 1000.0 / max(1, len(q))
        return [SearchResult(tuple(h), share) for h in hits]

    def _matches(self, sims: NDArray[np.float32], rows: NDArray[np.int64], thr: float) -> list[Match]:
        return [
            Match(self._labels[r], clamp_similarity(s), r)
            for s, r in zip(sims.tolist(), rows.tolist(), strict=True)
            if r >= 0 and meets(s, thr)
        ]

    def _top_k(self, q: FloatArray, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(B, k) similarities and rows, best first (ties by row), rows -1 where none."""
        emb = self._emb[: self._n]
        if self._wants_faiss():
            rows = self._synced_index().search(q, k)
            short = (rows >= 0).sum(axis=1) < k  # too few live candidates: answer those queries exactly
            if short.any():
                exact = np.full((int(short.sum()), rows.shape[1]), -1, dtype=np.int64)
                exact[:, :k] = self._exact(q[short], k)
                rows[short] = exact
        else:
            self._faiss = None
            rows = self._exact(q, k)
        # Exact cosine of every candidate, one formula for every backend and batch size: a similarity never
        # depends on how its row was found, and approximate candidates are re-ranked exactly.
        sims = np.einsum("bd,bkd->bk", q, emb[np.maximum(rows, 0)]).astype(np.float32)
        sims[rows < 0] = -np.inf
        order = np.lexsort((rows, -sims), axis=-1)[:, :k]
        return np.take_along_axis(sims, order, -1), np.take_along_axis(rows, order, -1)

    def _exact(self, q: FloatArray, k: int) -> NDArray[np.int64]:
        with _blas_threads(self._cfg.blas_threads):
            return _exact_top_k(self._emb[: self._n], q, k)

    def _wants_faiss(self) -> bool:
        kind = self._cfg.index
        if kind != "auto":
            return kind == "faiss"
        above = self._cfg.faiss_above
        return self._n >= (above // 2 if self._faiss is not None else above)

    def _synced_index(self) -> _FaissIndex:
        if self._faiss is None:
            kind = _PQIndex if self._cfg.faiss_kind == "pq" else _HnswIndex
            self._faiss = kind(self._dim, self._cfg)
        self._faiss.sync(self._emb[: self._n])
        return self._faiss

    def tune(self, **search_settings: Any) -> None:
        """Change search-time settings (``pq_candidates``, ``hnsw_ef_search``, ``blas_threads``) in place."""
        allowed = {"pq_candidates", "hnsw_ef_search", "blas_threads"}
        if set(search_settings) - allowed:
            raise ValueError(f"tune takes {sorted(allowed)}, not {sorted(set(search_settings) - allowed)}")
        with self._lock:
            try:
                self._cfg = GalleryConfig.model_validate(self._cfg.model_dump() | search_settings)
            except ValidationError as e:
                raise ValueError(_validation_message(e)) from e
            if self._faiss is not None:
                self._faiss.cfg = self._cfg

    def rebuild_index(self) -> None:
        """Build the FAISS index now (it is otherwise built on the first search that needs it)."""
        with self._lock:
            if self._wants_faiss():
                self._faiss = None
                self._synced_index()

    def similarity_matrix(self, other: Gallery | None = None) -> FloatArray:
        """(N, M) cosine similarities of this gallery's rows against ``other``'s (itself when None)."""
        theirs = None if other is None or other is self else other.embeddings.copy()  # no nested locks
        if theirs is not None and theirs.shape[1] != self._dim:
            raise ValueError(f"the other gallery has dim {theirs.shape[1]}, this one {self._dim}")
        with self._lock:
            mine = self._emb[: self._n]
            out: FloatArray = (mine @ (mine if theirs is None else theirs).T).astype(np.float32, copy=False)
            return out

    # ------------------------------------------------------------------------------------------ validation

    def _prepare(self, values: ArrayLike, what: str) -> FloatArray:
        """Validated (N, D) float32 copy of ``values``, each row L2-normalised."""
        try:
            # past float32's range: infinite, refused below, without numpy's warning
            with np.errstate(over="ignore"):
                arr = np.array(values, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what} is not a numeric array: {e}") from e
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self._dim:
            raise ValueError(f"{what} must be (N, {self._dim}) or ({self._dim},), got shape {arr.shape}")
        if not codec.all_finite(arr):
            bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise ValueError(
                f"{what} row {bad} holds NaN or infinite values (or ones past float32's range, about 3.4e38)"
            )
        return normalize_rows(arr, what)

    # ----------------------------------------------------------------------------------------- persistence

    def save(self, path: Path) -> Path:
        """Write the gallery to ``path`` (.rdg, .npz or .json, by suffix) atomically; returns the path.

        DataError naming the file when it cannot be written (the file there before is left as it was)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in SUFFIXES:
            raise ValueError(f"cannot save a gallery as {path}: the suffix must be one of {SUFFIXES}")
        with self._lock:
            order = np.argsort(self._uid[: self._n], kind="stable")
            emb = self._emb[: self._n][order]
            labels = [self._labels[i] for i in order.tolist()]
            sources = [self._sources[i] for i in order.tolist()]
            settings = self._settings()
        if any(s is not None for s in sources):  # galleries without sources are written as before
            settings["sources"] = sources
        writer = {".rdg": _write_rdg, ".npz": _write_npz, ".json": _write_json}[suffix]
        read_only = read_only_problem(path)
        if read_only is not None:
            raise DataError(f"cannot save the gallery as {path}: the file {read_only}")
        try:
            atomic_write(path, lambda fp: writer(fp, settings, labels, emb))
        except OSError as e:
            raise DataError(f"cannot save the gallery as {path}: {e}") from e
        self._seen = _seen(path)
        return path

    def _settings(self) -> dict[str, Any]:
        cfg = self._cfg.model_dump(mode="json", exclude={"path"})
        settings = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "dim": self._dim, "config": cfg}
        return settings if self.embedder is None else {**settings, "embedder": self.embedder}

    @classmethod
    def load(cls, path: Path) -> Gallery:
        """A gallery read from ``path`` (.rdg, .npz or .json); DataError naming the file and the problem."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in SUFFIXES:
            raise DataError(f"{path}: unknown gallery file type {suffix!r} (expected one of {SUFFIXES})")
        if path.is_dir():
            raise DataError(f"{path} is a folder, not a gallery file")
        if path.exists() and not path.is_file():  # stat only: opened, a named pipe waits for a writer
            raise DataError(f"{path} is not a regular file (a named pipe, a device), not a gallery file")
        if not path.is_file():
            raise DataError(f"{path}: gallery file not found{looked_for(path)}")
        reader = {".rdg": _read_rdg, ".npz": _read_npz, ".json": _read_json}[suffix]
        seen = _seen(path)  # before reading: a file replaced meanwhile is read again next time, never missed
        try:
            settings, labels, emb = reader(path)
            gallery = cls._from_parts(settings, labels, emb)
        except DataError as e:
            raise DataError(f"{path}: {e}") from e
        except OSError as e:  # no read permission, an I/O error
            raise DataError(f"{path}: cannot read the gallery file: {e.strerror or e}") from e
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: invalid gallery content: {e}") from e
        gallery.file = path
        gallery._seen = seen
        return gallery

    def read_from(self, path: Path) -> bool:
        """Whether ``path`` is the file as this gallery last read or wrote it (False: another process wrote it
        since, or this gallery never read nor wrote it)."""
        return self._seen is not None and self._seen == _seen(Path(path))

    @classmethod
    def _from_parts(cls, settings: Any, labels: list[str], emb: NDArray[Any]) -> Gallery:
        if not isinstance(settings, dict) or settings.get("format") != FORMAT_TAG:
            raise DataError(
                f"not a gallery file (format tag {_get(settings, 'format')!r}, need {FORMAT_TAG!r})"
            )
        if settings.get("version") != FORMAT_VERSION:
            raise DataError(
                f"unsupported gallery format version {settings.get('version')!r} (this reader knows "
                f"{FORMAT_VERSION})"
            )
        dim = settings.get("dim")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise DataError(f"dim must be an integer, got {dim!r}")
        try:
            cfg = GalleryConfig.model_validate(settings.get("config"))
        except ValidationError as e:
            raise DataError(f"invalid gallery settings: {_validation_message(e)}") from e
        if emb.ndim != 2 or emb.shape != (len(labels), dim):
            raise DataError(f"inconsistent shapes: embeddings {emb.shape}, {len(labels)} labels, dim {dim}")
        made_by = settings.get("embedder")
        if made_by is not None and not isinstance(made_by, str):
            raise DataError(f"embedder must be a text naming the model, got {made_by!r}")
        sources = settings.get("sources")
        if sources is not None and (not isinstance(sources, list) or len(sources) != len(labels)):
            raise DataError(f"sources must be a list of {len(labels)} (one a row), got {_sized(sources)}")
        _check_caps(labels, cfg.max_per_label)
        gallery = cls.from_config(cfg, dim)
        gallery.embedder = made_by
        gallery.add_many(labels, emb, sources)
        return gallery

    def check_embedder(self, signature: str | None, what: str) -> None:
        """DataError when ``signature`` (of the vectors about to be added or searched) is not the embedder
        this gallery's rows were made by; nothing to check when either is not known. A record of the model
        alone (a gallery written before the crop settings were recorded) is checked by model, and a warning,
        once, says the crop settings are not known. A gallery that records no embedder (written before galleries
        recorded one) is checked by width only, and used with a projection head a warning, once, says so. Once
        holds for the file read again (``latest``, ``warned_as``)."""
        if signature is None:
            return
        if self.embedder is None:
            self._say_unrecorded(signature)
            return
        if _hashes(signature) != _hashes(self.embedder) or not _same_crops(signature, self.embedder):
            raise DataError(
                f"the gallery was enrolled with {self.embedder}, but {what} comes from {signature}: use the "
                "model (and head) and the crop settings (embedder input_size, flip_average, colour_norm, "
                "detail_height; --flip) the gallery was enrolled with, or enrol it again with these (enroll --replace)"
            )
        crops = signature.partition(CROPS)[2]
        if crops and not self.embedder.partition(CROPS)[2] and not self._said_crops_unknown:
            self._said_crops_unknown = True
            logger.warning(
                "the gallery %s does not record the crop settings it was enrolled with (written before galleries "
                "recorded them: %s), so it is checked by model only and used with crops %s; if it was enrolled "
                "with others (--flip, embedder colour_norm, detail_height), its matches are off: enrol it again "
                "(enroll --replace: a new gallery records them)",
                self.file or "in memory",
                self.embedder,
                crops,
            )

    def of_file(self, problem: str, file: Path | None = None) -> str:
        """``problem`` preceded by the gallery's file (``file``, else the one ``load`` read it from) where one is
        known, as ``load``'s errors name it."""
        named = file or self.file
        return problem if named is None else f"{named}: {problem}"

    def _say_unrecorded(self, signature: str) -> None:
        """Warn, once, that this gallery records no embedder and is used with a projection head's vectors (two
        heads of one width are told apart by the record alone)."""
        if HEAD not in signature.partition(CROPS)[0] or self._said_unrecorded:
            return
        self._said_unrecorded = True
        logger.warning(
            "the gallery %s does not record the model and head it was enrolled with (written before galleries "
            "recorded them), so it is checked by width only and used with %s; if it was enrolled with another "
            "head of this width, its matches are off: enrol it again (enroll --replace: a new gallery records them)",
            self.file or "in memory",
            signature.partition(CROPS)[0],
        )

    def warned_as(self, earlier: Gallery) -> None:
        """Count the once-only warnings ``earlier`` (this gallery's file as read before) gave as given by this
        copy: a file read again after another process saved it is the same gallery, not a new one to warn of."""
        self._said_crops_unknown |= earlier._said_crops_unknown
        self._said_unrecorded |= earlier._said_unrecorded

    def emptied(self) -> Gallery:
        """A new empty gallery of this one's settings and embedder record (its once-only warnings said)."""
        empty = Gallery.from_config(self.config, self.dim)
        empty.embedder = self.embedder
        empty.warned_as(self)
        return empty

    def made_by(self, signature: str | None) -> None:
        """Record ``signature`` as the embedder of this gallery's rows when it has none and no record yet (a
        new gallery); an existing record is kept (``check_embedder`` is what refuses another)."""
        if len(self) == 0 and self.embedder is None:
            self.embedder = signature


FileStamp = tuple[int, int, int, int]  # (device, inode, size, mtime in ns): a file replaced has a new inode


def _seen(path: Path) -> tuple[Path, FileStamp] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def lock_path(path: Path) -> Path:
    """The advisory lock file of the gallery file ``path``: ``.<name>.lock`` beside it."""
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: Path, wait_s: float, who: str = "reid-daemon", setting: str = "") -> Iterator[None]:
    """Hold the gallery file ``path``'s advisory lock (``lock_path``, made when missing) inside the block: every
    writer of this package takes it around reading the file (``latest``), changing and saving it, so that no
    writer saves over rows another added meanwhile. Waits while another process holds it (saying so), ``wait_s``
    at most: LockTimeout then, naming the holder (``Holder``: its pid and ``who``, which this one records while
    it holds the lock), the lock file and ``setting`` (the option that sets the wait). The lock goes with the
    process, however it ends. DataError naming the lock file when it cannot be made."""
    path = Path(path)
    with holding(lock_path(path), wait_s, f"the gallery {path.name}", who, setting):
        yield


@contextlib.contextmanager
def holding(
    lock: Path,
    wait_s: float,
    what: str,
    who: str = "reid-daemon",
    setting: str = "",
    wait_for: Callable[[Holder | None], bool] | None = None,
) -> Iterator[None]:
    """Hold the advisory lock file ``lock`` (made when missing) of ``what`` (as messages name it: "the gallery
    g.npz") inside the block, as ``locked`` says: waited for ``wait_s`` at most (LockTimeout naming the holder,
    the lock file and ``setting``), DataError naming the lock file when it cannot be made. ``wait_for``: whether
    to wait for the holder its lock file records (None: recorded nobody yet); one it says no to is a
    LockTimeout at once (its ``holder`` the holder)."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise DataError(f"cannot open the lock file {lock} of {what}: {e}") from e
    try:
        _give_to_folder_owner(fd, lock)
        if not _take_lock(fd, wait_s, lock, what, wait_for):
            raise LockTimeout(_lock_timeout_message(fd, wait_s, lock, what, setting), Holder.read(fd))
        Holder.now(who).record(fd, lock)
        try:
            yield
        finally:
            Holder.clear(fd)
    finally:
        os.close(fd)  # and with it the lock


def _give_to_folder_owner(fd: int, lock: Path) -> None:
    """A lock file this process owns in a folder of another user is that user's where this process may give it
    (root: ``forget`` run as root over a service's camera folder, deploy/README.md), so that its writers, that
    user's, can still open it; else it stays as it is."""
    mine, folder = os.fstat(fd), os.stat(lock.parent)
    if mine.st_uid == os.geteuid() and (mine.st_uid, mine.st_gid) != (folder.st_uid, folder.st_gid):
        with contextlib.suppress(PermissionError):
            os.fchown(fd, folder.st_uid, folder.st_gid)


LOCK_POLL_S = 0.05
"""How often a writer waiting for a gallery's lock tries it again (flock itself cannot wait with a timeout)."""


def _take_lock(
    fd: int, wait_s: float, lock: Path, what: str, wait_for: Callable[[Holder | None], bool] | None = None
) -> bool:
    """Whether the lock on ``fd`` was had within ``wait_s`` seconds (while ``wait_for`` takes its holder)."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline or (wait_for is not None and not wait_for(Holder.read(fd))):
                return False
            if not said:
                said = True
                logger.info("waiting for %s: another process is writing %s", lock, what)
            time.sleep(min(LOCK_POLL_S, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class Holder:
    """Who holds a gallery's lock, written into the lock file while it does: a writer that waited too long
    names it (the lock itself, flock, does not say who holds it)."""

    pid: int
    host: str
    who: str
    since: float  # Unix time it took the lock

    @classmethod
    def now(cls, who: str) -> Holder:
        return cls(os.getpid(), socket.gethostname(), who, time.time())

    def record(self, fd: int, lock: Path) -> None:
        """Write it into the lock file ``fd`` (its content only: the lock is the flock)."""
        data = json.dumps({"pid": self.pid, "host": self.host, "who": self.who, "since": self.since})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data.encode() + b"\n", 0)
        except OSError as e:  # the lock holds all the same; a writer that times out names no holder
            logger.info("cannot record this process as the holder of %s: %s", lock, e)

    @staticmethod
    def clear(fd: int) -> None:
        with contextlib.suppress(OSError):  # what is left names a holder gone, read only by one that waited
            os.ftruncate(fd, 0)

    @classmethod
    def read(cls, fd: int) -> Holder | None:
        """The holder a lock file records, None where it records none (taken a moment ago, or unreadable)."""
        try:
            doc = json.loads(os.pread(fd, 4096, 0))
            return cls(int(doc["pid"]), str(doc["host"]), str(doc["who"]), float(doc["since"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def __str__(self) -> str:
        on = "" if self.host == socket.gethostname() else f" on {self.host}"
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"pid {self.pid}{on} ({self.who}, since {since})"


def lock_holder(lock: Path) -> tuple[bool, Holder | None]:
    """Whether a process holds the lock file ``lock`` now (``holding``'s), and who it records (None: nobody
    yet, or unreadable); taken for a moment to tell, never made: a missing file is held by none."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False, None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True, Holder.read(fd)
    except OSError:
        return False, None
    finally:
        os.close(fd)  # and with it a lock taken here
    return False, None


def _lock_timeout_message(fd: int, wait_s: float, lock: Path, what: str, setting: str) -> str:
    holder = Holder.read(fd)
    by = "another process" if holder is None else str(holder)
    option = f" ({setting})" if setting else ""
    return (
        f"{what} has been locked by {by} for more than the {wait_s:g} s this waits{option}, "
        f"its lock file {lock}: that process is writing it, or stopped or stuck while it did; try again, or end "
        "that process"
    )


def latest(gallery: Gallery, path: Path) -> Gallery:
    """``gallery``, or the gallery file ``path`` read again when it is not the file as ``gallery`` last read or
    wrote it (another process wrote it since, or made it while ``gallery`` was new), or an empty gallery of its
    settings (``emptied``, with a warning) when that file is gone (deleted or moved away since ``gallery`` read
    or wrote it: its rows are not written back). Call it holding ``locked(path)`` before changing and saving the
    gallery."""
    path = Path(path)
    if not path.exists():
        if gallery._seen is None:  # new, or already taken as gone
            return gallery
        logger.warning(
            "the gallery file %s is gone (deleted or moved away since it was read or written): taking it as an "
            "empty gallery with the same settings (its %d entries are not written back); the next save writes "
            "the file anew",
            path,
            len(gallery),
        )
        return gallery.emptied()
    if gallery.read_from(path):
        return gallery
    logger.info("%s was written by another process: reading it again", path)
    fresh = Gallery.load(path)
    fresh.warned_as(gallery)
    return fresh


def _same_crops(a: str, b: str) -> bool:
    """Whether two signatures' crop settings agree; they do when either has none (a gallery recorded before
    they were)."""
    crops = [s.partition(CROPS)[2] for s in (a, b)]
    return not all(crops) or crops[0] == crops[1]


def _hashes(signature: str) -> list[str]:
    """The content hashes of a signature: what must agree (a model file renamed is still the same model)."""
    return re.findall(r"sha256:([0-9a-f]+)", signature.partition(CROPS)[0])


def meets(similarity: float, threshold: float) -> bool:
    """Whether a cosine ``similarity`` reaches ``threshold``, allowing SIMILARITY_TOL for float32 rounding (the
    identical embedding meets 1.0); only a similarity within SIMILARITY_TOL (< 1e-6) under it is moved over."""
    return similarity >= threshold - SIMILARITY_TOL


def clamp_similarity(similarity: float) -> float:
    """A computed cosine within [-1, 1] (rounding takes one of a vector with itself a few ulps past 1)."""
    return min(1.0, max(-1.0, similarity))


def normalize_rows(arr: FloatArray, what: str = "embeddings") -> FloatArray:
    """Divide each row of the float32 (N, D) ``arr`` by its L2 norm, in place; returns ``arr``.

    A row already of unit length (within UNIT_TOL) is left bit for bit, so normalising twice (a saved and
    re-loaded gallery) changes nothing. ValueError for a zero row.
    """
    norms = np.linalg.norm(arr, axis=1)
    if len(norms) and float(norms.min()) <= NORM_EPS:
        raise ValueError(f"{what} row {int(norms.argmin())} is a zero vector (cannot be normalised)")
    norms[np.abs(norms - 1.0) <= UNIT_TOL] = 1.0
    arr /= norms[:, None]
    return arr


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _validation_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in err.errors())


def _sized(value: object) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__


def _check_source(source: object, i: int) -> None:
    if source is not None and (not isinstance(source, str) or not source):
        raise ValueError(f"source {i} must be a non-empty str or None, got {source!r}")


def _check_caps(labels: list[str], cap: int | None) -> None:
    """DataError for a file whose label holds more rows than its own max_per_label (a hand-made file, or one
    whose cap was lowered by hand): adding them row by row would drop the extra ones, and the next save lose
    them from the file."""
    if cap is None:
        return
    over = [(label, n) for label, n in Counter(labels).most_common() if n > cap]
    if over:
        label, n = over[0]
        more = f" (and {len(over) - 1} more label(s))" if len(over) > 1 else ""
        raise DataError(
            f"label {label!r} holds {n} rows{more}, more than the gallery's max_per_label {cap} (its config): "
            f"reading it would drop {n - cap} of them; raise its config's max_per_label (or set it to null) "
            "in the file, or remove rows"
        )


def _check_label(label: object, i: int) -> None:
    codec.check_label(label, i)  # a str the binary format can hold
    if not str(label).strip():
        raise ValueError(f"label {i} is empty")
    size = len(str(label).encode("utf-8", "surrogatepass"))
    if size > LABEL_MAX_BYTES:  # a fleet's peers refuse a longer label, and with it the batch it is in
        raise ValueError(
            f"label {i} ({str(label)[:20]!r}...) is {size} UTF-8 bytes, more than the {LABEL_MAX_BYTES} a label "
            "may take (a file name's, which enroll takes labels from)"
        )


_BLAS: Any = None


def _blas_threads(n: int) -> contextlib.AbstractContextManager[Any]:
    """Limit numpy's BLAS to ``n`` threads inside the block (0: leave it)."""
    global _BLAS
    if n == 0:
        return contextlib.nullcontext()
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    limiter: contextlib.AbstractContextManager[Any] = _BLAS.limit(limits=n, user_api="blas")
    return limiter


def _exact_top_k(emb: FloatArray, q: FloatArray, k: int) -> NDArray[np.int64]:
    """Rows of the exact top-k per query (unordered), by blocks of queries (bounded memory)."""
    n = len(emb)
    if k >= n:
        return np.broadcast_to(np.arange(n, dtype=np.int64), (len(q), n)).copy()
    step = max(1, _SIM_BLOCK // max(1, n))
    rows_out = np.empty((len(q), k), dtype=np.int64)
    for i in range(0, len(q), step):
        sims = q[i : i + step] @ emb.T
        rows_out[i : i + step] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return rows_out


# ------------------------------------------------------------------------------------------------ files


def _write_rdg(fp: BinaryIO, settings: dict[str, Any], labels: list[str], emb: FloatArray) -> None:
    batch = codec.EmbeddingBatch(emb, tuple(labels), meta=settings)
    codec.write(fp, batch, max_meta_bytes=codec.MAX_META_FIELD)  # settings hold the rows' sources


def _write_npz(fp: BinaryIO, settings: dict[str, Any], labels: list[str], emb: FloatArray) -> None:
    np.savez(
        fp,
        settings=np.array(json.dumps(settings)),
        labels=np.array(labels, dtype=np.str_).reshape(len(labels)),
        embeddings=emb,
    )


def _write_json(fp: BinaryIO, settings: dict[str, Any], labels: list[str], emb: FloatArray) -> None:
    doc = {**settings, "labels": labels, JSON_DIGEST: _json_digest({**settings, "labels": labels}, emb)}
    doc["embeddings"] = emb.tolist()
    text = io.TextIOWrapper(fp, encoding="utf-8")
    json.dump(doc, text)
    text.flush()
    text.detach()


Parts = tuple[Any, list[str], NDArray[Any]]


def _read_rdg(path: Path) -> Parts:
    batch = codec.decode(path.read_bytes(), max_bytes=_LOAD_MAX_BYTES, max_meta_bytes=codec.MAX_META_FIELD)
    if batch.labels is None:
        raise DataError("the embedding file holds no labels (not a gallery)")
    return batch.meta, list(batch.labels), batch.embeddings


def _read_npz(path: Path) -> Parts:
    problem = npz_start_problem(path)
    if problem is not None:
        raise DataError(problem)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"settings", "labels", "embeddings"} - set(data.files)
            if missing:
                raise DataError(f"not a gallery .npz: missing arrays {sorted(missing)}")
            settings = json.loads(str(data["settings"][()]))
            labels, emb = data["labels"], data["embeddings"]
    except (OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise DataError(f"unreadable or truncated .npz ({type(e).__name__}: {e})") from e
    except ValueError as e:  # what numpy's archive reader raises for an array of objects
        raise DataError(f"unreadable .npz (object arrays are refused: {e})") from e
    if labels.ndim != 1 or labels.dtype.kind != "U":
        raise DataError(f"labels must be a 1-D string array, got {labels.dtype} {labels.shape}")
    if emb.dtype.kind != "f":
        raise DataError(f"embeddings must be floats, got {emb.dtype}")
    return settings, [str(s) for s in labels.tolist()], emb


def _read_json(path: Path) -> Parts:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: nested too deep
        raise DataError(f"not valid UTF-8 JSON (truncated or corrupt?): {e}") from e
    if not isinstance(doc, dict):
        raise DataError("the top level must be a JSON object")
    labels, rows = doc.pop("labels", None), doc.pop("embeddings", None)
    if not isinstance(labels, list) or not isinstance(rows, list):
        raise DataError("'labels' and 'embeddings' must be lists")
    recorded = doc.pop(JSON_DIGEST, None)
    try:
        with np.errstate(over="ignore"):  # a value past float32's range: infinite, which the gallery refuses
            emb = np.array(rows, dtype=np.float32) if rows else np.zeros((0, _dim_of(doc)), np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"inconsistent shapes: embeddings are not an (N, D) array of numbers ({e})") from e
    if recorded is not None:
        _check_json_digest(recorded, _json_digest({**doc, "labels": labels}, emb))
    return doc, labels, emb


def _json_digest(content: dict[str, Any], emb: NDArray[Any]) -> str:
    """The sha256 a .json gallery records (JSON_DIGEST) of its content: every field but the embeddings, as
    canonical JSON (sorted keys, no spaces), then the embeddings as little-endian float32 (what is loaded: a
    digit changed past float32's precision changes no value, and is no change)."""
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    digest.update(np.ascontiguousarray(emb, dtype="<f4").tobytes())
    return digest.hexdigest()


def _check_json_digest(recorded: object, computed: str) -> None:
    if not isinstance(recorded, str) or not re.fullmatch(r"[0-9a-f]{64}", recorded):
        raise DataError(f"{JSON_DIGEST} must be 64 lower-case hex digits, got {recorded!r}")
    if recorded != computed:
        raise DataError(
            f"checksum mismatch: the content's sha256 is {computed}, the file records {recorded} (corrupt, or "
            f"edited since it was written: restore it from a copy, enrol it again, or, to keep an edit made by "
            f"hand, delete its {JSON_DIGEST!r} field)"
        )


def _dim_of(doc: dict[str, Any]) -> int:
    dim = doc.get("dim")
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else 0
