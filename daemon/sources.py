"""Frame sources: video files, RTSP/HTTP streams, webcams and folders of images.

``open_source(cfg)`` resolves the kind, opens the source and reads its first frame in the caller's thread,
so a missing file, a corrupt video, an empty folder or an unreachable stream raises :class:`SourceError`
before the main loop starts. The returned :class:`FrameSource` then decodes on a background thread into a
bounded buffer, so decoding overlaps inference; iterate it (``for frame in source``) and close it (or use it
as a context manager).

Replay sources (files, folders) never drop a frame: the decoder waits for the consumer, so a replay is exact
and deterministic. Live sources (RTSP/HTTP, webcams) drop the oldest buffered frame when the consumer falls
behind (counted in ``stats.frames_dropped``), and reconnect with exponential backoff (:class:`Backoff`) when
a read fails or the stream ends; they give up (the iterator raises ``SourceError``) after
``reconnect_attempts`` failures in a row when that is above 0. Live streams must connect once at start: a
stream that cannot be reached at start-up raises at once rather than retrying forever behind the caller's
back, unless ``startup_wait_s`` gives it that long to come up (:func:`open_source_waiting`). A stream that keeps
failing, at start or after it dropped, logs its first failure, each change of reason and its recovery at once,
and the same failure again at most once per ``log_every_s``, counting the tries held back
(:class:`RepeatedFailure`).

Frame indices are positions in the source (with ``stride`` 3 they are 0, 3, 6, ...), so results line up with
ground truth numbered by source frame; they keep increasing across reconnects. After a read of a file failed (a
damaged frame, a file cut short), its frames are numbered by their times at the container's rate, so that frames
FFmpeg dropped without a failed read (B-frames that referred to the lost data) keep their places. ``max_frames``
stops the decoder after delivering that many (on a live stream some of them may be dropped). Timestamps are the
container's position for files (index / fps when it has none; a container with no plausible rate is timed at
index / ``folder_fps``, with a warning), index / ``folder_fps`` for folders and wall-clock seconds for live
streams. A video file with ``loop`` starts again from its first frame at its end,
endlessly (soak tests, demos); indices and timestamps keep increasing across passes. Every
http(s)/rtsp/rtmp/udp/tcp/srt URL is a live stream unless ``kind="file"`` says it is a file to read to its
end.

RTSP streams are opened over TCP: ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is set to ``rtsp_transport;tcp`` for the
duration of the open call only (under a lock) and removed again; a value the user set in the environment is
left alone and wins. FFmpeg and OpenCV print their own errors to the process's stderr, past the logging (two
lines for each failed reconnection of a stream that is down); FFmpeg's are kept quiet and OpenCV's to its errors
(``daemon.videolog``) unless the user set ``OPENCV_FFMPEG_LOGLEVEL`` or ``OPENCV_LOG_LEVEL``, and a stream
that cannot be opened says why in its own error (:func:`why_unreachable`).
"""

from __future__ import annotations

import codecs
import logging
import math
import os
import random
import re
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, NamedTuple, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from daemon import mp4_timing
from daemon.clocks import monotonic_reading
from daemon.config import STREAM_SCHEMES, URI_SCHEME, SourceConfig, looked_for, redact
from daemon.errors import SourceError
from daemon.types import Frame, ImageBGR
from daemon.videolog import FFMPEG_LOG_ENV, quiet_video_libraries

log = logging.getLogger(__name__)

SourceKind = Literal["file", "rtsp", "webcam", "folder"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MP4_SUFFIXES = frozenset({".mp4", ".mov", ".m4v"})  # files whose frames are counted by their own tables
_WEBCAM = re.compile(r"^(?:webcam:)?(\d+)$")
_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_RTSP_OVER_TCP = "rtsp_transport;tcp"
_ENV_LOCK = threading.Lock()
# Reconnect delays are shortened by up to this fraction at random: cameras dropped together retry out of step.
_RECONNECT_JITTER = 0.1
# close() waits this much longer than the longest network timeout for the decoding thread to finish.
_JOIN_GRACE_S = 1.0
# A container frame rate outside (0, this] is treated as unknown.
_MAX_PLAUSIBLE_FPS = 1000.0
_TIMED_OUT = 0.9  # a stream open that failed after this share of source.open_timeout_s timed out
_PROBE_MAX_S = 2.0  # the longest a failed stream's server is probed for why (within source.open_timeout_s)
# the TCP port a stream URL without one is served on (udp and srt: not over TCP, not probed)
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}
# A file's grab that fails before its end is tried again this many times: frames FFmpeg cannot decode (a damaged
# one fails its grab, the next goes on past it) are passed over; so many failing in a row is the file's end.
_UNDECODABLE_RUN = 50
EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # the first bytes of a Matroska or WebM file
# the first bytes of still images OpenCV's FFmpeg plays as a video of one frame (WebP: RIFF, then WEBP at 8)
_STILL_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------- statistics


SOURCE_WAIT = "the source: "  # what a worker waits for while its live source is tried again at start


@dataclass(slots=True)
class SourceStats:
    """Counters of one source. Each field has one writer thread; ``FrameSource.stats`` returns a copy."""

    frames_decoded: int = 0  # frames taken from the source, including those skipped by the stride
    frames_delivered: int = 0  # frames handed to the consumer
    frames_dropped: int = 0  # live only: oldest buffered frames discarded because the consumer was slow
    frames_skipped: int = (
        0  # a folder's images, a file's frames, that could not be decoded: passed over (warned)
    )
    reconnects: int = 0  # successful reconnections of a live stream
    reconnect_failures: int = 0  # tries to open a live stream that failed: reconnections, and tries at start
    decode_seconds: float = 0.0  # time spent reading and decoding (including waiting on the network)
    last_error: str = ""  # the latest read or connection failure, for status pages and logs
    connected: bool = False  # the source is open and reading
    loops: int = 0  # times a looped file started again from its first frame


