"""The common part of the fake upstreams: state, faults, answers, admin API, server runner.

A fake upstream is a real HTTP server (Starlette on uvicorn) that speaks one
wire format (see ``fake_openai`` / ``fake_anthropic``). Its behaviour is set
through a :class:`FakeState` (in-process) or the admin API (other processes):

- ``GET  /_admin/state``    counters and settings, as JSON;
- ``POST /_admin/config``   ``{"api_key", "latency", "first_token_latency", "tokens", "drop_reused"}``
  (any subset; ``"api_key": null`` accepts any caller);
- ``POST /_admin/faults``   ``{"faults": [Fault, ...]}`` appended to the queue;
- ``DELETE /_admin/faults`` clears the queue;
- ``POST /_admin/reset``    clears counters and faults.

Both wire formats also serve ``POST /v1/moderations`` (``fake_moderation``), the endpoint of the
guardrails' moderation check.

Why one module of this size: state, faults and the admin API are one fake server's
behaviour, shared by both wire formats; split, each part would reach into the others' state.

Answers are deterministic: ``"Echo: <last user message>"`` split into words
(or cycled to ``tokens`` words), one word per streamed chunk. A request that
ends with the runtime's continuation prompt after a partial assistant turn
gets the rest of the answer the partial was cut from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from agent_runtime.llm.types import CONTINUATION_PROMPT
from agent_runtime.testing.fake_anthropic import AnthropicWire
from agent_runtime.testing.fake_moderation import moderation_answer
from agent_runtime.testing.fake_openai import OpenAIWire
from agent_runtime.testing.wire import WireFormat

FaultKind = Literal["status", "reset", "hang"]

_WORDS = re.compile(r"\S+\s*")


class InjectedReset(Exception):
    """Raised inside a streaming body to make the server drop the connection mid-stream."""


class _DropInjectedResets(logging.Filter):
    """Keeps uvicorn from logging a traceback for a reset we injected on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, InjectedReset):
                return False
            group = getattr(exc, "exceptions", None)
            exc = group[0] if group else exc.__cause__ or exc.__context__
        return True


logging.getLogger("uvicorn.error").addFilter(_DropInjectedResets())


