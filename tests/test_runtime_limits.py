"""Slow and greedy clients against ``python -m agent_runtime`` over real sockets on 127.0.0.1.

Before any authentication: slow headers and bodies are cut off after ``server.limits``'
deadlines, an endless header is refused once it passes ``maxHeaderBytes`` (and costs the
process no memory worth the name), connections over ``maxConnections`` are closed at once,
idle keep-alive connections are closed, a flood of pipelined requests closes its connection,
a client that stops reading its answer is cut off (and its upstream call ends); every refusal is
counted by reason.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_runtime.config import ServerLimits
from agent_runtime.http.limits import MAX_PIPELINED
from agent_runtime.testing import FakeUpstream, wait_until
from tests.support.runtime import (
    RuntimeFiles,
    RuntimeProcess,
    chain_entry,
    default_credentials,
    free_ports,
    make_config,
)

pytestmark = pytest.mark.slow

KEY = "alice-secret-key"
LIMITS = {"headerTimeout": "1s", "bodyTimeout": "1s", "keepAliveTimeout": "1s", "maxConnections": 70}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[RuntimeProcess]:
    tmp_path = tmp_path_factory.mktemp("limits")
    port, metrics_port = free_ports(2)
    config = make_config(
        port=port, metrics_port=metrics_port, server={"limits": LIMITS}, chain=[chain_entry(fake)]
    )
    files = RuntimeFiles(tmp_path, config, default_credentials())
    with RuntimeProcess(files, tmp_path / "runtime.log") as process:
        process.metrics_port = metrics_port  # type: ignore[attr-defined]
        yield process


def connect(runtime: RuntimeProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", runtime.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (or ``timeout``: then what came so far)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data + b"<still open>"
    except ConnectionResetError:
        pass
    return data


def refusals(runtime: RuntimeProcess) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{runtime.metrics_port}/metrics").text  # type: ignore[attr-defined]
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sentient_http_refusals_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_defaults_are_sane() -> None:
    limits = ServerLimits()
    assert (limits.header_timeout, limits.body_timeout, limits.keep_alive_timeout) == ("10s", "30s", "5s")
    assert (limits.max_header_bytes, limits.max_connections) == (65536, 1024)
    with pytest.raises(ValueError, match="headerTimeout must be greater than 0s"):
        ServerLimits.model_validate({"headerTimeout": "0s"})


def test_ordinary_requests_still_work(runtime: RuntimeProcess) -> None:
    with httpx.Client(base_url=runtime.url, headers={"x-api-key": KEY}) as client:
        assert client.get("/live").status_code == 200
        big_but_fine = {"x-filler": "a" * 30_000}
        assert client.get("/v1/models", headers=big_but_fine).status_code == 200
        time.sleep(0.3)  # well inside the keep-alive time: the same connection serves again
        assert client.get("/v1/models").status_code == 200


def test_a_body_arriving_with_its_headers_is_no_big_header(runtime: RuntimeProcess) -> None:
    # Headers and a 100 KB body in one write (one read, whole request): only header bytes count.
    body = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * 100_000 + b'"}]}'
    sock = connect(runtime)
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    answer = read_until_closed(sock, timeout=10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:60]


def test_big_bodies_on_a_kept_alive_connection_are_no_headers(runtime: RuntimeProcess) -> None:
    # Requests with 100-600 KB bodies, one after another on one connection: only header bytes count.
    with httpx.Client(base_url=runtime.url, headers={"x-api-key": KEY}) as client:
        for size in (600_000, 300_000, 100_000, 543_000, 70_000, 250_000):
            body = {"model": "m", "messages": [{"role": "user", "content": "a" * size}], "n": 2}
            assert client.post("/v1/chat/completions", json=body).status_code == 422


def test_sixty_slow_header_connections_are_closed_after_the_bound(runtime: RuntimeProcess) -> None:
    before = refusals(runtime).get("header_timeout", 0)
    socks = [connect(runtime) for _ in range(60)]
    started = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:
        # Half of them send a header line every 0.2 s (a slowloris), half send nothing at all.
        for sock in socks[:30]:
            sock.sendall(b"POST /assist HTTP/1.1\r\nHost: x\r\n")
        while not stop.wait(0.2):
            for sock in socks[:30]:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    deadline = started + 8
    try:
        answers = [read_until_closed(sock, timeout=max(0.1, deadline - time.monotonic())) for sock in socks]
    finally:
        stop.set()
        sender.join(5)
        for sock in socks:
            sock.close()
    elapsed = time.monotonic() - started
    print(f"60 slow-header connections closed {elapsed:.2f} s after they opened (headerTimeout 1s)")
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), {a[:40] for a in answers}
    assert refusals(runtime)["header_timeout"] - before == 60


def test_a_slow_body_is_cut_off(runtime: RuntimeProcess) -> None:
    before = refusals(runtime).get("body_timeout", 0)
    sock = connect(runtime)
    head = (
        f"POST /assist HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"query"')
    started = time.monotonic()
    answer = read_until_closed(sock, timeout=10)
    sock.close()
    print(f"slow body cut off after {time.monotonic() - started:.2f} s (bodyTimeout 1s)")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert refusals(runtime)["body_timeout"] - before == 1


def test_idle_keep_alive_connection_is_closed(runtime: RuntimeProcess) -> None:
    sock = connect(runtime)
    sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    answer = read_until_closed(sock, timeout=10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and not answer.endswith(b"<still open>")
    assert 0.8 < time.monotonic() - started < 5


def test_connections_over_the_bound_are_closed_at_once(runtime: RuntimeProcess) -> None:
    before = refusals(runtime).get("too_many_connections", 0)
    held = [connect(runtime) for _ in range(70)]
    try:
        time.sleep(0.2)  # every one of them accepted
        extra = connect(runtime)
        answer = read_until_closed(extra, timeout=0.9)  # before the header deadline of the held ones
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:60]
    finally:
        for sock in held:
            sock.close()
    assert refusals(runtime)["too_many_connections"] - before == 1


def test_a_25_mb_unfinished_header_is_refused_early_without_memory_growth(runtime: RuntimeProcess) -> None:
    assert runtime.proc is not None
    before_count = refusals(runtime).get("header_too_large", 0)
    rss_before = rss_kib(runtime.proc.pid)
    chunk = b"a" * 65536
    results: list[tuple[int, bytes]] = []

    def send_endless_header() -> None:
        sock = connect(runtime)
        sent = 0
        try:
            sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < 25 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        results.append((sent, read_until_closed(sock, timeout=5)))
        sock.close()

    senders = [threading.Thread(target=send_endless_header) for _ in range(4)]
    peak = rss_before
    for sender in senders:
        sender.start()
    while any(sender.is_alive() for sender in senders):
        peak = max(peak, rss_kib(runtime.proc.pid))
        time.sleep(0.01)
    growth_mib = (peak - rss_before) / 1024
    print(
        f"4 x 25 MB unfinished header: refused after {max(s for s, _ in results) / 1024:.0f} KiB sent; "
        f"runtime RSS {rss_before / 1024:.1f} MiB -> peak {peak / 1024:.1f} MiB (+{growth_mib:.1f} MiB)"
    )
    # Refused early: the client could not push (anywhere near) 25 MB into the connection.
    assert all(sent < 4 * 1024 * 1024 for sent, _ in results)
    assert all(answer.startswith(b"HTTP/1.1 431 ") or answer == b"" for _, answer in results)
    assert refusals(runtime)["header_too_large"] - before_count == 4
    assert growth_mib < 8


def test_a_header_over_the_bound_is_refused_even_when_it_arrives_in_one_read(runtime: RuntimeProcess) -> None:
    before = refusals(runtime).get("header_too_large", 0)
    sock = connect(runtime)
    # 100 KB of headers, whole, in one write: more than maxHeaderBytes (64 KiB) however it is read.
    sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    answer = read_until_closed(sock, timeout=5)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:60]
    assert refusals(runtime)["header_too_large"] - before == 1


def test_a_later_request_on_a_kept_alive_connection_gets_its_408(runtime: RuntimeProcess) -> None:
    sock = connect(runtime)
    sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while b'"alive"' not in first:
        first += sock.recv(65536)
    # The second request's headers never end: it is answered 408 like a first request would be.
    sock.sendall(b"GET /live HTTP/1.1\r\nHo")
    answer = read_until_closed(sock, timeout=5)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]


def test_a_few_pipelined_requests_are_all_answered_in_order(runtime: RuntimeProcess) -> None:
    sock = connect(runtime)
    paths = ["/live", "/ready", "/live", "/health", "/live"]
    sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths[:-1]))
    sock.sendall(f"GET {paths[-1]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = read_until_closed(sock, timeout=5)
    sock.close()
    assert answer.count(b"HTTP/1.1 200 OK") == len(paths), answer[-200:]
    bodies = [part.split(b"\r\n\r\n", 1)[1][:12] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies[0].startswith(b'{"status":"a') and bodies[1].startswith(b'{"ready"')


def test_a_pipelined_flood_closes_its_connection_without_memory_growth(runtime: RuntimeProcess) -> None:
    assert runtime.proc is not None
    before = refusals(runtime).get("too_many_pipelined", 0)
    rss_before = rss_kib(runtime.proc.pid)
    # 256 KiB of tiny requests per write, answers read as they come: before the bound, uvicorn
    # queued every request of each read (thousands), hundreds of MB within seconds.
    flood = b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n" * 8000
    sock = connect(runtime)
    answered: list[int] = []

    def read() -> None:
        answered.append(read_until_closed(sock, timeout=5).count(b"HTTP/1.1 200"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            sock.sendall(flood)
            sent += len(flood)
    except OSError:
        pass
    reader.join(10)
    rss_after = rss_kib(runtime.proc.pid)
    sock.close()
    growth_mib = (rss_after - rss_before) / 1024
    print(f"pipelined flood: {sent / 1024:.0f} KiB sent, {answered} answered, RSS +{growth_mib:.1f} MiB")
    assert refusals(runtime)["too_many_pipelined"] - before == 1
    assert answered and answered[0] <= MAX_PIPELINED + 1
    assert growth_mib < 20


def in_flight(runtime: RuntimeProcess) -> int:
    return int(httpx.get(f"{runtime.url}/health").json()["in_flight"])


def test_a_client_that_stops_reading_is_cut_off_and_its_request_ends(
    runtime: RuntimeProcess, fake: FakeUpstream
) -> None:
    # An answer of 50 MB (50,000 words of 1,000 letters): far more than the sockets' buffers hold.
    fake.state.configure({"latency": 0.0, "tokens": 50_000})
    before = refusals(runtime).get("send_timeout", 0)
    sock = socket.socket()
    # A small receive window, so that the answer backs up into the server soon.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", runtime.port))
    word = "w" * 1000
    body = f'{{"model": "m", "stream": true, "messages": [{{"role": "user", "content": "{word}"}}]}}'
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    try:
        sock.sendall((head + body).encode())
        assert sock.recv(15) == b"HTTP/1.1 200 OK"
        assert in_flight(runtime) == 1
        # Then it reads nothing more: the body deadline (1 s) after the server's buffer filled,
        # the connection is closed and the request (with its upstream call) ends, while the
        # client still holds its end open.
        started = time.monotonic()
        assert wait_until(lambda: in_flight(runtime) == 0, timeout=10)
        print(f"a client that stopped reading was cut off after {time.monotonic() - started:.2f} s")
    finally:
        sock.close()
        fake.state.configure({"tokens": None})
    assert refusals(runtime)["send_timeout"] - before == 1
