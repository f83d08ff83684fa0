"""Broadcasting hints over the channel layer.

The channel layer is lossy (at-most-once, drops over capacity): a message is a hint
that something changed, the database row is the truth, and clients re-read on
(re)connect. A broadcast therefore never fails the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

EVENTS_GROUP = "events"


def job_group(job_id: int) -> str:
    return f"job.{job_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


async def abroadcast(groups: Iterable[str], message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            await layer.group_send(group, message)
        except Exception as exc:  # Redis down or the group over capacity: drop the hint
            log.warning("broadcast to %s dropped: %s", group, exc)


def broadcast(groups: Iterable[str], message: dict[str, Any]) -> None:
    async_to_sync(abroadcast)(list(groups), message)
