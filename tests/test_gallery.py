"""daemon/gallery.py: search, validation, caps and drop policies, FAISS HNSW backend, persistence."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from _unreadable import unreadable_file
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from daemon import codec, gallery
from daemon.config import GalleryConfig
from daemon.errors import DataError
from daemon.gallery import Gallery, Match, SearchResult

D = 16
FaissKind = Literal["pq", "hnsw"]
F32 = NDArray[np.float32]


def unit(rng: np.random.Generator, n: int, d: int = D) -> F32:
    x = rng.standard_normal((n, d)).astype(np.float32)
    out: F32 = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def clustered(n_ids: int, per: int, d: int = D, noise: float = 0.3, seed: int = 0) -> tuple[list[str], F32]:
    """``per`` noisy samples around each of ``n_ids`` random unit centres, labelled id0, id1, ..."""
    rng = np.random.default_rng(seed)
    centres = unit(rng, n_ids, d)
    x = np.repeat(centres, per, axis=0) + rng.standard_normal((n_ids * per, d)).astype(np.float32) * (
        noise / np.sqrt(d)
    )
    return [f"id{i}" for i in range(n_ids) for _ in range(per)], x.astype(np.float32)


def keys(x: F32) -> list[bytes]:
    """Byte keys of rows normalised the way the gallery does it (so they compare exactly)."""
    return [row.tobytes() for row in gallery.normalize_rows(np.array(x, dtype=np.float32, ndmin=2))]


def rows_by_label(g: Gallery) -> dict[str, set[bytes]]:
    out: dict[str, set[bytes]] = {}
    for label, row in zip(g.labels, g.embeddings, strict=True):
        out.setdefault(label, set()).add(row.tobytes())
    return out


# ------------------------------------------------------------------------------------------------- search


def test_search_finds_the_label_and_reports_exact_cosine() -> None:
    labels, x = clustered(20, 5)
    g = Gallery(D, threshold=0.0, index="exact")
    g.add_many(labels, x)
    q = x[7] * 3.0  # scale does not matter
    res = g.search(q, k=3)
    assert isinstance(res, SearchResult) and res.duration_ms >= 0
    assert res.best is not None and res.best.label == "id1" and res.best.index == 7
    assert res.best.similarity == pytest.approx(1.0, abs=1e-6)
    unit_x = x / np.linalg.norm(x, axis=1, keepdims=True)
    for m in res.matches:
        assert m.similarity == pytest.approx(float(unit_x[m.index] @ unit_x[7]), abs=1e-5)
        assert m.distance == pytest.approx(1.0 - m.similarity)
    sims = [m.similarity for m in res.matches]
    assert sims == sorted(sims, reverse=True) and len(sims) == 3


def test_threshold_and_k() -> None:
    rng = np.random.default_rng(1)
    x = unit(rng, 50)
    g = Gallery(D, threshold=0.99)
    g.add_many([f"p{i}" for i in range(50)], x)
    assert [m.index for m in g.search(x[3], k=5).matches] == [3]  # only itself passes 0.99
    loose = g.search(x[3], k=5, threshold=-1.0)
    assert len(loose.matches) == 5
    assert len(g.search(x[3], k=500, threshold=-1.0).matches) == 50
    assert all(m.similarity >= 0.2 for m in g.search(x[3], k=50, threshold=0.2).matches)


def test_empty_gallery_search() -> None:
    g = Gallery(D)
    res = g.search(np.ones(D))
    assert res.matches == () and res.best is None
    assert [r.matches for r in g.search_batch(np.ones((3, D)))] == [(), (), ()]


def test_search_batch_equals_single_searches() -> None:
    labels, x = clustered(30, 4)
    g = Gallery(D, threshold=0.1, index="exact")
    g.add_many(labels, x)
    q = unit(np.random.default_rng(5), 12)
    batch = g.search_batch(q, k=4)
    assert [r.matches for r in batch] == [g.search(v, k=4).matches for v in q]


def test_ties_are_ordered_by_row() -> None:
    g = Gallery(2, threshold=-1)
    v = np.array([1.0, 0.0], np.float32)
    g.add_many(["a", "b", "c"], [v, v, v])
    assert [m.index for m in g.search(v, k=3).matches] == [0, 1, 2]


def test_a_match_exactly_at_the_threshold_is_kept_and_a_given_threshold_of_zero_is_used() -> None:
    # "a match needs similarity >= threshold": a row whose cosine to the query is exactly the threshold matches
    # (no test had one: a mutant taking '>' passed); a threshold given to search replaces the gallery's, 0.0
    # too (a mutant taking 'threshold or the gallery's' passed)
    g = Gallery(2, threshold=0.5)
    g.add("a", [1.0, 0.0])
    at_half = np.array([0.5, np.sqrt(0.75)], np.float32)  # of unit length: cosine 0.5 exactly
    assert [(m.label, m.similarity) for m in g.search(at_half).matches] == [("a", 0.5)]
    assert g.search(at_half, threshold=0.5 + 2 * gallery.SIMILARITY_TOL).matches == ()
    assert [m.similarity for m in g.search([1.0, 0.0], threshold=1.0).matches] == [1.0]
    low = np.array([0.2, np.sqrt(0.96)], np.float32)  # cosine 0.2: under the gallery's 0.5, over 0.0
    assert g.search(low).matches == ()
    assert [m.label for m in g.search(low, threshold=0.0).matches] == ["a"]
    batch = g.search_batch([low, at_half], threshold=0.0)
    assert [[m.label for m in r.matches] for r in batch] == [["a"], ["a"]]


def test_an_identical_embedding_meets_a_threshold_of_one_and_similarities_stay_within_minus_one_and_one() -> (
    None
):
    # the same photo's embedding searched against its own row came out at 0.99999976 (rounding of the dot
    # product), so a threshold of 1.0 never matched it; once it came out at 1.0000001, a cosine above 1
    rng = np.random.default_rng(3)
    worst_low = worst_high = 0.0
    for d in (128, 512, 2048):
        x = rng.standard_normal((40, d)).astype(np.float32) * rng.uniform(0.01, 100.0, (40, 1)).astype(
            np.float32
        )
        g = Gallery(d, threshold=1.0, index="exact")
        g.add_many([f"p{i}" for i in range(40)], x)
        for i, row in enumerate(x):
            found = g.search(row, k=1)
            assert [m.index for m in found.matches] == [i]  # threshold 1.0: its own row matches
            assert -1.0 <= found.matches[0].similarity <= 1.0
            raw = float(g.embeddings[i] @ g._prepare(row, "q")[0])
            worst_low, worst_high = min(worst_low, raw - 1.0), max(worst_high, raw - 1.0)
        flipped = g.search(-x[0], k=1, threshold=-1.0).matches[0]
        assert flipped.similarity >= -1.0
    assert worst_low < 0.0 < worst_high  # the rounding this guards against happens on both sides of 1
    assert gallery.SIMILARITY_TOL <= 1e-6  # only similarities this close under a threshold are moved over it


def test_the_threshold_tolerance_acts_only_within_similarity_tol_of_the_threshold() -> None:
    g = Gallery(2, threshold=0.5)
    g.add("a", [1.0, 0.0])
    at_half = np.array([0.5, np.sqrt(0.75)], np.float32)  # cosine 0.5
    assert [m.label for m in g.search(at_half, threshold=0.5 + gallery.SIMILARITY_TOL / 2).matches] == ["a"]
    assert g.search(at_half, threshold=0.5 + 1e-6).matches == ()
    assert g.search(at_half, threshold=0.95).matches == ()


def test_match_distance() -> None:
    assert Match("a", 0.75, 0).distance == pytest.approx(0.25)


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.ones(D + 1), "must be \\(N, 16\\)"),
        (np.ones((2, D)), "use add_many"),
        (np.r_[np.nan, np.ones(D - 1)], "NaN or infinite"),
        (np.r_[np.inf, np.ones(D - 1)], "NaN or infinite"),
        (np.zeros(D), "zero vector"),
        ("text", "not a numeric array"),
    ],
)
def test_add_rejects_bad_vectors(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Gallery(D).add("a", value)


def test_a_value_past_float32s_range_is_refused_without_numpys_warning(tmp_path: Path) -> None:
    """A vector (or a .json gallery's row) holding 1e300 printed numpy's 'RuntimeWarning: overflow encountered in
    cast' with a line of our source before the error said 'NaN or infinite values' of a file that holds
    neither: the error says a value is past float32's range too, alone."""
    path = write_json(tmp_path / "big.json", embeddings=[[1e300, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            ValueError, match=r"row 0 holds NaN or infinite values \(or ones past float32's range"
        ):
            Gallery(D).add("a", np.r_[1e300, np.ones(D - 1)])
        with pytest.raises(DataError, match=r"big\.json: .*past float32's range"):
            Gallery.load(path)


@pytest.mark.parametrize(("label", "message"), [("", "empty"), ("  ", "empty"), (3, "must be a str")])
def test_add_rejects_bad_labels(label: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Gallery(D).add(label, np.ones(D))


def test_add_many_and_search_validation() -> None:
    g = Gallery(D)
    with pytest.raises(ValueError, match="2 labels for 3"):
        g.add_many(["a", "b"], np.ones((3, D)))
    with pytest.raises(ValueError, match="row 1 holds NaN"):
        g.add_many(["a", "b"], np.array([np.ones(D), np.full(D, np.nan)]))
    with pytest.raises(ValueError, match="k must be a positive"):
        g.search(np.ones(D), k=0)
    with pytest.raises(ValueError, match="threshold must be within"):
        g.search(np.ones(D), threshold=1.5)
    with pytest.raises(ValueError, match="use search_batch"):
        g.search(np.ones((2, D)))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"dim": 0}, "dim must be"),
        ({"threshold": 2.0}, "threshold"),
        ({"max_per_label": 0}, "max_per_label"),
        ({"drop_policy": "drop_all"}, "drop_policy"),
        ({"index": "annoy"}, "index"),
    ],
)
def test_constructor_validation(kw: dict[str, Any], message: str) -> None:
    args = {"dim": D, **kw}
    with pytest.raises(ValueError, match=message):
        Gallery(**args)


