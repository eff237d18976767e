"""Gallery search at scale: our exact, PQ and HNSW backends beside MATA's and alwaysAI's galleries, one run.

    python benchmarks/gallery_bench.py                                   # small smoke run (2000 rows)
    python benchmarks/gallery_bench.py --sizes 10000 100000 1000000 --queries 200 --out runs/gallery-bench.json

Data (the same for every backend; shared with peer processes through a temporary .npy file): identities have
unit centres c_i = unit(g + u_i), g one shared random unit direction and u_i random unit vectors (so two
identities sit at cosine ~0.5, as appearance embeddings of different people do); each gallery entry and each
query is unit(c_i + sigma * z / sqrt(D)), z ~ N(0, I), sigma 0.5 (two samples of one identity: cosine ~0.8).
``--per-identity`` entries per identity; queries are fresh samples of random identities.

Backends: ``exact`` (numpy), ``pq`` (FAISS PQ fast-scan + exact re-rank; one row per --pq-candidates) and
``hnsw`` (FAISS HNSW; one row per --ef-search, on one build; --hnsw-max-rows skips its slow large builds).
Per size and backend: build time (adding + index), single-query latency p50/p95 (after warm-up), batch
throughput (``search_batch`` of all queries), memory (RSS growth of the process while building, and the bytes
the backend says it holds), and recall@5 against exact top-5 (computed once with numpy). The match threshold
is -1 so no result is filtered. A backend that would exceed ``--budget-s`` on single queries stops early and
says how many it ran.

Peers run in their own interpreter (``--peer-python``, default ``.venv-peers/bin/python``), made with::

    python3 -m venv .venv-peers && .venv-peers/bin/pip install numpy datamata==2.0.0 --no-deps

MATA (``datamata`` 2.0.0): ``mata.recognition.gallery.Gallery(similarity_thresh)`` with ``add_many(labels,
embeddings)``, ``search(query, top_k, threshold) -> [GalleryMatch(label, similarity, index)]`` and
``search_batch`` (a loop over ``search``): numpy brute force with a full argsort per query. Its module imports
only numpy and json, but ``import mata`` pulls torch, transformers and PIL, so the worker loads the installed
``mata/recognition/gallery.py`` file by path. alwaysAI (``edgeiq`` 2.10.0) publishes macOS and Windows wheels
only, PyArmor-obfuscated; its ``ReIdentification`` gallery (``add_to_gallery(image, id)``,
``re_id_image(image, top_k)``) takes images through its own model, not embeddings: reported, not run.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
PEER_PYTHON = REPO / ".venv-peers" / "bin" / "python"
K = 5
SIGMA = 0.5
F32 = NDArray[np.float32]
I64 = NDArray[np.int64]
GENERATION = (
    "identities: unit centres c_i = unit(g + u_i) (g shared, u_i random unit; cos between identities ~0.5); "
    f"entries and queries: unit(c_i + {SIGMA} z / sqrt(D)), z ~ N(0, I) (same identity cos ~0.8)"
)
EDGEIQ_NOTE = (
    "not run: PyPI has no Linux wheel of edgeiq 2.10.0 (macOS and Windows only), and its ReIdentification "
    "gallery takes images through its own model, not embeddings"
)


# --------------------------------------------------------------------------------------------------- data


def unit_rows(x: F32) -> F32:
    out: F32 = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def make_data(n: int, dim: int, per: int, queries: int, seed: int = 0) -> tuple[F32, I64, F32]:
    """(n, dim) entries, their identity ids, and (queries, dim) fresh queries; see the module docstring."""
    rng = np.random.default_rng(seed)
    n_ids = max(1, n // per)
    g = unit_rows(rng.standard_normal((1, dim)).astype(np.float32))
    centres = unit_rows(unit_rows(rng.standard_normal((n_ids, dim)).astype(np.float32)) + g)
    ids = np.arange(n, dtype=np.int64) % n_ids
    x = np.empty((n, dim), dtype=np.float32)
    step = 50_000
    for i in range(0, n, step):
        noise = rng.standard_normal((min(step, n - i), dim), dtype=np.float32) * np.float32(
            SIGMA / np.sqrt(dim)
        )
        x[i : i + step] = unit_rows(centres[ids[i : i + step]] + noise)
    q_ids = rng.integers(0, n_ids, queries)
    q = unit_rows(
        centres[q_ids] + rng.standard_normal((queries, dim), dtype=np.float32) * (SIGMA / np.sqrt(dim))
    )
    return x, ids, q


def exact_top_k(x: F32, q: F32, k: int = K) -> I64:
    """Exact top-k rows per query by blocks of the gallery (bounded memory), best first."""
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for i in range(0, len(x), 100_000):
        s = q @ x[i : i + 100_000].T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + i], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def recall(found: Sequence[Sequence[int]], truth: I64) -> float:
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / max(1, truth.size)


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------ measurement


def time_queries(
    search: Callable[[F32], list[int]], q: F32, budget_s: float
) -> tuple[list[list[int]], list[float]]:
    """Single-query results and latencies (ms); stops once ``budget_s`` is spent."""
    for v in q[:3]:
        search(v)  # warm-up
    found, lat = [], []
    start = time.perf_counter()
    for v in q:
        t = time.perf_counter()
        found.append(search(v))
        lat.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() - start > budget_s:
            break
    return found, lat


def summarise(
    name: str,
    build: dict[str, float],
    lat: list[float],
    found: list[list[int]],
    truth: I64,
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "backend": name,
        "load_avg_1min": os.getloadavg()[0],
        **build,
        "queries_run": len(lat),
        "p50_ms": float(np.percentile(lat, 50)) if lat else None,
        "p95_ms": float(np.percentile(lat, 95)) if lat else None,
        "recall_at_5": recall(found, truth[: len(found)]) if found else None,
        **extra,
    }


def run_ours(
    kind: str, x: F32, ids: I64, q: F32, truth: I64, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Our gallery with one backend (exact, pq, hnsw); one row per search setting, on one build."""
    from daemon.config import GalleryConfig
    from daemon.gallery import Gallery

    cfg = GalleryConfig(
        threshold=-1,
        max_per_label=None,
        index="exact" if kind == "exact" else "faiss",
        faiss_kind="hnsw" if kind == "hnsw" else "pq",
        pq_m=args.pq_m,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.ef_construction,
    )
    labels = [str(i) for i in ids.tolist()]
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    g = Gallery.from_config(cfg, x.shape[1])
    g.add_many(labels, x)
    t1 = time.perf_counter()
    g.rebuild_index()
    t2 = time.perf_counter()
    rss = rss_bytes() - rss0
    build = {"add_s": t1 - t0, "index_s": t2 - t1, "build_s": t2 - t0}
    mem = g.memory_bytes()
    extra: dict[str, Any] = {"rss_mib": rss / 2**20, "held_mib": (mem["vectors"] + mem["index"]) / 2**20}

    def one(v: F32) -> list[int]:
        return [m.index for m in g.search(v, K).matches]

    settings: dict[str, list[Any]] = {
        "exact": [("ours-exact", {})],
        "pq": [(f"ours-pq m={args.pq_m} cand={c}", {"pq_candidates": c}) for c in args.pq_candidates],
        "hnsw": [
            (f"ours-hnsw M={args.hnsw_m} efC={args.ef_construction} ef={ef}", {"hnsw_ef_search": ef})
            for ef in args.ef_search
        ],
    }
    rows = []
    for name, tuning in settings[kind]:
        g.tune(**tuning)
        found, lat = time_queries(one, q, args.budget_s)
        t = time.perf_counter()
        g.search_batch(q, K)
        extra["batch_qps"] = len(q) / (time.perf_counter() - t)
        rows.append(summarise(name, build, lat, found, truth, dict(extra)))
    return rows


