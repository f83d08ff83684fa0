"""Reading a guest's text console (serial or Xen PV console) through libvirt.

The stream goes over the same authenticated libvirt connection as everything else, so it
works for remote hosts too. The event loop thread (runtime.ensure_event_loop, started
before any connection opens) pumps the non-blocking stream.

libvirt allows one session per console. ``force`` takes it from whoever has it (another
tab, ``virsh console``), which is then cut off; without it an open console is refused with
``ConsoleInUse``. Only a session that may type forces: a read-only viewer never takes a
console over.
"""

from __future__ import annotations

import time

import libvirt

from .connection import get_connection
from .errors import VirtOperationError, translate
from .target import VirtTarget

NO_DATA = -2
# virchrdev.c, the same for the QEMU and libxl drivers.
IN_USE_TEXT = "Active console session exists"


class ConsoleInUse(VirtOperationError):
    """Another session has the console, and this one did not force."""


def _in_use(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED \
        and IN_USE_TEXT in (exc.get_error_message() or "")


class ConsoleStream:
    """An open console: `read()` returns what arrived since the last call."""

    def __init__(self, target: VirtTarget, uuid: str, *, force: bool = False) -> None:
        self.uri = target.uri
        conn = get_connection(target)
        try:
            dom = conn.lookupByUUIDString(uuid)
            self.name = dom.name()
            self.stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
        except libvirt.libvirtError as exc:
            if _in_use(exc):
                raise ConsoleInUse(
                    f"The console of guest {uuid} is in use by another session.",
                    uri=target.uri, code=exc.get_error_code(), detail=exc.get_error_message(),
                ) from exc
            raise translate(exc, target.uri, action=f"open the console of guest {uuid}") from exc
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
    target: VirtTarget, uuid: str, text: str, timeout: float, *,
    force: bool = True,
) -> str:
    """Read the console until `text` appears (returns all output read) or time runs out
    (returns what was read; the caller decides). Used by the lab and tests, which own
    their guests' consoles: it forces by default."""
    output = b""
    deadline = time.monotonic() + timeout
    with ConsoleStream(target, uuid, force=force) as console:
        while time.monotonic() < deadline and not console.closed:
            output += console.read()
            if text.encode() in output:
                break
            time.sleep(0.05)
    return output.decode(errors="replace")
