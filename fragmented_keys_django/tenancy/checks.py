"""System checks for ``TenantMiddleware`` and ``settings.FRAGMENTED_KEYS_MIDDLEWARE``.

==================================  ==================================================
``fragmented_keys_django.E010``     the setting is not a dict, or has unknown keys
``fragmented_keys_django.E011``     no resolver (or both RESOLVER and TENANT_ID_RESOLVER),
                                    or the middleware is installed without the setting
``fragmented_keys_django.E012``     RESOLVER cannot be imported / built, or is not callable
``fragmented_keys_django.E013``     WHITELIST_ROUTES is not a set of non-empty strings, or
                                    misplaces ``*`` (a prefix mark, last only)
``fragmented_keys_django.E014``     TENANTS is not None, a callable, a dotted path or a set of ids
``fragmented_keys_django.E015``     UNKNOWN_TENANT_RESPONSE is not a view or a dotted path to one
``fragmented_keys_django.E016``     a Django cache middleware runs before TenantMiddleware
                                    (it would cache pages outside the tenant)
``fragmented_keys_django.E017``     TENANT_ACCESS is not a callable or a dotted path to one
``fragmented_keys_django.W010``     the setting is set but TenantMiddleware is not in MIDDLEWARE
``fragmented_keys_django.W011``     a HeaderResolver without a TENANT_ACCESS check: any client
                                    picks its tenant
==================================  ==================================================
"""

from __future__ import annotations

from typing import Any

from django.core import checks

_CACHE_MIDDLEWARES = (
    "django.middleware.cache.UpdateCacheMiddleware",
    "django.middleware.cache.FetchFromCacheMiddleware",
    "django.middleware.cache.CacheMiddleware",
)


@checks.register()
def check_tenant_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check ``FRAGMENTED_KEYS_MIDDLEWARE`` and where ``TenantMiddleware`` sits in ``MIDDLEWARE``."""
    from django.conf import settings

    from .middleware import MIDDLEWARE_PATH, SETTING, middleware_problems

    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    installed = MIDDLEWARE_PATH in middleware
    raw = getattr(settings, SETTING, None)
    if raw is None and not installed:
        return []
    messages: list[checks.CheckMessage] = []
    problems, _ = middleware_problems(raw, installed=installed)
    for check_id, message, hint in problems:
        level = checks.Warning if ".W" in check_id else checks.Error
        messages.append(level(message, hint=hint or None, id=check_id, obj=SETTING))
    if raw is not None and not installed:
        messages.append(
            checks.Warning(
                f"settings.{SETTING} is set but {MIDDLEWARE_PATH} is not in MIDDLEWARE: no request "
                f"gets a tenant from it.",
                hint=f"Add {MIDDLEWARE_PATH!r} to MIDDLEWARE, or remove the setting.",
                id="fragmented_keys_django.W010",
                obj=SETTING,
            )
        )
    if installed:
        position = middleware.index(MIDDLEWARE_PATH)
        for earlier in middleware[:position]:
            if earlier in _CACHE_MIDDLEWARES:
                messages.append(
                    checks.Error(
                        f"{earlier} comes before {MIDDLEWARE_PATH} in MIDDLEWARE: it would read and "
                        f"write cached pages outside the request's tenant.",
                        hint="Move TenantMiddleware above Django's cache middlewares.",
                        id="fragmented_keys_django.E016",
                        obj="MIDDLEWARE",
                    )
                )
    return messages
