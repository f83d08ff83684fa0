from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from guests.models import Guest
from hosts.charts import latest_load
from hosts.models import Host
from storage.models import Pool
from xenweb.alerts.services import visible_alerts
from xenweb.jobs.models import ACTIVE_STATES, Job
from xenweb.jobs.visibility import visible_jobs


def dashboard_context(user: Any) -> dict:
    jobs = visible_jobs(user, Job.objects.select_related("owner"))
    hosts_by_state = dict(Host.objects.values_list("state").annotate(n=Count("id")))
    guests_by_state = dict(
        Guest.objects.filter(is_privileged=False).values_list("state").annotate(n=Count("id"))
    )
    return {
        "host_count": sum(hosts_by_state.values()),
        "hosts_by_state": hosts_by_state,
        "guest_count": sum(guests_by_state.values()),
        "guests_running": guests_by_state.get(Guest.State.RUNNING, 0),
        "pool_count": Pool.objects.count(),
        "active_jobs": jobs.filter(state__in=ACTIVE_STATES)[:20],
        "recent_jobs": jobs.exclude(state__in=ACTIVE_STATES)[:8],
        "host_load": host_load(),
        "open_alerts": visible_alerts(user).filter(acknowledged_at=None)[:5],
    }


def host_load(limit: int = 10) -> list[dict[str, object]]:
    """The busiest hosts by their latest CPU sample: the dashboard's load at a glance."""
    hosts = list(Host.objects.filter(state=Host.State.ONLINE)[:200])
    load = latest_load(hosts)
    rows = [{"host": host, "cpu": load.get(host.pk)} for host in hosts]
    rows.sort(key=lambda row: -1 if row["cpu"] is None else row["cpu"], reverse=True)
    return rows[:limit]


@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard.html", dashboard_context(request.user))


@require_safe
def dashboard_jobs(request: HttpRequest) -> HttpResponse:
    """The dashboard's job tables, re-fetched by htmx when a job starts or ends."""
    return render(request, "_dashboard_live.html", dashboard_context(request.user))
