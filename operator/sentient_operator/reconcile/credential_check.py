"""Re-checking each provider's bound credential against its upstream, cheaply and periodically.

A key can be wrong from the start or be revoked upstream later; neither changes anything in the
cluster, so only asking the upstream tells. The check is the call ``validateBeforeRollout`` uses
(:func:`sentient_operator.credentials.validate.validate_key`: the models list, no tokens spent):

- one call per provider, never per agent: the agents read the verdict from the provider's status;
- only when due: at once for a credential not checked yet (a new fingerprint), then every
  ``credential_check_seconds`` (0: only when the credential changes); a provider whose upstream
  cannot tell (no models route: ``Inconclusive``) is not asked again until its credential changes;
- at most ``credential_check_concurrency`` calls at once, outside the reconcile workers, so a
  slow upstream never holds up reconciles.

Only a verdict that differs from the last conclusive one for the provider is reported (the
provider reconciler writes it into the status and an Event is sent once per transition).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sentient_operator.api.v1alpha1 import LLMProviderSpec
from sentient_operator.conditions import make_condition
from sentient_operator.credentials.validate import CREDENTIALS_VALID, ValidationResult, Validity, validate_key

Key = tuple[str, str]

#: The verdicts that say something about the key (the others say something about the upstream).
CONCLUSIVE = (Validity.VALID, Validity.UNAUTHORIZED)

Validator = Callable[["Credential"], Awaitable[ValidationResult]]


@dataclass(frozen=True)
class Credential:
    """What the last successful sync bound for one provider (in memory only)."""

    fingerprint: str
    spec: LLMProviderSpec
    api_key: str = field(repr=False)
    ca_pem: str | None = field(default=None, repr=False)


@dataclass
class _State:
    credential: Credential
    checked_fingerprint: str | None = None
    checked_at: float = 0.0
    last: ValidationResult | None = None


async def validate_credential(credential: Credential) -> ValidationResult:
    """The upstream's verdict on ``credential`` (never raises, never echoes the key)."""
    spec = credential.spec
    return await validate_key(
        str(spec.type),
        spec.endpoint,
        credential.api_key,
        ca_pem=credential.ca_pem,
        insecure_skip_verify=bool(spec.tls and spec.tls.insecure_skip_verify),
        extra_headers=spec.default_headers,
    )


class CredentialChecks:
    """Which provider credentials are due for a check, the checks, and the verdicts."""

    def __init__(
        self,
        interval: float,
        concurrency: int,
        *,
        validator: Validator = validate_credential,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._semaphore = asyncio.Semaphore(max(1, concurrency))
        self._validator = validator
        self._clock = clock
        self._states: dict[Key, _State] = {}
        #: The last conclusive verdict per provider: what its status (and its agents) show.
        self.verdicts: dict[Key, ValidationResult] = {}

    def remember(self, key: Key, credential: Credential | None) -> None:
        """The credential a sync bound (``None``: a keyless provider, nothing to check)."""
        if credential is None:
            self.forget(key)
            return
        state = self._states.get(key)
        if state is None:
            self._states[key] = _State(credential)
        else:
            state.credential = credential

    def forget(self, key: Key) -> None:
        """The provider went (or needs no key)."""
        self._states.pop(key, None)
        self.verdicts.pop(key, None)

    def due(self) -> list[Key]:
        """Providers whose credential should be checked now."""
        now = self._clock()
        out = []
        for key, state in self._states.items():
            changed = state.checked_fingerprint != state.credential.fingerprint
            # An upstream without a models route cannot tell: asking again would not help.
            can_tell = state.last is None or state.last.validity is not Validity.INCONCLUSIVE
            if changed or (can_tell and self.interval > 0 and now - state.checked_at >= self.interval):
                out.append(key)
        return out

    async def run_due(self) -> list[tuple[Key, ValidationResult | None, ValidationResult]]:
        """Check every due provider; the transitions ``(key, previous verdict, new verdict)``."""
        keys = self.due()
        results = await asyncio.gather(*(self._check(key) for key in keys))
        return [change for change in results if change is not None]

    async def _check(self, key: Key) -> tuple[Key, ValidationResult | None, ValidationResult] | None:
        state = self._states.get(key)
        if state is None:
            return None
        credential = state.credential
        async with self._semaphore:
            result = await self._validator(credential)
        if self._states.get(key) is not state:
            return None  # forgotten meanwhile
        state.checked_fingerprint = credential.fingerprint
        state.checked_at = self._clock()
        state.last = result
        previous = self.verdicts.get(key)
        if result.validity not in CONCLUSIVE:
            return None  # an unreachable upstream says nothing about the key: keep the last verdict
        self.verdicts[key] = result
        if previous is not None and previous.validity is result.validity:
            return None
        return key, previous, result

    def conditions(self, key: Key, generation: int | None) -> list[dict[str, Any]]:
        """The provider's ``CredentialsValid`` condition (and ``Ready`` when refused), if known."""
        verdict = self.verdicts.get(key)
        if verdict is None:
            return []
        if verdict.validity is Validity.UNAUTHORIZED:
            message = f"the upstream refused the credential: {verdict.message}"
            return [
                make_condition(CREDENTIALS_VALID, False, Validity.UNAUTHORIZED.value, message, generation),
                make_condition("Ready", False, Validity.UNAUTHORIZED.value, message, generation),
            ]
        return [make_condition(CREDENTIALS_VALID, True, Validity.VALID.value, verdict.message, generation)]


def overlay(conditions: Iterable[dict[str, Any]], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``conditions`` with those of ``extra`` replacing the ones of the same type."""
    types = {c["type"] for c in extra}
    return [c for c in conditions if c["type"] not in types] + extra
