"""Warnings of ``sentient validate``: valid manifests that will not behave as their author may expect.

A warning never fails validation. Each function here looks at every document of the files given
and returns its warnings; :func:`all_warnings` runs them all. Today:

- an agent with ``spec.server.workers`` > 1 whose rate limits or sessions live in memory: each
  worker process counts and remembers on its own, as each replica does, so a memory limit admits up
  to workers x replicas x the limit, and a conversation continues only when its next request
  reaches the same worker;
- an enabled memory response cache on more than one process (each keeps its own entries);
- a load-balanced chain step whose members' LLMProviders (in the files given) read the same
  credential: spreading over one key spreads nothing of the upstream's per-key quota;
- a Secret in the same files that an agent names as its sessions' PostgreSQL DSN but that holds no
  postgresql:// URL (the runtime would refuse it);
- a spend budget whose currency no LLMProvider in the files is priced in: it would count every
  model as free;
- roles (``spec.auth.authorization``) naming an API key that the key Secret in the files lacks, or a
  tier that the agent's RateLimitPolicy in the files lacks;
- tracing that sends more than its author may mean to: exporter headers (credentials) over plain
  HTTP, prompts and answers on the spans;
- an audit spool on a PersistentVolumeClaim shared by more than one replica.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from sentient_operator.cli.problems import Problem
from sentient_operator.cli.yamlpos import Document


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _policy_backends(documents: list[tuple[Document, str]]) -> dict[tuple[str | None, str], str]:
    """Backend type of every RateLimitPolicy in the files, by (namespace, name)."""
    backends: dict[tuple[str | None, str], str] = {}
    for doc, _ in documents:
        if _get(doc.data, "kind") != "RateLimitPolicy":
            continue
        name = _get(doc.data, "metadata", "name")
        if isinstance(name, str):
            backend = _get(doc.data, "spec", "backend", "type")
            backends[(_get(doc.data, "metadata", "namespace"), name)] = (
                backend if isinstance(backend, str) else "memory"
            )
    return backends


def worker_warnings(documents: list[tuple[Document, str]]) -> list[Problem]:
    """Warnings for agents with several workers and memory-backed limits or sessions."""
    backends = _policy_backends(documents)
    warnings: list[Problem] = []
    for doc, file in documents:
        data = doc.data
        if _get(data, "kind") != "SentientAgent":
            continue
        workers = _get(data, "spec", "server", "workers")
        if not isinstance(workers, int) or workers <= 1:
            continue
        line = doc.line_of(("spec", "server", "workers"))
        ref = _get(data, "spec", "rateLimitPolicyRef")
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            namespace = ref.get("namespace") or _get(data, "metadata", "namespace")
            backend = backends.get((namespace, ref["name"]))
            if backend is None:
                # Without a namespace on either side both sit in the same (current) namespace.
                backend = next((b for (_, n), b in backends.items() if n == ref["name"]), None)
            if backend == "memory":
                warnings.append(
                    Problem(
                        file,
                        line,
                        "spec.server.workers",
                        f"RateLimitPolicy {ref['name']} keeps its counters in memory, per worker process: "
                        f"each of the {workers} workers admits the whole limit; use the redis backend "
                        "for exact limits",
                    )
                )
            elif backend is None:
                warnings.append(
                    Problem(
                        file,
                        line,
                        "spec.server.workers",
                        f"if RateLimitPolicy {ref['name']} uses the memory backend, each of the {workers} "
                        "workers admits the whole limit; the redis backend keeps limits exact",
                    )
                )
        if (_get(data, "spec", "sessions", "store") or "memory") == "memory":
            warnings.append(
                Problem(
                    file,
                    line,
                    "spec.server.workers",
                    f"sessions are kept in memory, per worker process: with {workers} workers the next "
                    "turn of an /assist conversation may reach a worker that does not hold it; use "
                    "sessions.store redis or postgres",
                )
            )
    return warnings


def _provider_credentials(documents: list[tuple[Document, str]]) -> dict[tuple[str | None, str], Any]:
    """``spec.credentials`` of every LLMProvider in the files that has one, by (namespace, name)."""
    found: dict[tuple[str | None, str], Any] = {}
    for doc, _ in documents:
        if _get(doc.data, "kind") != "LLMProvider":
            continue
        name = _get(doc.data, "metadata", "name")
        credentials = _get(doc.data, "spec", "credentials")
        if isinstance(name, str) and isinstance(credentials, dict):
            found[(_get(doc.data, "metadata", "namespace"), name)] = credentials
    return found


def balance_warnings(documents: list[tuple[Document, str]]) -> list[Problem]:
    """Warnings for load-balanced steps whose members read one and the same credential."""
    credentials = _provider_credentials(documents)
    warnings: list[Problem] = []
    for doc, file in documents:
        if _get(doc.data, "kind") != "SentientAgent":
            continue
        agent_namespace = _get(doc.data, "metadata", "namespace")
        chain = _get(doc.data, "spec", "llm", "chain")
        for index, step in enumerate(chain if isinstance(chain, list) else []):
            members = step.get("members") if isinstance(step, dict) else None
            seen: dict[str, str] = {}
            for member in members if isinstance(members, list) else []:
                ref = _get(member, "providerRef")
                if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
                    continue
                source = credentials.get((ref.get("namespace") or agent_namespace, ref["name"]))
                if source is None:
                    continue
                # The credential's source, not its value: the files hold references only.
                key = repr(sorted((k, repr(v)) for k, v in source.items() if k != "refreshInterval"))
                if key in seen and seen[key] != ref["name"]:
                    path: tuple[str | int, ...] = ("spec", "llm", "chain", index, "members")
                    warnings.append(
                        Problem(
                            file,
                            doc.line_of(path),
                            f"spec.llm.chain[{index}].members",
                            f"LLMProviders {seen[key]} and {ref['name']} read the same credential: the step "
                            "spreads requests over one API key (its per-key quota is not multiplied); give "
                            "each member its own key",
                        )
                    )
                seen.setdefault(key, ref["name"])
    return warnings


def _secret_value(doc: Document, key: str) -> str | None:
    string_data = _get(doc.data, "stringData")
    if isinstance(string_data, dict) and isinstance(string_data.get(key), str):
        return str(string_data[key])
    data = _get(doc.data, "data")
    if isinstance(data, dict) and isinstance(data.get(key), str):
        try:
            return base64.b64decode(data[key], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def sessions_dsn_warnings(documents: list[tuple[Document, str]]) -> list[Problem]:
    """Warnings for a PostgreSQL sessions DSN, given in the same files, that is not a postgresql:// URL.

    The value itself is never shown: it holds a password.
    """
    secrets = {
        (_get(doc.data, "metadata", "namespace"), _get(doc.data, "metadata", "name")): (doc, file)
        for doc, file in documents
        if _get(doc.data, "kind") == "Secret"
    }
    warnings: list[Problem] = []
    for doc, _ in documents:
        if _get(doc.data, "kind") != "SentientAgent":
            continue
        if _get(doc.data, "spec", "sessions", "store") != "postgres":
            continue
        ref = _get(doc.data, "spec", "sessions", "postgres", "dsnSecretRef")
        if not isinstance(ref, dict) or not isinstance(ref.get("key"), str):
            continue
        found = secrets.get((_get(doc.data, "metadata", "namespace"), ref.get("name")))
        if found is None:
            continue
        secret_doc, secret_file = found
        value = _secret_value(secret_doc, ref["key"])
        if value is None or value.strip().startswith(("postgresql://", "postgres://")):
            continue
        warnings.append(
            Problem(
                secret_file,
                secret_doc.line_of(("metadata", "name")),
                f"Secret {ref.get('name')} key {ref['key']}",
                "is the PostgreSQL DSN of spec.sessions.postgres.dsnSecretRef but not a postgresql:// URL "
                "(postgresql://user:password@host:5432/db?sslmode=require); the runtime refuses other forms",
            )
        )
    return warnings


def cache_warnings(documents: list[tuple[Document, str]]) -> list[Problem]:
    """Warnings for agents whose enabled memory response cache is split over several processes."""
    warnings: list[Problem] = []
    for doc, file in documents:
        data = doc.data
        if _get(data, "kind") != "SentientAgent" or _get(data, "spec", "cache", "enabled") is not True:
            continue
        if (_get(data, "spec", "cache", "backend") or "memory") != "memory":
            continue
        workers = _get(data, "spec", "server", "workers")
        replicas = _get(data, "spec", "replicas")
        processes = (workers if isinstance(workers, int) else 1) * (
            replicas if isinstance(replicas, int) else 1
        )
        if processes > 1:
            warnings.append(
                Problem(
                    file,
                    doc.line_of(("spec", "cache", "enabled")),
                    "spec.cache.backend",
                    f"the memory cache is kept per runtime process: each of the {processes} processes "
                    "(replicas x workers) stores its own answers, so a repeated request hits only where "
                    "it was stored; the redis backend shares one cache",
                )
            )
    return warnings


def budget_warnings(documents: list[tuple[Document, str]]) -> list[Problem]:
    """Warnings for spend budgets that count nothing: no provider in the files is priced in their currency.

    Only providers and policies in the same files are looked at; a budget whose priced providers
    live elsewhere gets no warning.
    """
    currencies: set[str] = set()
    providers = 0
    for doc, _ in documents:
        if _get(doc.data, "kind") == "LLMProvider":
            providers += 1
            pricing = _get(doc.data, "spec", "pricing")
            if isinstance(pricing, dict):
                currency = pricing.get("currency")
                currencies.add(currency if isinstance(currency, str) else "USD")
    if not providers:
        return []
    warnings: list[Problem] = []
    for doc, file in documents:
        if _get(doc.data, "kind") != "RateLimitPolicy":
            continue
        budgets = _get(doc.data, "spec", "budgets")
        for index, budget in enumerate(budgets if isinstance(budgets, list) else []):
            if not isinstance(budget, dict):
                continue
            currency = budget.get("currency") if isinstance(budget.get("currency"), str) else "USD"
            if currency not in currencies:
                warnings.append(
                    Problem(
                        file,
                        doc.line_of(("spec", "budgets", index)),
                        f"spec.budgets[{index}]",
                        f"no LLMProvider in these files has spec.pricing in {currency}: budget "
                        f"{budget.get('name')!r} counts unpriced models as free",
                    )
                )
    return warnings


def _named(documents: list[tuple[Document, str]], kind: str, name: str) -> dict[str, Any] | None:
    """The first document of ``kind`` named ``name`` in the files (namespaces are not compared)."""
    for doc, _ in documents:
        if _get(doc.data, "kind") == kind and _get(doc.data, "metadata", "name") == name:
            return doc.data if isinstance(doc.data, dict) else None
    return None


def authorization_warnings(documents: list[tuple[Document, str]]) -> list[Problem]:
    """Roles that grant a key ID the key Secret lacks, or a tier the agent's RateLimitPolicy lacks."""
    warnings: list[Problem] = []
    for doc, file in documents:
        data = doc.data
        roles = _get(data, "spec", "auth", "authorization", "roles")
        if _get(data, "kind") != "SentientAgent" or not isinstance(roles, list):
            continue
        line = doc.line_of(("spec", "auth", "authorization"))
        secret_name = _get(data, "spec", "auth", "apiKeys", "secretRef", "name")
        secret = _named(documents, "Secret", secret_name) if isinstance(secret_name, str) else None
        key_ids: set[str] | None = None
        if secret is not None:
            key_ids = {*(_get(secret, "stringData") or {}), *(_get(secret, "data") or {})}
        policy_name = _get(data, "spec", "rateLimitPolicyRef", "name")
        policy = _named(documents, "RateLimitPolicy", policy_name) if isinstance(policy_name, str) else None
        tiers = {t.get("name") for t in _get(policy, "spec", "tiers") or [] if isinstance(t, dict)}
        for role in roles:
            if not isinstance(role, dict):
                continue
            for key_id in role.get("apiKeys") or []:
                if key_ids is not None and key_id not in key_ids:
                    warnings.append(
                        Problem(
                            file,
                            line,
                            "spec.auth.authorization.roles",
                            f"role {role.get('name')} grants API key {key_id!r}, which Secret {secret_name} "
                            "does not hold: no caller gets the role through it",
                        )
                    )
            tier = role.get("tier")
            if isinstance(tier, str) and policy is not None and tier not in tiers:
                warnings.append(
                    Problem(
                        file,
                        line,
                        "spec.auth.authorization.roles",
                        f"role {role.get('name')} selects tier {tier!r}, which RateLimitPolicy {policy_name} "
                        "does not define: its callers get the policy's default limits",
                    )
                )
    return warnings


