"""Rate-limit policy: who is counted, which limits apply, and what a refusal looks like.

The runtime calls, for every request and before any upstream call::

    subject = limiter.subject(principal, session_id)
    admission = await limiter.admit(subject, estimate_tokens(messages, max_tokens))
    if not admission.allowed:
        ...  # HTTP admission.status (429 or 503) with admission.headers
    try:
        ...  # serve
    finally:
        await admission.settle(actual_tokens)  # real input + output tokens

Tokens are reserved at admission (prompt estimate + max output tokens), so a
request that would break the token budget is refused before it costs anything;
``settle`` gives back what was not used and frees the concurrency slot.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent_runtime.config import CountBy, ProviderConfig, RateLimitConfig
from agent_runtime.limits.base import US_PER_S, Backend, Decision, LimitSpec, Refusal
from agent_runtime.limits.budgets import Budgets, SpendAdmission, worst_case
from agent_runtime.limits.ids import lease_id
from agent_runtime.limits.memory import MemoryBackend
from agent_runtime.limits.spend_store import MemorySpendStore, SpendStore
from agent_runtime.redis_connection import RedisTarget, try_resolve_target

log = logging.getLogger(__name__)

# Output budget reserved when a request names no max_tokens (the API's default).
DEFAULT_MAX_TOKENS = 1024
# Rough tokenizer-free estimate: about four characters per token for English text and code.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_REPLY = 3

# Callers whose subject and counter key are kept worked out (all forgotten at once past this).
_CACHED_CALLERS = 4096

RETRY_AFTER = "Retry-After"
RATELIMIT_LIMIT = "RateLimit-Limit"
RATELIMIT_REMAINING = "RateLimit-Remaining"
RATELIMIT_RESET = "RateLimit-Reset"
# Token budget, in the style of the OpenAI headers, since the standard trio describes one limit.
RATELIMIT_LIMIT_TOKENS = "X-RateLimit-Limit-Tokens"
RATELIMIT_REMAINING_TOKENS = "X-RateLimit-Remaining-Tokens"


class PrincipalLike(Protocol):
    """What the limiter needs of an authenticated caller (``auth.Principal``)."""

    @property
    def id(self) -> str:
        """Key id, JWT subject, or an anonymous marker."""
        ...

    @property
    def kind(self) -> str:
        """How the caller authenticated (e.g. ``apiKey``, ``jwt``, ``anonymous``)."""
        ...

    @property
    def tier(self) -> str | None:
        """Tier of the caller's API key or JWT claim."""
        ...


@dataclass(frozen=True, slots=True)
class Subject:
    """What one budget is counted per: ``kind`` is the countBy dimension, ``id`` the value.

    ``owner`` is whose session a ``session`` subject is (the caller's kind and id): session ids
    are the caller's own words, so two callers naming the same one are counted apart, as their
    conversations are kept apart.
    """

    kind: str
    id: str
    tier: str | None = None
    owner: str = ""

    @property
    def key(self) -> str:
        """Stable counter identity; hashed so caller input never shapes storage keys."""
        return _subject_key(self.kind, self.id, self.owner)


@functools.lru_cache(maxsize=4096)
def _subject_key(kind: str, id: str, owner: str = "") -> str:
    # Cached: the same callers come back request after request (a hash per request otherwise).
    material = f"{kind}\x00{id}" if not owner else f"{kind}\x00{owner}\x00{id}"
    digest = hashlib.sha256(material.encode()).hexdigest()[:32]
    return f"{kind}:{digest}"


def resolve_subject(
    count_by: CountBy | str,
    principal: PrincipalLike | None,
    session_id: str | None = None,
    agent: str = "agent",
) -> Subject:
    """Pick what a request is counted per.

    - ``apiKey``: the caller's key id; JWT callers by subject; anonymous callers share one budget.
    - ``user``: the JWT subject; an API-key caller counts as the user of its key.
    - ``session``: the session id; without one, falls back to the caller.
    - ``agent``: one budget for the whole agent.

    The tier always comes from the principal, whatever the budget is counted per.
    """
    count_by = CountBy(count_by)
    tier = principal.tier if principal is not None else None
    if count_by is CountBy.AGENT:
        return Subject("agent", agent, tier)
    if count_by is CountBy.SESSION and session_id:
        owner = f"{principal.kind}\x00{principal.id}" if principal is not None else ""
        return Subject("session", session_id, tier, owner)
    if principal is None or principal.kind == "anonymous" or not principal.id:
        return Subject("anonymous", "anonymous", tier)
    if principal.kind == "apiKey":
        return Subject("apiKey", principal.id, tier)
    return Subject("user", principal.id, tier)


