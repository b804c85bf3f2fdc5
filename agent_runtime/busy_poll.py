"""Busy polling: for a moment after a request starts or ends, the event loop polls instead of sleeping.

Why: a request that goes through the runtime in well under a millisecond (a fast upstream, a
cached answer, a refusal, a Redis admission) waits several times, for the upstream, for Redis
and for the client's next request on the connection. Each wait puts the event loop to sleep
in ``epoll_wait`` and each wake-up costs tens of microseconds (on a virtual machine, 40-60 µs
per wake measured with a loopback Redis: ``bench/busy_poll.py``). That is as much as the rest of
the request. Go's scheduler and the kernel's ``busy_poll`` avoid this the same way: poll for a
short while before sleeping.

How: while a spin is on, one callback re-queues itself with ``call_soon``, so the loop
polls its sockets with a zero timeout on every turn instead of blocking. Nothing waits for
the spin: I/O, timers and other callbacks run on every turn as before, and only time the
loop would have slept is spent polling.

Bounded and adaptive: a spin ends ``budget`` after the last request start or end it saw.
Spins are kept apart by what started them, since they wait for different things:
- a spin started by a request's start waits for that request to end (a fast upstream);
- a spin started by a request's end waits for the next request (a client sending back to back).
A spin that ends with nothing happening was wasted, for example while a real LLM takes 300 ms.
The next 1, 2, 4 ... up to ``MAX_SKIP`` requests then start or end without a spin of that kind.
A spin that sees a request start or end resets its kind; if the kind of what it saw is
backing off, the spin ends there. So with slow upstreams or distant clients the waste stays
under one budget per ``MAX_SKIP`` starts and one per ``MAX_SKIP`` ends.

Only a process serving one request at a time spins (a start that leaves one request in
flight, an end that leaves none): with more in flight the loop has other work to wake it,
and the kicks of other requests would keep spins going by chance. Only the main thread spins:
a runtime mounted in another program shares the GIL with that program's threads.

Spinning shows as CPU use: a pod answering one fast request at a time keeps its core busy.
``server.busyPoll: 0s`` turns it off; ``sentient_busy_poll_seconds_total`` says how much
time was spent polling (the wall time of the spins, work done during them included).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from enum import IntEnum

from agent_runtime.metrics import BUSY_POLL_SECONDS

# Longest run of request starts (or ends) that skip their spin after spins of that kind were wasted.
MAX_SKIP = 256


class Kick(IntEnum):
    """What started a spin: a request's start or its end."""

    START = 0
    END = 1


class _Backoff:
    """How many more kicks of one kind skip their spin, and how many the next miss skips."""

    __slots__ = ("next", "skip")

    def __init__(self) -> None:
        self.skip = 0
        self.next = 1

    def hit(self) -> None:
        self.skip = 0
        self.next = 1

    def miss(self) -> None:
        self.skip = self.next
        self.next = min(self.next * 2, MAX_SKIP)


class BusyPoll:
    """Keeps the event loop polling for ``budget`` seconds after each request start or end."""

    def __init__(self, budget: float, *, clock: Callable[[], float] = time.perf_counter) -> None:
        """``budget`` in seconds; 0 never spins."""
        self.budget = budget
        self._clock = clock
        # The loop of the running spin's callback chain (a chain left on another loop is dropped).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._spinning = False
        # The kind of the last kick the running spin saw: a miss backs that kind off.
        self._kind = Kick.START
        # False when the spin was ended on purpose (not a miss of its kind).
        self._charge = True
        self._began = 0.0
        self._until = 0.0
        self._backoff = (_Backoff(), _Backoff())

    @property
    def spinning(self) -> bool:
        """True while the loop is kept polling."""
        return self._spinning

    def skipping(self, kind: Kick) -> int:
        """How many more kicks of ``kind`` will not start a spin."""
        return self._backoff[kind].skip

    def kick(self, kind: Kick, in_flight: int) -> None:
        """A request started or ended, leaving ``in_flight`` requests: start, extend or end a spin.

        Only a process serving one request at a time spins: with more in flight the loop has
        other work to wake it, and a start or end of another request says nothing about the
        wait a spin is for, so it ends the spin instead of extending it.
        """
        if not self.budget:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a request's coroutine closed outside its loop (garbage collection)
            return
        alone = in_flight == (1 if kind is Kick.START else 0)
        spinning = self._spinning and self._loop is loop
        if not alone:
            if spinning:
                self.stop()
            return
        backoff = self._backoff[kind]
        if spinning:
            # The spin caught something: its kind was worth it.
            self._backoff[self._kind].hit()
            if backoff.skip:
                # This kick's own kind is backing off: the spin ends here, charged to nobody.
                backoff.skip -= 1
                self.stop()
                return
            self._kind = kind
            self._charge = True
            self._until = self._clock() + self.budget
            return
        if backoff.skip:
            backoff.skip -= 1
            return
        if threading.current_thread() is not threading.main_thread():
            # A runtime mounted in another program (WSGI adapter, tests) shares the GIL with that
            # program's threads; polling would hold it from them.
            return
        self._loop = loop
        self._kind = kind
        self._charge = True
        self._began = self._clock()
        self._until = self._began + self.budget
        self._spinning = True
        loop.call_soon(self._turn, loop)

    def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """One turn of the spin: queue the next, or end the spin once its time is up."""
        if loop is not self._loop:
            return  # a chain left from an earlier loop
        now = self._clock()
        if now < self._until:
            loop.call_soon(self._turn, loop)
            return
        self._spinning = False
        if self._charge:
            self._backoff[self._kind].miss()
        BUSY_POLL_SECONDS.inc(now - self._began)

    def stop(self) -> None:
        """End the running spin at its next turn, charged to nobody (budget set to 0, shutdown)."""
        self._charge = False
        self._until = 0.0
