"""django-omnitenant models of the omnitenant suite (tests/omnitenant_suite)."""

from django.db import models
from django_omnitenant.models import BaseDomain, BaseTenant


class Tenant(BaseTenant):
    """A django-omnitenant tenant; ``config["cache_config"]`` is also our MODEL source."""


class Domain(BaseDomain):
    pass


class Item(models.Model):
    """A registered model whose table lives in each tenant's schema."""

    name = models.CharField(max_length=100)
