"""One camera worker: source -> pipeline -> outputs, with progress and a final summary (the I/O edge)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from daemon.camera_lock import StoppedWaiting, worker_locked
from daemon.config import CameraConfig, Settings, redact
from daemon.detect import build_detector
from daemon.embed import build_embedder, embedder_signature, signature_through
from daemon.embedding import remove_leftovers, temp_stem
from daemon.erase import PENDING_FILE, Erased, PendingForgets, erase_camera, erase_problem
from daemon.errors import ConfigError, DaemonError
from daemon.fleet import FleetLink, GlobalMotWriter, IdentityLog, load_identity_head, sighting_gap_s
from daemon.identity import FrameIdentities
from daemon.motio import MotWriter
from daemon.outputs import (
    VIDEO,
    AnnotatedVideo,
    EmbeddingFile,
    EventLog,
    RunRecord,
    RunSummary,
    camera_files,
    check_source_kept,
    drop_empty_earlier,
    drop_empty_run,
    earlier_folders,
    keep_earlier_run,
    last_recorded_track,
    stream_files,
)
from daemon.pipeline import FrameResult, Pipeline
from daemon.sources import SOURCE_WAIT, FrameSource, check_video_file, open_source_waiting
from daemon.tempdirs import Leftovers
from daemon.track import BotSortTracker
from daemon.types import Frame

log = logging.getLogger(__name__)
ROTATE_CHECK_EVERY = 25  # frames between looks at the size of the output files (output.rotate_mb)
FORGET_RETRY_S = (
    1.0  # a forget the camera's files could not take is tried again after this, doubling each time
)
FORGET_RETRY_MAX_S = 60.0  # ... up to this
FORGET_IDLE_S = 1.0  # a live fleet camera erases forgotten ids from its files this often between frames too
# a stopping worker erases forgotten ids from its files for at most this long (looked at line by line, the
# file it reads then left whole), well under the unit's TimeoutStopSec (10 s: deploy/reid-daemon@.service);
# the rest wait in forget-pending.json, as do those of an erase the stop cut short (ended at once)
STOP_ERASE_S = 5.0
MAX_LOGGED_IDS = 10  # forgotten ids named in a log line (the rest counted: a journald line is at most 48 KB)


class WorkerObserver(Protocol):
    """Something that watches a worker (metrics, watchdog, health): called on the worker's main thread.

    ``waiting`` when the start waits, with what for and why (``the camera folder's lock, held by <holder>...``
    while a ``forget`` or ``fleet`` writes its folder, again every ``camera_lock.WAIT_SAY_EVERY_S``; ``the
    source: <why>; trying again in N s`` each time a live source could not be opened yet,
    ``source.startup_wait_s``; ``the fleet's Valkey at <url>: ...`` while the worker catches up with the
    fleet); ``started`` once the source is open and the fleet joined; ``frame`` after each frame was written
    (``loop_s``: wall seconds of this loop iteration, waiting for the frame included); ``stopped`` with the
    summary at the end (also after an error: then ``summary`` is None). Keep the calls short: they run inside
    the frame loop.
    """

    def waiting(self, worker: CameraWorker, what: str) -> None: ...

    def started(self, worker: CameraWorker, source: FrameSource) -> None: ...

    def frame(self, worker: CameraWorker, result: FrameResult, loop_s: float) -> None: ...

    def stopped(self, worker: CameraWorker, summary: RunSummary | None) -> None: ...


def build_pipeline(settings: Settings, name: str, cam: CameraConfig) -> Pipeline:
    """Load the camera's models (from the cache only) and make its tracker."""
    detector = build_detector(cam.detector, settings.runtime, settings.models_dir)
    embedder = build_embedder(cam.embedder, settings.runtime, settings.models_dir)
    tracker = BotSortTracker(name, cam.tracker, cam.embedder, use_embeddings=embedder is not None)
    return Pipeline(detector, embedder, tracker, settings.runtime.detect_workers)


