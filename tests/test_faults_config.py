"""A bad config in a real ``reid-daemon run`` process: one clear message naming the file and the field, exit 2.

systemd then shows that one line in ``systemctl status`` and the unit's ``RestartPreventExitStatus=2`` keeps
it from restarting in a loop.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import daemon_json
from _unreadable import unreadable_file

ROOT = Path(__file__).resolve().parents[1]
CAMERA = "cameras:\n  door:\n    source: {uri: clip.mp4}\n"


def run(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "daemon", "run", "--config", str(cfg), "--no-progress", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (CAMERA + "    trackr: {}\n", "cameras.door.trackr: Extra inputs are not permitted"),
        (CAMERA + "ops: {port: 99999}\n", "ops.port: Input should be less than or equal to 65535"),
        (
            CAMERA + "ops: {latency_buckets: [0.5, 0.1]}\n",
            "ops.latency_buckets: Value error, latency_buckets must",
        ),
        (
            CAMERA + "bridge: {signing_key: {env: A, value: b}}\n",
            "bridge.signing_key: Value error, give exactly one",
        ),
        ("cameras: [oops\n", "is not valid YAML"),
    ],
)
def test_bad_config_one_message_exit_2(tmp_path: Path, body: str, expected: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(body)
    cfg.chmod(0o600)  # the owner's alone: an inline secret in a file others may read is warned about first
    done = run(cfg)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("error:") == 1
    assert str(cfg) in done.stderr and expected in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_with_json_logs_the_error_is_a_json_record(tmp_path: Path) -> None:
    """With --log-format json the reason a worker exits was a bare `error: ...` line in the journal, which stops
    the deploy README's jq at a parse error."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(CAMERA + "    trackr: {}\n")
    cmd = daemon_json("run", "--config", str(cfg))
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    (record,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert record["level"] == "ERROR" and record["exit_code"] == 2
    assert "cameras.door.trackr: Extra inputs are not permitted" in record["message"]


def test_missing_config_file(tmp_path: Path) -> None:
    done = run(tmp_path / "nope.yaml")
    assert (
        done.returncode == 2
        and done.stderr.strip() == f"error: config file not found: {tmp_path / 'nope.yaml'}"
    )


def test_ops_port_taken_is_one_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(CAMERA + f"ops: {{port: {port}}}\n")
        done = run(cfg)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"cannot serve /metrics and /health on 127.0.0.1:{port}" in done.stderr
    assert "ops.camera_ports" in done.stderr


def test_ops_host_not_on_this_machine_is_named_as_such(tmp_path: Path) -> None:
    """ops.host set to an address this host does not have: the message blamed another camera on the port."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CAMERA + "ops: {host: 192.0.2.1, port: 0}\n")  # TEST-NET-1: never a local address
    done = run(cfg)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "cannot serve /metrics and /health on 192.0.2.1:0" in done.stderr
    assert "ops.host" in done.stderr and "another camera" not in done.stderr, done.stderr


def test_unreadable_config_file_is_named_without_a_traceback(tmp_path: Path) -> None:
    """A config file the user may not read (mode 600, another owner) ended in an OSError traceback from the
    YAML reader, naming neither the file nor the option, and exit 1 where a config error is 2."""
    cfg = unreadable_file(tmp_path / "fleet.yaml")
    done = run(cfg)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == f"error: cannot read config file {cfg}: Input/output error"
