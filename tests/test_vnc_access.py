"""The graphical console proxy (`/ws/guests/<pk>/vnc/`) and page: who may connect, what a
viewer's client may send (the RFB filter), where the proxy connects, how sessions end. The
VNC server is a small fake TCP server here; the real thing (QEMU on a lab host) runs in
tests/lab/test_vnc_ws.py."""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from guests.console import diagnosis
from guests.console import route as vnc_route
from guests.console.rfb import RfbFilterError, ViewerInputFilter
from guests.console.route import Route, VncUnavailable, plan_route
from guests.console.sessions import GuestSessionTarget
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget
from hosts.virt import ssh as virt_ssh
from hosts.virt.domain_xml import DomainSpec, build_domain_xml, parse_domain_xml
from hosts.virt.graphics import VncEndpoint
from hosts.virt.ssh import SshLogin
from tests.conftest import logged_in
from xenweb import ws_base
from xenweb.appliance.sshkeys import DOM0_IDENTITY, DOM0_TRUST
from xenweb.asgi import application
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db(transaction=True)

GOOD_ORIGIN = "http://127.0.0.1"
TEST_DOMAIN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # test:///default's "test", no VNC
GREETING = b"RFB 003.008\n"


def _headers(client: Client | None, origin: str | None = GOOD_ORIGIN) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"127.0.0.1")]  # as every browser sends (xenweb.ws_origin)
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if client is not None:
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return headers


def _path(guest_pk: int) -> str:
    return f"/ws/guests/{guest_pk}/vnc/"


def _communicator(path: str, headers: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=headers, subprotocols=["binary"])


async def _refused(path: str, headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any]:
    communicator = _communicator(path, headers)
    connected, code = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected, code


@pytest.fixture
def host(transactional_db: Any) -> Host:
    return Host.objects.create(name="vnc-host", uri="test:///default")


@pytest.fixture
def guest(host: Host) -> Guest:
    return Guest.objects.create(host=host, uuid=uuid.uuid4(), name="desk1", state="running",
                                devices={"vnc_port": 5901})


# --- refusals before the handshake ----------------------------------------------------------


@pytest.mark.asyncio
async def test_anonymous_is_refused(guest: Guest) -> None:
    connected, code = await _refused(_path(guest.pk), _headers(None))
    assert not connected
    assert code == ws_base.CLOSE_UNAUTHENTICATED


@pytest.mark.asyncio
async def test_foreign_origin_is_refused(guest: Guest, admin_client_tx: Client) -> None:
    assert not (await _refused(_path(guest.pk), _headers(admin_client_tx, "https://evil.example")))[0]
    assert not (await _refused(_path(guest.pk), _headers(admin_client_tx, origin=None)))[0]


@pytest.mark.asyncio
async def test_unknown_guest_is_refused(admin_client_tx: Client) -> None:
    connected, code = await _refused(_path(999999), _headers(admin_client_tx))
    assert not connected
    assert code == ws_base.CLOSE_NOT_FOUND


@pytest.mark.asyncio
async def test_user_without_a_role_is_refused(guest: Guest) -> None:
    user = await get_user_model().objects.acreate(username="nobody")
    client = await sync_to_async(logged_in)(user)
    connected, code = await _refused(_path(guest.pk), _headers(client))
    assert not connected
    assert code == ws_base.CLOSE_FORBIDDEN


# --- refusals after the handshake, with a reason ---------------------------------------------


async def _open(client: Client, guest: Guest) -> WebsocketCommunicator:
    communicator = _communicator(_path(guest.pk), _headers(client))
    connected, subprotocol = await communicator.connect(timeout=10)
    assert connected, subprotocol
    assert subprotocol == "binary"
    return communicator


async def _next_json(communicator: WebsocketCommunicator) -> dict[str, Any]:
    return json.loads(await communicator.receive_from(timeout=10))


