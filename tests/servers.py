"""Throwaway servers the suite starts on loopback ports: memcached, a Redis Cluster, Sentinel.

Like the suite's own Redis (``tests/redis_dbs.py``), each is started **the first time a
test asks** for it (``memcached()``, ``redis_cluster()``, ``sentinel()``, or the session
fixtures of the same names in ``tests/conftest.py``), by this process only, and stopped by
pid when the process exits; the machine's own services (a ``memcached`` or
``redis-sentinel`` the OS packages started) are never used. A server that cannot start
raises :class:`ServerUnavailable` naming the command that installs it: tests fail, they
never skip.

* :class:`Memcached`: one ``memcached`` (``-u nobody`` when run as root).
* :class:`RedisClusterTopology`: 3 primaries + 1 replica each (``redis-server
  --cluster-enabled yes`` + ``redis-cli --cluster create``), with what resharding and
  failover tests need: :meth:`~RedisClusterTopology.migrate_slot` (``CLUSTER SETSLOT ...
  IMPORTING/MIGRATING``, ``MIGRATE``, ``SETSLOT ... NODE``, step by step),
  :meth:`~RedisClusterTopology.failover` (``CLUSTER FAILOVER`` on a replica),
  :meth:`~RedisClusterTopology.kill` (``SIGKILL`` a node, wait for its replica's
  promotion) and :meth:`~RedisClusterTopology.heal`.
* :class:`SentinelTopology`: one primary, one replica, three ``redis-server --sentinel``
  processes monitoring them as service :data:`SERVICE`, with
  :meth:`~SentinelTopology.pause`/``resume`` (``SIGSTOP``/``SIGCONT``),
  :meth:`~SentinelTopology.cut_replication`, :meth:`~SentinelTopology.kill_primary`,
  :meth:`~SentinelTopology.wait_for_failover` and :meth:`~SentinelTopology.heal`.

Topologies are shared by the session: a test that fails nodes over leaves a working
topology behind (roles may have moved); the fixtures call ``heal()`` before each test,
which restarts what a test killed and waits until every node agrees again.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .race_support import RedisServer

__all__ = [
    "SERVICE",
    "Memcached",
    "RedisClusterTopology",
    "SentinelTopology",
    "ServerUnavailable",
    "memcached",
    "redis_cluster",
    "sentinel",
    "started",
]

#: The Sentinel service name of :class:`SentinelTopology`'s primary.
SERVICE = "fkd-primary"

#: Seconds each server took to start, by name.
started: dict[str, float] = {}

#: A replica syncs at once (Redis waits 5 s by default for more replicas to share the sync).
_FAST_SYNC = ("--repl-diskless-sync-delay", "0")


class ServerUnavailable(RuntimeError):
    """A test server could not start; the message says how to install or fix it."""


def require(program: str, package: str) -> str:
    """Return the path of *program*, or raise :class:`ServerUnavailable` naming *package*."""
    path = shutil.which(program)
    if path is None:
        raise ServerUnavailable(
            f"{program} is not installed; install it with: apt-get install -y {package} "
            f"(scripts/services.sh ensure does it when run as root)"
        )
    return path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """*n* free loopback ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 50000)
        if port not in ports and _port_free(port) and _port_free(port + 10000):
            ports.append(port)
    return ports


def _wait(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll *predicate* until it returns a truthy value; raise naming *what* after *timeout* s."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the server is not there yet: poll again
            last = exc
        if time.monotonic() > deadline:
            raise ServerUnavailable(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last!r})" if last else "")
            )
        time.sleep(interval)


def _own(stop) -> None:
    """Run *stop* at exit in this process only (a forked child exiting must not)."""
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and stop())


# -- memcached ----------------------------------------------------------------------------


