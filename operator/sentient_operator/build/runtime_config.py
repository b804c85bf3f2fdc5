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
    CACHE_REDIS,
    MIB,
    OIDC_CLIENT_SECRET_FILE,
    RATE_LIMIT_REDIS,
    RATE_LIMIT_REDIS_URL_FILE,
    SESSIONS_POSTGRES_DSN_FILE,
    SESSIONS_REDIS,
    SESSIONS_REDIS_URL_FILE,
    TRACING_HEADERS_FILE,
    AgentInfo,
    AuditRuntimeConfig,
    AuditSinkConfig,
    AuthorizationConfig,
    AuthRuntimeConfig,
    CacheRuntimeConfig,
    ChainStep,
    CircuitBreaker,
    ConfigModel,
    GuardrailCheck,
    GuardrailRedaction,
    GuardrailsConfig,
    HTTPSinkConfig,
    IntrospectionConfig,
    JWTConfig,
    LLMParameters,
    LLMRuntimeConfig,
    ModerationService,
    OIDCConfig,
    PostgresSessionsConfig,
    ProviderConfig,
    ProviderLimits,
    ProviderTLS,
    RateLimitBackendConfig,
    RateLimitConfig,
    RateLimits,
    RedisConnectionConfig,
    RedisTLSConfig,
    RetryPolicy,
    RuntimeConfig,
    ServerConfig,
    ServerLimits,
    SessionsRuntimeConfig,
    SyslogSinkConfig,
    Tier,
    Timeouts,
    TracingConfig,
    audit_sink_ca_file,
    audit_sink_token_file,
    dump_config,
    provider_ca_file,
    provider_credential_file,
    redis_ca_file,
    redis_password_file,
    redis_sentinel_password_file,
    redis_url_file,
)
from agent_runtime.config import AuditSinkTLS as RuntimeAuditSinkTLS
from agent_runtime.config import BalanceStrategy as RuntimeBalanceStrategy
from agent_runtime.config import CountByName as RuntimeCountBy
from agent_runtime.config import ModelPrice as RuntimePrice
from agent_runtime.config import ProviderType as RuntimeProviderType
from agent_runtime.config import RedisMode as RuntimeRedisMode
from agent_runtime.config import SpendBudget as RuntimeBudget
from sentient_operator.api.v1alpha1 import (
    AuditConfig,
    AuditSink,
    AuditSinkTLS,
    AuthConfig,
    BalanceStrategy,
    GuardrailModeration,
    LLMConfig,
    Model,
    PostgresSessions,
    ProviderType,
    RedisConnection,
    RedisMode,
    ResponseCacheConfig,
    SessionsConfig,
)
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
        weight=provider.weight,
        price=_price(provider),
    )


def _price(provider: ResolvedProvider) -> RuntimePrice | None:
    """The chain entry's model price from the provider's pricing (its own entry, else the default)."""
    pricing = provider.spec.pricing
    price = pricing.price_of(provider.model) if pricing is not None else None
    if pricing is None or price is None:
        return None
    return RuntimePrice(
        currency=pricing.currency,
        input_per_million=price.input_per_million,
        output_per_million=price.output_per_million,
    )


def chain_steps(llm: LLMConfig) -> list[ChainStep] | None:
    """How the rendered chain groups into steps; None when no step has members, so that a chain
    of plain entries renders exactly as it did before steps existed."""
    if all(entry.members is None for entry in llm.chain):
        return None
    steps = []
    for entry in llm.chain:
        latency = entry.lowest_latency
        steps.append(
            ChainStep(
                size=len(entry.targets()),
                # Both enumerations hold the same words (asserted where the CRD's is declared).
                strategy=cast(RuntimeBalanceStrategy, str(entry.strategy or BalanceStrategy.WEIGHT.value)),
                **(
                    {"latency_half_life": latency.half_life, "probe_interval": latency.probe_interval}
                    if latency is not None
                    else {}
                ),
            )
        )
    return steps


def redis_connection_config(connection: RedisConnection, use: str) -> RedisConnectionConfig | None:
    """Cluster and sentinel connections as the runtime reads them, with their files named for ``use``.

    None for standalone: it keeps the plain URL-file form, so a standalone agent renders exactly
    as before (no rollout on upgrade, and older runtimes keep reading it).
    """
    if connection.mode == RedisMode.STANDALONE:
        return None
    sentinel = connection.sentinel
    tls = connection.tls
    return RedisConnectionConfig(
        mode=cast(RuntimeRedisMode, str(connection.mode)),
        nodes=list(connection.cluster.nodes) if connection.cluster is not None else [],
        sentinels=list(sentinel.addresses) if sentinel is not None else [],
        master_name=sentinel.master_name if sentinel is not None else None,
        username=connection.username,
        password_file=redis_password_file(use) if connection.password_secret_ref is not None else None,
        sentinel_password_file=(
            redis_sentinel_password_file(use)
            if sentinel is not None and sentinel.password_secret_ref is not None
            else None
        ),
        tls=RedisTLSConfig(
            enabled=tls is not None,
            ca_file=redis_ca_file(use) if tls is not None and tls.ca_secret_ref is not None else None,
            insecure_skip_verify=tls.insecure_skip_verify if tls is not None else False,
        ),
    )


