"""A helper process holding a camera folder's lock (``daemon.camera_lock``) as a worker, a forget or a fleet
holds it: a test takes the lock away from its own process, and knows when it is held (no sleeps)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys
from pathlib import Path
from daemon.camera_lock import worker_locked, writer_locked

folder, name, who = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
with worker_locked(folder, name) if who == "worker" else writer_locked(folder, name, who):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it
"""


@contextmanager
def camera_lock_held(folder: Path, name: str, who: str = "worker") -> Iterator[subprocess.Popen[str]]:
    """A process holding camera ``name``'s ``folder`` lock inside the block, as its worker (``who`` "worker":
    recorded as ``reid-daemon run --camera <name>``) or as ``who`` (``reid-daemon forget``); the block begins
    once it holds it. It lets go as the block ends (the test may kill it before, as a worker may be killed)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), name, who],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield proc
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
