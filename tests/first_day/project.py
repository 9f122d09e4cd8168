"""A new project built from the README, as a newcomer writes it (used by tests/test_first_day.py).

:func:`write_project` writes ``settings.py`` (the Django parts a new project
has, then the README's settings block verbatim, its Redis URL pointed at the
suite's Redis) and ``myapp/apps.py`` (the README's block verbatim) into a
directory; :mod:`tests.first_day.run` then drives the commands and the admin.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
README = ROOT / "README.md"
README_REDIS = "redis://127.0.0.1:6379/1"

BASE = """
SECRET_KEY = "first-day"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "myapp",
    "tests.first_day.clinics",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "fragmented_keys_django.tenancy.middleware.TenantMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.first_day.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DB_PATH}}
# The tenancy docs' middleware recipe for an API behind a header, with its access
# check, and the admin whitelisted (it runs outside any tenant).
FRAGMENTED_KEYS_MIDDLEWARE = {
    "RESOLVER": "fragmented_keys_django.tenancy.resolvers.HeaderResolver",
    "WHITELIST_ROUTES": {"admin/*"},
    "TENANT_ACCESS": "tests.first_day.access.may_act_as",
}
"""


def readme_block(first_line: str) -> str:
    """The README's python block whose first line starts with *first_line*."""
    text = README.read_text()
    found = re.search(r"```python\n(" + re.escape(first_line) + r"[^\n]*\n.*?)```", text, re.S)
    assert found, f"README.md has no python block starting with {first_line!r}"
    return found.group(1)


def write_project(where: Path, redis_url: str) -> None:
    """Write the project into *where* (settings module ``settings``, app ``myapp``)."""
    settings = readme_block("# settings.py")
    assert README_REDIS in settings, "the README's Redis URL moved: update README_REDIS"
    settings = settings.replace(README_REDIS, redis_url)
    prefix = f"fkd-first-day-{uuid.uuid4().hex[:8]}"
    (where / "settings.py").write_text(
        f"DB_PATH = {str(where / 'db.sqlite3')!r}\n"
        + BASE
        + "\n# -- README.md, verbatim --\n"
        + settings
        + f'\n# The suite shares its Redis: a key prefix of its own.\nCACHES["default"]["KEY_PREFIX"] = {prefix!r}\n'
    )
    app = where / "myapp"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "apps.py").write_text(readme_block("# myapp/apps.py"))
