"""Request bodies handed to a view as they arrive, for views that declare they want that.

Django's ASGI handler reads a whole request body (into a temporary file) before the view
runs: for a disk image that means holding many GiB on the appliance's disk before a byte
reaches the hypervisor. A view method marked ``@streams_body`` instead gets a request
whose body is read from the connection while the view reads it. Everything else stays
Django's: middleware, DRF authentication (session + CSRF, or token), permissions, the
view's own checks and its response. The body is not touched until the view reads it, so a
refused request (401, 403, 404, 409...) never has its body read at all.

Flow control: at most `DEPTH` blocks of `BLOCK` bytes wait between the connection and
the view; while they are full, no more is received, the web server (uvicorn) stops reading
the socket, and TCP slows the client down to the view's pace.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.urls import Resolver404, resolve

# The body reaches the view in blocks of at most BLOCK bytes (uvicorn's pieces, up to
# 64 KiB plus one socket read, gathered), DEPTH blocks waiting at most.
BLOCK = 1024 * 1024
DEPTH = 4

Scope = dict[str, Any]
Receive = Callable[[], Any]


def streams_body(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view (or a DRF viewset action) as reading its request body as a stream."""
    method.streams_body = True  # type: ignore[attr-defined]
    return method


def wants_streamed_body(scope: Scope) -> bool:
    """Does the view this HTTP request goes to read its body as a stream?"""
    if scope.get("type") != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
        return False
    try:
        match = resolve(scope["path"])
    except Resolver404:
        return False
    view = match.func
    actions = getattr(view, "actions", None)  # a DRF viewset: method -> action name
    if actions is not None:
        name = actions.get(scope["method"].lower())
        view = getattr(getattr(view, "cls", None), name, None) if name else None
    return bool(getattr(view, "streams_body", False))


class _End:
    def __init__(self, error: str = "") -> None:
        self.error = error


