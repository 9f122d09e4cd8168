"""Fixtures shared by the suite.

``store`` runs a test once per store kind (locmem, the database cache, Redis
through django-redis, memcached through Django's ``PyMemcacheCache``, a Redis
Cluster through our ``RedisClusterCache``); ``frag`` is
the fragmented alias over that store. ``memcached_server``, ``redis_cluster`` and
``sentinel`` are the throwaway servers of ``tests/servers.py``, started on first use.

In the modules that set ``BOTH_APIS = True`` (the behavioural suite), ``frag``
also runs each test twice: through the sync API, and through the async API
called with ``async_to_sync`` (:class:`AsyncAPI`: ``frag.get(...)`` runs
``aget``), so the sync and async drivers of the protocol cannot drift apart.
"""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import TenantContext
from fragmented_keys_django import keys as keys_mod
from fragmented_keys_django.config import reset_configuration
from fragmented_keys_django.model_tags import ModelTagManager

from . import servers
from .redis_dbs import redis_url


def store_settings(kind: str, **wrapper: object) -> dict:
    """Return ``CACHES`` with alias ``default`` = a store of *kind*, ``fragmented`` wrapping it."""
    if kind == "locmem":
        store = {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": uuid.uuid4().hex,
        }
    elif kind == "db":
        store = {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "fkd_cache_table",
        }
    elif kind == "redis":
        store = {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url("store"),
            "KEY_PREFIX": uuid.uuid4().hex[:8],
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        }
    elif kind == "memcached":
        store = {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": servers.memcached().location,
            "KEY_PREFIX": uuid.uuid4().hex[:8],
        }
    elif kind == "django-valkey":  # valkey-py talking to the suite's Redis 7
        store = {
            "BACKEND": "django_valkey.cache.ValkeyCache",
            "LOCATION": redis_url("store").replace("redis://", "valkey://"),
            "KEY_PREFIX": uuid.uuid4().hex[:8],
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        }
    elif kind == "cluster":  # our RedisClusterCache on the suite's Redis Cluster
        store = {
            "BACKEND": "fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache",
            "LOCATION": servers.redis_cluster().url,
            "KEY_PREFIX": uuid.uuid4().hex[:8],
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    elif kind == "file":
        import tempfile

        store = {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": tempfile.mkdtemp(prefix="fkd-file-cache-"),
        }
    elif kind == "django-redis-builtin":
        store = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url("store"),
            "KEY_PREFIX": uuid.uuid4().hex[:8],
        }
    else:  # pragma: no cover
        raise ValueError(kind)
    frag = {
        "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
        "CACHE_NAME": "default",
        "PREFIX": "t",
        **wrapper,
    }
    return {"default": store, "fragmented": frag}


STORES = [
    pytest.param("locmem", id="locmem"),
    pytest.param("db", id="db", marks=pytest.mark.django_db(transaction=True)),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("memcached", id="memcached", marks=pytest.mark.memcached),
    pytest.param("cluster", id="cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
]


@pytest.fixture(params=STORES)
def store(request):
    """Name of the store kind under test; CACHES is overridden for the test's duration."""
    kind = request.param
    with override_settings(CACHES=store_settings(kind)):
        if kind == "db":
            from django.core.management import call_command

            call_command("createcachetable", verbosity=0)
            # The cache table is not a model table: transactional tests do not
            # flush it, so empty it here or entries leak from earlier tests.
            caches["default"].clear()
        yield kind
        caches["fragmented"].close()


class AsyncAPI:
    """A fragmented backend whose sync methods run their async twins through ``async_to_sync``.

    ``api.get(...)`` is ``async_to_sync(backend.aget)(...)``, for every method
    of Django's cache API and of the tag API that has an ``a*`` twin; the
    others (properties, ``tag_version_key``...) are the backend's own.
    """

    TWINS = frozenset(
        {
            "get",
            "set",
            "add",
            "touch",
            "delete",
            "has_key",
            "incr",
            "decr",
            "get_many",
            "set_many",
            "delete_many",
            "get_or_set",
            "clear",
            "close",
            "set_with_tags",
            "get_with_tags",
            "get_many_with_tags",
            "get_or_set_with_tags",
            "delete_with_tags",
            "invalidate_tags",
            "invalidate_tenant",
            "get_tag_version",
        }
    )

    def __init__(self, backend) -> None:
        self.backend = backend

    def __getattr__(self, name):
        if name in self.TWINS:
            return async_to_sync(getattr(self.backend, "a" + name))
        return getattr(self.backend, name)


def pytest_generate_tests(metafunc):
    """Run the ``frag`` tests of modules with ``BOTH_APIS = True`` through both APIs."""
    if "frag" in metafunc.fixturenames and getattr(metafunc.module, "BOTH_APIS", False):
        metafunc.parametrize("api", ["sync", "async"], indirect=True)


@pytest.fixture
def api(request):
    """Which API ``frag`` exposes: ``"sync"``, or ``"async"`` (:class:`AsyncAPI`)."""
    return getattr(request, "param", "sync")


@pytest.fixture
def frag(store, api):
    """The fragmented alias over the current store (through the async API for ``api="async"``)."""
    backend = caches["fragmented"]
    return AsyncAPI(backend) if api == "async" else backend


@pytest.fixture(autouse=True)
def _clean_state():
    """Each test starts outside any tenant, with default configuration and no registrations.

    Global tags a test registered (``register_model(..., tenant_scoped=False)``
    registers one) are forgotten too.
    """
    TenantContext.clear_all()
    reset_configuration()
    global_tags = keys_mod._global_tags
    yield
    TenantContext.clear_all()
    reset_configuration()
    ModelTagManager.clear_all()
    if keys_mod._global_tags != global_tags:
        keys_mod._global_tags = global_tags
        keys_mod.clear_memos()


# -- throwaway servers (tests/servers.py): started on first use, stopped at exit -----------


@pytest.fixture(scope="session")
def memcached_server() -> servers.Memcached:
    """The session's memcached; a test that asks for it fails if memcached cannot start."""
    return servers.memcached()


@pytest.fixture
def redis_cluster() -> servers.RedisClusterTopology:
    """The session's Redis Cluster (3 primaries, 3 replicas), healed after earlier tests' faults."""
    cluster = servers.redis_cluster()
    cluster.heal()
    return cluster


@pytest.fixture
def sentinel() -> servers.SentinelTopology:
    """The session's Sentinel topology (primary, replica, 3 sentinels), healed first."""
    topology = servers.sentinel()
    topology.heal()
    return topology


def pytest_terminal_summary(terminalreporter) -> None:
    """Say how long each throwaway server of tests/servers.py took to start (when any did)."""
    if servers.started:
        terminalreporter.write_line(
            "test servers started: "
            + ", ".join(f"{name} in {seconds:.2f}s" for name, seconds in servers.started.items())
        )
