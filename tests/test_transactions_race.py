"""Transactions vs. the cache, with real threads on separate connections (issue 3, item 1).

Against SQLite (a file, rollback journal) and PostgreSQL (READ COMMITTED):

* once a writer's commit has returned, no read that starts afterwards returns
  an older value, through ``get_or_set_with_tags``, ``@tagged_cache``,
  ``get_with_tags`` and ``get_many_with_tags`` (hundreds of commits);
* data written inside a transaction that is still open, or rolled back,
  never enters the shared cache (the writer reading its own rows included);
* a rolled-back savepoint bumps nothing;
* an ``ATOMIC_REQUESTS`` view (a real request through Django's handler)
  behaves the same.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time

import pytest
from django.core.cache import caches
from django.db import connections, transaction
from django.http import JsonResponse
from django.test import Client, override_settings
from django.urls import path

from fragmented_keys_django import tagged_cache
from fragmented_keys_django.model_tags import ModelTagManager
from tests.conftest import store_settings
from tests.testapp.models import Patient

pytestmark = pytest.mark.slow

DBS = [
    pytest.param("default", id="sqlite", marks=pytest.mark.django_db(transaction=True)),
    pytest.param(
        "pg",
        id="pg",
        marks=[
            pytest.mark.postgres,
            pytest.mark.django_db(transaction=True, databases=["default", "pg"]),
        ],
    ),
]
STORES = [
    pytest.param("locmem", id="locmem"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]

NEVER_COMMITTED = 10**9  # written only by transactions that roll back
MISS = object()


@pytest.fixture(params=DBS)
def db(request):
    """The database alias under test; the Patient model is registered (tag "Patient")."""
    ModelTagManager.register_model(Patient)
    yield request.param
    connections.close_all()


@pytest.fixture(params=STORES)
def cache_kind(request):
    with override_settings(CACHES=store_settings(request.param, OPTIONS={"STAMPEDE_WAIT": 0.05})):
        yield request.param
        caches["fragmented"].close()


@pytest.fixture
def only_locmem():
    with override_settings(CACHES=store_settings("locmem")):
        yield


def load(pk: int, alias: str) -> int:
    return int(Patient.objects.using(alias).get(pk=pk).name)


@tagged_cache(timeout=300, tags=["Patient:{pk}"], cache_name="fragmented")
def load_decorated(pk: int, alias: str) -> int:
    return load(pk, alias)


def tags(pk: int) -> list[tuple[str, str]]:
    return [("Patient", str(pk))]


def read(mode: str, pk: int, alias: str) -> int:
    """One read of row *pk* through the API *mode*; every mode returns the row's value."""
    frag = caches["fragmented"]
    if mode == "get_or_set":
        return frag.get_or_set_with_tags(
            f"row:{pk}", lambda: load(pk, alias), tags(pk), timeout=300
        )
    if mode == "decorated":
        return load_decorated(pk, alias)
    if mode == "get_with_tags":
        value = frag.get_with_tags(f"row:{pk}", tags(pk), default=MISS)
        if value is MISS:  # fill the way the docs recommend: versions read before the loader
            value = frag.get_or_set_with_tags(
                f"row:{pk}", lambda: load(pk, alias), tags(pk), timeout=300
            )
        return value
    if mode == "get_many_with_tags":
        got = frag.get_many_with_tags({f"row:{pk}": tags(pk)})
        if f"row:{pk}" in got:
            return got[f"row:{pk}"]
        return frag.get_or_set_with_tags(
            f"row:{pk}", lambda: load(pk, alias), tags(pk), timeout=300
        )
    raise AssertionError(mode)


MODES = ["get_or_set", "decorated", "get_with_tags", "get_many_with_tags"]


def save_name(pk: int, alias: str, name: object) -> None:
    p = Patient.objects.using(alias).get(pk=pk)
    p.name = str(name)
    p.save(using=alias)


def run_threads(targets: list, timeout: float = 120) -> list[BaseException]:
    """Run callables in threads (each closes its DB connections); return their exceptions."""
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
            finally:
                connections.close_all()

        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "thread hung"
    return errors


