"""Tenant sources: where the current tenant comes from when no ``use_tenant()`` is in effect.

Chosen with ``settings.FRAGMENTED_KEYS["TENANT_SOURCE"]``. Each is a
zero-argument callable returning a tenant (a string id or an object with
``tenant_id``) or ``None`` for the public namespace.

A source may also carry:

* ``of_connection(using)``: the tenant whose rows a write on database
  connection *using* changes (django-tenants: the connection's schema). Bumps
  caused by writes then go to that tenant, whatever tenant ``use_tenant()``
  names: the data changed is that schema's.
* ``enter(tenant_id)``: a context manager making *tenant_id* current in the
  source's own terms (django-tenants: ``schema_context``). The Celery
  integration enters it in a task, so a task that then switches schema
  (``schema_context("other")``) reads, writes and bumps in that schema.
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


def _schema_of(using: str | None) -> Any:
    """The tenant of a write on connection *using*: its schema (``None`` for public)."""
    from django.db import DEFAULT_DB_ALIAS, connections

    schema = getattr(connections[using or DEFAULT_DB_ALIAS], "schema_name", None)
    if not schema:
        return None
    try:
        from django_tenants.utils import get_public_schema_name

        public = get_public_schema_name()
    except ImportError:  # pragma: no cover - django-tenants not installed
        public = "public"
    return None if schema == public else schema


def _enter_schema(tenant_id: str) -> Any:
    from django_tenants.utils import schema_context

    return schema_context(tenant_id)


django_tenants_tenant.of_connection = _schema_of  # type: ignore[attr-defined]
django_tenants_tenant.enter = _enter_schema  # type: ignore[attr-defined]


def omnitenant_tenant() -> Any:
    """Return django-omnitenant's ``TenantContext.get_tenant()`` (an object with ``tenant_id``)."""
    from django_omnitenant.tenant_context import TenantContext as OmniContext

    return OmniContext.get_tenant()
