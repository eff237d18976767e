"""Enrolment: every image of a reference folder becomes a gallery entry; the file name is the label.

Naming convention (separators and the set-code pattern are fields of ``EnrollConfig``; defaults shown)::

    [SET-]name[--VARIANT].ext          ext: jpg, jpeg, png, bmp, webp (any case)

* ``name``: the label, with ``_`` read as a space (runs of spaces collapse): ``jane_doe`` -> "jane doe";
  Unicode is normalised to NFC, so a name written decomposed (macOS file names) is the same label.
* ``--VARIANT``: text after the LAST ``--`` tells several images of one person apart; they become several
  embeddings of one label: ``jane_doe--1.jpg``, ``jane_doe--side.jpg`` -> label "jane doe" twice.
* ``SET-``: text before the FIRST ``-`` is a set code when it matches ``set_code_pattern`` whole (default:
  up to 4 letters, 1-8 digits, up to 4 letters: ``A12``, ``2024``, ``S1b``); ``A12-jane_doe.jpg`` -> set
  "A12", label "jane doe". A prefix without a digit stays in the name: ``mary-jane.jpg`` -> "mary-jane".
  One label under several set codes is one identity; ``sets`` enrols only the named sets.
* A single ``-`` elsewhere is part of the name (``jane_doe-2.jpg`` -> "jane doe-2": use ``--`` for variants).
  A name that leaves no label (``--2.jpg``, ``A12-.jpg``) is skipped and reported.

Hidden files are ignored; other files, unreadable images, photos where ``--detect`` finds no person and
images refused by the gallery's per-label cap are reported in ``EnrollReport.skipped``, never dropped silently;
earlier gallery entries the cap drops to make room (appending) are counted in ``EnrollReport.evicted``, and
the reference images ``serve`` kept for such entries are removed once the gallery is saved (``removed``).

``unenroll`` removes labels (every entry of each) from a gallery file, and the reference images serve kept for
them, by the same rule and holding the same locks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from tqdm import tqdm

from daemon.config import EnrollConfig
from daemon.embed import crop_boxes, embedder_signature
from daemon.embedding import (
    NOT_UTF8,
    Box,
    StrPath,
    Timings,
    atomic_write,
    embed_crops,
    is_image_file,
    is_utf8,
    largest,
    list_files,
    not_an_image,
    read_image,
    shown,
    skipped_lines,
    whole_box,
)
from daemon.errors import DataError
from daemon.gallery import Gallery, holding, latest, locked
from daemon.recognize import COPY_SIMILARITY
from daemon.sources import natural_key
from daemon.types import Detector, Embedder, FloatArray, Frame, ImageBGR

log = logging.getLogger(__name__)

CHUNK: Final = 32
"""Reference crops held in memory and embedded together."""

SERVE_LEDGER: Final = ".reid-daemon-serve.json"
"""Kept by ``serve`` in its references folder (hidden, so ``enroll`` leaves it out): the highest variant number
it has given each ``[SET-]label`` stem, so that no name (no URL) is given twice; it also marks the folder as
one ``serve`` writes its reference images to."""

SERVE_LOCK: Final = ".reid-daemon-serve.lock"
"""The references folder's lock file (hidden, as the ledger): held by each ``serve`` while it chooses a new
reference's name, writes the image and records the name (``ledger_locked``), so that two services on one folder
never give one name twice."""

MAX_VARIANT_DIGITS: Final = 10
"""Digits of the largest variant number ``serve`` gives (its file names leave room for ``--9999999999``)."""


@dataclass(frozen=True, slots=True)
class ReferenceName:
    """What a reference file name says: ``label``, optional ``set_code`` and ``variant``, and the ``path``."""

    label: str
    set_code: str | None
    variant: str | None
    path: Path


def parse_reference_name(path: StrPath, naming: EnrollConfig | None = None) -> ReferenceName:
    """Parse ``[SET-]name[--VARIANT].ext`` (see the module doc); ValueError when no label is left."""
    cfg = naming or EnrollConfig()
    p = Path(path)
    if not is_utf8(p.name):
        raise ValueError(f"{shown(p.name)}: the file name is not UTF-8 ({NOT_UTF8})")
    rest, variant = _split_variant(p.stem, cfg.variant_separator)
    set_code, rest = _split_set(rest, cfg)
    label = tidy_label(rest.replace(cfg.word_separator, " "), cfg.lowercase)
    if not label:
        raise ValueError(f"{p.name}: the file name leaves no label ([SET-]name[--VARIANT].ext)")
    hidden = invisible_character(label)
    if hidden is not None:
        raise ValueError(f"{p.name}: its label holds {hidden}: rename it")
    return ReferenceName(label, set_code, variant, p)


_JOINERS = frozenset("\u200c\u200d")  # ZWNJ, ZWJ: Persian and Indic names and emoji sequences need them


def invisible_character(text: str) -> str | None:
    """The first format character of ``text`` that shows as nothing, named ('U+200B ZERO WIDTH SPACE, which shows
    as nothing ...'): a label holding one looks like another, or is shown reordered (a bidi override); None when
    there is none. Unicode Cf but the joiners and the tags of emoji flags (U+E0020-E007F)."""
    for c in text:
        if unicodedata.category(c) == "Cf" and c not in _JOINERS and not 0xE0020 <= ord(c) <= 0xE007F:
            return (
                f"U+{ord(c):04X} {unicodedata.name(c, 'a format character')}, which shows as nothing (the label "
                "would look like another, or be shown reordered)"
            )
    return None


def tidy_label(text: str, lowercase: bool = False) -> str:
    """``text`` as a label: trimmed, runs of white space as one space, Unicode NFC, and lower case where asked
    (``enroll.lowercase``). What enroll makes of a file name's label, serve of a form's, unenroll of one given."""
    label = unicodedata.normalize("NFC", " ".join(text.split()))
    return label.lower() if lowercase else label


def folder_label(path: Path, naming: EnrollConfig) -> ReferenceName:
    """``refs/A12-jane_doe/3.jpg``: the folder's name read as a file name is ("A12", "jane doe"), the file's
    name is the variant; ValueError naming the folder when it leaves no label or is not UTF-8."""
    if not is_utf8(path.parent.name):
        raise ValueError(f"folder {shown(path.parent.name)}: its name is not UTF-8 ({NOT_UTF8})")
    hidden = invisible_character(path.parent.name)
    if hidden is not None:
        raise ValueError(f"folder {path.parent.name}: its name holds {hidden}: rename it")
    try:
        ref = parse_reference_name(Path(path.parent.name + path.suffix), naming)
    except ValueError as e:
        raise ValueError(f"folder {path.parent.name}: its name leaves no label ([SET-]name)") from e
    return ReferenceName(ref.label, ref.set_code, path.stem, path)


def _split_variant(stem: str, sep: str) -> tuple[str, str | None]:
    if sep not in stem:
        return stem, None
    rest, variant = stem.rsplit(sep, 1)
    return rest, (variant.strip() or None)


def _split_set(rest: str, cfg: EnrollConfig) -> tuple[str | None, str]:
    if cfg.set_separator not in rest:
        return None, rest
    prefix, name = rest.split(cfg.set_separator, 1)
    if re.fullmatch(cfg.set_code_pattern, prefix):
        return prefix, name
    return None, rest


# ---------------------------------------------------------------------------------- serve's references


def variant_name(stem: str, n: int, naming: EnrollConfig) -> str:
    """The file name of variant ``n`` of ``stem``: ``stem.jpg`` for the first, ``stem--N.jpg`` after."""
    return f"{stem}.jpg" if n == 1 else f"{stem}{naming.variant_separator}{n}.jpg"


def serve_reference(stem: str, n: int, naming: EnrollConfig) -> Path:
    """Where in its references folder serve keeps variant ``n`` of ``stem``, as ``enroll`` of the folder reads
    it: ``variant_name`` at the top level, or with ``label_from: folder`` ``stem/N.jpg`` (a folder a person)."""
    if naming.label_from == "folder":
        return Path(stem) / f"{n}.jpg"
    return Path(variant_name(stem, n, naming))


def ledger_key(stem: str, naming: EnrollConfig) -> str:
    """The ledger's key of ``stem``'s names: ``stem``, or ``stem/`` for a person's folder (``label_from:
    folder``; no file stem holds a '/')."""
    return f"{stem}/" if naming.label_from == "folder" else stem


def next_variant(folder: Path, stem: str, naming: EnrollConfig) -> int:
    """The next variant number for ``stem`` in ``folder``: past the highest the ledger recorded and the highest
    its images show (``stem`` counts as 1, ``stem--N`` as N; with ``label_from: folder``, ``stem/N.jpg`` as N: a
    folder from before the ledger, or the user's own numbered photos), so a name removed once is never given
    again. DataError naming an unreadable ledger."""
    highest = serve_ledger(folder).get(ledger_key(stem, naming), 0)
    by_folder = naming.label_from == "folder"
    where = folder / stem if by_folder else folder
    if where.is_dir():
        for path in where.iterdir():
            if is_image_file(path):
                n = _number(path.stem) if by_folder else _variant_number(path.stem, stem, naming)
                highest = max(highest, n)
    return highest + 1


def _number(name: str) -> int:
    """N when the file stem ``name`` is a number serve gives (``3``), else 0."""
    if len(name) > MAX_VARIANT_DIGITS or not (name.isascii() and name.isdigit()):
        return 0
    return int(name)


def _variant_number(name: str, stem: str, naming: EnrollConfig) -> int:
    """1 when the file stem ``name`` is ``stem``, N when it is ``stem--N``, else 0."""
    if name == stem:
        return 1
    rest, variant = _split_variant(name, naming.variant_separator)
    if rest != stem or variant is None or len(variant) > MAX_VARIANT_DIGITS:
        return 0
    return int(variant) if variant.isascii() and variant.isdigit() else 0


def _stem_and_variant(name: str, naming: EnrollConfig) -> tuple[str, int]:
    """The file stem ``name`` as serve's ``(stem, N)``: ``stem--N`` as (stem, N), ``stem--X`` with no number
    serve gives as X as (stem, 0), a name with no variant as (name, 1)."""
    rest, variant = _split_variant(name, naming.variant_separator)
    stem = name if variant is None else rest
    return stem, _variant_number(name, stem, naming)


def serve_ledger(folder: Path) -> dict[str, int]:
    """``folder``'s ledger of the variant numbers serve gave ({} when it has none); DataError naming the file
    when it cannot be read."""
    path = folder / SERVE_LEDGER
    if not path.exists():
        return {}
    try:
        last = json.loads(path.read_text(encoding="utf-8"))["last"]
        if not isinstance(last, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in last.items()
        ):
            raise ValueError("'last' is not a map of file stems to numbers")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"{path}: serve's ledger of reference names cannot be read ({e}); restore it, or remove it once "
            "no client holds a URL of an image removed from the folder"
        ) from e
    return dict(last)


def ledger_locked(
    folder: Path, wait_s: float, who: str, setting: str
) -> contextlib.AbstractContextManager[None]:
    """Hold ``folder``'s lock file (``SERVE_LOCK``) inside the block: around choosing a name (``next_variant``),
    writing its image and recording it in the ledger, which two processes doing so at once would each give the
    same. Waits ``wait_s`` at most for another holder (LockTimeout naming it, the lock file and ``setting``);
    DataError naming the lock file when it cannot be made (a folder served read-only)."""
    return holding(folder / SERVE_LOCK, wait_s, f"the references folder {folder.name}", who, setting)


def record_variant(folder: Path, stem: str, n: int) -> None:
    """Record in ``folder``'s ledger that variant ``n`` of ``stem`` was given (written atomically)."""
    last = serve_ledger(folder)
    last[stem] = max(n, last.get(stem, 0))
    _write_ledger(folder, last)


def record_folder(folder: Path, naming: EnrollConfig) -> None:
    """Record in ``folder``'s ledger the name of every image it holds (``stem.jpg`` as 1, ``stem--N`` as N),
    creating the ledger: what serve does when it starts, so that a folder it wrote to before the ledger
    existed (an older version) is known as serve's, and its images' names are never given again, before serve
    enrols there once. DataError naming an unreadable ledger."""
    last = serve_ledger(folder)
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if naming.label_from == "folder" and path.is_dir() and not path.name.startswith("."):
            _record_person(path, last)
        if not is_image_file(path):
            continue
        stem, n = _stem_and_variant(path.stem, naming)
        if n > last.get(stem, 0):
            last[stem] = n
    _write_ledger(folder, last)


def _record_person(sub: Path, last: dict[str, int]) -> None:
    """Record in ``last`` the highest ``N.jpg`` a person's folder ``sub`` holds (``label_from: folder``)."""
    key = f"{sub.name}/"
    for path in sub.iterdir():
        n = _number(path.stem) if is_image_file(path) else 0
        if n > last.get(key, 0):
            last[key] = n


def _write_ledger(folder: Path, last: dict[str, int]) -> None:
    atomic_write(
        folder / SERVE_LEDGER, json.dumps({"v": 1, "last": last}, ensure_ascii=False).encode("utf-8")
    )


@dataclass(frozen=True, slots=True)
class RemovedReferences:
    """What ``remove_serve_references`` did: the images it removed, and those that were gone already."""

    removed: tuple[Path, ...] = ()
    gone: tuple[Path, ...] = ()


def remove_serve_references(
    sources: Collection[str], naming: EnrollConfig, within: Path | None = None
) -> RemovedReferences:
    """Remove the reference images ``serve`` kept for entries a saved gallery no longer holds (``sources``: those
    entries' recorded files), for ``serve`` (``within``: its references folder, resolved; other folders' files
    stay) and ``enroll --append`` alike. Only a file whose name the ledger of its references folder records as
    given by serve is removed (``serve_folder``): only serve records a row's source, so a user's own photo is
    never one, and a name the ledger holds is never given again, so a URL answered as removed never shows another
    image. A file that is not there any more is ``gone``; one that cannot be removed is left with a warning (the
    gallery is saved)."""
    removed, gone = [], []
    ledgers: dict[Path, dict[str, int]] = {}
    unmarked: set[Path] = set()
    for source in sorted(sources):
        path = Path(source)
        if not path.is_absolute():
            continue
        folder = serve_folder(path, naming, ledgers)
        if folder is None:
            _say_unmarked(_references_folder(path, naming), within, unmarked)
        if folder is None or (within is not None and folder != within):
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # removed already (by hand, or by the other of serve and enroll)
            gone.append(path)
            continue
        except OSError as e:
            log.warning("cannot remove the dropped entry's reference image %s: %s", path, e)
            continue
        removed.append(path)
    return RemovedReferences(tuple(removed), tuple(gone))


def serve_folders(sources: Collection[str], naming: EnrollConfig) -> list[Path]:
    """The references folders in which ``remove_serve_references`` would remove some of ``sources`` (sorted: the
    order in which their locks are taken)."""
    ledgers: dict[Path, dict[str, int]] = {}
    found = {serve_folder(Path(s), naming, ledgers) for s in sources if Path(s).is_absolute()}
    return sorted(f for f in found if f is not None)


def serve_folder(path: Path, naming: EnrollConfig, ledgers: dict[Path, dict[str, int]]) -> Path | None:
    """The references folder whose serve ledger records the image ``path`` as one serve gave, None where none
    does. Either layout serve keeps images in is taken by the path itself, not by ``naming.label_from`` now (a
    switch since leaves the images kept before it where they are): ``stem.jpg`` as 1 or ``stem--N.jpg`` as N at
    a folder's top level, or ``stem/N.jpg`` as N in a person's folder; given when the ledger's number for the
    stem is N or more. ``ledgers`` caches each folder's ledger ({} where none, or unreadable: a warning says
    so)."""
    stem, n = _stem_and_variant(path.stem, naming)
    at_top = n > 0 and path.name == variant_name(stem, n, naming)
    if at_top and _ledger_of(path.parent, ledgers).get(stem, 0) >= n:
        return path.parent
    n, person = _number(path.stem), path.parent.name
    in_person = n > 0 and path.name == f"{n}.jpg" and not person.startswith(".")
    if in_person and _ledger_of(path.parent.parent, ledgers).get(f"{person}/", 0) >= n:
        return path.parent.parent
    return None


def _ledger_of(folder: Path, ledgers: dict[Path, dict[str, int]]) -> dict[str, int]:
    """``folder``'s ledger for removing serve's images, read once (``ledgers``): {} when it has none, or it
    cannot be read, with a warning that the images there stay."""
    if folder not in ledgers:
        ledgers[folder] = {}
        if (folder / SERVE_LEDGER).is_file():
            try:
                ledgers[folder] = serve_ledger(folder)
            except DataError as e:
                log.warning("the reference images of dropped entries in %s stay: %s", folder, e)
    return ledgers[folder]


def _say_unmarked(folder: Path, within: Path | None, said: set[Path]) -> None:
    """Warn, once a folder, that the references folder serve would keep a dropped entry's image in now holds no
    ledger (a folder of an older version, where serve has not started since), so its images there stay; not
    for a folder other than ``within`` (serve's), whose images are not serve's to remove."""
    if folder in said or (within is not None and folder != within) or (folder / SERVE_LEDGER).exists():
        return
    said.add(folder)
    log.warning(
        "%s holds no ledger of the names serve gave (%s; an older version's folder, where serve has not "
        "started since): the reference images of dropped entries there stay (remove them by hand)",
        folder,
        SERVE_LEDGER,
    )


def _references_folder(path: Path, naming: EnrollConfig) -> Path:
    """The references folder serve would keep the image ``path`` in with ``naming`` as it is now: its folder, or
    with ``label_from: folder`` the folder above its person's folder."""
    return path.parent.parent if naming.label_from == "folder" else path.parent


# ---------------------------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class EnrolledImage:
    """One reference now in the gallery: its parsed name, gallery ``row``, crop ``box`` and detector score."""

    name: ReferenceName
    row: int
    box: Box
    score: float | None = None


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file of the folder that is not in the gallery, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class EnrollReport:
    """What ``enroll`` did: enrolled and skipped files, earlier entries the per-label cap dropped to make room
    (``evicted``, appending to a gallery: drop_oldest / drop_random), the gallery size after, where it was
    saved."""

    folder: Path
    enrolled: tuple[EnrolledImage, ...]
    skipped: tuple[SkippedFile, ...]
    gallery_size: int
    saved: Path | None
    timings: Timings
    evicted: tuple[tuple[str, int], ...] = ()  # (label, entries it held before) the per-label cap dropped
    removed: tuple[Path, ...] = ()  # the reference images serve kept for the entries dropped, now removed

    @property
    def labels(self) -> list[str]:
        """The labels enrolled this time, sorted."""
        return sorted({e.name.label for e in self.enrolled})

    def as_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "enrolled": [
                {
                    "path": str(e.name.path),
                    "label": e.name.label,
                    "set": e.name.set_code,
                    "variant": e.name.variant,
                    "row": e.row,
                    "box": list(e.box),
                    "score": e.score,
                }
                for e in self.enrolled
            ],
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
            "evicted": dict(self.evicted),
            "removed": [str(p) for p in self.removed],
            "labels": self.labels,
            "gallery_size": self.gallery_size,
            "saved": None if self.saved is None else str(self.saved),
            "timings_ms": self.timings.as_dict(),
        }

    def text(self, max_skipped: int = 20) -> str:
        lines = [
            f"enrolled {len(self.enrolled)} image(s) of {len(self.labels)} label(s) from {shown(self.folder)} "
            f"in {self.timings.total_ms / 1000:.1f} s; the gallery holds {self.gallery_size} entries"
        ]
        for label in self.labels:
            n = sum(1 for e in self.enrolled if e.name.label == label)
            lines.append(f"  {label}: {n}")
        if self.evicted:
            dropped = ", ".join(f"{n} of {label!r}" for label, n in self.evicted)
            lines.append(f"the per-label cap dropped earlier gallery entries to make room: {dropped}")
        if self.removed:
            lines.append(f"removed {len(self.removed)} reference image(s) serve kept for them:")
            lines += [f"  {p}" for p in self.removed]
        lines += skipped_lines([(s.path, s.reason) for s in self.skipped], max_skipped)
        if self.saved is not None:
            lines.append(f"saved: {self.saved}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- enrol


SUB_FOLDER = (
    "a sub-folder: its images are enrolled with --recursive, or with --label-from folder when each folder "
    "is one person"
)


def _unselected(code: str | None, sets: Collection[str]) -> str:
    """Why a reference outside the selected ``sets`` is skipped."""
    if code is None:
        return f"no set code in its name (enrolling set(s) {', '.join(sorted(sets))} only)"
    return f"set {code!r} not selected"


def reference_files(
    folder: StrPath, naming: EnrollConfig, sets: Collection[str] | None = None
) -> tuple[list[ReferenceName], list[SkippedFile]]:
    """The parsed reference images of ``folder`` (natural order) and the files left out, with the reason;
    without ``naming.recursive`` the visible sub-folders are listed as left out too."""
    root = Path(folder)
    if not root.exists():
        raise DataError(f"reference folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    names: list[ReferenceName] = []
    skipped: list[SkippedFile] = []
    by_folder = naming.label_from == "folder"
    for path in list_files(root, naming.recursive or by_folder):
        if not is_image_file(path):
            skipped.append(SkippedFile(path, not_an_image(path)))
            continue
        if by_folder and path.parent == root:
            skipped.append(SkippedFile(path, "not in a person's folder (labels come from folder names)"))
            continue
        try:
            name = folder_label(path, naming) if by_folder else parse_reference_name(path, naming)
        except ValueError as e:
            skipped.append(SkippedFile(path, str(e)))
            continue
        if sets is not None and name.set_code not in sets:
            skipped.append(SkippedFile(path, _unselected(name.set_code, sets)))
            continue
        names.append(name)
    if not (naming.recursive or by_folder):
        folders = sorted(
            (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: natural_key(p.name),
        )
        skipped += [SkippedFile(p, SUB_FOLDER) for p in folders]
    return names, skipped


@dataclass
class _Pending:
    names: list[ReferenceName]
    crops: list[ImageBGR]
    boxes: list[Box]
    scores: list[float | None]


class _Enroller:
    def __init__(self, embedder: Embedder, detector: Detector | None) -> None:
        self.embedder = embedder
        self.detector = detector
        self.enrolled: list[EnrolledImage] = []
        self.skipped: list[SkippedFile] = []
        self.ms = {"read_ms": 0.0, "detect_ms": 0.0, "embed_ms": 0.0}
        self.pending = _Pending([], [], [], [])
        self.embedded: list[tuple[ReferenceName, Box, float | None]] = []  # embedded, not yet added
        self.rows: list[FloatArray] = []
        self.evicted: list[tuple[str, int]] = []
        self.copies = 0  # references skipped as copies of entries (_drop_copies)

    def take(self, name: ReferenceName) -> None:
        t = time.perf_counter()
        try:
            image = read_image(name.path)
        except DataError as e:
            log.warning("skipping %s", e)
            self.skipped.append(SkippedFile(name.path, str(e)))
            return
        t = self._tick("read_ms", t)
        box, score = whole_box(image), None
        if self.detector is not None:
            dets = largest(self.detector.detect(Frame(0, 0.0, image, str(name.path))))
            self._tick("detect_ms", t)
            if len(dets) == 0:
                self.skipped.append(SkippedFile(name.path, "no person detected (--detect)"))
                return
            box, score = _as_box(dets.xyxy[0]), float(dets.scores[0])
        p = self.pending
        p.names.append(name)
        p.crops.append(crop_boxes(image, np.asarray([box], dtype=np.float32))[0].copy())
        p.boxes.append(box)
        p.scores.append(score)
        if len(p.crops) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Embed the pending crops (their rows wait for ``add`` to reach the gallery)."""
        p = self.pending
        if not p.crops:
            return
        t = time.perf_counter()
        self.rows.append(embed_crops(self.embedder, p.crops))
        self._tick("embed_ms", t)
        self.embedded.extend(zip(p.names, p.boxes, p.scores, strict=True))
        self.pending = _Pending([], [], [], [])

    def add(self, gallery: Gallery) -> None:
        """Add every embedded reference to ``gallery`` in one call: a later chunk's cap evictions cannot then
        leave earlier references reported as enrolled (or with stale rows)."""
        self.flush()
        self._drop_copies(gallery)
        if not self.embedded:
            return
        labels = [n.label for n, _, _ in self.embedded]
        before = {label: gallery.count(label) for label in sorted(set(labels))}
        kept = gallery.add_many(labels, np.concatenate(self.rows))
        for (name, box, score), row in zip(self.embedded, kept, strict=True):
            if row < 0:
                self.skipped.append(SkippedFile(name.path, f"label {name.label!r} is at the gallery's cap"))
            else:
                self.enrolled.append(EnrolledImage(name, row, box, score))
        added = Counter(label for label, row in zip(labels, kept, strict=True) if row >= 0)
        for label, held in before.items():
            dropped = held + added[label] - gallery.count(label)
            if dropped:
                self.evicted.append((label, dropped))
        self.embedded, self.rows = [], []

    def _drop_copies(self, gallery: Gallery) -> None:
        """Skip each embedded reference that is a copy (COPY_SIMILARITY) of an entry its label holds, or of one
        taken before it here: the same photo enrolled again (``enroll --append`` of a folder the gallery holds)
        would only double its rows, and the cap then drop other photos of the person to make room."""
        if not self.embedded:
            return
        rows = np.concatenate(self.rows)
        emb = gallery.embeddings
        taken: dict[str, list[FloatArray]] = {n.label: [] for n, _, _ in self.embedded}
        for i, label in enumerate(gallery.labels):  # one pass, whatever the gallery's size
            if label in taken:
                taken[label].append(emb[i])
        keep: list[int] = []
        for i, (name, _, _) in enumerate(self.embedded):
            vec = rows[i] / max(float(np.linalg.norm(rows[i])), 1e-12)
            same = taken[name.label]
            best = max((float(vec @ other) for other in same), default=-1.0)
            if best >= COPY_SIMILARITY:
                self.copies += 1
                self.skipped.append(
                    SkippedFile(
                        name.path,
                        f"already enrolled: the same image as an entry of {name.label!r} ({best:.4f})",
                    )
                )
                continue
            same.append(vec)
            keep.append(i)
        self.embedded = [self.embedded[i] for i in keep]
        self.rows = [rows[keep]]

    def _tick(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.ms[key] += (now - since) * 1000.0
        return now


def _as_box(values: Sequence[float] | np.ndarray[Any, Any]) -> Box:
    x0, y0, x1, y1 = (float(v) for v in values)
    return (x0, y0, x1, y1)


def enroll(
    folder: StrPath,
    embedder: Embedder,
    gallery: Gallery,
    *,
    naming: EnrollConfig | None = None,
    detector: Detector | None = None,
    sets: Collection[str] | None = None,
    save_to: StrPath | None = None,
    append: bool = False,
    replace: bool = False,
    progress: bool = False,
) -> EnrollReport:
    """Add every reference image of ``folder`` to ``gallery`` (labels from file names) and save it.

    With a ``detector`` each photo contributes its largest person box (for uncropped photos); without, the
    whole image. The references are embedded first; then, holding ``save_to``'s lock (``gallery.locked``,
    waiting ``naming.lock_wait_s`` at most for it: LockTimeout), they are added and the gallery saved. With
    ``append`` (``gallery`` is the file ``save_to`` as read, or a new one where there was none) they are added
    to the file as it is then: rows another process (``serve``) saved there since are kept; with ``replace``
    ``gallery`` is saved over the file; without either (the default, as ``reid-daemon enroll`` without
    ``--append`` or ``--replace``) a file there is refused (DataError, ``existing_gallery``), before anything is
    embedded and again under the lock, never written over; both are refused (ValueError), as the command refuses
    both options. Raises DataError when the folder is missing, holds no usable image, or the gallery's
    dimension differs from the embedder's; other problems are reported per file in ``skipped``.
    """
    start = time.perf_counter()
    cfg = naming or EnrollConfig()
    if append and replace:
        raise ValueError(
            "append adds to the gallery file, replace writes a new one over it: give one, not both"
        )
    target = None if save_to is None else Path(save_to)
    if not (append or replace) and target is not None and target.exists():
        raise DataError(existing_gallery(target))
    _check_gallery(gallery, embedder, target)
    names, skipped = reference_files(folder, cfg, sets)
    work = _Enroller(embedder, detector)
    work.skipped = skipped
    for name in tqdm(names, unit="image", desc="enrol", disable=not progress, dynamic_ncols=True):
        work.take(name)
    work.flush()
    who = "reid-daemon enroll --append" if append else "reid-daemon enroll"
    lock = None if target is None else locked(target, cfg.lock_wait_s, who, "enroll.lock_wait_s")
    with contextlib.nullcontext() if lock is None else lock:
        if append and target is not None:
            gallery = latest(gallery, target)
            _check_gallery(gallery, embedder, target)
        elif not replace and target is not None and target.exists():  # made while the images were embedded
            raise DataError(existing_gallery(target))
        held = {label: set(gallery.sources(label)) for label in {n.label for n, _, _ in work.embedded}}
        work.add(gallery)
        if not work.enrolled and work.copies:  # nothing new: the file is left as it is
            target = None
        elif not work.enrolled:
            reasons = (
                "; ".join(f"{s.path.name}: {s.reason}" for s in work.skipped[:5]) or "the folder is empty"
            )
            raise DataError(f"no reference image could be enrolled from {folder} ({reasons})")
        _warn_case_twins({e.name.label for e in work.enrolled}, gallery.unique_labels)
        saved = gallery.save(target) if target is not None else None
        dropped = set().union(*(was - set(gallery.sources(label)) for label, was in held.items()))
        removed = remove_serve_references(dropped, cfg).removed if saved is not None else ()
    total = (time.perf_counter() - start) * 1000.0
    timings = Timings(work.ms["read_ms"], work.ms["detect_ms"], work.ms["embed_ms"], total)
    return EnrollReport(
        Path(folder),
        tuple(work.enrolled),
        tuple(work.skipped),
        len(gallery),
        saved,
        timings,
        tuple(work.evicted),
        removed,
    )


# ---------------------------------------------------------------------------------------------- unenrol


@dataclass(frozen=True)
class UnenrollReport:
    """What ``unenroll`` did: the ``labels`` removed (with the entries each held) from the gallery ``file``, the
    reference images serve kept for them that it removed (``removed``: those it deleted; one already gone is in
    neither list), the images their entries record that stay (``kept``: not named as serve's by their folder's
    ledger), and the gallery's size after."""

    file: Path
    labels: tuple[tuple[str, int], ...]
    removed: tuple[Path, ...]
    kept: tuple[Path, ...]
    gallery_size: int
    gallery_labels: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "gallery": str(self.file),
            "removed_labels": dict(self.labels),
            "removed": [str(p) for p in self.removed],
            "kept": [str(p) for p in self.kept],
            "gallery_size": self.gallery_size,
            "labels": self.gallery_labels,
        }

    def text(self) -> str:
        entries = sum(n for _, n in self.labels)
        which = ", ".join(f"{label!r} ({n})" for label, n in self.labels)
        lines = [
            f"removed {entries} entries of {len(self.labels)} label(s) from {shown(self.file)}: {which}; the "
            f"gallery holds {self.gallery_size} entries of {self.gallery_labels} label(s)"
        ]
        if self.removed:
            lines.append(f"removed {len(self.removed)} reference image(s) serve kept for them:")
            lines += [f"  {shown(p)}" for p in self.removed]
        if self.kept:
            lines.append(
                f"{len(self.kept)} image(s) their entries were made from stay (their folder's ledger does not name "
                "them as serve's; remove them by hand if they are not yours to keep):"
            )
            lines += [f"  {shown(p)}" for p in self.kept]
        lines.append(
            "photos of them in a reference folder of yours stay: enroll of that folder would add them again"
        )
        return "\n".join(lines)


def unenroll(path: StrPath, labels: Sequence[str], naming: EnrollConfig | None = None) -> UnenrollReport:
    """Remove every entry of ``labels`` from the gallery file ``path`` and save it (atomically, in its format),
    holding its lock (``locked``, waiting ``naming.lock_wait_s`` at most: LockTimeout) and reading it as it is
    then (``latest``: a ``serve`` or ``enroll --append`` may have saved it since), so that no writer saves the
    entries back; then remove the reference images ``serve`` kept for them (``remove_serve_references``: only
    names its folder's ledger records), holding each such folder's lock as serve does. A label is the gallery's
    as given, or as enroll leaves a label: its white space and Unicode form, and lower case with
    ``naming.lowercase``. DataError naming the labels the gallery does not hold and the gallery (nothing is
    changed then), or when the file cannot be read."""
    cfg = naming or EnrollConfig()
    target = Path(path)
    gallery = Gallery.load(target)  # a missing or bad file is named before its lock file is made
    who = "reid-daemon unenroll"
    with locked(target, cfg.lock_wait_s, who, "enroll.lock_wait_s"):
        gallery = latest(gallery, target)
        chosen = _held_labels(gallery, labels, target, cfg.lowercase)
        sources = {s for label in chosen for s in gallery.sources(label)}
        counts = tuple((label, gallery.remove(label)) for label in chosen)
        with contextlib.ExitStack() as folders:
            for folder in serve_folders(sources, cfg):
                folders.enter_context(ledger_locked(folder, cfg.lock_wait_s, who, "enroll.lock_wait_s"))
            gallery.save(target)
            done = remove_serve_references(sources, cfg)
    gone = {*done.removed, *done.gone}
    kept = tuple(sorted(p for p in map(Path, sources) if p not in gone))
    return UnenrollReport(target, counts, done.removed, kept, len(gallery), len(gallery.unique_labels))


def held_label(gallery: Gallery, label: str, lowercase: bool) -> str | None:
    """The gallery's label that ``label`` names: as given, else trimmed, runs of white space as one space and
    Unicode NFC, else, with ``lowercase`` (enroll.lowercase), that in lower case (as enroll and serve make a
    label); None when it holds none of them."""
    spellings = (label, tidy_label(label), tidy_label(label, lowercase))
    return next((x for x in spellings if x in gallery), None)


def _held_labels(gallery: Gallery, labels: Sequence[str], path: Path, lowercase: bool) -> list[str]:
    """The gallery's label of each of ``labels`` (``held_label``), once each; DataError naming those it does not
    hold."""
    found: list[str] = []
    missing: list[str] = []
    for label in labels:
        held = held_label(gallery, label, lowercase)
        if held is None:
            missing.append(label)
        elif held not in found:
            found.append(held)
    if missing:
        names = ", ".join(repr(x) for x in missing)
        raise DataError(
            f"the gallery {shown(path)} has no label {names} ({labels_held(gallery.unique_labels)}): nothing was "
            "removed"
        )
    return found


def labels_held(labels: list[str], shown_at_most: int = 10) -> str:
    """What a gallery's ``labels`` are, for an error: the first ``shown_at_most``, then how many more; or that
    it is empty."""
    if not labels:
        return "the gallery is empty"
    more = f" and {len(labels) - shown_at_most} more" if len(labels) > shown_at_most else ""
    return f"it has {', '.join(repr(x) for x in labels[:shown_at_most])}{more}"


def existing_gallery(path: Path) -> str:
    """Why enroll will not write a new gallery over the file ``path``: what it holds, and the two options."""
    try:
        held = Gallery.load(path)
    except DataError as e:  # --append would refuse it too
        return (
            f"the gallery file {shown(path)} exists and cannot be read as a gallery ({e}): mend or move it, or "
            "enroll --replace writes a new gallery over it"
        )
    return (
        f"the gallery file {shown(path)} exists and holds {len(held)} entries of {len(held.unique_labels)} "
        "label(s): enroll --append adds to it, --replace writes a new gallery over it (its entries lost)"
    )


def _warn_case_twins(enrolled: set[str], held: Sequence[str]) -> None:
    """Warn of each label enrolled now that differs from another the gallery holds in case alone ('Jane Doe',
    'jane doe': two people to the gallery, one to whoever named the files)."""
    groups: dict[str, list[str]] = {}
    for label in held:
        groups.setdefault(label.casefold(), []).append(label)
    for twins in groups.values():
        if len(twins) > 1 and enrolled.intersection(twins):
            log.warning(
                "labels %s differ in case alone: the gallery holds them as %d people; rename the files of one, "
                "or set enroll.lowercase: true (and enroll --replace) to make them one",
                " and ".join(repr(t) for t in sorted(twins)),
                len(twins),
            )


def _check_gallery(gallery: Gallery, embedder: Embedder, file: Path | None) -> None:
    """DataError, naming the gallery's ``file`` (else the one it was read from), unless ``embedder``'s vectors can
    go into ``gallery`` (its width and, where both say, its model and crop settings); a new gallery records the
    embedder."""
    if gallery.dim != embedder.dim:
        raise DataError(
            gallery.of_file(
                f"the gallery holds {gallery.dim}-d embeddings but the embedder gives {embedder.dim}-d: "
                "enrol into a gallery made with the same model",
                file,
            )
        )
    signature = embedder_signature(embedder)
    try:
        gallery.check_embedder(signature, "the embedder")
    except DataError as e:
        raise DataError(gallery.of_file(str(e), file)) from e
    gallery.made_by(signature)