class CameraOutputs:
    """The files one camera writes into ``<output.dir>/<camera>/``."""

    def __init__(
        self,
        name: str,
        cam: CameraConfig,
        fps: float,
        dim: int | None,
        fleet: bool = False,
        live: bool = False,
        earlier_tracks: int = 0,
    ) -> None:
        self.name, self._cam, self._fps, self._dim, self._fleet = name, cam, fps, dim, fleet
        self._live = live
        self.earlier_tracks = (
            earlier_tracks  # the highest track id its earlier run wrote (a live camera restarted)
        )
        self.dir = Path(cam.output.dir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        # written with each set of files, so that a folder the files are rotated into names their run
        self.run = RunRecord.new(name, live)
        self._open()
        self._since_check = 0
        self._opened_at: float | None = None  # the time of the first frame in the files now open
        self._due: str | None = None  # a limit the open files reached: they rotate as the next frame comes

    def _open(self) -> None:
        name, out, dim, fleet = self.name, self._cam.output, self._dim, self._fleet
        self.paths: dict[str, str] = {}
        self.mot = MotWriter(self._path("mot", f"{name}.txt")) if out.mot else None
        self.embeddings = (
            EmbeddingFile(Path(self._path("embeddings", "embeddings.npy")), dim)
            if out.embeddings and out.events and dim
            else None
        )
        self.events = (
            EventLog(Path(self._path("events", "events.jsonl")), name, out.event_every, self.embeddings)
            if out.events
            else None
        )
        self.video = (
            AnnotatedVideo(
                Path(self._path("video", VIDEO)),
                self._fps,
                segment_frames=max(round(out.video_segment_s * self._fps), 1),
            )
            if out.video
            else None
        )
        self.summary_path = Path(self._path("summary", "summary.json")) if out.summary else None
        self.global_mot = (
            GlobalMotWriter(Path(self._path("global_mot", f"{name}.global.txt")))
            if fleet and out.mot
            else None
        )
        self.identities = (
            IdentityLog(self.dir, name, gap_s=sighting_gap_s(out.sighting_gap_s, self._fps))
            if fleet
            else None
        )
        if self.identities is not None:
            self.paths["identities"] = str(self.identities.summary_path)
        if any(w is not None for w in (self.mot, self.events, self.video, self.identities)):
            self.run.write(self.dir)

    def _path(self, key: str, filename: str) -> str:
        p = str(self.dir / filename)
        self.paths[key] = p
        return p

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A write that fails (a full disk, a file grown past its limit) as one error naming the folder."""
        try:
            yield
        except OSError as e:
            raise DaemonError(f"cannot write the outputs in {self.dir}: {e.strerror or e}") from e

    def write(
        self, r: FrameResult, caption: str, ids: FrameIdentities | None = None, fleet_time: float = 0.0
    ) -> None:
        tracks = r.update.tracks
        assigned = ids.assignments if ids is not None else None
        if self._due is not None:
            self._rotate(self._due, r.frame.index)
        with self.writing():
            if self.mot is not None:
                self.mot.write_tracks(r.frame.index + 1, tracks)
            if self.global_mot is not None and assigned is not None:
                self.global_mot.write(r.frame.index + 1, tracks, assigned)
                self.global_mot.ended(r.update.ended)
            if self.identities is not None and ids is not None:
                self.identities.unname(ids.unnamed)  # the gallery dropped them: no longer anyone's name
                self.identities.frame(r.frame.index, fleet_time, ids.assignments)
                self.identities.ended(r.update.ended)
            if self.events is not None:
                self.events.frame(r.frame.index, r.frame.timestamp, tracks, r.embeddings, assigned)
                self.events.ended(r.update.ended, r.frame.index, r.frame.timestamp)
                self.events.flush()
            if self.video is not None:
                self.video.write(r.frame.image, tracks, caption, assigned, ts=r.frame.timestamp)
        self._due = self._rotation_due(r.frame.timestamp)

    def _rotate(self, why: str, index: int) -> None:
        """The open files reached a limit (``why``: ``output.rotate_mb``, or a live source's
        ``output.live_rotate_s``) and frame ``index`` is to be written: close them, move them to an ``earlier-*``
        folder (keeping ``output.keep_earlier`` of those) and go on in new ones, whose run.json says they begin
        at that frame. Done as the next frame comes, not as the
        limit is reached, so that a run ending there leaves its last files whole in its folder, not new empty
        ones."""
        self._due = None
        events = self.events
        self.close()
        with self.writing():
            kept = keep_earlier_run(
                self.dir, self.name, self._cam.output.keep_earlier, stream_files(self.name, self.dir)
            )
            self.run = dataclasses.replace(self.run, first_frame=index)
            self._open()
        self._opened_at = None
        if events is not None and self.events is not None:
            self.events.carry_on(events)
        log.info("%s: output files passed %s; the full ones are in %s", self.name, why, kept or "(deleted)")

    def _rotation_due(self, ts: float) -> str | None:
        """Which limit the open files have reached (for the log), or None."""
        out = self._cam.output
        if self._opened_at is None or ts < self._opened_at:  # the first frame, or the wall clock stepped back
            self._opened_at = ts
        if self._live and out.live_rotate_s is not None and ts - self._opened_at >= out.live_rotate_s:
            return f"{out.live_rotate_s:g} s (output.live_rotate_s)"
        self._since_check += 1
        if out.rotate_mb is None or self._since_check < ROTATE_CHECK_EVERY:
            return None
        self._since_check = 0
        return f"{out.rotate_mb:g} MB" if self._stream_bytes() >= out.rotate_mb * 2**20 else None

    def _stream_bytes(self) -> int:
        files = (self.dir / f for f in stream_files(self.name, self.dir))
        return sum(f.stat().st_size for f in files if f.exists())

    def forget(
        self,
        global_ids: list[int],
        index: int | None,
        now: float,
        held: set[int] | None = None,
        keep: Callable[[set[int]], object] | None = None,
        stop: threading.Event | None = None,
    ) -> Erased:
        """The fleet forgot ``global_ids``: out of the camera's identity table, and erased from what it wrote
        so far, here and in its ``earlier-*`` folders (``daemon.erase``); the open files are reopened after.
        A file the erase could not read or write raises its OSError (``erase.UnreadableFile`` for one it could
        not read; what was erased before it stays erased, and an erase again does the rest); the camera's own
        files failing to be written is a DaemonError, as in ``write``. Each id the erase found in a file gets its
        ``forgotten`` line in identities.jsonl, as ``reid-daemon forget`` on a stopped camera writes: the ids this
        run saw as it forgets them, those only an earlier run's files held (or an earlier folder's, before a
        rotation) once they are erased (``Erased.held``; one whose last line is its forgotten line already, a
        retry's, gets none; ``held``: ids an erase before found, whose files it rewrote). ``keep``: see
        ``Erased.keep``. ``stop`` set (the worker stopping) ends the erase at the line it reads (``Erased.left``):
        then no such line is written yet (the erase that ends it, from forget-pending.json, writes them)."""
        open_files = [w for w in (self.identities, self.events, self.global_mot) if w is not None]
        with self.writing():
            if self.identities is not None:
                self.identities.forget(global_ids, index, now)
            for w in open_files:
                w.flush()
        try:
            erased = erase_camera(self.dir, global_ids, stop, Erased(keep=keep))
        finally:
            with self.writing():
                for w in open_files:
                    w.reopen()
        erased.held |= (held or set()) & set(global_ids)
        unsaid = erased.held - erased.said
        if self.identities is not None and unsaid and not erased.left:
            with self.writing():
                self.identities.write_forgotten([g for g in global_ids if g in unsaid], index, now)
        return erased

    def finish(self, ended: list[int], index: int, ts: float) -> None:
        with self.writing():
            if self.events is not None:
                self.events.ended(ended, index, ts)
            if self.global_mot is not None:
                self.global_mot.ended(ended)
            if self.identities is not None:
                self.identities.ended(ended)

    def close(self) -> None:
        """Close every file, even after one fails to (so the others are complete), then raise the first failure."""
        failed: OSError | None = None
        for part in (self.mot, self.global_mot, self.identities, self.events, self.embeddings, self.video):
            try:
                if part is not None:
                    part.close()
            except OSError as e:
                failed = failed or e
        if failed is not None:
            with self.writing():
                raise failed


def remove_camera_leftovers(folder: Path, name: str) -> Leftovers:
    """The temporary files ``atomic_write`` left in camera ``name``'s ``folder`` and its ``earlier-*`` folders (a
    worker, or a forget, killed between writing a file and renaming it), removed as its worker starts, holding
    the folder's lock (``camera_lock``), before it writes there: those of every file the camera or ``forget``
    writes there (``camera_files``, ``forget-pending.json``), whatever their age: every writer of them holds that
    lock, so none is a live writer's. Nothing else of that pattern."""
    ours = {temp_stem(f) for f in (*camera_files(name), PENDING_FILE)}
    removed = Leftovers()
    for each in (folder, *earlier_folders(folder)):
        removed += remove_leftovers(each, ours.__contains__)
    return removed


