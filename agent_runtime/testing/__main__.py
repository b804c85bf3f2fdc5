"""``python -m agent_runtime.testing --kind openai|anthropic --port N --api-key K``: serve a fake upstream."""

from __future__ import annotations

import argparse

import uvicorn

from agent_runtime.testing.control import FakeState, build_app, make_wire


def main(argv: list[str] | None = None) -> None:
    """Run one fake upstream in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m agent_runtime.testing", description=__doc__)
    parser.add_argument("--kind", choices=["openai", "anthropic"], default="openai")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None, help="required API key (default: accept any)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per streamed token")
    parser.add_argument(
        "--first-token-latency", type=float, default=0.0, help="seconds before the first token"
    )
    parser.add_argument("--tokens", type=int, default=None, help="answer length in tokens (default: echo)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    state = FakeState(
        api_key=args.api_key,
        latency=args.latency,
        first_token_latency=args.first_token_latency,
        tokens=args.tokens,
    )
    app = build_app(make_wire(args.kind), state)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
