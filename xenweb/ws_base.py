"""What every websocket of the appliance shares: its close codes, who is admitted, and the
base of the JSON consumers that live on the channel layer (jobs, events).

- Admission (``AdmittingWebsocketConsumer.admit``, the first step of every consumer's
  connect()): a visitor who is not logged in is refused with 4401, a user without the
  consumer's ``permission`` with 4403. The Origin was checked before any consumer runs
  (xenweb.ws_origin); what a consumer finds missing after that is its own 4404.
- Client messages are decoded with the nesting limit of xenweb.json_limits; a malformed,
  too deep or binary message closes the socket with 1007/1003 instead of a traceback.
- Redis unreachable (the channel layer's groups and inbox live there): a handshake is
  refused cleanly (the server answers 403, the browser retries with its backoff) and an
  open socket is closed with 1013 "try again later", with one warning in the log instead
  of an exception from the ASGI application (which uvicorn answered with a 500).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis.exceptions
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer

from xenweb import json_limits

logger = logging.getLogger(__name__)

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)

# Close codes. The protocol's own (RFC 6455):
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_TRY_AGAIN_LATER = 1013
# Refusals, before the handshake is accepted (as HTTP's 401, 403, 404):
CLOSE_UNAUTHENTICATED = 4401  # not logged in
CLOSE_FORBIDDEN = 4403  # logged in, without the permission
CLOSE_NOT_FOUND = 4404  # no such object, or none this user may see
# Endings of a guest's console (text or graphical), after the handshake; the pages decide
# from the code whether to reconnect (static/xenweb/guest_session.js has the same numbers).
CLOSE_GUEST_STOPPED = 4000  # not running (any more): reconnect slowly, it may start again
CLOSE_TAKEN_OVER = 4001  # another session took the console: reconnect only on request
CLOSE_CONSOLE_ERROR = 4002  # the host, the stream or the tunnel failed: retry with backoff
CLOSE_NO_CONSOLE = 4003  # Domain-0, no such console or transport, guest gone: never retry
CLOSE_REFUSED_INPUT = 4004  # a view-only client sent what the proxy cannot check: no retry
CLOSE_IN_USE = 4005  # a viewer, and another session has the console: retry slowly


@database_sync_to_async
def _has_perm(user: Any, permission: str) -> bool:
    return bool(user.has_perm(permission))


class AdmittingWebsocketConsumer(AsyncWebsocketConsumer):
    """A consumer for logged-in users with ``permission`` ("": any logged-in user)."""

    permission = ""

    async def admit(self) -> Any | None:
        """The user, when admitted; None once the handshake was refused (4401 or 4403)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return None
        if self.permission and not await _has_perm(user, self.permission):
            await self.close(code=CLOSE_FORBIDDEN)
            return None
        return user


class LayerJsonWebsocketConsumer(AdmittingWebsocketConsumer, AsyncJsonWebsocketConsumer):
    groups_joined: list[str]
    _ws_state = "connecting"  # then "open" (accepted) or "closed"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.groups_joined = []

        async def tracked_send(message: dict[str, Any]) -> None:
            if message.get("type") == "websocket.accept":
                self._ws_state = "open"
            elif message.get("type") == "websocket.close":
                self._ws_state = "closed"
            await send(message)

        try:
            await super().__call__(scope, receive, tracked_send)
        except REDIS_ERRORS as exc:
            logger.warning("websocket %s: the channel layer (Redis) is unreachable (%s): %s",
                           scope.get("path"), type(exc).__name__, exc)
            if self._ws_state == "connecting":
                await send({"type": "websocket.close"})
            elif self._ws_state == "open":
                await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})
            self._ws_state = "closed"

    async def join(self, *groups: str) -> None:
        """Join the groups (Redis errors propagate: the handshake is then refused)."""
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)

    async def leave_all(self) -> None:
        """Leave every joined group; with Redis away the groups expire by themselves."""
        groups, self.groups_joined = self.groups_joined, []
        with contextlib.suppress(*REDIS_ERRORS):
            for group in groups:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        await self.leave_all()

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json_limits.loads(text_data)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                      **kwargs: Any) -> None:
        if text_data is None:
            await self.close(code=CLOSE_UNSUPPORTED_DATA)
            return
        try:
            content = await self.decode_json(text_data)
        except ValueError:
            await self.close(code=CLOSE_INVALID_PAYLOAD)
            return
        await self.receive_json(content, **kwargs)