async def _closed_with(communicator: WebsocketCommunicator) -> tuple[dict[str, Any], int]:
    """The last status message and the close code."""
    message = await _next_json(communicator)
    assert message["type"] == "vnc.closed", message
    close = await communicator.receive_output(timeout=10)
    assert close["type"] == "websocket.close", close
    return message, close["code"]


@pytest.mark.asyncio
async def test_guest_without_vnc_graphics_is_refused(host: Host, admin_client_tx: Client) -> None:
    # The test driver's own guest, asked for real: it has no <graphics>.
    guest = await Guest.objects.acreate(host=host, uuid=TEST_DOMAIN_UUID, name="test",
                                        state="running")
    communicator = await _open(admin_client_tx, guest)
    message, code = await _closed_with(communicator)
    assert message["reason"] == "no-vnc" and "no VNC graphics" in message["message"]
    assert code == ws_base.CLOSE_NO_CONSOLE
    await communicator.disconnect()
    assert not await AuditRecord.objects.filter(action="guest.vnc").aexists()


@pytest.mark.asyncio
async def test_domain0_is_refused(guest: Guest, admin_client_tx: Client) -> None:
    await Guest.objects.filter(pk=guest.pk).aupdate(is_privileged=True, name="Domain-0")
    communicator = await _open(admin_client_tx, guest)
    message, code = await _closed_with(communicator)
    assert message["reason"] == "no-vnc" and "management domain" in message["message"]
    assert code == ws_base.CLOSE_NO_CONSOLE


@pytest.mark.asyncio
async def test_tls_host_is_refused_with_a_reason(admin_client_tx: Client) -> None:
    host = await Host.objects.acreate(name="xen-tls", uri="xen+tls://xen1.example.com/system")
    guest = await Guest.objects.acreate(host=host, uuid=uuid.uuid4(), name="w1", state="running")
    communicator = await _open(admin_client_tx, guest)
    message, code = await _closed_with(communicator)
    assert message["reason"] == "unsupported" and "TLS" in message["message"]
    assert code == ws_base.CLOSE_NO_CONSOLE


# --- the relay, with a fake VNC server -------------------------------------------------------


