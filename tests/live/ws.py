"""Collecting job messages from a websocket while some work runs in a thread."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from tests.live.processes import WebServer

DRAIN_SECONDS = 15


async def job_messages_while(server: WebServer, cookie: str, path: str,
                             work: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``work`` in a thread; return its result and the ``job.update`` payloads that
    arrived on ``path`` (``/ws/events/`` or ``/ws/jobs/<id>/``) meanwhile, in order."""
    headers = {"Origin": server.origin, "Cookie": f"sessionid={cookie}"}
    messages: list[dict[str, Any]] = []
    async with websockets.connect(server.ws_url(path), additional_headers=headers,
                                  open_timeout=20, max_size=None) as ws:
        task = asyncio.create_task(asyncio.to_thread(work))
        while not task.done():
            await _receive_job_update(ws, messages)
        # The work (an HTTP request) can return before its job's final message is through
        # the channel layer: keep reading until every job seen has ended, or a grace period.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while _unfinished(messages) and loop.time() < deadline:
            await _receive_job_update(ws, messages)
        return task.result(), messages


async def _receive_job_update(ws: Any, messages: list[dict[str, Any]]) -> None:
    """Wait up to half a second for a message; keep it if it is a job update."""
    try:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout=0.5))
    except TimeoutError:
        return
    if message.get("type") == "job.update":
        messages.append(message["job"])


def latest(messages: list[dict[str, Any]], job_id: int) -> dict[str, Any]:
    """The job's newest message as the browser takes it: by `seq`, not by arrival (hints
    may overtake each other; the final one carries the highest seq)."""
    mine = [m for m in messages if m["id"] == job_id]
    return max(mine, key=lambda m: m.get("seq") or 0)


def _unfinished(messages: list[dict[str, Any]]) -> bool:
    return any(latest(messages, job_id)["state"] in ("queued", "running")
               for job_id in {m["id"] for m in messages})
