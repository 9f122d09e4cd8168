"""Run a suite that needs Django settings of its own (django-tenants, django-omnitenant).

Such a suite cannot share a process with tests.settings (another database
engine, router, tenant models, apps that patch Django at start-up), so it runs
in a pytest subprocess. It must pass and never skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.redis_dbs import base_url

ROOT = Path(__file__).resolve().parent.parent


def run_suite(settings_module: str, path: str, *args: str) -> str:
    """Run pytest on *path* under *settings_module*; return its output (assert it passed)."""
    base_url()  # the suite's Redis, shared with the subprocess through the environment
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", path, "-p", "no:cacheprovider", "-q", "-rs", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "skipped" not in out, out[-3000:]
    return out
