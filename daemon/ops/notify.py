"""systemd's notification protocol (``sd_notify``) without a dependency: READY, WATCHDOG, STATUS, STOPPING,
EXTEND_TIMEOUT_USEC.

Each call sends one datagram of ``KEY=value`` lines to the unix socket named by ``$NOTIFY_SOCKET``: a path, or
``@name`` for the abstract namespace. Without ``NOTIFY_SOCKET`` (not started by systemd, or ``Type=simple``)
every call does nothing. A failed send is logged (once per kind) and never raised: systemd going away must not
take the worker down. ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, when set, naming this process) give the
watchdog period that systemd expects ``WATCHDOG=1`` within.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

MAX_STATUS_CHARS = 400  # a STATUS= line is shown by `systemctl status`; keep it to one readable line


def socket_address(value: str) -> str | None:
    """The address to send to for a ``NOTIFY_SOCKET`` value (``@x`` -> abstract ``\\0x``); None if unusable."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:
        log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket (@name): not notifying", value)
    return None


def watchdog_period(env: Mapping[str, str]) -> float | None:
    """Seconds within which systemd wants ``WATCHDOG=1`` (None: no watchdog, or one meant for another pid)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6


def one_line(text: str) -> str:
    """``text`` safe as one STATUS= value: no newlines, bounded length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_STATUS_CHARS else flat[: MAX_STATUS_CHARS - 3] + "..."


class Notifier:
    """Sends notifications to systemd (a no-op when not supervised). Thread-safe."""

    def __init__(self, env: MutableMapping[str, str] | None = None, *, unset: bool = False) -> None:
        """Read ``NOTIFY_SOCKET`` / ``WATCHDOG_*`` from ``env`` (default ``os.environ``); ``unset`` removes them
        there, so child processes (an embedded Valkey) cannot notify in this service's name."""
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = watchdog_period(env)
        if unset:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(key, None)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True when sent (False: not supervised or it failed)."""
        if self.address is None or not fields:
            return False
        data = "".join(f"{k}={v}\n" for k, v in fields.items()).encode("utf-8")
        kind = next(iter(fields))
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self.address)
            except OSError as e:
                if kind not in self._failed:
                    self._failed.add(kind)
                    log.warning(
                        "systemd notification %s failed (%s); further failures are not logged", kind, e
                    )
                return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=one_line(status))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def status(self, text: str) -> bool:
        return self.send(STATUS=one_line(text))

    def extend_start(self, seconds: float, status: str) -> bool:
        """Ask systemd for ``seconds`` more to start, from now (EXTEND_TIMEOUT_USEC: it counts only past
        TimeoutStartSec, and must come again before those seconds are over), saying why (STATUS=)."""
        return self.send(EXTEND_TIMEOUT_USEC=str(max(1, round(seconds * 1e6))), STATUS=one_line(status))

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING="1", STATUS=one_line(status))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
