"""The benchmark harness runs end to end (``benchmarks/run.py --quick --no-write``).

No timing is asserted here: only that the script exits 0 and prints its table.
Round-trip counts are asserted in ``test_backend.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_dbs import base_url, redis_db

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
@pytest.mark.timeout(90)
def test_benchmark_quick_run_prints_the_table():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["REDIS_URL"] = base_url()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--no-write",
            "--db",
            str(redis_db("bench")),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = next((line for line in proc.stdout.splitlines() if line.startswith("operation")), "")
    for column in ("median µs", "p90 µs", "ratio", "Redis cmds/op", "round trips/op"):
        assert column in header, proc.stdout[:2000]
    assert "get_with_tags, 1 tag (warm)" in proc.stdout
    assert "left behind" in proc.stdout
