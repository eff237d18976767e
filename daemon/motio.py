"""MOTChallenge text files: typed reading with validation, and streaming writing.

Three kinds of file share one layout of comma-separated numbers; frames are 1-based
(MOT frame = ``Frame.index + 1``):

* results: ``frame,id,x,y,w,h,conf,-1,-1,-1`` -> :class:`MotTracks` (column 8, where there is one, is the
  class: a row of a class above 1, not a pedestrian, is refused, as TrackEval refuses to score it)
* det.txt: ``frame,-1,x,y,w,h,score,...``     -> :class:`MotDetections`
* gt.txt:  ``frame,id,x,y,w,h,consider,...`` -> :class:`MotGroundTruth` (consider=0 marks a row to be ignored)

Ground truth comes in two layouts, told apart by their number of columns. MOT15's has 10 (or fewer: 7, 8):
``...,consider,world_x,world_y,world_z``, whose world coordinates are not read; every consider=0 row is an
ignored region. MOT16/17/20's has 9: ``...,consider,class,visibility``, and its rows are read as TrackEval reads
that benchmark (unless its class column is -1 throughout: unused, read as MOT15's): only pedestrians (class 1)
with consider=1 are scored, and the classes person on vehicle (2), static person (7), distractor (8) and
reflection (12) are distractors (a box on one is neither rewarded nor punished); the other classes (vehicles,
occluders: 3-6, 9-11, 13) are not people, and a box on one is a false positive. TrackEval's MOT20 also takes
non-motorised vehicles (class 6) for distractors: so does this reader when asked to (``mot20=True``).

Boxes are ``x, y, w, h`` with (x, y) the top-left corner, in pixels. Every reader raises :class:`DataError`
naming the file (or array) and the line (or row) of the first problem: a wrong number of columns, a value
that is not a number, NaN or infinity, a frame that is not a positive integer, a negative width or height,
a track id that is not a non-negative integer, a frame or id of 2**53 or more (not read exactly), a consider
flag other than 0/1, a results row of a class above 1, or one id twice in a frame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daemon.errors import DataError
from daemon.types import Detections, Track

log = logging.getLogger(__name__)

IntArray = NDArray[np.int64]
F64Array = NDArray[np.float64]
StrPath = str | os.PathLike[str]
MotKind = Literal["results", "det", "gt"]

MIN_COLUMNS: Final = 7
"""Fewest columns a row may have: frame, id, x, y, w, h and conf / score / consider."""
MAX_COLUMNS: Final = 10
"""Most columns a row may have (MOT15 files carry three trailing world coordinates)."""
BOX_DECIMALS: Final = 3
"""Decimals written for box coordinates (a thousandth of a pixel)."""
SCORE_DIGITS: Final = 6
"""Significant digits written for scores and confidences."""
MOT17_GT_COLUMNS: Final = 9
"""Columns of the MOT16/17/20 ground-truth layout (frame,id,x,y,w,h,consider,class,visibility)."""
MOT17_CLASSES: Final = 13
"""The classes of that layout are 1..13 (1 pedestrian)."""
MOT17_DISTRACTOR_CLASSES: Final = (2, 7, 8, 12)
"""Person on vehicle, static person, distractor, reflection: TrackEval's MOT16/17 distractor classes."""
MOT20_DISTRACTOR_CLASSES: Final = (*MOT17_DISTRACTOR_CLASSES, 6)
"""TrackEval's MOT20 distractor classes: MOT16/17's and non-motorised vehicle (6)."""
_DISTRACTOR_CLASS: Final = 8
RESULTS_CLASS_COLUMN: Final = 7
"""Index of a results row's class (column 8): -1 unused, 1 pedestrian; TrackEval refuses results with one above 1."""
EXACT_BELOW: Final = 2**53
"""Frames and ids are read as float64, which holds every whole number below this (2**53) exactly and no larger
one: two ids above it may read as one, one above 2**63 as a negative number."""


# ----------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------


def _check_rows(n: int, xywh: F64Array, **columns: NDArray[np.generic]) -> None:
    if xywh.shape != (n, 4):
        raise ValueError(f"xywh must be ({n}, 4), got {xywh.shape}")
    for name, col in columns.items():
        if col.shape != (n,):
            raise ValueError(f"{name} must be ({n},), got {col.shape}")


