from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from xenweb.jobs import services
from xenweb.jobs.display import result_rows
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.serializers import job_payload
from xenweb.jobs.tasks import selftest
from xenweb.jobs.visibility import can_cancel, can_retry, visible_jobs


@permission_required("jobs.view_job", raise_exception=True)
@require_safe
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = visible_jobs(request.user, Job.objects.select_related("owner"))
    state = request.GET.get("state", "")
    if state:
        jobs = jobs.filter(state=state)
    page = Paginator(jobs, 50).get_page(request.GET.get("page"))
    context = {"page": page, "state": state, "states": JobState.values}
    return render(request, "jobs/list.html", context)


@permission_required("jobs.view_job", raise_exception=True)
@require_safe
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(visible_jobs(request.user, Job.objects.select_related("owner")),
                            pk=pk)
    return render(request, "jobs/detail.html", {
        "job": job, "job_json": job_payload(job), "result_rows": result_rows(job.result),
        "may_cancel": can_cancel(request.user, job), "may_retry": can_retry(request.user, job),
    })


@require_POST
@permission_required("jobs.cancel_job", raise_exception=True)
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(visible_jobs(request.user), pk=pk)
    try:
        services.cancel_job(job, user=request.user, request=request)
    except JobError as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"Cancellation of job #{job.pk} requested.")
    return redirect(job)


@require_POST
@permission_required("jobs.add_job", raise_exception=True)
def job_retry(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(visible_jobs(request.user), pk=pk)
    try:
        retried = services.retry_job(job, user=request.user, request=request)
    except JobError as exc:
        messages.error(request, str(exc))
        return redirect(job)
    return redirect(retried)


@require_POST
@permission_required("jobs.add_job", raise_exception=True)
def selftest_start(request: HttpRequest) -> HttpResponse:
    job = services.start_job(
        selftest.name, kind="selftest", owner=request.user, title="Self-test",
        params={"steps": 20, "step_seconds": 0.5}, total=20, request=request,
    )
    return redirect(job)
