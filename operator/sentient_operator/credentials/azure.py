"""Credentials from Azure Key Vault: client secret, workload identity or the default credential chain."""

from __future__ import annotations

import logging
import threading
from typing import Any

import azure.core.exceptions as aexc
from azure.identity import ClientSecretCredential, DefaultAzureCredential, WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient

from ..api.v1alpha1 import AzureKeyVaultSource
from .base import (
    CredentialError,
    CredentialSource,
    FetchedCredential,
    InvalidSpec,
    Malformed,
    PermissionDenied,
    SecretNotFound,
    SecretReader,
    StoreUnreachable,
    Throttled,
    clean_value,
    read_secret_key,
)

log = logging.getLogger(__name__)


def _map_azure_error(exc: Exception, what: str) -> CredentialError:
    """A safe :class:`CredentialError` for an azure-core exception (its message can echo URLs)."""
    if isinstance(exc, aexc.ResourceNotFoundError):
        return SecretNotFound(f"{what}: not found in Key Vault (HTTP 404)")
    if isinstance(exc, aexc.ClientAuthenticationError):
        return PermissionDenied(f"{what}: Azure authentication failed")
    if isinstance(exc, aexc.HttpResponseError):
        status = exc.status_code
        if status == 403:
            return PermissionDenied(f"{what}: Key Vault denied access (HTTP 403)")
        if status == 401:
            return PermissionDenied(f"{what}: Key Vault rejected the credentials (HTTP 401)")
        if status == 429:
            retry_after: float | None = None
            if exc.response is not None:
                try:
                    retry_after = float(getattr(exc.response, "headers", {}).get("Retry-After", ""))
                except ValueError:
                    pass
            return Throttled(f"{what}: Key Vault is throttling (HTTP 429)", retry_after=retry_after)
        return StoreUnreachable(f"{what}: Key Vault answered HTTP {status}")
    if isinstance(exc, aexc.ServiceRequestError | aexc.ServiceResponseError):
        return StoreUnreachable(f"{what}: cannot connect to Key Vault")
    if isinstance(exc, ValueError):
        return InvalidSpec(f"{what}: the Azure client rejected the configuration")
    return StoreUnreachable(f"{what}: unexpected error ({type(exc).__name__})")


class AzureKeyVaultCredentialSource(CredentialSource):
    """One Key Vault secret, latest or a pinned version.

    ``authority_host`` and ``connection_verify`` exist for private clouds and tests; by default
    azure-identity's own resolution (``AZURE_AUTHORITY_HOST``, public cloud) applies.
    """

    kind = "azure"

    def __init__(
        self,
        spec: AzureKeyVaultSource,
        namespace: str,
        reader: SecretReader,
        *,
        authority_host: str | None = None,
        connection_verify: str | bool | None = None,
        timeout: float = 10.0,
    ) -> None:
        auth = spec.auth
        chosen = [m for m in (auth.client_secret, auth.workload_identity, auth.default or None) if m]
        if len(chosen) != 1:
            raise InvalidSpec(
                "azureKeyVault.auth must name exactly one of clientSecret, workloadIdentity, default"
            )
        self.spec = spec
        self.namespace = namespace
        self._reader = reader
        self._authority_host = authority_host
        self._transport: dict[str, Any] = {
            "connection_timeout": timeout,
            "read_timeout": timeout,
            # The sync loop backs off itself; SDK retries would multiply store calls.
            "retry_total": 0,
        }
        if connection_verify is not None:
            self._transport["connection_verify"] = connection_verify
        self._lock = threading.Lock()
        self._client: SecretClient | None = None
        self._credential: Any = None
        self._client_secret: str | None = None

    def describe(self) -> str:
        """``Azure Key Vault <url> secret <name> [version v]``."""
        version = f" version {self.spec.version}" if self.spec.version else ""
        return f"Azure Key Vault {self.spec.vault_url} secret {self.spec.secret_name}{version}"

    def referenced_secrets(self) -> list[tuple[str, str]]:
        """The client-secret Secret, if any."""
        cs = self.spec.auth.client_secret
        return [(self.namespace, cs.secret_ref.name)] if cs else []

    def _make_credential(self) -> Any:
        auth = self.spec.auth
        common: dict[str, Any] = dict(self._transport)
        if self._authority_host:
            common["authority"] = self._authority_host
        if auth.client_secret is not None:
            cs = auth.client_secret
            secret = read_secret_key(
                self._reader,
                self.namespace,
                cs.secret_ref.name,
                cs.secret_ref.key,
                "Azure client secret",
            )
            if self._credential is not None and secret == self._client_secret:
                return self._credential
            self._client_secret = secret
            self._client = None
            if self._authority_host:
                common["disable_instance_discovery"] = True
            return ClientSecretCredential(cs.tenant_id, cs.client_id, secret, **common)
        if self._credential is not None:
            return self._credential
        if auth.workload_identity is not None:
            wi = auth.workload_identity
            kwargs: dict[str, Any] = {}
            if wi.tenant_id:
                kwargs["tenant_id"] = wi.tenant_id
            if wi.client_id:
                kwargs["client_id"] = wi.client_id
            if self._authority_host:
                common["disable_instance_discovery"] = True
            return WorkloadIdentityCredential(**kwargs, **common)
        if self._authority_host:
            common["disable_instance_discovery"] = True
        return DefaultAzureCredential(**common)

    def _get_client(self) -> SecretClient:
        credential = self._make_credential()
        if self._client is None or credential is not self._credential:
            self._credential = credential
            self._client = SecretClient(self.spec.vault_url, credential, **self._transport)
        return self._client

    def close(self) -> None:
        """Close the client and the credential."""
        with self._lock:
            for obj in (self._client, self._credential):
                try:
                    if obj is not None:
                        obj.close()
                except Exception as exc:
                    log.debug("closing the azure client failed: %s", type(exc).__name__)
            self._client = None
            self._credential = None

    def fetch(self) -> FetchedCredential:
        """get_secret(name, version)."""
        what = self.describe()
        with self._lock:
            try:
                client = self._get_client()
                secret = client.get_secret(self.spec.secret_name, self.spec.version)
            except CredentialError:
                raise
            except Exception as exc:
                raise _map_azure_error(exc, what) from None
        if secret.value is None:
            raise Malformed(f"{what}: the secret has no value")
        return FetchedCredential(value=clean_value(secret.value, what), version=secret.properties.version)
