"""Keyed fingerprints of credentials (HMAC-SHA256), and the key they are made with.

A plain hash of an API key on a pod template or in a status lets anyone who can read it test
guesses offline (and the same key hashes alike across clusters). A keyed HMAC does not: the key
lives in the Secret ``sentient-operator-fingerprint-key`` in the operator's namespace, readable
only by the operator, created with 32 random bytes the first time it is needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping

from .. import kube

FINGERPRINT_KEY_SECRET = "sentient-operator-fingerprint-key"  # noqa: S105 - a name
FINGERPRINT_KEY_DATA_KEY = "key"
#: Annotation on provider Secrets, bound Secrets and pod templates.
FINGERPRINT_ANNOTATION = "sentient.dev/credentials-fingerprint"
_PREFIX = "hmac-sha256:"
_KEY_BYTES = 32


def fingerprint(key: bytes, value: str | bytes) -> str:
    """``hmac-sha256:<hex>`` of one value under ``key``."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest()


def fingerprint_data(key: bytes, data: Mapping[str, str | bytes]) -> str:
    """Fingerprint of a whole Secret's data (e.g. a bound Secret), independent of key order.

    Each key and value is length-prefixed so that no two different mappings feed the HMAC
    the same bytes.
    """
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for name in sorted(data):
        raw = data[name]
        value = raw.encode("utf-8") if isinstance(raw, str) else raw
        encoded = name.encode("utf-8")
        mac.update(len(encoded).to_bytes(4, "big") + encoded)
        mac.update(len(value).to_bytes(8, "big") + value)
    return _PREFIX + mac.hexdigest()


def same_fingerprint(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two fingerprints (``None`` equals nothing)."""
    if a is None or b is None:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


async def load_or_create_key(namespace: str) -> bytes:
    """The fingerprint key from Secret ``sentient-operator-fingerprint-key`` in ``namespace``.

    Creates the Secret with a random key when it does not exist. When two operator replicas
    race to create it, the loser reads the winner's key, so both fingerprint alike.
    """
    for _ in range(3):
        secret = await kube.get("v1", "Secret", FINGERPRINT_KEY_SECRET, namespace)
        if secret is not None:
            raw = (secret.get("data") or {}).get(FINGERPRINT_KEY_DATA_KEY)
            key = base64.b64decode(raw) if raw else b""
            if len(key) >= 16:
                return key
            raise RuntimeError(
                f"Secret {namespace}/{FINGERPRINT_KEY_SECRET} has no usable {FINGERPRINT_KEY_DATA_KEY!r} "
                "(at least 16 bytes); delete it to have a new key made"
            )
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": FINGERPRINT_KEY_SECRET,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "sentient-operator",
                    "app.kubernetes.io/component": "fingerprint-key",
                },
            },
            "type": "Opaque",
            "data": {FINGERPRINT_KEY_DATA_KEY: base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()},
        }
        try:
            await kube.call("POST", f"/api/v1/namespaces/{namespace}/secrets", body=body)
        except kube.KubeError as exc:
            if not exc.conflict:  # 409: another replica created it first; read theirs
                raise
    raise RuntimeError(f"could not read or create Secret {namespace}/{FINGERPRINT_KEY_SECRET}")
