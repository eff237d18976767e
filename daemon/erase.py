"""Erasing forgotten global ids from a camera's files (``reid-daemon forget``).

A forget takes a person out of the fleet (Valkey, the workers' memory); this takes them out of what a camera
wrote down as well, in its folder and its ``earlier-*`` folders:

- ``identities.jsonl``: the ``identity`` lines of the id go (the ``forgotten`` line that says when stays);
- ``identities.json``: the id leaves the table;
- ``<camera>.global.txt``: the id's rows go;
- ``events.jsonl``: events of the id keep the track (its boxes, under the camera's own track id) but lose the
  global id, the label and the embedding (``"forgotten": true`` says why); so do the events of those tracks
  from before the fleet knew who they were (no global id yet, since the track started or its id last changed;
  not the events of another run, or another life, of the same track id: a restarted camera can number its
  tracks as an earlier run did);
- ``embeddings.npy``: the rows those events referenced are overwritten with zeros (row numbers stay valid),
  before the events are rewritten: an erase killed between the two leaves the references for the next to find.

Annotated videos keep their pixels: a video cannot be edited this way (the README says so).

An erase can be given a deadline (``Deadline``: a stopping worker's time, under the unit's TimeoutStopSec, or a
running worker's stop event, set by SIGTERM): it stops at the line it reads past it, the file it was reading left
as it was (each file is written whole or not at all), oldest folder first so that what is left can be erased
again to the same end, and says so (``Erased.left``). Ids
whose erase is not done wait in the camera's ``forget-pending.json`` (``PendingForgets``), written before the
erase begins: the next start, or ``reid-daemon forget`` on the stopped camera, erases them first, and a worker
killed meanwhile loses none.

Every text file is rewritten atomically (a temporary file in the folder, then a rename); a worker that holds a
file open reopens it after (``CameraOutputs.forget``). A line that is not UTF-8 text (a damaged file) is read
with its bad bytes kept as they are (``surrogateescape``): it is erased where it can still be read as a record,
else kept byte for byte, and the erase names the file and the line (``Erased.damaged``), the rest of the file
erased as any other. A line that is no record (torn by a kill or a power cut as it was written, or damaged) but
names a forgotten id as its ``global_id`` holds the person still (their id, their name after it): it is dropped
whole, and an event's embedding row it names zeroed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daemon.embedding import atomic_write
from daemon.fleet import MAX_PENDING_FORGETS, forgotten_line
from daemon.outputs import earlier_folders

MAX_NAMED_LINES = 5  # damaged lines of a file named by number in what the erase says (the rest counted)
# a global id, and an embedding's row, as this daemon's JSON lines write them: read in a line that is no record
_GLOBAL_ID = re.compile(r'"global_id":\s*(\d+)(?![\d.eE])')
_ROW = re.compile(r'"row":\s*(\d+)(?![\d.eE])')
PENDING_FILE = (
    "forget-pending.json"  # in a camera's folder: forgotten ids its files still hold (PendingForgets)
)


class UnreadableFile(OSError):
    """A camera file the erase could not read (an I/O error, no read permission): that file is left as it was.
    An OSError still, as any other failure of the erase is; ``filename`` names the file."""


class NotATable(UnreadableFile):
    """An ``identities.json`` that is not the table this daemon writes (not JSON, or its ``identities`` not an
    object of global ids: a hand edit, a damaged disk): it may hold the id, so the erase cannot say it is done.
    The camera's other files are erased first (``Erased.refused``); this is raised at the end."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(errno.EINVAL, f"not an identity table: {why}; mend it or move it away", str(path))


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """An OSError met while reading ``path`` raised as UnreadableFile naming it (a failure to write is not)."""
    try:
        yield
    except OSError as e:
        raise UnreadableFile(e.errno, e.strerror or str(e), str(path)) from e


