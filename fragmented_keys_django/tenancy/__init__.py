"""Tenancy: the current tenant and how it is found."""

from .context import MAX_TENANT_ID_LENGTH, TenantContext, current_tenant_id, tenant_id_of

__all__ = ["MAX_TENANT_ID_LENGTH", "TenantContext", "current_tenant_id", "tenant_id_of"]