class StreamedBody:
    """The request body between the event loop (which receives it) and the view's thread
    (which reads it like a file). Also the `receive` that Django's handler listens on for
    a disconnect, so that only the pump ever reads the connection."""

    def __init__(self, receive: Receive, loop: asyncio.AbstractEventLoop) -> None:
        self._receive = receive
        self._loop = loop
        self._blocks: collections.deque[list[bytes] | _End] = collections.deque()
        self._ready = threading.Semaphore(0)  # blocks waiting, for the view's thread
        self._space = asyncio.Semaphore(DEPTH)  # free places, for the event loop
        self._block = b""  # what read() takes from, once the pieces have been joined
        self._offset = 0
        self._pieces: list[bytes] = []  # the current block as it arrived
        self._next_piece = 0
        self._pump: asyncio.Task[None] | None = None
        self._pump_started = threading.Event()
        self._closed = False
        self.received = 0
        self.ended: _End | None = None

    # -- the event loop's side -------------------------------------------------------------
    def _start_pump(self) -> None:
        if self._pump is None and not self._closed:
            self._pump = self._loop.create_task(self._run_pump())

    async def _run_pump(self) -> None:
        end = _End("The connection broke off.")
        parts: list[bytes] = []
        size = 0
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    end = _End(f"The client went away after {self.received} bytes.")
                    break
                body = message.get("body", b"")
                more = message.get("more_body", False)
                if parts and size + len(body) > BLOCK:
                    await self._hand_over(parts)
                    parts, size = [], 0
                if body:
                    parts.append(body)
                    size += len(body)
                    self.received += len(body)
                if not more:
                    if parts:
                        await self._hand_over(parts)
                    end = _End()
                    break
        finally:
            self._put(end)

    async def _hand_over(self, parts: list[bytes]) -> None:
        """One block of about BLOCK bytes for the view: waking its thread once per block,
        not per piece, matters on a busy machine. The pieces are joined only if the view
        asks for bytes with read(); read_piece() takes them as they are."""
        await self._space.acquire()
        self._put(parts)

    def _put(self, item: list[bytes] | _End) -> None:
        self._blocks.append(item)
        self._ready.release()

    async def __call__(self) -> dict[str, Any]:
        """`receive` for Django's disconnect listener, which cancels the view when the
        client goes away: here it never hears of that. A view reading a streamed body
        learns it from the body (ConnectionAbortedError) and finishes what it started;
        cancelled half-way (a job's progress broadcast on the event loop got the
        CancelledError) it left its job running and a volume half-written. Django stops
        this wait once the view has answered (to nobody, if the client is gone)."""
        await self._loop.create_future()
        return {"type": "http.disconnect"}

    def close(self) -> None:
        """The request is over (Django closes its body file): stop receiving."""
        self._closed = True
        if self._pump is not None and not self._pump.done():
            if self._loop.is_running() and _on_loop(self._loop):
                self._pump.cancel()
            else:
                self._loop.call_soon_threadsafe(self._pump.cancel)

    # -- the view's side (a file-like object) ----------------------------------------------
    def _next_block(self) -> bool:
        """Wait for the next block; False at the end of the body. A body that broke off
        raises ConnectionAbortedError, as a file read on a dropped connection would."""
        if self.ended is not None:
            if self.ended.error:
                raise ConnectionAbortedError(self.ended.error)
            return False
        if not self._pump_started.is_set():
            self._pump_started.set()
            self._loop.call_soon_threadsafe(self._start_pump)
        while not self._ready.acquire(timeout=1.0):
            if self._closed:
                self.ended = _End("The request was closed before its body was read.")
                raise ConnectionAbortedError(self.ended.error)
        item = self._blocks.popleft()
        if isinstance(item, _End):
            self.ended = item
            return self._next_block()
        self._loop.call_soon_threadsafe(self._space.release)
        self._pieces, self._next_piece = item, 0
        self._block, self._offset = b"", 0
        return True

    def _join_pieces(self) -> None:
        """The current block's unread pieces as read()'s one bytes object."""
        left = self._pieces[self._next_piece:]
        if left:
            self._block = left[0] if len(left) == 1 else b"".join(left)
            self._offset = 0
        self._pieces, self._next_piece = [], 0

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes, at most one block (all that is left when `size` < 0);
        b"" at the end. A whole block is returned as it came, not copied."""
        self._join_pieces()
        if size is None or size < 0:
            out = [self._block[self._offset:]]
            while self._next_block():
                self._join_pieces()
                out.append(self._block)
            self._block, self._offset = b"", 0
            return b"".join(out)
        if self._offset >= len(self._block):
            if not self._next_block():
                return b""
            self._join_pieces()
        block, start = self._block, self._offset
        end = min(len(block), start + size)
        self._offset = end
        return block if start == 0 and end == len(block) else block[start:end]

    def read_piece(self) -> bytes:
        """The next piece of the body as the web server received it (up to a few hundred
        KiB; never copied here); b"" at the end."""
        if self._offset < len(self._block):  # what read() left of its block
            piece = self._block[self._offset:] if self._offset else self._block
            self._block, self._offset = b"", 0
            return piece
        while self._next_piece >= len(self._pieces):
            if not self._next_block():
                return b""
        piece = self._pieces[self._next_piece]
        self._next_piece += 1
        return piece

    def readable(self) -> bool:
        return True


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class StreamingBodyASGIHandler(ASGIHandler):
    """Django's ASGI handler, with streamed bodies for the views that ask for them. Its
    response pieces may be up to 4 MiB (Django's 64 KiB would cut, and so copy, each
    block of a volume download into many)."""

    chunk_size = 4 * 1024 * 1024

    async def handle(self, scope: Scope, receive: Receive, send: Any) -> None:
        if not wants_streamed_body(scope):
            await super().handle(scope, receive, send)
            return
        body = StreamedBody(receive, asyncio.get_running_loop())
        try:
            await super().handle(scope, body, send)
        finally:
            body.close()

    def create_request(self, scope: Scope, body_file: Any) -> Any:
        """The request, with `streamed_body` (the StreamedBody, or None) for the view."""
        request, error = super().create_request(scope, body_file)
        if request is not None:
            request.streamed_body = body_file if isinstance(body_file, StreamedBody) else None
        return request, error

    async def read_body(self, receive: Receive) -> Any:
        if isinstance(receive, StreamedBody):
            return receive
        return await super().read_body(receive)