def test_inputs_are_not_modified_in_place() -> None:
    x = np.full((2, D), 3.0, dtype=np.float32)
    before = x.copy()
    g = Gallery(D)
    g.add_many(["a", "b"], x)
    g.add("c", x[0])
    g.search(x[0])
    g.search_batch(x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(np.linalg.norm(g.embeddings, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError):
        g.embeddings[0, 0] = 1.0


# ----------------------------------------------------------------------------------------------- caps


def test_drop_oldest_keeps_the_newest() -> None:
    x = unit(np.random.default_rng(2), 6)
    g = Gallery(D, max_per_label=3, drop_policy="drop_oldest")
    rows = [g.add("a", v) for v in x]
    assert all(r >= 0 for r in rows)
    assert len(g) == 3 and g.count("a") == 3
    assert rows_by_label(g)["a"] == set(keys(x[3:]))


def test_drop_latest_rejects_the_new_one() -> None:
    x = unit(np.random.default_rng(3), 6)
    g = Gallery(D, max_per_label=2, drop_policy="drop_latest")
    assert [g.add("a", v) for v in x] == [0, 1, -1, -1, -1, -1]
    assert g.add("b", x[5]) == 2  # another label still has room
    assert rows_by_label(g)["a"] == set(keys(x[:2]))


def test_drop_random_is_seeded_and_bounded() -> None:
    x = unit(np.random.default_rng(4), 40)

    def run(seed: int) -> dict[str, set[bytes]]:
        g = Gallery(D, max_per_label=5, drop_policy="drop_random", seed=seed)
        for v in x:
            assert g.add("a", v) >= 0
            assert g.count("a") <= 5
        return rows_by_label(g)

    first = run(7)
    assert first == run(7)
    assert len(first["a"]) == 5 and keys(x[-1])[0] in first["a"]  # the newest is always kept
    assert any(run(s) != first for s in range(8, 12))


def test_drop_random_may_evict_any_row_of_the_label() -> None:
    # drop_random evicts "a random one of its rows": over seeds, the oldest and the newest row the label holds
    # are each evicted at times (mutants never drawing the last or the first of them passed every test)
    x = unit(np.random.default_rng(8), 4)
    evicted = set()
    for seed in range(30):
        g = Gallery(D, max_per_label=3, drop_policy="drop_random", seed=seed)
        g.add_many(["a"] * 3, x[:3])
        assert g.add("a", x[3]) >= 0
        kept = rows_by_label(g)["a"]
        assert keys(x[3])[0] in kept and len(kept) == 3
        evicted |= {i for i in range(3) if keys(x[i])[0] not in kept}
    assert evicted == {0, 1, 2}


@pytest.mark.parametrize("suffix", [".rdg", ".npz", ".json"])
def test_drop_oldest_still_evicts_the_oldest_after_a_round_trip(tmp_path: Path, suffix: str) -> None:
    # an eviction moves the last row into the freed slot, so row order is not age; the file keeps the ages
    # (rows written oldest first), so a loaded gallery evicts the row added first, not row 0 (a mutant saving
    # in row order passed every test)
    x = unit(np.random.default_rng(10), 5)
    g = Gallery(D, max_per_label=3, drop_policy="drop_oldest")
    for v in x[:4]:
        g.add("a", v)  # x0 evicted: its slot takes x2, so the rows are x2, x1, x3
    assert keys(g.embeddings) == keys(x[[2, 1, 3]])
    loaded = Gallery.load(g.save(tmp_path / f"g{suffix}"))
    loaded.add("a", x[4])
    assert rows_by_label(loaded)["a"] == set(keys(x[2:5]))


def test_add_many_with_caps_reports_rows_and_rejections() -> None:
    x = unit(np.random.default_rng(5), 8)
    g = Gallery(D, max_per_label=2, drop_policy="drop_oldest")
    rows = g.add_many(["a", "a", "b", "a", "a"], x[:5])
    assert rows[0] == -1 and rows[1] == -1  # evicted later in the same call
    kept = {lb: vs for lb, vs in rows_by_label(g).items()}
    assert kept == {"a": set(keys(x[3:5])), "b": set(keys(x[2]))}
    for i, r in enumerate(rows):
        if r >= 0:
            np.testing.assert_allclose(g.embeddings[r], x[i], rtol=1e-6)
    latest = Gallery(D, max_per_label=1, drop_policy="drop_latest")
    assert latest.add_many(["a", "a", "b"], x[:3]) == [0, -1, 1]


def test_memory_is_bounded_by_the_cap() -> None:
    rng = np.random.default_rng(6)
    g = Gallery(D, max_per_label=4)
    for _ in range(50):
        g.add_many([f"p{i}" for i in range(10)], unit(rng, 10))
    assert len(g) == 40
    assert g.memory_bytes()["vectors"] <= 2 * 64 * (D * 4 + 8)


# -------------------------------------------------------------------------------------------- removal


def test_remove_label_keeps_rows_consistent() -> None:
    labels, x = clustered(10, 6)
    g = Gallery(D, index="exact")
    g.add_many(labels, x)
    before = rows_by_label(g)
    assert g.remove("id3") == 6
    assert g.remove("id3") == 0 and g.remove("nobody") == 0
    assert "id3" not in g and "id3" not in g.unique_labels and len(g) == 54
    after = rows_by_label(g)
    assert after == {k: v for k, v in before.items() if k != "id3"}
    res = g.search(x[3 * 6], k=5, threshold=-1)
    assert all(m.label != "id3" and g.labels[m.index] == m.label for m in res.matches)


def test_properties() -> None:
    g = Gallery(D, threshold=0.4)
    g.add_many(["b", "a", "b"], unit(np.random.default_rng(0), 3))
    assert g.dim == D and g.threshold == 0.4 and len(g) == 3
    assert g.labels == ["b", "a", "b"] and g.unique_labels == ["a", "b"]
    assert g.embeddings.shape == (3, D) and g.embeddings.dtype == np.float32
    assert g.config.threshold == 0.4 and g.backend == "exact"


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "add_many", "remove"]), st.integers(0, 5), st.integers(1, 4)),
        min_size=1,
        max_size=30,
    ),
    policy=st.sampled_from(["drop_oldest", "drop_random", "drop_latest"]),
    cap=st.one_of(st.none(), st.integers(1, 3)),
)
def test_random_operations_keep_invariants(
    ops: list[tuple[str, int, int]], policy: Any, cap: int | None
) -> None:
    """Any sequence of adds and removals: caps hold, rows match labels, top-1 is the brute-force best."""
    rng = np.random.default_rng(0)
    g = Gallery(4, max_per_label=cap, drop_policy=policy, threshold=-1)
    for op, who, n in ops:
        label = f"p{who}"
        if op == "add":
            g.add(label, unit(rng, 1, 4)[0])
        elif op == "add_many":
            g.add_many([label] * n, unit(rng, n, 4))
        else:
            g.remove(label)
        counts = {lb: g.labels.count(lb) for lb in g.unique_labels}
        assert all(c >= 1 and (cap is None or c <= cap) for c in counts.values())
        assert sum(counts.values()) == len(g) == len(g.embeddings)
    if len(g):
        q = unit(rng, 1, 4)[0]
        best = g.search(q, k=1).best
        assert best is not None
        assert best.similarity == pytest.approx(float((g.embeddings @ q).max()), abs=1e-6)


