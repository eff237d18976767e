"""``reid-daemon fleet``: every camera of a fleet YAML as its own worker process, on one shared Valkey.

This is what several systemd units do on a site, folded into one command for replays and demos: start an
embedded Valkey when the config names none (on ``bridge.embedded_transport``), start ``reid-daemon run --config
FILE --camera NAME`` for each camera (separate processes, as in production), show their progress, forward
SIGINT/SIGTERM, follow the YAML while they run (a live fleet's: a camera added started, one taken out stopped,
one whose own settings changed started again with them: ``_Follow``), and when they are done print and write
the identity report (who was seen where and when: ``report.json``, ``report.md``, ``timeline.png``) — and the
fleet evaluation against the cameras' ground truth (``fleet_metrics.json``) when the config names each camera's
(``cameras.<name>.ground_truth``: one's own recordings) or sits in a scenario built by ``reid-daemon scenario
build`` with ``--gt``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
from tqdm import tqdm

from daemon.bridge import FORGET_CAMERA, Bridge, BridgeError
from daemon.config import CameraConfig, SecretSource, Settings, load_settings
from daemon.erase import Erased, NotATable, PendingForgets, UnreadableFile, erase_problem
from daemon.erase_ack import EraseAck, UntrustedAck
from daemon.errors import ConfigError, DaemonError, DataError, LockTimeout, SourceError
from daemon.fleet import (
    FLEET_FOLLOWS_ENV,
    FLEET_PID_ENV,
    IDENTITY_TABLE_REFRESH_S,
    STARTED_AGAIN_ENV,
    ConfigWatch,
    file_state,
)
from daemon.fleet_wire import FleetMessage
from daemon.motio import MotGroundTruth, check_truth_size
from daemon.ops import STOP_SIGNALS, HeldStop
from daemon.outputs import check_source_kept, json_object
from daemon.procs import spawn
from daemon.sources import (
    check_video_file,
    counted_frames,
    frames_to_deliver,
    list_images,
    live_source,
    local_path,
    not_found,
    source_kind,
)
from daemon.valkey_server import EmbeddedValkey

if TYPE_CHECKING:
    from daemon.fleet_report import Truth

log = logging.getLogger(__name__)

POLL_S = 0.5
FORGET_POLL_S = 0.2  # `forget` reads what the running cameras said of it this often while it waits
STOP_GRACE_S = 10.0  # a camera still running this long after SIGTERM is killed (the unit's TimeoutStopSec)
# A worker stopped before it has set its handlers (still importing its modules) dies of the forwarded SIGTERM, or
# of a terminal's signal to its whole process group (SIGINT, SIGHUP), or exits 130 ("interrupted").
_STOPPED_BY_SIGNAL = frozenset({-int(s) for s in STOP_SIGNALS} | {130})


@dataclass(frozen=True)
class CameraProcess:
    name: str
    proc: subprocess.Popen[bytes]
    status: Path  # status.json the worker refreshes
    log_path: Path
    total: int | None


@dataclass(frozen=True)
class FleetRun:
    """What a fleet run left: per-camera exit codes and output folders, the report files."""

    exit_codes: dict[str, int]
    camera_dirs: dict[str, Path]
    report_dir: Path
    report: dict[str, Any]
    metrics: dict[str, Any] | None
    mosaic: Path | None = None  # fleet.mp4: the cameras side by side (fleet.mosaic)

    @property
    def ok(self) -> bool:
        return run_ok(self.exit_codes)


def child_environment(settings: Settings, url: str, epoch: float, follows: bool = False) -> dict[str, str]:
    """The environment of the camera processes: the shared Valkey, one replay epoch (``epoch`` where neither
    the config nor the environment gives ``fleet.epoch``: an environment variable would override the file's),
    the fleet key, and that this fleet runs them (its pid; ``follows``: whether it follows its YAML, stopping
    the worker of a camera taken out of it), which a worker whose camera leaves its config says
    (``fleet.removal_advice``).

    When the config takes its fleet key from an environment variable that is not set, a random key is made for
    this run (a local replay needs no durable key; a deployment sets one, e.g. as a systemd credential).
    ``STARTED_AGAIN_ENV`` is not passed on (a user's export, or a fleet started from a worker started again):
    only ``joining_environment`` names a restart.
    """
    env = {k: v for k, v in os.environ.items() if k != STARTED_AGAIN_ENV}
    env["REID_BRIDGE__URL"] = url
    env["REID_FLEET__ENABLED"] = "true"
    if settings.fleet.epoch is None:  # read with the environment's REID_FLEET__EPOCH, if any
        env["REID_FLEET__EPOCH"] = repr(epoch)
    env[FLEET_PID_ENV] = str(os.getpid())
    env[FLEET_FOLLOWS_ENV] = "1" if follows else "0"
    key = settings.bridge.signing_key
    if key is not None and key.env and not env.get(key.env):
        env[key.env] = secrets.token_hex(32)
        log.info("fleet key: %s is not set, using a random key for this run", key.env)
    return env


def joining_environment(
    settings: Settings, env: dict[str, str], changed: Sequence[str] = ()
) -> dict[str, str]:
    """The environment of a camera added to a running fleet, or started again with the settings whose keys
    ``changed`` (``env``: its first cameras'): a recording it replays starts at its own start, as a live camera's
    frames do, not at the fleet's (placed there, its sightings would fall in the past beside its peers' live
    ones); an epoch the config or the environment gives is kept. A camera started again is told the keys
    (``STARTED_AGAIN_ENV``), which its status.json records for the report."""
    joined = {k: v for k, v in env.items() if k != STARTED_AGAIN_ENV}
    if changed:
        joined[STARTED_AGAIN_ENV] = ",".join(changed)
    if settings.fleet.epoch is not None:
        return joined
    return {**joined, "REID_FLEET__EPOCH": repr(time.time())}


def _frame_total(settings: Settings, name: str) -> int | None:
    """The frames a camera's bar counts to: a file's or a folder's, as its source delivers them; None for a
    live source or one that cannot be read here (the worker names the problem)."""
    src = settings.cameras[name].source
    path = local_path(src)
    if path is not None and path.is_dir():
        try:
            return frames_to_deliver(src, len(list_images(path)))
        except OSError:
            return None
    if path is None or not path.is_file():
        return None
    cap = cv2.VideoCapture(str(path))
    try:
        return frames_to_deliver(src, counted_frames(cap, path) or 0)  # as the worker's source counts them
    finally:
        cap.release()


@dataclass(frozen=True)
class _Header:
    """What a video file's header says, as OpenCV reads it (0 where it says nothing, or cannot be read)."""

    fps: float
    size: tuple[int, int]  # width, height


def _video_header(path: Path) -> _Header:
    cap = cv2.VideoCapture(str(path))
    try:
        return _Header(
            float(cap.get(cv2.CAP_PROP_FPS)),
            (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))),
        )
    finally:
        cap.release()


