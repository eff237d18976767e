"""Embedding results: every input kind, meta, JSON / npz round trips, bad files; real crops with MobileNetV2."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from _crops import (
    BatchedMeanColour,
    FixedDetector,
    MeanColour,
    crop_of,
    png_declaring,
    read_video_frames,
    write_reference_crops,
)
from _data import require_pets09
from _video import make_video

from daemon.config import EmbedderConfig, RecognitionConfig, RuntimeConfig
from daemon.embed import OnnxEmbedder
from daemon.embedding import (
    LEFTOVER_AGE_S,
    CropRef,
    EmbeddingMeta,
    EmbeddingResult,
    EmbedOptions,
    Timings,
    atomic_write,
    embed,
    list_image_files,
    may_be_cut,
    read_image,
    remove_leftovers,
    temp_target,
)
from daemon.errors import DataError
from daemon.types import ImageBGR

CPU = RuntimeConfig(providers=("CPUExecutionProvider",), intra_op_threads=1)


def _image(colour: tuple[int, int, int], h: int = 40, w: int = 20) -> ImageBGR:
    return np.full((h, w, 3), colour, dtype=np.uint8)


def _two_halves() -> ImageBGR:
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, :20] = (200, 0, 0)
    img[:, 20:] = (0, 0, 200)
    return img


# ---------------------------------------------------------------------------------------------- inputs


def test_whole_image_is_one_crop_with_meta() -> None:
    img = _image((10, 200, 30))
    r = embed(MeanColour(), img, options=EmbedOptions(model="toy"))
    assert len(r) == 1 and r.dim == 4 and r.embeddings.dtype == np.float32
    assert r.crops == (CropRef("", -1, (0.0, 0.0, 20.0, 40.0), None),)
    np.testing.assert_allclose(np.linalg.norm(r.embedding), 1.0, rtol=1e-6)
    assert r.meta.model == "toy" and r.meta.timings.total_ms >= r.meta.timings.embed_ms >= 0


def test_image_plus_boxes_one_row_per_box_in_order() -> None:
    img = _two_halves()
    r = embed(MeanColour(), img, boxes=np.array([[20, 0, 40, 40], [0, 0, 20, 40]]))
    assert [c.box for c in r.crops] == [(20.0, 0.0, 40.0, 40.0), (0.0, 0.0, 20.0, 40.0)]
    assert r.embeddings[0, 2] > r.embeddings[0, 0] and r.embeddings[1, 0] > r.embeddings[1, 2]


def test_crops_use_the_batched_path_when_there_is_one() -> None:
    e = BatchedMeanColour()
    crops = [_image((200, 0, 0)), _image((0, 200, 0), 10, 5)]
    r = embed(e, crops)
    assert e.calls == 1 and len(r) == 2
    assert r.crops[1].box == (0.0, 0.0, 5.0, 10.0)
    plain = embed(MeanColour(), crops)  # the per-crop fallback gives the same rows
    np.testing.assert_allclose(plain.embeddings, r.embeddings, rtol=1e-6)


def test_embeddings_are_a_read_only_copy() -> None:
    r = embed(MeanColour(), _image((1, 2, 3)))
    with pytest.raises(ValueError):
        r.embeddings[0, 0] = 5.0
    with pytest.raises(AttributeError):
        r.meta = r.meta  # type: ignore[misc]


def test_image_files_folder_and_detector(tmp_path: Path) -> None:
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        cv2.imwrite(str(tmp_path / f"img_{i + 1}.png"), _image(colour))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    files = list_image_files(tmp_path)
    assert [p.name for p in files] == ["img_1.png", "img_2.png", "img_3.png"]
    by_folder = embed(MeanColour(), tmp_path)
    by_files = embed(MeanColour(), [str(p) for p in files])
    np.testing.assert_array_equal(by_folder.embeddings, by_files.embeddings)
    assert [c.source for c in by_folder.crops] == [str(p) for p in files]
    det = FixedDetector([[0, 0, 10, 10], [0, 0, 20, 30]], [0.9, 0.4])
    everyone = embed(MeanColour(), tmp_path, options=EmbedOptions(detector=det))
    assert len(everyone) == 6 and [c.score for c in everyone.crops[:2]] == pytest.approx([0.9, 0.4])
    biggest = embed(MeanColour(), tmp_path, options=EmbedOptions(detector=det, largest=True))
    assert len(biggest) == 3 and {c.box for c in biggest.crops} == {(0.0, 0.0, 20.0, 30.0)}


def test_recursive_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), _image((9, 9, 9)))
    cv2.imwrite(str(tmp_path / "sub" / "b.png"), _image((99, 9, 9)))
    assert len(embed(MeanColour(), tmp_path)) == 1
    assert len(embed(MeanColour(), tmp_path, options=EmbedOptions(recursive=True))) == 2


def test_video_every_nth_frame_with_frame_indices(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(64, 48), people=1)
    det = FixedDetector([[0, 0, 32, 48]], [0.8])
    r = embed(MeanColour(), clip.path, options=EmbedOptions(detector=det, every=3))
    assert [c.frame for c in r.crops] == [0, 3, 6, 9] == det.frames
    assert {c.source for c in r.crops} == {str(clip.path)}
    whole = embed(MeanColour(), str(clip.path), options=EmbedOptions(every=4, max_frames=2))
    assert [c.frame for c in whole.crops] == [0, 4] and whole.crops[0].box == (0.0, 0.0, 64.0, 48.0)


def test_a_video_is_read_at_the_configs_stride_unless_told_otherwise(tmp_path: Path) -> None:
    # EmbedOptions() read every frame of a video (every=1) where RecognitionConfig, the single source of
    # defaults, says embed reads every video_every-th (5): a second, different default for one setting
    every = RecognitionConfig().video_every
    clip = make_video(tmp_path / "clip.mp4", frames=2 * every + 1, size=(64, 48), people=1)
    r = embed(MeanColour(), clip.path, options=EmbedOptions())
    assert [c.frame for c in r.crops] == [0, every, 2 * every]


def test_no_person_found_gives_an_empty_result(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), _image((9, 9, 9)))
    r = embed(MeanColour(), tmp_path, options=EmbedOptions(detector=FixedDetector([], [])))
    assert len(r) == 0 and r.embeddings.shape == (0, 4)
    with pytest.raises(ValueError, match="no embedding"):
        _ = r.embedding


# ---------------------------------------------------------------------------------------------- bad input


def test_unreadable_or_missing_image_names_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        embed(MeanColour(), bad)
    cv2.imwrite(str(tmp_path / "ok.png"), _image((1, 2, 3)))
    with pytest.raises(DataError, match=r"broken\.jpg"):
        embed(MeanColour(), [tmp_path / "ok.png", bad])
    with pytest.raises(DataError, match=r"image not found: .*nope\.png"):
        read_image(tmp_path / "nope.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png"):
        read_image(empty)


def test_a_folder_or_a_pipe_given_as_an_image_is_named_so(tmp_path: Path) -> None:
    """`recognize refs/` (a folder where it takes images) said 'not a file: refs', as it did of a named pipe:
    each says what it is, and a folder what to give instead."""
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    with pytest.raises(DataError) as e:
        read_image(tmp_path)
    assert (
        str(e.value) == f"{tmp_path} is a folder, not an image file: give the images in it ({tmp_path}/*.jpg)"
    )
    with pytest.raises(DataError) as e:
        read_image(pipe)
    assert str(e.value) == f"{pipe} is not a regular file (a named pipe, a device), not an image file"


def test_a_video_named_as_an_image_is_named_a_video(tmp_path: Path) -> None:
    """A video saved under an image's name (a phone clip as person.jpg) was 'cannot decode image (corrupt, empty
    or not an image)' in recognize, enroll and embed: it says it is a video, of which kind, and what to do."""
    mp4 = make_video(tmp_path / "clip.mp4", frames=3, size=(64, 48)).path
    avi = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter.fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        writer.write(_image((1, 2, 3))[:48, :64])
    writer.release()
    mkv = tmp_path / "clip.mkv"
    mkv.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(60))  # a Matroska header and no more
    for video, kind, suffix in (
        (mp4, "an MP4/MOV video", ".mp4"),
        (avi, "an AVI video", ".avi"),
        (mkv, "a Matroska/WebM video", ".mkv"),
    ):
        photo = tmp_path / f"person-{suffix[1:]}.jpg"
        photo.write_bytes(video.read_bytes())
        with pytest.raises(DataError) as e:
            read_image(photo)
        assert str(e.value) == (
            f"cannot decode image {photo}: it is {kind}, not an image (whatever its name): give a photo or crop of "
            f"the person; to read it as the video it is (embed, search), name it {suffix}"
        )
        with pytest.raises(DataError) as e:  # a video under its own name: no renaming to advise
            read_image(video)
        assert (
            str(e.value)
            == f"cannot decode image {video}: it is {kind}, not an image: give a photo or crop of the person"
        )