# ------------------------------------------------------------------------------------------- repeated failures

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class RepeatedFailure:
    """Warnings of a failure that repeats, a stream down for hours retried every few seconds: the first one and
    each change of reason at once, the same reason again at most once per ``every_s`` with how many were held
    back ("N more like this", as the bridge says it), so an outage does not flood the journal. Reasons that
    differ in their numbers alone (``it failed after 0.1 s``) are one reason. ``recovered`` after a success
    starts afresh: the next failure is logged at once."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._reason: str | None = None
        self._logged_at = -math.inf
        self._held = 0

    def warn(self, reason: str, text: str, *args: object) -> None:
        """One more failure, ``reason``: ``text % args`` is logged unless held back."""
        now, kind = self._clock(), _NUMBER.sub("#", reason)
        if kind == self._reason and now - self._logged_at < self.every_s:
            self._held += 1
            return
        note = ""
        if self._held:
            like = "like this since the last report" if kind == self._reason else "like the one before"
            note = f" ({self._held} more {like})"
        log.warning(text + note, *args)
        self._reason, self._logged_at, self._held = kind, now, 0

    def recovered(self) -> None:
        self._reason, self._logged_at, self._held = None, -math.inf, 0


# -------------------------------------------------------------------------------------------------- backoff


@dataclass(slots=True)
class Backoff:
    """Reconnect delays: ``initial_s``, doubling after each failure, capped at ``max_s``.

    ``next_delay()`` is called before each reconnect attempt and returns ``None`` once ``attempts`` (> 0)
    attempts have failed in a row; ``reset()`` after a good frame starts the schedule again. ``jitter``
    shortens each delay by a random fraction in ``[0, jitter)``.
    """

    initial_s: float
    max_s: float
    attempts: int = 0
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    tried: int = 0

    def __post_init__(self) -> None:
        if not (self.initial_s > 0 and self.max_s > 0 and math.isfinite(self.initial_s + self.max_s)):
            raise ValueError(f"backoff delays must be positive and finite: {self.initial_s}, {self.max_s}")
        if self.attempts < 0 or not 0 <= self.jitter < 1:
            raise ValueError(f"need attempts >= 0 and 0 <= jitter < 1: {self.attempts}, {self.jitter}")

    def delay(self, attempt: int) -> float:
        """The delay before the ``attempt``-th reconnect in a row (0-based), without jitter."""
        return min(self.initial_s * 2.0 ** min(attempt, 64), self.max_s)

    @property
    def exhausted(self) -> bool:
        return 0 < self.attempts <= self.tried

    def next_delay(self) -> float | None:
        if self.exhausted:
            return None
        d = self.delay(self.tried)
        self.tried += 1
        return d * (1.0 - self.jitter * self.rng.random()) if self.jitter else d

    def reset(self) -> None:
        self.tried = 0


# -------------------------------------------------------------------------------------------------- capture


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a source uses; tests inject fakes through a ``CaptureFactory``."""

    def isOpened(self) -> bool: ...

    def grab(self) -> bool: ...

    def retrieve(self) -> tuple[bool, Any]: ...

    def get(self, propId: int) -> float: ...

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """What to open: a file path, a stream URL or a webcam index/device, with the network timeouts."""

    kind: SourceKind
    target: str | int
    open_timeout_ms: int
    read_timeout_ms: int


CaptureFactory = Callable[[CaptureRequest], Capture]


@contextmanager
def _ffmpeg_capture_options(options: str) -> Iterator[None]:
    """Set OPENCV_FFMPEG_CAPTURE_OPTIONS for one open call, unless the user set it; restore it afterwards."""
    with _ENV_LOCK:
        if _FFMPEG_OPTIONS_ENV in os.environ:
            yield
            return
        os.environ[_FFMPEG_OPTIONS_ENV] = options
        try:
            yield
        finally:
            os.environ.pop(_FFMPEG_OPTIONS_ENV, None)


def why_unreachable(url: str, timeout_s: float) -> str | None:
    """Why a stream's server cannot be reached, found by a TCP connection to the URL's host and port (what
    FFmpeg said on stderr, kept quiet: ``daemon.videolog``): refused, a name not resolved, no answer in
    ``timeout_s``; None when the connection is taken, or the scheme is not carried over TCP (udp, srt)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # a port that is no number
        return None
    if not host or port is None:
        return None
    where = f"{host}:{port}"
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except ConnectionRefusedError:
        return f"connection refused by {where} (nothing listens there)"
    except socket.gaierror as e:
        return f"host name {host!r} not resolved ({e.strerror})"
    except TimeoutError:
        return f"{where} did not answer within {timeout_s:.1f} s"
    except OSError as e:
        return f"{where}: {e.strerror or e}"
    return None


def opencv_capture(req: CaptureRequest) -> Capture:
    """The default factory: ``cv2.VideoCapture`` (FFmpeg with timeouts for streams, TCP for RTSP)."""
    quiet_video_libraries()
    if req.kind == "webcam":
        return cv2.VideoCapture(req.target)
    if req.kind == "file":
        return cv2.VideoCapture(str(req.target))
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        req.open_timeout_ms,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        req.read_timeout_ms,
    ]
    url = str(req.target)
    if url.lower().startswith("rtsp"):
        with _ffmpeg_capture_options(_RTSP_OVER_TCP):
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


# ---------------------------------------------------------------------------------------------- resolution


def infer_kind(uri: str) -> SourceKind:
    """The source kind of a uri: webcam index, stream URL, folder, else a video file. A bare number that also
    names a file or folder here (stills in a folder named by their date) is refused as ambiguous."""
    if _WEBCAM.match(uri.strip()):
        _check_not_a_path(uri.strip())
        return "webcam"
    m = URI_SCHEME.match(uri)
    if m:
        if m.group(1).lower() == "file":
            return "folder" if _local_path(uri).is_dir() else "file"
        if m.group(1).lower() not in STREAM_SCHEMES:
            raise SourceError(f"unsupported URL scheme {m.group(1)!r} in source {redact(uri)!r}")
        return "rtsp"
    return "folder" if Path(uri).is_dir() else "file"


def _check_not_a_path(uri: str) -> None:
    """SourceError when a bare webcam index (``20240101``) is also the name of a file or folder here."""
    path = Path(uri)
    if uri.isdigit() and path.exists():
        what = "folder" if path.is_dir() else "file"
        raise SourceError(
            f"source {uri!r} is a webcam index and also names the {what} {path.resolve()}: write ./{uri} for the "
            f"{what}, or webcam:{uri} for the webcam"
        )


def source_kind(cfg: SourceConfig) -> SourceKind:
    """The kind of source a config names: its ``kind``, or the one its uri implies when that is 'auto'."""
    return infer_kind(cfg.uri.strip()) if cfg.kind == "auto" else cfg.kind


def live_source(cfg: SourceConfig) -> bool:
    """Whether the config names a live source (a stream, a webcam); False where it cannot tell (a source named
    wrongly, which opening it says)."""
    try:
        return source_kind(cfg) in ("rtsp", "webcam")
    except SourceError:
        return False


def local_path(cfg: SourceConfig) -> Path | None:
    """The local file or folder a source reads; None for streams, webcams and files served over http."""
    uri = cfg.uri.strip()
    kind = source_kind(cfg)
    remote = URI_SCHEME.match(uri) is not None and not uri.lower().startswith("file://")
    return _local_path(uri) if kind in ("file", "folder") and not remote else None


def check_video_file(cfg: SourceConfig) -> None:
    """SourceError when the source is a local file that is no video, before models load: not a regular file (a
    named pipe), a text file (a gt.txt given for the video: FFmpeg plays it as a video of its characters) or a
    still image (a video of one frame)."""
    path = local_path(cfg)
    if path is None or source_kind(cfg) != "file" or not path.exists():  # a missing one: opening it says so
        return
    check_video_path(path)


@dataclass(frozen=True)
class NotVideoAdvice:
    """What ``check_video_path``'s error adds after saying what the file is, for each kind of file no video."""

    pipe: str = ": give a video file, or a stream by its URL"
    text: str = ""
    still: str = ": give a video, or the folder of a sequence of images"


