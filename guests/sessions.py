"""What a guest's console websockets (text and VNC) need of the guest, checked once in
connect(): who may watch (view) and who may type or click (change)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from guests.models import Guest

VIEW_PERMISSION = "guests.view_guest"
ACT_PERMISSION = "guests.change_guest"


@dataclass(frozen=True)
class GuestSessionTarget:
    guest_pk: int
    name: str
    uuid: str
    host_name: str
    host_uri: str
    is_lab: bool
    is_privileged: bool
    may_act: bool  # may type/click; otherwise read-only


@database_sync_to_async
def may_view(user: Any) -> bool:
    return user.has_perm(VIEW_PERMISSION)


@database_sync_to_async
def load_target(user: Any, guest_pk: int) -> GuestSessionTarget | None:
    guest = Guest.objects.select_related("host").filter(pk=guest_pk).first()
    if guest is None:
        return None
    return GuestSessionTarget(
        guest_pk=guest.pk, name=guest.name, uuid=str(guest.uuid), host_name=guest.host.name,
        host_uri=guest.host.uri, is_lab=guest.host.is_lab, is_privileged=guest.is_privileged,
        may_act=user.has_perm(ACT_PERMISSION),
    )
