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
list tenants (e.g. a callable config source without ``tenants()``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigurationError

__all__ = ["CannotListTenants", "StoreInfo", "known_tenants", "mask_location", "store_info"]


class CannotListTenants(ConfigurationError):
    """No configured source can list the tenants."""


def _config_source_tenants(source: Any) -> list[str] | None:
    listed = source.tenants()  # None: this source cannot list its tenants
    return None if listed is None else [str(t) for t in listed]


def _context_source_tenants() -> list[str] | None:
    from django.utils.module_loading import import_string

    from ..conf import project_settings

    source = project_settings()["TENANT_SOURCE"]
    if source == "fragmented_keys_django" or source is None:
        return None
    if source == "django_tenants":
        from django_tenants.utils import get_public_schema_name, get_tenant_model, schema_context

        public = get_public_schema_name()
        with schema_context(public):
            names = get_tenant_model().objects.values_list("schema_name", flat=True)
            return [str(n) for n in names if n != public]
    if source == "omnitenant":
        from django_omnitenant.utils import get_tenant_model as omni_tenant_model

        return [str(t) for t in omni_tenant_model().objects.values_list("tenant_id", flat=True)]
    func = import_string(source) if isinstance(source, str) else source
    lister = getattr(func, "tenants", None)
    return None if lister is None else [str(t) for t in lister()]


def _middleware_tenants() -> list[str] | None:
    from django.conf import settings

    raw = getattr(settings, "FRAGMENTED_KEYS_MIDDLEWARE", None)
    if not isinstance(raw, dict) or raw.get("TENANTS") is None:
        return None
    from .middleware import _load_tenants

    tenants = _load_tenants(raw["TENANTS"])
    if isinstance(tenants, frozenset):
        return [str(t) for t in tenants]
    lister = getattr(tenants, "tenants", None)
    return None if lister is None else [str(t) for t in lister()]


def known_tenants(aliases: Iterable[str] | None = None) -> list[str]:
    """Return the sorted tenant ids every listing source knows; raise ``CannotListTenants`` if none can."""
    from ..conf import fragmented_aliases, get_cache

    found: set[str] = set()
    listable = False
    for alias in aliases if aliases is not None else fragmented_aliases():
        ts = get_cache(alias).tenant_stores
        if ts is None:
            continue
        ids = _config_source_tenants(ts.source)
        if ids is not None:
            listable = True
            found.update(ids)
    for lister in (_context_source_tenants, _middleware_tenants):
        ids = lister()
        if ids is not None:
            listable = True
            found.update(ids)
    if not listable:
        raise CannotListTenants(
            "Cannot list tenants: no source can enumerate them. Give the TENANT_STORES callable a "
            "`tenants()` attribute, use a dict or MODEL source, set FRAGMENTED_KEYS['TENANT_SOURCE'] "
            "to 'django_tenants' or 'omnitenant' (or a callable with `tenants()`), or set "
            "FRAGMENTED_KEYS_MIDDLEWARE['TENANTS'] to a set of ids."
        )
    return sorted(found)


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
