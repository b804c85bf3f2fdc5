"""A real Redis Cluster and a real Sentinel setup for tests and benchmarks, on 127.0.0.1.

Both are built from Debian's ``redis-server`` (Sentinel is the same binary with ``--sentinel``)
and ``redis-cli`` (``--cluster create``), on ephemeral loopback ports, without persistence, and
torn down (processes killed, directories removed) on exit.

- :class:`RedisClusterSetup`: three masters, no replicas, every slot covered; the cluster bus
  port is chosen explicitly (``port + 10000`` may not exist above an ephemeral port).
- :class:`RedisSentinelSetup`: one master, one replica and three Sentinels (quorum 2) with a
  short ``down-after-milliseconds``, so that killing the master fails over within seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
import redis

from tests.support.net import free_port
from tests.support.redis_server import RedisServer, RedisUnavailable
from tests.support.tls import make_self_signed

MASTER_NAME = "sentient-master"
# Sentinel's timings: how long a silent master takes to be declared down, and the failover's bound.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def redis_cli_binary() -> str:
    """Path of redis-cli (Debian's ``redis-tools``, a dependency of ``redis-server``)."""
    path = shutil.which("redis-cli")
    if path is None:
        raise RedisUnavailable("redis-cli not found: install the Debian package `redis-tools`")
    return path


def _wait(predicate: object, what: str, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached after {timeout:.0f}s (last error: {last!r})")


class _Setup:
    """Context manager of a group of servers: started on entry (closed again if that fails), closed on exit."""

    def start(self) -> Self:
        """Start the servers."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the servers and remove their directories."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RedisClusterSetup(_Setup):
    """A three-master Redis Cluster on loopback, optionally with a password and TLS only."""

    def __init__(self, masters: int = 3, *, password: str | None = None, tls: bool = False) -> None:
        """Choose ports now; nothing runs until ``start``.

        ``tls`` serves TLS only (the plain port is off), the cluster bus too, with a self-signed
        certificate whose PEM is :attr:`ca_pem`.
        """
        self.cli = redis_cli_binary()
        self.password = password
        self.servers = [RedisServer(extra_args=self._node_args()) for _ in range(masters)]
        self.ca_path: Path | None = None
        self._cli_auth: list[str] = ["-a", password, "--no-auth-warning"] if password else []
        for server in self.servers:
            if password:
                server.extra_args += ["--requirepass", password, "--masterauth", password]
        if tls:
            cert, key = make_self_signed(self.servers[0].directory / "tls")
            self.ca_path = cert
            self._cli_auth += ["--tls", "--cacert", str(cert)]
            for server in self.servers:
                server.extra_args += [
                    "--port", "0",
                    "--tls-port", str(server.port),
                    "--tls-cert-file", str(cert),
                    "--tls-key-file", str(key),
                    "--tls-ca-cert-file", str(cert),
                    "--tls-auth-clients", "no",
                    "--tls-cluster", "yes",
                    "--tls-replication", "yes",
                ]  # fmt: skip

    @property
    def ca_pem(self) -> str | None:
        """The CA bundle clients need in TLS mode."""
        return self.ca_path.read_text() if self.ca_path is not None else None

    @staticmethod
    def _node_args() -> list[str]:
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(free_port()),
            "--cluster-node-timeout", "2000",
        ]  # fmt: skip

    @property
    def nodes(self) -> list[str]:
        """Seed nodes, ``127.0.0.1:port`` each."""
        return [server.address for server in self.servers]

    def client(self, server: RedisServer) -> redis.Redis:
        """A plain client on one node (the caller closes it)."""
        return redis.Redis(
            port=server.port,
            password=self.password,
            socket_timeout=2,
            ssl=self.ca_path is not None,
            ssl_ca_certs=str(self.ca_path) if self.ca_path is not None else None,
        )

    def start(self) -> RedisClusterSetup:
        """Start every node, assign the slots, wait until every node says the cluster is ok."""
        for server in self.servers:
            server.start()
        subprocess.run(
            [
                self.cli, *self._cli_auth,
                "--cluster", "create", *self.nodes, "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        for server in self.servers:
            with self.client(server) as client:
                _wait(
                    lambda c=client: c.cluster("info")["cluster_state"] == "ok",
                    f"cluster_state:ok on {server.address}",
                    30,
                )
        return self

    def flushall(self) -> None:
        """Empty every master."""
        for server in self.servers:
            with self.client(server) as client:
                client.flushall()

    def keys_per_node(self) -> dict[str, int]:
        """How many keys each master holds (to check that a test spread over the slots)."""
        out: dict[str, int] = {}
        for server in self.servers:
            with self.client(server) as client:
                out[server.address] = int(client.dbsize())
        return out

    def close(self) -> None:
        """Kill every node and remove its directory."""
        for server in self.servers:
            server.close()


class RedisSentinelSetup(_Setup):
    """One master, one replica, three Sentinels watching the master (quorum 2)."""

    def __init__(self, password: str | None = None) -> None:
        """Choose ports now; nothing runs until ``start``. ``password`` protects master and replica."""
        self.password = password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.master = RedisServer(extra_args=auth)
        self.replica = RedisServer(extra_args=[*auth, "--replicaof", "127.0.0.1", str(self.master.port)])
        conf = (
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        if password:
            conf += f"sentinel auth-pass {MASTER_NAME} {password}\n"
        self.sentinels = [RedisServer(extra_args=["--sentinel"], config_text=conf) for _ in range(3)]

    @property
    def sentinel_addresses(self) -> list[str]:
        """``127.0.0.1:port`` of each Sentinel."""
        return [s.address for s in self.sentinels]

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        """A plain client on one Sentinel (the caller closes it)."""
        return redis.Redis(port=self.sentinels[index].port, socket_timeout=2, decode_responses=True)

    def master_address(self) -> tuple[str, int]:
        """The master the first live Sentinel names now."""
        for index, sentinel in enumerate(self.sentinels):
            if not sentinel.running:
                continue
            with self.sentinel_client(index) as client:
                host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return str(host), int(port)
        raise RuntimeError("no Sentinel is running")

    def _settled(self) -> bool:
        for index in range(len(self.sentinels)):
            with self.sentinel_client(index) as client:
                state = client.sentinel_master(MASTER_NAME)
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
        with self.data_client(self.replica) as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    def data_client(self, server: RedisServer) -> redis.Redis:
        """A plain client on the master or the replica (the caller closes it)."""
        return redis.Redis(port=server.port, password=self.password, socket_timeout=2, decode_responses=True)

    def force_failover(self) -> tuple[str, int]:
        """``SENTINEL FAILOVER``: promote the replica without waiting for an outage; returns the old master."""
        address = self.master_address()
        with self.sentinel_client() as client:
            client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        return address

    def start(self) -> RedisSentinelSetup:
        """Start the master, the replica and the Sentinels; wait until they all know each other."""
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        _wait(self._settled, "Sentinels that know each other and the replica", 60)
        return self

    def kill_master(self) -> tuple[str, int]:
        """SIGKILL the current master; returns its address."""
        address = self.master_address()
        for server in (self.master, self.replica):
            if server.port == address[1]:
                server.stop()
        return address

    def wait_for_new_master(self, old: tuple[str, int], timeout: float = 30) -> tuple[str, int]:
        """Block until the Sentinels name a master other than ``old``."""
        _wait(lambda: self.master_address() != old, "a failover", timeout)
        return self.master_address()

    def wait_for_demotion(self, old: tuple[str, int], timeout: float = 30) -> None:
        """Block until the old master, if it still runs, serves as a replica.

        Until then it still takes writes from clients connected to it (they are lost when it
        becomes a replica of the new master: the split brain Sentinel admits).
        """
        server = next((s for s in (self.master, self.replica) if s.port == old[1]), None)
        if server is None or not server.running:
            return

        def demoted() -> bool:
            with self.data_client(server) as client:
                return bool(client.info("replication").get("role") == "slave")

        _wait(demoted, f"the old master {old[0]}:{old[1]} serving as a replica", timeout)

    def close(self) -> None:
        """Kill everything and remove the directories."""
        for server in (*self.sentinels, self.replica, self.master):
            server.close()


@contextlib.contextmanager
def redis_cluster_or_skip() -> Iterator[RedisClusterSetup]:
    """A running cluster for a fixture; skips where redis-server or redis-cli is missing."""
    try:
        setup = RedisClusterSetup()
    except RedisUnavailable as exc:
        pytest.skip(str(exc))
    with setup:
        yield setup


@contextlib.contextmanager
def redis_sentinel_or_skip(password: str | None = None) -> Iterator[RedisSentinelSetup]:
    """A running Sentinel setup for a fixture; skips where redis-server is missing."""
    try:
        setup = RedisSentinelSetup(password)
    except RedisUnavailable as exc:
        pytest.skip(str(exc))
    with setup:
        yield setup
