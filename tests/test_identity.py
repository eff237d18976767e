"""daemon/identity: quality, exemplars, matching order, every guard, bounds, forget; synthetic and real embeddings.

Synthetic people are clustered unit vectors: a random centre per person, each observation the centre plus
Gaussian noise of norm ~``noise``, normalised. Cameras exchange ``ProfileUpdate`` records through a list
(the Valkey bridge's job in production); the allocator is a counter.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from _crops import read_video_frames, select_crops
from _data import require_pets09
from _identity import Counter, relay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from daemon.config import CameraEdge, EmbedderConfig, IdentityConfig, RuntimeConfig
from daemon.embed import OnnxEmbedder
from daemon.errors import ConfigError, DataError
from daemon.gallery import Gallery
from daemon.identity import (
    FrameIdentities,
    IdentityResolver,
    ProfileUpdate,
    QualityParams,
    TrackProfile,
    TravelModel,
    assign,
    box_qualities,
    occlusion_fractions,
    overlap_fractions,
    set_similarity,
)
from daemon.identity import resolver as resolver_module
from daemon.identity.fleet import Contribution, FleetStore
from daemon.identity.profile import MatchScore
from daemon.types import Track

D = 32
F32 = NDArray[np.float32]
FRAME = (1280, 720)


class People:
    """Clustered unit vectors: ``centre(p)`` and noisy ``obs(p)`` of person p."""

    def __init__(self, n: int, seed: int = 0, noise: float = 0.25) -> None:
        self.rng = np.random.default_rng(seed)
        c = self.rng.standard_normal((n, D)).astype(np.float32)
        self.centres: F32 = c / np.linalg.norm(c, axis=1, keepdims=True)
        self.noise = noise

    def obs(self, p: int) -> F32:
        v = self.centres[p] + self.rng.standard_normal(D).astype(np.float32) * (self.noise / np.sqrt(D))
        out: F32 = (v / np.linalg.norm(v)).astype(np.float32)
        return out

    def twin(self, p: int, similarity: float) -> F32:
        """A new centre at cosine ``similarity`` from person p's."""
        r = self.rng.standard_normal(D).astype(np.float32)
        r -= (r @ self.centres[p]) * self.centres[p]
        r /= np.linalg.norm(r)
        v = similarity * self.centres[p] + np.sqrt(1 - similarity**2) * r
        out: F32 = (v / np.linalg.norm(v)).astype(np.float32)
        return out


def box(slot: int, height: float = 200.0) -> tuple[float, float, float, float]:
    """A clean box: well inside the frame, no overlap with other slots."""
    x = 40.0 + 120.0 * slot
    return (x, 100.0, x + 80.0, 100.0 + height)


def step(
    res: IdentityResolver,
    t: float,
    seen: Mapping[int, F32 | None],
    scores: dict[int, float] | None = None,
    heights: dict[int, float] | None = None,
    ended: Sequence[int] = (),
    ahead: float | None = None,
) -> FrameIdentities:
    """One frame: track id -> embedding (None: not embedded this frame), one clean box each. ``ahead``: a live
    camera's, how far its wall clock is ahead of its monotonic clock (the frame's reading is ``t - ahead``);
    None: a replay, whose frames come without readings."""
    tracks, rows = [], []
    for slot, (tid, vec) in enumerate(seen.items()):
        h = (heights or {}).get(tid, 200.0)
        tracks.append(Track(res.camera, tid, box(slot, h), (scores or {}).get(tid, 0.9), slot))
        rows.append(np.zeros(D, np.float32) if vec is None else vec)
    emb = np.stack(rows).astype(np.float32) if rows else np.zeros((0, D), np.float32)
    return res.update(t, tracks, emb, FRAME, ended=ended, monotonic=None if ahead is None else t - ahead)


def ids(out: FrameIdentities) -> dict[int, int | None]:
    return {a.track_id: a.global_id for a in out.assignments}


def observe(
    res: IdentityResolver,
    people: People,
    tracks: dict[int, int],
    t0: float,
    frames: int,
    score: float = 0.9,
    ahead: float | None = None,
) -> tuple[list[ProfileUpdate], dict[int, int | None]]:
    """``frames`` frames, one a second, of track id -> person; the updates and the last frame's ids.

    A detector ``score`` below ``new_min_quality`` (0.25) keeps a track from getting a new id; ``ahead`` as
    for ``step``."""
    updates: list[ProfileUpdate] = []
    last: dict[int, int | None] = {}
    for k in range(frames):
        seen = {tid: people.obs(p) for tid, p in tracks.items()}
        out = step(res, t0 + k, seen, scores=dict.fromkeys(tracks, score), ahead=ahead)
        updates.extend(out.updates)
        last = ids(out)
    return updates, last


def end_all(res: IdentityResolver, tids: Iterable[int], t: float) -> list[ProfileUpdate]:
    return [u for tid in tids if (u := res.end_track(tid, t)) is not None]


# ------------------------------------------------------------------------------------------ quality


P = QualityParams(full_height_px=128.0, border_margin_px=2.0, border_penalty=0.5)


def test_quality_size_and_confidence_terms() -> None:
    xyxy = np.array([[100, 100, 150, 164], [300, 100, 350, 228], [500, 100, 550, 400]], np.float32)
    q = box_qualities(xyxy, np.array([1.0, 1.0, 0.5], np.float32), FRAME, P)
    assert q[0] == pytest.approx(0.5)  # 64 px tall: half the full height
    assert q[1] == pytest.approx(1.0)
    assert q[2] == pytest.approx(0.5)  # tall enough, but the detector is unsure


def test_quality_occlusion_penalises_the_box_behind_only() -> None:
    front = [100, 100, 180, 400]  # bottom edge lower: nearer the camera
    behind = [140, 80, 220, 300]
    xyxy = np.array([front, behind], np.float32)
    occ = occlusion_fractions(xyxy)
    assert occ[0] == 0.0
    covered = (180 - 140) * (300 - 100) / (80 * 220)
    assert occ[1] == pytest.approx(covered, rel=1e-5)
    q = box_qualities(xyxy, np.ones(2, np.float32), FRAME, P)
    assert q[0] == pytest.approx(1.0)
    assert q[1] == pytest.approx(1.0 - covered, rel=1e-5)


def test_overlap_counts_the_box_in_front_too_and_takes_the_largest_share() -> None:
    front = [100, 100, 180, 400]
    behind = [140, 80, 220, 300]
    far = [500, 100, 540, 200]
    edge = [170, 100, 190, 400]  # shares half of itself with front, two thirds with behind: the larger counts
    got = overlap_fractions(np.array([front, behind, far, edge], np.float32))
    shared = (180 - 140) * (300 - 100)
    assert got[0] == pytest.approx(shared / (80 * 300), rel=1e-5)  # in front, yet overlapped
    assert got[1] == pytest.approx(shared / (80 * 220), rel=1e-5)
    assert got[2] == 0.0
    assert got[3] == pytest.approx(max(10 * 300 / (20 * 300), 20 * 200 / (20 * 300)), rel=1e-5)
    assert overlap_fractions(np.zeros((1, 4), np.float32)).tolist() == [0.0]


def test_quality_truncation_at_the_frame_border() -> None:
    xyxy = np.array([[-40, 100, 40, 400], [600, 100, 680, 400], [600, 400, 680, 719]], np.float32)
    q = box_qualities(xyxy, np.ones(3, np.float32), FRAME, P)
    assert q[0] == pytest.approx(0.5 * 0.5)  # half outside, and cut by the border
    assert q[1] == pytest.approx(1.0)
    assert q[2] == pytest.approx(0.5)  # inside but touching the bottom edge
    assert box_qualities(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), FRAME, P).shape == (0,)


def test_quality_boxes_as_near_occlude_each_other_and_occlusion_stops_at_one() -> None:
    side_a, side_b = [100, 100, 180, 300], [140, 100, 220, 300]  # same bottom edge: as near as each other
    assert occlusion_fractions(np.array([side_a, side_b], np.float32)).tolist() == pytest.approx([0.5, 0.5])
    behind = [100, 100, 200, 200]  # covered whole by each of two boxes in front: summed to 2, capped at 1
    xyxy = np.array([behind, [90, 90, 210, 260], [95, 95, 205, 250]], np.float32)
    assert occlusion_fractions(xyxy)[0] == 1.0
    assert box_qualities(xyxy, np.ones(3, np.float32), FRAME, P)[0] == 0.0


def test_quality_truncation_on_the_top_right_and_bottom_edges() -> None:
    top = [600, 1, 680, 301]  # touches the top edge
    right = [1200, 100, 1279, 400]  # touches the right edge
    below = [600, 520, 680, 820]  # its lower third lies below the 720-pixel frame
    q = box_qualities(np.array([top, right, below], np.float32), np.ones(3, np.float32), FRAME, P)
    assert q.tolist() == pytest.approx([0.5, 0.5, 2 / 3 * 0.5])


def test_quality_confidence_is_clipped_and_a_nan_score_is_worth_nothing() -> None:
    xyxy = np.array([box(0), box(1), box(2)], np.float32)
    q = box_qualities(xyxy, np.array([1.5, -0.2, np.nan], np.float32), FRAME, P)
    assert q.tolist() == [1.0, 0.0, 0.0]


def test_quality_params_from_config() -> None:
    cfg = IdentityConfig(quality_full_height_px=100, border_margin_px=3, border_penalty=0.25)
    assert QualityParams.from_config(cfg) == QualityParams(
        full_height_px=100.0, border_margin_px=3.0, border_penalty=0.25
    )


# ------------------------------------------------------------------------------------------ profile


def test_profile_is_bounded_and_drops_redundant_observations() -> None:
    people = People(2)
    prof = TrackProfile(D, capacity=4, min_quality=0.1, replace_margin=0.1)
    for _ in range(50):
        prof.offer(people.obs(0), 0.5)
    assert len(prof) == 4 and prof.observations == 50
    same = prof.exemplars[0].copy()
    assert not prof.offer(same, 0.5)  # an exact copy adds no diversity and no quality
    assert not prof.offer(same, 0.55)  # nor a slightly better view (margin 0.1)
    assert prof.offer(same, 0.9)  # a much better view of the same look replaces it
    assert prof.best_quality == pytest.approx(0.9)
    assert not prof.offer(people.obs(1), 0.05)  # below min_quality: not even an observation
    assert prof.observations == 53


def test_profile_keeps_a_diverse_view() -> None:
    people = People(2)
    prof = TrackProfile(D, capacity=4, min_quality=0.0, replace_margin=0.1)
    for _ in range(10):
        prof.offer(people.obs(0), 0.5)
    other = people.obs(1)
    assert prof.offer(other, 0.5)  # far from everything held: replaces one of the closest pair
    assert float((prof.exemplars @ other).max()) == pytest.approx(1.0, abs=1e-6)
    assert len(prof) == 4
    prof.clear()
    assert len(prof) == 0 and prof.observations == 0


def test_a_profile_full_of_one_look_makes_room_for_each_new_one_and_keeps_the_look() -> None:
    """Every exemplar a copy of one view: each new distinct view, even of lower quality, takes the place of a
    copy (the closest pair's worse member), and the view itself keeps one place. Test-only."""
    looks = np.eye(4, dtype=np.float32)
    prof = TrackProfile(4, capacity=3, min_quality=0.05, replace_margin=0.1)
    for _ in range(3):
        prof.offer(looks[0], 0.5)
    assert prof.offer(looks[1], 0.2) and prof.offer(looks[2], 0.2)
    held = {int(np.argmax(e)) for e in prof.exemplars}
    assert held == {0, 1, 2} and sorted(prof.qualities.tolist()) == pytest.approx([0.2, 0.2, 0.5])
    assert not prof.offer(looks[0], 0.55)  # the look again: redundant, and not better by the margin


def test_profile_bounds_are_inclusive_and_a_nan_quality_is_refused() -> None:
    """min_quality itself is enough; a redundant view replaces its nearest exemplar at exactly replace_margin
    better; a NaN quality is no observation; a copy of a duplicated exemplar adds nothing."""
    people = People(2)
    v, w = people.centres[0], people.centres[1]
    prof = TrackProfile(D, capacity=2, min_quality=0.25, replace_margin=0.25)
    assert not prof.offer(v, float("nan")) and prof.observations == 0
    assert prof.offer(v, 0.25) and prof.offer(w, 0.5)
    assert not prof.offer(v, 0.49)  # v again: redundant, and not 0.25 better than the 0.25 it would replace
    assert prof.offer(v, 0.5) and sorted(prof.qualities.tolist()) == [0.5, 0.5]
    assert not prof.offer(w, 0.74) and prof.offer(w, 0.75)
    assert sorted(prof.qualities.tolist()) == [0.5, 0.75] and prof.observations == 6
    axis = np.eye(D, dtype=np.float32)[0]  # cosines exactly 1: a true tie with the duplicated pair
    twice = TrackProfile(D, capacity=2, min_quality=0.0, replace_margin=0.1)
    assert twice.offer(axis, 0.5) and twice.offer(axis, 0.5)
    assert not twice.offer(axis, 0.5)


def test_profile_full_drops_the_worse_view_of_the_closest_pair() -> None:
    people = People(3)
    best, alike, other = people.centres[0], people.twin(0, 0.95), people.centres[1]
    prof = TrackProfile(D, capacity=3, min_quality=0.0, replace_margin=0.1)
    for vec, q in ((best, 0.9), (alike, 0.3), (other, 0.5)):
        assert prof.offer(vec, q)
    assert prof.offer(people.centres[2], 0.6)  # unlike all: the closest pair (best, alike) makes room
    assert sorted(prof.qualities.tolist()) == pytest.approx([0.5, 0.6, 0.9])
    assert float((prof.exemplars @ best).max()) == pytest.approx(1.0, abs=1e-6)


def test_set_similarity_max_and_top_mean() -> None:
    sims = np.array([[0.95, 0.1], [0.2, 0.3], [0.5, 0.6], [0.7, 0.4]], np.float32)
    assert set_similarity(sims, "max", 3) == pytest.approx(0.95)
    assert set_similarity(sims, "top_mean", 3) == pytest.approx((0.95 + 0.6 + 0.7) / 3)
    assert set_similarity(sims, "top_mean", 10) == pytest.approx((0.95 + 0.3 + 0.6 + 0.7) / 4)
    assert set_similarity(np.zeros((0, 3), np.float32), "max", 3) == float("-inf")


@pytest.mark.parametrize("how", ["max", "top_mean"])
def test_fleet_scores_agree_with_set_similarity(how: MatchScore) -> None:
    rng = np.random.default_rng(1)
    people = People(6, seed=1, noise=1.0)
    store = FleetStore(D, IdentityConfig(max_tracks_per_identity=100))
    members: dict[int, list[F32]] = {}
    for i in range(30):  # 30 tracks of 6 identities, 1-8 exemplars each, arriving in random order
        gid = int(rng.integers(6))
        ex = np.stack([people.obs(gid) for _ in range(int(rng.integers(1, 9)))])
        store.record(Contribution(("r", i), gid, 0.0, 0.0, 0.5, None, True, False), ex, 0.0)
        members.setdefault(gid, []).append(ex)
    own = np.stack([people.obs(2) for _ in range(5)])
    store.record(Contribution(("me", 1), 2, 0.0, 0.0, 0.5, None, False, True), own, 0.0)
    query = np.stack([people.obs(int(p)) for p in rng.integers(6, size=7)])
    got = store.scores([query], [("me", 1)], how, 3, floor=-1.0)[0]
    want = {g: set_similarity(query @ np.concatenate(rows).T, how, 3) for g, rows in members.items()}
    assert got.keys() == want.keys()  # the query's own rows (identity 2) are left out, the rest compared
    for g, s in want.items():
        assert got[g] == pytest.approx(s, abs=1e-6)
    assert store.scores([query], [("me", 1)], how, 3, floor=2.0) == [{}]


def _contrib(
    key: tuple[str, int], gid: int, last: float, label: str | None = None, live_local: bool = False
) -> Contribution:
    """A remote ended track's say (or, ``live_local``, a live track of this camera's) about ``gid``."""
    return Contribution(key, gid, 0.0, last, 0.5, label, not live_local, live_local)


def test_store_unbind_label_takes_the_name_off_the_identity_and_every_say_that_carried_it() -> None:
    """unbind_label: the label names no id and no identity, and no contribution carries it any more (its id,
    rows and contributions stay); another label is left as it was."""
    people = People(2)
    store = FleetStore(D, IdentityConfig())
    store.record(_contrib(("r", 1), 1, 0.0, label="jane"), people.obs(0)[None], 0.0)
    store.record(_contrib(("me", 2), 1, 0.0, label="jane", live_local=True), people.obs(0)[None], 0.0)
    store.record(_contrib(("r", 3), 2, 0.0, label="ann"), people.obs(1)[None], 0.0)
    assert store.unbind_label("jane") == 1 and store.unbind_label("nobody") is None
    assert store.gid_of_label("jane") is None and store.label_of(1) is None and store.label_of(2) == "ann"
    assert {k: c.label for k, c in store.contributions.items()} == {
        ("r", 1): None,
        ("me", 2): None,
        ("r", 3): "ann",
    }
    assert store.has_foreign_rows(1, ("me", 2))


