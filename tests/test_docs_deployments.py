"""Every settings snippet of docs/deployments.md runs, against the suite's own servers.

Each ``<!-- recipe: NAME settings -->`` block is executed and its ``CACHES`` applied with
``override_settings``; only addresses are rewritten (the suite's Redis databases,
memcached, cluster and sentinels from tests/servers.py), and each store gets a unique
``KEY_PREFIX``. Where the page says the backend works on that store, the same tagged
scenario runs through it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.test import override_settings

from fragmented_keys_django import TenantContext

from . import recipes, servers
from .race_support import reset_retrier
from .redis_dbs import base_url, redis_db

DOC = Path(__file__).resolve().parent.parent / "docs" / "deployments.md"
MISS = object()
TAGS = [("Order", "")]

#: name -> (marks, whether the backend runs on it today)
DEPLOYMENTS = {
    "single-redis": ([pytest.mark.redis], True),
    "database-cache": ([pytest.mark.django_db(transaction=True)], True),
    "memcached": ([pytest.mark.memcached], True),
    "redis-cluster": ([pytest.mark.redis, pytest.mark.cluster], True),
    "redis-cluster-tenant-slots": ([pytest.mark.redis, pytest.mark.cluster], True),
    "sentinel": (
        [pytest.mark.redis, pytest.mark.sentinel, pytest.mark.django_db(transaction=True)],
        True,
    ),
    "valkey": ([pytest.mark.redis], True),
}


@pytest.fixture(scope="module")
def blocks():
    return recipes.load(DOC)


def test_every_deployment_snippet_is_tested(blocks):
    assert {name.removesuffix(" settings") for name in blocks} == set(DEPLOYMENTS)


def rewrite(name: str, code: str) -> str:
    """Point the snippet's addresses at the suite's servers."""
    if name in ("single-redis", "valkey"):
        rw = recipes.RedisRewriter(base_url(), [redis_db("store")])
        code = rw(code.replace("valkey://", "redis://"))
        if name == "valkey":
            code = code.replace("redis://", "valkey://")
    elif name == "memcached":
        code = code.replace("127.0.0.1:11211", servers.memcached().location)
    elif name == "redis-cluster":
        seeds = ",".join(f"redis://{h}:{p}" for h, p in servers.redis_cluster().startup_nodes[:2])
        code = code.replace("redis://127.0.0.1:7000,redis://127.0.0.1:7001", seeds)
    elif name == "redis-cluster-tenant-slots":
        code = code.replace("redis://127.0.0.1:7000", servers.redis_cluster().url)
    elif name == "sentinel":
        topology = servers.sentinel()
        topology.heal()
        ports = [port for _, port in topology.sentinel_addrs]
        for doc_port, port in zip((26379, 26380, 26381), ports, strict=True):
            code = code.replace(f'("127.0.0.1", {doc_port})', f'("127.0.0.1", {port})')
        code = code.replace("mymaster", servers.SERVICE)
    return code


def settings_of(blocks, name: str) -> dict:
    code = rewrite(name, blocks[f"{name} settings"])
    conf = recipes.settings_from(recipes.run(code, {}, f"{name} settings"))
    for alias in conf["CACHES"].values():
        if "fragmented_keys_django" not in alias["BACKEND"]:
            alias["KEY_PREFIX"] = f"fkd-doc-{uuid.uuid4().hex[:8]}"
    return conf


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=marks, id=n) for n, (marks, _) in DEPLOYMENTS.items()]
)
def test_deployment_snippet(blocks, name):
    conf = settings_of(blocks, name)
    with override_settings(**conf):
        try:
            store = caches["default"]
            if name == "database-cache":
                call_command("createcachetable", verbosity=0)
            store.set("plain", 1)
            assert store.get("plain") == 1
            if not DEPLOYMENTS[name][1]:
                assert "fragmented" not in conf["CACHES"]  # the page says: coming
                return
            frag = caches["fragmented"]
            with TenantContext.use_tenant("acme"):
                frag.set_with_tags("dashboard", {"orders": 12}, TAGS)
                assert frag.get_with_tags("dashboard", TAGS) == {"orders": 12}
            with TenantContext.use_tenant("globex"):
                assert frag.get_with_tags("dashboard", TAGS, default=MISS) is MISS
            with TenantContext.use_tenant("acme"):
                assert frag.invalidate_tags(TAGS) == 1
                assert frag.get_with_tags("dashboard", TAGS, default=MISS) is MISS
        finally:
            for alias in conf["CACHES"]:
                caches[alias].close()
            reset_retrier()
