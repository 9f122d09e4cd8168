#!/usr/bin/env python
"""Benchmark ``fragmented-keys-django`` 0.2.1 the way ``run.py`` benchmarks ours.

Runs inside ``benchmarks/.venv-021`` (``compare_021.py`` creates it): 0.2.1
has the same import name as this repository's package. Only the operations
0.2.1 has are measured: warm ``get_with_tags`` (1, 3, 10 tags), decorated hits
(``tagged_cache``, ``cached_async``), miss + store, ``set_with_tags``,
``invalidate_tags`` (1 and 10 tags, 1k and 100k dependents), a registered vs
an unregistered model save, and the memory left after an invalidation.
Same interleaving, baselines and Redis accounting as ``run.py`` (shared
``_harness.py``). Redis DB ``--db`` (default 10) is FLUSHDB'ed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402

VALUE = os.urandom(1024)
TAGS1 = [("User", "1")]
TAGS3 = [("User", "1"), ("Org", "7"), ("Project", "3")]
TAGS10 = [(f"T{i}", str(i)) for i in range(10)]
INV10 = [("Inv", str(i)) for i in range(10)]


def configure(redis_url: str, db: int, tmpdir: str) -> None:
    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmarks",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "fragmented_keys_django", "benchapp"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(tmpdir, "bench.sqlite3"),
            }
        },
        CACHES={
            "redis": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"{redis_url}/{db}",
                "TIMEOUT": 3600,
            },
            "fragmented": {
                "BACKEND": "fragmented_keys_django.cache_backends.django_backend.FragmentedKeysCacheBackend",
                "CACHE_NAME": "redis",
                "PREFIX": "bench",
            },
        },
        LOGGING_CONFIG=None,
    )
    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0, skip_checks=True)


def fill_dependents(frag: Any, n: int, tags: list[tuple[str, str]]) -> None:
    """Write *n* entries depending on *tags*, as ``set_with_tags`` would, in pipelined batches.

    0.2.1 composes each key from the tag versions (one read per key); the
    versions are read once here and the keys composed against an in-memory
    copy of them, so 100k entries take seconds. A sample is read back through
    ``get_with_tags`` to check the keys are the real ones.
    """
    from fragmented_keys import MemoryHandler, StandardKey, StandardTag

    from fragmented_keys_django.cache_utils.epoch import with_epoch

    frag.get_with_tags("dep:0", tags)  # creates missing tag versions
    names = [StandardTag(t, i, handler=frag._handler).get_tag_name() for t, i in tags]
    mem = MemoryHandler()
    for name, version in frag._handler.get_multi(names).items():
        mem.set(name, version)
    store = frag._handler._cache
    batch: dict[str, Any] = {}
    for i in range(n):
        tag_objs = with_epoch([StandardTag(t, inst, handler=mem) for t, inst in tags], mem)
        batch[StandardKey(f"dep:{i}", tag_objs).get_key_str(hash=True)] = VALUE
        if len(batch) == 5000:
            store.set_many(batch, timeout=3600)
            batch = {}
    if batch:
        store.set_many(batch, timeout=3600)
    if not all(frag.get_with_tags(f"dep:{i}", tags) == VALUE for i in (0, n // 2, n - 1)):
        for i in range(n):
            frag.set_with_tags(f"dep:{i}", VALUE, tags, timeout=3600)


def bench(quick: bool, client: Any, log: Any) -> tuple[list[h.Row], dict[str, Any]]:
    from benchapp.models import Item, PlainItem
    from django.core.cache import caches

    from fragmented_keys_django import tagged_cache
    from fragmented_keys_django.cache_utils.decorators import cached_async

    reads, asyncs, writes, invalidate, saves = (
        (150, 100, 100, 50, 50) if quick else (3000, 2000, 2000, 1000, 1000)
    )
    sizes = [(1_000, "1k"), (10_000, "10k")] if quick else [(1_000, "1k"), (100_000, "100k")]
    count_windows = 5 if quick else 20  # of 10 calls each
    memory_entries = 1_000 if quick else 10_000

    frag, redis = caches["fragmented"], caches["redis"]  # the backend sets 0.2.1's global handler
    rows: list[h.Row] = []

    def measure(group: str, ops: list[h.Op], iterations: int, baseline: str) -> None:
        log(f"  {group} ...")
        got = h.interleave(group, ops, iterations, baseline=baseline)
        h.attach_counts(
            got, {op.key: h.count_redis(client, op, windows=count_windows) for op in ops}
        )
        rows.extend(got)

    # 0.2.1's decorators read and write through `cache_name` (the store) directly.
    @tagged_cache(timeout=3600, tags=["Item:{item_id}"], vary_on=["item_id"], cache_name="redis")
    def item_summary(item_id: int) -> bytes:
        return VALUE

    @cached_async(timeout=3600, tags=["Item:{item_id}"], vary_on=["item_id"], cache_name="redis")
    async def aitem_summary(item_id: int) -> bytes:
        return VALUE

    client.flushdb()
    redis.set("plain:get", VALUE)
    for name, tags in (("r1", TAGS1), ("r3", TAGS3), ("r10", TAGS10)):
        frag.set_with_tags(name, VALUE, tags)
        assert frag.get_with_tags(name, tags) == VALUE
    item_summary(1)
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
            h.Op("tagged_hit", "@tagged_cache hit (sync)", lambda: item_summary(1)),
        ],
        reads,
        "redis_get",
    )

    log("  async ...")
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(aitem_summary(1))

        async def a_redis_get() -> Any:
            return await redis.aget("plain:get")

        async def a_hit() -> Any:
            return await aitem_summary(1)

        ops = [
            h.Op("redis_aget", "django-redis aget (async)", a_redis_get),
            h.Op("tagged_hit_async", "@cached_async hit (async)", a_hit),
        ]
        got = loop.run_until_complete(h.ainterleave("async", ops, asyncs, baseline="redis_aget"))
        run = lambda f: loop.run_until_complete(f())  # noqa: E731
        h.attach_counts(
            got,
            {op.key: h.count_redis(client, op, windows=count_windows, runner=run) for op in ops},
        )
        rows.extend(got)
    finally:
        loop.close()

    fresh = itertools.count()
    measure(
        "writes",
        [
            h.Op("redis_set", "django-redis set", lambda: redis.set("plain:set", VALUE)),
            h.Op(
                "set_with_tags_1",
                "set_with_tags, 1 tag",
                lambda: frag.set_with_tags("w1", VALUE, TAGS1),
            ),
            h.Op(
                "miss_store",
                "miss + store (get_or_set_with_tags, fresh key)",
                lambda: frag.get_or_set_with_tags(
                    f"miss:{next(fresh)}", lambda: VALUE, TAGS1, timeout=3600
                ),
            ),
        ],
        writes,
        "redis_set",
    )

    for n, label in sizes:
        client.flushdb()
        log(f"  filling {n} dependents ...")
        fill_dependents(frag, n, INV10)
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
            invalidate,
            f"redis_set_{label}",
        )
        assert frag.get_with_tags("dep:0", INV10) is None

    client.flushdb()
    item, plain_item = Item.objects.create(name="bench"), PlainItem.objects.create(name="bench")

    def save_registered() -> None:
        item.counter += 1
        item.save()

    def save_plain() -> None:
        plain_item.counter += 1
        plain_item.save()

    measure(
        "model_save",
        [
            h.Op("model_save_plain", "model save, unregistered (SQLite)", save_plain),
            h.Op("model_save_registered", "model save, registered (SQLite)", save_registered),
        ],
        saves,
        "model_save_plain",
    )

    log("  memory ...")
    memory = h.memory_scenario(frag, client, memory_entries, VALUE)
    client.flushdb()
    return rows, memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "v021.json")
    parser.add_argument(
        "--db", type=int, default=10, help="Redis database to use (FLUSHDB'ed), default 10"
    )
    args = parser.parse_args(argv)

    import redis as redis_py

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    client = redis_py.Redis.from_url(f"{redis_url}/{args.db}")
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[0.2.1 {time.monotonic() - started:6.1f}s]{msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="fkd-bench-021-") as tmpdir:
        configure(redis_url, args.db, tmpdir)
        import fragmented_keys_django

        if fragmented_keys_django.__version__ != "0.2.1":
            raise SystemExit(
                f"expected fragmented-keys-django 0.2.1, imported {fragmented_keys_django.__file__}"
            )
        log(f" fragmented_keys_django {fragmented_keys_django.__version__}, Redis DB {args.db}")
        rows, memory = bench(args.quick, client, log)

    machine = h.machine_info(client, ["fragmented-keys-django", "fragmented-keys"])
    machine["redis_url"] = f"{redis_url}/{args.db}"
    payload = {
        "package": "fragmented-keys-django",
        "version": fragmented_keys_django.__version__,
        "quick": args.quick,
        "machine": machine,
        "rows": h.rows_json(rows),
        "memory": memory,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(f"\nfragmented-keys-django {payload['version']}:\n")
    print(h.format_table(rows))
    print()
    print("\n".join(h.memory_lines(memory)))
    h.dump_json(args.out, payload)
    log(f" wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