def test_store_a_row_less_say_is_no_look_of_the_identity() -> None:
    people = People(1)
    store = FleetStore(D, IdentityConfig())
    store.record(_contrib(("me", 1), 1, 0.0, live_local=True), people.obs(0)[None], 0.0)
    store.record(_contrib(("r", 2), 1, 0.0), None, 0.0)  # a keep-alive: no exemplars
    assert not store.has_foreign_rows(1, ("me", 1))
    store.record(_contrib(("r", 2), 1, 1.0), people.obs(0)[None], 1.0)
    assert store.has_foreign_rows(1, ("me", 1))


def test_store_rows_follow_a_track_that_changed_ids_without_new_rows() -> None:
    """A live remote track the resolver there moved to another id: its rows go with it (an ended one's stay:
    test_store_an_ended_track_back_under_another_id_leaves_its_spell_to_the_first)."""
    people = People(1)
    store = FleetStore(D, IdentityConfig())
    live = Contribution(("r", 1), 5, 0.0, 0.0, 0.5, None, False, False)
    store.record(live, people.obs(0)[None], 0.0)
    store.record(_contrib(("r", 1), 6, 1.0), None, 1.0)  # now id 6, rows as they were
    assert store.scores([people.obs(0)[None]], [None], "max", 1, floor=0.5)[0].keys() == {6}


def test_store_an_ended_track_back_under_another_id_leaves_its_spell_to_the_first() -> None:
    """Track r/1 ended as id 5; the same track id comes back as id 6 (another life of the tracker's number): id 5
    keeps its rows and its claim under a key of its own, which forgetting id 6 leaves, and the bounds take."""
    people = People(2)
    store = FleetStore(D, IdentityConfig(max_tracks_per_identity=2))
    store.record(_contrib(("r", 1), 5, 0.0), people.obs(0)[None], 0.0)
    store.record(_contrib(("r", 1), 6, 1.0), people.obs(1)[None], 1.0)
    got = store.scores([people.obs(0)[None], people.obs(1)[None]], [None, None], "max", 1, floor=0.5)
    assert [g.keys() for g in got] == [{5}, {6}]
    assert len(store.contributions) == 2 and store.contributions[("r", 1)].gid == 6
    assert store.forget(6, 2.0) and [c.gid for c in store.contributions.values()] == [5]
    for t in (3, 4):  # two more tracks of id 5: over max_tracks_per_identity the kept spell goes first
        store.record(_contrib(("r", t), 5, float(t)), people.obs(0)[None], float(t))
    assert sorted(store.contributions) == [("r", 3), ("r", 4)]


def test_store_rows_stay_within_max_exemplar_rows_with_live_tracks_alone() -> None:
    store = FleetStore(D, IdentityConfig(max_exemplar_rows=4))
    store.record(_contrib(("me", 1), 1, 0.0, live_local=True), np.eye(D, dtype=np.float32)[:6], 0.0)
    assert store.bank.n == 4 and store.bank.count(("me", 1)) == 4


def test_store_an_end_carrying_the_last_sighting_keeps_when_it_was_heard() -> None:
    """Heard at 10 on the stamps' clock; the stamps then run 50 s ahead of the running clock (a stall); the
    track's end carries that same last sighting: it was still heard at 10 of running time."""
    store = FleetStore(D, IdentityConfig(retention_s=100.0))
    store.record(_contrib(("r", 1), 1, 10.0), np.eye(D, dtype=np.float32)[:1], 10.0)
    store.lag = 50.0
    store.record(_contrib(("r", 1), 1, 10.0), None, 60.0)
    store.expire(155.0)  # running time 105: 95 s since
    assert 1 in store
    store.expire(161.0)
    assert 1 not in store and store.expired == 1


def test_store_two_names_never_merge() -> None:
    store = FleetStore(D, IdentityConfig())
    store.record(_contrib(("r", 1), 1, 0.0, label="jane"), None, 0.0)
    store.record(_contrib(("r", 2), 2, 0.0, label="ann"), None, 0.0)
    assert store.bind_label("ann", 1) == [] and store.label_conflicts == 1
    assert store.label_of(1) == "jane" and store.gid_of_label("ann") == 2 and 2 in store


def test_store_a_merge_keeps_max_tracks_per_identity() -> None:
    store = FleetStore(D, IdentityConfig(max_tracks_per_identity=2))
    for i, gid in enumerate((1, 1, 2, 2)):
        store.record(_contrib(("r", i), gid, float(i)), None, float(i))
    store.bind_label("jane", 1)
    assert store.bind_label("jane", 2) == [(2, 1)]
    assert set(store.identities[1].keys) == {("r", 2), ("r", 3)}  # the two heard of last
    assert len(store.contributions) == 2 and store.dropped == 2


def test_store_bounds_hold_exactly_max_identities_aliases_and_max_forgotten_tombstones() -> None:
    store = FleetStore(D, IdentityConfig(max_identities=1, max_forgotten=2))
    store.record(_contrib(("me", 1), 1, 0.0, live_local=True), None, 0.0)
    store.record(_contrib(("me", 2), 2, 0.0, live_local=True), None, 0.0)
    store.bind_label("jane", 1)
    store.bind_label("jane", 2)
    assert store.canonical(2) == 1  # one alias: max_identities of them
    store.forget(7, 1.0)
    store.forget(8, 2.0)
    assert store.is_forgotten(7) and store.is_forgotten(8)
    store.forget(9, 3.0)
    assert not store.is_forgotten(7)


def test_store_forgetting_an_id_leaves_the_ids_merged_into_it_their_own() -> None:
    store = FleetStore(D, IdentityConfig())
    store.record(_contrib(("r", 1), 1, 0.0, label="jane"), None, 0.0)
    store.record(_contrib(("r", 2), 2, 0.0, label="jane"), None, 0.0)
    assert store.canonical(2) == 1
    assert store.forget(1, 1.0) and store.canonical(2) == 2 and not store.is_forgotten(2)


def test_store_a_remote_claim_lapses_exactly_claim_ttl_s_after_it_was_heard() -> None:
    store = FleetStore(D, IdentityConfig(claim_ttl_s=10.0))
    c = Contribution(("r", 1), 1, 0.0, 5.0, 0.5, None, False, False)
    assert store.is_live(c, 14.9) and not store.is_live(c, 15.0)


def test_store_makes_room_from_ended_tracks_only() -> None:
    people = People(2)
    store = FleetStore(D, IdentityConfig(max_exemplar_rows=2))
    store.record(_contrib(("me", 1), 1, 0.0, live_local=True), np.stack([people.obs(0)] * 2), 0.0)
    store.record(_contrib(("r", 2), 2, 1.0), people.obs(1)[None], 1.0)  # no room: a live track's rows stay
    assert store.bank.count(("me", 1)) == 2 and store.bank.count(("r", 2)) == 0 and store.dropped == 0


def test_store_over_max_tracks_per_identity_drops_ended_tracks_first() -> None:
    store = FleetStore(D, IdentityConfig(max_tracks_per_identity=2, claim_ttl_s=10.0))
    store.record(Contribution(("r", 1), 1, 0.0, 5.0, 0.5, None, False, False), None, 5.0)  # live, older
    store.record(_contrib(("r", 2), 1, 6.0), None, 6.0)  # ended, newer
    store.record(Contribution(("r", 3), 1, 0.0, 7.0, 0.5, None, False, False), None, 7.0)
    assert set(store.identities[1].keys) == {("r", 1), ("r", 3)}


def test_store_never_evicts_an_identity_a_live_track_of_this_camera_holds() -> None:
    store = FleetStore(D, IdentityConfig(max_identities=1))
    store.record(_contrib(("me", 1), 1, 0.0, live_local=True), None, 0.0)  # the least recently seen
    store.record(_contrib(("r", 2), 2, 1.0), None, 1.0)
    store.record(_contrib(("r", 3), 3, 2.0), None, 2.0)
    assert 1 in store and 2 not in store and store.evicted == 1


def test_store_evicts_identities_no_live_track_claims_before_a_live_claim_of_another_camera() -> None:
    """At max_identities the least recently seen identity went even when another camera's track still claimed it
    live and an ended one was left: the claim that keeps far cameras off its id was forgotten first. Identities
    no live track claims go first, then live remote ones, each the least recently seen first."""
    store = FleetStore(D, IdentityConfig(max_identities=2, claim_ttl_s=10.0))
    live = Contribution(("r", 1), 1, 0.0, 0.0, 0.5, None, False, False)  # heard at 0, live until 10
    store.record(live, None, 0.0)
    store.record(_contrib(("r", 2), 2, 1.0), None, 1.0)  # ended, heard of later
    store.record(_contrib(("r", 3), 3, 2.0), None, 2.0)
    assert 1 in store and 2 not in store and 3 in store and store.evicted == 1
    store.record(_contrib(("r", 4), 4, 3.0), None, 3.0)  # the ended 3 goes before the live claim
    assert 1 in store and 3 not in store and 4 in store
    lapsed = Contribution(("r", 5), 5, 0.0, 11.0, 0.5, None, False, False)  # 1's claim has lapsed by now
    store.record(lapsed, None, 11.0)
    assert 1 not in store and 4 in store and 5 in store and store.evicted == 3
    for n, gid in enumerate((6, 7)):  # every identity claimed live: the bound holds, the oldest going first
        store.record(Contribution(("r", gid), gid, 11.0, 11.0 + n, 0.5, None, False, False), None, 11.0 + n)
    assert set(store.identities) == {6, 7}


def test_store_counts_an_identity_as_claimed_when_any_one_of_its_tracks_claims_it_live() -> None:
    """Identity 1 has an ended track on camera s and a live one on camera r: one live claim is enough to keep far
    cameras off it, so at max_identities the ended 2, heard of later, goes first. Kills the mutant taking an
    identity as claimed only when every track of it is live (1, the least recently seen, went)."""
    store = FleetStore(D, IdentityConfig(max_identities=2, claim_ttl_s=10.0))
    store.record(Contribution(("r", 1), 1, 0.0, 0.0, 0.5, None, False, False), None, 0.0)  # live until 10
    store.record(_contrib(("s", 1), 1, 0.5), None, 0.5)  # ended
    store.record(_contrib(("r", 2), 2, 1.0), None, 1.0)
    store.record(_contrib(("r", 3), 3, 2.0), None, 2.0)
    assert 1 in store and 2 not in store and 3 in store and store.evicted == 1


def test_store_never_expires_a_live_track_of_this_camera() -> None:
    store = FleetStore(D, IdentityConfig(retention_s=100.0))
    store.record(_contrib(("me", 1), 1, 0.0, live_local=True), None, 0.0)
    store.record(_contrib(("r", 2), 2, 0.0), None, 0.0)
    store.expire(101.0)
    assert 1 in store and 2 not in store


def test_store_replacing_a_tracks_rows_makes_room_for_the_difference_only() -> None:
    axes = np.eye(D, dtype=np.float32)
    store = FleetStore(D, IdentityConfig(max_exemplar_rows=3))
    store.record(_contrib(("r", 1), 1, 0.0), axes[:1], 0.0)
    store.record(_contrib(("me", 2), 2, 1.0, live_local=True), axes[1:3], 1.0)
    store.record(_contrib(("me", 2), 2, 2.0, live_local=True), axes[3:5], 2.0)  # 3 rows in all, as before
    assert store.bank.count(("r", 1)) == 1 and store.dropped == 0
    assert store.scores([axes[:1]], [None], "max", 1, floor=1.0) == [{1: 1.0}]  # the floor itself is kept


def test_assign_is_one_to_one_and_respects_the_threshold() -> None:
    s = np.array([[0.95, 0.9, 0.1], [0.9, 0.2, 0.1], [0.5, 0.6, -np.inf]])
    pairs = assign(s, 0.8)
    assert sorted(pairs) == [(0, 1), (1, 0)]  # total 1.8 beats (0, 0) alone; row 2 is below the threshold
    assert assign(np.full((2, 2), 0.5), 0.8) == []
    assert assign(np.zeros((0, 3)), 0.5) == []
    assert assign(np.array([[0.5]]), 0.5) == [(0, 0)]  # a pair exactly at the threshold is made


# ------------------------------------------------------------------------------------- one camera


def test_single_camera_one_new_id_per_person_and_stable() -> None:
    people, alloc = People(3), Counter()
    cam = IdentityResolver("a", D, alloc)
    seen: list[dict[int, int | None]] = []
    for k in range(20):
        out = step(cam, float(k), {1: people.obs(0), 2: people.obs(1), 3: people.obs(2)})
        seen.append(ids(out))
    cfg = cam.cfg
    assert all(v is None for v in seen[cfg.new_min_observations - 2].values())  # pending while unsure
    assert alloc.calls == 3
    assert all(s == seen[-1] for s in seen[cfg.new_min_observations :])
    assert sorted(v for v in seen[-1].values() if v is not None) == [1, 2, 3]
    assert {(a.source, a.similarity) for a in out.assignments} == {("new", 0.0)}  # no match: no similarity


def test_no_new_id_for_flicker_or_low_quality() -> None:
    people, alloc = People(3), Counter()
    cam = IdentityResolver("a", D, alloc)
    step(cam, 0.0, {1: people.obs(0)})
    step(cam, 1.0, {1: people.obs(0)}, ended=[1])  # two frames, then gone: no id
    for k in range(30):  # a tiny, barely detected person: never confident
        out = step(cam, 2.0 + k, {2: people.obs(1)}, scores={2: 0.3}, heights={2: 30.0})
    assert alloc.calls == 0
    assert out.assignments[0].source == "pending"
    assert cam.stats().identities == 0
    edge = IdentityResolver("b", D, Counter())  # a best quality of exactly new_min_quality (0.25) is enough
    _, seen = observe(edge, people, {1: 0}, 0.0, 5, score=0.25)
    assert seen == {1: 1}


def test_person_back_on_the_same_camera_gets_the_same_id() -> None:
    people, alloc = People(2), Counter()
    cam = IdentityResolver("a", D, alloc)
    _, first = observe(cam, people, {1: 0}, 0.0, 6)
    end_all(cam, [1], 6.0)
    _, again = observe(cam, people, {2: 0}, 60.0, 6)
    assert again[2] == first[1] is not None
    assert alloc.calls == 1


def test_updates_are_published_on_change_not_every_frame() -> None:
    people = People(1)
    cfg = IdentityConfig(publish_interval_s=1.0, claim_ttl_s=10.0)
    cam = IdentityResolver("a", D, Counter(), cfg)
    updates: list[ProfileUpdate] = []
    for k in range(100):  # 10 s at 10 fps, embedded every frame
        updates.extend(step(cam, k / 10, {1: people.obs(0)}).updates)
    assert 1 <= len(updates) <= 12  # the decision, then at most one exemplar update per second
    for k in range(100, 200):  # seen but never embedded: keep-alives only, every half claim TTL
        updates.extend(step(cam, k / 10, {1: None}).updates)
    quiet = [u for u in updates if u.timestamp >= 10.0]
    assert 1 <= len(quiet) <= 3 and all(len(u.exemplars) == 0 for u in quiet)
    end = cam.end_track(1, 25.0)
    assert end is not None and end.ended and end.timestamp == pytest.approx(19.9)  # the last sighting
    # with its exemplars, though nothing changed since the last ones: the fleet's stored state takes a track's
    # latest profile with rows (a row-less one only renews it), so `who` and late joiners saw it alive
    assert len(end.exemplars) > 0
    assert cam.end_track(1, 26.0) is None


def test_track_not_reported_for_the_timeout_is_ended() -> None:
    """While frames come (one a second), a track not reported for track_timeout_s is ended, once."""
    people = People(2)
    cam = IdentityResolver("a", D, Counter(), IdentityConfig(track_timeout_s=5.0))
    observe(cam, people, {1: 0}, 0.0, 5)
    ends = [
        (k, u.track_id)
        for k in range(5, 12)
        for u in step(cam, float(k), {2: people.obs(1)}).updates
        if u.ended
    ]
    assert [tid for _, tid in ends].count(1) == 2  # gone out of view (lost_after_s), then timed out
    assert ends[-1] == (10, 1)  # last reported at 4 s
    assert cam.assignment(1) is None and cam.stats().live_tracks == 1


def test_a_wall_clock_stepping_back_does_not_stall_the_camera() -> None:
    """A live camera's clock is wall time; NTP may step it back. Tracks first seen after a step back of more
    than track_timeout_s were ended as timed out on every frame (so never got an id), and the updates went out
    stamped before the camera's earlier ones (peers refused them as out of order). The resolver's clock is the
    latest frame time it was given: time stands still until the wall clock has caught up."""
    people, alloc = People(2), Counter()
    cam, peer = IdentityResolver("a", D, alloc), IdentityResolver("b", D, alloc)
    bus, first = observe(cam, people, {1: 0}, 1000.0, 5)
    bus += end_all(cam, [1], 1004.0)
    later, after = observe(cam, people, {2: 1}, 884.0, 6)  # the clock stepped back 120 s
    relay(bus + later, peer)
    assert first[1] == 1 and after[2] == 2
    assert min(u.timestamp for u in later) >= 1004.0
    assert peer.stats().remote_rejected == {}