class FakeVncServer:
    """Greets like an RFB 3.8 server and keeps what it receives; the test may close it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(GREETING)
        await writer.drain()
        while data := await reader.read(65536):
            self.received += data

    async def send(self, data: bytes) -> None:
        for writer in self.writers:
            writer.write(data)
            await writer.drain()

    async def hang_up(self) -> None:
        for writer in self.writers:
            writer.close()

    async def stop(self) -> None:
        await self.hang_up()
        if self.server is not None:
            self.server.close()


@pytest_asyncio.fixture
async def fake_vnc(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """The guest's live endpoint points at a fake VNC server; its state is the test's."""
    server = FakeVncServer()
    await server.start()
    world: dict[str, Any] = {"server": server, "state": "running", "active": True}

    def endpoint(target: VirtTarget, uuid: str) -> VncEndpoint:
        return VncEndpoint(name="desk1", state=world["state"], active=world["active"],
                           has_vnc=True, port=server.port, listen="127.0.0.1", socket="",
                           is_privileged=False)

    class FakeDomain:
        state = property(lambda self: world["state"])

    monkeypatch.setattr(vnc_route, "vnc_endpoint", endpoint)
    monkeypatch.setattr(diagnosis, "SETTLE_SECONDS", 0.3)
    monkeypatch.setattr(diagnosis.virt, "get_domain",
                        lambda target, uuid: FakeDomain())
    yield world
    await server.stop()


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _read_bytes(communicator: WebsocketCommunicator, count: int) -> bytes:
    data = b""
    while len(data) < count:
        frame = await communicator.receive_output(timeout=10)
        assert frame["type"] == "websocket.send", frame
        assert frame.get("bytes") is not None, frame
        data += frame["bytes"]
    return data


KEY_A = struct.pack(">BBxxI", 4, 1, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 10, 20)
FB_REQUEST = struct.pack(">BBHHHH", 3, 0, 0, 0, 640, 480)


@pytest.mark.asyncio
async def test_operator_session_relays_both_ways(
    guest: Guest, operator_client: Client, fake_vnc: dict[str, Any]
) -> None:
    server: FakeVncServer = fake_vnc["server"]
    communicator = await _open(operator_client, guest)
    status = await _next_json(communicator)
    assert status == {"type": "vnc.status", "state": "connected", "view_only": False,
                      "guest": "desk1", "host": "vnc-host", "via": "direct"}
    assert await _read_bytes(communicator, 12) == GREETING

    sent = GREETING + b"\x01" + b"\x00" + KEY_A + POINTER  # operators are not filtered
    await communicator.send_to(bytes_data=sent)
    await _until(lambda: bytes(server.received) == sent)
    await server.send(b"\x00\x00\x00\x00")  # SecurityResult OK
    assert await _read_bytes(communicator, 4) == b"\x00\x00\x00\x00"

    fake_vnc["state"] = "shutoff"
    await server.hang_up()
    message, code = await _closed_with(communicator)
    assert message["reason"] == "stopped"
    assert code == ws_base.CLOSE_GUEST_STOPPED
    await communicator.disconnect()

    audit = await AuditRecord.objects.aget(action="guest.vnc")
    assert audit.username == "oscar-operator"
    assert audit.target_type == "guests.guest" and audit.target_id == str(guest.pk)
    assert audit.detail["view_only"] is False and audit.detail["via"] == "direct"
    assert audit.message == "Opened the graphical console of desk1 on vnc-host"
    assert set(audit.detail) == {"host", "view_only", "via", "client"}


@pytest.mark.asyncio
async def test_viewer_input_never_reaches_the_server(
    guest: Guest, viewer_client: Client, fake_vnc: dict[str, Any]
) -> None:
    server: FakeVncServer = fake_vnc["server"]
    communicator = await _open(viewer_client, guest)
    status = await _next_json(communicator)
    assert status["view_only"] is True
    assert await _read_bytes(communicator, 12) == GREETING

    await communicator.send_to(bytes_data=GREETING + b"\x01")
    await communicator.send_to(bytes_data=b"\x00")  # ClientInit, not shared: forced shared
    await communicator.send_to(bytes_data=KEY_A + POINTER + FB_REQUEST)
    expected = GREETING + b"\x01" + b"\x01" + FB_REQUEST
    await _until(lambda: bytes(server.received) == expected)

    # Something the filter cannot frame ends the session.
    await communicator.send_to(bytes_data=b"\x07junk")
    message, code = await _closed_with(communicator)
    assert message["reason"] == "refused" and "type 7" in message["message"]
    assert code == ws_base.CLOSE_REFUSED_INPUT
    await communicator.disconnect()
    assert bytes(server.received) == expected

    audit = await AuditRecord.objects.aget(action="guest.vnc")
    assert audit.username == "vera-viewer" and audit.detail["view_only"] is True
    assert audit.message == "Opened the graphical console of desk1 on vnc-host (view-only)"


@pytest.mark.asyncio
async def test_stopped_guest_says_so(
    guest: Guest, viewer_client: Client, fake_vnc: dict[str, Any]
) -> None:
    fake_vnc.update(state="shutoff", active=False)
    communicator = await _open(viewer_client, guest)
    message, code = await _closed_with(communicator)
    assert message["reason"] == "not-running" and "not running" in message["message"]
    assert code == ws_base.CLOSE_GUEST_STOPPED
    assert not await AuditRecord.objects.filter(action="guest.vnc").aexists()


@pytest.mark.asyncio
async def test_unreachable_vnc_server_is_an_error(
    guest: Guest, viewer_client: Client, fake_vnc: dict[str, Any]
) -> None:
    await fake_vnc["server"].stop()
    fake_vnc["server"].server.close()
    await fake_vnc["server"].server.wait_closed()
    communicator = await _open(viewer_client, guest)
    message, code = await _closed_with(communicator)
    assert message["reason"] == "error" and "Cannot reach the VNC server" in message["message"]
    assert code == ws_base.CLOSE_CONSOLE_ERROR


# --- the viewer's filter, with crafted RFB client messages ------------------------------------


def _handshaken(security: int = 1) -> ViewerInputFilter:
    rfb = ViewerInputFilter()
    rfb.server(GREETING)
    out = rfb.client(GREETING + bytes([security]))
    if security == 2:
        out += rfb.client(b"R" * 16)
    out += rfb.client(b"\x00")
    assert out == GREETING + bytes([security]) + (b"R" * 16 if security == 2 else b"") + b"\x01"
    return rfb


def _set_encodings(*encodings: int) -> bytes:
    return struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings)


PIXEL_FORMAT = struct.pack(">BxxxBBBBHHHBBBxxx", 0, 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)
CONTINUOUS = struct.pack(">BBHHHH", 150, 1, 0, 0, 640, 480)
FENCE = struct.pack(">BxxxIB", 248, 0x80000000, 3) + b"abc"
ALLOWED = PIXEL_FORMAT + _set_encodings(0, 7, -223) + FB_REQUEST + CONTINUOUS + FENCE


def _cut_text(text: bytes, extended: bool = False) -> bytes:
    return struct.pack(">Bxxxi", 6, -len(text) if extended else len(text)) + text


INPUT = [
    KEY_A,
    POINTER,
    _cut_text(b"rm -rf /"),
    _cut_text(b"\x10\x00\x00\x01", extended=True),
    struct.pack(">BBHII", 255, 0, 1, 0x61, 30),  # QEMU extended key event
    struct.pack(">BBH", 255, 1, 0),  # QEMU audio enable
    struct.pack(">BBHBBI", 255, 1, 2, 3, 2, 44100),  # QEMU audio set format
    struct.pack(">BxBB", 250, 1, 3),  # XVP reset
    struct.pack(">BxHHBxIHHHHI", 251, 1024, 768, 1, 0, 0, 0, 1024, 768, 0),  # SetDesktopSize
]


def test_filter_forwards_the_picture_and_drops_input() -> None:
    rfb = _handshaken()
    mixed = b"".join(message + ALLOWED for message in INPUT)
    assert rfb.client(mixed) == ALLOWED * len(INPUT)
    assert rfb.dropped == len(INPUT)


def test_filter_handles_any_split_of_the_stream() -> None:
    stream = GREETING + b"\x02" + b"K" * 16 + b"\x00" + b"".join(INPUT) + ALLOWED
    expected = GREETING + b"\x02" + b"K" * 16 + b"\x01" + ALLOWED
    for size in (1, 2, 3, 5, 7, 64):
        rfb = ViewerInputFilter()
        rfb.server(GREETING[:5])
        rfb.server(GREETING[5:] + b"\x01\x02")  # later server bytes are not its business
        out = b"".join(rfb.client(stream[i:i + size]) for i in range(0, len(stream), size))
        assert out == expected, size
        assert rfb.dropped == len(INPUT)


def test_filter_skips_a_long_clipboard_without_keeping_it() -> None:
    rfb = _handshaken()
    payload = b"x" * 1_000_000
    message = _cut_text(payload)
    assert rfb.client(message[:100]) == b""
    for offset in range(100, len(message), 65536):
        assert rfb.client(message[offset:offset + 65536]) == b""
        assert len(rfb._buffer) == 0
    assert rfb.client(FB_REQUEST) == FB_REQUEST


def test_filter_knows_the_extended_pointer_event() -> None:
    rfb = _handshaken()
    assert rfb.client(_set_encodings(0, -316)) == _set_encodings(0, -316)
    extended = struct.pack(">BBHHB", 5, 0x81, 1, 2, 1)  # marker bit: 7 bytes
    assert rfb.client(extended + FB_REQUEST) == FB_REQUEST
    assert rfb.client(POINTER + FB_REQUEST) == FB_REQUEST

    plain = _handshaken()  # without the pseudo-encoding the high bit is button 8: 6 bytes
    assert plain.client(struct.pack(">BBHH", 5, 0x80, 1, 2) + FB_REQUEST) == FB_REQUEST


def test_filter_never_forwards_a_partial_message() -> None:
    rfb = _handshaken()
    assert rfb.client(FB_REQUEST[:6]) == b""
    assert rfb.client(FB_REQUEST[6:] + KEY_A[:3]) == FB_REQUEST
    assert rfb.client(KEY_A[3:]) == b""


@pytest.mark.parametrize(("greeting", "version", "security", "match"), [
    (b"RFB 003.003\n", b"RFB 003.003\n", 1, "server speaking RFB 3.7"),
    (GREETING, b"RFB 003.003\n", 1, "client to speak RFB 3.7"),
    (b"RFB 003.007\n", GREETING, 1, "client to speak RFB 3.7"),  # above the server's
    (GREETING, GREETING, 19, "security type 19"),  # VeNCrypt
    (b"", GREETING, 1, "server speaking"),  # the client spoke first
])
def test_filter_refuses_what_it_cannot_follow(
    greeting: bytes, version: bytes, security: int, match: str
) -> None:
    rfb = ViewerInputFilter()
    rfb.server(greeting)
    with pytest.raises(RfbFilterError, match=match):
        rfb.client(version + bytes([security]))


@pytest.mark.parametrize("message", [b"\x01\x00", b"\x07", b"\xff\x02\x00\x00",
                                     struct.pack(">BBH", 255, 1, 9)])
def test_filter_refuses_unknown_messages(message: bytes) -> None:
    rfb = _handshaken()
    with pytest.raises(RfbFilterError):
        rfb.client(FB_REQUEST + message + b"\x00" * 20)


# --- where the proxy connects -------------------------------------------------------------


def _target(uri: str, *, insecure: bool = False) -> GuestSessionTarget:
    return GuestSessionTarget(guest_pk=1, name="desk1", uuid=str(uuid.uuid4()), host_name="h1",
                              host_uri=uri, allow_insecure_transport=insecure,
                              is_privileged=False, may_act=True)


ENDPOINT = VncEndpoint(name="desk1", state="running", active=True, has_vnc=True, port=5901,
                       listen="0.0.0.0", socket="", is_privileged=False)  # noqa: S104


@pytest.mark.parametrize(("uri", "insecure", "listen", "route"), [
    ("xen:///system", False, "0.0.0.0", Route("tcp", "127.0.0.1", 5901)),  # noqa: S104
    ("qemu:///system", False, "", Route("tcp", "127.0.0.1", 5901)),
    ("test:///default", False, "::", Route("tcp", "::1", 5901)),
    ("xen:///", False, "192.0.2.7", Route("tcp", "192.0.2.7", 5901)),
    ("qemu+tcp://127.0.0.1:16600/system", True, "127.0.0.1", Route("tcp", "127.0.0.1", 5901)),
])
def test_direct_routes(uri: str, insecure: bool, listen: str, route: Route) -> None:
    assert plan_route(_target(uri, insecure=insecure), replace(ENDPOINT, listen=listen)) == route


def test_ssh_route_tunnels_with_the_appliance_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(virt_ssh, "dom0_login", lambda: SshLogin(
        known_hosts="/data/ssh/known_hosts", key="/data/ssh/id_ed25519"))
    route = plan_route(_target("xen+ssh://xen1.example.com/system"),
                       replace(ENDPOINT, listen="127.0.0.1"))
    assert route.kind == "ssh"
    assert list(route.argv) == [
        "/usr/bin/ssh", "-i", "/data/ssh/id_ed25519", "-o", "IdentitiesOnly=yes",
        "-o", "UserKnownHostsFile=/data/ssh/known_hosts", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15",
        "-W", "127.0.0.1:5901", "-p", "22", "-l", "root", "--", "xen1.example.com",
    ]
    custom = plan_route(
        _target("xen+ssh://admin@xen2.example.com:2222/system?keyfile=/k/id&known_hosts=/k/kh"),
        replace(ENDPOINT, listen="::"))
    argv = list(custom.argv)
    assert argv[argv.index("-i") + 1] == "/k/id"
    assert "UserKnownHostsFile=/k/kh" in argv
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-W") + 1] == "[::1]:5901"
    assert argv[-4:] == ["-l", "admin", "--", "xen2.example.com"]


def test_the_ssh_route_uses_the_appliance_dom0_identity() -> None:
    """Without a stand-in: the key and known_hosts of the dom0 identity (xenweb.appliance
    hands them to hosts.virt.ssh when Django starts), as libvirt's connection gets them."""
    argv = list(plan_route(_target("xen+ssh://xen1.example.com/system"), ENDPOINT).argv)
    assert argv[argv.index("-i") + 1] == str(DOM0_IDENTITY.private_key())
    assert f"UserKnownHostsFile={DOM0_TRUST.path()}" in argv