@dataclass(slots=True)
class Fault:
    """One injected misbehaviour, applied to the next ``count`` matching requests (-1: until cleared).

    - ``status``: answer ``status`` (e.g. 429 with ``retry_after`` seconds, 500, 529) with an error body;
    - ``reset``: stream ``after_chunks`` text chunks, then drop the connection (None: send the
      response head and part of a body, then drop);
    - ``hang``: stream ``after_chunks`` chunks (None: send nothing, not even headers), then stall
      until the client goes away.
    ``model`` restricts the fault to requests for that model.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    after_chunks: int | None = None
    count: int = 1
    model: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """A fault from its admin-API JSON."""
        return cls(
            kind=data["kind"],
            status=int(data.get("status", 500)),
            retry_after=None if data.get("retry_after") is None else float(data["retry_after"]),
            after_chunks=None if data.get("after_chunks") is None else int(data["after_chunks"]),
            count=int(data.get("count", 1)),
            model=data.get("model"),
        )


@dataclass
class FakeState:
    """Settings and counters of one fake upstream; safe to change from any thread."""

    api_key: str | None = None
    latency: float = 0.0
    first_token_latency: float = 0.0
    tokens: int | None = None
    # The next requests arriving on a connection that already served one are dropped unanswered,
    # as by a server whose keep-alive timeout fires just as the client reuses the connection.
    drop_reused: int = 0
    faults: list[Fault] = field(default_factory=list)
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0
    auth_failures: int = 0
    moderations: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    keys_seen: collections.Counter[str] = field(default_factory=collections.Counter)
    bodies: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=200))
    # The W3C ``traceparent`` header of each chat request (None when it had none), in order.
    traceparents: collections.deque[str | None] = field(default_factory=lambda: collections.deque(maxlen=200))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    def inject(self, *faults: Fault) -> None:
        """Queue faults for the next requests."""
        with self.lock:
            self.faults.extend(faults)

    def clear_faults(self) -> None:
        """Drop every queued fault and release hanging requests."""
        with self.lock:
            self.faults.clear()

    def take_fault(self, model: str | None) -> Fault | None:
        """The fault that applies to a request for ``model``, consuming one use of it."""
        with self.lock:
            for i, fault in enumerate(self.faults):
                if fault.model is not None and fault.model != model:
                    continue
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        del self.faults[i]
                return fault
        return None

    def reset(self) -> None:
        """Counters and faults back to zero."""
        with self.lock:
            self.faults.clear()
            self.requests = self.streams_started = self.streams_completed = 0
            self.streams_aborted = self.auth_failures = self.moderations = 0
            self.statuses.clear()
            self.keys_seen.clear()
            self.bodies.clear()
            self.traceparents.clear()

    def to_json(self) -> dict[str, Any]:
        """Settings and counters (the API key is a fake's test value, shown on purpose)."""
        with self.lock:
            return {
                "api_key": self.api_key,
                "latency": self.latency,
                "first_token_latency": self.first_token_latency,
                "tokens": self.tokens,
                "drop_reused": self.drop_reused,
                "faults": [asdict(f) for f in self.faults],
                "requests": self.requests,
                "streams_started": self.streams_started,
                "streams_completed": self.streams_completed,
                "streams_aborted": self.streams_aborted,
                "auth_failures": self.auth_failures,
                "moderations": self.moderations,
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "keys_seen": dict(self.keys_seen),
                "traceparents": list(self.traceparents),
            }

    def configure(self, data: dict[str, Any]) -> None:
        """Apply an admin ``config`` body."""
        with self.lock:
            if "api_key" in data:
                self.api_key = data["api_key"]
            if "latency" in data:
                self.latency = float(data["latency"])
            if "first_token_latency" in data:
                self.first_token_latency = float(data["first_token_latency"])
            if "tokens" in data:
                self.tokens = None if data["tokens"] is None else int(data["tokens"])
            if "drop_reused" in data:
                self.drop_reused = int(data["drop_reused"])

    def take_drop_reused(self) -> bool:
        """Whether to drop the request that just arrived on a reused connection."""
        with self.lock:
            if self.drop_reused <= 0:
                return False
            self.drop_reused -= 1
            return True


def answer_for(messages: list[dict[str, Any]], tokens: int | None) -> list[str]:
    """The deterministic answer to a conversation, as streamed pieces (words with their spacing)."""
    texts = [(m.get("role"), _text_of(m.get("content"))) for m in messages]
    continuing = (
        len(texts) >= 3 and texts[-1] == ("user", CONTINUATION_PROMPT) and texts[-2][0] == "assistant"
    )
    history = texts[:-2] if continuing else texts
    prompt = next((t for role, t in reversed(history) if role == "user"), "")
    words = f"Echo: {prompt}".split()
    if tokens is not None and tokens > 0:
        words = [words[i % len(words)] for i in range(tokens)]
    full = " ".join(words)
    if continuing:
        partial = texts[-2][1]
        # The partial may end inside the answer's spacing; answer with what is missing.
        rest = full[len(partial) :] if full.startswith(partial) else full
        pieces: list[str] = _WORDS.findall(rest)
        if rest[:1].isspace():
            lead = rest[: len(rest) - len(rest.lstrip())]
            pieces = [lead + pieces[0], *pieces[1:]] if pieces else [lead]
        return pieces
    return [w + " " for w in words[:-1]] + words[-1:]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # Anthropic / OpenAI content blocks
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""


def count_words(messages: list[dict[str, Any]]) -> int:
    """Input "tokens" of a conversation, the fake's way (words)."""
    return sum(len(_text_of(m.get("content")).split()) for m in messages)


class _TruncatedResponse(Response):
    """A 200 head announcing a body that never fully arrives: the connection drops halfway."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id":"trunc', "more_body": True})
        raise InjectedReset


def build_app(wire: WireFormat, state: FakeState) -> Starlette:
    """The ASGI app of one fake upstream."""

    async def hang(request: Request) -> None:
        while not state.released.is_set():
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.02)

    def wrong_key(request: Request) -> bool:
        # Every upstream route checks the key, the models list too: `validateBeforeRollout`
        # relies on a wrong key being answered 401 there.
        return state.api_key is not None and wire.api_key_of(request) != state.api_key

    def unauthorized() -> Response:
        return JSONResponse(wire.error(401, "invalid api key", "authentication_error"), status_code=401)

    async def chat(request: Request) -> Response:
        raw = await request.body()
        key = wire.api_key_of(request)
        with state.lock:
            state.requests += 1
            state.traceparents.append(request.headers.get("traceparent"))
            if key is not None:
                state.keys_seen[key] += 1
        if wrong_key(request):
            with state.lock:
                state.auth_failures += 1
                state.statuses[401] += 1
            return unauthorized()
        try:
            body = json.loads(raw)
            messages = body["messages"]
            model = str(body.get("model", "fake-model"))
        except (ValueError, KeyError, TypeError):
            with state.lock:
                state.statuses[400] += 1
            return JSONResponse(wire.error(400, "invalid body", "invalid_request_error"), status_code=400)
        with state.lock:
            state.bodies.append(body)
        fault = state.take_fault(model)
        if fault is not None and fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            with state.lock:
                state.statuses[fault.status] += 1
            error_type = "rate_limit_error" if fault.status == 429 else "server_error"
            return JSONResponse(
                wire.error(fault.status, "injected fault", error_type),
                status_code=fault.status,
                headers=headers,
            )
        if fault is not None and fault.after_chunks is None:
            if fault.kind == "hang":
                await hang(request)
                return Response(status_code=599)
            return _TruncatedResponse()
        pieces = answer_for(messages, state.tokens)
        input_tokens = count_words(messages)
        if not body.get("stream"):
            if state.first_token_latency or state.latency:
                await asyncio.sleep(state.first_token_latency + state.latency * len(pieces))
            with state.lock:
                state.statuses[200] += 1
            return JSONResponse(wire.completion(model, "".join(pieces), input_tokens, len(pieces)))
        with state.lock:
            state.statuses[200] += 1
            state.streams_started += 1
        return StreamingResponse(
            _stream(wire, state, request, model, pieces, input_tokens, fault, wire.wants_usage(body)),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    async def moderations(request: Request) -> Response:
        # Counted apart from the chat statistics (``moderations``), which tests assert on.
        with state.lock:
            state.moderations += 1
        if wrong_key(request):
            return unauthorized()
        try:
            body = json.loads(await request.body())
            answer = moderation_answer(body) if isinstance(body, dict) else None
        except ValueError:
            answer = None
        if answer is None:
            return JSONResponse(wire.error(400, "invalid body", "invalid_request_error"), status_code=400)
        fault = state.take_fault(answer["model"])
        if fault is not None and fault.kind == "status":
            return JSONResponse(
                wire.error(fault.status, "injected fault", "server_error"), status_code=fault.status
            )
        if fault is not None and fault.kind == "hang":
            await hang(request)
            return Response(status_code=599)
        return JSONResponse(answer)

    async def admin_state(request: Request) -> Response:
        return JSONResponse(state.to_json())

    async def admin_config(request: Request) -> Response:
        state.configure(await request.json())
        return JSONResponse(state.to_json())

    async def admin_faults(request: Request) -> Response:
        if request.method == "DELETE":
            state.clear_faults()
        else:
            data = await request.json()
            state.inject(*(Fault.from_json(f) for f in data.get("faults", [])))
        return JSONResponse(state.to_json())

    async def admin_reset(request: Request) -> Response:
        state.reset()
        return JSONResponse(state.to_json())

    async def models(request: Request) -> Response:
        # Not counted in the request statistics: those describe the chat traffic tests assert on.
        if wrong_key(request):
            return unauthorized()
        return JSONResponse(
            {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "sentient-fake"}]}
        )

    routes = [Route(path, chat, methods=["POST"]) for path in wire.paths]
    routes += [Route(path, models, methods=["GET"]) for path in ("/v1/models", "/models")]
    routes += [Route(path, moderations, methods=["POST"]) for path in ("/v1/moderations", "/moderations")]
    routes += [
        Route("/_admin/state", admin_state, methods=["GET"]),
        Route("/_admin/config", admin_config, methods=["POST"]),
        Route("/_admin/faults", admin_faults, methods=["POST", "DELETE"]),
        Route("/_admin/reset", admin_reset, methods=["POST"]),
    ]
    return Starlette(routes=routes)


async def _stream(
    wire: WireFormat,
    state: FakeState,
    request: Request,
    model: str,
    pieces: list[str],
    input_tokens: int,
    fault: Fault | None,
    usage: bool,
) -> AsyncIterator[bytes]:
    completed = False
    try:
        for frame in wire.stream_head(model, input_tokens):
            yield frame
        if state.first_token_latency:
            await asyncio.sleep(state.first_token_latency)
        for i, piece in enumerate(pieces):
            if fault is not None and fault.after_chunks is not None and i >= fault.after_chunks:
                if fault.kind == "hang":
                    while not state.released.is_set():  # noqa: ASYNC110 - a threading.Event, set from another thread
                        await asyncio.sleep(0.02)
                    return
                raise InjectedReset
            if state.latency:
                await asyncio.sleep(state.latency)
            yield wire.stream_text(model, piece)
        for frame in wire.stream_tail(model, input_tokens, len(pieces), usage):
            yield frame
        completed = True
    finally:
        with state.lock:
            if completed:
                state.streams_completed += 1
            else:
                state.streams_aborted += 1


def _protocol_for(state: FakeState) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol, able to drop a reused connection unanswered (``drop_reused``)."""

    class Protocol(HttpToolsProtocol):
        between_requests = False

        def on_response_complete(self) -> None:
            self.between_requests = True
            super().on_response_complete()

        def data_received(self, data: bytes) -> None:
            if self.between_requests and state.take_drop_reused():
                self.transport.close()
                return
            self.between_requests = False
            super().data_received(data)

    return Protocol


def make_wire(kind: str) -> WireFormat:
    """The wire format named ``openai`` or ``anthropic``."""
    if kind == "openai":
        return OpenAIWire()
    if kind == "anthropic":
        return AnthropicWire()
    raise ValueError(f"unknown fake upstream kind {kind!r}: use openai or anthropic")


class FakeUpstream:
    """A fake upstream server; a context manager that runs it in a thread on a free 127.0.0.1 port.

    ``endpoint`` is the base URL to put in a provider's config (``http://127.0.0.1:<port>/v1``).
    """

    def __init__(
        self,
        kind: str = "openai",
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        tokens: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        keep_alive: float = 30.0,
    ) -> None:
        self.kind = kind
        # Seconds an idle keep-alive connection stays open before the server closes it.
        self.keep_alive = keep_alive
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.state = FakeState(api_key=api_key, latency=latency, tokens=tokens)
        self.app = build_app(make_wire(kind), self.state)
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http(s)://host:port``."""
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The provider endpoint (with ``/v1``)."""
        return f"{self.base_url}/v1"

    def set_api_key(self, api_key: str | None) -> None:
        """Require another key from now on (None: accept anything)."""
        self.state.configure({"api_key": api_key})

    def inject(self, *faults: Fault) -> None:
        """Queue faults."""
        self.state.inject(*faults)

    def start(self) -> FakeUpstream:
        """Serve in a background thread; returns once the port accepts connections."""
        import socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=self.keep_alive,  # type: ignore[arg-type]  # a float works (tests)
            http=_protocol_for(self.state),
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fake-{self.kind}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"fake {self.kind} upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and release hanging requests."""
        self.state.released.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def run_fake(kind: str = "openai", **kwargs: Any) -> Iterator[FakeUpstream]:
    """``with run_fake("anthropic", api_key="k") as fake: ...``."""
    fake = FakeUpstream(kind, **kwargs)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until true (for counters updated by the server thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
