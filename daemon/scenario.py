"""Multi-camera replays built from one real view: each camera sees a region of the source video, changed.

Only one real camera view is at hand (PETS09-S2L1), so a fleet is simulated from it, deterministically:

* ``region`` (x0, y0, x1, y1 in source pixels) is what the camera sees: regions may overlap (two cameras see
  the same spot at the same time) or be disjoint (a person walks out of one view into the next). A scenario
  with a ``frame_size`` (the presets: PETS09-S2L1's 768x576) has its regions scaled to a video of another size,
  and the fleet config's settings in pixels (``identity.site_radius``, ``site_speed``, ``quality_full_height_px``)
  with the square root of its area (people taken to scale with the frame);
* photometric changes: ``gamma``, per-channel ``gains`` (a colour cast, B, G, R), Gaussian ``blur`` (sigma in
  output pixels), JPEG re-encoding at ``jpeg_quality``; geometric: ``scale`` of the output (a side that would be
  over the 8190 px mp4v encodes is scaled down to fit, aspect kept);
* time: ``step`` keeps every Nth source frame (a lower frame rate); ``delay`` frames of black open the video, so
  everything happens ``delay`` source frames later than in the source (a view further down a corridor).
  Camera frame k shows source frame ``k * step - delay`` (black while that is negative). A scenario built on a
  source of another real frame rate (``--fps``) has its delays scaled to last as many seconds
  (``at_frame_rate``), and one on a video of another size its regions scaled to it (``fit_to``); both say so
  at the end of the description, and ``scenario.json``'s views give the exact numbers.

The ground truth goes with it: source rows of the frames a camera shows, boxes clipped to its region, moved and
scaled into its pixels. A box with less than ``min_visible`` of its area inside the region (or smaller than
``min_box_px`` after scaling) is kept with consider=0, so boxes on it are neither rewarded nor punished.
The source's person ids are kept: they are the fleet-wide (global) identities. Boxes wholly outside the
source's frames (a truth of the video at another size) are warned about.

``build`` writes ``<camera>.mp4`` (mp4v), ``<camera>.gt.txt`` (MOT ground truth), ``scenario.json`` (this
description, the source file's sha256 and per-camera counts), ``fleet.yaml`` (a config running the cameras) and
``fleet.gt-boxes.yaml`` (the same cameras on their true boxes, to score identity resolution without detector
errors), and ``fleet.true-looks.yaml`` / ``fleet.gt-boxes.true-looks.yaml``: the same two with looks made from
the ground truth in place of the embedder (embedder type 'ground-truth', daemon/oracle_embed.py; two looks of one
person ``TRUE_LOOKS_SIMILARITY`` apart), which score the trackers and the resolver as if the cameras ran a
ReID-trained embedder (none can be fetched offline). Without ground truth it writes ``fleet.yaml`` alone (no
``.gt.txt``, none of the other three configs), and deletes those an earlier build left in the folder.
A camera's rate that MPEG-4 cannot time (133.334 fps) is written to the hundredth (``mp4v_fps``, as the annotated
video), and ``fleet.yaml`` gives it the exact rate (``source.fps``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from daemon.config import MAX_TILES, IdentityConfig
from daemon.errors import DataError, SourceError
from daemon.models import sha256_file
from daemon.motio import (
    MotGroundTruth,
    read_sequence_truth,
    write_ground_truth,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from daemon.outputs import MAX_VIDEO_SIDE, mp4v_fps, mpeg4_size
from daemon.sources import (
    NotVideoAdvice,
    check_video_path,
    counted_frames,
    list_images,
    no_first_frame,
    not_found,
    why_unopened,
)
from daemon.types import ImageBGR

FloatArray = NDArray[np.float64]

log = logging.getLogger(__name__)


MIN_SIDE = 16
"""Pixels a view's region, and its picture (region x scale), have at least on each side."""