def _rate_limit_config(policy: ResolvedPolicy) -> RateLimitConfig:
    spec = policy.spec
    redis = spec.backend.redis
    connection = redis_connection_config(redis, RATE_LIMIT_REDIS) if redis is not None else None
    standalone = spec.backend.type == "redis" and connection is None
    return RateLimitConfig(
        policy=f"{policy.namespace}/{policy.name}",
        limits=_convert(spec.limits, RateLimits),
        count_by=cast(RuntimeCountBy, str(spec.count_by)),
        tiers=[_convert(tier, Tier) for tier in spec.tiers],
        backend=RateLimitBackendConfig(
            type=spec.backend.type,
            redis_url_file=RATE_LIMIT_REDIS_URL_FILE if standalone else None,
            redis=connection,
            key_prefix=redis.key_prefix if redis is not None else "sentient:rl:",
        ),
        on_redis_unavailable=spec.on_redis_unavailable,
        budgets=[_convert(budget, RuntimeBudget) for budget in spec.budgets],
    )


def _moderation_service(moderation: GuardrailModeration, inputs: AgentInputs) -> ModerationService:
    """The moderation endpoint of the chain provider it names: its URL, key file and TLS."""
    ref = moderation.provider_ref
    namespace = ref.namespace or inputs.namespace
    provider = next((p for p in inputs.providers if p.name == ref.name and p.namespace == namespace), None)
    if provider is None:
        raise ValueError(
            f"spec.guardrails.moderation.providerRef: {namespace}/{ref.name} is not in spec.llm.chain"
        )
    if str(provider.spec.type) == ProviderType.ANTHROPIC.value:
        raise ValueError(
            f"spec.guardrails.moderation.providerRef: {provider.id} is an anthropic provider, "
            "which serves no /moderations endpoint"
        )
    config = _provider_config(provider)
    return ModerationService(
        endpoint=config.endpoint,
        model=moderation.model,
        credential_file=config.credential_file,
        tls=config.tls,
        timeout=moderation.timeout,
        on_error=moderation.on_error,
    )


def _guardrails_config(inputs: AgentInputs) -> GuardrailsConfig | None:
    spec = inputs.spec.guardrails
    if spec is None:
        return None
    return GuardrailsConfig(
        input=[_convert(check, GuardrailCheck) for check in spec.input],
        output=[_convert(check, GuardrailCheck) for check in spec.output],
        moderation=_moderation_service(spec.moderation, inputs) if spec.moderation is not None else None,
        redact=_convert(spec.redact, GuardrailRedaction),
        stream_window=spec.stream_window,
    )


def _tracing_config(inputs: AgentInputs) -> TracingConfig | None:
    spec = inputs.spec.tracing
    if spec is None:
        return None
    return TracingConfig(
        endpoint=spec.endpoint,
        protocol=spec.protocol,
        sampling_ratio=float(spec.sampling_ratio),
        headers_file=TRACING_HEADERS_FILE if spec.headers_secret_ref is not None else None,
        capture_content=spec.capture_content,
        timeout=spec.timeout,
        max_queue_size=spec.max_queue_size,
    )


def _audit_sink_tls(sink: str, tls: AuditSinkTLS | None) -> RuntimeAuditSinkTLS | None:
    if tls is None:
        return None
    ca_file = audit_sink_ca_file(sink) if tls.ca_secret_ref is not None else None
    return RuntimeAuditSinkTLS(ca_file=ca_file, server_name=tls.server_name)


def _audit_sink(sink: AuditSink) -> AuditSinkConfig:
    syslog = http = None
    if sink.syslog is not None:
        spec = sink.syslog
        syslog = SyslogSinkConfig(
            address=spec.address,
            tls=_audit_sink_tls(sink.name, spec.tls),
            facility=spec.facility,
            app_name=spec.app_name,
            structured_data=spec.structured_data,
            timeout=spec.timeout,
        )
    if sink.http is not None:
        web = sink.http
        optional = {"sourcetype": web.sourcetype} if web.sourcetype else {}
        http = HTTPSinkConfig(
            url=web.url,
            format=web.format,
            token_file=audit_sink_token_file(sink.name) if web.token_secret_ref is not None else None,
            index=web.index,
            source=web.source,
            timeout=web.timeout,
            tls=_audit_sink_tls(sink.name, web.tls),
            **optional,
        )
    return AuditSinkConfig(
        name=sink.name,
        syslog=syslog,
        http=http,
        max_buffer_bytes=sink.max_buffer_mib * MIB,
        batch_size=sink.batch_size,
    )


