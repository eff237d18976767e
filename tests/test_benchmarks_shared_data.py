"""The benchmarks find the shared data where the tests do ($REID_SHARED_DATA, else ../shared/data beside the
clone; daemon.shared_data), and a benchmark stopped for want of its clip says how to name the folder."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest
from _data import REPO_ROOT, load_benchmark

from daemon.shared_data import SHARED_DATA_ENV

CLIP_SCRIPTS = ("adapt_bench", "codec_bench", "compare_peers", "detector_sweep", "embedder_bench")
"""The benchmarks whose --video / --gt default to pets_clip's VIDEO / GT."""


@pytest.fixture(autouse=True)
def _modules_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmarks loaded here with another $REID_SHARED_DATA leave sys.modules as it was: a later test's
    script importing pets_clip must not get one whose clip is in a temporary folder."""
    for name in ("pets_clip", "soak", *CLIP_SCRIPTS):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))  # recorded, present or not, then gone
        monkeypatch.delitem(sys.modules, name)


def _defaults(expected: Path) -> None:
    """Every benchmark's default clip (and gt) lies in the PETS09-S2L1 folder ``expected``."""
    pets_clip = load_benchmark("pets_clip")
    video, gt = pets_clip.VIDEO, pets_clip.GT
    assert (video, gt) == (expected / "vtest.avi", expected / "gt" / "gt.txt")
    for name in CLIP_SCRIPTS:  # each binds pets_clip's names (as its --video and --gt defaults) at import
        script = load_benchmark(name)
        assert (video, gt) == (script.VIDEO, script.GT), name
    assert load_benchmark("soak").parse_args([]).video == expected / "vtest.avi"


def test_the_benchmarks_take_the_clip_from_reid_shared_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pets_clip looked in parents[2]/shared/data and soak in ROOT.parent/shared/data whatever
    $REID_SHARED_DATA said, so a clone not beside shared/ could not run them with the data named."""
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path / "data"))
    _defaults(tmp_path / "data" / "pets09-s2l1")
    monkeypatch.setenv(
        SHARED_DATA_ENV, "elsewhere/data"
    )  # relative: from the repository root, as for the tests
    _defaults(REPO_ROOT / "elsewhere" / "data" / "pets09-s2l1")
    monkeypatch.delenv(SHARED_DATA_ENV)
    _defaults((REPO_ROOT.parent / "shared" / "data" / "pets09-s2l1").resolve())


def test_a_benchmark_without_its_clip_says_how_to_name_the_shared_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each way a benchmark stops for want of the clip names the folder looked in and $REID_SHARED_DATA."""
    empty = tmp_path / "empty"
    monkeypatch.setenv(SHARED_DATA_ENV, str(empty))
    named = re.escape(str(empty))
    hint = rf"the shared data folder is {named} \(\${SHARED_DATA_ENV}={named}\); name another with {SHARED_DATA_ENV}="
    pets_clip = load_benchmark("pets_clip")
    with pytest.raises(SystemExit, match=rf"error: .*gt\.txt: file not found; {hint}"):
        pets_clip.load_gt(pets_clip.GT)
    with pytest.raises(SystemExit, match=rf"cannot open .*vtest\.avi; {hint}"):
        pets_clip.read_frames(pets_clip.VIDEO)
    clip = argparse.Namespace(video=pets_clip.VIDEO, gt=pets_clip.GT)
    assert re.fullmatch(
        rf"the PETS09-S2L1 clip is absent \(.*\); {hint}.*",
        load_benchmark("codec_bench").real_embeddings(clip),
    )
    compare_peers = load_benchmark("compare_peers")
    with pytest.raises(compare_peers.Missing, match=rf"vtest\.avi not found: .*gt\.txt; {hint}"):
        compare_peers.check_data(clip)
    assert load_benchmark("adapt_bench").main(["--no-progress"]) == 2
    assert f"{SHARED_DATA_ENV}={empty}" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=rf"soak: --video .*vtest\.avi not found; {hint}"):
        load_benchmark("soak").main(["--out", str(tmp_path / "soak")])
    assert not (tmp_path / "soak").exists()


def test_a_clip_that_is_there_adds_no_hint(tmp_path: Path) -> None:
    """The hint is for a file absent: a clip that cannot be read is named alone."""
    unreadable = tmp_path / "clip.avi"
    unreadable.write_bytes(b"not a video")
    with pytest.raises(SystemExit, match=r"^cannot open .*clip\.avi$"):
        load_benchmark("pets_clip").read_frames(unreadable)
