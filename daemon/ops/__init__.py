"""Operations: running a camera worker as a service (metrics, health, systemd notify and watchdog, JSON logs).

Modules are imported where used (``daemon.ops.service`` pulls in the bridge and Prometheus), so the command
line stays quick to start.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

# What stops a worker or a fleet cleanly (sources closed, outputs and the fleet backlog flushed, exit 0):
# systemd's SIGTERM, Ctrl-C, and the SIGHUP of a terminal or an ssh session that goes away.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class HeldStop:
    """A stop signal held from the first line of ``reid-daemon run`` until the worker's own handler takes over
    (``runner.run_camera``), and of ``reid-daemon fleet`` until its cameras have ended (``fleet_runner``): the
    seconds before (the config read, the imports of torch and the models' code: 12 s on a loaded machine; a
    fleet's ground truths read) would otherwise end the process by the signal (exit 143, nothing flushed nor
    logged). While inside (main thread only; elsewhere nothing is held), the STOP_SIGNALS are noted;
    ``received``: the first one that came (None: none). The handlers before are restored on the way out."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> HeldStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def release(self) -> None:
        """The handlers before restored now, before leaving (a fleet's report: a stop signal ends it as it did
        before the fleet ran); leaving then restores nothing more."""
        previous, self._previous = self._previous, {}
        for s, h in previous.items():
            signal.signal(s, h)

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