def _ready_camera_dir(settings: Settings, name: str) -> None:
    """The camera's output folder made, an earlier run's files that the report and the scores would take for
    this one's out of the way: a recording's removed (its run makes them again), a live camera's put into their
    ``earlier-*`` folder as its worker's start puts them (``worker.clear_earlier_run``: they cannot be made
    again), holding the folder's lock (``camera_lock``); ConfigError naming ``output.dir`` when that cannot be
    done, and naming the worker that holds the lock where one runs the camera already, before any camera starts."""
    from daemon.camera_lock import worker_locked
    from daemon.worker import clear_earlier_run

    cam = settings.cameras[name]
    out = _camera_dir(settings, name)
    try:
        with worker_locked(out, name, FLEET_WHO):
            clear_earlier_run(out, name, cam.output.keep_earlier, live_source(cam.source))
    except OSError as e:  # a file on the way, a folder the user may not write
        where = e.filename or out
        raise ConfigError(f"cameras.{name}.output.dir: cannot write {where}: {e.strerror or e}") from e


FLEET_WHO = (
    "reid-daemon fleet"  # the fleet's record in a camera folder's lock file, while it readies the folder
)


# starts a camera added to the YAML, or one started again with the keys of its settings that changed (_Follow)
JoinCamera = Callable[[Settings, str, Sequence[str]], CameraProcess]


def _start_camera(
    config: Path, settings: Settings, name: str, env: dict[str, str], log_options: Sequence[str] = ()
) -> CameraProcess:
    out = _camera_dir(settings, name)
    log_path = out / "worker.log"
    status = out / "status.json"
    cmd = [sys.executable, "-m", "daemon", *log_options, "run", "--config", str(config), "--camera", name]
    cmd.append("--no-progress")
    with open(log_path, "wb") as fh:
        proc = spawn(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)  # ends with the fleet
    return CameraProcess(name, proc, status, log_path, _frame_total(settings, name))


def _watch(
    cams: list[CameraProcess],
    progress: bool,
    stopping: Callable[[], bool],
    exits: _Exits,
    follow: _Follow | None = None,
) -> None:
    """Show the cameras' progress until they have all exited; forward a stop request (``_Stops``). ``follow``:
    the fleet's YAML, followed meanwhile (the cameras added to it started and appended to ``cams``, those
    removed stopped), until the fleet's stop."""
    bars = _Bars(progress)
    stops = _Stops()
    try:
        while True:
            if stopping():
                stops.ask(cams)
            elif follow is not None:
                follow.tick(cams, stops, exits)
            if not exits.running(cams):
                break
            stops.enforce(cams)
            bars.show(cams)
            time.sleep(POLL_S)
    finally:
        bars.show(cams)
        bars.close()


class _Stops:
    """Camera processes stopped as the unit's stop does: SIGTERM once, then SIGKILL to one still running
    ``STOP_GRACE_S`` later (a hung worker would hold the fleet forever; a second Ctrl-C did nothing)."""

    def __init__(self) -> None:
        self._sent: dict[CameraProcess, float] = {}  # when each was sent SIGTERM (inf: killed)

    def ask(self, cams: Sequence[CameraProcess]) -> None:
        """SIGTERM to those of ``cams`` still running that have not been sent it."""
        for c in cams:
            if c not in self._sent and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
                self._sent[c] = time.monotonic()

    def enforce(self, cams: Sequence[CameraProcess]) -> None:
        """SIGKILL to those still running ``STOP_GRACE_S`` after their SIGTERM."""
        now = time.monotonic()
        for c in cams:
            sent = self._sent.get(c)
            if sent is not None and now - sent >= STOP_GRACE_S and c.proc.poll() is None:
                log.warning(
                    "camera %s has not stopped %.0f s after SIGTERM: killing it", c.name, STOP_GRACE_S
                )
                c.proc.kill()
                self._sent[c] = math.inf


class _Bars:
    """A progress bar per camera process, one under the other, made when it is first shown (a camera added to
    the fleet's YAML gets the next line)."""

    def __init__(self, progress: bool) -> None:
        self._progress = progress
        self._bars: dict[CameraProcess, Any] = {}

    def show(self, cams: Sequence[CameraProcess]) -> None:
        for c in cams:
            bar = self._bars.get(c)
            if bar is None:
                at = len(self._bars)
                bar = tqdm(total=c.total, desc=c.name, unit="frame", position=at, disable=not self._progress)
                self._bars[c] = bar
            st = json_object(c.status)
            if "frames" in st:
                bar.update(int(st["frames"]) - bar.n)
                bar.set_postfix(fps=st.get("fps"), ids=st.get("identities"), refresh=False)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def _running(name: str, cams: list[CameraProcess]) -> list[CameraProcess]:
    """Camera ``name``'s workers still running."""
    return [c for c in cams if c.name == name and c.proc.poll() is None]


def _stop_workers(
    name: str, cams: list[CameraProcess], stops: _Stops, exits: _Exits, why: str
) -> list[CameraProcess]:
    """Stop camera ``name``'s running workers as the fleet's stop does, their exits counted as not failures
    (``_Exits.removed``, ``why``); the workers asked to stop."""
    running = _running(name, cams)
    for c in running:
        exits.removed(c, why)
    stops.ask(running)
    return running


