"""The agent runtime as a gateway of the side-by-side bench: one worker, auth on, one provider.

Started the way a pod starts it: ``python -m agent_runtime`` with a config file
and a credentials directory (provider key, hashed caller keys). No rate-limit
policy unless one is asked for (memory, or Redis at a given URL), with budgets
so large that nothing is refused: the figures are for the accept path.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from agent_runtime.config import API_KEYS_FILE, RuntimeConfig, dump_config, provider_credential_file

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL_FILE = "redis-url"


def write_files(
    workdir: Path,
    *,
    upstream_port: int,
    upstream_key: str,
    caller_key: str,
    port: int,
    rate_limit: str,
    redis_url: str | None = None,
    metrics_port: int = 0,
    workers: int = 1,
    busy_poll: str | None = None,
) -> tuple[Path, Path]:
    """Write the runtime's config and credentials under ``workdir``; returns (config file, credentials dir)."""
    creds = workdir / "credentials"
    creds.mkdir(parents=True, exist_ok=True)
    key_file = provider_credential_file("bench", "fake")
    (creds / key_file).write_text(upstream_key)
    digest = hashlib.sha256(caller_key.encode()).hexdigest()
    (creds / API_KEYS_FILE).write_text(json.dumps({"bench": {"sha256": digest, "tier": None}}))
    raw: dict[str, object] = {
        "agent": {"name": "bench", "namespace": "bench"},
        "llm": {
            "chain": [
                {
                    "id": "bench/fake",
                    "type": "openai",
                    "endpoint": f"http://127.0.0.1:{upstream_port}/v1",
                    "model": "fake-model",
                    "credentialFile": key_file,
                }
            ],
            "parameters": {"maxTokens": 64},
        },
        "auth": {"apiKeysFile": API_KEYS_FILE},
        "server": {
            "port": port,
            "metricsPort": metrics_port,
            "workers": workers,
            **({"busyPoll": busy_poll} if busy_poll is not None else {}),
        },
        "auditKeyFile": None,
    }
    if rate_limit != "none":
        backend: dict[str, object] = {"type": rate_limit}
        if rate_limit == "redis":
            if not redis_url:
                raise ValueError("a Redis rate limit needs a Redis URL")
            (creds / REDIS_URL_FILE).write_text(redis_url)
            backend["redis_url_file"] = REDIS_URL_FILE
        raw["rate_limit"] = {
            "policy": "bench/unlimited",
            "limits": {"requests_per_minute": 10**8, "tokens_per_minute": 10**10, "concurrency": 10**6},
            "backend": backend,
        }
    config_file = workdir / "config.yaml"
    config_file.write_text(dump_config(RuntimeConfig.model_validate(raw)))
    return config_file, creds


def command() -> list[str]:
    """The runtime's command line (the interpreter running the bench, the project's venv)."""
    return [sys.executable, "-m", "agent_runtime"]


def environment(base: dict[str, str], config_file: Path, creds: Path) -> dict[str, str]:
    """The runtime's environment: config and credentials paths, loopback only, default log level."""
    return {
        **base,
        "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}",
        "SENTIENT_CONFIG": str(config_file),
        "SENTIENT_CREDENTIALS_DIR": str(creds),
        "SENTIENT_HOST": "127.0.0.1",
    }
