"""Helpers for the race, outage and stampede tests.

* ``RedisServer``: a throwaway ``redis-server`` on a free loopback port that a
  test may stop, pause (``SIGSTOP``), resume and restart. Never the machine's
  Redis.
* ``CacheDBRouter`` + ``cache_db_settings``: Django's database cache in a
  dedicated SQLite file shared by several processes.
* ``python -m tests.race_support``: the worker process of the bump races
  (configured through the ``FKD_CHILD`` environment variable, see ``child_main``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "redis-server"
CACHE_DB_ALIAS = "fkd_cachedb"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a loopback TCP port nothing listens on (at the time of the call)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server owned by one test (module); only ever this process is signalled."""

    def __init__(self, *extra: str, port: int | None = None, workdir: str | None = None) -> None:
        self.port = port or free_port()
        self.extra = list(extra)
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        if self.workdir:
            args += ["--dir", self.workdir]
        return args + self.extra  # later options override earlier ones

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client(timeout=0.5).ping():
                    break
            except Exception:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        # AOF rewrite at startup may still be loading: wait until it answers writes.
        while self.client().info("persistence").get("loading"):
            time.sleep(0.02)
        self.paused = False
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.paused:
            self.resume()
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: graceful, flushes the AOF if enabled
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, timeout: float = 2.0):
        import redis

        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def store(self, timeout: float = 0.5, **options: object) -> dict:
        """A ``CACHES`` entry for django-redis on this server."""
        return {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": self.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": timeout, "SOCKET_TIMEOUT": timeout, **options},
        }

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wrapper_alias(**extra: object) -> dict:
    return {
        "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
        "CACHE_NAME": "default",
        "PREFIX": "t",
        **extra,
    }


# -- the database cache in a dedicated SQLite file ----------------------------


class CacheDBRouter:
    """Sends Django's database cache (app label ``django_cache``) to ``CACHE_DB_ALIAS``."""

    def _cache(self, model: object) -> bool:
        return getattr(getattr(model, "_meta", None), "app_label", None) == "django_cache"

    def db_for_read(self, model, **hints):
        return CACHE_DB_ALIAS if self._cache(model) else None

    db_for_write = db_for_read

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label == "django_cache":
            return db == CACHE_DB_ALIAS
        return None


def cache_db_settings(path: str) -> dict:
    """``DATABASES`` entry of the dedicated cache database file."""
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": path, "OPTIONS": {"timeout": 30}}


@contextlib.contextmanager
def cache_database(path: str):
    """Register ``CACHE_DB_ALIAS`` (a SQLite file) in this process for the block's duration."""
    from django.db import connections

    full = connections.configure_settings({"default": cache_db_settings(path)})["default"]
    connections.settings[CACHE_DB_ALIAS] = full
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            connections[CACHE_DB_ALIAS].close()
        with contextlib.suppress(Exception):
            del connections[CACHE_DB_ALIAS]
        connections.settings.pop(CACHE_DB_ALIAS, None)


def create_cache_table(path: str, table: str) -> None:
    """Create Django's cache table *table* in the SQLite file *path* (idempotent)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            f'CREATE TABLE IF NOT EXISTS "{table}" ("cache_key" varchar(255) NOT NULL PRIMARY KEY, '
            '"value" text NOT NULL, "expires" datetime NOT NULL)'
        )
        db.execute(f'CREATE INDEX IF NOT EXISTS "{table}_expires" ON "{table}" ("expires")')
        db.commit()


# -- worker process of the bump races ------------------------------------------


def spawn_child(config: dict) -> subprocess.Popen:
    """Start ``python -m tests.race_support`` with *config*; it prints one JSON line."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "FKD_CHILD": json.dumps(config),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.race_support"],
        cwd=str(ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def child_main() -> None:
    """Bump ``config["tags"]`` ``config["n"]`` times once ``config["go"]`` exists.

    Even bumps call ``versions.bump`` (``written`` = the tokens it returned),
    odd ones the public ``invalidate_tags``. Prints ``{"bumps": [[before,
    written, after], ...], "failed": [...]}`` (each a map version key ->
    token; ``failed``: ``BumpFailed`` messages).
    """
    config = json.loads(os.environ["FKD_CHILD"])
    from django.conf import settings

    settings.CACHES = config["caches"]
    if config.get("cache_db"):
        settings.DATABASES = {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            CACHE_DB_ALIAS: cache_db_settings(config["cache_db"]),
        }
        settings.DATABASE_ROUTERS = ["tests.race_support.CacheDBRouter"]
    import django

    django.setup()
    from django.core.cache import caches

    from fragmented_keys_django import BumpFailed, TenantContext
    from fragmented_keys_django.versions import bump

    frag = caches["fragmented"]
    tags = [tuple(t) for t in config["tags"]]
    with TenantContext.use_tenant(config.get("tenant")):
        keys = frag.tag_version_keys(tags)
    store = frag.store
    verify = frag.verify_bumps
    go = Path(config["go"])
    deadline = time.monotonic() + 30
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    out = []
    failed = []
    with TenantContext.use_tenant(config.get("tenant")):
        for i in range(config["n"]):
            before = store.get_many(keys)
            written: dict = {}
            if i % 2:  # the public API: a failure is logged and retried in the background
                frag.invalidate_tags(tags)
            else:
                try:
                    written = bump(store, keys, frag.options.version_timeout, verify)
                except BumpFailed as exc:
                    failed.append(str(exc)[:200])
            after = store.get_many(keys)
            out.append([before, written, after])
    print(json.dumps({"bumps": out, "failed": failed}))


if __name__ == "__main__":
    child_main()


# -- the retry queue is per process: keep tests from leaking into each other ----


def settle_retries(timeout: float = 5.0) -> int:
    """Wait up to *timeout* seconds for failed bumps to land and stores to recover.

    Returns how many bumps are still pending plus how many stores still recover.
    """
    from fragmented_keys_django.invalidation import _retrier

    def left() -> int:
        return _retrier.pending() + _retrier.recovering()

    deadline = time.monotonic() + timeout
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    return left()


def reset_retrier() -> None:
    """Forget every pending retry and suspect tenant (test hygiene: CACHES change between tests)."""
    from fragmented_keys_django import invalidation

    invalidation._retrier.reset()