# -- the race ---------------------------------------------------------------


def test_no_read_older_than_a_returned_commit(db, cache_kind):
    """4 readers, 2 writers, 300 commits: a read that starts after a commit returned is never older."""
    n_commits = 150  # per writer
    pks = [Patient.objects.using(db).create(name="0").pk for _ in range(2)]
    committed = dict.fromkeys(pks, 0)  # highest seq whose commit has returned, per row
    stop = threading.Event()
    violations: list[tuple] = []
    reads = [0]
    # SQLite allows one writer at a time; a second one in a deferred transaction
    # gets SQLITE_BUSY at once (deadlock avoidance), so writers take turns there.
    write_lock = threading.Lock() if db == "default" else None

    def writer(pk: int, seed: int) -> None:
        rnd = random.Random(seed)
        frag = caches["fragmented"]
        for seq in range(1, n_commits + 1):
            with write_lock or contextlib.nullcontext():
                pattern = rnd.randrange(4)
                if pattern == 0:
                    # Read first (a clean transaction: the value is stored at commit),
                    # then write: the bump at commit must invalidate that value.
                    with transaction.atomic(using=db):
                        before = frag.get_or_set_with_tags(
                            f"row:{pk}", lambda p=pk: load(p, db), tags(pk), timeout=300
                        )
                        assert before == seq - 1, (before, seq)
                        save_name(pk, db, seq)
                elif pattern == 1:
                    # Write, then read our own uncommitted row: bypasses the cache.
                    with transaction.atomic(using=db):
                        save_name(pk, db, seq)
                        own = frag.get_or_set_with_tags(
                            f"row:{pk}", lambda p=pk: load(p, db), tags(pk), timeout=300
                        )
                        assert own == seq, (own, seq)
                        assert load_decorated(pk, db) == seq
                elif pattern == 2:
                    # A transaction that reads its own never-committed write, then rolls back.
                    with pytest.raises(_Rollback), transaction.atomic(using=db):
                        save_name(pk, db, NEVER_COMMITTED)
                        assert load_decorated(pk, db) == NEVER_COMMITTED
                        assert frag.get_with_tags(f"row:{pk}", tags(pk), default=MISS) is MISS
                        raise _Rollback
                    with transaction.atomic(using=db):
                        save_name(pk, db, seq)
                else:
                    with transaction.atomic(using=db):
                        save_name(pk, db, seq)
            committed[pk] = seq  # the commit (and its on_commit bump) has returned
            time.sleep(rnd.random() * 0.002)

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        n = 0
        while not stop.is_set():
            pk = rnd.choice(pks)
            mode = MODES[n % len(MODES)]
            floor = committed[pk]  # read before the read starts
            value = read(mode, pk, db)
            reads[0] += 1
            if value < floor or value == NEVER_COMMITTED:
                violations.append((mode, pk, floor, value))
            n += 1

    errors: list[BaseException] = []
    readers = [threading.Thread(target=_guard(reader, errors, i), daemon=True) for i in range(4)]
    for t in readers:
        t.start()
    writer_errors = run_threads(
        [lambda pk=pk, i=i: writer(pk, 100 + i) for i, pk in enumerate(pks)]
    )
    stop.set()
    for t in readers:
        t.join(30)
        assert not t.is_alive()
    assert not writer_errors, writer_errors
    assert not errors, errors
    assert not violations, f"{len(violations)} stale reads, e.g. {violations[:5]}"
    assert reads[0] > 300, reads
    # And after the storm, every API returns the last committed value.
    for pk in pks:
        for mode in MODES:
            assert read(mode, pk, db) == n_commits


class _Rollback(Exception):
    pass


def _guard(fn, errors: list, *args):
    def run():
        try:
            fn(*args)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    return run


