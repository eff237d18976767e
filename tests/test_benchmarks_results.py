"""benchmarks/RESULTS.md: every command it records still parses with today's scripts and CLI."""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from _data import REPO_ROOT, load_benchmark

from daemon.cli import build_parser

RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
SCRIPT = re.compile(r"benchmarks/(\w+)\.py")


LEVER_BASE = "configs/pets09.yaml:output__video=false"  # what "..." stands for in a lever's --ours


def recorded_commands() -> list[list[str]]:
    """The commands of RESULTS.md's code blocks (indented ones too), continuation lines joined, from the
    script or ``reid-daemon`` on. A bare ``...`` (the rest of a command given before) leaves a command out."""
    text = RESULTS.read_text(encoding="utf-8")
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    blocks += re.findall(r"^    (\.venv/bin/python benchmarks/.*)$", text, flags=re.M)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" # ")[0].replace("=...,", f"={LEVER_BASE},"))
            start = next((i for i, w in enumerate(words) if SCRIPT.search(w) or w == "reid-daemon"), None)
            if start is not None and "..." not in words:
                commands.append(words[start:])
    return commands


class Parsed(Exception):
    """Raised once argparse has accepted a command line: nothing runs. ``namespace`` holds what it parsed."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.namespace = args


def parsed(command: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """What the script or ``reid-daemon`` makes of ``command`` (argparse exits 2 on one it does not take)."""
    if command[0] == "reid-daemon":
        return build_parser().parse_args(command[1:])
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed) as e:
        load_benchmark(SCRIPT.search(command[0]).group(1)).main(command[1:])  # type: ignore[union-attr]
    monkeypatch.undo()
    return e.value.namespace


def test_results_records_commands_of_every_kind() -> None:
    commands = recorded_commands()
    scripts = {SCRIPT.search(c[0]).group(1) for c in commands if SCRIPT.search(c[0])}  # type: ignore[union-attr]
    assert {
        "compare_peers",
        "adapt_bench",
        "gallery_bench",
        "soak",
        "similarity_scale",
        "load_sim",
    } <= scripts
    assert sum(c[0] == "reid-daemon" for c in commands) > 10


def test_every_benchmark_whose_figures_results_gives_has_its_command() -> None:
    """Section 2's tables named detector_sweep.py and embedder_bench.py but gave no command (its 128x64 embedder
    row is not in embedder_bench's default --sizes), and who_bench's figures had their command only inline,
    where neither a reader's copy-paste of a block nor recorded_commands finds it."""
    text = RESULTS.read_text(encoding="utf-8")
    named = set(SCRIPT.findall(text)) - {"pets_clip"}  # pets_clip: the helpers, no command of its own
    recorded = {SCRIPT.search(c[0]).group(1) for c in recorded_commands() if SCRIPT.search(c[0])}  # type: ignore[union-attr]
    assert named <= recorded, sorted(named - recorded)
    embedder = [c for c in recorded_commands() if c[0].endswith("embedder_bench.py")]
    assert any({"256x128", "224x224", "128x64"} <= set(c) for c in embedder), embedder


@pytest.mark.parametrize("command", recorded_commands(), ids=lambda c: " ".join(c)[:80])
def test_recorded_command_parses(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    parsed(command, monkeypatch)


WRITTEN = (
    "out",
    "plot",
    "json",
    "output",
)  # the options (and mp4v_copy's argument) naming what a command writes


@pytest.mark.parametrize("command", recorded_commands(), ids=lambda c: " ".join(c)[:80])
def test_recorded_commands_write_under_runs(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """similarity_scale's '--plot scale.png' wrote into the repository's root, where git does not ignore it;
    every file or folder a recorded command writes is under runs/ (git-ignored) or /tmp."""
    args = vars(parsed(command, monkeypatch))
    written = [str(args[k]) for k in WRITTEN if isinstance(args.get(k), str | Path)]
    assert all(w.startswith(("runs/", "/tmp/")) for w in written), written


def test_the_load_simulation_names_the_stream_length_it_ran_with() -> None:
    """'~380 cameras per 16 GB ... with the default `stream_maxlen` (200 entries, ~30 s of replay, would cut it to
    ~9 MB per camera)' read as a default of 200 entries, where the figures (42 MB per camera) are those of the
    configured default, 1000; 200 is the shorter stream it suggests."""
    from daemon.config import BridgeConfig

    text = " ".join(RESULTS.read_text(encoding="utf-8").split())
    default = BridgeConfig().stream_maxlen
    assert f"with the default `stream_maxlen` of {default} (" in text
    assert "with the default `stream_maxlen` (" not in text


def test_every_lever_a_table_shows_has_its_command() -> None:
    """The run before the shipped one (2026-12-04) gave its levers' command only as 'command in
    runs/bench-w2/results.md', a file not in the repository: lever-detect-workers-2 and lever-workers2-emb224
    could not be run again as they ran."""
    rows = [line for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    shown = {name for row in rows for name in re.findall(r"^\| `?(lever-[\w+-]+)`?", row)}
    named = {
        arg.partition("=")[0]
        for command in recorded_commands()
        if "compare_peers" in command[0]
        for option, arg in itertools.pairwise(command)
        if option == "--ours"
    }
    assert {"lever-full-only", "lever-detect-workers-2", "lever-workers2-emb224"} <= shown
    assert shown <= named, sorted(shown - named)
