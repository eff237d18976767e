"""What README.md and deploy/README.md show of the config is the config: their YAML examples load, their inline
``section: {...}`` fragments validate, every setting they name (``identity.lost_after_s``) is a field, and every
option their ``reid-daemon`` commands give is one the command takes.

A key or option renamed in daemon/ and not in the docs, or misspelt in them, fails here rather than in the hands
of a user who copied it (configs/*.yaml and deploy/fleet.example.yaml are loaded by test_config.py and
test_ops_deploy.py)."""

import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from daemon.config import CameraConfig, Settings, load_settings
from daemon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", ROOT / "deploy" / "README.md")

_YAML_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.MULTILINE | re.DOTALL)
# `detector: {type: yolo, model: /path/yolov8n.onnx}`: a section written inline, as a user would paste it
_FRAGMENT = re.compile(r"`([a-z_]+): (\{[^`]*\})`")
# `identity.lost_after_s`, `cameras.<name>.ground_truth`: a setting named in the prose
_SETTING = re.compile(r"`([a-z_]+(?:\.(?:<[a-z]+>|[a-z0-9_]+))+)`")
_FILE_SUFFIXES = ("mp4", "yaml", "yml", "json", "jsonl", "txt", "npz", "npy", "png", "md", "conf", "lock")
# dotted names in the docs that are not settings: what /health answers
_NOT_SETTINGS = {"gallery.problem"}


def _doc_text(doc: Path) -> str:
    return doc.read_text(encoding="utf-8")


def _camera(section: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"source": {"uri": "x.mp4"}, **(section or {})}


def _field_models(annotation: Any) -> list[type[BaseModel]]:
    """The config models a field's annotation holds (a union's members, a dict's values), however nested."""
    found, todo = [], [annotation]
    while todo:
        a = todo.pop()
        if isinstance(a, type) and issubclass(a, BaseModel):
            found.append(a)
        todo.extend(typing.get_args(a))
    return found


def _unknown_part(setting: str) -> str | None:
    """The first part of a dotted setting that no config model of its place has; None where all are fields.
    ``cameras.<name>.x`` and ``camera_defaults.x`` are a camera's ``x``; ``ops.camera_ports.<camera>`` a key."""
    parts = setting.split(".")
    if parts[0] == "cameras":
        models, parts = [CameraConfig], parts[2:]
    elif parts[0] == "camera_defaults":
        models, parts = [CameraConfig], parts[1:]
    else:
        models = [CameraConfig if parts[0] in CameraConfig.model_fields else Settings]
    for i, part in enumerate(parts):
        owners = [m for m in models if part in m.model_fields]
        if not owners:
            return part
        annotations = [m.model_fields[part].annotation for m in owners]
        models = [sub for a in annotations for sub in _field_models(a)]
        if not models and i + 1 < len(
            parts
        ):  # a value: only a dict's keys may follow (ops.camera_ports.lobby)
            return None if any(typing.get_origin(a) is dict for a in annotations) else parts[i + 1]
    return None


def _settings_named(text: str) -> list[str]:
    sections = {*Settings.model_fields, *CameraConfig.model_fields}
    return [
        name
        for name in dict.fromkeys(m.group(1) for m in _SETTING.finditer(text))
        if name.split(".")[0] in sections
        and name.rsplit(".", 1)[-1] not in _FILE_SUFFIXES  # fleet.mp4, fleet.example.yaml: files
        and name not in _NOT_SETTINGS
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_the_docs_yaml_examples_load(doc: Path, tmp_path: Path) -> None:
    blocks = _YAML_BLOCK.findall(_doc_text(doc))
    if doc.name == "README.md" and doc.parent == ROOT:
        assert blocks  # the fleet of your own recordings, scored
    for i, body in enumerate(blocks):
        p = tmp_path / f"example-{i}.yaml"
        p.write_text(body, encoding="utf-8")
        assert load_settings(p).cameras, body


def test_the_readmes_inline_sections_validate(tmp_path: Path) -> None:
    fragments = [
        (m.group(1), m.group(2))
        for doc in DOCS
        for m in _FRAGMENT.finditer(_doc_text(doc))
        if "..." not in m.group(2)  # `embedder: {head: ...}`: a shape, not an example
    ]
    assert len(fragments) >= 5  # the check reads what it should (5 when written)
    bad = []
    for key, value in fragments:
        section = {key: yaml.safe_load(value)}
        if key in CameraConfig.model_fields:
            config: dict[str, Any] = {"cameras": {"a": _camera(section)}}
        else:
            config = {**section, "cameras": {"a": _camera()}}
        p = tmp_path / "fragment.yaml"
        p.write_text(yaml.safe_dump(config), encoding="utf-8")
        try:
            load_settings(p)
        except ConfigError as e:  # every fragment that fails is listed, with why
            bad.append(f"{key}: {value}: {e}")
    assert bad == []


def test_every_setting_the_readmes_name_is_a_field() -> None:
    named = {(doc.name, s) for doc in DOCS for s in _settings_named(_doc_text(doc))}
    assert len(named) >= 50  # the check reads what it should (68 when written)
    unknown = sorted((doc, s, _unknown_part(s)) for doc, s in named if _unknown_part(s) is not None)
    assert unknown == []


@pytest.mark.parametrize(
    ("setting", "part"),
    [
        ("identity.lost_after_s", None),
        ("cameras.<name>.ground_truth", None),
        ("camera_defaults.embedder", None),
        ("ops.camera_ports.lobby", None),
        ("output.video_segment_s", None),
        ("identity.lost_after", "lost_after"),
        ("bridge.tls.kee", "kee"),
        ("output.rotate_mb.x", "x"),
    ],
)
def test_a_setting_is_resolved_through_the_models(setting: str, part: str | None) -> None:
    assert _unknown_part(setting) == part


_SHELL_BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# `reid-daemon [global options] COMMAND ...`, up to a pipe or the next command of the line
_INVOCATION = re.compile(r"reid-daemon((?:\s+-\S+(?:\s+(?:text|json))?)*)\s+([a-z]+)([^|;&]*)")
_OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def _command_lines(text: str) -> list[str]:
    """The reid-daemon command lines of a doc: its shell blocks' lines (continuations joined, comments cut) and
    the commands its prose quotes (`reid-daemon fleet --config ... --report-only`)."""
    lines = []
    for block in _SHELL_BLOCK.findall(text):
        lines += [line.split(" #")[0] for line in block.replace("\\\n", " ").splitlines()]
    return lines + re.findall(r"`([^`\n]*reid-daemon [^`\n]*)`", text)


def test_every_option_the_readmes_commands_give_is_the_commands() -> None:
    import argparse

    from daemon.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    own = {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}
    program = {s for a in parser._actions for s in a.option_strings}
    given, wrong = 0, []
    for doc in DOCS:
        for line in _command_lines(_doc_text(doc)):
            for m in _INVOCATION.finditer(line):
                command = m.group(2)
                if command not in own:
                    wrong.append((doc.name, command, "no such command", line.strip()))
                    continue
                options = _OPTION.findall(m.group(3))
                given += len(options)
                wrong += [(doc.name, command, o, line.strip()) for o in options if o not in own[command]]
                wrong += [
                    (doc.name, "", o, line.strip()) for o in _OPTION.findall(m.group(1)) if o not in program
                ]
    assert given >= 50  # the check reads what it should (72 when written)
    assert wrong == []
