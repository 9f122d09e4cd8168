#!/usr/bin/env python
"""ASGI load benchmark: req/s of a view doing one cache read, under uvicorn, per system.

    .venv/bin/python benchmarks/asgi_load.py                 # make bench-asgi
    .venv/bin/python benchmarks/asgi_load.py --quick         # smoke run

One uvicorn worker serves ``benchmarks/asgiapp`` (Django's ASGI handler) on
loopback, pinned to one core with ``taskset``; a bounded load generator
(``wrk`` if installed, else the asyncio client below: each connection sends a
request, waits for the answer, sends the next) runs on the other core, with
50 and 200 connections. The systems are views reading one 1 KB value:
no cache (the floor), django-redis ``aget``, ``aget_with_tags`` and a
``@tagged_cache`` hit; they are alternated in rounds (the order rotated each
round) so that drift hits all alike. Reported per system and concurrency: the
median req/s of the rounds and their spread, the ratio to django-redis
``aget``, and the worker's CPU time per request (``/proc/<pid>/stat``).

Redis: ``$REDIS_URL`` (default ``redis://127.0.0.1:6379``), database ``--db``
(default 11; only the benchmark's keys are written). Results go to
``benchmarks/results/asgi.md`` and ``asgi.json`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SYSTEMS = {
    "none": ("/none/", "no cache (floor)"),
    "django_redis": ("/django-redis/", "django-redis aget"),
    "tagged": ("/tagged/", "aget_with_tags, 1 tag"),
    "decorated": ("/decorated/", "@tagged_cache hit (async)"),
}
BASELINE = "django_redis"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cores() -> tuple[str, str]:
    """The server's core and the load generator's: the first two this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return str(allowed[0]), str(allowed[0])
    return str(allowed[0]), str(allowed[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- load generators ------------------------------------------------------------


def wrk(port: int, path: str, connections: int, seconds: float, core: str) -> int:
    """Run ``wrk`` on *core*; return the number of requests completed."""
    threads = 1
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
    ]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(["taskset", "-c", core, *cmd], capture_output=True, text=True, check=True)
    found = re.search(r"(\d+) requests in", out.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out.stdout)
    if found is None or errors:
        raise RuntimeError(f"wrk failed or saw errors:\n{out.stdout}\n{out.stderr}")
    return int(found.group(1))


async def _client(port: int, path: str, deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected response: {head[:80]!r}")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            await reader.readexactly(length)
            counts[0] += 1
    finally:
        writer.close()


def pyload(port: int, path: str, connections: int, seconds: float) -> int:
    """A bounded asyncio load generator (when ``wrk`` is missing); return requests completed."""
    counts = [0]

    async def main() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, path, deadline, counts) for _ in range(connections)))

    asyncio.run(main())
    return counts[0]


def load(port: int, path: str, connections: int, seconds: float, core: str) -> int:
    if shutil.which("wrk"):
        return wrk(port, path, connections, seconds, core)
    os.sched_setaffinity(0, {int(core)})
    return pyload(port, path, connections, seconds)


# -- the server ------------------------------------------------------------------


def start_server(port: int, core: str, redis_url: str, pool: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "FKD_BENCH_REDIS": redis_url,
        "FKD_BENCH_POOL": str(pool),
        "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    cmd = [
        "taskset",
        "-c",
        core,
        sys.executable,
        "-m",
        "uvicorn",
        "asgiapp.app:application",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "asyncio",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=str(HERE))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("uvicorn did not start")


def prepare(redis_url: str) -> None:
    """Store the values the views read (in this process, same settings)."""
    os.environ["FKD_BENCH_REDIS"] = redis_url
    sys.path.insert(0, str(HERE))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asgiapp.settings")
    from asgiapp import app

    app.prepare()


def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = f"{os.environ.get('REDIS_URL', 'redis://127.0.0.1:6379').rstrip('/')}/{args.db}"
    prepare(redis_url)
    server_core, load_core = cores()
    port = free_port()
    proc = start_server(port, server_core, redis_url, args.pool)
    results: dict[str, Any] = {}
    try:
        for path, _ in SYSTEMS.values():  # warm every view (connections, the decorated miss)
            load(port, path, 10, 1, load_core)
        for connections in args.connections:
            rps: dict[str, list[float]] = {k: [] for k in SYSTEMS}
            cpu: dict[str, list[float]] = {k: [] for k in SYSTEMS}
            names = list(SYSTEMS)
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    path = SYSTEMS[name][0]
                    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                    done = load(port, path, connections, args.seconds, load_core)
                    c1, t1 = cpu_seconds(proc.pid), time.monotonic()
                    rps[name].append(done / (t1 - t0))
                    cpu[name].append((c1 - c0) / done * 1e6)
                print(
                    f"  {connections} connections, round {r + 1}/{args.rounds}: "
                    + ", ".join(f"{n} {rps[n][-1]:.0f}/s" for n in names),
                    file=sys.stderr,
                    flush=True,
                )
            results[str(connections)] = {"rps": rps, "cpu_us_per_request": cpu}
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "server": f"uvicorn (1 worker, asyncio loop, h11) on core {server_core}",
        "load": ("wrk -t1" if shutil.which("wrk") else "asyncio client") + f" on core {load_core}",
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "pool": f"redis.BlockingConnectionPool, max_connections={args.pool}",
        "results": results,
    }


def table(payload: dict[str, Any]) -> list[str]:
    lines = [
        "| connections | view | req/s median | spread (min-max) | ratio to django-redis aget"
        " | worker CPU µs/request |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for connections, found in payload["results"].items():
        base = statistics.median(found["rps"][BASELINE])
        for name, (_, label) in SYSTEMS.items():
            values = found["rps"][name]
            med = statistics.median(values)
            cpu = statistics.median(found["cpu_us_per_request"][name])
            lines.append(
                f"| {connections} | {label} | {med:.0f} | {min(values):.0f}-{max(values):.0f} | "
                f"{med / base:.2f}x | {cpu:.0f} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/")
    parser.add_argument("--db", type=int, default=11, help="Redis database, default 11")
    parser.add_argument("--pool", type=int, default=100, help="connections per pool, default 100")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per concurrency")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per run")
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[50, 200], help="concurrencies"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 7)
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    payload = run(args)
    lines = table(payload)
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "asgi.json").write_text(json.dumps(payload, indent=2) + "\n")
        md = [
            "# ASGI load benchmark",
            "",
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Server: {payload['server']}; load: "
            f"{payload['load']}; {payload['rounds']} rounds of {payload['seconds_per_run']} s per "
            f"view and concurrency, views alternated; store pool: {payload['pool']}.",
            "",
            *lines,
        ]
        (RESULTS / "asgi.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
