"""`/ws/events/`: inventory changes and job summaries for dashboards and lists."""

from __future__ import annotations

from typing import Any

from xenweb.realtime import EVENTS_GROUP, user_group
from xenweb.ws_base import LayerJsonWebsocketConsumer

CLOSE_UNAUTHENTICATED = 4401


class EventsConsumer(LayerJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.join(EVENTS_GROUP, user_group(user.pk))
        await self.accept()
        await self.send_json({"type": "hello", "user": user.get_username()})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen."""

    async def job_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def inventory_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event)
