"""Jobs through the real thing: a Celery worker on the real Redis, the web server serving the
websocket, and a websocket client reading the progress stream."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets
from django.test import Client

from tests.live.processes import CeleryWorker, WebServer, wait_for
from xenweb.jobs import services
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.tasks import selftest

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def job_state(job_id: int) -> str:
    return Job.objects.values_list("state", flat=True).get(pk=job_id)


def wait_state(job_id: int, states: tuple[str, ...], timeout: float = 60) -> Job:
    wait_for(lambda: job_state(job_id) in states, timeout, f"job {job_id} in {states}")
    return Job.objects.get(pk=job_id)


async def read_stream(server: WebServer, client: Client, job_id: int) -> list[dict[str, Any]]:
    """Every job message until the job is finished."""
    headers = {
        "Origin": server.origin,
        "Cookie": f"sessionid={client.cookies['sessionid'].value}",
    }
    messages = []
    url = server.ws_url(f"/ws/jobs/{job_id}/")
    async with websockets.connect(url, additional_headers=headers, open_timeout=20) as ws:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
            messages.append(message["job"])
            if message["job"]["state"] not in ("queued", "running"):
                return messages


def test_progress_streams_in_order_to_the_finish(
    live_worker: CeleryWorker, web_server: WebServer, admin_client_tx: Client
) -> None:
    response = admin_client_tx.post(
        "/api/v1/jobs/selftest/", {"steps": 12, "step_seconds": 0.3},
        content_type="application/json",
    )
    assert response.status_code == 202
    body = response.json()
    assert body["url"] == f"/api/v1/jobs/{body['id']}/"
    assert body["state"] == "queued"

    messages = asyncio.run(read_stream(web_server, admin_client_tx, body["id"]))

    assert messages[0]["seq"] == 0  # the snapshot sent on connect
    updates = messages[1:]
    assert len(updates) >= 3, messages
    seqs = [m["seq"] for m in updates]
    assert seqs == sorted(seqs), "messages arrived out of order"
    done = [m["done"] for m in updates]
    assert done == sorted(done), "progress went backwards"
    assert any(0 < m["progress"] < 1 for m in updates), "no intermediate progress was seen"
    final = messages[-1]
    assert final["state"] == "succeeded" and final["progress"] == 1.0
    assert final["result"] == {"steps": 12}

    api = admin_client_tx.get(body["url"]).json()
    assert api["state"] == "succeeded"
    assert api["progress"] == 1.0 and api["done"] == 12 and api["total"] == 12
    assert api["error"] == "" and api["result"] == {"steps": 12}
    assert any("step 12 of 12" in line for line in api["log"])


def test_failure_is_reported_with_its_reason(
    live_worker: CeleryWorker, admin_client_tx: Client
) -> None:
    response = admin_client_tx.post(
        "/api/v1/jobs/selftest/", {"steps": 5, "step_seconds": 0.05, "fail_at": 3},
        content_type="application/json",
    )
    job = wait_state(response.json()["id"], ("failed",))
    assert job.error == "Self-test failed on purpose at step 3."
    assert job.finished_at is not None


def test_cancel_a_running_job(live_worker: CeleryWorker, admin_client_tx: Client) -> None:
    response = admin_client_tx.post(
        "/api/v1/jobs/selftest/", {"steps": 600, "step_seconds": 0.1},
        content_type="application/json",
    )
    job_id = response.json()["id"]
    wait_for(lambda: Job.objects.get(pk=job_id).done >= 2, 60, "the job to make progress")
    cancelled = admin_client_tx.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert cancelled.status_code == 200
    job = wait_state(job_id, ("cancelled",))
    assert job.done < 600
    assert job.message == "Cancelled"
    again = admin_client_tx.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]


def test_cancel_a_queued_job_never_runs_it(admin_client_tx: Client) -> None:
    # No worker consumes this queue: the job stays queued until cancelled.
    job = services.start_job(selftest.name, kind="selftest", owner=None, queue="xenweb-test-idle",
                             params={"steps": 1})
    response = admin_client_tx.post(f"/api/v1/jobs/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    worker = CeleryWorker(queue="xenweb-test-idle")
    try:
        time.sleep(2)  # give the worker a chance to (wrongly) run it
        job.refresh_from_db()
        assert job.state == JobState.CANCELLED and job.started_at is None
    finally:
        worker.stop()


def long_job_on_own_worker(queue: str) -> tuple[CeleryWorker, Job]:
    """A worker of its own (so killing it spares the shared one) running a long job."""
    worker = CeleryWorker(queue=queue, concurrency=1)
    job = services.start_job(selftest.name, kind="selftest", owner=None, queue=queue,
                             params={"steps": 1000, "step_seconds": 0.1})
    try:
        wait_for(lambda: Job.objects.get(pk=job.pk).done >= 1, 60, "the job to start")
    except BaseException:
        worker.kill()
        raise
    return worker, job


def test_killed_worker_leaves_the_job_interrupted_with_a_reason(
    admin_client_tx: Client,
) -> None:
    """SIGKILL to the whole worker (as the OOM killer would): no process survives to
    report, so the reaper (stale heartbeat) and a restarted worker must notice."""
    worker, job = long_job_on_own_worker("xenweb-test-crash")
    worker.kill()
    assert job_state(job.pk) == JobState.RUNNING  # nobody is left to say otherwise

    # Nothing heartbeats any more; once stale, the reaper marks the job interrupted.
    time.sleep(2.5)
    assert services.reap_stale_jobs(stale_after=2.0) == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.INTERRUPTED
    assert "The worker running this job stopped" in job.error
    assert f"no heartbeat from worker {worker.hostname}" in job.error
    assert job.finished_at is not None

    # A self-test is safe to repeat: the job page and the API offer to start it again.
    assert job.can_retry and 'id="retry-job"' in admin_client_tx.get(
        job.get_absolute_url()).content.decode()
    again = admin_client_tx.post(f"/api/v1/jobs/{job.pk}/retry/")
    assert again.status_code == 202, again.json()
    retried = Job.objects.get(pk=again.json()["id"])
    assert (retried.kind, retried.params) == (job.kind, job.params)
    assert retried.state in ("queued", "running", "succeeded")  # the session worker may run it
    unsafe = Job.objects.create(kind="guest.save", task_name="guests.tasks.save",
                                state=JobState.INTERRUPTED)
    refused = admin_client_tx.post(f"/api/v1/jobs/{unsafe.pk}/retry/")
    assert refused.status_code == 409 and "not safe to repeat" in refused.json()["detail"]


def test_restarted_worker_interrupts_what_it_was_running(admin_client_tx: Client) -> None:
    queue = "xenweb-test-restart"
    worker, job = long_job_on_own_worker(queue)
    worker.kill()
    again = CeleryWorker(hostname=worker.hostname, queue=queue, concurrency=1)
    try:
        job = wait_state(job.pk, (JobState.INTERRUPTED,), timeout=30)
        assert "the worker was restarted" in job.error
        time.sleep(1)
        job.refresh_from_db()
        assert job.state == JobState.INTERRUPTED  # and it was not run a second time
    finally:
        again.stop()


def test_killed_worker_process_is_noticed_by_its_parent(admin_client_tx: Client) -> None:
    """Only the pool process dies (SIGKILL): the worker's main process reports it."""
    worker, job = long_job_on_own_worker("xenweb-test-child")
    try:
        children = worker.children()
        assert children, "the prefork pool has no child process"
        for pid in children:
            worker.kill_pid(pid)
        job = wait_state(job.pk, (JobState.INTERRUPTED,), timeout=60)
        assert "The worker running this job stopped" in job.error
    finally:
        worker.stop()
