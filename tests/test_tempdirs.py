"""daemon/tempdirs.py with real processes and real flocks: an owner holds its folder's lock from before the lock
file has its name until the folder is gone, a cleaner holds it while it removes one, and what a cleaner leaves
(links, other users' folders, folders it cannot remove whole) and counts."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ops import wait_until

from daemon.tempdirs import (
    OWNER_LOCK,
    UNLOCKED_AGE_S,
    StaleFolders,
    a_process_works_in,
    make_owned_folder,
    remove_stale_folders,
)

PREFIX = "owned-"

# a process held at one point of tempdirs (``hold``: a function of its module, or of os or shutil as it calls
# them) until the file ``go`` exists; it makes the file ``held`` on getting there, then prints what it did
_HELD = """
import os, shutil, sys, time
from pathlib import Path
from daemon import tempdirs

what, parent, held, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])

def holding(real, before):
    def call(*args, **kwargs):
        if before:
            held.touch()
            while not go.exists():
                time.sleep(0.02)
        out = real(*args, **kwargs)
        if not before:
            held.touch()
            while not go.exists():
                time.sleep(0.02)
        return out
    return call

if what == "naming":  # an owner that has just given its lock file its name
    os.rename = holding(os.rename, before=False)
    print(tempdirs.make_owned_folder(parent, "owned-").path, flush=True)
elif what == "closing":  # an owner about to remove its folder
    folder = tempdirs.make_owned_folder(parent, "owned-")
    print(folder.path, flush=True)
    shutil.rmtree = holding(shutil.rmtree, before=True)
    folder.close()
else:  # a cleaner about to remove a stale folder (reading its size first)
    tempdirs._bytes_in = holding(tempdirs._bytes_in, before=True)
    print(tempdirs.remove_stale_folders(parent, "owned-").folders, flush=True)
"""


def _held(what: str, parent: Path) -> tuple[subprocess.Popen[str], Path]:
    """A real process running ``_HELD``'s ``what``, once it is held there; and its go file."""
    held, go = parent.parent / f"{what}.held", parent.parent / f"{what}.go"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-c", _HELD, what, str(parent), str(held), str(go)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        wait_until(lambda: held.exists() or proc.poll() is not None, 30.0, f"the {what} process held")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    assert proc.poll() is None, f"the {what} process ended (exit {proc.returncode}) before it was held"
    return proc, go


def _lock_taken(folder: Path) -> bool:
    """Whether a process holds ``folder``'s lock (its lock file flocked)."""
    fd = os.open(folder / OWNER_LOCK, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _left(parent: Path) -> Path:
    """A folder whose owner is gone (its lock let go), holding a file of 1000 bytes."""
    folder = make_owned_folder(parent, PREFIX)
    (folder.path / "data").write_bytes(b"d" * 1000)
    os.close(folder.lock_fd)
    return folder.path


def _old(folder: Path) -> Path:
    os.utime(folder, (time.time() - UNLOCKED_AGE_S - 60,) * 2)
    return folder


def test_an_owner_holds_its_lock_as_soon_as_the_lock_file_has_its_name(tmp_path: Path) -> None:
    """An owner held right after naming its lock file (os.rename): its lock is held, and a cleaner keeps the
    folder. Taken after the name, a cleaner would find the lock free in between and remove a live owner's folder."""
    parent = tmp_path / "parent"
    parent.mkdir()
    owner, go = _held("naming", parent)
    try:
        (folder,) = parent.iterdir()
        assert _lock_taken(folder)
        assert remove_stale_folders(parent, PREFIX) == StaleFolders() and (folder / OWNER_LOCK).is_file()
        go.touch()
        out, _ = owner.communicate(timeout=30)
        assert owner.returncode == 0 and out.strip() == str(folder)
    finally:
        owner.kill()
        owner.wait()


def test_an_owner_removing_its_folder_holds_its_lock_until_it_is_gone(tmp_path: Path) -> None:
    """An owner held as it starts removing its folder (close): its lock is still held, a cleaner keeps the folder
    and counts nothing; then the owner removes it."""
    parent = tmp_path / "parent"
    parent.mkdir()
    owner, go = _held("closing", parent)
    try:
        (folder,) = parent.iterdir()
        assert _lock_taken(folder)
        assert remove_stale_folders(parent, PREFIX) == StaleFolders() and folder.is_dir()
        go.touch()
        owner.communicate(timeout=30)
        assert owner.returncode == 0 and not folder.exists()
    finally:
        owner.kill()
        owner.wait()


def test_a_cleaner_holds_the_lock_of_the_folder_it_removes(tmp_path: Path) -> None:
    """A cleaner held as it starts removing a stale folder: it holds that folder's lock, so a second cleaner at
    the same time keeps it and counts nothing; the first removes it and counts it: one removal, not two."""
    parent = tmp_path / "parent"
    parent.mkdir()
    folder = _left(parent)
    cleaner, go = _held("cleaning", parent)
    try:
        assert _lock_taken(folder)
        assert remove_stale_folders(parent, PREFIX) == StaleFolders() and folder.is_dir()
        go.touch()
        out, _ = cleaner.communicate(timeout=30)
        assert cleaner.returncode == 0 and out.strip() == "1" and not folder.exists()
    finally:
        cleaner.kill()
        cleaner.wait()


def test_a_stale_folder_is_counted_by_the_bytes_of_its_files(tmp_path: Path) -> None:
    """1000 bytes in the folder, 500 in a folder inside it; a link (its own size is that of the path it holds) is
    not a file's bytes."""
    folder = _left(tmp_path)
    (folder / "sub").mkdir()
    (folder / "sub" / "more").write_bytes(b"m" * 500)
    (folder / "link").symlink_to(folder / "data")
    assert remove_stale_folders(tmp_path, PREFIX) == StaleFolders(1, 1500)
    assert not folder.exists()


def test_a_link_named_as_a_stale_folder_is_left_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A link named ``<prefix>...`` to a stale folder elsewhere (its lock free; and an old one without a lock):
    neither the link nor the folder is touched, and nothing is logged."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    locked, unlocked = _left(elsewhere), elsewhere / "unlocked"
    unlocked.mkdir()
    _old(unlocked)
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / f"{PREFIX}link").symlink_to(locked)
    (parent / f"{PREFIX}link-unlocked").symlink_to(unlocked)
    with caplog.at_level(logging.INFO, logger="daemon.tempdirs"):
        assert remove_stale_folders(parent, PREFIX) == StaleFolders()
    assert not caplog.records, caplog.text
    assert (locked / "data").is_file() and unlocked.is_dir() and (parent / f"{PREFIX}link").is_symlink()


