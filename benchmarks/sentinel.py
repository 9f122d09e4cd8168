"""What Sentinel's failover epoch costs, next to plain django-redis on the same primary.

Starts the test suite's Sentinel topology (``tests/servers.py``: one primary, one replica,
three sentinels on free loopback ports), then measures, each as the median of several
rounds (microseconds per operation, and the ratio to a plain django-redis ``get`` of the
same primary in the same run):

* a warm tagged read and a bump through the backend on a plain django-redis store of the
  primary (no epoch) and through django-redis's ``SentinelClient`` (the failover epoch:
  one more key in the read's ``MGET``);
* the first call on a new connection (the epoch's check: ``INFO replication`` + ``GET``,
  one round trip more per connection), and the same with the check skipped (what
  finding the primary through the sentinels costs on its own);
* what ``WAIT 1`` would add to a bump (``SET`` then ``WAIT 1 100`` on one connection),
  the alternative the failover epoch avoids on the bump path;
* the round trips of each, counted by the primary (``INFO commandstats``).

Run: ``make bench-sentinel`` (or ``.venv/bin/python benchmarks/sentinel.py [--quick]``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TAGS = [("User", "1"), ("Org", "7")]


def _timed(fn: Any, n: int, rounds: int) -> float:
    """Median over *rounds* of the mean microseconds of *n* calls of *fn*."""
    fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def _commands(client: Any) -> dict[str, int]:
    return {k: v["calls"] for k, v in client.info("commandstats").items()}


def _delta(client: Any, fn: Any) -> dict[str, int]:
    """Commands the primary ran for one call of *fn* (the stats' own ``INFO`` excluded)."""
    before = _commands(client)
    fn()
    after = _commands(client)
    out = {k.removeprefix("cmdstat_"): after[k] - before.get(k, 0) for k in after}
    out["info"] = out.get("info", 0) - 1
    return {k: v for k, v in out.items() if v > 0}


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    quick = args.parse_args(argv).quick
    n, rounds = (50, 3) if quick else (2000, 7)

    from tests import servers

    topology = servers.SentinelTopology().start()
    try:
        return _run(topology, n, rounds)
    finally:
        topology.stop()


def _run(topology: Any, n: int, rounds: int) -> int:
    import django
    from django.conf import settings

    from tests import servers

    primary = topology.primary
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    wrapper = {"BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend", "PREFIX": "b"}
    settings.configure(
        INSTALLED_APPS=["fragmented_keys_django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "plain": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{primary.port}/0",
                "KEY_PREFIX": prefix,
            },
            "sentinel": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://{servers.SERVICE}/0",
                "KEY_PREFIX": prefix,
                "OPTIONS": {
                    "CLIENT_CLASS": "django_redis.client.SentinelClient",
                    "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                    "SENTINELS": topology.sentinel_addrs,
                    "SENTINEL_KWARGS": {"socket_timeout": 1},
                },
            },
            "frag_plain": {**wrapper, "CACHE_NAME": "plain"},
            "frag_sentinel": {**wrapper, "CACHE_NAME": "sentinel"},
        },
    )
    django.setup()
    from django.core.cache import caches

    from fragmented_keys_django import TenantContext, routing

    plain = caches["plain"]
    plain.set("k", "v")
    rows: list[tuple[str, float, dict[str, int]]] = []
    client = primary.client()

    def row(label: str, fn: Any, count: Any = None) -> None:
        rows.append((label, _timed(fn, n, rounds), _delta(client, count or fn)))

    row("django-redis get (baseline)", lambda: plain.get("k"))
    with TenantContext.use_tenant("acme"):
        for name in ("frag_plain", "frag_sentinel"):
            frag = caches[name]
            frag.set_with_tags("page", "v", TAGS)
            epoch = " (epoch)" if name == "frag_sentinel" else ""
            store = "Sentinel" if epoch else "plain"
            row(f"tagged read, {store} store{epoch}", lambda f=frag: f.get_with_tags("page", TAGS))
            row(f"bump of 2 tags, {store} store", lambda f=frag: f.invalidate_tags(TAGS))

            adapter = routing.route(name).shared_adapter()

            def first_call(f: Any = frag, a: Any = adapter) -> None:
                a._client().connection_pool.disconnect()
                f.get_with_tags("page", TAGS)

            if not epoch:
                row(f"read on a new connection, {store} store", first_call)
                continue
            # With and without the check, alternated call by call (a shared machine's
            # load moves between two rows measured one after the other).
            check = adapter._epoch
            on: list[float] = []
            off: list[float] = []
            for i in range(2 * n * rounds // 10 or 20):
                adapter._epoch = check if i % 2 else None
                t0 = time.perf_counter()
                first_call()
                (on if i % 2 else off).append((time.perf_counter() - t0) * 1e6)
            adapter._epoch = check
            rows.append(
                (
                    "read on a new connection, Sentinel store (epoch check)",
                    statistics.median(on),
                    _delta(client, first_call),
                )
            )
            adapter._epoch = None
            rows.append(
                (
                    "read on a new connection, Sentinel store, check skipped",
                    statistics.median(off),
                    _delta(client, first_call),
                )
            )
            adapter._epoch = check

    conn_client = plain.client.get_client(write=True)

    def set_and_wait() -> None:
        pipe = conn_client.pipeline(transaction=False)
        pipe.set(f"{prefix}:w", 1)
        pipe.execute_command("WAIT", 1, 100)
        pipe.execute()

    row("SET + WAIT 1 (a bump waiting for the replica)", set_and_wait)
    row("SET alone (the same, without WAIT)", lambda: conn_client.set(f"{prefix}:w", 1))

    base = rows[0][1]
    print("| Operation | µs | ratio to django-redis get | commands on the primary |")
    print("| --- | ---: | ---: | --- |")
    for label, us, commands in rows:
        cmds = ", ".join(f"{k.upper()} {v}" for k, v in sorted(commands.items()))
        print(f"| {label} | {us:.0f} | {us / base:.2f} | {cmds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
