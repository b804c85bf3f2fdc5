"""The syslog transport: RFC 5424 messages over TCP with octet-counting framing (RFC 6587), TLS (RFC 5425).

Each audit record becomes one message::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG

with the record's own ``ts`` as TIMESTAMP, its ``event`` as MSGID and the record's JSON line,
unchanged, as MSG (so the receiver can verify the chain from the messages alone). With
``structuredData`` an SD-ELEMENT ``[audit@32473 seq=".." event=".." worker=".."]`` repeats the
fields a SIEM indexes on (32473 is the private enterprise number RFC 5612 reserves for
documentation: change nothing, the SD-ID only names the fields).

Plain TCP syslog has no acknowledgements: a batch counts as shipped once the kernel took it. Before
every batch the connection is checked (a closed or reset connection is reopened first), so a
receiver that went away is noticed before records are written into a dead socket; records written
in the instant a receiver dies without reading them can still be lost (use the HTTP sink where
that matters).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from collections.abc import Callable

from agent_runtime.audit.chain import record_head
from agent_runtime.audit.errors import SinkUnavailable
from agent_runtime.config import SyslogSinkConfig, duration_seconds

FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5
SD_ID = "audit@32473"
# Events of refusals and failures go out as warning, the rest as notice.
_WARNING_WORDS = ("fail", "refus", "reject", "block", "deni", "overflow")


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, NILVALUE when empty."""
    text = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return text or "-"


class SyslogFormatter:
    """Audit JSON lines -> framed RFC 5424 messages."""

    def __init__(self, config: SyslogSinkConfig, hostname: str, procid: int) -> None:
        self.facility = FACILITIES[config.facility]
        self.app_name = _printable(config.app_name, 48)
        self.hostname = _printable(hostname, 255)
        self.procid = str(procid)
        self.structured_data = config.structured_data

    def message(self, line: bytes) -> bytes:
        """One RFC 5424 message (without framing) carrying ``line`` as MSG."""
        head = record_head(line)
        severity = SEVERITY_WARNING if any(w in head.event for w in _WARNING_WORDS) else SEVERITY_NOTICE
        sd = "-"
        if self.structured_data:
            params = [("seq", head.seq), ("event", head.event), ("worker", head.worker)]
            body = " ".join(f'{k}="{_sd_escape(str(v))}"' for k, v in params if v not in (None, ""))
            sd = f"[{SD_ID} {body}]"
        header = (
            f"<{self.facility * 8 + severity}>1 {_printable(head.ts, 64)} {self.hostname} {self.app_name} "
            f"{self.procid} {_printable(head.event, 32)} {sd} "
        )
        return header.encode() + line

    def frame(self, line: bytes) -> bytes:
        """Octet counting (RFC 6587 3.4.1): ``MSG-LEN SP SYSLOG-MSG``."""
        message = self.message(line)
        return str(len(message)).encode() + b" " + message


class SyslogTransport:
    """One TCP (or TLS) connection to the collector, opened on demand and reopened when it drops."""

    def __init__(
        self, config: SyslogSinkConfig, read_file: Callable[[str], str | None], hostname: str
    ) -> None:
        host, _, port = config.address.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.config = config
        self.read_file = read_file
        self.timeout = duration_seconds(config.timeout)
        self.formatter = SyslogFormatter(config, hostname, os.getpid())
        self._sock: socket.socket | None = None

    def _tls_context(self) -> ssl.SSLContext:
        tls = self.config.tls
        assert tls is not None
        cadata = self.read_file(tls.ca_file) if tls.ca_file else None
        if tls.ca_file and not cadata:
            raise SinkUnavailable(f"the CA file {tls.ca_file} is missing or empty")
        return ssl.create_default_context(cadata=cadata)

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise SinkUnavailable(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        if self.config.tls is None:
            return sock
        try:
            # The CA is read again for every connection: a rotated bundle applies without a restart.
            context = self._tls_context()
            server_name = self.config.tls.server_name or self.host
            return context.wrap_socket(sock, server_hostname=server_name)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise SinkUnavailable(f"TLS handshake with {self.host}:{self.port} failed: {exc}") from exc

    def _alive(self, sock: socket.socket) -> bool:
        # A syslog collector never talks back: anything readable is its close (EOF, close_notify, RST).
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def send(self, lines: list[bytes]) -> None:
        """Write one batch; :class:`SinkUnavailable` when the collector cannot be reached."""
        if self._sock is not None and not self._alive(self._sock):
            self.close()
        if self._sock is None:
            self._sock = self._connect()
        payload = b"".join(self.formatter.frame(line) for line in lines)
        try:
            self._sock.sendall(payload)
        except OSError as exc:
            self.close()
            raise SinkUnavailable(f"write to {self.host}:{self.port} failed: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Close the connection (TLS: with close_notify)."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(1.0)
                sock.unwrap()
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            sock.close()
