"""``reid-daemon serve``: the gallery over HTTP (FastAPI; OpenAPI schema at /openapi.json, docs at /docs).

Endpoints:

* ``GET /health``: gallery size and labels (of the file as it is: one another process saved since is read
  again; ``problem`` says why one could not be), the file's name (not its folders), size and SHA-256, model
  and dim, adaptation state (the projection head in use), request and error counts per endpoint, uptime.
  Always 200 while the process runs, without waiting.
* ``POST /recognize``: an uploaded image (or crop) -> top-k gallery matches per person (in the gallery file as
  it is: one another process saved since is read again, here and in ``/search``; one deleted since is an empty
  gallery, logged, and the next enrolment writes the file anew: ``gallery.latest``). With ``detect`` the
  people are found by the detector; without, the whole image is one crop.
* ``POST /search``: an uploaded image of one person -> the gallery entries most like it, each with the URLs of
  its label's reference images.
* ``POST /enroll``: an uploaded image and a label (taken as given, trimmed; without the field, read from the
  file name as ``enroll`` reads it, set code included) -> a new gallery entry (up to
  ``max_entries`` in all); the image is kept in the references folder as ``enroll`` of it reads it (at its top
  level, or in the person's folder with the enroll section's ``label_from: folder``; served as static files,
  hidden ones left out) under a name never given before there (``enroll.SERVE_LEDGER``; chosen, written and recorded
  holding the folder's lock file, ``enroll.SERVE_LOCK``, as another serve on the folder does), and the
  gallery is saved atomically, under the file's lock (``gallery.locked``), read again first when another
  process (``enroll --append``) saved it;
  ``evicted`` counts the label's earlier entries the per-label cap dropped to make room; the reference images
  the service kept for them are removed once the gallery is saved (``removed``: their URLs).
* ``GET /references/<file>``: the reference images (the folder's other files and hidden ones are not served).

Bad uploads get a 4xx that says why: 400 empty or undecodable image (or one whose header does not give its
size) or a body the form parser cannot read (a multipart Content-Type with no boundary) or that ends before its
closing boundary (cut off: ``FormCheck``), or whose field or file name is not UTF-8 (or the charset it names), 413
too large, 409 a
label that the file name convention cannot parse (or an image of a label at its cap in a ``drop_latest``
gallery), 507 an enrolment that would grow the gallery past
``serve.max_entries`` (``_check_room``), 422 missing fields, an unknown query parameter or form
field, or a query parameter or form field sent twice; a request body longer than ``max_upload_bytes``
plus MULTIPART_SLACK gets its 413 as soon as that shows (its Content-Length, or the bytes received), unread;
a client that goes on sending it is disconnected ``client_timeout_s`` after the answer; 503 with Retry-After an
upload that found no room in ``max_image_memory_bytes`` within ``image_memory_wait_s`` (``ImageMemory``).
A failure of the service's own files (the gallery, its lock file, a reference image) is a 409 naming the file
but not the server's folders (``for_client``); the log has the whole message. An enrolment that waited
``lock_wait_s`` for the gallery's lock, or the references folder's, held by another process, is a 503 naming that
process and the lock file.
Requests run in FastAPI's worker threads, enrolments on their own (``ENROLMENTS_AT_ONCE`` at a time, the others
queued); one lock makes gallery changes and searches consistent. A client
that has not sent its request's headers ``client_timeout_s`` after connecting (or after its last answer), whose
body pauses that long or comes slower than ``client_min_rate`` past that, or that leaves an answer unread that
long, is disconnected (``TimedH11Protocol``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import functools
import hashlib
import io
import logging
import math
import os
import re
import socket
import struct
import termios
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Final, NamedTuple, TypeVar
from urllib.parse import quote

import anyio
import cv2
import h11
import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from daemon.config import EnrollConfig, ServeConfig
from daemon.embed import embedder_signature
from daemon.embedding import (
    LEFTOVER_AGE_S,
    EmbedOptions,
    atomic_write,
    embed,
    is_image_file,
    list_files,
    may_be_cut,
    remove_leftovers,
    temp_stem,
    temp_target,
)
from daemon.enroll import (
    SERVE_LEDGER,
    folder_label,
    invisible_character,
    ledger_key,
    ledger_locked,
    next_variant,
    parse_reference_name,
    record_folder,
    record_variant,
    remove_serve_references,
    serve_reference,
    tidy_label,
)
from daemon.errors import ConfigError, DataError, LockTimeout
from daemon.gallery import Gallery, latest, locked
from daemon.ops.http import bind_address, host_port
from daemon.recognize import check_embedder, recognize_embeddings
from daemon.tempdirs import Leftovers
from daemon.types import Detector, Embedder, ImageBGR

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_STEM_BYTES: Final = 255 - len("--9999999999.jpg")
"""UTF-8 bytes a reference file's ``[SET-]label`` stem may take: a file name holds 255 (ext4, XFS, btrfs)."""

MULTIPART_SLACK: Final = 64 * 1024
"""Bytes a request body may hold besides the image: multipart boundaries, part headers, the label field."""

ENROLMENTS_AT_ONCE: Final = 40
"""Enrolments at work at once, each on a thread of its own (embedding, then waiting up to lock_wait_s for the
gallery's lock, which they take in turn), as many as the worker threads the other requests share (anyio's 40),
so as many wait for a lock at once as did on those; the others wait for a turn without a thread, and no longer
than lock_wait_s in all (``enrolment_turn``: what they waited is taken from their wait for the locks). Those worker
threads, which /health, /recognize and /search and the uploads' decoding run on, are never taken by enrolments
waiting for a lock that another process holds."""

COUNTED: Final = "reid-daemon.counted"
"""Request scope key, set once the request is counted or will be: the body limit refused it, or the route's
dependencies ran (from there on the endpoint counts its own errors)."""


class FileDigest:
    """The size and SHA-256 of a file, hashed again only when the file is another (an atomic save makes a new
    inode) or changed (its size or mtime): /health reads it often, a gallery file changes seldom."""

    def __init__(self) -> None:
        self._stamp: tuple[int, int, int, int] | None = None
        self._digest = ""
        self._lock = threading.Lock()

    def of(self, path: Path) -> tuple[int, str]:
        """(bytes, SHA-256 hex) of ``path``; OSError when it cannot be read."""
        with path.open("rb") as f:
            st = os.fstat(f.fileno())  # of the file hashed, even where another replaces it meanwhile
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            with self._lock:
                if stamp == self._stamp:
                    return st.st_size, self._digest
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        with self._lock:
            self._stamp, self._digest = stamp, digest
        return st.st_size, digest


@dataclass
class ServiceState:
    """What the service works with: models, the gallery (and where it lives), counters."""

    embedder: Embedder
    gallery: Gallery
    cfg: ServeConfig
    model: str
    detector: Detector | None = None
    head: dict[str, Any] | None = None  # the adaptation head's metadata, None when the raw embedder is used
    problem: str | None = None  # why /health last could not take the gallery file as it is (for a client)
    naming: EnrollConfig = field(default_factory=EnrollConfig)
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.time)
    digest: FileDigest = field(default_factory=FileDigest)  # of the gallery file, for /health
    listing: ReferenceListing = field(init=False)  # the references folder's URLs, for /search
    images: ImageMemory = field(init=False)  # the memory the uploads take (serve.max_image_memory_bytes)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counting: threading.Lock = field(default_factory=threading.Lock)  # requests run in worker threads

    def __post_init__(self) -> None:
        """DataError when the gallery's dimension is not the embedder's (no request could be answered)."""
        self.listing = ReferenceListing(self.cfg.references, self.naming)
        self.images = ImageMemory(self.cfg.max_image_memory_bytes, self.cfg.image_memory_wait_s)
        check_embedder(self.gallery, self.embedder, "the embedder's output")
        self.gallery.made_by(embedder_signature(self.embedder))
        if len(self.gallery) >= self.cfg.max_entries:
            logger.warning(
                "the gallery holds %d entries, serve.max_entries is %d: /enroll adds no new label (HTTP 507)",
                len(self.gallery),
                self.cfg.max_entries,
            )

    def counted(self, endpoint: str, work: Callable[[], T]) -> T:
        """Run ``work`` counting the request, and the error when it raises."""
        self.count(endpoint, error=False)
        try:
            return work()
        except Exception:
            self.count(endpoint, error=True)
            raise

    def refused(self, endpoint: str) -> None:
        """Count a request refused before its work began, and its error."""
        self.count(endpoint, error=False)
        self.count(endpoint, error=True)

    def count(self, endpoint: str, error: bool) -> None:
        with self.counting:
            (self.errors if error else self.requests)[endpoint] += 1