class _Follow:
    """A live fleet's YAML, followed while it runs as its workers follow it (``fleet.ConfigWatch``): a camera
    added to it is started, its folder readied as at the fleet's start; one removed has its worker stopped as
    the fleet's stop does (``_Stops``), which is not a failure; a file that cannot be read or does not validate
    is logged, naming it, and changes nothing. An added camera that cannot be used (its source missing or a
    text file, a file it would overwrite, a ground truth that cannot be read, a folder it cannot make) is logged
    and not started, the others running on; it is tried again once its settings change. A camera added back
    before its earlier worker has stopped starts once that one has. The file is taken once it has not changed
    for a poll (``POLL_S``), so that an edit being written is not read half-way.

    A camera's own settings (its section, ``camera_defaults`` as merged into it, its ``ops.camera_ports``
    entry: ``_own``), which its worker takes only when it starts, are followed too: when they change, its worker
    is stopped as a removed camera's is and started again with them once it has exited (a camera whose worker
    had ended is started again), the change's keys logged; a change that cannot be used (as an added camera's)
    is logged and the worker runs on as it was, tried again when they change. A change of ``ground_truth``
    alone, which the worker does not read, is taken for the run's scores without a restart. A camera started
    again is placed as an added one is (a recording from its new start: ``joining_environment``), and the report
    takes its new run (``ran``): the files its folder holds, an earlier run's having been put aside or removed as
    at any start (``_ready_camera_dir``). The settings the cameras share (``_shared``: bridge, identity, fleet,
    ...) are not followed beyond what the workers take themselves (the camera list and ``identity.adjacency``:
    a followed fleet is not in lockstep, and its workers, live or replaying, follow the file too): a change to
    them is logged once, naming its keys, as taking a restart of the fleet (a camera started from then on, added
    or restarted, takes them)."""

    def __init__(self, config: Path, settings: Settings, start: JoinCamera) -> None:
        self.config = config
        # every camera run, as its last worker was started: the report's (a camera restarted: its new run's)
        self.ran: dict[str, CameraConfig] = dict(settings.cameras)
        self._start = start
        self._watch = ConfigWatch(config, "fleet", keeps="the fleet keeps the cameras it runs")
        self._first = settings  # the file the fleet started with (its workers' shared settings)
        self._wanted = settings  # the file as last taken
        self._members = set(settings.cameras)  # the cameras the fleet runs (a worker may have ended)
        self._running = {n: _own(settings, n) for n in settings.cameras}  # members' settings, as started
        self._refused: dict[str, dict[str, Any]] = {}  # cameras not started (again), as they were (_own)
        # cameras whose worker is stopped to start again with new settings, and the keys that changed
        self._restarting: dict[str, list[str]] = {}
        self._shared_said: list[str] = []  # the shared keys last said to differ from the fleet's start
        self._polled: tuple[int, ...] | None = None

    def tick(self, cams: list[CameraProcess], stops: _Stops, exits: _Exits) -> None:
        """Take the file if it changed: stop the workers of the cameras removed, and of those whose settings
        changed, start those added and those stopped to start again."""
        new = self._settled_change()
        if new is not None:
            self._wanted = new
            self._say_shared(new)
        wanted = self._wanted.cameras
        self._restarting = {n: keys for n, keys in self._restarting.items() if n in wanted}
        for name in sorted(self._members - set(wanted)):
            self._members.discard(name)
            self._remove(name, cams, stops, exits)
        if new is not None:
            for name in sorted(self._members):
                self._follow_camera(name, cams, stops, exits)
        for name in wanted:
            if name in self._members or self._refused.get(name) == _own(self._wanted, name):
                continue
            if _running(name, cams):
                continue  # removed and added back, or restarted: its earlier worker is still stopping
            joined = self._join(name)
            if joined is not None:
                cams.append(joined)
                self._members.add(name)

    def _settled_change(self) -> Settings | None:
        state = file_state(self.config)
        if state != self._polled:  # changed since the last poll: perhaps being written
            self._polled = state
            return None
        return self._watch.changed()

    def _say_shared(self, new: Settings) -> None:
        """Log, once per change, the shared settings that differ from those the fleet started with: its workers
        take them only when they start."""
        changed = _changed_keys(_shared(self._first), _shared(new))
        changed = [k for k in changed if k != "identity.adjacency"]  # each worker takes it itself
        if changed == self._shared_said:
            return
        self._shared_said = changed
        if changed:
            log.warning(
                "%s: %s changed: the workers running keep what they started with until the fleet is restarted "
                "(a camera started from now, added or restarted, takes the new settings)",
                self.config,
                ", ".join(changed),
            )
        else:
            log.info(
                "%s: the settings the cameras share are back as the fleet started with them", self.config
            )

    def _follow_camera(self, name: str, cams: list[CameraProcess], stops: _Stops, exits: _Exits) -> None:
        """Camera ``name``'s own settings as last taken: its worker stopped to start again with them where they
        changed (``tick`` starts it once it has exited), the change taken without a restart where the worker
        does not read it (``ground_truth``), logged and left alone where they cannot be used."""
        own = _own(self._wanted, name)
        changed = _changed_keys(self._running[name], own)
        if not changed:
            self._refused.pop(name, None)
            return
        if self._refused.get(name) == own:  # refused as it is: said then
            return
        try:
            _check_added(self.config.parent, self._wanted, name)
        except (ConfigError, OSError) as e:
            self._refused[name] = own
            log.error(
                "camera %s's settings changed in %s (%s) but are not taken: %s; its worker runs on as it was "
                "(they are tried again when they change)",
                name,
                self.config,
                ", ".join(changed),
                e,
            )
            return
        self._refused.pop(name, None)
        if changed == [f"cameras.{name}.ground_truth"]:
            self._running[name] = own
            self.ran[name] = self._wanted.cameras[name]
            log.info(
                "camera %s: %s taken for the run's scores (its worker does not read it: not restarted)",
                name,
                changed[0],
            )
            return
        running = _stop_workers(name, cams, stops, exits, "to start again with its new settings")
        self._members.discard(name)
        self._restarting[name] = changed
        log.info(
            "camera %s's settings changed in %s (%s): %s",
            name,
            self.config,
            ", ".join(changed),
            "stopping its worker to start it again with them"
            if running
            else "its worker had ended: starting it again with them",
        )

    def _remove(self, name: str, cams: list[CameraProcess], stops: _Stops, exits: _Exits) -> None:
        if _stop_workers(name, cams, stops, exits, "taken out of the fleet's config"):
            log.info("camera %s is no longer in %s: stopping its worker", name, self.config)
        else:
            log.info("camera %s is no longer in %s (its worker had ended)", name, self.config)

    def _join(self, name: str) -> CameraProcess | None:
        settings = self._wanted
        again = name in self._restarting
        try:
            _check_added(self.config.parent, settings, name)
            _ready_camera_dir(settings, name)
            joined = self._start(settings, name, self._restarting.get(name, []))
        except (ConfigError, OSError) as e:
            self._refused[name] = _own(settings, name)
            log.error(
                "camera %s, %s %s, is not started%s: %s; the other cameras run on (it is tried again when its "
                "settings change)",
                name,
                "whose settings changed in" if again else "added to",
                self.config,
                " again" if again else "",
                e,
            )
            return None
        self._refused.pop(name, None)
        self._restarting.pop(name, None)
        self.ran[name] = settings.cameras[name]
        self._running[name] = _own(settings, name)
        log.info(
            "camera %s %s %s: its worker started (pid %d)",
            name,
            "was started again with its settings in" if again else "was added to",
            self.config,
            joined.proc.pid,
        )
        return joined


_NOT_SET = object()


def _own(settings: Settings, name: str) -> dict[str, Any]:
    """Camera ``name``'s own settings as flat dotted keys (``cameras.<name>.detector.score_threshold``): its
    section (``camera_defaults`` merged into it) and its ``ops.camera_ports`` entry."""
    own = _flat(settings.cameras[name].model_dump(), f"cameras.{name}")
    own[f"ops.camera_ports.{name}"] = settings.ops.camera_ports.get(name)
    return own


def _shared(settings: Settings) -> dict[str, Any]:
    """The settings every camera's worker takes besides its own (``_own``), as flat dotted keys."""
    doc = settings.model_dump(exclude={"cameras", "camera_defaults"})
    doc["ops"].pop("camera_ports", None)
    return _flat(doc, "")


def _flat(doc: dict[str, Any], at: str) -> dict[str, Any]:
    """``doc``'s values by dotted key under ``at``, mappings opened (lists and other values kept whole)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{at}.{key}" if at else str(key)
        if isinstance(value, dict) and value:
            out.update(_flat(value, path))
        else:
            out[path] = value
    return out


def _changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The keys whose values differ (one of them missing included), sorted."""
    return sorted(
        k for k in before.keys() | after.keys() if before.get(k, _NOT_SET) != after.get(k, _NOT_SET)
    )


def _check_added(folder: Path, settings: Settings, name: str) -> None:
    """ConfigError naming the setting when camera ``name``, added to a running fleet's YAML, cannot be used: its
    local source missing or a text file, a file it would overwrite (``check_source_kept``), a ground truth that
    cannot be read (``_check_truths``)."""
    src = settings.cameras[name].source
    try:
        path = local_path(src)
        if path is not None and not path.exists():
            raise not_found("image folder" if source_kind(src) == "folder" else "video file", path)
        check_video_file(src)
    except SourceError as e:
        raise ConfigError(f"cameras.{name}.source.uri: {e}") from None
    check_source_kept(settings.cameras[name], name)
    _check_truths(folder, settings, [name])


