"""Tenant sources: where the current tenant comes from when no ``use_tenant()`` is in effect.

Chosen with ``settings.FRAGMENTED_KEYS["TENANT_SOURCE"]``. Each is a
zero-argument callable returning a tenant (a string id or an object with
``tenant_id``) or ``None`` for the public namespace.
"""

from __future__ import annotations

from typing import Any

__all__ = ["django_tenants_tenant", "omnitenant_tenant"]


def django_tenants_tenant() -> Any:
    """Return django-tenants' current schema name as the tenant; ``None`` for the public schema."""
    from django.db import connection

    schema = getattr(connection, "schema_name", None)
    if not schema:
        return None
    try:
        from django_tenants.utils import get_public_schema_name

        public = get_public_schema_name()
    except ImportError:  # pragma: no cover - django-tenants not installed
        public = "public"
    return None if schema == public else schema


def omnitenant_tenant() -> Any:
    """Return django-omnitenant's ``TenantContext.get_tenant()`` (an object with ``tenant_id``)."""
    from django_omnitenant.tenant_context import TenantContext as OmniContext

    return OmniContext.get_tenant()
