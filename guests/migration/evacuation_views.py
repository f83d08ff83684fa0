from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from guests.migration.evacuation import evacuate_host
from hosts.models import Host
from xenweb.jobs.errors import JobError


@require_POST
@permission_required("hosts.change_host", raise_exception=True)
def host_evacuate(request: HttpRequest, pk: int) -> HttpResponse:
    """Maintenance mode on, then every running guest live-migrated away (one job); the
    host page's Evacuate button posts here."""
    host = get_object_or_404(Host, pk=pk)
    try:
        job = evacuate_host(host, user=request.user, request=request)
    except JobError as exc:
        messages.error(request, str(exc))
        return redirect(host)
    return redirect(job)