class _Exits:
    """Acts on each camera's exit as soon as it is seen: a failed worker's exit code and the end of its log are
    logged at once (not after the others have finished), and in a lockstep replay the other cameras are told
    not to wait for it (``_Withdrawals``)."""

    def __init__(self, withdrawals: _Withdrawals | None, stopping: Callable[[], bool]) -> None:
        self._seen: set[CameraProcess] = set()
        # stopped by the fleet's following of its YAML (``_Follow``), and why
        self._removed: dict[CameraProcess, str] = {}
        self._withdrawals = withdrawals
        self._stopping = stopping

    def code(self, code: int, removed: bool = False) -> int:
        """A camera's exit code as the fleet counts it: 0 for a camera the fleet's own stop ended by its signal,
        or (``removed``) the stop of a camera taken out of its YAML."""
        return 0 if code in _STOPPED_BY_SIGNAL and (removed or self._stopping()) else code

    def removed(self, c: CameraProcess, why: str = "taken out of the fleet's config") -> None:
        """``c`` is being stopped by the fleet's following of its YAML (``why``: its camera was taken out of it,
        or its settings changed there); its exit by the signal is not a failure."""
        self._removed[c] = why

    def codes(self, cams: Sequence[CameraProcess]) -> dict[str, int]:
        """Each camera's exit code as the fleet counts it, once all have exited: of a camera run more than once
        (taken out of the YAML and put back), its first failure, else 0."""
        codes: dict[str, int] = {}
        for c in cams:
            code = self.code(int(c.proc.wait()), c in self._removed)
            if not codes.get(c.name):
                codes[c.name] = code
        return codes

    def running(self, cams: list[CameraProcess]) -> bool:
        """Whether any camera still runs; acts on the exits not seen before."""
        running = False
        for c in cams:
            code = c.proc.poll()
            if code is None:
                running = True
            elif c not in self._seen:
                self._seen.add(c)
                self._exited(c, self.code(int(code), c in self._removed))
        if self._withdrawals is not None:
            self._withdrawals.tick()
        return running

    def _exited(self, c: CameraProcess, code: int) -> None:
        if code == 0:
            if c in self._removed:
                log.info("camera %s has stopped (%s)", c.name, self._removed[c])
            return
        log.error("camera %s exited with %d; the end of its log:\n%s", c.name, code, _tail(c.log_path))
        if self._withdrawals is not None:
            self._withdrawals.add(c.name)

    def close(self) -> None:
        if self._withdrawals is not None:
            self._withdrawals.close()


def run_fleet(
    config: Path,
    cameras: list[str] | None = None,
    progress: bool = True,
    report_dir: Path | None = None,
    log_options: Sequence[str] = (),
    held: HeldStop | None = None,
) -> FleetRun | None:
    """Run the cameras of ``config`` (all, or ``cameras``) to their end; then report (see the module doc).
    ``log_options`` (``-q``, ``--log-format json`` ...) go to every worker's command line. A stop signal is
    caught from the first line (``held``: the caller's, caught since before; else one is held here): one that
    comes before the cameras start (the config and the ground truths read, Valkey started) stops the run there,
    logged, with no camera started and nothing reported: None."""
    with contextlib.ExitStack() as stack:
        if held is None:
            held = stack.enter_context(HeldStop())
        return _run_fleet(config, cameras, progress, report_dir, log_options, held)


def _run_fleet(
    config: Path,
    cameras: list[str] | None,
    progress: bool,
    report_dir: Path | None,
    log_options: Sequence[str],
    held: HeldStop,
) -> FleetRun | None:
    settings, names = _checked_fleet(config, cameras)
    _remove_report_leftovers(report_dir or _report_root(settings, names))
    if _stopped_while_starting(held):
        return None
    for n in names:
        _ready_camera_dir(settings, n)
    server = (
        EmbeddedValkey(settings.bridge.embedded_transport).start() if settings.bridge.url is None else None
    )
    url = server.url if server is not None else str(settings.bridge.url)

    def stopping() -> bool:
        return held.received is not None

    try:
        if _stopped_while_starting(held):
            return None
        if server is not None:
            log.info("embedded Valkey for this fleet at %s", url)
        env = child_environment(settings, url, time.time(), _followed(settings, cameras))
        exits = _Exits(_lockstep_withdrawals(settings, url, env, names), stopping)

        def start(now: Settings, name: str) -> CameraProcess:
            return _start_camera(config, now, name, env, log_options)

        def join(  # a camera added to the YAML while the fleet runs, or started again with new settings
            now: Settings, name: str, changed: Sequence[str]
        ) -> CameraProcess:
            return _start_camera(config, now, name, joining_environment(settings, env, changed), log_options)

        follow = _following(config, settings, cameras, join)
        cams = [start(settings, n) for n in names]
        try:
            _watch(cams, progress, stopping, exits, follow)
        finally:
            exits.close()
        codes = exits.codes(cams)
    finally:
        if server is not None:
            server.close()  # and its temporary folder
    held.release()  # a stop signal now ends the report (fleet.mp4 can take minutes) as it did before the run
    ran = settings if follow is None else settings.model_copy(update={"cameras": follow.ran})
    return _report(config, ran, codes, progress, report_dir)


def _lockstep_withdrawals(
    settings: Settings, url: str, env: dict[str, str], names: list[str]
) -> _Withdrawals | None:
    """A lockstep replay's withdrawals (None for a fleet that is not one), the cameras ``--cameras`` left out
    already withdrawn: no camera waits for them."""
    if not settings.fleet.lockstep:
        return None
    withdrawals = _Withdrawals(settings, url, env)
    for n in settings.cameras:
        if n not in names:
            withdrawals.add(n, started=False)
    return withdrawals


def _following(
    config: Path,
    settings: Settings,
    cameras: list[str] | None,
    start: JoinCamera,
) -> _Follow | None:
    """The fleet's YAML followed while it runs (``_Follow``), unless the run keeps a fixed set of cameras (said
    in the log): a lockstep replay (its cameras wait for each other from the first frame), or ``--cameras``."""
    if _followed(settings, cameras):
        log.info(
            "following %s: a camera added to it is started, one taken out of it stopped, one whose own settings "
            "change started again with them",
            config,
        )
        return _Follow(config, settings, start)
    if settings.fleet.lockstep:
        log.info(
            "a lockstep replay runs the cameras it started with: %s is not followed while it runs", config
        )
    else:
        log.info(
            "--cameras: the fleet runs %s only; %s is not followed while it runs",
            ", ".join(cameras or []),
            config,
        )
    return None


def _followed(settings: Settings, cameras: list[str] | None) -> bool:
    """Whether the fleet follows its YAML while it runs (``_following``): not in a lockstep replay nor with
    ``--cameras``."""
    return not settings.fleet.lockstep and cameras is None


def _checked_fleet(config: Path, cameras: list[str] | None) -> tuple[Settings, list[str]]:
    """The fleet's settings and the cameras to run, checked before any starts (ConfigError naming what is
    wrong): the fleet key, sources the cameras would overwrite, the ground truths."""
    settings, names = _fleet(config, cameras)
    if settings.bridge.signing_key is None and not settings.bridge.allow_unsigned:
        raise ConfigError(
            f"{config}: bridge.signing_key is needed to run a fleet (e.g. signing_key: {{env: REID_FLEET_KEY}}), "
            "or bridge.allow_unsigned: true for local experiments"
        )
    for n in names:
        check_source_kept(settings.cameras[n], n)
    _check_truths(config.parent, settings, names)
    return settings, names