# ------------------------------------------------------------------------------------------------ FAISS


def recall_at_k(exact: list[SearchResult], approx: list[SearchResult], k: int) -> float:
    hits = [
        len({m.index for m in a.matches} & {m.index for m in e.matches})
        for e, a in zip(exact, approx, strict=True)
    ]
    return sum(hits) / (k * len(exact))


@pytest.mark.parametrize("kind", ["pq", "hnsw"])
def test_faiss_matches_exact_search(kind: FaissKind) -> None:
    labels, x = clustered(200, 10, d=32, noise=0.5)
    tuning = GalleryConfig(faiss_kind=kind)
    exact = Gallery(32, index="exact", threshold=-1)
    approx = Gallery(32, index="faiss", threshold=-1, tuning=tuning)
    exact.add_many(labels, x)
    approx.add_many(labels, x)
    q = clustered(200, 1, d=32, noise=0.5, seed=0)[1][:100]
    assert approx.backend == "faiss" and exact.backend == "exact"
    r_exact, r_approx = exact.search_batch(q, k=5), approx.search_batch(q, k=5)
    assert recall_at_k(r_exact, r_approx, 5) >= 0.98
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    for i, res in enumerate(r_approx):  # similarities are the exact cosines of the rows returned
        assert len(res.matches) == 5
        for m in res.matches:
            assert m.similarity == pytest.approx(float(approx.embeddings[m.index] @ qn[i]), abs=1e-5)
    assert approx.memory_bytes()["index"] > 0
    assert isinstance(approx._faiss, gallery._PQIndex if kind == "pq" else gallery._HnswIndex)


