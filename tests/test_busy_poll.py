"""Busy polling (agent_runtime/busy_poll.py): bounded, adaptive, and never in the way of other work."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from agent_runtime.busy_poll import MAX_SKIP, BusyPoll, Kick
from agent_runtime.metrics import REGISTRY
from tests.support.runtime import InProcessRuntime, RuntimeFiles, default_credentials, make_config


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _polled() -> float:
    """sentient_busy_poll_seconds_total as /metrics shows it."""
    return REGISTRY.get_sample_value("sentient_busy_poll_seconds_total") or 0.0


async def turns(n: int) -> None:
    """Let the loop run ``n`` turns."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_spins_until_the_budget_passes_then_stops() -> None:
    clock = FakeClock()
    poll = BusyPoll(0.001, clock=clock)
    before = _polled()
    poll.kick(Kick.START, 1)
    assert poll.spinning
    await turns(5)
    assert poll.spinning  # the clock has not moved: still inside the budget
    clock.now += 0.0011
    await turns(2)
    assert not poll.spinning
    # The time spent is counted, from the start of the spin to its end.
    assert _polled() - before == pytest.approx(0.0011)


async def test_a_kick_while_spinning_extends_it_and_a_miss_backs_that_kind_off() -> None:
    clock = FakeClock()
    poll = BusyPoll(0.001, clock=clock)
    poll.kick(Kick.START, 1)
    clock.now += 0.0008
    poll.kick(Kick.END, 0)  # caught: the spin goes on for a whole budget from here
    clock.now += 0.0008
    await turns(2)
    assert poll.spinning
    clock.now += 0.0003
    await turns(2)
    assert not poll.spinning
    # The miss is charged to the kind of the last kick the spin saw (an end: no next request came).
    assert poll.skipping(Kick.END) == 1
    assert poll.skipping(Kick.START) == 0


async def test_misses_double_the_skip_up_to_the_bound_and_a_hit_resets_it() -> None:
    clock = FakeClock()
    poll = BusyPoll(0.001, clock=clock)
    skips = []
    for _ in range(10):
        poll.kick(Kick.START, 1)
        assert poll.spinning
        clock.now += 0.002
        await turns(2)
        skips.append(poll.skipping(Kick.START))
        # The skipped kicks sleep as before: no spin.
        for _ in range(poll.skipping(Kick.START)):
            poll.kick(Kick.START, 1)
            assert not poll.spinning
    assert skips == [min(2**i, MAX_SKIP) for i in range(10)]
    assert skips[-1] == MAX_SKIP
    # A spin that catches the request's end resets the backoff of its kind.
    poll.kick(Kick.START, 1)
    poll.kick(Kick.END, 0)
    assert poll.skipping(Kick.START) == 0
    clock.now += 0.002
    await turns(2)
    assert poll.skipping(Kick.START) == 0
    assert poll.skipping(Kick.END) == 1


async def test_zero_budget_never_spins() -> None:
    poll = BusyPoll(0.0)
    poll.kick(Kick.START, 1)
    assert not poll.spinning


async def test_other_work_runs_while_it_spins() -> None:
    """The spin only replaces sleep: callbacks, timers and I/O run on every turn."""
    poll = BusyPoll(0.001, clock=FakeClock())  # the clock never moves: it spins until stopped
    poll.kick(Kick.START, 1)
    await asyncio.sleep(0.002)  # a timer
    server, address = await _echo_server()
    async with server:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"  # I/O
        writer.close()
        await writer.wait_closed()
    assert poll.spinning
    poll.stop()
    await turns(2)
    assert not poll.spinning
    assert poll.skipping(Kick.START) == 0  # stopped on purpose: not a miss


async def _echo_server() -> tuple[asyncio.Server, tuple[str, int]]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    return server, (host, port)


async def test_only_one_request_at_a_time_spins() -> None:
    """A second request in flight ends the spin; starts and ends among others start none."""
    clock = FakeClock()
    poll = BusyPoll(0.001, clock=clock)
    poll.kick(Kick.START, 1)
    assert poll.spinning
    poll.kick(Kick.START, 2)  # another request arrives: the loop has work to wake it
    await turns(2)
    assert not poll.spinning
    assert poll.skipping(Kick.START) == 0  # ended on purpose, not a miss
    poll.kick(Kick.END, 1)
    poll.kick(Kick.START, 2)
    await turns(1)
    assert not poll.spinning
    poll.kick(Kick.END, 1)
    poll.kick(Kick.END, 0)  # the last one ends: waiting for the next request
    assert poll.spinning


