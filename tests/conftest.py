"""Fixtures shared across test modules: fetched models (skip with the fetch command when absent), and the
daemon's log level set to INFO for each test (a `main(["-q", ...])` sets it to WARNING for the process)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import models
from daemon.config import env_models_dir
from daemon.errors import ModelError


@pytest.fixture(autouse=True)
def _daemon_log_level() -> Iterator[None]:
    """Every test starts with the daemon's loggers at INFO, as `reid-daemon` runs without -q: a `main(["-q",
    ...])` in a module's fixture would otherwise leave them at WARNING for every test after it."""
    log = logging.getLogger("daemon")
    log.setLevel(logging.INFO)
    yield
    log.setLevel(logging.INFO)


@pytest.fixture(autouse=True)
def _no_reid_settings_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tester's shell may hold REID_* settings (REID_FLEET_KEY, exported for fleet runs as the README shows):
    every REID_ variable overrides a config, so each test starts without them but $REID_MODELS_DIR, which says
    where the fetched models are."""
    for name in [n for n in os.environ if n.startswith("REID_") and n != "REID_MODELS_DIR"]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The model cache the daemon uses without a config ($REID_MODELS_DIR, else the default)."""
    return env_models_dir()


def _preset(name: str) -> Path:
    try:
        return models.resolve(name, env_models_dir())
    except ModelError as e:
        pytest.skip(f"model {name} not available ({e}); run `reid-daemon models fetch {name}`")


@pytest.fixture(scope="session")
def mobilenet_model() -> Path:
    return _preset("mobilenetv2-imagenet")


@pytest.fixture(scope="session")
def ssdlite_model() -> Path:
    return _preset("ssdlite-mobilenetv2-pedestrian")