@pytest.mark.parametrize("kind", ["pq", "hnsw"])
def test_faiss_stays_correct_through_removals_evictions_and_rebuilds(kind: FaissKind) -> None:
    labels, x = clustered(200, 6, d=32, noise=0.4, seed=1)  # 1200 rows: PQ trains (>= 1024)
    tuning = GalleryConfig(faiss_kind=kind, rebuild_fraction=0.1, hnsw_m=16, hnsw_ef_search=64)
    kw: dict[str, Any] = {"max_per_label": 6, "drop_policy": "drop_oldest", "threshold": -1}
    exact, approx = Gallery(32, index="exact", **kw), Gallery(32, index="faiss", tuning=tuning, **kw)
    rng = np.random.default_rng(9)
    q = x[rng.choice(len(x), 60, replace=False)]
    for g in (exact, approx):
        g.add_many(labels, x)
        g.search_batch(q)  # build the index before the changes
    more_labels, more = clustered(200, 2, d=32, noise=0.4, seed=2)
    for step in range(4):
        for g in (exact, approx):
            g.remove(f"id{step}")
            g.add_many(more_labels[step * 80 : step * 80 + 80], more[step * 80 : step * 80 + 80])  # evicts
            for i in range(10):
                g.add(f"new{step}", more[i])
        assert rows_by_label(exact) == rows_by_label(approx)
        r_exact, r_approx = exact.search_batch(q, k=5), approx.search_batch(q, k=5)
        assert recall_at_k(r_exact, r_approx, 5) >= 0.95
        for res in r_approx:
            assert len(res.matches) == 5
            assert all(approx.labels[m.index] == m.label for m in res.matches)
    index = approx._faiss  # built once, then rebuilt as tombstones passed 10 %
    assert index is not None and index.builds >= 2


def test_pq_search_after_removals_returns_k_live_rows_for_a_query_like_row_0() -> None:
    # removed rows stay in a PQ index as tombstones, which come back as candidate row -1 and must rank last:
    # a mutant leaving their similarity unset (read from row 0) passed every test, for no query was like
    # row 0: here the 3 tombstones outrank every live row and the search returned 2 of the 5 matches asked
    rng = np.random.default_rng(11)
    g = Gallery(D, index="faiss", threshold=-1, tuning=GalleryConfig(faiss_kind="pq", rebuild_fraction=0.5))
    g.add_many([f"p{i}" for i in range(60)], unit(rng, 60))
    g.search(g.embeddings[0])  # the index is built
    for i in range(50, 53):
        g.remove(f"p{i}")  # 3 tombstones, under rebuild_fraction
    res = g.search(g.embeddings[0], k=5)
    assert [m.index for m in res.matches][:1] == [0] and len(res.matches) == 5
    assert all(g.labels[m.index] == m.label for m in res.matches)


def test_pq_search_left_one_live_candidate_short_is_answered_exactly() -> None:
    # PQ fetches pq_candidates more for the tombstones it holds; where the nearest were removed it may still
    # find fewer than k live rows, and such a query is answered exactly: k matches. Here it fetches 6, 2 of
    # them the removed copies of the query, 4 live for k = 5 (a mutant answering exactly only from 2 short
    # passed every test, returning 4)
    rng = np.random.default_rng(12)
    q = unit(rng, 1)[0]
    tuning = GalleryConfig(faiss_kind="pq", pq_candidates=5, rebuild_fraction=0.5)
    g = Gallery(D, index="faiss", threshold=-1, tuning=tuning)
    g.add_many(["copy", "copy"] + [f"p{i}" for i in range(298)], np.vstack([q, q, unit(rng, 298)]))
    g.search(q)  # the index is built
    assert g.remove("copy") == 2
    res = g.search(q, k=5)
    expected = np.argsort(-(g.embeddings @ q), kind="stable")[:5]
    assert [m.index for m in res.matches] == expected.tolist()


def test_pq_below_training_size_and_growth_retrain() -> None:
    rng = np.random.default_rng(4)
    g = Gallery(D, index="faiss", threshold=-1)  # default kind: pq
    g.add_many([f"a{i}" for i in range(50)], unit(rng, 50))
    res = g.search(g.embeddings[7], k=3)
    assert res.best is not None and res.best.index == 7  # a flat index stands in below 1024 rows
    assert g._faiss is not None and g._faiss.builds == 1
    g.add_many([f"b{i}" for i in range(2000)], unit(rng, 2000))
    res = g.search(g.embeddings[1500], k=3)
    assert res.best is not None and res.best.index == 1500
    assert g._faiss.builds == 2  # grown more than 4x: rebuilt (and trained as PQ)
    assert g.memory_bytes()["index"] < 2050 * D * 4  # 4-bit codes, not float copies


def test_auto_switches_backend_with_hysteresis() -> None:
    rng = np.random.default_rng(3)
    g = Gallery(D, index="auto", faiss_above=100, threshold=-1)
    g.add_many([f"a{i}" for i in range(99)], unit(rng, 99))
    before = g.backend
    g.add("b", unit(rng, 1)[0])
    assert (before, g.backend) == ("exact", "faiss")
    g.search(unit(rng, 1)[0])
    for i in range(40):
        g.remove(f"a{i}")
    assert len(g) == 60 and g.backend == "faiss"  # above half of faiss_above: keeps the index
    for i in range(40, 60):
        g.remove(f"a{i}")
    assert str(g.backend) == "exact"
    res = g.search(g.embeddings[0], k=1)
    assert res.best is not None and res.best.index == 0


def test_constructor_defaults_are_gallery_config_defaults() -> None:
    # Gallery(dim) was uncapped (max_per_label None) while GalleryConfig caps a label at 32: the constructor
    # kept a second set of defaults that disagreed with the config, the single source
    assert Gallery(D).config == GalleryConfig()
    g = Gallery(2)
    g.add_many(["a"] * 40, np.ones((40, 2)))
    assert len(g) == GalleryConfig().max_per_label


def test_rebuild_index_and_from_config() -> None:
    cfg = GalleryConfig(index="faiss", hnsw_m=8, hnsw_ef_search=32, max_per_label=3, threshold=0.2)
    g = Gallery.from_config(cfg, D)
    assert g.config.max_per_label == 3 and g.threshold == 0.2 and g.backend == "faiss"
    g.add_many(["a", "b"], unit(np.random.default_rng(0), 2))
    g.rebuild_index()
    assert g.memory_bytes()["index"] > 0
    best = g.search(g.embeddings[1], k=1).best
    assert best is not None and (best.label, best.index) == ("b", 1)
    assert best.similarity == pytest.approx(1.0, abs=1e-6)


