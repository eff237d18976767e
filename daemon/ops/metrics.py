"""Prometheus metrics of one camera worker, in a registry of its own (one process per camera).

Two kinds:

* measured on the main loop (``CameraMetrics.frame``): frames, per-frame stage latencies and loop time as
  histograms, live tracks, identity decisions and their similarity;
* read when scraped (:class:`_SnapshotCollector`) from the thread-safe snapshots the parts already keep:
  the source's :class:`~daemon.sources.SourceStats` and queue depth, the bridge's
  :class:`~daemon.bridge.BridgeStats` and the resolver's :class:`~daemon.identity.IdentityStats`. Their
  counters are exported as they are, so nothing is counted twice and a scrape costs no frame time.

Every sample has the label ``camera``. Memory is bounded: the FPS window holds frame counts of at most
``FPS_SLICES`` slices of it (whatever the frame rate), identity tracking holds the live tracks only.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from daemon.bridge import BridgeStats
from daemon.config import OpsConfig
from daemon.identity import IdentityAssignment, IdentityStats
from daemon.ops.liveness import WatchedSource
from daemon.types import StageTimes

PREFIX = "reid"
FPS_SLICES = (
    1_000  # the FPS gauge counts frames per 1/FPS_SLICES of ops.fps_window_s (its memory, at any rate)
)
FPS_GAP_FRAMES = 4  # no frame for longer than this many frame intervals (and than FPS_GAP_MIN_S): an outage
FPS_GAP_MIN_S = 2.0  # the shortest outage: a loop's hiccup (a slow frame: up to 1.6 s on a busy host) is none
# Cosine similarity 0 .. 1 by 0.05; no negative bound (prometheus_client drops _sum when a bound is negative).
SIMILARITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(21))
DECIDED = ("gallery", "fleet", "new")  # identity sources that are a decision (not 'pending')
_BRIDGE_GAUGES = ("connected", "subscribed", "backlog")
_BRIDGE_LINKS = ("reconnects", "reconnect_failures")  # counters of their own, not message events
_IDENTITY_GAUGES = ("identities", "exemplar_rows", "contributions", "live_tracks")
_IDENTITY_HELP = {  # reid_identity_<field> of IdentityStats: what each says
    "identities": "Global identities the resolver holds now (identity.max_identities at most).",
    "exemplar_rows": "Embedding rows the resolver holds now (identity.max_exemplar_rows at most).",
    "contributions": "Camera tracks (this camera's and peers') whose embeddings the resolver holds now.",
    "live_tracks": "This camera's tracks the resolver follows now (identity.max_live_tracks at most).",
    "allocations": "New global ids this camera allocated from the fleet's counter.",
    "remote_accepted": "Track profiles from peer cameras taken in.",
    "expired_identities": "Identities dropped when none of their tracks was heard of for identity.retention_s.",
    "evicted_identities": "Identities dropped, the least recently seen, to keep to identity.max_identities.",
    "dropped_contributions": "Tracks' embeddings dropped to keep to identity.max_exemplar_rows or "
    "identity.max_tracks_per_identity.",
    "forgotten": "Global ids erased by a forget that this camera held.",
    "label_merges": "Global ids merged into another because both were given the same gallery label.",
    "allocations_put_off": "New-id decisions put off and tried again because the fleet's id counter was away.",
    "switches": "Tracks found to have switched people (identity.switch_similarity), resolved afresh.",
    "ended_observed": "Tracks ended with identity.new_min_observations observations and no global id.",
    "ended_too_faint": "Of those, tracks whose best quality stayed under identity.new_min_quality (too small, dim "
    "or hidden for a new id).",
}
_SOURCE_CONNECTED = "1 while the source is open and reading (0 before it is opened, while the worker starts)."
_UNDECODABLE = (
    "Frames the source could not decode and passed over (a damaged video's, a folder's corrupt images; each "
    "named in the log): summary.json's source_stats.frames_skipped."
)

_BRIDGE_MESSAGES = (
    "Fleet messages (track profiles, hellos, forgets) by what happened to them; caught_up and recovered are of "
    "those received. own: this worker's own batches come back, skipped (its own stored messages, one each, in a "
    "catch-up); erased: not messages, the stream entries and track states a forget deleted."
)

StatsFn = Callable[[], Any]
RECONNECT_FAILURES = (
    "Tries to open a live stream that failed: reconnections, and at start while it is waited for "
    "(source.startup_wait_s)."
)


class AssignmentLookup(Protocol):
    """The resolver's view of one live track (``IdentityResolver.assignment``)."""

    def __call__(self, track_id: int) -> IdentityAssignment | None: ...