def check_video_path(path: Path, advice: NotVideoAdvice = NotVideoAdvice()) -> None:
    """SourceError when the file at ``path`` (there) is no video: not a regular file (a named pipe, which opened
    to be read waits for a writer: for good, SIGTERM or not), a text file (FFmpeg plays it as a video of its
    characters) or a still image (a video of one frame); each error ends with the caller's ``advice``."""
    if not path.is_file():
        raise SourceError(f"{path} is not a regular file (a named pipe, a device){advice.pipe}")
    if is_text_file(path):
        raise SourceError(f"{path} is a text file, not a video{advice.text}")
    kind = still_image(path)
    if kind is not None:
        raise SourceError(f"{path} is a still image ({kind}), not a video{advice.still}")


def still_image(path: Path) -> str | None:
    """The kind of still image (JPEG, PNG, BMP, TIFF, WebP) a local file's bytes are, whatever its name, when it
    holds one picture; None for anything else: a video, Motion JPEG (JPEG pictures one after the other, which
    plays as the video it is), a file that cannot be read here (opening it says why)."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return None
    kind = next((k for magic, k in _STILL_MAGIC if head.startswith(magic)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    return kind if kind is not None and _pictures(path) < 2 else None


def _pictures(path: Path, most: int = 2) -> int:
    """How many frames OpenCV reads from a file, counting to ``most`` at most (``most`` for a name it cannot be
    given: not UTF-8, on which its binding crashes)."""
    try:
        name = str(path).encode("utf-8").decode("utf-8")
    except UnicodeEncodeError:
        return most
    cap = cv2.VideoCapture(name)
    try:
        n = 0
        while n < most and cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def _check_url(uri: str) -> None:
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)", uri)
    host = m.group(1).rsplit("@", 1)[-1] if m else ""
    if not host or host.startswith(":"):
        raise SourceError(f"bad stream URL {redact(uri)!r}: it names no host")


def _local_path(uri: str) -> Path:
    """A path, or the path of a file:// URI, percent-decoded as file managers write them (``my%20videos``)."""
    return Path(unquote(uri[7:])) if uri.lower().startswith("file://") else Path(uri)


def not_found(what: str, path: Path) -> SourceError:
    """A missing file or folder; a relative path also says where it was looked for."""
    return SourceError(f"{what} not found: {path}{looked_for(path)}")


def is_matroska(path: Path) -> bool:
    """Whether a local file is Matroska or WebM (by its EBML header); False where it cannot be read here."""
    try:
        with path.open("rb") as f:
            return f.read(len(EBML_MAGIC)) == EBML_MAGIC
    except OSError:
        return False


def mp4_shown_frames(path: Path) -> int | None:
    """The frames an MP4, MOV or M4V file shows, by its own tables (``mp4_timing.shown_frames``: its edit list, the
    frames' times and composition offsets); None for another kind of file, or where its tables cannot be read
    (a fragmented or damaged file: logged at debug, and OpenCV's count stands)."""
    if path.suffix.lower() not in MP4_SUFFIXES:
        return None
    try:
        return mp4_timing.shown_frames(path)
    except (OSError, ValueError, struct.error) as e:
        log.debug("%s: its frames are counted by OpenCV: its mp4 tables cannot be read (%s)", path, e)
        return None


def counted_frames(cap: Capture, video: Path | None) -> int | None:
    """The frames a video file shows (None: not known), as its container counts them; ``video`` is the local file
    ``cap`` reads (None: none), Matroska counted right once ``cap`` has grabbed its first frame.
    An MP4 or MOV cut by stream copy (an NVR export, ffmpeg -ss -c copy) holds the frames from the key frame before
    its cut, hidden by its edit list, and OpenCV counts them too: its frames are counted from its own tables
    (``mp4_shown_frames``). Matroska and WebM hold no count: OpenCV gives their duration times their rate, and
    their duration runs from time 0, so one whose first frame is shown later (a segment of a longer recording,
    written with its timestamps running on) is counted the frames of that lead too many; they are taken off
    (OpenCV's ``CAP_PROP_PTS`` gives the first frame's time in frames from time 0, its position the time from
    the first frame)."""
    shown = mp4_shown_frames(video) if video is not None else None
    if shown is not None:
        return shown if shown > 0 else None
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    if video is not None and count > 0 and is_matroska(video):
        lead = cap.get(cv2.CAP_PROP_PTS) - cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 * cap.get(cv2.CAP_PROP_FPS)
        if math.isfinite(lead) and lead >= 1:
            count -= round(lead)
    return count if count > 0 else None


def no_first_frame(count: int | None) -> str:
    """Why a video file gave no frame from its start, by the frames its container counts (None or 0: none)."""
    if count is None or count <= 0:
        return "the file holds no frames (its container counts none)"
    return f"its first frame could not be read (its container counts {count})"


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``frame_2`` before ``frame_10``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in re.split(r"(\d+)", name) if p)


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder (jpg, png, bmp, webp), in natural order of their names."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def _to_bgr(image: Any) -> ImageBGR:
    img = np.asarray(image)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise SourceError(f"decoded frame has an unsupported layout {img.shape} {img.dtype}")
    return img


# -------------------------------------------------------------------------------------------------- readers


class _Decoded(NamedTuple):
    """A frame as a reader gives it: ``monotonic`` (live sources) as ``Frame.monotonic``."""

    image: ImageBGR
    timestamp: float
    monotonic: float | None = None


class _Reader(Protocol):
    live: bool
    last_error: str
    skipped: int  # frames passed over as undecodable since the reader was made (counted, named in a warning)

    @property
    def fps(self) -> float | None: ...

    @property
    def count(self) -> int | None: ...

    def open(self) -> None: ...

    def read(self) -> _Decoded | None: ...

    def grab(self) -> bool: ...

    def at_end(self) -> bool: ...

    def close(self) -> None: ...


