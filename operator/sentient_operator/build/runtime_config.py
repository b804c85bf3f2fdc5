"""The agent's runtime configuration (the ConfigMap's ``config.yaml``), from spec + resolved inputs.

The schema is the runtime's own (``agent_runtime.config``): the CRD's value types are converted
here, field by field through their plain values, so the two schemas can evolve apart and the
runtime never imports the operator.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar, cast

from agent_runtime.config import (
    API_KEYS_FILE,
    RATE_LIMIT_REDIS_URL_FILE,
    SESSIONS_REDIS_URL_FILE,
    AgentInfo,
    AuthRuntimeConfig,
    CircuitBreaker,
    ConfigModel,
    JWTConfig,
    LLMParameters,
    LLMRuntimeConfig,
    ProviderConfig,
    ProviderLimits,
    ProviderTLS,
    RateLimitBackendConfig,
    RateLimitConfig,
    RateLimits,
    RetryPolicy,
    RuntimeConfig,
    ServerConfig,
    ServerLimits,
    SessionsRuntimeConfig,
    Tier,
    Timeouts,
    dump_config,
    provider_ca_file,
    provider_credential_file,
)
from agent_runtime.config import CountByName as RuntimeCountBy
from agent_runtime.config import ProviderType as RuntimeProviderType
from sentient_operator.api.v1alpha1 import Model, ProviderType
from sentient_operator.build.inputs import AgentInputs, ResolvedPolicy, ResolvedProvider

DEFAULT_ENDPOINTS: dict[str, str] = {
    ProviderType.OPENAI.value: "https://api.openai.com/v1",
    ProviderType.ANTHROPIC.value: "https://api.anthropic.com",
}


_T = TypeVar("_T", bound=ConfigModel)


def _convert(value: Model, runtime_type: type[_T]) -> _T:
    """A CRD value as the runtime's type of the same meaning (same field names)."""
    return runtime_type.model_validate(value.model_dump(exclude_none=True))


def provider_endpoint(provider: ResolvedProvider) -> str:
    """The provider's base URL: its own, or the vendor's public endpoint."""
    if provider.spec.endpoint:
        return provider.spec.endpoint
    kind = str(provider.spec.type)
    if kind not in DEFAULT_ENDPOINTS:
        raise ValueError(f"LLMProvider {provider.id} of type {kind} needs spec.endpoint")
    return DEFAULT_ENDPOINTS[kind]


def _provider_config(provider: ResolvedProvider) -> ProviderConfig:
    spec = provider.spec
    tls = ProviderTLS()
    if spec.tls is not None:
        tls = ProviderTLS(
            ca_file=provider_ca_file(provider.namespace, provider.name) if provider.ca_pem else None,
            insecure_skip_verify=spec.tls.insecure_skip_verify,
        )
    return ProviderConfig(
        id=provider.id,
        # Both enumerations hold the same words; the runtime's strict validation checks it.
        type=cast(RuntimeProviderType, str(spec.type)),
        endpoint=provider_endpoint(provider),
        model=provider.model,
        credential_file=(
            provider_credential_file(provider.namespace, provider.name)
            if spec.credentials is not None
            else None
        ),
        default_headers=dict(spec.default_headers),
        tls=tls,
        timeouts=_convert(spec.timeouts, Timeouts),
        retry=_convert(spec.retry, RetryPolicy),
        circuit_breaker=_convert(spec.circuit_breaker, CircuitBreaker),
        limits=_convert(spec.limits, ProviderLimits) if spec.limits is not None else None,
    )


def _rate_limit_config(policy: ResolvedPolicy) -> RateLimitConfig:
    spec = policy.spec
    redis = spec.backend.redis
    return RateLimitConfig(
        policy=f"{policy.namespace}/{policy.name}",
        limits=_convert(spec.limits, RateLimits),
        count_by=cast(RuntimeCountBy, str(spec.count_by)),
        tiers=[_convert(tier, Tier) for tier in spec.tiers],
        backend=RateLimitBackendConfig(
            type=spec.backend.type,
            redis_url_file=RATE_LIMIT_REDIS_URL_FILE if spec.backend.type == "redis" else None,
            key_prefix=redis.key_prefix if redis is not None else "sentient:rl:",
        ),
        on_redis_unavailable=spec.on_redis_unavailable,
    )


def build_runtime_config(inputs: AgentInputs) -> RuntimeConfig:
    """The :class:`RuntimeConfig` of an agent; contains file names, never secret values."""
    spec = inputs.spec
    auth = spec.auth
    jwt = None
    if auth.jwt is not None:
        jwt = JWTConfig(
            issuer=auth.jwt.issuer,
            audiences=list(auth.jwt.audiences),
            jwks_url=auth.jwt.jwks_url,
            tier_claim=auth.jwt.tier_claim,
        )
    sessions = spec.sessions
    return RuntimeConfig(
        agent=AgentInfo(
            name=inputs.name,
            namespace=inputs.namespace,
            description=spec.description,
            system_prompt=inputs.system_prompt,
            capabilities=list(spec.capabilities),
            agent_class=spec.deployment.agent_class,
        ),
        llm=LLMRuntimeConfig(
            chain=[_provider_config(p) for p in inputs.providers],
            parameters=_convert(spec.llm.parameters, LLMParameters),
            reveal_provider=spec.llm.reveal_provider,
        ),
        rate_limit=_rate_limit_config(inputs.policy) if inputs.policy is not None else None,
        auth=AuthRuntimeConfig(
            anonymous=auth.anonymous,
            api_keys_file=API_KEYS_FILE if auth.api_keys is not None else None,
            jwt=jwt,
        ),
        sessions=SessionsRuntimeConfig(
            store=sessions.store,
            ttl=sessions.ttl,
            max_turns=sessions.max_turns,
            redis_url_file=SESSIONS_REDIS_URL_FILE if sessions.store == "redis" else None,
        ),
        server=ServerConfig(limits=_convert(spec.server.limits, ServerLimits)),
    )


def render_config(inputs: AgentInputs) -> tuple[str, str]:
    """The ``config.yaml`` text of an agent and its SHA-256 (the config hash)."""
    text = dump_config(build_runtime_config(inputs))
    return text, hashlib.sha256(text.encode()).hexdigest()
