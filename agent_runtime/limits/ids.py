"""Lease ids of admissions: unique across processes and replicas, without a syscall per request.

An admission's id names its lease in the shared counters (the concurrency slot, the spend
reservation) and makes settle idempotent, so it must never repeat across the replicas that
share a Redis. ``secrets.token_hex`` asks the kernel for fresh random bytes on every call, a
few microseconds each (a measurable share of a Redis-limited request); a random prefix drawn
once per process and a counter are as unique: 72 random bits per process, then a sequence.
"""

from __future__ import annotations

import itertools
import os
import secrets


def _fresh() -> tuple[str, itertools.count[int]]:
    return secrets.token_hex(9), itertools.count()


_prefix, _counter = _fresh()


def _reseed() -> None:
    # A forked child must not hand out its parent's ids.
    global _prefix, _counter
    _prefix, _counter = _fresh()


os.register_at_fork(after_in_child=_reseed)


def lease_id() -> str:
    """A new id, never handed out before by any process (random prefix + hex sequence)."""
    return f"{_prefix}{next(_counter):x}"
