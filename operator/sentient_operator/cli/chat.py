"""``sentient chat``: talk to an agent by URL or by ``namespace/name`` (through a port-forward).

The conversation is kept on the client like Sentient Chat does: one
``activity_id`` for the whole session (so a runtime with a session store
keeps history too) and the previous exchanges sent as ``interactions``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import click
import httpx

from agent_runtime import protocol
from agent_runtime.client import SentientClientError, SyncSentientClient
from agent_runtime.protocol import (
    AnyEvent,
    DocumentEvent,
    DoneEvent,
    ErrorEvent,
    TextBlockEvent,
    TextChunkEvent,
)
from sentient_operator.cli.errors import CliError

HELP = """\
/new      start a new session (forget the conversation)
/session  show the session ids
/exit     leave (or Ctrl-D)
Ctrl-C    stop the current answer"""


@dataclass(frozen=True)
class Target:
    """Where the agent is: a URL, or a Service reached through a port-forward."""

    url: str | None = None
    namespace: str | None = None
    name: str | None = None


def parse_target(target: str, namespace: str | None = None) -> Target:
    """``http(s)://…`` is a URL; ``ns/name`` or ``name`` (with ``namespace``) is a SentientAgent."""
    if target.startswith(("http://", "https://")):
        return Target(url=target.rstrip("/"))
    if "://" in target:
        raise CliError(f"unsupported URL scheme in {target!r}: use http:// or https://", exit_code=2)
    ns, sep, name = target.partition("/")
    if sep and (not ns or not name or "/" in name):
        raise CliError(f"TARGET {target!r} must be a URL, NAMESPACE/NAME or NAME", exit_code=2)
    if not sep:
        ns, name = namespace or "default", target
    elif namespace and namespace != ns:
        raise CliError(f"TARGET says namespace {ns} but --namespace says {namespace}", exit_code=2)
    return Target(namespace=ns, name=name)


@dataclass
class ChatSession:
    """The conversation state carried across turns."""

    activity_id: str = field(default_factory=protocol.new_ulid)
    processor_id: str | None = None
    interactions: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """The ``session`` object of the next ``/assist`` request."""
        session: dict[str, Any] = {
            "activity_id": self.activity_id,
            "request_id": protocol.new_ulid(),
            "interactions": self.interactions,
        }
        if self.processor_id:
            session["processor_id"] = self.processor_id
        return session

    def record(self, prompt: str, events: Iterable[AnyEvent]) -> None:
        """Remember one exchange in the Sentient Chat interaction shape (text coalesced per stream)."""
        streams: dict[str, tuple[str, list[str]]] = {}
        responses: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, TextChunkEvent):
                name, parts = streams.setdefault(event.stream_id, (event.event_name, []))
                parts.append(event.content)
            elif isinstance(event, TextBlockEvent):
                responses.append(
                    {
                        "event": {
                            "content_type": protocol.TEXTBLOCK,
                            "event_name": event.event_name,
                            "content": event.content,
                        }
                    }
                )
            elif isinstance(event, DocumentEvent):
                responses.append(
                    {
                        "event": {
                            "content_type": protocol.JSON,
                            "event_name": event.event_name,
                            "content": event.content,
                        }
                    }
                )
            if self.processor_id is None and event.source:
                self.processor_id = event.source
        for name, parts in streams.values():
            responses.append(
                {
                    "event": {
                        "content_type": protocol.TEXT_STREAM,
                        "event_name": name,
                        "content": "".join(parts),
                    }
                }
            )
        self.interactions.append(
            {
                "request": {"event": {"content": {"request_payload": {"parts": [{"prompt": prompt}]}}}},
                "responses": responses,
            }
        )

    def reset(self) -> None:
        """Forget the conversation and start a new activity."""
        self.activity_id = protocol.new_ulid()
        self.interactions = []


