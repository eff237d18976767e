"""An mp4v copy of a clip, for the live soak's RTSP server: every frame, at the clip's size and frame rate.

    .venv/bin/python benchmarks/mp4v_copy.py runs/pets.mp4     # PETS09-S2L1's vtest.avi: 795 frames, 10 fps
    .venv/bin/python benchmarks/mp4v_copy.py --video CLIP OUT.mp4

tests/rtsp_server.py sends an mp4 as it is (no re-encoding), and GStreamer from Debian can neither send nor
decode the MS-MPEG4 v3 of vtest.avi; this re-encodes it with OpenCV's mp4v writer (what the daemon's annotated
video and ``reid-daemon scenario build`` write) at the rate its container gives (``--fps`` for another), and
prints the frames, size and rate written. The copy takes its name once whole; one whose frame count differs
from the frames read is an error (exit code 1).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2

from daemon.embedding import temp_name
from daemon.outputs import mp4v_fps
from daemon.shared_data import pets09_dir, shared_data_hint

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="The mp4 file to write (replaced if there).")
    p.add_argument(
        "--video",
        type=Path,
        default=pets09_dir(ROOT) / "vtest.avi",
        help="Clip to copy (default: PETS09-S2L1's in the shared data: $REID_SHARED_DATA, else ../shared/data "
        "beside the clone).",
    )
    p.add_argument("--fps", type=float, help="Frame rate of the copy (default: the clip's container's).")
    args = p.parse_args(argv)
    if args.fps is not None and not 0 < args.fps <= 1000:  # NaN too
        p.error(f"--fps must be above 0 and at most 1000, not {args.fps}")
    if args.out.suffix.lower() != ".mp4":
        p.error(f"{args.out}: the copy is an mp4 file: give a name ending in .mp4")
    return args


def copy(video: Path, out: Path, fps: float | None) -> tuple[int, tuple[int, int], float]:
    """Write every frame of ``video`` to ``out`` (mp4v) at ``fps`` or its own rate; (frames, size, rate)."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"mp4v_copy: cannot open {video}")
    try:
        rate = fps or cap.get(cv2.CAP_PROP_FPS)
        if not rate > 0:  # NaN too
            raise SystemExit(f"mp4v_copy: {video} gives no frame rate: name one with --fps")
        rate = mp4v_fps(rate)
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        tmp = temp_name(out, out.suffix)
        try:
            frames = _write(cap, tmp, size, rate)
            if frames == 0:
                raise SystemExit(f"mp4v_copy: no frame could be read from {video}")
            _check(tmp, frames)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        cap.release()
    return frames, size, rate


def _write(cap: cv2.VideoCapture, path: Path, size: tuple[int, int], rate: float) -> int:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), rate, size)
    if not writer.isOpened():
        raise SystemExit(f"mp4v_copy: cannot write {path} (mp4v, {size[0]}x{size[1]})")
    frames = 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                return frames
            writer.write(image)
            frames += 1
    finally:
        writer.release()


def _check(path: Path, frames: int) -> None:
    back = cv2.VideoCapture(str(path))
    written = int(back.get(cv2.CAP_PROP_FRAME_COUNT))
    back.release()
    if written != frames:
        raise SystemExit(f"mp4v_copy: {frames} frames read, but the copy holds {written}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.video.is_file():
        raise SystemExit(f"mp4v_copy: --video {args.video} not found; {shared_data_hint(ROOT)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frames, (w, h), rate = copy(args.video, args.out, args.fps)
    print(f"{args.out}: {frames} frames of {w}x{h} at {rate:g} fps (mp4v), from {args.video}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
