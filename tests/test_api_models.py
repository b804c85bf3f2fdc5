"""Unit tests of the API models: validators, durations, round trips.

The cases (``INVALID``, ``VALID``, the examples) live in :mod:`tests.support.api_cases`, shared
with ``tests/test_crdgen.py`` and ``e2e/test_crds.py``; this file checks that the pydantic models
reject each invalid one with an error naming the field.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from sentient_operator.api import v1alpha1 as api
from tests.support.api_cases import (
    AGENT,
    AZURE,
    CHAIN_ENTRY,
    EXAMPLE_RESOURCES,
    EXAMPLES,
    INVALID,
    PROVIDER,
    VALID,
    Invalid,
    errors_text,
    merge,
)

# --------------------------------------------------------------------------- the table


def test_table_is_large_and_ids_unique() -> None:
    assert len(INVALID) >= 30
    assert len({c.id for c in INVALID}) == len(INVALID)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_resource_is_rejected_naming_the_field(case: Invalid) -> None:
    with pytest.raises(ValidationError) as info:
        api.parse_resource(case.obj())
    text = errors_text(info.value)
    assert case.expect in text, text


@pytest.mark.parametrize(("name", "obj"), VALID, ids=[v[0] for v in VALID])
def test_valid_resource_is_accepted(name: str, obj: dict[str, Any]) -> None:
    resource = api.parse_resource(obj)
    assert isinstance(resource, api.RESOURCE_CLASSES[obj["kind"]])


def test_every_cel_message_has_an_invalid_case() -> None:
    """Each CEL rule of the models is exercised by the table (and so on the apiserver too)."""
    messages = {
        value
        for name, value in vars(api).items()
        if name.endswith("_MESSAGE") and isinstance(value, str) and not name.endswith("NAME_MESSAGE")
    }
    covered = {c.expect for c in INVALID}
    assert messages - covered == set()


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0), ("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5s", 1.5), ("2h0m1s", 7201)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert api.parse_duration(text) == timedelta(seconds=seconds)
    assert api.duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1d", "5 s", "-1s", "s", "1.s", "1m 30s", "PT5S"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        api.parse_duration(text)


# --------------------------------------------------------------------------- specific rules


def test_chain_uniqueness_is_by_provider_namespace_and_model() -> None:
    e = api.ChainEntry.model_validate(CHAIN_ENTRY)
    assert e.key() == ("p", "", "m")
    with pytest.raises(ValidationError, match="unique"):
        api.LLMConfig(chain=[e, e])


def test_azure_default_false_alone_is_no_method() -> None:
    with pytest.raises(ValidationError, match="exactly one of clientSecret"):
        api.AzureAuth(default=False)
    api.AzureAuth(default=True)


@pytest.mark.parametrize("header", ["Authorization", "x-api-key", "API-KEY", "proxy-authorization"])
def test_credential_headers_refused_in_any_case(header: str) -> None:
    with pytest.raises(ValidationError, match="defaultHeaders"):
        api.LLMProviderSpec.model_validate(merge(PROVIDER["spec"], {"defaultHeaders": {header: "x"}}))


def test_policy_limits_rule_applies_to_spec_not_value_type() -> None:
    """RateLimits is also the runtime's type: an empty one is fine there (a tier may inherit all)."""
    empty = api.RateLimits()
    assert empty.requests_per_minute is None and empty.tokens_per_minute is None
    assert api.Tier(name="t", limits=empty).limits == empty


def test_parse_resource_rejects_foreign_kinds() -> None:
    with pytest.raises(ValueError, match="apiVersion"):
        api.parse_resource({"apiVersion": "v1", "kind": "Secret"})
    with pytest.raises(ValueError, match="kind"):
        api.parse_resource({"apiVersion": api.API_VERSION, "kind": "Agent"})


def test_value_types_keep_their_defaults() -> None:
    """The runtime relies on these defaults being there without a custom resource."""
    assert api.Timeouts().total == "300s"
    assert api.RetryPolicy().retry_on == ["429", "5xx", "connect-error", "timeout", "reset"]
    assert api.CircuitBreaker().failure_threshold == 5
    assert api.LLMParameters().max_tokens == 1024


# --------------------------------------------------------------------------- examples and round trips


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "agent.yaml",
        "vault.yaml",
        "aws.yaml",
        "azure.yaml",
        "failover-chain.yaml",
        "ratelimit-tiers-redis.yaml",
        "autoscaled-agent.yaml",
    } <= names
    kinds = {doc["kind"] for _, doc in EXAMPLE_RESOURCES}
    assert kinds == set(api.RESOURCE_CLASSES)


@pytest.mark.parametrize(("name", "doc"), EXAMPLE_RESOURCES, ids=[n for n, _ in EXAMPLE_RESOURCES])
def test_example_round_trips(name: str, doc: dict[str, Any]) -> None:
    resource = api.parse_resource(doc)
    wire = resource.to_wire()
    again = api.parse_resource(wire)
    assert again == resource
    # Everything the user wrote survives (the wire form only adds defaults).
    assert merge(wire["spec"], doc["spec"]) == wire["spec"]


def test_to_wire_is_camel_case_and_drops_none() -> None:
    spec = api.SentientAgentSpec.model_validate(AGENT["spec"])
    wire = spec.to_wire()
    assert "systemPrompt" in wire and "system_prompt" not in wire
    assert "systemPromptFrom" not in wire
    assert wire["llm"]["chain"][0]["providerRef"] == {"name": "p"}
    provider = api.AzureKeyVaultSource.model_validate(AZURE)
    assert provider.to_wire()["vaultURL"] == AZURE["vaultURL"]


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        (2, "2"),
        ("500m", "0.5"),
        ("1.5", "1.5"),
        ("128Mi", str(128 * 1024**2)),
        ("1Gi", str(1024**3)),
        ("1G", "1000000000"),
        ("1e3", "1000"),
        ("1E", str(10**18)),
        ("100n", "0.0000001"),
    ],
)
def test_parse_quantity(text: int | str, amount: str) -> None:
    assert api.parse_quantity(text) == Decimal(amount)


def test_requests_equal_to_limits_in_other_units_are_accepted() -> None:
    resources = api.ResourceRequirements.model_validate(
        {"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}}
    )
    assert resources.to_wire()["limits"]["cpu"] == 1
