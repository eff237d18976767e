"""Helpers of the operations tests: a fake systemd notify socket, a fake source, a paced looping camera, and
reading a worker's /health and /metrics."""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _video import make_video
from prometheus_client.parser import text_string_to_metric_families

from daemon.config import (
    CameraConfig,
    EmbedderConfig,
    FleetConfig,
    GroundTruthDetectorConfig,
    OpsConfig,
    OutputConfig,
    Settings,
    SourceConfig,
    single_camera_settings,
)
from daemon.sources import SourceStats


class NotifySocket:
    """A fake systemd: a bound unix datagram socket collecting (monotonic time, fields) per message, in the
    order they were sent. The time is when the message was sent: the kernel's stamp (SO_TIMESTAMPNS, Linux),
    not when this socket's thread, late on a loaded host, read it (that only where the stamp is not had)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.stamped = _stamp_sent(self.sock)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((_sent_at(ancillary), fields))

    def times(self, key: str) -> list[float]:
        return [t for t, m in list(self.messages) if key in m]

    def values(self, key: str) -> list[str]:
        return [m[key] for _, m in list(self.messages) if key in m]

    def wait_for(self, key: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.times(key):
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no {key} notification within {timeout} s: {self.messages}")

    def mark(self, name: str) -> None:
        """Send ``MARK=<name>`` to this socket: the datagrams one socket holds are read in the order they were
        sent, so a message read after the mark was sent after this call."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(f"MARK={name}\n".encode(), self.sock.getsockname())

    def after(self, key: str, value: str) -> list[dict[str, str]]:
        """The messages read after the first whose ``key`` starts with ``value`` ([] while there is none)."""
        fields = [m for _, m in list(self.messages)]
        at = next((i for i, m in enumerate(fields) if m.get(key, "").startswith(value)), len(fields))
        return fields[at + 1 :]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


SO_TIMESTAMPNS = 35  # Linux (asm-generic, x86, arm): a received datagram carries when it was queued


def _stamp_sent(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram as it is queued (Linux, 64-bit); False where it cannot."""
    if sys.platform != "linux" or struct.calcsize("l") != 8:
        return False
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return True


def _sent_at(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The monotonic time a datagram was queued, from its kernel stamp (wall clock; now if there is none)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec / 1e9 + (time.monotonic() - time.time())
    return time.monotonic()


@contextmanager
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, NotifySocket]]:
    """A fake systemd listening on ``<tmp_path>/notify.sock``: (path, socket)."""
    path = str(tmp_path / "notify.sock")
    fake = NotifySocket(path)
    try:
        yield path, fake
    finally:
        fake.close()


@dataclass
class FakeSource:
    connected: bool = True
    queued: int = 0

    @property
    def stats(self) -> SourceStats:
        return SourceStats(connected=self.connected)


def looped_settings(tmp_path: Path, **ops: object) -> Settings:
    clip = make_video(tmp_path / "clip.mp4", frames=40, fps=10.0, people=2, size=(160, 120))
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cam = CameraConfig(
        source=SourceConfig(uri=str(clip.path), loop=True),
        detector=GroundTruthDetectorConfig(path=gt),
        embedder=EmbedderConfig(type="none"),
        output=OutputConfig(dir=tmp_path / "runs", progress=False, events=False, mot=False, summary=False),
    )
    ops_cfg = OpsConfig.model_validate({"http": False} | ops)
    return single_camera_settings(
        cam, name="door", ops=ops_cfg, fleet=FleetConfig(replay_speed=1.0)
    )  # 10 FPS


# ------------------------------------------------------------------------------------------ a worker's endpoint


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """Status and body of a GET (HTTP errors included); (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())
    except OSError:
        return 0, b""


def health(port: int) -> dict[str, Any]:
    """A worker's /health JSON ({} when it does not answer)."""
    status, body = http_get(f"http://127.0.0.1:{port}/health")
    return dict(json.loads(body)) if status else {}


def metrics(port: int, tries: int = 5) -> dict[str, float]:
    """A worker's /metrics as {'name{label=value,...}': value} (labels sorted, camera left out); retried a few
    times (a busy machine), AssertionError when the worker never answers."""
    for _ in range(tries):
        status, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=5.0)
        if status == 200:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no /metrics from port {port} (last status {status})")
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body.decode("utf-8")):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "camera")
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def wait_until(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
    """Poll ``cond`` until true; the monotonic time it became true (AssertionError naming ``what`` on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {what}")


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphaned zombie only waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
