"""The identity resolver's guarantees as properties, checked on every frame of randomized fleets.

A corridor of 2-4 cameras, neighbours overlapping or a gap apart (an edge with ``min_s`` 0, or the gap over
``site_speed``; some pairs without an edge, with and without ``allow_overlapping_views``); people are random unit
looks (some pairs of look-alikes) walking at most ``SPEED``, coming and going, hidden for a while (occlusions),
crossing each other, sometimes swapped by a camera's tracker. Each camera has its own frame rate and phase, some a
site plan; one ``IdentityResolver`` each, relaying their ``ProfileUpdate`` records to each other (at once, as in
lockstep, or late and sometimes lost, as pub/sub live), with ``forget`` of a random id now and then. Checked on
every frame (README, "A fleet: one global id per person"; daemon/identity/resolver.py): two tracks of one frame
never share an id; an id is not held at once on two cameras whose views do not overlap (past the frames it takes
to hear of each other), nor taken sooner than the travel time after another camera saw it; a label does not
flip back and forth; allocated ids are never given twice; forget erases that id and only it; expired
contributions are gone; every size stays within its bound and the fleet store stays consistent.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from daemon.config import CameraEdge, IdentityConfig
from daemon.identity import FrameIdentities, IdentityResolver, ProfileUpdate
from daemon.identity.travel import TravelModel
from daemon.types import Track

D = 24
SPEED = 1.5  # fastest a simulated person walks, under the config's site_speed (2.5)
DEPTH = 8.0  # the corridor's depth on the site plan
PX = 32.0  # pixels per site unit across a camera's view
Key = tuple[str, int]


@dataclass
class Person:
    look: np.ndarray
    x: float
    y: float
    vx: float
    vy: float
    enter: float
    leave: float


@dataclass
class Camera:
    """One camera's view of the corridor and its tracker's state."""

    res: IdentityResolver
    x0: float
    x1: float
    fps: float
    phase: float
    site: bool
    skew: float = 0.0  # its clock runs this far off the fleet's
    next_tid: int = 1
    tracks: dict[int, int] = field(default_factory=dict)  # person -> track id
    unseen: dict[int, int] = field(default_factory=dict)  # track id -> frames unseen
    hidden: dict[int, int] = field(default_factory=dict)  # person -> frames left hidden
    held: dict[int, int | None] = field(default_factory=dict)  # track id -> global id on its last frame
    t: float = -math.inf  # its last frame's time

    @property
    def name(self) -> str:
        return self.res.camera

    @property
    def size(self) -> tuple[int, int]:
        return (int((self.x1 - self.x0) * PX), 480)


class Fleet:
    """A randomized fleet; ``run`` drives it and returns the broken guarantees, one line each."""

    def __init__(self, seed: int, live: bool = False, **identity: object) -> None:
        self.rng = rng = np.random.default_rng(seed)
        views = self._views(int(rng.integers(2, 5)))
        self.cfg = IdentityConfig(**self._settings(views, identity))  # type: ignore[arg-type]
        self.travel = TravelModel(self.cfg.adjacency, self.cfg.allow_overlapping_views)
        self.issued: list[int] = []
        self.cams = [
            Camera(
                IdentityResolver(name, D, self._allocate, self.cfg),
                x0,
                x1,
                fps := float(rng.choice([5.0, 7.0, 10.0])),
                float(rng.uniform(0, 1 / fps)),
                bool(rng.random() < 0.6),
            )
            for name, x0, x1 in views
        ]
        if not any(c.site for c in self.cams):  # a clock off the fleet's only where no site plan checks it
            for c in self.cams:
                c.skew = float(rng.uniform(-1.5, 1.5)) if rng.random() < 0.3 else 0.0
        self.length = max(x1 for _, _, x1 in views)
        self.duration = float(rng.uniform(30, 60))
        self.people = self._people(int(rng.integers(4, 12)))
        self.noise = float(rng.choice([0.15, 0.3, 0.45]))
        self.embed_p = float(rng.choice([0.5, 0.9]))
        self.swap_p = float(rng.choice([0.0, 0.05]))
        self.hide_p = float(rng.choice([0.0, 0.02, 0.05]))
        self.buffer = int(rng.choice([3, 10, 20, 60]))
        self.latency = float(rng.uniform(0.05, 1.0)) if live else 0.0
        self.loss = 0.05 if live else 0.0
        self.forgets = sorted(float(t) for t in rng.uniform(5, self.duration, int(rng.integers(0, 3))))
        self.inbox: list[tuple[float, int, str, ProfileUpdate]] = []
        self.sent = 0
        self.check = Checks(self)

    def _views(self, n: int) -> list[tuple[str, float, float]]:
        x, out = 0.0, []
        for i in range(n):
            width = float(self.rng.uniform(12, 20))
            out.append((f"c{i}", x, x + width))
            x += width + float(self.rng.choice([-4.0, -2.0, 3.0, 8.0, 15.0]))
        return out

    def _settings(
        self, views: Sequence[tuple[str, float, float]], over: dict[str, object]
    ) -> dict[str, object]:
        rng = self.rng
        allow = bool(rng.random() < 0.3)
        edges = []
        for (a, _, a1), (b, b0, _) in itertools.pairwise(views):
            gap = b0 - a1
            if gap < 0 and (rng.random() < 0.8 or not allow):
                edges.append(CameraEdge(a=a, b=b, min_s=0.0, max_s=10.0))
            elif gap >= 0 and rng.random() < 0.8:
                edges.append(CameraEdge(a=a, b=b, min_s=round(gap / 2.5, 2), max_s=gap / 0.3 + 5))
        kw: dict[str, object] = {"adjacency": tuple(edges), "allow_overlapping_views": allow}
        if rng.random() < 0.3:  # small caps: the bounds are reached
            kw.update(
                max_identities=6,
                max_exemplar_rows=60,
                max_tracks_per_identity=2,
                max_live_tracks=12,
                max_forgotten=3,
                retention_s=20.0,
            )
        if rng.random() < 0.3:
            kw["hysteresis_count"] = int(rng.integers(1, 4))
        return kw | over

    def _people(self, n: int) -> list[Person]:
        rng, out = self.rng, []
        alike = rng.random() < 0.5  # every second person looks almost like the one before
        for p in range(n):
            look = rng.standard_normal(D)
            enter = float(rng.uniform(0, self.duration * 0.7))
            person = Person(
                look / np.linalg.norm(look),
                float(rng.uniform(0, self.length)),
                float(rng.uniform(0, DEPTH)),
                float(rng.uniform(-SPEED, SPEED)),
                float(rng.uniform(-0.3, 0.3)),
                enter,
                enter + float(rng.uniform(10, 50)),
            )
            if alike and p % 2:
                look = out[-1].look * 3 + look * 0.6
                person.look = look / np.linalg.norm(look)
                if rng.random() < 0.5:  # walking beside the one they look like
                    prev = out[-1]
                    person.x, person.vx, person.vy, person.enter, person.leave = (
                        prev.x + 3.0,
                        prev.vx,
                        prev.vy,
                        prev.enter,
                        prev.leave,
                    )
            out.append(person)
        return out

    def _allocate(self) -> int:
        self.issued.append(len(self.issued) + 1)
        return self.issued[-1]

    # ------------------------------------------------------------------------------------------- running

    def run(self) -> list[str]:
        frames = sorted(
            (round(c.phase + k / c.fps, 6), i)
            for i, c in enumerate(self.cams)
            for k in range(int((self.duration - c.phase) * c.fps))
        )
        last = 0.0
        for t, i in frames:
            self._walk(t - last)
            last = t
            while self.forgets and self.forgets[0] <= t:
                self.forgets.pop(0)
                self._forget(t)
            self._frame(self.cams[i], t)
        return self.check.broken

    def _walk(self, dt: float) -> None:
        for p in self.people:
            p.x, p.y = p.x + p.vx * dt, p.y + p.vy * dt
            if not 0 <= p.y <= DEPTH:
                p.vy, p.y = -p.vy, min(max(p.y, 0.0), DEPTH)
            if not 0 <= p.x <= self.length:
                p.vx, p.x = -p.vx, min(max(p.x, 0.0), self.length)
            if self.rng.random() < 0.2 * dt:
                p.vx = float(self.rng.uniform(-SPEED, SPEED))

    def _seen(self, cam: Camera, t: float) -> list[tuple[int, Person]]:
        """The people the camera's detector finds on this frame (some hidden for a while)."""
        out = []
        for pid, p in enumerate(self.people):
            if not (p.enter <= t < p.leave and cam.x0 <= p.x < cam.x1):
                continue
            if cam.hidden.get(pid, 0) > 0:
                cam.hidden[pid] -= 1
            elif self.rng.random() < self.hide_p:
                cam.hidden[pid] = int(self.rng.integers(1, 3 * self.buffer))
            else:
                out.append((pid, p))
        return out

    def _track(self, cam: Camera, seen: list[tuple[int, Person]]) -> list[int]:
        """The camera's tracker: a track per person, ended after ``buffer`` frames unseen, two people close
        together sometimes swapped. Returns the track ids it ends on this frame."""
        ended, here = [], {pid for pid, _ in seen}
        for pid, tid in list(cam.tracks.items()):
            cam.unseen[tid] = 0 if pid in here else cam.unseen[tid] + 1
            if cam.unseen[tid] >= self.buffer:
                ended.append(tid)
                del cam.tracks[pid], cam.unseen[tid]
        for pid in here - cam.tracks.keys():
            cam.tracks[pid], cam.unseen[cam.next_tid] = cam.next_tid, 0
            cam.next_tid += 1
        if len(seen) >= 2 and self.rng.random() < self.swap_p:
            i, j = self.rng.choice(len(seen), 2, replace=False)
            (a, pa), (b, pb) = seen[int(i)], seen[int(j)]
            if abs(pa.x - pb.x) < 1.5:
                cam.tracks[a], cam.tracks[b] = cam.tracks[b], cam.tracks[a]
        return ended

    def _frame(self, cam: Camera, t: float) -> None:
        self._deliver(cam, t)
        seen = self._seen(cam, t)
        ended = self._track(cam, seen)
        tracks, rows, where = [], [], []
        for i, (pid, p) in enumerate(seen):
            x, bottom = (p.x - cam.x0) * PX, 200.0 + p.y * 30.0
            tracks.append(Track(cam.name, cam.tracks[pid], (x - 30, bottom - 180, x + 30, bottom), 0.9, i))
            noisy = p.look + self.rng.standard_normal(D) * (self.noise / math.sqrt(D))
            rows.append(noisy / np.linalg.norm(noisy) if self.rng.random() < self.embed_p else np.zeros(D))
            where.append((p.x + self.rng.normal(0, 0.1), p.y + self.rng.normal(0, 0.1)))
        emb = np.asarray(rows, np.float32).reshape(-1, D)
        positions = np.asarray(where, np.float32).reshape(-1, 2) if cam.site else None
        stamp = t + cam.skew
        out = cam.res.update(stamp, tracks, emb, cam.size, ended=ended, positions=positions)
        for u in out.updates:
            self._send(cam, t, u)
        cam.t, cam.held = stamp, {a.track_id: a.global_id for a in out.assignments}
        self.check.frame(cam, stamp, out)

    def _send(self, src: Camera, t: float, u: ProfileUpdate) -> None:
        for c in self.cams:
            if c is src or self.rng.random() < self.loss:
                continue
            self.sent += 1
            heapq.heappush(self.inbox, (t + float(self.rng.uniform(0, self.latency)), self.sent, c.name, u))

    def _deliver(self, cam: Camera, t: float) -> None:
        later = []
        while self.inbox and self.inbox[0][0] <= t:
            item = heapq.heappop(self.inbox)
            if item[2] == cam.name:
                cam.res.ingest_remote(item[3])
            else:
                later.append(item)
        for item in later:
            heapq.heappush(self.inbox, item)

    def _forget(self, t: float) -> None:
        known = sorted({g for c in self.cams for g in c.held.values() if g is not None})
        if known:
            gid = int(self.rng.choice(known))
            self.check.forgotten.add(gid)
            for c in self.cams:
                self.check.forget(c, gid, t)


