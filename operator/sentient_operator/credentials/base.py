"""The interface every credential source implements, and the errors it raises.

A source fetches one credential (the provider's API key) from one store. Its
errors carry a condition ``reason`` and a message that is safe to show in a
status, an Event or a log line: stores' own exception texts are never passed
through, because they can carry URLs with tokens, request bodies or values.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

#: The LLMProvider condition of the last fetch from its secret store.
CREDENTIALS_SYNCED = "CredentialsSynced"

# Condition reasons, shared by the provider handler and the docs.
REASON_SYNCED = "Synced"
REASON_SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - a reason, not a secret
REASON_KEY_NOT_FOUND = "KeyNotFound"
REASON_STORE_UNREACHABLE = "StoreUnreachable"
REASON_PERMISSION_DENIED = "PermissionDenied"
REASON_MALFORMED = "Malformed"
REASON_THROTTLED = "Throttled"
REASON_INVALID_SPEC = "InvalidSpec"

#: Every reason a failed fetch can have.
FAILURE_REASONS = (
    REASON_SECRET_NOT_FOUND,
    REASON_KEY_NOT_FOUND,
    REASON_STORE_UNREACHABLE,
    REASON_PERMISSION_DENIED,
    REASON_MALFORMED,
    REASON_THROTTLED,
    REASON_INVALID_SPEC,
)


class CredentialError(Exception):
    """A fetch failed; ``reason`` is the condition reason, ``str(err)`` is safe to publish.

    ``retry_after`` is the store's own hint (seconds) when it gave one, e.g. on throttling.
    """

    reason: ClassVar[str] = REASON_STORE_UNREACHABLE
    #: Whether retrying without a change of input can help (a missing secret may appear later,
    #: so only a broken spec is not transient).
    transient: ClassVar[bool] = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SecretNotFound(CredentialError):
    """The secret (or the path, or the version) does not exist in the store."""

    reason = REASON_SECRET_NOT_FOUND


class KeyNotFound(CredentialError):
    """The secret exists but has no such key / field."""

    reason = REASON_KEY_NOT_FOUND


class StoreUnreachable(CredentialError):
    """The store could not be reached or answered with a server error."""

    reason = REASON_STORE_UNREACHABLE


class PermissionDenied(CredentialError):
    """The store refused the operator's identity (authentication or authorization)."""

    reason = REASON_PERMISSION_DENIED


class Malformed(CredentialError):
    """The secret's content cannot be used: not JSON where JSON is expected, empty, binary."""

    reason = REASON_MALFORMED


class Throttled(CredentialError):
    """The store asked the operator to slow down."""

    reason = REASON_THROTTLED


class InvalidSpec(CredentialError):
    """The credential source in the spec cannot work as written (e.g. no auth method)."""

    reason = REASON_INVALID_SPEC
    transient = False


@dataclass(frozen=True)
class FetchedCredential:
    """One credential as read from its store.

    The value is left out of ``repr`` so that a stray log of the object leaks nothing.
    """

    value: str = field(repr=False)
    version: str | None = None


#: Reads a Kubernetes Secret: ``(namespace, name) -> data`` (decoded bytes), ``None`` when absent.
#: Sources use it for auxiliary material (a Vault token, AWS keys, an Azure client secret).
SecretReader = Callable[[str, str], "Mapping[str, bytes] | None"]


def read_secret_key(reader: SecretReader, namespace: str, name: str, key: str, what: str) -> str:
    """The text under ``key`` of Secret ``namespace/name``, for auxiliary auth material.

    Raises :class:`SecretNotFound` / :class:`KeyNotFound` / :class:`Malformed` naming ``what``
    (e.g. "Vault token") so that the condition says which reference is wrong.
    """
    data = reader(namespace, name)
    if data is None:
        raise SecretNotFound(f"{what}: Secret {namespace}/{name} not found")
    raw = data.get(key)
    if raw is None:
        raise KeyNotFound(f"{what}: Secret {namespace}/{name} has no key {key!r}")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Malformed(f"{what}: key {key!r} of Secret {namespace}/{name} is not UTF-8 text") from None
    if not text:
        raise Malformed(f"{what}: key {key!r} of Secret {namespace}/{name} is empty")
    return text


def read_token_key(reader: SecretReader, namespace: str, name: str, key: str, what: str) -> str:
    """:func:`read_secret_key` for a token sent as an HTTP header (a Vault token): printable ASCII
    without spaces, else :class:`Malformed`.

    Without this check the HTTP client refuses the header itself, with an error that quotes the
    value and that would read as an unreachable store.
    """
    text = read_secret_key(reader, namespace, name, key, what)
    if not all("\x21" <= ch <= "\x7e" for ch in text):
        raise Malformed(
            f"{what}: key {key!r} of Secret {namespace}/{name} is not a token "
            "(it holds spaces, line breaks, control or non-ASCII characters)"
        )
    return text


class CredentialSource(abc.ABC):
    """One configured place a credential is read from.

    Implementations are blocking (they use blocking SDKs); callers run :meth:`fetch` in a
    worker thread. A source object may keep a session (e.g. a Vault token) between fetches.
    """

    #: Short store name used in messages and metrics ("kubernetes", "vault", "aws", "azure").
    kind: ClassVar[str] = "unknown"
    #: Whether the store is external (polled on refreshInterval) rather than watched.
    external: ClassVar[bool] = True

    @abc.abstractmethod
    def fetch(self) -> FetchedCredential:
        """Read the credential now; raise a :class:`CredentialError` on any failure."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the credential comes from, for messages (never a value)."""

    def referenced_secrets(self) -> list[tuple[str, str]]:
        """Kubernetes Secrets ``(namespace, name)`` this source reads; changes to them re-trigger a sync."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release sessions or connections held by the source."""


def clean_value(raw: str | bytes, where: str) -> str:
    """A credential value as text, with surrounding whitespace (a trailing newline) removed.

    Raises :class:`Malformed` for empty or non-UTF-8 values.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"{where}: value is not UTF-8 text") from None
    value = raw.strip()
    if not value:
        raise Malformed(f"{where}: value is empty")
    return value
