"""Running one camera as a process (what `reid-daemon run` and systemd start): signals, fleet link, observers.

SIGTERM, SIGINT and SIGHUP ask the worker to stop after the frame in hand (one that comes before its source is
open stops it there; one that comes before its models start loading, from the first line of ``reid-daemon run``
on, is held until then: ``ops.HeldStop``, and stops it before they load); the worker then flushes its outputs (and
the fleet link its backlog) and returns: 0.05-0.15 s of CPU, 0.1-0.4 s measured on 2 cores at load average up to
12, about 1 s with the worker's core saturated (deploy/README.md), under the unit's TimeoutStopSec (10 s).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from daemon.camera_lock import WORKER, held_by_worker, writer_locked
from daemon.config import CameraConfig, Settings
from daemon.embedding import atomic_write
from daemon.errors import DaemonError, DataError
from daemon.fleet import FLEET_PID_ENV, STARTED_AGAIN_ENV
from daemon.ops import STOP_SIGNALS, HeldStop
from daemon.outputs import SUMMARY_SCHEMA_VERSION, RunSummary, recorded_no_frame
from daemon.pipeline import FrameResult
from daemon.sources import FrameSource, live_source
from daemon.worker import CameraWorker, WorkerObserver, not_started, put_earlier_run_aside

if TYPE_CHECKING:
    from daemon.ops.service import Operations

log = logging.getLogger(__name__)
ERROR_CHARS = 1000  # status.json keeps this much of the error a run failed with


def started_again_keys(env: Mapping[str, str], parent: int | None = None) -> list[str]:
    """The settings' keys whose change made ``reid-daemon fleet`` start this camera's worker again
    (``fleet.STARTED_AGAIN_ENV``, given by ``fleet_runner._Follow``); none for a worker started otherwise: one
    whose parent (``parent``, this process's by default) is not the fleet ``FLEET_PID_ENV`` names (a variable
    exported in a shell, a fleet worker's environment copied)."""
    parent = os.getppid() if parent is None else parent
    if env.get(FLEET_PID_ENV) != str(parent):
        return []
    return [k for k in env.get(STARTED_AGAIN_ENV, "").split(",") if k]


class StatusFile:
    """Keeps ``<output.dir>/<camera>/status.json`` current (at most once per ``every_s``): frames done, FPS,
    live tracks, identities known; ``reid-daemon fleet`` reads it for its progress bars."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.path: Path | None = None
        self._frames = 0
        self._t0 = 0.0
        self._last = -float("inf")
        self._failed = False  # a write failed (warned once)
        self._identities: int | None = None  # as the last write said
        # the settings' keys that changed where a fleet started this camera again with them (STARTED_AGAIN_ENV)
        self._started_again = started_again_keys(os.environ)

    def waiting(self, worker: CameraWorker, what: str) -> None:
        """Nothing to write: this file is written from ``started`` on (its folder is made once the source
        opens)."""

    def started(self, worker: CameraWorker, source: FrameSource) -> None:
        self.path = worker.folder / "status.json"
        self._t0 = time.monotonic()
        self._write(worker, "running", 0)

    def frame(self, worker: CameraWorker, result: FrameResult, loop_s: float) -> None:
        self._frames += 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._write(worker, "running", len(result.update.tracks))

    def stopped(self, worker: CameraWorker, summary: RunSummary | None) -> None:
        if self.path is not None:
            self._write(worker, "done" if summary is not None else "failed", 0)

    def failed(self, settings: Settings, name: str, error: Exception) -> None:
        """The run of camera ``name`` failed with ``error``, perhaps before its source opened (then nothing was
        written yet, not even this file): ``failed``, and why (``error``), so that the fleet's report, read
        after the run, names it. Written into the camera's folder where it is there (a fleet makes it before
        the worker starts, its worker's lock too; an earlier run's: ``_failed_start_status``), holding the
        folder's lock (its run let it go); a first run of a camera alone that failed before it took that lock
        leaves no folder behind. Where another process holds the lock now (a worker started since, or the one
        this start was refused for: ``camera_lock``), the folder is theirs: nothing is written, said in the log."""
        cam = settings.cameras.get(name)
        if cam is None:
            return
        folder = Path(cam.output.dir) / name
        if not folder.is_dir():
            return
        why = str(error) if isinstance(error, DaemonError) else f"{type(error).__name__}: {error}"
        try:
            with writer_locked(folder, name, f"{WORKER} --camera {name}", wait_s=0):
                if self.path is None:
                    self.path = _failed_start_status(cam, name)
                self._save(name, "failed", 0, self._identities, error=" ".join(why.split())[:ERROR_CHARS])
        except DataError as e:  # LockTimeout: another process writes the folder
            log.info("%s: status.json not written: %s", name, e)

    def _write(self, worker: CameraWorker, state: str, tracks: int) -> None:
        if worker.fleet is not None:
            self._identities = worker.fleet.resolver.stats().identities
        self._save(worker.name, state, tracks, self._identities)

    def _save(
        self, camera: str, state: str, tracks: int, identities: int | None, error: str | None = None
    ) -> None:
        if self.path is None:
            return
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        doc = {
            "v": SUMMARY_SCHEMA_VERSION,
            "camera": camera,
            "state": state,
            "frames": self._frames,
            "fps": round(self._frames / elapsed, 2),
            "tracks": tracks,
            "identities": identities,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        if error is not None:
            doc["error"] = error
        if self._started_again:
            doc["started_again"] = self._started_again
        try:
            atomic_write(self.path, json.dumps(doc).encode("utf-8"))
        except OSError as e:  # advisory: a full disk is reported by the outputs, not as a traceback from here
            if not self._failed:
                log.warning("%s: cannot write %s: %s", camera, self.path, e.strerror or e)
            self._failed = True


def _failed_start_status(cam: CameraConfig, name: str) -> Path | None:
    """The status file of a start of camera ``name`` that failed before it wrote one (before its outputs opened,
    or as they did); None where none is written. The files an earlier run left in the camera's folder keep the
    status that run wrote: a live camera's are put aside first, as its start would have put them (moved into an
    ``earlier-*`` folder, status and all, or removed where they hold nothing of a frame:
    ``worker.put_earlier_run_aside``); a recording's, which its next run replaces, are left with theirs (the
    error is in the log); a folder another host's worker is writing now is left alone (the caller holds the
    folder's lock: none of this host's is)."""
    folder = Path(cam.output.dir) / name
    if not folder.is_dir() or running_elsewhere(folder):
        return None
    try:
        if live_source(cam.source):
            put_earlier_run_aside(folder, name, cam.output.keep_earlier)
        elif not recorded_no_frame(folder, name):
            log.warning(
                "%s: status.json is left as the earlier run whose files are in %s wrote it", name, folder
            )
            return None
    except OSError as e:
        log.warning("%s: status.json not written: cannot put the earlier run's files aside: %s", name, e)
        return None
    return folder / "status.json"


def worker_running(camera_dir: Path) -> bool:
    """Whether a worker is writing ``camera_dir`` now: one of this host holds its lock (``camera_lock``; a
    killed worker's lock went with it), or its ``status.json`` says ``running`` on another host (a folder
    shared between hosts: the lock is this host's)."""
    return running_elsewhere(camera_dir) or held_by_worker(camera_dir)


def running_elsewhere(camera_dir: Path) -> bool:
    """Whether ``camera_dir``'s ``status.json`` says a worker of another host is running there."""
    try:
        doc = json.loads((camera_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or doc.get("state") != "running":
        return False
    host = doc.get("host")
    return isinstance(host, str) and host != socket.gethostname()


@contextmanager
def _stop_on_signals(name: str, stop: Callable[[], None]) -> Iterator[None]:
    """While inside, the STOP_SIGNALS (SIGTERM, SIGINT, SIGHUP) call ``stop`` (camera ``name`` stops gracefully;
    main thread only, elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: %s received, stopping after the current frame", name, signal.Signals(signum).name)
        stop()

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_camera(
    settings: Settings,
    name: str,
    show_progress: bool | None = None,
    held: HeldStop | None = None,
    config_path: Path | None = None,
) -> RunSummary:
    """Build and run camera ``name`` of ``settings`` until its source ends or a signal stops it (``held``: one
    that came before, while the command started: then no model is loaded and nothing opened); ``config_path``:
    the file ``settings`` came from (a live fleet camera takes the cameras it lists when it changes)."""
    from daemon.ops.service import Operations  # metrics, health, systemd notify and watchdog

    status = StatusFile()
    try:
        with Operations(settings, name) as ops:
            observers: list[WorkerObserver] = [status, ops]
            worker: CameraWorker | None = None
            asked = threading.Event()  # a signal came while the worker was being built (its models loading)

            def stop() -> None:
                asked.set()
                if worker is not None:
                    worker.stop()
                ops.request_stop()

            with _stop_on_signals(name, stop):
                if held is not None and held.received is not None:
                    log.info("%s: %s received while starting, stopping", name, held.received.name)
                    asked.set()
                if asked.is_set():  # before the models load: none is
                    return _stopped_at_start(settings, name, ops)
                worker = CameraWorker(
                    settings, name, show_progress=show_progress, observers=observers, config_path=config_path
                )
                if asked.is_set():
                    worker.stop()
                return worker.run()
    except (
        Exception
    ) as e:  # the models, the source, the outputs, the fleet: the status says it failed and why
        status.failed(settings, name, e)
        raise


def _stopped_at_start(settings: Settings, name: str, ops: Operations) -> RunSummary:
    """The run of camera ``name`` that a signal stopped before its worker was built: no frame, nothing written
    (no status.json either: its folder is not made), systemd told it stops (STOPPING=1)."""
    summary = not_started(settings.cameras[name], name)
    ops.stopped(None, summary)
    log.info("%s: stopped before its models loaded", name)
    return summary
