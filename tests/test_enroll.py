"""Enrolment: the file-name convention and its edge cases, skipped files, caps, detection; real crops."""

from __future__ import annotations

import os
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from _crops import BatchedMeanColour, FixedDetector, MeanColour, write_reference_crops
from pydantic import ValidationError

import daemon.enroll as enroll_module
from daemon.config import EmbedderConfig, EnrollConfig, RuntimeConfig
from daemon.embed import OnnxEmbedder
from daemon.enroll import SUB_FOLDER, ReferenceName, enroll, parse_reference_name
from daemon.errors import DataError
from daemon.gallery import Gallery
from daemon.types import FloatArray, ImageBGR

CPU = RuntimeConfig(providers=("CPUExecutionProvider",), intra_op_threads=1)


# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("filename", "label", "set_code", "variant"),
    [
        ("jane_doe.jpg", "jane doe", None, None),
        ("A12-jane_doe.jpg", "jane doe", "A12", None),
        ("jane_doe--2.jpg", "jane doe", None, "2"),
        ("A12-jane_doe--side.PNG", "jane doe", "A12", "side"),
        ("2024-bob.webp", "bob", "2024", None),
        ("S1b-bob.jpeg", "bob", "S1b", None),
        ("mary-jane.jpg", "mary-jane", None, None),  # no digit: not a set code
        ("jane_doe-2.jpg", "jane doe-2", None, None),  # a single '-' is part of the name
        ("__jane___doe__.jpg", "jane doe", None, None),  # separators collapse and trim
        ("jane_doe--.jpg", "jane doe", None, None),  # an empty variant is no variant
        ("a--b--c.jpg", "a--b", None, "c"),  # the LAST '--' starts the variant
        ("A12-B7-x.jpg", "B7-x", "A12", None),  # only the first prefix is a set code
        ("Zoë_Ωmega.bmp", "Zoë Ωmega", None, None),
        ("jane.doe.jpg", "jane.doe", None, None),  # only the last suffix is the extension
    ],
)
def test_parse_reference_name(filename: str, label: str, set_code: str | None, variant: str | None) -> None:
    name = parse_reference_name(Path("refs") / filename)
    assert name == ReferenceName(label, set_code, variant, Path("refs") / filename)


def test_decomposed_unicode_names_give_the_same_label() -> None:
    # Regression: 'Zoë.jpg' written decomposed (NFD, as macOS names files) and composed (NFC) were two labels
    # that print alike, so one person was enrolled as two identities.
    nfd, nfc = unicodedata.normalize("NFD", "Zoë"), unicodedata.normalize("NFC", "Zoë")
    assert nfd != nfc
    assert parse_reference_name(f"{nfd}--1.jpg").label == parse_reference_name(f"{nfc}--2.jpg").label == nfc


@pytest.mark.parametrize("filename", ["--2.jpg", "A12-.jpg", "A12-___.jpg", "___--1.png"])
def test_names_without_a_label_are_refused(filename: str) -> None:
    with pytest.raises(ValueError, match="leaves no label"):
        parse_reference_name(filename)


def test_naming_is_configurable() -> None:
    cfg = EnrollConfig(
        word_separator=".",
        variant_separator="#",
        set_separator="_",
        set_code_pattern="[A-Z]{2}",
        lowercase=True,
    )
    assert parse_reference_name("XY_Jane.Doe#3.jpg", cfg) == ReferenceName(
        "jane doe", "XY", "3", Path("XY_Jane.Doe#3.jpg")
    )
    assert parse_reference_name("Xy_Jane.jpg", cfg).set_code is None


def test_bad_set_code_pattern_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="set_code_pattern"):
        EnrollConfig(set_code_pattern="[unclosed")


# ---------------------------------------------------------------------------------------------- enrol


def _write(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 20)) -> Path:
    cv2.imwrite(str(path), np.full((*size, 3), colour, np.uint8))
    return path


