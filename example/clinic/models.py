"""Hospitals and patients of every tenant, in one shared database.

Each row carries its ``tenant_id``. Rows are addressed by ``number``, an id
that is unique *within a tenant* (acme's patient 1 and globex's patient 1 are
different people): the shared table's primary key cannot repeat across
tenants, so URLs and cache tags use ``number`` and the primary key stays
internal. ``objects.current()`` filters on the current tenant.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Max

from fragmented_keys_django import TenantContext, TenantRequired


class TenantQuerySet(models.QuerySet):
    def current(self) -> TenantQuerySet:
        """Rows of the current tenant (``TenantRequired`` outside any tenant)."""
        return self.filter(tenant_id=_current_tenant())


def _current_tenant() -> str:
    tenant_id = TenantContext.get_tenant_id()
    if tenant_id is None:
        raise TenantRequired("no tenant is current: wrap the code in TenantContext.use_tenant(...)")
    return tenant_id


class TenantModel(models.Model):
    tenant_id = models.CharField(max_length=64, db_index=True)
    number = models.PositiveIntegerField(help_text="Id within the tenant (used in URLs and tags).")

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.tenant_id:
            self.tenant_id = _current_tenant()
        if self.number is None:
            top = (
                type(self).objects.filter(tenant_id=self.tenant_id).aggregate(n=Max("number"))["n"]
            )
            self.number = (top or 0) + 1
        super().save(*args, **kwargs)


class Hospital(TenantModel):
    name = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "number"], name="hospital_number_per_tenant"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}/hospital {self.number}: {self.name}"


class Patient(TenantModel):
    hospital = models.ForeignKey(Hospital, on_delete=models.CASCADE, related_name="patients")
    name = models.CharField(max_length=200)
    notes = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant_id", "number"], name="patient_number_per_tenant"
            )
        ]

    @classmethod
    def from_db(cls, db: str, field_names: Any, values: Any) -> Patient:
        obj = super().from_db(db, field_names, values)
        # Remembered so that moving a patient also bumps the list it left.
        obj._loaded_hospital_id = obj.__dict__.get("hospital_id")
        return obj

    def __str__(self) -> str:
        return f"{self.tenant_id}/patient {self.number}: {self.name}"


class Tenant(models.Model):
    """A tenant, and its cache configuration (django-omnitenant style).

    ``config["cache_config"]``, when set, gives the tenant a cache store of its
    own (merged over the shared store's config); without it the tenant shares
    the store of ``CACHES["default"]``. ``CACHES["fragmented"]["OPTIONS"]
    ["TENANT_STORES"]`` reads it from here, and saving a row tells the cache
    to rebuild that tenant's store: no restart.
    """

    tenant_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    config = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.name}"