class _CaptureReader:
    """A file, stream or webcam read through a Capture; ``read``/``grab`` give None/False at end or error."""

    def __init__(
        self,
        request: CaptureRequest,
        factory: CaptureFactory,
        name: str,
        fallback_fps: float,
        fps: float | None = None,
    ) -> None:
        self._req = request
        self._factory = factory
        self._name = name
        self._fallback_fps = fallback_fps  # files whose container gives no plausible rate are timed at this
        self._rate = fps  # a file's real rate, overriding its container's (source.fps)
        self._by_index = (
            False  # a file timed at index / fps: its container's rate (and positions) are not used
        )
        self.live = request.kind != "file"
        self.last_error = ""
        self.skipped = 0  # a file's frames FFmpeg could not decode, passed over (``_pass_undecodable``)
        self._held = False  # a file's frame grabbed past undecodable ones: the next grab's
        self._cap: Capture | None = None
        self._raw = 0  # frames grabbed since the file was opened (files only)
        self._last_ts = -math.inf
        self._container_fps = 0.0  # the container's own rate (0: none), whatever source.fps says
        self._position_ms = -math.inf  # the container's position of the last frame grabbed (files only)
        # a file's position of its first frame, from which its frames are timed: FFmpeg's positions count from
        # the stream's start, which lies before it where the decoder dropped the first frames (a cut starting on
        # an open-GOP key frame: its RASL or B pictures refer to frames cut off); 0 where the first frame read
        # came after frames that could not be decoded (they took its first place); None: none read yet
        self._origin_ms: float | None = None
        # after a read of a file failed: the number and position of the frame before it, from which the frames
        # after are numbered by their times (``_number_by_time``); None: numbered as grabbed
        self._timed_from: tuple[int, float] | None = None
        self._recount = False  # a Matroska file: its count is taken again once its first frame is grabbed
        self._path: Path | None = None  # the local file read (None: a stream, a webcam, a file over http)
        self.fps: float | None = None  # nominal rate and length, once opened (None: unknown)
        self.count: int | None = None

    def open(self) -> None:
        if self._req.kind == "file" and not URI_SCHEME.match(str(self._req.target)):
            path = Path(str(self._req.target))
            if not path.is_file():
                raise not_found("video file", path)
        began = time.monotonic()
        try:
            cap = self._factory(self._req)
        except cv2.error as e:
            raise SourceError(f"cannot open {self._what(began)}: {e}") from e
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self._what(began)}")
        self._cap = cap
        self._held = False
        self._position_ms = -math.inf
        self._timed_from = None
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._container_fps = fps if 0 < fps <= _MAX_PLAUSIBLE_FPS else 0.0
        self.fps = self._rate or self._container_fps or None
        self._by_index = not self.live and (self._rate is not None or self.fps is None)
        if self.fps is None and not self.live and self._raw == 0:  # once, not on each pass of a loop
            log.warning(
                "%s: the container gives no plausible frame rate (%g); frames are timed at source.folder_fps, "
                "%g fps",
                self._name,
                fps,
                self._fallback_fps,
            )
        local = self._req.kind == "file" and not URI_SCHEME.match(str(self._req.target))
        self._path = Path(str(self._req.target)) if local else None
        self.count = None if self.live else counted_frames(cap, self._path)
        self._recount = self._path is not None and is_matroska(self._path)

    def _label(self) -> str:
        """Where the source is (a stream's URL without its password) and, when the caller named it otherwise (a
        camera), that name too."""
        where = redact(str(self._req.target))
        return where if self._name == where else f"{where} ({self._name})"

    def _what(self, began: float) -> str:
        """The source as an error names it: where it is (a stream's URL without its password) and, when the
        caller named it otherwise (a camera), that name too; for a stream, whether it did not answer in time
        or failed before, and why (``_why_failed``)."""
        label = self._label()
        if self._req.kind == "file":
            return f"video file {label}: {why_unopened(self._req.target)}"
        if self._req.kind == "webcam":
            return f"webcam {label}"
        took = time.monotonic() - began
        if took * 1000 < _TIMED_OUT * self._req.open_timeout_ms:
            return f"stream {label}: it failed after {took:.1f} s: {self._why_failed(took)}"
        return f"stream {label} within {self._req.open_timeout_ms} ms"

    def _why_failed(self, took: float) -> str:
        """Why a stream failed to open before its timeout (OpenCV does not tell): its server unreachable
        (``why_unreachable``, within what is left of the timeout), or reached and the stream not played."""
        left = min(self._req.open_timeout_ms / 1000 - took, _PROBE_MAX_S)
        why = why_unreachable(str(self._req.target), max(left, 0.1))
        if why is not None:
            return why
        return (
            "its server takes connections but would not play it (not found, credentials refused or not a stream; "
            f"{FFMPEG_LOG_ENV}=16 in its environment prints FFmpeg's own words)"
        )

    def grab(self) -> bool:
        """The next frame taken without being decoded to a picture (a frame the stride passes over); False at the
        end or an error, and where frames that could not be decoded were passed over (as ``read``)."""
        return self._grab() or self._pass_undecodable()

    def _grab(self) -> bool:
        if self._cap is None:
            self.last_error = "not connected"
            return False
        if self._held:
            self._held = False
            return True
        began = time.monotonic()
        try:
            ok = self._cap.grab()
        except cv2.error as e:
            ok, self.last_error = False, f"read failed: {e}"
        else:
            self.last_error = "" if ok else self._no_frame()
        if (
            self._req.kind == "rtsp"
            and (took := time.monotonic() - began) * 1000 >= self._req.read_timeout_ms
        ):
            # FFmpeg was interrupted: what it gives now is a frame its decoder held, not a sign of life
            ok = False
            self.last_error = (
                f"no frame for {took:.1f} s (source.read_timeout_s: {self._req.read_timeout_ms / 1000:g} s): "
                "the stream stopped sending"
            )
        if ok:
            self._raw += 1
            if not self.live:
                self._position_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
                self._number_by_time()
            if self._recount:
                self._recount, self.count = False, counted_frames(self._cap, self._path)
        return ok

    def _number_by_time(self) -> None:
        """After a failed read of a file, the frame just grabbed is numbered by how far its time is from the last
        frame before the failure, at the container's rate: FFmpeg's decoder, once data is missing, drops the
        frames that cannot be made without it (B-frames referring to it, one behind the failure or further on)
        without a failed read, and gives the frames it held after one that dropped none (a file cut short), so
        counting reads no longer numbers them. The frames between are passed over as undecodable."""
        if self._timed_from is None or self._cap is None:
            return
        number, at_ms = self._timed_from
        by_time = number + round((self._position_ms - at_ms) / 1000.0 * self._container_fps)
        if by_time > self._raw - 1:
            self._passed_over(self._raw - 1, by_time - (self._raw - 1))

    def _no_frame(self) -> str:
        """Why a grab gave no frame: a file that gave none from its start holds none (or its first cannot be
        read, where its container counts frames); otherwise a read failed or the file or stream ended."""
        if self.live or self._raw > 0:
            return "read failed or the stream ended"
        return no_first_frame(self.count)

    def at_end(self) -> bool:
        """Whether the last frame grabbed is the last the container's length gives, at its nominal rate: a file
        with a variable frame rate has fewer frames than OpenCV counts for a container that holds no count (MKV,
        WebM: its duration times the nominal rate), and was still read to its end."""
        if self.live or self.count is None or not self._container_fps:
            return False
        return self._position_ms / 1000.0 >= (self.count - 1.5) / self._container_fps

    def read(self) -> _Decoded | None:
        """The next frame; None at the end or an error, and where frames that could not be decoded were passed
        over (counted in ``skipped``: the frame after them is the next read's)."""
        if not self.grab():
            return None
        if self._cap is None:
            return None
        ts, monotonic = self._timestamp()
        try:
            ok, image = self._cap.retrieve()
        except cv2.error as e:
            ok, image, self.last_error = False, None, f"decode failed: {e}"
        if not ok or image is None:
            self.last_error = self.last_error or "decode failed"
            return None
        return _Decoded(_to_bgr(image), ts, monotonic)

    def _pass_undecodable(self) -> bool:
        """After a grab that failed inside a file: FFmpeg could not read or decode the data there (a damaged frame:
        the grab after it goes on; a file cut short: the frames its decoder held come still), so it is grabbed
        again, up to ``_UNDECODABLE_RUN`` times. The frames that were lost are passed over (``_passed_over``):
        told by the next frame's time where the container gives a rate (``_number_by_time``, which numbers the
        frames after by their times from then on), else one for each failed grab; the frame grabbed after them is
        held for the next read. True when none was lost: the frame grabbed is the next, to be read now. False
        where none comes (the end of the file, or one cut short: it says so as before)."""
        if self.live or self._raw == 0 or self.at_end():
            return False
        why = self.last_error
        if self._container_fps and math.isfinite(self._position_ms):
            self._timed_from = (self._raw - 1, self._position_ms)
        for failed in range(1, _UNDECODABLE_RUN + 1):
            skipped = self.skipped
            if not self._grab():
                continue
            if self._timed_from is None:  # no times to tell by: each failed grab lost a frame
                self._passed_over(self._raw - 1, failed)
            if self.skipped == skipped:
                log.warning(
                    "%s: a read failed after frame %d (%s); the frame after it came next: none was lost",
                    self._label(),
                    self._raw - 2,
                    why,
                )
                return True
            self._held = True
            return False
        self.last_error = why
        return False

    def _passed_over(self, first: int, n: int) -> None:
        """Frames ``first`` to ``first + n - 1`` could not be decoded: taken from the file, counted in ``skipped``
        and named in a warning; the frame grabbed last becomes ``first + n`` (those after keep their numbers)."""
        self._raw += n
        self.skipped += n
        which = f"frame {first}" if n == 1 else f"frames {first}-{first + n - 1}"
        log.warning(
            "%s: %s could not be decoded: skipped (the frames after keep their numbers)", self._label(), which
        )
        self.last_error = f"{which} could not be decoded"

    def _timestamp(self) -> tuple[float, float | None]:
        """The frame's timestamp and, live, its monotonic reading. Live: wall-clock time. Files: the container
        position, else index / fps; never going backwards. A rate given in the config, or a container with no
        plausible rate (whose positions are no better), times frames at index / that rate (the fallback's)."""
        if self.live:
            return time.time(), monotonic_reading()
        fps = self.fps or self._fallback_fps
        # the position read when the frame was grabbed (``_grab``)
        ts = self._position_s(self._position_ms) if self._cap is not None and not self._by_index else math.nan
        if not math.isfinite(ts) or ts < 0 or (self._raw > 1 and ts <= self._last_ts):
            ts = (self._raw - 1) / fps
        if ts <= self._last_ts:
            ts = self._last_ts + 1.0 / fps
        self._last_ts = ts
        return ts, None

    def _position_s(self, ms: float) -> float:
        """A file's frame at container position ``ms``, in seconds from its first frame (the first pass's: a
        looped file's later passes go on from where the one before ended, ``_timestamp``)."""
        if self._origin_ms is None:
            self._origin_ms = ms if math.isfinite(ms) and ms > 0 and self.skipped == 0 else 0.0
        return (ms - self._origin_ms) / 1000.0

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class _FolderReader:
    """Images of a folder in natural order; timestamps are index / fps. An image that cannot be decoded is
    skipped with a warning naming it and counted in ``skipped``; the images after it keep their places."""

    live = False

    def __init__(self, folder: Path, fps: float) -> None:
        self._folder = folder
        self.fps: float = fps
        self._files: list[Path] = []
        self._next = 0
        self.count: int | None = None
        self.last_error = ""
        self.skipped = 0
        self._first_skipped = ""  # the first image skipped and why, for the error of a folder none decodes in
        self._decoded = False

    def open(self) -> None:
        if not self._folder.is_dir():
            raise not_found("image folder", self._folder)
        self._files = list_images(self._folder)
        if not self._files:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise SourceError(f"image folder {self._folder} holds no images ({exts})")
        self._next = 0
        self.count = len(self._files)

    def at_end(self) -> bool:
        return self._next >= len(self._files)

    def grab(self) -> bool:
        if self._next >= len(self._files):
            self.last_error = self._end()
            return False
        self._next += 1
        return True

    def _end(self) -> str:
        if self._decoded or not self.skipped:
            return "end of folder"
        return f"none of the {self.skipped} images read could be decoded ({self._first_skipped})"

    def read(self) -> _Decoded | None:
        """The next image; None at the end, and for an image that cannot be decoded (skipped: counted in
        ``skipped``, named in a warning)."""
        if not self.grab():
            return None
        path = self._files[self._next - 1]
        image, problem = _read_image(path)
        if image is None:
            self._skip(path, problem)
            return None
        self._decoded = True
        return _Decoded(_to_bgr(image), (self._next - 1) / self.fps)

    def _skip(self, path: Path, problem: str) -> None:
        log.warning(
            "image folder %s: skipped %s: %s (the images after it keep their frame numbers)",
            self._folder,
            path,
            problem,
        )
        self.skipped += 1
        self.last_error = f"skipped {path}: {problem}"
        self._first_skipped = self._first_skipped or f"the first, {path}: {problem}"

    def close(self) -> None:
        self._files = []


