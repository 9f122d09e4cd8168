"""Settings of the django-omnitenant suite (tests/omnitenant_suite), run in its own pytest process.

django-omnitenant as its docs set it up: its app (which patches Django's cache
handler), its PostgreSQL engine (schema switching with ``SET search_path``),
a ``BaseTenant`` model whose ``config["cache_config"]`` is also the
``TENANT_STORES`` MODEL source of the fragmented alias, and omnitenant as the
tenant source. It cannot share a process with tests.settings.
"""

import os

from tests.redis_dbs import base_url, redis_url

SECRET_KEY = "tests-only"
USE_TZ = True
DEBUG = False
ALLOWED_HOSTS = ["*"]

# django.contrib.auth before django_omnitenant, as in a usual project: its models open the
# database backend first (omnitenant's engine cannot be loaded while its models import).
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_omnitenant",
    "fragmented_keys_django",
    "tests.omnitenant_app",
]
OMNITENANT_CONFIG = {
    "TENANT_MODEL": "omnitenant_app.Tenant",
    "DOMAIN_MODEL": "omnitenant_app.Domain",
    "PUBLIC_HOST": "localhost",
}
CUSTOM_APPS: list[str] = []  # omnitenant's router keeps every model on the master alias

DATABASES = {
    "default": {
        "ENGINE": "django_omnitenant.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "test"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "TEST": {"NAME": f"test_fkd_omni_{os.getpid()}"},
    }
}

REDIS_URL = base_url()
KEY_PREFIX = f"fkd-omni-{os.getpid()}"
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": redis_url("subsuite"),
        "KEY_PREFIX": KEY_PREFIX,
    },
    "fragmented": {
        "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
        "CACHE_NAME": "default",
        "PREFIX": "omni",
        "OPTIONS": {
            "TENANT_STORES": {
                "MODEL": "omnitenant_app.Tenant",
                "ID_FIELD": "tenant_id",
                "CONFIG_FIELD": "config",
                "KEY": "cache_config",
            },
        },
    },
}

FRAGMENTED_KEYS = {"TENANT_SOURCE": "omnitenant"}

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
