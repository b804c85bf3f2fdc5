"""A TCP proxy in front of a real server that can be frozen, cut and stopped (for fault tests).

It forwards bytes untouched (so TLS to the kube-apiserver goes through as it is). Faults:

- :meth:`TCPProxy.freeze`: connections stay open but no byte moves in either direction, and new
  connections are accepted but not served: an apiserver that stops answering;
- :meth:`TCPProxy.thaw`: bytes move again (what was held is delivered);
- :meth:`TCPProxy.cut`: every open connection is closed at once (a reset of the network path);
- :meth:`TCPProxy.refuse`: the listening socket is closed, so connections are refused (an
  apiserver that is down); :meth:`TCPProxy.accept` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType


class TCPProxy:
    """``with TCPProxy(("127.0.0.1", 6443)) as proxy: ... proxy.port ...``."""

    def __init__(self, upstream: tuple[str, int], port: int = 0) -> None:
        self.upstream = upstream
        self._frozen = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.port = port
        self.accept()

    # ------------------------------------------------------------------ faults

    def freeze(self) -> None:
        """Stop moving bytes (connections stay open, new ones hang)."""
        self._frozen.set()

    def thaw(self) -> None:
        """Move bytes again."""
        self._frozen.clear()

    def cut(self) -> None:
        """Close every open connection."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for client, server in pairs:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def refuse(self) -> None:
        """Stop listening (new connections are refused) and close the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
        self.cut()

    def accept(self) -> None:
        """Listen (again) on :attr:`port` (nothing happens when listening already)."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True, name="tcp-proxy")
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------ plumbing

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopped.is_set() and self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True, name="tcp-proxy-conn").start()

    def _serve(self, client: socket.socket) -> None:
        while self._frozen.is_set() and not self._stopped.is_set():
            self._stopped.wait(0.05)  # a frozen apiserver does not even answer the TLS handshake
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        pair = (client, server)
        with self._lock:
            self._pairs.add(pair)
        try:
            self._pump(client, server)
        finally:
            with self._lock:
                self._pairs.discard(pair)
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        while not self._stopped.is_set():
            if self._frozen.is_set():
                self._stopped.wait(0.05)
                continue
            try:
                readable, _, _ = select.select(list(peers), [], [], 0.1)
            except (OSError, ValueError):
                return
            for sock in readable:
                if self._frozen.is_set():
                    break  # frozen between select and recv: leave the bytes where they are
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                try:
                    peers[sock].sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        """Stop the proxy and close everything."""
        self._stopped.set()
        self.refuse()

    def __enter__(self) -> TCPProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
