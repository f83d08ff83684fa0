"""L1 for real: on a lab host (QEMU, libvirt's own one-session rule), a read-only viewer
never takes the console from an operator or from another session such as ``virsh
console``; it is told the console is in use. An operator still takes it over."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import websockets
from django.test import Client

from guests.console import text_consumer
from guests.inventory import reconcile_host
from guests.models import Guest
from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt
from hosts.virt.console import ConsoleInUse, ConsoleStream
from lab.register import register_lab_host
from lab.tinyguest import TINY_GUEST_TICK
from tests.lab.test_console_ws import BOOT_TIMEOUT, Session, console_web, tiny_spec  # noqa: F401
from tests.live.processes import WebServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

FREE_TRIES = 60


async def _free_console(uri: str, guest_uuid: str) -> ConsoleStream:
    """Open the console without forcing once the session that just closed has let go of
    it (the server aborts its stream on its own thread)."""
    for _ in range(FREE_TRIES):
        try:
            return await asyncio.to_thread(ConsoleStream, VirtTarget(uri, allow_insecure=True),
                                           guest_uuid)
        except ConsoleInUse:
            await asyncio.sleep(0.5)
    raise AssertionError("the console stayed in use after its session closed")


async def _watch(server: WebServer, viewer: Client, guest_pk: int
                 ) -> tuple[Session, dict[str, Any]]:
    """The viewer's console and its status, once nobody else has the console."""
    for _ in range(FREE_TRIES):
        session = await Session.open(server, viewer, guest_pk)
        try:
            return session, await session.message("console.status")
        except websockets.ConnectionClosed:  # in use: the last session is still letting go
            await asyncio.sleep(0.5)
    raise AssertionError("the viewer never got the free console")


async def _scenario(server: WebServer, viewer: Client, operator: Client, guest: Guest,
                    uri: str) -> None:
    await asyncio.to_thread(virt.start, VirtTarget(uri, allow_insecure=True), str(guest.uuid))

    typist = await Session.open(server, operator, guest.pk)
    assert (await typist.message("console.status"))["readonly"] is False
    await typist.read_until(TINY_GUEST_TICK.encode(), timeout=BOOT_TIMEOUT)

    # The viewer comes: refused with "in use", the operator keeps the console.
    watcher = await Session.open(server, viewer, guest.pk)
    ending, code = await watcher.closed()
    assert ending["reason"] == "in-use", ending
    assert code == text_consumer.CLOSE_IN_USE
    marker = f"operator-{uuid.uuid4().hex[:8]}".encode()
    await typist.send(marker + b"\r")
    await typist.read_until(marker)  # the guest's tty echoes it: still the operator's
    await typist.ws.close()

    # Another session (as `virsh console` opens it, without --force) has the console.
    other = await _free_console(uri, str(guest.uuid))
    try:
        with pytest.raises(ConsoleInUse):  # libvirt's own refusal, through the adapter
            await asyncio.to_thread(ConsoleStream, VirtTarget(uri, allow_insecure=True),
                                    str(guest.uuid))
        watcher = await Session.open(server, viewer, guest.pk)
        ending, code = await watcher.closed()
        assert ending["reason"] == "in-use" and code == text_consumer.CLOSE_IN_USE
        assert not other.closed
        await asyncio.to_thread(other.read)  # still readable: nobody took it
        assert not other.closed
    finally:
        await asyncio.to_thread(other.close)

    # Nobody has it: the viewer watches; an operator may still take it over.
    watcher, status = await _watch(server, viewer, guest.pk)
    assert status["readonly"] is True
    await watcher.read_until(TINY_GUEST_TICK.encode())
    typist = await Session.open(server, operator, guest.pk)
    assert (await typist.message("console.status"))["readonly"] is False
    ending, code = await watcher.closed()
    assert ending["reason"] == "taken-over" and code == text_consumer.CLOSE_TAKEN_OVER
    await typist.ws.close()


def test_a_viewer_never_takes_a_console_over(
    lab_hosts: list[Any], console_web: WebServer, viewer_client: Client,  # noqa: F811
    operator_client: Client,
) -> None:
    host, _ = register_lab_host(lab_hosts[0])
    info = virt.define_domain(VirtTarget(host.uri, allow_insecure=True),
                              tiny_spec(f"takeover-{uuid.uuid4().hex[:6]}"))
    try:
        reconcile_host(host)
        guest = Guest.objects.get(host=host, uuid=info.uuid)
        asyncio.run(_scenario(console_web, viewer_client, operator_client, guest, host.uri))
    finally:
        try:
            virt.destroy(VirtTarget(host.uri, allow_insecure=True), info.uuid)
        except VirtError:
            pass
        virt.undefine(VirtTarget(host.uri, allow_insecure=True), info.uuid)