# ------------------------------------------------------------------------------------------------- peers


def load_mata_gallery() -> Any:
    """MATA's Gallery class from the installed datamata package, loaded by file path (see docstring)."""
    spec = importlib.util.find_spec("mata")
    if spec is None or spec.origin is None:
        raise ImportError("datamata is not installed in this interpreter")
    path = Path(spec.origin).parent / "recognition" / "gallery.py"
    mod_spec = importlib.util.spec_from_file_location("mata_recognition_gallery", path)
    if mod_spec is None or mod_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_spec.name] = module  # its dataclasses look their module up
    mod_spec.loader.exec_module(module)
    return module.Gallery


def peer_worker(peer: str, data: Path, out: Path, budget_s: float) -> int:
    """Run inside the peer interpreter: build the peer's gallery from ``data`` and time it."""
    from importlib.metadata import version

    arrays = np.load(data)
    x, ids, q = np.ascontiguousarray(arrays["x"]), arrays["ids"], arrays["q"]
    if peer != "mata":
        raise SystemExit(f"unknown peer {peer!r}")
    gallery_cls = load_mata_gallery()
    labels = [str(i) for i in ids.tolist()]
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    g = gallery_cls(similarity_thresh=-1.0)
    g.add_many(labels, x)
    g.search(x[0], top_k=1)  # MATA stacks its matrix on the first search: count it as building
    build_s = time.perf_counter() - t0
    rss = rss_bytes() - rss0

    def one(v: F32) -> list[int]:
        return [m.index for m in g.search(v, top_k=K, threshold=-1.0)]

    found, lat = time_queries(one, q, budget_s)
    n_batch = max(1, min(len(q), len(lat)))
    t = time.perf_counter()
    g.search_batch(q[:n_batch], top_k=K, threshold=-1.0)
    batch_qps = n_batch / (time.perf_counter() - t)
    result = {
        "backend": f"mata (datamata {version('datamata')})",
        "build_s": build_s,
        "found": found,
        "lat": lat,
        "batch_qps": batch_qps,
        "batch_queries": n_batch,
        "rss_mib": rss / 2**20,
        "held_mib": g._get_matrix().nbytes / 2**20 + sum(e.nbytes for e in g._embeddings) / 2**20,
    }
    out.write_text(json.dumps(result), encoding="utf-8")
    return 0


