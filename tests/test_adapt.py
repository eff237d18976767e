"""Site adaptation: SupCon loss, co-occurrence batches, tracklet mining, the head file, the embedder with a head,
a CLI smoke test and a small real run on PETS09-S2L1."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _crops import png_declaring
from _data import require_pets09_video
from _video import make_video
from pydantic import ValidationError

from daemon.adapt import (
    AdaptConfig,
    BaseModelInfo,
    BatchSampler,
    FrameTracks,
    LabelledFeatures,
    ProjectionHead,
    TrackletMiner,
    Tracklets,
    augment_crop,
    cached_tracklets,
    cooccurrence,
    covered_fraction,
    eligible_boxes,
    init_head_arrays,
    list_reference,
    load_head,
    load_tracklets,
    merge_tracklets,
    mine_tracklets,
    reference_features,
    save_head,
    save_tracklets,
    source_identity,
    supcon_loss,
    train_head,
    valid_pairs,
)
from daemon.cli import main
from daemon.config import EmbedderConfig, EnrollConfig, RuntimeConfig
from daemon.embed import OnnxEmbedder
from daemon.embedding import LEFTOVER_AGE_S
from daemon.enroll import reference_files
from daemon.errors import DataError, ModelError
from daemon.tempdirs import UNLOCKED_AGE_S
from daemon.types import FloatArray, ImageBGR

CPU = RuntimeConfig(providers=("CPUExecutionProvider",))
BASE = BaseModelInfo("toy", "ab" * 32, 6, (256, 128), False)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------- SupCon loss


def _supcon_reference(z: np.ndarray, labels: list[int], valid: np.ndarray | None, t: float) -> float:
    """Khosla et al. L_out written out with loops: the brute-force reference."""
    n = len(labels)
    valid = np.ones((n, n), bool) if valid is None else valid
    per_anchor = []
    for i in range(n):
        others = [a for a in range(n) if a != i and valid[i, a]]
        pos = [p for p in others if labels[p] == labels[i]]
        if not pos or all(labels[a] == labels[i] for a in others):
            continue
        denom = sum(np.exp(z[i] @ z[a] / t) for a in others)
        per_anchor.append(-np.mean([np.log(np.exp(z[i] @ z[p] / t) / denom) for p in pos]))
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def test_supcon_by_hand_on_three_points() -> None:
    # a, a' at 0 and 60 degrees (one label), b at 180 degrees; temperature 1
    z = np.array([[1, 0], [0.5, np.sqrt(3) / 2], [-1, 0]], np.float64)
    loss = supcon_loss(torch.tensor(z), torch.tensor([0, 0, 1]), None, 1.0)
    # anchor 0: -log(e^0.5 / (e^0.5 + e^-1)); anchor 1: -log(e^0.5 / (e^0.5 + e^-0.5)); anchor 2 has no positive
    a0 = -np.log(np.exp(0.5) / (np.exp(0.5) + np.exp(-1)))
    a1 = -np.log(np.exp(0.5) / (np.exp(0.5) + np.exp(-0.5)))
    assert float(loss) == pytest.approx((a0 + a1) / 2, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_supcon_matches_the_reference_with_and_without_a_mask(seed: int) -> None:
    rng = np.random.default_rng(seed)
    z = _unit(rng.standard_normal((12, 5)))
    labels = rng.integers(0, 4, 12).tolist()
    valid = rng.random((12, 12)) < 0.6
    valid = valid | valid.T
    for v in (None, valid):
        got = supcon_loss(torch.tensor(z), torch.tensor(labels), None if v is None else torch.tensor(v), 0.2)
        assert float(got) == pytest.approx(_supcon_reference(z, labels, v, 0.2), rel=1e-9)


def test_supcon_prefers_clustered_features_and_ignores_anchors_without_contrast() -> None:
    rng = np.random.default_rng(0)
    centres = _unit(rng.standard_normal((4, 16)))
    labels = np.repeat(np.arange(4), 5)
    clustered = _unit(centres[labels] + 0.05 * rng.standard_normal((20, 16)))
    shuffled = clustered[rng.permutation(20)]
    lab = torch.tensor(labels)
    assert float(supcon_loss(torch.tensor(clustered), lab, None, 0.1)) < float(
        supcon_loss(torch.tensor(shuffled), lab, None, 0.1)
    )
    # one label only: no negative anywhere -> 0, and still differentiable
    z = torch.tensor(clustered[:5], requires_grad=True)
    loss = supcon_loss(z, torch.zeros(5, dtype=torch.int64), None, 0.1)
    loss.backward()  # type: ignore[no-untyped-call]
    assert float(loss.detach()) == 0.0 and z.grad is not None


# ------------------------------------------------------------------------------------------- co-occurrence


class _FakeEmbedder:
    """Features = (x0, y0, frame marker...) so tests can see which box was embedded; counts boxes embedded."""

    dim = 6

    def __init__(self) -> None:
        self.boxes = 0

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray:
        self.boxes += len(xyxy)
        f = np.column_stack([xyxy, np.full(len(xyxy), float(image[0, 0, 0])), np.ones(len(xyxy))])
        return _unit(f.astype(np.float32)).astype(np.float32)

    def embed_crops(self, crops: list[ImageBGR]) -> FloatArray:
        return _unit(np.array([[c.shape[0], c.shape[1], 1, 1, 1, 1] for c in crops], np.float32))


def _frame(
    index: int, tracks: dict[int, tuple[float, float, float, float]], score: float = 0.9
) -> FrameTracks:
    ids = sorted(tracks)
    boxes = np.array([tracks[i] for i in ids], np.float32).reshape(-1, 4)
    return FrameTracks(
        index, boxes, np.full(len(ids), score, np.float32), np.array(ids, np.int64), np.arange(len(ids))
    )


IMG = np.full((400, 600, 3), 7, np.uint8)
A, B, C = (10, 10, 40, 110), (200, 10, 230, 110), (400, 10, 430, 110)  # 100 px tall, far apart


def test_covered_fraction_and_eligibility() -> None:
    boxes = np.array([A, (20, 20, 40, 60), B, (200, 10, 205, 30)], np.float32)
    cov = covered_fraction(boxes)
    assert cov[1] == pytest.approx(1.0)  # inside A
    assert cov[0] == pytest.approx(20 * 40 / (30 * 100))
    cfg = AdaptConfig(min_height=48, min_score=0.5, max_covered=0.15)
    ok = eligible_boxes(boxes, np.array([0.9, 0.9, 0.4, 0.9], np.float32), cfg)
    assert ok.tolist() == [False, False, False, False]  # covered, covered, low score, too small
    ok = eligible_boxes(np.array([A, B], np.float32), np.array([0.9, 0.9], np.float32), cfg)
    assert ok.tolist() == [True, True]
    assert covered_fraction(np.zeros((0, 4), np.float32)).shape == (0,)


def test_miner_labels_cooccurrence_gaps_and_cliques() -> None:
    cfg = AdaptConfig(sample_every=1, max_gap=5, min_track_samples=2, max_per_track=50)
    emb = _FakeEmbedder()
    frames = [_frame(f, {1: A, 2: B}) for f in range(0, 5)]  # tracks 1 and 2 together
    frames += [_frame(f, {3: C}) for f in range(5, 20)]  # track 3 alone: never with 1 or 2
    frames += [_frame(f, {1: A, 3: C}) for f in range(20, 23)]  # track 1 back after a gap > 5: new label
    t = mine_tracklets(((IMG, ft) for ft in frames), emb, cfg)
    assert t.num_tracks == 4 and len(t.labels) == 5 + 5 + 15 + 3 + 3 == emb.boxes
    label_of = {
        (int(tid), int(f)): int(lab) for tid, f, lab in zip(t.track_ids, t.frames, t.labels, strict=True)
    }
    first1, second1 = label_of[(1, 0)], label_of[(1, 20)]
    two, three = label_of[(2, 0)], label_of[(3, 5)]
    assert first1 != second1 and label_of[(3, 20)] == three
    assert t.cooccur[first1, two] and t.cooccur[two, first1]
    assert t.cooccur[second1, three]
    # never seen together: unknown relation, not a negative (it may be the same person)
    assert not t.cooccur[first1, three] and not t.cooccur[first1, second1] and not t.cooccur[two, three]
    assert not t.cooccur.diagonal().any()
    assert sorted(tuple(c.tolist()) for c in t.cliques) == sorted(
        [tuple(sorted((first1, two))), tuple(sorted((second1, three)))]
    )


def test_miner_skips_bad_boxes_respects_caps_and_reuses_embeddings() -> None:
    emb = _FakeEmbedder()
    cfg = AdaptConfig(sample_every=2, max_per_track=3, min_track_samples=2, max_samples=1000, max_gap=100)
    miner = TrackletMiner(cfg, emb)
    for f in range(40):
        miner.add(IMG, _frame(f, {1: A, 2: (200, 10, 210, 40)}))  # track 2 is too small: never sampled
    t = miner.result()
    assert t.num_tracks == 1 and len(t.labels) == 3  # reservoir keeps 3 of the 20 offered samples
    assert set(t.frames.tolist()) <= set(range(0, 40, 2))
    # features given with the frame are used instead of embedding again
    given = np.zeros((2, 6), np.float32)
    given[0] = 1 / np.sqrt(6)
    before = emb.boxes
    miner2 = TrackletMiner(cfg, emb)
    ft = _frame(0, {1: A, 2: B})
    miner2.add(IMG, FrameTracks(ft.index, ft.boxes, ft.scores, ft.track_ids, ft.box_index, given))
    assert emb.boxes == before + 1  # only track 2's box was embedded


def test_miner_stops_at_max_samples() -> None:
    cfg = AdaptConfig(sample_every=1, max_samples=10, min_track_samples=2, max_gap=100)
    frames = (_frame(f, {1: A, 2: B}) for f in range(100))
    t = mine_tracklets(((IMG, ft) for ft in frames), _FakeEmbedder(), cfg)
    assert len(t.labels) == 10 and t.frames_read == 5


def test_miner_counts_augmented_copies_towards_max_samples() -> None:
    """max_samples bounds the features held (memory), but a sampled crop counted once whatever its augmented
    copies: with --augment 16 mining held 17 times the bound (20,000 crops, 340,000 features: 1.7 GB at 1280-d,
    not 100 MB). Each copy counts: 2 tracks x 2 features a frame stop at 12 after 3 frames (before: 6, 24)."""
    cfg = AdaptConfig(sample_every=1, max_samples=12, min_track_samples=2, max_gap=100, augment=1)
    frames = (_frame(f, {1: A, 2: B}) for f in range(100))
    t = mine_tracklets(((IMG, ft) for ft in frames), _FakeEmbedder(), cfg)
    assert len(t.labels) == 12 and len(t.features) == 12 and t.frames_read == 3


def test_augmented_crops_are_camera_like_variants_and_seeded() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (200, 150, 3)).astype(np.uint8)
    box = np.array([20, 30, 80, 190], np.float32)
    a = augment_crop(image, box, np.random.default_rng(5))
    b = augment_crop(image, box, np.random.default_rng(5))
    c = augment_crop(image, box, np.random.default_rng(6))
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    np.testing.assert_array_equal(a, b)  # seeded
    assert a.shape != c.shape or not np.array_equal(a, c)
    assert a.shape[0] <= 190 - 30 + 20  # down-scaled (at most the jittered box)
    # a box hanging off the image still gives a crop
    assert augment_crop(image, np.array([-50, -50, 5, 5], np.float32), rng).size > 0


def test_miner_adds_augmented_copies_as_positives_of_their_track() -> None:
    emb = _FakeEmbedder()
    cfg = AdaptConfig(sample_every=1, max_gap=5, min_track_samples=2, max_per_track=50, augment=2)
    frames = [_frame(f, {1: A, 2: B}) for f in range(4)]
    t = mine_tracklets(((IMG, ft) for ft in frames), emb, cfg)
    assert t.num_tracks == 2 and len(t.labels) == 2 * 4 * 3 and emb.boxes == 8  # 1 + 2 copies per sample
    for lab in (0, 1):
        rows = t.features[t.labels == lab]
        assert len(rows) == 12 and len(set(t.track_ids[t.labels == lab].tolist())) == 1
    assert t.cooccur[0, 1]  # co-occurrence unchanged by the copies


def test_merged_tracklets_keep_cameras_apart() -> None:
    a, b = _toy_tracklets(0), _toy_tracklets(1)
    m = merge_tracklets([a, b])
    n = a.num_tracks
    assert m.num_tracks == n + b.num_tracks and len(m.labels) == len(a.labels) + len(b.labels)
    np.testing.assert_array_equal(m.labels[len(a.labels) :], b.labels + n)
    assert not m.cooccur[:n, n:].any()  # two cameras' tracks: unknown relation, never negatives
    np.testing.assert_array_equal(m.cooccur[n:, n:], b.cooccur)
    assert len(m.cliques) == len(a.cliques) + len(b.cliques)
    with pytest.raises(ValueError):
        merge_tracklets([])


def test_valid_pairs_and_clique_batches() -> None:
    cooc = cooccurrence([np.array([0, 1]), np.array([2, 3])], 4)
    labels = np.array([0, 0, 1, 2, 3])
    v = valid_pairs(labels, cooc)
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 1, 1],
            [0, 0, 0, 1, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(v, expected)
    feats_labels = np.repeat(np.arange(4), 3)
    cfg = AdaptConfig(samples_per_track=4, cliques_per_batch=2)
    sampler = BatchSampler(feats_labels, cfg, np.random.default_rng(0))
    idx, lab, valid = sampler.clique_batch((np.array([0, 1]), np.array([2, 3])), cooc)
    assert sorted(np.unique(lab).tolist()) == [0, 1, 2, 3] and len(idx) == 16
    assert (feats_labels[idx] == lab).all()
    assert not valid[np.ix_(lab == 0, lab == 2)].any() and valid[np.ix_(lab == 0, lab == 1)].all()
    idx, lab = BatchSampler(
        feats_labels, AdaptConfig(tracks_per_batch=2), np.random.default_rng(1)
    ).labelled_batch()
    assert len(np.unique(lab)) == 2 and len(idx) == 2 * AdaptConfig().samples_per_track


def test_tracklet_cache_round_trip(tmp_path: Path) -> None:
    cfg = AdaptConfig(sample_every=1, max_gap=5, min_track_samples=2)
    frames = [_frame(f, {1: A, 2: B, 3: C}) for f in range(6)]
    t = mine_tracklets(((IMG, ft) for ft in frames), _FakeEmbedder(), cfg)
    save_tracklets(t, tmp_path / "t.npz")
    back = load_tracklets(tmp_path / "t.npz")
    assert back is not None
    np.testing.assert_array_equal(back.features, t.features)
    np.testing.assert_array_equal(back.cooccur, t.cooccur)
    assert [c.tolist() for c in back.cliques] == [c.tolist() for c in t.cliques]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert load_tracklets(tmp_path / "bad.npz") is None


def test_a_tracklet_cache_cut_short_is_mined_again_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache file cut short (half its bytes: a copy that stopped, a full disk outside atomic_write) ended adapt
    in zipfile's BadZipFile traceback ('File is not a zip file'); it is named as unreadable and mined again, and
    the new cache written whole."""
    cfg = AdaptConfig(sample_every=1, max_gap=5, min_track_samples=2)
    frames = [_frame(f, {1: A, 2: B, 3: C}) for f in range(6)]
    t = mine_tracklets(((IMG, ft) for ft in frames), _FakeEmbedder(), cfg)
    path = tmp_path / "tracklets-0123456789abcdef0123.npz"
    save_tracklets(t, path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert load_tracklets(path) is None
    assert f"ignoring unreadable feature cache {path}" in caplog.text
    mined = []
    got = cached_tracklets(path, lambda: mined.append(1) or t)
    assert mined == [1] and got is t
    again = load_tracklets(path)
    assert again is not None and np.array_equal(again.features, t.features)


def test_tracklet_caches_written_at_once_each_land_whole(tmp_path: Path) -> None:
    """Regression: the tracklet cache was written through one fixed name (tracklets-<key>.tmp.npz): two adapt
    runs writing it at once renamed each other's file away (FileNotFoundError) or a half-written one, and a run
    killed meanwhile left it. Each writer has its own temporary file (atomic_write)."""
    cfg = AdaptConfig(sample_every=1, max_gap=5, min_track_samples=2)
    t = mine_tracklets(((IMG, _frame(f, {1: A, 2: B})) for f in range(6)), _FakeEmbedder(), cfg)
    path = tmp_path / "tracklets-0123456789abcdef0123.npz"
    failed: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(100):
                save_tracklets(t, path)
        except BaseException as e:  # the failure the test is about, reported below
            failed.append(e)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    assert failed == []
    back = load_tracklets(path)
    assert back is not None and [p.name for p in tmp_path.iterdir()] == [path.name]
    np.testing.assert_array_equal(back.features, t.features)


def test_tracklet_cache_leftovers_of_killed_writers_are_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run killed while it wrote a tracklet cache left its temporary file (as large as the cache) in the cache
    folder for good; a run using that folder removes those LEFTOVER_AGE_S old (another run may be writing a
    young one now) and nothing else there."""
    cfg = AdaptConfig(sample_every=1, max_gap=5, min_track_samples=2)
    t = mine_tracklets(((IMG, _frame(f, {1: A, 2: B})) for f in range(6)), _FakeEmbedder(), cfg)
    key = "0123456789abcdef0123"
    old = tmp_path / f".tracklets-{key}.npz.0123456789ab.tmp"
    young = tmp_path / f".tracklets-{key}.npz.ba9876543210.tmp"
    other = tmp_path / ".head.npz.0123456789ab.tmp"
    for each in (old, young, other):
        each.write_bytes(b"x" * 100)
    for each in (old, other):
        os.utime(each, (time.time() - LEFTOVER_AGE_S - 60,) * 2)
    path = tmp_path / f"tracklets-{key}.npz"
    with caplog.at_level(logging.INFO, logger="daemon.adapt"):
        assert cached_tracklets(path, lambda: t).num_tracks == t.num_tracks
    assert not old.exists() and young.exists() and other.exists() and path.is_file()
    assert f"removed 1 temporary file (100 bytes) left in {tmp_path} " in caplog.text


def test_tracklet_cache_temporaries_of_earlier_releases_are_removed_once_a_day_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: earlier releases wrote a tracklet cache through the one fixed name tracklets-<key>.tmp.npz
    (90a64e0), which a run killed meanwhile left in the cache folder for good (as large as the cache): no run
    removed it, as it is not atomic_write's name. A run using that folder removes those UNLOCKED_AGE_S (a day)
    old, as tempdirs removes folders without their lock (an older release's run may be writing one: no lock
    tells), and nothing else there."""
    cfg = AdaptConfig(sample_every=1, max_gap=5, min_track_samples=2)
    t = mine_tracklets(((IMG, _frame(f, {1: A, 2: B})) for f in range(6)), _FakeEmbedder(), cfg)
    old = tmp_path / "tracklets-0123456789abcdef0123.tmp.npz"
    young = tmp_path / "tracklets-ba9876543210fedcba98.tmp.npz"  # past LEFTOVER_AGE_S, not a day old
    other = tmp_path / "notes.tmp.npz"
    for each in (old, young, other):
        each.write_bytes(b"x" * 100)
    os.utime(young, (time.time() - LEFTOVER_AGE_S - 60,) * 2)
    for each in (old, other):
        os.utime(each, (time.time() - UNLOCKED_AGE_S - 60,) * 2)
    path = tmp_path / "tracklets-00000000000000000000.npz"
    with caplog.at_level(logging.INFO, logger="daemon.adapt"):
        assert cached_tracklets(path, lambda: t).num_tracks == t.num_tracks
    assert not old.exists() and young.exists() and other.exists() and path.is_file()
    said = f"removed 1 temporary file (100 bytes) left in {tmp_path} by an earlier release"
    assert said in caplog.text, caplog.text


# ------------------------------------------------------------------------------------------- head file


def _toy_head(d: int = 6, out: int = 3, hidden: int = 4, seed: int = 0) -> ProjectionHead:
    rng = np.random.default_rng(seed)
    arrays = {
        "mean": rng.standard_normal(d),
        "w0": rng.standard_normal((d, out)),
        "w1": rng.standard_normal((d, hidden)),
        "b1": rng.standard_normal(hidden),
        "w2": rng.standard_normal((hidden, out)),
        "b2": rng.standard_normal(out),
    }
    meta = {"base_model": "toy", "base_sha256": BASE.sha256, "input_size": [256, 128], "flip_average": False}
    return ProjectionHead.from_arrays({k: v.astype(np.float32) for k, v in arrays.items()}, meta)


def test_head_apply_changes_dim_keeps_unit_norm_and_matches_the_formula() -> None:
    head = _toy_head()
    x = _unit(np.random.default_rng(3).standard_normal((5, 6))).astype(np.float32)
    y = head.apply(x)
    assert y.shape == (5, 3) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-6)
    c = x - head.mean
    z = c @ head.w0 + np.maximum(c @ head.w1 + head.b1, 0) @ head.w2 + head.b2
    np.testing.assert_allclose(y, _unit(z), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        head.apply(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="inconsistent head"):
        ProjectionHead(head.mean, head.w0, head.w1, head.b1[:2], head.w2, head.b2)


def test_head_save_load_round_trip(tmp_path: Path) -> None:
    head = _toy_head()
    path = save_head(head, tmp_path / "sub" / "head.npz")
    back = load_head(path)
    for k in ("mean", "w0", "w1", "b1", "w2", "b2"):
        np.testing.assert_array_equal(getattr(back, k), getattr(head, k))
    assert back.meta["base_model"] == "toy" and back.meta["input_dim"] == 6 and back.meta["output_dim"] == 3
    assert back.meta["format"] == "reid-daemon-head" and back.meta["version"] == 1
    assert list(tmp_path.glob("sub/*.tmp")) == []
    with np.load(path, allow_pickle=False) as z:  # plain arrays, no pickle needed
        assert json.loads(str(z["meta"]))["hidden"] == 4


def _write_npz(path: Path, head: ProjectionHead, **changes: object) -> Path:
    arrays: dict[str, object] = {k: getattr(head, k) for k in ("mean", "w0", "w1", "b1", "w2", "b2")}
    meta = dict(head.meta, format="reid-daemon-head", version=1, input_dim=6, output_dim=3, hidden=4)
    arrays["meta"] = np.array(json.dumps(meta))
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"w1": None}, "lacks arrays"),
        ({"b2": np.zeros(5, np.float32)}, "b2 has shape"),
        ({"w0": np.full((6, 3), np.nan, np.float32)}, "NaN"),
        ({"meta": None}, "no meta"),
        ({"meta": np.array("{not json")}, "not JSON"),
        ({"meta": np.array(json.dumps({"format": "other"}))}, "not a reid-daemon-head"),
        ({"meta": np.array(json.dumps({"format": "reid-daemon-head", "version": 9}))}, "version 9"),
    ],
)
def test_load_head_errors_name_the_file(tmp_path: Path, change: dict[str, object], message: str) -> None:
    path = _write_npz(tmp_path / "bad.npz", _toy_head(), **change)
    with pytest.raises(ModelError, match=message) as e:
        load_head(path)
    assert str(path) in str(e.value)


