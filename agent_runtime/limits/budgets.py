"""Spend budgets: which budgets a request counts against, and their reserve-then-settle cycle.

A RateLimitPolicy's ``budgets`` cap spend per UTC calendar day and/or month, per API
key, user, tier or for the whole agent. Before the upstream call the runtime reserves
the request's worst-case cost on every budget that applies::

    worst case = prompt estimate x input price + max output tokens x output price

(the most expensive chain entry priced in the budget's currency), and refuses with 429
when any budget would be exceeded; nothing is charged then. After the answer it settles
to what the request really cost (the price of the entry that answered times the
provider's reported usage), giving the rest back. While requests are in flight their
reservations count, so concurrent requests on any number of replicas cannot together
go past the limit; only usage above a reservation (a prompt longer than estimated, a
custom agent that calls the model twice) can, by that excess.

Every budget of a request is checked and charged in one atomic step (one Lua script on
Redis): all of a policy's spend keys share one Redis Cluster hash tag, so they live in one
slot. The price is that one policy's spend traffic goes to one Cluster primary (an
agent-wide budget is one key in any case); the rate limits stay spread by subject.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_runtime import metrics
from agent_runtime.config import CountBy, ProviderConfig, RateLimitConfig, SpendBudget
from agent_runtime.limits.ids import lease_id
from agent_runtime.limits.spend_store import UNAVAILABLE, SpendResult, SpendStore, Window
from agent_runtime.spend import MICRO, Price, SpendMeter, format_amount, parse_amount

log = logging.getLogger(__name__)

# (countBy, principal, session id, agent) -> a Subject with kind, id and a hashed key.
SubjectResolver = Callable[[CountBy, Any, str | None, str], Any]

DAY_US = 86_400 * MICRO
# A window's key outlives the window by this much, so late settles and `sentient status` find it.
_KEY_GRACE_MS = 2 * 86_400 * 1000
# Label sets kept in the per-subject gauges before the least recently updated are dropped.
MAX_SERIES = 1000


@dataclass(frozen=True, slots=True)
class Rule:
    """A resolved ``SpendBudget``: limits in micro-units."""

    name: str
    per: str
    tiers: frozenset[str]
    currency: str
    per_day: int | None
    per_month: int | None

    @classmethod
    def from_config(cls, budget: SpendBudget) -> Rule:
        """Read the decimal limits exactly."""
        return cls(
            budget.name,
            budget.per,
            frozenset(budget.tiers),
            budget.currency,
            parse_amount(budget.per_day) if budget.per_day is not None else None,
            parse_amount(budget.per_month) if budget.per_month is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Calendar:
    """The UTC day and month a moment falls in, and when each ends (microseconds since the epoch)."""

    day: str
    day_end_us: int
    month: str
    month_end_us: int

    @classmethod
    def at(cls, now_us: int) -> Calendar:
        """The windows of ``now_us`` (worked out once per UTC day)."""
        day = now_us // DAY_US
        cached = _CALENDAR.get(day)
        if cached is None:
            cached = cls._of(now_us)
            _CALENDAR.clear()
            _CALENDAR[day] = cached
        return cached

    @classmethod
    def _of(cls, now_us: int) -> Calendar:
        moment = datetime.fromtimestamp(now_us / MICRO, UTC)
        day_start = now_us - now_us % DAY_US
        days = calendar.monthrange(moment.year, moment.month)[1]
        month_start = day_start - (moment.day - 1) * DAY_US
        return cls(f"{moment:%Y-%m-%d}", day_start + DAY_US, f"{moment:%Y-%m}", month_start + days * DAY_US)


_CALENDAR: dict[int, Calendar] = {}


def worst_case(chain: Sequence[Price | None], prompt_tokens: int, output_tokens: int) -> dict[str, int]:
    """Per currency, the most a request can cost on any chain entry priced in it (micro-units)."""
    costs: dict[str, int] = {}
    for price in chain:
        if price is not None:
            cost = price.cost(prompt_tokens, output_tokens)
            costs[price.currency] = max(cost, costs.get(price.currency, 0))
    return costs


@dataclass(frozen=True, slots=True)
class _Counted:
    """One window of one budget subject, as a reservation counts it."""

    rule: Rule
    kind: str
    subject: str
    window: Window


@dataclass(slots=True)
class _Held:
    """A request's reservation: every window it charged, in one store."""

    store: SpendStore
    leases: str
    request_id: str
    counted: list[_Counted]

    @property
    def windows(self) -> list[Window]:
        """The windows, in the order the store was given them."""
        return [c.window for c in self.counted]