class Checks:
    """Every guarantee, checked as the fleet runs; ``broken`` lists the violations."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.cfg = fleet.cfg
        self.broken: list[str] = []
        self.forgotten: set[int] = set()
        self.new_for: dict[int, Key] = {}  # id -> the track it was allocated for
        self.last_on: dict[int, dict[str, float]] = defaultdict(dict)  # id -> camera -> last seen holding it
        self.took: dict[Key, int] = {}
        self.shared: dict[tuple[int, str, str], int] = defaultdict(
            int
        )  # frames an id is held on two far cameras
        self.history: dict[Key, list[int | None]] = defaultdict(list)

    def bad(self, t: float, what: str) -> None:
        self.broken.append(f"t={t:.2f}: {what}")

    def frame(self, cam: Camera, t: float, out: FrameIdentities) -> None:
        held = [a.global_id for a in out.assignments if a.global_id is not None]
        if len(held) != len(set(held)):
            self.bad(t, f"{cam.name}: one id on two tracks of a frame: {out.assignments}")
        for a in out.assignments:
            self.assignment(cam, t, (cam.name, a.track_id), a.global_id, a.source == "new" and a.changed)
        for g in held:
            self.last_on[g][cam.name] = t
        self.far_apart(cam, t, set(held))
        self.bounds(cam, t)

    def assignment(self, cam: Camera, t: float, key: Key, g: int | None, allocated: bool) -> None:
        self.history[key].append(g)
        if g is not None and (g in self.forgotten or g not in self.fleet.issued):
            self.bad(t, f"{key} holds {g}, forgotten or never allocated")
        if allocated and self.new_for.setdefault(g, key) != key:  # type: ignore[arg-type]
            self.bad(t, f"{g} allocated for {self.new_for[g]} and again for {key}")  # type: ignore[index]
        if g is not None and self.took.get(key) != g:
            self.travelled(cam, t, key, g)
        if g is None:
            self.took.pop(key, None)
        else:
            self.took[key] = g

    def travelled(self, cam: Camera, t: float, key: Key, g: int) -> None:
        """A track that takes ``g`` does so no sooner than the travel time after a far camera saw it."""
        travel = self.fleet.travel
        for other, seen in self.last_on[g].items():
            far = other != cam.name and not travel.overlapping(other, cam.name)
            if far and seen < t < seen + travel.min_travel(other, cam.name) - 1e-6:
                self.bad(t, f"{key} took {g} {t - seen:.2f} s after {other} saw it")

    def far_apart(self, cam: Camera, t: float, held: set[int]) -> None:
        """An id held on two cameras that cannot see one person at once: for at most a few frames (the later
        taker lets it go once it hears of the other)."""
        for other in self.fleet.cams:
            if other is cam or abs(other.t - t) > 1 / other.fps + 1e-6:
                continue
            if self.fleet.travel.overlapping(cam.name, other.name):
                continue
            for g in held & {g for g in other.held.values() if g is not None}:
                k = (g, *sorted((cam.name, other.name)))
                self.shared[k] += 1  # type: ignore[index]
                if self.shared[k] == 4:  # type: ignore[index]
                    self.bad(t, f"{g} held on {cam.name} and {other.name} at once")
        for k in [k for k in self.shared if cam.name in k[1:] and k[0] not in held]:
            del self.shared[k]

    def forget(self, cam: Camera, gid: int, t: float) -> None:
        res = cam.res
        before = {tid: a.global_id for tid in list(res._tracks) if (a := res.assignment(tid)) is not None}
        known = set(res.store.identities)
        res.forget(gid)
        if set(res.store.identities) != known - {gid}:
            self.bad(t, f"{cam.name}: forget {gid} took {known - set(res.store.identities)}")
        for tid, g in before.items():
            a = res.assignment(tid)
            now = None if a is None else a.global_id
            if now != (None if g == gid else g):
                self.bad(t, f"{cam.name}/{tid}: forget {gid} turned {g} into {now}")

    def bounds(self, cam: Camera, t: float) -> None:
        c, s, store = self.cfg, cam.res.stats(), cam.res.store
        limits = {
            "identities": (s.identities, c.max_identities + c.max_live_tracks),
            "contributions": (s.contributions, s.identities * c.max_tracks_per_identity + c.max_live_tracks),
            "exemplar rows": (
                s.exemplar_rows,
                c.max_exemplar_rows + c.max_live_tracks * c.exemplars_per_track,
            ),
            "live tracks": (s.live_tracks, c.max_live_tracks),
            "forgotten": (len(store.forgotten), c.max_forgotten),
            "aliases": (len(store.aliases), c.max_identities),
        }
        for what, (n, most) in limits.items():
            if n > most:
                self.bad(t, f"{cam.name}: {n} {what}, over {most}")
        horizon = cam.res._now - store.lag - c.retention_s  # in real time
        for key, con in store.contributions.items():
            if (con.ended or not con.local) and con.heard < horizon - 1e-6:
                self.bad(t, f"{cam.name}: {key} last heard of at {con.heard}, kept past retention_s")
            if key not in getattr(store.identities.get(con.gid), "keys", ()):
                self.bad(t, f"{cam.name}: {key} of {con.gid} missing from its identity")
        self.consistent(cam, t)

    def consistent(self, cam: Camera, t: float) -> None:
        store, bank = cam.res.store, cam.res.store.bank
        for gid, ident in store.identities.items():
            if not ident.keys or any(store.contributions[k].gid != gid for k in ident.keys):
                self.bad(t, f"{cam.name}: identity {gid} holds {ident.keys}, not its contributions")
        for key, rows in bank._rows.items():
            con = store.contributions.get(key)
            if con is None or any(bank._key[r] != key or bank._gid[r] != con.gid for r in rows):
                self.bad(t, f"{cam.name}: exemplar rows of {key} out of step with its contribution")
        if sum(map(len, bank._rows.values())) != bank.n:
            self.bad(t, f"{cam.name}: the exemplar bank counts {bank.n} rows")

    def flips(self) -> list[str]:
        """Tracks whose id went g -> h -> g on consecutive frames (what hysteresis prevents)."""
        return [
            f"{key}: {a} -> {b} -> {c}"
            for key, h in self.history.items()
            for a, b, c in zip(h, h[1:], h[2:], strict=False)
            if a is not None and b is not None and a == c != b
        ]


@pytest.mark.parametrize("seed", [*range(12), 27])  # 27: look-alikes side by side swapped ids (e001af4)
def test_guards_hold_on_every_frame_in_lockstep(seed: int) -> None:
    fleet = Fleet(seed)
    assert fleet.run() == []
    assert fleet.check.flips() == []
    assert fleet.issued, "the fleet gave no ids: nothing was checked"


@pytest.mark.parametrize("seed", range(100, 104))
def test_guards_hold_with_late_and_lost_messages(seed: int) -> None:
    fleet = Fleet(seed, live=True)
    assert fleet.run() == []
    assert fleet.check.flips() == []


def test_a_fleet_gives_the_same_ids_on_every_run() -> None:
    runs = [Fleet(7) for _ in range(2)]
    for fleet in runs:
        fleet.run()
    assert runs[0].check.history == runs[1].check.history and runs[0].issued == runs[1].issued


def test_small_caps_hold_through_a_crowd() -> None:
    caps = {"max_identities": 4, "max_exemplar_rows": 40, "max_tracks_per_identity": 1, "max_live_tracks": 10}
    fleet = Fleet(3, max_forgotten=2, retention_s=5.0, **caps)
    fleet.people += fleet._people(10)
    assert fleet.run() == []
    assert any(c.res.stats().evicted_identities or c.res.stats().expired_identities for c in fleet.cams)
