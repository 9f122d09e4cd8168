"""The example project's demo (``make demo``) runs end to end and all its checks hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "redis_url",
    [
        pytest.param(None, id="sqlite-db-cache"),
        pytest.param("redis://127.0.0.1:6379/5", id="redis", marks=pytest.mark.redis),
    ],
)
def test_demo_command(redis_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env["CLINIC_DATA_DIR"] = str(tmp_path)  # leave example/.data/ alone
    if redis_url:
        env["REDIS_URL"] = redis_url
    proc = subprocess.run(
        [sys.executable, "example/manage.py", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for tenant in ("acme", "globex"):
        assert any(line.split()[:1] == [tenant] for line in proc.stdout.splitlines()), output
    assert "OK: all" in proc.stdout, output
    assert ("Redis at" in proc.stdout) == bool(redis_url), output