class Memcached:
    """A ``memcached`` on a free loopback port, in the foreground of a child process."""

    def __init__(self, memory_mb: int = 64, *extra: str) -> None:
        self.port = 0
        self.memory_mb = memory_mb
        self.extra = list(extra)  # more memcached options, e.g. "-o", "no_lru_maintainer"
        self.proc: subprocess.Popen | None = None

    @property
    def location(self) -> str:
        """``host:port``, the ``LOCATION`` of Django's ``PyMemcacheCache``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> Memcached:
        program = require("memcached", "memcached")
        t0 = time.monotonic()
        for _attempt in range(5):  # another process may take the free port first
            from .race_support import free_port

            self.port = free_port()
            args = [program, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
            args += ["-m", str(self.memory_mb), "-t", "2", *self.extra]
            if os.geteuid() == 0:
                args += ["-u", "nobody"]  # memcached refuses to run as root
            self.proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            try:
                _wait(self._answers, 10, f"memcached on {self.location}", 0.01)
                break
            except ServerUnavailable:
                if self.proc.poll() is None:
                    raise
                err = self.proc.stderr.read() if self.proc.stderr else ""
                if "Address already in use" not in err:
                    raise ServerUnavailable(
                        f"memcached exited with {self.proc.returncode}: {err.strip()}"
                    ) from None
        started["memcached"] = time.monotonic() - t0
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerUnavailable(f"memcached exited with {self.proc.returncode}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"version\r\n")
            return s.recv(64).startswith(b"VERSION")

    def stats(self) -> dict[str, str]:
        """The server's ``stats`` (e.g. ``curr_items``, ``cmd_get``), values as text."""
        out: dict[str, str] = {}
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"stats\r\n")
            data = b""
            while not data.endswith(b"END\r\n"):
                data += s.recv(65536)
        for line in data.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
        return out

    def stored_keys(self) -> list[bytes]:
        """Every key memcached holds now (``lru_crawler metadump all``), as raw bytes."""
        from urllib.parse import unquote_to_bytes

        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"lru_crawler metadump all\r\n")
            data = b""
            while not (data.endswith(b"END\r\n") or data.startswith(b"BUSY")):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        if not data.endswith(b"END\r\n"):
            raise ServerUnavailable(f"memcached refused lru_crawler metadump: {data[:200]!r}")
        return [
            unquote_to_bytes(line.split(b" ", 1)[0][len(b"key=") :])
            for line in data.splitlines()
            if line.startswith(b"key=")
        ]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


# -- Redis Cluster ------------------------------------------------------------------------


