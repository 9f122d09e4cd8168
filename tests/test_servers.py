"""The suite's throwaway topologies work, through plain redis-py (``tests/servers.py``).

These are the harness the cluster and Sentinel adapters will be tested with: a Redis
Cluster of 3 primaries + 3 replicas (a read on one hash tag is one ``MGET`` on one
node; clients follow a resharded slot and a failover) and a Sentinel topology
(``Sentinel.master_for`` follows a failover; a write the replica never received is
really lost when the primary dies, which is what the failover tests rely on).
"""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import ClusterError, ConnectionError, TryAgainError

from . import servers

pytestmark = pytest.mark.redis


def _reset_stats(cluster: servers.RedisClusterTopology) -> None:
    for node in cluster.live():
        node.client().config_resetstat()


@pytest.mark.cluster
def test_cluster_has_three_primaries_each_with_a_replica(redis_cluster):
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    assert len(redis_cluster.live()) == 6
    for primary in primaries:
        assert redis_cluster.replica_of(primary).port != primary.port


@pytest.mark.cluster
def test_cluster_mget_on_one_hash_tag_is_one_command_on_one_node(redis_cluster):
    client = redis_cluster.client()
    keys = [f"fk:{{smoke-tenant}}:v:{i}" for i in range(20)]
    client.mset({k: i for i, k in enumerate(keys)})  # one slot: MSET is allowed
    owner = redis_cluster.owner(redis_cluster.keyslot(keys[0]))
    _reset_stats(redis_cluster)
    assert client.mget(keys) == [str(i).encode() for i in range(20)]
    calls = redis_cluster.command_calls()
    mgets = {port: c.get("mget", 0) for port, c in calls.items() if c.get("mget")}
    assert mgets == {owner.port: 1}
    # Keys of two hash tags are refused by the server, not split by the client.
    with pytest.raises(redis.exceptions.RedisClusterException):
        client.mget([keys[0], "fk:{another-tenant}:v:0"])
    client.close()


@pytest.mark.cluster
def test_cluster_client_follows_a_slot_moved_under_it(redis_cluster):
    """During a migration single-key commands follow ``ASK``; a multi-key command whose keys
    are split between the nodes gets ``TRYAGAIN`` until the migration ends (what the
    adapter will see mid-resharding); after it, everything follows ``MOVED``."""
    client = redis_cluster.client()
    keys = [f"{{smoke-reshard}}:{i}" for i in range(10)]
    client.mset({k: i for i, k in enumerate(keys)})
    slot = redis_cluster.keyslot(keys[0])
    source = redis_cluster.owner(slot)
    target = next(p for p in redis_cluster.primaries() if p.port != source.port)
    migration = redis_cluster.migrate_slot(slot, target)
    try:
        migration.move_keys(5)
        assert len(migration.keys_left()) == 5  # half moved
        assert [client.get(k) for k in keys] == [str(i).encode() for i in range(10)]  # ASK
        with pytest.raises((TryAgainError, ClusterError)):
            client.mget(keys)
        migration.move_keys()
    finally:
        migration.finish()
    assert redis_cluster.owner(slot).port == target.port
    assert client.mget(keys) == [str(i).encode() for i in range(10)]  # MOVED, then served
    client.set(keys[0], "after")
    assert target.client().get(keys[0]) == b"after"
    client.close()


@pytest.mark.cluster
def test_cluster_client_follows_a_failover_and_a_killed_primary(redis_cluster):
    client = redis_cluster.client()
    key = "{smoke-failover}:k"
    client.set(key, "v1")
    primary = redis_cluster.owner(redis_cluster.keyslot(key))
    primary.client().execute_command("WAIT", 1, 2000)
    promoted = redis_cluster.failover(primary)  # coordinated: nothing lost
    assert redis_cluster.owner(redis_cluster.keyslot(key)).port == promoted.port
    assert client.get(key) == b"v1"
    client.set(key, "v2")
    promoted.client().execute_command("WAIT", 1, 2000)
    survivor = redis_cluster.kill(promoted)  # SIGKILL: its replica takes over on its own
    assert survivor.port == primary.port  # the old primary had become its replica
    for _ in range(3):  # the first call may hit the dead node's closed connection
        try:
            assert client.get(key) == b"v2"
            break
        except (ConnectionError, ClusterError):
            continue
    else:
        pytest.fail("the cluster client did not reach the promoted replica")
    client.close()
    redis_cluster.heal()
    assert redis_cluster.node(promoted.port).client().info("replication")["role"] == "slave"


def _sentinel_client(topology: servers.SentinelTopology):
    from redis.sentinel import Sentinel

    sentinel = Sentinel(topology.sentinel_addrs, socket_timeout=1)
    return sentinel.master_for(servers.SERVICE, socket_timeout=1)


def _retry(call, attempts: int = 20):
    """Call *call* until it stops failing with a connection error (the old primary's socket)."""
    import time

    for _ in range(attempts):
        try:
            return call()
        except (ConnectionError, redis.exceptions.ReadOnlyError, redis.exceptions.TimeoutError):
            time.sleep(0.1)
    return call()


@pytest.mark.sentinel
def test_sentinel_master_for_follows_a_failover(sentinel):
    master = _sentinel_client(sentinel)
    master.set("smoke:k", "v1")
    old = sentinel.primary
    assert old.client().execute_command("WAIT", 1, 2000) == 1
    sentinel.kill_primary()
    new = sentinel.wait_for_failover(old)
    assert new.port != old.port
    assert _retry(lambda: master.get("smoke:k")) == b"v1"  # it was replicated
    master.set("smoke:k", "v2")
    assert new.client().get("smoke:k") == b"v2"
    sentinel.heal()
    assert sentinel.server(old.port).client().info("replication")["role"] == "slave"


@pytest.mark.sentinel
def test_sentinel_failover_loses_a_write_the_paused_replica_never_received(sentinel):
    """The fault the Sentinel failover tests inject: replica paused, link cut, write, primary
    killed. Without ``cut_replication`` the write survives (it waits in the paused
    replica's socket buffer), so the harness cuts the link."""
    master = _sentinel_client(sentinel)
    master.set("smoke:lost", "before")
    old, replica = sentinel.primary, sentinel.replica
    assert old.client().execute_command("WAIT", 1, 2000) == 1
    sentinel.pause(replica)
    try:
        sentinel.cut_replication()
        master.set("smoke:lost", "acknowledged by the primary only")
        sentinel.kill_primary()
    finally:
        sentinel.resume(replica)
    new = sentinel.wait_for_failover(old)
    assert new.port == replica.port
    assert _retry(lambda: master.get("smoke:lost")) == b"before"
