"""Django's database cache and the caller's transaction (issue "Exact everywhere", item 8).

A bump of a tag version that was absent must not take a token it reads back for
its own: on the database cache that token may come from a transaction that began
before the commit asking for the bump (the cache swallowed the bump's failed
insert), whose reader stored a value older than that commit.

Real threads and connections on real SQLite files.
"""

from __future__ import annotations

import threading
import time

from django.core.cache import caches
from django.db import OperationalError, connections, transaction
from django.test import override_settings

from tests.conftest import store_settings
from tests.race_support import CACHE_DB_ALIAS, cache_database, create_cache_table
from tests.test_transactions_race import _guard

TABLE = "fkd_cache_table"


def start(fn, errors: list) -> threading.Thread:
    t = threading.Thread(target=_guard(fn, errors), daemon=True)
    t.start()
    return t


def join(*threads: threading.Thread) -> None:
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "thread hung"


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


# -- SQLite: a cache in a file of its own ----------------------------------------------


def test_a_cache_in_its_own_sqlite_file_never_loses_a_bump_to_a_reader_transaction(
    tmp_path, django_db_blocker
):
    """The cache in a SQLite file of its own (a router), a reader's transaction open on it (as
    ``ATOMIC_REQUESTS`` opens one per database): the writer's commit (its data lives elsewhere,
    here in memory) does not wait for the reader. Its bump's insert meets the reader's write lock
    and is dropped (the database cache swallows "database is locked"); the reader commits its
    token before the bump reads back. The read-back must not take that token, created before the
    commit, for the bump's own: it writes again. Today's code took it: the bump was lost, and the
    reader's value served after the commit, on every run."""
    path = str(tmp_path / "cache.sqlite3")
    create_cache_table(path, TABLE)
    conf = store_settings("db", OPTIONS={"STAMPEDE_WAIT": 0.2})
    with (
        django_db_blocker.unblock(),
        cache_database(path),
        override_settings(CACHES=conf, DATABASE_ROUTERS=["tests.race_support.CacheDBRouter"]),
    ):
        frag = caches["fragmented"]
        data = {"row": 1}  # the data the writer commits
        row_tags = [("Row", "1")]
        reader_read, insert_dropped, reader_committed, writer_done = (
            threading.Event() for _ in range(4)
        )
        seen: dict = {}

        def reader() -> None:
            def loader() -> int:
                value = data["row"]
                seen["token"] = frag.get_tag_version("Row", "1")
                reader_read.set()
                wait_until(lambda: insert_dropped.is_set() or writer_done.is_set(), "the writer")
                return value

            with transaction.atomic(using=CACHE_DB_ALIAS):
                transaction.on_commit(reader_committed.set, using=CACHE_DB_ALIAS)
                seen["read"] = caches["fragmented"].get_or_set_with_tags(
                    "row", loader, row_tags, timeout=300
                )

        def watch(execute, sql, params, many, context):
            if insert_dropped.is_set() and sql.startswith("SELECT"):
                # The dropped insert's transaction is over (no lock held): let the reader
                # commit before the bump goes on.
                assert reader_committed.wait(30)
            try:
                return execute(sql, params, many, context)
            except OperationalError:
                if sql.startswith("INSERT"):
                    insert_dropped.set()
                raise

        def writer() -> None:
            try:
                data["row"] = 2  # the commit
                with connections[CACHE_DB_ALIAS].execute_wrapper(watch):
                    caches["fragmented"].invalidate_tags(row_tags)  # autocommit: bumps at once
            finally:
                writer_done.set()

        errors: list = []
        t_reader = start(reader, errors)
        assert reader_read.wait(30), errors
        join(t_reader, start(writer, errors))
        try:
            assert not errors, errors
            assert insert_dropped.is_set(), "the interleaving did not happen"
            assert seen["read"] == 1
            assert frag.get_tag_version("Row", "1") != seen["token"], "the bump was lost"
            assert frag.get_or_set_with_tags("row", lambda: data["row"], row_tags) == 2
        finally:
            frag.close()
            connections[CACHE_DB_ALIAS].close()
