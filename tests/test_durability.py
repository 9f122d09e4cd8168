"""A failed bump outlives the process that queued it (the outbox), with real processes.

A writer process (``tests/durability_child.py``) updates a registered row on
PostgreSQL while the throwaway Redis holding the cache is stopped or paused;
this test process holds an entry cached before, which must never be served
after the store comes back, whatever happened to the writer: killed with
``SIGKILL`` after the bump failed, killed while the bump hung after the
commit, forked right after the failure, or alive but never retrying. The
store keeps its data across restarts (AOF), so the stale entry is really
there and only the bump can invalidate it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from django.core.cache import caches
from django.core.management import call_command
from django.db import connections, transaction
from django.test import override_settings

from fragmented_keys_django import ModelTagManager, TenantContext, outbox
from fragmented_keys_django.invalidation import _retrier, drain_outbox, pending_retries
from tests.testapp.models import Item

from .durability_child import TENANT, caches_for
from .race_support import ROOT, RedisServer

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True, databases=["default", "pg"]),
]

MISS = object()


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(
        "--appendonly", "yes", "--appendfsync", "always", workdir=str(tmp_path)
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _clean():
    _retrier.reset()
    yield
    _retrier.reset()


class Writer:
    """The writer process: started with a scenario, read line by line, killed by pid."""

    def __init__(self, scenario: str, srv: RedisServer, item: Item) -> None:
        env = {
            **os.environ,
            "FKD_DUR_DB": connections["pg"].settings_dict["NAME"],
            "FKD_DUR_REDIS": srv.url,
            "FKD_DUR_SCENARIO": scenario,
            "FKD_DUR_ITEM": str(item.pk),
            "PYTHONPATH": str(ROOT),
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.durability_child"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pids = [self.proc.pid]
        self._buffer = ""  # read from the pipe, not yet returned as lines

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """Wait for the next line, which must start with *prefix*; return it.

        Reads the pipe's file descriptor itself: two lines arriving together
        (``saved`` then ``forked``) must not leave the second in a buffer that
        ``select`` cannot see.
        """
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while "\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            assert ready, f"the writer printed nothing for {timeout}s (waiting for {prefix!r})"
            chunk = os.read(fd, 65536).decode()
            if not chunk:  # the writer exited
                break
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition("\n")
        line = line.strip()
        assert line.startswith(prefix), (line, self.proc.stderr.read() if not line else "")
        return line

    def kill(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):  # already gone: fine
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


def _setup(srv: RedisServer):
    ModelTagManager.register_model(Item)
    item = Item.objects.using("pg").create(name="durable", qty=1)
    frag = caches["fragmented"]
    tags = [("Item", item.pk)]
    with TenantContext.use_tenant(TENANT):
        frag.set_with_tags("item", "qty=1", tags)

    def served() -> bool:
        with TenantContext.use_tenant(TENANT):
            return frag.get_with_tags("item", tags, default=MISS) == "qty=1"

    assert served()
    return item, served


def _committed(item: Item, qty: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while Item.objects.using("pg").get(pk=item.pk).qty != qty:
        assert time.monotonic() < deadline, "the writer never committed"
        time.sleep(0.02)


def test_kill_9_after_a_failed_bump_leaves_it_in_the_outbox(server):
    with override_settings(CACHES=caches_for(server.url)):
        item, served = _setup(server)
        server.stop()
        writer = Writer("fail-and-die", server, item)
        try:
            writer.expect("saved")
        finally:
            writer.kill()
        server.start()  # the data, the stale entry included, is back
        assert served(), "the stale entry must really be there for this test to mean anything"
        call_command("fk_outbox", "--drain", verbosity=0)
        assert not served()
        assert not outbox.databases() or not any(
            outbox._model().objects.using(db).exists() for db in outbox.databases()
        )


def test_kill_9_while_the_bump_hangs_after_the_commit(server):
    """The marker written in the transaction survives the process; a drain flushes the tenant."""
    with override_settings(CACHES=caches_for(server.url)):
        item, served = _setup(server)
        server.pause()
        writer = Writer("hang", server, item)
        try:
            writer.expect("saving")
            _committed(item, 7)  # committed; the bump hangs on the paused store
            time.sleep(0.2)
        finally:
            writer.kill()
        server.resume()
        assert served()
        report = drain_outbox(markers_older_than=0.0)
        assert report.applied >= 1 and not report.failed
        assert not served()


@pytest.mark.parametrize("scenario", ["hang-net", "hang-global"])
def test_kill_9_while_a_bump_every_tenant_reads_hangs_after_the_commit(server, scenario):
    """D2 for bumps outside the writer's namespace: a raw write outside any tenant, a global model.

    The entry is cached in tenant acme; the writer (another process) commits
    inside ``atomic()`` outside acme, and is killed while its bump hangs. The
    marker it committed must make a drain invalidate acme's entry too.
    """
    from fragmented_keys_django import keys as keys_mod

    global_tags = keys_mod._global_tags
    try:
        with override_settings(CACHES=caches_for(server.url)):
            ModelTagManager.register_model(Item, tenant_scoped=scenario != "hang-global")
            item = Item.objects.using("pg").create(name="durable", qty=1)
            frag = caches["fragmented"]
            tags = [("Item", item.pk)]
            with TenantContext.use_tenant(TENANT):
                frag.set_with_tags("item", "qty=1", tags)

            def served() -> bool:
                with TenantContext.use_tenant(TENANT):
                    return frag.get_with_tags("item", tags, default=MISS) == "qty=1"

            assert served()
            server.pause()
            writer = Writer(scenario, server, item)
            try:
                writer.expect("saving")
                _committed(item, 7)  # committed; the bump hangs on the paused store
                time.sleep(0.2)
            finally:
                writer.kill()
            server.resume()
            assert served()
            report = drain_outbox(markers_older_than=0.0)
            assert report.applied >= 1 and not report.failed
            assert not served(), "acme serves the entry the committed write invalidated"
    finally:
        keys_mod._global_tags = global_tags
        keys_mod.clear_memos()


def test_a_process_forked_after_a_failure_lands_the_bump(server):
    with override_settings(CACHES=caches_for(server.url)):
        item, served = _setup(server)
        server.stop()
        writer = Writer("fork", server, item)
        try:
            writer.expect("saved")
            child = int(writer.expect("forked").split()[1])
            writer.pids.append(child)
            server.start()
            writer.expect("landed")  # the forked child's own retry thread
            assert not served()
        finally:
            writer.kill()


def test_a_process_that_saw_the_outage_drains_before_serving_again(server):
    """The writer is alive but never retries; this process saw errors during the outage."""
    with override_settings(CACHES=caches_for(server.url)):
        item, served = _setup(server)
        server.stop()
        writer = Writer("fail-and-stay", server, item)
        try:
            writer.expect("saved")
            assert not served()  # the read fails: this process saw the outage
            assert _retrier.recovering() == 1
            server.start()
            seen = []
            deadline = time.monotonic() + 15
            while _retrier.recovering() and time.monotonic() < deadline:
                seen.append(served())
                time.sleep(0.02)
            seen.append(served())
            assert not any(seen), "an entry invalidated during the outage was served"
            assert _retrier.recovering() == 0
        finally:
            writer.kill()


def test_a_process_that_never_saw_the_outage_is_stale_at_most_until_the_retry(server):
    """The bound for other processes: the writer's retry, about a second after the store is back."""
    with override_settings(CACHES=caches_for(server.url)):
        item, served = _setup(server)
        server.stop()
        writer = Writer("retry", server, item)
        try:
            writer.expect("saved")
            server.start()
            writer.expect("landed", timeout=15)
            assert not served()
        finally:
            writer.kill()


