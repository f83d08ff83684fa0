from __future__ import annotations

from xenweb.jobs.models import Job
from xenweb.jobs.serializers import job_payload
from xenweb.jobs.visibility import audience
from xenweb.realtime import broadcast, job_group


def notify_job(job: Job, *, seq: int = 0) -> None:
    """Hint the job's watchers (full record) and those who may see it (summary).

    The job's own group is joined only after the visibility check (JobConsumer); the
    summary goes to the owner, to whoever sees every job and to whoever may act on the
    job's target, never to a group every user joins."""
    payload = job_payload(job)
    payload["seq"] = seq
    broadcast([job_group(job.pk)], {"type": "job.update", "job": payload})
    summary = {key: value for key, value in payload.items() if key not in ("log", "result")}
    broadcast(audience(job), {"type": "job.update", "job": summary})