def test_a_folder_whose_lock_file_is_a_link_is_left(tmp_path: Path) -> None:
    """A folder named as ours whose lock file is a link (to a file nobody locks): not a folder this module made,
    left, and the file the link names untouched."""
    folder = tmp_path / f"{PREFIX}linked"
    folder.mkdir()
    target = tmp_path / "somewhere.lock"
    target.write_text("kept")
    (folder / OWNER_LOCK).symlink_to(target)
    assert remove_stale_folders(tmp_path, PREFIX) == StaleFolders()
    assert (folder / OWNER_LOCK).is_symlink() and target.read_text() == "kept"


def test_an_owned_folder_whose_lock_cannot_be_made_is_not_left(tmp_path: Path) -> None:
    """A parent folder so deep that its new folder's path fits in PATH_MAX (4096 bytes) and its lock file's does
    not: make_owned_folder makes the folder, cannot make the lock file (ENAMETOOLONG) and raises, leaving no
    folder behind (a cleaner would take it for one made before owners locked theirs, and keep it a day)."""
    parent = tmp_path
    while (
        len(str(parent)) < 4065
    ):  # 4065-4072 bytes: the folder's path 15 more, its lock file's 16 more again
        parent /= "d" * min(200, 4072 - len(str(parent)) - 1)
    parent.mkdir(parents=True)
    with pytest.raises(OSError, match="File name too long"):
        make_owned_folder(parent, PREFIX)
    assert list(parent.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a folder of another user can only be made as root")
def test_another_users_stale_folder_is_left(tmp_path: Path) -> None:
    """A folder of another user (nobody, uid 65534), old and without a lock: left."""
    folder = tmp_path / f"{PREFIX}theirs"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    _old(folder)
    assert remove_stale_folders(tmp_path, PREFIX) == StaleFolders() and folder.is_dir()


@contextlib.contextmanager
def _undeletable(file: Path) -> Iterator[None]:
    """``file`` cannot be removed for the block: its folder not writable, or, as root (who may write anyway),
    the file immutable (chattr +i; the test is skipped where the file system does not take it)."""
    if os.geteuid() != 0:
        file.parent.chmod(0o500)
        try:
            yield
        finally:
            file.parent.chmod(0o700)
        return
    if subprocess.run(["chattr", "+i", str(file)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not taken here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(file)], check=True)


def test_a_stale_folder_that_cannot_be_removed_whole_is_named_and_not_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _left(tmp_path)
    (folder / "sub").mkdir()
    stuck = folder / "sub" / "stuck"
    stuck.write_bytes(b"s")
    with _undeletable(stuck), caplog.at_level(logging.WARNING, logger="daemon.tempdirs"):
        assert remove_stale_folders(tmp_path, PREFIX) == StaleFolders()
        assert stuck.is_file()
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"cannot remove the left-over temporary folder {folder} whole: {stuck}: "), said


def test_stale_folders_in_a_parent_that_is_not_there_are_none(tmp_path: Path) -> None:
    assert remove_stale_folders(tmp_path / "none", PREFIX) == StaleFolders()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="working folders are read in /proc")
def test_a_process_working_in_a_folder_is_found_through_a_link_to_it(tmp_path: Path) -> None:
    """A process whose working folder is ``real``: found when the folder is named through a link to its parent
    (as a TMPDIR that is a link names it); not for the parent, nor for a folder inside it."""
    real = tmp_path / "real" / "work"
    (real / "inside").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=real)
    try:
        wait_until(
            lambda: os.readlink(f"/proc/{worker.pid}/cwd") == os.path.realpath(real), 10.0, "the worker's cwd"
        )
        assert a_process_works_in(tmp_path / "link" / "work")
        assert not a_process_works_in(tmp_path / "link") and not a_process_works_in(real / "inside")
    finally:
        worker.kill()
        worker.wait()
