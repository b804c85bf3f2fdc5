"""A small Azure Key Vault (secrets) server over TLS, with the Entra ID token endpoint it needs.

lowkey-vault's application jar is not published on Maven Central (only its client and
testcontainers modules are), so the tests use this server. It speaks the parts of the REST API
that ``azure-keyvault-secrets`` and ``azure-identity`` use:

- ``GET/PUT /secrets/{name}[/{version}]`` with the bearer challenge: an unauthenticated request
  gets 401 and ``WWW-Authenticate: Bearer authorization="https://HOST/TENANT", resource="https://HOST"``;
- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token``
  (client credentials with a client secret or a client assertion), so ``ClientSecretCredential``
  and ``WorkloadIdentityCredential`` work with ``authority=https://HOST``.

Test controls (plain methods, not HTTP): :meth:`set_secret`, :meth:`add_client`,
:meth:`deny`, and :attr:`fault` (``None``, ``"throttle"`` or ``"reset"``).
"""

from __future__ import annotations

import json
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.support.tls import make_self_signed

API_PREFIX = "/secrets/"


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secrets: dict[str, list[tuple[str, str]]] = {}  # name -> [(version, value)], newest last
        self.clients: dict[str, str | None] = {}  # client_id -> client secret (None: assertion allowed)
        self.tokens: dict[str, str] = {}  # access token -> client_id
        self.denied: set[str] = set()  # client ids without access to secrets
        self.fault: str | None = None
        self.requests = 0
        self.token_requests = 0


class AzureKeyVaultServer:
    """Run with ``with AzureKeyVaultServer() as kv:``; ``kv.url`` is the vault URL, ``kv.ca_file`` its CA."""

    def __init__(self, tenant_id: str = "test-tenant") -> None:
        self.tenant_id = tenant_id
        self.state = _State()
        self._dir = Path(tempfile.mkdtemp(prefix="sentient-akv-"))
        cert, key = make_self_signed(self._dir)
        self.ca_file = str(cert)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = int(server.server_address[1])
        self.url = f"https://127.0.0.1:{self.port}"
        # The SDK accepts a challenge only when the vault host is a subdomain of the resource's
        # host (x.vault.azure.net vs vault.azure.net). With an IP address as host, "0.0.1:PORT" is
        # the suffix that passes that check, so verify_challenge_resource stays on as in production.
        self.resource = f"https://0.0.1:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, name="akv-server", daemon=True)

    # --------------------------------------------------------------- lifecycle

    def start(self) -> AzureKeyVaultServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the TLS material."""
        self._server.shutdown()
        self._server.server_close()
        for p in self._dir.iterdir():
            p.unlink()
        self._dir.rmdir()

    def __enter__(self) -> AzureKeyVaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- controls

    @property
    def authority(self) -> str:
        """What to pass as azure-identity's ``authority``."""
        return self.url

    def add_client(self, client_id: str, client_secret: str | None) -> None:
        """Register an app; ``client_secret=None`` accepts any client assertion (workload identity)."""
        with self.state.lock:
            self.state.clients[client_id] = client_secret

    def deny(self, client_id: str, denied: bool = True) -> None:
        """Take away (or give back) a client's access to secrets: reads answer 403."""
        with self.state.lock:
            (self.state.denied.add if denied else self.state.denied.discard)(client_id)

    def set_secret(self, name: str, value: str) -> str:
        """Add a new version of a secret; returns the version id."""
        version = uuid.uuid4().hex
        with self.state.lock:
            self.state.secrets.setdefault(name, []).append((version, value))
        return version

    def delete_secret(self, name: str) -> None:
        """Remove a secret with all its versions."""
        with self.state.lock:
            self.state.secrets.pop(name, None)

    @property
    def fault(self) -> str | None:
        """``None`` (serve), ``"throttle"`` (429 + Retry-After) or ``"reset"`` (drop connections)."""
        return self.state.fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        self.state.fault = value


