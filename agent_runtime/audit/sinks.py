"""The SIEM sinks of one config: built, started, attached to the audit log, reconfigured on reload.

A sink keeps its spool (and so its backlog) across reloads: a changed destination or batch size
swaps only its transport; a sink removed from the config stops (its spool stays on disk); a new
one starts. The spool of a sink is ``<spoolDir>/<name>`` (``/worker-<index>`` with several
workers: each worker has its own chain and its own spool).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from agent_runtime.audit.forwarder import Forwarder, Transport
from agent_runtime.audit.http_sink import HTTPTransport
from agent_runtime.audit.log import AuditLog
from agent_runtime.audit.spool import Spool
from agent_runtime.audit.syslog_sink import SyslogTransport
from agent_runtime.config import AuditRuntimeConfig, AuditSinkConfig, duration_seconds

log = logging.getLogger("agent_runtime.audit")

ReadFile = Callable[[str], str | None]
# Overrides the config's spoolDir: a runtime outside a pod (``sentient dev``, tests) has no
# /var/lib/sentient volume.
SPOOL_DIR_ENV = "SENTIENT_AUDIT_SPOOL_DIR"
# What a stopping runtime gives its sinks to ship the last records (the rest stays in the spool).
STOP_TIMEOUT = 3.0


def build_transport(sink: AuditSinkConfig, read_file: ReadFile, hostname: str) -> Transport:
    """The transport of one sink's config."""
    if sink.syslog is not None:
        return SyslogTransport(sink.syslog, read_file, hostname)
    assert sink.http is not None
    return HTTPTransport(sink.http, read_file, hostname)


class SinkSet:
    """The forwarders attached to one audit log."""

    def __init__(self, audit: AuditLog, *, hostname: str | None = None) -> None:
        self.audit = audit
        self.hostname = hostname or socket.gethostname()
        self.forwarders: dict[str, Forwarder] = {}
        self._configs: dict[str, AuditSinkConfig] = {}
        self.config: AuditRuntimeConfig | None = None

    def _spool_dir(self, config: AuditRuntimeConfig, name: str) -> Path:
        path = Path(os.environ.get(SPOOL_DIR_ENV) or config.spool_dir) / name
        return path / f"worker-{self.audit.worker}" if self.audit.worker is not None else path

    def apply(self, config: AuditRuntimeConfig | None, read_file: ReadFile, *, force: bool = False) -> None:
        """Make the sinks those of ``config`` (``force``: new transports even when unchanged, e.g. a
        rotated token or CA). Blocking (it joins removed sinks' threads): call it off the event loop."""
        if config == self.config and not force:
            return
        wanted = {sink.name: sink for sink in (config.sinks if config is not None else [])}
        removed = [f for name, f in self.forwarders.items() if name not in wanted]
        started: list[Forwarder] = []
        for name, sink in wanted.items():
            forwarder = self.forwarders.get(name)
            if forwarder is None:
                assert config is not None
                try:
                    spool = Spool(
                        self._spool_dir(config, name),
                        sink.max_buffer_bytes,
                        fsync_interval=duration_seconds(config.fsync_interval),
                    )
                except OSError as exc:
                    # A sink never stops the runtime: the records still reach the local output.
                    log.error("audit sink %s disabled: cannot open its spool: %s", name, exc)
                    continue
                forwarder = Forwarder(
                    name,
                    spool,
                    build_transport(sink, read_file, self.hostname),
                    batch_records=sink.batch_size,
                )
                self.forwarders[name] = forwarder
                started.append(forwarder)
            elif force or self._configs.get(name) != sink:
                forwarder.spool.max_bytes = sink.max_buffer_bytes
                forwarder.replace_transport(build_transport(sink, read_file, self.hostname), sink.batch_size)
            if config is not None:
                forwarder.spool.fsync_interval = duration_seconds(config.fsync_interval)
            self._configs[name] = sink
        for forwarder in removed:
            del self.forwarders[forwarder.name]
            self._configs.pop(forwarder.name, None)
        # Attached before they start: the first record after this call reaches every new sink.
        self.audit.set_sinks(tuple(self.forwarders.values()))
        self.config = config
        for forwarder in started:
            forwarder.start()
            log.info(
                "audit sink %s started", forwarder.name, extra={"pending": forwarder.spool.pending_records}
            )
        for forwarder in removed:
            forwarder.stop(0.0)
            log.info("audit sink %s removed (its spool stays on disk)", forwarder.name)

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Detach the sinks and give them ``timeout`` s to ship what is buffered (blocking)."""
        forwarders = list(self.forwarders.values())
        self.audit.set_sinks(())
        self.forwarders.clear()
        self._configs.clear()
        self.config = None
        for forwarder in forwarders:
            forwarder.request_stop(timeout)
        for forwarder in forwarders:
            forwarder.join()
            if not forwarder.flushed():
                log.warning(
                    "audit sink %s: %d record(s) left in the spool at stop; shipped at the next start",
                    forwarder.name,
                    forwarder.spool.pending_records,
                )
