"""Peer pipeline: Ultralytics' own tracking, ``YOLO(...).track(...)`` with BoT-SORT and ReID (one run).

Runs inside the ultralytics venv (``.venv-ultra``), so it imports only ultralytics, torch, numpy and cv2, never
reid-daemon's ``daemon`` package. Run by ``compare_peers.py``::

    .venv-ultra/bin/python benchmarks/_peer_ultralytics.py --video V --out DIR --weights yolov8s_person.pt
        [--frames N] [--threads 2] [--imgsz 640]

The caller sets YOLO_OFFLINE=1, YOLO_AUTOINSTALL=False and YOLO_CONFIG_DIR (ultralytics otherwise looks things
up on the network and may pip-install). The tracker config is Ultralytics' own ``cfg/trackers/botsort.yaml``
copied with ``with_reid: True`` and ``model: auto`` (appearance features pooled from the detector's own feature
maps, no second network). Both classes of the YOLOv8s person model are a person, so ``classes=None``.
Writes ``DIR/results.txt`` (MOTChallenge, 1-based frames) and ``DIR/timing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import IO, Any

REQUIRED_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
TRACKER_OVERRIDES = {"with_reid": "True", "model": "auto"}


def tracker_config(out: Path) -> Path:
    """Ultralytics' botsort.yaml, copied into ``out`` with ReID switched on (comments kept)."""
    import ultralytics

    text = (Path(ultralytics.__file__).parent / "cfg" / "trackers" / "botsort.yaml").read_text(
        encoding="utf-8"
    )
    for key, value in TRACKER_OVERRIDES.items():
        text, n = re.subn(rf"^{key}:[^#\n]*", f"{key}: {value} ", text, count=1, flags=re.MULTILINE)
        if n != 1:
            raise SystemExit(f"ultralytics' botsort.yaml has no top-level {key!r} line")
    path = out / "botsort_reid.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def read_tracker_config(path: Path) -> dict[str, Any]:
    from ultralytics.utils import YAML

    return dict(YAML.load(str(path)))


class StageClock:
    """Per-frame stage times from the predictor's callbacks (batch 1, so one frame per batch).

    The clock starts at the first batch, so opening the video and creating the tracker (done by the generator
    before its first frame, after our loop has started) count as set-up, like model loading.
    decode: previous batch end -> this batch start (reading the next frame, plus the consumer's MOT write);
    detect: batch start -> before the tracker (preprocess, YOLO forward incl. the ReID feature hook, NMS);
    track: the tracker callback (ReID feature pooling, GMC, association).
    """

    def __init__(self) -> None:
        self.sums = {"decode": 0.0, "detect": 0.0, "track": 0.0}
        self.marks = {"end": 0.0, "start": 0.0, "pre": 0.0}
        self.threads_seen: int | None = None
        self.first_start: float | None = None

    def attach(self, predictor: Any) -> None:
        cbs = predictor.callbacks
        cbs["on_predict_batch_start"].append(self._batch_start)
        cbs["on_predict_postprocess_end"].insert(0, self._before_track)
        cbs["on_predict_postprocess_end"].append(self._after_track)
        cbs["on_predict_batch_end"].append(self._batch_end)

    def _batch_start(self, predictor: Any) -> None:
        import torch

        now = time.perf_counter()
        if self.first_start is None:
            self.first_start = self.marks["end"] = now
            self.threads_seen = torch.get_num_threads()
        self.sums["decode"] += now - self.marks["end"]
        self.marks["start"] = now

    def _before_track(self, predictor: Any) -> None:
        now = time.perf_counter()
        self.sums["detect"] += now - self.marks["start"]
        self.marks["pre"] = now

    def _after_track(self, predictor: Any) -> None:
        self.sums["track"] += time.perf_counter() - self.marks["pre"]

    def _batch_end(self, predictor: Any) -> None:
        self.marks["end"] = time.perf_counter()


