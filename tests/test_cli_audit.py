"""``sentient audit verify``: an intact chain passes; an edited, removed or re-keyed log fails at its line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from agent_runtime.audit import AuditLog
from sentient_operator.cli.main import cli

KEY = "audit-key-for-tests-0123456789"


def _log(tmp_path: Path) -> tuple[Path, Path]:
    log_path = tmp_path / "audit.log"
    key_path = tmp_path / "audit-key"
    key_path.write_text(KEY + "\n")  # mounted Secret files may end with a newline
    audit = AuditLog(KEY.encode(), log_path)
    audit.record("runtime.start", agent="a")
    audit.record("auth.reject", reason="unknown_key", route="/assist")
    audit.close()
    with log_path.open("a") as handle:  # other logs share the stream; they are skipped
        handle.write('{"level": "info", "msg": "not an audit record"}\n')
    audit = AuditLog(KEY.encode(), log_path)
    audit.record("config.reload", agent="a")
    audit.record("ratelimit.reject", limit="requests", status=429)
    audit.close()
    return log_path, key_path


def _verify(log_path: Path, key_path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["audit", "verify", str(log_path), "--key-file", str(key_path)])
    return result.exit_code, result.output


def test_intact_chain_passes(tmp_path: Path) -> None:
    log_path, key_path = _log(tmp_path)
    code, out = _verify(log_path, key_path)
    assert code == 0, out
    assert "4 audit record(s), chain intact" in out


def test_modified_line_is_named(tmp_path: Path) -> None:
    log_path, key_path = _log(tmp_path)
    lines = log_path.read_text().splitlines()
    record = json.loads(lines[1])
    record["reason"] = "bad_signature"  # someone rewrites history
    lines[1] = json.dumps(record, separators=(",", ":"))
    log_path.write_text("\n".join(lines) + "\n")
    code, out = _verify(log_path, key_path)
    assert code == 1
    assert f"{log_path}:2: record does not match its MAC" in out
    assert "bad_signature" in out  # the offending line is shown


def test_removed_line_breaks_the_chain_at_the_next(tmp_path: Path) -> None:
    log_path, key_path = _log(tmp_path)
    lines = log_path.read_text().splitlines()
    del lines[3]  # the config.reload record (line 4)
    log_path.write_text("\n".join(lines) + "\n")
    code, out = _verify(log_path, key_path)
    assert code == 1
    assert f"{log_path}:4: sequence 3 where 2 was expected" in out


def test_wrong_key_fails_at_the_first_record(tmp_path: Path) -> None:
    log_path, _ = _log(tmp_path)
    other = tmp_path / "other-key"
    other.write_text("not-the-key")
    code, out = _verify(log_path, other)
    assert code == 1
    assert f"{log_path}:1: record does not match its MAC" in out


def test_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    log_path, key_path = _log(tmp_path)
    code, out = _verify(log_path, tmp_path / "nope")
    assert code == 1
    assert out.strip().startswith("error: cannot read the key file") and "Traceback" not in out
    code, out = _verify(tmp_path / "missing.log", key_path)
    assert code == 1 and out.strip().startswith("error: cannot read")
