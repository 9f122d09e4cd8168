"""The redis-py adapter (sync): one round trip per call, through the store's own client.

Used for django-redis (its default client, or a subclass of it that keeps its
connection handling, such as its ``SentinelClient``) and Django's ``RedisCache``,
subclasses included
(django-prometheus's instrumented backends, a team's own). It talks to the
store's redis-py client (same connection pool, serializer and compressor),
always to the primary: a replica's lag could serve an entry whose tag was
already bumped there. The encoding is :mod:`.redis_codec`'s.

* Each call is one round trip: its commands, packed by the codec (a read's
  ``MGET`` once per set of keys), are sent on a pooled connection with
  redis-py's own connection calls and retry policy (``get_connection``,
  ``send_packed_command``, ``read_response``, ``release``).
  ``execute_command`` and redis-py's pipelines packed the same commands again
  on every call and recorded redis-py's OpenTelemetry metrics: about 5 µs of a
  20 µs read, and most of a bump's client CPU (measured, redis-py 8.1;
  ``Redis.mget`` cost 10 µs more). So these calls do not appear in redis-py's
  own command metrics.
* A read is one ``MGET``; writes that must read the versions first run one
  Lua script (:meth:`~RedisAdapter.stamp`); bumps and version creation are
  one pipeline (no ``MULTI``).

Its async twin (:meth:`RedisAdapter.aio`) is :mod:`.redis_asyncio`'s, on a
``redis.asyncio`` client built from the same connection settings (for a
``SentinelClient`` store: the same sentinels, service and options,
:class:`~.redis_asyncio.SentinelConnection`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .base import AsyncStoreAdapter
from .failover import FailoverEpoch
from .redis_codec import Plan, RedisCodec, django_codec, django_redis_codec
from .redis_ops import CodecRequests

if TYPE_CHECKING:  # redis.asyncio is imported once an async call needs it
    from .redis_asyncio import Connection, SentinelConnection

__all__ = ["RedisAdapter", "redis_adapter"]


class RedisAdapter(CodecRequests):
    """A :class:`~.base.StoreAdapter` for a Redis store, on its own redis-py client.

    *client* returns the primary's ``redis.Redis`` (a zero-argument callable:
    the store may rebuild it); *connection* is how :mod:`.redis_asyncio`
    reaches the same server: ``(url, pool class, pool keyword arguments)``,
    a :class:`~.redis_asyncio.SentinelConnection` (through the same
    sentinels), or ``None`` when it cannot (custom connection factories): the
    async face then runs this adapter in a worker thread. Each method sends
    the codec's :class:`~.redis_codec.Plan` in one round trip.
    """

    stamps = True
    atomic_create = True
    drops_writes = False
    per_process = True
    #: The key of the store's failover epoch, which every entry records, or ``None``
    #: (see :mod:`.failover`; :meth:`use_failover_epoch`).
    failover_key: str | None = None

    def __init__(
        self,
        store: Any,
        client: Callable[[], Any],
        codec: RedisCodec,
        connection: Connection,
    ) -> None:
        self.store = store
        self.codec = codec
        self.connection = connection
        self._client = client
        self._aio: dict[int, tuple[Any, int, AsyncStoreAdapter]] = {}
        self._epoch: FailoverEpoch | None = None

    def use_failover_epoch(self) -> None:
        """Keep a failover epoch (:mod:`.failover`): for a store whose primary can change.

        Every connection, sync and async, is checked before its first
        command; every entry records the epoch (``failover_key``). Idempotent.
        """
        if self._epoch is None:
            self._epoch = FailoverEpoch(self.codec)
            self._aio.clear()  # async adapters made before check nothing: made again
            self.failover_key = self._epoch.key

    def _do(self, plan: Plan) -> Any:
        """Send *plan* on a pooled connection, in one round trip; return what it makes of the replies.

        What ``Redis.execute_command`` (and a pipeline without ``MULTI``) does,
        minus the packing and the metrics: the connection's retry policy (a
        connection error disconnects, then the whole plan is sent again: every
        plan is idempotent), the maintenance reconnect, the release to the pool.
        """
        pool = self._client().connection_pool
        conn = pool.get_connection()
        epoch = self._epoch
        try:
            if epoch is None:
                replies = conn.retry.call_with_retry(
                    lambda: _exchange(conn, plan), lambda _error: conn.disconnect()
                )
            else:  # each (re)connection checked before its first command

                def exchange() -> list[Any]:
                    epoch.check(conn)  # runs the health check first
                    replies = _exchange(conn, plan, check_health=False)
                    epoch.confirm(conn)
                    return replies

                replies = conn.retry.call_with_retry(exchange, lambda _error: conn.disconnect())
        finally:
            reconnect = getattr(conn, "should_reconnect", None)
            if reconnect is not None and reconnect():
                conn.disconnect()
                conn.connect()
            pool.release(conn)
        return plan.finish(replies)

    def redis_client(self) -> Any:
        """Return the store's ``redis.Redis`` client of the primary (for operator tools: purge)."""
        return self._client()

    def _eval(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the stamping script (``EVALSHA``; loaded first if the server lacks it)."""
        try:
            return self._do(self.codec.evalsha(keys, args))
        except Exception as exc:
            from redis.exceptions import NoScriptError  # cold path: first call on a server

            if not isinstance(exc, NoScriptError):
                raise
            self._do(self.codec.script_load())
            return self._do(self.codec.evalsha(keys, args))

    def aio(self) -> AsyncStoreAdapter:
        """Return the async adapter for the running event loop (one per loop and process).

        ``redis.asyncio`` connections belong to the loop that opened them, and
        ``async_to_sync`` runs a new loop per call: a client is kept per loop
        (and per process: a forked child opens its own).
        """
        from .redis_asyncio import for_running_loop

        return for_running_loop(self._aio, self, self.codec, self.connection, self._epoch)

    def close(self) -> None:
        """Forget the async clients (their pools close when collected); the store keeps its own."""
        self._aio.clear()


def _exchange(conn: Any, plan: Plan, check_health: bool = True) -> list[Any]:
    """Send *plan* on *conn* and read every reply; a reply that fails leaves no others unread.

    *check_health*: redis-py's health check before the send (``False`` where the
    failover epoch ran it already: see :meth:`.failover.FailoverEpoch.check`).
    """
    conn.send_packed_command((plan.packed,), check_health=check_health)  # iterable of chunks
    replies, error = [], None
    for _ in range(plan.replies):
        try:
            replies.append(conn.read_response())
        except Exception as exc:  # a reply error: read the others, then raise the first
            if not _is_reply_error(exc):
                raise
            error = error or exc
            replies.append(None)
    if error is not None:
        raise error
    return replies


def _is_reply_error(exc: BaseException) -> bool:
    """True for an error Redis replied with (the connection is still in step), not a broken one."""
    from redis.exceptions import ResponseError  # redis-py is optional: imported once in use

    return isinstance(exc, ResponseError)


def _django_redis_connection(store: Any) -> Connection:
    """How to reach django-redis *store*'s primary: ``(url, pool class, pool kwargs)``,
    a :class:`~.redis_asyncio.SentinelConnection` (its ``SentinelConnectionFactory``),
    or ``None``."""
    from django_redis.pool import ConnectionFactory, SentinelConnectionFactory

    client = store.client
    factory = client.connection_factory
    if type(factory) is SentinelConnectionFactory:
        return _django_redis_sentinel(factory, str(client._server[0]))
    if type(factory) is not ConnectionFactory:
        return None  # a custom factory: its own way of finding the primary
    params = dict(factory.make_connection_params(str(client._server[0])))
    params.pop("parser_class", None)
    url = params.pop("url")
    return url, factory.pool_cls, {**params, **factory.pool_cls_kwargs}


def _django_redis_sentinel(factory: Any, url: str) -> SentinelConnection:
    """The settings django-redis's ``SentinelConnectionFactory`` *factory* reaches *url*'s primary with.

    *url* is the ``SentinelClient``'s primary ``LOCATION`` (``redis://service/db``,
    with its ``is_master`` query option, dropped here: the async client always
    asks the sentinels for the primary).
    """
    from urllib.parse import parse_qs, urlencode, urlparse

    from redis.connection import parse_url

    from .redis_asyncio import SentinelConnection

    parsed = urlparse(url)
    query = parse_qs(parsed.query, keep_blank_values=True)
    query.pop("is_master", None)
    url_kwargs = parse_url(parsed._replace(query=urlencode(query, doseq=True)).geturl())
    for name in ("host", "port"):  # the sentinels name the primary's address
        url_kwargs.pop(name, None)
    params = dict(factory.make_connection_params(""))
    for name in ("url", "parser_class"):
        params.pop(name, None)
    return SentinelConnection(
        sentinels=tuple((str(host), int(port)) for host, port in factory.options["SENTINELS"]),
        service_name=str(parsed.hostname),
        sentinel_kwargs=factory.options.get("SENTINEL_KWARGS"),
        connection_kwargs={**params, **factory.pool_cls_kwargs},
        url_kwargs=url_kwargs,
    )


def _django_connection(store: Any) -> tuple[str, type, dict[str, Any]] | None:
    """How to reach Django ``RedisCache`` *store*'s primary (its first server)."""
    cache_client = store._cache
    options = {k: v for k, v in cache_client._pool_options.items() if k != "parser_class"}
    return str(cache_client._servers[0]), cache_client._pool_class, options


