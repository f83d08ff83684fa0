"""L1: a read-only viewer never takes a console over from a session that may type.

libvirt's test driver has no consoles, so here the consumer runs against the console fake
of tests/test_console_access.py, extended with libvirt's one-session rule (a second open
without FORCE is refused with libvirt's own error, which ConsoleStream turns into
ConsoleInUse; with FORCE the first session's stream fails). The real rule on a real QEMU
host: tests/lab/test_console_takeover_lab.py. The VNC side (viewers' ClientInit forced to
*shared*): tests/test_vnc_access.py and tests/security/test_console_takeover.py below.
"""

from __future__ import annotations

from typing import Any

import libvirt
import pytest
from django.test import Client

from guests.console import text_consumer
from guests.console.rfb import ViewerInputFilter
from guests.models import Guest
from hosts.virt import HostUnreachable, VirtTarget
from hosts.virt.console import IN_USE_TEXT, ConsoleInUse, ConsoleStream
from tests.test_console_access import (  # noqa: F401 (fixtures)
    FakeConsole,
    _closed_with,
    _next_json,
    _open,
    _until,
    fake_libvirt,
    guest,
)
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db(transaction=True)


class OneSessionConsole(FakeConsole):
    """libvirt's rule: one session per console; FORCE cuts the holder off."""

    holder: FakeConsole | None = None

    def __init__(self, target: VirtTarget, uuid: str, *, force: bool = False) -> None:
        holder = OneSessionConsole.holder
        if holder is not None and not holder.closed:
            if not force:
                raise ConsoleInUse(f"The console of guest {uuid} is in use by another "
                                   "session.")
            holder.feed(error=HostUnreachable("stream had I/O failure"))
        super().__init__(target, uuid, force=force)
        OneSessionConsole.holder = self


@pytest.fixture
def one_session(fake_libvirt: dict[str, Any], monkeypatch: pytest.MonkeyPatch  # noqa: F811
                ) -> dict[str, Any]:
    OneSessionConsole.holder = None
    monkeypatch.setattr(text_consumer, "ConsoleStream", OneSessionConsole)
    return fake_libvirt


@pytest.mark.asyncio
async def test_a_viewer_does_not_take_the_operators_console(
    guest: Guest, operator_client: Client, viewer_client: Client,  # noqa: F811
    one_session: dict[str, Any],
) -> None:
    typist = await _open(operator_client, guest)
    assert (await _next_json(typist))["readonly"] is False
    (operator_console,) = FakeConsole.instances
    assert operator_console.force is True

    watcher = await _open(viewer_client, guest)
    message, code = await _closed_with(watcher)
    assert message["reason"] == "in-use" and "does not take it over" in message["message"]
    assert code == text_consumer.CLOSE_IN_USE

    # The operator's session is untouched: output still flows, keystrokes still go.
    operator_console.feed(b"still mine\r\n")
    assert await typist.receive_from(timeout=5) == b"still mine\r\n"
    await typist.send_to(bytes_data=b"ls\r")
    await _until(lambda: operator_console.writes == [b"ls\r"])
    assert not operator_console.closed
    opened = AuditRecord.objects.filter(action="guest.console")
    assert [r.username async for r in opened] == ["oscar-operator"]  # the refusal opened nothing
    await typist.disconnect()


@pytest.mark.asyncio
async def test_once_the_operator_leaves_the_viewer_watches_and_is_taken_over_again(
    guest: Guest, operator_client: Client, viewer_client: Client,  # noqa: F811
    one_session: dict[str, Any],
) -> None:
    watcher = await _open(viewer_client, guest)
    status = await _next_json(watcher)
    assert status["readonly"] is True
    assert FakeConsole.instances[-1].force is False
    typist = await _open(operator_client, guest)
    await _next_json(typist)
    message, code = await _closed_with(watcher)  # the operator may take it
    assert message["reason"] == "taken-over" and code == text_consumer.CLOSE_TAKEN_OVER
    await typist.disconnect()
    await watcher.disconnect()


def test_console_stream_turns_libvirts_refusal_into_console_in_use() -> None:
    """ConsoleStream's mapping of libvirt's error (virchrdev.c's text), on a real
    libvirtError as the QEMU and libxl drivers raise it."""
    from hosts.virt import console as console_module

    error = libvirt.libvirtError("operation failed: " + IN_USE_TEXT + " for this domain")
    error.err = (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU,
                 "operation failed: " + IN_USE_TEXT + " for this domain", 2, None, None, None,
                 0, 0)
    assert console_module._in_use(error)
    other = libvirt.libvirtError("operation failed: something else")
    other.err = (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU,
                 "operation failed: something else", 2, None, None, None, 0, 0)
    assert not console_module._in_use(other)
    assert ConsoleStream.__init__.__kwdefaults__["force"] is False  # never by default


def test_a_vnc_viewer_always_asks_for_a_shared_session() -> None:
    """VNC: the server disconnects other clients for a non-shared ClientInit; a viewer's
    ClientInit is forced to shared whatever it sent, so a viewer never takes a VNC session
    over either."""
    for sent in (b"\x00", b"\x01"):
        flt = ViewerInputFilter()
        flt.server(b"RFB 003.008\n")
        out = flt.client(b"RFB 003.008\n")
        out += flt.client(b"\x01")  # security type None
        out += flt.client(sent)  # ClientInit: shared flag
        assert out.endswith(b"\x01"), (sent, out)
