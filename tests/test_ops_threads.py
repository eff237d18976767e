"""A worker's threads are bounded by ``runtime.max_threads`` whatever the host's processors (daemon/threads.py):
the unit's ``TasksMax=256`` holds on a 96-core host. A real worker replays PETS09-S2L1 as if on hosts of 16 and
96 processors (tests/fakecpus.c, preloaded: every way its libraries count processors answers so) and its threads
are counted in /proc while it runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
from _cpus import build_shim, fake_host_env
from _data import require_pets09_video

from daemon.config import RuntimeConfig
from daemon.onnx_runtime import session_options
from daemon.threads import LIBRARY_THREAD_ENV, bound_library_threads, intra_op_threads, pool_size
from daemon.valkey_server import free_port

ROOT = Path(__file__).resolve().parents[1]
TASKS_MAX = 256  # deploy/reid-daemon@.service


def _host(monkeypatch: pytest.MonkeyPatch, cpus: int, usable: int | None = None) -> None:
    """This process as if on a host of ``cpus`` processors, ``usable`` of them its own (all where None)."""
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus if usable is None else usable)))


def test_pools_are_left_to_the_libraries_on_a_host_within_max_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processors, the cap 8: nothing is set, onnxruntime chooses (0), as before the cap: this host's runs
    and figures are unchanged."""
    _host(monkeypatch, 2)
    runtime = RuntimeConfig()
    environ: dict[str, str] = {}
    assert pool_size(runtime) is None and intra_op_threads(runtime) == 0
    assert bound_library_threads(runtime, environ) == {} and environ == {}
    assert session_options(runtime).intra_op_num_threads == 0


def test_pools_are_bounded_on_a_host_with_more_processors(monkeypatch: pytest.MonkeyPatch) -> None:
    """96 processors: each pool gets max_threads (8, or the one given), onnxruntime's sessions too where
    intra_op_threads is 0; a variable the user set and an intra_op_threads given are kept."""
    _host(monkeypatch, 96)
    environ = {"OMP_NUM_THREADS": "2"}
    chosen = bound_library_threads(RuntimeConfig(), environ)
    assert chosen == {name: "8" for name in LIBRARY_THREAD_ENV if name != "OMP_NUM_THREADS"}
    assert environ == chosen | {"OMP_NUM_THREADS": "2"}
    assert session_options(RuntimeConfig()).intra_op_num_threads == 8
    assert session_options(RuntimeConfig(max_threads=4)).intra_op_num_threads == 4
    assert session_options(RuntimeConfig(intra_op_threads=12)).intra_op_num_threads == 12


