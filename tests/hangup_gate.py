"""A TCP port that hangs up on the first connections, as sshd does on connections beyond its
MaxStartups, and passes later ones through to a real server."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

CHUNK = 65536


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (sink, source):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HangUpGate:
    """Listens on 127.0.0.1:``port``; closes the first ``hang_ups`` connections at once and
    connects later ones to ``target`` (without a target it closes every connection).
    ``accepted`` counts the connections it took."""

    def __init__(self, hang_ups: int, target: tuple[str, int] | None = None) -> None:
        self.hang_ups = hang_ups
        self.target = target
        self.accepted = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> HangUpGate:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        except OSError:
            pass
        self._server.close()
        for sock in self._sockets:
            sock.close()
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.hang_ups or self.target is None:
                client.close()
                continue
            upstream = socket.create_connection(self.target, timeout=30)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()
