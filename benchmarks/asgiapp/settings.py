"""Settings of the ASGI load benchmark's project (``benchmarks/asgi_load.py``).

The store is django-redis with a ``BlockingConnectionPool``: at 200 concurrent
requests redis-py 8's default pool (at most 100 connections) raises
``MaxConnectionsError``; a blocking pool makes the extra requests wait for a
connection instead (``FKD_BENCH_POOL`` connections, default 100).
"""

import os

SECRET_KEY = "asgi-bench"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "asgiapp.app"
INSTALLED_APPS = ["fragmented_keys_django"]
MIDDLEWARE: list[str] = []
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
FRAGMENTED_KEYS = {"SAFETY_NET": False, "OUTBOX": False}
LOGGING_CONFIG = None

_url = os.environ.get("FKD_BENCH_REDIS", "redis://127.0.0.1:6379/11")
_pool = int(os.environ.get("FKD_BENCH_POOL", "100"))

CACHES = {
    "redis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _url,
        "OPTIONS": {
            "CONNECTION_POOL_CLASS": "redis.BlockingConnectionPool",
            "CONNECTION_POOL_KWARGS": {"max_connections": _pool, "timeout": 20},
            "SOCKET_CONNECT_TIMEOUT": 5,
            "SOCKET_TIMEOUT": 5,
        },
    },
    "fragmented": {
        "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
        "CACHE_NAME": "redis",
        "PREFIX": "asgi",
        "TIMEOUT": 3600,
    },
}
