"""The embedded Valkey server (daemon/valkey_server.py): a real valkey-server process, started and ended here."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _ops import process_alive, wait_until

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
