"""Warnings of ``sentient validate``: valid manifests that will not behave as their author may expect.

A warning never fails validation. Today: an agent with ``spec.server.workers`` > 1 whose rate
limits or sessions live in memory. Each worker process counts and remembers on its own, as each
replica does: a memory limit admits up to workers x replicas x the limit, and a conversation
continues only when its next request reaches the same worker. And an audit spool on one PVC shared
by several replicas (or an autoscaler), which a ReadWriteOnce claim cannot serve.
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
