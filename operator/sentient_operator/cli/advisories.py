"""Warnings of ``sentient validate``: valid manifests that will not behave as their author may expect.

A warning never fails validation. Today: an agent with ``spec.server.workers`` > 1 whose rate
limits or sessions live in memory, and a memory response cache on more than one process. Each
worker process counts and remembers on its own, as each replica does: a memory limit admits up to workers x replicas x the limit, and a conversation
continues only when its next request reaches the same worker. And a load-balanced chain step
whose members' LLMProviders (in the files given) read the same credential: spreading over one
key spreads nothing of the upstream's per-key quota. And a Secret in the same files that
an agent names as its sessions' PostgreSQL DSN but that holds no postgresql:// URL (the runtime
would refuse it).
And an audit spool PVC under several replicas (or an autoscaler), which a ReadWriteOnce claim
cannot serve.
"""

from __future__ import annotations

import base64
import binascii
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
