"""What a camera worker writes: JSON-lines track events, an embedding file, an annotated video, a summary.

Every writer streams to disk with bounded memory, so an endless RTSP run does not grow.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Protocol

import cv2
import numpy as np

from daemon.config import CameraConfig
from daemon.embedding import atomic_write
from daemon.errors import ConfigError
from daemon.motio import MotTracks, read_results
from daemon.mp4_timing import Mp4LayoutError, hold_gaps
from daemon.sources import local_path
from daemon.types import FloatArray, ImageBGR, Track

log = logging.getLogger(__name__)

EVENT_SCHEMA_VERSION = 1
SUMMARY_SCHEMA_VERSION = 1  # summary.json and status.json
SPACE_CHECK_EVERY = 50  # annotated frames between checks that the video's disk still has room
MAX_FILL_S = 10.0  # a source's gap up to this long is filled with its last frame in the annotated video
MAX_HELD_GAPS = 10_000  # longer gaps an annotated video's index holds its frame through (more: it jumps)
# MPEG-4 Part 2 (mp4v): the largest even side it encodes (a larger frame is scaled down to fit), and the most
# ticks a second its time base takes (a rate it cannot time is rounded: mp4v_fps)
MAX_VIDEO_SIDE = 8190
MPEG4_MAX_TICKS = 65535


class Identity(Protocol):
    """What the outputs show of a track's fleet identity (``daemon.identity.IdentityAssignment`` has it)."""

    @property
    def global_id(self) -> int | None: ...

    @property
    def label(self) -> str | None: ...


_NPY_HEADER_BYTES = 128
RUN_RECORD: Final = "run.json"  # which run of the camera wrote the files beside it (``write_run_record``)


VIDEO: Final = "annotated.mp4"  # the annotated video's first segment; the next ones: annotated-001.mp4, ...
_SEGMENT = re.compile(r"annotated-(\d{3,})\.mp4")


def video_segment(first: Path, n: int) -> Path:
    """The path of segment ``n`` (0-based) of the annotated video whose first segment is ``first``:
    ``annotated.mp4``, ``annotated-001.mp4``, ``annotated-002.mp4``, ..."""
    return first if n == 0 else first.with_name(f"{first.stem}-{n:03d}{first.suffix}")


def video_segments(folder: Path) -> list[Path]:
    """The annotated video's segment files in ``folder``, in the order they were written (``annotated.mp4``
    first, then ``annotated-001.mp4``, ...: by number, ``-1000`` after ``-999``)."""
    later = []
    try:
        for p in folder.iterdir():
            m = _SEGMENT.fullmatch(p.name)
            if m is not None and p.is_file():
                later.append((int(m.group(1)), p))
    except OSError:
        pass  # no folder, or one that cannot be listed: no segment to be read there
    first = [folder / VIDEO] if (folder / VIDEO).is_file() else []
    return first + [p for _, p in sorted(later)]


def camera_files(name: str, folder: Path | None = None) -> tuple[str, ...]:
    """Every file camera ``name``'s worker may write into its folder (``worker.CameraOutputs``,
    ``fleet.IdentityLog``, ``runner.StatusFile``); a fleet run removes an earlier run's before the camera starts
    (a live camera's are put into an ``earlier-*`` folder), so that a camera stopped or failed before it opened its
    outputs leaves none to be read as this run's. With ``folder``, the annotated video's later segments there
    too (``annotated-001.mp4``, ...: ``video_segments``), whether its first is there or not (an hour of video
    removed to free the disk)."""
    later = tuple(p.name for p in video_segments(folder) if p.name != VIDEO) if folder is not None else ()
    return (
        f"{name}.txt",
        f"{name}.global.txt",
        "events.jsonl",
        "embeddings.npy",
        VIDEO,
        *later,
        "summary.json",
        "identities.json",
        "identities.jsonl",
        RUN_RECORD,
        "status.json",
    )


def check_source_kept(cam: CameraConfig, name: str) -> None:
    """ConfigError when camera ``name`` reads one of the files it writes (``runs/cam/annotated.mp4`` given back
    as its source): the worker would cut it while reading it, and a fleet removes it before the camera starts."""
    src = local_path(cam.source)
    out = Path(cam.output.dir) / name
    if src is not None and src.resolve() in {(out / f).resolve() for f in camera_files(name, out)}:
        raise ConfigError(
            f"cameras.{name}.source.uri: {src} is a file the camera writes in {out}; it would be lost: move it "
            "or give another output.dir"
        )


