"""Mount an agent inside an existing web application (FastAPI/Starlette, Flask, Django).

Every adapter serves the runtime's own ASGI application (``agent_runtime.app``)
built from a runtime config: the same routes, request pipeline, authentication,
rate limits and metrics as the standalone runtime; nothing is reimplemented.
What differs is only how requests reach it:

- :mod:`agent_runtime.adapters.mount`: :class:`AgentMount`, the runtime as an
  ASGI sub-application under a path prefix, with its lifespan;
- :mod:`agent_runtime.adapters.starlette`: FastAPI and Starlette (``app.mount``
  plus the host app's lifespan);
- :mod:`agent_runtime.adapters.wsgi`: a WSGI bridge (Flask, Django under WSGI)
  that runs the runtime on an event loop of its own and streams its events;
- :mod:`agent_runtime.adapters.flask`, :mod:`agent_runtime.adapters.django`.

No adapter imports its framework at import time: the frameworks are optional
extras (``sentient-operator[fastapi]``, ``[flask]``, ``[django]``).
"""

from agent_runtime.adapters.mount import AgentMount

__all__ = ["AgentMount"]
