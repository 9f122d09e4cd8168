#!/usr/bin/env python
"""Benchmark ``fragmented_keys_django`` against plain django-redis on a real Redis.

Run from the repository root (``make bench``)::

    .venv/bin/python benchmarks/run.py            # full run, < 3 minutes
    .venv/bin/python benchmarks/run.py --quick    # smoke run, < 30 s
    .venv/bin/python benchmarks/run.py --compare  # also fragmented-keys-django 0.2.1, side by side

Every group of operations is timed interleaved with its baseline (plain
django-redis ``get``/``set``/``get_many``, an unregistered model save, a bare
``ContextVar`` pair) in the same run; the table gives median and p90 per call,
the ratio of medians to that baseline, Redis commands per call
(``INFO commandstats`` deltas) and round trips per call (socket writes).

The cluster rows (a tagged read and a bump on a Redis Cluster, against a plain get on
the same cluster) run on a throwaway 3+3 cluster started from ``tests/servers.py``
when ``redis-server`` and ``redis-cli`` are installed (``benchmarks/_cluster.py``).

Redis: ``$REDIS_URL`` (default ``redis://127.0.0.1:6379``), database ``--db``
(default 11), which is FLUSHDB'ed: give it a database nothing else uses.
Results go to ``benchmarks/results/latest.{json,md}`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import cProfile
import io
import itertools
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _cluster  # noqa: E402
import _harness as h  # noqa: E402
import _replay  # noqa: E402

RESULTS = HERE / "results"
VALUE = os.urandom(1024)  # 1 KB values everywhere
TAGS1 = [("User", "1")]
TAGS3 = [("User", "1"), ("Org", "7"), ("Project", "3")]
TAGS10 = [(f"T{i}", str(i)) for i in range(10)]
TAGS30 = [(f"T{i}", str(i)) for i in range(30)]
INV10 = [("Inv", str(i)) for i in range(10)]
TENANT = "bench-tenant"


class Plan:
    """Iteration counts: the full run, or ``--quick`` for CI smoke runs."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.reads = 150 if quick else 3000
        self.asyncs = 100 if quick else 2000
        self.writes = 100 if quick else 2000
        self.many = 50 if quick else 1000
        self.invalidate = 50 if quick else 1000
        self.sizes = (
            [(1_000, "1k"), (10_000, "10k")] if quick else [(1_000, "1k"), (100_000, "100k")]
        )
        self.pattern_rounds = {1_000: 5 if quick else 20, 10_000: 2, 100_000: 3}
        self.saves = 50 if quick else 1000
        self.tenant_rounds = 30 if quick else 300
        self.memory_entries = 1_000 if quick else 10_000
        self.count_windows = 5 if quick else 20  # of 10 calls each
        self.replay_calls = 300 if quick else 2000  # per round, CPU with I/O replayed
        self.replay_rounds = 5 if quick else 15
        self.gathered = 50 if quick else 500  # requests of 10 reads gathered


#: PostgreSQL for the save benchmarks (a database the run creates and drops itself).
PG = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": f"fkd_bench_{os.getpid()}",
    "USER": os.environ.get("PGUSER", "postgres"),
    "HOST": os.environ.get("PGHOST", "127.0.0.1"),
    "PORT": os.environ.get("PGPORT", "5432"),
}


def _pg_admin(sql: str) -> bool:
    """Run *sql* on the server's ``postgres`` database; False if there is no PostgreSQL."""
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(
            dbname="postgres", user=PG["USER"], host=PG["HOST"], port=PG["PORT"], autocommit=True
        ) as conn:
            conn.execute(sql)
    except psycopg.Error:
        return False
    return True