class ViewConfig(BaseModel):
    """One simulated camera: which part of the source it sees and how its picture differs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Camera name.")
    region: tuple[int, int, int, int] = Field(description="x0, y0, x1, y1 of the source the camera sees.")
    scale: float = Field(
        1.0,
        ge=0.25,
        le=4.0,
        description="Output size = region size x scale (at least 16 px a side; scaled down, aspect kept, to "
        "sides of 8190 px at most: what mp4v encodes).",
    )
    gamma: float = Field(1.0, ge=0.2, le=5.0, description="Gamma applied to [0, 1] intensities (>1: darker).")
    gains: tuple[float, float, float] = Field(
        (1.0, 1.0, 1.0), description="B, G, R multipliers (colour cast)."
    )
    blur: float = Field(0.0, ge=0.0, le=10.0, description="Gaussian blur sigma in output pixels (0: none).")
    jpeg_quality: int | None = Field(
        None, ge=5, le=100, description="Re-encode each frame as JPEG (null: no)."
    )
    step: int = Field(1, ge=1, le=10, description="Keep every Nth source frame (frame-rate drop).")
    delay: int = Field(0, ge=0, le=10_000, description="Source frames of black before the view starts.")
    min_visible: float = Field(0.5, gt=0.0, le=1.0, description="Visible area fraction to count a person.")
    min_box_px: float = Field(8.0, ge=0.0, le=100.0, description="Smaller boxes (output px) are ignored.")

    @model_validator(mode="after")
    def _region_ok(self) -> ViewConfig:
        x0, y0, x1, y1 = self.region
        if x0 < 0 or y0 < 0 or x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
            raise ValueError(
                f"region {self.region} must be x0,y0 >= 0 and at least {MIN_SIDE} px wide and high"
            )
        if any(not 0.05 <= g <= 5.0 for g in self.gains):
            raise ValueError(f"gains {self.gains} must each be in [0.05, 5]")
        w, h = (x1 - x0) * self.scale, (y1 - y0) * self.scale
        if round(w) < MIN_SIDE or round(h) < MIN_SIDE:
            raise ValueError(
                f"region {self.region} at scale {self.scale:g} is a {w:g}x{h:g} picture: its sides must be at "
                f"least {MIN_SIDE} px (a larger scale or region)"
            )
        return self

    def output_size(self) -> tuple[int, int]:
        """(width, height) of the camera's frames: ``scaled_size``, scaled down to fit mp4v (``mpeg4_size``)."""
        return mpeg4_size(*self.scaled_size())

    def scaled_size(self) -> tuple[int, int]:
        """(width, height) of the region at ``scale``."""
        x0, y0, x1, y1 = self.region
        return round((x1 - x0) * self.scale), round((y1 - y0) * self.scale)

    def source_frame(self, k: int) -> int:
        """0-based source frame shown as camera frame ``k`` (negative: black)."""
        return k * self.step - self.delay

    def frame_rate(self, source_fps: float) -> float:
        """The camera's real frame rate over a source of ``source_fps``."""
        return source_fps / self.step


class ScenarioConfig(BaseModel):
    """A fleet of simulated cameras over one source video."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="Scenario name.")
    description: str = Field("", max_length=2000, description="What it tests, in words.")
    frame_rate: float = Field(
        7.0, gt=0, le=240, allow_inf_nan=False, description="The source's real frame rate."
    )
    frame_size: tuple[int, int] | None = Field(
        None,
        description="(width, height) of the source the regions are drawn on; a video of another size gets them "
        "scaled to its own (null: regions are the video's own pixels).",
    )
    views: tuple[ViewConfig, ...] = Field(min_length=1, max_length=64, description="The cameras.")

    @model_validator(mode="after")
    def _unique_names(self) -> ScenarioConfig:
        names = [v.name for v in self.views]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names repeat: {names}")
        return self

    @model_validator(mode="after")
    def _regions_in_frame(self) -> ScenarioConfig:
        if self.frame_size is None:
            return self
        w, h = self.frame_size
        if w < 16 or h < 16:
            raise ValueError(f"frame_size {w}x{h} must be at least 16 px wide and high")
        for v in self.views:
            if v.region[2] > w or v.region[3] > h:
                raise ValueError(f"camera {v.name}'s region {v.region} reaches past the frame_size {w}x{h}")
        return self


# PETS09-S2L1 is 768x576; people walk over the whole lower two thirds of it. The presets' regions are drawn on
# it; on a video of another size they are scaled to it (fit_to).
PETS09_SIZE = (768, 576)
PRESETS: dict[str, ScenarioConfig] = {
    "pets09-2cam-overlap": ScenarioConfig(
        name="pets09-2cam-overlap",
        frame_size=PETS09_SIZE,
        description="Two cameras, left and right part of the view, overlapping by 128 px (the same person can "
        "be on both at once). Camera b is darker, warmer, blurred and JPEG-compressed at quality 50.",
        views=(
            ViewConfig(name="a", region=(0, 0, 448, 576)),
            ViewConfig(
                name="b",
                region=(320, 0, 768, 576),
                gamma=1.4,
                gains=(0.85, 1.0, 1.15),
                blur=1.0,
                jpeg_quality=50,
            ),
        ),
    ),
    "pets09-3cam-handover": ScenarioConfig(
        name="pets09-3cam-handover",
        frame_size=PETS09_SIZE,
        description="Three disjoint vertical strips (0-256, 256-512, 512-768 px): people walk from one view into "
        "the next. Camera b runs 14 source frames (2 s) late and at 0.8x scale; camera c runs at half the frame "
        "rate, brighter and bluer, JPEG quality 40.",
        views=(
            ViewConfig(name="a", region=(0, 0, 256, 576)),
            ViewConfig(name="b", region=(256, 0, 512, 576), delay=14, scale=0.8, blur=0.8),
            ViewConfig(
                name="c", region=(512, 0, 768, 576), step=2, gamma=0.8, gains=(1.2, 1.0, 0.9), jpeg_quality=40
            ),
        ),
    ),
    # The check scenario: built after every resolver rule and setting had been chosen on the two above, and
    # not tuned on since (benchmarks/RESULTS.md, "A scenario nothing was tuned on").
    "pets09-4cam-grid": ScenarioConfig(
        name="pets09-4cam-grid",
        frame_size=PETS09_SIZE,
        description="Four cameras in a 2x2 grid over the view; neighbours overlap by 64 px across (x 352-416) "
        "and 80 px down (y 224-304), so a person is seen by one to four cameras and walks from view to view in "
        "both directions. The top views cut people's legs off at their bottom edge. a is clean; b is 0.75x "
        "scale, brighter, bluer and blurred; c runs 7 source frames (1 s) late, darker, JPEG quality 60; d runs "
        "at half the frame rate, warmer, slightly blurred, JPEG quality 45.",
        views=(
            ViewConfig(name="a", region=(0, 0, 416, 304)),
            ViewConfig(
                name="b", region=(352, 0, 768, 304), scale=0.75, gamma=0.85, gains=(1.15, 1.0, 0.9), blur=0.6
            ),
            ViewConfig(name="c", region=(0, 224, 416, 576), delay=7, gamma=1.25, jpeg_quality=60),
            ViewConfig(
                name="d",
                region=(352, 224, 768, 576),
                step=2,
                gains=(0.9, 1.0, 1.15),
                blur=0.5,
                jpeg_quality=45,
            ),
        ),
    ),
}


# --------------------------------------------------------------------------------------------- pictures


def photometric(image: ImageBGR, view: ViewConfig) -> ImageBGR:
    """The view's gamma, colour gains, blur and JPEG round trip applied to an output-sized image (a new one)."""
    x = image.astype(np.float32) / 255.0
    if view.gamma != 1.0:
        x = np.power(x, view.gamma)
    out: ImageBGR = np.clip(x * np.asarray(view.gains, np.float32) * 255.0, 0, 255).astype(np.uint8)
    if view.blur > 0:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), view.blur), dtype=np.uint8)
    if view.jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, view.jpeg_quality])
        if not ok:
            raise DataError("JPEG encoding failed")
        out = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), dtype=np.uint8)
    return np.ascontiguousarray(out)


