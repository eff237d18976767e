"""The command line of a real daemon process in a test: ``python -m daemon --log-format json ...``, so each test
that starts one reads its JSON log lines the same way."""

from __future__ import annotations

import sys


def daemon_json(*args: str) -> list[str]:
    """The command running this interpreter's daemon with JSON log lines, then ``args`` (a subcommand and its
    options)."""
    return [sys.executable, "-m", "daemon", "--log-format", "json", *args]
