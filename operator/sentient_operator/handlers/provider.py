"""LLMProvider handlers: keep ``sentient-provider-<name>`` in step with the provider's credential source.

Thin by design: watch events only schedule work on the shared controller queue
(:mod:`sentient_operator.handlers.runtime`), and the reconcile is
:class:`sentient_operator.credentials.sync.ProviderSyncer`. Triggers:

- the provider appears (also at operator start) or its spec changes (generation), or the
  annotation ``sentient.dev/force-sync`` gets a new value;
- a Secret the provider reads (source key, Vault token, AppRole secret ID, AWS keys, Azure
  client secret, CA bundles) is created, edited or deleted: synced at once, backoff skipped;
- the provider Secret itself is deleted or edited by hand: put back;
- external stores: the reconcile requeues itself after ``refreshInterval`` (with jitter), or
  after the backoff delay when the store failed.

No kopf daemon or timer is used, because those put a finalizer on every LLMProvider, and a
finalizer blocks deletion whenever the operator is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import random
import time
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client import CoreV1Api

from sentient_operator import kube, metrics
from sentient_operator.api.v1alpha1 import GROUP, VERSION, LLMProviderSpec
from sentient_operator.conditions import merge_conditions
from sentient_operator.credentials.fingerprint import load_or_create_key
from sentient_operator.credentials.kubernetes import kube_secret_reader
from sentient_operator.credentials.sync import (
    PROVIDER_LABEL,
    ProviderSyncer,
    SharedFetcher,
    SyncOutcome,
    provider_secret_name,
    referenced_secrets,
)
from sentient_operator.credentials.vault import default_jwt_provider
from sentient_operator.handlers.runtime import controller
from sentient_operator.settings import get_settings

log = logging.getLogger("sentient_operator.handlers.provider")

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "provider"
#: Changing this annotation's value makes the operator re-read the source at once.
FORCE_SYNC_ANNOTATION = "sentient.dev/force-sync"
#: Spread periodic refreshes of many providers over +-10% of the interval.
REFRESH_JITTER = 0.1


class ProviderState:
    """What the handler remembers per provider between events (in memory only)."""

    def __init__(self) -> None:
        self.bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self.generations: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.source_keys: dict[tuple[str, str], str | None] = {}
        self.forced: set[tuple[str, str]] = set()
        self.last_reason: dict[tuple[str, str], str] = {}
        self.secret_versions: dict[tuple[str, str], str | None] = {}
        self.applied_versions: dict[tuple[str, str], str | None] = {}
        self.fetcher = SharedFetcher()
        self._syncer: ProviderSyncer | None = None
        self._fp_key: bytes | None = None
        self._rng = random.Random()  # noqa: S311 - jitter

    async def fingerprint_key(self) -> bytes:
        """The operator's HMAC key (loaded once; the agent controller may have it already)."""
        if controller.fingerprint_key is not None:
            return controller.fingerprint_key
        if self._fp_key is None:
            self._fp_key = await asyncio.to_thread(
                load_or_create_key, CoreV1Api(kube.load_client()), get_settings().operator_namespace
            )
        return self._fp_key

    def syncer(self) -> ProviderSyncer:
        """The syncer, built on first use (needs the API client)."""
        if self._syncer is None:
            api = kube.load_client()

            async def get_secret(namespace: str, name: str) -> dict[str, Any] | None:
                return await kube.get("v1", "Secret", name, namespace)

            async def apply(obj: Mapping[str, Any]) -> dict[str, Any]:
                metrics.WRITES.labels("apply", obj.get("kind", "")).inc()
                live = await kube.apply(obj)
                meta = live.get("metadata") or {}
                # Remember what our write produced, so its watch echo is not taken for a hand edit.
                self.applied_versions[(meta.get("namespace", ""), meta.get("name", ""))] = meta.get(
                    "resourceVersion"
                )
                return live

            self._syncer = ProviderSyncer(
                fetcher=self.fetcher,
                reader=kube_secret_reader(api),
                apply=apply,
                get_secret=get_secret,
                fingerprint_key=self.fingerprint_key,
                jwt_provider=default_jwt_provider(api),
                source_options=source_options_from_env(),
            )
        return self._syncer

    def jitter(self, seconds: float) -> float:
        """``seconds`` +- REFRESH_JITTER."""
        return seconds * (1 + self._rng.uniform(-REFRESH_JITTER, REFRESH_JITTER))