def stream_files(name: str, folder: Path | None = None) -> tuple[str, ...]:
    """The files of ``camera_files`` a worker writes as the stream goes (not its status or summary)."""
    return tuple(f for f in camera_files(name, folder) if f not in ("summary.json", "status.json"))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """``run.json``: which run of a camera wrote the files beside it. A worker writes one with its files and again
    with each set of new ones after a rotation, so every ``earlier-*`` folder a run rotated its files into names
    that run: a recording run again into the same folder replaces its own files, but the folders its earlier run
    rotated into stay (they are the user's), and a reader (the fleet report, fleet.mp4) tells them from this run's
    by it. ``run``: an id, new for each start of the worker; ``started``: when it started (UTC); ``first_frame``:
    the index (0-based) of the first frame of the files beside it (0: the run's first files; after a rotation,
    the frame it came at), so that a run scored after ``output.keep_earlier`` deleted its first files is scored
    from where its files begin (``run_first_frame``)."""

    camera: str
    run: str
    started: str
    live: bool
    first_frame: int = 0

    @staticmethod
    def new(camera: str, live: bool) -> RunRecord:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return RunRecord(camera, uuid.uuid4().hex, started, live)

    def write(self, folder: Path) -> None:
        doc = {"v": SUMMARY_SCHEMA_VERSION, **asdict(self)}
        atomic_write(folder / RUN_RECORD, json.dumps(doc).encode("utf-8"))


def recorded_run(folder: Path) -> str | None:
    """The run id ``folder``'s ``run.json`` records; None where there is none (files written by a version before
    it was recorded, or none) or it cannot be read."""
    run = json_object(folder / RUN_RECORD).get("run")
    return run if isinstance(run, str) and run else None


EARLIER_PREFIX: Final = "earlier-"  # <camera>/earlier-<UTC time>[-<n>]/: files moved out of a run's way


def _earlier_order(folder: Path) -> tuple[str, int]:
    """Sort key of an ``earlier-*`` folder: its UTC time, then its number within that second (``keep_earlier_run``
    names the first ``earlier-<time>``, the next ones ``-2``, ``-3``, ...; by name ``-10`` sorts before ``-2``)."""
    stamp = folder.name.removeprefix(EARLIER_PREFIX)
    head, _, n = stamp.rpartition("-")
    return (head, int(n)) if head and n.isdigit() else (stamp, 1)


def earlier_folders(folder: Path) -> list[Path]:
    """The ``earlier-*`` folders in a camera's ``folder``, oldest first (``keep_earlier_run`` names them)."""
    return sorted((p for p in folder.glob(f"{EARLIER_PREFIX}*") if p.is_dir()), key=_earlier_order)


def run_folders(camera_dir: Path, earlier_runs: bool = False) -> list[Path]:
    """A camera's folder and the ``earlier-*`` folders its run rotated its files into (``output.rotate_mb``,
    ``output.live_rotate_s``), oldest first: those whose ``run.json`` names the run of the camera's folder
    (``outputs.RunRecord``). The folders an earlier run rotated into are left out: a restarted live camera's (its
    last files were moved to an ``earlier-*`` folder with its ``status.json``), and those of a recording run
    again into the same folder, which replaced that run's last files. With ``earlier_runs`` the earlier runs a
    live camera kept whole are taken too: the fleet's global ids go on across runs only with a shared Valkey
    (``bridge.url``); on an embedded one each run starts them at 1 again. Folders written before runs were
    recorded are told apart as they were then: one holding a ``status.json`` ends an earlier run."""
    earlier = earlier_folders(camera_dir)
    runs = {p: recorded_run(p) for p in earlier}
    this = recorded_run(camera_dir)
    if earlier_runs:
        kept = {runs[p] for p in earlier if (p / "status.json").is_file()}  # runs whose last files were kept
        return [*(p for p in earlier if runs[p] is None or runs[p] == this or runs[p] in kept), camera_dir]
    if this is not None:
        return [*(p for p in earlier if runs[p] == this), camera_dir]
    unrecorded = [p for p in earlier if runs[p] is None]
    ends = [i for i, p in enumerate(unrecorded) if (p / "status.json").is_file()]
    return [*(unrecorded[ends[-1] + 1 :] if ends else unrecorded), camera_dir]


def _next_earlier(folder: Path, stamp: str) -> Path:
    """A new ``earlier-*`` folder's path at UTC time ``stamp``: ``earlier-<stamp>``, or where that second has
    some (restarts, rotations), numbered after the newest of them; not a number ``output.keep_earlier`` freed
    by deleting the oldest, which would sort before the folders kept and be the next one deleted."""
    n = max((k for s, k in map(_earlier_order, earlier_folders(folder)) if s == stamp), default=0) + 1
    dest = folder / (f"{EARLIER_PREFIX}{stamp}" if n == 1 else f"{EARLIER_PREFIX}{stamp}-{n}")
    while dest.exists():  # a file of that name
        n += 1
        dest = folder / f"{EARLIER_PREFIX}{stamp}-{n}"
    return dest


