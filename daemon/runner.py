"""Running one camera as a process (what `reid-daemon run` and systemd start): signals, fleet link, observers.

SIGTERM and SIGINT ask the worker to stop after the frame in hand; the worker then flushes its outputs (and
the fleet link its backlog) and returns, so a stop takes well under the 2 s systemd allows by default here.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from daemon.config import Settings
from daemon.outputs import RunSummary
from daemon.worker import CameraWorker, WorkerObserver

log = logging.getLogger(__name__)


@contextmanager
def _stop_on_signals(worker: CameraWorker) -> Iterator[None]:
    """While inside, SIGTERM / SIGINT stop ``worker`` gracefully (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: %s received, stopping after the current frame", worker.name, signal.Signals(signum).name)
        worker.stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_camera(settings: Settings, name: str, show_progress: bool | None = None) -> RunSummary:
    """Build and run camera ``name`` of ``settings`` until its source ends or a signal stops it."""
    observers: list[WorkerObserver] = []  # operations observers (metrics, watchdog, health) join here
    worker = CameraWorker(settings, name, show_progress=show_progress, observers=observers)
    with _stop_on_signals(worker):
        return worker.run()
