"""Signals sent by fragmented_keys_django, named in the past tense.

Every signal is sent with ``sender`` = the backend class and these keyword
arguments: ``alias`` (the fragmented cache alias), ``tenant`` (tenant id or
``None`` for the public namespace), plus:

* ``cache_hit`` / ``cache_missed``: ``key`` (the caller's key name).
* ``tags_bumped``: ``tags`` (tuple of ``(name, instance)``).
* ``tenant_flushed``: nothing more.
* ``store_failed``: ``operation`` (str) and ``exception``.

``model_registry_changed`` is sent by ``ModelTagManager`` (the sender) with
``model`` after a model is registered or unregistered.

Receivers run in the caller's thread; keep them cheap.
"""

from django.dispatch import Signal

cache_hit = Signal()
cache_missed = Signal()
tags_bumped = Signal()
tenant_flushed = Signal()
store_failed = Signal()
model_registry_changed = Signal()

__all__ = [
    "cache_hit",
    "cache_missed",
    "model_registry_changed",
    "store_failed",
    "tags_bumped",
    "tenant_flushed",
]
