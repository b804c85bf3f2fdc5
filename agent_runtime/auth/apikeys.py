"""API keys: bound hashed (``apikeys.json``), compared in constant time, mapped to tiers.

The pod holds only their SHA-256, so a leaked ConfigMap or Secret does not leak a usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from agent_runtime.placeholders import is_placeholder

log = logging.getLogger("agent_runtime.auth")

ReadFile = Callable[[str], "str | None"]


def hash_api_key(key: str) -> str:
    """Hex SHA-256 of an API key, as bound in ``apikeys.json``."""
    return hashlib.sha256(key.encode()).hexdigest()


# The placeholders the project's own templates and docs print: the file holds only digests, so
# these are recognised at load by their digest; any other placeholder is refused when presented.
_TEMPLATE_PLACEHOLDERS = (
    "REPLACE-WITH-A-LONG-RANDOM-KEY",
    "REPLACE-WITH-YOUR-PROVIDER-KEY",
    "REPLACE-WITH-YOUR-KEY",
    "REPLACEME",
    "YOUR_KEY",
    "YOUR-API-KEY",
    "changeme",
    "placeholder",
)
_PLACEHOLDER_DIGESTS = frozenset(hashlib.sha256(p.encode()).digest() for p in _TEMPLATE_PLACEHOLDERS)


@dataclass(frozen=True, slots=True)
class _KeyEntry:
    key_id: str
    digest: bytes
    tier: str | None


class APIKeyTable:
    """The parsed ``apikeys.json``, re-parsed only when the file content changes."""

    def __init__(self, read_file: ReadFile, file_name: str) -> None:
        self._read_file = read_file
        self._file_name = file_name
        self._source: str | None = None
        self._by_digest: dict[bytes, _KeyEntry] = {}

    def _entries(self) -> dict[bytes, _KeyEntry]:
        text = self._read_file(self._file_name)
        # CredentialFiles returns the same str object until the file changes,
        # so an identity check makes the common case free.
        if text is not self._source:
            self._by_digest = self._parse(text)
            self._source = text
        return self._by_digest

    def _parse(self, text: str | None) -> dict[bytes, _KeyEntry]:
        if not text:
            return {}
        try:
            raw = json.loads(text)
        except ValueError:
            log.error("API key file %s is not valid JSON; no API key is accepted", self._file_name)
            return {}
        table: dict[bytes, _KeyEntry] = {}
        if not isinstance(raw, dict):
            return table
        for key_id, entry in raw.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                continue
            try:
                digest = bytes.fromhex(entry["sha256"])
            except ValueError:
                continue
            if digest in _PLACEHOLDER_DIGESTS:
                log.warning(
                    "API key %r in %s is a template placeholder; it never authenticates: "
                    "put a long random key in the agent's API-key Secret",
                    str(key_id),
                    self._file_name,
                )
                continue
            tier = entry.get("tier")
            table[digest] = _KeyEntry(str(key_id), digest, tier if isinstance(tier, str) else None)
        return table

    def lookup(self, key: str) -> _KeyEntry | None:
        """The entry of a presented key, or None."""
        digest = hashlib.sha256(key.encode()).digest()
        entry = self._entries().get(digest)
        # The dict lookup is keyed by a hash of the secret: its timing can only
        # reveal facts about SHA-256 outputs of the guess, not about a stored
        # key. The final comparison is constant-time anyway.
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        if is_placeholder(key):
            # A key someone bound from a template unchanged: refuse it and say which one (never its value).
            log.warning(
                "API key %r in %s is a placeholder; it never authenticates: "
                "put a long random key in the agent's API-key Secret",
                entry.key_id,
                self._file_name,
            )
            return None
        return entry

    def __len__(self) -> int:
        return len(self._entries())
