"""The guest console websocket (`/ws/guests/<pk>/console/`) and page: who may connect, who may
type, and how the bridge ends. libvirt is replaced by a fake console stream here; the real
thing runs in tests/lab/test_console_ws.py."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from guests.console import diagnosis, text_consumer
from guests.models import Guest
from hosts.models import Host
from hosts.virt import HostUnreachable, VirtOperationError, VirtTarget
from tests.conftest import logged_in
from xenweb import ws_base
from xenweb.asgi import application
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db(transaction=True)

GOOD_ORIGIN = "http://127.0.0.1"


def _headers(client: Client | None, origin: str | None = GOOD_ORIGIN) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"127.0.0.1")]  # as every browser sends (xenweb.ws_origin)
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if client is not None:
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return headers


def _path(guest_pk: int) -> str:
    return f"/ws/guests/{guest_pk}/console/"


async def _connect(path: str, headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any]:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected, code


@pytest.fixture
def guest(transactional_db: Any) -> Guest:
    host = Host.objects.create(name="console-host", uri="test:///default")
    return Guest.objects.create(host=host, uuid=uuid.uuid4(), name="web1", state="running")


class FakeConsole:
    """Stands in for hosts.virt.console.ConsoleStream; the test feeds and inspects it."""

    instances: list[FakeConsole] = []
    open_error: Exception | None = None

    def __init__(self, target: VirtTarget, uuid: str, *, force: bool = False) -> None:
        if FakeConsole.open_error is not None:
            raise FakeConsole.open_error
        self.target, self.uuid = target, uuid
        self.force = force
        self.lock = threading.Lock()
        self.pending = b""
        self.eof = False
        self.read_error: Exception | None = None
        self.writes: list[bytes] = []
        self.closed = False
        self.close_calls = 0
        FakeConsole.instances.append(self)

    def feed(self, data: bytes = b"", *, eof: bool = False, error: Exception | None = None) -> None:
        with self.lock:
            self.pending += data
            self.eof = self.eof or eof
            self.read_error = error

    def read(self) -> bytes:
        with self.lock:
            if self.read_error is not None:
                self.closed = True
                raise self.read_error
            data, self.pending = self.pending, b""
            if self.eof:
                self.closed = True
            return data

    def write(self, data: bytes) -> None:
        with self.lock:
            self.writes.append(data)

    def close(self) -> None:
        self.close_calls += 1
        self.closed = True


class FakeDomain:
    def __init__(self, state: str) -> None:
        self.state = state


@pytest.fixture
def fake_libvirt(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fake console stream and a fake guest state (what `diagnose` asks libvirt)."""
    FakeConsole.instances = []
    FakeConsole.open_error = None
    world: dict[str, Any] = {"state": "running"}
    monkeypatch.setattr(text_consumer, "ConsoleStream", FakeConsole)
    monkeypatch.setattr(diagnosis, "SETTLE_SECONDS", 0.3)
    monkeypatch.setattr(diagnosis.virt, "get_domain",
                        lambda target, uuid: FakeDomain(world["state"]))
    return world


async def _open(client: Client, guest: Guest) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, _path(guest.pk), headers=_headers(client))
    connected, code = await communicator.connect(timeout=5)
    assert connected, code
    return communicator


async def _next_json(communicator: WebsocketCommunicator) -> dict[str, Any]:
    return json.loads(await communicator.receive_from(timeout=5))


async def _closed_with(communicator: WebsocketCommunicator) -> tuple[dict[str, Any], int]:
    """The last status message and the close code."""
    message = await _next_json(communicator)
    assert message["type"] == "console.closed", message
    close = await communicator.receive_output(timeout=5)
    assert close["type"] == "websocket.close", close
    return message, close["code"]


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_anonymous_is_refused(guest: Guest) -> None:
    connected, code = await _connect(_path(guest.pk), _headers(None))
    assert not connected
    assert code == ws_base.CLOSE_UNAUTHENTICATED


@pytest.mark.asyncio
async def test_foreign_origin_is_refused(guest: Guest, admin_client_tx: Client) -> None:
    assert not (await _connect(_path(guest.pk), _headers(admin_client_tx, "https://evil.example")))[0]
    assert not (await _connect(_path(guest.pk), _headers(admin_client_tx, origin=None)))[0]


@pytest.mark.asyncio
async def test_unknown_guest_is_refused(admin_client_tx: Client) -> None:
    connected, code = await _connect(_path(999999), _headers(admin_client_tx))
    assert not connected
    assert code == ws_base.CLOSE_NOT_FOUND


@pytest.mark.asyncio
async def test_user_without_a_role_is_refused(guest: Guest) -> None:
    user = await get_user_model().objects.acreate(username="nobody")
    client = await sync_to_async(logged_in)(user)
    connected, code = await _connect(_path(guest.pk), _headers(client))
    assert not connected
    assert code == ws_base.CLOSE_FORBIDDEN


# --- the bridge, with a fake stream --------------------------------------------------------


