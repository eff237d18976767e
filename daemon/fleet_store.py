"""What the fleet keeps in Valkey: key layout and the server-side (Lua) scripts that keep it consistent.

Key layout (fleet ``F``, camera ``C``; a ``{...}`` hash tag decides the Valkey Cluster slot)::

    reid:{F}:gid          string  global-id counter: INCR is atomic, ids never repeat across processes
    reid:{F}:cameras      zset    camera -> last publish time (ms, the server's clock, as it is read): whom a
                                  catch-up and a forget go through; pruned after the TTL
    reid:{F}:forgets      stream  every forget sent to the fleet: m = its signed batch, g = the id; what a worker
                                  that was not running takes when it starts (MAXLEN ~ MAX_STORED_FORGETS,
                                  MINID ~ now - forget_keep_s, EXPIRE forget_keep_s)
    reid:{F}:forgets:applied  hash  camera -> the last entry of ``forgets`` up to which it applied them all
                                  (signed, daemon/erase_ack.py); EXPIRE forget_keep_s
    reid:{F}:live         channel pub/sub channel of the fleet (not a key; a Cluster relays it to every node);
                                  payload "<stream id>|<sender id>|<batch blob>"
    reid:{F/C}:log        stream  every batch camera C sent: m = blob, g = ",gid,gid," of its profiles, s = sender;
                                  MAXLEN ~ stream_maxlen, MINID ~ now - TTL, EXPIRE TTL
    reid:{F/C}:state      hash    track id -> "<gid>|<stream id>": the batch holding the track's latest profile
    reid:{F/C}:seen       zset    track id -> last update (ms): tracks not updated for the TTL are pruned
    reid:{F/C}:blobs      hash    stream id -> blob of every batch that still holds some track's latest profile
    reid:{F/C}:refs       hash    stream id -> number of tracks whose latest profile it holds, and
                                  "g:<stream id>" -> ",gid,gid," (what a forget must find); a batch whose count
                                  reaches 0 leaves ``blobs``

A camera's five keys share the tag ``{F/C}``: a publish (append to the log, move each track's state to the new
batch, release batches no track needs any more, prune expired tracks, PUBLISH) is one script, atomic on one
slot; so is a catch-up snapshot (the latest batch of every live track, with the stream position it matches).
Different cameras hash to different slots, so a Cluster spreads the writes and the stored state by camera.
The fleet-wide keys (counter, camera registry, the forgets) share ``{F}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FleetKeys:
    """Key and channel names of one fleet (see the module docstring)."""

    fleet: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.fleet):
            raise ValueError(f"fleet name must be 1-64 characters of [A-Za-z0-9_.-], got {self.fleet!r}")

    @property
    def counter(self) -> str:
        return f"reid:{{{self.fleet}}}:gid"

    @property
    def cameras(self) -> str:
        return f"reid:{{{self.fleet}}}:cameras"

    @property
    def channel(self) -> str:
        return f"reid:{{{self.fleet}}}:live"

    @property
    def forgets(self) -> str:
        """The stream of every forget sent to the fleet (RECORD_FORGET_LUA)."""
        return f"reid:{{{self.fleet}}}:forgets"

    @property
    def forgets_applied(self) -> str:
        """The hash of how far each camera applied ``forgets`` (its signed mark)."""
        return f"reid:{{{self.fleet}}}:forgets:applied"

    def erased(self, global_id: int) -> str:
        """The hash of what the cameras said of the forget of ``global_id`` (``daemon.erase_ack``)."""
        return f"reid:{{{self.fleet}}}:erased:{global_id}"

    def camera_keys(self, camera: str) -> tuple[str, str, str, str, str]:
        """(log, state, seen, blobs, refs) of ``camera``: one hash tag, one slot."""
        tag = f"reid:{{{self.fleet}/{camera}}}"
        return f"{tag}:log", f"{tag}:state", f"{tag}:seen", f"{tag}:blobs", f"{tag}:refs"

    def log(self, camera: str) -> str:
        return self.camera_keys(camera)[0]


# Shared by the scripts; KEYS are one camera's (log, state, seen, blobs, refs); ARGV[{ttl}] is the TTL in s.
_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[{ttl}])
local cutoff = string.format('%.0f', now - ttl * 1000)
local function ref_of(v)
  return string.sub(v, string.find(v, '|', 1, true) + 1)
end
local function release(id)
  if redis.call('HINCRBY', KEYS[5], id, -1) <= 0 then
    redis.call('HDEL', KEYS[5], id, 'g:' .. id)
    redis.call('HDEL', KEYS[4], id)
  end
end
local function drop_track(track)
  local v = redis.call('HGET', KEYS[2], track)
  if v then
    release(ref_of(v))
    redis.call('HDEL', KEYS[2], track)
  end
  redis.call('ZREM', KEYS[3], track)
end
local function prune()
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. cutoff, 'LIMIT', 0, 1000)
  for _, track in ipairs(old) do drop_track(track) end
end
local function expire_all()
  for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
end
"""