def estimate_tokens(messages: Iterable[Mapping[str, Any]] | None, max_tokens: int | None) -> int:
    """Tokens to reserve: an upper-leaning estimate of the prompt plus the output budget.

    ``messages`` are chat messages (``content`` a string or a list of parts with
    ``text``). The estimate needs no tokenizer; settle corrects it with real usage.
    """
    chars = 0
    count = 0
    for message in messages or ():
        count += 1
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
                elif isinstance(part, str):
                    chars += len(part)
        name = message.get("name")
        if isinstance(name, str):
            chars += len(name)
    return _prompt_tokens(chars, count) + reserved_output(max_tokens)


def _prompt_tokens(chars: int, count: int) -> int:
    # Characters rounded up to tokens, plus the framing of each message and of the reply.
    return -(-chars // _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * count + (_TOKENS_PER_REPLY if count else 0)


def estimate_text_tokens(texts: Sequence[str], max_tokens: int | None) -> int:
    """:func:`estimate_tokens` of messages whose contents are ``texts``, without building them.

    The same figure as ``estimate_tokens([{"content": t} for t in texts], max_tokens)``: a route
    that holds plain texts (the OpenAI route's prepared request) spares the mappings per request.
    """
    return _prompt_tokens(sum(map(len, texts)), len(texts)) + reserved_output(max_tokens)


def reserved_output(max_tokens: int | None) -> int:
    """Output tokens a request may use: its ``max_tokens``, or the default cap."""
    return DEFAULT_MAX_TOKENS if max_tokens is None else max(0, max_tokens)


def _ceil_seconds(us: int) -> int:
    return max(0, -(-us // US_PER_S))


SettleFn = Callable[[int], Any]


@dataclass(slots=True)
class Admission:
    """Outcome of one admission.

    ``status`` is 429 (a limit refused) or 503 (failClosed with Redis unreachable);
    ``limit`` names the refusing limit (requests, burst, tokens, concurrency,
    backend). ``headers`` go on the response either way. ``at_us`` is the time of the
    decision on the backend's clock (Redis ``TIME`` for Redis), in microseconds. ``settle`` must be awaited
    once the response ends (extra calls do nothing).
    """

    allowed: bool
    status: int = 200
    limit: str | None = None
    retry_after: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    reserved_tokens: int = 0
    degraded: bool = False
    at_us: int = 0
    # A refusal's own wording and context (spend budgets); the pipeline's generic ones otherwise.
    reason: str | None = None
    details: dict[str, Any] | None = None
    # The spend budgets' reservations, settled with this admission.
    spend: SpendAdmission | None = field(default=None, repr=False)
    _key: str = field(default="", repr=False)
    _decision: Decision | None = field(default=None, repr=False)
    _track_tokens: bool = field(default=False, repr=False)
    # The admission took a lease (concurrency or tokens limited): without one, settle has nothing to do.
    _leased: bool = field(default=False, repr=False)
    _request_id: str = field(default="", repr=False)
    _settled: bool = field(default=False, repr=False)

    @property
    def settled(self) -> bool:
        """True once ``settle`` ran."""
        return self._settled

    async def settle(self, actual_tokens: int | None = None, *, now_us: int | None = None) -> int:
        """Return unused reserved tokens and release the concurrency slot; idempotent.

        ``actual_tokens`` is the real input + output usage; ``None`` (usage unknown,
        e.g. the client went away) keeps the whole reservation charged. Returns the
        number of tokens given back (negative when usage exceeded the reservation).
        The spend reservations settle to what the request's meter recorded.
        """
        spend, self.spend = self.spend, None
        if spend is not None:
            await spend.settle()
        if self._settled:
            return 0
        self._settled = True
        decision = self._decision
        if not self.allowed or decision is None or decision.backend is None or not self._leased:
            return 0
        refund = 0 if actual_tokens is None else self.reserved_tokens - max(0, actual_tokens)
        try:
            await decision.backend.settle(
                self._key, self._request_id, decision.bucket, refund, self._track_tokens, now_us
            )
        except Exception:
            # The lease expires and the reservation stays charged: conservative, and never
            # worth failing a response that was already served.
            log.warning("rate-limit settle failed; the reservation stays charged", exc_info=True)
            return 0
        return refund if self._track_tokens else 0


ALLOW_ALL = Admission(allowed=True, _settled=True)


def _headers(spec: LimitSpec, decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    refusal = decision.refusal
    if spec.tokens_per_minute is not None and decision.tokens_remaining is not None:
        headers[RATELIMIT_LIMIT_TOKENS] = str(spec.tokens_per_minute)
        headers[RATELIMIT_REMAINING_TOKENS] = str(decision.tokens_remaining)
    if refusal is Refusal.NONE:
        if spec.requests_per_minute is not None and decision.requests_remaining is not None:
            limit, remaining, reset = (
                spec.requests_per_minute,
                decision.requests_remaining,
                decision.requests_reset_us,
            )
        elif spec.tokens_per_minute is not None and decision.tokens_remaining is not None:
            limit, remaining, reset = (
                spec.tokens_per_minute,
                decision.tokens_remaining,
                decision.tokens_reset_us,
            )
        else:
            return headers
        headers[RATELIMIT_LIMIT] = str(limit)
        headers[RATELIMIT_REMAINING] = str(remaining)
        headers[RATELIMIT_RESET] = str(_ceil_seconds(reset))
        return headers
    retry = max(1, _ceil_seconds(decision.retry_after_us))
    if refusal is Refusal.TOKENS and spec.tokens_per_minute is not None:
        limit, remaining = spec.tokens_per_minute, decision.tokens_remaining or 0
    elif refusal is Refusal.CONCURRENCY and spec.concurrency is not None:
        limit, remaining = spec.concurrency, 0
    elif refusal is Refusal.BURST and spec.burst is not None:
        limit, remaining = spec.burst, 0
    elif spec.requests_per_minute is not None:
        limit, remaining = spec.requests_per_minute, decision.requests_remaining or 0
    else:
        headers[RETRY_AFTER] = str(retry)
        return headers
    headers[RATELIMIT_LIMIT] = str(limit)
    headers[RATELIMIT_REMAINING] = str(remaining)
    headers[RATELIMIT_RESET] = str(retry)
    headers[RETRY_AFTER] = str(retry)
    return headers


def admission_from(
    spec: LimitSpec, decision: Decision, *, key: str, tokens: int, request_id: str, degraded: bool = False
) -> Admission:
    """Turn a backend decision into the runtime-facing ``Admission``."""
    headers = _headers(spec, decision)
    if decision.allowed:
        return Admission(
            allowed=True,
            headers=headers,
            reserved_tokens=tokens if spec.tokens_per_minute is not None else 0,
            degraded=degraded,
            at_us=decision.now_us,
            _key=key,
            _decision=decision,
            _track_tokens=spec.tokens_per_minute is not None,
            _leased=spec.concurrency is not None or spec.tokens_per_minute is not None,
            _request_id=request_id,
        )
    if decision.refusal is Refusal.BACKEND:
        retry = max(1, _ceil_seconds(decision.retry_after_us))
        return Admission(
            allowed=False,
            status=503,
            limit=Refusal.BACKEND.label,
            retry_after=float(retry),
            headers={RETRY_AFTER: str(retry)},
            degraded=True,
            _settled=True,
        )
    return Admission(
        allowed=False,
        status=429,
        limit=decision.refusal.label,
        retry_after=decision.retry_after_us / US_PER_S,
        headers=headers,
        degraded=degraded,
        at_us=decision.now_us,
        _settled=True,
    )


class RateLimiter:
    """Enforces one RateLimitPolicy; ``reload`` swaps the policy in place without losing counters.

    Counter keys are derived from the policy, the backend's key prefix and the
    subject, never from the limit values: the values travel with every admission,
    so an edited limit applies to the next request against the usage already counted.
    """

    def __init__(
        self,
        config: RateLimitConfig | None,
        backend: Backend | None,
        *,
        agent: str = "agent",
    ) -> None:
        """Use ``backend`` for ``config``; ``config`` None admits everything."""
        self._config = config
        self._backend = backend
        self._agent = agent
        self._specs: dict[str | None, LimitSpec] = {}
        # Per caller, the subject and the storage key of its counters: both follow from the
        # policy alone, so they are worked out once per caller and policy (cleared on reload).
        self._subjects: dict[tuple[str, str, str | None, str | None], Subject] = {}
        self._keys: dict[tuple[str, str, str], str] = {}
        self._retired: list[Backend] = []
        self._budgets: Budgets | None = None
        self._spend_store = _spend_store(config, backend)
        self._build_specs()

    def _build_specs(self) -> None:
        self._specs = {}
        self._subjects = {}
        self._keys = {}
        self._budgets = None
        if self._config is None:
            return
        if self._config.budgets:
            self._budgets = Budgets(self._config, self._agent, resolve_subject)
        self._specs[None] = LimitSpec.from_limits(self._config.limits)
        for tier in self._config.tiers:
            self._specs[tier.name] = LimitSpec.from_limits(tier.limits)

    @property
    def config(self) -> RateLimitConfig | None:
        """The policy in force."""
        return self._config

    @property
    def enabled(self) -> bool:
        """False when no policy applies (every admission passes)."""
        return self._config is not None and self._backend is not None

    @property
    def backend(self) -> Backend | None:
        """The counter storage in use."""
        return self._backend

    @property
    def budgets(self) -> Budgets | None:
        """The policy's spend budgets, None without any."""
        return self._budgets

    @property
    def degraded(self) -> bool:
        """True while a Redis backend is unreachable (fallback or refusal applies)."""
        return bool(getattr(self._backend, "degraded", False))

    def subject(self, principal: PrincipalLike | None, session_id: str | None = None) -> Subject:
        """Resolve the caller into the subject the policy counts by."""
        if principal is None:
            cache = None
        else:
            cache = (principal.kind, principal.id, principal.tier, session_id)
            found = self._subjects.get(cache)
            if found is not None:
                return found
        count_by = self._config.count_by if self._config is not None else CountBy.AGENT
        subject = resolve_subject(count_by, principal, session_id, self._agent)
        if cache is not None:
            if len(self._subjects) >= _CACHED_CALLERS:
                self._subjects.clear()
            self._subjects[cache] = subject
        return subject

    def limits_for(self, subject: Subject) -> LimitSpec:
        """Limits of the subject's tier, or the policy defaults for an unknown or missing tier."""
        spec = self._specs.get(subject.tier) if subject.tier is not None else None
        return spec if spec is not None else self._specs.get(None, LimitSpec())

    def key_for(self, subject: Subject) -> str:
        """Storage key base of a subject's counters.

        The braces are a Redis Cluster hash tag: every key of one subject lands in one slot,
        which the atomic script needs.
        """
        cache = (subject.kind, subject.id, subject.owner)
        key = self._keys.get(cache)
        if key is None:
            policy = self._config.policy if self._config is not None else "-"
            prefix = self._config.backend.key_prefix if self._config is not None else ""
            key = f"{prefix}{{{policy}|{subject.key}}}"
            if len(self._keys) >= _CACHED_CALLERS:
                self._keys.clear()
            self._keys[cache] = key
        return key

    async def admit(self, subject: Subject, estimated_tokens: int, *, now_us: int | None = None) -> Admission:
        """Check and reserve every limit for one request; ``now_us`` pins the clock in tests."""
        if self._config is None or self._backend is None:
            return ALLOW_ALL
        spec = self.limits_for(subject)
        if spec.empty:
            return ALLOW_ALL
        tokens = max(0, int(estimated_tokens))
        key = self.key_for(subject)
        request_id = lease_id()
        decision = await self._backend.admit(key, spec, tokens, request_id, now_us)
        return admission_from(
            spec,
            decision,
            key=key,
            tokens=tokens,
            request_id=request_id,
            degraded=decision.backend is not self._backend and decision.backend is not None,
        )

    async def admit_spend(
        self,
        admission: Admission,
        principal: PrincipalLike | None,
        chain: Sequence[ProviderConfig],
        prompt_tokens: int,
        output_tokens: int,
        *,
        now_us: int | None = None,
    ) -> Admission:
        """Add the spend budgets' reservations to an allowed ``admission``, or refuse in its place.

        The worst case is ``prompt_tokens`` at the input price plus ``output_tokens`` at the
        output price of the dearest ``chain`` entry priced in each budget's currency.
        """
        budgets, store = self._budgets, self._spend_store
        if budgets is None or store is None or not admission.allowed:
            return admission
        costs = worst_case(budgets.prices(chain), prompt_tokens, output_tokens)
        spend = await budgets.reserve(store, principal, costs, now_us)
        refusal = spend.refusal
        if refusal is not None:
            # Not served: the rate limits get their reservation back too.
            await admission.settle(0)
            retry = max(1, _ceil_seconds(round(refusal.retry_after * US_PER_S)))
            return Admission(
                allowed=False,
                status=refusal.status,
                limit=refusal.limit,
                retry_after=refusal.retry_after,
                headers={**admission.headers, RETRY_AFTER: str(retry)},
                reason=refusal.message,
                details=refusal.details,
                _settled=True,
            )
        if not spend.held:
            return admission
        if admission is ALLOW_ALL:
            return Admission(allowed=True, spend=spend, _settled=True)
        admission.spend = spend
        return admission

    async def reload(self, config: RateLimitConfig | None, read_file: Callable[[str], str | None]) -> None:
        """Apply an edited policy. Counters survive: the same backend is kept unless its location changed."""
        if config is not None and self._config is not None and config.backend == self._config.backend:
            same_place = True
            if config.backend.type == "redis":
                same_place = redis_target(config, read_file) == getattr(self._backend, "target", None)
            if same_place:
                self._config = config
                self._build_specs()
                return
        old = self._backend
        self._backend = _make_backend(config, read_file)
        self._spend_store = _spend_store(config, self._backend)
        self._config = config
        self._build_specs()
        if old is not None:
            # Admissions still in flight settle against the backend that charged them.
            self._retired.append(old)

    async def aclose(self) -> None:
        """Close every backend this limiter opened."""
        for backend in [*self._retired, *([self._backend] if self._backend is not None else [])]:
            await backend.aclose()
        self._retired.clear()


def redis_target(config: RateLimitConfig, read_file: Callable[[str], str | None]) -> RedisTarget | None:
    """The policy's Redis with its files read; None when a file is missing (Redis counts as down)."""
    return try_resolve_target(config.backend.connection(), read_file)


def _spend_store(config: RateLimitConfig | None, backend: Backend | None) -> SpendStore | None:
    """Spend totals beside the rate-limit counters: in Redis through the same connection, or in memory."""
    if backend is None:
        return None
    if config is not None and config.backend.type == "redis":
        from agent_runtime.limits.redis import ResilientRedisBackend
        from agent_runtime.limits.spend_store import RedisSpendStore

        if isinstance(backend, ResilientRedisBackend):
            return RedisSpendStore(backend)
    return MemorySpendStore()


def _make_backend(config: RateLimitConfig | None, read_file: Callable[[str], str | None]) -> Backend | None:
    if config is None:
        return None
    if config.backend.type == "redis":
        from agent_runtime.limits.redis import ResilientRedisBackend

        return ResilientRedisBackend(
            None, target=redis_target(config, read_file), fail_open=config.on_redis_unavailable == "failOpen"
        )
    return MemoryBackend()


def build_limiter(
    config: RateLimitConfig | None,
    read_file: Callable[[str], str | None],
    *,
    agent: str = "agent",
) -> RateLimiter:
    """The limiter for a resolved policy: memory or Redis as the policy says; None admits all.

    ``read_file`` reads a credentials file by name (the Redis URL); ``agent`` names
    the single budget of ``countBy: agent``.
    """
    return RateLimiter(config, _make_backend(config, read_file), agent=agent)