def test_load_head_missing_or_not_npz(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_head(tmp_path / "none.npz")
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(ModelError, match=str(tmp_path / "x.npz")):
        load_head(tmp_path / "x.npz")


def test_load_head_cut_short_or_damaged_is_named(tmp_path: Path) -> None:
    # Regression: a head .npz cut short (a copy that stopped) ended in a zipfile.BadZipFile traceback at the
    # camera's start, and one whose first bytes were damaged was 'This file contains pickled (object) data'
    whole = save_head(_toy_head(), tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "damaged.npz").write_bytes(b"XXXX" + whole[4:])
    for name, problem in (("cut.npz", "File is not a zip file"), ("damaged.npz", "not a .npz archive")):
        with pytest.raises(ModelError, match=f"{tmp_path / name} is not a readable head .npz") as e:
            load_head(tmp_path / name)
        assert problem in str(e.value) and "pickled" not in str(e.value), e.value


def test_check_base_refuses_another_model() -> None:
    head = _toy_head()
    head.check_base(Path("h.npz"), BASE)  # fits
    with pytest.raises(ModelError, match=r"h\.npz takes 6-d"):
        head.check_base(Path("h.npz"), BaseModelInfo("big", BASE.sha256, 1280, (256, 128), False))
    with pytest.raises(ModelError, match=r"h\.npz was trained on model 'toy'"):
        head.check_base(Path("h.npz"), BaseModelInfo("other", "cd" * 32, 6, (256, 128), False))
    with pytest.raises(ModelError, match="256x128 crops"):
        head.check_base(Path("h.npz"), BaseModelInfo("toy", BASE.sha256, 6, (224, 224), False))


def test_embedder_config_head_only_with_onnx() -> None:
    assert EmbedderConfig(head=Path("h.npz")).head == Path("h.npz")
    with pytest.raises(ValidationError, match="head works with embedder type 'onnx'"):
        EmbedderConfig(type="boxmot", model="x.pt", head=Path("h.npz"))


# ------------------------------------------------------------------------------------------- training


def _toy_tracklets(seed: int = 0) -> Tracklets:
    """12 identities along weak directions under a strong shared component; 3 per frame co-occur."""
    rng = np.random.default_rng(seed)
    d = 32
    common = rng.standard_normal(d) * 3
    centres = rng.standard_normal((12, d)) * 0.6
    labels = np.repeat(np.arange(12), 10)
    feats = _unit(common + centres[labels] + 0.4 * rng.standard_normal((120, d))).astype(np.float32)
    cliques = tuple(np.arange(i, i + 3, dtype=np.int64) for i in range(0, 12, 3))
    return Tracklets(
        feats,
        labels.astype(np.int64),
        np.zeros(120, np.int64),
        labels.astype(np.int64),
        cooccurrence(cliques, 12),
        cliques,
        120,
    )


def test_train_head_is_seeded_lowers_the_loss_and_records_meta() -> None:
    t = _toy_tracklets()
    base = BaseModelInfo("toy", "ab" * 32, 32, (256, 128), False)
    cfg = AdaptConfig(dim=8, hidden=16, steps=60, cliques_per_batch=2, samples_per_track=4)
    head, report = train_head(t, None, base, cfg, progress=False)
    again, _ = train_head(t, None, base, cfg, progress=False)
    np.testing.assert_array_equal(head.w0, again.w0)
    assert head.output_dim == 8 and head.input_dim == 32
    assert report.loss_end < report.loss_start
    assert (
        head.meta["base_sha256"] == base.sha256 and head.meta["training"]["data"]["tracklets"]["tracks"] == 12
    )
    assert "created" in head.meta
    ref = LabelledFeatures(t.features, t.labels, tuple(str(i) for i in range(12)))
    both, _ = train_head(t, ref, base, cfg.model_copy(update={"steps": 5}), progress=False)
    assert both.meta["training"]["data"]["reference"] == {"images": 120, "labels": 12}


def test_pca_init_starts_from_the_principal_directions() -> None:
    t = _toy_tracklets()
    a = init_head_arrays(t.features, AdaptConfig(dim=4, hidden=8), np.random.default_rng(0))
    np.testing.assert_allclose(a["mean"], t.features.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(a["w0"].T @ a["w0"], np.eye(4), atol=1e-5)
    assert not a["w2"].any()  # the MLP branch starts silent
    big = init_head_arrays(t.features[:3], AdaptConfig(dim=10, hidden=8), np.random.default_rng(0))
    assert big["w0"].shape == (32, 10)  # fewer samples than dims: filled with random directions


def test_train_head_refuses_data_without_negatives() -> None:
    t = _toy_tracklets()
    lonely = Tracklets(t.features, t.labels, t.frames, t.track_ids, np.zeros((12, 12), bool), (), 120)
    with pytest.raises(Exception, match="nothing to train on"):
        train_head(
            lonely, None, BaseModelInfo("toy", "", 32, (1, 1), False), AdaptConfig(steps=1), progress=False
        )


def test_train_head_refuses_references_without_positives() -> None:
    # Regression: a reference folder of one image per label (no positive pair: the loss is constant) gave
    # "training: 400 steps, loss 1.946 -> 1.946" and an untrained head (PCA plus random directions).
    features = _toy_tracklets().features[:3]
    single = LabelledFeatures(features, np.arange(3), ("a", "b", "c"))
    with pytest.raises(Exception, match="nothing to train on"):
        train_head(
            None, single, BaseModelInfo("toy", "", 32, (1, 1), False), AdaptConfig(steps=1), progress=False
        )


# ------------------------------------------------------------------------------------------- reference folder


def test_reference_listing_reads_names_as_enroll_does(tmp_path: Path) -> None:
    for name in ("b_person--1.png", "a_person--1.png", "a_person--2.png", "--3.png", "notes.txt"):
        cv2.imwrite(str(tmp_path / name), np.full((20, 10, 3), 100, np.uint8)) if name.endswith(".png") else (
            tmp_path / name
        ).write_text("x")
    paths, labels = list_reference(tmp_path)
    assert [p.name for p in paths] == ["a_person--1.png", "a_person--2.png", "b_person--1.png"]
    assert labels == ["a person", "a person", "b person"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="holds no image whose name gives a label"):
        list_reference(empty)


def test_reference_folder_gives_the_labels_enroll_gives(tmp_path: Path) -> None:
    # Regression: adapt listed the folder its own way: hidden files ('._ann--1.jpg', left by macOS copies, or
    # '.ann--2.jpg') became labels of their own, and the config's enroll naming (lowercase) was not used, so
    # 'Ann' and 'ann', one person to enroll, were trained apart as two (negatives of each other).
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("Ann--1.jpg", "ann--2.jpg", "bob--1.jpg", "._Ann--1.jpg", ".ann--3.jpg"):
        cv2.imwrite(str(refs / name), np.full((20, 10, 3), 100, np.uint8))
    naming = EnrollConfig(lowercase=True)
    paths, labels = list_reference(refs, naming)
    names, _ = reference_files(refs, naming)
    assert paths == [n.path for n in names] and labels == [n.label for n in names] == ["ann", "ann", "bob"]


class _Flat:
    """A crop embedder giving every crop the same unit vector (pure logic of the reference listing)."""

    def embed_crops(self, crops: list[ImageBGR]) -> FloatArray:
        return np.full((len(crops), 4), 0.5, np.float32)


def test_reference_images_opencv_refuses_are_skipped_not_a_traceback(tmp_path: Path) -> None:
    # Regression: `adapt --references` with a PNG declaring 50000x50000 in the folder ended in a cv2.error
    # traceback; like an unreadable file it is skipped with a warning naming it.
    good, bomb = tmp_path / "ann--1.png", tmp_path / "bob--1.png"
    cv2.imwrite(str(good), np.full((20, 10, 3), 100, np.uint8))
    bomb.write_bytes(png_declaring(50_000, 50_000, pixel_data=True))
    feats = reference_features([good, bomb], ["ann", "bob"], _Flat(), progress=False)
    assert feats.names == ("ann",) and len(feats.features) == 1


# ------------------------------------------------------------------------------------------- real model


def _trained_head_for(model_path: Path, dim: int, tmp_path: Path, sha: str | None = None) -> Path:
    from daemon.adapt import file_sha256

    rng = np.random.default_rng(0)
    arrays = init_head_arrays(
        _unit(rng.standard_normal((64, dim))).astype(np.float32), AdaptConfig(dim=16), rng
    )
    meta = {
        "base_model": "mobilenetv2-imagenet",
        "base_sha256": sha or file_sha256(model_path),
        "input_size": [256, 128],
        "flip_average": False,
    }
    return save_head(ProjectionHead.from_arrays(arrays, meta), tmp_path / f"head-{dim}.npz")


def test_embedder_applies_the_head(tmp_path: Path, mobilenet_model: Path) -> None:
    raw = OnnxEmbedder(EmbedderConfig(), CPU, mobilenet_model.parent.parent)
    head_path = _trained_head_for(mobilenet_model, raw.dim, tmp_path)
    with_head = OnnxEmbedder(EmbedderConfig(head=head_path), CPU, mobilenet_model.parent.parent)
    assert raw.dim == 1280 and with_head.dim == 16
    img = np.random.default_rng(1).integers(0, 255, (120, 80, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 40, 100], [30, 10, 75, 115]], np.float32)
    out = with_head.embed(img, boxes)
    assert out.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, load_head(head_path).apply(raw.embed(img, boxes)), atol=1e-5)
    assert with_head.embed_crops([]).shape == (0, 16)


