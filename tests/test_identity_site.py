"""daemon/identity/site.py and the resolver's use of site positions: calibration, the speed bound, overlapping
views resolved by where people stand, sightings too far apart ruled out, position updates on the wire."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _identity import Counter, relay
from numpy.typing import NDArray
from pydantic import ValidationError

from daemon.bridge import FleetMessage
from daemon.clocks import SharedClock, monotonic_reading
from daemon.config import IdentityConfig, SiteConfig
from daemon.errors import ConfigError, DataError
from daemon.fleet import FleetClock, to_message, to_update
from daemon.fleet_wire import MessageRejected, decode_batch, decode_message, encode_message
from daemon.identity import FrameIdentities, IdentityResolver, ProfileUpdate
from daemon.identity.site import MAX_LEAD_S, SiteMap, closeness, velocity
from daemon.types import Frame, Track

D = 16
F32 = NDArray[np.float32]
FRAME = (640, 480)
KEY = b"k" * 16


def unit(v: NDArray[np.float64]) -> F32:
    out: F32 = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def pair(similarity: float, seed: int = 0) -> tuple[F32, F32]:
    """Two looks at cosine ``similarity``: one person seen by two very different cameras."""
    rng = np.random.default_rng(seed)
    a = unit(rng.standard_normal(D))
    r = rng.standard_normal(D)
    r -= (r @ a) * a
    return a, unit(similarity * a + math.sqrt(1 - similarity**2) * unit(r))


def frame(
    res: IdentityResolver,
    t: float,
    seen: dict[int, tuple[F32, tuple[float, float] | None]],
) -> FrameIdentities:
    """One frame: track id -> (embedding, site position or None)."""
    tracks = [
        Track(res.camera, tid, (100.0 + 90 * i, 100.0, 160.0 + 90 * i, 300.0), 0.9, i)
        for i, tid in enumerate(seen)
    ]
    emb = np.stack([v for v, _ in seen.values()])
    pos = np.array([p if p is not None else (np.nan, np.nan) for _, p in seen.values()], np.float32)
    return res.update(t, tracks, emb, FRAME, positions=pos)


def gid(out: FrameIdentities, tid: int) -> int | None:
    return next(a.global_id for a in out.assignments if a.track_id == tid)


CFG = IdentityConfig(allow_overlapping_views=True, site_radius=1.0, site_speed=2.0)


# ------------------------------------------------------------------------------------------- site map


def test_homography_maps_the_feet_of_boxes() -> None:
    site = SiteMap(SiteConfig(homography=((0.5, 0, 10), (0, 0.5, 20), (0, 0, 1))))
    got = site.feet(np.array([[100, 50, 140, 250], [0, 0, 20, 10]], np.float32))
    np.testing.assert_allclose(got, [[70.0, 145.0], [15.0, 25.0]])


def test_point_pairs_fit_the_homography_they_came_from() -> None:
    h = np.array([[0.02, 0.001, -3.0], [0.0005, 0.05, -10.0], [0.0001, 0.002, 1.0]])
    image = np.array([[50, 400], [600, 420], [580, 200], [80, 210], [320, 300]], np.float64)
    mapped = np.c_[image, np.ones(len(image))] @ h.T
    site_pts = mapped[:, :2] / mapped[:, 2:]
    site = SiteMap(SiteConfig(image_points=tuple(map(tuple, image)), site_points=tuple(map(tuple, site_pts))))
    box = np.array([[300, 100, 340, 300]], np.float32)  # feet at (320, 300)
    np.testing.assert_allclose(site.feet(box)[0], site_pts[4], rtol=1e-4, atol=1e-4)


def test_bad_calibrations_are_named() -> None:
    with pytest.raises(ValidationError, match="at least four image_points"):
        SiteConfig(image_points=((0, 0), (1, 0), (0, 1)), site_points=((0, 0), (1, 0), (0, 1)))
    with pytest.raises(ValidationError, match="not both"):
        SiteConfig(
            homography=((1, 0, 0), (0, 1, 0), (0, 0, 1)),
            image_points=((0, 0),) * 4,
            site_points=((0, 0),) * 4,
        )
    with pytest.raises(ValidationError, match="3 rows"):
        SiteConfig(homography=((1, 0, 0), (0, 1, 0)))
    with pytest.raises(ConfigError, match=r"cameras\.hall\.site: the homography is singular"):
        SiteMap(SiteConfig(homography=((1, 0, 0), (2, 0, 0), (0, 0, 1))), "hall")
    line = ((0, 0), (1, 1), (2, 2), (3, 3))
    with pytest.raises(ConfigError, match=r"no homography fits|do not fit"):
        SiteMap(SiteConfig(image_points=line, site_points=((0, 0), (1, 0), (0, 1), (1, 1))))
    swapped = ((0, 0), (100, 0), (100, 100), (0, 100), (50, 50))
    with pytest.raises(ConfigError, match="do not fit one homography"):
        SiteMap(SiteConfig(image_points=swapped, site_points=((0, 0), (1, 0), (1, 1), (0, 1), (0.9, 0.1))))


def test_closeness_is_the_speed_bound() -> None:
    assert closeness((0, 0), 0.0, (0, 0), 0.0, 1.0, 2.0) == 1.0
    assert closeness((1, 0), 0.0, (0, 0), 0.0, 1.0, 2.0) == pytest.approx(0.0)
    assert closeness((3, 0), 5.0, (0, 0), 4.0, 1.0, 2.0) == pytest.approx(0.0)  # 1 + 2 x 1 s
    assert closeness((4, 0), 5.0, (0, 0), 4.0, 1.0, 2.0) < 0
    assert closeness((0, 0), 0.0, (0, 1.5), 1.0, 1.0, 2.0) == pytest.approx(0.5)


def test_with_a_velocity_the_predicted_spot_fits_best() -> None:
    # b walked along x at 2 units/s; 0.5 s later, the spot it reached fits, one 0.8 to the side fits less
    on_path = closeness((1.0, 0.0), 0.5, (0.0, 0.0), 0.0, 0.5, 4.0, velocity=(2.0, 0.0))
    beside = closeness((1.0, 0.8), 0.5, (0.0, 0.0), 0.0, 0.5, 4.0, velocity=(2.0, 0.0))
    still = closeness((0.0, 0.0), 0.5, (0.0, 0.0), 0.0, 0.5, 4.0, velocity=(2.0, 0.0))
    assert on_path == 1.0 and 0 < still < beside < on_path  # standing still was possible, not expected
    assert (
        closeness((30.0, 0.0), 0.5, (0.0, 0.0), 0.0, 0.5, 4.0, velocity=(60.0, 0.0)) < 0
    )  # bound still holds
    far = closeness((2 * MAX_LEAD_S + 0.5, 0.0), 10.0, (0.0, 0.0), 0.0, 0.5, 4.0, velocity=(1.0, 0.0))
    assert far == pytest.approx(1.0 - 2.5 / (0.5 + 2.0 * 10.0))  # carried on to x = 2 (MAX_LEAD_S) only


def test_velocity_over_the_trail() -> None:
    assert velocity([(0.0, 0.0, 0.0)]) is None
    assert velocity([(0.0, 0.0, 0.0), (0.1, 1.0, 0.0)]) is None  # too short a span
    assert velocity([(0.0, 1.0, 2.0), (0.25, 5.0, 2.0), (0.5, 2.0, 1.0)]) == (2.0, -2.0)


def test_non_finite_calibrations_are_named() -> None:
    for bad in (math.inf, math.nan):  # the config takes them (YAML .inf, .nan); the site map must not
        with pytest.raises(
            ConfigError, match=r"cameras\.hall\.site: the homography is singular or not finite"
        ):
            SiteMap(SiteConfig(homography=((1, 0, 0), (0, bad, 0), (0, 0, 1))), "hall")
    square = ((0, 0), (100, 0), (100, 100), (0, 100))
    with pytest.raises(ConfigError, match="image_points and site_points must be finite numbers"):
        SiteMap(SiteConfig(image_points=square, site_points=((0, 0), (1, 0), (1, 1), (math.nan, 1))))


def test_a_box_standing_on_the_horizon_has_no_site_position() -> None:
    """w = y - 100 (+1e-10): the image row y = 100 maps to infinity, so feet on it have no position (NaN)."""
    site = SiteMap(SiteConfig(homography=((1, 0, 0), (0, 1, 0), (0, 1, -100 + 1e-10))))
    got = site.feet(np.array([[0, 0, 20, 100], [0, 0, 20, 300]], np.float32))
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()


def test_closeness_carries_a_later_sighting_back_and_holds_at_the_edge_of_reach() -> None:
    # a seen before b: b's expected spot is carried back along its velocity, for at most MAX_LEAD_S
    assert closeness((-0.5, 0.0), 0.0, (0.0, 0.0), 0.5, 0.5, 4.0, velocity=(1.0, 0.0)) == 1.0
    assert closeness((-MAX_LEAD_S, 0.0), 0.0, (0.0, 0.0), 10.0, 0.5, 4.0, velocity=(1.0, 0.0)) == 1.0
    # exactly at the reach (0.5 + 4 x 0.5 = 2.5): not beyond it, so the predicted spot still decides
    assert closeness((2.5, 0.0), 0.5, (0.0, 0.0), 0.0, 0.5, 4.0, velocity=(5.0, 0.0)) == 1.0


def test_velocity_over_exactly_the_shortest_span() -> None:
    assert velocity([(0.0, 0.0, 0.0), (0.5, 1.0, 0.0)], min_span_s=0.5) == (2.0, 0.0)
    assert velocity([(0.0, 0.0, 0.0), (0.3, 0.6, 0.0)]) == pytest.approx((2.0, 0.0))  # the default 0.3 s


# ------------------------------------------------------------------------------------------- resolver


def test_overlapping_views_join_a_person_by_where_they_stand() -> None:
    look_a, look_b = pair(0.7)  # too unlike for appearance alone (fleet_threshold 0.8)
    other = unit(np.random.default_rng(9).standard_normal(D))
    for with_site in (True, False):
        ids = Counter()
        a, b = IdentityResolver("a", D, ids, CFG), IdentityResolver("b", D, ids, CFG)
        for k in range(8):
            t = 0.2 * k
            where = (5.0 + 0.2 * k, 3.0) if with_site else None
            out_a = frame(a, t, {1: (look_a, where), 2: (other, (20.0, 3.0) if with_site else None)})
            relay(out_a.updates, b)
            out_b = frame(b, t + 0.01, {7: (look_b, where)})
            relay(out_b.updates, a)
        assert gid(out_a, 1) is not None
        assert (gid(out_b, 7) == gid(out_a, 1)) is with_site


def around(base: F32, similarity: float, seed: int) -> F32:
    """A look at cosine ``similarity`` from ``base``."""
    r = np.random.default_rng(seed).standard_normal(D)
    r -= (r @ base) * base
    return unit(similarity * base + math.sqrt(1 - similarity**2) * unit(r))


def test_the_person_standing_there_wins_over_a_look_alike() -> None:
    seen_b = unit(np.random.default_rng(1).standard_normal(D))  # how b sees person 2
    person2 = around(seen_b, 0.72, seed=2)  # how a sees person 2
    person1 = around(seen_b, 0.76, seed=3)  # someone else, who looks more like b's view of person 2
    ids = Counter()
    a, b = IdentityResolver("a", D, ids, CFG), IdentityResolver("b", D, ids, CFG)
    for k in range(12):
        t = 0.5 * k
        out_a = frame(a, t, {1: (person1, (0.0, 0.0)), 2: (person2, (8.0, 0.0))})
        relay(out_a.updates, b)
        if k >= 6:
            out_b = frame(b, t + 0.01, {5: (seen_b, (8.2, 0.1))})
    assert gid(out_a, 1) != gid(out_a, 2)
    assert gid(out_b, 5) == gid(out_a, 2)


def standing_on_a(seed: int) -> tuple[F32, Counter, IdentityResolver, IdentityResolver]:
    """A person camera a sees standing at the origin for 3 s (t 0 to 2.5), relayed to camera b."""
    look = unit(np.random.default_rng(seed).standard_normal(D))
    ids = Counter()
    a, b = IdentityResolver("a", D, ids, CFG), IdentityResolver("b", D, ids, CFG)
    for k in range(6):
        relay(frame(a, 0.5 * k, {1: (look, (0.0, 0.0))}).updates, b)
    return look, ids, a, b


def test_a_sighting_too_far_away_rules_the_identity_out() -> None:
    look, ids, a, b = standing_on_a(3)
    # the same look 40 units away 0.5 s after a's last sighting: nobody walks that fast (1 + 2 x 0.5 = 2)
    out = frame(b, 3.0, {4: (look, (40.0, 0.0))})
    for k in range(1, 6):
        out = frame(b, 3.0 + 0.1 * k, {4: (look, (40.0, 0.0))})
    assert gid(out, 4) not in (None, 1)
    # without positions the same look takes a's id
    c = IdentityResolver("c", D, ids, CFG)
    for k in range(6):
        relay(frame(a, 3.0 + 0.5 * k, {1: (look, (0.0, 0.0))}).updates, c)
    for k in range(6):
        out = frame(c, 6.0 + 0.1 * k, {3: (look, None)})
    assert gid(out, 3) == 1


def test_positions_past_the_horizon_say_nothing() -> None:
    look, _, a, b = standing_on_a(4)
    relay([a.end_track(1, 3.0)], b)
    later = CFG.site_horizon_s + 10.0
    for k in range(6):
        out = frame(b, later + 0.1 * k, {4: (look, (500.0, 0.0))})  # far, but long after: the look decides
    assert gid(out, 4) == 1


def test_a_sighting_exactly_site_horizon_s_before_still_rules_out() -> None:
    look, _, a, b = standing_on_a(4)
    relay([a.end_track(1, 3.0)], b)  # last seen at 2.5
    frame(b, 5.5, {4: (look, (500.0, 0.0))})
    out = frame(b, 6.5, {4: (look, (500.0, 0.0))})  # decided exactly site_horizon_s (4 s) later: too far
    assert gid(out, 4) != 1


def test_a_track_off_the_plan_is_not_taken_to_stand_where_it_was_last_placed() -> None:
    """Track 1 stands at the origin until 1.5 s, then is seen off the plan until 5 s: its last known place is
    the origin at 1.5 s. Track 2 with its look 5 units off at 5.5 s is within reach of that (1 + 2 x 4)."""
    look = unit(np.random.default_rng(10).standard_normal(D))
    cam = IdentityResolver("a", D, Counter(), CFG)
    for k in range(4):
        frame(cam, 0.5 * k, {1: (look, (0.0, 0.0))})
    for k in range(4, 11):
        frame(cam, 0.5 * k, {1: (look, None)})
    for k in range(11, 14):
        out = frame(cam, 0.5 * k, {2: (look, (5.0, 0.0))})
    assert gid(out, 2) == 1


def test_co_visible_tracks_of_one_camera_are_not_evidence_for_each_other() -> None:
    look, alike = pair(0.7, seed=5)
    ids = Counter()
    cam = IdentityResolver("a", D, ids, CFG)
    for k in range(10):
        out = frame(cam, 0.2 * k, {1: (look, (0.0, 0.0)), 2: (alike, (0.3, 0.0))})  # side by side
        got = [gid(out, 1), gid(out, 2)]
        assert got[0] is None or got[0] != got[1]
    assert None not in (gid(out, 1), gid(out, 2)) and gid(out, 1) != gid(out, 2)


def test_a_moving_track_publishes_its_position_at_the_interval() -> None:
    look = unit(np.random.default_rng(6).standard_normal(D))
    cfg = IdentityConfig(
        position_interval_s=0.5, publish_interval_s=100.0, claim_ttl_s=1000.0, decision_interval_s=0.1
    )
    cam = IdentityResolver("a", D, Counter(), cfg)
    sent: list[ProfileUpdate] = []
    for k in range(31):  # 3 s at 10 fps, walking along x, a look each frame (its profile full after 0.8 s)
        sent += frame(cam, 0.1 * k, {1: (look, (0.1 * k, 2.0))}).updates
    moves = [u for u in sent if len(u.exemplars) == 0]
    assert sent[0].position is not None
    assert 4 <= len(moves) <= 6  # every 0.5 s once decided
    for u in sent:
        assert u.position is not None and u.position[0] == pytest.approx(u.timestamp, abs=1e-6)
    assert moves[-1].velocity == pytest.approx((1.0, 0.0))
    still = IdentityResolver("b", D, Counter(), cfg)  # no site: no position updates
    quiet = [u for k in range(31) for u in frame(still, 0.1 * k, {1: (look, None)}).updates]
    assert len(quiet) == 1 and quiet[0].position is None


def test_a_camera_at_one_frame_a_second_publishes_velocities() -> None:
    look = unit(np.random.default_rng(8).standard_normal(D))
    cam = IdentityResolver("a", D, Counter(), CFG)
    sent = [u for k in range(4) for u in frame(cam, float(k), {1: (look, (1.5 * k, 0.0))}).updates]
    assert sent and sent[-1].timestamp == 3.0 and sent[-1].velocity == pytest.approx((1.5, 0.0))


def test_updates_carry_a_position_only_from_their_own_time() -> None:
    look = unit(np.random.default_rng(9).standard_normal(D))
    cam = IdentityResolver("a", D, Counter(), CFG)
    for k in range(4):
        frame(cam, 0.5 * k, {1: (look, (0.0, 0.0))})
    later = [u for k in range(4, 40) for u in frame(cam, 0.5 * k, {1: (look, None)}).updates]  # off the plan
    assert later and all(u.position is None and u.velocity is None for u in later)


def test_positions_are_validated() -> None:
    cam = IdentityResolver("a", D, Counter(), CFG)
    look = unit(np.ones(D))
    track = Track("a", 1, (0.0, 0.0, 10.0, 20.0), 0.9, 0)
    with pytest.raises(DataError, match=r"positions must be \(1, 2\)"):
        cam.update(0.0, [track], look[None], FRAME, positions=np.zeros((2, 2), np.float32))
    with pytest.raises(DataError, match="position must be None or two finite numbers"):
        ProfileUpdate("a", 1, 1, 0.0, 0.5, np.zeros((0, D), np.float32), position=(1.0, math.inf))
    with pytest.raises(DataError, match="velocity must be None or two finite numbers"):
        ProfileUpdate("a", 1, 1, 0.0, 0.5, np.zeros((0, D), np.float32), velocity=(1.0,))  # type: ignore[arg-type]
    half = IdentityResolver("b", D, Counter(), CFG)
    sent = [u for k in range(4) for u in frame(half, 0.5 * k, {1: (look, (1.0, math.nan))}).updates]
    assert sent and all(u.position is None for u in sent)  # a row with a NaN is no position


# ------------------------------------------------------------------------------------------- wire


def test_position_travels_on_the_wire_and_old_messages_have_none() -> None:
    u = ProfileUpdate(
        "a", 3, 9, 12.5, 0.8, np.zeros((0, D), np.float32), position=(1.25, -7.5), velocity=(0.5, 0.0)
    )
    msg = to_message(u)
    back = decode_message(encode_message(msg, KEY), KEY, 1 << 20)
    assert back.position == (1.25, -7.5) and back.velocity == (0.5, 0.0)
    got = to_update(back, D)
    assert got is not None and got.position == (1.25, -7.5) and got.velocity == (0.5, 0.0)
    plain = decode_message(
        encode_message(FleetMessage("profile", "a", 3, 9, timestamp=1.0), KEY), KEY, 1 << 20
    )
    assert plain.position is None and plain.velocity is None


def test_a_bad_position_on_the_wire_is_malformed() -> None:
    from daemon import codec

    meta = {
        "v": 1,
        "camera": "a",
        "sender": "s",
        "sent": 0.0,
        "items": [
            {
                "k": "profile",
                "t": 1,
                "g": 2,
                "l": None,
                "ts": 0.0,
                "q": 0.5,
                "n": 0,
                "r": 0,
                "e": False,
                "s": None,
                "p": [1.0, "x"],
            }
        ],
    }
    blob = codec.encode(codec.EmbeddingBatch(np.zeros((0, 1), np.float32), meta=meta), key=KEY)
    with pytest.raises(MessageRejected) as e:
        decode_batch(blob, KEY, 1 << 20)
    assert e.value.reason == "malformed"


def test_fleet_clock_applies_the_camera_offset() -> None:
    f = Frame(0, 10.0, np.zeros((2, 2, 3), np.uint8), "b")
    assert FleetClock(1000.0, True, -2.0).time_of(f) == 1008.0
    assert FleetClock(0.0, False, 0.5).time_of(f) == 10.5


def test_a_live_frame_is_put_on_the_shared_clock_at_its_monotonic_reading() -> None:
    """A live frame's fleet time is the shared clock's at the monotonic reading taken with it (plus the offset),
    whatever its wall-clock stamp; with no reading (a replay on the wall clock) or before the shared clock's
    first reading, its stamp."""
    shared = SharedClock()
    live = FleetClock(0.0, False, 0.5, shared)
    m = monotonic_reading()
    f = Frame(0, 10.0, np.zeros((2, 2, 3), np.uint8), "b", monotonic=m)
    assert live.time_of(f) == 10.5  # not read yet
    shared.read(lambda: 5_000.0)
    assert live.time_of(f) == pytest.approx(5_000.5, abs=0.1)
    later = Frame(1, 3_600.0, f.image, "b", monotonic=m + 2.0)  # the wall clock stepped
    assert live.time_of(later) == pytest.approx(5_002.5, abs=0.1)
    assert live.time_of(Frame(2, 10.0, f.image, "b")) == 10.5


# ------------------------------------------------------------------------------------------- holding an id


def joined_by_position(keep: bool) -> tuple[IdentityResolver, IdentityResolver, int | None]:
    """Camera b's track 7 takes a's id through where it stands (looks 0.7 alike); then a's person leaves and
    b's track is seen on: returns the resolvers and a's id."""
    look_a, look_b = pair(0.7, seed=11)
    cfg = IdentityConfig(allow_overlapping_views=True, site_radius=1.0, site_speed=2.0, keep_held_ids=keep)
    ids = Counter()
    a, b = IdentityResolver("a", D, ids, cfg), IdentityResolver("b", D, ids, cfg)
    for k in range(8):
        out_a = frame(a, 0.2 * k, {1: (look_a, (5.0, 3.0))})
        relay(out_a.updates, b)
        out_b = frame(b, 0.2 * k + 0.01, {7: (look_b, (5.0, 3.0))})
    assert gid(out_b, 7) == gid(out_a, 1)
    return a, b, gid(out_a, 1)


@pytest.mark.parametrize("keep", [True, False])
def test_a_held_id_is_not_dropped_for_a_new_one_without_evidence(keep: bool) -> None:
    a, b, first = joined_by_position(keep)
    relay([a.end_track(1, 1.6)], b)
    _, look_b = pair(0.7, seed=11)
    for k in range(40):  # 10 s later: a's sighting is past the horizon, only the 0.7 look speaks
        out = frame(b, 12.0 + 0.2 * k, {7: (look_b, (5.0 + 0.1 * k, 3.0))})
    assert (gid(out, 7) == first) is keep


def test_a_held_id_seen_too_far_off_is_given_up_by_the_later_holder() -> None:
    a, b, first = joined_by_position(keep=True)
    look_a, look_b = pair(0.7, seed=11)
    for k in range(10):  # a's person (who held the id first) is now 30 units away from b's track
        t = 2.0 + 0.2 * k
        relay(frame(a, t, {1: (look_a, (35.0, 3.0))}).updates, b)
        out = frame(b, t + 0.01, {7: (look_b, (5.0, 3.0))})
    assert gid(out, 7) not in (None, first)


def test_a_cameras_own_earlier_tracks_only_rule_identities_out() -> None:
    look, alike = pair(0.7, seed=21)  # too unlike for appearance alone
    same = unit(np.random.default_rng(22).standard_normal(D))

    def after_track_1(
        where: tuple[float, float], before: F32, vec: F32, other_camera: bool
    ) -> tuple[int | None, int | None]:
        """Track 1 (look ``before``) at (0, 0) until 1 s; then track 2 (look ``vec``) at ``where``, on camera a
        itself or on camera b: (track 1's id, track 2's id)."""
        ids = Counter()
        a = IdentityResolver("a", D, ids, CFG)
        cam = IdentityResolver("b", D, ids, CFG) if other_camera else a
        out = None
        for k in range(6):
            out = frame(a, 0.2 * k, {1: (before, (0.0, 0.0))})
            if other_camera:
                relay(out.updates, cam)
        first = gid(out, 1) if out is not None else None
        ended = a.end_track(1, 1.0)
        if other_camera:
            relay([ended], cam)
        for k in range(6):
            later = frame(cam, 1.2 + 0.1 * k, {2: (vec, where)})
        return first, gid(later, 2)

    first, second = after_track_1((0.3, 0.0), look, alike, other_camera=True)
    assert second == first  # another camera's sighting right there speaks for the id
    first, second = after_track_1((0.3, 0.0), look, alike, other_camera=False)
    assert second not in (None, first)  # the same camera's: the tracker already kept them apart
    first, second = after_track_1((0.3, 0.0), *pair(0.9, seed=23), other_camera=False)
    assert second not in (None, first)  # nor does it lift a look under look_only_threshold (0.95)
    first, second = after_track_1((40.0, 0.0), same, same, other_camera=False)
    assert second not in (None, first)  # the same look, but too far from where track 1 just was
    first, second = after_track_1((1.2, 0.0), same, same, other_camera=False)
    assert second == first  # the same look, within reach from where it appeared: appearance decides as before


# ------------------------------------------------------------------------------------------- where a track began


def test_a_track_that_started_too_far_off_stays_ruled_out_as_it_walks_closer() -> None:
    look = unit(np.random.default_rng(7).standard_normal(D))
    # on b, a new id only after 3 s at 10 fps (a look each frame)
    slow = CFG.model_copy(update={"new_min_observations": 30, "decision_interval_s": 0.1})
    ids = Counter()
    a, b = IdentityResolver("a", D, ids, CFG), IdentityResolver("b", D, ids, slow)
    for k in range(6):  # a's person stands at the origin until t = 2.5
        relay(frame(a, 0.5 * k, {1: (look, (0.0, 0.0))}).updates, b)
    relay([a.end_track(1, 2.5)], b)
    seen = []
    for k in range(35):  # b: the same look 10 units off at t = 3 (reach 1 + 2 x 0.5), walking in at 2 units/s
        t = 3.0 + 0.1 * k
        seen.append(gid(frame(b, t, {4: (look, (10.0 - 2.0 * (t - 3.0), 0.0))}), 4))
    # at the end it stands 3.2 from a's sighting 3.9 s later (reach 8.8): close enough now, but where it
    # started rules a's person out
    assert seen[-1] is not None and 1 not in seen


@pytest.mark.parametrize(
    ("similarity", "sited", "joins"), [(0.9, True, False), (0.97, True, True), (0.9, False, True)]
)
def test_where_positions_say_nothing_a_look_alone_must_be_near_certain(
    similarity: float, sited: bool, joins: bool
) -> None:
    before, after = pair(similarity, seed=31)
    ids = Counter()
    a, b = IdentityResolver("a", D, ids, CFG), IdentityResolver("b", D, ids, CFG)
    for k in range(6):
        relay(frame(a, 0.5 * k, {1: (before, (0.0, 0.0) if sited else None)}).updates, b)
    relay([a.end_track(1, 2.5)], b)
    later = 2.5 + CFG.site_horizon_s + 10.0  # a's sighting is long past: only the look speaks
    for k in range(6):
        out = frame(b, later + 0.1 * k, {4: (after, (50.0, 0.0) if sited else None)})
    # look_only_threshold (0.95) with a site, fleet_threshold (0.8) without one
    assert (gid(out, 4) == 1) is joins and gid(out, 4) is not None


def test_a_look_exactly_at_look_only_threshold_is_enough() -> None:
    axes = np.eye(D, dtype=np.float32)
    before, after = axes[0], 0.5 * (axes[0] + axes[1] + axes[2] + axes[3])  # cosine exactly 0.5
    cfg = CFG.model_copy(update={"look_only_threshold": 0.5, "fleet_threshold": 0.4})
    ids = Counter()
    a, b = IdentityResolver("a", D, ids, cfg), IdentityResolver("b", D, ids, cfg)
    for k in range(6):
        relay(frame(a, 0.5 * k, {1: (before, (0.0, 0.0))}).updates, b)
    relay([a.end_track(1, 2.5)], b)
    for k in range(6):  # long after, far off: the positions say nothing
        out = frame(b, 20.0 + 0.1 * k, {4: (after, (50.0, 0.0))})
    assert gid(out, 4) == 1


def test_a_look_too_weak_to_take_still_keeps_a_weaker_rival_out() -> None:
    rng = np.random.default_rng(41)
    q, _ = np.linalg.qr(rng.standard_normal((D, 3)))
    x, y, z = (
        q[:, i].astype(np.float32) for i in range(3)
    )  # orthonormal looks: person X, person Y, the rest
    track = unit(0.86 * x + 0.45 * y + math.sqrt(1 - 0.86**2 - 0.45**2) * z)  # 0.86 like X, 0.45 like Y
    cfg = CFG.model_copy(update={"site_weight": 0.4, "site_min_similarity": 0.4})
    for x_look in (0.86, 0.2):
        ids = Counter()
        a, b, c = (IdentityResolver(n, D, ids, cfg) for n in "abc")
        for k in range(6):  # a saw X long ago, far off: positions say nothing for X's id
            relay(frame(a, 0.5 * k, {1: (x, (500.0, 0.0))}).updates, c)
        relay([a.end_track(1, 2.5)], c)
        for k in range(6):  # b sees Y right where c's track will stand
            relay(frame(b, 20.0 + 0.2 * k, {2: (y, (0.0, 0.0))}).updates, c)
        seen = track if x_look == 0.86 else unit(0.2 * x + 0.45 * y + math.sqrt(1 - 0.2**2 - 0.45**2) * z)
        for k in range(6):
            out = frame(c, 21.2 + 0.1 * k, {3: (seen, (0.1, 0.0))})
        # Y's id: 0.45 + up to 0.4 for standing there (0.82-0.87). X's look alone: 0.86, under
        # look_only_threshold (0.95) so c cannot take it, but as good as Y's or better: nobody is named
        if x_look == 0.86:
            assert gid(out, 3) not in (None, 1, 2)
        else:  # no look-alike in the way: the position names Y
            assert gid(out, 3) == 2


def two_walking(other_at: float) -> tuple[IdentityResolver, IdentityResolver, int, int, F32, F32, F32, F32]:
    """P walks right through the views of cameras a (track 1) and b (track 7) for 2 s; someone else stands at
    ``other_at`` on b only (track 8). Returns the resolvers, P's and the other's ids, and P's and the other's
    looks on a and on b."""
    p_a, p_b = pair(0.9, seed=31)
    o_a, o_b = pair(0.9, seed=32)
    ids = Counter()
    a, b = IdentityResolver("a", D, ids, CFG), IdentityResolver("b", D, ids, CFG)
    for k in range(10):
        t = 0.2 * k
        out_a = frame(a, t, {1: (p_a, (2.0 + 0.5 * k, 0.0))})
        relay(out_a.updates, b)
        out_b = frame(b, t + 0.01, {7: (p_b, (2.0 + 0.5 * k, 0.0)), 8: (o_b, (other_at, 0.0))})
        relay(out_b.updates, a)
    gp, go = gid(out_a, 1), gid(out_b, 8)
    assert gp is not None and go is not None and gid(out_b, 7) == gp and go != gp
    return a, b, gp, go, p_a, p_b, o_a, o_b


def test_a_track_that_switched_people_at_the_edge_of_its_view_gives_up_the_id() -> None:
    """Camera a's tracker carries track 1 from P, who walks out of a's view, onto Q, who walks in at the same
    spot. Camera b sees both all along. a's track took P's id first, yet it now stands where b sees Q and far
    from where b sees P: a's track takes Q's id, and b's track of P keeps P's id."""
    a, b, gp, gq, _, p_b, q_a, q_b = two_walking(12.0)
    for k in range(10):  # P walks on out of a's view, Q walks left into it: a's track 1 now follows Q
        t = 2.0 + 0.2 * k
        q_at = (11.0 - 0.2 * k, 0.0)
        out_a = frame(a, t, {1: (around(q_a, 0.97, seed=k), q_at)})  # a fresh look each frame
        relay(out_a.updates, b)
        out_b = frame(b, t + 0.01, {7: (p_b, (7.0 + 0.5 * k, 0.0)), 8: (q_b, q_at)})
        relay(out_b.updates, a)
    assert gid(out_a, 1) == gq
    assert gid(out_b, 7) == gp and gid(out_b, 8) == gq


def test_a_track_keeps_its_id_when_the_other_cameras_track_is_the_one_that_switched() -> None:
    """The mirror case: camera b's tracker carries b's track of P onto R, far off, and starts a new track for P.
    a's track of P, which took P's id first, keeps it: the b track standing with it took its id only after the
    dispute began, so it explains nothing. b's switched track gives the id up, and b's new track of P takes it."""
    a, b, gp, _, p_a, p_b, _, r_b = two_walking(14.0)
    for k in range(15):  # b's track 7 jumps onto R (whose track 8 is lost), P gets a new track 9 on b
        t = 2.0 + 0.2 * k
        p_at = (7.0 + 0.1 * k, 0.0)
        out_a = frame(a, t, {1: (p_a, p_at)})
        relay(out_a.updates, b)
        r_now, p_now = around(r_b, 0.97, seed=k), around(p_b, 0.97, seed=50 + k)
        out_b = frame(b, t + 0.01, {7: (r_now, (14.0, 0.0)), 9: (p_now, p_at)})
        relay(out_b.updates, a)
    assert gid(out_a, 1) == gp and gid(out_b, 9) == gp
    assert gid(out_b, 7) != gp
