"""Signals sent by fragmented_keys_django, named in the past tense.

Every signal is sent with ``sender`` = the backend class and these keyword
arguments: ``alias`` (the fragmented cache alias), ``tenant`` (tenant id or
``None`` for the public namespace), plus:

* ``cache_hit`` / ``cache_missed``: ``key`` (the caller's key name) and ``tags``
  (the normalised tags of a tagged read, a tuple of ``TagSpec``; ``()`` for
  ``get_many_with_tags``, whose reads name their key only).
* ``entry_stored``: ``key``, ``tags`` and ``deferred`` (``True`` when the write
  waits for the transaction's commit): a tagged value was written
  (``set_with_tags``, or ``get_or_set_with_tags`` after a miss, hence
  ``@tagged_cache``, ``{% tagged_cache %}`` and ``tagged_cache_page``).
* ``tags_bumped``: ``tags`` (tuple of ``(name, instance)``).
* ``tenant_flushed``: nothing more.
* ``store_failed``: ``operation`` (str) and ``exception``.
* ``cache_bypassed``: ``reason`` (str): a read did not use the cache:
  ``"bump_pending"`` (a failed bump of the tenant's versions has not landed),
  ``"transaction"`` (the caller's transaction wrote registered models) or
  ``"breaker_open"`` (the store's circuit breaker skipped the call).
* ``stampede_waited``: ``key``: a miss found another caller computing the
  value (the stampede lock) and waited for it.
* ``recomputed_early``: ``key``: a live entry was recomputed before its expiry
  (``EARLY_RECOMPUTE``, by the caller holding the stampede lock).
* ``retry_backlog_changed``: ``pending`` (int): how many failed bumps of this
  alias and tenant this process keeps for retry now (``0`` once they landed).

``model_registry_changed`` is sent by ``ModelTagManager`` (the sender) with
``model`` after a model is registered or unregistered.

Receivers run in the caller's thread; keep them cheap.
"""

from __future__ import annotations

from django.dispatch import Signal

cache_hit = Signal()
cache_missed = Signal()
tags_bumped = Signal()
tenant_flushed = Signal()
store_failed = Signal()
cache_bypassed = Signal()
stampede_waited = Signal()
recomputed_early = Signal()
retry_backlog_changed = Signal()
entry_stored = Signal()
model_registry_changed = Signal()

# The class every signal but model_registry_changed is sent by. The backend
# module names itself at import (use_sender), so modules below it (metrics,
# invalidation) send with it without importing it.
_sender: list[type] = [object]


def use_sender(cls: type) -> None:
    """Make *cls* (``FragmentedKeysCacheBackend``) the ``sender`` of the cache signals."""
    _sender[0] = cls


def sender() -> type:
    """Return the ``sender`` of the cache signals: ``FragmentedKeysCacheBackend``."""
    return _sender[0]


__all__ = [
    "cache_bypassed",
    "cache_hit",
    "cache_missed",
    "entry_stored",
    "model_registry_changed",
    "recomputed_early",
    "retry_backlog_changed",
    "sender",
    "stampede_waited",
    "store_failed",
    "tags_bumped",
    "tenant_flushed",
]
