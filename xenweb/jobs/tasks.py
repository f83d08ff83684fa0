from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from xenweb.jobs import services
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.tasks_base import Retry, job_task


@job_task("xenweb.jobs.tasks.selftest", retry=Retry("jobs.add_job"))
def selftest(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    """A diagnostic job: proves worker, progress, websockets and cancel work end to end."""
    steps = int(job.params.get("steps", 10))
    delay = float(job.params.get("step_seconds", 0.5))
    fail_at = job.params.get("fail_at")
    reporter.update(0, total=steps, message="Self-test started", force=True)
    for step in range(1, steps + 1):
        time.sleep(delay)
        if fail_at is not None and step == int(fail_at):
            raise JobError(f"Self-test failed on purpose at step {step}.")
        reporter.log(f"step {step} of {steps} done")
        reporter.update(step, message=f"Step {step} of {steps}")
    return {"steps": steps}


@shared_task(name="xenweb.jobs.tasks.reap_stale_jobs")
def reap_stale_jobs() -> list[int]:
    return services.reap_stale_jobs()


@shared_task(name="xenweb.jobs.tasks.redispatch_pending_jobs")
def redispatch_pending_jobs() -> list[int]:
    """Jobs created while the broker was down whose web process ended before sending them."""
    from xenweb.jobs.dispatch import redispatch_pending

    return redispatch_pending()