def _stopped_while_starting(held: HeldStop) -> bool:
    """Whether a stop signal came while the fleet started (logged: no camera is started)."""
    if held.received is None:
        return False
    log.info("fleet: %s received while starting, stopping: no camera started", held.received.name)
    return True


def report_fleet(
    config: Path,
    cameras: list[str] | None = None,
    progress: bool = True,
    report_dir: Path | None = None,
) -> FleetRun:
    """The report of a fleet from the outputs its cameras left, without running them: cameras that ran as
    services (``reid-daemon run``, one per camera, on recordings), or a run to report on again. A camera whose
    run failed (its ``status.json`` says why), or was killed, before it wrote an identity table is named as such
    in the report, as a fleet run names it. DataError naming what is missing when any other camera has left no
    fleet outputs (every such camera)."""
    from daemon.fleet_report import unfinished

    settings, names = _fleet(config, cameras)
    _remove_report_leftovers(report_dir or _report_root(settings, names))
    stopped = unfinished({n: _camera_dir(settings, n) for n in names}).states
    problems = []
    for n in names:
        try:
            _check_reportable(settings, n, stopped.get(n))
        except DataError as e:  # every camera that cannot be reported is named at once
            problems.append(str(e))
    if problems:
        raise DataError("; ".join(problems))
    return _report(config, settings, dict.fromkeys(names, 0), progress, report_dir)


def _check_reportable(settings: Settings, name: str, state: str | None) -> None:
    """DataError naming what is missing when camera ``name`` has left no identity table to report on, unless
    its ``status.json`` says its run failed or was killed (``state``, from ``fleet_report.unfinished``): then
    the report names it, and why it failed."""
    from daemon.fleet_report import identity_tables
    from daemon.runner import worker_running

    folder = _camera_dir(settings, name)
    if identity_tables(folder, earlier_runs=_ids_span_runs(settings)):
        return
    if state in ("failed", "killed"):
        log.warning("camera %s %s before it wrote an identity table: the report names it", name, state)
        return
    table = folder / "identities.json"
    if worker_running(folder):
        raise DataError(
            f"camera {name} is running and has not written {table} yet (every {IDENTITY_TABLE_REFRESH_S:g} "
            "s, and when it stops): try again in a minute, or leave it out with --cameras"
        )
    raise DataError(
        f"camera {name} has left no fleet outputs: {table} is missing (run it with fleet.enabled)"
    )


def _fleet(config: Path, cameras: list[str] | None) -> tuple[Settings, list[str]]:
    settings = load_settings(config)
    names = cameras or list(settings.cameras)
    for n in names:
        settings.camera(n)  # a clear error for an unknown name
    return settings, names


def _camera_dir(settings: Settings, name: str) -> Path:
    return Path(settings.cameras[name].output.dir) / name


def _report_root(settings: Settings, names: list[str]) -> Path:
    """Where the report of cameras ``names`` goes without a report_dir: the folder holding their folders."""
    return _common_parent([_camera_dir(settings, n) for n in names])


def _remove_report_leftovers(out: Path) -> None:
    """The temporary files of the report's files a writer killed meanwhile left in the output root ``out``,
    removed and logged as the fleet starts (``fleet_report.remove_report_leftovers``)."""
    from daemon.fleet_report import remove_report_leftovers

    removed = remove_report_leftovers(out)
    if removed.files:
        log.info("fleet: %s", removed.left_in(out))


def _ids_span_runs(settings: Settings) -> bool:
    """Whether global ids go on across runs (a shared Valkey keeps the counter), so that the report may take
    the cameras' earlier runs too (``fleet_report.identity_tables``)."""
    return settings.bridge.url is not None


def _report(
    config: Path, settings: Settings, codes: dict[str, int], progress: bool, report_dir: Path | None
) -> FleetRun:
    """report.json/.md, timeline.png, the scores against the ground truth (_truths), fleet.mp4."""
    names = list(codes)
    dirs = {n: _camera_dir(settings, n) for n in names}
    out = report_dir or _report_root(settings, names)
    from daemon.fleet_report import MOSAIC_FILE, build_report, evaluate_run

    for stale in ("fleet_metrics.json", "fleet_metrics.txt"):
        (out / stale).unlink(missing_ok=True)  # an earlier run's scores, not this run's (scored again below)
    report = build_report(dirs, out, earlier_runs=_ids_span_runs(settings))
    truths = _truths(config.parent, settings, dirs) if run_ok(codes) else None
    mosaic = _mosaic(settings, dirs, out / MOSAIC_FILE, progress) if settings.fleet.mosaic else None
    metrics = evaluate_run(truths, dirs, out) if truths is not None else None  # last: a bad file stops it
    return FleetRun(codes, dirs, out, report, metrics, mosaic)


def _check_truths(folder: Path, settings: Settings, names: list[str]) -> None:
    """ConfigError naming the camera and the file, before any camera starts, when a ground truth the run is to be
    scored on (``cameras.<name>.ground_truth``, or a scenario's ``<camera>.gt.txt``) is missing or cannot be
    read: found after the run, it cost the run its scores. A warning when only some cameras name theirs: the run
    will not be scored (``_given_truths`` says so again at its end); when a truth's boxes lie outside its frames
    (``motio.check_truth_size``); and when two truths show one id at once on cameras whose views do not overlap
    (``_check_truth_ids``)."""
    from daemon.motio import read_sequence_truth

    without = [n for n in names if settings.cameras[n].ground_truth is None]
    if 0 < len(without) < len(names):
        log.warning(
            "this run will not be scored: camera(s) %s have no ground_truth where the others have (the global "
            "ids are scored over every camera of the run)",
            ", ".join(without),
        )
    scenario = (folder / "scenario.json").is_file()
    read: dict[str, tuple[str, MotGroundTruth]] = {}
    for n in names:
        given = settings.cameras[n].ground_truth
        path = given if given is not None else folder / f"{n}.gt.txt"
        if given is None and not (scenario and path.is_file()):
            continue  # nothing to score on (a scenario built without --gt)
        where = f"cameras.{n}.ground_truth" if given is not None else f"camera {n}'s ground truth"
        try:
            gt = read_sequence_truth(path)
        except DataError as e:
            raise ConfigError(f"{where}: {e}") from None
        check_truth_size(where, path, gt, camera_frame_size(settings, n), log)
        read[n] = (f"{where} ({path})", gt)
    _check_truth_ids(settings, read)


