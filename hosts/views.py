from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from hosts import services
from hosts.charts import HOST_CHARTS, chart_context
from hosts.forms import HostForm
from hosts.models import Host
from hosts.signals import host_page
from hosts.virt import VirtError, VirtTarget
from xenweb.appliance.sshkeys import public_key


@permission_required("hosts.view_host", raise_exception=True)
@require_safe
def host_list(request: HttpRequest) -> HttpResponse:
    return render(request, "hosts/list.html", {"hosts": Host.objects.all()})


@permission_required("hosts.view_host", raise_exception=True)
@require_safe
def host_detail(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    performance = chart_context(reverse("api:host-metrics-metrics", args=[host.pk]), host.pk,
                                HOST_CHARTS)
    context = {"host": host, "performance": performance,
               "pinned_key": services.pinned_host_key(host)}
    for _receiver, extra in host_page.send(sender=Host, host=host):
        context.update(extra)
    return render(request, "hosts/detail.html", context)


@permission_required("hosts.add_host", raise_exception=True)
def host_add(request: HttpRequest) -> HttpResponse:
    form = HostForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            host = services.enrol_host(user=request.user, request=request, **form.cleaned_data)
        except (VirtError, services.HostError) as exc:
            form.add_error("uri", str(exc))
        else:
            messages.success(request, f"Host '{host}' was added.")
            return redirect(host)
    return render(request, "hosts/add.html", {"form": form, "public_key": public_key()})


@require_POST
@permission_required("hosts.add_host", raise_exception=True)
def host_test(request: HttpRequest) -> HttpResponse:
    try:
        info = services.test_connection(VirtTarget(request.POST.get("uri", "")))
    except VirtError as exc:
        return render(request, "hosts/_test_result.html", {"ok": False, "error": str(exc)})
    return render(request, "hosts/_test_result.html", {"ok": True, "info": info})


@require_POST
@permission_required("hosts.change_host", raise_exception=True)
def host_maintenance(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    enabled = request.POST.get("enabled") == "1"
    services.set_maintenance(host, enabled, user=request.user, request=request)
    messages.success(request, f"{host}: maintenance {'on' if enabled else 'off'}.")
    return redirect(host)


@require_POST
@permission_required("hosts.change_host", raise_exception=True)
def host_migration_uri(request: HttpRequest, pk: int) -> HttpResponse:
    return change_setting(request, pk, services.set_migration_uri, "migration_uri",
                           "migration URI", (VirtError, services.HostError))


def change_setting(request: HttpRequest, pk: int, change: Callable[..., Any], field: str,
                    label: str, errors: tuple[type[Exception], ...]) -> HttpResponse:
    """Set one text setting of a host from the form field of the same name (also for the
    settings apps above hosts keep, like storage's boot files directory)."""
    host = get_object_or_404(Host, pk=pk)
    try:
        host = change(host, request.POST.get(field, ""), user=request.user, request=request)
    except errors as exc:
        messages.error(request, f"The {label} was not changed: {exc}")
    else:
        value = getattr(host, field)
        messages.success(request, f"{host}: {label} {'set to ' + value if value else 'cleared'}.")
    return redirect(host)


@require_POST
@permission_required(services.REPIN_PERMISSION, raise_exception=True)
def host_host_key(request: HttpRequest, pk: int) -> HttpResponse:
    """Re-pin the host's SSH key (administrators; audited with both fingerprints)."""
    host = get_object_or_404(Host, pk=pk)
    try:
        new = services.repin_host_key(host, request.POST.get("fingerprint", ""),
                                      user=request.user, request=request)
    except PermissionError as exc:
        raise PermissionDenied(str(exc)) from exc
    except services.HostError as exc:
        messages.error(request, f"The host key was not changed: {exc}")
    else:
        messages.success(request, f"{host}: the host key {new} is now trusted.")
    return redirect(host)


@permission_required("hosts.view_host", raise_exception=True)
@require_http_methods(["GET", "HEAD", "POST"])
def host_networks(request: HttpRequest, pk: int) -> HttpResponse:
    """The host's networks, read live (loaded into the host page by htmx); POST
    (administrators) creates an isolated network."""
    if request.method == "POST" and not request.user.has_perm("hosts.add_host"):
        raise PermissionDenied
    host = get_object_or_404(Host, pk=pk)
    error, found = "", []
    if request.method == "POST":
        try:
            services.create_isolated_network(host, request.POST.get("name", ""),
                                             request.POST.get("bridge", ""),
                                             user=request.user, request=request)
        except VirtError as exc:
            error = str(exc)
    try:
        found = services.networks(host)
    except VirtError as exc:
        error = error or str(exc)
    return render(request, "hosts/_networks.html", {"host": host, "networks": found,
                                                    "error": error})
