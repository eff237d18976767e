"""The operations endpoint: ``GET /metrics`` (Prometheus text format, or OpenMetrics for a scraper whose Accept
header asks for it) and ``GET /health`` (JSON; 200 or 503);
``HEAD`` answers the same status and headers; a connection that sends no request within ``REQUEST_TIMEOUT_S`` is
closed. Each connection has a thread of its own, ``ops.max_connections`` at most: one over them is answered 503
at once and closed (idle connections held a thread each: 300 of them, a port scan or a stuck scraper that
reconnects, took the worker to 304 threads, over the unit's TasksMax=256).

A ``ThreadingHTTPServer`` on a daemon thread, so a slow scraper never touches the frame loop. Bind failures
(port in use, bad address, a name not resolved) are a ConfigError naming the setting to change.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from daemon.errors import ConfigError
from daemon.ops.health import Report

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often the server thread checks for shutdown (close() waits up to this)
REQUEST_TIMEOUT_S = 5.0  # a client that sends no request this long (a stuck scraper, a port scan) is dropped
_BUSY_BODY = b"busy: too many connections to /metrics and /health at once (ops.max_connections)\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S  # each connection has a thread: one that never sends must not keep it

    def do_GET(self) -> None:
        self._reply(*self._answer())

    def do_HEAD(self) -> None:
        """What GET would answer, without the body (health checkers that probe with HEAD)."""
        self._reply(*self._answer(), with_body=False)

    def _answer(self) -> tuple[int, str, bytes]:
        path = urlsplit(self.path).path.rstrip("/") or "/"  # the query left out; an absolute URL's path
        if path == "/metrics":
            body, content_type = self.server.metrics(self.headers.get("Accept", ""))
            return 200, content_type, body
        if path == "/health":
            report = self.server.health()
            return report.http_status, "application/json", json.dumps(report.body).encode("utf-8")
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /health\n"

    def _reply(self, status: int, content_type: str, body: bytes, with_body: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ops http %s: " + format, self.client_address[0], *args)


Exposition = Callable[[str], tuple[bytes, str]]  # the scraper's Accept header -> (body, its content type)


class _Server(ThreadingHTTPServer):
    """A thread per connection, ``connections`` at most: one more is answered 503 and closed at once."""

    daemon_threads = True

    def __init__(
        self,
        family: socket.AddressFamily,
        address: tuple[Any, ...],
        metrics: Exposition,
        health: Callable[[], Report],
        connections: int,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.address_family = family
        self._slots = threading.BoundedSemaphore(connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("ops http %s: refused, every connection slot is taken", client_address[0])
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (none left to start): the slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 and close, on the accepting thread: a few bytes into a new socket's empty buffer, no
        wait."""
        try:
            request.sendall(_BUSY)
        except OSError as e:  # the client is gone already: nothing to tell it
            log.debug("ops http: could not refuse a connection: %s", e)
        self.shutdown_request(request)


def bind_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The family and socket address to bind for ``host`` (an address, or a name: its first IPv4 address, else
    its first IPv6 one) and ``port``; socket.gaierror when the name is not resolved."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    found.sort(key=lambda info: info[0] != socket.AF_INET)  # stable: the resolver's order within a family
    family, _, _, _, address = found[0]
    return family, address


class OpsServer:
    """Serves /metrics and /health on ``host:port`` (port 0: any free one), to ``connections`` clients at once
    (``ops.max_connections``), until ``close``."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Exposition,
        health: Callable[[], Report],
        what: str,
        connections: int,
    ) -> None:
        try:
            self._server = _Server(*bind_address(host, port), metrics, health, connections)
        except OSError as e:
            raise ConfigError(
                f"{what}: cannot serve /metrics and /health on {host_port(host, port)} ({e.strerror or e}); "
                f"{_bind_hint(e)}"
            ) from e
        self._thread = threading.Thread(target=self._serve, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{host_port(str(self._server.server_address[0]), self.port)}"

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=POLL_S)

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(2.0)
        self._server.server_close()


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``[::1]:9400``), as a URL writes it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_hint(error: OSError) -> str:
    """What to change when the /metrics and /health address cannot be bound."""
    if isinstance(error, socket.gaierror):
        return "ops.host is neither an address nor a name this host resolves"
    if error.errno == errno.EADDRINUSE:
        return "another camera on this host may use it: give each camera its own port (ops.camera_ports)"
    if error.errno == errno.EADDRNOTAVAIL:
        return "ops.host is not an address of this host (127.0.0.1, 0.0.0.0 or one of its own)"
    return "check ops.host and the camera's port (ops.port, ops.camera_ports)"