def test_pools_are_bounded_from_one_processor_past_max_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap's edge: a host of exactly max_threads processors is within it (nothing set, onnxruntime's own
    choice), one of a processor more is not (pools of max_threads). Kills the mutant comparing with < for <=."""
    _host(monkeypatch, 8)
    environ: dict[str, str] = {}
    assert pool_size(RuntimeConfig()) is None and intra_op_threads(RuntimeConfig()) == 0
    assert bound_library_threads(RuntimeConfig(), environ) == {} and environ == {}
    _host(monkeypatch, 9)
    assert pool_size(RuntimeConfig()) == 8 and intra_op_threads(RuntimeConfig()) == 8


def test_pools_take_the_processors_a_process_may_run_on_where_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    """96 processors, the worker pinned to 3 (CPUAffinity=): pools of 3."""
    _host(monkeypatch, 96, usable=3)
    assert pool_size(RuntimeConfig()) == 3 and intra_op_threads(RuntimeConfig()) == 3


def _most_threads(
    cmd: list[str], env: dict[str, str], cwd: Path, ready: Callable[[], bool] | None = None
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run ``cmd``; the most threads it held (its /proc/PID/task, every 20 ms) and how it ended: on its own, or
    stopped (SIGTERM) half a second after ``ready`` says it is up (a server)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    most = 0
    deadline = time.monotonic() + 300
    up_at = None
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            most = max(most, len(os.listdir(f"/proc/{proc.pid}/task")))
        except FileNotFoundError:  # it ended between poll and listdir
            break
        if up_at is None and ready is not None and ready():
            up_at = time.monotonic()
        if up_at is not None and time.monotonic() > up_at + 0.5:
            proc.terminate()
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    return most, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _worker_config(tmp_path: Path, video: Path) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "cameras:\n  pets09:\n"
        f"    source: {{uri: {video}, fps: 7, max_frames: 30}}\n"
        "    detector: {type: ssdlite, model: ssdlite-mobilenetv2-pedestrian, tiles: [2, 1], full_frame: false}\n"
        "    embedder: {type: onnx, model: mobilenetv2-imagenet, policy: needed}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, video: true, progress: false}}\n"
    )
    return cfg


def test_a_worker_s_threads_do_not_grow_with_the_host_s_processors(
    tmp_path: Path, ssdlite_model: Path, mobilenet_model: Path
) -> None:
    """numpy's and OpenCV's OpenBLAS, OpenCV's pool, its FFmpeg decoder and encoder, torch's OpenMP and each
    onnxruntime session (intra_op_threads: 0) took a thread a processor: a worker replaying PETS09-S2L1 held 97
    threads as if on 16 processors and 513 on 96, twice the unit's TasksMax. Bounded by runtime.max_threads (8),
    it holds as many on 96 as on 16, well under TasksMax. The fake host is checked first: numpy alone starts
    60 threads or more on it (OpenBLAS's at most 64)."""
    video = require_pets09_video()
    shim = build_shim(tmp_path)
    env = dict(os.environ)
    for name in LIBRARY_THREAD_ENV:
        env.pop(name, None)
    probe = [
        sys.executable,
        "-c",
        "import os, numpy; print(os.cpu_count(), len(os.listdir('/proc/self/task')))",
    ]
    big = env | fake_host_env(tmp_path / "host96", 96, shim)
    cpus, threads = map(
        int, subprocess.run(probe, env=big, capture_output=True, text=True, timeout=120).stdout.split()
    )
    assert cpus == 96 and threads >= 60  # the libraries believe it
    cmd = [
        sys.executable,
        "-m",
        "daemon",
        "run",
        "--config",
        str(_worker_config(tmp_path, video)),
        "--no-progress",
    ]
    most = {}
    for n, host_env in ((16, env | fake_host_env(tmp_path / "host16", 16, shim)), (96, big)):
        most[n], done = _most_threads(cmd, host_env, ROOT)
        assert done.returncode == 0 and "30 frames" in done.stdout, done.stderr[-3000:]
    print(f"most threads of a worker as if on 16 and 96 processors: {most[16]}, {most[96]}")
    assert most[96] <= most[16] + 2, most
    assert most[96] < TASKS_MAX // 3, most


def _listening(port: int) -> Callable[[], bool]:
    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    return up


def _command(name: str, tmp_path: Path, video: Path) -> tuple[list[str], Callable[[], bool] | None]:
    """``name``'s command line on a crop of PETS09's first frame (a person), and what says a server is up."""
    ok, frame = cv2.VideoCapture(str(video)).read()
    assert ok
    (tmp_path / "refs/alice").mkdir(parents=True)
    photo = tmp_path / "refs/alice/1.jpg"
    assert cv2.imwrite(str(photo), frame[100:300, 300:400])
    if name == "embed":
        return ["embed", str(photo)], None
    if name == "enroll":
        return [
            "enroll",
            str(tmp_path / "refs"),
            "--gallery",
            str(tmp_path / "g.npz"),
            "--label-from",
            "folder",
        ], None
    if name == "serve":
        port = free_port()
        return ["serve", "--port", str(port)], _listening(port)
    if name in ("verify", "recognize"):
        gallery = tmp_path / "g.npz"
        enroll = ["enroll", str(photo.parent.parent), "--gallery", str(gallery), "--label-from", "folder"]
        enrolled = subprocess.run(
            [sys.executable, "-m", "daemon", *enroll],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert enrolled.returncode == 0, enrolled.stderr[-2000:]
        return [name, "--gallery", str(gallery), *([str(photo)] if name == "recognize" else [])], None
    if name == "search":
        return ["search", "--query", str(photo), str(video), "--max-frames", "3", "--no-progress"], None
    gt = video.parent / "gt/gt.txt"
    cfg = _worker_config(tmp_path, video)
    if name == "adapt":
        head = tmp_path / "head"
        steps = ["--max-frames", "25", "--steps", "3", "--no-progress"]
        return ["adapt", "--out", str(head), "--config", str(cfg), *steps], None
    return [
        "eval",
        "--config",
        str(cfg),
        "--gt",
        str(gt),
        "--max-frames",
        "5",
        "--no-video",
        "--no-progress",
    ], None


@pytest.mark.parametrize(
    "name", ["embed", "enroll", "serve", "eval", "verify", "recognize", "search", "adapt"]
)
def test_the_other_commands_threads_do_not_grow_with_the_host_s_processors(
    tmp_path: Path, ssdlite_model: Path, mobilenet_model: Path, name: str
) -> None:
    """Only ``run`` bounded the pools: embed, enroll and serve (one photo, or up) held 167 threads as if on 96
    processors and 39 on 16; eval of 10 PETS09 frames 322; verify, recognize, search and adapt likewise (the
    numbers in the commit that bounded them). Each now bounds them as ``run`` does, before numpy,
    cv2 and torch load: on 96, 23 threads for embed, enroll and serve, fewer than numpy's OpenBLAS alone starts
    there (63), and 30-44 for eval, a worker's as ``run``'s (test_a_worker_s_threads_do_not_grow_...)."""
    video = require_pets09_video()
    shim = build_shim(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in LIBRARY_THREAD_ENV}
    args, ready = _command(name, tmp_path, video)
    cmd = [sys.executable, "-m", "daemon", *args]
    most, done = _most_threads(cmd, env | fake_host_env(tmp_path / "host96", 96, shim), ROOT, ready)
    assert done.returncode == (-15 if ready else 0), done.stderr[-3000:]
    print(f"most threads of {name} as if on 96 processors: {most}")
    assert most < (TASKS_MAX // 3 if name == "eval" else 60), most
