"""Pure builders of the files ``sentient init`` writes (no I/O, easy to test)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Literal

import yaml

from sentient_operator.api.v1alpha1 import API_VERSION

ProviderKind = Literal["openai", "anthropic", "openai-compatible"]
SourceKind = Literal["secret", "vault", "aws", "azure", "none"]

DEFAULT_ENDPOINTS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "openai-compatible": "http://vllm.models.svc:8000/v1",
}
DEFAULT_MODELS: dict[str, str] = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "openai-compatible": "llama-3.1-8b-instruct",
}
RUNTIME_IMAGE = "ghcr.io/sentient-operator/agent-runtime:0.1.0"
# Where `kubectl create secret` reads the provider key from, per provider type.
KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai-compatible": "LLM_API_KEY",
}
CALLER_KEY_ID = "team-a"


def new_caller_key() -> str:
    """A fresh random caller API key (192 bits)."""
    return "sk-agent-" + secrets.token_urlsafe(24)


def provider_name(name: str, provider_type: ProviderKind) -> str:
    """The LLMProvider ``init`` writes for agent ``name``."""
    return f"{name}-{provider_type.replace('-compatible', '')}"


def provider_key_steps(name: str, provider_type: ProviderKind, source: SourceKind) -> list[str]:
    """What the user must do so that the provider has its key (``init`` prints it).

    The key is never written into agent.yaml: a file with a real key ends up in a repository, and
    one with a placeholder would be applied unchanged.
    """
    provider = provider_name(name, provider_type)
    if source == "secret":
        return [
            f"kubectl create secret generic {provider}-api-key "
            f'--from-literal=apiKey="${KEY_ENV[provider_type]}"   # the provider\'s API key'
        ]
    where = {
        "vault": f"Vault/OpenBao at llm/{provider} (key apiKey)",
        "aws": f"AWS Secrets Manager secret llm/{provider} (key apiKey)",
        "azure": f"Azure Key Vault secret {provider}-api-key",
    }
    if source in where:
        return [
            f"store the provider's API key in {where[source]}, and check the store's address and auth in agent.yaml"
        ]
    return []


def _credentials(source: SourceKind, provider: str) -> dict[str, Any] | None:
    if source == "secret":
        return {"secretRef": {"name": f"{provider}-api-key", "key": "apiKey"}}
    if source == "vault":
        return {
            "vault": {
                "server": "https://vault.vault.svc:8200",
                "path": f"llm/{provider}",
                "kvVersion": 2,
                "key": "apiKey",
                "auth": {"kubernetes": {"role": "sentient-operator"}},
            },
            "refreshInterval": "1m",
        }
    if source == "aws":
        return {
            "awsSecretsManager": {"region": "eu-west-1", "secretId": f"llm/{provider}", "key": "apiKey"},
            "refreshInterval": "5m",
        }
    if source == "azure":
        return {
            "azureKeyVault": {
                "vaultURL": "https://my-vault.vault.azure.net/",
                "secretName": f"{provider}-api-key",
                "auth": {"workloadIdentity": {}},
            },
            "refreshInterval": "5m",
        }
    return None


def agent_manifests(
    name: str,
    provider_type: ProviderKind = "openai",
    source: SourceKind = "secret",
    model: str | None = None,
    endpoint: str | None = None,
    image: str | None = None,
    agent_class: str | None = None,
    caller_key: str | None = None,
    guardrails: bool = False,
) -> list[dict[str, Any]]:
    """The documents of a starter ``agent.yaml``: provider, policy, caller keys, agent.

    The callers' Secret holds ``caller_key`` (default: a fresh random key); ``guardrails`` adds
    the starter checks of :func:`starter_guardrails`.
    """
    provider = provider_name(name, provider_type)
    # No Secret with the provider key: see provider_key_steps().
    docs: list[dict[str, Any]] = []
    provider_spec: dict[str, Any] = {
        "type": provider_type,
        "endpoint": endpoint or DEFAULT_ENDPOINTS[provider_type],
        "defaultModel": model or DEFAULT_MODELS[provider_type],
        "timeouts": {"connect": "5s", "firstToken": "30s", "idle": "30s", "total": "120s"},
        "retry": {"maxAttempts": 3, "initialBackoff": "200ms", "maxBackoff": "5s"},
    }
    creds = _credentials(source, provider)
    if creds is not None:
        provider_spec["credentials"] = creds
    docs.append(
        {
            "apiVersion": API_VERSION,
            "kind": "LLMProvider",
            "metadata": {"name": provider},
            "spec": provider_spec,
        }
    )
    docs.append(
        {
            "apiVersion": API_VERSION,
            "kind": "RateLimitPolicy",
            "metadata": {"name": f"{name}-limits"},
            "spec": {
                "limits": {"requestsPerMinute": 60, "tokensPerMinute": 100000, "concurrency": 10},
                "countBy": "apiKey",
            },
        }
    )
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-callers"},
            "type": "Opaque",
            # A fresh random key, never a placeholder: a placeholder applied unchanged would be a
            # key anyone who read the template could use.
            "stringData": {
                CALLER_KEY_ID: caller_key or new_caller_key(),
                f"{CALLER_KEY_ID}.tier": "standard",
            },
        }
    )
    agent_spec: dict[str, Any] = {
        "description": f"The {name} agent.",
        "systemPrompt": "You are a helpful assistant.",
        "llm": {
            "chain": [{"providerRef": {"name": provider}}],
            "parameters": {"temperature": 0.2, "maxTokens": 1024},
        },
        "rateLimitPolicyRef": {"name": f"{name}-limits"},
        "auth": {"apiKeys": {"secretRef": {"name": f"{name}-callers"}}},
        "replicas": 1,
    }
    if guardrails:
        agent_spec["guardrails"] = starter_guardrails()
    if image or agent_class:
        agent_spec["deployment"] = {k: v for k, v in (("image", image), ("agentClass", agent_class)) if v}
    docs.append(
        {"apiVersion": API_VERSION, "kind": "SentientAgent", "metadata": {"name": name}, "spec": agent_spec}
    )
    return docs


def starter_guardrails() -> dict[str, Any]:
    """A starting set of checks (docs/guardrails.md): bounded prompts, injection attempts refused,
    secret keys masked before they reach the model, personal data masked in answers and the audit log."""
    return {
        "input": [
            {"name": "size", "size": {"maxChars": 32000, "maxMessages": 64}},
            {"name": "injection", "injection": {"threshold": 0.5}},
            {"name": "secrets", "pii": {"entities": ["secretKey"]}, "action": "redact"},
        ],
        "output": [
            {
                "name": "pii",
                "pii": {"entities": ["email", "phone", "paymentCard", "iban", "secretKey"]},
                "action": "redact",
            },
        ],
        "redact": {"audit": True},
    }


def manifest_header(steps: list[str]) -> str:
    """The comment at the top of agent.yaml: the steps that make it work."""
    return "# Next steps:\n" + "".join(f"#   {step}\n" for step in steps)


def custom_next_steps(name: str, image: str, out: Path) -> list[str]:
    """What to do after ``init --custom``: test, run locally, build, deploy."""
    module = name.replace("-", "_") + "_agent"
    return [
        f"cd {out}",
        "pip install 'sentient-operator[test]'   # the runtime, pytest and httpx (see README.md)",
        f"pytest test_{module}.py   # runs your agent in the real runtime, fake upstream",
        f"sentient dev {module}.py --fake   # http://127.0.0.1:8080, reloads on save",
        f"docker build -t {image} . && docker push {image}",
        *provider_key_steps(name, "openai", "secret"),
        "kubectl apply -f agent.yaml",
    ]


def dump_documents(docs: list[dict[str, Any]], header: str = "") -> str:
    """A multi-document YAML stream in a stable, readable order."""
    body = "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
    return header + body


AGENT_PY = '''"""A custom agent built on the sentient SDK (agent_runtime.sdk).

