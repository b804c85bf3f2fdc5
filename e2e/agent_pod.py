"""Play the kubelet for one agent pod: mount its ConfigMap and Secret as files, run the runtime.

No container runtime exists here, so the e2e tests, the demo and the rotation tests run
``python -m agent_runtime`` as a local process fed with exactly the ConfigMap and bound Secret
the operator rendered, laid out the way the kubelet's atomic writer lays out a volume::

    <volume>/..2026_11_25_21_02_35.123456789/<key>   the files of one version
    <volume>/..data -> ..2026_11_25_21_02_35.123456789   swapped atomically (rename of a symlink)
    <volume>/<key> -> ..data/<key>                     stable names the runtime opens

A sync loop re-reads both objects (every ``interval`` seconds, like the kubelet's periodic
sync but faster) and swaps ``..data`` when their content changed, so hot reload and credential
rotation behave as in a pod.

The one deviation from a pod: all "pods" share this host's network, so the mirrored config's
``server.port`` / ``server.metricsPort`` are set to free local ports (``AgentPod.port``,
``AgentPod.metrics_port``). Everything else is byte-for-byte what the operator wrote.

Use::

    with AgentPod(api_client, "team", "helper", workdir) as pod:
        pod.wait_ready()
        httpx.post(f"{pod.url}/assist", ...)
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG_KEY = "config.yaml"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_atomic_volume(directory: Path, files: dict[str, bytes]) -> bool:
    """Write ``files`` into ``directory`` with the kubelet's atomic-writer layout.

    Returns False (and touches nothing) when the current version already has exactly these files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    data_link = directory / "..data"
    if data_link.is_symlink():
        current = directory / data_link.readlink()
        existing = {p.name: p.read_bytes() for p in current.iterdir()} if current.is_dir() else {}
        if existing == files:
            return False
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    version = directory / stamp
    version.mkdir(mode=0o755)
    for name, content in files.items():
        path = version / name
        path.write_bytes(content)
        path.chmod(0o440)  # the bound Secret's defaultMode
    old_target = data_link.readlink() if data_link.is_symlink() else None
    tmp_link = directory / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(stamp)
    tmp_link.replace(data_link)  # the atomic step: readers see the old or the new version
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)
    for entry in directory.iterdir():
        # Keys that disappeared: drop their user-visible link.
        if not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    if old_target is not None:
        shutil.rmtree(directory / old_target, ignore_errors=True)
    return True


_PR_SET_PDEATHSIG = 1


def set_parent_death_signal() -> None:
    """In a child, before exec: the kernel SIGTERMs it when the thread that started it dies.

    So a demo or supervisor killed with SIGKILL leaves no runtime or fake upstream behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class AgentPod:
    """One agent "pod": mirrored volumes plus a ``python -m agent_runtime`` process."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        agent: str,
        workdir: Path,
        *,
        interval: float = 0.5,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        die_with_parent: bool = False,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.agent = agent
        self.workdir = Path(workdir)
        self.config_dir = self.workdir / "config"
        self.credentials_dir = self.workdir / "credentials"
        self.interval = interval
        self.extra_env = dict(env or {})
        self.python = python
        # The kernel sends the parent-death signal when the *thread* that started the child ends:
        # only for callers that start and stop the pod from one long-lived thread.
        self.die_with_parent = die_with_parent
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = self.workdir / "runtime.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.syncs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log_file: Any = None

    @property
    def url(self) -> str:
        """Base URL of the runtime's API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """URL of the runtime's /metrics."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    # ------------------------------------------------------------------ volumes

    def _read(self) -> tuple[dict[str, bytes], dict[str, bytes]] | None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        core = client.CoreV1Api(self.api_client)
        try:
            cm = core.read_namespaced_config_map(f"{self.agent}-config", self.namespace)
            secret = core.read_namespaced_secret(f"{self.agent}-credentials", self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        config = {k: v.encode() for k, v in (cm.data or {}).items()}
        if CONFIG_KEY in config:
            doc = yaml.safe_load(config[CONFIG_KEY]) or {}
            server = doc.setdefault("server", {})
            server["port"] = self.port
            server["metricsPort"] = self.metrics_port
            config[CONFIG_KEY] = yaml.safe_dump(doc, sort_keys=True).encode()
        credentials = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        return config, credentials

    def sync(self) -> bool:
        """Mirror the ConfigMap and Secret once; True when either volume changed."""
        read = self._read()
        if read is None:
            return False
        config, credentials = read
        # Secret first, like a pod whose volumes update independently; the runtime copes with either order.
        changed = write_atomic_volume(self.credentials_dir, credentials)
        changed = write_atomic_volume(self.config_dir, config) or changed
        if changed:
            self.syncs += 1
        return changed

    def mirrored(self) -> bool:
        """Whether the ConfigMap has been mirrored at least once (the runtime can start)."""
        return (self.config_dir / CONFIG_KEY).exists()

    def wait_volumes(self, timeout: float = 60.0) -> None:
        """Until the ConfigMap and Secret exist and are mirrored."""
        deadline = time.monotonic() + timeout
        while not self.mirrored():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.namespace}/{self.agent}: ConfigMap/Secret not rendered in {timeout}s"
                )
            self.sync()
            time.sleep(0.2)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.sync()

    # ------------------------------------------------------------------ process

    def start(self) -> AgentPod:
        """Mirror the volumes, start the runtime and the sync loop."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.wait_volumes()
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}",
                "SENTIENT_CONFIG": str(self.config_dir / CONFIG_KEY),
                "SENTIENT_CREDENTIALS_DIR": str(self.credentials_dir),
                "SENTIENT_HOST": "127.0.0.1",
                # The pod's audit-spool volume.
                "SENTIENT_AUDIT_SPOOL_DIR": str(self.workdir / "audit-spool"),
            }
        )
        env.update(self.extra_env)
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [self.python, "-m", "agent_runtime"],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=str(self.workdir),
            preexec_fn=set_parent_death_signal if self.die_with_parent else None,
        )
        self._stop.clear()
        self._thread = threading.Thread(target=self._sync_loop, name=f"kubelet-{self.agent}", daemon=True)
        self._thread.start()
        return self

    def _get(self, url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local http only
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0

    def ready(self) -> bool:
        """Whether the runtime's /ready answers 200 (the readiness probe)."""
        return self._get(f"{self.url}/ready") == 200

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the readiness probe passes; raises with the log tail when the process died."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"agent runtime exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent runtime not ready in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the runtime's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``; stops the sync loop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        code: int | None = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        elif self.process is not None:
            code = self.process.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def __enter__(self) -> AgentPod:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
