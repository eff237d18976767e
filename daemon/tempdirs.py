"""Temporary folders whose owner holds a lock on them for its life, and the removal of those a killed owner left.

A folder made by ``make_owned_folder`` holds the lock file ``OWNER_LOCK``, flocked by its owner from before the
file has that name until the folder is gone (and by every process the owner hands the descriptor to: the
embedded Valkey's server). The lock goes with the processes, however they end (SIGKILL, a power cut), so a folder
whose lock can be taken is one no process uses any more: ``remove_stale_folders`` removes it, holding that lock
(two cleaners never both remove one, and no owner can be at work in it). One whose lock is held is in use and
kept. A folder with no lock file was made before owners locked their folders, or its owner was killed in the
moment between making it and naming its lock: nothing tells whether its owner lives, so it is removed only once
``UNLOCKED_AGE_S`` old and where the caller's ``in_use`` says nobody uses it.

Files earlier releases wrote through one fixed temporary name, without a lock (a tracklet cache's
``tracklets-<key>.tmp.npz``, a model manifest's ``.manifest.json.tmp``, a BoxMOT download's ``.<name>.part``),
are left for good by one killed before it renamed them; ``remove_old_files`` removes those by the same rule as a
folder without its lock file: once ``UNLOCKED_AGE_S`` old (nothing tells whether an older process still writes
one).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

OWNER_LOCK: Final = ".owner.lock"
"""The lock file in an owned folder; its owner holds an exclusive flock on it for the folder's life."""

UNLOCKED_AGE_S: Final = 86_400.0
"""How long ago a folder without its lock file must have been last changed for a cleaner to remove it: a day,
longer than anything an owner of one made before owners locked them did in it (a model fetch's tool runs for
PIP_TIMEOUT_S, 30 minutes, at most; a live embedded Valkey's folder is told apart by its server's working
folder, ``in_use``); the moment between making a folder and naming its lock is microseconds."""


@dataclass(frozen=True, slots=True)
class StaleFolders:
    """Folders removed as left over by owners gone: how many, and the bytes of their files."""

    folders: int = 0
    bytes: int = 0

    def __add__(self, other: StaleFolders) -> StaleFolders:
        return StaleFolders(self.folders + other.folders, self.bytes + other.bytes)

    def left_in(self, parent: Path) -> str:
        """What a cleaner logs of these, removed from ``parent``."""
        s = "s" if self.folders != 1 else ""
        return (
            f"removed {self.folders} temporary folder{s} ({self.bytes} bytes) left in {parent} by a process "
            "that ended without removing them (killed)"
        )


@dataclass(frozen=True, slots=True)
class Leftovers:
    """Temporary files removed as left over (``remove_files``): how many, and their bytes."""

    files: int = 0
    bytes: int = 0

    def __add__(self, other: Leftovers) -> Leftovers:
        return Leftovers(self.files + other.files, self.bytes + other.bytes)

    def text(self) -> str:
        return f"{self.files} temporary file{'s' if self.files != 1 else ''} ({self.bytes} bytes)"

    def left_in(self, folder: Path, by: str = "a writer killed before it renamed them") -> str:
        """What a cleaner logs of these, removed from ``folder``, left there ``by`` whom."""
        return f"removed {self.text()} left in {folder} by {by}"


EARLIER_RELEASE = "an earlier release that ended before renaming them (killed)"  # remove_old_files' leftovers


@dataclass(slots=True)
class OwnedFolder:
    """A temporary folder and the descriptor of its lock file, held (flocked) until ``close``."""

    path: Path
    lock_fd: int

    def close(self) -> None:
        """Remove the folder, then let its lock go (in this order: no cleaner takes a folder still removed)."""
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)
        self.lock_fd = -1


def make_owned_folder(parent: Path | None, prefix: str) -> OwnedFolder:
    """A new folder ``<parent>/<prefix><random>`` (``parent`` None: the system's temporary folder), its lock
    file flocked by this process before it takes the name ``OWNER_LOCK``: a cleaner never finds that lock free
    while its owner lives. The descriptor is not inherited unless handed on (``pass_fds``)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        fd = os.open(path / f"{OWNER_LOCK}.new", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file nobody else has opened yet
            os.rename(path / f"{OWNER_LOCK}.new", path / OWNER_LOCK)
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return OwnedFolder(path, fd)


@contextlib.contextmanager
def owned_folder(parent: Path | None, prefix: str) -> Iterator[Path]:
    """``make_owned_folder``'s folder inside the block, removed (and its lock let go) after it."""
    folder = make_owned_folder(parent, prefix)
    try:
        yield folder.path
    finally:
        folder.close()


