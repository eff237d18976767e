"""Shared helpers of the detector and embedder benchmarks: the PETS09-S2L1 clip and its ground truth."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError
from scipy.optimize import linear_sum_assignment

from daemon.cli import whole_number
from daemon.config import RuntimeConfig, env_models_dir
from daemon.detect import box_iou
from daemon.errors import DaemonError, DataError
from daemon.motio import read_ground_truth, rows_by_frame, xywh_to_xyxy
from daemon.shared_data import pets09_dir, shared_data_hint

REPO = Path(__file__).resolve().parents[1]
SHARED = pets09_dir(REPO)
"""The PETS09-S2L1 folder of the shared data ($REID_SHARED_DATA, else ../shared/data beside the clone), as the
tests find it."""
VIDEO = SHARED / "vtest.avi"
GT = SHARED / "gt" / "gt.txt"


def absent_hint(*paths: Path | None) -> str:
    """``"; "`` and where the shared data was looked for (and how to name it) when a file of ``paths`` (--video,
    --gt...) is absent, for the message that says so; "" when they are all there."""
    if all(p is None or p.is_file() for p in paths):
        return ""
    return f"; {shared_data_hint(REPO)}"


def models_dir() -> Path:
    """$REID_MODELS_DIR or the default cache."""
    return env_models_dir()


positive_int = whole_number(1)
"""argparse type of a count that must be 1 or more (a stride, repeats, a batch size, calls per repeat)."""
frame_limit = whole_number(0, "frames", zero="no limit")
"""argparse type of --max-frames: 0 (all) or more."""


def cpu_runtime(parser: argparse.ArgumentParser, threads: int) -> RuntimeConfig:
    """onnxruntime on the CPU with ``threads`` intra-op threads (--threads); a value RuntimeConfig refuses is a
    usage error."""
    try:
        return RuntimeConfig(intra_op_threads=threads, providers=("CPUExecutionProvider",))
    except ValidationError as e:
        parser.error("; ".join(f"--threads: {err['msg']}" for err in e.errors()))


Part = Callable[[argparse.Namespace, RuntimeConfig], None]
"""One table of a benchmark (detector_sweep's accuracy, embedder_bench's speed...)."""


def run_parts(args: argparse.Namespace, runtime: RuntimeConfig, *parts: tuple[bool, Part]) -> int:
    """Run each ``(skipped, part)`` not skipped, in order; 0. A model absent or broken ends the script with its
    message, which says what to do (exit 1)."""
    try:
        for skipped, part in parts:
            if not skipped:
                part(args, runtime)
    except DaemonError as e:
        raise SystemExit(f"error: {e}") from e
    return 0


@dataclass(frozen=True)
class GtFrame:
    """Ground truth of one frame: ids, xyxy boxes, and whether each row counts (consider=1)."""

    ids: NDArray[np.int64]
    xyxy: NDArray[np.float32]
    consider: NDArray[np.bool_]


def load_gt(path: Path = GT) -> dict[int, GtFrame]:
    """gt.txt (frame,id,x,y,w,h,consider,...; 1-based frames) -> 0-based frame index -> GtFrame.

    Read and checked by daemon.motio: a missing or malformed file ends the script with the reason (exit 1)."""
    try:
        gt = read_ground_truth(path)
    except DataError as e:
        raise SystemExit(f"error: {e}{absent_hint(path)}") from e
    by_frame = rows_by_frame(gt.frame)
    return {
        f - 1: GtFrame(gt.track_id[rows], xywh_to_xyxy(gt.xywh[rows]), gt.consider[rows])
        for f, rows in sorted(by_frame.items())
    }


def read_frames(
    video: Path = VIDEO, stride: int = 1, max_frames: int = 0
) -> list[tuple[int, NDArray[np.uint8]]]:
    """(0-based index, BGR image) of every ``stride``-th frame, at most ``max_frames`` (0 = all)."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {video}{absent_hint(video)}")
    frames: list[tuple[int, NDArray[np.uint8]]] = []
    index = 0
    while True:
        ok, image = cap.read()
        if not ok or (max_frames and len(frames) >= max_frames):
            break
        if index % stride == 0:
            frames.append((index, image))
        index += 1
    cap.release()
    return frames


def match_counts(dets: NDArray[np.float32], gt: GtFrame | None, iou: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, misses) against the consider=1 boxes, one-to-one at IoU >= iou.

    A detection left unmatched that overlaps a consider=0 box at IoU >= iou is ignored (neither TP nor FP).
    """
    if gt is None:
        return 0, len(dets), 0
    care, ignore = gt.xyxy[gt.consider], gt.xyxy[~gt.consider]
    matched = np.zeros(len(dets), dtype=bool)
    tp = 0
    if len(dets) and len(care):
        m = box_iou(dets, care)
        r, c = linear_sum_assignment(-m)
        good = m[r, c] >= iou
        matched[r[good]] = True
        tp = int(good.sum())
    rest = ~matched
    if rest.any() and len(ignore):
        rest &= ~(box_iou(dets, ignore) >= iou).any(axis=1)
    return tp, int(rest.sum()), len(care) - tp
