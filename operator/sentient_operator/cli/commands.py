"""Commands that talk to a cluster or a running agent: status, chat, dev, audit.

Plain click commands, attached to the ``sentient`` group in :mod:`sentient_operator.cli.main`
(this module never imports the group). Their heavier dependencies (httpx clients, uvicorn,
the runtime) are imported inside each command, so ``sentient --help`` stays quick.
"""

from __future__ import annotations

import click

from sentient_operator.cli import status as status_mod
from sentient_operator.cli.errors import CliError


@click.command()
@click.option("-n", "--namespace", help="Only this namespace (default: all namespaces).")
@click.option("-A", "--all-namespaces", is_flag=True, help="All namespaces (the default).")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)
@click.option("--context", help="kubeconfig context to use.")
def status(namespace: str | None, all_namespaces: bool, output: str, context: str | None) -> None:
    """Show agents: ready, replicas, the provider chain with each provider's state, endpoint.

    \b
    Examples:
      sentient status
      sentient status -n team-a -o yaml
    """
    try:
        agents, providers = status_mod.fetch(None if all_namespaces else namespace, context)
    except Exception as exc:
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise CliError(f"cannot list agents from the cluster: {reason}") from exc
    click.echo(status_mod.render(status_mod.build_rows(agents, providers), output))


@click.command()
@click.argument("target")
@click.option(
    "-p", "--prompt", help="Send one prompt, print the answer, exit (1 if the agent answered with an error)."
)
@click.option("-n", "--namespace", help="Namespace of the agent when TARGET is a bare NAME.")
@click.option("--context", help="kubeconfig context used for the port-forward.")
@click.option(
    "--api-key",
    envvar="SENTIENT_API_KEY",
    show_envvar=True,
    help="Caller API key (sent as x-api-key; never printed).",
)
@click.option(
    "--token", envvar="SENTIENT_TOKEN", show_envvar=True, help="JWT bearer token instead of an API key."
)
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    help="Longest silence tolerated from the agent, in seconds.",
)
@click.option("--json", "json_out", is_flag=True, help="Print every event as one JSON line (for scripts).")
@click.option(
    "--forward-timeout",
    default=30.0,
    show_default=True,
    help="Seconds to wait for the port-forward (a running pod behind the Service).",
)
def chat(
    target: str,
    prompt: str | None,
    namespace: str | None,
    context: str | None,
    api_key: str | None,
    token: str | None,
    timeout: float,
    json_out: bool,
    forward_timeout: float,
) -> None:
    """Chat with an agent, by URL or by NAMESPACE/NAME in the current kube context.

    \b
    A NAMESPACE/NAME target is reached through `kubectl port-forward` to the
    agent's Service (a free 127.0.0.1 port; stopped when the chat ends).
    Streamed text is shown as it arrives, JSON events indented, errors in red.
    The session (activity id and previous exchanges) is kept across turns.

    \b
    Examples:
      sentient chat http://127.0.0.1:8080 -p "hello"
      sentient chat team-a/support-bot
      SENTIENT_API_KEY=... sentient chat support-bot -n team-a -p "status?"
      sentient chat http://127.0.0.1:8080 -p "hi" --json | jq .event_name
    """
    import sys
    from contextlib import ExitStack

    from agent_runtime.client import SyncSentientClient
    from sentient_operator.cli import chat as chat_mod
    from sentient_operator.cli.portforward import PortForward

    where = chat_mod.parse_target(target, namespace)
    with ExitStack() as stack:
        if where.url is not None:
            url = where.url
        else:
            assert where.namespace is not None and where.name is not None
            url = stack.enter_context(
                PortForward(where.namespace, where.name, context=context, timeout=forward_timeout)
            ).url
        client = stack.enter_context(
            SyncSentientClient(url, api_key=api_key, token=token, timeout=timeout, retries=2)
        )
        session = chat_mod.ChatSession()
        renderer = None if json_out else chat_mod.Renderer()
        if prompt is not None:
            ok = chat_mod.run_turn(
                client, session, prompt, renderer, json_lines=sys.stdout if json_out else None
            )
            if not ok:
                raise SystemExit(1)
            return
        if json_out:
            raise CliError("--json needs -p PROMPT", exit_code=2)
        shown = target if where.url is None else url
        chat_mod.repl(
            client, session, chat_mod.Renderer(), f"chatting with {shown} (session {session.activity_id})"
        )


