"""`TcpProxy`: a TCP relay on 127.0.0.1 that a test can cut and restore, to take a database away from a server.

    with TcpProxy("127.0.0.1", 5432) as proxy:     # listens on proxy.port, relays to the target
        proxy.cut()        # every relayed connection closed, new ones refused (the port stops listening)
        proxy.stall()      # connections open and accepted, nothing relayed: a server that hangs, a network that drops
    proxy.restore()    # listening again on the same port, relaying as before

A cut is what a database server that stopped looks like to its client: the open connections end and a new
connection is refused at once (ECONNREFUSED). A stall is worse: packets vanish, and only the client's own timeouts
end its wait. Threads, not asyncio: the tests that use it
are synchronous and run the server under test in a subprocess.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from .ccm_server import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()  # every relayed connection's two ends, to close on a cut
        self._listener: socket.socket | None = None
        self._stalled = threading.Event()
        self._acceptor: threading.Thread | None = None

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True, name="tcp-proxy")
        self._acceptor.start()
        return self

    def cut(self) -> None:
        """Stop listening (new connections refused) and close every relayed connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        if self._acceptor is not None:
            self._acceptor.join(5)
            self._acceptor = None
        with self._lock:
            ends, self._sockets = self._sockets, set()
        for end in ends:
            _close(end)

    def stall(self) -> None:
        """Relay nothing more, either way, on open connections and new ones (which are still accepted)."""
        self._stalled.set()

    def restore(self) -> None:
        """Relay again: after a stall, the stalled connections are closed (what they held is lost, as after a
        network that dropped it); after a cut, listen again."""
        if self._stalled.is_set():
            self.cut()
            self._stalled.clear()
        if self._listener is None:
            self.start()

    def stop(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: cut
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while this one was being connected
                    _close(client)
                    _close(server)
                    return
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self._stalled.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._sockets -= {source, sink}
        _close(source)
        _close(sink)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
