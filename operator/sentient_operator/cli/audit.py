"""``sentient audit verify``: check the HMAC chain of an agent's audit log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent_runtime.audit import VerifyResult, verify_file
from sentient_operator.cli.errors import CliError


@dataclass(frozen=True)
class AuditReport:
    """The outcome of a verification with the offending line's text, when there is one."""

    file: str
    result: VerifyResult
    line_text: str | None = None

    def summary(self) -> str:
        """One line for the terminal: ``ok`` with the record count, or where the chain breaks."""
        if self.result.ok:
            return f"ok: {self.file}: {self.result.records} audit record(s), chain intact"
        return (
            f"{self.file}:{self.result.line}: {self.result.reason} "
            f"(after {self.result.records} valid record(s))"
        )


def read_key(key_file: str) -> bytes:
    """The HMAC key as the runtime uses it: the file's text without its trailing newline."""
    try:
        text = Path(key_file).read_text()
    except OSError as exc:
        raise CliError(f"cannot read the key file {key_file}: {exc.strerror or exc}") from exc
    key = text.rstrip("\r\n")
    if not key:
        raise CliError(f"the key file {key_file} is empty")
    return key.encode()


def verify_log(log_file: str, key: bytes) -> AuditReport:
    """Verify ``log_file`` with the runtime's own verifier (non-audit lines are skipped)."""
    path = Path(log_file)
    try:
        result = verify_file(path, key)
    except OSError as exc:
        raise CliError(f"cannot read {log_file}: {exc.strerror or exc}") from exc
    line_text = None
    if not result.ok and result.line is not None:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == result.line:
                    text = raw.decode("utf-8", "replace").rstrip("\r\n")
                    line_text = text if len(text) <= 200 else text[:197] + "..."
                    break
    return AuditReport(log_file, result, line_text)