def test_threads_can_add_and_search_together() -> None:
    g = Gallery(D, index="faiss", max_per_label=5, threshold=-1)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for i in range(60):
                g.add(f"p{seed}-{i % 7}", unit(rng, 1)[0])
                for m in g.search(unit(rng, 1)[0], k=3).matches:
                    assert m.label.startswith("p")
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(g) == 4 * 7 * 5


# ------------------------------------------------------------------------------------------ similarity


def test_similarity_matrix() -> None:
    rng = np.random.default_rng(0)
    a, b = Gallery(D), Gallery(D)
    a.add_many(["x", "y", "z"], unit(rng, 3))
    b.add_many(["u", "v"], unit(rng, 2))
    m = a.similarity_matrix(b)
    assert m.shape == (3, 2) and m.dtype == np.float32
    np.testing.assert_allclose(m, a.embeddings @ b.embeddings.T, rtol=1e-6)
    np.testing.assert_allclose(np.diag(a.similarity_matrix()), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="dim"):
        a.similarity_matrix(Gallery(D + 1))


# ------------------------------------------------------------------------------------------ persistence


@pytest.mark.parametrize("suffix", [".rdg", ".npz", ".json"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    labels, x = clustered(5, 4)
    g = Gallery(D, threshold=0.3, max_per_label=4, drop_policy="drop_oldest", index="exact", faiss_above=500)
    g.add_many(labels, x)
    g.remove("id1")
    g.add("id0", x[-1])  # evicts id0's oldest: rows now out of age order
    path = g.save(tmp_path / f"gallery{suffix}")
    assert path == tmp_path / f"gallery{suffix}" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    h = Gallery.load(path)
    assert h.config == g.config and h.dim == D
    assert rows_by_label(h) == rows_by_label(g)
    # ages survive: the next eviction of id0 removes the same vector in both
    extra = unit(np.random.default_rng(9), 1)[0]
    g.add("id0", extra)
    h.add("id0", extra)
    assert rows_by_label(h) == rows_by_label(g)


def sources_by_label(g: Gallery) -> dict[str, list[str]]:
    return {label: sorted(g.sources(label)) for label in g.unique_labels}


@pytest.mark.parametrize("suffix", [".rdg", ".npz", ".json"])
def test_row_sources_follow_their_rows_through_changes_and_files(tmp_path: Path, suffix: str) -> None:
    # What a row was made from (serve's kept reference image) goes with the row: an eviction or a removal
    # moves the last row into the freed slot, and a save writes the rows oldest first.
    rng = np.random.default_rng(3)
    g = Gallery(D, max_per_label=2, index="exact")
    g.add_many(["a", "b", "a"], unit(rng, 3), ["/r/a.jpg", None, "/r/a--2.jpg"])
    g.add("b", unit(rng, 1)[0], source="/r/b--2.jpg")
    g.add("a", unit(rng, 1)[0], source="/r/a--3.jpg")  # evicts a.jpg, the oldest
    assert sources_by_label(g) == {"a": ["/r/a--2.jpg", "/r/a--3.jpg"], "b": ["/r/b--2.jpg"]}
    g.remove("b")
    g.add("c", unit(rng, 1)[0])
    h = Gallery.load(g.save(tmp_path / f"g{suffix}"))
    assert sources_by_label(h) == {"a": ["/r/a--2.jpg", "/r/a--3.jpg"], "c": []}
    h.add("a", unit(rng, 1)[0], source="/r/a--4.jpg")  # ages survived: a--2 is the oldest
    assert sources_by_label(h)["a"] == ["/r/a--3.jpg", "/r/a--4.jpg"]
    with pytest.raises(ValueError, match="source 0"):
        g.add("a", unit(rng, 1)[0], source="")


def test_rdg_holds_sources_beyond_a_messages_meta_bound(tmp_path: Path) -> None:
    # The sources travel in the .rdg's meta JSON, which a fleet message keeps under 1 MiB; a gallery of a
    # few thousand references passes that and must still save and load.
    n = 30_000
    g = Gallery(D, max_per_label=None)
    names = [f"/srv/reid/references/person_{i:05d}--{i}.jpg" for i in range(n)]
    g.add_many([f"p{i % 50}" for i in range(n)], unit(np.random.default_rng(0), n), names)
    path = g.save(tmp_path / "g.rdg")
    assert path.stat().st_size > n * D * 4 + codec.MAX_META_BYTES
    h = Gallery.load(path)
    assert sorted(s for label in h.unique_labels for s in h.sources(label)) == sorted(names)


def test_empty_gallery_round_trip(tmp_path: Path) -> None:
    for suffix in (".rdg", ".npz", ".json"):
        h = Gallery.load(Gallery(D).save(tmp_path / f"e{suffix}"))
        assert len(h) == 0 and h.dim == D


def test_rdg_file_is_a_codec_blob(tmp_path: Path) -> None:
    g = Gallery(D)
    g.add_many(["a", "b"], unit(np.random.default_rng(0), 2))
    batch = codec.decode(g.save(tmp_path / "g.rdg").read_bytes())
    assert batch.labels == ("a", "b") and batch.meta is not None
    assert batch.meta["format"] == gallery.FORMAT_TAG and batch.meta["dim"] == D


def test_failed_save_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = Gallery(D)
    g.add("a", np.ones(D))
    path = g.save(tmp_path / "g.rdg")
    before = path.read_bytes()
    g.add("b", -np.ones(D))

    def boom(*args: Any, **kw: Any) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(codec, "write", boom)
    with pytest.raises(DataError, match=r"cannot save the gallery as .*g\.rdg: disk full"):
        g.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.rdg"]


@pytest.mark.parametrize("suffix", [".rdg", ".npz", ".json"])
def test_saved_file_takes_the_umask_or_keeps_its_mode(tmp_path: Path, suffix: str) -> None:
    # Regression: a gallery was saved through a mkstemp file, 0600 whatever the umask: enrolled by one user,
    # it could not be read by the service (another user) that loads it, and each save made it so again.
    g = Gallery(D)
    g.add("a", np.ones(D))
    old = os.umask(0o022)
    try:
        path = g.save(tmp_path / f"g{suffix}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o640)
        g.add("b", -np.ones(D))
        g.save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 and len(Gallery.load(path)) == 2
    finally:
        os.umask(old)


def test_saving_where_no_file_can_be_is_a_data_error(tmp_path: Path) -> None:
    # Regression: `enroll --gallery` naming a folder (or a path under a file) ended in an OSError traceback.
    g = Gallery(D)
    g.add("a", np.ones(D))
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "afile").touch()
    for path in (tmp_path / "folder.npz", tmp_path / "afile" / "g.npz"):
        with pytest.raises(DataError, match="cannot save the gallery as"):
            g.save(path)


def test_save_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suffix must be one of"):
        Gallery(D).save(tmp_path / "g.pkl")


@pytest.fixture()
def saved(tmp_path: Path) -> dict[str, Path]:
    g = Gallery(D)
    g.add_many(["a", "b", "c"], unit(np.random.default_rng(0), 3))
    return {s: g.save(tmp_path / f"g{s}") for s in (".rdg", ".npz", ".json")}


@pytest.mark.parametrize("suffix", [".rdg", ".npz", ".json"])
def test_truncated_files(saved: dict[str, Path], suffix: str) -> None:
    path = saved[suffix]
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(DataError, match=str(path.name)):
            Gallery.load(path)


def test_corrupt_rdg_byte(saved: dict[str, Path]) -> None:
    path = saved[".rdg"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        Gallery.load(path)


def test_a_json_gallery_with_a_digit_changed_is_refused_naming_the_file(saved: dict[str, Path]) -> None:
    """A .json gallery carried no checksum where the .rdg form has one: a digit changed in an embedding, a label
    or a setting (a bad disk, an editor slip) was read as it was, the wrong row searched without a word."""
    path = saved[".json"]
    text = path.read_text(encoding="utf-8")
    doc = json.loads(text)
    first = repr(doc["embeddings"][1][2])
    digit = next(i for i, c in enumerate(first) if c in "123456789")
    changed = first[:digit] + ("1" if first[digit] != "1" else "2") + first[digit + 1 :]
    edits = [
        text.replace(first, changed, 1),
        text.replace('"labels": ["a", "b", "c"]', '"labels": ["a", "b", "d"]'),
        text.replace('"threshold": 0.5', '"threshold": 0.6'),
    ]
    for edited in edits:
        assert edited != text
        path.write_text(edited, encoding="utf-8")
        with pytest.raises(DataError) as e:
            Gallery.load(path)
        assert str(e.value).startswith(f"{path}: checksum mismatch: the content's sha256 is "), e.value
        assert "delete its 'sha256' field" in str(e.value)


def test_a_json_gallery_rewritten_with_its_keys_reordered_keeps_its_checksum(saved: dict[str, Path]) -> None:
    """The checksum is of canonical JSON (sorted keys): a gallery a JSON tool rewrote, its fields in another
    order and indented otherwise but no value changed, is the same gallery and is read (mutation audit: a digest
    of the keys in the file's order refused it as corrupt)."""
    path = saved[".json"]
    doc = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(dict(reversed(list(doc.items()))), indent=1), encoding="utf-8")
    assert Gallery.load(path).labels == ["a", "b", "c"]


def test_a_json_gallery_without_a_checksum_is_read_and_a_bad_checksum_field_named(
    saved: dict[str, Path],
) -> None:
    """Files written before the checksum, and galleries written by hand, have none: they are read as before; a
    checksum field that is no sha256 is named."""
    path = saved[".json"]
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert re.fullmatch(r"[0-9a-f]{64}", doc["sha256"])
    kept = Gallery.load(path)
    # the right digest in upper case is named as the wrong form, not as a mismatch (mutation audit)
    bad = ("", "ABC", 7, "0" * 64, doc["sha256"].upper())
    for value, fine in ((None, True), *((b, False) for b in bad)):
        edited = {k: v for k, v in doc.items() if k != "sha256"}
        if value is not None:
            edited["sha256"] = value
        path.write_text(json.dumps(edited), encoding="utf-8")
        if fine:
            again = Gallery.load(path)
            assert again.labels == kept.labels and np.array_equal(again.embeddings, kept.embeddings)
            continue
        with pytest.raises(DataError, match=str(path)) as e:
            Gallery.load(path)
        said = "checksum mismatch" if value == "0" * 64 else "sha256 must be 64 lower-case hex"
        assert said in str(e.value), e.value


def test_a_relative_gallery_path_not_found_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`recognize --gallery people.npz` (or a service's relative path) said only 'people.npz: gallery file not
    found', where the video of a source says where it looked: from a unit's working directory, or a folder
    other than the config's, the file the user sees beside the config is not the one looked for."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        Gallery.load(Path("people.npz"))
    assert str(e.value) == (
        f"people.npz: gallery file not found (looked for at {tmp_path / 'people.npz'}: a relative path is taken "
        "from the working directory)"
    )
    with pytest.raises(DataError) as e:
        Gallery.load(tmp_path / "people.npz")
    assert str(e.value) == f"{tmp_path / 'people.npz'}: gallery file not found"  # an absolute one says itself


def test_a_gallery_path_that_is_a_named_pipe_is_named_so(tmp_path: Path) -> None:
    """A named pipe (or a device) at the gallery's path was 'gallery file not found', for a path that is there."""
    pipe = tmp_path / "people.npz"
    os.mkfifo(pipe)
    with pytest.raises(DataError) as e:
        Gallery.load(pipe)
    assert str(e.value) == f"{pipe} is not a regular file (a named pipe, a device), not a gallery file"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        Gallery.load(tmp_path / "missing.rdg")
    with pytest.raises(DataError, match="unknown gallery file type"):
        Gallery.load(tmp_path / "g.txt")
    (tmp_path / "folder.npz").mkdir()  # it was 'gallery file not found', for a path that is there
    with pytest.raises(DataError, match=r"folder\.npz is a folder, not a gallery file"):
        Gallery.load(tmp_path / "folder.npz")
    foreign = tmp_path / "foreign.rdg"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="bad magic"):
        Gallery.load(foreign)
    plain = tmp_path / "plain.rdg"  # a valid codec blob that is not a gallery
    plain.write_bytes(codec.encode(codec.EmbeddingBatch(np.ones((1, D), np.float32))))
    with pytest.raises(DataError, match="no labels"):
        Gallery.load(plain)


@pytest.mark.parametrize("suffix", [".rdg", ".npz", ".json"])
def test_unreadable_file_is_a_data_error_naming_it(tmp_path: Path, suffix: str) -> None:
    # Regression: a gallery the user may not read (or an I/O error) ended in an OSError traceback for .rdg and
    # .json (`verify`, `recognize`, `serve`, `enroll --append`), naming neither the file nor the problem
    path = unreadable_file(tmp_path / f"g{suffix}")
    with pytest.raises(DataError, match=str(path)) as err:
        Gallery.load(path)
    assert "Input/output error" in str(err.value)


def write_json(path: Path, **changes: Any) -> Path:
    doc: dict[str, Any] = {
        "format": gallery.FORMAT_TAG,
        "version": gallery.FORMAT_VERSION,
        "dim": 2,
        "config": {},
        "labels": ["a"],
        "embeddings": [[1.0, 0.0]],
    }
    doc.update(changes)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, None),
        ({"format": "other"}, "not a gallery file"),
        ({"version": 99}, "unsupported gallery format version 99"),
        ({"dim": "2"}, "dim must be an integer"),
        ({"config": {"threshold": 7}}, "invalid gallery settings: threshold"),
        ({"config": {"bogus": 1}}, "invalid gallery settings: bogus"),
        ({"embeddings": [[1.0, 0.0, 0.0]]}, "inconsistent shapes"),
        ({"labels": ["a", "b"]}, "inconsistent shapes"),
        ({"embeddings": [[1.0], [0.0, 1.0]]}, "inconsistent shapes"),
        ({"embeddings": [[0.0, 0.0]]}, "zero vector"),
        ({"labels": [""]}, "empty"),
        ({"labels": "a"}, "must be lists"),
        ({"sources": ["/r/a.jpg", None]}, "sources must be a list of 1"),
        ({"sources": [""]}, "source 0 must be a non-empty str"),
    ],
)
def test_json_content_errors(tmp_path: Path, changes: dict[str, Any], message: str | None) -> None:
    path = write_json(tmp_path / "g.json", **changes)
    if message is None:
        assert Gallery.load(path).labels == ["a"]
        return
    with pytest.raises(DataError, match=message) as err:
        Gallery.load(path)
    assert str(path) in str(err.value)


