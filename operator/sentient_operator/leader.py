"""Leader election on a ``coordination.k8s.io/v1`` Lease: one replica acts, the others stand by.

The standby does not even open watches. It observes the Lease and takes it
over when the holder has not renewed it for ``leaseDurationSeconds`` as seen
by the standby's own clock (like client-go, so clock skew between nodes does
not matter). A leader that cannot renew in time stops acting before its
Lease can expire (and campaigns again); a leader that shuts down cleanly
releases the Lease so that the standby takes over at once.

Every request to the apiserver has a deadline shorter than the renewal
interval, and a renewal is given up when the step-down point comes: a hanging
apiserver can never keep a leader acting past its Lease. While the apiserver
cannot be reached, attempts back off (doubling up to the Lease duration).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sentient_operator import kube, metrics

log = logging.getLogger("sentient_operator.leader")

API_VERSION = "coordination.k8s.io/v1"
KIND = "Lease"


def missing_namespace(namespace: str, what: str) -> str:
    """One line: the operator's namespace is missing, what needs it, and how to create it."""
    return (
        f"namespace {namespace} does not exist ({what} lives there): create it with "
        f"`kubectl create namespace {namespace}`, or set SENTIENT_OPERATOR_NAMESPACE to an existing one"
    )


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Acquire, keep and release one Lease."""

    def __init__(
        self, namespace: str, name: str, identity: str, duration: float, renew_interval: float
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = max(2.0, duration)
        self.renew_interval = min(renew_interval, self.duration / 3)
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._lease: dict[str, Any] | None = None
        self._last_renew = 0.0
        # Each request's deadline: a renewal must end well inside the renewal interval.
        self.request_timeout = max(1.0, self.renew_interval)

    @property
    def step_down_after(self) -> float:
        """Seconds without a successful renewal after which a leader stops acting."""
        return self.duration * 2 / 3

    def _spec(self, acquire: str | None = None) -> dict[str, Any]:
        now = _micro_now()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": now,
        }
        if acquire is not None:
            spec["acquireTime"] = acquire
        return spec

    async def try_acquire(self) -> bool:
        """One attempt to become (or stay) the holder."""
        lease = await kube.get(
            API_VERSION, KIND, self.name, self.namespace, request_timeout=self.request_timeout
        )
        if lease is None:
            body = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(acquire=_micro_now()),
            }
            try:
                self._lease = await kube.call(
                    "POST",
                    await kube.object_path(API_VERSION, KIND, None, self.namespace),
                    body=body,
                    content_type="application/json",
                    request_timeout=self.request_timeout,
                )
            except kube.KubeError as exc:
                if exc.conflict:
                    return False
                raise
            self._last_renew = time.monotonic()
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime", "")))
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        expired = time.monotonic() - self._observed_at > duration
        if holder and holder != self.identity and not expired:
            return False
        acquire = spec.get("acquireTime") if holder == self.identity else _micro_now()
        lease["spec"] = {**spec, **self._spec(acquire=acquire)}
        try:
            self._lease = await kube.call(
                "PUT",
                await kube.object_path(API_VERSION, KIND, self.name, self.namespace),
                body=lease,
                content_type="application/json",
                request_timeout=self.request_timeout,
            )
        except kube.KubeError as exc:
            if exc.conflict:
                return False  # someone else wrote it first
            raise
        metrics.WRITES.labels("update", KIND).inc()
        self._last_renew = time.monotonic()
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this replica holds the Lease (True) or ``stop`` is set (False).

        An apiserver that cannot be reached (not up yet, down, not answering) is waited out,
        with a delay that doubles per failed attempt up to the Lease duration.
        """
        announced = False
        failures = 0
        last_problem: str | None = None
        while not stop.is_set():
            delay = self.renew_interval
            try:
                if await self.try_acquire():
                    log.info(
                        "acquired leadership: lease %s/%s as %s", self.namespace, self.name, self.identity
                    )
                    metrics.LEADER.set(1)
                    return True
                failures = 0
                last_problem = None
            except kube.KubeError as exc:
                failures += 1
                delay = min(self.duration, self.renew_interval * 2 ** (failures - 1))
                problem = self._problem(exc)
                # A missing namespace is said once: it stays missing until someone creates it, and
                # the retries that follow are quiet. Other problems (an unreachable apiserver) are
                # logged per attempt, with the growing delay.
                repeated = exc.not_found and problem == last_problem
                log.log(
                    logging.DEBUG if repeated else logging.WARNING,
                    "%s; trying again in %.1fs",
                    problem,
                    delay,
                )
                last_problem = problem
            if not announced and failures == 0:
                holder = self._observed[0] if self._observed else "?"
                log.info("standing by: lease %s/%s is held by %s", self.namespace, self.name, holder)
                announced = True
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
        return False

    def _problem(self, exc: kube.KubeError) -> str:
        """One line on why the Lease cannot be taken; a missing namespace says how to create it."""
        if exc.not_found:
            # The Lease itself reads as None when absent: a 404 here is its namespace (on create).
            return missing_namespace(self.namespace, "the leader Lease")
        return f"lease {self.namespace}/{self.name}: {exc.reason} ({exc.message})"

    async def keep(self, stop: asyncio.Event) -> bool:
        """Renew until ``stop`` (True); False as soon as leadership is lost.

        Lost means taken over by another replica, or not renewed for :attr:`step_down_after`
        seconds (two thirds of the Lease): a renewal still in flight then is abandoned, so a
        hanging apiserver never keeps this replica acting while another may take over.
        """
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.renew_interval)
                return True
            except TimeoutError:
                pass
            deadline = self._last_renew + self.step_down_after - time.monotonic()
            try:
                renewed = await asyncio.wait_for(self.try_acquire(), timeout=max(0.01, deadline))
            except kube.KubeError as exc:
                log.warning("could not renew lease %s/%s: %s", self.namespace, self.name, exc.reason)
            except TimeoutError:
                log.warning("could not renew lease %s/%s: no answer in time", self.namespace, self.name)
            else:
                if not renewed:
                    log.error("lost leadership: lease %s/%s taken over", self.namespace, self.name)
                    metrics.LEADER.set(0)
                    return False
            # Stop acting well before anyone else may consider the Lease expired.
            if time.monotonic() - self._last_renew >= self.step_down_after:
                log.error("lost leadership: lease %s/%s not renewed in time", self.namespace, self.name)
                metrics.LEADER.set(0)
                return False
        return True

    async def release(self) -> None:
        """Give the Lease up (clean shutdown), so that a standby takes over without waiting."""
        if self._lease is None:
            return
        path = await kube.object_path(API_VERSION, KIND, self.name, self.namespace)
        for _ in range(3):
            try:
                # Fresh read: a renewal may have landed after our last look.
                lease = await kube.get(
                    API_VERSION, KIND, self.name, self.namespace, request_timeout=self.request_timeout
                )
                if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                    break
                lease["spec"] = {**(lease.get("spec") or {}), "holderIdentity": "", "leaseDurationSeconds": 1}
                await kube.call(
                    "PUT",
                    path,
                    body=lease,
                    content_type="application/json",
                    request_timeout=self.request_timeout,
                )
                metrics.WRITES.labels("update", KIND).inc()
                log.info("released leadership: lease %s/%s", self.namespace, self.name)
                break
            except kube.KubeError as exc:
                if not exc.conflict:
                    log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc.reason)
                    break
        metrics.LEADER.set(0)
