"""SQLite in WAL mode: a transaction reads one snapshot, so its values are never stored.

In WAL mode a read transaction keeps the snapshot of its first read while other
connections commit. A value computed from that snapshot after a writer's commit
(and bump) would be stamped with the bumped versions and served after that commit:
stale. So inside a transaction on a WAL database ``get_or_set_with_tags`` computes
the value and stores nothing (``transactions._statement_snapshots``). In the
rollback-journal mode the writer could not commit under an open reader, and
values are stored at commit (``test_transactions_race.py``).

Real threads, each on its own connection, on the suite's SQLite file switched to
WAL for the test.
"""

from __future__ import annotations

import threading

import pytest
from django.core.cache import caches
from django.db import connections, transaction
from django.test import override_settings

from fragmented_keys_django import TenantContext
from fragmented_keys_django.model_tags import ModelTagManager
from tests.conftest import store_settings
from tests.testapp.models import Patient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def wal():
    """Switch the test database file to WAL, and back to the rollback journal after."""
    with connections["default"].cursor() as cur:
        cur.execute("PRAGMA journal_mode=WAL")
        assert cur.fetchone()[0] == "wal"
    yield
    connections.close_all()
    with connections["default"].cursor() as cur:
        cur.execute("PRAGMA journal_mode=DELETE")
        assert cur.fetchone()[0] == "delete"


@pytest.fixture(params=["locmem", pytest.param("redis", marks=pytest.mark.redis)])
def frag(request):
    ModelTagManager.register_model(Patient)
    with override_settings(CACHES=store_settings(request.param)):
        yield caches["fragmented"]
        caches["fragmented"].close()


def load(pk: int) -> int:
    return int(Patient.objects.get(pk=pk).name)


def test_a_snapshot_older_than_a_commit_is_never_served_after_it(frag, wal):
    pk = Patient.objects.create(name="1").pk
    tags = [("Patient", str(pk))]
    snapshot_taken, committed = threading.Event(), threading.Event()
    seen: dict[str, int] = {}
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            with TenantContext.use_tenant("acme"), transaction.atomic():
                seen["snapshot"] = load(pk)  # the transaction's snapshot starts here
                snapshot_taken.set()
                assert committed.wait(30), "writer did not commit"
                seen["computed"] = caches["fragmented"].get_or_set_with_tags(
                    "row", lambda: load(pk), tags, timeout=300
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            snapshot_taken.set()
            connections.close_all()

    def writer() -> None:
        try:
            assert snapshot_taken.wait(30), "reader did not start"
            with TenantContext.use_tenant("acme"):
                p = Patient.objects.get(pk=pk)
                p.name = "2"
                p.save()  # autocommit: committed, and bumped, when save() returns
        except BaseException as exc:
            errors.append(exc)
        finally:
            committed.set()
            connections.close_all()

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "thread hung"
    assert not errors, errors
    # The hazard was real: the reader computed from its snapshot, after the commit.
    assert seen == {"snapshot": 1, "computed": 1}
    with TenantContext.use_tenant("acme"):
        assert frag.get_with_tags("row", tags, default="not stored") == "not stored"
        assert frag.get_or_set_with_tags("row", lambda: load(pk), tags, timeout=300) == 2
        assert frag.get_with_tags("row", tags) == 2


def test_values_computed_in_a_wal_transaction_are_not_stored(frag, wal):
    pk = Patient.objects.create(name="5").pk
    tags = [("Patient", str(pk))]
    with TenantContext.use_tenant("acme"):
        with transaction.atomic():
            assert frag.get_or_set_with_tags("row", lambda: load(pk), tags) == 5
        assert frag.get_with_tags("row", tags, default="not stored") == "not stored"
        assert frag.get_or_set_with_tags("row", lambda: load(pk), tags) == 5  # autocommit
        assert frag.get_with_tags("row", tags) == 5
