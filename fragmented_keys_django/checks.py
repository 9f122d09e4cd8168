"""Django system checks: configuration errors reported at start-up, with ids.

========================  ====================================================
``fragmented_keys_django.E001``  a fragmented alias's options are invalid
``fragmented_keys_django.E002``  ``CACHE_NAME`` names a missing alias
``fragmented_keys_django.E003``  ``CACHE_NAME`` names a fragmented alias (itself or another)
``fragmented_keys_django.E004``  ``CACHE_NAME`` names Django's dummy cache (nothing would be kept)
``fragmented_keys_django.W001``  the store is a per-process cache (locmem): bumps do not reach other processes
``fragmented_keys_django.W020``  a database has no outbox table: bumps there are not durable
``fragmented_keys_django.W021``  django-tenants: the outbox is in ``TENANT_APPS`` (one table per schema)
``fragmented_keys_django.E020``  ``FRAGMENTED_KEYS["SAFETY_NET"]`` is not True or False
``fragmented_keys_django.E021``  the safety net is on, models are registered, and a ``TENANT_STORES``
                                 source cannot list its tenants (an "all tenants" bump cannot reach them)
========================  ====================================================

W020 is a database check (run by ``migrate`` and ``check --database``).
"""

from __future__ import annotations

from typing import Any

from django.core import checks

from .conf import BACKEND_PATHS, alias_options
from .exceptions import ConfigurationError

_DUMMY = "django.core.cache.backends.dummy.DummyCache"
_LOCMEM = "django.core.cache.backends.locmem.LocMemCache"


@checks.register(checks.Tags.caches)
def check_caches(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check every ``CACHES`` entry that uses ``FragmentedKeysCacheBackend``."""
    from django.conf import settings

    errors: list[checks.CheckMessage] = []
    caches_conf = getattr(settings, "CACHES", {})
    for alias, conf in caches_conf.items():
        if conf.get("BACKEND") not in BACKEND_PATHS:
            continue
        try:
            opts = alias_options(alias)  # the one reader of raw CACHES entries
        except ConfigurationError as exc:
            errors.append(checks.Error(str(exc), id="fragmented_keys_django.E001", obj=alias))
            continue
        store = caches_conf.get(opts.cache_name)
        if store is None:
            errors.append(
                checks.Error(
                    f"CACHES[{alias!r}]['CACHE_NAME'] names {opts.cache_name!r}, which is not in CACHES.",
                    hint=f"Define CACHES[{opts.cache_name!r}] (the store) or point CACHE_NAME at an existing alias.",
                    id="fragmented_keys_django.E002",
                    obj=alias,
                )
            )
        elif store.get("BACKEND") in BACKEND_PATHS:
            errors.append(
                checks.Error(
                    f"CACHES[{alias!r}]['CACHE_NAME'] names {opts.cache_name!r}, a FragmentedKeysCacheBackend "
                    f"({'itself' if opts.cache_name == alias else 'another wrapper'}).",
                    hint="CACHE_NAME must name a plain store alias (locmem, database, Redis, memcached).",
                    id="fragmented_keys_django.E003",
                    obj=alias,
                )
            )
        elif store.get("BACKEND") == _DUMMY:
            errors.append(
                checks.Error(
                    f"CACHES[{alias!r}] wraps {opts.cache_name!r}, Django's DummyCache, which keeps nothing: "
                    f"tag versions could not be stored.",
                    hint="Use LocMemCache for a cache that does nothing useful across processes, or a real store.",
                    id="fragmented_keys_django.E004",
                    obj=alias,
                )
            )
        elif store.get("BACKEND") == _LOCMEM:
            errors.append(
                checks.Warning(
                    f"CACHES[{alias!r}] wraps {opts.cache_name!r}, a LocMemCache: each process has its own "
                    f"copy, so a bump in one process does not invalidate entries cached by another.",
                    hint="Fine for one process (tests, the demo). Use Redis or the database cache otherwise.",
                    id="fragmented_keys_django.W001",
                    obj=alias,
                )
            )
    return errors


@checks.register(checks.Tags.database)
def check_outbox(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """Warn about databases without the outbox table (bumps there are not durable)."""
    from django.conf import settings

    from . import outbox
    from .conf import project_settings

    if not project_settings()["OUTBOX"]:
        return []
    found: list[checks.CheckMessage] = []
    for db in databases or ():
        outbox.reset()  # a check answers for now, not for what this process saw before
        if not outbox.available(db):
            found.append(
                checks.Warning(
                    f"Database {db!r} has no table {outbox.TABLE!r}: a bump whose store write "
                    f"fails, or whose process dies, after a transaction on {db!r} is lost.",
                    hint=f"Run `manage.py migrate fragmented_keys_django --database {db}`, or set "
                    f"FRAGMENTED_KEYS = {{'OUTBOX': False}} to keep failed bumps in memory only.",
                    id="fragmented_keys_django.W020",
                    obj=db,
                )
            )
    if "fragmented_keys_django" in (getattr(settings, "TENANT_APPS", None) or ()):
        found.append(
            checks.Warning(
                "fragmented_keys_django is in TENANT_APPS: each tenant schema gets its own outbox "
                "table, which a drain from the public schema never sees.",
                hint="List fragmented_keys_django in SHARED_APPS only.",
                id="fragmented_keys_django.W021",
            )
        )
    return found


@checks.register(checks.Tags.caches)
def check_safety_net(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check ``FRAGMENTED_KEYS["SAFETY_NET"]`` and that the net can reach every tenant store."""
    from . import net
    from .model_tags import ModelTagManager

    try:
        enabled = net.setting_value()
    except ConfigurationError as exc:
        return [checks.Error(str(exc), id="fragmented_keys_django.E020")]
    if not enabled or not ModelTagManager.get_registered_models():
        return []
    try:
        aliases = net.unlistable_aliases()
    except ConfigurationError:
        return []  # a broken alias: reported by E001-E004
    return [
        checks.Error(
            f"CACHES[{alias!r}] has a TENANT_STORES source that cannot list its tenants, so the "
            f"safety net cannot bump the tenant stores when a registered model's table is "
            f"written outside a tenant (or a model registered with tenant_field is written).",
            hint="Give the TENANT_STORES callable a `tenants()` attribute, use a dict or MODEL "
            "source, or set FRAGMENTED_KEYS['SAFETY_NET'] = False (precise bumps only).",
            id="fragmented_keys_django.E021",
            obj=alias,
        )
        for alias in aliases
    ]
