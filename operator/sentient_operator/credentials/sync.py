"""Keeping provider Secrets in step with their credential sources.

Why one module of this size: the fetcher's backoff and the syncer's "never blank a
working credential" rule are one contract, tested together; both parts are small classes.

Two parts:

- :class:`SharedFetcher` makes the store calls. Calls for the same source are single-flight
  (concurrent callers wait for one fetch and share its result) and a fresh result is reused
  within a short window, so a burst of triggers (an update, the refresh timer and a Secret watch
  event at once) costs one store call. After a failure the source is left alone for a backoff
  that doubles per consecutive failure, with jitter, and is longer on throttling (at least the
  store's Retry-After), the same shape as ESO's and VSO's requeue-with-backoff.
- :class:`ProviderSyncer` turns one LLMProvider into its provider Secret
  ``sentient-provider-<name>`` (server-side apply, only when the fingerprint changed) and the
  status to write. A failed fetch never touches the provider Secret: the last good value stays.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..api.v1alpha1 import CredentialsSource, LLMProviderSpec, duration_seconds
from ..conditions import invalid_spec_message, make_condition, now_rfc3339
from .base import (
    CREDENTIALS_SYNCED,
    REASON_SYNCED,
    CredentialError,
    CredentialSource,
    FetchedCredential,
    InvalidSpec,
    SecretReader,
    StoreUnreachable,
    read_secret_key,
)
from .fingerprint import FINGERPRINT_ANNOTATION, fingerprint_data, same_fingerprint

log = logging.getLogger(__name__)

PROVIDER_SECRET_PREFIX = "sentient-provider-"  # noqa: S105 - a name
PROVIDER_LABEL = "sentient.dev/provider"
API_KEY = "apiKey"
CA_KEY = "ca.pem"
READY = "Ready"
REASON_NO_CREDENTIALS = "NoCredentials"
REASON_STALE = "ServingLastGoodCredentials"


def provider_secret_name(provider: str) -> str:
    """``sentient-provider-<provider>``: the Secret the provider handler writes."""
    return PROVIDER_SECRET_PREFIX + provider


# --------------------------------------------------------------------------- backoff


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * factor**(n-1)``, capped, drawn from [d/2, d].

    Throttling waits at least ``throttle_min`` and at least the store's ``retry_after``.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    throttle_min: float = 5.0

    def delay(self, failures: int, error: CredentialError, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure."""
        d = min(self.cap, self.base * self.factor ** max(0, failures - 1))
        if error.reason == "Throttled":
            d = min(self.cap, max(d * 2, self.throttle_min))
        # "Equal jitter": spread retries of many providers apart, but never retry at once.
        d = d / 2 + rng.uniform(0, d / 2)
        if error.retry_after:
            d = max(d, error.retry_after)
        return d


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    source: CredentialSource | None = None
    result: FetchedCredential | None = None
    fetched_at: float = 0.0
    error: CredentialError | None = None
    failures: int = 0
    retry_at: float = 0.0
    calls: int = 0


