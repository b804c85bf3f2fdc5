"""Spend budgets without a server: exact money arithmetic, UTC calendar windows, the memory store,
and the reserve-then-settle cycle through the rate limiter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from agent_runtime.config import RateLimitConfig
from agent_runtime.limits import build_limiter
from agent_runtime.limits.budgets import Calendar, worst_case
from agent_runtime.limits.policy import ALLOW_ALL
from agent_runtime.limits.spend_store import MemorySpendStore, Window
from agent_runtime.spend import CURRENT_METER, MICRO, Price, format_amount, parse_amount, record
from tests.support.spend import Caller, priced_chain


def _us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * MICRO


def test_amounts_are_exact_micro_units() -> None:
    assert parse_amount("2.5") == 2_500_000
    assert parse_amount("0.000001") == 1
    assert parse_amount("15") == 15_000_000
    assert format_amount(2_500_000) == "2.50"
    assert format_amount(1) == "0.000001"
    # A million additions of 0.000003 are exactly 3.00: no float drift.
    assert format_amount(sum(parse_amount("0.000003") for _ in range(1_000_000))) == "3.00"
    with pytest.raises(ValueError):
        parse_amount("1.0000001")
    with pytest.raises(ValueError):
        parse_amount("-1")


def test_cost_rounds_up_once_per_answer() -> None:
    price = Price("USD", parse_amount("2.50"), parse_amount("10.00"))
    # 3 input tokens at 2.5 micro-USD + 1 output token at 10 micro-USD = 17.5 -> 18.
    assert price.cost(3, 1) == 18
    assert price.cost(1_000_000, 0) == 2_500_000
    assert price.cost(0, 0) == 0


def test_worst_case_takes_the_dearest_entry_per_currency() -> None:
    cheap = Price("USD", 1_000_000, 2_000_000)
    dear = Price("USD", 3_000_000, 15_000_000)
    euro = Price("EUR", 1_000_000, 1_000_000)
    assert worst_case([cheap, None, dear, euro], 100, 1000) == {
        "USD": dear.cost(100, 1000),
        "EUR": euro.cost(100, 1000),
    }


def test_calendar_windows_are_utc_days_and_months() -> None:
    when = Calendar.at(_us("2024-02-29T23:59:59"))
    assert (when.day, when.month) == ("2024-02-29", "2024-02")
    assert when.day_end_us == _us("2024-03-01T00:00:00")
    assert when.month_end_us == _us("2024-03-01T00:00:00")
    when = Calendar.at(_us("2026-12-31T12:00:00"))
    assert when.month_end_us == _us("2027-01-01T00:00:00")
    assert Calendar.at(_us("2026-11-01T00:00:00")).day == "2026-11-01"


def test_memory_store_all_or_nothing_and_idempotent_settle() -> None:
    store = MemorySpendStore()

    def windows(cost: int, day: str = "d") -> list[Window]:
        return [Window(day, 100, 1000, cost), Window("m", 150, 1000, cost)]

    assert store.reserve_now("l", windows(60), "a", 0).spent == [60, 60]
    refused = store.reserve_now("l", windows(50), "b", 0)
    assert refused.refused == 1 and refused.spent == [60, 60]
    assert store.settle_now("l", windows(60), "a", [40, 40]) == [20, 20]
    assert store.settle_now("l", windows(60), "a", [40, 40]) is None
    assert store.reserve_now("l", windows(80), "c", 0).spent == [100, 100]
    store.settle_now("l", windows(80), "c", [80, 80])
    store.reserve_now("l", windows(100, "d2"), "d", 0)
    # The month refuses what a fresh day would still take.
    assert store.reserve_now("l", windows(40, "d3"), "e", 0).refused == 2
    # Windows of different budgets carry their own costs.
    mixed = [Window("x", 10, 1000, 10), Window("y", 10, 1000, 0)]
    assert store.reserve_now("l", mixed, "f", 0).spent == [10, 0]


def _policy(budgets: list[dict[str, object]], limits: dict[str, int] | None = None) -> RateLimitConfig:
    return RateLimitConfig.model_validate({"policy": "ns/spend", "limits": limits or {}, "budgets": budgets})


CHAIN = priced_chain("2.00", "10.00")


def test_reserve_refuse_settle_through_the_limiter() -> None:
    async def scenario() -> None:
        # 1000 output tokens at 10 USD/M = 0.01; 100 prompt tokens at 2 USD/M = 0.0002.
        limiter = build_limiter(
            _policy([{"name": "daily", "per": "apiKey", "perDay": "0.0215"}]), lambda _: None
        )
        caller = Caller()
        first = await limiter.admit_spend(ALLOW_ALL, caller, CHAIN, 100, 1000)
        assert first.allowed and first.spend is not None
        second = await limiter.admit_spend(ALLOW_ALL, caller, CHAIN, 100, 1000)
        assert second.allowed
        third = await limiter.admit_spend(ALLOW_ALL, caller, CHAIN, 100, 1000)
        assert not third.allowed and third.status == 429 and third.limit == "spend_day"
        assert third.details is not None and third.details["spent"] == "0.0204"
        assert third.details["spend_limit"] == "0.0215" and third.details["reserve"] == "0.0102"
        assert "daily" in (third.reason or "") and "Retry-After" in third.headers
        # Another key has its own budget.
        assert (await limiter.admit_spend(ALLOW_ALL, Caller("key-2"), CHAIN, 100, 1000)).allowed
        # The first really used 50 prompt + 100 output tokens: 0.0001 + 0.001.
        token = CURRENT_METER.set(first.spend.meter)
        record(Price.from_config(CHAIN[0].price), 50, 100)  # type: ignore[arg-type]
        CURRENT_METER.reset(token)
        await first.settle(150)
        await first.settle(150)
        assert (await limiter.admit_spend(ALLOW_ALL, caller, CHAIN, 100, 1000)).allowed
        # Nothing recorded and nothing unknown: the second cost nothing and gives all back.
        await second.settle(None)
        assert (await limiter.admit_spend(ALLOW_ALL, caller, CHAIN, 100, 1000)).allowed
        assert not (await limiter.admit_spend(ALLOW_ALL, caller, CHAIN, 100, 1000)).allowed

    asyncio.run(scenario())


def test_unknown_cost_keeps_the_reservation() -> None:
    async def scenario() -> None:
        limiter = build_limiter(_policy([{"name": "all", "perMonth": "0.0102"}]), lambda _: None)
        first = await limiter.admit_spend(ALLOW_ALL, Caller(), CHAIN, 100, 1000)
        assert first.spend is not None
        first.spend.meter.unknown = True
        await first.settle(None)
        assert not (await limiter.admit_spend(ALLOW_ALL, Caller("other"), CHAIN, 100, 1000)).allowed

    asyncio.run(scenario())


def test_tier_filter_and_unpriced_chains() -> None:
    async def scenario() -> None:
        limiter = build_limiter(
            _policy([{"name": "free", "per": "tier", "tiers": ["free"], "perDay": "0.000001"}]),
            lambda _: None,
        )
        gold = Caller(tier="gold")
        for _ in range(3):
            admission = await limiter.admit_spend(ALLOW_ALL, gold, CHAIN, 100, 1000)
            assert admission.allowed and admission.spend is None
        free = Caller(tier="free")
        assert not (await limiter.admit_spend(ALLOW_ALL, free, CHAIN, 100, 1000)).allowed
        unpriced = [CHAIN[0].model_copy(update={"price": None})]
        assert (await limiter.admit_spend(ALLOW_ALL, free, unpriced, 100, 1000)).allowed

    asyncio.run(scenario())
