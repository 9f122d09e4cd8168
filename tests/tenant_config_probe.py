"""Helper for tests/test_tenant_stores.py: a tenant config source in Redis, and a probe process.

``redis_config(tenant_id)`` reads tenant cache configs from a Redis hash (the
``config`` database of tests/redis_dbs.py, name in ``FKD_CFG_HASH``), so two processes see the same configs.

Run as a script (``python -m tests.tenant_config_probe``) it is "process 2":
it configures Django from ``tests.settings`` with ``CACHES`` taken from the
``FKD_CACHES`` environment variable (JSON), then every 50 ms prints
``<time.monotonic()> <store alias>`` for tenant ``FKD_TENANT``, for at most
``FKD_PROBE_SECONDS`` seconds.

With ``FKD_PROBE_MODE=serve`` it is a reader process driven over stdin instead
(``write <tenant> <value>`` changes the "database" and bumps ``("Report", "")``
there, as a registered model's save does; it answers ``{"written": value}``):
for each line ``read <tenant>`` it runs ``get_or_set_with_tags("report",
loader, [("Report", "")])`` in that tenant, the loader reading the "database"
(the Redis key ``FKD_TRUTH`` in that database), and prints one JSON line: the value, whether
it was computed, the store alias, when the read started and when this process
last checked the tenant config version (``time.monotonic()``, one clock for
every process of the machine).
"""

from __future__ import annotations

import json
import os
import sys
import time

from tests.redis_dbs import redis_url

CONFIG_DB_URL = redis_url("config")  # the parent's server: FKD_TEST_REDIS_* are inherited

_client = None


def _redis():
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(CONFIG_DB_URL)
    return _client


def redis_config(tenant_id: str):
    """Return *tenant_id*'s cache config from the hash ``FKD_CFG_HASH`` (``None`` if absent)."""
    raw = _redis().hget(os.environ["FKD_CFG_HASH"], tenant_id)
    return None if raw is None else json.loads(raw)


def _tenants():
    return [k.decode() for k in _redis().hkeys(os.environ["FKD_CFG_HASH"])]


redis_config.tenants = _tenants  # type: ignore[attr-defined]


def serve() -> None:
    """Answer ``read <tenant>`` lines on stdin with one JSON line each (see the module doc)."""
    from django.core.cache import caches

    from fragmented_keys_django import TenantContext

    frag = caches["fragmented"]
    computed: list[bool] = []

    def loader():
        computed.append(True)
        raw = _redis().get(os.environ["FKD_TRUTH"])
        return None if raw is None else raw.decode()

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command, _, tenant = line.strip().partition(" ")
        if command == "write":  # write <tenant> <value>: a save, then its bump (returned)
            tenant, _, value = tenant.partition(" ")
            _redis().set(os.environ["FKD_TRUTH"], value)
            with TenantContext.use_tenant(tenant):
                frag.invalidate_tags([("Report", "")])
            print(json.dumps({"written": value}), flush=True)
            continue
        if command != "read":
            break
        computed.clear()
        started = time.monotonic()
        with TenantContext.use_tenant(tenant):
            value = frag.get_or_set_with_tags("report", loader, [("Report", "")], timeout=60)
        stores = frag.tenant_stores
        out = {
            "value": value,
            "computed": bool(computed),
            "alias": stores.store_alias(tenant),
            "started": started,
            "checked_at": getattr(stores, "checked_at", None),  # older versions lack it
        }
        print(json.dumps(out), flush=True)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from django.conf import settings

    settings.CACHES = json.loads(os.environ["FKD_CACHES"])
    import django

    django.setup()
    if os.environ.get("FKD_PROBE_MODE") == "serve":
        serve()
        return
    from django.core.cache import caches

    tenant = os.environ["FKD_TENANT"]
    deadline = time.monotonic() + float(os.environ.get("FKD_PROBE_SECONDS", "15"))
    stores = caches["fragmented"].tenant_stores
    while time.monotonic() < deadline:
        print(f"{time.monotonic():.4f} {stores.store_alias(tenant)}", flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
