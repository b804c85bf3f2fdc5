"""``python -m sentient_operator``: the operator process.

Serves /metrics, /healthz and /readyz, waits for the leader Lease (when leader
election is on), then runs kopf with every handler of
:mod:`sentient_operator.handlers`. A replica that loses the Lease (taken over,
or not renewed in time because the apiserver does not answer) stops kopf at
once, becomes a standby and campaigns again; each term as leader starts from a
fresh :class:`OperatorContext`. The process exits non-zero only when kopf
itself fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterable
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sentient_operator import kube, metrics
from sentient_operator.leader import LeaseElector
from sentient_operator.reconcile.context import MEMO_KEY, OperatorContext
from sentient_operator.settings import Settings

log = logging.getLogger("sentient_operator")


def configure_logging(settings: Settings) -> None:
    """JSON (or text) logs on stderr at the configured level."""
    fmt = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=settings.log_level == "DEBUG", log_format=fmt, log_refkey="object")
    logging.getLogger().setLevel(settings.log_level)
    # hvac and boto talk through urllib3, which logs request lines at DEBUG: keep them out.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if settings.log_level != "DEBUG":
        # kopf reports every event handler call at INFO; our handlers only enqueue, so that is noise.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's "essence" of an object, for nothing: no handler of ours reacts to field changes.

    Every handler is an event handler or an index, which get the whole body; kopf would still
    deep-copy each body (managedFields and all) on every event to diff it against a stored
    essence that only change handlers (on.create/update/field) use. That was a tenth of the
    operator's CPU with a fleet being created. An empty essence makes every diff empty.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        """The empty essence."""
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        """No stored essence."""
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Nothing to store."""


def kopf_settings(ours: Settings) -> kopf.OperatorSettings:
    """kopf settings: timeouts so silent watches reconnect, short backoffs, no annotations, no peering."""
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = int(ours.watch_server_timeout)  # the apiserver wants an integer
    settings.watching.client_timeout = ours.watch_client_timeout
    settings.watching.inactivity_timeout = ours.watch_inactivity_timeout
    settings.watching.connect_timeout = 30
    # kopf's own short requests (patches, Events) get deadlines too, as every call of ours does.
    settings.networking.request_timeout = kube.DEFAULT_TIMEOUT
    settings.networking.connect_timeout = kube.CONNECT_TIMEOUT
    settings.queueing.error_delays = [1, 2, 5, 10, 20, 30, 60]
    # Progress (if any handler ever keeps some) lives in status, not in size-limited annotations.
    settings.persistence.progress_storage = kopf.StatusProgressStorage()
    settings.persistence.diffbase_storage = NoDiffBase()
    # One active replica is chosen by our Lease (see sentient_operator.leader), not by kopf peering.
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "sentient-operator"
    settings.posting.reporting_instance = ours.identity
    return settings


class State:
    """What /readyz reports."""

    role = "starting"