@dataclass(slots=True)
class BudgetRefusal:
    """Why a request was refused: the budget, its window, and when the window starts again."""

    status: int
    limit: str
    message: str
    retry_after: float
    details: dict[str, Any]


@dataclass(slots=True)
class SpendAdmission:
    """The spend reservation of one request; ``settle`` (idempotent) charges what the meter recorded."""

    held: _Held | None = None
    meter: SpendMeter = field(default_factory=SpendMeter)
    refusal: BudgetRefusal | None = None

    @property
    def allowed(self) -> bool:
        """True when every budget had room for the worst case."""
        return self.refusal is None

    async def settle(self) -> None:
        """Settle every window to the real cost (the whole reservation when the cost is unknown)."""
        held, self.held = self.held, None
        if held is None:
            return
        refunds = []
        for counted in held.counted:
            cost = counted.window.cost
            actual = self.meter.of(counted.rule.currency)
            if self.meter.unknown:
                actual = max(actual, cost)
            refunds.append(cost - actual)
        try:
            totals = await held.store.settle(held.leases, held.windows, held.request_id, refunds)
        except Exception:
            # The reservation stays charged: over-counts, never lets a budget overrun.
            log.warning("spend settle failed; the reservation stays charged", exc_info=True)
            return
        if totals is not None:
            _observe(held.counted, totals)


class _Series:
    """The per-subject gauge children, created once per label set and bounded (least recently
    updated dropped first): ``labels()`` costs more than the rest of a budget's bookkeeping."""

    def __init__(self) -> None:
        self._children: OrderedDict[tuple[str, str, str], tuple[Any, Any]] = OrderedDict()

    def children(self, labels: tuple[str, str, str]) -> tuple[Any, Any]:
        """(spent, remaining) gauge children of ``labels``."""
        found = self._children.get(labels)
        if found is not None:
            self._children.move_to_end(labels)
            return found
        found = (metrics.BUDGET_SPENT.labels(*labels), metrics.BUDGET_REMAINING.labels(*labels))
        self._children[labels] = found
        while len(self._children) > MAX_SERIES:
            old, _ = self._children.popitem(last=False)
            for gauge in (metrics.BUDGET_SPENT, metrics.BUDGET_REMAINING):
                try:
                    gauge.remove(*old)
                except KeyError:
                    pass
        return found


_SERIES = _Series()


def _observe(counted: list[_Counted], totals: list[int]) -> None:
    for c, total in zip(counted, totals, strict=True):
        spent, remaining = _SERIES.children((c.rule.name, c.kind, c.subject))
        spent.set(total / MICRO)
        remaining.set(max(0, c.window.limit - total) / MICRO)


