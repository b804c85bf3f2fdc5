"""Which watch events make the LLMProvider handler schedule a sync (no cluster needed: the
handlers are plain functions; what they schedule lands in the real controller queue of an
operator context, handed to them as kopf hands it: in ``memo``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from sentient_operator.handlers import provider as handler
from sentient_operator.handlers import referenced
from sentient_operator.reconcile.context import MEMO_KEY, OperatorContext
from sentient_operator.reconcile.provider import FORCE_SYNC_ANNOTATION, KIND
from sentient_operator.reconcile.queue import WorkQueue
from sentient_operator.settings import Settings
from tests.support.kopf_calls import as_kopf_calls

NS = "team"
# kopf's decorators type these as its handler protocols; here they are called as plain functions.
ON_PROVIDER = as_kopf_calls(handler.on_provider_event)
ON_SECRET = as_kopf_calls(referenced.on_secret_event)
REFS_INDEX = as_kopf_calls(handler.sentient_provider_secret_refs_idx)


def _body(name: str, generation: int, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "generation": generation,
            "annotations": annotations or {},
        },
        "spec": {"type": "openai", "credentials": {"secretRef": {"name": "src", "key": "apiKey"}}},
    }


context = OperatorContext(Settings())
memo = kopf.Memo({MEMO_KEY: context})
state = context.providers


def _scheduled(name: str) -> bool:
    return context.controller.queue.pending((KIND, NS, name))


def _drain() -> None:
    context.controller.queue = WorkQueue()


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    _drain()
    state.bodies.clear()
    state.generations.clear()
    state.forced.clear()
    state.secret_versions.clear()
    state.applied_versions.clear()
    yield


def provider_event(type_: str | None, body: dict[str, Any]) -> None:
    ON_PROVIDER(type=type_, namespace=NS, name=body["metadata"]["name"], body=body, memo=memo)


def secret_event(
    type_: str | None, name: str, rv: str, labels: dict[str, str] | None = None, refs: Any = None
) -> None:
    body = {"metadata": {"name": name, "namespace": NS, "resourceVersion": rv}}
    ON_SECRET(
        type=type_,
        namespace=NS,
        name=name,
        labels=labels or {},
        body=body,
        sentient_provider_secret_refs_idx=refs,
        memo=memo,
    )


def test_spec_and_force_sync_annotation_schedule_but_status_writes_do_not() -> None:
    provider_event(None, _body("p", 1))  # initial listing
    assert _scheduled("p") and ("team", "p") in state.forced
    _drain()
    state.forced.clear()
    provider_event("MODIFIED", _body("p", 1))  # our own status patch: same generation
    assert not _scheduled("p")
    provider_event("MODIFIED", _body("p", 2))  # spec changed
    assert _scheduled("p")
    _drain()
    provider_event("MODIFIED", _body("p", 2, {FORCE_SYNC_ANNOTATION: "1"}))
    assert _scheduled("p")
    _drain()
    provider_event("DELETED", _body("p", 2))
    assert ("team", "p") not in state.bodies


def test_referenced_secret_changes_force_a_sync_listing_does_not() -> None:
    refs = {(NS, "src"): ["p", "q"]}
    secret_event(None, "src", "10", refs=refs)  # start-up listing: the providers' listing covers it
    assert not _scheduled("p")
    secret_event("MODIFIED", "src", "11", refs=refs)
    assert _scheduled("p") and _scheduled("q")
    assert {("team", "p"), ("team", "q")} <= state.forced
    _drain()
    secret_event(None, "src", "11", refs=refs)  # re-listing, nothing missed
    assert not _scheduled("p")
    secret_event(None, "src", "12", refs=refs)  # re-listing after a reconnect, a change was missed
    assert _scheduled("p")
    _drain()
    secret_event("MODIFIED", "unrelated", "5", refs=refs)
    assert not _scheduled("p")


def test_own_write_echo_is_ignored_hand_edit_is_not() -> None:
    labels = {"sentient.dev/provider": "p", "app.kubernetes.io/managed-by": "sentient-operator"}
    state.applied_versions[(NS, "sentient-provider-p")] = "20"
    secret_event("MODIFIED", "sentient-provider-p", "20", labels, refs={})
    assert not _scheduled("p")
    secret_event("MODIFIED", "sentient-provider-p", "21", labels, refs={})
    assert _scheduled("p")
    _drain()
    secret_event("DELETED", "sentient-provider-p", "21", labels, refs={})
    assert _scheduled("p")
    assert ("team", "p") not in state.forced  # restoring needs no store call


def test_secret_refs_index() -> None:
    spec = {
        "type": "openai",
        "tls": {"caSecretRef": {"name": "ca", "key": "ca.pem"}},
        "credentials": {
            "vault": {
                "server": "https://vault:8200",
                "path": "llm/openai",
                "auth": {"appRole": {"roleId": "r", "secretRef": {"name": "approle", "key": "id"}}},
            }
        },
    }
    got = REFS_INDEX(namespace=NS, name="p", spec=spec)
    assert got == {(NS, "approle"): "p", (NS, "ca"): "p"}
    assert REFS_INDEX(namespace=NS, name="p", spec={"type": "nope"}) == {}
