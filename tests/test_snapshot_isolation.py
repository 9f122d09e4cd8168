"""Under snapshot isolation a value computed inside a transaction is never stored.

A REPEATABLE READ transaction may read a snapshot older than a commit whose bump
the reader has already seen; storing its value under the current versions could
serve stale data after that commit (see ``transactions.py``).
"""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.db import transaction
from django.test import override_settings

from fragmented_keys_django import TenantContext
from tests.conftest import store_settings
from tests.testapp.models import Hospital

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "pg", "pg_rr"]),
]

TAGS = [("Hospital", "")]


@pytest.fixture(params=["locmem", pytest.param("redis", marks=pytest.mark.redis)])
def frag(request):
    with override_settings(CACHES=store_settings(request.param)):
        yield caches["fragmented"]


def names(alias):
    return sorted(Hospital.objects.using(alias).values_list("name", flat=True))


def test_values_computed_under_repeatable_read_are_not_stored(frag):
    Hospital.objects.using("pg").create(name="A")
    with TenantContext.use_tenant("acme"):
        with transaction.atomic(using="pg_rr"):
            value = frag.get_or_set_with_tags("names", lambda: names("pg_rr"), TAGS)
        assert value == ["A"]
        assert frag.get_with_tags("names", TAGS, default="not stored") == "not stored"


def test_values_computed_under_read_committed_are_stored_on_commit(frag):
    Hospital.objects.using("pg").create(name="A")
    with TenantContext.use_tenant("acme"):
        with transaction.atomic(using="pg"):
            frag.get_or_set_with_tags("names", lambda: names("pg"), TAGS)
            assert frag.get_with_tags("names", TAGS, default="not yet") == "not yet"
        assert frag.get_with_tags("names", TAGS) == ["A"]


def test_early_recomputation_never_stores_a_value_computed_in_a_transaction(frag):
    """XFetch would recompute a hot entry early; inside a snapshot it serves the live one."""
    calls = []

    def load():
        calls.append(1)
        return names("pg_rr")

    Hospital.objects.using("pg").create(name="A")
    with TenantContext.use_tenant("acme"):
        assert frag.get_or_set_with_tags("names", load, TAGS, early_recompute=1e9) == ["A"]
        with transaction.atomic(using="pg_rr"):
            assert frag.get_or_set_with_tags("names", load, TAGS, early_recompute=1e9) == ["A"]
        assert calls == [1]  # not recomputed (and stored) from inside the snapshot
