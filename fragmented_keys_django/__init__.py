"""Tag-versioned cache invalidation ("fragmented keys") for Django, multi-tenant by construction.

A cached value depends on tags (``User:42``, ``Org:7``); bumping a tag's
version invalidates every dependent entry with one write. The current tenant
is an implicit tag on every key and every tag version.

Public API (the seed ``fragmented-keys-django`` names are kept)::

    from fragmented_keys_django import (
        FragmentedKeysCacheBackend, TenantContext, tagged_cache, ModelTagManager,
        model_tag, list_tag, aggregate_tag, constant_tag, custom_tag,
        configure_fragmented_keys, CacheAwareManager, CacheAwareQuerySet,
    )
"""

from __future__ import annotations

from typing import Any

__version__ = "1.0.0"  # above 0.2.1, the release this package replaces (docs/install.md)

# The backend module imports Django's cache machinery only; importing it here
# does not need configured settings, so ``CACHES`` can name this path.
from .backend import FragmentedKeysCacheBackend
from .conf import get_cache_epoch, set_cache_epoch
from .config import configure_fragmented_keys, reset_configuration
from .exceptions import (
    BumpFailed,
    ConfigurationError,
    FragmentedKeysError,
    InvalidTag,
    InvalidTagTemplate,
    InvalidTenant,
    InvalidTimeout,
    StoreUnavailable,
    TenantRequired,
    UnpicklableValue,
    ValueTooLarge,
)
from .tags import VersionedTag, aggregate_tag, constant_tag, custom_tag, list_tag, model_tag
from .tenancy.context import TenantContext

_LAZY = {
    # These import django.db.models: loaded on first use so that importing the
    # package (e.g. from settings.py) never needs the app registry.
    "tagged_cache": ("decorators", "tagged_cache"),
    "ModelTagManager": ("model_tags", "ModelTagManager"),
    "CacheAwareManager": ("model_tags", "CacheAwareManager"),
    "CacheAwareQuerySet": ("model_tags", "CacheAwareQuerySet"),
    "bump_tags": ("invalidation", "bump_tags"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BumpFailed",
    "CacheAwareManager",
    "CacheAwareQuerySet",
    "ConfigurationError",
    "FragmentedKeysCacheBackend",
    "FragmentedKeysError",
    "InvalidTag",
    "InvalidTagTemplate",
    "InvalidTenant",
    "InvalidTimeout",
    "ModelTagManager",
    "StoreUnavailable",
    "TenantContext",
    "TenantRequired",
    "UnpicklableValue",
    "ValueTooLarge",
    "VersionedTag",
    "aggregate_tag",
    "bump_tags",
    "configure_fragmented_keys",
    "constant_tag",
    "custom_tag",
    "get_cache_epoch",
    "list_tag",
    "model_tag",
    "reset_configuration",
    "set_cache_epoch",
    "tagged_cache",
]