def configure(redis_url: str, db: int, tmpdir: str) -> bool:
    """Configure Django; return True if PostgreSQL is there too (database ``pg``)."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    databases = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(tmpdir, "bench.sqlite3"),
        },
        # The same database through a connection without the safety net's
        # wrapper: statements timed side by side with and without it.
        "nonet": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(tmpdir, "bench.sqlite3"),
        },
    }
    has_pg = _pg_admin(f'CREATE DATABASE "{PG["NAME"]}"')
    if has_pg:
        databases["pg"] = PG
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmarks",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "fragmented_keys_django", "benchapp"],
        DATABASES=databases,
        CACHES={
            "redis": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"{redis_url}/{db}",
                "TIMEOUT": 3600,
            },
            "fragmented": {
                "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
                "CACHE_NAME": "redis",
                "PREFIX": "bench",
                "TIMEOUT": 3600,
            },
        },
        LOGGING_CONFIG=None,
    )
    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0, skip_checks=True)
    if has_pg:
        call_command("migrate", run_syncdb=True, database="pg", verbosity=0, skip_checks=True)
    return has_pg


def drop_pg() -> None:
    """Drop the PostgreSQL database :func:`configure` created (if it did)."""
    from django.db import connections

    connections.close_all()
    _pg_admin(f'DROP DATABASE IF EXISTS "{PG["NAME"]}"')


def fill_dependents(frag: Any, store: Any, n: int, tags: list[tuple[str, str]]) -> None:
    """Write *n* entries depending on *tags*, in pipelined batches.

    Each entry is exactly what ``set_with_tags`` writes (checked by reading a
    sample back through ``get_with_tags``); batching only saves the set-up time
    of 100k entries. Falls back to ``set_with_tags`` if the check fails.
    """
    from fragmented_keys_django import protocol
    from fragmented_keys_django.drivers import run
    from fragmented_keys_django.tags import normalize_tags

    specs = normalize_tags(tags)
    try:
        ek0 = frag._keys("dep:0", specs, "", None, False)[1]
        adapter = frag._adapter(frag._tenant())
        vt = frag.options.version_timeout
        tokens = run(protocol.write_tokens(adapter, ek0.version_keys, vt), adapter)
        batch: dict[str, Any] = {}
        for i in range(n):
            batch[frag._keys(f"dep:{i}", specs, "", None, False)[1].entry] = (tokens, VALUE)
            if len(batch) == 5000:
                adapter.set_many(batch, 3600)
                batch = {}
        if batch:
            adapter.set_many(batch, 3600)
        ok = all(frag.get_with_tags(f"dep:{i}", tags) == VALUE for i in (0, n // 2, n - 1))
    except (AttributeError, TypeError):
        ok = False
    if not ok:
        for i in range(n):
            frag.set_with_tags(f"dep:{i}", VALUE, tags, timeout=3600)


def bench(plan: Plan, client: Any, log: Any) -> tuple[list[h.Row], dict[str, Any]]:
    from benchapp.models import Item, PlainItem
    from django.core.cache import caches

    from fragmented_keys_django import TenantContext, tagged_cache

    frag, redis = caches["fragmented"], caches["redis"]
    store = frag.store
    rows: list[h.Row] = []

    def measure(
        group: str, ops: list[h.Op], iterations: int, baseline: str, warmup: int = 3
    ) -> None:
        log(f"  {group} ...")
        got = h.interleave(group, ops, iterations, baseline=baseline, warmup=warmup)
        counts = {
            op.key: h.count_redis(client, op, windows=plan.count_windows)
            if op.before is None
            else h.count_redis(client, op, 1, windows=1)
            for op in ops
        }
        h.attach_counts(got, counts)
        rows.extend(got)

    @tagged_cache(timeout=3600, tags=["Item:{item_id}"], cache_name="fragmented")
    def item_summary(item_id: int) -> bytes:
        return VALUE

    @tagged_cache(timeout=3600, tags=["Item:{item_id}"], cache_name="fragmented")
    async def aitem_summary(item_id: int) -> bytes:
        return VALUE

    @tagged_cache(timeout=3600, tags=["Page:{page_id}"], cache_name="fragmented")
    def page_of(page_id: int) -> list[bytes]:
        # A nested entry: it records the two inner entries' versions (docs/concepts.md).
        return [item_summary(page_id), item_summary(page_id + 1)]

    client.flushdb()
    with TenantContext.use_tenant(TENANT):
        # -- reads ---------------------------------------------------------
        redis.set("plain:get", VALUE)
        for name, tags in (("r1", TAGS1), ("r3", TAGS3), ("r10", TAGS10)):
            frag.set_with_tags(name, VALUE, tags)
            assert frag.get_with_tags(name, tags) == VALUE
        frag.set("plain", VALUE)
        assert frag.get("plain") == VALUE
        item_summary(1)
        page_of(1)
        measure(
            "reads",
            [
                h.Op("redis_get", "django-redis get", lambda: redis.get("plain:get")),
                h.Op(
                    "get_with_tags_1",
                    "get_with_tags, 1 tag (warm)",
                    lambda: frag.get_with_tags("r1", TAGS1),
                ),
                h.Op(
                    "get_with_tags_3",
                    "get_with_tags, 3 tags (warm)",
                    lambda: frag.get_with_tags("r3", TAGS3),
                ),
                h.Op(
                    "get_with_tags_10",
                    "get_with_tags, 10 tags (warm)",
                    lambda: frag.get_with_tags("r10", TAGS10),
                ),
                h.Op(
                    "tenant_get", "get via fragmented alias, in a tenant", lambda: frag.get("plain")
                ),
                h.Op("tagged_hit", "@tagged_cache hit (sync)", lambda: item_summary(1)),
                h.Op(
                    "tagged_hit_nested",
                    "@tagged_cache hit (sync), nested entry (2 inner entries)",
                    lambda: page_of(1),
                ),
            ],
            plan.reads,
            "redis_get",
        )

        # -- CPU of the sync hot path, socket I/O replayed ------------------
        log("  cpu_replayed ...")
        frag.set_with_tags("r30", VALUE, TAGS30)
        pool = redis.client.get_client(write=True).connection_pool
        replayed = _replay.compare(
            {
                "cpu_redis_get": lambda: redis.get("plain:get"),
                "cpu_tenant_get": lambda: frag.get("plain"),
                "cpu_gwt_1": lambda: frag.get_with_tags("r1", TAGS1),
                "cpu_gwt_10": lambda: frag.get_with_tags("r10", TAGS10),
                "cpu_gwt_30": lambda: frag.get_with_tags("r30", TAGS30),
                "cpu_tagged_hit": lambda: item_summary(1),
                "cpu_tagged_nested": lambda: page_of(1),
            },
            pool,
            calls=plan.replay_calls,
            rounds=plan.replay_rounds,
        )
        labels = {
            "cpu_redis_get": "django-redis get, CPU, I/O replayed",
            "cpu_tenant_get": "get via fragmented alias, in a tenant, CPU, I/O replayed",
            "cpu_gwt_1": "get_with_tags, 1 tag, CPU, I/O replayed",
            "cpu_gwt_10": "get_with_tags, 10 tags, CPU, I/O replayed",
            "cpu_gwt_30": "get_with_tags, 30 tags, CPU, I/O replayed",
            "cpu_tagged_hit": "@tagged_cache hit (sync), CPU, I/O replayed",
            "cpu_tagged_nested": "@tagged_cache hit (sync), nested entry, CPU, I/O replayed",
        }
        base = h.percentile(replayed["cpu_redis_get"], 50)
        for key, found in replayed.items():
            median = h.percentile(found, 50)
            rows.append(
                h.Row(
                    key,
                    labels[key],
                    "cpu_replayed",
                    median,
                    h.percentile(found, 90),
                    len(found),
                    baseline=labels["cpu_redis_get"],
                    ratio=median / base,
                    cpu_median_us=median,
                    cpu_ratio=median / base,
                    note="CPU µs per call with the socket I/O replayed (benchmarks/_replay.py)",
                )
            )

        # -- async: one event loop runs every call -------------------------
        log("  async ...")
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(aitem_summary(1))

            async def a_redis_get() -> Any:
                return await redis.aget("plain:get")

            async def a_gwt() -> Any:
                return await frag.aget_with_tags("r1", TAGS1)

            async def a_hit() -> Any:
                return await aitem_summary(1)

            ops = [
                h.Op("redis_aget", "django-redis aget (async)", a_redis_get),
                h.Op("aget_with_tags_1", "aget_with_tags, 1 tag (async)", a_gwt),
                h.Op("tagged_hit_async", "@tagged_cache hit (async)", a_hit),
            ]

            # One request making 10 reads at once (asyncio.gather): django-redis's
            # aget runs each in the request's one worker thread, one after the other.
            async def a_redis_gather() -> Any:
                return await asyncio.gather(*(redis.aget("plain:get") for _ in range(10)))

            async def a_gwt_gather() -> Any:
                return await asyncio.gather(*(frag.aget_with_tags("r1", TAGS1) for _ in range(10)))

            gathered = [
                h.Op("redis_aget_x10", "django-redis aget x10, gathered (async)", a_redis_gather),
                h.Op("aget_with_tags_x10", "aget_with_tags x10, gathered (async)", a_gwt_gather),
            ]
            rows.extend(
                loop.run_until_complete(
                    h.ainterleave(
                        "async_gathered", gathered, plan.gathered, baseline="redis_aget_x10"
                    )
                )
            )
            got = loop.run_until_complete(
                h.ainterleave("async", ops, plan.asyncs, baseline="redis_aget")
            )
            counts = {
                op.key: h.count_redis(
                    client,
                    op,
                    windows=plan.count_windows,
                    runner=lambda f: loop.run_until_complete(f()),
                )
                for op in ops
            }
            h.attach_counts(got, counts)
            rows.extend(got)
        finally:
            loop.close()

        # -- writes ----------------------------------------------------------
        fresh = itertools.count()
        measure(
            "writes",
            [
                h.Op("redis_set", "django-redis set", lambda: redis.set("plain:set", VALUE)),
                h.Op(
                    "tenant_set",
                    "set via fragmented alias, in a tenant",
                    lambda: frag.set("plain", VALUE),
                ),
                h.Op(
                    "set_with_tags_1",
                    "set_with_tags, 1 tag",
                    lambda: frag.set_with_tags("w1", VALUE, TAGS1),
                ),
                h.Op(
                    "miss_store",
                    "miss + store (get_or_set_with_tags, fresh key)",
                    lambda: frag.get_or_set_with_tags(f"miss:{next(fresh)}", lambda: VALUE, TAGS1),
                ),
            ],
            plan.writes,
            "redis_set",
        )

        # -- get_many ----------------------------------------------------------
        keys50 = [f"gm:{i}" for i in range(50)]
        redis.set_many({k: VALUE for k in keys50})
        per_key = {k: [("Row", str(i))] for i, k in enumerate(keys50)}
        for k in keys50:
            frag.set_with_tags(k, VALUE, TAGS1)
            frag.set_with_tags("own:" + k, VALUE, per_key[k])
        own = {"own:" + k: t for k, t in per_key.items()}
        assert len(frag.get_many_with_tags(keys50, TAGS1)) == 50
        assert len(frag.get_many_with_tags(own)) == 50
        measure(
            "get_many",
            [
                h.Op(
                    "redis_get_many_50",
                    "django-redis get_many, 50 keys",
                    lambda: redis.get_many(keys50),
                ),
                h.Op(
                    "get_many_with_tags_50",
                    "get_many_with_tags, 50 keys, 1 shared tag",
                    lambda: frag.get_many_with_tags(keys50, TAGS1),
                ),
                h.Op(
                    "get_many_with_tags_50_own",
                    "get_many_with_tags, 50 keys, 1 own tag each",
                    lambda: frag.get_many_with_tags(own),
                ),
            ],
            plan.many,
            "redis_get_many_50",
        )

        # -- invalidation: constant in the number of dependents ----------------
        for n, label in plan.sizes:
            client.flushdb()
            log(f"  filling {n} dependents ...")
            fill_dependents(frag, store, n, INV10)
            measure(
                f"invalidate_{label}",
                [
                    h.Op(
                        f"redis_set_{label}",
                        f"django-redis set ({label} group)",
                        lambda: redis.set("plain:set", VALUE),
                    ),
                    h.Op(
                        f"invalidate_1tag_{label}",
                        f"invalidate_tags, 1 tag, {label} dependents",
                        lambda: frag.invalidate_tags(INV10[:1]),
                    ),
                    h.Op(
                        f"invalidate_10tags_{label}",
                        f"invalidate_tags, 10 tags, {label} dependents",
                        lambda: frag.invalidate_tags(INV10),
                    ),
                ],
                plan.invalidate,
                f"redis_set_{label}",
            )
            assert frag.get_with_tags("dep:0", INV10) is None

            client.flushdb()
            plain = {f"dp:{i}": VALUE for i in range(n)}
            chunks = [dict(itertools.islice(plain.items(), s, s + 5000)) for s in range(0, n, 5000)]

            def refill(chunks: list[dict[str, bytes]] = chunks) -> None:
                for chunk in chunks:
                    redis.set_many(chunk, timeout=3600)

            def delete_pattern(n: int = n) -> None:
                deleted = redis.delete_pattern("dp:*")
                assert deleted == n, deleted

            measure(
                f"delete_pattern_{label}",
                [
                    h.Op(
                        f"redis_set_x50_{label}",
                        f"django-redis set ({label} keys group)",
                        lambda: redis.set("plain:set", VALUE),
                        inner=50,
                    ),
                    h.Op(
                        f"delete_pattern_{label}",
                        f"django-redis delete_pattern, {label} keys",
                        delete_pattern,
                        before=refill,
                    ),
                ],
                plan.pattern_rounds[n],
                f"redis_set_x50_{label}",
                warmup=1,
            )

        # -- model save --------------------------------------------------------
        client.flushdb()
        item, plain_item = Item.objects.create(name="bench"), PlainItem.objects.create(name="bench")

        def save_registered() -> None:
            item.counter += 1
            item.save()

        def save_plain() -> None:
            plain_item.counter += 1
            plain_item.save()

        ping = redis.client.get_client(write=True)

        def save_plain_and_a_round_trip() -> None:
            save_plain()
            ping.execute_command("PING")

        # Registered: the safety net and the outbox on (the defaults); a save in
        # autocommit writes no outbox row (see the atomic() rows below).
        measure(
            "model_save",
            [
                h.Op("model_save_plain", "model save, unregistered (SQLite)", save_plain),
                h.Op("model_save_registered", "model save, registered (SQLite)", save_registered),
                h.Op(
                    "model_save_floor",
                    "model save, unregistered, + one Redis round trip (PING): the floor (SQLite)",
                    save_plain_and_a_round_trip,
                ),
            ],
            plan.saves,
            "model_save_plain",
        )
        from django.db import connections as _connections

        if "pg" in _connections:
            pg_item = Item.objects.using("pg").create(name="bench")
            pg_plain = PlainItem.objects.using("pg").create(name="bench")

            def pg_save(obj: Any) -> Any:
                def save() -> None:
                    obj.counter += 1
                    obj.save(using="pg")

                return save

            def pg_floor() -> None:
                pg_save(pg_plain)()
                ping.execute_command("PING")

            measure(
                "model_save_pg",
                [
                    h.Op(
                        "model_save_plain_pg",
                        "model save, unregistered (PostgreSQL)",
                        pg_save(pg_plain),
                    ),
                    h.Op(
                        "model_save_registered_pg",
                        "model save, registered (PostgreSQL)",
                        pg_save(pg_item),
                    ),
                    h.Op(
                        "model_save_floor_pg",
                        "model save, unregistered, + one Redis round trip (PING): the floor (PostgreSQL)",
                        pg_floor,
                    ),
                ],
                plan.saves,
                "model_save_plain_pg",
            )

        # -- the outbox: what durability costs a save inside a transaction -----
        from django.db import connections, transaction

        from fragmented_keys_django import outbox

        for db in [d for d in ("default", "pg") if d in connections]:
            vendor = "SQLite" if connections[db].vendor == "sqlite" else "PostgreSQL"
            saved = Item.objects.using(db).create(name="bench")
            plain_saved = PlainItem.objects.using(db).create(name="bench")

            def save_in_atomic(obj: Any, db: str = db) -> None:
                with transaction.atomic(using=db):
                    obj.counter += 1
                    obj.save(using=db)

            assert outbox.available(db)
            table = outbox._tables[db]

            def without_outbox(db: str = db, obj: Any = saved, table: Any = table) -> None:
                # The same save with the outbox table "absent" (no marker).
                outbox._tables[db] = None
                try:
                    save_in_atomic(obj)
                finally:
                    outbox._tables[db] = table

            how = (
                "+1 INSERT, +1 DELETE in the same commit"
                if outbox.deletes_inline(db)
                else "+1 INSERT"
            )
            measure(
                f"model_save_atomic_{db}",
                [
                    h.Op(
                        f"atomic_save_no_outbox_{db}",
                        f"model save in atomic(), registered, outbox off ({vendor})",
                        without_outbox,
                    ),
                    h.Op(
                        f"atomic_save_outbox_{db}",
                        f"model save in atomic(), registered, outbox on: {how} ({vendor})",
                        lambda obj=saved: save_in_atomic(obj),
                    ),
                    h.Op(
                        f"atomic_save_plain_{db}",
                        f"model save in atomic(), unregistered ({vendor})",
                        lambda obj=plain_saved: save_in_atomic(obj),
                    ),
                ],
                plan.saves,
                f"atomic_save_no_outbox_{db}",
            )

        sql_statements(measure, plan)
        net_reads(measure, plan, frag)

    # -- the protocol's driver: what running an operation as steps costs ---------
    from fragmented_keys_django.drivers import run as drive
    from fragmented_keys_django.policy import request as one_request

    class NoStore:
        """An adapter whose one method returns at once: only the driver is measured."""

        def read(self, keys: Any, entries: int) -> Any:
            return keys

    nostore = NoStore()
    keys = ("a", "b")
    measure(
        "driver",
        [
            h.Op(
                "driver_direct",
                "adapter.read called directly",
                lambda: nostore.read(keys, 1),
                inner=1000,
            ),
            h.Op(
                "driver_steps",
                "the same read as protocol steps, run by the sync driver",
                lambda: drive(one_request(nostore, "read", keys, 1), nostore),
                inner=1000,
            ),
        ],
        plan.tenant_rounds,
        "driver_direct",
    )

    # -- tenant context --------------------------------------------------------
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("bench", default=None)
    value = (TENANT, TENANT)

    def var_pair() -> None:
        var.reset(var.set(value))

    def use_tenant() -> None:
        with TenantContext.use_tenant(TENANT):
            pass

    measure(
        "tenant",
        [
            h.Op("contextvar_pair", "ContextVar.set + reset", var_pair, inner=1000),
            h.Op("use_tenant", "TenantContext.use_tenant enter + exit", use_tenant, inner=1000),
        ],
        plan.tenant_rounds,
        "contextvar_pair",
    )

    # -- memory ------------------------------------------------------------------
    log("  memory ...")
    with TenantContext.use_tenant(TENANT):
        memory = h.memory_scenario(frag, client, plan.memory_entries, VALUE)
    client.flushdb()
    return rows, memory


def sql_statements(measure: Any, plan: Plan) -> None:
    """Time SQL statements with and without the safety net's wrapper, and the wrapper alone."""
    from benchapp.models import Item, PlainItem
    from django.db import connections, transaction

    from fragmented_keys_django import net

    netted, bare = connections["default"], connections["nonet"]
    bare.ensure_connection()
    if net.execute_wrapper in bare.execute_wrappers:
        bare.execute_wrappers.remove(net.execute_wrapper)
    netted.ensure_connection()
    assert net.execute_wrapper in netted.execute_wrappers, "the safety net is not installed"
    item, plain = Item._meta.db_table, PlainItem._meta.db_table

    def run(conn: Any, sql: str) -> Any:
        def statement() -> None:
            with conn.cursor() as cursor:
                cursor.execute(sql, [1])

        return statement

    def in_transaction(conn: Any, sql: str, n: int) -> Any:
        def statements() -> None:
            with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
                for _ in range(n):
                    cursor.execute(sql, [1])

        return statements

    select = f"SELECT name FROM {item} WHERE id = %s"
    for key, label, sql in (
        ("select", "SELECT", select),
        ("update_plain", "UPDATE of an unregistered table", f"UPDATE {plain} SET counter = %s"),
        ("update_item", "UPDATE of a registered table", f"UPDATE {item} SET counter = %s"),
    ):
        measure(
            f"sql_{key}",
            [
                h.Op(f"sql_{key}_bare", f"{label} (SQLite), no safety net", run(bare, sql)),
                h.Op(f"sql_{key}_net", f"{label} (SQLite), safety net", run(netted, sql)),
            ],
            plan.saves,
            f"sql_{key}_bare",
        )
    update_item = f"UPDATE {item} SET counter = %s"
    measure(
        "sql_update_item_tx",
        [
            h.Op(
                "sql_update_item_tx_bare",
                "10 UPDATEs of a registered table in one transaction, no safety net",
                in_transaction(bare, update_item, 10),
            ),
            h.Op(
                "sql_update_item_tx_net",
                "10 UPDATEs of a registered table in one transaction, safety net",
                in_transaction(netted, update_item, 10),
            ),
        ],
        plan.saves // 2,
        "sql_update_item_tx_bare",
    )

    # The wrapper alone, around a driver call that does nothing: its CPU per statement.
    def noop(sql: str, params: Any, many: bool, context: dict) -> None:
        return None

    context = {"connection": netted, "cursor": None}
    wrapper = net.execute_wrapper
    update_plain = f"UPDATE {plain} SET counter = %s"
    measure(
        "net_wrapper",
        [
            h.Op(
                "driver_noop",
                "a no-op driver call",
                lambda: noop(select, None, False, context),
                inner=1000,
            ),
            h.Op(
                "net_wrapper_select",
                "safety net wrapper around it: SELECT",
                lambda: wrapper(noop, select, None, False, context),
                inner=1000,
            ),
            h.Op(
                "net_wrapper_update_plain",
                "safety net wrapper around it: UPDATE of an unregistered table",
                lambda: wrapper(noop, update_plain, None, False, context),
                inner=1000,
            ),
        ],
        plan.tenant_rounds,
        "driver_noop",
    )