class SharedFetcher:
    """Single-flight, backed-off fetches, one entry per source key.

    ``key`` identifies what is fetched (see :func:`source_key`); ``factory`` builds the source the
    first time (sources keep sessions, e.g. a Vault login, across fetches).
    """

    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        reuse_window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.backoff = backoff or Backoff()
        self.reuse_window = reuse_window
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._entries: dict[str, _Entry] = {}

    def _entry(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        return entry

    def calls(self, key: str) -> int:
        """How many store calls were made for ``key`` (for tests and metrics)."""
        entry = self._entries.get(key)
        return entry.calls if entry else 0

    def retry_in(self, key: str) -> float:
        """Seconds until the next store call for ``key`` is allowed (0 when not backing off)."""
        entry = self._entries.get(key)
        if entry is None or entry.error is None:
            return 0.0
        return max(0.0, entry.retry_at - self._clock())

    def failures(self, key: str) -> int:
        """Consecutive failures for ``key``."""
        entry = self._entries.get(key)
        return entry.failures if entry else 0

    def invalidate(self, key: str) -> None:
        """Forget the source and its cached result (spec changed, referenced Secret changed)."""
        entry = self._entries.pop(key, None)
        if entry is not None and entry.source is not None:
            entry.source.close()

    def close(self) -> None:
        """Close every source."""
        for key in list(self._entries):
            self.invalidate(key)

    async def fetch(
        self,
        key: str,
        factory: Callable[[], CredentialSource],
        *,
        force: bool = False,
        max_age: float | None = None,
    ) -> FetchedCredential:
        """The credential for ``key``: cached when fresh, else one store call.

        ``force`` skips the backoff wait (an input changed, e.g. a watched Secret was edited).
        ``max_age`` overrides the reuse window. Raises the (safe) :class:`CredentialError`.
        """
        entry = self._entry(key)
        window = self.reuse_window if max_age is None else max_age
        async with entry.lock:
            now = self._clock()
            if (
                not force
                and entry.result is not None
                and entry.error is None
                and now - entry.fetched_at < window
            ):
                return entry.result
            if not force and entry.error is not None and now < entry.retry_at:
                raise entry.error
            if entry.source is None:
                entry.source = factory()
            entry.calls += 1
            try:
                result = await asyncio.to_thread(entry.source.fetch)
            except CredentialError as err:
                entry.failures += 1
                entry.error = err
                entry.retry_at = self._clock() + self.backoff.delay(entry.failures, err, self._rng)
                raise
            except Exception as exc:  # a bug or an unexpected SDK error: still no value in the message
                wrapped = StoreUnreachable(
                    f"{entry.source.describe()}: unexpected error ({type(exc).__name__})"
                )
                entry.failures += 1
                entry.error = wrapped
                entry.retry_at = self._clock() + self.backoff.delay(entry.failures, wrapped, self._rng)
                raise wrapped from None
            entry.result = result
            entry.fetched_at = self._clock()
            entry.error = None
            entry.failures = 0
            entry.retry_at = 0.0
            return result


def source_key(namespace: str, creds: CredentialsSource) -> str:
    """Identity of a credential source: same store, same secret, same auth -> same key.

    Two providers reading the same secret the same way share one fetch.
    """
    payload = creds.model_dump(mode="json", by_alias=True, exclude={"refresh_interval"})
    digest = hashlib.sha256(json.dumps([namespace, payload], sort_keys=True).encode()).hexdigest()
    return digest[:24]


# --------------------------------------------------------------------------- building sources

#: Extra keyword arguments per store kind, e.g. ``{"azure": {"authority_host": ...}}`` in tests.
SourceOptions = Mapping[str, Mapping[str, Any]]


def build_source(
    namespace: str,
    creds: CredentialsSource,
    reader: SecretReader,
    *,
    jwt_provider: Any = None,
    options: SourceOptions | None = None,
) -> CredentialSource:
    """The :class:`CredentialSource` for a provider's ``spec.credentials``."""
    opts = options or {}
    if creds.secret_ref is not None:
        from .kubernetes import KubernetesSecretSource

        return KubernetesSecretSource(creds.secret_ref, namespace, reader)
    if creds.vault is not None:
        from .vault import VaultCredentialSource

        return VaultCredentialSource(creds.vault, namespace, reader, jwt_provider, **opts.get("vault", {}))
    if creds.aws_secrets_manager is not None:
        from .aws import AWSSecretsManagerCredentialSource

        return AWSSecretsManagerCredentialSource(
            creds.aws_secrets_manager, namespace, reader, **opts.get("aws", {})
        )
    if creds.azure_key_vault is not None:
        from .azure import AzureKeyVaultCredentialSource

        return AzureKeyVaultCredentialSource(
            creds.azure_key_vault, namespace, reader, **opts.get("azure", {})
        )
    raise InvalidSpec("spec.credentials names no source")


def referenced_secrets(namespace: str, spec: LLMProviderSpec) -> list[str]:
    """Names of the Secrets (in the provider's namespace) a provider reads: watched for changes."""
    names: list[str] = []
    creds = spec.credentials
    if creds is not None:
        if creds.secret_ref is not None:
            names.append(creds.secret_ref.name)
        if creds.vault is not None:
            auth = creds.vault.auth
            for ref in (
                auth.token.secret_ref if auth.token else None,
                auth.app_role.secret_ref if auth.app_role else None,
                creds.vault.ca_secret_ref,
            ):
                if ref is not None:
                    names.append(ref.name)
        if creds.aws_secrets_manager is not None and creds.aws_secrets_manager.auth.secret_ref is not None:
            names.append(creds.aws_secrets_manager.auth.secret_ref.name)
        if creds.azure_key_vault is not None and creds.azure_key_vault.auth.client_secret is not None:
            names.append(creds.azure_key_vault.auth.client_secret.secret_ref.name)
    if spec.tls is not None and spec.tls.ca_secret_ref is not None:
        names.append(spec.tls.ca_secret_ref.name)
    return sorted(set(names))


# --------------------------------------------------------------------------- provider sync


@dataclass
class SyncOutcome:
    """What one sync of one provider did; ``status`` is the status patch to write."""

    ok: bool
    reason: str
    message: str
    status: dict[str, Any]
    changed: bool = False
    fingerprint: str | None = None
    retry_in: float = 0.0
    has_last_good: bool = False
    external: bool = False
    refresh_interval: float = 60.0
    #: What was bound (in memory only, for the credential check); ``None`` for a keyless provider.
    api_key: str | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)


