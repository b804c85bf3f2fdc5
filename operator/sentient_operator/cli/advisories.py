"""Warnings of ``sentient validate``: valid manifests that will not behave as their author may expect.

A warning never fails validation. Today: an agent with ``spec.server.workers`` > 1 whose rate
limits or sessions live in memory, and a memory response cache on more than one process. Each worker process counts and remembers on its own, as each
replica does: a memory limit admits up to workers x replicas x the limit, and a conversation
continues only when its next request reaches the same worker.
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
