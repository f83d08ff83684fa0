"""xenweb.streamed_body without a server: which requests get a streamed body, and how the
body goes from ASGI messages to the view's reads (blocks, flow control, a dropped client).
The live suites (tests/storage/test_streamed_upload_live.py) run it under uvicorn."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from xenweb import streamed_body
from xenweb.streamed_body import StreamedBody, wants_streamed_body


def http(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path}


def test_only_the_volume_upload_streams_its_body() -> None:
    assert wants_streamed_body(http("PUT", "/api/v1/volumes/7/content/"))
    assert not wants_streamed_body(http("GET", "/api/v1/volumes/7/content/"))
    assert not wants_streamed_body(http("POST", "/api/v1/volumes/7/resize/"))
    assert not wants_streamed_body(http("PUT", "/api/v1/volumes/7/"))
    assert not wants_streamed_body(http("PUT", "/no/such/page/"))
    assert not wants_streamed_body({"type": "websocket", "path": "/ws/events/"})


async def feed(messages: list[dict[str, Any]], read: Any) -> tuple[Any, list[int]]:
    """Serve `messages` as `receive` and run `read(body)` in a thread, like a view."""
    handed: list[int] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)

    async def receive() -> dict[str, Any]:
        message = await queue.get()
        handed.append(len(message.get("body", b"")))
        return message

    body = StreamedBody(receive, asyncio.get_running_loop())
    try:
        result = await asyncio.to_thread(read, body)
    finally:
        body.close()
    return result, handed


def read_all_pieces(body: StreamedBody) -> list[bytes]:
    pieces = []
    while piece := body.read(4 * streamed_body.BLOCK):
        pieces.append(piece)
    return pieces


def test_pieces_are_gathered_in_blocks_and_read_in_order() -> None:
    piece = 256 * 1024
    messages = [{"type": "http.request", "body": bytes([n]) * piece, "more_body": True}
                for n in range(9)] + [{"type": "http.request", "body": b"end"}]
    pieces, _ = asyncio.run(feed(messages, read_all_pieces))
    assert b"".join(pieces) == b"".join(m["body"] for m in messages)
    assert [len(p) for p in pieces] == [4 * piece, 4 * piece, piece + 3]


def test_pieces_can_be_taken_as_they_arrived() -> None:
    """read_piece() hands over the web server's pieces themselves (no join, no copy), and
    picks up after what read() left of a block."""
    piece = 256 * 1024
    messages = [{"type": "http.request", "body": bytes([n]) * piece, "more_body": True}
                for n in range(6)] + [{"type": "http.request", "body": b"end"}]

    def mixed(body: StreamedBody) -> list[bytes]:
        taken = [body.read(10)]  # joins the first block, takes 10 bytes
        while piece_read := body.read_piece():
            taken.append(piece_read)
        return taken

    taken, _ = asyncio.run(feed(messages, mixed))
    assert b"".join(taken) == b"".join(m["body"] for m in messages)
    assert [len(p) for p in taken] == [10, 4 * piece - 10, piece, piece, 3]
    assert taken[2] is messages[4]["body"]  # the very object the server handed over


def test_nothing_is_received_before_the_view_reads() -> None:
    messages = [{"type": "http.request", "body": b"x" * 10, "more_body": False}]
    _, handed = asyncio.run(feed(messages, lambda body: None))
    assert handed == []


def test_reading_is_held_back_while_the_view_is_slow() -> None:
    """Flow control: with the view not reading, at most DEPTH blocks are taken."""
    block = streamed_body.BLOCK
    messages = [{"type": "http.request", "body": b"y" * block, "more_body": True}
                for _ in range(20)]
    gate = threading.Event()

    def slow_view(body: StreamedBody) -> int:
        body.read(1)  # start receiving, then stall
        gate.wait(timeout=60)
        return 0

    async def scenario() -> list[int]:
        handed: list[int] = []
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in messages:
            queue.put_nowait(message)

        async def receive() -> dict[str, Any]:
            message = await queue.get()
            handed.append(len(message["body"]))
            return message

        body = StreamedBody(receive, asyncio.get_running_loop())
        view = asyncio.create_task(asyncio.to_thread(slow_view, body))
        for _ in range(100):  # give the pump every chance to take more than it may
            await asyncio.sleep(0.01)
        taken = list(handed)
        gate.set()
        await view
        body.close()
        return taken

    taken = asyncio.run(scenario())
    # One block read by the view, DEPTH waiting for it, one more waiting for a place and
    # the message that closed that one: then the pump stops receiving.
    assert 2 <= len(taken) <= streamed_body.DEPTH + 3


def test_a_client_that_goes_away_is_a_connection_error_for_the_view() -> None:
    messages = [{"type": "http.request", "body": b"z" * 1000, "more_body": True},
                {"type": "http.disconnect"}]
    with pytest.raises(ConnectionAbortedError, match="went away after 1000 bytes"):
        asyncio.run(feed(messages, read_all_pieces))