def _stage_seconds(times: StageTimes, decode_s: float) -> dict[str, float]:
    """Cumulative seconds per stage: the pipeline's float fields, and decoding from the source."""
    out = {
        f.name: float(getattr(times, f.name)) for f in dataclasses.fields(times) if f.type in ("float", float)
    }
    out["decode"] = decode_s
    return out


class _SnapshotCollector(Collector):
    """Source, bridge and identity counters, read from their snapshots at scrape time."""

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self.source: WatchedSource | None = None
        self.bridge: StatsFn | None = None
        self.identity: StatsFn | None = None
        self.fps: Callable[[], float] = lambda: 0.0
        self.startup_failures = 0  # tries to open a live source that failed, while it is not open yet

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield self._gauge(
            "fps",
            "The current frame rate: frames per second over the last ops.fps_window_s, counted from the first frame "
            f"or the end of the last outage (no frame for {FPS_GAP_FRAMES} frame intervals and {FPS_GAP_MIN_S:g} s); "
            "0 during an outage.",
            self.fps(),
        )
        if self.source is not None:
            yield from self._source(self.source)
        else:  # starting: loading models, or waiting for a camera not up yet (source.startup_wait_s)
            yield self._gauge("source_connected", _SOURCE_CONNECTED, 0)
            yield self._counter("source_frames_undecodable", _UNDECODABLE, 0)
            if self.startup_failures:  # its stats count them once it is open
                yield self._counter("source_reconnect_failures", RECONNECT_FAILURES, self.startup_failures)
        if self.bridge is not None:
            yield from self._bridge(self.bridge())
        if self.identity is not None:
            yield from self._identity(self.identity())

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["camera"])
        g.add_metric([self.camera], float(value))
        return g

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["camera"])
        c.add_metric([self.camera], float(value))
        return c

    def _labelled(self, name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
        c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["camera", label])
        for key, v in values.items():
            c.add_metric([self.camera, key], float(v))
        return c

    def _source(self, src: WatchedSource) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = src.stats
        yield self._gauge("source_connected", _SOURCE_CONNECTED, s.connected)
        yield self._gauge("source_queue_depth", "Decoded frames waiting for the main loop.", src.queued)
        yield self._counter("source_frames_decoded", "Frames taken from the source.", s.frames_decoded)
        yield self._counter(
            "source_frames_dropped", "Live frames dropped: the loop fell behind.", s.frames_dropped
        )
        yield self._counter("source_frames_undecodable", _UNDECODABLE, s.frames_skipped)
        yield self._counter("source_reconnects", "Successful reconnections of a live stream.", s.reconnects)
        yield self._counter("source_reconnect_failures", RECONNECT_FAILURES, s.reconnect_failures)
        yield self._counter("source_loops", "Times a looped file started again.", s.loops)

    def _bridge(self, b: BridgeStats) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield self._gauge(
            "bridge_connected", "1 while the bridge holds a working Valkey connection.", b.connected
        )
        yield self._gauge(
            "bridge_subscribed", "1 while the receiver is subscribed and caught up.", b.subscribed
        )
        yield self._gauge("bridge_backlog", "Messages waiting to be written to Valkey.", b.backlog)
        yield self._counter(
            "bridge_reconnects", "Working Valkey connections lost (sender or receiver).", b.reconnects
        )
        yield self._counter(
            "bridge_reconnect_failures",
            "Tries to reach Valkey that failed without a working connection (Valkey away, or refusing).",
            b.reconnect_failures,
        )
        events = {
            f.name: getattr(b, f.name)
            for f in dataclasses.fields(b)
            if f.name not in (*_BRIDGE_GAUGES, *_BRIDGE_LINKS, "last_error", "rejected", "lagging", "leading")
        }
        yield self._labelled("bridge_messages", _BRIDGE_MESSAGES, "event", events)
        rejected = {f.name: getattr(b.rejected, f.name) for f in dataclasses.fields(b.rejected)}
        yield self._labelled("bridge_rejected", "Received messages rejected, by reason.", "reason", rejected)
        lag = GaugeMetricFamily(
            f"{PREFIX}_bridge_peer_lag_seconds",
            "Peer cameras whose live messages all arrive later than identity.claim_ttl_s after they were sent "
            "by their hosts' wall clocks (those clocks lag, and the times in their files): the least delay of "
            "their latest messages; negative for those whose messages all arrive more than "
            "bridge.max_clock_skew_s before they were sent (their clocks lead).",
            labels=["camera", "peer"],
        )
        for peer, seconds in b.lagging.items():
            lag.add_metric([self.camera, peer], seconds)
        for peer, seconds in b.leading.items():
            lag.add_metric([self.camera, peer], -seconds)
        yield lag

    def _identity(self, s: IdentityStats) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for name in _IDENTITY_GAUGES:
            yield self._gauge(f"identity_{name}", _identity_help(name), getattr(s, name))
        for f in dataclasses.fields(s):
            if f.name in _IDENTITY_GAUGES or f.name == "remote_rejected":
                continue
            yield self._counter(f"identity_{f.name}", _identity_help(f.name), getattr(s, f.name))
        yield self._labelled(
            "identity_remote_rejected",
            "Remote profiles the resolver refused, by reason.",
            "reason",
            s.remote_rejected,
        )