def test_a_label_longer_than_a_peer_takes_is_refused_on_add_and_load(tmp_path: Path) -> None:
    """A gallery took labels up to the binary format's 65535 bytes (a hand-made .json, the Python API), where a
    fleet's peers refuse a label of more than LABEL_MAX_BYTES and with it the whole batch it is sent in: every
    profile of that camera's batch lost on every peer. The gallery refuses it, naming the label and the file."""
    from daemon.config import LABEL_MAX_BYTES

    longest = "ü" * (LABEL_MAX_BYTES // 2) + "x" * (LABEL_MAX_BYTES % 2)
    g = Gallery(2)
    assert g.add(longest, [1.0, 0.0]) == 0
    over = longest + "x"
    with pytest.raises(
        ValueError, match=rf"is {LABEL_MAX_BYTES + 1} UTF-8 bytes, more than the {LABEL_MAX_BYTES}"
    ):
        g.add(over, [1.0, 0.0])
    with pytest.raises(ValueError, match="label 1 "):
        g.add_many(["a", over], [[1.0, 0.0], [0.0, 1.0]])
    assert g.labels == [longest]
    path = write_json(tmp_path / "long.json", labels=[over])
    with pytest.raises(DataError, match=r"long\.json: invalid gallery content: label 0 .* more than the"):
        Gallery.load(path)


def test_a_file_whose_label_holds_more_rows_than_its_cap_is_refused(tmp_path: Path) -> None:
    """A gallery file holding more rows of a label than its own max_per_label (made by hand or by a script, or
    its cap lowered by hand) was read with the extra rows dropped without a word (40 rows of 'a', cap 8: 8 read),
    and the next writer (enroll --append, serve, unenroll) saved the 8 over the file: 32 rows lost. It is
    refused, naming the label, the counts and what to change; at the cap exactly it is read whole."""
    rows = np.eye(2).tolist()
    cfg = {"max_per_label": 8, "drop_policy": "drop_latest"}
    whole = write_json(tmp_path / "whole.json", config=cfg, labels=["a"] * 8, embeddings=rows * 4)
    assert len(Gallery.load(whole)) == 8
    path = write_json(
        tmp_path / "over.json", config=cfg, labels=["a"] * 40 + ["b"] * 9, embeddings=rows * 24 + [rows[0]]
    )
    start = path.read_bytes()
    with pytest.raises(DataError) as e:
        Gallery.load(path)
    assert str(e.value) == (
        f"{path}: label 'a' holds 40 rows (and 1 more label(s)), more than the gallery's max_per_label 8 (its "
        "config): reading it would drop 32 of them; raise its config's max_per_label (or set it to null) in the "
        "file, or remove rows"
    )
    assert path.read_bytes() == start
    uncapped = write_json(
        tmp_path / "uncapped.json", config={"max_per_label": None}, labels=["a"] * 40, embeddings=rows * 20
    )
    assert len(Gallery.load(uncapped)) == 40


def test_deeply_nested_json_is_a_data_error(tmp_path: Path) -> None:
    # Regression: a corrupt gallery .json nested past Python's recursion limit gave a RecursionError traceback.
    path = tmp_path / "deep.json"
    path.write_text('{"labels": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    with pytest.raises(DataError, match=r"deep\.json: not valid UTF-8 JSON"):
        Gallery.load(path)


def test_npz_that_is_no_zip_archive_is_named_so(saved: dict[str, Path]) -> None:
    # a .json gallery renamed .npz, or a stray byte, was "unreadable .npz (object arrays are refused: This file
    # contains pickled (object) data...)": numpy's guess for a file that is not an archive, and a wrong one
    renamed = saved[".json"].with_name("renamed.npz")
    renamed.write_bytes(saved[".json"].read_bytes())
    stray = renamed.with_name("stray.npz")
    stray.write_bytes(b"x")
    for path in (renamed, stray):
        with pytest.raises(DataError, match=r"not a \.npz archive") as e:
            Gallery.load(path)
        assert "pickled" not in str(e.value) and "object arrays" not in str(e.value)


def test_npz_whose_start_is_no_archive_is_named_so(saved: dict[str, Path]) -> None:
    # Regression: a .npz whose first bytes were damaged (its index at the end intact) was "unreadable .npz (object
    # arrays are refused: This file contains pickled (object) data...)", and a bare .npy array named .npz was
    # "invalid gallery content: 'numpy.ndarray' object does not support the context manager protocol"
    damaged = saved[".npz"].with_name("damaged.npz")
    damaged.write_bytes(b"XXXX" + saved[".npz"].read_bytes()[4:])
    array = saved[".npz"].with_name("array.npz")
    with array.open("wb") as fh:
        np.save(fh, np.ones((2, D), np.float32))
    for path, start in ((damaged, "b'XXXX'"), (array, "b'\\x93NUM'")):
        with pytest.raises(DataError, match=r"not a \.npz archive") as e:
            Gallery.load(path)
        assert str(path) in str(e.value) and start in str(e.value), e.value
        assert "pickled" not in str(e.value) and "context manager" not in str(e.value)


def test_npz_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, embeddings=np.ones((1, 2)))
    with pytest.raises(DataError, match="missing arrays"):
        Gallery.load(bad)
    pickled = tmp_path / "pickled.npz"
    settings_ = json.dumps({"format": gallery.FORMAT_TAG, "version": 1, "dim": 2, "config": {}})
    np.savez(
        pickled,
        settings=np.array(settings_),
        labels=np.array([{"a": 1}], dtype=object),
        embeddings=np.ones((1, 2)),
    )
    with pytest.raises(DataError, match="object arrays are refused"):
        Gallery.load(pickled)
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, settings=np.array(settings_), labels=np.array(["a", "b"]), embeddings=np.ones((1, 2)))
    with pytest.raises(DataError, match="inconsistent shapes"):
        Gallery.load(shapes)


