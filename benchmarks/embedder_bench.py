"""The ONNX embedder on PETS09-S2L1 gt crops: speed per batch size, same-vs-different cosine per crop size.

    python benchmarks/embedder_bench.py [--stride 8] [--repeats 5] [--sizes 256x128 224x224]

Cosine: every consider=1 box of every --stride-th frame is embedded. "same" pairs are one person on two
different frames; "different" pairs are two people (any frames); "same-frame different" are two people on one
frame (what a tracker must tell apart). AUC is the chance that a random same pair is closer than a random
different pair; rank-1 is the share of crops whose nearest crop from another frame shows the same person.
"near" pairs are one person at most --near frames apart; AUC-near compares them with two people on one frame
(the case a tracker meets).
Speed: ms per crop of ``embed_crops`` (resize + inference + normalisation) per batch size, median of repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pets_clip import (
    GT,
    VIDEO,
    cpu_runtime,
    frame_limit,
    load_gt,
    models_dir,
    positive_int,
    read_frames,
    run_parts,
)

from daemon.config import EmbedderConfig, RuntimeConfig
from daemon.embed import OnnxEmbedder, crop_boxes


def parse_size(text: str) -> tuple[int, int]:
    """argparse type of an embedder input size, ``HxW`` in pixels."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in pixels (e.g. 256x128), not {text!r}")
    return h, w


def collect(
    args: argparse.Namespace,
) -> tuple[list[tuple[NDArray[np.uint8], NDArray[np.float32]]], NDArray[np.int64], NDArray[np.int64]]:
    """Per kept frame (image, consider=1 boxes); plus the id and frame of every box, in order."""
    gt = load_gt(args.gt)
    items, ids, frames = [], [], []
    for index, image in read_frames(args.video, args.stride, args.max_frames):
        g = gt.get(index)
        if g is None or not g.consider.any():
            continue
        items.append((image, g.xyxy[g.consider]))
        ids.extend(g.ids[g.consider].tolist())
        frames.extend([index] * int(g.consider.sum()))
    return items, np.asarray(ids), np.asarray(frames)


def auc(pos: NDArray[np.float32], neg: NDArray[np.float32]) -> float:
    """P(pos > neg) + 0.5 P(tie), by ranks (Mann-Whitney); nan when either side is empty."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))  # tied values share their mean rank: a tie counts half
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def cosine_stats(
    feats: NDArray[np.float32], ids: NDArray[np.int64], frames: NDArray[np.int64], near: int
) -> dict[str, float]:
    sim = feats @ feats.T
    iu = np.triu_indices(len(ids), 1)
    s = sim[iu]
    same_id = (ids[:, None] == ids[None, :])[iu]
    gap = np.abs(frames[:, None] - frames[None, :])[iu]
    same_frame = gap == 0
    pos, neg = s[same_id & ~same_frame], s[~same_id]
    pos_near, neg_frame = s[same_id & ~same_frame & (gap <= near)], s[~same_id & same_frame]
    other = np.where(frames[:, None] != frames[None, :], sim, -np.inf)
    rank1 = float((ids[other.argmax(axis=1)] == ids).mean())
    return {
        "same": float(pos.mean()),
        "diff": float(neg.mean()),
        "diff_same_frame": float(s[~same_id & same_frame].mean()),
        "gap": float(pos.mean() - neg.mean()),
        "auc": auc(pos, neg),
        "rank1": rank1,
        "same_near": float(pos_near.mean()) if len(pos_near) else float("nan"),
        "auc_near": auc(pos_near, neg_frame),
    }


def similarity(args: argparse.Namespace, runtime: RuntimeConfig) -> None:
    items, ids, frames = collect(args)
    print(f"cosine on {len(ids)} crops of {len(np.unique(ids))} people, {len(items)} frames")
    print(f"input     flip    same   diff diff@frame    gap    AUC rank-1  same<={args.near}f  AUC-near")
    for size in args.sizes:
        for flip in (False, True):
            cfg = EmbedderConfig(model=args.model, input_size=size, flip_average=flip)
            emb = OnnxEmbedder(cfg, runtime, args.models_dir)
            feats = np.concatenate([emb.embed(image, boxes) for image, boxes in items])
            st = cosine_stats(feats, ids, frames, args.near)
            print(
                f"{size[0]}x{size[1]:<5d} {flip!s:5s} {st['same']:6.3f} {st['diff']:6.3f} "
                f"{st['diff_same_frame']:10.3f} {st['gap']:6.3f} {st['auc']:6.3f} {st['rank1']:6.3f} "
                f"{st['same_near']:10.3f} {st['auc_near']:9.3f}",
                flush=True,
            )


def speed(args: argparse.Namespace, runtime: RuntimeConfig) -> None:
    items, _, _ = collect(args)
    crops = [c for image, boxes in items for c in crop_boxes(image, boxes)][: args.speed_crops]
    print(
        f"\nspeed on {len(crops)} crops, {args.repeats} repeats (wall ms per crop: median, p90; process CPU ms)"
    )
    for size in args.sizes:
        embs = {
            b: OnnxEmbedder(
                EmbedderConfig(model=args.model, input_size=size, batch_size=b), runtime, args.models_dir
            )
            for b in args.batches
        }
        for e in embs.values():
            e.embed_crops(crops[:4])  # warm-up
        times: dict[int, list[float]] = {b: [] for b in args.batches}
        cpu: dict[int, list[float]] = {b: [] for b in args.batches}
        for _ in range(args.repeats):
            for b, e in embs.items():
                c, t = time.process_time(), time.perf_counter()
                e.embed_crops(crops)
                times[b].append((time.perf_counter() - t) * 1000 / len(crops))
                cpu[b].append((time.process_time() - c) * 1000 / len(crops))
        for b, ts in times.items():
            print(
                f"{size[0]}x{size[1]:<5d} batch {b:3d}: {statistics.median(ts):6.2f} ms/crop "
                f"(p90 {float(np.percentile(ts, 90)):6.2f}; cpu {statistics.median(cpu[b]):6.2f} ms/crop)",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--gt", type=Path, default=GT)
    p.add_argument("--models-dir", type=Path, default=models_dir())
    p.add_argument("--model", default="mobilenetv2-imagenet")
    p.add_argument("--stride", type=positive_int, default=8)
    p.add_argument("--max-frames", type=frame_limit, default=0)
    p.add_argument("--near", type=positive_int, default=16, help="Frame gap of the 'near' same-person pairs.")
    p.add_argument("--sizes", type=parse_size, nargs="+", default=[(256, 128), (224, 224)])
    p.add_argument("--batches", type=positive_int, nargs="+", default=[1, 8, 16])
    p.add_argument("--speed-crops", type=positive_int, default=64)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--skip-similarity", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args(argv)
    runtime = cpu_runtime(p, args.threads)
    return run_parts(args, runtime, (args.skip_similarity, similarity), (args.skip_speed, speed))


if __name__ == "__main__":
    raise SystemExit(main())