class RedisClusterTopology:
    """A Redis Cluster of *primaries* primaries, *replicas* replicas each, on loopback ports.

    ``node_timeout_ms`` is ``cluster-node-timeout``: how long a node may be unreachable
    before its replica is promoted by :meth:`kill` (small, so failover tests are quick).
    """

    def __init__(self, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000):
        self.n_primaries = primaries
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.root = Path(tempfile.mkdtemp(prefix="fkd-cluster-"))
        self.nodes: list[RedisServer] = []
        self.dead: set[int] = set()  # ports of nodes killed and not restarted yet

    # -- lifecycle --

    def _node(self, port: int) -> RedisServer:
        workdir = self.root / str(port)
        workdir.mkdir(exist_ok=True)
        return RedisServer(
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica whose primary died is promoted whatever its replication lag.
            "--cluster-replica-validity-factor", "0",
            *_FAST_SYNC,
            port=port,
            workdir=str(workdir),
        )  # fmt: skip

    def start(self) -> RedisClusterTopology:
        require("redis-server", "redis-server")
        cli = require("redis-cli", "redis-tools")
        t0 = time.monotonic()
        ports = cluster_ports(self.n_primaries * (1 + self.n_replicas))
        self.nodes = [self._node(port) for port in ports]
        for node in self.nodes:
            node.start()
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        create += ["--cluster-replicas", str(self.n_replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ServerUnavailable(
                f"{' '.join(create)} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr}"
            )
        self.wait_consistent()
        started["redis cluster"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what a test reads --

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node (what a cluster client is given to start from)."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` of one live node (a cluster client's seed)."""
        return f"redis://127.0.0.1:{self.live()[0].port}"

    def live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.port not in self.dead]

    def client(self, **kwargs):
        """A redis-py ``RedisCluster`` over this cluster (decode off, short timeouts)."""
        from redis.cluster import ClusterNode, RedisCluster

        kwargs.setdefault("socket_timeout", 2)
        kwargs.setdefault("socket_connect_timeout", 2)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self.startup_nodes if p not in self.dead],
            **kwargs,
        )

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def node_id(self, node: RedisServer) -> str:
        return node.client().execute_command("CLUSTER", "MYID").decode()

    def slot_owners(self, via: RedisServer | None = None) -> dict[int, int]:
        """``{slot: primary port}`` as *via* (default: a live node) sees the cluster."""
        via = via or self.live()[0]
        owners: dict[int, int] = {}
        for start, end, primary, *_replicas in via.client().execute_command("CLUSTER", "SLOTS"):
            for slot in range(start, end + 1):
                owners[slot] = int(primary[1])
        return owners

    def owner(self, slot: int) -> RedisServer:
        """The primary that serves *slot* now."""
        return self.node(self.slot_owners()[slot])

    def primaries(self) -> list[RedisServer]:
        return [self.node(port) for port in sorted(set(self.slot_owners().values()))]

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """A live replica of *primary*."""
        for node in self.live():
            info = node.client().info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
                return node
        raise ServerUnavailable(f"no live replica of the primary on port {primary.port}")

    @staticmethod
    def keyslot(key: str | bytes) -> int:
        from redis.crc import key_slot

        return key_slot(key.encode() if isinstance(key, str) else key)

    def command_calls(self) -> dict[int, dict[str, int]]:
        """``{port: {command: calls}}`` from ``INFO commandstats`` of every live node."""
        calls: dict[int, dict[str, int]] = {}
        for node in self.live():
            stats = node.client().info("commandstats")
            calls[node.port] = {
                name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
            }
        return calls

    # -- health --

    def _consistent(self) -> bool:
        views = []
        for node in self.live():
            client = node.client(timeout=1)
            if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                return False
            info = client.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
            views.append(self.slot_owners(node))
        if len(views[0]) != 16384 or any(view != views[0] for view in views):
            return False
        # Every primary has its replicas back (failover tests need one per primary).
        primaries = set(views[0].values())
        replicas = len(self.live()) - len(primaries)
        return replicas >= len(primaries) * self.n_replicas

    def wait_consistent(self, timeout: float = 30) -> None:
        """Wait until every live node has state ok, the same slot map, and replicas are in sync."""
        _wait(self._consistent, timeout, "the Redis Cluster to agree on its slots", 0.1)

    def heal(self, timeout: float = 30) -> None:
        """Resume paused nodes, restart killed ones (they rejoin as replicas), wait until agreed."""
        for node in self.nodes:
            if node.paused:
                node.resume()
        for port in sorted(self.dead):
            self.node(port).start()
            self.dead.discard(port)
        self.wait_consistent(timeout)

    # -- resharding --

    def migrate_slot(self, slot: int, target: RedisServer) -> SlotMigration:
        """Begin moving *slot* to *target* (a primary); return the migration to step through."""
        return SlotMigration(self, slot, target).begin()

    def reshard_slot(self, slot: int, target: RedisServer) -> None:
        """Move *slot* and all its keys to *target* in one go."""
        self.migrate_slot(slot, target).move_keys().finish()

    # -- failover --

    def failover(self, primary: RedisServer, timeout: float = 30) -> RedisServer:
        """Promote a replica of *primary* with ``CLUSTER FAILOVER`` (no write lost); return it."""
        replica = self.replica_of(primary)
        replica.client().execute_command("CLUSTER", "FAILOVER")
        _wait(
            lambda: replica.client().info("replication")["role"] == "master",
            timeout,
            f"the replica on {replica.port} to take over from {primary.port}",
        )
        self.wait_consistent(timeout)
        return replica

    def kill(self, primary: RedisServer, timeout: float = 30) -> RedisServer:
        """``SIGKILL`` *primary*; wait until its replica is promoted; return the new primary."""
        replica = self.replica_of(primary)
        assert primary.proc is not None
        primary.proc.kill()
        primary.proc.wait(5)
        primary.proc = None
        self.dead.add(primary.port)
        _wait(
            lambda: (
                replica.client().info("replication")["role"] == "master"
                and b"cluster_state:ok" in replica.client().execute_command("CLUSTER", "INFO")
            ),
            timeout,
            f"the replica on {replica.port} to be promoted after {primary.port} was killed",
        )
        return replica


