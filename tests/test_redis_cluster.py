"""Redis Cluster readiness: every key one read needs lives in one hash slot.

Starts a throwaway three-node cluster on loopback ports (``redis-server
--cluster-enabled yes`` + ``redis-cli --cluster create``) and runs the exact
``MGET`` a tagged read sends: Redis Cluster rejects a multi-key command whose
keys span slots (``CROSSSLOT``), so success proves the read stays one round
trip on a cluster. Our backends talk to Cluster through a single-slot MGET;
django-redis itself has no cluster client, so the backend is not run here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from fragmented_keys_django.keys import entry_keys, lock_key, namespace_key
from fragmented_keys_django.tags import normalize_tags

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """Ports whose cluster bus port (port + 10000) is free too."""
    import random

    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 50000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    server = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    assert server and cli, (
        "redis-server and redis-cli must be installed (apt-get install redis-server)"
    )
    ports = _free_ports(3)
    procs = []
    for port in ports:
        d = tmp_path_factory.mktemp(f"node{port}")
        procs.append(
            subprocess.Popen(
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(d / "nodes.conf"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(d),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        deadline = time.monotonic() + 10
        for port in ports:
            while (
                subprocess.run([cli, "-p", str(port), "ping"], capture_output=True).stdout.strip()
                != b"PONG"
            ):
                assert time.monotonic() < deadline, f"cluster node on {port} did not start"
                time.sleep(0.05)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        import redis.cluster

        client = redis.cluster.RedisCluster(host="127.0.0.1", port=ports[0])
        deadline = time.monotonic() + 15
        while True:
            try:
                client.set("probe", 1)
                break
            except Exception:
                assert time.monotonic() < deadline, "cluster did not become ready"
                time.sleep(0.2)
                client = redis.cluster.RedisCluster(host="127.0.0.1", port=ports[0])
        yield client
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


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