def _read_image(path: Path) -> tuple[Any, str]:
    """An image file decoded (BGR, as OpenCV gives it), or None and why it cannot be."""
    damaged = _png_file_problem(path)
    if damaged is not None:
        return None, damaged
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as e:  # OpenCV's own refusals, e.g. more pixels than CV_IO_MAX_IMAGE_PIXELS
        return None, f"OpenCV refuses it ({e.err})"
    if image is not None:
        return image, ""
    video = video_kind(_head(path))
    return (
        None,
        "corrupt or unsupported" if video is None else f"it is {video[0]}, not an image (whatever its name)",
    )


def _head(path: Path, size: int = 12) -> bytes:
    """A file's first ``size`` bytes (none where it cannot be read)."""
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError:
        return b""


def video_kind(head: bytes) -> tuple[str, str] | None:
    """The kind of video container a file's first 12 bytes begin (an MP4/MOV, Matroska/WebM or AVI video) and
    its suffix; None for another."""
    if head[4:8] == b"ftyp":
        return "an MP4/MOV video", ".mp4"
    if head.startswith(EBML_MAGIC):
        return "a Matroska/WebM video", ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "an AVI video", ".avi"
    return None


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_problem(data: bytes) -> str | None:
    """What is wrong with the structure of a PNG file's bytes (cut short, a critical chunk failing its CRC), which
    OpenCV's libpng prints a line of its own about (``libpng error: PNG input buffer is incomplete``) where
    it is given them; None when they are sound, or no PNG (another decoder's matter)."""
    if not data.startswith(PNG_MAGIC):
        return None
    at = len(PNG_MAGIC)
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        end = at + 12 + length
        name = kind.decode("latin-1")
        if end > len(data):
            return f"the PNG file is truncated: it ends at byte {len(data)}, inside its {name!r} chunk"
        critical = not kind[0] & 0x20  # IHDR, PLTE, IDAT, IEND: libpng fails on those, drops another
        if critical and zlib.crc32(data[at + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            return f"the PNG file is corrupt: its {name!r} chunk at byte {at} fails its CRC check"
        if kind == b"IEND":
            return None
        at = end
    return f"the PNG file is truncated: it ends at byte {len(data)}, with no IEND chunk"


def _png_file_problem(path: Path) -> str | None:
    """``png_problem`` of a PNG file (None for another kind, or one that cannot be read here: OpenCV says)."""
    try:
        with path.open("rb") as f:
            if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
                return None
            return png_problem(PNG_MAGIC + f.read())
    except OSError:
        return None


def why_unopened(target: str | int) -> str:
    """Why OpenCV could not open a video file, where a local file tells: it cannot be read, or it is empty; else
    the general words (a file cut short, another format: OpenCV does not say)."""
    general = "unreadable, corrupt or not a video"
    if URI_SCHEME.match(str(target)):
        return general  # a file over http
    path = Path(str(target))
    try:
        with path.open("rb") as f:
            f.read(1)
            size = os.fstat(f.fileno()).st_size
            unfinished = _mp4_without_index(f, size)
    except OSError as e:
        return f"it cannot be read: {e.strerror or e}"
    if size == 0:
        return "the file is empty (0 bytes)"
    if unfinished is not None:
        return (
            f"the MP4/MOV file is truncated or unfinished: {unfinished} (a recording interrupted before it was "
            "closed, or a copy not complete); copy the whole file again, or repair it with a tool that rebuilds "
            "the index (untrunc, given a whole file of the same camera); a recording to Matroska (.mkv) or "
            "fragmented MP4 stays readable when cut"
        )
    return general


MP4_INDEX = b"moov"  # the top-level box of an MP4/MOV file that indexes its frames, often written last
_MP4_BOXES_LOOKED_AT = 4096  # top-level boxes read at most before giving up the look for the index


def _mp4_without_index(f: BinaryIO, size: int) -> str | None:
    """How an MP4/MOV file (an ISO media file: ``ftyp`` first) lacks its frame index, which OpenCV cannot open
    it without: no ``moov`` box before its end, or one cut short; None when it has one, or is no such file."""
    f.seek(0)
    at, first = 0, True
    for _ in range(_MP4_BOXES_LOOKED_AT):
        head = f.read(16)
        if len(head) < 8:
            return None if first else f"it ends at byte {size} with no index ('moov' box)"
        length, kind = struct.unpack(">I4s", head[:8])
        if first and kind != b"ftyp":
            return None
        first = False
        if length == 1 and len(head) == 16:
            length = struct.unpack(">Q", head[8:16])[0]
        elif length == 0:
            length = size - at  # the box runs to the end
        if length < 8:
            return None  # damaged otherwise: OpenCV's general words
        if kind == MP4_INDEX:
            return None if at + length <= size else f"its index ('moov' box) is cut short at byte {size}"
        if at + length > size:
            return f"it ends at byte {size}, inside its {kind.decode('latin-1')!r} box, with no index ('moov' box)"
        at += length
        f.seek(at)
    return None


def is_text_file(path: Path, probe: int = 4096) -> bool:
    """Whether the file begins with UTF-8 text (no control characters but tabs and line ends): FFmpeg plays such
    a file (a gt.txt) as a video of its characters. False for a file that cannot be read here (OpenCV then says
    why it cannot open it)."""
    try:
        with path.open("rb") as f:
            head = f.read(probe)
    except OSError:
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at the end is fine
    except UnicodeDecodeError:
        return False
    return bool(text) and all(c.isprintable() or c in "\t\r\n" for c in text)


def _make_reader(cfg: SourceConfig, kind: SourceKind, name: str, factory: CaptureFactory) -> _Reader:
    uri = cfg.uri.strip()
    if kind == "folder":
        return _FolderReader(_local_path(uri), cfg.folder_fps)
    target: str | int
    if kind == "webcam":
        m = _WEBCAM.match(uri)
        target = int(m.group(1)) if m else uri
    elif kind == "rtsp":
        _check_url(uri)
        target = uri
    elif URI_SCHEME.match(uri) and not uri.lower().startswith("file://"):
        target = uri  # a file served over http(s), read to its end like a local file
    else:
        check_video_file(
            cfg
        )  # FFmpeg would play a text file as a video of its characters, an image as one frame
        target = str(_local_path(uri))
    timeouts = (round(cfg.open_timeout_s * 1000), round(cfg.read_timeout_s * 1000))
    return _CaptureReader(CaptureRequest(kind, target, *timeouts), factory, name, cfg.folder_fps, cfg.fps)


# ---------------------------------------------------------------------------------------------- hand-off


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


class _End:
    pass


_Item = Frame | _Failed | _End


class _Buffer:
    """Bounded hand-off between the decoding thread and the consumer; ``close()`` wakes both sides at once."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Frame, drop_oldest: bool) -> bool:
        """Queue a frame; when full, wait (replay) or drop the oldest frame (live: returns True)."""
        with self._cond:
            dropped = False
            if drop_oldest and len(self._items) >= self._size:
                self._items.popleft()
                dropped = True
            while len(self._items) >= self._size and not self._closed:
                self._cond.wait()
            if not self._closed:
                self._items.append(frame)
                self._cond.notify_all()
            return dropped

    def depth(self) -> int:
        """Frames waiting now (an end or failure marker is not counted)."""
        with self._cond:
            return sum(1 for item in self._items if isinstance(item, Frame))

    def finish(self, item: _Failed | _End) -> None:
        """Queue the last item (end or failure): never dropped, never waits."""
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def get(self) -> _Item:
        """The next item; an end or failure stays at the head (sticky). ``_End`` once closed."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._closed:
                return _End()
            item = self._items[0]
            if isinstance(item, Frame):
                self._items.popleft()
                self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


# -------------------------------------------------------------------------------------------------- source


def frames_to_deliver(cfg: SourceConfig, count: int | None) -> int | None:
    """Frames a replay of ``count`` source frames delivers after ``stride`` and ``max_frames``; ``max_frames``
    (None when 0) when ``count`` is unknown or the file loops."""
    if count is None or count <= 0 or cfg.loop:
        return cfg.max_frames or None
    n = -(-count // cfg.stride)
    return min(n, cfg.max_frames) if cfg.max_frames else n


class FrameSource:
    """An iterator of :class:`Frame` decoded ahead on a background thread; a context manager.

    Build it with :func:`open_source`. ``fps``, ``frame_count`` and ``stats`` can be read at any time (from
    another thread too); ``fps`` and ``frame_count`` are known once started.
    """

    def __init__(
        self,
        cfg: SourceConfig,
        *,
        name: str | None = None,
        capture_factory: CaptureFactory | None = None,
        failed_opens: int = 0,
    ) -> None:
        self._cfg = cfg
        self.kind: SourceKind = source_kind(cfg)
        self.name = name or redact(cfg.uri.strip())
        where = redact(cfg.uri.strip())
        # what errors about its frames name: where it is, and the camera's name when it was given one
        self._label = where if self.name == where else f"{where} ({self.name})"
        for option, given in (("loop", cfg.loop), ("fps", cfg.fps is not None)):
            if given and self.kind != "file":
                raise SourceError(
                    f"source.{option} works with video files only, not a {self.kind} source ({self.name})"
                )
        self._reader = _make_reader(cfg, self.kind, self.name, capture_factory or opencv_capture)
        self._pass_start = 0  # frames_decoded when the current pass of a looped file began
        self._backoff = Backoff(
            cfg.reconnect_initial_s, cfg.reconnect_max_s, cfg.reconnect_attempts, jitter=_RECONNECT_JITTER
        )
        self._stats = SourceStats(reconnect_failures=failed_opens)  # tries before this one (startup_wait_s)
        self._failures = RepeatedFailure(cfg.log_every_s)
        self._buffer = _Buffer(cfg.queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending: _Decoded | None = None
        self._index = 0
        self._closed = False

    # ---- public properties

    @property
    def live(self) -> bool:
        """True for RTSP/HTTP streams and webcams: frames may be dropped, reads reconnect."""
        return self._reader.live

    @property
    def fps(self) -> float:
        """Nominal frame rate: the container's, else ``cfg.folder_fps``."""
        return self._reader.fps or self._cfg.folder_fps

    @property
    def delivered_fps(self) -> float:
        """Frames delivered per second of source time: ``fps`` / ``stride`` (the rate of an annotated video)."""
        return self.fps / self._cfg.stride

    @property
    def frame_count(self) -> int | None:
        """Frames this source will deliver (after stride and max_frames); None for live or unknown lengths."""
        return None if self.live else frames_to_deliver(self._cfg, self._reader.count)

    @property
    def stats(self) -> SourceStats:
        """A snapshot of the counters."""
        return replace(self._stats)

    @property
    def queued(self) -> int:
        """Decoded frames waiting for the consumer now (at most ``queue_size``)."""
        return self._buffer.depth()

    # ---- lifecycle

    def start(self) -> FrameSource:
        """Open the source, read its first frame and start decoding; raises SourceError if any of it fails."""
        with self._lock:
            if self._closed:
                raise SourceError(f"source {self.name!r} is closed")
            if self._thread is not None:
                return self
            self._pending = self._open_first()
            self._thread = threading.Thread(target=self._run, name=f"source:{self.name}", daemon=True)
            self._thread.start()
        return self

    def _open_first(self) -> _Decoded:
        self._reader.open()
        self._stats.connected = True
        try:
            first = self._read()
            if first is None:
                raise SourceError(f"no frame could be read from {self._label}: {self._reader.last_error}")
        except BaseException:
            self._reader.close()
            self._stats.connected = False
            raise
        self._stats.frames_decoded += 1
        return first

    def close(self) -> None:
        """Stop decoding and release the source; returns promptly, idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop.set()
        self._buffer.close()
        if thread is None:
            self._reader.close()
            return
        if thread is not threading.current_thread():
            thread.join(max(self._cfg.open_timeout_s, self._cfg.read_timeout_s) + _JOIN_GRACE_S)
        if thread.is_alive():
            log.warning("source %s: decoder still blocked in a read; it releases the source later", self.name)

    def __enter__(self) -> FrameSource:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        if self._thread is None:
            self.start()
        item = self._buffer.get()
        if isinstance(item, Frame):
            self._stats.frames_delivered += 1
            return item
        if isinstance(item, _Failed):
            raise SourceError(f"frame source {self.name!r} failed: {item.error}") from item.error
        raise StopIteration

    # ---- decoding thread

    def _run(self) -> None:
        outcome: _Failed | _End = _End()
        try:
            self._produce()
        except Exception as e:
            outcome = _Failed(e)
        finally:
            try:
                self._reader.close()
            finally:
                self._stats.connected = False
                self._buffer.finish(outcome)

    def _produce(self) -> None:
        got, self._pending = self._pending, None
        while got is not None and not self._stop.is_set():
            self._emit(*got)
            if self._cfg.max_frames and self._index >= self._cfg.max_frames:
                return
            if not self._skip(self._cfg.stride - 1):
                return
            got = self._pull()

    def _emit(self, image: ImageBGR, timestamp: float, monotonic: float | None) -> None:
        frame = Frame(
            self._stats.frames_decoded - 1, timestamp, image, self.name, self._pass_start, monotonic
        )
        self._index += 1
        if self._buffer.put(frame, drop_oldest=self.live):
            self._stats.frames_dropped += 1

    def _timed(self, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self._stats.decode_seconds += time.perf_counter() - t0

    def _got_frame(self) -> None:
        self._stats.frames_decoded += 1
        self._backoff.reset()

    def _read(self) -> _Decoded | None:
        """The reader's next frame. One it skipped as undecodable (a folder's corrupt image, a file's damaged
        frame) is taken from the source still (the frames after it keep their numbers), counted, and the stride
        goes on from it, as if it had been delivered; None at an end or a failure. Frames a file's reader found
        lost only by the time of the frame it read (``_CaptureReader._number_by_time``) are counted so too, and
        that frame is delivered."""
        while True:
            got = self._timed(self._reader.read)
            if not self._count_skipped() or got is not None:
                return got
            for _ in range(self._cfg.stride - 1):  # at the end, the next read says so
                if self._stop.is_set() or not self._timed(self._reader.grab):
                    break
                self._count_skipped()
                self._got_frame()

    def _count_skipped(self) -> int:
        """The frames the reader passed over as undecodable since it was last asked, counted as taken."""
        skipped = self._reader.skipped - self._stats.frames_skipped
        self._stats.frames_skipped += skipped
        self._stats.frames_decoded += skipped
        return skipped

    def _pull(self) -> _Decoded | None:
        """The next decoded frame, reconnecting a live stream; None at the end of a file or when stopped."""
        while not self._stop.is_set():
            got = self._read()
            if got is not None:
                self._got_frame()
                return got
            if not self._recover():
                return None
        return None

    def _skip(self, n: int) -> bool:
        """Grab ``n`` frames without decoding them (stride); False at the end of a file or when stopped. Frames of
        a file that could not be decoded are passed over among them (counted, as ``_read`` does)."""
        done = 0
        while done < n and not self._stop.is_set():
            if self._timed(self._reader.grab):
                self._count_skipped()
                self._got_frame()
                done += 1
            elif lost := self._count_skipped():  # passed over as undecodable: the frame after them is held
                done += lost
            elif not self._recover():
                return False
        return not self._stop.is_set()

    def _recover(self) -> bool:
        """After a failed read: False at the end of a file (unless looped); reconnect a live stream (False if
        stopped)."""
        if not self._reader.live:
            return self._replay_ended()
        self._stats.last_error = self._reader.last_error
        return self._reconnect()

    def _replay_ended(self) -> bool:
        """At the end of a file or folder: warn if it ended early; True after a looped file started again."""
        expected = self._reader.count
        read = self._stats.frames_decoded - self._pass_start
        if expected is not None and read < expected:
            self._warn_short(read, expected)
        if not self._cfg.loop or read == 0:  # a pass that read nothing would loop forever
            return False
        self._reader.close()
        self._reader.open()
        self._pass_start = self._stats.frames_decoded
        self._stats.loops += 1
        return True

    def _warn_short(self, read: int, expected: int) -> None:
        """A file that gave fewer frames than its container counts: it ended early (a read failed), or it was
        read to its end, and then it has a variable frame rate (MKV and WebM hold no count: OpenCV gives their
        duration times the nominal rate) or its decoder skipped frames it could not decode."""
        if not self._reader.at_end():
            self._stats.last_error = self._reader.last_error
            log.warning(
                "source %s ended after %d of %d frames: %s",
                self._label,
                read,
                expected,
                self._reader.last_error,
            )
            return
        log.warning(
            "source %s: read to its end, %d frames where its container counts %d: a variable frame rate, or frames "
            "that could not be decoded were skipped (the frame numbers after them are then that many short of the "
            "video's)",
            self._label,
            read,
            expected,
        )

    def _reconnect(self) -> bool:
        """Open the stream again, with the backoff, until it opens (True) or a stop (False); each failure is
        logged as ``RepeatedFailure`` collapses them, and the recovery with how many tries failed over how long."""
        self._stats.connected = False
        self._reader.close()
        down, failed = time.monotonic(), 0
        while True:
            delay = self._backoff.next_delay()
            if delay is None:
                raise SourceError(
                    f"gave up on {self.name} after {self._backoff.tried} reconnect attempts in a row; "
                    f"last error: {self._stats.last_error}"
                )
            why = self._stats.last_error
            self._failures.warn(why, "source %s: %s; reconnecting in %.2f s", self.name, why, delay)
            if self._stop.wait(delay):
                return False
            try:
                self._reader.open()
            except SourceError as e:
                self._stats.reconnect_failures += 1
                self._stats.last_error = str(e)
                failed += 1
                continue
            self._stats.reconnects += 1
            self._stats.connected = True
            self._failures.recovered()
            log.info(
                "source %s: reconnected after %.1f s (%d failed %s)",
                self.name,
                time.monotonic() - down,
                failed,
                "try" if failed == 1 else "tries",
            )
            return True


def open_source(
    cfg: SourceConfig,
    *,
    name: str | None = None,
    capture_factory: CaptureFactory | None = None,
    failed_opens: int = 0,
) -> FrameSource:
    """Open a frame source and start decoding; raises SourceError naming the source when it cannot be opened.

    ``name`` (default: the uri without its password) labels frames, logs and errors; ``capture_factory``
    replaces ``cv2.VideoCapture`` (tests); ``failed_opens``: tries to open it that failed before this one
    (:func:`open_source_waiting`), counted in ``stats.reconnect_failures`` with those of its reconnections.
    """
    return FrameSource(cfg, name=name, capture_factory=capture_factory, failed_opens=failed_opens).start()


def open_source_waiting(
    cfg: SourceConfig,
    stop: threading.Event,
    *,
    name: str | None = None,
    capture_factory: CaptureFactory | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> FrameSource | None:
    """:func:`open_source`, except that a live source (stream, webcam) that cannot be opened is tried again with
    the reconnect backoff for up to ``cfg.startup_wait_s``, each failure given to ``on_retry`` (in words),
    logged as :class:`RepeatedFailure` collapses them and counted in the source's ``stats.reconnect_failures``;
    then the last SourceError is raised. Returns None when
    ``stop`` is set before or while waiting. Files and folders fail at once."""
    began = time.monotonic()
    deadline = began + cfg.startup_wait_s
    backoff = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s)
    failures = RepeatedFailure(cfg.log_every_s)
    while not stop.is_set():
        try:
            src = open_source(cfg, name=name, capture_factory=capture_factory, failed_opens=backoff.tried)
        except SourceError as e:
            left = deadline - time.monotonic()  # the last delay is cut to the deadline: tried once more there
            delay = min(backoff.next_delay() or cfg.reconnect_max_s, left)
            if source_kind(cfg) not in ("rtsp", "webcam") or left <= 0:
                if cfg.startup_wait_s > 0 and backoff.tried > 1:
                    raise SourceError(
                        f"{e} (tried for {cfg.startup_wait_s:g} s: source.startup_wait_s)"
                    ) from e
                raise
            failures.warn(str(e), "%s; trying again in %.1f s (source.startup_wait_s)", e, delay)
            if on_retry is not None:
                on_retry(f"{e}; trying again in {delay:.1f} s")
        else:
            if backoff.tried:
                log.info(
                    "source %s: opened after %.1f s (%d failed %s)",
                    src.name,
                    time.monotonic() - began,
                    backoff.tried,
                    "try" if backoff.tried == 1 else "tries",
                )
            return src
        stop.wait(delay)
    return None