def redis_adapter(store: Any) -> RedisAdapter | None:
    """Return a :class:`RedisAdapter` for *store*, or ``None`` if it is not a Redis store we can drive.

    By what the store is, subclasses included: django-redis's ``RedisCache``
    with its ``DefaultClient`` (or a subclass that is not the sharded or herd
    client, which find or encode keys their own way), or Django's
    ``RedisCache``. With django-redis's ``SentinelClient`` the adapter talks
    to the primary the sentinels name (never a replica: django-redis's own
    reads would go to one), sync and async (``redis.asyncio``'s sentinel
    client), and keeps a failover epoch (:mod:`.failover`).
    """
    from django.core.cache.backends.redis import RedisCache

    if isinstance(store, RedisCache):
        cache_client = store._cache
        return _adapter(
            store,
            lambda: cache_client.get_client(None, write=True),
            django_codec(store),
            _django_connection(store),
        )
    try:
        from django_redis.cache import RedisCache as DjangoRedisCache
        from django_redis.client import DefaultClient, HerdClient, SentinelClient, ShardClient
    except ImportError:  # django-redis not installed: no store can be one
        return None
    if not isinstance(store, DjangoRedisCache):
        return None
    client = store.client
    if not isinstance(client, DefaultClient) or isinstance(client, (ShardClient, HerdClient)):
        return None
    made = _adapter(
        store,
        lambda: client.get_client(write=True),
        django_redis_codec(store),
        _django_redis_connection(store),
    )
    if isinstance(client, SentinelClient):
        made.use_failover_epoch()
    return made


def _adapter(
    store: Any,
    client: Callable[[], Any],
    codec: RedisCodec,
    connection: Connection,
) -> RedisAdapter:
    """The adapter, its codec encoding text as the store's connections do."""
    options = client().connection_pool.connection_kwargs
    codec.encoding = options.get("encoding", "utf-8")
    codec.errors = options.get("encoding_errors", "strict")
    return RedisAdapter(store, client, codec, connection)
