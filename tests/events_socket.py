"""`/ws/events/` opened the way a logged-in browser tab opens it (same origin, session
cookie), up to the server's hello."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator
from django.test import Client

from xenweb.asgi import application


async def open_events_socket(client: Client) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/events/", headers=[
        (b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    assert (await communicator.receive_json_from(timeout=10))["type"] == "hello"
    return communicator
