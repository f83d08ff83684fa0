"""`/ws/events/`: inventory changes and job summaries for dashboards and lists."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from channels.db import database_sync_to_async

from xenweb.jobs.visibility import summary_groups_for
from xenweb.realtime import EVENTS_GROUP, user_group
from xenweb.ws_base import LayerJsonWebsocketConsumer

SUMMARIES_KEPT = 256


class EventsConsumer(LayerJsonWebsocketConsumer):
    last_summaries: OrderedDict[Any, dict]

    async def connect(self) -> None:
        self.last_summaries = OrderedDict()
        user = await self.admit()  # any logged-in user
        if user is None:
            return
        # Inventory changes go to everyone; job summaries only to those who may see the
        # job: the owner's group and the groups of xenweb.jobs.visibility.
        job_groups = await database_sync_to_async(summary_groups_for)(user)
        await self.join(EVENTS_GROUP, user_group(user.pk), *job_groups)
        await self.accept()
        await self.send_json({"type": "hello", "user": user.get_username()})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""

    async def job_update(self, event: dict[str, Any]) -> None:
        # A summary reaches a user through every group of theirs it was sent to (their own
        # and the target's, or all jobs'): the same one twice in a row is sent once.
        job = event.get("job") or {}
        key = job.get("id")
        if key is not None and self.last_summaries.get(key) == job:
            return
        if key is not None:
            self.last_summaries[key] = job
            self.last_summaries.move_to_end(key)
            while len(self.last_summaries) > SUMMARIES_KEPT:
                self.last_summaries.popitem(last=False)
        await self.send_json(event)

    async def inventory_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def alert_raised(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def alert_acknowledged(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def metrics_update(self, event: dict[str, Any]) -> None:
        # A host's samples were taken (beat's metrics round): pages with graphs redraw.
        await self.send_json(event)
