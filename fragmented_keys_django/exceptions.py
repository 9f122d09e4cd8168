"""One error tree for the package.

Every class also subclasses the built-in exception it resembles, the way
Django's ``InvalidCacheKey(ValueError)`` does, so callers that already catch
``ValueError``, ``TypeError`` or ``LookupError`` keep working.
"""

from __future__ import annotations

import pickle

from django.core.exceptions import ImproperlyConfigured


class FragmentedKeysError(Exception):
    """Base class of every error raised by fragmented_keys_django."""


class ConfigurationError(FragmentedKeysError, ImproperlyConfigured):
    """A ``CACHES`` entry or a ``FRAGMENTED_KEYS`` setting is wrong.

    Subclasses Django's ``ImproperlyConfigured``.
    """


class TenantRequired(FragmentedKeysError, LookupError):
    """A cache call ran outside any tenant while the alias requires one.

    Raised when the alias option ``TENANT_REQUIRED`` is ``True`` and
    ``TenantContext.get_tenant()`` is ``None``.
    """


class InvalidTenant(FragmentedKeysError, ValueError):
    """A tenant id is empty, not a string, or too long."""


class InvalidTag(FragmentedKeysError, ValueError):
    """A tag is of the wrong shape, or its name or instance is invalid."""


class InvalidTagTemplate(InvalidTag):
    """A ``@tagged_cache`` tag template names an unknown parameter or attribute."""


class InvalidTimeout(FragmentedKeysError, ValueError):
    """A timeout is negative or not a number of seconds."""


class UnpicklableValue(FragmentedKeysError, pickle.PicklingError, TypeError):
    """A value could not be pickled for the store; the message names the key.

    Also a ``pickle.PicklingError``, which Django's cache contract expects.
    """


class BumpFailed(FragmentedKeysError, RuntimeError):
    """A tag version bump could not be written to the store (strict mode)."""


class StoreUnavailable(FragmentedKeysError, ConnectionError):
    """A store failed recently and its circuit breaker is open: the call was not sent.

    A ``ConnectionError`` (so an ``OSError``, one of the store errors callers
    already survive). Raised by the calls that propagate store errors
    (``incr``, ``get_tag_version``...) while the breaker of their store is open.
    """


class ValueTooLarge(FragmentedKeysError, ValueError):
    """A store refused values as too large for it (memcached's item size limit, 1 MB by default).

    Raised by the generic store adapter once the refused entries are deleted
    (their old values must not be served) and the other values of the same
    call written; the backend logs and counts it, and the call fails for those
    values only (the store stays in service). *keys* are the refused entries'
    store keys; *failed* every entry key the call did not write, refused ones
    included; *result*, what the failed call returns (set by the protocol).
    """

    def __init__(self, message: str, keys: list[str], failed: list[str] | None = None) -> None:
        super().__init__(message)
        self.keys = keys
        self.failed = list(keys) if failed is None else failed
        self.result: object = None


__all__ = [
    "BumpFailed",
    "ConfigurationError",
    "FragmentedKeysError",
    "InvalidTag",
    "InvalidTagTemplate",
    "InvalidTenant",
    "InvalidTimeout",
    "StoreUnavailable",
    "TenantRequired",
    "UnpicklableValue",
    "ValueTooLarge",
]