@pytest.fixture()
def refs(tmp_path: Path) -> Path:
    folder = tmp_path / "refs"
    folder.mkdir()
    _write(folder / "red_one--1.png", (0, 0, 250))
    _write(folder / "red_one--2.png", (0, 10, 240))
    _write(folder / "A1-green_two.png", (0, 250, 0))
    _write(folder / "B2-blue_three.jpg", (250, 0, 0))
    (folder / "broken--1.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "readme.txt").write_text("notes")
    (folder / "--9.png").write_bytes(b"")
    _write(folder / ".hidden.png", (1, 1, 1))
    return folder


def test_enroll_without_replace_never_writes_over_a_gallery_made_meanwhile(
    refs: Path, tmp_path: Path
) -> None:
    # the CLI checks before the models load; a gallery saved there while the images were embedded (another
    # enroll, serve) is refused under the lock as well, not written over
    target = tmp_path / "g.npz"
    other = Gallery(MeanColour.dim)
    other.add("someone", np.ones(MeanColour.dim, np.float32))

    class SavedMeanwhile(BatchedMeanColour):
        def embed_crops(self, crops: Sequence[ImageBGR]) -> FloatArray:
            if not target.exists():  # the first check found no file; one is saved while embedding
                other.save(target)
            return super().embed_crops(crops)

    with pytest.raises(DataError, match=r"exists and holds 1 entries of 1 label\(s\): enroll --append adds"):
        enroll(refs, SavedMeanwhile(), Gallery(MeanColour.dim), save_to=target)
    assert Gallery.load(target).labels == ["someone"]
    report = enroll(refs, MeanColour(), Gallery(MeanColour.dim), save_to=target, replace=True)
    assert report.gallery_size == 4 and "someone" not in Gallery.load(target)


def test_enroll_as_a_library_refuses_an_existing_gallery_unless_told_to_append_or_replace(
    refs: Path, tmp_path: Path
) -> None:
    # Regression: `reid-daemon enroll` refuses a gallery file that exists unless given --append or --replace,
    # but enroll() called as a library wrote a new gallery over it by default (replace=True), its entries lost
    # without a word. It refuses by default with the command's error, before embedding anything.
    target = tmp_path / "g.npz"
    other = Gallery(MeanColour.dim)
    other.add("someone", np.ones(MeanColour.dim, np.float32))
    other.save(target)
    before = target.read_bytes()
    embedder = BatchedMeanColour()
    with pytest.raises(DataError) as refused:
        enroll(refs, embedder, Gallery(MeanColour.dim), save_to=target)
    assert str(refused.value) == enroll_module.existing_gallery(target)
    assert "exists and holds 1 entries of 1 label(s): enroll --append adds to it" in str(refused.value)
    assert target.read_bytes() == before and embedder.calls == 0
    assert enroll(refs, embedder, Gallery.load(target), save_to=target, append=True).gallery_size == 5
    assert enroll(refs, embedder, Gallery(MeanColour.dim), save_to=target, replace=True).gallery_size == 4
    assert "someone" not in Gallery.load(target)


def test_labels_differing_in_case_alone_are_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Jane_Doe.png and jane_doe.png (or jane_doe.png appended to a gallery holding 'Jane Doe') were enrolled as
    two people without a word: recognize then reports either, and verify calls them confusable. A warning names
    them and the setting that makes them one; with it there is one label and no warning."""
    folder = tmp_path / "refs"
    folder.mkdir()
    _write(folder / "Jane_Doe.png", (0, 0, 250))
    _write(folder / "bob.png", (0, 250, 0))
    target = tmp_path / "g.npz"
    with caplog.at_level("WARNING", logger="daemon"):
        enroll(folder, MeanColour(), Gallery(MeanColour.dim), save_to=target)
        assert "differ in case" not in caplog.text
        extra = tmp_path / "more"
        extra.mkdir()
        _write(extra / "jane_doe.png", (0, 0, 240))
        report = enroll(extra, MeanColour(), Gallery.load(target), save_to=target, append=True)
    assert report.gallery_size == 3 and Gallery.load(target).unique_labels == ["Jane Doe", "bob", "jane doe"]
    said = [r.getMessage() for r in caplog.records if "differ in case" in r.getMessage()]
    assert said == [
        "labels 'Jane Doe' and 'jane doe' differ in case alone: the gallery holds them as 2 people; rename the "
        "files of one, or set enroll.lowercase: true (and enroll --replace) to make them one"
    ], said
    caplog.clear()
    _write(folder / "jane_doe.png", (0, 0, 240))
    with caplog.at_level("WARNING", logger="daemon"):
        folded = enroll(folder, MeanColour(), Gallery(MeanColour.dim), naming=EnrollConfig(lowercase=True))
    assert folded.labels == ["bob", "jane doe"] and "differ in case" not in caplog.text


def test_an_image_already_enrolled_is_skipped_not_doubled(tmp_path: Path) -> None:
    """enroll --append of a folder the gallery already holds (one new photo added to it, say) enrolled every
    photo again: each label's rows doubled, and past max_per_label the cap dropped other photos of the person
    to make room for the copies. A reference that is the same image as an entry of its label (or as one taken
    before it in the run) is skipped, saying so; appending nothing new leaves the file as it was, exit 0."""
    folder = tmp_path / "refs"
    folder.mkdir()
    _write(folder / "ann.png", (0, 0, 250))
    _write(folder / "ann--again.png", (0, 0, 250))  # the same picture under a second name
    _write(folder / "bob.png", (0, 250, 0))
    target = tmp_path / "g.npz"
    first = enroll(folder, MeanColour(), Gallery(MeanColour.dim), save_to=target)
    assert first.gallery_size == 2 and [s.path.name for s in first.skipped] == ["ann.png"]
    assert first.skipped[0].reason == "already enrolled: the same image as an entry of 'ann' (1.0000)"
    start = target.read_bytes()
    again = enroll(folder, MeanColour(), Gallery.load(target), save_to=target, append=True)
    assert again.enrolled == () and again.saved is None and again.gallery_size == 2
    assert target.read_bytes() == start
    _write(folder / "bob--2.png", (0, 120, 120))  # a new photo of bob: the only one added
    more = enroll(folder, MeanColour(), Gallery.load(target), save_to=target, append=True)
    assert [e.name.path.name for e in more.enrolled] == ["bob--2.png"] and more.gallery_size == 3
    assert Gallery.load(target).labels == ["ann", "bob", "bob"]


def test_enroll_as_a_library_refuses_both_append_and_replace(refs: Path, tmp_path: Path) -> None:
    # Regression: `reid-daemon enroll --append --replace` is refused (give one), but enroll(append=True,
    # replace=True) appended without a word, the replace asked for dropped; it is refused before anything is
    # embedded, the gallery file left as it was.
    target = tmp_path / "g.npz"
    other = Gallery(MeanColour.dim)
    other.add("someone", np.ones(MeanColour.dim, np.float32))
    other.save(target)
    before = target.read_bytes()
    embedder = BatchedMeanColour()
    with pytest.raises(
        ValueError, match=r"^append adds to the gallery file, replace writes a new one over it"
    ):
        enroll(refs, embedder, Gallery.load(target), save_to=target, append=True, replace=True)
    assert target.read_bytes() == before and embedder.calls == 0


def test_enroll_folder_reports_and_saves(refs: Path, tmp_path: Path) -> None:
    gallery = Gallery(MeanColour.dim, threshold=0.5)
    report = enroll(refs, MeanColour(), gallery, save_to=tmp_path / "g.npz")
    assert report.labels == ["blue three", "green two", "red one"]
    assert gallery.labels.count("red one") == 2 and len(gallery) == 4 == report.gallery_size
    assert {e.name.set_code for e in report.enrolled} == {None, "A1", "B2"}
    reasons = {s.path.name: s.reason for s in report.skipped}
    assert set(reasons) == {"broken--1.jpg", "readme.txt", "--9.png"}
    assert "cannot decode" in reasons["broken--1.jpg"] and "not an image" in reasons["readme.txt"]
    assert "leaves no label" in reasons["--9.png"]
    assert report.saved == tmp_path / "g.npz"
    loaded = Gallery.load(tmp_path / "g.npz")
    assert loaded.labels == gallery.labels
    np.testing.assert_allclose(loaded.embeddings, gallery.embeddings, rtol=1e-6)
    text = report.text()
    assert "enrolled 4 image(s) of 3 label(s)" in text and "broken--1.jpg" in text
    assert report.as_dict()["skipped"][0]["reason"]


def test_enroll_sets_and_recursion(refs: Path) -> None:
    (refs / "more").mkdir()
    _write(refs / "more" / "A1-green_two--b.png", (0, 240, 10))
    flat = enroll(refs, MeanColour(), Gallery(MeanColour.dim), sets={"A1"})
    assert [e.name.label for e in flat.enrolled] == ["green two"]
    assert any("set 'B2' not selected" in s.reason for s in flat.skipped)
    deep = enroll(
        refs, MeanColour(), Gallery(MeanColour.dim), sets={"A1"}, naming=EnrollConfig(recursive=True)
    )
    assert len(deep.enrolled) == 2 and deep.enrolled[1].name.variant == "b"


def test_enroll_with_detection_takes_the_largest_person(refs: Path) -> None:
    det = FixedDetector([[0, 0, 5, 5], [0, 0, 10, 30]], [0.9, 0.6])
    report = enroll(refs, MeanColour(), Gallery(MeanColour.dim), detector=det)
    assert {e.box for e in report.enrolled} == {(0.0, 0.0, 10.0, 30.0)}
    assert [e.score for e in report.enrolled] == pytest.approx([0.6] * len(report.enrolled))
    nobody = FixedDetector([], [])
    with pytest.raises(DataError, match="no person detected"):
        enroll(refs, MeanColour(), Gallery(MeanColour.dim), detector=nobody)


def test_enroll_reports_images_refused_by_the_cap(refs: Path) -> None:
    gallery = Gallery(MeanColour.dim, max_per_label=1, drop_policy="drop_latest")
    report = enroll(refs, MeanColour(), gallery)
    assert gallery.labels.count("red one") == 1
    assert any("cap" in s.reason and s.path.name == "red_one--2.png" for s in report.skipped)


def test_enroll_report_matches_the_gallery_when_a_later_chunk_evicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: references were added chunk by chunk, so drop_oldest evicting a reference enrolled by an
    # earlier chunk left it in the report ("enrolled 6 image(s)" for a gallery holding 3), with a stale row.
    monkeypatch.setattr(enroll_module, "CHUNK", 2)
    folder = tmp_path / "refs"
    folder.mkdir()
    for i in range(1, 6):
        _write(folder / f"jane--{i}.png", (0, 40 * i, 250))
    _write(folder / "bob.png", (250, 0, 0))
    gallery = Gallery(MeanColour.dim, max_per_label=2, drop_policy="drop_oldest")
    report = enroll(folder, MeanColour(), gallery)
    assert len(report.enrolled) == len(gallery) == 3
    assert sorted(e.name.path.name for e in report.enrolled) == ["bob.png", "jane--4.png", "jane--5.png"]
    assert all(gallery.labels[e.row] == e.name.label for e in report.enrolled)
    assert sorted(s.path.name for s in report.skipped) == [f"jane--{i}.png" for i in (1, 2, 3)]


def test_enroll_reports_earlier_entries_the_cap_drops(tmp_path: Path) -> None:
    # Regression: enroll --append of a new photo of a label at its cap (drop_oldest) dropped one of the
    # gallery's earlier references of that label without a word ('enrolled 1 image(s) ... holds 3 entries').
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for i in (1, 2):
        _write(first / f"jane--{i}.png", (0, 40 * i, 250))
    _write(first / "bob.png", (250, 0, 0))
    for i in (3, 4, 5):
        _write(second / f"jane--{i}.png", (0, 40 * i, 250))
    gallery = Gallery(MeanColour.dim, max_per_label=2, drop_policy="drop_oldest")
    assert enroll(first, MeanColour(), gallery).evicted == ()
    report = enroll(second, MeanColour(), gallery)
    assert report.evicted == (("jane", 2),) and gallery.count("jane") == 2 and gallery.count("bob") == 1
    assert "the per-label cap dropped earlier gallery entries to make room: 2 of 'jane'" in report.text()
    assert report.as_dict()["evicted"] == {"jane": 2}
    assert [s.path.name for s in report.skipped] == ["jane--3.png"]  # evicted by jane--5 within the call


def test_enroll_names_the_sub_folders_it_does_not_enter(tmp_path: Path) -> None:
    # Regression: a folder of one sub-folder per person (refs/jane/1.jpg) failed with 'no reference image
    # could be enrolled from refs (the folder is empty)', and sub-folders beside images went unmentioned.
    refs = tmp_path / "refs"
    for person, colour in (("jane", (0, 0, 250)), ("bob", (250, 0, 0)), (".git", (0, 0, 90))):
        (refs / person).mkdir(parents=True)
        _write(refs / person / "1.png", colour)  # three photos (enroll skips the same image twice)
    with pytest.raises(DataError, match=r"\(bob: a sub-folder: its images are enrolled with --recursive, "):
        enroll(refs, MeanColour(), Gallery(MeanColour.dim))
    _write(refs / "ann.png", (0, 250, 0))
    report = enroll(refs, MeanColour(), Gallery(MeanColour.dim))
    assert report.labels == ["ann"]
    assert [(s.path.name, s.reason) for s in report.skipped] == [
        (name, SUB_FOLDER) for name in ("bob", "jane")
    ]
    assert not enroll(
        refs, MeanColour(), Gallery(MeanColour.dim), naming=EnrollConfig(recursive=True)
    ).skipped


def test_enroll_labels_from_folders_one_per_person(tmp_path: Path) -> None:
    """A folder of one sub-folder per person (refs/jane_doe/1.jpg, refs/bob/1.jpg) could only be enrolled
    with --recursive, which took the file names as labels: jane's and bob's '1.jpg' became one person '1'."""
    refs = tmp_path / "refs"
    colours = {"jane_doe": (0, 0, 250), "A7-bob": (250, 0, 0), "___": (0, 250, 0)}
    for person, colour in colours.items():
        (refs / person).mkdir(parents=True)
        for n in (1, 2):  # two photos of each (enroll skips the same image twice)
            _write(refs / person / f"{n}.png", tuple(min(250, c + 60 * (n - 1)) for c in colour))
    _write(refs / "loose.png", (9, 9, 9))
    report = enroll(refs, MeanColour(), Gallery(MeanColour.dim), naming=EnrollConfig(label_from="folder"))
    assert sorted(report.labels) == ["bob", "jane doe"]
    assert sorted((e.name.label, e.name.set_code, e.name.variant) for e in report.enrolled) == [
        ("bob", "A7", "1"),
        ("bob", "A7", "2"),
        ("jane doe", None, "1"),
        ("jane doe", None, "2"),
    ]
    reasons = {s.path.relative_to(refs).as_posix(): s.reason for s in report.skipped}
    assert reasons["loose.png"] == "not in a person's folder (labels come from folder names)"
    assert reasons["___/1.png"] == "folder ___: its name leaves no label ([SET-]name)"


def test_a_reference_whose_name_is_not_utf8_is_skipped_naming_it(tmp_path: Path) -> None:
    """A photo whose file name is not UTF-8 (b'caf\\xe9.jpg': Latin-1, from an old camera, a Windows share or a
    zip) crashed enroll with a traceback (codec's 'surrogates not allowed' from the gallery's label check) and
    enrolled nothing; it is skipped, named printably, as any file that cannot be used, and so is a person's
    folder so named with --label-from folder."""

    def write(path: Path, colour: tuple[int, int, int]) -> None:  # cv2.imwrite crashes on such a name
        path.write_bytes(cv2.imencode(".png", np.full((40, 20, 3), colour, np.uint8))[1].tobytes())

    refs = tmp_path / "refs"
    refs.mkdir()
    write(refs / "ann.png", (0, 0, 250))
    write(refs / os.fsdecode(b"caf\xe9--1.png"), (0, 250, 0))
    write(refs / os.fsdecode(b"bob--\xe9t\xe9.png"), (250, 0, 0))  # the variant alone
    report = enroll(refs, MeanColour(), Gallery(MeanColour.dim))
    assert report.labels == ["ann"]
    reasons = {os.fsencode(s.path.name): s.reason for s in report.skipped}
    assert set(reasons) == {b"caf\xe9--1.png", b"bob--\xe9t\xe9.png"}
    assert reasons[b"caf\xe9--1.png"].startswith("caf\\xe9--1.png: the file name is not UTF-8"), reasons
    report.text().encode("utf-8")  # printable on any terminal: no lone surrogates
    people = tmp_path / "people"
    for person in ("ann", os.fsdecode(b"jos\xe9")):
        (people / person).mkdir(parents=True)
        write(people / person / "1.png", (0, 0, 250))
    report = enroll(people, MeanColour(), Gallery(MeanColour.dim), naming=EnrollConfig(label_from="folder"))
    assert report.labels == ["ann"]
    ((skipped, reason),) = [(s.path, s.reason) for s in report.skipped]
    assert os.fsencode(skipped.parent.name) == b"jos\xe9"
    assert reason.startswith("folder jos\\xe9: its name is not UTF-8"), reason
    report.text().encode("utf-8")


def test_a_reference_whose_label_holds_an_invisible_character_is_skipped_naming_it(tmp_path: Path) -> None:
    """A photo named 'a\u200bb.png' was enrolled as a label that shows as 'ab' everywhere but is another (unenroll
    ab did not find it), and a folder name with a bidi override as a label shown reordered, where serve refuses
    such a label field; both are skipped, naming the character. The joiners names need are kept."""

    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cv2.imencode(".png", np.full((40, 20, 3), (0, 0, 250), np.uint8))[1].tobytes())

    refs = tmp_path / "refs"
    for name in ("ann.png", "a\u200bb.png", "\u0645\u06cc\u200c\u0646\u0627.png"):
        write(refs / name)
    report = enroll(refs, MeanColour(), Gallery(MeanColour.dim))
    assert sorted(report.labels) == ["ann", "\u0645\u06cc\u200c\u0646\u0627"]
    ((skipped, reason),) = [(s.path.name, s.reason) for s in report.skipped]
    assert skipped == "a\u200bb.png" and "U+200B ZERO WIDTH SPACE" in reason, reason
    people = tmp_path / "people"
    for person in ("ann", "eve\u202etxt"):
        write(people / person / "1.png")
    report = enroll(people, MeanColour(), Gallery(MeanColour.dim), naming=EnrollConfig(label_from="folder"))
    assert report.labels == ["ann"]
    ((reason,),) = [(s.reason,) for s in report.skipped]
    assert reason.startswith("folder eve") and "U+202E RIGHT-TO-LEFT OVERRIDE" in reason, reason


def test_enroll_bad_inputs(tmp_path: Path, refs: Path) -> None:
    with pytest.raises(DataError, match="reference folder not found"):
        enroll(tmp_path / "nowhere", MeanColour(), Gallery(MeanColour.dim))
    with pytest.raises(DataError, match="not a folder"):
        enroll(refs / "readme.txt", MeanColour(), Gallery(MeanColour.dim))
    with pytest.raises(DataError, match="4-d"):
        enroll(refs, MeanColour(), Gallery(8))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"no reference image could be enrolled .*a\.jpg"):
        enroll(junk, MeanColour(), Gallery(MeanColour.dim))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="the folder is empty"):
        enroll(empty, MeanColour(), Gallery(MeanColour.dim))


def test_enroll_reports_broken_links_and_takes_working_ones(tmp_path: Path) -> None:
    # Regression: a reference that is a link to a moved or deleted photo was left out unreported.
    paths = write_reference_crops(tmp_path / "photos", identities=2, per_identity=1)
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "ann.jpg").symlink_to(paths[0])
    (refs / "bob.jpg").symlink_to(tmp_path / "photos" / "moved-away.jpg")
    report = enroll(refs, MeanColour(), Gallery(MeanColour.dim))
    assert [e.name.label for e in report.enrolled] == ["ann"]
    assert [(s.path.name, s.reason) for s in report.skipped] == [
        ("bob.jpg", f"broken link: {refs / 'bob.jpg'} -> {tmp_path / 'photos' / 'moved-away.jpg'}")
    ]


# ---------------------------------------------------------------------------------------------- real


def test_enroll_real_pets09_crops(mobilenet_model: Path, tmp_path: Path) -> None:
    paths = write_reference_crops(tmp_path / "refs", identities=8, per_identity=3)
    embedder = OnnxEmbedder(EmbedderConfig(model=str(mobilenet_model)), CPU, tmp_path)
    gallery = Gallery(embedder.dim)
    report = enroll(tmp_path / "refs", embedder, gallery, save_to=tmp_path / "pets.npz")
    assert len(report.enrolled) == len(paths) == len(gallery) and not report.skipped
    assert len(report.labels) == 8 and all(gallery.labels.count(x) == 3 for x in report.labels)
    np.testing.assert_allclose(np.linalg.norm(gallery.embeddings, axis=1), 1.0, rtol=1e-5)
    back = Gallery.load(tmp_path / "pets.npz")
    assert back.labels == gallery.labels and back.dim == embedder.dim


def test_a_reference_without_a_set_code_skipped_by_sets_says_so(refs: Path) -> None:
    """`enroll --set A1` listed red_one--1.png as skipped with "set None not selected"."""
    report = enroll(refs, MeanColour(), Gallery(MeanColour.dim), sets={"A1"})
    reasons = {s.path.name: s.reason for s in report.skipped}
    assert reasons["red_one--1.png"] == "no set code in its name (enrolling set(s) A1 only)"
    assert reasons["B2-blue_three.jpg"] == "set 'B2' not selected"


def test_unenroll_waits_for_the_gallerys_lock_and_changes_nothing_past_it(tmp_path: Path) -> None:
    """unenroll reads, changes and saves the gallery holding its lock, as every writer does: held by another
    writer past enroll.lock_wait_s, it stops naming the holder, the file left as it was."""
    from daemon.enroll import unenroll
    from daemon.errors import LockTimeout
    from daemon.gallery import locked

    path = tmp_path / "g.npz"
    g = Gallery(4)
    g.add_many(["ann", "bob"], np.eye(4, dtype=np.float32)[:2])
    g.save(path)
    start = path.read_bytes()
    with locked(path, 1.0, "reid-daemon serve"), pytest.raises(LockTimeout, match="reid-daemon serve"):
        unenroll(path, ["ann"], EnrollConfig(lock_wait_s=0.2))
    assert path.read_bytes() == start
    assert unenroll(path, ["ann"]).labels == (("ann", 1),) and Gallery.load(path).labels == ["bob"]


def test_unenroll_takes_each_label_once_and_the_gallerys_own_spelling_first(tmp_path: Path) -> None:
    """A label given twice, or as given and as enroll spells it, is removed once; a label the gallery holds as
    given (two spaces, from another writer) is that one, not the one enroll's spelling would name."""
    from daemon.enroll import unenroll

    path = tmp_path / "g.npz"
    g = Gallery(4)
    g.add_many(["ann", "ann lee", "ann  lee", "bob"], np.eye(4, dtype=np.float32))
    g.save(path)
    assert unenroll(path, ["ann", "ann", " ann "]).labels == (("ann", 1),)
    assert unenroll(path, ["ann  lee"]).labels == (("ann  lee", 1),)
    assert Gallery.load(path).labels == ["ann lee", "bob"]


def test_unenroll_removes_from_the_gallery_as_saved_while_it_waited_for_the_lock(tmp_path: Path) -> None:
    """unenroll reads the file once more under the lock: a writer that saved it meanwhile (serve, enroll
    --append) keeps what it added."""
    import threading

    from daemon.enroll import unenroll
    from daemon.gallery import locked

    path = tmp_path / "g.npz"
    g = Gallery(4)
    g.add_many(["ann", "bob"], np.eye(4, dtype=np.float32)[:2])
    g.save(path)
    done: list[object] = []
    with locked(path, 1.0, "reid-daemon serve"):
        waiting = threading.Thread(target=lambda: done.append(unenroll(path, ["ann"])))
        waiting.start()
        time.sleep(0.5)  # unenroll has read the file and waits for the lock
        g.add("carl", np.eye(4, dtype=np.float32)[2])
        g.save(path)
    waiting.join(10)
    assert done and Gallery.load(path).labels == ["bob", "carl"]


def test_unenroll_reports_a_users_own_photos_as_kept(tmp_path: Path) -> None:
    """The images a removed label's entries record that serve did not give (no ledger names them) stay, and
    the report says which."""
    from daemon.enroll import unenroll

    path, photo = tmp_path / "g.npz", tmp_path / "refs" / "ann--1.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"jpeg")
    g = Gallery(4)
    g.add("ann", np.eye(4, dtype=np.float32)[0], source=str(photo))
    g.add("bob", np.eye(4, dtype=np.float32)[1], source=str(tmp_path / "refs" / "bob--1.jpg"))
    g.save(path)
    report = unenroll(path, ["ann"])
    assert report.kept == (photo,) and report.removed == () and photo.is_file()
