"""LLMProvider reconciler: keep ``sentient-provider-<name>`` in step with the provider's credential source.

The sync itself is :class:`sentient_operator.credentials.sync.ProviderSyncer`; this module
decides when to run it (the handlers in :mod:`sentient_operator.handlers.provider` only hand it
the watch events) and writes the provider's status and Events. Triggers:

- the provider appears (also at operator start) or its spec changes (generation), or the
  annotation ``sentient.dev/force-sync`` gets a new value;
- a Secret the provider reads (source key, Vault token, AppRole secret ID, AWS keys, Azure
  client secret, CA bundles) is created, edited or deleted: synced at once, backoff skipped;
- the provider Secret itself is deleted or edited by hand: put back;
- external stores: the reconcile requeues itself after ``refreshInterval`` (with jitter), or
  after the backoff delay when the store failed;
- the upstream's verdict on the bound key changed (:mod:`.credential_check`): the status then
  says ``CredentialsValid=False/Unauthorized`` (and ``Ready=False``) until a good key is bound.

No kopf daemon or timer is used, because those put a finalizer on every LLMProvider, and a
finalizer blocks deletion whenever the operator is not running.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sentient_operator import kube, metrics
from sentient_operator.api.v1alpha1 import GROUP, VERSION, LLMProviderSpec
from sentient_operator.conditions import find_condition, merge_conditions, status_unchanged
from sentient_operator.credentials.kubernetes import kube_secret_reader
from sentient_operator.credentials.service_account import default_jwt_provider
from sentient_operator.credentials.sync import (
    PROVIDER_LABEL,
    ProviderSyncer,
    SharedFetcher,
    SyncOutcome,
    provider_secret_name,
)
from sentient_operator.credentials.validate import CREDENTIALS_VALID, Validity
from sentient_operator.reconcile.controller import Controller
from sentient_operator.reconcile.credential_check import Credential, CredentialChecks, overlay
from sentient_operator.reconcile.snapshot import Snapshot
from sentient_operator.settings import Settings

log = logging.getLogger("sentient_operator.reconcile.provider")

API_VERSION = f"{GROUP}/{VERSION}"
#: Work-queue kind of provider keys.
KIND = "provider"
#: The Kind, as every metric's ``kind`` label names it.
RESOURCE_KIND = "LLMProvider"
#: Changing this annotation's value makes the operator re-read the source at once.
FORCE_SYNC_ANNOTATION = "sentient.dev/force-sync"
#: Spread periodic refreshes of many providers over +-10% of the interval.
REFRESH_JITTER = 0.1

Key = tuple[str, str]


class ProviderReconciler:
    """What is remembered per provider between events (in memory only), and the sync of one provider."""

    def __init__(
        self,
        settings: Settings,
        controller: Controller,
        fingerprint_key: Callable[[], Awaitable[bytes]],
    ) -> None:
        self.settings = settings
        self.controller = controller
        self.bodies: dict[Key, dict[str, Any]] = {}
        self.generations: dict[Key, tuple[Any, Any]] = {}
        self.source_keys: dict[Key, str | None] = {}
        self.forced: set[Key] = set()
        self.last_reason: dict[Key, str] = {}
        self.secret_versions: dict[Key, str | None] = {}
        self.applied_versions: dict[Key, str | None] = {}
        self.fetcher = SharedFetcher()
        self.checks = CredentialChecks(
            settings.credential_check_seconds, settings.credential_check_concurrency
        )
        self._syncer: ProviderSyncer | None = None
        self._fingerprint_key = fingerprint_key
        self._rng = random.Random()  # noqa: S311 - jitter

    def syncer(self) -> ProviderSyncer:
        """The syncer, built on first use."""
        if self._syncer is None:

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
                reader=kube_secret_reader(),
                apply=apply,
                get_secret=get_secret,
                fingerprint_key=self._fingerprint_key,
                jwt_provider=default_jwt_provider(),
                source_options=self.settings.source_options(),
            )
        return self._syncer

    def jitter(self, seconds: float) -> float:
        """``seconds`` +- REFRESH_JITTER."""
        return seconds * (1 + self._rng.uniform(-REFRESH_JITTER, REFRESH_JITTER))

    # ------------------------------------------------------------------ events

    def provider_event(self, type_: str | None, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """Schedule a sync when a provider appears or its spec changes (not on our own status writes)."""
        key = (namespace, name)
        if type_ == "DELETED":
            self.forget(namespace, name)
            return
        # A copy of its own (kopf reuses bodies), without managedFields.
        self.bodies[key] = Snapshot(body).load()
        meta = body.get("metadata", {})
        # The generation covers spec changes; the annotation lets a user ask for a sync now
        # (e.g. right after rotating a key in an external store) without touching the spec.
        marker = (meta.get("generation"), (meta.get("annotations") or {}).get(FORCE_SYNC_ANNOTATION))
        if type_ is None or self.generations.get(key) != marker:
            self.generations[key] = marker
            self.forced.add(key)
            self.controller.enqueue(KIND, namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        """Drop everything remembered about a deleted provider."""
        key = (namespace, name)
        self.bodies.pop(key, None)
        self.generations.pop(key, None)
        self.forced.discard(key)
        self.last_reason.pop(key, None)
        self.checks.forget(key)
        self.applied_versions.pop((namespace, provider_secret_name(name)), None)
        old = self.source_keys.pop(key, None)
        if old and old not in self.source_keys.values():
            self.fetcher.invalidate(old)

    def secret_event(
        self,
        type_: str | None,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        body: Mapping[str, Any],
        readers: list[str],
    ) -> None:
        """A Secret changed. ``readers``: the providers that read it (from the handlers' index).

        A Secret a provider reads: sync now. Our provider Secret changed by hand: restore.
        """
        key = (namespace, name)
        version = (body.get("metadata") or {}).get("resourceVersion")
        owner = labels.get(PROVIDER_LABEL)
        ours = owner and labels.get("app.kubernetes.io/managed-by") == "sentient-operator"
        if ours and type_ is not None and (type_ == "DELETED" or version != self.applied_versions.get(key)):
            # Not forced: the store is not re-read, the last fetched value is re-applied if it differs.
            self.controller.enqueue(KIND, namespace, str(owner), 0.2)
        if not readers:
            self.secret_versions.pop(key, None)
            return
        previous = self.secret_versions.get(key)
        if type_ == "DELETED":
            self.secret_versions.pop(key, None)
        else:
            self.secret_versions[key] = version
        # A listing (type None) at start is covered by the providers' own listing; a re-listing after
        # a watch reconnect can carry a change the broken stream missed: compare versions.
        if type_ is None and (previous is None or previous == version):
            return
        for provider in readers:
            self.forced.add((namespace, provider))
            self.controller.enqueue(KIND, namespace, provider)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """One sync of one provider; returns when to look again (seconds) or ``None``."""
        key = (namespace, name)
        body = self.bodies.get(key)
        if body is None:
            # Gone: its sync-age series must not linger and page someone.
            with contextlib.suppress(KeyError):
                metrics.CREDENTIAL_LAST_SYNC.remove(namespace, name)
            return None
        force = key in self.forced
        self.forced.discard(key)
        spec: LLMProviderSpec | None = None
        try:
            spec = LLMProviderSpec.model_validate(body.get("spec") or {})
            new_key = self.syncer().key_for(namespace, spec)
        except ValueError:
            new_key = None
        old_key = self.source_keys.get(key)
        if (
            old_key
            and old_key != new_key
            and old_key not in {v for k, v in self.source_keys.items() if k != key}
        ):
            self.fetcher.invalidate(old_key)
        self.source_keys[key] = new_key

        started = time.monotonic()
        outcome = await self.syncer().sync(body, force=force)
        if outcome.ok:
            # A failed sync keeps the last good key bound: its check goes on.
            self.checks.remember(
                key,
                Credential(outcome.fingerprint, spec, outcome.api_key, outcome.ca_pem)
                if spec is not None and outcome.fingerprint and outcome.api_key
                else None,
            )
        await self._write_status(body, outcome)
        await self._emit_events(body, outcome)
        metrics.RECONCILE_DURATION.labels(RESOURCE_KIND).observe(time.monotonic() - started)
        if not outcome.ok:
            metrics.RECONCILES.labels(RESOURCE_KIND, "error").inc()
            metrics.RECONCILE_ERRORS.labels(RESOURCE_KIND, outcome.reason).inc()
            metrics.CREDENTIAL_SYNCS.labels(namespace, name, "error").inc()
            return max(1.0, outcome.retry_in)
        metrics.RECONCILES.labels(RESOURCE_KIND, "ok").inc()
        metrics.CREDENTIAL_SYNCS.labels(namespace, name, "success").inc()
        metrics.CREDENTIAL_LAST_SYNC.labels(namespace, name).set(time.time())
        if outcome.external:
            return self.jitter(outcome.refresh_interval)
        # Watched Secrets need no polling; a slow resync guards against a missed watch event.
        return self.jitter(self.settings.resync_seconds)

    async def _write_status(self, body: dict[str, Any], outcome: SyncOutcome) -> None:
        meta = body["metadata"]
        existing = (body.get("status") or {}).get("conditions") or []
        status = dict(outcome.status)
        verdict = self.checks.conditions((meta["namespace"], meta["name"]), meta.get("generation"))
        status["conditions"] = merge_conditions(existing, overlay(outcome.status["conditions"], verdict))
        current = body.get("status") or {}
        if not outcome.external and status_unchanged(current, status, frozenset({"lastSyncTime"})):
            # A watched source re-checked without news: no write, so an idle cluster stays quiet.
            # (External stores do record every successful refresh in lastSyncTime.)
            return
        metrics.WRITES.labels("patch-status", RESOURCE_KIND).inc()
        try:
            live = await kube.patch_status(
                API_VERSION, "LLMProvider", meta["name"], meta["namespace"], status
            )
        except kube.KubeError as exc:
            if exc.not_found:
                return
            raise
        # Keep our copy's status current so that the next merge keeps transition times.
        body["status"] = live.get("status") or status

    async def run_checks(self) -> None:
        """Check the credentials that are due; a changed verdict: one Event, status rewritten."""
        for (namespace, name), previous, result in await self.checks.run_due():
            body = self.bodies.get((namespace, name))
            if body is None:
                continue
            shown = find_condition((body.get("status") or {}).get("conditions"), CREDENTIALS_VALID)
            if shown is not None and shown.get("reason") == result.validity.value:
                # Already in the status (an operator restart, a new leader): not a transition.
                continue
            if result.validity is Validity.UNAUTHORIZED:
                log.warning("LLMProvider %s/%s: the upstream refused the credential", namespace, name)
                await self._event(
                    body,
                    Validity.UNAUTHORIZED.value,
                    f"the upstream refused the credential: {result.message}",
                    "Warning",
                )
            elif (previous is not None and previous.validity is Validity.UNAUTHORIZED) or (
                shown is not None and shown.get("reason") == Validity.UNAUTHORIZED.value
            ):
                await self._event(
                    body,
                    "CredentialsAccepted",
                    f"the upstream accepts the credential again: {result.message}",
                )
            # The status is written by the reconcile, the one writer of the provider's status.
            self.controller.enqueue(KIND, namespace, name)

    @staticmethod
    async def _event(body: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        if await kube.emit_event(body, reason, message, type_=type_):
            metrics.WRITES.labels("create", "Event").inc()

    async def _emit_events(self, body: dict[str, Any], outcome: SyncOutcome) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        previous = self.last_reason.get(key)
        self.last_reason[key] = outcome.reason
        if not outcome.ok:
            if previous != outcome.reason:
                await self._event(body, outcome.reason, outcome.message, "Warning")
            return
        if outcome.changed:
            reason = (
                "CredentialsRotated" if previous is not None or outcome.has_last_good else "CredentialsSynced"
            )
            await self._event(body, reason, outcome.message)
        elif previous is not None and previous != outcome.reason:
            await self._event(body, "CredentialsRecovered", outcome.message)
