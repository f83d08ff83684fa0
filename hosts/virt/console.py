"""Reading a guest's text console (serial or Xen PV console) through libvirt.

The stream goes over the same authenticated libvirt connection as everything else, so it
works for remote hosts too. The event loop thread (runtime.ensure_event_loop, started
before any connection opens) pumps the non-blocking stream.
"""

from __future__ import annotations

import time

import libvirt

from .connection import get_connection
from .errors import translate

NO_DATA = -2


class ConsoleStream:
    """An open console: `read()` returns what arrived since the last call."""

    def __init__(self, uri: str, uuid: str, *, allow_insecure: bool = False) -> None:
        self.uri = uri
        conn = get_connection(uri, allow_insecure=allow_insecure)
        try:
            dom = conn.lookupByUUIDString(uuid)
            self.name = dom.name()
            self.stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError as exc:
            raise translate(exc, uri, action=f"open the console of guest {uuid}") from exc
        self.closed = False

    def read(self) -> bytes:
        chunks = []
        while not self.closed:
            try:
                data = self.stream.recv(65536)
            except libvirt.libvirtError as exc:
                self.closed = True
                raise translate(exc, self.uri, action=f"read the console of '{self.name}'") \
                    from exc
            if data == NO_DATA:
                break
            if not data:  # end of stream: the guest stopped
                self.closed = True
                break
            chunks.append(data)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        try:
            self.stream.send(data)
        except libvirt.libvirtError as exc:
            raise translate(exc, self.uri, action=f"write to the console of '{self.name}'") \
                from exc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.stream.abort()
            except libvirt.libvirtError:
                pass

    def __enter__(self) -> ConsoleStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_console_until(
    uri: str, uuid: str, text: str, timeout: float, *, allow_insecure: bool = False
) -> str:
    """Read the console until `text` appears (returns all output read) or time runs out
    (returns what was read; the caller decides)."""
    output = b""
    deadline = time.monotonic() + timeout
    with ConsoleStream(uri, uuid, allow_insecure=allow_insecure) as console:
        while time.monotonic() < deadline and not console.closed:
            output += console.read()
            if text.encode() in output:
                break
            time.sleep(0.05)
    return output.decode(errors="replace")
