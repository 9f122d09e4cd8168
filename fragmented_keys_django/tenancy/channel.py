"""Tenant config notifications over Redis pub/sub, confirmed by every subscriber.

:func:`publish` sends a tenant id (or ``*``: every tenant) on the channel and
waits until every process subscribed at that moment has confirmed it dropped
the tenant's store, or until ``timeout`` seconds have passed. So once
``notify_tenant_config_changed()`` returns, a subscribed process that confirmed
serves nothing from the tenant's old store; one that did not confirm in time is
logged and falls back to the config-version recheck (``TENANT_CONFIG_RECHECK``).

A message is ``"\\x00fkd1 <ack key> <tenant>"``. Each subscriber runs the
handler, then pushes one item on the ack key (a Redis list that expires after a
minute); the publisher counts them with ``BLPOP``. A message without the prefix
(published by an older version) is taken as a bare tenant id and not confirmed.

One daemon thread per Redis URL listens (:class:`Listener`), resubscribing
with backoff after a lost connection (a Redis restart).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["ACK_TIMEOUT", "DEFAULT_CHANNEL", "Listener", "listener", "publish"]

logger = logging.getLogger("fragmented_keys_django")

DEFAULT_CHANNEL = "fragmented_keys_django:tenant-config"

#: Seconds :func:`publish` waits at most for every subscriber to confirm.
ACK_TIMEOUT = 1.0

_PREFIX = "\x00fkd1 "
_ACK_TTL = 60  # seconds an ack list lives, should the publisher be gone


def _encode(ack_key: str, tenant_id: str | None) -> str:
    return f"{_PREFIX}{ack_key} {'*' if tenant_id is None else tenant_id}"


def _decode(data: bytes | str) -> tuple[str | None, str | None]:
    """Return ``(ack key or None, tenant id or None for every tenant)`` of a message."""
    text = data.decode() if isinstance(data, bytes) else str(data)
    ack = None
    if text.startswith(_PREFIX):
        ack, _, text = text[len(_PREFIX) :].partition(" ")
    return ack, (None if text == "*" else text)


def publish(url: str, tenant_id: str | None, timeout: float = ACK_TIMEOUT) -> tuple[int, int]:
    """Publish *tenant_id* (``None``: every tenant) on *url*; wait up to *timeout* seconds for acks.

    Returns ``(subscribers, confirmed)``: how many clients received the
    message (Redis ``PUBLISH``) and how many confirmed before the deadline.
    Store errors propagate (the caller logs them).
    """
    import redis

    from ..versions import fresh_token

    client = redis.Redis.from_url(url)
    ack_key = f"fk:tenant-config-ack:{fresh_token()}"
    try:
        subscribers = int(client.publish(DEFAULT_CHANNEL, _encode(ack_key, tenant_id)))
        confirmed = 0
        deadline = time.monotonic() + timeout
        while confirmed < subscribers:
            left = deadline - time.monotonic()
            if left <= 0 or client.blpop([ack_key], timeout=left) is None:
                break
            confirmed += 1
        if confirmed < subscribers:
            logger.warning(
                "%d of %d processes did not confirm the tenant config change of %s within %.1fs; "
                "they switch at their next config-version recheck",
                subscribers - confirmed,
                subscribers,
                tenant_id or "every tenant",
                timeout,
                extra={"tenant": tenant_id, "operation": "tenant_config_publish"},
            )
        client.delete(ack_key)
        return subscribers, confirmed
    finally:
        client.close()


class Listener:
    """One daemon thread per Redis URL, calling ``handler(url, tenant_id)`` per message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self.ready: dict[str, threading.Event] = {}

    def ensure(self, url: str, handler: Callable[[str, str | None], None]) -> None:
        """Start the listener of *url* unless it runs (idempotent, cheap when running)."""
        thread = self._threads.get(url)
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            thread = self._threads.get(url)
            if thread is None or not thread.is_alive():
                self.ready[url] = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(url, handler), name="fkd-config-listener", daemon=True
                )
                self._threads[url] = thread
                thread.start()

    def _run(self, url: str, handler: Callable[[str, str | None], None]) -> None:
        import redis

        delay = 0.5
        while True:
            try:
                acks = redis.Redis.from_url(url)
                pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(DEFAULT_CHANNEL)
                self.ready[url].set()
                delay = 0.5
                for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    ack, tenant = _decode(message["data"])
                    handler(url, tenant)
                    if ack:
                        pipe = acks.pipeline(transaction=False)
                        pipe.rpush(ack, 1)
                        pipe.expire(ack, _ACK_TTL)
                        pipe.execute()
            except Exception as exc:  # reconnect with backoff; logged every time
                logger.warning(
                    "tenant config listener lost %s: %s; reconnecting",
                    url,
                    exc,
                    extra={"operation": "tenant_config_listen"},
                )
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


#: The process's listener (one thread per URL).
listener = Listener()