# ARGV: maxlen, ttl_s, channel, sender, blob, gids (",1,2," or ""), then (track, gid or "", "1" | "0") per
# profile: "1" = it carries exemplars (the track's state moves to this batch), "0" = a keep-alive (the track's
# state stays where it is and only its expiry is renewed). One HINCRBY per batch the tracks leave.
PUBLISH_LUA = (
    _COMMON.replace("{ttl}", "2")
    + """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[5], 'g', ARGV[6], 's', ARGV[4])
local tracks, values, scores = {}, {}, {}
for i = 7, #ARGV, 3 do
  if ARGV[i + 2] == '1' then
    tracks[#tracks + 1] = ARGV[i]
    values[#values + 1] = ARGV[i]
    values[#values + 1] = ARGV[i + 1] .. '|' .. id
    scores[#scores + 1] = now
    scores[#scores + 1] = ARGV[i]
  elseif redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[3], now, ARGV[i])
  end
end
if #tracks > 0 then
  local old = redis.call('HMGET', KEYS[2], unpack(tracks))
  local leaving, fresh, moved = {}, 0, {}
  for i, v in ipairs(old) do
    if not moved[tracks[i]] then
      moved[tracks[i]] = true
      fresh = fresh + 1
      if v then
        local ref = ref_of(v)
        leaving[ref] = (leaving[ref] or 0) + 1
      end
    end
  end
  redis.call('HSET', KEYS[4], id, ARGV[5])
  redis.call('HSET', KEYS[5], 'g:' .. id, ARGV[6])
  redis.call('HINCRBY', KEYS[5], id, fresh)
  for ref, n in pairs(leaving) do
    if redis.call('HINCRBY', KEYS[5], ref, -n) <= 0 then
      redis.call('HDEL', KEYS[5], ref, 'g:' .. ref)
      redis.call('HDEL', KEYS[4], ref)
    end
  end
  redis.call('HSET', KEYS[2], unpack(values))
  redis.call('ZADD', KEYS[3], unpack(scores))
end
redis.call('XTRIM', KEYS[1], 'MINID', '~', cutoff)
prune()
expire_all()
redis.call('PUBLISH', ARGV[3], id .. '|' .. ARGV[4] .. '|' .. ARGV[5])
return id
"""
)

# ARGV: ttl_s. Returns {last stream id, n, track_1, id_1, ... track_n, id_n, id, blob, id, blob, ...}: the batch
# holding each live track's latest profile, the batches themselves, and the stream position they match.
SNAPSHOT_LUA = (
    _COMMON.replace("{ttl}", "1")
    + """
prune()
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local flat = redis.call('HGETALL', KEYS[2])
local out = { (#last > 0) and last[1][1] or '0-0', #flat / 2 }
local ids, seen = {}, {}
for i = 1, #flat, 2 do
  local id = ref_of(flat[i + 1])
  out[#out + 1] = flat[i]
  out[#out + 1] = id
  if not seen[id] then
    seen[id] = true
    ids[#ids + 1] = id
  end
end
for _, id in ipairs(ids) do
  local blob = redis.call('HGET', KEYS[4], id)
  if blob then
    out[#out + 1] = id
    out[#out + 1] = blob
  end
end
return out
"""
)

