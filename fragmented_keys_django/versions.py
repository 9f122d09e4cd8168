"""Tag versions in a store: read many in one round trip, bump atomically, create the missing.

A version is an opaque random 62-bit int (a *token*). A bump writes a fresh
token; it never reads the old one, so concurrent bumps cannot lose each other
(each leaves a token nobody observed before it) and no version can move
"backwards" or repeat, even after the version key is evicted, deleted or the
store is flushed: a missing version is never given a default, it is treated as
"nothing cached is valid" and re-created with a fresh token. No wall-clock
time is involved.

Stores whose writes can fail silently (Django's database cache swallows
``DatabaseError``) get a read-back check: a bump is retried until the token
read back is its own, or differs from one read before the bump (a version that
was absent must read back as our own token: a concurrent creation may come
from a transaction older than the commit).

:func:`bump_steps` and :func:`ensure_steps` are protocol steps (see
:mod:`.drivers`): written once, run by :func:`bump` and :func:`abump` (and by
the entry protocol in :mod:`.protocol`) on a sync or an async adapter.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from .drivers import SLEEP, Steps, arun, run
from .exceptions import BumpFailed
from .stores import AsyncStoreAdapter, StoreAdapter, adapter_for

__all__ = ["abump", "bump", "bump_steps", "ensure_steps", "fresh_token"]

#: Write attempts on a store that drops writes (Django's database cache),
#: with jittered, growing pauses in between (about 1.3 s in all at most).
_ATTEMPTS = 10


def _backoff(attempt: int) -> float:
    """Seconds to pause before write attempt *attempt* (>= 1)."""
    return random.uniform(0.5, 1.5) * min(0.004 * 2**attempt, 0.3)


def fresh_token() -> int:
    """Return a new version token: random, positive, below 2**62."""
    return secrets.randbits(62) | 1


def _landed(key: str, before: Mapping, written: Mapping, after: Mapping, token: Any) -> bool:
    """True if the bump of *key* that wrote ``written[key]`` needs no rewrite, given the read-back.

    * Gone (culled, expired): a read misses and re-creates it with a fresh token.
    * Our token, or another one when the key existed before the bump: that one
      replaced the token seen before the bump, so it was written after that
      read, which came after the commit that asked for the bump (a concurrent
      bump; creation only fills an absent key).
    * Another token when the key was absent before the bump: it may be a
      creation by a transaction that began before the commit (the database
      cache swallows the unique violation our insert then hits, and a reader
      of an older snapshot stored its value under that token): rewrite it.

    *token* converts a written int to the adapter's representation.
    """
    if after.get(key) is None:
        return True
    now = after[key]
    if now == token(written[key]):
        return True
    return before.get(key) is not None and now != before[key]


def bump_steps(
    adapter: StoreAdapter | AsyncStoreAdapter,
    keys: Iterable[str],
    timeout: float | None,
    verify: bool,
) -> Steps:
    """Steps: write a fresh token to every key in *keys*; return ``{key: token written}``.

    One round trip (``set_tokens``: a pipeline on Redis, ``set_many``
    elsewhere). With *verify* (stores that drop failed writes) the tokens are
    read before and after, and a key whose bump did not land (see
    :func:`_landed`) is written again, with jittered backoff, up to ten times;
    then ``BumpFailed`` is raised. Store errors propagate.
    """
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    if not verify:
        tokens = {k: fresh_token() for k in keys}
        yield "set_tokens", tokens, timeout
        return tokens
    before = dict(zip(keys, (yield "read", keys, 0), strict=True))
    pending = keys
    written: dict[str, int] = {}
    for attempt in range(_ATTEMPTS):
        if attempt:
            yield SLEEP, _backoff(attempt)
        tokens = {k: fresh_token() for k in pending}
        yield "set_tokens", tokens, timeout
        written.update(tokens)
        after = dict(zip(pending, (yield "read", pending, 0), strict=True))
        pending = [k for k in pending if not _landed(k, before, tokens, after, adapter.token)]
        if not pending:
            return written
    raise BumpFailed(f"tag version bump did not land after {_ATTEMPTS} attempts: {pending}")


def ensure_steps(
    adapter: StoreAdapter | AsyncStoreAdapter,
    keys: list[str],
    found: Mapping[str, Any],
    timeout: float | None,
    mine: Mapping[str, int] | None = None,
) -> Steps:
    """Steps: create the version keys of *keys* missing from *found*; return every token.

    Missing keys get a fresh token (or the one *mine* gives) with an atomic
    create (``SET NX`` + ``GET``, one pipeline, on Redis; ``add`` per key
    elsewhere), so concurrent first callers agree on one token; a caller that
    passed *mine* created the key iff ``adapter.token(mine[key])`` is returned.
    Where creation is not one atomic round trip (a store that drops writes),
    retried with backoff. Returns ``None`` when a token still cannot be read
    back: the caller must then not store its value.
    """
    mine = mine or {}
    tokens = {k: found[k] for k in keys if found.get(k) is not None}
    attempts = 1 if adapter.atomic_create else _ATTEMPTS
    for attempt in range(attempts):
        if attempt:
            yield SLEEP, _backoff(attempt)
        missing = {k: mine.get(k) or fresh_token() for k in keys if k not in tokens}
        if missing:
            tokens.update((yield "create_tokens", missing, timeout))
        if len(tokens) == len(keys):
            return tokens
    return None


def _adapter(target: Any) -> StoreAdapter:
    """*target* itself if it is an adapter, else the adapter of that Django cache."""
    return target if hasattr(target, "create_tokens") else adapter_for(target)


def bump(target: Any, keys: Iterable[str], timeout: float | None, verify: bool) -> dict[str, int]:
    """Bump *keys* (see :func:`bump_steps`) on *target*, a store adapter or a Django cache."""
    adapter = _adapter(target)
    return run(bump_steps(adapter, keys, timeout, verify), adapter)


async def abump(
    adapter: AsyncStoreAdapter, keys: Iterable[str], timeout: float | None, verify: bool
) -> dict[str, int]:
    """Async twin of :func:`bump`, on an async adapter."""
    return await arun(bump_steps(adapter, keys, timeout, verify), adapter)
