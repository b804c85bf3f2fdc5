"""Credentials from AWS Secrets Manager: the secret string, or one key of a JSON secret."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import boto3
import botocore.config
import botocore.exceptions as bexc

from ..api.v1alpha1 import AWSSecretsManagerSource
from .base import (
    CredentialError,
    CredentialSource,
    FetchedCredential,
    KeyNotFound,
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

_NOT_FOUND = {"ResourceNotFoundException"}
_DENIED = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "DecryptionFailure",
    "KMSAccessDeniedException",
}
_THROTTLED = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
}


def _map_aws_error(exc: Exception, what: str) -> CredentialError:
    """A safe :class:`CredentialError` for a botocore exception (AWS messages can echo ARNs and keys)."""
    if isinstance(exc, bexc.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND:
            return SecretNotFound(f"{what}: not found in Secrets Manager ({code})")
        if code == "InvalidRequestException":
            # e.g. the secret is scheduled for deletion, or the version stage has no version.
            return SecretNotFound(f"{what}: Secrets Manager cannot serve it ({code})")
        if code in _DENIED or status in (401, 403):
            return PermissionDenied(f"{what}: AWS denied access ({code or status})")
        if code in _THROTTLED or status == 429:
            retry_after: float | None = None
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
            try:
                retry_after = float(headers.get("retry-after", ""))
            except ValueError:
                pass
            return Throttled(f"{what}: AWS is throttling ({code or status})", retry_after=retry_after)
        return StoreUnreachable(f"{what}: Secrets Manager error ({code or status})")
    if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
        return PermissionDenied(f"{what}: no AWS credentials found")
    if isinstance(exc, bexc.EndpointConnectionError | bexc.ConnectionError | bexc.ConnectTimeoutError):
        return StoreUnreachable(f"{what}: cannot connect to Secrets Manager")
    if isinstance(exc, bexc.ReadTimeoutError):
        return StoreUnreachable(f"{what}: Secrets Manager timed out")
    if isinstance(exc, bexc.BotoCoreError):
        return StoreUnreachable(f"{what}: AWS client error ({type(exc).__name__})")
    return StoreUnreachable(f"{what}: unexpected error ({type(exc).__name__})")


class AWSSecretsManagerCredentialSource(CredentialSource):
    """One AWS Secrets Manager secret (or one key of it when it holds JSON)."""

    kind = "aws"

    def __init__(
        self,
        spec: AWSSecretsManagerSource,
        namespace: str,
        reader: SecretReader,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.spec = spec
        self.namespace = namespace
        self._reader = reader
        self._timeout = timeout
        self._lock = threading.Lock()
        self._client: Any = None
        self._client_creds: tuple[str, str, str | None] | None = None

    def describe(self) -> str:
        """``AWS Secrets Manager <id> key <k>``."""
        key = f" key {self.spec.key!r}" if self.spec.key else ""
        stage = f" stage {self.spec.version_stage}" if self.spec.version_stage else ""
        return f"AWS Secrets Manager {self.spec.secret_id}{stage}{key}"

    def referenced_secrets(self) -> list[tuple[str, str]]:
        """The static-keys Secret, if any."""
        ref = self.spec.auth.secret_ref
        return [(self.namespace, ref.name)] if ref else []

    def _static_keys(self) -> tuple[str, str, str | None] | None:
        ref = self.spec.auth.secret_ref
        if ref is None:
            return None
        data = self._reader(self.namespace, ref.name)
        if data is None:
            raise SecretNotFound(f"AWS keys: Secret {self.namespace}/{ref.name} not found")
        key_id = read_secret_key(self._reader, self.namespace, ref.name, "accessKeyId", "AWS keys")
        secret = read_secret_key(self._reader, self.namespace, ref.name, "secretAccessKey", "AWS keys")
        token = data.get("sessionToken")
        return key_id, secret, (token.decode().strip() if token else None)

    def _get_client(self) -> Any:
        # Static keys are re-read on every fetch so that rotating them takes effect without a restart.
        creds = self._static_keys()
        if self._client is None or creds != self._client_creds:
            config = botocore.config.Config(
                connect_timeout=self._timeout,
                read_timeout=self._timeout,
                # The sync loop backs off with jitter itself; SDK retries would multiply store calls.
                retries={"max_attempts": 1, "mode": "standard"},
            )
            kwargs: dict[str, Any] = {"region_name": self.spec.region, "config": config}
            if self.spec.endpoint:
                kwargs["endpoint_url"] = self.spec.endpoint
            if creds is not None:
                kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"], kwargs["aws_session_token"] = (
                    creds
                )
            session = boto3.session.Session()
            self._client = session.client("secretsmanager", **kwargs)
            self._client_creds = creds
        return self._client

    def close(self) -> None:
        """Drop the client."""
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception as exc:
                    log.debug("closing the aws client failed: %s", type(exc).__name__)
            self._client = None

    def fetch(self) -> FetchedCredential:
        """GetSecretValue, then pick the key out of the JSON when one is named."""
        what = self.describe()
        with self._lock:
            try:
                client = self._get_client()
                kwargs: dict[str, Any] = {"SecretId": self.spec.secret_id}
                if self.spec.version_stage:
                    kwargs["VersionStage"] = self.spec.version_stage
                resp = client.get_secret_value(**kwargs)
            except CredentialError:
                raise
            except Exception as exc:
                raise _map_aws_error(exc, what) from None
        version = resp.get("VersionId")
        if "SecretString" in resp and resp["SecretString"] is not None:
            raw: str | bytes = resp["SecretString"]
        elif resp.get("SecretBinary") is not None:
            raw = resp["SecretBinary"]
        else:
            raise Malformed(f"{what}: the secret has no value")
        if self.spec.key is None:
            return FetchedCredential(value=clean_value(raw, what), version=version)
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise Malformed(f"{what}: the secret is not valid JSON") from None
        if not isinstance(doc, dict):
            raise Malformed(f"{what}: the secret's JSON is not an object")
        if self.spec.key not in doc:
            raise KeyNotFound(f"{what}: the JSON has no key {self.spec.key!r}")
        val = doc[self.spec.key]
        if not isinstance(val, str):
            raise Malformed(f"{what}: the JSON value is not a string")
        return FetchedCredential(value=clean_value(val, what), version=version)
