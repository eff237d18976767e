"""A file that exists and cannot be read, for tests of what a command says when it meets one.

File modes do not stop root (who runs the tests in CI), so the file is a link to ``/proc/self/mem``: a regular
file whose first page is never mapped, so reading it from the start fails with EIO, for any user.

Import from a test module as ``from _unreadable import unreadable_file`` (pytest puts ``tests/`` on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import pytest

_MEM = Path("/proc/self/mem")


def unreadable_file(path: Path) -> Path:
    """``path`` made a file that exists but whose read fails (OSError); skips where /proc is absent."""
    if not _MEM.is_file():
        pytest.skip("no /proc/self/mem here to make an unreadable file from")
    path.symlink_to(_MEM)
    try:
        path.read_bytes()
    except OSError:
        return path
    pytest.skip("reading /proc/self/mem did not fail here")