def net_reads(measure: Any, plan: Plan, frag: Any) -> None:
    """Time a warm tagged read whose tag is netted (a registered model's name) against one that is not."""
    plain, netted = [("Plain", "1")], [("Item", "1")]
    frag.set_with_tags("net:plain", VALUE, plain)
    frag.set_with_tags("net:netted", VALUE, netted)
    assert frag.get_with_tags("net:netted", netted) == VALUE
    measure(
        "net_reads",
        [
            h.Op(
                "get_with_tags_not_netted",
                "get_with_tags, 1 tag not netted (warm)",
                lambda: frag.get_with_tags("net:plain", plain),
            ),
            h.Op(
                "get_with_tags_netted",
                "get_with_tags, 1 netted tag (warm)",
                lambda: frag.get_with_tags("net:netted", netted),
            ),
        ],
        plan.reads,
        "get_with_tags_not_netted",
    )


def _where(filename: str, func: str) -> str:
    if "fragmented_keys_django" in filename:
        return "fragmented_keys_django"
    if "django_redis" in filename:
        return "django-redis"
    if "/redis/" in filename:
        return "redis-py"
    if "/django/" in filename:
        return "django"
    if filename == "~" and ("socket" in func or "recv" in func or "sendall" in func):
        return "socket send/recv (incl. waiting for Redis)"
    if filename == "~":
        return "builtins (pickle, hashing, ...)"
    return "other"