def put_earlier_run_aside(folder: Path, name: str, keep: int | None) -> Path | None:
    """What a live camera's start does first with the files an earlier run left in its ``folder``: removes them
    where they hold nothing of a frame (``drop_empty_run``: a start that failed), else moves them into an
    ``earlier-*`` folder (``keep_earlier_run``; only the newest ``keep`` such folders stay), having removed the
    ``earlier-*`` folders that hold nothing of a frame (``drop_empty_earlier``: an older release's failed starts),
    which would count among them. Returns the new folder (None: none made); OSError where a file cannot be
    removed or moved."""
    if not folder.is_dir():
        return None
    if drop_empty_run(folder, name):
        log.info("%s: the earlier run recorded no frame; its empty files were removed, not kept", name)
    empty = drop_empty_earlier(folder, name)
    if empty:
        log.info(
            "%s: %d earlier-* folders in %s held nothing of a frame (an older release's failed starts); removed",
            name,
            len(empty),
            folder,
        )
    kept = keep_earlier_run(folder, name, keep)
    if kept is not None:
        log.info("%s: the earlier run's files are kept in %s", name, kept)
    return kept


def clear_earlier_run(folder: Path, name: str, keep: int | None, live: bool) -> None:
    """The files an earlier run of camera ``name`` left in ``folder`` out of the way of this run's: a live
    camera's put aside (``put_earlier_run_aside``: they cannot be made again), a recording's removed, those it
    no longer writes (the annotated video turned off) included: they would be taken for this run's, which makes
    them again. OSError where a file cannot be removed or moved."""
    if live:
        put_earlier_run_aside(folder, name, keep)
        return
    for earlier in camera_files(name, folder):
        (folder / earlier).unlink(missing_ok=True)