def test_an_image_over_opencvs_pixel_bound_is_a_data_error(tmp_path: Path) -> None:
    # Regression: `recognize bomb.png` (a 74-byte PNG declaring 50000x50000) ended in a cv2.error traceback
    # from OpenCV's CV_IO_MAX_IMAGE_PIXELS assertion, and `enroll` of a folder holding it stopped there
    # instead of listing the file as skipped.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(50_000, 50_000, pixel_data=True))
    with pytest.raises(DataError, match=r"cannot decode image .*bomb\.png: .*pixels"):
        read_image(bomb)
    with pytest.raises(DataError, match=r"bomb\.png"):
        embed(MeanColour(), tmp_path)


def test_missing_folder_video_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"video not found: .*gone\.mp4"):
        embed(MeanColour(), tmp_path / "gone.mp4")
    with pytest.raises(DataError, match="holds no images"):
        embed(MeanColour(), tmp_path)
    with pytest.raises(DataError, match="folder not found"):
        list_image_files(tmp_path / "nowhere")


def test_bad_arrays_and_mixed_sequences() -> None:
    with pytest.raises(ValueError, match="uint8"):
        embed(MeanColour(), np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="only images"):
        mixed: list[Any] = [_image((1, 1, 1)), "a.png"]
        embed(MeanColour(), mixed)
    with pytest.raises(ValueError, match="non-empty"):
        embed(MeanColour(), [np.zeros((0, 4, 3), np.uint8)])


