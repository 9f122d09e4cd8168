"""Direct Redis access for the read and write paths: one round trip each.

Used when the store is ``django_redis.cache.RedisCache`` (default client) or
Django's ``django.core.cache.backends.redis.RedisCache``. It talks to the
store's own redis-py client (same connection pool, same serializer and
compressor), always to the primary, never a replica: a replica's lag could
serve an entry whose tag was already bumped on the primary.

* Reads are one ``MGET`` of the entry and its version keys, decoded here
  (skipping the store's per-key overhead).
* Writes that must read the current versions first (``set``, ``add``,
  ``set_with_tags``) run as one Lua script: it reads the versions, creates the
  missing ones, and writes the entry stamped with them, atomically. So ``add``
  is atomic even over an invalidated entry.

On Redis an entry is stored as ``b"\\x00fk1:" + b",".join(tokens) + b"\\x00" +
payload`` (payload = the store's serializer/compressor output), so the Lua
script can stamp it without unpickling. Entries written through the store's
own API (a pickled ``(tokens, value)`` tuple) are read as well.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

__all__ = ["RedisAccess", "forget_access", "redis_access"]

HEADER = b"\x00fk1:"
#: Entries that also carry (expiry, compute seconds) for early recomputation.
HEADER_META = b"\x00fk2:"
#: Entries per script call in :meth:`RedisAccess.stamp_many`.
STAMP_CHUNK = 500

# KEYS[1..n]: the version keys; KEYS[n+1..]: the entries, stamped alike.
# ARGV[1]: 'set' or 'add' (add: one entry); ARGV[2]: entry PX (-1 forever,
# <= 0 delete); ARGV[3]: version PX (-1 forever); ARGV[4]: the stamp the client
# expects ('' when none); ARGV[5]: n; ARGV[6..5+n]: fresh tokens for missing
# versions; then one value per entry, already stamped with ARGV[4] (the bare
# payload when ARGV[4] is ''). Returns the stamp written (the current tokens),
# or 0 when 'add' found a live entry. The client learns the stamp, so the next
# write usually needs no restamping here (no copy of the payload inside Lua).
_STAMP_LUA = """
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
    if (kind == '\\0fk1:' or kind == '\\0fk2:')
        and string.sub(cur, 6, 6 + string.len(stamp)) == stamp .. '\\0' then
      return 0
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
_STAMP_SHA = hashlib.sha1(_STAMP_LUA.encode()).hexdigest()


