"""The outbox: bumps that may not have landed in the store yet, kept in the database.

A row is written in the same transaction as the data whose bump it stands
for (so it commits, or rolls back, with it) and deleted once the bump has
landed; a bump that fails is kept here with its exact version keys. Any
process can apply and delete rows left behind: the retry thread of the
process that wrote them, a process recovering from a store outage,
``manage.py fk_outbox --drain``, or the Celery task
``fragmented_keys_django.tasks.drain_outbox``. See ``docs/operations.md``.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class OutboxEntry(models.Model):
    """One alias's pending bump for one tenant.

    ``keys`` lists the version keys to bump; ``None`` means they are not
    known (the transaction was still adding bumps when this row was written)
    and the tenant's whole namespace is flushed instead. A row of the public
    namespace (``tenant`` is ``None``) always lists its keys: they may be
    versions every tenant reads, which no namespace flush reaches. ``fanout``:
    the keys are also written in every tenant store of the alias.
    """

    created = models.DateTimeField(default=timezone.now, db_index=True)
    alias = models.CharField(max_length=200)
    tenant = models.TextField(null=True, blank=True)
    keys = models.JSONField(null=True, blank=True)
    tags = models.JSONField(default=list, blank=True)
    fanout = models.BooleanField(default=False)

    class Meta:
        db_table = "fragmented_keys_django_outbox"
        verbose_name = "pending bump"
        verbose_name_plural = "pending bumps"

    def __str__(self) -> str:
        what = "namespace flush" if self.keys is None else f"{len(self.keys)} version key(s)"
        return f"{what} for tenant {self.tenant!r} on alias {self.alias!r}"


class CacheOperations(models.Model):
    """No table: the operator page of the Django admin (``admin.py``) and its permission.

    ``fragmented_keys_django.operate_cache`` lets a staff user see a tenant's
    cache (hit ratio, recent bumps, retry backlog, tag versions) and bump a tag
    or flush the tenant there.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("operate_cache", "Can see a tenant's cache, bump its tags and flush it"),
        ]
        verbose_name = "tenant cache"
        verbose_name_plural = "tenant cache"