# ----------------------------------------------------------------------------------------------- uploads


BYTES_A_PIXEL: Final = 6
"""Bytes of memory a request takes for each pixel of its upload while it works on it, at its peak: twice the
decoded image (BGR, 3 bytes a pixel), both while OpenCV decodes it (an 8000x5000 JPEG, baseline or progressive:
231 MB over the 114 MB image's) and while the embedder holds its crop (a whole image is one crop, copied).
Measured: 40 uploads of 8000x5000 at once peaked at 8.4 GB before uploads were held to
serve.max_image_memory_bytes, some 210 MB each."""


class ImageMemory:
    """The bytes of uploads and of their decoded images the service holds at once (serve.max_image_memory_bytes):
    a request reserves its upload's bytes and its pixels before it reads and decodes them and gives them back once
    answered; one that finds no room waits ``wait_s`` (serve.image_memory_wait_s) at most for others to give theirs
    back, then is an HTTPException 503 with Retry-After. One upload needing more than the whole takes the whole (it
    waits until nothing else is held). Reserved and waited for on the event loop: waiting takes no thread."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity, self.wait_s = capacity, wait_s
        self.held = 0
        self._freed: asyncio.Condition | None = None  # made on the event loop that serves

    @contextlib.asynccontextmanager
    async def reserved(self, need: int, name: str) -> AsyncIterator[None]:
        """Hold ``need`` bytes (``name``'s, for the 503) inside the block."""
        need = min(need, self.capacity)
        freed = self._freed = self._freed or asyncio.Condition()
        async with freed:
            try:
                await asyncio.wait_for(freed.wait_for(lambda: self.held + need <= self.capacity), self.wait_s)
            except TimeoutError:
                raise self._busy(need, name) from None
            self.held += need
        try:
            yield
        finally:
            async with freed:
                self.held -= need
                freed.notify_all()

    def _busy(self, need: int, name: str) -> HTTPException:
        return HTTPException(
            503,
            f"{name}: the service is busy with other images: they hold {self.held} of the "
            f"{self.capacity} bytes its uploads may take at once (serve.max_image_memory_bytes), and this one "
            f"needs {need}; it waited {self.wait_s:g} s (serve.image_memory_wait_s): try again",
            headers={"Retry-After": str(math.ceil(self.wait_s))},
        )


@contextlib.asynccontextmanager
async def held_upload(
    state: ServiceState, endpoint: str, upload: UploadFile
) -> AsyncIterator[tuple[ImageBGR, str]]:
    """An upload decoded, and its name, inside the block, holding its memory (``state.images``) until the block
    ends; an upload refused (HTTPException: 413, 400, 503 while the service is busy) is counted in /health."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            taken = await _take_upload(state, upload, stack)
        except HTTPException:
            state.refused(endpoint)
            raise
        yield taken


async def _take_upload(
    state: ServiceState, upload: UploadFile, stack: contextlib.AsyncExitStack
) -> tuple[ImageBGR, str]:
    """Measure ``upload`` from its header, reserve its memory (released by ``stack``), read and decode it."""
    name, cfg = upload.filename or "upload", state.cfg
    size, pixels = await run_in_threadpool(
        measure_upload, upload.file, name, cfg.max_upload_bytes, cfg.max_image_pixels
    )
    await stack.enter_async_context(state.images.reserved(size + BYTES_A_PIXEL * pixels, name))
    data = await upload.read(size)
    return await run_in_threadpool(decode_image, data, name), name


def measure_upload(file: BinaryIO, name: str, max_bytes: int, max_pixels: int) -> tuple[int, int]:
    """(bytes, pixels) of an upload (the form parser's file of it), from the image's header, without reading it
    whole or decoding it; HTTPException 413 / 400 saying what is wrong (``check_pixels``)."""
    size = file.seek(0, os.SEEK_END)
    if size > max_bytes:
        raise HTTPException(413, f"{name}: {size} bytes is more than the limit of {max_bytes}")
    if not size:
        raise HTTPException(400, f"{name}: the upload is empty")
    file.seek(0)
    try:
        return size, check_pixels(file, name, max_pixels)
    finally:
        file.seek(0)


def decode_image(data: bytes, name: str) -> ImageBGR:
    """An upload's bytes (measured: ``measure_upload``) -> BGR image; HTTPException 400 when OpenCV cannot. A
    PNG's text chunks are left out first (``without_png_text``)."""
    if data.startswith(PNG_SIGNATURE):
        data = without_png_text(data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise HTTPException(400, f"{name}: not an image OpenCV can decode (JPEG, PNG, BMP, WebP...)")
    return np.asarray(image, dtype=np.uint8)


def check_pixels(data: bytes | BinaryIO, name: str, max_pixels: int) -> int:
    """The pixels decoding the image takes by its header: its own, or a TIFF tile's where that is more (OpenCV
    allocates a whole tile, whatever the image's size); HTTPException 413 when they are more than
    ``max_pixels``, or more than Pillow opens at all (its decompression-bomb bound, twice
    ``Image.MAX_IMAGE_PIXELS``, which it raises on); 400 when the header cannot be read: what cannot be measured
    is not decoded."""
    try:
        size = header_size(data)
    except Image.DecompressionBombError:
        bound = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise HTTPException(
            413, f"{name}: its header gives more than {bound} pixels, more than the service decodes"
        ) from None
    if size is None:  # OpenCV might decode it (PFM, Radiance HDR), allocating whatever its header says
        raise HTTPException(
            400, f"{name}: not an image whose size its header gives (JPEG, PNG, BMP, WebP, TIFF, GIF...)"
        )
    for what, (width, height) in (("", size[:2]), ("its tiles are ", size.tile or (0, 0))):
        if width * height > max_pixels:
            raise HTTPException(
                413,
                f"{name}: {what}{width}x{height} pixels is more than the limit of {max_pixels} (max_image_pixels)",
            )
    return max(size.width * size.height, math.prod(size.tile or (0, 0)))


class ImageSize(NamedTuple):
    """An image's size by its header, and a TIFF's tile size (None: not tiled, or no TIFF)."""

    width: int
    height: int
    tile: tuple[int, int] | None = None


def header_size(data: bytes | BinaryIO) -> ImageSize | None:
    """The size an image file's header (its bytes, or the file) gives, without decoding it: a PNG's from its IHDR
    chunk (``png_size``), another's by Pillow (a TIFF's tile size too); None for what neither reads;
    Image.DecompressionBombError for a header over Pillow's own bound."""
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    start = file.read(PNG_HEAD)
    file.seek(0)
    if start.startswith(PNG_SIGNATURE):
        return png_size(start)
    try:
        with Image.open(file) as im:
            width, height = im.size
            tags = getattr(im, "tag_v2", {})
            tile_w, tile_h = tags.get(TIFF_TILE_WIDTH), tags.get(TIFF_TILE_LENGTH)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    if not (isinstance(tile_w, int) and isinstance(tile_h, int)):
        return ImageSize(int(width), int(height))
    return ImageSize(int(width), int(height), (tile_w, tile_h))


TIFF_TILE_WIDTH: Final = 322
TIFF_TILE_LENGTH: Final = 323
"""TIFF tags of a tile's size: OpenCV allocates a whole tile (4 bytes a pixel) to decode a tiled TIFF, however
small the image: a 216-byte TIFF of 16x16 declaring 16000x16000 tiles took 979 MB and 4 s to fail to decode."""


PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
PNG_HEAD: Final = len(PNG_SIGNATURE) + 8 + 13
"""A PNG's bytes up to the end of its IHDR chunk's data (the first chunk: its size, width and height)."""
PNG_TEXT: Final = frozenset({b"tEXt", b"zTXt", b"iTXt"})


def png_size(head: bytes) -> ImageSize | None:
    """(width, height) of a PNG from its first ``PNG_HEAD`` bytes (its IHDR chunk, which comes first); None when
    they are no IHDR. Pillow reads on to the pixel data, decompressing the text chunks before it (up to 64 MB of
    them: a PNG of 74 KB took 164 MB and 0.7 s to measure), before the upload's memory is reserved."""
    if len(head) < PNG_HEAD or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return ImageSize(int(width), int(height))


def without_png_text(data: bytes) -> bytes:
    """A PNG's bytes without its text chunks (tEXt, zTXt, iTXt: metadata, which recognising a person never
    reads), each other chunk as it is; ``data`` as it is when its chunks do not add up (OpenCV says what it makes
    of it). libpng decompresses the text chunks before the pixels, what they declare each: a PNG of 74 KB took 73
    MB and 1.7 s to decode, which the upload's reservation (its pixels) did not count."""
    text, at = [], len(PNG_SIGNATURE)
    while at < len(data):
        if at + 8 > len(data):
            return data
        (size,) = struct.unpack(">I", data[at : at + 4])
        end = at + 12 + size  # length, type, data, CRC
        if end > len(data):
            return data
        if data[at + 4 : at + 8] in PNG_TEXT:
            text.append((at, end))
        at = end
    if not text:
        return data
    kept, at = [], 0
    for start, end in text:
        kept.append(data[at:start])
        at = end
    return b"".join([*kept, data[at:]])


# --------------------------------------------------------------------------------------------- the logic


def reference_urls(folder: Path | None, naming: EnrollConfig) -> dict[str, list[str]]:
    """Label -> URLs of the reference images in ``folder`` as ``enroll`` of the folder reads them (a URL is the
    image's path in the folder): files whose name parses to that label, in its visible sub-folders too with
    ``naming.recursive``; with ``naming.label_from: folder`` those of its sub-folders, labelled by their
    folder's name."""
    urls: dict[str, list[str]] = {}
    if folder is None or not folder.is_dir():
        return urls
    by_folder = naming.label_from == "folder"
    for path in list_files(folder, naming.recursive or by_folder):
        if not is_image_file(path) or (by_folder and path.parent == folder):
            continue
        try:
            label = (folder_label(path, naming) if by_folder else parse_reference_name(path, naming)).label
            url = reference_url(path.relative_to(folder).as_posix())
        except ValueError:  # no label, or a name that is not UTF-8 (no URL either: enroll leaves it out)
            continue
        urls.setdefault(label, []).append(url)
    return urls


SETTLED_NS: Final = 2_000_000_000
"""A references folder whose mtime is older than this (2 s) when it is listed keeps its listing until its mtime
changes. A younger one is listed again next time: a change in the same tick of the file system's clock as the
listing (or within the second of a file system that keeps seconds) would leave the mtime as it was."""


class ReferenceListing:
    """``reference_urls`` of the references folder for /search, listed again only when a folder listed changed
    (the folder, and with ``naming.recursive`` each of its visible sub-folders: its device, inode or mtime, which
    an image or a sub-folder added, removed or renamed in it changes) or ``forget`` was called (the gallery read
    again or an enrolment kept an image), so a query is a stat a folder, not a walk of thousands of images. The
    map answered is shared: read it, never change it."""

    def __init__(self, folder: Path | None, naming: EnrollConfig) -> None:
        self.folder, self.naming = folder, naming
        self._folders: list[Path] = [] if folder is None else [folder]  # the folders of the last listing
        self._stamp: tuple[tuple[int, int, int], ...] | None = None  # of those folders, None: list again
        self._urls: dict[str, list[str]] = {}
        self._forgotten = 0  # how many times forget was called: a listing begun before one is not kept
        self._lock = threading.Lock()

    def urls(self) -> dict[str, list[str]]:
        """Label -> URLs of its reference images, as the folder is now."""
        with self._lock:
            folders = self._folders
        stamp = _folders_stamp(folders)
        with self._lock:
            if stamp is not None and stamp == self._stamp:
                return self._urls
            forgotten = self._forgotten
        folders = _listed_folders(self.folder, self.naming.recursive or self.naming.label_from == "folder")
        stamp = _folders_stamp(folders)  # before the listing: a change after it makes another stamp
        urls = reference_urls(self.folder, self.naming)
        now = time.time_ns()
        settled = stamp is not None and all(now - mtime > SETTLED_NS for _, _, mtime in stamp)
        with self._lock:
            if forgotten == self._forgotten:
                self._folders, self._stamp, self._urls = folders, (stamp if settled else None), urls
        return urls

    def forget(self) -> None:
        """List the folder again at the next ``urls``."""
        with self._lock:
            self._stamp = None
            self._forgotten += 1


def _listed_folders(folder: Path | None, recursive: bool) -> list[Path]:
    """The folders ``reference_urls`` lists: ``folder``, and with ``recursive`` its visible sub-folders (those
    ``list_files`` walks: hidden ones and what is below them left out)."""
    if folder is None:
        return []
    if not recursive:
        return [folder]
    found = [folder]
    for top, dirs, _ in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(top) / d for d in dirs]
    return found


def _folders_stamp(folders: list[Path]) -> tuple[tuple[int, int, int], ...] | None:
    """(device, inode, mtime in ns) of each of ``folders``, None when there are none or one is not there."""
    stamps = []
    for folder in folders:
        try:
            st = folder.stat()
        except OSError:
            return None
        stamps.append((st.st_dev, st.st_ino, st.st_mtime_ns))
    return tuple(stamps) or None


def reference_url(name: str) -> str:
    """The URL path of the reference file ``name``, percent-encoded ('#', '?', '%', spaces, non-ASCII)."""
    return f"/references/{quote(name)}"


def health(state: ServiceState) -> dict[str, Any]:
    """What /health answers, with the gallery file as it is now where another process saved it since
    (``_health_latest``: a stat, and the file read again only then)."""
    _health_latest(state)
    g = state.gallery
    return {
        "status": "ok",
        "model": state.model,
        "dim": g.dim,
        "adaptation": {"head": state.head is not None, **(state.head or {})},
        "gallery": {
            **_gallery_file(state),
            "entries": len(g),
            "labels": len(g.unique_labels),
            "backend": g.backend,
            "threshold": g.threshold,
            "max_entries": state.cfg.max_entries,
            "problem": state.problem,
        },
        "detector": state.detector is not None,
        "requests": dict(state.requests),
        "errors": dict(state.errors),
        "uptime_s": round(time.time() - state.started, 1),
    }


def _gallery_file(state: ServiceState) -> dict[str, Any]:
    """/health's word on the gallery file: its name, never its folders (the log names the path), and the size
    and SHA-256 of the file as it is on disk now (None for a gallery kept in memory, or not saved yet)."""
    path = state.cfg.gallery
    size = digest = None
    if path is not None:
        with contextlib.suppress(OSError):  # not saved yet, or unreadable (gallery.problem says why)
            size, digest = state.digest.of(path)
    return {"file": None if path is None else path.name, "bytes": size, "sha256": digest}


def _health_latest(state: ServiceState) -> None:
    """Take the gallery file as it is now (``_latest``) for /health, which never fails nor waits: while a
    request holds the gallery (it reads the file itself) the copy held is reported; a file the service cannot
    take (unreadable, another model's) leaves the copy held and is said in ``state.problem`` (and logged once
    while it lasts), which the next good read clears."""
    if not state.lock.acquire(blocking=False):
        return
    try:
        _latest(state)
        problem = None
    except (DataError, OSError) as e:
        problem = for_client(str(e), _server_folders(state))
        if problem != state.problem:
            logger.warning(
                "/health: cannot take the gallery file as it is now (answers hold the copy read before): %s",
                e,
            )
    finally:
        state.lock.release()
    state.problem = problem


def recognize_image(
    state: ServiceState, image: ImageBGR, name: str, k: int, threshold: float | None, detect: bool
) -> dict[str, Any]:
    if detect and state.detector is None:
        raise HTTPException(400, "detect=true but the service runs without a detector (serve --detect)")
    opts = EmbedOptions(detector=state.detector if detect else None, model=state.model)
    result = embed(state.embedder, image, options=opts)
    with state.lock:
        _latest(state)  # with what another process (enroll --append) saved there
        report = recognize_embeddings(result, state.gallery, k=k, threshold=threshold)
    out = report.as_dict()
    for q in out["queries"]:
        q["source"] = name
    out["no_person"] = [] if len(result) else [name]  # as recognize --detect reports an image with nobody
    return out


def search_image(
    state: ServiceState, image: ImageBGR, name: str, k: int, threshold: float | None
) -> dict[str, Any]:
    result = embed(state.embedder, image, options=EmbedOptions(model=state.model))
    with state.lock:
        _latest(state)
        found = state.gallery.search(result.embedding, k=k, threshold=threshold)
        used = state.gallery.threshold if threshold is None else threshold
    urls = state.listing.urls()
    most = state.cfg.references_per_match
    return {
        "query": name,
        "k": k,
        "threshold": used,
        "search_ms": found.duration_ms,
        "matches": [
            {
                "label": m.label,
                "similarity": m.similarity,
                "row": m.index,
                "references": urls.get(m.label, [])[:most],
                "references_total": len(urls.get(m.label, [])),
            }
            for m in found.matches
        ],
    }


def enroll_image(
    state: ServiceState, image: ImageBGR, name: str, label: str | None, wait: LockWait | None = None
) -> dict[str, Any]:
    """Enrol ``image``; ``wait``: what is left of its ``lock_wait_s`` for the files' locks (all of it: None)."""
    stem, ref_label = _reference_stem(state, name, label)
    result = embed(state.embedder, image, options=EmbedOptions(model=state.model))
    wait = wait or LockWait(state.cfg.lock_wait_s)
    # one name per enrolment, a failed one undone before anyone sees it; the files' locks first (the gallery's,
    # then the references folder's, in every process), so that searches (state.lock alone) never wait while
    # an enrolment waits for another process
    with (
        wait.taking(_gallery_locked, state, "the gallery's lock"),
        wait.taking(_references_locked, state, "the references folder's lock"),
        state.lock,
    ):
        _latest(state)  # what another process (enroll --append) saved meanwhile is kept
        _check_room(state, ref_label)  # before anything is written
        ref_file, n = _free_name(state, stem)
        saved = _keep(state, image, ref_file)  # first: when it fails the gallery has not changed
        state.listing.forget()
        kept = _kept_path(state, ref_file)
        held, before = state.gallery.count(ref_label), state.gallery.sources(ref_label)
        row = _add_and_save(state, ref_label, result.embedding, kept)
        _record(state, stem, n)  # before any removal: a removed name is then never given again
        removed = _remove_evicted(state, before, state.gallery.sources(ref_label))
        size, evicted = len(state.gallery), held + 1 - state.gallery.count(ref_label)
    return {
        "label": ref_label,
        "row": row,
        "gallery_size": size,
        "reference": saved,
        "evicted": evicted,
        "removed": removed,
    }


def _check_room(state: ServiceState, label: str) -> None:
    """HTTPException 507 when an entry of ``label`` would grow the gallery past ``serve.max_entries``: a new
    label, or one under its per-label cap (one at its cap has an entry replaced, or is refused by drop_latest)."""
    gallery, limit = state.gallery, state.cfg.max_entries
    cap = gallery.config.max_per_label
    if len(gallery) < limit or (cap is not None and gallery.count(label) >= cap):
        return
    full = f"the gallery is full: it holds {len(gallery)} entries; /enroll adds up to {limit} (serve.max_entries)"
    at_cap = "" if cap is None else f"; an image of a label that holds its {cap} (max_per_label) replaces one"
    raise HTTPException(507, full + at_cap)


LOCK_WAIT: Final = "serve.lock_wait_s"


def _gallery_locked(
    state: ServiceState, wait_s: float | None = None, setting: str = LOCK_WAIT
) -> contextlib.AbstractContextManager[None]:
    """The gallery file's lock (``gallery.locked``), held while the service reads, changes and saves it, waited
    for ``wait_s`` (``lock_wait_s``) at most (LockTimeout naming ``setting``: 503); none for a gallery kept in
    memory only. Its own enrolments take it in turn too (each holds the lock file open on its own)."""
    path = state.cfg.gallery
    if path is None:
        return contextlib.nullcontext()
    return locked(path, state.cfg.lock_wait_s if wait_s is None else wait_s, "reid-daemon serve", setting)


def _references_locked(
    state: ServiceState, wait_s: float | None = None, setting: str = LOCK_WAIT
) -> contextlib.AbstractContextManager[None]:
    """The references folder's lock (``enroll.ledger_locked``), held while the service chooses a new reference's
    name, writes the image and records the name, so that another serve on the folder (with its own gallery, or
    none) never gives the same name; waited for ``wait_s`` (``lock_wait_s``) at most (LockTimeout naming
    ``setting``: 503). None without a folder."""
    folder = state.cfg.references
    if folder is None:
        return contextlib.nullcontext()
    return ledger_locked(
        folder, state.cfg.lock_wait_s if wait_s is None else wait_s, "reid-daemon serve", setting
    )


@dataclass
class LockWait:
    """An enrolment's ``lock_wait_s`` (``total_s``), for its turn among the enrolments at work and the locks it
    takes in all: each wait takes what the ones before it left, so that one enrolment never waits longer than
    that whatever it waits for (behind 40 others, then the gallery's lock, then the folder's)."""

    total_s: float
    spent_s: float = 0.0
    waited: list[str] = field(default_factory=list)  # what it waited for a while (named in a LockTimeout)

    def spend(self, what: str, seconds: float) -> None:
        """Take ``seconds`` waited for ``what`` from what is left."""
        self.spent_s += seconds
        if seconds >= 0.05:
            self.waited.append(what)

    @contextlib.contextmanager
    def taking(self, lock: LockOf, state: ServiceState, what: str) -> Iterator[None]:
        """Hold ``lock`` (``what``) of ``state`` inside the block, waiting what is left at most (LockTimeout past
        that, naming the setting and what went before: ``setting``)."""
        start = time.monotonic()
        left = self.total_s if not self.waited else max(0.0, round(self.total_s - self.spent_s, 1))
        with lock(state, left, self.setting()):
            self.spend(what, time.monotonic() - start)
            yield

    def setting(self) -> str:
        if not self.waited:
            return LOCK_WAIT
        return (
            f"what was left of {LOCK_WAIT}, {self.total_s:g} s, after {self.spent_s:.1f} s waiting for "
            + " and ".join(self.waited)
        )


LockOf = Callable[[ServiceState, float | None, str], contextlib.AbstractContextManager[None]]
"""A lock of the service's files (``_gallery_locked``, ``_references_locked``): waited for so long, naming that
setting."""


def _latest(state: ServiceState) -> None:
    """Take the gallery file as it is now when another process wrote it since the service read or saved it
    (``gallery.latest``: one stat a request), checked as at start (a DataError, 409, for one of another model).
    Searches need no lock: a save replaces the file whole."""
    path = state.cfg.gallery
    if path is None:
        return
    now = latest(state.gallery, path)
    if now is not state.gallery:
        check_embedder(now, state.embedder, "the embedder's output")
        state.gallery = now
        state.listing.forget()  # another process wrote the gallery: its folder may have changed too


def _add_and_save(state: ServiceState, label: str, embedding: Any, kept: Path | None) -> int:
    """Add the row (its source: the ``kept`` reference image) and save the gallery; the new row. When either
    fails, the kept image is removed and the gallery is as last saved (a row the cap evicted is back)."""
    row = -1
    try:
        row = state.gallery.add(label, embedding, source=None if kept is None else str(kept))
        if row < 0:
            cap = state.gallery.config.max_per_label
            raise HTTPException(
                409,
                f"{label!r} holds {cap} entries, the gallery's max_per_label, and its drop_policy is drop_latest: "
                "an image of a label at its cap is refused",
            )
        if state.cfg.gallery is not None:
            state.gallery.save(state.cfg.gallery)
    except BaseException:
        if kept is not None:
            kept.unlink(missing_ok=True)
        if row >= 0:
            state.gallery = _last_saved(state)
        raise
    return row


def _kept_path(state: ServiceState, name: Path) -> Path | None:
    """Where the reference image ``name`` (its path in the references folder) is kept (absolute, so that a row
    names its file wherever the service runs from), None without a references folder."""
    folder = state.cfg.references
    return None if folder is None else folder.resolve() / name


def _remove_evicted(state: ServiceState, before: list[str], after: list[str]) -> list[str]:
    """Remove the reference images of the rows the cap evicted (sources in ``before``, not in ``after``), once
    the gallery that no longer holds them is saved, by ``enroll``'s rule (``remove_serve_references``), of this
    service's references folder only; the URLs of those no longer there (removed now, or gone before)."""
    folder = state.cfg.references
    if folder is None:
        return []
    within = folder.resolve()
    done = remove_serve_references(set(before) - set(after), state.naming, within=within)
    return [reference_url(path.relative_to(within).as_posix()) for path in sorted(done.removed + done.gone)]


def _last_saved(state: ServiceState) -> Gallery:
    """The gallery as last saved (every enrolment saves it, so: as before the failed one), or a new empty one
    with the same settings when nothing was saved yet. Reloading undoes an eviction by the cap as well."""
    path, now = state.cfg.gallery, state.gallery
    if path is not None and path.exists():
        saved = Gallery.load(path)
        saved.warned_as(now)
        return saved
    return now.emptied()


def _reference_stem(state: ServiceState, name: str, label: str | None) -> tuple[str, str]:
    """The ``[SET-]label`` stem a new reference is kept under, and its label: the ``label`` field as given
    (``given_label``; a set code only from a file name), or else read from the upload's own name by the
    reference-name rule. HTTPException 422 for a label field that is blank or holds a control character; 409
    when there is no file name to read, when no label can be parsed from it, when a given label cannot be kept
    in its file name as it is ('AC/DC', 'jane--doe', 'R2-D2' read back as set R2, 'ab_cd' as 'ab cd'), or when
    the file would be hidden (a leading '.': ``enroll`` leaves hidden files out)."""
    naming = state.naming
    if label is not None:
        ref_label = given_label(label, naming)
        stem = _label_stem(ref_label, naming)
    else:
        if not Path(name).stem:
            raise HTTPException(
                409,
                "no label: give the label field, or a file name to read it from ([SET-]name[--VARIANT].jpg)",
            )
        try:
            ref = parse_reference_name(
                Path(Path(name).stem).name + ".jpg", naming
            )  # no folders from a client
        except ValueError as e:
            raise HTTPException(409, str(e)) from e
        ref_label, stem = ref.label, ref.label.replace(" ", naming.word_separator)
        if ref.set_code:
            stem = f"{ref.set_code}{naming.set_separator}{stem}"
    if stem.startswith("."):
        raise HTTPException(
            409, f"{label or name!r}: a label may not start with '.' (its reference file would be hidden)"
        )
    _check_file_name(stem, label or name)
    return stem, ref_label


def given_label(label: str, naming: EnrollConfig) -> str:
    """The ``label`` form field as the label: trimmed, runs of white space as one space, Unicode NFC and, where
    the enroll section says ``lowercase``, lower case (what ``enroll`` makes of a file name's label), never parsed
    as a file name (no set code, no variant). HTTPException 422 naming the field when it is blank or holds a
    control character (a newline, a tab, NUL: no label of a person)."""
    text = label.strip()
    if not text:
        raise HTTPException(
            422,
            "the form field 'label' is blank: give the person's label, or leave the field out to read it from "
            "the image's file name ([SET-]name[--VARIANT].jpg)",
        )
    bad = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise HTTPException(422, f"the form field 'label' holds the control character {bad!r}: {label!r}")
    hidden = invisible_character(text)
    if hidden is not None:
        raise HTTPException(422, f"the form field 'label' holds {hidden}: {label!r}")
    return tidy_label(text, naming.lowercase)


def _label_stem(label: str, naming: EnrollConfig) -> str:
    """The reference file stem that ``enroll`` reads back as ``label`` (spaces as the word separator);
    HTTPException 409 naming the label when its file name cannot keep it as it is."""
    lost = [s for s in ("/", naming.variant_separator) if s in label]
    if lost:
        raise HTTPException(
            409,
            f"label {label!r}: {lost[0]!r} cannot be kept in its reference file name "
            f"([SET-]name[{naming.variant_separator}VARIANT].jpg); choose a label without it",
        )
    stem = label.replace(" ", naming.word_separator)
    try:
        ref = parse_reference_name(stem + ".jpg", naming)
    except ValueError as e:
        raise HTTPException(409, f"label {label!r}: {e}") from e
    if (ref.label, ref.set_code, ref.variant) != (label, None, None):
        read = f"label {ref.label!r}" + ("" if ref.set_code is None else f" of set {ref.set_code!r}")
        raise HTTPException(
            409,
            f"label {label!r} cannot be kept in its reference file name as it is: enroll reads {stem}.jpg as "
            f"{read} ({naming.word_separator!r} is read as a space, a prefix like a set code before "
            f"{naming.set_separator!r} as the set); choose a label without it",
        )
    return stem


def _check_file_name(stem: str, given: str) -> None:
    """HTTPException 409 when ``stem`` cannot be a file name: a NUL, or too long for the variant suffix and
    '.jpg' to follow within the 255 bytes a file name holds."""
    if "\x00" in stem:
        raise HTTPException(409, f"{given!r}: a file name cannot hold the NUL character '\\x00'")
    size = len(stem.encode("utf-8", "surrogatepass"))
    if size > MAX_STEM_BYTES:
        raise HTTPException(
            409,
            f"{stem[:20]!r}...: the reference file name would take {size} UTF-8 bytes, more than the "
            f"{MAX_STEM_BYTES} a file name leaves for it; choose a shorter label",
        )


def _free_name(state: ServiceState, stem: str) -> tuple[Path, int]:
    """``stem.jpg`` or ``stem--N.jpg`` (with the enroll section's ``label_from: folder``, ``stem/N.jpg``: a
    folder a person), its path in the references folder, and its variant number N (1 for ``stem.jpg``): past
    every number the folder's ledger recorded or its files show, so that a name (a URL) answered once, as kept
    or as ``removed``, never names another image; a free one besides (never overwrites a file)."""
    naming, folder = state.naming, state.cfg.references
    if folder is None:
        return serve_reference(stem, 1, naming), 1
    n = next_variant(folder, stem, naming)
    while (folder / serve_reference(stem, n, naming)).exists():
        n += 1
    return serve_reference(stem, n, naming), n


def _record(state: ServiceState, stem: str, n: int) -> None:
    """Record the variant number given to an enrolment now saved in the references folder's ledger."""
    folder = state.cfg.references
    if folder is None:
        return
    try:
        record_variant(folder, ledger_key(stem, state.naming), n)
    except (OSError, DataError) as e:  # saved: the file in the folder still keeps its number from reuse
        logger.warning("cannot record reference name %s in %s's ledger: %s", n, folder, e)


def _record_folder(state: ServiceState) -> None:
    """Record the names the references folder holds in its ledger at start (``enroll.record_folder``): a folder
    an older version wrote to is known as the service's then. A folder it cannot write to (served read-only,
    for /search) is served all the same, with a warning."""
    folder = state.cfg.references
    if folder is None:
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_references_locked(state))  # another serve may be recording a name there
        except DataError as e:  # the lock file cannot be made (a read-only folder), or held too long
            logger.warning("cannot record the names of %s in its ledger (%s): %s", folder, SERVE_LEDGER, e)
            return
        _said_removed(_remove_reference_leftovers(folder), folder)
        try:
            record_folder(folder, state.naming)
        except OSError as e:
            logger.warning("cannot record the names of %s in its ledger (%s): %s", folder, SERVE_LEDGER, e)


def _remove_reference_leftovers(folder: Path) -> Leftovers:
    """The temporary files of the reference images and the ledger that a serve killed while it wrote them left
    in the references ``folder`` (and in its people's folders, ``label_from: folder``), removed; called holding
    the folder's lock, which every serve holds while it writes them there, so none is a live writer's. A name
    too long for its temporary file to show it ends in .jpg (a label of over ~190 bytes) is taken only once it is
    ``LEFTOVER_AGE_S`` old: the folder may hold other files (a gallery) whose writers take another lock."""
    cut = time.time() - LEFTOVER_AGE_S
    removed = remove_leftovers(folder, _serves_reference) + remove_leftovers(folder, may_be_cut, before=cut)
    try:
        with os.scandir(folder) as entries:
            people = [
                Path(e.path)
                for e in entries
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return removed
    for person in people:
        removed += remove_leftovers(person, _serves_reference)
    return removed


def _serves_reference(target: str) -> bool:
    """Whether ``target`` (a temporary file's, ``temp_target``) names a file serve writes into its references
    folder: a reference image or the ledger."""
    return target.endswith(".jpg") or target == SERVE_LEDGER


def _remove_gallery_leftovers(state: ServiceState) -> None:
    """The temporary files of the gallery that a writer killed while it saved it left beside it (a serve's or an
    ``enroll``'s: each saves the gallery holding its lock), removed at start, holding that lock (waited for
    ``lock_wait_s``): none is then a live writer's. Where none is there the lock is not taken."""
    path = state.cfg.gallery
    if path is None:
        return
    stem = temp_stem(path.name)
    try:
        with os.scandir(path.parent) as entries:
            if not any(temp_target(e.name) == stem for e in entries):
                return
        with _gallery_locked(state):
            removed = remove_leftovers(path.parent, lambda target: target == stem)
    except (OSError, DataError) as e:  # the lock held too long (LockTimeout), its file not to be made
        logger.warning(
            "cannot remove the temporary files a killed writer left beside the gallery %s: %s", path, e
        )
        return
    _said_removed(removed, path.parent)


def _said_removed(removed: Leftovers, folder: Path) -> None:
    if removed.files:
        logger.info("%s", removed.left_in(folder.resolve()))


def _keep(state: ServiceState, image: ImageBGR, name: Path) -> str | None:
    """Write the reference image ``name`` (its path in the references folder); its URL, or None without a
    folder. It is written atomically (``atomic_write``: a hidden temporary file beside it, fsynced, renamed), so
    a service killed meanwhile never leaves a truncated image under the name, which ``enroll`` would read."""
    folder = state.cfg.references
    if folder is None:
        return None
    path = folder / name
    ok, data = cv2.imencode(".jpg", image)
    if not ok:
        raise DataError(f"cannot encode the reference image {path} as JPEG")
    try:
        atomic_write(path, data.tobytes())
    except OSError as e:
        raise DataError(f"cannot write the reference image {path}: {e.strerror or e}") from e
    return reference_url(name.as_posix())


# ---------------------------------------------------------------------------------------------- the app


def create_app(state: ServiceState) -> FastAPI:
    """The FastAPI application serving ``state``."""
    limit = state.cfg.max_upload_bytes
    app = FastAPI(
        title="reid-daemon",
        summary="Person re-identification gallery: recognise, search and enrol by image.",
        version="1",
    )
    app.router.route_class = counting_route(state)
    app.state.client_timeout_s = state.cfg.client_timeout_s  # for the server (server_config)
    app.state.client_min_rate = state.cfg.client_min_rate
    app.add_middleware(FormCheck)  # inside BodyLimit: it reads what BodyLimit lets through
    app.add_middleware(BodyLimit, limit=limit + MULTIPART_SLACK, refused=state.refused)
    k_default = state.cfg.top_k
    turns = anyio.Semaphore(ENROLMENTS_AT_ONCE)  # enrolments at work (enrolment_turn: waited for a while)
    enrolling = anyio.CapacityLimiter(ENROLMENTS_AT_ONCE)  # their threads: one is free for each turn's holder
    known = [Depends(known_query(state)), Depends(known_form(state))]

    @app.get("/health", summary="What the service holds and how it has been used.")
    def get_health() -> dict[str, Any]:
        return state.counted("health", lambda: health(state))

    @app.head("/health", include_in_schema=False)  # a health checker asking with HEAD took a 405 for "down"
    def head_health() -> dict[str, Any]:
        return state.counted("health", lambda: health(state))

    @app.post(
        "/recognize",
        dependencies=known,
        summary="Top-k gallery matches for each person in an uploaded image.",
    )
    async def post_recognize(
        image: Annotated[UploadFile, File(description="JPEG/PNG/BMP/WebP image or person crop.")],
        k: Annotated[int, Query(ge=1, le=1000)] = k_default,
        threshold: Annotated[float | None, Query(ge=-1, le=1)] = None,
        detect: Annotated[bool, Query(description="Find the people with the detector.")] = False,
    ) -> dict[str, Any]:
        async with held_upload(state, "recognize", image) as (img, name):
            return await run_in_threadpool(
                state.counted, "recognize", lambda: recognize_image(state, img, name, k, threshold, detect)
            )

    @app.post(
        "/search", dependencies=known, summary="Gallery entries most like the person in an uploaded crop."
    )
    async def post_search(
        image: Annotated[UploadFile, File(description="A crop of one person.")],
        k: Annotated[int, Query(ge=1, le=1000)] = k_default,
        threshold: Annotated[float | None, Query(ge=-1, le=1)] = None,
    ) -> dict[str, Any]:
        async with held_upload(state, "search", image) as (img, name):
            return await run_in_threadpool(
                state.counted, "search", lambda: search_image(state, img, name, k, threshold)
            )

    @app.post("/enroll", dependencies=known, summary="Add an uploaded reference image to the gallery.")
    async def post_enroll(
        request: Request,
        image: Annotated[UploadFile, File(description="A reference image of one person.")],
        label: Annotated[
            str | None,
            Form(max_length=200, description="The label as given (trimmed). Default: from the file name."),
        ] = None,
    ) -> dict[str, Any]:
        if label is None and "label" in await request.form():  # parsed once, cached
            label = ""  # an empty field, which FastAPI takes for none: blank, refused as one of spaces is
        named = image.filename or ""  # not held_upload's stand-in for a nameless upload: no label is made up
        async with held_upload(state, "enroll", image) as (img, _), enrolment_turn(state, turns) as wait:
            enrol = functools.partial(enroll_image, state, img, named, label, wait)
            return await anyio.to_thread.run_sync(state.counted, "enroll", enrol, limiter=enrolling)

    _add_error_answers(app, state)
    _remove_gallery_leftovers(state)
    if state.cfg.references is not None:
        _make_references(state.cfg.references)
        _record_folder(state)
        app.mount("/references", References(directory=state.cfg.references), name="references")
    return app


def _add_error_answers(app: FastAPI, state: ServiceState) -> None:
    """The answers to requests that failed: FastAPI's own 422 (counted), 409 for a file of the service's it
    cannot use (DataError), 503 while another process holds the gallery's lock (LockTimeout), 400 ValueError."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        state.refused(_endpoint(request.scope))  # FastAPI's own 422, before the endpoint could count it
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        return _error_answer(state, request, 409, exc)

    @app.exception_handler(LockTimeout)
    async def lock_timeout(request: Request, exc: LockTimeout) -> JSONResponse:
        answer = _error_answer(state, request, 503, exc)  # another process holds the gallery: try again
        answer.headers["Retry-After"] = str(math.ceil(state.cfg.lock_wait_s))
        return answer

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return _error_answer(state, request, 400, exc)


def _error_answer(state: ServiceState, request: Request, status: int, exc: Exception) -> JSONResponse:
    """The answer to a request that failed with ``exc`` (a gallery it cannot read or write, its lock file, a
    reference image it cannot keep): the problem, with the files named but not the server's folders they are
    in (``for_client``); the log has it whole."""
    logger.warning("%s %s: %s %s", request.method, request.url.path, status, exc)
    return JSONResponse(status_code=status, content={"detail": for_client(str(exc), _server_folders(state))})


_FOLDERS_OF_A_PATH = re.compile(r"(?<![\w.~-])/(?:[^/\s'\"]+/)+")  # '/srv/reid/' of '/srv/reid/g.npz'


def for_client(message: str, folders: Iterable[Path]) -> str:
    """``message`` with ``folders`` (which may hold spaces) and the folders of any other absolute path taken
    out of the paths it names, each file keeping its name: a client learns what went wrong, not where the
    service keeps its files."""
    for folder in sorted({str(f) for f in folders if str(f) not in ("", ".", "/")}, key=len, reverse=True):
        message = re.sub(rf"(?<![^\s'\"(]){re.escape(folder)}/", "", message)  # where a path starts only
    return _FOLDERS_OF_A_PATH.sub("", message)


def _server_folders(state: ServiceState) -> list[Path]:
    """The folders the service's files are in, as configured and resolved: the gallery's, the references'."""
    folders = [state.cfg.gallery.parent] if state.cfg.gallery is not None else []
    if state.cfg.references is not None:
        folders.append(state.cfg.references)
    return folders + [f.resolve() for f in folders]


def _make_references(folder: Path) -> None:
    """The references folder made (with its parents); ConfigError naming it and the option when it cannot be (a
    file of that name, no write permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot make the references folder {folder}: {e.strerror or e} (--references, serve.references)"
        ) from e


class References(StaticFiles):
    """The references folder's images as static files: 404 for its hidden files (serve's name ledger) and for
    what is no image by its name (a gallery kept there, notes)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        parts = Path(path).parts
        if any(part.startswith(".") for part in parts) or not is_image_file(Path(path)):
            raise StarletteHTTPException(404)
        return await super().get_response(path, scope)


def known_query(state: ServiceState) -> Callable[[Request], None]:
    """A route dependency: HTTPException 422 naming the query parameters the route does not take (a typo such
    as ``treshold`` would otherwise be ignored, the request answered with the defaults) or one given twice
    (FastAPI takes the last value, the first dropped without a word)."""

    def check(request: Request) -> None:
        request.scope[COUNTED] = True  # the first dependency: the body was read, the endpoint counts the rest
        route = request.scope["route"]
        known = sorted(p.alias for p in route.dependant.query_params)
        sent = Counter(name for name, _ in request.query_params.multi_items())
        unknown = sorted(set(sent) - set(known))
        twice = sorted(name for name, n in sent.items() if n > 1 and name in known)
        if unknown or twice:
            state.refused(_endpoint(request.scope))
            what = (
                f"unknown query parameter {', '.join(map(repr, unknown))}: {route.path} takes "
                f"{', '.join(known) or 'none'}"
                if unknown
                else f"query parameter {', '.join(map(repr, twice))} given more than once: give it once"
            )
            raise HTTPException(422, what)

    return check


def known_form(state: ServiceState) -> Callable[[Request], Awaitable[None]]:
    """A route dependency: HTTPException 422 naming a form field the route does not take (``lable`` for
    ``label`` would enrol the upload under its file name) or one sent twice (a second image would be answered
    in place of the first, nothing said about the other)."""

    async def check(request: Request) -> None:
        route = request.scope["route"]
        known = sorted(p.alias for p in route.dependant.body_params)
        sent = Counter(name for name, _ in (await request.form()).multi_items())  # parsed once, cached
        unknown = sorted(set(sent) - set(known))
        twice = sorted(name for name, n in sent.items() if n > 1 and name in known)
        if unknown or twice:
            state.refused(_endpoint(request.scope))
            what = (
                f"unknown form field {', '.join(map(repr, unknown))}: {route.path} takes {', '.join(known)}"
                if unknown
                else f"form field {', '.join(map(repr, twice))} sent more than once: send it once"
            )
            raise HTTPException(422, what)

    return check


def counting_route(state: ServiceState) -> type[APIRoute]:
    """The route class of the app: a request refused while its body is read, before the route's dependencies
    run (the form parser's 400 for a multipart body with no boundary or a malformed part), is counted in
    /health's requests and errors, as every other refused request is."""

    class CountingRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()
            if self.body_field is None:  # nothing read before the endpoint, which counts its own
                return handle

            async def counted(request: Request) -> Response:
                try:
                    return await handle(request)
                except StarletteHTTPException:  # the form parser raises Starlette's own
                    if not request.scope.get(COUNTED):
                        state.refused(_endpoint(request.scope))
                    raise

            return counted

    return CountingRoute


class BodyLimit:
    """ASGI middleware: reading a request body longer than ``limit`` bytes raises HTTPException 413 (a JSON
    reply naming the limit) at once when the Content-Length says so, else when the bytes received pass it,
    so such a body is never read whole (the form parser would spool any amount of it to disk)."""

    def __init__(self, app: ASGIApp, limit: int, refused: Callable[[str], None] | None = None) -> None:
        """``refused`` is told the endpoint of each request refused (as ServiceState.refused counts it)."""
        self.app, self.limit, self.refused = app, limit, refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0

        async def limited() -> Message:
            nonlocal received
            if not received and declared.isdigit() and int(declared) > self.limit:
                raise self.too_large(scope)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise self.too_large(scope)
            return message

        await self.app(scope, limited, send)

    def too_large(self, scope: Scope) -> HTTPException:
        if self.refused is not None:
            self.refused(_endpoint(scope))
            scope[COUNTED] = True
        return HTTPException(413, f"the request body is more than the limit of {self.limit} bytes")


class FormCheck:
    """ASGI middleware: reads a multipart/form-data request's body beside the form parser, with python-multipart's
    own parser (the one Starlette's drives), and raises HTTPException 400, as the body is received, for what that
    form parser takes without a word:

    * a body that ends before its closing boundary (cut off: the part it ends in would be missing, a 422
      "Field required" for an image the client did send);
    * a field's value, or a part's name or file name, that is not text in the form's charset (UTF-8 unless its
      Content-Type names another), which Starlette would read as Latin-1 ("Jos\\xe9" as "José").

    A body python-multipart cannot parse is left to the form parser, which says so (400)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reader = FormReader.of(Headers(scope=scope)) if scope["type"] == "http" else None
        if reader is None:
            await self.app(scope, receive, send)
            return

        async def checked() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                reader.feed(message.get("body", b""), more=message.get("more_body", False))
            return message

        await self.app(scope, checked, send)


SHOWN_BYTES: Final = 60
"""Bytes of a name or value a message about it shows at most."""


class FormReader:
    """A multipart/form-data body parsed as it comes (``feed``), for ``FormCheck``: its parts' names, file names
    and fields' values checked against its charset (None: one Python does not know, which Starlette reads as
    Latin-1: nothing to check), and its end."""

    def __init__(self, boundary: bytes, charset: str | None) -> None:
        self.charset, self.received = charset, 0
        self.ended = self.broken = False  # the closing boundary came; python-multipart refused the body
        self._header, self._value, self._disposition = b"", b"", b""
        self._field = ""  # the name of the field under way, while its value is checked
        self._text: codecs.IncrementalDecoder | None = None  # the field's value, for a part that is no file
        self._head, self._decoded = b"", 0  # the value's first bytes, and how many it decoded
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begins,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    @classmethod
    def of(cls, headers: Headers) -> FormReader | None:
        """The reader of a request with these headers; None where it sends no multipart/form-data with a
        boundary (the form parser answers one without: 400)."""
        kind, options = parse_options_header(headers.get("content-type", ""))
        if kind != b"multipart/form-data" or not options.get(b"boundary"):
            return None
        try:
            charset: str | None = codecs.lookup(options.get(b"charset", b"utf-8").decode("latin-1")).name
        except LookupError:
            charset = None
        return cls(options[b"boundary"], charset)

    def feed(self, data: bytes, more: bool) -> None:
        """Parse the body's next bytes; HTTPException 400 when they are its last and it was cut off, or a name
        or field in them is not in the form's charset."""
        self.received += len(data)
        if not self.broken:
            try:
                self._parser.write(data)
            except FormParserError:
                self.broken = True
        if not more and not self.broken and not self.ended:
            raise HTTPException(
                400,
                f"the multipart body ends after {self.received} bytes, inside a part, before its closing "
                "boundary: it was cut off (the client or a proxy sent less than the whole form)",
            )

    def _part_begins(self) -> None:
        self._disposition, self._text, self._head, self._decoded = b"", None, b"", 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._field = self._text_of(options.get(b"name", b""), "the name of a form field")
        if b"filename" in options:
            self._text_of(options[b"filename"], f"the file name of form field {self._field!r}")
        elif self.charset is not None:
            self._text = codecs.getincrementaldecoder(self.charset)()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._text is not None:
            self._decode(data[start:end])

    def _part_end(self) -> None:
        if self._text is not None:
            self._decode(b"", final=True)

    def _end(self) -> None:
        self.ended = True

    def _decode(self, data: bytes, final: bool = False) -> None:
        """Decode the next bytes of a field's value (its first ``SHOWN_BYTES`` kept for a message)."""
        assert self._text is not None
        if len(self._head) < SHOWN_BYTES:
            self._head += data[: SHOWN_BYTES - len(self._head)]
        try:
            self._text.decode(data, final)
        except UnicodeDecodeError as e:
            raise self._not_text(f"the form field {self._field!r}", self._head, e, self._decoded) from None
        self._decoded += len(data)

    def _text_of(self, raw: bytes, what: str) -> str:
        """``raw`` (a name, a file name) as text in the form's charset; HTTPException 400 naming ``what`` and
        the bytes when it is not."""
        if self.charset is None:
            return raw.decode("latin-1")
        try:
            return raw.decode(self.charset)
        except UnicodeDecodeError as e:
            raise self._not_text(what, raw[:SHOWN_BYTES], e, 0) from None

    def _not_text(self, what: str, head: bytes, e: UnicodeDecodeError, before: int) -> HTTPException:
        """The 400 for ``what``, which begins with ``head``, not in the form's charset (``e``, ``before`` bytes
        after its start)."""
        charset = "UTF-8" if self.charset == "utf-8" else self.charset
        return HTTPException(
            400,
            f"{what} is not {charset} text: {head!r}{'...' if len(head) == SHOWN_BYTES else ''} ({e.reason} at "
            f"byte {before + e.start}; read as Latin-1 it would be {head.decode('latin-1')!r}): send it "
            f"{charset}-encoded, or name its charset in the form's Content-Type",
        )


