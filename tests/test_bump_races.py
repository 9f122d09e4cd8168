"""No lost, repeated or backward bumps; evicted versions never revive an entry (issue 3, item 2).

Many threads (and, on the shared stores, two extra processes) bump the same
tags at once, on locmem (threads only: it is per process), the database
cache (a dedicated SQLite file shared by the processes) and Redis. Checked:

* every token a bump returns is distinct from every other;
* every bump is visible: right after it returns, each version differs from
  the one read just before it started (a read-then-write increment loses these);
* the versions an observer sees never return to an earlier value;
* an entry cached before the bumps is never served after them, and a value
  computed by a reader is never served once a bump that started after its
  computation has returned.

Then eviction: deleting version keys, ``FLUSHDB`` and ``maxmemory`` with
``allkeys-lru`` on a throwaway Redis never make a superseded envelope valid.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.core.cache import caches
from django.db import connections
from django.test import override_settings

from fragmented_keys_django import BumpFailed, TenantContext
from fragmented_keys_django.invalidation import pending_retries
from fragmented_keys_django.versions import bump
from tests.conftest import store_settings
from tests.race_support import (
    CACHE_DB_ALIAS,
    RedisServer,
    cache_database,
    create_cache_table,
    reset_retrier,
    settle_retries,
    spawn_child,
    wrapper_alias,
)

pytestmark = pytest.mark.slow

TAGS = [("Ward", "7"), ("Ward", "")]
TENANT = "acme"
THREADS = 8
BUMPS = 200
MISS = object()


@pytest.fixture(autouse=True)
def _no_leftover_retries():
    reset_retrier()
    yield
    reset_retrier()


@pytest.fixture
def caches_conf(request, tmp_path, django_db_blocker):
    """Yield (kind, CACHES) with the store shared by threads (and processes where it can be).

    The database cache lives in its own SQLite file (alias ``fkd_cachedb``), not in
    a test database: database access is unblocked without a ``django_db`` test case,
    whose per-alias guard would refuse the extra alias in threads.
    """
    kind = request.param
    wrapper = wrapper_alias(OPTIONS={"STAMPEDE_WAIT": 0.05})
    if kind == "locmem":
        conf = {"default": store_settings("locmem")["default"], "fragmented": wrapper}
        with override_settings(CACHES=conf):
            yield kind, conf
            settle_retries()
    elif kind == "memcached":  # a fresh KEY_PREFIX: nothing to clean up
        conf = {"default": store_settings("memcached")["default"], "fragmented": wrapper}
        with override_settings(CACHES=conf):
            yield kind, conf
            settle_retries()
    elif kind == "redis":
        conf = {"default": store_settings("redis")["default"], "fragmented": wrapper}
        with override_settings(CACHES=conf):
            yield kind, conf
            settle_retries()
            caches["default"].delete_pattern("*")  # only this test's KEY_PREFIX
    else:
        db_path = str(tmp_path / "cache.sqlite3")
        create_cache_table(db_path, "fkd_race_cache")
        store = {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "fkd_race_cache",
        }
        conf = {"default": store, "fragmented": wrapper}
        with (
            django_db_blocker.unblock(),
            cache_database(db_path),
            override_settings(CACHES=conf, DATABASE_ROUTERS=["tests.race_support.CacheDBRouter"]),
        ):
            yield kind, {**conf, "cache_db": db_path}
            settle_retries()


def _bump_worker(keys, n, results, failed, errors):
    """Bump TAGS *n* times: even bumps through ``versions.bump``, odd ones ``invalidate_tags``."""

    def run():
        try:
            frag = caches["fragmented"]
            store, verify, vt = frag.store, frag.verify_bumps, frag.options.version_timeout
            with TenantContext.use_tenant(TENANT):
                for i in range(n):
                    before = store.get_many(keys)
                    written: dict = {}
                    if i % 2:
                        frag.invalidate_tags(TAGS)
                    else:
                        try:
                            written = bump(store, keys, vt, verify)
                        except BumpFailed as exc:
                            failed.append(str(exc)[:200])
                    after = store.get_many(keys)
                    results.append((before, written, after))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    return run


def _observer(keys, stop, seqs, errors):
    def run():
        try:
            store = caches["fragmented"].store
            while not stop.is_set():
                got = store.get_many(keys)
                for k in keys:
                    if k in got and (not seqs[k] or seqs[k][-1] != got[k]):
                        seqs[k].append(got[k])
                time.sleep(0.0005)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    return run


def _check_bumps(results, keys):
    tokens = [t for _, written, _ in results for t in written.values()]
    assert len(tokens) == len(set(tokens)), "a bump returned a token already returned"
    lost = [
        (b, a) for b, _, a in results for k in keys if b.get(k) is not None and a.get(k) == b.get(k)
    ]
    assert not lost, (
        f"{len(lost)} of {len(results)} bumps had not changed a version when they returned "
        f"(another process would still serve entries they invalidate), e.g. {lost[:2]}"
    )
    missing = [a for _, _, a in results if any(k not in a for k in keys)]
    assert not missing, f"version keys vanished after a bump: {missing[:3]}"


@pytest.mark.parametrize(
    "caches_conf",
    [
        pytest.param("locmem", id="locmem"),
        pytest.param("db", id="db"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
        pytest.param("memcached", id="memcached", marks=pytest.mark.memcached),
    ],
    indirect=True,
)
def test_concurrent_bumps_threads_and_processes(caches_conf, tmp_path):
    kind, conf = caches_conf
    frag = caches["fragmented"]
    with TenantContext.use_tenant(TENANT):
        keys = frag.tag_version_keys(TAGS)
        assert frag.get_or_set_with_tags("before-all", "old", TAGS) == "old"
        assert frag.get_with_tags("before-all", TAGS) == "old"

    children = []
    go = tmp_path / "go"
    if kind != "locmem":
        child_conf = {
            "caches": {"default": conf["default"], "fragmented": conf["fragmented"]},
            "cache_db": conf.get("cache_db"),
            "tags": TAGS,
            "tenant": TENANT,
            "n": BUMPS,
            "go": str(go),
        }
        children = [spawn_child(child_conf) for _ in range(2)]
        time.sleep(0.5)  # let them import Django; they wait for `go`

    n = BUMPS if kind != "db" else BUMPS // 2
    results: list = []
    failed: list = []
    errors: list = []
    stop = threading.Event()
    seqs = {k: [] for k in keys}
    obs = threading.Thread(target=_observer(keys, stop, seqs, errors), daemon=True)
    obs.start()
    workers = [
        threading.Thread(target=_bump_worker(keys, n, results, failed, errors), daemon=True)
        for _ in range(THREADS)
    ]
    go.touch()
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
        assert not t.is_alive(), "bump thread hung"
    child_results = []
    for p in children:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        child_results += [tuple(x) for x in report["bumps"]]
        failed += report["failed"]
    stop.set()
    obs.join(10)
    assert not errors, errors

    assert len(results) == THREADS * n
    assert len(child_results) == len(children) * BUMPS
    total = len(results) + len(child_results)
    problems = []
    if failed:
        problems.append(
            f"{len(failed)} of {total} bumps raised BumpFailed under contention: {failed[0]}"
        )
    try:
        _check_bumps(results + child_results, keys)
    except AssertionError as exc:
        problems.append(str(exc).splitlines()[0])
    assert not problems, "\n".join(problems)
    for k, seq in seqs.items():
        assert len(seq) > 1, "the observer saw no bump"
        assert len(seq) == len(set(seq)), f"version of {k} returned to an earlier value"
    with TenantContext.use_tenant(TENANT):
        assert frag.get_with_tags("before-all", TAGS, default=MISS) is MISS
        assert frag.get_or_set_with_tags("before-all", "new", TAGS) == "new"
    assert pending_retries() == 0


@pytest.mark.parametrize(
    "caches_conf",
    [
        pytest.param("locmem", id="locmem"),
        pytest.param("db", id="db"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
        pytest.param("memcached", id="memcached", marks=pytest.mark.memcached),
    ],
    indirect=True,
)
def test_value_computed_before_a_returned_bump_is_never_served(caches_conf):
    """Readers compute and store while bumpers run; a bump started after a computation kills it.

    Bump *i* gets its index before it starts. A loader returns how many bumps had
    started when it ran (``s``); a read records the highest index of a bump that
    had *returned* before the read started (``m``). Serving a value with
    ``m >= s`` would serve data older than a finished bump.
    """
    kind, _ = caches_conf
    lock = threading.Lock()
    counter = itertools.count()
    state = {"started": 0, "max_done": -1}
    stop = threading.Event()
    violations: list = []
    errors: list = []
    served = [0]
    n_bumps = 150 if kind != "db" else 60

    def bumper():
        try:
            frag = caches["fragmented"]
            with TenantContext.use_tenant(TENANT):
                for _ in range(n_bumps):
                    with lock:
                        i = next(counter)
                        state["started"] = i + 1
                    frag.invalidate_tags(TAGS)
                    with lock:
                        state["max_done"] = max(state["max_done"], i)
                    time.sleep(0.0005)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def loader():
        with lock:
            return state["started"]

    def reader(j):
        try:
            frag = caches["fragmented"]
            with TenantContext.use_tenant(TENANT):
                while not stop.is_set():
                    with lock:
                        m = state["max_done"]
                    if j % 2:
                        v = frag.get_or_set_with_tags("shared", loader, TAGS)
                    else:
                        v = frag.get_with_tags("shared", TAGS, default=MISS)
                        if v is MISS:
                            continue
                    served[0] += 1
                    if v <= m:
                        violations.append((m, v))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    readers = [threading.Thread(target=reader, args=(j,), daemon=True) for j in range(4)]
    bumpers = [threading.Thread(target=bumper, daemon=True) for _ in range(4)]
    for t in readers + bumpers:
        t.start()
    for t in bumpers:
        t.join(120)
        assert not t.is_alive()
    stop.set()
    for t in readers:
        t.join(30)
    assert not errors, errors
    assert not violations, (
        f"{len(violations)} values served after a later bump returned: {violations[:5]}"
    )
    assert served[0] > 50
    assert pending_retries() == 0


# -- eviction, deletion, flush -------------------------------------------------


def _redis_client(store):
    """The raw redis-py client of a django-redis store or of Django's ``RedisCache`` (our
    ``RedisClusterCache`` included: its client is a ``RedisCluster``), else None."""
    from django.core.cache.backends.redis import RedisCache

    if type(store).__module__.startswith("django_redis"):
        return store.client.get_client(write=True)
    if isinstance(store, RedisCache):
        return store._cache.get_client(None, write=True)
    return None


def read_envelope(store, entry):
    """The stored bytes (Redis) or object (other stores) of an entry, exactly as stored."""
    client = _redis_client(store)
    return client.get(store.make_key(entry)) if client is not None else store.get(entry)


def write_envelope(store, entry, envelope):
    """Put an envelope read by ``read_envelope`` back, as a late or resurrected write would."""
    client = _redis_client(store)
    if client is not None:
        client.set(store.make_key(entry), envelope, ex=300)
    else:
        store.set(entry, envelope, timeout=300)


def _cache_then_supersede(frag, key="k"):
    """Cache "old" under the current versions, keep its envelope, then bump. Return (entry key, envelope)."""
    assert frag.get_or_set_with_tags(key, "old", TAGS) == "old"
    from fragmented_keys_django.tags import normalize_tags

    _, ek = frag._keys(key, normalize_tags(TAGS), "", None, False)
    envelope = read_envelope(frag.store, ek.entry)
    assert envelope is not None
    assert frag.invalidate_tags(TAGS) == 2
    assert frag.get_with_tags(key, TAGS, default=MISS) is MISS
    return ek, envelope


def _assert_superseded(frag, ek, envelope, key="k"):
    """The old envelope, re-written into the store, must not validate; a fresh value is computed."""
    write_envelope(frag.store, ek.entry, envelope)
    assert frag.get_with_tags(key, TAGS, default=MISS) is MISS
    assert frag.get_many_with_tags([key], TAGS) == {}
    assert frag.get_or_set_with_tags(key, "new", TAGS) == "new"
    write_envelope(frag.store, ek.entry, envelope)  # a late writer of the old value
    assert frag.get_with_tags(key, TAGS, default=MISS) is MISS
    assert frag.get_or_set_with_tags(key, "newer", TAGS) == "newer"


def test_deleted_version_keys_never_revive_a_superseded_entry(store):
    frag = caches["fragmented"]
    with TenantContext.use_tenant(TENANT):
        ek, env = _cache_then_supersede(frag)
        frag.store.delete_many(list(ek.version_keys[1:]))  # tag versions gone
        _assert_superseded(frag, ek, env)
        ek, env = _cache_then_supersede(frag, "k2")
        frag.store.delete_many(list(ek.version_keys))  # namespace version gone too
        _assert_superseded(frag, ek, env, "k2")
        # A reader that read the versions, then lost them to an eviction, then stores late.
        for vk in ek.version_keys:
            frag.store.delete(vk)
        assert frag.get_or_set_with_tags("k2", "fresh", TAGS) == "fresh"
        write_envelope(frag.store, ek.entry, env)
        assert frag.get_with_tags("k2", TAGS, default=MISS) is MISS


@pytest.fixture
def throwaway_redis():
    server = RedisServer().start()
    conf = {"default": server.store(timeout=2), "fragmented": wrapper_alias()}
    with override_settings(CACHES=conf):
        yield server
        caches["fragmented"].close()
    server.stop()


@pytest.mark.redis
def test_flushdb_never_revives_a_superseded_entry(throwaway_redis):
    frag = caches["fragmented"]
    with TenantContext.use_tenant(TENANT):
        ek, env = _cache_then_supersede(frag)
        throwaway_redis.client().flushdb()
        assert frag.get_with_tags("k", TAGS, default=MISS) is MISS
        _assert_superseded(frag, ek, env)
        # Flush between a reader's version read and its late write.
        throwaway_redis.client().flushdb()
        write_envelope(frag.store, ek.entry, env)
        assert frag.get_with_tags("k", TAGS, default=MISS) is MISS
        assert frag.get_or_set_with_tags("k", "after-flush", TAGS) == "after-flush"


@pytest.mark.redis
def test_lru_eviction_never_revives_a_superseded_entry():
    server = RedisServer("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru").start()
    try:
        conf = {"default": server.store(timeout=2), "fragmented": wrapper_alias()}
        with override_settings(CACHES=conf):
            frag = caches["fragmented"]
            raw = server.client()
            with TenantContext.use_tenant(TENANT):
                entries = []
                for i in range(20):
                    entries.append(_cache_then_supersede(frag, f"k{i}"))
                version_keys = {vk for ek, _ in entries for vk in ek.version_keys}
                prefixed = {vk: frag.store.make_key(vk) for vk in version_keys}
                junk = b"x" * 1024
                for round_ in range(50):
                    pipe = raw.pipeline(transaction=False)
                    for j in range(500):
                        pipe.set(f"junk:{round_}:{j}:{uuid.uuid4().hex}", junk)
                    pipe.execute()
                    if not any(raw.exists(k) for k in prefixed.values()):
                        break
                evicted = [vk for vk, k in prefixed.items() if not raw.exists(k)]
                assert evicted, "filling Redis evicted no version key"
                assert raw.info("stats")["evicted_keys"] > 0
                for i, (ek, env) in enumerate(entries):
                    _assert_superseded(frag, ek, env, f"k{i}")
            frag.close()
    finally:
        server.stop()


def test_shared_db_cache_file_is_really_shared(tmp_path, django_db_blocker):
    """The database cache of the process tests lives in its own file, visible to a child process."""
    db_path = str(tmp_path / "c.sqlite3")
    create_cache_table(db_path, "t")
    conf = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "t"},
        "fragmented": wrapper_alias(),
    }
    go = tmp_path / "go"
    go.touch()
    p = spawn_child(
        {"caches": conf, "cache_db": db_path, "tags": TAGS, "tenant": TENANT, "n": 3, "go": str(go)}
    )
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-3000:]
    bumps = json.loads(out.strip().splitlines()[-1])["bumps"]
    with (
        django_db_blocker.unblock(),
        cache_database(db_path),
        override_settings(CACHES=conf, DATABASE_ROUTERS=["tests.race_support.CacheDBRouter"]),
    ):
        assert caches["default"].get_many(list(bumps[-1][2])) == bumps[-1][2]
        assert connections[CACHE_DB_ALIAS].settings_dict["NAME"] == db_path
        connections[CACHE_DB_ALIAS].close()
    assert Path(db_path).stat().st_size > 0