def test_only_the_main_thread_spins() -> None:
    """A runtime mounted in another program's thread shares the GIL with it: no spin."""
    poll = BusyPoll(0.001, clock=FakeClock())
    seen: list[bool] = []

    async def kick() -> None:
        poll.kick(Kick.START, 1)
        seen.append(poll.spinning)

    thread = threading.Thread(target=asyncio.run, args=(kick(),))
    thread.start()
    thread.join()
    assert seen == [False]


def test_a_kick_without_a_running_loop_does_nothing() -> None:
    poll = BusyPoll(0.001)
    poll.kick(Kick.END, 0)  # e.g. a request coroutine closed by the garbage collector
    assert not poll.spinning


def test_the_budget_is_bounded_in_the_config() -> None:
    with pytest.raises(ValueError, match=r"server\.busyPoll: at most 10ms"):
        make_config(server={"busyPoll": "11ms"})
    assert make_config().server.busy_poll == "1ms"


def test_the_runtime_takes_its_budget_from_the_config_and_a_reload(tmp_path: Path) -> None:
    """The budget follows a config reload; the metric is served. (This runtime serves from a
    thread of the test process, so it never spins: the tests above drive spins directly.)"""
    config = make_config(server={"busyPoll": "5ms"})
    files = RuntimeFiles(tmp_path, config, default_credentials())
    with InProcessRuntime(files) as served:
        poll = served.runtime.busy_poll
        assert poll.budget == 0.005
        response = httpx.get(f"{served.url}/v1/models", headers={"Authorization": "Bearer alice-secret-key"})
        assert response.status_code == 200
        assert not poll.spinning
        assert "sentient_busy_poll_seconds_total" in httpx.get(f"{served.url}/metrics").text
        files.update_config(make_config(server={"busyPoll": "0s"}))
        deadline = time.monotonic() + 10
        while poll.budget and time.monotonic() < deadline:
            time.sleep(0.02)
        assert poll.budget == 0


def test_a_spin_left_on_a_stopped_loop_does_not_stop_spins_on_the_next() -> None:
    clock = FakeClock()
    poll = BusyPoll(0.001, clock=clock)

    async def kick_and_leave() -> None:
        poll.kick(Kick.START, 1)

    asyncio.run(kick_and_leave())  # the loop ends with the spin still queued
    assert poll.spinning

    async def kick_again() -> tuple[bool, bool]:
        poll.kick(Kick.START, 1)
        await turns(3)
        on = poll.spinning
        clock.now += 0.002
        await turns(3)
        return on, poll.spinning

    assert asyncio.run(kick_again()) == (True, False)  # it ran on this loop, and ended there


async def test_back_to_back_clients_of_a_slow_upstream_waste_one_spin_per_max_skip_requests() -> None:
    """End spins catch the next request; start spins, which only ever wait on the slow upstream, back off."""
    clock = FakeClock()
    poll = BusyPoll(0.001, clock=clock)
    requests = 2000
    waiting_spins = 0  # spins still on while the request waits for its upstream
    for _ in range(requests):
        poll.kick(Kick.START, 1)
        await turns(2)
        waiting_spins += poll.spinning
        clock.now += 0.3  # the upstream answers in 300 ms: a spin on now is a miss
        await turns(2)
        poll.kick(Kick.END, 0)
        clock.now += 0.00005  # the next request comes 50 us later
        await turns(2)
        assert poll.spinning  # the end's spin is still there to catch it
    # The doubling (1, 2, 4 ... MAX_SKIP), then one probe per MAX_SKIP requests.
    assert waiting_spins <= 9 + requests // MAX_SKIP + 1


async def test_a_budget_set_to_zero_ends_the_running_spin() -> None:
    clock = FakeClock()
    poll = BusyPoll(0.001, clock=clock)
    poll.kick(Kick.START, 1)
    poll.budget = 0.0
    poll.stop()
    await turns(2)
    assert not poll.spinning
    poll.kick(Kick.START, 1)
    assert not poll.spinning
