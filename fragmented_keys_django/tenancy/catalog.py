"""Which tenants exist, and which store each is bound to (for operators and commands).

Tenants are listed from every place that can list them:

* each fragmented alias's ``TENANT_STORES`` source (a dict's keys, a model's
  rows, or a callable's ``tenants()`` attribute);
* the tenant source of ``settings.FRAGMENTED_KEYS["TENANT_SOURCE"]``:
  django-tenants' tenant model (schema names, public excluded),
  django-omnitenant's tenant model (``tenant_id``), or a custom source
  callable's ``tenants()`` attribute;
* ``FRAGMENTED_KEYS_MIDDLEWARE["TENANTS"]`` when it is a set of ids, or a
  callable with a ``tenants()`` attribute.

:func:`known_tenants` raises :class:`CannotListTenants` when none of these can
list tenants (e.g. a callable config source without ``tenants()``), naming
each configured source that cannot. :func:`tenant_is_known` checks one id
(the commands' ``--tenant``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigurationError

__all__ = [
    "CannotListTenants",
    "StoreInfo",
    "known_tenants",
    "mask_location",
    "store_info",
    "tenant_is_known",
]


class CannotListTenants(ConfigurationError):
    """No configured source can list the tenants."""


def _name_of(func: Any) -> str:
    """How a configured callable is named in messages: its dotted path, or its repr."""
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", None)
    if module and qualname:
        return f"{module}.{qualname}"
    return repr(func)


def _no_lister(where: str, func: Any) -> str:
    return f"{where} is the callable {_name_of(func)}, which has no tenants() method"


def _config_source_tenants(alias: str, source: Any) -> tuple[list[str] | None, str | None]:
    listed = source.tenants()  # None: this source cannot list its tenants
    if listed is None:
        func = getattr(source, "func", source)
        return None, _no_lister(f"CACHES[{alias!r}]['OPTIONS']['TENANT_STORES']", func)
    return [str(t) for t in listed], None


def _context_source_tenants() -> tuple[list[str] | None, str | None]:
    from django.utils.module_loading import import_string

    from ..conf import project_settings

    source = project_settings()["TENANT_SOURCE"]
    if source == "fragmented_keys_django" or source is None:
        return None, None
    if source == "django_tenants":
        from django_tenants.utils import get_public_schema_name, get_tenant_model, schema_context

        public = get_public_schema_name()
        with schema_context(public):
            names = get_tenant_model().objects.values_list("schema_name", flat=True)
            return [str(n) for n in names if n != public], None
    if source == "omnitenant":
        from django_omnitenant.utils import get_tenant_model as omni_tenant_model

        ids = omni_tenant_model().objects.values_list("tenant_id", flat=True)
        return [str(t) for t in ids], None
    func = import_string(source) if isinstance(source, str) else source
    lister = getattr(func, "tenants", None)
    if lister is None:
        return None, _no_lister("settings.FRAGMENTED_KEYS['TENANT_SOURCE']", func)
    return [str(t) for t in lister()], None


def _middleware_check() -> Any:
    """``FRAGMENTED_KEYS_MIDDLEWARE['TENANTS']`` parsed: ``None``, a frozenset or a callable."""
    from django.conf import settings

    raw = getattr(settings, "FRAGMENTED_KEYS_MIDDLEWARE", None)
    if not isinstance(raw, dict) or raw.get("TENANTS") is None:
        return None
    from .middleware import _load_tenants

    return _load_tenants(raw["TENANTS"])


def _middleware_tenants() -> tuple[list[str] | None, str | None]:
    tenants = _middleware_check()
    if tenants is None:
        return None, None
    if isinstance(tenants, frozenset):
        return [str(t) for t in tenants], None
    lister = getattr(tenants, "tenants", None)
    if lister is None:
        return None, _no_lister("settings.FRAGMENTED_KEYS_MIDDLEWARE['TENANTS']", tenants)
    return [str(t) for t in lister()], None


def known_tenants(aliases: Iterable[str] | None = None) -> list[str]:
    """Return the sorted tenant ids every listing source knows.

    Raises ``CannotListTenants`` (a ``ConfigurationError``) when no configured
    source can list them; its message names each configured source that
    cannot (the setting, and the callable lacking a ``tenants()`` method).
    """
    from ..conf import fragmented_aliases, get_cache

    found: set[str] = set()
    listable = False
    unlisted: list[str] = []
    results = []
    for alias in aliases if aliases is not None else fragmented_aliases():
        ts = get_cache(alias).tenant_stores
        if ts is not None:
            results.append(_config_source_tenants(alias, ts.source))
    results += [_context_source_tenants(), _middleware_tenants()]
    for ids, reason in results:
        if ids is not None:
            listable = True
            found.update(ids)
        elif reason is not None:
            unlisted.append(reason)
    if not listable:
        if unlisted:
            raise CannotListTenants(
                f"Cannot list tenants: {'; '.join(unlisted)}. Listing tenants (fk_tenants, "
                f"--all-tenants, fk_check, the --tenant check) needs a tenants() method on that "
                f"callable, returning the tenant ids, e.g. `def tenants(): return [...]` then "
                f"`<callable>.tenants = tenants`; or a set of ids instead of the callable."
            )
        raise CannotListTenants(
            "Cannot list tenants: no tenant source is configured. Set "
            "FRAGMENTED_KEYS_MIDDLEWARE['TENANTS'] to a set of ids (or a callable with a "
            "`tenants()` method), give CACHES[...]['OPTIONS']['TENANT_STORES'] a dict, a MODEL "
            "spec or a callable with `tenants()`, or set FRAGMENTED_KEYS['TENANT_SOURCE'] to "
            "'django_tenants' or 'omnitenant' (or a callable with `tenants()`)."
        )
    return sorted(found)


def tenant_is_known(tenant: str, aliases: Iterable[str] | None = None) -> bool | None:
    """Return whether the tenant sources know *tenant*; ``None`` if none can tell.

    Sources that list tenants are asked first (:func:`known_tenants`); when
    none can list, ``FRAGMENTED_KEYS_MIDDLEWARE['TENANTS']`` as a callable
    ``(tenant_id) -> bool`` (sync or async) answers.
    """
    try:
        return tenant in known_tenants(aliases)
    except CannotListTenants:
        check = _middleware_check()
        if check is None or isinstance(check, frozenset):
            return None
        from asgiref.sync import async_to_sync, iscoroutinefunction

        return bool(async_to_sync(check)(tenant) if iscoroutinefunction(check) else check(tenant))


@dataclass(frozen=True)
class StoreInfo:
    """Where a tenant's entries and tag versions live for one fragmented alias."""

    tenant: str | None
    alias: str  # the store's name: the tenant's ALIAS, or the shared store alias
    backend: str
    location: str
    own: bool  # True for a tenant-bound store


_CRED = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@", re.I)


def mask_location(location: Any) -> str:
    """Return *location* as text with URL passwords replaced by ``***``."""
    if isinstance(location, (list, tuple)):
        return ",".join(mask_location(x) for x in location)
    return _CRED.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(location or ""))


def store_info(backend: Any, tenant: str | None) -> StoreInfo:
    """Return the store *tenant* is bound to on the fragmented *backend*."""
    from django.conf import settings

    from .stores import resolve_tenant_config

    ts = backend.tenant_stores
    if tenant is not None and ts is not None and ts.store_for(tenant) is not None:
        config = ts.source.get(tenant)
        if config:
            name, merged = resolve_tenant_config(tenant, config, settings.CACHES[ts.template_name])
            return StoreInfo(
                tenant, name, merged["BACKEND"], mask_location(merged.get("LOCATION", "")), True
            )
    name = backend.options.cache_name
    conf = settings.CACHES.get(name, {})
    return StoreInfo(
        tenant, name, conf.get("BACKEND", "?"), mask_location(conf.get("LOCATION", "")), False
    )
