"""Which Secrets and ConfigMaps the operator keeps in memory (no cluster needed)."""

from __future__ import annotations

from typing import Any

from sentient_operator.reconcile.referenced import ReferencedObjects

NS = "team"
MANAGED = {"app.kubernetes.io/managed-by": "sentient-operator"}


def secret(name: str, rv: int, labels: dict[str, str] | None = None, value: str = "dg==") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "resourceVersion": str(rv),
            "labels": labels or {},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {}}}],
        },
        "data": {"k": value},
    }


def test_keeps_only_managed_and_referenced_objects() -> None:
    referenced = {"callers"}
    store = ReferencedObjects("Secret", lambda ns, name: ns == NS and name in referenced)
    for i in range(100):
        store.observe(None, NS, f"unrelated-{i}", secret(f"unrelated-{i}", i))
    store.observe(None, NS, "callers", secret("callers", 200))
    store.observe(None, NS, "helper-credentials", secret("helper-credentials", 201, MANAGED))
    assert len(store) == 2
    kept = store.get(NS, "callers")
    assert kept is not None and kept["data"] == {"k": "dg=="}
    assert "managedFields" not in kept["metadata"]
    # Deleting unrelated objects leaves nothing behind either.
    for i in range(100):
        store.observe("DELETED", NS, f"unrelated-{i}", secret(f"unrelated-{i}", 300 + i))
    assert len(store) == 2 and store._deleted == {}


def test_unreferenced_object_is_released_managed_one_is_not() -> None:
    referenced = {"callers", "helper-credentials"}
    store = ReferencedObjects("Secret", lambda ns, name: name in referenced)
    store.observe(None, NS, "callers", secret("callers", 1))
    store.observe(None, NS, "helper-credentials", secret("helper-credentials", 2, MANAGED))
    referenced.clear()
    store.release(NS, "callers")
    store.release(NS, "helper-credentials")
    assert store.get(NS, "callers") is None
    assert store.get(NS, "helper-credentials") is not None
    # A later event of an object nobody wants any more drops it too.
    store.observe("MODIFIED", NS, "callers", secret("callers", 3))
    assert store.get(NS, "callers") is None


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    store = ReferencedObjects("Secret", lambda ns, name: True)
    store.observe("MODIFIED", NS, "callers", secret("callers", 10, value="bmV3"))
    store.put(secret("callers", 9, value="b2xk"))
    kept = store.get(NS, "callers")
    assert kept is not None and kept["data"] == {"k": "bmV3"}


def test_cache_releases_when_the_controller_forgets_the_last_reference() -> None:
    from sentient_operator.reconcile.context import OperatorContext
    from sentient_operator.settings import Settings

    context = OperatorContext(Settings())
    key = ("agent", NS, "helper")
    context.controller.set_refs(key, {("Secret", NS, "callers"), ("ConfigMap", NS, "prompt")})
    context.cache.secrets.observe(None, NS, "callers", secret("callers", 1))
    context.cache.config_maps.observe(None, NS, "prompt", secret("prompt", 2))
    assert context.cache.secret(NS, "callers") == {"k": "v"}
    assert context.cache.config_map(NS, "prompt") == {"k": "dg=="}
    context.controller.forget(key)
    assert context.cache.secret(NS, "callers") is None
    assert context.cache.config_map(NS, "prompt") is None
