"""A real, local Kubernetes control plane for the e2e tests.

etcd, kube-apiserver (TLS, RBAC + Node authorization, service-account issuer and signing key,
PodSecurity admission), kube-controller-manager, kube-scheduler and kwok (which plays the kubelet
of fake nodes, so scheduled pods become Running and Ready, and whose server answers the apiserver's
port-forward requests: see e2e/portforward.py), all on free loopback ports, all stopped and cleaned
up afterwards.

Two ways to use it:

- in Python: ``with LocalCluster.create() as c: ...`` (the pytest fixture in e2e/conftest.py);
- as a command::

      python -m e2e.cluster up     # starts in the background, prints `export KUBECONFIG=...`
      python -m e2e.cluster env    # prints the exports again
      python -m e2e.cluster down   # stops it and removes its files

Component logs go to ``<run dir>/logs/<component>.log``; a startup failure names the component
and shows the tail of its log.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from e2e import tools

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# kwok kinds whose objects kwok's server watches: port-forward rules (see e2e/portforward.py).
KWOK_CRDS = ("PortForward", "ClusterPortForward")
# The project's own kwok stages, on top of kwok's (which e2e/tools.py copies from its module).
KWOK_EXTRA_STAGES = Path(__file__).resolve().parent / "kwok" / "pod-ready-again.yaml"
RUN_PREFIX = "sentient-e2e-"


class ClusterError(RuntimeError):
    """The control plane could not start; the message names the component and shows its log tail."""


def default_up_dir() -> Path:
    """Where ``python -m e2e.cluster up`` keeps its cluster (override: ``E2E_RUN_DIR``)."""
    return Path(os.environ.get("E2E_RUN_DIR") or tools.cache_dir() / "run" / "cluster")


# --------------------------------------------------------------------------------------------
# PKI


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
    client: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name = issuer[0].subject if issuer else subject
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write_pki(pki: Path) -> None:
    """CA, apiserver serving cert, admin client cert (O=system:masters), service-account key.

    Also the two ends of the apiserver -> "kubelet" connection (port-forward, exec, logs): a
    serving certificate for kwok's server on 127.0.0.1 and the apiserver's kubelet client cert.
    """
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sentient-e2e-ca")]), ca_key, None, ca=True)
    first_service_ip = ipaddress.IPv4Network(SERVICE_CIDR)[1]
    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(first_service_ip)]
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        srv_key,
        (ca, ca_key),
        server=True,
        sans=sans,
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _cert(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
            ]
        ),
        admin_key,
        (ca, ca_key),
        client=True,
    )
    kubelet_key = ec.generate_private_key(ec.SECP256R1())
    kubelet = _cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kwok-kubelet")]),
        kubelet_key,
        (ca, ca_key),
        server=True,
        # The apiserver dials the node's InternalIP (kwok's --node-ip), and verifies it.
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    kubelet_client_key = ec.generate_private_key(ec.SECP256R1())
    kubelet_client = _cert(
        # The name kubeadm gives it; kwok's server does not authenticate clients, a kubelet would.
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client"),
            ]
        ),
        kubelet_client_key,
        (ca, ca_key),
        client=True,
    )
    # RSA: RS256 is what every JWT/OIDC consumer of service-account tokens accepts.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "ca.key": _pem_key(ca_key),
        "apiserver.crt": srv.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(srv_key),
        "admin.crt": admin.public_bytes(serialization.Encoding.PEM),
        "admin.key": _pem_key(admin_key),
        "kubelet.crt": kubelet.public_bytes(serialization.Encoding.PEM),
        "kubelet.key": _pem_key(kubelet_key),
        "apiserver-kubelet-client.crt": kubelet_client.public_bytes(serialization.Encoding.PEM),
        "apiserver-kubelet-client.key": _pem_key(kubelet_client_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        path = pki / name
        path.write_bytes(data)
        path.chmod(0o600)


def _kubeconfig(server: str, pki: Path) -> str:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    # Self-contained (embedded data) so the file can be copied or read by any client.
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sentient-e2e",
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")},
            }
        ],
        "contexts": [{"name": "sentient-e2e", "context": {"cluster": "sentient-e2e", "user": "admin"}}],
        "current-context": "sentient-e2e",
    }
    return json.dumps(cfg, indent=2) + "\n"  # JSON is YAML


# --------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PR_SET_PDEATHSIG = 1
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _libc = None


def _child_setup(parent: int) -> Callable[[], None]:
    def setup() -> None:
        # If the Python process that started us dies without cleaning up (SIGKILL, OOM),
        # the kernel kills us too: no orphaned apiserver holding ports and files.
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return setup


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


@dataclass
class Component:
    """One running process of the control plane."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path, env: dict[str, str]) -> None:
        """Start in its own process group, output to its log file."""
        with open(self.log, "ab") as out:
            out.write(f"$ {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup(os.getpid()),
            )

    def check_alive(self) -> None:
        """Raise ClusterError with the log tail when the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ClusterError(
                f"{self.name} exited with code {self.proc.returncode} during startup; "
                f"last lines of {self.log}:\n{_tail(self.log)}"
            )

    def terminate(self) -> None:
        """Send SIGTERM to the process group (no wait)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        proc = self.proc
        if proc is None:
            return
        self.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        # The group may hold children that outlived the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# HTTP against the apiserver (stdlib only: importing the kubernetes client costs seconds)