@pytest.mark.parametrize("kind", ["pq", "hnsw"])
def test_tune_and_k_beyond_size(kind: FaissKind) -> None:
    tuning = GalleryConfig(faiss_kind=kind, blas_threads=0)
    g = Gallery(D, index="faiss", threshold=-1, tuning=tuning)
    g.add_many(["a", "b", "c"], unit(np.random.default_rng(1), 3))
    g.remove("b")
    g.tune(hnsw_ef_search=4, pq_candidates=1)
    assert g.config.hnsw_ef_search == 4 and g.config.pq_candidates == 1
    res = g.search(g.embeddings[0], k=10)  # more than the gallery holds, with a tombstone in the index
    assert sorted(m.label for m in res.matches) == ["a", "c"]
    with pytest.raises(ValueError, match="hnsw_ef_search"):
        g.tune(hnsw_ef_search=0)
    with pytest.raises(ValueError, match="tune takes"):
        g.tune(threshold=0.1)


def test_latest_reads_the_file_again_only_when_another_writer_changed_it(tmp_path: Path) -> None:
    # serve and enroll --append keep a gallery in memory between writes: `latest` tells them when the file is
    # no longer what they last read or wrote (another process saved it, or made it while theirs was new).
    from daemon.gallery import latest

    path = tmp_path / "g.npz"
    mine = Gallery(4)
    assert latest(mine, path) is mine  # no file yet
    theirs = Gallery(4)
    theirs.add("ann", [1, 0, 0, 0])
    theirs.save(path)
    assert latest(mine, path).labels == ["ann"]  # made while mine was new
    mine = Gallery.load(path)
    assert latest(mine, path) is mine
    mine.add("bob", [0, 1, 0, 0])
    mine.save(path)
    assert latest(mine, path) is mine  # its own save
    theirs.add("carl", [0, 0, 1, 0])
    theirs.save(path)  # same size as mine's file: told apart by the new file (inode) a save makes
    assert latest(mine, path).labels == ["ann", "carl"]