def test_a_marker_costs_one_statement_in_the_transaction_and_is_deleted_after(server):
    """Healthy store: one marker INSERT in the transaction; the retry thread deletes it later.

    (A DELETE right after the bump would cost each transaction a commit of its own.)
    """
    from django.test.utils import CaptureQueriesContext

    with override_settings(CACHES=caches_for(server.url)):
        item, served = _setup(server)
        conn = connections["pg"]
        outbox.available("pg")  # checked once per process and database, not per transaction
        with (
            CaptureQueriesContext(conn) as queries,
            TenantContext.use_tenant(TENANT),
            transaction.atomic(using="pg"),
        ):
            item.qty = 2
            item.save()
        outbox_sql = [q["sql"] for q in queries if outbox.TABLE in q["sql"]]
        assert len(outbox_sql) == 1 and outbox_sql[0].startswith("INSERT"), outbox_sql
        assert not served()
        deadline = time.monotonic() + 10
        while outbox._model().objects.using("pg").exists():
            assert time.monotonic() < deadline, "the landed marker was never deleted"
            time.sleep(0.05)


def test_a_rolled_back_transaction_leaves_no_marker(server):
    with override_settings(CACHES=caches_for(server.url)):
        item, served = _setup(server)
        with (
            pytest.raises(ZeroDivisionError),
            TenantContext.use_tenant(TENANT),
            transaction.atomic(using="pg"),
        ):
            item.qty = 3
            item.save()
            1 / 0  # noqa: B018
        assert not outbox._model().objects.using("pg").exists()
        assert served()
        assert pending_retries() == 0


