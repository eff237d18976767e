"""A camera folder's lock: one writer of ``<output.dir>/<camera>/`` at a time.

The camera's worker holds it from before it writes anything there until it ends (``worker_locked``); a second
worker for the folder is refused at once, naming the one that holds it. ``reid-daemon forget`` holds it while it
erases a stopped camera's files, and ``reid-daemon fleet`` while it readies a folder (``writer_locked``): a worker
starting meanwhile waits for them (``WRITER_WAIT_S`` at most, logged). The lock is ``gallery.holding``'s (flock on
``CAMERA_LOCK`` in the folder, its holder's pid, host and command written in it); it goes with its process, however
that ends. flock is this host's: a folder shared with another host is told running by its status.json there.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from daemon.errors import ConfigError, DataError, LockTimeout
from daemon.gallery import Holder, holding, lock_holder

CAMERA_LOCK: Final = ".reid-daemon-camera.lock"
WORKER: Final = "reid-daemon run"  # what a worker's holder record begins with
WRITER_WAIT_S: Final = 900.0
"""How long a worker waits at start for a ``forget`` or ``fleet`` writing its camera's folder (a forget holds a
stopped camera's lock for its erase alone, minutes where its earlier-* folders are large); then a LockTimeout."""


WAIT_SAY_EVERY_S: Final = 10.0
"""How often a worker waiting at start for its folder's lock says so again (``worker_locked``'s ``say``: its
/health, and systemd's STATUS= and EXTEND_TIMEOUT_USEC, ``ops.service``); at once too when the holder changes."""
LOCK_WAIT: Final = "the camera folder's lock, held by "  # what such a worker says it waits for begins so


def lock_file(folder: Path) -> Path:
    return folder / CAMERA_LOCK


def is_worker(holder: Holder | None) -> bool:
    """Whether ``holder`` is a camera's worker (not a ``forget`` or ``fleet`` writing its folder for a moment)."""
    return holder is not None and holder.who.startswith(WORKER)


def held_by_worker(folder: Path) -> bool:
    """Whether a worker of this host holds camera ``folder``'s lock now (one whose record is not written yet
    counts: it has just taken it)."""
    held, holder = lock_holder(lock_file(folder))
    return held and (holder is None or is_worker(holder))


class StoppedWaiting(Exception):
    """A worker asked to stop while it waited at start for its folder's lock (``worker_locked``'s ``stopped``):
    it holds nothing, and has written nothing there."""


class _Waiting:
    """A worker's start while a ``forget`` or ``fleet`` holds its ``folder``'s lock: says what it waits for (a
    line beginning with LOCK_WAIT, naming the holder) at once, when the holder changes, and every
    WAIT_SAY_EVERY_S; whether to wait on (not once ``stopped``)."""

    def __init__(
        self, folder: Path, say: Callable[[str], None] | None, stopped: Callable[[], bool] | None
    ) -> None:
        self.folder, self.say, self.stopped = folder, say, stopped
        self._holder: Holder | None = None
        self._next = -float("inf")

    def __call__(self, holder: Holder | None) -> bool:
        if self.stopped is not None and self.stopped():
            return False
        now = time.monotonic()
        if self.say is None or (holder == self._holder and now < self._next):
            return True
        self._holder, self._next = holder, now + WAIT_SAY_EVERY_S
        by = "a process that has not recorded itself yet" if holder is None else str(holder)
        self.say(
            f"{LOCK_WAIT}{by}, which writes {self.folder} ({WRITER_WAIT_S:g} s at most; lock file "
            f"{lock_file(self.folder)})"
        )
        return True


@contextlib.contextmanager
def worker_locked(
    folder: Path,
    name: str,
    who: str = "",
    say: Callable[[str], None] | None = None,
    stopped: Callable[[], bool] | None = None,
) -> Iterator[None]:
    """Hold camera ``name``'s ``folder`` lock (the folder made) for its worker's run (``who``: by default the
    worker's record, ``reid-daemon run --camera <name>``): waited for while a ``forget`` or ``fleet`` holds it
    (``WRITER_WAIT_S`` at most: LockTimeout naming it), saying so meanwhile through ``say`` (``_Waiting``), and
    StoppedWaiting once ``stopped`` says so; ConfigError at once naming the folder and the worker that holds it
    (one worker a camera), or where the lock file cannot be made."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way, a folder the user may not write
        where = e.filename or folder
        raise ConfigError(f"cameras.{name}.output.dir: cannot write {where}: {e.strerror or e}") from e
    with contextlib.ExitStack() as stack:
        try:
            waiting = _Waiting(folder, say, stopped)
            stack.enter_context(
                writer_locked(folder, name, who or f"{WORKER} --camera {name}", waiting=waiting)
            )
        except LockTimeout as e:
            if not isinstance(e.holder, Holder) or not is_worker(e.holder):
                if stopped is not None and stopped():
                    raise StoppedWaiting(
                        f"camera {name}: stopped while waiting for {lock_file(folder)}"
                    ) from None
                raise
            raise ConfigError(
                f"camera {name}: its folder {folder} is being written by another worker, {e.holder} (lock file "
                f"{lock_file(folder)}); one worker a camera: stop that one first (two units of one camera, or a "
                "`reid-daemon run` beside its service?)"
            ) from None
        except DataError as e:
            raise ConfigError(f"cameras.{name}.output.dir: {e}") from e
        yield


def writer_locked(
    folder: Path,
    name: str,
    who: str,
    wait_s: float = WRITER_WAIT_S,
    waiting: Callable[[Holder | None], bool] | None = None,
) -> contextlib.AbstractContextManager[None]:
    """Camera ``name``'s ``folder`` lock for a command that writes it while its worker is stopped (``who``:
    ``reid-daemon forget``, ``reid-daemon fleet``): waited for while another such command holds it (``wait_s``
    at most; ``waiting`` told its holder at each try meanwhile, and whether to wait on: else a LockTimeout at
    once); a LockTimeout whose ``holder`` ``is_worker`` at once where a worker runs; DataError where the lock
    file cannot be made."""

    def wait_for(holder: Holder | None) -> bool:
        return not is_worker(holder) and (waiting is None or waiting(holder))

    return holding(lock_file(folder), wait_s, f"camera {name}'s folder {folder}", who, wait_for=wait_for)
