from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from guests.migration.evacuation import evacuate_host, evacuation_plan
from hosts.models import Host
from xenweb.jobs.errors import JobError


@require_http_methods(["GET", "POST"])
@permission_required("hosts.change_host", raise_exception=True)
def host_evacuate(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the plan (which guest goes where, who stays and why); POST: maintenance mode
    on, then every running guest live-migrated away (one job)."""
    host = get_object_or_404(Host, pk=pk)
    if request.method == "GET":
        moves = evacuation_plan(host)
        return render(request, "hosts/evacuate.html", {
            "host": host, "moves": moves,
            "moving": sum(1 for move in moves if move.target is not None),
        })
    try:
        job = evacuate_host(host, user=request.user, request=request)
    except JobError as exc:
        messages.error(request, str(exc))
        return redirect(host)
    return redirect(job)
