"""Smoke test of benchmarks/load_sim.py (a tiny run on one node, a 3-node cluster and with raw listeners), and
the simulated camera's publish schedule checked against the resolver's policy without a server."""

from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _data import REPO_ROOT, load_benchmark

SCRIPT = REPO_ROOT / "benchmarks" / "load_sim.py"
BUDGET_S = 150


def load_sim() -> Any:
    """benchmarks/load_sim.py as a module (loaded once for the session)."""
    return sys.modules.get("load_sim") or load_benchmark("load_sim")


class FakeBridge:
    """What SimCamera uses of a Bridge: its camera, id allocation, publish (kept here)."""

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self.sent: list[Any] = []
        self._ids = itertools.count(1)

    def allocate_global_id(self) -> int:
        return next(self._ids)

    def publish(self, msg: Any) -> int:
        self.sent.append(msg)
        return len(self.sent)


def _simulate(change_prob: float, seconds: float = 120.0) -> tuple[Any, Any, FakeBridge, Any]:
    sim = load_sim()
    model = replace(sim.default_model(32), change_prob=change_prob)
    bridge = FakeBridge("sim-0000")
    cam = sim.SimCamera(bridge, model, sim.exemplar_pool(model, 0), np.random.default_rng(3))
    live = len(cam.tracks)
    start = 1000.0
    window = sim.Window(start, start, start + seconds, start + seconds)
    tally = sim.PublisherTally()
    cam.begin(start)
    for now in np.arange(start, start + seconds, 0.5 / model.embed_fps):
        cam.step(float(now), window, tally)
        assert len(cam.tracks) == live  # an ended track is replaced at once: the live count holds
    return model, tally, bridge, cam


def test_simulated_camera_publishes_like_the_resolver() -> None:
    model, tally, bridge, cam = _simulate(change_prob=0.9)
    msgs = bridge.sent
    assert (
        model.dim == 32
        and model.exemplars == 8
        and model.publish_interval_s == 1.0
        and model.keepalive_s == 5.0
    )
    assert tally.messages == len(msgs) and tally.births > 0 and tally.ended > 0
    assert all(m.kind == "profile" and m.camera == "sim-0000" and m.global_id is not None for m in msgs)
    assert all(m.embeddings.shape[0] <= model.exemplars for m in msgs)
    by_track: dict[int, list[Any]] = {}
    for m in msgs:
        by_track.setdefault(m.track_id, []).append(m)
    for track_msgs in by_track.values():
        times = [m.timestamp for m in track_msgs if not m.ended]
        # at most one update per publish interval (within a frame), ended ones aside
        assert all(
            b - a >= model.publish_interval_s - 1 / model.embed_fps for a, b in itertools.pairwise(times)
        )
        assert not any(m.ended for m in track_msgs[:-1])  # an ended profile is a track's last word
    gids = {m.track_id: m.global_id for m in msgs}
    assert len(set(gids.values())) == len(gids)  # one global id per track
    newborn = [ms[0] for t, ms in by_track.items() if t > len(cam.tracks)]  # born during the run
    assert newborn and all(m.timestamp - ms_born(m, model) < 1e-9 for m in newborn)
    # decided new_min_observations frames after birth: announced with the exemplars embedded so far
    assert {m.embeddings.shape[0] for m in newborn} <= {2, 3}
    full_per_track_s = tally.full / (len(cam.tracks) * 120.0)
    assert 0.75 <= full_per_track_s <= 1.0  # ~change_prob full updates per track-second


def ms_born(m: Any, model: Any) -> float:
    """When the announce of a new track is due: one frame at most after its decision."""
    return float(m.since) + 1 / model.embed_fps


def test_keep_alives_when_exemplars_rarely_change() -> None:
    model, tally, bridge, _ = _simulate(change_prob=0.1)
    assert tally.keepalives > 0
    assert all(m.embeddings.shape == (0, model.dim) for m in bridge.sent if m.embeddings.shape[0] == 0)
    by_track: dict[int, list[float]] = {}
    for m in bridge.sent:
        by_track.setdefault(m.track_id, []).append(m.timestamp)
    gap = model.keepalive_s + model.publish_interval_s + 1 / model.embed_fps
    assert all(b - a <= gap for ts in by_track.values() for a, b in itertools.pairwise(ts))


