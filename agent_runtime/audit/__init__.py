"""The audit log of security events: an HMAC chain of JSON lines, written locally and shipped to SIEMs.

:mod:`.chain` (records, MAC, verifier), :mod:`.file_sink` (file or stdout), :mod:`.log` (the
audit log the runtime writes to), :mod:`.spool` (a sink's bounded on-disk buffer),
:mod:`.syslog_sink` and :mod:`.http_sink` (transports), :mod:`.forwarder` (a sink's shipping
thread), :mod:`.sinks` (the sinks of a config).
"""

from agent_runtime.audit.chain import GENESIS, STREAM, VerifyResult, compute_mac, verify, verify_file
from agent_runtime.audit.log import AuditLog, open_audit_log, worker_audit_path
from agent_runtime.audit.verify_main import main

__all__ = [
    "GENESIS",
    "STREAM",
    "AuditLog",
    "VerifyResult",
    "compute_mac",
    "main",
    "open_audit_log",
    "verify",
    "verify_file",
    "worker_audit_path",
]