def test_embedder_refuses_a_mismatched_head(tmp_path: Path, mobilenet_model: Path) -> None:
    cache = mobilenet_model.parent.parent
    wrong_dim = _trained_head_for(mobilenet_model, 512, tmp_path)
    with pytest.raises(ModelError, match=f"{wrong_dim}.*512-d"):
        OnnxEmbedder(EmbedderConfig(head=wrong_dim), CPU, cache)
    wrong_model = _trained_head_for(mobilenet_model, 1280, tmp_path, sha="0" * 64)
    with pytest.raises(ModelError, match=f"{wrong_model} was trained on model"):
        OnnxEmbedder(EmbedderConfig(head=wrong_model), CPU, cache)
    with pytest.raises(ModelError, match="not found"):
        OnnxEmbedder(EmbedderConfig(head=tmp_path / "missing.npz"), CPU, cache)


def _cfg(tmp_path: Path, video: Path | str, models: Path) -> Path:
    p = tmp_path / "cam.yaml"
    p.write_text(
        f"models_dir: {models}\nruntime: {{providers: [CPUExecutionProvider]}}\n"
        f"cameras:\n  door:\n    source: {{uri: {video}}}\n"
    )
    return p


def test_cli_adapt_from_a_tracks_file_and_a_reference_folder(
    tmp_path: Path, mobilenet_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(320, 240), people=3)
    tracks = clip.write_mot_gt(tmp_path / "tracks.txt")  # the "tracker output": 3 people, always together
    ref = tmp_path / "ref"
    ref.mkdir()
    for pid in (1, 2):
        for k in range(3):
            crop = np.full((60, 24, 3), clip.colour(pid), np.uint8) + np.uint8(k)
            cv2.imwrite(str(ref / f"p{pid}--{k}.png"), crop)
    cfg = _cfg(tmp_path, clip.path, mobilenet_model.parent.parent)
    out = tmp_path / "head.npz"
    args = ["adapt", "-c", str(cfg), "--tracks", str(tracks), "--reference", str(ref), "--out", str(out)]
    args += ["--steps", "20", "--dim", "16", "--sample-every", "2", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "tracklets: 45 samples of 3 tracks" in text and "reference: 6 images of 2 labels" in text
    head = load_head(out)
    assert head.output_dim == 16 and head.meta["training"]["data"]["tracklets"]["co_occurring_pairs"] == 3
    assert list((tmp_path / "adapt-cache").glob("tracklets-*.npz"))  # features cached for the next run
    # bad usage, as --dim 2 is: exit 2 (it was 1, a data error's)
    assert main(["adapt", "-c", str(cfg), "--no-tracklets", "--out", str(out), "--no-progress"]) == 2
    assert "nothing to train on" in capsys.readouterr().err
    assert main([*args, "--dim", "2"]) == 2
    assert "--dim" in capsys.readouterr().err


def test_cli_adapt_from_a_tracks_file_of_a_file_uri_source(
    tmp_path: Path, mobilenet_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source given as a file:// URI (as file managers write it) was opened as the path 'file:/...': the
    video was not found and its size and date were left out of the tracklet cache's key."""
    folder = tmp_path / "my videos"
    folder.mkdir()
    clip = make_video(folder / "clip 1.mp4", frames=12, size=(320, 240), people=2)
    tracks = clip.write_mot_gt(tmp_path / "tracks.txt")
    cfg = _cfg(tmp_path, clip.path.as_uri(), mobilenet_model.parent.parent)
    out = tmp_path / "head.npz"
    args = ["adapt", "-c", str(cfg), "--tracks", str(tracks), "--out", str(out)]
    args += ["--steps", "5", "--dim", "8", "--sample-every", "2", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    assert "tracklets: 12 samples of 2 tracks" in capsys.readouterr().out


def test_cli_adapt_with_a_missing_tracks_file_is_an_error_not_a_traceback(
    tmp_path: Path, mobilenet_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=5, size=(160, 120), people=1)
    cfg = _cfg(tmp_path, clip.path, mobilenet_model.parent.parent)
    missing = tmp_path / "nope.txt"
    args = [
        "adapt",
        "-c",
        str(cfg),
        "--tracks",
        str(missing),
        "--out",
        str(tmp_path / "h.npz"),
        "--no-progress",
    ]
    assert main(args) == 1  # was FileNotFoundError from the cache key's stat()
    assert f"{missing}: file not found" in capsys.readouterr().err


def test_cli_adapt_with_an_out_it_cannot_write_says_so_before_mining(
    tmp_path: Path, mobilenet_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming a folder, or a file under a file, ended in an IsADirectoryError / FileExistsError traceback
    once the features were mined and the head trained (minutes on a real video), and the head was lost; it is
    bad usage (exit 2) named before anything is read."""
    clip = make_video(tmp_path / "clip.mp4", frames=12, size=(320, 240), people=2)
    tracks = clip.write_mot_gt(tmp_path / "tracks.txt")
    cfg = _cfg(tmp_path, clip.path, mobilenet_model.parent.parent)
    (tmp_path / "heads").mkdir()
    (tmp_path / "afile").write_text("kept\n")
    args = ["adapt", "-c", str(cfg), "--tracks", str(tracks), "--steps", "5", "--dim", "8", "--no-progress"]
    for out, problem in (
        (tmp_path / "heads", f"--out {tmp_path / 'heads'} is a folder: give the head's file (.npz)"),
        (
            tmp_path / "afile" / "h.npz",
            f"--out {tmp_path / 'afile' / 'h.npz'}: {tmp_path / 'afile'} is not a folder",
        ),
    ):
        assert main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {problem}") and err.count("\n") == 1, err
    assert (tmp_path / "afile").read_text() == "kept\n" and not (tmp_path / "adapt-cache").exists()


def test_cli_adapt_with_a_dim_above_the_embedders_is_bad_usage_before_mining(
    tmp_path: Path, mobilenet_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dim 2000 on the 1280-d embedder ended, once the features were mined, in torch's RuntimeError traceback
    (the PCA start has 1280 directions at most): bad usage (exit 2) named before anything is mined; 1280 trains."""
    clip = make_video(tmp_path / "clip.mp4", frames=12, size=(320, 240), people=2)
    tracks = clip.write_mot_gt(tmp_path / "tracks.txt")
    cfg = _cfg(tmp_path, clip.path, mobilenet_model.parent.parent)
    args = ["adapt", "-c", str(cfg), "--tracks", str(tracks), "--steps", "2", "--no-progress"]
    out = tmp_path / "h.npz"
    assert main([*args, "--dim", "2000", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: --dim 2000: a head projects the embedder's 1280-d features to 1280 dimensions"
    )
    assert not out.exists() and not (tmp_path / "adapt-cache").exists()
    assert main([*args, "--dim", "1280", "--out", str(out)]) == 0, capsys.readouterr().err
    assert load_head(out).output_dim == 1280


def test_cli_adapt_refuses_one_cameras_video_or_tracks_with_all_cameras(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--all-cameras --tracks read one MOT file as the tracks of every camera's video (boxes of one view cut
    from the others), and --all-cameras --source mined the first camera from the video given and the others
    from their own, nothing said; both are refused before the models load (exit 2), naming the options."""
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text(
        f"models_dir: {tmp_path / 'no-models'}\ncameras:\n  a: {{source: {{uri: {tmp_path / 'a.mp4'}}}}}\n"
        f"  b: {{source: {{uri: {tmp_path / 'b.mp4'}}}}}\n"
    )
    (tmp_path / "tracks.txt").write_text("1,1,0,0,10,20,1,-1,-1,-1\n")
    base = ["adapt", "-c", str(cfg), "--all-cameras", "--out", str(tmp_path / "h.npz"), "--no-progress"]
    for extra, named in (
        (["--tracks", str(tmp_path / "tracks.txt")], "--tracks"),
        (["--source", str(tmp_path / "other.mp4")], "--source"),
        (
            ["--source", str(tmp_path / "other.mp4"), "--tracks", str(tmp_path / "tracks.txt")],
            "--source and --tracks",
        ),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"error: adapt {named} name one camera's video and its tracks, but --all-cameras"
        )
        assert "--camera NAME" in err
    assert not (tmp_path / "adapt-cache").exists()


def test_cli_adapt_refuses_mining_options_with_no_tracklets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-tracklets --reference refs/ --augment 4 trained on the reference crops without augmenting one (the
    copies are the mining's), --tracks, --source, --max-frames likewise ignored, nothing said; they are refused
    before the models load (exit 2), named; --no-tracklets with --reference alone goes on to them."""
    cfg = _cfg(tmp_path, tmp_path / "never-read.mp4", tmp_path / "no-models")
    (tmp_path / "refs").mkdir()
    base = ["adapt", "-c", str(cfg), "--no-tracklets", "--reference", str(tmp_path / "refs")]
    base += ["--out", str(tmp_path / "h.npz"), "--no-progress"]
    for extra, named in (
        (["--augment", "4"], "--augment"),
        (["--tracks", "t.txt", "--max-frames", "50"], "--tracks, --max-frames"),
        (["--source", "v.mp4", "--all-cameras", "--sample-every", "2", "--max-per-track", "9"], None),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        said = named or "--all-cameras, --source, --sample-every, --max-per-track"
        assert err.startswith(
            f"error: adapt --no-tracklets trains on --reference alone, so {said} (for mining"
        ), err
    assert main(base) != 2  # no option left over: it goes on (to the model it lacks here)
    assert "--no-tracklets" not in capsys.readouterr().err


def test_cli_adapt_names_a_negative_max_frames_as_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-frames -3 was taken, the models loaded, and then refused as 'cameras.door.source.max_frames: Input
    should be greater than or equal to 0', naming a setting the user never wrote; it is refused as the option,
    as run's and scenario's --max-frames are, before anything loads."""
    cfg = _cfg(tmp_path, tmp_path / "never-read.mp4", tmp_path / "no-models")
    for bad, said in (("-3", "must be 0 (no limit) or more frames, not -3"), ("ten", "not a whole number")):
        with pytest.raises(SystemExit) as e:
            main(["adapt", "-c", str(cfg), "--max-frames", bad, "--out", str(tmp_path / "h.npz")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"argument --max-frames: {said}" in err, err


def test_train_head_refuses_a_dim_above_its_features() -> None:
    with pytest.raises(DataError, match="dim 40: a head projects the embedder's 32-d features"):
        train_head(_toy_tracklets(), None, BASE, AdaptConfig(dim=40, steps=2), progress=False)


def test_cli_adapt_with_a_cache_it_cannot_write_trains_without_it(
    tmp_path: Path, mobilenet_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--cache-dir naming a file (or a folder it may not write) ended in a FileExistsError traceback once the
    features were mined, and no head was trained: the cache only saves the next run's mining, so it warns,
    naming the folder, and goes on."""
    clip = make_video(tmp_path / "clip.mp4", frames=12, size=(320, 240), people=2)
    tracks = clip.write_mot_gt(tmp_path / "tracks.txt")
    cfg = _cfg(tmp_path, clip.path, mobilenet_model.parent.parent)
    cache = tmp_path / "cache.txt"
    cache.write_text("kept\n")
    out = tmp_path / "head.npz"
    args = ["adapt", "-c", str(cfg), "--tracks", str(tracks), "--steps", "5", "--dim", "8", "--no-progress"]
    assert main([*args, "--out", str(out), "--cache-dir", str(cache)]) == 0
    assert load_head(out).output_dim == 8 and cache.read_text() == "kept\n"
    (warning,) = [r.getMessage() for r in caplog.records if "tracklet cache" in r.getMessage()]
    assert (
        warning.startswith(f"cannot write the tracklet cache {cache}/tracklets-") and "--cache-dir" in warning
    )


@pytest.mark.slow
@pytest.mark.shared_data
def test_an_image_folder_with_images_added_is_mined_again_not_read_from_the_cache(
    tmp_path: Path, ssdlite_model: Path, mobilenet_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder source's cache was keyed on its path alone: with 10 more images in the folder, the next adapt
    trained on the tracklets of the first 20 ('from cache', 20 frames read), the new ones never seen. It is
    keyed on its images too; a live source is not cached at all (its frames are others at each run)."""
    video = require_pets09_video()
    folder = tmp_path / "frames"
    folder.mkdir()
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(30)]
    cap.release()
    for i, image in enumerate(frames[:20]):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), image)
    root = Path(__file__).resolve().parents[1]
    args = ["adapt", "-c", str(root / "configs" / "pets09.yaml"), "--source", str(folder)]
    args += ["--models-dir", str(ssdlite_model.parent.parent), "--steps", "3", "--sample-every", "1"]
    args += ["--out", str(tmp_path / "h.npz"), "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    assert "20 frames read" in capsys.readouterr().out
    for i, image in enumerate(frames[20:], start=20):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), image)
    assert main(args) == 0, capsys.readouterr().err
    assert "30 frames read" in capsys.readouterr().out  # was 20: the cache of the folder before
    assert len(list((tmp_path / "adapt-cache").glob("tracklets-*.npz"))) == 2
    assert source_identity(folder) == source_identity(folder)
    assert source_identity(None) is None  # rtsp://, a webcam, http: sources.local_path gives None


def test_adapt_on_pets09_with_our_tracker(
    tmp_path: Path, mobilenet_model: Path, ssdlite_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = require_pets09_video()
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "pets-head.npz"
    start = time.monotonic()
    args = [
        "adapt",
        "-c",
        str(root / "configs" / "pets09.yaml"),
        "--source",
        str(video),
        "--max-frames",
        "60",
    ]
    args += [
        "--models-dir",
        str(ssdlite_model.parent.parent),
        "--steps",
        "30",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert time.monotonic() - start < 300
    text = capsys.readouterr().out
    head = load_head(out)
    summary = head.meta["training"]["data"]["tracklets"]
    assert summary["frames_read"] == 60 and summary["tracks"] >= 3 and summary["co_occurring_pairs"] >= 3
    assert f"head: {out} (1280 -> {head.output_dim}-d)" in text
    emb = OnnxEmbedder(EmbedderConfig(head=out), CPU, mobilenet_model.parent.parent)
    assert emb.dim == head.output_dim


@pytest.mark.slow
@pytest.mark.shared_data
def test_adapt_bench_smoke(tmp_path: Path, mobilenet_model: Path, ssdlite_model: Path) -> None:
    from _data import clip_args, load_benchmark

    bench = load_benchmark("adapt_bench")
    args = clip_args(ssdlite_model.parent.parent)
    args += ["--out", str(tmp_path), "--split", "60", "--end", "200", "--segment", "20", "--stride", "10"]
    args += ["--junk", "5", "--refs-per-id", "2", "--seeds", "0", "--steps", "10", "--no-progress"]
    assert bench.main(args) == 0
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| features")]
    assert len(rows) == 6 and rows[0].startswith("| raw embedder")
    for row in rows:
        mean_ap = float(row.split("|")[2].split()[0])
        assert 0.0 <= mean_ap <= 100.0
    assert "max |diff|" in md and list((tmp_path / "reference").glob("person_*--*.png"))


@pytest.mark.shared_data
def test_adapt_bench_refuses_an_evaluated_part_with_no_gallery(
    tmp_path: Path, ssdlite_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from _data import clip_args, load_benchmark

    bench = load_benchmark("adapt_bench")
    args = [*clip_args(ssdlite_model.parent.parent), "--out", str(tmp_path / "out"), "--split", "40"]
    args += [
        "--end",
        "80",
        "--stride",
        "10",
        "--refs-per-id",
        "1",
        "--seeds",
        "0",
        "--steps",
        "5",
        "--no-progress",
    ]
    assert bench.main(args) == 2  # was a table of nan after mining and training (40 frames < two segments)
    err = capsys.readouterr().err
    assert "nothing to score" in err and "0 gallery crops" in err
    assert not (tmp_path / "out").exists()


def test_adapt_bench_names_a_malformed_gt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from _data import load_benchmark

    bench = load_benchmark("adapt_bench")
    six = tmp_path / "gt6.txt"
    six.write_text("1,1,10,10,20,40\n")
    video = tmp_path / "clip.avi"
    video.write_bytes(b"")  # not opened: the gt is read first
    # a data error: 1, as `reid-daemon eval --gt` and detector_sweep exit on it (2 is a configuration error's)
    assert bench.main(["--video", str(video), "--gt", str(six), "--out", str(tmp_path / "out")]) == 1
    assert (
        "gt6.txt, line 1: expected 7 to 10 comma-separated columns, got 6" in capsys.readouterr().err
    )  # was a traceback


def test_cli_adapt_with_nothing_to_train_or_another_embedder_is_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both exited 1, as a broken input file does; they are the options' or the config's fault (exit 2)."""
    cfg = _cfg(tmp_path, tmp_path / "never-read.mp4", tmp_path / "no-models")
    out = ["--out", str(tmp_path / "head.npz"), "--no-progress"]
    assert main(["adapt", "-c", str(cfg), "--no-tracklets", *out]) == 2
    assert "nothing to train on: give --reference" in capsys.readouterr().err
    with cfg.open("a") as f:
        f.write("    embedder: {type: boxmot, model: osnet.pt}\n")
    assert main(["adapt", "-c", str(cfg), *out]) == 2
    assert "embedder.type 'onnx', camera door has 'boxmot'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--split", "60", "--end", "50"],
            "--split/--end: Value error, end (50) must be after start (60), or 0",
        ),
        (["--stride", "0"], "--stride: Input should be greater than or equal to 1"),
        (["--steps", "0"], "--steps: Input should be greater than or equal to 1"),
        (["--seeds", "0", "-1"], "--seeds: Input should be greater than or equal to 0"),
        (["--refs-per-id", "0"], "argument --refs-per-id: must be 1 or more, not 0"),
    ],
)
def test_adapt_bench_names_a_bad_option(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Out-of-range options were a pydantic traceback (--steps and --seeds only after the tracklets were mined);
    --refs-per-id 0 mined them, then said the reference folder held no image."""
    from _data import load_benchmark

    bench = load_benchmark("adapt_bench")
    with pytest.raises(SystemExit) as e:
        bench.main([*args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count(message) == 1  # --stride sets two fields
    assert not (tmp_path / "out").exists()


def test_adapt_bench_names_a_config_it_cannot_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing --config, or one of several cameras, was a ConfigError traceback (the latter saying 'choose
    one with --camera', which adapt_bench does not have), after --out was made."""
    from _data import load_benchmark

    bench = load_benchmark("adapt_bench")
    clip, gt = tmp_path / "clip.avi", tmp_path / "gt.txt"
    clip.write_bytes(b"")
    gt.write_text("".join(f"{f},1,10,10,20,60,1,-1,-1,-1\n" for f in range(1, 200)))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("cameras:\n  a: {source: {uri: a.mp4}}\n  b: {source: {uri: b.mp4}}\n")
    out = tmp_path / "out"
    base = ["--video", str(clip), "--gt", str(gt), "--out", str(out), "--split", "20", "--segment", "10"]
    assert bench.main([*base, "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "error: config file not found" in capsys.readouterr().err
    assert bench.main([*base, "--config", str(fleet)]) == 2
    assert (
        f"error: {fleet} holds cameras a, b; --config takes a config of one camera" in capsys.readouterr().err
    )
    assert not out.exists()


def test_adapt_bench_without_its_model_names_the_fetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model absent from --models-dir was an _AbsentError traceback, and then exit 2 (a configuration
    error's) where the CLI, detector_sweep and embedder_bench exit 1."""
    from _data import clip_args, load_benchmark

    args = [*clip_args(tmp_path / "models"), "--out", str(tmp_path / "out"), "--split", "60", "--end", "200"]
    assert (
        load_benchmark("adapt_bench").main([*args, "--segment", "20", "--stride", "10", "--no-progress"]) == 1
    )
    fetch = f"reid-daemon models fetch mobilenetv2-imagenet --models-dir {tmp_path / 'models'}"
    assert "error: model preset 'mobilenetv2-imagenet' is not in the model cache" in (
        err := capsys.readouterr().err
    )
    assert fetch in err