def source_options_from_env() -> dict[str, dict[str, Any]]:
    """Store options that are the operator's, not a provider's, to decide.

    ``SENTIENT_AZURE_AUTHORITY_HOST``: a private Entra ID authority (Azure Stack, a sovereign cloud
    msal does not know, a test server); instance discovery against the public cloud is then off.
    """
    options: dict[str, dict[str, Any]] = {}
    authority = os.environ.get("SENTIENT_AZURE_AUTHORITY_HOST", "").strip()
    if authority:
        options["azure"] = {"authority_host": authority}
    return options


state = ProviderState()


# --------------------------------------------------------------------------- indexes and events


@kopf.index(GROUP, VERSION, "llmproviders", id="sentient_provider_secret_refs_idx")
def sentient_provider_secret_refs_idx(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Any, Any]:
    """(namespace, Secret name) -> provider name, for every Secret a provider reads."""
    if not namespace:
        return {}
    try:
        parsed = LLMProviderSpec.model_validate(dict(spec))
    except ValueError:
        return {}
    return {(namespace, secret): name for secret in referenced_secrets(namespace, parsed)}


@kopf.on.event(GROUP, VERSION, "llmproviders", id="provider-sync")
def on_provider_event(type: str | None, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> None:
    """Schedule a sync when a provider appears or its spec changes (not on our own status writes)."""
    if not namespace:
        return
    key = (namespace, name)
    if type == "DELETED":
        state.bodies.pop(key, None)
        state.generations.pop(key, None)
        state.forced.discard(key)
        state.last_reason.pop(key, None)
        state.applied_versions.pop((namespace, provider_secret_name(name)), None)
        old = state.source_keys.pop(key, None)
        if old and old not in state.source_keys.values():
            state.fetcher.invalidate(old)
        return
    state.bodies[key] = copy.deepcopy(dict(body))
    meta = body.get("metadata", {})
    # The generation covers spec changes; the annotation lets a user ask for a sync now
    # (e.g. right after rotating a key in an external store) without touching the spec.
    marker = (meta.get("generation"), (meta.get("annotations") or {}).get(FORCE_SYNC_ANNOTATION))
    if type is None or state.generations.get(key) != marker:
        state.generations[key] = marker
        state.forced.add(key)
        controller.enqueue(KIND, namespace, name)


@kopf.on.event("", "v1", "secrets", id="provider-secret-ref")
def on_secret_event(
    type: str | None, namespace: str | None, name: str, labels: kopf.Labels, **kwargs: Any
) -> None:
    """A Secret a provider reads changed: sync now. Our provider Secret changed by hand: restore."""
    if not namespace:
        return
    key = (namespace, name)
    owner = labels.get(PROVIDER_LABEL)
    if owner and labels.get("app.kubernetes.io/managed-by") == "sentient-operator" and type is not None:
        rv = ((kwargs.get("body") or {}).get("metadata") or {}).get("resourceVersion")
        if type == "DELETED" or rv != state.applied_versions.get(key):
            # Not forced: the store is not re-read, the last fetched value is re-applied if it differs.
            controller.enqueue(KIND, namespace, owner, 0.2)
    refs: kopf.Index[Any, str] | None = kwargs.get("sentient_provider_secret_refs_idx")
    providers = list(refs.get(key, [])) if refs is not None else []
    if not providers:
        state.secret_versions.pop(key, None)
        return
    body = kwargs.get("body") or {}
    version = (body.get("metadata") or {}).get("resourceVersion")
    previous = state.secret_versions.get(key)
    if type == "DELETED":
        state.secret_versions.pop(key, None)
    else:
        state.secret_versions[key] = version
    # A listing (type None) at start is covered by the providers' own listing; a re-listing after
    # a watch reconnect can carry a change the broken stream missed: compare versions.
    if type is None and (previous is None or previous == version):
        return
    for provider in providers:
        state.forced.add((namespace, provider))
        controller.enqueue(KIND, namespace, provider)


# --------------------------------------------------------------------------- reconcile


async def reconcile_provider(namespace: str, name: str) -> float | None:
    """One sync of one provider; returns when to look again (seconds) or ``None``."""
    key = (namespace, name)
    body = state.bodies.get(key)
    if body is None:
        # Gone: its sync-age series must not linger and page someone.
        with contextlib.suppress(KeyError):
            metrics.CREDENTIAL_LAST_SYNC.remove(namespace, name)
        return None
    force = key in state.forced
    state.forced.discard(key)
    try:
        spec = LLMProviderSpec.model_validate(body.get("spec") or {})
        new_key = state.syncer().key_for(namespace, spec)
    except ValueError:
        new_key = None
    old_key = state.source_keys.get(key)
    if (
        old_key
        and old_key != new_key
        and old_key not in {v for k, v in state.source_keys.items() if k != key}
    ):
        state.fetcher.invalidate(old_key)
    state.source_keys[key] = new_key

    started = time.monotonic()
    outcome = await state.syncer().sync(body, force=force)
    await _write_status(body, outcome)
    await _emit_events(body, outcome)
    metrics.RECONCILE_DURATION.labels(KIND).observe(time.monotonic() - started)
    if not outcome.ok:
        metrics.RECONCILES.labels(KIND, "error").inc()
        metrics.RECONCILE_ERRORS.labels(KIND, outcome.reason).inc()
        metrics.CREDENTIAL_SYNCS.labels(namespace, name, "error").inc()
        return max(1.0, outcome.retry_in)
    metrics.RECONCILES.labels(KIND, "ok").inc()
    metrics.CREDENTIAL_SYNCS.labels(namespace, name, "success").inc()
    metrics.CREDENTIAL_LAST_SYNC.labels(namespace, name).set(time.time())
    if outcome.external:
        return state.jitter(outcome.refresh_interval)
    # Watched Secrets need no polling; a slow resync guards against a missed watch event.
    return state.jitter(get_settings().resync_seconds)


async def _write_status(body: dict[str, Any], outcome: SyncOutcome) -> None:
    meta = body["metadata"]
    existing = (body.get("status") or {}).get("conditions") or []
    status = dict(outcome.status)
    status["conditions"] = merge_conditions(existing, outcome.status["conditions"])
    current = body.get("status") or {}
    if not outcome.external and all(current.get(k) == v for k, v in status.items() if k != "lastSyncTime"):
        # A watched source re-checked without news: no write, so an idle cluster stays quiet.
        # (External stores do record every successful refresh in lastSyncTime.)
        return
    metrics.WRITES.labels("patch-status", "LLMProvider").inc()
    try:
        live = await kube.patch_status(API_VERSION, "LLMProvider", meta["name"], meta["namespace"], status)
    except kube.KubeError as exc:
        if exc.not_found:
            return
        raise
    # Keep our copy's status current so that the next merge keeps transition times.
    body["status"] = live.get("status") or status


async def _event(body: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
    metrics.WRITES.labels("create", "Event").inc()
    await kube.emit_event(body, reason, message, type_=type_)


async def _emit_events(body: dict[str, Any], outcome: SyncOutcome) -> None:
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    previous = state.last_reason.get(key)
    state.last_reason[key] = outcome.reason
    if not outcome.ok:
        if previous != outcome.reason:
            await _event(body, outcome.reason, outcome.message, "Warning")
        return
    if outcome.changed:
        reason = (
            "CredentialsRotated" if previous is not None or outcome.has_last_good else "CredentialsSynced"
        )
        await _event(body, reason, outcome.message)
    elif previous is not None and previous != outcome.reason:
        await _event(body, "CredentialsRecovered", outcome.message)


controller.register(KIND, reconcile_provider)
