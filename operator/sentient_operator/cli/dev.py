"""``sentient dev``: what to run locally, rendered from an AGENT.PY or an agent.yaml.

Pure-ish planning (no processes): the runtime config and credential files of
one generation. From an agent.yaml the config is rendered by the operator's own
code (``references.resolve`` then ``build.runtime_config``), with the
providers, policies, Secrets and ConfigMaps defined in the same file, so the
local agent behaves like the deployed one. What cannot work on a laptop is
swapped with a note: Redis-backed counters and Redis or PostgreSQL sessions become in-memory,
caller auth becomes anonymous unless ``--auth``, and provider keys from
Vault/AWS/Azure come from the environment instead.
"""

from __future__ import annotations

import ast
import base64
import copy
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from agent_runtime.config import (
    AgentInfo,
    AuthRuntimeConfig,
    LLMRuntimeConfig,
    ProviderConfig,
    ProviderType,
    RuntimeConfig,
    ServerConfig,
    provider_credential_file,
)
from agent_runtime.placeholders import is_placeholder
from sentient_operator.api.v1alpha1 import API_VERSION, SentientAgentSpec
from sentient_operator.build.children import credentials_data
from sentient_operator.build.common import provider_secret_name
from sentient_operator.build.runtime_config import build_runtime_config
from sentient_operator.cli.errors import CliError
from sentient_operator.cli.validate import validate_text
from sentient_operator.cli.yamlpos import load_documents
from sentient_operator.references import resolve

# Which environment variable holds the key of a provider type when running locally.
ENV_KEYS: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "openai-compatible": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
}
DEFAULT_MODELS: dict[str, str] = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}
PUBLIC_ENDPOINTS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
FAKE_MODEL = "fake-model"
_SKIP_DIRS = {"__pycache__", "node_modules", "venv", "site-packages", "build", "dist"}
MAX_WATCHED = 5000


@dataclass
class Plan:
    """One generation to run: config, credential files, import path and what to watch."""

    config: RuntimeConfig
    credentials: dict[str, str] = field(repr=False)
    python_path: list[str]
    notes: list[str] = field(default_factory=list)
    api_key_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Upstreams:
    """Base URLs (``…/v1``) of fake upstreams by kind, when ``--fake``."""

    openai: str | None = None
    anthropic: str | None = None

    def endpoint(self, provider_type: str) -> str:
        """The fake endpoint that speaks ``provider_type``'s wire format."""
        url = self.anthropic if provider_type == "anthropic" else self.openai
        if url is None:
            raise CliError(f"no fake upstream for provider type {provider_type}")
        return url

    @property
    def enabled(self) -> bool:
        """True when running against fakes."""
        return self.openai is not None or self.anthropic is not None


