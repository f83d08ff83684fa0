"""uvicorn's httptools protocol, keeping a request body's pieces as they arrived.

uvicorn (0.54) gathers the body pieces httptools hands it in a bytearray and copies that
into a new bytes object for every ASGI ``receive``: two more copies of every uploaded byte
in the web process, on top of the socket read and httptools' own. For a disk image that
was a third of the web process's CPU time (measured with perf: memmove above the kernel's
copies into the page cache). Here the pieces are kept in a list and handed over as they
are: a piece taken before the next arrives (the usual case) is never copied.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class PieceBody:
    """The body received since the last ``receive``, as uvicorn's cycle uses it:
    ``+=`` a piece, ``len()``, ``bytes()``."""

    __slots__ = ("pieces", "size")

    def __init__(self, start: bytes | bytearray = b"") -> None:
        self.pieces: list[bytes] = [bytes(start)] if start else []
        self.size = len(start)

    def __iadd__(self, piece: bytes) -> PieceBody:
        if piece:
            self.pieces.append(piece)
            self.size += len(piece)
        return self

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        if len(self.pieces) == 1:
            return self.pieces[0]
        return b"".join(self.pieces)


class PieceBodyProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose request cycles collect the body in a PieceBody (uvicorn
    resets the cycle's body to a bytearray after each receive: it is swapped back here
    before the next piece is added)."""

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.body, PieceBody):
            cycle.body = PieceBody(cycle.body)  # type: ignore[assignment]
        super().on_body(body)