class _Api:
    def __init__(self, server: str, pki: Path) -> None:
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        # The URL is always our https apiserver (S310 guards against file: URLs from input).
        req = urllib.request.Request(self.server + path, data=data, method=method)  # noqa: S310
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:  # noqa: S310
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def get_json(self, path: str) -> dict[str, Any] | None:
        status, text = self.request("GET", path)
        return json.loads(text) if status == 200 else None


def _healthz(port: int) -> bool:
    # The component serves a self-signed certificate from its cert dir; /healthz needs no auth.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------------------------
# the cluster


@dataclass
class LocalCluster:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok in ``run_dir``."""

    run_dir: Path
    nodes: int = 2
    remove_run_dir: bool = True
    components: dict[str, Component] = field(default_factory=dict)
    server: str = ""
    #: The port of kwok's server on 127.0.0.1: the "kubelet" of every fake node, which the apiserver
    #: reaches for port-forward (the nodes' status.daemonEndpoints.kubeletEndpoint.Port).
    kubelet_port: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    #: etcd's client URL (health checks after a restart).
    etcd_url: str = ""
    #: Components stopped or frozen on purpose (fault tests): nobody treats their absence as a crash.
    held: set[str] = field(default_factory=set)
    _stopped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, nodes: int = 2) -> LocalCluster:
        """A cluster in a fresh temporary run directory (removed by ``stop``)."""
        _reap_stale_runs()
        run_dir = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
        return cls(run_dir=run_dir, nodes=nodes)

    # paths -------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user ``admin`` in group ``system:masters``)."""
        return self.run_dir / "kubeconfig"

    @property
    def pki(self) -> Path:
        """Certificates and keys."""
        return self.run_dir / "pki"

    @property
    def logs(self) -> Path:
        """One log file per component."""
        return self.run_dir / "logs"

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/clients: KUBECONFIG and the tool bin dir first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{tools.bin_dir()}{os.pathsep}{env.get('PATH', '')}"
        return env

    # lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        """Start every component and wait until nodes are Ready; cleans up on failure.

        A startup failure raises ClusterError naming the component, with the tail of its log;
        the logs are kept under ``$SENTIENT_CACHE/logs/cluster-failed/``.
        """
        atexit.register(self.stop)
        try:
            for attempt in range(3):
                try:
                    self._start(timeout)
                    return
                except ClusterError as exc:
                    # Free ports are picked before the components bind them; another process on
                    # this machine can take one in between. Start over on fresh ports.
                    if "address already in use" not in str(exc) or attempt == 2:
                        raise
                    self._stop_components()
                    self.components.clear()
                    shutil.rmtree(self.run_dir / "etcd", ignore_errors=True)
        except ClusterError as exc:
            kept = self._keep_logs()
            self.stop()
            raise ClusterError(str(exc).replace(str(self.logs), str(kept))) from None
        except BaseException:
            self.stop()
            raise

    def _keep_logs(self) -> Path:
        kept = tools.cache_dir() / "logs" / "cluster-failed"
        shutil.rmtree(kept, ignore_errors=True)
        kept.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copytree(self.logs, kept)
        return kept

    def _stop_components(self) -> None:
        # Clients first (they would only log errors about a vanished apiserver), then all at
        # once: the data is thrown away, so there is no order to respect beyond that.
        comps = [self.components[n] for n in reversed(list(self.components))]
        for name in list(self.held):
            self.thaw_component(name)  # a frozen process would sit on its SIGTERM
        for comp in comps:
            if comp.name not in ("kube-apiserver", "etcd"):
                comp.terminate()
        for comp in comps:
            comp.terminate()
        for comp in comps:
            comp.stop()

    def _mark(self, what: str, t0: float) -> None:
        self.timings[what] = round(time.monotonic() - t0, 2)

    def _start(self, timeout: float) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        paths = tools.ensure(["kube", "kwok", "kwok-crds", "etcd", "kubectl-helm"])
        self._mark("tools", t0)
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "owner.pid").write_text(str(os.getpid()))
        _write_pki(self.pki)
        self._mark("pki", t0)
        pki = self.pki

        etcd_port, etcd_peer, api_port, kcm_port, sched_port, kubelet_port = (free_port() for _ in range(6))
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubelet_port = kubelet_port
        self.kubeconfig.write_text(_kubeconfig(self.server, pki))
        self.kubeconfig.chmod(0o600)
        kubeconfig = str(self.kubeconfig)

        etcd_url = self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        self._launch(
            "etcd",
            [
                str(paths["etcd"]),
                "--name=e2e",
                f"--data-dir={self.run_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                "--unsafe-no-fsync",  # test data: speed over durability
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )
        self._launch(
            "kube-apiserver",
            [
                str(paths["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={self.run_dir / 'apiserver'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                "--allow-privileged=true",  # so that PodSecurity, not this flag, is what rejects privileged pods
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                # No real endpoint: a loopback address is not a valid Endpoints address.
                "--endpoint-reconciler-type=none",
                # etcd 3.5.1 (the PyPI wheel) predates the watch-progress fix (3.5.13) that watch-list
                # streams need; with WatchList on, the apiserver turns every `resourceVersion=0` +
                # bookmarks watch (kwok's informers, among others) into such a stream and fails it, and
                # the clients back off for up to 30 s. Off, those watches behave as before 1.32.
                "--feature-gates=WatchList=false",
                # Set SENTIENT_E2E_APISERVER_PROFILING=1 to read /debug/pprof (a benchmark's diagnosis).
                f"--profiling={'true' if os.environ.get('SENTIENT_E2E_APISERVER_PROFILING') == '1' else 'false'}",
                # port-forward (and exec, logs) go from the apiserver to the node's kubelet, here
                # kwok's server: dial the InternalIP (127.0.0.1; a node has no resolvable
                # hostname), verify kwok's serving certificate, present a client certificate.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            ],
        )
        # etcd comes up while the apiserver initialises; the apiserver retries its connection.
        self._wait("etcd", lambda: _http_ok(f"{etcd_url}/health"), deadline)
        self._mark("etcd", t0)
        api = _Api(self.server, pki)
        self._wait("kube-apiserver", lambda: _api_ok(api, "/readyz"), deadline)
        self._mark("kube-apiserver", t0)
        # kwok's server lists its CRDs once at startup and backs off when they are missing: create
        # them now, let them become Established while the controllers start.
        crd_names = self._create_kwok_crds(api, tools.kwok_crds_file())

        self._launch(
            "kube-controller-manager",
            [
                str(paths["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.run_dir / 'kcm'}",
                "--leader-elect=false",
                "--controllers=*",
                "--use-service-account-credentials=false",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
        )
        self._launch(
            "kube-scheduler",
            [
                str(paths["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={self.run_dir / 'scheduler'}",
                "--leader-elect=false",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
        )
        self._wait(
            "kube-apiserver",
            lambda: all(_crd_established(api, n) for n in crd_names),
            deadline,
            what="kwok CRDs Established",
        )
        self._mark("kwok-crds", t0)
        key, value = FAKE_NODE_ANNOTATION
        self._launch(
            "kwok",
            [
                str(paths["kwok"]),
                f"--kubeconfig={kubeconfig}",
                f"--config={paths['kwok'].parent / 'stages.yaml'}",
                # What a kubelet does and kwok's stages do not: re-ready a running pod that the
                # node lifecycle controller marked not ready while the node's lease had lapsed.
                f"--config={KWOK_EXTRA_STAGES}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
                # kwok's server (port-forward): --node-port goes into every node's
                # status.daemonEndpoints.kubeletEndpoint.Port, --server-address is where it listens
                # (TLS for the apiserver and plain HTTP share the port).
                f"--node-port={kubelet_port}",
                f"--server-address=127.0.0.1:{kubelet_port}",
                f"--tls-cert-file={pki / 'kubelet.crt'}",
                f"--tls-private-key-file={pki / 'kubelet.key'}",
                f"--enable-crds={','.join(KWOK_CRDS)}",
            ],
            env={
                # kwok's client-go (1.36) asks for watch-list streams, which need a newer etcd than
                # 3.5.1; it falls back after an error each time, so skip the attempt.
                "KUBE_FEATURE_WatchListClient": "false",
            },
        )
        for i in range(self.nodes):
            self._create_node(api, f"kwok-node-{i}")

        def nodes_ready() -> bool:
            data = api.get_json("/api/v1/nodes")
            ready = [
                n
                for n in (data or {}).get("items", [])
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            ]
            return len(ready) >= self.nodes

        self._wait("kwok", nodes_ready, deadline, what="fake nodes Ready")
        self._mark("nodes", t0)
        # The server starts after kwok's controllers; a port-forward before it listens would fail.
        self._wait(
            "kwok", lambda: _http_ok(f"http://127.0.0.1:{kubelet_port}/healthz"), deadline, what="kwok server"
        )
        self._wait("kube-scheduler", lambda: _healthz(sched_port), deadline)
        self._wait("kube-controller-manager", lambda: _healthz(kcm_port), deadline)
        # Pods are only admitted once the namespace's default ServiceAccount exists.
        self._wait(
            "kube-controller-manager",
            lambda: api.get_json("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            deadline,
            what="default ServiceAccount",
        )
        self._mark("ready", t0)
        self._write_state()

    # faults ------------------------------------------------------------------------------
    def stop_component(self, name: str, *, kill: bool = False) -> None:
        """Stop one component (SIGTERM, or SIGKILL with ``kill``) and leave the others running.

        It stays down, and ``python -m e2e.cluster _serve`` does not take the cluster down for it,
        until :meth:`start_component`. Call both from one long-lived thread: a component dies with
        the thread that started it.
        """
        comp = self.components[name]
        self.held.add(name)
        if kill and comp.proc is not None and comp.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(comp.proc.pid, signal.SIGKILL)
            comp.proc.wait(10)
        else:
            comp.stop()

    def start_component(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped component again with the same arguments, ports and data; wait until it serves."""
        comp = self.components[name]
        if comp.proc is not None and comp.proc.poll() is None:
            if name in self.held:  # frozen, not stopped
                self.thaw_component(name)
            return
        comp.start(self.run_dir, self.env())
        deadline = time.monotonic() + timeout
        if name == "etcd":
            self._wait(name, lambda: _http_ok(f"{self.etcd_url}/health"), deadline)
        elif name == "kube-apiserver":
            api = _Api(self.server, self.pki)
            self._wait(name, lambda: _api_ok(api, "/readyz"), deadline)
        else:
            time.sleep(0.5)
            comp.check_alive()
        self.held.discard(name)
        self._write_state()

    def freeze_component(self, name: str) -> None:
        """SIGSTOP one component: its sockets stay open but nothing answers (a hung server)."""
        comp = self.components[name]
        assert comp.proc is not None and comp.proc.poll() is None, f"{name} is not running"
        self.held.add(name)
        os.killpg(comp.proc.pid, signal.SIGSTOP)

    def thaw_component(self, name: str) -> None:
        """SIGCONT a frozen component."""
        comp = self.components[name]
        if comp.proc is not None and comp.proc.poll() is None:
            os.killpg(comp.proc.pid, signal.SIGCONT)
        self.held.discard(name)

    def _launch(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        comp = Component(name, argv, self.logs / f"{name}.log")
        self.components[name] = comp
        comp.start(self.run_dir, {**self.env(), **(env or {})})
        self._write_state()

    def _wait(self, name: str, ready: Callable[[], bool], deadline: float, what: str = "") -> None:
        comp = self.components[name]
        delay = 0.05
        while True:
            comp.check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{name}: timed out waiting for {what or 'readiness'}; last lines of {comp.log}:\n{_tail(comp.log)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _create_kwok_crds(self, api: _Api, path: Path) -> list[str]:
        """Create the CRDs of ``path`` (kwok's, from its module); returns their names."""
        names: list[str] = []
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            status, text = api.request(
                "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", doc, timeout=10
            )
            if status not in (200, 201, 409):
                raise ClusterError(
                    f"creating CRD {doc['metadata']['name']} failed: HTTP {status}: {text[:300]}"
                )
            names.append(doc["metadata"]["name"])
        return names

    def _create_node(self, api: _Api, name: str) -> None:
        key, value = FAKE_NODE_ANNOTATION
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/agent": "",
                    "type": "kwok",
                },
            },
            # No taint: the tests' pods should schedule here without tolerations.
            "spec": {},
        }
        status, text = api.request("POST", "/api/v1/nodes", body)
        if status not in (200, 201, 409):
            raise ClusterError(f"creating node {name} failed: HTTP {status}: {text[:300]}")

    def _write_state(self) -> None:
        state = {
            "owner": os.getpid(),
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "pids": {n: c.proc.pid for n, c in self.components.items() if c.proc is not None},
            "timings": self.timings,
        }
        tmp = self.run_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.run_dir / "state.json")

    def stop(self) -> None:
        """Stop every component (reverse order) and remove the run directory. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop_components()
        if self.remove_run_dir and not os.environ.get("E2E_KEEP_RUN_DIR"):
            shutil.rmtree(self.run_dir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own http://127.0.0.1 URL
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _crd_established(api: _Api, name: str) -> bool:
    crd = api.get_json(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _api_ok(api: _Api, path: str) -> bool:
    try:
        return api.request("GET", path, timeout=3)[0] == 200
    except (OSError, urllib.error.URLError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_recorded(run_dir: Path) -> None:
    """Kill component processes listed in a run dir's state, if they still run from that dir."""
    try:
        state = json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return
    for pid in state.get("pids", {}).values():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        # Only a process whose command line names this run dir is ours (pids get reused).
        if str(run_dir).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _reap_stale_runs() -> None:
    """Remove run dirs of test sessions that died without cleaning up."""
    for run_dir in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*"):
        try:
            owner = int((run_dir / "owner.pid").read_text())
        except (OSError, ValueError):
            # Being created right now, or not ours to judge: leave it unless it is old.
            try:
                if time.time() - run_dir.stat().st_mtime < 3600:
                    continue
            except OSError:
                continue
            owner = -1
        if owner > 0 and _pid_alive(owner):
            continue
        _kill_recorded(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the handle the tests use (the `cluster` fixture)


class CommandError(subprocess.CalledProcessError):
    """A kubectl/helm call failed; unlike CalledProcessError its message includes stderr."""

    def __str__(self) -> str:
        err = (self.stderr or "").strip() if isinstance(self.stderr, str) else ""
        return f"{super().__str__()}\n{err}" if err else super().__str__()


@dataclass
class Cluster:
    """A Kubernetes cluster the tests talk to.

    Attributes: ``kubeconfig`` (path, admin user), ``server`` (URL), ``env`` (environment with
    KUBECONFIG and the tool bin dir on PATH), ``local`` (the ``LocalCluster`` when the harness
    started it, None under ``E2E_KUBECONFIG``).
    """

    kubeconfig: str
    server: str
    env: dict[str, str]
    local: LocalCluster | None = None
    _config: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_kubeconfig(cls, path: str, local: LocalCluster | None = None) -> Cluster:
        """Read server and CA from the kubeconfig's current context."""
        config: dict[str, Any] = yaml.safe_load(Path(path).read_text())
        env = dict(os.environ)
        env["KUBECONFIG"] = path
        env["PATH"] = f"{tools.bin_dir()}{os.pathsep}{env.get('PATH', '')}"
        ctx_name = config.get("current-context")
        ctx: dict[str, Any] = next(
            (c["context"] for c in config.get("contexts", []) if c["name"] == ctx_name), {}
        )
        cl: dict[str, Any] = next(
            (c["cluster"] for c in config.get("clusters", []) if c["name"] == ctx.get("cluster")), {}
        )
        return cls(kubeconfig=path, server=cl.get("server", ""), env=env, local=local, _config=cl)

    @property
    def ca_pem(self) -> str:
        """The PEM of the cluster CA (for clients that take a CA, e.g. Vault's kubernetes auth)."""
        if "certificate-authority-data" in self._config:
            return base64.b64decode(self._config["certificate-authority-data"]).decode()
        if "certificate-authority" in self._config:
            return Path(self._config["certificate-authority"]).read_text()
        return ""

    def _run(
        self, tool: str, args: tuple[str, ...], check: bool, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(tools.bin_dir() / tool), *args]
        proc = subprocess.run(
            cmd, env=self.env, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise CommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; text output; raises CommandError when check fails."""
        return self._run("kubectl", args, check, input, timeout)

    def helm(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against this cluster; text output; raises CommandError when check fails."""
        return self._run("helm", args, check, input, timeout)


# --------------------------------------------------------------------------------------------
# command line: up / down / env (and the background supervisor behind `up`)


def _exports(kubeconfig: Path) -> str:
    return (
        f"export KUBECONFIG={kubeconfig}\n"
        f"export E2E_KUBECONFIG={kubeconfig}  # the e2e tests then reuse this cluster\n"
        f"export PATH={tools.bin_dir()}:$PATH\n"
    )


def _read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((run_dir / "supervisor.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def _write_atomic(path: Path, text: str) -> None:
    # `up` polls for these files; it must never read a half-written one.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _serve(run_dir: Path) -> int:
    """Run the cluster in the foreground until SIGTERM/SIGINT (the process behind `up`)."""
    cluster = LocalCluster(run_dir=run_dir, remove_run_dir=False)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        cluster.start()
    except (ClusterError, tools.ToolError) as exc:
        _write_atomic(run_dir / "failed", str(exc))
        return 1
    # Every agent pod kwok fakes gets a real runtime process, as a kubelet would give it a
    # container: `sentient chat ns/name` and `kubectl port-forward` then work for every agent.
    from kubernetes import config as k8s_config

    from e2e.pod_supervisor import PodSupervisor

    api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    supervisor = PodSupervisor(
        api, run_dir / "pods", on_event=lambda message: print(f"pods: {message}", flush=True)
    ).start()
    _write_atomic(run_dir / "ready", json.dumps(cluster.timings))
    while not stop.wait(1.0):
        for comp in cluster.components.values():
            if comp.name not in cluster.held and comp.proc is not None and comp.proc.poll() is not None:
                print(f"{comp.name} exited with code {comp.proc.returncode}; see {comp.log}", flush=True)
                stop.set()
    supervisor.stop()
    api.close()
    cluster.stop()
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def cmd_up(run_dir: Path, timeout: float) -> int:
    """Start a cluster in the background (or find the running one) and print the exports."""
    state = _read_state(run_dir)
    if state and _pid_alive(state["pid"]) and (run_dir / "ready").exists():
        print(f"# already running (supervisor pid {state['pid']})", file=sys.stderr)
        print(_exports(run_dir / "kubeconfig"), end="")
        return 0
    if state:
        _kill_recorded(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    started = time.monotonic()
    with open(run_dir / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "e2e.cluster", "_serve", "--run-dir", str(run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the shell that ran `up`
            cwd=Path(__file__).resolve().parent.parent,
        )
    (run_dir / "supervisor.json").write_text(json.dumps({"pid": proc.pid}))
    try:
        return _await_up(run_dir, proc, started, timeout)
    except KeyboardInterrupt:
        # Ctrl-C while waiting: do not leave a half-started cluster running in the background.
        cmd_down(run_dir)
        return 130


def _await_up(run_dir: Path, proc: subprocess.Popen[bytes], started: float, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "ready").exists():
            print(
                f"# control plane ready in {time.monotonic() - started:.1f} s; logs: {run_dir / 'logs'}",
                file=sys.stderr,
            )
            print(_exports(run_dir / "kubeconfig"), end="")
            return 0
        if (run_dir / "failed").exists() or proc.poll() is not None:
            proc.wait(30)
            msg = (
                (run_dir / "failed").read_text()
                if (run_dir / "failed").exists()
                else _tail(run_dir / "supervisor.log")
            )
            print(f"error: {msg}", file=sys.stderr)
            shutil.rmtree(run_dir, ignore_errors=True)
            return 1
        time.sleep(0.2)
    print(
        f"error: the control plane did not become ready within {timeout:.0f} s; logs: {run_dir / 'logs'}",
        file=sys.stderr,
    )
    cmd_down(run_dir)
    return 1


def cmd_down(run_dir: Path) -> int:
    """Stop the cluster started by ``up`` and remove its run directory."""
    state = _read_state(run_dir)
    if state is None:
        print("# no control plane running", file=sys.stderr)
        shutil.rmtree(run_dir, ignore_errors=True)
        return 0
    pid = int(state["pid"])
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    _kill_recorded(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    print("# control plane stopped", file=sys.stderr)
    return 0


def cmd_env(run_dir: Path) -> int:
    """Print the exports of the running cluster."""
    state = _read_state(run_dir)
    if not state or not _pid_alive(state["pid"]) or not (run_dir / "ready").exists():
        print("error: no control plane running; start one with `python -m e2e.cluster up`", file=sys.stderr)
        return 1
    print(_exports(run_dir / "kubeconfig"), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m e2e.cluster up|down|env``."""
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "env", "_serve"])
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="state directory (default: $E2E_RUN_DIR or cache/run/cluster)",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    run_dir: Path = (args.run_dir or default_up_dir()).resolve()
    if args.command == "up":
        return cmd_up(run_dir, args.timeout)
    if args.command == "down":
        return cmd_down(run_dir)
    if args.command == "env":
        return cmd_env(run_dir)
    return _serve(run_dir)


if __name__ == "__main__":
    sys.exit(main())
