"""Global tags (data shared by every tenant) and SHARED (reserved) aliases."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.db import transaction
from django.test import override_settings

from fragmented_keys_django import ConfigurationError, ModelTagManager, TenantContext
from fragmented_keys_django import keys as keys_mod
from tests.conftest import store_settings
from tests.testapp.models import Hospital

#: Every ``frag`` test runs through the sync API and through the async one (tests/conftest.py).
BOTH_APIS = True


@pytest.fixture
def global_hospital_tag():
    before = keys_mod._global_tags
    yield
    keys_mod._global_tags = before
    keys_mod.clear_memos()


@pytest.mark.django_db(transaction=True)
def test_global_model_bump_reaches_every_tenant(frag, global_hospital_tag):
    ModelTagManager.register_model(Hospital, tenant_scoped=False)
    for tenant in ("acme", "globex"):
        with TenantContext.use_tenant(tenant):
            frag.set_with_tags("hospitals", f"list-{tenant}", [("Hospital", "")])
            frag.set_with_tags("own", f"own-{tenant}", [("Patient", "")])
    with transaction.atomic():
        Hospital.objects.create(name="Central")  # saved outside any tenant
    for tenant in ("acme", "globex"):
        with TenantContext.use_tenant(tenant):
            assert frag.get_with_tags("hospitals", [("Hospital", "")], default="miss") == "miss"
            assert frag.get_with_tags("own", [("Patient", "")]) == f"own-{tenant}"
            # Entries stay per tenant even under a global tag.
            frag.set_with_tags("hospitals", f"new-{tenant}", [("Hospital", "")])
    with TenantContext.use_tenant("acme"):
        assert frag.get_with_tags("hospitals", [("Hospital", "")]) == "new-acme"


def test_tenant_scoped_tags_stay_per_tenant(frag):
    with TenantContext.use_tenant("acme"):
        frag.set_with_tags("p", "acme", [("Hospital", "")])
    with TenantContext.use_tenant("globex"):
        frag.invalidate_tags([("Hospital", "")])
    with TenantContext.use_tenant("acme"):
        assert frag.get_with_tags("p", [("Hospital", "")]) == "acme"


def test_shared_alias_ignores_the_tenant():
    conf = store_settings("locmem", OPTIONS={"SHARED": True})
    with override_settings(CACHES=conf):
        shared = caches["fragmented"]
        with TenantContext.use_tenant("acme"):
            shared.set("rates", {"EUR": 1})
        with TenantContext.use_tenant("globex"):
            assert shared.get("rates") == {"EUR": 1}
        assert shared.get("rates") == {"EUR": 1}


def test_shared_excludes_tenant_required():
    conf = store_settings("locmem", OPTIONS={"SHARED": True, "TENANT_REQUIRED": True})
    with override_settings(CACHES=conf), pytest.raises(ConfigurationError, match="SHARED=True"):
        caches["fragmented"].get("k")


@pytest.mark.django_db(transaction=True)
def test_shared_alias_entries_are_invalidated_by_saves_in_any_tenant():
    conf = store_settings("locmem")
    conf["shared"] = {**conf["fragmented"], "PREFIX": "shared", "OPTIONS": {"SHARED": True}}
    with override_settings(CACHES=conf):
        ModelTagManager.register_model(Hospital)
        shared, frag = caches["shared"], caches["fragmented"]
        with TenantContext.use_tenant("acme"):
            shared.set_with_tags("all-hospitals", "v1", [("Hospital", "")])
            frag.set_with_tags("mine", "acme-v1", [("Hospital", "")])
        with TenantContext.use_tenant("globex"):
            Hospital.objects.create(name="New")
        with TenantContext.use_tenant("acme"):
            assert shared.get_with_tags("all-hospitals", [("Hospital", "")]) is None
            assert frag.get_with_tags("mine", [("Hospital", "")]) == "acme-v1"


@pytest.mark.django_db(transaction=True)
def test_tenant_field_bumps_the_rows_tenant_whatever_is_current(frag):
    from tests.testapp.models import Note

    ModelTagManager.register_model(Note, tenant_field="tenant_id")
    for tenant in ("acme", "globex"):
        with TenantContext.use_tenant(tenant):
            frag.set_with_tags("notes", f"{tenant}-v1", [("Note", "")])
    Note.objects.create(tenant_id="acme", text="x")  # saved outside any tenant
    with TenantContext.use_tenant("acme"):
        assert frag.get_with_tags("notes", [("Note", "")]) is None
    with TenantContext.use_tenant("globex"):
        assert frag.get_with_tags("notes", [("Note", "")]) == "globex-v1"
        frag.set_with_tags("notes", "globex-v2", [("Note", "")])
    Note.objects.filter(tenant_id="globex").update(text="y")  # no rows: nothing to bump
    with TenantContext.use_tenant("globex"):
        assert frag.get_with_tags("notes", [("Note", "")]) == "globex-v2"
    Note.objects.create(tenant_id="globex", text="z")
    Note.objects.filter(tenant_id="globex").update(text="w")
    with TenantContext.use_tenant("globex"):
        assert frag.get_with_tags("notes", [("Note", "")]) is None


@pytest.mark.django_db(transaction=True)
def test_a_save_without_tenant_on_a_tenant_required_alias_is_refused_before_any_bump():
    from fragmented_keys_django import TenantRequired

    conf = store_settings("locmem")
    conf["strict_tenant"] = {
        **conf["fragmented"],
        "PREFIX": "req",
        "OPTIONS": {"TENANT_REQUIRED": True},
    }
    with override_settings(CACHES=conf):
        ModelTagManager.register_model(Hospital)
        frag = caches["fragmented"]
        frag.set_with_tags("public", "v1", [("Hospital", "")])
        with pytest.raises(TenantRequired, match="requires a tenant"):
            Hospital.objects.create(name="Nowhere")
        # Refused before any alias was bumped: the public entry of the other alias is intact.
        assert frag.get_with_tags("public", [("Hospital", "")]) == "v1"


def test_dummy_store_is_refused_at_first_use():
    conf = {
        "default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        "fragmented": {"BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend"},
    }
    with override_settings(CACHES=conf), pytest.raises(ConfigurationError, match="DummyCache"):
        caches["fragmented"].get("k")


def test_global_tags_are_bumped_outside_a_tenant_on_a_tenant_required_alias(global_hospital_tag):
    """invalidate_tags() of global tags needs no tenant, as bump_tags() (docs: TENANT_REQUIRED)."""
    from fragmented_keys_django import bump_tags
    from fragmented_keys_django.exceptions import TenantRequired
    from fragmented_keys_django.keys import register_global_tag

    register_global_tag("Country")
    with override_settings(CACHES=store_settings("locmem", OPTIONS={"TENANT_REQUIRED": True})):
        _global_bumps_need_no_tenant(caches["fragmented"], bump_tags, TenantRequired)


def _global_bumps_need_no_tenant(frag_required, bump_tags, TenantRequired):
    with TenantContext.use_tenant("acme"):
        frag_required.set_with_tags("countries", ["FR"], [("Country", "")])
    assert frag_required.invalidate_tags([("Country", "")]) == 1  # outside any tenant
    with TenantContext.use_tenant("acme"):
        assert frag_required.get_with_tags("countries", [("Country", "")]) is None
    assert bump_tags([("Country", "")]) == 1
    with pytest.raises(TenantRequired):
        frag_required.invalidate_tags([("Country", ""), ("Local", "1")])  # one is not global
