"""Credentials from HashiCorp Vault or OpenBao (KV v1 / v2), with token, kubernetes or AppRole auth.

The source keeps its Vault session between fetches: a token obtained by login is renewed once
two thirds of its TTL have passed and replaced by a new login when renewal fails or the token
is rejected. A static token is re-read from its Secret on every fetch, so rotating it needs no
operator restart.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions as hvac_exc
import requests

from ..api.v1alpha1 import VaultSource
from .base import (
    CredentialError,
    CredentialSource,
    FetchedCredential,
    InvalidSpec,
    KeyNotFound,
    Malformed,
    PermissionDenied,
    SecretNotFound,
    SecretReader,
    StoreUnreachable,
    Throttled,
    clean_value,
    read_secret_key,
    read_token_key,
)
from .service_account import JwtProvider

log = logging.getLogger(__name__)


def _map_vault_error(exc: Exception, what: str) -> CredentialError:
    """A safe :class:`CredentialError` for an hvac / requests exception (its text is dropped)."""
    if isinstance(exc, hvac_exc.InvalidPath):
        return SecretNotFound(f"{what}: not found in Vault (HTTP 404)")
    if isinstance(exc, hvac_exc.Forbidden):
        return PermissionDenied(f"{what}: Vault denied access (HTTP 403)")
    if isinstance(exc, hvac_exc.Unauthorized):
        return PermissionDenied(f"{what}: Vault rejected the credentials (HTTP 401)")
    if isinstance(exc, hvac_exc.RateLimitExceeded):
        return Throttled(f"{what}: Vault is rate limiting (HTTP 429)")
    if isinstance(exc, hvac_exc.InvalidRequest):
        return InvalidSpec(f"{what}: Vault rejected the request (HTTP 400)")
    if isinstance(exc, hvac_exc.VaultDown):
        return StoreUnreachable(f"{what}: Vault is sealed or down (HTTP 503)")
    if isinstance(exc, hvac_exc.VaultError):
        return StoreUnreachable(f"{what}: Vault answered with an error ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.SSLError):
        return StoreUnreachable(f"{what}: TLS handshake with Vault failed")
    if isinstance(exc, requests.exceptions.Timeout):
        return StoreUnreachable(f"{what}: Vault timed out")
    if isinstance(exc, requests.exceptions.RequestException):
        return StoreUnreachable(f"{what}: cannot connect to Vault")
    return StoreUnreachable(f"{what}: unexpected error ({type(exc).__name__})")


class VaultCredentialSource(CredentialSource):
    """One field of one Vault KV secret."""

    kind = "vault"

    def __init__(
        self,
        spec: VaultSource,
        namespace: str,
        reader: SecretReader,
        jwt_provider: JwtProvider | None = None,
        *,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        auth = spec.auth
        methods = [m for m in (auth.token, auth.kubernetes, auth.app_role) if m is not None]
        if len(methods) != 1:
            raise InvalidSpec("vault.auth must name exactly one of token, kubernetes, appRole")
        if auth.kubernetes is not None and jwt_provider is None:
            raise InvalidSpec("vault kubernetes auth needs a service-account token source")
        self.spec = spec
        self.namespace = namespace
        self._reader = reader
        self._jwt_provider = jwt_provider
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        self._ca_file: str | None = None
        # Login session: when the token was issued and how long it lives (0 = no expiry).
        self._logged_in = False
        self._issued_at = 0.0
        self._ttl = 0.0
        self._renewable = False

    # ------------------------------------------------------------------ plumbing

    def describe(self) -> str:
        """``Vault <mount>/<path> field <key>``."""
        ns = f" (namespace {self.spec.namespace})" if self.spec.namespace else ""
        return f"Vault {self.spec.mount}/{self.spec.path}{ns} field {self.spec.key!r}"

    def referenced_secrets(self) -> list[tuple[str, str]]:
        """The token / secret-id / CA Secrets."""
        refs = []
        auth = self.spec.auth
        for ref in (
            auth.token.secret_ref if auth.token else None,
            auth.app_role.secret_ref if auth.app_role else None,
            self.spec.ca_secret_ref,
        ):
            if ref is not None:
                refs.append((self.namespace, ref.name))
        return refs

    def _verify(self) -> str | bool:
        ref = self.spec.ca_secret_ref
        if ref is None:
            return True
        if self._ca_file is None:
            pem = read_secret_key(self._reader, self.namespace, ref.name, ref.key, "Vault CA")
            # requests wants a file path; the CA bundle is public material, not a secret.
            fd, path = tempfile.mkstemp(prefix="sentient-vault-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as fh:
                fh.write(pem + "\n")
            self._ca_file = path
        return self._ca_file

    def _get_client(self) -> hvac.Client:
        if self._client is None:
            self._client = hvac.Client(
                url=self.spec.server,
                namespace=self.spec.namespace,
                verify=self._verify(),
                timeout=self._timeout,
            )
        return self._client

    def close(self) -> None:
        """Drop the HTTP session and the CA temp file."""
        with self._lock:
            if self._client is not None:
                try:
                    self._client.adapter.close()
                except Exception as exc:
                    log.debug("closing the vault client failed: %s", type(exc).__name__)
                self._client = None
            self._logged_in = False
            if self._ca_file:
                try:
                    Path(self._ca_file).unlink()
                except OSError:
                    pass
                self._ca_file = None

    # ------------------------------------------------------------------ auth

    def _login(self, client: hvac.Client) -> None:
        auth = self.spec.auth
        try:
            if auth.kubernetes is not None:
                assert self._jwt_provider is not None
                jwt = self._jwt_provider(auth.kubernetes.audience)
                resp = client.auth.kubernetes.login(
                    auth.kubernetes.role, jwt, mount_point=auth.kubernetes.mount_path
                )
            elif auth.app_role is not None:
                ref = auth.app_role.secret_ref
                secret_id = read_secret_key(
                    self._reader, self.namespace, ref.name, ref.key, "AppRole secret ID"
                )
                resp = client.auth.approle.login(
                    auth.app_role.role_id, secret_id, mount_point=auth.app_role.mount_path
                )
            else:  # pragma: no cover - guarded in __init__
                raise InvalidSpec("no login method")
        except CredentialError:
            raise
        except (hvac_exc.InvalidRequest, hvac_exc.Forbidden, hvac_exc.Unauthorized):
            # Vault answers a bad role / JWT / secret ID with 400 or 403: all mean "not allowed".
            raise PermissionDenied("Vault login refused (check the role and its bindings)") from None
        except Exception as exc:
            raise _map_vault_error(exc, "Vault login") from None
        info = resp.get("auth") or {}
        client.token = info.get("client_token")
        self._issued_at = self._clock()
        self._ttl = float(info.get("lease_duration") or 0)
        self._renewable = bool(info.get("renewable"))
        self._logged_in = True

    def _ensure_token(self, client: hvac.Client) -> None:
        auth = self.spec.auth
        if auth.token is not None:
            ref = auth.token.secret_ref
            client.token = read_token_key(self._reader, self.namespace, ref.name, ref.key, "Vault token")
            return
        if not self._logged_in:
            self._login(client)
            return
        if self._ttl <= 0:
            return
        age = self._clock() - self._issued_at
        if age < self._ttl * 2 / 3:
            return
        if self._renewable and age < self._ttl:
            try:
                resp = client.auth.token.renew_self()
                info = resp.get("auth") or {}
                new_ttl = float(info.get("lease_duration") or 0)
                # A renewal that no longer extends the token (max TTL reached) is as good as none.
                if new_ttl > self._ttl / 3:
                    self._issued_at = self._clock()
                    self._ttl = new_ttl
                    return
            except Exception as exc:
                log.debug("token renewal failed, logging in again: %s", type(exc).__name__)
        self._login(client)

    # ------------------------------------------------------------------ read

    def _read(self, client: hvac.Client) -> tuple[dict[str, Any], str | None]:
        if self.spec.kv_version == 2:
            resp = client.secrets.kv.v2.read_secret_version(
                path=self.spec.path, mount_point=self.spec.mount, raise_on_deleted_version=True
            )
            body = resp.get("data") or {}
            data = body.get("data")
            meta = body.get("metadata") or {}
            version = meta.get("version")
            return (data if isinstance(data, dict) else {}), (str(version) if version is not None else None)
        resp = client.secrets.kv.v1.read_secret(path=self.spec.path, mount_point=self.spec.mount)
        data = resp.get("data")
        return (data if isinstance(data, dict) else {}), None

    def fetch(self) -> FetchedCredential:
        """Read the field, logging in (again) when needed."""
        with self._lock:
            client = self._get_client()
            self._ensure_token(client)
            try:
                data, version = self._read(client)
            except (hvac_exc.Forbidden, hvac_exc.Unauthorized):
                if not self._logged_in:
                    raise PermissionDenied(f"{self.describe()}: Vault denied access (HTTP 403)") from None
                # The login token may have been revoked or expired early: one fresh login, one retry.
                self._logged_in = False
                self._ensure_token(client)
                try:
                    data, version = self._read(client)
                except Exception as exc:
                    raise _map_vault_error(exc, self.describe()) from None
            except Exception as exc:
                raise _map_vault_error(exc, self.describe()) from None
        if self.spec.key not in data:
            raise KeyNotFound(f"{self.describe()}: the secret has no field {self.spec.key!r}")
        raw = data[self.spec.key]
        if not isinstance(raw, str):
            raise Malformed(f"{self.describe()}: the field is not a string")
        return FetchedCredential(value=clean_value(raw, self.describe()), version=version)
