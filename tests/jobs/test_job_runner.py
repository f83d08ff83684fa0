"""The job machinery in-process: claim, outcome, throttled progress, cancel, reaper."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from xenweb.audit.models import AuditRecord
from xenweb.jobs import services
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.progress import ProgressReporter, RateMeter
from xenweb.jobs.runner import run_job
from xenweb.jobs.tasks import selftest

pytestmark = pytest.mark.django_db


def new_job(**fields: Any) -> Job:
    return Job.objects.create(kind="test", title="test", **fields)


def run(job: Job, body: Any) -> Job:
    run_job(job.pk, body, task_id="t-1", worker="w@test")
    job.refresh_from_db()
    return job


def test_success_records_result_and_full_progress() -> None:
    def body(job: Job, reporter: ProgressReporter) -> dict:
        reporter.update(5, total=10, message="half")
        reporter.log("did things")
        return {"answer": 42}

    job = run(new_job(), body)
    assert job.state == JobState.SUCCEEDED
    assert job.result == {"answer": 42}
    assert (job.progress, job.done, job.total) == (1.0, 10, 10)
    assert job.started_at and job.finished_at and job.worker == "w@test"
    assert job.log_lines[-1].endswith("did things")


def test_unexpected_exception_fails_with_a_message() -> None:
    def body(job: Job, reporter: ProgressReporter) -> None:
        raise ValueError("disk on fire")

    job = run(new_job(), body)
    assert job.state == JobState.FAILED
    assert job.error == "Internal error: ValueError: disk on fire"


def test_a_job_runs_at_most_once() -> None:
    calls = []

    def body(job: Job, reporter: ProgressReporter) -> None:
        calls.append(job.pk)

    job = run(new_job(), body)
    assert job.state == JobState.SUCCEEDED
    run(job, body)  # a redelivered message
    assert calls == [job.pk]


def test_redelivery_of_a_running_job_interrupts_it_instead_of_running_again() -> None:
    job = new_job(state=JobState.RUNNING, started_at=timezone.now(), celery_task_id="t-1")
    calls = []
    job = run(job, lambda job, reporter: calls.append(1))
    assert calls == []
    assert job.state == JobState.INTERRUPTED
    assert "delivered again" in job.error


def test_a_stray_task_for_a_running_job_is_ignored() -> None:
    """A message of another task naming the same job id (say, left in the queue from before
    the database was reset) neither runs the body nor disturbs the running job."""
    job = new_job(state=JobState.RUNNING, started_at=timezone.now(), celery_task_id="t-9")
    calls = []
    job = run(job, lambda job, reporter: calls.append(1))
    assert calls == [] and job.state == JobState.RUNNING


def test_progress_writes_are_throttled_but_forced_ones_pass() -> None:
    job = new_job(state=JobState.RUNNING)
    reporter = ProgressReporter(job, interval=3600)
    for done in range(1, 101):
        reporter.update(done, total=100)
    assert reporter.seq == 1  # only the first update was written
    assert Job.objects.get(pk=job.pk).done == 1
    reporter.update(100, force=True)
    assert reporter.seq == 2
    stored = Job.objects.get(pk=job.pk)
    assert (stored.done, stored.progress) == (100, 1.0)
    assert stored.heartbeat_at is not None


def test_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("xenweb.jobs.progress.time.monotonic", lambda: clock[0])
    job = new_job(state=JobState.RUNNING)
    reporter = ProgressReporter(job, interval=0)
    reporter.update(0, total=1000, unit="bytes")
    clock[0] = 2.0
    reporter.update(100)
    stored = Job.objects.get(pk=job.pk)
    assert stored.unit == "bytes"
    assert stored.rate == 50.0  # 100 bytes in 2 s
    assert stored.eta_seconds == 18.0  # 900 bytes left at 50 B/s
    assert stored.progress == 0.1


def test_rate_meter_smooths_and_ignores_going_backwards() -> None:
    meter = RateMeter(smoothing=0.5)
    assert meter.sample(0.0, 0) is None
    assert meter.sample(1.0, 100) == 100.0
    assert meter.sample(2.0, 300) == 150.0  # half of 200/s, half of 100/s
    assert meter.sample(3.0, 200) == 150.0


def test_cancel_request_stops_a_running_body() -> None:
    def body(job: Job, reporter: ProgressReporter) -> None:
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)  # the user clicks cancel
        for step in range(100):
            reporter.update(step, total=100, force=True)
        raise AssertionError("not reached")

    job = run(new_job(), body)
    assert job.state == JobState.CANCELLED
    assert job.done < 100


def test_cancel_of_queued_job_and_refusals(admin_user: Any) -> None:
    job = new_job()
    services.cancel_job(job, user=admin_user)
    assert job.state == JobState.CANCELLED
    with pytest.raises(JobError, match="already finished"):
        services.cancel_job(job, user=admin_user)
    stuck = new_job(state=JobState.RUNNING, cancellable=False, message="Xen cannot abort")
    with pytest.raises(JobError, match="cannot be cancelled"):
        services.cancel_job(stuck, user=admin_user)
    assert AuditRecord.objects.filter(action="job.cancel", username=admin_user.username).exists()


def test_reaper_marks_only_stale_running_jobs() -> None:
    old = timezone.now() - timedelta(minutes=5)
    stale = new_job(state=JobState.RUNNING, heartbeat_at=old, worker="w1@h")
    fresh = new_job(state=JobState.RUNNING, heartbeat_at=timezone.now())
    queued = new_job()
    assert services.reap_stale_jobs(stale_after=60) == [stale.pk]
    stale.refresh_from_db()
    assert stale.state == JobState.INTERRUPTED
    assert "no heartbeat from worker w1@h" in stale.error
    assert Job.objects.get(pk=fresh.pk).state == JobState.RUNNING
    assert Job.objects.get(pk=queued.pk).state == JobState.QUEUED


def test_selftest_api_answers_202_with_the_job(admin_client: Client) -> None:
    response = admin_client.post("/api/v1/jobs/selftest/", {"steps": 3},
                                 content_type="application/json")
    assert response.status_code == 202
    data = response.json()
    assert data["url"] == f"/api/v1/jobs/{data['id']}/"
    assert data["state"] == "queued" and data["total"] == 3
    job = Job.objects.get(pk=data["id"])
    assert job.owner.username == "alice-admin"
    detail = admin_client.get(data["url"]).json()
    for key in ("state", "progress", "message", "error", "result", "rate", "eta_seconds",
                "done", "total", "unit", "log"):
        assert key in detail
    listed = admin_client.get("/api/v1/jobs/?state=active").json()
    assert listed["count"] == 1
    bad = admin_client.get("/api/v1/jobs/?state=exploded")
    assert bad.status_code == 400 and "Unknown state" in bad.json()["state"]


def test_selftest_api_rejects_bad_input(admin_client: Client) -> None:
    for payload in ({"steps": 0}, {"steps": 10**9}, {"steps": "many"}, {"step_seconds": -1}):
        response = admin_client.post("/api/v1/jobs/selftest/", payload,
                                     content_type="application/json")
        assert response.status_code == 400, payload
    assert not Job.objects.exists()


def test_selftest_body_directly() -> None:
    job = new_job(params={"steps": 3, "step_seconds": 0})
    job = run(job, selftest.body)
    assert job.state == JobState.SUCCEEDED and job.result == {"steps": 3}


def test_job_pages(admin_client: Client) -> None:
    job = new_job(state=JobState.FAILED, error="boom <b>")
    page = admin_client.get(f"/jobs/{job.pk}/").content.decode()
    assert "boom &lt;b&gt;" in page and f'data-job-id="{job.pk}"' in page
    assert admin_client.get("/jobs/?state=failed").status_code == 200
    assert admin_client.get("/").status_code == 200
    assert admin_client.get("/dashboard/jobs/").status_code == 200
    response = admin_client.post("/jobs/selftest/")
    assert response.status_code == 302 and response["Location"].startswith("/jobs/")