@contextlib.asynccontextmanager
async def enrolment_turn(state: ServiceState, turns: anyio.Semaphore) -> AsyncIterator[LockWait]:
    """One of the ``ENROLMENTS_AT_ONCE`` turns inside the block, waited for ``lock_wait_s`` at most (HTTPException
    503 with Retry-After past that, counted); the enrolment's ``LockWait``, what it waited taken from it."""
    start, wait_s = time.monotonic(), state.cfg.lock_wait_s
    with anyio.move_on_after(wait_s) as waited:
        await turns.acquire()
    if waited.cancelled_caught:
        state.refused("enroll")
        raise HTTPException(
            503,
            f"{ENROLMENTS_AT_ONCE} enrolments are at work (waiting for the gallery's lock, which another process "
            f"holds, or for the model), and this one waited {wait_s:g} s ({LOCK_WAIT}) for its turn: try again",
            headers={"Retry-After": str(math.ceil(wait_s))},
        )
    wait = LockWait(wait_s)
    wait.spend("its turn", time.monotonic() - start)
    try:
        yield wait
    finally:
        turns.release()


def _endpoint(scope: Scope) -> str:
    """The name /health counts a request under: its path without the slashes ('recognize')."""
    return str(scope["path"]).strip("/")


# ------------------------------------------------------------------------------------------- running it


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11) closing a client slow to send its request, which uvicorn holds for good:
    its headers are due within ``timeout_s`` of the connection (or of the last answer on it), however it
    trickles them, and its body may pause no longer than that (while the service reads it) nor come slower than
    ``min_rate`` bytes a second past its first ``timeout_s`` (it has ``timeout_s`` + its bytes / ``min_rate``
    seconds from its first bytes, checked as they come; the pause bound covers the time between); a body answered
    before it was read whole (413) is closed ``timeout_s`` after the answer, not taken to its end. A request in whole
    is answered however long that takes, but answers that wait that long for the client to read them (the
    socket's buffers full: it sent its requests and reads nothing, or under ``min_rate`` bytes a second of them)
    close the connection. ``timed_protocol``
    gives the subclass of a timeout."""

    timeout_s: float = 10.0
    min_rate: float = 1000.0
    _timer: asyncio.TimerHandle | None = None
    _body: tuple[float, int] | None = None  # (when the request's body began, its bytes so far)
    _unread: asyncio.TimerHandle | None = None  # armed while writing waits for the client to read
    _waiting: int | None = None  # the bytes waiting for the client when it was armed (None: not known)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.SEND_BODY:
            self._body = None
            if self.conn.their_state is not h11.IDLE:  # the request is in (or the connection is over)
                self._disarm()
        elif self.conn.our_state is h11.DONE:
            pass  # answered before its body was read (413): its time to stop sending is not put off
        elif self._too_slow(len(data)):
            self._disarm()
            self.transport.close()
        else:
            self._arm()  # a pause in the body counts from its last bytes

    def _too_slow(self, received: int) -> bool:
        """Whether the body, ``received`` bytes more of it now, comes too slowly: its bytes so far took longer
        than ``timeout_s`` and a second for each ``min_rate`` of them."""
        now = self.loop.time()
        began, size = self._body or (now, 0)
        self._body = began, size + received
        return now - began > self.timeout_s + (size + received) / self.min_rate

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._arm()  # the next request's headers are due, or the end of a body answered before it was read

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._read_again()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._unread is None:
            self._waiting = _unsent(self.transport)
            self._unread = self.loop.call_later(self.timeout_s, self._not_read)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._read_again()

    def _read_again(self) -> None:
        if self._unread is not None:
            self._unread.cancel()
            self._unread = None

    def _not_read(self) -> None:
        """Writing has waited ``timeout_s`` for the client: closed at once (a close would wait to send what the
        client does not read) unless it took ``min_rate`` bytes a second of what waits for it meanwhile (or all of
        it). The kernel says there is room to write only once much of its queue has drained, so a client
        reading steadily may wait that long for it."""
        self._unread = None
        now, before = _unsent(self.transport), self._waiting
        if (
            now is not None
            and before is not None
            and before - now >= min(before, self.min_rate * self.timeout_s)
        ):
            self._waiting = now
            self._unread = self.loop.call_later(self.timeout_s, self._not_read)
            return
        self.transport.abort()

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        state = self.conn.their_state
        if (
            state is h11.SEND_BODY and self.flow.read_paused
        ):  # the service is not reading: not the client's delay
            self._arm()
        elif state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()


def _unsent(transport: asyncio.BaseTransport) -> int | None:
    """The bytes of its answers the client has not taken: the transport's buffer and the kernel's send queue
    (Linux's SIOCOUTQ: sent but not acknowledged, or not yet sent); None where the kernel does not say."""
    sock = transport.get_extra_info("socket")
    if sock is None or not isinstance(transport, asyncio.WriteTransport):
        return None
    try:
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return None
    return int(queued) + transport.get_write_buffer_size()


def timed_protocol(timeout_s: float, min_rate: float) -> type[TimedH11Protocol]:
    """TimedH11Protocol closing slow clients after ``timeout_s`` seconds (serve.client_timeout_s), and a body
    slower than ``min_rate`` bytes a second past that (serve.client_min_rate)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"timeout_s": timeout_s, "min_rate": min_rate})


def server_config(app: FastAPI, host: str, port: int, **options: Any) -> Any:
    """The uvicorn.Config of ``app`` (made by create_app): its client timeout and body rate
    (serve.client_timeout_s, serve.client_min_rate) on top of ``options``."""
    import uvicorn

    http = timed_protocol(app.state.client_timeout_s, app.state.client_min_rate)
    return uvicorn.Config(app, host=host, port=port, http=http, **options)


class BackgroundServer:
    """uvicorn serving an app on a thread (tests, embedding in other programs); ``url`` once started."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._server = uvicorn.Server(server_config(app, host, port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start (port taken?)")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        sock = self._server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host_port(host, port)}"

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5.0)


def serve_forever(app: FastAPI, host: str, port: int, what: str = "the gallery") -> None:
    """Serve until SIGINT / SIGTERM (uvicorn handles both), saying ``what`` it serves once it listens. uvicorn's
    own log lines (start, requests, stop) go through the program's logging, so they take its level (-q) and
    format (--log-format json). ConfigError when the address cannot be listened on."""
    import uvicorn

    sock = listen(host, port)
    logger.warning("serving %s on http://%s (docs at /docs)", what, host_port(host, sock.getsockname()[1]))
    uvicorn.Server(server_config(app, host, port, log_config=None)).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (an address, or a name: its IPv4 address, else its IPv6 one, as
    ops.http binds), as uvicorn binds one; ConfigError naming the address when it cannot be had (in use, not an
    address of this machine, an unknown name)."""
    shown = host_port(host, port)
    try:
        family, address = bind_address(host, port)
    except OSError as e:
        raise ConfigError(f"cannot listen on {shown}: {e.strerror or e} (--host, serve.host)") from e
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {shown}: {e.strerror or e} (--host / --port, serve.host / serve.port)"
        ) from e
    return sock
