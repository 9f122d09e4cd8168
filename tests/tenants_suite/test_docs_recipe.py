"""The django-tenants recipe of docs/tenancy.md, run on PostgreSQL with two schemas."""

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from tests import recipes

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db]


def test_docs_recipe_django_tenants(tenants):
    blocks = recipes.load()
    conf = recipes.settings_from(
        recipes.run(blocks["django-tenants settings"], {}, "django-tenants settings")
    )
    assert conf["FRAGMENTED_KEYS"] == settings.FRAGMENTED_KEYS
    assert conf["MIDDLEWARE"][0] == settings.MIDDLEWARE[0]
    frag = caches["fragmented"]
    for tenant in ("acme", "globex", None):  # other tests of the suite wrote the same keys
        frag.invalidate_tenant(tenant)
    with override_settings(**conf):
        recipes.run(blocks["django-tenants"], {}, "django-tenants")