class Renderer:
    """Writes events as they arrive: stream text live, JSON indented, errors in red.

    Chunks of several interleaved streams are kept apart: switching stream
    starts a new line labelled with the stream's event name.
    """

    def __init__(self, out: TextIO | None = None, *, color: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.color = color
        self._current: str | None = None
        self._at_line_start = True

    def _write(self, text: str, **style: Any) -> None:
        if not text:
            return
        click.echo(click.style(text, **style) if style else text, file=self.out, nl=False, color=self.color)
        self._at_line_start = text.endswith("\n")
        self.out.flush()

    def _newline(self) -> None:
        if not self._at_line_start:
            self._write("\n")

    def _label(self, name: str) -> None:
        self._write(f"{name}> ", fg="cyan", dim=True)

    def event(self, event: AnyEvent) -> None:
        """Render one event."""
        if isinstance(event, TextChunkEvent):
            if event.stream_id != self._current:
                self._newline()
                self._current = event.stream_id
                self._label(event.event_name)
            meta = event.metadata or {}
            if meta.get("failover"):
                # Provider ids only when the agent reveals them (spec.llm.revealProvider).
                route = (
                    f" {meta['from_provider']} → {meta['to_provider']}"
                    if "from_provider" in meta and "to_provider" in meta
                    else ""
                )
                self._write(f"[failover{route}: {meta.get('reason', '?')}] ", fg="yellow")
            self._write(event.content)
            if event.is_complete:
                self._newline()
                self._current = None
            return
        self._newline()
        self._current = None
        if isinstance(event, TextBlockEvent):
            self._label(event.event_name)
            self._write(event.content + "\n")
        elif isinstance(event, DocumentEvent):
            self._label(event.event_name)
            self._write(json.dumps(event.content, indent=2, ensure_ascii=False) + "\n", fg="green")
        elif isinstance(event, ErrorEvent):
            detail = f" {json.dumps(event.details, ensure_ascii=False)}" if event.details else ""
            self._write(f"error {event.error_code}: {event.error_message}{detail}\n", fg="red", bold=True)
        elif isinstance(event, DoneEvent):
            pass

    def interrupted(self) -> None:
        """The user stopped the answer."""
        self._newline()
        self._write("[stopped]\n", fg="yellow")
        self._current = None


def run_turn(
    client: SyncSentientClient,
    session: ChatSession,
    prompt: str,
    renderer: Renderer | None,
    *,
    json_lines: TextIO | None = None,
) -> bool:
    """Send one prompt, render its events, remember the exchange; True when no error event came."""
    events: list[AnyEvent] = []
    ok = True
    try:
        for event in client.assist(prompt, session=session.body()):
            events.append(event)
            if isinstance(event, ErrorEvent):
                ok = False
            if json_lines is not None:
                json_lines.write(json.dumps(_event_dict(event), ensure_ascii=False) + "\n")
                json_lines.flush()
            if renderer is not None:
                renderer.event(event)
    except KeyboardInterrupt:
        if renderer is not None:
            renderer.interrupted()
        ok = False
    except httpx.TimeoutException as exc:
        raise CliError(f"the agent did not answer in time ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the agent: {exc}") from exc
    except SentientClientError as exc:
        raise CliError(f"the agent's answer is not a Sentient event stream: {exc}") from exc
    if not events:
        raise CliError("the agent answered with no events (is this a sentient agent's URL?)")
    session.record(prompt, events)
    return ok


def _event_dict(event: AnyEvent) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(event).items() if v is not None}


def repl(client: SyncSentientClient, session: ChatSession, renderer: Renderer, banner: str) -> None:
    """The interactive loop: a prompt per turn, slash commands, Ctrl-D to leave."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - not on every platform
        pass
    click.secho(banner, dim=True, err=True)
    click.secho("type /help for commands", dim=True, err=True)
    while True:
        try:
            # Piped input (scripts, tests) gets no prompt: stdout stays the answers only.
            line = input(click.style("you> ", fg="blue", bold=True) if sys.stdin.isatty() else "")
        except EOFError:
            click.echo(err=True)
            return
        except KeyboardInterrupt:
            click.echo(err=True)
            continue
        prompt = line.strip()
        if not prompt:
            continue
        if prompt in ("/exit", "/quit"):
            return
        if prompt == "/help":
            click.echo(HELP, err=True)
            continue
        if prompt == "/new":
            session.reset()
            click.secho(f"new session {session.activity_id}", dim=True, err=True)
            continue
        if prompt == "/session":
            click.echo(
                f"activity_id={session.activity_id} processor_id={session.processor_id or '-'} "
                f"turns={len(session.interactions)}",
                err=True,
            )
            continue
        try:
            run_turn(client, session, prompt, renderer)
        except CliError as exc:
            # One failed turn should not end the conversation.
            click.secho(f"error: {exc}", fg="red", err=True)
