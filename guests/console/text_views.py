"""The guest's text console page: xterm.js on `/ws/guests/<pk>/console/`
(guests.console.text_consumer)."""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_safe

from guests.console.sessions import ACT_PERMISSION as TYPE_PERMISSION
from guests.console.sessions import VIEW_PERMISSION
from guests.models import Guest


@permission_required(VIEW_PERMISSION, raise_exception=True)
@require_safe
def console_page(request: HttpRequest, pk: int) -> HttpResponse:
    guest = get_object_or_404(Guest.objects.select_related("host"), pk=pk)
    return render(request, "guests/console.html", {
        "guest": guest,
        "readonly": not request.user.has_perm(TYPE_PERMISSION),
        "console_ws": f"/ws/guests/{guest.pk}/console/",
    })