def tracing_warnings(documents: list[tuple[Document, str]]) -> list[Problem]:
    """Warnings for agents whose traces carry credentials in clear text or conversation content."""
    warnings: list[Problem] = []
    for doc, file in documents:
        data = doc.data
        tracing = _get(data, "spec", "tracing")
        if _get(data, "kind") != "SentientAgent" or not isinstance(tracing, dict):
            continue
        endpoint = tracing.get("endpoint")
        if tracing.get("headersSecretRef") and isinstance(endpoint, str) and endpoint.startswith("http://"):
            warnings.append(
                Problem(
                    file,
                    doc.line_of(("spec", "tracing", "headersSecretRef")),
                    "spec.tracing.headersSecretRef",
                    "the exporter's headers (often a token) go to the collector unencrypted over "
                    "http://; use an https:// endpoint",
                )
            )
        if tracing.get("captureContent") is True:
            warnings.append(
                Problem(
                    file,
                    doc.line_of(("spec", "tracing", "captureContent")),
                    "spec.tracing.captureContent",
                    "prompts (as sent to the model) and the model's answers (before output "
                    "guardrails) are copied onto the spans: whoever reads the traces reads them",
                )
            )
    return warnings


def audit_spool_warnings(documents: list[tuple[Document, str]]) -> list[Problem]:
    """Warnings for an audit spool PVC under more than one replica (docs/audit.md)."""
    warnings: list[Problem] = []
    for doc, file in documents:
        data = doc.data
        if _get(data, "kind") != "SentientAgent":
            continue
        claim = _get(data, "spec", "audit", "spool", "persistentVolumeClaim")
        replicas = _get(data, "spec", "replicas")
        scaled = _get(data, "spec", "autoscaling") is not None
        if not isinstance(claim, str) or not (scaled or (isinstance(replicas, int) and replicas > 1)):
            continue
        warnings.append(
            Problem(
                file,
                doc.line_of(("spec", "audit", "spool", "persistentVolumeClaim")),
                "spec.audit.spool.persistentVolumeClaim",
                f"every replica mounts PVC {claim}: a ReadWriteOnce claim holds one pod only, and pods "
                "sharing a ReadWriteMany claim share one spool; use it with one replica, or the emptyDir",
            )
        )
    return warnings


Advisory = Callable[[list[tuple[Document, str]]], list[Problem]]
ADVISORIES: tuple[Advisory, ...] = (
    worker_warnings,
    cache_warnings,
    balance_warnings,
    sessions_dsn_warnings,
    budget_warnings,
    authorization_warnings,
    tracing_warnings,
    audit_spool_warnings,
)


def all_warnings(documents: list[tuple[Document, str]]) -> list[Problem]:
    """Every advisory's warnings, in the order of :data:`ADVISORIES`."""
    return [warning for advisory in ADVISORIES for warning in advisory(documents)]