def test_load_sim_smoke(tmp_path: Path) -> None:
    out = tmp_path / "load"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--cameras",
        "3",
        "--publish-only-cameras",
        "2",
        "--cluster-cameras",
        "3",
    ]
    cmd += ["--fanout-cameras", "2"]
    cmd += ["--fanout-listeners", "2", "--receivers", "1", "--publishers", "1", "--warmup-s", "1"]
    cmd += ["--measure-s", "3", "--grace-s", "2", "--keep-going", "--out", str(out)]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUDGET_S, cwd=REPO_ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.monotonic() - start < BUDGET_S
    doc = json.loads((out / "points.json").read_text(encoding="utf-8"))
    assert "load_sim.py" in doc["command"] and doc["model"]["dim"] == 1280
    rows = {r["mode"]: r for r in doc["points"]}
    assert set(rows) == {"single", "publish-only", "cluster", "fanout"}
    quiet = rows.pop("publish-only")  # nobody receives: the server's side alone
    assert quiet["receivers"] == 0 and quiet["messages"] > 0 and quiet["used_memory_mib"] > 0
    assert quiet["pub_dropped"] == 0 and quiet["net_out_mb_s"] < rows["single"]["net_out_mb_s"]
    for r in rows.values():
        assert r["messages"] > 0 and r["full"] > 0 and r["embeddings"] >= r["full"]
        assert r["ingested"] >= 0.99 * r["messages"] * r["receivers"]  # delivered and ingested at the peer
        assert r["ingest_rejected"] == 0 and r["rx_rejected"] == 0 and r["rx_invalid"] == 0
        assert r["rx_callback_errors"] == 0 and r["rx_reconnects"] == 0
        assert r["pub_dropped"] == 0 and r["unsendable"] == 0
        assert 0 < r["lat_p50_ms"] <= r["lat_p99_ms"] <= r["lat_max_ms"] and math.isfinite(r["lat_max_ms"])
        assert r["used_memory_mib"] > 0 and r["mem_kib_per_cam"] > 0 and r["log_kib_per_cam"] > 0
        assert r["entries_per_cam"] > 0 and r["steady_mib_per_cam"] > 0
        assert r["server_cpu"] >= 0 and r["publisher_cpu"] >= 0 and r["machine_cpu"] > 0
        assert not r["alloc_p50_ms"] <= 0  # ids allocated in the window took time (NaN: no birth in it)
    cluster = rows["cluster"]
    assert len(cluster["nodes"]) == 3 and sum(n["cameras"] for n in cluster["nodes"]) == 3
    assert sum(n["mem_mib"] for n in cluster["nodes"]) > 0
    # a PUBLISH goes over the cluster bus to every other node, which INFO's client bytes leave out: each node
    # sends its cameras' batches to the two others and takes in theirs (in MB/s alone said a third each)
    assert all(n["bus_in_mb_s"] > 0 and n["bus_out_mb_s"] >= 0 for n in cluster["nodes"])
    assert cluster["bus_mb_s"] >= 1.5 * cluster["payload_mb_s"] and rows["single"]["bus_mb_s"] == 0
    assert rows["fanout"]["listeners"] == 2 and rows["fanout"]["listener_mb_s"] > 0
    with (out / "points.csv").open(encoding="utf-8") as f:
        assert [r["mode"] for r in csv.DictReader(f)] == ["single", "publish-only", "cluster", "fanout"]
    assert (out / "load_sim.png").stat().st_size > 10_000
    assert "| mode | cams |" in proc.stdout and "per node (cluster)" in proc.stdout
    assert "| bus in MB/s | bus out MB/s |" in proc.stdout


