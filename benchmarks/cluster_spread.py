#!/usr/bin/env python
"""One large tenant on a Redis Cluster with ``TENANT_SLOTS`` N=1 and N=3: memory and ops per node.

Starts a throwaway 3 primaries + 3 replicas cluster (``tests/servers.py``), then for
each N: fills one tenant with ``--entries`` tagged entries (1 KB values, 3 tags from a
pool of 100 instances), runs ``--reads`` warm reads spread over them and ``--bumps``
tag bumps, and reports per primary the keys and ``used_memory`` added by the fill and
the data commands run (``INFO commandstats``; a script's inner commands included).

    .venv/bin/python benchmarks/cluster_spread.py [--entries 20000] [--reads 20000]
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = {"get", "mget", "set", "del", "evalsha", "eval", "expire", "pexpire"}


def _stats(cluster):
    out = {}
    for node in cluster.primaries():
        client = node.client()
        calls = {
            k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in client.info("commandstats").items()
        }
        out[node.port] = (client.dbsize(), client.info("memory")["used_memory"], calls)
    return out


def run(cluster, shards: int, entries: int, reads: int, bumps: int) -> list[str]:
    from django.core.cache import caches
    from django.test import override_settings

    from fragmented_keys_django import TenantContext

    tenant = "big-tenant"
    caches_conf = {
        "default": {
            "BACKEND": "fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache",
            "LOCATION": cluster.url,
            "KEY_PREFIX": f"spread-{uuid.uuid4().hex[:6]}",
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "s",
            "OPTIONS": {"TENANT_SLOTS": {tenant: shards}} if shards > 1 else {},
        },
    }
    rng = random.Random(7)
    value = b"x" * 1024
    tags_of = [
        [("Org", "1"), ("Project", str(rng.randrange(100))), ("User", str(rng.randrange(100)))]
        for _ in range(entries)
    ]
    lines = []
    with override_settings(CACHES=caches_conf), TenantContext.use_tenant(tenant):
        frag = caches["fragmented"]
        before = _stats(cluster)
        for i in range(entries):
            frag.set_with_tags(f"e{i}", value, tags_of[i])
        filled = _stats(cluster)
        for _ in range(reads):
            i = rng.randrange(entries)
            frag.get_with_tags(f"e{i}", tags_of[i])
        for _ in range(bumps):
            frag.invalidate_tags([("Project", str(rng.randrange(100)))])
        after = _stats(cluster)
        for port in sorted(after):
            keys = filled[port][0] - before[port][0]
            memory = filled[port][1] - before[port][1]
            ops = sum(n - filled[port][2].get(c, 0) for c, n in after[port][2].items() if c in DATA)
            lines.append(f"| {shards} | {port} | {keys} | {memory / 2**20:.1f} MiB | {ops} |")
        frag.close()
        caches["default"].client.close()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--bumps", type=int, default=200)
    args = parser.parse_args()

    import django
    from django.conf import settings

    from tests import servers

    settings.configure(INSTALLED_APPS=["fragmented_keys_django"], DATABASES={}, USE_TZ=True)
    django.setup()
    cluster = servers.RedisClusterTopology().start()
    try:
        print(
            f"{args.entries} entries of 1 KB, 3 tags each; {args.reads} warm reads; "
            f"{args.bumps} bumps of one tag.\n"
        )
        print(
            "| TENANT_SLOTS | primary | keys added | memory added | data commands (reads + bumps) |"
        )
        print("| --- | --- | --- | --- | --- |")
        for shards in (1, 3):
            print("\n".join(run(cluster, shards, args.entries, args.reads, args.bumps)))
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