def open_outputs(
    name: str, cam: CameraConfig, fps: float, dim: int | None, fleet: bool, live: bool
) -> CameraOutputs:
    """The camera's output files; a folder that cannot be created or written is a ConfigError naming it.
    A live camera's earlier run is kept (``keep_earlier_run``), unless it recorded no frame (``drop_empty_run``:
    a start that failed); a recording run again replaces its own, those it
    no longer writes (the annotated video turned off) included: they would be taken for this run's."""
    try:
        folder = Path(cam.output.dir) / name
        earlier_tracks = last_recorded_track(folder) if live else 0
        clear_earlier_run(folder, name, cam.output.keep_earlier, live)
        return CameraOutputs(name, cam, fps, dim, fleet, live, earlier_tracks)
    except OSError as e:
        where = e.filename or cam.output.dir
        raise ConfigError(f"cameras.{name}.output.dir: cannot write {where}: {e.strerror or e}") from e


def not_started(cam: CameraConfig, name: str) -> RunSummary:
    """The summary of camera ``name``'s run stopped before its source opened: no frame."""
    return RunSummary(
        camera=name,
        source=redact(cam.source.uri),
        frames=0,
        seconds=0.0,
        fps=0.0,
        stage_ms_per_frame={},
        detections=0,
        embedded_boxes=0,
        tracks=0,
        events={},
    )


