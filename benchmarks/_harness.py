"""Timing, statistics and Redis accounting shared by ``run.py`` and ``bench_021.py``.

Depends on the standard library and redis-py only (never on either
``fragmented_keys_django``), so both virtualenvs can import it.

* :func:`interleave` / :func:`ainterleave` time several operations round-robin
  (A, B, C, A, B, C, ... with the order rotated every round) so that drift
  (CPU frequency, other load, Redis background work) hits all of them equally.
* :func:`count_redis` runs an operation outside the timed loop and reports
  Redis commands per call (``INFO commandstats`` deltas over short windows,
  the least busy window, since other clients of the server can only add) and
  round trips per call (socket writes counted in redis-py's connections: a
  command or a whole pipeline is one write, then one wait for the replies).
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "Op",
    "Row",
    "ainterleave",
    "count_redis",
    "format_table",
    "interleave",
    "machine_info",
    "percentile",
    "write_atomic",
]

HEADER = (
    "operation",
    "median µs",
    "p90 µs",
    "ratio",
    "CPU µs",
    "CPU ratio",
    "vs",
    "Redis cmds/op",
    "round trips/op",
)


@dataclass
class Op:
    """One operation to time: *fn* is called *inner* times per sample.

    *before* runs untimed before every sample (e.g. to recreate what the
    operation deletes). *fn* may be a coroutine function in :func:`ainterleave`.
    """

    key: str
    label: str
    fn: Callable[[], Any]
    inner: int = 1
    before: Callable[[], Any] | None = None


@dataclass
class Row:
    """One line of the results table (times in µs per call)."""

    key: str
    operation: str
    group: str
    median_us: float
    p90_us: float
    samples: int
    baseline: str | None = None
    ratio: float | None = None
    cmds_per_op: float | None = None
    round_trips_per_op: float | None = None
    cmds: dict[str, float] = field(default_factory=dict)
    note: str = ""
    #: Median CPU time of this process per call (``time.process_time``), µs, and its ratio.
    cpu_median_us: float | None = None
    cpu_ratio: float | None = None


def percentile(values: list[float], q: float) -> float:
    """Return the *q*-th percentile (0-100) of *values*, linear interpolation."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _rows(
    group: str,
    ops: list[Op],
    samples: dict[str, list[float]],
    baseline: str | None,
    cpu: dict[str, list[float]] | None = None,
) -> list[Row]:
    rows = []
    for op in ops:
        s = samples[op.key]
        row = Row(op.key, op.label, group, percentile(s, 50), percentile(s, 90), len(s))
        if cpu is not None:
            row.cpu_median_us = percentile(cpu[op.key], 50)
        rows.append(row)
    if baseline is not None:
        base = next(r for r in rows if r.key == baseline)
        for r in rows:
            r.baseline = base.operation
            r.ratio = r.median_us / base.median_us if base.median_us else None
            if r.cpu_median_us is not None and base.cpu_median_us:
                r.cpu_ratio = r.cpu_median_us / base.cpu_median_us
    return rows


def interleave(
    group: str, ops: list[Op], iterations: int, *, baseline: str | None = None, warmup: int = 3
) -> list[Row]:
    """Time *ops* round-robin for *iterations* rounds; return one :class:`Row` each.

    *baseline* is the key of the op the others are divided by (same run,
    same rounds). Each sample records wall time and this process's CPU time
    (``time.process_time_ns``: every thread of the process, not the Redis
    server's), each reported with its median and ratio.
    """
    perf, cpu_clock = time.perf_counter_ns, time.process_time_ns
    for op in ops:
        for _ in range(warmup):
            if op.before:
                op.before()
            op.fn()
    samples: dict[str, list[float]] = {op.key: [] for op in ops}
    cpu: dict[str, list[float]] = {op.key: [] for op in ops}
    n = len(ops)
    for i in range(iterations):
        for j in range(n):
            op = ops[(i + j) % n]
            if op.before:
                op.before()
            fn, inner = op.fn, op.inner
            if inner == 1:
                c0, t0 = cpu_clock(), perf()
                fn()
                t1, c1 = perf(), cpu_clock()
            else:
                r = range(inner)
                c0, t0 = cpu_clock(), perf()
                for _ in r:
                    fn()
                t1, c1 = perf(), cpu_clock()
            samples[op.key].append((t1 - t0) / inner / 1000)
            cpu[op.key].append((c1 - c0) / inner / 1000)
    return _rows(group, ops, samples, baseline, cpu)


