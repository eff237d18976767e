"""Validated configuration: the single source of every default.

A YAML file holds one or more cameras keyed by name; environment variables override any field with the
prefix ``REID_`` and ``__`` between levels, e.g. ``REID_CAMERAS__lobby__DETECTOR__SCORE_THRESHOLD=0.2``.
Every model has ``extra="forbid"`` so a misspelt key is an error, not a silently ignored setting.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from daemon.errors import ConfigError

ENV_PREFIX = "REID_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """Where frames come from."""

    uri: str = Field(
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
    queue_size: int = Field(
        8,
        ge=1,
        le=256,
        description="Decoded frames buffered ahead of inference (bounded; live drops oldest).",
    )
    folder_fps: float = Field(10.0, gt=0, le=1000, description="Timestamp rate for an image folder.")
    max_frames: int = Field(0, ge=0, description="Stop after this many frames; 0 = until the source ends.")
    stride: int = Field(1, ge=1, le=100, description="Keep every Nth decoded frame (frame-rate drop).")


class SSDLiteDetectorConfig(_Strict):
    """SSDLite-MobileNetV2 pedestrian detector (ONNX, NMS inside the graph)."""

    type: Literal["ssdlite"] = "ssdlite"
    model: str = Field("ssdlite-mobilenetv2-pedestrian", description="Preset name or path to an .onnx file.")
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
        if not (1 <= v[0] <= 8 and 1 <= v[1] <= 8):
            raise ValueError("tiles must be two integers between 1 and 8")
        return v


class YoloDetectorConfig(_Strict):
    """Ultralytics-format YOLO detector run through onnxruntime (`.pt` files are exported once to ONNX)."""

    type: Literal["yolo"] = "yolo"
    model: str = Field("yolov8s-person", description="Preset name or path to a YOLO .onnx or .pt file.")
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

    type: Literal["mot-file"] = "mot-file"
    path: Path = Field(description="MOTChallenge det.txt (frame,id,x,y,w,h,score,...; 1-based frames).")
    score_threshold: float = Field(0.0, ge=-1e9, le=1e9, description="Keep rows scoring at least this.")


class GroundTruthDetectorConfig(_Strict):
    """Ground-truth boxes with controlled, seeded noise: the tracker's upper bound and a stress test."""

    type: Literal["ground-truth"] = "ground-truth"
    path: Path = Field(description="MOTChallenge gt.txt; rows with consider=0 are skipped.")
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


class EmbedderConfig(_Strict):
    """Appearance embedder: crops -> L2-normalised float32 vectors."""

    type: Literal["onnx", "boxmot", "none"] = Field(
        "onnx", description="'onnx': our onnxruntime embedder; 'boxmot': a BoxMOT ReID weights file; 'none'."
    )
    model: str = Field(
        "mobilenetv2-imagenet", description="Preset name, path to an .onnx, or BoxMOT ReID weights path/name."
    )
    input_size: tuple[int, int] = Field(
        (256, 128), description="Crop size fed to the network as (height, width)."
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
    head: Path | None = Field(
        None,
        description="Projection head (.npz from `reid-daemon adapt`) applied to the model's features; the "
        "embedding dim becomes the head's output dim. Only with type 'onnx'.",
    )

    @model_validator(mode="after")
    def _head_needs_onnx(self) -> EmbedderConfig:
        if self.head is not None and self.type != "onnx":
            raise ValueError(f"head works with embedder type 'onnx' only, not {self.type!r}")
        return self


class TrackerConfig(_Strict):
    """BoT-SORT parameters (BoxMOT's BotSort), fed with our detections and embeddings."""

    track_high_thresh: float = Field(0.4, ge=0, le=1, description="First-association score threshold.")
    track_low_thresh: float = Field(0.1, ge=0, le=1, description="Second-association (low-score) threshold.")
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
    frame_rate: int = Field(10, ge=1, le=240, description="Nominal stream frame rate (scales the buffer).")
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

    intra_op_threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads; 0 = cores.")
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

    dir: Path = Field(Path("runs"), description="Output folder; each camera writes into <dir>/<camera>/.")
    mot: bool = Field(True, description="Write MOTChallenge results (<camera>.txt).")
    events: bool = Field(True, description="Write JSON-lines track events (events.jsonl).")
    embeddings: bool = Field(True, description="Store embeddings referenced by events (embeddings.npz).")
    event_every: int = Field(
        10,
        ge=1,
        le=100_000,
        description="Write track.updated at most this often per track (and on new embeddings).",
    )
    video: bool = Field(False, description="Write an annotated video (annotated.mp4, mp4v).")
    progress: bool = Field(True, description="Show a progress bar with live FPS.")
    summary: bool = Field(True, description="Write summary.json (frames, FPS, stage timings).")


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


class ServeConfig(_Strict):
    """``reid-daemon serve``: the gallery over HTTP."""

    host: str = Field("127.0.0.1", min_length=1, max_length=255, description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port).")
    gallery: Path | None = Field(
        None, description="Gallery file loaded at start and saved after each enrolment (.npz/.json/.rdg)."
    )
    references: Path | None = Field(
        None, description="Folder of reference images, served at /references/; enrolled uploads are kept here."
    )
    max_upload_bytes: int = Field(
        20_000_000, ge=1_000, le=1_000_000_000, description="Largest accepted upload (HTTP 413 above)."
    )
    top_k: int = Field(5, ge=1, le=1000, description="Matches returned when a request does not say k.")


class CameraConfig(_Strict):
    """One camera worker."""

    source: SourceConfig
    detector: DetectorConfig = Field(default_factory=SSDLiteDetectorConfig, description="Detector backend.")
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig, description="Appearance embedder.")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="BoT-SORT parameters.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Outputs.")