def remove_stale_folders(
    parent: Path | None, prefix: str, in_use: Callable[[Path], bool] | None = None
) -> StaleFolders:
    """Remove the folders named ``<prefix>...`` in ``parent`` (None: the system's temporary folder) that this
    user owns and no process uses any more: their lock (``OWNER_LOCK``) can be taken; without a lock file,
    once ``UNLOCKED_AGE_S`` old and not ``in_use``. Links and other users' folders are left; a folder that
    cannot be removed whole is logged."""
    where = Path(tempfile.gettempdir() if parent is None else parent)
    removed = StaleFolders()
    try:
        entries = os.scandir(where)
    except OSError:  # none there, or not to be read
        return removed
    with entries:
        mine = [
            Path(e.path)
            for e in entries
            if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False) and _owned(e)
        ]
    for folder in mine:
        removed += _remove_if_stale(folder, in_use)
    return removed


def _owned(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.stat(follow_symlinks=False).st_uid == os.getuid()
    except OSError:
        return False


def _remove_if_stale(folder: Path, in_use: Callable[[Path], bool] | None) -> StaleFolders:
    try:
        fd = os.open(folder / OWNER_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _remove_unlocked(folder, in_use)
    except OSError:  # a link, or not to be read: not a folder this module made
        return StaleFolders()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its owner (or its server) lives
        os.close(fd)
        return StaleFolders()
    try:
        return _remove(folder)
    finally:
        os.close(fd)


def _remove_unlocked(folder: Path, in_use: Callable[[Path], bool] | None) -> StaleFolders:
    try:
        changed = folder.stat().st_mtime
    except OSError:  # removed meanwhile
        return StaleFolders()
    if changed >= time.time() - UNLOCKED_AGE_S or (in_use is not None and in_use(folder)):
        return StaleFolders()
    return _remove(folder)


def _remove(folder: Path) -> StaleFolders:
    size = _bytes_in(folder)
    failed: list[str] = []

    def note(_f: object, path: str, exc: tuple[type[BaseException], BaseException, object]) -> None:
        if not isinstance(exc[1], FileNotFoundError):  # gone meanwhile is removed
            failed.append(f"{path}: {exc[1]}")

    shutil.rmtree(folder, onerror=note)
    if failed:
        logger.warning("cannot remove the left-over temporary folder %s whole: %s", folder, failed[0])
        return StaleFolders()
    return StaleFolders(1, size)


def _bytes_in(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def remove_old_files(folder: Path, named: Callable[[str], object]) -> Leftovers:
    """Remove the plain files of this user in ``folder`` (not in its sub-folders) whose names ``named`` takes,
    once last written ``UNLOCKED_AGE_S`` ago: the temporary files earlier releases wrote through one fixed name
    without a lock, left for good by one killed before it renamed them (logged ``left_in(folder,
    EARLIER_RELEASE)``). Nothing tells whether an older process still writes one (an older release's run beside
    this one), so the age rule of folders without their lock file applies: its writer changes it all along and
    renames it in far less than a day."""
    return remove_files(folder, named, time.time() - UNLOCKED_AGE_S, own_only=True)


def remove_files(
    folder: Path, named: Callable[[str], object], before: float | None = None, own_only: bool = False
) -> Leftovers:
    """Remove the plain files in ``folder`` (not in its sub-folders) whose names ``named`` takes: with
    ``before`` (a ``time.time()``), only those last written before it; with ``own_only``, only this user's.
    Links and folders are left; a folder that cannot be listed has none removed; a file that cannot be removed
    is logged and left; one gone meanwhile (renamed by its writer, removed by another cleaner) is no matter."""
    removed = Leftovers()
    try:
        entries = os.scandir(folder)
    except OSError:  # none there, or not to be read
        return removed
    with entries:
        for entry in entries:
            if named(entry.name):
                removed += _remove_file(entry, before, own_only)
    return removed


def _remove_file(entry: os.DirEntry[str], before: float | None, own_only: bool) -> Leftovers:
    try:
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or (own_only and st.st_uid != os.getuid()):
            return Leftovers()
        if before is not None and st.st_mtime >= before:
            return Leftovers()
        os.unlink(entry.path)
    except FileNotFoundError:  # renamed by its writer, or removed by another cleaner, meanwhile
        return Leftovers()
    except OSError as e:
        logger.warning("cannot remove the left-over temporary file %s: %s", entry.path, e.strerror or e)
        return Leftovers()
    return Leftovers(1, st.st_size)


def a_process_works_in(folder: Path) -> bool:
    """Whether a process (of this user: others' cannot be read) has ``folder`` as its working folder (as an
    embedded Valkey server, or a YOLO export, has its own): ``remove_stale_folders``'s ``in_use`` for folders
    whose owners, made before owners locked them, started such a process there. True where that cannot be told
    (no /proc)."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True
    target = os.path.realpath(folder)
    for pid in pids:
        with contextlib.suppress(OSError):  # gone meanwhile, or another user's
            if os.readlink(f"/proc/{pid}/cwd") == target:
                return True
    return False
