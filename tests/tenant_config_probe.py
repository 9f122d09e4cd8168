"""Helper for tests/test_tenant_stores.py: a tenant config source in Redis, and a probe process.

``redis_config(tenant_id)`` reads tenant cache configs from a Redis hash (DB 6,
name in ``FKD_CFG_HASH``), so two processes see the same configs.

Run as a script (``python -m tests.tenant_config_probe``) it is "process 2":
it configures Django from ``tests.settings`` with ``CACHES`` taken from the
``FKD_CACHES`` environment variable (JSON), then every 50 ms prints
``<time.monotonic()> <store alias>`` for tenant ``FKD_TENANT``, for at most
``FKD_PROBE_SECONDS`` seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
CONFIG_DB_URL = f"{REDIS_URL}/6"

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


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from django.conf import settings

    settings.CACHES = json.loads(os.environ["FKD_CACHES"])
    import django

    django.setup()
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