def test_routes_that_cannot_work() -> None:
    with pytest.raises(VncUnavailable, match="TLS"):
        plan_route(_target("xen+tls://xen1.example.com/system"), ENDPOINT)
    with pytest.raises(VncUnavailable, match="UNIX socket"):
        plan_route(_target("xen+ssh://xen1.example.com/system"),
                   replace(ENDPOINT, port=None, listen="", socket="/run/vnc.sock"))
    assert plan_route(_target("qemu:///system"), replace(ENDPOINT, port=None, listen="",
                                                          socket="/run/vnc.sock")) \
        == Route("unix", "/run/vnc.sock")
    with pytest.raises(VncUnavailable, match="no TCP port"):
        plan_route(_target("xen:///system"), replace(ENDPOINT, port=None))


def test_domain_xml_knows_where_vnc_listens() -> None:
    spec = DomainSpec(name="g", domain_type="qemu", vnc=True)
    assert parse_domain_xml(build_domain_xml(spec)).vnc_listen == "127.0.0.1"
    assert parse_domain_xml(build_domain_xml(replace(spec, vnc=False))).vnc_listen is None
    live = """<domain type='xen'><name>g</name><devices>
      <graphics type='vnc' port='5907' autoport='yes'>
        <listen type='address' address='0.0.0.0'/></graphics></devices></domain>"""
    info = parse_domain_xml(live)
    assert (info.vnc_port, info.vnc_listen) == (5907, "0.0.0.0")  # noqa: S104
    socket = """<domain type='qemu'><name>g</name><devices>
      <graphics type='vnc'><listen type='socket' socket='/run/g.sock'/></graphics>
      </devices></domain>"""
    assert parse_domain_xml(socket).vnc_listen == "/run/g.sock"


