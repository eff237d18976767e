"""Children that end with their starter (daemon/procs.py): real processes, killed for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from _ops import process_alive, wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="ending with the parent is Linux's PR_SET_PDEATHSIG"
)

# A child that reports the signal it got in a file, so the test sees it was asked to stop (SIGTERM), not killed.
CHILD = """
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1], "w").write(str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("up", flush=True)
time.sleep(120)
"""

PARENT = """
import subprocess, sys, time
from daemon.procs import spawn
child = spawn([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE)
assert child.stdout.readline() == b"up\\n"
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_child_is_asked_to_stop_when_its_parent_is_killed(tmp_path: object) -> None:
    told = os.path.join(str(tmp_path), "signal")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, told], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert process_alive(child)
        parent.kill()  # SIGKILL: nothing of the parent's runs
        parent.wait()
        wait_until(lambda: not process_alive(child), 10.0, f"child {child} gone with its parent")
        with open(told) as f:
            assert f.read() == str(int(signal.SIGTERM))
    finally:
        parent.kill()
        parent.wait()