def test_a_wall_clock_stepped_back_does_not_pause_the_cameras_updates() -> None:
    """The wall clock steps back 30 s on a live camera (frames every 0.5 s). Its resolver's clock stands until
    the wall clock has caught up, and every interval was measured on it, so for the step's length nothing but
    new decisions went out: no exemplar updates or keep-alives (the peers' claims of its people lapsed after
    claim_ttl_s), no track announced as gone after lost_after_s, none timed out. Intervals now go on at the
    frames' pace; the stamps still never go back, so peers take every update."""
    people, alloc = People(2), Counter()
    cam = IdentityResolver("a", D, alloc, IdentityConfig(track_timeout_s=5.0))
    peer = IdentityResolver("b", D, alloc)
    bus, first = observe(cam, people, {1: 0, 2: 1}, 1000.0, 6)  # track 1 stands at the frame's edge (slot 0)
    window: list[tuple[int, ProfileUpdate]] = []
    for k in range(40):  # 976.0 ... 995.5: before the camera's latest frame time (1005) all along
        seen = {1: people.obs(0), 2: people.obs(1)} if k < 10 else {2: people.obs(1)}
        window += [(k, u) for u in step(cam, 976.0 + 0.5 * k, seen).updates]
    relay(bus + [u for _, u in window], peer)
    assert first == {1: 1, 2: 2}
    kept_up = [k for k, u in window if u.track_id == 2]
    assert kept_up and kept_up[0] <= 10 and max(np.diff([*kept_up, 39])) <= 10, kept_up  # every 5 s at most
    assert any(len(u.exemplars) for k, u in window if u.track_id == 2)  # its new looks went out too
    gone = [k for k, u in window if u.track_id == 1 and u.ended]
    assert gone and gone[0] <= 13, gone  # last seen at k = 9 at the edge: announced after lost_after_s (1 s)
    assert cam.assignment(1) is None and cam.assignment(2) is not None  # timed out after 5 s
    stamps = [u.timestamp for u in bus + [u for _, u in window]]
    assert min(stamps[len(bus) :]) >= 1005.0 and peer.stats().remote_rejected == {}


def test_a_track_the_tracker_dropped_times_out_on_frames_after_a_wall_clock_step_back() -> None:
    """The wall clock steps back 100 s while the tracker drops track 1: the frame clock stands through the
    step, so track 1 times out after track_timeout_s of frames, not after that plus the step."""
    people = People(2)
    cam = IdentityResolver("a", D, Counter(), IdentityConfig(track_timeout_s=5.0))
    observe(cam, people, {1: 0, 2: 1}, 1000.0, 5)  # last reported at 1004
    for k in range(6):  # 900 ... 905, one frame a second
        step(cam, 900.0 + k, {2: people.obs(1)})
    assert cam.assignment(1) is not None  # 5 s of frames since
    step(cam, 906.0, {2: people.obs(1)})
    assert cam.assignment(1) is None and cam.assignment(2) is not None


def test_a_track_reported_again_after_it_timed_out_can_get_its_id_back() -> None:
    """The tracker holds two tracks unreported for longer than track_timeout_s while frames come (a low frame
    rate, relink_window) and reports them again under their ids. The resolver had ended them; they came back
    as new tracks, but their own earlier records share their keys (camera, track id) and were never candidates
    (a track is not compared with its own rows): new ids, 1 and 2 became 4 and 5. The earlier record of a track
    the resolver ended is now a candidate like any other, so they get their ids back (one each)."""
    people, alloc = People(3), Counter()
    cam = IdentityResolver("a", D, alloc, IdentityConfig(track_timeout_s=5.0))
    _, first = observe(cam, people, {1: 0, 2: 1, 3: 2}, 0.0, 5)
    _, alone = observe(cam, people, {3: 2}, 5.0, 8)  # 1 and 2 time out
    assert cam.assignment(1) is None and cam.assignment(2) is None and alone == {3: 3}
    _, back = observe(cam, people, {1: 0, 2: 1, 3: 2}, 13.0, 6)
    assert first == back == {1: 1, 2: 2, 3: 3}
    assert alloc.calls == 3
    _, alone = observe(cam, people, {3: 2}, 19.0, 8)  # 1 and 2 time out again
    _, other = observe(cam, people, {3: 2, 7: 0}, 27.0, 4)  # the tracker gives person 0 a new track: id 1
    _, both = observe(cam, people, {3: 2, 7: 0, 1: 0}, 31.0, 6)  # and reports 1 again beside it
    assert other == {3: 3, 7: 1} and both[7] == 1 and both[1] != 1  # one id per frame: never two tracks on 1


def test_a_track_that_takes_its_id_back_keeps_its_earlier_exemplars() -> None:
    """Track 1 is seen from one side (view A), times out, and comes back from another (B, cosine 0.9 to A):
    it takes id 1 back, but the store holds one record per (camera, track), so its new exemplars replaced the
    old ones here and at the peers: a later track seen from a third side (C: 0.9 to A, 0.62 to B) no longer
    matched id 1 and got a new id. The returning track now keeps its earlier exemplars, within
    exemplars_per_track and by the same diversity rule."""
    people, alloc = People(1, noise=0.1), Counter()
    a_, b_ = people.centres[0], people.twin(0, 0.9)
    c_ = (1.8 * a_ - b_) / np.linalg.norm(1.8 * a_ - b_)  # 0.9 to A, on the far side of it from B
    people.centres = np.stack([a_, b_, c_]).astype(np.float32)
    cfg = IdentityConfig(track_timeout_s=5.0, exemplars_per_track=6)
    cam, peer = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, first = observe(cam, people, {1: 0}, 0.0, 6)  # view A
    for t in range(6, 12):  # frames come without it
        step(cam, float(t), {})
    assert first == {1: 1} and cam.assignment(1) is None  # timed out
    back, again = observe(cam, people, {1: 1}, 12.0, 8)  # view B: matches its own earlier record
    bus += back + end_all(cam, [1], 20.0)
    assert again == {1: 1} and alloc.calls == 1
    sent = [u for u in bus if u.track_id == 1 and len(u.exemplars)][-1].exemplars
    assert len(sent) <= 6
    assert (sent @ a_).max() > 0.95 and (sent @ b_).max() > 0.95  # both views, within the cap
    relay(bus, peer)
    _, later = observe(cam, people, {5: 2}, 30.0, 5)  # view C on the same camera
    _, there = observe(peer, people, {7: 2}, 30.0, 5)  # and on the peer
    assert later == {5: 1} and there == {7: 1}


def test_a_timed_out_track_back_as_someone_else_takes_none_of_its_earlier_exemplars() -> None:
    """Track 1 (person 0, id 1) times out; the tracker reports track 1 again on person 1, who gets a new id:
    the earlier record is another person's, so its exemplars do not join the track's profile."""
    people, alloc = People(2), Counter()
    cam = IdentityResolver("a", D, alloc, IdentityConfig(track_timeout_s=5.0))
    observe(cam, people, {1: 0}, 0.0, 5)
    frames(cam, 5.0, 11.0)
    back, again = observe(cam, people, {1: 1}, 12.0, 6)
    sent = [u for u in back if u.track_id == 1 and len(u.exemplars)][-1].exemplars
    assert again == {1: 2} and float((sent @ people.centres[0]).max()) < 0.5


def test_a_timed_out_track_back_as_someone_else_leaves_its_earlier_id_its_exemplars() -> None:
    """Regression: track 1 (person 0, id 1) times out and the tracker reports track 1 again on person 1, who
    gets id 2; the store kept one record per (camera, track), so id 2's record replaced id 1's, here and at the
    peers, and id 1 was gone: person 0 seen again on another track got a new id. Each id keeps its spell."""
    people, alloc = People(2), Counter()
    cfg = IdentityConfig(track_timeout_s=5.0)
    cam, peer = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, first = observe(cam, people, {1: 0}, 0.0, 5)
    for t in range(5, 12):  # track 1 times out: its end goes to the peers too
        bus += step(cam, float(t), {}).updates
    assert any(u.track_id == 1 and u.ended for u in bus)
    back, again = observe(cam, people, {1: 1}, 12.0, 6)  # the tracker's track 1 again, on person 1
    bus += back + end_all(cam, [1], 18.0)
    assert first == {1: 1} and again == {1: 2}
    relay(bus, peer)
    _, later = observe(cam, people, {5: 0}, 30.0, 5)  # person 0 again, on this camera
    _, there = observe(peer, people, {7: 0}, 30.0, 5)  # and on the peer
    assert later == {5: 1} and there == {7: 1} and alloc.calls == 2
    assert cam.forget(2) and cam.forget(99) is False
    _, still = observe(cam, people, {6: 0}, 40.0, 5)  # forgetting id 2 leaves id 1's spell of track 1
    assert still == {6: 1}


@pytest.mark.parametrize("gap", [40.0, 600.0])
def test_tracks_the_tracker_keeps_through_a_stall_or_a_clock_step_forward_keep_their_ids(gap: float) -> None:
    """A live stream stalls (or the wall clock steps forward) for ``gap`` seconds, over track_timeout_s (30 s),
    and comes back with the tracker's tracks as they were (it counts frames, not seconds). Every track was
    ended as timed out on the first frame after it and came back pending, then under new ids (1, 2 became 3, 4):
    its own earlier record shares its key, so it is never a candidate. The camera's intervals now run only
    while frames come: a gap counts as identity.max_frame_gap_s at most, and the tracks keep their ids; the
    peers, whose claims of them lapsed meanwhile, hear of them again on the first frame after it."""
    people, alloc = People(2), Counter()
    cam, peer = IdentityResolver("a", D, alloc), IdentityResolver("b", D, alloc)
    bus: list[ProfileUpdate] = []
    before: dict[int, int | None] = {}
    for k in range(12):  # 6 s at 2 fps
        out = step(cam, 1000.0 + 0.5 * k, {1: people.obs(0), 2: people.obs(1)})
        bus += out.updates
        before = ids(out)
    back = step(cam, 1005.5 + gap, {1: people.obs(0), 2: people.obs(1)})
    assert before == {1: 1, 2: 2}
    assert ids(back) == before and [a.changed for a in back.assignments] == [False, False]
    assert not [u for u in back.updates if u.ended]
    assert sorted(u.track_id for u in back.updates) == [1, 2]  # the claims renewed at once
    relay(bus + list(back.updates), peer)
    assert peer.stats().remote_rejected == {}
    after = [ids(step(cam, 1006.0 + gap + 0.5 * k, {1: people.obs(0), 2: people.obs(1)})) for k in range(10)]
    assert all(a == before for a in after) and alloc.calls == 2


# -------------------------------------------------------------------------------------- two cameras


def test_two_cameras_resolve_the_same_people_to_the_same_ids() -> None:
    people, alloc = People(5, seed=3), Counter()
    a, b = IdentityResolver("a", D, alloc), IdentityResolver("b", D, alloc)
    bus, first = observe(a, people, {10 + p: p for p in range(5)}, 0.0, 8)
    bus += end_all(a, first, 8.0)
    relay(bus, b)
    _, later = observe(b, people, {20 + p: p for p in (3, 0, 4, 1, 2)}, 100.0, 6)
    assert alloc.calls == 5
    for p in range(5):
        assert later[20 + p] == first[10 + p] is not None


@pytest.mark.parametrize("same", [True, False])
def test_a_track_ending_as_another_starts_on_the_same_frame(same: bool) -> None:
    """The tracker ends track 1 on the frame where it starts track 2. Of the same person, track 2 takes track 1's
    id (no new id); of someone else, it gets an id of its own. Test-only."""
    people, alloc = People(2), Counter()
    cam = IdentityResolver("a", D, alloc)
    _, seen = observe(cam, people, {1: 0}, 0.0, 6)
    who = 0 if same else 1
    outs = [step(cam, 6.0 + k, {2: people.obs(who)}, ended=[1] if k == 0 else []) for k in range(5)]
    assert [a.track_id for a in outs[0].assignments] == [2] and 1 not in cam._tracks
    assert {u.ended for u in outs[0].updates if u.track_id == 1} == {True}  # ended (at the edge: also lost)
    assert (ids(outs[-1])[2] == seen[1]) is same and ids(outs[-1])[2] is not None
    assert alloc.calls == (1 if same else 2)


def test_co_visible_tracks_never_share_an_id() -> None:
    people, alloc = People(1), Counter()
    twin = people.twin(0, 0.999)  # two people who look alike, side by side
    a, b = IdentityResolver("a", D, alloc), IdentityResolver("b", D, alloc)
    bus, _ = observe(a, people, {1: 0}, 0.0, 6)
    bus += end_all(a, [1], 6.0)
    relay(bus, b)
    for k in range(10):
        out = step(b, 100.0 + k, {5: people.obs(0), 6: twin})
        got = [g for g in ids(out).values() if g is not None]
        assert len(got) == len(set(got))
    final = ids(out)
    assert 1 in final.values() and final[5] != final[6] and None not in final.values()


def test_a_track_cannot_take_the_id_a_visible_track_holds() -> None:
    people, alloc = People(1), Counter()
    cam = IdentityResolver("a", D, alloc)
    observe(cam, people, {1: 0}, 0.0, 6)
    for k in range(8):  # track 1 keeps its id without new embeddings; a look-alike track appears
        out = step(cam, 6.0 + k, {1: None, 2: people.obs(0)})
    assert ids(out)[1] == 1 and ids(out)[2] not in (None, 1)


def test_label_merge_never_leaves_two_visible_tracks_on_one_id() -> None:
    people, alloc = People(2, seed=5), Counter()
    cam = IdentityResolver("a", D, alloc)
    observe(cam, people, {1: 0, 2: 1}, 0.0, 6)  # ids 1 and 2
    empty = np.zeros((0, D), np.float32)
    cam.ingest_remote(ProfileUpdate("r", 7, 1, 6.0, 0.9, empty, label="jane"))
    cam.ingest_remote(ProfileUpdate("r", 8, 2, 6.0, 0.9, empty, label="jane"))  # 2 merges into 1
    assert cam.stats().label_merges == 1
    for k in range(6):
        out = step(cam, 7.0 + k, {1: people.obs(0), 2: people.obs(1)})
        got = [g for g in ids(out).values() if g is not None]
        assert len(got) == len(set(got))
    assert ids(out)[1] == 1 and out.assignments[0].label == "jane"


# --------------------------------------------------------------------------- travel-time guards


def test_after_a_label_merge_the_track_that_took_the_id_first_keeps_it() -> None:
    people, alloc = People(2, seed=5), Counter()
    cam = IdentityResolver("a", D, alloc)
    observe(cam, people, {5: 0}, 0.0, 6)  # track 5 takes id 1
    _, both = observe(cam, people, {5: 0, 3: 1}, 6.0, 6)  # track 3 (a lower track id) takes id 2 later
    empty = np.zeros((0, D), np.float32)
    cam.ingest_remote(ProfileUpdate("r", 7, 1, 12.0, 0.9, empty, label="jane"))
    cam.ingest_remote(ProfileUpdate("r", 8, 2, 12.0, 0.9, empty, label="jane"))  # 2 merges into 1
    after = ids(step(cam, 12.0, {5: people.obs(0), 3: people.obs(1)}))
    assert both == {5: 1, 3: 2} and after[5] == 1 and after[3] != 1


def test_a_track_that_lost_its_id_to_a_co_visible_track_is_decided_again_once() -> None:
    """After the label merge track 2 shares id 1 with track 1, which took it first: track 2 is decided again on
    that frame though not embedded (a new id), and then, like every track, only on its new looks: the
    fleet's news of a better match for it waits for its next look."""
    people, alloc = People(2, seed=5), Counter()
    cam = IdentityResolver("a", D, alloc)
    observe(cam, people, {1: 0, 2: 1}, 0.0, 6)
    empty = np.zeros((0, D), np.float32)
    cam.ingest_remote(ProfileUpdate("r", 7, 1, 6.0, 0.9, empty, label="jane"))
    cam.ingest_remote(ProfileUpdate("r", 8, 2, 6.0, 0.9, empty, label="jane"))  # 2 merges into 1
    assert ids(step(cam, 6.0, {1: people.obs(0), 2: None})) == {1: 1, 2: 3}
    cam.ingest_remote(_remote("r", 9, 50, 6.0, people.centres[1], ended=True))  # person 1 as id 50
    held = [ids(step(cam, 7.0 + k, {1: None, 2: None}))[2] for k in range(3)]
    moved = [ids(step(cam, 10.0 + k, {1: None, 2: people.obs(1)}))[2] for k in range(3)]
    assert held == [3, 3, 3] and moved[-1] == 50


def test_far_apart_cameras_cannot_hold_one_id_at_once() -> None:
    people, alloc = People(1), Counter()
    cfg = IdentityConfig(adjacency=(CameraEdge(a="a", b="b", min_s=30.0, max_s=120.0),))
    a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, seen_a = observe(a, people, {1: 0}, 0.0, 10)
    relay(bus, b)
    # the same look on b while a still sees it (too faint for a new id: b's ids stay a's to take)
    _, seen_b = observe(b, people, {1: 0}, 5.0, 5, score=0.2)
    assert seen_a[1] == 1 and seen_b[1] is None
    relay(end_all(a, [1], 10.0), b)  # a's track ends; last seen at t=9
    relay(end_all(b, [1], 10.0), a)
    _, early = observe(b, people, {2: 0}, 20.0, 5, score=0.2)  # 11-15 s after: too soon to have walked
    assert early[2] is None
    end_all(b, [2], 25.0)
    _, late = observe(b, people, {3: 0}, 45.0, 5)  # 36 s after: the walk fits
    assert late[3] == 1


def _at(res: IdentityResolver, t: float, tid: int, vec: F32, xyxy: tuple[float, ...]) -> FrameIdentities:
    """One frame with track ``tid`` alone, at box ``xyxy``."""
    return res.update(t, [Track(res.camera, tid, xyxy, 0.9, 0)], vec[None], FRAME)


MID_VIEW = (600.0, 200.0, 680.0, 400.0)
AT_EDGE = (1240.0, 200.0, 1280.0, 400.0)  # half out of the right edge of the 1280-wide frame


@pytest.mark.parametrize(("lost_after", "last_box"), [(1.0, AT_EDGE), (0.0, AT_EDGE), (1.0, MID_VIEW)])
def test_a_track_that_walked_out_of_view_is_announced_and_stops_blocking_far_cameras(
    lost_after: float, last_box: tuple[float, ...]
) -> None:
    people, alloc = People(1), Counter()
    cfg = IdentityConfig(lost_after_s=lost_after, claim_ttl_s=30.0)  # no graph: far-apart views
    a, c = IdentityResolver("a", D, alloc, cfg), IdentityResolver("c", D, alloc, cfg)
    for k in range(4):  # a sees the person from t=0 to 3, the last time at last_box; then loses them
        out = _at(a, float(k), 1, people.obs(0), MID_VIEW if k < 3 else last_box)
        relay(out.updates, c)
    first = ids(out)[1]
    assert not [u for u in step(a, 3.5, {}).updates if u.ended]  # lost for 0.5 s: nothing said yet
    said = step(a, 4.0, {}).updates
    relay(said, c)
    announced = bool(lost_after) and last_box == AT_EDGE  # walked out of view; mid-view: hidden, not gone
    assert [(u.track_id, u.ended, u.timestamp) for u in said] == ([(1, True, 3.0)] if announced else [])
    assert not step(a, 4.5, {}).updates  # said once
    _, seen_c = observe(c, people, {5: 0}, 5.0, 4)  # the person shows up on c
    # announced: c may take the id; otherwise a's claim holds for claim_ttl_s and c makes a new one
    assert (seen_c[5] == first) is announced
    back = [u for u in _at(a, 6.0, 1, np.zeros(D, np.float32), MID_VIEW).updates if u.track_id == 1]
    # found again by a's tracker (not embedded on that frame): the fleet hears it is back, with its exemplars
    if announced:
        assert len(back) == 1 and not back[0].ended and len(back[0].exemplars) > 0


def test_a_live_claim_of_a_far_camera_holds_at_max_identities() -> None:
    """a names jane (id 1) and keeps seeing her, one view of her (no news but keep-alives); b, at max_identities,
    heard of two ended tracks since a's last word and evicted a's live claim, the least recently seen: b then
    named its own look of jane too, under a new id, jane on two far-apart cameras at once until a's next
    keep-alive (the label merge took b's id into 1, which b's track then gave up). The live claim stays; b's
    track stays off jane and id 1."""
    people = People(3, seed=6)
    gallery = _gallery(people, jane=0)
    cfg = IdentityConfig(max_identities=2, claim_ttl_s=30.0)
    alloc = Counter()
    a = IdentityResolver("a", D, alloc, cfg, gallery=gallery)
    b = IdentityResolver("b", D, alloc, cfg, gallery=gallery)
    jane = people.centres[0].copy()
    for k in range(10):
        relay(step(a, float(k), {1: jane}).updates, b)
    assert a.assignment(1).label == "jane"  # type: ignore[union-attr]
    for p in (1, 2):
        assert b.ingest_remote(_remote("r", p, 50 + p, 9.0 + 0.1 * p, people.obs(p), ended=True))
    gid = ids(step(a, 10.0, {1: jane}))[1]
    for k in range(20):
        out_a = step(a, 11.0 + k, {1: jane})
        out_b = step(b, 11.0 + k, {7: people.obs(0)})
        relay(out_a.updates, b)
        relay(out_b.updates, a)
        got = out_b.assignments[0]
        assert got.global_id != gid and got.label is None, (k, got)
    assert ids(out_a)[1] == gid


def test_without_a_graph_simultaneous_claims_need_overlapping_views() -> None:
    for overlap in (False, True):
        people, alloc = People(1), Counter()
        cfg = IdentityConfig(allow_overlapping_views=overlap)
        a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
        bus, _ = observe(a, people, {1: 0}, 0.0, 6)
        relay(bus, b)
        _, seen_b = observe(b, people, {1: 0}, 4.0, 5)
        assert (seen_b[1] == 1) is overlap


def test_two_cameras_taking_one_id_at_once_settle_on_the_first() -> None:
    people, alloc = People(1), Counter()
    c = IdentityResolver("c", D, alloc)
    bus, seen_c = observe(c, people, {1: 0}, 0.0, 6)  # seen long ago on a third camera
    bus += end_all(c, [1], 6.0)
    a, b = IdentityResolver("a", D, alloc), IdentityResolver("b", D, alloc)
    relay(bus, a, b)
    to_b, seen_a = observe(a, people, {1: 0}, 50.0, 3)  # both decide before hearing of each other
    to_a, seen_b = observe(b, people, {1: 0}, 50.5, 3)
    assert seen_a[1] == seen_b[1] == seen_c[1]
    relay(to_b, b)
    relay(to_a, a)
    after_a = ids(step(a, 53.0, {1: None}))
    after_b = ids(step(b, 53.5, {1: None}))
    assert after_a[1] == seen_c[1] and after_b[1] != seen_c[1]  # a took it first and keeps it


@pytest.mark.parametrize("cameras", ["ab", "abc"])
def test_overlapping_cameras_that_give_new_ids_at_once_settle_on_the_earlier_ones(cameras: str) -> None:
    """Every camera decides on the same frame, before hearing of the others: new ids for three people on
    each. Without a tie-break two cameras switched to each other's ids on every decision (swapping for ever)."""
    people, alloc = People(3, seed=5), Counter()
    cfg = IdentityConfig(allow_overlapping_views=True)
    res = [IdentityResolver(name, D, alloc, cfg) for name in cameras]
    history = []
    for k in range(16):
        outs = [
            step(r, float(k), {10 * (i + 1) + p: people.obs(p) for p in range(3)}) for i, r in enumerate(res)
        ]
        for i, out in enumerate(outs):  # each hears the others only after its own decision on the frame
            relay(out.updates, *(r for j, r in enumerate(res) if j != i))
        history.append([ids(out) for out in outs])
    assert alloc.calls == 3 * len(cameras)  # the race happened
    for frame in history[-6:]:  # settled on the first camera's ids, and stays so
        for i, seen in enumerate(frame):
            assert [seen[10 * (i + 1) + p] for p in range(3)] == [1, 2, 3]


def test_a_new_id_given_at_once_by_a_camera_whose_track_has_ended_is_still_taken() -> None:
    """The same race, but b's track ends before the two settle: it cannot come over, so a's track takes its id
    (one id for the person) rather than waiting for it."""
    people, alloc = People(1, seed=5), Counter()
    cfg = IdentityConfig(allow_overlapping_views=True)
    a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    for k in range(3):
        out_a = step(a, float(k), {1: people.obs(0)})
        out_b = step(b, float(k), {2: people.obs(0)})
        relay(out_a.updates, b)
        relay(out_b.updates, a)
    assert ids(out_a)[1] == 1 and ids(out_b)[2] == 2  # the race happened: b's id is the later one
    relay(end_all(b, [2], 2.5), a)
    for k in range(3, 8):
        out_a = step(a, float(k), {1: people.obs(0)})
    assert ids(out_a)[1] == 2


def test_two_far_cameras_taking_one_id_at_the_same_instant_agree_on_which_keeps_it() -> None:
    """The race above with equal timestamps: both took the id at t=50 exactly. The tie goes to the camera whose
    name sorts first on both sides, so exactly one of them keeps it. Test-only."""
    people, alloc = People(1), Counter()
    c = IdentityResolver("c", D, alloc)
    bus, seen_c = observe(c, people, {1: 0}, 0.0, 6)
    relay(
        bus + end_all(c, [1], 6.0), a := IdentityResolver("a", D, alloc), b := IdentityResolver("b", D, alloc)
    )
    to_b, seen_a = observe(a, people, {1: 0}, 50.0, 3)
    to_a, seen_b = observe(b, people, {1: 0}, 50.0, 3)
    assert seen_a[1] == seen_b[1] == seen_c[1]
    relay(to_b, b)
    relay(to_a, a)
    after_a, after_b = ids(step(a, 53.0, {1: None})), ids(step(b, 53.0, {1: None}))
    assert after_a[1] == seen_c[1] and after_b[1] != seen_c[1]


def test_a_camera_outside_the_graph_is_blocked_while_the_claim_lives_and_free_once_it_ends() -> None:
    """A graph joins a and b; z is in no edge. a's live claim blocks z (no edge: the views do not overlap); once a's
    track ended, no path bounds the walk to z, so z may take the id at once. Test-only."""
    people, alloc = People(1), Counter()
    cfg = IdentityConfig(adjacency=(CameraEdge(a="a", b="b", min_s=30.0, max_s=120.0),))
    a, z = IdentityResolver("a", D, alloc, cfg), IdentityResolver("z", D, alloc, cfg)
    bus, seen = observe(a, people, {1: 0}, 0.0, 6)
    relay(bus, z)
    _, during = observe(z, people, {1: 0}, 3.0, 3, score=0.2)  # too faint for a new id: a's id or nothing
    assert during[1] is None
    relay(end_all(a, [1], 6.0), z)
    _, after = observe(z, people, {2: 0}, 7.0, 3)
    assert after[2] == seen[1] and alloc.calls == 1


def test_remote_claim_lapses_after_its_ttl() -> None:
    people, alloc = People(1), Counter()
    cfg = IdentityConfig(claim_ttl_s=10.0)
    a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, _ = observe(a, people, {1: 0}, 0.0, 4)  # a goes silent at t=3 without ending the track
    relay(bus, b)
    _, soon = observe(b, people, {1: 0}, 5.0, 4, score=0.2)
    assert soon[1] is None
    _, later = observe(b, people, {2: 0}, 20.0, 4)
    assert later[2] == 1


def test_an_ended_claim_blocks_until_exactly_the_minimum_travel_time() -> None:
    """a last sees the person at t=5 and the walk to b takes 30 s at least: b's track, decided on its second
    look, may take the id at t=35, not at t=34."""
    people, alloc = People(1), Counter()
    cfg = IdentityConfig(adjacency=(CameraEdge(a="a", b="b", min_s=30.0, max_s=120.0),))
    a = IdentityResolver("a", D, alloc, cfg)
    bus, _ = observe(a, people, {1: 0}, 0.0, 6)
    bus += end_all(a, [1], 5.0)
    decided = {}
    for t in (34.0, 35.0):
        b = IdentityResolver("b", D, alloc, cfg)
        relay(bus, b)
        step(b, t - 1.0, {2: people.obs(0)})
        decided[t] = ids(step(b, t, {2: people.obs(0)}))[2]
    assert decided == {34.0: None, 35.0: 1}


def test_a_lapsed_claim_blocks_for_the_travel_time_from_the_latest_possible_sighting() -> None:
    """a sees the person until t=11 (embedded until t=3, so its last keep-alive says t=8), then loses them in
    mid-view, its tracker still holding the track. The claim lapsed at 18 and b took the id at once: 7 s after a
    last saw the person, though the walk takes 8 s at least. A track re-announces itself every half claim_ttl_s
    while seen, so a lapsed claim now stands for a sighting up to then."""
    people, alloc = People(1), Counter()
    edge = CameraEdge(a="a", b="b", min_s=8.0, max_s=60.0)
    cfg = IdentityConfig(adjacency=(edge,), claim_ttl_s=10.0)
    a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    for k in range(12):
        out = step(a, float(k), {1: people.obs(0) if k < 4 else None})
        relay(out.updates, b)
    first = ids(out)[1]
    assert first is not None
    early = [
        ids(step(b, float(k), {5: people.obs(0)}))[5] for k in range(16, 19)
    ]  # 5-7 s after a's last sighting
    assert first not in early, early


def test_a_walk_that_fits_an_edge_gets_the_transition_bonus() -> None:
    people = People(1, noise=0.0)
    near = people.twin(0, 0.79)  # just under the fleet threshold (0.8) without the bonus (0.02)
    edge = CameraEdge(a="a", b="b", min_s=10.0, max_s=60.0)
    cfg = IdentityConfig(adjacency=(edge,), transition_bonus=0.02)
    results = {}
    for gap in (30.0, 100.0):  # within [min_s, max_s], and beyond max_s
        alloc = Counter()
        a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
        bus, _ = observe(a, people, {1: 0}, 0.0, 6)
        relay(bus + end_all(a, [1], 6.0), b)
        for k in range(4):
            out = step(b, 5.0 + gap + k, {2: near})
        results[gap] = ids(out)[2]
    assert results == {30.0: 1, 100.0: 2}


def test_travel_model_paths_and_overlaps() -> None:
    edges = (
        CameraEdge(a="a", b="b", min_s=10, max_s=60),
        CameraEdge(a="b", b="c", min_s=5, max_s=30),
        CameraEdge(a="c", b="d", min_s=0, max_s=5),
    )
    tm = TravelModel(edges, allow_overlapping_views=False)
    assert tm.min_travel("a", "c") == 15 and tm.min_travel("a", "a") == 0 and tm.min_travel("a", "z") == 0
    assert tm.overlapping("c", "d") and not tm.overlapping("a", "b") and not tm.overlapping("a", "d")
    assert tm.in_window("a", "b", 30) and not tm.in_window("a", "b", 61) and not tm.in_window("a", "c", 20)
    assert TravelModel((), allow_overlapping_views=True).overlapping("x", "y")
    with pytest.raises(ConfigError, match="joined twice"):
        TravelModel((*edges, CameraEdge(a="b", b="a", min_s=1, max_s=2)), False)


def test_travel_window_bounds_overlaps_and_reverse_paths() -> None:
    """in_window holds from min_s to max_s inclusive, either way round; a camera overlaps itself; an edge's views
    overlap only with min_s 0 (half a second apart is not at once); min_travel goes both ways along a path."""
    edges = (CameraEdge(a="a", b="b", min_s=10, max_s=60), CameraEdge(a="b", b="c", min_s=0.5, max_s=30))
    tm = TravelModel(edges, allow_overlapping_views=False)
    assert [tm.in_window("a", "b", dt) for dt in (9.9, 10, 60, 60.1)] == [False, True, True, False]
    assert tm.in_window("b", "a", 10) and not tm.in_window("b", "a", 0)
    assert tm.overlapping("a", "a") and tm.overlapping("z", "z")
    assert not tm.overlapping("b", "c") and not tm.overlapping("c", "b")
    assert tm.min_travel("c", "a") == tm.min_travel("a", "c") == 10.5


def test_an_ambiguous_look_gets_a_new_id_rather_than_a_merge() -> None:
    got = {}
    for margin in (0.04, 0.0):
        people = People(2, seed=8, noise=0.05)
        people.centres[1] = people.twin(0, 0.9)  # two people who look much alike...
        between = people.centres[0] + people.centres[1]
        between /= np.linalg.norm(between)  # ...and a third as close to each of them
        alloc = Counter()
        cfg = IdentityConfig(fleet_distinct_margin=margin)
        a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
        bus, _ = observe(a, people, {1: 0, 2: 1}, 0.0, 6)
        relay(bus + end_all(a, [1, 2], 6.0), b)
        for k in range(5):
            out = step(b, 100.0 + k, {5: between})
        got[margin] = ids(out)[5]
    assert got[0.04] == 3  # no clear winner: a new person, not a merge with either
    assert got[0.0] in (1, 2)  # without the ratio test the look is merged into one of them


# ---------------------------------------------------------------------------------------- hysteresis


def _crossing(hold_overlap: float) -> list[tuple[int | None, int | None]]:
    """Two people cross on one camera: 4 frames apart, 4 frames with their boxes 60 % overlapped while each
    crop shows more of the other person than of its own, then 6 frames apart again (the fleet knows both from
    camera b, which saw them earlier). Returns each frame's (track 1's id, track 2's id)."""
    people, alloc = People(2, seed=8), Counter()
    cfg = IdentityConfig(hold_overlap=hold_overlap)
    res, earlier = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, _ = observe(earlier, people, {1: 0, 2: 1}, -100.0, 6)
    relay(bus + end_all(earlier, [1, 2], -94.0), res)
    apart = [(100.0, 100.0, 180.0, 300.0), (400.0, 100.0, 480.0, 300.0)]
    close = [(200.0, 100.0, 280.0, 300.0), (232.0, 100.0, 312.0, 300.0)]  # 48 of 80 px shared
    out = []
    for k in range(14):
        crossing = 4 <= k < 8
        boxes = close if crossing else apart
        looks = [people.obs(1), people.obs(0)] if crossing else [people.obs(0), people.obs(1)]
        tracks = [Track("a", tid, boxes[i], 0.9, i) for i, tid in enumerate((1, 2))]
        got = ids(res.update(float(k), tracks, np.stack(looks), FRAME))
        out.append((got[1], got[2]))
    return out


def test_candidates_exactly_fleet_distinct_margin_apart_name_the_best() -> None:
    axes = np.eye(D, dtype=np.float32)
    # a unit vector at cosine 0.75 to id 1's exemplar and 0.5 to id 2's: exactly the margin (0.25) apart
    look = 0.75 * axes[0] + 0.5 * axes[1] + 0.25 * (axes[2] + axes[3] + axes[4])
    cfg = IdentityConfig(fleet_threshold=0.45, fleet_distinct_margin=0.25)
    cam = IdentityResolver("b", D, itertools.count(100).__next__, cfg)
    for gid in (1, 2):
        cam.ingest_remote(_remote("a", gid, gid, 0.0, axes[gid - 1], ended=True))
    for k in range(4):
        out = step(cam, 100.0 + k, {7: look})
    assert ids(out)[7] == 1


