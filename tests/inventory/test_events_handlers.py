"""Every message the server sends to `/ws/events/` has a handler in its consumer: one
without makes Channels raise "No handler for message type" and drop every open socket."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.test import Client

from hosts.models import Host
from hosts.virt.demo import demo_uri
from inventory.metrics import sample_host
from tests.events_socket import open_events_socket
from xenweb.events import EventsConsumer
from xenweb.realtime import EVENTS_GROUP

BASE = Path(__file__).resolve().parent.parent.parent
SOURCES = ("inventory", "guests", "hosts", "storage", "conversions", "xenweb")


def _event_types() -> set[str]:
    """The dotted "type" of every dict literal in a module that sends to EVENTS_GROUP."""
    found = set()
    for folder in SOURCES:
        for path in (BASE / folder).rglob("*.py"):
            text = path.read_text()
            if "EVENTS_GROUP" not in text or path.name == "realtime.py":
                continue
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Dict):
                    for key, value in zip(node.keys, node.values, strict=True):
                        # Layer messages are namespaced ("x.y"); "hello" goes to the page.
                        if (isinstance(key, ast.Constant) and key.value == "type"
                                and isinstance(value, ast.Constant) and "." in value.value):
                            found.add(value.value)
    return found


def test_every_event_the_server_sends_has_a_handler() -> None:
    types = _event_types()
    assert {"inventory.update", "metrics.update"} <= types, types
    for kind in types:
        assert callable(getattr(EventsConsumer, kind.replace(".", "_"), None)), kind


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_events_socket_stays_open_across_a_metrics_round(admin_client_tx: Client) -> None:
    host = await Host.objects.acreate(name="graphs", uri=demo_uri())
    communicator = await open_events_socket(admin_client_tx)
    await database_sync_to_async(sample_host)(host)
    update = await communicator.receive_json_from(timeout=10)
    assert update["type"] == "metrics.update" and update["host"] == host.pk
    # Still open: the next event arrives on the same socket.
    await get_channel_layer().group_send(EVENTS_GROUP, {"type": "inventory.update", "n": 1})
    assert await communicator.receive_json_from(timeout=10) == {"type": "inventory.update",
                                                                 "n": 1}
    await communicator.disconnect()