def test_fk_outbox_lists_and_drains_and_the_task_does_too(server, capsys):
    from fragmented_keys_django import tasks

    with override_settings(CACHES=caches_for(server.url)):
        item, served = _setup(server)
        frag = caches["fragmented"]
        with TenantContext.use_tenant(TENANT):
            keys = frag.tag_version_keys([("Item", item.pk)])
        outbox.record("pg", [("fragmented", TENANT, keys, (("Item", str(item.pk)),), False)])
        call_command("fk_outbox")
        assert "1 version key(s) for tenant 'acme' on alias 'fragmented'" in capsys.readouterr().out
        assert tasks.drain() == {"applied": 1, "failed": 0, "dropped": 0, "errors": []}
        assert not served()
        outbox.record("pg", [("gone", TENANT, keys, (), False)])
        call_command("fk_outbox", "--drain")
        assert "1 dropped (alias gone)" in capsys.readouterr().out


def test_w020_reports_a_database_without_the_outbox_table():
    from fragmented_keys_django.checks import check_outbox

    assert check_outbox(databases=["pg"]) == []
    model = outbox._model()
    with connections["pg"].schema_editor() as editor:
        editor.delete_model(model)
    try:
        found = check_outbox(databases=["pg"])
        assert [m.id for m in found] == ["fragmented_keys_django.W020"]
        assert "migrate fragmented_keys_django --database pg" in found[0].hint
        with override_settings(FRAGMENTED_KEYS={"OUTBOX": False}):
            assert check_outbox(databases=["pg"]) == []
    finally:
        with connections["pg"].schema_editor() as editor:
            editor.create_model(model)
        outbox.reset()


def test_on_sqlite_landed_markers_go_with_the_next_transaction_never_from_another_thread():
    """SQLite: no background DELETE (it could deadlock a request's transaction)."""
    from .conftest import store_settings

    with override_settings(CACHES=store_settings("locmem")):
        ModelTagManager.register_model(Item)
        item = Item.objects.create(name="sqlite", qty=0)
        rows = outbox._model().objects
        for qty in (1, 2, 3):
            with TenantContext.use_tenant(TENANT), transaction.atomic():
                item.qty = qty
                item.save()
            # Only the last transaction's marker is left: each deleted the one before.
            assert rows.count() == 1
        assert _retrier._landed == []  # nothing queued for the retry thread
        outbox.forget_deferred()  # what a normal exit does
        assert rows.count() == 0


def test_on_sqlite_markers_of_threads_that_end_are_deleted_too():
    """SQLite, a thread per request (``runserver``): the outbox must not grow with requests."""
    import threading

    from .conftest import store_settings

    with override_settings(CACHES=store_settings("locmem")):
        ModelTagManager.register_model(Item)
        item = Item.objects.create(name="threads", qty=0)
        errors: list[BaseException] = []

        def request(qty: int) -> None:
            try:
                with TenantContext.use_tenant(TENANT), transaction.atomic():
                    Item.objects.filter(pk=item.pk).update(qty=qty)  # CacheAwareManager: bumps
            except BaseException as exc:
                errors.append(exc)
            finally:
                connections.close_all()

        for qty in range(1, 21):
            thread = threading.Thread(target=request, args=(qty,))
            thread.start()
            thread.join()
        assert errors == []
        with TenantContext.use_tenant(TENANT), transaction.atomic():  # one more, here
            Item.objects.filter(pk=item.pk).update(qty=0)
        left = outbox._model().objects.count()
        outbox.forget_deferred()
        assert left <= 2, f"{left} landed markers left in the outbox after 21 transactions"


def test_a_kill_9_is_repaired_by_the_next_process_whose_retry_thread_runs(server, monkeypatch):
    """No drain scheduled: another process writing in a transaction applies the orphan."""
    monkeypatch.setattr(outbox, "MARKER_GRACE", 0.5)
    monkeypatch.setattr(_retrier, "_next_orphans", 0.0)
    with override_settings(CACHES=caches_for(server.url)):
        item, served = _setup(server)
        other = Item.objects.using("pg").create(name="other", qty=0)
        server.pause()
        writer = Writer("hang", server, item)
        try:
            writer.expect("saving")
            _committed(item, 7)  # committed; the bump hangs on the paused store
        finally:
            writer.kill()
        server.resume()
        assert served()
        time.sleep(0.6)  # the marker is now older than the grace
        with TenantContext.use_tenant("elsewhere"), transaction.atomic(using="pg"):
            other.qty = 1
            other.save()  # this process's retry thread starts (it deletes its marker)
        deadline = time.monotonic() + 15
        while served():
            assert time.monotonic() < deadline, "the orphaned marker was never applied"
            time.sleep(0.05)
