"""The test suite never writes to someone else's Redis (issue 10, item 9).

``make test`` wrote to databases 3-8 and 12-15 of whatever server answered on
6379 (``REDIS_URL`` moved only host and port). Each test here runs a slice of
the suite in a pytest subprocess next to a throwaway server standing for
"the developer's Redis", and looks at what landed there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .race_support import RedisServer
from .redis_dbs import ENV_DBS, ENV_URL, ROLES

ROOT = Path(__file__).resolve().parent.parent
# A slice that writes through the ``store`` fixture's Redis.
SLICE = ["tests/test_smoke.py", "-k", "redis"]

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


@pytest.fixture
def developers_redis():
    """A server standing for the one a developer runs on their machine, with data in it."""
    with RedisServer("--databases", "16") as server:
        for db in range(16):
            server_db(server, db).set(f"mine-{db}", "precious")
        yield server


def server_db(server, db):
    import redis

    return redis.Redis(host="127.0.0.1", port=server.port, db=db, socket_timeout=5)


def keyspace(server) -> dict[int, int]:
    """Keys per database, the developer's own keys left out."""
    return {
        db: n
        for db in range(16)
        if (n := len([k for k in server_db(server, db).scan_iter() if not k.startswith(b"mine-")]))
    }


def run_slice(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in (ENV_URL, ENV_DBS)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *SLICE, "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=110,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert " passed" in out and "skipped" not in out, out[-3000:]
    return out


def test_by_default_the_suite_uses_a_redis_of_its_own(developers_redis):
    # REDIS_URL is what used to pick the server: it must not matter any more.
    run_slice(REDIS_URL=f"redis://127.0.0.1:{developers_redis.port}")
    assert keyspace(developers_redis) == {}
    for db in range(16):
        assert server_db(developers_redis, db).get(f"mine-{db}") == b"precious"


def test_an_existing_server_is_used_only_in_the_databases_named(developers_redis):
    url = f"redis://127.0.0.1:{developers_redis.port}"
    run_slice(**{ENV_URL: url, ENV_DBS: "0-3,5-12"})
    used = keyspace(developers_redis)
    assert used and set(used) <= {0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12}, used
    assert set(used) == {[0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12][list(ROLES).index("store")]}
    for db in range(16):
        assert server_db(developers_redis, db).get(f"mine-{db}") == b"precious"


def test_a_server_without_named_databases_is_refused(developers_redis):
    url = f"redis://127.0.0.1:{developers_redis.port}"
    for env, message in (
        ({ENV_URL: url}, f"{ENV_DBS} is not"),
        ({ENV_URL: url, ENV_DBS: "0-3"}, f"the suite needs {len(ROLES)}"),
    ):
        proc = subprocess.run(
            [sys.executable, "-c", "from tests.redis_dbs import redis_url; redis_url('store')"],
            cwd=ROOT,
            env={**{k: v for k, v in os.environ.items() if k not in (ENV_URL, ENV_DBS)}, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert keyspace(developers_redis) == {}


def test_no_test_picks_its_redis_from_the_environment():
    """Every test asks tests/redis_dbs.py; ``REDIS_URL`` (the demo's variable) picks nothing."""
    import re

    reads = re.compile(r"""environ(?:\.get\(|\[)\s*["']REDIS_URL["']|import\s+REDIS_URL\b""")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if reads.search(line)
    ]
    assert found == [], found