class CameraWorker:
    """Runs one camera until its source ends, ``max_frames`` is reached or ``stop()`` is called."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        show_progress: bool | None = None,
        observers: list[WorkerObserver] | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = (
            config_path  # the file settings came from: a fleet camera out of lockstep takes its camera list
        )
        self.observers: list[WorkerObserver] = list(observers or [])
        self.name, self.cam = settings.camera(name)
        self.folder = Path(self.cam.output.dir) / self.name  # the camera's folder, held locked while it runs
        check_source_kept(self.cam, self.name)
        check_video_file(self.cam.source)  # before the models load
        self.show_progress = self.cam.output.progress if show_progress is None else show_progress
        self._stop = threading.Event()
        self._last_index = -1
        # forgotten ids the camera's files could not take yet: why (for /health), and when to try again
        self.unerased: str | None = None
        self._erase_problem = ""  # what the last erase that failed met, as said to `forget` (pending)
        self._erase_retry_s = 0.0
        self._erase_retry_at = 0.0
        # held while the camera's files are written: a frame (resolved and written), an erase between frames
        self._files = threading.Lock()
        self.pipeline = build_pipeline(settings, self.name, self.cam)
        self.fleet = self._fleet_link() if settings.fleet.enabled else None

    def _fleet_link(self) -> FleetLink:
        if self.pipeline.embedder is None:
            raise ConfigError(
                f"cameras.{self.name}.embedder: fleet.enabled needs an appearance embedder (type 'none' has no "
                "embeddings to match across cameras)"
            )
        embedder = self.pipeline.embedder
        head = load_identity_head(self.settings, embedder)
        signature = embedder_signature(embedder)
        if head is not None and self.settings.identity.head is not None:  # the resolver matches in its space
            signature = signature_through(signature, Path(self.settings.identity.head))
        return FleetLink(
            self.settings,
            self.name,
            embedder.dim,
            head=head,
            signature=signature,
            config_path=self.config_path,
        )

    def stop(self) -> None:
        self._stop.set()
        if self.fleet is not None:
            self.fleet.interrupt()

    def _number_tracks(self, first: int, earlier: int) -> None:
        """New tracks get ids from ``first`` (after those the fleet holds state of) or after the highest id the
        camera's earlier run wrote (a live camera restarted: its tracks still pending then are in no Valkey),
        whichever is later, so a track id names one track across the camera's runs."""
        if earlier >= first:
            log.info(
                "%s: the earlier run's tracks went up to %d; track ids go on from %d",
                self.name,
                earlier,
                earlier + 1,
            )
        self.pipeline.tracker.number_from(max(first, earlier + 1))

    def _waiting(self, what: str) -> None:
        for o in self.observers:
            o.waiting(self, what)

    def _source_waiting(self, reason: str) -> None:
        self._waiting(SOURCE_WAIT + reason)

    def _join_fleet(self, fleet: FleetLink, live: bool) -> None:
        """Connect to the fleet's Valkey and catch up (up to fleet.ready_timeout_s), saying so meanwhile."""
        url = self.settings.bridge.url
        where = f"the fleet's Valkey at {redact(url)}" if url else "the fleet's embedded Valkey"
        wait = self.settings.fleet.ready_timeout_s
        self._waiting(f"{where}: catching up with the fleet (up to fleet.ready_timeout_s, {wait:g} s)")
        fleet.start(live=live)

    def run(self) -> RunSummary:
        """Run the camera, holding its folder's lock throughout (``camera_lock.worker_locked``: taken before
        anything is written there; ConfigError at once where another worker holds it, a wait while a ``forget``
        or ``fleet`` writes the folder, told to the observers' ``waiting``, which a stop ends)."""
        summary: RunSummary | None = None
        with ExitStack() as locked:  # the observers told it stopped holding it still (status.json written)
            try:
                if self._stop.is_set():  # stopped while its models loaded: its folder is not even made
                    summary = self._not_opened()
                    return summary
                try:
                    locked.enter_context(
                        worker_locked(self.folder, self.name, say=self._waiting, stopped=self._stop.is_set)
                    )
                except StoppedWaiting:  # stopped while a forget or fleet held it: nothing written there
                    summary = self._not_opened()
                    return summary
                summary = self._run()
                return summary
            finally:
                for o in self.observers:
                    o.stopped(self, summary)

    def _run(self) -> RunSummary:
        self._remove_leftovers()
        self._erase_pending_forgets()
        opened = open_source_waiting(
            self.cam.source, self._stop, name=self.name, on_retry=self._source_waiting
        )
        if opened is None:  # stopped while waiting for a live source to come up
            return self._not_opened()
        with opened as src:
            dim = self.pipeline.embedder.dim if self.pipeline.embedder is not None else None
            outputs = open_outputs(
                self.name, self.cam, src.delivered_fps, dim, self.fleet is not None, src.live
            )
            try:
                first = 1
                if self.fleet is not None:
                    self._join_fleet(self.fleet, src.live)
                    first = self.fleet.first_track_id
                self._number_tracks(first, outputs.earlier_tracks)
                frames, seconds, tracks = 0, 0.0, 0
                if not self._stop.is_set():  # else stopped while catching up with the fleet
                    for o in self.observers:
                        o.started(self, src)
                    with self._erasing_while_idle(outputs, src):
                        frames, seconds, tracks = self._loop(src, outputs)
            finally:
                try:
                    outputs.close()
                finally:
                    if self.fleet is not None:
                        self.fleet.close()
            self._erase_late_forgets(outputs)
            summary = self._summary(src, outputs, frames, seconds, tracks)
        if outputs.summary_path is not None:
            with outputs.writing():
                summary.write(outputs.summary_path)
        log.info(summary.text())
        return summary

    def _erase_late_forgets(self, outputs: CameraOutputs) -> None:
        """Ids the fleet forgot after the last frame's (a forget that reached the worker while it stopped), and
        those its files could not take while it ran: written to the camera's forget-pending.json first (a kill
        loses none), then erased from its files, closed by now, for at most STOP_ERASE_S (under the unit's
        TimeoutStopSec); those left wait in the file, erased first by the next start or ``reid-daemon forget``.
        One short line is logged: done, or how many wait and where, with the file it could not read or write."""
        gone = self.fleet.take_forgotten() if self.fleet is not None else []
        if not gone:
            return
        pending = PendingForgets(outputs.dir)
        try:
            waiting = pending.add(gone)
            erased = pending.erase(self.name, time.time(), time.monotonic() + STOP_ERASE_S)
        except OSError as e:
            log.error(
                "%s: forget not done: %s; %s: run `reid-daemon forget <id>` again for each once it can be done "
                "(the camera stopped; one erases them all)",
                self.name,
                erase_problem(e, outputs.dir),
                self._waiting_in(pending, gone),
            )
            return
        if erased.left:
            log.warning(
                "%s: forget not done in %g s while stopping (STOP_ERASE_S, under the unit's TimeoutStopSec): "
                "%d global ids wait in %s, erased first by the next start or `reid-daemon forget`",
                self.name,
                STOP_ERASE_S,
                len(waiting),
                pending.path,
            )
            return
        log.info("%s: forgot %s while stopping; from its files: %s", self.name, _ids(waiting), erased.text())

    @staticmethod
    def _waiting_in(pending: PendingForgets, gone: list[int]) -> str:
        """Where the ids an erase could not do wait: the pending file, or, where it could not be written
        either, the ids (the first MAX_LOGGED_IDS of them named)."""
        try:
            ids, _ = pending.read()
        except OSError:
            ids = []
        if set(gone) <= set(ids):
            return f"{len(ids)} global ids wait in {pending.path}"
        return f"{_ids_are(gone)} left in its files"

    def _remove_leftovers(self) -> None:
        """The temporary files killed writers left in the camera's folders, removed and logged
        (``remove_camera_leftovers``)."""
        removed = remove_camera_leftovers(self.folder, self.name)
        if removed.files:
            log.info("%s: %s", self.name, removed.left_in(self.folder))

    def _erase_pending_forgets(self) -> None:
        """Ids an earlier run's stop left in the camera's forget-pending.json, erased first (its files are
        closed: no run of it writes them yet); a file that cannot be read or written is logged, the ids kept
        waiting for the next start or ``reid-daemon forget``. A stop meanwhile ends the erase at the line it
        reads (a long one would hold the stop past the unit's TimeoutStopSec): the ids wait there still."""
        pending = PendingForgets(self.folder)
        if not pending.path.is_file():
            return
        try:
            ids, _ = pending.read()
            erased = pending.erase(self.name, time.time(), self._stop)
        except OSError as e:
            log.error(
                "%s: forget of the ids in %s not done: %s; they wait there for the next start or `reid-daemon "
                "forget`",
                self.name,
                pending.path,
                erase_problem(e, pending.camera_dir),
            )
            return
        if erased.left:
            log.warning(
                "%s: forget of the ids an earlier run's stop left, cut short by this one's: %s left waiting in %s, "
                "erased first by the next start or `reid-daemon forget`",
                self.name,
                _ids_are(ids),
                pending.path,
            )
            return
        log.info(
            "%s: forgot %s left by an earlier run's stop; from its files: %s",
            self.name,
            _ids(ids),
            erased.text(),
        )

    @contextmanager
    def _erasing_while_idle(self, outputs: CameraOutputs, src: FrameSource) -> Iterator[None]:
        """A live fleet camera's: while its loop runs, a thread erases the ids the fleet forgets from its files
        every FORGET_IDLE_S, frames or none (a stream down: the worker waits on its source, retrying, for as long
        as it runs, and the forget would wait for its next frame), and checks the fleet link's idle expiry
        (``FleetLink.check_idle``). An unexpected exception there closes the source, which wakes the loop, and
        the run ends with it, as it would on a frame. A replay's frames come until it ends, and then the worker
        erases what came late."""
        if self.fleet is None or not src.live:
            yield
            return
        stop = threading.Event()
        failed: list[Exception] = []
        thread = threading.Thread(
            target=self._erase_while_idle,
            args=(outputs, stop, src, failed),
            name=f"forget:{self.name}",
            daemon=True,
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        if failed:
            raise failed[0]

    def _erase_while_idle(
        self, outputs: CameraOutputs, stop: threading.Event, src: FrameSource, failed: list[Exception]
    ) -> None:
        assert self.fleet is not None
        clock = self.fleet.clock
        while not stop.wait(FORGET_IDLE_S):
            try:
                self.fleet.check_idle()
                with self._files:
                    index = self._last_index if self._last_index >= 0 else None
                    self._erase_idle(outputs, index, clock.now())  # a live camera's fleet clock
            except Exception as e:  # a bug: handed to the run, whose loop the closed source wakes
                failed.append(e)
                src.close()
                return

    def _erase_idle(self, outputs: CameraOutputs, index: int | None, now: float) -> None:
        """``_erase_forgotten`` between frames: the camera's own files failing to be written is logged (the next
        frame's write says so too, and ends the run)."""
        try:
            self._erase_forgotten(outputs, index, now)
        except DaemonError as e:
            log.error("%s: %s", self.name, e)

    def _erase_forgotten(self, outputs: CameraOutputs, index: int | None, now: float) -> None:
        """Erase the ids the fleet forgot since the last call from the camera's files (``CameraOutputs.forget``;
        ``index`` and ``now``: the frame and fleet time it is done at), kept in its forget-pending.json until they
        are, with the ids the files it rewrites held (a SIGKILL meanwhile, a unit's stop past TimeoutStopSec
        while a long erase runs, loses none: the next start erases them, and writes their forgotten lines;
        where that file cannot be written nothing is rewritten). A file the erase cannot read or write is
        logged, naming it, and said on /health (``unerased``); the ids stay to be erased, tried again after
        FORGET_RETRY_S, doubling up to FORGET_RETRY_MAX_S, and after the run if it ends first; a forget that
        comes meanwhile (of one of them again, or of another id) is said to be pending, with the file, at once:
        ``reid-daemon forget`` waits a few seconds only. A stop ends the erase at the line it reads, the ids left
        in forget-pending.json (``_erase_cut_short``); once the worker is stopping, none begins (its stop erases
        what is forgotten after: ``_erase_late_forgets``)."""
        fleet = self.fleet
        if fleet is None or self._stop.is_set():
            return
        heard = fleet.take_heard()  # before take_forgotten: one heard after it is taken on the next call
        if time.monotonic() < self._erase_retry_at:
            if heard:
                fleet.say_of_forgets(heard, "pending", self._erase_problem)
            return
        gone = fleet.take_forgotten()
        if not gone:
            fleet.mark_applied()  # the stored forgets read since (those heard live) are done too
            return
        pending = PendingForgets(outputs.dir)
        try:
            waiting = pending.add(gone)  # first: a worker killed while it erases loses none
            _, held = pending.read()
            erased = outputs.forget(gone, index, now, held, pending.keeper(waiting, held), self._stop)
        except OSError as e:
            self._erase_later(outputs, gone, erase_problem(e, outputs.dir))
            return
        except DaemonError as e:  # the camera's own files could not be written
            self._erase_later(outputs, gone, str(e))
            raise
        if erased.left:
            self._erase_cut_short(pending, gone)
            return
        self._keep_pending(outputs, pending.remove, gone)  # erased: out of forget-pending.json
        self.unerased, self._erase_retry_s, self._erase_retry_at = None, 0.0, 0.0
        log.info("%s: forgot global ids %s; from its files: %s", self.name, gone, erased.text())
        fleet.say_of_forgets(gone, "erased", erased.text())  # files and memory clean: `forget` hears it

    def _erase_cut_short(self, pending: PendingForgets, gids: list[int]) -> None:
        """The worker was stopped while it erased ``gids`` from its files: the erase ended at the line it read (a
        long one, of large earlier-* folders, would hold the stop past the unit's TimeoutStopSec), and they wait
        in forget-pending.json, erased first by the next start or ``reid-daemon forget`` on the stopped camera;
        logged, and said to be pending."""
        assert self.fleet is not None
        log.warning(
            "%s: forget cut short by the stop: %s left waiting in %s, erased first by the next start or "
            "`reid-daemon forget`",
            self.name,
            _ids_are(gids),
            pending.path,
        )
        why = f"its worker stopped while it erased it; it waits in {pending.path}, erased by the camera's next start"
        self.fleet.say_of_forgets(gids, "pending", why)

    def _erase_later(self, outputs: CameraOutputs, gids: list[int], problem: str) -> None:
        """``gids`` could not be erased from the camera's files (``problem``): they wait, tried again after
        FORGET_RETRY_S, doubling up to FORGET_RETRY_MAX_S; logged and said on /health meanwhile. They wait in
        the camera's forget-pending.json too (a SIGKILL meanwhile loses none: the next start erases them)."""
        assert self.fleet is not None
        self.fleet.forget_later(gids)
        self._keep_pending(outputs, PendingForgets(outputs.dir).add, gids)
        self._erase_retry_s = min(max(2 * self._erase_retry_s, FORGET_RETRY_S), FORGET_RETRY_MAX_S)
        self._erase_retry_at = time.monotonic() + self._erase_retry_s
        self.unerased = f"global ids {gids} are still in its files: {problem}"
        self._erase_problem = f"{problem}; it tries again"
        self.fleet.say_of_forgets(gids, "pending", self._erase_problem)
        log.error(
            "%s: forget not done: %s; trying again in %g s", self.name, self.unerased, self._erase_retry_s
        )

    def _keep_pending(
        self, outputs: CameraOutputs, change: Callable[[list[int]], object], gids: list[int]
    ) -> None:
        """``change`` forget-pending.json with ``gids`` (``PendingForgets.add`` or ``remove``); a file that
        cannot be read or written is logged, the ids still waiting in the worker's memory."""
        try:
            change(gids)
        except OSError as e:
            log.error(
                "%s: %s not kept in %s: %s",
                self.name,
                _ids(gids),
                PendingForgets(outputs.dir).path,
                erase_problem(e, outputs.dir),
            )

    def _resolve_and_write(self, r: FrameResult, outputs: CameraOutputs, caption: str) -> None:
        """Resolve the frame's identities (fleet mode) and write it, the camera's files held meanwhile: an erase
        between frames comes before the forget of an id or after the frames written with it."""
        frame = r.frame
        t0 = time.perf_counter()
        with self._files:
            fleet_time = self.fleet.clock.time_of(frame) if self.fleet is not None else 0.0
            # taken before the frame is resolved: an id forgotten while it is (on the bridge's thread) may be
            # on this frame still, and is erased after it was written, on the next
            self._erase_forgotten(outputs, frame.index, fleet_time)
            who = self.fleet.update(r) if self.fleet is not None else None
            t1 = time.perf_counter()
            self.pipeline.times.fleet += t1 - t0
            outputs.write(r, caption, who, fleet_time)
            self._last_index = frame.index
        self.pipeline.times.output += time.perf_counter() - t1

    def _loop(self, src: FrameSource, outputs: CameraOutputs) -> tuple[int, float, int]:
        """Run to the end of the source; return frames, seconds and the number of tracks started.

        Only the ids alive now are kept (bounded on endless streams); an id that ended and is later taken
        back by re-linking counts as a new start, as in the events file.
        """
        bar = tqdm(
            total=src.frame_count,
            unit="frame",
            desc=self.name,
            disable=not self.show_progress,
            dynamic_ncols=True,
        )
        frames, last = 0, (0, 0.0)
        last_frame: Frame | None = None
        alive: set[int] = set()
        started = 0
        start = time.perf_counter()
        tick = start
        speed = self.settings.fleet.replay_speed
        source = src if speed is None or src.live else paced(src, speed, self._stop)
        try:
            for r in self.pipeline.stream(source, overlap=self.settings.runtime.detect_ahead):
                frame = r.frame
                fps = frames / max(time.perf_counter() - start, 1e-9)
                self._resolve_and_write(r, outputs, f"{self.name}  frame {frame.index}  {fps:.1f} FPS")
                ids = {t.track_id for t in r.update.tracks}
                started += len(ids - alive)
                alive = (alive | ids) - set(r.update.ended)
                frames += 1
                last = (frame.index, frame.timestamp)
                last_frame = frame
                bar.update(1)
                bar.set_postfix(tracks=len(r.update.tracks), refresh=False)
                now = time.perf_counter()
                for o in self.observers:
                    o.frame(self, r, now - tick)
                tick = now
                if self._stop.is_set():
                    break
        finally:
            bar.close()
            ended = self.pipeline.tracker.finish()
            try:
                with self._files:
                    outputs.finish(ended, last[0], last[1])
            finally:  # a full disk does not keep the fleet from hearing that the tracks ended
                if self.fleet is not None:
                    self.fleet.finish(ended, last_frame)
        return frames, time.perf_counter() - start, started

    def _not_started(self) -> RunSummary:
        return not_started(self.cam, self.name)

    def _not_opened(self) -> RunSummary:
        log.info("%s: stopped before the source could be opened", self.name)
        return self._not_started()

    def _summary(
        self, src: FrameSource, outputs: CameraOutputs, frames: int, seconds: float, tracks: int
    ) -> RunSummary:
        t = self.pipeline.times
        n = max(frames, 1)
        stats: dict[str, Any] = dataclasses.asdict(src.stats)
        stages = {
            "decode": 1000 * float(stats.get("decode_seconds", 0.0)) / n,
            "detect": 1000 * t.detect / n,
            "embed": 1000 * t.embed / n,
            "track": 1000 * t.track / n,
            "output": 1000 * t.output / n,
        }
        if self.fleet is not None:
            stages["fleet"] = 1000 * t.fleet / n
        return RunSummary(
            camera=self.name,
            source=redact(self.cam.source.uri),
            frames=frames,
            last_frame=self._last_index,
            stride=self.cam.source.stride,
            seconds=round(seconds, 3),
            fps=round(frames / max(seconds, 1e-9), 2),
            stage_ms_per_frame={k: round(v, 2) for k, v in stages.items()},
            detections=t.detected_boxes,
            embedded_boxes=t.embedded_boxes,
            tracks=tracks,
            events=dict(outputs.events.counts) if outputs.events is not None else {},
            source_stats=stats,
            outputs=dict(outputs.paths),
            fleet=self._fleet_stats(outputs),
        )

    def _fleet_stats(self, outputs: CameraOutputs) -> dict[str, Any]:
        if self.fleet is None:
            return {}
        lockstep = self.fleet.lockstep
        return {
            "identity": dataclasses.asdict(self.fleet.resolver.stats()),
            "bridge": dataclasses.asdict(self.fleet.bridge.stats),
            "remote_invalid": self.fleet.remote_invalid,
            "lockstep": dataclasses.asdict(lockstep.stats) if lockstep is not None else None,
            "unresolved_rows": outputs.global_mot.unresolved_rows if outputs.global_mot is not None else 0,
            "conflicting_rows": outputs.global_mot.conflicting_rows if outputs.global_mot is not None else 0,
        }


def _ids(gids: list[int]) -> str:
    """``global id 7``, or ``3 global ids (7, 8, 9)``: up to MAX_LOGGED_IDS named, the rest counted."""
    if len(gids) == 1:
        return f"global id {gids[0]}"
    named = ", ".join(map(str, gids[:MAX_LOGGED_IDS]))
    more = f", and {len(gids) - MAX_LOGGED_IDS} more" if len(gids) > MAX_LOGGED_IDS else ""
    return f"{len(gids)} global ids ({named}{more})"


def _ids_are(gids: list[int]) -> str:
    return f"{_ids(gids)} {'is' if len(gids) == 1 else 'are'}"


def paced(frames: Iterable[Frame], speed: float, stop: threading.Event) -> Iterator[Frame]:
    """``frames`` no faster than ``speed`` x their own timestamps (a replay kept in step with real time)."""
    t_first: float | None = None
    wall_first = 0.0
    for frame in frames:
        if t_first is None:
            t_first, wall_first = frame.timestamp, time.monotonic()
        wait = wall_first + (frame.timestamp - t_first) / speed - time.monotonic()
        if wait > 0 and stop.wait(wait):
            return
        yield frame