def test_two_people_crossing_keep_their_ids() -> None:
    held = _crossing(hold_overlap=0.3)
    before = held[3]
    assert None not in before and before[0] != before[1]
    assert all(frame == before for frame in held[4:])  # through the crossing and after it
    never = _crossing(hold_overlap=1.0)  # never held: the mixed crops win the hysteresis and the ids swap
    assert never[3] == before and (before[1], before[0]) in never[4:8]


@pytest.mark.parametrize("count", [1, 2])
def test_two_look_alikes_side_by_side_keep_their_ids(count: int) -> None:
    """Two people who look alike (cosine 0.9, as different people reach with the shipped embedder) stand apart
    on one camera. Each new id held only the other track's exemplars, so each track scored the other's id above
    its own and the pair swapped ids every hysteresis_count decisions, for as long as both stayed in view.
    Tracks seen on the same frame are other people: their looks are no evidence."""
    people = People(1, seed=3, noise=0.15)
    twin = people.twin(0, 0.9)
    res = IdentityResolver("a", D, Counter(), IdentityConfig(hysteresis_count=count))
    history = []
    for k in range(30):
        noisy = twin + people.rng.standard_normal(D).astype(np.float32) * (0.15 / np.sqrt(D))
        got = ids(step(res, k / 5, {1: people.obs(0), 2: noisy / np.linalg.norm(noisy)}))
        history.append((got[1], got[2]))
    decided = [h for h in history if None not in h]
    assert decided and all(h == decided[0] for h in decided), history


def test_a_single_noisy_observation_does_not_flip_the_identity() -> None:
    people, alloc = People(2, seed=1), Counter()
    a, b = IdentityResolver("a", D, alloc), IdentityResolver("b", D, alloc)
    bus, _ = observe(a, people, {1: 0, 2: 1}, 0.0, 6)  # fleet knows person 0 (id 1) and person 1 (id 2)
    bus += end_all(a, [1, 2], 6.0)
    relay(bus, b)
    history = [ids(step(b, 100.0 + k, {5: people.obs(0)}))[5] for k in range(6)]
    history.append(ids(step(b, 106.0, {5: people.centres[1].copy()}))[5])  # one crop that looks like person 1
    history += [ids(step(b, 107.0 + k, {5: people.obs(0)}))[5] for k in range(10)]
    assert set(history[1:]) == {1}


def _challenge(count: int) -> list[int | None]:
    """A track holding person 0's id sees a better-quality view of person 1 once, then of person 0 again."""
    people = People(2, seed=2)
    cfg = IdentityConfig(exemplars_per_track=1, hysteresis_count=count, min_observations=1)
    alloc = Counter()
    a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, _ = observe(a, people, {1: 0, 2: 1}, 0.0, 6)
    bus += end_all(a, [1, 2], 6.0)
    relay(bus, b)
    history = []
    for k, (p, score) in enumerate([(0, 0.3), (0, 0.3), (1, 0.6), (0, 0.9), (0, 0.9)]):
        history.append(ids(step(b, 100.0 + k, {5: people.obs(p)}, scores={5: score}))[5])
    return history


def test_hysteresis_needs_consecutive_wins() -> None:
    assert _challenge(count=2) == [1, 1, 1, 1, 1]  # person 1 won one decision only: no flip
    assert _challenge(count=1) == [1, 1, 2, 1, 1]  # without hysteresis the label follows every view


def _interrupted(between: int | None, **cfg: float) -> list[int | None]:
    """Track 5 of camera b takes person 0's id, then sees person 1 (id 2) on two decisions of rising quality
    (each replaces its single exemplar), with a look of person ``between`` (None: nothing) decided in between."""
    people, alloc = People(3, seed=2), Counter()
    a = IdentityResolver("a", D, alloc)
    b = IdentityResolver("b", D, alloc, IdentityConfig(exemplars_per_track=1, min_observations=1, **cfg))
    bus, _ = observe(a, people, {1: 0, 2: 1}, 0.0, 6)
    relay(bus + end_all(a, [1, 2], 6.0), b)
    looks = [(0, 0.3), (1, 0.5)] + ([] if between is None else [(between, 0.7)]) + [(1, 0.9)]
    return [ids(step(b, 100.0 + k, {5: people.obs(p)}, scores={5: q}))[5] for k, (p, q) in enumerate(looks)]


def test_challengers_that_take_turns_never_win() -> None:
    """A track holding person 0's id then looks like person 1 and person 2 in turn, each look replacing its single
    exemplar: neither wins two decisions in a row, so the id never changes. Test-only."""
    people, alloc = People(3, seed=2), Counter()
    cfg = IdentityConfig(
        exemplars_per_track=1, min_observations=1, switch_similarity=0, replace_quality_margin=0.0
    )
    a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, _ = observe(a, people, {1: 0, 2: 1, 3: 2}, 0.0, 6)
    relay(bus + end_all(a, [1, 2, 3], 6.0), b)
    looks = [(0, 0.3)] + [(1 + k % 2, 0.35 + 0.05 * k) for k in range(10)]
    history = [
        ids(step(b, 100.0 + k, {5: people.obs(p)}, scores={5: q}))[5] for k, (p, q) in enumerate(looks)
    ]
    assert history == [1] * len(looks)


def test_a_decision_that_names_nobody_breaks_a_challengers_run() -> None:
    """Win, no winner, win is not two consecutive wins: a look of a stranger in between (person 2, whom the
    fleet does not know) came out pending (too little quality for a new id) or new (held: keep_held_ids), kept
    the track's id, and left the challenger's one win standing, so its next win switched the id."""
    assert _interrupted(None) == [1, 1, 2]  # two wins in a row: the id changes (hysteresis_count 2)
    assert _interrupted(2, new_min_quality=0.95) == [1, 1, 1, 1]  # win, pending, win
    assert _interrupted(2) == [1, 1, 1, 1]  # win, new (the track keeps its id), win


def test_a_challenger_kept_by_another_track_does_not_cost_the_track_its_id() -> None:
    """Track 5 holds person 0's id (1) and then looks like person 1 (id 2, held by track 6, whose look is a
    poorer match of person 1). Id 2 won track 5's decisions, but track 6 keeps it; track 5 was then offered the
    rest, and that offer was applied as it came: a new id (3), though no identity had won it and keep_held_ids
    keeps a track's id when its looks no longer match. The second offer passes the hysteresis too."""
    people, alloc = People(2, seed=2), Counter()
    a = IdentityResolver("a", D, alloc)
    b = IdentityResolver("b", D, alloc, IdentityConfig(exemplars_per_track=1, min_observations=1))
    bus, _ = observe(a, people, {1: 0, 2: 1}, 0.0, 6)
    relay(bus + end_all(a, [1, 2], 6.0), b)
    twin = people.twin(1, 0.9)
    history = []
    for k, q in enumerate([0.3, 0.6, 0.9, 0.95]):
        looks = {5: people.obs(0 if k == 0 else 1), 6: twin}
        history.append(ids(step(b, 100.0 + k, looks, scores={5: q, 6: q})))
    assert history == [{5: 1, 6: 2}] * 4 and alloc.calls == 2


def test_a_persistent_challenger_wins_after_the_count() -> None:
    people, alloc = People(2, seed=4), Counter()
    cfg = IdentityConfig(hysteresis_count=3, switch_similarity=0)  # the switch guard (below) would act first
    a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, _ = observe(a, people, {1: 0, 2: 1}, 0.0, 6)
    bus += end_all(a, [1, 2], 6.0)
    relay(bus, b)
    history = [ids(step(b, 100.0 + k, {5: people.obs(0)}))[5] for k in range(3)]
    history += [ids(step(b, 103.0 + k, {5: people.obs(1)}))[5] for k in range(30)]  # a tracker id switch
    assert history[1:3] == [1, 1] and history[-1] == 2
    flips = [k for k in range(2, len(history)) if history[k] != history[k - 1]]
    assert len(flips) == 1 and flips[0] >= 3 + cfg.hysteresis_count - 1, history


def test_a_track_that_switched_people_ends_its_id_there_and_is_resolved_afresh() -> None:
    """A tracker carries track 5 from person 0 onto person 1: the looks unlike its exemplars are not taken,
    and after switch_looks of them in a row the track's id ends (published as an ended track) and the track
    takes person 1's id; person 0's id keeps only person 0's looks, so their next track gets it back."""
    people, alloc = People(2, seed=4), Counter()
    cfg = IdentityConfig(switch_looks=3)
    a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, _ = observe(a, people, {1: 0, 2: 1}, 0.0, 6)
    bus += end_all(a, [1, 2], 6.0)
    relay(bus, b)
    outs = [step(b, 100.0 + k, {5: people.obs(0)}) for k in range(4)]
    outs += [step(b, 104.0 + k, {5: people.obs(1)}) for k in range(4)]  # the tracker's id switch
    history = [ids(o)[5] for o in outs]
    assert history[1:4] == [1, 1, 1] and history[4:6] == [1, 1]  # two odd looks: held, not yet a switch
    assert history[6] is None and history[7] == 2  # the third: ended and pending, then person 1's id
    assert [a.switched for o in outs for a in o.assignments] == [False] * 6 + [True, False]
    ended = [u for u in outs[6].updates if u.ended]
    assert [(u.track_id, u.global_id) for u in ended] == [(5, 1)]
    assert b.stats().switches == 1
    rows = ended[0].exemplars
    assert len(rows) == 0 or float(np.max(rows @ people.centres[1])) < 0.5  # no look of person 1 went in
    assert ids(step(b, 120.0, {9: people.obs(0)}))[9] in (None, 1)
    assert [ids(step(b, 121.0 + k, {9: people.obs(0)}))[9] for k in range(3)][-1] == 1