def _profile(fns: list[Any], n: int, batches: int = 50) -> list[pstats.Stats]:
    """Profile each of *fns* *n* times, interleaved in *batches* so that load hits all alike."""
    for fn in fns:
        for _ in range(200):
            fn()
    profs = [cProfile.Profile() for _ in fns]
    per = max(1, n // batches)
    for _ in range(batches):
        for fn, prof in zip(fns, profs, strict=True):
            prof.enable()
            for _ in range(per):
                fn()
            prof.disable()
    return [pstats.Stats(p, stream=io.StringIO()) for p in profs]


def _by_package(stats: pstats.Stats, n: int) -> dict[str, float]:
    by: dict[str, float] = {}
    for (filename, _, func), (_, _, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = _where(filename, func)
        by[where] = by.get(where, 0.0) + tt / n * 1e6
    return by


def profile_warm_read(n: int = 5000, top: int = 15) -> str:
    """Profile *n* warm ``get_with_tags`` (1 tag) against *n* django-redis ``get``.

    Returns own time per package for both (µs per call, under the profiler,
    which inflates Python-heavy code) and the top functions of
    ``get_with_tags`` by tottime.
    """
    from django.core.cache import caches

    from fragmented_keys_django import TenantContext

    frag, redis = caches["fragmented"], caches["redis"]
    redis.set("prof:plain", VALUE)
    with TenantContext.use_tenant(TENANT):
        frag.set_with_tags("prof", VALUE, TAGS1)
        n = max(50, n // 50 * 50)
        ours, plain = _profile(
            [lambda: frag.get_with_tags("prof", TAGS1), lambda: redis.get("prof:plain")], n
        )
    a, b = _by_package(ours, n), _by_package(plain, n)
    body = [
        (
            where,
            f"{a.get(where, 0):.1f}",
            f"{b.get(where, 0):.1f}",
            f"{a.get(where, 0) - b.get(where, 0):+.1f}",
        )
        for where in sorted(set(a) | set(b), key=lambda w: -a.get(w, 0))
    ]
    body.append(
        (
            "total",
            f"{sum(a.values()):.1f}",
            f"{sum(b.values()):.1f}",
            f"{sum(a.values()) - sum(b.values()):+.1f}",
        )
    )
    lines = h.grid(
        ("own time per call (µs, profiled)", "get_with_tags 1 tag", "django-redis get", "extra"),
        body,
        markdown=False,
        right=(1, 2, 3),
    )
    out = io.StringIO()
    out.write("\n".join(lines) + "\n\nget_with_tags, top functions by tottime:\n")
    ours.stream = out  # type: ignore[attr-defined]
    ours.sort_stats("tottime").print_stats(top)
    out.write("get_with_tags, functions of fragmented_keys_django by tottime:\n")
    ours.print_stats("fragmented_keys_django", 10)
    return out.getvalue()


# -- comparison with 0.2.1 -------------------------------------------------------

COMPARE_KEYS = [
    "redis_get",
    "get_with_tags_1",
    "get_with_tags_3",
    "get_with_tags_10",
    "tagged_hit",
    "redis_aget",
    "tagged_hit_async",
    "redis_set",
    "set_with_tags_1",
    "miss_store",
]


def comparison_lines(ours: dict[str, Any], old: dict[str, Any], markdown: bool) -> list[str]:
    mine = {r["key"]: r for r in ours["rows"]}
    theirs = {r["key"]: r for r in old["rows"]}
    keys = [k for k in COMPARE_KEYS if k in mine and k in theirs]
    keys += [k for k in theirs if k not in keys and k in mine]

    def num(r: dict[str, Any] | None, f: str, fmt: str) -> str:
        return "" if r is None or r.get(f) is None else format(r[f], fmt)

    def label(k: str) -> str:
        a, b = mine[k]["operation"], theirs[k]["operation"]
        return a if a == b else f"{a} [0.2.1: {b}]"

    body = [
        (
            label(k),
            num(mine[k], "median_us", ".1f"),
            num(theirs[k], "median_us", ".1f"),
            num(mine[k], "ratio", ".2f"),
            num(theirs[k], "ratio", ".2f"),
            num(mine[k], "cmds_per_op", ".2f"),
            num(theirs[k], "cmds_per_op", ".2f"),
            num(mine[k], "round_trips_per_op", ".2f"),
            num(theirs[k], "round_trips_per_op", ".2f"),
        )
        for k in keys
    ]
    header = (
        "operation",
        "ours µs",
        "0.2.1 µs",
        "ours ratio",
        "0.2.1 ratio",
        "ours cmds",
        "0.2.1 cmds",
        "ours RT",
        "0.2.1 RT",
    )
    lines = h.grid(header, body, markdown, right=range(1, len(header)))
    mo, mt = ours.get("memory"), old.get("memory")
    if mo and mt:
        lines += [
            "",
            f"Memory after bumping the tag of {mo['entries']} entries and setting them again: "
            f"ours +{mo['keys_added_by_refill']} keys / +{mo['db_bytes_added_by_refill']} B; "
            f"0.2.1 (its own run, {mt['entries']} entries) +{mt['keys_added_by_refill']} keys / "
            f"+{mt['db_bytes_added_by_refill']} B left behind until their TTL.",
        ]
    return lines


def run_compare(quick: bool, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "compare_021.py"), "--out", str(out)]
    if quick:
        cmd.append("--quick")
    subprocess.run(cmd, check=True)
    import json

    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="few iterations (CI smoke run, < 30 s)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/")
    parser.add_argument(
        "--compare", action="store_true", help="also run fragmented-keys-django 0.2.1 (own venv)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of warm get_with_tags"
    )
    parser.add_argument(
        "--db", type=int, default=11, help="Redis database to use (FLUSHDB'ed), default 11"
    )
    args = parser.parse_args(argv)

    import redis as redis_py

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    client = redis_py.Redis.from_url(f"{redis_url}/{args.db}")
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s]{msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="fkd-bench-") as tmpdir:
        has_pg = configure(redis_url, args.db, tmpdir)
        try:
            import fragmented_keys_django

            plan = Plan(args.quick)
            log(f" fragmented_keys_django {fragmented_keys_django.__version__}, Redis DB {args.db}")
            rows, memory = bench(plan, client, log)
            rows += _cluster.bench_cluster(plan, log)
            profile = profile_warm_read(1000 if args.quick else 5000) if args.profile else ""
            client.flushdb()
            from fragmented_keys_django import outbox

            outbox.forget_deferred()  # before the databases go, not at exit
        finally:
            if has_pg:
                drop_pg()

    machine = h.machine_info(client, ["fragmented-keys-django"])
    machine["redis_url"] = f"{redis_url}/{args.db}"
    payload = {
        "package": "fragmented_keys_django (this repository)",
        "version": fragmented_keys_django.__version__,
        "quick": args.quick,
        "machine": machine,
        "rows": h.rows_json(rows),
        "memory": memory,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print()
    print(h.format_table(rows))
    print()
    print("\n".join(h.memory_lines(memory)))
    if profile:
        print("\ncProfile, warm get_with_tags (1 tag), top functions by tottime:\n" + profile)

    md = [
        "# Benchmark results",
        "",
        f"fragmented_keys_django {payload['version']}{' (--quick)' if args.quick else ''}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {payload['elapsed_s']} s.",
        "",
        *h.machine_lines(machine),
        "",
        "Ratios are medians divided by the median of the baseline named in `vs`, "
        "measured interleaved in the same run. Round trips are socket writes by redis-py "
        "(a command or a whole pipeline each).",
        "",
        *h.table_lines(rows, markdown=True),
        "",
        "## Memory after an invalidation",
        "",
        "```",
        *h.memory_lines(memory),
        "```",
    ]
    if args.compare:
        out = RESULTS / "v021.json"
        if args.no_write:
            out = Path(tempfile.mkdtemp(prefix="fkd-bench-")) / "v021.json"
        log(" running fragmented-keys-django 0.2.1 in benchmarks/.venv-021 ...")
        old = run_compare(args.quick, out)
        payload["comparison"] = {
            "v021": str(out.relative_to(HERE.parent))
            if out.is_relative_to(HERE.parent)
            else str(out)
        }
        print(
            "\nSide by side with fragmented-keys-django 0.2.1 (ratios to each run's own baseline):\n"
        )
        print("\n".join(comparison_lines(payload, old, markdown=False)))
        md += [
            "",
            "## Side by side with fragmented-keys-django 0.2.1",
            "",
            "Each package measured in its own run and virtualenv; ratios are to that run's baseline.",
            "",
            *comparison_lines(payload, old, markdown=True),
        ]
    if not args.no_write:
        h.dump_json(RESULTS / "latest.json", payload)
        h.write_atomic(RESULTS / "latest.md", "\n".join(md) + "\n")
        log(f" wrote {RESULTS / 'latest.json'} and latest.md")
    log(" done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