def check_region(view: ViewConfig, size: tuple[int, int]) -> None:
    """DataError when the view's region reaches past a source of ``size`` (width, height)."""
    if view.region[2] > size[0] or view.region[3] > size[1]:
        raise DataError(f"camera {view.name}: region {view.region} is outside the {size[0]}x{size[1]} source")


def render(source: ImageBGR | None, view: ViewConfig) -> ImageBGR:
    """Camera picture of one source frame (None: black)."""
    w, h = view.output_size()
    if source is None:
        return np.zeros((h, w, 3), np.uint8)
    check_region(view, (source.shape[1], source.shape[0]))
    x0, y0, x1, y1 = view.region
    crop = source[y0:y1, x0:x1]
    resized = np.asarray(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return photometric(resized, view)


# ------------------------------------------------------------------------------------------ ground truth


def view_ground_truth(gt: MotGroundTruth, view: ViewConfig, frames: int) -> MotGroundTruth:
    """The ground truth of a camera's first ``frames`` frames, in its pixels (see the module doc)."""
    parts: list[MotGroundTruth] = []
    by_frame = {f: np.flatnonzero(gt.frame == f) for f in np.unique(gt.frame)}
    for k in range(frames):
        src = view.source_frame(k)
        rows = by_frame.get(src + 1)  # MOT frames are 1-based
        if src < 0 or rows is None or rows.size == 0:
            continue
        xyxy, visible = _into_view(xywh_to_xyxy(gt.xywh[rows]).astype(np.float64), view)
        keep = visible > 0
        if not keep.any():
            continue
        wh = xyxy[:, 2:] - xyxy[:, :2]
        consider = gt.consider[rows] & (visible >= view.min_visible) & (wh >= view.min_box_px).all(axis=1)
        n = int(keep.sum())
        parts.append(
            MotGroundTruth(
                np.full(n, k + 1, np.int64),
                gt.track_id[rows][keep],
                xyxy_to_xywh(xyxy[keep]),
                consider[keep],
                _view_distractors(gt, rows, consider)[keep] if gt.distractor is not None else None,
            )
        )
    return MotGroundTruth.joined(parts)


def _view_distractors(
    gt: MotGroundTruth, rows: NDArray[np.intp], consider: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """The distractors of a view's rows (a gt with classes): the source's, and the people the view shows too
    little of to be scored (ignored regions, as every row not considered is in a gt without classes)."""
    return gt.distractors()[rows] | (gt.consider[rows] & ~consider)


def _into_view(xyxy: FloatArray, view: ViewConfig) -> tuple[FloatArray, FloatArray]:
    """Boxes clipped to what the camera's video shows and mapped to its pixels, and the visible fraction of each."""
    x0, y0, x1, y1 = (float(v) for v in view.region)
    w, h = view.output_size()
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    ww, wh = written_size((w, h))  # the region less an odd last column/row the writer cuts
    xe, ye = x0 + ww / sx, y0 + wh / sy
    clipped = np.column_stack(
        [
            np.clip(xyxy[:, 0], x0, xe),
            np.clip(xyxy[:, 1], y0, ye),
            np.clip(xyxy[:, 2], x0, xe),
            np.clip(xyxy[:, 3], y0, ye),
        ]
    )
    area = np.prod(np.maximum(xyxy[:, 2:] - xyxy[:, :2], 0), axis=1)
    inside = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0), axis=1)
    visible = np.where(area > 0, inside / np.maximum(area, 1e-9), 0.0)
    out = (clipped - np.array([x0, y0, x0, y0])) * np.array([sx, sy, sx, sy])
    return out, visible


