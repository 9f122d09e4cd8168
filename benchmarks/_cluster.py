"""Benchmark rows on a Redis Cluster: a tagged read and a bump, against a plain get there.

The cluster is the suite's throwaway 3 primaries + 3 replicas (``tests/servers.py``),
started here and stopped after; without ``redis-server``/``redis-cli`` the rows are
left out (logged). The store is our ``RedisClusterCache``; the baseline is its plain
``get`` on the same cluster, timed interleaved in the same rounds. Redis commands are
summed over the primaries (``INFO commandstats``: a script's inner commands count too);
round trips are socket writes by redis-py.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import _harness as h

ROOT = Path(__file__).resolve().parent.parent
TAGS3 = [("User", "1"), ("Org", "7"), ("Project", "3")]
GLOBAL = ("Country", "FR")
TENANT = "bench-tenant"


class _Primaries:
    """``info("commandstats")`` summed over the cluster's primaries (what count_redis reads)."""

    def __init__(self, cluster: Any) -> None:
        self.clients = [node.client() for node in cluster.primaries()]

    def info(self, section: str) -> dict[str, dict[str, int]]:
        total: dict[str, dict[str, int]] = {}
        for client in self.clients:
            for name, v in client.info(section).items():
                total.setdefault(name, {"calls": 0})["calls"] += int(v["calls"])
        return total


def bench_cluster(plan: Any, log: Any) -> list[h.Row]:
    """Return the cluster rows (empty if no cluster can be started here)."""
    sys.path.insert(0, str(ROOT))
    from tests import servers

    try:
        cluster = servers.RedisClusterTopology().start()
    except servers.ServerUnavailable as exc:
        log(f"  cluster: not run ({exc})")
        return []
    try:
        return _bench(plan, log, cluster)
    finally:
        cluster.stop()


def _bench(plan: Any, log: Any, cluster: Any) -> list[h.Row]:
    from django.conf import settings
    from django.core.cache import caches
    from django.test import override_settings

    from fragmented_keys_django import TenantContext
    from fragmented_keys_django.keys import register_global_tag

    register_global_tag(GLOBAL[0])
    value = b"x" * 1024
    conf = {
        **settings.CACHES,
        "cluster": {
            "BACKEND": "fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache",
            "LOCATION": cluster.url,
            "KEY_PREFIX": f"bench-{uuid.uuid4().hex[:6]}",
            "TIMEOUT": 3600,
        },
        "fragmented-cluster": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "cluster",
            "PREFIX": "bench",
            "TIMEOUT": 3600,
        },
    }
    rows: list[h.Row] = []
    stats = _Primaries(cluster)
    log("  cluster ...")
    with override_settings(CACHES=conf), TenantContext.use_tenant(TENANT):
        store, frag = caches["cluster"], caches["fragmented-cluster"]
        store.set("plain:get", value)
        frag.set_with_tags("r3", value, TAGS3)
        frag.set_with_tags("rg", value, [*TAGS3, GLOBAL])
        assert frag.get_with_tags("r3", TAGS3) == value
        assert frag.get_with_tags("rg", [*TAGS3, GLOBAL]) == value
        ops = [
            h.Op("cluster_get", "cluster: RedisClusterCache get", lambda: store.get("plain:get")),
            h.Op(
                "cluster_gwt_3",
                "cluster: get_with_tags, 3 tags (warm)",
                lambda: frag.get_with_tags("r3", TAGS3),
            ),
            h.Op(
                "cluster_gwt_global",
                "cluster: get_with_tags, 3 tags + a global tag (warm)",
                lambda: frag.get_with_tags("rg", [*TAGS3, GLOBAL]),
            ),
            h.Op(
                "cluster_set_with_tags",
                "cluster: set_with_tags, 3 tags",
                lambda: frag.set_with_tags("w3", value, TAGS3),
            ),
            h.Op(
                "cluster_bump_2",
                "cluster: invalidate_tags, 2 tags of a tenant",
                lambda: frag.invalidate_tags(TAGS3[:2]),
            ),
        ]
        got = h.interleave("cluster", ops, plan.reads // 3, baseline="cluster_get")
        counts = {op.key: h.count_redis(stats, op, windows=plan.count_windows) for op in ops}
        # A global bump deletes the version's copy in all 16,384 slots: fewer rounds.
        bump = [
            h.Op("cluster_get_g", "cluster: RedisClusterCache get", lambda: store.get("plain:get")),
            h.Op(
                "cluster_bump_global",
                "cluster: invalidate_tags, 1 global tag (every slot's copy)",
                lambda: frag.invalidate_tags([GLOBAL]),
            ),
        ]
        got_global = h.interleave(
            "cluster", bump, max(20, plan.invalidate // 10), baseline="cluster_get_g"
        )
        counts.update({op.key: h.count_redis(stats, op, 2, windows=3) for op in bump})
        got_global = [r for r in got_global if r.key != "cluster_get_g"]
        for r in [*got, *got_global]:
            r.note = "Redis Cluster, 3 primaries (tests/servers.py); commands summed over primaries"
        h.attach_counts([*got, *got_global], counts)
        rows += got + got_global
        frag.close()
        store.client.close()
    return rows
