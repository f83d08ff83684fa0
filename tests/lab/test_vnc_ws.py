"""A guest's graphical console through the proxy, for real: the tiny guest with VNC graphics on a
lab host (QEMU's VNC server on 127.0.0.1), the web server serving `/ws/guests/<pk>/vnc/`, and a
websocket client (subprotocol ``binary``, session cookie, Origin) speaking RFB as noVNC would:
version, security type None, ClientInit, ServerInit with the framebuffer's size.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from django.test import Client

from guests.console import rfb
from guests.inventory import reconcile_host
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt
from hosts.virt.domain_xml import HVM, DomainSpec
from lab.register import register_lab_host
from lab.tinyguest import ensure_tiny_guest, tiny_guest_cmdline
from tests.live.processes import WebServer
from xenweb import ws_base
from xenweb.audit.models import AuditRecord

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

STEP_TIMEOUT = 60.0
RFB_VERSION = b"RFB 003.008\n"


def tiny_vnc_spec(name: str) -> DomainSpec:
    """The tiny guest (kernel + initramfs) under TCG, with VNC graphics on 127.0.0.1."""
    image = ensure_tiny_guest()
    return DomainSpec(
        name=name, domain_type="qemu", os_type=HVM, memory_mib=160, vcpus=1,
        kernel=str(image.kernel), initrd=str(image.initrd), cmdline=tiny_guest_cmdline(),
        vnc=True,
    )


@pytest.fixture(scope="module")
def vnc_web(django_db_setup: Any, django_db_blocker: Any) -> Iterator[WebServer]:
    server = WebServer()
    yield server
    server.stop()


@dataclass
class VncSession:
    """One noVNC tab's websocket: RFB bytes read so far, status messages, how it ended."""

    ws: Any
    buffer: bytearray = field(default_factory=bytearray)
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    @classmethod
    async def open(cls, server: WebServer, client: Client, guest_pk: int) -> VncSession:
        headers = {"Origin": server.origin,
                   "Cookie": f"sessionid={client.cookies['sessionid'].value}"}
        ws = await websockets.connect(server.ws_url(f"/ws/guests/{guest_pk}/vnc/"),
                                      additional_headers=headers, subprotocols=["binary"],
                                      open_timeout=30, max_size=None)
        assert ws.subprotocol == "binary"
        return cls(ws)

    async def _next(self, timeout: float) -> None:
        try:
            frame = await asyncio.wait_for(self.ws.recv(), timeout=timeout)
        except websockets.ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else None
            raise
        if isinstance(frame, bytes):
            self.buffer += frame
        else:
            self.messages.append(json.loads(frame))

    async def message(self, kind: str, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if message["type"] == kind:
                    return message
            await self._next(max(0.1, deadline - time.monotonic()))

    async def read(self, count: int, timeout: float = STEP_TIMEOUT) -> bytes:
        """Exactly ``count`` RFB bytes."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{count} bytes not within {timeout} s; have "
                                     f"{bytes(self.buffer)!r}, messages {self.messages}")
            await self._next(remaining)
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def closed(self, timeout: float = STEP_TIMEOUT) -> tuple[dict[str, Any], int | None]:
        deadline = time.monotonic() + timeout
        try:
            while True:
                await self._next(max(0.1, deadline - time.monotonic()))
        except websockets.ConnectionClosed:
            pass
        endings = [m for m in self.messages if m["type"] == "vnc.closed"]
        assert endings, f"closed ({self.close_code}) without a vnc.closed message"
        return endings[-1], self.close_code


async def rfb_handshake(session: VncSession) -> tuple[int, int, str]:
    """RFB 3.8 with security None, as noVNC does it; returns the ServerInit's width, height
    and desktop name."""
    assert await session.read(12) == RFB_VERSION
    await session.send(RFB_VERSION)
    (count,) = await session.read(1)
    assert count > 0, await session.read(4)  # 0: failure, a reason follows
    types = await session.read(count)
    assert rfb.SECURITY_NONE in types, types
    await session.send(bytes([rfb.SECURITY_NONE]))
    assert await session.read(4) == b"\x00\x00\x00\x00"  # SecurityResult OK
    await session.send(b"\x01")  # ClientInit, shared
    width, height = struct.unpack(">HH", await session.read(4))
    await session.read(16)  # pixel format
    (name_length,) = struct.unpack(">I", await session.read(4))
    name = (await session.read(name_length)).decode(errors="replace")
    return width, height, name


async def _vnc_scenario(server: WebServer, viewer: Client, operator: Client, guest: Guest,
                        host: Host) -> None:
    uri = host.uri
    # Shut off: the proxy says so and ends with "reconnect later".
    session = await VncSession.open(server, viewer, guest.pk)
    ending, code = await session.closed()
    assert ending["reason"] == "not-running", ending
    assert code == ws_base.CLOSE_GUEST_STOPPED

    await asyncio.to_thread(virt.start, VirtTarget(uri, allow_insecure=True), str(guest.uuid))
    # The cache learns the live (autoport) port: the guest page links the graphical console.
    await asyncio.to_thread(reconcile_host, host)
    await guest.arefresh_from_db()
    assert guest.devices["vnc_port"] >= 5900, guest.devices

    # The operator: the raw relay.
    operator_session = await VncSession.open(server, operator, guest.pk)
    status = await operator_session.message("vnc.status")
    assert status["view_only"] is False and status["via"] == "direct"
    width, height, name = await rfb_handshake(operator_session)
    assert width > 0 and height > 0, (width, height)
    assert guest.name in name, name  # QEMU names the desktop after the guest

    # A viewer: the same handshake through the view-only filter, and the picture flows.
    viewer_session = await VncSession.open(server, viewer, guest.pk)
    status = await viewer_session.message("vnc.status")
    assert status["view_only"] is True
    width, height, _ = await rfb_handshake(viewer_session)  # may differ: the guest boots
    assert width > 0 and height > 0, (width, height)
    await viewer_session.send(struct.pack(">BBxxI", 4, 1, 0x61))  # KeyEvent: dropped
    await viewer_session.send(struct.pack(">BxH1i", 2, 1, 0))  # SetEncodings: Raw
    await viewer_session.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
    (kind,) = await viewer_session.read(1)
    assert kind == 0  # FramebufferUpdate

    # The guest stops: both sessions say so and close.
    await asyncio.to_thread(virt.destroy, VirtTarget(uri, allow_insecure=True), str(guest.uuid))
    for ended in (operator_session, viewer_session):
        ending, code = await ended.closed()
        assert ending["reason"] == "stopped", ending
        assert code == ws_base.CLOSE_GUEST_STOPPED


def test_guest_vnc_over_websocket(
    lab_hosts: list[Any], vnc_web: WebServer, viewer_client: Client, operator_client: Client,
) -> None:
    lab_host = lab_hosts[0]
    host, _ = register_lab_host(lab_host)
    info = virt.define_domain(VirtTarget(host.uri, allow_insecure=True),
                              tiny_vnc_spec(f"vnc-{uuid.uuid4().hex[:6]}"))
    try:
        assert info.xml.vnc_listen == "127.0.0.1"
        reconcile_host(host)
        guest = Guest.objects.get(host=host, uuid=info.uuid)
        asyncio.run(_vnc_scenario(vnc_web, viewer_client, operator_client, guest, host))
        opened = AuditRecord.objects.filter(action="guest.vnc", target_id=str(guest.pk))
        assert sorted(opened.values_list("username", "detail__view_only")) == [
            ("oscar-operator", False), ("vera-viewer", True),
        ]
    finally:
        try:
            virt.destroy(VirtTarget(host.uri, allow_insecure=True), info.uuid)
        except VirtError:
            pass
        virt.undefine(VirtTarget(host.uri, allow_insecure=True), info.uuid)