def erase_problem(e: OSError, folder: Path) -> str:
    """What an erase that failed with ``e`` met, naming the file: ``cannot erase <file>: <why>`` for a table it
    could not read as one (NotATable), ``cannot read <file>: <why>`` for one it could not read (UnreadableFile),
    else ``cannot write <file>: <why>``."""
    verb = "erase" if isinstance(e, NotATable) else "read" if isinstance(e, UnreadableFile) else "write"
    return f"cannot {verb} {e.filename or folder}: {e.strerror or e}"


@dataclass(slots=True)
class Erased:
    """What one erase changed, summed over the folders it went through."""

    identity_lines: int = 0
    event_lines: int = 0
    embeddings: int = 0
    global_rows: int = 0
    damaged: list[str] = field(default_factory=list)  # files with lines kept as they were: which, and why
    held: set[int] = field(default_factory=set)  # the ids erased that a line, row or entry of a file held
    # the ids whose last line in the identities.jsonl files read so far (oldest first) is a forgotten line: a
    # running worker wrote it as it forgot them, before an erase that had to wait
    said: set[int] = field(default_factory=set)
    left: bool = False  # its deadline came before every folder was erased (erased again, it ends the same)
    pending: int = 0  # ids erased with it that an earlier stop left in forget-pending.json (counted in it)
    # identities.json files the erase went past, left as they were (raised once the other files are erased)
    refused: list[NotATable] = field(default_factory=list)
    # called with the ids a file holds before the file is replaced (PendingForgets keeps them: a kill after the
    # replace leaves a note of them, so the erase done again writes their forgotten line)
    keep: Callable[[set[int]], object] | None = field(default=None, repr=False, compare=False)

    def note(self, rewritten: Rewritten) -> int:
        """Keep what ``rewritten`` says of damaged lines, and the ids it held; returns its lines changed."""
        if rewritten.damage is not None:
            self.damaged.append(rewritten.damage)
        self.held |= rewritten.held
        return rewritten.changed

    @property
    def total(self) -> int:
        return self.identity_lines + self.event_lines + self.embeddings + self.global_rows

    def text(self) -> str:
        damage = "".join(f"; {d}" for d in self.damaged)
        if self.pending:
            ids = "global id" if self.pending == 1 else "global ids"
            damage = f", with {self.pending} {ids} its last stop left in {PENDING_FILE}{damage}"
        if not self.total:
            return f"no file held it{damage}"
        return (
            f"{self.identity_lines} identity lines, {self.global_rows} global-id rows and {self.event_lines} "
            f"events erased, {self.embeddings} embeddings zeroed (annotated videos keep their pixels){damage}"
        )


@dataclass(frozen=True, slots=True)
class Rewritten:
    """What ``rewrite_lines`` did to a file: lines changed, its lines that are not UTF-8 text and were kept
    as they were (None: none), and the ids erased that its lines held (where the caller says)."""

    changed: int
    damage: str | None = None
    held: frozenset[int] = frozenset()
    said: frozenset[int] = frozenset()  # identities.jsonl: the ids whose last line in it is a forgotten line

    def of(self, held: set[int], said: set[int] | None = None) -> Rewritten:
        """This, saying that the file's lines held the ids ``held`` (and ``said``: see the field)."""
        return Rewritten(self.changed, self.damage, frozenset(held), frozenset(said or ()))


def _damage(path: Path, lines: list[int]) -> str | None:
    """The note on ``path``'s lines (0-based) that are not UTF-8 text and were kept as they were."""
    if not lines:
        return None
    some = ", ".join(str(n + 1) for n in lines[:MAX_NAMED_LINES])
    if len(lines) > MAX_NAMED_LINES:
        return f"{path}: {len(lines)} lines not UTF-8 text (lines {some}, ...), kept as they were: a damaged file"
    if len(lines) > 1:
        return f"{path}: {len(lines)} lines not UTF-8 text (lines {some}), kept as they were: a damaged file"
    return f"{path}: 1 line not UTF-8 text (line {some}), kept as it was: a damaged file"


# when an erase stops: a time (monotonic), an event (a running worker's stop: once set, the erase stops at the
# line it reads), or None (it runs to its end)
Deadline = float | threading.Event | None


