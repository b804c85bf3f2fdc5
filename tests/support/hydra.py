"""An ORY Hydra server (OAuth2 / OpenID Connect) for tests: ``with Hydra() as hydra: hydra.token(...)``.

The ``hydra`` binary is built once from the Go module ``github.com/ory/hydra/v2`` by
``python -m e2e.tools ensure`` (wrapper module ``e2e/hydra-build``) into the tool cache. The
server keeps everything in memory (``DSN=memory``), listens on 127.0.0.1 only (public and admin
ports) and is gone when stopped. Tests that need it use the :func:`require_hydra` fixture: it
builds the binary, or waits for `make test`'s background build of it (scripts/prebuild.sh), and
skips only where it cannot be built (no Go or gcc).
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from e2e.tools import ToolError, tool_path
from tests.support.net import free_port
from tests.support.procs import TempDirServer, spawn


def hydra_binary() -> str | None:
    """Path of ``hydra`` (built on first use, or once a build already running ends); ``None``
    where it cannot be built."""
    try:
        return str(tool_path("hydra"))
    except ToolError:
        return None


@pytest.fixture(scope="module")
def require_hydra() -> str:
    """The ``hydra`` binary, for a module's tests (``pytestmark = pytest.mark.usefixtures(...)``).

    Resolved when the module's first test runs, not when tests are collected, so that a build
    running in the background meanwhile is waited for, never taken for a missing binary.
    """
    binary = hydra_binary()
    if binary is None:
        pytest.skip("hydra cannot be built here (needs Go and gcc): `python -m e2e.tools ensure hydra`")
    return binary


class Hydra(TempDirServer):
    """``hydra serve all --dev`` on two free loopback ports, in memory."""

    def __init__(self, max_lifetime: int = 1800) -> None:
        binary = hydra_binary()
        if binary is None:
            raise FileNotFoundError(
                "hydra not found: run `python -m e2e.tools ensure hydra` (needs Go and gcc)"
            )
        self.binary = binary
        self.public_port = free_port()
        self.admin_port = free_port()
        while self.admin_port == self.public_port:
            self.admin_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.public_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self._dir = Path(tempfile.mkdtemp(prefix="sentient-hydra-"))
        self.log_path = self._dir / "hydra.log"
        self._max_lifetime = max_lifetime

    def _config(self) -> dict[str, Any]:
        return {
            "dsn": "memory",
            "serve": {
                "public": {"host": "127.0.0.1", "port": self.public_port},
                "admin": {"host": "127.0.0.1", "port": self.admin_port},
            },
            "urls": {"self": {"issuer": self.issuer}},
            "secrets": {"system": [secrets.token_urlsafe(32)]},
            # Per client (access_token_strategy) tokens are JWTs or opaque; JWT by default.
            "strategies": {"access_token": "jwt"},
            "ttl": {"access_token": "1h"},
            "log": {"level": "warn"},
        }

    def start(self, timeout: float = 60.0) -> Hydra:
        """Start and wait until both ports answer ``/health/ready``."""
        config = self._dir / "hydra.yml"
        config.write_text(yaml.safe_dump(self._config()))
        proc = self._proc = spawn(
            [self.binary, "serve", "all", "--dev", "-c", str(config)],
            log_path=self.log_path,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self._dir)},
            max_lifetime=self._max_lifetime,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"hydra exited ({proc.returncode}); see {self.log_path}")
            try:
                if all(
                    httpx.get(f"{base}/health/ready", timeout=1).status_code == 200
                    for base in (self.issuer, self.admin)
                ):
                    # The first JWKS request generates the signing keys (RSA, seconds on a busy
                    # machine): do it here, not inside the first test's request.
                    httpx.get(f"{self.issuer}/.well-known/jwks.json", timeout=timeout).raise_for_status()
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"hydra did not become ready in {timeout:.0f}s; see {self.log_path}")

    def __enter__(self) -> Hydra:
        return self.start()

    # ------------------------------------------------------------------ helpers for tests

    def client(self, client_id: str, *, scope: str, audience: list[str], strategy: str = "jwt") -> str:
        """Register a client-credentials client (``strategy``: jwt or opaque tokens); returns its secret."""
        secret = secrets.token_urlsafe(24)
        response = httpx.post(
            f"{self.admin}/admin/clients",
            json={
                "client_id": client_id,
                "client_secret": secret,
                "grant_types": ["client_credentials"],
                "scope": scope,
                "audience": audience,
                "token_endpoint_auth_method": "client_secret_basic",
                "access_token_strategy": strategy,
            },
            timeout=60,
        )
        response.raise_for_status()
        return secret

    def token(self, client_id: str, secret: str, *, scope: str, audience: str) -> str:
        """An access token by the client-credentials grant (RFC 6749 4.4)."""
        response = httpx.post(
            f"{self.issuer}/oauth2/token",
            data={"grant_type": "client_credentials", "scope": scope, "audience": audience},
            auth=(client_id, secret),
            timeout=60,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def revoke(self, client_id: str, secret: str, token: str) -> None:
        """Revoke a token (RFC 7009)."""
        response = httpx.post(
            f"{self.issuer}/oauth2/revoke", data={"token": token}, auth=(client_id, secret), timeout=60
        )
        response.raise_for_status()

    def rotate_signing_key(self, kid: str) -> None:
        """Add a new access-token signing key: tokens issued from now on carry ``kid``."""
        response = httpx.post(
            f"{self.admin}/admin/keys/hydra.jwt.access-token",
            json={"alg": "RS256", "use": "sig", "kid": kid},
            timeout=60,
        )
        response.raise_for_status()

    @property
    def introspection_endpoint(self) -> str:
        """Hydra serves RFC 7662 introspection on its admin port (not in its discovery document)."""
        return f"{self.admin}/admin/oauth2/introspect"