# A forget's first step on one camera, so that it erases the forgotten id's state and nobody else's: a stored
# batch holds the latest profiles of several tracks under one signature, so the client re-signs each batch
# that holds the id without its profiles. ARGV: gid, ttl_s, then (stream id, new blob, its gids) per batch;
# a batch gone meanwhile is left alone. Then every track state of the id is dropped; returns how many.
REWRITE_LUA = (
    _COMMON.replace("{ttl}", "2")
    + """
local prefix = ARGV[1] .. '|'
for i = 3, #ARGV, 3 do
  if redis.call('HEXISTS', KEYS[4], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
    redis.call('HSET', KEYS[5], 'g:' .. ARGV[i], ARGV[i + 2])
  end
end
local deleted = 0
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  if string.sub(flat[i + 1], 1, #prefix) == prefix then
    drop_track(flat[i])
    deleted = deleted + 1
  end
end
return deleted
"""
)

# KEYS: the fleet's forgets stream. ARGV: blob (the forget's signed batch), gid, maxlen, keep_s. Appends the
# forget, trims what is older than keep_s (MINID ~, on the server's clock) or over maxlen (MAXLEN ~), and renews
# the stream's expiry. Returns the entry id.
RECORD_FORGET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = tonumber(ARGV[4])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'g', ARGV[2], 'm', ARGV[1])
redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', now - keep * 1000))
redis.call('EXPIRE', KEYS[1], keep)
return id
"""

# KEYS: the camera registry. ARGV: camera, ttl_s. Scores the camera with the server's time, which every reader
# of the registry reads it against (a host's clock more than the TTL off the server's listed no camera, or pruned
# every other), and prunes the cameras silent for the TTL.
REGISTER_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - tonumber(ARGV[2]) * 1000))
return now
"""

# A forget's second step on one camera (after REWRITE_LUA). ARGV: gid, start ("-" on the first call), page
# size, ttl_s. The first call drops every stored batch that still holds the gid (which REWRITE_LUA could not
# re-sign: left empty, unreadable, or published meanwhile); each call deletes the gid's log entries in one page
# of the stream (a log entry is a batch signed whole: the other tracks' messages in it go too, their state
# stays). Returns {deleted, next start or ""}.
ERASE_LUA = (
    _COMMON.replace("{ttl}", "4")
    + """
local needle, start, page = ',' .. ARGV[1] .. ',', ARGV[2], tonumber(ARGV[3])
local deleted = 0
if start == '-' then
  local doomed = {}
  local refs = redis.call('HGETALL', KEYS[5])
  for i = 1, #refs, 2 do
    if string.sub(refs[i], 1, 2) == 'g:' and string.find(refs[i + 1], needle, 1, true) then
      doomed[string.sub(refs[i], 3)] = true
    end
  end
  local flat = redis.call('HGETALL', KEYS[2])
  for i = 1, #flat, 2 do
    if doomed[ref_of(flat[i + 1])] then
      redis.call('HDEL', KEYS[2], flat[i])
      redis.call('ZREM', KEYS[3], flat[i])
      deleted = deleted + 1
    end
  end
  for id in pairs(doomed) do
    redis.call('HDEL', KEYS[5], id, 'g:' .. id)
    deleted = deleted + redis.call('HDEL', KEYS[4], id)
  end
end
local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', page)
local ids = {}
for _, e in ipairs(entries) do
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'g' and string.find(f[i + 1], needle, 1, true) then ids[#ids + 1] = e[1] end
  end
end
for i = 1, #ids, 1000 do
  deleted = deleted + redis.call('XDEL', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
end
if #entries < page then return {deleted, ''} end
return {deleted, '(' .. entries[#entries][1]}
"""
)
