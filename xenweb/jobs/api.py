from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from xenweb.jobs import services
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.serializers import JobSerializer
from xenweb.jobs.tasks import selftest
from xenweb.jobs.visibility import visible_jobs


def accepted(job: Job) -> Response:
    """What every endpoint that starts a long action answers: 202 and the job (id, url…)."""
    return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class SelftestSerializer(serializers.Serializer):
    steps = serializers.IntegerField(min_value=1, max_value=1000, default=10)
    step_seconds = serializers.FloatField(min_value=0, max_value=60, default=0.5)
    fail_at = serializers.IntegerField(min_value=1, required=False)


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Long-running jobs: state, progress (0 to 1), done/total, rate, ETA, log and result.

    Each user sees their own jobs, the jobs on objects they may act on (operators: guests
    and storage) and, administrators, every job; another job answers 404. Cancel: the owner
    or an administrator. Retry needs the permission of the action it repeats."""

    queryset = Job.objects.select_related("owner")
    serializer_class = JobSerializer
    action_permissions = {"cancel": "jobs.cancel_job", "selftest": "jobs.add_job",
                          "retry": "jobs.add_job"}

    def get_queryset(self) -> QuerySet[Job]:
        queryset = visible_jobs(self.request.user, super().get_queryset())
        state = self.request.query_params.get("state")
        if state:
            if state not in JobState.values and state != "active":
                raise ValidationError({"state": f"Unknown state '{state}'."})
            states = [JobState.QUEUED, JobState.RUNNING] if state == "active" else [state]
            queryset = queryset.filter(state__in=states)
        kind = self.request.query_params.get("kind")
        if kind:
            queryset = queryset.filter(kind=kind)
        return queryset

    @extend_schema(parameters=[
        OpenApiParameter("state", str, description="a job state, or 'active'"),
        OpenApiParameter("kind", str),
    ])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses={200: JobSerializer, 403: None, 409: None})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a queued or running job (refused where the hypervisor cannot abort)."""
        job = self.get_object()
        try:
            job = services.cancel_job(job, user=request.user, request=request)
        except JobError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(JobSerializer(job).data)

    @extend_schema(request=None, responses={202: JobSerializer, 403: None, 409: None})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Start a failed or interrupted job again, where repeating it is safe."""
        try:
            job = services.retry_job(self.get_object(), user=request.user, request=request)
        except JobError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return accepted(job)

    @extend_schema(request=SelftestSerializer, responses={202: JobSerializer})
    @action(detail=False, methods=["post"])
    def selftest(self, request: Request) -> Response:
        """Start a diagnostic job that proves worker, progress and websockets work."""
        params = SelftestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        job = services.start_job(
            selftest.name, kind="selftest", owner=request.user, title="Self-test",
            params=params.validated_data, total=params.validated_data["steps"], request=request,
        )
        return accepted(job)