def test_result_rejects_inconsistent_records() -> None:
    meta = EmbeddingMeta("m", (CropRef("", -1, (0, 0, 1, 1)),))
    with pytest.raises(ValueError, match="crop references"):
        EmbeddingResult(np.ones((2, 3), np.float32), meta)
    with pytest.raises(ValueError, match="NaN"):
        EmbeddingResult(np.full((1, 3), np.nan, np.float32), meta)
    with pytest.raises(ValueError, match="L2-normalised"):
        EmbeddingResult(np.full((1, 3), 2.0, np.float32), meta)


def test_mean_of_several_views_is_a_unit_vector() -> None:
    r = embed(MeanColour(), [_image((200, 0, 0)), _image((0, 0, 200))])
    m = r.mean()
    assert m.shape == (4,) and np.linalg.norm(m) == pytest.approx(1.0, abs=1e-6)
    assert float(m @ r.embeddings[0]) == pytest.approx(float(m @ r.embeddings[1]), abs=1e-6)


# ---------------------------------------------------------------------------------------------- files


def _sample() -> EmbeddingResult:
    rng = np.random.default_rng(3)
    e = rng.normal(size=(3, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    crops = (
        CropRef("a/ü b.jpg", -1, (0.0, 0.0, 10.5, 20.25), None),
        CropRef("clip.mp4", 12, (1.0, 2.0, 3.0, 4.0), 0.875),
        CropRef("", -1, (0.0, 0.0, 5.0, 5.0), None),
    )
    return EmbeddingResult(
        e, EmbeddingMeta("mobilenetv2-imagenet", crops, Timings(1.5, 2.0, 3.25, 7.0), True)
    )


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    r = _sample()
    path = r.save(tmp_path / f"sub/emb{suffix}")
    back = EmbeddingResult.load(path)
    np.testing.assert_array_equal(back.embeddings, r.embeddings)
    assert back.meta == r.meta
    assert not list(path.parent.glob(".*tmp"))  # the atomic write left no temp file


def test_empty_result_round_trips(tmp_path: Path) -> None:
    r = EmbeddingResult(np.zeros((0, 5), np.float32), EmbeddingMeta("m", ()))
    for suffix in (".npz", ".json"):
        back = EmbeddingResult.load(r.save(tmp_path / f"e{suffix}"))
        assert back.embeddings.shape == (0, 5)


def test_concat_keeps_rows_and_crops_in_order() -> None:
    a = _sample()
    both = EmbeddingResult.concat([a, a])
    assert len(both) == 6 and both.crops[3:] == a.crops
    assert both.meta.timings.total_ms == pytest.approx(14.0)


def test_bad_files_raise_data_error_naming_them(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(DataError, match=r"garbage\.npz"):
        EmbeddingResult.load(garbage)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, embeddings=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match=r"pickled\.npz"):
        EmbeddingResult.load(pickled)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(DataError, match=r"other\.npz: not a reid-daemon embedding file"):
        EmbeddingResult.load(other)
    with pytest.raises(DataError, match="not found"):
        EmbeddingResult.load(tmp_path / "missing.npz")
    with pytest.raises(DataError, match=r"saved as \.npz or \.json"):
        _sample().save(tmp_path / "x.txt")


def test_bad_json_files(tmp_path: Path) -> None:
    good = _sample().as_dict()
    cases = {
        "syntax.json": "{not json",
        "list.json": "[]",
        "format.json": json.dumps({**good, "format": "something-else"}),
        "version.json": json.dumps({**good, "version": 99}),
        "missing.json": json.dumps({k: v for k, v in good.items() if k != "crops"}),
        "norm.json": json.dumps({**good, "embeddings": [[2.0] * 8] * 3}),
        "shape.json": json.dumps({**good, "embeddings": good["embeddings"][:2]}),
        "dim.json": json.dumps({**good, "dim": 7}),
        "deep.json": "[" * 100_000 + "]" * 100_000,  # regression: was a RecursionError traceback
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=name):
            EmbeddingResult.load(tmp_path / name)


def test_an_embedding_file_with_a_box_not_finite_or_a_value_of_another_type_is_refused(
    tmp_path: Path,
) -> None:
    """A hand-edited (or another tool's) embedding file was read with a box of NaN or inf corners, 'flip_average':
    "no" taken as true, and 'dim': "8" refused as 'rows have 8 values but dim says 8'. Each is a DataError naming
    the file and the field."""
    good = _sample().as_dict()
    box_nan = [{**good["crops"][0], "box": [math.nan, 0, 1, 1]}, *good["crops"][1:]]
    cases = {
        "box.json": ({**good, "crops": box_nan}, "box values must be finite, got [nan, 0.0, 1.0, 1.0]"),
        "flip.json": ({**good, "flip_average": "no"}, "flip_average must be true or false, got 'no'"),
        "dim.json": ({**good, "dim": "8"}, "dim must be a non-negative integer, got '8'"),
    }
    for name, (doc, why) in cases.items():
        (tmp_path / name).write_text(json.dumps(doc))
        with pytest.raises(DataError) as e:
            EmbeddingResult.load(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: ") and why in str(e.value), e.value
    z = dict(np.load(_sample().save(tmp_path / "ok.npz")))
    z["boxes"] = z["boxes"].copy()
    z["boxes"][1, 2] = np.inf
    np.savez(tmp_path / "box.npz", **z)
    with pytest.raises(DataError, match=r"box\.npz: .*box values must be finite"):
        EmbeddingResult.load(tmp_path / "box.npz")


def test_saved_file_takes_the_umask(tmp_path: Path) -> None:
    # Regression: embed --out (and galleries, adaptation heads) wrote 0600 files whatever the umask.
    r = embed(MeanColour(), _image((10, 200, 30)))
    old = os.umask(0o022)
    try:
        assert stat.S_IMODE(r.save(tmp_path / "e.npz").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_saving_where_no_file_can_be_is_a_data_error(tmp_path: Path) -> None:
    # Regression: `embed --out` naming a folder ended in an IsADirectoryError traceback.
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(DataError, match=r"cannot save the embeddings as .*folder\.json"):
        _sample().save(tmp_path / "folder.json")


def test_truncated_npz(tmp_path: Path) -> None:
    path = _sample().save(tmp_path / "e.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"e\.npz"):
        EmbeddingResult.load(path)


# ---------------------------------------------------------------------------------------------- real


@pytest.fixture(scope="module")
def mobilenet(mobilenet_model: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbedder:
    return OnnxEmbedder(EmbedderConfig(model=str(mobilenet_model)), CPU, tmp_path_factory.mktemp("cache"))


def test_real_crops_same_person_closer_than_others(mobilenet: OnnxEmbedder, tmp_path: Path) -> None:
    paths = write_reference_crops(tmp_path, identities=4, per_identity=2)
    r = embed(mobilenet, tmp_path, options=EmbedOptions(model="mobilenetv2-imagenet"))
    assert len(r) == len(paths) and r.dim == mobilenet.dim
    np.testing.assert_allclose(np.linalg.norm(r.embeddings, axis=1), 1.0, rtol=1e-5)
    people = [p.name.split("--")[0] for p in paths]
    sim = r.embeddings @ r.embeddings.T
    same = np.array([[a == b for b in people] for a in people]) & ~np.eye(len(people), dtype=bool)
    diff = np.array([[a != b for b in people] for a in people])
    assert sim[same].mean() > sim[diff].mean()
    back = EmbeddingResult.load(r.save(tmp_path / "real.npz"))
    np.testing.assert_array_equal(back.embeddings, r.embeddings)


def test_real_frame_with_gt_box_matches_the_cut_crop(mobilenet: OnnxEmbedder) -> None:
    crop, box = crop_of(100, 9)
    frame = read_video_frames(require_pets09() / "vtest.avi", {100})[100]
    by_box = embed(mobilenet, frame, boxes=np.asarray([box]))
    by_crop = embed(mobilenet, [crop])
    assert float(by_box.embedding @ by_crop.embedding) > 0.97


@pytest.mark.parametrize(
    "box",
    [(0, 0, 0, 0), (530, 234, 500, 160), (1000, 1000, 1100, 1100), (float("nan"), 0, 10, 10), (0, 0, -5, 9)],
)
def test_real_frame_with_a_box_of_no_person_is_refused(
    mobilenet: OnnxEmbedder, tmp_path: Path, box: tuple[float, ...]
) -> None:
    # Regression: embed --box 0 0 0 0 (or one outside the 768x576 frame, inverted, NaN) gave a row made from a
    # pixel at the border, saved and matched like any person's.
    _, good = crop_of(100, 9)
    path = tmp_path / "frame.jpg"
    cv2.imwrite(str(path), read_video_frames(require_pets09() / "vtest.avi", {100})[100])
    with pytest.raises(ValueError, match=r"frame\.jpg: a box is x0 y0 x1 y1 .* overlaps the 768x576 image"):
        embed(mobilenet, path, boxes=np.asarray([good, box]))
    with pytest.raises(ValueError, match="of the image: a box is"):
        embed(mobilenet, cv2.imread(str(path)), boxes=np.asarray([box]))
    assert len(embed(mobilenet, path, boxes=np.asarray([good, (700, 500, 900, 900)]))) == 2  # clipped


def test_real_flip_average_is_mirror_symmetric(mobilenet_model: Path, tmp_path: Path) -> None:
    crop, _ = crop_of(200, 9)
    cfg = EmbedderConfig(model=str(mobilenet_model), flip_average=True)
    flip = OnnxEmbedder(cfg, CPU, tmp_path)
    a = embed(flip, [crop]).embedding
    b = embed(flip, [np.ascontiguousarray(crop[:, ::-1])]).embedding
    assert float(a @ b) > 0.999  # averaging a crop with its mirror makes it its mirror's equal
    assert embed(flip, [crop]).meta.flip_average


@pytest.mark.parametrize("name", ["m" * 250 + ".json", "é" * 125 + ".npz"])
def test_a_file_name_of_the_longest_length_is_written(tmp_path: Path, name: str) -> None:
    """A name of 255 bytes (the most a file name may have) could not be written: the temporary file beside it
    was named after it with 18 more, 'File name too long', once the work was done (embed --out, enroll
    --gallery, eval --json)."""
    path = tmp_path / name
    atomic_write(path, b"data")
    assert path.read_bytes() == b"data" and [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("name", ["status.json", "m" * 250 + ".json", "é" * 125 + ".npz"])
def test_leftovers_are_told_by_the_name_atomic_write_gives_them_and_by_age(tmp_path: Path, name: str) -> None:
    """A temporary file left by a killed atomic_write is told by its name (that of the file it was for, cut as
    atomic_write cuts a long one) and, for a cleaner holding no lock its writers take, by when it was last
    written: a young one may be a writer's at work and stays."""
    import time

    seen: list[str] = []
    atomic_write(tmp_path / name, lambda fh: seen.extend(p.name for p in tmp_path.iterdir()))
    (left,) = seen  # the temporary file as atomic_write names it, while it writes
    target = temp_target(left)
    assert target is not None and name.startswith(target) and may_be_cut(target) == (target != name)
    assert temp_target(".status.json.tmp") is None and temp_target(".status.json.0123456789AB.tmp") is None
    (tmp_path / left).write_bytes(b"x" * 30)
    other = tmp_path / left.replace(target, "other.json")
    other.write_bytes(b"y")
    now = time.time()
    assert remove_leftovers(tmp_path, lambda t: t == target, before=now - LEFTOVER_AGE_S).files == 0
    os.utime(tmp_path / left, (now - LEFTOVER_AGE_S - 1, now - LEFTOVER_AGE_S - 1))
    removed = remove_leftovers(tmp_path, lambda t: t == target, before=now - LEFTOVER_AGE_S)
    assert (removed.files, removed.bytes) == (1, 30) and removed.text() == "1 temporary file (30 bytes)"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, other.name])
    assert remove_leftovers(tmp_path / "none", lambda t: True).files == 0  # no folder: nothing to remove
