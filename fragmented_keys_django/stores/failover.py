"""The failover epoch of a Redis store whose primary can change.

On for django-redis's ``SentinelClient`` stores; on any Redis store of the Redis
adapter with the alias option ``FAILOVER_EPOCH`` (a primary endpoint that moves on
failover, a restart from persistence: a restart changes the replication id too).

Redis replicates asynchronously: a tag bump the old primary acknowledged may
never reach the replica promoted in its place, and the entries that bump
invalidated would be served again. The failover epoch closes that hole without
a round trip on the hot path:

* the store keeps one key, :data:`~..keys.FAILOVER_EPOCH_KEY`, holding a token
  derived from the serving primary's replication id (``master_replid`` of
  ``INFO replication``, which a promoted replica changes);
* every entry of the store records that key's token like a tag version
  (``policy._store_keys``), so a read is still one ``MGET`` (one more key);
* before the first command on each new connection, :meth:`FailoverEpoch.check`
  reads ``INFO replication`` and the key (one round trip) and, when the key
  does not hold this primary's token, writes it: the first connection to a
  promoted replica, in any process, invalidates every entry cached before the
  failover, before any command of that process reads one there. A connection
  that reaches a replica is refused (``ConnectionError``: redis-py's retry
  reconnects through the sentinels).

Connections to a primary end when it fails over (it dies, or the sentinels
reconfigure it and close its clients), so a process never reads a new primary
through a connection checked on the old one.

The cost: a cold cache after each failover (and restart), one round trip per
new connection, one key per read. Measured: ``make bench-sentinel``.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from ..keys import FAILOVER_EPOCH_KEY
from ..metrics import count

__all__ = ["FailoverEpoch", "epoch_token"]

logger = logging.getLogger("fragmented_keys_django")


def epoch_token(replid: bytes) -> int:
    """Return the epoch token of a primary with replication id *replid*: 62 bits, odd."""
    return (int.from_bytes(hashlib.sha256(replid).digest()[:8], "big") >> 2) | 1


def _field(info: bytes, name: bytes) -> bytes | None:
    """The value of field *name* in the text of ``INFO``, or ``None``."""
    for line in info.splitlines():
        if line.startswith(name + b":"):
            return line[len(name) + 1 :].strip()
    return None


class FailoverEpoch:
    """The failover epoch of one Redis store, checked once per connection (see the module).

    *codec* is the store's :class:`~.redis_codec.RedisCodec` (its key function
    and RESP packing); :attr:`key` is the epoch's key as the protocol names it.
    """

    def __init__(self, codec: Any, key: str = FAILOVER_EPOCH_KEY) -> None:
        self.key = key
        self._codec = codec
        self._inner = codec.inner(key)
        self._probe = codec.pack(("INFO", "replication"), ("GET", self._inner))
        # Sockets checked: a reconnection makes a new socket, which is checked again.
        self._checked: weakref.WeakSet[Any] = weakref.WeakSet()

    def check(self, conn: Any) -> None:
        """Before a command on redis-py connection *conn*: check its server once per socket.

        Raises redis-py's ``ConnectionError`` if the server is not a primary
        (the caller's retry reconnects), and what the connection raises.

        The connection's health check runs here, first: a failed one reconnects
        (redis-py's retry), and the new socket is then checked like any other.
        The caller must send its own command with ``check_health=False`` and
        :meth:`confirm` the socket afterwards, or redis-py could reconnect
        inside the send to a server never checked (a restarted or promoted
        primary whose epoch key still holds the old token).
        """
        if conn._sock is not None:
            conn.check_health()
        sock = conn._sock
        if sock is not None and sock in self._checked:
            return
        conn.connect()
        conn.send_packed_command((self._probe,))
        info, current = conn.read_response(), conn.read_response()
        rewrite = self._verdict(conn, info, current)
        if rewrite is not None:
            conn.send_packed_command((rewrite,))
            conn.read_response()
        self._checked.add(conn._sock)

    def confirm(self, conn: Any) -> None:
        """After a command on *conn*: raise ``ConnectionError`` if it ran on a socket never checked.

        Replies read on such a socket are dropped and the caller's retry sends
        the whole exchange again, checked (every exchange is idempotent).
        """
        if conn._sock is None or conn._sock not in self._checked:
            raise RedisConnectionError(
                "the connection reconnected to a server the failover epoch did not check"
            )

    async def acheck(self, conn: Any) -> None:
        """Async twin of :meth:`check`, for a ``redis.asyncio`` connection (once per stream)."""
        if conn._writer is not None:
            await conn.check_health()
        writer = conn._writer
        if writer is not None and writer in self._checked:
            return
        await conn.connect()
        await conn.send_packed_command((self._probe,))
        info, current = await conn.read_response(), await conn.read_response()
        rewrite = self._verdict(conn, info, current)
        if rewrite is not None:
            await conn.send_packed_command((rewrite,))
            await conn.read_response()
        self._checked.add(conn._writer)

    def aconfirm(self, conn: Any) -> None:
        """:meth:`confirm` for a ``redis.asyncio`` connection (its stream writer)."""
        if conn._writer is None or conn._writer not in self._checked:
            raise RedisConnectionError(
                "the connection reconnected to a server the failover epoch did not check"
            )

    def _verdict(self, conn: Any, info: Any, current: Any) -> bytes | None:
        """The ``SET`` to send (packed) if the epoch is not this primary's, else ``None``.

        *info* and *current* are the replies to ``INFO replication`` and the
        epoch's ``GET``. Raises redis-py's ``ConnectionError`` if the server
        is not a primary.
        """
        if isinstance(info, str):
            info = info.encode()
        role, replid = _field(info, b"role"), _field(info, b"master_replid")
        where = f"{getattr(conn, 'host', '?')}:{getattr(conn, 'port', '?')}"
        if role != b"master" or not replid:
            raise RedisConnectionError(
                f"Redis at {where} is not a primary (INFO replication: role {role!r}): the "
                f"failover epoch needs the primary; reconnecting"
            )
        token = epoch_token(replid)
        if isinstance(current, str):
            current = current.encode()
        if current == b"%d" % token:
            return None
        if current is not None:
            count("-", "failover_epoch")
            logger.warning(
                "Redis primary %s (replication id %s) is not the one the store's entries "
                "were cached under (a failover, a restart, or its epoch key was lost): every "
                "entry of the store is invalidated",
                where,
                replid.decode(errors="replace"),
                extra={"alias": "-", "tenant": None, "operation": "failover_epoch"},
            )
        return self._codec.pack(("SET", self._inner, token))