# ----------------------------------------------------------------------------------------------- build


@dataclass(frozen=True)
class ScenarioFiles:
    """What ``build`` wrote."""

    folder: Path
    videos: dict[str, Path]
    ground_truth: dict[str, Path]
    description: Path
    fleet_config: Path
    frame_rate: float  # the source's real rate the cameras replay it at (the scenario's frame_rate)
    container_fps: float | None  # the rate the source's container gives (None: none)


# what a scenario's source that is no video is told (it takes neither a stream nor a folder)
_NOT_VIDEO = NotVideoAdvice(pipe=": give a video file", text=" (ground truth goes to --gt)", still="")


def _probe(video: Path, limit: int = 0) -> tuple[int, float | None, tuple[int, int]]:
    """Frames the source decodes to, at most ``limit`` when > 0 (counted by decoding: container counts lie),
    the frame rate its container gives (None: none) and its frames' (width, height)."""
    if video.is_dir():
        raise SourceError(_folder_given(video))
    if not video.exists():
        raise not_found("video file", video)
    check_video_path(video, _NOT_VIDEO)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SourceError(f"cannot open the scenario source video {video}: {why_unopened(str(video))}")
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        ok, first = cap.read()
        if not ok or first is None:
            raise SourceError(f"{video}: {no_first_frame(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))}")
        announced = counted_frames(cap, video) or 0  # as a run counts them
        n = 1
        while (limit <= 0 or n < limit) and cap.grab():
            n += 1
    finally:
        cap.release()
    if (limit <= 0 or n < limit) and announced > n + 1:  # a frame short is a container's rounding
        log.warning(
            "%s decodes to %d frames, its container announces %d: cut short or damaged?", video, n, announced
        )
    return n, fps if fps > 0 else None, (first.shape[1], first.shape[0])


def _check_truth_size(path: Path, gt: MotGroundTruth, size: tuple[int, int]) -> None:
    """A warning when boxes of the ground truth lie wholly outside the source's frames (``size``: width,
    height): a truth of the video at another size (annotated before it was resized) is cut into the views at
    the wrong places, each camera's truth then showing people where they are not, or no one."""
    w, h = size
    x, y, bw, bh = gt.xywh.T
    outside = (x >= w) | (y >= h) | (x + bw <= 0) | (y + bh <= 0)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        log.warning(
            "%d of %d boxes of %s lie wholly outside the video's %dx%d frames (the first: frame %d, id %d): is it "
            "the ground truth of the video at another size? The cameras' truths are cut from it as it is",
            int(outside.sum()),
            len(gt),
            path,
            w,
            h,
            int(gt.frame[first]),
            int(gt.track_id[first]),
        )


def _folder_given(folder: Path) -> str:
    """Why a folder is not a scenario's source (``run`` takes a folder of images, ``scenario build`` does not),
    and, when it holds images, how to join them into a video."""
    images = list_images(folder)
    if not images:
        return f"{folder} is a folder, not a video: scenario build cuts its cameras out of one video file"
    kind = Counter(p.suffix for p in images).most_common(1)[0][0]
    pattern = shlex.quote(f"{folder}/*{kind}")
    return (
        f"{folder} is a folder of {len(images)} images, not a video: scenario build cuts its cameras out of one "
        f"video file; join the images into one first (ffmpeg -framerate FPS -pattern_type glob -i {pattern} "
        "video.mp4)"
    )


def _keep_sources(sources: list[Path], outputs: list[Path]) -> None:
    """DataError when the build would write one of its own inputs (a writer cuts it before it is read)."""
    inputs = {p.resolve() for p in sources}
    for p in outputs:
        if p.resolve() in inputs:
            raise DataError(f"the build would write over its source {p}: give another --out folder")


