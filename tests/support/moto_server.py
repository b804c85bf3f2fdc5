"""moto in server mode (AWS Secrets Manager and IAM) as a child process, reached through ``endpoint_url``.

With ``enforce_iam=True`` the server checks signatures and IAM policies, like AWS does:
the first few (unauthenticated) calls create an admin user, and every later call must be
signed by a known access key whose policies allow it. That makes "permission denied" a real
answer of the server, not a canned one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.support.net import free_port
from tests.support.procs import spawn, stop

REGION = "eu-west-1"
_BOOTSTRAP_CALLS = 4  # create_user, put_user_policy, create_access_key, + one spare


class MotoServer:
    """``with MotoServer() as aws: aws.client("secretsmanager")``."""

    def __init__(self, *, enforce_iam: bool = False, max_lifetime: int = 1800) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.enforce_iam = enforce_iam
        self._dir = Path(tempfile.mkdtemp(prefix="sentient-moto-"))
        self.log_path = self._dir / "moto.log"
        self._max_lifetime = max_lifetime
        self._proc: Any = None
        # Keys used by the tests' own client; with IAM off any keys are accepted.
        self.admin_keys: tuple[str, str] = ("testing", "testing")

    def start(self, timeout: float = 60.0) -> MotoServer:
        """Start and wait until it answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        if self.enforce_iam:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_BOOTSTRAP_CALLS)
        self._proc = spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            log_path=self.log_path,
            env=env,
            max_lifetime=self._max_lifetime,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto exited ({self._proc.returncode}); see {self.log_path}")
            try:
                requests.get(f"{self.url}/moto-api/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            raise TimeoutError(f"moto did not start in {timeout:.0f}s; see {self.log_path}")
        if self.enforce_iam:
            iam = self.client("iam")
            iam.create_user(UserName="admin")
            iam.put_user_policy(
                UserName="admin",
                PolicyName="all",
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                    }
                ),
            )
            key = iam.create_access_key(UserName="admin")["AccessKey"]
            self.admin_keys = (key["AccessKeyId"], key["SecretAccessKey"])
        return self

    def stop(self) -> None:
        """Stop the server."""
        if self._proc is not None:
            stop(self._proc)
            self._proc = None
        for p in self._dir.iterdir():
            p.unlink()
        self._dir.rmdir()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str, keys: tuple[str, str] | None = None) -> Any:
        """A boto3 client for ``service`` against this server."""
        key_id, secret = keys or self.admin_keys
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    def user_with_policy(self, name: str, statements: list[dict[str, Any]]) -> tuple[str, str]:
        """An IAM user with an inline policy; returns its access key pair."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name,
            PolicyName="p",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]
