"""Resolve what a SentientAgent references: providers, policy, Secrets, ConfigMaps.

Pure: lookups go through a :class:`Lookup` (in the operator, kopf's in-memory
indexes; in tests, dicts), so every reason an agent cannot be rendered is
unit-tested without a cluster. A problem never raises: it becomes a
:class:`Problem` that the handler turns into a condition with a reason.
Messages name objects and keys, never values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import ValidationError

from agent_runtime.config import (
    CACHE_REDIS,
    RATE_LIMIT_REDIS,
    RATE_LIMIT_REDIS_URL_FILE,
    SESSIONS_REDIS,
    SESSIONS_REDIS_URL_FILE,
    redis_ca_file,
    redis_password_file,
    redis_sentinel_password_file,
    redis_url_file,
)
from sentient_operator.api.v1alpha1 import (
    LLMProviderSpec,
    RateLimitPolicySpec,
    RedisConnection,
    SecretKeyRef,
    SentientAgentSpec,
)
from sentient_operator.build.common import provider_secret_name
from sentient_operator.build.inputs import AgentInputs, APIKey, ResolvedPolicy, ResolvedProvider
from sentient_operator.credentials.base import CREDENTIALS_SYNCED
from sentient_operator.credentials.validate import CREDENTIALS_VALID, Validity

PROVIDERS_RESOLVED = "ProvidersResolved"
CREDENTIALS_READY = "CredentialsReady"
CONFIG_RESOLVED = "ConfigResolved"

PROVIDER_SECRET_KEY = "apiKey"  # noqa: S105 - a key name, not a value
PROVIDER_CA_KEY = "ca.pem"
TIER_SUFFIX = ".tier"
REASON_UNAUTHORIZED = Validity.UNAUTHORIZED.value
#: A provider's first credential sync has not finished: a moment, not a fault (no Warning Event).
REASON_PENDING = "CredentialsPending"


class Lookup(Protocol):
    """Read access to the objects an agent may reference (decoded Secret data)."""

    def provider(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The LLMProvider object, or None."""

    def policy(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The RateLimitPolicy object, or None."""

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """A Secret's data decoded to text, or None."""

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """A ConfigMap's data, or None."""


@dataclass(frozen=True)
class Problem:
    """Why an agent cannot be rendered: the condition it affects, a reason and a message."""

    condition: str
    reason: str
    message: str


@dataclass
class Resolution:
    """The result of resolving an agent: its inputs when complete, its problems otherwise."""

    inputs: AgentInputs | None
    problems: list[Problem] = field(default_factory=list)
    chain: list[dict[str, Any]] = field(default_factory=list)
    #: Problems that do not stop the agent from being rendered (e.g. a provider's refused key).
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything resolved."""
        return self.inputs is not None and not self.problems


def namespace_allowed(allowed: list[str], owner_namespace: str, requester_namespace: str) -> bool:
    """Whether an object in ``owner_namespace`` may be used from ``requester_namespace``.

    Empty ``allowed`` means the owner's namespace only; ``"*"`` means every namespace.
    """
    if requester_namespace == owner_namespace:
        return True
    return "*" in allowed or requester_namespace in allowed


def _secret_value(
    lookup: Lookup, ref: SecretKeyRef, default_namespace: str, what: str, problems: list[Problem]
) -> str | None:
    namespace = default_namespace
    data = lookup.secret(namespace, ref.name)
    if data is None:
        problems.append(
            Problem(CREDENTIALS_READY, "SecretNotFound", f"{what}: Secret {namespace}/{ref.name} not found")
        )
        return None
    if ref.key not in data:
        problems.append(
            Problem(
                CREDENTIALS_READY,
                "SecretKeyNotFound",
                f"{what}: Secret {namespace}/{ref.name} has no key {ref.key}",
            )
        )
        return None
    return data[ref.key]


def _resolve_provider(
    agent_namespace: str,
    ref_name: str,
    ref_namespace: str | None,
    entry_model: str | None,
    lookup: Lookup,
    problems: list[Problem],
    warnings: list[Problem],
) -> tuple[ResolvedProvider | None, dict[str, Any]]:
    namespace = ref_namespace or agent_namespace
    status: dict[str, Any] = {"provider": f"{namespace}/{ref_name}", "resolved": False, "ready": False}
    if entry_model:
        status["model"] = entry_model
    obj = lookup.provider(namespace, ref_name)
    if obj is None:
        problems.append(
            Problem(PROVIDERS_RESOLVED, "ProviderNotFound", f"LLMProvider {namespace}/{ref_name} not found")
        )
        status["reason"] = "ProviderNotFound"
        return None, status
    try:
        spec = LLMProviderSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        problems.append(
            Problem(
                PROVIDERS_RESOLVED,
                "ProviderInvalid",
                f"LLMProvider {namespace}/{ref_name} has an invalid spec ({exc.error_count()} errors)",
            )
        )
        status["reason"] = "ProviderInvalid"
        return None, status
    if not namespace_allowed(spec.allowed_namespaces, namespace, agent_namespace):
        problems.append(
            Problem(
                PROVIDERS_RESOLVED,
                "ProviderForbidden",
                f"LLMProvider {namespace}/{ref_name} does not allow namespace {agent_namespace}",
            )
        )
        status["reason"] = "ProviderForbidden"
        return None, status
    model = entry_model or spec.default_model or (spec.models[0] if spec.models else None)
    if model is None:
        problems.append(
            Problem(
                PROVIDERS_RESOLVED,
                "ModelNotSet",
                f"no model for LLMProvider {namespace}/{ref_name}: set the chain entry's model or defaultModel",
            )
        )
        status["reason"] = "ModelNotSet"
        return None, status
    if spec.models and model not in spec.models:
        problems.append(
            Problem(
                PROVIDERS_RESOLVED,
                "ModelNotServed",
                f"LLMProvider {namespace}/{ref_name} does not list model {model}",
            )
        )
        status["reason"] = "ModelNotServed"
        return None, status
    status["model"] = model
    status["resolved"] = True
    api_key: str | None = None
    ca_pem: str | None = None
    fingerprint: str | None = None
    if spec.credentials is not None:
        secret_name = provider_secret_name(ref_name)
        data = lookup.secret(namespace, secret_name)
        if data is None or PROVIDER_SECRET_KEY not in data:
            problem = _unsynced(obj, namespace, ref_name)
            problems.append(problem)
            status["reason"] = problem.reason
            return None, status
        api_key = data[PROVIDER_SECRET_KEY]
        ca_pem = data.get(PROVIDER_CA_KEY)
        fingerprint = (obj.get("status") or {}).get("credentialsFingerprint")
    refused = _refused_credential(obj)
    if refused is not None:
        # Still rendered: the chain fails over, and the key may come back without a spec change.
        warnings.append(
            Problem(CREDENTIALS_VALID, REASON_UNAUTHORIZED, f"LLMProvider {namespace}/{ref_name}: {refused}")
        )
        status["reason"] = REASON_UNAUTHORIZED
    status["ready"] = refused is None
    provider = ResolvedProvider(
        namespace=namespace,
        name=ref_name,
        spec=spec,
        model=model,
        api_key=api_key,
        ca_pem=ca_pem,
        fingerprint=fingerprint,
    )
    return provider, status


def _unsynced(provider: Mapping[str, Any], namespace: str, name: str) -> Problem:
    """Why a provider's credential is not bound yet, in the provider's own words.

    A failed sync is ``CredentialsNotReady`` with the provider's message, which names the source
    the user wrote (e.g. ``Secret ns/openai-key not found``), not the internal provider Secret.
    A provider that has not finished its first sync is only ``CredentialsPending``: the normal
    state for a moment after an agent and its provider are created together (no Warning Event).
    """
    synced = None
    for cond in (provider.get("status") or {}).get("conditions") or []:
        if cond.get("type") == CREDENTIALS_SYNCED:
            synced = cond
    if synced is not None and synced.get("status") == "False":
        detail = synced.get("message") or synced.get("reason") or "the last sync failed"
        return Problem(
            CREDENTIALS_READY,
            "CredentialsNotReady",
            f"credentials of LLMProvider {namespace}/{name} are not synced: {detail}",
        )
    return Problem(
        CREDENTIALS_READY,
        REASON_PENDING,
        f"waiting for the first credential sync of LLMProvider {namespace}/{name}",
    )


def _refused_credential(provider: Mapping[str, Any]) -> str | None:
    """The message of the provider's ``CredentialsValid=False/Unauthorized`` condition, if set."""
    for cond in (provider.get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") == CREDENTIALS_VALID
            and cond.get("status") == "False"
            and cond.get("reason") == REASON_UNAUTHORIZED
        ):
            return str(cond.get("message") or "the upstream refused the credential")
    return None


def _resolve_policy(
    agent_namespace: str, spec: SentientAgentSpec, lookup: Lookup, problems: list[Problem]
) -> ResolvedPolicy | None:
    ref = spec.rate_limit_policy_ref
    if ref is None:
        return None
    namespace = ref.namespace or agent_namespace
    obj = lookup.policy(namespace, ref.name)
    if obj is None:
        problems.append(
            Problem(CONFIG_RESOLVED, "PolicyNotFound", f"RateLimitPolicy {namespace}/{ref.name} not found")
        )
        return None
    try:
        policy_spec = RateLimitPolicySpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        problems.append(
            Problem(
                CONFIG_RESOLVED,
                "PolicyInvalid",
                f"RateLimitPolicy {namespace}/{ref.name} has an invalid spec ({exc.error_count()} errors)",
            )
        )
        return None
    if not namespace_allowed(policy_spec.allowed_namespaces, namespace, agent_namespace):
        problems.append(
            Problem(
                CONFIG_RESOLVED,
                "PolicyForbidden",
                f"RateLimitPolicy {namespace}/{ref.name} does not allow namespace {agent_namespace}",
            )
        )
        return None
    redis_files: dict[str, str] = {}
    if policy_spec.backend.type == "redis":
        if policy_spec.backend.redis is None:
            problems.append(
                Problem(
                    CONFIG_RESOLVED,
                    "PolicyInvalid",
                    f"RateLimitPolicy {namespace}/{ref.name}: redis backend unset",
                )
            )
            return None
        # The Redis Secrets are read in the policy's namespace: the policy owner granted their use.
        resolved = _resolve_redis(
            lookup,
            policy_spec.backend.redis,
            namespace,
            f"Redis of RateLimitPolicy {namespace}/{ref.name}",
            RATE_LIMIT_REDIS,
            problems,
        )
        if resolved is None:
            return None
        redis_files = resolved
    return ResolvedPolicy(
        namespace=namespace,
        name=ref.name,
        spec=policy_spec,
        redis_url=redis_files.pop(RATE_LIMIT_REDIS_URL_FILE, None),
        redis_files=redis_files,
    )


def _resolve_redis(
    lookup: Lookup, connection: RedisConnection, namespace: str, what: str, use: str, problems: list[Problem]
) -> dict[str, str] | None:
    """The bound-Secret entries of one Redis connection (file name -> value), or None on a problem."""
    wanted: list[tuple[str, SecretKeyRef | None, str]] = [
        (redis_url_file(use), connection.address_secret_ref, what),
        (redis_password_file(use), connection.password_secret_ref, f"{what} (password)"),
    ]
    if connection.sentinel is not None:
        wanted.append(
            (
                redis_sentinel_password_file(use),
                connection.sentinel.password_secret_ref,
                f"{what} (Sentinel password)",
            )
        )
    if connection.tls is not None:
        wanted.append((redis_ca_file(use), connection.tls.ca_secret_ref, f"{what} (CA)"))
    files: dict[str, str] = {}
    for file_name, ref, label in wanted:
        if ref is None:
            continue
        value = _secret_value(lookup, ref, namespace, label, problems)
        if value is None:
            return None
        files[file_name] = value
    return files


def _resolve_api_keys(
    agent_namespace: str, spec: SentientAgentSpec, lookup: Lookup, problems: list[Problem]
) -> dict[str, APIKey]:
    if spec.auth.api_keys is None:
        return {}
    name = spec.auth.api_keys.secret_ref.name
    data = lookup.secret(agent_namespace, name)
    if data is None:
        problems.append(
            Problem(CREDENTIALS_READY, "SecretNotFound", f"API-key Secret {agent_namespace}/{name} not found")
        )
        return {}
    keys: dict[str, APIKey] = {}
    for key_id, value in sorted(data.items()):
        if key_id.endswith(TIER_SUFFIX):
            continue
        tier = data.get(key_id + TIER_SUFFIX)
        keys[key_id] = APIKey(key=value.strip(), tier=tier.strip() if tier is not None else None)
    return keys


def _resolve_tracing_headers(
    agent_namespace: str, spec: SentientAgentSpec, lookup: Lookup, problems: list[Problem]
) -> str | None:
    """The exporter's headers as a JSON object (every key of the Secret), or None when none are set."""
    tracing = spec.tracing
    if tracing is None or tracing.headers_secret_ref is None:
        return None
    name = tracing.headers_secret_ref.name
    data = lookup.secret(agent_namespace, name)
    if data is None:
        problems.append(
            Problem(
                CREDENTIALS_READY,
                "SecretNotFound",
                f"tracing headers: Secret {agent_namespace}/{name} not found",
            )
        )
        return None
    # Sorted: the same Secret renders the same bound key, so nothing rolls without a change.
    return json.dumps(dict(sorted(data.items())), separators=(",", ":"))


def _resolve_prompt(
    agent_namespace: str, spec: SentientAgentSpec, lookup: Lookup, problems: list[Problem]
) -> str:
    if spec.system_prompt_from is None:
        return spec.system_prompt or ""
    ref = spec.system_prompt_from
    data = lookup.config_map(agent_namespace, ref.name)
    if data is None:
        problems.append(
            Problem(CONFIG_RESOLVED, "ConfigMapNotFound", f"ConfigMap {agent_namespace}/{ref.name} not found")
        )
        return ""
    if ref.key not in data:
        problems.append(
            Problem(
                CONFIG_RESOLVED,
                "ConfigMapKeyNotFound",
                f"ConfigMap {agent_namespace}/{ref.name} has no key {ref.key}",
            )
        )
        return ""
    return data[ref.key]


def _resolve_audit_sinks(
    agent_namespace: str, spec: SentientAgentSpec, lookup: Lookup, problems: list[Problem]
) -> dict[str, str]:
    """The audit sinks' tokens and CA bundles, by bound-Secret file name."""
    files: dict[str, str] = {}
    for sink in spec.audit.sinks if spec.audit is not None else []:
        for file_name, ref in sink.secret_files():
            value = _secret_value(lookup, ref, agent_namespace, f"audit sink {sink.name}", problems)
            if value is not None:
                files[file_name] = value
    return files


def resolve(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: SentientAgentSpec,
    lookup: Lookup,
    image: str,
    audit_key: str,
    service_monitor_available: bool = False,
) -> Resolution:
    """Resolve every reference of one agent into :class:`AgentInputs`, or say why not."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    providers: list[ResolvedProvider] = []
    chain: list[dict[str, Any]] = []
    for entry in spec.llm.chain:
        balanced = entry.members is not None
        for member in entry.targets():
            provider, status = _resolve_provider(
                namespace,
                member.provider_ref.name,
                member.provider_ref.namespace,
                member.model,
                lookup,
                problems,
                warnings,
            )
            chain.append(status)
            if provider is not None:
                providers.append(replace(provider, weight=member.weight or 1) if balanced else provider)
    policy = _resolve_policy(namespace, spec, lookup, problems)
    api_keys = _resolve_api_keys(namespace, spec, lookup, problems)
    prompt = _resolve_prompt(namespace, spec, lookup, problems)
    oidc_client_secret: str | None = None
    introspection = spec.auth.oidc.introspection if spec.auth.oidc is not None else None
    if introspection is not None:
        value = _secret_value(
            lookup, introspection.client_secret_ref, namespace, "OIDC introspection client secret", problems
        )
        oidc_client_secret = value.strip() if value is not None else None
    tracing_headers = _resolve_tracing_headers(namespace, spec, lookup, problems)
    audit_sink_files = _resolve_audit_sinks(namespace, spec, lookup, problems)
    sessions_redis_url: str | None = None
    sessions_redis_files: dict[str, str] = {}
    if spec.sessions.store == "redis":
        connection = spec.sessions.connection()
        if connection is None:
            problems.append(
                Problem(
                    CONFIG_RESOLVED, "SessionsInvalid", "sessions.store is redis but no Redis is configured"
                )
            )
        else:
            resolved = _resolve_redis(
                lookup, connection, namespace, "sessions Redis", SESSIONS_REDIS, problems
            )
            if resolved is not None:
                sessions_redis_url = resolved.pop(SESSIONS_REDIS_URL_FILE, None)
                sessions_redis_files = resolved
    sessions_postgres_dsn: str | None = None
    if spec.sessions.store == "postgres" and spec.sessions.postgres is not None:
        sessions_postgres_dsn = _secret_value(
            lookup, spec.sessions.postgres.dsn_secret_ref, namespace, "sessions PostgreSQL DSN", problems
        )
    cache_redis_files: dict[str, str] = {}
    cache_redis = spec.cache.connection() if spec.cache is not None else None
    if cache_redis is not None:
        cache_redis_files = (
            _resolve_redis(lookup, cache_redis, namespace, "response cache Redis", CACHE_REDIS, problems)
            or {}
        )
    if problems:
        return Resolution(inputs=None, problems=problems, chain=chain, warnings=warnings)
    inputs = AgentInputs(
        name=name,
        namespace=namespace,
        uid=uid,
        spec=spec,
        providers=providers,
        image=image,
        policy=policy,
        system_prompt=prompt,
        api_keys=api_keys,
        oidc_client_secret=oidc_client_secret,
        sessions_redis_url=sessions_redis_url,
        sessions_redis_files=sessions_redis_files,
        audit_sink_files=audit_sink_files,
        sessions_postgres_dsn=sessions_postgres_dsn,
        cache_redis_files=cache_redis_files,
        tracing_headers=tracing_headers,
        audit_key=audit_key,
        service_monitor_available=service_monitor_available,
    )
    return Resolution(inputs=inputs, problems=[], chain=chain, warnings=warnings)
