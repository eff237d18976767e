"""Retrieval metrics (mAP, CMC) against hand-computed cases and a brute-force reference; the gt split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from _video import make_video
from pydantic import ValidationError

from daemon import retrieval
from daemon.motio import ground_truth_from_array
from daemon.retrieval import (
    CropSet,
    Embedded,
    SplitConfig,
    average_precision,
    build_split,
    embed_crop_sets,
    evaluate,
)
from daemon.types import FloatArray, ImageBGR


def _unit(v: list[list[float]]) -> FloatArray:
    a = np.asarray(v, np.float32)
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def _emb(feats: FloatArray, ids: list[int], frames: list[int]) -> Embedded:
    return Embedded(feats, np.asarray(ids, np.int64), np.asarray(frames, np.int64))


# ------------------------------------------------------------------------------------- hand-computed


def test_average_precision_by_hand() -> None:
    assert average_precision(np.array([True, False, True])) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision(np.array([False, True])) == pytest.approx(0.5)
    assert average_precision(np.array([False, False, True, True])) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert math.isnan(average_precision(np.array([False, False])))


def test_evaluate_small_case_by_hand() -> None:
    # gallery on the unit circle at angles 0, 30, 60, 90 degrees; ids 1, 2, 1, 2
    ang = np.deg2rad([0, 30, 60, 90])
    g = _emb(np.column_stack([np.cos(ang), np.sin(ang)]).astype(np.float32), [1, 2, 1, 2], [100] * 4)
    # query id 1 at 0 degrees: ranking 0,30,60,90 -> matches T F T F -> AP (1 + 2/3)/2, rank-1 hit
    # query id 2 at 5 degrees: ranking 0,30,60,90 -> matches F T F T -> AP (1/2 + 2/4)/2, first hit at rank 2
    q = _emb(_unit([[1, 0], [np.cos(np.deg2rad(5)), np.sin(np.deg2rad(5))]]), [1, 2], [0, 0])
    s = evaluate(q, g, junk_frames=10, max_rank=4)
    assert s.queries == 2 and s.skipped == 0
    assert s.mean_ap == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2 + 2 / 4) / 2) / 2)
    np.testing.assert_allclose(s.cmc, [0.5, 1.0, 1.0, 1.0])
    assert s.rank1 == 0.5 and s.rank(5) == 1.0
    assert "mAP" in s.text()


def test_evaluate_scores_every_query_of_a_later_chunk_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # queries are scored _QUERY_CHUNK (256) at a time; no test had more than 40, so a mutant scoring a later
    # chunk's queries with the identity and frame of the first chunk's passed every test. With chunks of 2,
    # the third query (id 2 at 90 degrees: ranking 90, 60, 30, 0 -> T F T F) is scored as itself.
    monkeypatch.setattr(retrieval, "_QUERY_CHUNK", 2)
    ang = np.deg2rad([0, 30, 60, 90])
    g = _emb(np.column_stack([np.cos(ang), np.sin(ang)]).astype(np.float32), [1, 2, 1, 2], [100] * 4)
    q = _emb(_unit([[1, 0], [np.cos(np.deg2rad(5)), np.sin(np.deg2rad(5))], [0, 1]]), [1, 2, 2], [0, 0, 0])
    s = evaluate(q, g, junk_frames=10, max_rank=4)
    aps = [(1 + 2 / 3) / 2, (1 / 2 + 2 / 4) / 2, (1 + 2 / 3) / 2]
    assert s.queries == 3 and s.mean_ap == pytest.approx(sum(aps) / 3)
    np.testing.assert_allclose(s.cmc, [2 / 3, 1.0, 1.0, 1.0])


def test_junk_rule_drops_near_duplicates_and_skips_queries_left_without_a_match() -> None:
    g = _emb(_unit([[1, 0], [0, 1], [1, 1]]), [1, 2, 1], [10, 10, 60])
    q = _emb(_unit([[1, 0.01]]), [1], [12])
    # gallery row 0 (same id, 2 frames away) is junk: the remaining ranking is row 2 (45 deg) then row 1
    s = evaluate(q, g, junk_frames=5)
    assert s.mean_ap == pytest.approx(1.0) and s.rank1 == 1.0
    # a wider window makes row 2 junk as well: no match is left, the query is skipped
    s = evaluate(q, g, junk_frames=100)
    assert s.queries == 0 and s.skipped == 1 and math.isnan(s.mean_ap)
    # junk only concerns the query's own identity: row 2 (id 1, same frame as the query) stays ranked,
    # and rows 0 and 1 tie (cosine 0.707), so gallery order decides: ranking 2, 0, 1 -> AP 1/3
    s = evaluate(_emb(_unit([[1, 1]]), [2], [60]), g, junk_frames=5)
    assert s.mean_ap == pytest.approx(1 / 3) and s.rank1 == 0.0
    np.testing.assert_allclose(s.cmc[:3], [0.0, 0.0, 1.0])


def test_ties_keep_gallery_order_in_a_long_ranking_and_rank_k_reads_its_own_k() -> None:
    # "ties keep gallery order": 20 gallery rows tie at cosine 1, the query's only match the last of them, so
    # it ranks 20th (AP 1/20). numpy's default sort keeps ties in order for short arrays only: a mutant
    # sorting without kind="stable" passed every test (here it ranks the match 17th). rank(k) is CMC rank-k
    # (a mutant reading rank k+1 for k < max_rank passed too).
    feats = np.zeros((40, 2), np.float32)
    feats[:20], feats[20:] = (0, 1), (1, 0)
    g = _emb(feats, [2] * 39 + [1], [1000] * 40)
    s = evaluate(_emb(_unit([[1, 0]]), [1], [0]), g, junk_frames=0, max_rank=20)
    assert s.mean_ap == pytest.approx(1 / 20)
    np.testing.assert_array_equal(s.cmc, [0.0] * 19 + [1.0])
    assert (s.rank(19), s.rank(20), s.rank(21)) == (0.0, 1.0, 1.0)


def test_evaluate_rejects_bad_input() -> None:
    g = _emb(_unit([[1, 0]]), [1], [0])
    with pytest.raises(ValueError, match="dim"):
        evaluate(_emb(_unit([[1, 0, 0]]), [1], [0]), g, 0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(_emb(np.array([[np.nan, 1]], np.float32), [1], [0]), g, 0)
    with pytest.raises(ValueError, match="disagree"):
        evaluate(Embedded(_unit([[1, 0]]), np.array([1, 2]), np.array([0])), g, 0)


# ------------------------------------------------------------------------------------- brute force


def _brute(q: Embedded, g: Embedded, junk: int, max_rank: int) -> tuple[float, list[float], int]:
    aps, firsts = [], []
    for i in range(len(q.ids)):
        items = []
        for j in range(len(g.ids)):
            if g.ids[j] == q.ids[i] and abs(int(g.frames[j]) - int(q.frames[i])) <= junk:
                continue
            items.append((-float(q.features[i] @ g.features[j]), j, bool(g.ids[j] == q.ids[i])))
        items.sort(key=lambda t: (t[0], t[1]))
        ranks = [r for r, (_, _, hit) in enumerate(items, start=1) if hit]
        if not ranks:
            continue
        aps.append(sum((k + 1) / r for k, r in enumerate(ranks)) / len(ranks))
        firsts.append(ranks[0])
    cmc = [sum(f <= k for f in firsts) / len(firsts) for k in range(1, max_rank + 1)]
    return sum(aps) / len(aps), cmc, len(aps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, 8))

    def sample(n: int) -> Embedded:
        ids = rng.integers(0, 6, n)
        feats = centres[ids] + 0.9 * rng.standard_normal((n, 8))
        feats = (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)
        return Embedded(feats, ids.astype(np.int64), rng.integers(0, 200, n).astype(np.int64))

    q, g = sample(40), sample(300)
    s = evaluate(q, g, junk_frames=15, max_rank=10)
    mean_ap, cmc, n = _brute(q, g, 15, 10)
    assert s.queries == n and s.skipped == 40 - n
    assert s.mean_ap == pytest.approx(mean_ap, abs=1e-9)
    np.testing.assert_allclose(s.cmc, cmc)


# ------------------------------------------------------------------------------------- split


def _gt(rows: list[tuple[int, int, float, int]]) -> np.ndarray:
    """(frame 1-based, id, height, consider) -> gt array rows."""
    return np.array([[f, i, 10, 20, 10, h, c, -1, -1, -1] for f, i, h, c in rows], np.float64)


def test_build_split_alternates_segments_with_strides_and_filters() -> None:
    rows = [(f + 1, pid, 60.0, 1) for f in range(0, 40) for pid in (1, 2)]
    rows += [(5 + 1, 3, 30.0, 1), (6 + 1, 4, 60.0, 0)]  # too small; not considered
    gt = ground_truth_from_array(_gt(rows))
    cfg = SplitConfig(
        start=10, end=35, segment=10, query_stride=2, gallery_stride=5, min_height=50, junk_frames=3
    )
    split = build_split(gt, cfg)
    # 0-based frames 10..34: segments [10,20) query, [20,30) gallery, [30,35) query
    assert sorted(set(split.query.frames.tolist())) == [10, 12, 14, 16, 18, 30, 32, 34]
    assert sorted(set(split.gallery.frames.tolist())) == [20, 25]
    assert set(split.query.ids.tolist()) == {1, 2} and set(split.gallery.ids.tolist()) == {1, 2}
    assert len(split.query) == 16 and len(split.gallery) == 4
    np.testing.assert_allclose(split.query.xyxy[0], [10, 20, 20, 80])
    assert split.junk_frames == 3 and "16 queries of 2 identities" in split.describe()


def test_build_split_takes_its_bounds_exactly() -> None:
    # frames [start, end), end 0 = up to the last gt frame (included), boxes at least min_height tall (one of
    # exactly min_height kept), strides counted from start (not frame 0); mutants taking 'frame <= end',
    # 'the last frame' as the end for 0, 'height > min_height', or strides from frame 0 passed every test
    rows = [(f + 1, 1, 60.0, 1) for f in range(40)] + [(12 + 1, 5, 50.0, 1)]
    gt = ground_truth_from_array(_gt(rows))

    def cfg(end: int, query_stride: int) -> SplitConfig:
        return SplitConfig(
            start=11, end=end, segment=10, query_stride=query_stride, gallery_stride=1, min_height=50
        )

    every = build_split(gt, cfg(end=0, query_stride=1))
    assert sorted(set(every.query.frames.tolist())) == [*range(11, 21), *range(31, 40)]
    assert sorted(set(every.gallery.frames.tolist())) == list(range(21, 31))
    assert every.query.ids[every.query.frames == 12].tolist() == [1, 5]
    cut = build_split(gt, cfg(end=33, query_stride=2))  # frame 33 would be a query: the end leaves it out
    assert sorted(set(cut.query.frames.tolist())) == [11, 13, 15, 17, 19, 31]


def test_split_config_bounds() -> None:
    with pytest.raises(ValidationError, match="end"):
        SplitConfig(start=100, end=50)
    with pytest.raises(ValidationError):
        SplitConfig(segment=0)
    with pytest.raises(ValidationError):
        SplitConfig(unknown=1)  # type: ignore[call-arg]


class _MeanColour:
    """A fake embedder: the mean BGR colour of each crop (+ a constant), normalised."""

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray:
        rows = []
        for x0, y0, x1, y1 in xyxy.astype(int):
            rows.append(np.append(image[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0), 1.0))
        f = np.asarray(rows, np.float32).reshape(-1, 4)
        return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def test_embed_crop_sets_reads_the_right_boxes_in_order(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "c.mp4", frames=12, people=2)
    boxes = [(b.frame, b.id, b.xyxy) for fr in clip.truth for b in fr]
    picked = [boxes[i] for i in (3, 20, 7, 1)]  # out of order on purpose

    def crop_set(items: list[tuple[int, int, tuple[int, int, int, int]]]) -> CropSet:
        return CropSet(
            np.array([f for f, _, _ in items], np.int64),
            np.array([i for _, i, _ in items], np.int64),
            np.array([b for _, _, b in items], np.float32),
        )

    a, b = embed_crop_sets(
        clip.path, [crop_set(picked[:3]), crop_set(picked[3:])], _MeanColour(), progress=False
    )
    assert a.shape == (3, 4) and b.shape == (1, 4)
    for feat, (_, pid, _) in zip(np.concatenate([a, b]), picked, strict=True):
        colour = np.append(np.asarray(clip.colour(pid), np.float32), 1.0)
        cos = float(feat @ (colour / np.linalg.norm(colour)))
        assert cos > 0.99, (pid, feat)
