"""The embedding codec: bytes per vector, encode/decode speed, and what float16 / int8 cost in search accuracy.

    python benchmarks/codec_bench.py [--stride 2] [--max-crops 3000] [--repeats 5] [--out runs/codec-bench.json]

1. Size: bytes per 512-d vector for each dtype, plain and zlib-compressed, on 1000 random unit vectors (the
   worst case for compression) and on the real embeddings of part 3.
2. Speed: encode and decode of one vector (a wire message) and of --speed-vectors (1000) vectors, each with a
   label, track id, timestamp and meta, HMAC-signed; median of --repeats.
3. Accuracy, on REAL embeddings: the MobileNetV2 embedder (preset mobilenetv2-imagenet, 1280-d) on the ground
   truth boxes (consider=1) of every --stride-th PETS09-S2L1 frame. Per identity, the earlier half of its crops
   (by frame) is the gallery and the later half the queries. Each quantised dtype is compared with float32:
   rank-1 agreement (same top gallery row), top-5 agreement (shared rows of the two top-5 lists / 5), mean and
   max |delta similarity| over every query x gallery pair, and identity rank-1 accuracy. Both sides are
   quantised (a stored gallery searched with a received query); "gallery only" keeps float32 queries.
   Skipped, with the reason, when the clip or the model is absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pets_clip import GT, VIDEO, absent_hint, load_gt, models_dir, positive_int, read_frames

from daemon import codec
from daemon.codec import EmbeddingBatch

DTYPES: tuple[codec.Dtype, ...] = ("float32", "float16", "int8")
KEY = b"benchmark-key"
F32 = NDArray[np.float32]


def unit_rows(x: NDArray[Any]) -> F32:
    out: F32 = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def per_vector_bytes(emb: F32) -> dict[str, float]:
    """Payload bytes per vector (header excluded) for each dtype, plain and compressed."""
    out = {}
    for dt in DTYPES:
        for comp in (False, True):
            size = len(codec.encode(EmbeddingBatch(emb), dt, compress=comp)) - codec.HEADER_SIZE
            out[f"{dt}{'+zlib' if comp else ''}"] = size / len(emb)
    return out


def median_ms(fn: Callable[[], object], repeats: int, inner: int) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        runs.append((time.perf_counter() - t) * 1000 / inner)
    return statistics.median(runs)


def speed(repeats: int, batch: int, inner_single: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for n, inner in ((1, inner_single), (batch, 3)):
        b = EmbeddingBatch(
            unit_rows(rng.standard_normal((n, 512))),
            labels=tuple(f"cam1/{i}" for i in range(n)),
            track_ids=np.arange(n),
            timestamps=np.arange(n, dtype=np.float64),
            meta={"camera": "cam1"},
        )
        for dt in DTYPES:
            for comp in (False, True):
                blob = codec.encode(b, dt, comp, KEY)
                rows.append(
                    {
                        "vectors": n,
                        "dtype": dt,
                        "zlib": comp,
                        "bytes": len(blob),
                        "encode_ms": median_ms(lambda: codec.encode(b, dt, comp, KEY), repeats, inner),  # noqa: B023
                        "decode_ms": median_ms(lambda: codec.decode(blob, KEY), repeats, inner),  # noqa: B023
                    }
                )
    return rows


# ------------------------------------------------------------------------------------------- accuracy


def real_embeddings(args: argparse.Namespace) -> tuple[F32, NDArray[np.int64], NDArray[np.int64]] | str:
    """(embeddings, identity ids, frames) of the gt crops, or the reason they cannot be made."""
    if not args.video.is_file() or not args.gt.is_file():
        return f"the PETS09-S2L1 clip is absent ({args.video}, {args.gt}){absent_hint(args.video, args.gt)}"
    from daemon.config import EmbedderConfig, RuntimeConfig
    from daemon.embed import OnnxEmbedder
    from daemon.errors import ModelError

    try:
        embedder = OnnxEmbedder(
            EmbedderConfig(model=args.model),
            RuntimeConfig(providers=("CPUExecutionProvider",)),
            args.models_dir,
        )
    except ModelError as e:
        return f"model {args.model} not available: {e}"
    gt = load_gt(args.gt)
    feats, ids, frames = [], [], []
    for index, image in read_frames(args.video, args.stride):
        g = gt.get(index)
        if g is None or not g.consider.any():
            continue
        feats.append(embedder.embed(image, g.xyxy[g.consider]))
        ids.extend(g.ids[g.consider].tolist())
        frames.extend([index] * int(g.consider.sum()))
        if len(ids) >= args.max_crops:
            break
    return (
        np.concatenate(feats)[: args.max_crops],
        np.asarray(ids)[: args.max_crops],
        np.asarray(frames)[: args.max_crops],
    )


def split(ids: NDArray[np.int64], frames: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Per identity, earlier half of its crops (by frame) -> gallery, later half -> queries."""
    gallery, queries = [], []
    for pid in np.unique(ids):
        rows = np.flatnonzero(ids == pid)
        rows = rows[np.argsort(frames[rows], kind="stable")]
        if len(rows) < 2:
            continue
        half = len(rows) // 2
        gallery.extend(rows[:half].tolist())
        queries.extend(rows[half:].tolist())
    return np.asarray(gallery), np.asarray(queries)


