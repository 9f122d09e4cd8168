#!/usr/bin/env python
"""Memory freed by offboarding tenants: ``invalidate_tenant`` versus ``purge_tenant`` (issue 12).

Starts its own throwaway ``redis-server`` (the suite's ``tests/race_support.RedisServer``,
on a free loopback port; never the machine's Redis), fills it through the fragmented
backend over django-redis with ``--tenants`` tenants of ``--entries`` tagged entries each
(``set_with_tags`` with two tags: one entry, its tag version, the tenant's list tag and
namespace), then for ``--offboard`` tenants:

1. ``invalidate_tenant`` (what ``fk_flush_tenant`` does): ``INFO memory used_memory``;
2. ``purge_tenant`` one by one for ``--one-by-one`` of them (each walks the whole
   database with ``SCAN``), then ``purge_tenants`` for the rest (one walk for all):
   ``used_memory`` again, keys deleted, time.

Run from the repository root::

    .venv/bin/python benchmarks/purge_memory.py                      # 10,000 x 100, purge 1,300
    .venv/bin/python benchmarks/purge_memory.py --tenants 500 --offboard 65   # quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def configure(url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["fragmented_keys_django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url},
            "fragmented": {
                "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
                "CACHE_NAME": "default",
                "PREFIX": "bench",
            },
        },
        USE_TZ=True,
    )
    django.setup()


def used(client) -> int:
    return int(client.info("memory")["used_memory"])


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--offboard", type=int, default=1_300)
    parser.add_argument("--one-by-one", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()

    from tests.race_support import RedisServer

    server = RedisServer().start()
    try:
        configure(server.url)
        run(server, args)
    finally:
        server.stop()


def run(server, args) -> None:
    from django.core.cache import caches

    from fragmented_keys_django import TenantContext
    from fragmented_keys_django.purge import purge_tenant, purge_tenants

    frag = caches["fragmented"]
    client = server.client()
    value = os.urandom(100)
    t0 = time.perf_counter()
    for t in range(args.tenants):
        with TenantContext.use_tenant(f"tenant-{t}"):
            for i in range(args.entries):
                frag.set_with_tags(f"page:{i}", value, [("Item", str(i)), ("List", "")])
    fill_s = time.perf_counter() - t0
    keys0, mem0 = client.dbsize(), used(client)
    print(f"filled {args.tenants} tenants x {args.entries} entries in {fill_s:.0f} s: "
          f"{keys0} keys, used_memory {mb(mem0)}")  # fmt: skip

    gone = [f"tenant-{t}" for t in range(args.offboard)]
    for tenant in gone:
        frag.invalidate_tenant(tenant)
    keys1, mem1 = client.dbsize(), used(client)
    print(f"invalidate_tenant x {len(gone)}: {keys1} keys, used_memory {mb(mem1)} "
          f"({mb(mem0 - mem1)} freed)")  # fmt: skip

    single = gone[: args.one_by_one]
    t0 = time.perf_counter()
    deleted = sum(purge_tenant(t, "fragmented", batch=args.batch).deleted for t in single)
    single_s = time.perf_counter() - t0
    if single:
        print(f"purge_tenant x {len(single)}, one by one: {deleted} keys deleted, "
              f"{single_s / len(single) * 1000:.0f} ms per tenant (a SCAN of the whole "
              f"database each)")  # fmt: skip
    rest = gone[args.one_by_one :]
    t0 = time.perf_counter()
    reports = purge_tenants(rest, "fragmented", batch=args.batch)
    many_s = time.perf_counter() - t0
    deleted += sum(r.deleted for r in reports)
    keys2, mem2 = client.dbsize(), used(client)
    print(f"purge_tenants x {len(rest)}, one pass: {many_s:.1f} s")
    print(f"after purging {len(gone)} tenants: {deleted} keys deleted, {keys2} keys left, "
          f"used_memory {mb(mem2)} ({mb(mem1 - mem2)} freed, "
          f"{(mem1 - mem2) / mem1:.1%})")  # fmt: skip
    client.execute_command("MEMORY", "PURGE")  # give the allocator's free pages back
    print(f"after MEMORY PURGE: used_memory {mb(used(client))}, "
          f"used_memory_rss {mb(int(client.info('memory')['used_memory_rss']))}")  # fmt: skip
    client.close()


if __name__ == "__main__":
    main()
