"""Settings of the clinic example: three tenants sharing one SQLite database.

Tenancy style: *shared database*. Every tenant-owned row carries a
``tenant_id`` column; the tenant of a request comes from its ``Host`` header
(``clinic.middleware.TenantMiddleware``), and ``fragmented_keys_django`` keeps
each tenant's cache entries and tag versions apart.

The cache store is Django's database cache in the same SQLite file, so the demo
needs no server. Set ``REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/5``) to put
the store on Redis instead (django-redis); nothing else changes.

A tenant may have a store of its own: ``TENANT_STORES`` below reads it from the
``clinic.Tenant`` table (``config["cache_config"]``), and saving a tenant row
switches its store live. The demo gives ``initech`` its own store.
"""

import os
from importlib.util import find_spec
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent  # example/

SECRET_KEY = "clinic-example-not-a-secret"
DEBUG = os.environ.get("CLINIC_DEBUG", "1") == "1"

# Tenant hosts (TenantMiddleware) and names. The rows of clinic.Tenant (seeded by the
# demo from this dict) hold each tenant's cache config.
TENANTS = {
    "acme": {"name": "Acme Health", "host": "acme.clinic.test"},
    "globex": {"name": "Globex Care", "host": "globex.clinic.test"},
    "initech": {"name": "Initech Medical", "host": "initech.clinic.test"},
}

# Any *.clinic.test host gets through; TenantMiddleware answers 404 for one that
# is not a tenant (and for localhost, with a hint).
ALLOWED_HOSTS = [".clinic.test", "localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "fragmented_keys_django",  # system checks for the CACHES entry below
    "clinic.apps.ClinicConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "clinic.middleware.TenantMiddleware",
    "clinic.middleware.CacheStatusMiddleware",
]

ROOT_URLCONF = "clinic_site.urls"
WSGI_APPLICATION = "clinic_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {},
    }
]

# example/.data/ is gitignored; `manage.py demo` deletes and rebuilds the file.
DATA_DIR = Path(os.environ.get("CLINIC_DATA_DIR", BASE_DIR / ".data"))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "clinic.sqlite3",
    }
}

REDIS_URL = os.environ.get("REDIS_URL", "")

if REDIS_URL:
    _store = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        # Our keys only: the demo deletes "clinic-demo:*" on start, nothing else.
        "KEY_PREFIX": "clinic-demo",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
    }
else:
    _store = {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "clinic_cache",  # created by `manage.py createcachetable`
    }

CACHES = {
    # The store: holds the entries and the tag versions.
    "default": _store,
    # The tag-versioned, tenant-scoped view of that store.
    "fragmented": {
        "BACKEND": "fragmented_keys_django.cache_backends.django_backend.FragmentedKeysCacheBackend",
        "CACHE_NAME": "default",
        "PREFIX": "clinic",
        "OPTIONS": {
            # A tenant whose Tenant.config["cache_config"] is set gets its own store
            # (that config merged over "default"'s); the others share "default".
            # Saving or deleting a Tenant row drops that tenant's store in this
            # process and bumps a config version that other processes (runserver
            # workers) re-read every TENANT_CONFIG_RECHECK seconds.
            "TENANT_STORES": {
                "MODEL": "clinic.Tenant",
                "ID_FIELD": "tenant_id",
                "CONFIG_FIELD": "config",
                "KEY": "cache_config",
            },
            "TENANT_CONFIG_RECHECK": 0.5,
        },
    },
}

# Prometheus metrics, per tenant: `make demo` installs the "prometheus" extra and the
# demo prints them from prometheus_client's registry (off when it is not installed).
FRAGMENTED_KEYS = {
    "PROMETHEUS": find_spec("prometheus_client") is not None,
    "PROMETHEUS_TENANT_LABELS": True,
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
