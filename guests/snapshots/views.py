"""The snapshot section of the guest page: take, revert and delete (operators)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from guests.errors import GuestError
from guests.models import Guest
from guests.snapshots import services as snapshots
from guests.snapshots.plan import capability
from hosts.models import Host
from xenweb.jobs.models import Job


def snapshot_context(guest: Guest) -> dict[str, Any]:
    """What the guest page shows: the snapshots, and whether a new one can be taken."""
    if guest.host.state == Host.State.UNREACHABLE:
        return {"snapshots": [], "snapshot_plan": capability(guest),
                "snapshot_error": f"Host {guest.host} is unreachable: its snapshots cannot be "
                                  "listed now."}
    try:
        found, error = snapshots.list_snapshots(guest), ""
    except GuestError as exc:
        found, error = [], str(exc)
    return {"snapshots": found, "snapshot_error": error, "snapshot_plan": capability(guest)}


def _guest(pk: int) -> Guest:
    return get_object_or_404(Guest.objects.select_related("host"), pk=pk)


def _outcome(request: HttpRequest, guest: Guest, call: Callable[[], object],
             success: str) -> HttpResponse:
    """Run a snapshot action: a job leads to its page, a refusal or success is a message."""
    try:
        outcome = call()
    except GuestError as exc:
        messages.error(request, str(exc))
        return redirect(guest)
    if isinstance(outcome, Job):
        return redirect(outcome)
    messages.success(request, success)
    return redirect(guest)


@require_POST
@permission_required("guests.change_guest", raise_exception=True)
def snapshot_create(request: HttpRequest, pk: int) -> HttpResponse:
    guest = _guest(pk)
    name = request.POST.get("name", "").strip()
    return _outcome(request, guest, lambda: snapshots.create_snapshot(
        guest, name, request.POST.get("description", "").strip()[:1000],
        user=request.user, request=request), f"Snapshot '{name}' taken.")


@require_POST
@permission_required("guests.change_guest", raise_exception=True)
def snapshot_revert(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    guest = _guest(pk)
    return _outcome(request, guest, lambda: snapshots.revert_snapshot(
        guest, name, user=request.user, request=request), f"{guest} reverted to '{name}'.")


@require_POST
@permission_required("guests.change_guest", raise_exception=True)
def snapshot_delete(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    guest = _guest(pk)
    try:
        snapshots.delete_snapshot(guest, name, user=request.user, request=request)
    except GuestError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Snapshot '{name}' deleted.")
    return redirect(guest)
