"""What every session store shares: the turn, the store interface, its error, owner-scoped views.

A session id is the ``activity_id`` of a Sentient request. History holds at most
``max_turns`` messages (oldest dropped) and expires ``ttl`` after its last append
(a read does not extend it).

A session belongs to the principal that created it: requests reach the store
through :class:`OwnedSessions`, which keys every session by its owner (API key
id or JWT subject) as well as by its id. Another principal naming the same
activity id gets a fresh, separate session of its own, never the owner's
history. (Anonymous callers all share the one anonymous principal: with
anonymous access on, nothing tells two of them apart.)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent_runtime import metrics

MAX_SESSION_ID_LENGTH = 256
# A stored key is the owner's digest (32 hex), a colon and the caller's session id.
MAX_SESSION_KEY_LENGTH = MAX_SESSION_ID_LENGTH + 33


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation history."""

    role: str
    content: str


class SessionStore(Protocol):
    """Where conversation history lives."""

    max_turns: int

    async def get(self, session_id: str) -> list[Turn]:
        """History of ``session_id``, oldest first (empty when unknown or expired)."""
        ...

    async def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add turns, drop the oldest beyond ``max_turns``, refresh the TTL."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class SessionStoreError(Exception):
    """The backing store failed."""


def valid_key(session_id: str) -> bool:
    """Whether ``session_id`` (an owner-prefixed key) may be stored: not empty, not too long."""
    return 0 < len(session_id) <= MAX_SESSION_KEY_LENGTH


def owner_digest(kind: str, principal_id: str) -> str:
    """A short fixed-length name of a session owner (a hash: JWT subjects can be long)."""
    return hashlib.sha256(f"{kind}\0{principal_id}".encode()).hexdigest()[:32]


@functools.cache
def _series(store: str, operation: str) -> tuple[Any, Any]:
    # Label lookups cached: this runs twice per /assist request.
    return (
        metrics.SESSION_STORE_DURATION.labels(store, operation),
        metrics.SESSION_STORE_ERRORS.labels(store, operation),
    )


@contextlib.contextmanager
def _measured(store: SessionStore, operation: str) -> Iterator[None]:
    """Time one load or save of ``store`` and count it when it fails."""
    duration, errors = _series(getattr(store, "kind", "custom"), operation)
    start = time.perf_counter()
    try:
        yield
    except SessionStoreError:
        errors.inc()
        raise
    finally:
        duration.observe(time.perf_counter() - start)


class OwnedSessions:
    """The sessions of one principal: a view of a store with every id prefixed by its owner."""

    __slots__ = ("_prefix", "max_turns", "store")

    def __init__(self, store: SessionStore, kind: str, principal_id: str) -> None:
        self.store = store
        self.max_turns = store.max_turns
        self._prefix = owner_digest(kind, principal_id) + ":"

    async def get(self, session_id: str) -> list[Turn]:
        """History of the owner's ``session_id``."""
        if not 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
            return []
        with _measured(self.store, "load"):
            return await self.store.get(self._prefix + session_id)

    async def append(self, session_id: str, turns: Sequence[Turn]) -> None:
        """Add turns to the owner's ``session_id``."""
        if 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
            with _measured(self.store, "save"):
                await self.store.append(self._prefix + session_id, turns)

    async def aclose(self) -> None:
        """Nothing to release: the store belongs to the runtime."""


def encode_turn(turn: Turn) -> str:
    """One turn as the JSON document the shared stores keep (a Redis list item, a PostgreSQL array element)."""
    return json.dumps({"role": turn.role, "content": turn.content})


def decode_turns(items: Iterable[str | bytes]) -> list[Turn]:
    """Stored JSON documents back to turns; an unreadable one is skipped, not an error."""
    turns = []
    for item in items:
        try:
            data = json.loads(item)
            turns.append(Turn(str(data["role"]), str(data["content"])))
        except (ValueError, KeyError, TypeError):
            continue
    return turns


def turns_to_wire(turns: Sequence[Turn]) -> list[dict[str, str]]:
    """History as plain dicts (for /health and tests)."""
    return [{"role": t.role, "content": t.content} for t in turns]