def _check_truth_ids(settings: Settings, read: dict[str, tuple[str, MotGroundTruth]]) -> None:
    """A warning for each pair of cameras whose views do not overlap (identity.adjacency,
    identity.allow_overlapping_views) but whose truths show one id on both at the same moment: a truth numbered
    per camera (its person 1 not the other's), scored as if the ids were the same people on every camera, or
    views that overlap after all (the resolver keeps one id off both at once: it can never be scored right)."""
    from daemon.fleet_eval import TimedTruth, seen_at_once
    from daemon.identity.travel import TravelModel

    travel = TravelModel(settings.identity.adjacency, settings.identity.allow_overlapping_views)
    timed = {}
    for n, (_, gt) in read.items():
        fps = _nominal_fps(settings, n)
        if fps is not None:
            timed[n] = TimedTruth(gt, fps, settings.cameras[n].source.clock_offset_s)
    for a, b in itertools.combinations(timed, 2):
        hit = None if travel.overlapping(a, b) else seen_at_once(timed[a], timed[b])
        if hit is not None:
            log.warning(
                "%s and %s show id %d at the same moment (frame %d of %s, frame %d of %s), where the cameras' views "
                "do not overlap (identity.adjacency, identity.allow_overlapping_views): a ground truth numbered per "
                "camera is scored as if its ids were the same people on every camera; if the views do overlap, say "
                "so there (the resolver keeps one id off both at once)",
                read[a][0],
                read[b][0],
                hit[0],
                hit[1],
                a,
                hit[2],
                b,
            )


def _nominal_fps(settings: Settings, name: str) -> float | None:
    """A recorded camera's frame rate: source.fps, else its video's (an image folder: source.folder_fps); None
    for a live source or a video that gives none."""
    source = settings.cameras[name].source
    path = local_path(source)
    if path is None:
        return None
    if source.fps is not None:
        return float(source.fps)
    if path.is_dir():
        return float(source.folder_fps)
    fps = _video_header(path).fps
    return fps if 0 < fps <= 1000 else None


def camera_frame_size(settings: Settings, name: str) -> tuple[int, int] | None:
    """The width and height of a camera's frames, from its file or its folder's first image; None for a live
    source or one that cannot be read here (its worker names the problem)."""
    path = local_path(settings.cameras[name].source)
    if path is None:
        return None
    if path.is_dir():
        try:
            images = list_images(path)
        except OSError:
            return None
        first = cv2.imread(str(images[0])) if images else None
        return (int(first.shape[1]), int(first.shape[0])) if first is not None else None
    size = _video_header(path).size
    return size if min(size) > 0 else None


def _truths(folder: Path, settings: Settings, dirs: dict[str, Path]) -> dict[str, Truth] | None:
    """Each camera's ground truth, where the run can be scored: the files the config names
    (``cameras.<name>.ground_truth``), else those of the scenario in ``folder``; None otherwise, with a warning
    naming what is missing (a config that names none, outside a scenario, has nothing to be scored on)."""
    given = {n: settings.cameras[n].ground_truth for n in dirs}
    if any(p is not None for p in given.values()):
        truths = _given_truths(given)
    elif (folder / "scenario.json").is_file():
        truths = _scenario_truths(folder, dirs)
    else:
        return None
    return truths if truths is not None and _left_results(dirs) else None


def _given_truths(given: dict[str, Path | None]) -> dict[str, Truth] | None:
    from daemon.fleet_report import Truth

    without = [n for n, p in given.items() if p is None]
    if without:
        log.warning(
            "not scored: camera(s) %s have no ground_truth (the global ids are scored over every camera of the "
            "run: give each its cameras.<name>.ground_truth, or leave it out with --cameras)",
            ", ".join(without),
        )
        return None
    missing = [
        f"{p} (cameras.{n}.ground_truth)" for n, p in given.items() if p is not None and not p.is_file()
    ]
    if missing:
        log.warning("not scored: the ground truth %s is missing", ", ".join(missing))
        return None
    return {n: Truth(p) for n, p in given.items() if p is not None}


def _scenario_truths(folder: Path, dirs: dict[str, Path]) -> dict[str, Truth] | None:
    """The ground truth of the scenario in ``folder``; None, with a warning naming what is missing, when some of
    it is (a scenario built without ``--gt`` has no ground truth: nothing to say)."""
    from daemon.fleet_report import scenario_truths, scoring_inputs

    paths = [scoring_inputs(folder, n, d)[0] for n, d in dirs.items()]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        if len(missing) < len(paths):
            log.warning("not scored: the scenario's ground truth %s is missing", ", ".join(map(str, missing)))
        return None
    return scenario_truths(folder, list(dirs))


def _left_results(dirs: dict[str, Path]) -> bool:
    """Whether every camera left its results to score; a warning names those that did not."""
    from daemon.fleet_report import results_files

    unscorable = [n for n, d in dirs.items() if not all(p.is_file() for p in results_files(n, d))]
    if unscorable:
        log.warning(
            "not scored: camera(s) %s left no results (<camera>.txt and <camera>.global.txt): stopped before "
            "they opened their outputs, or output.mot is off",
            ", ".join(unscorable),
        )
    return not unscorable


def _mosaic(settings: Settings, dirs: dict[str, Path], out: Path, progress: bool) -> Path | None:
    """The cameras' annotated videos side by side in ``out`` (daemon/fleet_mosaic.py); None when fewer than two
    cameras wrote one."""
    from daemon.fleet_mosaic import camera_tile, placements, write_mosaic
    from daemon.fleet_report import run_first_frames, run_videos
    from daemon.progress import progress_bar

    offsets = {name: settings.cameras[name].source.clock_offset_s for name in dirs}
    firsts = run_first_frames(dirs)
    at = placements(offsets, firsts)
    videos = {name: run_videos(d) for name, d in dirs.items()}
    tiles = [camera_tile(name, videos[name], at[name], firsts[name]) for name in dirs if videos[name]]
    if len(tiles) < 2:
        return None
    start = min(at.values())  # the fleet's first frame, a camera that left no video included
    with progress_bar("fleet.mp4", "frame", progress) as step:
        return write_mosaic(tiles, out, progress=step, start_s=start)


def run_ok(codes: dict[str, int]) -> bool:
    return all(c == 0 for c in codes.values())


def _common_parent(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))


class _Withdrawals:
    """Tells the other cameras of a lockstep replay not to wait for a camera whose worker failed.

    A worker that ends publishes its own "finished" marker; one that fails to start (an unreadable video) or
    dies sends none, and its peers would stall for ``fleet.lockstep_timeout_s``. So the fleet, which holds the
    fleet key, publishes that camera's "finished" marker on its behalf, and again on every poll for the
    timeout: pub/sub drops what is sent before a peer has subscribed, and a peer that subscribes later than
    that has left the camera out by then anyway.
    """

    def __init__(self, settings: Settings, url: str, env: dict[str, str]) -> None:
        key = settings.bridge.signing_key
        if key is not None and key.env:  # perhaps the random key made for this run: what the workers hold
            key = SecretSource(value=env.get(key.env, ""))
        self._cfg = settings.bridge.model_copy(update={"url": url, "signing_key": key})
        self._window_s = settings.fleet.lockstep_timeout_s
        self._until: dict[str, float] = {}
        self._bridges: dict[str, Bridge] = {}

    def add(self, camera: str, started: bool = True) -> None:
        """Publish ``camera``'s "finished" marker: a worker that failed, or (``started=False``) a camera of the
        YAML this run does not start (``--cameras``), which the others would wait for until the timeout."""
        try:
            self._bridges[camera] = Bridge(self._cfg, camera, receive=False).start()
        except DaemonError as e:
            log.warning("could not tell the other cameras that %s has stopped: %s", camera, e)
            return
        self._until[camera] = time.monotonic() + self._window_s
        if started:
            log.warning("camera %s stopped: the other cameras go on without waiting for it", camera)
        else:
            log.info("camera %s is not run: the other cameras go on without waiting for it", camera)
        self._send(camera)

    def tick(self) -> None:
        now = time.monotonic()
        for camera, until in list(self._until.items()):
            if now < until:
                self._send(camera)
            else:
                del self._until[camera]

    def _send(self, camera: str) -> None:
        self._bridges[camera].publish(FleetMessage("progress", camera, timestamp=time.time(), ended=True))

    def close(self) -> None:
        for bridge in self._bridges.values():
            bridge.close(1.0)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def _last_global_id(bridge: Bridge, timeout_s: float) -> int | None:
    """The fleet's last global id, trying until ``timeout_s`` (Valkey may be coming up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return bridge.last_global_id()
        except BridgeError:
            if time.monotonic() >= deadline:
                raise bridge.unreachable(timeout_s) from None
            time.sleep(0.2)


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What ``forget`` erased."""

    stored: int | None  # entries in Valkey that held the id; None: no shared Valkey (bridge.url unset)
    files: dict[str, Erased]  # cameras not running: erased from their files here
    # cameras not running whose files could not be read or written here: why, and what to do about it
    failed: dict[str, str]
    confirmed: dict[str, str]  # running cameras whose workers said they erased it: what their files held
    pending: dict[str, str]  # running cameras that did not say so within the wait: why
    report: Path | None  # the fleet report made again without the id

    @property
    def done(self) -> bool:
        """Every camera erased it: here, or its running worker said so."""
        return not self.failed and not self.pending