class OutOfTime(Exception):
    """An erase's deadline came before it was done."""


def _check(deadline: Deadline) -> None:
    if deadline is None:
        return
    if deadline.is_set() if isinstance(deadline, threading.Event) else time.monotonic() >= deadline:
        raise OutOfTime


def text_lines(path: Path) -> Iterator[tuple[bytes, str, bool]]:
    """The lines of ``path`` as written (split at ``\\n`` only), as text, and whether they are UTF-8 text; in
    one that is not, a bad byte is kept as a lone surrogate (``surrogateescape``): it still reads as a record
    where its damage leaves one."""
    with _reading(path), open(path, "rb") as f:
        for raw in f:
            try:
                yield raw, raw.decode("utf-8"), True
            except UnicodeDecodeError:
                yield raw, raw.decode("utf-8", "surrogateescape"), False


def rewrite_lines(
    path: Path,
    edit: Callable[[str], str | None],
    before: Callable[[], object] | None = None,
    deadline: Deadline = None,
) -> Rewritten:
    """Rewrite text file ``path`` line by line: ``edit`` returns the line to keep (changed or not) or None to
    drop it. Written atomically, and only when a line changed, ``before`` called first; a line kept unchanged is
    written back byte for byte (one that is not UTF-8 text too: its damage is noted). OutOfTime where
    ``deadline`` comes before the last line is read: the file is left as it was."""
    if not path.is_file():
        return Rewritten(0)
    kept: list[bytes] = []
    changed = 0
    damaged: list[int] = []
    for n, (raw, line, utf8) in enumerate(text_lines(path)):
        _check(deadline)
        new = edit(line)
        if new == line:
            kept.append(raw)
            if not utf8:
                damaged.append(n)
            continue
        changed += 1
        if new is not None:
            kept.append(new.encode("utf-8", "surrogateescape"))
    if changed:
        if before is not None:
            before()
        atomic_write(path, b"".join(kept))
    return Rewritten(changed, _damage(path, damaged))