# -- open, committed and rolled-back transactions, step by step -------------


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
@pytest.mark.parametrize("read_first", [False, True], ids=["write-then-read", "read-then-write"])
def test_open_transaction_never_populates_the_shared_cache(db, only_locmem, outcome, read_first):
    pk = Patient.objects.using(db).create(name="1").pk
    in_tx = threading.Event()
    proceed = threading.Event()
    seen_inside: list[int] = []

    def writer() -> None:
        frag = caches["fragmented"]
        try:
            with transaction.atomic(using=db):
                if read_first:
                    seen_inside.append(
                        frag.get_or_set_with_tags(
                            "row", lambda: load(pk, db), tags(pk), timeout=300
                        )
                    )
                save_name(pk, db, 2)
                seen_inside.append(
                    frag.get_or_set_with_tags("row", lambda: load(pk, db), tags(pk), timeout=300)
                )
                seen_inside.append(load_decorated(pk, db))
                in_tx.set()
                assert proceed.wait(30)
                if outcome == "rollback":
                    raise _Rollback
        except _Rollback:
            return  # the rollback this case asked for: nothing to record

    t = threading.Thread(target=_guard(writer, errors := []), daemon=True)
    t.start()
    assert in_tx.wait(30), errors
    frag = caches["fragmented"]
    # The writer's transaction is open: its value must not be in the cache.
    assert frag.get_with_tags("row", tags(pk), default=MISS) is MISS
    assert frag.get_or_set_with_tags("row", lambda: load(pk, db), tags(pk), timeout=300) == 1
    assert load_decorated(pk, db) == 1
    assert frag.get_with_tags("row", tags(pk)) == 1
    proceed.set()
    t.join(30)
    assert not t.is_alive() and not errors, errors
    assert seen_inside[-2:] == [2, 2]
    expected = 2 if outcome == "commit" else 1
    for mode in MODES:
        assert read(mode, pk, db) in (expected,), mode
    assert frag.get_or_set_with_tags("row", lambda: load(pk, db), tags(pk), timeout=300) == expected
    assert load_decorated(pk, db) == expected
    if outcome == "rollback":
        # Nothing was bumped: the value cached while the writer was open is still served.
        assert frag.get_with_tags("row", tags(pk), default=MISS) == 1


# The raw UPDATE below stands for a write nothing reports: with the safety net
# on it would be seen (and the transaction dirty), so the net is off here.
@override_settings(FRAGMENTED_KEYS={"SAFETY_NET": False})
def test_clean_transaction_value_is_stored_at_commit_only(db, only_locmem):
    """A transaction that wrote no registered model stores its value on commit, never on rollback."""
    pk = Patient.objects.using(db).create(name="1").pk
    table = Patient._meta.db_table
    frag = caches["fragmented"]

    def raw_update(name: str) -> None:  # a write our signals do not see
        with connections[db].cursor() as cur:
            cur.execute(f"UPDATE {table} SET name = %s WHERE id = %s", [name, pk])

    with pytest.raises(_Rollback), transaction.atomic(using=db):
        raw_update("7")
        assert frag.get_or_set_with_tags("row", lambda: load(pk, db), tags(pk)) == 7
        other = run_in_thread(
            lambda: caches["fragmented"].get_with_tags("row", tags(pk), default=MISS)
        )
        assert other is MISS  # not stored while open
        raise _Rollback
    assert frag.get_with_tags("row", tags(pk), default=MISS) is MISS  # rolled back: never stored
    assert frag.get_or_set_with_tags("row", lambda: load(pk, db), tags(pk)) == 1

    frag.delete_with_tags("row", tags(pk))
    with transaction.atomic(using=db):
        raw_update("8")
        assert frag.get_or_set_with_tags("row", lambda: load(pk, db), tags(pk)) == 8
        assert (
            run_in_thread(lambda: caches["fragmented"].get_with_tags("row", tags(pk), default=MISS))
            is MISS
        )
    assert (
        run_in_thread(lambda: caches["fragmented"].get_with_tags("row", tags(pk), default=MISS))
        == 8
    )


