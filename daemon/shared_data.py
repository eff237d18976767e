"""Where a clone finds the project's shared data (the real clips and ground truth its tests and benchmarks use,
kept out of the repository): ``$REID_SHARED_DATA``, else ``../shared/data`` beside the clone; a relative path is
taken from the repository's root. ``make test SHARED=/path`` sets the variable for the tests.

The one rule for both: ``tests/_data.py`` and the scripts under ``benchmarks/`` (which the package does not
ship) each pass their repository root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

SHARED_DATA_ENV: Final = "REID_SHARED_DATA"
"""The variable naming the shared data folder (``make test SHARED=...`` sets it)."""
DEFAULT_SHARED_DATA: Final = "../shared/data"
"""The folder without the variable, from the repository root: the shared data beside the clone."""
PETS09: Final = "pets09-s2l1"
"""The PETS09-S2L1 folder in it (``vtest.avi``, ``gt/gt.txt``)."""


def shared_data_dir(repo_root: Path) -> Path:
    """The shared data folder of the clone at ``repo_root`` (absolute; it may be absent), as the environment
    names it now."""
    return (repo_root / os.environ.get(SHARED_DATA_ENV, DEFAULT_SHARED_DATA)).resolve()


def pets09_dir(repo_root: Path) -> Path:
    """The PETS09-S2L1 folder of the shared data (it may be absent)."""
    return shared_data_dir(repo_root) / PETS09


def shared_data_hint(repo_root: Path) -> str:
    """Where the shared data was looked for and how to name another folder: for a message about a file not
    found (the benchmarks' default clips are in it)."""
    named = os.environ.get(SHARED_DATA_ENV)
    how = f"${SHARED_DATA_ENV}={named}" if named is not None else f"{DEFAULT_SHARED_DATA} beside the clone"
    return (
        f"the shared data folder is {shared_data_dir(repo_root)} ({how}); name another with "
        f"{SHARED_DATA_ENV}=/path/to/shared/data (make test SHARED=/path/to/shared/data for the tests)"
    )
