"""The HTTP service for real: uvicorn on a free loopback port, requests over a socket."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from _crops import FixedDetector, MeanColour, png_declaring, write_reference_crops
from _ops import wait_until

from daemon.config import (
    EmbedderConfig,
    EnrollConfig,
    GalleryConfig,
    RuntimeConfig,
    ServeConfig,
    load_settings,
)
from daemon.embed import OnnxEmbedder
from daemon.enroll import SERVE_LEDGER, SERVE_LOCK, reference_files
from daemon.errors import ConfigError, DataError
from daemon.gallery import Gallery
from daemon.serve import MULTIPART_SLACK, BackgroundServer, ImageMemory, ServiceState, create_app, for_client

CPU = RuntimeConfig(providers=("CPUExecutionProvider",), intra_op_threads=1)


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 32)) -> bytes:
    image = np.zeros((*size, 3), np.uint8)
    image[:] = colour
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return bytes(buf)


FileParts = dict[str, tuple[str, bytes]] | list[tuple[str, tuple[str, bytes]]]


def _multipart(files: FileParts, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type; ``files`` as a list may name one field twice."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, (filename, data) in files.items() if isinstance(files, dict) else files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _call(url: str, data: bytes | None = None, ctype: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _post(url: str, filename: str, data: bytes, **fields: str) -> tuple[int, Any]:
    body, ctype = _multipart({"image": (filename, data)}, fields)
    return _call(url, body, ctype)


@pytest.fixture
def toy(tmp_path: Path) -> Iterator[tuple[str, ServiceState]]:
    gallery = Gallery(4, threshold=0.9)
    cfg = ServeConfig(
        gallery=tmp_path / "g.npz",
        references=tmp_path / "refs",
        max_upload_bytes=50_000,
        max_image_pixels=4_000_000,
    )
    state = ServiceState(MeanColour(), gallery, cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        yield server.url, state


def test_enroll_then_recognize_and_search(toy: tuple[str, ServiceState], tmp_path: Path) -> None:
    url, _ = toy
    assert _post(f"{url}/enroll", "red_shirt.jpg", _jpeg((0, 0, 200)))[0] == 200
    status, body = _post(f"{url}/enroll", "x.jpg", _jpeg((200, 0, 0)), label="blue coat")
    assert status == 200 and body["label"] == "blue coat" and body["gallery_size"] == 2
    assert (tmp_path / "refs" / "blue_coat.jpg").is_file()
    assert Gallery.load(tmp_path / "g.npz").labels == ["red shirt", "blue coat"]  # saved after each enrolment

    status, body = _post(f"{url}/recognize?k=2", "q.jpg", _jpeg((10, 0, 190)))
    assert status == 200
    (query,) = body["queries"]
    assert [m["label"] for m in query["matches"]] == ["red shirt"]  # blue is below the 0.9 threshold

    status, body = _post(f"{url}/search?k=2&threshold=-1", "q.jpg", _jpeg((190, 0, 10)))
    assert status == 200
    assert [m["label"] for m in body["matches"]] == ["blue coat", "red shirt"]
    ref = body["matches"][0]["references"]
    assert ref == ["/references/blue_coat.jpg"]
    status, image = _call(url + ref[0])
    assert status == 200 and cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR) is not None

    status, h = _call(f"{url}/health")
    assert status == 200
    assert h["gallery"]["entries"] == 2 and h["gallery"]["labels"] == 2 and h["model"] == "mean-colour"
    assert h["requests"] == {"enroll": 2, "recognize": 1, "search": 1, "health": 1}
    assert h["adaptation"]["head"] is False


def test_a_gallery_file_deleted_while_serving_is_not_written_back(
    toy: tuple[str, ServiceState], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator who deleted the gallery file while serve ran saw it come back, every entry in it, at the
    next enrolment; serve follows the file: gone is an empty gallery (logged), and the next enrolment writes
    the file anew with that entry alone."""
    url, state = toy
    for name, colour in (("ann.jpg", (0, 0, 200)), ("bob.jpg", (200, 0, 0))):
        assert _post(f"{url}/enroll", name, _jpeg(colour))[0] == 200
    (tmp_path / "g.npz").unlink()
    status, h = _call(f"{url}/health")
    assert status == 200 and h["gallery"]["entries"] == 0 and h["gallery"]["bytes"] is None, h
    assert f"the gallery file {tmp_path / 'g.npz'} is gone" in caplog.text
    status, body = _post(f"{url}/search?k=2&threshold=-1", "q.jpg", _jpeg((0, 0, 200)))
    assert status == 200 and body["matches"] == []
    status, body = _post(f"{url}/enroll", "carl.jpg", _jpeg((0, 200, 0)))
    assert status == 200 and body["gallery_size"] == 1, body
    assert Gallery.load(tmp_path / "g.npz").labels == ["carl"]  # before: ann, bob and carl
    assert state.gallery.threshold == 0.9  # the service's settings, kept


def test_a_second_image_of_a_label_gets_a_variant_name(toy: tuple[str, ServiceState], tmp_path: Path) -> None:
    url, _ = toy
    for _ in range(2):
        assert _post(f"{url}/enroll", "jane_doe.jpg", _jpeg((0, 200, 0)))[0] == 200
    assert _post(f"{url}/enroll", "A7-jane_doe--9.jpg", _jpeg((0, 200, 0)))[1]["label"] == "jane doe"
    names = _kept(tmp_path / "refs")
    assert names == ["A7-jane_doe.jpg", "jane_doe--2.jpg", "jane_doe.jpg"]


def test_an_enrolment_the_cap_makes_room_for_says_what_it_dropped(tmp_path: Path) -> None:
    # Regression: with max_per_label 2 (drop_oldest) a third image of a label answered 200 like any other,
    # row 1 and the gallery size unchanged, not saying that the label's oldest entry had been dropped.
    gallery = Gallery(4, threshold=0.9, max_per_label=2)
    cfg = ServeConfig(gallery=tmp_path / "g.npz", references=tmp_path / "refs")
    state = ServiceState(MeanColour(), gallery, cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        answers = [_post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 50 * i)))[1] for i in (1, 2, 3)]
    assert [a["evicted"] for a in answers] == [0, 0, 1], answers
    assert answers[2]["gallery_size"] == 2 and Gallery.load(tmp_path / "g.npz").count("bob") == 2


