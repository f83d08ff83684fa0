"""Alerts raised from other apps' signals (the jobs app does not know alerts exist)."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver
from django.urls import reverse

from xenweb.alerts.models import AlertKind
from xenweb.alerts.services import raise_alert
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.signals import job_failed

log = logging.getLogger(__name__)


@receiver(job_failed, dispatch_uid="alerts.job_failed")
def alert_job_failed(sender: Any, job: Job, **kwargs: Any) -> None:
    how = "was interrupted" if job.state == JobState.INTERRUPTED else "failed"
    reason = f": {job.error}" if job.error else "."
    try:
        raise_alert(AlertKind.JOB_FAILED, f"job:{job.pk}",
                    f"Job '{job.title or job.kind}' {how}{reason}",
                    link=reverse("jobs:detail", args=[job.pk]), job=job)
    except Exception:  # an alert must never turn a job's outcome into another error
        log.exception("job %s: its alert was not raised", job.pk)