def _identity_help(field: str) -> str:
    """The HELP of reid_identity_<field>; a field without a text of its own (a test fails) by its name, so that
    a scrape never fails for it."""
    return _IDENTITY_HELP.get(field, f"Identity resolver: {field.replace('_', ' ')}.")


class _WithoutCreated(Collector):
    """A registry's metrics without their ``*_created`` samples, for the classic text format: it has no place
    for a creation time, so prometheus_client writes each as a gauge series of its own (``reid_frames_created``,
    ``reid_stage_seconds_created{stage}`` ...), one more series per counter and histogram child for every
    scraper that does not ask for OpenMetrics (which carries them as what they are)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            kept.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield kept


class FrameRate:
    """The current frame rate: frames per second over the last ``window_s``, counted from the end of the last
    outage. Frames are counted per slice of ``window_s / FPS_SLICES``, so memory is bounded by the slices, not by
    the frame rate (the oldest slice, partly out of the window, is left out: up to 1/FPS_SLICES of the window too
    few).

    A gap between frames longer than ``FPS_GAP_FRAMES`` frame intervals at the rate before it, and than
    ``FPS_GAP_MIN_S``, is an outage (a stream reconnecting, a stalled loop): while it lasts the rate is 0, and
    after it the frames since it count, over the time since its end, until a whole window has passed (a camera
    back at full rate read low for a window, the outage averaged in). The same holds from the first frame.
    Thread-safe."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._width = window_s / FPS_SLICES
        self._slices: deque[list[int]] = deque()  # [slice number, frames], oldest first
        self._frames = 0  # in the slices held
        self._start = 0.0  # the first frame, or the first after the last outage
        self._run = 0  # frames since then (0: none yet)
        self._last = 0.0  # the latest frame
        self._gap_s = math.inf  # no frame for longer than this after the latest is an outage
        self._lock = threading.Lock()

    def add(self, now: float) -> None:
        """One frame at monotonic time ``now``."""
        k = int(now // self._width)
        with self._lock:
            if self._run == 0 or now - self._last > self._gap_s:  # the first, or an outage ended
                self._start, self._run = now, 0
            if self._slices and self._slices[-1][0] == k:
                self._slices[-1][1] += 1
            else:
                self._slices.append([k, 1])
            self._frames += 1
            self._run += 1
            self._last = now
            self._trim(k)
            self._gap_s = self._gap_after(self._current(now))

    def rate(self, now: float) -> float:
        """Frames per second at ``now`` (0 before the second frame, and during an outage)."""
        with self._lock:
            if self._run == 0 or now - self._last > self._gap_s:
                return 0.0
            self._trim(int(now // self._width))
            return self._current(now)

    def _current(self, now: float) -> float:
        """The rate at ``now``, no outage since the latest frame (call under the lock)."""
        since = now - self._start
        if since < self.window_s:  # the intervals between the frames since the start or the outage
            return (self._run - 1) / since if since > 0 else 0.0
        return self._frames / self.window_s

    def _gap_after(self, rate: float) -> float:
        """The longest gap that is no outage after a frame that leaves the rate at ``rate``: none is before the
        second frame of a run (no rate to measure it by)."""
        if self._run < 2:
            return math.inf
        return max(FPS_GAP_MIN_S, FPS_GAP_FRAMES / rate) if rate > 0 else FPS_GAP_MIN_S

    def _trim(self, k: int) -> None:
        """Drop the slices wholly before the window that ends in slice ``k`` (call under the lock)."""
        while self._slices and self._slices[0][0] <= k - FPS_SLICES:
            self._frames -= self._slices.popleft()[1]


class CameraMetrics:
    """The metrics of one camera. ``frame`` runs on the worker's main thread; ``render`` on any thread."""

    def __init__(self, camera: str, cfg: OpsConfig) -> None:
        self.camera = camera
        self.cfg = cfg
        self._rate = FrameRate(cfg.fps_window_s)
        self.registry = CollectorRegistry(auto_describe=True)
        self._snap = _SnapshotCollector(camera)
        self._snap.fps = self.fps
        self.registry.register(self._snap)
        self._text = CollectorRegistry(auto_describe=False)  # what the classic text format is written from
        self._text.register(_WithoutCreated(self.registry))
        self._last_stage: dict[str, float] = {}
        self._identities: dict[int, tuple[int | None, str]] = {}
        self._assignment: AssignmentLookup | None = None
        self._build(cfg.latency_buckets, cfg.bridge_buckets)
        self._zeros()

    def _build(self, buckets: tuple[float, ...], bridge_buckets: tuple[float, ...]) -> None:
        r, cam = self.registry, ["camera"]
        self.frames = Counter(f"{PREFIX}_frames", "Frames processed by the main loop.", cam, registry=r)
        self.stage = Histogram(
            f"{PREFIX}_stage_seconds",
            "Per-frame time of each stage.",
            [*cam, "stage"],
            registry=r,
            buckets=buckets,
        )
        self.loop = Histogram(
            f"{PREFIX}_loop_seconds",
            "Main loop time per frame, waiting for it included.",
            cam,
            registry=r,
            buckets=buckets,
        )
        self.tracks = Gauge(f"{PREFIX}_tracks_alive", "Tracks reported on the last frame.", cam, registry=r)
        self.decisions = Counter(
            f"{PREFIX}_identity_decisions",
            "Tracks given an identity, by source.",
            [*cam, "source"],
            registry=r,
        )
        self.similarity = Histogram(
            f"{PREFIX}_identity_similarity",
            "Track-to-identity cosine similarity of gallery and fleet matches.",
            [*cam, "source"],
            registry=r,
            buckets=SIMILARITY_BUCKETS,
        )
        self.valkey_rtt = Histogram(
            f"{PREFIX}_bridge_rtt_seconds",
            "Round trip (PING) to the fleet's Valkey.",
            cam,
            registry=r,
            buckets=bridge_buckets,
        )
        self.valkey_up = Gauge(
            f"{PREFIX}_bridge_valkey_up", "1 when the last PING to Valkey succeeded.", cam, registry=r
        )
        self.message_age = Histogram(
            f"{PREFIX}_bridge_message_age_seconds",
            "Fleet messages heard live (pub/sub): receipt time minus the sender's send time (the fleet's clock, "
            "Valkey's). Those caught up from the streams after an outage, old by design, are left out: "
            'reid_bridge_messages_total{event="caught_up"} counts them.',
            cam,
            registry=r,
            buckets=bridge_buckets,
        )

    def _zeros(self) -> None:
        """The per-frame series at 0 before the first frame (a worker that never gets one must not lack them)."""
        self.frames.labels(self.camera)
        self.tracks.labels(self.camera)
        self.loop.labels(self.camera)
        for name in _stage_seconds(StageTimes(), 0.0):
            self.stage.labels(self.camera, name)

    # ------------------------------------------------------------------------------------------ wiring

    def attach(
        self,
        source: WatchedSource | None = None,
        bridge: StatsFn | None = None,
        identity: StatsFn | None = None,
        assignment: AssignmentLookup | None = None,
    ) -> None:
        """Where the scrape-time snapshots come from (each optional; unset parts are not exported, except
        reid_source_connected, 0 until a source is attached). With ``assignment`` (fleet mode) the identity
        decisions of each source are exported, at 0 until the first."""
        if source is not None:
            self._snap.source = source
        if bridge is not None:
            self._snap.bridge = bridge
        if identity is not None:
            self._snap.identity = identity
        if assignment is not None:
            self._assignment = assignment
            for decided in DECIDED:  # at 0 until the first of each
                self.decisions.labels(self.camera, decided)
                if decided != "new":
                    self.similarity.labels(self.camera, decided)

    # ------------------------------------------------------------------------------------------ per frame

    def frame(self, times: StageTimes, decode_s: float, loop_s: float, track_ids: list[int]) -> None:
        """One frame done: counts, stage deltas, loop time, live tracks and identity decisions."""
        self._rate.add(time.monotonic())
        self.frames.labels(self.camera).inc()
        self.loop.labels(self.camera).observe(max(loop_s, 0.0))
        self.tracks.labels(self.camera).set(len(track_ids))
        self._stages(_stage_seconds(times, decode_s))
        if self._assignment is not None:
            self._decisions(track_ids, self._assignment)

    def _stages(self, totals: dict[str, float]) -> None:
        for name, total in totals.items():
            before = self._last_stage.get(name)
            self._last_stage[name] = total
            if before is not None and total >= before:
                self.stage.labels(self.camera, name).observe(total - before)

    def _decisions(self, track_ids: list[int], lookup: AssignmentLookup) -> None:
        """Count a decision when a live track's (global id, source) changes to a decided one. A track not
        reported on this frame (lost by the tracker for a while) keeps its last one while the resolver holds it,
        so its coming back is no decision; those the resolver dropped are dropped (bounded by its live tracks)."""
        for tid in track_ids:
            a = lookup(tid)
            if a is None:
                self._identities.pop(tid, None)
                continue
            now = (a.global_id, a.source)
            if now != self._identities.get(tid) and a.source in DECIDED and a.global_id is not None:
                self.decisions.labels(self.camera, a.source).inc()
                if a.source != "new":
                    self.similarity.labels(self.camera, a.source).observe(a.similarity)
            self._identities[tid] = now
        reported = set(track_ids)
        for tid in [t for t in self._identities if t not in reported and lookup(t) is None]:
            del self._identities[tid]

    # ------------------------------------------------------------------------------------------ other

    def fps(self) -> float:
        """The current frame rate (``FrameRate``: 0 before the second frame and during an outage)."""
        return self._rate.rate(time.monotonic())

    def source_not_open(self) -> None:
        """A try to open the live source at start failed (it is tried again: source.startup_wait_s)."""
        self._snap.startup_failures += 1

    def valkey_ping(self, seconds: float | None) -> None:
        """A Valkey probe result: the round trip, or None when it failed."""
        self.valkey_up.labels(self.camera).set(0 if seconds is None else 1)
        if seconds is not None:
            self.valkey_rtt.labels(self.camera).observe(seconds)

    def message_received(self, sent_at: float, received_at: float | None = None) -> None:
        """A fleet message heard live arrived (its ``sent_at``): observe its age (the service leaves out those
        caught up)."""
        if sent_at > 0:
            age = (time.time() if received_at is None else received_at) - sent_at
            self.message_age.labels(self.camera).observe(max(age, 0.0))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (without ``*_created`` series)."""
        return generate_latest(self._text)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """Every metric in the format a scraper's Accept header asks for (OpenMetrics, which Prometheus asks for
        first; else the classic text), and its content type."""
        encode, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        return encode(self.registry if openmetrics else self._text), content_type
