"""The two drivers of the cache protocol: one runs it on a sync adapter, the other awaits an async one.

The protocol (:mod:`.protocol`, :mod:`.versions`) is written once, as
generators that *yield requests* and receive their results (the sans-I/O
style of h11): a request is a tuple ``(method name, *arguments)`` naming a
:class:`~.stores.base.StoreAdapter` method (one round trip), or one of the
driver's own steps:

* :data:`SLEEP` ``(seconds)``: wait (``time.sleep`` / ``asyncio.sleep``);
* :data:`COMPUTE` ``(callable, frame)``: call the caller's loader; the async
  driver awaits its result when it is awaitable. *frame* (a
  :class:`~.deps.Frame`, or ``None``) is the computation's own: current
  (:func:`.deps.current`) while the loader runs, so the tagged reads it makes
  are recorded there;
* :data:`IN_TRANSACTION` ``(callable, *arguments)``: run sync code where the
  caller's database transaction lives: here for the sync driver; for async
  code called through ``async_to_sync`` from a thread, in that thread (the one
  thread hop the async path makes, see :mod:`.transactions`).

An exception raised by a request (a store error, the loader's own) is thrown
into the generator at its ``yield``, so the protocol's ``try``/``finally``
blocks (releasing a stampede lock) run, and may still yield requests, on both
drivers alike. Measured (``make bench``, the ``driver`` rows): about 0.5 µs of CPU
per operation of one request over calling the adapter directly.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Generator
from typing import Any

from .deps import _current
from .stores.base import AsyncStoreAdapter, StoreAdapter
from .transactions import caller_thread, in_caller_thread

__all__ = ["COMPUTE", "IN_TRANSACTION", "SLEEP", "Steps", "arun", "run"]

SLEEP = "sleep"
COMPUTE = "compute"
IN_TRANSACTION = "in_transaction"

#: A protocol operation: yields requests, receives their results, returns its own.
Steps = Generator[tuple, Any, Any]


def run(steps: Steps, adapter: StoreAdapter) -> Any:
    """Run *steps* to completion on *adapter*, in this thread; return what they return."""
    send = steps.send
    result: Any = None
    while True:
        try:
            request = send(result)
        except StopIteration as stop:
            return stop.value
        op = request[0]
        try:
            if op is SLEEP:
                time.sleep(request[1])
                result = None
            elif op is COMPUTE:
                token = _current.set(request[2])
                try:
                    result = request[1]()
                finally:
                    _current.reset(token)
            elif op is IN_TRANSACTION:
                result = request[1](*request[2:])
            else:
                result = getattr(adapter, op)(*request[1:])
        except BaseException as exc:  # into the protocol: its finally blocks run, then it re-raises
            send = _thrower(steps, exc)
            result = None
            continue
        send = steps.send


async def arun(steps: Steps, adapter: AsyncStoreAdapter) -> Any:
    """Await *steps* to completion on *adapter*; return what they return."""
    send = steps.send
    result: Any = None
    while True:
        try:
            request = send(result)
        except StopIteration as stop:
            return stop.value
        op = request[0]
        try:
            if op is SLEEP:
                await asyncio.sleep(request[1])
                result = None
            elif op is COMPUTE:
                token = _current.set(request[2])
                try:
                    result = request[1]()
                    if inspect.isawaitable(result):
                        result = await result
                finally:
                    _current.reset(token)
            elif op is IN_TRANSACTION:
                if caller_thread():
                    result = await in_caller_thread(request[1], *request[2:])
                else:
                    result = request[1](*request[2:])
            else:
                result = await getattr(adapter, op)(*request[1:])
        except BaseException as exc:  # as in run()
            send = _thrower(steps, exc)
            result = None
            continue
        send = steps.send


def _thrower(steps: Steps, exc: BaseException) -> Any:
    """A one-shot ``send`` that throws *exc* into *steps* instead."""

    def throw(_: Any) -> Any:
        return steps.throw(exc)

    return throw
