"""A write outside any tenant to a tenant-scoped model is refused before it is written (issue 10, item 4).

With ``TENANT_REQUIRED`` and ``register_model(User)``, ``createsuperuser``
committed the user row and then died with a ``TenantRequired`` traceback
(``post_save`` runs after an autocommit write has committed). Now:

* a tenant-scoped model written outside any tenant (or a row whose
  ``tenant_field`` is empty) on such an alias is refused *before* the write,
  with an error naming ``tenant_scoped=False`` and ``tenant_field=``;
* a model registered with ``tenant_scoped=False`` (users, the tenant table)
  is written anywhere and bumps its global tag, which reaches every tenant;
* the same holds for ``CacheAwareManager.bulk_create`` (before its
  statement) and for a global tag on an alias with ``TENANT_STORES`` (refused
  with ``ConfigurationError`` before the write, not after it).
"""

from __future__ import annotations

import contextlib

import pytest
from django.core.cache import caches
from django.db import transaction
from django.test import override_settings

from fragmented_keys_django import ConfigurationError, TenantContext, TenantRequired
from fragmented_keys_django.model_tags import ModelTagManager
from tests.testapp.models import Hospital, Note, Patient

from .conftest import store_settings

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["locmem", "redis"])
def required(request):
    """CACHES with a TENANT_REQUIRED alias (the README's recommended settings) over *request.param*."""
    conf = store_settings(request.param, OPTIONS={"TENANT_REQUIRED": True})
    with override_settings(CACHES=conf):
        yield caches["fragmented"]
        caches["fragmented"].close()


def refused(call) -> TenantRequired:
    with pytest.raises(TenantRequired) as info:
        call()
    message = str(info.value)
    assert "tenant_scoped=False" in message and "tenant_field=" in message, message
    return info.value


@pytest.mark.parametrize("in_atomic", [False, True], ids=["autocommit", "atomic"])
def test_a_tenant_scoped_save_outside_any_tenant_is_refused_before_the_write(required, in_atomic):
    ModelTagManager.register_model(Patient)

    def create():
        with transaction.atomic() if in_atomic else contextlib.nullcontext():
            Patient.objects.create(name="written?")

    refused(create)
    assert not Patient.objects.filter(name="written?").exists()
    with TenantContext.use_tenant("acme"):
        p = Patient.objects.create(name="in acme")
    p.name = "renamed outside"
    refused(p.save)
    assert Patient.objects.get(pk=p.pk).name == "in acme"
    refused(lambda: Patient.objects.bulk_create([Patient(name="bulk")]))
    assert not Patient.objects.filter(name="bulk").exists()
    refused(p.delete)  # a delete runs in a transaction: refused, rolled back
    assert Patient.objects.filter(pk=p.pk).exists()


def test_a_row_naming_no_tenant_is_refused_before_the_write(required):
    ModelTagManager.register_model(Note, tenant_field="tenant_id")
    with TenantContext.use_tenant("acme"):  # the row's column decides, not the context
        refused(lambda: Note.objects.create(tenant_id="", text="nobody's"))
        refused(lambda: Note.objects.bulk_create([Note(tenant_id="", text="nobody's")]))
    assert not Note.objects.exists()
    # Outside any tenant, a row that names its tenant is fine and bumps there.
    with TenantContext.use_tenant("acme"):
        required.set_with_tags("notes", "old", [("Note", "")])
    Note.objects.create(tenant_id="acme", text="from an admin")
    with TenantContext.use_tenant("acme"):
        assert required.get_with_tags("notes", [("Note", "")]) is None


def test_a_shared_model_is_written_anywhere_and_invalidates_every_tenant(required):
    ModelTagManager.register_model(Hospital, tenant_scoped=False)  # the docs' recipe
    h = Hospital.objects.create(name="St Mary")  # outside any tenant: createsuperuser, a shell
    for tenant in ("acme", "globex"):
        with TenantContext.use_tenant(tenant):
            required.set_with_tags("hospital", h.name, [("Hospital", str(h.pk))])
    h.name = "St Mary's"
    h.save()
    for tenant in ("acme", "globex"):
        with TenantContext.use_tenant(tenant):
            assert required.get_with_tags("hospital", [("Hospital", str(h.pk))]) is None


def test_a_global_tag_on_an_alias_with_tenant_stores_is_refused_before_the_write():
    conf = store_settings("locmem", OPTIONS={"TENANT_STORES": {}})
    with override_settings(CACHES=conf):
        ModelTagManager.register_model(Hospital, tenant_scoped=False)
        with pytest.raises(ConfigurationError, match="TENANT_STORES"):
            Hospital.objects.create(name="nowhere")
        assert not Hospital.objects.exists()


def test_writes_inside_a_tenant_are_unchanged(required):
    ModelTagManager.register_model(Patient)
    with TenantContext.use_tenant("acme"):
        required.set_with_tags("p", "old", [("Patient", "")])
        p = Patient.objects.create(name="x")
        Patient.objects.bulk_create([Patient(name="y")])
        p.delete()
        assert required.get_with_tags("p", [("Patient", "")]) is None
    assert Patient.objects.filter(name="y").exists()
