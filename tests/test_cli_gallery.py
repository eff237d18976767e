"""CLI smoke tests of embed / enroll / verify / recognize / search on real PETS09 crops, and bad input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from _crops import write_frames, write_reference_crops
from _data import require_pets09_video
from _unreadable import unreadable_file

from daemon.cli import main
from daemon.embedding import EmbeddingResult
from daemon.gallery import Gallery

Capture = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """refs/ (24 crops of 8 people) and frames/ (4 whole frames) in one module-wide folder."""
    root = tmp_path_factory.mktemp("gallery-cli")
    write_reference_crops(root / "refs", identities=8, per_identity=3)
    write_frames(root / "frames", [40, 100, 160, 300])
    return root


@pytest.fixture(scope="module")
def gallery(data: Path, mobilenet_model: Path) -> Path:
    path = data / "people.npz"
    assert (
        main(["-q", "enroll", str(data / "refs"), "--gallery", str(path), "--model", str(mobilenet_model)])
        == 0
    )
    return path


def _model(mobilenet_model: Path) -> list[str]:
    return ["--model", str(mobilenet_model), "--no-progress"]


# ---------------------------------------------------------------------------------------------- commands


def test_embed_files_boxes_and_video(
    data: Path, mobilenet_model: Path, ssdlite_model: Path, capsys: Capture
) -> None:
    out = data / "two.npz"
    refs = sorted((data / "refs").glob("*.jpg"))[:2]
    assert main(["-q", "embed", *map(str, refs), "--out", str(out), *_model(mobilenet_model)]) == 0
    assert "2 embedding(s), 1280-d" in capsys.readouterr().out
    saved = EmbeddingResult.load(out)
    assert len(saved) == 2 and [c.source for c in saved.crops] == [str(p) for p in refs]

    frame = data / "frames" / "frame_0100.jpg"
    args = [
        "-q",
        "embed",
        str(frame),
        "--box",
        "374",
        "192",
        "403",
        "270",
        "--box",
        "0",
        "0",
        "50",
        "90",
        "--json",
    ]
    assert main([*args, *_model(mobilenet_model)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dim"] == 1280 and [c["box"] for c in doc["crops"]] == [[374, 192, 403, 270], [0, 0, 50, 90]]

    video = require_pets09_video()
    vout = data / "video.json"
    args = ["-q", "embed", str(video), "--detect", "--every", "100", "--max-frames", "2", "--out", str(vout)]
    assert main([*args, *_model(mobilenet_model)]) == 0
    frames = {c.frame for c in EmbeddingResult.load(vout).crops}
    assert frames <= {0, 100} and frames


def test_embed_records_a_box_past_the_edge_as_clipped(
    data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    # Regression: --box 700 500 900 900 on a 768x576 frame embedded the crop clipped to the frame but recorded
    # the box as given, 132x76 pixels of it outside the image; a box wholly outside was refused without
    # naming --box.
    frame = str(data / "frames" / "frame_0100.jpg")
    out = tmp_path / "edge.json"
    args = ["-q", "embed", frame, "--box", "700", "500", "900", "900", "--box", "-20", "-10", "40", "90"]
    assert main([*args, "--out", str(out), *_model(mobilenet_model)]) == 0
    saved = EmbeddingResult.load(out)
    assert [c.box for c in saved.crops] == [(700.0, 500.0, 768.0, 576.0), (0.0, 0.0, 40.0, 90.0)]
    inside = ["-q", "embed", frame, "--box", "700", "500", "768", "576", "--box", "0", "0", "40", "90"]
    assert main([*inside, "--out", str(tmp_path / "inside.json"), *_model(mobilenet_model)]) == 0
    assert (EmbeddingResult.load(tmp_path / "inside.json").embeddings == saved.embeddings).all()
    capsys.readouterr()
    assert main(["-q", "embed", frame, "--box", "800", "0", "900", "90", *_model(mobilenet_model)]) == 2
    err = capsys.readouterr().err
    assert "--box 800,0,900,90" in err and "768x576" in err, err


def test_enroll_verify_recognize(data: Path, gallery: Path, mobilenet_model: Path, capsys: Capture) -> None:
    g = Gallery.load(gallery)
    assert len(g) == 24 and len(g.unique_labels) == 8

    assert main(["verify", "--gallery", str(gallery)]) == 0
    text = capsys.readouterr().out
    assert "24 references of 8 labels" in text and "advice:" in text
    assert main(["verify", "-g", str(gallery), "--json", "--pairs", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["references"] == 24 and len(doc["confusable_pairs"]) == 3 and doc["advice"]

    ref = data / "refs" / "person_09--2.jpg"
    assert (
        main(["-q", "recognize", str(ref), "-g", str(gallery), "-k", "3", "--json", *_model(mobilenet_model)])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    best = doc["queries"][0]["matches"][0]
    assert best["label"] == "person 09" and best["similarity"] > 0.999  # the enrolled image itself
    assert len(doc["queries"][0]["matches"]) <= 3


def test_enroll_append_json_and_sets(
    data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    for src in sorted((data / "refs").glob("person_0[12]--*.jpg")):
        (refs / f"A1-{src.name}").write_bytes(src.read_bytes())
    out = tmp_path / "g.json"
    assert main(["-q", "enroll", str(refs), "-g", str(out), "--json", *_model(mobilenet_model)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["labels"] == ["person 01", "person 02"] and {e["set"] for e in doc["enrolled"]} == {"A1"}
    for src in sorted((data / "refs").glob("person_04--*.jpg")):  # new photos, of set A1 and of another
        (refs / f"A1-{src.name}").write_bytes(src.read_bytes())
        (refs / f"B2-{src.name}").write_bytes(src.read_bytes())
    args = ["-q", "enroll", str(refs), "-g", str(out), "--append", "--set", "A1", *_model(mobilenet_model)]
    assert main(args) == 0  # A1's new photos alone: those enrolled already are skipped as such
    assert len(Gallery.load(out)) == 6 + 3
    assert main([*args, "--threshold", "0.9"]) == 0  # a new gallery's setting: the file keeps its own, said
    assert f"{out} keeps the settings it was made with, not --threshold 0.9 (its threshold" in caplog.text
    assert Gallery.load(out).threshold != 0.9


@pytest.mark.parametrize("suffix", [".npz", ".json", ".rdg"])
def test_unenroll_removes_a_label_and_keeps_the_rest_and_the_format(
    gallery: Path, tmp_path: Path, capsys: Capture, suffix: str
) -> None:
    """There was no way to remove a person (someone who left, a wrong enrolment, a request for erasure) from a
    gallery but to enrol it anew without them; `unenroll LABEL... --gallery G` removes every entry of each
    label and saves the gallery in its format, its settings, embedder record and the other rows (in their
    order) as they were. An unknown label is an error naming it and the gallery, and nothing changes."""
    before = Gallery.load(gallery)
    path = tmp_path / f"people{suffix}"
    before.save(path)
    start = path.read_bytes()
    assert main(["unenroll", "person 01", "nobody", "-g", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"the gallery {path} has no label 'nobody' (it has 'person 01'" in err, err
    assert "nothing was removed" in err and path.read_bytes() == start

    assert main(["unenroll", "person  01", "person 04", "-g", str(path)]) == 0  # white space as enroll's
    out = capsys.readouterr().out
    assert f"removed 6 entries of 2 label(s) from {path}: 'person 01' (3), 'person 04' (3)" in out, out
    after = Gallery.load(path)
    kept = [i for i, label in enumerate(before.labels) if label not in ("person 01", "person 04")]
    assert after.labels == [before.labels[i] for i in kept] and len(after) == 18
    np.testing.assert_array_equal(after.embeddings, before.embeddings[kept])
    assert after.config == before.config and after.embedder == before.embedder and after.embedder

    assert main(["unenroll", *after.unique_labels, "-g", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gallery_size"] == 0 and sum(doc["removed_labels"].values()) == 18
    empty = Gallery.load(path)
    assert len(empty) == 0 and empty.embedder == before.embedder and empty.dim == before.dim
    assert main(["unenroll", "person 02", "-g", str(path)]) == 1
    assert "the gallery is empty" in capsys.readouterr().err
    assert main(["unenroll", "x", "-g", str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz: gallery file not found" in capsys.readouterr().err
    assert not (tmp_path / ".missing.npz.lock").exists()


def test_a_gallery_made_read_only_is_not_written_over(
    gallery: Path, data: Path, tmp_path: Path, capsys: Capture
) -> None:
    """`unenroll` and `enroll --append` replaced a gallery its owner had made read-only (chmod 444, in a folder
    they may write to): the save renames a new file over it, which a file's mode does not stop. Both refuse it,
    naming the file, and leave it byte for byte (enroll before any model loads: here none exists)."""
    path = tmp_path / "people.npz"
    Gallery.load(gallery).save(path)
    start = path.read_bytes()
    path.chmod(0o444)
    assert main(["unenroll", "person 01", "-g", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"cannot save the gallery as {path}: the file is read-only (mode 444)" in err, err
    unloaded = ["--model", str(tmp_path / "never-loaded.onnx"), "--no-progress"]
    assert main(["enroll", str(data / "refs"), "-g", str(path), "--append", *unloaded]) == 2
    err = capsys.readouterr().err
    assert f"{path} is read-only (mode 444)" in err and "never-loaded" not in err, err
    assert path.read_bytes() == start and stat.S_IMODE(path.stat().st_mode) == 0o444
    path.chmod(0o644)
    assert main(["unenroll", "person 01", "-g", str(path)]) == 0


def test_unenroll_folds_a_label_to_lower_case_where_enroll_does(
    data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """With the config's enroll.lowercase, enroll of Person_01--1.jpg (and serve of the label 'Person 01')
    enrols 'person 01', but `unenroll "Person 01" --config` looked for 'Person 01' as given and only tidied its
    white space: 'no label', exit 1, so the person could not be removed by the name they were enrolled under.
    unenroll makes of a label what enroll makes of it, lower case included; without the setting a label's case
    is its own (Person 04 is not person 04)."""
    refs = tmp_path / "refs"
    refs.mkdir()
    for src in sorted((data / "refs").glob("person_0[14]--*.jpg")):
        (refs / src.name.replace("person", "Person")).write_bytes(src.read_bytes())
    cfg = tmp_path / "lower.yaml"
    cfg.write_text("cameras:\n  door:\n    source: {uri: clip.mp4}\nenroll: {lowercase: true}\n")
    path = tmp_path / "people.npz"
    enrol = ["-q", "enroll", str(refs), "-g", str(path), "-c", str(cfg), *_model(mobilenet_model)]
    assert main(enrol) == 0
    assert Gallery.load(path).unique_labels == ["person 01", "person 04"]
    capsys.readouterr()

    assert main(["unenroll", "Person 04", "-g", str(path)]) == 1  # the case is the label's own by default
    assert "has no label 'Person 04'" in capsys.readouterr().err
    assert main(["unenroll", "Person  01", "-g", str(path), "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"removed 3 entries of 1 label(s) from {path}: 'person 01' (3)" in out, out
    assert Gallery.load(path).labels == ["person 04"] * 3


def test_enroll_refuses_to_replace_an_existing_gallery_without_append_or_replace(
    data: Path, gallery: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """enroll without --append wrote a new gallery over an existing one, saying only 'saved' (24 entries became
    1); it is refused before the models load, naming the file, what it holds and both options."""
    path = tmp_path / "people.npz"
    path.write_bytes(gallery.read_bytes())
    before = path.read_bytes()
    one = tmp_path / "one"
    one.mkdir()
    (one / "jane_doe.jpg").write_bytes((data / "refs" / "person_09--1.jpg").read_bytes())
    unloaded = ["--model", str(tmp_path / "never-loaded.onnx"), "--no-progress"]  # refused before it loads
    assert main(["enroll", str(one), "-g", str(path), *unloaded]) == 2
    err = capsys.readouterr().err
    assert f"the gallery file {path} exists and holds 24 entries of 8 label(s)" in err, err
    assert "--append adds to it, --replace writes a new gallery over it" in err
    assert path.read_bytes() == before
    assert main(["enroll", str(one), "-g", str(path), "--append", "--replace", *unloaded]) == 2
    assert "give one" in capsys.readouterr().err and path.read_bytes() == before
    path.write_bytes(b"not a gallery")
    assert main(["enroll", str(one), "-g", str(path), *unloaded]) == 2
    err = capsys.readouterr().err  # --append would refuse it too: only --replace is offered
    assert "exists and cannot be read as a gallery" in err and "--append" not in err, err
    assert "--replace writes a new gallery over it" in err
    path.write_bytes(before)
    assert main(["-q", "enroll", str(one), "-g", str(path), "--replace", *_model(mobilenet_model)]) == 0
    assert "saved:" in capsys.readouterr().out and Gallery.load(path).labels == ["jane doe"]


def test_search_folder_and_video(
    data: Path, gallery: Path, mobilenet_model: Path, ssdlite_model: Path, capsys: Capture
) -> None:
    out = data / "hits"
    query = data / "refs" / "person_09--1.jpg"
    args = ["-q", "search", str(data / "frames"), "--query", str(query), "-k", "4", "--out", str(out)]
    assert main([*args, *_model(mobilenet_model)]) == 0
    text = capsys.readouterr().out
    assert "hit(s)" in text and "frame_0" in text
    hits = json.loads((out / "hits.json").read_text())
    assert 1 <= len(hits) <= 4 and len(list(out.glob("*.jpg"))) == len(hits)
    assert sorted(h["file"] for h in hits) == sorted(p.name for p in out.glob("*.jpg"))
    # the same folder again with fewer hits: an earlier search's crops no longer sit among them as if hits
    (out / "notes.jpg").write_bytes(b"not ours")
    assert main([*args[:-4], "-k", "1", "--out", str(out), *_model(mobilenet_model)]) == 0
    capsys.readouterr()
    (hit,) = json.loads((out / "hits.json").read_text())
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted([hit["file"], "notes.jpg"])
    (out / "notes.jpg").unlink()

    video = require_pets09_video()
    args = [
        "-q",
        "search",
        str(video),
        "-g",
        str(gallery),
        "--label",
        "person 09",
        "--every",
        "100",
        "--max-frames",
        "2",
        "--json",
    ]
    assert main([*args, *_model(mobilenet_model)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scanned"] == 2 and all(h["frame"] in (0, 100) for h in doc["hits"])
    assert all(h["similarity"] >= doc["threshold"] for h in doc["hits"])


# ---------------------------------------------------------------------------------------------- bad input


def test_verify_corrupt_or_missing_gallery_exits_1_naming_it(tmp_path: Path, capsys: Capture) -> None:
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["verify", "-g", str(bad)]) == 1
    assert "broken.npz" in capsys.readouterr().err
    assert main(["verify", "-g", str(tmp_path / "gone.npz")]) == 1
    assert "gone.npz" in capsys.readouterr().err


def test_enroll_append_to_an_unreadable_gallery_exits_1_and_keeps_it(
    data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """`enroll --append` to a .rdg gallery it could not read ended in an OSError traceback; it is one line
    naming the file, and the file (here a link) is left as it was."""
    path = unreadable_file(tmp_path / "people.rdg")
    args = ["enroll", str(data / "refs"), "-g", str(path), "--append", *_model(mobilenet_model)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err == f"error: {path}: cannot read the gallery file: Input/output error\n", err
    assert path.is_symlink() and [p.name for p in tmp_path.iterdir()] == ["people.rdg"]


def test_an_output_file_that_cannot_be_written_is_named_before_the_work(
    data: Path, tmp_path: Path, capsys: Capture
) -> None:
    """`enroll -g` naming a folder, or `embed --out` a file under a file, embedded every photo or frame first
    (minutes for a big folder or a video) and then failed to save, the work lost; it is bad usage (exit 2)
    named before any model loads (here none: the model given does not exist)."""
    (tmp_path / "people.npz").mkdir()
    (tmp_path / "afile").write_text("kept\n")
    model = ["--model", str(tmp_path / "never-loaded.onnx"), "--no-progress"]
    refs = str(data / "refs")
    for args, problem in (
        (
            ["enroll", refs, "-g", str(tmp_path / "people.npz")],
            f"--gallery {tmp_path / 'people.npz'} is a folder",
        ),
        (
            ["embed", refs, "--out", str(tmp_path / "afile" / "e.npz")],
            f"--out {tmp_path / 'afile' / 'e.npz'}: {tmp_path / 'afile'} is not a folder",
        ),
    ):
        assert main([*args, *model]) == 2
        assert capsys.readouterr().err == f"error: {problem}\n"
    assert (tmp_path / "afile").read_text() == "kept\n" and not any((tmp_path / "people.npz").iterdir())


def test_an_output_name_too_long_for_a_file_is_named_before_the_work(
    data: Path, tmp_path: Path, capsys: Capture
) -> None:
    """An output path with a name longer than a file name may be (300 bytes) ended the check of the path in an
    OSError traceback ('File name too long'); it is named like any other path that cannot be written."""
    model = ["--model", str(tmp_path / "never-loaded.onnx"), "--no-progress"]
    long = "m" * 300
    for args, option, path in (
        (["embed", str(data / "refs"), "--out"], "--out", tmp_path / f"{long}.npz"),
        (["embed", str(data / "refs"), "--out"], "--out", tmp_path / long / "e.npz"),
        (["enroll", str(data / "refs"), "-g"], "--gallery", tmp_path / f"{long}.npz"),
    ):
        assert main([*args, str(path), *model]) == 2
        assert capsys.readouterr().err == f"error: {option} {path}: File name too long\n"


def test_search_out_that_cannot_be_a_folder_is_named_before_the_search(
    data: Path, tmp_path: Path, capsys: Capture
) -> None:
    """`search --out` naming a file searched the whole folder or video first (minutes for a video) and then
    failed to write the hits, the search lost; it is bad usage (exit 2) named before any model loads."""
    taken = tmp_path / "hits.txt"
    taken.write_text("kept\n")
    args = ["search", str(data / "frames"), "--query", str(data / "refs" / "person_09--2.jpg")]
    args += ["--out", str(taken), "--model", str(tmp_path / "never-loaded.onnx"), "--no-progress"]
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: --out {taken} is not a folder\n"
    assert taken.read_text() == "kept\n"


def test_enroll_missing_folder_exits_1_naming_it(tmp_path: Path, capsys: Capture) -> None:
    assert main(["enroll", str(tmp_path / "no-refs"), "-g", str(tmp_path / "g.npz")]) == 1
    assert "no-refs" in capsys.readouterr().err


def test_bad_options_exit_2(tmp_path: Path, capsys: Capture) -> None:
    assert main(["enroll", str(tmp_path), "-g", str(tmp_path / "g.txt")]) == 2
    assert "g.txt" in capsys.readouterr().err
    assert main(["embed", "a.jpg", "b.jpg", "--box", "0", "0", "1", "1"]) == 2
    assert "--box" in capsys.readouterr().err
    assert main(["embed", "a.jpg", "--largest"]) == 2  # it did nothing without --detect, silently
    assert "--largest picks among the people --detect finds" in capsys.readouterr().err
    assert main(["recognize", "a.jpg", "-g", "g.npz", "--threshold", "3"]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert main(["verify", "-g", "g.npz", "--pairs", "-1"]) == 2
    assert (
        "--pairs (recognition.confusable_pairs)" in capsys.readouterr().err
    )  # the option, not only the field
    assert main(["embed", "clip.mp4", "--every", "200"]) == 2
    assert (
        "--every (recognition.video_every): Input should be less than or equal to 100"
        in capsys.readouterr().err
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("cameras:\n  a:\n    source: {uri: x.mp4}\n    embedder: {type: none}\n")
    assert main(["embed", "a.jpg", "--config", str(cfg)]) == 2
    assert "embedder.type is 'none'" in capsys.readouterr().err


def test_camera_without_config_exits_2_rather_than_being_ignored(tmp_path: Path, capsys: Capture) -> None:
    # Regression: `embed a.jpg --camera lobby` (no --config) embedded with the default models, as if the camera
    # had been found; --camera names a camera of --config, so without one it was silently ignored.
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    for command in (["embed", str(image)], ["recognize", str(image), "-g", str(tmp_path / "g.npz")]):
        assert main([*command, "--camera", "lobby"]) == 2
        assert "--camera lobby names a camera of --config: give --config too" in capsys.readouterr().err


def test_video_and_folder_options_without_a_video_or_folder_exit_2_naming_them(
    tmp_path: Path, capsys: Capture
) -> None:
    # Regression: `embed photos/ --every 5 --max-frames 2` embedded every image of the folder, and `search
    # one.jpg --recursive ...` searched the one image, as if the options had been followed: they take a video's
    # frames and a folder's sub-folders, and were dropped without a word. Refused before the models load.
    folder, image, video = tmp_path / "photos", tmp_path / "a.jpg", tmp_path / "clip.mp4"
    folder.mkdir()
    image.write_bytes(b"")
    video.write_bytes(b"")
    for command in (["embed", str(folder), str(image)], ["search", str(folder), "-q", str(image)]):
        assert main([*command, "--every", "5", "--max-frames", "2"]) == 2
        said = capsys.readouterr().err
        assert (
            "--every and --max-frames take frames of a video" in said and "no video: leave them out" in said
        )
        assert main([*command, "--max-frames", "2"]) == 2
        assert "--max-frames takes frames of a video" in capsys.readouterr().err
    assert main(["embed", str(image), "--recursive"]) == 2
    assert f"--recursive takes the images in sub-folders of a folder, and {image} is no folder" in (
        capsys.readouterr().err
    )
    assert main(["search", str(video), "-q", str(image), "--recursive"]) == 2
    assert "--recursive takes the images in sub-folders" in capsys.readouterr().err


def test_a_negative_max_frames_exits_2_naming_the_option(tmp_path: Path, capsys: Capture) -> None:
    # Regression: search --max-frames -5 ended in a pydantic ValidationError traceback from the video
    # source, and embed printed '1 validation error for SourceConfig' (naming no option).
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    for command in (["search", str(video), "-q", "q.jpg"], ["embed", str(video)]):
        for value, says in (
            ("-5", "must be 0 (no limit) or more frames, not -5"),
            ("x", "not a whole number"),
        ):
            with pytest.raises(SystemExit) as stop:
                main([*command, "--max-frames", value])
            assert stop.value.code == 2
            assert f"argument --max-frames: {says}" in capsys.readouterr().err


def test_search_without_a_query_exits_2(
    data: Path, mobilenet_model: Path, ssdlite_model: Path, capsys: Capture
) -> None:
    assert main(["search", str(data / "frames"), *_model(mobilenet_model)]) == 2
    assert "--query" in capsys.readouterr().err


def test_unreadable_image_exits_1_naming_it(
    gallery: Path, tmp_path: Path, mobilenet_model: Path, capsys: Capture
) -> None:
    bad = tmp_path / "garbled.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["recognize", str(bad), "-g", str(gallery), *_model(mobilenet_model)]) == 1
    assert "garbled.jpg" in capsys.readouterr().err
    assert main(["embed", str(bad), *_model(mobilenet_model)]) == 1
    assert "garbled.jpg" in capsys.readouterr().err


def test_embed_skips_unreadable_images_as_enroll_and_search_do(
    data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: `embed DIR` stopped (exit 1, nothing written) at the first image it could not decode, where
    enroll and search skip it with a warning and list it; it skips such images (and lists the folder's files
    that are not images), keeps every row of the others, and says how many it skipped. A folder of which no
    image can be read is an error naming the folder."""
    folder = tmp_path / "shots"
    folder.mkdir()
    good = sorted((data / "refs").glob("*.jpg"))[:3]
    for i, src in enumerate(good):
        (folder / f"{i}_good.jpg").write_bytes(src.read_bytes())
    whole = good[0].read_bytes()
    (folder / "1_cut.jpg").write_bytes(whole[: len(whole) // 3])  # a truncated JPEG: its header reads
    (folder / "2_notes.jpg").write_text("a text file named .jpg\n")
    (folder / "readme.txt").write_text("not an image\n")
    out = tmp_path / "shots.npz"
    code = main(["embed", str(folder), "--out", str(out), *_model(mobilenet_model)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    saved = EmbeddingResult.load(out)
    assert [Path(c.source).name for c in saved.crops] == ["0_good.jpg", "1_good.jpg", "2_good.jpg"]
    assert "3 embedding(s)" in printed and "skipped 3 file(s):" in printed, printed
    assert f"{folder / '2_notes.jpg'}: cannot decode image" in printed, printed
    assert f"{folder / 'readme.txt'}: not an image file (.txt)" in printed, printed
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [m for m in warned if m.startswith("skipping cannot decode image")] == [
        f"skipping cannot decode image {folder / n} (corrupt, empty or not an image)"
        for n in ("1_cut.jpg", "2_notes.jpg")
    ], warned
    assert main(["embed", str(folder), "--json", *_model(mobilenet_model)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["embeddings"]) == 3 and [Path(s["path"]).name for s in doc["skipped"]] == [
        "readme.txt",
        "1_cut.jpg",
        "2_notes.jpg",
    ]
    given = [str(folder / "0_good.jpg"), str(folder / "2_notes.jpg"), str(folder / "1_good.jpg")]
    assert main(["embed", *given, "--json", *_model(mobilenet_model)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [Path(c["source"]).name for c in doc["crops"]] == ["0_good.jpg", "1_good.jpg"]
    assert [s["path"] for s in doc["skipped"]] == [given[1]]
    missing = str(folder / "gone.jpg")  # found before the first is embedded, not after
    assert main(["embed", given[0], missing, *_model(mobilenet_model)]) == 1
    assert f"image not found: {missing}" in capsys.readouterr().err

    for name in ("0_good.jpg", "1_good.jpg", "2_good.jpg"):
        (folder / name).unlink()
    assert main(["embed", str(folder), "--out", str(tmp_path / "none.npz"), *_model(mobilenet_model)]) == 1
    err = capsys.readouterr().err
    assert f"no image of {folder} could be read" in err and "1_cut.jpg" in err, err
    assert not (tmp_path / "none.npz").exists()


def test_missing_model_exits_1_with_fetch_hint(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("REID_MODELS_DIR", str(tmp_path / "empty-cache"))
    assert main(["embed", str(data / "refs")]) == 1
    assert "reid-daemon models fetch mobilenetv2-imagenet" in capsys.readouterr().err


def test_models_come_from_the_config_camera(data: Path, mobilenet_model: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "cameras:\n  door:\n    source: {uri: x.mp4}\n"
        f"    embedder: {{model: {mobilenet_model}, flip_average: true}}\n"
    )
    out = tmp_path / "e.json"
    ref = data / "refs" / "person_01--1.jpg"
    assert main(["-q", "embed", str(ref), "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    meta = EmbeddingResult.load(out).meta
    assert meta.flip_average and meta.model == str(mobilenet_model)
    assert main(["-q", "embed", str(ref), "-c", str(cfg), "--no-flip", "--out", str(out)]) == 0
    assert not EmbeddingResult.load(out).meta.flip_average


def test_config_sections_set_the_defaults_of_new_galleries(
    data: Path, mobilenet_model: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        "cameras:\n  door:\n    source: {uri: door.mp4}\n"
        f"    embedder: {{model: {mobilenet_model}}}\n"
        "gallery: {threshold: 0.33, max_per_label: 2, drop_policy: drop_latest}\n"
    )
    out = tmp_path / "g.npz"
    assert main(["-q", "enroll", str(data / "refs"), "--gallery", str(out), "--config", str(cfg)]) == 0
    g = Gallery.load(out)
    assert g.threshold == pytest.approx(0.33)
    assert len(g) == 2 * len(g.unique_labels)  # 3 crops each, capped at 2, the latest rejected


def test_a_gallery_remembers_its_model_and_refuses_another_of_the_same_width(
    data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """A gallery enrolled with one model was searched with any other model of the same width (two heads of
    one size, two builds of a network): every match was nonsense and nothing said so."""
    path = tmp_path / "people.json"
    args = ["-q", "enroll", str(data / "refs"), "--gallery", str(path), *_model(mobilenet_model)]
    assert main(args) == 0
    made_by = Gallery.load(path).embedder
    assert made_by is not None and made_by.startswith(f"{mobilenet_model.name} sha256:")
    query = str(data / "refs" / "person_09--2.jpg")

    renamed = tmp_path / "same-weights.onnx"  # the same model under another name: still the same model
    renamed.symlink_to(mobilenet_model)
    assert main(["-q", "recognize", query, "-g", str(path), "--model", str(renamed), "--no-progress"]) == 0
    capsys.readouterr()

    doc = json.loads(path.read_text())  # as if another model of 1280-d had enrolled it
    doc["embedder"] = "other.onnx sha256:0123456789abcdef"
    del doc["sha256"]  # edited by hand: its checksum would refuse the edit
    path.write_text(json.dumps(doc))
    assert main(["-q", "recognize", query, "-g", str(path), *_model(mobilenet_model)]) == 1
    err = capsys.readouterr().err
    assert "enrolled with other.onnx sha256:0123456789abcdef" in err and mobilenet_model.name in err
    assert main([*args, "--append"]) == 1
    assert "enrolled with other.onnx" in capsys.readouterr().err

    del doc["embedder"]  # a gallery of before: not known, so not refused
    path.write_text(json.dumps(doc))
    assert main(["-q", "recognize", query, "-g", str(path), *_model(mobilenet_model)]) == 0


def test_a_gallery_remembers_its_crop_settings_and_refuses_others(
    data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """A gallery enrolled with mirror averaging or a colour normalisation (a fleet config's embedder) was
    searched with the plain model, the same file, without a word; one crop's two vectors are then as far
    apart as two people's (0.88 with embedder.colour_norm luminance, 0.79 with detail_height 64)."""
    path = tmp_path / "people.npz"
    lum = tmp_path / "lum.yaml"
    camera = "cameras:\n  a:\n    source: {uri: a.mp4}\n"
    lum.write_text(f"{camera}    embedder: {{model: {mobilenet_model}, colour_norm: luminance}}\n")
    query = str(data / "refs" / "person_09--2.jpg")
    args = ["-q", "enroll", str(data / "refs"), "--gallery", str(path), "--flip", *_model(mobilenet_model)]
    assert main(args) == 0
    assert "flip" in str(Gallery.load(path).embedder)
    assert main(["-q", "recognize", query, "-g", str(path), "--flip", *_model(mobilenet_model)]) == 0
    capsys.readouterr()
    assert main(["-q", "recognize", query, "-g", str(path), *_model(mobilenet_model)]) == 1
    err = capsys.readouterr().err
    assert "enrolled with" in err and "flip" in err, err
    assert (
        main(["-q", "enroll", str(data / "refs"), "-g", str(path), "-c", str(lum), "--flip", "--append"]) == 1
    )
    assert "colour_norm luminance" in capsys.readouterr().err


def test_enroll_label_from_folder(data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture) -> None:
    refs = tmp_path / "people"
    for crop in sorted((data / "refs").glob("person_0[12]*.jpg")):  # person_01.jpg, person_01--2.jpg, ...
        person = refs / crop.name.split("--")[0].removesuffix(".jpg")
        person.mkdir(parents=True, exist_ok=True)
        (person / f"{len(list(person.iterdir())) + 1}.jpg").write_bytes(crop.read_bytes())
    out = tmp_path / "g.npz"
    args = ["-q", "enroll", str(refs), "-g", str(out), "--label-from", "folder", *_model(mobilenet_model)]
    assert main(args) == 0
    assert sorted(Gallery.load(out).unique_labels) == ["person 01", "person 02"]
    assert len(Gallery.load(out)) == 6


def test_an_embed_out_file_it_cannot_write_exits_2_before_any_work(tmp_path: Path, capsys: Capture) -> None:
    """`embed ... --out emb.txt` loaded the models, embedded every input, then failed (exit 1) on the suffix."""
    missing = tmp_path / "not-read.jpg"  # never opened: the option is checked first
    assert main(["embed", str(missing), "--out", str(tmp_path / "emb.txt")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "emb.txt" in err and ".npz or .json" in err and "not-read" not in err


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["-q", "q.jpg", "-g", "g.npz", "--label", "jane"], "--query or --gallery with --label"),
        (["-g", "g.npz", "--label", "jane", "--query-detect"], "--query-detect"),
    ],
)
def test_search_options_it_would_ignore_exit_2_before_the_models_load(
    options: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    """`search --query q.jpg --gallery g.npz --label jane` searched for q.jpg at the default threshold, the
    gallery and label unread; --query-detect without --query did nothing. Both ran and exited 0."""
    monkeypatch.setenv("REID_MODELS_DIR", str(tmp_path / "no-models"))  # a model load would exit 1
    assert main(["search", str(tmp_path), *options]) == 2
    assert says in capsys.readouterr().err


def test_a_gallery_of_the_previous_version_says_its_crop_settings_are_not_known(
    data: Path, mobilenet_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A gallery written before galleries recorded their crop settings (the previous release: 'model
    sha256:...' alone) enrolled with --flip was searched without it, and appended to without it, without a
    word (0.991 where its own crop scores 1.000); it is still used (checked by model only) but each use says
    the crop settings are not known, which they are now, and how to record them."""
    path = tmp_path / "people.json"
    args = ["-q", "enroll", str(data / "refs"), "--gallery", str(path), "--flip", *_model(mobilenet_model)]
    assert main(args) == 0
    doc = json.loads(path.read_text())
    doc["embedder"] = doc["embedder"].partition("; crops ")[0]  # as the previous version wrote it,
    del doc["sha256"]  # without a checksum
    path.write_text(json.dumps(doc))
    query = str(data / "refs" / "person_09--2.jpg")
    assert main(["-q", "recognize", query, "-g", str(path), *_model(mobilenet_model)]) == 0
    said = [r.getMessage() for r in caplog.records if "does not record the crop settings" in r.getMessage()]
    assert len(said) == 1 and str(path) in said[0] and "enrol it again" in said[0], said
    caplog.clear()
    assert main([*args, "--append"]) == 0
    assert "does not record the crop settings" in caplog.text


def test_search_by_a_gallery_label_refuses_the_embedder_the_gallery_was_not_enrolled_with(
    data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """`search --gallery G --label L` compared L's rows with the embedder's vectors without checking what made
    them: a gallery enrolled with --flip (or another model of the same width) was searched with plain crops
    without a word, where recognize, enroll --append and serve refuse it."""
    path = tmp_path / "people.npz"
    enroll = ["-q", "enroll", str(data / "refs"), "--gallery", str(path), "--flip", *_model(mobilenet_model)]
    assert main(enroll) == 0
    capsys.readouterr()
    search = ["-q", "search", str(data / "frames"), "-g", str(path), "--label", "person 09", "-k", "1"]
    assert main([*search, "--flip", *_model(mobilenet_model)]) == 0
    capsys.readouterr()
    assert main([*search, *_model(mobilenet_model)]) == 1
    err = capsys.readouterr().err
    assert "enrolled with" in err and "flip" in err, err


def test_a_gallery_of_another_width_or_model_is_named_by_enroll_recognize_and_search(
    gallery: Path, data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """`enroll --append`, `recognize` and `search --gallery` given a gallery of another width or model said
    'the gallery holds 8-d embeddings but...' or 'the gallery was enrolled with ...' without naming the file,
    where a command (a script) may read several."""
    narrow = tmp_path / "narrow.npz"
    small = Gallery(8)
    small.add("person 09", np.ones(8, np.float32))
    small.save(narrow)
    other = Gallery.load(gallery)
    other.embedder = "other.onnx sha256:0123456789abcdef"
    foreign = other.save(tmp_path / "foreign.rdg")
    query = str(data / "refs" / "person_09--2.jpg")
    for path, problem in ((narrow, "holds 8-d embeddings but"), (foreign, "was enrolled with other.onnx")):
        runs = (
            ["enroll", str(data / "refs"), "--gallery", str(path), "--append"],
            ["recognize", query, "-g", str(path)],
            ["search", str(data / "frames"), "-g", str(path), "--label", "person 09", "-k", "1"],
        )
        for args in runs:
            assert main(["-q", *args, *_model(mobilenet_model)]) == 1
            err = capsys.readouterr().err
            assert f"{path}: the gallery {problem}" in err, (args[0], err)


def test_recognize_and_verify_of_an_empty_gallery_say_so_naming_it(
    data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """`recognize` against an empty gallery (every label unenrolled, a new serve's file) said 'no match' for
    every query, exit 0, as if the person were unknown; and `verify` said 'the gallery is empty' naming no
    file. Both exit 1 naming the file."""
    path = Gallery(1280).save(tmp_path / "nobody.npz")
    query = str(data / "refs" / "person_09--2.jpg")
    assert main(["-q", "recognize", query, "-g", str(path), *_model(mobilenet_model)]) == 1
    assert f"{path}: the gallery is empty: enrol references first" in capsys.readouterr().err
    assert main(["-q", "verify", "-g", str(path)]) == 1
    assert f"{path}: the gallery is empty: enrol references first" in capsys.readouterr().err


def test_search_takes_a_label_as_enroll_and_unenroll_spell_it(
    gallery: Path, data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """`search --gallery G --label L` looked for L exactly as typed, where enroll, serve and unenroll tidy a
    label (white space, Unicode form, lower case with enroll.lowercase): `--label "person  09"` (two spaces),
    which unenroll takes for person 09, was 'no label' (exit 1). search finds the label as given, else as
    enroll spells it; without enroll.lowercase a label's case is its own."""
    search = ["-q", "search", str(data / "frames"), "-g", str(gallery), "-k", "1", "--json"]
    assert main([*search, "--label", "person  09", *_model(mobilenet_model)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hits"] and doc["threshold"] == Gallery.load(gallery).threshold, doc
    assert main([*search, "--label", "Person 09", *_model(mobilenet_model)]) == 1
    assert "no label 'Person 09'" in capsys.readouterr().err
    cfg = tmp_path / "lower.yaml"
    cfg.write_text("cameras:\n  door:\n    source: {uri: clip.mp4}\nenroll: {lowercase: true}\n")
    assert main([*search, "--label", "Person 09", "-c", str(cfg), *_model(mobilenet_model)]) == 0
    assert json.loads(capsys.readouterr().out)["hits"]


def test_recognize_given_a_video_points_to_search_and_run(
    gallery: Path, tmp_path: Path, mobilenet_model: Path, capsys: Capture
) -> None:
    """`recognize clip.mp4 -g people.npz` (a video where recognize takes images) said 'cannot decode image
    clip.mp4 (corrupt, empty or not an image)', as if the file were broken; it says the file is a video and which
    commands take one (search, run). A photo whose name is not .jpg/.png is still an image to recognize."""
    from _video import make_video

    clip = make_video(tmp_path / "clip.mp4", frames=3, size=(160, 120), people=1)
    assert main(["recognize", str(clip.path), "-g", str(gallery), *_model(mobilenet_model)]) == 1
    err = capsys.readouterr().err
    assert f"{clip.path} is a video: recognize takes images (crops, or photos with --detect)" in err
    assert f"reid-daemon search {clip.path} --gallery {gallery} --label NAME" in err
    assert f"reid-daemon run --source {clip.path}" in err
    photo = tmp_path / "photo.jfif"  # a JPEG by its bytes, which FFmpeg also opens as a one-frame video
    photo.write_bytes(sorted((gallery.parent / "refs").glob("*.jpg"))[0].read_bytes())
    assert main(["-q", "recognize", str(photo), "-g", str(gallery), "--json", *_model(mobilenet_model)]) == 0
    capsys.readouterr()


def test_search_for_a_label_the_gallery_lacks_names_the_labels_it_has_and_no_more(
    gallery: Path, data: Path, mobilenet_model: Path, tmp_path: Path, capsys: Capture
) -> None:
    """`search --gallery G --label L` for a label G lacks listed G's first 10 labels followed by '...' whatever
    their number: the 8 labels of a gallery of 8 ended in '...' as if more were left out, and an empty gallery
    said '(it has  ...)'; it lists them all (up to 10, then how many more), or says the gallery is empty."""
    search = ["-q", "search", str(data / "frames"), "--label", "nobody", "-k", "1", *_model(mobilenet_model)]
    assert main([*search, "-g", str(gallery)]) == 1
    err = capsys.readouterr().err
    assert "'person 01'" in err and "..." not in err and "more" not in err, err
    empty = tmp_path / "empty.npz"
    Gallery(1280).save(empty)
    assert main([*search, "-g", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "empty.npz" in err and "'nobody'" in err and "is empty" in err and "it has" not in err, err
    many = tmp_path / "many.npz"
    g = Gallery(1280)
    g.add_many([f"p{i:02d}" for i in range(13)], [[1.0] * 1280] * 13)
    g.save(many)
    assert main([*search, "-g", str(many)]) == 1
    err = capsys.readouterr().err
    assert "'p09'" in err and "'p10'" not in err and "and 3 more" in err, err


def _run_cli(*args: str, **environ: str) -> subprocess.CompletedProcess[bytes]:
    """The command in a process of its own (one OpenCV kills takes the test's process no more)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **environ}
    return subprocess.run(
        [sys.executable, "-m", "daemon", "-q", *args], capture_output=True, env=env, timeout=300
    )


def test_embed_of_a_truncated_or_damaged_png_says_so_without_libpngs_own_line(
    data: Path, mobilenet_model: Path, tmp_path: Path
) -> None:
    """`embed` of a PNG cut short printed libpng's own 'libpng error: PNG input buffer is incomplete' on stderr
    beside our warning, which said only '(corrupt, empty or not an image)'; a PNG cut short or with a chunk
    failing its CRC is now named so, by our line alone."""
    good = tmp_path / "good.png"
    assert cv2.imwrite(str(good), cv2.imread(str(sorted((data / "refs").glob("*.jpg"))[0])))
    whole = good.read_bytes()
    cut, flipped = tmp_path / "cut.png", tmp_path / "flipped.png"
    cut.write_bytes(whole[: len(whole) // 2])
    damaged = bytearray(whole)
    damaged[len(whole) // 2] ^= 0xFF
    flipped.write_bytes(bytes(damaged))
    done = _run_cli(
        "embed", str(cut), str(flipped), str(good), "--no-progress", "--model", str(mobilenet_model)
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert "libpng" not in err and "libpng" not in out, err
    assert (
        f"cut.png: cannot decode image {cut}: the PNG file is truncated: it ends at byte {len(whole) // 2}"
        in out
    )
    assert f"cannot decode image {flipped}: the PNG file is corrupt: its 'IDAT' chunk at byte " in out, out
    assert "1 embedding(s)" in out, out


def test_paths_that_are_not_utf8_are_refused_or_written_never_a_crash(
    gallery: Path, data: Path, mobilenet_model: Path, tmp_path: Path
) -> None:
    """A name that is not UTF-8 (b'caf\\xe9': Latin-1, from an old camera, a Windows share or a zip) handed to
    OpenCV, whose Python binding cannot take it, killed the process with a segfault (`recognize` of such a
    file: its video check; `search --out` such a folder: the hits' crops) or ended in pydantic's traceback
    (`search` / `embed` of such a video); the video is refused naming it, the file is an image that cannot be
    decoded, and the crops are written."""
    model = _model(mobilenet_model)
    text = tmp_path / os.fsdecode(b"notes-\xe9.txt")
    text.write_text("not an image\n")
    done = _run_cli("recognize", str(text), "-g", str(gallery), *model)
    assert done.returncode == 1 and b"cannot decode image" in done.stderr, done
    out = tmp_path / os.fsdecode(b"hits-\xe9")
    query = str(data / "refs" / "person_09--1.jpg")
    done = _run_cli("search", str(data / "frames"), "-q", query, "-k", "1", "--out", str(out), *model)
    assert done.returncode == 0, done
    assert len(list(out.glob("001_*.jpg"))) == 1 and (out / "hits.json").is_file()
    from _video import make_video

    clip = make_video(tmp_path / "clip.mp4", frames=3, size=(160, 120), people=1).path
    latin = clip.rename(tmp_path / os.fsdecode(b"entr\xe9e.mp4"))
    for command in (["search", str(latin), "-q", query], ["embed", str(latin)]):
        done = _run_cli(*command, *model)
        assert done.returncode == 1 and b"Traceback" not in done.stderr, done
        assert b"entr\\xe9e.mp4: the video's path is not UTF-8" in done.stderr, done


def test_embed_box_with_detect_exits_2_rather_than_ignoring_detect(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    """`embed photo.jpg --box X0 Y0 X1 Y1 --detect` loaded the detector and embedded the box alone, --detect
    ignored without a word (exit 0), as --largest without --detect was before it was refused; both are refused
    before the models load, naming the two options."""
    monkeypatch.setenv("REID_MODELS_DIR", str(tmp_path / "no-models"))  # a model load would exit 1
    photo = str(data / "frames" / "frame_0040.jpg")
    assert main(["embed", photo, "--box", "0", "0", "100", "100", "--detect"]) == 2
    err = capsys.readouterr().err
    assert "--box" in err and "--detect" in err, err


@pytest.mark.parametrize("name", ["people.npz", "people.json", "notes.json"])
def test_embed_out_refuses_a_file_that_is_not_an_embedding_file(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture, name: str
) -> None:
    """`embed photos/ --out people.npz` with the gallery's name (--out taken for --gallery) wrote the embeddings
    over the gallery: every enrolment lost, exit 0. A file that is not an embedding file embed wrote (a gallery,
    another program's) is refused before the models load, naming it and why, and left as it was."""
    monkeypatch.setenv("REID_MODELS_DIR", str(tmp_path / "no-models"))  # a model load would exit 1
    out = tmp_path / name
    if name.startswith("people"):
        gallery = Gallery(4)
        gallery.add("ann", [1, 0, 0, 0])
        gallery.save(out)
    else:
        out.write_text('{"mine": 1}')
    before = out.read_bytes()
    assert main(["embed", str(data / "frames" / "frame_0040.jpg"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is not an embedding file embed wrote (" in err, err
    assert "its content would be lost: give another --out, or move it away" in err, err
    assert out.read_bytes() == before


def test_reports_naming_a_file_that_is_not_utf8_print_on_a_strict_terminal(
    gallery: Path, data: Path, mobilenet_model: Path, tmp_path: Path
) -> None:
    """Where Python writes stdout as strict UTF-8 (a LANG=en_US.UTF-8 terminal, PYTHONIOENCODING), the report of
    `embed`, `recognize` or `search` naming a file whose name is not UTF-8 (b'caf\\xe9.jpg') ended in a
    UnicodeEncodeError traceback once the work was done (embed's file already saved); the name is printed with
    such bytes as \\xe9."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = folder / os.fsdecode(b"caf\xe9--1.jpg")
    photo.write_bytes((data / "refs" / "person_09--1.jpg").read_bytes())
    model = _model(mobilenet_model)
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    for command in (
        ["embed", str(photo), "--out", str(tmp_path / "e.npz")],
        ["recognize", str(photo), "-g", str(gallery), "-k", "1"],
        ["search", str(folder), "-q", str(photo), "-k", "1"],
    ):
        done = _run_cli(*command, *model, **strict)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done
        assert b"caf\\xe9--1.jpg" in done.stdout, done