The runtime imports this class by the ``module:Class`` in agent.yaml
(spec.deployment.agentClass) and calls ``assist`` once per query. Run it
locally with hot reload:  sentient dev {module}.py --fake
"""

from __future__ import annotations

from agent_runtime.llm import ChatMessage, ChatRequest, TextDelta, Usage
from agent_runtime.sdk import AbstractAgent, AgentError, Query, ResponseHandler, Session

SYSTEM_PROMPT = "You are a helpful assistant."


class {cls}(AbstractAgent):
    """Sends a small JSON summary of the request, then streams the model's answer."""

    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler) -> None:
        """Answer one query through the failover chain configured for the agent."""
        if self.context is None or self.context.llm is None:
            raise AgentError("no LLM is configured for this agent", 503)
        history = session.turns()
        await response_handler.emit_json(
            "request", {{"prompt_chars": len(query.prompt), "history_turns": len(history)}}
        )
        messages = [ChatMessage("system", self.context.config.agent.system_prompt or SYSTEM_PROMPT)]
        messages += [ChatMessage(t.role, t.content) for t in history if t.role in ("user", "assistant")]  # type: ignore[arg-type]
        messages.append(ChatMessage("user", query.prompt))
        stream = response_handler.create_text_stream("response")
        answer: list[str] = []
        async for event in self.context.llm.stream(ChatRequest(messages=messages)):
            if isinstance(event, TextDelta) and event.text:
                answer.append(event.text)
                await stream.emit_chunk(event.text)
            elif isinstance(event, Usage):
                # Rate limits are settled with what the model really used.
                response_handler.record_usage(event.input_tokens, event.output_tokens)
        await stream.complete()
        await session.remember(query.prompt, "".join(answer))
        await response_handler.complete()