class SlotMigration:
    """One slot moving between primaries, step by step (Redis Cluster's resharding protocol).

    After :meth:`begin` the source answers ``ASK`` for keys it no longer holds; after
    :meth:`finish` every node answers ``MOVED`` to the target.
    """

    def __init__(self, cluster: RedisClusterTopology, slot: int, target: RedisServer) -> None:
        self.cluster = cluster
        self.slot = slot
        self.source = cluster.owner(slot)
        self.target = target
        if self.source.port == target.port:
            raise ValueError(f"slot {slot} is already served by {target.port}")

    def begin(self) -> SlotMigration:
        source_id = self.cluster.node_id(self.source)
        target_id = self.cluster.node_id(self.target)
        self.target.client().execute_command(
            "CLUSTER", "SETSLOT", self.slot, "IMPORTING", source_id
        )
        self.source.client().execute_command(
            "CLUSTER", "SETSLOT", self.slot, "MIGRATING", target_id
        )
        return self

    def keys_left(self) -> list[bytes]:
        """Keys of the slot still on the source."""
        return self.source.client().execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 100_000)

    def move_keys(self, count: int | None = None) -> SlotMigration:
        """``MIGRATE`` *count* keys (all when ``None``) of the slot to the target."""
        keys = self.keys_left()
        if count is not None:
            keys = keys[:count]
        if keys:
            self.source.client().execute_command(
                "MIGRATE", "127.0.0.1", self.target.port, "", 0, 5000, "REPLACE", "KEYS", *keys
            )
        return self

    def finish(self) -> None:
        """Assign the slot to the target on every primary (then the replicas learn it)."""
        target_id = self.cluster.node_id(self.target)
        for node in [self.target, self.source, *self.cluster.primaries()]:
            node.client().execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", target_id)
        _wait(
            lambda: all(
                self.cluster.slot_owners(node).get(self.slot) == self.target.port
                for node in self.cluster.live()
            ),
            30,
            f"every node to see slot {self.slot} on {self.target.port}",
        )


# -- Sentinel -----------------------------------------------------------------------------


class SentinelServer(RedisServer):
    """``redis-server CONFIG --sentinel`` (the config file must come first, and be writable)."""

    def __init__(self, conf: Path, port: int) -> None:
        super().__init__(port=port, workdir=str(conf.parent))
        self.conf = conf

    def args(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server",
            str(self.conf),
            "--sentinel",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "no",
        ]  # fmt: skip


