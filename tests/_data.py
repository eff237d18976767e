"""Where the shared test data lives (``../shared/data`` beside the repository, or ``$REID_SHARED_DATA``, which
``make test SHARED=...`` sets; a relative one is taken from the repository root: daemon.shared_data, the rule the
benchmarks follow too), and skips when it is absent.

Import from a test module as ``from _data import require_pets09`` (pytest puts ``tests/`` on sys.path).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from daemon.shared_data import PETS09, shared_data_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir(REPO_ROOT)  # read at import: each test runs without the shell's REID_ variables


def shared_data_dir() -> Path | None:
    """The shared data folder (``SHARED_DATA``), or None where it is absent (a fresh clone)."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None


def require_pets09() -> Path:
    """The PETS09-S2L1 folder (``vtest.avi``, ``gt/gt.txt``); skips the calling test when it is absent."""
    root = shared_data_dir()
    if root is None:
        pytest.skip(
            f"shared test data not found at {SHARED_DATA} (see ../shared/data/README.md; elsewhere: make test "
            "SHARED=/path/to/shared/data)"
        )
    folder = root / PETS09
    if not (folder / "gt" / "gt.txt").is_file():
        pytest.skip(f"{folder / 'gt' / 'gt.txt'} not found in the shared test data")
    return folder


def require_pets09_gt() -> Path:
    """The PETS09-S2L1 MOT15 ground truth file; skips the calling test when it is absent."""
    return require_pets09() / "gt" / "gt.txt"


def require_pets09_video() -> Path:
    """The PETS09-S2L1 video (vtest.avi); skips the calling test when it is absent."""
    video = require_pets09() / "vtest.avi"
    if not video.is_file():
        pytest.skip(f"{video} not found in the shared test data")
    return video


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` by path (benchmarks are scripts, not a package) for a smoke test,
    registered in sys.modules under ``name`` (dataclasses defined in it need that)."""
    script = REPO_ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def clip_args(models_dir: Path) -> list[str]:
    """``--video``, ``--gt`` and ``--models-dir`` for a benchmark script run on PETS09; skips when absent."""
    pets = require_pets09()
    return [
        "--video",
        str(pets / "vtest.avi"),
        "--gt",
        str(pets / "gt" / "gt.txt"),
        "--models-dir",
        str(models_dir),
    ]