def test_latest_takes_a_gallery_file_deleted_since_as_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: a file deleted under a writer (serve, enroll --append) left `latest` returning the copy held,
    # whose next save wrote every deleted entry back
    from daemon.gallery import latest

    path = tmp_path / "g.npz"
    mine = Gallery(4, threshold=0.7, max_per_label=3)
    mine.add_many(["ann", "bob"], np.eye(4, dtype=np.float32)[:2])
    mine.embedder = "m sha256:00"
    mine.save(path)
    path.unlink()
    now = latest(mine, path)
    assert len(now) == 0 and now.config == mine.config and now.embedder == "m sha256:00"
    assert (
        f"the gallery file {path} is gone" in caplog.text
        and "its 2 entries are not written back" in caplog.text
    )
    caplog.clear()
    assert latest(now, path) is now and not caplog.text  # said once
    now.add("carl", [0, 0, 1, 0])
    now.save(path)
    assert Gallery.load(path).labels == ["carl"]


def test_a_file_read_again_does_not_repeat_its_once_only_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: a gallery that records no embedder, used with a projection head, warned once per copy, so a
    # writer reading the file again after another process saved it (latest) warned again each time.
    from daemon.gallery import latest

    path = tmp_path / "g.npz"
    old = Gallery(4)  # records no embedder: written before galleries did
    old.add("ann", [1, 0, 0, 0])
    old.save(path)
    signature = "m.onnx sha256:aa + head h.npz sha256:bb; crops 4x4"
    mine = Gallery.load(path)
    with caplog.at_level("WARNING", logger="daemon.gallery"):
        for label in ("bob", "carl"):
            mine.check_embedder(signature, "the embedder")
            theirs = Gallery.load(path)
            theirs.add(label, [0, 1, 0, 0])
            theirs.save(path)
            mine = latest(mine, path)
        mine.check_embedder(signature, "the embedder")
    assert mine.labels == ["ann", "bob", "carl"]
    assert caplog.text.count("does not record the model and head") == 1, caplog.text


_WAIT_POLICY = """
import os, sys
import numpy as np
from daemon.config import GalleryConfig
from daemon.gallery import Gallery
g = Gallery.from_config(GalleryConfig(index="faiss"), 8)
for i, row in enumerate(np.eye(8, dtype=np.float32)):
    g.add(str(i), row)
g.search(np.eye(8, dtype=np.float32)[0])
print(os.environ.get("OMP_WAIT_POLICY"), "faiss" in sys.modules)
"""


@pytest.mark.parametrize(("given", "taken"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_faiss_loads_with_its_openmp_threads_sleeping_unless_the_environment_says(
    given: str | None, taken: str
) -> None:
    # Regression: FAISS's OpenMP threads spun while waiting (OpenMP's default), which took a 10k-row PQ build
    # from ~2 s to ~55 s on two cores with other work beside it (benchmarks/RESULTS.md, gallery). The policy
    # is set before FAISS loads, a user's own kept.
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _WAIT_POLICY], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [taken, "True"]
