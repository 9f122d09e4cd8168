"""Redis Cluster readiness: every key one read needs lives in one hash slot.

Uses the suite's throwaway cluster (tests/servers.py: three primaries and their
replicas on loopback ports, ``redis-server --cluster-enabled yes`` + ``redis-cli
--cluster create``) and runs the exact
``MGET`` a tagged read sends: Redis Cluster rejects a multi-key command whose
keys span slots (``CROSSSLOT``), so success proves the read stays one round
trip on a cluster. Our backends talk to Cluster through a single-slot MGET;
django-redis itself has no cluster client, so the backend is not run here.
"""

from __future__ import annotations

import pytest

from fragmented_keys_django.keys import entry_keys, lock_key, namespace_key
from fragmented_keys_django.tags import normalize_tags

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


@pytest.fixture
def cluster(redis_cluster):
    """A redis-py ``RedisCluster`` client of the session's cluster (tests/servers.py)."""
    client = redis_cluster.client()
    yield client
    client.close()


@pytest.mark.parametrize("tenant", [None, "acme", "ten{ant}:with*odd?chars\n", "x" * 10_000])
def test_one_read_is_one_single_slot_mget(cluster, tenant):
    tags = normalize_tags([(f"Tag{i}", str(i)) for i in range(10)])
    ek = entry_keys("app", tenant, "1.0", ":1:page", "group", tags)
    keys = [ek.entry, *ek.version_keys]
    # The store applies its own KEY_PREFIX/VERSION in front; the hash tag survives.
    stored = [f"prefix:1:{k}" for k in keys]
    cluster.mset({k: b"1" for k in stored[1:]})
    assert cluster.mget(stored) == [None, *([b"1"] * (len(stored) - 1))]
    slots = {cluster.keyslot(k) for k in [*stored, f"prefix:1:{lock_key(ek.entry)}"]}
    assert slots == {cluster.keyslot(f"prefix:1:{namespace_key('app', tenant)}")}


def test_tenants_spread_over_slots(cluster):
    slots = {cluster.keyslot(namespace_key("app", f"tenant-{i}")) for i in range(64)}
    assert len(slots) > 32  # tenants are not all piled on one node
