"""The agent's runtime configuration (the ConfigMap's ``config.yaml``), from spec + resolved inputs."""

from __future__ import annotations

import hashlib

from agent_runtime.config import (
    API_KEYS_FILE,
    RATE_LIMIT_REDIS_URL_FILE,
    SESSIONS_REDIS_URL_FILE,
    AgentInfo,
    AuthRuntimeConfig,
    JWTConfig,
    LLMRuntimeConfig,
    ProviderConfig,
    ProviderTLS,
    RateLimitBackendConfig,
    RateLimitConfig,
    RuntimeConfig,
    SessionsRuntimeConfig,
    dump_config,
    provider_ca_file,
    provider_credential_file,
)
from sentient_operator.api.v1alpha1 import ProviderType
from sentient_operator.build.inputs import AgentInputs, ResolvedPolicy, ResolvedProvider

DEFAULT_ENDPOINTS: dict[str, str] = {
    ProviderType.OPENAI.value: "https://api.openai.com/v1",
    ProviderType.ANTHROPIC.value: "https://api.anthropic.com",
}


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
        type=spec.type,
        endpoint=provider_endpoint(provider),
        model=provider.model,
        credential_file=(
            provider_credential_file(provider.namespace, provider.name)
            if spec.credentials is not None
            else None
        ),
        default_headers=dict(spec.default_headers),
        tls=tls,
        timeouts=spec.timeouts,
        retry=spec.retry,
        circuit_breaker=spec.circuit_breaker,
        limits=spec.limits,
    )


def _rate_limit_config(policy: ResolvedPolicy) -> RateLimitConfig:
    spec = policy.spec
    redis = spec.backend.redis
    return RateLimitConfig(
        policy=f"{policy.namespace}/{policy.name}",
        limits=spec.limits,
        count_by=spec.count_by,
        tiers=list(spec.tiers),
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
            parameters=spec.llm.parameters,
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
    )


def render_config(inputs: AgentInputs) -> tuple[str, str]:
    """The ``config.yaml`` text of an agent and its SHA-256 (the config hash)."""
    text = dump_config(build_runtime_config(inputs))
    return text, hashlib.sha256(text.encode()).hexdigest()
