"""The Redis Cluster adapter: redis-py's ``RedisCluster`` (sync) and ``redis.asyncio`` cluster (async).

Used for :class:`~fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache`
(subclasses included). The encoding is :mod:`.redis_codec`'s (the same entry bytes
and stamping script as on one Redis); what differs is how a plan reaches the cluster:

* every key one operation of one tenant needs shares the tenant's hash slot (see
  :mod:`..keys`), so a read is one ``MGET``, a stamped write one ``EVALSHA`` and
  a bump of a tenant's tags one command (one ``SET``, or one script setting them
  all), each on the node owning the slot. The cluster client routes by slot and
  follows ``MOVED`` (the slot map is refreshed) and ``ASK`` (resharding);
* versions shared by every tenant (global tags, the safety net's "all tenants"
  versions) are kept as one copy per hash slot; their bump deletes the copy in
  every slot, one script per primary, sent to every primary before any reply is
  read (one round trip per node, concurrently; ``asyncio.gather`` on the async
  adapter). Keys a primary cannot delete (not local: their slot is moving), and
  every key of a primary whose script failed, are deleted one by one through the
  client's redirects;
* a tenant spread over N slots (``TENANT_SLOTS``): a bump of its versions writes
  them in each slot, one command per slot in one cluster pipeline (one round trip
  per node; gathered on the async adapter); a read over keys of several slots
  (``get_many_with_tags``) is one ``MGET`` per slot, pipelined;
* ``TRYAGAIN`` (a multi-key command on a slot whose keys are split by a migration)
  and a cluster that is briefly down (failover) are retried with backoff for up
  to :data:`RETRY_SECONDS`; then the error goes to the caller's outage policy
  (logged, counted, the operation's fallback). Errors of the cluster client that
  are not ``RedisError`` (``SlotNotCoveredError``) are raised as ``ClusterError``,
  a store error;
* ``NOSCRIPT`` (a primary that never saw the script: a new or flushed node, a
  promoted replica: Redis 7 does not replicate its script cache) loads the
  adapter's scripts on the primaries the client knows, then sends the script's
  body (``EVAL``), routed by its keys like the ``EVALSHA``: it runs even where
  the client's map of primaries was stale.

The store's ``client.cluster()`` is the process's sync ``RedisCluster``; the adapter
exposes it as :attr:`RedisClusterAdapter.client`. Async calls use one
``redis.asyncio.cluster.RedisCluster`` per event loop and process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..exceptions import ConfigurationError
from ..keys import hash_slot, slot_copies, tenant_slot_keys
from .base import AsyncStoreAdapter
from .redis_codec import STAMP_LUA, STAMP_SHA, Plan, RedisCodec, django_codec
from .redis_ops import AsyncCodecRequests, CodecRequests

__all__ = [
    "RETRY_SECONDS",
    "AsyncRedisClusterAdapter",
    "ClusterCodec",
    "RedisClusterAdapter",
    "cluster_adapter",
]

#: How long a call keeps retrying ``TRYAGAIN`` and a cluster that is down (seconds).
RETRY_SECONDS = 3.0

# KEYS: version keys of one slot; ARGV[1]: PX (-1: none); ARGV[2..]: their tokens.
SET_TOKENS_LUA = """
local px = tonumber(ARGV[1])
for i = 1, #KEYS do
  if px >= 0 then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', px)
  else
    redis.call('SET', KEYS[i], ARGV[i + 1])
  end
