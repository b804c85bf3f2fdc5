"""The CRDs on a real apiserver: examples accepted, invalid resources rejected naming the field.

The invalid resources are the table of ``tests/support/api_cases.py``, so the
apiserver (OpenAPI schema + CEL) and offline validation (pydantic) are held to
the same answers. Writes are server-side dry runs with strict field validation,
so unknown fields are errors rather than silently pruned.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster
from e2e.resources import dry_run
from sentient_operator.api import crdgen
from sentient_operator.api import v1alpha1 as api
from tests.support.api_cases import AGENT, EXAMPLES, INVALID, POLICY, PROVIDER, VALID, Invalid

pytestmark = pytest.mark.usefixtures("crds")


@pytest.fixture(scope="module")
def dry_ns(cluster: Cluster) -> Iterator[str]:
    """One namespace for all the dry runs: nothing is stored, so they cannot disturb each other,
    and a hundred namespaces fewer is less work for the shared machine."""
    name = f"e2e-crds-dry-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted(cluster: Cluster, dry_ns: str, path: Path) -> None:
    proc = dry_run(cluster, dry_ns, path.read_text())
    assert proc.returncode == 0, proc.stderr
    assert "(server dry run)" in proc.stdout


@pytest.mark.parametrize(("name", "obj"), VALID, ids=[v[0] for v in VALID])
def test_valid_variant_is_accepted(cluster: Cluster, dry_ns: str, name: str, obj: dict[str, Any]) -> None:
    proc = dry_run(cluster, dry_ns, yaml.safe_dump(obj))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_resource_is_rejected_naming_the_field(cluster: Cluster, dry_ns: str, case: Invalid) -> None:
    proc = dry_run(cluster, dry_ns, yaml.safe_dump(case.obj()))
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    assert case.expect in proc.stderr, proc.stderr


def test_defaults_of_the_apiserver_equal_the_models(cluster: Cluster, namespace: str) -> None:
    """What the apiserver stores after defaulting parses to the same spec as the file did."""
    for base in (PROVIDER, POLICY, AGENT):
        cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(base))
        plural = next(k.plural for k in crdgen.KINDS if k.kind == base["kind"])
        stored = json.loads(
            cluster.kubectl("get", plural, base["metadata"]["name"], "-n", namespace, "-o", "json").stdout
        )
        from_server = api.parse_resource({k: stored[k] for k in ("apiVersion", "kind", "metadata", "spec")})
        from_file = api.parse_resource(base)
        assert from_server.spec == from_file.spec
        # Defaults really were applied by the apiserver, not only by pydantic.
        assert set(stored["spec"]) > set(base["spec"])


def test_scale_subresource(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(AGENT))
    cluster.kubectl("scale", "sentientagent", "a", "-n", namespace, "--replicas=3")
    out = cluster.kubectl("get", "sagent", "a", "-n", namespace, "-o", "jsonpath={.spec.replicas}").stdout
    assert out == "3"


def test_status_subresource_and_printer_columns(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(AGENT))
    status = {
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "providersReady": "1/1",
            "endpoint": "http://a.ns.svc:80",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Available",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    cluster.kubectl(
        "patch",
        "sentientagent",
        "a",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    table = cluster.kubectl("get", "sagent", "a", "-n", namespace, "-o", "wide").stdout.splitlines()
    header = table[0].split()
    row = dict(zip(header, table[1].split(), strict=False))
    assert header[:4] == ["NAME", "READY", "REPLICAS", "PROVIDERS"]
    assert row["READY"] == "True" and row["REPLICAS"] == "1" and row["PROVIDERS"] == "1/1"
    assert row["ENDPOINT"] == "http://a.ns.svc:80"


def test_invalid_status_condition_is_rejected(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(PROVIDER))
    bad = {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "Maybe",
                    "reason": "X",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        }
    }
    proc = cluster.kubectl(
        "patch",
        "llmprovider",
        "p",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(bad),
        check=False,
    )
    assert proc.returncode != 0
    assert "status.conditions[0].status" in proc.stderr


@pytest.mark.parametrize(
    ("path", "expect"),
    [
        ("sentientagent.spec.llm.chain", "Ordered failover chain"),
        ("sentientagent.spec.llm.chain.providerRef", "The LLMProvider"),
        ("sentientagent.spec.rotation.strategy", "HotReload"),
        ("llmprovider.spec.credentials", "exactly one of secretRef, vault, awsSecretsManager, azureKeyVault"),
        ("llmprovider.spec.credentials.vault.auth.kubernetes.role", "Vault role"),
        ("ratelimitpolicy.spec.onRedisUnavailable", "failClosed"),
        ("ratelimitpolicy.spec.tiers", "selected by the caller's tier"),
    ],
)
def test_kubectl_explain_shows_descriptions(cluster: Cluster, path: str, expect: str) -> None:
    out = cluster.kubectl("explain", path).stdout
    assert expect in " ".join(out.split())


def test_short_names_and_category(cluster: Cluster) -> None:
    table = cluster.kubectl("api-resources", "--no-headers", "-o", "wide").stdout
    builtin_short: set[str] = set()
    ours: dict[str, list[str]] = {}
    for line in table.splitlines():
        cols = line.split()
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND VERBS [CATEGORIES]
        apiversion_at = next(i for i, c in enumerate(cols) if "/" in c or c == "v1")
        shorts = cols[1].split(",") if apiversion_at == 2 else []
        if cols[apiversion_at].startswith(api.GROUP + "/"):
            ours[cols[0]] = shorts
        else:
            builtin_short.update(shorts)
    assert set(ours) == {k.plural for k in crdgen.KINDS}
    for k in crdgen.KINDS:
        assert ours[k.plural] == list(k.short_names)
        assert not set(k.short_names) & builtin_short
    assert builtin_short <= crdgen.BUILTIN_SHORT_NAMES, "update crdgen.BUILTIN_SHORT_NAMES"
    names = cluster.kubectl("get", "sentient", "-A", "-o", "name").returncode
    assert names == 0