class RedisAccess:
    """Raw access to one Redis store. Build with :func:`redis_access`."""

    def __init__(self, store: Any, client: Any, dumps: Any, loads: Any) -> None:
        self.store = store
        self._client = client  # zero-arg callable returning the primary's redis.Redis
        self._dumps = dumps
        self._loads = loads
        self._keys: dict[str, str] = {}
        self._fallback_loads = getattr(getattr(store, "client", None), "decode", loads)
        # Last stamp written per tuple of version keys: the expected stamp of the next write.
        self._stamps: dict[tuple[str, ...], bytes] = {}

    def inner(self, key: str) -> str:
        """Return the store's own key for our *key* (its KEY_PREFIX and VERSION applied)."""
        made = self._keys.get(key)
        if made is None:
            if len(self._keys) > 200_000:
                self._keys.clear()
            made = self._keys[key] = str(self.store.make_key(key))
        return made

    def _px(self, timeout: Any) -> int:
        """Milliseconds to keep a key; -1 = forever; <= 0 = expire now."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.store.default_timeout
        if timeout is None:
            return -1
        return max(1, int(timeout * 1000)) if timeout > 0 else 0

    def decode(self, raw: bytes) -> Any:
        """Decode one stored value: an entry (``(tokens, value)``) or a version token."""
        if raw[:1].isdigit():
            return int(raw)  # a version token, stored as plain digits
        if raw.startswith(HEADER):
            end = raw.index(b"\x00", 5)
            tokens = tuple(map(int, raw[5:end].split(b",")))
            return (tokens, self._loads(raw[end + 1 :]))
        if raw.startswith(HEADER_META):
            end = raw.index(b"\x00", 5)
            end2 = raw.index(b"\x00", end + 1)
            tokens = tuple(map(int, raw[5:end].split(b",")))
            expiry, delta = map(float, raw[end + 1 : end2].split(b","))
            return (tokens, self._loads(raw[end2 + 1 :]), expiry, delta)
        return self._fallback_loads(raw)

    def mget(self, keys: Sequence[str]) -> dict[str, Any]:
        """Return ``{key: decoded}`` for the keys present, in one ``MGET``."""
        inner = self.inner
        # execute_command, not Redis.mget: the wrapper's argument juggling and
        # per-call import cost ~10 µs on a 100 µs read (measured, redis-py 8.1).
        raws = self._client().execute_command("MGET", *[inner(k) for k in keys])
        out = {}
        for k, r in zip(keys, raws, strict=True):
            if r is None:
                continue
            # Version tokens are plain digits: decode them inline (most values of a read).
            out[k] = int(r) if 48 <= r[0] <= 57 else self.decode(r)
        return out

    def _entry_bytes(self, tokens: Sequence[int], value: Any, meta: Sequence[float] = ()) -> bytes:
        """Encode an entry: header with the version tokens (and *meta*), then the payload."""
        stamp = b",".join(str(t).encode() for t in tokens)
        if meta:
            extra = f"{meta[0]:.3f},{meta[1]:.6f}".encode()
            return HEADER_META + stamp + b"\x00" + extra + b"\x00" + self._dumps(value)
        return HEADER + stamp + b"\x00" + self._dumps(value)

    def set_entry(
        self,
        entry: str,
        tokens: Sequence[int],
        value: Any,
        timeout: Any,
        add: bool = False,
        meta: Sequence[float] = (),
    ) -> bool:
        """Write *value* stamped with *tokens* (versions read before it was computed).

        *meta* is ``(expiry, compute_seconds)`` for early recomputation, or empty.
        """
        data = self._entry_bytes(tokens, value, meta)
        px = self._px(timeout)
        client = self._client()
        if px == 0:
            client.delete(self.inner(entry))
            return True
        return bool(client.set(self.inner(entry), data, px=None if px < 0 else px, nx=add))

    def set_tokens(self, tokens: dict[str, int], timeout: float | None) -> None:
        """Write version *tokens* (a bump), one pipelined round trip, no MULTI."""
        pipe = self._client().pipeline(transaction=False)
        px = None if timeout is None else max(1, int(timeout * 1000))
        for key, token in tokens.items():
            pipe.set(self.inner(key), token, px=px)
        pipe.execute()

    def add_tokens(self, tokens: dict[str, int], timeout: float | None) -> dict[str, int]:
        """Create missing version keys (``SET NX``) and return every key's token, one round trip."""
        pipe = self._client().pipeline(transaction=False)
        px = None if timeout is None else max(1, int(timeout * 1000))
        for key, token in tokens.items():
            pipe.set(self.inner(key), token, px=px, nx=True)
            pipe.get(self.inner(key))
        replies = pipe.execute()
        return {
            k: int(replies[2 * i + 1])
            for i, k in enumerate(tokens)
            if replies[2 * i + 1] is not None
        }

    def set_entry_unlock(
        self,
        entry: str,
        tokens: Sequence[int],
        value: Any,
        timeout: Any,
        lock: str,
        meta: Sequence[float] = (),
    ) -> None:
        """Write an entry and release its stampede lock in one round trip."""
        data = self._entry_bytes(tokens, value, meta)
        px = self._px(timeout)
        pipe = self._client().pipeline(transaction=False)
        if px == 0:
            pipe.delete(self.inner(entry))
        else:
            pipe.set(self.inner(entry), data, px=None if px < 0 else px)
        pipe.delete(self.inner(lock))
        pipe.execute()

    def stamp(
        self,
        entry: str,
        version_keys: Sequence[str],
        value: Any,
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
        add: bool = False,
    ) -> bool:
        """Write *value* stamped with the versions current now, in one round trip (Lua).

        Missing versions are created with *fresh* tokens. With *add*, nothing
        is written if a live entry (stamped with the current versions) exists;
        returns False then.
        """
        vkeys = tuple(version_keys)
        expected = self._stamps.get(vkeys, b"")
        payload = self._dumps(value)
        if expected:
            payload = HEADER + expected + b"\x00" + payload
        vpx = -1 if version_timeout is None else max(1, int(version_timeout * 1000))
        inner = self.inner
        keys = [*[inner(k) for k in vkeys], inner(entry)]
        mode = "add" if add else "set"
        stamp = self._eval(
            keys, (mode, self._px(timeout), vpx, expected, len(vkeys), *fresh, payload)
        )
        if not stamp:
            return False  # add: a live entry exists
        if stamp != expected:
            self._learn(vkeys, stamp)
        return True

    def stamp_many(
        self,
        values: Mapping[str, Any],
        version_keys: Sequence[str],
        timeout: Any,
        version_timeout: float | None,
        fresh: Sequence[int],
    ) -> None:
        """Write each ``{entry: value}`` stamped with the current *version_keys* (Lua).

        One script call (one round trip) per :data:`STAMP_CHUNK` entries, so a
        large ``set_many`` never holds the server for long.
        """
        vkeys = tuple(version_keys)
        expected = self._stamps.get(vkeys, b"")
        head = HEADER + expected + b"\x00" if expected else b""
        dumps, inner = self._dumps, self.inner
        vpx = -1 if version_timeout is None else max(1, int(version_timeout * 1000))
        fixed_keys = [inner(k) for k in vkeys]
        fixed_args = ["set", self._px(timeout), vpx, expected, len(vkeys), *fresh]
        items = list(values.items())
        for i in range(0, len(items), STAMP_CHUNK):
            chunk = items[i : i + STAMP_CHUNK]
            keys = [*fixed_keys, *[inner(entry) for entry, _ in chunk]]
            stamp = self._eval(keys, [*fixed_args, *[head + dumps(value) for _, value in chunk]])
            if stamp != expected:  # learn it: the next chunk and write need no restamp
                self._learn(vkeys, stamp)
                expected = fixed_args[3] = stamp
                head = HEADER + stamp + b"\x00"

    def _eval(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the stamping script (``EVALSHA``; loaded first if the server lacks it)."""
        client = self._client()
        try:
            return client.execute_command("EVALSHA", _STAMP_SHA, len(keys), *keys, *args)
        except Exception as exc:
            from redis.exceptions import NoScriptError  # cold path: first call on a server

            if not isinstance(exc, NoScriptError):
                raise
            client.script_load(_STAMP_LUA)
            return client.execute_command("EVALSHA", _STAMP_SHA, len(keys), *keys, *args)

    def _learn(self, vkeys: tuple[str, ...], stamp: bytes) -> None:
        """Remember *stamp* as the one the next write over *vkeys* should expect (bounded)."""
        if len(self._stamps) >= 4096:
            self._stamps.clear()
        self._stamps[vkeys] = stamp


def _build(store: Any) -> RedisAccess | None:
    cls = f"{type(store).__module__}.{type(store).__qualname__}"
    if cls == "django_redis.cache.RedisCache":
        client = store.client
        if type(client).__name__ != "DefaultClient":
            return None  # sharded / herd clients: use the generic path

        def dumps(value: Any) -> bytes:
            return client.encode(value, allow_int=False)

        loads = client.decode
        compressor = getattr(client, "_compressor", None)
        serializer = getattr(client, "_serializer", None)
        if type(compressor).__name__ == "IdentityCompressor" and serializer is not None:
            # What client.decode does for a payload that is never an int,
            # minus the int() attempt and the no-op decompress.
            loads = serializer.loads
        return RedisAccess(store, lambda: client.get_client(write=True), dumps, loads)
    if cls == "django.core.cache.backends.redis.RedisCache":
        cache_client = store._cache
        serializer = cache_client._serializer
        protocol = getattr(serializer, "protocol", pickle.HIGHEST_PROTOCOL)

        def pdumps(value: Any) -> bytes:
            return pickle.dumps(value, protocol)

        return RedisAccess(
            store, lambda: cache_client.get_client(None, write=True), pdumps, serializer.loads
        )
    return None


_lock = threading.Lock()
_access: weakref.WeakKeyDictionary[Any, RedisAccess | None] = weakref.WeakKeyDictionary()


def redis_access(store: Any) -> RedisAccess | None:
    """Return the :class:`RedisAccess` of *store*, or ``None`` if it is not a supported Redis store."""
    try:
        return _access[store]
    except KeyError:
        with _lock:
            acc = _access[store] = _build(store)
        return acc


def forget_access(store: Any) -> None:
    """Drop the :class:`RedisAccess` of a retired *store*.

    It references the store, so the weak key alone would never let the entry go.
    """
    with _lock:
        _access.pop(store, None)