def run_in_thread(fn):
    out: list = []
    errors: list = []
    t = threading.Thread(target=_guard(lambda: out.append(fn()), errors), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive() and not errors, errors
    return out[0]


# -- savepoints ---------------------------------------------------------------


def test_savepoint_rollback_bumps_nothing(db, only_locmem):
    pk, other = (Patient.objects.using(db).create(name="1").pk for _ in range(2))
    frag = caches["fragmented"]
    assert frag.get_or_set_with_tags("row", lambda: load(pk, db), tags(pk)) == 1
    assert frag.get_or_set_with_tags("all", lambda: "all-1", [("Patient", "")]) == "all-1"
    versions = (frag.get_tag_version("Patient", pk), frag.get_tag_version("Patient", ""))

    with transaction.atomic(using=db):
        with pytest.raises(_Rollback), transaction.atomic(using=db):
            save_name(pk, db, 2)
            raise _Rollback
        # The savepoint's bumps are gone with it: the transaction is clean again.
        assert frag.get_with_tags("row", tags(pk)) == 1
    assert (frag.get_tag_version("Patient", pk), frag.get_tag_version("Patient", "")) == versions
    assert frag.get_with_tags("row", tags(pk)) == 1
    assert frag.get_with_tags("all", [("Patient", "")]) == "all-1"

    # A rolled-back savepoint next to a committed write: only the committed row is bumped.
    with transaction.atomic(using=db):
        with pytest.raises(_Rollback), transaction.atomic(using=db):
            save_name(pk, db, 3)
            raise _Rollback
        save_name(other, db, 9)
    assert frag.get_tag_version("Patient", pk) == versions[0]
    assert frag.get_with_tags("row", tags(pk)) == 1
    assert (
        frag.get_with_tags("all", [("Patient", "")], default=MISS) is MISS
    )  # model-wide tag bumped
    assert load(pk, db) == 1


# -- ATOMIC_REQUESTS ----------------------------------------------------------

_view_hooks: dict = {}


def save_view(request, alias: str, pk: int, name: str):
    save_name(pk, alias, name)
    own = load_decorated(pk, alias)  # the writer reads its own uncommitted row
    hook = _view_hooks.get("inside")
    if hook:
        hook()
    if request.GET.get("fail"):
        raise _Rollback
    return JsonResponse({"own": own})


urlpatterns = [path("save/<str:alias>/<int:pk>/<str:name>/", save_view)]


def test_atomic_requests_view(db, only_locmem, monkeypatch):
    monkeypatch.setitem(connections.settings[db], "ATOMIC_REQUESTS", True)
    pk = Patient.objects.using(db).create(name="1").pk
    assert load_decorated(pk, db) == 1
    inside = threading.Event()
    proceed = threading.Event()

    def hook() -> None:
        inside.set()
        assert proceed.wait(30)

    monkeypatch.setitem(_view_hooks, "inside", hook)
    responses: list = []

    def request(url: str) -> None:
        client = Client(raise_request_exception=False)
        responses.append(client.get(url))

    with override_settings(ROOT_URLCONF=__name__):
        for name, fail in ((2, False), (3, True)):
            inside.clear()
            proceed.clear()
            url = f"/save/{db}/{pk}/{name}/" + ("?fail=1" if fail else "")
            t = threading.Thread(target=_guard(request, errors := [], url), daemon=True)
            t.start()
            assert inside.wait(30), errors
            # The view's transaction is open: other readers see the committed row,
            # and the view's own read did not leak into the cache.
            before = 1 if name == 2 else 2
            assert load_decorated(pk, db) == before
            assert (
                caches["fragmented"].get_or_set_with_tags("row", lambda: load(pk, db), tags(pk))
                == before
            )
            proceed.set()
            t.join(30)
            assert not t.is_alive() and not errors, errors
            resp = responses.pop()
            if fail:
                assert resp.status_code == 500
            else:
                assert resp.status_code == 200 and resp.json() == {"own": 2}
            # After the response: the committed value, never the rolled-back one.
            assert load_decorated(pk, db) == 2
            assert (
                caches["fragmented"].get_or_set_with_tags("row", lambda: load(pk, db), tags(pk))
                == 2
            )
            assert load(pk, db) == 2
