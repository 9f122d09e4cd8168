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


@pytest.fixture
def global_hospital_tag():
    before = keys_mod._global_tags
    yield
    keys_mod._global_tags = before
    keys_mod.tag_version_key.cache_clear()
    keys_mod.entry_keys.cache_clear()


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