def keep_earlier_run(
    folder: Path, name: str, keep: int | None = None, files: tuple[str, ...] | None = None
) -> Path | None:
    """Move an earlier run's files of camera ``name`` (``files``, default ``camera_files`` in ``folder``) out of
    the way, into ``folder/earlier-<UTC time>/``, so that this run does not overwrite them: a live camera's outputs
    cannot be made again. Events keep pointing at their embeddings (the reference is the file's name). With
    ``keep``, only the newest ``keep`` such folders stay. Returns the new folder, or None when there was
    nothing to keep (or ``keep`` is 0)."""
    found = [f for f in (files or camera_files(name, folder)) if (folder / f).exists()]
    dest: Path | None = None
    if found:
        dest = _next_earlier(folder, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        dest.mkdir()
        for f in found:
            (folder / f).rename(dest / f)
    if keep is not None:
        earlier = earlier_folders(folder)
        for old in earlier[: max(len(earlier) - keep, 0)]:
            shutil.rmtree(old)
            if old == dest:
                dest = None
    return dest


def recorded_no_frame(folder: Path, name: str) -> bool:
    """Whether camera ``name``'s files in ``folder`` hold nothing of any frame: what a run leaves that failed, or
    was stopped, after opening its outputs and before its first frame (Valkey refusing the password, a stream
    that never sent one). Only a file known to hold nothing counts: one that holds a record, or cannot be read,
    is a run's data."""
    return all(_holds_no_frame(folder / f) for f in camera_files(name, folder))


def _holds_no_frame(path: Path) -> bool:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if path.name == RUN_RECORD:  # which run wrote the files, not what it recorded
        return True
    if path.name == "embeddings.npy":
        return size <= _NPY_HEADER_BYTES  # the header alone: no row
    if path.name in ("status.json", "summary.json"):
        return json_object(path).get("frames") == 0
    if path.name == "identities.json":
        doc = json_object(path)
        return "first_frame_time" in doc and doc["first_frame_time"] is None and doc.get("identities") == {}
    return size == 0


def json_object(path: Path) -> dict[str, Any]:
    """``path``'s JSON object (a camera's ``status.json``, ``summary.json``); an empty one where it is not one or
    cannot be read."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def drop_empty_run(folder: Path, name: str) -> bool:
    """Remove camera ``name``'s files from ``folder`` where they hold nothing of any frame (``recorded_no_frame``),
    so that a start that failed takes no place among the ``earlier-*`` folders ``output.keep_earlier`` keeps:
    a service restarted on failure again and again would otherwise push every recorded run out. True when
    files were removed."""
    found = [folder / f for f in camera_files(name, folder) if (folder / f).exists()]
    if not found or not recorded_no_frame(folder, name):
        return False
    for f in found:
        f.unlink(missing_ok=True)
    return True


def drop_empty_earlier(folder: Path, name: str) -> list[Path]:
    """Remove the ``earlier-*`` folders in camera ``name``'s ``folder`` that hold nothing of a run: no file at
    all, or a start's camera files of no frame (``recorded_no_frame``, its status or summary at 0 frames), what
    releases before ``drop_empty_run`` moved there for a failed start; ``output.keep_earlier`` would count them
    and delete a recorded run before them. A folder holding anything else (a frame, a file not the camera's, one
    that cannot be read, a rotation's files, which hold no status, of a stretch that saw nobody) stays. Returns
    those removed; OSError where one cannot be."""
    removed = []
    for earlier in earlier_folders(folder):
        try:
            found = list(earlier.iterdir())
        except OSError:
            continue  # cannot be told from a run's data
        ours = set(camera_files(name, earlier))
        if any(f.name not in ours or f.is_symlink() or not f.is_file() for f in found):
            continue
        started = any((earlier / f).is_file() for f in ("status.json", "summary.json"))
        if found and not (started and recorded_no_frame(earlier, name)):
            continue  # a rotation's files (no status) that saw nobody are a record of that
        for f in found:
            f.unlink()
        earlier.rmdir()
        removed.append(earlier)
    return removed


TAIL_BYTES = 4 << 20  # how much of an earlier run's events.jsonl is read for its last track id


def last_track_id(events: Path) -> int:
    """The highest track id in the last ``TAIL_BYTES`` of an events file (0: none, or no file): every track
    alive when that run stopped is there (a live track gets an event at least every ``output.event_every``
    frames), pending ones included, which the fleet's Valkey holds no state of."""
    try:
        with open(events, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - TAIL_BYTES, 0))
            tail = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return 0
    highest = 0
    for line in tail[1:] if len(tail) > 1 else tail:  # the first may be cut
        try:
            track = json.loads(line).get("track_id")
        except (ValueError, AttributeError):
            continue
        if isinstance(track, int):
            highest = max(highest, track)
    return highest


def last_recorded_track(folder: Path) -> int:
    """The highest track id the camera whose folder this is wrote before (0: none): from its ``events.jsonl``
    (``last_track_id``), or where that holds no track (a start that failed before its first frame, a run or a
    rotated file that saw nobody), from its ``earlier-*`` folders', newest first. Track ids only grow across a
    camera's runs, so the first found is the highest."""
    earlier = earlier_folders(folder) if folder.is_dir() else []
    for events in [folder / "events.jsonl", *(d / "events.jsonl" for d in reversed(earlier))]:
        highest = last_track_id(events)
        if highest:
            return highest
    return 0


def outlined_text(image: ImageBGR, text: str, at: tuple[int, int], scale: float, outline: int = 4) -> None:
    """White ``text`` with a black outline ``outline`` px thick, legible on any background (drawn in place)."""
    cv2.putText(image, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), outline, cv2.LINE_AA)
    cv2.putText(image, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


class EmbeddingFile:
    """Appends (D,) float32 rows to a ``.npy`` file that ``np.load(..., mmap_mode='r')`` reads at any time.

    The header is rewritten on every flush with the row count so far, so a crash loses at most the rows
    written since the last flush.
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.rows = 0
        self._header_rows = -1  # the row count the header on disk gives
        self._fh: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._write_header()

    def _write_header(self) -> None:
        self._header_rows = self.rows
        text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({self.rows}, {self.dim}), }}"
        pad = _NPY_HEADER_BYTES - 10 - len(text) - 1
        header = b"\x93NUMPY\x01\x00" + (len(text) + pad + 1).to_bytes(2, "little")
        self._fh.seek(0)
        self._fh.write(header + text.encode("latin1") + b" " * pad + b"\n")
        self._fh.seek(0, os.SEEK_END)

    def append(self, vec: FloatArray) -> int:
        """Write one row; return its index."""
        row = np.asarray(vec, dtype="<f4").reshape(-1)
        if row.shape[0] != self.dim:
            raise ValueError(f"embedding has {row.shape[0]} values, the file holds {self.dim}")
        self._fh.write(row.tobytes())
        self.rows += 1
        return self.rows - 1

    def flush(self) -> None:
        """The rows so far on disk, and the header's count with them when it changed (the worker flushes every
        frame; most frames add no row)."""
        if self._header_rows != self.rows:
            self._write_header()
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self.flush()
            finally:
                self._fh.close()


@dataclass(slots=True)
class _TrackLife:
    first_frame: int
    last_frame: int
    frames: int
    box: tuple[float, float, float, float]
    score: float
    last_event_frame: int


class EventLog:
    """Writes ``track.started`` / ``track.updated`` / ``track.ended`` JSON lines.

    ``updated`` is written when a track gets a new embedding or every ``every`` frames, not every frame.
    """

    def __init__(self, path: Path, camera: str, every: int, embeddings: EmbeddingFile | None) -> None:
        self.camera = camera
        self.every = every
        self.embeddings = embeddings
        self.counts = {"track.started": 0, "track.updated": 0, "track.ended": 0}
        self.path = path
        self._fh: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._life: dict[int, _TrackLife] = {}

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        self.counts[kind] += 1
        rec = {"v": EVENT_SCHEMA_VERSION, "event": kind, "camera": self.camera, **payload}
        self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def _embedding_ref(self, emb: FloatArray | None) -> dict[str, Any] | None:
        if emb is None or self.embeddings is None:
            return None
        row = self.embeddings.append(emb)
        return {"file": self.embeddings.path.name, "row": row, "dim": self.embeddings.dim}

    def frame(
        self,
        index: int,
        ts: float,
        tracks: list[Track],
        embeddings: FloatArray | None,
        identities: Sequence[Identity] | None = None,
    ) -> None:
        """Record one frame's tracks. ``embeddings`` rows align with detections (``Track.det_index``);
        ``identities`` (in a fleet) align with ``tracks`` and add ``global_id`` and ``label`` to each event."""
        for i, t in enumerate(tracks):
            emb = embeddings[t.det_index] if (t.embedded and embeddings is not None) else None
            life = self._life.get(t.track_id)
            base = {
                "track_id": t.track_id,
                "key": t.key,
                "frame": index,
                "ts": round(ts, 4),
                "box": [round(v, 1) for v in t.xyxy],
                "score": round(t.score, 4),
            }
            if identities is not None:
                base["global_id"], base["label"] = identities[i].global_id, identities[i].label
            if life is None:
                self._life[t.track_id] = _TrackLife(index, index, 1, t.xyxy, t.score, index)
                self._emit("track.started", {**base, "embedding": self._embedding_ref(emb)})
                continue
            life.last_frame, life.frames, life.box, life.score = index, life.frames + 1, t.xyxy, t.score
            if emb is not None or index - life.last_event_frame >= self.every:
                life.last_event_frame = index
                self._emit("track.updated", {**base, "embedding": self._embedding_ref(emb)})

    def ended(self, track_ids: list[int], index: int, ts: float) -> None:
        for tid in track_ids:
            life = self._life.pop(tid, None)
            if life is None:
                continue
            self._emit(
                "track.ended",
                {
                    "track_id": tid,
                    "key": f"{self.camera}/{tid}",
                    "frame": index,
                    "ts": round(ts, 4),
                    "first_frame": life.first_frame,
                    "last_frame": life.last_frame,
                    "frames": life.frames,
                    "box": [round(v, 1) for v in life.box],
                    "score": round(life.score, 4),
                },
            )

    def carry_on(self, earlier: EventLog) -> None:
        """Go on from ``earlier`` (the file before a rotation): its counts, and its live tracks, which get no
        second ``track.started``."""
        self.counts = dict(earlier.counts)
        self._life = dict(earlier._life)

    def flush(self) -> None:
        """Put what was written so far on disk: the embedding rows (and their count) first, then the events
        that reference them, so a reader or a crash never finds an event whose row is not in the file."""
        if self.embeddings is not None:
            self.embeddings.flush()
        self._fh.flush()

    def reopen(self) -> None:
        """Go on appending to the file now at ``path`` (after it was rewritten and replaced: ``daemon.erase``)."""
        self._fh.close()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _colour(track_id: int) -> tuple[int, int, int]:
    """A saturated colour (BGR) for an id; consecutive ids get hues far apart (golden-ratio steps round the
    colour wheel), so tracks that start together, which get neighbouring ids, are told apart."""
    hue = round((track_id * 0.6180339887 % 1.0) * 180) % 180  # OpenCV hues: 0..179
    pixel = np.array([[[hue, 220, 240]]], np.uint8)
    b, g, r = cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _label(
    image: ImageBGR, text: str, at: tuple[int, int], colour: tuple[int, int, int], k: float = 1.0
) -> None:
    """``text`` on a box of ``colour`` above the point ``at`` (inside the frame), in black or white, whichever
    stands out from that colour: legible on any scene (drawn in place); ``k`` times the size (``ink_scale``)."""
    scale, stroke = 0.5 * k, max(1, round(k))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, stroke)
    pad = round(2 * k)
    x = min(max(at[0], 0), max(image.shape[1] - w - 2 * pad, 0))
    y = max(at[1], h + base + pad)  # the box's bottom; below the top edge when the track touches it
    cv2.rectangle(image, (x, y - h - base - pad), (x + w + 2 * pad, y), colour, cv2.FILLED)
    b, g, r = colour
    ink = (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + pad, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, stroke, cv2.LINE_AA)


INK_HEIGHT_PX: Final = 576
"""Frames up to this tall (PETS09-S2L1's) get labels, boxes and the caption at their set size; a taller one gets
them in proportion to its height (``ink_scale``), so that they stay legible when it is seen at a screen's size."""


def ink_scale(image: ImageBGR) -> float:
    """How much larger than their set size an annotated frame's labels, boxes and caption are drawn."""
    return max(1.0, int(image.shape[0]) / INK_HEIGHT_PX)


def _fleet_label(t: Track, ident: Identity) -> tuple[str, int]:
    """Text and colour seed of a track in a fleet: its global id (and name), or its local id while pending."""
    if ident.global_id is None:
        return f"{t.track_id}?", t.track_id
    name = f" {ident.label}" if ident.label else ""
    return f"G{ident.global_id}{name}", 1_000_003 + ident.global_id


def draw_tracks(
    image: ImageBGR, tracks: list[Track], caption: str = "", identities: Sequence[Identity] | None = None
) -> ImageBGR:
    """A copy of ``image`` with each track's box and id drawn (the caller's frame is not changed).

    With ``identities`` (aligned with ``tracks``) a track shows its global id and name instead of its local id.
    """
    out = image.copy()
    k = ink_scale(out)
    for i, t in enumerate(tracks):
        x1, y1, x2, y2 = (round(v) for v in t.xyxy)
        text, seed = (f"{t.track_id}", t.track_id) if identities is None else _fleet_label(t, identities[i])
        col = _colour(seed)
        cv2.rectangle(out, (x1, y1), (x2, y2), col, round(2 * k))
        _label(out, text + ("*" if t.embedded else ""), (x1, y1), col, k)
    if caption:
        scale = _caption_scale(caption, out.shape[1] - round(16 * k), 0.55 * k)
        outlined_text(out, caption, (round(8 * k), round(20 * k)), scale, outline=round(3 * k))
    return out


def _caption_scale(caption: str, width: int, scale: float = 0.55) -> float:
    """The caption's font scale: ``scale``, or smaller so that it fits ``width`` px (a narrow camera)."""
    text_w = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    return scale if text_w <= width else max(scale * width / text_w, 0.25)


class AnnotatedVideo:
    """Writes annotated frames to mp4v files, opened lazily at the first frame's size.

    A later frame of another size (a stream that came back at another resolution, a folder of mixed images) is
    scaled to that size: the writer would drop it without a word. Frames with a side over ``MAX_VIDEO_SIDE``
    (8K footage) are scaled down to fit it, aspect kept: the encoder refuses them. OpenCV's writer does not
    report a failed write either, so a full disk is found here: every ``SPACE_CHECK_EVERY`` frames the disk's
    free space is looked at, and each file is checked to be finished (its index written) once closed; either is
    an OSError.

    ``segment_frames``: the video is cut into files of that many frames (``path``, then ``video_segment``'s
    ``annotated-001.mp4``, ...), each closed, and so playable, as the next begins: OpenCV's muxer holds the
    index of every frame of a file in memory until it closes it (~74 bytes a frame, 160 MB a day at 25 FPS).

    A frame given its source time ``ts`` is put on the video's constant-rate grid (``fps``, as mp4v times it) at
    that time, so the video plays in real time whatever the source's rate does: the slots of frames a live stream
    dropped, or a variable-rate file skipped, show the frame before again, and a frame whose slot is filled already
    (a burst, a file's faster stretch) is left out. A gap longer than ``MAX_FILL_S`` (a stream that was away, a
    file's long pause) is not filled: the grid starts again at the next frame, and as its file is closed the
    frame before the gap (its last, where the next file begins after it) is lengthened in the file's time table
    by the time not filled (``mp4_timing.hold_gaps``; up to
    ``MAX_HELD_GAPS`` gaps, the video jumps at those after), so what follows still plays at its time. A time that
    goes back (a wall clock stepped back) starts the grid again too. A frame given no time takes the next slot.
    """

    def __init__(self, path: Path, fps: float, segment_frames: int | None = None) -> None:
        self.path = path
        self.fps = mp4v_fps(fps)  # the rate the video is timed at: its grid
        self.segment_frames = segment_frames
        self.segments = 0  # the files begun so far
        self._writer: cv2.VideoWriter | None = None
        self._writing = path  # the file open
        self._in_file = 0  # frames written into it
        self._source = (0, 0)  # the first frame's size (width, height), scaled down to fit mp4v
        self._size = (0, 0)  # the video's: that, made even
        self._frames = 0
        self._t0: float | None = None  # the source time of the grid's slot 0
        self._last_ts = -math.inf
        self._last: ImageBGR | None = None
        self._gaps: list[
            tuple[int, float]
        ] = []  # the open file's: (its frames before a gap, seconds not filled)

    def write(
        self,
        image: ImageBGR,
        tracks: list[Track],
        caption: str,
        identities: Sequence[Identity] | None = None,
        ts: float | None = None,
    ) -> None:
        if self._size == (0, 0):
            self._source = _within_mpeg4(image.shape[1], image.shape[0], self.path)
            self._size = (self._source[0] + self._source[0] % 2, self._source[1] + self._source[1] % 2)
        empty = 0 if ts is None else self._empty_slots_before(ts)
        if empty is None:
            return
        if self._last is not None:
            for _ in range(empty):
                self._put(self._last)
        self._put(self._fit(draw_tracks(image, tracks, caption, identities)))

    def _begin(self) -> cv2.VideoWriter:
        """The next segment's file, opened."""
        self._writing = video_segment(self.path, self.segments)
        writer = cv2.VideoWriter(str(self._writing), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, self._size)
        if not writer.isOpened():
            raise OSError(f"cannot write video {self._writing}")
        self._writer, self._in_file = writer, 0
        self.segments += 1
        return writer

    def _fit(self, drawn: ImageBGR) -> ImageBGR:
        """A frame at the first frame's size, padded to even sides with black: the encoder needs even sides and
        would cut an odd one's last column or row away."""
        w, h = self._source
        if (drawn.shape[1], drawn.shape[0]) != (w, h):
            drawn = np.asarray(cv2.resize(drawn, (w, h), interpolation=cv2.INTER_AREA), dtype=np.uint8)
        if (w, h) != self._size:
            pad = (0, self._size[1] - h, 0, self._size[0] - w)
            drawn = np.asarray(
                cv2.copyMakeBorder(drawn, *pad, cv2.BORDER_CONSTANT, value=(0, 0, 0)), np.uint8
            )
        return drawn

    def _empty_slots_before(self, ts: float) -> int | None:
        """How many slots of the grid before the one of source time ``ts`` are still empty (the frame before fills
        them); None when that slot is filled already (the frame is left out)."""
        if self._t0 is None:
            self._t0 = ts
        back, self._last_ts = ts < self._last_ts, ts
        slot = round((ts - self._t0) * self.fps)
        if back or slot - self._frames > MAX_FILL_S * self.fps:  # the grid starts again at ts, the next slot
            t0, self._t0 = self._t0, ts - self._frames / self.fps
            if not back and len(self._gaps) < MAX_HELD_GAPS:  # the frame before it: the open file's last
                self._gaps.append((self._in_file, self._t0 - t0))
            return 0
        return slot - self._frames if slot >= self._frames else None

    def _put(self, drawn: ImageBGR) -> None:
        if self.segment_frames is not None and self._in_file >= self.segment_frames:
            self._end()  # as the next begins: a gap before this frame is held in the file that ends here
        writer = self._writer or self._begin()
        writer.write(drawn)
        self._last = drawn
        self._frames += 1
        self._in_file += 1
        if self._frames % SPACE_CHECK_EVERY == 0 and _disk_full(self.path):
            raise OSError(errno.ENOSPC, f"no space left on the disk of {self.path}")

    def _end(self) -> None:
        """Close the file open, checking that it was finished, and hold the gaps it jumped over."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        problem = mp4_problem(self._writing)
        if problem is not None:
            raise OSError(errno.EIO, f"{self._writing} was not finished ({problem}); is the disk full?")
        if self._gaps:
            self._hold_gaps()

    def close(self) -> None:
        self._end()

    def _hold_gaps(self) -> None:
        """The gaps the grid jumped over in the file just closed, held in its time table; a file laid out otherwise
        than OpenCV's writer lays it out is left as it is (it jumps there), with a warning."""
        gaps, self._gaps = self._gaps, []
        try:
            hold_gaps(self._writing, gaps)
        except Mp4LayoutError as e:
            log.warning("%s: its %d gaps over %g s are jumps: %s", self._writing, len(gaps), MAX_FILL_S, e)


def mp4v_fps(fps: float) -> float:
    """``fps``, or the nearest rate an mp4v video can be timed at: OpenCV writes the rate to the ms (n / 1000,
    reduced) and MPEG-4's time base takes n up to 65535, so 66.667 (200 fps at stride 3) is refused; such a rate
    is written to 0.01 fps (whole above 655.35)."""
    n = round(fps * 1000)
    if n // math.gcd(n, 1000) <= MPEG4_MAX_TICKS:
        return fps
    return round(fps, 2) if fps <= MPEG4_MAX_TICKS / 100 else float(round(fps))


def mpeg4_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of frames of this size in an mp4v video: as they are, or scaled down (aspect kept) when a
    side is over ``MAX_VIDEO_SIDE`` (8K footage), which the encoder refuses."""
    scale = MAX_VIDEO_SIDE / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _within_mpeg4(width: int, height: int, path: Path) -> tuple[int, int]:
    """``mpeg4_size`` of a video's frames (a change logged once, naming the video)."""
    fitted = mpeg4_size(width, height)
    if fitted == (width, height):
        return fitted
    log.info(
        "%s: %dx%d frames are written at %dx%d (mp4v takes sides up to %d px)",
        path,
        width,
        height,
        *fitted,
        MAX_VIDEO_SIDE,
    )
    return fitted


def _disk_full(path: Path) -> bool:
    """No block left on ``path``'s file system for this process (root may use the blocks kept for it)."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False  # nothing to tell: the writes themselves are what fails then
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) == 0


def mp4_problem(path: Path) -> str | None:
    """What makes ``path`` not a finished MP4 (its top-level boxes do not tile the file, no ``moov`` index),
    or None. Reads only the box headers."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos, kinds = 0, []
            while pos < size:
                f.seek(pos)
                head = f.read(16)
                if len(head) < 8:
                    return f"{size - pos} stray bytes at its end"
                n, kind = struct.unpack(">I4s", head[:8])
                if n == 1 and len(head) == 16:
                    n = struct.unpack(">Q", head[8:])[0]
                elif n == 0:  # the last box runs to the end of the file
                    n = size - pos
                if n < 8 or pos + n > size:
                    return f"its {kind.decode('latin-1')!r} box at byte {pos} runs past the end"
                kinds.append(kind)
                pos += n
    except OSError as e:
        return f"cannot read it back: {e.strerror or e}"
    return None if b"moov" in kinds else "no index (moov box)"


@dataclass(slots=True)
class RunSummary:
    """The figures a run ends with (also written to summary.json)."""

    camera: str
    source: str
    frames: int
    seconds: float
    fps: float
    stage_ms_per_frame: dict[str, float]
    detections: int
    embedded_boxes: int
    tracks: int
    events: dict[str, int]
    source_stats: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    last_frame: int = -1  # source position of the last frame processed (-1: none)
    stride: int = 1  # source frames per frame run (source.stride): the MOT file holds every stride-th frame
    fleet: dict[str, Any] = field(default_factory=dict)  # identity and bridge counters (fleet mode only)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms_per_frame.items()) or "none (no frame)"
        skipped = int(self.source_stats.get("frames_skipped", 0))
        undecodable = f"; {skipped} undecodable frame{'s' * (skipped > 1)} skipped (named in the log)"
        return (
            f"[{self.camera}] {self.frames} frames in {self.seconds:.1f} s = {self.fps:.1f} FPS; "
            f"ms/frame: {stages}; {self.detections} detections, {self.embedded_boxes} embedded, "
            f"{self.tracks} tracks{undecodable if skipped else ''}"
        )

    def write(self, path: Path) -> None:
        doc = {"v": SUMMARY_SCHEMA_VERSION, **self.as_dict()}
        atomic_write(path, json.dumps(doc, indent=2).encode("utf-8"))


@dataclass(frozen=True, slots=True)
class RunExtent:
    """Which source frames a worker ran: up to ``last_frame`` (0-based), every ``stride``-th one."""

    last_frame: int
    stride: int


MOT_OUTPUTS: Final = ("mot", "global_mot")
"""The summary's ``outputs`` that are MOT files of the run's frames: its tracks, and in a fleet its global ids."""


def run_extent(summary: Path, results: Path | None = None) -> RunExtent | None:
    """What the worker whose ``summary.json`` this is ran (None: it ran no frame, or left no readable
    summary). With ``results``, only when that is one of the run's MOT files (``MOT_OUTPUTS``)."""
    try:
        doc = json.loads(summary.read_text(encoding="utf-8"))
        last, stride = int(doc["last_frame"]), int(doc.get("stride", 1))
        mots = [doc.get("outputs", {}).get(k) for k in MOT_OUTPUTS] if results is not None else []
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # there, but cut short or foreign
        log.warning(
            "cannot read %s (%s: %s): the frames its run saw are not known, so every frame of the ground truth "
            "is scored",
            summary,
            type(e).__name__,
            e,
        )
        return None
    if results is not None and not any(
        isinstance(mot, str) and _is_runs_mot(Path(mot), results, summary) for mot in mots
    ):
        return None
    return RunExtent(last, max(stride, 1)) if last >= 0 else None


def run_first_frame(results: Path) -> int:
    """The MOT frame (1-based) from which the run of a worker's MOT file ``results`` is to be scored: 1, or where
    ``output.keep_earlier`` (or a user) deleted the ``earlier-*`` folders its run rotated its first files into,
    the first frame of the oldest of its files left (its folder's ``RunRecord.first_frame``), with a warning: the
    frames before it are no longer in any file, and would all be scored as misses."""
    oldest = run_folders(results.parent)[0]
    first = json_object(oldest / RUN_RECORD).get("first_frame", 0)
    if type(first) is not int or first <= 0:
        return 1
    log.warning(
        "%s: frames 1..%d of its run were in files deleted since (output.keep_earlier): scored from frame %d, "
        "where its oldest files left begin (%s)",
        results,
        first,
        first + 1,
        oldest,
    )
    return first + 1


def run_results(results: Path) -> MotTracks:
    """The rows of a worker's MOT file (``<camera>.txt``, ``<camera>.global.txt``) over its whole run: the file's,
    after those of the files of its name in the ``earlier-*`` folders the run rotated its files into
    (``run_folders``: ``output.rotate_mb``, ``output.live_rotate_s``), where the file alone holds only what came
    after the last rotation. DataError naming a file that is not a MOT file; a folder whose file is gone
    (``output.keep_earlier`` deleted it) adds no row."""
    files = [f for f in (d / results.name for d in run_folders(results.parent)[:-1]) if f.is_file()]
    if files:
        log.info(
            "%s: scored with the rows its run rotated into %d earlier-* folders before it (from %s)",
            results,
            len(files),
            files[0].parent,
        )
    return MotTracks.joined([read_results(f) for f in [*files, results]])


def _is_runs_mot(mot: Path, results: Path, summary: Path) -> bool:
    """Whether ``results`` is the MOT file a summary records as ``mot``: that file, or one of its name in the
    summary's folder, where the worker writes both (``mot`` is relative to the run's working directory when
    output.dir was, so it names another file, or none, from elsewhere)."""
    return _same_file(mot, results) or (
        mot.name == results.name and _same_file(summary.parent, results.parent)
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