@pytest.mark.asyncio
async def test_operator_types_and_watches(
    guest: Guest, operator_client: Client, fake_libvirt: dict[str, Any]
) -> None:
    communicator = await _open(operator_client, guest)
    status = await _next_json(communicator)
    assert status == {"type": "console.status", "state": "connected", "readonly": False,
                      "guest": "web1", "host": "console-host"}
    (console,) = FakeConsole.instances
    assert console.target == VirtTarget("test:///default", allow_insecure=False)
    assert console.uuid == str(guest.uuid)

    console.feed(b"login: ")
    assert await communicator.receive_from(timeout=5) == b"login: "
    await communicator.send_to(bytes_data=b"root\r")
    await communicator.send_to(text_data="ls \u00e9\r")  # text frames go as UTF-8
    await _until(lambda: len(console.writes) == 2)
    assert console.writes == [b"root\r", "ls \u00e9\r".encode()]

    fake_libvirt["state"] = "shutoff"
    console.feed(b"Power down.\r\n", eof=True)
    assert await communicator.receive_from(timeout=5) == b"Power down.\r\n"
    message, code = await _closed_with(communicator)
    assert message["reason"] == "stopped"
    assert code == text_consumer.CLOSE_GUEST_STOPPED
    await communicator.disconnect()

    audit = await AuditRecord.objects.aget(action="guest.console")
    assert audit.username == "oscar-operator"
    assert audit.target_type == "guests.guest" and audit.target_id == str(guest.pk)
    assert audit.detail["readonly"] is False
    assert audit.message == "Opened the console of web1 on console-host"
    assert set(audit.detail) == {"host", "readonly", "client"}


@pytest.mark.asyncio
async def test_viewer_watches_read_only(
    guest: Guest, viewer_client: Client, fake_libvirt: dict[str, Any]
) -> None:
    communicator = await _open(viewer_client, guest)
    status = await _next_json(communicator)
    assert status["state"] == "connected" and status["readonly"] is True
    (console,) = FakeConsole.instances
    console.feed(b"tick 1\r\n")
    assert await communicator.receive_from(timeout=5) == b"tick 1\r\n"

    await communicator.send_to(bytes_data=b"reboot\r")
    notice = await _next_json(communicator)
    assert notice["type"] == "console.readonly"
    await communicator.send_to(text_data="halt\r")  # the notice comes once
    console.feed(b"tick 2\r\n")
    assert await communicator.receive_from(timeout=5) == b"tick 2\r\n"
    assert console.writes == []

    await communicator.disconnect()
    await _until(lambda: console.close_calls == 1)
    audit = await AuditRecord.objects.aget(action="guest.console")
    assert audit.username == "vera-viewer" and audit.detail["readonly"] is True
    assert audit.message == "Opened the console of web1 on console-host (read-only)"


@pytest.mark.asyncio
async def test_stopped_guest_says_so(
    guest: Guest, viewer_client: Client, fake_libvirt: dict[str, Any]
) -> None:
    FakeConsole.open_error = VirtOperationError("domain is not running")
    fake_libvirt["state"] = "shutoff"
    communicator = await _open(viewer_client, guest)
    message, code = await _closed_with(communicator)
    assert message["reason"] == "not-running" and "not running" in message["message"]
    assert code == text_consumer.CLOSE_GUEST_STOPPED
    assert not await AuditRecord.objects.filter(action="guest.console").aexists()


@pytest.mark.asyncio
async def test_unreachable_host_is_an_error(
    guest: Guest, viewer_client: Client, fake_libvirt: dict[str, Any], monkeypatch: Any
) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise HostUnreachable("Cannot reach host 'x'")

    FakeConsole.open_error = HostUnreachable("Cannot reach host 'x'")
    monkeypatch.setattr(diagnosis.virt, "get_domain", unreachable)
    communicator = await _open(viewer_client, guest)
    message, code = await _closed_with(communicator)
    assert message == {"type": "console.closed", "reason": "error",
                       "message": "Cannot reach host 'x'"}
    assert code == text_consumer.CLOSE_CONSOLE_ERROR


@pytest.mark.asyncio
async def test_taken_over_console_does_not_fight_back(
    guest: Guest, operator_client: Client, fake_libvirt: dict[str, Any]
) -> None:
    communicator = await _open(operator_client, guest)
    await _next_json(communicator)
    (console,) = FakeConsole.instances
    console.feed(error=HostUnreachable("stream had I/O failure"))  # what libvirt reports
    message, code = await _closed_with(communicator)
    assert message["reason"] == "taken-over"
    assert code == text_consumer.CLOSE_TAKEN_OVER


@pytest.mark.asyncio
async def test_domain0_has_no_console_here(
    guest: Guest, admin_client_tx: Client, fake_libvirt: dict[str, Any]
) -> None:
    await Guest.objects.filter(pk=guest.pk).aupdate(is_privileged=True, name="Domain-0")
    communicator = await _open(admin_client_tx, guest)
    message, code = await _closed_with(communicator)
    assert message["reason"] == "no-console"
    assert code == text_consumer.CLOSE_NO_CONSOLE
    assert FakeConsole.instances == []


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


# --- the page -------------------------------------------------------------------------------


def _page(client: Client, guest_pk: int) -> Any:
    return client.get(f"/guests/{guest_pk}/console/")


def test_console_page(guest: Guest, viewer_client: Client, operator_client: Client) -> None:
    viewer = _page(viewer_client, guest.pk)
    assert viewer.status_code == 200
    body = viewer.content.decode()
    assert f'data-console-ws="/ws/guests/{guest.pk}/console/"' in body
    assert 'data-readonly="true"' in body and "console-viewer-note" in body
    assert "vendor/xterm/xterm.js" in body and "xenweb/console.js" in body
    assert "never takes the console over" in body

    operator = _page(operator_client, guest.pk).content.decode()
    assert 'data-readonly="false"' in operator and "console-viewer-note" not in operator
    assert "takes the console over from any other session" in operator
    assert _page(operator_client, 999999).status_code == 404
    assert _page(Client(), guest.pk).status_code == 302