def default_cache_dir() -> Path:
    """Model cache: $REID_MODELS_DIR, else $XDG_CACHE_HOME/reid-daemon/models, else ~/.cache/..."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "reid-daemon" / "models"


class Settings(BaseSettings):
    """Top level of a YAML config: model cache, runtime and the cameras keyed by name."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    models_dir: Path = Field(default_factory=default_cache_dir, description="Model cache folder.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Inference runtime tuning.")
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

    @model_validator(mode="after")
    def _camera_names(self) -> Settings:
        if not self.cameras:
            raise ValueError("at least one camera is needed under 'cameras'")
        for name in self.cameras:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"camera name {name!r} may hold only letters, digits, '-' and '_'")
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


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration in {origin}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-")) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate a YAML config (plus REID_* environment overrides); raise ConfigError on any problem."""
    origin = "the environment and arguments"
    data: dict[str, Any] = {}
    if path is not None:
        origin = str(path)
        data = _read_yaml(Path(path))
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from e


def _read_yaml(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping with a 'cameras' key")
    return data


def single_camera_settings(camera: CameraConfig, name: str = "cam0", **kw: Any) -> Settings:
    """Build Settings around one camera given in code (tests, benchmarks, the `track` command)."""
    try:
        return Settings(cameras={name: camera}, **kw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, "arguments")) from e


def with_overrides(settings: Settings, camera: str, updates: dict[str, Any]) -> Settings:
    """A re-validated copy of ``settings`` with dotted-path ``updates`` applied to one camera.

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
        raise ConfigError(_format_errors(e, "command-line options")) from e


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
        description="'exact': numpy matrix product; 'faiss': FAISS HNSW (approximate); 'auto': exact below "
        "faiss_above rows, HNSW from there on.",
    )
    faiss_above: int = Field(
        20_000, ge=1, le=1_000_000_000, description="Rows from which 'auto' switches to the FAISS index."
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
        description="Rebuild the HNSW index when this fraction of its nodes are deleted (evictions, removals).",
    )
    blas_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="BLAS threads of an exact search (1 avoids thread hand-off stalls on a busy CPU, where a "
        "2-thread matrix-vector product took 24 ms instead of 0.1 ms); 0 = leave numpy's setting.",
    )
    seed: int = Field(0, ge=0, description="Seed of the drop_random policy.")
    path: Path | None = Field(
        None, description="Gallery file (.rdg, .npz or .json) to load at start and save to; null = none."
    )


# Settings refers to sections defined after it in this file.
Settings.model_rebuild()