def forget(settings: Settings, global_id: int, timeout_s: float, wait_s: float = 0.0) -> Forgotten:
    """Erase ``global_id`` from the fleet: running workers drop it and erase it from their files, stored state
    in Valkey is deleted, and the files of the config's cameras that are not running are erased here
    (``daemon.erase``), with the fleet report made again from them (while a camera runs, the id is taken out
    of the report as it stands). A camera of this host is running while its worker holds its folder's lock
    (``camera_lock``); a stopped one's lock is held here from then until its files are erased, once the forget
    is sent and before the wait below, so that a worker starting meanwhile waits for the erase alone. The
    running cameras, and those whose folder is not on this host (another host's: a stored forget reaches its
    worker when it next starts), are then waited for up to ``wait_s`` to say, through Valkey, that they erased
    it (``daemon.erase_ack``); one that stops meanwhile without saying so is erased here after. Without
    ``bridge.url`` (a fleet on an embedded Valkey, which ended with its run) only the files are erased, and no
    camera may be running."""
    dirs = {n: _camera_dir(settings, n) for n in settings.cameras}
    with _Folders(dirs) as folders:
        running = folders.running
        if settings.bridge.url is None and running:
            raise ConfigError(
                f"forget: cameras {', '.join(running)} are running on a fleet's embedded Valkey, which forget "
                "cannot reach (bridge.url is unset); stop the fleet first, or give the fleet a bridge.url"
            )
        erasing = _Erasing(folders, global_id)
        confirmed: dict[str, str] = {}
        stored = None
        if settings.bridge.url is not None:
            with Bridge(settings.bridge, FORGET_CAMERA, receive=False) as bridge:
                stored, sent = _forget_in_valkey(bridge, global_id, timeout_s)
                erasing.stopped()  # their locks let go before the wait: a worker starting waits for no more
                since = sent - settings.bridge.max_clock_skew_s
                heard = _Heard(bridge, global_id, since, {n: dirs[n] for n in running})
                heard.elsewhere({n: dirs[n] for n in folders.absent}, settings.bridge.forget_keep_s)
                confirmed, erasing.pending = heard.wait(wait_s)
        else:
            erasing.stopped()
        # a camera that stopped meanwhile (its bridge closed before the forget came, or before it said): erased here
        erasing.stopped_meanwhile(confirmed)
    files = {n: erasing.files[n] for n in dirs if n in erasing.files}  # in the config's order
    pending, failed = erasing.pending, erasing.failed
    erased_any = any(e.total for e in files.values())
    if erased_any and not confirmed and not pending:
        report = _report_again(dirs, _ids_span_runs(settings), global_id)
    else:  # the running cameras' tables may hold the id a moment longer: out of the report as it stands
        report = _leave_out_of_report(dirs, global_id)
    return Forgotten(stored, files, failed, confirmed, pending, report)


FORGET_WHO = "reid-daemon forget"  # forget's record in a camera folder's lock file


