"""Client CPU per call with the socket I/O replayed: no network, no Redis, no waiting.

Each operation runs once against the real Redis while the sockets of the
redis-py connection pool record what Redis answered; then it runs many times
with the sockets answering the recorded bytes at once (``sendall`` discards,
``recv_into`` replays). What is left is the client's own work per call:
building keys, packing and parsing RESP, decoding values, the pool, Python.
Wall time on a shared 2-core machine is too noisy to compare costs of a few
microseconds; this is steady to about 5 % between runs. Used by ``run.py``
(the "CPU, socket I/O replayed" group); depends on redis-py only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["ReplaySocket", "compare"]


class ReplaySocket:
    """Wraps a connected socket: records replies per request, then replays them."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.recording = True
        self.replies: list[list[bytes]] = []  # per request sent: the chunks received
        self._i = -1
        self._j = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sendall(self, data: Any, *args: Any) -> None:
        if self.recording:
            self.replies.append([])
            self._real.sendall(data, *args)
            return
        self._i = (self._i + 1) % len(self.replies)
        self._j = 0

    def recv_into(self, buffer: Any, *args: Any) -> int:
        if self.recording:
            n = self._real.recv_into(buffer, *args)
            self.replies[-1].append(bytes(buffer[:n]))
            return n
        chunk = self.replies[self._i][self._j]
        self._j += 1
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def recv(self, n: int, *args: Any) -> bytes:
        if self.recording:
            data = self._real.recv(n, *args)
            if not (args and args[0]):  # not a MSG_PEEK
                self.replies[-1].append(data)
            return data
        chunk = self.replies[self._i][self._j]
        self._j += 1
        return chunk


def _install(pool: Any) -> list[ReplaySocket]:
    """Wrap the sockets of every connection of redis-py *pool* (connected first)."""
    conns = [
        *getattr(pool, "_available_connections", []),
        *getattr(pool, "_in_use_connections", []),
    ]
    socks = []
    for conn in conns:
        if conn._sock is None:
            conn.connect()
        if not isinstance(conn._sock, ReplaySocket):
            conn._sock = conn._parser._sock = ReplaySocket(conn._sock)
        socks.append(conn._sock)
    return socks


def _uninstall(pool: Any) -> None:
    conns = [
        *getattr(pool, "_available_connections", []),
        *getattr(pool, "_in_use_connections", []),
    ]
    for conn in conns:
        if isinstance(conn._sock, ReplaySocket):
            conn._sock = conn._parser._sock = conn._sock._real


def compare(
    fns: dict[str, Callable[[], Any]], pool: Any, *, calls: int = 2000, rounds: int = 15
) -> dict[str, list[float]]:
    """Return, per name, the CPU µs per call of each of *rounds* rounds, fns interleaved.

    *pool* is the redis-py connection pool every fn talks through (the
    store's); each fn's replies are recorded once, then replayed.
    """
    recorded: dict[str, list[list[list[bytes]]]] = {}
    socks: list[ReplaySocket] = []
    for name, fn in fns.items():
        fn()
        fn()  # warm: connections open, memos filled
        socks = _install(pool)
        for s in socks:
            s.recording, s.replies = True, []
        fn()
        recorded[name] = [list(s.replies) for s in socks]
    try:
        for s in socks:
            s.recording = False
        found: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                for s, replies in zip(socks, recorded[name], strict=False):
                    s.replies, s._i = replies, -1
                c0 = time.process_time_ns()
                for _ in range(calls):
                    fn()
                found[name].append((time.process_time_ns() - c0) / calls / 1000)
        return found
    finally:
        _uninstall(pool)
