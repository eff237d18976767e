"""The embedded Valkey server (daemon/valkey_server.py): a real valkey-server process, started and ended here."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ops import process_alive, wait_until

from daemon.tempdirs import UNLOCKED_AGE_S
from daemon.valkey_server import EmbeddedValkey, EmbeddedValkeyError

PARENT = """
import sys, time
from daemon.valkey_server import EmbeddedValkey
server = EmbeddedValkey("tcp").start()
print(server.pid, server.url, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="dying with the parent is Linux's PR_SET_PDEATHSIG"
)
def test_server_dies_with_a_parent_killed_by_sigkill() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid_text, url = parent.stdout.readline().split()
        pid = int(pid_text)
        assert process_alive(pid)
        parent.kill()  # SIGKILL: no atexit, no finally, nothing of the parent's runs
        parent.wait()
        wait_until(lambda: not process_alive(pid), 10.0, f"valkey-server {pid} ({url}) gone with its parent")
    finally:
        parent.kill()
        parent.wait()


def test_settings_reach_the_server_and_it_keeps_nothing_on_disk() -> None:
    with EmbeddedValkey(config={"maxmemory": "100mb", "maxmemory-policy": "noeviction"}) as server:
        client = server.client()
        try:
            assert client.config_get("maxmemory") == {"maxmemory": str(100 * 1024 * 1024)}
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
        finally:
            client.close()
        assert server.running()
    assert not server.running()


def test_kill_and_start_again_on_the_same_port_empty() -> None:
    with EmbeddedValkey("tcp") as server:
        port = server.port
        client = server.client()
        client.set("k", "v")
        client.close()
        server.kill()
        assert not server.running()
        server.start()
        assert server.port == port
        client = server.client()
        try:
            assert client.get("k") is None
        finally:
            client.close()


def test_a_server_that_cannot_start_names_why() -> None:
    server = EmbeddedValkey(config={"maxmemory-policy": "no-such-policy"}, start_timeout_s=5.0)
    try:
        with pytest.raises(EmbeddedValkeyError, match="maxmemory-policy"):
            server.start()
        assert server.pid is None
    finally:
        server.close()


OWNER = """
import sys, time
from daemon.valkey_server import EmbeddedValkey
server = EmbeddedValkey().start()
print(server.pid, server.socket_path.parent, flush=True)
time.sleep(120)
"""


def _owner() -> tuple[subprocess.Popen[str], int, Path]:
    """A real process owning an embedded server: it, the server's pid and the server's folder."""
    proc = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid_text, folder = proc.stdout.readline().split()
    return proc, int(pid_text), Path(folder)


@pytest.fixture
def private_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary folder of its own for this test's embedded servers and their owners (TMPDIR, and this
    process's tempfile.tempdir): any other process's embedded server starting in the system's (another test
    run on the machine) removes the stale folders of this user it finds there, so the one a test means its own
    server to remove could go in that process's start, and be said in that process's log, not the test's."""
    folder = Path(tempfile.mkdtemp(prefix="valkey-test-"))  # short: a unix socket's path is 107 bytes at most
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _another_server_starts() -> None:
    EmbeddedValkey().close()  # its start looks for stale folders


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a server's working folder is read in /proc")
def test_a_killed_owners_folder_is_removed_once_neither_it_nor_its_server_lives(
    caplog: pytest.LogCaptureFixture, private_tmp: Path
) -> None:
    """Regression: the server's folder (/tmp/reid-valkey-*: socket, config, log) was removed only by close(), so
    an owner killed with SIGKILL left it for good, and they piled up. A new server removes the stale ones of
    this user: never one whose owner lives, nor one whose owner was killed while its server still runs (here
    held stopped: its SIGTERM waits); once both are gone, it goes, and the new server says so."""
    owner, server, folder = _owner()
    assert folder.parent == private_tmp
    try:
        assert (folder / "valkey.sock").exists()
        _another_server_starts()
        assert folder.is_dir()  # its owner lives
        os.kill(server, signal.SIGSTOP)
        owner.kill()  # SIGKILL: no close(), no finally
        owner.wait()
        _another_server_starts()
        assert folder.is_dir() and process_alive(server)  # its server lives
        os.kill(server, signal.SIGCONT)  # its parent's death signal now ends it
        wait_until(lambda: not process_alive(server), 10.0, f"valkey-server {server} gone with its parent")
        with caplog.at_level(logging.INFO, logger="daemon.valkey_server"):
            _another_server_starts()
        assert not folder.exists()
        said = [r.getMessage() for r in caplog.records if "temporary folder" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("removed ") and tempfile.gettempdir() in said[0], said
    finally:
        owner.kill()
        owner.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a server's working folder is read in /proc")
def test_a_folder_made_before_owners_locked_theirs_goes_once_a_day_old_and_unused() -> None:
    """A folder with no lock file (made before this version, its owner's life unknown) is removed only once
    UNLOCKED_AGE_S old and no process works in it (a server of an earlier version does, in its own)."""
    made = [Path(tempfile.mkdtemp(prefix="reid-valkey-")) for _ in range(3)]
    young, old, worked_in = made
    for each in (old, worked_in):
        os.utime(each, (time.time() - UNLOCKED_AGE_S - 60,) * 2)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=worked_in)
    try:
        wait_until(lambda: os.readlink(f"/proc/{worker.pid}/cwd") == str(worked_in), 10.0, "the worker's cwd")
        _another_server_starts()
        assert young.is_dir() and worked_in.is_dir() and not old.exists()
    finally:
        worker.kill()
        worker.wait()
        for each in made:
            shutil.rmtree(each, ignore_errors=True)
