"""Alerts: trouble an operator should hear of (a host gone, a pool filling up, a failed
job, a crashed guest), kept until someone acknowledges them."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AlertKind(models.TextChoices):
    HOST_UNREACHABLE = "host_unreachable", "host unreachable"
    HOST_BACK = "host_back", "host answers again"
    POOL_LOW_SPACE = "pool_low_space", "pool low on space"
    JOB_FAILED = "job_failed", "job failed"
    GUEST_CRASHED = "guest_crashed", "guest crashed"


SEVERITY = {
    AlertKind.HOST_UNREACHABLE: "danger",
    AlertKind.HOST_BACK: "success",
    AlertKind.POOL_LOW_SPACE: "warning",
    AlertKind.JOB_FAILED: "danger",
    AlertKind.GUEST_CRASHED: "danger",
}


class Alert(models.Model):
    kind = models.CharField(max_length=24, choices=AlertKind.choices, db_index=True)
    # What it is about, e.g. "host:3": an open alert of the same kind and subject is raised
    # again by counting, not by a new row.
    subject = models.CharField(max_length=128)
    message = models.CharField(max_length=1000)
    link = models.CharField(max_length=255, blank=True)  # the page of what it is about
    count = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True, db_index=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                        on_delete=models.SET_NULL, related_name="+")
    # A job's alert is seen by those who see the job (xenweb.jobs.visibility): its owner,
    # whoever may act on its target type, administrators.
    restricted = models.BooleanField(default=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="+")
    target_type = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-last_seen_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}"

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, "secondary")

    @property
    def open(self) -> bool:
        return self.acknowledged_at is None


class AlertRoute(models.Model):
    """Where alerts of one kind are sent besides the list: e-mail addresses (Django's mail
    settings) and a webhook that receives the alert as JSON."""

    kind = models.CharField(max_length=24, choices=AlertKind.choices, unique=True)
    emails = models.CharField(max_length=1000, blank=True)  # comma-separated
    webhook_url = models.URLField(max_length=500, blank=True)

    def __str__(self) -> str:
        return self.kind

    @property
    def email_list(self) -> list[str]:
        return [address.strip() for address in self.emails.split(",") if address.strip()]
