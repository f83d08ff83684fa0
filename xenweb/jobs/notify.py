from __future__ import annotations

from xenweb.jobs.models import Job
from xenweb.jobs.serializers import job_payload
from xenweb.realtime import EVENTS_GROUP, broadcast, job_group, user_group


def notify_job(job: Job, *, seq: int = 0) -> None:
    """Hint the job's watchers (full record), its owner and the dashboards (summary)."""
    payload = job_payload(job)
    payload["seq"] = seq
    broadcast([job_group(job.pk)], {"type": "job.update", "job": payload})
    summary = {key: value for key, value in payload.items() if key not in ("log", "result")}
    groups = [EVENTS_GROUP]
    if job.owner_id:
        groups.append(user_group(job.owner_id))
    broadcast(groups, {"type": "job.update", "job": summary})
