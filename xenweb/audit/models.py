from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditRecord(models.Model):
    """Who did what to which target, when, and how it ended."""

    class Result(models.TextChoices):
        OK = "ok", "ok"
        FAILED = "failed", "failed"
        REFUSED = "refused", "refused"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Kept as text too, so the record survives the user's deletion.
    username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    result = models.CharField(max_length=10, choices=Result.choices, default=Result.OK)
    message = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action}"