'''

TEST_PY = '''"""Runs {cls} inside the real agent runtime, against the fake OpenAI upstream.

No API key and no network: the fake answers "Echo: <prompt>". Run with:  pytest
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from agent_runtime.app import create_app
from agent_runtime.client import AssistResult, SentientClient
from agent_runtime.config import RuntimeConfig
from agent_runtime.protocol import DocumentEvent
from agent_runtime.testing import run_fake


def ask(endpoint: str, credentials: Path, prompt: str) -> AssistResult:
    """One /assist request to a runtime that serves {cls} in-process."""
    config = RuntimeConfig.model_validate(
        {{
            "agent": {{"name": "{name}", "agentClass": "{module}:{cls}"}},
            "llm": {{"chain": [{{"id": "test/fake", "type": "openai", "endpoint": endpoint, "model": "fake-model"}}]}},
            "auth": {{"anonymous": True}},
        }}
    )
    runtime = create_app(config, credentials_dir=credentials)

    async def run() -> AssistResult:
        await runtime.startup()
        try:
            transport = httpx.ASGITransport(app=runtime)  # type: ignore[arg-type]
            async with SentientClient("http://agent", transport=transport) as client:
                return await client.ask(prompt)
        finally:
            await runtime.shutdown()

    return asyncio.run(run())


def test_agent_streams_the_models_answer(tmp_path: Path) -> None:
    with run_fake("openai") as fake:
        result = ask(fake.endpoint, tmp_path, "hello agent")
    assert result.error is None, result.error
    assert result.done
    summary = next(e for e in result.events if isinstance(e, DocumentEvent))
    assert summary.content == {{"prompt_chars": 11, "history_turns": 0}}
    assert result.text == "Echo: hello agent"
'''

DOCKERFILE = """# Builds on the sentient runtime image: your agent module is the only addition.
# agent.yaml names the class (spec.deployment.agentClass: {module}:{cls}).
FROM {base}
COPY --chown=65532:65532 {module}.py /app/{module}.py
"""


PROJECT_README = """# {name}

A custom agent for sentient-operator: `{module}.py` holds `{cls}`, which the agent runtime
imports by `spec.deployment.agentClass: {module}:{cls}` in `agent.yaml`.

## Test and run it locally

```bash
python -m venv .venv && . .venv/bin/activate
pip install "sentient-operator[test]"   # the runtime and SDK, plus pytest and httpx for the test
pytest                                  # runs the agent in the real runtime against a fake upstream
sentient dev {module}.py --fake         # http://127.0.0.1:8080; saving the file reloads it
sentient chat http://127.0.0.1:8080     # in another terminal
```

From a checkout of sentient-operator instead of the package index:
`pip install "/path/to/sentient-operator[test]"`.

## Deploy it

```bash
docker build -t {image} . && docker push {image}
{key_step}
kubectl apply -f agent.yaml
kubectl wait --for=condition=Ready sentientagent/{name}
```

The caller API key is in the Secret `{name}-callers` of `agent.yaml` (key `{key_id}`).
"""


def custom_agent_files(name: str, image: str) -> dict[str, str]:
    """Files of a custom-agent project: class, test, Dockerfile, agent.yaml and a README."""
    module = name.replace("-", "_") + "_agent"
    cls = "".join(part.capitalize() for part in name.replace("_", "-").split("-")) + "Agent"
    manifests = agent_manifests(name, image=image, agent_class=f"{module}:{cls}")
    steps = ["kubectl apply -f agent.yaml  (after building " + image + ")"]
    return {
        f"{module}.py": AGENT_PY.format(module=module, cls=cls),
        f"test_{module}.py": TEST_PY.format(module=module, cls=cls, name=name),
        "Dockerfile": DOCKERFILE.format(base=RUNTIME_IMAGE, module=module, cls=cls),
        "agent.yaml": dump_documents(
            manifests, header=manifest_header([*provider_key_steps(name, "openai", "secret"), *steps])
        ),
        "README.md": PROJECT_README.format(
            name=name,
            module=module,
            cls=cls,
            image=image,
            key_step=provider_key_steps(name, "openai", "secret")[0],
            key_id=CALLER_KEY_ID,
        ),
    }
