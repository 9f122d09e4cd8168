"""``fragmented-keys`` ``CacheHandler`` protocol over a Django cache alias.

Lets code written against the core library (``StandardKey``,
``FragmentedKeyRing``) read and write through Django's cache framework. It
stores plain strings under the keys it is given; it knows nothing of tenants.
Our own tags (``VersionedTag``) bypass it for versions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DjangoCacheHandler"]


class DjangoCacheHandler:
    """A ``fragmented_keys.protocols.CacheHandler`` backed by the store of a fragmented alias.

    *alias* names a fragmented alias, or the store alias it wraps; ``None``
    means the project's fragmented alias.
    """

    def __init__(self, alias: str | None = None) -> None:
        self._alias = alias

    def _store(self) -> Any:
        from .conf import get_cache, resolve_alias

        return get_cache(resolve_alias(self._alias)).store

    def group_name(self) -> str:
        """Return an id shared by handlers of the same store (for bulk reads)."""
        return f"DjangoCacheHandler:{self._alias}"

    def get(self, key: str) -> str | None:
        """Return the string stored under *key*, or ``None``."""
        val = self._store().get(key)
        return None if val is None else str(val)

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        """Store *value* under *key* for *ttl* seconds (``None``: the store's default)."""
        from django.core.cache.backends.base import DEFAULT_TIMEOUT

        self._store().set(key, value, timeout=DEFAULT_TIMEOUT if ttl is None else ttl)

    def get_multi(self, keys: list[str]) -> dict[str, str]:
        """Return the values found for *keys*, in one round trip."""
        return {k: str(v) for k, v in self._store().get_many(keys).items() if v is not None}