@click.command()
@click.argument("target", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--fake",
    is_flag=True,
    help="Run against the fake OpenAI/Anthropic upstream (no key, deterministic echo).",
)
@click.option("--port", default=8080, show_default=True, help="Local port of the agent (127.0.0.1).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (the dashboard under /_dev/ shows prompts: keep it on loopback).",
)
@click.option("--class", "class_name", help="Agent class in AGENT.PY (when it defines several).")
@click.option("--agent", "agent_name", help="SentientAgent in agent.yaml (when it defines several).")
@click.option(
    "--provider",
    type=click.Choice(["openai", "anthropic"]),
    help="With AGENT.PY: which provider key to use from the environment.",
)
@click.option("--model", help="With AGENT.PY: the model to request.")
@click.option(
    "--auth",
    "keep_auth",
    is_flag=True,
    help="With agent.yaml: keep the agent's caller auth (default: anonymous).",
)
@click.option("--no-inspect", is_flag=True, help="Do not print requests and their events.")
@click.option(
    "--workdir", type=click.Path(file_okay=False), help="Keep config, credentials and audit logs here."
)
@click.option(
    "--cold", is_flag=True, help="Start `python -m agent_runtime` afresh on every change (slower, ~1 s more)."
)
@click.option("--log-level", default="warning", show_default=True, help="Runtime log level.")
def dev(
    target: str | None,
    fake: bool,
    port: int,
    host: str,
    class_name: str | None,
    agent_name: str | None,
    provider: str | None,
    model: str | None,
    keep_auth: bool,
    no_inspect: bool,
    workdir: str | None,
    cold: bool,
    log_level: str,
) -> None:
    """Run an agent locally with hot reload and request inspection.

    \b
    TARGET is a Python file with an AbstractAgent subclass, or an agent.yaml
    (default: ./agent.yaml). An agent.yaml is rendered with the operator's
    own code, using the providers, policies and Secrets in the same file;
    provider keys not in the file come from OPENAI_API_KEY /
    ANTHROPIC_API_KEY, or from the fake upstream with --fake. Every request
    and its events are printed as they stream. Saving any .py or .yaml file
    beside TARGET reloads the agent (a warm runtime takes over, well under a
    second; in-flight answers finish on the old one). A dashboard of the
    requests, their events, metrics, config and reloads, with a console, is
    served on the same port under /_dev/.

    \b
    Examples:
      sentient dev my_agent.py --fake
      OPENAI_API_KEY=... sentient dev my_agent.py --model gpt-4o-mini
      sentient dev agent.yaml --fake --port 9000
      sentient chat http://127.0.0.1:8080      # in another terminal
    """
    import asyncio
    from pathlib import Path

    from sentient_operator.cli import dev as dev_mod
    from sentient_operator.cli.devloop import DevLoop

    path = Path(target or "agent.yaml")
    if not path.exists():
        raise CliError("no TARGET and no ./agent.yaml: give an AGENT.PY or an agent.yaml", exit_code=2)
    is_yaml = path.suffix in (".yaml", ".yml")
    if not is_yaml and path.suffix != ".py":
        raise CliError(f"{path}: expected a .py or .yaml file", exit_code=2)
    fakes: list[object] = []
    upstreams = dev_mod.Upstreams()
    if fake:
        from agent_runtime.testing import FakeUpstream

        openai_fake = FakeUpstream("openai").start()
        anthropic_fake = FakeUpstream("anthropic").start()
        fakes = [openai_fake, anthropic_fake]
        upstreams = dev_mod.Upstreams(openai=openai_fake.endpoint, anthropic=anthropic_fake.endpoint)
        click.secho(
            f"fake upstreams: openai {openai_fake.endpoint}, anthropic {anthropic_fake.endpoint}",
            dim=True,
            err=True,
        )
    audit_key = dev_mod.new_audit_key()

    def planner(runtime_port: int) -> dev_mod.Plan:
        if is_yaml:
            return dev_mod.plan_agent_yaml(
                path,
                agent_name=agent_name,
                upstreams=upstreams,
                keep_auth=keep_auth,
                port=runtime_port,
                audit_key=audit_key,
            )
        return dev_mod.plan_agent_py(
            path,
            class_name=class_name,
            upstreams=upstreams,
            provider=provider,
            model=model,
            port=runtime_port,
        )

    # Fail fast, before any process starts, on what the user must fix first.
    planner(0)
    loop = DevLoop(
        planner=planner,
        target=path,
        host=host,
        port=port,
        workdir=Path(workdir) if workdir else None,
        inspect=not no_inspect,
        cold=cold,
        log_level=log_level,
    )
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(loop.run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C or SIGTERM: the loop has already stopped its workers.
        click.secho("stopped", dim=True, err=True)
    finally:
        for upstream in fakes:
            upstream.stop()  # type: ignore[attr-defined]


@click.group()
def audit() -> None:
    """Work with agents' audit logs (HMAC-chained JSON lines).

    \b
    Examples:
      sentient audit verify audit.log --key-file audit-key
    """


@audit.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--key-file",
    required=True,
    envvar="SENTIENT_AUDIT_KEY_FILE",
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="File holding the chain's HMAC key (the agent Secret's audit-key).",
)
def audit_verify(file: str, key_file: str) -> None:
    """Check the HMAC chain of an audit log; say where it breaks (exit 1).

    \b
    Lines that are not audit records (other logs on the same stdout) are
    skipped; a changed, removed, inserted or reordered record breaks the
    chain at its line.

    \b
    Examples:
      kubectl get secret my-agent-credentials -o jsonpath='{.data.audit-key}' | base64 -d > audit-key
      kubectl logs deploy/my-agent > audit.log
      sentient audit verify audit.log --key-file audit-key
    """
    from sentient_operator.cli import audit as audit_mod

    report = audit_mod.verify_log(file, audit_mod.read_key(key_file))
    if report.result.ok:
        click.secho(report.summary(), fg="green")
        return
    click.secho(report.summary(), fg="red", bold=True)
    if report.line_text is not None:
        click.echo(f"  {report.line_text}")
    raise SystemExit(1)
