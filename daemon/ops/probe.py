"""A Valkey liveness probe for fleet workers: PING the fleet's server every ``ops.valkey_probe_s`` seconds.

On its own thread with its own connection (the bridge's timeouts, AUTH and TLS), so a Valkey that hangs
delays neither the frame loop nor the watchdog. Results go to a callback: the round trip in seconds, or the
error text when it failed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from daemon.bridge import connect, valkey_errors
from daemon.config import BridgeConfig

log = logging.getLogger(__name__)

ProbeResult = Callable[[float | None, str | None], None]


class ValkeyProbe:
    """PINGs ``url`` periodically; ``on_result(rtt_s, None)`` or ``on_result(None, error)`` after each try."""

    def __init__(
        self, cfg: BridgeConfig, url: str, password: bytes | None, every_s: float, on_result: ProbeResult
    ) -> None:
        self._cfg = cfg
        self._url = url
        self._password = password
        self._every = every_s
        self._on_result = on_result
        self._client: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ops-valkey-probe", daemon=True)

    def start(self) -> ValkeyProbe:
        self._thread.start()
        return self

    def ping(self) -> tuple[float | None, str | None]:
        """One PING: (round trip, None) or (None, what failed). The ACL user need not have PING: Valkey refusing
        the command has answered (the bridge's own rights are checked when it starts)."""
        import valkey.exceptions as ve

        try:
            if self._client is None:
                self._client = connect(self._cfg, self._url, self._password)
            t0 = time.perf_counter()
            with contextlib.suppress(ve.NoPermissionError):  # an ACL user without PING: answered all the same
                self._client.ping()
            return time.perf_counter() - t0, None
        except valkey_errors() as e:
            self._drop()
            return None, f"PING failed: {e}"

    def _run(self) -> None:
        while not self._stop.is_set():
            rtt, error = self.ping()
            self._on_result(rtt, error)
            self._stop.wait(self._every)
        self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as e:  # a broken connection may fail to close; it is dropped either way
                log.debug("valkey probe: closing a broken client: %s", e)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._cfg.socket_timeout_s + self._cfg.connect_timeout_s + 1.0)
