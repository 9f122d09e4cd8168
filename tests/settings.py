"""Settings for the test suite.

Servers: Redis from ``tests/redis_dbs.py`` (a throwaway server of the suite's
own, unless ``FKD_TEST_REDIS_DBS`` names databases of an existing one), PostgreSQL
at ``PGHOST``/``PGPORT`` (default 127.0.0.1:5432, user postgres, trust auth).
Tests that need them fail (never skip) when they are missing.
"""

import os
import tempfile

SECRET_KEY = "tests-only"
USE_TZ = True
DEBUG = False

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "fragmented_keys_django",
    "tests.testapp",
    "tests.contract",
]

_tmp = os.environ.get("FKD_TEST_TMP") or tempfile.gettempdir()

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_tmp, f"fkd-test-{os.getpid()}.sqlite3"),
        # A file, not :memory:, so threads in race tests share one database.
        "TEST": {"NAME": os.path.join(_tmp, f"fkd-test-{os.getpid()}.sqlite3")},
        "OPTIONS": {"timeout": 30},
    },
    "pg": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "test"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "TEST": {"NAME": f"test_fkd_{os.getpid()}"},
    },
    # The same PostgreSQL test database under REPEATABLE READ (snapshot isolation).
    "pg_rr": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "test"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "OPTIONS": {"isolation_level": 3},  # psycopg IsolationLevel.REPEATABLE_READ
        "TEST": {"MIRROR": "pg"},
    },
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "fkd-default",
    },
    "fragmented": {
        "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
        "CACHE_NAME": "default",
        "PREFIX": "test",
    },
}

# Templates: {% tagged_cache %} and the debug-toolbar panel (tests/test_templatetag.py, test_panel.py).
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
    }
]

SILENCED_SYSTEM_CHECKS = ["fragmented_keys_django.W001"]

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"fragmented_keys_django": {"handlers": ["null"], "propagate": True}},
}
