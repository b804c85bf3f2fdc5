"""Custom agents for runtime tests, loaded by ``agent_class`` like a user's agent would be.

The prompt selects the behaviour, so one agent class serves many tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from agent_runtime.sdk import AbstractAgent, AgentError, Query, ResponseHandler, Session

# Set by tests to release agents that wait (``wait:`` prompts); a threading.Event
# because tests run in another thread than the server.
RELEASE = threading.Event()
STARTED = threading.Event()


class ScriptedAgent(AbstractAgent):
    """Behaviour by prompt prefix:

    - ``echo:<text>``: one text stream with the words of ``text``
    - ``block:<text>``: a text block then a JSON event, completed explicitly with ``respond``
    - ``interleave``: two streams written by two concurrent tasks
    - ``raise``: a RuntimeError after one chunk
    - ``agent-error``: an AgentError with code 418 before any event
    - ``silent:<seconds>``: no event for that long, then one chunk
    - ``wait``: one chunk, then wait for ``RELEASE`` (or forever), then one more chunk
    - ``history``: a JSON event with the session's turns
    - ``config``: a JSON event with two config fields read at different times
    - ``swallow:<text>``: one text stream with ``text``, ignoring any AgentError its chunks raise
    """

    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler) -> None:
        """Act out the prompt."""
        prompt = query.prompt
        if prompt.startswith("echo:"):
            stream = response_handler.create_text_stream("response")
            for word in prompt[5:].split():
                await stream.emit_chunk(word + " ")
            await stream.complete()
            await session.remember(prompt, prompt[5:])
        elif prompt.startswith("block:"):
            await response_handler.emit_text_block("status", "thinking")
            await response_handler.respond("answer", {"text": prompt[6:], "n": 1})
        elif prompt == "interleave":
            first = response_handler.create_text_stream("first")
            second = response_handler.create_text_stream("second")

            async def write(stream_name: str, words: list[str]) -> None:
                stream = first if stream_name == "first" else second
                for word in words:
                    await stream.emit_chunk(word)
                    await asyncio.sleep(0)
                await stream.complete()

            await asyncio.gather(write("first", list("abcde")), write("second", list("vwxyz")))
        elif prompt == "raise":
            stream = response_handler.create_text_stream("response")
            await stream.emit_chunk("partial")
            raise RuntimeError("secret internal detail")
        elif prompt == "agent-error":
            raise AgentError("teapot refused", 418, {"hint": "use coffee"})
        elif prompt.startswith("silent:"):
            await asyncio.sleep(float(prompt[7:]))
            await response_handler.emit_text_block("response", "after silence")
        elif prompt == "wait":
            stream = response_handler.create_text_stream("response")
            await stream.emit_chunk("started")
            STARTED.set()
            while not RELEASE.is_set():  # noqa: ASYNC110 - a threading.Event set from the test thread
                await asyncio.sleep(0.01)
            await stream.emit_chunk(" finished")
        elif prompt == "config":
            # Read the config twice around a suspension point: a reload in between must not show.
            assert self.context is not None
            prompt_seen = self.context.config.agent.system_prompt
            await asyncio.sleep(0.005)
            description_seen = self.context.config.agent.description
            await response_handler.emit_json(
                "config", {"system_prompt": prompt_seen, "description": description_seen}
            )
        elif prompt.startswith("swallow:"):
            stream = response_handler.create_text_stream("response")
            for word in prompt[8:].split():
                with contextlib.suppress(AgentError):
                    await stream.emit_chunk(word + " ")
            await stream.complete()
        elif prompt == "history":
            await response_handler.emit_json(
                "history", {"turns": [[t.role, t.content] for t in session.turns()]}
            )
        else:
            await response_handler.emit_text_block("response", prompt)
        await response_handler.complete()
