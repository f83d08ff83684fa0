"""The byte pipe from the VNC proxy to the guest's VNC server: a TCP or UNIX socket, or an
``ssh -W`` subprocess whose stdin/stdout are the stream (its stderr kept for the error
message)."""

from __future__ import annotations

import asyncio
import contextlib

from guests.console.route import CONNECT_TIMEOUT, Route
from guests.console.sessions import GuestSessionTarget

CHUNK = 256 * 1024
STDERR_KEEP = 4096


class Tunnel:
    """A byte stream to the VNC server: a socket, or an ssh subprocess's stdin/stdout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None,
                 process: asyncio.subprocess.Process | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.process = process
        self.stderr = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None
        if process is not None and process.stderr is not None:
            self._stderr_task = asyncio.create_task(self._collect(process.stderr))

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(1024):
            self.stderr += chunk
            del self.stderr[:-STDERR_KEEP]

    async def write(self, data: bytes) -> None:
        if self.writer is not None:
            self.writer.write(data)
            await self.writer.drain()
        elif self.process is not None and self.process.stdin is not None:
            self.process.stdin.write(data)
            await self.process.stdin.drain()

    async def failure(self) -> str:
        """What ssh said about its end (waits a moment for its last words), or ''."""
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 2.0)
        lines = [line.strip() for line in self.stderr.decode(errors="replace").splitlines()]
        return "; ".join(line for line in lines if line)[-500:]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        process = self.process
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 5.0)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task


async def open_tunnel(target: GuestSessionTarget, route: Route) -> Tunnel:
    """Connect to the VNC server along ``route`` (raises OSError when it cannot)."""
    if route.kind == "ssh":
        process = await asyncio.create_subprocess_exec(
            *route.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        assert process.stdout is not None  # noqa: S101 (PIPE)
        return Tunnel(process.stdout, None, process)
    if route.kind == "unix":
        opening = asyncio.open_unix_connection(route.address, limit=CHUNK)
    else:
        opening = asyncio.open_connection(route.address, route.port, limit=CHUNK)
    reader, writer = await asyncio.wait_for(opening, CONNECT_TIMEOUT)
    return Tunnel(reader, writer)
