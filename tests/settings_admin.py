"""Settings of the operator-page suite (tests/admin_suite), run in its own pytest process.

The Django admin (with sessions, messages, static files) and the Prometheus
metrics per tenant, over the store named by ``FKD_ADMIN_STORE``: ``db``
(Django's database cache) or ``redis``.
"""

import os

from tests.conftest import store_settings
from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, TEMPLATES

ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin",
    *INSTALLED_APPS,
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.admin_suite.urls"
STATIC_URL = "/static/"
TEMPLATES = [
    {
        **TEMPLATES[0],
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
CACHES = store_settings(os.environ.get("FKD_ADMIN_STORE", "db"))
FRAGMENTED_KEYS = {"PROMETHEUS": True, "PROMETHEUS_TENANT_LABELS": True}
