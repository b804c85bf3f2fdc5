"""Warnings of ``sentient validate``: valid manifests that will not behave as their author may expect.

A warning never fails validation. Today: an agent with ``spec.server.workers`` > 1 whose rate
limits or sessions live in memory. Each worker process counts and remembers on its own, as each
replica does: a memory limit admits up to workers x replicas x the limit, and a conversation
continues only when its next request reaches the same worker. And roles
(``spec.auth.authorization``) naming an API key that the key Secret in the files lacks, or a
tier that the agent's RateLimitPolicy in the files lacks.
"""

from __future__ import annotations

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
                    "sessions.store redis",
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
