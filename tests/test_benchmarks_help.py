"""Every benchmark script's --help: the whole of its docstring, examples included."""

from __future__ import annotations

import re

import pytest
from _data import REPO_ROOT, load_benchmark

SCRIPTS = sorted(
    p.stem
    for p in (REPO_ROOT / "benchmarks").glob("*.py")
    if not p.stem.startswith("_") and "\ndef main(" in p.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_the_docstring_with_its_examples(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """who_bench, similarity_scale and soak gave argparse only their docstring's first paragraph (or line), so
    --help left out the example commands the docstring opens with."""
    module = load_benchmark(name)
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    shown = capsys.readouterr().out
    examples = re.findall(r"^    (?:\.venv/bin/)?python benchmarks/.*$", module.__doc__, flags=re.M)
    assert examples, f"{name}: no example command in its docstring"
    for line in examples:
        assert line in shown, (name, line)
