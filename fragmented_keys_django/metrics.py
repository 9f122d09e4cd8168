"""Counting and logging the store errors we choose to survive.

Every survived error is logged with tenant, alias and operation, counted here,
and announced with the ``store_failed`` signal. ``snapshot()`` returns the
counts, e.g. for a health endpoint or a Prometheus collector.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from .signals import sender, store_failed

__all__ = ["count", "record_error", "record_store_error", "reset", "snapshot"]

logger = logging.getLogger("fragmented_keys_django")

_lock = threading.Lock()
_counts: Counter[tuple[str, str]] = Counter()


def record_store_error(
    alias: str,
    tenant: str | None,
    operation: str,
    exc: BaseException,
    *,
    level: int = logging.WARNING,
) -> None:
    """Log, count and signal a store error that the caller survives."""
    record_error(alias, tenant, operation, exc, level=level)


def record_error(
    alias: str,
    tenant: str | None,
    operation: str,
    exc: BaseException,
    *,
    level: int = logging.ERROR,
    what: str = "cache store error",
) -> None:
    """Log (with the traceback at ERROR), count and signal an error that the caller survives.

    Counted under ``(alias, operation)`` in :func:`snapshot`; announced with
    the ``store_failed`` signal.
    """
    with _lock:
        _counts[(alias, operation)] += 1
    logger.log(
        level,
        "%s during %s (alias=%s, tenant=%s): %s",
        what,
        operation,
        alias,
        tenant,
        exc,
        extra={"alias": alias, "tenant": tenant, "operation": operation},
        exc_info=exc if level >= logging.ERROR else None,
    )
    if store_failed.receivers:
        store_failed.send(
            sender(),
            alias=alias,
            tenant=tenant,
            operation=operation,
            exception=exc,
        )


def count(alias: str, operation: str) -> None:
    """Count an event under ``(alias, operation)`` without logging it.

    For what is logged once and then only counted: calls the circuit breaker
    skipped (``"<operation> (breaker open)"``), breakers opened
    (``"breaker_open"``).
    """
    with _lock:
        _counts[(alias, operation)] += 1


def snapshot() -> dict[tuple[str, str], int]:
    """Return ``{(alias, operation): count}`` of survived store errors and counted events."""
    with _lock:
        return dict(_counts)


def reset() -> None:
    """Forget all counts (tests)."""
    with _lock:
        _counts.clear()


def store_errors() -> tuple[type[BaseException], ...]:
    """Return the exception classes that mean "the store is unavailable".

    ``OSError`` and Django's ``DatabaseError`` always; redis-py's, pymemcache's,
    django-redis's, valkey-py's and django-valkey's base errors when those
    libraries are installed (an
    uninstalled one cannot raise, so it is simply not listed).
    """
    global _STORE_ERRORS
    if _STORE_ERRORS is None:
        from importlib import import_module
        from importlib.util import find_spec

        from django.db import DatabaseError

        errs: list[type[BaseException]] = [OSError, DatabaseError]
        for module, name in (
            ("redis.exceptions", "RedisError"),
            ("pymemcache.exceptions", "MemcacheError"),
            ("django_redis.exceptions", "ConnectionInterrupted"),
            ("valkey.exceptions", "ValkeyError"),
            ("django_valkey.exceptions", "ConnectionInterrupted"),
        ):
            if find_spec(module.split(".")[0]) is not None:
                errs.append(getattr(import_module(module), name))
        _STORE_ERRORS = tuple(errs)
    return _STORE_ERRORS


_STORE_ERRORS: tuple[type[BaseException], ...] | None = None