async def start_http(settings: Settings, state: State) -> web.AppRunner:
    """The metrics and health server."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop is alive, leader or standby.
        return web.json_response({"status": "ok", "role": state.role})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    return runner


def _catch_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _reclaim_signals(
    context: OperatorContext, loop: asyncio.AbstractEventLoop, stop: asyncio.Event
) -> None:
    await context.started.wait()
    await asyncio.sleep(0.1)  # kopf installs its handlers right after spawning its tasks
    _catch_signals(loop, stop)


async def _lead(settings: Settings, stop: asyncio.Event, elector: LeaseElector | None) -> str:
    """One term as leader: kopf runs until ``stop`` ("stopped"), the Lease is lost ("lost") or
    kopf fails ("failed")."""
    loop = asyncio.get_running_loop()
    kopf_stop: asyncio.Future[None] = loop.create_future()
    namespaces = settings.watch_namespaces
    log.info(
        "starting: watching %s, runtime image %s",
        ",".join(namespaces) if namespaces else "all namespaces",
        settings.runtime_image,
    )
    # kopf hands the context to every handler as its memo, as it hands them its settings.
    context = OperatorContext(settings)
    # Our tasks exist before kopf's starts: kopf takes every task created after its start for
    # one of its own and cancels it when it stops.
    stopping = asyncio.ensure_future(stop.wait())
    # kopf replaces our SIGTERM/SIGINT handlers with its own when it starts; a signal kopf takes
    # while we step down (Lease lost) would never reach `stop`. Take them back once kopf is up:
    # our handler stops kopf too, through `stop` below.
    reclaim = asyncio.ensure_future(_reclaim_signals(context, loop, stop))
    kept: asyncio.Future[bool] | None = None
    if elector is not None:
        kept = asyncio.ensure_future(elector.keep(stop))
    operator = asyncio.create_task(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            stop_flag=kopf_stop,
            settings=kopf_settings(settings),
            memo=kopf.Memo({MEMO_KEY: context}),
        )
    )
    # kopf installs its own SIGINT/SIGTERM handlers; ours keep working through `stop` too.
    _catch_signals(loop, stop)
    waiters: set[asyncio.Future[Any]] = {operator, stopping}
    if kept is not None:
        waiters.add(kept)
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    # From here on a SIGTERM must reach `stop`, not kopf's handler: kopf is being stopped anyway,
    # and a signal it swallowed during a step-down would leave us campaigning forever.
    _catch_signals(loop, stop)
    # kopf ending by itself without an error means it took a SIGTERM/SIGINT (its own handlers
    # replace ours while it runs): that is a stop, even if the Lease was lost at the same moment.
    kopf_took_signal = operator in done and not operator.cancelled() and operator.exception() is None
    lost = (
        kept is not None
        and kept in done
        and not kept.cancelled()
        and kept.exception() is None
        and kept.result() is False
        and not stop.is_set()
        and not kopf_took_signal
    )
    # kopf failing (e.g. it gave up on a forbidden watch) must exit non-zero so that the
    # pod restarts visibly. kopf also ends normally when it takes SIGTERM itself (it
    # installs its own signal handlers), so only an exception counts as failure.
    if lost:
        # Stop acting now (the reconcile workers are the writers); kopf may take a while to stop.
        await context.stop()
    failed = operator in done and not operator.cancelled() and operator.exception() is not None
    if failed:
        log.error("the kopf operator failed: %s; exiting with code 1", operator.exception())
    if not lost:
        # Stopping for good (kopf failed, or took SIGTERM itself, or we did): keep() ends too.
        stop.set()
    if not kopf_stop.done():
        kopf_stop.set_result(None)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(operator, timeout=30)
    if not operator.done():
        operator.cancel()
    if kept is not None and not kept.done():
        # Let a renewal in flight finish, so that the release that follows sees the latest Lease.
        with contextlib.suppress(asyncio.CancelledError, Exception, TimeoutError):
            await asyncio.wait_for(kept, timeout=10)
    stopping.cancel()
    reclaim.cancel()
    # kopf removes the signal handlers it installed when it stops: ours again.
    _catch_signals(loop, stop)
    if failed:
        return "failed"
    return "lost" if lost and not stop.is_set() else "stopped"


async def run(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; the exit code (1 when kopf gave up)."""
    import sentient_operator.handlers  # noqa: F401  (registers every handler with kopf)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    _catch_signals(loop, stop)
    state = State()
    runner = await start_http(settings, state)
    elector: LeaseElector | None = None
    if settings.leader_election:
        elector = LeaseElector(
            settings.operator_namespace,
            settings.lease_name,
            settings.identity,
            settings.lease_duration,
            settings.lease_renew_interval,
        )
    try:
        while not stop.is_set():
            if elector is not None:
                state.role = "standby"
                if not await elector.acquire(stop):
                    return 0
            state.role = "leader"
            outcome = await _lead(settings, stop, elector)
            if outcome == "lost":
                state.role = "standby"
                metrics.LEADER.set(0)
                log.warning("stepped down: stopped acting; campaigning for the lease again")
                continue
            if elector is not None:
                await elector.release()
            return 1 if outcome == "failed" else 0
        return 0
    finally:
        await runner.cleanup()
        await kube.close()


def _parse_args(argv: list[str]) -> None:
    """``--help`` (and ``--version``) print and exit; the operator takes no other argument."""
    import argparse

    from sentient_operator.settings import ENV_PREFIX, describe_variables
    from sentient_operator.version import package_version

    parser = argparse.ArgumentParser(
        prog="sentient-operator",
        description="Run the sentient-operator: reconcile SentientAgents, LLMProviders and\n"
        "RateLimitPolicies in the cluster of the current kubeconfig (or of the pod).\n"
        f"It takes no arguments; {ENV_PREFIX}* environment variables configure it (defaults below).",
        epilog=describe_variables(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sentient-operator`` and ``python -m sentient_operator``."""
    _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"sentient-operator: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