# --- the pages --------------------------------------------------------------------------------


def test_vnc_page(guest: Guest, viewer_client: Client, operator_client: Client) -> None:
    viewer = viewer_client.get(f"/guests/{guest.pk}/vnc/")
    assert viewer.status_code == 200
    body = viewer.content.decode()
    assert f'data-vnc-ws="/ws/guests/{guest.pk}/vnc/"' in body
    assert 'data-view-only="true"' in body and "vnc-viewer-note" in body
    assert "vnc-ctrl-alt-del" not in body
    assert "vendor/novnc/core/rfb.js" in body and 'type="module"' in body
    assert 'data-enabled="true"' in body

    operator = operator_client.get(f"/guests/{guest.pk}/vnc/").content.decode()
    assert 'data-view-only="false"' in operator and "vnc-ctrl-alt-del" in operator
    assert operator_client.get("/guests/999999/vnc/").status_code == 404
    assert Client().get(f"/guests/{guest.pk}/vnc/").status_code == 302


def test_vnc_page_says_what_cannot_work(viewer_client: Client) -> None:
    host = Host.objects.create(name="xen-tls", uri="xen+tls://xen1.example.com/system")
    guest = Guest.objects.create(host=host, uuid=uuid.uuid4(), name="w1")
    body = viewer_client.get(f"/guests/{guest.pk}/vnc/").content.decode()
    assert 'data-enabled="false"' in body and "not available yet" in body


