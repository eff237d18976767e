"""Embedding results: images, crops, boxes, image files, folders or a video -> one typed, saveable record.

``embed`` takes any of these inputs and returns an :class:`EmbeddingResult`:

* an HxWx3 uint8 BGR image: the whole image is one crop, or each box of ``boxes`` (N, 4) x0,y0,x1,y1 is one
  (clipped to the image, as embedded and recorded; BoxError, a ValueError, for a box with no area, not
  finite, or outside the image), or each person the ``detector`` finds is one;
* a sequence of images (crops): one row each;
* an image file, a sequence of image files, or a folder of images (natural order, optionally recursive):
  one row per image (the whole image), or one per person box the ``detector`` finds (``largest``: only the
  largest box of each image);
* a video file: every ``every``-th frame, the whole frame or the detector's person boxes.

Rows are L2-normalised float32 (``embeddings`` (N, D), ``embedding`` the first row); ``meta`` holds the model
name, whether mirror averaging was on, one :class:`CropRef` per row (source file, frame index, box in source
pixels, detector score) and :class:`Timings` in milliseconds. ``save`` / ``load`` round-trip it through
``.npz`` (read with ``allow_pickle=False``) or ``.json``; a bad file raises :class:`DataError` naming it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import secrets
import stat
import time
import zipfile
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol, runtime_checkable

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from daemon.config import RecognitionConfig, SourceConfig
from daemon.errors import DataError
from daemon.sources import IMAGE_EXTENSIONS, natural_key, open_source, png_problem, video_kind
from daemon.tempdirs import Leftovers, remove_files
from daemon.types import Detections, Detector, Embedder, FloatArray, Frame, ImageBGR

logger = logging.getLogger(__name__)

FORMAT: Final = "reid-daemon.embeddings"
VERSION: Final = 1
SUFFIXES: Final = (".npz", ".json")  # what EmbeddingResult.save writes, chosen by the suffix
NORM_TOLERANCE: Final = 1e-3
"""A loaded row whose L2 norm is further than this from 1 is rejected (the file is not our output)."""
TIMING_KEYS: Final = ("read_ms", "detect_ms", "embed_ms", "total_ms")

Box = tuple[float, float, float, float]
StrPath = str | os.PathLike[str]
ErrorHandler = Callable[[Path, str], None]


@runtime_checkable
class CropEmbedder(Embedder, Protocol):
    """An embedder that also takes ready-cut crops in one batched call (both built-in embedders do)."""

    def embed_crops(self, crops: Sequence[ImageBGR]) -> FloatArray: ...


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class CropRef:
    """Where one row came from: ``source`` file ("" for an array in memory), 0-based video ``frame`` (-1 for
    a still image), ``box`` x0,y0,x1,y1 in source pixels and the detector's ``score`` (None without one)."""

    source: str
    frame: int
    box: Box
    score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "frame": self.frame, "box": list(self.box), "score": self.score}


@dataclass(frozen=True, slots=True)
class Timings:
    """Milliseconds spent reading / decoding, detecting, embedding, and in all."""

    read_ms: float = 0.0
    detect_ms: float = 0.0
    embed_ms: float = 0.0
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in TIMING_KEYS}

    def __add__(self, other: Timings) -> Timings:
        return Timings(*(getattr(self, k) + getattr(other, k) for k in TIMING_KEYS))


@dataclass(frozen=True, slots=True)
class EmbeddingMeta:
    """Model name, mirror averaging, one :class:`CropRef` per row, and the timings."""

    model: str
    crops: tuple[CropRef, ...]
    timings: Timings = field(default_factory=Timings)
    flip_average: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "flip_average": self.flip_average,
            "timings_ms": self.timings.as_dict(),
            "crops": [c.as_dict() for c in self.crops],
        }


