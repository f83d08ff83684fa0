"""L3: answers that were server errors: a guest gone from libvirt behind the app's back,
and websockets while Redis (the channel layer) is unreachable. A private redis-server is
stopped here (tests/live/processes.PrivateRedis), never the suite's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from channels.testing import ApplicationCommunicator
from django.test import Client, override_settings

from guests.models import Guest
from hosts.models import Host
from tests.live.processes import PrivateRedis, WebServer
from xenweb.asgi import application
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job

# --- a guest removed from libvirt behind the app's back ---------------------------------


@pytest.fixture
def vanished(demo: Host) -> Guest:
    """A guest the inventory still lists whose domain libvirt no longer has."""
    return Guest.objects.create(host=demo, uuid=uuid.uuid4(), name="vanished", state="running",
                                vcpus=1, memory_mib=256)


@pytest.mark.django_db
@pytest.mark.parametrize("change", [{"vcpus": 2}, {"memory_mib": 128},
                                    {"vcpus": 2, "memory_mib": 128}])
def test_changing_a_vanished_guest_is_a_404(admin_client: Client, vanished: Guest,
                                            change: dict[str, int]) -> None:
    answer = admin_client.patch(f"/api/v1/guests/{vanished.pk}/", change,
                                content_type="application/json")
    assert answer.status_code == 404, answer.content
    assert "no longer exists" in answer.json()["detail"]
    failed = AuditRecord.objects.filter(result="failed", target_id=str(vanished.pk))
    assert failed.exists()  # the refusal is audited like any failed change


@pytest.mark.django_db
def test_the_hardware_page_says_so_too(admin_client: Client, vanished: Guest) -> None:
    answer = admin_client.post(f"/guests/{vanished.pk}/hardware/vcpus/", {"vcpus": "2"},
                               follow=True)
    assert answer.status_code == 200
    assert "no longer exists" in answer.content.decode()


@pytest.mark.django_db
def test_other_guest_actions_on_a_vanished_guest_are_no_server_errors(
    admin_client: Client, vanished: Guest,
) -> None:
    base = f"/api/v1/guests/{vanished.pk}"
    for method, path, body in [
        ("post", f"{base}/start/", {}), ("post", f"{base}/shutdown/", {}),
        ("post", f"{base}/pause/", {}), ("post", f"{base}/autostart/", {"enabled": True}),
        ("post", f"{base}/nics/", {"bridge": "xenbr0"}),
        ("delete", f"{base}/nics/00:16:3e:00:00:01/", None),
        ("delete", f"{base}/disks/xvdb/", None), ("get", f"{base}/", None),
    ]:
        answer = getattr(admin_client, method)(path, body, content_type="application/json")
        assert answer.status_code < 500, (method, path, answer.status_code, answer.content)


# --- websockets while Redis is unreachable ----------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


def _layer(redis: PrivateRedis) -> dict[str, Any]:
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                        "CONFIG": {"hosts": [{"address": f"{redis.url}/1",
                                              "socket_timeout": None}]}}}


def _scope(client: Client, path: str) -> dict[str, Any]:
    return {"type": "websocket", "path": path, "query_string": b"", "subprotocols": [],
            "headers": [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"),
                        (b"cookie",
                         f"sessionid={client.cookies['sessionid'].value}".encode())],
            "scheme": "ws", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_handshake_during_an_outage_is_refused_cleanly(
    admin_client_tx: Client, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture,
) -> None:
    job = await Job.objects.acreate(kind="selftest", title="t")
    private_redis.stop()
    with override_settings(CHANNEL_LAYERS=_layer(private_redis)):
        for path in ("/ws/events/", f"/ws/jobs/{job.pk}/"):
            communicator = ApplicationCommunicator(application, _scope(admin_client_tx, path))
            await communicator.send_input({"type": "websocket.connect"})
            assert await communicator.receive_output(20) == {"type": "websocket.close"}
            await communicator.wait(20)  # the application returned, without raising
    assert "the channel layer (Redis) is unreachable" in caplog.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_an_open_socket_is_closed_with_try_again_later(
    admin_client_tx: Client, private_redis: PrivateRedis,
) -> None:
    with override_settings(CHANNEL_LAYERS=_layer(private_redis)):
        communicator = ApplicationCommunicator(application,
                                               _scope(admin_client_tx, "/ws/events/"))
        await communicator.send_input({"type": "websocket.connect"})
        assert (await communicator.receive_output(20))["type"] == "websocket.accept"
        assert (await communicator.receive_output(20))["type"] == "websocket.send"  # hello
        await asyncio.to_thread(private_redis.stop)
        assert await communicator.receive_output(60) == {"type": "websocket.close",
                                                         "code": 1013}
        await communicator.wait(20)


@pytest.mark.django_db(transaction=True)
def test_the_web_server_answers_403_not_500_during_an_outage(
    admin_client_tx: Client, tmp_path: Path,
) -> None:
    """The real web process (uvicorn): the handshake is refused (HTTP 403, the browser
    retries with its backoff), no traceback in the log; once Redis is back it opens."""
    redis = PrivateRedis(tmp_path)
    server = None
    try:
        server = WebServer(env={"REDIS_URL": redis.url, "XENWEB_REDIS_DB_BASE": "0"})
        headers = {"Origin": server.origin,
                   "Cookie": f"sessionid={admin_client_tx.cookies['sessionid'].value}"}

        async def handshake() -> int:
            try:
                async with websockets.connect(server.ws_url("/ws/events/"),
                                              additional_headers=headers, open_timeout=30):
                    return 101
            except websockets.InvalidStatus as exc:
                return exc.response.status_code

        redis.stop()
        assert asyncio.run(handshake()) == 403
        assert "Exception in ASGI application" not in server.output()
        assert "Traceback" not in server.output()
        redis.start()
        assert asyncio.run(handshake()) == 101
    finally:
        if server is not None:
            server.stop()
        redis.stop()