class _Folders:
    """The config's camera folders as ``forget`` finds them: ``running`` (a worker of this host holds the
    folder's lock, or its status.json says running on another host), ``absent`` (no folder on this host), and
    the others stopped, their locks held here (``camera_lock.writer_locked``) until ``release``d; ``failed``:
    those whose lock another command held past its wait."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        from daemon.runner import running_elsewhere

        self.dirs = dirs
        self.running: list[str] = []
        self.absent: list[str] = []
        self.failed: dict[str, str] = {}
        self._held: dict[str, contextlib.ExitStack] = {}
        for n, d in dirs.items():
            if not d.is_dir():
                self.absent.append(n)
            elif running_elsewhere(d):
                self.running.append(n)
            else:
                held = self.take(n)
                if held == "worker":
                    self.running.append(n)
                elif held != "held":
                    self.failed[n] = held

    def take(self, name: str) -> str:
        """Hold camera ``name``'s folder lock (kept while held already): ``held``; ``worker`` where its worker
        holds it; else why it could not be had. A lock file that cannot be made (a folder this user may not
        write) is not held: the erase then says what it cannot write."""
        from daemon.camera_lock import is_worker, writer_locked
        from daemon.gallery import Holder

        if name in self._held:
            return "held"
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(writer_locked(self.dirs[name], name, FORGET_WHO))
        except LockTimeout as e:
            if isinstance(e.holder, Holder) and is_worker(e.holder):
                return "worker"
            return f"{e}; run forget again once it is done"
        except DataError:
            pass  # no lock file: no worker of this host holds it either
        self._held[name] = stack
        return "held"

    @property
    def held(self) -> list[str]:
        """The cameras whose locks are held here now, in the config's order."""
        return list(self._held)

    def release(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is not None:
            held.close()

    def __enter__(self) -> _Folders:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in list(self._held):
            self.release(name)


class _Erasing:
    """``forget``'s erase of the files of ``folders``' stopped cameras here, each camera's lock let go as soon as
    its files are erased: ``files`` what each held, ``failed`` why one could not be (``_Folders.failed`` too),
    ``pending`` the cameras left to their workers (the running ones' word, set by ``forget``)."""

    def __init__(self, folders: _Folders, global_id: int) -> None:
        self.folders, self.global_id = folders, global_id
        self.files: dict[str, Erased] = {}
        self.failed: dict[str, str] = dict(folders.failed)
        self.pending: dict[str, str] = {}

    def stopped(self) -> None:
        """Erase the cameras found stopped (their locks held since)."""
        for n in self.folders.held:
            self._erase(n)

    def stopped_meanwhile(self, confirmed: dict[str, str]) -> None:
        """Erase the cameras that stopped since the first look without saying they erased the id (not in
        ``confirmed``, nor ``pending``), taking each one's lock; one whose worker started again is pending."""
        for n, d in self.folders.dirs.items():
            done = n in self.files or n in self.failed or n in confirmed or n in self.pending
            if done or not d.is_dir():
                continue
            held = self.folders.take(n)
            if held == "worker":
                self.pending[n] = (
                    "its worker started while forget waited for the running cameras: it erases the id as it "
                    "starts, and says so"
                )
            elif held != "held":
                self.failed[n] = held
            else:
                self._erase(n)

    def _erase(self, name: str) -> None:
        d = self.folders.dirs[name]
        try:
            self.files[name] = _erase_stopped(d, name, self.global_id)
        except OSError as e:  # a user who cannot write the folder: the rest of the fleet is erased still
            self.failed[name] = _erase_failure(e, d)
        finally:
            self.folders.release(name)


class _Heard:
    """What the running cameras said of a forget of ``global_id`` sent at ``since`` (less the clock skew the
    fleet allows), read from Valkey until each said it erased it, or stopped."""

    def __init__(self, bridge: Bridge, global_id: int, since: float, running: dict[str, Path]) -> None:
        self.bridge, self.global_id, self.since, self.running = bridge, global_id, since, running
        self.remote: dict[str, Path] = {}
        self.keep_s = 0

    def elsewhere(self, remote: dict[str, Path], keep_s: int) -> None:
        """Cameras whose folder is not on this host (another host's in a multi-host fleet), waited for as the
        running ones are: their worker, running there or when it next starts (the fleet keeps a forget for
        ``keep_s``, ``bridge.forget_keep_s``), says it erased the id; forget cannot tell which from here."""
        self.remote, self.keep_s = remote, keep_s

    def wait(self, wait_s: float) -> tuple[dict[str, str], dict[str, str]]:
        """Per running camera (and one not on this host: ``elsewhere``), what it erased (said ``erased``) or
        why not (``pending``); cameras that stopped without saying so are in neither (their files are closed:
        erased here). Reads every FORGET_POLL_S until each said ``erased`` or stopped, or ``wait_s`` passed."""
        from daemon.runner import worker_running

        deadline = time.monotonic() + wait_s
        while True:
            said = self.bridge.erase_acks(self.global_id)
            confirmed = {
                n: a.detail
                for n, a in said.items()
                if (n in self.running or n in self.remote) and isinstance(a, EraseAck) and self._erased(a)
            }
            still = {n for n, d in self.running.items() if n not in confirmed and worker_running(d)}
            still |= {n for n in self.remote if n not in confirmed}
            if not still or time.monotonic() >= deadline:
                return confirmed, {n: self._why(n, said.get(n), wait_s) for n in sorted(still)}
            time.sleep(FORGET_POLL_S)

    def _erased(self, ack: EraseAck) -> bool:
        return ack.state == "erased" and ack.sent_at >= self.since

    def _why(self, name: str, ack: EraseAck | UntrustedAck | None, wait_s: float) -> str:
        """Why camera ``name``, running or not on this host, is not known to have erased the id."""
        silent = (
            f"its worker did not say it erased it within {wait_s:g} s (--wait): the forget reaches it through "
            "Valkey, and it erases the id once it does; its log and /health say where it cannot"
        )
        if name in self.remote:
            silent = (
                f"its folder {self.remote[name]} is not on this host, and no word came from its worker within "
                f"{wait_s:g} s (--wait): its worker erases the id when it next runs (the fleet keeps the forget "
                f"{self.keep_s} s, bridge.forget_keep_s)"
            )
        if isinstance(ack, UntrustedAck):
            return f"{silent} (what Valkey holds in its name is not taken: {ack})"
        if ack is None or ack.sent_at < self.since:
            return silent
        return f"its worker has not erased it yet: {ack.detail}"


def _erase_stopped(camera_dir: Path, camera: str, global_id: int) -> Erased:
    """Erase ``global_id`` from a stopped camera's files, with the ids its last stop left in its
    forget-pending.json (``erase.PendingForgets``) first, in the same pass: counted in what it erased, and said
    to be (``Erased.pending``). The id goes into forget-pending.json before a file holding it is replaced, so
    that one that fails partway, or is killed or interrupted, leaves it there, and forget run again writes its
    ``forgotten`` line."""
    pending = PendingForgets(camera_dir)
    if not pending.path.is_file():
        return pending.erase_ids(camera, [global_id], set(), time.time())
    waiting = pending.add([global_id])
    erased = pending.erase(camera, time.time())
    erased.pending = len(set(waiting) - {global_id})
    return erased


def _erase_failure(e: OSError, camera_dir: Path) -> str:
    """What a failure to erase a camera's files was, and what to do about it: read and write failures each
    said as what they are."""
    problem = erase_problem(e, camera_dir)
    if isinstance(e, NotATable):
        return f"{problem}, then run forget again"
    if isinstance(e, UnreadableFile):
        return f"{problem}; run forget again once it can be read (a user who may read it, a sound disk)"
    return f"{problem}; run forget again as a user who can write them"


def _forget_in_valkey(bridge: Bridge, global_id: int, timeout_s: float) -> tuple[int, float]:
    """Send the forget to the fleet, what its cameras said of an earlier one cleared first; returns how many
    stored entries (track states, batches, log entries) held the id, and when it was sent by the fleet's clock
    (Valkey's time, which the cameras stamp what they say on: one host's clock lagging another's is nothing).
    ConfigError when the id was never handed out (nothing is sent)."""
    last = _last_global_id(bridge, timeout_s)
    if last is not None and global_id > last:  # a typo: every worker would raise its id floor past it
        raise ConfigError(
            f"forget: global id {global_id} was never handed out (fleet {bridge.cfg.fleet!r} has given "
            f"1..{last}); nothing was sent"
        )
    try:
        bridge.clear_erase_acks(global_id)
        sent = bridge.fleet_time()
    except BridgeError as e:
        raise bridge.refusal_or(e) from None
    bridge.forget(global_id)
    if not bridge.flush(timeout_s):
        raise bridge.unreachable(timeout_s)
    return bridge.stats.erased, sent


def _report_dir(dirs: dict[str, Path]) -> Path | None:
    """Where a fleet run of these cameras left its report (beside their folders); None without one."""
    present = [d for d in dirs.values() if d.is_dir()]
    out = _common_parent(present) if present else None
    return out if out is not None and (out / "report.json").is_file() else None


def _leave_out_of_report(dirs: dict[str, Path], global_id: int) -> Path | None:
    from daemon.fleet_report import leave_out_of_report

    out = _report_dir(dirs)
    return out / "report.md" if out is not None and leave_out_of_report(out, global_id) else None


def _report_again(dirs: dict[str, Path], earlier_runs: bool, global_id: int) -> Path | None:
    """Make the fleet report (report.json/.md, timeline.png) again where a fleet run left one, from the
    cameras' identity tables as they are now; the scores the run had are appended again, said to be the run's
    (made before ``global_id`` was forgotten). None when no report was there (or a ``fleet --report-dir``
    elsewhere: make it again with ``fleet --report-only``)."""
    from daemon.fleet_report import append_metrics, build_report, scores_before_forget

    out = _report_dir(dirs)
    if out is None:
        return None
    build_report({n: d for n, d in dirs.items() if d.is_dir()}, out, earlier_runs)
    scores = out / "fleet_metrics.txt"
    if scores.is_file():
        append_metrics(out / "report.md", scores.read_text(encoding="utf-8"), scores_before_forget(global_id))
    return out / "report.md"