def write_result(fh: IO[str], mot_frame: int, result: Any) -> int:
    """One Ultralytics Results -> MOTChallenge lines (only boxes with a track id)."""
    boxes = result.boxes
    if boxes is None or boxes.id is None:
        return 0
    xyxy = boxes.xyxy.cpu().numpy()
    ids = boxes.id.int().cpu().numpy()
    conf = boxes.conf.cpu().numpy()
    for (x1, y1, x2, y2), tid, score in zip(xyxy, ids, conf, strict=True):
        fh.write(
            f"{mot_frame},{int(tid)},{x1:.3f},{y1:.3f},{x2 - x1:.3f},{y2 - y1:.3f},{score:.6g},-1,-1,-1\n"
        )
    return len(ids)


def run_stream(args: argparse.Namespace, model: Any, tracker_yaml: Path, clock: StageClock) -> dict[str, Any]:
    import torch

    stream = model.track(
        source=str(args.video),
        tracker=str(tracker_yaml),
        stream=True,
        classes=None,
        imgsz=args.imgsz,
        verbose=False,
        persist=True,
    )
    # track() has set the predictor up, and select_device() reset torch to cores-1 threads; set ours now.
    torch.set_num_threads(args.threads)
    clock.attach(model.predictor)
    frames = rows = 0
    with (args.out / "results.txt").open("w", encoding="utf-8") as fh:
        start = time.perf_counter()
        for result in stream:
            frames += 1
            rows += write_result(fh, frames, result)
            if args.frames and frames >= args.frames:
                break
        end = time.perf_counter()
    stream.close()
    first = clock.first_start if clock.first_start is not None else end
    return {"frames": frames, "seconds": end - first, "setup_seconds": first - start, "rows": rows}


def timing_record(loop: dict[str, Any], clock: StageClock, settings: dict[str, Any]) -> dict[str, Any]:
    n = max(loop["frames"], 1)
    return {
        "frames": loop["frames"],
        "seconds": round(loop["seconds"], 3),
        "fps": round(loop["frames"] / max(loop["seconds"], 1e-9), 3),
        "stage_ms_per_frame": {k: round(1000 * v / n, 2) for k, v in clock.sums.items()},
        "result_rows": loop["rows"],
        "setup_seconds": round(loop["setup_seconds"], 3),
        "peak_rss_mib_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "settings": {**settings, "torch_threads_seen": clock.threads_seen},
    }


def settings_of(args: argparse.Namespace, tracker_yaml: Path) -> dict[str, Any]:
    import torch
    import ultralytics

    return {
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "weights": str(args.weights),
        "imgsz": args.imgsz,
        "classes": None,
        "conf": "0.1 (track() default)",
        "torch_threads": args.threads,
        "tracker_config": read_tracker_config(tracker_yaml),
        "env": {k: os.environ.get(k) for k in (*REQUIRED_ENV, "YOLO_CONFIG_DIR")},
    }


def check_env() -> None:
    wrong = {k: os.environ.get(k) for k, v in REQUIRED_ENV.items() if os.environ.get(k) != v}
    if wrong or not os.environ.get("YOLO_CONFIG_DIR"):
        raise SystemExit(f"set {REQUIRED_ENV} and YOLO_CONFIG_DIR before running (got {wrong})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="Folder for results.txt and timing.json.")
    p.add_argument("--weights", type=Path, required=True, help="The yolov8s-person-pt preset's .pt file.")
    p.add_argument("--frames", type=int, default=0, help="Stop after this many frames (0 = all).")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads.")
    p.add_argument("--imgsz", type=int, default=640)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_env()
    args.out.mkdir(parents=True, exist_ok=True)
    from ultralytics import YOLO

    tracker_yaml = tracker_config(args.out)
    model = YOLO(str(args.weights), task="detect")
    clock = StageClock()
    loop = run_stream(args, model, tracker_yaml, clock)
    record = timing_record(loop, clock, settings_of(args, tracker_yaml))
    (args.out / "timing.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        f"ultralytics: {record['frames']} frames, {record['fps']:.2f} FPS, ms/frame {record['stage_ms_per_frame']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
