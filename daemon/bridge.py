"""The Valkey bridge: every camera worker publishes its tracks' exemplar embeddings to the fleet and receives
the other cameras' — live through pub/sub, and from stored state when it starts late or reconnects.

Messages (daemon/fleet_wire.py)
    ``publish(FleetMessage)`` queues one message; a sender thread writes what is queued in signed batches (one
    codec blob, HMAC-SHA256 with the fleet key, per round trip). Receivers get one ``FleetMessage`` per track
    again. A receiver rejects, counts by reason (``Bridge.stats.rejected``) and logs at most once per
    ``log_every_s`` what is unsigned, forged (wrong key, tampered), malformed, oversized, stale (sent more than
    ``max_age_s`` ago; ``state_ttl_s`` for catch-up), from the future (beyond ``max_clock_skew_s``), of an
    unknown version, or (a fleet worker's, ``peers``) from a camera its config does not list. Nothing a peer,
    or anyone who reaches Valkey, sends can raise out of the receiver thread. Send times are stamped and judged
    on the fleet's clock, Valkey's (daemon/clocks.py), so a host whose wall clock stepped neither refuses its
    peers nor is refused by them.
    A peer whose live batches are accepted but all arrive more than ``lag_warn_s`` after they were sent by its
    host's wall clock (each batch carries it beside the fleet's; the fleet link gives identity.claim_ttl_s) is
    named, with the least delay of its last ``LAG_WINDOW`` batches, in ``Bridge.stats.lagging`` and logged,
    for as long as it is heard from at least every ``lag_warn_s``; one whose batches all arrive more than
    ``max_clock_skew_s`` before they were sent is named alike, with the most of those leads, in
    ``Bridge.stats.leading``. Its host's clock is that far off this one's: what it says to the fleet is on the
    fleet's clock, but the times in its files (events' ``ts``, its video) are not.
    Messages are deduplicated per sender by their signed sequence numbers (a starting receiver takes them from
    the stored batches of the last ``max_age_s`` it could not hear, so a captured batch replayed on the channel
    is a duplicate after a restart too); own messages are skipped (before decoding: the live payload names its
    sender).

Stored state and key layout (daemon/fleet_store.py)
    Per camera, under one hash tag ``{fleet/camera}`` (one Cluster slot, so each publish and each snapshot is
    one atomic script, while different cameras spread over the Cluster): a *stream* of every batch the camera
    sent, and *hashes* that map each live track to the batch holding its latest profile. Fleet-wide keys
    (global-id counter, camera registry, the pub/sub channel, and per forgotten id a hash of what each camera
    said of its forget, daemon/erase_ack.py, expiring after ``forget_ack_ttl_s``; every forget, kept for
    ``forget_keep_s``) share ``{fleet}``.

Why a stream *and* hashes
    The stream is the ordered log: a worker that lost its connection replays it from the last entry id it saw
    (every live payload carries its stream id), so it misses nothing published meanwhile, forget tombstones
    included; it is bounded (MAXLEN ~) and expires (MINID ~, EXPIRE). But replaying a log on a cold start would
    hand over every update of every track of the last hour; the hashes hold just the latest profile of each
    track still alive (pruned after ``state_ttl_s``), which is what a new worker needs. So a worker starts from
    the hashes (one script per camera: state plus the matching stream position), then follows pub/sub; after
    a disconnection it replays the streams from where it stopped (and takes the hashes again when the stream
    was trimmed past that point).

Forgets sent while a worker was not running
    A worker that starts cold takes the cameras' hashes, not their streams, so a forget published while it was
    down (or trimmed from a stream before its reconnection replayed it) would never reach it, and its camera's
    files would keep the person. So each forget is also appended, as the signed batch it was sent in, to one
    fleet-wide stream (``FleetKeys.forgets``: at most MAX_STORED_FORGETS, trimmed past ``forget_keep_s``, and
    expiring alike). A fleet worker's bridge (``stored_forgets``) reads it at each catch-up, from where its
    camera last marked that it applied them all (``mark_forgets_applied``: a field per camera, signed with the
    fleet key like what it says of forgets, daemon/erase_ack.py), and at each resync, which brings the copies of
    forgets heard live (duplicates by their sender and number), so the mark passes them too. Only batches signed
    with a key this bridge takes, from a camera it takes, sent within ``forget_keep_s`` are delivered; the rest
    are refused and counted as live ones (a stale one silently: trimmed by time). A mark that is not the
    camera's, signed, is logged and every stored forget taken again (harmless: an erase done again).

Pub/sub delivers at most once
    A live message can be lost without the subscription dropping: a link between Cluster nodes not yet up (or
    down a while), a server that shed its output buffer. So every ``resync_s`` the receiver asks each known
    camera's stream for one entry past the last it saw (an empty reply in the common case: one small command
    per camera, in one round trip) and replays those that have more, up to the entries older than a second,
    by the clock of the server holding the stream (a Cluster's nodes each have theirs; the registry is read by
    its own node's) or as this host saw the stream (stream ids are the server's time, kept increasing:
    after its clock stepped back they run ahead of it, and its clock alone left them to pub/sub until it
    caught up). A camera in the registry at two resyncs running that it has never heard of is caught up from
    its hashes; one no longer in it (nothing published for ``state_ttl_s``: its stream has expired) is let go
    of, so the work and memory of a resync follow the fleet's cameras as they are now, not every camera ever
    heard of. What this brings in is counted as ``recovered``.

Why pub/sub for live peers (and not XREAD BLOCK)
    Pub/sub delivers every camera's batches over one connection and one subscription, on one node or across a
    Cluster, without polling N streams; one XREAD BLOCK over many streams cannot span Cluster slots. On loopback
    both wake within a fraction of a millisecond (benchmarks/bridge_bench.py measures them side by side).

Valkey away
    ``publish`` never blocks and never raises for a connection problem: messages wait in a bounded backlog
    (``backlog_size``; beyond it the oldest are dropped and counted) that the sender writes when Valkey is back;
    it reconnects with capped exponential backoff. ``forget`` requests wait in their own queue (never dropped)
    behind what was published before them, and what the camera says of forgets (``say_of_forgets``) in one of
    its own (``backlog_size``, the newest kept). ``allocate_global_id`` needs Valkey (BridgeError when away).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import random
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any, Literal, cast, get_args

from daemon import codec
from daemon.clocks import SharedClock
from daemon.config import BridgeConfig, redact, valkey_url_problem, warn_if_key_open
from daemon.erase_ack import EraseAck, UntrustedAck, decode_ack, decode_applied, encode_applied
from daemon.errors import ConfigError, DaemonError
from daemon.fleet_store import (
    ERASE_LUA,
    PUBLISH_LUA,
    RECORD_FORGET_LUA,
    REGISTER_LUA,
    REWRITE_LUA,
    SNAPSHOT_LUA,
    FleetKeys,
)
from daemon.fleet_wire import (
    MAX_SENDER_CHARS,
    NAME,
    Batch,
    FleetMessage,
    MessageKind,
    MessageRejected,
    RejectReason,
    batch_meta_bytes,
    decode_batch,
    decode_message,
    encode_batch,
    encode_message,
    freshness,
    item_meta_bytes,
    with_fields,
)
from daemon.valkey_server import EmbeddedValkey

__all__ = [
    "Backoff",
    "Batch",
    "Bridge",
    "BridgeError",
    "BridgeStats",
    "FleetKeys",
    "FleetMessage",
    "MessageKind",
    "MessageRejected",
    "Rejections",
    "connect",
    "decode_batch",
    "decode_message",
    "encode_batch",
    "encode_message",
    "freshness",
    "signing_key",
    "stream_entries",
    "valkey_errors",
]

logger = logging.getLogger(__name__)

MIN_KEY_BYTES = 16
REGISTRY_REFRESH_S = 1.0  # a publishing camera refreshes its entry in the fleet registry this often
CATCHUP_PAGE = 200  # stream entries (batches) per XRANGE while replaying
ERASE_PAGE = 1000  # stream entries a forget script scans per call (bounds the time Valkey is busy)
MAX_SENDERS = 65_536  # senders whose last sequence number is remembered (LRU)
MAX_FORGOTTEN = 65_536  # forgotten global ids remembered, so late profiles of them are dropped
MAX_STORED_FORGETS = 10_000  # forgets kept for workers that were not running (MAXLEN ~ of their stream)
RESYNC_GRACE_MS = 1000  # the resync leaves younger stream entries to pub/sub (they may be on their way)
MAX_RESYNC_MARKS = 64  # unheard stream entries remembered per camera from past resyncs (_resync_end)
MAX_SEQ = 2**64 - 1  # the largest sequence number of a stream id
LAG_WINDOW = 8  # a peer's latest live batches whose least delay says how far behind its clock runs
MAX_LAG_PEERS = 1_024  # peer cameras whose delays are kept (LRU)
MAX_LOG_KEYS = 1_024  # rate-limited warnings (some per peer camera) whose last report is kept (LRU)
LIVE_POLL_S = 0.1  # the receiver wakes this often to notice close()
_STREAM_ID = re.compile(rb"^\d{1,20}-\d{1,20}$")
# the names the fleet's tools publish under (`reid-daemon forget`), taken from whatever cameras a config lists
FORGET_CAMERA = "forget-cli"
TOOL_CAMERAS = (FORGET_CAMERA,)
# why a received batch was refused: what decoding finds, or (``unlisted``) a camera the worker's config does not
# list (the bridge's ``peers``)
BridgeRejectReason = Literal[RejectReason, "unlisted"]


ALLOCATE_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[2]) then redis.call('SET', KEYS[1], ARGV[2]) end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


class BridgeError(DaemonError):
    """The bridge cannot do what was asked (Valkey unreachable for an id, a full forget queue)."""


def signing_key(cfg: BridgeConfig) -> bytes | None:
    """The fleet key of ``cfg`` (None only with allow_unsigned); ConfigError when missing, unreadable, short."""
    if cfg.signing_key is None:
        if cfg.allow_unsigned:
            return None
        raise ConfigError(
            "bridge.signing_key is not set: give the fleet key (signing_key: {env: NAME} | {credential: NAME} | "
            "{value: ...}), or set bridge.allow_unsigned: true for a local experiment"
        )
    key = cfg.signing_key.resolve("bridge.signing_key")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"bridge.signing_key: the fleet key is {len(key)} bytes; use at least {MIN_KEY_BYTES}"
        )
    return key


def accepted_keys(cfg: BridgeConfig) -> tuple[bytes, ...]:
    """The keys of ``bridge.accept_keys`` (a key rotation); ConfigError naming one missing, unreadable, short."""
    keys: list[bytes] = []
    for i, source in enumerate(cfg.accept_keys):
        key = source.resolve(f"bridge.accept_keys[{i}]")
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"bridge.accept_keys[{i}]: the key is {len(key)} bytes; use at least {MIN_KEY_BYTES}"
            )
        keys.append(key)
    return tuple(keys)


# ------------------------------------------------------------------------------------------------ client


def _refusal_in(error: BaseException) -> BaseException | None:
    """Valkey refusing the credentials or the ACL user's permissions, in a command or inside one of the
    bridge's scripts (a key or the channel the user may not touch): waiting does not help. A Cluster client wraps
    the refusal of the node it asked in ValkeyClusterException, twice when it was reading the slot map ('Cluster
    mode is not enabled on this node'); the refusal is found under them. None: no refusal."""
    import valkey.exceptions as ve

    found: BaseException | None = error
    for _ in range(4):
        if not isinstance(found, ve.ValkeyClusterException):
            break
        found = found.__cause__ or found.__context__
    if isinstance(found, (ve.AuthenticationError, ve.AuthorizationError, ve.NoPermissionError)):
        return found
    if isinstance(found, ve.ResponseError) and str(found).startswith("ACL failure in script"):
        return found
    return None


def valkey_errors() -> tuple[type[BaseException], ...]:
    """What valkey-py raises when Valkey is away or answers with an error: a Cluster client says that no node
    answers with ValkeyClusterException, which is no ValkeyError."""
    import valkey.exceptions as ve

    return (ve.ValkeyError, ve.ValkeyClusterException, OSError)


def connect(cfg: BridgeConfig, url: str, password: bytes | None = None) -> Any:
    """A valkey-py client (or Cluster client) for ``url`` with the timeouts, AUTH and TLS settings of ``cfg``.

    Connections are opened lazily by valkey-py; retries are off (the bridge has its own backoff), on a Cluster
    too: a command whose node does not answer fails after one timeout, as on one node (valkey-py's Cluster
    client tried it 4 times). When no node answers, the Cluster client also asks each other node for the slot
    map before it fails (a timeout each where they stall; at once where they refuse).
    """
    import valkey
    from valkey.backoff import NoBackoff
    from valkey.cluster import ValkeyCluster
    from valkey.retry import Retry

    url = _tls_url(cfg, url)
    kwargs: dict[str, Any] = {
        "socket_timeout": cfg.socket_timeout_s,
        "socket_connect_timeout": cfg.connect_timeout_s,
    }
    if not url.startswith("unix://"):
        kwargs["socket_keepalive"] = True
    if cfg.username is not None:
        kwargs["username"] = cfg.username
    if password is not None:  # bytes, as Valkey's passwords are: a credential file need not hold UTF-8
        kwargs["password"] = password
    if url.split("://", 1)[0] in ("rediss", "valkeys"):
        kwargs.update(_tls_kwargs(cfg))
    try:
        if cfg.cluster:
            return ValkeyCluster.from_url(  # type: ignore[no-untyped-call]
                url, retry=Retry(NoBackoff(), 0), cluster_error_retry_attempts=0, **kwargs
            )
        return valkey.Valkey.from_url(url, retry=Retry(NoBackoff(), 0), **kwargs)
    except ValueError as e:  # a malformed URL (port, database, query option): a setting to fix, not an outage
        raise ConfigError(f"bridge.url {redact(url)!r}: {e}") from e


def _tls_url(cfg: BridgeConfig, url: str) -> str:
    problem = valkey_url_problem(url)
    if problem is not None:
        raise ConfigError(f"bridge.url: {problem}")
    scheme, _, rest = url.partition("://")
    if not cfg.tls.enabled:
        return url
    if scheme == "unix":
        raise ConfigError("bridge.tls.enabled is set but bridge.url is a unix socket (TLS needs TCP)")
    return {"redis": "rediss", "valkey": "valkeys"}.get(scheme, scheme) + "://" + rest


def _tls_kwargs(cfg: BridgeConfig) -> dict[str, Any]:
    tls = cfg.tls
    for name in ("ca", "cert", "key"):
        path = getattr(tls, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"bridge.tls.{name}: file not found: {path}")
    if tls.key is not None:
        warn_if_key_open(tls.key, "bridge.tls.key")
    out: dict[str, Any] = {
        "ssl_cert_reqs": "required" if tls.verify else "none",
        "ssl_check_hostname": tls.verify,
    }
    if tls.ca is not None:
        out["ssl_ca_certs"] = str(tls.ca)
    if tls.cert is not None and tls.key is not None:
        out["ssl_certfile"], out["ssl_keyfile"] = str(tls.cert), str(tls.key)
    return out


def _server_ms(client: Any, key: str) -> int:
    """The server's time (ms) on the node that holds ``key``: what its scripts score and its stream ids are
    made of. A Cluster's nodes each read their own clock (a Cluster client would ask its default node)."""
    sec, usec = client.time(**_on_node_of(client, key))
    return int(sec) * 1000 + int(usec) // 1000


def _server_s(client: Any, key: str) -> float:
    """``_server_ms`` in seconds, to the microsecond."""
    sec, usec = client.time(**_on_node_of(client, key))
    return int(sec) + int(usec) / 1e6


def _on_node_of(client: Any, key: str) -> dict[str, Any]:
    """The arguments that send a keyless command to the node holding ``key``: none on one node."""
    if hasattr(client, "get_node_from_key"):  # a Cluster client
        return {"target_nodes": client.get_node_from_key(key)}
    return {}


class _ServerClocks:
    """The server's time on the nodes of a Cluster (the one node's otherwise), each read once and kept: a
    resync reads the time of every node holding a stream it replays."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._ms: dict[str, int] = {}

    def ms(self, key: str) -> int:
        """The server's time (ms) on the node holding ``key``, as it was first read here."""
        node = _on_node_of(self._client, key).get("target_nodes")
        name = "" if node is None else str(node.name)
        if name not in self._ms:
            self._ms[name] = _server_ms(self._client, key)
        return self._ms[name]


def _stream_id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _resumable(stream_id: str) -> bool:
    """Whether a stream can be read on past ``stream_id`` (a well-formed id): both its numbers within Valkey's
    64 bits, and not the last id of all (Valkey refuses a range that starts past it)."""
    ms, seq = _stream_id_key(stream_id)
    return ms <= MAX_SEQ and seq <= MAX_SEQ and (ms, seq) != (MAX_SEQ, MAX_SEQ)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


# ------------------------------------------------------------------------------------------------ helpers


class Backoff:
    """Capped exponential delays: initial, 2x, 4x ... up to ``maximum``; ``jitter`` scales each into [d/2, d]."""

    def __init__(self, initial: float, maximum: float, jitter: bool = True) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial, self.maximum, self.jitter = initial, maximum, jitter
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay

    def reset(self) -> None:
        self._next = self.initial


class _RateLimitedLog:
    """One warning per key per ``every_s``; the ones held back are counted into the next. Bounded: the
    ``MAX_LOG_KEYS`` most recently reported keys are kept (a key may name a peer camera)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: OrderedDict[str, float] = OrderedDict()  # least recently reported first
        self._held: dict[str, int] = {}

    def warn(self, key: str, text: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > MAX_LOG_KEYS:
            oldest, _ = self._last.popitem(last=False)
            self._held.pop(oldest, None)
        suffix = f" ({held} more like this since the last report)" if held else ""
        logger.warning(text + suffix, *args)


@dataclass(frozen=True)
class Rejections:
    """Received messages rejected, by reason."""

    unsigned: int = 0
    forged: int = 0
    malformed: int = 0
    oversized: int = 0
    stale: int = 0
    future: int = 0
    version: int = 0
    unlisted: int = 0  # from a camera the worker's config does not list (Bridge's peers)

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class BridgeStats:
    """Counters of one bridge since it started (a snapshot; ``Bridge.stats`` makes a new one)."""

    connected: bool  # the sender holds a working connection
    last_error: str  # the latest failure talking to Valkey ("" if none yet): why it is not connected
    subscribed: bool  # the receiver is subscribed and caught up
    published: int  # messages accepted by publish() / forget()
    sent: int  # messages written to Valkey
    backlog: int  # messages waiting to be written now
    dropped: int  # messages dropped because the backlog was full (the oldest go)
    unsendable: int  # messages that could not be encoded within max_message_bytes
    received: int  # messages delivered (live and catch-up)
    caught_up: int  # of those, delivered by a catch-up (state snapshot or stream replay)
    recovered: int  # of those, found by the periodic resync: lost on pub/sub while subscribed
    own: int  # own batches that came back, skipped (recognised by sender id before decoding)
    duplicates: int  # messages seen before (same sender and sequence number)
    forgotten: int  # profiles of a forgotten global id dropped
    inbox_dropped: int  # delivered messages dropped because nobody called receive() in time
    callback_errors: int  # on_message raised (logged)
    reconnects: (
        int  # working connections lost (sender or receiver): once per loss, however long Valkey is away
    )
    reconnect_failures: int  # tries that failed without a working connection (Valkey away, a refusal)
    erased: int  # stream entries and track states deleted by forget
    other_key: int  # messages signed with one of bridge.accept_keys, not the fleet key (a key rotation)
    rejected: Rejections
    # peer camera -> seconds its last LAG_WINDOW live batches all arrived after they were sent (the least of
    # them), for peers over lag_warn_s heard from within lag_warn_s: their hosts' clocks lag (NTP), and so do
    # the times in their files
    lagging: dict[str, float] = field(default_factory=dict)
    # peer camera -> seconds its last LAG_WINDOW live batches all arrived before they were sent (the most of
    # them), for peers over bridge.max_clock_skew_s heard from within lag_warn_s: their hosts' clocks lead
    leading: dict[str, float] = field(default_factory=dict)


_COUNTERS = tuple(
    f.name
    for f in fields(BridgeStats)
    if f.name not in ("connected", "last_error", "subscribed", "backlog", "rejected", "lagging", "leading")
)


# ------------------------------------------------------------------------------------------------ bridge


MessageCallback = Callable[[FleetMessage], None]


class Bridge:
    """One camera's connection to the fleet (see the module docstring).

    ``start()`` connects (starting an embedded Valkey when ``cfg.url`` is null), announces the camera with a
    ``hello`` and catches up; ``publish`` / ``forget`` queue messages for the sender thread; received messages
    go to ``on_message`` (called on the receiver thread; keep it short) or, without one, to a bounded inbox
    read with ``receive`` / ``drain``. ``receive=False`` makes a publish-only bridge (no receiver thread: tools,
    simulated cameras); ``observe=True`` a receive-only one that writes nothing to Valkey (no hello, no sender,
    the stored state read with plain commands: ``who`` with a read-only ACL user). Thread-safe. A context
    manager (``close`` on exit). ``lag_warn_s``: a peer whose live batches all arrive later than this after
    they were sent is reported in ``stats.lagging`` while it is heard from (within this), and logged, one whose
    batches all arrive more than ``cfg.max_clock_skew_s`` before in ``stats.leading`` (None: not watched).
    ``peers``: the cameras whose batches are taken (with TOOL_CAMERAS'); a batch of another camera is refused,
    counted as ``unlisted`` (None: any camera's are taken); ``set_peers`` changes them while the bridge runs.
    ``stored_forgets``: at each catch-up and resync, also take the forgets the fleet stored (see "Forgets sent
    while a worker was not running") from where this camera last said it applied them
    (``mark_forgets_applied``), as far as ``stored_forgets_read``.
    """

    def __init__(
        self,
        cfg: BridgeConfig,
        camera: str,
        on_message: MessageCallback | None = None,
        *,
        receive: bool = True,
        observe: bool = False,
        lag_warn_s: float | None = None,
        peers: Collection[str] | None = None,
        stored_forgets: bool = False,
    ) -> None:
        if observe and not receive:
            raise ValueError("an observing bridge receives: observe=True needs receive=True")
        if not NAME.match(camera):
            raise ConfigError(f"camera name {camera!r}: use 1-200 characters of [A-Za-z0-9_.@-]")
        self.cfg = cfg
        self.camera = camera
        self.keys = FleetKeys(cfg.fleet)
        self._key = signing_key(cfg)
        self._also = accepted_keys(cfg) if self._key is not None else ()
        self._password = cfg.password.resolve("bridge.password") if cfg.password is not None else None
        self.sender_id = uuid.uuid4().hex
        self._sender_bytes = self.sender_id.encode("ascii")
        self._on_message = on_message
        self._receives = receive
        self._observes = observe
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._outbox: deque[FleetMessage] = deque()
        self._erase: deque[FleetMessage] = deque()
        # what this camera says of forgets (daemon.erase_ack), written by the sender thread; the newest kept
        self._acks: deque[EraseAck] = deque(maxlen=cfg.backlog_size)
        self._in_flight = 0
        self._inbox: deque[FleetMessage] = deque(maxlen=cfg.inbox_size)
        self._inbox_ready = threading.Condition(threading.Lock())
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._rejected = dict.fromkeys(get_args(BridgeRejectReason), 0)
        self._connected = False
        self._last_error = ""  # the latest connection failure, for the error of a caller that gives up
        # per thread, its latest failure when it was Valkey refusing the credentials or a permission ("" if not)
        self._refused = {"send": "", "receive": "", "command": ""}
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._interrupted = threading.Event()  # the owner is stopping: waits for Valkey end now
        self._log = _RateLimitedLog(cfg.log_every_s)
        self.clock = SharedClock()  # the fleet's: batches are stamped and judged by it (daemon/clocks.py)
        self._last_ids: dict[str, str] = {}
        # per camera, (monotonic time, the first entry id past the last heard) as the latest resyncs found them
        self._marks: dict[str, deque[tuple[float, str]]] = {}
        self._unmet: set[str] = set()  # cameras in the registry not heard of at the last resync
        self._max_seq: OrderedDict[str, int] = OrderedDict()
        self._subscribed_ms = 0  # the server's time as the receiver last subscribed (what it could not hear)
        self._lag_warn_s = lag_warn_s
        self._peers = None if peers is None else frozenset([*peers, *TOOL_CAMERAS])
        self._next_peers: frozenset[str] | None = None  # set_peers's, until the receiver thread takes them
        self._lags: OrderedDict[str, deque[float]] = OrderedDict()  # peer -> its last live batches' delays
        # peer -> (its lag, negative where it leads, when it was last heard: monotonic), peers off alone; stats
        # leaves out those silent for lag_warn_s
        self._lagging: dict[str, tuple[float, float]] = {}
        self._forgets_seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._forgotten: OrderedDict[int, None] = OrderedDict()
        self._forgotten_lock = threading.Lock()
        self._stored_forgets = stored_forgets
        self._forgets_at: str | None = None  # the last entry of the fleet's forgets read (None: not yet)
        self._applied: str | None = None  # mark_forgets_applied's, until the sender writes it
        self._registry_at = -math.inf
        self._embedded: EmbeddedValkey | None = None
        self._url: str | None = cfg.url
        self._command: Any = None
        self._threads: list[threading.Thread] = []

    # -------------------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._url is None:
            raise BridgeError("the bridge has not started (no URL yet)")
        return self._url

    def start(self, wait_s: float | None = None) -> Bridge:
        """Start the sender (and receiver) threads; with ``wait_s``, wait that long for the first catch-up and the
        first write, and raise ConfigError when Valkey refused either (credentials, ACL permissions)."""
        if self._threads:
            raise BridgeError("the bridge is already started")
        if self._url is None:
            self._embedded = EmbeddedValkey(self.cfg.embedded_transport).start()
            self._url = self._embedded.url
        try:  # checks URL and TLS settings before the threads (ConfigError); a Cluster client connects here
            connect(self.cfg, self._url, self._password).close()
        except valkey_errors() as e:  # Valkey away: the threads wait for it, as they do for one node
            logger.debug("bridge %s: Valkey not reached at start: %s", self.camera, e)
        loops = [] if self._observes else [(self._send_loop, "send")]
        loops += [(self._receive_loop, "receive")] if self._receives else []
        for target, name in loops:
            t = threading.Thread(target=target, name=f"bridge-{self.camera}-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if not self._receives:
            self._subscribed.set()
        if not self._observes:
            self.publish(FleetMessage("hello", self.camera, timestamp=time.time()))
        if wait_s is None:
            return self
        deadline = time.monotonic() + wait_s
        ready = self.wait_ready(wait_s) and self.flush(max(0.0, deadline - time.monotonic()))
        refusal = self._refusal("this worker")
        if not ready and refusal is not None:
            self.close(flush_s=0.0)
            raise refusal
        return self

    def set_peers(self, peers: Collection[str]) -> None:
        """Take batches from ``peers`` (and TOOL_CAMERAS') from now on, refusing the others (a fleet's cameras
        changed while its workers run). The receiver thread takes them up between two messages: a camera listed
        now that was not is caught up from its stored state as a camera first heard of is (its batches refused
        before are in it), before its live batches are taken."""
        with self._lock:
            self._next_peers = frozenset([*peers, *TOOL_CAMERAS])

    def _take_peers(self, client: Any) -> None:
        """On the receiver thread: the peers ``set_peers`` gave, if it gave any since; each camera they list that
        the earlier ones did not is caught up with ``client`` (None: by the catch-up that follows, which takes a
        camera without a stream position from its stored state)."""
        with self._lock:
            peers, self._next_peers = self._next_peers, None
        if peers is None:
            return
        added = sorted(peers - self._peers) if self._peers is not None else []
        self._peers = peers
        for cam in added:  # heard, but refused: its position says nothing of what was taken
            self._last_ids.pop(cam, None)
            self._marks.pop(cam, None)
            if client is not None:
                self._snapshot(client, cam)
                logger.info(
                    "bridge %s: camera %s is listed now: caught up from its stored state", self.camera, cam
                )

    def _refusal(self, who: str) -> ConfigError | None:
        """The configuration error of a Valkey that refused this bridge's credentials or ACL rights, if it did."""
        refused = next((why for why in self._refused.values() if why), "")
        if not refused:
            return None
        return ConfigError(
            f"bridge: Valkey at {redact(self.url)} refused {who}: {refused} (check bridge.username, "
            "bridge.password and the ACL user's permissions)"
        )

    def wait_ready(self, timeout: float) -> bool:
        """True once the receiver is subscribed and has caught up (False after ``timeout`` seconds, or at once
        after ``interrupt``). A receiver's lost connection is counted (``stats.reconnects``) only once it is no
        longer subscribed: called after that count, it waits for the catch-up that follows the reconnection."""
        deadline = time.monotonic() + timeout
        while not self._subscribed.wait(min(LIVE_POLL_S, max(0.0, deadline - time.monotonic()))):
            if self._interrupted.is_set() or time.monotonic() >= deadline:
                return False
        return True

    def interrupt(self) -> None:
        """The owner is stopping (a signal): a ``start`` waiting for the fleet gives up now. What is queued is
        still written by ``close``."""
        self._interrupted.set()

    def close(self, flush_s: float = 1.0) -> None:
        """Write what is queued (up to ``flush_s`` seconds), stop the threads, stop an embedded server."""
        if self._threads:
            self.flush(flush_s)
        self._stop.set()
        with self._work:
            self._work.notify_all()
        for t in self._threads:
            t.join(self.cfg.socket_timeout_s + LIVE_POLL_S + 1.0)
        self._threads = []
        if self._command is not None:
            self._command.close()
            self._command = None
        if self._embedded is not None:
            self._embedded.close()
            self._embedded = None

    def __enter__(self) -> Bridge:
        return self.start() if not self._threads else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -------------------------------------------------------------------------------------- sending

    def publish(self, msg: FleetMessage) -> int:
        """Queue ``msg`` (this bridge's camera) for the fleet; returns its sequence number. Never blocks.

        When the backlog is full the oldest queued message is dropped (counted in ``stats.dropped``).
        ValueError for a message that can never be sent (another camera, larger than max_message_bytes).
        """
        self._check_sendable(msg)
        with self._work:  # numbered under the lock: the outbox stays in sequence order
            stamped = self._stamp(msg)
            if len(self._outbox) >= self.cfg.backlog_size:
                self._outbox.popleft()
                self._counts["dropped"] += 1
            self._outbox.append(stamped)
            self._counts["published"] += 1
            self._work.notify()
        return stamped.seq

    def forget(self, global_id: int) -> None:
        """Broadcast that ``global_id`` is forgotten and delete its stored state (log entries, track state).

        Queued like a publish (done when Valkey is reachable; ``flush`` waits for it), behind the messages
        published before it, and never dropped; BridgeError when ``backlog_size`` forgets are already waiting.
        """
        msg = FleetMessage("forget", self.camera, global_id=int(global_id), timestamp=time.time())
        with self._work:
            if len(self._erase) >= self.cfg.backlog_size:
                raise BridgeError(
                    f"{len(self._erase)} forget requests are waiting for Valkey; try again later"
                )
            self._erase.append(self._stamp(msg))
            self._counts["published"] += 1
            self._work.notify()
        self._remember_forgotten(int(global_id))

    def say_of_forgets(self, acks: Iterable[EraseAck]) -> None:
        """Queue what this camera says of forgets it received (erased, or pending and why) for Valkey, where
        ``reid-daemon forget`` waits for it; written by the sender thread, signed, at most ``backlog_size`` kept
        while Valkey is away (the newest)."""
        with self._work:
            self._acks.extend(acks)
            self._work.notify()

    def erase_acks(self, global_id: int) -> dict[str, EraseAck | UntrustedAck]:
        """What the fleet's cameras said of the forget of ``global_id``, per camera: its word, its signature
        checked, or why it is not taken (UntrustedAck); BridgeError if unreachable."""
        raw = self._on_command(
            "read what cameras said of a forget", lambda c: c.hgetall(self.keys.erased(global_id))
        )
        keys = (self._key, *self._also) if self._key is not None else ()
        said: dict[str, EraseAck | UntrustedAck] = {}
        for field_name, value in raw.items():
            camera = _text(field_name)
            try:
                said[camera] = decode_ack(
                    value, self.cfg.fleet, camera, global_id, keys, self.cfg.allow_unsigned
                )
            except UntrustedAck as e:
                said[camera] = e
        return said

    def clear_erase_acks(self, global_id: int) -> None:
        """Drop what cameras said of an earlier forget of ``global_id`` (before a new one is sent)."""
        self._on_command(
            "clear what cameras said of a forget", lambda c: c.delete(self.keys.erased(global_id))
        )

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued has been written to Valkey; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._work:
            while self._outbox or self._erase or self._acks or self._applied or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._work.wait(min(left, LIVE_POLL_S))
        return True

    def unreachable(self, timeout_s: float) -> DaemonError:
        """The error of a caller that waited ``timeout_s`` for Valkey in vain, naming the last failure: a
        ConfigError (exit 2, as a worker's) when Valkey refused the credentials or an ACL permission, else a
        BridgeError (no such host, connection refused, timed out)."""
        refusal = self._refusal(f"this client ({self.camera})")
        if refusal is not None:
            return refusal
        why = f": {self._last_error}" if self._last_error else ""
        return BridgeError(f"could not reach Valkey at {redact(self.url)} within {timeout_s} s{why}")

    def allocate_global_id(self) -> int:
        """A new fleet-wide global id (INCR of one key: unique across processes); BridgeError if unreachable."""
        return self.allocate_global_ids(1)[0]

    def allocate_global_ids(self, n: int, floor: int = 0) -> range:
        """``n`` new fleet-wide global ids at once (one atomic script: unique across processes), all above
        ``floor`` (the counter is raised to it first when behind: a Valkey restarted empty); BridgeError if
        unreachable. A worker keeps a few in hand so a short Valkey outage does not hold back new ids."""
        if n < 1 or floor < 0:
            raise ValueError(f"allocate_global_ids: n must be >= 1 and floor >= 0, got {n}, {floor}")
        counter = self.keys.counter
        last = int(
            self._on_command("allocate a global id", lambda c: c.eval(ALLOCATE_LUA, 1, counter, n, floor))
        )
        return range(last - n + 1, last + 1)

    def last_global_id(self) -> int | None:
        """The last global id the fleet handed out (its counter in Valkey; None: no counter, e.g. a Valkey
        restarted empty); BridgeError if unreachable."""
        value = self._on_command("read the global-id counter", lambda c: c.get(self.keys.counter))
        return None if value is None else int(value)

    def highest_track_id(self) -> int:
        """The highest track id this bridge's camera has state of in Valkey (0: none); BridgeError if
        unreachable. A restarted live camera numbers its tracks after it, so its new tracks are not taken
        for the earlier run's (stored state and other cameras key a track by camera and id)."""
        state = self.keys.camera_keys(self.camera)[1]
        tracks = self._on_command("read stored tracks", lambda c: c.hkeys(state))
        return max((int(t) for t in tracks if _text(t).isdigit()), default=0)

    def _on_command(self, what: str, call: Callable[[Any], Any]) -> Any:
        """``call`` on the command connection (made on first use); BridgeError naming ``what`` when Valkey is
        unreachable, and the connection is made again on the next call."""
        try:
            if self._command is None:
                self._command = connect(self.cfg, self.url, self._password)
            answer = call(self._command)
        except valkey_errors() as e:
            self._drop_command()
            refusal = _refusal_in(e)
            self._refused["command"] = "" if refusal is None else str(refusal)
            raise BridgeError(f"cannot {what}: Valkey at {redact(self.url)} is unreachable ({e})") from e
        self._refused["command"] = ""
        return answer

    def refusal_or(self, error: BridgeError) -> DaemonError:
        """``error`` of a command, or the configuration error (exit 2) when Valkey refused this client's
        credentials or an ACL permission (waiting does not help)."""
        refusal = self._refusal(f"this client ({self.camera})")
        return error if refusal is None else refusal

    def _drop_command(self) -> None:
        cmd, self._command = self._command, None
        if cmd is not None:
            try:
                cmd.close()
            except Exception:  # a broken connection may fail to close; it is dropped anyway
                logger.debug("closing a broken command connection failed", exc_info=True)

    def _stamp(self, msg: FleetMessage) -> FleetMessage:
        """``msg`` with this bridge's sender id and the next sequence number (call under the lock)."""
        return with_fields(msg, sender=self.sender_id, seq=next(self._seq), sent_at=0.0, stream_id="")

    def _check_sendable(self, msg: FleetMessage) -> None:
        if msg.camera != self.camera:
            raise ValueError(
                f"this bridge publishes for camera {self.camera!r}, the message is from {msg.camera!r}"
            )
        if _estimate(msg, self._item_bytes) > self._batch_budget:
            k, d = msg.embeddings.shape
            raise ValueError(
                f"{k}x{d} {self.cfg.publish_dtype} embeddings exceed bridge.max_message_bytes "
                f"({self.cfg.max_message_bytes})"
            )

    @property
    def _item_bytes(self) -> int:
        return 2 if self.cfg.publish_dtype == "float16" else 4

    @functools.cached_property
    def _batch_budget(self) -> int:
        """The bytes of a batch blob left to its messages (``_estimate``) within max_message_bytes (the camera
        and sender id are the bridge's for good)."""
        fixed = codec.HEADER_SIZE + codec.TAG_SIZE + batch_meta_bytes(self.camera, self.sender_id)
        return self.cfg.max_message_bytes - fixed

    def _send_loop(self) -> None:
        backoff = Backoff(self.cfg.reconnect_initial_s, self.cfg.reconnect_max_s)
        client: Any = None
        while True:
            batch, erase, acks = self._take_work()
            if not batch and erase is None and not acks and self._stop.is_set():
                break
            try:
                if client is None:
                    client = connect(self.cfg, self.url, self._password)
                self._write_acks(client, acks)  # first: written again harmlessly where what follows fails
                self._write_applied(client)
                if erase is not None:
                    self._do_erase(client, erase)
                self._write(client, batch)
                self._set_connected(True)
                backoff.reset()
                self._done(batch, erase, ok=True)
            except (
                Exception
            ) as e:  # Valkey away (expected) or a bug (logged with its trace): retry, never die
                self._done(batch, erase, ok=False, acks=acks)
                self._lost(client, "send", e, self._connected)
                client = None
                if self._stop.wait(backoff.next()):
                    break
        if client is not None:
            client.close()

    def _take_work(self) -> tuple[list[FleetMessage], FleetMessage | None, list[EraseAck]]:
        """Up to publish_batch queued messages, or one forget request, with what the camera says of forgets;
        ([], None, []) once stopped."""
        with self._work:
            while not (self._outbox or self._erase or self._acks or self._applied):
                if self._stop.is_set():
                    return [], None, []
                self._work.wait(LIVE_POLL_S)
            if self._stop.is_set():
                return [], None, []
            acks = list(self._acks)
            self._acks.clear()
            # A forget waits for what was published before it, so no older profile brings its state back.
            limit = self._erase[0].seq if self._erase else math.inf
            if self._erase and not (self._outbox and self._outbox[0].seq < limit):
                self._in_flight = 1 + len(acks)
                return [], self._erase.popleft(), acks
            batch: list[FleetMessage] = []
            while self._outbox and len(batch) < self.cfg.publish_batch and self._outbox[0].seq < limit:
                batch.append(self._outbox.popleft())
            self._in_flight = len(batch) + len(acks)
            return batch, None, acks

    def _done(
        self,
        batch: list[FleetMessage],
        erase: FleetMessage | None,
        ok: bool,
        acks: list[EraseAck] | None = None,
    ) -> None:
        with self._work:
            self._in_flight = 0
            if not ok:  # back to the front, oldest first, as far as the bound allows (the newest are kept)
                room = max(0, self.cfg.backlog_size - len(self._outbox))
                keep = batch[len(batch) - room :] if room < len(batch) else batch
                self._counts["dropped"] += len(batch) - len(keep)
                self._outbox.extendleft(reversed(keep))
                if erase is not None:
                    self._erase.appendleft(erase)
                room = max(0, self.cfg.backlog_size - len(self._acks))  # those said since are newer: kept
                self._acks.extendleft(reversed((acks or [])[-room:] if room else []))
            self._work.notify_all()

    def _write_acks(self, client: Any, acks: list[EraseAck]) -> None:
        """Write what this camera says of forgets: a signed field in each id's hash, which expires
        ``forget_ack_ttl_s`` after (``daemon.erase_ack``)."""
        for ack in acks:
            key = self.keys.erased(ack.global_id)
            client.hset(key, ack.camera, ack.encode(self.cfg.fleet, self._key))
            client.expire(key, self.cfg.forget_ack_ttl_s)

    def _write_applied(self, client: Any) -> None:
        """Write this camera's signed mark of how far it applied the fleet's stored forgets, when one is due."""
        with self._work:
            upto = self._applied
        if upto is None:
            return
        key = self.keys.forgets_applied
        client.hset(key, self.camera, encode_applied(self.cfg.fleet, self.camera, upto, self._key))
        client.expire(key, self.cfg.forget_keep_s)
        with self._work:
            if self._applied == upto:
                self._applied = None

    def _write(self, client: Any, msgs: list[FleetMessage]) -> list[bytes]:
        """Write ``msgs`` in as few signed batches as max_message_bytes allows, one script call each; returns the
        batches written."""
        log, *rest = self.keys.camera_keys(self.camera)
        self._read_clock(client)
        written: list[bytes] = []
        for chunk in self._chunks(msgs):
            blob = self._encode(chunk)
            if blob is None:
                continue
            profiles = [m for m in chunk if m.kind == "profile"]
            gids = _profile_gids(profiles)
            args: list[Any] = [
                self.cfg.stream_maxlen,
                self.cfg.state_ttl_s,
                self.keys.channel,
                self.sender_id,
            ]
            args += [blob, _gid_list(gids)]
            for m in profiles:
                gid = "" if m.global_id is None else str(m.global_id)
                args += [str(m.track_id), gid, "1" if m.embeddings.shape[0] else "0"]
            client.eval(PUBLISH_LUA, 5, log, *rest, *args)
            self._count("sent", len(chunk))
            written.append(blob)
        if time.monotonic() - self._registry_at >= REGISTRY_REFRESH_S:  # on the server's clock, as it is read
            client.eval(REGISTER_LUA, 1, self.keys.cameras, self.camera, self.cfg.state_ttl_s)
            self._registry_at = time.monotonic()
        return written

    def _chunks(self, msgs: list[FleetMessage]) -> Iterable[list[FleetMessage]]:
        """Runs of ``msgs`` of one embedding dim whose estimated batch size fits max_message_bytes."""
        budget = self._batch_budget
        chunk: list[FleetMessage] = []
        size, dim = 0, None
        for m in msgs:
            m_dim = m.embeddings.shape[1] if m.embeddings.shape[0] else dim
            need = _estimate(m, self._item_bytes)
            if chunk and (size + need > budget or (dim is not None and m_dim is not None and m_dim != dim)):
                yield chunk
                chunk, size, dim = [], 0, None
            chunk.append(m)
            size += need
            dim = dim if m_dim is None else m_dim
        if chunk:
            yield chunk

    def _encode(self, chunk: list[FleetMessage]) -> bytes | None:
        """The signed blob of ``chunk``; None (counted, logged) when it cannot be sent as configured."""
        try:
            blob = encode_batch(
                chunk, self._key, self.cfg.publish_dtype, sent_at=self.clock.now(), wall=time.time()
            )
        except ValueError as e:  # beyond float16's range
            problem = str(e)
        else:
            if len(blob) <= self.cfg.max_message_bytes:
                return blob
            problem = f"{len(blob)} bytes exceed bridge.max_message_bytes ({self.cfg.max_message_bytes})"
        self._count("unsendable", len(chunk))
        self._log.warn(
            "unsendable", "bridge %s: %d message(s) cannot be sent: %s", self.camera, len(chunk), problem
        )
        return None

    def _do_erase(self, client: Any, msg: FleetMessage) -> None:
        gid = msg.global_id
        assert gid is not None  # forget() always names one
        for blob in self._write(client, [msg]):  # kept for the workers that are not running now, as sent
            keep = self.cfg.forget_keep_s
            client.eval(RECORD_FORGET_LUA, 1, self.keys.forgets, blob, gid, MAX_STORED_FORGETS, keep)
        erased = 0
        for cam in self._cameras(client):
            erased += self._rewrite_without(client, cam, gid)
            start = "-"
            while start:
                deleted, nxt = client.eval(
                    ERASE_LUA, 5, *self.keys.camera_keys(cam), gid, start, ERASE_PAGE, self.cfg.state_ttl_s
                )
                erased += int(deleted)
                start = _text(nxt)
        self._count("erased", erased)

    def _rewrite_without(self, client: Any, camera: str, gid: int) -> int:
        """Re-sign ``camera``'s stored batches that hold ``gid`` without its profiles (and the others without an
        earlier spell of it), and drop its track states (REWRITE_LUA): the other tracks of those batches keep
        their state. A batch left with nothing, or that cannot be read, is left for ERASE_LUA to delete whole.
        Returns the track states dropped."""
        keys = self.keys.camera_keys(camera)
        needle = f",{gid},".encode()
        refs = client.hgetall(keys[4])
        doomed = [f[2:] for f, v in refs.items() if f.startswith(b"g:") and needle in v]
        args: list[Any] = [gid, self.cfg.state_ttl_s]
        for ref, blob in zip(doomed, client.hmget(keys[3], doomed) if doomed else [], strict=True):
            try:
                batch = self._signed(blob or b"")  # one signed with an accepted key is signed anew
            except MessageRejected:
                continue
            kept = [
                _without_spell(m, gid)
                for m in batch.messages
                if not (m.kind == "profile" and m.global_id == gid)
            ]
            if not kept:
                continue
            gids = _profile_gids([m for m in kept if m.kind == "profile"])
            blob = encode_batch(kept, self._key, self.cfg.publish_dtype, sent_at=batch.sent_at)
            args += [ref, blob, _gid_list(gids)]
        return int(client.eval(REWRITE_LUA, 5, *keys, *args))

    def fleet_time(self) -> float:
        """The fleet's clock now (daemon/clocks.py), read from Valkey first when due; BridgeError if unreachable."""
        self._on_command("read the fleet's clock", self._read_clock)
        return self.clock.now()

    def _read_clock(self, client: Any) -> None:
        """Read the fleet's clock again when due: the time of the node holding the fleet-wide keys, one node for
        every camera's bridge (on a Cluster too, where each node has its own clock), as the registry is scored."""
        if self.clock.due():
            self.clock.read(lambda: _server_s(client, self.keys.cameras))

    def _cameras(self, client: Any, now_ms: int | None = None) -> list[str]:
        """Cameras in the fleet registry that published within ``state_ttl_s`` of ``now_ms``, the time of the
        registry's node (REGISTER_LUA scores them by it; read there when None)."""
        now = _server_ms(client, self.keys.cameras) if now_ms is None else now_ms  # the registry's node
        floor = now - self.cfg.state_ttl_s * 1000
        return [_text(c) for c in client.zrangebyscore(self.keys.cameras, floor, "+inf")]

    # -------------------------------------------------------------------------------------- receiving

    def receive(self, timeout: float | None = None) -> FleetMessage | None:
        """The oldest received message, waiting up to ``timeout`` s (None = forever); None if none came."""
        with self._inbox_ready:
            if not self._inbox_ready.wait_for(lambda: bool(self._inbox), timeout):
                return None
            return self._inbox.popleft()

    def drain(self) -> list[FleetMessage]:
        """Every received message waiting now (oldest first)."""
        with self._inbox_ready:
            out = list(self._inbox)
            self._inbox.clear()
            return out

    def _receive_loop(self) -> None:
        backoff = Backoff(self.cfg.reconnect_initial_s, self.cfg.reconnect_max_s)
        while not self._stop.is_set():
            client: Any = None
            try:
                client = connect(self.cfg, self.url, self._password)
                self._listen(client, backoff)
            except (
                Exception
            ) as e:  # Valkey away (expected) or a bug (logged with its trace): retry, never die
                working = self._subscribed.is_set()
                self._subscribed.clear()  # before the loss is counted: see wait_ready
                self._lost(client, "receive", e, working)
                client = None
                self._stop.wait(backoff.next())
            finally:
                if client is not None:
                    client.close()

    def _listen(self, client: Any, backoff: Backoff) -> None:
        pubsub = client.pubsub()
        try:
            self._subscribed_ms = _server_ms(client, self.keys.channel)
            pubsub.subscribe(self.keys.channel)
            resync_at = math.inf  # no resync before the subscription is confirmed and caught up
            while not self._stop.is_set():
                self._read_clock(client)
                item = pubsub.get_message(timeout=LIVE_POLL_S)
                if time.monotonic() >= resync_at:
                    self._resync(client)
                    resync_at = self._next_resync()
                if self._next_peers is not None and self._subscribed.is_set():
                    self._take_peers(client)
                if item is None:
                    continue
                if item["type"] == "subscribe":  # first subscription, or valkey-py resubscribed after a drop
                    self._catch_up(client)
                    self._subscribed.set()
                    backoff.reset()
                    resync_at = self._next_resync()
                elif item["type"] == "message":
                    self._on_live(item["data"])
        finally:
            pubsub.close()

    def _catch_up(self, client: Any) -> None:
        self._take_peers(None)
        fleet = self._cameras(client)
        self._let_go(fleet)
        for cam in dict.fromkeys([*fleet, *self._last_ids]):
            last = self._last_ids.get(cam)
            if last is None:
                self._snapshot(client, cam)
            else:
                self._replay(client, cam, last)
        self._take_stored_forgets(client)

    def _next_resync(self) -> float:
        return time.monotonic() + self.cfg.resync_s if self.cfg.resync_s > 0 else math.inf

    def _resync(self, client: Any) -> None:
        """Bring in what pub/sub lost while subscribed (see "Pub/sub delivers at most once"). Only entries older
        than RESYNC_GRACE_MS (``_resync_end``), and cameras in the registry at two resyncs running, count: younger
        ones may still be on their way through pub/sub."""
        with self._lock:
            before = self._counts["caught_up"]
        clocks = _ServerClocks(client)  # each camera's stream ids are the time of its own node
        fleet = self._cameras(client, clocks.ms(self.keys.cameras))
        self._let_go(fleet)
        unmet = {cam for cam in fleet if cam not in self._last_ids}
        for cam in sorted(unmet & self._unmet):
            self._snapshot(client, cam)
        self._unmet = unmet - self._last_ids.keys()
        cams = [cam for cam in self._last_ids if cam != self.camera]
        pipe = client.pipeline(transaction=False)
        for cam in cams:
            pipe.xrange(self.keys.log(cam), "(" + self._last_ids[cam], "+", count=1)
        for cam, more in zip(cams, pipe.execute() if cams else [], strict=True):
            if not more:
                continue
            unheard, end = _text(more[0][0]), self._resync_end(cam, clocks.ms(self.keys.log(cam)))
            self._marks.setdefault(cam, deque(maxlen=MAX_RESYNC_MARKS)).append((time.monotonic(), unheard))
            if _stream_id_key(unheard) <= _stream_id_key(end):
                self._replay(client, cam, self._last_ids[cam], end=end)
        with self._lock:
            found = self._counts["caught_up"] - before
        if found:
            self._count("recovered", found)
            logger.info(
                "bridge %s: %d message(s) lost on pub/sub recovered from the streams", self.camera, found
            )
        self._take_stored_forgets(client)  # mostly those heard live: the mark then passes them

    @property
    def stored_forgets_read(self) -> str | None:
        """The last entry of the fleet's stored forgets this bridge has read (None: none read yet). Every forget
        stored up to it has been delivered (``on_message``) or refused before it moves past it."""
        return self._forgets_at

    def mark_forgets_applied(self, upto: str) -> None:
        """Say, signed, in Valkey, that this camera applied every forget the fleet stored up to entry ``upto``
        (``stored_forgets_read`` as it was before those forgets were done): its next start takes those after
        it. Written by the sender thread; only the latest mark is kept while Valkey is away."""
        with self._work:
            self._applied = upto
            self._work.notify()

    def _take_stored_forgets(self, client: Any) -> None:
        """Deliver the forgets the fleet stored since this camera's mark (first call) or since the last read
        (``stored_forgets``; see "Forgets sent while a worker was not running"): signed with a key this bridge
        takes, from a camera it takes, sent within ``forget_keep_s``; those heard live are duplicates."""
        if not self._stored_forgets:
            return
        if self._forgets_at is None:
            self._forgets_at = self._applied_mark(client)
        start = "(" + self._forgets_at
        while True:
            entries = client.xrange(self.keys.forgets, start, "+", count=CATCHUP_PAGE)
            for entry_id, entry in entries:
                self._take_stored_forget(entry.get(b"m", b""))
                self._forgets_at = _text(entry_id)  # after it was delivered: see stored_forgets_read
            if len(entries) < CATCHUP_PAGE:
                return
            start = "(" + self._forgets_at

    def _applied_mark(self, client: Any) -> str:
        """The entry of the fleet's stored forgets up to which this camera said it applied them ("0-0": none, or
        a mark that is not this camera's, signed with a key this bridge takes, logged: all are taken again)."""
        raw = client.hget(self.keys.forgets_applied, self.camera)
        if raw is None:
            return "0-0"
        keys = (self._key, *self._also) if self._key is not None else ()
        try:
            upto = decode_applied(raw, self.cfg.fleet, self.camera, keys, self.cfg.allow_unsigned)
        except UntrustedAck as e:
            logger.warning(
                "bridge %s: the mark of the forgets it applied in %s is not taken (%s): every forget the fleet "
                "stored is applied again",
                self.camera,
                self.keys.forgets_applied,
                e,
            )
            return "0-0"
        return upto if _STREAM_ID.match(upto.encode()) and _resumable(upto) else "0-0"

    def _take_stored_forget(self, blob: bytes) -> None:
        batch = self._verified(blob)
        if batch is None or not self._listed(batch):
            return
        now = self.clock.now()
        reason = freshness(batch.sent_at, now, self.cfg.forget_keep_s, self.cfg.max_clock_skew_s)
        if reason == "stale":  # kept past forget_keep_s (no forget since trimmed it): gone by the setting
            return
        if reason is not None:
            self._reject(reason, self._time_detail(batch, reason, now, False, self.cfg.forget_keep_s))
            return
        for msg in batch.messages:
            if msg.kind == "forget" and msg.global_id is not None:
                self._accept(with_fields(msg, stream_id="", caught_up=True), caught_up=True)

    def _let_go(self, fleet: Iterable[str]) -> None:
        """Forget the stream positions (and resync marks) of the cameras not in the registry ``fleet``: nothing
        published for state_ttl_s, so their streams and state have expired too, and there is nothing left to
        replay. So a long-running receiver holds and asks after the fleet's cameras as they are now, not every
        camera it ever heard of. One heard again is followed again (its live messages carry their position; a
        lost one is caught up as the registry lists it)."""
        keep = {*fleet, self.camera}
        for cam in [c for c in self._last_ids if c not in keep]:
            del self._last_ids[cam]
            self._marks.pop(cam, None)

    def _resync_end(self, cam: str, now_ms: int) -> str:
        """How far the resync replays ``cam``'s stream: to RESYNC_GRACE_MS before ``now_ms``, the time of the node
        holding that stream (on a Cluster each node's clock makes its own streams' ids), or to an entry an
        earlier resync found unheard at least that long ago (by this host's monotonic clock) when that is
        further. Stream ids are the server's time, kept increasing: after its clock stepped back
        new entries are ahead of it, and the server's time alone left them to pub/sub until it caught up."""
        grace = f"{now_ms - RESYNC_GRACE_MS}-{MAX_SEQ}"
        marks = self._marks.get(cam)
        old = time.monotonic() - RESYNC_GRACE_MS / 1000
        if not marks or marks[0][0] > old:
            return grace
        while len(marks) > 1 and marks[1][0] <= old:  # the latest mark old enough goes first
            marks.popleft()
        return max(grace, marks[0][1], key=_stream_id_key)

    def _snapshot(self, client: Any, cam: str, seed: bool = True) -> None:
        """Deliver the latest profile of each live track of ``cam`` and remember the matching stream position;
        ``seed``: and take its senders' sequence numbers from what this receiver could not hear (``_seed_marks``;
        not where a replay of the stream follows, which delivers that and counts its numbers itself)."""
        if self._observes:
            reply = self._read_snapshot(client, cam)
        else:
            reply = client.eval(SNAPSHOT_LUA, 5, *self.keys.camera_keys(cam), self.cfg.state_ttl_s)
        n = int(reply[1])
        refs = [(_text(reply[2 + 2 * i]), _text(reply[3 + 2 * i])) for i in range(n)]
        blobs = reply[2 + 2 * n :]
        batches = {_text(blobs[i]): self._decode(blobs[i + 1], live=False) for i in range(0, len(blobs), 2)}
        msgs = []
        for track, batch_id in refs:
            latest = _latest_profile(batches.get(batch_id), track)
            if latest is not None:
                msgs.append(with_fields(latest, stream_id=batch_id))
        for msg in sorted(msgs, key=lambda m: (m.sender, m.seq)):
            self._accept(msg, caught_up=True)
        listed = self._peers is None or cam in self._peers  # unlisted: its snapshot, once listed, is new
        if seed and listed:
            self._seed_marks(client, cam, _text(reply[0]))
        self._last_ids[cam] = _text(reply[0])

    def _seed_marks(self, client: Any, cam: str, upto: str) -> None:
        """Raise each sender's last sequence number to the highest of ``cam``'s stored batches up to ``upto`` (the
        snapshot's position) that this receiver could not have heard (stored before it subscribed) and that a
        replay could still pass off as live (stored within ``max_age_s`` and ``max_clock_skew_s`` before that): a
        receiver that has just started remembers no sequence number, so such a batch, captured and published
        again on the channel, was delivered again where it was not in the snapshot (keep-alives, track ends,
        lockstep markers). Only batches that cannot come live are taken, so nothing a receiver is given changes:
        those stored since it subscribed come live, or in a replay, as before (on a Cluster, to within its nodes'
        clocks). A sender's sequence numbers grow along the stream, so its newest batch there that is signed
        says it (one batch decoded per sender). A sender's batches trimmed from the stream (stream_maxlen) or
        erased by a forget are not seen: a later batch of its in the window covers them. Not for a camera that
        ``peers`` leaves out (``_snapshot``): its batches are refused whatever their numbers, and numbers raised
        then made its stored state duplicates once ``set_peers`` lists it; nor where a replay of the stream
        follows (``_replay``, past a trimmed position), whose batches it had made duplicates unheard."""
        heard_from = (self._subscribed_ms, 0)
        end = min(_stream_id_key(upto), heard_from)
        if end == (0, 0):
            return
        floor_ms = self._subscribed_ms - int((self.cfg.max_age_s + self.cfg.max_clock_skew_s) * 1000)
        start, stop = f"{max(0, floor_ms)}-0", f"{end[0]}-{end[1]}"
        exclusive = end == heard_from
        seen: set[str] = set()  # senders whose newest batch was found
        while True:
            entries = client.xrevrange(
                self.keys.log(cam), ("(" if exclusive else "") + stop, start, count=CATCHUP_PAGE
            )
            for _, entry in entries:
                sender = _text(entry.get(b"s", b""))
                if sender not in seen and self._seed_from(entry.get(b"m", b""), sender):
                    seen.add(sender)
            if len(entries) < CATCHUP_PAGE:
                return
            stop, exclusive = _text(entries[-1][0]), True

    def _seed_from(self, blob: bytes, sender: str) -> bool:
        """Raise the last sequence number of ``sender`` to the highest in ``blob`` (a stored batch; forgets,
        idempotent, are not numbered in turn); False, and nothing raised, for a blob that is not a well-formed
        batch of that sender signed with a key this bridge takes (a catch-up that meets it counts it), or that
        holds forgets alone."""
        for key in (self._key, *self._also):
            try:
                batch = decode_batch(blob, key, self.cfg.max_message_bytes)
            except MessageRejected:
                continue
            if batch.sender != sender:
                return False
            seqs = [m.seq for m in batch.messages if m.kind != "forget"]
            if not seqs:  # forgets alone: the numbers are in an older batch
                return False
            if max(seqs) > self._max_seq.get(sender, 0):
                self._max_seq[sender] = max(seqs)
                self._max_seq.move_to_end(sender)
                _bound(self._max_seq, MAX_SENDERS)
            return True
        return False

    def _read_snapshot(self, client: Any, cam: str) -> list[Any]:
        """SNAPSHOT_LUA's reply read with plain commands, for an observer that may only read: nothing is pruned;
        tracks not updated within ``state_ttl_s`` are left out instead. Not atomic: a batch released between
        the reads is skipped, as the next publish would have replaced it anyway."""
        log, state, seen, blobs, _refs = self.keys.camera_keys(cam)
        cutoff = _server_ms(client, seen) - self.cfg.state_ttl_s * 1000  # seen's scores: its node's time
        pipe = client.pipeline(transaction=False)
        pipe.xrevrange(log, "+", "-", count=1)
        pipe.hgetall(state)
        pipe.zrangebyscore(seen, cutoff, "+inf")
        last, flat, fresh = pipe.execute()
        live = set(fresh)
        refs = [(track, value.split(b"|", 1)[1]) for track, value in flat.items() if track in live]
        ids = list(dict.fromkeys(ref for _, ref in refs))
        reply: list[Any] = [last[0][0] if last else b"0-0", len(refs)]
        for track, ref in refs:
            reply += [track, ref]
        for ref, blob in zip(ids, client.hmget(blobs, ids) if ids else [], strict=True):
            if blob is not None:
                reply += [ref, blob]
        return reply

    def _replay(self, client: Any, cam: str, last: str, end: str = "+") -> None:
        log = self.keys.log(cam)
        first = client.xrange(log, "-", "+", count=1)
        if first and _stream_id_key(_text(first[0][0])) > _stream_id_key(last):
            # the stream was trimmed past our position: the latest state, then what is left of the stream
            self._snapshot(client, cam, seed=False)
        start = "(" + last
        while True:
            entries = client.xrange(log, start, end, count=CATCHUP_PAGE)
            for entry_id, entry in entries:
                self._last_ids[cam] = _text(entry_id)
                if entry.get(b"s") == self._sender_bytes:
                    self._count("own")
                    continue
                self._accept_batch(self._decode(entry.get(b"m", b""), live=False), _text(entry_id), True)
            if len(entries) < CATCHUP_PAGE:
                return
            start = "(" + _text(entries[-1][0])

    def _on_live(self, data: bytes) -> None:
        parts = data.split(b"|", 2)
        if len(parts) != 3 or not _STREAM_ID.match(parts[0]) or len(parts[1]) > MAX_SENDER_CHARS:
            self._reject("malformed", "a live message without its '<stream id>|<sender>|' prefix")
            return
        stream_id = parts[0].decode("ascii")
        if not _resumable(stream_id):  # the prefix is not signed: it may be anything that looks like an id
            self._reject("malformed", f"a live message whose stream id {stream_id} is none Valkey gives")
            return
        if parts[1] == self._sender_bytes:  # an own batch: skipped before decoding (saves the work)
            self._last_ids[self.camera] = stream_id
            self._count("own")
            return
        batch = self._verified(parts[2])
        if batch is None:
            return
        self._last_ids[batch.camera] = stream_id  # heard, fresh or not: the resync must not bring it back
        if self._listed(batch) and self._fresh(batch, live=True):
            self._check_camera_name(batch)
            self._note_delay(batch)
            self._accept_batch(batch, stream_id, False)

    def _note_delay(self, batch: Batch) -> None:
        """Keep how long after sending a peer's accepted live batches arrive, by the wall clock each carries and
        this host's. The least delay of the last LAG_WINDOW (transit only adds to each) is how far the peer's
        clock runs behind this host's. When they all took more than lag_warn_s, it lags; when they all came more
        than bridge.max_clock_skew_s before they were sent, it leads (the fleet's clock, judging send times, no
        longer refuses them). What it says to the fleet is on the fleet's clock; the times in its files are not.
        Such a peer goes into ``lagging`` or ``leading`` and a warning names it and how far, once (again when it
        was off, came right and is off again, at most once per log_every_s)."""
        cam = batch.camera
        if self._lag_warn_s is None or cam == self.camera:
            return
        delays = self._lags.setdefault(cam, deque(maxlen=LAG_WINDOW))
        self._lags.move_to_end(cam)
        _bound(self._lags, MAX_LAG_PEERS)
        delays.append(time.time() - (batch.wall if batch.wall is not None else batch.sent_at))
        least = min(delays)  # how far the peer's clock runs behind: the least transit's (negative: ahead)
        full = len(delays) == LAG_WINDOW
        off = full and (least > self._lag_warn_s or max(delays) < -self.cfg.max_clock_skew_s)
        with self._lock:
            was = self._lagging.pop(cam, None)
            if off:
                self._lagging[cam] = (round(least, 1), time.monotonic())
                while len(self._lagging) > MAX_LAG_PEERS:
                    self._lagging.pop(next(iter(self._lagging)))
        if off and (was is None or (was[0] > 0) != (least > 0)):
            self._warn_off(cam, least)

    def _warn_off(self, cam: str, least: float) -> None:
        """Name a peer whose clock lags (``least`` > 0) or leads this host's, rate limited per peer and way."""
        if least > 0:
            self._log.warn(
                f"lag-{cam}",
                "bridge %s: camera %s's messages arrive %.0f s after they were sent (the least of its last %d), "
                "more than identity.claim_ttl_s %g: its host's clock lags this one's, and the times in its files "
                "(events' ts, its video) the fleet's (keep both on NTP)",
                self.camera,
                cam,
                least,
                LAG_WINDOW,
                self._lag_warn_s,
            )
            return
        self._log.warn(
            f"lead-{cam}",
            "bridge %s: camera %s's messages arrive %.0f s before they were sent (the most of its last %d), more "
            "than bridge.max_clock_skew_s %g: its host's clock leads this one's, and the times in its files "
            "(events' ts, its video) the fleet's (keep both on NTP)",
            self.camera,
            cam,
            -least,
            LAG_WINDOW,
            self.cfg.max_clock_skew_s,
        )

    def _still_off(self) -> tuple[dict[str, float], dict[str, float]]:
        """The lagging and the leading peers (seconds, both positive) heard from within lag_warn_s (the caller
        holds the lock): one silent for longer, a camera stopped or with nobody in view, claims nothing, and how
        far its clock is off is not known now."""
        now = time.monotonic()
        limit = self._lag_warn_s if self._lag_warn_s is not None else math.inf
        heard = {cam: off for cam, (off, at) in self._lagging.items() if now - at <= limit}
        return (
            {cam: off for cam, off in heard.items() if off > 0},
            {cam: -off for cam, off in heard.items() if off < 0},
        )

    def _check_camera_name(self, batch: Batch) -> None:
        """Warn when another live process publishes tracks under this bridge's camera name (two workers started
        with one --camera): their track ids collide and each gives the other's people its own global ids."""
        if batch.camera == self.camera and any(m.kind == "profile" for m in batch.messages):
            self._log.warn(
                "same-camera",
                "bridge %s: another process (sender %s) publishes tracks as camera %s: two workers with one "
                "camera name mix up their tracks and global ids; stop one, or give each camera its own name",
                self.camera,
                batch.sender[:8],
                self.camera,
            )

    def _decode(self, blob: bytes, live: bool) -> Batch | None:
        batch = self._verified(blob)
        return batch if batch is not None and self._listed(batch) and self._fresh(batch, live) else None

    def _listed(self, batch: Batch) -> bool:
        """Whether ``batch`` comes from one of ``peers`` (any camera when None); rejected and counted when not."""
        if self._peers is None or batch.camera in self._peers:
            return True
        self._reject(
            "unlisted",
            f"camera {batch.camera!r} (sender {batch.sender[:8]}) is none of this config's cameras "
            f"({', '.join(sorted(set(self._peers) - set(TOOL_CAMERAS)))}): a worker started with a misspelt "
            "--camera, or left running for a camera taken out of the config? (one added to the config is taken "
            "once this worker reads it again: a live camera's does within seconds of the file's change; "
            "bridge.accept_unlisted: true takes any camera's)",
        )
        return False

    def _verified(self, blob: bytes) -> Batch | None:
        """The batch of a well-formed blob signed with the fleet key (or one of ``accept_keys``); None (rejected,
        counted) otherwise."""
        try:
            return self._signed(blob)
        except MessageRejected as e:
            self._reject(e.reason, e.detail)
            return None

    def _signed(self, blob: bytes) -> Batch:
        """``decode_batch`` with the fleet key, then with each of ``accept_keys`` where the signature is the only
        thing wrong (counted in ``other_key``)."""
        try:
            return decode_batch(blob, self._key, self.cfg.max_message_bytes)
        except MessageRejected as e:
            if e.reason != "forged":
                raise
            for key in self._also:
                try:
                    batch = decode_batch(blob, key, self.cfg.max_message_bytes)
                except MessageRejected:
                    continue
                self._count("other_key", len(batch.messages))
                return batch
            raise

    def _fresh(self, batch: Batch, live: bool) -> bool:
        """Whether ``batch`` was sent recently enough (live: max_age_s; catch-up: the longer of it and
        state_ttl_s) and not from the future, by the fleet's clock; rejected and counted when not."""
        max_age = self.cfg.max_age_s if live else max(self.cfg.max_age_s, float(self.cfg.state_ttl_s))
        now = self.clock.now()
        reason = freshness(batch.sent_at, now, max_age, self.cfg.max_clock_skew_s)
        if reason is not None:
            self._reject(reason, self._time_detail(batch, reason, now, live, max_age))
        return reason is None

    def _time_detail(self, batch: Batch, reason: RejectReason, now: float, live: bool, max_age: float) -> str:
        """Why a batch's send time was refused: how far it is from the fleet's clock, and the setting."""
        if reason == "future":
            off, cause = f"{batch.sent_at - now:.0f} s ahead of", ""
            limit = f"bridge.max_clock_skew_s {self.cfg.max_clock_skew_s:g}"
        else:
            off, cause = f"{now - batch.sent_at:.0f} s behind", "held up on its way, or "
            limit = f"bridge.{'max_age_s' if live else 'state_ttl_s'} {max_age:g}"
        return (
            f"sent by {batch.camera}/{batch.sender[:8]} {off} the fleet's clock (Valkey's time, as this host "
            f"reads it; {limit}): {cause}its sender stamps another clock (an older release stamps its host's: "
            "keep the hosts on NTP)"
        )

    def _accept_batch(self, batch: Batch | None, stream_id: str, caught_up: bool) -> None:
        if batch is None:
            return
        for msg in batch.messages:
            self._accept(with_fields(msg, stream_id=stream_id, caught_up=caught_up), caught_up)

    def _accept(self, msg: FleetMessage, caught_up: bool) -> None:
        if msg.sender == self.sender_id:
            self._count("own")
            return
        if self._is_duplicate(msg):
            self._count("duplicates")
            return
        if msg.kind == "forget" and msg.global_id is not None:
            self._remember_forgotten(msg.global_id)
        elif msg.kind == "profile" and self._is_forgotten(msg.global_id):
            self._count("forgotten")
            return
        self._count("received")
        if caught_up:
            self._count("caught_up")
        self._deliver(msg)

    def _is_duplicate(self, msg: FleetMessage) -> bool:
        """Per sender, profiles and hellos count in sequence order; forgets (idempotent) by their own number."""
        if msg.kind == "forget":
            key = (msg.sender, msg.seq)
            if key in self._forgets_seen:
                return True
            self._forgets_seen[key] = None
            _bound(self._forgets_seen, MAX_FORGOTTEN)
            return False
        if msg.seq <= self._max_seq.get(msg.sender, 0):
            return True
        self._max_seq[msg.sender] = msg.seq
        self._max_seq.move_to_end(msg.sender)
        _bound(self._max_seq, MAX_SENDERS)
        return False

    def _remember_forgotten(self, global_id: int) -> None:
        with self._forgotten_lock:
            self._forgotten[global_id] = None
            self._forgotten.move_to_end(global_id)
            _bound(self._forgotten, MAX_FORGOTTEN)

    def _is_forgotten(self, global_id: int | None) -> bool:
        with self._forgotten_lock:
            return global_id is not None and global_id in self._forgotten

    def _deliver(self, msg: FleetMessage) -> None:
        if self._on_message is None:
            with self._inbox_ready:
                if len(self._inbox) == self._inbox.maxlen:
                    self._count("inbox_dropped")
                self._inbox.append(msg)
                self._inbox_ready.notify()
            return
        try:
            self._on_message(msg)
        except Exception:  # a consumer's bug must not stop the fleet feed: counted and logged with its trace
            self._count("callback_errors")
            logger.exception("bridge: on_message raised for %s/%d", msg.camera, msg.track_id)

    # -------------------------------------------------------------------------------------- stats

    @property
    def stats(self) -> BridgeStats:
        with self._work:
            counts = dict(self._counts)
            backlog = len(self._outbox) + len(self._erase) + self._in_flight
            rejected = Rejections(**self._rejected)
            lagging, leading = self._still_off()
        return BridgeStats(
            connected=self._connected,
            last_error=self._last_error,
            subscribed=self._subscribed.is_set(),
            backlog=backlog,
            rejected=rejected,
            lagging=lagging,
            leading=leading,
            **counts,
        )

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _reject(self, reason: BridgeRejectReason, detail: str) -> None:
        with self._lock:
            self._rejected[reason] += 1
        self._log.warn(
            f"reject-{reason}", "bridge %s: rejected a %s message: %s", self.camera, reason, detail
        )

    def _set_connected(self, value: bool) -> None:
        if value and not self._connected:
            logger.info("bridge %s: connected to Valkey at %s", self.camera, redact(self.url))
        self._connected = value

    def _lost(self, client: Any, side: str, error: BaseException, working: bool) -> None:
        """Close a broken client after an error; count and log the loss: of a ``working`` connection (the
        sender's connected, the receiver's subscribed), else a failed try."""
        if side == "send":
            self._set_connected(False)
            self._registry_at = (
                -math.inf
            )  # register again once back: a restarted Valkey has lost the registry
        self._count("reconnects" if working else "reconnect_failures")
        self._last_error = str(error)
        refusal = _refusal_in(error)
        self._refused[side] = "" if refusal is None else str(refusal)
        if not isinstance(error, valkey_errors()):
            logger.error("bridge %s: unexpected error on the %s thread", self.camera, side, exc_info=error)
        self._log.warn(
            f"lost-{side}", "bridge %s: Valkey %s failed (%s); reconnecting", self.camera, side, error
        )
        if client is not None:
            try:
                client.close()
            except valkey_errors() as e:
                logger.debug("bridge %s: closing a broken client: %s", self.camera, e)


def _estimate(msg: FleetMessage, item_bytes: int) -> int:
    """Bytes ``msg`` adds to a batch blob: its vectors and its meta entry (label, place and all)."""
    k, d = (int(n) for n in msg.embeddings.shape)
    return k * d * item_bytes + item_meta_bytes(msg)


def _latest_profile(batch: Batch | None, track: str) -> FleetMessage | None:
    """The last profile with exemplars of track ``track`` (a decimal string) in ``batch``."""
    if batch is None:
        return None
    found = [
        m
        for m in batch.messages
        if m.kind == "profile" and m.embeddings.shape[0] and str(m.track_id) == track
    ]
    return found[-1] if found else None


def _profile_gids(profiles: Iterable[FleetMessage]) -> set[int]:
    """The global ids ``profiles`` name, those of their earlier spells included (what a forget must find)."""
    gids = {m.global_id for m in profiles if m.global_id is not None}
    return gids.union(e.global_id for m in profiles for e in m.earlier)


def _without_spell(msg: FleetMessage, gid: int) -> FleetMessage:
    """``msg`` without an earlier spell of ``gid`` (a forgotten id is named nowhere)."""
    if not any(e.global_id == gid for e in msg.earlier):
        return msg
    return with_fields(msg, earlier=tuple(e for e in msg.earlier if e.global_id != gid))


def _gid_list(gids: Iterable[int]) -> str:
    """The global ids of a stored batch as the scripts search them: ",3,7," ("" for none)."""
    ordered = sorted(gids)
    return "".join(f",{g}" for g in ordered) + "," if ordered else ""


def _bound(d: OrderedDict[Any, Any], size: int) -> None:
    while len(d) > size:
        d.popitem(last=False)


def stream_entries(client: Any, keys: FleetKeys, camera: str) -> Iterable[tuple[str, dict[bytes, bytes]]]:
    """Every entry of ``camera``'s log (tools and tests): (id, fields)."""
    start = "-"
    while True:
        entries = client.xrange(keys.log(camera), start, "+", count=CATCHUP_PAGE)
        for entry_id, entry in entries:
            yield _text(entry_id), cast(dict[bytes, bytes], entry)
        if len(entries) < CATCHUP_PAGE:
            return
        start = "(" + _text(entries[-1][0])
