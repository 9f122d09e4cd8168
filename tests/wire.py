"""Round trips counted on the wire: a TCP proxy between a client and a real Redis.

A round trip is the client speaking after the server answered (or for the
first time): a command sent alone, or a whole pipeline, is one; a command that
waits for the reply of the previous one is another. The proxy forwards bytes
unchanged in both directions and counts those turns, whatever the client is
(redis-py, ``redis.asyncio``, a thread or an event loop): the count is what
the network sees.

    with RoundTripProxy("127.0.0.1", 6379) as proxy:
        url = proxy.url(db=13)
        proxy.reset()
        ...                 # talk to Redis through url
        proxy.count         # round trips since reset()
"""

from __future__ import annotations

import select
import socket
import threading

__all__ = ["RoundTripProxy"]


class RoundTripProxy:
    """Forward one local port to *host*:*port*, counting round trips (see the module)."""

    def __init__(self, host: str, port: int, *, silent_on_close: bool = False) -> None:
        self.target = (host, port)
        # True: when the server side closes, the client's socket stays open and silent
        # (a crashed host: no FIN reaches the client), as a black-holed network does.
        self.silent_on_close = silent_on_close
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._count = 0
        self._stop = False
        self._threads: list[threading.Thread] = []

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def reset(self) -> None:
        with self._lock:
            self._count = 0

    def __enter__(self) -> RoundTripProxy:
        thread = threading.Thread(target=self._accept, daemon=True, name="round-trip-proxy")
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._listener.close()
        for sock in self._held:
            sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed: the proxy stops
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:  # the server is down: refuse this client
                client.close()
                continue
            thread = threading.Thread(target=self._pump, args=(client, server), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        answered = True  # the client's first words are a round trip
        try:
            while not self._stop:
                ready, _, _ = select.select([client, server], [], [], 0.5)
                for sock in ready:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        if sock is server and self.silent_on_close:
                            self._held.append(client)
                            client = None  # kept open, never answered
                        return
                    if sock is client:
                        if answered:
                            with self._lock:
                                self._count += 1
                            answered = False
                        server.sendall(data)
                    else:
                        answered = True
                        client.sendall(data)
        finally:
            if client is not None:
                client.close()
            server.close()