def run_peer(peer: str, data: Path, truth: I64, args: argparse.Namespace) -> dict[str, Any]:
    if peer == "edgeiq":
        return {"backend": "edgeiq 2.10.0", "note": EDGEIQ_NOTE}
    if not Path(args.peer_python).is_file():
        return {"backend": peer, "note": f"not run: no peer interpreter at {args.peer_python} (see --help)"}
    env = dict(os.environ)
    if peer == "mata-blas1":  # the same, with numpy's BLAS held to one thread as our exact search does
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        cmd = [str(args.peer_python), __file__, "--peer-worker", "mata", "--data", str(data)]
        cmd += ["--peer-out", str(out), "--budget-s", str(args.budget_s)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=args.peer_timeout_s, env=env
        )
        if proc.returncode != 0 or not out.is_file():
            return {"backend": peer, "note": f"not run: worker failed ({proc.stderr.strip()[-400:]})"}
        r = json.loads(out.read_text(encoding="utf-8"))
    extra = {k: r[k] for k in ("batch_qps", "batch_queries", "rss_mib", "held_mib")}
    name = r["backend"] + (", BLAS 1 thread" if peer == "mata-blas1" else "")
    return summarise(name, {"build_s": r["build_s"]}, r["lat"], r["found"], truth, extra)


# ----------------------------------------------------------------------------------------------- report


def fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    head = "| rows | backend | build s (add + index) | p50 ms | p95 ms | batch q/s | recall@5 | RSS Δ MiB | held MiB |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['rows']} | {r['backend']} | {r['note']} |||||||")
            continue
        build = fmt(r["build_s"], ".2f")
        if "index_s" in r:
            build += f" ({r['add_s']:.2f} + {r['index_s']:.2f})"
        queries = "" if r["queries_run"] == r["queries"] else f" ({r['queries_run']} queries)"
        lines.append(
            f"| {r['rows']} | {r['backend']}{queries} | {build} | {fmt(r['p50_ms'], '.3f')} | "
            f"{fmt(r['p95_ms'], '.3f')} | {fmt(r['batch_qps'], '.0f')} | {fmt(r['recall_at_5'], '.4f')} | "
            f"{fmt(r['rss_mib'], '.0f')} | {fmt(r['held_mib'], '.0f')} |"
        )
    return "\n".join(lines)