end
return #KEYS
"""
SET_TOKENS_SHA = hashlib.sha1(SET_TOKENS_LUA.encode()).hexdigest()

# ARGV: keys of this node, any slots (undeclared, so the client need not route them).
# Returns the keys this node could not delete (not local: their slot is moving).
DELETE_COPIES_LUA = """#!lua flags=allow-cross-slot-keys
local failed = {}
for i = 1, #ARGV do
  local reply = redis.pcall('DEL', ARGV[i])
  if type(reply) == 'table' and reply.err then
    failed[#failed + 1] = ARGV[i]
  end
end
return failed
"""
DELETE_COPIES_SHA = hashlib.sha1(DELETE_COPIES_LUA.encode()).hexdigest()

_SCRIPTS = {STAMP_SHA: STAMP_LUA, SET_TOKENS_SHA: SET_TOKENS_LUA}


class ClusterCodec(RedisCodec):
    """The codec of a cluster store: plans hold commands (tuples), not packed bytes.

    The cluster client packs and routes each command itself (by the slot of its
    keys), so :meth:`pack` returns the commands as given.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._copies: dict[str, list[tuple[int, str]]] = {}
        self._spreads: dict[tuple[str, ...], bool] = {}
        self._direct: dict[tuple[str, ...], tuple[int, bytes]] = {}

    def pack(self, *commands: Sequence[Any]) -> list[tuple]:  # type: ignore[override]
        return [tuple(command) for command in commands]

    def set_many(self, envelopes: Mapping[str, Sequence[Any]], timeout: Any) -> Plan:
        plans = [self.write(k, e, timeout, False) for k, e in envelopes.items()]
        commands = [command for p in plans for command in p.packed]
        return Plan(commands, len(commands), lambda replies: [])  # type: ignore[arg-type]

    def read(self, keys: Sequence[str], entries: int) -> Plan:
        """One ``MGET``; keys of several slots (a tenant spread over ``TENANT_SLOTS``, read
        many at once) one ``MGET`` per slot, pipelined (one round trip per node)."""
        plan = super().read(keys, entries)
        command = plan.packed[0]
        slots = [hash_slot(k) for k in command[1:]] if self._spread(keys, command) else None
        if slots is None:
            return plan
        groups: dict[int, list[int]] = {}
        for i, slot in enumerate(slots):
            groups.setdefault(slot, []).append(i)
        order = list(groups.values())
        commands = [("MGET", *[command[1 + i] for i in idx]) for idx in order]
        decode = self.decode_entry

        def finish(replies: list[Any]) -> list[Any]:
            raws: list[Any] = [None] * len(slots)
            for idx, values in zip(order, replies, strict=True):
                for i, value in zip(idx, values, strict=True):
                    raws[i] = value
            for i in range(entries):
                raws[i] = decode(raws[i])
            return raws

        return Plan(commands, len(commands), finish)  # type: ignore[arg-type]

    def direct(self, keys: Sequence[str], command: tuple) -> tuple[int, bytes]:
        """``(slot, packed command)`` of a one-slot read *command* (remembered per tuple of keys)."""
        hit = self._direct.get(keys) if type(keys) is tuple else None  # type: ignore[arg-type]
        if hit is None:
            hit = (hash_slot(command[1]), RedisCodec.pack(self, command))
            if type(keys) is tuple:
                if len(self._direct) >= 8192:
                    self._direct.clear()
                self._direct[keys] = hit  # type: ignore[index]
        return hit

    def _spread(self, keys: Sequence[str], command: tuple) -> bool:
        """True if *command*'s keys (store keys of *keys*) span hash slots (remembered per tuple)."""
        known = self._spreads.get(keys) if type(keys) is tuple else None  # type: ignore[arg-type]
        if known is None:
            known = len({hash_slot(k) for k in command[1:]}) > 1
            if type(keys) is tuple:
                if len(self._spreads) >= 8192:
                    self._spreads.clear()
                self._spreads[keys] = known  # type: ignore[index]
        return known

    def copies_of(self, key: str) -> list[tuple[int, str]] | None:
        """``(slot, store key)`` of every slot's copy of shared version *key*; ``None`` if not one.

        Remembered per key (bounded): a global bump names the same versions again.
        """
        hit = self._copies.get(key)
        if hit is None:
            every = slot_copies(key)
            if every is None:
                return None
            made = [self.store.make_key(k) for k in every]
            hit = [(hash_slot(k), k) for k in made]
            if len(self._copies) >= 256:
                self._copies.clear()
            self._copies[key] = hit
        return hit

    def set_tokens_by_slot(
        self, tokens: Mapping[str, int], timeout: float | None
    ) -> tuple[list[tuple], list[str]]:
        """Split a bump: one command per hash slot, and the shared copies to delete.

        Returns ``(commands, copies)``: a ``SET`` for a slot with one key, else
        one ``EVALSHA`` of the token-setting script; *copies* are ``(slot, store
        key)`` of every slot's copy of the shared versions among *tokens*.
        """
        px = self.version_px(timeout)
        by_slot: dict[int, list[tuple[str, int]]] = {}
        copies: list[tuple[int, str]] = []
        inner = self.inner
        for key, token in tokens.items():
            every = self.copies_of(key)
            if every is not None:
                copies += every
                continue
            for one in tenant_slot_keys(key) or (key,):  # each of the tenant's TENANT_SLOTS
                made = inner(one)
                by_slot.setdefault(hash_slot(made), []).append((made, token))
        commands: list[tuple] = []
        for pairs in by_slot.values():
            if len(pairs) == 1:
                (made, token), tail = pairs[0], (() if px is None else ("PX", px))
                commands.append(("SET", made, token, *tail))
            else:
                keys = [k for k, _ in pairs]
                args = [-1 if px is None else px, *[t for _, t in pairs]]
                commands.append(("EVALSHA", SET_TOKENS_SHA, len(keys), *keys, *args))
        return commands, copies


def _errors() -> tuple[type[BaseException], ...]:
    """The errors of redis-py's cluster client that a call retries for :data:`RETRY_SECONDS`."""
    from redis.exceptions import ClusterError, TryAgainError

    return (TryAgainError, ClusterError)


#: Returned by the direct read when the routed path must answer.
_ROUTED = object()


def _redirects() -> tuple[type[BaseException], ...]:
    """Replies that mean another node (or later): ``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``."""
    from redis.exceptions import AskError, ClusterDownError, TryAgainError

    return (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError


def _client_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisClusterException, RedisError

    return (RedisError, RedisClusterException)


def _connection_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import ConnectionError, TimeoutError

    return (ConnectionError, TimeoutError)


def _backoff(attempt: int) -> float:
    return random.uniform(0.5, 1.0) * min(0.01 * 2**attempt, 0.2)


def _converted(exc: BaseException) -> BaseException:
    """A store error for *exc*: cluster-client errors that are not ``RedisError`` become ``ClusterError``."""
    from redis.exceptions import ClusterError, RedisClusterException

    if isinstance(exc, RedisClusterException):
        error = ClusterError(f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    return exc


def _with_bodies(commands: list[tuple]) -> list[tuple]:
    """*commands* with each ``EVALSHA`` of ours as an ``EVAL`` of the script's body.

    What a node that lacks a script (``NOSCRIPT``: a promoted replica, a new or
    flushed node) is sent instead: routed by its keys like the ``EVALSHA``,
    whatever the client's map of primaries, and the node caches the body for
    the next ``EVALSHA``.
    """
    return [
        ("EVAL", _SCRIPTS[c[1]], *c[2:]) if c[0] == "EVALSHA" and c[1] in _SCRIPTS else c
        for c in commands
    ]


def _is_noscript(exc: BaseException) -> bool:
    from redis.exceptions import NoScriptError

    return isinstance(exc, NoScriptError)


class RedisClusterAdapter(CodecRequests):
    """A :class:`~.base.StoreAdapter` for a Redis Cluster store, on its ``RedisCluster``.

    *cluster* returns the store's sync ``redis.cluster.RedisCluster`` (a
    zero-argument callable); *async_options* returns ``(seed nodes, keyword
    arguments)`` for the async client. See the module docstring.
    """

    stamps = True
    atomic_create = True
    drops_writes = False
    per_process = True

    def __init__(
        self,
        store: Any,
        cluster: Callable[[], Any],
        codec: ClusterCodec,
        async_options: Callable[[], tuple[list[tuple[str, int]], dict[str, Any]]],
    ) -> None:
        self.store = store
        self.codec = codec
        self._cluster = cluster
        self._async_options = async_options
        self._aio: dict[int, tuple[Any, int, AsyncRedisClusterAdapter]] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The store's sync ``redis.cluster.RedisCluster`` (e.g. to reach the node owning a slot)."""
        return self._cluster()

    # -- sending -----------------------------------------------------------------

    def _retrying(self, call: Callable[[], Any]) -> Any:
        """Run *call*; retry ``TRYAGAIN`` and a cluster briefly down for :data:`RETRY_SECONDS`."""
        retried = _errors()
        deadline = None
        attempt = 0
        while True:
            try:
                return call()
            except retried:
                now = time.monotonic()
                deadline = deadline or now + RETRY_SECONDS
                if now >= deadline:
                    raise
                attempt += 1
                time.sleep(_backoff(attempt))
            except Exception as exc:
                converted = _converted(exc)
                if converted is exc:
                    raise
                raise converted from exc

    def _command(self, command: tuple) -> Any:
        client = self._cluster()
        try:
            return client.execute_command(*command)
        except Exception as exc:
            if not _is_noscript(exc):
                raise
            for body in _SCRIPTS.values():  # on the primaries the client knows: next calls
                client.script_load(body)
            return client.execute_command(*_with_bodies([command])[0])

    def _send(self, commands: list[tuple]) -> list[Any]:
        """Send *commands*: one command as it is, more in a cluster pipeline (grouped per node)."""
        if len(commands) == 1:
            return [self._retrying(lambda: self._command(commands[0]))]

        def pipelined() -> list[Any]:
            client, sent = self._cluster(), commands
            for attempt in (0, 1):
                pipe = client.pipeline()
                for command in sent:
                    pipe.execute_command(*command)
                try:
                    return pipe.execute()
                except Exception as exc:
                    if attempt or not _is_noscript(exc):
                        raise
                    for body in _SCRIPTS.values():
                        client.script_load(body)
                    sent = _with_bodies(sent)  # a node that never saw them
            raise AssertionError("unreachable")

        return self._retrying(pipelined)

    def _do(self, plan: Plan) -> Any:
        return plan.finish(self._send(plan.packed))  # type: ignore[arg-type]

    # -- the adapter protocol -----------------------------------------------------

    def read(self, keys: Sequence[str], entries: int) -> list[Any]:
        """One ``MGET`` on the node owning the keys' slot.

        Sent straight to that node (the client's slot map, a pooled connection,
        the ``MGET`` packed once per tuple of keys): redis-py's routing costs
        more CPU than the read. Any redirect or connection error is left to
        the routed path (``MOVED``, ``ASK``, ``TRYAGAIN``, retries).
        """
        plan = self.codec.read(keys, entries)
        if len(plan.packed) == 1:
            reply = self._direct(*self.codec.direct(keys, plan.packed[0]))
            if reply is not _ROUTED:
                return plan.finish([reply])
        return self._do(plan)

    def _direct(self, slot: int, packed: bytes) -> Any:
        """Send *packed* to the primary of *slot* and return its reply, or :data:`_ROUTED`."""
        try:
            client = self._cluster()
        except _client_errors():  # not built (no node answers): the routed path reports it
            return _ROUTED
        nodes = client.nodes_manager.slots_cache.get(slot)
        redis_node = nodes[0].redis_connection if nodes else None
        if redis_node is None:
            return _ROUTED
        pool = redis_node.connection_pool
        try:
            conn = pool.get_connection()
        except (OSError, _connection_errors()):  # the node unreachable: the routed path retries
            return _ROUTED
        try:
            conn.send_packed_command((packed,))
            return conn.read_response()
        except _redirects():  # the connection is in step: the routed path follows it
            return _ROUTED
        except (OSError, _connection_errors()):  # broken: dropped, the routed path retries
            conn.disconnect()
            return _ROUTED
        finally:
            pool.release(conn)

    def set_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> None:
        """One command per hash slot; shared versions: their copy in every slot deleted."""
        commands, copies = self.codec.set_tokens_by_slot(tokens, timeout)
        if copies:
            self._delete_copies(copies)
        if len(commands) == 1:  # one slot: a tenant's bump is one command
            self._retrying(lambda: self._command(commands[0]))
        elif commands:  # a tenant over several slots: a pipeline, one round trip per node
            self._send(commands)

    def delete_many(self, keys: Sequence[str]) -> None:
        """One ``DEL`` per key, pipelined per node (the keys may span slots)."""
        if keys:
            self._send([("DEL", self.codec.inner(k)) for k in keys])

    def _eval(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        command = ("EVALSHA", STAMP_SHA, len(keys), *keys, *args)
        return self._retrying(lambda: self._command(command))

    def aio(self) -> AsyncStoreAdapter:
        """Return the async adapter for the running event loop (one per loop and process).

        ``redis.asyncio`` connections belong to the loop that opened them, and
        ``async_to_sync`` runs a new loop per call; adapters of closed loops
        and of a parent process are dropped.
        """
        loop = asyncio.get_running_loop()
        pid = os.getpid()
        hit = self._aio.get(id(loop))
        if hit is not None and hit[0] is loop and hit[1] == pid:
            return hit[2]
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        with self._lock:
            for key, (other, other_pid, _) in list(self._aio.items()):
                if other.is_closed() or other_pid != pid:
                    del self._aio[key]  # its connections close when collected
            nodes, options = self._async_options()
            client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **options)
            made = AsyncRedisClusterAdapter(self, client)
            self._aio[id(loop)] = (loop, pid, made)
        return made

    def close(self) -> None:
        """Forget the async clients (their connections close when collected); the store keeps its own."""
        self._aio.clear()

    def _delete_copies(self, copies: list[tuple[int, str]]) -> None:
        """Delete *copies* (``(slot, store key)``, every slot): one script per primary, all sent, then read.

        Keys a primary could not delete (not local: their slot is moving), and
        every key of a primary whose script failed, are deleted one by one
        through the client's redirects (``MOVED``, ``ASK``). Raises the first
        error that survives.
        """
        client = self._cluster()
        by_node = _by_node(client.nodes_manager, copies)
        sent, errors = [], []
        for node, keys in by_node.items():
            try:
                pool = client.get_redis_connection(node).connection_pool
                conn = pool.get_connection()
            except Exception:  # the node unreachable: its keys are routed one by one
                errors.append((node, keys))
                continue
            try:
                conn.send_command("EVAL", DELETE_COPIES_LUA, 0, *keys)
                sent.append((node, keys, conn))
            except Exception:  # the same, and the connection goes back to its pool
                conn.disconnect()
                pool.release(conn)
                errors.append((node, keys))
        left: list[str] = []
        for node, keys, conn in sent:
            pool = client.get_redis_connection(node).connection_pool
            try:
                left += [k.decode() for k in conn.read_response()]
            except Exception:  # the whole node: its keys are routed one by one
                left += keys
                conn.disconnect()
            finally:
                pool.release(conn)
        for _node, keys in errors:
            left += keys
        if left:
            self._send([("DEL", k) for k in left])  # routed: follows MOVED / ASK


def _by_node(manager: Any, copies: list[tuple[int, str]]) -> dict[Any, list[str]]:
    """Group the keys of *copies* (``(slot, key)``) by the primary serving their slot.

    *manager* is the client's ``nodes_manager`` (its slot map, as the client
    routes commands); a slot it does not know is asked through
    ``get_node_from_slot`` (which raises ``SlotNotCoveredError``).
    """
    table = getattr(manager, "slots_cache", None) or {}
    by_node: dict[Any, list[str]] = {}
    last, keys = None, []
    for slot, key in copies:  # in slot order: runs of one node
        nodes = table.get(slot)
        node = nodes[0] if nodes else manager.get_node_from_slot(slot)
        if node is not last:
            keys = by_node.setdefault(node, [])
            last = node
        keys.append(key)
    return by_node


class AsyncRedisClusterAdapter(AsyncCodecRequests):
    """The async twin of :class:`RedisClusterAdapter`, on a ``redis.asyncio.cluster.RedisCluster``.

    One per event loop (its connections belong to the loop); the same plans
    and codec (learnt stamps included) as the sync adapter.
    """

    stamps = True
    atomic_create = True
    drops_writes = False

    def __init__(self, sync: RedisClusterAdapter, client: Any) -> None:
        self.store = sync.store
        self.codec = sync.codec
        self.client = client
        self.token = sync.token

    async def _retrying(self, call: Callable[[], Any]) -> Any:
        retried = _errors()
        deadline = None
        attempt = 0
        while True:
            try:
                return await call()
            except retried:
                now = time.monotonic()
                deadline = deadline or now + RETRY_SECONDS
                if now >= deadline:
                    raise
                attempt += 1
                await asyncio.sleep(_backoff(attempt))
            except Exception as exc:
                converted = _converted(exc)
                if converted is exc:
                    raise
                raise converted from exc

    async def _command(self, command: tuple) -> Any:
        client = self.client
        try:
            return await client.execute_command(*command)
        except Exception as exc:
            if not _is_noscript(exc):
                raise
            for body in _SCRIPTS.values():  # on the primaries the client knows: next calls
                await client.script_load(body)
            return await client.execute_command(*_with_bodies([command])[0])

    async def _send(self, commands: list[tuple]) -> list[Any]:
        if len(commands) == 1:
            return [await self._retrying(lambda: self._command(commands[0]))]

        async def pipelined() -> list[Any]:
            client, sent = self.client, commands
            for attempt in (0, 1):
                pipe = client.pipeline()
                for command in sent:
                    pipe.execute_command(*command)
                try:
                    return await pipe.execute()
                except Exception as exc:
                    if attempt or not _is_noscript(exc):
                        raise
                    for body in _SCRIPTS.values():
                        await client.script_load(body)
                    sent = _with_bodies(sent)
            raise AssertionError("unreachable")

        return await self._retrying(pipelined)

    async def _do(self, plan: Plan) -> Any:
        return plan.finish(await self._send(plan.packed))  # type: ignore[arg-type]

    async def read(self, keys: Sequence[str], entries: int) -> list[Any]:
        """One ``MGET``, sent straight to the slot's node as the sync adapter's."""
        plan = self.codec.read(keys, entries)
        if len(plan.packed) == 1:
            reply = await self._direct(*self.codec.direct(keys, plan.packed[0]))
            if reply is not _ROUTED:
                return plan.finish([reply])
        return await self._do(plan)

    async def _direct(self, slot: int, packed: bytes) -> Any:
        """Send *packed* to the primary of *slot*; its reply, or :data:`_ROUTED`.

        A connection whose exchange did not finish cleanly (an error, a
        cancelled task: its reply may still come) is closed before it goes back.
        """
        nodes = self.client.nodes_manager.slots_cache.get(slot)
        if not nodes:  # not initialised yet, or a slot not covered: the routed path
            return _ROUTED
        node = nodes[0]
        try:
            conn = node.acquire_connection()
        except _client_errors():  # every connection of the node in use
            return _ROUTED
        try:
            await node.disconnect_if_needed(conn)
            await conn.send_packed_command(packed)
            reply = await conn.read_response()
        except _redirects():  # in step: the routed path follows the redirect
            node.release(conn)
            return _ROUTED
        except BaseException as exc:
            await conn.disconnect()
            node.release(conn)
            if isinstance(exc, (OSError, *_connection_errors())):
                return _ROUTED  # the routed path retries and refreshes the slot map
            raise
        node.release(conn)
        return reply

    async def set_tokens(self, tokens: Mapping[str, int], timeout: float | None) -> None:
        """One command per slot and one script per primary for shared copies, all gathered."""
        commands, copies = self.codec.set_tokens_by_slot(tokens, timeout)
        calls = [
            self._retrying(lambda command=command: self._command(command)) for command in commands
        ]
        if copies:
            calls.append(self._delete_copies(copies))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def delete_many(self, keys: Sequence[str]) -> None:
        if keys:
            await self._send([("DEL", self.codec.inner(k)) for k in keys])

    async def _eval(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        command = ("EVALSHA", STAMP_SHA, len(keys), *keys, *args)
        return await self._retrying(lambda: self._command(command))

    async def _delete_copies(self, copies: list[tuple[int, str]]) -> None:
        """As the sync adapter's: one script per primary, gathered; failed nodes key by key."""
        client = self.client
        await client.initialize()
        by_node = _by_node(client.nodes_manager, copies)

        async def on(node: Any, keys: list[str]) -> None:
            try:
                left = await client.execute_command(
                    "EVAL", DELETE_COPIES_LUA, 0, *keys, target_nodes=node
                )
                left = [k.decode() for k in left]
            except Exception:  # the whole node: its keys are routed one by one
                left = keys
            if left:  # not local (their slot moving): routed deletes follow MOVED / ASK
                await self._send([("DEL", k) for k in left])

        await asyncio.gather(*[on(node, keys) for node, keys in by_node.items()])


def cluster_adapter(store: Any) -> RedisClusterAdapter | None:
    """Return a :class:`RedisClusterAdapter` for *store*, or ``None`` if it is not a cluster store.

    By what the store is: a
    :class:`~fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache`,
    subclasses included.
    """
    from ..cache_backends.redis_cluster import RedisClusterCache

    if not isinstance(store, RedisClusterCache):
        return None
    client = store.client
    _, options = client.async_options()
    for name in ("read_from_replicas", "load_balancing_strategy"):
        if options.get(name):
            raise ConfigurationError(
                f"RedisClusterCache OPTIONS[{name!r}]={options[name]!r}: the fragmented backend "
                f"reads from primaries only (a replica's lag could serve an entry whose tag was "
                f"already bumped). Remove {name!r} from the store's OPTIONS."
            )
    codec = django_codec(store)
    cluster_codec = ClusterCodec(
        store, codec.dumps, codec.loads, codec.fallback_loads, "utf-8", "strict"
    )
    return RedisClusterAdapter(store, client.cluster, cluster_codec, client.async_options)
