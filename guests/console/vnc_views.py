"""The guest's graphical console page: noVNC on `/ws/guests/<pk>/vnc/`
(guests.console.vnc_consumer)."""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_safe

from guests.console.route import transport_problem
from guests.console.sessions import ACT_PERMISSION as INTERACT_PERMISSION
from guests.console.sessions import VIEW_PERMISSION
from guests.models import Guest


@permission_required(VIEW_PERMISSION, raise_exception=True)
@require_safe
def vnc_page(request: HttpRequest, pk: int) -> HttpResponse:
    guest = get_object_or_404(Guest.objects.select_related("host"), pk=pk)
    return render(request, "guests/vnc.html", {
        "guest": guest,
        "view_only": not request.user.has_perm(INTERACT_PERMISSION),
        "vnc_ws": f"/ws/guests/{guest.pk}/vnc/",
        "unsupported": transport_problem(guest.host.uri),
    })