def _make_folder(out: Path) -> None:
    """Create the output folder (DataError naming it when that cannot be done)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file of that name, a file above it, no permission
        raise DataError(f"cannot make the output folder {out}: {e.strerror or e}") from e


def _remove_earlier_truth(paths: list[Path]) -> None:
    """Delete the ground truth and true-box / true-looks configs an earlier build left in the folder."""
    for p in paths:
        p.unlink(missing_ok=True)


def fit_to(scenario: ScenarioConfig, size: tuple[int, int]) -> ScenarioConfig:
    """The scenario over a source of ``size`` (width, height): regions drawn on another ``frame_size`` are
    scaled to it (DataError when a view becomes too small)."""
    if scenario.frame_size is None or scenario.frame_size == size:
        return scenario
    sx, sy = size[0] / scenario.frame_size[0], size[1] / scenario.frame_size[1]
    views = [
        v.model_dump() | {"region": [round(c * f) for c, f in zip(v.region, (sx, sy, sx, sy), strict=True)]}
        for v in scenario.views
    ]
    (w0, h0), (w, h) = scenario.frame_size, size
    said = _noted(
        scenario.description, f"drawn on {w0}x{h0}, scaled to {w}x{h}: the views give the exact regions"
    )
    try:
        changes = {"frame_size": size, "views": views, "description": said}
        return ScenarioConfig.model_validate(scenario.model_dump() | changes)
    except ValidationError as e:
        least = "x".join(str(_least_side(scenario, axis)) for axis in (0, 1))
        raise DataError(
            f"scenario {scenario.name} on a {w}x{h} video: {problems(e)}: its views need a video of at least "
            f"{least} px (this one is {w}x{h})"
        ) from e


def _least_side(scenario: ScenarioConfig, axis: int) -> int:
    """The least width (``axis`` 0) or height (1) of a video on which every view of the scenario, its regions
    scaled by ``fit_to`` from its ``frame_size``, is ``MIN_SIDE`` px or more along that axis, at its scale too."""
    assert scenario.frame_size is not None
    drawn = scenario.frame_size[axis]

    def fits(side: int) -> bool:
        f = side / drawn
        for v in scenario.views:
            length = round(v.region[axis + 2] * f) - round(v.region[axis] * f)
            if length < MIN_SIDE or round(length * v.scale) < MIN_SIDE:
                return False
        return True

    return next((side for side in range(MIN_SIDE, drawn) if fits(side)), drawn)


def at_frame_rate(scenario: ScenarioConfig, fps: float) -> ScenarioConfig:
    """The scenario over a source whose real frame rate is ``fps`` (DataError when it is out of bounds). The
    views' delays are kept in seconds: ``delay`` source frames at the scenario's rate become as many at ``fps``
    as last as long (a camera 2 s late stays 2 s late)."""
    if not math.isfinite(fps) or fps == scenario.frame_rate:
        changes: dict[str, Any] = {"frame_rate": fps}
    else:
        ratio = fps / scenario.frame_rate
        views = [v.model_dump() | {"delay": round(v.delay * ratio)} for v in scenario.views]
        note = (
            f"written for {scenario.frame_rate:g} fps, here {fps:g} fps: delays kept in seconds, the views give "
            "the frames"
        )
        changes = {"frame_rate": fps, "views": views, "description": _noted(scenario.description, note)}
    try:
        return ScenarioConfig.model_validate(scenario.model_dump() | changes)
    except ValidationError as e:
        raise DataError(f"frame rate {fps:g}: {e.errors()[0]['msg']}") from e


def _noted(description: str, note: str) -> str:
    """``description`` with ``note`` after it (what was changed since it was written), within its bound."""
    return f"{description} [{note}]".strip()[:2000]


def camera_frames(view: ViewConfig, source_frames: int) -> int:
    """How many frames a camera's video has: until its source frames run out."""
    return (source_frames - 1 + view.delay) // view.step + 1


class _Camera:
    """One camera's video writer and the next camera frame it needs."""

    def __init__(self, view: ViewConfig, path: Path, fps: float, frames: int) -> None:
        self.view = view
        self.frames = frames
        self.next = 0
        # to the hundredth where MPEG-4 cannot time it (fleet.yaml gives the exact rate)
        rate = mp4v_fps(view.frame_rate(fps))
        self.writer = cv2.VideoWriter(
            str(path), cv2.VideoWriter.fourcc(*"mp4v"), rate, written_size(view.output_size())
        )
        if not self.writer.isOpened():
            raise DataError(f"cannot write {path} (mp4v)")
        if view.output_size() != view.scaled_size():
            log.info(
                "camera %s: %dx%d frames are written at %dx%d, its ground truth and site plan with them (mp4v "
                "takes sides up to %d px)",
                view.name,
                *view.scaled_size(),
                *written_size(view.output_size()),
                MAX_VIDEO_SIDE,
            )

    def take(self, index: int, image: ImageBGR) -> None:
        """Write every camera frame up to the one showing source frame ``index`` (black before the start)."""
        while self.next < self.frames and self.view.source_frame(self.next) <= index:
            shown = self.view.source_frame(self.next)
            self.writer.write(even_sides(render(image if shown == index else None, self.view)))
            self.next += 1