def test_memory_figures_are_in_one_binary_unit_family() -> None:
    """The table's server memory ('MB') and a node's were decimal (bytes / 1e6), its per-camera figure ('KB/cam')
    KiB (bytes / 1024), and the full-stream figure ('steady MB/cam') decimal again, beside a per-camera MiB in
    RESULTS.md: 4.6 % apart for the same bytes. Every memory figure is KiB or MiB, and labelled so."""
    sim = load_sim()
    mib = 2**20
    spec = sim.PointSpec("single", 10, 2, 1, 0, 5.0, 20.0, 3.0, 500.0, sim.default_model(1280))
    empty = [sim.NodeSample(0.0, 0.0, mib, 0, 0)]
    first = sim.Sampled([sim.NodeSample(1.0, 0.5, 20 * mib, 0, 0)], (0.0, 0.0), {}, 100.0)
    last = sim.Sampled([sim.NodeSample(2.0, 1.0, 31 * mib, 10**6, 10**7)], (1.0, 2.0), {}, 120.0)
    row = sim._server_figures(spec, empty, first, last, 20.0, [0] * 10, 0)
    assert row["used_memory_mib"] == 30 and row["nodes"][0]["mem_mib"] == 30
    assert row["mem_kib_per_cam"] == 3072  # 3 MiB a camera: the same bytes as the node's 30 MiB
    assert row["net_out_mb_s"] == 0.5  # rates stay decimal MB/s, as labelled
    # a full stream: BridgeConfig's stream_maxlen (1000) entries of 40 KiB, and 1 MiB of latest state
    row.update({"entries_per_cam": 250.0, "entry_bytes": 40 * 1024.0, "state_kib_per_cam": 1024.0})
    assert sim._steady_memory(row, spec) == 1000 * 40 / 1024 + 1
    header = sim.table([]).splitlines()[0]
    assert "| MiB | KiB/cam | steady MiB/cam |" in header and " MB |" not in header, header
    assert "| memory MiB |" in sim.node_table([])
    assert {"used_memory_mib", "mem_kib_per_cam", "steady_mib_per_cam", "log_kib_per_cam"} <= set(sim.COLUMNS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cameras", "10", "0"], "camera counts, --publishers, --dim and --tracks-min must be 1 or more"),
        (["--measure-s", "0"], "--measure-s, --embed-fps, --track-life-s and --p99-limit-ms must be above 0"),
        (
            ["--track-life-s", "0"],
            "--measure-s, --embed-fps, --track-life-s and --p99-limit-ms must be above 0",
        ),
        (
            ["--p99-limit-ms", "0"],
            "--measure-s, --embed-fps, --track-life-s and --p99-limit-ms must be above 0",
        ),
        (
            ["--embed-fps", "nan"],
            "--measure-s, --embed-fps, --track-life-s and --p99-limit-ms must be above 0",
        ),
        (["--tracks-min", "5", "--tracks-max", "2"], "--tracks-max (2) is below --tracks-min (5)"),
        (["--receivers", "-1"], "--receivers and --fanout-listeners must be 0 or more"),
        (["--fanout-listeners", "0", "-8"], "--receivers and --fanout-listeners must be 0 or more"),
        (["--warmup-s", "-1"], "--warmup-s, --grace-s and --decide-s must be 0 or more"),
        (["--grace-s", "-1"], "--warmup-s, --grace-s and --decide-s must be 0 or more"),
        (["--decide-s", "-0.5"], "--warmup-s, --grace-s and --decide-s must be 0 or more"),
        (["--change-prob", "2"], "--change-prob must be between 0 and 1"),
    ],
)
def test_bad_options_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """They were a ZeroDivisionError after the sweep point ran, or 'a child process failed' (tracks-min/max); the
    negative counts and times, a zero lifetime or p99 limit and a chance over 1 ran the whole default sweep, and
    its points came out saturated (p99 nan, 'receivers got nan%') or meaningless."""
    with pytest.raises(SystemExit) as e:
        load_sim().parse_args(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_camera_on_the_first_slot_of_a_node_is_read_on_that_node() -> None:
    """The load simulation found a camera's node as slot * 3 // 16384, but the cluster's second and third nodes
    start at slots 5461 and 10922 (16384 // 3 and 2 * 16384 // 3), which that put on the node before: a sampled
    camera there (sim-3059's keys hash to slot 10922) was read on the wrong node, MEMORY USAGE answered MOVED, and
    the point failed, and the camera was counted on the wrong node."""
    from valkey.crc import key_slot

    sim = load_sim()
    key = "reid:{default/sim-3059}:log"
    assert key_slot(key.encode()) == 10922
    with sim.Servers(cluster=True) as servers:
        assert servers.node_of(key) == 2
        servers.key_client(key).xadd(key, {"m": b"x"})  # the node that holds the slot takes it (no MOVED)
        assert sim.memory_breakdown(servers, ["sim-3059"])["entries_per_cam"] == 1