def test_detail_page_links_the_graphical_console(guest: Guest, viewer_client: Client) -> None:
    assert 'id="open-vnc"' in viewer_client.get(f"/guests/{guest.pk}/").content.decode()
    guest.devices = {"vnc_port": None}
    guest.save()
    assert 'id="open-vnc"' not in viewer_client.get(f"/guests/{guest.pk}/").content.decode()


# --- the SSH tunnel, with a stand-in for ssh ----------------------------------------------------

FAKE_SSH = """#!{python}
import socket, sys, threading
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
if {fail!r}:
    sys.stderr.write("root@127.0.0.1: Permission denied (publickey).\\n")
    sys.exit(255)
host, _, port = args[args.index("-W") + 1].rpartition(":")
sock = socket.create_connection((host.strip("[]"), int(port)))
def upstream():
    while data := sys.stdin.buffer.read1(65536):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=upstream, daemon=True).start()
while data := sock.recv(65536):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
"""


def _fake_ssh(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, *, fail: bool) -> Any:
    log = tmp_path / "ssh.log"
    script = tmp_path / "ssh"
    script.write_text(FAKE_SSH.format(python=sys.executable, log=str(log), fail=fail))
    script.chmod(0o755)
    monkeypatch.setattr(virt_ssh, "SSH", str(script))
    return log


