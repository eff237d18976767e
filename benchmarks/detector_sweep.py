"""SSDLite on PETS09-S2L1: accuracy per tiling / score threshold / merge rule, and per-frame latency.

    python benchmarks/detector_sweep.py [--stride 8] [--timing-frames 30] [--repeats 3]

Accuracy: recall / precision at IoU 0.5 against gt rows with consider=1 (every --stride-th frame). The model
runs once per frame and tiling; thresholds and merge rules are applied to the same raw outputs.
Latency: median (and p90) of per-frame ``detect()`` wall time over --timing-frames frames x --repeats, with the
batched and the looped pass run interleaved so that load from other processes hits both alike; "cpu" is the
process CPU time per frame (all threads), which other processes on a shared machine disturb much less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pets_clip import (
    GT,
    VIDEO,
    cpu_runtime,
    frame_limit,
    load_gt,
    match_counts,
    models_dir,
    positive_int,
    read_frames,
    run_parts,
)

from daemon.config import RuntimeConfig, SSDLiteDetectorConfig
from daemon.detect import SSDLiteDetector
from daemon.types import Frame

TILINGS = ((1, 1), (2, 1), (3, 2))
THRESHOLDS = (0.1, 0.2, 0.3)


def tiling_name(t: tuple[int, int]) -> str:
    return "full" if t == (1, 1) else f"full+{t[0]}x{t[1]}"


def accuracy(args: argparse.Namespace, runtime: RuntimeConfig) -> None:
    gt = load_gt(args.gt)
    frames = read_frames(args.video, args.stride, args.max_frames)
    print(f"accuracy on {len(frames)} frames (every {args.stride}th), IoU 0.5, gt consider=1")
    print("passes       merge     score>=  recall precision    TP    FP    FN")
    for tiling in TILINGS:
        det = SSDLiteDetector(
            SSDLiteDetectorConfig(tiles=tiling, score_threshold=0.0), runtime, args.models_dir
        )
        raw = []
        for _, image in frames:
            h, w = image.shape[:2]
            windows = det.windows(w, h)
            raw.append((det.infer(image, windows), windows, w, h))
        merges = ("cut-drop", "nms-only") if tiling != (1, 1) else ("nms-only",)
        for merge in merges:
            det.merge_cut_boxes = merge == "cut-drop"
            for thr in THRESHOLDS:
                det.cfg = det.cfg.model_copy(update={"score_threshold": thr})
                tp = fp = fn = 0
                for (index, _), ((num, sc, bx), windows, w, h) in zip(frames, raw, strict=True):
                    d = det.postprocess(num, sc, bx, windows, w, h)
                    a, b, c = match_counts(d.xyxy, gt.get(index))
                    tp, fp, fn = tp + a, fp + b, fn + c
                rec, prec = tp / max(tp + fn, 1), tp / max(tp + fp, 1)
                row = f"{tiling_name(tiling):12s} {merge:9s} {thr:7.1f} {rec:7.3f} {prec:9.3f}"
                print(f"{row} {tp:5d} {fp:5d} {fn:5d}", flush=True)


def latency(args: argparse.Namespace, runtime: RuntimeConfig) -> None:
    frames = read_frames(args.video, 1, args.timing_frames)
    print(
        f"\nlatency per frame (ms), {len(frames)} frames x {args.repeats} repeats, onnxruntime threads "
        f"{runtime.intra_op_threads or 'default'}, spinning {runtime.allow_spinning}"
    )
    print("passes       mode      median     p90  cpu/frame")
    for tiling in TILINGS:
        det = SSDLiteDetector(SSDLiteDetectorConfig(tiles=tiling), runtime, args.models_dir)
        modes = (True, False) if tiling != (1, 1) and det.batched else (det.batched,)
        times: dict[bool, list[float]] = {m: [] for m in modes}
        cpu: dict[bool, list[float]] = {m: [] for m in modes}
        for _ in range(args.repeats):
            for i, image in frames:
                for mode in modes:
                    det.batched = mode
                    c, t = time.process_time(), time.perf_counter()
                    det.detect(Frame(i, 0.0, image))
                    times[mode].append((time.perf_counter() - t) * 1000)
                    cpu[mode].append((time.process_time() - c) * 1000)
        for mode in modes:
            ts = times[mode]
            p90 = float(np.percentile(ts, 90))
            name = "batched" if mode else "looped"
            row = f"{tiling_name(tiling):12s} {name:8s} {statistics.median(ts):7.1f} {p90:7.1f}"
            print(f"{row} {statistics.median(cpu[mode]):10.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--gt", type=Path, default=GT)
    p.add_argument("--models-dir", type=Path, default=models_dir())
    p.add_argument("--stride", type=positive_int, default=8, help="Accuracy on every Nth frame.")
    p.add_argument(
        "--max-frames", type=frame_limit, default=0, help="Stop reading after this many kept frames."
    )
    p.add_argument("--timing-frames", type=positive_int, default=30)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = default).")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    args = p.parse_args(argv)
    runtime = cpu_runtime(p, args.threads)
    return run_parts(args, runtime, (args.skip_accuracy, accuracy), (args.skip_latency, latency))


if __name__ == "__main__":
    raise SystemExit(main())
