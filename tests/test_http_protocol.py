"""xenweb.http_protocol: the body pieces reach the application whole and in order, through a
real uvicorn server on a socket (pieces sent slowly and in bursts), and without copies."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from typing import Any

import uvicorn

from xenweb.http_protocol import PieceBody, PieceBodyProtocol
from xenweb.webserver import options


def test_piece_body_hands_a_lone_piece_over_uncopied() -> None:
    body = PieceBody()
    piece = os.urandom(1000)
    body += piece
    body += b""
    assert len(body) == 1000 and bytes(body) is piece
    body += b"more"
    assert bytes(body) == piece + b"more" and len(body) == 1004
    assert bytes(PieceBody(bytearray(b"left over"))) == b"left over"


def test_the_web_process_uses_it() -> None:
    assert options("127.0.0.1", 8000)["http"] == "xenweb.http_protocol:PieceBodyProtocol"


async def _digest_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    digest, size, pieces = hashlib.sha256(), 0, 0
    while True:
        message = await receive()
        digest.update(message.get("body", b""))
        size += len(message.get("body", b""))
        pieces += 1
        if not message.get("more_body"):
            break
    reply = f"{size} {digest.hexdigest()} {pieces}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(reply)).encode())]})
    await send({"type": "http.response.body", "body": reply})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _put(port: int, parts: list[bytes], pause: float) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    size = sum(len(part) for part in parts)
    writer.write(f"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode())
    for part in parts:
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(pause)
    reply = await _reply(reader)
    writer.close()
    return reply


def test_bodies_arrive_whole_through_a_real_server() -> None:
    async def run(port: int) -> list[tuple[bytes, bytes]]:
        cases = [[os.urandom(700) for _ in range(40)],  # small pieces, one by one
                 [os.urandom(3 * 1024 * 1024)],  # one big write: many socket reads
                 [b""]]  # an empty body
        results = []
        for parts, pause in zip(cases, (0.002, 0, 0), strict=True):
            reply = await _put(port, parts, pause)
            results.append((reply, _expected(b"".join(parts))))
        return results

    for reply, expected in asyncio.run(_serving(run)):
        assert reply.rsplit(b" ", 1)[0] == expected


async def _serving(run: Any) -> Any:
    port = _free_port()
    config = uvicorn.Config(_digest_app, host="127.0.0.1", port=port, lifespan="off",
                            http=PieceBodyProtocol, log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        return await run(port)
    finally:
        server.should_exit = True
        await serving


async def _reply(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


def _expected(body: bytes) -> bytes:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


def test_requests_behind_a_body_on_one_connection() -> None:
    """The request pipelined right behind a body (in the same socket read), a chunked
    body and a body-less request after it, on one keep-alive connection."""
    first, second = os.urandom(200_000), os.urandom(5000)

    async def run(port: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"PUT /a HTTP/1.1\r\nHost: t\r\nContent-Length: {len(first)}\r\n\r\n"
                     .encode() + first[:100])
        await writer.drain()
        await asyncio.sleep(0.05)  # the rest comes in later reads
        writer.write(first[100:] + f"PUT /b HTTP/1.1\r\nHost: t\r\nContent-Length: "
                     f"{len(second)}\r\n\r\n".encode() + second)
        await writer.drain()
        replies = [await _reply(reader), await _reply(reader)]
        writer.write(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\nGET /d HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        replies += [await _reply(reader), await _reply(reader)]
        writer.close()
        return replies

    replies = asyncio.run(_serving(run))
    assert [reply.rsplit(b" ", 1)[0] for reply in replies] == [
        _expected(first), _expected(second), _expected(b"hello"), _expected(b"")]