@pytest.mark.asyncio
async def test_ssh_host_goes_through_the_tunnel(
    operator_client: Client, fake_vnc: dict[str, Any], tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = _fake_ssh(tmp_path, monkeypatch, fail=False)
    host = await Host.objects.acreate(name="xen-ssh", uri="xen+ssh://root@127.0.0.1/system")
    guest = await Guest.objects.acreate(host=host, uuid=uuid.uuid4(), name="w1", state="running")
    server: FakeVncServer = fake_vnc["server"]
    communicator = await _open(operator_client, guest)
    status = await _next_json(communicator)
    assert status["via"] == "ssh"
    assert await _read_bytes(communicator, 12) == GREETING
    await communicator.send_to(bytes_data=GREETING + b"\x01")
    await _until(lambda: bytes(server.received) == GREETING + b"\x01")
    argv = log.read_text().split()
    assert argv[argv.index("-W") + 1] == f"127.0.0.1:{server.port}"
    assert argv[-4:] == ["-l", "root", "--", "127.0.0.1"] and "BatchMode=yes" in argv
    assert argv[argv.index("-i") + 1].endswith("/ssh/id_ed25519")

    fake_vnc["state"] = "shutoff"
    await server.hang_up()
    message, code = await _closed_with(communicator)
    assert message["reason"] == "stopped" and code == ws_base.CLOSE_GUEST_STOPPED
    await communicator.disconnect()
    audit = await AuditRecord.objects.aget(action="guest.vnc")
    assert audit.detail["via"] == "ssh"


@pytest.mark.asyncio
async def test_failed_ssh_tunnel_says_why(
    operator_client: Client, fake_vnc: dict[str, Any], tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_ssh(tmp_path, monkeypatch, fail=True)
    host = await Host.objects.acreate(name="xen-ssh", uri="xen+ssh://root@127.0.0.1/system")
    guest = await Guest.objects.acreate(host=host, uuid=uuid.uuid4(), name="w1", state="running")
    communicator = await _open(operator_client, guest)
    await _next_json(communicator)  # vnc.status: the tunnel process started
    message, code = await _closed_with(communicator)
    assert message["reason"] == "error", message
    assert "SSH tunnel to xen-ssh failed" in message["message"]
    assert "Permission denied (publickey)" in message["message"]
    assert code == ws_base.CLOSE_CONSOLE_ERROR
    await communicator.disconnect()
