"""Which Redis server and databases the test suite may use (issue 10, item 9).

By default the suite starts its **own throwaway** ``redis-server`` on a free
loopback port, the first time a test needs Redis, and stops it when the
session ends: every database on it is ours, and the machine's Redis (whatever
answers on 6379) is never touched. Subprocesses (the Celery worker, the
django-tenants and omnitenant suites, the demo, the race children) inherit
it through the environment.

To run the suite against an existing server instead, name the databases it
may use, one per role below (``len(ROLES)`` of them; ranges allowed)::

    FKD_TEST_REDIS_DBS=3-9,11-15 make test
    FKD_TEST_REDIS_URL=redis://10.0.0.5:6380 FKD_TEST_REDIS_DBS=0-11 make test

``FKD_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``) gives the host and
port, without a database. Tests only write keys under their own prefixes, but
some flush their database (the benchmark): never name a database you use.

Tests ask for a URL by role (``redis_url("store")``), never by number, so no
test can reach a database the variable does not name.
"""

from __future__ import annotations

import atexit
import os

__all__ = ["ROLES", "base_url", "redis_db", "redis_url"]

ENV_URL = "FKD_TEST_REDIS_URL"
ENV_DBS = "FKD_TEST_REDIS_DBS"

#: What each database is for, and its number on the suite's own server.
ROLES: dict[str, int] = {
    "commands": 3,  # tests/test_commands.py's shared store; docs recipes
    "subsuite": 4,  # the django-tenants and omnitenant suites' store; docs recipes
    "tenants_shared": 5,  # tests/test_tenant_stores.py's shared store; docs recipes; the demo
    "config": 6,  # tenant configuration version and pub/sub (TENANT_CONFIG_URL)
    "celery": 7,  # Celery broker and results
    "tenant": 8,  # a tenant's own store
    "tenant2": 9,  # a second tenant store
    "bench": 11,  # benchmarks/run.py --quick (FLUSHDB'ed)
    "count": 12,  # round-trip counting with MONITOR (tests/test_backend.py)
    "store": 13,  # the ``store`` fixture and most tests
    "contract": 14,  # Django's cache contract, Django's RedisCache
    "contract_pkg": 15,  # Django's cache contract, django-redis
}

_server = None  # our throwaway RedisServer, in the process that started it


def _parse(spec: str) -> list[int]:
    dbs: list[int] = []
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            dbs += list(range(int(low), int(high or low) + 1))
        except ValueError:
            raise RuntimeError(
                f"{ENV_DBS}={spec!r}: write database numbers and ranges, e.g. 3-9,11-15"
            ) from None
    if len(set(dbs)) != len(dbs):
        raise RuntimeError(f"{ENV_DBS}={spec!r} names a database twice")
    if len(dbs) < len(ROLES):
        raise RuntimeError(
            f"{ENV_DBS}={spec!r} names {len(dbs)} database(s); the suite needs {len(ROLES)}, "
            f"one per role ({', '.join(ROLES)})"
        )
    return dbs


def _start_own() -> None:
    """Start the suite's throwaway redis-server and publish it to subprocesses."""
    global _server
    from .race_support import RedisServer

    _server = RedisServer("--databases", str(max(ROLES.values()) + 1)).start()
    owner = os.getpid()
    # Only this process stops it (a forked child exiting must not).
    atexit.register(lambda: os.getpid() == owner and _server.stop())
    os.environ[ENV_URL] = f"redis://127.0.0.1:{_server.port}"
    os.environ[ENV_DBS] = ",".join(str(db) for db in ROLES.values())


def base_url() -> str:
    """Return the suite's Redis as ``redis://host:port`` (no database); start it if needed."""
    if not os.environ.get(ENV_DBS):
        if os.environ.get(ENV_URL):
            raise RuntimeError(
                f"{ENV_URL} is set but {ENV_DBS} is not: name the databases the suite may "
                f"use on that server (it needs {len(ROLES)}), e.g. {ENV_DBS}=3-9,11-15"
            )
        _start_own()
    return os.environ.get(ENV_URL, "redis://127.0.0.1:6379").rstrip("/")


def redis_db(role: str) -> int:
    """Return the database number of *role* (see :data:`ROLES`)."""
    base_url()
    dbs = _parse(os.environ[ENV_DBS])
    return dbs[list(ROLES).index(role)]


def redis_url(role: str) -> str:
    """Return ``redis://host:port/db`` for *role* on the suite's Redis."""
    return f"{base_url()}/{redis_db(role)}"
