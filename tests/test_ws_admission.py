"""xenweb.ws_base.AdmittingWebsocketConsumer: who every websocket admits, in one place (the
consumers' own tests show each of them refusing through it)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from guests.console.sessions import VIEW_PERMISSION, GuestSessionConsumer
from guests.console.text_consumer import GuestConsoleConsumer
from guests.console.vnc_consumer import GuestVncConsumer
from tests.conftest import make_user
from xenweb import ws_base
from xenweb.accounts.roles import VIEWER
from xenweb.events import EventsConsumer
from xenweb.jobs.consumers import JobConsumer
from xenweb.ws_base import AdmittingWebsocketConsumer, LayerJsonWebsocketConsumer

pytestmark = pytest.mark.django_db(transaction=True)


class Probe(AdmittingWebsocketConsumer):
    permission = "jobs.view_job"

    async def connect(self) -> None:
        user = await self.admit()
        if user is not None:
            await self.accept()
            await self.send(text_data=user.get_username())


class AnyUser(Probe):
    permission = ""


async def handshake(consumer: type[AdmittingWebsocketConsumer], user: Any) -> tuple[bool, Any]:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/probe/")
    communicator.scope["user"] = user
    connected, detail = await communicator.connect()
    if connected:
        detail = await communicator.receive_from()
        await communicator.disconnect()
    return connected, detail


@pytest.mark.asyncio
async def test_anonymous_visitors_are_refused_with_4401() -> None:
    assert await handshake(Probe, AnonymousUser()) == (False, ws_base.CLOSE_UNAUTHENTICATED)
    assert await handshake(Probe, None) == (False, ws_base.CLOSE_UNAUTHENTICATED)
    assert await handshake(AnyUser, AnonymousUser()) == (False, ws_base.CLOSE_UNAUTHENTICATED)


@pytest.mark.asyncio
async def test_users_without_the_permission_are_refused_with_4403() -> None:
    nobody = await get_user_model().objects.acreate(username="nobody")
    assert await handshake(Probe, nobody) == (False, ws_base.CLOSE_FORBIDDEN)
    assert await handshake(AnyUser, nobody) == (True, "nobody")  # no permission asked


@pytest.mark.asyncio
async def test_users_with_the_permission_are_admitted() -> None:
    viewer = await sync_to_async(make_user)("watcher", VIEWER)
    assert await handshake(Probe, viewer) == (True, "watcher")


def test_every_consumer_admits_through_the_base() -> None:
    assert issubclass(LayerJsonWebsocketConsumer, AdmittingWebsocketConsumer)
    assert JobConsumer.permission == "jobs.view_job"
    assert EventsConsumer.permission == ""
    for consumer in (GuestConsoleConsumer, GuestVncConsumer):
        assert issubclass(consumer, GuestSessionConsumer)
        assert consumer.permission == VIEW_PERMISSION