class Budgets:
    """The spend budgets of one policy."""

    def __init__(self, config: RateLimitConfig, agent: str, resolve: SubjectResolver) -> None:
        """Resolve the policy's budgets; ``agent`` names the shared budget of ``per: agent``;
        ``resolve`` is the rate limiter's own caller-to-subject rule (``resolve_subject``)."""
        self._resolve = resolve
        self.rules = [Rule.from_config(b) for b in config.budgets]
        # One hash tag for every spend key of the policy: a request's budgets live in one Redis
        # Cluster slot, so one script checks and charges them all atomically.
        self._base = f"{config.backend.key_prefix}{{{config.policy}|$spend}}"
        self._leases = f"{self._base}:leases"
        self._agent = agent
        self._prices: tuple[object, list[Price | None]] = (None, [])
        for rule in self.rules:
            for kind, limit in (("day", rule.per_day), ("month", rule.per_month)):
                if limit is not None:
                    metrics.BUDGET_LIMIT.labels(rule.name, kind, rule.currency).set(limit / MICRO)

    def prices(self, chain: Sequence[ProviderConfig]) -> list[Price | None]:
        """The chain's prices in micro-units, read once per chain object."""
        cached_chain, prices = self._prices
        if cached_chain is not chain:
            prices = [Price.from_config(p.price) if p.price is not None else None for p in chain]
            self._prices = (chain, prices)
        return prices

    def _subject(self, rule: Rule, principal: Any) -> tuple[str, str] | None:
        """(storage identity, metric label) of whom ``rule`` counts for this caller; None: not counted."""
        tier = getattr(principal, "tier", None)
        if rule.tiers and tier not in rule.tiers:
            return None
        if rule.per == "tier":
            name = tier or "none"
            return f"tier:{name}", name
        if rule.per == "agent":
            return f"agent:{self._agent}", self._agent
        subject = self._resolve(CountBy(rule.per), principal, None, self._agent)
        # Key ids name no secret; a JWT subject may be personal data, so it is shown hashed.
        label = subject.id if subject.kind in ("apiKey", "anonymous") else subject.key
        return subject.key, label

    async def reserve(
        self, store: SpendStore, principal: Any, costs: Mapping[str, int], now_us: int | None = None
    ) -> SpendAdmission:
        """Reserve ``costs`` (per currency) on every budget that applies, in one atomic step."""
        now = time.time_ns() // 1000 if now_us is None else now_us
        when = Calendar.at(now)
        counted: list[_Counted] = []
        for rule in self.rules:
            cost = costs.get(rule.currency, 0)
            subject = self._subject(rule, principal)
            if cost <= 0 or subject is None:
                continue
            identity, label = subject
            base = f"{self._base}{rule.name}|{identity}"
            for kind, limit, stamp, end in (
                ("day", rule.per_day, when.day, when.day_end_us),
                ("month", rule.per_month, when.month, when.month_end_us),
            ):
                if limit is not None:
                    ttl = (end - now) // 1000 + _KEY_GRACE_MS
                    counted.append(
                        _Counted(rule, kind, label, Window(f"{base}:{kind[0]}:{stamp}", limit, ttl, cost))
                    )
        admission = SpendAdmission()
        if not counted:
            return admission
        request_id = lease_id()
        windows = [c.window for c in counted]
        result = await store.reserve(self._leases, windows, request_id, now)
        if not result.allowed:
            admission.refusal = _refusal(counted, result, when, now)
            return admission
        assert result.store is not None
        # The gauges follow settles (the totals without reservations in flight), not reservations.
        admission.held = _Held(result.store, self._leases, request_id, counted)
        return admission


def _refusal(counted: list[_Counted], result: SpendResult, when: Calendar, now: int) -> BudgetRefusal:
    if result.refused == UNAVAILABLE:
        names = sorted({c.rule.name for c in counted})
        return BudgetRefusal(503, "backend", "spend budget store unavailable", 1.0, {"budgets": names})
    index = result.refused - 1
    c, spent = counted[index], result.spent[index]
    rule, kind, window = c.rule, c.kind, c.window
    end = when.day_end_us if kind == "day" else when.month_end_us
    resets = datetime.fromtimestamp(end / MICRO, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    period = "today" if kind == "day" else "this month"
    metrics.BUDGET_REJECTIONS.labels(rule.name, kind).inc()
    return BudgetRefusal(
        429,
        f"spend_{kind}",
        (
            f"spend budget {rule.name!r} exhausted {period}: {rule.currency} {format_amount(spent)} of "
            f"{format_amount(window.limit)} spent, this request may cost up to {format_amount(window.cost)}; "
            f"resets {resets} (UTC)"
        ),
        (end - now) / MICRO,
        {
            "budget": rule.name,
            "window": kind,
            "currency": rule.currency,
            "spend_limit": format_amount(window.limit),
            "spent": format_amount(spent),
            "reserve": format_amount(window.cost),
            "resets_at": resets,
        },
    )