async def ainterleave(
    group: str, ops: list[Op], iterations: int, *, baseline: str | None = None, warmup: int = 3
) -> list[Row]:
    """:func:`interleave` inside one running event loop; coroutine functions are awaited."""
    perf, cpu_clock = time.perf_counter_ns, time.process_time_ns
    is_async = {op.key: inspect.iscoroutinefunction(op.fn) for op in ops}
    for op in ops:
        for _ in range(warmup):
            r = op.fn()
            if is_async[op.key]:
                await r
    samples: dict[str, list[float]] = {op.key: [] for op in ops}
    cpu: dict[str, list[float]] = {op.key: [] for op in ops}
    n = len(ops)
    for i in range(iterations):
        for j in range(n):
            op = ops[(i + j) % n]
            if op.before:
                op.before()
            fn = op.fn
            if is_async[op.key]:
                c0, t0 = cpu_clock(), perf()
                await fn()
                t1, c1 = perf(), cpu_clock()
            else:
                c0, t0 = cpu_clock(), perf()
                fn()
                t1, c1 = perf(), cpu_clock()
            samples[op.key].append((t1 - t0) / 1000)
            cpu[op.key].append((c1 - c0) / 1000)
    return _rows(group, ops, samples, baseline, cpu)


# -- Redis accounting ----------------------------------------------------------


class _RoundTrips:
    """Counts socket writes of redis-py connections (sync and asyncio), process-wide."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._patched: list[tuple[type, Any]] = []

    def __enter__(self) -> _RoundTrips:
        import redis.connection as sync_conn

        classes: list[type] = [sync_conn.AbstractConnection]
        try:
            import redis.asyncio.connection as async_conn

            classes.append(async_conn.AbstractConnection)
        except ImportError:  # pragma: no cover - redis-py without asyncio support
            async_conn = None
        for cls in classes:
            orig = cls.__dict__["send_packed_command"]
            self._patched.append((cls, orig))
            if inspect.iscoroutinefunction(orig):

                async def asend(conn: Any, *a: Any, _orig: Any = orig, **kw: Any) -> Any:
                    self._bump()
                    return await _orig(conn, *a, **kw)

                cls.send_packed_command = asend
            else:

                def send(conn: Any, *a: Any, _orig: Any = orig, **kw: Any) -> Any:
                    self._bump()
                    return _orig(conn, *a, **kw)

                cls.send_packed_command = send
        return self

    def _bump(self) -> None:
        with self._lock:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        for cls, orig in self._patched:
            cls.send_packed_command = orig
        self._patched.clear()


def commandstats(client: Any) -> dict[str, int]:
    """Return ``{command: calls}`` from ``INFO commandstats`` (``info`` itself excluded)."""
    stats = client.info("commandstats")
    out = {}
    for name, v in stats.items():
        cmd = name.removeprefix("cmdstat_")
        if cmd != "info":
            out[cmd] = int(v["calls"])
    return out


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def count_redis(
    client: Any,
    op: Op,
    calls: int = 10,
    *,
    windows: int = 20,
    runner: Callable[[Callable[[], Any]], Any] | None = None,
) -> tuple[float, float, dict[str, float]]:
    """Return ``(commands/call, round trips/call, {command: calls/call})`` for *op*.

    *client* is a redis-py client on the same server. *op* runs *calls* times
    in each of *windows* windows, each bracketed by ``INFO commandstats``;
    commandstats are server-wide, so other clients can only add to a window,
    and the window with the fewest commands is reported. Round trips are
    counted in this process (exact) over all windows. *runner* runs a
    callable (used to await coroutines inside one event loop).
    """
    run = runner or (lambda f: f())
    best: dict[str, int] | None = None
    trips = 0
    for _ in range(windows):
        if op.before is not None:
            op.before()
        before = commandstats(client)
        with _RoundTrips() as rt:
            for _ in range(calls):
                run(op.fn)
        after = commandstats(client)
        trips += rt.count
        total = _delta(before, after)
        if best is None or sum(total.values()) < sum(best.values()):
            best = total
    assert best is not None
    per = {k: v / calls for k, v in sorted(best.items())}
    return sum(best.values()) / calls, trips / (calls * windows), per


def attach_counts(
    rows: Iterable[Row], counts: dict[str, tuple[float, float, dict[str, float]]]
) -> None:
    """Fill ``cmds_per_op``, ``round_trips_per_op`` and ``cmds`` of *rows* from *counts*."""
    for r in rows:
        if r.key in counts:
            r.cmds_per_op, r.round_trips_per_op, r.cmds = counts[r.key]


# -- output ---------------------------------------------------------------------


def _num(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def table_lines(rows: list[Row], markdown: bool = False) -> list[str]:
    """Return the results table as text lines (plain aligned, or markdown)."""
    body = [
        (
            r.operation,
            _num(r.median_us, ".1f"),
            _num(r.p90_us, ".1f"),
            _num(r.ratio, ".2f") + ("x" if r.ratio is not None else ""),
            _num(r.cpu_median_us, ".1f"),
            _num(r.cpu_ratio, ".2f") + ("x" if r.cpu_ratio is not None else ""),
            r.baseline or "",
            _num(r.cmds_per_op, ".2f"),
            _num(r.round_trips_per_op, ".2f"),
        )
        for r in rows
    ]
    return grid(HEADER, body, markdown, right=range(1, len(HEADER)), skip_right={6})


def grid(
    header: tuple[str, ...],
    body: list[tuple[str, ...]],
    markdown: bool,
    right: Iterable[int] = (),
    skip_right: set[int] | frozenset[int] = frozenset(),
) -> list[str]:
    """Format *header* and *body* as an aligned text table or a markdown table."""
    right_cols = set(right) - set(skip_right)
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append(
            "|" + "|".join("---:" if i in right_cols else "---" for i in range(len(header))) + "|"
        )
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return lines
    widths = [
        max(len(header[i]), *(len(row[i]) for row in body)) if body else len(header[i])
        for i in range(len(header))
    ]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right_cols else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in body)]


def format_table(rows: list[Row], markdown: bool = False) -> str:
    return "\n".join(table_lines(rows, markdown))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(client: Any, packages: Iterable[str] = ()) -> dict[str, Any]:
    """Describe the machine: CPU model, cores, Python and package versions, Redis server."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux: the CPU model stays unknown in the report
        cpu = cpu or "unknown"
    server = client.info("server")
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis_server": server.get("redis_version"),
        "redis_url": None,
    }
    for dist in ("Django", "redis", "hiredis", "django-redis", *packages):
        info[dist] = _version(dist)
    return info