def _make_handler(kv: AzureKeyVaultServer) -> type[BaseHTTPRequestHandler]:
    state = kv.state

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _fault(self) -> bool:
            if state.fault == "reset":
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return True
            if state.fault == "throttle":
                self._send(
                    429,
                    {
                        "error": {
                            "code": "Throttled",
                            "message": "Request was not processed because too many requests were received.",
                        }
                    },
                    {"Retry-After": "1"},
                )
                return True
            return False

        # ---------------------------------------------------------- identity

        def do_GET(self) -> None:
            state.requests += 1
            if self._fault():
                return
            path = urlparse(self.path).path
            if path.endswith("/v2.0/.well-known/openid-configuration"):
                tenant = path.split("/")[1]
                base = f"{kv.url}/{tenant}"
                self._send(
                    200,
                    {
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                        "issuer": f"{base}/v2.0",
                        "jwks_uri": f"{base}/discovery/v2.0/keys",
                        "response_types_supported": ["code", "id_token", "token"],
                        "subject_types_supported": ["pairwise"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "tenant_region_scope": None,
                    },
                )
                return
            self._secrets("GET", path)

        def do_PUT(self) -> None:
            state.requests += 1
            if self._fault():
                return
            self._secrets("PUT", urlparse(self.path).path)

        def do_POST(self) -> None:
            state.requests += 1
            if self._fault():
                return
            path = urlparse(self.path).path
            if not path.endswith("/oauth2/v2.0/token"):
                self._send(404, {"error": "not_found"})
                return
            state.token_requests += 1
            form = {k: v[0] for k, v in parse_qs(self._body().decode()).items()}
            client_id = form.get("client_id", "")
            with state.lock:
                known = client_id in state.clients
                expected = state.clients.get(client_id)
            ok = known and (
                (expected is not None and secrets.compare_digest(form.get("client_secret", ""), expected))
                or (expected is None and bool(form.get("client_assertion")))
            )
            if form.get("grant_type") != "client_credentials" or not ok:
                self._send(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                        "error_codes": [7000215],
                    },
                )
                return
            token = secrets.token_urlsafe(24)
            with state.lock:
                state.tokens[token] = client_id
            self._send(
                200,
                {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": token},
            )

        # ---------------------------------------------------------- secrets

        def _challenge(self) -> None:
            self._send(
                401,
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer token.",
                    }
                },
                {
                    "WWW-Authenticate": (
                        f'Bearer authorization="{kv.url}/{kv.tenant_id}", resource="{kv.resource}"'
                    )
                },
            )

        def _secrets(self, method: str, path: str) -> None:
            body = self._body()
            if not path.startswith(API_PREFIX):
                self._send(404, {"error": {"code": "NotFound", "message": "no such route"}})
                return
            auth = self.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else ""
            with state.lock:
                client_id = state.tokens.get(token)
            if client_id is None:
                self._challenge()
                return
            if client_id in state.denied:
                self._send(
                    403,
                    {
                        "error": {
                            "code": "Forbidden",
                            "message": "The user, group or application does not have secrets get permission.",
                        }
                    },
                )
                return
            parts = [p for p in path[len(API_PREFIX) :].split("/") if p]
            if not parts:
                self._send(400, {"error": {"code": "BadParameter", "message": "missing secret name"}})
                return
            name = parts[0]
            if method == "PUT":
                value = json.loads(body or b"{}").get("value", "")
                new_version = kv.set_secret(name, value)
                self._send(200, self._bundle(name, new_version, value))
                return
            version = parts[1] if len(parts) > 1 else None
            with state.lock:
                versions = list(state.secrets.get(name, []))
            match = (
                versions[-1]
                if versions and version is None
                else next((v for v in versions if v[0] == version), None)
            )
            if match is None:
                self._send(
                    404,
                    {
                        "error": {
                            "code": "SecretNotFound",
                            "message": f"A secret with (name/id) {name} was not found in this key vault.",
                        }
                    },
                )
                return
            self._send(200, self._bundle(name, match[0], match[1]))

        def _bundle(self, name: str, version: str, value: str) -> dict[str, Any]:
            now = int(time.time())
            return {
                "value": value,
                "id": f"{kv.url}/secrets/{name}/{version}",
                "attributes": {
                    "enabled": True,
                    "created": now,
                    "updated": now,
                    "recoveryLevel": "Recoverable+Purgeable",
                },
            }

    return Handler