def roundtrip(x: F32, dtype: codec.Dtype) -> F32:
    return codec.decode(codec.encode(EmbeddingBatch(x), dtype)).embeddings


def compare(
    gal: F32, qry: F32, gal_q: F32, qry_q: F32, g_ids: NDArray[np.int64], q_ids: NDArray[np.int64]
) -> dict[str, float]:
    ref, quant = qry @ gal.T, qry_q @ gal_q.T
    top_ref, top_q = np.argsort(-ref, axis=1)[:, :5], np.argsort(-quant, axis=1)[:, :5]
    overlap = [len(set(a) & set(b)) / 5 for a, b in zip(top_ref.tolist(), top_q.tolist(), strict=True)]
    delta = np.abs(quant - ref)
    return {
        "rank1_agreement": float((top_ref[:, 0] == top_q[:, 0]).mean()),
        "top5_agreement": float(np.mean(overlap)),
        "mean_abs_dsim": float(delta.mean()),
        "max_abs_dsim": float(delta.max()),
        "rank1_accuracy": float((g_ids[top_q[:, 0]] == q_ids).mean()),
        "rank1_accuracy_float32": float((g_ids[top_ref[:, 0]] == q_ids).mean()),
    }


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    got = real_embeddings(args)
    if isinstance(got, str):
        return {"skipped": got}
    emb, ids, frames = got
    g_rows, q_rows = split(ids, frames)
    gal, qry = emb[g_rows], emb[q_rows]
    out: dict[str, Any] = {
        "crops": len(emb),
        "identities": len(np.unique(ids)),
        "gallery": len(g_rows),
        "queries": len(q_rows),
        "dim": int(emb.shape[1]),
        "embed_s": time.perf_counter() - t,
        "bytes_per_vector": per_vector_bytes(emb),
        "results": {},
    }
    for dt in ("float16", "int8"):
        gal_q, qry_q = roundtrip(gal, dt), roundtrip(qry, dt)
        out["results"][dt] = compare(gal, qry, gal_q, qry_q, ids[g_rows], ids[q_rows])
        out["results"][f"{dt} (gallery only)"] = compare(gal, qry, gal_q, qry, ids[g_rows], ids[q_rows])
    return out


# ---------------------------------------------------------------------------------------------- report


def report(sizes: dict[str, float], speeds: list[dict[str, Any]], acc: dict[str, Any]) -> str:
    lines = ["## bytes per vector (payload, header of 40 bytes per blob excluded)", ""]
    real = acc.get("bytes_per_vector", {})
    lines += ["| encoding | 512-d random unit | real " + (f"{acc['dim']}-d" if real else "(skipped)") + " |"]
    lines += ["|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {real.get(k, float('nan')):.1f} |" for k, v in sizes.items()]
    lines += ["", "## speed (512-d, labels + track ids + timestamps + meta, HMAC-signed; median ms)", ""]
    lines += ["| vectors | dtype | zlib | blob bytes | encode ms | decode ms |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['vectors']} | {r['dtype']} | {r['zlib']} | {r['bytes']} | {r['encode_ms']:.3f} | {r['decode_ms']:.3f} |"
        for r in speeds
    ]
    lines += ["", "## accuracy cost on real embeddings", ""]
    if "skipped" in acc:
        return "\n".join([*lines, f"skipped: {acc['skipped']}"])
    lines += [
        f"{acc['crops']} crops of {acc['identities']} people ({acc['dim']}-d), gallery {acc['gallery']}, "
        f"queries {acc['queries']}; embedding took {acc['embed_s']:.0f} s",
        "",
        "| quantised | rank-1 agreement | top-5 agreement | mean abs dsim | max abs dsim | rank-1 acc (f32) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in acc["results"].items():
        lines.append(
            f"| {name} | {r['rank1_agreement']:.4f} | {r['top5_agreement']:.4f} | {r['mean_abs_dsim']:.2e} | "
            f"{r['max_abs_dsim']:.2e} | {r['rank1_accuracy']:.4f} ({r['rank1_accuracy_float32']:.4f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--gt", type=Path, default=GT)
    p.add_argument("--models-dir", type=Path, default=models_dir())
    p.add_argument("--model", default="mobilenetv2-imagenet")
    p.add_argument("--stride", type=positive_int, default=2, help="Embed the gt crops of every Nth frame.")
    p.add_argument("--max-crops", type=positive_int, default=3000)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument(
        "--speed-vectors", type=positive_int, default=1000, help="Vectors of the large message timed."
    )
    p.add_argument("--inner", type=positive_int, default=200, help="Single-vector calls per timed repeat.")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="Write the figures as JSON here.")
    args = p.parse_args(argv)
    sizes = per_vector_bytes(unit_rows(np.random.default_rng(0).standard_normal((1000, 512))))
    speeds = speed(args.repeats, args.speed_vectors, args.inner)
    acc = {"skipped": "--skip-accuracy"} if args.skip_accuracy else accuracy(args)
    text = report(sizes, speeds, acc)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": " ".join([sys.executable, *sys.argv]),
            "sizes_512": sizes,
            "speed": speeds,
            "accuracy": acc,
        }
        args.out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
