"""Redis stopped and started while the appliance runs (its own web server and worker on a
private redis-server): pages keep rendering with a banner, a job started meanwhile is
accepted and waits, and once Redis is back it runs. Nothing is lost."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.live.processes import CeleryWorker, PrivateRedis, WebServer, wait_for
from xenweb.accounts.tokens import create_token
from xenweb.jobs.models import Job

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def request(server: WebServer, method: str, path: str, headers: dict[str, str],
            body: dict[str, Any] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    payload = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=payload, headers={
        **headers, **({"Content-Type": "application/json"} if payload else {})})
    answer = conn.getresponse()
    return answer.status, answer.read().decode()


def test_redis_outage_keeps_pages_and_queues_jobs(admin_client_tx: Client,
                                                  tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path)
    env = {"REDIS_URL": redis.url, "XENWEB_REDIS_DB_BASE": "0"}
    server = worker = None
    try:
        server, worker = WebServer(env=env), CeleryWorker(env=env)
        user = get_user_model().objects.get(username="alice-admin")
        api = {"Authorization": f"Token {create_token(user)}"}
        browser = {"Cookie": f"sessionid={admin_client_tx.cookies['sessionid'].value}"}

        def selftest() -> int:
            status, body = request(server, "POST", "/api/v1/jobs/selftest/", api,
                                   {"steps": 2, "step_seconds": 0.1})
            assert status == 202, body
            return json.loads(body)["id"]

        def finished(job_id: int) -> bool:
            return Job.objects.get(pk=job_id).state == "succeeded"

        first = selftest()
        wait_for(lambda: finished(first), 60, "the job with Redis up")
        status, page = request(server, "GET", "/", browser)
        assert status == 200 and 'id="services-banner"' not in page

        redis.stop()
        time.sleep(3.5)  # the health check is cached for 3 s per process
        status, page = request(server, "GET", "/guests/", browser)
        assert status == 200 and 'id="services-banner"' in page
        status, _ = request(server, "GET", "/api/v1/guests/", api)
        assert status == 200
        waiting = selftest()  # accepted, not a server error
        job = Job.objects.get(pk=waiting)
        assert job.state == "queued" and job.dispatch_pending
        assert "Waiting for the message broker" in job.message

        redis.start()  # the same port, empty: the job's message was never sent
        wait_for(lambda: finished(waiting), 90, "the job queued while Redis was down")
        time.sleep(3.5)
        status, page = request(server, "GET", "/", browser)
        assert status == 200 and 'id="services-banner"' not in page
    finally:
        for process in (worker, server):
            if process is not None:
                process.stop()
        redis.stop()