def _audit_config(audit: AuditConfig | None) -> AuditRuntimeConfig | None:
    """The SIEM sinks; the spool directory is the runtime's default, where the pod mounts the volume."""
    if audit is None or not audit.sinks:
        return None
    return AuditRuntimeConfig(
        sinks=[_audit_sink(sink) for sink in audit.sinks], fsync_interval=audit.spool.fsync_interval
    )


def _sessions_config(sessions: SessionsConfig) -> SessionsRuntimeConfig:
    connection = sessions.connection() if sessions.store == "redis" else None
    runtime_connection = (
        redis_connection_config(connection, SESSIONS_REDIS) if connection is not None else None
    )
    return SessionsRuntimeConfig(
        store=sessions.store,
        ttl=sessions.ttl,
        max_turns=sessions.max_turns,
        redis_url_file=SESSIONS_REDIS_URL_FILE
        if connection is not None and runtime_connection is None
        else None,
        redis=runtime_connection,
        postgres=_postgres_sessions(sessions.postgres) if sessions.store == "postgres" else None,
    )


def _postgres_sessions(postgres: PostgresSessions | None) -> PostgresSessionsConfig | None:
    # The DSN itself goes to the bound Secret (children.py); the config names its file only.
    if postgres is None:
        return None
    return PostgresSessionsConfig(
        dsn_file=SESSIONS_POSTGRES_DSN_FILE,
        pool_size=postgres.pool_size,
        schema_name=postgres.schema_name,
        table_name=postgres.table_name,
    )


def _cache_config(cache: ResponseCacheConfig | None) -> CacheRuntimeConfig | None:
    """The runtime's cache section: None (off) unless the spec enables it."""
    if cache is None or not cache.enabled:
        return None
    redis = None
    if cache.redis is not None:
        # Always the full connection form: the cache is newer than the URL-file shorthand.
        redis = redis_connection_config(cache.redis, CACHE_REDIS) or RedisConnectionConfig(
            mode="standalone", url_file=redis_url_file(CACHE_REDIS)
        )
    return CacheRuntimeConfig(
        backend=cache.backend,
        ttl=cache.ttl,
        scope=cache.scope,
        max_entries=cache.max_entries,
        max_bytes=cache.max_bytes,
        max_entry_bytes=cache.max_entry_bytes,
        redis=redis,
    )


def _oidc_config(auth: AuthConfig) -> OIDCConfig | None:
    """The OIDC settings; the introspection client secret is a file of the bound Secret, never inlined."""
    oidc = auth.oidc
    if oidc is None:
        return None
    introspection = None
    if oidc.introspection is not None:
        spec = oidc.introspection
        introspection = IntrospectionConfig(
            endpoint=spec.endpoint,
            client_id=spec.client_id,
            client_secret_file=OIDC_CLIENT_SECRET_FILE,
            cache_ttl=spec.cache_ttl,
            negative_cache_ttl=spec.negative_cache_ttl,
            max_entries=spec.max_entries,
            timeout=spec.timeout,
        )
    return OIDCConfig(
        issuer=oidc.issuer,
        audiences=list(oidc.audiences),
        jwks_url=oidc.jwks_url,
        introspection=introspection,
        tier_claim=oidc.tier_claim,
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
            steps=chain_steps(spec.llm),
        ),
        rate_limit=_rate_limit_config(inputs.policy) if inputs.policy is not None else None,
        auth=AuthRuntimeConfig(
            anonymous=auth.anonymous,
            api_keys_file=API_KEYS_FILE if auth.api_keys is not None else None,
            jwt=jwt,
            oidc=_oidc_config(auth),
            authorization=_convert(auth.authorization, AuthorizationConfig)
            if auth.authorization is not None
            else None,
        ),
        sessions=_sessions_config(spec.sessions),
        server=ServerConfig(
            workers=spec.server.workers,
            busy_poll=spec.server.busy_poll,
            limits=_convert(spec.server.limits, ServerLimits),
        ),
        guardrails=_guardrails_config(inputs),
        audit=_audit_config(spec.audit),
        cache=_cache_config(spec.cache),
        tracing=_tracing_config(inputs),
    )


def render_config(inputs: AgentInputs) -> tuple[str, str]:
    """The ``config.yaml`` text of an agent and its SHA-256 (the config hash)."""
    text = dump_config(build_runtime_config(inputs))
    return text, hashlib.sha256(text.encode()).hexdigest()