def _kept(folder: Path) -> list[str]:
    """The visible files of ``folder`` (what ``enroll`` reads; serve's hidden name ledger is left out)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_enrolments_past_the_gallerys_limit_are_refused_naming_it(tmp_path: Path) -> None:
    # Regression: only a label had a cap (max_per_label), so any client could enrol new labels without end: the
    # gallery in memory, its file and the references folder grew for as long as the service ran.
    gallery = Gallery(4, threshold=0.9, max_per_label=1)
    cfg = ServeConfig(gallery=tmp_path / "g.npz", references=tmp_path / "refs", max_entries=2)
    state = ServiceState(MeanColour(), gallery, cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        url = server.url
        assert _post(f"{url}/enroll", "ann.jpg", _jpeg((0, 0, 200)))[0] == 200
        assert _post(f"{url}/enroll", "bob.jpg", _jpeg((0, 200, 0)))[0] == 200
        status, body = _post(f"{url}/enroll", "carl.jpg", _jpeg((200, 0, 0)))
        assert status == 507, body
        assert "2 entries" in body["detail"] and "serve.max_entries" in body["detail"], body
        status, body = _post(f"{url}/enroll", "ann.jpg", _jpeg((0, 0, 150)))  # replaces ann's one entry
        assert status == 200 and body["evicted"] == 1 and body["gallery_size"] == 2, body
        health = _call(f"{url}/health")[1]
    assert health["gallery"]["entries"] == 2 and health["errors"] == {"enroll": 1}
    assert Gallery.load(tmp_path / "g.npz").labels == ["bob", "ann"]
    assert _kept(tmp_path / "refs") == ["ann--2.jpg", "bob.jpg"]  # no image kept for carl


def test_a_removed_reference_url_never_names_another_image(tmp_path: Path) -> None:
    # Regression: a new reference took the first free name of its label, so the URL answered as `removed`
    # when the cap evicted bob's first image (/references/bob.jpg) served his fourth image next, and after a
    # restart too: a client holding the old URL showed another photo under it.
    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    cfg = ServeConfig(gallery=path, references=refs)
    state = ServiceState(MeanColour(), Gallery(4, threshold=0.9, max_per_label=2), cfg, model="m")
    with BackgroundServer(create_app(state)) as server:
        answers = [_post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 40 * i)))[1] for i in (1, 2, 3, 4)]
        assert _call(f"{server.url}/references/{SERVE_LEDGER}")[0] == 404  # the ledger is not served
    state = ServiceState(MeanColour(), Gallery.load(path), cfg, model="m")
    with BackgroundServer(create_app(state)) as server:
        answers += [_post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 40 * i)))[1] for i in (5, 6)]
    given = [a["reference"] for a in answers]
    removed = [url for a in answers for url in a["removed"]]
    assert removed == given[:4] and len(set(given)) == 6, answers
    assert _kept(refs) == ["bob--5.jpg", "bob--6.jpg"]


def test_a_reference_name_counts_past_the_folders_own_numbers(tmp_path: Path) -> None:
    # A folder from before the ledger (or with the user's own bob--7.jpg) is numbered past what it holds.
    refs = tmp_path / "refs"
    refs.mkdir()
    cv2.imwrite(str(refs / "bob--7.png"), np.full((64, 32, 3), 90, np.uint8))
    cv2.imwrite(str(refs / "bob--side.jpg"), np.full((64, 32, 3), 90, np.uint8))
    state = ServiceState(MeanColour(), Gallery(4, threshold=0.9), ServeConfig(references=refs), model="m")
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 90)))[1]["reference"] == (
            "/references/bob--8.jpg"
        )


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_random"])
def test_an_evicted_entrys_reference_image_is_removed(tmp_path: Path, policy: str) -> None:
    # Regression: the reference image of an entry the per-label cap evicted stayed in the folder for good,
    # so a service enrolling a label again and again filled the disk with files no entry stood for.
    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    cfg = ServeConfig(gallery=path, references=refs)
    gallery = Gallery(4, threshold=0.9, max_per_label=2, drop_policy=policy)  # type: ignore[arg-type]
    state = ServiceState(MeanColour(), gallery, cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        answers = [_post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 40 * i)))[1] for i in (1, 2, 3, 4)]
        assert _post(f"{server.url}/enroll", "ann.jpg", _jpeg((0, 90, 0)))[0] == 200
    assert [a["evicted"] for a in answers] == [0, 0, 1, 1], answers
    assert len(_kept(refs)) == 3 and "ann.jpg" in _kept(refs)  # bob's two entries, ann's one
    assert answers[3]["reference"].removeprefix("/references/") in _kept(refs)

    # after a restart too: the rows of the gallery file still know their files
    state = ServiceState(MeanColour(), Gallery.load(path), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        for i in (5, 6):
            assert _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 40 * i)))[1]["evicted"] == 1
    assert len(_kept(refs)) == 3 and "ann.jpg" in _kept(refs)
    assert Gallery.load(path).count("bob") == 2


def test_a_reference_image_the_service_did_not_write_stays(tmp_path: Path) -> None:
    # The service removes only the images it kept itself: a gallery enrolled from the folder by `enroll`
    # (the user's own photos) loses its entries to the cap, never the photos.
    from daemon.enroll import enroll

    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    refs.mkdir()
    cv2.imwrite(str(refs / "bob.png"), np.full((64, 32, 3), 90, np.uint8))
    enroll(refs, MeanColour(), Gallery(4, threshold=0.9, max_per_label=1), save_to=path)
    state = ServiceState(
        MeanColour(), Gallery.load(path), ServeConfig(gallery=path, references=refs), model="m"
    )
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 200)))[1]["evicted"] == 1
        assert _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 200, 0)))[1]["evicted"] == 1
    assert _kept(refs) == ["bob--3.jpg", "bob.png"]  # bob.png counts as bob's first: bob--2.jpg, bob--3.jpg


def test_enroll_append_removes_the_images_serve_kept_for_the_entries_it_drops(tmp_path: Path) -> None:
    # Regression: `enroll --append` into the gallery serve uses dropped serve's entries to the cap and left
    # their images in the references folder for good, no entry standing for them (/search still listed them).
    from daemon.enroll import enroll

    refs, path, mine = tmp_path / "refs", tmp_path / "g.npz", tmp_path / "mine"
    gallery = Gallery(4, threshold=0.9, max_per_label=2, drop_policy="drop_oldest")
    state = ServiceState(MeanColour(), gallery, ServeConfig(gallery=path, references=refs), model="m")
    with BackgroundServer(create_app(state)) as server:
        for name, colour in (("bob.jpg", (0, 0, 90)), ("bob.jpg", (0, 0, 180)), ("ann.jpg", (0, 90, 0))):
            assert _post(f"{server.url}/enroll", name, _jpeg(colour))[0] == 200
    mine.mkdir()
    for i in (1, 2):
        cv2.imwrite(str(mine / f"bob--{i}.png"), np.full((64, 32, 3), 60 * i, np.uint8))
    cv2.imwrite(str(refs / "bob--side.png"), np.full((64, 32, 3), 30, np.uint8))  # the user's own photo
    report = enroll(mine, MeanColour(), Gallery.load(path), save_to=path, append=True)
    assert report.evicted == (("bob", 2),)
    assert report.removed == (refs.resolve() / "bob--2.jpg", refs.resolve() / "bob.jpg")
    assert _kept(refs) == ["ann.jpg", "bob--side.png"] and _kept(mine) == ["bob--1.png", "bob--2.png"]
    assert report.as_dict()["removed"] == [str(p) for p in report.removed]
    assert "removed 2 reference image(s) serve kept for them" in report.text()

    # the user's photo enrolled from serve's folder names no source: dropped from the gallery, never removed
    assert enroll(refs, MeanColour(), Gallery.load(path), save_to=path, append=True).removed == ()
    more = tmp_path / "more"  # two new photos (the same ones again would be skipped as already enrolled)
    more.mkdir()
    for i, colour in ((1, (200, 0, 0)), (2, (0, 0, 200))):  # unlike every grey photo of bob
        cv2.imwrite(str(more / f"bob--{i}.png"), np.full((64, 32, 3), colour, np.uint8))
    report = enroll(more, MeanColour(), Gallery.load(path), save_to=path, append=True)
    assert report.evicted == (("bob", 2),) and report.removed == ()
    assert _kept(refs) == ["ann.jpg", "bob--side.png"]


def test_an_image_whose_name_the_ledger_does_not_record_is_never_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: `enroll --append` removed every recorded image of the serve entries it dropped that lay in a
    # folder holding serve's ledger, also one whose name the ledger had not recorded (its write failed: a full
    # disk), and that freed the name: serve's next image of the label took it, so the URL answered as removed
    # showed another photo. serve's own removal and enroll's are one rule now: only a name the ledger records.
    import errno

    from daemon.enroll import enroll

    refs, path, mine = tmp_path / "refs", tmp_path / "g.npz", tmp_path / "mine"
    gallery = Gallery(4, threshold=0.9, max_per_label=2, drop_policy="drop_oldest")
    state = ServiceState(MeanColour(), gallery, ServeConfig(gallery=path, references=refs), model="m")
    with BackgroundServer(create_app(state)) as server:
        given = [_post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 90)))[1]["reference"]]

        def full_disk(folder: Path, stem: str, n: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr("daemon.serve.record_variant", full_disk)
        given.append(_post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 180)))[1]["reference"])
        monkeypatch.undo()
        assert given == ["/references/bob.jpg", "/references/bob--2.jpg"]
        mine.mkdir()
        for i in (1, 2):
            cv2.imwrite(str(mine / f"bob--{i}.png"), np.full((64, 32, 3), 60 * i, np.uint8))
        report = enroll(mine, MeanColour(), Gallery.load(path), save_to=path, append=True)
        assert report.removed == (refs.resolve() / "bob.jpg",)  # bob--2.jpg's name is not in the ledger
        assert _kept(refs) == ["bob--2.jpg"]
        state.gallery = Gallery.load(path)
        answer = _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 30)))[1]
    assert answer["reference"] not in given, answer


def test_a_folder_of_an_older_version_gets_its_ledger_when_serve_starts(tmp_path: Path) -> None:
    # Regression: a references folder serve wrote before the ledger existed had none until serve enrolled
    # there once; until then `enroll --append` left the images of serve's entries it dropped (no ledger: not
    # known as serve's) and /search kept listing them. serve now records the folder's names when it starts.
    from daemon.enroll import enroll

    refs, path, mine = tmp_path / "refs", tmp_path / "g.npz", tmp_path / "mine"
    gallery = Gallery(4, threshold=0.9, max_per_label=2, drop_policy="drop_oldest")
    state = ServiceState(MeanColour(), gallery, ServeConfig(gallery=path, references=refs), model="m")
    with BackgroundServer(create_app(state)) as server:
        for i in (1, 2):
            assert _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 90 * i)))[0] == 200
    (refs / SERVE_LEDGER).unlink()  # as an older version left it: the rows' images, no ledger
    cv2.imwrite(str(refs / "bob--side.png"), np.full((64, 32, 3), 30, np.uint8))  # the user's own photo
    state = ServiceState(
        MeanColour(), Gallery.load(path), ServeConfig(gallery=path, references=refs), model="m"
    )
    with BackgroundServer(create_app(state)) as server:
        assert (refs / SERVE_LEDGER).is_file()  # on start, before any enrolment
        mine.mkdir()
        for i in (1, 2):
            cv2.imwrite(str(mine / f"bob--{i}.png"), np.full((64, 32, 3), 60 * i, np.uint8))
        report = enroll(mine, MeanColour(), Gallery.load(path), save_to=path, append=True)
        assert report.removed == (refs.resolve() / "bob--2.jpg", refs.resolve() / "bob.jpg")
        assert _kept(refs) == ["bob--side.png"]
        state.gallery = Gallery.load(path)
        answer = _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 30)))[1]
    assert answer["reference"] == "/references/bob--3.jpg", answer  # past the names given before


def test_serves_images_kept_before_a_switch_of_label_from_are_removed_after_it(tmp_path: Path) -> None:
    """Regression: which image of a dropped entry was serve's was decided by the layout the enroll section says
    now, so after a switch to `label_from: folder` the images serve had kept at the folder's top level
    (bob.jpg, bob--2.jpg) were never removed when the cap dropped their entries (nor, switched back, those of a
    person's folder, bob/1.jpg): each is taken by the layout its own path shows, which its folder's ledger must
    name as serve's; the user's own photo stays."""
    from daemon.enroll import unenroll

    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    by_folder = EnrollConfig(label_from="folder")
    gallery = Gallery(4, threshold=0.9, max_per_label=2, drop_policy="drop_oldest")

    def enrol(naming: EnrollConfig, shades: tuple[int, ...]) -> list[list[str]]:
        cfg = ServeConfig(gallery=path, references=refs)
        kept = Gallery.load(path) if path.exists() else gallery
        state = ServiceState(MeanColour(), kept, cfg, model="m", naming=naming)
        with BackgroundServer(create_app(state)) as server:
            return [_post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, s)))[1]["removed"] for s in shades]

    assert enrol(EnrollConfig(), (40, 80)) == [[], []]
    cv2.imwrite(str(refs / "bob--side.png"), np.full((64, 32, 3), 30, np.uint8))  # the user's own photo
    assert enrol(by_folder, (120, 160)) == [["/references/bob.jpg"], ["/references/bob--2.jpg"]]
    assert _kept(refs) == ["bob", "bob--side.png"] and _kept(refs / "bob") == ["1.jpg", "2.jpg"]
    assert enrol(EnrollConfig(), (200, 240)) == [["/references/bob/1.jpg"], ["/references/bob/2.jpg"]]
    assert _kept(refs) == ["bob", "bob--3.jpg", "bob--4.jpg", "bob--side.png"] and not _kept(refs / "bob")
    report = unenroll(path, ["bob"], by_folder)
    assert (
        report.removed == (refs.resolve() / "bob--3.jpg", refs.resolve() / "bob--4.jpg") and not report.kept
    )
    assert _kept(refs) == ["bob", "bob--side.png"]


def test_enroll_leaves_serves_images_where_no_ledger_marks_the_folder_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A folder an older version's serve wrote to, where serve has not started since: no ledger says which
    # names it gave, so `enroll --append` removes none of them, and a warning names the folder.
    from daemon.enroll import enroll

    refs, path, mine = tmp_path / "refs", tmp_path / "g.npz", tmp_path / "mine"
    gallery = Gallery(4, threshold=0.9, max_per_label=1, drop_policy="drop_oldest")
    state = ServiceState(MeanColour(), gallery, ServeConfig(gallery=path, references=refs), model="m")
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 0, 90)))[0] == 200
    (refs / SERVE_LEDGER).unlink()
    mine.mkdir()
    cv2.imwrite(str(mine / "bob.png"), np.full((64, 32, 3), 60, np.uint8))
    report = enroll(mine, MeanColour(), Gallery.load(path), save_to=path, append=True)
    assert report.evicted == (("bob", 1),) and report.removed == ()
    assert _kept(refs) == ["bob.jpg"]
    assert f"{refs.resolve()} holds no ledger" in caplog.text and "stay" in caplog.text, caplog.text


def test_a_references_folder_it_cannot_write_is_served_for_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # serve records the folder's names when it starts; a folder it may only read (served for /search's URLs)
    # is served all the same, with a warning naming it.
    refs = tmp_path / "refs"
    refs.mkdir()

    def read_only(folder: Path, naming: EnrollConfig) -> None:
        raise PermissionError(13, "Permission denied", str(folder / SERVE_LEDGER))

    monkeypatch.setattr("daemon.serve.record_folder", read_only)
    state = ServiceState(MeanColour(), Gallery(4), ServeConfig(references=refs), model="m")
    with BackgroundServer(create_app(state)) as server:
        assert _call(f"{server.url}/health")[0] == 200
    assert f"cannot record the names of {refs}" in caplog.text and "Permission denied" in caplog.text


def test_a_references_folder_whose_lock_file_cannot_be_made_is_served_for_search(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # serve takes the folder's lock file to record its names at start: one it cannot make (a read-only folder;
    # here a folder in its place) is said, and the folder served for /search; an enrolment is a 409 naming it.
    refs = tmp_path / "refs"
    (refs / SERVE_LOCK).mkdir(parents=True)
    cv2.imwrite(str(refs / "ann.jpg"), np.full((64, 32, 3), (0, 0, 200), np.uint8))
    gallery = Gallery(4)
    gallery.add("ann", [1.0, 0.0, 0.0, 0.0])
    state = ServiceState(MeanColour(), gallery, ServeConfig(references=refs), model="m")
    with BackgroundServer(create_app(state)) as server:
        status, body = _post(f"{server.url}/search?k=1&threshold=-1", "q.jpg", _jpeg((0, 0, 200)))
        assert status == 200 and body["matches"][0]["references"] == ["/references/ann.jpg"], body
        status, body = _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 200, 0)))
        assert status == 409 and f"lock file {SERVE_LOCK}" in body["detail"], body
    assert f"cannot record the names of {refs}" in caplog.text and "Is a directory" in caplog.text
    assert _kept(refs) == ["ann.jpg"]


def test_references_serves_the_folders_images_only(tmp_path: Path) -> None:
    # Regression: /references/ served every file of the folder, so with the gallery kept there
    # (--gallery refs/people.npz), anyone who reached the service downloaded its embeddings, labels and the
    # paths of its images (/references/people.npz), and any notes or other files beside the photos too.
    refs = tmp_path / "refs"
    refs.mkdir()
    cv2.imwrite(str(refs / "bob.png"), np.full((8, 4, 3), 90, np.uint8))
    (refs / "notes.txt").write_text("the door code is 1234")
    (refs / "people").mkdir()
    cv2.imwrite(str(refs / "people" / "ann.jpg"), np.full((8, 4, 3), 90, np.uint8))
    cfg = ServeConfig(gallery=refs / "people.npz", references=refs)
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="m")
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "x.jpg", _jpeg((0, 0, 200)), label="eve")[0] == 200
        assert (refs / "people.npz").is_file()
        for name in ("people.npz", "notes.txt", "people", "PEOPLE.NPZ"):
            assert _call(f"{server.url}/references/{name}")[0] == 404, name
        for name in ("bob.png", "eve.jpg", "people/ann.jpg"):
            status, body = _call(f"{server.url}/references/{name}")
            assert status == 200 and body == (refs / name).read_bytes(), name


def test_an_enrolment_with_neither_label_nor_file_name_is_refused(
    toy: tuple[str, ServiceState], tmp_path: Path
) -> None:
    # Regression: an upload with an empty file name and no label field was enrolled as 'upload' (the name
    # the service gives a nameless upload), a label nobody gave; kept as upload.jpg.
    url, state = toy
    status, body = _post(f"{url}/enroll", "", _jpeg((0, 0, 200)))
    assert status == 409 and "label" in body["detail"] and "file name" in body["detail"], body
    # a blank label field is no label either, nor a reason to take the file name ('blob' from a browser)
    for name in ("", "blob"):
        status, body = _post(f"{url}/enroll", name, _jpeg((0, 0, 200)), label="  ")
        assert status == 422 and "the form field 'label' is blank" in body["detail"], body
    assert len(state.gallery) == 0 and not _kept(tmp_path / "refs")
    assert state.errors["enroll"] == 3
    assert _post(f"{url}/enroll", "", _jpeg((0, 0, 200)), label="jane")[1]["label"] == "jane"


def test_an_empty_label_field_is_refused_as_blank(toy: tuple[str, ServiceState], tmp_path: Path) -> None:
    # Regression: an empty label field (a browser form's label left empty; curl -F 'label=' or -F 'label=  ',
    # whose leading blanks curl drops) was taken for no field at all, FastAPI reading an empty form value as
    # missing, and the upload enrolled under its file name: README and given_label say a blank field is a 422.
    url, state = toy
    for name in ("red_shirt.jpg", "blob"):
        status, body = _post(f"{url}/enroll", name, _jpeg((0, 0, 200)), label="")
        assert status == 422 and "the form field 'label' is blank" in body["detail"], body
    assert len(state.gallery) == 0 and not _kept(tmp_path / "refs")
    assert state.errors["enroll"] == 2
    assert _post(f"{url}/enroll", "red_shirt.jpg", _jpeg((0, 0, 200)))[1]["label"] == "red shirt"  # no field


def test_a_label_that_would_hide_the_reference_file_is_refused(
    toy: tuple[str, ServiceState], tmp_path: Path
) -> None:
    # Regression: label '.hidden' was kept as .hidden.jpg and '.' as .jpg.jpg (label ".jpg"): hidden files,
    # which `enroll` of the references folder leaves out, so the folder no longer held every entry.
    url, state = toy
    for label in (".hidden", ".", "..."):
        status, body = _post(f"{url}/enroll", "x.jpg", _jpeg((0, 0, 200)), label=label)
        assert status == 409 and "hidden" in body["detail"], (label, body)
    status, body = _post(f"{url}/enroll", ".secret.jpg", _jpeg((0, 0, 200)))
    assert status == 409
    assert len(state.gallery) == 0 and not _kept(tmp_path / "refs")


def test_a_label_its_file_name_cannot_keep_is_refused(toy: tuple[str, ServiceState], tmp_path: Path) -> None:
    # Regression: label 'AC/DC' was enrolled as 'DC' (kept as DC.jpg) and 'jane--doe' as 'jane' (the rest
    # read as a variant): one person filed under another's name, with a 200.
    url, state = toy
    for label, part in (("AC/DC", "'/'"), ("jane--doe", "'--'"), ("../x", "'/'")):
        status, body = _post(f"{url}/enroll", "x.jpg", _jpeg((0, 0, 200)), label=label)
        assert status == 409 and part in body["detail"] and label in body["detail"], (label, body)
    assert len(state.gallery) == 0 and not _kept(tmp_path / "refs")
    status, body = _post(f"{url}/enroll", "x.jpg", _jpeg((0, 0, 200)), label="mary-jane o'neil")
    assert status == 200 and body["label"] == "mary-jane o'neil"


def test_a_label_field_is_the_label_as_given_never_read_as_a_file_name(
    toy: tuple[str, ServiceState], tmp_path: Path
) -> None:
    """The label field went through the file-name rule: 'R2-D2' became label 'D2' of set R2, 'ab_cd' became
    'ab cd', both answered 200; a label is taken as given (trimmed), and one its reference file name cannot
    keep as it is (enroll of the folder would read another label) is refused, naming what enroll would read;
    control characters are refused naming the field. Set codes come from an upload's file name only."""
    url, state = toy
    image = _jpeg((0, 0, 200))
    for label, read in (("R2-D2", "label 'D2' of set 'R2'"), ("ab_cd", "label 'ab cd'")):
        status, body = _post(f"{url}/enroll", "x.jpg", image, label=label)
        assert status == 409 and f"label {label!r} cannot be kept" in body["detail"], body
        assert f"as {read}" in body["detail"], body
    for label in ("ann\nbob", "a\tb", "x\x7f"):
        status, body = _post(f"{url}/enroll", "x.jpg", image, label=label)
        assert status == 422 and "the form field 'label' holds the control character" in body["detail"], body
    assert len(state.gallery) == 0 and not _kept(tmp_path / "refs")
    for label, kept in (("  R2 D2 ", "R2 D2"), ("Dr  Who", "Dr Who"), ("A12 jane", "A12 jane")):
        status, body = _post(f"{url}/enroll", "A7-zed.jpg", image, label=label)
        assert status == 200 and body["label"] == kept, body
    status, body = _post(f"{url}/enroll", "A7-zed.jpg", image)  # no label field: the file name's rule
    assert status == 200 and body["label"] == "zed" and body["reference"] == "/references/A7-zed.jpg"
    assert sorted(state.gallery.unique_labels) == ["A12 jane", "Dr Who", "R2 D2", "zed"]
    names, _ = reference_files(
        tmp_path / "refs", EnrollConfig()
    )  # the folder, read by enroll: the same labels
    assert sorted({n.label for n in names}) == sorted(state.gallery.unique_labels)


def test_a_label_with_an_invisible_character_is_refused_but_joiners_names_need_are_kept(
    toy: tuple[str, ServiceState], tmp_path: Path
) -> None:
    """A label holding a zero-width space, a right-to-left override or a byte-order mark was enrolled: 'a\u200bb'
    shows as 'ab' everywhere but is another label (unenroll ab did not find it), and a bidi override shows a label
    reordered. They are refused naming the character; the joiners Persian, Indic names and emoji need are kept."""
    url, state = toy
    image = _jpeg((0, 0, 200))
    for label, name in (("a\u200bb", "ZERO WIDTH SPACE"), ("eve\u202etxt", "RIGHT-TO-LEFT OVERRIDE")):
        status, body = _post(f"{url}/enroll", "x.jpg", image, label=label)
        assert status == 422 and name in body["detail"] and "'label'" in body["detail"], body
    status, body = _post(f"{url}/enroll", "x.jpg", image, label="\ufeffann")
    assert status == 422 and "ZERO WIDTH NO-BREAK SPACE" in body["detail"], body
    assert len(state.gallery) == 0 and not _kept(tmp_path / "refs")
    for label in ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0915\u094d\u200d\u0937"):
        status, body = _post(f"{url}/enroll", "x.jpg", image, label=label)  # ZWNJ (Persian), ZWJ (Devanagari)
        assert status == 200 and body["label"] == label, body


def test_a_label_keeps_an_emoji_flag_s_tags_and_refuses_a_language_tag(
    toy: tuple[str, ServiceState], tmp_path: Path
) -> None:
    """A subdivision flag (Scotland's: a black flag, the tags g b s c t and a cancel tag, U+E0020-E007F, format
    characters) is kept in a label, the cancel tag, the range's last, included; the language tag U+E0001, a
    format character below the range, which shows as nothing, is refused. Kills the mutants: the flag tags
    refused as invisible, the range's end left out, its start taken lower."""
    url, state = toy
    image = _jpeg((0, 0, 200))
    scotland = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    status, body = _post(f"{url}/enroll", "x.jpg", image, label=f"ann {scotland}")
    assert status == 200 and body["label"] == f"ann {scotland}", body
    status, body = _post(f"{url}/enroll", "x.jpg", image, label="bob\U000e0001")
    assert status == 422 and "LANGUAGE TAG" in body["detail"], body
    assert set(state.gallery.labels) == {f"ann {scotland}"}


def test_a_label_no_file_name_can_hold_is_refused(toy: tuple[str, ServiceState], tmp_path: Path) -> None:
    # Regression: a label of 200 '€' (600 UTF-8 bytes, over the 255 a file name holds) and an upload named
    # 'a\x00b.jpg' were each a 500 with a cv2.error traceback from writing the reference image.
    url, state = toy
    status, body = _post(f"{url}/enroll", "q.jpg", _jpeg((1, 2, 3)), label="€" * 200)
    assert status == 409 and "bytes" in body["detail"], body
    status, body = _post(f"{url}/enroll", "a\x00b.jpg", _jpeg((1, 2, 3)))
    assert status == 409 and "\\x00" in body["detail"], body
    assert len(state.gallery) == 0 and not _kept(tmp_path / "refs")
    assert _post(f"{url}/enroll", "q.jpg", _jpeg((1, 2, 3)), label="€" * 70)[0] == 200  # 210 bytes: fits


def test_reference_urls_are_percent_encoded(toy: tuple[str, ServiceState], tmp_path: Path) -> None:
    # Regression: label 'no#1' was kept as no#1.jpg and given as /references/no#1.jpg, a URL that fetches
    # /references/no (404); a space, '?', '%' or 'ë' broke the URLs in the same way.
    url, _ = toy
    image = _jpeg((0, 0, 200))
    for label in ("no#1", "what?", "100%", "Zoë Smith"):
        status, body = _post(f"{url}/enroll", "x.jpg", image, label=label)
        assert status == 200, body
        kept = tmp_path / "refs" / urllib.parse.unquote(body["reference"].removeprefix("/references/"))
        assert _call(url + body["reference"]) == (200, kept.read_bytes())
    status, body = _post(f"{url}/search?k=4&threshold=0.5", "q.jpg", image)
    refs = [r for m in body["matches"] for r in m["references"]]
    assert len(refs) == 4 and all(_call(url + r)[0] == 200 for r in refs), refs
    assert "/references/no%231.jpg" in refs


def test_a_reference_image_whose_name_is_not_utf8_is_left_out_of_search(
    toy: tuple[str, ServiceState], tmp_path: Path
) -> None:
    """One photo named in Latin-1 (b'caf\\xe9.jpg') copied into the references folder made every /search
    answer 400 with "'utf-8' codec can't encode character '\\udce9'..." (its URL could not be made): a
    request blamed for the server's folder, and no search answered until the file was renamed; it is left out
    of the listing, as enroll leaves it out of the gallery, and the others are listed."""
    url, _ = toy
    image = _jpeg((0, 0, 200))
    status, body = _post(f"{url}/enroll", "x.jpg", image, label="ann")
    assert status == 200, body
    (tmp_path / "refs" / os.fsdecode(b"caf\xe9.jpg")).write_bytes(image)
    (tmp_path / "refs" / os.fsdecode(b"ann--\xe9t\xe9.jpg")).write_bytes(image)
    status, body = _post(f"{url}/search?k=1&threshold=0.5", "q.jpg", image)
    assert status == 200, body
    assert body["matches"][0]["references"] == ["/references/ann.jpg"]


def test_an_image_of_a_label_at_its_cap_under_drop_latest_is_refused_naming_the_settings(
    tmp_path: Path,
) -> None:
    """A gallery whose drop_policy is drop_latest refuses an image of a label at its max_per_label: the 409 said
    "'ann' is at its cap and the gallery drops the latest image", naming neither setting, and README said such an
    image 'replaces one of its entries and is taken'; the answer names both settings (and the image is not
    kept, the gallery not changed)."""
    gallery = Gallery(4, threshold=0.9, max_per_label=1, drop_policy="drop_latest")
    cfg = ServeConfig(gallery=tmp_path / "g.npz", references=tmp_path / "refs")
    state = ServiceState(MeanColour(), gallery, cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "x.jpg", _jpeg((0, 0, 200)), label="ann")[0] == 200
        status, body = _post(f"{server.url}/enroll", "y.jpg", _jpeg((0, 0, 190)), label="ann")
    assert status == 409, body
    assert "max_per_label" in body["detail"] and "drop_latest" in body["detail"], body
    assert "holds 1" in body["detail"], body
    assert sorted(p.name for p in (tmp_path / "refs").glob("*.jpg")) == ["ann.jpg"]
    assert len(Gallery.load(tmp_path / "g.npz")) == 1


def test_bad_uploads_get_a_4xx_with_a_reason(toy: tuple[str, ServiceState]) -> None:
    url, state = toy
    status, body = _post(f"{url}/recognize", "empty.jpg", b"")
    assert status == 400 and "empty" in body["detail"]
    status, body = _post(f"{url}/recognize", "notes.txt", b"this is not an image")
    assert status == 400 and "not an image" in body["detail"]
    status, body = _post(f"{url}/recognize", "huge.jpg", b"\xff" * 60_000)
    assert status == 413 and "limit" in body["detail"]
    status, body = _post(f"{url}/enroll", "___.jpg", _jpeg((1, 2, 3)))
    assert status == 409 and "label" in body["detail"]
    status, body = _call(f"{url}/recognize", b"", "multipart/form-data; boundary=x")
    assert status in (400, 422)
    status, body = _post(f"{url}/recognize?detect=true", "q.jpg", _jpeg((0, 0, 200)))
    assert status == 400 and "detector" in body["detail"]
    status, body = _post(f"{url}/recognize?k=0", "q.jpg", _jpeg((0, 0, 200)))
    assert status == 422
    assert state.errors["recognize"] >= 4 and len(state.gallery) == 0


def test_an_unknown_query_parameter_is_refused_naming_it(toy: tuple[str, ServiceState]) -> None:
    # Regression: `/recognize?treshold=0.99` (a typo) answered 200 at the gallery's threshold, the parameter
    # silently ignored; so did `/enroll?label=bob`, enrolling under the file name instead.
    url, state = toy
    status, body = _post(f"{url}/recognize?treshold=0.99", "q.jpg", _jpeg((0, 0, 200)))
    assert status == 422 and "treshold" in body["detail"] and "threshold" in body["detail"], body
    status, body = _post(f"{url}/search?k=2&top=3", "q.jpg", _jpeg((0, 0, 200)))
    assert status == 422 and "'top'" in body["detail"], body
    status, body = _post(f"{url}/enroll?label=bob", "jane.jpg", _jpeg((0, 0, 200)))
    assert status == 422 and "'label'" in body["detail"] and "none" in body["detail"], body
    assert len(state.gallery) == 0
    assert _post(f"{url}/recognize?k=2&threshold=0.5&detect=false", "q.jpg", _jpeg((0, 0, 200)))[0] == 200
    assert state.errors["recognize"] == 1 and state.errors["enroll"] == 1


def test_a_repeated_query_parameter_is_refused_naming_it(toy: tuple[str, ServiceState]) -> None:
    # Regression: `/recognize?threshold=0.99&threshold=0.1` answered 200 at the last value, the first dropped
    # without a word (a client adding its own threshold to a URL that held one), where a form field sent twice
    # is refused.
    url, state = toy
    assert _post(f"{url}/enroll", "red.jpg", _jpeg((0, 0, 200)))[0] == 200
    status, body = _post(f"{url}/recognize?threshold=0.99&threshold=-1", "q.jpg", _jpeg((200, 0, 0)))
    assert status == 422 and "'threshold'" in body["detail"] and "once" in body["detail"], body
    status, body = _post(f"{url}/search?k=1&k=2&threshold=0&threshold=1", "q.jpg", _jpeg((200, 0, 0)))
    assert status == 422 and "'k', 'threshold'" in body["detail"], body
    status, body = _post(f"{url}/recognize?detect=false&detect=true", "q.jpg", _jpeg((200, 0, 0)))
    assert status == 422 and "'detect'" in body["detail"], body
    assert state.errors["recognize"] == 2 and state.errors["search"] == 1
    assert _post(f"{url}/search?k=1&threshold=-1", "q.jpg", _jpeg((200, 0, 0)))[0] == 200


def test_an_unknown_or_repeated_form_field_is_refused_naming_it(
    toy: tuple[str, ServiceState], tmp_path: Path
) -> None:
    # Regression: a form field an endpoint does not take was ignored, so `-F lable='jane doe'` (a typo)
    # enrolled the upload under its file name; a second image (or label) was taken in place of the first,
    # the answer about one of the two with nothing said.
    url, state = toy
    red, blue = ("q.jpg", _jpeg((0, 0, 200))), ("b.jpg", _jpeg((200, 0, 0)))
    status, body = _call(f"{url}/enroll", *_multipart({"image": red}, {"lable": "jane doe"}))
    assert status == 422 and "'lable'" in body["detail"] and "image, label" in body["detail"], body
    two = _multipart([("image", red), ("image", blue)], {})
    for endpoint in ("recognize", "search", "enroll"):
        status, body = _call(f"{url}/{endpoint}", *two)
        assert status == 422 and "'image'" in body["detail"] and "once" in body["detail"], (endpoint, body)
    status, body = _post(f"{url}/search", *red, label="x")
    assert status == 422 and "'label'" in body["detail"] and "takes image" in body["detail"], body
    assert len(state.gallery) == 0 and not _kept(tmp_path / "refs")
    assert state.errors["enroll"] == 2 and state.errors["search"] == 2 and state.errors["recognize"] == 1
    assert _post(f"{url}/enroll", *red, label="jane doe")[1]["label"] == "jane doe"


def test_recognize_with_detect_says_when_it_found_no_person(tmp_path: Path) -> None:
    # Regression: recognize?detect=true on an image the detector finds nobody in answered queries [] and
    # no_person [], where the CLI's recognize --detect lists the image under no_person.
    state = ServiceState(
        MeanColour(), Gallery(4), ServeConfig(), model="mean-colour", detector=FixedDetector([], [])
    )
    with BackgroundServer(create_app(state)) as server:
        status, body = _post(f"{server.url}/recognize?detect=true", "empty.jpg", _jpeg((0, 0, 200)))
        assert status == 200 and body["queries"] == [] and body["no_person"] == ["empty.jpg"], body
        status, body = _post(f"{server.url}/recognize", "crop.jpg", _jpeg((0, 0, 200)))
        assert status == 200 and len(body["queries"]) == 1 and body["no_person"] == [], body


def test_health_answers_a_head_request(toy: tuple[str, ServiceState]) -> None:
    """`HEAD /health` (what some health checkers send) was a 405, as if the service were down."""
    url, _ = toy
    with urllib.request.urlopen(urllib.request.Request(f"{url}/health", method="HEAD"), timeout=30) as r:
        assert r.status == 200 and r.read() == b""


def test_health_counts_requests_refused_before_their_endpoint_ran(toy: tuple[str, ServiceState]) -> None:
    # Regression: /health counted neither the request nor the error of a 422 from FastAPI's validation
    # (k=0, no image field) or a 413 from the body limit: a client sending only such requests left the
    # counts at zero.
    url, _ = toy
    assert _post(f"{url}/recognize?k=0", "q.jpg", _jpeg((0, 0, 200)))[0] == 422
    assert _call(f"{url}/search", *_multipart({}, {"label": "x"}))[0] == 422
    assert _post(f"{url}/enroll", "huge.jpg", b"\xff" * (60_000 + MULTIPART_SLACK))[0] == 413
    h = _call(f"{url}/health")[1]
    assert h["requests"] == {"recognize": 1, "search": 1, "enroll": 1, "health": 1}, h
    assert h["errors"] == {"recognize": 1, "search": 1, "enroll": 1}, h


def test_health_counts_a_multipart_request_without_a_boundary(toy: tuple[str, ServiceState]) -> None:
    # Regression: a multipart body whose Content-Type names no boundary was answered 400 ('Missing boundary
    # in multipart.') by the form parser, before the endpoint ran, and /health counted neither the request
    # nor its error, unlike every other bad request.
    url, _ = toy
    body, _ = _multipart({"image": ("q.jpg", _jpeg((0, 0, 200)))}, {})
    for endpoint in ("recognize", "search", "enroll"):
        status, answer = _call(f"{url}/{endpoint}", body, "multipart/form-data")
        assert status == 400 and "boundary" in answer["detail"], (endpoint, status, answer)
    h = _call(f"{url}/health")[1]
    assert h["requests"] == {"recognize": 1, "search": 1, "enroll": 1, "health": 1}, h
    assert h["errors"] == {"recognize": 1, "search": 1, "enroll": 1}, h


def test_an_image_too_large_to_decode_is_refused_from_its_header(toy: tuple[str, ServiceState]) -> None:
    # Regression: a PNG of a few KB holding a huge image was decoded whole (a 750 KB PNG took 768 MB).
    url, state = toy
    big = cv2.imencode(".png", np.zeros((2000, 3000), np.uint8))[1].tobytes()  # 6 MP in a few KB
    assert len(big) < state.cfg.max_upload_bytes
    status, body = _post(f"{url}/recognize", "bomb.png", big)
    assert status == 413 and "3000x2000" in body["detail"] and "max_image_pixels" in body["detail"]
    fine = cv2.imencode(".png", np.zeros((1000, 2000), np.uint8))[1].tobytes()  # 2 MP: under the limit
    assert _post(f"{url}/recognize", "fine.png", fine)[0] == 200


def test_an_image_over_pillows_own_bound_is_refused_from_its_header(toy: tuple[str, ServiceState]) -> None:
    # Regression: a 57-byte PNG declaring 50000x50000 was a 500 with Pillow's DecompressionBombError
    # traceback in the log, on every endpoint, instead of the 413 max_image_pixels promises.
    url, state = toy
    for endpoint in ("recognize", "search", "enroll"):
        status, body = _post(f"{url}/{endpoint}", "bomb.png", png_declaring(50_000, 50_000))
        assert status == 413 and "bomb.png" in body["detail"], (endpoint, status, body)
    assert len(state.gallery) == 0


def test_an_image_whose_size_pillow_cannot_read_is_not_decoded(toy: tuple[str, ServiceState]) -> None:
    # Regression: a format OpenCV decodes and Pillow does not read (PFM, Radiance HDR) skipped the
    # max_image_pixels check, so a 40-byte PFM declaring 20000x20000 made OpenCV allocate 4.8 GB. Here a
    # smaller one (6 MP, over the toy's 4 MP limit; OpenCV would allocate 72 MB).
    url, _ = toy
    for filename, data in (
        ("big.pfm", b"PF\n3000 2000\n-1.0\n" + bytes(64)),
        ("big.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2000 +X 3000\n" + bytes(64)),
    ):
        status, body = _post(f"{url}/recognize", filename, data)
        assert status == 400 and "size" in body["detail"] and filename in body["detail"], (status, body)
    small = cv2.imencode(".pfm", np.ones((8, 8, 3), np.float32))[1].tobytes()  # small, but unmeasured too
    assert _post(f"{url}/recognize", "small.pfm", small)[0] == 400


def _status_while_sending(url: str, head: str, body: bytes) -> int:
    """Send ``head`` and ``body`` on a raw socket WITHOUT finishing the request; the status the server
    answers within 10 s (0: none, it waits for the rest of the body)."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        try:
            reply = sock.recv(64)
        except TimeoutError:
            return 0
    return int(reply.split()[1]) if reply.startswith(b"HTTP/") else 0


def test_an_oversized_body_is_refused_before_it_is_read(toy: tuple[str, ServiceState]) -> None:
    # Regression: the body was read whole (the image spooled to a temporary file) and only then the
    # upload refused with 413, so a client could make the server receive and store any amount of data.
    url, state = toy
    boundary = "b0undary"
    ctype = f"multipart/form-data; boundary={boundary}"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="huge.jpg"\r\n\r\n'
    start = part.encode() + b"\xff" * 1000
    declared = (
        f"POST /recognize HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: 10000000\r\n\r\n"
    )
    assert _status_while_sending(url, declared, start) == 413
    chunked = (
        f"POST /recognize HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    size = state.cfg.max_upload_bytes + 2 * MULTIPART_SLACK
    over = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (start, b"\xff" * size))
    assert _status_while_sending(url, chunked, over) == 413
    assert len(state.gallery) == 0


def _streamed_until_closed(sock: socket.socket, within_s: float) -> tuple[float, bytes]:
    """Send 64 KiB every 10 ms on ``sock``, reading what comes, until the server closes it; the seconds that
    took (inf: not within ``within_s``) and what the server sent."""
    sock.setblocking(False)
    start, answer = time.monotonic(), b""
    while time.monotonic() - start < within_s:
        try:
            with contextlib.suppress(BlockingIOError):
                sock.send(b"\xff" * 65536)
            with contextlib.suppress(BlockingIOError):
                got = sock.recv(65536)
                if not got:
                    return time.monotonic() - start, answer
                answer += got
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start, answer
        time.sleep(0.01)
    return math.inf, answer


def test_the_rest_of_a_body_refused_413_is_not_taken_without_end(tmp_path: Path) -> None:
    """The 413 came at once, but the server went on taking the refused body as the client sent it, to its
    Content-Length (10**12 here) or, chunked, for ever: one client could keep a connection and the server's time
    for as long as it liked. Once answered, the client has client_timeout_s to stop sending, then the
    connection is closed; its answer reads the 413 first."""
    cfg = ServeConfig(max_upload_bytes=1_000, client_timeout_s=0.5)
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        ctype = "multipart/form-data; boundary=b"
        for length in (f"Content-Length: {10**12}", "Transfer-Encoding: chunked"):
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(
                    f"POST /enroll HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n{length}\r\n\r\n".encode()
                )
                if length.startswith("Transfer"):
                    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'
                    sock.sendall(b"ffffffffff\r\n" + part)  # one chunk of a TiB: what follows is in it
                closed, answer = _streamed_until_closed(sock, 10.0)
            assert answer.startswith(b"HTTP/1.1 413 ") and b"limit of" in answer, (length, answer)
            assert closed < 5.0, (length, closed)  # 0.5 s after the answer (a loaded host closes it later)
        assert _call(f"{server.url}/health")[0] == 200


def test_a_gallery_of_another_dimension_is_refused_at_start(tmp_path: Path) -> None:
    # Regression: `serve` started with a 1280-d gallery and a 128-d embedder (an adaptation head), reported
    # itself healthy, and then failed every request (409 recognise, 400 search and enrol).
    with pytest.raises(DataError, match="the gallery holds 8-d embeddings but the embedder's output is 4-d"):
        ServiceState(MeanColour(), Gallery(8), ServeConfig(gallery=tmp_path / "g.npz"), model="mean-colour")


class SignedColour(MeanColour):
    """MeanColour that says what it is, as the real embedders do (daemon.embed.embedder_signature)."""

    signature = "mean-colour sha256:00ff00ff"


def test_a_new_gallery_records_its_embedder_and_another_ones_is_refused(tmp_path: Path) -> None:
    # Regression: a gallery enrolled with another model of the same width was served, every match nonsense.
    state = ServiceState(SignedColour(), Gallery(4), ServeConfig(gallery=tmp_path / "g.npz"), model="c")
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "jane.jpg", _jpeg((0, 0, 200)))[0] == 200
    saved = Gallery.load(tmp_path / "g.npz")
    assert saved.embedder == SignedColour.signature
    saved.embedder = "other.onnx sha256:12345678"
    with pytest.raises(DataError, match=r"enrolled with other\.onnx sha256:12345678, but the embedder's"):
        ServiceState(SignedColour(), saved, ServeConfig(gallery=tmp_path / "g.npz"), model="c")


class SlowColour(MeanColour):
    """MeanColour that takes ``delay`` seconds per call (a model busy on a large image)."""

    delay = 1.0

    def embed(self, image: Any, xyxy: Any) -> Any:
        time.sleep(self.delay)
        return super().embed(image, xyxy)


def test_a_gallery_file_of_no_gallery_suffix_is_refused_at_start(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: serve --gallery people.txt started; each enrolment was then added to the gallery in memory
    # and kept in the references folder, but answered 400 as the save refused the suffix (and saved nothing).
    from daemon.cli import main

    monkeypatch.setattr("daemon.serve.serve_forever", lambda *a: pytest.fail("it served"))
    assert main(["serve", "--gallery", str(tmp_path / "people.txt"), "--port", "0"]) == 2
    assert "people.txt: a gallery file ends in .rdg, .npz, .json, not .txt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not no suffix"):
        ServeConfig(gallery=tmp_path / "people")
    assert ServeConfig(gallery=tmp_path / "people.RDG").gallery == tmp_path / "people.RDG"


def test_cli_serve_names_references_as_the_config_enroll_section_says(
    mobilenet_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: serve named enrolled uploads by the default naming whatever the config's enroll section
    # said: with lowercase and word_separator '.', 'Jane Doe' was enrolled as 'Jane Doe' and kept as
    # Jane_Doe.jpg, which `enroll -c` of the references folder reads as 'jane_doe'.
    from daemon.cli import main
    from daemon.enroll import reference_files

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "cameras:\n  a:\n    source: {uri: a.mp4}\nenroll: {lowercase: true, word_separator: '.'}\n"
    )
    answers: list[Any] = []

    def serve_once(app: Any, host: str, port: int, *_: Any) -> None:
        with BackgroundServer(app) as server:
            answers.append(_post(f"{server.url}/enroll", "x.jpg", _jpeg((0, 0, 200)), label="Jane Doe"))

    monkeypatch.setattr("daemon.serve.serve_forever", serve_once)
    refs = tmp_path / "refs"
    args = ["serve", "-c", str(cfg), "-g", str(tmp_path / "g.npz"), "--references", str(refs)]
    assert main([*args, "--model", str(mobilenet_model)]) == 0
    assert answers[0][0] == 200 and answers[0][1]["label"] == "jane doe"
    names, _ = reference_files(refs, EnrollConfig(lowercase=True, word_separator="."))
    assert [(n.path.name, n.label) for n in names] == [("jane.doe.jpg", "jane doe")]
    assert Gallery.load(tmp_path / "g.npz").labels == ["jane doe"]


class GatedColour(MeanColour):
    """MeanColour whose calls each wait in the model until ``release`` is set (a model busy on a large image);
    ``inside`` counts the calls that came in."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.inside = 0

    def embed(self, image: Any, xyxy: Any) -> Any:
        with self._lock:
            self.inside += 1
        self.release.wait(30)
        return super().embed(image, xyxy)


def test_requests_run_in_worker_threads(tmp_path: Path) -> None:
    # Regression: the async handlers embedded on the event loop, so /health waited for every request in
    # flight and requests ran one at a time (the docstring said worker threads). In threads, the name of a
    # kept reference must be chosen under the lock: two enrolments of one label get two files.
    model = GatedColour()
    state = ServiceState(model, Gallery(4), ServeConfig(references=tmp_path / "refs"), model="gated")
    with BackgroundServer(create_app(state)) as server, ThreadPoolExecutor(4) as pool:
        url = server.url
        busy = [pool.submit(_post, f"{url}/enroll", "jane.jpg", _jpeg((0, 0, 200 - i))) for i in range(3)]
        try:
            # all three in the model at once (one at a time: never), and /health answered while they are
            wait_until(lambda: model.inside == 3, 30, "three enrolments in the model at once")
            assert _call(f"{url}/health")[0] == 200 and not any(f.done() for f in busy)
        finally:
            model.release.set()
        assert [f.result()[0] for f in busy] == [200, 200, 200]
    assert _kept(tmp_path / "refs") == ["jane--2.jpg", "jane--3.jpg", "jane.jpg"]
    assert len(state.gallery) == 3 and state.requests["enroll"] == 3


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within_s`` seconds."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _trickled_until_closed(sock: socket.socket, data: bytes) -> float:
    """Send ``data`` a byte every 0.1 s until the server closes ``sock``; the seconds that took (inf: never)."""
    start = time.monotonic()
    for byte in data:
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
        time.sleep(0.1)
    return math.inf


def test_clients_slow_to_send_their_request_are_closed(tmp_path: Path) -> None:
    # Regression: a connection that never sent its request (or the rest of its headers, or of its body) was
    # held for good, each taking a file descriptor: 300 of them from one client left serve under a 256-file
    # limit answering nobody (/health timed out) and logging 'Too many open files' 10,000 times a second.
    # Closed now once client_timeout_s passes without the headers, or without a byte of the body; a request
    # that takes longer than that to answer is not cut.
    cfg = ServeConfig(references=tmp_path / "refs", client_timeout_s=0.5)
    state = ServiceState(SlowColour(), Gallery(4), cfg, model="slow")
    with BackgroundServer(create_app(state)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        idle, trickle, stalled = (socket.create_connection((host, int(port))) for _ in range(3))
        body, ctype = _multipart({"image": ("x.jpg", _jpeg((0, 0, 200)))}, {})
        head = f"POST /recognize HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        stalled.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:100])
        # a byte every 0.1 s (its headers would take 10 s and more): closed all the same, some time after
        # client_timeout_s (a loaded host closes it late; a timeout each byte puts off keeps it: inf)
        took = _trickled_until_closed(trickle, head.encode())
        assert took < len(head) * 0.1 / 2, took
        assert _closed_by_server(idle, 5.0) and _closed_by_server(stalled, 5.0)
        assert _post(f"{server.url}/recognize", "q.jpg", _jpeg((0, 0, 200)))[0] == 200  # 1 s to answer
        assert _call(f"{server.url}/health")[0] == 200


def test_a_body_trickled_slower_than_client_min_rate_is_closed(tmp_path: Path) -> None:
    """A request body trickled a byte at a time, each pause shorter than client_timeout_s, held its connection
    for as long as the body's length allowed (20 MB at a byte every 9 s: years), so a few hundred such clients
    took every file descriptor as slow headers did. A body has client_timeout_s and a second for each
    client_min_rate bytes to come whole; one sent faster is answered."""
    cfg = ServeConfig(references=tmp_path / "refs", client_timeout_s=0.5, client_min_rate=1000)
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)
        body, ctype = _multipart({"image": ("x.jpg", bytes(cv2.imencode(".jpg", noise)[1]))}, {})
        head = f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
        trickle = socket.create_connection((host, int(port)))
        trickle.sendall(head.encode() + body[:100])
        took = _trickled_until_closed(trickle, body[100:200])  # 10 bytes a second, 10 s for these 100
        assert took < 5.0, took  # past 0.5 s + 100 bytes / 1000 (a loaded host closes it later)

        steady = socket.create_connection((host, int(port)), timeout=10.0)
        steady.sendall(head.encode())
        for start in range(0, len(body), 1000):  # 5,000 bytes a second, some 2 s in all
            steady.sendall(body[start : start + 1000])
            time.sleep(0.2)
        answer = steady.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer
        assert len(body) > 8000
        steady.close()


def _tcp_state(sock: socket.socket) -> int:
    """The connection's TCP state as Linux's TCP_INFO gives it (1: established; 7: closed, 8: the peer closed)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0]


def test_each_body_on_a_kept_connection_has_its_own_time(tmp_path: Path) -> None:
    """Three searches on one kept-alive connection, 0.4 s apart, each body sent 50 ms after its headers, at
    client_timeout_s 0.5 and a client_min_rate of 10**6 (a body has 0.5 s and a hair): each body is timed from
    its own first bytes, so all three are answered on the one connection. Kills the mutant that keeps the first
    body's start for the next (the third closed as too slow, 0.8 s past it)."""
    cfg = ServeConfig(references=tmp_path / "refs", client_timeout_s=0.5, client_min_rate=10**6)
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        body, ctype = _multipart({"image": ("x.jpg", _jpeg((0, 0, 200)))}, {})
        head = f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
        with socket.create_connection((host, int(port)), timeout=5.0) as client:
            answers = client.makefile("rb")
            for _ in range(3):
                client.sendall(head.encode())
                time.sleep(0.05)  # the body comes apart from its headers
                client.sendall(body)
                status = answers.readline()
                assert status.startswith(b"HTTP/1.1 200"), status
                length = 0
                while (line := answers.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                assert json.loads(answers.read(length)) is not None
                time.sleep(0.4)


def test_a_client_that_reads_no_answer_is_closed(tmp_path: Path) -> None:
    """A client that sent its requests (pipelined, all at once) and then read none of the answers was held for
    good once its answers filled the socket's buffers: the server waited to write the next one without end,
    each such client a file descriptor (a slow reader's slowloris). A connection whose answer cannot be written
    for client_timeout_s is closed; one that reads its answers as they come is served on (keep-alive)."""
    cfg = ServeConfig(references=tmp_path / "refs", client_timeout_s=0.5)
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        stalled = socket.create_connection((host, int(port)))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.setblocking(False)
        requests = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 100
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # past when the server stops reading: its answers are not taken
            try:
                stalled.send(requests)
            except BlockingIOError:
                time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                break  # closed already
        wait_until(lambda: _tcp_state(stalled) != 1, 10.0, "the server closing a client that reads nothing")
        stalled.close()
        reader = http.client.HTTPConnection(host, int(port), timeout=5.0)
        used = []
        for _ in range(3):  # a client that reads its answers keeps its connection past client_timeout_s
            reader.request("GET", "/openapi.json")
            answer = reader.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["paths"]
            used.append(reader.sock)
            time.sleep(0.3)
        assert all(sock is used[0] for sock in used)  # one connection throughout
        reader.close()
        assert _call(f"{server.url}/health")[0] == 200


def test_a_client_reading_its_answers_steadily_is_not_taken_for_one_that_reads_none(tmp_path: Path) -> None:
    """The unread-answer bound timed how long writing stayed paused, not whether the client took any bytes:
    the kernel signals room to write only once much of its send queue has drained, so a client reading 2.5 MB/s
    of pipelined answers saw a pause outlast client_timeout_s (0.5 s) and was cut off after some 1,100 of its
    2,000 answers. A pause is now held against the client only while it takes under client_min_rate bytes a
    second of what waits for it."""
    cfg = ServeConfig(references=tmp_path / "refs", client_timeout_s=0.5)
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        client = socket.create_connection((host, int(port)))
        client.setblocking(False)
        requests = memoryview(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
        got, answers, reset = bytearray(), 0, False
        deadline = time.monotonic() + 60.0
        while answers < 2000 and time.monotonic() < deadline:
            if requests:
                with contextlib.suppress(BlockingIOError):
                    requests = requests[client.send(requests) :]
            try:
                chunk = client.recv(128 * 1024)
            except BlockingIOError:
                chunk = None
            except ConnectionResetError:
                reset = True
                break
            if chunk == b"":
                break
            if chunk:
                got += chunk
                answers = got.count(b"HTTP/1.1 200 OK")
            time.sleep(0.05)  # 128 KiB every 50 ms: some 2.5 MB/s
        client.close()
    assert not reset and answers == 2000, (answers, reset)


def test_openapi_schema_lists_the_endpoints(toy: tuple[str, ServiceState]) -> None:
    url, _ = toy
    status, schema = _call(f"{url}/openapi.json")
    assert status == 200
    assert {"/health", "/recognize", "/search", "/enroll"} <= set(schema["paths"])
    assert "requestBody" in schema["paths"]["/enroll"]["post"]


def test_real_crops_recognised_over_http(mobilenet_model: Path, tmp_path: Path) -> None:
    refs = write_reference_crops(tmp_path / "refs", identities=4, per_identity=3)
    embedder = OnnxEmbedder(EmbedderConfig(model=str(mobilenet_model)), CPU, tmp_path)
    gallery = Gallery(embedder.dim, threshold=0.0)
    enrolled = [p for p in refs if not p.stem.endswith("--3")]
    state = ServiceState(embedder, gallery, ServeConfig(references=tmp_path / "served"), model="mobilenetv2")
    with BackgroundServer(create_app(state)) as server:
        for p in enrolled:
            status, body = _post(f"{server.url}/enroll", p.name, p.read_bytes())
            assert status == 200, body
        held_out = [p for p in refs if p.stem.endswith("--3")]
        hits = 0
        for p in held_out:
            status, body = _post(f"{server.url}/recognize?k=1", p.name, p.read_bytes())
            assert status == 200
            best = body["queries"][0]["matches"][0]
            assert -1.0 <= best["similarity"] <= 1.0
            hits += best["label"] == p.stem.split("--")[0].replace("_", " ")
    assert len(gallery) == len(enrolled)
    assert hits >= len(held_out) // 2  # an ImageNet embedder, 2 references each: most, not all


def _enroll_append(folder: Path, gallery: Path, model: Path, slow_save_flag: Path | None = None) -> Any:
    """``reid-daemon enroll FOLDER --gallery G --append`` in another process; with ``slow_save_flag``, its
    gallery save first touches that file and then waits 2 s (holding what it read, as a large save does)."""
    import subprocess
    import sys

    args = ["enroll", str(folder), "--gallery", str(gallery), "--append", "--model", str(model)]
    slow = (
        "import pathlib, time\nimport daemon.gallery as g\nreal = g.Gallery.save\n"
        "def save(self, path):\n"
        f"    pathlib.Path({str(slow_save_flag)!r}).touch()\n    time.sleep(2.0)\n    return real(self, path)\n"
        "g.Gallery.save = save\n"
    )
    script = (
        f"{slow if slow_save_flag else ''}import sys\nfrom daemon.cli import main\nsys.exit(main({args!r}))\n"
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_serve_and_enroll_append_on_one_gallery_lose_no_rows(mobilenet_model: Path, tmp_path: Path) -> None:
    # Regression: serve kept the gallery in memory, so its next enrolment after `enroll --append` saved its own
    # copy over the file and the appended rows were gone; and an enrolment made while `enroll --append` held
    # the gallery between reading and saving it was gone once enroll saved. Both take the gallery's lock for
    # their read-modify-write now, and serve reads the file again when another process changed it.
    from collections import Counter

    crops = write_reference_crops(tmp_path / "crops", identities=4, per_identity=2)
    people = sorted({p.stem.split("--")[0] for p in crops})
    first, later = tmp_path / "first", tmp_path / "later"
    for folder, person in ((first, people[0]), (later, people[2])):
        folder.mkdir()
        for p in crops:
            if p.stem.split("--")[0] == person:
                (folder / p.name).write_bytes(p.read_bytes())
    served = [p for p in crops if p.stem.split("--")[0] in (people[1], people[3])]
    embedder = OnnxEmbedder(EmbedderConfig(model=str(mobilenet_model)), CPU, tmp_path)
    path = tmp_path / "g.npz"
    cfg = ServeConfig(gallery=path, references=tmp_path / "refs")
    state = ServiceState(embedder, Gallery(embedder.dim), cfg, model="mobilenetv2")
    flag = tmp_path / "enroll-is-saving"
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", served[0].name, served[0].read_bytes())[0] == 200
        out = _enroll_append(first, path, mobilenet_model).communicate(timeout=120)[0]
        assert b"enrolled 2 image(s)" in out, out
        assert _post(f"{server.url}/enroll", served[1].name, served[1].read_bytes())[0] == 200

        proc = _enroll_append(later, path, mobilenet_model, slow_save_flag=flag)
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "enroll did not get to its save"
            time.sleep(0.05)
        assert _post(f"{server.url}/enroll", served[2].name, served[2].read_bytes())[0] == 200
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, out
        entries = _call(f"{server.url}/health")[1]["gallery"]["entries"]
    labels = Counter(Gallery.load(path).labels)
    want = {people[0]: 2, people[1]: 2, people[2]: 2, people[3]: 1}
    assert labels == Counter({k.replace("_", " "): n for k, n in want.items()}), labels
    assert entries == 7


def test_serve_answers_with_what_enroll_append_added_to_its_gallery(tmp_path: Path) -> None:
    # Regression: serve answered /recognize and /search from the gallery it read at start (or last saved), so
    # the people `enroll --append` added to its gallery file were never found until serve enrolled someone
    # itself or was restarted.
    from daemon.enroll import enroll

    path, mine = tmp_path / "g.npz", tmp_path / "mine"
    state = ServiceState(MeanColour(), Gallery(4, threshold=0.9), ServeConfig(gallery=path), model="m")
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "red.jpg", _jpeg((0, 0, 200)))[0] == 200
        mine.mkdir()
        cv2.imwrite(str(mine / "blue.png"), np.full((64, 32, 3), (200, 0, 0), np.uint8))
        enroll(mine, MeanColour(), Gallery.load(path), save_to=path, append=True)
        status, body = _post(f"{server.url}/recognize?k=1", "q.jpg", _jpeg((190, 0, 10)))
        assert status == 200 and [m["label"] for m in body["queries"][0]["matches"]] == ["blue"], body
        status, body = _post(f"{server.url}/search?k=2&threshold=-1", "q.jpg", _jpeg((190, 0, 10)))
        assert status == 200 and [m["label"] for m in body["matches"]] == ["blue", "red"], body


def _stopped_holder(lock: str) -> Any:
    """A process that enters ``lock`` (an import line, then the with-statement's expression) and then stops
    (SIGSTOP) holding it: a writer suspended in a terminal (Ctrl-Z) or stuck."""
    import subprocess
    import sys

    take, expr = lock.split("\n")
    script = (
        f"import os, pathlib, signal\n{take}\nwith {expr}:\n"
        "    print('held', flush=True)\n    os.kill(os.getpid(), signal.SIGSTOP)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def _stopped_lock_holder(gallery: Path) -> Any:
    """Holds ``gallery``'s lock as ``enroll --append`` does, stopped (``_stopped_holder``)."""
    return _stopped_holder(
        f"from daemon.gallery import locked\nlocked(pathlib.Path({str(gallery)!r}), 5.0, who='enroll --append')"
    )


def _stopped_folder_lock_holder(refs: Path) -> Any:
    """Holds the references folder ``refs``'s lock as another serve does, stopped (``_stopped_holder``)."""
    return _stopped_holder(
        "from daemon.enroll import ledger_locked\n"
        f"ledger_locked(pathlib.Path({str(refs)!r}), 5.0, 'reid-daemon serve', '')"
    )


def _enroll_answer(url: str, filename: str, data: bytes) -> tuple[int, str | None, Any]:
    """An enrolment's status, Retry-After header and body."""
    body, ctype = _multipart({"image": (filename, data)}, {})
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Retry-After"), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Retry-After"), json.loads(e.read())


def test_an_enrolment_waits_for_a_stopped_lock_holder_no_longer_than_lock_wait_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: the wait for the gallery's lock had no end, so a process stopped while it held the lock
    # (enroll --append suspended with Ctrl-Z) held serve's enrolment for good, and with it every /recognize
    # and /search (they waited for the enrolment's hold of the gallery).
    folder = tmp_path / "site data"
    folder.mkdir()
    path = folder / "g.npz"
    # long enough that a search slow on a loaded host is still answered while the enrolment waits
    cfg = ServeConfig(gallery=path, references=folder / "refs", lock_wait_s=6.0)
    state = ServiceState(MeanColour(), Gallery(4, threshold=0.9), cfg, model="mean-colour")
    caplog.set_level(logging.INFO, logger="daemon.gallery")
    with BackgroundServer(create_app(state)) as server, ThreadPoolExecutor(1) as pool:
        url = server.url
        assert _post(f"{url}/enroll", "ann.jpg", _jpeg((0, 0, 200)))[0] == 200
        holder = _stopped_lock_holder(path)
        try:
            start = time.monotonic()
            waiting = pool.submit(_enroll_answer, f"{url}/enroll", "bob.jpg", _jpeg((0, 200, 0)))
            wait_until(  # the enrolment waits for the lock: said once its first try failed
                lambda: any(r.getMessage().startswith(f"waiting for {path.parent}") for r in caplog.records),
                30,
                "the enrolment waiting for the gallery's lock",
            )
            status, body = _post(f"{url}/search?k=1", "q.jpg", _jpeg((0, 0, 190)))
            assert status == 200 and not waiting.done(), "search waited for the enrolment"
            assert [m["label"] for m in body["matches"]] == ["ann"]
            status, retry, body = waiting.result(timeout=30)
            assert status == 503 and 5.9 < time.monotonic() - start < 30, (status, body)
            assert retry == "6"
            detail = body["detail"]
            assert ".g.npz.lock" in detail and f"pid {holder.pid}" in detail and "enroll --append" in detail
            assert "serve.lock_wait_s" in detail and str(folder) not in detail, detail
        finally:
            holder.kill()
            holder.wait(timeout=10)
        assert _post(f"{url}/enroll", "bob.jpg", _jpeg((0, 200, 0)))[0] == 200  # its end freed the lock
        health = _call(f"{url}/health")[1]
    assert health["gallery"]["entries"] == 2 and health["errors"] == {"enroll": 1}
    assert Gallery.load(path).labels == ["ann", "bob"] and _kept(folder / "refs") == ["ann.jpg", "bob.jpg"]


def test_enroll_append_waits_for_a_stopped_lock_holder_no_longer_than_lock_wait_s(
    mobilenet_model: Path, tmp_path: Path, capsys: Any
) -> None:
    # Regression: enroll --append waited for the gallery's lock without end, saying once at INFO level (not
    # shown by default) that it waited: a lock holder stopped for good hung it without a word.
    from daemon.cli import main

    refs = write_reference_crops(tmp_path / "refs", identities=1, per_identity=1)
    path = tmp_path / "g.npz"
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        f"cameras:\n  door:\n    source: {{uri: door.mp4}}\n    embedder: {{model: {mobilenet_model}}}\n"
        "enroll: {lock_wait_s: 0.5}\n"
    )
    holder = _stopped_lock_holder(path)
    try:
        start = time.monotonic()
        code = main(["enroll", str(refs[0].parent), "-g", str(path), "--append", "--config", str(cfg)])
        took = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait(timeout=10)
    err = capsys.readouterr().err
    assert code == 1 and took < 60, (code, took, err)
    assert f"error: the gallery {path.name} has been locked by pid {holder.pid}" in err, err
    assert f"{tmp_path}/.g.npz.lock" in err and "enroll.lock_wait_s" in err, err
    assert not path.exists()


def test_health_counts_what_another_process_saved_and_never_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: /health gave the entries of the gallery as serve last read it, so after `enroll --append` added
    # people to its file a monitor saw the old count until some client enrolled, recognised or searched.
    from daemon.enroll import enroll

    path, mine = tmp_path / "g.npz", tmp_path / "mine"
    state = ServiceState(MeanColour(), Gallery(4, threshold=0.9), ServeConfig(gallery=path), model="m")
    with BackgroundServer(create_app(state)) as server:
        url = server.url
        assert _post(f"{url}/enroll", "red.jpg", _jpeg((0, 0, 200)))[0] == 200
        mine.mkdir()
        cv2.imwrite(str(mine / "blue.png"), np.full((64, 32, 3), (200, 0, 0), np.uint8))
        enroll(mine, MeanColour(), Gallery.load(path), save_to=path, append=True)
        status, h = _call(f"{url}/health")
        assert status == 200 and h["gallery"]["entries"] == 2 and h["gallery"]["labels"] == 2, h
        assert h["gallery"]["problem"] is None

        path.write_bytes(b"not a gallery")  # what it cannot read: said, never a failed /health
        with caplog.at_level("WARNING", logger="daemon.serve"):
            for _ in range(3):
                status, h = _call(f"{url}/health")
                assert status == 200 and h["gallery"]["entries"] == 2, h
                assert "g.npz" in h["gallery"]["problem"] and str(tmp_path) not in h["gallery"]["problem"], h
        assert caplog.text.count("cannot take the gallery file") == 1, caplog.text  # said once, not per check

        with state.lock:  # a search or enrolment at work: /health answers at once, from what it holds
            status, h = _call(f"{url}/health")
            assert status == 200 and h["gallery"]["entries"] == 2, h
        enroll(mine, MeanColour(), Gallery(4), save_to=path, replace=True)  # a good file again: one entry
        status, h = _call(f"{url}/health")
        assert status == 200 and h["gallery"]["entries"] == 1 and h["gallery"]["problem"] is None, h
        assert h["errors"] == {}


class CropsColour(MeanColour):
    """MeanColour that signs its vectors with crop settings, as this release's embedders do."""

    signature = "mean-colour sha256:00ff00ff; crops 4x4"


def test_a_previous_release_gallery_says_its_crop_settings_are_unknown_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: serve warned that the gallery does not record its crop settings at start, and again each time
    # it read the file again after another process saved it (a new copy forgot it had said so): a log that
    # repeats a warning after every `enroll --append` reads like a new problem each time.
    path = tmp_path / "g.npz"
    old = Gallery(4, threshold=0.5)
    old.embedder = "mean-colour sha256:00ff00ff"  # as the previous release recorded it: model alone
    old.add("ann", [0.0, 0.0, 1.0, 0.0])
    old.save(path)
    said = "does not record the crop settings"
    with caplog.at_level("WARNING"):
        state = ServiceState(CropsColour(), Gallery.load(path), ServeConfig(gallery=path), model="m")
        with BackgroundServer(create_app(state)) as server:
            url = server.url
            for i, endpoint in enumerate(("recognize", "search", "enroll")):
                other = Gallery.load(path)  # another process appends to the file
                other.add(f"visitor {i}", [1.0, float(i), 0.0, 0.0])
                other.save(path)
                assert _post(f"{url}/{endpoint}", "bob.jpg", _jpeg((0, 200, 0)))[0] == 200
            other = Gallery.load(path)
            other.add("visitor 9", [0.0, 1.0, 1.0, 0.0])
            other.save(path)
            assert _call(f"{url}/health")[1]["gallery"]["entries"] == 6
    warnings = [r.getMessage() for r in caplog.records if said in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0], warnings


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serve_starts_answers_and_stops_on_sigterm(mobilenet_model: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    refs = write_reference_crops(tmp_path / "refs", identities=2, per_identity=2)
    port = _free_port()
    cmd = [sys.executable, "-m", "daemon", "serve", "--model", str(mobilenet_model), "--port", str(port)]
    cmd += ["--gallery", str(tmp_path / "g.rdg"), "--references", str(tmp_path / "refs")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, h = _call(f"http://127.0.0.1:{port}/health")
                break
            except urllib.error.URLError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "serve did not answer within 60 s"
                time.sleep(0.2)
        assert status == 200 and h["gallery"]["entries"] == 0 and h["dim"] == 1280
        status, body = _post(f"http://127.0.0.1:{port}/enroll", refs[0].name, refs[0].read_bytes())
        # the folder holds person_01--1.jpg and --2.jpg: the new image is numbered past them
        assert status == 200 and body["reference"] == "/references/person_01--3.jpg"
        assert Gallery.load(tmp_path / "g.rdg").labels == [body["label"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=15)[0]
    # uvicorn shuts down cleanly, then re-raises SIGTERM (systemd counts that as a clean stop)
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "shutdown complete" in out


def test_an_enrolment_whose_save_fails_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: the new row stayed in memory (and, at a label's cap, the row it evicted stayed gone) and its
    # reference image stayed in the folder, though the client was told the enrolment failed; a later save wrote
    # it all to the gallery file.
    import errno

    import daemon.gallery

    gallery = Gallery(4, threshold=0.9, max_per_label=1)  # jane's second image evicts her first
    cfg = ServeConfig(gallery=tmp_path / "g.npz", references=tmp_path / "refs")
    state = ServiceState(MeanColour(), gallery, cfg, model="mean-colour")
    real_write = daemon.gallery.atomic_write

    def full_disk(path: Path, write: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with BackgroundServer(create_app(state)) as server:
        url = server.url
        monkeypatch.setattr(daemon.gallery, "atomic_write", full_disk)
        status, body = _post(f"{url}/enroll", "jane.jpg", _jpeg((0, 0, 200)))  # nothing saved yet
        assert status == 409 and "g.npz" in body["detail"] and "No space" in body["detail"]
        assert len(state.gallery) == 0 and not _kept(tmp_path / "refs")

        monkeypatch.setattr(daemon.gallery, "atomic_write", real_write)
        assert _post(f"{url}/enroll", "jane.jpg", _jpeg((0, 0, 200)))[0] == 200
        before = state.gallery.embeddings.copy()

        monkeypatch.setattr(daemon.gallery, "atomic_write", full_disk)
        status, body = _post(f"{url}/enroll", "jane.jpg", _jpeg((200, 0, 0)))
        assert status == 409 and "g.npz" in body["detail"]
        assert state.gallery.labels == ["jane"]
        np.testing.assert_array_equal(state.gallery.embeddings, before)  # the evicted row is back
        assert _kept(tmp_path / "refs") == ["jane.jpg"]
        assert _call(f"{url}/health")[1]["gallery"]["entries"] == 1

        monkeypatch.setattr(daemon.gallery, "atomic_write", real_write)
        assert _post(f"{url}/enroll", "bob.jpg", _jpeg((0, 200, 0)))[0] == 200
    saved = Gallery.load(tmp_path / "g.npz")
    assert saved.labels == ["jane", "bob"]
    np.testing.assert_array_equal(saved.embeddings[:1], before)


def test_cli_serve_on_a_port_in_use_is_one_error_line(
    mobilenet_model: Path, tmp_path: Path, capsys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: serve on a taken port logged "serving ... on http://127.0.0.1:PORT", then uvicorn's own
    # "[Errno 98] error while attempting to bind" and sys.exit(3), not the one 'error:' line (exit 2) of any
    # other bad option.
    import socket

    from daemon.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(
            ["serve", "--port", str(port), "--model", str(mobilenet_model), "-g", str(tmp_path / "g.npz")]
        )
    assert code == 2
    err = capsys.readouterr().err
    assert f"error: cannot listen on 127.0.0.1:{port}" in err and "--port" in err, err
    assert "serving" not in caplog.text


def test_cli_serve_with_references_that_cannot_be_a_folder_is_one_error_line(
    mobilenet_model: Path, tmp_path: Path, capsys: Any
) -> None:
    # Regression: --references naming a file (or a folder it may not make) ended in a FileExistsError traceback
    # from the folder's mkdir, naming no option.
    from daemon.cli import main

    refs = tmp_path / "refs.txt"
    refs.write_text("a file\n")
    args = ["serve", "--references", str(refs), "--port", "0", "--model", str(mobilenet_model)]
    assert main([*args, "-g", str(tmp_path / "g.npz")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: cannot make the references folder {refs}: File exists (--references, serve.references)\n"
    )
    assert refs.read_text() == "a file\n" and not (tmp_path / "g.npz").exists()


def test_cli_serve_logs_as_the_global_options_say(mobilenet_model: Path, tmp_path: Path) -> None:
    """`reid-daemon -q --log-format json serve` printed uvicorn's own plain-text INFO lines (startup, every
    request, shutdown) beside the JSON ones: serve ignored -q and --log-format."""
    import signal
    import subprocess
    import sys

    port = _free_port()
    cmd = [sys.executable, "-m", "daemon", "-q", "--log-format", "json", "serve", "--port", str(port)]
    cmd += ["--model", str(mobilenet_model), "--gallery", str(tmp_path / "g.rdg")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert _call(f"http://127.0.0.1:{port}/health")[0] == 200
                break
            except urllib.error.URLError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "serve did not answer within 60 s"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=15)[1]
    records = [json.loads(line) for line in err.splitlines()]  # every line a JSON object
    assert records and all(r["level"] != "INFO" for r in records), err
    assert any(f":{port}" in r["message"] for r in records)  # the address it serves on is still said


def test_cli_serve_says_an_existing_gallery_keeps_its_own_settings(
    mobilenet_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`serve -g people.npz --threshold 0.9` of an existing gallery served at the file's threshold without a
    word (as `enroll --append` did before it warned)."""
    from daemon.cli import main

    monkeypatch.setattr("daemon.serve.serve_forever", lambda *a: None)
    path = tmp_path / "g.npz"
    Gallery.from_config(GalleryConfig(threshold=0.4), 1280).save(path)
    assert main(["serve", "-g", str(path), "--threshold", "0.9", "--model", str(mobilenet_model)]) == 0
    assert (
        f"{path} keeps the settings it was made with, not --threshold 0.9 (its threshold 0.4)" in caplog.text
    )


def test_cli_serve_warns_of_a_threshold_of_zero_too(
    mobilenet_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """--threshold 0 (a valid cosine threshold) was taken for "not given", so it went unmentioned."""
    from daemon.cli import main

    monkeypatch.setattr("daemon.serve.serve_forever", lambda *a: None)
    path = tmp_path / "g.npz"
    Gallery.from_config(GalleryConfig(threshold=0.4), 1280).save(path)
    assert main(["serve", "-g", str(path), "--threshold", "0", "--model", str(mobilenet_model)]) == 0
    assert (
        f"{path} keeps the settings it was made with, not --threshold 0.0 (its threshold 0.4)" in caplog.text
    )


def test_cli_serve_and_enroll_append_name_the_configs_gallery_settings_an_existing_gallery_does_not_take(
    mobilenet_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The config's gallery section (threshold, max_per_label, drop_policy, ...) was silently ignored by serve of
    an existing gallery and by enroll --append, which keep the file's own; each setting that differs is named,
    one the gallery shares is not."""
    from daemon.cli import main

    monkeypatch.setattr("daemon.serve.serve_forever", lambda *a: None)
    path = tmp_path / "g.npz"
    Gallery.from_config(GalleryConfig(threshold=0.4, seed=3), 1280).save(path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "cameras:\n  a:\n    source: {uri: a.mp4}\n"
        "gallery:\n  threshold: 0.7\n  drop_policy: drop_latest\n  max_per_label: 5\n  seed: 3\n"
    )
    model = ["--model", str(mobilenet_model), "--no-progress"]
    refs = write_reference_crops(tmp_path / "refs", identities=1, per_identity=1)[0].parent
    for command in (
        ["serve", "-g", str(path), "-c", str(cfg), *model],
        ["-q", "enroll", str(refs), "-g", str(path), "--append", "-c", str(cfg), *model],
    ):
        caplog.clear()
        assert main(command) == 0
        said = [
            r.getMessage() for r in caplog.records if "keeps the settings it was made with" in r.getMessage()
        ]
        assert len(said) == 1, caplog.text
        for setting in ("drop_policy drop_latest", "max_per_label 5", "threshold 0.7"):
            assert f"gallery.{setting} of {cfg}" in said[0], said
        assert "its threshold 0.4" in said[0] and "seed" not in said[0]


def test_an_error_answer_names_no_server_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Regression: a 409 said "cannot open the gallery's lock file /srv/reid/.g.npz.lock: [Errno 21] Is a
    # directory: '/srv/reid/.g.npz.lock'" to any client, and a gallery that could not be read or written named
    # its folder alike: where the service keeps its files. The answer names the file and the problem; the log
    # has the message whole.
    folder = tmp_path / "site data" / "reid"
    folder.mkdir(parents=True)
    (folder / ".g.npz.lock").mkdir()  # the lock cannot be opened
    cfg = ServeConfig(gallery=folder / "g.npz", references=folder / "refs")
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="mean-colour")
    with caplog.at_level("WARNING", logger="daemon.serve"), BackgroundServer(create_app(state)) as server:
        status, body = _post(f"{server.url}/enroll", "jane.jpg", _jpeg((0, 0, 200)))
        assert status == 409 and "lock file .g.npz.lock" in body["detail"], body
        assert "Is a directory: '.g.npz.lock'" in body["detail"], body
        (folder / ".g.npz.lock").rmdir()
        (folder / "g.npz").write_bytes(b"not a gallery")
        for endpoint in ("search", "recognize", "enroll"):
            status, body = _post(f"{server.url}/{endpoint}", "jane.jpg", _jpeg((0, 0, 200)))
            assert status == 409 and "g.npz" in body["detail"], (endpoint, body)
            assert str(tmp_path) not in body["detail"] and "site data" not in body["detail"], (endpoint, body)
    assert f"{folder}/.g.npz.lock" in caplog.text and f"{folder}/g.npz" in caplog.text
    denied = "cannot read /srv/site data/g.npz: [Errno 13] Permission denied: '/srv/site data/g.npz'"
    assert (
        for_client(denied, [Path("/srv/site data")])
        == "cannot read g.npz: [Errno 13] Permission denied: 'g.npz'"
    )
    assert for_client("made by /opt/m/x.onnx, not ./y.onnx", []) == "made by x.onnx, not ./y.onnx"
    assert for_client("refs/.g.npz.lock, not prefs/g.npz", [Path("refs")]) == ".g.npz.lock, not prefs/g.npz"
    kept = "label 'AC/DC': '/' cannot be kept in its reference file name ([SET-]name[--VARIANT].jpg)"
    assert for_client(kept, [Path("/srv")]) == kept


def test_health_names_the_gallery_file_but_not_its_folder(tmp_path: Path) -> None:
    # Regression: /health answered the gallery's absolute path ("/srv/site data/reid/g.npz") to any client, where
    # every other answer names a file without the server's folders. It gives the file's name, size and SHA-256
    # (the file as it is on disk now: a client can tell two services, or two moments, hold the same file).
    import hashlib

    folder = tmp_path / "site data" / "reid"
    path = folder / "g.npz"
    cfg = ServeConfig(gallery=path, references=folder / "refs")
    state = ServiceState(MeanColour(), Gallery(4, threshold=0.9), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        h = _call(f"{server.url}/health")[1]
        assert h["gallery"]["file"] == "g.npz" and h["gallery"]["bytes"] is None, h  # not saved yet
        assert h["gallery"]["sha256"] is None and "path" not in h["gallery"], h
        assert _post(f"{server.url}/enroll", "ann.jpg", _jpeg((0, 0, 200)))[0] == 200
        first = _call(f"{server.url}/health")[1]
        assert _post(f"{server.url}/enroll", "bob.jpg", _jpeg((0, 200, 0)))[0] == 200
        second = _call(f"{server.url}/health")[1]
    for answer in (h, first, second):
        assert str(tmp_path) not in json.dumps(answer) and "site data" not in json.dumps(answer), answer
    data = path.read_bytes()
    assert second["gallery"]["bytes"] == len(data)
    assert second["gallery"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert first["gallery"]["sha256"] != second["gallery"]["sha256"]  # the file each saw

    memory = ServiceState(MeanColour(), Gallery(4), ServeConfig(), model="mean-colour")
    with BackgroundServer(create_app(memory)) as server:
        g = _call(f"{server.url}/health")[1]["gallery"]
    assert g["file"] is None and g["bytes"] is None and g["sha256"] is None, g


def test_search_lists_the_references_folder_again_only_when_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: /search walked the references folder on every request to give each match its reference URLs:
    # with a folder of thousands of images, a directory walk per query. The listing is kept and taken again when
    # the folder changes (its mtime: an image added, removed or renamed) or the gallery file is read again.
    import os

    import daemon.serve

    walks: list[Path | None] = []
    real = daemon.serve.reference_urls

    def counted(folder: Path | None, naming: EnrollConfig) -> dict[str, list[str]]:
        walks.append(folder)
        return real(folder, naming)

    monkeypatch.setattr("daemon.serve.reference_urls", counted)
    monkeypatch.setattr("daemon.serve.SETTLED_NS", 30_000_000_000)  # however slow this machine is
    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    state = ServiceState(MeanColour(), Gallery(4), ServeConfig(gallery=path, references=refs), model="m")

    def settled() -> None:  # the folder as one changed a while ago
        past = time.time() - 600
        os.utime(refs, (past, past))

    def ann_references(url: str) -> list[str]:
        status, body = _post(f"{url}/search?k=1", "q.jpg", _jpeg((0, 0, 200)))
        assert status == 200 and body["matches"][0]["label"] == "ann", body
        return list(body["matches"][0]["references"])

    with BackgroundServer(create_app(state)) as server:
        url = server.url
        assert _post(f"{url}/enroll", "ann.jpg", _jpeg((0, 0, 200)))[0] == 200
        settled()
        walks.clear()
        assert all(ann_references(url) == ["/references/ann.jpg"] for _ in range(5))
        assert len(walks) == 1, walks

        cv2.imwrite(str(refs / "ann--side.jpg"), np.full((64, 32, 3), (0, 0, 190), np.uint8))  # by hand
        assert ann_references(url) == ["/references/ann--side.jpg", "/references/ann.jpg"]
        settled()
        walks.clear()
        for _ in range(3):
            ann_references(url)
        assert len(walks) == 1, walks

        other = Gallery.load(path)  # another process saves the gallery: read again, the folder listed again
        other.add("bob", [0.0, 1.0, 0.0, 0.0])
        other.save(path)
        for _ in range(3):
            ann_references(url)
        assert len(walks) == 2, walks

        # a change in the same tick of the file system's clock as a listing leaves the folder's mtime as it was:
        # a listing of a folder changed that recently is not kept
        now = time.time_ns()
        os.utime(refs, ns=(now, now))
        assert ann_references(url) == ["/references/ann--side.jpg", "/references/ann.jpg"]
        (refs / "ann--side.jpg").rename(refs / "ann--back.jpg")
        os.utime(refs, ns=(now, now))
        assert ann_references(url) == ["/references/ann--back.jpg", "/references/ann.jpg"]


def _serve_process(
    gallery: Path, refs: Path, model: Path, slow_keep_flag: Path | None = None
) -> tuple[Any, str]:
    """``reid-daemon serve --gallery G --references R`` in another process, and its URL once it answers; with
    ``slow_keep_flag``, each enrolment, its reference name chosen, touches that file and waits 3 s before it
    writes the image (as a slow disk does)."""
    import subprocess
    import sys

    port = _free_port()
    args = [
        "serve",
        "-g",
        str(gallery),
        "--references",
        str(refs),
        "--model",
        str(model),
        "--port",
        str(port),
    ]
    slow = (
        "import pathlib, time\nimport daemon.serve as s\nreal = s._keep\n"
        "def keep(state, image, name):\n"
        f"    pathlib.Path({str(slow_keep_flag)!r}).touch()\n    time.sleep(3.0)\n"
        "    return real(state, image, name)\n"
        "s._keep = keep\n"
    )
    script = (
        f"{slow if slow_keep_flag else ''}import sys\nfrom daemon.cli import main\nsys.exit(main({args!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while True:
        try:
            if _call(f"{url}/health")[0] == 200:
                return proc, url
        except urllib.error.URLError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"serve did not answer: {proc.communicate()[0]!r}")
        time.sleep(0.2)


def test_two_serve_processes_on_one_references_folder_never_give_one_name_twice(
    mobilenet_model: Path, tmp_path: Path
) -> None:
    # Regression: two serve processes on one references folder (each its own gallery) chose a new reference's
    # name each on its own, so two enrolments of one label at once were both answered /references/jane.jpg:
    # the later image overwrote the earlier, a gallery's row pointed at another gallery's photo (and its
    # eviction would delete it). The folder's names are chosen, written and recorded holding its lock file.
    import signal

    crops = write_reference_crops(tmp_path / "crops", identities=2, per_identity=1)
    uploads = [cv2.imread(str(p)) for p in crops]
    assert uploads[0].shape != uploads[1].shape
    refs, flag = tmp_path / "refs", tmp_path / "a-is-keeping"
    a, a_url = _serve_process(tmp_path / "a.npz", refs, mobilenet_model, slow_keep_flag=flag)
    b, b_url = _serve_process(tmp_path / "b.npz", refs, mobilenet_model)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(_post, f"{a_url}/enroll", "jane.jpg", crops[0].read_bytes())
            deadline = time.monotonic() + 60
            while not flag.exists():
                assert not first.done(), first.result()
                assert time.monotonic() < deadline, "serve A did not get to keep its image"
                time.sleep(0.05)
            b_status, b_body = _post(f"{b_url}/enroll", "jane.jpg", crops[1].read_bytes())
            a_status, a_body = first.result(timeout=60)
    finally:
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=15)
    assert a_status == 200 and b_status == 200, (a_body, b_body)
    assert {a_body["reference"], b_body["reference"]} == {"/references/jane.jpg", "/references/jane--2.jpg"}
    for gallery, body, upload in (("a.npz", a_body, uploads[0]), ("b.npz", b_body, uploads[1])):
        kept = refs / urllib.parse.unquote(body["reference"].removeprefix("/references/"))
        assert cv2.imread(str(kept)).shape == upload.shape, body  # its own image, not the other's
        assert Gallery.load(tmp_path / gallery).sources("jane") == [str(kept.resolve())]
    assert json.loads((refs / SERVE_LEDGER).read_text())["last"] == {"jane": 2}


def test_unenroll_of_a_label_a_running_serve_holds_removes_its_images_and_serve_never_writes_it_back(
    mobilenet_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`unenroll` (new) removes a label from the gallery file a running serve holds in memory: serve's images of
    it go, the user's own photo beside them stays, and serve, at its next request and its next enrolment, takes
    the file as it is now: the label is never written back nor found."""
    import signal

    from daemon.cli import main

    crops = write_reference_crops(tmp_path / "crops", identities=2, per_identity=2)
    refs, path = tmp_path / "refs", tmp_path / "g.rdg"
    proc, url = _serve_process(path, refs, mobilenet_model)
    try:
        for crop, name in zip(crops, ("ann.jpg", "ann.jpg", "bob.jpg"), strict=False):
            assert _post(f"{url}/enroll", name, crop.read_bytes())[0] == 200
        cv2.imwrite(str(refs / "ann--side.png"), cv2.imread(str(crops[0])))  # the user's own photo
        assert _kept(refs) == ["ann--2.jpg", "ann--side.png", "ann.jpg", "bob.jpg"]
        assert _call(f"{url}/health")[1]["gallery"]["entries"] == 3

        assert main(["unenroll", "ann", "-g", str(path)]) == 0
        out = capsys.readouterr().out
        assert "removed 2 entries of 1 label(s)" in out and f"  {refs.resolve() / 'ann.jpg'}" in out, out
        assert _kept(refs) == ["ann--side.png", "bob.jpg"]
        assert Gallery.load(path).sources("bob") == [str(refs.resolve() / "bob.jpg")]  # kept with its row
        assert _call(f"{url}/references/ann.jpg") == (404, {"detail": "Not Found"})
        assert _call(f"{url}/health")[1]["gallery"]["entries"] == 1
        status, body = _post(f"{url}/search?k=5&threshold=-1", "q.jpg", crops[0].read_bytes())
        assert status == 200 and [m["label"] for m in body["matches"]] == ["bob"], body
        status, body = _post(f"{url}/enroll", "bob.jpg", crops[3].read_bytes())
        assert status == 200 and body["gallery_size"] == 2, body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert Gallery.load(path).labels == ["bob", "bob"]
    assert _kept(refs) == ["ann--side.png", "bob--2.jpg", "bob.jpg"]


@contextlib.contextmanager
def _ann_served_while_locked(tmp_path: Path, path: Path, lock_wait_s: float) -> Iterator[tuple[str, Any]]:
    """A service of the gallery ``path`` holding 'ann', whose lock a stopped process then holds
    (``_stopped_lock_holder``): its URL and that process, killed when done."""
    cfg = ServeConfig(gallery=path, references=tmp_path / "refs", lock_wait_s=lock_wait_s)
    state = ServiceState(MeanColour(), Gallery(4, threshold=0.9), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "ann.jpg", _jpeg((0, 0, 200)))[0] == 200
        holder = _stopped_lock_holder(path)
        try:
            yield server.url, holder
        finally:
            holder.kill()
            holder.wait(timeout=10)


def test_enrolments_waiting_for_the_gallerys_lock_leave_health_and_search_their_threads(
    tmp_path: Path,
) -> None:
    """/health and /search never wait for the gallery's lock, but each enrolment waiting for it (another process
    holding it: enroll --append saving a large gallery, or stopped with Ctrl-Z) held one of the 40 worker
    threads every request runs on; 50 enrolments at once took them all, and /health took lock_wait_s to answer
    (a health checker's timeout: the service restarted). Enrolments work on threads of their own, a few at
    once; the others wait for a turn without one."""
    path = tmp_path / "g.npz"
    with (
        _ann_served_while_locked(tmp_path, path, lock_wait_s=6.0) as (url, holder),
        ThreadPoolExecutor(50) as pool,
    ):
        waiting = [pool.submit(_post, f"{url}/enroll", f"p{i}.jpg", _jpeg((0, 200, i))) for i in range(50)]
        time.sleep(1.0)  # every enrolment is in, waiting for the lock
        start = time.monotonic()
        assert _call(f"{url}/health")[0] == 200
        status, body = _post(f"{url}/search?k=1", "q.jpg", _jpeg((0, 0, 190)))
        took = time.monotonic() - start
        assert status == 200 and [m["label"] for m in body["matches"]] == ["ann"], body
        assert took < 2.0, took  # before: some 5 s, until the enrolments gave up (lock_wait_s 6)
        holder.kill()  # its end frees the lock: the enrolments that have not given up go on
        answers = [f.result()[0] for f in waiting]
    assert set(answers) <= {200, 503} and 200 in answers, answers
    labels = Gallery.load(path).labels
    assert labels[0] == "ann" and len(labels) == 1 + answers.count(200), (labels, answers)


def test_enrolments_waiting_for_the_gallerys_lock_wait_side_by_side_not_in_turn(tmp_path: Path) -> None:
    """Ten enrolments at once while another process holds the gallery's lock (stopped) for good, lock_wait_s 1:
    they wait for it side by side (ENROLMENTS_AT_ONCE), so each is a 503 about lock_wait_s after it came, not
    one lock_wait_s after another (the tenth some 10 s later). Kills the mutant of one enrolment at a time."""
    with _ann_served_while_locked(tmp_path, tmp_path / "g.npz", lock_wait_s=1.0) as (url, _holder):
        start = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            waiting = [
                pool.submit(_post, f"{url}/enroll", f"p{i}.jpg", _jpeg((0, 200, i))) for i in range(10)
            ]
            answers = [f.result()[0] for f in waiting]
        took = time.monotonic() - start
    assert answers == [503] * 10, answers
    assert took < 5.0, took  # side by side: about lock_wait_s (in turn: 10 s)


def test_an_enrolment_waits_for_a_stopped_holder_of_the_references_folder_no_longer_than_lock_wait_s(
    tmp_path: Path,
) -> None:
    # Another serve stopped (Ctrl-Z, stuck) while it held the references folder's lock: an enrolment waits
    # lock_wait_s for it, then is answered 503 naming the holder and the lock file (not the server's folders),
    # and leaves nothing behind; searches never wait for it.

    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    cfg = ServeConfig(gallery=path, references=refs, lock_wait_s=1.5)
    state = ServiceState(MeanColour(), Gallery(4, threshold=0.9), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        url = server.url
        assert _post(f"{url}/enroll", "ann.jpg", _jpeg((0, 0, 200)))[0] == 200
        holder = _stopped_folder_lock_holder(refs)
        try:
            start = time.monotonic()
            status, retry, body = _enroll_answer(f"{url}/enroll", "bob.jpg", _jpeg((0, 200, 0)))
            assert status == 503 and 1.4 < time.monotonic() - start < 20, (status, body)
            assert retry == "2"
            detail = body["detail"]
            assert f"the references folder refs has been locked by pid {holder.pid}" in detail, detail
            assert SERVE_LOCK in detail and "serve.lock_wait_s" in detail and str(tmp_path) not in detail, (
                detail
            )
            status, body = _post(f"{url}/search?k=1", "q.jpg", _jpeg((0, 0, 190)))
            assert status == 200 and [m["label"] for m in body["matches"]] == ["ann"], body
        finally:
            holder.kill()
            holder.wait(timeout=10)
        assert _post(f"{url}/enroll", "bob.jpg", _jpeg((0, 200, 0)))[0] == 200  # its end freed the lock
    assert Gallery.load(path).labels == ["ann", "bob"] and _kept(refs) == ["ann.jpg", "bob.jpg"]


class _Killed(BaseException):
    """The process dying at that instant (nothing after it runs; no except Exception catches it)."""


def test_a_reference_image_is_never_visible_under_its_name_before_it_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: _keep wrote the JPEG straight under its final name (cv2.imwrite), so a serve killed mid-write
    # left a truncated jane.jpg there, which a later `enroll` of the folder read as a corrupt image. It is
    # written to a hidden temporary name in the same folder, fsynced, then renamed over the final name.
    import os

    from daemon.enroll import reference_files
    from daemon.serve import _keep

    refs = tmp_path / "refs"
    state = ServiceState(MeanColour(), Gallery(4), ServeConfig(references=refs), model="mean-colour")
    image = np.full((64, 32, 3), (0, 0, 200), np.uint8)
    real_replace, real_fsync = os.replace, os.fsync
    seen: list[str] = []

    def fsync(fd: int) -> None:
        seen.append("fsync")
        real_fsync(fd)

    def killed_at_rename(src: Any, dst: Any) -> None:
        src, dst = Path(src), Path(dst)
        assert dst == refs / "jane.jpg" and not dst.exists()  # nothing under the final name yet
        assert src.parent == refs and src.name.startswith(".")  # hidden: enroll and /references leave it out
        written = cv2.imread(str(src))
        assert written is not None and written.shape == image.shape  # whole before it is renamed
        seen.append("replace")
        raise _Killed

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", killed_at_rename)
    with pytest.raises(_Killed):
        _keep(state, image, Path("jane.jpg"))
    assert seen == ["fsync", "replace"]  # the data on disk before the rename
    assert not (refs / "jane.jpg").exists() and _kept(refs) == []
    assert reference_files(refs, EnrollConfig()) == ([], [])  # enroll of the folder meets no broken image

    monkeypatch.setattr(os, "replace", real_replace)
    assert _keep(state, image, Path("jane.jpg")) == "/references/jane.jpg"
    assert _kept(refs) == ["jane.jpg"] and cv2.imread(str(refs / "jane.jpg")).shape == image.shape
    assert [p.name for p in refs.iterdir()] == ["jane.jpg"]  # no temporary file left


def test_cli_serve_keeps_uploads_in_a_persons_folder_with_label_from_folder(
    mobilenet_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: with the config's enroll section reading labels from folder names (label_from: folder),
    # serve --references kept an upload as jane_doe.jpg at the folder's top level, which `enroll` of the folder
    # then leaves out (the README's promise of a valid enroll input broken), and /search listed the top level
    # by file name (no URL for refs/jane_doe/1.jpg; bob.txt's neighbours listed that enroll ignores). An upload
    # goes to the person's folder as N.jpg, numbered past the ledger and the folder's own numbers, /search lists
    # the people's folders, and an evicted entry's image there is removed by the ledger's rule.
    from daemon.cli import main
    from daemon.enroll import reference_files, remove_serve_references, serve_ledger

    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras:\n  a:\n    source: {uri: a.mp4}\nenroll: {label_from: folder}\n")
    refs = tmp_path / "refs"
    for own in ("jane_doe/1.jpg", "bob/front.jpg", "stray.jpg"):  # the user's own photos
        (refs / own).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(refs / own), np.full((64, 32, 3), (0, 0, 200), np.uint8))
    answers: list[Any] = []

    def serve_once(app: Any, host: str, port: int, *_: Any) -> None:
        with BackgroundServer(app) as server:
            url = server.url
            for colour in ((0, 0, 200), (0, 200, 0), (200, 0, 0)):
                answers.append(_post(f"{url}/enroll", "x.jpg", _jpeg(colour), label="jane doe")[1])
            status, body = _post(f"{url}/search?k=1&threshold=-1", "q.jpg", _jpeg((200, 0, 0)))
            assert status == 200, body
            answers.append(body["matches"][0])
            answers.append(_call(f"{url}/references/jane_doe/3.jpg")[0])

    monkeypatch.setattr("daemon.serve.serve_forever", serve_once)
    args = ["serve", "-c", str(cfg), "-g", str(tmp_path / "g.npz"), "--references", str(refs)]
    assert main([*args, "--max-per-label", "2", "--model", str(mobilenet_model)]) == 0
    *enrolled, match, fetched = answers
    assert [a["reference"] for a in enrolled] == [f"/references/jane_doe/{n}.jpg" for n in (2, 3, 4)], (
        enrolled
    )
    assert [a["removed"] for a in enrolled] == [[], [], ["/references/jane_doe/2.jpg"]]  # the cap of 2
    assert match["label"] == "jane doe" and fetched == 200
    assert match["references"] == [f"/references/jane_doe/{n}.jpg" for n in (1, 3, 4)]
    names, skipped = reference_files(refs, EnrollConfig(label_from="folder"))  # enroll of the folder
    assert [(n.path.relative_to(refs).as_posix(), n.label) for n in names] == [
        ("bob/front.jpg", "bob"),
        ("jane_doe/1.jpg", "jane doe"),
        ("jane_doe/3.jpg", "jane doe"),
        ("jane_doe/4.jpg", "jane doe"),
    ]
    assert [s.path.name for s in skipped] == ["stray.jpg"]  # the user's, left at the top level
    assert serve_ledger(refs)["jane_doe/"] == 4  # 2, removed, is never given again
    assert Gallery.load(tmp_path / "g.npz").sources("jane doe") == [
        str(refs.resolve() / "jane_doe" / f"{n}.jpg") for n in (3, 4)
    ]

    # enroll --append drops serve's rows by the same rule: serve's image goes, the user's photo stays
    naming = EnrollConfig(label_from="folder")
    done = remove_serve_references(
        {str(refs.resolve() / "jane_doe/3.jpg"), str(refs.resolve() / "bob/front.jpg")}, naming
    )
    assert done.removed == (refs.resolve() / "jane_doe" / "3.jpg",) and (refs / "bob" / "front.jpg").is_file()


def test_cli_serve_logs_the_absolute_paths_of_a_gallery_and_folder_given_relative(
    mobilenet_model: Path, tmp_path: Path
) -> None:
    # Regression: `serve -g g.npz --references refs` logged "serving 0 gallery entries (g.npz)": relative to a
    # working directory the log does not give (a unit's WorkingDirectory, a shell's cd), so which file it
    # served could not be told from the log. The start line names the gallery and the folder absolute, once.
    import os
    import signal
    import subprocess
    import sys

    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "daemon", "serve", "--port", str(port), "--model", str(mobilenet_model)]
    cmd += ["--gallery", "g.npz", "--references", "refs"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert _call(f"http://127.0.0.1:{port}/health")[0] == 200
                break
            except urllib.error.URLError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "serve did not answer within 60 s"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=15)[1]
    gallery, refs = (tmp_path / "g.npz").resolve(), (tmp_path / "refs").resolve()
    (line,) = [line for line in err.splitlines() if "serving" in line]
    assert f"serving 0 gallery entries ({gallery}) and the reference images of {refs} on" in line, err
    assert err.count(str(gallery)) == 1, err  # once, at start


def test_search_gives_the_urls_of_a_recursive_folders_sub_folder_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: with the enroll section's recursive: true, which `enroll` of the references folder reads
    # through its sub-folders, /search listed the folder's top level only: refs/2024/ann--old.jpg, enrolled by
    # enroll, had no URL (and serve was refused such a config at start). The listing takes the sub-folders, each
    # image's URL its path in the folder, and is taken again when any folder listed changes.
    import os

    import daemon.serve
    from daemon.enroll import reference_files

    walks: list[Path | None] = []
    real = daemon.serve.reference_urls

    def counted(folder: Path | None, naming: EnrollConfig) -> dict[str, list[str]]:
        walks.append(folder)
        return real(folder, naming)

    monkeypatch.setattr("daemon.serve.reference_urls", counted)
    monkeypatch.setattr("daemon.serve.SETTLED_NS", 30_000_000_000)  # however slow this machine is
    refs = tmp_path / "refs"
    (refs / "2024" / "site a").mkdir(parents=True)
    (refs / ".trash").mkdir()
    red = np.full((64, 32, 3), (0, 0, 200), np.uint8)
    cv2.imwrite(str(refs / "2024" / "ann--old.jpg"), red)
    cv2.imwrite(str(refs / ".trash" / "ann.jpg"), red)  # hidden: enroll leaves it out, so does the listing
    naming = EnrollConfig(recursive=True)
    cfg = ServeConfig(gallery=tmp_path / "g.npz", references=refs)
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="m", naming=naming)

    def settled() -> None:  # every folder as one changed a while ago
        past = time.time() - 600
        for folder in (refs, refs / "2024", refs / "2024" / "site a"):
            os.utime(folder, (past, past))

    def ann_references(url: str) -> list[str]:
        status, body = _post(f"{url}/search?k=1", "q.jpg", _jpeg((0, 0, 200)))
        assert status == 200 and body["matches"][0]["label"] == "ann", body
        return list(body["matches"][0]["references"])

    with BackgroundServer(create_app(state)) as server:
        url = server.url
        assert _post(f"{url}/enroll", "ann.jpg", _jpeg((0, 0, 200)))[0] == 200
        assert ann_references(url) == ["/references/2024/ann--old.jpg", "/references/ann.jpg"]
        status, image = _call(f"{url}/references/2024/ann--old.jpg")
        assert status == 200 and cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR) is not None

        settled()
        walks.clear()
        assert all(len(ann_references(url)) == 2 for _ in range(4))
        assert len(walks) == 1, walks  # listed once while nothing changed

        cv2.imwrite(str(refs / "2024" / "site a" / "ann.jpg"), red)  # by hand, two folders down
        assert ann_references(url) == [
            "/references/2024/ann--old.jpg",
            "/references/2024/site%20a/ann.jpg",
            "/references/ann.jpg",
        ]
        settled()
        (refs / "2024" / "site a" / "ann.jpg").unlink()
        assert ann_references(url) == ["/references/2024/ann--old.jpg", "/references/ann.jpg"]
        settled()
        (refs / "2025").mkdir()  # a new sub-folder, then an image in it once the folders settled
        settled()
        assert len(ann_references(url)) == 2
        cv2.imwrite(str(refs / "2025" / "ann.jpg"), red)
        assert "/references/2025/ann.jpg" in ann_references(url)

    names, _ = reference_files(refs, naming)  # the folder as enroll reads it: the same images
    assert [n.path.relative_to(refs).as_posix() for n in names] == [
        "2024/ann--old.jpg",
        "2025/ann.jpg",
        "ann.jpg",
    ]


def test_the_serve_ledger_is_written_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger of the names serve gave (.reid-daemon-serve.json) was written to a temp file and renamed with
    no fsync: after a power cut it could be empty, and serve then refuses every enrolment until it is mended. It
    is written as the gallery is: the file synced before the rename, the folder after it."""
    import os

    from daemon import enroll

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    enroll._write_ledger(tmp_path, {"jane": 2})
    assert json.loads((tmp_path / SERVE_LEDGER).read_text(encoding="utf-8"))["last"] == {"jane": 2}
    files = [p for p in synced if p != str(tmp_path)]
    assert files and all(Path(p).parent == tmp_path for p in files)  # the ledger's data, before its rename
    assert str(tmp_path) in synced  # the rename itself
    assert [p.name for p in tmp_path.iterdir()] == [SERVE_LEDGER]  # no temp file left


def _writer_mid_write(path: Path, lock: str) -> Any:
    """A process writing ``path`` with ``atomic_write`` holding ``lock`` ("gallery": the gallery's lock, as serve
    and enroll save it; "references": the references folder's, as serve writes an image and its ledger), stopped
    halfway through the write (its temporary file there, 1000 bytes in) until a line comes on its stdin."""
    import subprocess
    import sys

    take = (
        "locked(p, 5.0, 'enroll')"
        if lock == "gallery"
        else "ledger_locked(p.parent, 5.0, 'reid-daemon serve', 'serve.lock_wait_s')"
    )
    script = (
        "import pathlib, sys\nfrom daemon.embedding import atomic_write\nfrom daemon.enroll import ledger_locked\n"
        "from daemon.gallery import locked\n"
        f"p = pathlib.Path({str(path)!r})\n"
        "def write(fh):\n"
        "    fh.write(b'x' * 1000)\n    fh.flush()\n    print('writing', flush=True)\n    sys.stdin.readline()\n"
        "    fh.write(b'y' * 1000)\n"
        f"with {take}:\n    atomic_write(p, write)\nprint('written', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    return proc


def _killed_mid_write(path: Path, lock: str) -> Path:
    """The temporary file a writer of ``path`` (``_writer_mid_write``) killed with SIGKILL halfway left."""
    proc = _writer_mid_write(path, lock)
    proc.kill()
    proc.wait(timeout=10)
    (left,) = path.parent.glob(f".{path.name}.*.tmp")
    return left


def _temp_name(name: str) -> str:
    return f".{name}.{uuid.uuid4().hex[:12]}.tmp"  # as atomic_write names it


def test_serve_removes_at_start_the_temporary_files_killed_writers_left_and_only_those(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: a serve (or an enroll) killed between writing a file and renaming it (SIGKILL, a power cut)
    # left its hidden temporary file for good, each as large as the file (a gallery's can be large); a long-run
    # service's folders piled them up. serve removes, holding the lock every writer of them holds, those of its
    # own files (the gallery, reference images, the ledger), and nothing else.
    import logging

    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    refs.mkdir()
    ours = [_killed_mid_write(refs / "ann.jpg", "references"), _killed_mid_write(path, "gallery")]
    (refs / "bob").mkdir()  # a person's folder (label_from: folder): serve writes bob/2.jpg
    ours.append(refs / "bob" / _temp_name("2.jpg"))
    ours.append(refs / _temp_name(SERVE_LEDGER))
    for p in ours[2:]:
        p.write_bytes(b"z" * 500)
    others = [
        refs / _temp_name("notes.txt"),  # not a file serve writes there
        tmp_path / _temp_name("other.npz"),  # beside the gallery: another file's
        refs / ".ann.jpg.tmp",  # not atomic_write's name
        refs / "ann.jpg",  # the user's photo
        refs / "bob" / _temp_name("2.png"),
    ]
    for p in others:
        p.write_bytes(b"u" * 10)
    linked = refs / _temp_name("cat.jpg")  # a link of that name is no temporary file of atomic_write
    linked.symlink_to(refs / "ann.jpg")
    caplog.set_level(logging.INFO, logger="daemon.serve")
    state = ServiceState(
        MeanColour(), Gallery(4, threshold=0.9), ServeConfig(gallery=path, references=refs), "m"
    )
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "cat.jpg", _jpeg((0, 0, 90)))[0] == 200
    assert [p for p in ours if p.exists()] == []
    assert all(p.read_bytes() == b"u" * 10 for p in others) and linked.is_symlink()
    assert f"removed 3 temporary files (2000 bytes) left in {refs.resolve()}" in caplog.text, caplog.text
    assert f"removed 1 temporary file (1000 bytes) left in {tmp_path.resolve()}" in caplog.text, caplog.text
    assert sorted(p.name for p in refs.glob(".*.tmp")) == sorted(
        [others[0].name, ".ann.jpg.tmp", linked.name]
    )


@pytest.mark.parametrize("lock", ["references", "gallery"])
def test_serve_leaves_the_temporary_file_of_a_writer_at_work(tmp_path: Path, lock: str) -> None:
    # A writer at work (another serve writing an image into the shared references folder, an enroll saving the
    # gallery) holds the lock while its temporary file is there: a serve starting meanwhile waits lock_wait_s
    # for it, then starts without removing anything, and the writer's file is renamed whole.
    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    refs.mkdir()
    target = refs / "ann.jpg" if lock == "references" else path
    writer = _writer_mid_write(target, lock)
    try:
        (tmp,) = target.parent.glob(f".{target.name}.*.tmp")
        cfg = ServeConfig(gallery=path, references=refs, lock_wait_s=0.5)
        state = ServiceState(MeanColour(), Gallery(4, threshold=0.9), cfg, "m")
        with BackgroundServer(create_app(state)) as server:
            assert _call(f"{server.url}/health")[0] == 200
            assert tmp.read_bytes() == b"x" * 1000
        assert writer.stdin is not None
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.stdout is not None and writer.stdout.readline() == "written\n"
    finally:
        writer.kill()
        writer.wait(timeout=10)
    assert target.read_bytes() == b"x" * 1000 + b"y" * 1000 and not tmp.exists()


@pytest.mark.parametrize(("written", "bound"), [("[::1]", "::1"), ("::1", "::1")])
def test_serve_listens_on_an_ipv6_host_written_in_brackets(written: str, bound: str) -> None:
    """serve --host "[::1]" (an IPv6 address as written in a URL) failed: 'cannot listen on [::1]:0' (the
    brackets were handed to bind). It is the address in the brackets, as ops.host takes it."""
    from daemon.config import ServeConfig
    from daemon.serve import listen

    assert ServeConfig(host=written).host == bound
    sock = listen(ServeConfig(host=written).host, 0)
    try:
        assert sock.family == socket.AF_INET6 and sock.getsockname()[0] == bound
    finally:
        sock.close()


@pytest.mark.parametrize(("written", "said"), [("127.0.0.1:8080", "holds a port"), ("http://x", "not a URL")])
def test_a_serve_host_that_is_no_address_is_refused_naming_the_option(
    mobilenet_model: Path, tmp_path: Path, capsys: Any, written: str, said: str
) -> None:
    """A host:port or a URL in --host failed only when bound, as 'Name or service not known'."""
    from daemon.cli import main

    code = main(["serve", "--host", written, "--model", str(mobilenet_model), "-g", str(tmp_path / "g.npz")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--host" in err and said in err, err


def test_a_serve_host_with_a_port_names_serves_own_port_option(
    mobilenet_model: Path, tmp_path: Path, capsys: Any
) -> None:
    """serve --host 127.0.0.1:8080 was told to give its port 'in ops.port or ops.camera_ports', the metrics
    endpoint's settings, which serve does not read. The hint names the option the port goes in: --port on the
    command line, serve.port in the YAML; ops.host's names ops.port still."""
    from daemon.cli import main

    model = ["--model", str(mobilenet_model), "-g", str(tmp_path / "g.npz")]
    assert main(["serve", "--host", "127.0.0.1:8080", *model]) == 2
    err = capsys.readouterr().err
    assert "holds a port: give the address alone, its port in --port (serve.port)" in err, err
    assert "ops." not in err, err

    cfg = tmp_path / "serve.yaml"
    cfg.write_text('cameras:\n  door:\n    source: {uri: clip.mp4}\nserve: {host: "127.0.0.1:8080"}\n')
    assert main(["serve", "--config", str(cfg), *model]) == 2
    err = capsys.readouterr().err
    assert "serve.host: Value error, '127.0.0.1:8080' holds a port" in err, err
    assert "its port in serve.port" in err and "ops." not in err and "--port" not in err, err

    cfg.write_text('cameras:\n  door:\n    source: {uri: clip.mp4}\nops: {host: "127.0.0.1:9100"}\n')
    with pytest.raises(ConfigError, match=r"ops\.host: .*its port in ops\.port or ops\.camera_ports"):
        load_settings(cfg)


def test_unenroll_waits_for_the_references_folders_lock_and_skips_no_image_gone_already(
    tmp_path: Path,
) -> None:
    """unenroll removes serve's images of a label holding their folder's lock, as serve does while it names and
    writes one: held past enroll.lock_wait_s, it stops naming the holder, the gallery and the images as they
    were. An image of serve's removed by hand already is not reported as one that stays."""
    from daemon.enroll import ledger_locked, unenroll
    from daemon.errors import LockTimeout

    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    cfg = ServeConfig(gallery=path, references=refs)
    state = ServiceState(MeanColour(), Gallery(4, threshold=0.9), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:
        for name, colour in (("ann.jpg", (0, 0, 200)), ("bob.jpg", (0, 200, 0)), ("carl.jpg", (200, 0, 0))):
            assert _post(f"{server.url}/enroll", name, _jpeg(colour))[0] == 200
    start = path.read_bytes()
    with (
        ledger_locked(refs.resolve(), 1.0, "reid-daemon serve", ""),
        pytest.raises(LockTimeout, match="reid-daemon serve"),
    ):
        unenroll(path, ["ann"], EnrollConfig(lock_wait_s=0.2))
    assert path.read_bytes() == start and (refs / "ann.jpg").is_file()
    (refs / "bob.jpg").unlink()
    report = unenroll(path, ["ann", "bob"])
    assert report.removed == (refs.resolve() / "ann.jpg",) and report.kept == ()
    assert Gallery.load(path).labels == ["carl"]


def test_uploads_past_the_image_memory_wait_then_get_503_with_retry_after(tmp_path: Path) -> None:
    """/recognize and /search decoded their uploads on as many of the 40 worker threads as came, and each
    held its image until answered (enrolments queued held theirs too): 40 of the largest images allowed (some
    120 MB decoded each) took 8.4 GB. Each upload now reserves its bytes and pixels (from its header) in
    serve.max_image_memory_bytes before it is read and decoded; one that finds no room waits
    image_memory_wait_s, then is a 503 with Retry-After, never decoded."""
    model = GatedColour()
    image = _jpeg((0, 0, 200), (600, 600))
    need = len(image) + 6 * 600 * 600
    cfg = ServeConfig(max_image_memory_bytes=2 * need + 1000, image_memory_wait_s=1.0)
    state = ServiceState(model, Gallery(4), cfg, model="gated")
    with BackgroundServer(create_app(state)) as server, ThreadPoolExecutor(5) as pool:
        url = server.url
        busy = [pool.submit(_enroll_answer, f"{url}/search", f"q{i}.jpg", image) for i in range(5)]
        try:
            wait_until(lambda: sum(f.done() for f in busy) == 3, 30, "three searches answered")
            assert model.inside == 2  # two decoded and in the model; the others never decoded (before: five)
            refused = [f.result() for f in busy if f.done()]
        finally:
            model.release.set()
        answered = [f.result()[0] for f in busy if f.result()[0] == 200]
        health = _call(f"{url}/health")[1]
    assert answered == [200, 200] and state.images.held == 0
    for status, retry, body in refused:
        assert status == 503 and retry == "1", (status, body)
        assert "busy" in body["detail"] and "serve.max_image_memory_bytes" in body["detail"], body
    assert health["requests"]["search"] == 5 and health["errors"] == {"search": 3}


def test_an_upload_waiting_for_image_memory_goes_on_once_it_is_given_back() -> None:
    """A request waiting for room (serve.image_memory_wait_s) goes on as soon as the one holding it gives it
    back, not at the end of its wait (mutation audit: without the notify it waited the whole 10 s, then 503)."""

    async def two() -> float:
        memory = ImageMemory(capacity=100, wait_s=10.0)

        async def hold() -> None:
            async with memory.reserved(100, "first"):
                await asyncio.sleep(0.2)

        first = asyncio.create_task(hold())
        await asyncio.sleep(0.05)
        start = time.monotonic()
        async with memory.reserved(100, "second"):
            waited = time.monotonic() - start
        await first
        assert memory.held == 0
        return waited

    assert asyncio.run(two()) < 2.0


def test_an_upload_needing_more_than_the_image_memory_is_decoded_alone(tmp_path: Path) -> None:
    """One upload whose bytes and pixels are more than serve.max_image_memory_bytes takes it whole, not a 503."""
    cfg = ServeConfig(max_image_memory_bytes=1_000_000, image_memory_wait_s=1.0)
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="mean-colour")
    with BackgroundServer(create_app(state)) as server:  # 6 bytes a pixel: 2.16 MB
        status, body = _post(f"{server.url}/search", "big.jpg", _jpeg((0, 0, 200), (600, 600)))
    assert status == 200, body
    assert state.images.held == 0


def _timed_enrolment(url: str, filename: str, data: bytes) -> tuple[float, int, str | None, Any]:
    start = time.monotonic()
    status, retry, body = _enroll_answer(f"{url}/enroll", filename, data)
    return time.monotonic() - start, status, retry, body


def test_an_enrolment_queued_behind_those_at_work_waits_no_longer_than_lock_wait_s_in_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enrolments past the ENROLMENTS_AT_ONCE at work wait for a turn; with another process holding the gallery's
    lock for good, the one after them waited for its turn until one ahead gave up (lock_wait_s), then lock_wait_s
    more for the lock: some twice lock_wait_s before its 503. Its wait for a turn now counts in its lock_wait_s:
    each enrolment is answered about lock_wait_s after it came (two at work at once here, four sent)."""
    import daemon.serve

    monkeypatch.setattr(daemon.serve, "ENROLMENTS_AT_ONCE", 2)
    with (
        _ann_served_while_locked(tmp_path, tmp_path / "g.npz", lock_wait_s=2.0) as (url, _holder),
        ThreadPoolExecutor(4) as pool,
    ):
        waiting = [pool.submit(_timed_enrolment, url, f"p{i}.jpg", _jpeg((0, 200, i))) for i in range(4)]
        answers = [f.result() for f in waiting]
        health = _call(f"{url}/health")[1]
    for took, status, retry, body in answers:
        assert status == 503 and retry == "2", (status, body)
        assert 1.9 < took < 3.5, took  # before: the last two some 4 s
        assert "serve.lock_wait_s" in body["detail"], body
    # the last two waited for a turn until those ahead gave up: then refused, or left no time for the lock
    turn = [body["detail"] for _, _, _, body in answers if "for its turn" in body["detail"]]
    assert len(turn) == 2, [body["detail"] for _, _, _, body in answers]
    assert health["errors"] == {"enroll": 4} and health["requests"]["enroll"] == 5


def test_an_enrolment_waits_for_both_locks_no_longer_than_lock_wait_s_in_all(tmp_path: Path) -> None:
    """An enrolment waits for the gallery's lock, then the references folder's: each waited lock_wait_s, so one
    whose gallery lock came late and whose folder lock was held by a stopped serve waited nearly twice that. The
    wait for the folder's lock takes what the gallery's left, and its 503 says so."""

    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    with _ann_served_while_locked(tmp_path, path, lock_wait_s=3.0) as (url, gallery_holder):
        folder_holder = _stopped_folder_lock_holder(refs)
        try:
            threading.Timer(1.5, gallery_holder.kill).start()  # the gallery's lock comes free half-way
            took, status, retry, body = _timed_enrolment(url, "bob.jpg", _jpeg((0, 200, 0)))
        finally:
            folder_holder.kill()
            folder_holder.wait(timeout=10)
    assert status == 503 and retry == "3", (status, body)
    assert 2.9 < took < 4.0, took  # before: some 4.5 s
    detail = body["detail"]
    assert f"locked by pid {folder_holder.pid}" in detail, detail
    told = r"what was left of serve.lock_wait_s, 3 s, after 1\.\d s waiting for the gallery's lock"
    assert re.search(told, detail), detail


def _raw_post(url: str, body: bytes, ctype: str) -> tuple[int, Any]:
    """POST ``body`` as it is (http.client: no client fixes it up), its status and JSON answer."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        conn.request(
            "POST", parts.path + (f"?{parts.query}" if parts.query else ""), body, {"Content-Type": ctype}
        )
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def test_a_multipart_body_cut_off_mid_part_is_a_400_saying_so(toy: tuple[str, ServiceState]) -> None:
    """A body that ends inside a part, before the closing boundary (a client or proxy that cut it off, its
    Content-Length the bytes it sent), was answered 422 "Field required" for the part it was cut in, as if the
    client had left the image out. It is a 400 saying the body was cut off, counted in /health."""
    url, state = toy
    for endpoint, fields in (("recognize", {}), ("search", {}), ("enroll", {"label": "ann"})):
        whole, ctype = _multipart({"image": ("q.jpg", _jpeg((0, 0, 200)))}, fields)
        cut = whole[: len(whole) - 100]  # inside the image's bytes
        status, body = _raw_post(f"{url}/{endpoint}", cut, ctype)
        assert status == 400, (endpoint, status, body)  # before: 422, the image "Field required"
        assert "cut off" in body["detail"] and f"{len(cut)} bytes" in body["detail"], body
    query, ctype = _multipart({"image": ("q.jpg", _jpeg((0, 0, 200)))}, {})
    head = query[: query.index(b"\r\n\r\n") + 2]  # in the part's headers
    status, body = _raw_post(f"{url}/search", head, ctype)
    assert status == 400 and "cut off" in body["detail"], body
    assert _raw_post(f"{url}/search", query + b"an epilogue, ignored\r\n", ctype)[0] == 200
    health = _call(f"{url}/health")[1]
    assert health["errors"] == {"recognize": 1, "search": 2, "enroll": 1}, health
    assert len(state.gallery) == 0


def _form_bytes(boundary: str, label: bytes | None, filename: bytes, data: bytes) -> bytes:
    """A multipart body of raw bytes: the label field and the file name as they are (any encoding)."""
    b = boundary.encode()
    parts = []
    if label is not None:
        parts.append(
            b"--" + b + b'\r\nContent-Disposition: form-data; name="label"\r\n\r\n' + label + b"\r\n"
        )
    head = b'\r\nContent-Disposition: form-data; name="image"; filename="' + filename + b'"\r\n\r\n'
    parts.append(b"--" + b + head + data + b"\r\n")
    return b"".join(parts) + b"--" + b + b"--\r\n"


def test_a_label_or_file_name_that_is_not_utf8_is_refused_naming_it(toy: tuple[str, ServiceState]) -> None:
    """A label field or file name in Latin-1 ("Jos\\xe9") was read as Latin-1 by the form parser (Starlette falls
    back to it) and enrolled as "José", where enroll refuses a file name that is not UTF-8 and a client meaning
    some other encoding got another label without a word. Such bytes are a 400 naming the field and the bytes;
    "José" in UTF-8, or in Latin-1 in a form whose Content-Type says charset=iso-8859-1, is enrolled."""
    url, state = toy
    image, boundary = _jpeg((0, 0, 200)), "b0undary"
    ctype = f"multipart/form-data; boundary={boundary}"
    status, body = _raw_post(f"{url}/enroll", _form_bytes(boundary, b"Jos\xe9", b"q.jpg", image), ctype)
    assert status == 400 and "'label'" in body["detail"] and "b'Jos\\xe9'" in body["detail"], body
    assert "UTF-8" in body["detail"], body
    status, body = _raw_post(f"{url}/enroll", _form_bytes(boundary, None, b"Jos\xe9.jpg", image), ctype)
    assert status == 400 and "file name" in body["detail"] and "b'Jos\\xe9.jpg'" in body["detail"], body
    status, body = _raw_post(f"{url}/search", _form_bytes(boundary, None, b"\xff\xfe.jpg", image), ctype)
    assert status == 400 and "file name" in body["detail"], body
    assert len(state.gallery) == 0
    status, body = _raw_post(f"{url}/enroll", _form_bytes(boundary, "José".encode(), b"q.jpg", image), ctype)
    assert status == 200 and body["label"] == "José", body
    status, body = _raw_post(f"{url}/enroll", _form_bytes(boundary, None, "Zoë.jpg".encode(), image), ctype)
    assert status == 200 and body["label"] == "Zoë", body
    latin = ctype + "; charset=iso-8859-1"
    status, body = _raw_post(f"{url}/enroll", _form_bytes(boundary, b"Jos\xe9", b"q.jpg", image), latin)
    assert status == 200 and body["label"] == "José", body
    assert state.gallery.labels == ["José", "Zoë", "José"]


def _png_with_text(chunks: int) -> bytes:
    """A 64x64 PNG of some 1 KB a chunk holding ``chunks`` zTXt chunks of 1 MB of text each (Pillow's limit a
    chunk)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    text = zlib.compress(b"a" * 1_000_000, 9)
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    notes = b"".join(chunk(b"zTXt", b"note%d\x00\x00" % i + text) for i in range(chunks))
    pixels = chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + bytes(192) for _ in range(64))))
    return head + notes + pixels + chunk(b"IEND", b"")


def test_a_pngs_text_chunks_are_never_decompressed(toy: tuple[str, ServiceState]) -> None:
    """A PNG's text chunks (zTXt: a kilobyte each can hold a megabyte) were decompressed by Pillow reading its
    header, up to 64 MB of them, before the upload's memory was reserved, and by libpng decoding it, which its
    reservation (its pixels) did not count: a 64x64 PNG of 40 KB took 40 MB to measure and decode (60 KB: some
    60 MB and 1 s). Its size is read from its IHDR chunk and its text chunks are left out before it is decoded."""
    import subprocess
    import sys

    script = (
        "import io, sys\nfrom pathlib import Path\nfrom daemon.serve import decode_image, measure_upload\n"
        "def peak_kb():  # VmHWM: the process's own, where ru_maxrss starts from the forking parent's\n"
        "    line = next(s for s in Path('/proc/self/status').read_text().splitlines() if s.startswith('VmHWM'))\n"
        "    return int(line.split()[1])\n"
        "data = sys.stdin.buffer.read()\nbefore = peak_kb()\n"
        "assert measure_upload(io.BytesIO(data), 'q.png', 1 << 30, 1 << 30) == (len(data), 4096)\n"
        "assert decode_image(data, 'q.png').shape == (64, 64, 3)\n"
        "print((peak_kb() - before) // 1024)\n"
    )
    bomb = _png_with_text(40)
    run = subprocess.run([sys.executable, "-c", script], input=bomb, capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    assert int(run.stdout) < 10, (
        f"{int(run.stdout)} MB to measure and decode a {len(bomb)}-byte PNG"
    )  # before: 41
    url, _ = toy
    status, body = _post(f"{url}/search", "notes.png", bomb)
    assert status == 200, body


def _tiled_tiff(tile: int, pixels: bytes) -> bytes:
    """A 16x16 RGB TIFF in one tile of ``tile`` x ``tile`` pixels, uncompressed, holding ``pixels`` (too few)."""
    import struct

    tags = [(256, 16), (257, 16), (259, 1), (262, 2), (277, 3), (284, 1), (322, tile), (323, tile)]
    data_at, ifd_at = 8, 8 + len(pixels)
    bits_at = ifd_at + 2 + 12 * (len(tags) + 3) + 4
    entries = [struct.pack("<HHII", tag, 3, 1, value) for tag, value in tags]
    entries.insert(2, struct.pack("<HHII", 258, 3, 3, bits_at))  # 8 bits a sample, three samples
    entries += [struct.pack("<HHII", 324, 4, 1, data_at), struct.pack("<HHII", 325, 4, 1, len(pixels))]
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + bytes(4)
    return b"II*\x00" + struct.pack("<I", ifd_at) + pixels + ifd + struct.pack("<HHH", 8, 8, 8)


def test_a_tiff_whose_tiles_are_larger_than_the_pixel_limit_is_refused_from_its_header(
    toy: tuple[str, ServiceState],
) -> None:
    """OpenCV allocates a whole tile to decode a tiled TIFF, whatever the image's size: a 216-byte TIFF of 16x16
    pixels declaring 16000x16000 tiles passed the max_image_pixels check (256 pixels) and took 979 MB and 4 s to
    fail to decode (4096x4096 here: 66 MB, answered 400 'not an image OpenCV can decode'). The tiles' pixels are
    checked too, and counted in the upload's memory where they are more than the image's."""
    url, _ = toy
    bomb = _tiled_tiff(4096, bytes(64))  # the toy's max_image_pixels is 4 M
    status, body = _post(f"{url}/search", "tiles.tif", bomb)
    assert status == 413, body
    assert "its tiles are 4096x4096 pixels" in body["detail"] and "max_image_pixels" in body["detail"], body
    fine = cv2.imencode(".tiff", np.full((400, 300, 3), 200, np.uint8))[1].tobytes()  # in strips
    status, body = _post(f"{url}/search", "fine.tif", fine)
    assert status == 200, body


def test_a_search_match_lists_at_most_references_per_match_urls_and_says_how_many(tmp_path: Path) -> None:
    # Regression: each /search match listed every reference image of its label, so k up to 1000 matches of a
    # label with thousands of images (a folder enroll made: serve's max_entries bounds only its own uploads)
    # built an answer of millions of URLs. A match lists references_per_match of them and says how many there are.
    refs, path = tmp_path / "refs", tmp_path / "g.npz"
    refs.mkdir()
    for n in range(2, 32):  # 30 more images of ann in the folder, as a bulk enroll's folder holds them
        (refs / f"ann--{n}.jpg").write_bytes(_jpeg((0, 0, 200)))
    cfg = ServeConfig(gallery=path, references=refs, references_per_match=4)
    state = ServiceState(MeanColour(), Gallery(4), cfg, model="m")
    with BackgroundServer(create_app(state)) as server:
        assert _post(f"{server.url}/enroll", "ann.jpg", _jpeg((0, 0, 200)))[0] == 200
        status, body = _post(f"{server.url}/search?k=1", "q.jpg", _jpeg((0, 0, 200)))
    assert status == 200, body
    match = body["matches"][0]
    assert match["label"] == "ann" and match["references_total"] == 31, match
    assert len(match["references"]) == 4 and len(set(match["references"])) == 4, match
    assert all(u.startswith("/references/ann") for u in match["references"]), match
