"""How entries and versions are kept in Redis: the format, the stamping script, the store's settings.

Shared by the sync adapter (:mod:`.redis_py`, redis-py) and the async one
(:mod:`.redis_asyncio`, ``redis.asyncio``): both write the same bytes, with the
store's own serializer, compressor and key function, and learn the same
expected stamps.

An entry is stored as ``b"\\x00fk1:" + b",".join(tokens) + b"\\x00" + payload``
(the payload is the store's serializer/compressor output), or with
``\\x00fk2:`` and ``expiry,compute_seconds`` before the payload for early
recomputation; an entry that holds dependencies (:mod:`..deps`) as
``b"\\x00fk3:" + stamp + b"\\x00" + meta + b"\\x00" + keys + b"\\x00" + tokens +
b"\\x00" + payload`` (*meta* empty or ``expiry,compute_seconds``; *keys* and
*tokens* comma-joined: our keys are ASCII without commas); a version token as
its decimal digits. The stamping script
(``set``, ``add``, ``set_with_tags``, ``set_many``) reads the versions, creates
the missing ones and writes the entry stamped with them, atomically, without
unpickling. Entries written through the store's own Django API (a pickled
``(tokens, value)`` tuple) are read as well.

Tokens read from Redis stay bytes (``b"123"``): a read compares them with the
stamp's parts as they are, never converting them.

Each operation is a :class:`Plan` made here: its commands packed in RESP (a
read's ``MGET`` packed once per set of keys), the number of replies, and what
to make of them. The sync and the async adapter only send a plan in one round
trip and finish it, so they cannot differ in what they send.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from django.core.cache.backends.base import DEFAULT_TIMEOUT

__all__ = [
    "HEADER",
    "HEADER_DEPS",
    "HEADER_META",
    "STAMP_CHUNK",
    "STAMP_LUA",
    "STAMP_SHA",
    "Plan",
    "RedisCodec",
]

HEADER = b"\x00fk1:"
#: Entries that also carry (expiry, compute seconds) for early recomputation.
HEADER_META = b"\x00fk2:"
#: Entries that also hold dependencies (their meta may be empty).
HEADER_DEPS = b"\x00fk3:"
#: Entries per script call in ``stamp_many``.
STAMP_CHUNK = 500

# KEYS[1..n]: the version keys; KEYS[n+1..]: the entries, stamped alike.
# ARGV[1]: 'set' or 'add' (add: one entry); ARGV[2]: entry PX (-1 forever,
# <= 0 delete); ARGV[3]: version PX (-1 forever); ARGV[4]: the stamp the client
# expects ('' when none); ARGV[5]: n; ARGV[6..5+n]: fresh tokens for missing
# versions; then one value per entry, already stamped with ARGV[4] (the bare
# payload when ARGV[4] is ''). Returns the stamp written (the current tokens),
# 0 when 'add' found a live entry, or -1 when 'add' found an entry holding
# dependencies (fk3, nested caches) stamped alike: only the client can read its
# dependency keys (on a cluster they may live in other slots) and tell. The client learns the stamp, so the next
# write usually needs no restamping here (no copy of the payload inside Lua).
STAMP_LUA = """
local n = tonumber(ARGV[5])
local current = redis.call('MGET', unpack(KEYS, 1, n))
local toks = {}
for i = 1, n do
  local t = current[i]
  if not t then
    t = ARGV[5 + i]
    if tonumber(ARGV[3]) >= 0 then
      redis.call('SET', KEYS[i], t, 'PX', ARGV[3])
    else
      redis.call('SET', KEYS[i], t)
    end
  end
  toks[i] = t
end
local stamp = table.concat(toks, ',')
if ARGV[1] == 'add' then
  -- A live entry (either header: fk2 carries early-recompute data) stops an add.
  local cur = redis.call('GET', KEYS[n + 1])
  if cur then
    local kind = string.sub(cur, 1, 5)
    if string.sub(cur, 6, 6 + string.len(stamp)) == stamp .. '\\0' then
      if kind == '\\0fk1:' or kind == '\\0fk2:' then
        return 0
      elseif kind == '\\0fk3:' then
        return -1
      end
    end
  end
