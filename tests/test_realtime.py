"""xenweb.realtime: broadcasts from synchronous code go out through one lasting event loop
(real Redis channel layer) and reach the group's members."""

from __future__ import annotations

import asyncio

from channels.layers import get_channel_layer

from xenweb import realtime


def test_sync_broadcasts_reach_the_group_through_one_loop() -> None:
    layer = get_channel_layer()

    async def join() -> str:
        channel = await layer.new_channel()
        await layer.group_add("test.realtime", channel)
        return channel

    async def receive(channel: str) -> dict:
        return await asyncio.wait_for(layer.receive(channel), 10)

    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(join())
        realtime.broadcast(["test.realtime"], {"type": "job.update", "n": 1})
        first = realtime._sender_loop()
        realtime.broadcast(["test.realtime"], {"type": "job.update", "n": 2})
        assert realtime._sender_loop() is first
        got = [loop.run_until_complete(receive(channel))["n"] for _ in range(2)]
        loop.run_until_complete(layer.group_discard("test.realtime", channel))
    finally:
        loop.close()
    assert got == [1, 2]
