from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from xenweb.alerts import services
from xenweb.alerts.forms import RouteForm
from xenweb.alerts.models import AlertKind, AlertRoute


@require_safe
@permission_required("alerts.view_alert", raise_exception=True)
def alert_list(request: HttpRequest) -> HttpResponse:
    show_all = request.GET.get("all") == "1"
    alerts = services.visible_alerts(request.user)
    if not show_all:
        alerts = alerts.filter(acknowledged_at=None)
    routes = []
    if request.user.has_perm("alerts.change_alertroute"):
        saved = {route.kind: route for route in AlertRoute.objects.all()}
        routes = [RouteForm(instance=saved.get(kind) or AlertRoute(kind=kind), prefix=kind)
                  for kind in AlertKind.values]
    return render(request, "alerts/list.html", {
        "page": Paginator(alerts, 50).get_page(request.GET.get("page")),
        "show_all": show_all, "routes": routes,
    })


@require_safe
@permission_required("alerts.view_alert", raise_exception=True)
def alert_count(request: HttpRequest) -> JsonResponse:
    """The bell's number, asked again when an alert event arrives."""
    return JsonResponse({"open": services.open_count(request.user)})


@require_POST
@permission_required("alerts.change_alert", raise_exception=True)
def alert_acknowledge(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """One alert, or every open one (no pk)."""
    alerts = services.visible_alerts(request.user)
    if pk is not None:
        alerts = alerts.filter(pk=pk)
    done = services.acknowledge(alerts, user=request.user)
    messages.success(request, f"{done} alert(s) acknowledged.")
    return redirect("alerts:list")


@require_POST
@permission_required("alerts.change_alertroute", raise_exception=True)
def route_save(request: HttpRequest, kind: str) -> HttpResponse:
    if kind not in AlertKind.values:
        messages.error(request, f"'{kind}' is not a kind of alert.")
        return redirect("alerts:list")
    route = AlertRoute.objects.filter(kind=kind).first() or AlertRoute(kind=kind)
    form = RouteForm(request.POST, instance=route, prefix=kind)
    if form.is_valid():
        form.save()
        messages.success(request, f"Alerts '{AlertKind(kind).label}' are sent as set.")
    else:
        messages.error(request, " ".join(f"{AlertKind(kind).label}: {error}"
                                         for errors in form.errors.values() for error in errors))
    return redirect("alerts:list")
