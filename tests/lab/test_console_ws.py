"""A guest's text console in the browser, for real: the tiny guest on a lab host, the web
server serving `/ws/guests/<pk>/console/`, and a websocket client with a session cookie and
an Origin header.

The tiny guest runs no shell on its console, but its serial tty echoes what it receives
(line discipline ECHO): an operator's keystrokes come back on the console, a viewer's never
reach it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from django.test import Client

from guests.console import text_consumer
from guests.inventory import reconcile_host
from guests.models import Guest
from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt
from hosts.virt.domain_xml import HVM, DomainSpec
from lab.register import register_lab_host
from lab.tinyguest import (
    TINY_GUEST_BANNER,
    TINY_GUEST_TICK,
    ensure_tiny_guest,
    tiny_guest_cmdline,
)
from tests.live.processes import WebServer
from xenweb.audit.models import AuditRecord

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

BOOT_TIMEOUT = 120.0
STEP_TIMEOUT = 45.0


def tiny_spec(name: str) -> DomainSpec:
    """The tiny guest (kernel + initramfs, console on ttyS0) under TCG."""
    image = ensure_tiny_guest()
    return DomainSpec(
        name=name, domain_type="qemu", os_type=HVM, memory_mib=160, vcpus=1,
        kernel=str(image.kernel), initrd=str(image.initrd), cmdline=tiny_guest_cmdline(),
    )


@pytest.fixture(scope="module")
def console_web(django_db_setup: Any, django_db_blocker: Any) -> Iterator[WebServer]:
    server = WebServer()
    yield server
    server.stop()


@dataclass
class Session:
    """One browser tab's console websocket: what it read and how it ended."""

    ws: Any
    output: bytes = b""
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    @classmethod
    async def open(cls, server: WebServer, client: Client, guest_pk: int) -> Session:
        headers = {"Origin": server.origin,
                   "Cookie": f"sessionid={client.cookies['sessionid'].value}"}
        ws = await websockets.connect(server.ws_url(f"/ws/guests/{guest_pk}/console/"),
                                      additional_headers=headers, open_timeout=30)
        return cls(ws)

    async def _next(self, timeout: float) -> None:
        try:
            frame = await asyncio.wait_for(self.ws.recv(), timeout=timeout)
        except websockets.ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else None
            raise
        if isinstance(frame, bytes):
            self.output += frame
        else:
            self.messages.append(json.loads(frame))

    async def message(self, kind: str, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
        """The first status message of type `kind` (console output read meanwhile is kept)."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if message["type"] == kind:
                    return message
            await self._next(max(0.1, deadline - time.monotonic()))

    async def read_until(self, *needles: bytes, timeout: float = STEP_TIMEOUT) -> bytes:
        """Read until one of `needles` appears in new output; returns the new output."""
        start = len(self.output)
        deadline = time.monotonic() + timeout
        while not any(needle in self.output[start:] for needle in needles):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"none of {needles} within {timeout} s; got "
                                     f"{self.output[start:][-2000:]!r}")
            await self._next(remaining)
        return self.output[start:]

    async def closed(self, timeout: float = STEP_TIMEOUT) -> tuple[dict[str, Any], int | None]:
        """Read until the server closes: the last status message and the close code."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                await self._next(max(0.1, deadline - time.monotonic()))
        except websockets.ConnectionClosed:
            pass
        endings = [m for m in self.messages if m["type"] == "console.closed"]
        assert endings, f"closed ({self.close_code}) without a console.closed message"
        return endings[-1], self.close_code

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)


async def _console_scenario(server: WebServer, viewer: Client, operator: Client, guest: Guest,
                            uri: str) -> None:
    # A shut-off guest: the console says so and ends with "reconnect later".
    session = await Session.open(server, viewer, guest.pk)
    ending, code = await session.closed()
    assert ending["reason"] == "not-running", ending
    assert code == text_consumer.CLOSE_GUEST_STOPPED

    await asyncio.to_thread(virt.start, VirtTarget(uri, allow_insecure=True), str(guest.uuid))

    # The viewer watches the boot: the banner (or, if it came too fast, the heartbeat).
    watcher = await Session.open(server, viewer, guest.pk)
    status = await watcher.message("console.status")
    assert status["readonly"] is True and status["guest"] == guest.name
    boot = await watcher.read_until(TINY_GUEST_BANNER.encode(), TINY_GUEST_TICK.encode(),
                                    timeout=BOOT_TIMEOUT)
    assert TINY_GUEST_BANNER.encode() in boot or TINY_GUEST_TICK.encode() in boot

    # The viewer types: refused on the server, the guest's tty never echoes it.
    viewer_marker = f"viewer-typed-{uuid.uuid4().hex[:8]}".encode()
    await watcher.send(viewer_marker + b"\r")
    notice = await watcher.message("console.readonly")
    assert "not sent" in notice["message"]
    after = b""
    for _ in range(2):  # two heartbeats later (2 s apart) the echo would have come long ago
        after += await watcher.read_until(b"\r\n" + TINY_GUEST_TICK.encode())
    after += await watcher.read_until(b"\n")
    assert viewer_marker not in watcher.output, after

    # The operator opens the console: it takes it over from the viewer's tab...
    typist = await Session.open(server, operator, guest.pk)
    status = await typist.message("console.status")
    assert status["readonly"] is False
    ending, code = await watcher.closed()
    assert ending["reason"] == "taken-over", ending
    assert code == text_consumer.CLOSE_TAKEN_OVER

    # ...and what the operator types reaches the guest (its tty echoes it back).
    operator_marker = f"operator-typed-{uuid.uuid4().hex[:8]}".encode()
    await typist.send(operator_marker + b"\r")
    await typist.read_until(operator_marker)
    await typist.read_until(TINY_GUEST_TICK.encode())  # still live afterwards

    # The guest stops: the console says so and closes.
    await asyncio.to_thread(virt.destroy, VirtTarget(uri, allow_insecure=True), str(guest.uuid))
    ending, code = await typist.closed()
    assert ending["reason"] == "stopped", ending
    assert code == text_consumer.CLOSE_GUEST_STOPPED


def test_guest_console_over_websocket(
    lab_hosts: list[Any], console_web: WebServer, viewer_client: Client,
    operator_client: Client,
) -> None:
    lab_host = lab_hosts[0]
    host, _ = register_lab_host(lab_host)
    info = virt.define_domain(VirtTarget(host.uri, allow_insecure=True),
                              tiny_spec(f"console-{uuid.uuid4().hex[:6]}"))
    try:
        reconcile_host(host)
        guest = Guest.objects.get(host=host, uuid=info.uuid)
        asyncio.run(_console_scenario(console_web, viewer_client, operator_client, guest,
                                      host.uri))
        opened = AuditRecord.objects.filter(action="guest.console", target_id=str(guest.pk))
        assert sorted(opened.values_list("username", "detail__readonly")) == [
            ("oscar-operator", False), ("vera-viewer", True),
        ]
    finally:
        try:
            virt.destroy(VirtTarget(host.uri, allow_insecure=True), info.uuid)
        except VirtError:
            pass
        virt.undefine(VirtTarget(host.uri, allow_insecure=True), info.uuid)
