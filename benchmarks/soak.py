"""Soak benchmark: two fleet workers replay the shared clip in a loop for an hour; does anything grow?

Starts one embedded Valkey (TCP, loopback) and two ``reid-daemon run`` processes in fleet mode on it, both
looping the clip (``source.loop``) at real-time pace (``fleet.replay_speed``), so they keep tracking, embedding,
publishing and matching identities for ``--minutes``. Every ``--sample-s`` seconds it records each worker's
RSS, open file descriptors and threads (``/proc``), their ``/metrics`` (frames, FPS, bridge backlog, identities
held, exemplar rows) and Valkey's ``INFO memory`` and RSS. At the end it stops the workers with SIGTERM (timing the
graceful stop) and writes ``samples.csv``, ``soak.png`` and ``soak.json`` under ``--out``, and prints the growth
of each series between the first samples after ``--warmup-min`` and the last ones.

Light on CPU by design (other work shares the machine): one detector pass per frame (no tiles), every fourth
frame (``--stride``: 2.5 FPS per camera at real-time pace), one onnxruntime thread per worker, paced at
``--speed`` x real time (``fleet.replay_speed``).

The fleet keeps ended tracks' exemplars and stored state for ``identity.retention_s`` / ``bridge.state_ttl_s``
(an hour by default): the bounded stores grow for that long by design. The soak sets both to
``--retention-s`` (5 min) so that they are full before the warm-up ends and what grows afterwards is a leak.

    .venv/bin/python benchmarks/soak.py --minutes 60 --out runs/soak
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from daemon.config import BridgeConfig, FleetConfig, IdentityConfig, SourceConfig
from daemon.shared_data import pets09_dir, shared_data_hint
from daemon.valkey_server import EmbeddedValkey, free_port

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ("soak-a", "soak-b")
KEY_ENV = "REID_SOAK_KEY"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0
WARMUP_MIN = 10.0  # the default warm-up of a run of 30 minutes or more (a third of a shorter one)
EDGE_SAMPLES = 3  # samples averaged (median) at each end of the window that growth compares
WORKER_METRICS = {  # column -> (metric family, sample name)
    "frames": ("reid_frames", "reid_frames_total"),
    "fps": ("reid_fps", "reid_fps"),
    "backlog": ("reid_bridge_backlog", "reid_bridge_backlog"),
    "identities": ("reid_identity_identities", "reid_identity_identities"),
    "exemplar_rows": ("reid_identity_exemplar_rows", "reid_identity_exemplar_rows"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0, help="How long the workers run.")
    p.add_argument("--sample-s", type=float, default=60.0, help="Seconds between samples.")
    p.add_argument(
        "--warmup-min",
        type=float,
        help=f"Growth is measured after this warm-up (default: {WARMUP_MIN:g}, or a third of a shorter "
        "--minutes); it must be shorter than --minutes.",
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "soak", help="Output folder.")
    p.add_argument(
        "--video",
        type=Path,
        default=pets09_dir(ROOT) / "vtest.avi",
        help="Clip each camera loops (default: PETS09-S2L1's in the shared data: $REID_SHARED_DATA, else "
        "../shared/data beside the clone).",
    )
    p.add_argument(
        "--gt",
        type=Path,
        help="Detect from this MOT ground truth of the clip instead of SSDLite (smoke tests; every pass of the "
        "looped clip gets its boxes).",
    )
    p.add_argument("--stride", type=int, default=4, help="Process every Nth frame of the clip.")
    p.add_argument("--speed", type=float, default=1.0, help="Replay pace, x real time (fleet.replay_speed).")
    p.add_argument(
        "--retention-s",
        type=float,
        default=300.0,
        help="identity.retention_s and bridge.state_ttl_s: how long ended tracks and stored state are kept. "
        "The bounded stores fill for this long, then hold steady; warm-up must be longer to measure leaks.",
    )
    args = p.parse_args(argv)
    for path in ("out", "video", "gt"):  # the workers run in ROOT: a relative path is the caller's folder's
        if getattr(args, path) is not None:
            setattr(args, path, getattr(args, path).resolve())
    for flag in ("--minutes", "--sample-s", "--stride", "--speed", "--retention-s"):
        if not getattr(args, flag[2:].replace("-", "_")) > 0:  # NaN too
            p.error(f"{flag} must be above 0")
    if args.warmup_min is None:
        args.warmup_min = min(WARMUP_MIN, args.minutes / 3)
    elif not args.warmup_min >= 0:
        p.error("--warmup-min must be 0 or more")
    elif args.warmup_min >= args.minutes:
        p.error(
            f"--warmup-min {args.warmup_min:g} leaves nothing to measure: it must be shorter than "
            f"--minutes {args.minutes:g}"
        )
    try:  # the config's own bounds, checked before Valkey and the workers start
        SourceConfig(uri=str(args.video), stride=args.stride)
        FleetConfig(replay_speed=args.speed)
        IdentityConfig(retention_s=args.retention_s)
        BridgeConfig(state_ttl_s=round(args.retention_s))
    except ValidationError as e:
        flags = {"uri": "--video", "stride": "--stride", "replay_speed": "--speed"}
        p.error(
            "; ".join(f"{flags.get(str(err['loc'][0]), '--retention-s')}: {err['msg']}" for err in e.errors())
        )
    return args


# ------------------------------------------------------------------------------------------------ config


def fleet_config(args: argparse.Namespace, url: str, ports: dict[str, int], out: Path) -> dict[str, Any]:
    detector: dict[str, Any] = (
        {"type": "ground-truth", "path": str(args.gt)}
        if args.gt
        else {"type": "ssdlite", "score_threshold": 0.1, "tiles": [1, 1], "full_frame": True}
    )
    camera = {
        "source": {"uri": str(args.video), "loop": True, "stride": args.stride},
        "detector": detector,
        "embedder": {"policy": "needed"},
        "tracker": {"track_buffer": 60},
        "output": {"dir": str(out / "runs"), "progress": False, "embeddings": False, "video": False},
    }
    return {
        "runtime": {"intra_op_threads": 1, "allow_spinning": False},
        "fleet": {"enabled": True, "replay_speed": args.speed, "epoch": time.time()},
        "bridge": {"url": url, "signing_key": {"env": KEY_ENV}, "state_ttl_s": round(args.retention_s)},
        "identity": {"allow_overlapping_views": True, "retention_s": args.retention_s},
        "ops": {"camera_ports": ports},
        "cameras": {cam: json.loads(json.dumps(camera)) for cam in CAMERAS},  # no YAML aliases
    }


# ------------------------------------------------------------------------------------------------ workers


def log_path(out: Path, camera: str) -> Path:
    return out / f"{camera}.log"


def start_workers(config: Path, out: Path) -> dict[str, subprocess.Popen[bytes]]:
    env = dict(os.environ, **{KEY_ENV: secrets.token_hex(32)})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for cam in CAMERAS:
        log = log_path(out, cam).open("wb")
        cmd = [sys.executable, "-m", "daemon", "--log-format", "json", "run", "--config", str(config)]
        procs[cam] = subprocess.Popen(
            [*cmd, "--camera", cam, "--no-progress"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        log.close()
    return procs


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics as {column: value} for WORKER_METRICS (absent ones: NaN)."""
    values = dict.fromkeys(WORKER_METRICS, float("nan"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode("utf-8")
    except OSError:
        return values
    wanted = {fam: (col, sample) for col, (fam, sample) in WORKER_METRICS.items()}
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            col, sample = wanted[family.name]
            values[col] = sum(s.value for s in family.samples if s.name == sample)
    return values


def wait_ready(procs: dict[str, subprocess.Popen[bytes]], ports: dict[str, int], out: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        dead = {c: p.returncode for c, p in procs.items() if p.poll() is not None}
        if dead:
            logs = ", ".join(str(log_path(out, c)) for c in dead)
            raise SystemExit(f"worker(s) exited at start: {dead}; see {logs}")
        if all(scrape(port)["frames"] > 0 for port in ports.values()):
            return
        time.sleep(1.0)
    raise SystemExit(f"workers not processing frames after {READY_TIMEOUT_S:.0f} s")


def stop_workers(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, dict[str, float]]:
    """SIGTERM each worker; its exit code and how long it took to exit."""
    t0 = {c: time.monotonic() for c in procs}
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    result: dict[str, dict[str, float]] = {}
    for cam, p in procs.items():
        try:
            code = p.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
        result[cam] = {"exit_code": code, "stop_s": round(time.monotonic() - t0[cam], 3)}
    return result


# ------------------------------------------------------------------------------------------------ sampling


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def sample(
    t0: float, procs: dict[str, subprocess.Popen[bytes]], ports: dict[str, int], valkey: Any, valkey_pid: int
) -> dict[str, float]:
    row: dict[str, float] = {"minute": round((time.monotonic() - t0) / 60.0, 3)}
    for cam, p in procs.items():
        if p.poll() is not None:
            raise SystemExit(f"worker {cam} exited during the soak with code {p.returncode}")
        row[f"{cam}_rss_mib"] = round(proc_rss_mib(p.pid), 2)
        row[f"{cam}_fds"] = proc_fds(p.pid)
        row[f"{cam}_threads"] = proc_threads(p.pid)
        for col, value in scrape(ports[cam]).items():
            row[f"{cam}_{col}"] = round(value, 3)
    mem = valkey.info("memory")
    row["valkey_used_mib"] = round(mem["used_memory"] / 2**20, 3)
    row["valkey_rss_mib"] = round(proc_rss_mib(valkey_pid), 2)
    return row


def run_soak(args: argparse.Namespace) -> tuple[list[dict[str, float]], dict[str, dict[str, float]]]:
    out: Path = args.out
    with EmbeddedValkey("tcp") as server:
        ports = {cam: free_port() for cam in CAMERAS}
        config = out / "soak.yaml"
        config.write_text(yaml.safe_dump(fleet_config(args, server.url, ports, out), sort_keys=False))
        client = server.client()
        valkey_pid = int(client.info("server")["process_id"])
        procs = start_workers(config, out)
        stopped: dict[str, dict[str, float]] = {}
        try:
            wait_ready(procs, ports, out)
            rows = _sample_for(args, procs, ports, client, valkey_pid)
        finally:
            stopped = stop_workers(procs)
    return rows, stopped


def _sample_for(
    args: argparse.Namespace,
    procs: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    client: Any,
    pid: int,
) -> list[dict[str, float]]:
    t0 = time.monotonic()
    end = t0 + args.minutes * 60.0
    rows = [sample(t0, procs, ports, client, pid)]
    print(json.dumps(rows[-1]), flush=True)
    while time.monotonic() < end:
        time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
        rows.append(sample(t0, procs, ports, client, pid))
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ report


def growth(rows: list[dict[str, float]], column: str, warmup_min: float) -> dict[str, float]:
    """Median of the first samples after warm-up vs median of the last ones; and the fitted slope per hour.

    Up to EDGE_SAMPLES at each end, never the same samples at both (a short soak compares its first and last)."""
    after = [r for r in rows if r["minute"] >= warmup_min] or rows[-EDGE_SAMPLES:]
    edge = max(1, min(EDGE_SAMPLES, len(after) // 2))
    base = statistics.median(r[column] for r in after[:edge])
    end = statistics.median(r[column] for r in after[-edge:])
    xs = [r["minute"] for r in after]
    ys = [r[column] for r in after]
    slope = statistics.linear_regression(xs, ys).slope * 60.0 if len(set(xs)) > 1 else 0.0
    pct = 100.0 * (end - base) / base if base else 0.0
    return {"base": base, "end": end, "growth_pct": round(pct, 2), "slope_per_hour": round(slope, 3)}


def series(rows: list[dict[str, float]]) -> list[str]:
    return [c for c in rows[0] if c.endswith(("_rss_mib", "_fds", "_threads", "_used_mib"))]


def plot(rows: list[dict[str, float]], warmup_min: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minute"] for r in rows]
    panels = (
        ("RSS (MiB)", "_rss_mib"),
        ("open file descriptors", "_fds"),
        ("threads", "_threads"),
        ("Valkey used_memory (MiB)", "_used_mib"),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 11), sharex=True)
    for ax, (title, suffix) in zip(axes, panels, strict=True):
        for col in (c for c in rows[0] if c.endswith(suffix)):
            ax.plot(minutes, [r[col] for r in rows], marker=".", label=col.removesuffix(suffix))
        ax.axvline(warmup_min, color="grey", linestyle=":", label="end of warm-up")
        ax.set_ylabel(title)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.suptitle("reid-daemon soak: two fleet workers looping the clip, one Valkey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    args: argparse.Namespace, rows: list[dict[str, float]], stopped: dict[str, dict[str, float]]
) -> dict[str, Any]:
    out: Path = args.out
    with (out / "samples.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    warmup = args.warmup_min
    plot(rows, warmup, out / "soak.png")
    report = {
        "minutes": args.minutes,
        "samples": len(rows),
        "warmup_min": round(warmup, 3),
        "growth": {c: growth(rows, c, warmup) for c in series(rows)},
        "frames": {c: rows[-1].get(f"{c}_frames") for c in CAMERAS},
        "stop": stopped,
    }
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    return report


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(f"soak: signal {signum}: stopping the workers")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for flag, path in (("--video", args.video), ("--gt", args.gt)):
        if path is not None and not path.is_file():
            raise SystemExit(f"soak: {flag} {path} not found; {shared_data_hint(ROOT)}")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # the workers and Valkey are stopped on the way out
    args.out.mkdir(parents=True, exist_ok=True)
    rows, stopped = run_soak(args)
    report = write_outputs(args, rows, stopped)
    print(f"soak: {report['samples']} samples over {rows[-1]['minute']:.1f} min; growth after warm-up:")
    for col, g in report["growth"].items():
        change = f"{g['growth_pct']:+6.2f} %  ({g['slope_per_hour']:+.3f}/h)"
        print(f"  {col:24s} {g['base']:10.2f} -> {g['end']:10.2f}  {change}")
    print(f"  graceful stop: {stopped}")
    print(f"  {args.out / 'samples.csv'}, {args.out / 'soak.png'}, {args.out / 'soak.json'}")
    return 0 if all(s["exit_code"] == 0 for s in stopped.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
