"""The outbox under django-omnitenant's schema isolation (search_path = the tenant schema only).

The outbox table lives where ``manage.py migrate`` put it (the public schema).
Inside omnitenant's ``use_tenant`` the connection's search_path is the tenant
schema alone, so an unqualified ``INSERT INTO fragmented_keys_django_outbox``
does not reach it. Whether the outbox works there must not depend on which
schema the process happened to check the table from first.
"""

import pytest
from django.db import connection, transaction
from django_omnitenant.tenant_context import TenantContext as OmniContext

from fragmented_keys_django import outbox
from fragmented_keys_django.conf import get_cache
from tests.omnitenant_app.models import Item

from .test_model_source import acme  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _outbox_checked_afresh():
    """Each test decides itself where the outbox table is first looked up; forget it after."""
    outbox.reset()
    yield
    outbox.reset()


def _public_markers() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "public"."{outbox.TABLE}"')
        return cursor.fetchone()[0]


def test_a_registered_save_in_a_schema_after_a_public_transaction_commits(acme):  # noqa: F811
    frag = get_cache("fragmented")
    # A first transaction that bumps, outside any tenant (a public-schema request).
    with transaction.atomic():
        frag.invalidate_tags([("Item", "")])
    with OmniContext.use_tenant(acme):
        frag.set_with_tags("items", ["old"], [("Item", "")])
        with transaction.atomic():  # ATOMIC_REQUESTS: every tenant request
            Item.objects.create(name="widget")
        assert Item.objects.count() == 1
        assert frag.get_with_tags("items", [("Item", "")]) is None


def test_a_registered_save_in_a_schema_writes_its_marker_whatever_was_checked_first(
    acme,  # noqa: F811
):
    with OmniContext.use_tenant(acme), transaction.atomic():
        Item.objects.create(name="widget")
        assert _public_markers() == 1  # the marker, in this transaction (qualified name)
