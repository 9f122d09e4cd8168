from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Client(TenantMixin):
    """A django-tenants tenant: one PostgreSQL schema each."""

    name = models.CharField(max_length=100)
    auto_create_schema = True
    auto_drop_schema = True


class Domain(DomainMixin):
    pass


class Item(models.Model):
    """A model whose table lives in every tenant schema (TENANT_APPS)."""

    name = models.CharField(max_length=100)
