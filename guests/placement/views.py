"""Pages for placement rules: a guest's labels and the conflict sets."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from guests.models import ConflictSet, Guest
from guests.placement.conflicts import clean_labels
from xenweb.audit.services import record


def _labels(text: str) -> list[str]:
    return clean_labels(part for part in text.split(",") if part.strip())


@require_POST
@permission_required("guests.change_guest", raise_exception=True)
def guest_labels(request: HttpRequest, pk: int) -> HttpResponse:
    guest = get_object_or_404(Guest, pk=pk)
    try:
        guest.labels = _labels(request.POST.get("labels", ""))
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect(guest)
    guest.save(update_fields=["labels"])
    record("guest.labels", user=request.user, request=request, target=guest, labels=guest.labels)
    messages.success(request, f"{guest}: labels {', '.join(guest.labels) or 'cleared'}.")
    return redirect(guest)


@permission_required("guests.view_conflictset", raise_exception=True)
@require_safe
def conflict_sets(request: HttpRequest) -> HttpResponse:
    sets = ConflictSet.objects.all()
    labelled = Guest.objects.exclude(labels=[]).select_related("host")
    return render(request, "guests/conflict_sets.html", {"sets": sets, "labelled": labelled})


@require_POST
@permission_required("guests.add_conflictset", raise_exception=True)
def conflict_set_create(request: HttpRequest) -> HttpResponse:
    name = request.POST.get("name", "").strip()
    try:
        labels = _labels(request.POST.get("labels", ""))
        if not name or len(name) > 100:
            raise ValueError("A conflict set needs a name of 1 to 100 characters.")
        if not labels:
            raise ValueError("A conflict set needs at least one label.")
        if ConflictSet.objects.filter(name=name).exists():
            raise ValueError(f"A conflict set named '{name}' exists already.")
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("guests:conflict-sets")
    item = ConflictSet.objects.create(name=name, labels=labels,
                                      description=request.POST.get("description", "")[:500])
    record("conflictset.create", user=request.user, request=request, target=item, labels=labels)
    messages.success(request, f"Conflict set '{item}' created.")
    return redirect("guests:conflict-sets")


@require_POST
@permission_required("guests.delete_conflictset", raise_exception=True)
def conflict_set_delete(request: HttpRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(ConflictSet, pk=pk)
    record("conflictset.delete", user=request.user, request=request, target=item)
    item.delete()
    messages.success(request, f"Conflict set '{item}' deleted.")
    return redirect("guests:conflict-sets")
