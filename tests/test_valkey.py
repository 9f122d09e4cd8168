"""Valkey clients (issue 12, item 3): valkey-py and django-valkey talking to the suite's Redis 7.

Debian 12 has no ``valkey-server``; "Valkey" here means the Valkey client libraries, which
speak the same protocol. The core behaviour over django-valkey's ``ValkeyCache`` runs in
``tests/test_more_stores.py`` (``[django-valkey]``); this module covers what differs.
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import TenantContext

from .conftest import store_settings
from .race_support import free_port, reset_retrier
from .redis_dbs import base_url

pytestmark = pytest.mark.redis

MISS = object()
TAGS = [("User", "1")]


def test_valkey_py_talks_to_the_suites_redis():
    import valkey

    client = valkey.Valkey.from_url(base_url())
    assert client.ping()
    assert client.info("server")["redis_version"].startswith("7.")
    client.close()


def test_a_valkey_store_that_is_down_is_a_miss_not_an_error():
    conf = store_settings("django-valkey")
    conf["default"]["LOCATION"] = f"valkey://127.0.0.1:{free_port()}/0"  # nothing listens
    conf["default"]["OPTIONS"] = {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5}
    with override_settings(CACHES=conf), TenantContext.use_tenant("acme"):
        frag = caches["fragmented"]
        try:
            assert frag.get_with_tags("page", TAGS, default=MISS) is MISS
            assert frag.get("plain", MISS) is MISS
        finally:
            frag.close()
            reset_retrier()


@pytest.mark.django_db(transaction=True)
def test_async_tagged_api_over_django_valkey():
    with override_settings(CACHES=store_settings("django-valkey")):
        frag = caches["fragmented"]

        async def scenario():
            with TenantContext.use_tenant("acme"):
                await frag.aset_with_tags("page", "v1", TAGS)
                assert await frag.aget_with_tags("page", TAGS) == "v1"
                assert await frag.ainvalidate_tags(TAGS) == 1
                assert await frag.aget_with_tags("page", TAGS, default=MISS) is MISS

        try:
            async_to_sync(scenario)()
        finally:
            frag.close()
            reset_retrier()