def written_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size a view's video has: mp4v keeps even sides only, so an odd last column or row is cut (a 205x461
    view is written 204x460); its ground truth is clipped to the same picture (``_into_view``)."""
    w, h = size
    return w - w % 2, h - h % 2


def even_sides(image: ImageBGR) -> ImageBGR:
    """``image`` without an odd last column or row: what the writer keeps, cut here so that it is explicit."""
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]


def _write_videos(
    video: Path, cameras: list[_Camera], total: int, progress: Callable[[int, int], None] | None
) -> None:
    """Decode the source once, feeding every camera; memory holds one source frame at a time."""
    cap = cv2.VideoCapture(str(video))
    try:
        for index in range(total):
            ok, image = cap.read()
            if not ok:
                raise SourceError(f"{video}: frame {index} could not be decoded")
            for cam in cameras:
                cam.take(index, np.asarray(image, dtype=np.uint8))
            if progress is not None:
                progress(index + 1, total)
    finally:
        cap.release()
        for cam in cameras:
            cam.writer.release()


def build(
    video: Path,
    gt_path: Path | None,
    scenario: ScenarioConfig,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
    max_frames: int = 0,
) -> ScenarioFiles:
    """Write the scenario's camera videos, ground truth, description and fleet config into ``out``.

    ``max_frames`` > 0 uses only the source's first frames (quick runs); ``progress(done, total)`` is called
    after each source frame.
    """
    if max_frames < 0:
        raise DataError(f"max_frames must be >= 0 (0: the whole source), got {max_frames}")
    total, container_fps, size = _probe(video, max_frames)
    scenario = fit_to(scenario, size)
    for view in scenario.views:  # before any file is opened for writing
        check_region(view, size)
    gt = read_sequence_truth(gt_path) if gt_path is not None else None
    if gt is not None and gt_path is not None:
        _check_truth_size(gt_path, gt, size)
    fps = scenario.frame_rate
    videos = {v.name: out / f"{v.name}.mp4" for v in scenario.views}
    truth_paths = {v.name: out / f"{v.name}.gt.txt" for v in scenario.views}
    _keep_sources(
        [video, *([gt_path] if gt_path is not None else [])], [*videos.values(), *truth_paths.values()]
    )
    _make_folder(out)
    if gt is None:  # an earlier build's truth in this folder would score a run of these videos against it
        _remove_earlier_truth([*truth_paths.values(), *(out / name for name in TRUTH_CONFIGS)])
    sizes = {v.name: camera_frames(v, total) for v in scenario.views}
    cameras = [_Camera(v, videos[v.name], fps, sizes[v.name]) for v in scenario.views]
    _write_videos(video, cameras, total, progress)
    truths: dict[str, Path] = {}
    counts: dict[str, Any] = {}
    for view in scenario.views:
        counts[view.name] = {"frames": sizes[view.name], "fps": view.frame_rate(fps)}
        if gt is None:
            continue
        vgt = view_ground_truth(gt, view, sizes[view.name])
        truths[view.name] = truth_paths[view.name]
        write_ground_truth(truths[view.name], vgt)
        counts[view.name] |= {
            "gt_rows": len(vgt),
            "gt_considered": int(vgt.consider.sum()),
            "people": sorted(int(i) for i in np.unique(vgt.track_id[vgt.consider])),
        }
    desc = out / "scenario.json"
    desc.write_text(
        json.dumps(
            {
                "scenario": scenario.model_dump(mode="json"),
                "source": {
                    "video": str(video),
                    "sha256": sha256_file(video),
                    "frames": total,
                    "container_fps": container_fps,
                },
                "ground_truth": str(gt_path) if gt_path is not None else None,
                "cameras": counts,
                "how": __doc__,
            },
            indent=2,
        )
    )
    base = _fleet_config(scenario, videos, out)
    configs = {"fleet.yaml": base}
    if truths:  # the TRUTH_CONFIGS; each variant edits its own copy
        gt_boxes = _gt_boxes_config(copy.deepcopy(base), truths, out)
        configs |= {
            "fleet.gt-boxes.yaml": gt_boxes,
            "fleet.true-looks.yaml": _true_looks_config(copy.deepcopy(base), truths),
            "fleet.gt-boxes.true-looks.yaml": _true_looks_config(copy.deepcopy(gt_boxes), truths),
        }
    for name, cfg in configs.items():
        (out / name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ScenarioFiles(out, videos, truths, desc, out / "fleet.yaml", fps, container_fps)


# The configs a build writes only with ground truth (beside fleet.yaml); a build without removes an earlier one's.
TRUTH_CONFIGS = ("fleet.gt-boxes.yaml", "fleet.true-looks.yaml", "fleet.gt-boxes.true-looks.yaml")
# Looks from the ground truth (fleet.*true-looks.yaml): two looks of one person 0.75 apart on average, two
# people's near 0, about what a ReID-trained model gives across cameras; the resolver's thresholds for them.
TRUE_LOOKS_SIMILARITY = 0.75
TRUE_LOOKS_IDENTITY = {"fleet_threshold": 0.6, "look_only_threshold": 0.7}
SCENARIO_FLEET_THRESHOLD = 0.85  # measured on both presets (benchmarks/RESULTS.md, fleet identity section)
SCENARIO_DISTINCT_MARGIN = 0.08
# The site plan of a scenario is the source video's pixels (each view's placement in it is known exactly, as a
# surveyed calibration would give it). PETS09-S2L1 people's feet move 29 px/s at the median, 80 px/s at the
# 99th percentile of its ground truth (7 fps); a box is ~30 px wide. On a scenario fitted to a video of another
# size (fit_to) people are taken to scale with the frame, and these with them.
SCENARIO_SITE = {"site_radius": 30.0, "site_speed": 80.0}


def _people_scale(scenario: ScenarioConfig) -> float:
    """How much larger people are on the scenario's ``frame_size`` than on PETS09-S2L1's frame (1 without one):
    they are taken to scale with the frame, as the square root of its area (a frame of another aspect is not
    taken for one stretched: a rotated one keeps its people's size)."""
    w, h = scenario.frame_size or PETS09_SIZE
    return math.sqrt(w * h / (PETS09_SIZE[0] * PETS09_SIZE[1]))


def _site_settings(scenario: ScenarioConfig) -> dict[str, float]:
    """SCENARIO_SITE scaled from PETS09-S2L1's frame to the scenario's ``frame_size`` (``_people_scale``)."""
    k = _people_scale(scenario)
    return {key: value * k for key, value in SCENARIO_SITE.items()}


def _quality_settings(scenario: ScenarioConfig) -> dict[str, float]:
    """identity.quality_full_height_px (pixels: a box's size term of its quality is its height over it) scaled
    from PETS09-S2L1's frame to the scenario's ``frame_size`` (``_people_scale``), so that the people of a
    smaller video still reach ``new_min_quality`` for a new global id (at 320x240 PETS09-S2L1's ~31 px people
    never did, true boxes and all)."""
    full = float(IdentityConfig.model_fields["quality_full_height_px"].default)
    return {"quality_full_height_px": full * _people_scale(scenario)}


def _fleet_config(scenario: ScenarioConfig, videos: dict[str, Path], out: Path) -> dict[str, Any]:
    """A fleet YAML running every view: one worker each, identities through the bridge, results in out/runs.

    Each view is cut into near-square detector tiles (one pass for a 448x576 view, two stacked for a 256-wide
    strip), so people reach the detector about as large as in the single-camera config. Views whose regions
    touch or overlap are adjacent cameras that may see one person at once (edge with min_s 0).

    The tracker's appearance re-linking is off (``relink_window: 0``): in a fleet the identity resolver joins a
    person's broken tracks through their global id, and the tracker's re-linking on ImageNet features gave one
    local track to two people often enough to cause most of the false merges. The resolver is stricter than
    the defaults (threshold 0.85, distinct margin 0.08), since more broken tracks reach it: together, false
    merges fell 3-4x on both replays, true boxes and detector, at about the same global IDF1
    (benchmarks/RESULTS.md, "Fleet identity across cameras").

    Each camera is placed on the site plan, which here is the source video's pixels: its ``site`` homography maps
    output pixels back to the source, as a surveyed calibration would, and a view that starts ``delay`` frames
    late gets the matching ``clock_offset_s`` (synchronised clocks). The cameras replay in lockstep
    (``fleet.lockstep``, daemon/lockstep.py) as fast as they can: each decides a frame on what the others said
    before it, as live cameras in step would, and a replay gives the same ids on every run.
    """
    cameras = {
        v.name: {
            "source": {
                "uri": str(videos[v.name].resolve()),
                "clock_offset_s": round(-v.delay / scenario.frame_rate, 6),
                **_exact_rate(v, scenario.frame_rate),
            },
            "detector": {"tiles": list(_square_tiles(v.output_size()))},
            "site": {"homography": view_homography(v)},
        }
        for v in scenario.views
    }
    shared = {
        "detector": {"type": "ssdlite", "score_threshold": 0.1, "full_frame": False},
        "embedder": {"policy": "needed"},
        "tracker": {
            "track_buffer": 60,
            "fuse_first_associate": False,
            "proximity_thresh": 0.7,
            "relink_window": 0,
        },
        "output": {"dir": str((out / "runs").resolve()), "video": True},
    }
    return {
        "runtime": {"allow_spinning": False, "detect_ahead": True},
        "fleet": {"enabled": True, "lockstep": True},
        "bridge": {"signing_key": {"env": "REID_FLEET_KEY"}},
        "identity": {
            "adjacency": _adjacency(scenario),
            "fleet_threshold": SCENARIO_FLEET_THRESHOLD,
            "fleet_distinct_margin": SCENARIO_DISTINCT_MARGIN,
            **_site_settings(scenario),
            **_quality_settings(scenario),
        },
        "camera_defaults": shared,
        "cameras": cameras,
    }


def _exact_rate(view: ViewConfig, source_fps: float) -> dict[str, float]:
    """``{"fps": rate}`` for a camera whose video holds its real rate rounded (one MPEG-4 cannot time: mp4v_fps),
    so that its frames are timed at that rate exactly, as the source's are; nothing for the others."""
    rate = view.frame_rate(source_fps)
    return {} if mp4v_fps(rate) == rate else {"fps": rate}


def view_homography(view: ViewConfig) -> list[list[float]]:
    """The 3x3 map from a view's output pixels back to source pixels (the scenario's site plan)."""
    x0, y0, x1, y1 = (float(v) for v in view.region)
    w, h = view.output_size()
    return [[(x1 - x0) / w, 0.0, x0], [0.0, (y1 - y0) / h, y0], [0.0, 0.0, 1.0]]


def _square_tiles(size: tuple[int, int]) -> tuple[int, int]:
    """Tiles (columns, rows) that cut a view into near-square pieces: the detector's input is square, so a
    tall strip in one pass squeezes people sideways (on the 256x576 strips of pets09-3cam-handover, two
    stacked tiles raised per-camera IDF1 from 74/29/41 to 79/44/58). A view over ``MAX_TILES`` squares long
    gets that many, the most the config takes."""
    w, h = size
    return min(MAX_TILES, max(1, round(w / h))), min(MAX_TILES, max(1, round(h / w)))


def _gt_boxes_config(fleet: dict[str, Any], truths: dict[str, Path], out: Path) -> dict[str, Any]:
    """The same fleet on the cameras' true boxes (no detector errors): measures identity resolution alone.

    Writes to out/runs-gt-boxes so a detector run and a true-box run of one scenario sit side by side.
    """
    shared = fleet["camera_defaults"]
    shared["detector"] = {"type": "ground-truth"}
    shared["output"]["dir"] = str((out / "runs-gt-boxes").resolve())
    for name, cam in fleet["cameras"].items():
        cam["detector"] = {"path": str(truths[name].resolve())}
    return fleet


def _true_looks_config(fleet: dict[str, Any], truths: dict[str, Path]) -> dict[str, Any]:
    """The same fleet with looks made from each camera's ground truth in place of the embedder: what the trackers
    and the resolver do with a ReID-trained embedder of a known quality. The resolver's thresholds are set for
    such looks (one person's far above, two people's near 0), as they would be re-tuned for a ReID model.

    Writes to out/<the run's folder>-true-looks, beside the runs with the embedder.
    """
    shared = fleet["camera_defaults"]
    shared["embedder"] = {
        "type": "ground-truth",
        "policy": "needed",
        "truth": {"similarity": TRUE_LOOKS_SIMILARITY},
    }
    shared["output"]["dir"] += "-true-looks"
    for name, cam in fleet["cameras"].items():
        cam["embedder"] = {"truth": {"path": str(truths[name].resolve())}}
    fleet["identity"] |= TRUE_LOOKS_IDENTITY
    return fleet


def _adjacency(scenario: ScenarioConfig, walk_s: float = 10.0) -> list[dict[str, Any]]:
    edges = []
    views = scenario.views
    for i, a in enumerate(views):
        for b in views[i + 1 :]:
            ax0, ay0, ax1, ay1 = a.region
            bx0, by0, bx1, by1 = b.region
            if ax0 <= bx1 and bx0 <= ax1 and ay0 <= by1 and by0 <= ay1:  # touching or overlapping
                edges.append({"a": a.name, "b": b.name, "min_s": 0.0, "max_s": walk_s})
    return edges


def load_scenario(name_or_path: str) -> ScenarioConfig:
    """A preset by name, or a YAML/JSON scenario file; DataError naming the problem otherwise."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a scenario file")
    if not path.is_file():
        raise DataError(f"no scenario preset or file {name_or_path!r} (presets: {', '.join(PRESETS)})")
    try:
        text = path.read_text()
    except OSError as e:  # no read permission, an I/O error
        raise DataError(f"{path}: cannot read the scenario file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a valid scenario: {e}") from e
    try:
        data = yaml.safe_load(text)
        return ScenarioConfig.model_validate(data)
    except ValidationError as e:
        raise DataError(f"{path}: not a valid scenario: {problems(e)}") from e
    except (yaml.YAMLError, ValueError) as e:
        raise DataError(f"{path}: not a valid scenario: {e}") from e


def problems(error: ValidationError) -> str:
    """Pydantic's errors on one line: ``views.1.scale: Input should be ...; ...``. An error on a field whose
    items have errors of their own is left out (``views``: 'Tuple should have at least 1 item after validation',
    of a file whose views are all wrong)."""
    errors = error.errors()
    locs = [e["loc"] for e in errors]
    said = []
    for e in errors:
        loc = e["loc"]
        if any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs):
            continue
        msg = e["msg"].removeprefix("Value error, ")
        said.append(f"{'.'.join(map(str, loc))}: {msg}" if loc else msg)
    return "; ".join(said)