def _record(line: str) -> dict[str, Any] | None:
    """A JSON-lines record, or None for a line that is not one (a torn last line after a crash: kept as is,
    unless it names a forgotten id: ``_torn_of``)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _of(rec: dict[str, Any] | None, gids: set[int]) -> bool:
    return rec is not None and rec.get("global_id") in gids


def _torn_of(line: str, gids: set[int]) -> set[int]:
    """Of ``gids``, those a line that is not a record names as its global id (a last line torn by a kill or a
    power cut, a damaged one): what is left of it holds the person still (their id, their name after it), and
    it is dropped whole, being no record anyone reads."""
    return {int(m.group(1)) for m in _GLOBAL_ID.finditer(line)} & gids


def erase_identity_lines(
    path: Path,
    gids: set[int],
    deadline: Deadline = None,
    keep: Callable[[set[int]], object] | None = None,
) -> Rewritten:
    """``identities.jsonl``: drop the ``identity`` lines of ``gids``; says which of them the file held, and
    which have a ``forgotten`` line after their last identity line (``Rewritten.said``). ``keep``: see
    ``Erased.keep``."""
    held: set[int] = set()
    said: set[int] = set()

    def edit(line: str) -> str | None:
        rec = _record(line)
        if rec is None:
            torn = _torn_of(line, gids)
            held.update(torn)
            return None if torn else line
        if not _of(rec, gids):
            return line
        if rec.get("event") == "forgotten":
            said.add(rec["global_id"])
        if rec.get("event") != "identity":
            return line
        held.add(rec["global_id"])
        said.discard(rec["global_id"])
        return None

    return rewrite_lines(path, edit, _keeping(keep, held), deadline).of(held, said)


def erase_table(path: Path, gids: set[int], keep: Callable[[set[int]], object] | None = None) -> Rewritten:
    """``identities.json``: the entries of ``gids`` leave the table (one that is not UTF-8 text too: its bad
    bytes are written back as ``\\udcXX`` escapes, and its damage is noted); says which of them it held
    (``keep``: see ``Erased.keep``). NotATable for a file that is not such a table, left as it was."""
    if not path.is_file():
        return Rewritten(0)
    with _reading(path):
        raw = path.read_bytes()
    text = raw.decode("utf-8", "surrogateescape")
    damaged = not _is_utf8(raw)
    doc, table = _table(path, text)
    gone = [k for k in list(table) if k.isdigit() and int(k) in gids]
    held = {int(k) for k in gone}
    for k in gone:
        del table[k]
    if gone:
        if keep is not None:
            keep(held)
        atomic_write(path, json.dumps(doc, indent=1).encode("utf-8"))
    if not damaged:
        return Rewritten(len(gone)).of(held)
    kept = "its bad bytes written back as \\udcXX escapes" if gone else "left as it was"
    return Rewritten(len(gone), f"{path}: not UTF-8 text (a damaged file): {kept}").of(held)


def _table(path: Path, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The document of identities.json ``path`` and its ``identities`` object; NotATable, saying what it is,
    where the file is not one."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise NotATable(path, "not JSON") from None
    if not isinstance(doc, dict):
        raise NotATable(path, f"a JSON {type(doc).__name__}, not an object")
    table = doc.get("identities")
    if not isinstance(table, dict):
        what = "missing" if table is None else f"a {type(table).__name__}"
        raise NotATable(path, f'its "identities" is {what}, not an object of global ids')
    return doc, table


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def erase_global_rows(
    path: Path,
    gids: set[int],
    deadline: Deadline = None,
    keep: Callable[[set[int]], object] | None = None,
) -> Rewritten:
    """A ``<camera>.global.txt``: drop the rows whose id (second column) is one of ``gids`` (``keep``: see
    ``Erased.keep``)."""
    held: set[int] = set()

    def edit(line: str) -> str | None:
        cells = line.split(",", 2)
        try:
            gid = int(float(cells[1])) if len(cells) > 2 else None
        except ValueError:
            return line
        if gid not in gids:
            return line
        held.add(gid)
        return None

    return rewrite_lines(path, edit, _keeping(keep, held), deadline).of(held)


def _keeping(keep: Callable[[set[int]], object] | None, held: set[int]) -> Callable[[], object] | None:
    """The ``before`` of a rewrite: ``keep`` called with the ids its lines held (``Erased.keep``)."""
    return None if keep is None else lambda: keep(held)


def pending_lines(folders: list[Path], gids: set[int], deadline: Deadline = None) -> dict[Path, set[int]]:
    """Per folder (oldest first), the line numbers in its ``events.jsonl`` of events with no global id yet
    whose track's next global id is one of ``gids``: who they were before the fleet knew. Such a run of events
    starts after the track's latest global id, or at its ``track.started`` (a restarted run, or a track re-linked,
    can number a track as before; rotated files go on without one), and ends at its ``track.ended``. OutOfTime
    where ``deadline`` (``Deadline``) comes before the last line is read."""
    pending: dict[int, list[tuple[Path, int]]] = {}
    doomed: dict[Path, set[int]] = {}
    for folder in folders:
        path = folder / "events.jsonl"
        _check(deadline)
        if not path.is_file():
            continue
        for n, (_, line, _) in enumerate(text_lines(path)):
            _check(deadline)
            rec = _record(line)
            if rec is not None and isinstance(rec.get("track_id"), int):
                _follow(rec, (folder, n), gids, pending, doomed)
    return doomed


def _follow(
    rec: dict[str, Any],
    at: tuple[Path, int],
    gids: set[int],
    pending: dict[int, list[tuple[Path, int]]],
    doomed: dict[Path, set[int]],
) -> None:
    """``pending_lines``' step for the event ``rec`` at ``at`` (folder, line): a ``track.started`` or
    ``track.ended`` begins or ends a life of its track, the events it had pending before are nobody's it names
    (another life's, another run's: left as they are); a global id names the track's pending events since
    (``doomed`` where it is one of ``gids``); an event with no global id yet is pending."""
    track, event, gid = rec["track_id"], rec.get("event"), rec.get("global_id")
    if event in ("track.started", "track.ended"):
        pending.pop(track, None)
    elif gid is not None:
        before = pending.pop(track, [])
        if gid in gids:
            for where, line_no in before:
                doomed.setdefault(where, set()).add(line_no)
    if gid is None and "global_id" in rec:
        pending.setdefault(track, []).append(at)


def _torn_event(line: str, gids: set[int], held: set[int], rows: list[int]) -> str | None:
    """``erase_events``' edit of a line that is no record: dropped where it names one of ``gids`` (``_torn_of``),
    those ids kept in ``held`` and the embedding rows it names in ``rows`` (zeroed); else kept as it is."""
    torn = _torn_of(line, gids)
    if not torn:
        return line
    held.update(torn)
    rows.extend(int(m.group(1)) for m in _ROW.finditer(line))
    return None


def erase_events(
    path: Path,
    gids: set[int],
    pending: set[int],
    embeddings: Path,
    deadline: Deadline = None,
    keep: Callable[[set[int]], object] | None = None,
) -> tuple[Rewritten, int]:
    """``events.jsonl``: events of ``gids``, and the events on lines ``pending`` (with no global id yet: see
    ``pending_lines``), lose their global id, label and embedding; the rows they referenced in ``embeddings``
    are zeroed first (again, where an erase killed before the rewrite did it already), so that no kill leaves
    a row no event points to any more unzeroed (``keep``, see ``Erased.keep``, called before both). Returns the
    lines changed and the rows zeroed."""
    rows: list[int] = []
    zeroed = 0
    held: set[int] = set()
    line_no = -1

    def edit(line: str) -> str | None:
        nonlocal line_no
        line_no += 1
        rec = _record(line)
        if rec is None:
            return _torn_event(line, gids, held, rows)
        if "global_id" not in rec:
            return line
        if not (_of(rec, gids) or (rec["global_id"] is None and line_no in pending)):
            return line
        ref = rec.get("embedding")
        if isinstance(ref, dict) and isinstance(ref.get("row"), int):
            rows.append(ref["row"])
        if rec["global_id"] is None and ref is None:
            return line  # nothing of the person in it
        if rec["global_id"] is not None:
            held.add(rec["global_id"])
        rec |= {"global_id": None, "label": None, "embedding": None, "forgotten": True}
        return json.dumps(rec, separators=(",", ":")) + "\n"

    def zero() -> None:
        nonlocal zeroed
        if keep is not None:
            keep(held)
        zeroed = zero_embedding_rows(embeddings, rows)

    rewritten = rewrite_lines(path, edit, zero, deadline)
    return rewritten.of(held), zeroed


def zero_embedding_rows(path: Path, rows: Iterable[int]) -> int:
    """Overwrite ``rows`` of the ``.npy`` file ``path`` with zeros, in place; rows past its end are skipped."""
    wanted = sorted(set(rows))
    if not wanted or not path.is_file():
        return 0
    try:
        table = np.load(path, mmap_mode="r+")
    except (ValueError, EOFError):  # empty or cut before its header was written (a worker killed at once)
        return 0
    except OSError:  # opened to be written in place: a file that cannot be read at all is said to be that
        with _reading(path), open(path, "rb") as f:
            f.read(1)
        raise
    inside = [r for r in wanted if 0 <= r < table.shape[0]]
    if inside:
        table[inside] = 0
        table.flush()
    del table
    return len(inside)


def folders_of(camera_dir: Path) -> list[Path]:
    """A camera's folder and its ``earlier-*`` folders (kept runs, rotated files), those oldest first."""
    if not camera_dir.is_dir():
        return []
    return [camera_dir, *earlier_folders(camera_dir)]


