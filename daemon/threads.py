"""The threads a worker's libraries start, bounded by ``runtime.max_threads`` whatever the host's processors.

Each library sizes its pools by the processors it sees (measured with each made to see 8 to 192, the way it
counts them: tests/fakecpus.c): numpy's OpenBLAS and the one OpenCV bundles start a thread a processor, less one,
as they load (numpy's at most 63); OpenCV's own pool, torch's (OpenMP) and onnxruntime's intra-op pool of each
session (``intra_op_threads: 0``) as many when first used, and each FFmpeg decoder or encoder OpenCV opens up to
16. A worker replaying PETS09-S2L1 held 97 threads as if on 16 processors and 513 on 96, over the unit's
``TasksMax=256``. On a host with more processors than ``max_threads`` each of these pools is given that many (or
the processors this process may run on, where fewer): OpenBLAS and OpenMP through ``OPENBLAS_NUM_THREADS`` and
``OMP_NUM_THREADS``, OpenCV's pool and FFmpeg's through ``OPENCV_FOR_THREADS_NUM`` and ``OPENCV_FFMPEG_THREADS``,
which they read as they load or open (so before numpy, cv2 or torch is imported: ``cli``'s run and every
other command that loads a model set them right after reading the config), and onnxruntime's through the
session's options: 49 threads on 16 or 96. A variable the user set is left as it is. On a host with no more
processors than ``max_threads`` nothing is changed: each library's own choice is within it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Final

from daemon.config import RuntimeConfig

logger = logging.getLogger(__name__)

LIBRARY_THREAD_ENV: Final = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENCV_FOR_THREADS_NUM",
    "OPENCV_FFMPEG_THREADS",
)
"""The variables OpenBLAS (numpy's, OpenCV's), OpenMP (torch, FAISS), OpenCV's pool and the FFmpeg decoders and
encoders OpenCV opens take their size from."""
_READ_AT_IMPORT: Final = ("numpy", "cv2", "torch")


def host_cpus() -> int:
    """The host's processors, as the libraries count them (the larger of what the system says and this
    process's affinity)."""
    return max(os.cpu_count() or 1, len(os.sched_getaffinity(0)))


def pool_size(runtime: RuntimeConfig) -> int | None:
    """The threads each pool sized by the host's cores may take: None on a host with no more processors than
    ``runtime.max_threads`` (each library's own choice is within it), else ``max_threads`` or the processors
    this process may run on, the fewer."""
    if host_cpus() <= runtime.max_threads:
        return None
    return min(runtime.max_threads, len(os.sched_getaffinity(0)))


def intra_op_threads(runtime: RuntimeConfig) -> int:
    """onnxruntime's ``intra_op_num_threads`` for a session: ``runtime.intra_op_threads`` where given; for 0,
    ``pool_size`` on a host with more processors than ``max_threads``, else 0 (onnxruntime's own choice)."""
    if runtime.intra_op_threads:
        return runtime.intra_op_threads
    return pool_size(runtime) or 0


def bound_library_threads(
    runtime: RuntimeConfig, environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Sets each of ``LIBRARY_THREAD_ENV`` the user has not set in ``environ`` (this process's environment
    where None) to ``pool_size`` on a host with more processors than ``runtime.max_threads``; what it set.
    Before numpy, cv2 or torch is imported: a library already loaded has read its variable (logged as a
    warning, naming it)."""
    environ = os.environ if environ is None else environ
    size = pool_size(runtime)
    if size is None:
        return {}
    chosen = {name: str(size) for name in LIBRARY_THREAD_ENV if name not in environ}
    environ.update(chosen)
    loaded = [name for name in _READ_AT_IMPORT if name in sys.modules]
    if chosen and loaded:
        logger.warning("thread pools bounded after %s was loaded: its pool keeps the host's size", loaded[0])
    if chosen:
        logger.info(
            "thread pools of at most %d threads (the host has %d processors, runtime.max_threads is %d): %s",
            size,
            host_cpus(),
            runtime.max_threads,
            ", ".join(f"{k}={v}" for k, v in chosen.items()),
        )
    return chosen