ApplyFn = Callable[[Mapping[str, Any]], Awaitable[Any]]
GetSecretFn = Callable[[str, str], Awaitable["Mapping[str, Any] | None"]]


class ProviderSyncer:
    """Fetches a provider's credential and writes its provider Secret.

    ``apply`` is server-side apply (``kube.apply``); ``get_secret(namespace, name)`` returns the
    live provider Secret or ``None`` (only its annotations are read); ``reader`` reads source
    Secrets for the sources; ``fingerprint_key`` returns the HMAC key.
    """

    def __init__(
        self,
        *,
        fetcher: SharedFetcher,
        reader: SecretReader,
        apply: ApplyFn,
        get_secret: GetSecretFn,
        fingerprint_key: Callable[[], Awaitable[bytes]],
        jwt_provider: Any = None,
        source_options: SourceOptions | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.reader = reader
        self._apply = apply
        self._get_secret = get_secret
        self._fingerprint_key = fingerprint_key
        self._jwt_provider = jwt_provider
        self._source_options = source_options

    def key_for(self, namespace: str, spec: LLMProviderSpec) -> str | None:
        """The fetcher key of a provider's source, ``None`` for keyless providers."""
        return source_key(namespace, spec.credentials) if spec.credentials is not None else None

    async def sync(self, body: Mapping[str, Any], *, force: bool = False) -> SyncOutcome:
        """Sync one LLMProvider (its whole object as a dict); never raises for store problems."""
        meta = body.get("metadata", {})
        namespace, name = meta["namespace"], meta["name"]
        generation = meta.get("generation")
        existing_status = body.get("status") or {}
        secret_name = provider_secret_name(name)
        try:
            spec = LLMProviderSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            # Admission (CEL) catches this unless the object was stored before a rule was added.
            return self._failed(
                InvalidSpec(
                    "spec does not validate against the LLMProvider schema: "
                    + invalid_spec_message(exc.errors())
                ),
                generation,
                existing_status,
                has_last_good=False,
                external=False,
                refresh=60.0,
            )
        creds = spec.credentials
        external = creds is not None and creds.secret_ref is None
        refresh = duration_seconds(creds.refresh_interval) if creds is not None else 60.0
        live = await self._get_secret(namespace, secret_name)
        live_fp = ((live or {}).get("metadata", {}).get("annotations") or {}).get(FINGERPRINT_ANNOTATION)
        has_last_good = live is not None
        data: dict[str, str] = {}
        version: str | None = None
        try:
            if creds is not None:
                key = source_key(namespace, creds)
                fetched = await self.fetcher.fetch(
                    key,
                    lambda: build_source(
                        namespace,
                        creds,
                        self.reader,
                        jwt_provider=self._jwt_provider,
                        options=self._source_options,
                    ),
                    force=force,
                    # Periodic refreshes within one interval share a result; a forced sync never does.
                    max_age=None if force else min(refresh / 2, 5.0),
                )
                data[API_KEY] = fetched.value
                version = fetched.version
            if spec.tls is not None and spec.tls.ca_secret_ref is not None:
                ref = spec.tls.ca_secret_ref
                data[CA_KEY] = (
                    await asyncio.to_thread(
                        read_secret_key, self.reader, namespace, ref.name, ref.key, "upstream CA"
                    )
                    + "\n"
                )
        except CredentialError as err:
            failed_key = self.key_for(namespace, spec)
            retry_in = self.fetcher.retry_in(failed_key) if failed_key else 30.0
            outcome = self._failed(
                err,
                generation,
                existing_status,
                has_last_good=has_last_good,
                external=external,
                refresh=refresh,
            )
            outcome.retry_in = retry_in or 30.0
            return outcome

        stamp = now_rfc3339()
        if not data:
            # Keyless provider (a local server): nothing to bind, nothing to sync.
            status = {
                "observedGeneration": generation,
                "lastSyncTime": stamp,
                "credentialsFingerprint": None,
                "credentialsVersion": None,
                "conditions": [
                    make_condition(
                        CREDENTIALS_SYNCED,
                        True,
                        REASON_NO_CREDENTIALS,
                        "the provider needs no credentials",
                        generation,
                    ),
                    make_condition(READY, True, REASON_NO_CREDENTIALS, "keyless provider", generation),
                ],
            }
            return SyncOutcome(
                True,
                REASON_NO_CREDENTIALS,
                "no credentials",
                status,
                external=False,
                refresh_interval=refresh,
            )

        hmac_key = await self._fingerprint_key()
        fp = fingerprint_data(hmac_key, data)
        live_data = _decoded((live or {}).get("data") or {})
        # Compare the data too, so a provider Secret edited by hand is put back.
        changed = not (
            same_fingerprint(fp, live_fp) and same_fingerprint(fp, fingerprint_data(hmac_key, live_data))
        )
        if changed:
            await self._apply(self._desired_secret(body, secret_name, data, fp))
        where = "the source"
        if creds is not None:
            where = "Secret " + creds.secret_ref.name if creds.secret_ref else self._store_name(creds)
        message = f"credentials synced from {where}" + (f" (version {version})" if version else "")
        status = {
            "observedGeneration": generation,
            "lastSyncTime": stamp,
            "credentialsFingerprint": fp,
            "credentialsVersion": version,
            "conditions": [
                make_condition(CREDENTIALS_SYNCED, True, REASON_SYNCED, message, generation),
                make_condition(READY, True, REASON_SYNCED, "credentials are synced", generation),
            ],
        }
        return SyncOutcome(
            True,
            REASON_SYNCED,
            message,
            status,
            changed=changed,
            fingerprint=fp,
            has_last_good=True,
            external=external,
            refresh_interval=refresh,
            api_key=data.get(API_KEY),
            ca_pem=data.get(CA_KEY),
        )

    @staticmethod
    def _store_name(creds: CredentialsSource) -> str:
        if creds.vault is not None:
            return "Vault"
        if creds.aws_secrets_manager is not None:
            return "AWS Secrets Manager"
        return "Azure Key Vault"

    @staticmethod
    def _failed(
        err: CredentialError,
        generation: int | None,
        existing_status: Mapping[str, Any],
        *,
        has_last_good: bool,
        external: bool,
        refresh: float,
    ) -> SyncOutcome:
        message = str(err)
        conditions = [make_condition(CREDENTIALS_SYNCED, False, err.reason, message, generation)]
        if has_last_good:
            # Agents keep working with the last good provider Secret: the provider stays usable.
            conditions.append(
                make_condition(
                    READY,
                    True,
                    REASON_STALE,
                    f"last sync failed ({err.reason}); serving the last good credentials",
                    generation,
                )
            )
        else:
            conditions.append(make_condition(READY, False, err.reason, message, generation))
        # lastSyncTime / fingerprint keep describing the last good sync, so they are not in the patch.
        status: dict[str, Any] = {"observedGeneration": generation, "conditions": conditions}
        return SyncOutcome(
            False,
            err.reason,
            message,
            status,
            has_last_good=has_last_good,
            external=external,
            refresh_interval=refresh,
        )

    @staticmethod
    def _desired_secret(
        body: Mapping[str, Any], secret_name: str, data: Mapping[str, str], fp: str
    ) -> dict[str, Any]:
        meta = body["metadata"]
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name,
                "namespace": meta["namespace"],
                "labels": {
                    PROVIDER_LABEL: meta["name"],
                    "app.kubernetes.io/managed-by": "sentient-operator",
                    "app.kubernetes.io/component": "provider-credentials",
                },
                "annotations": {FINGERPRINT_ANNOTATION: fp},
                "ownerReferences": [
                    {
                        "apiVersion": body.get("apiVersion", "sentient.dev/v1alpha1"),
                        "kind": body.get("kind", "LLMProvider"),
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "type": "Opaque",
            # stringData would be merged into data by the apiserver; SSA of data owns the keys exactly,
            # so a key that disappears (e.g. ca.pem) is removed.
            "data": {k: _b64(v) for k, v in data.items()},
        }


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def _decoded(data: Mapping[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for k, v in data.items():
        try:
            out[k] = base64.b64decode(v or "")
        except (ValueError, TypeError):
            out[k] = b""
    return out
