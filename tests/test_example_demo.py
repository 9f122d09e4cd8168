"""The example project's demo (``make demo``) runs end to end and all its checks hold."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.race_support import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "on_redis",
    [
        pytest.param(None, id="sqlite-db-cache"),
        pytest.param(True, id="redis", marks=pytest.mark.redis),
    ],
)
def test_demo_command(on_redis, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env["CLINIC_DATA_DIR"] = str(tmp_path)  # leave example/.data/ alone
    with contextlib.ExitStack() as stack:
        if on_redis:
            # The demo also uses the next two databases (initech's stores): a
            # throwaway server of its own, whatever FKD_TEST_REDIS_DBS names.
            server = stack.enter_context(RedisServer())
            env["REDIS_URL"] = f"redis://127.0.0.1:{server.port}/5"
        _run_demo(on_redis, env)


def _run_demo(on_redis, env):
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
    lines = proc.stdout.splitlines()
    assert len(lines) < 75, output  # compact
    # The per-tenant report: one row per tenant, between its header and the verdict.
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["tenant", "requests"])
    rows = [line.split()[0] for line in lines[start + 1 :] if line.startswith("   ")]
    assert rows == ["acme", "globex", "initech"], output
    # The same counts from the Prometheus registry (the "prometheus" extra, in the dev venv).
    prom = next(i for i, line in enumerate(lines) if "from the Prometheus registry" in line)
    assert [line.split()[0] for line in lines[prom + 2 : prom + 5]] == rows, output
    assert "OK: all" in proc.stdout, output
    assert ("Redis at" in proc.stdout) == bool(on_redis), output
    # initech's own store, then the one its Tenant row moves it to, live.
    if on_redis:
        backend, own, moved = "RedisCache", "Redis DB 6", "Redis DB 7"
    else:
        backend, own, moved = "DatabaseCache", "table initech_cache", "table initech_cache_v2"
    for where in (own, moved):
        assert f"initech store 'initech'  {backend}, {where}\n" in proc.stdout, output
    assert f"now names {moved}; no restart" in proc.stdout, output