def xywh_to_xyxy(xywh: F64Array) -> NDArray[np.float32]:
    """(N, 4) top-left/size boxes -> (N, 4) float32 corner boxes, as :class:`Detections` holds them."""
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return xyxy.astype(np.float32)


def xyxy_to_xywh(xyxy: ArrayLike) -> F64Array:
    """(N, 4) corner boxes -> (N, 4) float64 top-left/size boxes."""
    a = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([a[:, :2], a[:, 2:] - a[:, :2]], axis=1)


def rows_by_frame(frame: IntArray) -> dict[int, NDArray[np.intp]]:
    """Row indices of each frame number, in file order within a frame."""
    if len(frame) == 0:
        return {}
    order = np.argsort(frame, kind="stable")
    values, starts = np.unique(frame[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    return {int(f): order[s:e] for f, s, e in zip(values, starts, ends, strict=True)}


@dataclass(frozen=True, slots=True, eq=False)
class MotTracks:
    """Tracker results, one row per (frame, track): 1-based ``frame``, ``track_id``, ``xywh``, ``conf``."""

    frame: IntArray
    track_id: IntArray
    xywh: F64Array
    conf: F64Array

    def __post_init__(self) -> None:
        _check_rows(len(self.frame), self.xywh, track_id=self.track_id, conf=self.conf)

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def select(self, keep: NDArray[np.bool_] | NDArray[np.intp]) -> MotTracks:
        return MotTracks(self.frame[keep], self.track_id[keep], self.xywh[keep], self.conf[keep])

    @staticmethod
    def empty() -> MotTracks:
        return MotTracks(_ints(0), _ints(0), np.zeros((0, 4)), np.zeros(0))

    @staticmethod
    def joined(parts: Sequence[MotTracks]) -> MotTracks:
        """The rows of ``parts`` one after the other (a run's files, rotated into several folders)."""
        if not parts:
            return MotTracks.empty()
        return MotTracks(
            np.concatenate([p.frame for p in parts]),
            np.concatenate([p.track_id for p in parts]),
            np.concatenate([p.xywh for p in parts]),
            np.concatenate([p.conf for p in parts]),
        )


@dataclass(frozen=True, slots=True, eq=False)
class MotDetections:
    """Detections of a det.txt, one row per box: 1-based ``frame``, ``xywh``, ``score`` (no identities)."""

    frame: IntArray
    xywh: F64Array
    score: F64Array

    def __post_init__(self) -> None:
        _check_rows(len(self.frame), self.xywh, score=self.score)

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def select(self, keep: NDArray[np.bool_] | NDArray[np.intp]) -> MotDetections:
        return MotDetections(self.frame[keep], self.xywh[keep], self.score[keep])

    @staticmethod
    def empty() -> MotDetections:
        return MotDetections(_ints(0), np.zeros((0, 4)), np.zeros(0))


@dataclass(frozen=True, slots=True, eq=False)
class MotGroundTruth:
    """Ground truth, one row per (frame, person): 1-based ``frame``, ``track_id``, ``xywh``, ``consider``.

    Rows with ``consider`` True are the people scored. ``distractor`` marks the rows evaluation neither rewards
    nor punishes boxes on (ignored regions, static people...); None, as MOT15 files are read: every row not
    considered. A row neither considered nor a distractor (a MOT17 car) is not scored and shields no box.
    """

    frame: IntArray
    track_id: IntArray
    xywh: F64Array
    consider: NDArray[np.bool_]
    distractor: NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        _check_rows(len(self.frame), self.xywh, track_id=self.track_id, consider=self.consider)
        if self.distractor is not None:
            _check_rows(len(self.frame), self.xywh, distractor=self.distractor)

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def distractors(self) -> NDArray[np.bool_]:
        """The rows boxes on which count neither way: ``distractor``, by default every row not considered."""
        return ~self.consider if self.distractor is None else self.distractor

    def select(self, keep: NDArray[np.bool_] | NDArray[np.intp]) -> MotGroundTruth:
        distractor = None if self.distractor is None else self.distractor[keep]
        return MotGroundTruth(
            self.frame[keep], self.track_id[keep], self.xywh[keep], self.consider[keep], distractor
        )

    @staticmethod
    def joined(parts: Sequence[MotGroundTruth]) -> MotGroundTruth:
        """The rows of ``parts`` one after the other (distractors kept as each part marks them)."""
        explicit = any(p.distractor is not None for p in parts)
        return MotGroundTruth(
            np.concatenate([_ints(0), *(p.frame for p in parts)]),
            np.concatenate([_ints(0), *(p.track_id for p in parts)]),
            np.concatenate([np.zeros((0, 4)), *(p.xywh for p in parts)]),
            np.concatenate([np.zeros(0, bool), *(p.consider for p in parts)]),
            np.concatenate([np.zeros(0, bool), *(p.distractors() for p in parts)]) if explicit else None,
        )

    def considered(self) -> MotGroundTruth:
        """Only the rows to be evaluated (consider=1)."""
        return self.select(self.consider)


def _ints(n: int) -> IntArray:
    return np.zeros(n, dtype=np.int64)


# ----------------------------------------------------------------------------------------------------
# Parsing and validation
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where rows came from, to name the file and line (or array and row) of a problem."""

    name: str
    unit: str
    numbers: IntArray

    def at(self, row: int) -> str:
        return f"{self.name}, {self.unit} {int(self.numbers[row])}"


def _split(line: str) -> list[str]:
    cells = line.split(",") if "," in line else line.split()
    cells = [c.strip() for c in cells]
    if cells and cells[-1] == "":
        cells.pop()  # a trailing comma
    return cells


def _parse_line(cells: list[str], where: str, expected: int | None) -> list[float]:
    n = len(cells)
    if not MIN_COLUMNS <= n <= MAX_COLUMNS:
        raise DataError(f"{where}: expected {MIN_COLUMNS} to {MAX_COLUMNS} comma-separated columns, got {n}")
    if expected is not None and n != expected:
        raise DataError(f"{where}: {n} columns where the lines above have {expected}")
    try:
        return [float(c) for c in cells]
    except ValueError as e:
        raise DataError(f"{where}: not a number ({e})") from e


def _read_table(path: Path) -> tuple[F64Array, _Origin]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows tools) is not part of line 1
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    rows: list[list[float]] = []
    numbers: list[int] = []
    width: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = _parse_line(_split(line.strip()), f"{path}, line {number}", width)
        width = len(row)
        rows.append(row)
        numbers.append(number)
    values = np.array(rows, dtype=np.float64).reshape(len(rows), width or MIN_COLUMNS)
    return values, _Origin(str(path), "line", np.array(numbers, dtype=np.int64))


def _array_table(values: ArrayLike, name: str) -> tuple[F64Array, _Origin]:
    try:
        a = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name}: not a numeric array ({e})") from e
    if a.ndim != 2 or not MIN_COLUMNS <= a.shape[1] <= MAX_COLUMNS:
        raise DataError(f"{name}: expected an (N, {MIN_COLUMNS}..{MAX_COLUMNS}) array, got shape {a.shape}")
    return a, _Origin(name, "row", np.arange(1, a.shape[0] + 1, dtype=np.int64))


def _first(bad: NDArray[np.bool_]) -> int | None:
    return int(np.argmax(bad)) if bad.any() else None


def _fail_if(bad: NDArray[np.bool_] | np.bool_, origin: _Origin, message: str) -> None:
    row = _first(np.asarray(bad, dtype=np.bool_))
    if row is not None:
        raise DataError(f"{origin.at(row)}: {message}")


def _is_whole(v: F64Array) -> NDArray[np.bool_]:
    return np.equal(np.floor(v), v)


def _check_common(a: F64Array, origin: _Origin) -> None:
    _fail_if(~np.isfinite(a).all(axis=1), origin, "NaN or infinite value")
    frame = a[:, 0]
    _fail_if(~_is_whole(frame) | (frame < 1), origin, "frame must be an integer >= 1 (MOT frames start at 1)")
    _fail_if_inexact(frame, origin, "frame")
    _fail_if((a[:, 4] < 0) | (a[:, 5] < 0), origin, "negative box width or height")


def _fail_if_inexact(values: F64Array, origin: _Origin, what: str) -> None:
    _fail_if(
        values >= EXACT_BELOW,
        origin,
        f"{what} must be below 2**53 ({EXACT_BELOW}): a larger one is not read exactly (two may read as one)",
    )


def _check_ids(a: F64Array, origin: _Origin) -> None:
    ids = a[:, 1]
    _fail_if(~_is_whole(ids) | (ids < 0), origin, "id must be an integer >= 0")
    _fail_if_inexact(ids, origin, "id")
    if len(a) == 0:
        return
    pairs = a[:, :2].astype(np.int64)
    _, first = np.unique(pairs, axis=0, return_index=True)
    repeated = np.ones(len(a), dtype=bool)
    repeated[first] = False
    _fail_if(repeated, origin, "the same id appears twice in one frame")


def _check_result_classes(a: F64Array, origin: _Origin) -> None:
    """Column 8 of a results row is its class, as TrackEval reads it (whole, toward zero): it refuses to score
    results holding any class above 1 (pedestrian), and so do we, rather than score a car as a person."""
    if a.shape[1] < RESULTS_CLASS_COLUMN + 1:
        return
    row = _first(a[:, RESULTS_CLASS_COLUMN] >= 2)
    if row is not None:
        raise DataError(
            f"{origin.at(row)}: class {a[row, RESULTS_CLASS_COLUMN]:g} (column 8): TrackEval scores pedestrians "
            "(class 1) alone and refuses results holding another class; leave those rows out, or write -1 there "
            "(unused)"
        )


def _tracks(a: F64Array, origin: _Origin) -> MotTracks:
    _check_common(a, origin)
    _check_ids(a, origin)
    _check_result_classes(a, origin)
    return MotTracks(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2:6].copy(), a[:, 6].copy())


def _detections(a: F64Array, origin: _Origin) -> MotDetections:
    _check_common(a, origin)
    return MotDetections(a[:, 0].astype(np.int64), a[:, 2:6].copy(), a[:, 6].copy())


def _ground_truth(a: F64Array, origin: _Origin, mot20: bool) -> MotGroundTruth:
    _check_common(a, origin)
    _check_ids(a, origin)
    _fail_if(
        (a[:, 6] != 0) & (a[:, 6] != 1),
        origin,
        "consider flag (column 7) must be 0 or 1: a score there means results or detections, not ground truth",
    )
    frame, ids, xywh, consider = (
        a[:, 0].astype(np.int64),
        a[:, 1].astype(np.int64),
        a[:, 2:6].copy(),
        a[:, 6] == 1,
    )
    classes = a[:, 7] if a.shape[1] == MOT17_GT_COLUMNS else None
    if classes is None or (classes == -1).all():  # MOT15's layout, or 9 columns with the class unused (-1)
        return MotGroundTruth(frame, ids, xywh, consider)
    _fail_if(
        ~np.isin(classes, np.arange(1, MOT17_CLASSES + 1)),
        origin,
        f"class (column 8 of {MOT17_GT_COLUMNS}: the MOT16/17/20 layout frame,id,x,y,w,h,consider,class,visibility) "
        f"must be a whole number from 1 to {MOT17_CLASSES}; MOT15 ground truth has 10 columns",
    )
    distractors = MOT20_DISTRACTOR_CLASSES if mot20 else MOT17_DISTRACTOR_CLASSES
    return MotGroundTruth(frame, ids, xywh, consider & (classes == 1), np.isin(classes, distractors))


def read_results(path: StrPath) -> MotTracks:
    """Read a tracker results file (``frame,id,x,y,w,h,conf,...``)."""
    return _tracks(*_read_table(Path(path)))


def read_detections(path: StrPath) -> MotDetections:
    """Read a det.txt (``frame,-1,x,y,w,h,score,...``); the id column is not used."""
    return _detections(*_read_table(Path(path)))


def read_ground_truth(path: StrPath, *, mot20: bool = False) -> MotGroundTruth:
    """Read a gt.txt (``frame,id,x,y,w,h,consider,...``), keeping consider=0 rows (flagged); ``mot20``: a gt
    with classes takes class 6 for a distractor too, as TrackEval's MOT20 benchmark does."""
    return _ground_truth(*_read_table(Path(path)), mot20)


MOT20_PREFIX: Final = "MOT20-"


def mot20_sequence(gt_path: Path) -> bool:
    """Whether ``gt_path`` is the gt of a MOT20 sequence, as MOTChallenge lays them out: the folder holding its
    ``gt/`` folder (or, for a gt.txt elsewhere, its own folder) is named MOT20-<n> (``MOT20/train/MOT20-01/gt/
    gt.txt``, TrackEval's ``MOT20-train/MOT20-01/gt/gt.txt``)."""
    folder = gt_path.parent.parent if gt_path.parent.name == "gt" else gt_path.parent
    return folder.name.startswith(MOT20_PREFIX)


def mot20_said(path: Path, hint: str = "", logger: logging.Logger = log) -> bool:
    """Whether ``path`` is a MOT20 sequence's gt (``mot20_sequence``), said in the log (on ``logger``: the
    caller's, with a ``hint`` of how to read it otherwise) where it is: how a user learns that TrackEval's MOT20
    rule was taken."""
    if not mot20_sequence(path):
        return False
    logger.info(
        "%s is a MOT20 sequence's ground truth: read by TrackEval's MOT20 rule, class 6 (non-motorised vehicle) "
        "a distractor too%s",
        path,
        f" ({hint})" if hint else "",
    )
    return True


def read_sequence_truth(path: Path) -> MotGroundTruth:
    """A gt read by the rule of the benchmark its sequence belongs to, as ``reid-daemon eval``'s default
    (``--benchmark auto``) reads it: TrackEval's MOT20 rule for a MOT20 sequence's gt (``mot20_said``), else
    MOT16/17's. What the fleet scores its cameras and cuts its scenarios' truths with."""
    return read_ground_truth(path, mot20=mot20_said(path))


def check_truth_size(
    where: str, path: Path, gt: MotGroundTruth, size: tuple[int, int] | None, logger: logging.Logger = log
) -> None:
    """A warning (on ``logger``: the caller's) when boxes of a camera's ground truth lie wholly outside its
    video's frame (``size``: width, height; None, unknown: nothing said): a truth made for the video at another
    size (a recording resized after it was annotated) scores every box as a miss. ``where`` names the setting or
    option the truth came from. The fleet's check before its cameras start, and eval's before it runs one."""
    if size is None or not len(gt):
        return
    w, h = size
    outside = (gt.xywh[:, 0] >= w) | (gt.xywh[:, 1] >= h) | (gt.xywh[:, 0] + gt.xywh[:, 2] <= 0)
    outside |= gt.xywh[:, 1] + gt.xywh[:, 3] <= 0
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        logger.warning(
            "%s: %d of %d boxes of %s lie wholly outside the camera's %dx%d frames (the first: frame %d, id %d): "
            "is it the ground truth of the video at another size? Those boxes are scored as misses",
            where,
            int(outside.sum()),
            len(gt),
            path,
            w,
            h,
            int(gt.frame[first]),
            int(gt.track_id[first]),
        )


def results_from_array(values: ArrayLike, name: str = "<results array>") -> MotTracks:
    """Validate an (N, 7..10) array laid out like a results file."""
    return _tracks(*_array_table(values, name))


def detections_from_array(values: ArrayLike, name: str = "<detections array>") -> MotDetections:
    """Validate an (N, 7..10) array laid out like a det.txt."""
    return _detections(*_array_table(values, name))


def ground_truth_from_array(
    values: ArrayLike, name: str = "<ground-truth array>", *, mot20: bool = False
) -> MotGroundTruth:
    """Validate an (N, 7..10) array laid out like a gt.txt (``mot20`` as for read_ground_truth)."""
    return _ground_truth(*_array_table(values, name), mot20)


# ----------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------


def _box_text(v: float) -> str:
    text = f"{v:.{BOX_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _score_text(v: float) -> str:
    return f"{v:.{SCORE_DIGITS}g}"


def format_row(mot_frame: int, track_id: int, xywh: Iterable[float], score: float) -> str:
    """One MOTChallenge line (with newline): ``frame,id,x,y,w,h,score,-1,-1,-1``."""
    box = ",".join(_box_text(float(v)) for v in xywh)
    return f"{mot_frame},{track_id},{box},{_score_text(score)},-1,-1,-1\n"


def _check_writable(where: str, mot_frame: int, xywh: F64Array, score: float) -> None:
    if mot_frame < 1:
        raise ValueError(f"{where}: MOT frame {mot_frame} must be >= 1 (it is Frame.index + 1)")
    if not (np.isfinite(xywh).all() and np.isfinite(score)):
        raise ValueError(f"{where}: frame {mot_frame}: non-finite box {xywh.tolist()} or score {score}")
    if (xywh[2:] < 0).any():
        raise ValueError(f"{where}: frame {mot_frame}: box {xywh.tolist()} has a negative width or height")


class MotWriter:
    """Streams MOTChallenge rows to a text file, holding nothing but the file's own buffer.

    Rows of one frame are flushed to disk as soon as a row of a later frame arrives, on :meth:`flush`,
    after each :meth:`write_tracks` / :meth:`write_detections` call, and on :meth:`close`. Frames are the
    1-based MOT frame numbers (``Frame.index + 1``). Non-finite or negative-size boxes raise ValueError,
    since the readers would reject the file they make.
    """

    def __init__(self, path: StrPath, *, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self._last_frame: int | None = None
        self._fh: IO[str] = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def _write(self, mot_frame: int, track_id: int, xywh: F64Array, score: float) -> None:
        _check_writable(str(self.path), mot_frame, xywh, score)
        if self._last_frame is not None and mot_frame != self._last_frame:
            self._fh.flush()
        self._fh.write(format_row(mot_frame, track_id, xywh, score))
        self._last_frame = mot_frame
        self.rows += 1

    def write_track(
        self, mot_frame: int, track_id: int, xyxy: tuple[float, float, float, float], score: float
    ) -> None:
        """Write one results row from a corner box."""
        if track_id < 0:
            raise ValueError(f"{self.path}: frame {mot_frame}: track id {track_id} must be >= 0")
        self._write(mot_frame, int(track_id), xyxy_to_xywh(xyxy)[0], float(score))

    def write_tracks(self, mot_frame: int, tracks: Iterable[Track]) -> None:
        """Write the tracks of one frame and flush."""
        for t in tracks:
            self.write_track(mot_frame, t.track_id, t.xyxy, t.score)
        self.flush()

    def write_detections(self, mot_frame: int, detections: Detections) -> None:
        """Write the boxes of one frame as det.txt rows (id -1) and flush."""
        xywh = xyxy_to_xywh(detections.xyxy)
        for box, score in zip(xywh, detections.scores, strict=True):
            self._write(mot_frame, -1, box, float(score))
        self.flush()

    def flush(self) -> None:
        self._fh.flush()

    def reopen(self) -> None:
        """Go on appending to the file now at ``path`` (after it was rewritten and replaced: ``daemon.erase``)."""
        self._fh.close()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def __enter__(self) -> MotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _write_lines(path: StrPath, lines: Iterable[str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8") as fh:
        fh.writelines(lines)


def write_results(path: StrPath, tracks: MotTracks) -> None:
    """Write a whole results file (``frame,id,x,y,w,h,conf,-1,-1,-1``)."""
    _write_lines(
        path,
        (
            format_row(int(f), int(i), b, float(c))
            for f, i, b, c in zip(tracks.frame, tracks.track_id, tracks.xywh, tracks.conf, strict=True)
        ),
    )


def write_detections_file(path: StrPath, detections: MotDetections) -> None:
    """Write a whole det.txt (``frame,-1,x,y,w,h,score,-1,-1,-1``)."""
    _write_lines(
        path,
        (
            format_row(int(f), -1, b, float(s))
            for f, b, s in zip(detections.frame, detections.xywh, detections.score, strict=True)
        ),
    )


def _mot17_gt_row(
    mot_frame: int, track_id: int, xywh: Iterable[float], consider: bool, distractor: bool
) -> str:
    """One gt.txt line of the MOT16/17/20 layout: a distractor as class 8, any other row as a pedestrian."""
    box = ",".join(_box_text(float(v)) for v in xywh)
    klass = _DISTRACTOR_CLASS if distractor else 1
    return f"{mot_frame},{track_id},{box},{int(consider and not distractor)},{klass},1\n"


def write_ground_truth(path: StrPath, gt: MotGroundTruth) -> None:
    """Write a gt.txt in the MOT15 layout (``frame,id,x,y,w,h,consider,-1,-1,-1``), or, where ``gt`` marks its
    distractors (read from the MOT16/17/20 layout), in that layout (``frame,id,x,y,w,h,consider,class,1``;
    distractors as class 8), which reads back the same."""
    if gt.distractor is None:
        lines = (
            format_row(int(f), int(i), b, 1.0 if c else 0.0)
            for f, i, b, c in zip(gt.frame, gt.track_id, gt.xywh, gt.consider, strict=True)
        )
    else:
        lines = (
            _mot17_gt_row(int(f), int(i), b, bool(c), bool(d))
            for f, i, b, c, d in zip(gt.frame, gt.track_id, gt.xywh, gt.consider, gt.distractor, strict=True)
        )
    _write_lines(path, lines)
