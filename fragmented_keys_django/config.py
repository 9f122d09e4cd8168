"""``configure_fragmented_keys()``: the seed's one-call set-up, made per alias."""

from __future__ import annotations

from .conf import resolve_alias, set_cache_epoch, set_default_alias
from .exceptions import ConfigurationError

__all__ = ["configure_fragmented_keys", "reset_configuration"]


def configure_fragmented_keys(
    cache_name: str = "default",
    prefix: str | None = None,
    global_prefix: str | None = None,
    setup_key_ring: bool = True,
    epoch: float | str | None = None,
) -> str:
    """Choose the project's fragmented alias and, optionally, the global epoch.

    Follows the seed's signature. *cache_name* is a fragmented alias or the
    store alias one wraps (the seed's ``"default"``); tag factories,
    ``@tagged_cache`` without ``cache_name`` and ``ModelTagManager`` helpers
    use it. *prefix* (or *global_prefix*) must match that alias's ``PREFIX``:
    prefixes are per alias here, set in ``CACHES`` — a mismatch raises
    ``ConfigurationError`` rather than being ignored. *epoch* sets the
    process-wide epoch (every key changes). *setup_key_ring* is accepted for
    compatibility and has no effect. Returns the chosen alias.
    """
    from django.conf import settings

    alias = resolve_alias(cache_name)
    wanted = global_prefix or prefix
    have = settings.CACHES[alias].get("PREFIX", "")
    if wanted is not None and wanted != have:
        raise ConfigurationError(
            f"configure_fragmented_keys(prefix={wanted!r}) differs from CACHES[{alias!r}]['PREFIX'] "
            f"= {have!r}. Prefixes are per alias: set PREFIX in CACHES and drop the argument."
        )
    if epoch is not None:
        set_cache_epoch(epoch)
    set_default_alias(alias)
    return alias


def reset_configuration() -> None:
    """Forget ``configure_fragmented_keys()``'s choices (tests)."""
    set_default_alias(None)
    set_cache_epoch(1.0)