def machine_lines(info: dict[str, Any]) -> list[str]:
    return [
        f"- CPU: {info['cpu']} ({info['cores']} cores), {info['os']}",
        f"- Python {info['python']}, Django {info['Django']}, redis-py {info['redis']}, "
        f"hiredis {info['hiredis']}, django-redis {info['django-redis']}",
        f"- Redis server {info['redis_server']} at {info['redis_url']} (loopback)",
    ]


def write_atomic(path: Path, text: str) -> None:
    """Write *text* to *path* through a ``.tmp`` file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def dump_json(path: Path, payload: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def redis_memory(client: Any) -> dict[str, int]:
    """Return ``used_memory`` (server-wide), key count and summed ``MEMORY USAGE`` of the DB."""
    used = int(client.info("memory")["used_memory"])
    keys = list(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    sizes = pipe.execute() if keys else []
    return {"used_memory": used, "keys": len(keys), "db_bytes": int(sum(s or 0 for s in sizes))}


def memory_scenario(
    frag: Any, client: Any, n: int, value: Any, timeout: int = 3600
) -> dict[str, Any]:
    """Set *n* entries depending on one tag, bump it, set them all again; report Redis memory.

    *frag* is a fragmented alias of either package (``set_with_tags``,
    ``get_with_tags`` and ``invalidate_tags`` have the same signatures);
    *client* talks to the store's DB, which must be empty apart from what
    *frag* writes. Returns key counts and bytes after the first fill and
    after the refill: what the refill adds is what an invalidation leaves
    behind until the TTL (*timeout*) expires it.
    """
    tags = [("Mem", "1")]
    client.flushdb()
    empty = redis_memory(client)
    for i in range(n):
        frag.set_with_tags(f"mem:{i}", value, tags, timeout=timeout)
    filled = redis_memory(client)
    frag.invalidate_tags(tags)
    stale = frag.get_with_tags("mem:0", tags)
    for i in range(n):
        frag.set_with_tags(f"mem:{i}", value, tags, timeout=timeout)
    refilled = redis_memory(client)
    hits = sum(frag.get_with_tags(f"mem:{i}", tags) == value for i in range(0, n, max(1, n // 100)))
    return {
        "entries": n,
        "value_bytes": len(value),
        "invalidated_read_missed": stale is None,
        "refill_sample_hits": f"{hits}/{len(range(0, n, max(1, n // 100)))}",
        "empty": empty,
        "after_fill": filled,
        "after_invalidate_and_refill": refilled,
        "keys_added_by_refill": refilled["keys"] - filled["keys"],
        "db_bytes_added_by_refill": refilled["db_bytes"] - filled["db_bytes"],
        "used_memory_added_by_refill": refilled["used_memory"] - filled["used_memory"],
    }


def memory_lines(m: dict[str, Any]) -> list[str]:
    """Describe a :func:`memory_scenario` result in a few lines."""
    f, r = m["after_fill"], m["after_invalidate_and_refill"]
    return [
        f"{m['entries']} entries of {m['value_bytes']} B on one tag; bump the tag; set all again:",
        f"  keys in DB        after fill {f['keys']:>8}   after bump+refill {r['keys']:>8}   (+{m['keys_added_by_refill']})",
        f"  MEMORY USAGE sum  after fill {f['db_bytes']:>8}   after bump+refill {r['db_bytes']:>8}   "
        f"(+{m['db_bytes_added_by_refill']} B left behind)",
        f"  used_memory       after fill {f['used_memory']:>8}   after bump+refill {r['used_memory']:>8}   "
        f"({m['used_memory_added_by_refill']:+d} B, server-wide)",
        f"  read after bump missed: {m['invalidated_read_missed']}; refill sample hits: {m['refill_sample_hits']}",
    ]
