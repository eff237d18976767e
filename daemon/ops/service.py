"""A camera worker run as a service: metrics, health, systemd notifications and watchdog, graceful stop.

:class:`Operations` is used by the runner around one worker process::

    with Operations(settings, name) as ops:               # /metrics and /health up, STATUS=starting
        worker = CameraWorker(..., observers=[ops, ...])  # a ModelError here: /health and STATUS say so
        ...                                               # SIGTERM -> worker.stop() and ops.request_stop()
        worker.run()                                      # READY=1 once started, WATCHDOG=1 while alive

It is the worker's :class:`~daemon.worker.WorkerObserver`: ``started`` (models loaded, source open, fleet caught
up) sends READY=1; ``frame`` beats the liveness clock and records metrics; ``stopped`` sends STOPPING=1. A
supervisor thread feeds systemd's watchdog while :class:`~daemon.ops.liveness.Liveness` says the loop is
alive, and keeps the STATUS line (``systemctl status``) current. In fleet mode the bridge and identity
statistics come from ``worker.fleet`` (or from ``attach``), and a probe PINGs the fleet's Valkey.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from daemon.bridge import BridgeStats
from daemon.camera_lock import LOCK_WAIT
from daemon.config import Settings
from daemon.errors import ModelError
from daemon.fleet_wire import FleetMessage
from daemon.identity import IdentityStats
from daemon.ops.health import Health
from daemon.ops.http import OpsServer
from daemon.ops.liveness import Liveness
from daemon.ops.metrics import AssignmentLookup, CameraMetrics
from daemon.ops.notify import Notifier
from daemon.ops.probe import ValkeyProbe
from daemon.outputs import RunSummary
from daemon.pipeline import FrameResult
from daemon.sources import SOURCE_WAIT, FrameSource

log = logging.getLogger(__name__)

STATUS_EVERY_S = (
    1.0  # the supervisor refreshes STATUS= this often (and feeds the watchdog at least this often)
)
LOCK_EXTEND_S = 30.0
"""While the start waits for its camera folder's lock, each EXTEND_TIMEOUT_USEC asks this much more than the time
waited so far; it is said again every ``camera_lock.WAIT_SAY_EVERY_S`` (10 s: two may be late)."""


class Operations:
    """Metrics, health, systemd notifications and watchdog for camera ``camera`` (see the module docstring)."""

    def __init__(self, settings: Settings, camera: str, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.cfg = settings.ops
        self.camera = camera
        self.notifier = notifier if notifier is not None else Notifier(unset=True)
        self.liveness = Liveness()
        self.metrics = CameraMetrics(camera, self.cfg)
        self.health = Health(camera, self.liveness, self.cfg.stall_after_s)
        self.server: OpsServer | None = None
        self._probe: ValkeyProbe | None = None
        self._source: FrameSource | None = None
        self._bridge: Callable[[], BridgeStats] | None = None
        self._identity: Callable[[], IdentityStats] | None = None
        self._stop = threading.Event()
        self._starved = False  # the watchdog is not being fed (the loop is hung)
        self._lock_wait_since: float | None = None  # when the start began to wait for its folder's lock
        self._thread = threading.Thread(target=self._supervise, name="ops-supervisor", daemon=True)

    # ---------------------------------------------------------------------------------------- lifecycle

    def start(self) -> Operations:
        if self.cfg.http:
            port = self.cfg.port_for(self.camera)
            self.server = OpsServer(
                self.cfg.host,
                port,
                self.metrics.exposition,
                self.health.report,
                f"camera {self.camera}",
                self.cfg.max_connections,
            ).start()
            log.info("%s: /metrics and /health on %s", self.camera, self.server.url)
        self.notifier.status("starting: loading models and opening the source")
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        if self._probe is not None:
            self._probe.close()
        if self.server is not None:
            self.server.close()
        self.notifier.close()

    def __enter__(self) -> Operations:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, Exception):
            self.failed(exc)
        self.close()

    def attach(
        self,
        bridge: Callable[[], BridgeStats] | None = None,
        identity: Callable[[], IdentityStats] | None = None,
    ) -> None:
        """Bridge and identity statistics providers (default: taken from ``worker.fleet`` when it has one)."""
        self._bridge, self._identity = bridge or self._bridge, identity or self._identity

    def failed(self, exc: BaseException) -> None:
        """The worker could not start or failed: say so on /health and in STATUS=."""
        problem = f"model missing: {exc}" if isinstance(exc, ModelError) else f"failed: {exc}"
        self.health.failed(problem)
        self.notifier.status(problem)

    def request_stop(self) -> None:
        """A stop was asked for (a signal): close the source so a loop waiting on a dead stream wakes now.

        Safe to call from a signal handler: the closing happens on a short-lived thread.
        """
        src = self._source
        threading.Thread(target=self._stop_source, args=(src,), name="ops-stop", daemon=True).start()

    def _stop_source(self, src: FrameSource | None) -> None:
        self.health.stopping(f"{self.camera} asked to stop")  # the supervisor's STATUS= says so too
        self.notifier.stopping(f"stopping: {self.camera} asked to stop")
        if src is not None:
            src.close()

    # ---------------------------------------------------------------------------------------- observer

    def waiting(self, worker: Any, what: str) -> None:
        self.health.waiting(what)
        if what.startswith(SOURCE_WAIT):  # a try to open the live source failed
            self.metrics.source_not_open()
        if what.startswith(LOCK_WAIT):  # a forget or fleet writes its folder: not to count as a slow start
            self._extend_start(f"starting: waiting for {what}")
        else:
            self.notifier.status(f"starting: waiting for {what}")

    def _extend_start(self, status: str) -> None:
        """Extend systemd's start timeout (TimeoutStartSec) while the start waits for its camera folder's lock
        (``camera_lock.WRITER_WAIT_S`` at most): by LOCK_EXTEND_S past now, and as long again as it has waited,
        so that what is left of the start once it has the lock has at least that long."""
        now = time.monotonic()
        if self._lock_wait_since is None:
            self._lock_wait_since = now
        self.notifier.extend_start(LOCK_EXTEND_S + now - self._lock_wait_since, status)

    def started(self, worker: Any, source: FrameSource) -> None:
        self._source = source
        fleet = getattr(worker, "fleet", None)
        bridge = self._bridge or (_bridge_stats(fleet) if fleet is not None else None)
        identity = self._identity or (fleet.resolver.stats if fleet is not None else None)
        lookup: AssignmentLookup | None = fleet.resolver.assignment if fleet is not None else None
        self.liveness.attach(source)
        self.metrics.attach(source=source, bridge=bridge, identity=identity, assignment=lookup)
        self.health.running(source, bridge, (lambda: worker.unerased) if fleet is not None else None)
        if fleet is not None:
            clock = fleet.bridge.clock  # the fleet's, which batches are stamped on
            fleet.listeners.append(lambda m: self._message_received(m, clock.now))
            self._start_probe(fleet.bridge.url)
        self._check_watchdog(source, worker.cam.source.read_timeout_s)
        self.notifier.ready(f"running: {source.name}")

    def frame(self, worker: Any, result: FrameResult, loop_s: float) -> None:
        self.liveness.beat()
        src = self._source
        decode_s = src.stats.decode_seconds if src is not None else 0.0
        ids = [t.track_id for t in result.update.tracks]
        self.metrics.frame(worker.pipeline.times, decode_s, loop_s, ids)

    def stopped(self, worker: Any, summary: RunSummary | None) -> None:
        self.health.stopped()
        what = f"{summary.frames} frames" if summary is not None else "failed"
        self.notifier.stopping(f"stopping: {what}")

    # ---------------------------------------------------------------------------------------- internals

    def _message_received(self, m: FleetMessage, now: Callable[[], float]) -> None:
        """A fleet message received: its age, on the fleet's clock, where it was heard live (one caught up from
        the streams after an outage or a lost subscription is old by design: the bridge counts it)."""
        if not m.caught_up:
            self.metrics.message_received(m.sent_at, now())

    def _start_probe(self, url: str) -> None:
        cfg = self.settings.bridge
        password = cfg.password.resolve("bridge.password") if cfg.password is not None else None
        self._probe = ValkeyProbe(cfg, url, password, self.cfg.valkey_probe_s, self._probed).start()

    def _probed(self, rtt: float | None, error: str | None) -> None:
        self.metrics.valkey_ping(rtt)
        self.health.valkey_probe(error)

    def _check_watchdog(self, source: FrameSource, read_timeout_s: float) -> None:
        period = self.notifier.watchdog_s
        if period is not None and source.live and period <= read_timeout_s:
            log.warning(
                "%s: the watchdog period (%.1f s) is not above source.read_timeout_s (%.1f s): a stream that "
                "stops sending may look like a hung worker; raise WatchdogSec=",
                self.camera,
                period,
                read_timeout_s,
            )

    def _supervise(self) -> None:
        period = self.notifier.watchdog_s if self.cfg.watchdog else None
        tick = min(period / 3, STATUS_EVERY_S) if period else STATUS_EVERY_S
        last = ""
        while not self._stop.wait(tick):
            if period is not None:
                self._feed(period)
            text = self._status_line()
            if text != last:
                self.notifier.status(text)
                last = text

    def _feed(self, period: float) -> None:
        """WATCHDOG=1 unless the loop is hung (no progress for a whole period while frames wait)."""
        if self.liveness.stalled(period):
            if not self._starved:
                self._starved = True
                log.error(
                    "%s: the main loop has made no progress for %.1f s while its source delivers: no longer "
                    "feeding the systemd watchdog (the service will be restarted)",
                    self.camera,
                    self.liveness.idle_s(),
                )
            return
        if self._starved:
            self._starved = False
            log.warning("%s: the main loop is progressing again; feeding the watchdog", self.camera)
        self.notifier.watchdog()

    def _status_line(self) -> str:
        if self._starved:
            idle = self.liveness.idle_s()
            return f"stalled: no frame processed for {idle:.0f} s while frames wait; watchdog no longer fed"
        report = self.health.report()
        if not report.ok:
            return report.summary()
        return f"ok: {self.liveness.frames} frames, {self.metrics.fps():.1f} FPS"


def _bridge_stats(fleet: Any) -> Callable[[], BridgeStats]:
    bridge = fleet.bridge
    return lambda: bridge.stats  # a property: a fresh snapshot on each read
