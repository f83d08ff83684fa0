"""Alerts arrive live on `/ws/events/` (real Redis channel layer): everyone's to every
socket, a job's only to those who see the job."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from tests.conftest import logged_in, make_user
from tests.events_socket import open_events_socket
from xenweb.accounts.roles import ADMIN, OPERATOR
from xenweb.alerts.models import Alert, AlertKind
from xenweb.alerts.services import acknowledge, raise_alert
from xenweb.jobs.models import Job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def events_socket(user: Any) -> WebsocketCommunicator:
    return await open_events_socket(await database_sync_to_async(logged_in)(user))


async def test_alerts_arrive_live_to_those_who_may_see_them(appliance_ready: Any) -> None:
    admin = await database_sync_to_async(make_user)("ada-admin", ADMIN)
    owner = await database_sync_to_async(make_user)("otto-operator", OPERATOR)
    other = await database_sync_to_async(make_user)("olga-operator", OPERATOR)
    sockets = {name: await events_socket(user)
               for name, user in (("admin", admin), ("owner", owner), ("other", other))}
    try:
        await database_sync_to_async(raise_alert)(
            AlertKind.HOST_UNREACHABLE, "host:5", "Host 'c' is unreachable: gone")
        for communicator in sockets.values():
            message = await communicator.receive_json_from(timeout=10)
            assert message["type"] == "alert.raised"
            assert message["alert"]["message"] == "Host 'c' is unreachable: gone"
        job = await Job.objects.acreate(kind="selftest", title="Secret self-test", owner=owner,
                                        state="failed")
        await database_sync_to_async(raise_alert)(
            AlertKind.JOB_FAILED, f"job:{job.pk}", "Job 'Secret self-test' failed.", job=job)
        for name in ("admin", "owner"):
            message = await sockets[name].receive_json_from(timeout=10)
            assert message["alert"]["message"] == "Job 'Secret self-test' failed.", name
        assert await sockets["other"].receive_nothing(timeout=1)
        await database_sync_to_async(acknowledge)(Alert.objects.all(), user=admin)
        for communicator in sockets.values():  # ids only: each page asks its own count
            message = await communicator.receive_json_from(timeout=10)
            assert message["type"] == "alert.acknowledged" and len(message["ids"]) == 2
    finally:
        for communicator in sockets.values():
            await communicator.disconnect()
