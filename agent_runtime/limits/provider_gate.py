"""Provider-side quotas (LLMProvider ``limits``), shared by every agent that uses the provider.

The LLM manager asks ``await gate.acquire(provider_id, tokens)`` before each
upstream attempt and treats ``False`` as a 429 from that provider (so it fails
over to the next chain entry). Counters live in the same Redis as the agent's
rate-limit policy when there is one, so every replica and every agent on that
Redis shares the quota; otherwise in memory.

When Redis is unreachable the gate always falls back to local counters: the
provider enforces its own quota with 429s, which the manager already handles,
so refusing everything would only turn a Redis outage into an LLM outage.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping

from agent_runtime.config import LLMRuntimeConfig, RateLimitConfig
from agent_runtime.limits.base import Backend, LimitSpec
from agent_runtime.limits.memory import MemoryBackend
from agent_runtime.metrics import RATE_LIMIT_REJECTIONS
from agent_runtime.redis_connection import try_resolve_target

DEFAULT_PROVIDER_PREFIX = "sentient:rl:"


class ProviderGate:
    """Per-provider requests-per-minute and tokens-per-minute budgets (rolling minute)."""

    def __init__(
        self,
        limits: Mapping[str, LimitSpec],
        backend: Backend | None = None,
        *,
        key_prefix: str = DEFAULT_PROVIDER_PREFIX,
    ) -> None:
        """Gate the providers in ``limits`` (id -> spec); others always pass."""
        self._limits = dict(limits)
        self._backend: Backend = backend if backend is not None else MemoryBackend()
        self._prefix = key_prefix

    @property
    def limits(self) -> dict[str, LimitSpec]:
        """Provider id -> limits in force."""
        return dict(self._limits)

    def key_for(self, provider_id: str) -> str:
        """Storage key base of one provider's counters (one Redis Cluster slot)."""
        return f"{self._prefix}{{provider|{provider_id}}}"

    async def acquire(self, provider_id: str, tokens: int, *, now_us: int | None = None) -> bool:
        """Charge one request and ``tokens`` against the provider's quota; False when it is spent.

        Nothing is charged on refusal. The reservation is not settled: a provider quota
        counts what was asked of it, and the estimate leans high, so it errs on the safe side.
        """
        spec = self._limits.get(provider_id)
        if spec is None or spec.empty:
            return True
        decision = await self._backend.admit(
            self.key_for(provider_id), spec, max(0, tokens), secrets.token_hex(8), now_us
        )
        if not decision.allowed:
            RATE_LIMIT_REJECTIONS.labels(limit="provider", scope=provider_id).inc()
        return decision.allowed

    def reload(self, limits: Mapping[str, LimitSpec]) -> None:
        """New limits from an edited config; counters are kept (keys do not depend on the values)."""
        self._limits = dict(limits)

    async def aclose(self) -> None:
        """Close the backend's connections."""
        await self._backend.aclose()


def provider_limits(llm: LLMRuntimeConfig) -> dict[str, LimitSpec]:
    """Provider id -> limits, for the chain entries whose provider declares a quota."""
    return {
        entry.id: LimitSpec.from_provider(entry.limits) for entry in llm.chain if entry.limits is not None
    }


def build_provider_gate(
    llm: LLMRuntimeConfig,
    rate_limit: RateLimitConfig | None,
    read_file: Callable[[str], str | None],
) -> ProviderGate:
    """A gate for the chain's provider quotas, on the policy's Redis when it uses one."""
    limits = provider_limits(llm)
    connection = rate_limit.backend.connection() if rate_limit is not None else None
    if rate_limit is not None and rate_limit.backend.type == "redis" and connection is not None:
        target = try_resolve_target(connection, read_file)
        # Here, not at the top: redis-py loads only where a Redis backend is configured.
        from agent_runtime.limits.redis import ResilientRedisBackend

        backend: Backend = ResilientRedisBackend(None, target=target, fail_open=True, report_metric=False)
        return ProviderGate(limits, backend, key_prefix=rate_limit.backend.key_prefix)
    return ProviderGate(limits)