@dataclass(frozen=True)
class EmbeddingResult:
    """L2-normalised float32 ``embeddings`` (N, D) (a read-only copy) and their ``meta`` (one crop per row)."""

    embeddings: FloatArray
    meta: EmbeddingMeta

    def __post_init__(self) -> None:
        e = np.array(self.embeddings, dtype=np.float32, copy=True)
        if e.ndim != 2:
            raise ValueError(f"embeddings must be (N, D), got shape {e.shape}")
        if len(self.meta.crops) != e.shape[0]:
            raise ValueError(f"{e.shape[0]} embeddings but {len(self.meta.crops)} crop references")
        if not np.isfinite(e).all():
            raise ValueError("embeddings hold NaN or infinite values")
        norms = np.linalg.norm(e, axis=1)
        if len(e) and np.abs(norms - 1.0).max() > NORM_TOLERANCE:
            raise ValueError(
                f"embeddings must be L2-normalised rows (norms {norms.min():.4f}..{norms.max():.4f})"
            )
        e.setflags(write=False)
        object.__setattr__(self, "embeddings", e)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def embedding(self) -> FloatArray:
        """The first row (D,); ValueError when nothing was embedded (no person found, empty input)."""
        if len(self) == 0:
            raise ValueError("the result holds no embedding (no crop was embedded)")
        row: FloatArray = self.embeddings[0]
        return row

    @property
    def crops(self) -> tuple[CropRef, ...]:
        return self.meta.crops

    def mean(self) -> FloatArray:
        """The L2-normalised mean of all rows (D,): one vector for several views of one person."""
        return _unit(self.embedding if len(self) == 1 else self.embeddings.mean(axis=0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "dim": self.dim,
            **self.meta.as_dict(),
            "embeddings": self.embeddings.tolist(),
        }

    def save(self, path: StrPath) -> Path:
        """Write ``.npz`` or ``.json`` (by suffix), atomically (temp file, fsync, rename)."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".json":
            data = json.dumps(self.as_dict()).encode("utf-8")
        elif suffix == ".npz":
            data = _npz_bytes(self)
        else:
            raise DataError(
                f"{p}: embeddings are saved as {' or '.join(SUFFIXES)}, not {p.suffix or 'no suffix'}"
            )
        try:
            return atomic_write(p, data)
        except OSError as e:
            raise DataError(f"cannot save the embeddings as {p}: {e}") from e

    @classmethod
    def load(cls, path: StrPath) -> EmbeddingResult:
        """Read a file written by ``save``; DataError naming the file when it is missing or malformed."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"embedding file not found: {p}")
        suffix = p.suffix.lower()
        if suffix == ".npz":
            return _load_npz(p)
        if suffix == ".json":
            return _load_json(p)
        raise DataError(f"{p}: expected an .npz or .json embedding file")

    @staticmethod
    def concat(results: Sequence[EmbeddingResult]) -> EmbeddingResult:
        """One result holding the rows of all ``results`` in order (same dim; model of the first)."""
        if not results:
            raise ValueError("nothing to concatenate")
        dims = {r.dim for r in results}
        if len(dims) != 1:
            raise ValueError(f"cannot concatenate results of different dims {sorted(dims)}")
        timings = Timings()
        for r in results:
            timings = timings + r.meta.timings
        first = results[0].meta
        meta = EmbeddingMeta(
            first.model, tuple(c for r in results for c in r.crops), timings, first.flip_average
        )
        return EmbeddingResult(np.concatenate([r.embeddings for r in results]), meta)


def _unit(v: NDArray[Any]) -> FloatArray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    out: FloatArray = (v / n if n > 0 else v).astype(np.float32)
    return out


_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive's first entry, or the end of an empty one


def npz_start_problem(path: Path) -> str | None:
    """What is wrong with ``path`` as a .npz when it does not start as a zip archive does, else None: numpy
    reads any other file as a bare .npy array or a pickle, whichever its first bytes look like, and its errors
    then say nothing of an archive ('This file contains pickled (object) data'). OSError when it cannot be read.
    """
    with Path(path).open("rb") as fh:
        start = fh.read(4)
    if not start:
        return "not a .npz archive: the file is empty"
    if start not in _ZIP_STARTS:
        return f"not a .npz archive (another file type, cut short or damaged: it starts with {start!r})"
    return None


def output_file_problem(path: Path) -> str | None:
    """Why ``atomic_write`` could not write ``path``, found before the work that makes its content (None when
    nothing is seen against it): a folder there, a file where its folder would be, a folder not writable.
    Nothing is made or changed."""
    path = Path(path)
    try:
        if path.is_dir():
            return "is a folder"
    except OSError as e:  # a name longer than a file name may be
        return e.strerror or str(e)
    read_only = read_only_problem(path)
    if read_only is not None:
        return read_only
    problem = output_folder_problem(path.parent)
    if problem == "is not writable":
        return f"its folder {path.parent} is not writable"
    return f"{path.parent} {problem}" if problem is not None and problem.startswith("is ") else problem


def read_only_problem(path: Path) -> str | None:
    """``path`` is a file made read-only (no write bit, or none for this user): a replace by rename would write
    over it all the same, where its owner asked for it to be kept; None otherwise (no file: nothing to keep)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode) or (mode & 0o222 and os.access(path, os.W_OK)):
        return None
    return (
        f"is read-only (mode {stat.S_IMODE(mode):o}): it is kept; make it writable (chmod u+w) to change it"
    )


def replaced_problem(path: Path) -> str | None:
    """Why ``save`` must not write over ``path``, found before the work: it is there and is not an embedding
    file (a gallery given as ``embed --out``, another program's file), whose content would be lost; None for no
    file, or an embedding file (made again, as a run of embed again does)."""
    path = Path(path)
    if not path.is_file():
        return None  # nothing there (a folder: output_file_problem)
    try:
        EmbeddingResult.load(path)
    except DataError as e:
        why = str(e).removeprefix(f"{path}: ")
        return (
            f"is not an embedding file embed wrote ({why}): its content would be lost: give another --out, or move "
            "it away"
        )
    return None


def output_folder_problem(folder: Path) -> str | None:
    """Why files could not be written into ``folder`` (made with its parents when absent), found before the
    work (None when nothing is seen against it): a file there or where a folder above it would be, the folder
    (or the nearest one there is above it) not writable. Nothing is made or changed."""
    there = Path(folder)
    try:
        while not there.exists() and there != there.parent:  # the folders a mkdir(parents=True) would make
            there = there.parent
    except OSError as e:  # a folder's name longer than a file name may be
        return e.strerror or str(e)
    if not there.is_dir():
        return "is not a folder" if there == Path(folder) else f"{there} is not a folder"
    if not os.access(there, os.W_OK):
        return f"its folder {there} is not writable" if there != Path(folder) else "is not writable"
    return None


_TMP_STEM_BYTES = 200  # a temp file's name is its file's (this much of it) and 18 bytes more: under 255


def temp_stem(name: str) -> str:
    """``name`` cut to ``_TMP_STEM_BYTES`` of UTF-8 (on a character's edge), as the temporary files of the file
    named ``name`` carry it (what ``temp_target`` gives for them): a file name of the longest length a file
    system allows leaves no room for the temporary file's additions."""
    return name.encode("utf-8", "surrogateescape")[:_TMP_STEM_BYTES].decode("utf-8", "ignore")


def temp_name(path: Path, suffix: str = "") -> Path:
    """A new temporary file's path for ``path``, in its folder: ``.<name>.<12 hex>.tmp`` (the name cut:
    ``temp_stem``), ``suffix`` after it for a writer that picks the format by the name (a video's ``.mp4``)."""
    return path.parent / f".{temp_stem(path.name)}.{secrets.token_hex(6)}.tmp{suffix}"


def _take_over(fd: int, replaced: os.stat_result) -> None:
    """Give the open file ``fd`` the owner, group and mode of the file it is to replace, as far as this process
    may (changing the owner takes root; a group, one of this user's groups): the mode in any case."""
    if (replaced.st_uid, replaced.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(PermissionError):
            os.fchown(fd, replaced.st_uid, replaced.st_gid)
    os.chmod(fd, stat.S_IMODE(replaced.st_mode))  # after fchown, which may clear set-id bits


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` (bytes, or a function writing to the open file) to ``path`` through a temp file in the
    same folder (flush, fsync, rename, then fsync the folder where the platform allows it).

    The file gets the mode a file made with ``open`` would (0666 less the umask), or keeps the mode of the
    file it replaces: a temp file of ``tempfile.mkstemp`` is 0600, and other users (a service reading a
    gallery someone enrolled) could no longer read it once renamed. It keeps that file's owner and group too
    where this process may give them (root: ``forget`` run as root over a service's folders, deploy/README.md);
    else it is this process's, as a new file is.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as to any new file
    try:
        with os.fdopen(fd, "wb") as fh:
            with contextlib.suppress(FileNotFoundError):
                _take_over(fh.fileno(), path.stat())
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path


_TEMP_NAME = re.compile(r"\.(.+)\.[0-9a-f]{12}\.tmp", re.DOTALL)  # atomic_write's: .<name>.<12 hex>.tmp

LEFTOVER_AGE_S: Final = 600.0
"""How long ago a temporary file of ``atomic_write`` must have been last written for a cleaner that holds no lock
its writers take to count it left over (``remove_leftovers``'s ``before``). A live writer's file is there only
while one file is written and synced (its mtime moves with every write): seconds, a minute for the largest
rewrite on a slow disk; one ten minutes still is a killed writer's."""


def temp_target(name: str) -> str | None:
    """The name of the file whose ``atomic_write`` temporary file is named ``name`` (cut to its first 200
    bytes, as ``atomic_write`` cuts it: ``temp_stem``); None for a name of any other kind."""
    m = _TEMP_NAME.fullmatch(name)
    return None if m is None else m.group(1)


def may_be_cut(target: str) -> bool:
    """Whether ``target`` (``temp_target``'s) may be a longer name cut short (``temp_stem``): whose end, its
    suffix, the temporary file's name does not show."""
    return len(target.encode("utf-8", "surrogateescape")) > _TMP_STEM_BYTES - 4  # cut on a character's edge


def remove_leftovers(
    folder: Path, ours: Callable[[str], bool], before: float | None = None, suffix: str = ""
) -> Leftovers:
    """Remove the temporary files ``atomic_write`` left in ``folder`` (not in its sub-folders) for the files
    whose names ``ours`` takes (given ``temp_target``'s name): what a writer killed between writing and
    renaming left there for good. With ``before`` (a ``time.time()``), only those last written before it: the
    caller holds no lock that every writer of those files takes. With ``suffix``, those named so with it after
    (``temp_name``'s, for a writer that picks the file's format by its name: cv2.VideoWriter). Plain files only
    (a link or a folder of such a name is no leftover of ``atomic_write``). A folder that cannot be listed has
    none removed; a file that cannot be removed is logged and left."""

    def taken(name: str) -> bool:
        target = temp_target(name[: len(name) - len(suffix)]) if name.endswith(suffix) else None
        return target is not None and ours(target)

    return remove_files(folder, taken, before)


# ---------------------------------------------------------------------------------------------- files


def _npz_bytes(r: EmbeddingResult) -> bytes:
    crops = r.crops
    buf = io.BytesIO()
    np.savez(
        buf,
        format=np.asarray(FORMAT),
        version=np.asarray(VERSION, dtype=np.int64),
        model=np.asarray(r.meta.model),
        flip_average=np.asarray(r.meta.flip_average),
        embeddings=r.embeddings,
        sources=np.asarray([c.source for c in crops], dtype=np.str_).reshape(len(crops)),
        frames=np.asarray([c.frame for c in crops], dtype=np.int64).reshape(len(crops)),
        boxes=np.asarray([c.box for c in crops], dtype=np.float64).reshape(len(crops), 4),
        scores=np.asarray([np.nan if c.score is None else c.score for c in crops], dtype=np.float64),
        timings_ms=np.asarray([getattr(r.meta.timings, k) for k in TIMING_KEYS], dtype=np.float64),
    )
    return buf.getvalue()


_NPZ_KEYS: Final = (
    "format",
    "version",
    "model",
    "flip_average",
    "embeddings",
    "sources",
    "frames",
    "boxes",
    "scores",
    "timings_ms",
)


def _read_npz(path: Path) -> dict[str, NDArray[Any]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path}: not a reid-daemon embedding file (missing {', '.join(missing)})")
            return {k: np.asarray(z[k]) for k in _NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{path}: unreadable or corrupt .npz embedding file ({e})") from e


def _load_npz(path: Path) -> EmbeddingResult:
    z = _read_npz(path)
    _check_format(path, str(z["format"]), int(z["version"]))
    n = len(z["sources"])
    if z["frames"].shape != (n,) or z["boxes"].shape != (n, 4) or z["scores"].shape != (n,):
        raise DataError(f"{path}: crop arrays disagree in length ({n} sources)")
    if z["timings_ms"].shape != (len(TIMING_KEYS),):
        raise DataError(f"{path}: timings_ms must hold {len(TIMING_KEYS)} values")
    try:
        crops = tuple(
            CropRef(str(s), int(f), _box(b), None if math.isnan(float(sc)) else float(sc))
            for s, f, b, sc in zip(z["sources"], z["frames"], z["boxes"], z["scores"], strict=True)
        )
    except ValueError as e:
        raise DataError(f"{path}: malformed embedding file ({e})") from e
    meta = EmbeddingMeta(
        str(z["model"]), crops, Timings(*(float(t) for t in z["timings_ms"])), bool(z["flip_average"])
    )
    return _checked(path, z["embeddings"], meta)


def _box(values: Sequence[float] | NDArray[Any]) -> Box:
    b = [float(v) for v in values]
    if len(b) != 4:
        raise ValueError(f"a box needs 4 values, got {len(b)}")
    if not all(math.isfinite(v) for v in b):
        raise ValueError(f"box values must be finite, got {b}")
    return (b[0], b[1], b[2], b[3])


def _flag(value: Any) -> bool:
    """A JSON true or false (bool("no") is True)."""
    if not isinstance(value, bool):
        raise ValueError(f"flip_average must be true or false, got {value!r}")
    return value


def _check_format(path: Path, tag: str, version: int) -> None:
    if tag != FORMAT:
        raise DataError(f"{path}: not a reid-daemon embedding file (format {tag!r})")
    if version != VERSION:
        raise DataError(f"{path}: embedding file version {version} is not supported (this reads {VERSION})")


def _checked(path: Path, embeddings: Any, meta: EmbeddingMeta) -> EmbeddingResult:
    try:
        e = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: embeddings are not a numeric matrix ({err})") from err
    if e.ndim != 2 or e.shape[0] != len(meta.crops):
        raise DataError(f"{path}: embeddings of shape {e.shape} do not match {len(meta.crops)} crops")
    if not np.isfinite(e).all():
        raise DataError(f"{path}: embeddings hold NaN or infinite values")
    norms = np.linalg.norm(e, axis=1)
    if len(e) and np.abs(norms - 1.0).max() > NORM_TOLERANCE:
        raise DataError(
            f"{path}: embeddings are not L2-normalised (norms {norms.min():.4f}..{norms.max():.4f})"
        )
    return EmbeddingResult(e, meta)


def _load_json(path: Path) -> EmbeddingResult:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # nested too deep
        raise DataError(f"{path}: unreadable JSON embedding file ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a reid-daemon embedding file (top level is not an object)")
    _check_format(path, str(data.get("format")), _int(path, data.get("version"), "version"))
    try:
        crops = tuple(_crop_from(c) for c in data["crops"])
        timings = data["timings_ms"]
        meta = EmbeddingMeta(
            str(data["model"]),
            crops,
            Timings(*(float(timings[k]) for k in TIMING_KEYS)),
            _flag(data["flip_average"]),
        )
        rows = data["embeddings"]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: malformed embedding file ({type(e).__name__}: {e})") from e
    dim = _int(path, data.get("dim"), "dim")
    result = _checked(path, rows if rows else np.zeros((0, dim)), meta)
    if result.dim != dim:
        raise DataError(f"{path}: rows have {result.dim} values but dim says {data.get('dim')}")
    return result


def _int(path: Path, value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DataError(f"{path}: {name} must be a non-negative integer, got {value!r}")
    return value


def _crop_from(c: dict[str, Any]) -> CropRef:
    score = c["score"]
    return CropRef(str(c["source"]), int(c["frame"]), _box(c["box"]), None if score is None else float(score))


# ---------------------------------------------------------------------------------------------- inputs


NOT_UTF8: Final = "written in another encoding, Latin-1 say: rename it"
"""What to do about a file name that is not UTF-8 (``is_utf8``)."""


def is_utf8(name: str | Path) -> bool:
    """Whether the file name or path ``name`` (as Python reads it: bytes that are not UTF-8 become lone
    surrogates) is UTF-8, so that a label, a URL, and OpenCV (whose Python binding kills the process on such a
    name: a segfault) can take it."""
    try:
        str(name).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(name: str | Path) -> str:
    """``name`` printable whatever its bytes: those that are not UTF-8 as ``\\xe9``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def read_image(path: StrPath) -> ImageBGR:
    """An image file as HxWx3 uint8 BGR; DataError naming the path when it is missing or cannot be decoded."""
    p = Path(path)
    if p.is_symlink() and not p.exists():
        raise DataError(f"broken link: {p} -> {os.readlink(p)}")
    if not p.is_file():
        raise DataError(f"image not found: {p}" if not p.exists() else _not_a_file(p))
    try:
        raw = np.fromfile(p, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read image {p}: {e}") from e
    damaged = png_problem(raw.tobytes())  # libpng would print its own line (stderr) before failing
    if damaged is not None:
        raise DataError(f"cannot decode image {p}: {damaged}")
    try:
        image = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    except cv2.error as e:  # OpenCV's own refusals, e.g. more pixels than CV_IO_MAX_IMAGE_PIXELS
        reason = f"its check {e.err} failed" if e.code == cv2.Error.StsAssert else e.err
        raise DataError(f"cannot decode image {p}: OpenCV refuses it ({reason})") from e
    if image is None or image.size == 0:
        video = video_kind(raw[:12].tobytes())
        if video is not None:
            raise DataError(f"cannot decode image {p}: {_a_video(p, *video)}")
        raise DataError(f"cannot decode image {p} (corrupt, empty or not an image)")
    out: ImageBGR = np.ascontiguousarray(image, dtype=np.uint8)
    return out


def _not_a_file(path: Path) -> str:
    """What ``read_image`` says of a path that is there and is no regular file."""
    if path.is_dir():
        return f"{path} is a folder, not an image file: give the images in it ({path / '*.jpg'})"
    return f"{path} is not a regular file (a named pipe, a device), not an image file"


def _a_video(path: Path, kind: str, suffix: str) -> str:
    """What ``read_image`` says of a file that is a video of ``kind``: under an image's name, how to name it."""
    if not is_image_file(path):
        return f"it is {kind}, not an image: give a photo or crop of the person"
    return (
        f"it is {kind}, not an image (whatever its name): give a photo or crop of the person; to read it as the "
        f"video it is (embed, search), name it {suffix}"
    )


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def not_an_image(path: Path) -> str:
    """Why a file a folder listing holds is not taken as an image."""
    return f"not an image file ({path.suffix or 'no extension'})"


def skipped_lines(skipped: Sequence[tuple[str | Path, str]], most: int = 20) -> list[str]:
    """A report's lines listing the files it skipped (``(path, reason)``): the first ``most``, then how many more
    (all of them are in its JSON); none for none."""
    if not skipped:
        return []
    lines = [f"skipped {len(skipped)} file(s):", *(f"  {shown(p)}: {r}" for p, r in skipped[:most])]
    if len(skipped) > most:
        lines.append(f"  ... and {len(skipped) - most} more (--json lists all)")
    return lines


def list_image_files(folder: StrPath, recursive: bool = False) -> list[Path]:
    """Image files (jpg, jpeg, png, bmp, webp) of a folder in natural order; hidden files are left out.

    DataError naming the folder when it is missing or not a folder.
    """
    root = Path(folder)
    if not root.exists():
        raise DataError(f"folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    return [p for p in list_files(root, recursive) if is_image_file(p)]


def list_files(root: Path, recursive: bool) -> list[Path]:
    """Every visible file of ``root`` (and its sub-folders when recursive), in natural order of the path.

    A broken link is listed too, so that reading it fails naming it rather than the file going unnoticed."""
    found = root.rglob("*") if recursive else root.iterdir()
    files = [
        p
        for p in found
        if (p.is_file() or (p.is_symlink() and not p.exists()))
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(root))))


def whole_box(image: ImageBGR) -> Box:
    h, w = image.shape[:2]
    return (0.0, 0.0, float(w), float(h))


def largest(dets: Detections) -> Detections:
    """Only the largest box (by area) of ``dets`` (empty stays empty)."""
    if len(dets) <= 1:
        return dets
    wh = dets.xyxy[:, 2:4] - dets.xyxy[:, 0:2]
    return dets.select(np.asarray([int(np.argmax(wh[:, 0] * wh[:, 1]))], dtype=np.intp))


def embed_crops(embedder: Embedder, crops: Sequence[ImageBGR]) -> FloatArray:
    """One row per crop, batched when the embedder takes crops (else each crop is its own whole image)."""
    if isinstance(embedder, CropEmbedder):
        return embedder.embed_crops(crops)
    if not crops:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    rows = [embedder.embed(c, np.asarray([whole_box(c)], dtype=np.float32)) for c in crops]
    return np.concatenate(rows).astype(np.float32)


class StageClock:
    """Accumulates milliseconds per stage (read_ms, detect_ms, embed_ms) since it was made."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ms = {k: 0.0 for k in TIMING_KEYS[:3]}

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.ms[stage] += (now - since) * 1000.0
        return now

    def timings(self) -> Timings:
        total = (time.perf_counter() - self.start) * 1000.0
        return Timings(self.ms["read_ms"], self.ms["detect_ms"], self.ms["embed_ms"], total)


_RECOGNITION = RecognitionConfig()  # EmbedOptions' defaults: the config's, never a second set


@dataclass(frozen=True)
class EmbedOptions:
    """How ``embed`` finds crops: ``detector`` boxes (``largest`` only), every ``every``-th video frame
    (``recognition.video_every`` unless given) up to ``max_frames`` (0 = all), sub-folders when ``recursive``;
    ``model`` names the embedder in the meta."""

    detector: Detector | None = None
    largest: bool = False
    every: int = _RECOGNITION.video_every
    max_frames: int = 0
    recursive: bool = False
    model: str = ""
    progress: bool = False
    on_error: ErrorHandler | None = None
    """Where an image that cannot be read, and a folder's file that is not an image, go (``(path, reason)``),
    skipped; None: an image that cannot be read raises DataError and a folder's other files are left out."""


class _Collector:
    """Rows and crop references gathered frame by frame."""

    def __init__(self, embedder: Embedder, opts: EmbedOptions) -> None:
        self.embedder = embedder
        self.opts = opts
        self.clock = StageClock()
        self.rows: list[FloatArray] = []
        self.crops: list[CropRef] = []

    def boxes_of(self, frame: Frame) -> tuple[FloatArray, list[float | None]]:
        det = self.opts.detector
        if det is None:
            return np.asarray([whole_box(frame.image)], dtype=np.float32), [None]
        t = time.perf_counter()
        dets = det.detect(frame)
        if self.opts.largest:
            dets = largest(dets)
        self.clock.add("detect_ms", t)
        return dets.xyxy.astype(np.float32), [float(s) for s in dets.scores]

    def add_frame(self, frame: Frame, frame_index: int) -> None:
        xyxy, scores = self.boxes_of(frame)
        self.add_boxes(frame.image, xyxy, scores, frame.source, frame_index)

    def add_boxes(
        self, image: ImageBGR, xyxy: FloatArray, scores: Sequence[float | None], source: str, frame: int
    ) -> None:
        if len(xyxy) == 0:
            return
        t = time.perf_counter()
        self.rows.append(self.embedder.embed(image, xyxy))
        self.clock.add("embed_ms", t)
        for b, s in zip(xyxy, scores, strict=True):
            self.crops.append(CropRef(source, frame, _box(b), s))

    def add_crops(self, crops: Sequence[ImageBGR]) -> None:
        t = time.perf_counter()
        self.rows.append(embed_crops(self.embedder, crops))
        self.clock.add("embed_ms", t)
        self.crops.extend(CropRef("", -1, whole_box(c), None) for c in crops)

    def result(self) -> EmbeddingResult:
        dim = self.embedder.dim
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, dim), np.float32)
        cfg = getattr(self.embedder, "cfg", None)
        meta = EmbeddingMeta(
            self.opts.model or str(getattr(cfg, "model", "")),
            tuple(self.crops),
            self.clock.timings(),
            bool(getattr(cfg, "flip_average", False)),
        )
        return EmbeddingResult(rows, meta)


def embed(
    embedder: Embedder,
    source: ImageBGR | StrPath | Sequence[ImageBGR] | Sequence[StrPath],
    *,
    boxes: NDArray[Any] | None = None,
    options: EmbedOptions | None = None,
) -> EmbeddingResult:
    """Embed an image, crops, an image plus ``boxes``, image files, a folder or a video (see the module doc).

    Unreadable images raise DataError naming the file, or with ``options.on_error`` go to it and are skipped (a
    folder's files that are not images too); a missing video raises DataError.
    """
    opts = options or EmbedOptions()
    col = _Collector(embedder, opts)
    if isinstance(source, np.ndarray):
        _embed_array(col, source, boxes)
    elif isinstance(source, str | os.PathLike):
        _embed_path(col, Path(source), boxes)
    else:
        items = list(source)
        if boxes is not None:
            raise ValueError("boxes go with a single image, not a sequence")
        images = [x for x in items if isinstance(x, np.ndarray)]
        paths = [Path(x) for x in items if isinstance(x, str | os.PathLike)]
        if len(images) == len(items):
            _check_images(images)
            col.add_crops(images)
        elif len(paths) == len(items):
            _embed_files(col, paths)
        else:
            raise ValueError("a sequence to embed must hold only images (arrays) or only paths")
    return col.result()


def _check_images(items: Sequence[Any]) -> None:
    for i, im in enumerate(items):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8 or im.size == 0:
            raise ValueError(
                f"crop {i}: expected a non-empty HxWx3 uint8 BGR image, got {im.dtype} {im.shape}"
            )


class BoxError(ValueError):
    """A caller's box that cannot be embedded (not finite, no area, outside the image); the message starts
    with ``box X0,Y0,X1,Y1``."""


def _given_boxes(boxes: NDArray[Any], image: ImageBGR, source: str) -> FloatArray:
    """A caller's ``boxes`` as (N, 4) float32, clipped to the image (what is embedded, and so what the rows
    record); BoxError naming the first box that is not finite, has no area, or lies outside the image (the
    embedder would give such a box a vector of a pixel or nothing)."""
    xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    h, w = image.shape[:2]
    for b in xyxy:
        x0, y0, x1, y1 = (float(v) for v in b)
        if not (np.isfinite(b).all() and x0 < x1 and y0 < y1 and x0 < w and y0 < h and x1 > 0 and y1 > 0):
            raise BoxError(
                f"box {x0:g},{y0:g},{x1:g},{y1:g} of {source or 'the image'}: a box is x0 y0 x1 y1 with "
                f"x0 < x1 and y0 < y1, and overlaps the {w}x{h} image"
            )
    clipped: FloatArray = np.clip(xyxy, 0, np.asarray([w, h, w, h], dtype=np.float32))
    return clipped


def _embed_array(col: _Collector, image: NDArray[Any], boxes: NDArray[Any] | None) -> None:
    _check_images([image])
    if boxes is None:
        col.add_frame(Frame(0, 0.0, image, ""), -1)
        return
    xyxy = _given_boxes(boxes, image, "")
    col.add_boxes(image, xyxy, [None] * len(xyxy), "", -1)


def _embed_path(col: _Collector, path: Path, boxes: NDArray[Any] | None) -> None:
    if boxes is not None:
        if not is_image_file(path):
            raise ValueError(f"boxes go with one image file, not {path}")
        t = time.perf_counter()
        image = read_image(path)
        col.clock.add("read_ms", t)
        xyxy = _given_boxes(boxes, image, str(path))
        col.add_boxes(image, xyxy, [None] * len(xyxy), str(path), -1)
    elif path.is_dir():
        files = list_files(path, col.opts.recursive)
        images = [p for p in files if is_image_file(p)]
        if not images:
            raise DataError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        if col.opts.on_error is not None:
            for other in (p for p in files if not is_image_file(p)):
                col.opts.on_error(other, not_an_image(other))
        _embed_files(col, images)
    elif is_image_file(path):
        _embed_files(col, [path])
    else:
        for frame in iter_video(path, col.opts.every, col.opts.max_frames, col.opts.progress, col.clock):
            col.add_frame(frame, frame.index)


def _embed_files(col: _Collector, files: Sequence[Path]) -> None:
    bar = tqdm(files, unit="image", disable=not col.opts.progress or len(files) < 2, dynamic_ncols=True)
    for i, path in enumerate(bar):
        t = time.perf_counter()
        try:
            image = read_image(path)
        except DataError as e:
            if col.opts.on_error is None:
                raise
            col.opts.on_error(path, str(e))
            continue
        finally:
            col.clock.add("read_ms", t)
        col.add_frame(Frame(i, 0.0, image, str(path)), -1)


def iter_video(
    path: Path, every: int = 1, max_frames: int = 0, progress: bool = False, clock: StageClock | None = None
) -> Generator[Frame, None, None]:
    """Every ``every``-th frame of a video file (``Frame.index`` is the 0-based position in the file)."""
    if not path.is_file():
        raise DataError(f"video not found: {path}" if not path.exists() else f"not a video file: {path}")
    if not is_utf8(path):  # OpenCV cannot be given its name
        raise DataError(f"{shown(path)}: the video's path is not UTF-8 ({NOT_UTF8})")
    cfg = SourceConfig(uri=str(path), kind="file", stride=every, max_frames=max_frames)
    with open_source(cfg, name=str(path)) as src:
        bar = tqdm(total=src.frame_count, unit="frame", disable=not progress, dynamic_ncols=True)
        with bar:
            it = iter(src)
            while True:
                t = time.perf_counter()
                frame = next(it, None)
                if clock is not None:
                    clock.add("read_ms", t)
                if frame is None:
                    return
                bar.update(1)
                yield frame


def iter_frames(
    target: Path,
    *,
    every: int = 1,
    max_frames: int = 0,
    recursive: bool = False,
    progress: bool = False,
    on_error: ErrorHandler | None = None,
) -> Generator[Frame, None, None]:
    """Frames of a video, or the images of a folder / one image file as frames (``index`` = position).

    An unreadable image raises DataError, or goes to ``on_error(path, reason)`` and is skipped; so do the
    files of a folder that are not images (by extension), which are otherwise left out.
    """
    if target.is_dir() or is_image_file(target):
        files = list_files(target, recursive) if target.is_dir() else [target]
        images = [p for p in files if is_image_file(p)]
        if not images:
            raise DataError(f"folder {target} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        for path in files:
            if on_error is not None and not is_image_file(path):
                on_error(path, not_an_image(path))
        yield from _image_frames(images, progress, on_error)
    else:
        yield from iter_video(target, every, max_frames, progress)


def _image_frames(
    files: Sequence[Path], progress: bool, on_error: ErrorHandler | None
) -> Generator[Frame, None, None]:
    for i, path in enumerate(tqdm(files, unit="image", disable=not progress, dynamic_ncols=True)):
        try:
            image = read_image(path)
        except DataError as e:
            if on_error is None:
                raise
            on_error(path, str(e))
            continue
        yield Frame(i, 0.0, image, str(path))
