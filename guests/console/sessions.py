"""What a guest's console websockets (text and VNC) share: the guest they are about, checked
once in connect() (watching needs guests.view_guest, typing or clicking guests.change_guest),
the audit record and status message of a session that opened, and how a session ends (its
last status message, then the close code)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from guests.models import Guest
from hosts.virt import VirtTarget
from xenweb.audit.services import record
from xenweb.ws_base import CLOSE_NO_CONSOLE, CLOSE_NOT_FOUND, AdmittingWebsocketConsumer

VIEW_PERMISSION = "guests.view_guest"
ACT_PERMISSION = "guests.change_guest"


@dataclass(frozen=True)
class GuestSessionTarget:
    guest_pk: int
    name: str
    uuid: str
    host_name: str
    host_uri: str
    allow_insecure_transport: bool
    is_privileged: bool
    may_act: bool  # may type/click; otherwise read-only

    @property
    def virt_target(self) -> VirtTarget:
        return VirtTarget(self.host_uri, self.allow_insecure_transport)


@dataclass(frozen=True)
class Ending:
    """Why a session ended (or never began): the last message and the close code."""

    reason: str
    message: str
    code: int


def gone(target: GuestSessionTarget) -> Ending:
    return Ending("gone", f"The guest {target.name} no longer exists on {target.host_name}.",
                  CLOSE_NO_CONSOLE)


@database_sync_to_async
def load_target(user: Any, guest_pk: int) -> GuestSessionTarget | None:
    guest = Guest.objects.select_related("host").filter(pk=guest_pk).first()
    if guest is None:
        return None
    return GuestSessionTarget(
        guest_pk=guest.pk, name=guest.name, uuid=str(guest.uuid), host_name=guest.host.name,
        host_uri=guest.host.uri, allow_insecure_transport=guest.host.allow_insecure_transport,
        is_privileged=guest.is_privileged,
        may_act=user.has_perm(ACT_PERMISSION),
    )


@database_sync_to_async
def _audit_opened(action: str, user: Any, target: GuestSessionTarget, message: str,
                  fields: dict[str, Any], client: str | None) -> None:
    record(action, user=user, target_type="guests.guest", target_id=target.guest_pk,
           target_label=target.name, message=message, host=target.host_name, **fields,
           client=client)


class GuestSessionConsumer(AdmittingWebsocketConsumer):
    """The base of a websocket bridged to one of a guest's consoles: users who may view
    guests are admitted (4401, 4403), to a guest that exists (4404). ``kind`` names the
    status messages (``<kind>.status``, ``<kind>.closed``: the one sent just before the
    server closes the socket) and the audit record of an opened session
    (``guest.<kind>``). A subclass reaches the console in ``start()``, once the handshake
    is accepted, and calls ``opened()`` when it is connected."""

    # No channel layer: a console joins no group, so it needs no Redis round trips (and
    # keeps working while Redis is away). An alias that is not configured means "none".
    channel_layer_alias = "guest-sessions-use-no-channel-layer"
    permission = VIEW_PERMISSION
    kind = ""
    title = ""  # the console, as the audit record's message names it
    restricted = ""  # the session of a user who may not act, as the message says it
    subprotocol: str | None = None  # accepted when the browser offers it
    target: GuestSessionTarget | None = None
    pump: asyncio.Task[None] | None = None
    ending = False

    async def connect(self) -> None:
        user = await self.admit()
        if user is None:
            return
        target = await load_target(user, int(self.scope["url_route"]["kwargs"]["guest_id"]))
        if target is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.target = target
        requested = self.scope.get("subprotocols") or []
        await self.accept(self.subprotocol if self.subprotocol in requested else None)
        await self.start(user, target)

    async def start(self, user: Any, target: GuestSessionTarget) -> None:
        """Reach the console (the handshake is accepted): ``opened()``, or ``_end()``."""
        raise NotImplementedError

    async def opened(self, user: Any, target: GuestSessionTarget, **fields: Any) -> None:
        """The session is connected: audited, with ``fields`` (read-only or view-only, the
        route...), and said to the browser with the same ``fields``."""
        message = (f"Opened the {self.title} of {target.name} on {target.host_name}"
                   + (f" ({self.restricted})" if not target.may_act else ""))
        client = self.scope.get("client")
        await _audit_opened(f"guest.{self.kind}", user, target, message, fields,
                            client[0] if client else None)
        await self._send_json({"type": f"{self.kind}.status", "state": "connected", **fields,
                               "guest": target.name, "host": target.host_name})

    async def stop_pump(self) -> None:
        """Cancel the task relaying the console to the browser (unless it is the caller)."""
        pump, self.pump = self.pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    async def _end(self, ending: Ending) -> None:
        if self.ending:
            return
        self.ending = True
        await self._send_json({"type": f"{self.kind}.closed", "reason": ending.reason,
                               "message": ending.message})
        await self.close(code=ending.code)

    async def _send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content))
