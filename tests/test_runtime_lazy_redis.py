"""A runtime that uses no Redis never loads redis-py (about 20 MB of RSS and 0.1 s of start).

Checked in a fresh interpreter: the runtime's entry module and app are imported, a runtime
with a memory rate-limit policy and memory sessions starts and answers one chat completion
from a real fake upstream, then ``sys.modules`` is read. The same runtime with a Redis policy
does load it (the check sees an import).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.testing import FakeUpstream
from tests.support.runtime import RuntimeFiles, chain_entry, default_credentials, make_config

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter: start the runtime, one request, stop, report the redis modules.
SCRIPT = """
import asyncio, json, sys
from pathlib import Path

import httpx

import agent_runtime.__main__  # noqa: F401  (what `python -m agent_runtime` imports)
from agent_runtime.app import create_app


async def main() -> int:
    app = create_app(config_path=Path(sys.argv[1]), credentials_dir=Path(sys.argv[2]))
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            answer = await client.post(
                "/v1/chat/completions", json=body, headers={"x-api-key": "alice-secret-key"}
            )
            return answer.status_code
    finally:
        await app.shutdown()


status = asyncio.run(main())
print(json.dumps({"status": status, "redis": sorted(m for m in sys.modules if m.split(".")[0] == "redis")}))
"""


def _run(tmp_path: Path, rate_limit: dict[str, Any]) -> dict[str, Any]:
    with FakeUpstream("openai") as fake:
        config = make_config(chain=[chain_entry(fake)], rate_limit=rate_limit)
        files = RuntimeFiles(tmp_path, config, default_credentials({"redis-url": "redis://127.0.0.1:9/0"}))
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(files.config_path), str(files.credentials_dir.path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_a_runtime_without_redis_does_not_import_redis(tmp_path: Path) -> None:
    policy = {"policy": "default/p", "limits": {"requestsPerMinute": 100}, "backend": {"type": "memory"}}
    result = _run(tmp_path, policy)
    assert result == {"status": 200, "redis": []}


@pytest.mark.slow
def test_a_runtime_with_a_redis_policy_imports_redis(tmp_path: Path) -> None:
    # The check above would see an import: with a Redis backend configured, redis-py is there.
    policy = {
        "policy": "default/p",
        "limits": {"requestsPerMinute": 100},
        "backend": {"type": "redis", "redisUrlFile": "redis-url"},
    }
    result = _run(tmp_path, policy)
    assert "redis" in result["redis"]
