"""Child processes that end with the process that started them.

A fleet killed with SIGKILL (the OOM killer, ``kill -9``, a crashed terminal) runs no cleanup, so the Valkey
server and camera workers it started would run on without it: an orphaned worker keeps replaying, and a
lockstep one waits forever for peers. On Linux each child started here is sent SIGTERM (a clean stop for a
worker and for Valkey) when the thread that started it ends; elsewhere this is plain ``subprocess.Popen``.
Start children from a thread that lives as long as they should (the main thread, in the daemon).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def spawn(cmd: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(cmd, **popen)`` whose child is sent SIGTERM when its starter is gone."""
    return subprocess.Popen(cmd, preexec_fn=_die_with_parent(), **popen)


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec
