"""Key validation against a real local HTTP server that accepts one key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sentient_operator.credentials.validate import Validity, models_url, validate_key
from tests.support.net import free_port

GOOD = "sk-good-key"


class _Upstream(BaseHTTPRequestHandler):
    status_override: int | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        ok_openai = self.path == "/v1/models" and self.headers.get("Authorization") == f"Bearer {GOOD}"
        ok_anthropic = (
            self.path == "/v1/models"
            and self.headers.get("x-api-key") == GOOD
            and self.headers.get("anthropic-version")
        )
        status = self.status_override or (200 if (ok_openai or ok_anthropic) else 401)
        body = json.dumps({"data": []} if status == 200 else {"error": {"message": "bad key"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def upstream() -> Iterator[str]:
    _Upstream.status_override = None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_models_url() -> None:
    assert models_url("openai", None) == "https://api.openai.com/v1/models"
    assert models_url("anthropic", None) == "https://api.anthropic.com/v1/models"
    assert models_url("openai-compatible", "http://h:8000/v1/") == "http://h:8000/v1/models"
    with pytest.raises(ValueError):
        models_url("openai-compatible", None)


async def test_openai_and_anthropic(upstream: str) -> None:
    ok = await validate_key("openai", f"{upstream}/v1", GOOD)
    assert ok.validity is Validity.VALID and ok.ok
    bad = await validate_key("openai-compatible", f"{upstream}/v1", "sk-wrong")
    assert bad.validity is Validity.UNAUTHORIZED and bad.rejected
    assert "sk-wrong" not in bad.message
    assert (await validate_key("anthropic", upstream, GOOD)).ok
    assert (await validate_key("anthropic", upstream, "nope")).rejected


async def test_server_errors_and_unreachable(upstream: str) -> None:
    _Upstream.status_override = 503
    busy = await validate_key("openai", f"{upstream}/v1", GOOD)
    assert busy.validity is Validity.UNREACHABLE and not busy.rejected
    _Upstream.status_override = 404
    assert (await validate_key("openai", f"{upstream}/v1", GOOD)).validity is Validity.INCONCLUSIVE
    down = await validate_key("openai", f"http://127.0.0.1:{free_port()}/v1", GOOD)
    assert down.validity is Validity.UNREACHABLE