def find_agent_class(path: Path, wanted: str | None = None) -> str:
    """The name of the ``AbstractAgent`` subclass defined in ``path`` (``wanted`` to choose one)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:
        raise CliError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    if wanted:
        if not any(c.name == wanted for c in classes):
            raise CliError(f"{path}: no class {wanted}")
        return wanted

    def base_name(base: ast.expr) -> str:
        if isinstance(base, ast.Name):
            return base.id
        return base.attr if isinstance(base, ast.Attribute) else ""

    agents = [c.name for c in classes if any(base_name(b) == "AbstractAgent" for b in c.bases)]
    if not agents:
        raise CliError(f"{path}: no subclass of agent_runtime.sdk.AbstractAgent (or name it with --class)")
    if len(agents) > 1:
        raise CliError(f"{path}: several agent classes ({', '.join(agents)}); choose one with --class")
    return agents[0]


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "agent"


def env_provider(
    provider: str | None, model: str | None, env: Mapping[str, str]
) -> tuple[ProviderConfig, dict[str, str]]:
    """A real provider from the environment (``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``)."""
    candidates = [provider] if provider else ["openai", "anthropic"]
    for kind in candidates:
        key = env.get(ENV_KEYS[kind], "").strip()
        if key:
            file = provider_credential_file("dev", kind)
            config = ProviderConfig(
                id=f"dev/{kind}",
                type=cast(ProviderType, kind),
                endpoint=env.get(f"{kind.upper()}_BASE_URL") or PUBLIC_ENDPOINTS[kind],
                model=model or DEFAULT_MODELS[kind],
                credential_file=file,
            )
            return config, {file: key}
    wanted = " or ".join(ENV_KEYS[k] for k in candidates)
    raise CliError(
        f"no provider key: set {wanted} in the environment, or run against the fake upstream with --fake"
    )


def plan_agent_py(
    path: Path,
    *,
    class_name: str | None,
    upstreams: Upstreams,
    provider: str | None,
    model: str | None,
    port: int,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """A minimal config whose ``agent_class`` is the class defined in ``path``."""
    cls = find_agent_class(path, class_name)
    module = path.stem
    if not module.isidentifier():
        raise CliError(f"{path.name}: the file name must be a Python module name")
    credentials: dict[str, str] = {}
    if upstreams.enabled:
        chain = ProviderConfig(
            id="dev/fake", type="openai", endpoint=upstreams.endpoint("openai"), model=model or FAKE_MODEL
        )
    else:
        chain, credentials = env_provider(provider, model, env if env is not None else os.environ)
    config = RuntimeConfig(
        agent=AgentInfo(
            name=_dns_name(module.replace("_", "-")),
            namespace="dev",
            description=f"{cls} from {path.name} (sentient dev)",
            agent_class=f"{module}:{cls}",
        ),
        llm=LLMRuntimeConfig(chain=[chain]),
        auth=AuthRuntimeConfig(anonymous=True),
        server=ServerConfig(port=port, metrics_port=0, shutdown_grace="5s"),
    )
    return Plan(
        config=config,
        credentials=credentials,
        python_path=[str(path.resolve().parent)],
        notes=[f"agent class {module}:{cls}", f"provider {chain.id} ({chain.type}, model {chain.model})"],
    )


class _FileLookup:
    """references.Lookup over the documents of one file (Secret data decoded)."""

    def __init__(self, docs: list[dict[str, Any]], namespace: str) -> None:
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        for doc in docs:
            meta = doc.get("metadata") or {}
            self._objects[
                (str(doc.get("kind")), meta.get("namespace") or namespace, str(meta.get("name")))
            ] = doc

    def put(self, kind: str, namespace: str, name: str, obj: dict[str, Any]) -> None:
        """Add a synthesised object (the provider Secrets the operator would have synced)."""
        self._objects[(kind, namespace, name)] = obj

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The raw document."""
        return self._objects.get((kind, namespace, name))

    def provider(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._objects.get(("LLMProvider", namespace, name))

    def policy(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._objects.get(("RateLimitPolicy", namespace, name))

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        obj = self._objects.get(("Secret", namespace, name))
        return secret_data(obj) if obj is not None else None

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        obj = self._objects.get(("ConfigMap", namespace, name))
        return {str(k): str(v) for k, v in (obj.get("data") or {}).items()} if obj is not None else None


def secret_data(obj: Mapping[str, Any]) -> dict[str, str]:
    """A Secret document's values in clear (``stringData`` wins over ``data``, as in the API)."""
    data = {str(k): base64.b64decode(str(v)).decode() for k, v in (obj.get("data") or {}).items()}
    data.update({str(k): str(v) for k, v in (obj.get("stringData") or {}).items()})
    return data


def _provider_key(
    lookup: _FileLookup, namespace: str, name: str, spec: Mapping[str, Any], env: Mapping[str, str]
) -> str:
    creds = spec.get("credentials") or {}
    ref = creds.get("secretRef")
    why = ""
    if ref:
        value = (lookup.secret(namespace, ref.get("name", "")) or {}).get(ref.get("key", ""))
        if value and not is_placeholder(value):
            return value
        where = f"Secret {namespace}/{ref.get('name')}"
        why = (
            f"{where} in the file holds a placeholder"
            if value
            else f"{where} (key {ref.get('key')}) is not in the file"
        )
    var = ENV_KEYS.get(str(spec.get("type")), "OPENAI_API_KEY")
    value = env.get(var, "").strip()
    if value:
        return value
    if not why:
        source = next(
            (k for k in ("vault", "awsSecretsManager", "azureKeyVault") if k in creds), "credentials"
        )
        why = f"its {source} source is not read by sentient dev"
    raise CliError(f"LLMProvider {namespace}/{name} needs an API key ({why}): set {var} or use --fake")


def plan_agent_yaml(
    path: Path,
    *,
    agent_name: str | None,
    upstreams: Upstreams,
    keep_auth: bool,
    port: int,
    audit_key: str,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """The runtime config of the SentientAgent in ``path``, rendered with the operator's builder."""
    env = env if env is not None else os.environ
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    # A placeholder provider key is replaced by the environment's key below, so it is no error here.
    _count, problems = validate_text(text, str(path), placeholders=False)
    if problems:
        raise CliError("; ".join(str(p) for p in problems[:3]) + (" …" if len(problems) > 3 else ""))
    docs = [copy.deepcopy(d.data) for d in load_documents(text)]
    agents = [d for d in docs if d.get("kind") == "SentientAgent" and d.get("apiVersion") == API_VERSION]
    if agent_name:
        agents = [a for a in agents if a["metadata"]["name"] == agent_name]
    if not agents:
        raise CliError(f"{path}: no SentientAgent{' named ' + agent_name if agent_name else ''}")
    if len(agents) > 1:
        names = ", ".join(a["metadata"]["name"] for a in agents)
        raise CliError(f"{path}: several agents ({names}); choose one with --agent")
    agent = agents[0]
    namespace = agent["metadata"].get("namespace") or "default"
    name = agent["metadata"]["name"]
    notes: list[str] = []
    lookup = _FileLookup(docs, namespace)
    spec_data = agent["spec"]
    # Every provider of the chain: a step's own, or each member's of a load-balanced step.
    refs = [m["providerRef"] for e in spec_data["llm"]["chain"] for m in e.get("members") or [e]]
    for ref in refs:
        p_ns = ref.get("namespace") or namespace
        provider = lookup.get("LLMProvider", p_ns, ref["name"])
        if provider is None:
            continue  # resolve() reports it with the operator's message
        p_spec = provider["spec"]
        if upstreams.enabled:
            p_spec["endpoint"] = upstreams.endpoint(str(p_spec.get("type")))
            p_spec.pop("tls", None)
            p_spec.pop("defaultHeaders", None)
            key = "fake-upstream-key"
            notes.append(
                f"provider {p_ns}/{ref['name']} -> fake {p_spec['type']} upstream {p_spec['endpoint']}"
            )
        elif p_spec.get("credentials") is None:
            continue
        else:
            key = _provider_key(lookup, p_ns, ref["name"], p_spec, env)
        if p_spec.get("credentials") is None:
            p_spec["credentials"] = {"secretRef": {"name": "dev", "key": "apiKey"}}
        # What the provider handler would have synced from the credential source.
        lookup.put("Secret", p_ns, provider_secret_name(ref["name"]), {"stringData": {"apiKey": key}})
    for policy in (d for d in docs if d.get("kind") == "RateLimitPolicy"):
        backend = policy["spec"].get("backend") or {}
        if backend.get("type") == "redis":
            policy["spec"]["backend"] = {"type": "memory"}
            notes.append(
                f"RateLimitPolicy {policy['metadata']['name']}: counted in memory (Redis is not used by dev)"
            )
    sessions = spec_data.get("sessions") or {}
    if sessions.get("store") == "redis":
        spec_data["sessions"] = {
            k: v for k, v in sessions.items() if k not in ("redisSecretRef", "redis")
        } | {"store": "memory"}
        notes.append("sessions kept in memory (Redis is not used by dev)")
    elif sessions.get("store") == "postgres":
        spec_data["sessions"] = {k: v for k, v in sessions.items() if k != "postgres"} | {"store": "memory"}
        notes.append("sessions kept in memory (PostgreSQL is not used by dev)")
    if not keep_auth:
        spec_data["auth"] = {"anonymous": True}
        notes.append("auth: anonymous (--auth keeps the agent's API keys / JWT)")
    spec = SentientAgentSpec.model_validate(spec_data)
    resolution = resolve(
        name=name,
        namespace=namespace,
        uid="dev",
        spec=spec,
        lookup=lookup,
        image="local",
        audit_key=audit_key,
    )
    if resolution.inputs is None:
        raise CliError("; ".join(p.message for p in resolution.problems))
    inputs = resolution.inputs
    config = build_runtime_config(inputs)
    # Only where and how long to serve are dev's; the rest of the rendered server section (the
    # agent's spec.server.limits) is kept as the operator renders it.
    server = config.server.model_copy(update={"port": port, "metrics_port": 0, "shutdown_grace": "5s"})
    config = config.model_copy(update={"server": ServerConfig.model_validate(server.model_dump())})
    notes.insert(
        0, f"agent {namespace}/{name}: chain " + " -> ".join(f"{p.id} ({p.model})" for p in config.llm.chain)
    )
    if config.agent.agent_class:
        notes.insert(1, f"agent class {config.agent.agent_class}")
    return Plan(
        config=config,
        credentials=credentials_data(inputs),
        python_path=[str(path.resolve().parent)],
        notes=notes,
        api_key_ids=sorted(inputs.api_keys),
    )


def new_audit_key() -> str:
    """A random audit-chain key for one dev session."""
    return secrets.token_hex(32)


def watched_files(root: Path, target: Path) -> dict[Path, tuple[int, int]]:
    """``{path: (mtime_ns, size)}`` of the target and the Python files beside it (recursively)."""
    found: dict[Path, tuple[int, int]] = {}

    def add(path: Path) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        found[path] = (st.st_mtime_ns, st.st_size)

    add(target)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
        for filename in filenames:
            if filename.endswith((".py", ".yaml", ".yml")) and not filename.startswith("."):
                add(Path(dirpath) / filename)
                if len(found) >= MAX_WATCHED:
                    return found
    return found