def erase_folder(
    folder: Path, gids: set[int], pending: set[int], erased: Erased, deadline: Deadline = None
) -> None:
    """Erase ``gids`` from the camera files in one folder (none of them open for writing), counted in
    ``erased`` file by file: where a file raises, what the files before it changed is there still. OutOfTime
    where ``deadline`` (``Deadline``) comes first: the file it was reading is left as it was (each is written
    whole), the files before it erased (the events' embedding rows are zeroed as their file is written)."""
    keep = erased.keep
    lines = erase_identity_lines(folder / "identities.jsonl", gids, deadline, keep)
    erased.said = (erased.said - lines.held) | lines.said  # a newer folder's word is the last
    erased.identity_lines += erased.note(lines)
    _check(deadline)
    try:
        erased.note(erase_table(folder / "identities.json", gids, keep))
    except NotATable as e:  # the other files are erased still; said at the end
        erased.refused.append(e)
    events, zeroed = erase_events(
        folder / "events.jsonl", gids, pending, folder / "embeddings.npy", deadline, keep
    )
    erased.embeddings += zeroed
    erased.event_lines += erased.note(events)
    for mot in folder.glob("*.global.txt"):
        erased.global_rows += erased.note(erase_global_rows(mot, gids, deadline, keep))


def erase_camera(
    camera_dir: Path, global_ids: Iterable[int], deadline: Deadline = None, erased: Erased | None = None
) -> Erased:
    """Erase ``global_ids`` from every file a camera left in ``camera_dir`` and its ``earlier-*`` folders, all
    of them in one pass over each file (a stopping worker can have thousands waiting). The folders are erased
    oldest first, the camera's own last, and with a ``deadline`` (``Deadline``) the erase stops at the line it
    reads past it, the file it was reading left as it was (the erase then says ``left``): the events of a track
    from before its global id come before it, so an erase cut short leaves the id where the next one finds
    those events again. Counted in ``erased`` where given: a file that
    raises leaves there what was erased before it (the ids the files rewritten held). An identities.json that
    is not a table is gone past, and raised (NotATable, the first) once the other files are erased."""
    gids = set(global_ids)
    folders = folders_of(camera_dir)
    oldest_first = [*folders[1:], *folders[:1]]
    erased = Erased() if erased is None else erased
    try:
        pending = pending_lines(oldest_first, gids, deadline)
        for folder in oldest_first:
            _check(deadline)
            erase_folder(folder, gids, pending.get(folder, set()), erased, deadline)
    except OutOfTime:
        erased.left = True
    if erased.refused:
        raise erased.refused[0]
    return erased