def bench_size(n: int, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    t = time.perf_counter()
    x, ids, q = make_data(n, args.dim, args.per_identity, args.queries, args.seed)
    truth = exact_top_k(x, q)
    print(f"# {n} rows x {args.dim}: data + exact top-{K} in {time.perf_counter() - t:.1f} s", flush=True)
    rows: list[dict[str, Any]] = []
    for kind in args.backends:
        if kind == "hnsw" and args.hnsw_max_rows and n > args.hnsw_max_rows:
            rows.append(
                {"backend": "ours-hnsw", "note": f"not run above --hnsw-max-rows {args.hnsw_max_rows}"}
            )
            continue
        for row in run_ours(kind, x, ids, q, truth, args):
            rows.append(row)
            print(table([{**row, "rows": n, "queries": len(q)}]).splitlines()[-1], flush=True)
        gc.collect()
    if args.peers:
        data = tmp / f"data-{n}.npz"
        np.savez(data, x=x, ids=ids, q=q)
        del x
        gc.collect()
        for peer in args.peers:
            rows.append(run_peer(peer, data, truth, args))
            print(table([{**rows[-1], "rows": n, "queries": len(q)}]).splitlines()[-1], flush=True)
        data.unlink()
    return [{**r, "rows": n, "queries": len(q)} for r in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000], help="Gallery sizes (rows).")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--per-identity", type=int, default=10, help="Gallery entries per identity.")
    p.add_argument("--backends", nargs="*", default=["exact", "pq", "hnsw"], choices=["exact", "pq", "hnsw"])
    p.add_argument("--pq-m", type=int, default=None, help="Default: GalleryConfig's.")
    p.add_argument(
        "--pq-candidates", type=int, nargs="+", default=None, help="PQ re-rank depths to time on one build."
    )
    p.add_argument("--hnsw-max-rows", type=int, default=0, help="Skip HNSW above this size (slow builds).")
    p.add_argument(
        "--peers",
        nargs="*",
        default=["mata", "edgeiq"],
        choices=["mata", "mata-blas1", "edgeiq"],
        help="mata-blas1: MATA with OPENBLAS_NUM_THREADS=1.",
    )
    p.add_argument("--hnsw-m", type=int, default=None, help="Default: GalleryConfig's.")
    p.add_argument("--ef-construction", type=int, default=None, help="Default: GalleryConfig's.")
    p.add_argument(
        "--ef-search", type=int, nargs="+", default=None, help="HNSW efSearch values to time on one build."
    )
    p.add_argument("--budget-s", type=float, default=120.0, help="Time cap of the single-query loop.")
    p.add_argument("--peer-python", type=Path, default=PEER_PYTHON)
    p.add_argument(
        "--peer-timeout-s", type=float, default=3600.0, help="Seconds a peer's worker may take (above 0)."
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    p.add_argument("--peer-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--peer-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peer_worker:
        return peer_worker(args.peer_worker, args.data, args.peer_out, args.budget_s)
    if min([*args.sizes, args.dim, args.queries, args.per_identity]) < 1:
        p.error("--sizes, --dim, --queries and --per-identity must be 1 or more")
    if not args.peer_timeout_s > 0:  # NaN too; 0 timed a peer out at once: a traceback after ours ran
        p.error("--peer-timeout-s must be above 0")
    fill_hnsw_defaults(args)
    if problem := gallery_option_error(args):
        p.error(problem)
    print(f"data: {GENERATION}; {args.per_identity} entries per identity, {args.queries} queries, top-{K}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            results += bench_size(n, args, Path(tmp))
    print()
    print(table(results))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": " ".join([sys.executable, *sys.argv]), "generation": GENERATION, "results": results}
        args.out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return 0


def fill_hnsw_defaults(args: argparse.Namespace) -> None:
    from daemon.config import GalleryConfig

    cfg = GalleryConfig()
    args.hnsw_m = cfg.hnsw_m if args.hnsw_m is None else args.hnsw_m
    args.ef_construction = cfg.hnsw_ef_construction if args.ef_construction is None else args.ef_construction
    args.ef_search = args.ef_search or [cfg.hnsw_ef_search]
    args.pq_m = cfg.pq_m if args.pq_m is None else args.pq_m
    args.pq_candidates = args.pq_candidates or [cfg.pq_candidates]


GALLERY_FLAGS = {  # GalleryConfig field -> the option that sets it here
    "pq_m": "--pq-m",
    "pq_candidates": "--pq-candidates",
    "hnsw_m": "--hnsw-m",
    "hnsw_ef_construction": "--ef-construction",
    "hnsw_ef_search": "--ef-search",
}


def gallery_option_error(args: argparse.Namespace) -> str | None:
    """What GalleryConfig says of the gallery options (each value of the lists), named by option; None if fine."""
    from pydantic import ValidationError

    from daemon.config import GalleryConfig

    build = {"pq_m": args.pq_m, "hnsw_m": args.hnsw_m, "hnsw_ef_construction": args.ef_construction}
    searches = [{"pq_candidates": c} for c in args.pq_candidates] + [
        {"hnsw_ef_search": e} for e in args.ef_search
    ]
    for search in searches:
        try:
            GalleryConfig(**build, **search)
        except ValidationError as e:
            return "; ".join(f"{GALLERY_FLAGS[str(err['loc'][0])]}: {err['msg']}" for err in e.errors())
    return None


if __name__ == "__main__":
    raise SystemExit(main())
