"""A real rsyslogd (Debian's ``rsyslog``, TLS through ``rsyslog-gnutls``) for the audit sink's tests.

It runs in the foreground with a private config: imtcp on 127.0.0.1 (octet-counted RFC 5424
frames), optionally a second imtcp listener with the gtls driver (RFC 5425) using a certificate
the test made, and every message's MSG written as one line to ``messages.log`` (the raw frames to
``raw.log``). ``stop()`` and ``start()`` keep the ports, so a test can take the collector away and
bring it back.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.net import free_port, wait_for_port
from tests.support.procs import spawn, stop

CONFIG = """\
global(workDirectory="{work}" maxMessageSize="256k"{tls_globals})
module(load="imtcp" maxSessions="200")
template(name="msgonly" type="string" string="%msg%\\n")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="audit") {{
  action(type="omfile" file="{messages}" template="msgonly")
  action(type="omfile" file="{raw}" template="raw")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="audit")
{tls_input}"""
TLS_GLOBALS = """
  defaultNetstreamDriverCAFile="{cert}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}\""""
TLS_INPUT = (
    'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="audit" '
    'streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")\n'
)


def rsyslogd_binary() -> str:
    """rsyslogd, or skip with how to get it."""
    path = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if path is None:
        pytest.skip("rsyslogd not found: install the Debian package `rsyslog` (scripts/setup.sh does)")
    return path


def gtls_available() -> bool:
    """The gtls network stream driver (Debian's ``rsyslog-gnutls``) is installed."""
    return any(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"))


class Rsyslog:
    """One rsyslogd with its own directory, ports and output files."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: (certificate, key) for a TLS listener on :attr:`tls_port` too."""
        self.binary = rsyslogd_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="sentient-rsyslog-"))
        self.port = free_port()
        self.tls_port = free_port() if tls is not None else None
        self.messages = self.dir / "messages.log"
        self.raw = self.dir / "raw.log"
        (self.dir / "work").mkdir()
        tls_globals = TLS_GLOBALS.format(cert=tls[0], key=tls[1]) if tls is not None else ""
        tls_input = TLS_INPUT.format(port=self.tls_port) if tls is not None else ""
        (self.dir / "rsyslog.conf").write_text(
            CONFIG.format(
                work=self.dir / "work",
                messages=self.messages,
                raw=self.raw,
                port=self.port,
                tls_globals=tls_globals,
                tls_input=tls_input,
            )
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port of the plain TCP listener."""
        return f"127.0.0.1:{self.port}"

    @property
    def tls_address(self) -> str:
        """host:port of the TLS listener."""
        assert self.tls_port is not None
        return f"127.0.0.1:{self.tls_port}"

    def start(self) -> Rsyslog:
        """Run rsyslogd in the foreground; wait until its listeners accept."""
        argv = [self.binary, "-n", "-f", str(self.dir / "rsyslog.conf"), "-i", str(self.dir / "rsyslogd.pid")]
        self._proc = spawn(argv, log_path=self.dir / "rsyslogd.out", max_lifetime=900)
        for port in (self.port, self.tls_port):
            if port is not None:
                wait_for_port(port, timeout=20)
        return self

    def stop(self) -> None:
        """SIGTERM (rsyslogd closes its sessions and flushes its files)."""
        if self._proc is not None:
            stop(self._proc)
            self._proc = None

    def lines(self) -> list[str]:
        """The MSG parts received so far, one per message."""
        try:
            return [line for line in self.messages.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def cleanup(self) -> None:
        """Stop and remove the directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