def erase_stopped_camera(
    camera_dir: Path,
    camera: str,
    global_ids: Iterable[int],
    now: float,
    deadline: Deadline = None,
    held: Iterable[int] = (),
    erased: Erased | None = None,
) -> Erased:
    """``erase_camera`` for a camera whose files are closed (stopped, or a worker on its way out), and, for each
    id its files held (``Erased.held``, with ``held``: those an erase cut short found before), a ``forgotten``
    line in its ``identities.jsonl``, as a running worker writes (no frame: the camera was not running); in the
    order of ``global_ids``, as erasing them one by one would leave them. None for an id whose last line there
    is its forgotten line already (``Erased.said``: a running worker's, whose erase had to wait). An erase its
    ``deadline`` cut short (``Erased.left``) writes none yet. ``erased``: as ``erase_camera``'s."""
    gids = list(dict.fromkeys(global_ids))
    erased = erase_camera(camera_dir, gids, deadline, erased)
    erased.held |= set(held) & set(gids)
    path = camera_dir / "identities.jsonl"
    if erased.held and not erased.left and path.is_file():
        torn = not _ends_a_line(path)
        with open(path, "a", encoding="utf-8") as f:
            unsaid = erased.held - erased.said
            f.write("\n" if torn else "")
            f.writelines(forgotten_line(camera, gid, None, now) for gid in gids if gid in unsaid)
    return erased


def _ends_a_line(path: Path) -> bool:
    """Whether text file ``path`` is empty or ends with a newline: not with a last line a kill tore, which a line
    appended would join (neither then read as a record)."""
    with _reading(path), open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"


