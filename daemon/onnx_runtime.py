"""One place where onnxruntime sessions are made, so every model gets the same runtime tuning."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from daemon.config import RuntimeConfig
from daemon.errors import ModelError
from daemon.threads import intra_op_threads

logger = logging.getLogger(__name__)


def select_providers(requested: Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """The requested providers that this onnxruntime build has, in the requested order.

    Falls back to the CPU provider when none of the requested ones is available.
    """
    have = set(ort.get_available_providers() if available is None else available)
    chosen = [p for p in requested if p in have]
    skipped = [p for p in requested if p not in have]
    if skipped:
        logger.debug("onnxruntime providers not available here, skipped: %s", ", ".join(skipped))
    if not chosen:
        chosen = ["CPUExecutionProvider"]
    return chosen


def session_options(runtime: RuntimeConfig) -> ort.SessionOptions:
    """Session options from the runtime config: full graph optimisation, threads (``threads.intra_op_threads``:
    0 is bounded by ``runtime.max_threads``), spinning."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = intra_op_threads(runtime)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if runtime.allow_spinning else "0")
    return so


def create_session(path: Path, runtime: RuntimeConfig) -> ort.InferenceSession:
    """Open an ONNX model with the runtime's settings; ModelError naming the file if it cannot be loaded."""
    if not path.is_file():
        raise ModelError(f"ONNX model file not found: {path}")
    providers = select_providers(runtime.providers)
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(runtime), providers=providers)
    except Exception as e:  # onnxruntime raises several unrelated exception types for a bad file
        raise ModelError(f"onnxruntime cannot load {path}: {_load_problem(e)}") from e
    logger.info("loaded %s with %s", path.name, ", ".join(session.get_providers()))
    return session


# onnxruntime's words for a file that holds no ONNX graph: not protobuf at all (text, an image, a file cut short),
# or empty (a download that never started). Its messages run over lines, with C++ source paths and signatures.
_NOT_ONNX = ("INVALID_PROTOBUF", "does not have a graph")


def _load_problem(error: Exception) -> str:
    """What onnxruntime's ``error`` says is wrong with a model file, in one line."""
    text = str(error).strip()
    if any(marker in text for marker in _NOT_ONNX):
        return "not an ONNX model, or cut short"
    return " ".join(text.split()) or type(error).__name__