class SentinelTopology:
    """One primary, one replica and three sentinels (quorum 2) monitoring them as :data:`SERVICE`.

    ``down_after_ms`` is each sentinel's ``down-after-milliseconds``: how long the primary
    must be unreachable before a failover starts.
    """

    def __init__(self, down_after_ms: int = 1000) -> None:
        self.down_after_ms = down_after_ms
        self.root = Path(tempfile.mkdtemp(prefix="fkd-sentinel-"))
        self.servers: list[RedisServer] = []  # the data nodes, by original role
        self.sentinels: list[SentinelServer] = []
        self.dead: set[int] = set()

    def start(self) -> SentinelTopology:
        require("redis-server", "redis-server")
        t0 = time.monotonic()
        # Each in its own directory: a replica writes the primary's RDB to its working dir.
        dirs = [self.root / "primary", self.root / "replica"]
        for d in dirs:
            d.mkdir()
        # Each process is listed before it starts, so stop() ends it if a later step fails.
        primary = RedisServer(*_FAST_SYNC, workdir=str(dirs[0]))
        self.servers = [primary]
        primary.start()
        replica = RedisServer(
            *_FAST_SYNC, "--replicaof", "127.0.0.1", str(primary.port), workdir=str(dirs[1])
        )
        self.servers.append(replica)
        replica.start()
        from .race_support import free_port

        for i in range(3):
            port = free_port()
            workdir = self.root / f"sentinel{i}"
            workdir.mkdir()
            conf = workdir / "sentinel.conf"
            conf.write_text(
                f"dir {workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                # A sentinel waits twice this after a failover before starting another.
                f"sentinel failover-timeout {SERVICE} 2500\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.sentinels.append(SentinelServer(conf, port))
            self.sentinels[-1].start()
        self.wait_healthy()
        started["redis sentinel"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what a test reads --

    @property
    def sentinel_addrs(self) -> list[tuple[str, int]]:
        """``(host, port)`` of the three sentinels (redis-py's ``Sentinel`` and django-redis)."""
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def master_addr(self) -> tuple[str, int] | None:
        """The primary the sentinels agree on (a majority), or ``None`` while they do not."""
        seen: dict[tuple[str, int], int] = {}
        for s in self.sentinels:
            if s.paused or s.proc is None:
                continue
            try:
                host, port = s.client(timeout=1).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
                )
            except Exception:  # a sentinel mid-restart: the others decide
                continue
            addr = (host.decode(), int(port))
            seen[addr] = seen.get(addr, 0) + 1
        agreed = [addr for addr, n in seen.items() if n >= 2]
        return agreed[0] if agreed else None

    @property
    def primary(self) -> RedisServer:
        addr = self.master_addr()
        if addr is None:
            raise ServerUnavailable("the sentinels do not agree on a primary")
        return self.server(addr[1])

    @property
    def replica(self) -> RedisServer:
        primary = self.primary
        return next(s for s in self.servers if s is not primary and s.port not in self.dead)

    # -- faults --

    def pause(self, server: RedisServer) -> None:
        """``SIGSTOP`` *server* (a data node or a sentinel)."""
        server.pause()

    def resume(self, server: RedisServer) -> None:
        """``SIGCONT`` *server*."""
        server.resume()

    def cut_replication(self) -> None:
        """Close the primary's links to its replicas (``CLIENT KILL TYPE replica``).

        ``SIGSTOP`` alone loses nothing: what the primary sends a paused replica waits in
        the replica's socket buffer and is applied on ``SIGCONT``. Cutting the link while the
        replica is paused is what makes the writes that follow exist on the primary only.
        """
        self.primary.client().execute_command("CLIENT", "KILL", "TYPE", "replica")

    def kill_primary(self) -> RedisServer:
        """``SIGKILL`` the current primary (its unreplicated writes are lost); return it."""
        primary = self.primary
        assert primary.proc is not None
        primary.proc.kill()
        primary.proc.wait(5)
        primary.proc = None
        self.dead.add(primary.port)
        return primary

    def wait_for_failover(self, old: RedisServer, timeout: float = 30) -> RedisServer:
        """Wait until the sentinels name another primary than *old*, and it takes writes."""

        def promoted() -> RedisServer | None:
            addr = self.master_addr()
            if addr is None or addr[1] == old.port:
                return None
            server = self.server(addr[1])
            return (
                server if server.client(timeout=1).info("replication")["role"] == "master" else None
            )

        return _wait(promoted, timeout, f"the sentinels to fail over from {old.port}", 0.1)

    # -- health --

    def _healthy(self) -> bool:
        addr = self.master_addr()
        if addr is None:
            return False
        primary = self.server(addr[1])
        info = primary.client(timeout=1).info("replication")
        if info["role"] != "master" or int(info.get("connected_slaves", 0)) < 1:
            return False
        replica = next(s for s in self.servers if s is not primary)
        rinfo = replica.client(timeout=1).info("replication")
        if (
            rinfo.get("master_link_status") != "up"
            or int(rinfo.get("master_port", 0)) != primary.port
        ):
            return False
        # Every sentinel knows the replica and the other sentinels (failover needs both).
        for s in self.sentinels:
            master = s.client(timeout=1).sentinel_master(SERVICE)
            if master["num-slaves"] < 1 or master["num-other-sentinels"] < 2:
                return False
            if master["is_sdown"] or master["is_odown"]:
                return False
        return True

    def wait_healthy(self, timeout: float = 30) -> None:
        _wait(self._healthy, timeout, "the Sentinel topology (primary, replica, 3 sentinels)", 0.1)

    def heal(self, timeout: float = 30) -> None:
        """Resume paused processes; restart a killed node as a replica of the current primary."""
        for server in [*self.servers, *self.sentinels]:
            if server.paused:
                server.resume()
        if self.dead:
            primary = self.primary
            for port in sorted(self.dead):
                old = self.server(port)
                old.extra = [*_FAST_SYNC, "--replicaof", "127.0.0.1", str(primary.port)]
                old.start()
                self.dead.discard(port)
        self.wait_healthy(timeout)


# -- the session's servers ----------------------------------------------------------------

_servers: dict[str, object] = {}


def _get(name: str, make):
    server = _servers.get(name)
    if server is None:
        server = make()
        try:
            server.start()
        except BaseException:
            server.stop()  # what did start is ended; the test fails with the error
            raise
        _servers[name] = server
        _own(server.stop)
    return server


def memcached() -> Memcached:
    """The session's memcached (started on first call)."""
    return _get("memcached", Memcached)


def redis_cluster() -> RedisClusterTopology:
    """The session's Redis Cluster, 3 primaries + 3 replicas (started on first call)."""
    return _get("cluster", RedisClusterTopology)


def sentinel() -> SentinelTopology:
    """The session's Sentinel topology (started on first call)."""
    return _get("sentinel", SentinelTopology)


def stop_all() -> None:
    """Stop every server this process started (tests of this module; atexit does it too)."""
    for name in list(_servers):
        _servers.pop(name).stop()