@dataclass(frozen=True, slots=True)
class PendingForgets:
    """A camera's ``forget-pending.json``: the forgotten ids its files may still hold (oldest first, at most
    MAX_PENDING_FORGETS), and those of them an erase cut short found in a file (their ``forgotten`` line is
    written once the erase is done). Written atomically, before an erase that may not finish begins, so a stop
    out of time, or a kill, loses none; the next erase of the camera's files does them first."""

    camera_dir: Path

    @property
    def path(self) -> Path:
        return self.camera_dir / PENDING_FILE

    def read(self) -> tuple[list[int], set[int]]:
        """The ids waiting and those held; none without the file. UnreadableFile for one this did not write."""
        if not self.path.is_file():
            return [], set()
        with _reading(self.path):
            raw = self.path.read_bytes()
        try:
            doc = json.loads(raw)
            ids, held = doc["ids"], doc["held"]
            if all(type(g) is int for g in [*ids, *held]):
                return list(dict.fromkeys(ids)), set(held)
        except (ValueError, KeyError, TypeError):
            pass
        raise UnreadableFile(errno.EINVAL, "not a list of pending forgotten ids", str(self.path))

    def write(self, ids: list[int], held: set[int]) -> None:
        """Keep ``ids`` (the newest MAX_PENDING_FORGETS) waiting, or remove the file where none is left."""
        ids = ids[-MAX_PENDING_FORGETS:]
        if not ids:
            self.path.unlink(missing_ok=True)
            return
        doc = {"ids": ids, "held": sorted(held & set(ids))}
        try:
            atomic_write(self.path, json.dumps(doc, separators=(",", ":")).encode("utf-8"))
        except OSError as e:  # named by its temporary file: the one to name is this
            raise type(e)(e.errno, e.strerror, str(self.path)) from e

    def add(self, global_ids: Iterable[int]) -> list[int]:
        """``global_ids`` wait too (after those waiting already); returns every id waiting now."""
        ids, held = self.read()
        ids = list(dict.fromkeys([*ids, *global_ids]))
        self.write(ids, held)
        return ids[-MAX_PENDING_FORGETS:]

    def remove(self, global_ids: Iterable[int]) -> None:
        """``global_ids`` wait no more (erased while their camera ran); the file goes where none is left."""
        if not self.path.is_file():
            return
        ids, held = self.read()
        gone = set(global_ids)
        self.write([g for g in ids if g not in gone], held - gone)

    def erase(self, camera: str, now: float, deadline: Deadline = None) -> Erased:
        """Erase the ids waiting from the camera's closed files (``erase_ids``)."""
        ids, held = self.read()
        if not ids:
            return Erased()
        return self.erase_ids(camera, ids, held, now, deadline)

    def keeper(self, ids: list[int], held: set[int]) -> Callable[[set[int]], None]:
        """An ``Erased.keep`` that, before a file holding ids not known to be held is replaced, keeps ``ids``
        waiting here with them (``held``: those known already). Where this file cannot be written, its OSError,
        naming it, is raised and the file is not replaced: an erase gone on without the note could leave no
        word that the id was there."""
        known = set(held)

        def keep(found: set[int]) -> None:
            if found - known:
                self.write(ids, known | found)
                known.update(found)

        return keep

    def erase_ids(
        self, camera: str, ids: list[int], held: set[int], now: float, deadline: Deadline = None
    ) -> Erased:
        """``erase_stopped_camera`` of ``ids`` (``held``: those an erase cut short found before); the file goes
        once they are erased, else keeps them with those found so far. Before a file holding ids not known to be
        held is replaced, ``ids`` are kept waiting here with them (``Erased.keep``): an erase that fails partway
        (a file it cannot read or write: its OSError raised), or is killed, leaves a note of the ids the files it
        rewrote held, and the erase that ends it writes their ``forgotten`` line (those files hold them no more).
        Where this file cannot be written, the file about to be replaced is not (``keeper``)."""
        keep = self.keeper(ids, held)
        erased = erase_stopped_camera(self.camera_dir, camera, ids, now, deadline, held, Erased(keep=keep))
        self.write(ids if erased.left else [], erased.held)
        return erased
