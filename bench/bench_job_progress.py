"""Job progress latency: from a task's `ProgressReporter.update()` to a browser's
websocket (the web server, real Redis channel layer), against the baseline of a bare channel-layer
`group_send` of the same message to the same socket (what any progress push costs)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import websockets
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.test import Client

from bench.stats import latency_summary
from tests.live.processes import WebServer
from xenweb.accounts.roles import ADMIN, set_role, sync_roles
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.serializers import job_payload
from xenweb.realtime import job_group

ROUNDS = 300


async def measure(server: WebServer, cookie: str, job: Job, send: Any) -> list[float]:
    headers = {"Origin": server.origin, "Cookie": f"sessionid={cookie}"}
    url = server.ws_url(f"/ws/jobs/{job.pk}/")
    latencies = []
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()  # the snapshot
        for i in range(1, ROUNDS + 1):
            start = time.perf_counter()
            await asyncio.to_thread(send, i)
            while json.loads(await ws.recv())["job"]["done"] != i:
                pass
            latencies.append(time.perf_counter() - start)
    return latencies


def run() -> dict[str, Any]:
    sync_roles()
    user, _ = get_user_model().objects.get_or_create(username="bench")
    set_role(user, ADMIN)
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    job = Job.objects.create(kind="bench", title="bench", state=JobState.RUNNING, total=ROUNDS)
    reporter = ProgressReporter(job, interval=0)
    payload = job_payload(job)
    layer = get_channel_layer()

    def via_reporter(i: int) -> None:
        reporter.update(i, force=True)

    def baseline(i: int) -> None:
        async_to_sync(layer.group_send)(
            job_group(job.pk), {"type": "job.update", "job": {**payload, "done": i}}
        )

    server = WebServer()
    try:
        base = latency_summary(asyncio.run(measure(server, cookie, job, baseline)))
        app = latency_summary(asyncio.run(measure(server, cookie, job, via_reporter)))
    finally:
        server.stop()
        job.delete()
    result = {"rounds": ROUNDS, "baseline_group_send": base, "progress_reporter": app,
              "ratio_p50": round(app["p50_ms"] / base["p50_ms"], 2),
              "ratio_p99": round(app["p99_ms"] / base["p99_ms"], 2)}
    print(f"  bare group_send   p50 {base['p50_ms']:.2f} ms  p99 {base['p99_ms']:.2f} ms")
    print(f"  ProgressReporter  p50 {app['p50_ms']:.2f} ms  p99 {app['p99_ms']:.2f} ms")
    print(f"  ratio (reporter/baseline)  p50 {result['ratio_p50']}x  p99 {result['ratio_p99']}x")
    return result
