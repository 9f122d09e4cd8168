"""A new project that follows the README has a working first day (issue 10, "Done when").

The README's two recommended snippets (``TENANT_REQUIRED`` settings and a
registered ``User``) crashed ``createsuperuser`` after the user row was
committed. Here a project is written from the README's blocks verbatim (its
Redis URL pointed at the suite's Redis), then, in its own process:
``migrate`` (with a data migration), ``createsuperuser``, ``check``, an admin
login and admin edits of registered models through Django's test client, and
tenant pages cached per tenant that follow those edits
(``tests/first_day/run.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.first_day.project import ROOT, write_project
from tests.redis_dbs import redis_url

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


def test_migrate_createsuperuser_and_the_admin_work_on_the_readme_settings(tmp_path):
    write_project(tmp_path, redis_url("store"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.first_day.run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "FIRST DAY OK" in proc.stdout, out[-5000:]