def _timeline(cfg: IdentityConfig, looks: list[F32], repeat: int) -> list[int | None]:
    """Camera b's id for track 5 given ``looks`` at 7 fps, each shown ``repeat`` times (a camera at 7 x repeat
    fps filming the same walk), read at the 7 fps frames' times; persons 0 and 1 known from camera a."""
    people, alloc = People(2, seed=4), Counter()
    a, b = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    bus, _ = observe(a, people, {1: 0, 2: 1}, 0.0, 6)
    relay(bus + end_all(a, [1, 2], 6.0), b)
    fps = 7.0 * repeat
    history = [ids(step(b, 100.0 + j / fps, {5: looks[j // repeat]}))[5] for j in range(len(looks) * repeat)]
    return history[::repeat]


@pytest.mark.parametrize(
    "cfg",
    [  # the challenger wins after hysteresis_count decisions (a track's exemplar: its latest look)
        IdentityConfig(
            hysteresis_count=3, switch_similarity=0, exemplars_per_track=1, replace_quality_margin=0.0
        ),
        IdentityConfig(switch_looks=3),  # the track switched people after switch_looks odd looks
    ],
    ids=["hysteresis", "switch"],
)
def test_identity_decisions_take_as_long_at_28_fps_as_at_7(cfg: IdentityConfig) -> None:
    """The counts were of frames: at 28 fps (a 7 fps walk, each look shown 4 times) a track was matched after
    2 frames (0.07 s, not 0.3 s) and a tracker's id switch or a challenger won after 3 (0.1 s, not 0.4 s): at
    real cameras' rates flips and merges came four times as cheap. A track takes one look per
    decision_interval_s now: the same decisions at the same times at 7, 14 and 28 fps (within 12 frames at 7
    fps, before the 0.14 s slots drift a 28 fps frame off the 7 fps frames)."""
    people = People(2, seed=4)
    looks = [people.obs(0) for _ in range(4)] + [people.obs(1) for _ in range(6)]
    slow = _timeline(cfg, looks, 1)
    assert slow[:6] == [None, 1, 1, 1, 1, 1] and slow[-1] == 2  # matched, then the change takes 3 looks
    assert _timeline(cfg, looks, 4) == slow
    assert _timeline(cfg, looks, 2) == slow


def test_the_switch_guard_is_off_at_zero_and_never_judges_a_track_with_few_exemplars() -> None:
    people, alloc = People(2, seed=4), Counter()
    off = IdentityResolver("a", D, alloc, IdentityConfig(switch_similarity=0))
    on = IdentityResolver("b", D, alloc, IdentityConfig())
    for res in (off, on):
        for k in range(4):
            step(res, float(k), {5: people.obs(0)})
        for k in range(6):
            step(res, 10.0 + k, {5: people.obs(1)})
    assert off.stats().switches == 0 and on.stats().switches == 1
    for k in range(2):  # two exemplars of person 0 are too few to judge person 1's looks by
        step(on, 30.0 + k, {7: people.obs(0)})
    for k in range(6):
        step(on, 40.0 + k, {7: people.obs(1)})
    assert on.stats().switches == 1
    three = IdentityResolver("c", D, alloc, IdentityConfig(exemplars_per_track=3))
    for k in range(3):  # three exemplars, the fewest judged, and all its profile holds
        step(three, float(k), {5: people.obs(0)})
    for k in range(3):
        step(three, 10.0 + k, {5: people.obs(1)})
    assert three.stats().switches == 1


def test_a_look_beside_a_box_covering_exactly_hold_overlap_of_it_is_judged() -> None:
    """Track 5's box shares exactly hold_overlap (0.25) of its area with track 6's: no crossing yet, so its
    looks of someone else still count against it, and the third in a row ends its id."""
    people = People(3, seed=4)
    cam = IdentityResolver("a", D, Counter(), IdentityConfig(hold_overlap=0.25, switch_looks=3))
    for k in range(4):
        step(cam, float(k), {5: people.obs(0)})
    five, six = (
        Track("a", 5, (100.0, 100.0, 180.0, 300.0), 0.9, 0),
        Track("a", 6, (160.0, 100.0, 240.0, 300.0), 0.9, 1),
    )
    for k in range(3):
        cam.update(4.0 + k, [five, six], np.stack([people.obs(1), people.obs(2)]), FRAME)
    assert cam.stats().switches == 1


def test_a_look_exactly_at_switch_similarity_is_like_the_track() -> None:
    axes = np.eye(D, dtype=np.float32)
    cam = IdentityResolver("a", D, Counter(), IdentityConfig(switch_similarity=0.5, switch_looks=3))
    for k in range(3):
        step(cam, float(k), {5: axes[k]})
    for k in range(3):  # cosine exactly 0.5 to the first exemplar (0 to the others): like the track
        step(cam, 3.0 + k, {5: 0.5 * (axes[0] + axes[3 + 3 * k] + axes[4 + 3 * k] + axes[5 + 3 * k])})
    assert cam.stats().switches == 0


# --------------------------------------------------------------------------------- gallery first


def test_gallery_named_identities_take_precedence() -> None:
    people, alloc = People(2, seed=6), Counter()
    gallery = Gallery(D, threshold=0.5)
    gallery.add_many(["jane"] * 3, np.stack([people.obs(0) for _ in range(3)]))
    a = IdentityResolver("a", D, alloc)
    named = IdentityResolver("n", D, alloc, gallery=gallery)
    c = IdentityResolver("c", D, alloc)
    bus, seen_a = observe(a, people, {1: 0, 2: 1}, 0.0, 6)  # the fleet knows person 0 as id 1, no name
    bus += end_all(a, [1, 2], 6.0)
    relay(bus, named, c)
    out = FrameIdentities((), ())
    updates: list[ProfileUpdate] = []
    for k in range(6):
        out = step(named, 100.0 + k, {7: people.obs(0), 8: people.obs(1)})
        updates.extend(out.updates)
    jane, other = out.assignments
    assert (jane.label, jane.source, jane.global_id) == ("jane", "gallery", seen_a[1])  # named, no new id
    assert (other.label, other.source, other.global_id) == (None, "fleet", seen_a[2])
    assert alloc.calls == 2
    relay(updates + end_all(named, [7, 8], 106.0), c)  # the name travels with the id
    _, seen_c = observe(c, people, {3: 0}, 200.0, 5)
    assert seen_c[3] == seen_a[1] and c.assignment(3) is not None
    assert c.assignment(3).label == "jane"  # type: ignore[union-attr]


def test_a_named_track_takes_the_name_the_gallery_prefers_by_more_than_the_hysteresis_margin() -> None:
    """Track 1 is named jane (0.9; ann 0.3), then looks like ann (0.93, then 0.96; jane 0.3, then 0.25). Within
    hysteresis_margin (0.05) of jane's best, 0.93 keeps the name; 0.96 beats it and wins the name after
    hysteresis_count decisions. The track kept jane for good, reporting ann's similarity: ann's proposal, a name
    with no fleet id yet, adopted the track's own id 1 (jane's), which counted as holding it."""
    axes = np.eye(D, dtype=np.float32)
    gallery = Gallery(D, threshold=0.5)
    gallery.add("jane", axes[0])
    gallery.add("ann", axes[1])
    cam = IdentityResolver("a", D, Counter(), gallery=gallery)
    named: list[tuple[str | None, float]] = []
    for k, (jane, ann) in enumerate([(0.9, 0.3)] * 3 + [(0.3, 0.93)] * 3 + [(0.25, 0.96)] * 3):
        look = jane * axes[0] + ann * axes[1] + np.sqrt(1 - jane**2 - ann**2) * axes[2 + k // 3]
        a = step(cam, float(k), {1: look}).assignments[0]
        named.append((a.label, round(a.similarity, 2)))
    assert named[1:6] == [("jane", 0.9)] * 5
    assert named[6:] == [("jane", 0.9), ("ann", 0.96), ("ann", 0.96)]
    assert cam.assignment(1).global_id == 2  # type: ignore[union-attr]  # ann's own id, not jane's


def test_gallery_name_first_seen_gets_one_new_id() -> None:
    people, alloc = People(1, seed=7), Counter()
    gallery = Gallery(D, threshold=0.5)
    gallery.add("jane", people.obs(0))
    cam = IdentityResolver("n", D, alloc, gallery=gallery)
    _, seen = observe(cam, people, {1: 0}, 0.0, 8)
    end_all(cam, [1], 8.0)
    _, again = observe(cam, people, {2: 0}, 50.0, 8)
    assert seen[1] == again[2] == 1 and alloc.calls == 1
    assert cam.assignment(2) is not None and cam.assignment(2).label == "jane"  # type: ignore[union-attr]


def _gallery(people: People, **enrolled: int) -> Gallery:
    """A gallery of three looks of each person ``enrolled[name]`` under ``name``."""
    gallery = Gallery(D, threshold=0.5)
    for name, p in enrolled.items():
        gallery.add_many([name] * 3, np.stack([people.obs(p) for _ in range(3)]))
    return gallery


def test_a_label_the_gallery_drops_is_given_to_no_track_and_its_holder_keeps_its_global_id() -> None:
    """A camera's gallery was fixed at start, so a person unenrolled (someone who left, a wrong enrolment, an
    erasure) kept being named until a restart. The resolver takes a new gallery: the live track named jane is
    unnamed on the next frame, keeping its global id (announced to the fleet without the name), the frame says
    jane went (once), a new track of her gets her id unnamed, ann stays named, and a peer still naming her is
    taken without the name."""
    people = People(2, seed=6)
    cam = IdentityResolver("a", D, Counter(), gallery=_gallery(people, jane=0, ann=1))
    _, seen = observe(cam, people, {1: 0, 2: 1}, 0.0, 6)
    jane, ann = cam.assignment(1), cam.assignment(2)
    assert jane is not None and (jane.label, jane.source) == ("jane", "gallery")
    assert ann is not None and ann.label == "ann"
    assert cam.set_gallery(_gallery(people, jane=0, ann=1, bob=1)) == ()
    assert cam.set_gallery(_gallery(people, ann=1)) == ("bob", "jane")
    out = step(cam, 6.0, {1: people.obs(0), 2: people.obs(1)})
    first, second = out.assignments
    assert (first.global_id, first.label, first.source, first.changed) == (seen[1], None, "fleet", True)
    assert (second.global_id, second.label, second.source, second.changed) == (
        seen[2],
        "ann",
        "gallery",
        False,
    )
    assert out.unnamed == ("bob", "jane")
    told = [u for u in out.updates if u.track_id == 1]
    assert len(told) == 1 and told[0].label is None and len(told[0].exemplars)  # the fleet hears it at once
    assert cam.store.label_of(seen[1]) is None and cam.store.gid_of_label("jane") is None
    later, _ = observe(cam, people, {1: 0, 2: 1}, 7.0, 4)
    assert cam.assignment(1).label is None and cam.assignment(1).global_id == seen[1]  # type: ignore[union-attr]
    assert all(u.label is None for u in later if u.track_id == 1)
    assert step(cam, 11.0, {1: people.obs(0)}).unnamed == ()  # said once
    end_all(cam, [1, 2], 12.0)
    _, back = observe(cam, people, {3: 0}, 20.0, 6)
    assert back[3] == seen[1] and cam.assignment(3).label is None  # type: ignore[union-attr]

    assert cam.ingest_remote(_remote("b", 9, 77, 25.0, people.obs(0)))  # b's camera still names her 77
    named = ProfileUpdate("b", 9, 77, 25.5, 0.9, people.obs(0).reshape(1, -1), label="jane")
    assert cam.ingest_remote(named)
    assert cam.store.label_of(77) is None and cam.store.gid_of_label("jane") is None


def test_a_label_added_to_the_gallery_is_given_from_then_on() -> None:
    """A person enrolled while the camera runs (enroll --append) is named by the camera from then on: a new
    track of theirs takes the name; so does one removed and enrolled again."""
    people = People(2, seed=8)
    cam = IdentityResolver("a", D, Counter(), gallery=_gallery(people, ann=0))
    assert cam.set_gallery(_gallery(people, ann=0, bob=1)) == ()
    observe(cam, people, {1: 1}, 0.0, 6)
    assert cam.assignment(1).label == "bob"  # type: ignore[union-attr]
    assert cam.set_gallery(_gallery(people, ann=0).emptied()) == ("ann", "bob")  # an empty gallery
    assert cam.ingest_remote(
        ProfileUpdate("b", 4, 50, 6.0, 0.9, people.obs(1).reshape(1, -1), label="bob")
    )  # a peer's, stripped of the name
    cam.set_gallery(_gallery(people, ann=0, bob=1))
    end_all(cam, [1], 7.0)
    observe(cam, people, {2: 1}, 30.0, 6)
    assert cam.assignment(2).label == "bob"  # type: ignore[union-attr]
    named = ProfileUpdate("b", 5, 51, 36.0, 0.9, people.centres[0].reshape(1, -1), label="carl")
    assert cam.ingest_remote(named) and cam.store.label_of(51) == "carl"  # a name this camera never held


def test_a_label_enrolled_again_is_taken_from_peers_again_and_not_said_gone() -> None:
    """A label the gallery drops is stripped from peers' updates only until a gallery holds it again: enrolled
    anew, a peer's update naming it names its id here too; dropped and enrolled again between two frames, the
    frame says no label went (the files keep naming it: the gallery holds it)."""
    people = People(2, seed=8)
    cam = IdentityResolver("a", D, Counter(), gallery=_gallery(people, ann=0, bob=1))
    assert cam.set_gallery(_gallery(people, ann=0)) == ("bob",)
    assert cam.ingest_remote(ProfileUpdate("b", 4, 50, 1.0, 0.9, people.obs(1).reshape(1, -1), label="bob"))
    assert cam.store.label_of(50) is None  # stripped while the gallery does not hold bob
    assert cam.set_gallery(_gallery(people, ann=0, bob=1)) == ()
    assert step(cam, 2.0, {}).unnamed == ()  # dropped and enrolled again before this frame: not gone
    assert cam.ingest_remote(ProfileUpdate("b", 4, 50, 3.0, 0.9, people.obs(1).reshape(1, -1), label="bob"))
    assert cam.store.label_of(50) == "bob" and cam.store.gid_of_label("bob") == 50


def test_the_labels_withdrawn_from_peers_are_bounded_the_oldest_going_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MAX_WITHDRAWN_LABELS labels dropped are stripped from peers' updates (and said gone on the next frame);
    past it the oldest dropped goes, not the newest, nor one more."""
    monkeypatch.setattr(resolver_module, "MAX_WITHDRAWN_LABELS", 2)
    people = People(1, seed=3)
    names = ["a", "b", "c"]
    cam = IdentityResolver("a", D, Counter(), gallery=_gallery(people, a=0, b=0, c=0, d=0))
    for k, name in enumerate(names):  # dropped one at a time, oldest first
        kept = {n: 0 for n in names[k + 1 :]}
        assert cam.set_gallery(_gallery(people, d=0, **kept)) == (name,)
    assert step(cam, 0.0, {}).unnamed == ("b", "c")
    for gid, name in enumerate(names, start=60):
        update = ProfileUpdate("b", gid, gid, 1.0, 0.9, people.obs(0).reshape(1, -1), label=name)
        assert cam.ingest_remote(update)
    assert [cam.store.label_of(gid) for gid in (60, 61, 62)] == ["a", None, None]


def test_a_label_dropped_restarts_the_wins_a_track_had_counted_towards_it() -> None:
    """Track 1, named jane, looks like ann (not enrolled with a fleet id yet) on one decision: one win of
    hysteresis_count towards ann. ann dropped and enrolled again before the next frame, that win is gone: the
    track keeps jane for hysteresis_count decisions more, then takes ann."""
    axes = np.eye(D, dtype=np.float32)
    jane_only = Gallery(D, threshold=0.5)
    jane_only.add("jane", axes[0])
    gallery = Gallery(D, threshold=0.5)
    gallery.add("jane", axes[0])
    gallery.add("ann", axes[1])
    cam = IdentityResolver("a", D, Counter(), gallery=gallery)
    assert IdentityConfig().hysteresis_count == 2
    named: list[str | None] = []
    for k, (jane, ann) in enumerate([(0.9, 0.3)] * 4 + [(0.25, 0.96)] * 3):
        if k == 5:  # after ann's first win
            assert cam.set_gallery(jane_only) == ("ann",) and cam.set_gallery(gallery) == ()
        look = jane * axes[0] + ann * axes[1] + np.sqrt(1 - jane**2 - ann**2) * axes[2 + k]
        named.append(step(cam, float(k), {1: look}).assignments[0].label)
    assert named[1:] == ["jane", "jane", "jane", "jane", "jane", "ann"]


def test_a_track_unnamed_is_announced_to_the_fleet_on_the_next_frame_whatever_else_is_due() -> None:
    """The fleet hears at once that a track lost its name: on a frame where nothing else of it is due (just
    published), its update goes out because the name went."""
    people = People(1, seed=6)
    cam = IdentityResolver("a", D, Counter(), gallery=_gallery(people, jane=0))
    observe(cam, people, {1: 0}, 0.0, 6)
    assert [u for u in step(cam, 5.1, {1: people.obs(0)}).updates if u.track_id == 1] == []  # nothing due
    assert cam.set_gallery(Gallery(D)) == ("jane",)
    told = [u for u in step(cam, 5.2, {1: people.obs(0)}).updates if u.track_id == 1]
    assert len(told) == 1 and told[0].label is None


def test_a_track_named_by_the_fleet_keeps_its_source_when_the_name_is_dropped() -> None:
    """Only a track named by this camera's gallery becomes the fleet's (its id held unnamed): a track on an id
    of its own that a peer named jane loses the name when this camera's gallery drops jane, its source as it
    was."""
    people = People(2, seed=11)
    cam = IdentityResolver("a", D, Counter(), gallery=_gallery(people, jane=1))  # jane's rows: person 1
    _, seen = observe(cam, people, {1: 0}, 0.0, 6)
    mine = cam.assignment(1)
    assert mine is not None and (mine.label, mine.source) == (None, "new")
    assert cam.ingest_remote(
        ProfileUpdate("b", 3, seen[1], 6.0, 0.9, people.obs(0).reshape(1, -1), label="jane")  # type: ignore[arg-type]
    )
    named = step(cam, 6.5, {1: people.obs(0)}).assignments[0]
    assert (named.global_id, named.label, named.source) == (seen[1], "jane", "new")
    assert cam.set_gallery(_gallery(people, ann=1)) == ("jane",)
    out = step(cam, 7.0, {1: people.obs(0)}).assignments[0]
    assert (out.global_id, out.label, out.source) == (seen[1], None, "new")


def test_a_live_track_without_a_name_takes_one_the_gallery_gives_its_person_later() -> None:
    """bob is enrolled while his track runs unnamed (enroll --append), or unenrolled and enrolled again: the
    gallery names his look, but its proposal, a name with no fleet id yet, adopted the track's own id, which
    counted as holding it, so the track stayed unnamed to its end (only a new track of his was named). It takes
    the name, after hysteresis_count decisions as any change, keeping its global id."""
    people = People(2, seed=10)
    cfg = IdentityConfig()
    cam = IdentityResolver("a", D, Counter(), cfg, gallery=_gallery(people, ann=0))
    _, seen = observe(cam, people, {1: 1}, 0.0, 6)
    assert cam.assignment(1).label is None  # type: ignore[union-attr]
    for t0 in (6.0, 20.0):
        cam.set_gallery(_gallery(people, ann=0, bob=1))
        labels = [step(cam, t0 + k, {1: people.obs(1)}).assignments[0] for k in range(6)]
        assert [a.label for a in labels[: cfg.hysteresis_count - 1]] == [None] * (cfg.hysteresis_count - 1)
        assert all((a.label, a.source, a.global_id) == ("bob", "gallery", seen[1]) for a in labels[-3:])
        assert cam.store.gid_of_label("bob") == seen[1]
        cam.set_gallery(_gallery(people, ann=0))  # and out again: unnamed, then enrolled again
        assert step(cam, t0 + 6, {1: people.obs(1)}).assignments[0].label is None


def test_a_track_named_while_its_look_stays_the_same_binds_the_name_so_no_other_track_takes_it() -> None:
    """bob's track is named on a decision whose look changed none of its exemplars (the same view again): the
    fleet store took the track again only when its id or exemplars changed, so bob stayed bound to no id here, and
    a second track of bob's look on the same frames (a tracker split) was named bob too, under a new id: one
    name on two tracks of one frame (found by a fuzz of the fleet with galleries). The store takes the name with
    the decision."""
    people = People(2, seed=10)
    cfg = IdentityConfig(exemplars_per_track=1, min_observations=1, switch_similarity=0)
    cam = IdentityResolver("a", D, Counter(), cfg, gallery=_gallery(people, ann=0))
    bob = people.centres[1].copy()  # one view, again and again: the exemplar never changes
    seen = [ids(step(cam, float(k), {1: bob})) for k in range(4)]
    gid = seen[-1][1]
    assert gid is not None and cam.assignment(1).label is None  # type: ignore[union-attr]
    cam.set_gallery(_gallery(people, ann=0, bob=1))
    for k in range(cfg.hysteresis_count):
        step(cam, 4.0 + k, {1: bob})
    assert cam.assignment(1).label == "bob" and cam.store.gid_of_label("bob") == gid  # type: ignore[union-attr]
    for k in range(4):  # bob's track not embedded on these frames: it keeps its identity, undecided
        out = step(cam, 10.0 + k, {1: None, 2: people.obs(1)})
        assert [a.label for a in out.assignments].count("bob") == 1, out.assignments
    assert ids(out)[1] == gid and ids(out)[2] != gid


def test_a_gallery_of_another_width_is_refused_and_the_held_one_kept() -> None:
    people = People(1, seed=9)
    gallery = _gallery(people, ann=0)
    cam = IdentityResolver("a", D, Counter(), gallery=gallery)
    with pytest.raises(ConfigError, match="8-d embeddings, not 32-d"):
        cam.set_gallery(Gallery(8))
    assert cam.gallery is gallery


# ----------------------------------------------------------------------------- expiry, caps, forget


def _remote(camera: str, track: int, gid: int, t: float, vec: F32, ended: bool = False) -> ProfileUpdate:
    return ProfileUpdate(camera, track, gid, t, 0.9, vec.reshape(1, -1), ended=ended)


def frames(res: IdentityResolver, t0: float, t1: float, ahead: float | None = None) -> None:
    """Empty frames, one a second, from ``t0`` to ``t1`` (both included): time the camera runs (``ahead`` as
    for ``step``)."""
    for t in np.arange(t0, t1 + 1e-9, 1.0):
        step(res, float(t), {}, ahead=ahead)


def test_identities_expire_after_the_retention_time() -> None:
    people = People(3)
    cam = IdentityResolver("a", D, Counter(), IdentityConfig(retention_s=100.0))
    for p in range(3):
        assert cam.ingest_remote(_remote("r", p, 50 + p, float(p), people.obs(p), ended=True))
    frames(cam, 0.0, 100.0)
    assert cam.stats().identities == 3
    step(cam, 101.5, {})  # the first two are now older than 100 s
    s = cam.stats()
    assert s.identities == 1 and s.expired_identities == 2 and s.exemplar_rows == 1
    assert not cam.ingest_remote(_remote("r", 9, 60, 1.0, people.obs(0)))  # too old to take
    assert cam.stats().remote_rejected == {"stale": 1}


def test_retention_holds_exactly_retention_s_and_not_a_moment_more() -> None:
    """An ended track heard of exactly retention_s ago is kept, and a peer's update stamped exactly then is taken;
    a millisecond later both are too old. Test-only: the bounds of FleetStore.expire and the stale check agree."""
    people = People(1)
    cam = IdentityResolver("a", D, Counter(), IdentityConfig(retention_s=100.0))
    assert cam.ingest_remote(_remote("r", 1, 50, 0.0, people.obs(0), ended=True))
    step(cam, 100.0, {})
    assert cam.stats().identities == 1
    assert cam.ingest_remote(_remote("r", 2, 51, 0.0, people.obs(0), ended=True))
    step(cam, 100.001, {})
    s = cam.stats()
    assert s.identities == 0 and s.expired_identities == 2
    assert not cam.ingest_remote(_remote("r", 3, 52, 0.0, people.obs(0), ended=True))
    assert cam.stats().remote_rejected == {"stale": 1}


def test_identities_heard_of_out_of_order_expire_on_time() -> None:
    """News comes out of order (an ended track's update carries its last sighting, cameras' messages cross):
    one heard of after fresher news was kept until that news expired too, past retention_s."""
    people = People(3)
    cam = IdentityResolver("a", D, Counter(), IdentityConfig(retention_s=100.0))
    step(cam, 0.0, {})
    assert cam.ingest_remote(_remote("r", 1, 50, 0.0, people.obs(0), ended=True))
    assert cam.ingest_remote(_remote("r", 2, 51, 80.0, people.obs(1), ended=True))
    assert cam.ingest_remote(_remote("s", 3, 52, 10.0, people.obs(2), ended=True))  # arrives late
    frames(cam, 1.0, 110.0)
    step(cam, 110.5, {})
    assert sorted(cam.store.identities) == [51]
    local = IdentityResolver("b", D, Counter(), IdentityConfig(retention_s=100.0, track_timeout_s=30.0))
    observe(local, people, {1: 0}, 0.0, 5)  # last seen at t=4, ended by the timeout at t=35
    local.ingest_remote(_remote("r", 2, 51, 20.0, people.obs(1), ended=True))
    frames(local, 5.0, 104.0)  # the timeout runs
    assert local.stats().live_tracks == 0
    step(local, 104.5, {})
    assert sorted(local.store.identities) == [51]


@pytest.mark.parametrize("forward", [100.0, 5000.0])
def test_a_wall_clock_stepped_forward_expires_no_identity(forward: float) -> None:
    """The wall clock of a live camera steps forward by ``forward`` seconds, retention_s (100 s) or more, between
    two frames a second apart: an NTP step, not that long without people. Every stored identity (this camera's
    ended track, a peer's) expired on the first frame after it, and both people came back under new ids. The
    frames' monotonic readings tell the step from time passing: they keep their ids, and expire once retention_s
    of real time has passed since their last sighting."""
    people, alloc = People(2), Counter()
    cfg = IdentityConfig(retention_s=100.0)
    cam, peer = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    _, first = observe(cam, people, {1: 0}, 0.0, 6, ahead=0.0)
    end_all(cam, [1], 6.0)
    bus, theirs = observe(peer, people, {4: 1}, 0.0, 6)
    relay(bus + end_all(peer, [4], 6.0), cam)
    frames(cam, 6.0, 20.0, ahead=0.0)
    ahead = forward - 1.0  # the next frame came a second after the last
    _, after = observe(cam, people, {2: 0, 3: 1}, 20.0 + forward, 5, ahead=ahead)
    assert first == {1: 1} and theirs == {4: 2}
    assert after == {2: 1, 3: 2} and alloc.calls == 2 and cam.stats().expired_identities == 0
    end_all(cam, [2, 3], 25.0 + forward)
    frames(cam, 25.0 + forward, 124.0 + forward, ahead)  # the last sighting was 100 s of real time before
    assert cam.stats().identities == 2
    frames(cam, 125.0 + forward, 125.0 + forward, ahead)
    assert cam.stats().identities == 0 and cam.stats().expired_identities == 2


@pytest.mark.parametrize("live", [True, False])
def test_a_stream_stalled_past_the_retention_time_expires_the_identities_seen_before(live: bool) -> None:
    """The camera's stream stalls for 8 hours (camera offline, the process running), retention_s being 100 s.
    Retention counted the frame clock, on which the stall was max_frame_gap_s (2 s): the people seen before it
    were kept (and matched, here and at the peers) hours past the time operators promise they expire. Real time
    counts: a live camera's monotonic readings ran on with its wall clock (no step), and a replay's frame times
    are real time; both expire them on the first frame after the stall."""
    people, alloc = People(2), Counter()
    cfg = IdentityConfig(retention_s=100.0)
    ahead = 0.0 if live else None
    cam, peer = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    observe(cam, people, {1: 0}, 0.0, 6, ahead=ahead)
    end_all(cam, [1], 6.0)
    bus, _ = observe(peer, people, {4: 1}, 0.0, 6)
    relay(bus + end_all(peer, [4], 6.0), cam)
    frames(cam, 6.0, 20.0, ahead)
    assert cam.stats().identities == 2
    frames(cam, 20.0 + 8 * 3600, 20.0 + 8 * 3600, ahead)
    s = cam.stats()
    assert s.identities == 0 and s.expired_identities == 2 and s.exemplar_rows == 0
    _, back = observe(cam, people, {2: 0}, 21.0 + 8 * 3600, 5, ahead=ahead)
    assert back == {2: 3}  # a new id: nothing of the person was kept


def test_a_wall_clock_stepped_back_keeps_no_identity_past_the_retention_time() -> None:
    """The wall clock of a live camera steps back by 1000 s, retention_s (100 s) being less: the resolver's clock
    stands until the wall clock has caught up. Real time goes on meanwhile: one seen before the step expires
    retention_s after its last sighting, and one seen during the stand is kept that long, not less."""
    people, alloc = People(2), Counter()
    cam = IdentityResolver("a", D, alloc, IdentityConfig(retention_s=100.0))
    _, before = observe(cam, people, {1: 0}, 0.0, 6, ahead=0.0)  # last seen at 5
    end_all(cam, [1], 6.0)
    frames(cam, 6.0, 20.0, ahead=0.0)
    back = -1000.0  # the frame after 20 s of real time is stamped 21 - 1000
    frames(cam, 21.0 + back, 29.0 + back, back)
    _, during = observe(cam, people, {2: 1}, 30.0 + back, 5, ahead=back)  # last seen at 34 of real time
    end_all(cam, [2], 35.0 + back)
    assert before == {1: 1} and during == {2: 2}
    frames(cam, 35.0 + back, 105.0 + back, back)
    assert sorted(cam.store.identities) == [1, 2]
    frames(cam, 106.0 + back, 134.0 + back, back)
    assert sorted(cam.store.identities) == [2]
    frames(cam, 135.0 + back, 135.0 + back, back)
    assert not cam.store.identities and cam.stats().expired_identities == 2


def test_a_live_stream_down_past_the_retention_time_expires_without_waiting_for_a_frame() -> None:
    """A live camera's stream goes down for good (its worker waits on it, retrying, as long as the process runs),
    retention_s being 100 s. Expiry ran only when a frame was resolved, so the people seen before (this camera's
    ended track, a peer's) were kept with their exemplars for as long as the process ran. Between frames the
    worker hands the resolver a monotonic reading (``expire_idle``): they expire retention_s of real time after
    their last sighting, and the track the tracker keeps through the stall is not ended (it keeps its id when
    frames come back)."""
    people, alloc = People(3), Counter()
    cfg = IdentityConfig(retention_s=100.0)
    cam, peer = IdentityResolver("a", D, alloc, cfg), IdentityResolver("b", D, alloc, cfg)
    _, first = observe(cam, people, {1: 0, 7: 2}, 0.0, 6, ahead=0.0)  # last seen at 5
    end_all(cam, [1], 6.0)
    bus, _ = observe(peer, people, {4: 1}, 0.0, 6)
    relay(bus + end_all(peer, [4], 6.0), cam)
    frames(cam, 6.0, 20.0, ahead=0.0)  # the last frame: stamped 20 with its reading 20; then none
    allocated = alloc.calls
    cam.expire_idle(104.0)
    assert cam.stats().identities == 3
    cam.expire_idle(106.0)
    s = cam.stats()
    assert s.identities == 1 and s.expired_identities == 2 and s.live_tracks == 1
    assert s.exemplar_rows == cam.store.bank.count(("a", 7))  # the live track's alone
    later = 20.0 + 8 * 3600  # the stream is back after 8 hours
    back = step(cam, later, {7: people.obs(2)}, ahead=0.0)
    assert ids(back) == {7: first[7]} and alloc.calls == allocated


def test_peers_heard_of_while_the_stream_is_down_are_held_for_the_retention_time_only() -> None:
    """While this live camera's stream is down its peers go on: their updates arrive, and are held (a track
    that goes on being seen) and dropped (one that ended, or went silent) retention_s of real time after they
    were last heard of, by the monotonic readings between frames, as they would be between frames."""
    people = People(3)
    cam = IdentityResolver("a", D, Counter(), IdentityConfig(retention_s=100.0, max_identities=50))
    frames(cam, 0.0, 10.0, ahead=0.0)  # the last frame: stamped 10 with its reading 10
    for t in range(11, 400):
        cam.expire_idle(float(t))
        if t < 300:  # peer b's track 1 is seen all along, until it ends at 299
            assert cam.ingest_remote(_remote("b", 1, 20, float(t), people.obs(0), ended=t == 299))
        if t % 5 == 0:  # peer c's tracks, one every 5 s, each seen once (heard of no more)
            assert cam.ingest_remote(_remote("c", t, 100 + t, float(t), people.obs(1)))
        stored = cam.store.contributions.values()
        assert all(c.heard >= t - 100.0 for c in stored)
        assert len(cam.store.identities) <= 22  # c's of the last 100 s (21), b's
    cam.expire_idle(400.0)
    assert sorted(cam.store.identities) == [100 + t for t in range(300, 400, 5)]
    cam.expire_idle(500.0)
    assert not cam.store.identities and cam.stats().exemplar_rows == 0


def test_a_peers_update_between_frames_is_judged_at_the_time_it_arrives() -> None:
    """Regression: while a live camera's stream was down, its peers' updates were judged at its last frame's
    time: a peer's claim that had lapsed meanwhile still counted as live, so a full exemplar store kept its rows
    and took none of a new update's, and an update older than retention_s by the time it came was taken (held
    until the next idle expiry). Given a monotonic reading as it arrives, an update is judged at the last
    frame's time plus the real time since (as ``expire_idle`` counts it)."""
    people = People(3)
    cfg = IdentityConfig(retention_s=100.0, claim_ttl_s=10.0, max_exemplar_rows=4)
    cam = IdentityResolver("a", D, Counter(), cfg)
    frames(cam, 0.0, 10.0, ahead=0.0)  # the last frame: stamped 10 with its reading 10; then none
    rows = np.stack([people.obs(0) for _ in range(4)])
    assert cam.ingest_remote(ProfileUpdate("b", 1, 20, 10.0, 0.9, rows), monotonic=11.0)
    later = ProfileUpdate("c", 2, 30, 59.0, 0.9, np.stack([people.obs(1) for _ in range(4)]))
    assert cam.ingest_remote(later, monotonic=60.0)  # b's claim lapsed at 20: its rows make room
    assert cam.store.bank.count(("c", 2)) == 4 and cam.store.bank.count(("b", 1)) == 0
    old = ProfileUpdate("d", 3, 40, 90.0, 0.9, people.obs(2).reshape(1, -1))
    assert not cam.ingest_remote(old, monotonic=200.0)  # 110 s old as it comes
    assert cam.stats().remote_rejected == {"stale": 1}


def test_a_replay_expires_nothing_between_frames() -> None:
    """A replay's frames carry no monotonic readings (its frame times are real time): nothing tells how long it
    has been between two of them, so ``expire_idle`` leaves it be, whatever reading it is given."""
    people = People(2)
    cam = IdentityResolver("a", D, Counter(), IdentityConfig(retention_s=100.0))
    observe(cam, people, {1: 0}, 0.0, 6)
    end_all(cam, [1], 6.0)
    frames(cam, 6.0, 20.0)
    cam.expire_idle(1e9)
    assert cam.stats().identities == 1 and cam.stats().expired_identities == 0
    fresh = IdentityResolver("b", D, Counter(), IdentityConfig(retention_s=100.0))
    fresh.ingest_remote(_remote("c", 1, 5, 0.0, people.obs(0), ended=True))
    fresh.expire_idle(1e9)  # no frame yet
    assert fresh.stats().identities == 1


def test_caps_hold_with_thousands_of_tracks() -> None:
    rng = np.random.default_rng(0)
    cfg = IdentityConfig(
        max_identities=100, max_exemplar_rows=400, max_live_tracks=50, max_tracks_per_identity=2
    )
    alloc = Counter()
    cam = IdentityResolver("a", D, alloc, cfg)

    def vecs(n: int) -> F32:
        v = rng.standard_normal((n, D)).astype(np.float32)
        out: F32 = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    for i in range(3000):  # remote tracks of 50 people, three exemplars each
        cam.ingest_remote(ProfileUpdate("r", i, 10_000 + i % 50, i / 100, 0.9, vecs(3), ended=i % 3 > 0))
        assert cam.stats().contributions <= cfg.max_identities * cfg.max_tracks_per_identity
    for k in range(300):  # 1000 local tracks, ten at a time, each visible for three frames
        tracks = [Track("a", 10 * (k // 3) + j, box(j), 0.9, j) for j in range(10)]
        # the first half never ends its tracks (the live-track cap ends them), the second half does
        gone = [10 * (k // 3 - 1) + j for j in range(10)] if k % 3 == 0 and k >= 150 else []
        cam.update(30.0 + k, tracks, vecs(10), FRAME, ended=gone)
        s = cam.stats()
        assert s.identities <= cfg.max_identities + cfg.max_live_tracks
        assert s.exemplar_rows <= cfg.max_exemplar_rows
        assert s.live_tracks <= cfg.max_live_tracks
        assert s.contributions <= s.identities * cfg.max_tracks_per_identity + cfg.max_live_tracks
    assert len(cam.store.aliases) <= cfg.max_identities
    assert s.evicted_identities > 0 and s.dropped_contributions > 0 and alloc.calls == 1000


def test_a_bridge_thread_ingesting_while_the_camera_resolves_breaks_nothing() -> None:
    """The bridge's thread calls ingest_remote while the camera loop calls update (the resolver's one lock):
    2 s of both, with the interpreter switching threads as often as it can, end with no error and the caps
    holding."""
    rng = np.random.default_rng(2)
    cfg = IdentityConfig(max_identities=50, max_tracks_per_identity=2, max_exemplar_rows=200)
    cam = IdentityResolver("a", D, Counter(), cfg)
    looks = rng.standard_normal((64, D)).astype(np.float32)
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    errors: list[BaseException] = []
    stop = threading.Event()

    def bridge() -> None:
        i = 0
        try:
            while not stop.is_set():
                row = looks[i % 64 : i % 64 + 1]
                cam.ingest_remote(ProfileUpdate("r", i, 10**6 + i % 80, 0.01 * i, 0.9, row, ended=i % 2 == 0))
                i += 1
        except BaseException as e:  # whatever it is, the test reports it
            errors.append(e)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=bridge)
    thread.start()
    try:
        end, k = time.monotonic() + 2.0, 0
        while time.monotonic() < end and not errors:
            tracks = [Track("a", 10 * (k // 5) + j, box(j), 0.9, j) for j in range(4)]
            cam.update(0.01 * k, tracks, looks[rng.integers(64, size=4)], FRAME)
            k += 1
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    assert not errors, errors
    s = cam.stats()
    assert s.remote_accepted > 100 and s.exemplar_rows <= cfg.max_exemplar_rows
    assert s.identities <= cfg.max_identities + cfg.max_live_tracks


def test_forget_erases_an_identity_and_keeps_it_erased() -> None:
    people, alloc = People(2), Counter()
    a, b = IdentityResolver("a", D, alloc), IdentityResolver("b", D, alloc)
    bus, seen = observe(a, people, {1: 0, 2: 1}, 0.0, 6)
    relay(bus, b)
    gid = seen[1]
    assert gid is not None and b.forget(gid) and a.forget(gid)
    assert not b.forget(gid)  # already gone
    assert gid not in b.store and gid not in a.store
    assert a.stats().exemplar_rows == b.stats().exemplar_rows == len(a.store.bank.rows(("a", 2)))
    assert not b.ingest_remote(bus[0]) and b.stats().remote_rejected.get("forgotten") == 1
    assert a.assignment(1) is not None and a.assignment(1).global_id is None  # type: ignore[union-attr]
    _, again = observe(a, people, {1: 0}, 6.0, 6)  # still visible: starts over with a new id
    assert again[1] not in (None, gid) and alloc.calls == 3


def test_forget_erases_that_id_alone_whatever_label_merges_each_camera_saw() -> None:
    """Two cameras named jane at once (ids 3 and 7): c heard both and merged 7 into 3, a heard of 3 only.
    `forget 7` erased 3 on c alone, which then refused id 3 for good while the fleet went on using it (and
    `forget 3` left 7 on a but not on c). Each camera now erases exactly the id it is given."""
    people = People(1)
    empty = np.zeros((0, D), np.float32)
    jane3 = ProfileUpdate("r", 1, 3, 1.0, 0.9, people.obs(0)[None], label="jane")
    jane7 = ProfileUpdate("s", 2, 7, 1.0, 0.9, people.obs(0)[None], label="jane")
    a, c = IdentityResolver("a", D, Counter()), IdentityResolver("c", D, Counter())
    assert a.ingest_remote(jane3) and c.ingest_remote(jane3) and c.ingest_remote(jane7)
    assert c.store.canonical(7) == 3
    assert c.forget(7) and not a.forget(7)  # c knew 7 (as a name of 3), a never heard of it
    assert 3 in a.store and 3 in c.store
    alive3 = ProfileUpdate("r", 1, 3, 2.0, 0.9, empty, label="jane")
    assert a.ingest_remote(alive3) and c.ingest_remote(alive3)
    late7 = ProfileUpdate("s", 2, 7, 2.0, 0.9, empty, label="jane")
    assert not a.ingest_remote(late7) and not c.ingest_remote(late7)
    assert a.forget(3) and c.forget(3)
    assert 3 not in a.store and 3 not in c.store and a.store.gid_of_label("jane") is None
    back = ProfileUpdate("t", 5, 9, 3.0, 0.9, people.obs(0)[None], label="jane")  # jane seen again, a new id
    assert a.ingest_remote(back) and c.ingest_remote(back)
    assert a.store.gid_of_label("jane") == c.store.gid_of_label("jane") == 9


# ------------------------------------------------------------------------------------ bad input


def test_remote_updates_are_validated_and_rejections_counted() -> None:
    people = People(1)
    cam = IdentityResolver("a", D, Counter())
    v = people.obs(0).reshape(1, -1)
    with pytest.raises(DataError, match="L2-normalised"):
        ProfileUpdate("r", 1, 1, 0.0, 0.5, v * 2)
    half = ProfileUpdate("r", 1, 1, 0.0, 0.5, v.astype(np.float16).astype(np.float32))  # float16 transport
    assert np.linalg.norm(half.exemplars, axis=1) == pytest.approx(1.0, abs=1e-6)
    assert not half.exemplars.flags.writeable and half.since == 0.0 and half.key == ("r", 1)
    with pytest.raises(DataError, match="NaN"):
        ProfileUpdate("r", 1, 1, 0.0, 0.5, np.full((1, D), np.nan, np.float32))
    with pytest.raises(DataError, match="quality"):
        ProfileUpdate("r", 1, 1, 0.0, 1.5, v)
    with pytest.raises(DataError, match="global_id"):
        ProfileUpdate("r", 1, -3, 0.0, 0.5, v)
    with pytest.raises(DataError, match="float32"):
        ProfileUpdate("r", 1, 1, 0.0, 0.5, v.astype(np.float64))
    assert not cam.ingest_remote(ProfileUpdate("a", 1, 1, 0.0, 0.5, v))  # our own echo
    assert not cam.ingest_remote(ProfileUpdate("r", 1, 1, 0.0, 0.5, v[:, :8] / np.linalg.norm(v[:, :8])))
    assert cam.ingest_remote(ProfileUpdate("r", 1, 1, 5.0, 0.5, v))
    assert not cam.ingest_remote(ProfileUpdate("r", 1, 1, 4.0, 0.5, v))  # older than what we hold
    assert not cam.ingest_remote("junk")  # type: ignore[arg-type]
    assert cam.stats().remote_rejected == {"own_camera": 1, "dim": 1, "out_of_order": 1, "type": 1}
    kept = IdentityResolver("k", D, Counter(), IdentityConfig(retention_s=100.0))
    step(kept, 200.0, {})
    assert kept.ingest_remote(ProfileUpdate("r", 2, 1, 100.0, 0.5, v))  # exactly retention_s old: kept
    assert not kept.ingest_remote(ProfileUpdate("r", 3, 1, 99.0, 0.5, v))
    assert kept.stats().remote_rejected == {"stale": 1}


def test_frame_input_is_validated() -> None:
    people = People(1)
    cam = IdentityResolver("a", D, Counter())
    t = Track("a", 1, box(0), 0.9, 0)
    with pytest.raises(DataError, match="twice"):
        cam.update(0.0, [t, t], np.zeros((1, D), np.float32), FRAME)
    with pytest.raises(DataError, match=f"\\(N, {D}\\)"):
        cam.update(0.0, [t], np.zeros((1, 5), np.float32), FRAME)
    with pytest.raises(DataError, match="finite"):
        cam.update(float("nan"), [t], None, FRAME)
    with pytest.raises(DataError, match="finite"):
        cam.update(True, [t], None, FRAME)
    with pytest.raises(DataError, match="frame_size"):
        cam.update(0.0, [t], None, (0, 10))
    small = IdentityResolver("a", D, Counter(), IdentityConfig(max_live_tracks=1))
    with pytest.raises(DataError, match="max_live_tracks"):
        small.update(0.0, [t, Track("a", 2, box(1), 0.9, -1)], None, FRAME)
    assert len(small.update(0.0, [t], None, FRAME).assignments) == 1  # max_live_tracks itself is allowed
    bad = np.stack([people.obs(0)])
    bad[0, 3] = np.nan  # a broken embedding row counts as "not embedded"
    out = cam.update(0.0, [t, Track("a", 2, box(1), 0.9, -1)], bad, FRAME)
    assert [a.source for a in out.assignments] == ["pending", "pending"]
    with pytest.raises(ConfigError, match="8-d"):
        IdentityResolver("a", D, Counter(), gallery=Gallery(8))
    alloc = Counter()
    coast, faint = IdentityResolver("c", D, alloc), IdentityResolver("f", D, alloc)
    tracks = [Track("c", 1, box(0), 0.9, 0), Track("c", 2, box(1), 0.9, -1)]  # track 2: no detection
    for k in range(5):
        out = coast.update(float(k), tracks, people.obs(0)[None], FRAME)  # the only row is track 1's
        step(faint, float(k), {3: people.obs(0) * 1e-7})  # a near-zero row: not embedded
    assert alloc.calls == 1 and [a.global_id for a in out.assignments] == [1, None]


def test_allocator_must_return_fresh_ids() -> None:
    people = People(2)
    cam = IdentityResolver("a", D, lambda: 7)
    observe(cam, people, {1: 0}, 0.0, 5)
    with pytest.raises(DataError, match="already in use"):
        observe(cam, people, {2: 1}, 5.0, 5)


def test_the_allocator_may_not_return_an_id_merged_into_another() -> None:
    people = People(1)
    cam = IdentityResolver("a", D, lambda: 2)
    empty = np.zeros((0, D), np.float32)
    cam.ingest_remote(ProfileUpdate("r", 7, 1, 0.0, 0.9, empty, label="jane"))
    cam.ingest_remote(ProfileUpdate("r", 8, 2, 0.0, 0.9, empty, label="jane"))  # 2 is an alias of 1 now
    with pytest.raises(DataError, match="global id 2, which is already in use"):
        observe(cam, people, {1: 0}, 1.0, 3)  # the third look asks for a new id


def test_every_identity_setting_is_described_and_bounded() -> None:
    for name, field in {**IdentityConfig.model_fields, **CameraEdge.model_fields}.items():
        assert field.description, name
        numeric = field.annotation in (int, float, float | None)
        bounded = {type(m).__name__ for m in field.metadata} & {"Ge", "Gt"} and any(
            type(m).__name__ in ("Le", "Lt") for m in field.metadata
        )
        assert not numeric or bounded, f"{name} has no lower and upper bound"


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="new_min_observations"):
        IdentityConfig(min_observations=5, new_min_observations=2)
    with pytest.raises(ValueError, match="max_s"):
        CameraEdge(a="a", b="b", min_s=10, max_s=5)
    with pytest.raises(ValueError, match="two different cameras"):
        CameraEdge(a="a", b="a", min_s=0, max_s=5)
    with pytest.raises(ValueError, match="extra"):
        IdentityConfig(fleet_treshold=0.5)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"max_frame_gap_s \(5\) must be below track_timeout_s \(5\)"):
        IdentityConfig(track_timeout_s=5.0, max_frame_gap_s=5.0)


def test_an_older_config_with_a_short_track_timeout_still_loads() -> None:
    """identity.track_timeout_s of 2 s or less was valid before max_frame_gap_s (2 s by default, below the
    timeout) existed; such a config was refused for a setting it never wrote. It gets half the timeout."""
    assert IdentityConfig(track_timeout_s=1.5).max_frame_gap_s == 0.75
    assert IdentityConfig(track_timeout_s=2).max_frame_gap_s == 1.0
    assert IdentityConfig(track_timeout_s=2.5).max_frame_gap_s == 2.0  # the default fits: kept
    with pytest.raises(ValueError, match=r"max_frame_gap_s \(1\.5\) must be below track_timeout_s \(1\.5\)"):
        IdentityConfig(track_timeout_s=1.5, max_frame_gap_s=1.5)  # set by the user: refused, naming both


@pytest.mark.parametrize(("a", "b"), [("a", "b"), ("b", "a")])
def test_a_pair_of_cameras_joined_twice_is_refused_by_the_config(a: str, b: str) -> None:
    """Edges are undirected: one in each direction joins the pair twice. `config check` said such a file was
    valid, and every camera worker then failed as it started."""
    edges = (CameraEdge(a="a", b="b", min_s=5, max_s=10), CameraEdge(a=a, b=b, min_s=8, max_s=20))
    with pytest.raises(ValueError, match=r"'a' and 'b' are joined twice.*both ways"):
        IdentityConfig(adjacency=edges)


# ---------------------------------------------------------------------------------------- property


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_people=st.integers(2, 5),
    twins=st.booleans(),
    frames=st.integers(5, 30),
    overlap=st.booleans(),
)
def test_no_frame_gives_one_id_to_two_tracks(
    seed: int, n_people: int, twins: bool, frames: int, overlap: bool
) -> None:
    rng = np.random.default_rng(seed)
    people = People(n_people, seed=seed, noise=0.4)
    if twins:  # everyone nearly the same look: the hardest case for the one-to-one guard
        people.centres[:] = people.centres[0] + 0.05 * people.centres
        people.centres /= np.linalg.norm(people.centres, axis=1, keepdims=True)
    alloc = Counter()
    cfg = IdentityConfig(allow_overlapping_views=overlap, min_observations=1, new_min_observations=1)
    cams = [IdentityResolver(name, D, alloc, cfg) for name in ("a", "b")]
    next_tid = itertools.count(1)
    live: list[dict[int, int]] = [{}, {}]  # per camera: track id -> person
    for k in range(frames):
        for c, cam in enumerate(cams):
            _churn(rng, live[c], n_people, next_tid, cam, float(k))
            embedded = {tid: (people.obs(p) if rng.random() < 0.7 else None) for tid, p in live[c].items()}
            out = step(cam, float(k), embedded)
            got = [a.global_id for a in out.assignments if a.global_id is not None]
            assert len(got) == len(set(got)), f"frame {k} camera {cam.camera}: {out.assignments}"
            relay(out.updates, cams[1 - c])


def _churn(
    rng: np.random.Generator,
    live: dict[int, int],
    n_people: int,
    next_tid: Iterable[int],
    cam: IdentityResolver,
    t: float,
) -> None:
    """Random track ends and starts; a person may appear twice (a tracker split) on purpose."""
    for tid in list(live):
        if rng.random() < 0.1:
            del live[tid]
            cam.end_track(tid, t)
    while len(live) < 4 and rng.random() < 0.6:
        live[next(iter(next_tid))] = int(rng.integers(n_people))


# ------------------------------------------------------------------------------------ real embeddings


def _profile_similarity(track: Sequence[F32], identity: Sequence[F32]) -> float:
    return set_similarity(np.stack(track) @ np.stack(identity).T, "top_mean", IdentityConfig().top_exemplars)


@pytest.mark.shared_data
def test_real_people_seen_later_by_a_second_camera_keep_their_ids(
    mobilenet_model: Path, tmp_path: Path
) -> None:
    """Two cameras from PETS09-S2L1 ground truth, embedded with MobileNetV2-ImageNet: camera a sees eight
    people in the first eight of 16 clean crops spread over each one's time in the clip, camera b the same
    people in the last eight (later, elsewhere on the square, other poses).

    The ImageNet embedder, not the resolver, limits this (different people reach cosine 0.8 here): one
    offline Hungarian assignment of b's complete profiles to a's at the fleet threshold (the reference)
    keeps 6 of 8 and mismatches 2. With the default ratio test (fleet_distinct_margin) the resolver makes
    no false merge and splits the unclear people instead; without it, it keeps most people like the
    reference does.
    """
    pets = require_pets09()
    crops = select_crops(pets / "gt" / "gt.txt", identities=8, per_identity=16, min_height=60.0)
    frames = read_video_frames(pets / "vtest.avi", {c.frame for c in crops})
    cpu = RuntimeConfig(providers=("CPUExecutionProvider",), intra_op_threads=1)
    embedder = OnnxEmbedder(EmbedderConfig(model=str(mobilenet_model)), cpu, tmp_path)
    views: dict[int, list[tuple[float, F32]]] = {}  # person -> (box height, embedding), in clip order
    for c in crops:
        emb = embedder.embed(frames[c.frame], np.asarray([c.xyxy], np.float32))[0]
        views.setdefault(c.track_id, []).append((c.xyxy[3] - c.xyxy[1], emb))
    people = sorted(views)

    def replay(
        cam: IdentityResolver, other: IdentityResolver, t0: float, part: slice
    ) -> dict[int, int | None]:
        got: dict[int, int | None] = {}
        for k, t in enumerate(np.arange(t0, t0 + 8)):
            tracks, rows = [], []
            for slot, p in enumerate(people):
                height, emb = views[p][part][k]
                x = 10.0 + 150.0 * slot
                tracks.append(Track(cam.camera, p, (x, 50.0, x + height / 2.5, 50.0 + height), 0.9, slot))
                rows.append(emb)
            out = cam.update(float(t), tracks, np.stack(rows), FRAME)
            relay(out.updates, other)
            got = ids(out)
        relay(end_all(cam, people, t0 + 8), other)
        return got

    sims = np.array(
        [
            [_profile_similarity([e for _, e in views[q][8:]], [e for _, e in views[p][:8]]) for p in people]
            for q in people
        ]
    )
    reference = assign(sims.astype(np.float64), IdentityConfig().fleet_threshold)
    ref_same, ref_wrong = sum(i == j for i, j in reference), sum(i != j for i, j in reference)
    for margin in (IdentityConfig().fleet_distinct_margin, 0.0):
        cfg = IdentityConfig(fleet_distinct_margin=margin)
        alloc = Counter()
        a, b = (IdentityResolver(name, embedder.dim, alloc, cfg) for name in ("a", "b"))
        first = replay(a, b, 0.0, slice(0, 8))
        later = replay(b, a, 100.0, slice(8, 16))
        assert None not in first.values() and len(set(first.values())) == len(people)
        same = sum(later[p] == first[p] for p in people)
        wrong = sum(later[p] in first.values() and later[p] != first[p] for p in people)
        report = (
            f"margin {margin}: same {same}/{len(people)}, wrong {wrong} (reference: {ref_same}, {ref_wrong})"
        )
        if margin > 0:  # the default favours splits over false merges
            assert wrong == 0 and same >= 2, report
        else:  # without the ratio test, most people keep their id, as in the offline reference
            assert same > len(people) // 2, report
            assert same >= ref_same - 1 and wrong <= ref_wrong, report


_CLAIM_ORDER = """
import numpy as np
from daemon.config import IdentityConfig
from daemon.identity.fleet import Contribution, FleetStore
store = FleetStore(4, IdentityConfig(max_tracks_per_identity=100))
row = np.ones((1, 4), dtype=np.float32) / 2
for cam, tid in [("b", 1), ("a", 7), ("lobby", 2), ("gate", 9), ("a", 3), ("yard", 4), ("b", 5), ("c", 6)]:
    store.record(Contribution((cam, tid), 1, 0.0, 1.0, 0.5, None, False, False), row, 1.0)
print(";".join(f"{c.key[0]}/{c.key[1]}" for c in store.claims(1)))
"""


def test_an_identitys_claims_come_in_the_order_its_tracks_joined_whatever_the_hash_seed() -> None:
    # Regression: an identity's tracks were a set of (camera, track id), whose order follows the hash of the
    # camera's name, randomised per process (PYTHONHASHSEED). Where two claims tied (two cameras seeing one
    # person at one frame time: the latest sighting on the site plan), the one met first depended on it, so
    # two lockstep replays of the 2cam-overlap scenario with the detector gave camera b a different id for
    # three frames (global IDF1 52.2 or 52.1) though every input was the same.
    root = Path(__file__).resolve().parents[1]
    orders = set()
    for seed in range(4):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        done = subprocess.run(
            [sys.executable, "-c", _CLAIM_ORDER],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        orders.add(done.stdout.strip())
    assert orders == {"b/1;a/7;lobby/2;gate/9;a/3;yard/4;b/5;c/6"}


def test_tracks_ended_too_faint_for_a_global_id_are_counted() -> None:
    """A camera whose people all look small (30 px tall against quality_full_height_px 128: quality 0.21 under
    new_min_quality 0.25) gave none of its tracks a global id, and nothing said why: the resolver now counts the
    tracks seen long enough that ended without an id, and those of them whose quality alone kept it from one."""
    people = People(4, seed=3)
    cam = IdentityResolver("a", D, Counter())
    for k in range(6):  # tracks 1 and 2 small, 3 tall; 4 seen once (too few observations to count)
        seen = {1: people.obs(0), 2: people.obs(1), 3: people.obs(2)} | ({4: people.obs(3)} if k == 0 else {})
        out = step(cam, float(k), seen, heights={1: 30.0, 2: 30.0, 3: 200.0, 4: 30.0})
    assert ids(out)[1] is None and ids(out)[2] is None and ids(out)[3] is not None
    step(cam, 6.0, {}, ended=[1, 2, 3, 4])
    s = cam.stats()
    assert (s.ended_observed, s.ended_too_faint) == (2, 2), s  # 3 took an id; 4 was seen once
    assert 0.2 < cam.faint_best < 0.25
    cfg = IdentityConfig(
        quality_full_height_px=30.0
    )  # the setting the warning points to: the same tracks get ids
    fitted = IdentityResolver("a", D, Counter(), cfg)
    for k in range(6):
        out = step(fitted, float(k), {1: people.obs(0), 2: people.obs(1)}, heights={1: 30.0, 2: 30.0})
    assert None not in ids(out).values()
    step(fitted, 6.0, {}, ended=[1, 2])
    assert (fitted.stats().ended_observed, fitted.stats().ended_too_faint) == (0, 0)