end
local restamp = stamp ~= ARGV[4]
local header, skip = '', 0
if restamp then
  header = '\\0fk1:' .. stamp .. '\\0'
  if ARGV[4] ~= '' then
    skip = string.len(ARGV[4]) + 6
  end
end
local px = tonumber(ARGV[2])
for j = 1, #KEYS - n do
  local body = ARGV[5 + n + j]
  if restamp then
    body = header .. string.sub(body, skip + 1)
  end
  if px == -1 then
    redis.call('SET', KEYS[n + j], body)
  elseif px <= 0 then
    redis.call('DEL', KEYS[n + j])
  else
    redis.call('SET', KEYS[n + j], body, 'PX', px)
  end
end
return stamp
"""
STAMP_SHA = hashlib.sha1(STAMP_LUA.encode()).hexdigest()


class Plan(NamedTuple):
    """One round trip: *packed* commands (RESP), the *replies* they get, and *finish(replies)*."""

    packed: bytes
    replies: int
    finish: Callable[[list[Any]], Any]


def _first(replies: list[Any]) -> Any:
    return replies[0]


def _none(replies: list[Any]) -> None:
    return None


def _true(replies: list[Any]) -> bool:
    return True


def _truth(replies: list[Any]) -> bool:
    return bool(replies[0])


def _stamp_bytes(tokens: Sequence[Any]) -> bytes:
    """The comma-joined tokens of a stamp (bytes as read from Redis, or ints)."""
    try:
        return b",".join(tokens)
    except TypeError:  # ints (fresh tokens, or an envelope read through the Django API)
        return b",".join(t if type(t) is bytes else str(t).encode() for t in tokens)


class RedisCodec:
    """One Redis store's encoding: keys, timeouts, entries, and the stamps learnt by its writes.

    *store* is the Django cache (django-redis or Django's ``RedisCache``);
    *dumps*/*loads* its serializer and compressor for a payload;
    *fallback_loads* decodes a value written through its own API.
    """

    def __init__(
        self,
        store: Any,
        dumps: Callable[[Any], bytes],
        loads: Callable[[bytes], Any],
        fallback_loads: Callable[[bytes], Any],
        encoding: str = "utf-8",
        errors: str = "strict",
    ) -> None:
        self.store = store
        self.dumps = dumps
        self.loads = loads
        self.fallback_loads = fallback_loads
        self.encoding = encoding  # of text sent, as the store's connections encode it
        self.errors = errors
        self._keys: dict[str, str] = {}
        # Last stamp written per tuple of version keys: the expected stamp of the next write.
        self._stamps: dict[tuple[str, ...], bytes] = {}
        # The MGET of a tuple of keys, packed (RESP): reads of the same entry repeat it.
        self._mgets: dict[tuple[str, ...], bytes] = {}

    def inner(self, key: str) -> str:
        """Return the store's own key for our *key* (its KEY_PREFIX and VERSION applied)."""
        made = self._keys.get(key)
        if made is None:
            if len(self._keys) > 200_000:
                self._keys.clear()
            made = self._keys[key] = str(self.store.make_key(key))
        return made

    def pack(self, *commands: Sequence[Any]) -> bytes:
        """*commands* in RESP: each argument bytes, text (encoded) or a number."""
        out = []
        append, encoding, errors = out.append, self.encoding, self.errors
        for command in commands:
            append(b"*%d\r\n" % len(command))
            for arg in command:
                kind = type(arg)
                if kind is str:
                    arg = arg.encode(encoding, errors)
                elif kind is int:
                    arg = b"%d" % arg
                elif kind is not bytes:
                    arg = repr(arg).encode()
                append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(out)

    # -- plans: one round trip each ------------------------------------------------

    def read(self, keys: Sequence[str], entries: int) -> Plan:
        """One ``MGET``; the first *entries* values decoded as envelopes, the rest left as bytes.

        Packed once per tuple of keys: a read of the same entry sends the same bytes.
        """
        packed = self._mgets.get(keys) if type(keys) is tuple else None  # type: ignore[arg-type]
        if packed is None:
            inner = self.inner
            packed = self.pack(("MGET", *[inner(k) for k in keys]))
            if type(keys) is tuple:
                if len(self._mgets) >= 8192:
                    self._mgets.clear()
                self._mgets[keys] = packed  # type: ignore[index]
        decode = self.decode_entry

        def finish(replies: list[Any]) -> list[Any]:
            raws = replies[0]
            for i in range(entries):
                raws[i] = decode(raws[i])
            return raws

        return Plan(packed, 1, finish)

    def write(self, key: str, envelope: Sequence[Any], timeout: Any, add: bool) -> Plan:
        """One ``SET`` (``NX`` with *add*; a ``DEL`` for a timeout of 0)."""
        px = self.px(timeout)
        if px == 0:
            return Plan(self.pack(("DEL", self.inner(key))), 1, _true)
        command = ["SET", self.inner(key), self.entry_bytes(envelope)]
        if px > 0:
            command += ("PX", px)
        if add:
            command.append("NX")
        return Plan(self.pack(command), 1, _truth)

    def write_unlock(self, key: str, envelope: Sequence[Any], timeout: Any, lock: str) -> Plan:
        """The entry's ``SET`` (or ``DEL``) and the lock's ``DEL``, pipelined."""
        first = self.write(key, envelope, timeout, False)
        return Plan(first.packed + self.pack(("DEL", self.inner(lock))), 2, _none)

    def set_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> Plan:
        """``SET ... PX`` of each token, pipelined, no ``MULTI``."""
        inner, px = self.inner, self.version_px(timeout)
        tail = () if px is None else ("PX", px)
        packed = self.pack(*[("SET", inner(k), t, *tail) for k, t in tokens.items()])
        return Plan(packed, len(tokens), _none)

    def create_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> Plan:
        """``SET NX`` + ``GET`` per key, pipelined: every key's token after the creation."""
        inner, px = self.inner, self.version_px(timeout)
        tail = ("NX",) if px is None else ("PX", px, "NX")
        commands = []
        for key, token in tokens.items():
            commands += (("SET", inner(key), token, *tail), ("GET", inner(key)))
        keys = list(tokens)

        def finish(replies: list[Any]) -> dict[str, Any]:
            return {k: replies[2 * i + 1] for i, k in enumerate(keys) if replies[2 * i + 1]}

        return Plan(self.pack(*commands), len(commands), finish)

    def delete(self, key: str) -> Plan:
        return Plan(self.pack(("DEL", self.inner(key))), 1, _truth)

    def delete_many(self, keys: Sequence[str]) -> Plan:
        return Plan(self.pack(("DEL", *[self.inner(k) for k in keys])), 1, _none)

    def touch(self, key: str, timeout: Any) -> Plan:
        """``PEXPIRE`` (``PERSIST`` for ``None``, ``DEL`` for 0), as Django's ``touch``."""
        px = self.px(timeout)
        if px < 0:
            return Plan(self.pack(("PERSIST", self.inner(key))), 1, _truth)
        if px == 0:
            return Plan(self.pack(("DEL", self.inner(key))), 1, _truth)
        return Plan(self.pack(("PEXPIRE", self.inner(key), px)), 1, _truth)

    def set_many(self, envelopes: Mapping[str, Sequence[Any]], timeout: Any) -> Plan:
        """The entries' ``SET`` (envelopes whose stamps the caller read), pipelined."""
        plans = [self.write(k, e, timeout, False) for k, e in envelopes.items()]
        return Plan(b"".join(p.packed for p in plans), len(plans), lambda replies: [])

    def evalsha(self, keys: Sequence[Any], args: Sequence[Any]) -> Plan:
        """One call of the stamping script (the caller loads it on ``NOSCRIPT``)."""
        return Plan(self.pack(("EVALSHA", STAMP_SHA, len(keys), *keys, *args)), 1, _first)

    def script_load(self) -> Plan:
        return Plan(self.pack(("SCRIPT", "LOAD", STAMP_LUA)), 1, _none)

    def px(self, timeout: Any) -> int:
        """Milliseconds to keep a key for Django *timeout*: -1 = forever; <= 0 = expire now."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.store.default_timeout
        if timeout is None:
            return -1
        return max(1, int(timeout * 1000)) if timeout > 0 else 0

    @staticmethod
    def version_px(timeout: float | None) -> int | None:
        """``PX`` of a version key written with *timeout* seconds (``None``: no expiry)."""
        return None if timeout is None else max(1, int(timeout * 1000))

    def decode_entry(self, raw: bytes | None) -> Any:
        """Return the envelope stored as *raw* (tokens as bytes), or what else is there."""
        if raw is None:
            return None
        if raw.startswith(HEADER):
            end = raw.index(b"\x00", 5)
            return (tuple(raw[5:end].split(b",")), self.loads(raw[end + 1 :]))
        if raw.startswith(HEADER_META):
            end = raw.index(b"\x00", 5)
            end2 = raw.index(b"\x00", end + 1)
            expiry, delta = map(float, raw[end + 1 : end2].split(b","))
            return (tuple(raw[5:end].split(b",")), self.loads(raw[end2 + 1 :]), expiry, delta)
        if raw.startswith(HEADER_DEPS):
            return self._decode_deps(raw)
        if raw[:1].isdigit():
            return raw  # a token: never an entry
        env = self.fallback_loads(raw)
        if type(env) is tuple and len(env) >= 2 and type(env[0]) is tuple:
            # Written through the store's Django API: int tokens, as bytes here.
            return (tuple(str(t).encode() for t in env[0]), *env[1:])
        return env

    def _decode_deps(self, raw: bytes) -> tuple:
        """An ``fk3`` entry: ``(tokens, value[, expiry, compute_seconds], (keys, tokens))``."""
        parts = raw[5:].split(b"\x00", 4)
        stamp, meta, keys, tokens, payload = parts
        deps = (tuple(keys.decode().split(",")), tuple(tokens.split(b",")))
        value = self.loads(payload)
        if meta:
            expiry, delta = map(float, meta.split(b","))
            return (tuple(stamp.split(b",")), value, expiry, delta, deps)
        return (tuple(stamp.split(b",")), value, deps)

    def entry_bytes(self, envelope: Sequence[Any]) -> bytes:
        """Encode an envelope: the header with its tokens (and meta, dependencies), then the payload."""
        stamp = _stamp_bytes(envelope[0])
        if len(envelope) in (3, 5):
            keys, tokens = envelope[-1]
            meta = f"{envelope[2]:.3f},{envelope[3]:.6f}".encode() if len(envelope) == 5 else b""
            return b"\x00".join(
                (
                    HEADER_DEPS + stamp,
                    meta,
                    ",".join(keys).encode(),
                    _stamp_bytes(tokens),
                    self.dumps(envelope[1]),
                )
            )
        if len(envelope) > 2:
            extra = f"{envelope[2]:.3f},{envelope[3]:.6f}".encode()
            return HEADER_META + stamp + b"\x00" + extra + b"\x00" + self.dumps(envelope[1])
        return HEADER + stamp + b"\x00" + self.dumps(envelope[1])

    # -- the stamping script -------------------------------------------------------

    def stamp_call(
        self,
        entry: str,
        version_keys: Sequence[str],
        value: Any,
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
        add: bool,
    ) -> tuple[list[str], tuple, tuple[str, ...], bytes]:
        """Return ``(keys, args, version keys, expected stamp)`` of one script call."""
        vkeys = tuple(version_keys)
        expected = self._stamps.get(vkeys, b"")
        payload = self.dumps(value)
        if expected:
            payload = HEADER + expected + b"\x00" + payload
        vpx = self.version_px(version_timeout) or -1
        inner = self.inner
        keys = [*[inner(k) for k in vkeys], inner(entry)]
        args = ("add" if add else "set", self.px(timeout), vpx, expected, len(vkeys), *fresh)
        return keys, (*args, payload), vkeys, expected

    def stamped(self, vkeys: tuple[str, ...], expected: bytes, stamp: Any) -> bool | None:
        """Learn the stamp a script call returned; False when an ``add`` found a live entry.

        ``None`` when an ``add`` found an entry that holds dependencies (nested
        caches): it is live only if they hold, which the caller must check.
        """
        if stamp == -1:
            return None
        if not stamp:
            return False
        if stamp != expected:
            self.learn(vkeys, stamp)
        return True

    def stamp_many_calls(
        self,
        values: Mapping[str, Any],
        version_keys: Sequence[str],
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
    ) -> tuple[tuple[str, ...], list[list[str]], list[Any], list[list[bytes]]]:
        """Split a ``stamp_many`` into script calls of :data:`STAMP_CHUNK` entries.

        Returns ``(version keys, keys per call, fixed args, payloads per call)``;
        payloads are pre-stamped with the expected stamp (``fixed[3]``), to be
        re-headed by :meth:`restamp` when a call returns another one.
        """
        vkeys = tuple(version_keys)
        expected = self._stamps.get(vkeys, b"")
        head = HEADER + expected + b"\x00" if expected else b""
        dumps, inner = self.dumps, self.inner
        vpx = self.version_px(version_timeout) or -1
        fixed_keys = [inner(k) for k in vkeys]
        fixed = ["set", self.px(timeout), vpx, expected, len(vkeys), *fresh]
        items = list(values.items())
        keys, payloads = [], []
        for i in range(0, len(items), STAMP_CHUNK):
            chunk = items[i : i + STAMP_CHUNK]
            keys.append([*fixed_keys, *[inner(entry) for entry, _ in chunk]])
            payloads.append([head + dumps(value) for _, value in chunk])
        return vkeys, keys, fixed, payloads

    @staticmethod
    def restamp(payloads: list[bytes], old: bytes, new: bytes) -> list[bytes]:
        """Re-head *payloads* pre-stamped with *old* (``b""``: bare) with stamp *new*."""
        skip = len(HEADER) + len(old) + 1 if old else 0
        head = HEADER + new + b"\x00"
        return [head + p[skip:] for p in payloads]

    def learn(self, vkeys: tuple[str, ...], stamp: bytes) -> None:
        """Remember *stamp* as the one the next write over *vkeys* should expect (bounded)."""
        if len(self._stamps) >= 4096:
            self._stamps.clear()
        self._stamps[vkeys] = stamp


def django_redis_codec(store: Any) -> RedisCodec:
    """The codec of a django-redis store (its client's serializer and compressor)."""
    client = store.client

    def dumps(value: Any) -> bytes:
        return client.encode(value, allow_int=False)

    from django_redis.compressors.identity import IdentityCompressor

    loads = client.decode
    compressor = getattr(client, "_compressor", None)
    serializer = getattr(client, "_serializer", None)
    if type(compressor) is IdentityCompressor and serializer is not None:
        # What client.decode does for a payload that is never an int,
        # minus the int() attempt and the no-op decompress.
        loads = serializer.loads
    return RedisCodec(store, dumps, loads, client.decode)


def django_codec(store: Any) -> RedisCodec:
    """The codec of Django's own ``RedisCache`` (its serializer's pickle protocol)."""
    serializer = store._cache._serializer
    protocol = getattr(serializer, "protocol", pickle.HIGHEST_PROTOCOL)

    def dumps(value: Any) -> bytes:
        return pickle.dumps(value, protocol)

    return RedisCodec(store, dumps, serializer.loads, serializer.loads)
