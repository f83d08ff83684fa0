from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from xenweb.jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    """One shape for the API and the websocket, so both read the same numbers."""

    url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    percent = serializers.IntegerField(read_only=True)
    log = serializers.ListField(child=serializers.CharField(), source="log_lines", read_only=True)
    can_retry = serializers.BooleanField(read_only=True,
                                         help_text="failed or interrupted, and safe to repeat")

    class Meta:
        model = Job
        fields = [
            "id", "url", "page_url", "kind", "title", "target_type", "target_id",
            "target_label", "owner", "state", "progress", "percent", "done", "total", "unit",
            "rate", "eta_seconds", "estimated", "cancellable", "cancel_requested", "message",
            "log", "result", "error", "can_retry", "created_at", "started_at", "finished_at",
            "heartbeat_at",
        ]
        read_only_fields = fields

    def get_url(self, job: Job) -> str:
        return reverse("api:job-detail", args=[job.pk])

    def get_page_url(self, job: Job) -> str:
        return job.get_absolute_url()


# Made once: building a ModelSerializer's fields was most of the ~3 ms a payload cost, and
# one is made for every progress update of every job. Its fields keep no per-job state.
_PAYLOAD = JobSerializer()


def job_payload(job: Job) -> dict:
    return dict(_PAYLOAD.to_representation(job))
